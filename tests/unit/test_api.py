"""REST API v1 on a real SQLite store (no switches): validation, conflicts, persistence."""
from __future__ import annotations

from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from controller import stats
from controller.rest.app import create_app
from controller.core import Core
from controller.model import LinkEndpoint
from controller.weftctl import main as weftctl_main
from cluster.hostsfile import parse
from tests.conftest import api_client

HOSTS = """
controller: {openflow: ["tcp:127.0.0.1:6653"]}
hosts:
  - {name: h1, underlay_ip: 192.168.50.10}
  - {name: h2, underlay_ip: 192.168.50.11}
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


def test_tenant_lifecycle_and_vni_assignment(api, core):
    r = api.post("/v1/tenants", json={"name": "red", "vlan": 100, "subnet": "10.1.0.0/24"})
    assert r.status_code == 201 and r.json()["vni"] >= 1000
    r2 = api.post("/v1/tenants", json={"name": "blue"})
    assert r2.json()["vni"] != r.json()["vni"]
    names = [t["name"] for t in api.get("/v1/tenants").json()]
    assert names == ["default", "blue", "red"]
    assert api.patch("/v1/tenants/red", json={"description": "x"}).json()["description"] == "x"
    assert api.delete("/v1/tenants/blue").status_code == 200
    assert api.get("/v1/tenants/blue").status_code == 404
    assert core.changes == 4


def test_state_survives_a_restart(make_store):
    s = make_store("w.db")
    s.create_tenant("red", vlan=10)
    s.bind("h1", "p1", "red", mac="02:00:00:00:00:01")
    s2 = make_store("w.db")
    assert s2.tenant("red").vlan == 10
    assert [b.binding.port for b in s2.bindings()] == ["p1"]


@pytest.mark.parametrize("body,field", [
    ({"name": "Red"}, "name"),
    ({"name": "red", "vlan": 0}, "vlan"),
    ({"name": "red", "vlan": 4095}, "vlan"),
    ({"name": "red", "vlan": "x"}, "vlan"),
    ({"name": "red", "subnet": "10.0.0.300/24"}, "subnet"),
    ({"name": "red", "vni": 5}, "vni"),
    ({"name": "red", "bogus": 1}, "bogus"),
    ({}, "name"),
])
def test_bad_tenant_payloads_are_4xx_naming_the_field(api, core, body, field):
    r = api.post("/v1/tenants", json=body)
    assert 400 <= r.status_code < 500
    assert r.json()["field"] == field
    assert [t["name"] for t in api.get("/v1/tenants").json()] == ["default"]
    assert core.changes == 0


def test_conflicts_are_409_and_change_nothing(api):
    api.post("/v1/tenants", json={"name": "red", "vlan": 100})
    assert api.post("/v1/tenants", json={"name": "red"}).status_code == 409
    r = api.post("/v1/tenants", json={"name": "blue", "vlan": 100})
    assert r.status_code == 409 and r.json()["field"] == "vlan"
    api.post("/v1/tenants", json={"name": "blue", "vlan": 200})
    api.post("/v1/ports", json={"host": "h1", "port": "p1", "tenant": "red",
                                "mac": "02:00:00:00:00:01"})
    r = api.post("/v1/ports", json={"host": "h1", "port": "p1", "tenant": "blue"})
    assert r.status_code == 409 and r.json()["field"] == "port"
    r = api.post("/v1/ports", json={"host": "h2", "port": "p9", "tenant": "red",
                                    "mac": "02:00:00:00:00:01"})
    assert r.status_code == 409 and r.json()["field"] == "mac"
    # the same MAC in another tenant is fine: tenants may overlap
    assert api.post("/v1/ports", json={"host": "h2", "port": "p9", "tenant": "blue",
                                       "mac": "02:00:00:00:00:01"}).status_code == 201
    r = api.delete("/v1/tenants/red")
    assert r.status_code == 409
    assert api.get("/v1/tenants/red").json()["ports"][0]["port"] == "p1"
    r = api.delete("/v1/tenants/red", params={"force": "true"})
    assert r.json() == {"deleted": "red", "bindings_removed": 1}
    assert api.patch("/v1/tenants/default", json={"vlan": 5}).status_code == 409
    assert api.delete("/v1/tenants/default").status_code == 409


def test_bindings_validate_and_unknown_is_404(api):
    assert api.post("/v1/ports", json={"host": "h1", "port": "p1",
                                       "tenant": "nope"}).status_code == 404
    api.post("/v1/tenants", json={"name": "red"})
    for body, field in [({"host": "h1", "port": "p" * 16, "tenant": "red"}, "port"),
                        ({"host": "h1", "port": "p1", "tenant": "red", "mac": "01:00:00:00:00:01"},
                         "mac"),
                        ({"host": "h1", "port": "p1", "tenant": "red", "mode": "hybrid"}, "mode"),
                        ({"host": "h1", "port": "p1", "mode": "trunk", "trunk": ["red"]}, "trunk"),
                        ({"host": "h1", "port": "p1", "mode": "trunk", "trunk": ["nope"]}, "trunk"),
                        ({"host": "h1", "port": "p1", "mode": "trunk"}, "trunk"),
                        ({"host": "h1", "port": "p1", "trunk": ["red"], "tenant": "red"}, "trunk"),
                        ({"host": "h1", "port": "weft-d0", "tenant": "red"}, "port")]:
        r = api.post("/v1/ports", json=body)
        assert 400 <= r.status_code < 500 and r.json()["field"] == field, (body, r.json())
    assert api.get("/v1/ports").json() == []
    assert api.delete("/v1/ports/h1/p1").status_code == 404


def test_reads_and_writes_need_the_token_health_does_not(core):
    anon = TestClient(create_app(core, TOKEN))
    assert anon.post("/v1/tenants", json={"name": "red"}).status_code == 401
    for path in ("/v1/tenants", "/v1/ports", "/v1/hosts", "/v1/switches", "/v1/qos/limits",
                 "/metrics", "/v1/tenants/default"):
        r = anon.get(path)
        assert r.status_code == 401 and r.json()["field"] == "authorization", path
    assert anon.get("/v1/tenants", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert anon.get("/v1/health").status_code == 200
    assert TestClient(create_app(core, None)).get("/v1/tenants").status_code == 200


def test_agent_attachments_replace_and_rest_wins(api):
    api.post("/v1/tenants", json={"name": "red"})
    api.post("/v1/tenants", json={"name": "blue"})
    api.post("/v1/ports", json={"host": "h1", "port": "wc1", "tenant": "blue"})
    r = api.put("/v1/hosts/h1/attachments", json=[
        {"port": "wc1", "tenant": "red", "mac": "02:00:00:00:00:01"},
        {"port": "wc2", "tenant": "red", "mac": "02:00:00:00:00:02"}])
    assert r.status_code == 200
    ports = {p["port"]: p for p in api.get("/v1/ports").json()}
    assert ports["wc1"]["tenant"] == "blue" and ports["wc2"]["source"] == "agent"
    api.put("/v1/hosts/h1/attachments", json=[])
    assert [p["port"] for p in api.get("/v1/ports").json()] == ["wc1"]
    bad = api.put("/v1/hosts/h1/attachments", json=[{"port": "wc3", "tenant": "nope"}])
    assert bad.status_code == 404
    assert api.put("/v1/hosts/zz/attachments", json=[]).status_code == 404


def test_agent_ports_are_bound_with_their_addresses_unless_port_security_is_off(api):
    """Issue 25: what weft plugs is bound with its MAC and address, so ARP and IP spoofing
    fail by default; an explicit port_security false binds it with neither."""
    api.post("/v1/tenants", json={"name": "red"})
    r = api.put("/v1/hosts/h1/attachments", json=[
        {"port": "wc1", "tenant": "red", "mac": "02:00:00:00:00:01", "ips": ["10.0.0.1"]},
        {"port": "wc2", "tenant": "red", "mac": "02:00:00:00:00:02", "ips": ["10.0.0.2"],
         "port_security": False}])
    assert r.status_code == 200, r.text
    ports = {p["port"]: p for p in api.get("/v1/ports").json()}
    assert (ports["wc1"]["mac"], ports["wc1"]["ips"]) == ("02:00:00:00:00:01", ["10.0.0.1"])
    assert (ports["wc2"]["mac"], ports["wc2"]["ips"]) == (None, [])
    bad = api.put("/v1/hosts/h1/attachments", json=[
        {"port": "wc3", "tenant": "red", "mac": "02:00:00:00:00:03", "ips": ["10.0.0.300"]}])
    assert bad.status_code == 422 and bad.json()["field"] == "ips", bad.text
    assert sorted(p["port"] for p in api.get("/v1/ports").json()) == ["wc1", "wc2"]


D0 = "weft-d0"


def test_docker0_containers_are_pinned_to_the_host_that_reports_them(api, core, make_store):
    mac = "02:42:ac:11:01:02"
    d1 = {"port": D0, "tenant": "default", "mac": mac, "ips": ["172.17.1.2"]}
    assert api.put("/v1/hosts/h1/attachments", json=[d1]).status_code == 200
    assert core.topology().endpoints == (LinkEndpoint("h1", mac, ("172.17.1.2",)),)
    assert api.get("/v1/ports").json() == []            # not a binding of the docker0 link
    # another host claiming the MAC does not move it (logged there), nor fails its report
    assert api.put("/v1/hosts/h2/attachments", json=[d1]).status_code == 200
    assert [e.host for e in core.topology().endpoints] == ["h1"]
    assert [e.host for e in core.store.link_endpoints()] == ["h1"]     # as stored
    assert api.put("/v1/hosts/h1/attachments", json=[]).status_code == 200
    assert core.topology().endpoints == ()
    api.put("/v1/hosts/h2/attachments", json=[d1])
    assert [e.host for e in make_store().link_endpoints()] == ["h2"]   # a restart keeps it


@pytest.mark.parametrize("entry,field", [
    ({"port": "weft-d0", "tenant": "red", "mac": "02:42:ac:11:01:02"}, "tenant"),
    ({"port": "weft-d0", "tenant": "default", "mac": "01:00:5e:00:00:01"}, "mac"),
    ({"port": "weft-d0", "tenant": "default", "mac": None}, "mac"),
    ({"port": "weft-d0", "tenant": "default", "mac": "02:42:ac:11:01:02", "ips": ["x"]},
     "ips")])
def test_bad_docker0_reports_are_refused_whole(api, core, entry, field):
    api.post("/v1/tenants", json={"name": "red"})
    ok = {"port": D0, "tenant": "default", "mac": "02:42:ac:11:01:03"}
    api.put("/v1/hosts/h1/attachments", json=[ok])
    r = api.put("/v1/hosts/h1/attachments", json=[entry])
    assert r.status_code == 422 and r.json()["field"] == field, r.text
    assert [e.mac for e in core.topology().endpoints] == [ok["mac"]]


def test_switches_and_hosts_views(api):
    hosts = api.get("/v1/hosts").json()
    assert [h["name"] for h in hosts] == ["h1", "h2"] and not hosts[0]["connected"]
    sws = api.get("/v1/switches").json()
    assert sws[0]["tunnels"] == {"vx-h2": {"peer": "h2", "remote_ip": "192.168.50.11",
                                           "ofport": None}}
    assert api.get("/v1/switches/h1/flows").status_code == 409
    assert api.get("/v1/switches/nope/flows").status_code == 404
    assert "openapi" in api.get("/openapi.json").json()
    assert "weft_tenants 1" in api.get("/metrics").text


def test_no_request_makes_a_5xx(api):
    junk = [("post", "/v1/tenants", b"{"), ("post", "/v1/tenants", b"[]"),
            ("post", "/v1/ports", b'{"host": 1, "port": [], "tenant": null}'),
            ("patch", "/v1/tenants/nope", b"{}"), ("put", "/v1/hosts/h1/attachments", b"{}"),
            ("delete", "/v1/ports/h1/x", b""), ("get", "/v1/switches/zz", b"")]
    for method, path, body in junk:
        r = api.request(method, path, content=body, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text)


def test_weftctl_against_the_api(api, monkeypatch, capsys):
    import controller.weftctl as w
    monkeypatch.setattr(w, "client", lambda *_: api)
    assert weftctl_main(["tenant", "create", "red", "--vlan", "100"]) == 0
    assert weftctl_main(["tenant", "list"]) == 0
    out = capsys.readouterr().out
    assert "red" in out and "VNI" in out
    assert weftctl_main(["tenant", "create", "red"]) == 1
    assert "409" in capsys.readouterr().err
    assert weftctl_main(["--json", "port", "list"]) == 0
    assert capsys.readouterr().out.strip() == "[]"


def test_bulk_bind_is_all_or_nothing(api):
    api.post("/v1/tenants", json={"name": "red"})
    items = [{"host": "h1", "port": f"p{i}", "tenant": "red", "mac": f"02:00:00:00:01:{i:02x}"}
             for i in range(50)]
    assert api.post("/v1/ports/bulk", json=items).json() == {"bound": 50}
    bad = [{"host": "h2", "port": "q1", "tenant": "red"},
           {"host": "h2", "port": "q2", "tenant": "red", "mac": "02:00:00:00:01:00"}]
    r = api.post("/v1/ports/bulk", json=bad)
    assert r.status_code == 409 and r.json()["field"] == "mac"
    assert len(api.get("/v1/ports").json()) == 50


def test_trunk_bindings_and_mode_changes(api):
    api.post("/v1/tenants", json={"name": "red", "vlan": 100})
    api.post("/v1/tenants", json={"name": "blue", "vlan": 200})
    api.post("/v1/tenants", json={"name": "green"})
    r = api.post("/v1/ports", json={"host": "h1", "port": "t0", "mode": "trunk",
                                    "trunk": ["red", "blue"], "tenant": "green"})
    assert r.status_code == 201 and r.json()["trunk"] == ["red", "blue"]
    assert [p["port"] for p in api.get("/v1/tenants/blue/ports").json()] == ["t0"]
    # red's VLAN cannot go away while a trunk carries it; a VLAN clash is a conflict
    assert api.patch("/v1/tenants/red", json={"vlan": None}).status_code == 409
    assert api.patch("/v1/tenants/green", json={"vlan": 100}).status_code == 409
    # access -> trunk -> access in place with PUT; POST over a bound port is a conflict
    api.post("/v1/ports", json={"host": "h1", "port": "p1", "tenant": "red"})
    assert api.post("/v1/ports", json={"host": "h1", "port": "p1", "tenant": "blue"}
                    ).status_code == 409
    r = api.put("/v1/ports/h1/p1", json={"mode": "trunk", "trunk": ["red", "blue"]})
    assert r.status_code == 200 and r.json()["mode"] == "trunk"
    assert api.put("/v1/ports/h1/p1", json={"tenant": "red"}).json()["mode"] == "access"
    assert api.put("/v1/ports/h1/zz", json={"tenant": "red"}).status_code == 404
    # deleting a tenant a trunk carries: 409, then force drops it from the trunk only
    assert api.delete("/v1/tenants/blue").status_code == 409
    assert api.delete("/v1/tenants/blue", params={"force": "true"}).status_code == 200
    ports = {p["port"]: p for p in api.get("/v1/ports").json()}
    assert ports["t0"]["trunk"] == ["red"] and ports["t0"]["tenant"] == "green"


# --- ACLs --------------------------------------------------------------------------------
def test_acl_lifecycle_default_and_errors(api, core):
    api.post("/v1/tenants", json={"name": "red"})
    assert api.get("/v1/tenants/red/acls").json() == {"tenant": "red", "default": "allow",
                                                      "rules": []}
    assert api.put("/v1/tenants/red/acls/default", json={"default": "deny"}).status_code == 200
    r = api.post("/v1/tenants/red/acls", json={"priority": 100, "action": "allow",
                                               "ip_proto": "tcp", "local": "10.0.0.2/32",
                                               "port": 80})
    assert r.status_code == 201, r.text
    rule = r.json()
    assert rule["local"] == "10.0.0.2" and rule["direction"] == "ingress"
    topo = core.topology()
    assert topo.acl_deny == {"red"} and [a.id for a in topo.acls] == [rule["id"]]
    # errors name the field and change nothing
    bad = [({"priority": 100, "action": "allow"}, 409, "priority"),
           ({"priority": 5, "action": "allow", "port": 80}, 422, "port"),
           ({"priority": 5, "action": "allow", "ip_proto": "icmp", "icmp_type": 300}, 422,
            "icmp_type"),
           ({"priority": 5, "action": "allow", "remote": "10.0.0.256"}, 422, "match.src"),
           ({"priority": 5, "action": "permit"}, 422, "action"),
           ({"priority": 0, "action": "allow"}, 422, "priority"),
           ({"priority": 5, "action": "allow", "remote": "fd00::/64", "local": "10.0.0.2"},
            422, "local"),                                 # one rule, one family
           ({"priority": 5, "action": "allow", "ip_proto": "icmp", "local": "fd00::2"}, 422,
            "ip_proto")]
    for body, status, field in bad:
        res = api.post("/v1/tenants/red/acls", json=body)
        assert (res.status_code, res.json()["field"]) == (status, field), (body, res.text)
    res = api.patch(f"/v1/tenants/red/acls/{rule['id']}", json={"remote": "fd00::/64"})
    assert (res.status_code, res.json()["field"]) == (422, "local"), res.text
    assert api.get(f"/v1/tenants/red/acls/{rule['id']}").json()["remote"] is None
    r6 = api.post("/v1/tenants/red/acls", json={"priority": 101, "action": "allow",
                                                "ip_proto": "icmpv6", "icmp_type": 128,
                                                "local": "FD00:0:0::2/128"})
    assert r6.status_code == 201 and r6.json()["local"] == "fd00::2", r6.text
    assert {a.id: a.ipv6 for a in core.topology().acls} == {rule["id"]: False, r6.json()["id"]: True}
    assert api.delete(f"/v1/tenants/red/acls/{r6.json()['id']}").status_code == 200
    assert api.post("/v1/tenants/nope/acls",
                    json={"priority": 1, "action": "drop"}).status_code == 404
    assert api.put("/v1/tenants/red/acls/default", json={"default": "maybe"}).status_code == 422
    assert len(api.get("/v1/tenants/red/acls").json()["rules"]) == 1
    # change one field, read it back, delete
    p = api.patch(f"/v1/tenants/red/acls/{rule['id']}", json={"port": 8080})
    assert p.status_code == 200 and p.json()["port"] == 8080
    assert api.get(f"/v1/tenants/red/acls/{rule['id']}").json()["port"] == 8080
    assert api.get("/v1/tenants/red/acls/999").status_code == 404
    assert api.delete("/v1/tenants/red/acls/999").status_code == 404
    # a tenant with rules is not deleted without force
    assert api.delete("/v1/tenants/red").status_code == 409
    assert api.delete(f"/v1/tenants/red/acls/{rule['id']}").status_code == 200
    assert api.get("/v1/tenants/red/acls").json()["rules"] == []
    assert api.delete("/v1/tenants/red").status_code == 200
    assert core.store.orphans() == 0


def test_acl_counters_per_rule_in_api_and_metrics(api, core):
    from controller.flows import acl_cookie
    api.post("/v1/tenants", json={"name": "red", "vni": 1100})
    rid = api.post("/v1/tenants/red/acls", json={"priority": 9, "action": "drop"}).json()["id"]
    sw = core.switch_by_name("h1")
    core.publish({**core.switches, sw.dpid: replace(sw, connected=True)})
    md = [1100, 0xFFFFFF]
    core.openflow.dump_flows = lambda dpid, cookie=0, mask=0: [
        {"cookie": hex(acl_cookie(rid)), "priority": 10009, "match": {"metadata": md},
         "packets": 3, "bytes": 300},
        {"cookie": hex(acl_cookie()), "priority": 29990, "match": {"metadata": md},
         "packets": 50, "bytes": 5000},
        {"cookie": hex(acl_cookie()), "priority": 29990, "match": {"metadata": [7, 0xFFFFFF]},
         "packets": 1, "bytes": 1}]
    body = api.get("/v1/tenants/red/acls", params={"counters": "true"}).json()
    assert body["rules"][0]["packets"] == 3 and body["rules"][0]["bytes"] == 300
    assert body["established_counters"] == {"packets": 50, "bytes": 5000}
    core.openflow.dump_port_stats = core.openflow.dump_meters = lambda dpid: []
    stats.poll_once(core)           # /metrics renders the poller's last read
    metrics = api.get("/metrics").text
    assert f'weft_acl_rule_packets_total{{tenant="red",rule="{rid}",action="drop"}} 3' in metrics


def test_acl_needs_a_vni_that_fits_a_conntrack_zone(api):
    api.post("/v1/tenants", json={"name": "big", "vni": 70000})
    r = api.put("/v1/tenants/big/acls/default", json={"default": "deny"})
    assert r.status_code == 409 and r.json()["field"] == "tenant"


def test_weftctl_acl(api, core, capsys, monkeypatch):
    import controller.weftctl as ctl
    monkeypatch.setattr(ctl, "client", lambda api_, token: api)
    api.post("/v1/tenants", json={"name": "red"})
    assert ctl.main(["acl", "default", "red", "deny"]) == 0
    assert ctl.main(["acl", "add", "red", "--priority", "10", "--action", "allow",
                     "--proto", "tcp", "--port", "80", "--local", "10.0.0.2"]) == 0
    assert ctl.main(["acl", "list", "red"]) == 0
    out = capsys.readouterr().out
    assert "default deny" in out and "10.0.0.2" in out
    assert ctl.main(["acl", "add", "red", "--priority", "10", "--action", "drop"]) == 1
    assert ctl.main(["acl", "del", "red", "1"]) == 0


def test_port_security_addresses_round_trip_and_validate(api, core, tmp_path):
    api.post("/v1/tenants", json={"name": "red"})
    body = {"host": "h1", "port": "p1", "tenant": "red", "mac": "02:00:00:00:00:01",
            "ips": ["10.0.0.5"], "allowed_address_pairs": [
                {"ip_address": "10.0.9.0/24", "mac_address": "02:00:00:00:00:AA"},
                {"ip_address": "10.0.0.6"}]}
    r = api.post("/v1/ports", json=body)
    assert r.status_code == 201, r.text
    want = {"ips": ["10.0.0.5"], "allowed_address_pairs": [
        {"ip_address": "10.0.9.0/24", "mac_address": "02:00:00:00:00:aa"},
        {"ip_address": "10.0.0.6", "mac_address": None}]}
    (listed,) = api.get("/v1/ports").json()
    assert {k: listed[k] for k in want} == want
    (b,) = [sb.binding for sb in core.store.bindings()]
    assert b.source_addresses()["02:00:00:00:00:01"] == {"10.0.0.5", "10.0.0.6"}
    # a PUT without addresses clears them; unbinding leaves nothing to resurrect
    r = api.put("/v1/ports/h1/p1", json={"tenant": "red", "mac": "02:00:00:00:00:01"})
    assert r.json()["ips"] == [] and r.json()["allowed_address_pairs"] == []
    api.put("/v1/ports/h1/p1", json={**{k: v for k, v in body.items() if k not in
                                        ("host", "port")}})
    assert api.delete("/v1/ports/h1/p1").status_code == 200
    core.store.bind_many([{"host": "h1", "port": "p1", "tenant": "red"}])
    assert core.store.bindings()[0].binding.ips == ()
    for bad, field in (({"ips": ["nope"]}, "ips"), ({"ips": ["10.0.0.1"], "mac": None}, "ips"),
                       ({"allowed_address_pairs": [{"ip_address": "10.0.0.1",
                                                    "mac_address": "01:00:00:00:00:01"}]},
                        "allowed_address_pairs")):
        r = api.post("/v1/ports", json={**body, "port": "p9", **bad})
        assert r.status_code == 422 and field in r.text, (bad, r.text)


def test_health_and_reports_say_which_controller_and_store_answer(api, core, make_store):
    """Agents compare these to know when to re-send their attachments (issue 15)."""
    health = api.get("/v1/health").json()
    assert health["instance"] == core.instance and health["epoch"] == core.store.epoch()
    assert len(health["epoch"]) == 32
    api.post("/v1/tenants", json={"name": "red"})
    r = api.put("/v1/hosts/h1/attachments", json=[{"port": "wc1", "tenant": "red"}]).json()
    assert (r["instance"], r["epoch"]) == (health["instance"], health["epoch"])
    other = Core(make_store("other.db"), parse(HOSTS))    # a fresh store, a new process
    assert other.identity()["epoch"] != health["epoch"]
    assert other.identity()["instance"] != health["instance"]
