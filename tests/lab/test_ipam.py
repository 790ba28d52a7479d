"""Cluster-wide IPAM with real dockerd on three lab hosts (docs/docker.md "Addresses").

topologies/ipam.yaml: three Docker hosts with the weft plugin, two weft-manager
instances on one etcd member, the Docker network red (10.40.0.0/22) on every host.
Many `docker run --network red` containers on all hosts at once get distinct addresses
from blocks their hosts claimed; `--ip` of another host's address is refused naming it;
1,000 allocations at once through the three plugins' IPAM endpoints (the calls dockerd
makes), with a controller and a plugin killed in the middle, give no duplicate and leak
nothing; a plugin killed between allocation and Join loses nothing; a controller killed
while hosts claim blocks hands out no address twice.  Then issue 23 on the same three hosts
(docs/docker.md "Creating a network", docs/dns.md): one `weftctl network create` makes
a network usable on all of them, `ping web1` by name works from the other two and not
from another tenant, names follow `docker run`/`docker rm`, and host4 (`join: later`)
joins by registration, gets the networks and the names, and takes its names along when
it leaves.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import converged_lab, lab_name, wait_for
from weft_lab import cluster as C
from weft_lab import docker as D
from weft_lab import failover
from weft_lab import lab as L
from weft_lab import nodes as N
from weft_lab.measure import pings
from weft_lab.nodes import exec_argv
from weft_lab.shell import CommandError, netns_pids
from weft_lab.traffic import node_run
from weft_lab.topology import load

HOSTS = ("host1", "host2", "host3")
# 120 containers in all by default: 300 (100 per host) took this 2-core machine 696 s
# with 22 `docker run`s timing out (load average ~1000, 17 GB in use); see docs/docker.md
PER_HOST = int(os.environ.get("WEFT_IPAM_PER_HOST", "40"))
SUBNET = ipaddress.ip_network("10.40.0.0/22")


# WEFT_IPAM_PORT_TYPE=afpacket for 300 containers: AF_XDP ports (the default, auto) grow
# userspace vswitchd by tens of MB each (their umem), and 300 of them do not fit this
# machine's 24 GB (docs/docker.md "Addresses")
PORT_TYPE = os.environ.get("WEFT_IPAM_PORT_TYPE")


@pytest.fixture(scope="module")
def lab():
    topo = load("topologies/ipam.yaml").with_name(lab_name("ip"))
    if PORT_TYPE:
        topo = dataclasses.replace(topo, port_type=PORT_TYPE)
    with converged_lab(topo) as topo:
        yield topo


def docker(lab, host: str, *args: str, check: bool = True) -> str:
    return D.docker(N.host_dir(lab.name, host), *args, check=check)


def start_many(lab, names: dict[str, list[str]], network: str = "red",
               during=None) -> tuple[dict[str, str], dict[str, str], float]:
    """`docker run -d --network NET` of every name, one thread per host, all hosts at
    once (``during()`` runs meanwhile); (name -> address, name -> error, seconds)."""
    addrs: dict[str, str] = {}
    errors: dict[str, str] = {}
    lock = threading.Lock()

    def host_run(host: str) -> None:
        for name in names[host]:
            try:
                docker(lab, host, "run", "-d", "--pull=never", "--name", name,
                       "--network", network, "--label", f"weft-lab={lab.name}", D.IMAGE,
                       "sleep", "2147483647")
            except Exception as exc:        # noqa: BLE001  (counted, not fatal here)
                with lock:
                    errors[name] = str(exc)[-300:]
    t0 = time.monotonic()
    threads = [threading.Thread(target=host_run, args=(h,)) for h in names]
    for t in threads:
        t.start()
    if during is not None:
        during()
    for t in threads:
        t.join()
    took = time.monotonic() - t0
    for host, ns in names.items():
        ok = [n for n in ns if n not in errors]
        if ok:
            out = docker(lab, host, "inspect", "-f",
                         "{{.Name}} {{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                         *ok)
            for line in out.split("\n"):
                if line.strip():
                    name, addr = line.split()
                    addrs[name.lstrip("/")] = addr
    return addrs, errors, took


def claims(lab, network: str = "red") -> list[dict]:
    with C.api(lab.name, instance=2) as api:
        resp = api.get(f"/v1/networks/{network}/ipam")
        resp.raise_for_status()
        return resp.json()["claims"]


def held_by(claim_list: list[dict], addr: str) -> str | None:
    a = ipaddress.ip_address(addr)
    hosts = {c["host"] for c in claim_list if a in ipaddress.ip_network(c["cidr"])}
    assert len(hosts) <= 1, (addr, hosts)
    return hosts.pop() if hosts else None


def test_hundreds_of_containers_across_hosts_get_distinct_addresses(lab):
    names = {h: [f"{h}-c{i}" for i in range(PER_HOST)] for h in HOSTS}
    addrs, errors, took = start_many(lab, names)
    print(f"\n{len(addrs)} containers on {len(HOSTS)} hosts in {took:.1f} s "
          f"({len(addrs) / took:.1f}/s), {len(errors)} failed")
    assert len(set(addrs.values())) == len(addrs), "an address was handed out twice"
    assert not errors, errors
    assert len(addrs) == 3 * PER_HOST
    assert all(ipaddress.ip_address(a) in SUBNET and a != "10.40.0.1" for a in addrs.values())
    now = claims(lab)
    blocks = [ipaddress.ip_network(c["cidr"]) for c in now if c["kind"] == "block"]
    assert not any(x.overlaps(y) for i, x in enumerate(blocks) for y in blocks[i + 1:])
    for name, addr in addrs.items():        # each container's address in its host's blocks
        assert held_by(now, addr) == name.split("-")[0], (name, addr)
    # and they reach each other across hosts
    a = D.run_container(N.host_dir(lab.name, "host1"), lab.name, "probe1",
                        N.ns_name(lab.name, "probe1"), network="red")
    b = D.run_container(N.host_dir(lab.name, "host3"), lab.name, "probe3",
                        N.ns_name(lab.name, "probe3"), network="red")
    assert a["ip"] != b["ip"]
    assert pings(N.ns_name(lab.name, "probe1"), b["ip"].split("/")[0])
    assert pings(N.ns_name(lab.name, "probe3"), addrs["host2-c0"])


def test_ip_held_by_another_host_is_refused_naming_it(lab):
    taken = docker(lab, "host2", "inspect", "-f",
                   "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "host2-c1").strip()
    with pytest.raises(CommandError) as err:
        docker(lab, "host1", "run", "-d", "--pull=never", "--name", "thief", "--network",
               "red", "--ip", taken, D.IMAGE, "true")
    assert f"{taken} of network 'red' is held by host host2" in str(err.value), err.value
    docker(lab, "host1", "rm", "-f", "thief", check=False)
    free = "10.40.3.250"                # in no block: host3 claims it, host1 may not
    docker(lab, "host3", "run", "-d", "--pull=never", "--name", "fixed", "--network", "red",
           "--ip", free, D.IMAGE, "sleep", "2147483647")
    with pytest.raises(CommandError) as err:
        docker(lab, "host1", "run", "-d", "--pull=never", "--name", "thief2", "--network",
               "red", "--ip", free, D.IMAGE, "true")
    assert "held by host host3 (address)" in str(err.value), err.value
    docker(lab, "host1", "rm", "-f", "thief2", check=False)
    assert {"cidr": f"{free}/32", "host": "host3", "kind": "address", "network": "red"} in \
        claims(lab)
    docker(lab, "host3", "rm", "-f", "fixed")
    assert f"{free}/32" not in [c["cidr"] for c in claims(lab)]        # released on rm


# -- 1,000 allocations at once through the plugins' real IPAM endpoints, with faults ------
BULK_SUBNET = "10.44.0.0/21"        # 32 blocks of /26: 1,000 addresses fill ~16 of them
CONTESTED = [f"10.44.7.{200 + i}" for i in range(40)]  # asked by all three hosts at once
CLIENTS = 8                         # concurrent clients per host (dockerd makes several)


class Ipam:
    """Docker's IPAM calls (RequestAddress, ReleaseAddress) to one host's plugin, over
    its real unix socket, as dockerd sends them; a call the plugin never answered (it
    was killed) is counted in ``lost`` and asked again once it is back."""

    def __init__(self, lab, host: str, pool: str) -> None:
        self.sock = str(D.plugin_dir(N.host_dir(lab.name, host)) / "weft.sock")
        self.pool, self.lost, self.retried = pool, 0, 0
        self.lock = threading.Lock()
        self.local = threading.local()

    def _post(self, call: str, body: dict) -> dict:
        while True:
            c = getattr(self.local, "client", None)
            if c is None:
                c = self.local.client = httpx.Client(
                    transport=httpx.HTTPTransport(uds=self.sock), timeout=30)
            try:
                return c.post(f"http://plugin/IpamDriver.{call}", json=body).json()
            except (httpx.HTTPError, ValueError):
                c.close()
                self.local.client = None
                with self.lock:
                    self.lost += 1
                time.sleep(0.1)

    def request(self, want: str = "") -> str | None:
        """An address (None: ``want`` refused as another host's); retried while the
        plugin says no controller answers (Docker's user would run again)."""
        deadline = time.monotonic() + 60
        while True:
            out = self._post("RequestAddress", {"PoolID": self.pool, "Address": want,
                                                "Options": {}})
            if "Address" in out:
                return out["Address"].split("/")[0]
            if want and ("is held by host" in out["Error"] or "already in use" in
                         out["Error"]):
                return None
            assert time.monotonic() < deadline, out
            with self.lock:
                self.retried += 1
            time.sleep(0.1)

    def release(self, addr: str) -> None:
        assert self._post("ReleaseAddress", {"PoolID": self.pool, "Address": addr}) == {}


def _space(lab, host: str, network: str) -> dict:
    return _state(lab, host).get(f"weft-dspace-{network}") or {"addrs": [], "blocks": [],
                                                                  "claimed": []}


def _round_robin(per_host: dict[str, list]) -> list:
    """The hosts' jobs interleaved, so that every host's plugin is busy at once."""
    from itertools import chain, zip_longest
    return [j for j in chain.from_iterable(zip_longest(*per_host.values())) if j]


def _in_parallel(jobs: list, during=None) -> list:
    """Run the callables ``jobs`` on CLIENTS threads per host (``during()`` meanwhile)."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(CLIENTS * len(HOSTS)) as ex:
        futures = [ex.submit(j) for j in jobs]
        if during is not None:
            during()
        return [f.result() for f in futures]


def test_1000_allocations_at_once_across_hosts_with_a_controller_and_a_plugin_killed(lab):
    """1,000 allocations at once on three hosts through each host's plugin (the calls
    dockerd makes, over the real socket, CLIENTS clients per host; 1,000 `docker run`s do
    not fit this machine), 40 `--ip` addresses asked by all three hosts at once;
    controller 1 killed -9 (and restarted) and host2's plugin killed -9 (and restarted)
    in the middle.  No address held by two hosts; every answered allocation in a claim
    of its host in the store; each plugin's claims are the store's (but one per kill at
    most, a claim committed and never saved: docs/docker.md "Limits"); the addresses
    whose answer the kill lost are held, not lost; released addresses are handed out
    again; after every release each host keeps one empty block and nothing else."""
    with C.api(lab.name, instance=2) as api:
        api.post("/v1/tenants", json={"name": "bulk", "subnet": BULK_SUBNET}
                 ).raise_for_status()
    for h in HOSTS:
        docker(lab, h, "network", "create", "-d", "weft", "--ipam-driver", "weft", "-o",
               "tenant=bulk", "--subnet", BULK_SUBNET, "bulk")
    ipams = {h: Ipam(lab, h, next(v["id"] for k, v in _state(lab, h).items()
                                  if k.startswith("weft-dpool-")
                                  and v.get("subnet") == BULK_SUBNET)) for h in HOSTS}
    got: dict[str, list[str]] = {h: [] for h in HOSTS}
    lock = threading.Lock()

    def alloc(h: str, want: str = "") -> None:
        addr = ipams[h].request(want)
        if addr is not None:
            with lock:
                got[h].append(addr)

    def total() -> int:
        return sum(len(v) for v in got.values())
    jobs = []
    for i in range(320):                # 960 dynamic, the contested ones among them
        for h in HOSTS:
            jobs.append(lambda h=h: alloc(h))
            if i % 8 == 0:
                jobs.append(lambda h=h, a=CONTESTED[i // 8 % 40]: alloc(h, a))
    for a in CONTESTED[len(range(0, 320, 8)):]:
        for h in HOSTS:
            jobs.append(lambda h=h, a=a: alloc(h, a))
    faults: dict[str, float] = {}

    def kill_and_restart() -> None:
        wait_for(lambda: total() >= 250, 60, "250 allocations")
        faults["controller 1 killed at"] = total()
        failover.kill(lab.name, "controller-1")
        wait_for(lambda: total() >= 450, 60, "450 allocations")
        faults["host2's plugin killed at"] = total()
        os.kill(_plugin_pid(lab, "host2"), signal.SIGKILL)
        L.start_plugin(lab.name, "host2")
        wait_for(lambda: total() >= 650, 60, "650 allocations")
        faults["controller 1 restarted at"] = total()
        C.start_controller(lab, instances=range(0, 1))
    t0 = time.monotonic()
    _in_parallel(jobs, during=kill_and_restart)
    took = time.monotonic() - t0
    C.wait_api(lab.name, instances=2)
    lost = {h: ipams[h].lost for h in HOSTS}
    print(f"\n{total()} allocations ({len(jobs)} calls) on {len(HOSTS)} hosts in {took:.1f} s "
          f"({total() / took:.0f}/s); {faults}; calls unanswered {lost}, refused and "
          f"asked again {({h: ipams[h].retried for h in HOSTS})}")

    # no duplicate, nothing lost: what the clients got, and what the kill left held
    spaces = {h: _space(lab, h, "bulk") for h in HOSTS}
    orphans = {h: set(spaces[h]["addrs"]) - set(got[h]) for h in HOSTS}
    held = [a for h in HOSTS for a in set(got[h]) | orphans[h]]
    assert len(held) == len(set(held)), "an address is held by two hosts"
    for h in HOSTS:
        assert len(got[h]) == len(set(got[h])), f"{h} handed an address out twice"
        assert set(got[h]) <= set(spaces[h]["addrs"]), f"{h}'s state lost an address"
        assert len(orphans[h]) <= lost[h], (h, orphans[h], lost[h])    # answers lost
    assert not orphans["host1"] and not orphans["host3"]
    assert total() == 960 + len(CONTESTED) - sum(a in CONTESTED for o in orphans.values()
                                                 for a in o)
    for a in CONTESTED:                 # each asked by all three: exactly one has it
        assert sum(a in got[h] or a in orphans[h] for h in HOSTS) == 1, a

    # the store's view: blocks disjoint, every address in a claim of its own host, each
    # plugin's blocks and address claims the store's.  The store may hold more for a
    # host than its plugin knows only where a kill fell between a claim's commit and
    # the plugin saving it (docs/docker.md "Limits"): at most one claim per kill, the
    # same claims to the end, never handed out by anyone
    def store_matches_plugins() -> tuple[list[dict], set[tuple[str, str]]]:
        now = claims(lab, "bulk")
        blocks = [ipaddress.ip_network(c["cidr"]) for c in now if c["kind"] == "block"]
        assert not any(x.overlaps(y) for i, x in enumerate(blocks) for y in blocks[i + 1:])
        unknown = set()
        for h in HOSTS:
            sp = _space(lab, h, "bulk")
            store = {c["cidr"] for c in now if c["host"] == h}
            mine = set(sp["blocks"]) | {f"{a}/32" for a in sp["claimed"]}
            assert mine <= store, f"{h} holds claims the store does not give it"
            unknown |= {(h, c) for c in store - mine}
            for a in sp["addrs"]:
                assert held_by(now, a) == h, (h, a)
        assert len(unknown) <= 2, unknown
        return now, unknown
    _, leaked = store_matches_plugins()

    # every fourth dynamic address released, then asked for again: the same ones come
    # back (the lowest free first).  Before the plugins' reclaim_after (60 s) has passed
    # since the first allocation: after it they may reclaim what no container has
    t1 = time.monotonic()
    assert t1 - t0 < 45, f"{t1 - t0:.0f} s: too near the plugins' reclaim_after (60 s)"
    back = {h: [a for a in sorted(got[h], key=ipaddress.ip_address)
                if a not in CONTESTED][::4] for h in HOSTS}
    _in_parallel(_round_robin({h: [lambda h=h, a=a: ipams[h].release(a) for a in back[h]]
                               for h in HOSTS}))
    for h in HOSTS:
        got[h] = [a for a in got[h] if a not in back[h]]
    again: dict[str, list[str]] = {h: [] for h in HOSTS}

    def realloc(h: str) -> None:
        addr = ipams[h].request()
        assert addr is not None
        with lock:
            again[h].append(addr)
    _in_parallel(_round_robin({h: [lambda h=h: realloc(h)] * len(back[h]) for h in HOSTS}))
    for h in HOSTS:
        assert sorted(again[h]) == sorted(back[h]), f"{h}: released addresses not reused"
        got[h] += again[h]
    # a contested address, released by its winner, is free for another host
    a = CONTESTED[0]
    [winner] = [h for h in HOSTS if a in got[h] or a in orphans[h]]
    ipams[winner].release(a)
    if a in got[winner]:
        got[winner].remove(a)
    orphans[winner].discard(a)
    other = next(h for h in HOSTS if h != winner)
    assert ipams[other].request(a) == a
    got[other].append(a)

    t2 = time.monotonic()
    # everything released (the kill's orphans too, as the plugin's reclaim pass would
    # after reclaim_after: test_a_plugin_killed_between_allocation_and_join_loses_nothing)
    _in_parallel(_round_robin({h: [lambda h=h, a=a: ipams[h].release(a)
                                   for a in [*got[h], *orphans[h]]] for h in HOSTS}))
    now, unknown = store_matches_plugins()
    assert unknown == leaked, (unknown, leaked)
    for h in HOSTS:
        sp = _space(lab, h, "bulk")
        assert sp["addrs"] == [] and sp["claimed"] == [] and sp["unreleased"] == [], sp
        assert len(sp["blocks"]) == 1, (h, sp["blocks"])        # one kept warm
    assert len(now) == len(HOSTS) + len(leaked), now
    for h in HOSTS:                     # docker network rm: the warm block goes back too
        docker(lab, h, "network", "rm", "bulk")
    assert {(c["host"], c["cidr"]) for c in claims(lab, "bulk")} == leaked
    print(f"checks {t1 - t0 - took:.1f} s, {sum(map(len, back.values()))} released and "
          f"reused in {t2 - t1:.1f} s, all released and the network removed in "
          f"{time.monotonic() - t2:.1f} s; the allocations the kill left held: "
          f"{ {h: sorted(o) for h, o in orphans.items() if o} }; claims the kills left "
          f"to the store alone: {sorted(leaked) or 'none'}")


def _plugin_pid(lab, host: str) -> int:
    for pid in netns_pids(N.ns_name(lab.name, host)):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"docker-plugin" in f.read():
                    return pid
        except OSError:
            pass
    raise AssertionError(f"no plugin on {host}")


def _state(lab, host: str) -> dict[str, dict]:
    out = json.loads(N.vsctl(lab.name, host, "--format=json", "--columns=external_ids",
                             "list", "Bridge", "br0"))
    return {k: json.loads(v) for k, v in out["data"][0][0][1] if k.startswith("weft-d")}


def test_a_plugin_killed_between_allocation_and_join_loses_nothing(lab):
    """Docker asked for an address (RequestAddress, answered and stored), then the
    plugin died before the endpoint was made: the address is never handed to another
    container while it might be in use, and is reclaimed once nothing has it."""
    sock = D.plugin_dir(N.host_dir(lab.name, "host1")) / "weft.sock"
    [pool] = [v["id"] for k, v in _state(lab, "host1").items()
              if k.startswith("weft-dpool-") and v.get("network") == "red"]
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), timeout=10) as c:
        resp = c.post("http://plugin/IpamDriver.RequestAddress",
                      json={"PoolID": pool, "Address": "", "Options": {}}).json()
    orphan = resp["Address"].split("/")[0]
    os.kill(_plugin_pid(lab, "host1"), signal.SIGKILL)
    L.start_plugin(lab.name, "host1", "--reclaim-after", "4")
    assert orphan in _state(lab, "host1")["weft-dspace-red"]["addrs"]   # survived the kill
    first = D.run_container(N.host_dir(lab.name, "host1"), lab.name, "after1",
                            N.ns_name(lab.name, "after1"), network="red")
    assert first["ip"].split("/")[0] != orphan          # not reused while it may be used
    time.sleep(5)                       # nothing has it: the next pass reclaims it
    again = D.run_container(N.host_dir(lab.name, "host1"), lab.name, "after2",
                            N.ns_name(lab.name, "after2"), network="red")
    assert again["ip"].split("/")[0] == orphan
    assert pings(N.ns_name(lab.name, "after2"), first["ip"].split("/")[0])


def test_a_controller_killed_while_hosts_claim_blocks_hands_out_no_duplicate(lab):
    """Hosts claim blocks of a new network through controller 1 (the first in
    hosts.yaml) when it is killed: they go on through controller 2, every address once."""
    with C.api(lab.name, instance=2) as api:
        api.post("/v1/tenants", json={"name": "blue", "subnet": "10.41.0.0/24"}
                 ).raise_for_status()
    for h in HOSTS:
        docker(lab, h, "network", "create", "-d", "weft", "--ipam-driver", "weft", "-o",
               "tenant=blue", "--subnet", "10.41.0.0/24", "blue")
    names = {h: [f"{h}-b{i}" for i in range(24)] for h in HOSTS}    # 2 blocks each

    def kill_controller_1() -> None:
        wait_for(lambda: len(claims(lab, "blue")) >= 2, 60, "the first blocks")
        failover.kill(lab.name, "controller-1")
    addrs, errors, took = start_many(lab, names, "blue", during=kill_controller_1)
    print(f"\n{len(addrs)} containers with controller 1 killed: {len(errors)} failed "
          f"in {took:.1f} s")
    assert len(set(addrs.values())) == len(addrs), "an address was handed out twice"
    assert len(errors) <= 3, errors         # at most a call in flight per host
    now = claims(lab, "blue")
    for name, addr in addrs.items():
        assert held_by(now, addr) == name.split("-")[0], (name, addr)
    C.start_controller(lab, instances=range(0, 1))
    C.wait_api(lab.name, instances=2)


# -- issue 23 on three Docker hosts: one network for all, names, a host that joins later --
# Last in the module (they need no clean hosts): tenant app's network app-web and tenant
# other's other-web, each made once with `weftctl network create` (docs/docker.md
# "Creating a network"); names through Docker's embedded resolver, which forwards to weft
# (docs/dns.md); host4 (`join: later` in topologies/ipam.yaml) joins by registration.

ROOT = Path(__file__).resolve().parents[2]
EMBEDDED = "127.0.0.11"         # Docker's resolver, in every container on a weft network
NXDOMAIN = 3
SYNC_S = 10                     # an agent interval (2 s in the lab) plus dockerd's create
LATE = "host4"


def weftctl(lab, *args: str) -> subprocess.CompletedProcess:
    """The real weftctl, against the lab's API, as a user runs it."""
    exe = ROOT / ".venv/bin/weftctl"
    return subprocess.run([str(exe) if exe.exists() else "weftctl", "--api",
                           f"unix:{C.api_socket(lab.name, 2)}", "--token",
                           C.api_token(lab.name), *args],
                          capture_output=True, text=True, timeout=60)


def docker_cli(lab, host: str, *args: str) -> subprocess.CompletedProcess:
    d = N.host_dir(lab.name, host)
    return subprocess.run([D.DOCKER, "-H", f"unix://{D.socket_path(d)}", *args],
                          capture_output=True, text=True, timeout=60)


def weft_nets(lab, host: str) -> set[str]:
    return set(docker(lab, host, "network", "ls", "--filter", "driver=weft", "--format",
                      "{{.Name}}").split())


def ask(lab, node: str, name: str) -> dict:
    """One A query for ``name`` from inside ``node``, through Docker's embedded resolver."""
    res = node_run(lab.name, node, [sys.executable, "-m", "weft_lab.dnsprobe", "ask",
                                    EMBEDDED, name], timeout=30)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


class Watch:
    """`dnsprobe until` in a container: asks every 50 ms until ``name`` has an address
    (found) or is NXDOMAIN (gone); ``at()`` is the wall-clock time of that answer."""

    def __init__(self, lab, node: str, name: str, found: bool, within: float = 15):
        self.proc = subprocess.Popen(
            exec_argv(lab.name, node, [sys.executable, "-m", "weft_lab.dnsprobe", "until",
                                       EMBEDDED, name, "--found" if found else "--gone",
                                       "--within", str(within)]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        self.what = f"{name} {'found' if found else 'gone'} from {node}"
        first = self.proc.stdout.readline() if self.proc.stdout else ""
        assert first, f"{self.what}: {self.proc.stderr.read() if self.proc.stderr else ''}"
        self.first = json.loads(first)["row"]

    def at(self, timeout: float = 30) -> float:
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, f"not {self.what} in time: {err}"
        return float(json.loads(out.splitlines()[-1])["at"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


def run_web1(lab) -> tuple[str, float]:
    """`docker run --name web1 --network app-web` on host1: (its address, wall-clock
    time `docker run` returned)."""
    out = docker_cli(lab, "host1", "run", "-d", "--pull=never", "--name", "web1",
                     "--label", f"weft-lab={lab.name}", "--network", "app-web", D.IMAGE,
                     "sleep", "2147483647")
    done = time.time()
    assert out.returncode == 0, out.stderr
    return docker(lab, "host1", "inspect", "-f",
                  "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                  "web1").strip(), done


def ping_by_name(lab, host: str, container: str, name: str) -> str:
    out = docker_cli(lab, host, "exec", container, "ping", "-c", "1", "-W", "2", name)
    assert out.returncode == 0, f"{container} on {host}: ping {name}: {out.stdout}{out.stderr}"
    return out.stdout


@pytest.fixture(scope="module")
def app_net(lab):
    """Tenants app and other (no subnets of their own), and one network each, made once
    with weftctl; the seconds from `weftctl network create app-web` to every host's
    `docker network ls` showing it."""
    for args in (("tenant", "create", "app"), ("tenant", "create", "other"),
                 ("network", "create", "other-web", "--tenant", "other", "--subnet",
                  "10.43.0.0/24")):
        out = weftctl(lab, *args)
        assert out.returncode == 0, out.stderr
    t0 = time.monotonic()
    out = weftctl(lab, "network", "create", "app-web", "--tenant", "app", "--subnet",
                  "10.42.0.0/24")
    assert out.returncode == 0, out.stderr
    missing: dict[str, set[str]] = {}
    while time.monotonic() - t0 < SYNC_S:
        missing = {h: {"app-web"} - weft_nets(lab, h) for h in HOSTS}
        if not any(missing.values()):
            break
        time.sleep(0.1)
    yield time.monotonic() - t0, missing


def test_one_weftctl_network_create_serves_all_three_hosts(lab, app_net):
    """`weftctl network create app-web` once: `docker network ls` on all three hosts
    shows it within an agent interval, and `docker run --network app-web` works on each
    with no per-host step; the containers reach each other across hosts."""
    took, missing = app_net
    print(f"\nweftctl network create -> docker network ls on all 3 hosts: {took:.2f} s")
    assert not any(missing.values()), f"not within {SYNC_S} s: {missing}"
    C.wait_docker_networks(lab, {"other-web"}, timeout=SYNC_S, hosts=list(HOSTS))
    ips = {}
    for host, name, net in (("host2", "app2", "app-web"), ("host3", "app3", "app-web"),
                            ("host2", "other2", "other-web")):
        info = D.run_container(N.host_dir(lab.name, host), lab.name, name,
                               N.ns_name(lab.name, name), network=net)
        ips[name] = info["ip"].split("/")[0]
    assert ipaddress.ip_address(ips["app2"]) in ipaddress.ip_network("10.42.0.0/24")
    assert pings(N.ns_name(lab.name, "app2"), ips["app3"])
    assert not pings(N.ns_name(lab.name, "other2"), ips["app3"], count=2)   # other tenant


def test_names_across_three_hosts(lab, app_net):
    """web1 on host1: `ping web1` by name from app2 (host2) and app3 (host3) through
    Docker's embedded resolver; tenant other's container on host2 gets NXDOMAIN; the name
    appears within about a second of `docker run` and is gone within about a second of
    `docker rm -f` (on both hosts)."""
    app3 = docker(lab, "host3", "inspect", "-f",
                  "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "app3").strip()
    t0 = time.monotonic()
    wait_for(lambda: ask(lab, "app2", "app3")["a"] == [app3], 15,
             "app2 resolving app3 (the path to weft's resolver)")
    waited = time.monotonic() - t0
    found = Watch(lab, "app2", "web1", found=True)
    try:
        assert found.first["rcode"] == NXDOMAIN, found.first    # not there before the run
        web1, ran = run_web1(lab)
        appeared = found.at() - ran
    finally:
        found.stop()
    print(f"\napp2 resolved app3 after {waited:.1f} s; name web1 resolvable on host2 "
          f"{appeared:.2f} s after `docker run` returned")
    for host, node in (("host2", "app2"), ("host3", "app3")):
        assert f"from {web1}:" in ping_by_name(lab, host, node, "web1")
    # another tenant: NXDOMAIN, as a name nobody has (busybox nslookup and the rcode)
    out = docker_cli(lab, "host2", "exec", "other2", "nslookup", "-type=a", "web1")
    assert "NXDOMAIN" in out.stdout + out.stderr and web1 not in out.stdout, out.stdout
    assert (ask(lab, "other2", "web1")["rcode"], ask(lab, "other2", "web1")["a"]) == \
        (NXDOMAIN, [])
    assert ask(lab, "app3", "web1")["a"] == [web1]
    gone = [Watch(lab, n, "web1", found=False) for n in ("app2", "app3")]
    try:
        assert all(g.first["a"] == [web1] for g in gone)
        t0 = time.time()
        assert docker_cli(lab, "host1", "rm", "-f", "web1").returncode == 0
        rm_done = time.time()
        after = [g.at() - rm_done for g in gone]
    finally:
        for g in gone:
            g.stop()
    print(f"docker rm -f web1 took {rm_done - t0:.2f} s; NXDOMAIN on host2 "
          f"{after[0]:.2f} s, on host3 {after[1]:.2f} s after it returned")
    assert appeared < 2.5 and max(after) < 2.5, (appeared, after)   # about 1 s measured


def test_a_host_added_later_gets_the_networks_and_the_names(lab, app_net):
    """host4 joins the running cluster by registration (agent, then its dockerd with the
    agent's options, then the plugin): its dockerd gets every cluster network with no
    step of its own, a container there reaches and resolves web1 on host1 by name, and
    once host4 leaves (its agent killed, the registration lease runs out) its container's
    name goes from the other hosts."""
    with C.api(lab.name, instance=2) as api:
        assert LATE not in {h["name"] for h in api.get("/v1/hosts").json()}
    assert weft_nets_or_none(lab, LATE) == set()            # no dockerd yet
    t0 = time.monotonic()
    L.join_later(lab, LATE)
    joined = time.monotonic() - t0
    wanted = {"red", "app-web", "other-web"}
    took = C.wait_docker_networks(lab, wanted, timeout=30, hosts=[LATE]) + joined
    print(f"\n{LATE}: agent, dockerd, plugin started in {joined:.1f} s; the cluster's "
          f"networks in its docker network ls {took:.1f} s after the join began")
    web1, _ = run_web1(lab)
    D.run_container(N.host_dir(lab.name, LATE), lab.name, "app4",
                    N.ns_name(lab.name, "app4"), network="app-web")
    wait_for(lambda: ask(lab, "app4", "web1")["a"] == [web1], 15, "web1's name on host4")
    assert f"from {web1}:" in ping_by_name(lab, LATE, "app4", "web1")
    wait_for(lambda: bool(ask(lab, "app2", "app4")["a"]), 15, "app4's name on host2")
    # host4 leaves: no agent renews its registration; its names go with it
    gone = Watch(lab, "app2", "app4", found=False, within=30)
    try:
        agent = next(p for p in netns_pids(N.ns_name(lab.name, LATE))
                     if b"ovs_agent.cli" in _cmdline(p) and b"docker-plugin" not in _cmdline(p))
        os.kill(agent, signal.SIGKILL)
        killed = time.time()
        left = gone.at(timeout=40) - killed
    finally:
        gone.stop()
    print(f"{LATE}'s agent killed: app4's name gone from host2 {left:.1f} s later "
          f"(registration lease {L.LAB_LEASE_TTL:g} s)")
    assert left < L.LAB_LEASE_TTL + 5


def weft_nets_or_none(lab, host: str) -> set[str]:
    """A host's weft networks, or nothing while it has no dockerd."""
    try:
        return weft_nets(lab, host)
    except CommandError:
        return set()


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
