"""Tenants and port bindings, persisted in SQLite.

Every write validates first and runs in one transaction, so a refused request
changes nothing.  Errors are typed (NotFound, Conflict, Invalid) with the
offending field, and the REST layer maps them to 404/409/422.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import replace as replace_
from pathlib import Path
from typing import Any, Callable, TypeVar

from controller.model import (ACCESS, DEFAULT_TENANT, HOST_NAME_PATTERN, MAX_ACL_PRIORITY,
                              MAX_ACL_ZONE_VNI, MAX_VNI, TRUNK, AclRule, Binding, ModelError,
                              QosRule, RateLimit, Tenant, check_bindable_port)
from controller.model import check_name as _model_check_name
from controller.operator import OperatorFlow

LOG = logging.getLogger("weft.store")
FIRST_AUTO_VNI = 1000
SCHEMA_VERSION = 6          # PRAGMA user_version; 0 is the first, unversioned schema
# 3: port_addresses (port security), created by SCHEMA itself: no data to move
# 4: tenant ACLs (acl_rules, acl_policy) and operator flows (operator_flows): new tables
#    only, created by the idempotent SCHEMA
# 5: packet-rate limits: qos.pps and qos.burst_pkts, added to an older qos table by
#    _add_columns (ALTER TABLE ... ADD COLUMN; existing rows stay kbit/s limits)
# 6: meta (the store epoch), a new table created by SCHEMA; the epoch row is written when
#    the store is opened and has none (a new store, or one upgraded from schema 5)

# Invariants live in the database, so no interleaving of writers can break them:
# a binding or QoS entry names an existing tenant (foreign keys), a trunk lists only
# existing tenants (triggers), and values stay in the ranges OpenFlow and VXLAN take.
# The built-in default tenant has a row so that bindings can refer to it.
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 32),
    vni INTEGER NOT NULL UNIQUE CHECK (vni BETWEEN 1 AND {MAX_VNI}),
    vlan INTEGER UNIQUE CHECK (vlan IS NULL OR vlan BETWEEN 1 AND 4094),
    subnet TEXT,
    description TEXT NOT NULL DEFAULT ''
);
INSERT OR IGNORE INTO tenants (name, vni) VALUES ('{DEFAULT_TENANT.name}', {DEFAULT_TENANT.vni});
CREATE TABLE IF NOT EXISTS bindings (
    host TEXT NOT NULL,
    port TEXT NOT NULL,
    tenant TEXT REFERENCES tenants(name),   -- access tenant, or a trunk's native (may be NULL)
    mode TEXT NOT NULL CHECK (mode IN ('{ACCESS}', '{TRUNK}')),
    mac TEXT,
    source TEXT NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'agent')),
    trunk TEXT NOT NULL DEFAULT '', -- trunk: tenants carried tagged, comma-separated
    PRIMARY KEY (host, port),
    CHECK (mode = '{TRUNK}' OR (tenant IS NOT NULL AND trunk = '')),
    CHECK (mode = '{ACCESS}' OR tenant IS NOT NULL OR trunk != '')
);
CREATE TABLE IF NOT EXISTS qos (
    id INTEGER PRIMARY KEY AUTOINCREMENT CHECK (id BETWEEN 1 AND 65535),  -- the meter id
    kind TEXT NOT NULL CHECK (kind IN ('limit', 'rule')),
    host TEXT,                             -- limit: its host
    port TEXT,                             -- limit: a bound port (traffic it sends)...
    tenant TEXT REFERENCES tenants(name),  -- ...or the tenant's aggregate; rule: its tenant
    kbps INTEGER,
    burst_kb INTEGER NOT NULL DEFAULT 0,
    priority INTEGER,                      -- rule only
    match TEXT,                            -- rule only: JSON object
    set_dscp INTEGER,                      -- rule only
    queue INTEGER,                         -- rule only
    pps INTEGER,                           -- limit: packets/s instead of kbps (schema 5)
    burst_pkts INTEGER NOT NULL DEFAULT 0  -- limit with pps: bucket in packets (schema 5)
);
CREATE TABLE IF NOT EXISTS acl_rules (
    id INTEGER PRIMARY KEY AUTOINCREMENT CHECK (id BETWEEN 1 AND 4294967295),  -- in the cookie
    tenant TEXT NOT NULL REFERENCES tenants(name),
    priority INTEGER NOT NULL CHECK (priority BETWEEN 1 AND {MAX_ACL_PRIORITY}),
    action TEXT NOT NULL CHECK (action IN ('allow', 'drop')),
    direction TEXT NOT NULL CHECK (direction IN ('ingress', 'egress')),
    ip_proto TEXT,                         -- JSON: "tcp"/"udp"/"icmp" or a number
    remote TEXT,
    local TEXT,
    port INTEGER,
    icmp_type INTEGER,
    description TEXT NOT NULL DEFAULT '',
    UNIQUE (tenant, priority)
);
CREATE TABLE IF NOT EXISTS acl_policy (
    tenant TEXT PRIMARY KEY REFERENCES tenants(name),
    default_action TEXT NOT NULL CHECK (default_action IN ('allow', 'deny'))
);
CREATE TABLE IF NOT EXISTS operator_flows (
    id INTEGER PRIMARY KEY AUTOINCREMENT CHECK (id BETWEEN 1 AND 4294967295),  -- in the cookie
    dpid INTEGER NOT NULL,
    table_id INTEGER NOT NULL CHECK (table_id BETWEEN 0 AND 253),
    priority INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 65535),
    match TEXT NOT NULL,                   -- JSON object, ofctl field names
    actions TEXT NOT NULL,                 -- JSON list, ofctl actions
    override INTEGER NOT NULL DEFAULT 0,
    description TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS bindings_tenant ON bindings(tenant);
CREATE INDEX IF NOT EXISTS qos_tenant ON qos(tenant);
CREATE TRIGGER IF NOT EXISTS trunk_tenants_exist_insert BEFORE INSERT ON bindings
WHEN NEW.trunk != '' BEGIN
    SELECT RAISE(ABORT, 'trunk names an unknown tenant') WHERE
        (SELECT COUNT(*) FROM tenants
         WHERE instr(',' || NEW.trunk || ',', ',' || name || ',') > 0)
        != length(NEW.trunk) - length(replace(NEW.trunk, ',', '')) + 1;
END;
CREATE TRIGGER IF NOT EXISTS trunk_tenants_exist_update BEFORE UPDATE OF trunk ON bindings
WHEN NEW.trunk != '' BEGIN
    SELECT RAISE(ABORT, 'trunk names an unknown tenant') WHERE
        (SELECT COUNT(*) FROM tenants
         WHERE instr(',' || NEW.trunk || ',', ',' || name || ',') > 0)
        != length(NEW.trunk) - length(replace(NEW.trunk, ',', '')) + 1;
END;
CREATE TRIGGER IF NOT EXISTS tenant_not_on_a_trunk BEFORE DELETE ON tenants BEGIN
    SELECT RAISE(ABORT, 'tenant is carried on a trunk') WHERE EXISTS (
        SELECT 1 FROM bindings WHERE instr(',' || trunk || ',', ',' || OLD.name || ',') > 0);
END;
-- port security addresses of a binding (schema 3; a table of its own, so a port that
-- is unbound loses them with its row)
CREATE TABLE IF NOT EXISTS port_addresses (
    host TEXT NOT NULL,
    port TEXT NOT NULL,
    ips TEXT NOT NULL DEFAULT '[]',             -- JSON list of IPv4 addresses/CIDRs
    address_pairs TEXT NOT NULL DEFAULT '[]',   -- JSON list of [ip, mac or null]
    PRIMARY KEY (host, port)
);
CREATE TRIGGER IF NOT EXISTS port_addresses_unbind AFTER DELETE ON bindings BEGIN
    DELETE FROM port_addresses WHERE host = old.host AND port = old.port;
END;
-- the store's own facts (schema 6): 'epoch', a random id made when the store is
-- initialised and kept for its life (switches carry it; the sync engine compares)
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
PRAGMA user_version = {SCHEMA_VERSION};
"""
_TABLES = {"tenants", "bindings", "qos"}          # the tables of schema 0 (upgraded from)
_V0_TABLES = tuple(sorted(_TABLES))
_KNOWN_TABLES = _TABLES | {"port_addresses", "acl_rules", "acl_policy", "operator_flows", "meta"}


class StoreError(Exception):
    status = 400

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field, self.message = field, message


class NotFound(StoreError):
    status = 404


class Conflict(StoreError):
    status = 409


class Invalid(StoreError):
    status = 422


class Unavailable(StoreError):
    """The storage cannot serve the request now (read-only, full, damaged): 503."""
    status = 503


class StoreFileError(Exception):
    """The database file cannot be used at all; weft-manager prints it and exits 2."""


@dataclass(frozen=True)
class StoredBinding:
    binding: Binding
    source: str             # "api" (REST/weftctl) or "agent" (ovs-agent attach)


def check_name(name: str, field: str = "name") -> str:
    try:
        return _model_check_name(name, field)
    except ModelError as exc:
        raise Invalid(exc.field, exc.message) from None


def _check_host(host: object) -> str:
    try:
        return _model_check_name(host, "host", HOST_NAME_PATTERN, "host name")
    except ModelError as exc:
        raise Invalid(exc.field, exc.message) from None


T = TypeVar("T")


def _translate(exc: sqlite3.Error, path: str) -> StoreError:
    """SQLite's errors as the API's: a broken invariant is a conflict, storage trouble 503."""
    msg = str(exc)
    if isinstance(exc, sqlite3.IntegrityError):
        field = "tenant" if "FOREIGN KEY" in msg or "unknown tenant" in msg else "name"
        if "trunk" in msg:
            field = "trunk" if "unknown" in msg else "name"
        return Conflict(field, f"refused by the store: {msg} (changed concurrently?)")
    if "readonly" in msg or "read-only" in msg:
        return Unavailable("store", f"the state database {path} is read-only: {msg}")
    return Unavailable("store", f"the state database {path} cannot be used: {msg}")


def _open_checked(path: str | Path) -> sqlite3.Connection:
    """Open the file only if it is a sound weft store (or absent); never start empty over data.

    Raises StoreFileError with one line saying what is wrong and what to do.
    """
    where = str(path)
    if where != ":memory:":
        p = Path(path)
        wal = Path(f"{p}-wal")
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreFileError(f"{where}: cannot create its directory: {exc.strerror}") from None
        if p.exists() and p.stat().st_size == 0:
            wal_note = " but a WAL file holds data" if wal.exists() and wal.stat().st_size else ""
            raise StoreFileError(
                f"{where}: the file is empty (0 bytes){wal_note}; "
                "a store that held state was truncated: restore it from a backup, or remove "
                "the file to start an empty cluster")
        if not p.exists() and wal.exists() and wal.stat().st_size:
            raise StoreFileError(f"{where}: the database file is missing but {wal} holds data; "
                                 "restore the file, or remove the WAL to start empty")
        if p.is_dir():
            raise StoreFileError(f"{where}: is a directory, not a database file")
    try:
        db = sqlite3.connect(where, check_same_thread=False, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreFileError(f"{where}: cannot open the state database: {exc}") from None
    try:
        db.execute("PRAGMA foreign_keys = ON")
        check = db.execute("PRAGMA integrity_check").fetchall()
        if check != [("ok",)]:
            raise StoreFileError(f"{where}: the state database is damaged (integrity_check: "
                                 f"{str(check[0][0])[:120]}); restore it from a backup")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                           "AND name NOT LIKE 'sqlite_%'")}
        if version > SCHEMA_VERSION:
            raise StoreFileError(f"{where}: written by a newer weft (schema {version}, this one "
                                 f"knows {SCHEMA_VERSION}); upgrade weft")
        if tables - _KNOWN_TABLES:
            raise StoreFileError(f"{where}: not a weft state database (tables: "
                                 f"{', '.join(sorted(tables))[:120]})")
        if where != ":memory:":
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StoreFileError(f"{where}: cannot use WAL journaling ({mode}); is the "
                                     "directory writable?")
        # Upgrades run in order, each in its own transaction; a new column or table
        # gets SCHEMA_VERSION + 1 and a step here (ALTER TABLE ... ADD COLUMN ...).
        if version == 0 and tables:
            _migrate_from_v0(db)
        elif version < 5 and "qos" in tables:
            _add_columns(db, "qos", _QOS_V5_COLUMNS)
        db.executescript(SCHEMA)           # idempotent: IF NOT EXISTS everywhere
        # INSERT OR IGNORE: a store keeps its first epoch for its whole life
        db.execute("INSERT OR IGNORE INTO meta VALUES ('epoch', ?)", (new_epoch(),))
        db.execute("BEGIN IMMEDIATE")      # can we write at all?  Say so now, not at the first POST
        db.execute("ROLLBACK")
    except StoreFileError:
        db.close()
        raise
    except sqlite3.Error as exc:
        db.close()
        msg = str(exc)
        hint = ("the file or its directory is read-only" if "readonly" in msg or
                "unable to open" in msg else "the file is damaged or not a database"
                if "not a database" in msg or "malformed" in msg else "")
        raise StoreFileError(f"{where}: cannot use the state database: {msg}"
                             + (f" ({hint})" if hint else "")) from None
    return db


def new_epoch() -> str:
    """A fresh store epoch: 128 random bits as 32 hex digits."""
    return uuid.uuid4().hex


def _migrate_from_v0(db: sqlite3.Connection) -> None:
    """The first schema had no foreign keys: copy into the checked tables, dropping orphans."""
    db.execute("BEGIN IMMEDIATE")
    try:
        for t in _V0_TABLES:
            db.execute(f"ALTER TABLE {t} RENAME TO old_{t}")
        for stmt in _statements(SCHEMA):
            db.execute(stmt)
        db.execute("INSERT INTO tenants SELECT * FROM old_tenants WHERE name != ?",
                   (DEFAULT_TENANT.name,))
        names = {r[0] for r in db.execute("SELECT name FROM tenants")}
        for row in db.execute("SELECT host, port, tenant, mode, mac, source, trunk "
                              "FROM old_bindings").fetchall():
            host, port, tenant, mode, mac, source, trunk = row
            kept = ",".join(t for t in trunk.split(",") if t in names)
            if (tenant is not None and tenant not in names) or kept != trunk:
                LOG.warning("store upgrade: binding %s/%s named a deleted tenant (%s); %s",
                            host, port, tenant if tenant not in names else trunk,
                            "dropped" if mode == ACCESS else "tenant removed from it")
                if mode == ACCESS:
                    continue
                tenant = tenant if tenant in names else None
                if tenant is None and not kept:
                    continue
            db.execute("INSERT INTO bindings (host, port, tenant, mode, mac, source, trunk) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", (host, port, tenant, mode, mac, source, kept))
        for row in db.execute("SELECT * FROM old_qos").fetchall():
            if row[4] is not None and row[4] not in names:
                LOG.warning("store upgrade: QoS %s %d named a deleted tenant: dropped",
                            row[1], row[0])
                continue
            db.execute("INSERT INTO qos (id, kind, host, port, tenant, kbps, burst_kb, priority, "
                       "match, set_dscp, queue) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        for t in _V0_TABLES:
            db.execute(f"DROP TABLE old_{t}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


_QOS_V5_COLUMNS = (("pps", "INTEGER"), ("burst_pkts", "INTEGER NOT NULL DEFAULT 0"))


def _add_columns(db: sqlite3.Connection, table: str,
                 columns: tuple[tuple[str, str], ...]) -> None:
    """Add the columns a newer schema has to an older table, in one transaction
    (idempotent: a column already there is left alone)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
        for name, decl in columns:
            if name not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _statements(script: str) -> list[str]:
    """Split SCHEMA into statements (triggers hold ';' inside BEGIN ... END)."""
    out, cur = [], ""
    for line in script.splitlines(keepends=True):
        cur += line
        if sqlite3.complete_statement(cur):
            out.append(cur.strip())
            cur = ""
    return [s for s in out if s]


class Store:
    """The controller's state; thread-safe (REST threads and the OpenFlow thread share it)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = _open_checked(path)
        self._lock = threading.RLock()
        self.version = 0            # bumped on every committed change

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def epoch(self) -> str:
        """The random id made when this store was initialised, kept for its life (a
        restore by `weftctl import` brings the exported one back).  Switches carry it, so
        a controller can tell "my store wrote these flows" from "a different store did"."""
        return self._read(lambda: self._db.execute(
            "SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0])

    def _read(self, fn: Callable[[], T]) -> T:
        with self._lock:
            try:
                return fn()
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from None

    # -- reads ---------------------------------------------------------------
    def tenants(self) -> list[Tenant]:
        rows = self._read(lambda: self._db.execute(
            "SELECT name, vni, vlan, subnet, description FROM tenants WHERE name != ? "
            "ORDER BY name", (DEFAULT_TENANT.name,)).fetchall())
        return [DEFAULT_TENANT] + [Tenant(*r) for r in rows]

    def tenant(self, name: str) -> Tenant:
        for t in self.tenants():
            if t.name == name:
                return t
        raise NotFound("name", f"no tenant {str(name)[:40]!r}")

    def count_bindings(self) -> int:
        return self._read(lambda: self._db.execute("SELECT COUNT(*) FROM bindings").fetchone()[0])

    def bindings(self, host: str | None = None, tenant: str | None = None) -> list[StoredBinding]:
        q = ("SELECT b.host, b.port, tenant, mode, mac, source, trunk, a.ips, a.address_pairs "
             "FROM bindings b LEFT JOIN port_addresses a ON a.host = b.host AND a.port = b.port "
             "WHERE 1=1")
        args: list[str] = []
        if host:
            q, args = q + " AND b.host = ?", args + [host]
        rows = self._read(lambda: self._db.execute(q + " ORDER BY b.host, b.port",
                                                   args).fetchall())
        out = [StoredBinding(Binding(h, p, t, m, mac, tuple(filter(None, tr.split(","))),
                                     ips=tuple(json.loads(ips or "[]")),
                                     allowed_address_pairs=tuple(
                                         tuple(x) for x in json.loads(pairs or "[]"))), s)
               for h, p, t, m, mac, s, tr, ips, pairs in rows]
        return [sb for sb in out if tenant is None or tenant in sb.binding.tenants]

    def orphans(self) -> int:
        """Rows naming a tenant that does not exist (the schema makes this 0; tests check it)."""
        return self._read(lambda: self._db.execute(
            "SELECT (SELECT COUNT(*) FROM bindings WHERE tenant IS NOT NULL AND tenant NOT IN "
            "(SELECT name FROM tenants)) + (SELECT COUNT(*) FROM bindings b WHERE trunk != '' "
            "AND (SELECT COUNT(*) FROM tenants WHERE instr(',' || b.trunk || ',', ',' || name "
            "|| ',') > 0) != length(trunk) - length(replace(trunk, ',', '')) + 1) + "
            "(SELECT COUNT(*) FROM qos WHERE tenant IS NOT NULL AND tenant NOT IN "
            "(SELECT name FROM tenants)) + (SELECT COUNT(*) FROM acl_rules WHERE tenant NOT IN "
            "(SELECT name FROM tenants))").fetchone()[0])

    # -- tenant writes ----------------------------------------------------------
    def create_tenant(self, name: str, vni: int | None = None, vlan: int | None = None,
                      subnet: str | None = None, description: str = "") -> Tenant:
        check_name(name)
        subnet = _check_subnet(subnet)
        _check_vlan(vlan)
        if vni is not None and (isinstance(vni, bool) or not isinstance(vni, int)
                                or not FIRST_AUTO_VNI <= vni <= MAX_VNI):
            raise Invalid("vni", f"vni must be in {FIRST_AUTO_VNI}..{MAX_VNI}")
        _model(lambda: Tenant(name, vni or FIRST_AUTO_VNI, vlan, subnet, description or ""),
               "name")
        with self._lock, self._tx():
            if self._db.execute("SELECT 1 FROM tenants WHERE name = ?", (name,)).fetchone() \
                    or name == DEFAULT_TENANT.name:
                raise Conflict("name", f"tenant {name!r} already exists")
            if vni is None:
                vni = self._free_vni()
            self._check_unique("vni", vni, name)
            self._check_unique("vlan", vlan, name)
            self._db.execute("INSERT INTO tenants VALUES (?, ?, ?, ?, ?)",
                             (name, vni, vlan, subnet, description or ""))
        return self.tenant(name)

    def update_tenant(self, name: str, **changes: Any) -> Tenant:
        """Change vlan, subnet or description (the VNI is the tenant's identity)."""
        if name == DEFAULT_TENANT.name:
            raise Conflict("name", "the default tenant is built in and cannot be changed")
        unknown = set(changes) - {"vlan", "subnet", "description"}
        if unknown:
            raise Invalid(sorted(unknown)[0], "only vlan, subnet and description can change")
        with self._lock, self._tx():
            cur = self.tenant(name)
            vlan = changes.get("vlan", cur.vlan)
            subnet = _check_subnet(changes.get("subnet", cur.subnet))
            _check_vlan(vlan)
            new = _model(lambda: Tenant(name, cur.vni, vlan, subnet,
                                        changes.get("description", cur.description)),
                         "description")
            self._check_unique("vlan", vlan, name)
            if vlan is None and self._trunk_uses(name):
                raise Conflict("vlan", f"tenant {name!r} is carried on a trunk and needs a vlan")
            self._db.execute("UPDATE tenants SET vlan = ?, subnet = ?, description = ? "
                             "WHERE name = ?", (vlan, subnet, new.description, name))
        return self.tenant(name)

    def delete_tenant(self, name: str, force: bool = False) -> int:
        """Delete a tenant; with force also its bindings.  Returns bindings removed."""
        if name == DEFAULT_TENANT.name:
            raise Conflict("name", "the default tenant is built in and cannot be deleted")
        with self._lock, self._tx():
            self.tenant(name)           # inside the transaction: no bind can slip in between
            n = self._db.execute("SELECT COUNT(*) FROM bindings WHERE tenant = ?",
                                 (name,)).fetchone()[0]
            trunks = [r for r in self._db.execute(
                "SELECT host, port, trunk FROM bindings WHERE mode = ?", (TRUNK,))
                if name in r[2].split(",")]
            n += len(trunks)
            n += self._db.execute("SELECT COUNT(*) FROM qos WHERE tenant = ?", (name,)).fetchone()[0]
            n += self._db.execute("SELECT COUNT(*) FROM acl_rules WHERE tenant = ?",
                                  (name,)).fetchone()[0]
            if n and not force:
                raise Conflict("name", f"tenant {name!r} has {n} port binding(s), QoS "
                                       "settings or ACL rules; remove them or delete with "
                                       "force=true")
            self._db.execute("DELETE FROM qos WHERE tenant = ?", (name,))
            self._db.execute("DELETE FROM acl_rules WHERE tenant = ?", (name,))
            self._db.execute("DELETE FROM acl_policy WHERE tenant = ?", (name,))
            self._db.execute("DELETE FROM bindings WHERE tenant = ? AND trunk = ''", (name,))
            self._db.execute("UPDATE bindings SET tenant = NULL WHERE tenant = ?", (name,))
            for host, port, trunk in trunks:
                rest = ",".join(t for t in trunk.split(",") if t != name)
                self._db.execute("UPDATE bindings SET trunk = ? WHERE host = ? AND port = ?",
                                 (rest, host, port))
            # a trunk left carrying nothing is no binding at all
            self._db.execute("DELETE FROM bindings WHERE mode = ? AND trunk = '' "
                             "AND tenant IS NULL", (TRUNK,))
            self._db.execute("DELETE FROM tenants WHERE name = ?", (name,))
        return n

    # -- binding writes -----------------------------------------------------------
    def bind(self, host: str, port: str, tenant: str | None, mode: str = ACCESS,
             mac: str | None = None, source: str = "api", trunk: tuple[str, ...] = (),
             replace: bool = False, ips: tuple[str, ...] = (),
             allowed_address_pairs: tuple = ()) -> Binding:
        """Bind a port; `replace` changes an existing binding (e.g. access <-> trunk).

        ``ips``/``allowed_address_pairs``: port security addresses (see Binding)."""
        b = self._valid_binding(host, port, tenant, mode, mac, trunk)
        try:
            b = replace_(b, ips=tuple(ips), allowed_address_pairs=tuple(allowed_address_pairs))
        except ValueError as e:
            field = "allowed_address_pairs" if "allowed_address_pairs" in str(e) else "ips"
            raise Invalid(field, str(e)) from None
        with self._lock, self._tx():
            self._check_tenants(b)
            row = self._db.execute("SELECT tenant, mode, trunk FROM bindings "
                                   "WHERE host = ? AND port = ?", (host, port)).fetchone()
            if row and not replace and (row[0], row[1], row[2]) != (tenant, mode, ",".join(trunk)):
                raise Conflict("port", f"port {host}/{port} is already bound ({row[1]}, "
                                       f"tenant {row[0]!r}); unbind it or replace it with PUT")
            if replace and not row:
                raise NotFound("port", f"port {host}/{port} is not bound")
            self._check_mac(b)
            self._db.execute("INSERT OR REPLACE INTO bindings VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (host, port, tenant, mode, b.mac, source, ",".join(trunk)))
            self._db.execute("DELETE FROM port_addresses WHERE host = ? AND port = ?",
                             (host, port))
            if b.ips or b.allowed_address_pairs:
                self._db.execute("INSERT INTO port_addresses VALUES (?, ?, ?, ?)",
                                 (host, port, json.dumps(list(b.ips)),
                                  json.dumps([list(x) for x in b.allowed_address_pairs])))
        return b

    def bind_many(self, items: list[dict]) -> int:
        """Bind many ports at once, all or nothing (orchestrators, benchmarks)."""
        wanted = [self._valid_binding(i["host"], i["port"], i.get("tenant"),
                                      i.get("mode", ACCESS), i.get("mac"),
                                      tuple(i.get("trunk") or ())) for i in items]
        keys = [(b.host, b.port) for b in wanted]
        if len(set(keys)) != len(keys):
            raise Conflict("port", "the same port is listed twice")
        macs = [(b.tenant, b.mac) for b in wanted if b.mac]
        if len(set(macs)) != len(macs):
            raise Conflict("mac", "the same MAC is listed twice in one tenant")
        with self._lock, self._tx():
            for b in wanted:
                self._check_tenants(b)
                row = self._db.execute("SELECT tenant FROM bindings WHERE host = ? AND port = ?",
                                       (b.host, b.port)).fetchone()
                if row and row[0] != b.tenant:
                    raise Conflict("port", f"port {b.host}/{b.port} is bound to tenant "
                                           f"{row[0]!r}; unbind it first")
                self._check_mac(b)
                self._db.execute("INSERT OR REPLACE INTO bindings VALUES (?, ?, ?, ?, ?, 'api', ?)",
                                 (b.host, b.port, b.tenant, b.mode, b.mac, ",".join(b.trunk)))
        return len(wanted)

    def unbind(self, host: str, port: str) -> None:
        with self._lock, self._tx():
            if not self._db.execute("DELETE FROM bindings WHERE host = ? AND port = ?",
                                    (host, port)).rowcount:
                raise NotFound("port", f"port {host}/{port} is not bound")

    def replace_agent_bindings(self, host: str, attachments: list[dict]) -> int:
        """Make the agent-sourced bindings of `host` exactly `attachments`; all or nothing."""
        wanted = [self._valid_binding(host, a["port"], a["tenant"], ACCESS, a.get("mac") or None)
                  for a in attachments]
        with self._lock, self._tx():
            self._db.execute("DELETE FROM bindings WHERE host = ? AND source = 'agent'", (host,))
            for b in wanted:
                self._check_tenants(b)
                row = self._db.execute("SELECT tenant FROM bindings WHERE host = ? AND port = ?",
                                       (host, b.port)).fetchone()
                if row:         # an explicit REST binding wins over the agent's label
                    continue
                self._check_mac(b)
                self._db.execute("INSERT INTO bindings VALUES (?, ?, ?, ?, ?, 'agent', '')",
                                 (host, b.port, b.tenant, ACCESS, b.mac))
        return len(wanted)

    # -- QoS: rate limits and per-flow rules --------------------------------------------
    MAX_METERS = 65535

    def limits(self) -> list[RateLimit]:
        rows = self._read(lambda: self._db.execute(
            "SELECT id, host, kbps, burst_kb, port, tenant, pps, burst_pkts FROM qos "
            "WHERE kind = 'limit' ORDER BY id").fetchall())
        return [RateLimit(*r) for r in rows]

    def rules(self) -> list[QosRule]:
        rows = self._read(lambda: self._db.execute(
            "SELECT id, tenant, priority, match, kbps, burst_kb, set_dscp, queue FROM qos "
            "WHERE kind = 'rule' ORDER BY tenant, priority DESC").fetchall())
        return [QosRule(i, t, p, _match_from_json(m), k, b, d, q)
                for i, t, p, m, k, b, d, q in rows]

    def add_limit(self, host: str, kbps: int | None, burst_kb: int = 0, port: str | None = None,
                  tenant: str | None = None, pps: int | None = None,
                  burst_pkts: int = 0) -> RateLimit:
        """Limit what a bound port sends, or a tenant's aggregate on one host, in kbit/s
        (``kbps``) or packets/s (``pps``)."""
        _check_host(host)
        if (port is None) == (tenant is None):
            raise Invalid("port", "give exactly one of port (a bound port) or tenant "
                                  "(the tenant's aggregate on the host)")
        with self._lock, self._tx():
            if port is not None and not self._db.execute(
                    "SELECT 1 FROM bindings WHERE host = ? AND port = ?", (host, port)).fetchone():
                raise NotFound("port", f"port {host}/{port} is not bound")
            if tenant is not None:
                self._tenant_exists(tenant)
            if self._db.execute("SELECT 1 FROM qos WHERE kind = 'limit' AND host = ? AND "
                                "port IS ? AND tenant IS ?", (host, port, tenant)).fetchone():
                raise Conflict("port" if port else "tenant", "that already has a rate limit; "
                                                            "change it with PATCH")
            meter = self._next_meter()
            limit = _model(lambda: RateLimit(meter, host, kbps, burst_kb, port, tenant, pps,
                                             burst_pkts), "kbps")
            self._db.execute("INSERT INTO qos (id, kind, host, port, tenant, kbps, burst_kb, pps, "
                             "burst_pkts) VALUES (?, 'limit', ?, ?, ?, ?, ?, ?, ?)",
                             (meter, host, port, tenant, kbps, burst_kb, pps, burst_pkts))
        return limit

    def update_limit(self, limit_id: int, kbps: int | None = None,
                     burst_kb: int | None = None, pps: int | None = None,
                     burst_pkts: int | None = None) -> RateLimit:
        """Change the rate; giving the other unit's rate switches the unit (the old
        unit's rate and burst are dropped)."""
        cur = next((x for x in self.limits() if x.id == limit_id), None)
        if cur is None:
            raise NotFound("id", f"no rate limit {limit_id}")
        if pps is not None and kbps is None and cur.kbps is not None:
            new = _model(lambda: replace_(cur, kbps=None, burst_kb=0, pps=pps,
                                          burst_pkts=burst_pkts or 0), "pps")
        elif kbps is not None and pps is None and cur.pps is not None:
            new = _model(lambda: replace_(cur, kbps=kbps, burst_kb=burst_kb or 0, pps=None,
                                          burst_pkts=0), "kbps")
        else:
            new = _model(lambda: replace_(
                cur, kbps=cur.kbps if kbps is None else kbps,
                burst_kb=cur.burst_kb if burst_kb is None else burst_kb,
                pps=cur.pps if pps is None else pps,
                burst_pkts=cur.burst_pkts if burst_pkts is None else burst_pkts), "kbps")
        with self._lock, self._tx():
            self._db.execute("UPDATE qos SET kbps = ?, burst_kb = ?, pps = ?, burst_pkts = ? "
                             "WHERE id = ?",
                             (new.kbps, new.burst_kb, new.pps, new.burst_pkts, limit_id))
        return new

    def add_rule(self, tenant: str, priority: int, match: dict, kbps: int | None = None,
                 burst_kb: int = 0, set_dscp: int | None = None,
                 queue: int | None = None) -> QosRule:
        """A per-flow QoS rule of a tenant: match -> meter and/or DSCP remark and/or queue."""
        items = tuple(sorted((match or {}).items()))
        with self._lock, self._tx():
            self._tenant_exists(tenant)
            if self._db.execute("SELECT 1 FROM qos WHERE kind = 'rule' AND tenant = ? AND "
                                "priority = ?", (tenant, priority)).fetchone():
                raise Conflict("priority", f"tenant {tenant!r} already has a rule at priority "
                                           f"{priority}: priorities order the rules")
            meter = self._next_meter()
            rule = _model(lambda: QosRule(meter, tenant, priority, items, kbps, burst_kb,
                                          set_dscp, queue), "match")
            self._db.execute("INSERT INTO qos (id, kind, tenant, priority, match, kbps, burst_kb,"
                             " set_dscp, queue) VALUES (?, 'rule', ?, ?, ?, ?, ?, ?, ?)",
                             (meter, tenant, priority, json.dumps(dict(rule.match)), kbps,
                              burst_kb, set_dscp, queue))
        return rule

    def update_rule(self, rule_id: int, **changes: Any) -> QosRule:
        cur = next((r for r in self.rules() if r.id == rule_id), None)
        if cur is None:
            raise NotFound("id", f"no QoS rule {rule_id}")
        fields: dict[str, Any] = {"kbps": cur.kbps, "burst_kb": cur.burst_kb, "set_dscp": cur.set_dscp,
                  "queue": cur.queue, **changes}
        new = _model(lambda: QosRule(cur.id, cur.tenant, cur.priority, cur.match, **fields),
                     "kbps")
        with self._lock, self._tx():
            self._db.execute("UPDATE qos SET kbps = ?, burst_kb = ?, set_dscp = ?, queue = ? "
                             "WHERE id = ?", (new.kbps, new.burst_kb, new.set_dscp, new.queue,
                                              rule_id))
        return new

    def delete_qos(self, kind: str, qos_id: int) -> None:
        if isinstance(qos_id, bool) or not isinstance(qos_id, int) or \
                not 1 <= qos_id <= self.MAX_METERS:
            raise NotFound("id", f"no {'rate limit' if kind == 'limit' else 'QoS rule'} "
                                 f"{str(qos_id)[:24]} (ids are 1..{self.MAX_METERS})")
        with self._lock, self._tx():
            if not self._db.execute("DELETE FROM qos WHERE kind = ? AND id = ?",
                                    (kind, qos_id)).rowcount:
                raise NotFound("id", f"no {'rate limit' if kind == 'limit' else 'QoS rule'} "
                                     f"{qos_id}")

    # -- ACLs: a tenant's ordered, stateful rules and its default ------------------------
    _ACL_COLUMNS = ("id, tenant, priority, action, direction, ip_proto, remote, local, port, "
                    "icmp_type, description")

    def acls(self, tenant: str | None = None) -> list[AclRule]:
        """Rules, highest priority first within a tenant."""
        q = f"SELECT {self._ACL_COLUMNS} FROM acl_rules"
        args: tuple = ()
        if tenant is not None:
            q, args = q + " WHERE tenant = ?", (tenant,)
        rows = self._read(lambda: self._db.execute(q + " ORDER BY tenant, priority DESC",
                                                   args).fetchall())
        return [AclRule(i, t, p, a, d, json.loads(proto) if proto else None, r, lo, port, icmp,
                        desc) for i, t, p, a, d, proto, r, lo, port, icmp, desc in rows]

    def acl_deny(self) -> frozenset[str]:
        """Tenants whose default is deny."""
        return frozenset(r[0] for r in self._read(lambda: self._db.execute(
            "SELECT tenant FROM acl_policy WHERE default_action = 'deny'").fetchall()))

    def _acl_tenant(self, tenant: str) -> Tenant:
        try:
            return self.tenant(tenant)
        except NotFound as exc:
            raise NotFound("tenant", exc.message) from None

    def acl_default(self, tenant: str) -> str:
        self._acl_tenant(tenant)
        return "deny" if tenant in self.acl_deny() else "allow"

    def set_acl_default(self, tenant: str, default: str) -> str:
        if default not in ("allow", "deny"):
            raise Invalid("default", f"default {str(default)[:20]!r} is not allow|deny")
        with self._lock, self._tx():
            t = self._acl_tenant(tenant)
            if default == "deny":
                self._acl_zone_ok(t)
            self._db.execute("INSERT OR REPLACE INTO acl_policy VALUES (?, ?)", (tenant, default))
        return default

    def add_acl(self, tenant: str, priority: int, action: str, direction: str = "ingress",
                ip_proto: Any = None, remote: str | None = None, local: str | None = None,
                port: int | None = None, icmp_type: int | None = None,
                description: str = "") -> AclRule:
        """A rule of a tenant's security policy; its id is the low half of its flows' cookie."""
        _model(lambda: AclRule(1, tenant, priority, action, direction, ip_proto, remote, local,
                               port, icmp_type, description), "priority")
        with self._lock, self._tx():
            self._acl_zone_ok(self._acl_tenant(tenant))
            self._acl_priority_free(tenant, priority, None)
            cur = self._db.execute(
                "INSERT INTO acl_rules (tenant, priority, action, direction, ip_proto, remote, "
                "local, port, icmp_type, description) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (tenant, priority, action, direction, None, None, None, None, None, ""))
            rule = _model(lambda: AclRule(cur.lastrowid or 0, tenant, priority, action,
                                          direction, ip_proto, remote, local, port, icmp_type,
                                          description), "priority")
            self._write_acl(rule)
        return rule

    def update_acl(self, tenant: str, rule_id: int, **changes: Any) -> AclRule:
        unknown = set(changes) - {"priority", "action", "direction", "ip_proto", "remote",
                                  "local", "port", "icmp_type", "description"}
        if unknown:
            raise Invalid(sorted(unknown)[0], "not a field of an ACL rule")
        with self._lock, self._tx():
            cur = self._acl(tenant, rule_id)
            fields = {k: getattr(cur, k) for k in ("priority", "action", "direction", "ip_proto",
                                                   "remote", "local", "port", "icmp_type",
                                                   "description")} | changes
            new = _model(lambda: AclRule(rule_id, tenant, **fields), "priority")
            self._acl_priority_free(tenant, new.priority, rule_id)
            self._write_acl(new)
        return new

    def delete_acl(self, tenant: str, rule_id: int) -> None:
        with self._lock, self._tx():
            self._acl(tenant, rule_id)
            self._db.execute("DELETE FROM acl_rules WHERE id = ?", (rule_id,))

    def _acl(self, tenant: str, rule_id: int) -> AclRule:
        self._acl_tenant(tenant)
        rule = next((r for r in self.acls(tenant) if r.id == rule_id), None)
        if rule is None:
            raise NotFound("id", f"tenant {tenant!r} has no ACL rule {str(rule_id)[:24]}")
        return rule

    def _write_acl(self, r: AclRule) -> None:
        self._db.execute(
            "UPDATE acl_rules SET priority = ?, action = ?, direction = ?, ip_proto = ?, "
            "remote = ?, local = ?, port = ?, icmp_type = ?, description = ? WHERE id = ?",
            (r.priority, r.action, r.direction,
             None if r.ip_proto is None else json.dumps(r.ip_proto), r.remote, r.local, r.port,
             r.icmp_type, r.description, r.id))

    def _acl_priority_free(self, tenant: str, priority: int, rule_id: int | None) -> None:
        row = self._db.execute("SELECT id FROM acl_rules WHERE tenant = ? AND priority = ?",
                               (tenant, priority)).fetchone()
        if row and row[0] != rule_id:
            raise Conflict("priority", f"tenant {tenant!r} already has ACL rule {row[0]} at "
                                       f"priority {priority}: priorities order the rules")

    @staticmethod
    def _acl_zone_ok(t: Tenant) -> None:
        if t.vni > MAX_ACL_ZONE_VNI:
            raise Conflict("tenant", f"tenant {t.name!r} has VNI {t.vni}: ACLs need a VNI up "
                                     f"to {MAX_ACL_ZONE_VNI} (it is the conntrack zone)")

    # -- operator flows -------------------------------------------------------------
    def operator_flows(self, dpid: int | None = None) -> list[OperatorFlow]:
        q = ("SELECT id, dpid, table_id, priority, match, actions, override, description "
             "FROM operator_flows")
        args: tuple = ()
        if dpid is not None:
            q, args = q + " WHERE dpid = ?", (dpid,)
        rows = self._read(lambda: self._db.execute(q + " ORDER BY id", args).fetchall())
        return [OperatorFlow(i, d, t, p, json.loads(m), tuple(json.loads(a)), bool(o), desc)
                for i, d, t, p, m, a, o, desc in rows]

    def add_operator_flows(self, flows: list[dict]) -> list[OperatorFlow]:
        """Store already-checked operator flows, all or nothing; ids are assigned here."""
        out = []
        with self._lock, self._tx():
            for f in flows:
                cur = self._db.execute(
                    "INSERT INTO operator_flows (dpid, table_id, priority, match, actions, "
                    "override, description) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (f["dpid"], f["table_id"], f["priority"], json.dumps(f["match"]),
                     json.dumps(f["actions"]), int(bool(f.get("override"))),
                     f.get("description") or ""))
                out.append(OperatorFlow(cur.lastrowid or 0, f["dpid"], f["table_id"],
                                        f["priority"], f["match"], tuple(f["actions"]),
                                        bool(f.get("override")), f.get("description") or ""))
        return out

    def delete_operator_flows(self, dpid: int, ids: list[int] | None = None) -> int:
        """Delete some (``ids``) or all of a switch's operator flows; returns how many."""
        with self._lock, self._tx():
            if ids is None:
                return self._db.execute("DELETE FROM operator_flows WHERE dpid = ?",
                                        (dpid,)).rowcount
            n = 0
            for i in ids:
                n += self._db.execute("DELETE FROM operator_flows WHERE dpid = ? AND id = ?",
                                      (dpid, i)).rowcount
            return n

    def _next_meter(self) -> int:
        used = {r[0] for r in self._db.execute("SELECT id FROM qos")}
        meter = next((i for i in range(1, self.MAX_METERS + 1) if i not in used), None)
        if meter is None:
            raise Conflict("id", "all 65535 meter ids are in use")
        return meter

    def _tenant_exists(self, tenant: str) -> None:
        if tenant != DEFAULT_TENANT.name and not self._db.execute(
                "SELECT 1 FROM tenants WHERE name = ?", (tenant,)).fetchone():
            raise NotFound("tenant", f"no tenant {tenant!r}")

    # -- helpers ------------------------------------------------------------------
    def _valid_binding(self, host: str, port: str, tenant: str | None, mode: str,
                       mac: str | None, trunk: tuple[str, ...] = ()) -> Binding:
        """The model's checks, translated; tenants are checked later, inside the write."""
        try:
            check_bindable_port(host, port)
            if tenant is not None:
                _model_check_name(tenant, "tenant")
            for name in trunk:
                _model_check_name(name, "trunk")
            return Binding(host, port, tenant, mode, mac, tuple(trunk))
        except ModelError as exc:
            status = Conflict if exc.field == "port" and "owned" in exc.message or \
                "owns" in exc.message else Invalid
            raise status(exc.field, exc.message) from None

    def _check_tenants(self, b: Binding) -> None:
        """Inside the write transaction: every tenant the binding names exists (and has a vlan
        when it rides a trunk).  The schema refuses orphans too; this names the field."""
        known = {t.name: t for t in self.tenants()}
        if b.tenant is not None and b.tenant not in known:
            raise NotFound("tenant", f"no tenant {b.tenant!r}")
        for name in b.trunk:
            if name not in known:
                raise NotFound("trunk", f"no tenant {name!r}")
            if known[name].vlan is None:
                raise Invalid("trunk", f"tenant {name!r} has no VLAN id: set one to carry it "
                                       "on a trunk")

    def _check_mac(self, b: Binding) -> None:
        if b.mac and self._db.execute(
                "SELECT 1 FROM bindings WHERE tenant = ? AND mac = ? AND NOT (host = ? AND port = ?)",
                (b.tenant, b.mac, b.host, b.port)).fetchone():
            raise Conflict("mac", f"mac {b.mac} is already bound in tenant {b.tenant!r}")

    def _check_unique(self, column: str, value: object, name: str) -> None:
        if value is None:
            return
        row = self._db.execute(f"SELECT name FROM tenants WHERE {column} = ? AND name != ?",
                               (value, name)).fetchone()
        if row or (column == "vni" and value == DEFAULT_TENANT.vni):
            raise Conflict(column, f"{column} {value} is used by tenant {row[0] if row else 'default'!r}")

    def _trunk_uses(self, tenant: str) -> bool:
        return any(tenant in r[0].split(",") for r in self._db.execute(
            "SELECT trunk FROM bindings WHERE mode = ?", (TRUNK,)))

    def _free_vni(self) -> int:
        used = {r[0] for r in self._db.execute("SELECT vni FROM tenants")}
        vni = FIRST_AUTO_VNI
        while vni in used:
            vni += 1
        return vni

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """One SQLite transaction; bumps `version` when it commits."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from None
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException as exc:
            if self._db.in_transaction:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            if isinstance(exc, sqlite3.Error):
                raise _translate(exc, self.path) from None
            raise
        self.version += 1

def _model(build: Callable[[], T], field: str) -> T:
    """Build a model value; its own validation errors become a 422 naming their field."""
    try:
        return build()
    except ModelError as exc:
        raise Invalid(exc.field, exc.message) from None
    except (ValueError, TypeError) as exc:
        raise Invalid(field, str(exc)[:200]) from None


def _match_from_json(text: str | None) -> tuple:
    return tuple(sorted(json.loads(text or "{}").items()))


def _check_subnet(subnet: object) -> str | None:
    if subnet in (None, ""):
        return None
    if not isinstance(subnet, str) or len(subnet) > 64:
        raise Invalid("subnet", "must be a network in CIDR notation, like 10.1.0.0/24")
    try:
        return str(ipaddress.ip_network(subnet))
    except ValueError as exc:
        raise Invalid("subnet", f"{subnet!r} is not a network: {exc}") from None


def _check_vlan(vlan: object) -> None:
    if vlan is not None and (not isinstance(vlan, int) or isinstance(vlan, bool)
                             or not 1 <= vlan <= 4094):
        raise Invalid("vlan", f"vlan {vlan!r} is not in 1..4094")
