"""Operator flows: validation (422 naming the field unless override), reconcile (missing
ones come back, unstored ones go, present ones get no flow-mod), the diff never deletes
them, the REST API stores, lists and deletes them."""
from __future__ import annotations

from dataclasses import replace

import pytest

from controller.core import Core
from controller.flows import COOKIE_ISOLATION, SwitchState, diff, flow
from controller.model import ModelError
from controller.opflows import OperatorFlow, check, operator_cookie, reconcile
from controller.store import SCHEMA_VERSION, Store
from cluster.hostsfile import parse
from tests.unit.test_api import HOSTS, TOKEN
from tests.conftest import api_client

GUARDED = {1: "port r1 of tenant(s) red", 10: "the tunnel to host2"}
OUT = [{"type": "OUTPUT", "port": 5}]


@pytest.mark.parametrize("kwargs,field", [
    (dict(table_id=0), "table_id"),                                     # weft's table
    (dict(actions=[{"type": "OUTPUT", "port": 1}]), "actions[0].port"),   # a tenant's port
    (dict(actions=[{"type": "OUTPUT", "port": 10}]), "actions[0].port"),  # a tunnel
    (dict(actions=[{"type": "OUTPUT", "port": "FLOOD"}]), "actions[0].port"),
    (dict(actions=[{"type": "GOTO_TABLE", "table_id": 150}, {"type": "OUTPUT", "port": 1}]),
     "actions[1].port"),
    (dict(actions=[{"type": "WRITE_ACTIONS", "actions": [{"type": "OUTPUT", "port": 1}]}]),
     "actions[1].port"),
    (dict(actions=[{"type": "SET_FIELD", "field": "metadata", "value": 5}]), "actions[0].field"),
])
def test_escapes_are_refused_naming_the_field_unless_overridden(kwargs, field):
    args = dict(table_id=100, priority=10, match={"in_port": 5}, actions=OUT) | kwargs
    with pytest.raises(ModelError) as err:
        check(args["table_id"], args["priority"], args["match"], args["actions"], False, GUARDED)
    assert err.value.field == field
    escapes = check(args["table_id"], args["priority"], args["match"], args["actions"], True,
                    GUARDED)
    assert escapes and escapes[0].startswith(field)


@pytest.mark.parametrize("kwargs,field", [
    (dict(actions=[{"type": "BOGUS"}]), "actions[0].type"),
    (dict(actions=[{"type": "GOTO_TABLE", "table_id": 100}]), "actions[0].table_id"),
    (dict(actions=[{"type": "OUTPUT", "port": "nowhere"}]), "actions[0].port"),
    (dict(priority=70000), "priority"),
    (dict(table_id=254), "table_id"),
    (dict(idle_timeout=30), "idle_timeout"),
    (dict(match=[1]), "match"),
])
def test_malformed_flows_are_refused_even_with_override(kwargs, field):
    args = dict(table_id=100, priority=10, match={}, actions=OUT, idle_timeout=0) | kwargs
    with pytest.raises(ModelError) as err:
        check(args["table_id"], args["priority"], args["match"], args["actions"], True, GUARDED,
              idle_timeout=args["idle_timeout"])
    assert err.value.field == field


def test_reconcile_adds_missing_deletes_unstored_and_leaves_present_alone():
    a, b = OperatorFlow(1, 1, 100, 10, {}, tuple(OUT)), OperatorFlow(2, 1, 100, 11, {}, tuple(OUT))
    on = flow(100, 10, {"in_port": 5}, (), operator_cookie(1))
    stale = flow(100, 12, {}, (), operator_cookie(7))
    add, delete = reconcile([a, b], SwitchState(frozenset({on, stale})))
    assert [x.id for x in add] == [2] and delete == [7]
    assert reconcile([a], SwitchState(frozenset({on}))) == ([], [])


def test_the_diff_never_deletes_or_replaces_operator_flows():
    weft = flow(0, 100, {"in_port": 1}, (), COOKIE_ISOLATION)
    op = flow(100, 10, {"in_port": 5}, (), operator_cookie(3))
    d = diff(SwitchState(frozenset({weft})), SwitchState(frozenset({weft, op})))
    assert d.empty


@pytest.fixture
def api(make_store):
    core = Core(make_store(), parse(HOSTS))
    sw = core.switch_by_name("h1")
    core.publish({**core.switches, sw.dpid: replace(sw, ports={"r1": 1, "free": 5, "vx-h2": 10})})
    core.store.create_tenant("red")
    core.store.bind("h1", "r1", "red")
    client = api_client(core, TOKEN)
    client.core = core  # type: ignore[attr-defined]
    return client


def test_rest_operator_flows_store_list_delete(api):
    ok = {"table_id": 100, "priority": 10, "match": {"in_port": 5, "dl_type": 2048},
          "actions": [{"type": "OUTPUT", "port": 5}]}
    r = api.post("/v1/switches/h1/flows", json=ok)
    assert r.status_code == 201, r.text
    fid = r.json()["id"]
    assert int(r.json()["cookie"], 16) == operator_cookie(fid)
    for body, field in (({**ok, "table_id": 0}, "table_id"),
                        ({**ok, "actions": [{"type": "OUTPUT", "port": 1}]}, "actions[0].port"),
                        ({**ok, "match": {"bogus_field": 1}}, "match"),
                        ({**ok, "idle_timeout": 5}, "idle_timeout")):
        res = api.post("/v1/switches/h1/flows", json=body)
        assert (res.status_code, res.json()["field"]) == (422, field), res.text
    bulk = api.post("/v1/switches/h1/flows/bulk", json=[ok, {**ok, "table_id": 0}])
    assert bulk.status_code == 422 and bulk.json()["field"] == "flows.1.table_id"
    assert api.post("/v1/switches/h1/flows",
                    json={**ok, "table_id": 0, "override": True}).status_code == 201
    listed = api.get("/v1/switches/h1/operator-flows").json()
    assert [f["table_id"] for f in listed] == [100, 0]
    assert listed[0]["installed"] is False                   # switch not connected
    assert api.post("/v1/switches/nope/flows", json=ok).status_code == 404
    assert api.delete(f"/v1/switches/h1/flows/{fid}").status_code == 200
    assert api.delete(f"/v1/switches/h1/flows/{fid}").status_code == 404
    assert len(api.get("/v1/switches/h1/operator-flows").json()) == 1


def test_a_schema_3_store_is_upgraded_with_its_data(tmp_path):
    import sqlite3
    path = tmp_path / "old.db"
    s = Store(path)
    s.create_tenant("red")
    s.close()
    db = sqlite3.connect(path)
    for t in ("acl_rules", "acl_policy", "operator_flows"):
        db.execute(f"DROP TABLE {t}")
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()
    s = Store(path)
    assert [t.name for t in s.tenants()] == ["default", "red"]
    s.add_acl("red", 1, "drop")
    assert s.operator_flows() == [] and len(s.acls()) == 1
    assert s._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
