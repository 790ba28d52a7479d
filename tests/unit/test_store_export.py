"""`weftctl export/import`: the whole model round-trips on both backends (and across them),
a restore keeps the epoch, a store holding anything is refused without --replace, and
damaged input changes nothing (the writes' own checks, one transaction)."""
from __future__ import annotations

import copy
import json

import pytest
from fastapi.testclient import TestClient

from cluster.hostsfile import parse
from controller.rest.app import create_app
from controller.core import Core
from controller.store import Conflict, Invalid, NotFound, Store, StoreError, parse_export
from controller.weftctl import main as weftctl_main
from tests.unit.test_api import HOSTS, TOKEN


def _populate(s) -> None:
    s.create_tenant("red", vlan=100, subnet="10.1.0.0/24", description="red team")
    s.create_tenant("blue", vlan=200)
    s.create_tenant("green", vni=5000)
    s.bind("h1", "p1", "red", mac="02:00:00:00:00:01", ips=("10.1.0.5",),
           allowed_address_pairs=(("10.1.0.6", None),))
    s.bind("h1", "t1", "green", mode="trunk", trunk=("red", "blue"))
    s.replace_agent_bindings("h2", [{"port": "wc1", "tenant": "blue", "mac": None}])
    s.add_limit("h1", 5000, 1000, port="p1")
    s.add_limit("h2", None, tenant="blue", pps=1000, burst_pkts=50)
    s.add_rule("red", 10, {"ip_proto": "tcp", "dst_port": 80}, kbps=2000, set_dscp=10)
    s.set_acl_default("red", "deny")
    s.add_acl("red", 10, "allow", "ingress", "tcp", "10.9.0.0/16", port=22)
    dropped = s.add_acl("red", 20, "drop")
    s.delete_acl("red", dropped.id)         # ids are never reused: the restore keeps that
    s.add_operator_flows([{"dpid": 1, "table_id": 100, "priority": 10,
                           "match": {"in_port": 5}, "actions": [{"type": "OUTPUT", "port": 5}],
                           "description": "mirror"}])


def test_round_trip_keeps_everything_and_the_epoch(make_store):
    src = make_store("src")
    _populate(src)
    model = src.export()
    assert json.loads(json.dumps(model)) == model                # plain JSON
    assert len(model["tenants"]) == 3 and len(model["bindings"]) == 3
    dst = make_store("dst")
    assert dst.epoch() != src.epoch()
    counts = dst.import_model(model)
    assert counts["tenants"] == 3 and counts["operator_flows"] == 1
    assert dst.export() == model and dst.epoch() == src.epoch()
    assert dst.tenants() == src.tenants() and dst.bindings() == src.bindings()
    assert dst.acl_deny() == {"red"} and dst.orphans() == 0
    # new ids continue after the restored ones, never reusing a deleted one
    assert dst.add_acl("red", 30, "drop").id == src.add_acl("red", 30, "drop").id
    assert dst.add_rule("blue", 1, {}, kbps=100).id == 4          # smallest free meter id
    assert make_store("dst").epoch() == src.epoch()              # and after a restart


def test_import_across_backends(make_store, tmp_path):
    sqlite = Store(tmp_path / "other.db")
    _populate(sqlite)
    model = sqlite.export()
    dst = make_store("dst")
    dst.import_model(model)
    assert dst.export() == model
    back = Store(tmp_path / "back.db")
    back.import_model(dst.export())
    assert back.export() == model


def test_a_store_holding_anything_is_refused_unless_replace(make_store):
    src = make_store("src")
    _populate(src)
    model = src.export()
    dst = make_store("dst")
    dst.create_tenant("stale")
    with pytest.raises(Conflict) as e:
        dst.import_model(model)
    assert e.value.field == "store" and "--replace" in e.value.message
    assert [t.name for t in dst.tenants()] == ["default", "stale"]
    dst.import_model(model, replace=True)
    assert dst.export() == model                     # "stale" is gone: replace is everything


BREAKAGES = [
    # (what is damaged, how, the error class, the field it names)
    ("a VNI out of range", lambda m: m["tenants"][0].update(vni=1 << 24), Invalid,
     "tenants[0].vni"),
    ("two tenants share a VNI", lambda m: m["tenants"][1].update(vni=m["tenants"][0]["vni"]),
     Conflict, "tenants[1].vni"),
    ("a binding names no tenant", lambda m: m["bindings"][2].update(tenant="ghost"), NotFound,
     "bindings[2].tenant"),
    ("a port listed twice", lambda m: m["bindings"].append(dict(m["bindings"][0])), Conflict,
     "bindings[3].port"),
    ("a meter id used twice", lambda m: m["rules"][0].update(id=m["limits"][0]["id"]),
     Conflict, "rules[0].id"),
    ("a limit on an unbound port", lambda m: m["limits"][0].update(port="nope"), NotFound,
     "limits[0].port"),
    ("an ACL of a missing tenant", lambda m: m["acls"][0].update(tenant="ghost"), NotFound,
     "acls[0].tenant"),
    ("a bad ACL action", lambda m: m["acls"][0].update(action="maybe"), Invalid,
     "acls[0].action"),
    ("a missing field", lambda m: m["tenants"][0].pop("vni"), Invalid, "tenants[0].vni"),
    ("a bad default", lambda m: m["acl_defaults"].update(red="sometimes"), Invalid,
     "acl_defaults"),
    ("an operator flow in table 254", lambda m: m["operator_flows"][0].update(table_id=254),
     Invalid, "operator_flows[0].table_id"),
    ("not an export", lambda m: m.update(format="other"), Invalid, "format"),
    ("an unknown section", lambda m: m.update(extra=[]), Invalid, "extra"),
    ("a bad epoch", lambda m: m.update(epoch="../x"), Invalid, "epoch"),
]


@pytest.mark.parametrize("what, damage, error, field", BREAKAGES,
                         ids=[b[0] for b in BREAKAGES])
def test_damaged_input_changes_nothing(make_store, what, damage, error, field):
    src = make_store("src")
    _populate(src)
    model = src.export()
    bad = copy.deepcopy(model)
    damage(bad)
    dst = make_store("dst")
    dst.create_tenant("keep")
    before = dst.export()
    for replace in (False, True):
        with pytest.raises(error) as e:
            dst.import_model(bad, replace=replace)
        assert e.value.field == field, (what, e.value.field, e.value.message)
    assert dst.export() == before


def test_parse_export_rejects_shapes_without_a_store():
    for data, field in (([], "format"), ({"format": "weft-model", "version": 6}, "version"),
                        ({"format": "weft-model", "version": 1, "epoch": "e1",
                          "tenants": {}}, "tenants"),
                        ({"format": "weft-model", "version": 1, "epoch": "e1",
                          "tenants": ["red"]}, "tenants[0]")):
        with pytest.raises(StoreError) as e:
            parse_export(data)
        assert e.value.field == field
    m = parse_export({"format": "weft-model", "version": 1, "epoch": "e1",
                      "tenants": [{"name": "red", "vni": 1000}]})
    assert m.tenants[0].name == "red" and m.bindings == ()


@pytest.fixture
def api(make_store):
    client = TestClient(create_app(Core(make_store(), parse(HOSTS)), TOKEN),
                        raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {TOKEN}"
    return client


def test_rest_and_weftctl_export_import(api, make_store, monkeypatch, capsys, tmp_path):
    import controller.weftctl as w
    monkeypatch.setattr(w, "client", lambda *_: api)
    assert weftctl_main(["tenant", "create", "red", "--vlan", "100"]) == 0
    assert weftctl_main(["port", "bind", "h1", "p1", "red"]) == 0
    capsys.readouterr()
    assert weftctl_main(["export"]) == 0
    dump = tmp_path / "model.json"
    dump.write_text(capsys.readouterr().out)
    model = json.loads(dump.read_text())
    assert [t["name"] for t in model["tenants"]] == ["red"] and model["bindings"][0]["port"] == "p1"
    assert weftctl_main(["import", str(dump)]) == 1              # not empty
    assert "409 store" in capsys.readouterr().err
    assert weftctl_main(["import", str(dump), "--replace"]) == 0
    assert "imported: 1 tenants, 1 bindings" in capsys.readouterr().out
    broken = tmp_path / "broken.json"
    broken.write_text(dump.read_text()[:-20])
    assert weftctl_main(["import", str(broken), "--replace"]) == 2
    assert "is not JSON" in capsys.readouterr().err
    r = api.post("/v1/import", params={"replace": "true"},
                 json={**model, "tenants": [{"name": "red", "vni": 7}]})
    assert (r.status_code, r.json()["field"]) == (422, "tenants[0].vni")
    assert api.get("/v1/export").json() == model
    assert api.post("/v1/import", json=model,
                    headers={"Authorization": "Bearer wrong"}).status_code == 401
