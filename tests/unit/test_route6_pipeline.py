"""IPv6 through the distributed gateway in the pure core (issue 25 item 2).

The cluster of ``test_route_pipeline`` made dual-stack: red (fd00:1::/64) and red-db
(fd00:2::/64) of tenant red, blue with red's subnets.  Through ``tests.fakeoftable``: an
NS for a network's IPv6 gateway is answered on the sender's own host with an NA (router,
solicited, override; the gateway MAC as target link-layer address) and never reaches a
tunnel; ping6 to the tenant's gateways is answered; IPv6 is routed between the tenant's
networks across hosts with hop limit - 1 and rewritten MACs, never into blue, never out
(no IPv6 egress); nobody claims a gateway by NA; the new flows survive the wire.  Then
hypothesis over ``routing_labs(v6=True)``: no IPv6 frame crosses tenants, and a routed
IPv6 packet reaches exactly its destination once with hop limit - 1.
"""
from __future__ import annotations

import ipaddress
from dataclasses import replace

from hypothesis import given, settings

from controller.flows import feature_of
from controller.model import GATEWAY6_AUTO, AclRule, Binding, Topology, gateway_mac
from controller.ofmsg import flow_from_stats
from tests.fakeoftable import FakeCluster
from tests.unit.test_ofmsg import stats_echo
from tests.unit.test_route_pipeline import (
    BINDINGS, BLUE, GREEN, GW_BLUE, GW_DB, GW_RED, MAC, PORTS, RED, RED_DB, TUNNELS,
    state,
)
from tests.unit.test_routing_isolation import domain_ports, gateways, senders
from tests.unit.topologies import Lab, routing_labs

IP6 = {"a": "fd00:1::5", "b": "fd00:2::5", "c": "fd00:1::5", "d": "fd00:1::6",
       "e": "fd00:2::6"}
AUTO6 = GATEWAY6_AUTO       # replace() passes every field: gateway6 re-derived from subnet6
RED6 = replace(RED, subnet6="fd00:1::/64", gateway6=AUTO6)
RED_DB6 = replace(RED_DB, subnet6="fd00:2::/64", gateway6=AUTO6)
BLUE6 = replace(BLUE, subnet6="fd00:1::/64", gateway6=AUTO6)
TOPO6 = Topology((RED6, RED_DB6, BLUE6, GREEN),
                 tuple(replace(b, ips=(*b.ips, IP6[b.port])) if b.port in IP6 else b
                       for b in BINDINGS), ("h1", "h2"))
GW6 = {"red": "fd00:1::1", "red-db": "fd00:2::1"}
OUTSIDE6 = "2001:db8::5"


def cluster(topo: Topology = TOPO6) -> FakeCluster:
    return FakeCluster.from_topology(topo, PORTS, TUNNELS)


def ip6(src_mac: str, dst_mac: str, src: str, dst: str, hlim: int = 64,
        proto: int = 6) -> dict:
    pkt = {"eth_src": src_mac, "eth_dst": dst_mac, "eth_type": 0x86DD, "ipv6_src": src,
           "ipv6_dst": dst, "ip_proto": proto, "ip_ttl": hlim}
    if proto == 58:
        return {**pkt, "icmpv6_type": 128, "icmpv6_code": 0}
    return {**pkt, "tcp_src": 40000, "tcp_dst": 80}


def ns(src_mac: str, src: str, target: str) -> dict:
    """A neighbour solicitation, multicast to the target's solicited-node address."""
    low = int(ipaddress.IPv6Address(target)) & 0xFFFFFF
    return {"eth_src": src_mac, "eth_dst": f"33:33:ff:{low >> 16:02x}:{low >> 8 & 0xff:02x}:"
            f"{low & 0xff:02x}", "eth_type": 0x86DD, "ipv6_src": src,
            "ipv6_dst": str(ipaddress.IPv6Address("ff02::1:ff00:0") + low), "ip_proto": 58,
            "icmpv6_type": 135, "icmpv6_code": 0, "ipv6_nd_target": target,
            "ipv6_nd_sll": src_mac, "ip_ttl": 255}


def na(src_mac: str, src: str, target: str) -> dict:
    return {"eth_src": src_mac, "eth_dst": "33:33:00:00:00:01", "eth_type": 0x86DD,
            "ipv6_src": src, "ipv6_dst": "ff02::1", "ip_proto": 58, "icmpv6_type": 136,
            "icmpv6_code": 0, "ipv6_nd_target": target, "ipv6_nd_tll": src_mac,
            "ip_ttl": 255}


def where(c: FakeCluster, host: str, port: str, pkt: dict, vlan: int | None = None) -> list:
    return [(h, p) for h, p, _ in c.trace(host, port, pkt, vlan)[0]]


def test_ipv6_gateway_is_the_subnets_first_address_with_a_gateway_only():
    assert (RED6.gateway6, RED_DB6.gateway6) == (GW6["red"], GW6["red-db"])
    assert replace(RED6, gateway=None, egress=False, gateway6=AUTO6).gateway6 is None
    assert RED.gateway6 is None                                  # IPv4 only


def test_ns_for_the_ipv6_gateway_is_answered_in_place_with_an_na():
    c = cluster()
    got = c.trace("h1", "a", ns(MAC["a"], IP6["a"], GW6["red"]))[0]
    assert [(h, p) for h, p, _ in got] == [("h1", "a")]           # never flooded, no tunnel
    reply = got[0][2]
    assert {k: reply.get(k) for k in ("eth_src", "eth_dst", "ipv6_src", "ipv6_dst",
                                      "icmpv6_type", "ipv6_nd_target", "ipv6_nd_tll",
                                      "ipv6_nd_sll", "nd_reserved", "ip_ttl")} == {
        "eth_src": GW_RED, "eth_dst": MAC["a"], "ipv6_src": GW6["red"],
        "ipv6_dst": IP6["a"], "icmpv6_type": 136, "ipv6_nd_target": GW6["red"],
        "ipv6_nd_tll": GW_RED, "ipv6_nd_sll": None, "nd_reserved": 0xE0000000,
        "ip_ttl": 255}
    # a unicast NS (neighbour unreachability detection) to the gateway MAC: answered too
    assert where(c, "h1", "a", {**ns(MAC["a"], IP6["a"], GW6["red"]), "eth_dst": GW_RED,
                                "ipv6_dst": GW6["red"]}) == [("h1", "a")]
    # from the host on the other side of the tunnel: its own switch answers
    assert where(c, "h2", "b", ns(MAC["b"], IP6["b"], GW6["red-db"])) == [("h2", "b")]
    # from a trunk carrying red-db tagged: answered tagged, out the trunk
    got = c.trace("h1", "trk", ns("02:00:00:00:77:01", "fd00:2::77", GW6["red-db"]), 20)[0]
    assert [(h, p, f["vlan_vid"], f["ipv6_nd_tll"]) for h, p, f in got] == [
        ("h1", "trk", 20, GW_DB)]
    # an NS for red-db's gateway from red: not red's gateway, an ordinary NS in red
    assert ("h1", "a") not in where(c, "h1", "a", ns(MAC["a"], IP6["a"], GW6["red-db"]))


def test_ping6_to_the_tenants_gateways_is_answered():
    c = cluster()
    for gw in GW6.values():
        got = c.trace("h1", "a", ip6(MAC["a"], GW_RED, IP6["a"], gw, proto=58))[0]
        assert [(h, p) for h, p, _ in got] == [("h1", "a")]
        reply = got[0][2]
        assert (reply["icmpv6_type"], reply["ipv6_src"], reply["ipv6_dst"],
                reply["eth_src"]) == (129, gw, IP6["a"], GW_RED)
    # anything else to a gateway address: nothing (never the host)
    assert where(c, "h1", "a", ip6(MAC["a"], GW_RED, IP6["a"], GW6["red-db"])) == []


def test_ipv6_is_routed_between_the_tenants_networks_across_hosts():
    c = cluster()
    got = c.trace("h1", "a", ip6(MAC["a"], GW_RED, IP6["a"], IP6["b"]))[0]
    assert [(h, p) for h, p, _ in got] == [("h2", "b")]
    frame = got[0][2]
    assert (frame["eth_src"], frame["eth_dst"], frame["ip_ttl"], frame["ipv6_src"]) == (
        GW_DB, MAC["b"], 63, IP6["a"])
    back = c.trace("h2", "b", ip6(MAC["b"], GW_DB, IP6["b"], IP6["a"]))[0]
    assert [(h, p, f["ip_ttl"], f["eth_src"]) for h, p, f in back] == [("h1", "a", 63, GW_RED)]
    assert where(c, "h1", "a", ip6(MAC["a"], GW_RED, IP6["a"], IP6["e"])) == [("h1", "e")]
    assert where(c, "h1", "a", ip6(MAC["a"], GW_RED, IP6["a"], IP6["b"], hlim=1)) == []


def test_ipv6_never_reaches_another_tenant_nor_the_outside():
    c = cluster()
    for dst in (IP6["d"], OUTSIDE6, "fd00:3::5", "fe80::1", "ff02::1"):
        assert where(c, "h1", "a", ip6(MAC["a"], GW_RED, IP6["a"], dst)) == [], dst
    # blue routes its own: c (blue, h1) pings d's network gateway address and is answered
    assert where(c, "h1", "c", ip6(MAC["c"], GW_BLUE, IP6["c"], "fd00:1::1", proto=58)) \
        == [("h1", "c")]
    # to red's gateway MAC from blue: floods in blue only, never routed
    assert set(where(c, "h1", "c", ip6(MAC["c"], GW_RED, IP6["c"], IP6["b"]))) <= {("h2", "d")}


def test_nobody_claims_the_ipv6_gateway():
    """An NA for the gateway address from a trunk carrying red-db (no port security
    there) goes nowhere; from a secured port port security drops it first."""
    c = cluster()
    assert where(c, "h1", "trk", na("02:00:00:00:77:01", "fd00:2::77", GW6["red-db"]),
                 vlan=20) == []
    assert where(c, "h1", "a", na(MAC["a"], IP6["a"], GW6["red"])) == []


def test_a_binding_on_the_ipv6_gateway_is_refused():
    bad = Binding("h1", "z", "red", mac="02:00:00:00:00:99", ips=("10.10.1.99", GW6["red"]))
    try:
        Topology((RED6, RED_DB6), (bad,), ("h1",))
    except ValueError as exc:
        assert "gateway" in str(exc)
    else:
        raise AssertionError("a port on the IPv6 gateway's address was accepted")


def test_ipv6_acl_decides_routed_traffic():
    allow = AclRule(1, "red", 10, "allow", "ingress", ip_proto="tcp", local=IP6["b"], port=80)
    topo = replace(TOPO6, acls=(allow,), acl_deny=frozenset({"red"}))
    c = cluster(topo)
    assert where(c, "h1", "a", ns(MAC["a"], IP6["a"], GW6["red"])) == [("h1", "a")]
    assert where(c, "h1", "a", ip6(MAC["a"], GW_RED, IP6["a"], IP6["b"])) == [("h2", "b")]
    reply = {**ip6(MAC["b"], GW_DB, IP6["b"], IP6["a"]), "tcp_src": 80, "tcp_dst": 40000}
    assert where(c, "h2", "b", reply) == [("h1", "a")]                   # by conntrack
    assert where(c, "h1", "a", {**ip6(MAC["a"], GW_RED, IP6["a"], IP6["b"]),
                                "tcp_dst": 22}) == []


def test_ipv6_gateway_and_route_flows_read_back_equal():
    flows = [f for h in ("h1", "h2") for f in state(h, TOPO6).flows
             if feature_of(f.cookie) in ("gateway", "route")]
    assert any(a == ("set_field", "nd_reserved", 0xE0000000) for f in flows
               for i in f.instructions if i[0] == "apply" for a in i[1])
    for f in flows:
        assert flow_from_stats(stats_echo(f)) == f, f


# --- hypothesis ---------------------------------------------------------------------------
def _v6(b: Binding) -> str | None:
    return next((a for a in b.ips if ":" in a), None)


@settings(max_examples=60, deadline=None)
@given(routing_labs(v6=True))
def test_no_ipv6_frame_crosses_tenants(lab: Lab):
    """From every port: IPv6 to every gateway MAC (and all-nodes) for every bound IPv6
    address, gateway and the outside, NS for and NA claiming every IPv6 gateway: nothing
    reaches a port of the other tenant; a network without a gateway stays in itself."""
    c = lab.cluster()
    macs = [gateway_mac(n.vni) for n in gateways(lab)] + ["33:33:00:00:00:01"]
    gws = sorted({n.gateway6 for n in gateways(lab) if n.gateway6})
    dsts = sorted({a for b in lab.topo.bindings for a in b.ips if ":" in a} | set(gws)
                  | {OUTSIDE6} | {f"{r.prefix.split('::')[0]}::5" for r in lab.topo.routes
                                  if r.v6})
    for host, port, vlan, network in senders(lab):
        net = None if network is None else lab.topo.tenant(network)
        allowed = set() if net is None else domain_ports(lab, net.tenant) if net.gateway \
            else lab.carriers(net.name) - {(host, port, vlan)}
        src = lab.src(host, port)
        b = next((b for b in lab.topo.bindings_on(host) if b.port == port), None)
        src_ip = (_v6(b) if b is not None else None) or "fd00:9::9"
        frames = [ip6(src, mac, src_ip, dst, proto=proto)
                  for mac in macs for dst in dsts for proto in (6, 58)]
        frames += [ns(src, src_ip, g) for g in gws] + [na(src, g, g) for g in gws]
        for frame in frames:
            got = c.frames(host, port, frame, vlan=vlan)
            assert set(got) <= allowed, (host, port, vlan, network, frame, got)
            if frame.get("icmpv6_type") == 136 and net is not None \
                    and frame["ipv6_nd_target"] == net.gateway6:
                assert got == [], (host, port, frame, got)    # nobody claims its gateway


@settings(max_examples=60, deadline=None)
@given(routing_labs(v6=True))
def test_routed_ipv6_reaches_exactly_its_destination_once_with_hop_limit_minus_one(lab: Lab):
    c = lab.cluster()
    topo = lab.topo
    routable = [b for b in topo.bindings if _v6(b) and b.mac and b.port in lab.ports[b.host]
                and topo.tenant(b.tenant).gateway6]
    for s in routable:
        net = topo.tenant(s.tenant)
        gw, src_ip = gateway_mac(net.vni), _v6(s)
        assert s.mac is not None and src_ip is not None
        for d in routable:
            dnet = topo.tenant(d.tenant)
            dst = _v6(d)
            if dnet.tenant != net.tenant or d is s or dst is None:
                continue
            sent = c.trace(s.host, s.port, ip6(s.mac, gw, src_ip, dst))[0]
            assert [(h, p) for h, p, _ in sent] == [(d.host, d.port)], (s, d, sent)
            frame = sent[0][2]
            assert (frame["eth_src"], frame["eth_dst"], frame["ip_ttl"]) == (
                gateway_mac(dnet.vni), d.mac, 63)
            assert c.frames(s.host, s.port, ip6(s.mac, gw, src_ip, dst, hlim=1)) == []
        assert c.trace(s.host, s.port, ip6(s.mac, gw, src_ip, OUTSIDE6))[0] == []
