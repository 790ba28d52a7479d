"""Debian's real `prometheus` scrapes the lab's controller and both agents; PromQL
checks per metric family follow the traffic the test sends.

The QoS lab's shape (tenant q: q1, q2 on host1, q3 on host2).  Prometheus runs in
the lab's ctl namespace (it reaches the controller's TCP API and every agent's
``--listen`` on the management network), on 127.0.0.1 there, with its own temp
data dir, a 1 s scrape interval and the API token as ``credentials_file``; the
test asks its HTTP API with curl in that namespace.  Counters of the switches are
read by the controller's poller (``--weft-stats-interval``, 5 s), so each check
waits for the value to arrive.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import converged_lab, lab_name, wait_for
from weft_lab import cluster as C
from weft_lab import nodes as N
from weft_lab.lab import AGENT_PORT
from weft_lab.topology import parse
from weft_lab.traffic import iperf, node_run, ping

TOPO = """
name: {name}
tenants: [{{name: q, subnet: 10.61.0.0/24}}]
hosts:
  - name: host1
    containers:
      - {{name: q1, attach: br0, tenant: q, ip: 10.61.0.1/24}}
      - {{name: q2, attach: br0, tenant: q, ip: 10.61.0.2/24}}
  - name: host2
    containers:
      - {{name: q3, attach: br0, tenant: q, ip: 10.61.0.3/24}}
"""
IP = {"q1": "10.61.0.1", "q2": "10.61.0.2", "q3": "10.61.0.3"}
PROM_PORT = 19090           # in the lab's own ctl namespace: nothing else listens there
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


@pytest.fixture(scope="module")
def lab():
    with converged_lab(parse(TOPO.format(name=lab_name("m")))) as topo:
        yield topo


@pytest.fixture(scope="module")
def prom(lab):
    """A prometheus process of our own (by PID), scraping the controller and the agents;
    stopped and its data dir removed whatever happens."""
    if not Path(PROMETHEUS).exists():
        pytest.fail("prometheus is not installed (./dev.sh setup installs Debian's)")
    tmp = Path(tempfile.mkdtemp(prefix="weft-prom-"))
    proc = None
    try:
        token = tmp / "token"
        token.write_text(C.api_token(lab.name))
        token.chmod(0o600)
        agents = [f"{h.mgmt_ip}:{AGENT_PORT}" for h in lab.hosts]
        auth = {"type": "Bearer", "credentials_file": str(token)}
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                  "scrape_configs": [
                      {"job_name": "weft-controller", "authorization": auth,
                       "static_configs": [{"targets": [f"{lab.controller_ip}:8080"]}]},
                      {"job_name": "weft-agent", "authorization": auth,
                       "static_configs": [{"targets": agents}]}]}
        (tmp / "prometheus.yml").write_text(json.dumps(config))     # YAML is JSON's superset
        log = open(tmp / "prometheus.log", "w")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", N.ns_name(lab.name, N.CTL), PROMETHEUS,
             f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
             f"--web.listen-address=127.0.0.1:{PROM_PORT}"], stdout=log, stderr=log)
        client = Prom(lab.name, proc, tmp)
        wait_for(lambda: client.ready(), 30, "prometheus ready")
        yield client
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


class Prom:
    def __init__(self, lab: str, proc: subprocess.Popen, tmp: Path) -> None:
        self.lab, self.proc, self.tmp = lab, proc, tmp

    def _get(self, path: str, *args: str) -> dict | None:
        r = subprocess.run(N.exec_argv(self.lab, N.CTL, [
            "curl", "-sf", "--max-time", "5", "-G", *args,
            f"http://127.0.0.1:{PROM_PORT}{path}"]), capture_output=True, text=True, timeout=10)
        return json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else None

    def ready(self) -> bool:
        assert self.proc.poll() is None, (self.tmp / "prometheus.log").read_text()[-2000:]
        return subprocess.run(N.exec_argv(
            self.lab, N.CTL, ["curl", "-sf", f"http://127.0.0.1:{PROM_PORT}/-/ready"]),
            capture_output=True).returncode == 0

    def query(self, expr: str) -> list[tuple[dict, float]]:
        """The instant vector of ``expr`` as (labels, value) pairs."""
        doc = self._get("/api/v1/query", "--data-urlencode", f"query={expr}")
        assert doc is not None and doc["status"] == "success", (expr, doc)
        return [(r["metric"], float(r["value"][1])) for r in doc["data"]["result"]]

    def value(self, expr: str) -> float:
        """The one value of ``expr`` (waits for the series to exist)."""
        got = wait_for(lambda: self.query(expr), 30, f"a value of {expr}")
        assert len(got) == 1, (expr, got)
        return got[0][1]

    def holds(self, expr: str, timeout: float = 30) -> list[tuple[dict, float]]:
        """Wait until the PromQL filter ``expr`` returns something; return it."""
        return wait_for(lambda: self.query(expr), timeout, f"PromQL {expr}")


CHECKED: list[str] = []


def check(prom: Prom, expr: str, timeout: float = 30) -> list[tuple[dict, float]]:
    CHECKED.append(expr)
    return prom.holds(expr, timeout)


@pytest.fixture(scope="module")
def api(lab):
    with C.api(lab.name) as c:
        yield c


def port_of(api, node: str, lab) -> tuple[str, str]:
    mac = node_run(lab.name, node, ["cat", "/sys/class/net/eth0/address"]).stdout.strip()
    ports = {p["mac"]: (p["host"], p["port"])
             for p in api.get("/v1/ports", params={"tenant": "q"}).json()}
    return ports[mac]


def test_every_daemon_is_scraped(prom, lab):
    check(prom, 'up{job="weft-controller"} == 1')
    got = check(prom, 'count(up{job="weft-agent"} == 1) == 2')
    assert got[0][1] == 2
    check(prom, 'weft_build_info{job="weft-controller"} == 1')
    check(prom, 'count(weft_agent_build_info) == 2')


def test_port_and_tenant_counters_follow_a_ping(prom, lab, api):
    h1, p1 = port_of(api, "q1", lab)
    h3, p3 = port_of(api, "q3", lab)
    rx = f'weft_port_rx_packets_total{{host="{h1}",port="{p1}"}}'
    tx = f'weft_port_tx_packets_total{{host="{h3}",port="{p3}"}}'
    rx_bytes = f'weft_port_rx_bytes_total{{host="{h1}",port="{p1}"}}'
    tenant = 'weft_tenant_rx_packets_total{tenant="q",network="q"}'
    before = {e: prom.value(e) for e in (rx, tx, rx_bytes, tenant)}
    n = 40
    assert ping(lab.name, "q1", IP["q3"], count=n, interval=0.02, wait=1).received == n
    check(prom, f"{rx} >= {before[rx] + n}")                 # q1's echo requests in at host1
    check(prom, f"{tx} >= {before[tx] + n}")                 # ... out to q3 at host2
    check(prom, f"{rx_bytes} >= {before[rx_bytes] + n * 84}")   # 84 B: ICMP echo of 56 B data
    check(prom, f"{tenant} >= {before[tenant] + 2 * n}")     # requests (q1) + replies (q3)
    check(prom, 'weft_tenant_ports{tenant="q",network="q"} == 3')
    check(prom, f'weft_port_binding_info{{host="{h1}",port="{p1}",tenant="q"}} == 1')
    check(prom, f'rate({rx}[20s]) > 0')


def test_acl_rule_counts_a_denied_connection(prom, lab, api):
    version = prom.value('weft_state_version')
    rule = api.post("/v1/tenants/q/acls", json={
        "priority": 50, "action": "drop", "direction": "ingress", "ip_proto": "tcp",
        "local": IP["q3"], "port": 9}).json()
    try:
        C.wait_converged(lab)
        check(prom, f"weft_state_version > {version}")
        check(prom, 'min(weft_switch_in_sync) == 1')
        out = node_run(lab.name, "q1", ["python3", "-c", (
            "import socket\n"
            "try: socket.create_connection(('%s', 9), timeout=2)\n"
            "except OSError as e: print('refused', e)\n") % IP["q3"]], timeout=20).stdout
        assert "timed out" in out, out        # dropped: no RST from q3 either
        check(prom, f'weft_acl_rule_packets_total{{tenant="q",rule="{rule["id"]}",'
                    f'action="drop"}} >= 1')
        check(prom, f'weft_acl_rule_bytes_total{{rule="{rule["id"]}"}} >= 40')
    finally:
        api.delete(f"/v1/tenants/q/acls/{rule['id']}")
        C.wait_converged(lab)


def test_meter_band_counts_traffic_over_the_limit(prom, lab, api):
    host, port = port_of(api, "q1", lab)
    r = api.post("/v1/qos/limits", json={"host": host, "port": port, "kbps": 5000})
    assert r.status_code == 201, r.text
    meter = r.json()["id"]
    try:
        C.wait_converged(lab)
        iperf(lab.name, "q1", "q3", IP["q3"], seconds=3, udp_mbps=30)   # 6x the limit
        got = check(prom, f'weft_meter_band_packets_total{{host="{host}",meter="{meter}"}} > 0')
        passed = check(prom, f'weft_meter_packets_total{{host="{host}",meter="{meter}"}} > 0')
        assert passed[0][1] > got[0][1]     # what reached the meter includes what it dropped
        check(prom, f'weft_meter_band_bytes_total{{host="{host}",meter="{meter}"}} > 0')
    finally:
        api.delete(f"/v1/qos/limits/{meter}")
        C.wait_converged(lab)


def test_sync_and_learning_families(prom, lab):
    for h in ("host1", "host2"):
        check(prom, f'weft_syncs_total{{host="{h}"}} > 0')
        check(prom, f'weft_sync_duration_seconds_count{{host="{h}"}} > 0')
        check(prom, f'weft_sync_errors_total{{host="{h}"}} == 0')
        check(prom, f'weft_switch_connected{{host="{h}"}} == 1')
        check(prom, f'weft_sync_desired_flows{{host="{h}"}} > 0')
        check(prom, f'weft_learned_flows{{host="{h}"}} >= 0')
        check(prom, f'weft_stats_age_seconds{{host="{h}"}} < 15')
    check(prom, 'histogram_quantile(0.99, sum by (le) (weft_sync_duration_seconds_bucket)) > 0')
    check(prom, 'weft_learn_limit_macs > 0')


def test_agent_families_and_a_repair(prom, lab):
    check(prom, 'weft_agent_tunnel_up{host="host1",peer="host2"} == 1')
    check(prom, 'weft_agent_tunnel_up{host="host2",peer="host1"} == 1')
    check(prom, 'min(weft_agent_docker0_link_up) == 1')
    check(prom, 'min(weft_agent_passes_total) > 0')
    check(prom, 'min(weft_agent_reports_total{result="sent"}) >= 1')
    check(prom, 'count(weft_agent_afxdp_fallbacks_total) == 2')
    repairs = prom.value('weft_agent_repairs_total{host="host1"}')
    tunnel = next(p for p in N.vsctl(lab.name, "host1", "list-ports", "br0").split()
                  if p.endswith("host2"))
    N.vsctl(lab.name, "host1", "del-port", "br0", tunnel)        # a hand edit the agent undoes
    check(prom, f'weft_agent_repairs_total{{host="host1"}} > {repairs}')
    check(prom, 'weft_agent_tunnel_up{host="host1",peer="host2"} == 1')
    C.wait_converged(lab)
    print("\nPromQL checks that held:\n  " + "\n  ".join(CHECKED))
