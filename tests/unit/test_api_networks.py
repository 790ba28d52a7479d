"""REST and weftctl for networks inside tenants, static routes and the agents' gateway
list (issue 22 item 1, docs/controller.md "Networks and routes"): on both backends, every
refusal is a 4xx naming its field and changes nothing."""
from __future__ import annotations

import pytest

import controller.weftctl as weftctl
from cluster.hostsfile import parse
from controller.core import Core
from controller.model import DEFAULT_CONNTRACK_LIMIT as CONNTRACK_LIMIT
from tests.conftest import api_client

HOSTS = """
controller: {openflow: ["tcp:127.0.0.1:6653"]}
hosts:
  - {name: h1, underlay_ip: 192.168.50.10}
  - {name: h2, underlay_ip: 192.168.50.11}
  - {name: h3, underlay_ip: 192.168.50.12}
"""
TOKEN = "s3cret"


@pytest.fixture
def core(make_store):
    c = Core(make_store(), parse(HOSTS))
    c.changes = 0

    def bump():
        c.changes += 1
    c.on_change = bump
    return c


@pytest.fixture
def api(core):
    client = api_client(core, TOKEN)
    return client


def _ok(r, status: int = 200) -> dict:
    assert r.status_code == status, r.text
    return r.json()


def _red(api) -> None:
    """Tenant red (its default network red: 10.10.1.0/24, gateway, egress), networks
    red-db (VLAN 101, egress off) and red-lab (no gateway)."""
    _ok(api.post("/v1/tenants", json={"name": "red", "subnet": "10.10.1.0/24"}), 201)
    _ok(api.post("/v1/networks", json={"name": "red-db", "tenant": "red", "vlan": 101,
                                       "subnet": "10.10.2.0/24", "egress": False}), 201)
    _ok(api.post("/v1/networks", json={"name": "red-lab", "tenant": "red",
                                       "subnet": "10.10.3.0/24", "gateway": None}), 201)


def test_new_tenants_get_a_gateway_and_egress_old_calls_keep_their_meaning(api, core):
    red = _ok(api.post("/v1/tenants", json={"name": "red", "subnet": "10.1.0.0/24"}), 201)
    assert (red["gateway"], red["egress"], red["networks"], red["routes"]) == \
        ("10.1.0.1", True, [], [])
    blue = _ok(api.post("/v1/tenants", json={"name": "blue", "subnet": "10.1.0.0/24",
                                             "gateway": "10.1.0.254", "egress": False}), 201)
    assert (blue["gateway"], blue["egress"]) == ("10.1.0.254", False)
    plain = _ok(api.post("/v1/tenants", json={"name": "plain"}), 201)   # no subnet, no gateway
    assert (plain["gateway"], plain["egress"]) == (None, False)
    none = _ok(api.post("/v1/tenants", json={"name": "none", "subnet": "10.2.0.0/24",
                                             "gateway": None}), 201)
    assert (none["gateway"], none["egress"]) == (None, False)
    # GET lists tenants only (networks are at /v1/networks), with their networks' names
    _ok(api.post("/v1/networks", json={"name": "red-db", "tenant": "red"}), 201)
    assert [t["name"] for t in _ok(api.get("/v1/tenants"))] == ["default", "blue", "none",
                                                                "plain", "red"]
    got = _ok(api.get("/v1/tenants/red"))
    assert got["networks"] == ["red-db"] and got["ports"] == [] and "domain" not in got
    assert api.get("/v1/tenants/red-db").status_code == 404
    patched = _ok(api.patch("/v1/tenants/red", json={"egress": False, "description": "x"}))
    assert (patched["egress"], patched["description"], patched["gateway"]) == \
        (False, "x", "10.1.0.1")
    assert _ok(api.patch("/v1/tenants/red", json={"vlan": 7}))["vlan"] == 7
    assert core.changes == 7


def test_networks_crud_ports_and_the_network_synonym(api, core):
    _red(api)
    nets = _ok(api.get("/v1/networks"))
    assert [(n["name"], n["tenant"], n["default_network"]) for n in nets] == [
        ("default", "default", True), ("red", "red", True), ("red-db", "red", False),
        ("red-lab", "red", False)]
    db = nets[2]
    assert (db["vni"], db["vlan"], db["gateway"], db["egress"], db["gateway_mac"]) == \
        (1001, 101, "10.10.2.1", False, "0a:77:66:00:03:e9")
    assert [n["name"] for n in _ok(api.get("/v1/networks", params={"tenant": "red"}))] == \
        ["red", "red-db", "red-lab"]
    assert api.get("/v1/networks", params={"tenant": "ghost"}).status_code == 404
    # bind by network (or by tenant: the same field), one at a time, in bulk, by the agent
    _ok(api.post("/v1/ports", json={"host": "h1", "port": "p1", "network": "red-db",
                                    "mac": "02:00:00:00:00:01", "ips": ["10.10.2.5"]}), 201)
    _ok(api.put("/v1/ports/h1/p1", json={"network": "red-db", "tenant": "red-db",
                                         "mac": "02:00:00:00:00:01", "ips": ["10.10.2.5"]}))
    _ok(api.post("/v1/ports/bulk", json=[{"host": "h2", "port": f"b{i}", "network": "red-lab"}
                                         for i in range(3)]), 201)
    _ok(api.put("/v1/hosts/h3/attachments", json=[
        {"port": "c1", "network": "red", "mac": "02:00:00:00:00:07", "ips": ["10.10.1.7"]}]))
    assert [p["port"] for p in _ok(api.get("/v1/networks/red-lab/ports"))] == ["b0", "b1", "b2"]
    assert [p["port"] for p in _ok(api.get("/v1/ports", params={"network": "red-lab"}))] == \
        ["b0", "b1", "b2"]
    shown = _ok(api.get("/v1/networks/red-db"))
    assert [p["port"] for p in shown["ports"]] == ["p1"] and shown["tenant"] == "red"
    assert _ok(api.get("/v1/networks/default"))["builtin"] is True
    # patch, delete (force unbinds), a default network goes only with its tenant
    patched = _ok(api.patch("/v1/networks/red-db", json={"gateway": "10.10.2.254",
                                                         "egress": True}))
    assert (patched["gateway"], patched["egress"]) == ("10.10.2.254", True)
    assert _ok(api.patch("/v1/networks/red", json={"description": "web"}))["description"] == "web"
    r = api.delete("/v1/networks/red-lab")
    assert r.status_code == 409 and "3 port binding" in r.json()["error"]
    # the refusal names the ports and their hosts (docs/docker.md: delete while in use)
    assert "h2/b0, h2/b1, h2/b2" in r.json()["error"]
    assert [(p["host"], p["port"]) for p in r.json()["ports"]] == \
        [("h2", "b0"), ("h2", "b1"), ("h2", "b2")]
    r = api.delete("/v1/networks/red-db", params={"force": "false"})
    assert r.status_code == 409 and "h1/p1 (10.10.2.5)" in r.json()["error"]
    assert r.json()["ports"] == [{"host": "h1", "port": "p1", "mac": "02:00:00:00:00:01",
                                  "ips": ["10.10.2.5"], "source": "api"}]
    assert _ok(api.delete("/v1/networks/red-lab", params={"force": "true"})) == \
        {"deleted": "red-lab", "bindings_removed": 3}
    r = api.delete("/v1/networks/red")
    assert r.status_code == 409 and "delete the tenant" in r.json()["error"]
    r = api.delete("/v1/tenants/red")
    assert r.status_code == 409 and "networks red-db" in r.json()["error"]
    assert _ok(api.delete("/v1/tenants/red", params={"force": "true"}))["bindings_removed"] == 2
    assert [n["name"] for n in _ok(api.get("/v1/networks"))] == ["default"]
    assert _ok(api.get("/v1/ports")) == []


def test_routes_through_rest(api, core):
    _red(api)
    _ok(api.post("/v1/ports", json={"host": "h1", "port": "p1", "tenant": "red-db",
                                    "mac": "02:00:00:00:00:01", "ips": ["10.10.2.5"]}), 201)
    got = _ok(api.post("/v1/tenants/red/routes", json={"prefix": "192.168.0.0/16",
                                                       "via": "10.10.2.5"}), 201)
    assert got == {"tenant": "red", "prefix": "192.168.0.0/16", "via": "10.10.2.5",
                   "mac": None, "network": "red-db"}
    _ok(api.post("/v1/tenants/red/routes", json={"prefix": "0.0.0.0/0", "via": "10.10.1.254",
                                                 "mac": "02:00:00:00:00:fe"}), 201)
    assert [(r["prefix"], r["network"]) for r in _ok(api.get("/v1/tenants/red/routes"))] == \
        [("0.0.0.0/0", "red"), ("192.168.0.0/16", "red-db")]
    assert len(_ok(api.get("/v1/tenants/red"))["routes"]) == 2
    assert core.store.model().routes == tuple(core.store.routes())
    assert len(core.topology().routes) == 2           # what the pipeline gets
    r = api.delete("/v1/networks/red-db", params={"force": "true"})
    assert r.status_code == 409 and "192.168.0.0/16" in r.json()["error"]
    assert _ok(api.delete("/v1/tenants/red/routes", params={"prefix": "192.168.0.0/16"})) == \
        {"tenant": "red", "deleted": "192.168.0.0/16"}
    assert [r["prefix"] for r in _ok(api.get("/v1/tenants/red/routes"))] == ["0.0.0.0/0"]


BAD = [
    # (method, path, body or query, status, field)
    ("post", "/v1/networks", {"name": "n1"}, 422, "tenant"),
    ("post", "/v1/networks", {"name": "N1", "tenant": "red"}, 422, "name"),
    ("post", "/v1/networks", {"name": "n1", "tenant": "red", "vni": 5}, 422, "vni"),
    ("post", "/v1/networks", {"name": "n1", "tenant": "red", "bogus": 1}, 422, "bogus"),
    ("post", "/v1/networks", {"name": "n1", "tenant": "ghost"}, 404, "tenant"),
    ("post", "/v1/networks", {"name": "n1", "tenant": "red-db"}, 404, "tenant"),
    ("post", "/v1/networks", {"name": "n1", "tenant": "default"}, 409, "tenant"),
    ("post", "/v1/networks", {"name": "red-db", "tenant": "red"}, 409, "name"),
    ("post", "/v1/networks", {"name": "red", "tenant": "red"}, 422, "tenant"),
    ("post", "/v1/networks", {"name": "n1", "tenant": "red", "vlan": 101}, 409, "vlan"),
    ("post", "/v1/networks", {"name": "n1", "tenant": "red", "subnet": "10.9.0.0/24",
                              "gateway": "10.8.0.1"}, 422, "gateway"),
    ("post", "/v1/networks", {"name": "n1", "tenant": "red", "gateway": "x" * 16}, 422,
     "gateway"),
    ("post", "/v1/networks", {"name": "n1", "tenant": "red", "egress": True}, 422, "egress"),
    ("post", "/v1/networks", {"name": "n1", "tenant": "red", "egress": "yes"}, 422, "egress"),
    ("post", "/v1/tenants", {"name": "t1", "subnet": "10.9.0.0/24", "gateway": "10.9.1.1"},
     422, "gateway"),
    ("post", "/v1/tenants", {"name": "t1", "vni": 70000, "subnet": "10.9.0.0/24",
                             "gateway": "10.9.0.1"}, 409, "gateway"),
    ("patch", "/v1/networks/red-db", {"vni": 1500}, 422, "vni"),
    ("patch", "/v1/networks/red-db", {"gateway": "10.10.9.1"}, 422, "gateway"),
    ("patch", "/v1/networks/red-lab", {"egress": True}, 422, "egress"),
    ("patch", "/v1/networks/red-db", {"gateway": None}, 409, "gateway"),   # a route's via
    ("patch", "/v1/networks/ghost", {"description": "x"}, 404, "name"),
    ("patch", "/v1/networks/default", {"description": "x"}, 409, "name"),
    ("patch", "/v1/tenants/red-db", {"description": "x"}, 404, "name"),
    ("delete", "/v1/networks/ghost", None, 404, "name"),
    ("delete", "/v1/networks/red-db", None, 409, "name"),
    ("delete", "/v1/tenants/red-db", None, 404, "name"),
    ("post", "/v1/tenants/red/routes", {"prefix": "10.0.0.0/8"}, 422, "via"),
    ("post", "/v1/tenants/red/routes", {"prefix": "10.0.0.0/33", "via": "10.10.2.5"}, 422,
     "prefix"),
    ("post", "/v1/tenants/red/routes", {"prefix": "10.0.0.0/8", "via": "10.10.3.5",
                                        "mac": "02:00:00:00:00:03"}, 422, "via"),
    ("post", "/v1/tenants/red/routes", {"prefix": "10.0.0.0/8", "via": "10.10.2.6"}, 422,
     "mac"),
    ("post", "/v1/tenants/red/routes", {"prefix": "10.0.0.0/8", "via": "10.10.2.6",
                                        "mac": "01:00:00:00:00:01"}, 422, "mac"),
    ("post", "/v1/tenants/red/routes", {"prefix": "0.0.0.0/0", "via": "10.10.2.5"}, 409,
     "prefix"),
    ("post", "/v1/tenants/ghost/routes", {"prefix": "10.0.0.0/8", "via": "10.10.2.5"}, 404,
     "tenant"),
    ("post", "/v1/tenants/red-db/routes", {"prefix": "10.0.0.0/8", "via": "10.10.2.5"}, 404,
     "tenant"),
    ("delete", "/v1/tenants/red/routes", {"prefix": "10.0.0.0/8"}, 404, "prefix"),
    ("delete", "/v1/tenants/red/routes", {}, 422, "prefix"),
    ("post", "/v1/ports", {"host": "h1", "port": "p9", "tenant": "red", "network": "red-db"},
     422, "network"),
    ("post", "/v1/ports", {"host": "h1", "port": "p9", "network": "ghost"}, 404, "network"),
    ("post", "/v1/ports", {"host": "h1", "port": "p9", "tenant": "ghost"}, 404, "tenant"),
    ("put", "/v1/ports/h1/p1", {"network": "ghost"}, 404, "network"),
    ("get", "/v1/ports", {"tenant": "red", "network": "red-db"}, 422, "network"),
    ("post", "/v1/ports/bulk", [{"host": "h1", "port": "p8", "network": "red"},
                                {"host": "h1", "port": "p9", "network": "red",
                                 "tenant": "red-db"}], 422, "1.network"),
    ("put", "/v1/hosts/h1/attachments", [{"port": "c1"}], 422, "0.tenant"),
    ("get", "/v1/hosts/ghost/gateways", None, 404, "host"),
]


@pytest.mark.parametrize("method, path, body, status, field", BAD,
                         ids=[f"{m} {p} {b}"[:80] for m, p, b, _, _ in BAD])
def test_bad_requests_are_4xx_naming_the_field_and_change_nothing(api, core, method, path,
                                                                 body, status, field):
    _red(api)
    _ok(api.post("/v1/ports", json={"host": "h1", "port": "p1", "tenant": "red-db",
                                    "mac": "02:00:00:00:00:01", "ips": ["10.10.2.5"]}), 201)
    _ok(api.post("/v1/tenants/red/routes", json={"prefix": "0.0.0.0/0", "via": "10.10.2.5"}),
        201)
    before, changes = _ok(api.get("/v1/export")), core.changes
    if method in ("get", "delete"):
        r = getattr(api, method)(path, params=body)
    else:
        r = getattr(api, method)(path, json=body)
    assert (r.status_code, r.json()["field"]) == (status, field), r.text
    assert r.json()["error"]
    assert _ok(api.get("/v1/export")) == before and core.changes == changes


def test_the_agents_gateway_list(api, core):
    _red(api)
    _ok(api.post("/v1/tenants", json={"name": "blue", "subnet": "10.10.1.0/24",
                                      "vlan": 200}), 201)
    _ok(api.post("/v1/tenants", json={"name": "dark", "subnet": "10.10.1.0/24",
                                      "gateway": None}), 201)
    _ok(api.post("/v1/ports", json={"host": "h1", "port": "p1", "network": "red-db"}), 201)
    _ok(api.post("/v1/ports", json={"host": "h1", "port": "p2", "network": "dark"}), 201)
    _ok(api.post("/v1/ports", json={"host": "h2", "port": "t1", "mode": "trunk",
                                    "trunk": ["blue"]}), 201)
    got = _ok(api.get("/v1/hosts/h1/gateways"))
    assert got == {"gateways": [{
        "tenant": "red", "id": 1000, "port": "wx-1000", "mac": "0a:77:68:00:03:e8",
        "next_hop_mac": "0a:77:67:00:03:e8",
        "subnets": ["10.10.1.0/24", "10.10.2.0/24"],   # red-lab has no gateway
        "egress_subnets": ["10.10.1.0/24"],            # red-db has egress off
        "conntrack_limit": CONNTRACK_LIMIT}]}
    assert [g["tenant"] for g in _ok(api.get("/v1/hosts/h2/gateways"))["gateways"]] == ["blue"]
    assert _ok(api.get("/v1/hosts/h3/gateways")) == {"gateways": []}   # nothing bound there


def test_a_tenant_s_conntrack_limit_reaches_its_hosts(api, core):
    """conntrack_limit is the tenant's (create, PATCH, the agents' list); bad values and a
    network's own are refused with nothing changed."""
    _red(api)
    _ok(api.post("/v1/ports", json={"host": "h1", "port": "p1", "network": "red-db"}), 201)
    assert _ok(api.get("/v1/tenants/red"))["conntrack_limit"] == CONNTRACK_LIMIT
    _ok(api.patch("/v1/tenants/red", json={"conntrack_limit": 50}))
    (gw,) = _ok(api.get("/v1/hosts/h1/gateways"))["gateways"]
    assert gw["conntrack_limit"] == 50
    blue = _ok(api.post("/v1/tenants", json={"name": "blue", "subnet": "10.9.0.0/24",
                                             "conntrack_limit": 7}), 201)
    assert blue["conntrack_limit"] == 7
    before = _ok(api.get("/v1/export"))
    for path, body in (("/v1/tenants/red", {"conntrack_limit": 0}),
                       ("/v1/tenants/red", {"conntrack_limit": 10_000_001}),
                       ("/v1/networks/red-db", {"conntrack_limit": 5})):
        r = api.patch(path, json=body)
        assert r.status_code == 422 and r.json()["field"] == "conntrack_limit", r.text
    assert _ok(api.get("/v1/export")) == before


@pytest.fixture
def ctl(api, monkeypatch):
    monkeypatch.setattr(weftctl, "client", lambda *_: api)
    return weftctl.main


def test_weftctl_networks_and_routes(api, ctl, capsys):
    assert ctl(["tenant", "create", "red", "--subnet", "10.10.1.0/24", "--egress", "off"]) == 0
    assert "gateway 10.10.1.1, egress off" in capsys.readouterr().out
    assert ctl(["tenant", "create", "blue", "--subnet", "10.10.1.0/24", "--gateway", "none",
                "--conntrack-limit", "500"]) == 0
    assert "no gateway" in capsys.readouterr().out
    assert ctl(["tenant", "set", "blue", "--conntrack-limit", "600"]) == 0
    assert "tenant blue: conntrack limit 600" in capsys.readouterr().out
    assert ctl(["tenant", "show", "blue"]) == 0
    assert "conntrack_limit: 600" in capsys.readouterr().out
    assert ctl(["network", "create", "red-db", "--tenant", "red", "--subnet", "10.10.2.0/24",
                "--vlan", "101", "--description", "db"]) == 0
    assert "network red-db of tenant red created (vni 1002, gateway 10.10.2.1, egress on)" in \
        capsys.readouterr().out
    assert ctl(["network", "create", "x", "--tenant", "red-db"]) == 1
    assert "404 tenant" in capsys.readouterr().err
    assert ctl(["network", "list", "--tenant", "red"]) == 0
    out = capsys.readouterr().out
    assert "red-db" in out and "blue" not in out and "GATEWAY" in out
    assert ctl(["network", "set", "red-db", "--gateway", "10.10.2.254", "--egress", "off",
                "--vlan", "none"]) == 0
    capsys.readouterr()
    db = _ok(api.get("/v1/networks/red-db"))
    assert (db["gateway"], db["egress"], db["vlan"]) == ("10.10.2.254", False, None)
    assert ctl(["network", "set", "red-db"]) == 2                     # nothing to set
    assert ctl(["port", "bind", "h1", "p1", "red-db", "--mac", "02:00:00:00:00:01"]) == 0
    assert ctl(["route", "add", "red", "0.0.0.0/0", "--via", "10.10.2.9",
                "--mac", "02:00:00:00:00:09"]) == 0
    assert ctl(["route", "add", "red", "10.9.0.0/16", "--via", "10.10.2.9"]) == 1
    assert "422 mac" in capsys.readouterr().err
    assert ctl(["route", "list", "red"]) == 0
    assert "0.0.0.0/0  10.10.2.9  02:00:00:00:00:09  red-db" in capsys.readouterr().out
    assert ctl(["network", "show", "red-db"]) == 0
    out = capsys.readouterr().out
    assert "tenant: red" in out and "p1" in out and "gateway_mac: 0a:77:66:00:03:ea" in out
    assert ctl(["tenant", "show", "red"]) == 0
    assert "networks: red-db" in capsys.readouterr().out
    assert ctl(["tenant", "list"]) == 0
    assert "NETWORKS" in capsys.readouterr().out
    assert ctl(["network", "delete", "red-db"]) == 1                  # the route's next hop
    assert ctl(["route", "del", "red", "0.0.0.0/0"]) == 0
    assert ctl(["network", "delete", "red-db"]) == 1                  # bound
    assert ctl(["network", "delete", "red-db", "--force"]) == 0
    assert "1 bindings removed" in capsys.readouterr().out
    assert ctl(["--json", "route", "list", "red"]) == 0
    assert capsys.readouterr().out.strip() == "[]"
    assert ctl(["network", "show", "../tenants/red"]) == 1           # one path segment


def test_delete_while_in_use_names_the_ports_and_hosts(api, ctl, capsys):
    """A network or tenant with containers on it is not deleted: 409 listing each bound
    port with its host and addresses (the agent's containers and REST bindings), and
    nothing changes; once they are gone, it is deleted (docs/docker.md)."""
    _red(api)
    for host, i in (("h1", 5), ("h2", 6)):
        _ok(api.put(f"/v1/hosts/{host}/attachments", json=[
            {"port": f"wd{i}", "network": "red-db", "mac": f"02:00:00:00:00:0{i}",
             "ips": [f"10.10.2.{i}"], "container": f"c{i}"}]))
    before = _ok(api.get("/v1/networks/red-db"))
    assert ctl(["network", "delete", "red-db"]) == 1
    err = capsys.readouterr().err
    assert "409 name: network 'red-db' has 2 port binding(s): h1/wd5 (10.10.2.5), " \
           "h2/wd6 (10.10.2.6)" in err, err
    r = api.delete("/v1/networks/red-db")
    assert [(p["host"], p["port"], p["source"]) for p in r.json()["ports"]] == \
        [("h1", "wd5", "agent"), ("h2", "wd6", "agent")]
    assert _ok(api.get("/v1/networks/red-db")) == before           # nothing changed
    _ok(api.put("/v1/hosts/h1/attachments", json=[]))
    _ok(api.put("/v1/hosts/h2/attachments", json=[
        {"port": "wd7", "network": "red", "ips": ["10.10.1.7"], "mac": "02:00:00:00:00:07"}]))
    assert _ok(api.delete("/v1/networks/red-db")) == {"deleted": "red-db", "bindings_removed": 0}
    _ok(api.delete("/v1/networks/red-lab"))
    r = api.delete("/v1/tenants/red")
    assert r.status_code == 409 and "h2/wd7 (10.10.1.7)" in r.json()["error"]
    assert [p["port"] for p in r.json()["ports"]] == ["wd7"]


def test_agents_report_their_docker_networks_and_network_show_has_them(api, ctl, capsys):
    """What each host's agent did with a network in its dockerd, as an operator sees it
    (`weftctl network show`): a careless operator's hand-made network on one host is
    visible centrally, with the reason."""
    _red(api)
    why = ("Docker network 'red-db' (made by hand, 3f2a1b2c3d4e) has subnet 10.20.0.0/24, "
           "unlike the cluster's network 'red-db' (...): left alone")
    assert _ok(api.put("/v1/hosts/h1/docker-networks",
                       json={"created": ["red"], "conflicts": {"red-db": why}})) == {"host": "h1"}
    _ok(api.put("/v1/hosts/h2/docker-networks", json={"created": ["red", "red-db"],
                                                      "adopted": ["red-lab"]}))
    assert _ok(api.get("/v1/networks/red-db"))["docker"] == [
        {"host": "h1", "state": "conflict", "reason": why},
        {"host": "h2", "state": "created", "reason": None}]
    assert [d["state"] for d in _ok(api.get("/v1/networks/red-lab"))["docker"]] == \
        ["missing", "adopted"]
    got = _ok(api.get("/v1/hosts/h1/docker-networks"))
    assert got["conflicts"] == {"red-db": why} and got["reported"] > 0
    assert _ok(api.get("/v1/hosts/h3/docker-networks"))["reported"] is None
    assert api.put("/v1/hosts/ghost/docker-networks", json={}).status_code == 404
    r = api.put("/v1/hosts/h1/docker-networks", json={"created": ["x" * 65]})
    assert r.status_code == 422
    assert _ok(api.get("/v1/hosts/h1/docker-networks"))["conflicts"] == {"red-db": why}
    assert ctl(["network", "show", "red-db"]) == 0
    out = capsys.readouterr().out
    assert "h1    conflict" in out and "made by hand" in out and "h2    created" in out
