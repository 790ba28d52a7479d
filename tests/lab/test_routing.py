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
* plugin: `docker network create -d weft --ipam-driver weft -o tenant=NETWORK --subnet S
  NETWORK` (a network name where a tenant's is taken); Join gives the gateway as the
  default route; `docker run -p HOST:PORT[/udp]` programs DNAT on the container's host,
  a port already published on that host or held by a process is refused with
  "already published on HOST" / "in use on HOST";
* agent and pipeline: routing at the source host (TTL - 1), egress masqueraded to the
  host's underlay address, replies back to the right tenant with equal addresses.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import converged_lab, lab_name, wait_for
from weft_lab import cluster as C
from weft_lab import docker as D
from weft_lab import nodes as N
from weft_lab import outside as O
from weft_lab.topology import load
from weft_lab.traffic import PROBE, capture, captured, iperf, node_run, reaches

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
        if "busy" not in data.get("error", ""):
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
