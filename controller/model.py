"""The cluster as the controller sees it: tenants, port bindings, hosts, QoS.

Plain frozen values, validated on construction, so the pipeline can trust them
and two snapshots can be compared with ``==`` (diff old vs new config).

QoS (see ``controller.pipeline`` for the flows):

* ``RateLimit``: an OpenFlow meter on one host, for what one bound port sends
  (``port``) or for what all of a tenant's local ports on that host send
  together (``tenant``).  Traffic arriving from tunnels or a VLAN-transport
  uplink is never counted: it was limited where it entered.
* ``QosRule``: per-flow QoS of a tenant's traffic, on every host where the
  tenant has local ports; a meter and/or a DSCP remark and/or a queue.

``QosRule.match`` keys (user level; values are normalised on construction,
so a rule read back from storage compares equal)::

    key        value                                   normal form       OXM
    ip_proto   0..255 or "tcp" / "udp" / "icmp"        "tcp"/"udp"/"icmp"  ip_proto
                                                       for 6/17/1, else int
    src, dst   IPv4 address or CIDR (host bits are     "10.0.0.5" (/32),   ipv4_src, ipv4_dst
               masked off: "10.0.0.5/24" is the        "10.0.0.0/24"       (addr or (net, mask);
               network 10.0.0.0/24)                                         /0: no field)
    src_port   1..65535, needs ip_proto tcp or udp     int                 tcp_src / udp_src
    dst_port   1..65535, needs ip_proto tcp or udp     int                 tcp_dst / udp_dst
    dscp       0..63 (the DSCP the packet arrives      int                 ip_dscp
               with)

Every rule matches IPv4 only (``eth_type=0x0800``): ``match=()`` means "all
IPv4 traffic of the tenant".  Unknown keys and bad values are errors.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping

from cluster.hostsfile import DOCKER_LINK_PORT, HOST_NAME_PATTERN

__all__ = [
    "ACCESS", "TRUNK", "MAX_VNI", "DOCKER_LINK_PORT", "DEFAULT_TENANT",
    "Tenant", "Binding", "LinkEndpoint", "Topology", "RateLimit", "QosRule", "ModelError",
    "MAX_METER_ID", "MAX_KBPS", "MAX_BURST_KB", "MAX_PPS", "MAX_BURST_PKTS", "QOS_MATCH_KEYS",
    "IP_PROTOS", "MAX_QOS_PRIORITY", "MAX_DSCP", "MAX_QUEUE", "MAX_IP_PROTO", "MAX_L4_PORT",
    "MAX_ICMP_TYPE", "MAX_TENANT_NAME", "GATEWAY6_AUTO", "default_gateway6", "holds_address",
    "TENANT_NAME_PATTERN", "HOST_NAME_PATTERN", "PORT_NAME_PATTERN", "MAC_PATTERN",
    "MAX_DESCRIPTION", "check_name", "check_host", "check_text", "check_bindable_port",
    "AclRule", "ACL_ACTIONS", "ACL_DIRECTIONS", "ACL_DEFAULTS", "ACL_ICMPV6", "IPPROTO_ICMPV6",
    "MAX_ACL_PRIORITY",
    "MAX_ACL_ZONE_VNI", "MAX_ACL_ID", "VNI_MIN", "VLAN_MIN", "VLAN_MAX", "MAX_SUBNET_LEN",
    "PortOwned", "user_tenant", "Route", "first_host", "gateway_mac", "next_hop_mac",
    "gateway_port_mac", "gateway_port", "RESERVED_MAC_PREFIXES", "GATEWAY_PORT_PREFIX",
    "DEFAULT_CONNTRACK_LIMIT", "MAX_CONNTRACK_LIMIT", "eui64_link_local", "is_ipv6",
]

ACCESS = "access"
TRUNK = "trunk"
MAX_VNI = (1 << 24) - 1          # VXLAN VNIs are 24 bits; metadata holds them
VNI_MIN = 1000                   # the first VNI of a user's tenant (below: the built-in default's 1)
VLAN_MIN, VLAN_MAX = 1, 4094     # 802.1Q ids (0 and 4095 are reserved)
MAX_SUBNET_LEN = 64              # characters of a tenant's subnet text

# The one place names are defined.  Python matches them with fullmatch (``$``
# would accept a trailing newline); the API publishes them anchored with ^...$
# (JSON Schema and pydantic's regex engine have no trailing-newline quirk).
MAX_TENANT_NAME = 32
TENANT_NAME_PATTERN = rf"[a-z][a-z0-9_-]{{0,{MAX_TENANT_NAME - 1}}}"
PORT_NAME_PATTERN = r"[A-Za-z0-9_.:-]{1,15}"       # an OVS port / Linux interface name
MAC_PATTERN = r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}"
MAX_DESCRIPTION = 1024
# ports the agent creates on br0: tunnels (vx-PEER, gr-PEER), the docker0 link
AGENT_PORT_PREFIXES = ("vx-", "gr-", "wx-")   # tunnels; tenants' gateway ports
_MAC_RE = re.compile(MAC_PATTERN.lower())


class ModelError(ValueError):
    """A value the model refuses; ``field`` names it (the store and API answer 422)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


class PortOwned(ModelError):
    """A port weft or the ovs-agent owns (docker0 link, tunnels, the bridge): taken, not
    malformed, so the store answers 409."""


def _field_of(what: str) -> str:
    """'QoS rule 3: match dst_port' -> 'match.dst_port' (the field a user gave)."""
    return what.rsplit(": ", 1)[-1].replace(" ", ".") if ": " in what else what.split()[0]


def _int_in(value: Any, lo: int, hi: int, what: str, field: str | None = None) -> int:
    field = field or _field_of(what)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelError(field, f"{what} must be an integer, not {value!r}"[:200])
    if not lo <= value <= hi:
        raise ModelError(field, f"{what} {value} not in {lo}..{hi}"[:200])
    return value


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ModelError(_field_of(what), f"{what} must be a non-empty string, not {value!r}")
    return value


def check_name(value: Any, field: str, pattern: str = TENANT_NAME_PATTERN,
               what: str = "name") -> str:
    """A name matching ``pattern`` entirely (no trailing newline, no surprises)."""
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        raise ModelError(field, f"{shown} is not a valid {what} (pattern ^{pattern}$)")
    return value


def check_text(value: Any, field: str, max_len: int = MAX_DESCRIPTION) -> str:
    """Free text a person wrote: bounded, valid Unicode (no lone surrogates)."""
    if not isinstance(value, str):
        raise ModelError(field, f"must be a string, not {type(value).__name__}")
    if len(value) > max_len:
        raise ModelError(field, f"is {len(value)} characters long; at most {max_len}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ModelError(field, "is not valid Unicode text (a lone surrogate)") from None
    if "\x00" in value:
        raise ModelError(field, "must not contain NUL characters")
    return value


def check_host(value: Any, field: str = "host") -> str:
    """A host's name (as in the hosts file)."""
    return check_name(value, field, HOST_NAME_PATTERN, "host name")


def check_bindable_port(host: Any, port: Any) -> None:
    """A port a tenant may be given: a valid name and not one the agent owns."""
    check_host(host)
    check_name(port, "port", PORT_NAME_PATTERN, "OVS port name (at most 15 characters)")
    if port == DOCKER_LINK_PORT:
        raise PortOwned("port", f"{port} is the docker0 link, owned by the default tenant")
    if port.startswith(AGENT_PORT_PREFIXES) or port in ("br0", "br-phy"):
        raise PortOwned("port", f"{port} is a port the ovs-agent owns (tunnels vx-*/gr-*, "
                                 "the bridge itself): not bindable")


DEFAULT_CONNTRACK_LIMIT = 65536     # connections per tenant per host (NAT, ACL conntrack)
MAX_CONNTRACK_LIMIT = 10_000_000


@dataclass(frozen=True)
class Tenant:
    """An isolated L2 segment spanning hosts; the VNI is its identity on the wire.

    A row without ``domain`` is a *tenant* (the isolation and routing domain, like a
    VRF) and at once its *default network* (same name and VNI). A row with ``domain``
    is a further *network* of that tenant: its own segment, VNI, VLAN and subnet. The
    tenant routes between its networks (``gateway``: the anycast gateway address, the
    same on every host) and, with ``egress``, to the outside; never between tenants.
    The tenant's VNI is its id (metadata domain bits, conntrack zone, gateway port).
    """

    name: str
    vni: int
    vlan: int | None = None          # 802.1Q id used on trunk ports
    subnet: str | None = None
    description: str = ""
    domain: str | None = None        # the tenant this network belongs to; None: a tenant
    gateway: str | None = None       # IPv4 address in ``subnet`` routed for its ports
    egress: bool = False             # reach outside the cluster, NATed by the host
    # a tenant's connections through its hosts' NAT and conntrack, per host (a network
    # row keeps the default: the tenant's counts)
    conntrack_limit: int = 65536
    # schema 11: an IPv6 subnet beside an IPv4 ``subnet`` (dual-stack); IPv6 port security
    # (``controller.pipeline.portsec``) lets every port of such a network use IPv6
    subnet6: str | None = None
    # schema 12: the IPv6 gateway of a dual-stack network with a gateway, routed and
    # answered (NA) like ``gateway``; GATEWAY6_AUTO (not chosen): ``subnet6``'s first
    # address (``::1``) when the network has ``gateway`` and ``subnet6``, else none
    gateway6: str | None = "auto"

    def __post_init__(self) -> None:
        check_name(self.name, "name", TENANT_NAME_PATTERN, "tenant name")
        object.__setattr__(self, "subnet", _subnet(self.subnet))
        object.__setattr__(self, "subnet6", _subnet6(self.subnet6, self.subnet, self.name))
        if self.vlan is not None:
            _int_in(self.vlan, VLAN_MIN, VLAN_MAX, "vlan")
        _int_in(self.vni, 1, MAX_VNI, "vni")
        check_text(self.description, "description")
        if self.domain is not None:
            check_name(self.domain, "tenant", TENANT_NAME_PATTERN, "tenant name")
            if self.domain == self.name:
                raise ModelError("tenant", f"network {self.name!r} cannot be its own tenant")
        object.__setattr__(self, "gateway", _gateway(self.gateway, self.subnet, self.name))
        if not isinstance(self.egress, bool):
            raise ModelError("egress", f"egress must be true or false, not {self.egress!r}")
        if self.egress and self.gateway is None:
            raise ModelError("egress", f"network {self.name!r}: egress needs a gateway")
        object.__setattr__(self, "gateway6", _gateway6(self.gateway6, self.gateway,
                                                       self.subnet6, self.name))
        _int_in(self.conntrack_limit, 1, MAX_CONNTRACK_LIMIT, "conntrack_limit")
        if self.domain is not None and self.conntrack_limit != DEFAULT_CONNTRACK_LIMIT:
            raise ModelError("conntrack_limit", f"network {self.name!r}: conntrack_limit is "
                                                f"its tenant's ({self.domain!r})")

    @property
    def tenant(self) -> str:
        """The tenant (routing domain) this segment belongs to: ``domain`` or itself."""
        return self.domain or self.name

    @property
    def is_tenant(self) -> bool:
        return self.domain is None

    @property
    def ipv6_subnet(self) -> str | None:
        """The network's IPv6 subnet: ``subnet6``, or ``subnet`` when that is IPv6."""
        if self.subnet6 is not None:
            return self.subnet6
        if self.subnet is not None and ":" in self.subnet:
            return self.subnet
        return None



GATEWAY6_AUTO = "auto"      # Tenant.gateway6 not chosen: subnet6's first address


def default_gateway6(gateway: str | None, subnet6: str | None) -> str | None:
    """The IPv6 gateway of a dual-stack network with a gateway when none is chosen: its
    IPv6 subnet's first address (``::1``, what weft derived before schema 12)."""
    if gateway is None or subnet6 is None:
        return None
    return str(ipaddress.IPv6Network(subnet6).network_address + 1)


def _gateway6(gateway6: Any, gateway: str | None, subnet6: str | None,
              name: str) -> str | None:
    """A network's IPv6 gateway: GATEWAY6_AUTO (``default_gateway6``), None/"" (none),
    or an IPv6 address of ``subnet6`` other than its network address, on a network
    that has an IPv4 ``gateway`` too (IPv6 is routed beside IPv4)."""
    if isinstance(gateway6, str) and gateway6.strip().lower() == GATEWAY6_AUTO:
        return default_gateway6(gateway, subnet6)
    if gateway6 in (None, ""):
        return None
    where = f"network {name!r}: gateway6"
    if not isinstance(gateway6, str) or len(gateway6) > 45:
        raise ModelError("gateway6", f"{where} must be an IPv6 address, like fd00:10::1")
    try:
        addr = ipaddress.ip_address(gateway6.strip())
    except ValueError:
        raise ModelError("gateway6", f"{where} {gateway6!r} is not an IPv6 address") from None
    if addr.version != 6:
        raise ModelError("gateway6", f"{where} {addr} is an IPv4 address; give an IPv6 "
                                     "address of subnet6 (the IPv4 one is gateway)")
    if subnet6 is None:
        raise ModelError("gateway6", f"{where} needs subnet6 (an IPv6 subnet)")
    net = ipaddress.IPv6Network(subnet6)
    if addr not in net:
        raise ModelError("gateway6", f"{where} {addr} is not in subnet6 {net}")
    if addr == net.network_address:
        raise ModelError("gateway6", f"{where} {addr} is the network address of {net} "
                                     "(the subnet-router anycast address); give a host "
                                     f"address, like {net.network_address + 1}")
    if gateway is None:
        raise ModelError("gateway6", f"{where} needs an IPv4 gateway too (IPv6 is routed "
                                     "beside IPv4): set gateway, or gateway6 none")
    return str(addr)


def holds_address(ips: tuple[str, ...] | list[str], address: str) -> bool:
    """Whether a binding's ``ips`` (addresses and CIDRs) name ``address`` itself."""
    want = ipaddress.ip_address(address)
    for ip in ips:
        try:
            if "/" in ip:
                net = ipaddress.ip_network(ip, strict=False)
                if net.num_addresses == 1 and net.network_address == want:
                    return True
            elif ipaddress.ip_address(ip) == want:
                return True
        except ValueError:
            continue
    return False


def _gateway(gateway: Any, subnet: str | None, name: str) -> str | None:
    """A network's gateway: an IPv4 host address of its subnet (a /30 or shorter)."""
    if gateway in (None, ""):
        return None
    where = f"network {name!r}: gateway"
    if subnet is None:
        raise ModelError("gateway", f"{where} needs a subnet")
    net = ipaddress.ip_network(subnet)
    if net.version != 4 or net.prefixlen > 30:
        raise ModelError("gateway", f"{where} needs an IPv4 subnet of /30 or shorter, "
                                    f"not {subnet}")
    try:
        addr = ipaddress.IPv4Address(gateway.strip() if isinstance(gateway, str) else gateway)
    except ValueError:
        raise ModelError("gateway", f"{where} {gateway!r} is not an IPv4 address") from None
    if addr not in net or addr in (net.network_address, net.broadcast_address):
        raise ModelError("gateway", f"{where} {addr} is not a host address of {subnet}")
    return str(addr)


def first_host(subnet: str | None) -> str | None:
    """The default gateway of a subnet: its first host address (None: no subnet, IPv6,
    or too small to route)."""
    if subnet is None:
        return None
    net = ipaddress.ip_network(subnet)
    if net.version != 4 or net.prefixlen > 30:
        return None
    return str(net.network_address + 1)


# Reserved MACs (locally administered 0a:77:6x): derived from ids, so no port or MAC
# has to be reported to the controller. No binding may use them.
GATEWAY_MAC_PREFIX = "0a:77:66"        # + the network's VNI: its anycast gateway MAC
NEXT_HOP_MAC_PREFIX = "0a:77:67"       # + tenant id: the kernel's next hop on wx-<id>
GATEWAY_PORT_MAC_PREFIX = "0a:77:68"   # + tenant id: the gateway port's own MAC
RESERVED_MAC_PREFIXES = (GATEWAY_MAC_PREFIX, NEXT_HOP_MAC_PREFIX, GATEWAY_PORT_MAC_PREFIX)
GATEWAY_PORT_PREFIX = "wx-"            # wx-<tenant id>: a tenant's door to the host stack


def _mac24(prefix: str, value: int) -> str:
    return f"{prefix}:{value >> 16 & 0xff:02x}:{value >> 8 & 0xff:02x}:{value & 0xff:02x}"


def gateway_mac(vni: int) -> str:
    """The anycast MAC of the gateway of the network with VNI ``vni``."""
    return _mac24(GATEWAY_MAC_PREFIX, vni)


def next_hop_mac(tenant_id: int) -> str:
    return _mac24(NEXT_HOP_MAC_PREFIX, tenant_id)


def gateway_port_mac(tenant_id: int) -> str:
    return _mac24(GATEWAY_PORT_MAC_PREFIX, tenant_id)


def gateway_port(tenant_id: int) -> str:
    return f"{GATEWAY_PORT_PREFIX}{tenant_id}"


@dataclass(frozen=True)
class Route:
    """A tenant's static route: ``prefix`` via ``via``, a host address in one of the
    tenant's gateway networks (a bound port's address, or one given ``mac``)."""

    tenant: str
    prefix: str
    via: str
    mac: str | None = None

    def __post_init__(self) -> None:
        check_name(self.tenant, "tenant", TENANT_NAME_PATTERN, "tenant name")
        if isinstance(self.prefix, str) and ":" in self.prefix:     # IPv6 (schema 12)
            object.__setattr__(self, "prefix", _ipv6_route_prefix(self.prefix))
        else:
            object.__setattr__(self, "prefix", _ipv4_net(self.prefix, "route prefix", "prefix")
                               if "/" in str(self.prefix) else
                               _ipv4_net(f"{self.prefix}/32", "route prefix", "prefix"))
        v6 = ":" in self.prefix
        try:
            text = self.via.strip() if isinstance(self.via, str) else ""
            via: ipaddress.IPv4Address | ipaddress.IPv6Address = \
                ipaddress.IPv6Address(text) if v6 else ipaddress.IPv4Address(text)
        except ValueError:
            family = "IPv6" if v6 else "IPv4"
            raise ModelError("via", f"route {self.prefix}: via {self.via!r} is not an {family} "
                                    f"address (the prefix's family)") from None
        object.__setattr__(self, "via", str(via))
        if self.mac is not None:
            object.__setattr__(self, "mac", _unicast_mac(self.mac, "route mac", "mac"))

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        if ":" in self.prefix:
            return ipaddress.IPv6Network(self.prefix if "/" in self.prefix
                                         else f"{self.prefix}/128")
        return ipaddress.IPv4Network(self.prefix if "/" in self.prefix else f"{self.prefix}/32")

    @property
    def v6(self) -> bool:
        return ":" in self.prefix


def _ipv6_route_prefix(value: str) -> str:
    """An IPv6 route prefix ("fd00:99::/48", "::/0"; an address: a /128), normalised."""
    try:
        net = ipaddress.IPv6Network(value.strip() if "/" in value else f"{value.strip()}/128",
                                    strict=False)
    except ValueError:
        raise ModelError("prefix", f"route prefix: {value!r} is not an IPv6 address or "
                                   "CIDR") from None
    if net.network_address.is_link_local or net.network_address.is_multicast:
        raise ModelError("prefix", f"route prefix: {net} is link-local or multicast: "
                                   "not routed")
    return str(net.network_address) if net.prefixlen == 128 else str(net)


def _subnet(subnet: Any) -> str | None:
    """A tenant's subnet in its normal form ("" means none)."""
    if subnet in (None, ""):
        return None
    if not isinstance(subnet, str) or len(subnet) > MAX_SUBNET_LEN:
        raise ModelError("subnet", "must be a network in CIDR notation, like 10.1.0.0/24")
    try:
        return str(ipaddress.ip_network(subnet))
    except ValueError as exc:
        raise ModelError("subnet", f"{subnet!r} is not a network: {exc}") from None


def _subnet6(subnet6: Any, subnet: str | None, name: str) -> str | None:
    """A network's IPv6 subnet beside its IPv4 one: a unicast IPv6 network, /64 or
    shorter (containers' link-local and SLAAC-style addresses take 64 bits)."""
    if subnet6 in (None, ""):
        return None
    where = f"network {name!r}: subnet6"
    if not isinstance(subnet6, str) or len(subnet6) > MAX_SUBNET_LEN:
        raise ModelError("subnet6", f"{where} must be an IPv6 network in CIDR notation, "
                                    "like fd00:10::/64")
    try:
        net = ipaddress.IPv6Network(subnet6.strip())
    except ValueError as exc:
        raise ModelError("subnet6", f"{where} {subnet6!r} is not an IPv6 network: {exc}") \
            from None
    if net.prefixlen > 64:
        raise ModelError("subnet6", f"{where} {net} is longer than /64")
    if net.is_link_local or net.is_multicast or net.is_loopback or net.is_unspecified:
        raise ModelError("subnet6", f"{where} {net} is not a unicast subnet (link-local, "
                                    "multicast and loopback are not)")
    if subnet is not None and ":" in subnet:
        raise ModelError("subnet6", f"{where}: subnet {subnet} is IPv6 already; give the "
                                    "IPv4 subnet as subnet and the IPv6 one as subnet6")
    return str(net)


def user_tenant(name: Any, vni: Any, vlan: Any = None, subnet: Any = None,
                description: Any = "", domain: Any = None, gateway: Any = None,
                egress: Any = False, conntrack_limit: Any = DEFAULT_CONNTRACK_LIMIT,
                subnet6: Any = None, gateway6: Any = GATEWAY6_AUTO) -> Tenant:
    """A tenant or network a user asks for (REST, an import): its VNI is at least
    VNI_MIN, so the built-in default and any VNI below stay out of users' reach."""
    _int_in(vni, VNI_MIN, MAX_VNI, "vni")
    return Tenant(name, vni, vlan, subnet, description, domain, gateway, egress,
                  conntrack_limit, subnet6, gateway6)


DEFAULT_TENANT = Tenant(
    "default", vni=1,
    description="built-in: every host's docker0 link; stock docker run containers share it",
)


@dataclass(frozen=True)
class Binding:
    """A br0 port on one host given to one tenant (access) or several (trunk).

    ``access``: ``tenant`` is required and its frames are untagged; ``mac`` is a
    known endpoint behind the port.  ``trunk``: ``trunk`` names the tenants
    carried tagged with their ``Tenant.vlan``; ``tenant`` is the optional native
    tenant (untagged frames), not also in ``trunk``; no ``mac``.

    ``uplink``: the port is the host's link to the shared L2 network (VLAN
    transport), not a local port: what arrives on it was sent on another
    host, so tenant-aggregate rate limits and QoS rules do not count it.

    Port security (an access port with a ``mac``; see ``controller.pipeline``):
    the port may send only from ``mac``, ARP only with that sender MAC.
    ``ips`` (IPv4 and IPv6 addresses or CIDRs): when given, IPv4 only from the
    IPv4 ones, ARP only for them; IPv6 (with Neighbour Discovery checked) only from the
    IPv6 ones and the MAC's EUI-64 link-local address, and only when the port has IPv6
    ones or its network is dual-stack (``Tenant.ipv6_subnet``); else no IPv6.
    ``allowed_address_pairs``: more (ip, mac) the
    port may send from, as Neutron's; mac None means the port's own ``mac``.
    """

    host: str
    port: str
    tenant: str | None
    mode: str = ACCESS
    mac: str | None = None
    trunk: tuple[str, ...] = ()
    uplink: bool = False
    ips: tuple[str, ...] = ()
    allowed_address_pairs: tuple[tuple[str, str | None], ...] = ()

    def __post_init__(self) -> None:
        where = f"binding {self.host}/{self.port}"
        self._normalise_addresses(where)
        if self.mode not in (ACCESS, TRUNK):
            raise ModelError("mode", f"{where}: mode {self.mode!r} not access|trunk")
        if isinstance(self.trunk, str):
            raise ModelError("trunk", f"{where}: trunk must be a list of tenant names, "
                             f"not the string {self.trunk!r}")
        trunk = tuple(self.trunk)
        object.__setattr__(self, "trunk", trunk)
        if self.tenant is not None and (not isinstance(self.tenant, str) or not self.tenant):
            raise ModelError("tenant", f"{where}: bad tenant {self.tenant!r}")
        if any(not isinstance(t, str) or not t for t in trunk):
            raise ModelError("trunk", f"{where}: bad tenant name in trunk {trunk!r}")
        if self.mode == ACCESS:
            if self.tenant is None:
                raise ModelError("tenant", f"{where}: an access port needs a tenant")
            if trunk:
                raise ModelError("trunk", f"{where}: an access port carries no trunk tenants")
        else:
            if self.mac is not None:
                raise ModelError("mac", f"{where}: a trunk port has no single endpoint mac")
            if len(set(trunk)) != len(trunk):
                raise ModelError("trunk", f"{where}: a tenant is listed twice in the trunk")
            if self.tenant is not None and self.tenant in trunk:
                raise ModelError("trunk", f"{where}: native tenant {self.tenant!r} is also in the trunk")
            if self.tenant is None and not trunk:
                raise ModelError("trunk", f"{where}: a trunk port carries at least one tenant")
        if not isinstance(self.uplink, bool):
            raise ModelError("uplink", f"{where}: uplink must be true or false, not {self.uplink!r}")
        if self.uplink and self.mac is not None:
            raise ModelError("mac", f"{where}: an uplink has no mac")
        if self.mac is not None:
            if not isinstance(self.mac, str):
                raise ModelError("mac", f"{where}: bad mac {self.mac!r}")
            mac = self.mac.lower()
            if not _MAC_RE.fullmatch(mac):
                raise ModelError("mac", f"{where}: bad mac {self.mac!r}")
            if int(mac[:2], 16) & 1:
                raise ModelError("mac", f"{where}: mac {mac} is multicast, not a unicast MAC")
            object.__setattr__(self, "mac", mac)  # normalise: flows compare lowercase MACs
        for owned in (self.mac, *(m for _, m in self.allowed_address_pairs)):
            if owned is not None and owned.startswith(RESERVED_MAC_PREFIXES):
                raise ModelError("mac", f"{where}: mac {owned} is reserved for weft's gateways "
                                        f"({', '.join(p + ':*' for p in RESERVED_MAC_PREFIXES)})")

    def _normalise_addresses(self, where: str) -> None:
        if isinstance(self.ips, str):
            raise ModelError("ips", f"{where}: ips must be a list of IP addresses, "
                                    f"not {self.ips!r}")
        ips = tuple(_ip_net(ip, f"{where}: ips", "ips") for ip in self.ips)
        if len(set(ips)) != len(ips):
            dup = next(ip for ip in ips if ips.count(ip) > 1)
            raise ModelError("ips", f"duplicate ip of {self.host}/{self.port}: {dup!r}")
        pairs = []
        what, field = f"{where}: allowed_address_pairs", "allowed_address_pairs"
        for pair in self.allowed_address_pairs:
            try:
                ip, mac = (pair.get("ip_address"), pair.get("mac_address")) \
                    if isinstance(pair, Mapping) else pair
            except (TypeError, ValueError):
                raise ModelError(field, f"{what}: {pair!r} is not an (ip, mac) pair") from None
            mac = None if mac is None else _unicast_mac(mac, what, field)
            pairs.append((_ip_net(ip, what, field), mac))
        object.__setattr__(self, "ips", ips)
        object.__setattr__(self, "allowed_address_pairs", tuple(pairs))
        if (ips or pairs) and (self.mode != ACCESS or self.mac is None):
            raise ModelError("ips" if ips else field, f"{where}: ips and allowed_address_pairs "
                                                      "need an access port with a mac")

    def source_addresses(self) -> dict[str, frozenset[str] | None]:
        """Port security: source MAC -> the IPv4 and IPv6 sources allowed with it (None: any).

        Empty for ports without it (no mac, trunks, uplinks)."""
        if self.mac is None or self.mode != ACCESS or self.uplink:
            return {}
        out: dict[str, set[str] | None] = {self.mac: set(self.ips) if self.ips else None}
        for ip, mac in self.allowed_address_pairs:
            mac = mac or self.mac
            if mac in out and out[mac] is None:
                continue
            out.setdefault(mac, set())
            out[mac].add(ip)      # type: ignore[union-attr]
        return {mac: None if ips is None else frozenset(ips) for mac, ips in out.items()}

    @property
    def tenants(self) -> tuple[str, ...]:
        """Every tenant the port carries: the native/access tenant first, then the trunk."""
        native = () if self.tenant is None else (self.tenant,)
        return (*native, *self.trunk)


@dataclass(frozen=True)
class LinkEndpoint:
    """A container behind ``host``'s docker0 link (default tenant), as the host's agent
    knows it from dockerd: its MAC is pinned to that link.  Every host forwards the MAC
    there (static flows) and drops frames from it entering any other of its ports that
    carry the default tenant unchecked (the docker0 link, ports without port security),
    so no docker0 container can take another host's; inside one host's docker0 (a
    Linux bridge) nothing is enforced.  ``ips``: what dockerd says it has (shown)."""

    host: str
    mac: str
    ips: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_host(self.host)
        where = f"docker0 endpoint of {self.host}"
        object.__setattr__(self, "mac", _unicast_mac(self.mac, f"{where}: mac", "mac"))
        if isinstance(self.ips, str):
            raise ModelError("ips", f"{where}: ips must be a list of IPv4 addresses")
        object.__setattr__(self, "ips", tuple(_ipv4_net(ip, f"{where}: ips", "ips")
                                              for ip in self.ips))

    def binding(self) -> Binding:
        """The endpoint as its host's docker0 link bound with its MAC (for L2 flows)."""
        return Binding(self.host, DOCKER_LINK_PORT, DEFAULT_TENANT.name, mac=self.mac)


def _ipv4_net(value: Any, what: str, field: str) -> str:
    """An IPv4 address ("10.0.0.5") or network ("10.0.0.0/24"), normalised."""
    if not isinstance(value, str):
        raise ModelError(field, f"{what}: {value!r} is not an IPv4 address or CIDR")
    try:
        net = ipaddress.IPv4Network(value.strip(), strict=False)
    except ValueError:
        raise ModelError(field, f"{what}: {value!r} is not an IPv4 address or CIDR") from None
    return str(net.network_address) if net.prefixlen == 32 else str(net)


def _ip_net(value: Any, what: str, field: str) -> str:
    """An IPv4 or IPv6 address or network a port may send from, normalised (an address
    without its /32 or /128).  IPv6 link-local (the port's own is always allowed),
    multicast, loopback and the unspecified address are refused: no port owns them."""
    if isinstance(value, str) and ":" not in value:
        return _ipv4_net(value, what, field)
    bad = f"{what}: {value!r} is not an IPv4 or IPv6 address or CIDR"
    if not isinstance(value, str):
        raise ModelError(field, bad)
    try:
        net = ipaddress.IPv6Network(value.strip(), strict=False)
    except ValueError:
        raise ModelError(field, bad) from None
    if net.is_link_local or net.is_multicast or net.is_loopback or net.is_unspecified \
            or net.network_address.ipv4_mapped is not None:
        raise ModelError(field, f"{what}: {value!r} is not a unicast IPv6 address a port "
                                "can own (link-local, multicast, loopback, :: and IPv4-mapped "
                                "are not; the port's own link-local is always allowed)")
    return str(net.network_address) if net.prefixlen == 128 else str(net)


def eui64_link_local(mac: str) -> str:
    """The IPv6 link-local address Linux gives an interface with ``mac`` (EUI-64, the
    default ``addr_gen_mode`` 0): fe80::/64 + the MAC with ff:fe in the middle and the
    universal/local bit flipped."""
    b = bytes.fromhex(mac.replace(":", ""))
    iid = bytes([b[0] ^ 0x02]) + b[1:3] + b"\xff\xfe" + b[3:]
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + iid))


def is_ipv6(address: str) -> bool:
    """Whether a normalised address or CIDR (``Binding.ips``) is IPv6."""
    return ":" in address


def _unicast_mac(value: Any, what: str, field: str) -> str:
    mac = value.lower() if isinstance(value, str) else ""
    if not _MAC_RE.match(mac) or int(mac[:2], 16) & 1:
        raise ModelError(field, f"{what}: {value!r} is not a unicast MAC address")
    return mac


# --- QoS ------------------------------------------------------------------------------
MAX_METER_ID = 0xFFFF            # weft's meter ids: 1..65535 (OpenFlow allows more)
MAX_KBPS = 100_000_000           # 100 Gbit/s
MAX_BURST_KB = 10_000_000
MAX_PPS = 100_000_000            # packets/s
MAX_BURST_PKTS = 10_000_000
MAX_QOS_PRIORITY = 1000          # a QoS rule's priority: 1..MAX_QOS_PRIORITY
MAX_DSCP = 63                    # the 6-bit IPv4 DSCP
MAX_QUEUE = 7                    # OpenFlow set_queue ids a QoS rule may name
MAX_IP_PROTO = 255
MAX_L4_PORT = 65535              # TCP/UDP ports: 1..MAX_L4_PORT
MAX_ICMP_TYPE = 255
QOS_MATCH_KEYS = ("ip_proto", "src", "dst", "src_port", "dst_port", "dscp")
IP_PROTOS = {"icmp": 1, "tcp": 6, "udp": 17}
_IP_PROTO_NAMES = {v: k for k, v in IP_PROTOS.items()}
ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_IPV6 = 0x86DD
IPPROTO_ICMPV6 = 58


@dataclass(frozen=True)
class RateLimit:
    """A meter on ``host`` for what one bound ``port`` sends, or for the aggregate of
    what ``tenant``'s local ports on that host send (exactly one of the two).

    ``id`` is the OpenFlow meter id.  The rate has one unit (an OpenFlow meter has
    one): ``kbps`` (kbit/s, bucket ``burst_kb`` in kbit) or ``pps`` (packets/s,
    bucket ``burst_pkts`` in packets; small-frame floods pass a kbit/s limit at
    many thousand packets/s).  Burst 0: no burst flag, the switch picks its default.
    A port that is not bound on the host, or a tenant without local ports
    there, gives no meter and no flow (not an error).
    """

    id: int
    host: str
    kbps: int | None
    burst_kb: int = 0
    port: str | None = None
    tenant: str | None = None
    pps: int | None = None
    burst_pkts: int = 0

    def __post_init__(self) -> None:
        _int_in(self.id, 1, MAX_METER_ID, "rate limit id (meter id)", "id")
        where = f"rate limit {self.id}"
        check_host(self.host)
        if (self.kbps is None) == (self.pps is None):
            raise ModelError("pps" if self.kbps is not None else "kbps",
                             f"{where}: give exactly one rate: kbps (kbit/s) or pps (packets/s)")
        if self.kbps is not None:
            _int_in(self.kbps, 1, MAX_KBPS, f"{where}: kbps")
        if self.pps is not None:
            _int_in(self.pps, 1, MAX_PPS, f"{where}: pps")
        _int_in(self.burst_kb, 0, MAX_BURST_KB, f"{where}: burst_kb")
        _int_in(self.burst_pkts, 0, MAX_BURST_PKTS, f"{where}: burst_pkts")
        if self.pps is not None and self.burst_kb:
            raise ModelError("burst_kb", f"{where}: burst_kb goes with kbps; with pps give "
                             "burst_pkts")
        if self.kbps is not None and self.burst_pkts:
            raise ModelError("burst_pkts", f"{where}: burst_pkts goes with pps; with kbps give "
                             "burst_kb")
        if (self.port is None) == (self.tenant is None):
            raise ModelError("port", f"{where}: give exactly one of port (a bound port) or tenant "
                             "(the tenant's aggregate on the host)")
        if self.port is not None:
            _name(self.port, f"{where}: port")
        if self.tenant is not None:
            _name(self.tenant, f"{where}: tenant")


@dataclass(frozen=True)
class QosRule:
    """Per-flow QoS of what ``tenant``'s local ports send, on every host with such ports.

    ``match``: pairs (key, value), see the module docstring; normalised and
    sorted.  Actions (at least one, combinable): ``kbps`` (+ ``burst_kb``) a
    meter whose id is ``id``; ``set_dscp`` rewrite the IPv4 DSCP; ``queue``
    OpenFlow set_queue.  ``priority`` 1..1000: among a tenant's rules the
    highest matching one applies (one rule per packet); unique per tenant.
    """

    id: int
    tenant: str
    priority: int
    match: tuple[tuple[str, Any], ...] = ()
    kbps: int | None = None
    burst_kb: int = 0
    set_dscp: int | None = None
    queue: int | None = None

    def __post_init__(self) -> None:
        _int_in(self.id, 1, MAX_METER_ID, "QoS rule id (meter id)", "id")
        where = f"QoS rule {self.id}"
        _name(self.tenant, f"{where}: tenant")
        _int_in(self.priority, 1, MAX_QOS_PRIORITY, f"{where}: priority")
        object.__setattr__(self, "match", _normal_qos_match(self.match, where))
        if self.kbps is not None:
            _int_in(self.kbps, 1, MAX_KBPS, f"{where}: kbps")
        _int_in(self.burst_kb, 0, MAX_BURST_KB, f"{where}: burst_kb")
        if self.kbps is None and self.burst_kb:
            raise ModelError("burst_kb", f"{where}: burst_kb needs kbps (a meter)")
        if self.set_dscp is not None:
            _int_in(self.set_dscp, 0, MAX_DSCP, f"{where}: set_dscp")
        if self.queue is not None:
            _int_in(self.queue, 0, MAX_QUEUE, f"{where}: queue")
        if self.kbps is None and self.set_dscp is None and self.queue is None:
            raise ModelError("kbps", f"{where}: give at least one action: kbps, set_dscp or queue")

    def oxm(self) -> dict[str, Any]:
        """The OpenFlow 1.3 match (OXM names, the switch's normal form) of ``match``."""
        return ipv4_oxm(self.match)


def ipv4_oxm(match: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    """The OXM match of normalised (key, value) pairs (see the module docstring)."""
    m = dict(match)
    out: dict[str, Any] = {"eth_type": ETH_TYPE_IPV4}
    proto = m.get("ip_proto")
    if proto is not None:
        out["ip_proto"] = IP_PROTOS.get(proto, proto)
    for key, oxm in (("src", "ipv4_src"), ("dst", "ipv4_dst")):
        if key in m:
            net = ipaddress.IPv4Network(m[key])
            if net.prefixlen == 32:
                out[oxm] = str(net.network_address)
            elif net.prefixlen:
                out[oxm] = (str(net.network_address), str(net.netmask))
    for key, l4 in (("src_port", "src"), ("dst_port", "dst")):
        if key in m:
            out[f"{proto}_{l4}"] = m[key]
    if "dscp" in m:
        out["ip_dscp"] = m["dscp"]
    return out


def _normal_qos_match(match: Any, where: str) -> tuple[tuple[str, Any], ...]:
    if isinstance(match, Mapping):
        pairs = list(match.items())
    else:
        try:
            pairs = [tuple(p) for p in match]
        except TypeError:
            raise ModelError("match", f"{where}: match must be (key, value) pairs, not {match!r}") from None
        if any(len(p) != 2 for p in pairs):
            raise ModelError("match", f"{where}: match must be (key, value) pairs, not {match!r}")
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key not in QOS_MATCH_KEYS:
            raise ModelError("match", f"{where}: unknown match key {key!r} "
                             f"(known: {', '.join(QOS_MATCH_KEYS)})")
        if key in out:
            raise ModelError("match", f"{where}: match key {key!r} given twice")
        what = f"{where}: match {key}"
        if key == "ip_proto":
            if isinstance(value, str):
                if value.lower() not in IP_PROTOS:
                    raise ModelError("match.ip_proto", f"{what} {value!r} is not a number or one of "
                                     f"{', '.join(sorted(IP_PROTOS))}")
                value = value.lower()
            else:
                value = _IP_PROTO_NAMES.get(_int_in(value, 0, MAX_IP_PROTO, what), value)
        elif key in ("src", "dst"):
            if not isinstance(value, str):
                raise ModelError(f"match.{key}", f"{what} must be an IPv4 address or CIDR")
            try:
                net = ipaddress.IPv4Network(value.strip(), strict=False)
            except ValueError:
                raise ModelError(f"match.{key}", f"{what} {value[:40]!r} is not an IPv4 "
                                                 "address or CIDR") from None
            value = str(net.network_address) if net.prefixlen == 32 else str(net)
        elif key in ("src_port", "dst_port"):
            _int_in(value, 1, MAX_L4_PORT, what)
        else:
            _int_in(value, 0, MAX_DSCP, what)
        out[key] = value
    if ("src_port" in out or "dst_port" in out) and out.get("ip_proto") not in ("tcp", "udp"):
        raise ModelError("match", f"{where}: match src_port/dst_port need ip_proto tcp or udp")
    return tuple(sorted(out.items()))


# --- ACLs ------------------------------------------------------------------------------
ACL_ACTIONS = ("allow", "drop")
ACL_DIRECTIONS = ("ingress", "egress")
ACL_DEFAULTS = ("allow", "deny")     # a tenant's policy when no rule matches
ACL_ICMPV6 = "icmpv6"                # an ACL rule's ip_proto for ICMPv6 (58), IPv6 rules only
MAX_ACL_PRIORITY = 10_000
MAX_ACL_ID = 0xFFFFFFFF              # the low 32 bits of the rule's flow cookies
MAX_ACL_ZONE_VNI = 0xFFFF            # conntrack zones are 16 bits: zone = the tenant's VNI


@dataclass(frozen=True)
class AclRule:
    """One ordered, stateful rule of a tenant's security policy (like a security group rule).

    ``direction`` says which side of the connection is the tenant's endpoint:
    ``ingress`` rules are about connections *to* the tenant's endpoints
    (``remote`` is the source, ``local`` the destination), ``egress`` rules
    about connections *from* them (``local`` the source, ``remote`` the
    destination).  ``port`` is the destination TCP/UDP port, ``icmp_type``
    the ICMP type.  A rule decides the first packet of a connection; the
    replies and the rest of the connection pass by conntrack.  Among a
    tenant's rules the highest ``priority`` matching one decides (unique per
    tenant); none matching: the tenant's default (allow or deny).
    """

    id: int
    tenant: str
    priority: int
    action: str
    direction: str = "ingress"
    ip_proto: Any = None
    remote: str | None = None
    local: str | None = None
    port: int | None = None
    icmp_type: int | None = None
    description: str = ""

    def __post_init__(self) -> None:
        _int_in(self.id, 1, MAX_ACL_ID, "ACL rule id", "id")
        where = f"ACL rule {self.id}"
        _name(self.tenant, f"{where}: tenant")
        _int_in(self.priority, 1, MAX_ACL_PRIORITY, f"{where}: priority")
        if self.action not in ACL_ACTIONS:
            raise ModelError("action", f"{where}: action {self.action!r} not allow|drop")
        if self.direction not in ACL_DIRECTIONS:
            raise ModelError("direction", f"{where}: direction {self.direction!r} "
                                          "not ingress|egress")
        proto = self.ip_proto
        if isinstance(proto, str) and proto.strip().lower() == ACL_ICMPV6:
            proto = ACL_ICMPV6
        elif proto is not None:
            proto = dict(_normal_qos_match([("ip_proto", proto)], where))["ip_proto"]
        remote = _acl_address(self.remote, "src", where)
        local = _acl_address(self.local, "dst", where)
        object.__setattr__(self, "ip_proto", proto)
        object.__setattr__(self, "remote", remote)
        object.__setattr__(self, "local", local)
        families = {is_ipv6(a) for a in (remote, local) if a is not None}
        if len(families) > 1:
            raise ModelError("local", f"{where}: remote {remote} and local {local} mix IPv4 "
                                      "and IPv6: one rule is of one family (give two rules)")
        if proto == ACL_ICMPV6 and False in families:
            raise ModelError("ip_proto", f"{where}: ip_proto icmpv6 with IPv4 addresses "
                                         "(IPv4's is icmp)")
        if proto == "icmp" and True in families:
            raise ModelError("ip_proto", f"{where}: ip_proto icmp with IPv6 addresses "
                                         "(IPv6's is icmpv6)")
        if self.port is not None:
            _int_in(self.port, 1, MAX_L4_PORT, f"{where}: port")
            if self.ip_proto not in ("tcp", "udp"):
                raise ModelError("port", f"{where}: port needs ip_proto tcp or udp")
        if self.icmp_type is not None:
            _int_in(self.icmp_type, 0, MAX_ICMP_TYPE, f"{where}: icmp_type")
            if self.ip_proto not in ("icmp", ACL_ICMPV6):
                raise ModelError("icmp_type", f"{where}: icmp_type needs ip_proto icmp "
                                              "or icmpv6")
        check_text(self.description, "description")

    @property
    def ipv6(self) -> bool:
        """An IPv6 rule: an IPv6 address (``::/0``: any) or ip_proto icmpv6; else IPv4
        (a rule without addresses is IPv4, as before IPv6)."""
        return self.ip_proto == ACL_ICMPV6 or any(
            a is not None and is_ipv6(a) for a in (self.remote, self.local))

    def oxm(self) -> dict[str, Any]:
        """The OpenFlow match of the connection's first packet (OXM names)."""
        src, dst = (self.remote, self.local) if self.direction == "ingress" else \
            (self.local, self.remote)
        if not self.ipv6:
            match: list[tuple[str, Any]] = [(k, v) for k, v in (
                ("ip_proto", self.ip_proto), ("src", src), ("dst", dst),
                ("dst_port", self.port)) if v is not None]
            out = ipv4_oxm(tuple(sorted(match)))
            if self.icmp_type is not None:
                out["icmpv4_type"] = self.icmp_type
            return out
        out = {"eth_type": ETH_TYPE_IPV6}
        proto = self.ip_proto
        if proto is not None:
            out["ip_proto"] = IPPROTO_ICMPV6 if proto == ACL_ICMPV6 else IP_PROTOS.get(proto, proto)
        for value, oxm in ((src, "ipv6_src"), (dst, "ipv6_dst")):
            if value is not None:
                net = ipaddress.IPv6Network(value)
                if net.prefixlen == 128:
                    out[oxm] = str(net.network_address)
                elif net.prefixlen:
                    out[oxm] = (str(net.network_address), str(net.netmask))
        if self.port is not None:
            out[f"{proto}_dst"] = self.port
        if self.icmp_type is not None:
            out["icmpv6_type"] = self.icmp_type
        return out


def _acl_address(value: Any, key: str, where: str) -> str | None:
    """An ACL rule's ``remote``/``local``: an IPv4 or IPv6 address or CIDR, normalised
    (a host as its address, host bits cleared); ModelError naming ``match.<key>``."""
    if value is None:
        return None
    what = f"{where}: match {key}"
    if not isinstance(value, str):
        raise ModelError(f"match.{key}", f"{what} must be an IPv4 or IPv6 address or CIDR")
    try:
        net = ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ModelError(f"match.{key}", f"{what} {value[:50]!r} is not an IPv4 or IPv6 "
                                         "address or CIDR") from None
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


@dataclass(frozen=True)
class Topology:
    """Everything the pipeline needs about the cluster, for every switch at once.

    The default tenant is always present (added if absent) and owns the docker0
    link port of every host in ``hosts``; that binding is implicit, not stored.
    ``limits`` and ``rules``: QoS; their ids (meter ids) are unique together.
    ``endpoints``: docker0 containers the agents reported, each MAC once; a MAC also
    bound to a port of the default tenant is that port's (the endpoint is ignored).
    """

    tenants: tuple[Tenant, ...] = ()
    bindings: tuple[Binding, ...] = ()
    hosts: tuple[str, ...] = ()
    limits: tuple[RateLimit, ...] = field(default=(), kw_only=True)
    rules: tuple[QosRule, ...] = field(default=(), kw_only=True)
    acls: tuple[AclRule, ...] = field(default=(), kw_only=True)
    acl_deny: frozenset[str] = field(default=frozenset(), kw_only=True)
    endpoints: tuple[LinkEndpoint, ...] = field(default=(), kw_only=True)
    routes: tuple[Route, ...] = field(default=(), kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "endpoints", tuple(self.endpoints))
        object.__setattr__(self, "routes", tuple(self.routes))
        if not all(isinstance(e, LinkEndpoint) for e in self.endpoints):
            raise ValueError("endpoints holds something that is not a LinkEndpoint")
        _unique([e.mac for e in self.endpoints], "docker0 endpoint mac")
        object.__setattr__(self, "limits", tuple(self.limits))
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "acls", tuple(self.acls))
        object.__setattr__(self, "acl_deny", frozenset(self.acl_deny))
        names = [t.name for t in self.all_tenants]
        vnis = [t.vni for t in self.all_tenants]
        _unique(names, "tenant name")
        _unique(vnis, "tenant vni")
        _unique([t.vlan for t in self.all_tenants if t.vlan is not None], "tenant vlan")
        by_name = {t.name: t for t in self.all_tenants}
        for b in self.bindings:
            for name in b.tenants:
                if name not in by_name:
                    raise ValueError(f"binding {b.host}/{b.port}: unknown tenant {name!r}")
            for name in b.trunk:
                if by_name[name].vlan is None:
                    raise ValueError(f"binding {b.host}/{b.port}: tenant {name!r} has no vlan "
                                     "to carry it on a trunk")
            if b.port == DOCKER_LINK_PORT:
                raise ValueError(f"binding {b.host}/{b.port}: the docker0 link "
                                 "belongs to the default tenant")
        _unique([(b.host, b.port) for b in self.bindings], "binding of port")
        _unique([(b.tenant, b.mac) for b in self.bindings if b.mac], "mac in tenant")
        self._check_networks(by_name)
        self._check_qos(by_name)
        self._check_acls(by_name)

    def _check_networks(self, by_name: Mapping[str, Tenant]) -> None:
        for n in self.all_tenants:
            if n.domain is None:
                continue
            owner = by_name.get(n.domain)
            if owner is None or owner.domain is not None:
                raise ValueError(f"network {n.name!r}: unknown tenant {n.domain!r}")
            if owner.name == DEFAULT_TENANT.name:
                raise ValueError(f"network {n.name!r}: the default tenant has no networks")
        for n in self.all_tenants:
            if n.gateway is not None and by_name[n.tenant].vni > MAX_ACL_ZONE_VNI:
                raise ValueError(f"network {n.name!r}: a gateway needs its tenant's VNI <= "
                                 f"{MAX_ACL_ZONE_VNI} (the tenant id, a conntrack zone)")
        gateways = {n.name: (n.gateway, n.gateway6) for n in self.all_tenants if n.gateway}
        for b in self.bindings:
            for gw in gateways.get(b.tenant, ()) if b.tenant is not None else ():
                if gw is not None and gw in b.ips:
                    raise ValueError(f"binding {b.host}/{b.port}: {gw} is the gateway of "
                                     f"network {b.tenant!r} (give the port another address, "
                                     "or the network another gateway)")
        seen = set()
        for r in self.routes:
            if not isinstance(r, Route):
                raise ValueError(f"routes holds {r!r}, not a Route")
            t = by_name.get(r.tenant)
            if t is None or t.domain is not None:
                raise ValueError(f"route {r.prefix}: unknown tenant {r.tenant!r}")
            if (r.tenant, r.prefix) in seen:
                raise ValueError(f"duplicate route {r.prefix} of tenant {r.tenant!r}")
            seen.add((r.tenant, r.prefix))
            if self.network_of_address(r.tenant, r.via) is None:
                raise ValueError(f"route {r.prefix} of {r.tenant!r}: via {r.via} is in none "
                                 "of the tenant's networks with a gateway"
                                 + (" (an IPv6 gateway)" if r.v6 else ""))

    def networks_of(self, tenant: str) -> tuple[Tenant, ...]:
        """The networks of tenant ``tenant``: its default network first."""
        return self._networks_by_tenant.get(tenant, ())

    @cached_property
    def _networks_by_tenant(self) -> dict[str, tuple[Tenant, ...]]:
        out: dict[str, list[Tenant]] = {}
        for n in sorted(self.all_tenants, key=lambda n: n.domain is not None):
            out.setdefault(n.tenant, []).append(n)
        return {t: tuple(ns) for t, ns in out.items()}

    def network_of_address(self, tenant: str, address: str) -> Tenant | None:
        """The gateway network of ``tenant`` whose subnet holds ``address`` (the
        gateway itself excluded), or None; an IPv6 address: the network with a
        ``gateway6`` whose ``subnet6`` holds it."""
        if ":" in address:
            addr6 = ipaddress.IPv6Address(address)
            for n in self.networks_of(tenant):
                if n.gateway6 is not None and n.subnet6 is not None \
                        and addr6 in ipaddress.IPv6Network(n.subnet6) \
                        and str(addr6) != n.gateway6:
                    return n
            return None
        addr = ipaddress.IPv4Address(address)
        for n in self.networks_of(tenant):
            if n.gateway is not None and n.subnet is not None \
                    and addr in ipaddress.ip_network(n.subnet) and str(addr) != n.gateway:
                return n
        return None

    @property
    def routing_tenants(self) -> tuple[Tenant, ...]:
        """Tenants with at least one network with a gateway: they route."""
        return tuple(t for t in self.all_tenants if t.domain is None
                     and any(n.gateway for n in self.networks_of(t.name)))

    def _check_acls(self, tenants: Mapping[str, Tenant]) -> None:
        for r in self.acls:
            if not isinstance(r, AclRule):
                raise ValueError(f"acls holds {r!r}, not an AclRule")
            if r.tenant not in tenants or tenants[r.tenant].domain is not None:
                raise ValueError(f"ACL rule {r.id}: unknown tenant {r.tenant!r}")
        for name in self.acl_deny:
            if name not in tenants or tenants[name].domain is not None:
                raise ValueError(f"default-deny policy of unknown tenant {name!r}")
        for name in self.acl_tenants:
            if tenants[name].vni > MAX_ACL_ZONE_VNI:
                raise ValueError(f"tenant {name!r}: ACLs need a VNI <= {MAX_ACL_ZONE_VNI} "
                                 "(the conntrack zone)")
        _unique([r.id for r in self.acls], "ACL rule id")
        _unique([(r.tenant, r.priority) for r in self.acls], "ACL rule priority in tenant")

    @property
    def acl_tenants(self) -> frozenset[str]:
        """Tenants with a security policy (a rule or default-deny): their IPv4 is tracked."""
        return frozenset(r.tenant for r in self.acls) | self.acl_deny

    def _check_qos(self, tenants: Mapping[str, Tenant]) -> None:
        for x in self.limits:
            if not isinstance(x, RateLimit):
                raise ValueError(f"limits holds {x!r}, not a RateLimit")
            if x.tenant is not None and (x.tenant not in tenants
                                         or tenants[x.tenant].domain is not None):
                raise ValueError(f"rate limit {x.id}: unknown tenant {x.tenant!r}")
        for r in self.rules:
            if not isinstance(r, QosRule):
                raise ValueError(f"rules holds {r!r}, not a QosRule")
            if r.tenant not in tenants or tenants[r.tenant].domain is not None:
                raise ValueError(f"QoS rule {r.id}: unknown tenant {r.tenant!r}")
        _unique([x.id for x in self.limits] + [r.id for r in self.rules],
                "meter id (QoS limit/rule id)")
        _unique([(x.host, x.port) for x in self.limits if x.port is not None],
                "rate limit of port")
        _unique([(x.host, x.tenant) for x in self.limits if x.tenant is not None],
                "rate limit of tenant on host")
        _unique([(r.tenant, r.priority) for r in self.rules], "QoS rule priority in tenant")

    @property
    def all_tenants(self) -> tuple[Tenant, ...]:
        """``tenants`` plus the built-in default tenant when not listed."""
        if any(t.name == DEFAULT_TENANT.name for t in self.tenants):
            return self.tenants
        return (DEFAULT_TENANT, *self.tenants)

    # Lookups the pipeline makes for every switch, computed once per Topology value
    # (cached_property writes the instance __dict__, which a frozen dataclass allows):
    # with 10,000 bindings on 16 hosts a scan per lookup was most of desired_state.
    @cached_property
    def _tenants_by_name(self) -> dict[str, Tenant]:
        return {t.name: t for t in self.all_tenants}

    @cached_property
    def _bindings_by_host(self) -> dict[str, tuple[Binding, ...]]:
        by_host: dict[str, list[Binding]] = {}
        for b in self.bindings:
            by_host.setdefault(b.host, []).append(b)
        return {h: tuple(bs) for h, bs in by_host.items()}

    def tenant(self, name: str) -> Tenant:
        return self._tenants_by_name[name]

    @cached_property
    def endpoint_bindings(self) -> tuple[Binding, ...]:
        """``endpoints`` as their docker0 links bound with their MACs, of hosts in
        ``hosts``, without MACs a port of the default tenant is bound with."""
        bound = {b.mac for b in self.bindings if b.mac and b.tenant == DEFAULT_TENANT.name}
        hosts = set(self.hosts)
        return tuple(e.binding() for e in self.endpoints
                     if e.host in hosts and e.mac not in bound)

    def bindings_on(self, host: str) -> tuple[Binding, ...]:
        """Stored bindings of ``host`` plus its implicit docker0 link binding."""
        return self._host_index(host)[0]

    def tenants_on(self, host: str) -> frozenset[str]:
        """Names of the tenants carried by any port of ``host`` (access, native or trunk)."""
        return self._host_index(host)[1]

    def local_tenants(self, host: str) -> frozenset[str]:
        """Tenants with a local port on ``host``: ``tenants_on`` without uplinks.

        What decides whether a tenant's QoS (aggregate limit, rules) exists
        on the host; bound ports count whether plugged in or not."""
        return self._host_index(host)[2]

    @cached_property
    def _per_host(self) -> dict[str, tuple[tuple[Binding, ...], frozenset[str], frozenset[str]]]:
        return {}

    def _host_index(self, host: str) -> tuple[tuple[Binding, ...], frozenset[str],
                                               frozenset[str]]:
        """(bindings_on, tenants_on, local_tenants) of ``host``, computed once."""
        got = self._per_host.get(host)
        if got is None:
            stored = self._bindings_by_host.get(host, ())
            on = stored if host not in self.hosts else (
                Binding(host, DOCKER_LINK_PORT, DEFAULT_TENANT.name), *stored)
            got = (on, frozenset(name for b in on for name in b.tenants),
                   frozenset(name for b in on if not b.uplink for name in b.tenants))
            self._per_host[host] = got
        return got


def _unique(values: list, what: str) -> None:
    seen = set()
    for v in values:
        if v in seen:
            raise ValueError(f"duplicate {what}: {v!r}")
        seen.add(v)
