"""The embedded backend: the model in one SQLite file that one controller owns.

``Store`` runs the shared logic (StoreBase) on ``SqliteTx``: every write in one
BEGIN IMMEDIATE transaction; the file's schema is in controller.store.schema.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, TypeVar

from cluster.ipam import Claim
from cluster.names import NameRecord
from controller.model import (DEFAULT_TENANT, AclRule, Binding, LinkEndpoint, QosRule,
                              RateLimit, Route, Tenant)
from controller.opflows import OperatorFlow
from controller.store.base import StoreBase
from controller.store.codec import match_from_json
from controller.store.errors import Conflict, StoreError, Unavailable
from controller.store.schema import open_checked
from controller.store.tx import ModelTx, StoredBinding, claim_order, route_order

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



class SqliteTx(ModelTx):
    """ModelTx on one SQLite connection; the caller holds the lock (and for writes the
    BEGIN IMMEDIATE transaction).  The schema's keys and triggers stay a second guard."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    _TENANTS = ("SELECT name, vni, vlan, subnet, description, domain, gateway, egress, "
                "conntrack_limit, subnet6, gateway6 FROM tenants")

    @staticmethod
    def _tenant(row: tuple) -> Tenant:
        name, vni, vlan, subnet, description, domain, gateway, egress, limit, subnet6, gw6 = row
        return Tenant(name, vni, vlan, subnet, description, domain, gateway, bool(egress), limit,
                      subnet6, gw6)

    def tenants(self) -> list[Tenant]:
        rows = self._db.execute(self._TENANTS + " WHERE name != ? ORDER BY name",
                                (DEFAULT_TENANT.name,)).fetchall()
        return [DEFAULT_TENANT] + [self._tenant(r) for r in rows]

    def tenant(self, name: str) -> Tenant | None:
        if name == DEFAULT_TENANT.name:
            return DEFAULT_TENANT
        row = self._db.execute(self._TENANTS + " WHERE name = ?", (name,)).fetchone()
        return self._tenant(row) if row else None

    def routes(self, tenant: str | None = None) -> list[Route]:
        q, args = "SELECT tenant, prefix, via, mac FROM routes", []
        if tenant is not None:
            q, args = q + " WHERE tenant = ?", [tenant]
        return sorted((Route(*r) for r in self._db.execute(q, args).fetchall()),
                      key=route_order)

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

    def container_names(self) -> dict[str, tuple[NameRecord, ...]]:
        return {h: tuple(NameRecord.from_json(d) for d in json.loads(recs))
                for h, recs in self._db.execute(
                    "SELECT host, records FROM container_names ORDER BY host").fetchall()}

    def set_container_names(self, host: str, records: tuple[NameRecord, ...]) -> None:
        if records:
            self._db.execute("INSERT OR REPLACE INTO container_names (host, records) "
                             "VALUES (?, ?)", (host, json.dumps([r.to_json() for r in records])))
        else:
            self._db.execute("DELETE FROM container_names WHERE host = ?", (host,))

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
        return [QosRule(i, t, p, match_from_json(m), k, b, d, q)
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

    def claims(self, network: str | None = None) -> list[Claim]:
        q, args = "SELECT network, cidr, host, kind FROM ipam_claims", []
        if network is not None:
            q, args = q + " WHERE network = ?", [network]
        return sorted((Claim(*r) for r in self._db.execute(q, args).fetchall()),
                      key=claim_order)

    # -- mutations ----------------------------------------------------------------
    def put_claim(self, c: Claim) -> None:
        self._db.execute("INSERT OR REPLACE INTO ipam_claims (network, cidr, host, kind) "
                         "VALUES (?, ?, ?, ?)", (c.network, c.cidr, c.host, c.kind))

    def remove_claim(self, network: str, cidr: str) -> None:
        self._db.execute("DELETE FROM ipam_claims WHERE network = ? AND cidr = ?",
                         (network, cidr))

    def put_tenant(self, t: Tenant) -> None:
        self._db.execute("INSERT INTO tenants (name, vni, vlan, subnet, description, domain, "
                         "gateway, egress, conntrack_limit, subnet6, gateway6) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                         "ON CONFLICT (name) "
                         "DO UPDATE SET vni = excluded.vni, vlan = excluded.vlan, "
                         "subnet = excluded.subnet, description = excluded.description, "
                         "domain = excluded.domain, gateway = excluded.gateway, "
                         "egress = excluded.egress, conntrack_limit = excluded.conntrack_limit, "
                         "subnet6 = excluded.subnet6, gateway6 = excluded.gateway6",
                         (t.name, t.vni, t.vlan, t.subnet, t.description, t.domain, t.gateway,
                          int(t.egress), t.conntrack_limit, t.subnet6, t.gateway6))

    def put_route(self, r: Route) -> None:
        self._db.execute("INSERT OR REPLACE INTO routes (tenant, prefix, via, mac) "
                         "VALUES (?, ?, ?, ?)", (r.tenant, r.prefix, r.via, r.mac))

    def remove_route(self, tenant: str, prefix: str) -> None:
        self._db.execute("DELETE FROM routes WHERE tenant = ? AND prefix = ?", (tenant, prefix))

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
        self._db = open_checked(path)
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
    def _register_host(self, name: str, value: str, ttl: float) -> None:
        now = time.time()
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

