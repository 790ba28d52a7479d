"""Every request a careless or hostile client can make gets a documented 4xx, never a 500
(issue 12), and weftctl cannot be steered to another resource or made to crash."""
from __future__ import annotations

import http.server
import threading

import pytest
from fastapi.testclient import TestClient

import controller.weftctl as weftctl
from controller.rest.app import create_app
from controller.core import Core
from cluster.hostsfile import parse
from tests.conftest import api_client

HOSTS = """
controller: {openflow: ["tcp:127.0.0.1:6653"]}
hosts:
  - {name: host1, underlay_ip: 192.168.50.10}
  - {name: host2, underlay_ip: 192.168.50.11}
"""
TOKEN = "s3cret"


@pytest.fixture
def core(make_store):
    return Core(make_store(), parse(HOSTS))


@pytest.fixture
def api(core):
    c = api_client(core, TOKEN)
    return c


def _raw(api, method: str, path: str, body: str) -> int:
    return api.request(method, path, content=body.encode("utf-8", "surrogatepass"),
                       headers={"content-type": "application/json"}).status_code


def test_the_500s_of_the_issue_are_4xx(api, core):
    assert api.post("/v1/tenants", json={"name": "red"}).status_code == 201
    for kind in ("limits", "rules"):
        for qid in (2 ** 63, 2 ** 64, -1, 0):
            r = api.delete(f"/v1/qos/{kind}/{qid}")
            assert r.status_code in (404, 422), (kind, qid, r.text)
        r = api.patch(f"/v1/qos/{kind}/{2 ** 64}", json={"kbps": 100})
        assert r.status_code == 422
    r = api.patch("/v1/tenants/red", json={"description": None})
    assert r.status_code == 422 and r.json()["field"] == "description"
    assert _raw(api, "PATCH", "/v1/tenants/red", '{"description": "\\ud800"}') == 422
    assert _raw(api, "POST", "/v1/tenants", '{"name": "blue", "description": "\\udfff x"}') == 422
    anon = TestClient(create_app(core, TOKEN), raise_server_exceptions=False)
    r = anon.post("/v1/tenants", json={"name": "x"}, headers={"Authorization": "Bearer é".encode()})
    assert r.status_code == 401
    assert anon.get("/v1/tenants", headers={"Authorization": b"Bearer \xff\xfe"}).status_code == 401
    odd = TestClient(create_app(core, "tökén"), raise_server_exceptions=False)
    assert odd.post("/v1/tenants", json={"name": "x"},
                    headers={"Authorization": "Bearer abc"}).status_code == 401
    assert [t.name for t in core.store.tenants()] == ["default", "red"]


@pytest.mark.parametrize("body,field", [
    ({"name": "red\n"}, "name"),
    ({"name": ""}, "name"),
    ({"name": "r" * 33}, "name"),
    ({"name": "red", "description": "x" * 5000}, "description"),
    ({"name": "red", "subnet": "1" * 500}, "subnet"),
    ({"name": "red", "vni": 2 ** 70}, "vni"),
])
def test_names_are_anchored_and_sizes_bounded(api, body, field):
    r = api.post("/v1/tenants", json=body)
    assert r.status_code == 422 and r.json()["field"] == field, r.text


@pytest.mark.parametrize("body,field", [
    ({"host": "", "port": "p1", "tenant": "red"}, "host"),
    ({"host": "host1\n", "port": "p1", "tenant": "red"}, "host"),
    ({"host": "host1", "port": "p1\n", "tenant": "red"}, "port"),
    ({"host": "host1", "port": "p1", "tenant": "red\n"}, "tenant"),
    ({"host": "host1", "port": "p1", "tenant": "red", "mac": "02:00:00:00:00:01\n"}, "mac"),
    ({"host": "host1", "port": "p" * 16, "tenant": "red"}, "port"),
])
def test_binding_names_are_anchored(api, body, field):
    api.post("/v1/tenants", json={"name": "red"})
    r = api.post("/v1/ports", json=body)
    assert r.status_code == 422 and r.json()["field"] == field, r.text
    assert api.get("/v1/ports").json() == []


@pytest.mark.parametrize("port", ["vx-host2", "gr-host2", "vx-0a1b2c3d4e5f", "br0", "weft-d0"])
def test_agent_owned_ports_cannot_be_bound(api, port):
    api.post("/v1/tenants", json={"name": "red"})
    r = api.post("/v1/ports", json={"host": "host1", "port": port, "tenant": "red"})
    assert r.status_code == 409 and r.json()["field"] == "port", r.text
    r = api.post("/v1/ports/bulk", json=[{"host": "host1", "port": port, "tenant": "red"}])
    assert r.status_code == 409
    assert api.get("/v1/ports").json() == []


def test_the_openapi_document_lists_every_status_and_the_patterns(api):
    doc = api.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert schemas["PortIn"]["properties"]["host"]["pattern"].endswith("$")
    assert schemas["PortIn"]["properties"]["host"]["pattern"].startswith("^")
    assert "pattern" in schemas["TenantIn"]["properties"]["name"]
    assert "ErrorOut" in schemas
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            codes = set(op["responses"])
            if path != "/v1/health":
                assert {"401", "404", "409", "422", "503"} <= codes, (method, path, codes)


# -- weftctl ------------------------------------------------------------------------
@pytest.fixture
def ctl(api, monkeypatch):
    monkeypatch.setattr(weftctl, "client", lambda *_: api)
    return weftctl.main


def test_weftctl_path_segments_cannot_reach_another_resource(api, ctl, capsys):
    for name in ("victim", "victim2"):
        api.post("/v1/tenants", json={"name": name})
    api.post("/v1/ports", json={"host": "host1", "port": "p1", "tenant": "victim2"})
    assert ctl(["port", "unbind", "host1", "../../tenants/victim"]) == 1
    assert ctl(["tenant", "delete", "victim2?force=true"]) == 1
    assert ctl(["port", "unbind", "host1", ".."]) == 1
    names = [t["name"] for t in api.get("/v1/tenants").json()]
    assert names == ["default", "victim", "victim2"]
    assert len(api.get("/v1/ports").json()) == 1
    assert ctl(["tenant", "show", "victim/ports"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("weftctl:") == 4


def test_weftctl_qos_uses_the_documented_burst_default(api, ctl):
    api.post("/v1/tenants", json={"name": "red"})
    api.post("/v1/ports", json={"host": "host1", "port": "p1", "tenant": "red"})
    assert ctl(["qos", "limit", "host1", "--port", "p1", "--kbps", "20000"]) == 0
    assert ctl(["qos", "rule", "red", "--priority", "10", "--kbps", "8000"]) == 0
    assert [x["burst_kb"] for x in api.get("/v1/qos/limits").json()] == [5000]
    assert [x["burst_kb"] for x in api.get("/v1/qos/rules").json()] == [2000]



def test_packet_rate_limits_through_rest_and_weftctl(api, core, ctl, capsys):
    api.post("/v1/tenants", json={"name": "red"})
    for p in ("p1", "p2"):
        api.post("/v1/ports", json={"host": "host1", "port": p, "tenant": "red"})
    r = api.post("/v1/qos/limits", json={"host": "host1", "port": "p1", "pps": 1000})
    assert r.status_code == 201, r.text
    x = r.json()
    assert (x["pps"], x["burst_pkts"], x["kbps"], x["unit"]) == (1000, 250, None, "pps")
    assert core.store.limits()[0].pps == 1000
    # one unit: both rates, no rate, or the other unit's burst are 422s naming the field
    for body, field in (({"kbps": 100, "pps": 100}, "pps"), ({}, "kbps"),
                        ({"pps": 100, "burst_kb": 10}, "burst_kb"),
                        ({"kbps": 100, "burst_pkts": 10}, "burst_pkts"),
                        ({"pps": 100, "burst_pkts": 1001}, "burst_pkts")):
        r = api.post("/v1/qos/limits", json={"host": "host1", "port": "p2", **body})
        assert r.status_code == 422 and field in r.text, (body, r.text)
    lid = x["id"]
    assert api.patch(f"/v1/qos/limits/{lid}", json={"pps": 2000}).json()["burst_pkts"] == 500
    r = api.patch(f"/v1/qos/limits/{lid}", json={"burst_kb": 100})
    assert r.status_code == 422 and "burst_kb" in r.text
    back = api.patch(f"/v1/qos/limits/{lid}", json={"kbps": 8000}).json()   # switch the unit
    assert (back["kbps"], back["burst_kb"], back["pps"], back["burst_pkts"]) == (8000, 2000, None, 0)
    doc = api.get("/openapi.json").json()["components"]["schemas"]["LimitIn"]["properties"]
    assert "packets/s" in doc["pps"]["description"] and "burst_pkts" in doc
    assert ctl(["qos", "limit", "host1", "--port", "p2", "--pps", "500", "--burst-pkts", "50"]) == 0
    assert "500 packets/s" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        ctl(["qos", "limit", "host1", "--port", "p2", "--pps", "5", "--kbps", "5"])
    got = [(x["port"], x["pps"], x["burst_pkts"]) for x in api.get("/v1/qos/limits").json()]
    assert got == [("p1", None, 0), ("p2", 500, 50)]

class _Html(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:       # noqa: N802  (http.server's name)
        body = b"<html><body>It works!</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def html_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Html)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("argv", [
    ["--token", "tökén", "tenant", "list"],
    ["--token", "a\nb", "tenant", "list"],
    ["--api", "not a url", "tenant", "list"],
    ["--api", "ftp://127.0.0.1:1", "tenant", "list"],
    ["--api", "unix:/nonexistent/sock", "tenant", "list"],
])
def test_weftctl_answers_bad_input_in_one_line(argv, capsys):
    assert weftctl.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("argv", [["tenant", "list"], ["tenant", "show", "red"],
                                  ["switch", "list"], ["qos", "list"]])
def test_weftctl_against_something_that_is_not_weft(html_server, argv, capsys):
    assert weftctl.main(["--api", html_server, *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "not JSON" in err, err
