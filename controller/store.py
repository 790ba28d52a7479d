"""Tenants and port bindings, persisted in SQLite.

Every write validates first and runs in one transaction, so a refused request
changes nothing.  Errors are typed (NotFound, Conflict, Invalid) with the
offending field, and the REST layer maps them to 404/409/422.
"""
from __future__ import annotations

import ipaddress
import json
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import replace as replace_
from pathlib import Path

from controller.model import (ACCESS, DEFAULT_TENANT, DOCKER_LINK_PORT, MAX_VNI, TRUNK,
                              Binding, QosRule, RateLimit, Tenant)

FIRST_AUTO_VNI = 1000
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
PORT_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS qos (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- also the OpenFlow meter id
    kind TEXT NOT NULL,                    -- 'limit' or 'rule'
    host TEXT,                             -- limit: its host
    port TEXT,                             -- limit: a bound port (traffic it sends)...
    tenant TEXT,                           -- ...or the tenant's aggregate; rule: its tenant
    kbps INTEGER,
    burst_kb INTEGER NOT NULL DEFAULT 0,
    priority INTEGER,                      -- rule only
    match TEXT,                            -- rule only: JSON object
    set_dscp INTEGER,                      -- rule only
    queue INTEGER                          -- rule only
);
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY,
    vni INTEGER NOT NULL UNIQUE,
    vlan INTEGER UNIQUE,
    subnet TEXT,
    description TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS bindings (
    host TEXT NOT NULL,
    port TEXT NOT NULL,
    tenant TEXT,                    -- access tenant, or a trunk's native tenant (may be NULL)
    mode TEXT NOT NULL,
    mac TEXT,
    source TEXT NOT NULL DEFAULT 'api',
    trunk TEXT NOT NULL DEFAULT '', -- trunk: tenants carried tagged, comma-separated
    PRIMARY KEY (host, port)
);
-- port security addresses of a binding (a table of its own: older databases need no
-- migration, and a port that is unbound or rebound elsewhere loses them with the row)
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
"""


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


@dataclass(frozen=True)
class StoredBinding:
    binding: Binding
    source: str             # "api" (REST/weftctl) or "agent" (ovs-agent attach)


def check_name(name: str, field: str = "name") -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise Invalid(field, f"{name!r} is not a valid name (lowercase letter first, then "
                             "lowercase letters, digits, '-' or '_', at most 32)")
    return name


class Store:
    """The controller's state; thread-safe (REST threads and the OpenFlow thread share it)."""

    def __init__(self, path: str | Path) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.RLock()
        self.version = 0            # bumped on every committed change

    # -- reads ---------------------------------------------------------------
    def tenants(self) -> list[Tenant]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, vni, vlan, subnet, description FROM tenants ORDER BY name").fetchall()
        return [DEFAULT_TENANT] + [Tenant(*r) for r in rows]

    def tenant(self, name: str) -> Tenant:
        for t in self.tenants():
            if t.name == name:
                return t
        raise NotFound("name", f"no tenant {name!r}")

    def count_bindings(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM bindings").fetchone()[0]

    def bindings(self, host: str | None = None, tenant: str | None = None) -> list[StoredBinding]:
        q, args = ("SELECT b.host, b.port, tenant, mode, mac, source, trunk, a.ips, "
                   "a.address_pairs FROM bindings b LEFT JOIN port_addresses a "
                   "ON a.host = b.host AND a.port = b.port WHERE 1=1"), []
        if host:
            q, args = q + " AND b.host = ?", args + [host]
        with self._lock:
            rows = self._db.execute(q + " ORDER BY b.host, b.port", args).fetchall()
        out = [StoredBinding(Binding(h, p, t, m, mac, tuple(filter(None, tr.split(","))),
                                     ips=tuple(json.loads(ips or "[]")),
                                     allowed_address_pairs=tuple(
                                         tuple(x) for x in json.loads(pairs or "[]"))), s)
               for h, p, t, m, mac, s, tr, ips, pairs in rows]
        return [sb for sb in out if tenant is None or tenant in sb.binding.tenants]

    # -- tenant writes ----------------------------------------------------------
    def create_tenant(self, name: str, vni: int | None = None, vlan: int | None = None,
                      subnet: str | None = None, description: str = "") -> Tenant:
        check_name(name)
        subnet = _check_subnet(subnet)
        _check_vlan(vlan)
        with self._lock, self._tx():
            if self._db.execute("SELECT 1 FROM tenants WHERE name = ?", (name,)).fetchone() \
                    or name == DEFAULT_TENANT.name:
                raise Conflict("name", f"tenant {name!r} already exists")
            if vni is None:
                vni = self._free_vni()
            elif not isinstance(vni, int) or not FIRST_AUTO_VNI <= vni <= MAX_VNI:
                raise Invalid("vni", f"vni must be in {FIRST_AUTO_VNI}..{MAX_VNI}")
            self._check_unique("vni", vni, name)
            self._check_unique("vlan", vlan, name)
            self._db.execute("INSERT INTO tenants VALUES (?, ?, ?, ?, ?)",
                             (name, vni, vlan, subnet, description or ""))
        return self.tenant(name)

    def update_tenant(self, name: str, **changes: object) -> Tenant:
        """Change vlan, subnet or description (the VNI is the tenant's identity)."""
        if name == DEFAULT_TENANT.name:
            raise Conflict("name", "the default tenant is built in and cannot be changed")
        cur = self.tenant(name)
        vlan = changes.get("vlan", cur.vlan)
        subnet = _check_subnet(changes.get("subnet", cur.subnet))
        _check_vlan(vlan)
        with self._lock, self._tx():
            self._check_unique("vlan", vlan, name)
            if vlan is None and self._trunk_uses(name):
                raise Conflict("vlan", f"tenant {name!r} is carried on a trunk and needs a vlan")
            self._db.execute("UPDATE tenants SET vlan = ?, subnet = ?, description = ? "
                             "WHERE name = ?", (vlan, subnet,
                                               changes.get("description", cur.description), name))
        return self.tenant(name)

    def delete_tenant(self, name: str, force: bool = False) -> int:
        """Delete a tenant; with force also its bindings.  Returns bindings removed."""
        if name == DEFAULT_TENANT.name:
            raise Conflict("name", "the default tenant is built in and cannot be deleted")
        self.tenant(name)
        with self._lock, self._tx():
            n = self._db.execute("SELECT COUNT(*) FROM bindings WHERE tenant = ?",
                                 (name,)).fetchone()[0]
            trunks = [r for r in self._db.execute(
                "SELECT host, port, trunk FROM bindings WHERE mode = ?", (TRUNK,))
                if name in r[2].split(",")]
            n += len(trunks)
            n += self._db.execute("SELECT COUNT(*) FROM qos WHERE tenant = ?", (name,)).fetchone()[0]
            if n and not force:
                raise Conflict("name", f"tenant {name!r} has {n} port binding(s) or QoS "
                                       "settings; remove them or delete with force=true")
            self._db.execute("DELETE FROM qos WHERE tenant = ?", (name,))
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
        with self._lock:
            rows = self._db.execute("SELECT id, host, kbps, burst_kb, port, tenant FROM qos "
                                    "WHERE kind = 'limit' ORDER BY id").fetchall()
        return [RateLimit(*r) for r in rows]

    def rules(self) -> list[QosRule]:
        with self._lock:
            rows = self._db.execute("SELECT id, tenant, priority, match, kbps, burst_kb, "
                                    "set_dscp, queue FROM qos WHERE kind = 'rule' "
                                    "ORDER BY tenant, priority DESC").fetchall()
        return [QosRule(i, t, p, _match_from_json(m), k, b, d, q)
                for i, t, p, m, k, b, d, q in rows]

    def add_limit(self, host: str, kbps: int, burst_kb: int = 0, port: str | None = None,
                  tenant: str | None = None) -> RateLimit:
        """Limit what a bound port sends, or a tenant's aggregate on one host."""
        check_name(host, "host")
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
            limit = _model(lambda: RateLimit(meter, host, kbps, burst_kb, port, tenant), "kbps")
            self._db.execute("INSERT INTO qos (id, kind, host, port, tenant, kbps, burst_kb) "
                             "VALUES (?, 'limit', ?, ?, ?, ?, ?)",
                             (meter, host, port, tenant, kbps, burst_kb))
        return limit

    def update_limit(self, limit_id: int, kbps: int | None = None,
                     burst_kb: int | None = None) -> RateLimit:
        cur = next((x for x in self.limits() if x.id == limit_id), None)
        if cur is None:
            raise NotFound("id", f"no rate limit {limit_id}")
        new = _model(lambda: RateLimit(cur.id, cur.host, cur.kbps if kbps is None else kbps,
                                       cur.burst_kb if burst_kb is None else burst_kb,
                                       cur.port, cur.tenant), "kbps")
        with self._lock, self._tx():
            self._db.execute("UPDATE qos SET kbps = ?, burst_kb = ? WHERE id = ?",
                             (new.kbps, new.burst_kb, limit_id))
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

    def update_rule(self, rule_id: int, **changes: object) -> QosRule:
        cur = next((r for r in self.rules() if r.id == rule_id), None)
        if cur is None:
            raise NotFound("id", f"no QoS rule {rule_id}")
        fields = {"kbps": cur.kbps, "burst_kb": cur.burst_kb, "set_dscp": cur.set_dscp,
                  "queue": cur.queue, **changes}
        new = _model(lambda: QosRule(cur.id, cur.tenant, cur.priority, cur.match, **fields),
                     "kbps")
        with self._lock, self._tx():
            self._db.execute("UPDATE qos SET kbps = ?, burst_kb = ?, set_dscp = ?, queue = ? "
                             "WHERE id = ?", (new.kbps, new.burst_kb, new.set_dscp, new.queue,
                                              rule_id))
        return new

    def delete_qos(self, kind: str, qos_id: int) -> None:
        with self._lock, self._tx():
            if not self._db.execute("DELETE FROM qos WHERE kind = ? AND id = ?",
                                    (kind, qos_id)).rowcount:
                raise NotFound("id", f"no {'rate limit' if kind == 'limit' else 'QoS rule'} "
                                     f"{qos_id}")

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
        check_name(host, "host")
        if not isinstance(port, str) or not PORT_RE.match(port):
            raise Invalid("port", f"{port!r} is not a valid OVS port name (<= 15 chars)")
        if port == DOCKER_LINK_PORT:
            raise Conflict("port", f"{port} is the docker0 link, owned by the default tenant")
        if mode not in (ACCESS, TRUNK):
            raise Invalid("mode", f"mode {mode!r} is not access or trunk")
        if mac is not None and (not isinstance(mac, str) or not MAC_RE.match(mac.lower())
                                or int(mac[:2], 16) & 1):
            raise Invalid("mac", f"{mac!r} is not a unicast MAC address")
        if mode == ACCESS:
            if tenant is None:
                raise Invalid("tenant", "an access port needs a tenant")
            if trunk:
                raise Invalid("trunk", "an access port carries no trunk tenants")
        else:
            if mac is not None:
                raise Invalid("mac", "a trunk port has no single endpoint MAC")
            if not trunk and tenant is None:
                raise Invalid("trunk", "a trunk carries at least one tenant")
            if len(set(trunk)) != len(trunk):
                raise Invalid("trunk", "a tenant is listed twice")
            if tenant in trunk:
                raise Invalid("trunk", f"the native tenant {tenant!r} is also in the trunk")
        if tenant is not None:
            try:
                self.tenant(tenant)
            except NotFound:
                raise NotFound("tenant", f"no tenant {tenant!r}") from None
        for name in trunk:
            try:
                t = self.tenant(name)
            except NotFound:
                raise NotFound("trunk", f"no tenant {name!r}") from None
            if t.vlan is None:
                raise Invalid("trunk", f"tenant {name!r} has no VLAN id: set one to carry it "
                                       "on a trunk")
        return Binding(host, port, tenant, mode, mac, tuple(trunk))

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
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        self.version += 1

def _model(build, field: str):
    """Build a model value; its own validation errors become a 422 naming `field`."""
    try:
        return build()
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        for name in ("kbps", "burst_kb", "priority", "set_dscp", "queue", "match", "port",
                     "tenant"):
            if name in msg:
                field = name
                break
        raise Invalid(field, msg) from None


def _match_from_json(text: str | None) -> tuple:
    return tuple(sorted(json.loads(text or "{}").items()))


def _check_subnet(subnet: object) -> str | None:
    if subnet in (None, ""):
        return None
    try:
        return str(ipaddress.ip_network(str(subnet)))
    except ValueError as exc:
        raise Invalid("subnet", f"{subnet!r} is not a network: {exc}") from None


def _check_vlan(vlan: object) -> None:
    if vlan is not None and (not isinstance(vlan, int) or isinstance(vlan, bool)
                             or not 1 <= vlan <= 4094):
        raise Invalid("vlan", f"vlan {vlan!r} is not in 1..4094")
