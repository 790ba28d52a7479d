"""The etcd backend against real etcd members on loopback (tests/etcdproc.py): concurrent
controllers never allocate one VNI, meter id or port twice; the change feed; a 3-member
cluster keeps working with a member killed; weft-manager's preflight on etcd."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time

import pytest

from controller.store import Conflict, StoreError
from controller.store_etcd import EtcdStore, parse_url
from tests.etcdproc import etcd_cluster

HOSTS = """
controller: {openflow: ["tcp:127.0.0.1:6653"]}
hosts:
  - {name: h1, underlay_ip: 192.168.50.10}
"""


def _prefix() -> str:
    return f"/it-{secrets.token_hex(6)}/"


def _hammer(stores: list[EtcdStore], work, per_thread: int) -> list:
    """Run ``work(store, thread, i)`` from 2 threads per store at once; collect results."""
    results: list = []
    lock = threading.Lock()
    go = threading.Barrier(2 * len(stores))

    def run(store: EtcdStore, k: int) -> None:
        go.wait()
        for i in range(per_thread):
            try:
                out = work(store, k, i)
            except StoreError as exc:
                out = exc
            with lock:
                results.append(out)
    threads = [threading.Thread(target=run, args=(s, 2 * n + j))
               for n, s in enumerate(stores) for j in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_two_controllers_never_allocate_one_vni_meter_or_port_twice(etcd_server):
    prefix = _prefix()
    a, b = EtcdStore(etcd_server.endpoints(), prefix), EtcdStore(etcd_server.endpoints(), prefix)
    # VNIs: 4 writers (2 threads in each of 2 controllers) each create 25 tenants, VNI auto
    made = _hammer([a, b], lambda s, k, i: s.create_tenant(f"t{k}-{i}"), 25)
    assert all(not isinstance(r, Exception) for r in made), made
    tenants = [t for t in a.tenants() if t.name != "default"]
    assert len(tenants) == 100
    assert len({t.vni for t in tenants}) == 100                  # never one VNI twice
    assert {t.vni for t in made} == {t.vni for t in tenants}     # every acknowledged write is there
    # ports: every writer binds the same 30 ports, each to its own tenant: one wins a port
    bound = _hammer([a, b], lambda s, k, i: s.bind("h1", f"p{i}", f"t{k}-0"), 30)
    wins = [r for r in bound if not isinstance(r, Exception)]
    assert len(wins) == 30 and all(isinstance(r, Conflict) for r in bound if r not in wins)
    stored = {sb.binding.port: sb.binding.tenant for sb in b.bindings()}
    assert stored == {w.port: w.tenant for w in wins}
    # meter ids: 4 writers add 20 QoS rules each (meter ids are allocated, smallest free)
    rules = _hammer([a, b], lambda s, k, i: s.add_rule(f"t{k}-1", 10 + i, {"ip_proto": "tcp"},
                                                       kbps=1000), 20)
    assert all(not isinstance(r, Exception) for r in rules), rules
    ids = [r.id for r in b.rules()]
    assert len(ids) == 80 and len(set(ids)) == 80 and set(ids) == {r.id for r in rules}
    assert a.orphans() == 0
    a.close()
    b.close()


def test_a_controller_sees_the_other_ones_writes_through_watch(etcd_server):
    prefix = _prefix()
    a, b = EtcdStore(etcd_server.endpoints(), prefix), EtcdStore(etcd_server.endpoints(), prefix)
    seen: list[int] = []
    changed = threading.Event()
    b.watch(lambda version: (seen.append(version), changed.set()))
    before = b.version
    a.create_tenant("red", vlan=10)
    assert changed.wait(5), "no change event within 5 s"
    assert b.version > before and "red" in {t.name for t in b.tenants()}
    changed.clear()
    a.register_host("h7", {"underlay_ip": "192.168.50.17"}, ttl=5)
    assert changed.wait(5)                   # registrations are changes too
    assert b.registered_hosts() == {"h7": {"underlay_ip": "192.168.50.17"}}
    a.close()
    b.close()


def test_a_registration_expires_with_its_lease(etcd_server):
    s = EtcdStore(etcd_server.endpoints(), _prefix())
    s.register_host("h8", {"underlay_ip": "192.168.50.18"}, ttl=2)
    s.register_host("h8", {"underlay_ip": "192.168.50.18"}, ttl=2)    # a renewal
    assert s.registered_hosts() == {"h8": {"underlay_ip": "192.168.50.18"}}
    deadline = time.monotonic() + 10
    while s.registered_hosts() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert s.registered_hosts() == {}, "the lease did not expire"
    s.close()


def test_url_parsing() -> None:
    assert parse_url("etcd://10.0.0.1:2379,10.0.0.2") == (
        [("10.0.0.1", 2379), ("10.0.0.2", 2379)], "/weft/v1/")
    assert parse_url("etcd://[::1]:2380/lab/x") == ([("::1", 2380)], "/lab/x/")


def test_a_three_member_cluster_keeps_working_with_one_member_killed():
    with etcd_cluster(3) as cluster:
        a = EtcdStore(cluster.endpoints(), "/weft/v1/")
        b = EtcdStore(cluster.endpoints()[::-1], "/weft/v1/")
        seen = threading.Event()
        b.watch(lambda _v: seen.set())
        a.create_tenant("red")
        assert seen.wait(5)
        cluster.members[0].kill()            # the member `a` talks to (and b watches last)
        t0 = time.monotonic()
        a.create_tenant("blue")              # fails over to the next member
        b.bind("h1", "p1", "blue")
        took = time.monotonic() - t0
        assert {t.name for t in b.tenants()} == {"default", "red", "blue"}
        assert [sb.binding.port for sb in a.bindings()] == ["p1"]
        assert took < 10, f"writes took {took:.1f} s after the kill"
        seen.clear()
        cluster.members[2].kill()           # the member b watches: its stream moves on
        with pytest.raises(StoreError):     # 1 of 3 left: no quorum, writes refused (503)
            a.create_tenant("green")
        a.close()
        b.close()


def test_weft_manager_refuses_to_start_on_an_unreachable_etcd(tmp_path):
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(HOSTS)
    r = subprocess.run([sys.executable, "-m", "controller.manager", "--weft-hosts", str(hosts),
                        "--store", "etcd://127.0.0.1:1"], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 2
    assert "no etcd member answers (127.0.0.1:1: connection refused)" in r.stderr, r.stderr
