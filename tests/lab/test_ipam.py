"""Cluster-wide IPAM with real dockerd on three lab hosts (docs/docker.md "Addresses").

topologies/ipam.yaml: three Docker hosts with the weft plugin, two weft-manager
instances on one etcd member, the Docker network red (10.40.0.0/22) on every host.
Many `docker run --network red` containers on all hosts at once get distinct addresses
from blocks their hosts claimed; `--ip` of another host's address is refused naming it;
a plugin killed between allocation and Join loses nothing; a controller killed while
hosts claim blocks hands out no address twice.
"""
from __future__ import annotations

import ipaddress
import json
import os
import signal
import threading
import time

import httpx
import pytest

from tests.conftest import converged_lab, lab_name, wait_for
from weft_lab import cluster as C
from weft_lab import docker as D
from weft_lab import failover
from weft_lab import lab as L
from weft_lab import nodes as N
from weft_lab.measure import pings
from weft_lab.shell import CommandError, netns_pids
from weft_lab.topology import load

HOSTS = ("host1", "host2", "host3")
# 120 containers in all by default: 300 (100 per host) took this 2-core machine 696 s
# with 22 `docker run`s timing out (load average ~1000, 17 GB in use); see docs/docker.md
PER_HOST = int(os.environ.get("WEFT_IPAM_PER_HOST", "40"))
SUBNET = ipaddress.ip_network("10.40.0.0/22")


@pytest.fixture(scope="module")
def lab():
    with converged_lab(load("topologies/ipam.yaml").with_name(lab_name("ip"))) as topo:
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
