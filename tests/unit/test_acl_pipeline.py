"""Tenant ACLs in the pure core: stateful rules in POLICY, run through the fake switches.

What is asserted, by sending frames through ``tests.fakeoftable`` (with its
conntrack): in a default-deny tenant exactly what a rule allows opens a
connection, on one host and across hosts, and its replies come back by
conntrack while the same packets as new connections are refused; drop rules
outrank lower allow rules; ARP still works under default-deny; tenants with
no policy keep today's flows exactly; changing one rule changes exactly one
flow; the decision of the pipeline equals a reference evaluator for random
rules and frames (hypothesis); and the ct flows survive the wire both ways.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings, strategies as st

from controller.flows import (
    COOKIE_ACL, acl_cookie, acl_rule_of, diff, feature_of,
)
from controller.model import AclRule, Binding, ModelError, RateLimit, Tenant, Topology
from controller.ofmsg import flow_from_stats
from controller.pipeline import POLICY, desired_state
from tests.fakeoftable import FakeCluster
from tests.unit.test_ofmsg import stats_echo
from tests.unit.topologies import Lab, mesh_tunnels

RED, BLUE = Tenant("red", 100), Tenant("blue", 200)
MACS = {"r1": "02:00:00:00:00:01", "r1b": "02:00:00:00:00:02", "r2": "02:00:00:00:00:03",
        "b1": "02:00:00:00:00:04"}
IPS = {"r1": "10.0.0.1", "r1b": "10.0.0.11", "r2": "10.0.0.2", "b1": "10.0.0.2"}
IPS6 = {"r1": "fd00::1", "r1b": "fd00::11", "r2": "fd00::2", "b1": "fd00::2"}
HOST_OF = {"r1": "h1", "r1b": "h1", "r2": "h2", "b1": "h1"}
BINDINGS = (Binding("h1", "r1", "red", mac=MACS["r1"]), Binding("h1", "r1b", "red", mac=MACS["r1b"]),
            Binding("h2", "r2", "red", mac=MACS["r2"]), Binding("h1", "b1", "blue", mac=MACS["b1"]))
PORTS = {"h1": {"r1": 1, "r1b": 2, "b1": 3, "tun-h2": 10}, "h2": {"r2": 1, "tun-h1": 10}}
TUNNELS = mesh_tunnels(("h1", "h2"))
WEB = AclRule(1, "red", 100, "allow", "ingress", ip_proto="tcp", local="10.0.0.2", port=80)


def topo(*acls: AclRule, deny: tuple[str, ...] = ("red",), limits: tuple = ()) -> Topology:
    return Topology((RED, BLUE), BINDINGS, ("h1", "h2"), acls=acls, acl_deny=frozenset(deny),
                    limits=limits)


LAB = Lab(topo(), PORTS, TUNNELS)      # tests give each its own model on this wiring




def tcp(src: str, dst: str, sport: int, dport: int, proto: int = 6, v6: bool = False) -> dict:
    """A frame ``src`` -> ``dst``; proto 1 (v6: 58): ICMP of type ``sport``."""
    if v6:
        frame = {"eth_src": MACS[src], "eth_dst": MACS[dst], "eth_type": 0x86DD,
                 "ip_proto": proto, "ipv6_src": IPS6[src], "ipv6_dst": IPS6[dst]}
    else:
        frame = {"eth_src": MACS[src], "eth_dst": MACS[dst], "eth_type": 0x0800,
                 "ip_proto": proto, "ipv4_src": IPS[src], "ipv4_dst": IPS[dst], "ip_dscp": 0}
    if proto == 6:
        frame.update(tcp_src=sport, tcp_dst=dport)
    elif proto == 17:
        frame.update(udp_src=sport, udp_dst=dport)
    elif proto == 58:
        frame.update(icmpv6_type=sport, icmpv6_code=0)
    else:
        frame.update(icmpv4_type=sport, icmpv4_code=0)
    return frame


def send(c: FakeCluster, src: str, dst: str, sport: int = 40000, dport: int = 80,
         proto: int = 6, v6: bool = False) -> bool:
    """Does the frame from ``src``'s port reach ``dst``'s port?"""
    got = c.deliveries(HOST_OF[src], src, tcp(src, dst, sport, dport, proto, v6))
    assert set(got) <= {(HOST_OF[dst], dst)}, got
    return (HOST_OF[dst], dst) in got


# --- model --------------------------------------------------------------------------------
def test_rule_sides_follow_the_direction():
    assert WEB.oxm() == {"eth_type": 0x0800, "ip_proto": 6, "ipv4_dst": "10.0.0.2",
                         "tcp_dst": 80}
    out = AclRule(2, "red", 5, "drop", "egress", ip_proto="udp", local="10.0.0.0/24",
                  remote="192.168.1.9/32", port=53)
    assert out.oxm() == {"eth_type": 0x0800, "ip_proto": 17, "udp_dst": 53,
                         "ipv4_src": ("10.0.0.0", "255.255.255.0"), "ipv4_dst": "192.168.1.9"}
    ping = AclRule(3, "red", 6, "allow", "ingress", ip_proto="ICMP", icmp_type=8)
    assert ping.oxm() == {"eth_type": 0x0800, "ip_proto": 1, "icmpv4_type": 8}
    assert ping.ip_proto == "icmp" and out.remote == "192.168.1.9"


@pytest.mark.parametrize("kwargs,field", [
    (dict(action="accept"), "action"),
    (dict(direction="in"), "direction"),
    (dict(priority=0), "priority"),
    (dict(priority=10_001), "priority"),
    (dict(port=80), "port"),                                   # needs tcp/udp
    (dict(ip_proto="tcp", port=0), "port"),
    (dict(icmp_type=8), "icmp_type"),                          # needs icmp
    (dict(ip_proto="icmp", icmp_type=256), "icmp_type"),
    (dict(remote="10.0.0.300"), "match.src"),
    (dict(local="fd00::/129"), "match.dst"),
    (dict(remote="10.0.0.0/8", local="fd00::1"), "local"),      # families mixed
    (dict(ip_proto="icmp", local="fd00::1"), "ip_proto"),       # IPv6's is icmpv6
    (dict(ip_proto="icmpv6", remote="10.0.0.1"), "ip_proto"),
    (dict(ip_proto="sctp"), "match.ip_proto"),
])
def test_bad_rules_name_their_field(kwargs, field):
    args = dict(id=1, tenant="red", priority=1, action="allow") | kwargs
    with pytest.raises(ModelError) as err:
        AclRule(**args)
    assert err.value.field == field


def test_topology_refuses_acls_it_cannot_keep():
    with pytest.raises(ValueError, match="unknown tenant"):
        Topology((RED,), acls=(replace(WEB, tenant="nope"),))
    with pytest.raises(ValueError, match="priority"):
        Topology((RED,), acls=(WEB, replace(WEB, id=2)))
    with pytest.raises(ValueError, match="conntrack zone"):
        Topology((Tenant("big", 70_000),), acl_deny=frozenset({"big"}))


# --- behaviour ----------------------------------------------------------------------------
def test_default_deny_passes_exactly_the_allowed_connection_across_hosts():
    c = LAB.cluster(topo(WEB))
    assert not send(c, "r2", "r1", 80, 40000)          # the reply, before the connection: no
    assert send(c, "r1", "r2", 40000, 80)              # h1 -> h2, tcp/80 to 10.0.0.2: allowed
    assert send(c, "r2", "r1", 80, 40000)              # reply: established (h2 committed it)
    assert send(c, "r1", "r2", 40000, 80)              # the rest of the connection
    assert not send(c, "r1", "r2", 40001, 22)          # another port: no
    assert not send(c, "r1", "r2", 40000, 80, proto=17)   # udp/80: no
    assert not send(c, "r1", "r2", 8, 0, proto=1)      # ping: no
    assert not send(c, "r2", "r1", 40002, 80)          # tcp/80 to 10.0.0.1: not the allowed one
    assert not send(c, "r1", "r1b", 40000, 80)         # same host, other address: no


def test_default_deny_same_host_and_replies():
    rule = AclRule(1, "red", 100, "allow", "ingress", ip_proto="tcp", local="10.0.0.11", port=80)
    c = LAB.cluster(topo(rule))
    assert send(c, "r1", "r1b", 40000, 80)
    assert send(c, "r1b", "r1", 80, 40000)
    assert not send(c, "r1b", "r1", 40000, 80)         # the other way round is new: no


def test_arp_still_works_and_other_tenants_are_untouched():
    c = LAB.cluster(topo(WEB))
    arp = {"eth_src": MACS["r1"], "eth_dst": "ff:ff:ff:ff:ff:ff", "eth_type": 0x0806,
           "arp_op": 1, "arp_sha": MACS["r1"], "arp_spa": IPS["r1"], "arp_tpa": IPS["r2"]}
    assert set(c.deliveries("h1", "r1", arp)) == {("h1", "r1b"), ("h2", "r2")}
    ipv6 = {"eth_src": MACS["r1"], "eth_dst": "ff:ff:ff:ff:ff:ff", "eth_type": 0x86DD}
    assert c.deliveries("h1", "r1", ipv6) == []         # default-deny: only IPv4 rules and ARP
    blue = topo(WEB)
    assert {f for f in LAB.state("h1", blue).flows
            if f.cookie == COOKIE_ACL and dict(f.match).get("metadata", (0,))[0] & 0xFFFFFF
            == 200} == set()


def test_drop_rule_above_an_allow_and_default_allow():
    allow_net = AclRule(1, "red", 10, "allow", "ingress", ip_proto="tcp", port=80)
    drop_one = AclRule(2, "red", 20, "drop", "egress", local="10.0.0.11")
    c = LAB.cluster(topo(allow_net, drop_one))
    assert send(c, "r1", "r2", 40000, 80)
    assert not send(c, "r1b", "r2", 40000, 80)         # the higher drop wins
    c = LAB.cluster(topo(drop_one, deny=()))           # default allow: only the drop bites
    assert send(c, "r1", "r2", 40000, 22) and send(c, "r2", "r1", 22, 40000)
    assert send(c, "r1", "r2", 5, 5, proto=17)
    assert not send(c, "r1b", "r2", 40000, 22)


def test_ping_rule_and_its_reply():
    ping = AclRule(1, "red", 1, "allow", "ingress", ip_proto="icmp", icmp_type=8)
    c = LAB.cluster(topo(ping))
    assert not send(c, "r1", "r2", 0, 0, proto=1)        # an echo reply alone: no
    assert send(c, "r1", "r2", 8, 0, proto=1)             # request
    assert send(c, "r2", "r1", 0, 0, proto=1)             # its reply: established


def test_a_ping_back_is_a_new_connection_not_the_reply():
    """Conntrack keys ICMP by type: r1 may ping r2, r2 may not ping r1 just because r1's
    ping is open (hypothesis found the fake switch letting it through)."""
    ping_in = AclRule(1, "red", 1, "allow", "ingress", ip_proto="icmp", local="10.0.0.2")
    c = LAB.cluster(topo(ping_in))
    assert send(c, "r1", "r2", 8, 0, proto=1)             # r1 pings r2: allowed
    assert send(c, "r2", "r1", 0, 0, proto=1)             # its echo reply: established
    assert not send(c, "r2", "r1", 8, 0, proto=1)         # r2 pings r1: a new connection


def test_tenant_meter_is_kept_once_for_local_senders():
    t = topo(WEB, limits=(RateLimit(7, "h1", 1000, tenant="red"),))
    c = LAB.cluster(t)
    frame = tcp("r1", "r2", 40000, 80)
    assert c.meters_hit("h1", "r1", frame) == [("h1", 7)]
    assert c.meters_hit("h2", "r2", tcp("r2", "r1", 80, 40000)) == []   # h2 has no limit


def test_no_policy_no_acl_flows_and_removal_is_a_clean_diff():
    bare = topo(deny=())
    for host in PORTS:
        state = LAB.state(host, bare)
        assert not [f for f in state.flows if feature_of(f.cookie) == "acl"]
        with_acl = LAB.state(host, topo(WEB))
        d = diff(bare_state := state, with_acl)
        assert {f.cookie & ~0xFFFFFFFF for f in d.delete_flows} == {COOKIE_ACL}
        assert not d.add_flows and diff(with_acl, bare_state).delete_flows == ()


def test_changing_one_rule_sends_only_its_flow():
    rules = [AclRule(i, "red", i, "allow", "ingress", ip_proto="tcp", port=1000 + i)
             for i in range(1, 101)]
    before = LAB.state("h1", topo(*rules))
    changed = [*rules[:50], replace(rules[50], port=9999), *rules[51:]]
    after = LAB.state("h1", topo(*changed))
    d = diff(after, before)
    assert len(d.add_flows) == len(d.delete_flows) == 1    # its match changed: old out, new in
    assert {acl_rule_of(f.cookie) for f in (*d.add_flows, *d.delete_flows)} == {51}
    assert d.add_flows[0].table == POLICY
    flipped = [*rules[:50], replace(rules[50], action="drop"), *rules[51:]]
    d = diff(LAB.state("h1", topo(*flipped)), before)
    assert len(d.add_flows) == 1 and not d.delete_flows    # same identity: one add replaces it


# --- IPv6 ---------------------------------------------------------------------------------
WEB6 = AclRule(3, "red", 110, "allow", "ingress", ip_proto="tcp", local="fd00::2", port=80)


def test_ipv6_rules_match_ipv6_only():
    assert WEB6.ipv6 and not WEB.ipv6
    assert WEB6.oxm() == {"eth_type": 0x86DD, "ip_proto": 6, "ipv6_dst": "fd00::2",
                          "tcp_dst": 80}
    out = AclRule(4, "red", 5, "allow", "egress", ip_proto="ICMPv6", local="fd00::/64",
                  remote="::/0", icmp_type=128)
    assert out.ipv6 and out.remote == "::/0" and out.local == "fd00::/64"
    assert out.oxm() == {"eth_type": 0x86DD, "ip_proto": 58, "icmpv6_type": 128,
                         "ipv6_src": ("fd00::", "ffff:ffff:ffff:ffff::")}
    assert AclRule(5, "red", 6, "allow", local="FD00:0::2/128").local == "fd00::2"


def test_ipv6_default_deny_passes_exactly_the_allowed_connection():
    """A default-deny tenant with one IPv6 rule: that connection and its replies pass,
    across hosts; another port, udp, ping6, and IPv4 to the same port do not; the IPv4
    rule opens no IPv6."""
    c = LAB.cluster(topo(WEB6, WEB))
    assert not send(c, "r2", "r1", 80, 40000, v6=True)
    assert send(c, "r1", "r2", 40000, 80, v6=True)
    assert send(c, "r2", "r1", 80, 40000, v6=True)               # the reply: established
    assert not send(c, "r1", "r2", 40000, 8080, v6=True)
    assert not send(c, "r1", "r2", 40000, 80, proto=17, v6=True)
    assert not send(c, "r1", "r2", 128, 0, proto=58, v6=True)
    assert not send(c, "r1", "r1b", 40000, 80, v6=True)          # fd00::11: not allowed
    c = LAB.cluster(topo(WEB))                                   # IPv4's tcp/80 only
    assert send(c, "r1", "r2", 40000, 80)
    assert not send(c, "r1", "r2", 40000, 80, v6=True)
    c = LAB.cluster(topo(WEB6))
    assert not send(c, "r1", "r2", 40000, 80)


def test_ipv6_ping_rule_and_neighbour_discovery_under_default_deny():
    """ND passes untracked (as ARP does), so the allowed ping6 can resolve its neighbour;
    the echo reply comes back by conntrack; a ping6 back is new and refused."""
    ping6 = AclRule(1, "red", 1, "allow", "ingress", ip_proto="icmpv6", local="fd00::2",
                    icmp_type=128)
    c = LAB.cluster(topo(ping6))
    ns = {"eth_src": MACS["r1"], "eth_dst": "33:33:ff:00:00:02", "eth_type": 0x86DD,
          "ip_proto": 58, "ipv6_src": "fd00::1", "ipv6_dst": "ff02::1:ff00:2",
          "icmpv6_type": 135, "icmpv6_code": 0, "ipv6_nd_target": "fd00::2",
          "ipv6_nd_sll": MACS["r1"]}
    assert set(c.deliveries("h1", "r1", ns)) == {("h1", "r1b"), ("h2", "r2")}
    na = {"eth_src": MACS["r2"], "eth_dst": MACS["r1"], "eth_type": 0x86DD, "ip_proto": 58,
          "ipv6_src": "fd00::2", "ipv6_dst": "fd00::1", "icmpv6_type": 136, "icmpv6_code": 0,
          "ipv6_nd_target": "fd00::2", "ipv6_nd_tll": MACS["r2"]}
    assert c.deliveries("h2", "r2", na) == [("h1", "r1")]
    assert send(c, "r1", "r2", 128, 0, proto=58, v6=True)
    assert send(c, "r2", "r1", 129, 0, proto=58, v6=True)
    assert not send(c, "r2", "r1", 128, 0, proto=58, v6=True)
    assert c.deliveries("h1", "b1", {**ns, "eth_src": MACS["b1"],
                                     "ipv6_nd_sll": MACS["b1"]}) == []   # blue: alone


def test_ipv6_in_a_default_allow_tenant_with_rules_flows_and_drop_rules_bite():
    drop6 = AclRule(1, "red", 5, "drop", "egress", local="fd00::11")
    c = LAB.cluster(topo(drop6, deny=()))
    assert send(c, "r1", "r2", 40000, 22, v6=True) and send(c, "r2", "r1", 22, 40000, v6=True)
    assert not send(c, "r1b", "r2", 40000, 22, v6=True)
    assert send(c, "r1b", "r2", 40000, 22)                      # IPv4 of r1b: untouched


def test_rule_flows_carry_the_rule_id_in_their_cookie():
    state = LAB.state("h1", topo(WEB))
    assert [f for f in state.flows if f.cookie == acl_cookie(1)]
    assert acl_rule_of(acl_cookie(1)) == 1 and acl_rule_of(acl_cookie()) is None


def test_acl_flows_read_back_equal():
    state = desired_state("h1", topo(WEB, WEB6, AclRule(2, "red", 3, "drop", "egress",
                                                        ip_proto="icmp", icmp_type=8),
                                     AclRule(4, "red", 4, "allow", local="fd00::/64",
                                             ip_proto="icmpv6", icmp_type=128),
                                     limits=(RateLimit(7, "h1", 1000, tenant="red"),)),
                          PORTS["h1"], TUNNELS["h1"])
    acl = [f for f in state.flows if feature_of(f.cookie) == "acl"]
    assert any(a[0] == "ct" for f in acl for i in f.instructions if i[0] == "apply"
               for a in i[1])
    for f in acl:
        assert flow_from_stats(stats_echo(f)) == f


# --- hypothesis: the pipeline decides as a reference evaluator does ------------------------
NETS = ["10.0.0.1", "10.0.0.2", "10.0.0.0/24", "10.0.0.0/30", None]
NETS6 = ["fd00::1", "fd00::2", "fd00::/64", "fd00::/126", "::/0", None]
ECHO, ECHO_REPLY = {1: 8, 58: 128}, {1: 0, 58: 129}


@st.composite
def acl_rules(draw) -> list[AclRule]:
    """Up to 6 rules, each IPv4 or IPv6 (its addresses, or icmpv6, say which)."""
    out = []
    for i, prio in enumerate(draw(st.lists(st.integers(1, 50), unique=True, max_size=6))):
        v6 = draw(st.booleans())
        proto = draw(st.sampled_from([None, "tcp", "udp", "icmpv6" if v6 else "icmp"]))
        nets = NETS6 if v6 else NETS
        icmp = proto in ("icmp", "icmpv6")
        out.append(AclRule(
            i + 1, "red", prio, draw(st.sampled_from(["allow", "drop"])),
            draw(st.sampled_from(["ingress", "egress"])), ip_proto=proto,
            remote=draw(st.sampled_from(nets)), local=draw(st.sampled_from(nets)),
            port=draw(st.sampled_from([None, 80, 22])) if proto in ("tcp", "udp") else None,
            icmp_type=draw(st.sampled_from([None, 128 if v6 else 8])) if icmp else None))
    return out


def _inside(addr: str, net: str | None) -> bool:
    import ipaddress
    return net is None or ipaddress.ip_address(addr) in ipaddress.ip_network(net)


def reference(rules: list[AclRule], deny: bool, pkt: dict) -> bool:
    """Is a new connection with this first packet allowed?  (highest matching rule of the
    packet's family; a rule without addresses nor icmpv6 is IPv4)"""
    protos = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58}
    v6 = pkt["eth_type"] == 0x86DD
    ip = "ipv6" if v6 else "ipv4"
    for r in sorted(rules, key=lambda r: -r.priority):
        if r.ipv6 != v6:
            continue
        src, dst = (r.remote, r.local) if r.direction == "ingress" else (r.local, r.remote)
        if r.ip_proto is not None and protos[r.ip_proto] != pkt["ip_proto"]:
            continue
        if not (_inside(pkt[f"{ip}_src"], src) and _inside(pkt[f"{ip}_dst"], dst)):
            continue
        if r.port is not None and pkt.get("tcp_dst", pkt.get("udp_dst")) != r.port:
            continue
        if r.icmp_type is not None and pkt.get("icmpv6_type" if v6 else "icmpv4_type") \
                != r.icmp_type:
            continue
        return r.action == "allow"
    return not deny


@settings(max_examples=80, deadline=None)
@given(acl_rules(), st.booleans(),
       st.lists(st.tuples(st.sampled_from(["r1", "r1b", "r2"]), st.sampled_from(["r1", "r1b", "r2"]),
                          st.sampled_from([(6, 80), (6, 22), (17, 80), (1, 8), (58, 128)]),
                          st.booleans()),
                min_size=1, max_size=4))
def test_pipeline_decides_like_the_reference(rules, deny, conns):
    """IPv4 and IPv6 connections, each decided by the rules of its own family only."""
    c = LAB.cluster(topo(*rules, deny=("red",) if deny else ()))
    conns = [(s, d, ((58, 128) if v6 and p == 1 else (1, 8) if not v6 and p == 58 else (p, dp)),
              v6) for s, d, (p, dp), v6 in conns]
    for src, dst, (proto, dport), v6 in conns:
        if src == dst:
            continue
        icmp = proto in (1, 58)
        sport = 40000 if not icmp else dport
        pkt = tcp(src, dst, sport, dport if not icmp else 0, proto, v6)
        allowed = reference(rules, deny, pkt)
        reached = send(c, src, dst, sport, dport if not icmp else 0, proto, v6)
        if allowed:
            assert reached
            reply_sport, reply_dport = (dport, sport) if not icmp else (ECHO_REPLY[proto], 0)
            assert send(c, dst, src, reply_sport, reply_dport, proto, v6)   # reply by conntrack
        else:
            # refused unless an earlier allowed connection made it established
            was_open = any(s == src and d == dst and pd == (proto, dport) and f == v6 and
                           reference(rules, deny, tcp(s, d, sport, dport if not icmp else 0,
                                                      proto, v6))
                           for s, d, pd, f in conns)
            assert reached == was_open
        # blue never sees red's frames, of either family
        assert ("h1", "b1") not in c.deliveries(HOST_OF[src], src, pkt)
