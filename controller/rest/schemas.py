"""The request bodies of the REST API (pydantic): shapes, patterns and bounds.

The bounds of values the model also checks (VNI, VLAN, rates, bursts, priorities,
DSCP, queues, L4 ports, names) are `controller.model`'s constants, so the OpenAPI
document and the model cannot drift apart; the model checks them again on write.
Lengths of address text, the lease ttl and operator flows' table and priority
(checked by `controller.opflows`) are the API's own."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from controller.model import (HOST_NAME_PATTERN, MAC_PATTERN, MAX_ACL_PRIORITY, MAX_BURST_KB,
                              MAX_BURST_PKTS, MAX_DESCRIPTION, MAX_DSCP, MAX_ICMP_TYPE,
                              MAX_IP_PROTO, MAX_KBPS, MAX_L4_PORT, MAX_PPS, MAX_QOS_PRIORITY,
                              MAX_QUEUE, MAX_SUBNET_LEN, MAX_TENANT_NAME, MAX_VNI,
                              PORT_NAME_PATTERN, TENANT_NAME_PATTERN, VLAN_MAX, VLAN_MIN, VNI_MIN,
                              DEFAULT_CONNTRACK_LIMIT, MAX_CONNTRACK_LIMIT)
from controller.store import Invalid

# Published anchored: JSON Schema and pydantic's regex engine have no trailing-newline
# quirk, and the model checks the same patterns with fullmatch.
TENANT_NAME = f"^{TENANT_NAME_PATTERN}$"
HOST_NAME = f"^{HOST_NAME_PATTERN}$"
PORT_NAME = f"^{PORT_NAME_PATTERN}$"
MAC = f"^{MAC_PATTERN}$"
MAX_BULK = 10_000                   # items of one bulk request


IpProto = Annotated[int, Field(ge=0, le=MAX_IP_PROTO)] | Literal["tcp", "udp", "icmp"]
AclIpProto = IpProto | Literal["icmpv6"]
ACL_ADDRESS_LEN = 43      # an IPv6 CIDR: 39 + "/128"
TenantRef = Annotated[str, Field(pattern=TENANT_NAME, max_length=MAX_TENANT_NAME)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


Subnet = Field(None, max_length=MAX_SUBNET_LEN, description="IPv4 or IPv6 network, CIDR")
SUBNET6_DOC = ("IPv6 network beside an IPv4 subnet (dual-stack), CIDR, /64 or shorter, like "
               "fd00:10::/64: every port of the network may then use IPv6 from its own "
               "addresses and its link-local one (port security, docs/security.md)")


def _subnet6_field(doc: str = SUBNET6_DOC) -> Any:
    return Field(None, max_length=MAX_SUBNET_LEN, description=doc)


GATEWAY_DOC = ("IPv4 host address of the subnet routed for the network's ports (the same "
               "on every host); omitted: the subnet's first address (none without an IPv4 "
               "subnet of /30 or shorter, or when the tenant's VNI is past 65535); null: no "
               "gateway")
CONNTRACK_DOC = ("connections the tenant may hold through each host's NAT and conntrack "
                 "(egress, published ports, ACL state); new ones past it are dropped, so "
                 "one tenant cannot fill a host's table for the others")
EGRESS_DOC = ("reach addresses outside the cluster, source-NATed to the host's address; "
              "omitted: on when there is a gateway")


def _gateway_field(doc: str = GATEWAY_DOC) -> Any:
    return Field(None, max_length=15, description=doc)


GATEWAY6_DOC = ("IPv6 address of subnet6 routed for the network's ports and answered by "
                "Neighbour Discovery (the same on every host), needs a gateway too; "
                "omitted: subnet6's first address (::1) when the network has a gateway; "
                "null: no IPv6 gateway")


def _gateway6_field(doc: str = GATEWAY6_DOC) -> Any:
    return Field(None, max_length=45, description=doc)


class TenantIn(_In):
    name: str = Field(pattern=TENANT_NAME, max_length=MAX_TENANT_NAME,
                      description="lowercase letter first; letters, digits, - and _")
    vni: int | None = Field(None, ge=VNI_MIN, le=MAX_VNI,
                            description="auto-assigned when omitted")
    vlan: int | None = Field(None, ge=VLAN_MIN, le=VLAN_MAX,
                             description="802.1Q id on trunk ports")
    subnet: str | None = Subnet
    subnet6: str | None = _subnet6_field()
    description: str = Field("", max_length=MAX_DESCRIPTION)
    gateway: str | None = _gateway_field("its default network's gateway: " + GATEWAY_DOC)
    gateway6: str | None = _gateway6_field("its default network's IPv6 gateway: "
                                           + GATEWAY6_DOC)
    egress: bool | None = Field(None, description=EGRESS_DOC)
    conntrack_limit: int = Field(DEFAULT_CONNTRACK_LIMIT, ge=1, le=MAX_CONNTRACK_LIMIT,
                                 description=CONNTRACK_DOC)


class NetworkPatch(_In):
    vlan: int | None = Field(None, ge=VLAN_MIN, le=VLAN_MAX, description="null: no VLAN")
    subnet: str | None = Field(None, max_length=MAX_SUBNET_LEN,
                               description="IPv4 or IPv6 network, CIDR; a new subnet moves "
                                           "the gateway with it unless gateway is given")
    subnet6: str | None = _subnet6_field(SUBNET6_DOC + "; null: IPv4 only")
    description: str = Field("", max_length=MAX_DESCRIPTION)
    gateway: str | None = _gateway_field("IPv4 host address of the subnet; null: none")
    gateway6: str | None = _gateway6_field("IPv6 address of subnet6 (not its network "
                                           "address); null: none; kept while subnet6 and "
                                           "the gateway stay, else moved to the new "
                                           "subnet6's first address unless given")
    egress: bool | None = Field(None, description="on needs a gateway")


class TenantPatch(NetworkPatch):
    conntrack_limit: int = Field(DEFAULT_CONNTRACK_LIMIT, ge=1, le=MAX_CONNTRACK_LIMIT,
                                 description=CONNTRACK_DOC)


class NetworkIn(_In):
    name: str = Field(pattern=TENANT_NAME, max_length=MAX_TENANT_NAME,
                      description="unique among tenants and networks")
    tenant: str = Field(pattern=TENANT_NAME, max_length=MAX_TENANT_NAME,
                        description="the tenant (routing and isolation domain) it belongs to")
    vni: int | None = Field(None, ge=VNI_MIN, le=MAX_VNI,
                            description="auto-assigned when omitted")
    vlan: int | None = Field(None, ge=VLAN_MIN, le=VLAN_MAX,
                             description="802.1Q id on trunk ports")
    subnet: str | None = Subnet
    subnet6: str | None = _subnet6_field()
    gateway: str | None = _gateway_field()
    gateway6: str | None = _gateway6_field()
    egress: bool | None = Field(None, description=EGRESS_DOC)
    description: str = Field("", max_length=MAX_DESCRIPTION)


class RouteIn(_In):
    prefix: str = Field(max_length=43, description="IPv4 CIDR (0.0.0.0/0: a default route) "
                                                   "or IPv6 CIDR (::/0); unique in the tenant")
    via: str = Field(max_length=39, description="next hop of the prefix's family: a host "
                                                "address of one of the tenant's networks "
                                                "with a gateway (IPv6: with a gateway6, in "
                                                "its subnet6)")
    mac: str | None = Field(None, pattern=MAC, description="the next hop's MAC; required "
                                                           "unless a port bound in that "
                                                           "network has via in its ips")


def segment(tenant: str | None, network: str | None, field: str = "") -> str | None:
    """A body's segment: ``network`` is a synonym of ``tenant`` (a network, or a tenant's
    default network); both given must agree."""
    if network is not None and tenant is not None and network != tenant:
        raise Invalid(f"{field}network", "give tenant or network (synonyms), not two names")
    return network if network is not None else tenant


class AddressPair(_In):
    ip_address: str = Field(max_length=43, description="IPv4 address or CIDR")
    mac_address: str | None = Field(None, pattern=MAC, description="default: the port's mac")


class PortSpec(_In):
    tenant: str | None = Field(None, pattern=TENANT_NAME, max_length=MAX_TENANT_NAME,
                               description="access: the tenant (or network); trunk: the "
                                           "native (untagged) one, optional")
    network: str | None = Field(None, pattern=TENANT_NAME, max_length=MAX_TENANT_NAME,
                                description="a synonym of tenant: a network, or a tenant "
                                            "(its default network)")
    mode: Literal["access", "trunk"] = Field("access", description="access or trunk")
    mac: str | None = Field(None, pattern=MAC,
                            description="access only: a known endpoint behind the port")
    trunk: list[TenantRef] = Field(
        default_factory=list, max_length=VLAN_MAX,
        description="trunk only: tenants carried tagged with their VLAN id")
    ips: list[str] = Field(default_factory=list, max_length=256,
                           description="port security (needs mac): the IPv4 and IPv6 "
                                       "addresses/CIDRs the port may send from (IPv6 also "
                                       "from its MAC's link-local address)")
    allowed_address_pairs: list[AddressPair] = Field(
        default_factory=list, max_length=256,
        description="port security: more (ip, mac) the port may send from, as Neutron's; "
                    "mac defaults to the port's")


class RegisterIn(_In):
    """A host joining by itself (hosts.yaml `membership: register`); see docs/hosts-yaml.md."""
    name: str = Field(pattern=HOST_NAME, max_length=63)
    underlay_ip: str = Field(max_length=15, description="IPv4 address its tunnels use")
    docker_subnet: str | None = Field(None, max_length=18,
                                      description="its docker0 fixed-cidr, inside cluster_subnet")
    tunnel_type: Literal["vxlan", "gre"] | None = None
    datapath_type: Literal["system", "netdev"] | None = None
    ttl: float = Field(30.0, ge=3, le=3600, description="lease seconds; renew before it ends")


class PortIn(PortSpec):
    host: str = Field(pattern=HOST_NAME, max_length=63)
    port: str = Field(pattern=PORT_NAME, max_length=15, description="port name on the host's br0")


BURST_DOC = ("burst in kbit; default a quarter second of the rate (TCP through a policer "
             "needs room: 2000 kbit at 20 Mbit/s gave 11 Mbit/s, 5000 gave 19-20); 0: none")
BURST_PKTS_DOC = ("pps only: burst in packets; default a quarter second of the rate "
                  "(at least 1); 0: none (the switch's default bucket)")
PPS_DOC = ("rate in packets/s, instead of kbps (one unit per limit: an OpenFlow meter has one). "
           "Use it against small-frame floods: 10 Mbit/s lets ~16k 64-byte frames/s through")


class LimitIn(_In):
    host: str = Field(pattern=HOST_NAME, max_length=63)
    port: str | None = Field(None, pattern=PORT_NAME, max_length=15,
                             description="a bound port: limits the traffic it sends")
    tenant: str | None = Field(None, pattern=TENANT_NAME, max_length=MAX_TENANT_NAME,
                               description="or: the tenant's aggregate on the host")
    kbps: int | None = Field(None, gt=0, le=MAX_KBPS,
                             description="rate in kbit/s (give exactly one of kbps or pps)")
    burst_kb: int | None = Field(None, ge=0, le=MAX_BURST_KB, description=BURST_DOC)
    pps: int | None = Field(None, gt=0, le=MAX_PPS, description=PPS_DOC)
    burst_pkts: int | None = Field(None, ge=0, le=MAX_BURST_PKTS, description=BURST_PKTS_DOC)


class LimitPatch(_In):
    kbps: int | None = Field(None, gt=0, le=MAX_KBPS,
                             description="new rate in kbit/s; on a pps limit: switches it to kbit/s")
    burst_kb: int | None = Field(None, ge=0, le=MAX_BURST_KB, description=BURST_DOC)
    pps: int | None = Field(None, gt=0, le=MAX_PPS,
                            description="new rate in packets/s; on a kbps limit: switches it "
                                        "to packets/s")
    burst_pkts: int | None = Field(None, ge=0, le=MAX_BURST_PKTS, description=BURST_PKTS_DOC)


class QosMatch(_In):
    ip_proto: IpProto | None = None
    src: str | None = Field(None, max_length=18, description="IPv4 address or CIDR")
    dst: str | None = Field(None, max_length=18, description="IPv4 address or CIDR")
    src_port: int | None = Field(None, ge=1, le=MAX_L4_PORT,
                                 description="needs ip_proto tcp/udp")
    dst_port: int | None = Field(None, ge=1, le=MAX_L4_PORT,
                                 description="needs ip_proto tcp/udp")
    dscp: int | None = Field(None, ge=0, le=MAX_DSCP)


class RuleIn(_In):
    tenant: str = Field(pattern=TENANT_NAME, max_length=MAX_TENANT_NAME)
    priority: int = Field(ge=1, le=MAX_QOS_PRIORITY,
                          description="higher first; unique per tenant")
    match: QosMatch = Field(default_factory=lambda: QosMatch.model_validate({}))
    kbps: int | None = Field(None, gt=0, le=MAX_KBPS, description="meter: rate limit")
    burst_kb: int | None = Field(None, ge=0, le=MAX_BURST_KB, description=BURST_DOC)
    set_dscp: int | None = Field(None, ge=0, le=MAX_DSCP, description="remark IPv4 DSCP")
    queue: int | None = Field(None, ge=0, le=MAX_QUEUE, description="OpenFlow set_queue")


class RulePatch(_In):
    kbps: int | None = Field(None, gt=0, le=MAX_KBPS)
    burst_kb: int | None = Field(None, ge=0, le=MAX_BURST_KB)
    set_dscp: int | None = Field(None, ge=0, le=MAX_DSCP)


class AclIn(_In):
    priority: int = Field(ge=1, le=MAX_ACL_PRIORITY,
                          description="higher decides first; unique in the tenant")
    action: Literal["allow", "drop"]
    direction: Literal["ingress", "egress"] = Field(
        "ingress", description="ingress: connections to the tenant's endpoints (remote = "
                               "source, local = destination); egress: from them")
    ip_proto: AclIpProto | None = Field(None, description="icmpv6: IPv6 rules only")
    remote: str | None = Field(None, max_length=ACL_ADDRESS_LEN,
                               description="IPv4 or IPv6 address or CIDR (::/0: any IPv6); "
                                           "remote and local of one family")
    local: str | None = Field(None, max_length=ACL_ADDRESS_LEN,
                              description="IPv4 or IPv6 address or CIDR of the tenant's "
                                          "endpoints")
    port: int | None = Field(None, ge=1, le=MAX_L4_PORT,
                             description="destination port; needs ip_proto tcp/udp")
    icmp_type: int | None = Field(None, ge=0, le=MAX_ICMP_TYPE,
                                  description="needs ip_proto icmp or icmpv6")
    description: str = Field("", max_length=MAX_DESCRIPTION)


class AclPatch(_In):
    priority: int | None = Field(None, ge=1, le=MAX_ACL_PRIORITY)
    action: Literal["allow", "drop"] | None = None
    direction: Literal["ingress", "egress"] | None = None
    ip_proto: AclIpProto | None = None
    remote: str | None = Field(None, max_length=ACL_ADDRESS_LEN)
    local: str | None = Field(None, max_length=ACL_ADDRESS_LEN)
    port: int | None = Field(None, ge=1, le=MAX_L4_PORT)
    icmp_type: int | None = Field(None, ge=0, le=MAX_ICMP_TYPE)
    description: str | None = Field(None, max_length=MAX_DESCRIPTION)


class OperatorFlowIn(_In):
    table_id: int = Field(100, ge=0, le=253, description="operator tables 100..199; "
                                                         "others need override")
    priority: int = Field(32768, ge=0, le=65535)
    match: dict[str, Any] = Field(default_factory=dict,
                                  description="ofctl (Ryu ofctl_rest) field names and values")
    actions: list[dict[str, Any]] = Field(default_factory=list, max_length=64,
                                          description="ofctl (Ryu ofctl_rest) actions")
    idle_timeout: int = Field(0, ge=0, le=0, description="must be 0: the flow is permanent")
    hard_timeout: int = Field(0, ge=0, le=0, description="must be 0: the flow is permanent")
    override: bool = Field(False, description="allow weft's tables, tenant ports, port sets "
                                              "(logged)")
    description: str = Field("", max_length=MAX_DESCRIPTION)


class AclDefaultIn(_In):
    default: Literal["allow", "deny"] = Field(
        description="when no rule matches a new connection: allow (weft's default) or deny")


class ContainerName(_In):
    """One name of a container on a weft network, as the host's agent reports it
    (docs/dns.md): its container name or one of its ``--network-alias`` names."""
    network: str = Field(pattern=TENANT_NAME, max_length=MAX_TENANT_NAME)
    name: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9_.-]+$")
    ip: str = Field(max_length=15)
    container: str = Field("", max_length=64)
    primary: bool = Field(False, description="the container's own name (PTR answers it)")


class Attachment(_In):
    """A container port an agent plugged, or (port ``weft-d0``) a docker0 container."""
    port: str = Field(pattern=PORT_NAME, max_length=15)
    tenant: str | None = Field(None, pattern=TENANT_NAME, max_length=MAX_TENANT_NAME,
                               description="its network (or tenant); required unless "
                                           "network is given")
    network: str | None = Field(None, pattern=TENANT_NAME, max_length=MAX_TENANT_NAME,
                                description="a synonym of tenant")
    mac: str | None = Field(None, pattern=MAC)
    container: str | None = Field(None, max_length=256)
    ips: list[str] = Field(default_factory=list, max_length=256,
                           description="its IPv4 and IPv6 addresses: the only sources the "
                                       "port may use (port security)")
    port_security: bool = Field(True, description="false: bound without MAC and addresses, "
                                                  "nothing it sends is checked")


_DockerName = Annotated[str, Field(max_length=MAX_TENANT_NAME)]
_Why = Annotated[str, Field(max_length=2000)]


class DockerNetworksIn(_In):
    """What a host's agent did with the cluster's networks in its dockerd (docs/docker.md,
    Creating a network): each name once, with the reason where it is not made."""
    created: list[_DockerName] = Field(default_factory=list, max_length=MAX_BULK,
                                       description="the agent's own Docker networks")
    adopted: list[_DockerName] = Field(default_factory=list, max_length=MAX_BULK,
                                       description="made by hand, fitting: used as they are")
    conflicts: dict[_DockerName, _Why] = Field(
        default_factory=dict, max_length=MAX_BULK,
        description="a Docker network of that name that differs: left alone")
    waiting: dict[_DockerName, _Why] = Field(
        default_factory=dict, max_length=MAX_BULK,
        description="deletions or recreations waiting for containers to leave")
    errors: dict[_DockerName, _Why] = Field(default_factory=dict, max_length=MAX_BULK,
                                            description="dockerd refused")


class BlockClaimIn(_In):
    host: str = Field(pattern=HOST_NAME, max_length=63, description="the host claiming it")
    subnet: str | None = Field(None, max_length=18, description="the Docker network's IPv4 "
                               "subnet; must be the weft network's when it has one")
    prefix: int | None = Field(None, ge=16, le=32, description="block size; omitted: 16 "
                               "blocks in the subnet at least, none larger than a /26")
    within: str | None = Field(None, max_length=18, description="only a block inside this "
                               "CIDR (Docker's --ip-range)")


class AddressClaimIn(_In):
    host: str = Field(pattern=HOST_NAME, max_length=63, description="the host claiming it")
    address: str = Field(max_length=15, description="IPv4 address (docker run --ip)")
    subnet: str | None = Field(None, max_length=18, description="the Docker network's IPv4 "
                               "subnet; must be the weft network's when it has one")


class TraceIn(_In):
    """POST /v1/trace: where a packet from ``src`` to ``dst`` goes, per the switches' flows."""

    src: str = Field(min_length=1, max_length=128,
                     description="the sending port: HOST/PORT, its IPv4 address, or a "
                                 "container's name")
    dst: str = Field(min_length=1, max_length=128,
                     description="an IPv4 address (in the source's tenant), HOST/PORT or a "
                                 "container's name")
    proto: Literal["icmp", "tcp", "udp"] = "icmp"
    port: int | None = Field(None, ge=1, le=MAX_L4_PORT,
                             description="destination port; needs proto tcp or udp")
    tenant: str | None = Field(None, max_length=64,
                               description="the tenant (or network) of src and dst when an "
                                           "address is bound in several")
    src_ip: str | None = Field(None, max_length=15,
                               description="send from this address instead of the port's "
                                           "own (what a spoofing container does)")
