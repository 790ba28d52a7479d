"""REST write latency of a real weft-manager on each store backend.

    python -m weft_lab.store_bench [--writes 300] [--members 1]
    python -m weft_lab.store_bench --bulk 10000
    python -m weft_lab.store_bench --failover 5
    python -m weft_lab.store_bench --ipam 2000

Starts weft-manager on loopback (no switches: the figure is the API and the store, not
OpenFlow) once with a SQLite file and once with `--store etcd://...` on real etcd
members (weft_lab/etcd.py, data on disk like the SQLite file), creates a tenant, then times
sequential `POST /v1/ports` binds and prints p50/p99 for each.  Everything it starts is
stopped by PID; temporary files are removed.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from weft_lab.etcd import etcd_cluster, free_port

HOSTS = """controller: {openflow: ["tcp:127.0.0.1:6653"]}
hosts:
  - {name: h1, underlay_ip: 192.168.50.10}
"""


def _percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


@contextmanager
def manager(store_args: list[str], workdir: Path) -> Iterator[httpx.Client]:
    """A real weft-manager on loopback (API on a free port, no switches), stopped by PID;
    yields a client of its REST API once it answers."""
    hosts = workdir / "hosts.yaml"
    hosts.write_text(HOSTS)
    api_port = free_port()
    log_path = workdir / f"manager-{api_port}.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([sys.executable, "-m", "controller.manager", "--weft-hosts",
                             str(hosts), "--wsapi-port", str(api_port),
                             "--ofp-tcp-listen-port", str(free_port()), *store_args],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10) as c:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if c.get("/v1/health").status_code in (200, 503):
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(log_path.read_text()[-2000:])
                time.sleep(0.2)
            yield c
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


def measure(store_args: list[str], writes: int, workdir: Path) -> dict[str, float]:
    with manager(store_args, workdir) as c:
        assert c.post("/v1/tenants", json={"name": "red"}).status_code == 201
        took = []
        for i in range(writes):
            t0 = time.perf_counter()
            r = c.post("/v1/ports", json={"host": "h1", "port": f"p{i}", "tenant": "red"})
            took.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 201, r.text
    return {"p50_ms": _percentile(took, 0.5), "p99_ms": _percentile(took, 0.99),
            "mean_ms": sum(took) / len(took), "writes": writes}


def bulk(n: int, members: int, on_disk: bool, workdir: Path) -> None:
    """Store level: one bulk bind of ``n`` ports, an import of that model, and (etcd) the
    first read by a second controller and a read when nothing changed."""
    from controller.store import Store
    from controller.store.etcd import EtcdStore
    items = [{"host": f"h{i % 16}", "port": f"p{i}", "tenant": "red",
              "mac": f"02:00:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"}
             for i in range(n)]

    def timed(what: str, fn) -> None:
        t0 = time.perf_counter()
        fn()
        print(f"{what:48} {time.perf_counter() - t0:7.2f} s")
    sqlite = Store(workdir / "bulk.db")
    sqlite.create_tenant("red")
    timed(f"sqlite: bulk bind of {n} ports", lambda: sqlite.bind_many(items))
    model = sqlite.export()
    timed("sqlite: import of that model", lambda: Store(workdir / "b2.db").import_model(model))
    with etcd_cluster(members, on_disk=on_disk) as cluster:
        a = EtcdStore(cluster.endpoints(), "/bulk/", access=cluster.access)
        a.create_tenant("red")
        timed(f"etcd: bulk bind of {n} ports", lambda: a.bind_many(items))
        timed("etcd: import of that model",
              lambda: EtcdStore(cluster.endpoints(), "/b2/",
                                access=cluster.access).import_model(model))
        b = EtcdStore(cluster.endpoints(), "/bulk/", access=cluster.access)
        timed("etcd: first read by another controller", b.tenants)
        timed("etcd: a read when nothing changed", b.tenants)
        a.close()
        b.close()


def failover(runs: int) -> None:
    """3 members; kill -9 the leader, or the follower the store talks to; time the
    first write after the kill (and the read after it)."""
    from controller.store.etcd import EtcdStore

    def leader(cluster):
        with cluster.http() as http:
            for m in cluster.members:
                if m.proc is not None:
                    st = http.post(f"{m.scheme}://{m.endpoint}/v3/maintenance/status",
                                   json={}).json()
                    if st["leader"] == st["header"]["member_id"]:
                        return m
        raise RuntimeError("no leader")
    for kill in ("leader", "follower in use"):
        took = []
        for _ in range(runs):
            with etcd_cluster(3, on_disk=True) as cluster:
                store = EtcdStore(cluster.endpoints(), "/f/", access=cluster.access)
                store.create_tenant("red")
                lead = leader(cluster)
                victim = lead if kill == "leader" else next(m for m in cluster.members
                                                            if m is not lead)
                store._etcd._current = cluster.members.index(victim)   # it talks to the victim
                victim.kill()
                t0 = time.perf_counter()
                store.create_tenant("blue")
                took.append(time.perf_counter() - t0)
                store.close()
        print(f"kill -9 the {kill:16} first write after it: "
              f"{', '.join(f'{t:.2f}' for t in took)} s")


def ipam_rates(n: int, store_args: list[str], workdir: Path) -> dict[str, float]:
    """Cluster-wide IPAM through a real weft-manager: ``n`` allocations by the plugin's
    own code (ovs_agent.dockerplugin, its HTTP client of the controller's IPAM; state in
    memory instead of br0) from a /16, claiming a /26 block every 64; then bare block
    claims and --ip address claims over REST, each per second."""
    from cluster.hostsfile import parse
    from ovs_agent.dockerplugin import GATEWAY_REQUEST, GENERIC, Plugin
    from ovs_agent.pluginserver import OvsDataplane

    class MemoryDataplane(OvsDataplane):
        def __init__(self, url: str) -> None:
            super().__init__(None, parse(HOSTS.replace(
                "controller: {", f'controller: {{api: "{url}", ')), "h1", 1450)
            self.state: dict[str, str] = {}

        def load(self) -> dict[str, str]:
            return dict(self.state)

        def save(self, put: dict[str, str], delete: list[str]) -> None:
            self.state.update(put)
            for k in delete:
                self.state.pop(k, None)

        def segment(self, name):    # type: ignore[no-untyped-def]
            return None

        def in_use(self, network_ids):  # type: ignore[no-untyped-def]
            return None             # no dockerd here: nothing is reclaimed

    with manager(store_args, workdir) as c:
        assert c.post("/v1/tenants", json={"name": "red", "subnet": "10.0.0.0/16"}
                      ).status_code == 201
        assert c.post("/v1/tenants", json={"name": "blue", "subnet": "10.1.0.0/16"}
                      ).status_code == 201
        url = str(c.base_url).rstrip("/")
        p = Plugin(MemoryDataplane(url), host="h1")
        pool = p.handle("/IpamDriver.RequestPool", {"Pool": "10.0.0.0/16"})["PoolID"]
        p.handle("/IpamDriver.RequestAddress", {"PoolID": pool, "Options": {
            "RequestAddressType": GATEWAY_REQUEST}})
        p.handle("/NetworkDriver.CreateNetwork", {
            "NetworkID": "n", "Options": {GENERIC: {"tenant": "red"}},
            "IPv4Data": [{"Pool": "10.0.0.0/16", "Gateway": "10.0.0.1/16"}]})
        t0 = time.perf_counter()
        for _ in range(n):
            r = p.handle("/IpamDriver.RequestAddress", {"PoolID": pool, "Options": {}})
            assert "Address" in r, r
        alloc = n / (time.perf_counter() - t0)
        k = max(1, n // 64)
        t0 = time.perf_counter()
        for i in range(k):
            resp = c.post("/v1/networks/blue/ipam/blocks", json={"host": f"h{i % 8}"})
            assert resp.status_code == 201, resp.text
        claims = k / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(k):
            resp = c.post("/v1/networks/blue/ipam/addresses",
                          json={"host": "h9", "address": f"10.1.255.{i % 250 + 1}"})
            assert resp.status_code == 201, resp.text
        singles = k / (time.perf_counter() - t0)
    return {"allocations_per_s": alloc, "block_claims_per_s": claims,
            "address_claims_per_s": singles, "n": n, "k": k}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m weft_lab.store_bench")
    ap.add_argument("--writes", type=int, default=300)
    ap.add_argument("--members", type=int, default=1, help="etcd cluster size")
    ap.add_argument("--etcd-in-memory", action="store_true",
                    help="etcd data in /dev/shm (default: on disk, as SQLite's file)")
    ap.add_argument("--bulk", type=int, default=0, metavar="N",
                    help="instead: store-level bulk bind / import / read of N ports")
    ap.add_argument("--ipam", type=int, default=0, metavar="N",
                    help="instead: N plugin allocations and N/64 block and address claims "
                         "per second, SQLite and etcd")
    ap.add_argument("--failover", type=int, default=0, metavar="RUNS",
                    help="instead: the first write after killing an etcd member, RUNS times")
    args = ap.parse_args(argv)
    if args.failover:
        failover(args.failover)
        return 0
    if args.ipam:
        with tempfile.TemporaryDirectory(prefix="weft-store-bench-", dir="/var/tmp") as tmp:
            work = Path(tmp)
            rates = {"sqlite": ipam_rates(args.ipam, ["--weft-db", str(work / "w.db")], work)}
            with etcd_cluster(args.members, on_disk=not args.etcd_in_memory) as cluster:
                rates["etcd"] = ipam_rates(args.ipam, cluster.manager_args(), work)
        for name, r in rates.items():
            print(f"{name:7} {r['n']} plugin allocations: {r['allocations_per_s']:.0f}/s; "
                  f"{r['k']} block claims {r['block_claims_per_s']:.0f}/s, "
                  f"{r['k']} address claims {r['address_claims_per_s']:.0f}/s")
        s, e = rates["sqlite"], rates["etcd"]
        print("etcd/sqlite: allocations {:.2f}, block claims {:.2f}, address claims {:.2f}"
              .format(e["allocations_per_s"] / s["allocations_per_s"],
                      e["block_claims_per_s"] / s["block_claims_per_s"],
                      e["address_claims_per_s"] / s["address_claims_per_s"]))
        return 0
    if args.bulk:
        with tempfile.TemporaryDirectory(prefix="weft-store-bench-", dir="/var/tmp") as tmp:
            bulk(args.bulk, args.members, not args.etcd_in_memory, Path(tmp))
        return 0
    with tempfile.TemporaryDirectory(prefix="weft-store-bench-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        results = {"sqlite": measure(["--weft-db", str(work / "weft.db")], args.writes, work)}
        members = f"{args.members} member{'s' if args.members > 1 else ''}"
        # the cost of TLS and authentication: the same writes on a clear-text cluster
        for secure in (True, False):
            with etcd_cluster(args.members, on_disk=not args.etcd_in_memory,
                              secure=secure) as cluster:
                results[f"etcd ({members}, {'TLS+auth' if secure else 'clear'})"] = \
                    measure(cluster.manager_args(), args.writes, work)
    for name, r in results.items():
        print(f"{name:30} POST /v1/ports x{r['writes']}: p50 {r['p50_ms']:.1f} ms, "
              f"p99 {r['p99_ms']:.1f} ms, mean {r['mean_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
