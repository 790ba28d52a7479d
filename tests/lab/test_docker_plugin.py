"""The weft Docker network plugin with a real dockerd on two lab hosts.

topologies/docker-plugin.yaml: the lab runs dockerd and the plugin on each host;
each host's agent makes the Docker networks red and blue (the same subnet) from the
controller's tenants (docs/docker.md, Tenant networks); red1/blue1 (host1) and
red2/blue2 (host2) are `docker run --network red|blue` containers.  More containers
are started here the same way.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import converged_lab, lab_name
from weft_lab import attack as A
from weft_lab import cluster as C
from weft_lab import docker as D
from weft_lab import lab as L
from weft_lab import nodes as N
from weft_lab.measure import percentile, pings
from weft_lab.shell import netns_pids, run
from weft_lab.topology import load
from weft_lab.traffic import capture, captured, iperf, node_run, pinging, probe_all, reaches, \
    tcpdump

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lab():
    with converged_lab(load(ROOT / "topologies" / "docker-plugin.yaml")
                       .with_name(lab_name("dp"))) as topo:
        yield topo


def hd(lab, host: str = "host1") -> Path:
    return N.host_dir(lab.name, host)


def docker(lab, host: str, *args: str, check: bool = True) -> str:
    return D.docker(hd(lab, host), *args, check=check)


def start(lab, host: str, name: str, network: str = "red") -> dict:
    """`docker run --network NET` of one more container (namespace LAB.NAME)."""
    return D.run_container(hd(lab, host), lab.name, name, N.ns_name(lab.name, name),
                           network=network)


def remove(lab, host: str, name: str) -> None:
    docker(lab, host, "rm", "-f", name)
    run(["ip", "netns", "del", N.ns_name(lab.name, name)], check=False)


def plugin_pid(lab, host: str) -> int:
    for pid in netns_pids(N.ns_name(lab.name, host)):
        try:
            if b"docker-plugin" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            pass
    raise AssertionError(f"no plugin running on {host}")


def ports(lab, host: str) -> dict[str, dict]:
    """br0's container ports on a host with their external_ids."""
    out = json.loads(N.vsctl(lab.name, host, "--format=json", "--columns=name,external_ids",
                             "find", "Interface", "external_ids:weft-role=container"))
    return {row[0]: dict(row[1][1]) for row in out["data"]}


def bridge_state(lab, host: str) -> dict[str, str]:
    """The plugin's records in br0's external_ids."""
    out = json.loads(N.vsctl(lab.name, host, "--format=json", "--columns=external_ids",
                             "list", "Bridge", "br0"))
    return {k: v for k, v in out["data"][0][0][1] if k.startswith("weft-d")}


def weft_network(lab, name: str) -> dict:
    """What the controller says of a weft network (a tenant's default network)."""
    with C.api(lab.name) as api:
        resp = api.get(f"/v1/networks/{name}")
        if resp.status_code == 404:
            resp = api.get(f"/v1/tenants/{name}")
        resp.raise_for_status()
        return resp.json()


def links(lab, host: str) -> set[str]:
    """The host's links but the plugin's pool pairs (`pool_links`): those come and go."""
    return {name for name in all_links(lab, host) if not name.startswith(("wq", "wr"))}


def all_links(lab, host: str) -> set[str]:
    return {line.split(":")[1].strip().split("@")[0] for line in
            L.run(["ip", "-o", "link", "show"], ns=N.ns_name(lab.name, host)).splitlines()}


def pool_ports(lab, host: str) -> set[str]:
    """br0 ports the plugin keeps opened ahead of Join (ovs_agent.portpool)."""
    out = json.loads(N.vsctl(lab.name, host, "--format=json", "--columns=name",
                             "find", "Interface", "external_ids:weft-role=pool"))
    return {row[0] for row in out["data"]}


def pool_settled(lab, host: str, size: int = 2, timeout: float = 10) -> set[str]:
    """Once the pool is full again: its ports, each with its peer on the host and no other
    pool-named link left behind."""
    deadline = time.monotonic() + timeout
    while True:
        pool = pool_ports(lab, host)
        held = {p for p in ports(lab, host) if p.startswith("wq")}
        names = {n for n in all_links(lab, host) if n.startswith(("wq", "wr"))}
        want = pool | {"wr" + p[2:] for p in pool} | held
        if len(pool) == size and names == want:
            return pool
        assert time.monotonic() < deadline, (pool, held, names)
        time.sleep(0.2)


def test_containers_reach_each_other_across_hosts(lab):
    for a, b in (("red1", "red2"), ("red2", "red1"), ("blue1", "blue2"), ("blue2", "blue1")):
        assert reaches(lab.name, a, lab.addr(b)), f"{a} -> {b}"
    # from inside the container too (Docker's own exec, the image's busybox)
    out = docker(lab, "host1", "exec", "red1", "ping", "-c", "2", "-W", "2", lab.addr("red2"))
    assert "2 packets received" in out
    mbps = iperf(lab.name, "red1", "red2", lab.addr("red2"), seconds=2)
    bare = iperf(lab.name, "x1", "x2", lab.addr("x2"), seconds=2)
    print(f"iperf3 across hosts, one run: Docker-run (weft plugin) {mbps:.0f} Mbit/s, "
          f"bare namespaces (ovs-agent attach) {bare:.0f} Mbit/s")
    assert mbps > 10 and bare > 10
    mtu = node_run(lab.name, "red1", ["cat", "/sys/class/net/eth0/mtu"]).stdout.strip()
    assert mtu == str(L.container_mtu(lab))
    routes = docker(lab, "host1", "exec", "red1", "ip", "route")
    gateway = weft_network(lab, "red").get("gateway")
    if gateway:                           # Join gave the weft gateway: the default route
        assert f"default via {gateway} dev eth0" in routes, routes
    else:                                 # no gateway: the connected route only
        assert "default" not in routes, routes
    assert "docker_gwbridge" not in docker(lab, "host1", "network", "ls")
    # the default tenant's docker0 containers are elsewhere
    assert not reaches(lab.name, "d1", lab.addr("red2"), tries=2)


def test_iperf3_in_the_image(lab):
    """TCP through the container image's own iperf3 (checksum offload handled)."""
    docker(lab, "host2", "exec", "-d", "blue2", "iperf3", "-s", "-1")
    time.sleep(0.5)
    out = docker(lab, "host1", "exec", "blue1", "iperf3", "-c", lab.addr("blue2"), "-t", "1",
                 "-J")
    assert json.loads(out)["end"]["sum_received"]["bits_per_second"] > 10e6


@pytest.mark.parametrize("src,victims,own", [
    ("red1", ["blue1", "blue2", "x1", "x2", "d1", "d2"], ["red2"]),
    ("blue2", ["red1", "red2", "x1", "x2", "d1", "d2"], ["blue1"])])
def test_same_subnet_tenants_are_isolated(lab, src, victims, own):
    """The matrix of test_tenants.py, on Docker-run containers: counted at the receivers."""
    procs = capture(lab.name, victims + own)
    try:
        twin = lab.addr(own[0])            # this address (and MAC) exists in the other tenant
        macs = [node_run(lab.name, v, ["cat", "/sys/class/net/eth0/address"]).stdout.strip()
                for v in victims]
        probe_all(lab.name, src, "10.10.0.255", twin, macs)
        time.sleep(0.5)
    finally:
        counts = captured(procs)
    assert {v: counts[v] for v in victims} == {v: 0 for v in victims}, counts
    assert all(counts[v] > 0 for v in own), counts


def test_docker_rm_removes_port_veth_and_state(lab):
    before_ports, before_links = ports(lab, "host1"), links(lab, "host1")
    info = start(lab, "host1", "tmp1")
    # host1's first block: the first /28 without an address claim (red1's --ip 10.10.0.2)
    assert info["ip"] == "10.10.0.16/24"
    assert pings(N.ns_name(lab.name, "tmp1"), lab.addr("red2"))
    [new] = set(ports(lab, "host1")) - set(before_ports)
    assert ports(lab, "host1")[new]["weft-tenant"] == "red"
    assert new.startswith("wq") and new in all_links(lab, "host1")     # from the pool
    assert new not in pool_ports(lab, "host1")
    docker(lab, "host1", "stop", "-t", "0", "tmp1")
    assert set(ports(lab, "host1")) == set(before_ports)         # Leave unplugged it
    remove(lab, "host1", "tmp1")
    assert set(ports(lab, "host1")) == set(before_ports)
    assert links(lab, "host1") == before_links
    assert new not in pool_settled(lab, "host1")    # refilled; nothing of tmp1's left
    eps = [json.loads(v) for k, v in bridge_state(lab, "host1").items()
           if k.startswith("weft-dep-")]
    assert sorted(e["address"] for e in eps) == ["10.10.0.2/24"] * 2   # red1, blue1
    again = start(lab, "host1", "tmp2")        # the address went back to the pool
    assert again["ip"] == info["ip"]
    remove(lab, "host1", "tmp2")


def test_plugin_kill9_and_restart(lab):
    """Running containers keep working, new ones get fresh addresses, rm still cleans."""
    old = start(lab, "host1", "tmp3")
    with pinging(lab.name, "red1", lab.addr("red2"), 300) as res:
        os.kill(plugin_pid(lab, "host1"), signal.SIGKILL)
        time.sleep(1)
        L.start_plugin(lab.name, "host1")
    assert res.received == res.sent == 300, res
    assert pings(N.ns_name(lab.name, "tmp3"), lab.addr("red2"))
    new = start(lab, "host1", "tmp4")
    assert new["ip"] not in (old["ip"], "10.10.0.2/24")
    assert pings(N.ns_name(lab.name, "tmp4"), lab.addr("red2"))
    assert reaches(lab.name, "red2", new["ip"].split("/")[0])
    before = ports(lab, "host1")
    for name in ("tmp3", "tmp4"):       # made before and after the restart
        remove(lab, "host1", name)
    assert len(before) - len(ports(lab, "host1")) == 2
    assert not {p for p in before if p not in ports(lab, "host1")} & all_links(lab, "host1")
    pool_settled(lab, "host1")      # the killed plugin's pool went at the restart
    assert reaches(lab.name, "red1", lab.addr("red2"))


def test_network_create_refusals_and_rm(lab):
    """What a user gets wrong is refused with the fix in the message; rm leaves nothing."""
    cli = [D.DOCKER, "-H", f"unix://{D.socket_path(hd(lab))}"]
    base = [*cli, "network", "create", "-d", "weft", "--ipam-driver", "weft", "--subnet",
            "10.30.0.0/24"]
    before = bridge_state(lab, "host1")
    for opts, says in ((["-o", "tenant=green"], "weftctl tenant create green"),
                       # dual-stack on a weft network without an IPv6 subnet
                       (["-o", "tenant=red", "--ipv6", "--subnet", "fd00::/64"],
                        "no IPv6 subnet: give it one first")):
        out = subprocess.run([*base, *opts, "bad"], capture_output=True, text=True, check=False)
        assert out.returncode != 0 and says in out.stderr, out.stderr
    assert bridge_state(lab, "host1") == before          # the pools Docker asked for: released
    # no -o tenant: the tenant is the network's name, learnt when a container starts
    subprocess.run([*base, "nosuch"], check=True, capture_output=True)
    out = subprocess.run([*cli, "run", "--pull=never", "--rm", "--network", "nosuch", D.IMAGE,
                          "true"], capture_output=True, text=True, check=False)
    assert out.returncode != 0 and "weftctl tenant create nosuch" in out.stderr, out.stderr
    docker(lab, "host1", "network", "rm", "nosuch")
    assert bridge_state(lab, "host1") == before


def test_the_tenant_defaults_to_the_network_name(lab):
    """`docker network create -d weft ... bare` joins tenant bare: it reaches x2, which
    `ovs-agent attach` put there on the other host."""
    docker(lab, "host1", "network", "create", "-d", "weft", "--ipam-driver", "weft",
           "--subnet", "10.50.0.0/24", "bare")
    try:
        D.run_container(hd(lab), lab.name, "bare9", N.ns_name(lab.name, "bare9"),
                        network="bare", ip="10.50.0.10")
        port = [p for p, ext in ports(lab, "host1").items()
                if ext.get("weft-docker-endpoint") and ext["weft-tenant"] == "bare"]
        assert len(port) == 1
        assert pings(N.ns_name(lab.name, "bare9"), lab.addr("x2"))
    finally:
        remove(lab, "host1", "bare9")
        docker(lab, "host1", "network", "rm", "bare")


def test_docker_run_to_first_packet_across_hosts(lab):
    """From `docker run` on host1 to its first echo request seen by red2 on host2."""
    lat = []
    first_echo = (f"icmp[icmptype] = icmp-echo and dst host {lab.addr('red2')} "
                  f"and not src host {lab.addr('red1')}")
    for i in range(20):
        dump = tcpdump(lab.name, "red2", ["-i", "eth0", "-c", "1", "-tt", first_echo])
        try:
            t0 = time.time()
            docker(lab, "host1", "run", "-d", "--pull=never", "--name", f"lat{i}",
                   "--network", "red", D.IMAGE, "ping", "-i", "0.01", lab.addr("red2"))
            out, _ = dump.communicate(timeout=20)
        finally:
            if dump.poll() is None:
                dump.kill()
                dump.wait()
            docker(lab, "host1", "rm", "-f", f"lat{i}", check=False)
        lat.append(float(out.split()[0]) - t0)
    print(f"docker run -> first packet at a container on another host, 20 runs: "
          f"p50 {percentile(lat, 50) * 1000:.0f} ms, p99 {percentile(lat, 99) * 1000:.0f} ms, "
          f"min {min(lat) * 1000:.0f} ms")
    # the agent reports the new port at once (an OVSDB watch), not at its next pass
    assert percentile(lat, 50) < 1.0 and percentile(lat, 99) < 2.0


def test_plugin_log_has_no_errors(lab):
    for h in ("host1", "host2"):
        log = (hd(lab, h) / "weft-plugin.log").read_text()
        assert " ERROR " not in log and "Traceback" not in log, log[-2000:]


# -- networks are cluster objects (issue 23 item 1) --------------------------------------
SYNC_S = 10     # one agent interval (2 s in the lab) plus dockerd's create, with room


def weftctl(lab, *args: str) -> subprocess.CompletedProcess:
    exe = ROOT / ".venv/bin/weftctl"
    return subprocess.run([str(exe) if exe.exists() else "weftctl", "--api",
                           f"unix:{C.api_socket(lab.name)}", "--token", C.api_token(lab.name),
                           *args], capture_output=True, text=True, timeout=60)


def nets(lab, host: str) -> dict[str, dict]:
    """The host's weft Docker networks by name (`docker network inspect`)."""
    return C.docker_networks(lab, host)


def agent_pid(lab, host: str) -> int:
    for pid in netns_pids(N.ns_name(lab.name, host)):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"ovs_agent.cli" in argv and b"docker-plugin" not in argv:
            return pid
    raise AssertionError(f"no agent running on {host}")


def status(lab, host: str) -> dict:
    """What the host's agent says of its Docker networks (docker-networks.json)."""
    try:
        return json.loads((hd(lab, host) / "docker-networks.json").read_text())
    except (OSError, ValueError):
        return {}


def until(cond, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"not within {timeout}s: {what}"
        time.sleep(0.1)
    return time.monotonic() - t0


@pytest.fixture(scope="module")
def green(lab):
    """Tenant green (no subnet of its own): the networks made in these tests are its."""
    assert weftctl(lab, "tenant", "create", "green").returncode == 0
    yield "green"


def test_one_network_create_serves_every_host_and_delete_waits_for_its_containers(lab, green):
    """`weftctl network create` once: every host's dockerd has it within one agent
    interval, containers on it reach each other across hosts; `weftctl network delete`
    is refused (409, naming the ports and hosts) while they run, and once they are
    removed the network is deleted and leaves every host."""
    out = weftctl(lab, "network", "create", "green-app", "--tenant", green, "--subnet",
                  "10.60.0.0/24")
    assert out.returncode == 0, out.stderr
    took = C.wait_docker_networks(lab, {"green-app"}, timeout=SYNC_S)
    print(f"\nweftctl network create -> docker network ls shows it on both hosts: {took:.1f}s")
    for host in ("host1", "host2"):
        n = nets(lab, host)["green-app"]
        assert n["Labels"]["org.weft.managed"] == "true"
        assert n["Options"] == {"network": "green-app", "tenant": green}
        assert n["IPAM"]["Driver"] == "weft"
        assert n["IPAM"]["Config"][0] == {"Subnet": "10.60.0.0/24", "Gateway": "10.60.0.1"}
    try:
        a = start(lab, "host1", "ga1", network="green-app")
        b = start(lab, "host2", "ga2", network="green-app")
        ip_a, ip_b = a["ip"].split("/")[0], b["ip"].split("/")[0]
        assert reaches(lab.name, "ga1", ip_b) and reaches(lab.name, "ga2", ip_a)
        out = weftctl(lab, "network", "delete", "green-app")
        assert out.returncode == 1 and "409" in out.stderr, out.stderr
        # the ports: the endpoints' own (wd...) or, usually, pool ports (wq...)
        assert re.search(r"2 port binding\(s\): host1/w[dq]", out.stderr), out.stderr
        assert re.search(r"host2/w[dq]", out.stderr), out.stderr
        assert ip_a in out.stderr and ip_b in out.stderr
        with C.api(lab.name) as c:
            r = c.delete("/v1/networks/green-app")
            assert r.status_code == 409
            assert sorted(p["host"] for p in r.json()["ports"]) == ["host1", "host2"]
            assert c.get("/v1/networks/green-app").status_code == 200
        time.sleep(3)                           # a pass later: still on both hosts
        assert all("green-app" in nets(lab, h) for h in ("host1", "host2"))
    finally:
        remove(lab, "host1", "ga1")
        remove(lab, "host2", "ga2")
    # the agents report the ports gone; then the delete goes through
    until(lambda: weftctl(lab, "network", "delete", "green-app").returncode == 0, 20,
          "network delete once the containers are removed")
    took = until(lambda: not any("green-app" in nets(lab, h) for h in ("host1", "host2")),
                 SYNC_S, "green-app gone from every host")
    print(f"weftctl network delete -> gone from both hosts: {took:.1f}s")


def test_careless_operator_adoption_and_agent_restart(lab, green):
    """While host1's agent is down an operator makes two networks by hand there:
    olive exactly as the cluster's (adopted: not recreated, not duplicated, keeps
    working) and teal with the cluster's name but tenant blue's segment and subnet
    (a conflict: left alone, logged, in docker-networks.json).  The restarted agent
    creates nothing that exists and deletes nothing; `docker network rm teal` lets it
    make the cluster's."""
    os.kill(agent_pid(lab, "host1"), signal.SIGKILL)
    cli = ["-d", "weft", "--ipam-driver", "weft"]
    try:
        for name, subnet in (("olive", "10.61.0.0/24"), ("teal", "10.62.0.0/24")):
            out = weftctl(lab, "network", "create", name, "--tenant", green, "--subnet", subnet)
            assert out.returncode == 0, out.stderr
        C.wait_docker_networks(lab, {"olive", "teal"}, timeout=SYNC_S, hosts=["host2"])
        docker(lab, "host1", "network", "create", *cli, "-o", "tenant=olive", "--subnet",
               "10.61.0.0/24", "olive")
        docker(lab, "host1", "network", "create", *cli, "-o", "tenant=blue", "--subnet",
               "10.10.0.0/24", "teal")
        before = {n: x["Id"] for n, x in nets(lab, "host1").items()}
        log = hd(lab) / "ovs-agent.log"
        mark = log.stat().st_size
    finally:
        L.start_agent(lab.name, "host1")
    until(lambda: status(lab, "host1").get("adopted") == ["olive"]
          and "teal" in status(lab, "host1").get("conflicts", {}), SYNC_S + 10,
          "olive adopted and teal in conflict on host1")
    time.sleep(3)                                       # and another pass
    assert {n: x["Id"] for n, x in nets(lab, "host1").items()} == before
    why = status(lab, "host1")["conflicts"]["teal"]
    assert "joins weft network 'blue'" in why and "has subnet 10.10.0.0/24" in why
    assert "left alone" in why and "docker network rm teal" in why
    new_log = log.read_text(errors="replace")[mark:]
    assert "docker network teal: Docker network 'teal' (made by hand" in new_log
    assert "docker network olive: adopted" in new_log
    # and the operator sees it centrally: `weftctl network show` has each host's state
    until(lambda: "host1  conflict" in weftctl(lab, "network", "show", "teal").stdout,
          SYNC_S, "host1's conflict reported to the controller")
    shown = weftctl(lab, "network", "show", "teal").stdout
    assert "host2  created" in shown and "joins weft network 'blue'" in shown, shown
    assert "host1  adopted" in weftctl(lab, "network", "show", "olive").stdout
    changes = [line for line in new_log.splitlines() if "docker network" in line
               and (": created" in line or ": removed" in line)]
    assert not changes, changes
    try:
        start(lab, "host1", "ol1", network="olive")     # the hand-made one works as before
        b = start(lab, "host2", "ol2", network="olive")
        assert reaches(lab.name, "ol1", b["ip"].split("/")[0])
    finally:
        remove(lab, "host1", "ol1")
        remove(lab, "host2", "ol2")
    # the operator removes the wrong one: the cluster's comes
    docker(lab, "host1", "network", "rm", "teal")
    until(lambda: nets(lab, "host1").get("teal", {}).get("Options", {}).get("network") == "teal",
          SYNC_S, "the cluster's teal on host1")
    until(lambda: "teal" not in status(lab, "host1").get("conflicts", {}), SYNC_S,
          "the conflict cleared")
    # deleted in the controller: the agents' networks go, the adopted hand-made one stays
    with C.api(lab.name) as c:
        for name in ("olive", "teal"):
            until(lambda name=name: c.delete(f"/v1/networks/{name}").status_code == 200, 20,
                  f"delete {name}")
    until(lambda: "teal" not in nets(lab, "host1") and not {"olive", "teal"} & set(
        nets(lab, "host2")), SYNC_S, "olive and teal gone")
    assert nets(lab, "host1")["olive"]["Id"] == before["olive"]
    docker(lab, "host1", "network", "rm", "olive")


def test_dockerd_restart_leaves_and_rejoins_cleanly(lab):
    """Stopping dockerd stops its containers: their ports go; `docker start` plugs anew.
    A network created in the controller meanwhile is there once dockerd is back; the
    ones it had are kept (the same ids: not recreated).

    Last in the module: it restarts host1's Docker.
    """
    d = hd(lab)
    ids = {n: x["Id"] for n, x in nets(lab, "host1").items()}
    pid = int((D.docker_dir(d) / "docker.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p, ext in ports(lab, "host1").items() if "weft-docker-endpoint" in ext]
    with C.api(lab.name) as c:      # made while host1's dockerd is down
        assert c.post("/v1/networks", json={"name": "late", "tenant": "red",
                                            "subnet": "10.63.0.0/24"}).status_code == 201
    D.start_dockerd(lab.name, "host1", N.ns_name(lab.name, "host1"), d, N.state_dir(lab.name),
                    d / "daemon.json")
    D.wait_ready(d)
    took = until(lambda: "late" in nets(lab, "host1"), SYNC_S, "late on host1")
    print(f"\nnetwork created while dockerd was down: on host1 {took:.1f}s after it is up")
    assert {n: x["Id"] for n, x in nets(lab, "host1").items() if n != "late"} == ids
    docker(lab, "host1", "start", "red1", "blue1")
    for name in ("red1", "blue1"):       # new sandboxes: name the namespaces again
        run(["ip", "netns", "del", N.ns_name(lab.name, name)], check=False)
        run(["ip", "netns", "attach", N.ns_name(lab.name, name),
             str(D.inspect(d, name)["pid"])])
    assert reaches(lab.name, "red1", lab.addr("red2"))
    assert reaches(lab.name, "blue2", lab.addr("blue1"))
    eps = [json.loads(v) for k, v in bridge_state(lab, "host1").items()
           if k.startswith("weft-dep-")]
    assert sorted(e["address"] for e in eps) == ["10.10.0.2/24"] * 2, eps   # no stale ones
    assert len([p for p, ext in ports(lab, "host1").items()
                if "weft-docker-endpoint" in ext]) == 2


@pytest.mark.parametrize("kind", ["gratuitous", "unicast reply"])
def test_plugin_containers_are_safe_from_arp_hijack_by_default(lab, kind):
    """red1 claims red2's address (the plugin's IPAM gave it) while r3, another `docker run
    --network red` container, pings red2; nobody bound any address by hand.  Before
    (issue 25): 99 of 100 of the pings went to the attacker."""
    info = start(lab, "host2", "r3")
    try:
        C.wait_converged(lab)                   # r3's port bound and on the switch
        assert reaches(lab.name, "r3", lab.addr("red2"))
        got = A.arp_hijack(lab.name, "red1", kind, "r3", info["ip"].split("/")[0],
                           lab.addr("red2"))
    finally:
        remove(lab, "host2", "r3")
    print(f"\nARP hijack ({kind}) of red2 by red1, Docker-plugin containers: {got}")
    assert got.held, got


BIND_18080 = ("import errno, socket\ns = socket.socket()\ntry:\n    s.bind(('0.0.0.0', 18080))\n"
              "    print('free')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])")


def test_published_ports_reach_the_plugin_and_are_checked(lab):
    """`docker run -p` hands the ports to the plugin (ProgramExternalConnectivity): what
    cannot be published fails `docker run` with the fix in the message; a published port
    is held by a socket and stored; a second container cannot take it; `docker rm` frees it.
    (Reaching it from outside is tests/lab/test_routing.py's, with the agent's NAT.)"""
    cli = [D.DOCKER, "-H", f"unix://{D.socket_path(hd(lab))}"]

    def run_p(name: str, *publish: str) -> subprocess.CompletedProcess:
        return subprocess.run([*cli, "run", "-d", "--pull=never", "--init", "--name", name,
                               "--network", "red", *publish, D.IMAGE, "sleep", "600"],
                              capture_output=True, text=True, check=False)
    try:
        out = run_p("pub0", "-p", "5201")
        assert out.returncode != 0 and "give the host port: -p HOSTPORT:5201" in out.stderr, \
            out.stderr
        net = weft_network(lab, "red")
        out = run_p("pub1", "-p", "18080:5201", "-p", "18080:5201/udp")
        if not net.get("gateway") or not net.get("egress"):
            assert out.returncode != 0 and "published ports need" in out.stderr, out.stderr
            assert not any(k.startswith("weft-dpub-") for k in bridge_state(lab, "host1"))
            return
        assert out.returncode == 0, out.stderr
        records = [json.loads(v) for k, v in bridge_state(lab, "host1").items()
                   if k.startswith("weft-dpub-")]          # one key per published port
        assert sorted((r["proto"], r["host_port"], r["container_port"]) for r in records) \
            == [("tcp", 18080, 5201), ("udp", 18080, 5201)]
        assert {r["tenant_id"] for r in records} == {net.get("vni")}
        taken = run(["python3", "-c", BIND_18080], ns=N.ns_name(lab.name, "host1"))
        assert taken.strip() == "EADDRINUSE", taken             # held (not listening)
        out = run_p("pub2", "-p", "18080:80")
        assert out.returncode != 0 and "18080/tcp is already published on host1" in \
            out.stderr and "container pub1" in out.stderr, out.stderr
        docker(lab, "host1", "rm", "-f", "pub1")
        assert not any(k.startswith("weft-dpub-") for k in bridge_state(lab, "host1"))
    finally:
        for name in ("pub0", "pub1", "pub2"):
            docker(lab, "host1", "rm", "-f", name, check=False)
