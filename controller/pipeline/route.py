"""Routing inside a tenant: FIB (routing domain + IPv4 destination -> next hop) and ROUTED.

A tenant (``controller.model.Tenant`` row without ``domain``) is a routing domain, like
a VRF: it routes between its networks that have a gateway, never into another
tenant's.  Routing happens at the source host only; the receiver sees a plain L2
frame of the destination network (``controller.pipeline.gateway`` admits it from the
tunnel).  Proactive: the next hops are the bindings the controller knows (MAC +
``ips``) and the static routes (``Topology.routes``); no packet-in.

FIB, cookie COOKIE_ROUTE | tenant id, priority ``fib_priority(prefix length, kind)``;
every row matches ``domain=T, ip`` (the tenant id in metadata bits 40-63), or
``domain=T, ipv6`` for the IPv6 rows at the end::

    /32, connected  ipv4_dst=A, for each IPv4 /32 in ``ips`` (and /32 allowed address
                    pairs) of a binding in a gateway network N of T, A in N's subnet
                    -> dec_ttl, eth_src=GWMAC(N), eth_dst=<the binding's or pair's MAC>,
                       metadata network := VNI(N), goto ROUTED
    /len, connected ipv4_dst=subnet, each IPv4 subnet of T's networks  -> drop
                    (an unbound address is not routed, and never leaks to egress)
    /len, static    ipv4_dst=prefix, each static route of T -> as a host route towards
                    ``via``: its network, and the MAC of the binding holding ``via``
                    (else the route's ``mac``; neither: no row); ``via`` itself gets a
                    /32 host route too when no binding gives it one
    /0, egress      (``controller.pipeline.egress``)
    IPv6 (``ipv6_dst``), the same on IPv6 subnets: /128 host routes for the single IPv6
                    addresses of bindings in a network with ``gateway6``, each IPv6 subnet of
                    T's networks drops, static IPv6 routes (``via`` in a network with
                    ``gateway6``) as the IPv4 ones; no egress (misses drop)

The rows are the same on every host (no port numbers), so they are built once per
model and shared by every switch.  Once per routing host, cookie COOKIE_ROUTE, any
domain: ``UNROUTABLE`` destinations (loopback, link-local, multicast, ...) drop, at the
priority of connected routes of their length.  ROUTED, cookie COOKIE_ROUTE::

    100  metadata & FROM_GATEWAY   -> resubmit(,POLICY)  (from the host stack: the
                                                          tenant's ACLs and QoS)
     10  any                       -> resubmit(,L2)      (the destination's static flow:
                                      a local port, or the tunnel with its network's VNI)

TTL: ``dec_ttl`` (sent with an empty controller list, ``controller.ofmsg``) drops a
frame arriving with TTL 0 or 1 in the datapath: no packet-in, no slow path, no ICMP
time exceeded (traceroute shows ``*`` for the gateway hop).
"""
from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable
from typing import Any

from controller.flows import COOKIE_ROUTE, Flow, flow
from controller.model import ACCESS, Binding, Tenant, Topology, gateway_mac, is_ipv6
from controller.pipeline.base import ETH_TYPE_IPV4, ETH_TYPE_IPV6, Feature, Part, SwitchContext
from controller.pipeline.tables import (
    FIB, FIB_CONNECTED, FIB_STATIC, FROM_GATEWAY, L2, POLICY, PRIO_ROUTED,
    PRIO_ROUTED_FROM_GATEWAY, ROUTED, VNI_MASK, domain_match, fib_priority,
)

__all__ = ["FEATURE", "UNROUTABLE", "fib_rows", "prefix_match", "route_to",
           "routing_domains_here"]


def prefix_match(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> dict[str, Any]:
    """``ipv4_dst`` (``ipv6_dst``) in ``net`` in the form the switch echoes (/0: no field
    at all)."""
    field = "ipv6_dst" if net.version == 6 else "ipv4_dst"
    if net.prefixlen == 0:
        return {}
    if net.prefixlen == net.max_prefixlen:
        return {field: str(net.network_address)}
    return {field: (str(net.network_address), str(net.netmask))}


def route_to(n: Tenant, mac: str) -> list[tuple]:
    """FIB's instructions routing a frame to ``mac`` in network ``n``."""
    return [("apply", (("dec_ttl",), ("set_field", "eth_src", gateway_mac(n.vni)),
                       ("set_field", "eth_dst", mac))),
            ("write_metadata", n.vni, VNI_MASK), ("goto", ROUTED)]


def _host_addresses(b: Binding) -> list[tuple[str, str]]:
    """(IPv4 /32 address, MAC) a binding answers to: its ``ips`` and address pairs."""
    own = b.mac
    assert own is not None
    out = [(ip, own) for ip in b.ips if "/" not in ip and not is_ipv6(ip)]
    out += [(ip, mac or own) for ip, mac in b.allowed_address_pairs
            if "/" not in ip and not is_ipv6(ip)]
    return out


class _Domain:
    """One tenant's gateway networks, parsed once, for address lookups."""

    def __init__(self, topo: Topology, tenant: str) -> None:
        self.networks = [(ipaddress.IPv4Network(n.subnet), n) for n in topo.networks_of(tenant)
                         if n.gateway is not None and n.subnet is not None]

    def network_of(self, address: str) -> Tenant | None:
        """``Topology.network_of_address``, on the parsed subnets."""
        addr = ipaddress.IPv4Address(address)
        for net, n in self.networks:
            if addr in net and address != n.gateway:
                return n
        return None


def _bindings_by_network(topo: Topology) -> dict[str, list[Binding]]:
    out: dict[str, list[Binding]] = {}
    for b in sorted(topo.bindings, key=lambda b: (b.host, b.port)):
        if b.mode == ACCESS and b.mac and b.tenant is not None and not b.uplink:
            out.setdefault(b.tenant, []).append(b)
    return out


def _build_fib(topo: Topology, tenant: str,
               by_network: dict[str, list[Binding]]) -> tuple[Flow, ...]:
    tid = topo.tenant(tenant).vni
    cookie = COOKIE_ROUTE | tid
    ip = {**domain_match(tid), "eth_type": ETH_TYPE_IPV4}
    rows: list[Flow] = []
    for n in topo.networks_of(tenant):
        if n.subnet is not None and ":" not in n.subnet:
            net = ipaddress.IPv4Network(n.subnet)
            rows.append(flow(FIB, fib_priority(net.prefixlen, FIB_CONNECTED),
                             {**ip, **prefix_match(net)}, (), cookie))
    domain = _Domain(topo, tenant)
    hosts: dict[str, tuple[Tenant, str]] = {}       # address -> (network, MAC): first wins
    for _, n in domain.networks:
        for b in by_network.get(n.name, ()):
            for addr, mac in _host_addresses(b):
                if domain.network_of(addr) is n:
                    hosts.setdefault(addr, (n, mac))
    rows += _static_routes(topo, tenant, False, domain.network_of, by_network, ip, cookie,
                           hosts)
    rows += [flow(FIB, fib_priority(32, FIB_CONNECTED), {**ip, "ipv4_dst": addr},
                  route_to(n, mac), cookie) for addr, (n, mac) in sorted(hosts.items())]
    return tuple(rows) + _build_fib6(topo, tenant, by_network)


def _build_fib6(topo: Topology, tenant: str,
                by_network: dict[str, list[Binding]]) -> tuple[Flow, ...]:
    """IPv6 rows of ``tenant``: per network with an IPv6 subnet, that subnet drops
    (connected); per gateway network N with ``gateway6``, a /128 host route for each
    single IPv6 address in its bindings' ``ips`` (and address pairs) inside N's IPv6
    subnet, the gateway excepted (first binding by host/port wins); each static IPv6
    route as an IPv4 one (its next hop gets a /128 when no binding gives it one).  No
    egress: IPv6 leaves the tenant's networks only towards a static route's next hop."""
    tid = topo.tenant(tenant).vni
    cookie = COOKIE_ROUTE | tid
    ip6 = {**domain_match(tid), "eth_type": ETH_TYPE_IPV6}
    rows: list[Flow] = []
    hosts: dict[str, tuple[Tenant, str]] = {}
    for n in topo.networks_of(tenant):
        if n.ipv6_subnet is None:
            continue
        net = ipaddress.IPv6Network(n.ipv6_subnet)
        rows.append(flow(FIB, fib_priority(net.prefixlen, FIB_CONNECTED),
                         {**ip6, **prefix_match(net)}, (), cookie))
        if n.gateway6 is None:
            continue
        for b in by_network.get(n.name, ()):
            assert b.mac is not None
            pairs = [(ip, mac or b.mac) for ip, mac in b.allowed_address_pairs]
            for addr, mac in [*((ip, b.mac) for ip in b.ips), *pairs]:
                if is_ipv6(addr) and "/" not in addr and addr != n.gateway6 \
                        and ipaddress.IPv6Address(addr) in net:
                    hosts.setdefault(addr, (n, mac))
    rows += _static_routes(topo, tenant, True, lambda a: topo.network_of_address(tenant, a),
                           by_network, ip6, cookie, hosts)
    rows += [flow(FIB, fib_priority(128, FIB_CONNECTED), {**ip6, "ipv6_dst": addr},
                  route_to(n, mac), cookie) for addr, (n, mac) in sorted(hosts.items())]
    return tuple(rows)


def _static_routes(topo: Topology, tenant: str, v6: bool,
                   network_of: Callable[[str], Tenant | None],
                   by_network: dict[str, list[Binding]], match: dict[str, Any], cookie: int,
                   hosts: dict[str, tuple[Tenant, str]]) -> list[Flow]:
    """The tenant's static routes of one family, each to its next hop's network and MAC;
    each next hop is added to `hosts` (it gets a host route when no binding gives one)."""
    rows: list[Flow] = []
    for r in sorted((r for r in topo.routes if r.tenant == tenant and r.v6 == v6),
                    key=lambda r: r.prefix):
        via = network_of(r.via)
        hop = (_holder_mac(by_network.get(via.name, ()), r.via) if via else None) or r.mac
        if via is None or hop is None:
            continue            # the store refuses these; a stale model routes nothing
        rows.append(flow(FIB, fib_priority(r.network.prefixlen, FIB_STATIC),
                         {**match, **prefix_match(r.network)}, route_to(via, hop), cookie))
        hosts.setdefault(r.via, (via, hop))
    return rows


def _holder_mac(bindings: Any, address: str) -> str | None:
    """The MAC of the first binding whose ``ips`` (or address pairs) hold ``address``
    (of either family)."""
    addr = ipaddress.ip_address(address)
    v6 = addr.version == 6
    for b in bindings:
        for ip in b.ips:
            if is_ipv6(ip) == v6 and addr in ipaddress.ip_network(ip, strict=False):
                return b.mac
        for ip, mac in b.allowed_address_pairs:
            if is_ipv6(ip) == v6 and addr in ipaddress.ip_network(ip, strict=False):
                return mac or b.mac
    return None


# The FIB of a model, built once and shared by every switch: desired_state runs for each
# switch with the same Topology object, so a one-entry cache by identity serves them all.
_cache_lock = threading.Lock()
_cache: tuple[Topology | None, dict[str, list[Binding]], dict[str, tuple[Flow, ...]]] = \
    (None, {}, {})


def fib_rows(topo: Topology, tenant: str) -> tuple[Flow, ...]:
    """The FIB rows of ``tenant`` (connected, host and static routes), the same on every host."""
    with _cache_lock:
        global _cache
        if _cache[0] is not topo:
            _cache = (topo, _bindings_by_network(topo), {})
        _, by_network, rows = _cache
        got = rows.get(tenant)
        if got is None:
            got = rows[tenant] = _build_fib(topo, tenant, by_network)
        return got


# Never routed, in any tenant (RFC 1122 / 3927 / 5771): "this network", loopback, link-local
# (the kernel's next hop on wx-<id> lives there; cloud metadata services too), multicast,
# the limited broadcast.  Priority as connected routes of their length: a tenant's longer
# static route still wins, the egress default never sees them.
UNROUTABLE = ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4",
              "255.255.255.255/32")


def _unroutable() -> list[Flow]:
    return [flow(FIB, fib_priority(net.prefixlen, FIB_CONNECTED),
                 {"eth_type": ETH_TYPE_IPV4, **prefix_match(net)}, (), COOKIE_ROUTE)
            for net in map(ipaddress.IPv4Network, UNROUTABLE)]


def routing_domains_here(sw: SwitchContext) -> list[str]:
    """Tenants with a gateway network present on this host: they route here."""
    return sorted({sw.topo.tenant(name).tenant for name in sw.here
                   if sw.topo.tenant(name).gateway})


def _contribute(sw: SwitchContext) -> Part:
    domains = routing_domains_here(sw)
    if not domains:
        return Part()
    flows = [flow(ROUTED, PRIO_ROUTED_FROM_GATEWAY, {"metadata": (FROM_GATEWAY, FROM_GATEWAY)},
                  [("apply", (("resubmit", POLICY),))], COOKIE_ROUTE),
             flow(ROUTED, PRIO_ROUTED, {}, [("apply", (("resubmit", L2),))], COOKIE_ROUTE),
             *_unroutable()]
    for t in domains:
        flows.extend(fib_rows(sw.topo, t))
    return Part(flows=flows)


FEATURE = Feature("route", _contribute)
