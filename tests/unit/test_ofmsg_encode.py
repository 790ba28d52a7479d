"""Encode-once flow-mods (``ofmsg.encode``) are byte for byte what os-ken serializes.

The controller sends ``ofmsg.encode`` bytes instead of os-ken messages: every
flow, group and meter the pipeline computes for random clusters (trunks, QoS,
ACLs, port security) must encode exactly as ``flow_mod``/``group_mod``/
``meter_mod`` + ``serialize()`` did, whether the parts come fresh or from the
cache; ``send_encoded`` numbers the messages as ``send_msg`` would.
"""
from __future__ import annotations

import struct
from dataclasses import replace

from hypothesis import given, settings, strategies as st

from controller import ofmsg
from controller.flows import Flow, Group, Meter, SwitchState, flow
from controller.model import AclRule, Binding, RateLimit, Tenant, Topology
from controller.pipeline import desired_state
from tests.unit.topologies import Lab, labs, routing_labs


def _oskens(item: Flow | Group | Meter, command: str) -> bytes:
    build = {Flow: ofmsg._osken_flow_mod, Group: ofmsg.group_mod,
             Meter: ofmsg.meter_mod}[type(item)]
    msg = build(ofmsg.OFP13, item, command)
    msg.set_xid(0)
    msg.serialize()
    return bytes(msg.buf)


def _via_flow_mod(f: Flow, command: str, xid: int = 0) -> bytes:
    """What ``send_msg`` sends of ``ofmsg.flow_mod``'s message."""
    msg = ofmsg.flow_mod(ofmsg.OFP13, f, command)
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


_COMMANDS = {Flow: ("add", "delete_strict"), Group: ("add", "modify", "delete"),
             Meter: ("add", "modify", "delete")}


def _assert_same(state: SwitchState) -> int:
    n = 0
    for item in (*state.flows, *state.groups, *state.meters):
        for command in _COMMANDS[type(item)]:
            want = _oskens(item, command)
            assert ofmsg.encode(item, command) == want, (item, command)
            assert ofmsg.encode(item, command) == want, (item, command)   # from the cache
            if isinstance(item, Flow):
                assert _via_flow_mod(item, command) == want
                _assert_same_attributes(item, command)
            n += 1
    return n


def _assert_same_attributes(f: Flow, command: str) -> None:
    """``flow_mod``'s message reads as os-ken's own (fake switch, logs, tests read it)."""
    fast, ref = ofmsg.flow_mod(ofmsg.OFP13, f, command), ofmsg._osken_flow_mod(ofmsg.OFP13, f,
                                                                               command)
    for attr in ("cookie", "cookie_mask", "table_id", "command", "idle_timeout",
                 "hard_timeout", "priority", "buffer_id", "out_port", "out_group", "flags"):
        assert getattr(fast, attr) == getattr(ref, attr), attr
    assert fast.match.to_jsondict() == ref.match.to_jsondict()
    assert [i.to_jsondict() for i in fast.instructions] == \
        [i.to_jsondict() for i in ref.instructions]
    assert ofmsg.flow_from_stats(fast) == ofmsg.flow_from_stats(ref)


@st.composite
def secured_labs(draw) -> Lab:
    """``labs(qos=True)`` plus ACLs (some tenants default-deny), port security (ips and
    allowed address pairs on some bound MACs) and packet-rate limits."""
    lab = draw(labs(qos=True))
    topo = lab.topo
    names = [t.name for t in topo.all_tenants if t.vni <= 0xFFFF]
    acls, ids = [], iter(range(1, 100))
    for name in draw(st.lists(st.sampled_from(names), unique=True, max_size=2)) if names else ():
        for prio in draw(st.lists(st.integers(1, 10000), unique=True, max_size=3)):
            proto = draw(st.sampled_from([None, "tcp", "udp", "icmp"]))
            acls.append(AclRule(
                next(ids), name, prio, draw(st.sampled_from(["allow", "drop"])),
                draw(st.sampled_from(["ingress", "egress"])), ip_proto=proto,
                remote=draw(st.none() | st.sampled_from(["10.0.0.0/24", "10.9.8.7"])),
                port=draw(st.integers(1, 65535)) if proto in ("tcp", "udp") else None,
                icmp_type=draw(st.none() | st.integers(0, 255)) if proto == "icmp" else None))
    deny = frozenset(draw(st.lists(st.sampled_from(names), unique=True, max_size=1))
                     if names else ())
    bindings = []
    for b in topo.bindings:
        if b.mac and draw(st.booleans()):
            b = replace(b, ips=("10.0.0.5", "10.1.0.0/16"),
                        allowed_address_pairs=(("10.2.0.1", None), ("10.3.0.1", "02:aa:00:00:00:01")))
        bindings.append(b)
    limits = tuple(replace(x, kbps=None, burst_kb=0, pps=max(x.kbps or 1, 1), burst_pkts=7)
                   if draw(st.integers(0, 3)) == 0 else x for x in topo.limits)
    topo = replace(topo, bindings=tuple(bindings), limits=limits, acls=tuple(acls),
                   acl_deny=deny)
    return Lab(topo, lab.ports, lab.tunnels)


@settings(max_examples=60, deadline=None)
@given(secured_labs())
def test_every_message_of_random_clusters_encodes_as_os_ken_does(lab):
    for host in lab.topo.hosts:
        _assert_same(desired_state(host, lab.topo, lab.ports[host], lab.tunnels[host]))


@settings(max_examples=30, deadline=None)
@given(routing_labs())
def test_every_message_of_random_routing_clusters_encodes_as_os_ken_does(lab):
    """Gateways, FIB, egress: their matches (ARP/ICMP fields, domain metadata) take the
    fast path too, and the bytes are os-ken's; raw flow stats read back the same."""
    for host in lab.topo.hosts:
        state = desired_state(host, lab.topo, lab.ports[host], lab.tunnels[host])
        _assert_same(state)
        flows = sorted(state.flows, key=repr)
        assert ofmsg.flows_from_stats(_parse(_stats_reply(flows)).body) == frozenset(flows)


def test_a_remote_endpoint_flow_is_encoded_once_for_every_switch():
    """16 hosts: the remote endpoints' matches and tunnel instructions are cached parts."""
    hosts = tuple(f"h{i}" for i in range(16))
    topo = Topology((Tenant("t", 7),), tuple(
        Binding(hosts[i % 16], f"e{i}", "t", mac=f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}")
        for i in range(320)), hosts)
    ofmsg._match_cache.clear()
    total = 0
    for h in hosts:
        ports = {f"e{i}": 10 + i for i in range(320) if hosts[i % 16] == h}
        ports.update({f"tun-{p}": 1000 + k for k, p in enumerate(hosts) if p != h})
        state = desired_state(h, topo, ports, {p: f"tun-{p}" for p in hosts if p != h})
        total += _assert_same(state)
    flows = total // 2
    assert len(ofmsg._match_cache) < flows / 5      # each remote match: once, not 15 times


def test_fields_outside_the_fast_path_fall_back_to_os_ken():
    f = flow(1, 5, {"ct_state": (0x20, 0x20), "eth_type": 0x0800, "ipv6_src": "fe80::1"},
             [("apply", (("output", 3),))], 1)
    assert ofmsg.encode(f, "add") == _oskens(f, "add")
    odd = flow(0, 1, {"eth_src": ("02:00:00:00:00:00", "ff:ff:00:00:00:00"),
                      "ipv4_dst": ("10.1.0.0", "255.255.0.0"), "in_port": 0xfffffffe}, (), 2)
    assert ofmsg.encode(odd, "delete_strict") == _oskens(odd, "delete_strict")


class _Dp:
    ofproto = ofmsg.OFP13.ofproto

    def __init__(self, xid: int) -> None:
        self.xid, self.writes = xid, []

    def send(self, buf: bytes) -> None:
        self.writes.append(buf)


def test_flow_mod_messages_carry_the_xid_send_msg_gives_them():
    f = flow(3, 100, {"eth_dst": "02:00:00:00:00:01"}, [("apply", (("output", 4),))], 5)
    assert _via_flow_mod(f, "add", 0x01020304)[4:8] == bytes([1, 2, 3, 4])
    assert _via_flow_mod(f, "add", 0x01020304)[8:] == _oskens(f, "add")[8:]


def test_send_encoded_numbers_messages_as_send_msg_would_and_batches_writes():
    f = flow(3, 100, {"eth_dst": "02:00:00:00:00:01", "metadata": (7, 0xFFFFFF)},
             [("apply", (("output", 4),))], 5)
    msgs = [ofmsg.encode(f, "add")] * 3000
    dp = _Dp(ofmsg.OFP13.ofproto.MAX_XID - 1)         # wraps around, as set_xid does
    assert ofmsg.send_encoded(dp, msgs) == 3000
    assert 1 < len(dp.writes) < 10                     # batched, not one write each
    wire = b"".join(dp.writes)
    xids, off = [], 0
    while off < len(wire):
        length, xid = struct.unpack_from("!HI", wire, off + 2)
        assert wire[off:off + 4] == msgs[0][:4] and wire[off + 8:off + length] == msgs[0][8:]
        xids.append(xid)
        off += length
    assert xids[:3] == [ofmsg.OFP13.ofproto.MAX_XID, 0, 1] and len(xids) == 3000
    assert dp.xid == xids[-1]
    for w in dp.writes:                                # every write ends on a message boundary
        assert struct.unpack_from("!H", w, 2)[0] <= len(w)


def test_a_rate_limit_in_packets_encodes_as_os_ken_does():
    m = Topology((), (Binding("h1", "p", "default"),), ("h1",),
                 limits=(RateLimit(9, "h1", None, port="p", pps=500, burst_pkts=20),))
    state = desired_state("h1", m, {"p": 3}, {})
    assert state.meters and _assert_same(state)


# --- flow stats read as bytes --------------------------------------------------------------
def _stats_reply(flows: list[Flow], xid: int = 7) -> bytes:
    """An OFPMP_FLOW reply carrying ``flows`` as a switch would (counters made up)."""
    body = b""
    for k, f in enumerate(flows):
        match, instrs = ofmsg._match_bytes(f.match), ofmsg._instructions_bytes(f.instructions)
        head = struct.pack("!HBxIIHHHH4xQQQ", 48 + len(match) + len(instrs), f.table, k, 5,
                           f.priority, f.idle_timeout, 0, 0, f.cookie, 3 * k, 100 * k)
        body += head + match + instrs
    head = struct.pack("!BBHIHH4x", 4, 19, 16 + len(body), xid, 1, 0)   # MULTIPART_REPLY, FLOW
    return head + body


def _parse(data: bytes):
    from os_ken.ofproto import ofproto_parser
    return ofproto_parser.msg(ofmsg.OFP13, 4, 19, len(data), 7, bytearray(data))


@settings(max_examples=40, deadline=None)
@given(secured_labs())
def test_flow_stats_read_as_bytes_give_the_flows_os_ken_objects_give(lab):
    for host in lab.topo.hosts:
        flows = sorted(desired_state(host, lab.topo, lab.ports[host], lab.tunnels[host]).flows,
                       key=repr)
        msg = _parse(_stats_reply(flows))
        assert all(type(e) is ofmsg.RawFlowStats for e in msg.body)
        assert ofmsg.flows_from_stats(msg.body) == frozenset(flows)
        assert ofmsg.flows_from_stats(_parse(_stats_reply(flows)).body) == frozenset(flows)
        osken = [ofmsg._osken_flow_stats_parser(e.raw, 0) for e in msg.body]
        assert frozenset(ofmsg.flow_from_stats(e) for e in osken) == frozenset(flows)


def test_a_raw_entry_looks_like_os_kens_to_everyone_else():
    f = flow(3, 100, {"eth_dst": "02:00:00:00:00:01", "metadata": (7, 0xFFFFFF)},
             [("apply", (("set_field", "tunnel_id", 7), ("output", 4)))], 5, 300)
    raw = _parse(_stats_reply([f, f])).body
    real = ofmsg._osken_flow_stats_parser(raw[1].raw, 0)
    assert raw[1].to_jsondict() == real.to_jsondict()
    assert str(raw[1]) == str(real)
    e = _parse(_stats_reply([f])).body[0]
    assert (e.priority, e.table_id, e.idle_timeout, e.cookie) == (100, 3, 300, 5)
    assert dict(e.match.items()) == dict(real.match.items())
    assert ofmsg.flow_from_stats(e) == f          # the object path, after access
    assert ofmsg.flows_from_stats([e]) == {f}
    msg = ofmsg.ofctl_printable(_parse(_stats_reply([f])))
    assert msg.body[0].instructions[0].actions[1].port == 4


# --- the diff's in-sync fast path ------------------------------------------------------------
def _reference_diff_flows(desired: SwitchState, actual: SwitchState) -> tuple:
    """The flow part of ``flows.diff`` before the common-flows fast path (main cc02d3a)."""
    from controller.flows import _flow_order, _misplaced_learned, feature_of
    want = {f.identity: f for f in desired.flows}
    have = {f.identity: f for f in actual.flows
            if feature_of(f.cookie) not in ("learned", "operator")}
    delete = [f for ident, f in have.items()
              if ident not in want and feature_of(f.cookie) is not None]
    delete += _misplaced_learned(desired, actual)
    add = [f for ident, f in want.items() if have.get(ident) != f]
    return tuple(sorted(delete, key=_flow_order)), tuple(sorted(add, key=_flow_order))


@settings(max_examples=60, deadline=None)
@given(secured_labs(), st.data())
def test_diff_and_apply_delta_give_what_they_gave_before(lab, data):
    from controller.flows import COOKIE_LEARNED, COOKIE_OPERATOR, apply_delta, diff
    host = lab.topo.hosts[0]
    desired = desired_state(host, lab.topo, lab.ports[host], lab.tunnels[host])
    flows = sorted(desired.flows, key=repr)
    kept = [f for f in flows if data.draw(st.integers(0, 4), "keep") > 0]
    changed = [replace(f, cookie=f.cookie ^ 1) if data.draw(st.booleans(), "change") else f
               for f in kept]
    extra = [flow(3, 10, {"eth_dst": "02:00:00:00:00:99"}, (), COOKIE_LEARNED | 5),
             flow(0, 5, {"in_port": 77}, (), COOKIE_OPERATOR | 1),
             flow(1, 3, {"in_port": 78}, (), 0x1234),                 # someone else's
             flow(2, 9, {"in_port": 79}, (), flows[0].cookie)]        # ours, stale
    actual = SwitchState(frozenset(changed + extra[:data.draw(st.integers(0, 4), "extra")]))
    delta = diff(desired, actual)
    assert (delta.delete_flows, delta.add_flows) == _reference_diff_flows(desired, actual)
    after = apply_delta(actual, delta)
    assert diff(desired, after).add_flows == ()
    assert {f for f in after.flows if f.cookie & ~0xFFFFFFFFFF != COOKIE_LEARNED} \
        >= desired.flows
    assert apply_delta(desired, diff(desired, desired)) == desired
