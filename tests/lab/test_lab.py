"""The lab itself: real OVS hosts in namespaces, built and removed without a trace."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import lab_name
from weft_lab import lab as L
from weft_lab import nodes as N
from weft_lab.shell import netns_list, netns_pids
from weft_lab.cluster import wait_converged
from weft_lab.topology import parse
from weft_lab.traffic import iperf, ping, reaches

TWO = """
name: {name}
tunnel_type: {tunnel}
hosts:
  - name: host1
    containers: [{{name: c1}}]
  - name: host2
    containers: [{{name: c2}}]
"""


def two_hosts(tunnel: str = "vxlan", name: str | None = None):
    return parse(TWO.format(name=name or lab_name(), tunnel=tunnel))


def test_up_down_leaves_nothing(leaves_nothing):
    topo = two_hosts()
    L.up(topo)
    ns = set(netns_list())
    assert {f"{topo.name}.{n}" for n in ("ctl", "host1", "host2", "c1", "c2")} <= ns
    st = L.status(topo.name)
    wait_converged(topo)
    st = L.status(topo.name)
    assert [h["bridges"].keys() for h in st["hosts"]] == [{"br-phy", "br0"}] * 2
    assert all(any("ovs-vswitchd" in p for p in h["processes"]) for h in st["hosts"])
    L.down(topo.name)
    assert not N.lab_exists(topo.name)


@pytest.mark.parametrize("tunnel", ["vxlan", "gre"])
def test_containers_on_two_hosts_reach_each_other(leaves_nothing, tunnel):
    with L.running(two_hosts(tunnel)) as topo:
        wait_converged(topo)
        assert N.vsctl(topo.name, "host1", "get", "interface", "vx-host2" if tunnel == "vxlan"
                       else "gr-host2", "type").strip() == tunnel
        assert reaches(topo.name, "c1", topo.addr("c2"))
        res = ping(topo.name, "c2", topo.addr("c1"), count=5, interval=0.05)
        assert res.received == 5
        mbps = iperf(topo.name, "c1", "c2", topo.addr("c2"), seconds=2)
        assert mbps > 10, f"TCP over {tunnel} only {mbps:.1f} Mbit/s"


def test_second_lab_beside_the_first(leaves_nothing):
    with L.running(two_hosts()) as a, L.running(two_hosts("gre")) as b:
        wait_converged(a)
        wait_converged(b)
        assert reaches(a.name, "c1", a.addr("c2"))
        assert reaches(b.name, "c1", b.addr("c2"))
        L.down(a.name)
        assert reaches(b.name, "c2", b.addr("c1"))
        assert not any(n.startswith(a.name + ".") for n in netns_list())


def test_down_cleans_up_after_a_crash(leaves_nothing):
    topo = two_hosts()
    L.up(topo)
    # kill -9 everything the lab runs, keeper included, then clean up.
    wait_converged(topo)
    try:
        for node in ("host1", "ctl"):
            for pid in netns_pids(f"{topo.name}.{node}"):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass        # gone with its parent (containerd after dockerd)
    finally:
        L.down(topo.name)


def test_up_failure_rolls_back(leaves_nothing, monkeypatch):
    topo = two_hosts()

    def boom(*_):
        raise RuntimeError("injected failure")
    monkeypatch.setattr(L, "_build_switch", boom)
    bad = parse(TWO.format(name=topo.name, tunnel="vxlan")
                + "switches: [{name: sw, host: host1, vlans: [{vlan: 10, ip: 10.0.0.1/24}]}]\n")
    with pytest.raises(RuntimeError, match="injected"):
        L.up(bad)
    assert not N.lab_exists(topo.name)


def test_malformed_topology_is_refused_cleanly(leaves_nothing, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nhosts:\n  - name: host1\n    docker_subnet: 300.1.0.0/24\n")
    proc = subprocess.run([sys.executable, "-m", "weft_lab.cli", "up", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "hosts[0].docker_subnet" in proc.stderr and ":4:" in proc.stderr
    assert not N.lab_exists("bad")


def test_cli_up_status_exec_down(leaves_nothing, tmp_path):
    name = lab_name()
    topo = tmp_path / "t.yaml"
    topo.write_text(TWO.format(name=name, tunnel="vxlan"))
    cli = [sys.executable, "-m", "weft_lab.cli"]
    subprocess.run(cli + ["up", str(topo)], check=True, capture_output=True)
    try:
        st = subprocess.run(cli + ["status", "--lab", name], capture_output=True, text=True)
        assert "host1" in st.stdout and "br0" in st.stdout and "ovs-vswitchd" in st.stdout
        out = subprocess.run(cli + ["exec", "--lab", name, "host1", "--", "ovs-vsctl",
                                    "br-exists", "br0"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        again = subprocess.run(cli + ["up", str(topo)], capture_output=True, text=True)
        assert again.returncode == 1 and "already up" in again.stderr
    finally:
        subprocess.run(cli + ["down", "--lab", name], check=True, capture_output=True)
