"""The Prometheus families of both daemons, from plain data: names, labels, escaping,
tenant sums, the sync histogram, the agent's families, the agent's listener, and the
Grafana dashboard's queries against what is rendered."""
from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from types import MappingProxyType

import pytest

from cluster.hostsfile import DOCKER_LINK_PORT
from cluster.promtext import Family, Histogram, escape, render
from controller.flows import acl_cookie
from controller.metrics import MetricsInput, SwitchStats, families, render_metrics
from controller.model import AclRule, Binding, Tenant, Topology
from controller.sync import SYNC_SECONDS_EMPTY, SwitchView
from ovs_agent.metrics import AgentCounters, AgentSnapshot, TunnelState
from ovs_agent.metrics import render_metrics as render_agent

ROOT = Path(__file__).resolve().parents[2]


def port(no: int, rx: int, tx: int) -> dict:
    return {"port_no": no, "rx_packets": rx, "tx_packets": tx, "rx_bytes": rx * 100,
            "tx_bytes": tx * 100, "rx_dropped": 1, "tx_dropped": 0, "rx_errors": 0,
            "tx_errors": 0}


def sample_input() -> MetricsInput:
    topo = Topology(
        (Tenant("red", 100), Tenant("red-db", 101, domain="red"), Tenant("blue", 200)),
        (Binding("h1", "p1", "red", mac="02:00:00:00:00:01"),
         Binding("h1", "p2", "red-db", mac="02:00:00:00:00:02"),
         Binding("h2", "p3", "red", mac="02:00:00:00:00:03")),
        ("h1", "h2"), acls=(AclRule(7, "red", 10, "drop"),))
    sw1 = SwitchView(1, "h1", connected=True, ports=MappingProxyType(
        {"p1": 1, "p2": 2, DOCKER_LINK_PORT: 3, "vx-h2": 4}), synced_version=5,
        syncs=3, errors=1, last_sync=MappingProxyType({"flow_mods": 12, "group_mods": 1,
                                                       "meter_mods": 0, "flows_desired": 40}),
        sync_seconds=SYNC_SECONDS_EMPTY.observe(0.02).observe(3.0))
    sw2 = SwitchView(2, "h2", connected=True, ports=MappingProxyType({"p3": 1}))
    stats = {1: SwitchStats(100.0, 0.004,
                            (port(1, 10, 20), port(2, 5, 5), port(3, 7, 8), port(4, 1, 1),
                             port(0xFFFFFFFE, 9, 9)),
                            ({"meter_id": 3, "packets_in": 50, "bytes_in": 5000,
                              "packets_dropped": 20, "bytes_dropped": 2000},),
                            ({"cookie": hex(acl_cookie(7)), "packets": 4, "bytes": 240},
                             {"cookie": hex(acl_cookie()), "packets": 99, "bytes": 1})),
             2: SwitchStats(98.0, 0.003, (port(1, 30, 40),), (),
                            ({"cookie": hex(acl_cookie(7)), "packets": 1, "bytes": 60},),
                            error="switch disconnected", errors=2)}
    return MetricsInput({1: sw1, 2: sw2}, stats, topo, state_version=5, version="0.1.0",
                        now=103.5, learn_limit_macs=1024, handler_errors={"_resync": 2},
                        loop={"queue_depth": 0, "alive": True}, stats_interval=5.0)


def samples(text: str) -> dict[str, float]:
    """Every sample line: 'name{labels}' -> value."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_every_family_has_help_and_type_and_counters_end_in_total():
    text = render_metrics(sample_input())
    for f in families(sample_input()):
        assert f"# HELP {f.name} " in text and f"# TYPE {f.name} {f.kind}\n" in text
        assert (f.kind == "counter") == f.name.endswith("_total"), f.name
        for labels, _ in f.samples:
            assert not {"mac", "ip", "address"} & set(labels), (f.name, labels)


def test_port_tenant_acl_meter_and_sync_values():
    s = samples(render_metrics(sample_input()))
    assert s['weft_port_rx_packets_total{host="h1",port="p1"}'] == 10
    assert s['weft_port_tx_bytes_total{host="h2",port="p3"}'] == 4000
    assert not any("4294967294" in k or 'port=""' in k for k in s)     # LOCAL left out
    # red: p1 on h1 and p3 on h2; red-db (a network of red): p2; default: the docker0 link
    assert s['weft_tenant_rx_packets_total{tenant="red",network="red"}'] == 40
    assert s['weft_tenant_rx_packets_total{tenant="red",network="red-db"}'] == 5
    assert s['weft_tenant_tx_packets_total{tenant="default",network="default"}'] == 8
    assert s['weft_tenant_ports{tenant="red",network="red"}'] == 2
    assert s['weft_tenant_ports{tenant="blue",network="blue"}'] == 0
    assert s['weft_acl_rule_packets_total{tenant="red",rule="7",action="drop"}'] == 5
    assert s['weft_acl_rule_bytes_total{tenant="red",rule="7",action="drop"}'] == 300
    assert s['weft_meter_band_packets_total{host="h1",meter="3"}'] == 20
    assert s['weft_meter_packets_total{host="h1",meter="3"}'] == 50
    assert s['weft_sync_duration_seconds_bucket{host="h1",le="0.025"}'] == 1
    assert s['weft_sync_duration_seconds_bucket{host="h1",le="+Inf"}'] == 2
    assert s['weft_sync_duration_seconds_count{host="h1"}'] == 2
    assert s['weft_sync_duration_seconds_sum{host="h1"}'] == pytest.approx(3.02)
    assert s['weft_sync_last_plan_mods{host="h1",kind="flow"}'] == 12
    assert s['weft_sync_errors_total{host="h1"}'] == 1
    assert s['weft_switch_in_sync{host="h1"}'] == 1 and s['weft_switch_in_sync{host="h2"}'] == 0
    assert s['weft_stats_age_seconds{host="h2"}'] == 5.5
    assert s['weft_stats_poll_errors_total{host="h2"}'] == 2
    assert s['weft_handler_errors_total{handler="_resync"}'] == 2
    assert s['weft_port_bindings'] == 3 and s['weft_tenants'] == 3 and s['weft_networks'] == 4


def test_label_values_are_escaped():
    assert escape('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    text = render([Family("x_total", "counter", "h").add(1, port='we"ird\\')])
    assert 'x_total{port="we\\"ird\\\\"} 1' in text
    assert Histogram.empty((1.0,)).observe(2.0).counts == (0,)


def test_the_agent_families():
    c = AgentCounters()
    c.add("repairs")
    c.add("repair_ops", 3)
    c.add("reports_failed")
    snap = AgentSnapshot("h1", "0.1.0", c, (TunnelState("h2", "vxlan", True),
                                            TunnelState("h3", "gre", False)),
                         docker0_link_up=True, resolver={"answered": 4, "forwarded": 1},
                         zones=2, networks={"managed": 1, "conflicts": 0})
    text = render_agent(snap)
    s = samples(text)
    assert s['weft_agent_tunnel_up{peer="h2",type="vxlan",host="h1"}'] == 1
    assert s['weft_agent_tunnel_up{peer="h3",type="gre",host="h1"}'] == 0
    assert s['weft_agent_repairs_total{host="h1"}'] == 1
    assert s['weft_agent_repair_operations_total{host="h1"}'] == 3
    assert s['weft_agent_reports_total{result="failed",host="h1"}'] == 1
    assert s['weft_agent_docker0_link_up{host="h1"}'] == 1
    assert s['weft_agent_dns_queries_total{outcome="answered",host="h1"}'] == 4
    assert s['weft_agent_docker_networks{state="managed",host="h1"}'] == 1
    assert "# TYPE weft_agent_afxdp_fallbacks_total counter" in text


def test_the_agent_serves_metrics_on_its_listener_behind_the_token():
    from ovs_agent import httpserver
    from ovs_agent.agent import Agent
    agent = Agent(Path("hosts.yaml"), "h1", "unix:/nonexistent")
    assert agent.metrics_http(b"")[0] == 503            # before OVSDB is connected
    agent.snapshot = lambda api: AgentSnapshot("h1", "v", agent.counters)   # type: ignore
    agent._api = object()
    srv = httpserver.serve(("127.0.0.1", 0), "s3cret",
                           {**httpserver.ROUTES, ("GET", "/metrics"): agent.metrics_http})
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/metrics"
        with pytest.raises(urllib.error.HTTPError) as no:
            urllib.request.urlopen(url, timeout=5)
        assert no.value.code == 401
        req = urllib.request.Request(url, headers={"Authorization": "Bearer s3cret"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert b'weft_agent_passes_total{host="h1"} 0' in r.read()
    finally:
        srv.shutdown()
        srv.server_close()


def test_the_dashboard_uses_only_rendered_metrics():
    dash = json.loads((ROOT / "docs" / "grafana-weft.json").read_text())
    known = {f.name for f in families(sample_input())}
    known |= {re.match(r"(\w+)", line[7:]).group(1) for line in
              render_agent(AgentSnapshot("h", "v", AgentCounters())).splitlines()
              if line.startswith("# TYPE ")}
    known |= {f"{n}_{s}" for n in list(known) for s in ("bucket", "sum", "count")}
    used = set()
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            used |= set(re.findall(r"\bweft_\w+", target["expr"]))
    assert used, "the dashboard queries nothing"
    assert used <= known, used - known
