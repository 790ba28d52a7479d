"""QoS in the pure core: rate limits (meters), per-flow rules, their flows, diff and wire form.

What is asserted, mostly by running frames through ``tests.fakeoftable``:
a frame from a limited port passes exactly its port meter; a tenant's frames
pass the tenant's aggregate meter on the host they were sent from; a frame
matching a rule passes the rule's meter and leaves with the rule's DSCP; a
frame matching no rule is not metered by rules and keeps its DSCP; frames
from tunnels and uplinks are never metered by tenant limits or rules; with
all QoS config gone, no meter and no COOKIE_QOS flow remains (and the diff
removes them); isolation holds with random QoS in place.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import replace

import pytest
from hypothesis import given, settings, strategies as st
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as ofpp

from controller.flows import (
    COOKIE_BASE, COOKIE_ISOLATION, COOKIE_LEARNED, COOKIE_PORTSEC, COOKIE_QOS, COOKIE_VLAN, Delta, Meter,
    SwitchState, apply_delta, diff, feature_of, flow, owns_meter,
)
from controller.model import (
    DOCKER_LINK_PORT, TRUNK, Binding, ModelError, QosRule, RateLimit, Tenant, Topology,
)
from controller.ofmsg import (
    flow_from_stats, meter_from_config, meter_mod, meters_from_config,
)
from controller.pipeline import (
    CLASSIFY, FLOOD, FROM_TUNNEL, FROM_UPLINK, L2, POLICY, QOS, SENDER_MASK, TENANT_MASK,
    desired_state,
)
from tests.fakeoftable import FakeOFTable, FakeSwitchError
from tests.unit.test_ofmsg import DP, _wire, stats_echo
from tests.unit import test_pipeline as base
from tests.unit.test_pipeline import BCAST
from tests.unit.topologies import (
    MAC_POOL, QOS_DSCPS, QOS_NETS, QOS_PORTS, UNKNOWN, Lab, labs, mesh_tunnels,
)

RED, BLUE, GREEN = Tenant("red", 100, vlan=10), Tenant("blue", 200, vlan=20), Tenant("green", 300)
A = "02:00:00:00:00:0a"


def ip(src: str = "10.0.0.1", dst: str = "10.0.0.2", proto: int = 6, sport: int = 4000,
       dport: int = 80, dscp: int = 0, eth_dst: str = BCAST) -> dict:
    """An IPv4 frame (TCP/UDP ports when ``proto`` is 6/17)."""
    frame = {"eth_src": A, "eth_dst": eth_dst, "eth_type": 0x0800, "ip_proto": proto,
             "ipv4_src": src, "ipv4_dst": dst, "ip_dscp": dscp}
    l4 = {6: "tcp", 17: "udp"}.get(proto)
    if l4:
        frame.update({f"{l4}_src": sport, f"{l4}_dst": dport})
    return frame


ARP = {"eth_src": A, "eth_dst": BCAST, "eth_type": 0x0806}

# --- the sample cluster --------------------------------------------------------------------
LIMITS = (
    RateLimit(1, "h1", 10_000, port="r1"),                     # an access port
    RateLimit(2, "h1", 50_000, 1_000, tenant="red"),           # red's aggregate on h1
    RateLimit(3, "h1", 1_000, port="trk"),                     # a trunk (red 10, blue 20)
    RateLimit(4, "h1", 5_000, port="ghost"),                   # not bound: nothing
    RateLimit(5, "h1", 5_000, tenant="green"),                 # green has no port on h1
    RateLimit(6, "h2", 7_000, tenant="green"),
    RateLimit(7, "h2", 8_000, port="r1"),                      # r1 is h1's, not h2's
)
RULES = (
    QosRule(10, "red", 100, (("ip_proto", "tcp"), ("dst_port", 80)), kbps=2_000, set_dscp=46),
    QosRule(11, "red", 50, {"dst": "10.0.0.0/24"}, set_dscp=10, queue=1),
    QosRule(12, "blue", 100, (), kbps=1_000, burst_kb=100),    # all of blue's IPv4
    QosRule(13, "green", 1, {"ip_proto": "udp"}, set_dscp=8),
)
TOPO = Topology(
    tenants=(RED, BLUE, GREEN),
    bindings=(Binding("h1", "r1", "red"), Binding("h1", "r1b", "red"), Binding("h1", "b1", "blue"),
              Binding("h1", "trk", None, TRUNK, trunk=("red", "blue")),
              Binding("h2", "r2", "red"), Binding("h2", "g2", "green")),
    hosts=("h1", "h2"), limits=LIMITS, rules=RULES)
PORTS = {"h1": {"r1": 1, "r1b": 2, "b1": 3, "trk": 4, DOCKER_LINK_PORT: 5, "tun-h2": 10},
         "h2": {"r2": 1, "g2": 2, DOCKER_LINK_PORT: 3, "tun-h1": 10}}
TUNNELS = mesh_tunnels(TOPO.hosts)
LAB = Lab(TOPO, PORTS, TUNNELS)


def _no_qos(topo: Topology) -> Topology:
    return replace(topo, limits=(), rules=())


# --- model ---------------------------------------------------------------------------------------
def test_rule_match_is_normalised_and_translated_to_oxm():
    r = QosRule(1, "red", 5, {"ip_proto": "TCP", "dst": "10.1.2.3/24", "src": "10.0.0.7/32",
                              "dst_port": 443, "dscp": 46}, set_dscp=0)
    assert r.match == (("dscp", 46), ("dst", "10.1.2.0/24"), ("dst_port", 443),
                       ("ip_proto", "tcp"), ("src", "10.0.0.7"))
    assert r.oxm() == {"eth_type": 0x0800, "ip_proto": 6, "ipv4_src": "10.0.0.7",
                       "ipv4_dst": ("10.1.2.0", "255.255.255.0"), "tcp_dst": 443, "ip_dscp": 46}
    # what storage gives back (sorted pairs of the normal form) is the same rule
    assert QosRule(1, "red", 5, r.match, set_dscp=0) == r
    assert QosRule(1, "red", 5, dict(r.match), set_dscp=0) == r
    assert QosRule(2, "t", 1, {"ip_proto": 17, "src_port": 53}, kbps=1).oxm() == {
        "eth_type": 0x0800, "ip_proto": 17, "udp_src": 53}
    assert QosRule(2, "t", 1, {"ip_proto": 17}, kbps=1).match == (("ip_proto", "udp"),)
    assert QosRule(2, "t", 1, {"ip_proto": 47}, kbps=1).oxm() == {"eth_type": 0x0800,
                                                                  "ip_proto": 47}
    assert QosRule(2, "t", 1, (), queue=0).oxm() == {"eth_type": 0x0800}      # all IPv4
    assert QosRule(2, "t", 1, {"dst": "0.0.0.0/0"}, queue=0).oxm() == {"eth_type": 0x0800}


@pytest.mark.parametrize("kwargs", [
    dict(match={"vlan": 3}, kbps=1),                                   # unknown key
    dict(match={"ip_proto": "sctp"}, kbps=1),
    dict(match={"ip_proto": 256}, kbps=1),
    dict(match={"ip_proto": True}, kbps=1),
    dict(match={"dst": "10.0.0.300"}, kbps=1),
    dict(match={"dst": "fe80::1"}, kbps=1),                            # IPv4 only
    dict(match={"dst": 167772161}, kbps=1),
    dict(match={"dst_port": 80}, kbps=1),                              # needs tcp/udp
    dict(match={"ip_proto": "icmp", "src_port": 80}, kbps=1),
    dict(match={"ip_proto": "tcp", "dst_port": 0}, kbps=1),
    dict(match={"ip_proto": "tcp", "dst_port": 65536}, kbps=1),
    dict(match={"dscp": 64}, kbps=1),
    dict(match=(("dscp", 1), ("dscp", 2)), kbps=1),                    # twice
    dict(match=(("dscp",),), kbps=1),
    dict(match=42, kbps=1),
    dict(match=()),                                                    # no action
    dict(match=(), burst_kb=10, set_dscp=1),                           # burst without a meter
    dict(match=(), kbps=0),
    dict(match=(), kbps=100_000_001),
    dict(match=(), kbps=1, burst_kb=10_000_001),
    dict(match=(), set_dscp=64),
    dict(match=(), queue=8),
    dict(match=(), kbps=1.5),
])
def test_bad_rules_are_rejected(kwargs):
    with pytest.raises(ValueError):
        QosRule(1, "red", 1, **kwargs)


@pytest.mark.parametrize("bad", [
    lambda: QosRule(0, "red", 1, (), kbps=1),
    lambda: QosRule(65536, "red", 1, (), kbps=1),
    lambda: QosRule(1, "red", 0, (), kbps=1),
    lambda: QosRule(1, "red", 1001, (), kbps=1),
    lambda: QosRule(1, "", 1, (), kbps=1),
    lambda: RateLimit(0, "h1", 1, port="p"),
    lambda: RateLimit(65536, "h1", 1, port="p"),
    lambda: RateLimit(1, "h1", 0, port="p"),
    lambda: RateLimit(1, "h1", 100_000_001, port="p"),
    lambda: RateLimit(1, "h1", 1, -1, port="p"),
    lambda: RateLimit(1, "h1", 1, 10_000_001, port="p"),
    lambda: RateLimit(1, "h1", 1),                                     # neither
    lambda: RateLimit(1, "h1", 1, port="p", tenant="red"),             # both
    lambda: RateLimit(1, "", 1, port="p"),
    lambda: RateLimit(1, "h1", 1, port=""),
    lambda: RateLimit(True, "h1", 1, port="p"),
    lambda: RateLimit(1, "h1", None, port="p"),                       # no rate
    lambda: RateLimit(1, "h1", None, port="p", pps=0),
    lambda: RateLimit(1, "h1", None, port="p", pps=100_000_001),
    lambda: RateLimit(1, "h1", None, port="p", pps=1, burst_pkts=-1),
    lambda: Binding("h1", "up", None, TRUNK, trunk=("red",), uplink="yes"),
])
def test_bad_limits_and_rules_are_rejected(bad):
    with pytest.raises(ValueError):
        bad()


@pytest.mark.parametrize("kwargs", [
    dict(limits=(RateLimit(1, "h1", 1, tenant="nope"),)),
    dict(rules=(QosRule(1, "nope", 1, (), kbps=1),)),
    dict(limits=(RateLimit(1, "h1", 1, port="p"),), rules=(QosRule(1, "red", 1, (), kbps=1),)),
    dict(limits=(RateLimit(1, "h1", 1, port="p"), RateLimit(2, "h1", 2, port="p"))),
    dict(limits=(RateLimit(1, "h1", 1, tenant="red"), RateLimit(2, "h1", 2, tenant="red"))),
    dict(rules=(QosRule(1, "red", 7, (), kbps=1), QosRule(2, "red", 7, (), set_dscp=1))),
    dict(limits=("not a limit",)),
])
def test_topology_rejects_inconsistent_qos(kwargs):
    with pytest.raises(ValueError):
        Topology((RED,), (), ("h1",), **kwargs)


def test_topology_qos_fields_are_keyword_only_with_defaults():
    plain = Topology((RED,), (Binding("h1", "r1", "red"),), ("h1",))
    assert plain.limits == () and plain.rules == ()
    with_qos = Topology((RED,), (), ("h1",), limits=[RateLimit(1, "h1", 5, tenant="red")],
                        rules=[QosRule(2, "red", 1, (), kbps=1), QosRule(3, "red", 2, (), kbps=1),
                               QosRule(4, "default", 2, (), kbps=1)])
    assert isinstance(with_qos.limits, tuple) and isinstance(with_qos.rules, tuple)
    # the same port may be limited on two hosts, a tenant on two hosts
    Topology((RED,), (), ("h1", "h2"),
             limits=(RateLimit(1, "h1", 1, port="p"), RateLimit(2, "h2", 1, port="p"),
                     RateLimit(3, "h1", 1, tenant="red"), RateLimit(4, "h2", 1, tenant="red")))


def test_local_tenants_leave_out_uplinks():
    topo = Topology((RED, BLUE), (Binding("h1", "up", "default", TRUNK, trunk=("red", "blue"),
                                          uplink=True), Binding("h1", "b1", "blue")), ("h1",))
    assert topo.tenants_on("h1") == {"default", "red", "blue"}
    assert topo.local_tenants("h1") == {"default", "blue"}          # docker0 link is default's


# --- the flows -----------------------------------------------------------------------------------
def test_table_layout():
    assert (CLASSIFY, POLICY, QOS, L2, FLOOD) == (0, 1, 2, 3, 4)
    learns = {a[1].table for f in LAB.state("h1").flows for i in f.instructions if i[0] == "apply"
              for a in i[1] if a[0] == "learn"}
    assert learns == {L2}


def test_sample_meters():
    assert LAB.state("h1").meters == {Meter(1, 10_000), Meter(2, 50_000, 1_000), Meter(3, 1_000),
                                   Meter(10, 2_000), Meter(12, 1_000, 100)}
    # h2: green's aggregate, red's rule meter; blue has no port on h2, r1 is not h2's
    assert LAB.state("h2").meters == {Meter(6, 7_000), Meter(10, 2_000)}


def test_sample_qos_flows_exactly():
    red, blue = RED.vni, BLUE.vni
    qos = {f for f in LAB.state("h1").flows if f.cookie == COOKIE_QOS}
    assert qos == {
        flow(POLICY, 10, {"metadata": (red, SENDER_MASK)}, [("meter", 2), ("goto", QOS)],
             COOKIE_QOS),
        flow(QOS, 1100, {"metadata": (red, SENDER_MASK), "eth_type": 0x0800, "ip_proto": 6,
                         "tcp_dst": 80},
             [("meter", 10), ("apply", (("set_field", "ip_dscp", 46),)), ("goto", L2)],
             COOKIE_QOS),
        flow(QOS, 1050, {"metadata": (red, SENDER_MASK), "eth_type": 0x0800,
                         "ipv4_dst": ("10.0.0.0", "255.255.255.0")},
             [("apply", (("set_field", "ip_dscp", 10), ("set_queue", 1))), ("goto", L2)],
             COOKIE_QOS),
        flow(QOS, 1100, {"metadata": (blue, SENDER_MASK), "eth_type": 0x0800},
             [("meter", 12), ("goto", L2)], COOKIE_QOS),
    }
    metered = {(dict(f.match)["in_port"], dict(f.match)["vlan_vid"]): f.instructions[0]
               for f in LAB.state("h1").flows if f.table == CLASSIFY and f.instructions
               and f.instructions[0][0] == "meter"}
    assert metered == {(1, 0): ("meter", 1), (4, 0x1000 | 10): ("meter", 3),
                       (4, 0x1000 | 20): ("meter", 3)}


def test_port_limit_only_adds_an_instruction_and_keeps_the_cookie():
    bare = {f.match: f for f in LAB.state("h1", _no_qos(TOPO)).flows if f.table == CLASSIFY}
    limited = {f.match: f for f in LAB.state("h1").flows if f.table == CLASSIFY}
    assert bare.keys() == limited.keys()
    for match, f in limited.items():
        extra = tuple(i for i in f.instructions if i not in bare[match].instructions)
        assert f.cookie == bare[match].cookie
        assert extra in ((), (("meter", 1),), (("meter", 3),))
    assert {limited[m].cookie for m in limited if dict(m).get("in_port") == 4} == {COOKIE_VLAN}


def test_limits_of_absent_ports_and_tenants_give_nothing():
    ghostless = replace(TOPO, limits=tuple(x for x in LIMITS if x.id not in (4, 5, 7)))
    for host in ("h1", "h2"):
        assert LAB.state(host) == LAB.state(host, ghostless)
    # bound but not plugged in yet: no classify flow, so no meter either
    state = desired_state("h1", TOPO, {k: v for k, v in PORTS["h1"].items() if k != "r1"},
                          TUNNELS["h1"])
    assert 1 not in {m.meter_id for m in state.meters}


def test_tenant_qos_needs_a_local_port_bound_plugged_or_not():
    ports = {k: v for k, v in PORTS["h1"].items() if k not in ("r1", "r1b", "trk")}
    state = desired_state("h1", TOPO, ports, TUNNELS["h1"])       # red's ports not up yet
    assert {2, 10} <= {m.meter_id for m in state.meters}
    without_red = replace(TOPO, bindings=tuple(b for b in TOPO.bindings
                                               if not (b.host == "h1" and "red" in b.tenants)))
    state = LAB.state("h1", without_red)
    assert {m.meter_id for m in state.meters} == {12}
    assert all(dict(f.match).get("metadata", (0, 0))[0] != RED.vni
               for f in state.flows if f.cookie == COOKIE_QOS)


def test_every_meter_instruction_has_its_meter_and_every_meter_a_flow():
    for host in ("h1", "h2"):
        state = LAB.state(host)
        used = {i[1] for f in state.flows for i in f.instructions if i[0] == "meter"}
        assert used == {m.meter_id for m in state.meters}


# --- forwarding with meters ----------------------------------------------------------------------
def test_a_limited_port_passes_exactly_its_meter():
    c = LAB.cluster()
    udp = ip(proto=17, dst="192.168.0.1", dport=53)      # matches no red rule
    assert c.meters_hit("h1", "r1", udp) == [("h1", 1), ("h1", 2)]     # port, then red's
    assert c.meters_hit("h1", "r1", ARP) == [("h1", 1), ("h1", 2)]     # limits meter all
    assert c.meters_hit("h1", "r1b", udp) == [("h1", 2)]
    assert c.meters_hit("h1", "trk", udp, vlan=10) == [("h1", 3), ("h1", 2)]
    assert c.meters_hit("h1", "trk", udp, vlan=20) == [("h1", 3), ("h1", 12)]   # blue's rule
    assert c.meters_hit("h1", "trk", ARP, vlan=20) == [("h1", 3)]      # rules: IPv4 only
    assert c.meters_hit("h1", "trk", udp, vlan=30) == []               # dropped on entry
    assert c.meters_hit("h1", "b1", ARP) == []
    assert c.meters_hit("h1", DOCKER_LINK_PORT, udp) == []


def test_a_rule_meters_and_remarks_what_it_matches():
    c = LAB.cluster()
    web = ip(dst="192.168.0.9", dport=80, dscp=3)
    assert c.meters_hit("h1", "r1b", web) == [("h1", 2), ("h1", 10)]
    sent = c.trace("h1", "r1b", web)[0]
    assert {(h, p) for h, p, _ in sent} == {("h1", "r1"), ("h1", "trk"), ("h2", "r2")}
    assert {f["ip_dscp"] for _, _, f in sent} == {46}                  # remarked once, everywhere
    # both red rules match: the higher priority one alone applies (no queue, DSCP 46)
    both = ip(dst="10.0.0.5", dport=80)
    sent = c.trace("h1", "r1b", both)[0]
    assert {(f["ip_dscp"], f.get("queue")) for _, _, f in sent} == {(46, None)}
    # only the lower one: remark 10, queue 1 on this host, no meter
    low = ip(dst="10.0.0.5", dport=22, dscp=7)
    assert c.meters_hit("h1", "r1b", low) == [("h1", 2)]
    sent = c.trace("h1", "r1b", low)[0]
    assert {(h, f["ip_dscp"], f.get("queue")) for h, _, f in sent} == {
        ("h1", 10, 1), ("h2", 10, None)}                              # queues stay on the host


def test_a_frame_matching_no_rule_keeps_its_dscp_and_is_not_rule_metered():
    c = LAB.cluster()
    other = ip(dst="192.168.0.9", dport=22, dscp=12)
    assert c.meters_hit("h1", "r1b", other) == [("h1", 2)]
    assert {f["ip_dscp"] for _, _, f in c.trace("h1", "r1b", other)[0]} == {12}
    # the default tenant has no rule at all
    assert {f["ip_dscp"] for _, _, f in c.trace("h1", DOCKER_LINK_PORT, other)[0]} == {12}


def test_frames_from_tunnels_are_never_metered_by_limits_or_rules():
    c = LAB.cluster()
    web = ip(dst="192.168.0.9", dport=80)
    assert c.meters_hit("h2", "r2", web) == [("h2", 10)]          # red's rule on h2, not h1's
    h1 = c.hosts["h1"].table
    frame = {**web, "tunnel_id": RED.vni}                        # red's rules match it
    assert h1.meters_hit(10, frame) == []
    assert {sent["ip_dscp"] for _, sent in h1.outputs(10, frame)} == {0}
    assert h1.outputs(10, {**web, "tunnel_id": BLUE.vni}) == []   # h2 has no blue: no entry
    # green (aggregate limit 6 and a rule on h2) from h1's side never reaches h2's meters
    udp = ip(proto=17)
    assert c.meters_hit("h2", "g2", udp) == [("h2", 6)]
    assert c.hosts["h2"].table.meters_hit(10, {**udp, "tunnel_id": GREEN.vni}) == []


def test_frames_from_an_uplink_pass_only_a_limit_naming_the_uplink():
    topo = replace(TOPO, bindings=(*TOPO.bindings,
                                   Binding("h1", "up", "default", TRUNK, trunk=("red", "blue"),
                                           uplink=True)),
                   limits=(*LIMITS, RateLimit(20, "h1", 9_000, port="up")))
    ports = {**PORTS, "h1": {**PORTS["h1"], "up": 6}}
    table = FakeOFTable(desired_state("h1", topo, ports["h1"], TUNNELS["h1"]))
    web = ip(dst="192.168.0.9", dport=80, dscp=5)
    assert table.meters_hit(6, {**web, "vlan_vid": 10}) == [20]
    assert table.meters_hit(6, {**web, "vlan_vid": 20}) == [20]
    assert {s["ip_dscp"] for _, s in table.outputs(6, {**web, "vlan_vid": 10})} == {5}
    # the same frame from a local trunk of red is red's: aggregate and rule
    assert table.meters_hit(4, {**web, "vlan_vid": 10}) == [3, 2, 10]
    # forwarding is a trunk's: red from the uplink reaches red's ports, tagged on trunks
    assert {(p, v) for p, _, v in table.forward_frames(6, {**web, "vlan_vid": 10})} == {
        (1, None), (2, None), (4, 10), (10, None)}
    (classify,) = [f for f in desired_state("h1", topo, ports["h1"], TUNNELS["h1"]).flows
                   if dict(f.match) == {"in_port": 6, "vlan_vid": 0x1000 | 10}]
    assert ("write_metadata", RED.vni | FROM_UPLINK, SENDER_MASK) in classify.instructions


def test_a_tenant_only_on_the_uplink_has_no_qos_on_that_host():
    gold = Tenant("gold", 400, vlan=40)
    topo = Topology((RED, gold), (Binding("h1", "up", "default", TRUNK, trunk=("red", "gold"),
                                          uplink=True), Binding("h1", "r1", "red"),
                                  Binding("h2", "g2", "gold")), ("h1", "h2"),
                    limits=(RateLimit(1, "h1", 100, tenant="gold"),
                            RateLimit(2, "h2", 100, tenant="gold")),
                    rules=(QosRule(3, "gold", 1, (), kbps=5),))
    h1 = desired_state("h1", topo, {"up": 1, "r1": 2}, {})
    assert not h1.meters and not [f for f in h1.flows if f.cookie == COOKIE_QOS]
    assert FakeOFTable(h1).meters_hit(1, {**ip(), "vlan_vid": 40}) == []
    h2 = desired_state("h2", topo, {"g2": 1}, {})
    assert {m.meter_id for m in h2.meters} == {2, 3}


def test_non_uplink_classify_flows_are_unchanged_by_the_uplink_bit():
    """Only uplinks write FROM_UPLINK: every other port's classify flow is as before QoS."""
    for f in LAB.state("h1").flows:
        for i in f.instructions:
            if i[0] == "write_metadata":
                assert i[2] == TENANT_MASK and not i[1] & FROM_UPLINK


# --- changes and removal -------------------------------------------------------------------------
def test_removing_all_qos_leaves_no_meter_and_no_qos_flow_and_the_diff_removes_them():
    for host in ("h1", "h2"):
        with_qos, bare = LAB.state(host), LAB.state(host, _no_qos(TOPO))
        assert not bare.meters and not {f for f in bare.flows if f.cookie == COOKIE_QOS}
        assert not [i for f in bare.flows for i in f.instructions if i[0] == "meter"]
        d = diff(bare, with_qos)
        assert set(d.delete_meters) == with_qos.meters
        assert not d.add_meters and not d.modify_meters
        assert set(d.delete_flows) == {f for f in with_qos.flows if f.cookie == COOKIE_QOS}
        # port-limited classify flows are replaced in place, without their meter
        assert {f.table for f in d.add_flows} <= {CLASSIFY}
        assert all(f in bare.flows for f in d.add_flows)
        assert not (d.add_groups or d.modify_groups or d.delete_groups)
        assert apply_delta(with_qos, d) == bare
        back = diff(with_qos, bare)
        assert set(back.add_meters) == with_qos.meters and not back.delete_flows
        assert apply_delta(bare, back) == with_qos


def test_changing_a_rate_sends_one_meter_mod_and_no_flow_mod():
    faster = replace(TOPO, limits=(replace(LIMITS[0], kbps=20_000), *LIMITS[1:]),
                     rules=(replace(RULES[0], kbps=4_000, burst_kb=50), *RULES[1:]))
    d = diff(LAB.state("h1", faster), LAB.state("h1"))
    assert d == Delta(modify_meters=(Meter(1, 20_000), Meter(10, 4_000, 50)))


def test_changing_a_rules_dscp_changes_one_flow():
    remark = replace(TOPO, rules=(replace(RULES[0], set_dscp=34), *RULES[1:]))
    d = diff(LAB.state("h1", remark), LAB.state("h1"))
    assert not d.delete_flows and len(d.add_flows) == 1 and not d.modify_meters
    assert d.add_flows[0].instructions[1] == ("apply", (("set_field", "ip_dscp", 34),))


def test_a_rule_losing_its_meter_drops_the_meter_after_the_flow_changes():
    no_meter = replace(TOPO, rules=(replace(RULES[0], kbps=None), *RULES[1:]))
    d = diff(LAB.state("h1", no_meter), LAB.state("h1"))
    assert d.delete_meters == (Meter(10, 2_000),) and len(d.add_flows) == 1
    assert d.add_flows[0].instructions[0] == ("apply", (("set_field", "ip_dscp", 46),))


# --- flows.py: meters in the diff ----------------------------------------------------------------
def test_diff_meters_add_modify_delete_and_ownership():
    have = SwitchState(meters=frozenset({Meter(1, 10), Meter(2, 20), Meter(3, 30, 5),
                                         Meter(0xFFFFFFFD, 1)}))
    want = SwitchState(meters=frozenset({Meter(2, 20), Meter(3, 30, 6), Meter(4, 40)}))
    d = diff(want, have)
    assert (d.add_meters, d.modify_meters, d.delete_meters) == (
        (Meter(4, 40),), (Meter(3, 30, 6),), (Meter(1, 10),))
    assert not d.empty and Delta(delete_meters=(Meter(1, 1),)).empty is False
    assert diff(want, want).empty
    assert apply_delta(have, d).meters == want.meters | {Meter(0xFFFFFFFD, 1)}
    assert owns_meter(1) and owns_meter(65535)
    assert not owns_meter(0) and not owns_meter(65536) and not owns_meter(0xFFFFFFFD)
    # a meter read back with a config weft does not write is modified, not kept
    odd = SwitchState(meters=frozenset({Meter(2, 20, unknown="pktps")}))
    assert diff(want, odd).modify_meters == (Meter(2, 20),)


def test_learned_flows_left_in_a_renumbered_table_are_deleted():
    """Before QoS, L2 was table 2; flows the switch learned there would now sit in QOS,
    in front of L2.  Learned flows in L2 stay; with nothing learning, all stay."""
    desired = LAB.state("h1")
    match = {"metadata": (RED.vni, TENANT_MASK), "eth_dst": MAC_POOL[0]}
    old = flow(2, 10, match, [("apply", (("output", 1),))], COOKIE_LEARNED, 300)
    new = flow(L2, 10, match, [("apply", (("output", 1),))], COOKIE_LEARNED, 300)
    actual = SwitchState(desired.flows | {old, new}, desired.groups, desired.meters)
    d = diff(desired, actual)
    assert d.delete_flows == (old,) and not d.add_flows
    assert new in apply_delta(actual, d).flows and old not in apply_delta(actual, d).flows
    skeleton = desired_state("h1", Topology(), {}, {})
    assert diff(skeleton, SwitchState(skeleton.flows | {old, new})).delete_flows == ()


# --- ofmsg: meters, set_queue, ip_dscp on the wire ---------------------------------------------
def config_echo(m: Meter) -> object:
    """What a meter-config reply carries for the meter this meter-mod installs."""
    mod = meter_mod(DP, m, "add")
    bands = _wire(mod)[ofp.OFP_METER_MOD_SIZE:]
    head = struct.pack(ofp.OFP_METER_CONFIG_PACK_STR, ofp.OFP_METER_CONFIG_SIZE + len(bands),
                       mod.flags, mod.meter_id)
    return ofpp.OFPMeterConfigStats.parser(head + bands, 0)


@pytest.mark.parametrize("m", [Meter(1, 10_000), Meter(2, 50_000, 1_000), Meter(65535, 1),
                               Meter(7, 100_000_000, 10_000_000), Meter(8, 1_000, pktps=True),
                               Meter(9, 1_000, 50, pktps=True)])
def test_meters_read_back_equal(m):
    assert meter_from_config(config_echo(m)) == m
    assert meters_from_config([config_echo(m)]) == {m}


def test_meter_mod_flags_and_band():
    mod = meter_mod(DP, Meter(3, 5_000), "add")
    _wire(mod)
    assert (mod.command, mod.flags, mod.meter_id) == (ofp.OFPMC_ADD,
                                                      ofp.OFPMF_KBPS | ofp.OFPMF_STATS, 3)
    (band,) = mod.bands
    assert (type(band), band.rate, band.burst_size) == (ofpp.OFPMeterBandDrop, 5_000, 0)
    mod = meter_mod(DP, Meter(3, 5_000, 64), "modify")
    assert (mod.command, mod.flags) == (
        ofp.OFPMC_MODIFY, ofp.OFPMF_KBPS | ofp.OFPMF_STATS | ofp.OFPMF_BURST)
    assert mod.bands[0].burst_size == 64
    delete = meter_mod(DP, Meter(3, 5_000, 64), "delete")
    _wire(delete)
    assert (delete.command, delete.meter_id, delete.bands) == (ofp.OFPMC_DELETE, 3, [])
    with pytest.raises(ValueError):
        meter_mod(DP, Meter(3, 1), "wipe")


@pytest.mark.parametrize("echoed_burst", [0, 5_000, 1])
def test_burst_size_without_the_burst_flag_is_no_burst(echoed_burst):
    """OVS may echo 0 or a size of its choosing when weft sent no burst flag."""
    entry = ofpp.OFPMeterConfigStats(flags=ofp.OFPMF_KBPS | ofp.OFPMF_STATS, meter_id=4,
                                     bands=[ofpp.OFPMeterBandDrop(5_000, echoed_burst)])
    assert meter_from_config(entry) == Meter(4, 5_000)


@pytest.mark.parametrize("flags, bands", [
    (ofp.OFPMF_KBPS | ofp.OFPMF_PKTPS | ofp.OFPMF_STATS, [ofpp.OFPMeterBandDrop(5_000, 0)]),
    (ofp.OFPMF_STATS, [ofpp.OFPMeterBandDrop(5_000, 0)]),                        # no unit
    (ofp.OFPMF_PKTPS, [ofpp.OFPMeterBandDrop(5_000, 0)]),                        # no stats
    (ofp.OFPMF_KBPS, [ofpp.OFPMeterBandDrop(5_000, 0)]),                         # no stats
    (ofp.OFPMF_KBPS | ofp.OFPMF_STATS | ofp.OFPMF_BURST, [ofpp.OFPMeterBandDrop(5_000, 0)]),
    (ofp.OFPMF_KBPS | ofp.OFPMF_STATS, [ofpp.OFPMeterBandDscpRemark(5_000, 0, 1)]),
    (ofp.OFPMF_KBPS | ofp.OFPMF_STATS, [ofpp.OFPMeterBandDrop(5_000, 0)] * 2),
    (ofp.OFPMF_KBPS | ofp.OFPMF_STATS, []),
])
def test_meter_configs_weft_does_not_write_never_compare_equal(flags, bands):
    got = meter_from_config(ofpp.OFPMeterConfigStats(flags=flags, meter_id=4, bands=bands))
    assert got.meter_id == 4 and got.unknown
    assert got != Meter(4, 5_000) and diff(SwitchState(meters=frozenset({Meter(4, 5_000)})),
                                           SwitchState(meters=frozenset({got}))).modify_meters


@pytest.mark.parametrize("f", sorted((f for h in ("h1", "h2") for f in LAB.state(h).flows),
                                     key=repr), ids=lambda f: f"t{f.table}p{f.priority}")
def test_every_qos_sample_flow_reads_back_equal(f):
    assert flow_from_stats(stats_echo(f)) == f


def test_qos_actions_and_matches_read_back_equal():
    f = flow(QOS, 1500, {"metadata": (5, SENDER_MASK), "eth_type": 0x0800, "ip_proto": 17,
                         "ipv4_src": ("10.1.0.0", "255.255.0.0"), "ipv4_dst": "192.168.1.1",
                         "udp_src": 53, "udp_dst": 5353, "ip_dscp": 63},
             [("meter", 65535), ("apply", (("set_field", "ip_dscp", 0), ("set_queue", 7))),
              ("goto", L2)], COOKIE_QOS)
    assert flow_from_stats(stats_echo(f)) == f
    # a /32 written as a mask is a plain address, host bits under a mask are cleared
    assert flow(QOS, 1, {"ipv4_src": ("10.0.0.1", "255.255.255.255"),
                         "ipv4_dst": ("10.0.0.77", "255.255.255.0")}, (), 0).match == (
        ("ipv4_dst", ("10.0.0.0", "255.255.255.0")), ("ipv4_src", "10.0.0.1"))


# --- the fake switch's QoS model -----------------------------------------------------------------
def test_fake_refuses_a_missing_meter_and_dscp_on_non_ip():
    meterless = SwitchState(frozenset({flow(0, 1, {}, [("meter", 9), ("goto", 1)], 0)}))
    with pytest.raises(FakeSwitchError):
        FakeOFTable(meterless).forward(1, ARP)
    remark = SwitchState(frozenset({flow(0, 1, {}, [("apply", (("set_field", "ip_dscp", 1),
                                                               ("output", 2)))], 0)}))
    with pytest.raises(FakeSwitchError):
        FakeOFTable(remark).forward(1, ARP)
    assert {s["ip_dscp"] for _, s in FakeOFTable(remark).outputs(1, ip())} == {1}


def test_fake_ip_fields_need_their_prerequisites():
    t = FakeOFTable(SwitchState(frozenset({
        flow(0, 3, {"tcp_dst": 80}, [("apply", (("output", 1),))], 0),
        flow(0, 2, {"ipv4_dst": ("10.0.0.0", "255.255.255.0")}, [("apply", (("output", 2),))], 0),
        flow(0, 1, {}, [("apply", (("output", 3),))], 0)})))
    assert t.forward(9, ip(dport=80)) == {(1, None)}
    assert t.forward(9, ip(proto=17, dport=80)) == {(2, None)}          # udp_dst, not tcp_dst
    assert t.forward(9, ip(proto=17, dst="10.0.1.1")) == {(3, None)}
    # ipv4_* need IPv4; TCP/UDP ports need ip_proto only, which IPv6 frames have too (OVS)
    assert t.forward(9, {**ip(proto=99), "eth_type": 0x86DD}) == {(3, None)}   # not IPv4
    assert t.forward(9, {**ip(dport=80), "eth_type": 0x86DD}) == {(1, None)}   # IPv6 TCP
    assert t.forward(9, {**ip(dport=80), "eth_type": 0x0806}) == {(3, None)}   # not IP
    # behind a tag OVS did not parse, nothing of the IP header is visible
    assert t.forward(9, {**ip(dport=80), "vlan_vid": 5, "vlans": (6,)}) == {(3, None)}


# --- properties with random QoS ------------------------------------------------------------------
def _rule_hits(rule: QosRule, pkt: dict) -> bool:
    """A reference reading of the user-level match, independent of ``QosRule.oxm``."""
    m = dict(rule.match)
    if pkt.get("eth_type") != 0x0800:
        return False
    proto = {"tcp": 6, "udp": 17, "icmp": 1}.get(m.get("ip_proto"), m.get("ip_proto"))
    if proto is not None and pkt["ip_proto"] != proto:
        return False
    for key, field in (("src", "ipv4_src"), ("dst", "ipv4_dst")):
        if key in m and ipaddress.ip_address(pkt[field]) not in ipaddress.ip_network(m[key]):
            return False
    l4 = {6: "tcp", 17: "udp"}.get(proto)
    for key, end in (("src_port", "src"), ("dst_port", "dst")):
        if key in m and pkt.get(f"{l4}_{end}") != m[key]:
            return False
    return "dscp" not in m or pkt["ip_dscp"] == m["dscp"]


def _expected(lab: Lab, host: str, port: str, tenant: str | None, pkt: dict
              ) -> tuple[list[tuple[str, int]], QosRule | None]:
    """(meters a frame sent into ``host``/``port`` as ``tenant`` passes, the rule applied)."""
    if tenant is None:
        return [], None
    topo = lab.topo
    binding = next(b for b in topo.bindings_on(host) if b.port == port)
    meters = [(host, x.id) for x in topo.limits if x.host == host and x.port == port]
    if binding.uplink:
        return meters, None
    meters += [(host, x.id) for x in topo.limits if x.host == host and x.tenant == tenant]
    hits = [r for r in topo.rules if r.tenant == tenant and _rule_hits(r, pkt)]
    rule = max(hits, key=lambda r: r.priority, default=None)
    if rule is not None and rule.kbps is not None:
        meters.append((host, rule.id))
    return meters, rule


ip_frames = st.builds(
    ip, src=st.sampled_from([n.split("/")[0] for n in QOS_NETS[:2]] + ["10.0.5.5", "192.168.0.7"]),
    dst=st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.9.9", "192.168.0.1", "172.16.0.1"]),
    proto=st.sampled_from([6, 17, 1, 47]), sport=st.sampled_from(QOS_PORTS),
    dport=st.sampled_from(QOS_PORTS), dscp=st.sampled_from(QOS_DSCPS),
    eth_dst=st.sampled_from([BCAST, UNKNOWN, *MAC_POOL[:2]]))


@settings(max_examples=60, deadline=None)
@given(labs(qos=True), st.lists(ip_frames, min_size=1, max_size=3))
def test_meters_dscp_and_queues_follow_the_rules(lab, frames):
    """From every port, with every VLAN: exactly the expected meters (port limit, tenant
    aggregate, highest matching rule's meter; on the sending host only), every copy
    leaves with the rule's DSCP (or its own), the rule's queue on the sending host."""
    cluster = lab.cluster()
    for pkt in frames:
        for host, port, vlan, tenant in lab.senders():
            sent, meters = cluster.trace(host, port, {**pkt, "eth_src": lab.src(host, port)},
                                         vlan)
            want, rule = _expected(lab, host, port, tenant, pkt)
            assert meters == want, (host, port, vlan, tenant, pkt)
            dscp = pkt["ip_dscp"] if rule is None or rule.set_dscp is None else rule.set_dscp
            queue = None if rule is None else rule.queue
            for at, _, frame in sent:
                assert frame["ip_dscp"] == dscp
                assert frame.get("queue") == (queue if at == host else None)


@settings(max_examples=60, deadline=None)
@given(labs(qos=True), st.lists(ip_frames, min_size=1, max_size=2))
def test_ip_frames_never_cross_tenants_with_qos(lab, frames):
    cluster = lab.cluster()
    for pkt in frames:
        for host, port, vlan, tenant in lab.senders():
            allowed = {d for d in lab.carriers(tenant) if d[:2] != (host, port)}
            assert set(cluster.frames(host, port, pkt, vlan=vlan)) <= allowed


@settings(max_examples=50, deadline=None)
@given(labs(qos=True))
def test_qos_state_is_consistent_and_removable(lab):
    """Meters and meter instructions match one to one; QoS gone = no meter, no QoS flow;
    the diff both ways lands exactly on the other state; non-QoS tables are untouched."""
    bare_topo = _no_qos(lab.topo)
    for host in lab.topo.hosts:
        args = (lab.ports[host], lab.tunnels[host])
        with_qos = desired_state(host, lab.topo, *args)
        bare = desired_state(host, bare_topo, *args)
        used = {i[1] for f in with_qos.flows for i in f.instructions if i[0] == "meter"}
        assert used == {m.meter_id for m in with_qos.meters}
        assert all(owns_meter(m.meter_id) for m in with_qos.meters)
        assert not bare.meters and all(f.cookie != COOKIE_QOS for f in bare.flows)
        assert {f for f in with_qos.flows if f.table not in (CLASSIFY, POLICY, QOS)} == {
            f for f in bare.flows if f.table not in (CLASSIFY, POLICY, QOS)}
        assert with_qos.groups == bare.groups
        for a, b in ((with_qos, bare), (bare, with_qos)):
            assert apply_delta(b, diff(a, b)) == a
            assert diff(a, a).empty
        for f in with_qos.flows:
            if f.cookie == COOKIE_QOS:
                assert f.table in (POLICY, QOS)
                metadata = dict(f.match)["metadata"]
                assert metadata[1] == SENDER_MASK and not metadata[0] & (FROM_TUNNEL | FROM_UPLINK)
            assert feature_of(f.cookie) in {"base", "isolation", "endpoint", "vlan", "qos",
                                            "portsec"}
        assert {f.cookie for f in with_qos.flows if f.priority == 0} == {COOKIE_BASE}
        assert {f.cookie for f in with_qos.flows if f.table == CLASSIFY and f.priority} <= {
            COOKIE_ISOLATION, COOKIE_VLAN, COOKIE_PORTSEC}


# the isolation properties of tests.unit.test_pipeline, run again with random QoS in place
@settings(max_examples=50, deadline=None)
@given(labs(qos=True))
def test_no_frame_ever_crosses_tenants_with_qos(lab):
    base.test_no_frame_ever_crosses_tenants.hypothesis.inner_test(lab)


@settings(max_examples=40, deadline=None)
@given(labs(qos=True))
def test_broadcast_reaches_every_other_member_exactly_once_with_qos(lab):
    base.test_broadcast_reaches_every_other_member_exactly_once.hypothesis.inner_test(lab)


@settings(max_examples=40, deadline=None)
@given(labs(qos=True))
def test_unicast_to_a_known_mac_reaches_exactly_its_port_with_qos(lab):
    base.test_unicast_to_a_known_mac_reaches_exactly_its_port.hypothesis.inner_test(lab)


@settings(max_examples=25, deadline=None)
@given(labs(qos=True))
def test_learning_keeps_unicast_exact_and_tenants_apart_with_qos(lab):
    base.test_learning_keeps_unicast_exact_and_tenants_apart.hypothesis.inner_test(lab)


# --- packet-rate limits (pps) ------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, field", [
    (dict(kbps=1_000, pps=1_000), "pps"),                # one unit per meter
    (dict(kbps=None), "kbps"),                           # no rate at all
    (dict(kbps=None, pps=1_000, burst_kb=10), "burst_kb"),
    (dict(kbps=1_000, burst_pkts=10), "burst_pkts"),
    (dict(kbps=None, pps=0), "pps"),
])
def test_a_rate_limit_has_exactly_one_unit_and_errors_name_the_field(kwargs, field):
    args = {"burst_kb": 0, **kwargs}
    with pytest.raises(ModelError) as e:
        RateLimit(1, "h1", args.pop("kbps"), args.pop("burst_kb"), port="p", **args)
    assert e.value.field == field


def test_a_pps_limit_gives_a_pktps_meter_on_the_same_flows():
    binding = Binding("h1", "r1", "red")
    by_bytes = Topology((RED,), (binding,), ("h1",),
                        limits=(RateLimit(1, "h1", 64, port="r1"),))
    by_pkts = Topology((RED,), (binding,), ("h1",),
                       limits=(RateLimit(1, "h1", None, port="r1", pps=1_000, burst_pkts=100),
                               RateLimit(2, "h1", None, tenant="red", pps=5_000)))
    kb, pk = LAB.state("h1", by_bytes), LAB.state("h1", by_pkts)
    assert kb.meters == {Meter(1, 64)}
    assert pk.meters == {Meter(1, 1_000, 100, pktps=True), Meter(2, 5_000, pktps=True)}
    mod = meter_mod(DP, Meter(1, 1_000, 100, pktps=True), "add")
    assert mod.flags == ofp.OFPMF_PKTPS | ofp.OFPMF_STATS | ofp.OFPMF_BURST
    assert (mod.bands[0].rate, mod.bands[0].burst_size) == (1_000, 100)
    # the port's flows are the same (meter:1), only the meter's unit differs
    assert {f for f in kb.flows if ("meter", 1) in f.instructions} == \
        {f for f in pk.flows if ("meter", 1) in f.instructions}
    # a kbps meter on the switch where a pps one is wanted is modified, not kept
    assert diff(pk, SwitchState(pk.flows, pk.groups, frozenset(
        {Meter(1, 1_000, 100), Meter(2, 5_000, pktps=True)}))).modify_meters
