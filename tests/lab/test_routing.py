"""Routing between a tenant's networks, egress to the outside, published ports (issue 22).

topologies/routing.yaml (docs/routing.md section 5): host1 and host2 run dockerd and the
weft plugin; tenants red and blue each have networks *-web 10.10.1.0/24 and *-db
10.10.2.0/24 (the same addresses and MACs in both tenants), one `docker run` container
of each network on each host (red-web1, red-db1, blue-web1, blue-db1 on host1; ...2 on
host2); the external node ext (203.0.113.10, iperf3 on 5201, UDP echo on 5201, an HTTP
server logging its peers on 8000) lies beyond the router LAB.wan, which routes only the
underlay back: ext answers a container only if weft NATs it to its host's address.
One lab per tunnel type; every test but the routed one runs on the VXLAN lab.

What the lab asks of the other parts (docs/routing.md sections 1-4):
* controller: `POST /v1/networks {name, tenant, subnet}` (201; gateway defaults to the
  first address, egress to on); tenants made by `POST /v1/tenants` without a subnet;
  ACLs of a tenant apply to its egress;
* agent and plugin: every host's agent makes the Docker network of each network (docs/
  docker.md, Creating a network); Join gives the gateway as the
  default route; `docker run -p HOST:PORT[/udp]` programs DNAT on the container's host,
  a port already published on that host or held by a process is refused with
  "already published on HOST" / "in use on HOST";
* agent and pipeline: routing at the source host (TTL - 1), egress masqueraded to the
  host's underlay address, replies back to the right tenant with equal addresses.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import converged_lab, lab_name, wait_for
from weft_lab import attack as A
from weft_lab import cluster as C
from weft_lab import docker as D
from weft_lab import faults as F
from weft_lab import nodes as N
from weft_lab import outside as O
from weft_lab.topology import load
from weft_lab.shell import netns_pids
from weft_lab.traffic import (PROBE, capture, captured, iperf, node_mac, node_run, pinging,
                               reaches, tcpdump)

ROOT = Path(__file__).resolve().parents[2]
EXT = "203.0.113.10"
GATEWAYS = ("10.10.1.1", "10.10.2.1")
CONTAINERS = [f"{t}-{n}{i}" for t in ("red", "blue") for n in ("web", "db") for i in (1, 2)]
vxlan_only = pytest.mark.parametrize("lab", ["vxlan"], indirect=True)


@pytest.fixture(scope="module", params=["vxlan", "gre"])
def lab(request):
    topo = load(ROOT / "topologies" / "routing.yaml").with_name(lab_name("r")) \
        .with_tunnel_type(request.param)
    with converged_lab(topo) as t:
        yield t


def host_of(lab, container: str):
    return lab.host(next(c.host for c in lab.containers if c.name == container))


def docker_cli(lab, host: str, *args: str) -> subprocess.CompletedProcess:
    """The Docker CLI on a lab host, its exit status and stderr kept (refusals)."""
    d = N.host_dir(lab.name, host)
    return subprocess.run([D.DOCKER, "-H", f"unix://{D.socket_path(d)}", *args],
                          capture_output=True, text=True, timeout=60)


def ttls(lab, src: str, dst: str, count: int = 3) -> list[int]:
    out = node_run(lab.name, src, ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2",
                                   dst]).stdout
    return [int(t) for t in re.findall(r"ttl=(\d+)", out)]


def iperf_client(lab, node: str, ip: str, port: int, udp: bool = False,
                 seconds: float = 2) -> float:
    """Mbit/s received by an iperf3 server that is already running (busy: try again)."""
    cmd = ["iperf3", "-c", ip, "-p", str(port), "-t", str(seconds), "-J"]
    if udp:
        cmd += ["-u", "-b", "20M"]
    for _ in range(20):
        data = json.loads(node_run(lab.name, node, cmd, timeout=seconds + 30).stdout or "{}")
        # busy, or reset while the server closes the last test: ask again (bounded)
        if not any(w in data.get("error", "") for w in ("busy", "reset by peer")):
            break
        time.sleep(0.5)
    assert "error" not in data, f"iperf3 {node} -> {ip}:{port}: {data.get('error')}"
    end = data["end"]
    if udp:
        s = end["sum"]
        assert s["packets"] - s["lost_packets"] > 0, s
        return s["bits_per_second"] * (1 - s["lost_percent"] / 100) / 1e6
    return end["sum_received"]["bits_per_second"] / 1e6


# -- routing -------------------------------------------------------------------------------

@pytest.mark.parametrize("src,dst", [("red-web1", "red-db2"), ("red-db2", "red-web1"),
                                     ("blue-web2", "blue-db1"), ("red-web1", "red-db1")])
def test_routed_across_hosts(lab, src, dst):
    """Network A to network B of the same tenant (on another host, and on the same one):
    ping with the TTL decremented once each way, and TCP.  Containers have the gateway
    as their default route, and the gateway answers ping."""
    routes = node_run(lab.name, src, ["ip", "route"]).stdout
    gw = next(g for g in GATEWAYS if g.rsplit(".", 1)[0] == lab.addr(src).rsplit(".", 1)[0])
    assert f"default via {gw}" in routes, routes
    assert reaches(lab.name, src, gw)
    wait_for(lambda: reaches(lab.name, src, lab.addr(dst)), 20, f"{src} -> {dst}")
    assert set(ttls(lab, src, lab.addr(dst))) == {63}     # the reply: 64, routed once
    mbps = iperf(lab.name, src, dst, lab.addr(dst), seconds=2)
    print(f"\nrouted {src} -> {dst} over {lab.tunnel_type}: {mbps:.0f} Mbit/s (iperf3 TCP)")
    assert mbps > 10


@vxlan_only
@pytest.mark.parametrize("src,others", [("red-web1", "blue"), ("blue-db2", "red")])
def test_other_tenant_unreachable(lab, src, others):
    """Probes to every address of both subnets, the gateways and the subnets' broadcast,
    from one tenant: counted at the other tenant's containers (none may arrive) and at
    the sender's own containers with those addresses (they must)."""
    mine = src.split("-")[0]
    victims = [c for c in CONTAINERS if c.startswith(others + "-")]
    own = [c for c in CONTAINERS if c.startswith(mine + "-") and c != src]
    procs = capture(lab.name, victims + own)
    try:
        for c in own:
            node_run(lab.name, src, ["ping", "-n", "-p", PROBE, "-c", "3", "-i", "0.2", "-W",
                                     "1", lab.addr(c)])
        for addr in (*GATEWAYS, "10.10.1.255", "10.10.2.255"):
            node_run(lab.name, src, ["ping", "-n", "-b", "-p", PROBE, "-c", "2", "-i", "0.2",
                                     "-W", "1", addr])
        time.sleep(0.5)
    finally:
        counts = captured(procs)
    assert {v: counts[v] for v in victims} == {v: 0 for v in victims}, counts
    assert all(counts[c] > 0 for c in own), counts


# -- egress --------------------------------------------------------------------------------

@vxlan_only
def test_egress_sees_host_address(lab):
    """Every container reaches ext (HTTP, UDP echo, and TCP throughput from one), and ext
    sees the address of the container's host, never a container address."""
    for c in CONTAINERS:
        host = host_of(lab, c)
        got = wait_for(lambda c=c: O.http_get(lab.name, c, EXT, 8000, f"/{c}"), 20,
                       f"{c} to reach ext over HTTP")
        assert (got[0], got[2]) == (host.underlay_ip, f"/{c}"), (c, got)
        assert O.udp_echo(lab.name, c, EXT, 5201, [f"{c}-1", f"{c}-2"]) == [f"{c}-1", f"{c}-2"]
        assert reaches(lab.name, c, EXT)
    mbps = iperf_client(lab, "red-web1", EXT, 5201)
    print(f"\negress (NAT to host1's address) red-web1 -> ext: {mbps:.0f} Mbit/s (iperf3 TCP)")
    assert mbps > 10
    assert O.peer_addresses(lab.name, "ext") == {h.underlay_ip for h in lab.hosts}


@vxlan_only
def test_egress_same_address_two_tenants(lab):
    """red-web1 and blue-web1 (both 10.10.1.11, same MAC, on host1) talk to ext at the same
    time, UDP and HTTP: each gets only its own replies; ext sees host1's address with
    distinct source ports."""
    assert lab.addr("red-web1") == lab.addr("blue-web1")
    words = {t: [f"{t}-{i}" for i in range(20)] for t in ("red", "blue")}
    start = time.time()
    with ThreadPoolExecutor(max_workers=4) as pool:
        udp = {t: pool.submit(O.udp_echo, lab.name, f"{t}-web1", EXT, 5201, words[t], 2, 0.1)
               for t in words}
        http = {t: pool.submit(lambda t=t: [O.http_get(lab.name, f"{t}-web1", EXT, 8000,
                                                       f"/{t}-{i}") for i in range(10)])
                for t in words}
        for t in words:
            assert udp[t].result() == words[t], t
            got = http[t].result()
            assert [g and g[2] for g in got] == [f"/{t}-{i}" for i in range(10)], got
    seen = [r for r in O.peers(lab.name, "ext") if r.get("time", 0) >= start - 1]
    ports = {t: {r["peer_port"] for r in seen if r["kind"] == "udp"
                 and r["data"].startswith(t + "-")} for t in words}
    assert {r["peer"] for r in seen} == {lab.host("host1").underlay_ip}
    assert ports["red"] and ports["blue"] and not ports["red"] & ports["blue"], ports


@vxlan_only
def test_default_deny_egress_only_where_allowed(lab):
    """Tenant ACLs apply to egress: red default-deny with one egress rule (tcp/8000 to
    ext) reaches ext's HTTP server and nothing else of it; blue is untouched."""
    with C.api(lab.name) as api:
        try:
            assert api.put("/v1/tenants/red/acls/default",
                           json={"default": "deny"}).status_code == 200
            r = api.post("/v1/tenants/red/acls", json={
                "priority": 100, "action": "allow", "direction": "egress", "ip_proto": "tcp",
                "remote": f"{EXT}/32", "port": 8000})
            assert r.status_code == 201, r.text
            C.wait_converged(lab)
            assert wait_for(lambda: O.http_get(lab.name, "red-web1", EXT, 8000, "/acl"), 20,
                            "the allowed egress")
            assert O.udp_echo(lab.name, "red-web1", EXT, 5201, ["no"], timeout=1) == [None]
            assert not O.tcp_open(lab.name, "red-web1", EXT, 5201, timeout=2)
            assert not reaches(lab.name, "red-db2", EXT, tries=2)
            assert O.udp_echo(lab.name, "blue-web1", EXT, 5201, ["yes"]) == ["yes"]
        finally:
            api.put("/v1/tenants/red/acls/default", json={"default": "allow"})
            for rule in api.get("/v1/tenants/red/acls").json()["rules"]:
                api.delete(f"/v1/tenants/red/acls/{rule['id']}")
            C.wait_converged(lab)
    wait_for(lambda: O.udp_echo(lab.name, "red-web1", EXT, 5201, ["again"]) == ["again"], 20,
             "red's egress open again")


# -- published ports -------------------------------------------------------------------------

def publish(lab, host: str, name: str, network: str, *ports: str) -> subprocess.CompletedProcess:
    """`docker run -d -p ...` of an iperf3 server on a weft network (not yet checked)."""
    args = ["run", "-d", "--pull=never", "--name", name, "--network", network]
    for p in ports:
        args += ["-p", p]
    return docker_cli(lab, host, *args, D.IMAGE, "iperf3", "-s")


@vxlan_only
def test_published_port(lab):
    """`-p 8080:5201 -p 8080:5201/udp` on host1: reached from ext and from host2 (the host
    and a container there, through its own egress), TCP and UDP; the server sees the
    clients' real addresses; gone again when the container stops."""
    h1 = lab.host("host1").underlay_ip
    try:
        out = publish(lab, "host1", "pub1", "red-web", "8080:5201", "8080:5201/udp")
        assert out.returncode == 0, out.stderr
        wait_for(lambda: O.tcp_open(lab.name, "ext", h1, 8080), 20, "ext -> host1:8080")
        for client in ("ext", "host2", "blue-web2"):
            tcp = iperf_client(lab, client, h1, 8080)
            udp = iperf_client(lab, client, h1, 8080, udp=True)
            print(f"\npublished port host1:8080 from {client}: TCP {tcp:.0f} Mbit/s, "
                  f"UDP {udp:.0f} Mbit/s received")
            assert tcp > 10 and udp > 1
        logs = docker_cli(lab, "host1", "logs", "pub1").stdout
        assert f"Accepted connection from {EXT}" in logs, logs
        assert f"Accepted connection from {lab.host('host2').underlay_ip}" in logs, logs
        assert docker_cli(lab, "host1", "stop", "-t", "1", "pub1").returncode == 0
        wait_for(lambda: not O.tcp_open(lab.name, "ext", h1, 8080, timeout=1), 20,
                 "the published port to go with the container")
    finally:
        docker_cli(lab, "host1", "rm", "-f", "pub1")
    assert not O.tcp_open(lab.name, "host2", h1, 8080, timeout=1)


@vxlan_only
def test_published_port_conflict(lab):
    """A port already published on a host, or held by a process there, is refused with
    a clear error (and the refusal changes nothing); the same port on another host is
    fine."""
    h1, h2 = lab.host("host1").underlay_ip, lab.host("host2").underlay_ip
    holder = None
    try:
        assert publish(lab, "host1", "pub1", "red-web", "8081:5201").returncode == 0
        wait_for(lambda: O.tcp_open(lab.name, "ext", h1, 8081), 20, "ext -> host1:8081")
        refused = publish(lab, "host1", "pub2", "blue-web", "8081:5201")
        assert refused.returncode != 0
        assert "already published on host1" in refused.stderr, refused.stderr
        other = publish(lab, "host2", "pub3", "blue-web", "8081:5201")
        assert other.returncode == 0, other.stderr
        wait_for(lambda: O.tcp_open(lab.name, "ext", h2, 8081), 20, "ext -> host2:8081")
        holder = subprocess.Popen(N.exec_argv(lab.name, "host1", [
            "python3", "-c", "import socket,time; s=socket.socket(); s.bind(('0.0.0.0', 8082));"
            " s.listen(); print('ready', flush=True); time.sleep(600)"]),
            stdout=subprocess.PIPE, text=True)
        assert holder.stdout and holder.stdout.readline().strip() == "ready"
        busy = publish(lab, "host1", "pub4", "red-web", "8082:5201")
        assert busy.returncode != 0 and "in use on host1" in busy.stderr, busy.stderr
        assert O.tcp_open(lab.name, "ext", h1, 8081)          # pub1 still published
        assert iperf_client(lab, "ext", h1, 8081) > 10
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        for host, name in (("host1", "pub1"), ("host1", "pub2"), ("host2", "pub3"),
                           ("host1", "pub4")):
            docker_cli(lab, host, "rm", "-f", name)


# -- static routes, hitless changes --------------------------------------------------------

def _switches(lab) -> dict[str, dict]:
    with C.api(lab.name) as api:
        return {s["host"]: s for s in api.get("/v1/switches").json()}


def _mods(lab) -> dict[str, int]:
    return {h: s["flow_mods_sent"] + s["group_mods_sent"] for h, s in _switches(lab).items()}


@vxlan_only
def test_static_default_route_beats_egress(lab):
    """`0.0.0.0/0 via red-web2` in tenant red: red's packets to ext go to red-web2 (a
    router of the tenant's own), not out through the host's NAT; blue still egresses;
    removing the route gives red its egress back."""
    via = lab.addr("red-web2")
    with C.api(lab.name) as api:
        r = api.post("/v1/tenants/red/routes", json={"prefix": "0.0.0.0/0", "via": via})
        assert r.status_code == 201, r.text
        try:
            C.wait_converged(lab)
            before = len(O.peers(lab.name, "ext"))
            proc = capture(lab.name, ["red-web2"])
            try:
                node_run(lab.name, "red-db1", ["ping", "-n", "-p", PROBE, "-c", "3", "-i",
                                               "0.2", "-W", "1", EXT])
                time.sleep(0.5)
            finally:
                seen = captured(proc)["red-web2"]
            assert seen >= 3, seen             # the next hop got them (routed, TTL - 1)
            assert O.udp_echo(lab.name, "red-db1", EXT, 5201, ["via"], timeout=1) == [None]
            assert len(O.peers(lab.name, "ext")) == before
            assert O.udp_echo(lab.name, "blue-db1", EXT, 5201, ["blue"]) == ["blue"]
        finally:
            api.delete("/v1/tenants/red/routes", params={"prefix": "0.0.0.0/0"})
            C.wait_converged(lab)
    wait_for(lambda: O.udp_echo(lab.name, "red-db1", EXT, 5201, ["back"]) == ["back"], 20,
             "red's egress back after the route went")


@vxlan_only
def test_hitless_network_route_and_restarts(lab):
    """A new network and a new route send only their own flows (a few, not a resync); a
    controller restart sends none; an agent restart keeps a NATed TCP stream going."""
    with C.api(lab.name) as api:
        m0 = _mods(lab)
        r = api.post("/v1/networks", json={"name": "red-extra", "tenant": "red",
                                           "subnet": "10.10.9.0/24"})
        assert r.status_code == 201, r.text
        try:
            C.wait_converged(lab)
            m1 = _mods(lab)
            added = {h: m1[h] - m0[h] for h in m1}
            # a network no host has a port in yet: FIB rows at most, never a resync
            assert all(n <= 10 for n in added.values()), added
            r = api.post("/v1/tenants/red/routes", json={"prefix": "10.77.0.0/16",
                                                         "via": lab.addr("red-db2")})
            assert r.status_code == 201, r.text
            C.wait_converged(lab)
            m2 = _mods(lab)
            assert all(m2[h] - m1[h] <= 4 for h in m2), (m1, m2)
        finally:
            api.delete("/v1/tenants/red/routes", params={"prefix": "10.77.0.0/16"})
            api.delete("/v1/networks/red-extra")
            C.wait_converged(lab)
    os.kill(_controller_pid(lab.name), signal.SIGKILL)
    time.sleep(0.5)
    C.start_controller(lab)
    C.wait_api(lab.name)
    C.wait_converged(lab)
    assert all(s["connected"] for s in _switches(lab).values())
    assert set(_mods(lab).values()) == {0}, _switches(lab)
    # a NATed TCP stream to ext survives the agent of its host being killed and restarted
    stream = subprocess.Popen(N.exec_argv(lab.name, "red-web1", [
        "iperf3", "-c", EXT, "-p", "5201", "-t", "8", "-i", "1", "-J"]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2)
    F.kill_agent(lab.name, "host1", restart_after=1.0)()
    out, err = stream.communicate(timeout=60)
    data = json.loads(out or "{}")
    assert "error" not in data, data.get("error")
    secs = [i["sum"]["bits_per_second"] for i in data["intervals"]]
    print(f"\nNATed stream across an agent restart: {[round(s / 1e6) for s in secs]} Mbit/s")
    assert min(secs[1:]) > 1e6, secs           # no second of the stream stalled


def _controller_pid(lab: str) -> int:
    for pid in netns_pids(N.ns_name(lab, "ctl")):
        if b"controller.manager" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise AssertionError("controller not running")


# -- attacks (issue 22) ----------------------------------------------------------------------

def _network(lab, name: str) -> dict:
    with C.api(lab.name) as api:
        return api.get(f"/v1/networks/{name}").json()


def _neigh_mac(lab, node: str, ip: str) -> str | None:
    out = node_run(lab.name, node, ["ip", "neigh", "show", ip]).stdout
    m = re.search(r"lladdr ([0-9a-f:]{17})", out)
    return m.group(1) if m else None


MARK = "icmp[8:4] = 0x77656674"      # the first payload bytes of attack.icmp_echo: "weft"


@vxlan_only
def test_gateway_spoof(lab):
    """red-web1 sends from red-web's gateway MAC, claims the gateway's IP with gratuitous
    and unicast ARP replies, and sends pings from the gateway's IP: red-web2 (the victim,
    on host2) keeps the real gateway MAC, keeps its routed traffic, and receives none of
    the forged frames."""
    gw = _network(lab, "red-web")
    gmac, gip = gw["gateway_mac"], gw["gateway"]
    me = node_mac(lab.name, "red-web1")
    victim, vmac = lab.addr("red-web2"), node_mac(lab.name, "red-web2")
    assert reaches(lab.name, "red-web2", gip)
    assert _neigh_mac(lab, "red-web2", gip) == gmac
    frames = [A.probe(A.BCAST, gmac), A.probe(vmac, gmac),
              A.arp(gmac, gmac, gip, gip),                         # gratuitous, gateway MAC
              A.arp(me, me, gip, gip),                             # gratuitous, own MAC
              A.arp(me, me, gip, victim, op=2, dst=vmac),          # unicast reply to victim
              A.icmp_echo(gmac, vmac, gip, victim),                # from the gateway itself
              A.icmp_echo(me, vmac, gip, victim)]                  # its IP, own MAC
    cap = {"forged": tcpdump(lab.name, "red-web2", [
        "-i", "eth0", f"ether proto 0x88b5 or (arp and ether src not {gmac}"
                      f" and arp[14:4] = 0x{ipaddress.IPv4Address(gip).packed.hex()}) or ({MARK})"])}
    attack = A.send_every(lab.name, "red-web1", frames, 0.05, 4)
    try:
        with pinging(lab.name, "red-web2", lab.addr("red-db1"), 30, interval=0.1) as res:
            pass
    finally:
        attack.wait(timeout=30)
        seen = captured(cap)
    assert res.received == res.sent == 30, res
    assert seen == {"forged": 0}, seen
    assert _neigh_mac(lab, "red-web2", gip) == gmac


@vxlan_only
def test_other_tenant_gateway_mac(lab):
    """red-web1 sends to blue-web's gateway MAC with an address of blue's subnet (which red
    has too): nothing reaches a blue container, on either host."""
    blue_gw = _network(lab, "blue-web")["gateway_mac"]
    me, src = node_mac(lab.name, "red-web1"), lab.addr("red-web1")
    frames = [A.icmp_echo(me, blue_gw, src, lab.addr(c)) for c in ("blue-db2", "blue-db1",
                                                                  "blue-web2")]
    frames.append(A.probe(blue_gw, me))
    blues = [c for c in CONTAINERS if c.startswith("blue-")]
    procs = {c: tcpdump(lab.name, c, ["-i", "eth0", f"ether proto 0x88b5 or ({MARK})"])
             for c in blues}
    try:
        A.send(lab.name, "red-web1", frames, count=20)
        time.sleep(0.5)
    finally:
        counts = captured(procs)
    assert counts == {c: 0 for c in blues}, counts


@vxlan_only
def test_ttl_loops_are_bounded(lab):
    """TTL 1 towards another network is dropped by the gateway (never delivered, never sent
    to the controller); a routing loop of TTL 255 through red-db2 (a static route via it,
    and red-db2 routing it back to its gateway) ends: the copies red-db2 sees are bounded
    and the controller sees no packet-in storm."""
    dst = lab.addr("red-db2")
    proc = capture(lab.name, ["red-db2"])
    try:
        node_run(lab.name, "red-web1", ["ping", "-n", "-t", "1", "-p", PROBE, "-c", "5", "-i",
                                        "0.2", "-W", "1", dst])
        time.sleep(0.3)
    finally:
        ttl1 = captured(proc)["red-db2"]
    assert ttl1 == 0, ttl1
    assert reaches(lab.name, "red-web1", dst)               # TTL 64 is routed
    with C.api(lab.name) as api:
        r = api.post("/v1/tenants/red/routes", json={"prefix": "10.99.0.0/24", "via": dst})
        assert r.status_code == 201, r.text
        try:
            C.wait_converged(lab)
            node_run(lab.name, "red-db2", ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            node_run(lab.name, "red-db2", ["ip", "route", "replace", "10.99.0.0/24", "via",
                                           GATEWAYS[1]])
            before = _switches(lab)
            proc = capture(lab.name, ["red-db2"])
            try:
                node_run(lab.name, "red-web1", ["ping", "-n", "-t", "255", "-p", PROBE, "-c",
                                                "3", "-i", "0.3", "-W", "1", "10.99.0.5"])
                time.sleep(0.5)
            finally:
                looped = captured(proc)["red-db2"]
            after = _switches(lab)
        finally:
            node_run(lab.name, "red-db2", ["ip", "route", "del", "10.99.0.0/24"])
            node_run(lab.name, "red-db2", ["sysctl", "-qw", "net.ipv4.ip_forward=0"])
            api.delete("/v1/tenants/red/routes", params={"prefix": "10.99.0.0/24"})
            C.wait_converged(lab)
    print(f"\nTTL 255 loop: red-db2 saw {looped} frames for 3 pings")
    assert 3 <= looped <= 3 * 255, looped
    assert all(after[h]["sync_errors"] == before[h]["sync_errors"] for h in after), after
    for host in ("host1", "host2"):      # TTL expiry is a datapath drop: no packet-in path
        assert "CONTROLLER" not in A.ofctl(lab.name, host, "dump-flows", "br0"), host
    assert reaches(lab.name, "red-web1", dst)


@vxlan_only
def test_host_services_unreachable_through_the_gateway(lab):
    """The hosts' SSH and etcd ports, the controller's API and OpenFlow, and the gateway's
    own address: containers reach none of them (routed, NATed or direct), while host2
    itself does (each listener is real)."""
    h1 = lab.host("host1").underlay_ip
    ctl = lab.controller_ips()[0]
    listeners = subprocess.Popen(N.exec_argv(lab.name, "host1", [
        "python3", "-c", "import socket,time\nss=[]\nfor p in (22, 2379, 2380):\n"
        " s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        " s.bind(('0.0.0.0', p)); s.listen(); ss.append(s)\n"
        "print('ready', flush=True); time.sleep(300)"]), stdout=subprocess.PIPE, text=True)
    try:
        assert listeners.stdout and listeners.stdout.readline().strip() == "ready"
        targets = [(h1, 22), (h1, 2379), (h1, 2380), (ctl, 8080), (ctl, 6653)]
        for ip, port in targets:
            assert O.tcp_open(lab.name, "host2", ip, port), (ip, port)    # they are there
        for c in ("red-web1", "red-web2", "blue-db1"):
            for ip, port in [*targets, (GATEWAYS[0], 22), (GATEWAYS[0], 8080)]:
                assert not O.tcp_open(lab.name, c, ip, port, timeout=1), (c, ip, port)
    finally:
        listeners.kill()
        listeners.wait()


_UDP_FLOWS = """
import socket, sys
ip, n = sys.argv[1], int(sys.argv[2])
held, ok = [], 0
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.3)
    s.sendto(b"flow%d" % i, (ip, 5201))
    try:
        ok += s.recv(64) == b"flow%d" % i
    except OSError:
        pass
    held.append(s)
print(ok)
"""


def _udp_flows(lab, node: str, n: int) -> int:
    """New UDP flows (a socket each, so a conntrack entry each) from `node` to ext's
    echo: how many got their echo."""
    return int(node_run(lab.name, node, ["python3", "-c", _UDP_FLOWS, EXT, str(n)],
                        timeout=n + 30).stdout.strip())


@vxlan_only
def test_conntrack_flood_stays_in_its_tenant(lab):
    """red (conntrack_limit 40 on each host) opens new flows to the outside without end:
    past its quota the new ones are dropped on its host, while blue, on the same host and
    with the same addresses, keeps opening its own."""
    host1 = N.ns_name(lab.name, "host1")
    with C.api(lab.name) as api:
        assert api.patch("/v1/tenants/red", json={"conntrack_limit": 40}).status_code == 200
        try:
            wait_for(lambda: "ct count over 40" in subprocess.run(
                ["ip", "netns", "exec", host1, "nft", "list", "table", "ip", "weft-nat"],
                capture_output=True, text=True).stdout, 30, "the agent to apply the limit")
            red = _udp_flows(lab, "red-web1", 120)
            blue = _udp_flows(lab, "blue-web1", 30)
            print(f"\nconntrack flood: red got {red} of 120 new flows (limit 40), "
                  f"blue {blue} of 30")
            assert 1 <= red <= 40, red
            assert blue == 30, blue
        finally:
            api.patch("/v1/tenants/red", json={"conntrack_limit": 65536})


# -- names across hosts (issue 23 item 3, docs/dns.md) ----------------------------------------

RESOLVER = "169.254.53.53"      # weft's resolver on every host
EMBEDDED = "127.0.0.11"         # Docker's, in every container on a user-defined network
NXDOMAIN = 3


def dns(lab, node: str, *names: str, server: str = EMBEDDED, count: int = 1,
        timeout: float = 2.0) -> list[dict]:
    """Answers to `names` asked from inside `node` (weft_lab.dnsprobe)."""
    res = node_run(lab.name, node, [sys.executable, "-m", "weft_lab.dnsprobe", "ask", server,
                                    *names, "--count", str(count), "--timeout", str(timeout)],
                   timeout=count * len(names) * (timeout + 1) + 30)
    assert res.returncode == 0, res.stderr
    return [json.loads(line) for line in res.stdout.splitlines()]


def a_of(lab, node: str, name: str, server: str = EMBEDDED) -> list[str]:
    return dns(lab, node, name, server=server)[0]["a"]


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


@vxlan_only
def test_names_across_hosts(lab):
    """`ping red-db2` from red-web1 by name (another host, another network of the tenant);
    A through Docker's embedded resolver and weft's, PTR, NXDOMAIN; blue's names are
    answered as names nobody has (both ways); an outside name is forwarded to the host's
    upstream (ext's DNS server)."""
    wait_for(lambda: a_of(lab, "red-web1", "red-web2") == [lab.addr("red-web2")], 30,
             "red-web2's name on host1")
    ping = docker_cli(lab, "host1", "exec", "red-web1", "ping", "-c", "1", "-W", "2", "red-db2")
    assert ping.returncode == 0 and lab.addr("red-db2") in ping.stdout, ping.stdout + ping.stderr
    rows = {r["name"]: r for r in dns(lab, "red-web1", "red-db2", "red-db1",
                                      "139.1.10.10.in-addr.arpa/PTR", "nosuch", "blue-web2",
                                      "blue-db1", "www.outside.test")}
    assert rows["red-db2"]["a"] == [lab.addr("red-db2")]
    assert rows["red-db1"]["a"] == [lab.addr("red-db1")]          # same host, other network
    assert rows["139.1.10.10.in-addr.arpa/PTR"]["ptr"] == ["red-web2"], rows
    for name in ("nosuch", "blue-web2", "blue-db1"):
        assert (rows[name]["rcode"], rows[name]["a"]) == (NXDOMAIN, []), rows[name]
    assert rows["www.outside.test"]["a"] == [EXT]
    # weft's resolver itself, from blue: red's names and red's PTR are not there
    blue = {r["name"]: r for r in dns(lab, "blue-web1", "red-web2", "blue-web2",
                                      "139.1.10.10.in-addr.arpa/PTR", server=RESOLVER)}
    assert (blue["red-web2"]["rcode"], blue["red-web2"]["a"]) == (NXDOMAIN, [])
    assert blue["blue-web2"]["a"] == [lab.addr("blue-web2")]
    assert blue["139.1.10.10.in-addr.arpa/PTR"]["ptr"] == ["blue-web2"]


@vxlan_only
def test_alias_round_robin_and_removal(lab):
    """One `--network-alias` on two containers of two hosts: two addresses, in turn; after
    `docker rm` on one host the name holds one address within about a second."""
    made = []
    try:
        for host, name in (("host1", "alias1"), ("host2", "alias2")):
            out = docker_cli(lab, host, "run", "-d", "--pull=never", "--name", name,
                             "--network", "red-web", "--network-alias", "webalias",
                             D.IMAGE, "sleep", "600")
            assert out.returncode == 0, out.stderr
            made.append((host, name))
        wait_for(lambda: len(a_of(lab, "red-db1", "webalias")) == 2, 30, "both addresses")
        firsts = {r["a"][0] for r in dns(lab, "red-db1", "webalias", count=4)}
        assert len(firsts) == 2, firsts                             # round robin
        t0 = time.monotonic()
        assert docker_cli(lab, "host2", "rm", "-f", "alias2").returncode == 0
        made.remove(("host2", "alias2"))
        rm_done = time.monotonic()
        while len(a_of(lab, "red-db1", "webalias", server=RESOLVER)) != 1:
            assert time.monotonic() - rm_done < 10, "alias2 still resolves"
            time.sleep(0.05)
        gone = time.monotonic() - rm_done
        print(f"\nnames: docker rm took {rm_done - t0:.2f} s; the name followed "
              f"{gone:.2f} s after it returned")
        assert gone < 2.0
    finally:
        for host, name in made:
            docker_cli(lab, host, "rm", "-f", name)


@vxlan_only
def test_names_without_egress_and_under_default_deny(lab):
    """DNS to the resolver is not egress: red-db with egress off, and red default-deny
    with no rule, still resolve."""
    with C.api(lab.name) as api:
        try:
            assert api.patch("/v1/networks/red-db", json={"egress": False}).status_code == 200
            assert api.put("/v1/tenants/red/acls/default",
                           json={"default": "deny"}).status_code == 200
            C.wait_converged(lab)
            assert not reaches(lab.name, "red-db2", EXT, tries=2)
            wait_for(lambda: a_of(lab, "red-db2", "red-web1") == [lab.addr("red-web1")], 20,
                     "red-db2 resolving with egress off and default-deny")
            assert a_of(lab, "red-db2", "www.outside.test") == [EXT]
        finally:
            api.put("/v1/tenants/red/acls/default", json={"default": "allow"})
            api.patch("/v1/networks/red-db", json={"egress": True})
            C.wait_converged(lab)


@vxlan_only
def test_names_under_attack(lab):
    """red-db1 answers in the resolver's place (every id, from port 53) and then floods
    it, while red-web1 keeps resolving: every answer is the real one, every query
    answered."""
    spoofer = subprocess.Popen(
        N.exec_argv(lab.name, "red-db1", [sys.executable, "-m",
         "weft_lab.dnsprobe", "spoof", RESOLVER, "www.outside.test", "6.6.6.6", "4"]),
        stdout=subprocess.PIPE, text=True)
    try:
        rows = dns(lab, "red-web1", "www.outside.test", "red-web2", count=10)
    finally:
        spoofed = int((spoofer.communicate(timeout=30)[0] or "0").strip() or 0)
    assert spoofed > 100
    assert {tuple(r["a"]) for r in rows} == {(EXT,), (lab.addr("red-web2"),)}, rows
    flooder = subprocess.Popen(
        N.exec_argv(lab.name, "red-db1", [sys.executable, "-m",
         "weft_lab.dnsprobe", "flood", RESOLVER, "red-web2", "4"]),
        stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        rows = dns(lab, "red-web1", "red-web2", "www.outside.test", count=10)
    finally:
        flood = int((flooder.communicate(timeout=30)[0] or "0").strip() or 0)
    answered = [r for r in rows if r["a"]]
    print(f"\nnames under a flood of {flood} queries in 4 s from red-db1: red-web1 got "
          f"{len(answered)} of {len(rows)} answers, p99 "
          f"{pct([r['ms'] for r in answered], 99):.1f} ms")
    assert len(answered) == len(rows), rows


@vxlan_only
def test_name_latency(lab):
    """DNS answer latency from red-web1, same run: a cluster name (another host's
    container, Docker forwarding to weft), weft's resolver asked directly, and a name
    Docker answers itself (the container's own)."""
    wait_for(lambda: a_of(lab, "red-web1", "red-web2") == [lab.addr("red-web2")], 30,
             "red-web2's name")
    n = 200
    out = {}
    for label, name, server in (("cluster name via Docker", "red-web2", EMBEDDED),
                                ("cluster name, weft directly", "red-web2", RESOLVER),
                                ("local name, Docker only", "red-web1", EMBEDDED)):
        time.sleep(2.5)             # each run starts with full buckets (200/s, burst 400)
        rows = dns(lab, "red-web1", name, server=server, count=n)
        ms = [r["ms"] for r in rows if r["a"]]
        assert len(ms) == n, f"{label}: unanswered {[r for r in rows if not r['a']]}"
        out[label] = (pct(ms, 50), pct(ms, 99))
    print("\n" + "\n".join(f"names latency, {k}: p50 {v[0]:.2f} ms, p99 {v[1]:.2f} ms "
                           f"({n} queries)" for k, v in out.items()))
