"""The live picture: the pure assembly (controller.topology), its REST route and page
(token rules: the data needs the token, the page holds none), and its SVG (weftctl graph)."""
from __future__ import annotations

import base64
import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from types import MappingProxyType

import pytest

from cluster.hostsfile import datapath_id, parse
from cluster.names import NameRecord
from controller import topology as T
from controller.core import Core
from controller.rest import topology as route
from controller.store import Store
from controller.sync import IDLE
from controller.topology_svg import to_svg
from controller.weftctl import main as weftctl_main
from tests.conftest import api_client

HOSTS = """
controller: {openflow: ["tcp:127.0.0.1:6653"]}
hosts:
  - {name: alpha, underlay_ip: 192.168.50.10}
  - {name: beta, underlay_ip: 192.168.50.11}
  - {name: gamma, underlay_ip: 192.168.50.12, tunnel_type: gre}
"""
TOKEN = "s3cret"
COUNTS = {"rx_packets": 5, "tx_packets": 7, "rx_bytes": 500, "tx_bytes": 700,
          "rx_dropped": 0, "tx_dropped": 1}


def desc(no, name, state=0):
    return {"port_no": no, "name": name, "state": state}


def stats(no, **kw):
    return {"port_no": no, **COUNTS, **kw}


@pytest.fixture
def core(tmp_path):
    c = Core(Store(tmp_path / "weft.db"), parse(HOSTS))
    c.store.create_tenant("red", subnet="10.1.0.0/24")
    c.store.create_tenant("blue")
    c.store.create_network("red-db", "red", subnet="10.1.2.0/24")
    c.store.bind("alpha", "p1", "red", mac="02:00:00:00:00:01", ips=("10.1.0.5",))
    c.store.bind("beta", "p2", "red-db", mac="02:00:00:00:00:02", ips=("10.1.2.9",))
    # the agent reports names with Docker's container id; the primary name is the container's
    c.store.replace_container_names("alpha", [NameRecord("red", "a-www", "10.1.0.5", "c0ffee"),
                                              NameRecord("red", "web", "10.1.0.5", "c0ffee", True)])
    return c


def connect(core: Core, *hosts: str, ports: dict[str, int] | None = None) -> None:
    """Publish connected, in-sync switch views for ``hosts``."""
    views = dict(core.switches)
    for h in core.cluster.hosts:
        if h.name in hosts:
            views[datapath_id(h)] = replace(
                views[datapath_id(h)], connected=True, phase=IDLE,
                synced_version=core.store.version, ports=MappingProxyType(ports or {}))
    core.publish(MappingProxyType(views))


def assemble(core: Core, live: dict) -> dict:
    return T.assemble(core.cluster, core.switches, core.store.version, core.store.tenants(),
                      core.store.bindings(), core.store.container_names(), live)


def test_live_ports_joins_desc_and_stats_by_number_and_leaves_local_out():
    got = T.live_ports([desc(1, "p1"), desc(2, "vx-beta", state=1), desc("LOCAL", "br0")],
                       [stats(1), stats("LOCAL")])
    assert got == {"p1": {"ofport": 1, "state": "up", **COUNTS},
                   "vx-beta": {"ofport": 2, "state": "down"}}


def test_counters_a_switch_does_not_keep_are_null_not_huge():
    got = T.live_ports([desc(1, "p1")], [stats(1, rx_dropped=2**64 - 1)])
    assert got["p1"]["rx_dropped"] is None and got["p1"]["tx_dropped"] == 1


def test_nothing_known_is_unknown_not_up(core):
    t = assemble(core, {})
    assert [h["name"] for h in t["hosts"]] == ["alpha", "beta", "gamma"]
    assert all(not h["connected"] and not h["in_sync"] for h in t["hosts"])
    assert {tuple(u["hosts"]): (u["type"], u["state"]) for u in t["tunnels"]} == {
        ("alpha", "beta"): ("vxlan", "unknown"), ("alpha", "gamma"): ("gre", "unknown"),
        ("beta", "gamma"): ("gre", "unknown")}
    assert all(p["state"] == "unknown" and p["counters"] is None for p in t["ports"])


def test_tunnel_state_is_what_both_switches_say(core):
    connect(core, "alpha", "beta", "gamma", ports={"vx-beta": 3})
    live = {"alpha": T.live_ports([desc(3, "vx-beta"), desc(4, "gr-gamma"), desc(1, "p1")],
                               [stats(3), stats(4), stats(1)]),
            "beta": T.live_ports([desc(3, "vx-alpha"), desc(5, "gr-gamma", state=1)], []),
            "gamma": T.live_ports([desc(9, "gr-beta")], [])}       # no gr-alpha on gamma
    t = assemble(core, live)
    assert all(h["connected"] and h["in_sync"] and h["counters_read"] for h in t["hosts"])
    by = {tuple(u["hosts"]): u for u in t["tunnels"]}
    assert by[("alpha", "beta")]["state"] == "up"
    assert by[("alpha", "beta")]["ends"][0] == {"host": "alpha", "port": "vx-beta", "ofport": 3,
                                           "state": "up", "counters": COUNTS}
    assert by[("alpha", "beta")]["ends"][1]["counters"] is None      # no stats for it
    assert by[("beta", "gamma")]["state"] == "down"                   # beta's end: link down
    assert by[("alpha", "gamma")]["state"] == "down"
    assert by[("alpha", "gamma")]["ends"][1]["state"] == "missing"     # gamma has no port to alpha


def test_one_silent_end_leaves_the_tunnel_unknown(core):
    connect(core, "alpha")
    t = assemble(core, {"alpha": T.live_ports([desc(3, "vx-beta")], []), "beta": None})
    assert {tuple(u["hosts"]): u["state"] for u in t["tunnels"]}[("alpha", "beta")] == "unknown"


def test_tenants_hold_their_networks_and_ports_their_bindings(core):
    connect(core, "alpha", ports={"p1": 1})
    t = assemble(core, {"alpha": T.live_ports([desc(1, "p1")], [stats(1)])})
    tenants = {x["name"]: x for x in t["tenants"]}
    assert list(tenants) == ["default", "blue", "red"]
    assert [(n["name"], n["subnet"], n["default"]) for n in tenants["red"]["networks"]] == [
        ("red", "10.1.0.0/24", True), ("red-db", "10.1.2.0/24", False)]
    assert tenants["red"]["networks"][1]["gateway"]            # an address of its subnet
    ports = {p["port"]: p for p in t["ports"]}
    assert ports["p1"] == {"host": "alpha", "port": "p1", "ofport": 1, "tenant": "red",
                           "network": "red", "mode": "access", "trunk": [],
                           "mac": "02:00:00:00:00:01", "ips": ["10.1.0.5"], "container": "web",
                           "source": "api", "state": "up", "counters": COUNTS}
    assert (ports["p2"]["tenant"], ports["p2"]["network"]) == ("red", "red-db")
    assert ports["p2"]["container"] is None and ports["p2"]["state"] == "unknown"


def test_a_bound_port_the_switch_does_not_have_is_missing(core):
    connect(core, "alpha")
    t = assemble(core, {"alpha": T.live_ports([], [])})
    assert {p["port"]: p["state"] for p in t["ports"]}["p1"] == "missing"


def test_vlan_transport_has_no_tunnels(tmp_path):
    c = Core(Store(tmp_path / "w.db"), parse("""
controller: {openflow: ["tcp:127.0.0.1:6653"]}
transport: vlan
hosts:
  - {name: alpha, underlay_ip: 192.168.50.10, uplink: eth1}
  - {name: beta, underlay_ip: 192.168.50.11, uplink: eth1}
"""))
    t = assemble(c, {})
    assert t["transport"] == "vlan" and t["tunnels"] == [] and len(t["hosts"]) == 2


# -- REST --------------------------------------------------------------------------------

def test_topology_needs_the_token_and_reads_the_switches(core, monkeypatch):
    connect(core, "alpha", ports={"p1": 1})
    asked = []

    class Dp:
        waiters: dict = {}

    monkeypatch.setattr(core.openflow, "ofctl_datapath", lambda dpid: asked.append(dpid) or Dp())
    dpid = str(datapath_id(core.cluster.hosts[0]))
    monkeypatch.setattr(route.ofctl, "get_port_desc",
                        lambda dp, w: {dpid: [desc(1, "p1"), desc(2, "vx-beta")]})
    monkeypatch.setattr(core.openflow, "dump_port_stats", lambda d: [stats(1)])
    api = api_client(core, TOKEN)
    t = api.get("/v1/topology").json()
    assert asked == [datapath_id(core.cluster.hosts[0])]     # only the connected switch
    assert {p["port"]: p["counters"] for p in t["ports"]}["p1"] == COUNTS
    assert t["tunnels"][0]["ends"][0]["state"] == "up"
    api.headers.pop("Authorization")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = api.get("/v1/topology", headers=headers)
        assert r.status_code == 401
        assert not re.search(r"\b(alpha|beta|red|blue|web)\b", r.text), r.text


def test_a_switch_that_does_not_answer_is_unknown(core, monkeypatch):
    connect(core, "alpha")

    def refuse(dpid):
        raise LookupError("switch disconnected")
    monkeypatch.setattr(core.openflow, "ofctl_datapath", refuse)
    t = api_client(core, TOKEN).get("/v1/topology").json()
    assert not t["hosts"][0]["counters_read"] and t["tunnels"][0]["state"] == "unknown"


def test_the_page_is_open_static_and_holds_no_data(core):
    api = api_client(core, TOKEN)
    api.headers.pop("Authorization")
    r = api.get("/ui")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert not re.search(r"\b(alpha|beta|gamma|red|blue|red-db|web|192\.168\.50\.\d+)\b", r.text)
    assert r.text == api.get("/ui", headers={"Authorization": f"Bearer {TOKEN}"}).text
    csp = r.headers["content-security-policy"]
    script = re.search(r"<script>(.*?)</script>", r.text, re.S)[1]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in csp and "connect-src 'self'" in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "http://" not in r.text.replace("http://www.w3.org/2000/svg", "")  # no CDN
    assert "https://" not in r.text
    # the page reads the data with the bearer header, the token from the fragment
    assert "Authorization: \"Bearer \" + token" in script and "location.hash" in script
    # only /ui itself is open: nothing below it, nothing else
    assert api.get("/ui/x").status_code in (401, 404)
    assert api.get("/v1/ports").status_code == 401


def test_the_page_ships_in_the_wheel():
    import configparser
    from pathlib import Path
    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).parents[2] / "setup.cfg")
    assert "ui.html" in cfg["options.package_data"]["controller.rest"].split()
    assert route.page()[0].startswith(b"<!doctype html>")


# -- SVG ---------------------------------------------------------------------------------

def test_svg_is_xml_with_every_host_tenant_and_port(core):
    connect(core, "alpha", "beta", ports={"p1": 1})
    t = assemble(core, {"alpha": T.live_ports([desc(1, "p1"), desc(2, "vx-beta")], [stats(1)]),
                        "beta": T.live_ports([desc(2, "vx-alpha")], [])})
    svg = to_svg(t)
    root = ET.fromstring(svg.encode())
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = " ".join(e.text or "" for e in root.iter("{http://www.w3.org/2000/svg}text"))
    for name in ("alpha", "beta", "gamma", "192.168.50.12", "default", "blue", "red / red-db",
                 "web", "p2", "vxlan up", "gre down", "rx 5 tx 7 pkts"):
        assert name in texts, name


def test_svg_escapes_what_it_is_given():
    t = {"hosts": [{"name": "a<&>\"", "address": "x", "connected": False, "in_sync": False}],
         "tunnels": [], "tenants": [{"name": "t&", "networks": [{"name": "n<", "vni": 5}]}],
         "ports": [{"host": "a<&>\"", "port": "p]]>", "tenant": "t&", "network": "n<",
                    "container": None, "counters": None}]}
    texts = [e.text for e in ET.fromstring(to_svg(t, "x & y").encode()).iter()
             if e.text and e.text.strip()]
    assert "a<&>\"" in texts and "x & y" in texts and any("p]]>" in s for s in texts)


def test_weftctl_graph_writes_the_svg_and_topology_prints_tables(core, monkeypatch, capsys,
                                                                 tmp_path):
    import controller.weftctl as w
    monkeypatch.setattr(w, "client", lambda *_: api_client(core, TOKEN))
    out = tmp_path / "cluster.svg"
    assert weftctl_main(["graph", "--output", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    ET.fromstring(out.read_bytes())
    assert "gamma" in out.read_text() and "red-db" in out.read_text()
    assert weftctl_main(["topology"]) == 0
    text = capsys.readouterr().out
    assert "BETWEEN" in text and "alpha - gamma" in text and "web" in text
    assert weftctl_main(["graph", "--output", str(tmp_path / "no" / "x.svg")]) == 2
    wrong = api_client(core, TOKEN)
    wrong.headers["Authorization"] = "Bearer wrong"
    monkeypatch.setattr(w, "client", lambda *_: wrong)
    assert weftctl_main(["graph"]) == 1 and "401" in capsys.readouterr().err
