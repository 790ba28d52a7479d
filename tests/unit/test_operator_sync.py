"""Operator flows through the real os-ken app's sync (a fake switch answering through the
app's event queue): installed once, 0 flow-mods for them on later syncs after model
changes, deleted when unstored, re-installed when a fresh read no longer shows them."""
from __future__ import annotations

import time

from fastapi.testclient import TestClient

from controller import app as weft_app
from controller.rest.app import create_app
from controller.opflows import operator_cookie
from tests.unit.test_controller_loop import controller, wait  # noqa: F401  (the fixture)


def test_operator_flows_ride_the_sync_without_being_diffed(controller):  # noqa: F811
    dp = controller.dp
    sw = controller.core.switches[dp.id]
    api = TestClient(create_app(controller.core, None), raise_server_exceptions=False)
    r = api.post(f"/v1/switches/{sw.host}/flows", json={
        "table_id": 100, "priority": 7, "match": {"in_port": 9},
        "actions": [{"type": "OUTPUT", "port": 9}]})
    assert r.status_code == 201, r.text
    cookie = operator_cookie(r.json()["id"])

    def operator_mods() -> list:
        return [m for m in dp.sent if getattr(m, "cookie", None) == cookie]

    def view():
        return controller.core.switches[dp.id]
    wait(lambda: len(operator_mods()) == 1)
    assert operator_mods()[0].table_id == 100
    wait(lambda: view().operator_mods == 1)
    # model changes: syncs run, nothing is sent for the operator flow
    syncs = view().syncs
    for name in ("ta", "tb"):
        assert api.post("/v1/tenants", json={"name": name}).status_code == 201
    wait(lambda: view().syncs >= syncs + 1)
    time.sleep(0.2)
    assert len(operator_mods()) == 1 and view().operator_mods == 1
    # the switch lost it (someone deleted it by hand): the next read brings it back
    for ident, f in list(dp.table.flows.items()):
        if f.cookie == cookie:
            del dp.table.flows[ident]
    controller._post(weft_app.EventResync(audit=True), 5)
    wait(lambda: len(operator_mods()) == 2)
    # deleted through REST: a delete by its cookie, and no re-install afterwards
    assert api.delete(f"/v1/switches/{sw.host}/flows/{r.json()['id']}").status_code == 200
    wait(lambda: len(operator_mods()) == 3)
    assert operator_mods()[2].command == operator_mods()[2].datapath.ofproto.OFPFC_DELETE
    api.post("/v1/tenants", json={"name": "td"})
    time.sleep(0.3)
    assert len(operator_mods()) == 3
