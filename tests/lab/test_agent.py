"""ovs-agent against real OVS in the lab: mesh, idempotence, join/leave, faults."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cluster.hostsfile import tunnel_port_name
from tests.conftest import lab_name, wait_for
from weft_lab import lab as L
from weft_lab import nodes as N
from weft_lab.topology import parse
from weft_lab.traffic import reaches


def topo(n: int, tunnel: str = "vxlan", name: str | None = None):
    hosts = "\n".join(f"  - name: h{i}\n    containers: [{{name: c{i}}}]"
                      for i in range(1, n + 1))
    return parse(f"name: {name or lab_name()}\ntunnel_type: {tunnel}\nagent: true\n"
                 f"controller: false\nhosts:\n{hosts}\n")


def interfaces(lab: str, host: str) -> dict[str, dict]:
    """Interface name -> {uuid, type, options, external_ids} from the host's OVSDB."""
    out = N.vsctl(lab, host, "--format=json", "--columns=_uuid,name,type,options,external_ids",
                  "list", "Interface")
    data = json.loads(out)
    rows = {}
    for row in data["data"]:
        rec = dict(zip(data["headings"], row))
        rows[rec["name"]] = {"uuid": rec["_uuid"][1], "type": rec["type"],
                             "options": dict(rec["options"][1]),
                             "external_ids": dict(rec["external_ids"][1])}
    return rows


def tunnels(lab: str, host: str) -> dict[str, dict]:
    return {n: r for n, r in interfaces(lab, host).items() if r["type"] in ("vxlan", "gre")}


def mesh_ok(t) -> bool:
    for h in t.hosts:
        want = {tunnel_port_name(t.tunnel_type, p.name): p.underlay_ip
                for p in t.hosts if p.name != h.name}
        have = {n: r["options"].get("remote_ip") for n, r in tunnels(t.name, h.name).items()}
        if have != want:
            return False
    return True


def run_agent_once(t, host: str, peers: str) -> subprocess.CompletedProcess:
    return subprocess.run(N.exec_argv(t.name, host, [
        sys.executable, "-m", "ovs_agent.cli", "--once", "--peers", peers, "--host", host,
        "--subnet-file", str(N.host_dir(t.name, host) / "subnet.env")]),
        capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("n,tunnel", [(2, "vxlan"), (2, "gre"), (5, "vxlan"), (5, "gre")])
def test_full_mesh(leaves_nothing, n, tunnel):
    with L.running(topo(n, tunnel)) as t:
        wait_for(lambda: mesh_ok(t), what="full mesh")
        for h in t.hosts:
            for row in tunnels(t.name, h.name).values():
                assert row["type"] == tunnel
                assert row["options"]["key"] == "flow"
                assert row["external_ids"]["weft-peer"] in {p.name for p in t.hosts} - {h.name}
            br0 = N.vsctl(t.name, h.name, "get", "bridge", "br0", "fail_mode").strip()
            assert br0 == "secure"


def test_docker0_link_carries_traffic(leaves_nothing):
    """With a plain NORMAL flow in place (no controller here), c1 reaches c2 via the link."""
    with L.running(topo(2)) as t:
        wait_for(lambda: mesh_ok(t), what="mesh")
        for h in t.hosts:
            wait_for(lambda h=h: subprocess.run(N.exec_argv(t.name, h.name, [
                "ovs-ofctl", "-O", "OpenFlow13", "add-flow", "br0", "actions=NORMAL"]),
                capture_output=True).returncode == 0, what="br0 accepting flows")
            env_file = N.host_dir(t.name, h.name) / "subnet.env"
            wait_for(env_file.exists, what="subnet.env")
            env = env_file.read_text()
            assert "WEFT_MTU=1450" in env and f"WEFT_SUBNET={h.docker_subnet}" in env
        assert reaches(t.name, "c1", t.addr("c2"))


def test_second_pass_writes_nothing_and_join_leave_do_not_flap(leaves_nothing, tmp_path):
    with L.running(topo(3)) as t:
        wait_for(lambda: mesh_ok(t), what="mesh")
        before = {h.name: interfaces(t.name, h.name) for h in t.hosts}
        peers = str(N.state_dir(t.name) / "hosts.yaml")
        res = run_agent_once(t, "h1", peers)
        assert res.returncode == 0, res.stderr
        assert "ovsdb:" not in res.stderr and "0 changes" in res.stderr
        assert interfaces(t.name, "h1") == before["h1"]

        # Join: one more host in hosts.yaml -> exactly one new tunnel per host.
        hy = N.state_dir(t.name) / "hosts.yaml"
        original = hy.read_text()
        hy.write_text(original + "  - name: h9\n    underlay_ip: 192.168.50.99\n")
        for h in t.hosts:
            wait_for(lambda h=h: "vx-h9" in tunnels(t.name, h.name), what=f"join on {h.name}")
            now = interfaces(t.name, h.name)
            assert set(now) - set(before[h.name]) == {"vx-h9"}
            for name, row in before[h.name].items():
                assert now[name]["uuid"] == row["uuid"], f"{name} on {h.name} flapped"
        # Leave: remove it again -> exactly that tunnel goes, nothing else moves.
        hy.write_text(original)
        for h in t.hosts:
            wait_for(lambda h=h: "vx-h9" not in tunnels(t.name, h.name), what="leave")
            assert {n: r["uuid"] for n, r in interfaces(t.name, h.name).items()} == \
                {n: r["uuid"] for n, r in before[h.name].items()}


def test_operator_ports_survive(leaves_nothing):
    with L.running(topo(2)) as t:
        wait_for(lambda: mesh_ok(t), what="mesh")
        N.vsctl(t.name, "h1", "add-port", "br0", "manual0", "--", "set", "interface", "manual0",
                "type=internal")
        N.vsctl(t.name, "h1", "add-port", "br0", "vx-manual", "--", "set", "interface",
                "vx-manual", "type=vxlan", "options:remote_ip=192.168.50.200")
        os.kill(_agent_pid(t, "h1"), signal.SIGHUP)
        time.sleep(3)               # more than one pass (interval 2 s)
        names = set(interfaces(t.name, "h1"))
        assert {"manual0", "vx-manual"} <= names


BAD_FILES = {
    "syntax": "hosts: [\n",
    "missing_ip": "controller: {openflow: ['tcp:10.99.0.1:6653']}\nhosts:\n  - name: h1\n",
    "dup_name": "controller: {openflow: ['tcp:10.99.0.1:6653']}\nhosts:\n"
                "  - {name: h1, underlay_ip: 192.168.50.10}\n"
                "  - {name: h1, underlay_ip: 192.168.50.11}\n",
    "dup_ip": "controller: {openflow: ['tcp:10.99.0.1:6653']}\nhosts:\n"
              "  - {name: h1, underlay_ip: 192.168.50.10}\n"
              "  - {name: h2, underlay_ip: 192.168.50.10}\n",
    "bad_ip": "controller: {openflow: ['tcp:10.99.0.1:6653']}\nhosts:\n"
              "  - {name: h1, underlay_ip: 192.168.50.300}\n",
    "bad_tunnel": "controller: {openflow: ['tcp:10.99.0.1:6653']}\ntunnel_type: ipip\nhosts:\n"
                  "  - {name: h1, underlay_ip: 192.168.50.10}\n",
    "bad_name": "controller: {openflow: ['tcp:10.99.0.1:6653']}\nhosts:\n"
                "  - {name: 'h 1/x', underlay_ip: 192.168.50.10}\n",
}


def test_bad_hosts_yaml_refused_and_ovs_unchanged(leaves_nothing, tmp_path):
    with L.running(topo(2)) as t:
        wait_for(lambda: mesh_ok(t), what="mesh")
        os.kill(_agent_pid(t, "h1"), signal.SIGSTOP)      # hold the daemon still
        try:
            before = interfaces(t.name, "h1")
            for case, text in BAD_FILES.items():
                bad = tmp_path / f"{case}.yaml"
                bad.write_text(text)
                res = run_agent_once(t, "h1", str(bad))
                assert res.returncode == 2, (case, res.stderr)
                assert f"{bad}" in res.stderr, (case, res.stderr)
                assert interfaces(t.name, "h1") == before, case
        finally:
            os.kill(_agent_pid(t, "h1"), signal.SIGCONT)


def _agent_pid(t, host: str) -> int:
    from weft_lab.shell import netns_pids
    for pid in netns_pids(N.ns_name(t.name, host)):
        if b"ovs_agent.cli" in open(f"/proc/{pid}/cmdline", "rb").read():
            return pid
    raise AssertionError("agent not running")


def test_ovs_restart_and_agent_kill9_recover(leaves_nothing):
    with L.running(topo(2)) as t:
        wait_for(lambda: mesh_ok(t), what="mesh")
        uuids = {n: r["uuid"] for n, r in interfaces(t.name, "h1").items()}
        # OVS restarted under a running agent: br-phy's tap loses its address.
        L.stop_ovs(t.name, "h1")
        L.start_ovs(t.name, "h1")
        wait_for(lambda: "192.168.50.10" in subprocess.run(
            N.exec_argv(t.name, "h1", ["ip", "-4", "addr", "show", "br-phy"]),
            capture_output=True, text=True).stdout, what="underlay address back on br-phy")
        assert mesh_ok(t)
        # Agent killed -9 and restarted: converges with no duplicates.
        os.kill(_agent_pid(t, "h1"), signal.SIGKILL)
        N.vsctl(t.name, "h1", "del-port", "br0", "vx-h2")      # damage while it is away
        L.start_agent(t.name, "h1")
        wait_for(lambda: mesh_ok(t), what="mesh after agent restart")
        ports = N.vsctl(t.name, "h1", "list-ports", "br0").split()
        assert sorted(ports) == sorted(set(ports)) == ["vx-h2", "weft-d0"]
        now = {n: r["uuid"] for n, r in interfaces(t.name, "h1").items()}
        assert {n for n in now if now[n] == uuids.get(n)} >= {"weft-d0", "eth0"}
