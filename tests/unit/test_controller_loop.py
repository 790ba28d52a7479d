"""No handler can end the controller; /v1/health tells the truth; writes never hang.

The real os-ken app (native hub, its real event loop thread, its sender threads)
with a fake switch (`FakeDatapath`) that answers through the app's event queue.
"""
from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from controller import app as weft_app
from controller import config
from controller.rest.app import create_app
from controller.sync import IN_SYNC, stamp_flow
from cluster.hostsfile import datapath_id
from tests.fakeoftable import FakeOFTable, parse_wire

# run in the main session, not beside the lab tests (tests/conftest.py): it bounds time
pytestmark = pytest.mark.foreground

HOSTS = """
controller: {openflow: ["tcp:127.0.0.1:6653"]}
hosts:
  - {name: h1, underlay_ip: 192.168.50.10}
  - {name: h2, underlay_ip: 192.168.50.11}
"""


class FakeDatapath:
    """A switch on the other end of the real app: every message the app's sender thread
    hands it is applied to a `FakeOFTable`, and the answers come back as the os-ken
    events a real connection would post (barrier, stats, role replies)."""
    ofproto, ofproto_parser = ofproto_v1_3, ofproto_v1_3_parser
    address = ("fake", 0)

    def __init__(self, app: weft_app.WeftController, dpid: int) -> None:
        self.id, self.app = dpid, app
        self.table = FakeOFTable(ports={"weft-d0": 1, "p1": 5})
        self.sent: list = []
        self.answer = True
        self.xid, self.writes = 0, 0

    def send(self, buf: bytes) -> bool:
        """A write of several messages (the sender batches mods): parsed as OVS would."""
        self.writes += 1
        for msg in parse_wire(buf, self):
            self.send_msg(msg)
        return True

    def send_msg(self, msg: object) -> None:
        self.sent.append(msg)
        if not self.answer or isinstance(msg, ofproto_v1_3_parser.OFPRoleRequest):
            return
        for xid, body in self.table.apply_ofmsgs([msg]):
            reply = type("Reply", (), {"datapath": self, "xid": xid, "flags": 0,
                                       "body": body, "type": 0, "code": 0})()
            cls = _REPLIES[type(msg)]
            if cls is ofp_event.EventOFPAggregateStatsReply:
                reply.body = body[0]
            self.app._post(cls(reply), 5)

    def close(self) -> None:
        pass


_REPLIES = {ofproto_v1_3_parser.OFPPortDescStatsRequest: ofp_event.EventOFPPortDescStatsReply,
            ofproto_v1_3_parser.OFPFlowStatsRequest: ofp_event.EventOFPFlowStatsReply,
            ofproto_v1_3_parser.OFPGroupDescStatsRequest: ofp_event.EventOFPGroupDescStatsReply,
            ofproto_v1_3_parser.OFPMeterConfigStatsRequest:
                ofp_event.EventOFPMeterConfigStatsReply,
            ofproto_v1_3_parser.OFPAggregateStatsRequest: ofp_event.EventOFPAggregateStatsReply,
            ofproto_v1_3_parser.OFPBarrierRequest: ofp_event.EventOFPBarrierReply}


def state_change(app: weft_app.WeftController, dp: FakeDatapath, state: str) -> None:
    ev = ofp_event.EventOFPStateChange(dp)
    ev.state = state
    app._post(ev, 5)


def wait(cond, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cond()


@pytest.fixture
def controller(tmp_path, monkeypatch):
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(HOSTS)
    config.CONF(["--weft-hosts", str(hosts), "--weft-db", str(tmp_path / "weft.db"),
                 "--wsapi-port", "0", "--weft-audit-interval", "0"], project="weft")
    monkeypatch.setattr(weft_app, "STUCK_AFTER", 1.0)
    app = weft_app.WeftController()
    app_manager.register_app(app)       # what AppManager does: handlers by event class
    app.start()
    app.dp = FakeDatapath(app, datapath_id(app.core.cluster.host("h1")))
    state_change(app, app.dp, MAIN_DISPATCHER)
    wait(lambda: app.core.switches[app.dp.id].phase == IN_SYNC)
    yield app
    # what AppManager does on exit: every loop ends and every thread joins (or the
    # manager process could never exit)
    stopper = threading.Thread(target=app.stop, daemon=True)
    stopper.start()
    stopper.join(10)
    assert not stopper.is_alive(), "the controller app did not stop within 10 s"
    app_manager.unregister_app(app)
    config.CONF.reset()
    config.CONF.clear()


def test_a_failing_handler_is_logged_counted_and_the_loop_keeps_running(controller, caplog,
                                                                          monkeypatch):
    calls = []

    def orphan_topology():      # what the orphan binding of the race made the sync raise
        calls.append(1)
        raise ValueError("binding h1/p1: unknown tenant 't7'")
    monkeypatch.setattr(controller.core, "topology", orphan_topology)
    api = TestClient(create_app(controller.core, None), raise_server_exceptions=False)
    for i in range(3):          # each change runs the failing sync again
        r = api.post("/v1/tenants", json={"name": f"t{i}x"})
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 5
        n = len(calls)
        while len(calls) == n and time.monotonic() < deadline:
            time.sleep(0.02)
    assert len(calls) >= 3, "the event loop died after the first failure"
    assert controller.core.handler_errors.get("_resync", 0) >= 3
    logged = [r.getMessage() for r in caplog.records if "failed on EventResync" in r.getMessage()]
    assert logged and "unknown tenant" in logged[0]
    metrics = api.get("/metrics").text
    assert 'weft_handler_errors_total{handler="_resync"}' in metrics
    # the loop still answers requests from REST threads
    state_change(controller, controller.dp, DEAD_DISPATCHER)
    wait(lambda: not controller.core.switches[controller.dp.id].connected)
    with pytest.raises(LookupError):
        controller.core.openflow.dump_flows(controller.dp.id)
    h = api.get("/v1/health")
    assert h.status_code == 200 and h.json()["event_loop"]["alive"] is True


def test_a_connected_switch_is_programmed_stamped_and_its_view_published(controller):
    sw = controller.core.switches[controller.dp.id]
    assert sw.connected and sw.phase == IN_SYNC and sw.flow_mods > 0 and sw.ports["p1"] == 5
    assert stamp_flow(controller.core.store.epoch()) in controller.dp.table.flows.values()
    assert not any(isinstance(m, ofproto_v1_3_parser.OFPRoleRequest) for m in controller.dp.sent)
    # the sender wrote the plan's mods in batches, not one write each
    assert 0 < controller.dp.writes < sw.flow_mods


def test_a_silent_switch_times_out_and_is_read_again(controller, monkeypatch):
    """Requests have deadlines (checked on the 1 s heartbeat): nothing stays syncing."""
    monkeypatch.setattr(controller.engine, "timeout", 1.0)
    dp = controller.dp
    dp.answer = False
    controller._post(weft_app.EventResync(audit=True), 5)
    wait(lambda: controller.core.switches[dp.id].phase == "reading")
    wait(lambda: controller.core.switches[dp.id].phase == "backoff", 5)
    dp.answer = True
    wait(lambda: controller.core.switches[dp.id].phase == IN_SYNC, 10)
    assert controller.core.switches[dp.id].errors >= 1


def test_a_slow_switch_does_not_hold_the_others(controller):
    """Each switch has its own sender: h1 taking 2 s per write of mods (a switch busy or far
    away) does not delay h2's plan, computed and sent while h1's is still going out."""
    slow = controller.dp
    fast = FakeDatapath(controller, datapath_id(controller.core.cluster.host("h2")))
    state_change(controller, fast, MAIN_DISPATCHER)
    wait(lambda: controller.core.switches[fast.id].phase == IN_SYNC)
    real = slow.send

    def crawl(buf: bytes) -> bool:
        time.sleep(2)               # each write of mods
        return real(buf)
    slow.send = crawl  # type: ignore[method-assign]
    api = TestClient(create_app(controller.core, None), raise_server_exceptions=False)
    assert api.post("/v1/tenants", json={"name": "red", "vni": 1100}).status_code == 201
    for host in ("h1", "h2"):
        assert api.post("/v1/ports", json={"host": host, "port": "p1", "tenant": "red",
                                           "mac": f"02:00:00:00:00:0{host[1]}"}
                        ).status_code == 201
    wait(lambda: controller.core.switches[fast.id].synced_version == controller.core.store.version)
    assert controller.core.switches[slow.id].phase == "sending"     # still crawling
    wait(lambda: controller.core.switches[slow.id].synced_version
         == controller.core.store.version, 30)


def test_set_role_sends_role_requests_and_a_slave_sends_no_mods(controller):
    dp = controller.dp
    controller.set_role("slave", 3)
    wait(lambda: any(isinstance(m, ofproto_v1_3_parser.OFPRoleRequest) for m in dp.sent))
    wait(lambda: controller.core.switches[dp.id].role == "slave")
    n = len(dp.sent)
    api = TestClient(create_app(controller.core, None), raise_server_exceptions=False)
    assert api.post("/v1/ports", json={"host": "h1", "port": "p1", "tenant": "default",
                                       "mac": "02:00:00:00:00:09"}).status_code == 201
    time.sleep(0.5)
    assert not any(isinstance(m, ofproto_v1_3_parser.OFPFlowMod) for m in dp.sent[n:])
    assert api.get("/v1/switches/h1").json()["role"] == "slave"


def test_a_stuck_loop_makes_health_unhealthy_and_writes_503_without_hanging(controller,
                                                                            monkeypatch):
    release = threading.Event()

    def stuck_topology():
        release.wait(30)
        raise ValueError("released")
    monkeypatch.setattr(controller.core, "topology", stuck_topology)
    api = TestClient(create_app(controller.core, None), raise_server_exceptions=False)
    try:
        assert api.post("/v1/tenants", json={"name": "first"}).status_code == 201
        for _ in range(300):            # far more changes than the 128-event queue holds
            controller.core.on_change()
        time.sleep(2.5)                 # > STUCK_AFTER: the watchdog's beats go unanswered
        h = api.get("/v1/health")
        assert h.status_code == 503 and h.json()["status"] == "unhealthy"
        assert "event loop" in h.json()["problems"][0]
        t0 = time.monotonic()
        r = api.post("/v1/tenants", json={"name": "second"})
        assert r.status_code == 503 and r.json()["field"] == "controller"
        assert time.monotonic() - t0 < 3
        assert [t.name for t in controller.core.store.tenants()] == ["default", "first"]
        t0 = time.monotonic()
        assert api.get("/v1/switches/h1/flows").status_code in (409, 503)
        assert time.monotonic() - t0 < 10
    finally:
        release.set()
    deadline = time.monotonic() + 10
    while api.get("/v1/health").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert api.get("/v1/health").json()["event_loop"]["alive"] is True


def test_the_app_follows_hosts_yaml_edits_until_it_stops(controller):
    """The hosts.yaml watcher is one of the app's own threads: an edit reaches the
    member list while the app runs (that thread once died at start on a bad call)."""
    path = config.CONF.weft_hosts
    with open(path, "a") as f:
        f.write("  - {name: h3, underlay_ip: 192.168.50.12}\n")
    wait(lambda: "h3" in [h.name for h in controller.core.cluster.hosts], timeout=10)


def test_a_second_connection_is_refused_and_a_silent_first_one_closed(controller, monkeypatch):
    """A second connection claiming a connected dpid is closed at once; the first gets a
    barrier probe: answered, it stays; unanswered for PROBE_SECONDS, it is closed."""
    monkeypatch.setattr(weft_app, "PROBE_SECONDS", 0.5)
    first, closed = controller.dp, []
    monkeypatch.setattr(first, "close", lambda: closed.append("first"))
    for name in ("second", "third"):
        claim = FakeDatapath(controller, first.id)
        monkeypatch.setattr(claim, "close", lambda name=name: closed.append(name))
        state_change(controller, claim, MAIN_DISPATCHER)
        wait(lambda name=name: name in closed)
        if name == "second":
            time.sleep(1.5)                 # the probe was answered: the first stays
            assert closed == ["second"]
            first.answer = False            # from now on the first connection is silent
    wait(lambda: "first" in closed, 5)
    assert closed == ["second", "third", "first"]
