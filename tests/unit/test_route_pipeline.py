"""The distributed gateway, the FIB and egress in the pure core: rows, behaviour, deltas.

A fixed two-host cluster: tenant ``red`` (id 1000) with networks ``red`` (10.10.1.0/24,
egress on) and ``red-db`` (10.10.2.0/24, egress off, also tagged on a trunk), tenant
``blue`` (id 2000) with the same addresses as ``red``'s web network, and ``green`` with
no gateway (its flows are what they were before routing).  Asserted through
``tests.fakeoftable``: ARP and ping answers, the gateway's ARP never reaching a tunnel,
routed packets across hosts (TTL - 1, MACs), egress out of the tenant's own gateway port
with ACLs deciding (default-deny reaches out only where a rule allows), static routes
beating egress, the spoofing attacks; then the rows and priorities, per-change deltas
(a network, a route, a gateway port send only their own flows), every flow surviving
the wire, and a controller restart sending 0 flow-mods.
"""
from __future__ import annotations

import struct
from dataclasses import replace

import pytest
from os_ken.ofproto import ofproto_parser

from controller import ofmsg
from controller.flows import (
    COOKIE_EGRESS, COOKIE_GATEWAY, COOKIE_ROUTE, Flow, diff, feature_of,
)
from controller.model import (
    TRUNK, AclRule, Binding, QosRule, RateLimit, Route, Tenant, Topology, gateway_mac,
    gateway_port_mac, next_hop_mac,
)
from controller.pipeline import (
    CLASSIFY, FIB, GATEWAY, L2, POLICY, QOS, ROUTED, desired_state,
)
from controller.pipeline.acl import acl_flows
from controller.pipeline.tables import (
    DOMAIN_MASK, FROM_GATEWAY, NETWORK_MASK, PRIO_DROP_GATEWAY_SRC, PRIO_GATEWAY_ARP,
    PRIO_GATEWAY_ARP_REMOTE, PRIO_GATEWAY_GUARD, PRIO_GATEWAY_PORT, PRIO_GW_ANSWER,
    PRIO_GW_FORWARD, PRIO_GW_IP_DROP, PRIO_GW_TRUNK, PRIO_ROUTED, PRIO_ROUTED_FROM_GATEWAY,
    PRIO_ROUTED_FROM_TUNNEL, PRIO_TO_GATEWAY, PRIO_TO_GATEWAY_REMOTE, SENDER_MASK,
    domain_bits,
)
from tests.fakeoftable import FakeCluster, FakeOFTable
from tests.unit.test_ofmsg import stats_echo
from tests.unit.test_routing_isolation import arp, ip
from tests.unit.topologies import OUTSIDE, mesh_tunnels

RED = Tenant("red", 1000, subnet="10.10.1.0/24", gateway="10.10.1.1", egress=True)
RED_DB = Tenant("red-db", 1001, vlan=20, subnet="10.10.2.0/24", gateway="10.10.2.1",
                domain="red")
BLUE = Tenant("blue", 2000, subnet="10.10.1.0/24", gateway="10.10.1.1", egress=True)
GREEN = Tenant("green", 3000, subnet="10.30.0.0/24")
MAC = {"a": "02:00:00:00:00:0a", "b": "02:00:00:00:00:0b", "c": "02:00:00:00:00:0a",
       "d": "02:00:00:00:00:0d", "g": "02:00:00:00:00:01", "e": "02:00:00:00:00:0e"}
IP = {"a": "10.10.1.5", "b": "10.10.2.5", "c": "10.10.1.5", "d": "10.10.1.6",
      "e": "10.10.2.6"}
BINDINGS = (
    Binding("h1", "a", "red", mac=MAC["a"], ips=(IP["a"],)),
    Binding("h2", "b", "red-db", mac=MAC["b"], ips=(IP["b"],)),
    Binding("h1", "c", "blue", mac=MAC["c"], ips=(IP["c"],)),
    Binding("h2", "d", "blue", mac=MAC["d"], ips=(IP["d"],)),
    Binding("h1", "g", "green", mac=MAC["g"]),
    Binding("h1", "trk", None, TRUNK, trunk=("red-db",)),
    Binding("h1", "e", "red-db", mac=MAC["e"], ips=(IP["e"],)),
)
TOPO = Topology((RED, RED_DB, BLUE, GREEN), BINDINGS, ("h1", "h2"))
TUNNELS = mesh_tunnels(("h1", "h2"))
PORTS = {"h1": {"a": 1, "c": 2, "g": 3, "trk": 4, "e": 5, "tun-h2": 10, "wx-1000": 20,
                "wx-2000": 21},
         "h2": {"b": 1, "d": 2, "tun-h1": 10}}
GW_RED, GW_DB, GW_BLUE = gateway_mac(1000), gateway_mac(1001), gateway_mac(2000)


def cluster(topo: Topology = TOPO, ports: dict = PORTS, learn: bool = False) -> FakeCluster:
    return FakeCluster.from_topology(topo, ports, TUNNELS, learn=learn)


def state(host: str = "h1", topo: Topology = TOPO, ports: dict = PORTS):
    return desired_state(host, topo, ports[host], TUNNELS[host])


def where(c: FakeCluster, host: str, port: str, pkt: dict, vlan: int | None = None) -> list:
    return [(h, p) for h, p, _ in c.trace(host, port, pkt, vlan)[0]]


def sent(c: FakeCluster, host: str, port: str, pkt: dict, vlan: int | None = None) -> dict:
    (one,) = c.trace(host, port, pkt, vlan)[0]
    return one[2]


# --- the gateway answers -----------------------------------------------------------------
def test_arp_for_the_gateway_is_answered_in_place_and_never_flooded():
    c = cluster()
    reply = sent(c, "h1", "a", arp(MAC["a"], IP["a"], "10.10.1.1"))
    assert where(c, "h1", "a", arp(MAC["a"], IP["a"], "10.10.1.1")) == [("h1", "a")]
    assert {k: reply[k] for k in ("eth_src", "eth_dst", "arp_op", "arp_sha", "arp_spa",
                                  "arp_tha", "arp_tpa")} == {
        "eth_src": GW_RED, "eth_dst": MAC["a"], "arp_op": 2, "arp_sha": GW_RED,
        "arp_spa": "10.10.1.1", "arp_tha": MAC["a"], "arp_tpa": IP["a"]}
    # unicast refresh to the gateway MAC: answered too
    assert where(c, "h1", "a", {**arp(MAC["a"], IP["a"], "10.10.1.1"), "eth_dst": GW_RED}) \
        == [("h1", "a")]
    # ARP for anyone else floods as before, tunnel included
    assert ("h2", "b") not in where(c, "h1", "a", arp(MAC["a"], IP["a"], "10.10.1.9"))
    assert where(c, "h2", "d", arp(MAC["d"], IP["d"], "10.10.1.9")) == [("h1", "c")]


def test_a_trunk_gets_the_answer_tagged_again():
    c = cluster()
    frames = c.frames("h1", "trk", arp("02:00:00:00:00:77", "10.10.2.77", "10.10.2.1"), vlan=20)
    assert frames == [("h1", "trk", 20)]
    assert sent(c, "h1", "trk", arp("02:00:00:00:00:77", "10.10.2.77", "10.10.2.1"),
                vlan=20)["eth_src"] == GW_DB
    # untagged on that trunk: no network, nothing answered
    assert c.frames("h1", "trk", arp("02:00:00:00:00:77", "10.10.2.77", "10.10.2.1")) == []


def test_ping_to_any_gateway_of_the_tenant_is_answered_nothing_else_reaches_it():
    c = cluster()
    for gw in ("10.10.1.1", "10.10.2.1"):
        echo = sent(c, "h1", "a", ip(MAC["a"], GW_RED, IP["a"], gw, proto=1))
        assert (echo["eth_src"], echo["eth_dst"], echo["ipv4_src"], echo["ipv4_dst"],
                echo["icmpv4_type"]) == (GW_RED, MAC["a"], gw, IP["a"], 0)
        assert where(c, "h1", "a", ip(MAC["a"], GW_RED, IP["a"], gw)) == []    # TCP: drop
    # blue's gateway has the same address: blue's own answer, red never sees it
    echo = sent(c, "h1", "c", ip(MAC["c"], GW_BLUE, IP["c"], "10.10.1.1", proto=1))
    assert (echo["eth_src"], echo["ipv4_src"]) == (GW_BLUE, "10.10.1.1")


# --- routing -------------------------------------------------------------------------------
def test_routed_across_hosts_ttl_minus_one_macs_rewritten_and_back():
    c = cluster(learn=True)
    out = c.trace("h1", "a", ip(MAC["a"], GW_RED, IP["a"], IP["b"]))[0]
    assert [(h, p) for h, p, _ in out] == [("h2", "b")]
    frame = out[0][2]
    assert (frame["eth_src"], frame["eth_dst"], frame["ip_ttl"]) == (GW_DB, MAC["b"], 63)
    back = c.trace("h2", "b", ip(MAC["b"], GW_DB, IP["b"], IP["a"]))[0]
    assert [(h, p, f["eth_src"], f["ip_ttl"]) for h, p, f in back] == [
        ("h1", "a", GW_RED, 63)]
    # the receiver learned no gateway MAC (the routed frame enters without learning)
    for host in ("h1", "h2"):
        assert not [f for f in c.hosts[host].table.flows.values()
                    if feature_of(f.cookie) == "learned"
                    and dict(f.match).get("eth_dst", "").startswith("0a:77:66")]


def test_routed_on_one_host_and_ttl_one_is_dropped():
    c = cluster()
    assert where(c, "h1", "a", ip(MAC["a"], GW_RED, IP["a"], IP["e"])) == [("h1", "e")]
    assert where(c, "h1", "a", ip(MAC["a"], GW_RED, IP["a"], IP["e"], ttl=2)) == [("h1", "e")]
    assert where(c, "h1", "a", ip(MAC["a"], GW_RED, IP["a"], IP["e"], ttl=1)) == []
    assert where(c, "h1", "a", ip(MAC["a"], GW_RED, IP["a"], IP["b"], ttl=1)) == []
    # unbound address in a connected subnet: dropped, never to egress
    assert where(c, "h1", "a", ip(MAC["a"], GW_RED, IP["a"], "10.10.2.200")) == []


def test_nothing_routes_between_tenants_with_the_same_addresses():
    c = cluster()
    # blue's web (the same 10.10.1.0/24 as red's) to red-db's address: no such route in blue
    assert ("h2", "b") not in where(c, "h1", "c", ip(MAC["c"], GW_BLUE, IP["c"], IP["b"]))
    # to red's gateway MAC from blue, with red's addresses: floods in blue, nowhere else
    for dst in (IP["a"], IP["b"], IP["e"], "10.10.1.1"):
        got = where(c, "h1", "c", ip(MAC["c"], GW_RED, IP["c"], dst))
        assert set(got) <= {("h2", "d")}, got
    # blue to its own neighbour with the same address as red's a: blue's d, not red's a
    assert where(c, "h2", "d", ip(MAC["d"], GW_BLUE, IP["d"], IP["c"])) == [("h1", "c")]


def test_gateway_spoofing_attacks_fail():
    c = cluster()
    # sending from a gateway MAC (any port, any network), or claiming the gateway's IP
    assert where(c, "h1", "a", ip(GW_RED, "ff:ff:ff:ff:ff:ff", "10.10.1.1", IP["a"])) == []
    assert where(c, "h1", "g", ip(GW_RED, MAC["a"], "10.30.0.9", IP["a"])) == []
    assert where(c, "h1", "a", arp(MAC["a"], "10.10.1.1", "10.10.1.1")) == []
    assert where(c, "h1", "a", {**arp(MAC["a"], "10.10.1.1", IP["a"], op=2),
                                "eth_dst": MAC["a"]}) == []
    # a frame to the gateway MAC or its ARP arriving from a tunnel is dropped (routing is
    # at the source host)
    tun = {"tunnel_id": 1000}
    assert c.hosts["h1"].table.outputs(PORTS["h1"]["tun-h2"], {
        **ip(MAC["d"], GW_RED, IP["d"], IP["a"]), **tun}) == []
    assert c.hosts["h1"].table.outputs(PORTS["h1"]["tun-h2"], {
        **arp("02:00:00:00:00:99", "10.10.1.99", "10.10.1.1"), **tun}) == []
    # a peer's routed frame with another network's gateway MAC: dropped
    assert c.hosts["h2"].table.outputs(PORTS["h2"]["tun-h1"], {
        **ip(GW_RED, MAC["b"], IP["a"], IP["b"]), "tunnel_id": 1001}) == []


def test_an_uplink_carrying_a_gateway_network_is_not_a_local_sender():
    """VLAN transport: another host sent what arrives on the uplink; it answered and routed
    there already, so here the gateway's ARP and MAC from the uplink drop."""
    topo = replace(TOPO, bindings=(*TOPO.bindings,
                                   Binding("h1", "up", None, TRUNK, trunk=("red-db",), uplink=True)))
    c = cluster(topo, {**PORTS, "h1": {**PORTS["h1"], "up": 7}})
    assert c.frames("h1", "up", arp("02:00:00:00:00:77", "10.10.2.77", "10.10.2.1"), vlan=20) == []
    assert c.frames("h1", "up", ip("02:00:00:00:00:77", GW_DB, "10.10.2.77", IP["a"]), vlan=20) \
        == []
    # and a frame of the network from the uplink still reaches its port (plain L2)
    assert c.frames("h1", "up", ip("02:00:00:00:00:77", MAC["e"], "10.10.2.77", IP["e"]),
                    vlan=20) == [("h1", "e", None)]


# --- egress ---------------------------------------------------------------------------------
def test_egress_out_of_the_tenants_own_gateway_port_and_the_reply_back():
    c = cluster()
    out = sent(c, "h1", "a", ip(MAC["a"], GW_RED, IP["a"], OUTSIDE))
    assert where(c, "h1", "a", ip(MAC["a"], GW_RED, IP["a"], OUTSIDE)) == [("h1", "wx-1000")]
    assert (out["eth_src"], out["eth_dst"], out["ip_ttl"]) == (GW_RED, gateway_port_mac(1000), 63)
    assert where(c, "h1", "c", ip(MAC["c"], GW_BLUE, IP["c"], OUTSIDE)) == [("h1", "wx-2000")]
    # never routed: loopback, link-local (metadata services, wx's next hop), multicast,
    # broadcast; the same from the gateway port
    for dst in ("127.0.0.1", "169.254.169.254", "169.254.77.2", "224.0.0.251",
                "255.255.255.255", "0.1.2.3"):
        assert where(c, "h1", "a", ip(MAC["a"], GW_RED, IP["a"], dst)) == [], dst
    # red-db has egress off: its packets to the outside drop
    assert where(c, "h1", "e", ip(MAC["e"], GW_DB, IP["e"], OUTSIDE)) == []
    reply = ip(gateway_port_mac(1000), next_hop_mac(1000), OUTSIDE, IP["a"])
    back = sent(c, "h1", "wx-1000", reply)
    assert where(c, "h1", "wx-1000", reply) == [("h1", "a")]
    assert (back["eth_src"], back["eth_dst"], back["ip_ttl"]) == (GW_RED, MAC["a"], 63)
    # the same address through blue's port reaches blue's c
    assert where(c, "h1", "wx-2000", ip(gateway_port_mac(2000), next_hop_mac(2000), OUTSIDE,
                                        IP["c"])) == [("h1", "c")]
    # wrong next hop MAC, or another tenant's: dropped
    assert where(c, "h1", "wx-1000", {**reply, "eth_dst": next_hop_mac(2000)}) == []


def test_egress_needs_the_gateway_port_an_egress_network_and_a_local_port():
    def egress(topo: Topology, ports: dict, host: str = "h1") -> set[Flow]:
        return {f for f in state(host, topo, ports).flows if feature_of(f.cookie) == "egress"}
    def default_routes(flows: set[Flow]) -> set[Flow]:
        return {f for f in flows if f.table == FIB and "ipv4_dst" not in dict(f.match)}
    # two tenants: classify + one /0 each (and the resolver's rows: test_dns_...)
    assert len(default_routes(egress(TOPO, PORTS))) == 2
    no_wx = {**PORTS, "h1": {k: v for k, v in PORTS["h1"].items() if k != "wx-1000"}}
    assert {f.cookie for f in egress(TOPO, no_wx)} == {COOKIE_EGRESS | 2000}
    off = replace(TOPO, tenants=(replace(RED, egress=False), RED_DB, BLUE, GREEN))
    assert {f.cookie for f in default_routes(egress(off, PORTS))} == {COOKIE_EGRESS | 2000}
    # h2 carries red-db only (egress off): no egress there even with the port
    assert default_routes(egress(TOPO, {**PORTS, "h2": {**PORTS["h2"], "wx-1000": 30}},
                                 "h2")) == set()


def dns(src: str, mac: str, gw: str, dst: str = "169.254.53.53", port: int = 53,
        proto: int = 17) -> dict:
    pkt = {k: v for k, v in ip(mac, gw, src, dst).items() if not k.startswith("tcp")}
    return {**pkt, "ip_proto": proto, "udp_src": 40000, "udp_dst": port} if proto == 17 \
        else {**pkt, "ip_proto": proto, "tcp_src": 40000, "tcp_dst": port}


@pytest.mark.parametrize("deny", [False, True])
def test_dns_to_the_resolver_is_not_egress(deny):
    """A query to the agent's resolver (docs/dns.md) leaves by the tenant's own gateway
    port from a network with egress off, under a default-deny policy too, and its answer
    comes back; anything else to that address, or link-local, still goes nowhere."""
    topo = replace(TOPO, acl_deny=frozenset({"red"}) if deny else frozenset())
    c = cluster(topo)
    assert where(c, "h1", "e", dns(IP["e"], MAC["e"], GW_DB)) == [("h1", "wx-1000")]
    assert where(c, "h1", "a", dns(IP["a"], MAC["a"], GW_RED)) == [("h1", "wx-1000")]
    assert where(c, "h1", "c", dns(IP["c"], MAC["c"], GW_BLUE)) == [("h1", "wx-2000")]
    answer = {**ip(gateway_port_mac(1000), next_hop_mac(1000), "169.254.53.53", IP["e"]),
              "ip_proto": 17, "udp_src": 53, "udp_dst": 40000}
    answer = {k: v for k, v in answer.items() if not k.startswith("tcp")}
    assert where(c, "h1", "wx-1000", answer) == [("h1", "e")]
    for other in (dns(IP["e"], MAC["e"], GW_DB, port=54), dns(IP["e"], MAC["e"], GW_DB,
                                                                proto=6),
                  dns(IP["e"], MAC["e"], GW_DB, dst="169.254.53.54")):
        assert where(c, "h1", "e", other) == []
    # green has no gateway: no way to the resolver (and no wx port)
    assert where(c, "h1", "g", dns("10.30.0.5", MAC["g"], GW_RED)) == []


ALLOW_HTTPS = AclRule(7, "red", 100, "allow", "egress", ip_proto="tcp", remote=OUTSIDE,
                      port=443)


def test_a_default_deny_tenant_reaches_out_only_where_a_rule_allows():
    topo = replace(TOPO, acls=(ALLOW_HTTPS,), acl_deny=frozenset({"red"}))
    c = cluster(topo)
    https = {**ip(MAC["a"], GW_RED, IP["a"], OUTSIDE), "tcp_dst": 443}
    http = ip(MAC["a"], GW_RED, IP["a"], OUTSIDE)
    assert where(c, "h1", "a", http) == []
    assert where(c, "h1", "a", https) == [("h1", "wx-1000")]
    reply = {**ip(gateway_port_mac(1000), next_hop_mac(1000), OUTSIDE, IP["a"]),
             "tcp_src": 443, "tcp_dst": 40000}
    assert where(c, "h1", "wx-1000", reply) == [("h1", "a")]       # +est, zone 1000
    # a new connection from outside (no rule): refused like any new one of the tenant
    assert where(c, "h1", "wx-1000", {**reply, "tcp_src": 80}) == []
    # routed inside the tenant: decided at the source too (red-db is under red's policy)
    assert where(c, "h1", "a", ip(MAC["a"], GW_RED, IP["a"], IP["e"])) == []
    assert where(c, "h1", "c", {**http, "eth_src": MAC["c"], "eth_dst": GW_BLUE}) == [
        ("h1", "wx-2000")]                                          # blue has no policy


def test_a_static_default_route_beats_egress_and_longer_prefixes_win():
    topo = replace(TOPO, routes=(Route("red", "0.0.0.0/0", IP["b"]),
                                 Route("red", "8.8.0.0/16", "10.10.2.254",
                                       mac="02:00:00:00:fe:fe")))
    c = cluster(topo)
    assert where(c, "h1", "a", ip(MAC["a"], GW_RED, IP["a"], "1.1.1.1")) == [("h2", "b")]
    # a next hop known by its MAC only: flooded in its network (until learned) with its MAC
    for dst in ("8.8.4.4", "10.10.2.254"):     # its own address too (a /32 host route)
        out = c.trace("h1", "a", ip(MAC["a"], GW_RED, IP["a"], dst))[0]
        assert {(h, p) for h, p, _ in out} == {("h1", "e"), ("h1", "trk"), ("h2", "b")}
        assert {(f["eth_src"], f["eth_dst"], f["ip_ttl"]) for _, _, f in out} == {
            (GW_DB, "02:00:00:00:fe:fe", 63)}
    # the connected subnet still wins over the default route
    assert where(c, "h1", "a", ip(MAC["a"], GW_RED, IP["a"], "10.10.2.200")) == []


# --- rows and priorities ------------------------------------------------------------------
def _rows(host: str = "h1", topo: Topology = TOPO, ports: dict = PORTS) -> dict:
    out: dict = {}
    for f in state(host, topo, ports).flows:
        out.setdefault((f.table, f.priority), []).append(f)
    return out


def test_gateway_rows_and_priorities():
    rows = _rows()
    assert {f.match for f in rows[(CLASSIFY, PRIO_DROP_GATEWAY_SRC)]
            if f.cookie == COOKIE_GATEWAY} == {(("eth_src", ("0a:77:66:00:00:00",
                                                              "ff:ff:fe:00:00:00")),)}
    # a peer's routed frames, per network present here and peer that routes for it
    assert {dict(f.match)["tunnel_id"] for f in rows[(CLASSIFY, PRIO_ROUTED_FROM_TUNNEL)]} \
        == {1000, 1001, 2000}
    routed_in = [f for f in rows[(CLASSIFY, PRIO_ROUTED_FROM_TUNNEL)]
                 if dict(f.match)["tunnel_id"] == 1001][0]
    assert routed_in.instructions == (
        ("write_metadata", 1001 | 1 << 32 | domain_bits(1000), NETWORK_MASK | DOMAIN_MASK),
        ("goto", POLICY))
    assert {(t, p) for t, p in rows if t in (L2, GATEWAY)} >= {
        (L2, PRIO_GATEWAY_GUARD), (L2, PRIO_GATEWAY_ARP), (L2, PRIO_TO_GATEWAY),
        (L2, PRIO_GATEWAY_ARP_REMOTE), (L2, PRIO_TO_GATEWAY_REMOTE), (GATEWAY, PRIO_GW_TRUNK),
        (GATEWAY, PRIO_GW_ANSWER), (GATEWAY, PRIO_GW_IP_DROP), (GATEWAY, PRIO_GW_FORWARD)}
    to_gw = [f for f in rows[(L2, PRIO_TO_GATEWAY)] if ("eth_dst", GW_RED) in f.match]
    assert [f.match for f in to_gw] == [(("eth_dst", GW_RED), ("metadata", (1000, SENDER_MASK)))]
    # green has no gateway: none of its flows write a domain or mention a gateway
    assert not [f for f in state().flows if any(
        i[0] == "write_metadata" and i[1] & 0xFFFFFF == 3000 and i[2] & DOMAIN_MASK
        for i in f.instructions)]


def test_fib_rows_and_priorities():
    topo = replace(TOPO, routes=(Route("red", "0.0.0.0/0", IP["b"]),
                                 Route("red", "192.168.0.0/16", IP["e"])))
    fib = {(f.priority, dict(f.match).get("ipv4_dst")): f for f in state("h1", topo).flows
           if f.table == FIB and f.cookie & 0xFFFFFF == 1000}
    assert set(fib) == {
        (1131, IP["a"]), (1131, IP["b"]), (1131, IP["e"]),                 # host routes
        (1099, ("10.10.1.0", "255.255.255.0")), (1099, ("10.10.2.0", "255.255.255.0")),
        (1001, None), (1065, ("192.168.0.0", "255.255.0.0")), (1000, None),   # static, egress
        (1132, "169.254.53.53")}                        # the resolver (one key, 2 networks)
    host = fib[(1131, IP["b"])]
    assert host.instructions == (
        ("apply", (("dec_ttl",), ("set_field", "eth_src", GW_DB), ("set_field", "eth_dst",
                                                                       MAC["b"]))),
        ("write_metadata", 1001, 0xFFFFFF), ("goto", ROUTED))
    assert dict(host.match)["metadata"] == (domain_bits(1000), DOMAIN_MASK)
    assert fib[(1099, ("10.10.2.0", "255.255.255.0"))].instructions == ()
    assert feature_of(fib[(1000, None)].cookie) == "egress"
    routed = {f.priority: f for f in state().flows if f.table == ROUTED and f.priority}
    assert routed[PRIO_ROUTED_FROM_GATEWAY].match == (("metadata", (FROM_GATEWAY,
                                                                   FROM_GATEWAY)),)
    assert routed[PRIO_ROUTED_FROM_GATEWAY].instructions == (("apply", (("resubmit", POLICY),)),)
    assert routed[PRIO_ROUTED].instructions == (("apply", (("resubmit", L2),)),)
    (wx,) = [f for f in state().flows if f.table == CLASSIFY and f.priority == PRIO_GATEWAY_PORT
             and ("in_port", 20) in f.match]
    assert wx.instructions[-1] == ("goto", FIB)


def test_fib_rows_are_the_same_on_every_host_and_shared():
    h1 = {f for f in state("h1").flows if f.table == FIB and feature_of(f.cookie) == "route"}
    h2 = {f for f in state("h2").flows if f.table == FIB and feature_of(f.cookie) == "route"}
    assert h1 == h2 and h1
    a = {id(f) for f in state("h1").flows if f.table == FIB}
    assert a & {id(f) for f in state("h2").flows if f.table == FIB}      # one copy


def test_acl_and_qos_are_tenant_wide_per_network_and_unchanged_for_one_network():
    topo = replace(TOPO, acls=(ALLOW_HTTPS,), acl_deny=frozenset({"red"}),
                   limits=(RateLimit(1, "h1", 1000, tenant="red"),),
                   rules=(QosRule(2, "red", 5, {"ip_proto": "udp"}, set_dscp=46),))
    flows = state("h1", topo).flows
    acl = [f for f in flows if feature_of(f.cookie) == "acl"]
    vnis = {dict(f.match)["metadata"][0] & 0xFFFFFF for f in acl}
    assert vnis == {1000, 1001}
    zones = {a[2] for f in acl for i in f.instructions if i[0] == "apply" for a in i[1]
             if a[0] == "ct"}
    assert zones == {1000}
    qos = [f for f in flows if feature_of(f.cookie) == "qos" and f.table in (POLICY, QOS)]
    assert {dict(f.match)["metadata"][0] & 0xFFFFFF for f in qos} == {1000, 1001}
    assert {i[1] for f in qos for i in f.instructions if i[0] == "meter"} == {1}
    # a one-network tenant: exactly the flows of before (zone = its VNI)
    assert acl_flows(2000, [], True, None) == acl_flows(2000, [], True, None, 2000)


# --- deltas ---------------------------------------------------------------------------------
def _only_added(before: Topology, after: Topology, ports: dict = PORTS) -> dict[str, list]:
    """Per host, the flows the change adds; asserts it deletes and modifies nothing."""
    out = {}
    for host in ("h1", "h2"):
        old = state(host, before, ports)
        d = diff(state(host, after, ports), old)
        assert not d.delete_flows and not d.delete_groups and not d.modify_groups, host
        known = {f.identity for f in old.flows}
        assert not [f for f in d.add_flows if f.identity in known], host
        out[host] = list(d.add_flows)
    return out


def test_adding_a_network_sends_only_its_own_flows():
    cache = Tenant("red-cache", 1002, subnet="10.10.3.0/24", gateway="10.10.3.1",
                   domain="red", egress=True)
    after = replace(TOPO, tenants=(*TOPO.tenants, cache), bindings=(
        *TOPO.bindings, Binding("h2", "k", "red-cache", mac="02:00:00:00:00:cc",
                                ips=("10.10.3.5",))))
    ports = {**PORTS, "h2": {**PORTS["h2"], "k": 3}}
    added = _only_added(replace(TOPO), after, ports)
    for host, flows in added.items():
        assert flows and all(_of_new_network(f, host) for f in flows), host
    assert any(f.table == FIB and ("ipv4_dst", "10.10.3.5") in f.match for f in added["h1"])


def _of_new_network(f: Flow, host: str) -> bool:
    """The flow names red-cache: its VNI, subnet, gateway MAC, or k's port or MAC."""
    m = dict(f.match)
    md = m.get("metadata")
    writes = [i[1] for i in f.instructions if i[0] == "write_metadata"]
    return (isinstance(md, tuple) and md[0] & 0xFFFFFF == 1002 or m.get("tunnel_id") == 1002
            or any(v & 0xFFFFFF == 1002 for v in writes)
            or (host, m.get("in_port")) == ("h2", 3)
            or "10.10.3." in repr(f) or gateway_mac(1002) in repr(f)
            or "02:00:00:00:00:cc" in repr(f))


def test_adding_a_route_or_a_gateway_port_sends_only_its_own_flows():
    after = replace(TOPO, routes=(Route("red", "172.16.0.0/12", IP["b"]),))
    added = _only_added(TOPO, after)
    assert [len(v) for v in added.values()] == [1, 1]
    assert all(f.table == FIB and f.cookie == COOKIE_ROUTE | 1000 for v in added.values()
               for f in v)
    without = {**PORTS, "h1": {k: v for k, v in PORTS["h1"].items() if k != "wx-2000"}}
    d = diff(state("h1"), state("h1", ports=without))
    assert not d.delete_flows and {f.cookie for f in d.add_flows} == {COOKIE_EGRESS | 2000}


# --- the wire: round trips, restart ---------------------------------------------------------
ALL = sorted({f for host in ("h1", "h2") for f in state(host, replace(
    TOPO, routes=(Route("red", "0.0.0.0/0", IP["b"]),), acls=(ALLOW_HTTPS,),
    acl_deny=frozenset({"red"}))).flows}, key=repr)


def test_the_routing_sample_covers_every_new_action_and_field():
    kinds = {a[0] for f in ALL for i in f.instructions if i[0] == "apply" for a in i[1]}
    assert {"dec_ttl", "move", "resubmit", "set_field", "output", "push_vlan"} <= kinds
    moves = {a[1:] for f in ALL for i in f.instructions if i[0] == "apply" for a in i[1]
             if a[0] == "move"}
    assert moves == {("eth_src", "eth_dst"), ("arp_sha", "arp_tha"), ("arp_spa", "arp_tpa"),
                     ("ipv4_src", "ipv4_dst")}
    sets = {a[1] for f in ALL for i in f.instructions if i[0] == "apply" for a in i[1]
            if a[0] == "set_field"}
    assert {"eth_src", "eth_dst", "arp_op", "arp_sha", "arp_spa", "ipv4_src",
            "icmpv4_type"} <= sets
    assert {("output", 0xFFFFFFF8)} <= {a for f in ALL for i in f.instructions
                                        if i[0] == "apply" for a in i[1]}


@pytest.mark.parametrize("f", [f for f in ALL if feature_of(f.cookie) in
                               ("gateway", "route", "egress")],
                         ids=lambda f: f"t{f.table}p{f.priority}")
def test_every_routing_flow_reads_back_equal(f):
    assert ofmsg.flow_from_stats(stats_echo(f)) == f


def test_routing_flows_read_as_raw_bytes_and_encode_as_os_ken_does():
    body = b""
    for k, f in enumerate(ALL):
        match, instrs = ofmsg._match_bytes(f.match), ofmsg._instructions_bytes(f.instructions)
        body += struct.pack("!HBxIIHHHH4xQQQ", 48 + len(match) + len(instrs), f.table, k, 5,
                            f.priority, f.idle_timeout, 0, 0, f.cookie, 3 * k, 100 * k)
        body += match + instrs
    data = struct.pack("!BBHIHH4x", 4, 19, 16 + len(body), 7, 1, 0) + body
    msg = ofproto_parser.msg(ofmsg.OFP13, 4, 19, len(data), 7, bytearray(data))
    assert ofmsg.flows_from_stats(msg.body) == frozenset(ALL)
    for f in ALL:
        ref = ofmsg._osken_flow_mod(ofmsg.OFP13, f, "add")
        ref.set_xid(0)
        ref.serialize()
        assert ofmsg.encode(f, "add") == bytes(ref.buf)


def test_a_controller_restart_sends_0_flow_mods_to_a_routing_switch():
    from tests.unit.test_sync import H1, H2, Rig, mods
    from controller.sync import IN_SYNC, ModelSnapshot
    tunnels = {"h1": {"h2": "tun-h2"}, "h2": {"h1": "tun-h1"}}
    topo = replace(TOPO, routes=(Route("red", "0.0.0.0/0", IP["b"]),), acls=(ALLOW_HTTPS,),
                   acl_deny=frozenset({"red"}))
    m = ModelSnapshot(1, topo, tunnels, {}, "epoch-a")
    switches = {H1: FakeOFTable(ports=PORTS["h1"]), H2: FakeOFTable(ports=PORTS["h2"])}
    rig = Rig(m, switches=switches)
    rig.connect(H1)
    assert rig.phase(H1) == IN_SYNC
    assert any(feature_of(f.cookie) == "egress" for f in switches[H1].state.flows)
    again = Rig(m, switches=switches)
    again.connect(H1)
    assert again.phase(H1) == IN_SYNC and mods(again.sent[H1]) == []


def test_every_routing_flow_prints_through_ofctl():
    """GET /stats/flow (os-ken's ofctl) on a routing switch: moves, resubmits, dec_ttl."""
    from os_ken.lib import ofctl_v1_3
    msg = type("Reply", (), {"body": [stats_echo(f) for f in ALL]})()
    ofmsg.ofctl_printable(msg)
    printed = [a for st in msg.body for a in ofctl_v1_3.actions_to_str(st.instructions)]
    assert any(a.startswith("NX_MOVE") for a in printed)
