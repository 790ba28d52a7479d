"""802.1Q trunk ports in the pure core: model, flows, forwarding, and minimal deltas.

A tenant's VLAN on a trunk is its VNI in the tunnels and the same VLAN on every
other trunk; access ports never see a tag; VLANs not allowed on a trunk,
double-tagged frames and tagged frames on access ports go nowhere.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings, strategies as st

from controller.flows import (
    COOKIE_ISOLATION, COOKIE_LEARNED, COOKIE_VLAN, LearnSpec, SwitchState, diff, flow,
)
from controller.model import (
    ACCESS, DEFAULT_TENANT, DOCKER_LINK_PORT, TRUNK, Binding, Tenant, Topology,
)
from controller.pipeline import (
    CLASSIFY, FIB, FLOOD, GATEWAY, L2, POLICY, QOS, ROUTED, TENANT_MASK, VNI_MASK, desired_state,
    flood_group_ids,
)
from tests.fakeoftable import FakeOFTable, FakeSwitchError
from tests.unit.test_pipeline import BCAST, DSTS, MCAST, _frame
from tests.unit.topologies import UNKNOWN, Lab, labs, mesh_tunnels

RED, BLUE, GREEN = Tenant("red", 100, vlan=10), Tenant("blue", 200, vlan=20), Tenant("green", 300)


# --- model --------------------------------------------------------------------------------
def test_trunk_binding_carries_native_and_tagged_tenants():
    b = Binding("h1", "t1", "green", TRUNK, trunk=["red", "blue"])
    assert b.trunk == ("red", "blue") and b.tenants == ("green", "red", "blue")
    assert Binding("h1", "t1", None, TRUNK, trunk=("red",)).tenants == ("red",)
    assert Binding("h1", "a1", "red").tenants == ("red",)
    topo = Topology((RED, BLUE, GREEN), (b, Binding("h2", "a2", "red")), ("h1", "h2", "h3"))
    assert topo.tenants_on("h1") == {"default", "green", "red", "blue"}
    assert topo.tenants_on("h3") == {"default"}


@pytest.mark.parametrize("bad", [
    lambda: Binding("h", "p", None),                                        # access needs one
    lambda: Binding("h", "p", "red", trunk=("blue",)),                      # access: no trunk
    lambda: Binding("h", "p", None, TRUNK),                                 # carries nothing
    lambda: Binding("h", "p", "red", TRUNK, trunk=("red",)),                # native and tagged
    lambda: Binding("h", "p", None, TRUNK, trunk=("red", "red")),
    lambda: Binding("h", "p", None, TRUNK, trunk="red"),                    # a str, not a list
    lambda: Binding("h", "p", None, TRUNK, trunk=("",)),
    lambda: Binding("h", "p", None, TRUNK, mac="02:00:00:00:00:01", trunk=("red",)),
    lambda: Binding("h", "p", "", TRUNK, trunk=("red",)),
])
def test_bad_trunk_bindings_are_rejected(bad):
    with pytest.raises(ValueError):
        bad()


@pytest.mark.parametrize("kwargs", [
    dict(tenants=(RED,), bindings=(Binding("h", "p", None, TRUNK, trunk=("blue",)),)),
    dict(tenants=(RED,), bindings=(Binding("h", "p", "blue", TRUNK, trunk=("red",)),)),
    dict(tenants=(RED, GREEN),                                        # green has no vlan
         bindings=(Binding("h", "p", None, TRUNK, trunk=("green",)),)),
    dict(bindings=(Binding("h", "p", None, TRUNK, trunk=("default",)),)),
    dict(tenants=(RED, Tenant("rouge", 101, vlan=10))),               # one VLAN, two tenants
])
def test_topology_rejects_inconsistent_trunks(kwargs):
    with pytest.raises(ValueError):
        Topology(**kwargs)


# --- one switch: the flows a trunk gets -----------------------------------------------------------
TOPO = Topology(
    tenants=(RED, BLUE, GREEN),
    bindings=(Binding("h1", "r1", "red", mac="02:00:00:00:00:01"),
              Binding("h1", "trk", "green", TRUNK, trunk=("red", "blue")),
              Binding("h2", "r2", "red"), Binding("h2", "trk2", None, TRUNK, trunk=("red",)),
              Binding("h2", "g2", "green")),
    hosts=("h1", "h2"))
PORTS = {"h1": {"r1": 1, "trk": 5, DOCKER_LINK_PORT: 3, "tun-h2": 10},
         "h2": {"r2": 1, "trk2": 2, "g2": 4, DOCKER_LINK_PORT: 3, "tun-h1": 9}}
LAB = Lab(TOPO, PORTS, mesh_tunnels(TOPO.hosts))
PUSH_RED = (("push_vlan", 0x8100), ("set_field", "vlan_vid", 0x1000 | 10))
PUSH_BLUE = (("push_vlan", 0x8100), ("set_field", "vlan_vid", 0x1000 | 20))


def test_trunk_classify_flows():
    on_trunk = {f.match: f for f in LAB.state("h1").flows
                if f.table == CLASSIFY and ("in_port", 5) in f.match}
    assert set(on_trunk) == {(("in_port", 5), ("vlan_vid", 0)),
                             (("in_port", 5), ("vlan_vid", 0x1000 | 10)),
                             (("in_port", 5), ("vlan_vid", 0x1000 | 20))}
    native = on_trunk[(("in_port", 5), ("vlan_vid", 0))]
    assert native.cookie == COOKIE_ISOLATION
    assert native.instructions[1:] == (("write_metadata", GREEN.vni, TENANT_MASK),
                                       ("goto", POLICY))
    assert all(a[1].vlan_vid is None for a in native.instructions[0][1])
    red = on_trunk[(("in_port", 5), ("vlan_vid", 0x1000 | 10))]
    assert red.cookie == COOKIE_VLAN
    (pop, *learns), write, goto = red.instructions[0][1], *red.instructions[1:]
    assert pop == ("pop_vlan",)
    assert (write, goto) == (("write_metadata", RED.vni, TENANT_MASK), ("goto", POLICY))
    assert {(s.metadata & VNI_MASK, s.vlan_vid, s.output_in_port, s.load_tunnel_id)
            for _, s in learns} == {(RED.vni, 10, True, False)}
    assert len(learns) == 2


def test_native_flow_is_exactly_an_access_ports_flow():
    as_access = replace(TOPO, bindings=(*TOPO.bindings[:1], Binding("h1", "trk", "green"),
                                        *TOPO.bindings[2:]))
    access_flow = {f for f in LAB.state("h1", as_access).flows if ("in_port", 5) in f.match}
    assert access_flow <= LAB.state("h1").flows


def test_flood_buckets_push_each_tenants_vlan_on_trunks_only():
    groups = {g.group_id: g.buckets for g in LAB.state("h1").groups}
    red_local, red_tunnel = flood_group_ids(RED.vni)
    assert groups[red_local] == ((("output", 1),), (*PUSH_RED, ("output", 5)),
                                 (("set_field", "tunnel_id", RED.vni), ("output", 10)))
    assert groups[red_tunnel] == ((("output", 1),), (*PUSH_RED, ("output", 5)))
    blue_local, blue_tunnel = flood_group_ids(BLUE.vni)
    assert groups[blue_local] == ((*PUSH_BLUE, ("output", 5)),)     # h2 has no blue: no tunnel
    assert blue_tunnel not in groups or groups[blue_tunnel] == ((*PUSH_BLUE, ("output", 5)),)
    green_local, _ = flood_group_ids(GREEN.vni)
    assert groups[green_local] == ((("output", 5),),                 # native: untagged
                                   (("set_field", "tunnel_id", GREEN.vni), ("output", 10)))


def test_tunnels_admit_tenants_carried_by_trunks():
    admitted = {dict(f.match)["tunnel_id"] for f in LAB.state("h1").flows if "tunnel_id" in dict(f.match)}
    assert admitted == {DEFAULT_TENANT.vni, RED.vni, GREEN.vni}      # h2 carries no blue


R1_MAC = "02:00:00:00:00:01"        # r1's bound MAC: port security lets only it through


def test_single_switch_vlan_forwarding():
    table = FakeOFTable(LAB.state("h1"))
    tagged = {**_frame(UNKNOWN, BCAST), "vlan_vid": 10}
    # red tagged 10 on the trunk: red's access port untagged, the tunnel untagged with red's VNI
    assert table.forward_frames(5, tagged) == {(1, None, None), (10, RED.vni, None)}
    # from the access port: the trunk gets it tagged 10
    assert table.forward_frames(1, _frame(R1_MAC, BCAST)) == {(5, None, 10),
                                                               (10, RED.vni, None)}
    # from the tunnel: local ports only, re-tagged
    assert table.forward_frames(10, _frame(UNKNOWN, BCAST, RED.vni)) == {(1, RED.vni, None),
                                                                         (5, RED.vni, 10)}
    # untagged on the trunk is green (native)
    assert table.forward_frames(5, _frame(UNKNOWN, BCAST)) == {(10, GREEN.vni, None)}
    # unicast to red's static MAC from the trunk: out of r1, untagged
    assert table.forward_frames(5, {**_frame(UNKNOWN, "02:00:00:00:00:01"), "vlan_vid": 10}) == {
        (1, None, None)}
    for dropped in (
            (5, {**_frame(UNKNOWN, BCAST), "vlan_vid": 30}),              # VLAN not on the trunk
            (5, {**_frame(UNKNOWN, BCAST), "vlan_vid": 0}),               # priority tag
            (5, {**_frame(UNKNOWN, BCAST), "vlan_vid": 10, "vlans": (20,)}),   # double tag
            (1, {**_frame(UNKNOWN, BCAST), "vlan_vid": 10}),              # tag on an access port
            (3, {**_frame(UNKNOWN, BCAST), "vlan_vid": 1}),               # ... docker0 link
            (10, {**_frame(UNKNOWN, BCAST, RED.vni), "vlan_vid": 10})):   # tagged in a tunnel
        assert FakeOFTable(LAB.state("h1")).forward_frames(*dropped) == set(), dropped


@pytest.mark.parametrize("vlan_limit", [1, 2, 0])
def test_double_tagged_frames_are_dropped_whatever_ovs_vlan_limit(vlan_limit):
    table = FakeOFTable(LAB.state("h1"), vlan_limit=vlan_limit)
    for inner in (10, 20, 30):
        for dst in (BCAST, UNKNOWN, "02:00:00:00:00:01"):
            frame = {**_frame(UNKNOWN, dst), "vlan_vid": 10, "vlans": (inner,)}
            assert table.forward_frames(5, frame) == set()
            assert table.forward_frames(5, {**frame, "vlans": (inner, 5)}) == set()


def test_across_hosts_a_vlan_is_the_same_tenant_everywhere():
    cluster = LAB.cluster(learn=True)
    a, b = "02:00:00:00:0a:01", "02:00:00:00:0b:02"
    assert sorted(cluster.frames("h1", "trk", _frame(a, BCAST), vlan=10), key=str) == [
        ("h1", "r1", None), ("h2", "r2", None), ("h2", "trk2", 10)]
    assert cluster.frames("h1", "trk", _frame(a, BCAST), vlan=20) == []       # only h1 has blue
    assert sorted(cluster.frames("h1", "trk", _frame(a, BCAST)), key=str) == [("h2", "g2", None)]
    # learned both ways: h2's trunk answers a, a's host learned b; the tags come back
    assert cluster.frames("h2", "trk2", _frame(b, a), vlan=10) == [("h1", "trk", 10)]
    assert cluster.frames("h1", "trk", _frame(a, b), vlan=10) == [("h2", "trk2", 10)]
    assert cluster.frames("h1", "r1", _frame(R1_MAC, a)) == [("h1", "trk", 10)]
    assert cluster.frames("h1", "r1", _frame(UNKNOWN, a)) == []      # port security


# --- the fake switch's VLAN model ---------------------------------------------------------------
def test_fake_models_ovs_vlan_limit():
    """With vlan-limit 1, OVS sees one tag; the inner one shows as eth_type 0x8100 and,
    once the outer tag is popped, the frame matches as untagged."""
    flows = (flow(0, 1, {"vlan_vid": (0x1000, 0x1000)}, [("apply", (("pop_vlan",),)),
                                                        ("goto", 1)], 0),
             flow(1, 3, {"vlan_vid": (0x1000, 0x1000)}, [("apply", (("output", 1),))], 0),
             flow(1, 2, {"eth_type": 0x8100}, [("apply", (("output", 2),))], 0),
             flow(1, 1, {"vlan_vid": 0}, [("apply", (("output", 3),))], 0))
    double = {"vlan_vid": 10, "vlans": (20,), "eth_type": 0x0800}
    state = SwitchState(frozenset(flows))
    assert FakeOFTable(state).forward_frames(9, double) == {(2, None, 20)}
    assert FakeOFTable(state, vlan_limit=2).forward_frames(9, double) == {(1, None, 20)}
    assert FakeOFTable(state).forward_frames(9, {**double, "vlans": ()}) == {(3, None, None)}


def test_fake_learned_vlan_load_pushes_a_tag():
    spec = LearnSpec(table=1, priority=10, idle_timeout=300, cookie=COOKIE_LEARNED,
                     metadata=5, metadata_mask=VNI_MASK, vlan_vid=10)
    flows = (flow(0, 2, {"vlan_vid": 0x1000 | 10},
                  [("apply", (("pop_vlan",), ("learn", spec))), ("write_metadata", 5, VNI_MASK),
                   ("goto", 1)], 0),
             flow(0, 1, {"vlan_vid": 0}, [("write_metadata", 5, VNI_MASK), ("goto", 1)], 0),
             flow(1, 0, {}, [("apply", (("output", 9),))], 0))
    t = FakeOFTable(SwitchState(frozenset(flows)), learn=True)
    a, b = "02:00:00:00:00:01", "02:00:00:00:00:02"
    assert t.forward_frames(3, {**_frame(a, BCAST), "vlan_vid": 10}) == {(9, None, None)}
    assert t.forward_frames(4, _frame(b, a)) == {(3, None, 10)}


def test_fake_refuses_to_set_a_vid_without_a_tag():
    t = FakeOFTable(SwitchState(frozenset({flow(0, 1, {}, [("apply", (
        ("set_field", "vlan_vid", 0x1000 | 3), ("output", 1)))], 0)})))
    with pytest.raises(FakeSwitchError):
        t.forward_frames(2, {})


# --- properties over generated clusters with trunks ---------------------------------------------
@settings(max_examples=60, deadline=None)
@given(labs(), st.sampled_from([1, 2]))
def test_double_tagged_frames_reach_nothing(lab, vlan_limit):
    cluster = lab.cluster(vlan_limit=vlan_limit)
    vlans = lab.vlans()
    for host, port, vlan, _tenant in lab.senders():
        if vlan is None:
            continue
        for dst in (BCAST, UNKNOWN, *DSTS[3:5]):
            for inner in (vlans[0], vlans[-1]):
                frame = {**_frame(UNKNOWN, dst), "vlans": (inner,)}
                assert cluster.frames(host, port, frame, vlan=vlan) == [], (host, port, vlan)


@settings(max_examples=60, deadline=None)
@given(labs())
def test_a_vlan_not_on_the_port_reaches_nothing(lab):
    """Not-allowed VLANs on trunks and any tag on access ports are dropped on entry."""
    cluster = lab.cluster()
    binding = {(h, b.port): b for h in lab.topo.hosts for b in lab.topo.bindings_on(h)}
    for host, port, vlan, tenant in lab.senders():
        b = binding.get((host, port))
        if vlan is None or b is None:
            continue
        allowed = {lab.topo.tenant(t).vlan for t in b.trunk}
        assert (tenant is not None) == (vlan in allowed)
        if tenant is None:
            for dst in (BCAST, MCAST, UNKNOWN):
                assert cluster.frames(host, port, _frame(UNKNOWN, dst), vlan=vlan) == []


def _retarget(lab: Lab, old: Binding, new: Binding) -> Lab:
    bindings = tuple(new if b == old else b for b in lab.topo.bindings)
    return replace(lab, topo=replace(lab.topo, bindings=bindings))


@st.composite
def port_mode_switches(draw):
    """A lab, one of its stored access bindings, and a trunk binding for the same port."""
    lab = draw(labs())
    access = [b for b in lab.topo.bindings if b.mode == ACCESS]
    tagged = [t.name for t in lab.topo.all_tenants if t.vlan is not None]
    if not access:
        return lab, None, None
    old = draw(st.sampled_from(access))
    native = draw(st.none() | st.just(old.tenant)
                  | st.sampled_from([t.name for t in lab.topo.all_tenants]))
    trunk = tuple(t for t in draw(st.lists(st.sampled_from(tagged), unique=True)
                                  if tagged else st.just([])) if t != native)
    if native is None and not trunk:
        native = old.tenant
    return lab, old, Binding(old.host, old.port, native, TRUNK, trunk=trunk)


@settings(max_examples=150, deadline=None)
@given(port_mode_switches())
def test_switching_a_port_between_access_and_trunk_changes_only_its_flows(case):
    """On every host, the delta (both directions) only holds: flows matching the port's
    in_port (on its host), and flows and groups of the tenants the port carried before
    or after (by tunnel_id, metadata VNI or flood group id).  Nothing of another tenant,
    nothing matching another local port; an access port becoming a trunk with the same
    tenant native and nothing tagged changes nothing at all (when it had no MAC)."""
    lab, old, new = case
    if old is None:
        return
    after = _retarget(lab, old, new)
    vnis = {lab.topo.tenant(t).vni for t in {*old.tenants, *new.tenants}}
    ofport = lab.ports[old.host].get(old.port)
    for host in lab.topo.hosts:
        args = (lab.ports[host], lab.tunnels[host])
        s0, s1 = desired_state(host, lab.topo, *args), desired_state(host, after.topo, *args)
        local = {lab.ports[host][b.port] for b in lab.topo.bindings_on(host)
                 if b.port in lab.ports[host]} - {ofport if host == old.host else None}
        for d in (diff(s1, s0), diff(s0, s1)):
            for f in (*d.add_flows, *d.delete_flows):
                m = dict(f.match)
                if host == old.host and m.get("in_port") == ofport:
                    continue
                assert m.get("in_port") not in local, f
                vni = m.get("tunnel_id", _metadata_vni(m.get("metadata")))
                assert vni in vnis, f
            for g in (*d.add_groups, *d.modify_groups, *d.delete_groups):
                assert g.group_id // 2 in vnis, g
        if new.tenant == old.tenant and not new.trunk and old.mac is None:
            assert diff(s1, s0).empty


def _metadata_vni(metadata) -> int | None:
    if metadata is None:
        return None
    value = metadata[0] if isinstance(metadata, tuple) else metadata
    return value & VNI_MASK


def test_switching_red_access_to_red_native_trunk_sends_nothing():
    topo = Topology((RED, BLUE), (Binding("h1", "p", "red"), Binding("h2", "q", "red")),
                    ("h1", "h2"))
    ports, tunnels = {"p": 1, "tun-h2": 9}, {"h2": "tun-h2"}
    before = desired_state("h1", topo, ports, tunnels)
    same = replace(topo, bindings=(Binding("h1", "p", "red", TRUNK), topo.bindings[1]))
    assert diff(desired_state("h1", same, ports, tunnels), before).empty
    plus_blue = replace(topo, bindings=(Binding("h1", "p", "red", TRUNK, trunk=("blue",)),
                                        topo.bindings[1]))
    d = diff(desired_state("h1", plus_blue, ports, tunnels), before)
    assert not d.delete_flows and not d.delete_groups and not d.modify_groups
    assert {(f.table, f.cookie) for f in d.add_flows} == {(CLASSIFY, COOKIE_VLAN),
                                                          (FLOOD, COOKIE_ISOLATION)}
    assert {g.group_id for g in d.add_groups} == set(flood_group_ids(BLUE.vni))
    assert {f.table for f in desired_state("h1", plus_blue, ports, tunnels).flows} == {
        CLASSIFY, POLICY, QOS, L2, FLOOD, GATEWAY, FIB, ROUTED}     # the last 3: misses
