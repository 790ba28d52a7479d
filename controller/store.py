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
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import replace as replace_
from pathlib import Path
from typing import Any, Callable, TypeVar

from controller.model import (ACCESS, DEFAULT_TENANT, DOCKER_LINK_PORT, HOST_NAME_PATTERN, MAX_ACL_PRIORITY,
                              MAX_ACL_ZONE_VNI, MAX_VNI, TRUNK, AclRule, Binding, LinkEndpoint,
                              ModelError, QosRule, RateLimit, Tenant, check_bindable_port)
from controller.model import check_name as _model_check_name
from controller.operator import OperatorFlow

LOG = logging.getLogger("weft.store")
FIRST_AUTO_VNI = 1000
SCHEMA_VERSION = 7          # PRAGMA user_version; 0 is the first, unversioned schema
# 3: port_addresses (port security), created by SCHEMA itself: no data to move
# 4: tenant ACLs (acl_rules, acl_policy) and operator flows (operator_flows): new tables
#    only, created by the idempotent SCHEMA
# 5: packet-rate limits: qos.pps and qos.burst_pkts, added to an older qos table by
#    _add_columns (ALTER TABLE ... ADD COLUMN; existing rows stay kbit/s limits)
# 6: meta (the store epoch) and registrations (hosts that registered themselves), new
#    tables created by SCHEMA; the epoch row is written when
#    the store is opened and has none (a new store, or one upgraded from schema 5)
# 7: link_endpoints (docker0 containers the agents report), a new table created by SCHEMA

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
CREATE INDEX IF NOT EXISTS bindings_tenant_mac ON bindings(tenant, mac);  -- the MAC check
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
-- host self-registration (schema 6): an expiry time stands in for etcd's lease
CREATE TABLE IF NOT EXISTS registrations (
    name TEXT PRIMARY KEY,
    data TEXT NOT NULL,                    -- JSON object, what the host registered
    expires REAL NOT NULL                  -- unix time; rows past it are ignored
);
-- docker0 containers behind a host's docker0 link, as its agent reports them (schema 7)
CREATE TABLE IF NOT EXISTS link_endpoints (
    mac TEXT PRIMARY KEY,                      -- pinned to one host
    host TEXT NOT NULL,
    ips TEXT NOT NULL DEFAULT '[]'             -- JSON list of IPv4 addresses
) WITHOUT ROWID;
PRAGMA user_version = {SCHEMA_VERSION};
"""
_TABLES = {"tenants", "bindings", "qos"}          # the tables of schema 0 (upgraded from)
_V0_TABLES = tuple(sorted(_TABLES))
_KNOWN_TABLES = _TABLES | {"port_addresses", "acl_rules", "acl_policy", "operator_flows", "meta",
                             "registrations", "link_endpoints"}


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
                                 f"{' '.join(str(check[0][0]).split())[:120]}); restore it from a backup")
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


class ModelTx(ABC):
    """What a backend offers the shared logic: the model's facts and its mutations, inside
    one transaction (SQLite: BEGIN IMMEDIATE; etcd: a snapshot committed with
    compare-and-swap).  No checks live here: StoreBase decides, the backend stores."""

    # -- facts ------------------------------------------------------------------
    @abstractmethod
    def tenants(self) -> list[Tenant]:
        """Every tenant, the built-in default first, then by name."""

    def tenant(self, name: str) -> Tenant | None:
        return next((t for t in self.tenants() if t.name == name), None)

    @abstractmethod
    def bindings(self, host: str | None = None) -> list[StoredBinding]:
        """Bindings ordered by (host, port), with their port security addresses."""

    @abstractmethod
    def binding(self, host: str, port: str) -> StoredBinding | None: ...

    def count_bindings(self) -> int:
        return len(self.bindings())

    def mac_taken(self, tenant: str | None, mac: str, host: str, port: str) -> bool:
        """Another port of ``tenant`` is bound with ``mac`` (None never matches, as in SQL)."""
        return tenant is not None and any(
            sb.binding.tenant == tenant and sb.binding.mac == mac and
            (sb.binding.host, sb.binding.port) != (host, port) for sb in self.bindings())

    @abstractmethod
    def link_endpoints(self) -> list[LinkEndpoint]:
        """docker0 endpoints of every host, by (host, mac)."""

    @abstractmethod
    def limits(self) -> list[RateLimit]:
        """Rate limits by id."""

    @abstractmethod
    def rules(self) -> list[QosRule]:
        """QoS rules by tenant, then priority, highest first."""

    def qos(self, qos_id: int) -> RateLimit | QosRule | None:
        return next((x for x in _all_qos(self) if x.id == qos_id), None)

    @abstractmethod
    def acls(self, tenant: str | None = None) -> list[AclRule]:
        """ACL rules by tenant, then priority, highest first."""

    @abstractmethod
    def acl_policies(self) -> dict[str, str]:
        """Tenant -> its stored default ("allow"/"deny"); tenants never set are absent."""

    @abstractmethod
    def operator_flows(self, dpid: int | None = None) -> list[OperatorFlow]:
        """Operator flows by id."""

    @abstractmethod
    def epoch(self) -> str: ...

    # -- mutations (already decided by StoreBase) ----------------------------------------
    @abstractmethod
    def put_tenant(self, t: Tenant) -> None: ...

    @abstractmethod
    def remove_tenant(self, name: str) -> None: ...

    @abstractmethod
    def put_binding(self, sb: StoredBinding) -> None:
        """Create or replace a binding together with its port security addresses."""

    @abstractmethod
    def remove_binding(self, host: str, port: str) -> None: ...

    @abstractmethod
    def set_link_endpoints(self, host: str, endpoints: list[LinkEndpoint]) -> None:
        """Make ``host``'s docker0 endpoints exactly ``endpoints`` (MACs unique)."""

    @abstractmethod
    def put_qos(self, x: RateLimit | QosRule) -> None: ...

    @abstractmethod
    def remove_qos(self, qos_id: int) -> None: ...

    @abstractmethod
    def new_acl_id(self) -> int:
        """An ACL rule id never handed out before in this store (ids are in cookies)."""

    @abstractmethod
    def put_acl(self, r: AclRule) -> None: ...

    @abstractmethod
    def remove_acl(self, rule_id: int) -> None: ...

    @abstractmethod
    def set_acl_policy(self, tenant: str, default: str | None) -> None:
        """Store a tenant's default; None forgets it."""

    @abstractmethod
    def new_operator_flow_id(self) -> int:
        """An operator flow id never handed out before in this store."""

    @abstractmethod
    def put_operator_flow(self, f: OperatorFlow) -> None: ...

    @abstractmethod
    def remove_operator_flow(self, flow_id: int) -> None: ...

    @abstractmethod
    def set_epoch(self, epoch: str) -> None: ...

    @abstractmethod
    def reserve_ids(self, next_acl: int, next_operator_flow: int) -> None:
        """Hand out no ACL or operator flow id below these again (a restore)."""


def _all_qos(tx: ModelTx) -> list[RateLimit | QosRule]:
    out: list[RateLimit | QosRule] = [*tx.limits()]
    return out + tx.rules()


ChangeCallback = Callable[[int], None]
MAX_COOKIE_ID = 4294967295          # ACL and operator flow ids: the low 32 bits of a cookie
EXPORT_FORMAT = "weft-model"
EXPORT_VERSION = 1


class StoreBase(ABC):
    """The store interface and every check and decision behind it, once, for every
    backend: a backend only supplies ModelTx (facts and mutations in one transaction),
    `_read` and `_write`.  So SQLite and etcd refuse the same requests with the same
    field and message, and the same test suite runs on both."""

    MAX_METERS = 65535
    version: int                    # bumped by every committed change (etcd: its revision)
    path: str                       # where the state lives: a file, or etcd://MEMBERS/PREFIX

    def __init__(self) -> None:
        self._watchers: list[ChangeCallback] = []

    # -- what a backend provides ----------------------------------------------------
    @abstractmethod
    def _read(self, fn: Callable[[ModelTx], T]) -> T:
        """Run ``fn`` on a consistent read view."""

    @abstractmethod
    def _write(self, fn: Callable[[ModelTx], T]) -> T:
        """Run ``fn`` in one transaction: all its mutations commit together or none do.
        A backend may run ``fn`` more than once (etcd retries after a lost race)."""

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def register_host(self, name: str, data: dict, ttl: float) -> None:
        """Register (or renew) a host for ``ttl`` seconds (agent self-registration)."""

    @abstractmethod
    def registered_hosts(self) -> dict[str, dict]:
        """Hosts whose registration has not expired: name -> the data they registered."""

    def watch(self, callback: ChangeCallback) -> None:
        """Call ``callback(version)`` after every change to the model or the registrations.

        SQLite: changes made through this store object (one controller owns the file).
        etcd: every change under the prefix, by any controller, from a watch stream; the
        callback runs on the watch thread and must not block (post an event)."""
        self._watchers.append(callback)

    def _notify(self) -> None:
        for cb in list(self._watchers):
            try:
                cb(self.version)
            except Exception:       # a watcher's bug must not fail the write that caused it
                LOG.exception("store watch callback failed")

    # -- reads ---------------------------------------------------------------------
    def epoch(self) -> str:
        """The random id made when this store was initialised, kept for its life (a
        restore by `weftctl import` brings the exported one back).  Switches carry it, so
        a controller can tell "my store wrote these flows" from "a different store did"."""
        return self._read(lambda tx: tx.epoch())

    def tenants(self) -> list[Tenant]:
        return self._read(lambda tx: tx.tenants())

    def tenant(self, name: str) -> Tenant:
        t = self._read(lambda tx: tx.tenant(name))
        if t is None:
            raise NotFound("name", f"no tenant {str(name)[:40]!r}")
        return t

    def count_bindings(self) -> int:
        return self._read(lambda tx: tx.count_bindings())

    def bindings(self, host: str | None = None, tenant: str | None = None) -> list[StoredBinding]:
        out = self._read(lambda tx: tx.bindings(host or None))
        return [sb for sb in out if tenant is None or tenant in sb.binding.tenants]

    def link_endpoints(self) -> list[LinkEndpoint]:
        """docker0 containers the agents reported, pinned to their hosts' docker0 links."""
        return self._read(lambda tx: tx.link_endpoints())

    def orphans(self) -> int:
        """Rows naming a tenant that does not exist (the schema makes this 0; tests check it)."""
        def count(tx: ModelTx) -> int:
            names = {t.name for t in tx.tenants()}
            n = sum(1 for sb in tx.bindings() if sb.binding.tenant is not None
                    and sb.binding.tenant not in names)
            n += sum(1 for sb in tx.bindings() if any(t not in names for t in sb.binding.trunk))
            n += sum(1 for x in _all_qos(tx)
                     if x.tenant is not None and x.tenant not in names)
            return n + sum(1 for r in tx.acls() if r.tenant not in names)
        return self._read(count)

    def limits(self) -> list[RateLimit]:
        return self._read(lambda tx: tx.limits())

    def rules(self) -> list[QosRule]:
        return self._read(lambda tx: tx.rules())

    def acls(self, tenant: str | None = None) -> list[AclRule]:
        """Rules, highest priority first within a tenant."""
        return self._read(lambda tx: tx.acls(tenant))

    def acl_deny(self) -> frozenset[str]:
        """Tenants whose default is deny."""
        return frozenset(t for t, d in self._read(lambda tx: tx.acl_policies()).items()
                         if d == "deny")

    def acl_default(self, tenant: str) -> str:
        self._read(lambda tx: _acl_tenant(tx, tenant))
        return "deny" if tenant in self.acl_deny() else "allow"

    def operator_flows(self, dpid: int | None = None) -> list[OperatorFlow]:
        return self._read(lambda tx: tx.operator_flows(dpid))

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

        def create(tx: ModelTx) -> Tenant:
            if tx.tenant(name) is not None or name == DEFAULT_TENANT.name:
                raise Conflict("name", f"tenant {name!r} already exists")
            chosen = _free_vni(tx) if vni is None else vni
            _check_unique(tx, "vni", chosen, name)
            _check_unique(tx, "vlan", vlan, name)
            t = Tenant(name, chosen, vlan, subnet, description or "")
            tx.put_tenant(t)
            return t
        return self._write(create)

    def update_tenant(self, name: str, **changes: Any) -> Tenant:
        """Change vlan, subnet or description (the VNI is the tenant's identity)."""
        if name == DEFAULT_TENANT.name:
            raise Conflict("name", "the default tenant is built in and cannot be changed")
        unknown = set(changes) - {"vlan", "subnet", "description"}
        if unknown:
            raise Invalid(sorted(unknown)[0], "only vlan, subnet and description can change")

        def update(tx: ModelTx) -> Tenant:
            cur = _get_tenant(tx, name)
            vlan = changes.get("vlan", cur.vlan)
            subnet = _check_subnet(changes.get("subnet", cur.subnet))
            _check_vlan(vlan)
            new = _model(lambda: Tenant(name, cur.vni, vlan, subnet,
                                        changes.get("description", cur.description)),
                         "description")
            _check_unique(tx, "vlan", vlan, name)
            if vlan is None and any(name in sb.binding.trunk for sb in tx.bindings()
                                    if sb.binding.mode == TRUNK):
                raise Conflict("vlan", f"tenant {name!r} is carried on a trunk and needs a vlan")
            tx.put_tenant(new)
            return new
        return self._write(update)

    def delete_tenant(self, name: str, force: bool = False) -> int:
        """Delete a tenant; with force also its bindings.  Returns bindings removed."""
        if name == DEFAULT_TENANT.name:
            raise Conflict("name", "the default tenant is built in and cannot be deleted")

        def delete(tx: ModelTx) -> int:
            _get_tenant(tx, name)       # inside the transaction: no bind can slip in between
            bound = tx.bindings()
            n = sum(1 for sb in bound if sb.binding.tenant == name)
            n += sum(1 for sb in bound if sb.binding.mode == TRUNK and name in sb.binding.trunk)
            qos = [x for x in _all_qos(tx) if x.tenant == name]
            acls = tx.acls(name)
            n += len(qos) + len(acls)
            if n and not force:
                raise Conflict("name", f"tenant {name!r} has {n} port binding(s), QoS "
                                       "settings or ACL rules; remove them or delete with "
                                       "force=true")
            for x in qos:
                tx.remove_qos(x.id)
            for r in acls:
                tx.remove_acl(r.id)
            tx.set_acl_policy(name, None)
            for sb in bound:
                b = sb.binding
                if name not in b.tenants:
                    continue
                native = None if b.tenant == name else b.tenant
                trunk = tuple(t for t in b.trunk if t != name)
                if (b.tenant == name and not b.trunk) or (b.mode == TRUNK and not trunk
                                                          and native is None):
                    tx.remove_binding(b.host, b.port)       # a trunk carrying nothing goes too
                else:
                    tx.put_binding(replace_(sb, binding=replace_(b, tenant=native, trunk=trunk)))
            tx.remove_tenant(name)
            return n
        return self._write(delete)

    # -- binding writes -----------------------------------------------------------
    def bind(self, host: str, port: str, tenant: str | None, mode: str = ACCESS,
             mac: str | None = None, source: str = "api", trunk: tuple[str, ...] = (),
             replace: bool = False, ips: tuple[str, ...] = (),
             allowed_address_pairs: tuple = ()) -> Binding:
        """Bind a port; `replace` changes an existing binding (e.g. access <-> trunk).

        ``ips``/``allowed_address_pairs``: port security addresses (see Binding)."""
        b = _valid_binding(host, port, tenant, mode, mac, trunk)
        try:
            b = replace_(b, ips=tuple(ips), allowed_address_pairs=tuple(allowed_address_pairs))
        except ValueError as e:
            field = "allowed_address_pairs" if "allowed_address_pairs" in str(e) else "ips"
            raise Invalid(field, str(e)) from None

        def bind(tx: ModelTx) -> Binding:
            _check_tenants(tx, b)
            row = tx.binding(host, port)
            if row and not replace and (row.binding.tenant, row.binding.mode,
                                        row.binding.trunk) != (tenant, mode, tuple(trunk)):
                raise Conflict("port", f"port {host}/{port} is already bound "
                                       f"({row.binding.mode}, tenant {row.binding.tenant!r}); "
                                       "unbind it or replace it with PUT")
            if replace and not row:
                raise NotFound("port", f"port {host}/{port} is not bound")
            _check_mac(tx, b)
            tx.put_binding(StoredBinding(b, source))
            return b
        return self._write(bind)

    def bind_many(self, items: list[dict]) -> int:
        """Bind many ports at once, all or nothing (orchestrators, benchmarks)."""
        wanted = [_valid_binding(i["host"], i["port"], i.get("tenant"), i.get("mode", ACCESS),
                                 i.get("mac"), tuple(i.get("trunk") or ())) for i in items]
        keys = [(b.host, b.port) for b in wanted]
        if len(set(keys)) != len(keys):
            raise Conflict("port", "the same port is listed twice")
        macs = [(b.tenant, b.mac) for b in wanted if b.mac]
        if len(set(macs)) != len(macs):
            raise Conflict("mac", "the same MAC is listed twice in one tenant")

        def bind(tx: ModelTx) -> int:
            for b in wanted:
                _check_tenants(tx, b)
                row = tx.binding(b.host, b.port)
                if row and row.binding.tenant != b.tenant:
                    raise Conflict("port", f"port {b.host}/{b.port} is bound to tenant "
                                           f"{row.binding.tenant!r}; unbind it first")
                _check_mac(tx, b)
                if row:                 # a re-bind keeps the port's security addresses
                    b = replace_(b, ips=row.binding.ips,
                                 allowed_address_pairs=row.binding.allowed_address_pairs)
                tx.put_binding(StoredBinding(b, "api"))
            return len(wanted)
        return self._write(bind)

    def unbind(self, host: str, port: str) -> None:
        def unbind(tx: ModelTx) -> None:
            if tx.binding(host, port) is None:
                raise NotFound("port", f"port {host}/{port} is not bound")
            tx.remove_binding(host, port)
        self._write(unbind)

    def replace_agent_bindings(self, host: str, attachments: list[dict]) -> int:
        """Make the agent-sourced bindings of `host` exactly `attachments`, and its docker0
        endpoints exactly those listed on the docker0 link; all or nothing.

        A port is bound with its MAC and addresses (``ips``) unless ``port_security`` is
        false: then with neither, so nothing it sends is checked.  A docker0 MAC another
        host already has is not pinned here (logged): a MAC lives in one place."""
        wanted = [_agent_binding(host, a) for a in attachments if a["port"] != DOCKER_LINK_PORT]
        docker0 = _link_endpoints(host, [a for a in attachments
                                         if a["port"] == DOCKER_LINK_PORT])

        def replace_all(tx: ModelTx) -> int:
            elsewhere = {e.mac: e.host for e in tx.link_endpoints() if e.host != host}
            for e in docker0:
                if e.mac in elsewhere:
                    LOG.warning("%s reports docker0 container MAC %s, which %s has: not "
                                "pinned to %s", host, e.mac, elsewhere[e.mac], host)
            tx.set_link_endpoints(host, [e for e in docker0 if e.mac not in elsewhere])
            for sb in tx.bindings(host):
                if sb.source == "agent":
                    tx.remove_binding(host, sb.binding.port)
            for b in wanted:
                _check_tenants(tx, b)
                if tx.binding(host, b.port):    # an explicit REST binding wins over the agent's
                    continue
                _check_mac(tx, b)
                tx.put_binding(StoredBinding(b, "agent"))
            return len(wanted)
        return self._write(replace_all)

    # -- QoS: rate limits and per-flow rules --------------------------------------------
    def add_limit(self, host: str, kbps: int | None, burst_kb: int = 0, port: str | None = None,
                  tenant: str | None = None, pps: int | None = None,
                  burst_pkts: int = 0) -> RateLimit:
        """Limit what a bound port sends, or a tenant's aggregate on one host, in kbit/s
        (``kbps``) or packets/s (``pps``)."""
        _check_host(host)
        if (port is None) == (tenant is None):
            raise Invalid("port", "give exactly one of port (a bound port) or tenant "
                                  "(the tenant's aggregate on the host)")

        def add(tx: ModelTx) -> RateLimit:
            if port is not None and tx.binding(host, port) is None:
                raise NotFound("port", f"port {host}/{port} is not bound")
            if tenant is not None:
                _tenant_exists(tx, tenant)
            if any((x.host, x.port, x.tenant) == (host, port, tenant) for x in tx.limits()):
                raise Conflict("port" if port else "tenant", "that already has a rate limit; "
                                                            "change it with PATCH")
            meter = _next_meter(tx)
            limit = _model(lambda: RateLimit(meter, host, kbps, burst_kb, port, tenant, pps,
                                             burst_pkts), "kbps")
            tx.put_qos(limit)
            return limit
        return self._write(add)

    def update_limit(self, limit_id: int, kbps: int | None = None,
                     burst_kb: int | None = None, pps: int | None = None,
                     burst_pkts: int | None = None) -> RateLimit:
        """Change the rate; giving the other unit's rate switches the unit (the old
        unit's rate and burst are dropped)."""
        def update(tx: ModelTx) -> RateLimit:
            cur = next((x for x in tx.limits() if x.id == limit_id), None)
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
            tx.put_qos(new)
            return new
        return self._write(update)

    def add_rule(self, tenant: str, priority: int, match: dict, kbps: int | None = None,
                 burst_kb: int = 0, set_dscp: int | None = None,
                 queue: int | None = None) -> QosRule:
        """A per-flow QoS rule of a tenant: match -> meter and/or DSCP remark and/or queue."""
        items = tuple(sorted((match or {}).items()))

        def add(tx: ModelTx) -> QosRule:
            _tenant_exists(tx, tenant)
            if any(r.tenant == tenant and r.priority == priority for r in tx.rules()):
                raise Conflict("priority", f"tenant {tenant!r} already has a rule at priority "
                                           f"{priority}: priorities order the rules")
            meter = _next_meter(tx)
            rule = _model(lambda: QosRule(meter, tenant, priority, items, kbps, burst_kb,
                                          set_dscp, queue), "match")
            tx.put_qos(rule)
            return rule
        return self._write(add)

    def update_rule(self, rule_id: int, **changes: Any) -> QosRule:
        def update(tx: ModelTx) -> QosRule:
            cur = next((r for r in tx.rules() if r.id == rule_id), None)
            if cur is None:
                raise NotFound("id", f"no QoS rule {rule_id}")
            fields: dict[str, Any] = {"kbps": cur.kbps, "burst_kb": cur.burst_kb,
                                      "set_dscp": cur.set_dscp, "queue": cur.queue, **changes}
            new = _model(lambda: QosRule(cur.id, cur.tenant, cur.priority, cur.match, **fields),
                         "kbps")
            tx.put_qos(new)
            return new
        return self._write(update)

    def delete_qos(self, kind: str, qos_id: int) -> None:
        what = "rate limit" if kind == "limit" else "QoS rule"
        if isinstance(qos_id, bool) or not isinstance(qos_id, int) or \
                not 1 <= qos_id <= self.MAX_METERS:
            raise NotFound("id", f"no {what} {str(qos_id)[:24]} (ids are 1..{self.MAX_METERS})")

        def delete(tx: ModelTx) -> None:
            x = tx.qos(qos_id)
            if x is None or isinstance(x, RateLimit) != (kind == "limit"):
                raise NotFound("id", f"no {what} {qos_id}")
            tx.remove_qos(qos_id)
        self._write(delete)

    # -- ACLs: a tenant's ordered, stateful rules and its default ------------------------
    def set_acl_default(self, tenant: str, default: str) -> str:
        if default not in ("allow", "deny"):
            raise Invalid("default", f"default {str(default)[:20]!r} is not allow|deny")

        def set_default(tx: ModelTx) -> str:
            t = _acl_tenant(tx, tenant)
            if default == "deny":
                _acl_zone_ok(t)
            tx.set_acl_policy(tenant, default)
            return default
        return self._write(set_default)

    def add_acl(self, tenant: str, priority: int, action: str, direction: str = "ingress",
                ip_proto: Any = None, remote: str | None = None, local: str | None = None,
                port: int | None = None, icmp_type: int | None = None,
                description: str = "") -> AclRule:
        """A rule of a tenant's security policy; its id is the low half of its flows' cookie."""
        _model(lambda: AclRule(1, tenant, priority, action, direction, ip_proto, remote, local,
                               port, icmp_type, description), "priority")

        def add(tx: ModelTx) -> AclRule:
            _acl_zone_ok(_acl_tenant(tx, tenant))
            _acl_priority_free(tx, tenant, priority, None)
            rule_id = tx.new_acl_id()
            if rule_id > MAX_COOKIE_ID:
                raise Conflict("id", "all ACL rule ids are used")
            rule = _model(lambda: AclRule(rule_id, tenant, priority, action, direction,
                                          ip_proto, remote, local, port, icmp_type,
                                          description), "priority")
            tx.put_acl(rule)
            return rule
        return self._write(add)

    def update_acl(self, tenant: str, rule_id: int, **changes: Any) -> AclRule:
        unknown = set(changes) - {"priority", "action", "direction", "ip_proto", "remote",
                                  "local", "port", "icmp_type", "description"}
        if unknown:
            raise Invalid(sorted(unknown)[0], "not a field of an ACL rule")

        def update(tx: ModelTx) -> AclRule:
            cur = _acl(tx, tenant, rule_id)
            fields = {k: getattr(cur, k) for k in ("priority", "action", "direction", "ip_proto",
                                                   "remote", "local", "port", "icmp_type",
                                                   "description")} | changes
            new = _model(lambda: AclRule(rule_id, tenant, **fields), "priority")
            _acl_priority_free(tx, tenant, new.priority, rule_id)
            tx.put_acl(new)
            return new
        return self._write(update)

    def delete_acl(self, tenant: str, rule_id: int) -> None:
        def delete(tx: ModelTx) -> None:
            _acl(tx, tenant, rule_id)
            tx.remove_acl(rule_id)
        self._write(delete)

    # -- operator flows -------------------------------------------------------------
    def add_operator_flows(self, flows: list[dict]) -> list[OperatorFlow]:
        """Store already-checked operator flows, all or nothing; ids are assigned here."""
        def add(tx: ModelTx) -> list[OperatorFlow]:
            out = []
            for f in flows:
                flow_id = tx.new_operator_flow_id()
                if flow_id > MAX_COOKIE_ID:
                    raise Conflict("id", "all operator flow ids are used")
                of = OperatorFlow(flow_id, f["dpid"], f["table_id"], f["priority"], f["match"],
                                  tuple(f["actions"]), bool(f.get("override")),
                                  f.get("description") or "")
                tx.put_operator_flow(of)
                out.append(of)
            return out
        return self._write(add)

    def delete_operator_flows(self, dpid: int, ids: list[int] | None = None) -> int:
        """Delete some (``ids``) or all of a switch's operator flows; returns how many."""
        def delete(tx: ModelTx) -> int:
            have = {f.id for f in tx.operator_flows(dpid)}
            gone = have if ids is None else [i for i in ids if i in have]
            for i in gone:
                tx.remove_operator_flow(i)
            return len(gone)
        return self._write(delete)

    # -- backup: the whole model as JSON --------------------------------------------
    def export(self) -> dict:
        """The whole model and the epoch, as plain JSON, from one consistent read."""
        return self._read(export_model)

    def import_model(self, data: object, replace: bool = False) -> dict[str, int]:
        """Restore an export: everything is validated first (the same checks as the API's
        writes), then applied in one transaction, so bad input changes nothing.  Refuses a
        store that holds anything unless ``replace``.  Returns counts of what it restored."""
        model = parse_export(data)

        def restore(tx: ModelTx) -> dict[str, int]:
            empty = _is_empty(tx)
            _wipe(tx)
            counts = _restore(tx, model)        # the input is checked whole first...
            if not replace and not empty:       # ...then the refusal (rolls all back)
                raise Conflict("store", "the store is not empty; import with --replace "
                                        "(replace=true) to overwrite everything in it")
            return counts
        return self._write(restore)


# -- the shared checks: every backend's writes go through these -----------------------
def _valid_binding(host: str, port: str, tenant: str | None, mode: str, mac: str | None,
                   trunk: tuple[str, ...] = ()) -> Binding:
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


def _agent_binding(host: str, a: dict) -> Binding:
    """An attachment an agent reported, as the binding `replace_agent_bindings` makes."""
    secured = a.get("port_security", True)
    b = _valid_binding(host, a["port"], a["tenant"], ACCESS,
                       (a.get("mac") or None) if secured else None)
    try:
        return replace_(b, ips=tuple(a.get("ips") or ())) if secured else b
    except (ValueError, TypeError) as e:
        raise Invalid("ips", str(e)[:200]) from None


def _link_endpoints(host: str, attachments: list[dict]) -> list[LinkEndpoint]:
    """docker0 containers an agent reported, checked, each MAC once."""
    out: dict[str, LinkEndpoint] = {}
    try:
        for a in attachments:
            if a["tenant"] != DEFAULT_TENANT.name:
                raise Invalid("tenant", f"{DOCKER_LINK_PORT} is the default tenant's, not "
                                        f"{str(a['tenant'])[:40]!r}")
            e = LinkEndpoint(host, a.get("mac") or "", tuple(a.get("ips") or ()))
            out.setdefault(e.mac, e)
    except (ValueError, TypeError) as e:
        field = e.field if isinstance(e, ModelError) else "mac"
        raise Invalid(field, str(e)[:200]) from None
    return list(out.values())


def _get_tenant(tx: ModelTx, name: str) -> Tenant:
    t = tx.tenant(name)
    if t is None:
        raise NotFound("name", f"no tenant {str(name)[:40]!r}")
    return t


def _tenant_exists(tx: ModelTx, tenant: str) -> None:
    if tenant != DEFAULT_TENANT.name and tx.tenant(tenant) is None:
        raise NotFound("tenant", f"no tenant {tenant!r}")


def _check_tenants(tx: ModelTx, b: Binding) -> None:
    """Inside the write transaction: every tenant the binding names exists (and has a vlan
    when it rides a trunk).  SQLite's schema refuses orphans too; this names the field."""
    known = {t.name: t for t in tx.tenants()}
    if b.tenant is not None and b.tenant not in known:
        raise NotFound("tenant", f"no tenant {b.tenant!r}")
    for name in b.trunk:
        if name not in known:
            raise NotFound("trunk", f"no tenant {name!r}")
        if known[name].vlan is None:
            raise Invalid("trunk", f"tenant {name!r} has no VLAN id: set one to carry it "
                                   "on a trunk")


def _check_mac(tx: ModelTx, b: Binding) -> None:
    if b.mac and tx.mac_taken(b.tenant, b.mac, b.host, b.port):
        raise Conflict("mac", f"mac {b.mac} is already bound in tenant {b.tenant!r}")


def _check_unique(tx: ModelTx, column: str, value: object, name: str) -> None:
    if value is None:
        return
    other = next((t.name for t in tx.tenants() if getattr(t, column) == value
                  and t.name != name), None)
    if other or (column == "vni" and value == DEFAULT_TENANT.vni):
        raise Conflict(column, f"{column} {value} is used by tenant {other or 'default'!r}")


def _free_vni(tx: ModelTx) -> int:
    used = {t.vni for t in tx.tenants()}
    vni = FIRST_AUTO_VNI
    while vni in used:
        vni += 1
    return vni


def _next_meter(tx: ModelTx) -> int:
    used = {x.id for x in _all_qos(tx)}
    meter = next((i for i in range(1, StoreBase.MAX_METERS + 1) if i not in used), None)
    if meter is None:
        raise Conflict("id", "all 65535 meter ids are in use")
    return meter


def _acl_tenant(tx: ModelTx, tenant: str) -> Tenant:
    t = tx.tenant(tenant)
    if t is None:
        raise NotFound("tenant", f"no tenant {str(tenant)[:40]!r}")
    return t


def _acl(tx: ModelTx, tenant: str, rule_id: int) -> AclRule:
    _acl_tenant(tx, tenant)
    rule = next((r for r in tx.acls(tenant) if r.id == rule_id), None)
    if rule is None:
        raise NotFound("id", f"tenant {tenant!r} has no ACL rule {str(rule_id)[:24]}")
    return rule


def _acl_priority_free(tx: ModelTx, tenant: str, priority: int, rule_id: int | None) -> None:
    other = next((r.id for r in tx.acls(tenant) if r.priority == priority), None)
    if other is not None and other != rule_id:
        raise Conflict("priority", f"tenant {tenant!r} already has ACL rule {other} at "
                                   f"priority {priority}: priorities order the rules")


def _acl_zone_ok(t: Tenant) -> None:
    if t.vni > MAX_ACL_ZONE_VNI:
        raise Conflict("tenant", f"tenant {t.name!r} has VNI {t.vni}: ACLs need a VNI up "
                                 f"to {MAX_ACL_ZONE_VNI} (it is the conntrack zone)")


# -- the model as JSON: `weftctl export/import` and the etcd backend's values -------------
def tenant_doc(t: Tenant) -> dict:
    return {"name": t.name, "vni": t.vni, "vlan": t.vlan, "subnet": t.subnet,
            "description": t.description}


def binding_doc(sb: StoredBinding) -> dict:
    b = sb.binding
    return {"host": b.host, "port": b.port, "tenant": b.tenant, "mode": b.mode, "mac": b.mac,
            "trunk": list(b.trunk), "source": sb.source, "ips": list(b.ips),
            "allowed_address_pairs": [list(p) for p in b.allowed_address_pairs]}


def limit_doc(x: RateLimit) -> dict:
    return {"id": x.id, "host": x.host, "port": x.port, "tenant": x.tenant, "kbps": x.kbps,
            "burst_kb": x.burst_kb, "pps": x.pps, "burst_pkts": x.burst_pkts}


def rule_doc(r: QosRule) -> dict:
    return {"id": r.id, "tenant": r.tenant, "priority": r.priority, "match": dict(r.match),
            "kbps": r.kbps, "burst_kb": r.burst_kb, "set_dscp": r.set_dscp, "queue": r.queue}


def acl_doc(r: AclRule) -> dict:
    return {"id": r.id, "tenant": r.tenant, "priority": r.priority, "action": r.action,
            "direction": r.direction, "ip_proto": r.ip_proto, "remote": r.remote,
            "local": r.local, "port": r.port, "icmp_type": r.icmp_type,
            "description": r.description}


def operator_flow_doc(f: OperatorFlow) -> dict:
    return {"id": f.id, "dpid": f.dpid, "table_id": f.table_id, "priority": f.priority,
            "match": dict(f.match), "actions": [dict(a) for a in f.actions],
            "override": f.override, "description": f.description}


def binding_of(d: dict) -> StoredBinding:
    """A stored binding from its document, checked as `bind` checks it."""
    b = _valid_binding(d["host"], d["port"], d.get("tenant"), d.get("mode", ACCESS),
                       d.get("mac"), tuple(d.get("trunk") or ()))
    try:
        b = replace_(b, ips=tuple(d.get("ips") or ()), allowed_address_pairs=tuple(
            tuple(p) for p in d.get("allowed_address_pairs") or ()))
    except (ValueError, TypeError) as e:
        field = "allowed_address_pairs" if "allowed_address_pairs" in str(e) else "ips"
        raise Invalid(field, str(e)[:200]) from None
    source = d.get("source", "api")
    if source not in ("api", "agent"):
        raise Invalid("source", f"source {str(source)[:20]!r} is not api|agent")
    return StoredBinding(b, source)


def tenant_of(d: dict) -> Tenant:
    name, vni, vlan = d["name"], d["vni"], d.get("vlan")
    check_name(name)
    subnet = _check_subnet(d.get("subnet"))
    _check_vlan(vlan)
    if isinstance(vni, bool) or not isinstance(vni, int) or not FIRST_AUTO_VNI <= vni <= MAX_VNI:
        raise Invalid("vni", f"vni must be in {FIRST_AUTO_VNI}..{MAX_VNI}")
    if name == DEFAULT_TENANT.name:
        raise Conflict("name", "the default tenant is built in")
    return _model(lambda: Tenant(name, vni, vlan, subnet, d.get("description") or ""), "name")


def _id(value: object, top: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        raise Invalid("id", f"id {str(value)[:24]!r} is not in 1..{top}")
    return value


def limit_of(d: dict) -> RateLimit:
    _check_host(d["host"])
    if (d.get("port") is None) == (d.get("tenant") is None):
        raise Invalid("port", "give exactly one of port or tenant")
    return _model(lambda: RateLimit(_id(d["id"], StoreBase.MAX_METERS), d["host"],
                                    d.get("kbps"), d.get("burst_kb", 0), d.get("port"),
                                    d.get("tenant"), d.get("pps"), d.get("burst_pkts", 0)),
                  "kbps")


def rule_of(d: dict) -> QosRule:
    check_name(d["tenant"], "tenant")
    match = d.get("match") or {}
    if not isinstance(match, dict):
        raise Invalid("match", "must be an object")
    return _model(lambda: QosRule(_id(d["id"], StoreBase.MAX_METERS), d["tenant"],
                                  d["priority"], tuple(sorted(match.items())), d.get("kbps"),
                                  d.get("burst_kb", 0), d.get("set_dscp"), d.get("queue")),
                  "match")


def acl_of(d: dict) -> AclRule:
    check_name(d["tenant"], "tenant")
    return _model(lambda: AclRule(_id(d["id"], MAX_COOKIE_ID), d["tenant"], d["priority"],
                                  d["action"], d.get("direction", "ingress"), d.get("ip_proto"),
                                  d.get("remote"), d.get("local"), d.get("port"),
                                  d.get("icmp_type"), d.get("description") or ""), "priority")


def operator_flow_of(d: dict) -> OperatorFlow:
    def whole(field: str, lo: int, hi: int) -> int:
        v = d[field]
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise Invalid(field, f"{field} {str(v)[:24]!r} is not in {lo}..{hi}")
        return v
    if not isinstance(d.get("match", {}), dict):
        raise Invalid("match", "must be an object")
    actions = d.get("actions", [])
    if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
        raise Invalid("actions", "must be a list of objects")
    description = d.get("description") or ""
    if not isinstance(description, str):
        raise Invalid("description", "must be a string")
    return OperatorFlow(_id(d["id"], MAX_COOKIE_ID), whole("dpid", 0, 2**64 - 1),
                        whole("table_id", 0, 253), whole("priority", 0, 65535),
                        dict(d.get("match", {})), tuple(actions), bool(d.get("override")),
                        description)


def export_model(tx: ModelTx) -> dict:
    return {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "epoch": tx.epoch(),
            "tenants": [tenant_doc(t) for t in tx.tenants() if t.name != DEFAULT_TENANT.name],
            "bindings": [binding_doc(sb) for sb in tx.bindings()],
            "limits": [limit_doc(x) for x in tx.limits()],
            "rules": [rule_doc(r) for r in tx.rules()],
            "acls": [acl_doc(r) for r in tx.acls()],
            "acl_defaults": dict(sorted(tx.acl_policies().items())),
            "operator_flows": [operator_flow_doc(f) for f in tx.operator_flows()],
            "next_ids": {"acl": tx.new_acl_id(), "operator_flow": tx.new_operator_flow_id()}}


@dataclass(frozen=True)
class ParsedModel:
    epoch: str
    tenants: tuple[Tenant, ...]
    bindings: tuple[StoredBinding, ...]
    limits: tuple[RateLimit, ...]
    rules: tuple[QosRule, ...]
    acls: tuple[AclRule, ...]
    acl_defaults: tuple[tuple[str, str], ...]
    operator_flows: tuple[OperatorFlow, ...]
    next_acl: int = 1
    next_operator_flow: int = 1


_SECTIONS: dict[str, Callable[[dict], Any]] = {
    "tenants": tenant_of, "bindings": binding_of, "limits": limit_of, "rules": rule_of,
    "acls": acl_of, "operator_flows": operator_flow_of}


def parse_export(data: object) -> ParsedModel:
    """Every item of an export checked on its own (shape, names, ranges), errors naming
    the item (``tenants[3].vni``); what needs the whole model is checked in `_restore`."""
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise Invalid("format", f"not a weft model export (want \"format\": "
                                f"\"{EXPORT_FORMAT}\")")
    if data.get("version") != EXPORT_VERSION:
        raise Invalid("version", f"export version {str(data.get('version'))[:10]} is not "
                                 f"{EXPORT_VERSION}")
    unknown = set(data) - {"format", "version", "epoch", "acl_defaults", "next_ids", *_SECTIONS}
    if unknown:
        raise Invalid(sorted(unknown)[0], "not a section of a weft model export")
    epoch = data.get("epoch")
    if not isinstance(epoch, str) or not 1 <= len(epoch) <= 64 or not epoch.isalnum():
        raise Invalid("epoch", "must be the exported store's epoch (letters and digits)")
    parsed: dict[str, tuple] = {}
    for section, parse in _SECTIONS.items():
        items = data.get(section, [])
        if not isinstance(items, list):
            raise Invalid(section, "must be a list")
        out = []
        for i, item in enumerate(items):
            where = f"{section}[{i}]"
            if not isinstance(item, dict):
                raise Invalid(where, "must be an object")
            try:
                out.append(parse(item))
            except StoreError as exc:
                raise type(exc)(f"{where}.{exc.field}", exc.message) from None
            except KeyError as exc:
                raise Invalid(f"{where}.{exc.args[0]}", "is required") from None
            except (TypeError, ValueError, AttributeError) as exc:
                raise Invalid(where, str(exc)[:200]) from None
        parsed[section] = tuple(out)
    defaults = data.get("acl_defaults", {})
    if not isinstance(defaults, dict) or not all(
            isinstance(k, str) and v in ("allow", "deny") for k, v in defaults.items()):
        raise Invalid("acl_defaults", "must map tenant names to allow|deny")
    next_ids = data.get("next_ids", {})
    if not isinstance(next_ids, dict) or set(next_ids) - {"acl", "operator_flow"} or not all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_COOKIE_ID + 1
            for v in next_ids.values()):
        raise Invalid("next_ids", "must be {\"acl\": N, \"operator_flow\": N}, ids to "
                                  "hand out next")
    return ParsedModel(epoch, parsed["tenants"], parsed["bindings"], parsed["limits"],
                       parsed["rules"], parsed["acls"], tuple(sorted(defaults.items())),
                       parsed["operator_flows"], next_ids.get("acl", 1),
                       next_ids.get("operator_flow", 1))


def _is_empty(tx: ModelTx) -> bool:
    return (len(tx.tenants()) == 1 and not tx.bindings() and not tx.limits()
            and not tx.rules() and not tx.acls() and not tx.acl_policies()
            and not tx.operator_flows())


def _wipe(tx: ModelTx) -> None:
    for f in tx.operator_flows():
        tx.remove_operator_flow(f.id)
    for r in tx.acls():
        tx.remove_acl(r.id)
    for tenant in tx.acl_policies():
        tx.set_acl_policy(tenant, None)
    for x in _all_qos(tx):
        tx.remove_qos(x.id)
    for sb in tx.bindings():
        tx.remove_binding(sb.binding.host, sb.binding.port)
    for host in {e.host for e in tx.link_endpoints()}:
        tx.set_link_endpoints(host, [])
    for t in tx.tenants():
        if t.name != DEFAULT_TENANT.name:
            tx.remove_tenant(t.name)


def _restore(tx: ModelTx, m: ParsedModel) -> dict[str, int]:
    """Put a parsed export into an empty transaction with the writes' own checks."""
    def each(section: str, items: tuple, put: Callable[[Any], None]) -> None:
        for i, item in enumerate(items):
            try:
                put(item)
            except StoreError as exc:
                raise type(exc)(f"{section}[{i}].{exc.field}", exc.message) from None

    def tenant(t: Tenant) -> None:
        if tx.tenant(t.name) is not None:
            raise Conflict("name", f"tenant {t.name!r} is listed twice")
        _check_unique(tx, "vni", t.vni, t.name)
        _check_unique(tx, "vlan", t.vlan, t.name)
        tx.put_tenant(t)

    def binding(sb: StoredBinding) -> None:
        b = sb.binding
        _check_tenants(tx, b)
        if tx.binding(b.host, b.port) is not None:
            raise Conflict("port", f"port {b.host}/{b.port} is listed twice")
        _check_mac(tx, b)
        tx.put_binding(sb)

    def qos(x: RateLimit | QosRule) -> None:
        if tx.qos(x.id) is not None:
            raise Conflict("id", f"meter id {x.id} is listed twice")
        if isinstance(x, RateLimit):
            if x.port is not None and tx.binding(x.host, x.port) is None:
                raise NotFound("port", f"port {x.host}/{x.port} is not bound")
            if any((y.host, y.port, y.tenant) == (x.host, x.port, x.tenant)
                   for y in tx.limits()):
                raise Conflict("port" if x.port else "tenant", "that already has a rate limit")
        if x.tenant is not None:
            _tenant_exists(tx, x.tenant)
        if isinstance(x, QosRule) and any(r.tenant == x.tenant and r.priority == x.priority
                                           for r in tx.rules()):
            raise Conflict("priority", f"tenant {x.tenant!r} has two rules at priority "
                                       f"{x.priority}")
        tx.put_qos(x)

    def acl(r: AclRule) -> None:
        _acl_zone_ok(_acl_tenant(tx, r.tenant))
        if any(a.id == r.id for a in tx.acls()):
            raise Conflict("id", f"ACL rule id {r.id} is listed twice")
        _acl_priority_free(tx, r.tenant, r.priority, r.id)
        tx.put_acl(r)

    def default(item: tuple[str, str]) -> None:
        tenant, value = item
        t = _acl_tenant(tx, tenant)
        if value == "deny":
            _acl_zone_ok(t)
        tx.set_acl_policy(tenant, value)

    def operator_flow(f: OperatorFlow) -> None:
        if any(g.id == f.id for g in tx.operator_flows()):
            raise Conflict("id", f"operator flow id {f.id} is listed twice")
        tx.put_operator_flow(f)

    each("tenants", m.tenants, tenant)
    each("bindings", m.bindings, binding)
    each("limits", m.limits, qos)
    each("rules", m.rules, qos)
    each("acls", m.acls, acl)
    each("acl_defaults", m.acl_defaults, default)
    each("operator_flows", m.operator_flows, operator_flow)
    tx.set_epoch(m.epoch)
    tx.reserve_ids(m.next_acl, m.next_operator_flow)
    return {"tenants": len(m.tenants), "bindings": len(m.bindings), "limits": len(m.limits),
            "rules": len(m.rules), "acls": len(m.acls), "acl_defaults": len(m.acl_defaults),
            "operator_flows": len(m.operator_flows)}


class SqliteTx(ModelTx):
    """ModelTx on one SQLite connection; the caller holds the lock (and for writes the
    BEGIN IMMEDIATE transaction).  The schema's keys and triggers stay a second guard."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def tenants(self) -> list[Tenant]:
        rows = self._db.execute(
            "SELECT name, vni, vlan, subnet, description FROM tenants WHERE name != ? "
            "ORDER BY name", (DEFAULT_TENANT.name,)).fetchall()
        return [DEFAULT_TENANT] + [Tenant(*r) for r in rows]

    def tenant(self, name: str) -> Tenant | None:
        if name == DEFAULT_TENANT.name:
            return DEFAULT_TENANT
        row = self._db.execute("SELECT name, vni, vlan, subnet, description FROM tenants "
                               "WHERE name = ?", (name,)).fetchone()
        return Tenant(*row) if row else None

    _BINDINGS = ("SELECT b.host, b.port, tenant, mode, mac, source, trunk, a.ips, "
                 "a.address_pairs FROM bindings b LEFT JOIN port_addresses a "
                 "ON a.host = b.host AND a.port = b.port")

    @staticmethod
    def _binding(row: tuple) -> StoredBinding:
        h, p, t, m, mac, s, tr, ips, pairs = row
        return StoredBinding(Binding(h, p, t, m, mac, tuple(filter(None, tr.split(","))),
                                     ips=tuple(json.loads(ips or "[]")),
                                     allowed_address_pairs=tuple(
                                         tuple(x) for x in json.loads(pairs or "[]"))), s)

    def bindings(self, host: str | None = None) -> list[StoredBinding]:
        q, args = self._BINDINGS + " WHERE 1=1", []
        if host:
            q, args = q + " AND b.host = ?", [host]
        return [self._binding(r) for r in self._db.execute(q + " ORDER BY b.host, b.port",
                                                           args).fetchall()]

    def binding(self, host: str, port: str) -> StoredBinding | None:
        row = self._db.execute(self._BINDINGS + " WHERE b.host = ? AND b.port = ?",
                               (host, port)).fetchone()
        return self._binding(row) if row else None

    def count_bindings(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM bindings").fetchone()[0]

    def link_endpoints(self) -> list[LinkEndpoint]:
        return [LinkEndpoint(h, m, tuple(json.loads(ips))) for h, m, ips in self._db.execute(
            "SELECT host, mac, ips FROM link_endpoints ORDER BY host, mac").fetchall()]

    def set_link_endpoints(self, host: str, endpoints: list[LinkEndpoint]) -> None:
        self._db.execute("DELETE FROM link_endpoints WHERE host = ?", (host,))
        self._db.executemany("INSERT INTO link_endpoints (host, mac, ips) VALUES (?, ?, ?)",
                             [(e.host, e.mac, json.dumps(list(e.ips))) for e in endpoints])

    def mac_taken(self, tenant: str | None, mac: str, host: str, port: str) -> bool:
        return self._db.execute(
            "SELECT 1 FROM bindings WHERE tenant = ? AND mac = ? AND NOT (host = ? AND port = ?)",
            (tenant, mac, host, port)).fetchone() is not None

    def limits(self) -> list[RateLimit]:
        rows = self._db.execute(
            "SELECT id, host, kbps, burst_kb, port, tenant, pps, burst_pkts FROM qos "
            "WHERE kind = 'limit' ORDER BY id").fetchall()
        return [RateLimit(*r) for r in rows]

    def rules(self) -> list[QosRule]:
        rows = self._db.execute(
            "SELECT id, tenant, priority, match, kbps, burst_kb, set_dscp, queue FROM qos "
            "WHERE kind = 'rule' ORDER BY tenant, priority DESC").fetchall()
        return [QosRule(i, t, p, _match_from_json(m), k, b, d, q)
                for i, t, p, m, k, b, d, q in rows]

    _ACL_COLUMNS = ("id, tenant, priority, action, direction, ip_proto, remote, local, port, "
                    "icmp_type, description")

    def acls(self, tenant: str | None = None) -> list[AclRule]:
        q = f"SELECT {self._ACL_COLUMNS} FROM acl_rules"
        args: tuple = ()
        if tenant is not None:
            q, args = q + " WHERE tenant = ?", (tenant,)
        rows = self._db.execute(q + " ORDER BY tenant, priority DESC", args).fetchall()
        return [AclRule(i, t, p, a, d, json.loads(proto) if proto else None, r, lo, port, icmp,
                        desc) for i, t, p, a, d, proto, r, lo, port, icmp, desc in rows]

    def acl_policies(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT tenant, default_action FROM acl_policy").fetchall())

    def operator_flows(self, dpid: int | None = None) -> list[OperatorFlow]:
        q = ("SELECT id, dpid, table_id, priority, match, actions, override, description "
             "FROM operator_flows")
        args: tuple = ()
        if dpid is not None:
            q, args = q + " WHERE dpid = ?", (dpid,)
        return [OperatorFlow(i, d, t, p, json.loads(m), tuple(json.loads(a)), bool(o), desc)
                for i, d, t, p, m, a, o, desc in self._db.execute(q + " ORDER BY id",
                                                                  args).fetchall()]

    def epoch(self) -> str:
        return self._db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0]

    # -- mutations ----------------------------------------------------------------
    def put_tenant(self, t: Tenant) -> None:
        self._db.execute("INSERT INTO tenants VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO "
                         "UPDATE SET vni = excluded.vni, vlan = excluded.vlan, "
                         "subnet = excluded.subnet, description = excluded.description",
                         (t.name, t.vni, t.vlan, t.subnet, t.description))

    def remove_tenant(self, name: str) -> None:
        self._db.execute("DELETE FROM tenants WHERE name = ?", (name,))

    def put_binding(self, sb: StoredBinding) -> None:
        b = sb.binding
        self._db.execute("INSERT OR REPLACE INTO bindings VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (b.host, b.port, b.tenant, b.mode, b.mac, sb.source, ",".join(b.trunk)))
        self._db.execute("DELETE FROM port_addresses WHERE host = ? AND port = ?",
                         (b.host, b.port))
        if b.ips or b.allowed_address_pairs:
            self._db.execute("INSERT INTO port_addresses VALUES (?, ?, ?, ?)",
                             (b.host, b.port, json.dumps(list(b.ips)),
                              json.dumps([list(x) for x in b.allowed_address_pairs])))

    def remove_binding(self, host: str, port: str) -> None:
        self._db.execute("DELETE FROM bindings WHERE host = ? AND port = ?", (host, port))

    def put_qos(self, x: RateLimit | QosRule) -> None:
        if isinstance(x, RateLimit):
            self._db.execute("INSERT OR REPLACE INTO qos (id, kind, host, port, tenant, kbps, "
                             "burst_kb, pps, burst_pkts) VALUES (?, 'limit', ?, ?, ?, ?, ?, ?, ?)",
                             (x.id, x.host, x.port, x.tenant, x.kbps, x.burst_kb, x.pps,
                              x.burst_pkts))
        else:
            self._db.execute("INSERT OR REPLACE INTO qos (id, kind, tenant, priority, match, "
                             "kbps, burst_kb, set_dscp, queue) VALUES "
                             "(?, 'rule', ?, ?, ?, ?, ?, ?, ?)",
                             (x.id, x.tenant, x.priority, json.dumps(dict(x.match)), x.kbps,
                              x.burst_kb, x.set_dscp, x.queue))

    def remove_qos(self, qos_id: int) -> None:
        self._db.execute("DELETE FROM qos WHERE id = ?", (qos_id,))

    def _next_id(self, table: str) -> int:
        """AUTOINCREMENT's next id: past every id ever used (sqlite_sequence) and present."""
        seq = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?",
                               (table,)).fetchone()
        top = self._db.execute(f"SELECT MAX(id) FROM {table}").fetchone()[0]
        return max(seq[0] if seq else 0, top or 0) + 1

    def new_acl_id(self) -> int:
        return self._next_id("acl_rules")

    def put_acl(self, r: AclRule) -> None:
        self._db.execute(
            f"INSERT OR REPLACE INTO acl_rules ({self._ACL_COLUMNS}) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r.id, r.tenant, r.priority, r.action, r.direction,
             None if r.ip_proto is None else json.dumps(r.ip_proto), r.remote, r.local, r.port,
             r.icmp_type, r.description))

    def remove_acl(self, rule_id: int) -> None:
        self._db.execute("DELETE FROM acl_rules WHERE id = ?", (rule_id,))

    def set_acl_policy(self, tenant: str, default: str | None) -> None:
        if default is None:
            self._db.execute("DELETE FROM acl_policy WHERE tenant = ?", (tenant,))
        else:
            self._db.execute("INSERT OR REPLACE INTO acl_policy VALUES (?, ?)", (tenant, default))

    def new_operator_flow_id(self) -> int:
        return self._next_id("operator_flows")

    def put_operator_flow(self, f: OperatorFlow) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO operator_flows (id, dpid, table_id, priority, match, "
            "actions, override, description) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (f.id, f.dpid, f.table_id, f.priority, json.dumps(dict(f.match)),
             json.dumps([dict(a) for a in f.actions]), int(f.override), f.description))

    def remove_operator_flow(self, flow_id: int) -> None:
        self._db.execute("DELETE FROM operator_flows WHERE id = ?", (flow_id,))

    def set_epoch(self, epoch: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('epoch', ?)", (epoch,))

    def reserve_ids(self, next_acl: int, next_operator_flow: int) -> None:
        for table, nxt in (("acl_rules", next_acl), ("operator_flows", next_operator_flow)):
            if self._next_id(table) >= nxt:
                continue
            if self._db.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = ?",
                                (nxt - 1, table)).rowcount == 0:
                self._db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)",
                                 (table, nxt - 1))


class Store(StoreBase):
    """The embedded SQLite backend (one controller owns the file); thread-safe: REST
    threads and the OpenFlow thread share it."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = str(path)
        self._db = _open_checked(path)
        self._lock = threading.RLock()
        self.version = 0            # bumped on every committed change

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _read(self, fn: Callable[[ModelTx], T]) -> T:
        with self._lock:
            try:
                return fn(SqliteTx(self._db))
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from None

    def _write(self, fn: Callable[[ModelTx], T]) -> T:
        with self._lock:
            with self._tx():
                result = fn(SqliteTx(self._db))
        self._notify()
        return result

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

    # -- host registrations: an expiry time stands in for etcd's lease ---------------------
    def register_host(self, name: str, data: dict, ttl: float) -> None:
        _check_host(name)
        if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or not 0 < ttl <= 86400:
            raise Invalid("ttl", "ttl must be in (0, 86400] seconds")
        value, now = json.dumps(data, sort_keys=True), time.time()
        with self._lock:
            try:
                row = self._db.execute("SELECT data FROM registrations WHERE name = ? AND "
                                       "expires > ?", (name, now)).fetchone()
                if row and row[0] == value:
                    # a heartbeat: only the lease gets longer.  No version bump, no notify:
                    # renewals must not resync every switch (etcd: a keepalive, no revision)
                    self._db.execute("UPDATE registrations SET expires = ? WHERE name = ?",
                                     (now + ttl, name))
                    return
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from None
            with self._tx():
                self._db.execute("INSERT OR REPLACE INTO registrations VALUES (?, ?, ?)",
                                 (name, value, now + ttl))
        self._notify()

    def registered_hosts(self) -> dict[str, dict]:
        rows = self._read(lambda tx: self._db.execute(
            "SELECT name, data FROM registrations WHERE expires > ? ORDER BY name",
            (time.time(),)).fetchall())
        return {n: json.loads(d) for n, d in rows}


def open_store(store: str | None, db: str | Path) -> StoreBase:
    """The backend weft-manager was told to use: ``--store etcd://HOST:PORT[,HOST:PORT]``
    (a cluster, see controller/store_etcd.py), else the SQLite file ``--weft-db``."""
    if store:
        from controller.store_etcd import EtcdStore
        return EtcdStore.from_url(store)
    return Store(db)

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
