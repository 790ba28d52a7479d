"""802.1Q trunks with real tagged frames: vlan-trunk.yaml under a fresh name.

The external switch `tor` sits on host1's trunk0; its SVIs vlan100 (red),
vlan200 (blue), untagged0 (green, the native tenant) and vlan300 (not
allowed on the trunk) send real tagged (or untagged) frames into weft.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.conftest import converged_lab, lab_name
from weft_lab import cluster as C
from weft_lab.topology import load
from weft_lab.traffic import capture, captured, iperf, pinging, probe_all, reaches, tcpdump

ROOT = Path(__file__).resolve().parents[2]
SVI = {"red": ("vlan100", "10.100.0.1", "10.100.0.255"),
       "blue": ("vlan200", "10.200.0.1", "10.200.0.255"),
       "green": ("untagged0", "10.77.0.1", "10.77.0.255")}
MEMBERS = {"red": {"red1": "10.100.0.11", "red2": "10.100.0.12"},
           "blue": {"blue1": "10.200.0.11", "blue2": "10.200.0.12"},
           "green": {"green2": "10.77.0.12"}}
EVERYONE = ["red1", "red2", "blue1", "blue2", "green2", "d2"]


@pytest.fixture(scope="module")
def lab():
    with converged_lab(load(ROOT / "topologies" / "vlan-trunk.yaml").with_name(lab_name("v"))) as topo:
        yield topo


def tor_pings(lab, dst: str) -> bool:
    return reaches(lab.name, "tor", dst)


@pytest.mark.parametrize("tenant", ["red", "blue", "green"])
def test_each_vlan_reaches_exactly_its_tenant_on_every_host(lab, tenant):
    svi, _, broadcast = SVI[tenant]
    for ip in MEMBERS[tenant].values():
        assert tor_pings(lab, ip), f"{svi} -> {ip}"
    members = list(MEMBERS[tenant])
    others = [n for n in EVERYONE if n not in members]
    procs = capture(lab.name, EVERYONE)
    try:
        probe_all(lab.name, "tor", broadcast, list(MEMBERS[tenant].values())[0], [], iface=svi)
        time.sleep(0.5)
    finally:
        counts = captured(procs)
    assert {n: counts[n] for n in others} == {n: 0 for n in others}, counts
    assert all(counts[n] > 0 for n in members), counts


def test_vlan_not_allowed_on_the_trunk_reaches_nothing(lab):
    procs = capture(lab.name, EVERYONE)
    try:
        probe_all(lab.name, "tor", "10.30.0.255", "10.30.0.11", [], iface="vlan300")
        time.sleep(0.5)
    finally:
        counts = captured(procs)
    assert counts == {n: 0 for n in EVERYONE}


def test_containers_reach_the_switch_and_leave_tagged(lab):
    """Egress: red2 (host2) -> tunnel -> host1 -> trunk0 tagged 100 -> tor's vlan100."""
    dump = tcpdump(lab.name, "tor", ["-e", "-i", "eth0", "-c", "2", "icmp"])
    assert reaches(lab.name, "red2", "10.100.0.1")
    assert reaches(lab.name, "blue1", "10.200.0.1")
    assert reaches(lab.name, "green2", "10.77.0.1")
    out, _ = dump.communicate(timeout=10)
    assert re.search(r"802\.1Q.*vlan 100", out), out
    assert iperf(lab.name, "tor", "red2", "10.100.0.12", seconds=2) > 10


def test_throughput_trunk_vs_tunnel(lab):
    """Noted, not asserted beyond working: switch->container through the trunk vs c2c."""
    trunk = iperf(lab.name, "tor", "red2", "10.100.0.12", seconds=3)
    tunnel = iperf(lab.name, "red1", "red2", "10.100.0.12", seconds=3)
    print(f"\ntrunk tor->red2 {trunk:.0f} Mbit/s, tunnel red1->red2 {tunnel:.0f} Mbit/s, "
          f"ratio {trunk / tunnel:.2f}")
    assert trunk > 10 and tunnel > 10


def test_mode_change_does_not_disturb_other_traffic(lab):
    """trunk0: trunk -> access(green) -> trunk while red1 pings red2 at 100/s."""
    with pinging(lab.name, "red1", "10.100.0.12", 400) as res:
        time.sleep(0.5)
        with C.api(lab.name) as c:
            r = c.put("/v1/ports/host1/trunk0", json={"tenant": "green"})
            assert r.status_code == 200, r.text
            C.wait_converged(lab)
            assert not reaches(lab.name, "tor", "10.100.0.12", tries=2)   # red is off the port
            assert reaches(lab.name, "tor", "10.77.0.12")                 # green still untagged
            r = c.put("/v1/ports/host1/trunk0", json={"mode": "trunk", "tenant": "green",
                                                      "trunk": ["red", "blue"]})
            assert r.status_code == 200, r.text
            C.wait_converged(lab)
    assert res.sent == res.received == 400, res
    assert tor_pings(lab, "10.100.0.12")
