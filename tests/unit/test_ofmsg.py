"""Round trip through the wire: every flow and group weft sends must read back equal.

That equality is what makes controller restarts hitless (zero flow-mods when
nothing changed).  Messages are serialized by os-ken exactly as for a switch;
the bytes are then wrapped as the switch's flow-stats / group-desc replies and
parsed by os-ken's own parsers.
"""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings, strategies as st
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as ofpp

from controller.flows import COOKIE_ISOLATION, COOKIE_LEARNED, Flow, Group, LearnSpec, flow
from controller.model import DOCKER_LINK_PORT, TRUNK, Binding, Tenant, Topology
from controller.ofmsg import flow_from_stats, flow_mod, group_from_desc, group_mod
from controller.pipeline import TENANT_MASK, desired_state

_FLOW_MOD_BODY = ofp.OFP_HEADER_SIZE + struct.calcsize(ofp.OFP_FLOW_MOD_PACK_STR0)
_GROUP_MOD_BODY = ofp.OFP_HEADER_SIZE + struct.calcsize(ofp.OFP_GROUP_MOD_PACK_STR)


class FakeDatapath:
    """Just enough of os-ken's Datapath to build and serialize messages."""

    ofproto = ofp
    ofproto_parser = ofpp
    id = 1


DP = FakeDatapath()


def _wire(msg) -> bytes:
    msg.serialize()
    buf = bytes(msg.buf)
    assert len(buf) == struct.unpack_from("!H", buf, 2)[0]
    return buf


def stats_echo(f: Flow) -> object:
    """What a flow-stats reply would carry for the flow this flow-mod installs."""
    mod = flow_mod(DP, f, "add")
    body = _wire(mod)[_FLOW_MOD_BODY:]           # match + instructions, as sent
    head = struct.pack(ofp.OFP_FLOW_STATS_0_PACK_STR, ofp.OFP_FLOW_STATS_0_SIZE + len(body),
                       mod.table_id, 7, 1000, mod.priority, mod.idle_timeout, mod.hard_timeout,
                       mod.flags, mod.cookie, 42, 4200)
    return ofpp.OFPFlowStats.parser(head + body, 0)


def desc_echo(g: Group) -> object:
    """What a group-desc reply would carry for the group this group-mod installs."""
    mod = group_mod(DP, g, "add")
    buckets = _wire(mod)[_GROUP_MOD_BODY:]
    head = struct.pack(ofp.OFP_GROUP_DESC_STATS_PACK_STR,
                       ofp.OFP_GROUP_DESC_STATS_SIZE + len(buckets), mod.type, mod.group_id)
    return ofpp.OFPGroupDescStats.parser(head + buckets, 0)


TOPO = Topology(
    tenants=(Tenant("red", 100, vlan=10), Tenant("blue", 0xABCDEF),
             Tenant("green", 300, vlan=4094)),
    bindings=(Binding("h1", "r1", "red", mac="02:00:00:00:00:01", ips=("10.0.0.1",),
                      allowed_address_pairs=(("10.9.0.0/16", "02:00:00:00:00:09"),)),
              Binding("h1", "b1", "blue"),
              Binding("h1", "trk", "blue", TRUNK, trunk=("red", "green")),
              Binding("h2", "r2", "red", mac="02:AB:00:00:00:02"),
              Binding("h2", "trk", None, TRUNK, trunk=("green",)),
              Binding("h3", "b3", "blue", mac="02:00:00:00:00:01")),
    hosts=("h1", "h2", "h3"))
PORTS = {"r1": 1, "b1": 2, DOCKER_LINK_PORT: 3, "trk": 4, "tun-h2": 10, "tun-h3": 0xFFFFFF00}
TUNNELS = {"h2": "tun-h2", "h3": "tun-h3"}
SAMPLE = desired_state("h1", TOPO, PORTS, TUNNELS)


def test_sample_covers_every_kind_of_flow():
    kinds = {a[0] for f in SAMPLE.flows for i in f.instructions if i[0] == "apply" for a in i[1]}
    assert kinds == {"learn", "output", "set_field", "group", "pop_vlan"}
    assert any(not f.instructions for f in SAMPLE.flows)
    fields = {k for f in SAMPLE.flows for k, _ in f.match}
    assert fields == {"in_port", "tunnel_id", "metadata", "eth_dst", "vlan_vid", "eth_type",
                      "eth_src", "arp_sha", "arp_spa", "ipv4_src"}
    assert {v for f in SAMPLE.flows for k, v in f.match if k == "vlan_vid"} == {
        0, 0x1000 | 10, 0x1000 | 4094, (0x1000, 0x1000)}
    assert {a[1].vlan_vid for f in SAMPLE.flows for i in f.instructions if i[0] == "apply"
            for a in i[1] if a[0] == "learn"} == {None, 10, 4094}
    bucket_kinds = {a[0] for g in SAMPLE.groups for b in g.buckets for a in b}
    assert bucket_kinds == {"output", "set_field", "push_vlan"}


@pytest.mark.parametrize("f", sorted(SAMPLE.flows, key=repr),
                         ids=lambda f: f"t{f.table}p{f.priority}")
def test_every_pipeline_flow_reads_back_equal(f):
    assert flow_from_stats(stats_echo(f)) == f


@pytest.mark.parametrize("g", sorted(SAMPLE.groups, key=lambda g: g.group_id),
                         ids=lambda g: str(g.group_id))
def test_every_pipeline_group_reads_back_equal(g):
    assert group_from_desc(desc_echo(g)) == g


def test_other_actions_and_instructions_read_back_equal():
    match = {"vlan_vid": (0x1000, 0x1000), "eth_type": 0x0800,
             "ipv4_src": ("10.0.0.0", "255.255.255.0"),
             "eth_src": ("02:00:00:00:00:00", "02:00:00:00:00:00")}
    actions = (("push_vlan", 0x8100), ("set_field", "vlan_vid", 0x1000 | 10),
               ("set_field", "eth_dst", "02:00:00:00:00:aa"), ("pop_vlan",),
               ("output", ofp.OFPP_CONTROLLER))
    f = flow(1, 7, match, [("meter", 3), ("apply", actions), ("goto", 2)],
             COOKIE_ISOLATION, idle_timeout=60)
    assert flow_from_stats(stats_echo(f)) == f


@settings(max_examples=50, deadline=None)
@given(vni=st.integers(1, 0xFFFFFF), tunnel=st.booleans(), load=st.booleans(), out=st.booleans(),
       table=st.integers(0, 254), prio=st.integers(0, 0xFFFF), idle=st.integers(0, 0xFFFF),
       vlan=st.none() | st.integers(0, 0xFFF), limit=st.sampled_from([0, 1, 2048, 0xFFFFFFFF]))
def test_learn_action_reads_back_equal(vni, tunnel, load, out, table, prio, idle, vlan, limit):
    metadata = vni | (1 << 32 if tunnel else 0)
    spec = LearnSpec(table, prio, idle, COOKIE_LEARNED | 7 << 24 | vni, metadata, TENANT_MASK,
                     load, out, vlan, limit)
    f = flow(0, 1, {"in_port": 1}, [("apply", (("pop_vlan",), ("learn", spec)))],
             COOKIE_ISOLATION)
    assert flow_from_stats(stats_echo(f)) == f


def test_learn_is_encoded_the_way_ovs_echoes_it():
    spec = LearnSpec(2, 10, 300, COOKIE_LEARNED, 5 | 1 << 32, TENANT_MASK, load_tunnel_id=True)
    stats = stats_echo(flow(0, 1, {}, [("apply", (("learn", spec),))], 0))
    (learn,) = stats.instructions[0].actions
    assert [(type(s).__name__, s.src, s.dst, s.n_bits) for s in learn.specs] == [
        ("NXFlowSpecMatch", 5, ("metadata", 0), 24),               # metadata[0..23]=vni
        ("NXFlowSpecMatch", 1, ("metadata", 32), 1),               # metadata[32]=from tunnel
        ("NXFlowSpecMatch", ("eth_src_nxm", 0), ("eth_dst_nxm", 0), 48),
        ("NXFlowSpecLoad", ("tunnel_id_nxm", 0), ("tunnel_id_nxm", 0), 64),
        ("NXFlowSpecOutput", ("in_port", 0), "", 32),
    ]


def test_learn_vlan_is_an_immediate_load_into_vlan_tci_before_the_output():
    """``load:0x100a->NXM_OF_VLAN_TCI[]``: what ovs-ofctl shows for the learned tag."""
    spec = LearnSpec(2, 10, 300, COOKIE_LEARNED, 5, TENANT_MASK, vlan_vid=10)
    stats = stats_echo(flow(0, 1, {}, [("apply", (("learn", spec),))], 0))
    (learn,) = stats.instructions[0].actions
    assert [(type(s).__name__, s.src, s.dst, s.n_bits) for s in learn.specs][-2:] == [
        ("NXFlowSpecLoad", 0x100A, ("vlan_tci", 0), 16),
        ("NXFlowSpecOutput", ("in_port", 0), "", 32),
    ]


@pytest.mark.parametrize("specs", [
    # PCP bits set, no CFI, two loads, a load after the output: not the learn weft writes
    [ofpp.NXFlowSpecLoad(src=0x300A, dst=("vlan_tci", 0), n_bits=16)],
    [ofpp.NXFlowSpecLoad(src=0x000A, dst=("vlan_tci", 0), n_bits=16)],
    [ofpp.NXFlowSpecLoad(src=0x100A, dst=("vlan_tci", 0), n_bits=16),
     ofpp.NXFlowSpecLoad(src=0x100B, dst=("vlan_tci", 0), n_bits=16)],
    [ofpp.NXFlowSpecLoad(src=0x100A, dst=("vlan_tci", 0), n_bits=12)],
    [ofpp.NXFlowSpecOutput(src=("in_port", 0), dst="", n_bits=32),
     ofpp.NXFlowSpecLoad(src=0x100A, dst=("vlan_tci", 0), n_bits=16)],
])
def test_other_vlan_learns_are_not_ours(specs):
    eth = ofpp.NXFlowSpecMatch(src=("eth_src_nxm", 0), dst=("eth_dst_nxm", 0), n_bits=48)
    nx = ofpp.NXActionLearn(table_id=2, priority=10, idle_timeout=300, cookie=COOKIE_LEARNED,
                            specs=[eth, *specs])
    stats = ofpp.OFPFlowStats(
        table_id=0, priority=1, idle_timeout=0, cookie=0, match=ofpp.OFPMatch(),
        instructions=[ofpp.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [nx])])
    assert flow_from_stats(stats).instructions[0][1][0][0] == "unknown"


def test_set_vlan_vid_echoed_with_or_without_the_present_bit_is_the_same():
    want = flow(3, 1, {"vlan_vid": 0}, [("apply", (("push_vlan", 0x8100),
                                                   ("set_field", "vlan_vid", 0x1000 | 7),
                                                   ("output", 4)))], COOKIE_ISOLATION)
    assert flow(3, 1, {"vlan_vid": 0}, [("apply", (("push_vlan", 0x8100),
                                                   ("set_field", "vlan_vid", 7),
                                                   ("output", 4)))], COOKIE_ISOLATION) == want
    for echoed in (7, 0x1000 | 7):
        stats = ofpp.OFPFlowStats(
            table_id=3, priority=1, idle_timeout=0, cookie=COOKIE_ISOLATION,
            match=ofpp.OFPMatch(vlan_vid=0),
            instructions=[ofpp.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [
                ofpp.OFPActionPushVlan(0x8100), ofpp.OFPActionSetField(vlan_vid=echoed),
                ofpp.OFPActionOutput(4)])])
        assert flow_from_stats(stats) == want
        desc = ofpp.OFPGroupDescStats(ofp.OFPGT_ALL, 8, [ofpp.OFPBucket(actions=[
            ofpp.OFPActionPushVlan(0x8100), ofpp.OFPActionSetField(vlan_vid=echoed),
            ofpp.OFPActionOutput(4)])])
        assert group_from_desc(desc) == Group(8, "all", (want.instructions[0][1],))


def test_oxm_spellings_of_learn_fields_read_back_the_same():
    """Whichever header (NXM or OXM) the switch echoes, the intent is the same."""
    spec = LearnSpec(2, 10, 300, COOKIE_LEARNED, 5, TENANT_MASK, load_tunnel_id=True)
    specs = [ofpp.NXFlowSpecMatch(src=5, dst=("metadata", 0), n_bits=24),
             ofpp.NXFlowSpecMatch(src=0, dst=("metadata", 32), n_bits=1),
             ofpp.NXFlowSpecMatch(src=("eth_src", 0), dst=("eth_dst", 0), n_bits=48),
             ofpp.NXFlowSpecLoad(src=("tunnel_id", 0), dst=("tunnel_id", 0), n_bits=64),
             ofpp.NXFlowSpecOutput(src=("in_port_nxm", 0), dst="", n_bits=16)]
    nx = ofpp.NXActionLearn(table_id=2, priority=10, idle_timeout=300, cookie=COOKIE_LEARNED,
                            specs=specs)
    apply = ofpp.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [nx])
    stats = ofpp.OFPFlowStats(table_id=0, priority=1, idle_timeout=0, cookie=0,
                              match=ofpp.OFPMatch(), instructions=[apply])
    assert flow_from_stats(stats).instructions == (("apply", (("learn", spec),)),)


def test_switch_normal_forms_compare_equal():
    """Full masks, NXM names, uppercase MACs and output max_len are not differences."""
    stats = ofpp.OFPFlowStats(
        table_id=2, priority=100, idle_timeout=0, cookie=COOKIE_ISOLATION,
        match=ofpp.OFPMatch(eth_dst_nxm="02:AB:00:00:00:01", metadata=(7, (1 << 64) - 1)),
        instructions=[ofpp.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [
            ofpp.OFPActionSetField(tunnel_id_nxm=7), ofpp.OFPActionOutput(5, 0xFFE5)])])
    assert flow_from_stats(stats) == flow(
        2, 100, {"eth_dst": "02:ab:00:00:00:01", "metadata": 7},
        [("apply", (("set_field", "tunnel_id", 7), ("output", 5)))], COOKIE_ISOLATION)


def test_what_weft_does_not_model_never_compares_equal():
    stats = ofpp.OFPFlowStats(
        table_id=0, priority=1, idle_timeout=0, cookie=COOKIE_ISOLATION, match=ofpp.OFPMatch(),
        instructions=[
            ofpp.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [ofpp.OFPActionSetNwTtl(9)]),
            ofpp.OFPInstructionActions(ofp.OFPIT_CLEAR_ACTIONS, [])])
    f = flow_from_stats(stats)
    assert [i[0] for i in f.instructions] == ["apply", "unknown"]
    assert f.instructions[0][1][0][0] == "unknown"
    foreign_learn = ofpp.NXActionLearn(table_id=2, specs=[], hard_timeout=300)
    with_learn = ofpp.OFPFlowStats(
        table_id=0, priority=1, idle_timeout=0, cookie=0, match=ofpp.OFPMatch(),
        instructions=[ofpp.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [foreign_learn])])
    assert flow_from_stats(with_learn).instructions[0][1][0][0] == "unknown"


def test_delete_strict_touches_only_our_exact_flow():
    f = next(iter(SAMPLE.flows))
    mod = flow_mod(DP, f, "delete_strict")
    _wire(mod)
    assert (mod.command, mod.cookie, mod.cookie_mask) == (
        ofp.OFPFC_DELETE_STRICT, f.cookie, (1 << 64) - 1)
    assert (mod.out_port, mod.out_group, mod.table_id, mod.priority) == (
        ofp.OFPP_ANY, ofp.OFPG_ANY, f.table, f.priority)
    assert dict(mod.match.items()) == dict(f.match)


def test_group_commands():
    g = next(iter(SAMPLE.groups))
    assert group_mod(DP, g, "modify").command == ofp.OFPGC_MODIFY
    delete = group_mod(DP, g, "delete")
    _wire(delete)
    assert (delete.command, delete.group_id, delete.buckets) == (ofp.OFPGC_DELETE, g.group_id, [])
    with pytest.raises(ValueError):
        group_mod(DP, g, "wipe")
    with pytest.raises(ValueError):
        flow_mod(DP, next(iter(SAMPLE.flows)), "modify")


def test_learn_with_limit_goes_as_nxast_learn2_the_way_ovs_reads_it():
    """OVS 3.1 ``ovs-ofctl ofp-print`` of these bytes says ``learn(...,limit=2048,...)``;
    the subtype and layout checked here are what it decoded."""
    spec = LearnSpec(3, 10, 300, COOKIE_LEARNED, 5, TENANT_MASK, limit=2048)
    stats = stats_echo(flow(0, 1, {}, [("apply", (("learn", spec),))], 0))
    (learn,) = stats.instructions[0].actions
    assert learn.subtype == 45 and learn.limit == 2048


def test_port_security_matches_read_back_equal():
    f = flow(0, 120, {"in_port": 3, "vlan_vid": 0, "eth_src": "02:00:00:00:00:01",
                      "eth_type": 0x0806, "arp_sha": "02:00:00:00:00:01",
                      "arp_spa": ("10.0.0.0", "255.255.255.0")}, [("goto", 1)], COOKIE_ISOLATION)
    g = flow(0, 120, {"in_port": 3, "vlan_vid": 0, "eth_src": "02:00:00:00:00:01",
                      "eth_type": 0x0800, "ipv4_src": "10.0.0.5"}, [("goto", 1)], COOKIE_ISOLATION)
    h = flow(0, 1000, {"eth_src": ("01:00:00:00:00:00", "01:00:00:00:00:00")}, (),
             COOKIE_ISOLATION)
    for x in (f, g, h):
        assert flow_from_stats(stats_echo(x)) == x


@pytest.mark.parametrize("burst", [0, 100])
def test_packet_rate_meter_goes_as_pktps_and_reads_back_equal(burst):
    """A pps limit is one drop band in packets/s under OFPMF_PKTPS (never KBPS too)."""
    from controller.flows import Meter
    from controller.ofmsg import meter_from_config, meter_mod
    m = Meter(5, 1_000, burst, pktps=True)
    mod = meter_mod(DP, m, "add")
    buf = _wire(mod)
    flags, meter_id = struct.unpack_from("!HHI", buf, ofp.OFP_HEADER_SIZE)[1:]
    assert flags & ofp.OFPMF_PKTPS and not flags & ofp.OFPMF_KBPS and meter_id == 5
    bands = buf[ofp.OFP_METER_MOD_SIZE:]
    _type, _len, rate, burst_size = struct.unpack_from("!HHII", bands, 0)
    assert (rate, burst_size) == (1_000, burst)
    head = struct.pack(ofp.OFP_METER_CONFIG_PACK_STR, ofp.OFP_METER_CONFIG_SIZE + len(bands),
                       flags, meter_id)
    back = meter_from_config(ofpp.OFPMeterConfigStats.parser(head + bands, 0))
    assert back == m and back != Meter(5, 1_000, burst)


# --- routing's actions (controller.pipeline.gateway, route, egress) ---------------------------
ROUTING_ACTIONS = (("dec_ttl",), ("move", "eth_src", "eth_dst"), ("move", "arp_sha", "arp_tha"),
                   ("move", "arp_spa", "arp_tpa"), ("move", "ipv4_src", "ipv4_dst"),
                   ("set_field", "eth_src", "0a:77:66:00:03:e8"), ("set_field", "arp_op", 2),
                   ("set_field", "arp_sha", "0a:77:66:00:03:e8"),
                   ("set_field", "arp_spa", "10.0.0.1"), ("set_field", "ipv4_src", "10.0.0.1"),
                   ("set_field", "icmpv4_type", 0), ("output", ofp.OFPP_IN_PORT),
                   ("resubmit", 3), ("resubmit", 1))


@pytest.mark.parametrize("action", ROUTING_ACTIONS, ids=lambda a: "-".join(map(str, a)))
def test_routing_actions_read_back_equal(action):
    match = {"metadata": (1000 << 40 | 1000, 0xFFFFFF << 40 | 0xFFFFFF), "eth_type": 0x0806,
             "arp_op": 1, "arp_tpa": "10.0.0.1"}
    f = flow(5, 200, match, [("apply", (action,)), ("write_metadata", 1001, 0xFFFFFF),
                             ("goto", 7)], COOKIE_ISOLATION)
    assert flow_from_stats(stats_echo(f)) == f


def test_dec_ttl_goes_without_controller_ids_and_anything_else_is_not_ours():
    (act,) = flow_mod(DP, flow(6, 1, {}, [("apply", (("dec_ttl",),))], 0), "add"
                      ).instructions[0].actions
    assert isinstance(act, ofpp.NXActionDecTtlCntIds) and act.cnt_ids == []
    for other in (ofpp.OFPActionDecNwTtl(), ofpp.NXActionDecTtlCntIds(cnt_ids=[0]),
                  ofpp.NXActionRegMove("eth_src_nxm", "eth_dst_nxm", 24),
                  ofpp.NXActionRegMove("eth_src_nxm", "eth_dst_nxm", 16, src_ofs=8),
                  ofpp.NXActionResubmitTable(in_port=3, table_id=1)):
        stats = ofpp.OFPFlowStats(
            table_id=0, priority=1, idle_timeout=0, cookie=0, match=ofpp.OFPMatch(),
            instructions=[ofpp.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [other])])
        assert flow_from_stats(stats).instructions[0][1][0][0] == "unknown", other


def test_a_move_reads_back_the_same_in_oxm_or_nxm_spelling():
    stats = ofpp.OFPFlowStats(
        table_id=5, priority=1, idle_timeout=0, cookie=0, match=ofpp.OFPMatch(),
        instructions=[ofpp.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [
            ofpp.NXActionRegMove("eth_src", "eth_dst", 48),
            ofpp.NXActionRegMove("ipv4_src_nxm", "ipv4_dst_nxm", 32)])])
    assert flow_from_stats(stats).instructions == (
        ("apply", (("move", "eth_src", "eth_dst"), ("move", "ipv4_src", "ipv4_dst"))),)
    with pytest.raises(ValueError):
        _wire(flow_mod(DP, flow(5, 1, {}, [("apply", (("move", "eth_src", "ipv4_dst"),))], 0),
                       "add"))
