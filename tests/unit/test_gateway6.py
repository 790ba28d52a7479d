"""A configurable IPv6 gateway per network (issue 25 item 2, issue 22; schema 12).

The model (``Tenant.gateway6``: the default subnet6's first address with a gateway, an
address of subnet6, or none; refusals naming ``gateway6``), the store on both backends
(create, change, a bound port's address refused, a binding on a gateway refused), the
upgrade from schema 11 on SQLite, etcd documents and exports of version 4 (every old
store loads and keeps its meaning: a port bound by hand with ``::1`` leaves its
network without an IPv6 gateway, logged), REST and weftctl, and the pipeline through
``tests.fakeoftable``: NS, ping6 and routing use the stored address, and ``::1`` is then
an ordinary host.
"""
from __future__ import annotations

import base64
import json
import logging
import secrets
import sqlite3
from dataclasses import replace

import pytest

from cluster.hostsfile import parse
from controller.core import Core
from controller.model import GATEWAY6_AUTO, Binding, ModelError, Tenant, Topology
from controller.store import SCHEMA_VERSION, Invalid, Store
from controller.store.etcd import EtcdStore
from tests.conftest import api_client
from tests.unit.test_api import HOSTS
from tests.unit.test_route6_pipeline import IP6, ip6, na, ns, where
from tests.unit.test_route_pipeline import BINDINGS, BLUE, GREEN, GW_DB, GW_RED, MAC, RED, RED_DB

V4 = dict(subnet="10.0.0.0/24", gateway="10.0.0.1")


# --- model --------------------------------------------------------------------------------
def test_the_default_is_the_first_address_with_a_gateway_and_none_without():
    assert Tenant("red", 1000, **V4, subnet6="fd00:10::/64").gateway6 == "fd00:10::1"
    assert Tenant("red", 1000, subnet="10.0.0.0/24", subnet6="fd00:10::/64").gateway6 is None
    assert Tenant("red", 1000, **V4).gateway6 is None
    assert Tenant("red", 1000, **V4, subnet6="fd00:10::/64", gateway6=None).gateway6 is None
    t = Tenant("red", 1000, **V4, subnet6="fd00:10::/64", gateway6="FD00:10::00FE")
    assert t.gateway6 == "fd00:10::fe"
    assert replace(t, description="x").gateway6 == "fd00:10::fe"       # kept by replace
    assert replace(t, subnet6="fd00:20::/64", gateway6=GATEWAY6_AUTO).gateway6 == "fd00:20::1"


@pytest.mark.parametrize("kw,says", [
    (dict(gateway6="fd00:99::1"), "is not in subnet6 fd00:10::/64"),
    (dict(gateway6="fd00:10::"), "is the network address of fd00:10::/64"),
    (dict(gateway6="10.0.0.1"), "is an IPv4 address"),
    (dict(gateway6="gateway"), "is not an IPv6 address"),
    (dict(gateway6=7), "must be an IPv6 address"),
    (dict(gateway6="fd00:10::5", subnet6=None), "needs subnet6"),
    (dict(gateway6="fd00:10::5", gateway=None), "needs an IPv4 gateway too"),
])
def test_a_bad_gateway6_is_refused_naming_it(kw, says):
    args = {**V4, "subnet6": "fd00:10::/64", **kw}
    with pytest.raises(ModelError) as exc:
        Tenant("red", 1000, **args)
    assert exc.value.field == "gateway6" and says in exc.value.message, exc.value.message


def test_a_port_may_hold_1_once_the_gateway_is_elsewhere_never_the_gateway():
    red = Tenant("red", 1000, **V4, subnet6="fd00:10::/64", gateway6="fd00:10::fe")
    one = Binding("h1", "p1", "red", mac="02:00:00:00:00:01", ips=("10.0.0.5", "fd00:10::1"))
    Topology((red,), (one,), ("h1",))
    on_gw = replace(one, ips=("10.0.0.5", "fd00:10::fe"))
    with pytest.raises(ValueError, match="fd00:10::fe is the gateway"):
        Topology((red,), (on_gw,), ("h1",))


# --- store, both backends ---------------------------------------------------------------------
def test_the_store_keeps_gateway6_and_refuses_bad_ones_changing_nothing(make_store):
    s = make_store()
    s.create_tenant("red", subnet="10.1.0.0/24", subnet6="fd00:1::/64")
    db = s.create_network("red-db", "red", subnet="10.1.1.0/24", subnet6="fd00:2::/64",
                          gateway6="fd00:2::fe")
    assert (s.tenant("red").gateway6, db.gateway6) == ("fd00:1::1", "fd00:2::fe")
    assert s.create_network("red-x", "red", subnet="10.1.2.0/24", subnet6="fd00:3::/64",
                            gateway6=None).gateway6 is None
    assert s.create_network("red-y", "red", subnet="10.1.3.0/24", gateway=None,
                            subnet6="fd00:4::/64").gateway6 is None        # no gateway
    for bad, field in (({"gateway6": "fd00:9::1"}, "gateway6"),
                       ({"gateway6": "10.1.5.1"}, "gateway6"),
                       ({"gateway6": "fd00:5::"}, "gateway6"),
                       ({"gateway": None, "gateway6": "fd00:5::1"}, "gateway6")):
        with pytest.raises(Invalid) as exc:
            s.create_network("red-z", "red", subnet="10.1.5.0/24", subnet6="fd00:5::/64", **bad)
        assert exc.value.field == field, exc.value.message
    assert "red-z" not in {t.name for t in s.tenants()}
    # a port holding fd00:2::5: the gateway cannot move there; one cannot bind the gateway
    s.bind("h1", "p1", "red-db", mac="02:00:00:00:00:01", ips=("10.1.1.5", "fd00:2::5"))
    with pytest.raises(Invalid) as exc:
        s.update_network("red-db", gateway6="fd00:2::5")
    assert exc.value.field == "gateway6" and "h1/p1" in exc.value.message
    with pytest.raises(Invalid) as exc:
        s.bind("h1", "p2", "red-db", mac="02:00:00:00:00:02", ips=("fd00:2::fe",))
    assert exc.value.field == "ips" and "gateway of network 'red-db'" in exc.value.message
    assert s.network("red-db").gateway6 == "fd00:2::fe" and len(s.bindings()) == 1
    # an agent reporting a container on the gateway (docker run --ip6 fd00:2::fe): that
    # port is left unbound (logged), the rest of the report is bound
    assert s.replace_agent_bindings("h2", [
        {"port": "wd1", "tenant": "red-db", "mac": "02:00:00:00:00:03",
         "ips": ["10.1.1.7", "fd00:2::fe"]},
        {"port": "wd2", "tenant": "red-db", "mac": "02:00:00:00:00:04",
         "ips": ["10.1.1.8", "fd00:2::8"]}]) == 2
    assert [sb.binding.port for sb in s.bindings() if sb.binding.host == "h2"] == ["wd2"]
    # changes: kept while subnet6 and the gateway stay; none stays none; a new subnet6
    # moves the default; no gateway, no gateway6
    assert s.update_network("red-db", description="db").gateway6 == "fd00:2::fe"
    assert s.update_network("red-x", subnet6="fd00:33::/64").gateway6 is None
    assert s.update_network("red", subnet6="fd00:11::/64").gateway6 == "fd00:11::1"
    assert s.update_network("red", gateway6="fd00:11::9").gateway6 == "fd00:11::9"
    assert s.update_network("red", gateway=None).gateway6 is None
    assert s.update_network("red", gateway="10.1.0.1").gateway6 == "fd00:11::1"
    assert s.update_network("red", gateway6=None).gateway6 is None
    again = make_store()                                   # a restart, a second controller
    assert len(again.bindings()) == 2
    assert {t.name: t.gateway6 for t in again.tenants()} == {
        "default": None, "red": None, "red-db": "fd00:2::fe", "red-x": None, "red-y": None}
    Core(again, parse(HOSTS)).topology()


# --- the upgrade from schema 11 ---------------------------------------------------------------
def _schema_11_model(s: Store) -> None:
    """red, red-db (its ::1 held by a port bound by hand), red-v4 and red-lab (below)."""
    s.create_tenant("red", subnet="10.1.0.0/24", subnet6="fd00:1::/64")
    s.create_network("red-db", "red", subnet="10.1.1.0/24", subnet6="fd00:2::/64",
                     gateway6=None)
    s.create_network("red-v4", "red", subnet="10.1.2.0/24")
    s.create_network("red-lab", "red", subnet="10.1.3.0/24", gateway=None,
                     subnet6="fd00:4::/64")
    s.bind("h1", "p1", "red-db", mac="02:00:00:00:00:01", ips=("10.1.1.5", "fd00:2::1"))


def _schema_11_file(path) -> None:
    """A store as schema 11 left it: red (dual-stack, a gateway), red-db (dual-stack, a
    gateway, a port bound by hand with fd00:2::1, what schema 11 derived as its gateway
    then), red-v4 (IPv4 only) and red-lab (dual-stack, no gateway)."""
    s = Store(path)
    _schema_11_model(s)
    s.bind("h1", "p2", "red", mac="02:00:00:00:00:02", ips=("10.1.0.5", "fd00:1::5"))
    s.close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE tenants DROP COLUMN gateway6")
    db.execute("PRAGMA user_version = 11")
    db.commit()
    db.close()


UPGRADED = {"default": None, "red": "fd00:1::1", "red-db": None, "red-v4": None,
            "red-lab": None}


def test_a_schema_11_file_upgrades_and_loads_keeping_its_meaning(tmp_path, caplog):
    path = tmp_path / "old.db"
    _schema_11_file(path)
    with caplog.at_level(logging.WARNING, "weft.store"):
        s = Store(path)
    assert s._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 12
    assert {t.name: t.gateway6 for t in s.tenants()} == UPGRADED
    said = [r.getMessage() for r in caplog.records if "IPv6 gateway" in r.getMessage()]
    assert len(said) == 1 and "red-db" in said[0] and "h1/p1" in said[0] \
        and "fd00:2::1" in said[0], said
    topo = Core(s, parse(HOSTS)).topology()                # loads: the port keeps ::1
    assert topo.tenant("red-db").gateway6 is None
    # the operator gives red-db an IPv6 gateway elsewhere; ::1 stays the port's
    assert s.update_network("red-db", gateway6="fd00:2::fe").gateway6 == "fd00:2::fe"
    s.close()
    s = Store(path)                                       # a second open changes nothing
    assert {t.name: t.gateway6 for t in s.tenants()} == {**UPGRADED, "red-db": "fd00:2::fe"}
    s.close()


def _put_raw(store: EtcdStore, key: str, value: str) -> None:
    b64 = base64.b64encode
    store._etcd.post("/kv/put", {"key": b64((store.prefix + key).encode()).decode(),
                                 "value": b64(value.encode()).decode()})


def _v11_docs() -> tuple[list[dict], list[dict]]:
    """What schema 11 wrote for _schema_11_file's model: tenant documents without
    gateway6, and the bindings."""
    s = Store(":memory:")
    _schema_11_model(s)
    m = s.export()
    s.close()
    tenants = [{k: v for k, v in t.items() if k != "gateway6"} for t in m["tenants"]]
    return tenants, m["bindings"]


def test_an_etcd_prefix_with_schema_11_documents_reads_as_the_sqlite_upgrade(etcd_server,
                                                                              caplog):
    prefix = f"/up11-{secrets.token_hex(4)}/"
    old = EtcdStore(etcd_server.endpoints(), prefix, access=etcd_server.access)
    tenants, bindings = _v11_docs()
    for doc in tenants:
        _put_raw(old, f"tenants/{doc['name']}", json.dumps(doc))
    for doc in bindings:
        _put_raw(old, f"bindings/{doc['host']}/{doc['port']}", json.dumps(doc))
    old.close()
    with caplog.at_level(logging.WARNING, "weft.store"):
        s = EtcdStore(etcd_server.endpoints(), prefix, access=etcd_server.access)
        try:
            assert {t.name: t.gateway6 for t in s.tenants()} == UPGRADED
            Core(s, parse(HOSTS)).topology()
            # the first write rewrites the old documents as they were read: once p1 is
            # unbound, red-db still has no IPv6 gateway (its meaning is kept)
            s.create_network("red-new", "red", subnet="10.1.9.0/24")
            raw = s._etcd.post("/kv/range", {"key": base64.b64encode(
                f"{prefix}tenants/red-db".encode()).decode()})["kvs"][0]["value"]
            assert json.loads(base64.b64decode(raw))["gateway6"] is None
            s.unbind("h1", "p1")
            again = EtcdStore(etcd_server.endpoints(), prefix, access=etcd_server.access)
            assert {t.name: t.gateway6 for t in again.tenants()} == {**UPGRADED,
                                                                     "red-new": None}
            again.close()
            s.update_network("red-db", gateway6="fd00:2::fe")
            other = EtcdStore(etcd_server.endpoints(), prefix, access=etcd_server.access)
            assert other.network("red-db").gateway6 == "fd00:2::fe"
            assert other.network("red").gateway6 == "fd00:1::1"
            other.close()
        finally:
            s.close()
    assert any("h1/p1" in r.getMessage() for r in caplog.records)


def test_an_export_of_version_4_imports_as_the_upgrade(make_store):
    tenants, bindings = _v11_docs()
    v4 = {"format": "weft-model", "version": 4, "epoch": "e1", "tenants": tenants,
          "bindings": bindings}
    s = make_store()
    s.import_model(v4)
    assert {t.name: t.gateway6 for t in s.tenants()} == UPGRADED
    m = s.export()
    assert m["version"] == 5 and {t["name"]: t["gateway6"] for t in m["tenants"]} == {
        k: v for k, v in UPGRADED.items() if k != "default"}
    other = make_store("other")
    other.import_model(m)
    assert {t.name: t.gateway6 for t in other.tenants()} == UPGRADED


# --- REST and weftctl -------------------------------------------------------------------------
@pytest.fixture
def api(make_store):
    core = Core(make_store(), parse(HOSTS))
    core.on_change = lambda: None
    return api_client(core, "s3cret")


def test_rest_creates_changes_and_refuses_gateway6_with_422(api):
    r = api.post("/v1/tenants", json={"name": "red", "subnet": "10.1.0.0/24",
                                      "subnet6": "fd00:1::/64", "gateway6": "fd00:1::fe"})
    assert r.status_code == 201 and r.json()["gateway6"] == "fd00:1::fe", r.text
    r = api.post("/v1/networks", json={"name": "red-db", "tenant": "red",
                                       "subnet": "10.1.1.0/24", "subnet6": "fd00:2::/64"})
    assert r.status_code == 201 and r.json()["gateway6"] == "fd00:2::1", r.text
    assert api.get("/v1/networks/red").json()["gateway6"] == "fd00:1::fe"
    r = api.post("/v1/ports", json={"host": "h1", "port": "p1", "tenant": "red-db",
                                    "mac": "02:00:00:00:00:01",
                                    "ips": ["10.1.1.5", "fd00:2::5"]})
    assert r.status_code in (200, 201), r.text
    before = api.get("/v1/export").json()
    for path, body, says in (
            ("/v1/networks/red-db", {"gateway6": "fd00:9::1"}, "is not in subnet6"),
            ("/v1/networks/red-db", {"gateway6": "fd00:2::"}, "network address"),
            ("/v1/networks/red-db", {"gateway6": "10.1.1.1"}, "is an IPv4 address"),
            ("/v1/networks/red-db", {"gateway6": "fd00:2::5"}, "port h1/p1"),
            ("/v1/tenants/red", {"gateway6": "fd00:2::1"}, "is not in subnet6")):
        r = api.patch(path, json=body)
        assert r.status_code == 422 and r.json()["field"] == "gateway6" \
            and says in r.json()["error"], r.text
    r = api.post("/v1/networks", json={"name": "red-x", "tenant": "red", "subnet": "10.1.2.0/24",
                                       "subnet6": "fd00:3::/64", "gateway6": "10.1.2.1"})
    assert r.status_code == 422 and r.json()["field"] == "gateway6", r.text
    assert api.get("/v1/export").json() == before
    r = api.patch("/v1/networks/red-db", json={"gateway6": "fd00:2::fe"})
    assert r.status_code == 200 and r.json()["gateway6"] == "fd00:2::fe", r.text
    r = api.patch("/v1/networks/red-db", json={"gateway6": None})
    assert r.status_code == 200 and r.json()["gateway6"] is None, r.text


def test_weftctl_gateway6(api, monkeypatch, capsys):
    import controller.weftctl as weftctl
    monkeypatch.setattr(weftctl, "client", lambda *_: api)
    ctl = weftctl.main
    assert ctl(["tenant", "create", "red", "--subnet", "10.1.0.0/24", "--subnet6",
                "fd00:1::/64", "--gateway6", "fd00:1::fe"]) == 0
    assert "gateway 10.1.0.1, gateway6 fd00:1::fe" in capsys.readouterr().out
    assert ctl(["tenant", "show", "red"]) == 0
    assert "gateway6: fd00:1::fe" in capsys.readouterr().out
    assert ctl(["network", "create", "red-db", "--tenant", "red", "--subnet", "10.1.1.0/24",
                "--subnet6", "fd00:2::/64", "--gateway6", "none"]) == 0
    out = capsys.readouterr().out
    assert "gateway 10.1.1.1, egress" in out and "gateway6" not in out
    assert ctl(["network", "set", "red-db", "--gateway6", "fd00:2::9"]) == 0
    assert "gateway6 fd00:2::9" in capsys.readouterr().out
    assert ctl(["network", "set", "red-db", "--gateway6", "fd00:3::9"]) == 1
    assert "422 gateway6" in capsys.readouterr().err
    assert ctl(["network", "list"]) == 0
    out = capsys.readouterr().out
    assert "GATEWAY6" in out and "fd00:2::9" in out and "fd00:1::fe" in out


# --- the pipeline (fakeoftable) -----------------------------------------------------------------
GW6 = {"red": "fd00:1::fe", "red-db": "fd00:2::1"}
RED6 = replace(RED, subnet6="fd00:1::/64", gateway6=GW6["red"])
RED_DB6 = replace(RED_DB, subnet6="fd00:2::/64", gateway6=GATEWAY6_AUTO)
BLUE6 = replace(BLUE, subnet6="fd00:1::/64", gateway6=GATEWAY6_AUTO)
ONE = "fd00:1::1"           # red's old derived gateway: now port d1's address
D1 = Binding("h2", "d1", "red", mac="02:00:00:00:00:d1", ips=("10.10.1.77", ONE))
PORTS6 = {"h1": {"a": 1, "c": 2, "g": 3, "trk": 4, "e": 5, "tun-h2": 10, "wx-1000": 20,
                 "wx-2000": 21},
          "h2": {"b": 1, "d": 2, "d1": 3, "tun-h1": 10}}


def _topo(red: Tenant = RED6) -> Topology:
    bindings = tuple(replace(b, ips=(*b.ips, IP6[b.port])) if b.port in IP6 else b
                     for b in BINDINGS)
    return Topology((red, RED_DB6, BLUE6, GREEN), (*bindings, D1), ("h1", "h2"))


def _cluster(red: Tenant = RED6):
    from tests.fakeoftable import FakeCluster
    from tests.unit.test_route_pipeline import TUNNELS
    return FakeCluster.from_topology(_topo(red), PORTS6, TUNNELS)


def test_the_stored_gateway6_is_answered_and_routes_and_1_is_a_host():
    c = _cluster()
    got = c.trace("h1", "a", ns(MAC["a"], IP6["a"], GW6["red"]))[0]
    assert [(h, p) for h, p, _ in got] == [("h1", "a")]
    assert (got[0][2]["ipv6_nd_target"], got[0][2]["ipv6_nd_tll"], got[0][2]["ipv6_src"]) == (
        GW6["red"], GW_RED, GW6["red"])
    # an NS for ::1 is an ordinary one: it reaches d1 (on h2), not answered by the gateway
    assert ("h2", "d1") in where(c, "h1", "a", ns(MAC["a"], IP6["a"], ONE))
    assert ("h1", "a") not in where(c, "h1", "a", ns(MAC["a"], IP6["a"], ONE))
    # d1 answers for itself (its own address), nobody may claim the gateway
    assert where(c, "h2", "d1", na(D1.mac, ONE, ONE)) != []
    assert where(c, "h1", "a", na(MAC["a"], IP6["a"], GW6["red"])) == []
    # ping6 to the gateway answered by the switch; to ::1 delivered to d1 (bridged)
    got = c.trace("h1", "a", ip6(MAC["a"], GW_RED, IP6["a"], GW6["red"], proto=58))[0]
    assert [(h, p, f["icmpv6_type"], f["ipv6_src"]) for h, p, f in got] == [
        ("h1", "a", 129, GW6["red"])]
    assert where(c, "h1", "a", ip6(MAC["a"], D1.mac, IP6["a"], ONE, proto=58)) == [("h2", "d1")]
    # routed through it, hop limit - 1, both ways; ::1 is reachable from red-db too
    got = c.trace("h1", "a", ip6(MAC["a"], GW_RED, IP6["a"], IP6["b"]))[0]
    assert [(h, p, f["ip_ttl"], f["eth_src"]) for h, p, f in got] == [("h2", "b", 63, GW_DB)]
    got = c.trace("h2", "b", ip6(MAC["b"], GW_DB, IP6["b"], ONE))[0]
    assert [(h, p, f["ip_ttl"], f["eth_src"], f["eth_dst"]) for h, p, f in got] == [
        ("h2", "d1", 63, GW_RED, D1.mac)]


def test_a_network_without_gateway6_routes_no_ipv6_and_answers_no_ns():
    c = _cluster(replace(RED6, gateway6=None))
    for gw in (GW6["red"], ONE):
        assert ("h1", "a") not in where(c, "h1", "a", ns(MAC["a"], IP6["a"], gw))
    assert where(c, "h1", "a", ip6(MAC["a"], GW_RED, IP6["a"], IP6["b"])) == []
    assert where(c, "h2", "b", ip6(MAC["b"], GW_DB, IP6["b"], IP6["a"])) == []
    # IPv4 routing is untouched
    v4 = {"eth_src": MAC["a"], "eth_dst": GW_RED, "eth_type": 0x0800, "ipv4_src": "10.10.1.5",
          "ipv4_dst": "10.10.2.5", "ip_proto": 6, "tcp_src": 40000, "tcp_dst": 80,
          "ip_ttl": 64}
    assert where(c, "h1", "a", v4) == [("h2", "b")]


# --- static IPv6 routes ------------------------------------------------------------------------
def test_a_route_is_of_one_family():
    from controller.model import Route
    r = Route("red", "FD00:99::/48", "fd00:2::5")
    assert (r.prefix, r.via, r.v6, r.network.prefixlen) == ("fd00:99::/48", "fd00:2::5", True, 48)
    assert Route("red", "fd00:99::7", "fd00:2::5").prefix == "fd00:99::7"        # a /128
    assert Route("red", "::/0", "fd00:2::5").prefix == "::/0"
    for prefix, via, field in (("fd00:99::/48", "10.0.0.5", "via"),
                               ("10.9.0.0/16", "fd00:2::5", "via"),
                               ("fe80::/64", "fd00:2::5", "prefix"),
                               ("fd00:zz::/48", "fd00:2::5", "prefix")):
        with pytest.raises(ModelError) as exc:
            Route("red", prefix, via)
        assert exc.value.field == field, (prefix, via, exc.value.message)


def test_static_ipv6_routes_in_the_store_and_rest(make_store):
    core = Core(make_store(), parse(HOSTS))
    core.on_change = lambda: None
    api = api_client(core, "s3cret")
    for body in ({"name": "red", "subnet": "10.1.0.0/24", "subnet6": "fd00:1::/64"},):
        assert api.post("/v1/tenants", json=body).status_code == 201
    assert api.post("/v1/networks", json={"name": "red-v4", "tenant": "red",
                                          "subnet": "10.1.2.0/24"}).status_code == 201
    r = api.post("/v1/ports", json={"host": "h1", "port": "rt", "tenant": "red",
                                    "mac": "02:00:00:00:00:71",
                                    "ips": ["10.1.0.71", "fd00:1::71"]})
    assert r.status_code == 201, r.text
    r = api.post("/v1/tenants/red/routes", json={"prefix": "fd00:99::/48", "via": "fd00:1::71"})
    assert r.status_code == 201 and r.json()["network"] == "red", r.text
    r = api.post("/v1/tenants/red/routes", json={"prefix": "::/0", "via": "fd00:1::72",
                                                 "mac": "02:00:00:00:00:72"})
    assert r.status_code == 201, r.text
    for body, field in (({"prefix": "fd00:98::/48", "via": "fd00:1::1"}, "via"),   # gateway6
                        ({"prefix": "fd00:98::/48", "via": "fd00:7::5"}, "via"),   # nowhere
                        ({"prefix": "fd00:98::/48", "via": "fd00:1::73"}, "mac"),  # unknown
                        ({"prefix": "fd00:98::/48", "via": "10.1.0.71"}, "via"),   # family
                        ({"prefix": "fd00:99::/48", "via": "fd00:1::71"}, "prefix")):  # dup
        r = api.post("/v1/tenants/red/routes", json=body)
        assert r.status_code in (409, 422) and r.json()["field"] == field, (body, r.text)
    assert {x["prefix"] for x in api.get("/v1/tenants/red/routes").json()} == {
        "fd00:99::/48", "::/0"}
    # the network holding a next hop cannot lose its IPv6 gateway under the route
    r = api.patch("/v1/networks/red", json={"gateway6": None})
    assert r.status_code == 409 and r.json()["field"] == "gateway6", r.text
    r = api.delete("/v1/tenants/red/routes", params={"prefix": "::/0"})
    assert r.status_code == 200, r.text
    Core(core.store, parse(HOSTS)).topology()


def test_static_ipv6_routes_in_the_fib():
    from controller.model import Route
    from tests.fakeoftable import FakeCluster
    from tests.unit.test_route_pipeline import TUNNELS
    topo = replace(_topo(), routes=(Route("red", "fd00:99::/48", IP6["b"]),
                                    Route("red", "::/0", "fd00:2::77", "02:00:00:00:00:77"),
                                    Route("red", "10.99.0.0/16", "10.10.2.5")))
    c = FakeCluster.from_topology(topo, PORTS6, TUNNELS)
    # to fd00:99::/48: routed to b (red-db, h2), hop limit - 1, the gateway's MAC
    got = c.trace("h1", "a", ip6(MAC["a"], GW_RED, IP6["a"], "fd00:99:0:5::1"))[0]
    assert [(h, p, f["ip_ttl"], f["eth_src"], f["eth_dst"]) for h, p, f in got] == [
        ("h2", "b", 63, GW_DB, MAC["b"])]
    # the default IPv6 route: towards fd00:2::77 (known by its mac only: flooded in red-db)
    got = where(c, "h1", "a", ip6(MAC["a"], GW_RED, IP6["a"], "2001:db8::5"))
    assert got and {p for _, p in got} <= {"b", "e", "trk"}, got         # red-db only
    # the connected subnets still win: another red-db address unbound drops
    assert where(c, "h1", "a", ip6(MAC["a"], GW_RED, IP6["a"], "fd00:2::99")) == []
    # blue never sees red's routes
    assert where(c, "h1", "c", ip6(MAC["c"], gateway_mac_of(BLUE), IP6["c"],
                                   "fd00:99:0:5::1")) == []
    # and IPv4 routes are unchanged
    v4 = {"eth_src": MAC["a"], "eth_dst": GW_RED, "eth_type": 0x0800, "ipv4_src": "10.10.1.5",
          "ipv4_dst": "10.99.1.1", "ip_proto": 6, "tcp_src": 40000, "tcp_dst": 80,
          "ip_ttl": 64}
    assert where(c, "h1", "a", v4) == [("h2", "b")]


def gateway_mac_of(t: Tenant) -> str:
    from controller.model import gateway_mac
    return gateway_mac(t.vni)
