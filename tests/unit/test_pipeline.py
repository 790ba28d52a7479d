"""The pure core: cookies, flow normal form, diff, the pipeline, and the fake switch.

Forwarding is asserted by running frames through ``tests.fakeoftable`` (one
switch, or a cluster joined by tunnels), including hypothesis properties that
no frame ever crosses tenants.
"""
from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings, strategies as st

from controller.flows import (
    COOKIE_ACL, COOKIE_BASE, COOKIE_ENDPOINT, COOKIE_ISOLATION, COOKIE_LEARNED, COOKIE_PREFIX,
    COOKIE_PORTSEC, COOKIE_QOS, COOKIE_VLAN, Flow, Group, LearnSpec, SwitchState, diff,
    feature_of, flow,
    owns_group,
)
from controller.model import (
    DEFAULT_TENANT, DOCKER_LINK_PORT, MAX_VNI, Binding, Tenant,
    Topology,
)
from controller.pipeline import (
    CLASSIFY, FIB, FLOOD, FROM_TUNNEL, GATEWAY, L2, POLICY, QOS, ROUTED, TENANT_MASK, VNI_MASK,
    desired_state, flood_group_ids,
)
from tests.fakeoftable import OFPP_IN_PORT, FakeOFTable, FakeSwitchError
from tests.unit.topologies import MAC_POOL, UNKNOWN, Lab, labs, mesh_tunnels

BCAST = "ff:ff:ff:ff:ff:ff"
MCAST = "01:00:5e:00:00:fb"


def _frame(src: str, dst: str, tunnel_id: int | None = None) -> dict:
    frame = {"eth_src": src, "eth_dst": dst}
    return frame if tunnel_id is None else {**frame, "tunnel_id": tunnel_id}


# --- cookies --------------------------------------------------------------------------
def test_each_feature_has_its_own_cookie():
    cookies = {COOKIE_BASE: "base", COOKIE_ISOLATION: "isolation", COOKIE_ENDPOINT: "endpoint",
               COOKIE_LEARNED: "learned", COOKIE_VLAN: "vlan", COOKIE_QOS: "qos", COOKIE_ACL: "acl"}
    assert len(set(cookies)) == len(cookies)
    for cookie, name in cookies.items():
        assert cookie >> 48 == 0x5746
        assert feature_of(cookie) == name
        assert feature_of(cookie | 0xABCD) == name       # low bits are free for the feature


@pytest.mark.parametrize("cookie", [0, 0x1234, 0x5745 << 48 | 2 << 40,
                                    COOKIE_PREFIX, COOKIE_PREFIX | 0xFF << 40])
def test_foreign_or_unknown_cookie_is_not_ours(cookie):
    assert feature_of(cookie) is None


# --- flow normal form -------------------------------------------------------------------
def test_flow_normal_form_makes_equal_flows_equal():
    a = flow(2, 100, {"metadata": (0x1_0000_0007, 0xFFFFFF), "eth_dst": "AA:BB:CC:DD:EE:FF"},
             [("goto", 3), ("write_metadata", 0xFF07, 0xFF), ("apply", ())], COOKIE_BASE)
    b = flow(2, 100, {"eth_dst": "aa:bb:cc:dd:ee:ff", "metadata": (7, 0xFFFFFF)},
             [("write_metadata", 7, 0xFF), ("goto", 3)], COOKIE_BASE)
    assert a == b
    assert a.match == (("eth_dst", "aa:bb:cc:dd:ee:ff"), ("metadata", (7, 0xFFFFFF)))
    assert a.instructions == (("write_metadata", 7, 0xFF), ("goto", 3))


def test_flow_full_mask_is_an_exact_match():
    f = flow(0, 1, {"tunnel_id": (5, (1 << 64) - 1),
                    "eth_src": ("02:00:00:00:00:01", "ff:ff:ff:ff:ff:ff"),
                    "eth_dst": ("01:00:00:00:00:FF", "01:00:00:00:00:00")}, (), COOKIE_BASE)
    assert dict(f.match) == {"tunnel_id": 5, "eth_src": "02:00:00:00:00:01",
                             "eth_dst": ("01:00:00:00:00:00", "01:00:00:00:00:00")}


# --- diff -------------------------------------------------------------------------------
def _f(table: int, prio: int, port: int, cookie: int = COOKIE_ISOLATION, out: int = 1) -> Flow:
    return flow(table, prio, {"in_port": port}, [("apply", (("output", out),))], cookie)


def test_diff_of_equal_states_is_empty():
    s = SwitchState(frozenset({_f(0, 10, 1), _f(0, 10, 2)}),
                    frozenset({Group(2, "all", ((("output", 1),),))}))
    assert diff(s, s).empty


def test_diff_adds_missing_and_deletes_only_our_stale_flows():
    want = _f(0, 10, 1)
    stale, foreign = _f(0, 10, 2), _f(0, 10, 3, cookie=0x1234)
    learned = _f(2, 10, 4, cookie=COOKIE_LEARNED)
    d = diff(SwitchState(frozenset({want})), SwitchState(frozenset({stale, foreign, learned})))
    assert d.add_flows == (want,)
    assert d.delete_flows == (stale,)


def test_diff_replaces_a_changed_flow_by_add_only():
    old, new = _f(0, 10, 1, out=1), _f(0, 10, 1, out=2)
    d = diff(SwitchState(frozenset({new})), SwitchState(frozenset({old})))
    assert (d.add_flows, d.delete_flows) == ((new,), ())
    recookied = _f(0, 10, 1, cookie=COOKIE_ENDPOINT)
    d = diff(SwitchState(frozenset({recookied})), SwitchState(frozenset({new})))
    assert (d.add_flows, d.delete_flows) == ((recookied,), ())


def test_diff_never_needs_learned_flows():
    learned = _f(L2, 10, 1, cookie=COOKIE_LEARNED)
    assert diff(SwitchState(), SwitchState(frozenset({learned}))).empty


def test_diff_groups_add_modify_delete_ours_only():
    g1, g2, g2b, g3 = (Group(2, "all", ((("output", 1),),)), Group(3, "all", ((("output", 1),),)),
                       Group(3, "all", ((("output", 2),),)), Group(4, "all", ()))
    foreign = Group(0x7000_0000, "all", ())
    d = diff(SwitchState(groups=frozenset({g1, g2b})),
             SwitchState(groups=frozenset({g2, g3, foreign})))
    assert d.add_groups == (g1,)
    assert d.modify_groups == (g2b,)
    assert d.delete_groups == (g3,)
    assert not owns_group(foreign.group_id) and owns_group(flood_group_ids(MAX_VNI)[1])


def test_diff_is_deterministic():
    want = frozenset(_f(t, p, port) for t in range(3) for p in (0, 5) for port in range(4))
    shuffled = frozenset(sorted(want, key=repr))
    d = diff(SwitchState(want), SwitchState())
    assert d == diff(SwitchState(shuffled), SwitchState())
    assert [f.table for f in d.add_flows] == sorted(f.table for f in want)


# --- model ------------------------------------------------------------------------------
def test_topology_always_has_the_default_tenant_and_docker_link():
    topo = Topology(hosts=("h1",))
    assert topo.all_tenants == (DEFAULT_TENANT,)
    assert topo.bindings_on("h1") == (Binding("h1", DOCKER_LINK_PORT, "default"),)
    assert Binding("h", "p", "t", mac="AA:00:00:00:00:01").mac == "aa:00:00:00:00:01"


@pytest.mark.parametrize("kwargs", [
    dict(tenants=(Tenant("a", 5), Tenant("b", 5))),
    dict(tenants=(Tenant("a", 1),)),                                   # clashes with default
    dict(bindings=(Binding("h", "p", "nope"),)),
    dict(bindings=(Binding("h", "p", "default"), Binding("h", "p", "default"))),
    dict(bindings=(Binding("h", DOCKER_LINK_PORT, "default"),)),
    dict(bindings=(Binding("h", "p", "default", mac="02:00:00:00:00:01"),
                   Binding("h", "q", "default", mac="02:00:00:00:00:01"))),
])
def test_topology_rejects_inconsistent_input(kwargs):
    with pytest.raises(ValueError):
        Topology(**kwargs)


@pytest.mark.parametrize("bad", [lambda: Tenant("a", 0), lambda: Tenant("a", MAX_VNI + 1),
                                 lambda: Binding("h", "p", "t", mode="hybrid"),
                                 lambda: Binding("h", "p", "t", mac="01:00:00:00:00:01"),
                                 lambda: Binding("h", "p", "t", mac="zz")])
def test_model_values_validate(bad):
    with pytest.raises(ValueError):
        bad()


# --- pipeline, one switch ------------------------------------------------------------------
RED, BLUE = Tenant("red", 100), Tenant("blue", 200)
TOPO = Topology(
    tenants=(RED, BLUE),
    bindings=(Binding("h1", "r1", "red", mac="02:00:00:00:00:01"), Binding("h1", "b1", "blue"),
              Binding("h2", "r2", "red", mac="02:00:00:00:00:02"),
              Binding("h2", "b2", "blue", mac="02:00:00:00:00:01")),     # same MAC, other tenant
    hosts=("h1", "h2"))
R1_MAC = "02:00:00:00:00:01"
H1_PORTS = {"r1": 1, "b1": 2, DOCKER_LINK_PORT: 3, "tun-h2": 10, "stray": 7}
H1_TUNNELS = mesh_tunnels(TOPO.hosts)["h1"]
LAB = Lab(TOPO, {"h1": H1_PORTS}, {"h1": H1_TUNNELS})


def test_pipeline_skeleton_is_table_misses():
    flows = desired_state("h1", Topology(), {}, {}).flows
    misses = {f.table: f.instructions for f in flows if f.priority == 0}
    assert (CLASSIFY, POLICY, QOS, L2, FLOOD, GATEWAY, FIB, ROUTED) == tuple(range(8))
    assert misses == {CLASSIFY: (), POLICY: (("goto", QOS),), QOS: (("goto", L2),),
                      L2: (("goto", FLOOD),), FLOOD: (), GATEWAY: (), FIB: (), ROUTED: ()}
    assert {f.cookie for f in flows if f.priority == 0} == {COOKIE_BASE}
    # and POLICY drops anything still tagged after CLASSIFY, with or without trunks
    drops = {f.match: f.priority for f in flows if f.priority and f.cookie == COOKIE_VLAN}
    assert drops == {(("vlan_vid", (0x1000, 0x1000)),): 100,
                     (("eth_type", 0x8100),): 90, (("eth_type", 0x88A8),): 90}
    assert all(f.table == POLICY and not f.instructions
               for f in flows if f.priority and f.cookie == COOKIE_VLAN)
    # and CLASSIFY drops any multicast/broadcast source before it is learned
    (group_src,) = [f for f in flows if f.priority and f.cookie == COOKIE_PORTSEC]
    assert (group_src.table, group_src.instructions) == (CLASSIFY, ())


def test_classify_tags_tenant_and_learns():
    state = LAB.state("h1")
    (red,) = [f for f in state.flows if f.table == CLASSIFY
              and f.match == (("eth_src", R1_MAC), ("in_port", 1), ("vlan_vid", 0))]
    assert red.instructions[1:] == (("write_metadata", RED.vni, TENANT_MASK), ("goto", POLICY))
    learns = [a[1] for a in red.instructions[0][1]]
    assert {(s.metadata, s.output_in_port, s.load_tunnel_id) for s in learns} == {
        (RED.vni, True, False), (RED.vni | FROM_TUNNEL, True, False)}
    (tun,) = [f for f in state.flows
              if f.table == CLASSIFY and dict(f.match) == {"in_port": 10, "tunnel_id": RED.vni}]
    assert tun.instructions[1] == ("write_metadata", RED.vni | FROM_TUNNEL, TENANT_MASK)
    learns = [a[1] for a in tun.instructions[0][1]]
    assert {(s.metadata, s.output_in_port, s.load_tunnel_id) for s in learns} == {
        (RED.vni, True, True), (RED.vni | FROM_TUNNEL, False, False)}   # never relay


def test_absent_ports_and_tunnels_get_no_flows():
    state = desired_state("h1", TOPO, {"r1": 1}, H1_TUNNELS)   # tunnel port not up yet
    classify = {f.match for f in state.flows if f.table == CLASSIFY and f.priority
                and f.cookie != COOKIE_PORTSEC}
    assert classify == {(("eth_src", R1_MAC), ("in_port", 1), ("vlan_vid", 0))}
    only_r1 = ((("output", 1),),)
    groups = {g.group_id: g.buckets for g in state.groups}
    assert groups == dict.fromkeys(flood_group_ids(RED.vni), only_r1)
    assert all(g.buckets for g in LAB.state("h1").groups)


def test_tunnels_admit_only_tenants_both_ends_have():
    topo = Topology(tenants=(RED, BLUE), hosts=("h1", "h2"),
                    bindings=(Binding("h1", "r1", "red"), Binding("h1", "b1", "blue"),
                              Binding("h2", "r2", "red")))
    state = LAB.state("h1", topo)
    admitted = {dict(f.match)["tunnel_id"] for f in state.flows if "tunnel_id" in dict(f.match)}
    assert admitted == {DEFAULT_TENANT.vni, RED.vni}
    blue_flood = {g.group_id: g.buckets for g in state.groups}[flood_group_ids(BLUE.vni)[0]]
    assert blue_flood == ((("output", 2),),)          # no tunnel bucket toward a host without blue


def test_flood_groups_split_horizon():
    groups = {g.group_id: g for g in LAB.state("h1").groups}
    from_local, from_tunnel = flood_group_ids(RED.vni)
    assert groups[from_local].buckets == (
        (("output", 1),), (("set_field", "tunnel_id", RED.vni), ("output", 10)))
    assert groups[from_tunnel].buckets == ((("output", 1),),)


def test_single_switch_forwarding():
    table = FakeOFTable(LAB.state("h1"))
    # unicast to a static remote MAC goes only to its tunnel, tagged with the tenant's VNI
    assert table.forward(1, _frame(R1_MAC, "02:00:00:00:00:02")) == {(10, RED.vni)}
    # the same MAC from a tunnel is never relayed to another tunnel
    assert table.forward(10, _frame(UNKNOWN, "02:00:00:00:00:02", RED.vni)) == set()
    # blue's copy of red's MAC is blue's business: flood within blue
    assert table.forward(2, _frame(UNKNOWN, "02:00:00:00:00:01")) == {(10, BLUE.vni)}
    assert table.forward(10, _frame(UNKNOWN, BCAST, BLUE.vni)) == {(2, BLUE.vni)}
    assert table.forward(7, _frame(UNKNOWN, BCAST)) == set()        # unbound port
    assert table.forward(10, _frame(UNKNOWN, BCAST, 999)) == set()  # unknown VNI


# --- the fake switch itself -------------------------------------------------------------------
def _table(*flows: Flow, groups: tuple[Group, ...] = (), learn: bool = False) -> FakeOFTable:
    return FakeOFTable(SwitchState(frozenset(flows), frozenset(groups)), learn=learn)


def _out(*actions: tuple) -> list[tuple]:
    return [("apply", tuple(actions))]


def test_fake_priority_and_masked_match():
    t = _table(flow(0, 1, {}, _out(("output", 1)), 0),
               flow(0, 5, {"eth_dst": ("01:00:00:00:00:00", "01:00:00:00:00:00")},
                    _out(("output", 2)), 0),
               flow(0, 9, {"eth_dst": BCAST}, _out(("output", 3)), 0))
    assert t.forward(8, {"eth_dst": "02:00:00:00:00:01"}) == {(1, None)}
    assert t.forward(8, {"eth_dst": MCAST}) == {(2, None)}
    assert t.forward(8, {"eth_dst": BCAST}) == {(3, None)}
    assert _table().forward(8, {"eth_dst": BCAST}) == set()        # empty table: drop


def test_fake_goto_and_write_metadata_with_mask():
    t = _table(flow(0, 1, {}, [("write_metadata", 0xAB, 0xF0), ("goto", 2)], 0),
               flow(2, 1, {"metadata": 0xA0},
                    [("write_metadata", 0x1_0000_0000, 0x1_0000_0000), ("goto", 3)], 0),
               flow(3, 1, {"metadata": (0x1_0000_00A0, 0x1_0000_00FF)}, _out(("output", 4)), 0))
    assert t.forward(1, {}) == {(4, None)}


def test_fake_rejects_backward_goto_and_ambiguous_ties():
    with pytest.raises(FakeSwitchError):
        _table(flow(1, 1, {}, [("goto", 1)], 0), flow(0, 1, {}, [("goto", 1)], 0)).forward(1, {})
    with pytest.raises(FakeSwitchError):
        _table(flow(0, 1, {"in_port": 1}, (), 0),
               flow(0, 1, {"eth_dst": BCAST}, (), 0)).forward(1, {"eth_dst": BCAST})


def test_fake_group_buckets_copy_the_frame_and_in_port_is_suppressed():
    g = Group(7, "all", ((("output", 1),), (("set_field", "tunnel_id", 5), ("output", 2)),
                         (("output", 3),)))
    t = _table(flow(0, 1, {}, _out(("group", 7), ("output", 4)), 0), groups=(g,))
    assert t.forward(3, {}) == {(1, None), (2, 5), (4, None)}
    t2 = _table(flow(0, 1, {}, _out(("output", OFPP_IN_PORT)), 0))
    assert t2.forward(3, {}) == {(3, None)}


def test_fake_vlan_push_pop_and_match():
    t = _table(flow(0, 2, {"vlan_vid": 0x1000 | 10}, _out(("pop_vlan",), ("output", 1)), 0),
               flow(0, 1, {"vlan_vid": 0}, _out(("push_vlan", 0x8100),
                                                ("set_field", "vlan_vid", 0x1000 | 20),
                                                ("output", 2)), 0))
    (port, frame), = t.outputs(9, {"vlan_vid": 10})
    assert (port, frame["vlan_vid"]) == (1, None)
    (port, frame), = t.outputs(9, {})
    assert (port, frame["vlan_vid"]) == (2, 20)


def test_fake_learn_is_a_noop_unless_asked_and_never_seen_by_its_own_frame():
    spec = LearnSpec(table=1, priority=10, idle_timeout=300, cookie=COOKIE_LEARNED,
                     metadata=5, metadata_mask=VNI_MASK, load_tunnel_id=True)
    flows = (flow(0, 1, {}, [("apply", (("learn", spec),)), ("write_metadata", 5, VNI_MASK),
                             ("goto", 1)], 0),
             flow(1, 0, {}, _out(("output", 9)), 0))
    a, b = "02:00:00:00:00:01", "02:00:00:00:00:02"
    assert _table(*flows).forward(3, _frame(a, a)) == {(9, None)}
    t = _table(*flows, learn=True)
    assert t.forward(3, _frame(a, a, tunnel_id=5)) == {(9, 5)}    # not yet: learned after
    assert t.forward(4, _frame(b, a)) == {(3, 5)}


# --- the cluster: hypothesis properties -----------------------------------------------------------
DSTS = [BCAST, MCAST, UNKNOWN, *MAC_POOL]


@settings(max_examples=150, deadline=None)
@given(labs())
def test_no_frame_ever_crosses_tenants(lab):
    """Unicast, broadcast, multicast, unknown, from every port with every VLAN: a frame
    only reaches ports carrying its tenant, tagged as that port carries it; frames of
    no tenant (stray port, VLAN not on the trunk, tag on an access port) reach nothing."""
    cluster = lab.cluster()
    for host, port, vlan, tenant in lab.senders():
        allowed = {d for d in lab.carriers(tenant) if d[:2] != (host, port)}
        for dst in DSTS:
            for src in {UNKNOWN, lab.src(host, port)}:      # spoofed or not
                got = cluster.frames(host, port, _frame(src, dst), vlan=vlan)
                assert set(got) <= allowed, (host, port, vlan, tenant, dst)


@settings(max_examples=150, deadline=None)
@given(labs())
def test_broadcast_reaches_every_other_member_exactly_once(lab):
    cluster = lab.cluster()
    for host, port, vlan, tenant in lab.senders():
        if tenant is None:
            continue
        expected = Counter(d for d in lab.carriers(tenant) if d[:2] != (host, port))
        for dst in (BCAST, MCAST, UNKNOWN):
            got = Counter(cluster.frames(host, port, _frame(lab.src(host, port), dst),
                                         vlan=vlan))
            if vlan is None and lab.src(host, port) != UNKNOWN:
                # port security: the bound port's own MAC only
                assert cluster.frames(host, port, _frame(UNKNOWN, dst)) == []
            assert got == expected, (host, port, vlan, dst)


@settings(max_examples=150, deadline=None)
@given(labs())
def test_unicast_to_a_known_mac_reaches_exactly_its_port(lab):
    cluster = lab.cluster()
    for b in lab.topo.bindings:
        if not b.mac or b.port not in lab.ports[b.host]:
            continue
        for host, port, vlan, tenant in lab.senders():
            if tenant != b.tenant:
                continue
            expected = [] if (host, port) == (b.host, b.port) else [(b.host, b.port, None)]
            src = lab.src(host, port)
            assert cluster.frames(host, port, _frame(src, b.mac), vlan=vlan) == expected


@settings(max_examples=100, deadline=None)
@given(labs(), st.integers(0, MAX_VNI))
def test_a_frame_with_an_unknown_vni_is_dropped(lab, vni):
    if vni in {t.vni for t in lab.topo.all_tenants}:
        vni = 0
    cluster = lab.cluster()
    for host in lab.topo.hosts:
        for tunnel in lab.tunnels[host].values():
            for dst in DSTS:
                frame = _frame(UNKNOWN, dst, vni)
                assert cluster.hosts[host].table.forward(lab.ports[host][tunnel], frame) == set()


@settings(max_examples=100, deadline=None)
@given(labs())
def test_learning_keeps_unicast_exact_and_tenants_apart(lab):
    """Once a MAC is learned (behind an access port, or a trunk with or without a tag),
    frames to it reach exactly that port, re-tagged as it came; other tenants never."""
    senders = lab.senders()
    for host, port, vlan, tenant in senders:
        if tenant is None:
            continue
        cluster = lab.cluster(learn=True)                                # forget, next sender
        learned = lab.src(host, port, "06:00:00:00:00:01")
        cluster.frames(host, port, _frame(learned, BCAST), vlan=vlan)   # everyone learns it
        for i, (h, p, v, t) in enumerate(senders):
            got = cluster.frames(h, p, _frame(lab.src(h, p, f"06:00:00:00:01:{i:02x}"), learned),
                                 vlan=v)
            if t == tenant and (h, p) != (host, port):
                assert got == [(host, port, vlan)]
            else:
                assert (host, port, vlan) not in got and set(got) <= lab.carriers(t)


@settings(max_examples=100, deadline=None)
@given(labs())
def test_diff_keeps_foreign_flows_and_removes_stale_ones(lab):
    for host in lab.topo.hosts:
        desired = desired_state(host, lab.topo, lab.ports[host], lab.tunnels[host])
        assert diff(desired, desired).empty
        foreign = _f(CLASSIFY, 100, 4242, cookie=0xBEEF)
        stale = _f(CLASSIFY, 100, 4343)
        learned = _f(L2, 10, 4444, cookie=COOKIE_LEARNED)
        actual = SwitchState(desired.flows | {foreign, stale, learned}, desired.groups)
        d = diff(desired, actual)
        assert d.delete_flows == (stale,) and not d.add_flows
        if desired.flows:
            missing = sorted(desired.flows, key=repr)[0]
            without = SwitchState(desired.flows - {missing}, desired.groups)
            assert diff(desired, without).add_flows == (missing,)


# --- endpoint flows built directly in normal form ---------------------------------------------
@settings(max_examples=200, deadline=None)
@given(vni=st.integers(1, MAX_VNI), mac=st.sampled_from(MAC_POOL + ["02:ab:cd:ef:01:23"]),
       port=st.integers(1, 0xFFFFFF00))
def test_endpoint_flows_are_in_flow_normal_form(vni, mac, port):
    """The pipeline's fast endpoint flows equal what ``flow()`` makes of the same intent
    (so they diff equal to what a switch echoes)."""
    from controller.pipeline import L2, tenant_match
    from controller.pipeline.base import to_tunnel as _to_tunnel
    from controller.pipeline.l2 import _endpoint_local, _endpoint_remote
    assert _endpoint_local(vni, mac, port) == flow(
        L2, 100, {**tenant_match(vni), "eth_dst": mac.upper()},
        [("apply", (("output", port),))], COOKIE_ENDPOINT)
    assert _endpoint_remote(vni, mac, port) == [
        flow(L2, 100, {**tenant_match(vni, from_tunnel=False), "eth_dst": mac},
             [("apply", _to_tunnel(vni, port))], COOKIE_ENDPOINT),
        flow(L2, 100, {**tenant_match(vni, from_tunnel=True), "eth_dst": mac}, (),
             COOKIE_ENDPOINT)]
