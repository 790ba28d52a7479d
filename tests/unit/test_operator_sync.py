"""Operator flows through the real os-ken app's sync (no switch: a recording datapath):
installed once, 0 flow-mods for them on later syncs after model changes, deleted when
unstored, re-installed when a fresh read of the switch no longer shows them."""
from __future__ import annotations

import time

from fastapi.testclient import TestClient

from controller.api import make_app
from controller.flows import SwitchState
from controller.operator import operator_cookie
from tests.unit.test_controller_loop import controller  # noqa: F401  (the fixture)


def _wait(cond, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cond()


def test_operator_flows_ride_the_sync_without_being_diffed(controller):  # noqa: F811
    sw = next(iter(controller.core.switches.values()))
    sent: list = []
    sw.dp.send_msg = sent.append
    sw.dp.send = lambda buf: None               # weft's own flow-mods, encoded
    sw.dp.set_xid = lambda msg: None
    api = TestClient(make_app(controller.core, None), raise_server_exceptions=False)
    r = api.post(f"/v1/switches/{sw.host}/flows", json={
        "table_id": 100, "priority": 7, "match": {"in_port": 9},
        "actions": [{"type": "OUTPUT", "port": 9}]})
    assert r.status_code == 201, r.text
    cookie = operator_cookie(r.json()["id"])

    def operator_mods() -> list:
        return [m for m in sent if getattr(m, "cookie", None) == cookie]
    _wait(lambda: len(operator_mods()) == 1)
    assert operator_mods()[0].table_id == 100 and sw.operator_mods == 1
    # model changes: syncs run, nothing is sent for the operator flow
    syncs = sw.syncs
    for name in ("ta", "tb"):
        assert api.post("/v1/tenants", json={"name": name}).status_code == 201
    _wait(lambda: sw.syncs >= syncs + 1)
    time.sleep(0.2)
    assert len(operator_mods()) == 1 and sw.operator_mods == 1
    # the switch lost it (a fresh read shows nothing): it comes back
    sw.known = SwitchState()
    api.post("/v1/tenants", json={"name": "tc"})
    _wait(lambda: len(operator_mods()) == 2)
    # deleted through REST: a delete by its cookie, and no re-install afterwards
    assert api.delete(f"/v1/switches/{sw.host}/flows/{r.json()['id']}").status_code == 200
    _wait(lambda: len(operator_mods()) == 3)
    assert operator_mods()[2].command == operator_mods()[2].datapath.ofproto.OFPFC_DELETE
    api.post("/v1/tenants", json={"name": "td"})
    time.sleep(0.3)
    assert len(operator_mods()) == 3
