"""The host's NAT for tenants' egress and published ports: nftables `table ip weft-nat`.

Pure: builds nft scripts from data; the agent (``ovs_agent.gateway``) and the Docker
plugin apply them. Design: docs/routing.md sections 3 and 4.

Each tenant with a gateway port ``wx-<id>`` on this host is an interface to the kernel.
What comes in from it is tracked in the tenant's own conntrack zone in the *original*
direction only; the reply direction lives in the shared zone 0, where masquerade picks
unique ports (each tenant's TCP/UDP from its own port range: ``port_ranges``). So two
tenants opening the same connection from the same container address
stay two connections, and their replies find the right one. The tenant's mark
(``0x57000000 | id``) is kept in the connection's ct mark, and policy routing by that mark
sends replies (and published ports' traffic) back to ``wx-<id>``.

Why the zone is ``id ^ 0x8000`` and not the id: with the kernel datapath, OVS's ACL
conntrack (zone = tenant id) lives in the same table. A packet OVS committed in zone id
and then handed to the kernel through ``wx-<id>`` would find that confirmed entry again,
and the kernel cannot set up NAT on a confirmed entry: egress would leave un-NATed
(measured with a simulated OVS commit in a namespace: tests/integration/test_nat_namespaces.py).
The flip is one-to-one over 16 bits, so tenants never share a zone here and a tenant's
host-stack zone is never its own OVS zone.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

TABLE = "weft-nat"
MARK_BASE = 0x57000000          # | tenant id: the tenant's packet and connection mark
MARK_MASK = 0xFF000000
ROUTE_TABLE_BASE = 0x77000000   # + tenant id: the tenant's routing table
NEXT_HOP = "169.254.77.2"       # the kernel's next hop on wx-<id> (MAC: next_hop_mac)
ZONE_FLIP = 0x8000              # host-stack zone = id ^ ZONE_FLIP (module docstring)
PORT_PREFIX = "wx-"
PROTOS = ("tcp", "udp")
NAT_PORTS = (1024, 65535)       # the host ports masquerade hands out to tenants' TCP/UDP
MIN_SLICE = 1024                # the fewest NAT ports a tenant gets (port_ranges)


@dataclass(frozen=True)
class Published:
    """One published port (``docker run -p HOST_PORT:PORT``) of a container on this host.

    ``host_ip`` None: every address of the host. ``tenant_id``: the VNI of the
    container's tenant (its gateway port is ``wx-<tenant_id>``)."""

    endpoint: str
    proto: str              # "tcp" | "udp"
    host_port: int
    container_ip: str
    container_port: int
    tenant_id: int
    host_ip: str | None = None
    container: str = ""     # the container's name or id, for conflict messages

    def __post_init__(self) -> None:
        # the renderer puts these straight into nft: refuse anything but plain values
        if self.proto not in PROTOS:
            raise ValueError(f"published port: proto {self.proto!r} is not tcp or udp")
        for name in ("host_port", "container_port"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
                raise ValueError(f"published port: {name} {value!r} is not a port")
        _check_id(self.tenant_id)
        ipaddress.IPv4Address(self.container_ip)
        if self.host_ip is not None:
            ipaddress.IPv4Address(self.host_ip)


@dataclass(frozen=True)
class Gateway:
    """A tenant's gateway port on this host, as ``GET /v1/hosts/{host}/gateways`` lists it."""

    tenant: str
    id: int
    port: str
    mac: str
    next_hop_mac: str
    subnets: tuple[str, ...]
    egress_subnets: tuple[str, ...] = ()
    conntrack_limit: int = 0        # 0: no limit

    def __post_init__(self) -> None:
        _check_id(self.id)
        if self.port != f"{PORT_PREFIX}{self.id}":
            raise ValueError(f"gateway of {self.tenant!r}: port {self.port!r} is not "
                             f"{PORT_PREFIX}{self.id}")
        for mac in (self.mac, self.next_hop_mac):
            if len(mac.split(":")) != 6 or not all(
                    len(b) == 2 and int(b, 16) >= 0 for b in mac.split(":")):
                raise ValueError(f"gateway of {self.tenant!r}: {mac!r} is not a MAC")
        for net in (*self.subnets, *self.egress_subnets):
            ipaddress.IPv4Network(net)
        if not isinstance(self.conntrack_limit, int) or self.conntrack_limit < 0:
            raise ValueError(f"gateway of {self.tenant!r}: conntrack_limit "
                             f"{self.conntrack_limit!r}")

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Gateway:
        """One entry of the controller's answer; raises ValueError/KeyError/TypeError."""
        return cls(str(doc["tenant"]), int(doc["id"]), str(doc["port"]), str(doc["mac"]),
                   str(doc["next_hop_mac"]), tuple(str(s) for s in doc.get("subnets") or ()),
                   tuple(str(s) for s in doc.get("egress_subnets") or ()),
                   int(doc.get("conntrack_limit") or 0))

    @property
    def mark(self) -> int:
        return mark(self.id)

    @property
    def zone(self) -> int:
        return zone(self.id)

    @property
    def route_table(self) -> int:
        return ROUTE_TABLE_BASE + self.id


def _check_id(tenant_id: object) -> None:
    if not isinstance(tenant_id, int) or isinstance(tenant_id, bool) \
            or not 0 < tenant_id <= 0xFFFF:
        raise ValueError(f"tenant id {tenant_id!r} is not in 1..65535 (a conntrack zone)")


def mark(tenant_id: int) -> int:
    return MARK_BASE | tenant_id


def zone(tenant_id: int) -> int:
    return tenant_id ^ ZONE_FLIP


def port_ranges(tenant_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
    """Tenant id -> the host ports (first, last) its TCP and UDP egress masquerades to.

    Why: masquerade picks a connection's host port while the entry is still unconfirmed,
    checking only *confirmed* entries.  Two tenants' first packets of the same tuple (same
    container address and port: their original zones differ, their reply tuples in zone 0
    would not) at the same instant both keep the same port, and the kernel drops the later
    one at confirm (UDP: a lost first datagram; one tenant lost 137 of 300 simultaneous rounds in
    tests/integration/test_nat_namespaces.py).  Random ports (``fully-random``) only make
    that unlikely; disjoint ranges make the two reply tuples differ whatever the timing.

    The host's tenants, in id order, share NAT_PORTS in equal slices of at least
    MIN_SLICE ports: up to 63 tenants on one host never share a port; beyond that slices
    are reused round robin (two tenants sharing one then clash only if both draw the same
    random port).  A slice moving when a tenant comes or goes is harmless: existing
    connections keep their ports, and new ones are checked against them."""
    ids = sorted(set(tenant_ids))
    if not ids:
        return {}
    first, last = NAT_PORTS
    total = last - first + 1
    slots = min(len(ids), total // MIN_SLICE)
    size = total // slots
    return {tid: (first + (i % slots) * size, first + (i % slots) * size + size - 1)
            for i, tid in enumerate(ids)}


def _elements(items: Iterable[str]) -> str:
    listed = ", ".join(items)
    return f" elements = {{ {listed} }};" if listed else ""


# The published-port maps, declared the same way by the ruleset and by publish_script
# (declaring an existing set again is a no-op in nft).
_ANY_KEY = "meta l4proto . th dport"
_IP_KEY = "ip daddr . meta l4proto . th dport"
_MAPS = {"published": f"typeof {_ANY_KEY} : ip daddr . th dport",
         "published_mark": f"typeof {_ANY_KEY} : meta mark",
         "published_ip": f"typeof {_IP_KEY} : ip daddr . th dport",
         "published_ip_mark": f"typeof {_IP_KEY} : meta mark"}


def _published_elements(published: Iterable[Published]) -> dict[str, list[str]]:
    """Map name -> elements; one record per key (the first by endpoint wins: the plugin
    refuses conflicts, and one duplicate must not make nft refuse the whole table)."""
    out: dict[str, list[str]] = {name: [] for name in _MAPS}
    seen: set[tuple[str | None, str, int]] = set()
    for p in sorted(published, key=lambda p: (p.endpoint, p.proto, p.host_port)):
        key = (p.host_ip, p.proto, p.host_port)
        if key in seen:
            continue
        seen.add(key)
        k = f"{p.proto} . {p.host_port}" if p.host_ip is None \
            else f"{p.host_ip} . {p.proto} . {p.host_port}"
        suffix = "" if p.host_ip is None else "_ip"
        out[f"published{suffix}"].append(f"{k} : {p.container_ip} . {p.container_port}")
        out[f"published{suffix}_mark"].append(f"{k} : {mark(p.tenant_id):#010x}")
    return out


def ruleset(gateways: Iterable[Gateway], published: Iterable[Published] = ()) -> str:
    """The nft script that replaces ``table ip weft-nat`` whole (one atomic transaction)."""
    gws = sorted({g.id: g for g in gateways}.values(), key=lambda g: g.id)
    pub = _published_elements(published)
    ports = [f'"{g.port}"' for g in gws]
    limits = [g for g in gws if g.conntrack_limit > 0]
    ranges = port_ranges(g.id for g in gws)
    lines = [
        f"table ip {TABLE}", f"delete table ip {TABLE}",
        f"table ip {TABLE} {{",
        f"  set wx_ports {{ typeof iifname;{_elements(ports)} }}",
        "  map wx_zone { typeof iifname : ct original zone;"
        + _elements(f'"{g.port}" : {g.zone}' for g in gws) + " }",
        "  map wx_mark { typeof iifname : meta mark;"
        + _elements(f'"{g.port}" : {g.mark:#010x}' for g in gws) + " }",
        "  set wx_owner { typeof iifname . ct mark;"
        + _elements(f'"{g.port}" . {g.mark:#010x}' for g in gws) + " }",
        *(f"  map {name} {{ {kind};{_elements(pub[name])} }}" for name, kind in _MAPS.items()),
        "  set conns { typeof meta mark; size 65535; flags dynamic; }",
        # original direction from a tenant: its own zone; a wx port not (or no longer)
        # listed has no zone and no mark, so nothing of it passes
        "  chain zones {",
        "    type filter hook prerouting priority raw; policy accept;",
        f'    iifname "{PORT_PREFIX}*" iifname != @wx_ports drop',
        f'    iifname "{PORT_PREFIX}*" ct original zone set iifname map @wx_zone',
        "  }",
        # the connection remembers the tenant that opened it (or the published port's);
        # a reply may come in only from that tenant's port (directional zones let any
        # tenant's packet match a zone-0 reply tuple: this is what keeps them apart)
        "  chain marks {",
        "    type filter hook prerouting priority mangle; policy accept;",
        f'    iifname "{PORT_PREFIX}*" ct direction reply iifname . ct mark != @wx_owner drop',
        f'    iifname "{PORT_PREFIX}*" ct direction original meta mark set iifname map @wx_mark'
        " ct mark set meta mark",
        f"    ct mark & {MARK_MASK:#010x} == {MARK_BASE:#010x} meta mark set ct mark",
        "  }",
        # the host's own connections to a published port: after the first packet (marked
        # by publish_local) the rest follow the ct mark too (a route chain reroutes)
        "  chain marks_local {",
        "    type route hook output priority mangle; policy accept;",
        f"    ct mark & {MARK_MASK:#010x} == {MARK_BASE:#010x} meta mark set ct mark",
        "  }",
        # published ports: DNAT to the container, the tenant's mark routes to wx-<id>
        # (nat chains see only a connection's first packet: the ct mark carries the rest)
        "  chain publish {",
        "    type nat hook prerouting priority dstnat - 10; policy accept;",
        f'    iifname "{PORT_PREFIX}*" return',
        *_publish_rules(),
        "  }",
        "  chain publish_local {",
        "    type nat hook output priority -110; policy accept;",    # dstnat - 10
        *_publish_rules(),
        "  }",
        # per-tenant bound on the connections the host stack tracks for it; a published
        # connection goes to a wx port and nowhere else (its gateway may not be here yet)
        "  chain bound {",
        "    type filter hook forward priority filter - 5; policy accept;",
        f'    iifname "{PORT_PREFIX}*" oifname "{PORT_PREFIX}*" drop',
        f'    ct direction original ct status dnat meta mark & {MARK_MASK:#010x} == '
        f'{MARK_BASE:#010x} oifname != "{PORT_PREFIX}*" drop',
        *(f"    ct state new meta mark {g.mark:#010x} add @conns {{ meta mark ct count over "
          f"{g.conntrack_limit} }} drop" for g in limits),
        "  }",
        # TCP/UDP: each tenant into its own port range (port_ranges: no clash between
        # tenants' first packets), random in it (none between a tenant's own); the rest
        # (ICMP) as it comes
        "  chain masq {",
        "    type nat hook postrouting priority srcnat - 10; policy accept;",
        *(f'    iifname "{g.port}" oifname != "{PORT_PREFIX}*" meta l4proto {{ tcp, udp }} '
          f"masquerade to :{ranges[g.id][0]}-{ranges[g.id][1]} fully-random" for g in gws),
        f'    iifname "{PORT_PREFIX}*" oifname != "{PORT_PREFIX}*" masquerade',
        "  }",
        "}", ""]
    return "\n".join(lines)


def _publish_rules() -> list[str]:
    mark_it = "ct mark set meta mark"
    return [
        f"    meta mark set {_IP_KEY} map @published_ip_mark {mark_it}",
        f"    dnat ip to {_IP_KEY} map @published_ip",
        f"    fib daddr type local meta mark set {_ANY_KEY} map @published_mark {mark_it}",
        f"    fib daddr type local dnat ip to {_ANY_KEY} map @published",
    ]


def publish_script(records: Iterable[Published], add: bool) -> str:
    """An nft script adding (``add``) or deleting these records' map elements now,
    without waiting for the agent's next pass.  Idempotent both ways: adding what is
    there, or deleting what is not, succeeds (a delete first adds, in the same
    transaction).  Declares the table and maps if the agent has not made them yet."""
    elements = _published_elements(records)
    lines = [f"table ip {TABLE} {{",
             *(f"  map {name} {{ {kind}; }}" for name, kind in _MAPS.items()), "}"]
    for name, items in elements.items():
        if items:
            lines.append(f"add element ip {TABLE} {name} {{ {', '.join(items)} }}")
    if not add:
        for name, items in elements.items():
            if items:
                lines.append(f"delete element ip {TABLE} {name} {{ {', '.join(items)} }}")
    return "\n".join(lines) + "\n"
