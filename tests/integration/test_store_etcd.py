"""The etcd backend against real etcd members on loopback (weft_lab/etcd.py): concurrent
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
from controller.store.etcd import EtcdStore, parse_url
from weft_lab.etcd import etcd_cluster

HOSTS = """
controller: {openflow: ["tcp:127.0.0.1:6653"]}
hosts:
  - {name: h1, underlay_ip: 192.168.50.10}
"""


def _prefix() -> str:
    return f"/it-{secrets.token_hex(6)}/"


def _open(server, prefix: str) -> EtcdStore:
    """A controller's store on the (TLS + auth) test cluster."""
    return EtcdStore(server.endpoints(), prefix, access=server.access)


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
    a, b = _open(etcd_server, prefix), _open(etcd_server, prefix)
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
    a, b = _open(etcd_server, prefix), _open(etcd_server, prefix)
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
    s = _open(etcd_server, _prefix())
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
        a = EtcdStore(cluster.endpoints(), "/weft/v1/", access=cluster.access)
        b = EtcdStore(cluster.endpoints()[::-1], "/weft/v1/", access=cluster.access)
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
                        "--store", "etcd://127.0.0.1:1", "--etcd-insecure"],
                       capture_output=True, text=True,
                       timeout=60, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 2
    assert "no etcd member answers (127.0.0.1:1: connection refused)" in r.stderr, r.stderr


def _outcome(step, store):
    try:
        return ("ok", repr(step(store)))
    except StoreError as exc:
        return (type(exc).__name__, exc.field, exc.message)


SCRIPT = [
    lambda s: s.create_tenant("red", vlan=100),
    lambda s: s.create_tenant("red"),                           # exists
    lambda s: s.create_tenant("Bad name"),                      # name pattern
    lambda s: s.create_tenant("blue", vni=1000),                # VNI taken
    lambda s: s.create_tenant("blue", vlan=100),                # VLAN taken
    lambda s: s.create_tenant("blue", vni=12),                  # VNI range
    lambda s: s.create_tenant("blue", subnet="10.0.0.0/33"),
    lambda s: s.create_tenant("blue", vlan=200, subnet="10.2.0.0/24"),
    lambda s: s.create_tenant("big", vni=70000),
    lambda s: s.update_tenant("default", vlan=5),
    lambda s: s.update_tenant("red", vni=5),
    lambda s: s.update_tenant("ghost", vlan=5),
    lambda s: s.bind("h1", "p1", "red", mac="02:00:00:00:00:01"),
    lambda s: s.bind("h1", "p1", "blue"),                       # bound elsewhere
    lambda s: s.bind("h1", "p2", "red", mac="02:00:00:00:00:01"),   # MAC in the tenant
    lambda s: s.bind("h1", "vx-h2", "red"),                     # the agent's port
    lambda s: s.bind("h1", "p3", "ghost"),
    lambda s: s.bind("h1", "t1", None, "trunk", trunk=("red", "big")),   # big: no VLAN
    lambda s: s.bind("h1", "t1", "big", "trunk", trunk=("red", "blue")),
    lambda s: s.update_tenant("red", vlan=None),                # carried on a trunk
    lambda s: s.bind("h1", "p9", "red", replace=True),          # not bound
    lambda s: s.bind_many([{"host": "h2", "port": "q1", "tenant": "red"},
                           {"host": "h2", "port": "q1", "tenant": "red"}]),
    lambda s: s.bind_many([{"host": "h2", "port": "q1", "tenant": "red"},
                           {"host": "h2", "port": "q2", "tenant": "red",
                            "mac": "02:00:00:00:00:01"}]),
    lambda s: s.add_limit("h1", 1000, port="p1"),
    lambda s: s.add_limit("h1", 1000, port="p1"),               # already limited
    lambda s: s.add_limit("h1", 1000, port="nope"),
    lambda s: s.add_limit("h1", 1000, port="p1", tenant="red"),
    lambda s: s.add_limit("h1", 0, tenant="red"),
    lambda s: s.add_rule("red", 5, {"ip_proto": "tcp"}, kbps=100),
    lambda s: s.add_rule("red", 5, {"ip_proto": "udp"}, kbps=100),
    lambda s: s.add_rule("red", 6, {"bogus": 1}, kbps=100),
    lambda s: s.update_limit(99, kbps=5),
    lambda s: s.delete_qos("rule", 1),                          # 1 is a limit
    lambda s: s.set_acl_default("big", "deny"),                 # VNI beyond the zones
    lambda s: s.set_acl_default("red", "maybe"),
    lambda s: s.add_acl("red", 10, "allow", ip_proto="tcp", port=22),
    lambda s: s.add_acl("red", 10, "drop"),
    lambda s: s.add_acl("red", 11, "allow", remote="10.0.0.0/99"),
    lambda s: s.update_acl("red", 1, colour="blue"),
    lambda s: s.delete_acl("red", 7),
    lambda s: s.unbind("h1", "nope"),
    lambda s: s.delete_tenant("red"),                           # in use
    lambda s: s.delete_tenant("red", force=True),
    lambda s: s.delete_tenant("default"),
    lambda s: (s.tenants(), s.bindings(), s.limits(), s.rules(), s.acls(), s.acl_deny()),
]


def test_both_backends_answer_every_request_alike(etcd_server, tmp_path):
    """The checks live in StoreBase only: SQLite and etcd give the same result, or the same
    refusal (class, field and message), for every request of a script of 45."""
    from controller.store import Store
    sqlite, etcd = Store(tmp_path / "w.db"), _open(etcd_server, _prefix())
    outcomes = []
    for i, step in enumerate(SCRIPT):
        outcomes.append(_outcome(step, sqlite))
        assert outcomes[-1] == _outcome(step, etcd), f"step {i}"
    assert sum(1 for o in outcomes if o[0] != "ok") > 25     # most of the script is refused
    etcd.close()


def test_a_registration_renewed_through_either_controller_stays(etcd_server):
    """A host renews through controller a, then b, then a again: the key must stay on a
    lease someone renews (a's old lease must not be trusted once b re-put the key)."""
    prefix = _prefix()
    a, b = _open(etcd_server, prefix), _open(etcd_server, prefix)
    data = {"underlay_ip": "192.168.50.20"}
    a.register_host("h1", data, ttl=2)
    b.register_host("h1", data, ttl=2)
    for _ in range(8):                      # 4 s of renewals, every 0.5 s, through a only
        a.register_host("h1", data, ttl=2)
        time.sleep(0.5)
    assert b.registered_hosts() == {"h1": data}
    a.close()
    b.close()


def test_two_weft_managers_on_one_etcd_serve_one_model(etcd_server, tmp_path):
    """Real weft-manager processes (`--store etcd://...`, loopback, no switches): a write
    through either API is read through the other; concurrent creates through both get
    distinct VNIs; both export the same model."""
    from weft_lab.store_bench import manager
    args = etcd_server.manager_args(etcd_server.url + _prefix())
    with manager(args, tmp_path) as a, manager(args, tmp_path) as b:
        assert a.post("/v1/tenants", json={"name": "red", "vlan": 10}).status_code == 201
        assert b.get("/v1/tenants/red").json()["vlan"] == 10
        assert b.post("/v1/tenants", json={"name": "red"}).status_code == 409
        results: list = []

        def create(client, names):
            results.extend(client.post("/v1/tenants", json={"name": n}).json() for n in names)
        threads = [threading.Thread(target=create, args=(c, [f"{tag}{i}" for i in range(15)]))
                   for c, tag in ((a, "a"), (b, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        vnis = [r["vni"] for r in results]
        assert len(vnis) == 30 and len(set(vnis)) == 30
        assert a.get("/v1/export").json() == b.get("/v1/export").json()
        assert len(b.get("/v1/export").json()["tenants"]) == 31


def test_two_controllers_claiming_blocks_at_once_never_share_one(etcd_server):
    """Cluster-wide IPAM (schema 9): 4 writers in 2 controllers claim blocks of one /21
    for 4 hosts at once, then --ip addresses; every block is held by one host only."""
    prefix = _prefix()
    a = EtcdStore(etcd_server.endpoints(), prefix, access=etcd_server.access)
    b = EtcdStore(etcd_server.endpoints(), prefix, access=etcd_server.access)
    a.create_tenant("red", subnet="10.10.0.0/21")
    got = _hammer([a, b], lambda s, k, i: s.claim_block("red", f"h{k}")[0], 5)
    assert all(not isinstance(r, Exception) for r in got), got
    assert len({c.cidr for c in got}) == 20
    claims = b.ipam_claims("red")
    assert sorted(claims) == sorted(got)
    nets = [c.net for c in claims]
    assert not any(x.overlaps(y) for i, x in enumerate(nets) for y in nets[i + 1:])
    # the same free address asked by 4 hosts at once: one gets it, 3 are told who has it
    out = _hammer([a, b], lambda s, k, i: s.claim_address("red", f"h{k}", "10.10.7.250"), 1)
    winners = [r for r in out if not isinstance(r, Exception)]
    assert len(winners) == 1, out
    assert all(isinstance(r, Conflict) and f"held by host {winners[0].host}" in r.message
               for r in out if r not in winners)
    a.close()
    b.close()
