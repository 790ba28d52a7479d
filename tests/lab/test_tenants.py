"""Tenant isolation with real traffic on three hosts, and hitless controller restarts.

One lab per transport serves the whole module (three-hosts-tenants.yaml over
VXLAN tunnels, vlan-transport.yaml over 802.1Q on a shared uplink): red and
blue share hosts, tunnels or uplinks, the subnet 10.10.0.0/24 and even MACs.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import converged_lab, lab_name
from weft_lab import cluster as C
from weft_lab import nodes as N
from weft_lab.shell import netns_pids, run
from weft_lab.topology import load
from weft_lab.measure import bind_to_first_packet, percentile, pings, plug_bare_port
from weft_lab.traffic import capture, captured, iperf, node_run, pinging, probe_all, reaches

ROOT = Path(__file__).resolve().parents[2]
TENANTS = {"red": ["red1", "red2", "red3"], "blue": ["blue1", "blue2", "blue3"]}
IPS = {"1": "10.10.0.1", "2": "10.10.0.2", "3": "10.10.0.3"}


@pytest.fixture(scope="module", params=["three-hosts-tenants.yaml", "vlan-transport.yaml"])
def lab(request):
    """The same matrix over tunnels and over VLAN transport (a shared L2 uplink)."""
    with converged_lab(load(ROOT / "topologies" / request.param).with_name(lab_name("i"))) as topo:
        yield topo


def mac_of(lab: str, node: str) -> str:
    return node_run(lab, node, ["cat", "/sys/class/net/eth0/address"]).stdout.strip()


def test_same_tenant_pairs_reach_each_other_across_hosts(lab):
    for tenant, members in TENANTS.items():
        for a in members:
            for b in members:
                if a != b:
                    assert reaches(lab.name, a, IPS[b[-1]]), f"{a} -> {b} in {tenant}"
    assert iperf(lab.name, "red1", "red3", IPS["3"], seconds=2) > 10
    assert iperf(lab.name, "blue2", "blue1", IPS["1"], seconds=2) > 10


def test_default_tenant_joins_plain_docker_containers(lab):
    assert reaches(lab.name, "d1", lab.addr("d2"))
    assert reaches(lab.name, "d3", lab.addr("d1"))
    # ...and the default tenant is a tenant like any other: no way into red.
    assert not reaches(lab.name, "d1", IPS["2"], tries=2)


@pytest.mark.parametrize("src,victims", [("red1", ["blue1", "blue2", "blue3", "d1", "d2", "d3"]),
                                         ("blue3", ["red1", "red2", "red3", "d1", "d2", "d3"])])
def test_nothing_crosses_tenants(lab, src, victims):
    own = [m for t in TENANTS.values() if src in t for m in t if m != src]
    procs = capture(lab.name, victims + own)
    try:
        # unicast to the other tenant's twin: same IP and MAC exist in both tenants
        probe_all(lab.name, src, "10.10.0.255", IPS["3"] if src != "blue3" else IPS["1"],
                  [mac_of(lab.name, v) for v in victims])
        time.sleep(0.5)
    finally:
        counts = captured(procs)
    assert {v: counts[v] for v in victims} == {v: 0 for v in victims}, \
        f"frames from {src} reached another tenant"
    # control: the same probes did reach every member of the sender's own tenant
    assert all(counts[v] > 0 for v in own), counts


def test_switch_views_and_flows_explain_themselves(lab):
    out = subprocess.run([str(ROOT / ".venv/bin/weftctl") if (ROOT / ".venv/bin/weftctl").exists()
                          else "weftctl", "--api", f"unix:{C.api_socket(lab.name)}",
                          "--token", C.api_token(lab.name), "switch", "list"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert all(f"host{i}" in out.stdout for i in (1, 2, 3))
    with C.api(lab.name) as c:
        flows = c.get("/v1/switches/host1/flows").json()
    features = {f["feature"] for f in flows}
    assert {"base", "isolation", "endpoint"} <= features
    assert "foreign" not in features


def _controller_pid(lab: str) -> int:
    for pid in netns_pids(N.ns_name(lab, "ctl")):
        if b"controller.manager" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise AssertionError("controller not running")


def test_controller_kill9_and_restart_loses_no_packet(lab):
    """100 pings/s red1 -> red2 while the controller dies and comes back."""
    with pinging(lab.name, "red1", IPS["2"], 600) as res:
        time.sleep(1)
        os.kill(_controller_pid(lab.name), signal.SIGKILL)
        time.sleep(1.5)
        C.start_controller(lab)
        C.wait_api(lab.name)
        C.wait_converged(lab)
    assert res.sent == res.received == 600, res
    with C.api(lab.name) as c:
        sws = c.get("/v1/switches").json()
    assert all(s["connected"] and s["syncs"] >= 1 for s in sws)
    assert [s["flow_mods_sent"] for s in sws] == [0, 0, 0], sws
    assert [s["group_mods_sent"] for s in sws] == [0, 0, 0], sws


def test_rest_binding_reaches_the_switch_fast(lab):
    """An operator port bound through REST: dropped before, forwarding after; latency noted."""
    ns = plug_bare_port(lab.name, "host1", "x1", "10.10.0.50/24", "02:00:00:00:00:50", "wx1")
    try:
        assert not pings(ns, IPS["2"])                                  # unbound: dropped
        with C.api(lab.name) as c:
            lat = bind_to_first_packet(
                c, ns, {"host": "host1", "port": "wx1", "tenant": "red",
                        "mac": "02:00:00:00:00:50"}, IPS["2"], "02:00:00:00:00:02",
                rounds=10, settle=lambda: C.wait_converged(lab))
        print(f"bind-to-first-packet over {len(lat)} bindings: p50 "
              f"{percentile(lat, 50) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms")
        assert max(lat) < 1.0
        assert not pings(ns, IPS["2"])                                  # unbound again
    finally:
        N.vsctl(lab.name, "host1", "--if-exists", "del-port", "br0", "wx1")
        run(["ip", "netns", "del", ns], check=False)
