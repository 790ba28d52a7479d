"""No handler can end the controller; /v1/health tells the truth; writes never hang.

The real os-ken app (native hub, its real event loop thread), no switch: a
switch is represented only by the state the core keeps for it.
"""
from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient

from os_ken.base import app_manager
from os_ken.ofproto import ofproto_v1_3, ofproto_v1_3_parser

from controller import app as weft_app
from controller import config
from controller.api import make_app
from controller.flows import SwitchState
from cluster.hostsfile import datapath_id

HOSTS = """
controller: {openflow: ["tcp:127.0.0.1:6653"]}
hosts:
  - {name: h1, underlay_ip: 192.168.50.10}
"""


class _FakeDatapath:
    """Just enough of a datapath to build requests; the app's _request is stubbed."""
    ofproto, ofproto_parser = ofproto_v1_3, ofproto_v1_3_parser

    def __init__(self, dpid: int) -> None:
        self.id = dpid
        self.xid = 0

    def send_msg(self, msg: object) -> None:
        raise AssertionError("nothing may be sent")

    def send(self, buf: bytes) -> None:          # encoded flow-mods (ofmsg.send_encoded)
        raise AssertionError("nothing may be sent")


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
    sw = app.core.switch(datapath_id(app.core.cluster.host("h1")))
    sw.connected, sw.dp, sw.known = True, _FakeDatapath(sw.dpid), SwitchState()
    # a read of the switch answers "empty" at once
    monkeypatch.setattr(app, "_request", lambda dp, msg, done: done([]))
    yield app
    app.is_active = False
    app.events.put((app._event_stop, None))
    for t in app.threads:
        t.join(5)
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
    api = TestClient(make_app(controller.core, None), raise_server_exceptions=False)
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
    assert logged and "unknown tenant" in logged[0] and "5746" in logged[0]   # the dpid
    sw = next(iter(controller.core.switches.values()))
    assert sw.known is None and not sw.syncing       # it will be read again
    metrics = api.get("/metrics").text
    assert 'weft_handler_errors_total{handler="_resync"}' in metrics
    # the loop still answers requests from REST threads
    sw.connected, sw.dp = False, None
    with pytest.raises(LookupError):
        controller.core.dump_flows(sw.dpid)
    h = api.get("/v1/health")
    assert h.status_code == 200 and h.json()["event_loop"]["alive"] is True


def test_a_stuck_loop_makes_health_unhealthy_and_writes_503_without_hanging(controller,
                                                                            monkeypatch):
    release = threading.Event()

    def stuck_topology():
        release.wait(30)
        raise ValueError("released")
    monkeypatch.setattr(controller.core, "topology", stuck_topology)
    api = TestClient(make_app(controller.core, None), raise_server_exceptions=False)
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
