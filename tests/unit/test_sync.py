"""The pure sync engine (`controller.sync`), fed by a fake switch.

Every message the engine returns is applied to `tests.fakeoftable.FakeOFTable`
(which answers reads with os-ken objects and refuses a flow sent before its
group or meter, or a group/meter deleted while a flow uses it), and the
fake's replies are fed back: the same loop as `controller.app` with a switch.
Time is passed in; nothing sleeps.
"""
from __future__ import annotations

import logging

import pytest
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as ofpp

from controller import ofmsg
from controller.flows import COOKIE_STAMP, SwitchState, feature_of
from controller.model import DEFAULT_TENANT, Binding, RateLimit, Tenant, Topology
from controller.opflows import OperatorFlow
from controller.pipeline import learned_cookie
from controller.sync import BACKOFF, IN_SYNC, MASTER, READING, REFUSED, SENDING, SLAVE, \
    STAMP_TABLE, TRACKING, ModelSnapshot, SyncEngine, digest_flow, stamp_flow
from tests.fakeoftable import FakeOFTable, FakeSwitchError, parse_wire

H1, H2 = 0x11, 0x12
TUNNELS = {"h1": {"h2": "vx-h2"}, "h2": {"h1": "vx-h1"}}
PORTS = {H1: {"weft-d0": 1, "r1": 5, "b1": 6, "vx-h2": 10},
         H2: {"weft-d0": 1, "r2": 5, "vx-h1": 10}}
RED, BLUE = Tenant("red", 1100), Tenant("blue", 1200)


def topo(*extra: Binding, tenants=(RED, BLUE), limits=()) -> Topology:
    binds = (Binding("h1", "r1", "red", mac="02:00:00:00:01:01"),
             Binding("h2", "r2", "red", mac="02:00:00:00:01:02"), *extra)
    return Topology(tuple(tenants), binds, ("h1", "h2"), limits=tuple(limits))


def model(version: int, t: Topology | None = None, epoch: str = "epoch-a",
          operator: dict | None = None) -> ModelSnapshot:
    return ModelSnapshot(version, t or topo(), TUNNELS, operator or {}, epoch)


def mods(msgs: list) -> list:
    return [m for m in msgs if isinstance(m, (ofpp.OFPFlowMod, ofpp.OFPGroupMod,
                                              ofpp.OFPMeterMod))]


class Rig:
    """Engine plus fake switches; ``deliver`` runs messages until the switch is quiet."""

    def __init__(self, m: ModelSnapshot | None = None, switches: dict | None = None, **kw) -> None:
        self.engine = SyncEngine({H1: "h1", H2: "h2"}, **kw)
        self.engine.model = m or model(1)
        self.switches = switches or {d: FakeOFTable(ports=PORTS[d]) for d in (H1, H2)}
        self.sent: dict[int, list] = {H1: [], H2: []}
        self.now = 100.0

    def deliver(self, dpid: int, msgs: list, until_quiet: bool = True) -> None:
        while msgs:
            self.sent[dpid] += msgs
            replies = []
            for msg in msgs:
                if isinstance(msg, ofpp.OFPRoleRequest):
                    replies.append(("role", msg.role))
                else:
                    replies += [("reply", r) for r in self.switches[dpid].apply_ofmsgs([msg])]
            msgs = []
            for kind, r in replies:
                if kind == "role":
                    msgs += self.engine.role_reply(dpid, ofmsg.ROLE_NAMES[r], self.now)
                else:
                    xid, body = r
                    msgs += self.engine.reply(dpid, xid, body, False, self.now)
            if not until_quiet:
                return

    def connect(self, dpid: int) -> None:
        self.deliver(dpid, self.engine.connect(dpid, ofmsg.OFP13, self.now))

    def each(self, out: dict) -> None:
        for dpid, msgs in out.items():
            self.deliver(dpid, msgs)

    def phase(self, dpid: int) -> str:
        return self.engine.views[dpid].phase

    def read(self, dpid: int, msgs: list) -> list:
        """Answer reads (the quick one of a connect, then a full one if it missed) until
        the engine hands out a plan; returns the plan, not delivered."""
        while self.phase(dpid) == READING:
            msgs = [out for m in msgs for xid, body in self.switches[dpid].apply_ofmsgs([m])
                    for out in self.engine.reply(dpid, xid, body, False, self.now)]
        return msgs


def test_connect_programs_a_fresh_switch_and_a_reconnect_sends_0_mods():
    rig = Rig()
    rig.connect(H1)
    assert rig.phase(H1) == IN_SYNC
    want = rig.engine.switches[H1].desired()
    assert rig.switches[H1].state.flows == want.flows and rig.switches[H1].state.groups
    assert stamp_flow("epoch-a") in rig.switches[H1].state.flows
    assert rig.engine.views[H1].flow_mods == len(want.flows)
    # a new controller (fresh engine, same store) beside the programmed switch
    again = Rig(switches=rig.switches)
    again.connect(H1)
    assert again.phase(H1) == IN_SYNC and mods(again.sent[H1]) == []
    assert again.engine.views[H1].flow_mods == 0 and again.engine.views[H1].syncs == 1


def test_model_change_sends_only_the_delta():
    rig = Rig()
    rig.connect(H1)
    before = len(rig.sent[H1])
    rig.each(rig.engine.set_model(model(2, topo(Binding("h1", "b1", "blue",
                                                         mac="02:00:00:00:02:01"))), rig.now))
    sent = mods(rig.sent[H1][before:])
    assert sent and all(isinstance(m, (ofpp.OFPFlowMod, ofpp.OFPGroupMod)) for m in sent)
    assert rig.switches[H1].state.flows == rig.engine.switches[H1].desired().flows
    assert rig.engine.views[H1].synced_version == 2


def test_ordering_groups_and_meters_before_flows_deletes_after():
    """The fake refuses any flow sent before its group/meter and any group/meter deleted
    while a flow uses it; adding then removing a tenant and a port meter exercises both."""
    rig = Rig(model(1, topo(tenants=(RED,))))
    rig.connect(H1)
    n_groups = len(rig.switches[H1].groups)
    grown = topo(Binding("h1", "b1", "blue", mac="02:00:00:00:02:01"),
                 limits=(RateLimit(7, "h1", 10_000, port="b1"),))
    rig.each(rig.engine.set_model(model(2, grown), rig.now))
    assert 7 in rig.switches[H1].meters and len(rig.switches[H1].groups) == n_groups + 2
    rig.each(rig.engine.set_model(model(3, topo(tenants=(RED,))), rig.now))
    assert not rig.switches[H1].meters and len(rig.switches[H1].groups) == n_groups
    assert rig.phase(H1) == IN_SYNC
    # and the fake really refuses the wrong order
    meterless = FakeOFTable()
    flow_with_meter = next(f for f in rig.engine.switches[H1].desired().flows if f.table == 0)
    flow_with_meter = flow_with_meter.__class__(
        flow_with_meter.table, flow_with_meter.priority, flow_with_meter.match,
        (("meter", 9),), flow_with_meter.cookie)
    with pytest.raises(FakeSwitchError):
        meterless.apply_ofmsgs([ofmsg.flow_mod(ofmsg.OFP13, flow_with_meter, "add")])


def test_exception_mid_sync_then_recovery(monkeypatch, caplog):
    rig = Rig()
    out = rig.engine.connect(H1, ofmsg.OFP13, rig.now)
    replies = [r for m in out for r in rig.switches[H1].apply_ofmsgs([m])]
    import controller.sync as sync_mod
    real = sync_mod.desired_state

    def broken(*a, **k):
        raise ValueError("binding h1/r1: unknown tenant 't7'")
    monkeypatch.setattr(sync_mod, "desired_state", broken)
    for xid, body in replies:
        assert mods(rig.engine.reply(H1, xid, body, False, rig.now)) == []
    view = rig.engine.views[H1]
    assert view.phase == BACKOFF and view.syncing and view.errors == 1
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("unknown tenant" in m and "reply (xid" in m and "0000000000000011" in m
               for m in logged), logged
    # fixed; the tick before the back-off sends nothing, the one after re-reads
    monkeypatch.setattr(sync_mod, "desired_state", real)
    assert rig.engine.tick(rig.now + 0.1) == {}
    rig.now += 1
    rig.each(rig.engine.tick(rig.now))
    assert rig.phase(H1) == IN_SYNC and not rig.engine.views[H1].syncing
    assert rig.switches[H1].state.flows == rig.engine.switches[H1].desired().flows


def test_disconnect_with_requests_pending_drops_them():
    rig = Rig()
    out = rig.engine.connect(H1, ofmsg.OFP13, rig.now)
    replies = [r for m in out for r in rig.switches[H1].apply_ofmsgs([m])]
    assert rig.engine.switches[H1].pending
    rig.engine.disconnect(H1)
    assert not rig.engine.switches[H1].pending and not rig.engine.views[H1].connected
    # late answers from the old connection are ignored, timeouts never fire
    for xid, body in replies:
        assert rig.engine.reply(H1, xid, body, False, rig.now) == []
    assert rig.engine.tick(rig.now + 1000) == {}
    # a reconnect starts from scratch and finishes
    rig.connect(H1)
    assert rig.phase(H1) == IN_SYNC


def test_request_timeout_rereads():
    rig = Rig(timeout=10)
    out = rig.engine.connect(H1, ofmsg.OFP13, rig.now)
    # the switch answers all but the group desc
    for m in out:
        if not isinstance(m, ofpp.OFPGroupDescStatsRequest):
            for xid, body in rig.switches[H1].apply_ofmsgs([m]):
                rig.engine.reply(H1, xid, body, False, rig.now)
    assert rig.phase(H1) == READING
    assert rig.engine.tick(rig.now + 9) == {}                     # not yet
    assert rig.engine.tick(rig.now + 10.5) == {}                  # timed out: back off
    assert rig.phase(H1) == BACKOFF and rig.engine.views[H1].errors == 1
    rig.now += 11
    rig.each(rig.engine.tick(rig.now))                            # re-read, sync
    assert rig.phase(H1) == IN_SYNC
    # each part of a multipart reply renews the deadlines
    out = rig.engine.audit(rig.now)[H1]
    flows_req = next(m for m in out if isinstance(m, ofpp.OFPFlowStatsRequest))
    rig.engine.reply(H1, flows_req.xid, [], True, rig.now + 9)
    assert rig.engine.tick(rig.now + 15) == {} and rig.phase(H1) == READING


def test_barrier_timeout_rereads():
    rig = Rig(timeout=5)
    out = rig.engine.connect(H1, ofmsg.OFP13, rig.now)
    pending = out
    while pending:                        # deliver everything except the barrier reply
        replies = [r for m in pending if not isinstance(m, ofpp.OFPBarrierRequest)
                   for r in rig.switches[H1].apply_ofmsgs([m])]
        pending = [x for xid, body in replies
                   for x in rig.engine.reply(H1, xid, body, False, rig.now)]
    assert rig.phase(H1) == SENDING
    rig.engine.tick(rig.now + 6)
    assert rig.phase(H1) == BACKOFF
    rig.now += 7
    rig.each(rig.engine.tick(rig.now))
    assert rig.phase(H1) == IN_SYNC
    assert mods(rig.sent[H1]) == []       # the switch had everything: the re-read says so


def test_model_change_while_syncing_marks_dirty_then_a_second_pass():
    rig = Rig()
    out = rig.engine.connect(H1, ofmsg.OFP13, rig.now)
    # the model changes while the read is in flight, and again while the plan is
    rig.engine.set_model(model(2, topo(Binding("h1", "b1", "blue",
                                               mac="02:00:00:00:02:01"))), rig.now)
    plan = rig.read(H1, out)
    assert rig.phase(H1) == SENDING and rig.engine.switches[H1].dirty is False  # read saw v2
    rig.engine.set_model(model(3, topo()), rig.now)                 # blue leaves again
    assert rig.engine.switches[H1].dirty
    rig.deliver(H1, plan)                                           # barrier -> second pass
    assert rig.phase(H1) == IN_SYNC and rig.engine.views[H1].synced_version == 3
    assert rig.engine.views[H1].syncs == 2
    assert rig.switches[H1].state.flows == rig.engine.switches[H1].desired().flows
    assert not any(f.match and ("in_port", 6) in f.match for f in rig.switches[H1].flows.values())


def test_error_reply_rereads_after_the_barrier():
    rig = Rig()
    rig.connect(H1)
    # someone deletes a flow by hand, then a delta's mod is refused by the switch
    victim = next(f for f in rig.switches[H1].flows.values() if f.table == 3)
    del rig.switches[H1].flows[victim.identity]
    out = rig.engine.set_model(model(2, topo(Binding("h1", "b1", "blue"))), rig.now)[H1]
    rig.engine.error(H1, 0, ofp.OFPET_FLOW_MOD_FAILED, 0, rig.now)
    assert rig.engine.switches[H1].reread
    rig.deliver(H1, out)
    assert rig.phase(H1) == BACKOFF and rig.engine.views[H1].synced_version == 1
    rig.now += 1
    rig.each(rig.engine.tick(rig.now))
    assert rig.phase(H1) == IN_SYNC and rig.engine.views[H1].synced_version == 2
    assert victim in rig.switches[H1].flows.values()          # the re-read found it missing


def test_one_switch_failing_does_not_stop_the_others(monkeypatch):
    rig = Rig()
    rig.connect(H1)
    rig.connect(H2)
    sw1 = rig.engine.switches[H1]
    monkeypatch.setattr(sw1, "_desired_and_digest",
                        lambda: (_ for _ in ()).throw(KeyError("boom")))
    out = rig.engine.set_model(model(2, topo(Binding("h2", "x2", "blue",
                                                     mac="02:00:00:00:02:02"))), rig.now)
    assert H1 not in out and H2 in out
    assert rig.phase(H1) == BACKOFF and rig.engine.exceptions == 1
    rig.each(out)
    assert rig.phase(H2) == IN_SYNC


def test_operator_flows_ride_along_and_are_not_resent():
    of = OperatorFlow(1, H1, 100, 7, {"in_port": 9}, ({"type": "OUTPUT", "port": 9},))
    rig = Rig(model(1, operator={H1: (of,)}))
    rig.connect(H1)
    assert any(feature_of(f.cookie) == "operator" for f in rig.switches[H1].flows.values())
    n = len(mods(rig.sent[H1]))
    rig.each(rig.engine.set_model(model(2, operator={H1: (of,)}), rig.now))
    assert len(mods(rig.sent[H1])) == n
    rig.each(rig.engine.set_model(model(3), rig.now))           # unstored: deleted
    assert not any(feature_of(f.cookie) == "operator" for f in rig.switches[H1].flows.values())


# -- roles ----------------------------------------------------------------------------------
def test_no_set_role_sends_no_role_request():
    rig = Rig()
    rig.connect(H1)
    assert not any(isinstance(m, ofpp.OFPRoleRequest) for m in rig.sent[H1])
    assert rig.engine.views[H1].role == MASTER


def test_slave_reads_sends_nothing_and_takes_over_with_0_mods():
    master = Rig()
    master.connect(H1)
    standby = Rig(switches=master.switches)
    standby.engine.set_role(SLAVE, 1, standby.now)
    standby.connect(H1)
    assert standby.phase(H1) == TRACKING and mods(standby.sent[H1]) == []
    assert isinstance(standby.sent[H1][0], ofpp.OFPRoleRequest)
    # model changes reach the master; the slave sends nothing
    m2 = model(2, topo(Binding("h1", "b1", "blue", mac="02:00:00:00:02:01")))
    master.each(master.engine.set_model(m2, master.now))
    standby.each(standby.engine.set_model(m2, standby.now))
    assert mods(standby.sent[H1]) == []
    # the master dies; the standby is elected: promotion reads and finds nothing to do
    standby.each(standby.engine.set_role(MASTER, 2, standby.now))
    assert standby.phase(H1) == IN_SYNC and standby.engine.views[H1].role == MASTER
    assert mods(standby.sent[H1]) == []
    # and it is master for real: the next change is sent
    standby.each(standby.engine.set_model(model(3), standby.now))
    assert mods(standby.sent[H1])


def test_promotion_sends_the_delta_the_old_master_missed():
    master = Rig()
    master.connect(H1)
    standby = Rig(switches=master.switches)
    standby.engine.set_role(SLAVE, 1, standby.now)
    standby.connect(H1)
    # a change the old master never sent (it died first)
    standby.each(standby.engine.set_model(model(2, topo(Binding("h1", "b1", "blue"))),
                                          standby.now))
    assert mods(standby.sent[H1]) == []
    standby.each(standby.engine.set_role(MASTER, 2, standby.now))
    assert mods(standby.sent[H1]) and standby.phase(H1) == IN_SYNC
    assert master.switches[H1].state.flows == standby.engine.switches[H1].desired().flows


def test_stale_generation_error_makes_the_switch_slave():
    rig = Rig()
    rig.engine.set_role(MASTER, 5, rig.now)
    out = rig.engine.connect(H1, ofmsg.OFP13, rig.now)
    assert isinstance(out[0], ofpp.OFPRoleRequest) and out[0].role == ofp.OFPCR_ROLE_MASTER
    rig.engine.error(H1, 0, ofp.OFPET_ROLE_REQUEST_FAILED, ofp.OFPRRFC_STALE, rig.now)
    rig.deliver(H1, out[1:])
    assert rig.phase(H1) == TRACKING and mods(rig.sent[H1]) == []
    assert rig.engine.views[H1].role == SLAVE


# -- the wipe guard -----------------------------------------------------------------------
def test_empty_store_beside_programmed_switches_refuses_and_sends_nothing(caplog):
    rig = Rig()
    rig.connect(H1)
    wiped = Rig(model(1, Topology((), (), ("h1", "h2")), epoch="epoch-b"),
                switches=rig.switches)
    before = dict(rig.switches[H1].flows)
    wiped.connect(H1)
    view = wiped.engine.views[H1]
    assert view.phase == REFUSED and mods(wiped.sent[H1]) == []
    assert rig.switches[H1].flows == before
    assert "another store" in view.sync_refused and view.summary(_cluster())["sync_refused"]
    text = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    assert "--adopt" in text and "weftctl import" in text
    # model changes do not touch it either
    wiped.each(wiped.engine.set_model(model(2, topo(), epoch="epoch-b"), wiped.now))
    assert mods(wiped.sent[H1]) == [] and rig.switches[H1].flows == before
    # the store is restored (import brings the old epoch back): it syncs, 0 mods
    wiped.each(wiped.engine.set_model(model(3, topo(), epoch="epoch-a"), wiped.now))
    assert wiped.phase(H1) == IN_SYNC and mods(wiped.sent[H1]) == []


def test_weft_flows_without_a_stamp_are_refused_and_adopt_takes_them_over():
    rig = Rig()
    rig.connect(H1)
    for f in [f for f in rig.switches[H1].flows.values() if f.table == STAMP_TABLE]:
        del rig.switches[H1].flows[f.identity]                      # an older weft's switch
    fresh = Rig(model(1, topo(tenants=(RED,))), switches=rig.switches)
    fresh.connect(H1)
    assert fresh.phase(H1) == REFUSED and "no store stamp" in fresh.engine.views[H1].sync_refused
    adopt = Rig(model(1, topo(tenants=(RED,))), switches=rig.switches, adopt=True)
    adopt.connect(H1)
    assert adopt.phase(H1) == IN_SYNC and mods(adopt.sent[H1])
    assert stamp_flow("epoch-a") in rig.switches[H1].flows.values()


def test_a_fresh_switch_with_foreign_flows_only_is_programmed():
    rig = Rig()
    foreign = ofmsg.flow_mod(ofmsg.OFP13, stamp_flow("x").__class__(
        7, 5, (), (), 0x1234), "add")
    rig.switches[H1].apply_ofmsgs([foreign])
    rig.connect(H1)
    assert rig.phase(H1) == IN_SYNC
    cookies = {f.cookie for f in rig.switches[H1].flows.values()}
    assert 0x1234 in cookies and any(c & ~((1 << 40) - 1) == COOKIE_STAMP for c in cookies)


def test_views_are_immutable_values_swapped_whole():
    rig = Rig()
    first = rig.engine.views
    rig.connect(H1)
    assert rig.engine.views is not first and not first[H1].connected
    with pytest.raises(TypeError):
        rig.engine.views[H1].ports["x"] = 1          # type: ignore[index]
    with pytest.raises(AttributeError):
        rig.engine.views[H1].connected = False       # type: ignore[misc]


def _cluster():
    from cluster.hostsfile import parse
    return parse("controller: {openflow: [\"tcp:127.0.0.1:6653\"]}\n"
                 "hosts:\n  - {name: h1, underlay_ip: 192.168.50.10}\n"
                 "  - {name: h2, underlay_ip: 192.168.50.11}\n")


def test_members_follow_the_model_a_new_host_is_programmed_a_gone_one_left_alone():
    rig = Rig()
    rig.engine.hosts = {H1: "h1"}                      # h2 not (yet) a member
    rig.engine.switches[H2].host = None
    rig.connect(H1)
    rig.connect(H2)
    assert rig.phase(H2) == "idle" and mods(rig.sent[H2]) == []
    joined = ModelSnapshot(2, topo(), TUNNELS, {}, "epoch-a", {H1: "h1", H2: "h2"})
    rig.each(rig.engine.set_model(joined, rig.now))
    assert rig.phase(H2) == IN_SYNC and mods(rig.sent[H2])
    assert rig.switches[H2].state.flows == rig.engine.switches[H2].desired().flows
    n = len(rig.sent[H2])
    left = ModelSnapshot(3, topo(), TUNNELS, {}, "epoch-a", {H1: "h1"})
    rig.each(rig.engine.set_model(left, rig.now))
    assert rig.phase(H2) == "idle" and rig.sent[H2][n:] == []
    assert rig.engine.views[H2].host is None


def test_a_large_plan_still_being_sent_does_not_time_out():
    """The barrier's deadline runs from when the sender finished, not from the plan."""
    rig = Rig(timeout=10)
    plan = rig.read(H1, rig.engine.connect(H1, ofmsg.OFP13, rig.now))
    assert rig.phase(H1) == SENDING
    rig.engine.sent(H1, rig.now + 25)              # the sender needed 25 s for it
    assert rig.engine.tick(rig.now + 30) == {} and rig.phase(H1) == SENDING
    rig.deliver(H1, plan)
    assert rig.phase(H1) == IN_SYNC


def test_a_port_gone_or_renumbered_loses_what_was_learned_on_it():
    """The lab's known bug (h3 left by lease expiry and came back): OVS gave the
    re-created tunnel a new number, and the MAC learned behind the old one kept sending
    c1's frames to the dead number until c1's ARP entry expired.  The engine deletes what
    was learned on a port that went away or changed number; other ports' MACs stay."""
    rig = Rig(switches={d: FakeOFTable(ports=PORTS[d], learn=True) for d in (H1, H2)})
    rig.connect(H1)
    sw, vni = rig.switches[H1], DEFAULT_TENANT.vni
    c1, c3, r1, r2 = ("02:00:00:00:0c:01", "02:00:00:00:0c:03", "02:00:00:00:01:01",
                      "02:00:00:00:01:02")
    sw.forward(10, {"eth_src": c3, "eth_dst": c1, "tunnel_id": vni})    # c3 behind vx-h2
    sw.forward(5, {"eth_src": r1, "eth_dst": r2})                       # r1 on its port
    assert sw.forward(1, {"eth_src": c1, "eth_dst": c3}) == {(10, vni)}
    # the tunnel goes (the peer left) and comes back under another number
    del sw.ports["vx-h2"]
    rig.deliver(H1, rig.engine.port_status(H1, "vx-h2", None, rig.now))
    sw.ports["vx-h2"] = 11
    rig.deliver(H1, rig.engine.port_status(H1, "vx-h2", 11, rig.now))
    assert rig.phase(H1) == IN_SYNC
    assert sw.forward(1, {"eth_src": c1, "eth_dst": c3}) == {(11, vni)}     # flooded, live
    assert {p for p, _ in sw.forward(11, {"eth_src": r2, "eth_dst": r1,
                                          "tunnel_id": RED.vni})} == {5}
    assert any(f.cookie == learned_cookie(5, RED.vni) for f in sw.flows.values())   # kept
    # renumbered without a delete in between (a port-status 'modify'): the same
    sw.forward(11, {"eth_src": c3, "eth_dst": c1, "tunnel_id": vni})
    sw.ports["vx-h2"] = 12
    rig.deliver(H1, rig.engine.port_status(H1, "vx-h2", 12, rig.now))
    assert sw.forward(1, {"eth_src": c1, "eth_dst": c3}) == {(12, vni)}


class _Wire:
    """A connection as os-ken's ``Datapath`` is to the sender: ``send`` (raw writes) and
    ``send_msg`` (one message, its xid kept or the next one given), with ``xid``."""
    ofproto, ofproto_parser = ofp, ofpp

    def __init__(self) -> None:
        self.xid, self.writes = 0, []

    def send(self, buf: bytes) -> bool:
        self.writes.append(bytes(buf))
        return True

    def send_msg(self, msg) -> bool:
        if msg.xid is None:
            self.xid = (self.xid + 1) & ofp.MAX_XID
            msg.set_xid(self.xid)
        msg.serialize()
        return self.send(msg.buf)


def test_a_plan_sent_in_batched_writes_programs_the_switch_and_keeps_request_xids():
    """`ofmsg.send_batched` (the sender thread's way out): the mods of a plan go in a few
    large writes, each request after them with the xid the engine awaits, so the barrier
    reply still completes the sync; the switch parsing the bytes ends as desired."""
    many = topo(*(Binding("h2", f"x{i}", "red", mac=f"02:00:00:00:03:{i:02x}")
                  for i in range(200)))
    rig = Rig(model(1, many))
    wire, errors = _Wire(), []
    msgs = rig.engine.connect(H1, ofmsg.OFP13, rig.now)
    n_mods = 0
    while msgs:
        n_mods += len(mods(msgs))
        del wire.writes[:]
        assert ofmsg.send_batched(wire, msgs, lambda m, e: errors.append(e)) == len(msgs)
        sent = [m for w in wire.writes for m in parse_wire(w)]
        assert len(sent) == len(msgs)
        if len(msgs) > 100:
            assert len(wire.writes) < len(msgs) / 50, "mods not batched"
        msgs = [out for xid, body in rig.switches[H1].apply_ofmsgs(sent)
                for out in rig.engine.reply(H1, xid, body, False, rig.now)]
    assert errors == [] and rig.phase(H1) == IN_SYNC and n_mods > 400
    assert rig.switches[H1].state.flows == rig.engine.switches[H1].desired().flows


def test_a_message_that_cannot_be_encoded_is_reported_and_the_rest_still_go():
    class Broken(ofpp.OFPFlowMod):
        def serialize(self):
            raise ValueError("no such field")
    wire, errors = _Wire(), []
    good = ofmsg.flow_mod(ofmsg.OFP13, stamp_flow("e"), "add")
    barrier = ofmsg.read_request(ofmsg.OFP13, "barrier")
    barrier.set_xid(77)
    n = ofmsg.send_batched(wire, [Broken(ofmsg.OFP13), good, barrier],
                           lambda m, e: errors.append(str(e)))
    sent = [m for w in wire.writes for m in parse_wire(w)]
    assert n == 2 and errors == ["no such field"]
    assert [type(m).__name__ for m in sent] == ["OFPFlowMod", "OFPBarrierRequest"]
    assert sent[1].xid == 77


# -- the digest: a reconnect to a switch holding what we would send reads one table ---------
def _flow_reads(msgs: list) -> list:
    return [m for m in msgs if isinstance(m, ofpp.OFPFlowStatsRequest)]


def test_a_reconnect_whose_digest_matches_reads_only_the_stamp_table_then_deltas_are_right():
    rig = Rig()
    rig.connect(H1)
    assert len(_flow_reads(rig.sent[H1])) > 1                    # a fresh switch: read it all
    again = Rig(switches=rig.switches)                            # a restarted controller
    again.connect(H1)
    reads = _flow_reads(again.sent[H1])
    assert [(r.table_id, r.cookie) for r in reads] == [(STAMP_TABLE, COOKIE_STAMP)]
    assert again.phase(H1) == IN_SYNC and mods(again.sent[H1]) == []
    assert again.engine.views[H1].syncs == 1
    # what it trusted is what the switch holds: a model change sends exactly the delta
    again.each(again.engine.set_model(model(2, topo(Binding("h1", "b1", "blue",
                                                             mac="02:00:00:00:02:01"))),
                                      again.now))
    assert again.switches[H1].state.flows == again.engine.switches[H1].desired().flows
    assert again.switches[H1].state.groups == again.engine.switches[H1].desired().groups


def test_ports_renumbered_while_disconnected_mean_a_full_read_and_the_delta():
    rig = Rig()
    rig.connect(H1)
    rig.switches[H1].ports["r1"] = 7                              # re-plugged elsewhere
    again = Rig(switches=rig.switches)
    again.connect(H1)
    assert len(_flow_reads(again.sent[H1])) > 1
    assert mods(again.sent[H1]) and again.phase(H1) == IN_SYNC
    assert again.switches[H1].state.flows == again.engine.switches[H1].desired().flows
    assert any(("in_port", 7) in f.match for f in again.switches[H1].flows.values())


def test_a_changed_model_or_operator_flows_mean_a_full_read():
    rig = Rig()
    rig.connect(H1)
    of = OperatorFlow(1, H1, 100, 7, {"in_port": 9}, ({"type": "OUTPUT", "port": 9},))
    for m in (model(2, topo(Binding("h1", "b1", "blue"))), model(1, operator={H1: (of,)})):
        again = Rig(m, switches={H1: _copy(rig.switches[H1]), H2: rig.switches[H2]})
        again.connect(H1)
        assert len(_flow_reads(again.sent[H1])) > 1 and mods(again.sent[H1])
        assert again.switches[H1].state.flows - {f for f in again.switches[H1].flows.values()
                                                 if feature_of(f.cookie) == "operator"} \
            == again.engine.switches[H1].desired().flows


def _copy(table: FakeOFTable) -> FakeOFTable:
    t = FakeOFTable(ports=dict(table.ports))
    t.flows, t.groups, t.meters = dict(table.flows), dict(table.groups), dict(table.meters)
    return t


def test_the_digest_goes_last_in_a_plan_and_is_deleted_on_the_plans_first_error():
    rig = Rig()
    rig.connect(H1)
    out = rig.engine.set_model(model(2, topo(Binding("h1", "b1", "blue",
                                                      mac="02:00:00:00:02:01"))), rig.now)[H1]
    want = rig.engine.switches[H1].desired()
    new_digest = next(f for f in want.flows if f.table == STAMP_TABLE and f.priority == 1)
    sent = mods(out)
    assert isinstance(out[-1], ofpp.OFPBarrierRequest)
    assert sent[-1].command == ofp.OFPFC_ADD and sent[-1].weft_flow == new_digest
    old = [m for m in sent if m.command == ofp.OFPFC_DELETE_STRICT
           and m.weft_flow.table == STAMP_TABLE]
    assert old and sent.index(old[0]) < len(sent) - 1            # the old one goes first
    # the switch refuses a mod of the plan: the new digest must not stay on it
    barrier_reply = rig.switches[H1].apply_ofmsgs(out)           # the switch took it all
    fix = rig.engine.error(H1, 0, ofp.OFPET_FLOW_MOD_FAILED, 0, rig.now)  # ... but one mod
    assert [(m.command, m.weft_flow) for m in fix] == [(ofp.OFPFC_DELETE_STRICT, new_digest)]
    rig.switches[H1].apply_ofmsgs(fix)
    (xid, body), = barrier_reply
    assert rig.engine.reply(H1, xid, body, False, rig.now) == [] and rig.phase(H1) == BACKOFF
    assert [f for f in rig.switches[H1].flows.values() if f.table == STAMP_TABLE] \
        == [stamp_flow("epoch-a")]
    again = Rig(rig.engine.model, switches=rig.switches)          # so a restart reads it all
    again.connect(H1)
    assert len(_flow_reads(again.sent[H1])) > 1 and again.phase(H1) == IN_SYNC


def test_a_flow_deleted_by_hand_behind_a_matching_digest_is_restored_by_the_audit():
    """The chosen trade-off: a reconnect trusts a matching digest (a hand edit made while
    the controller was away stays until the next audit, 60 s by default), the audit
    reads everything and repairs it."""
    rig = Rig()
    rig.connect(H1)
    victim = next(f for f in rig.switches[H1].flows.values() if f.table == 3)
    del rig.switches[H1].flows[victim.identity]
    again = Rig(switches=rig.switches)
    again.connect(H1)
    assert mods(again.sent[H1]) == [] and victim.identity not in again.switches[H1].flows
    n = len(again.sent[H1])
    again.each(again.engine.audit(again.now))
    assert len(_flow_reads(again.sent[H1][n:])) > 1
    assert again.switches[H1].flows[victim.identity] == victim
    assert [m.weft_flow for m in mods(again.sent[H1][n:])] == [victim]


def test_the_digest_is_the_same_in_every_process_and_names_the_state():
    from controller.sync import state_digest
    rig = Rig()
    want = rig.engine.switches[H1].desired()
    base = SwitchState(frozenset(f for f in want.flows if f.table != STAMP_TABLE),
                       want.groups, want.meters)
    assert state_digest(base, [1, 2]) == state_digest(base, [2, 1])
    assert state_digest(base, [1]) != state_digest(base, [1, 2])
    fewer = base.__class__(frozenset(list(base.flows)[1:]), base.groups, base.meters)
    assert state_digest(fewer, []) != state_digest(base, [])
    assert digest_flow("epoch-a", 5).cookie == stamp_flow("epoch-a").cookie


def test_the_digest_does_not_depend_on_the_process_hash_seed():
    """A restarted controller must compute the digest its predecessor wrote: nothing in
    it may follow set order (string hashes differ per process)."""
    import subprocess
    import sys
    code = ("from tests.unit.test_sync import *\n"
            "m = model(1, topo(Binding('h1', 'b1', 'red', mac='02:00:00:00:01:09'),"
            " Binding('h2', 'x2', 'blue', mac='02:00:00:00:02:02'),"
            " limits=(RateLimit(9, 'h1', 1000, port='r1'),)))\n"
            "e = SyncEngine({H1: 'h1'}); e.model = m; sw = e.switches[H1]; sw.ports = PORTS[H1]\n"
            "print(sw.desired().flows.__len__(), sw._desired_and_digest()[1].match)\n")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": seed, "PATH": ""}).stdout
            for seed in ("1", "2", "3")}
    assert len(outs) == 1 and "metadata" in outs.pop()


def test_the_digest_after_model_and_port_changes_equals_one_computed_afresh(monkeypatch):
    """The flows' part is carried from the previous desired state (added minus removed):
    a model change hashes the flows that changed, not all of them."""
    from controller import sync
    from controller.sync import state_digest
    many = [Binding("h2", f"x{i}", "red", mac=f"02:00:00:00:03:{i:02x}") for i in range(100)]
    rig = Rig(model(1, topo(*many)))
    rig.connect(H1)
    sw = rig.engine.switches[H1]
    hashed: list[int] = []
    real = sync.flows_sum
    monkeypatch.setattr(sync, "flows_sum", lambda fs: real(list(fs)) if hashed.append(
        len(fs) if hasattr(fs, "__len__") else 0) is None else 0)
    rig.each(rig.engine.set_model(model(9, topo(*many[:-1])), rig.now))    # one MAC gone
    assert 0 < sum(hashed) < len(sw.desired().flows) / 10
    assert sw._desired_and_digest()[1].match == (("metadata", state_digest(
        sw._desired_and_digest()[0], [])),)
    steps = [model(2, topo(Binding("h1", "b1", "blue", mac="02:00:00:00:02:01"))),
             model(3, topo(Binding("h1", "b1", "red", mac="02:00:00:00:02:01"))),
             model(4, topo(tenants=(RED,)))]
    for m in steps:
        rig.each(rig.engine.set_model(m, rig.now))
        want, digest = sw._desired_and_digest()
        assert digest.match == (("metadata", state_digest(want, [])),)
        assert rig.switches[H1].state.flows == sw.desired().flows
    rig.switches[H1].ports["r1"] = 8                       # re-plugged: the switch says so
    rig.each({H1: rig.engine.port_status(H1, "r1", 8, rig.now)})
    want, digest = sw._desired_and_digest()
    assert digest.match == (("metadata", state_digest(want, [])),)
    again = Rig(steps[-1], switches=rig.switches)           # a restart: 0 mods, trusted
    again.connect(H1)
    assert mods(again.sent[H1]) == [] and len(_flow_reads(again.sent[H1])) == 1


def test_a_refused_repair_plan_also_removes_the_digest_it_left_in_place():
    """An audit finds a flow deleted by hand behind a matching digest; the repair plan
    does not resend the digest (unchanged) but a refusal of it must still remove it."""
    rig = Rig()
    rig.connect(H1)
    victim = next(f for f in rig.switches[H1].flows.values() if f.table == 3)
    del rig.switches[H1].flows[victim.identity]
    plan = rig.read(H1, rig.engine.audit(rig.now)[H1])
    assert [m.weft_flow for m in mods(plan)] == [victim]
    digest = rig.engine.switches[H1]._desired_and_digest()[1]
    fix = rig.engine.error(H1, 0, ofp.OFPET_FLOW_MOD_FAILED, 0, rig.now)
    assert [(m.command, m.weft_flow) for m in fix] == [(ofp.OFPFC_DELETE_STRICT, digest)]
