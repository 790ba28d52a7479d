"""The lab's outside world: external nodes behind a router beyond the underlay.

One lab for the module (two hosts with agents, two external nodes on two networks);
then labs of their own for the crash cases, built without agents (seconds each).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import converged_lab, lab_name, wait_for
from weft_lab import lab as L
from weft_lab import nodes as N
from weft_lab import outside as O
from weft_lab.shell import netns_list, netns_pids, run
from weft_lab.topology import parse
from weft_lab.traffic import node_run, reaches, tcpdump

TOPO = """
name: {name}
{extra}
hosts:
  - name: host1
  - name: host2
external:
  - {{name: ext, ip: 203.0.113.10/24, serve: [tcp:5201, udp:5201, http:8000]}}
  - {{name: lan, ip: 198.51.100.20/24, serve: [http:80]}}
"""

EXT, LAN = "203.0.113.10", "198.51.100.20"


def outside_topo(extra: str = "docker: false", name: str | None = None):
    return parse(TOPO.format(name=name or lab_name("o"), extra=extra))


# -- down, also after crashes: labs of their own, first (one lab at a time) -------------

BARE = "agent: false\ncontroller: false"


def test_down_leaves_nothing(leaves_nothing):
    topo = outside_topo(BARE)
    L.up(topo)
    try:
        pids = json.loads((N.state_dir(topo.name) / "pids.json").read_text())
        assert {"outside-ext-iperf3-5201", "outside-ext-servers", "outside-lan-servers"} <= \
            set(pids)
        assert O.http_get(topo.name, "host1", EXT, 8000) is not None   # via eth0 here
    finally:
        L.down(topo.name)
    assert not any(Path(f"/proc/{p}").exists() and _in_lab(p, topo.name)
                   for p in pids.values())
    assert not N.lab_exists(topo.name)


def _in_lab(pid: int, lab: str) -> bool:
    try:
        return lab in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


def test_down_after_up_was_killed_midway(leaves_nothing, tmp_path):
    """`weft-lab up` killed -9 while it builds the hosts (the outside world is up by
    then): down finds every namespace and process by the lab's name."""
    name = lab_name("o")
    path = tmp_path / "t.yaml"
    path.write_text(TOPO.format(name=name, extra="docker: false"))
    proc = subprocess.Popen([sys.executable, "-m", "weft_lab.cli", "up", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:           # the step after the outside world
            if "hosts (" in line:
                break
        assert netns_pids(N.ns_name(name, "ext")), "the servers were not up"
        time.sleep(0.5)                     # well inside building the hosts
        os.killpg(proc.pid, signal.SIGKILL)  # up and the commands it runs, as a crash
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert N.lab_exists(name)
    out = subprocess.run([sys.executable, "-m", "weft_lab.cli", "down", "--lab", name],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert not N.lab_exists(name)


def test_down_after_everything_was_killed_and_the_state_lost(leaves_nothing):
    """kill -9 of every process of the lab, keeper included, and its state directory
    gone: down still removes the router, the external nodes and all the rest."""
    topo = outside_topo(BARE)
    L.up(topo)
    try:
        for ns in [n for n in netns_list() if n.startswith(topo.name + ".")]:
            for pid in netns_pids(ns):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        run(["rm", "-rf", str(N.state_dir(topo.name))])
    finally:
        L.down(topo.name)
    assert not N.lab_exists(topo.name)


# -- the module's lab --------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab():
    with converged_lab(outside_topo()) as topo:
        yield topo


def test_the_router_and_the_routes(lab):
    spaces = set(netns_list())
    assert {f"{lab.name}.{n}" for n in ("wan", "ext", "lan")} <= spaces
    wan = run(["ip", "-4", "-o", "addr", "show"], ns=N.ns_name(lab.name, "wan"))
    assert "192.168.50.254/24" in wan and "203.0.113.1/24" in wan and "198.51.100.1/24" in wan
    assert run(["sysctl", "-n", "net.ipv4.ip_forward"],
               ns=N.ns_name(lab.name, "wan")).strip() == "1"
    assert not run(["iptables-save"], ns=N.ns_name(lab.name, "wan"), check=False).count(
        "MASQUERADE")
    for h in lab.hosts:   # on br-phy, where the agent moved the underlay address
        route = run(["ip", "route", "show", "default"], ns=N.ns_name(lab.name, h.name))
        assert route.split()[:5] == ["default", "via", "192.168.50.254", "dev", "br-phy"], route
    st = L.status(lab.name)
    assert st["wan"]["up"] and [e["name"] for e in st["external"]] == ["ext", "lan"]
    pids = json.loads((N.state_dir(lab.name) / "pids.json").read_text())
    running = {int(p.split()[0]) for p in st["external"][0]["processes"]}
    assert {pids["outside-ext-servers"], pids["outside-ext-iperf3-5201"]} <= running


def test_hosts_reach_the_servers_and_are_seen_by_their_underlay_address(lab):
    for h in lab.hosts:
        assert reaches(lab.name, h.name, EXT) and reaches(lab.name, h.name, LAN)
        got = O.http_get(lab.name, h.name, EXT, 8000, f"/{h.name}")
        assert got and (got[0], got[2]) == (h.underlay_ip, f"/{h.name}"), got
        assert O.http_get(lab.name, h.name, LAN, 80, "/") is not None
        words = [f"{h.name}-{i}" for i in range(5)]
        assert O.udp_echo(lab.name, h.name, EXT, 5201, words) == words
        mbps = iperf_to(lab, h.name)
        print(f"\n{h.name} -> ext iperf3 (TCP, through br-phy and the router): {mbps:.0f} Mbit/s")
        assert mbps > 10
    seen = O.peers(lab.name, "ext")
    for kind in ("http", "udp", "tcp"):
        assert {r["peer"] for r in seen if r["kind"] == kind} == \
            {h.underlay_ip for h in lab.hosts}, (kind, seen)
    assert [r["path"] for r in seen if r["kind"] == "http"] == ["/host1", "/host2"]
    assert O.peer_addresses(lab.name, "lan", "http") == {h.underlay_ip for h in lab.hosts}
    assert O.peer_addresses(lab.name, "lan") == O.peer_addresses(lab.name, "lan", "http")


def iperf_to(lab, node: str) -> float:
    """TCP throughput to ext's always-on iperf3 server (traffic.iperf starts its own)."""
    out = node_run(lab.name, node, ["iperf3", "-c", EXT, "-p", "5201", "-t", "2", "-J"],
                   timeout=60)
    return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6


def test_the_router_does_not_nat(lab):
    """Only the underlay is routed back: a packet that leaves a host with another source
    address (its management address here; a container's without weft's NAT) reaches the
    external node, and its answer goes nowhere."""
    h = lab.hosts[0]
    dump = tcpdump(lab.name, "ext", ["-i", "eth0", "-c", "1",
                                     f"icmp[icmptype] = icmp-echo and src host {h.mgmt_ip}"])
    try:
        out = node_run(lab.name, h.name, ["ping", "-c", "2", "-W", "1", "-I", h.mgmt_ip, EXT])
        seen, _ = dump.communicate(timeout=10)
    finally:
        if dump.poll() is None:
            dump.kill()
            dump.wait()
    assert " 0 received" in out.stdout, out.stdout
    assert f"{h.mgmt_ip} > {EXT}" in seen, seen
    assert node_run(lab.name, "wan", ["ip", "route", "get", h.mgmt_ip]).returncode != 0


def test_external_nodes_do_not_reach_the_management_network(lab):
    assert not reaches(lab.name, "ext", lab.controller_ip, tries=2)
    assert not reaches(lab.name, "ext", lab.hosts[0].mgmt_ip, tries=2)
    assert reaches(lab.name, "ext", lab.hosts[0].underlay_ip)


def test_route_to_outside_again_after_ovs_restart(lab):
    """An ovs-vswitchd restart takes br-phy (with its address and the route) away; the
    agent puts the address back, `route_to_outside` the route."""
    h = lab.hosts[1]
    L.kill_daemon(lab.name, h.name, "ovs-vswitchd")
    L.start_vswitchd(lab.name, h.name)
    wait_for(lambda: L._underlay_dev(N.ns_name(lab.name, h.name), h.underlay_ip) == "br-phy",
             60, "the agent to put the underlay address back on br-phy")
    L.route_to_outside(lab)
    wait_for(lambda: O.http_get(lab.name, h.name, EXT, 8000, "/again"), 30,
             "host2 to reach ext again")
