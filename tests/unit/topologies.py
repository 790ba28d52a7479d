"""The one topology helper of the unit tests: a cluster as the pipeline sees it.

A `Lab` is a model (`controller.model.Topology`) plus each host's live ports and its
tunnels to the others; it gives a host's desired state and the fake switches of the
whole cluster (`tests.fakeoftable`).  The fixed samples of the pipeline tests and the
hypothesis strategy `labs` (random clusters) both build one, so there is one way to
wire a fake cluster.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from hypothesis import strategies as st

from controller.flows import SwitchState
from controller.model import (
    GATEWAY6_AUTO, MAX_VNI, TRUNK, Binding, QosRule, RateLimit, Route, Tenant, Topology,
)
from controller.pipeline import desired_state
from tests.fakeoftable import FakeCluster

UNKNOWN = "06:00:00:00:99:99"
MAC_POOL = [f"02:00:00:00:00:{i:02x}" for i in range(1, 6)]   # small: MACs overlap across tenants


def mesh_tunnels(hosts: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Every host's tunnel port to every other host, named ``tun-PEER``."""
    return {host: {peer: f"tun-{peer}" for peer in hosts if peer != host} for host in hosts}


Delivery = tuple[str, str, "int | None"]       # (host, port, outer VLAN id or None)


@dataclass(frozen=True)
class Lab:
    """A cluster: its model plus each host's live ports and tunnels to the others."""

    topo: Topology
    ports: dict[str, dict[str, int]]
    tunnels: dict[str, dict[str, str]]

    def cluster(self, topo: Topology | None = None, learn: bool = False,
                vlan_limit: int = 1) -> FakeCluster:
        """The fake switches of every host running the pipeline; ``topo``: this model
        instead of the lab's own, on the same wiring."""
        return FakeCluster.from_topology(self.topo if topo is None else topo, self.ports,
                                         self.tunnels, learn=learn, vlan_limit=vlan_limit)

    def state(self, host: str, topo: Topology | None = None) -> SwitchState:
        """``host``'s desired state (``topo``: this model instead, on the same wiring)."""
        return desired_state(host, self.topo if topo is None else topo, self.ports[host],
                             self.tunnels[host])

    def carriers(self, tenant: str | None) -> set[Delivery]:
        """Live ports carrying ``tenant`` (docker0 links included), each with the tag
        its frames wear there: None on access ports and for a trunk's native tenant."""
        out = set()
        for h in self.topo.hosts:
            for b in self.topo.bindings_on(h):
                if b.port not in self.ports[h]:
                    continue
                if b.tenant == tenant:
                    out.add((h, b.port, None))
                if tenant in b.trunk:
                    out.add((h, b.port, self.topo.tenant(tenant).vlan))
        return out

    def members(self, tenant: str | None) -> set[tuple[str, str]]:
        return {(h, p) for h, p, _ in self.carriers(tenant)}

    def vlans(self) -> list[int]:
        """Every tenant VLAN of the lab plus one that no tenant has."""
        used = sorted(t.vlan for t in self.topo.all_tenants if t.vlan is not None)
        return [*used, next(v for v in range(4000, 4095) if v not in used)]

    def src(self, host: str, port: str, fallback: str = UNKNOWN) -> str:
        """A source MAC the port may send from: its bound MAC under port security."""
        for b in self.topo.bindings_on(host):
            if b.port == port and b.source_addresses():
                return b.mac or fallback
        return fallback

    def senders(self) -> list[tuple[str, str, int | None, str | None]]:
        """(host, port, VLAN id the frame is sent with or None, tenant it belongs to or
        None) for every live non-tunnel port, untagged and with every VLAN of the lab."""
        binding = {(h, b.port): b for h in self.topo.hosts for b in self.topo.bindings_on(h)}
        out = []
        for h in self.topo.hosts:
            for p in self.ports[h]:
                if p in self.tunnels[h].values():
                    continue
                b = binding.get((h, p))
                for vlan in (None, *self.vlans()):
                    out.append((h, p, vlan, _tenant_for(self.topo, b, vlan)))
        return out


def _tenant_for(topo: Topology, b: Binding | None, vlan: int | None) -> str | None:
    """The tenant a frame sent with ``vlan`` into ``b``'s port belongs to; None: dropped."""
    if b is None:
        return None
    if vlan is None:
        return b.tenant
    return next((t for t in b.trunk if topo.tenant(t).vlan == vlan), None)


# QoS pools: small, so rules overlap each other and the frames of tests.unit.test_qos_pipeline
QOS_NETS = ["10.0.0.1", "10.0.0.2", "10.0.0.0/24", "10.0.0.0/16", "192.168.0.0/24", "0.0.0.0/0"]
QOS_PORTS = [53, 80, 443]
QOS_DSCPS = [0, 10, 46]


@st.composite
def qos_matches(draw) -> dict:
    """A user-level QosRule match drawn from the QoS pools."""
    m: dict = {}
    proto = draw(st.sampled_from([None, "tcp", "udp", "icmp", 6, 47]))
    if proto is not None:
        m["ip_proto"] = proto
    for key in ("src", "dst"):
        if draw(st.booleans()):
            m[key] = draw(st.sampled_from(QOS_NETS))
    if proto in ("tcp", "udp", 6):
        for key in ("src_port", "dst_port"):
            if draw(st.integers(0, 2)) == 0:
                m[key] = draw(st.sampled_from(QOS_PORTS))
    if draw(st.integers(0, 2)) == 0:
        m["dscp"] = draw(st.sampled_from(QOS_DSCPS))
    return m


def _draw_qos(draw, topo: Topology) -> Topology:
    """``topo`` with random rate limits (some naming unbound ports, or tenants absent
    from the host) and rules; meter ids unique, a tenant's rule priorities unique."""
    ids = iter(draw(st.permutations(range(1, 61))))
    names = [t.name for t in topo.all_tenants]
    kbps, burst = st.integers(1, 100_000_000), st.sampled_from([0, 0, 1, 10_000_000])
    limits, rules = [], []
    for host in topo.hosts:
        ports = sorted({b.port for b in topo.bindings_on(host)} | {"nope"})
        for port in draw(st.lists(st.sampled_from(ports), unique=True, max_size=2)):
            limits.append(RateLimit(next(ids), host, draw(kbps), draw(burst), port=port))
        for name in draw(st.lists(st.sampled_from(names), unique=True, max_size=2)):
            limits.append(RateLimit(next(ids), host, draw(kbps), draw(burst), tenant=name))
    for name in names:
        for prio in draw(st.lists(st.integers(1, 1000), unique=True, max_size=3)):
            rate = draw(st.none() | kbps)
            dscp = draw(st.none() | st.sampled_from([8, 46, 63]))
            queue = draw(st.none() | st.integers(0, 7))
            if rate is None and queue is None:
                dscp = 46 if dscp is None else dscp
            rules.append(QosRule(next(ids), name, prio, draw(qos_matches()), rate,
                                 draw(burst) if rate else 0, dscp, queue))
    return replace(topo, limits=tuple(limits), rules=tuple(rules))


@st.composite
def labs(draw, trunks: bool = True, qos: bool = False) -> Lab:
    """A random cluster.  ``qos``: with random rate limits and QoS rules, and some
    trunks marked as the host's uplink (VLAN transport)."""
    hosts = tuple(f"h{i}" for i in range(1, draw(st.integers(1, 4)) + 1))
    vnis = draw(st.lists(st.integers(2, MAX_VNI), min_size=1, max_size=4, unique=True))
    vlans = draw(st.lists(st.none() | st.integers(1, 4094), min_size=len(vnis),
                          max_size=len(vnis), unique_by=lambda v: v if v else object()))
    tenants = tuple(Tenant(f"t{i}", vni, vlan=vlan)
                    for i, (vni, vlan) in enumerate(zip(vnis, vlans)))
    names = ["default", *(t.name for t in tenants)]
    tagged = [t.name for t in tenants if t.vlan is not None]
    bindings, macs = [], set()
    for host in hosts:
        for i in range(draw(st.integers(0, 4))):
            if trunks and tagged and draw(st.integers(0, 2)) == 0:
                native = draw(st.none() | st.sampled_from(names))
                trunk = [t for t in draw(st.lists(st.sampled_from(tagged), unique=True,
                                                  min_size=1)) if t != native]
                if native is not None or trunk:
                    uplink = qos and draw(st.integers(0, 2)) == 0
                    bindings.append(Binding(host, f"p{i}", native, TRUNK, trunk=tuple(trunk),
                                            uplink=uplink))
                    continue
            tenant = draw(st.sampled_from(names))
            mac = draw(st.none() | st.sampled_from(MAC_POOL))
            if (tenant, mac) in macs:
                mac = None
            macs.add((tenant, mac))
            bindings.append(Binding(host, f"p{i}", tenant, mac=mac))
    topo = Topology(tenants, tuple(bindings), hosts)
    if qos:
        topo = _draw_qos(draw, topo)
    ports, tunnels = {}, {}
    for host in hosts:
        tunnels[host] = mesh_tunnels(hosts)[host]
        bound = [b.port for b in topo.bindings_on(host)]
        live = [p for p in bound if draw(st.integers(0, 5)) > 0]       # a few not plugged in yet
        names_ = [*live, "stray", *tunnels[host].values()]
        numbers = draw(st.permutations(range(1, len(names_) + 1)))
        ports[host] = dict(zip(names_, numbers))
    return Lab(topo, ports, tunnels)


# --- routing: tenants with several networks, gateways, overlapping subnets -------------
OUTSIDE = "8.8.8.8"                 # outside every tenant subnet and static route


def network_subnet(j: int) -> str:
    """Network ``j`` of any tenant: the same subnets in every tenant (they overlap)."""
    return f"10.0.{j}.0/24"


@st.composite
def routing_labs(draw, max_hosts: int = 3, v6: bool = False) -> Lab:
    """A random cluster of two tenants (``red`` id 1000, ``blue`` id 2000) with one to
    three networks each (network j: 10.0.j.0/24 in both tenants; some without a gateway,
    some with egress, some with a VLAN), access ports with MACs and addresses (unique per
    network; MACs overlap across networks), a few without ``ips``, a trunk now and then,
    static routes (192.168.j.0/24 via a bound or an unbound address with ``mac``), and
    each tenant's gateway port ``wx-<id>`` on some hosts.  ``v6``: network j is also
    dual-stack (fd00:j::/64, the same in both tenants) and an addressed port also has
    fd00:j::<its IPv4 host part>; a network with a gateway has the IPv6 gateway
    fd00:j::1 (the default), fd00:j::fe, or none; a static IPv6 route fd00:9j::/48 now and
    then, via a bound IPv6 address or fd00:j::99 with ``mac``."""
    hosts = tuple(f"h{i}" for i in range(1, draw(st.integers(1, max_hosts)) + 1))
    networks: list[Tenant] = []
    vlans = iter(range(10, 100))
    for tenant, tid in (("red", 1000), ("blue", 2000)):
        for j in range(draw(st.integers(1, 3))):
            gw = draw(st.sampled_from([f"10.0.{j}.1", f"10.0.{j}.254", None]))
            networks.append(Tenant(
                tenant if j == 0 else f"{tenant}{j}", tid + j, vlan=next(vlans)
                if draw(st.integers(0, 3)) == 0 else None, subnet=network_subnet(j),
                domain=None if j == 0 else tenant, gateway=gw,
                egress=gw is not None and draw(st.booleans()),
                subnet6=f"fd00:{j}::/64" if v6 else None,
                gateway6=draw(st.sampled_from([GATEWAY6_AUTO, f"fd00:{j}::fe", None]))
                if v6 and gw else GATEWAY6_AUTO))
    bindings: list[Binding] = []
    used: set[tuple[str, str]] = set()
    routes: list[Route] = []
    for host in hosts:
        for i in range(draw(st.integers(0, 4))):
            tagged = [n.name for n in networks if n.vlan is not None]
            if tagged and draw(st.integers(0, 4)) == 0:
                bindings.append(Binding(host, f"p{i}", None, TRUNK, trunk=tuple(
                    draw(st.lists(st.sampled_from(tagged), unique=True, min_size=1)))))
                continue
            n = draw(st.sampled_from(networks))
            j = int(n.subnet.split(".")[2])                     # type: ignore[union-attr]
            mac = draw(st.sampled_from(MAC_POOL))
            ip = f"10.0.{j}.{draw(st.integers(10, 14))}"
            if (n.name, mac) in used or (n.name, ip) in used:
                continue
            used |= {(n.name, mac), (n.name, ip)}
            ips = (ip,) if draw(st.integers(0, 4)) else ()
            if v6 and ips:
                ips = (ip, f"fd00:{j}::{ip.rsplit('.', 1)[1]}")
            bindings.append(Binding(host, f"p{i}", n.name, mac=mac, ips=ips))
    for t in ("red", "blue"):
        gws = [n for n in networks if n.tenant == t and n.gateway]
        if gws and draw(st.booleans()):
            n = draw(st.sampled_from(gws))
            j = int(n.subnet.split(".")[2])                     # type: ignore[union-attr]
            bound = [b.ips[0] for b in bindings if b.tenant == n.name and b.ips]
            if bound and draw(st.booleans()):
                routes.append(Route(t, f"192.168.{j}.0/24", draw(st.sampled_from(bound))))
            else:
                routes.append(Route(t, f"192.168.{j}.0/24", f"10.0.{j}.99",
                                    mac="02:00:00:00:99:01"))
        gws6 = [n for n in networks if n.tenant == t and n.gateway6]
        if v6 and gws6 and draw(st.booleans()):             # a static IPv6 route
            n = draw(st.sampled_from(gws6))
            j = int(n.subnet.split(".")[2])                     # type: ignore[union-attr]
            bound = [b.ips[1] for b in bindings if b.tenant == n.name and len(b.ips) > 1]
            if bound and draw(st.booleans()):
                routes.append(Route(t, f"fd00:9{j}::/48", draw(st.sampled_from(bound))))
            else:
                routes.append(Route(t, f"fd00:9{j}::/48", f"fd00:{j}::99",
                                    mac="02:00:00:00:99:01"))
    topo = Topology(tuple(networks), tuple(bindings), hosts, routes=tuple(routes))
    ports, tunnels = {}, {}
    for host in hosts:
        tunnels[host] = mesh_tunnels(hosts)[host]
        bound = [b.port for b in topo.bindings_on(host)]
        live = [p for p in bound if draw(st.integers(0, 5)) > 0]
        wx = [p for p in ("wx-1000", "wx-2000") if draw(st.booleans())]
        names_ = [*live, *wx, "stray", *tunnels[host].values()]
        numbers = draw(st.permutations(range(1, len(names_) + 1)))
        ports[host] = dict(zip(names_, numbers))
    return Lab(topo, ports, tunnels)
