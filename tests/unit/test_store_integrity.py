"""The store keeps its invariants under races and refuses damaged files (issue 12).

Real SQLite files, real threads, and the real weft-manager for the exit-2 cases.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import uvicorn

from controller.rest.app import create_app
from controller.core import Core
from controller.model import Topology
from controller.store import (SCHEMA_VERSION, Conflict, Invalid, NotFound, Store,
                              StoreFileError, Unavailable)
from cluster.hostsfile import parse

HOSTS = """
controller: {openflow: ["tcp:127.0.0.1:6653"]}
hosts:
  - {name: h1, underlay_ip: 192.168.50.10}
  - {name: h2, underlay_ip: 192.168.50.11}
"""
RACES = 1000


def _race(store: Store, i: int) -> tuple[bool, bool]:
    """One delete-tenant vs bind race; returns (deleted, bound)."""
    name = f"t{i}"
    store.create_tenant(name)
    go = threading.Barrier(2)
    result = {}

    def delete() -> None:
        go.wait()
        try:
            store.delete_tenant(name)
            result["deleted"] = True
        except (Conflict, NotFound):
            result["deleted"] = False

    def bind() -> None:
        go.wait()
        try:
            store.bind("h1", f"p{i}", name)
            result["bound"] = True
        except (NotFound, Conflict):
            result["bound"] = False

    threads = [threading.Thread(target=delete), threading.Thread(target=bind)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return result["deleted"], result["bound"]


def test_1000_delete_vs_bind_races_on_the_store_leave_no_orphan(make_store):
    store = make_store()
    outcomes = [_race(store, i) for i in range(RACES)]
    assert not any(d and b for d, b in outcomes), "a tenant was deleted and bound at once"
    assert store.orphans() == 0
    # what the pipeline builds from the store is valid (an orphan would raise here)
    Core(store, parse(HOSTS)).topology()
    assert make_store().orphans() == 0        # and after a restart


def test_the_schema_refuses_an_orphan_even_from_raw_sql(tmp_path):
    store = Store(tmp_path / "weft.db")
    store.create_tenant("red", vlan=10)
    db = sqlite3.connect(tmp_path / "weft.db", isolation_level=None)
    db.execute("PRAGMA foreign_keys = ON")
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO bindings VALUES ('h1', 'p1', 'ghost', 'access', NULL, 'api', '')")
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO bindings VALUES ('h1', 'p2', NULL, 'trunk', NULL, 'api', "
                   "'red,ghost')")
    store.bind("h1", "t1", None, "trunk", trunk=("red",))
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("DELETE FROM tenants WHERE name = 'red'")


class _Server:
    """The real API on a unix socket, served by uvicorn in a thread."""

    def __init__(self, core: Core, sock: Path) -> None:
        self.server = uvicorn.Server(uvicorn.Config(create_app(core, "tok"), uds=str(sock),
                                                    log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            self.thread.join(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)


def test_1000_delete_vs_bind_races_through_the_api_leave_no_orphan(make_store, tmp_path):
    core = Core(make_store(), parse(HOSTS))
    sock = tmp_path / "api.sock"
    srv = _Server(core, sock)
    both = 0
    try:
        def client() -> httpx.Client:
            return httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)),
                                base_url="http://weft", headers={"Authorization": "Bearer tok"})
        with client() as a, client() as b:
            for i in range(RACES):
                assert a.post("/v1/tenants", json={"name": f"t{i}"}).status_code == 201
                go = threading.Barrier(2)
                codes = {}

                def delete(i: int = i, go: threading.Barrier = go, codes: dict = codes) -> None:
                    go.wait()
                    codes["delete"] = a.delete(f"/v1/tenants/t{i}").status_code

                def bind(i: int = i, go: threading.Barrier = go, codes: dict = codes) -> None:
                    go.wait()
                    codes["bind"] = b.post("/v1/ports", json={"host": "h1", "port": f"p{i}",
                                                              "tenant": f"t{i}"}).status_code
                ts = [threading.Thread(target=delete), threading.Thread(target=bind)]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
                assert max(codes.values()) < 500, codes
                both += codes["delete"] == 200 and codes["bind"] == 201
    finally:
        srv.stop()
    assert both == 0
    assert core.store.orphans() == 0
    assert isinstance(core.topology(), Topology)


# -- damaged or unusable files: one clear line, exit 2, never an empty start ----------
def _manager(tmp_path: Path, db: Path) -> subprocess.CompletedProcess:
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(HOSTS)
    return subprocess.run([sys.executable, "-m", "controller.manager", "--weft-hosts", str(hosts),
                           "--weft-db", str(db), "--wsapi-port", "0",
                           "--ofp-tcp-listen-port", "0"],
                          capture_output=True, text=True, timeout=60)


def _full_store(path: Path, tenants: int = 300) -> None:
    s = Store(path)
    for i in range(tenants):
        s.create_tenant(f"t{i}", description="x" * 200)
    s.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def _assert_refused(res: subprocess.CompletedProcess, *words: str) -> None:
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert all(w in lines[0] for w in words), lines[0]


def test_a_zero_byte_store_is_refused_not_started_empty(tmp_path):
    db = tmp_path / "weft.db"
    db.touch()
    _assert_refused(_manager(tmp_path, db), "weft.db", "0 bytes")
    assert db.stat().st_size == 0                       # and it was not initialised
    with pytest.raises(StoreFileError):
        Store(db)


def test_wal_only_data_is_refused(tmp_path):
    db = tmp_path / "weft.db"
    Path(f"{db}-wal").write_bytes(b"x" * 4096)
    with pytest.raises(StoreFileError, match="WAL"):
        Store(db)
    assert not db.exists()


def test_garbage_in_the_header_is_refused_in_one_line(tmp_path):
    db = tmp_path / "weft.db"
    _full_store(db)
    with open(db, "r+b") as f:
        f.write(b"this is not sqlite at all")
    _assert_refused(_manager(tmp_path, db), "weft.db")


def test_garbage_mid_file_is_refused_at_start(tmp_path):
    db = tmp_path / "weft.db"
    _full_store(db)
    size = db.stat().st_size
    assert size > 8 * 4096
    with open(db, "r+b") as f:
        f.seek(size // 2)
        f.write(os.urandom(4096))
    _assert_refused(_manager(tmp_path, db), "weft.db", "damaged")


def test_a_newer_schema_and_a_foreign_database_are_refused(tmp_path):
    db = tmp_path / "weft.db"
    Store(db).close()
    c = sqlite3.connect(db)
    c.execute("PRAGMA user_version = 99")
    c.commit()
    c.close()
    with pytest.raises(StoreFileError, match="newer"):
        Store(db)
    other = tmp_path / "other.db"
    c = sqlite3.connect(other)
    c.execute("CREATE TABLE photos (id)")
    c.commit()
    c.close()
    with pytest.raises(StoreFileError, match="not a weft"):
        Store(other)


def test_the_first_schema_is_upgraded_and_its_orphans_dropped(tmp_path):
    db = tmp_path / "weft.db"
    c = sqlite3.connect(db)
    c.executescript("""
        CREATE TABLE qos (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, host TEXT,
            port TEXT, tenant TEXT, kbps INTEGER, burst_kb INTEGER NOT NULL DEFAULT 0,
            priority INTEGER, match TEXT, set_dscp INTEGER, queue INTEGER);
        CREATE TABLE tenants (name TEXT PRIMARY KEY, vni INTEGER NOT NULL UNIQUE,
            vlan INTEGER UNIQUE, subnet TEXT, description TEXT NOT NULL DEFAULT '');
        CREATE TABLE bindings (host TEXT NOT NULL, port TEXT NOT NULL, tenant TEXT,
            mode TEXT NOT NULL, mac TEXT, source TEXT NOT NULL DEFAULT 'api',
            trunk TEXT NOT NULL DEFAULT '', PRIMARY KEY (host, port));
        INSERT INTO tenants VALUES ('red', 1000, 10, NULL, '');
        INSERT INTO bindings VALUES ('h1', 'p1', 'red', 'access', NULL, 'api', '');
        INSERT INTO bindings VALUES ('h1', 'p2', 'gone', 'access', NULL, 'api', '');
        INSERT INTO bindings VALUES ('h1', 't1', NULL, 'trunk', NULL, 'api', 'red,gone');
        INSERT INTO qos (kind, host, tenant, kbps) VALUES ('limit', 'h1', 'gone', 1000);
    """)
    c.commit()
    c.close()
    s = Store(db)
    assert [(b.binding.port, b.binding.trunk) for b in s.bindings()] == [("p1", ()),
                                                                        ("t1", ("red",))]
    assert s.limits() == [] and s.orphans() == 0
    Core(s, parse(HOSTS)).topology()



def test_a_schema_4_store_gains_packet_rate_limits_and_keeps_its_kbps_limits(tmp_path):
    db = tmp_path / "weft.db"
    s = Store(db)
    s.create_tenant("red")
    s.bind("h1", "p1", "red")
    s.bind("h1", "p2", "red")
    s.add_limit("h1", 5_000, 1_000, port="p1")
    s.close()
    c = sqlite3.connect(db)                      # what weft with schema 4 left behind
    c.execute("ALTER TABLE qos DROP COLUMN pps")
    c.execute("ALTER TABLE qos DROP COLUMN burst_pkts")
    c.execute("PRAGMA user_version = 4")
    c.commit()
    c.close()
    s = Store(db)
    assert s._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    (old,) = s.limits()
    assert (old.kbps, old.burst_kb, old.pps, old.burst_pkts) == (5_000, 1_000, None, 0)
    new = s.add_limit("h1", None, tenant="red", pps=1_000, burst_pkts=50)
    assert s.limits() == [old, new] and (new.pps, new.burst_pkts, new.kbps) == (1_000, 50, None)
    assert s.update_limit(old.id, pps=2_000).pps == 2_000      # switches the unit
    assert (s.limits()[0].kbps, s.limits()[0].burst_kb) == (None, 0)
    with pytest.raises(Invalid) as e:
        s.add_limit("h1", 1_000, port="p2", pps=1_000)
    assert e.value.field == "pps"
    with pytest.raises(Invalid) as e:
        s.update_limit(new.id, burst_kb=10)
    assert e.value.field == "burst_kb"
    s.close()
    assert Store(db).limits()[1] == new

UNSHARE = shutil.which("unshare")


@pytest.mark.skipif(os.geteuid() != 0 or not UNSHARE, reason="needs root and unshare(1)")
def test_read_only_or_full_storage_is_a_clear_error_at_start_and_503_at_run_time(tmp_path):
    """Real read-only and full mounts (root ignores file modes), in a private mount namespace."""
    data, small = tmp_path / "data", tmp_path / "small"
    data.mkdir()
    small.mkdir()
    _full_store(data / "weft.db", tenants=3)
    hosts = tmp_path / "hosts.yaml"
    hosts.write_text(HOSTS)
    script = tmp_path / "ro.py"
    script.write_text(f"""
import subprocess, sys
from controller.store import Store, Unavailable
for db in ({str(data / 'weft.db')!r}, {str(data / 'fresh' / 'weft.db')!r}):
    r = subprocess.run([sys.executable, "-m", "controller.manager", "--weft-hosts",
                        {str(hosts)!r}, "--weft-db", db, "--wsapi-port", "0"],
                       capture_output=True, text=True)
    print("MANAGER", r.returncode, repr(r.stderr))
s = Store({str(small / 'weft.db')!r})
try:
    for i in range(100000):
        s.create_tenant(f"t{{i}}", description="x" * 1000)
    print("NEVER FULL")
except Unavailable as exc:
    print("FULL", exc.status, exc.message)
""")
    res = subprocess.run([UNSHARE, "-m", "--propagation", "private", "sh", "-c",
                          f"mount --bind {data} {data} && mount -o remount,bind,ro {data} && "
                          # a fresh store with its WAL and shm takes about 270 KB
                          f"mount -t tmpfs -o size=384k tmpfs {small} && "
                          f"{sys.executable} {script}"],
                         capture_output=True, text=True, timeout=120, cwd=os.getcwd())
    managers = [line for line in res.stdout.splitlines() if line.startswith("MANAGER")]
    assert len(managers) == 2, res.stdout + res.stderr
    for line in managers:
        assert line.startswith("MANAGER 2 ") and "Traceback" not in line, line
        assert "read-only" in line.lower() and "weft.db" in line, line
    full = next(line for line in res.stdout.splitlines() if line.startswith(("FULL", "NEVER")))
    assert full.startswith("FULL 503") and "full" in full, full


def test_bad_values_are_refused_by_the_model_naming_the_field(tmp_path):
    s = Store(tmp_path / "w.db")
    for call, field in ((lambda: s.create_tenant("red\n"), "name"),
                        (lambda: s.create_tenant("red", description="\ud800"), "description"),
                        (lambda: s.create_tenant("red", description="x" * 5000), "description"),
                        (lambda: s.bind("h1\n", "p1", "default"), "host"),
                        (lambda: s.bind("h1", "p1\n", "default"), "port")):
        with pytest.raises(Invalid) as e:
            call()
        assert e.value.field == field
    s.create_tenant("red")
    with pytest.raises(Invalid) as e:
        s.update_tenant("red", description=None)
    assert e.value.field == "description"
    for port in ("vx-host2", "gr-h2", "br0"):
        with pytest.raises(Conflict) as c:
            s.bind("h1", port, "red")
        assert c.value.field == "port"
    with pytest.raises(NotFound):
        s.delete_qos("limit", 2 ** 64)
    assert Unavailable.status == 503
