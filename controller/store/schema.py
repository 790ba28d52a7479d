"""The SQLite file: its schema, the checks that open it, and the upgrades of older ones.

The schema's keys, triggers and CHECKs are the last wall behind the store's rules and
the model's checks; its bounds are the model's constants, not numbers of its own.
"""
from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cluster.ipam import KINDS as IPAM_KINDS
from controller.model import (ACCESS, ACL_ACTIONS, ACL_DEFAULTS, ACL_DIRECTIONS,
                              DEFAULT_TENANT, MAX_ACL_ID, MAX_ACL_PRIORITY, MAX_METER_ID,
                              MAX_TENANT_NAME, MAX_VNI, TRUNK, VLAN_MAX, VLAN_MIN,
                              default_gateway6, holds_address)
from controller.opflows import MAX_OPERATOR_FLOW_ID, MAX_PRIORITY, MAX_TABLE_ID
from controller.store.errors import StoreFileError
from controller.store.tx import BINDING_SOURCES, new_epoch

LOG = logging.getLogger("weft.store")


def _sql_in(values: tuple[str, ...]) -> str:
    """('a', 'b') -> "('a', 'b')": an SQL IN list of the model's words."""
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


SCHEMA_VERSION = 12         # PRAGMA user_version; 0 is the first, unversioned schema
# 3: port_addresses (port security), created by SCHEMA itself: no data to move
# 4: tenant ACLs (acl_rules, acl_policy) and operator flows (operator_flows): new tables
#    only, created by the idempotent SCHEMA
# 5: packet-rate limits: qos.pps and qos.burst_pkts, added to an older qos table by
#    _add_columns (ALTER TABLE ... ADD COLUMN; existing rows stay kbit/s limits)
# 6: meta (the store epoch) and registrations (hosts that registered themselves), new
#    tables created by SCHEMA; the epoch row is written when
#    the store is opened and has none (a new store, or one upgraded from schema 5)
# 7: link_endpoints (docker0 containers the agents report), a new table created by SCHEMA
# 8: networks inside a tenant (docs/routing.md section 0): tenants gains domain (NULL: a
#    tenant and its default network; else a further network of tenant `domain`), gateway
#    and egress, added by _upgrade_to_v8 (existing rows: no gateway, egress off: today's
#    meaning); routes, a new table created by SCHEMA
# 9: ipam_claims (cluster-wide IPAM: address blocks and single addresses hosts hold,
#    cluster/ipam.py), a new table created by SCHEMA: no data to move
# 10: container_names (the names of containers on weft networks the agents report,
#    docs/dns.md), a new table created by SCHEMA: no data to move.  (Branch dns; 9 is
#    the ipam branch's: this step follows it.)
# 11: dual-stack networks: tenants gains subnet6 (an IPv6 subnet beside the IPv4 one),
#    added by _add_columns (existing rows: NULL, no IPv6 subnet: today's meaning).
#    Bindings' IPv6 addresses live in port_addresses.ips beside the IPv4 ones (JSON
#    text already): no change there
# 12: a configurable IPv6 gateway: tenants gains gateway6, added by _upgrade_to_v12, which
#    writes every row's value explicitly so an old store keeps its meaning and loads: the
#    address schema 11 derived (subnet6's first, on a dual-stack network with a gateway),
#    or NULL (none, logged naming the port) when a port bound there already holds it

# a trunk (comma-separated names) lists only tenants that exist: one check, two triggers
_TRUNK_TENANTS_EXIST = """\
    SELECT RAISE(ABORT, 'trunk names an unknown tenant') WHERE
        (SELECT COUNT(*) FROM tenants
         WHERE instr(',' || NEW.trunk || ',', ',' || name || ',') > 0)
        != length(NEW.trunk) - length(replace(NEW.trunk, ',', '')) + 1;
"""

# Invariants live in the database, so no interleaving of writers can break them:
# a binding or QoS entry names an existing tenant (foreign keys), a trunk lists only
# existing tenants (triggers), and values stay in the ranges OpenFlow and VXLAN take.
# The built-in default tenant has a row so that bindings can refer to it.
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND {MAX_TENANT_NAME}),
    vni INTEGER NOT NULL UNIQUE CHECK (vni BETWEEN 1 AND {MAX_VNI}),
    vlan INTEGER UNIQUE CHECK (vlan IS NULL OR vlan BETWEEN {VLAN_MIN} AND {VLAN_MAX}),
    subnet TEXT,
    description TEXT NOT NULL DEFAULT '',
    domain TEXT REFERENCES tenants(name),      -- schema 8: NULL, or the network's tenant
    gateway TEXT,                              -- schema 8: IPv4 address in subnet
    egress INTEGER NOT NULL DEFAULT 0 CHECK (egress IN (0, 1)),  -- schema 8
    conntrack_limit INTEGER NOT NULL DEFAULT 65536 CHECK (conntrack_limit > 0),  -- schema 8
    subnet6 TEXT,                              -- schema 11: IPv6 subnet (dual-stack)
    gateway6 TEXT                              -- schema 12: IPv6 address in subnet6
);
INSERT OR IGNORE INTO tenants (name, vni) VALUES ('{DEFAULT_TENANT.name}', {DEFAULT_TENANT.vni});
CREATE TABLE IF NOT EXISTS bindings (
    host TEXT NOT NULL,
    port TEXT NOT NULL,
    tenant TEXT REFERENCES tenants(name),   -- access tenant, or a trunk's native (may be NULL)
    mode TEXT NOT NULL CHECK (mode IN ('{ACCESS}', '{TRUNK}')),
    mac TEXT,
    source TEXT NOT NULL DEFAULT 'api' CHECK (source IN {_sql_in(BINDING_SOURCES)}),
    trunk TEXT NOT NULL DEFAULT '', -- trunk: tenants carried tagged, comma-separated
    PRIMARY KEY (host, port),
    CHECK (mode = '{TRUNK}' OR (tenant IS NOT NULL AND trunk = '')),
    CHECK (mode = '{ACCESS}' OR tenant IS NOT NULL OR trunk != '')
);
CREATE TABLE IF NOT EXISTS qos (
    id INTEGER PRIMARY KEY AUTOINCREMENT CHECK (id BETWEEN 1 AND {MAX_METER_ID}),  -- the meter id
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
    id INTEGER PRIMARY KEY AUTOINCREMENT CHECK (id BETWEEN 1 AND {MAX_ACL_ID}),  -- in the cookie
    tenant TEXT NOT NULL REFERENCES tenants(name),
    priority INTEGER NOT NULL CHECK (priority BETWEEN 1 AND {MAX_ACL_PRIORITY}),
    action TEXT NOT NULL CHECK (action IN {_sql_in(ACL_ACTIONS)}),
    direction TEXT NOT NULL CHECK (direction IN {_sql_in(ACL_DIRECTIONS)}),
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
    default_action TEXT NOT NULL CHECK (default_action IN {_sql_in(ACL_DEFAULTS)})
);
CREATE TABLE IF NOT EXISTS operator_flows (
    id INTEGER PRIMARY KEY AUTOINCREMENT CHECK (id BETWEEN 1 AND {MAX_OPERATOR_FLOW_ID}),  -- in the cookie
    dpid INTEGER NOT NULL,
    table_id INTEGER NOT NULL CHECK (table_id BETWEEN 0 AND {MAX_TABLE_ID}),
    priority INTEGER NOT NULL CHECK (priority BETWEEN 0 AND {MAX_PRIORITY}),
    match TEXT NOT NULL,                   -- JSON object, ofctl field names
    actions TEXT NOT NULL,                 -- JSON list, ofctl actions
    override INTEGER NOT NULL DEFAULT 0,
    description TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS bindings_tenant ON bindings(tenant);
CREATE INDEX IF NOT EXISTS tenants_domain ON tenants(domain);
CREATE INDEX IF NOT EXISTS bindings_tenant_mac ON bindings(tenant, mac);  -- the MAC check
CREATE INDEX IF NOT EXISTS qos_tenant ON qos(tenant);
CREATE TRIGGER IF NOT EXISTS trunk_tenants_exist_insert BEFORE INSERT ON bindings
WHEN NEW.trunk != '' BEGIN
{_TRUNK_TENANTS_EXIST}END;
CREATE TRIGGER IF NOT EXISTS trunk_tenants_exist_update BEFORE UPDATE OF trunk ON bindings
WHEN NEW.trunk != '' BEGIN
{_TRUNK_TENANTS_EXIST}END;
CREATE TRIGGER IF NOT EXISTS tenant_not_on_a_trunk BEFORE DELETE ON tenants BEGIN
    SELECT RAISE(ABORT, 'tenant is carried on a trunk') WHERE EXISTS (
        SELECT 1 FROM bindings WHERE instr(',' || trunk || ',', ',' || OLD.name || ',') > 0);
END;
-- port security addresses of a binding (schema 3; a table of its own, so a port that
-- is unbound loses them with its row)
CREATE TABLE IF NOT EXISTS port_addresses (
    host TEXT NOT NULL,
    port TEXT NOT NULL,
    ips TEXT NOT NULL DEFAULT '[]',             -- JSON list of IPv4/IPv6 addresses/CIDRs
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
-- a tenant's static routes (schema 8): prefix via a host address of one of its networks
CREATE TABLE IF NOT EXISTS routes (
    tenant TEXT NOT NULL REFERENCES tenants(name),
    prefix TEXT NOT NULL,                      -- IPv4/IPv6 CIDR (a /32, /128 without length)
    via TEXT NOT NULL,                         -- an address of the prefix's family
    mac TEXT,                                  -- the next hop's MAC when no binding has via
    PRIMARY KEY (tenant, prefix)
) WITHOUT ROWID;
-- cluster-wide IPAM (schema 9): blocks of a network's subnet a host allocates from, and
-- single addresses (docker run --ip outside every block) a host holds; never overlapping
-- (the store's transaction decides, cluster/ipam.py)
CREATE TABLE IF NOT EXISTS ipam_claims (
    network TEXT NOT NULL REFERENCES tenants(name),
    cidr TEXT NOT NULL,                        -- IPv4 CIDR (an address: /32)
    host TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN {_sql_in(IPAM_KINDS)}),
    PRIMARY KEY (network, cidr)
) WITHOUT ROWID;

-- names of containers on weft networks, as each host's agent reports them (schema 10)
CREATE TABLE IF NOT EXISTS container_names (
    host TEXT PRIMARY KEY,
    records TEXT NOT NULL DEFAULT '[]'         -- JSON list of cluster.names.NameRecord
) WITHOUT ROWID;
PRAGMA user_version = {SCHEMA_VERSION};
"""
_TABLES = {"tenants", "bindings", "qos"}          # the tables of schema 0 (upgraded from)
_V0_TABLES = tuple(sorted(_TABLES))
_KNOWN_TABLES = _TABLES | {"port_addresses", "acl_rules", "acl_policy", "operator_flows", "meta",
                             "registrations", "link_endpoints", "routes", "ipam_claims",
                             "container_names"}


def open_checked(path: str | Path) -> sqlite3.Connection:
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
        # Upgrades run in order, each in its own transaction, so an old file gets every
        # step after its version; a new column or table gets SCHEMA_VERSION + 1 and a
        # step here (ALTER TABLE ... ADD COLUMN ...).  Each step is idempotent.
        if version == 0 and tables:
            _migrate_from_v0(db)           # into SCHEMA's tables: has every later column
        elif version < 5 and "qos" in tables:
            _add_columns(db, "qos", _QOS_V5_COLUMNS, 5)
        if version < 8 and "tenants" in tables:
            _upgrade_to_v8(db)
        if version < 11 and "tenants" in tables:
            _add_columns(db, "tenants", _TENANTS_V11_COLUMNS, 11)
        if version < 12 and "tenants" in tables:
            _upgrade_to_v12(db)
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


@contextmanager
def _upgrade(db: sqlite3.Connection, version: int) -> Iterator[None]:
    """One upgrade step in one transaction, ending at ``version`` (or rolled back)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute(f"PRAGMA user_version = {int(version)}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _migrate_from_v0(db: sqlite3.Connection) -> None:
    """The first schema had no foreign keys: copy into the checked tables, dropping orphans."""
    with _upgrade(db, 7):
        for t in _V0_TABLES:
            db.execute(f"ALTER TABLE {t} RENAME TO old_{t}")
        for stmt in _statements(SCHEMA):
            db.execute(stmt)
        db.execute("INSERT INTO tenants (name, vni, vlan, subnet, description) "
                   "SELECT name, vni, vlan, subnet, description FROM old_tenants "
                   "WHERE name != ?", (DEFAULT_TENANT.name,))
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


_QOS_V5_COLUMNS = (("pps", "INTEGER"), ("burst_pkts", "INTEGER NOT NULL DEFAULT 0"))
_TENANTS_V8_COLUMNS = (("domain", "TEXT REFERENCES tenants(name)"), ("gateway", "TEXT"),
                       ("egress", "INTEGER NOT NULL DEFAULT 0 CHECK (egress IN (0, 1))"),
                       ("conntrack_limit",
                        "INTEGER NOT NULL DEFAULT 65536 CHECK (conntrack_limit > 0)"))


_TENANTS_V11_COLUMNS = (("subnet6", "TEXT"),)
_TENANTS_V12_COLUMNS = (("gateway6", "TEXT"),)


def _new_columns(db: sqlite3.Connection, table: str,
                 columns: tuple[tuple[str, str], ...]) -> None:
    """ALTER TABLE ... ADD COLUMN for each column ``table`` lacks (a column already
    there is left alone); inside the caller's transaction."""
    have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
    for name, decl in columns:
        if name not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")


def _add_columns(db: sqlite3.Connection, table: str,
                 columns: tuple[tuple[str, str], ...], version: int) -> None:
    """Add the columns a newer schema has to an older table, in one transaction ending
    at ``version`` (idempotent)."""
    with _upgrade(db, version):
        _new_columns(db, table, columns)


def _upgrade_to_v8(db: sqlite3.Connection) -> None:
    """Schema 8: tenants gain domain, gateway and egress; every existing row is a tenant
    (its own default network) without a gateway: a device of it may hold the subnet's
    first address (a trunk's router often does), so nothing it reaches changes until an
    operator gives it one (`weftctl network set NAME --gateway IP`)."""
    with _upgrade(db, 8):
        _new_columns(db, "tenants", _TENANTS_V8_COLUMNS)


def _upgrade_to_v12(db: sqlite3.Connection) -> None:
    """Schema 12: tenants gain gateway6, written for every row.  Schema 11 derived it
    (``default_gateway6``: subnet6's first address, on a network with a gateway); a port
    bound by hand with that address before would now collide with it and make the store
    refuse to load, so such a network gets none (NULL) and a log line naming the port:
    the operator gives it one (`weftctl network set NAME --gateway6 ADDR`)."""
    with _upgrade(db, 12):
        have = {r[1] for r in db.execute("PRAGMA table_info(tenants)")}
        if "gateway6" in have:          # a step that ran already (idempotent)
            return
        _new_columns(db, "tenants", _TENANTS_V12_COLUMNS)
        held: dict[str, list[tuple[str, str, list[str]]]] = {}
        pa = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                       "AND name = 'port_addresses'")}
        if pa:
            for host, port, tenant, ips in db.execute(
                    "SELECT b.host, b.port, b.tenant, a.ips FROM bindings b "
                    "JOIN port_addresses a ON a.host = b.host AND a.port = b.port "
                    "WHERE b.tenant IS NOT NULL"):
                try:
                    addrs = [str(x) for x in json.loads(ips or "[]")]
                except (ValueError, TypeError):
                    continue
                held.setdefault(tenant, []).append((host, port, addrs))
        for name, gateway, subnet6 in db.execute(
                "SELECT name, gateway, subnet6 FROM tenants").fetchall():
            try:
                gw6 = default_gateway6(gateway, subnet6)
            except ValueError:
                gw6 = None
            if gw6 is None:
                continue
            taken = next(((h, p) for h, p, addrs in held.get(name, ())
                          if holds_address(addrs, gw6)), None)
            if taken is not None:
                LOG.warning("store upgrade: network %s keeps no IPv6 gateway: port %s/%s is "
                            "bound with %s, the address weft derived for it before; give "
                            "it one with `weftctl network set %s --gateway6 ADDR`",
                            name, taken[0], taken[1], gw6, name)
                continue
            db.execute("UPDATE tenants SET gateway6 = ? WHERE name = ?", (gw6, name))


def _statements(script: str) -> list[str]:
    """Split SCHEMA into statements (triggers hold ';' inside BEGIN ... END)."""
    out, cur = [], ""
    for line in script.splitlines(keepends=True):
        cur += line
        if sqlite3.complete_statement(cur):
            out.append(cur.strip())
            cur = ""
    return [s for s in out if s]

