"""Attacks from inside containers (issue 11), with crafted raw frames, counted at receivers.

Three hosts (three-hosts-tenants.yaml) over VXLAN and over GRE.  Each test
sends what a hostile tenant would and counts, with tcpdump at the receivers,
what arrived; a control frame from the same sender shows the captures work.
"""
from __future__ import annotations

import dataclasses
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cluster import hostsfile
from cluster.hostsfile import datapath_id
from controller.pipeline import LEARN_LIMIT_MACS
from tests.conftest import converged_lab, lab_name
from weft_lab import attack as A
from weft_lab import cluster as C
from weft_lab import nodes as N
from weft_lab.measure import plug_bare_port
from weft_lab.shell import run
from weft_lab.topology import load
from weft_lab.traffic import captured, node_mac, node_run, ping, reaches, tcpdump

ROOT = Path(__file__).resolve().parents[2]
RED = {"red1": ("10.10.0.1", "02:00:00:00:00:01"), "red2": ("10.10.0.2", "02:00:00:00:00:02"),
       "red3": ("10.10.0.3", "02:00:00:00:00:03")}
X1_MAC, X1_IP = "02:00:00:00:00:50", "10.10.0.50"


@pytest.fixture(scope="module", params=["vxlan", "gre"])
def lab(request):
    topo = load(ROOT / "topologies" / "three-hosts-tenants.yaml").with_name(lab_name("s"))
    with converged_lab(dataclasses.replace(topo, tunnel_type=request.param)) as t:
        yield t


def _count(lab: str, nodes: list[str], bpf: str, send) -> dict[str, int]:
    """Frames matching ``bpf`` seen on each node's eth0 while ``send()`` runs (packets,
    not lines: tcpdump adds a hex dump to frames of unknown ethertypes)."""
    procs = {n: tcpdump(lab, n, ["-i", "eth0", bpf]) for n in nodes}
    counts: dict[str, int] = {}
    try:
        send()
        time.sleep(0.5)
    finally:
        for n, p in procs.items():
            p.send_signal(signal.SIGINT)
            try:
                text, _ = p.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                text, _ = p.communicate()
            counts[n] = sum(1 for line in text.splitlines() if line and not line[0].isspace())
    return counts


@pytest.fixture
def free(lab):
    """A container on host1 in red, bound without a MAC (so no port security applies):
    what a br0 container of a tenant that does not give MACs looks like."""
    ns = plug_bare_port(lab.name, "host1", "f1", "10.10.0.70/24", "02:00:00:00:00:70", "wf1")
    try:
        with C.api(lab.name) as c:
            c.post("/v1/ports", json={"host": "host1", "port": "wf1",
                                      "tenant": "red"}).raise_for_status()
        C.wait_converged(lab)
        yield "f1"
    finally:
        with C.api(lab.name) as c:
            c.delete("/v1/ports/host1/wf1")
        N.vsctl(lab.name, "host1", "--if-exists", "del-port", "br0", "wf1")
        run(["ip", "netns", "del", ns], check=False)


def test_broadcast_source_mac_is_dropped_and_arp_keeps_working(lab, free):
    """f1 sends from ff:ff:ff:ff:ff:ff: before the fix every host learned "broadcast -> f1"
    and the tenant's ARP went only to f1 (100% loss).  (From docker0 containers the Linux
    bridge already drops such frames.)"""
    bpf = f"ether proto {A.PROBE_ETHERTYPE:#x}"
    frames = [A.probe(A.BCAST, A.BCAST), A.probe(A.BCAST, "01:00:5e:00:00:01")]
    got = _count(lab.name, ["red2", "red3"], bpf, lambda: A.send(lab.name, free, frames, count=10))
    for node in ("red2", "red3"):
        node_run(lab.name, node, ["ip", "neigh", "flush", "all"])
    arp_ok = ping(lab.name, "red2", RED["red3"][0], count=5, interval=0.2).received
    control = _count(lab.name, ["red2", "red3"], bpf,
                     lambda: A.send(lab.name, free, [A.probe(A.BCAST, "02:00:00:00:00:70")]))
    print(f"\ngroup-source frames from f1: 20 sent, delivered {got}; red2 -> red3 after an "
          f"ARP flush: {arp_ok}/5; later broadcasts from f1 delivered {control}")
    assert (got, arp_ok) == ({"red2": 0, "red3": 0}, 5)
    assert control["red2"] > 0 and control["red3"] > 0, control


def test_bound_port_cannot_send_from_another_mac(lab):
    """red1 (bound with its MAC) sends probes from red2's MAC and from random MACs."""
    bpf = f"ether proto {A.PROBE_ETHERTYPE:#x}"
    spoofed = [A.probe(A.BCAST, RED["red2"][1]), A.probe(A.BCAST, "06:00:00:00:66:66"),
               A.probe(RED["red3"][1], RED["red2"][1])]
    got = _count(lab.name, ["red2", "red3"], bpf,
                 lambda: A.send(lab.name, "red1", spoofed, count=10))
    assert got == {"red2": 0, "red3": 0}, got
    control = _count(lab.name, ["red2", "red3"], bpf,
                     lambda: A.send(lab.name, "red1", [A.probe(A.BCAST, RED["red1"][1])]))
    assert control["red2"] > 0 and control["red3"] > 0, control
    # the real red2 still gets its traffic
    assert ping(lab.name, "red3", RED["red2"][0], count=5, interval=0.2).received == 5


@pytest.fixture
def x1(lab):
    """A container on host1 bound to red with its MAC and IP (port security addresses)."""
    ns = plug_bare_port(lab.name, "host1", "x1", f"{X1_IP}/24", X1_MAC, "wx1")
    try:
        with C.api(lab.name) as c:
            c.post("/v1/ports", json={"host": "host1", "port": "wx1", "tenant": "red",
                                      "mac": X1_MAC, "ips": [X1_IP]}).raise_for_status()
        C.wait_converged(lab)
        yield "x1"
    finally:
        with C.api(lab.name) as c:
            c.delete("/v1/ports/host1/wx1")
        N.vsctl(lab.name, "host1", "--if-exists", "del-port", "br0", "wx1")
        run(["ip", "netns", "del", ns], check=False)


def test_arp_and_ip_spoofing_of_a_neighbour_is_dropped(lab, x1):
    """x1 claims red2's IP by gratuitous and unicast ARP, and sends IP from red2's address:
    before, 99-100% of the traffic to red2 went to the spoofer."""
    red2_ip, red3_mac = RED["red2"][0], RED["red3"][1]
    attack = [A.arp(X1_MAC, X1_MAC, red2_ip, red2_ip),                        # gratuitous
              A.arp(X1_MAC, X1_MAC, red2_ip, RED["red3"][0], dst=red3_mac),   # unicast reply
              A.arp(X1_MAC, RED["red2"][1], red2_ip, red2_ip),                # sha forged too
              A.icmp_echo(X1_MAC, red3_mac, red2_ip, RED["red3"][0])]         # IP spoof
    bpf = f"ether src {X1_MAC}"
    got = _count(lab.name, ["red2", "red3"], bpf, lambda: A.send(lab.name, x1, attack, count=5))
    assert got == {"red2": 0, "red3": 0}, got
    control = _count(lab.name, ["red3"], bpf, lambda: A.send(
        lab.name, x1, [A.arp(X1_MAC, X1_MAC, X1_IP, X1_IP),
                       A.icmp_echo(X1_MAC, red3_mac, X1_IP, RED["red3"][0])]))
    assert control["red3"] >= 2, control
    neigh = node_run(lab.name, "red3", ["ip", "neigh", "show", red2_ip]).stdout
    assert X1_MAC not in neigh, neigh
    assert ping(lab.name, "red3", red2_ip, count=5, interval=0.2).received == 5


def test_a_bound_mac_cannot_be_hijacked_by_learning(lab):
    """y1, a red port bound without a MAC (no port security) on host2, keeps sending from
    red3's bound MAC while red2 pings red3: every ping still reaches red3, none reaches y1."""
    ns = plug_bare_port(lab.name, "host2", "y1", "10.10.0.60/24", "02:00:00:00:00:60", "wy1")
    try:
        with C.api(lab.name) as c:
            c.post("/v1/ports", json={"host": "host2", "port": "wy1",
                                      "tenant": "red"}).raise_for_status()
        C.wait_converged(lab)
        spoof = A.flood_random_macs(lab.name, "y1", 4000, src=RED["red3"][1], rate=1000)
        try:
            time.sleep(0.3)
            at_y1 = tcpdump(lab.name, "y1", ["-i", "eth0", "icmp"])
            try:
                res = ping(lab.name, "red2", RED["red3"][0], count=20, interval=0.05)
            finally:
                stolen = captured({"y1": at_y1})["y1"]
        finally:
            spoof.kill()
            spoof.wait()
    finally:
        with C.api(lab.name) as c:
            c.delete("/v1/ports/host2/wy1")
        N.vsctl(lab.name, "host2", "--if-exists", "del-port", "br0", "wy1")
        run(["ip", "netns", "del", ns], check=False)
    assert res.received == 20 and stolen == 0, (res, stolen)


def test_mac_flood_is_bounded_and_the_controller_stays_flat(lab):
    """20,000 random source MACs from d1.  Before (issue 11): learned flows 4 -> 34,650 per
    host, controller 69 -> 432 MB, a REST meter change up to 33.4 s to reach a switch."""
    pid = A.controller_pid(lab.name)
    rss0 = A.rss_mb(pid)
    with C.api(lab.name, timeout=60) as c:
        lat0 = A.meter_latency(c, lab.name, "host2", "red", 10_000)
        flood = A.flood_random_macs(lab.name, "d1", 20_000)
        try:
            during = A.meter_latency(c, lab.name, "host2", "red", 20_000)
        finally:
            flood.wait(timeout=120)
        assert flood.returncode == 0, flood.stderr.read()
        learned = {h: A.learned_flows(lab.name, h) for h in ("host1", "host2", "host3")}
        c.post("/v1/qos/limits", json={"host": "host1", "tenant": "red", "kbps": 1}).json()
        time.sleep(0.1)
        C.wait_converged(lab)
        after = A.meter_latency(c, lab.name, "host3", "red", 30_000)
        t0 = time.monotonic()
        flows = c.get("/v1/switches/host2/flows")
        view = time.monotonic() - t0
        metrics = c.get("/metrics").text
        for x in c.get("/v1/qos/limits").json():
            c.delete(f"/v1/qos/limits/{x['id']}")
    rss1 = A.rss_mb(pid)
    print(f"\nMAC flood 20000 from d1 ({lab.tunnel_type}): learned flows {learned}, "
          f"controller RSS {rss0:.0f} -> {rss1:.0f} MB, meter REST->switch "
          f"{lat0 * 1000:.0f} ms before, {during * 1000:.0f} ms during, "
          f"{after * 1000:.0f} ms after; REST flows view of host2 {flows.status_code} in "
          f"{view * 1000:.0f} ms ({len(flows.json()) if flows.status_code == 200 else 0} "
          "flows)")
    # one ingress per host fills up: d1's docker0 link on host1, the tunnel from host1 elsewhere
    assert all(n <= 2 * LEARN_LIMIT_MACS + 64 for n in learned.values()), learned
    assert rss1 - rss0 < 30, (rss0, rss1)
    assert during < 2 and after < 2, (during, after)
    assert flows.status_code == 200 and view < 2
    assert "weft_learned_flows" in metrics and f"weft_learn_limit_macs {LEARN_LIMIT_MACS}" \
        in metrics
    assert reaches(lab.name, "blue1", "10.10.0.3")


def test_a_fake_switch_claiming_host1_gets_nothing(lab, tmp_path):
    """A client claiming host1's datapath id: plain TCP, TLS without a certificate, TLS with
    a certificate no weft CA signed: nothing.  With host1's own (stolen) certificate: the
    connection is refused while host1 is connected.  Before (issue 11): 33 flow-mods and
    6 group-mods, and the controller talked only to the impostor afterwards."""
    dpid = datapath_id(hostsfile.load(N.state_dir(lab.name) / "hosts.yaml").host("host1"))
    ctl, pki = lab.controller_ip, N.pki_dir(lab.name)
    bad_cert, bad_key = A.self_signed(tmp_path / "rogue", "host1")
    tries = {"tcp": A.fake_switch(lab.name, "host1", ctl, dpid, "tcp"),
             "tls, no certificate": A.fake_switch(lab.name, "host1", ctl, dpid, "tls"),
             "tls, rogue certificate": A.fake_switch(lab.name, "host1", ctl, dpid, "tls",
                                                     cert=bad_cert, key=bad_key)}
    tries["tls, host1's own certificate"] = A.fake_switch(
        lab.name, "host1", ctl, dpid, "tls", cert=str(pki / "host1-cert.pem"),
        key=str(pki / "host1-privkey.pem"))
    print(f"\nfake switch claiming host1 ({lab.tunnel_type}): {tries}")
    programming = {"flow_mod", "group_mod", "meter_mod", "packet_out", "port_mod"}
    for how, got in tries.items():
        assert not programming & set(got["received"]), (how, got)
    for how in ("tcp", "tls, no certificate", "tls, rogue certificate"):
        assert not tries[how]["received"], (how, tries[how])
    assert tries["tls, host1's own certificate"].get("closed_by_controller"), tries
    with C.api(lab.name) as c:
        sw = c.get("/v1/switches/host1").json()
        assert sw["connected"] and sw["refused_connections"] >= 1, sw
        assert A.meter_latency(c, lab.name, "host1", "red", 5_000) < 2


def test_a_container_cannot_inject_into_peer_tunnels(lab):
    """d1 is a real `docker run` container on a Docker host (dockerd: ip_forward=1,
    MASQUERADE): it sends the lab's tunnel encapsulation (VXLAN or GRE) with red's VNI to
    host2's and host3's underlay addresses.  Before (issue 11): 20 of 20 frames reached red
    on both hosts.  The same packets from host1 itself (not forwarded) are the control."""
    host = N.ns_name(lab.name, "host1")
    assert run(["sysctl", "-n", "net.ipv4.ip_forward"], ns=host).strip() == "1"
    assert "masquerade" in run(["nft", "list", "ruleset"], ns=host).lower()
    cluster = hostsfile.load(N.state_dir(lab.name) / "hosts.yaml")
    with C.api(lab.name) as c:
        vni = c.get("/v1/tenants/red").json()["vni"]
    src = "06:00:00:00:1e:c7"
    bpf = f"ether proto {A.PROBE_ETHERTYPE:#x} and ether src {src}"
    inner = A.probe(A.BCAST, src)

    def inject_from(node: str):
        return lambda: [A.inject(lab.name, node, lab.tunnel_type, cluster.host(h).underlay_ip,
                                 vni, inner, count=20) for h in ("host2", "host3")]
    got = _count(lab.name, ["red2", "red3"], bpf, inject_from("d1"))
    control = _count(lab.name, ["red2", "red3"], bpf, inject_from("host1"))
    print(f"\ntunnel injection from a container ({lab.tunnel_type}): 20 per host sent, "
          f"delivered {got}; the same from host1 itself: {control}")
    assert got == {"red2": 0, "red3": 0}, got
    assert control["red2"] > 0 and control["red3"] > 0, control


@pytest.mark.parametrize("kind", ["gratuitous", "unicast reply"])
def test_attached_ports_are_safe_from_arp_hijack_by_default(lab, kind):
    """red1 and red2 are plugged the way weft plugs them (`ovs-agent attach --ip`, no
    REST call): red1 claims red2's address while red3 pings red2.  Before (issue 25):
    red1 took 99 of 100 of red3's pings."""
    got = A.arp_hijack(lab.name, "red1", kind, "red3", RED["red3"][0], RED["red2"][0])
    print(f"\nARP hijack ({kind}, {lab.tunnel_type}) of red2 by red1 on attached ports: "
          f"{got}")
    assert got.held, got


def test_a_docker0_container_cannot_take_another_hosts_container(lab):
    """d1 (host1) sends broadcast frames from d2's MAC (d2 is on host2) while d3 (host3)
    pings d2: a learned-only endpoint was hijacked.  Before (issue 25): d3 lost 100% of
    its pings during the 6 s attack and a second after, d1 received 141 of d2's frames."""
    d2_mac = node_mac(lab.name, "d2")
    assert reaches(lab.name, "d3", lab.addr("d2"))      # host3 knows where d2 is
    got = A.hijack(lab.name, "d1", [A.probe(A.BCAST, d2_mac)], "d3", lab.addr("d2"),
                   f"ether dst {d2_mac}", seconds=6, every=0.02)
    print(f"\nd1 sending from d2's MAC ({lab.tunnel_type}), d3 pinging d2: {got}")
    assert got.held, got
