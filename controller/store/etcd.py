"""The etcd backend of the store: several weft-managers share one model.

Client: etcd3gw (OpenStack's maintained client for etcd's grpc-gateway JSON API; pure
Python over `requests`, no grpcio): its transport, URL discovery and error types are used;
the requests themselves (txn with compares, ranges at a revision, leases, the watch
stream) are built here because the store needs the response headers (revisions) that
the convenience calls drop.  tooz was not chosen: it gives locks and elections, not
transactions on keys, and the model needs compare-and-swap; the `ha` helper may still
use it (or this module's leases) for the election.

Key layout under the prefix (default ``/weft/v1/``), values JSON (the export format's
documents, see controller/store/codec.py):

    meta/epoch                    the store epoch (created once, with the first use)
    meta/rev                      bumped by every model write: the CAS target
    meta/next-acl-id              next ACL rule id (ids are never reused: cookies)
    meta/next-operator-flow-id    next operator flow id
    tenants/NAME                  {"name", "vni", "vlan", "subnet", "subnet6", "description",
                                   "domain", "gateway", "egress", "gateway6"}: a tenant, or (domain
                                  set) a network of tenant `domain`; documents from before
                                  networks lack domain, gateway and egress, those before
                                  schema 11 subnet6, those before schema 12 gateway6 (read
                                  as the SQLite upgrade's values: codec.tenant_of and
                                  keep_loadable), so no upgrade step rewrites them
    routes/TENANT/PREFIX          {"tenant", "prefix", "via", "mac"}: a static route (the
                                  prefix's "/" written "_": routes/red/0.0.0.0_0)
    bindings/HOST/PORT            {"host", "port", "tenant", "mode", "mac", "trunk", ...}
    qos/ID                        a rate limit ({"kind": "limit", ...}) or a QoS rule
    acls/ID                       an ACL rule
    acl-defaults/TENANT           "allow" or "deny"
    operator-flows/ID             an operator flow
    hosts/NAME                    a host's self-registration, attached to a lease
    docker0/HOST                  [{"mac", "ips"}, ...]: the host's docker0 containers
    ipam/NETWORK/CIDR             {"network", "cidr", "host", "kind"}: an IPAM claim
                                  (schema 9, cluster/ipam.py): a block of the network's
                                  subnet a host allocates from, or one address it holds
                                  (kind "address", a /32); "/" written "_"
                                  (ipam/red/10.10.0.64_26)
    names/HOST                    [{"network", "name", "ip", "container", "primary"}, ...]:
                                  its containers' names on weft networks (docs/dns.md)

Writes are optimistic transactions: the shared logic (StoreBase) runs on a snapshot of
the model taken at ``meta/rev``'s mod revision R, and the resulting puts and deletes
commit in one etcd txn only if ``meta/rev`` is still at R (compare MOD == R); otherwise
the txn's failure branch returns the current model and the write runs again.  So every
model write is serialised exactly as SQLite's BEGIN IMMEDIATE serialises it: two
controllers can never both take VNI 1000, one meter id or one port.  Reads check
``meta/rev`` (one key, linearizable) and re-read the model only when it moved.
"""
from __future__ import annotations

import base64
import json
import logging
import math
import socket
import threading
import time
import warnings
from functools import partial
from collections.abc import Iterator
from dataclasses import dataclass, field
from dataclasses import replace as replace_
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

import requests

with warnings.catch_warnings():     # futurist (etcd3gw's watch helper) probes for eventlet
    warnings.simplefilter("ignore")
    from etcd3gw import exceptions as etcd_exc
    from etcd3gw.client import Etcd3Client

from cluster.ipam import Claim
from controller.etcd_access import EtcdAccess, EtcdAccessError
from cluster.names import NameRecord
from controller.model import (DEFAULT_TENANT, AclRule, LinkEndpoint, QosRule, RateLimit, Route,
                              Tenant)
from controller.opflows import OperatorFlow
from controller.store.base import StoreBase
from controller.store.codec import (acl_doc, acl_of, binding_doc, binding_of, claim_doc,
                                    claim_of, limit_doc,
                                    limit_of, operator_flow_doc, operator_flow_of, route_doc,
                                    route_of, rule_doc, rule_of, tenant_doc, tenant_of,
                                    keep_loadable)
from controller.store.errors import Invalid, StoreError, StoreFileError, Unavailable
from controller.store.tx import ModelTx, StoredBinding, claim_order, new_epoch, route_order

LOG = logging.getLogger("weft.store.etcd")
T = TypeVar("T")
DEFAULT_PREFIX = "/weft/v1/"
DEFAULT_PORT = 2379
WRITE_ATTEMPTS = 64             # lost races before a write gives up with 503
REQUEST_TIMEOUT = 2.0           # seconds per small request to one member
BIG_TIMEOUT = 30.0              # a whole-model range or a txn of many keys
WATCH_IDLE = 30.0               # reconnect a watch stream silent for this long


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _unb64(s: str) -> str:
    return base64.b64decode(s).decode()


def _range_end(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def parse_url(url: str) -> tuple[list[tuple[str, int]], str]:
    """``etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`` -> endpoints and the key prefix."""
    parts = urlsplit(url)
    if parts.scheme != "etcd" or not parts.netloc:
        raise StoreFileError(f"{url}: not an etcd store URL (etcd://HOST:PORT[,HOST:PORT...])")
    endpoints = []
    for item in parts.netloc.split(","):
        host, _, port = item.rpartition(":") if item.count(":") == 1 or "]" in item else \
            (item, "", "")
        host = host.strip("[]") or item
        try:
            endpoints.append((host, int(port) if port else DEFAULT_PORT))
        except ValueError:
            raise StoreFileError(f"{url}: bad endpoint {item!r} (HOST:PORT)") from None
    prefix = parts.path.rstrip("/") + "/" if parts.path not in ("", "/") else DEFAULT_PREFIX
    return endpoints, prefix


@dataclass
class _Snapshot:
    """The model as etcd held it at one revision (of ``meta/rev``: ``rev_mod``)."""
    rev_mod: int = 0
    epoch: str = ""
    next_acl: int = 1
    next_flow: int = 1
    tenants: dict[str, Tenant] = field(default_factory=dict)
    bindings: dict[tuple[str, str], StoredBinding] = field(default_factory=dict)
    qos: dict[int, RateLimit | QosRule] = field(default_factory=dict)
    acls: dict[int, AclRule] = field(default_factory=dict)
    policies: dict[str, str] = field(default_factory=dict)
    flows: dict[int, OperatorFlow] = field(default_factory=dict)
    docker0: dict[str, tuple[LinkEndpoint, ...]] = field(default_factory=dict)
    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    claims: dict[tuple[str, str], Claim] = field(default_factory=dict)
    names: dict[str, tuple[NameRecord, ...]] = field(default_factory=dict)
    # tenant documents from before schema 12 (no gateway6): the first write rewrites them
    # with the value they were read as, so that meaning is kept from then on
    legacy: frozenset[str] = frozenset()

    def copy(self) -> _Snapshot:
        return replace_(self, tenants=dict(self.tenants), bindings=dict(self.bindings),
                        qos=dict(self.qos), acls=dict(self.acls), policies=dict(self.policies),
                        flows=dict(self.flows), docker0=dict(self.docker0),
                        routes=dict(self.routes), claims=dict(self.claims),
                        names=dict(self.names))


def _route_key(tenant: str, prefix: str) -> str:
    return f"routes/{tenant}/{prefix.replace('/', '_')}"


def _claim_key(network: str, cidr: str) -> str:
    return f"ipam/{network}/{cidr.replace('/', '_')}"


def _snapshot(kvs: list[dict], prefix: str) -> _Snapshot:
    """Parse a range of the prefix; a value weft cannot read is a 503 naming the key."""
    s = _Snapshot()
    legacy: set[str] = set()            # tenant documents from before schema 12
    for kv in kvs:
        key = _unb64(kv["key"])[len(prefix):]
        raw = _unb64(kv.get("value", ""))
        kind, _, rest = key.partition("/")
        try:
            if key == "meta/rev":
                s.rev_mod = int(kv.get("mod_revision", 0))
            elif key == "meta/epoch":
                s.epoch = raw
            elif key == "meta/next-acl-id":
                s.next_acl = int(raw)
            elif key == "meta/next-operator-flow-id":
                s.next_flow = int(raw)
            elif kind == "tenants":
                doc = json.loads(raw)
                t = tenant_of(doc)
                s.tenants[t.name] = t
                if "gateway6" not in doc:
                    legacy.add(t.name)
            elif kind == "bindings":
                sb = binding_of(json.loads(raw))
                s.bindings[(sb.binding.host, sb.binding.port)] = sb
            elif kind == "qos":
                doc = json.loads(raw)
                x = limit_of(doc) if doc.pop("kind") == "limit" else rule_of(doc)
                s.qos[x.id] = x
            elif kind == "acls":
                r = acl_of(json.loads(raw))
                s.acls[r.id] = r
            elif kind == "acl-defaults":
                s.policies[rest] = json.loads(raw)
            elif kind == "operator-flows":
                f = operator_flow_of(json.loads(raw))
                s.flows[f.id] = f
            elif kind == "routes":
                route = route_of(json.loads(raw))
                s.routes[(route.tenant, route.prefix)] = route
            elif kind == "ipam":
                c = claim_of(json.loads(raw))
                s.claims[(c.network, c.cidr)] = c
            elif kind == "names":
                s.names[rest] = tuple(NameRecord.from_json(d) for d in json.loads(raw))
            elif kind == "docker0":
                s.docker0[rest] = tuple(LinkEndpoint(rest, d["mac"], tuple(d["ips"]))
                                        for d in json.loads(raw))
        except (StoreError, ValueError, KeyError, TypeError) as exc:
            msg = exc.message if isinstance(exc, StoreError) else str(exc)
            raise Unavailable("store", f"etcd key {prefix}{key} holds a value weft cannot "
                                       f"read ({msg[:120]}); restore it from an export") from None
    if legacy:      # read as SQLite's schema 12 upgrade writes them (codec.keep_loadable)
        s.tenants = {t.name: t for t in keep_loadable(
            s.tenants.values(), legacy, (sb.binding for sb in s.bindings.values()))}
        s.legacy = frozenset(legacy)
    return s


class EtcdTx(ModelTx):
    """ModelTx on a private copy of a snapshot; records the puts and deletes to commit."""

    def __init__(self, snap: _Snapshot, prefix: str) -> None:
        self.s = snap.copy()
        self.ops: dict[str, str | None] = {}        # key -> JSON value, or None: delete
        self._p = prefix
        self._sorted_tenants: list[Tenant] | None = None
        self._macs: dict[tuple[str, str], tuple[str, str]] | None = None

    def _put(self, key: str, value: Any) -> None:
        self.ops[self._p + key] = json.dumps(value, sort_keys=True)

    def _delete(self, key: str) -> None:
        self.ops[self._p + key] = None

    # -- facts ------------------------------------------------------------------
    def tenants(self) -> list[Tenant]:
        if self._sorted_tenants is None:
            self._sorted_tenants = [DEFAULT_TENANT] + sorted(self.s.tenants.values(),
                                                             key=lambda t: t.name)
        return self._sorted_tenants

    def tenant(self, name: str) -> Tenant | None:
        return DEFAULT_TENANT if name == DEFAULT_TENANT.name else self.s.tenants.get(name)

    def bindings(self, host: str | None = None) -> list[StoredBinding]:
        return [self.s.bindings[k] for k in sorted(self.s.bindings) if not host or k[0] == host]

    def routes(self, tenant: str | None = None) -> list[Route]:
        return sorted((r for r in self.s.routes.values() if tenant is None or r.tenant == tenant),
                      key=route_order)

    def binding(self, host: str, port: str) -> StoredBinding | None:
        return self.s.bindings.get((host, port))

    def count_bindings(self) -> int:
        return len(self.s.bindings)

    def mac_taken(self, tenant: str | None, mac: str, host: str, port: str) -> bool:
        if self._macs is None:
            self._macs = {(sb.binding.tenant, sb.binding.mac): k
                          for k, sb in self.s.bindings.items()
                          if sb.binding.mac and sb.binding.tenant is not None}
        holder = self._macs.get((tenant, mac)) if tenant is not None else None
        return holder is not None and holder != (host, port) and holder in self.s.bindings \
            and self.s.bindings[holder].binding.mac == mac \
            and self.s.bindings[holder].binding.tenant == tenant

    def link_endpoints(self) -> list[LinkEndpoint]:
        return [e for h in sorted(self.s.docker0) for e in sorted(self.s.docker0[h],
                                                                  key=lambda e: e.mac)]

    def limits(self) -> list[RateLimit]:
        return sorted((x for x in self.s.qos.values() if isinstance(x, RateLimit)),
                      key=lambda x: x.id)

    def rules(self) -> list[QosRule]:
        return sorted((x for x in self.s.qos.values() if isinstance(x, QosRule)),
                      key=lambda r: (r.tenant, -r.priority))

    def qos(self, qos_id: int) -> RateLimit | QosRule | None:
        return self.s.qos.get(qos_id)

    def acls(self, tenant: str | None = None) -> list[AclRule]:
        return sorted((r for r in self.s.acls.values() if tenant is None or r.tenant == tenant),
                      key=lambda r: (r.tenant, -r.priority))

    def acl_policies(self) -> dict[str, str]:
        return dict(self.s.policies)

    def operator_flows(self, dpid: int | None = None) -> list[OperatorFlow]:
        return [self.s.flows[i] for i in sorted(self.s.flows)
                if dpid is None or self.s.flows[i].dpid == dpid]

    def epoch(self) -> str:
        return self.s.epoch

    def claims(self, network: str | None = None) -> list[Claim]:
        return sorted((c for c in self.s.claims.values()
                       if network is None or c.network == network), key=claim_order)

    # -- mutations ----------------------------------------------------------------
    # Each changes the private snapshot and records the key to write (or delete) in etcd.
    def _set(self, table: dict, key: Any, value: Any, rel: str, doc: Any) -> None:
        table[key] = value
        self._put(rel, doc)

    def _drop(self, table: dict, key: Any, rel: str) -> None:
        table.pop(key, None)
        self._delete(rel)

    def put_tenant(self, t: Tenant) -> None:
        self._sorted_tenants = None
        self._set(self.s.tenants, t.name, t, f"tenants/{t.name}", tenant_doc(t))

    def remove_tenant(self, name: str) -> None:
        self._sorted_tenants = None
        self._drop(self.s.tenants, name, f"tenants/{name}")

    def put_claim(self, c: Claim) -> None:
        self._set(self.s.claims, (c.network, c.cidr), c, _claim_key(c.network, c.cidr),
                  claim_doc(c))

    def remove_claim(self, network: str, cidr: str) -> None:
        self._drop(self.s.claims, (network, cidr), _claim_key(network, cidr))

    def put_route(self, r: Route) -> None:
        self._set(self.s.routes, (r.tenant, r.prefix), r, _route_key(r.tenant, r.prefix),
                  route_doc(r))

    def remove_route(self, tenant: str, prefix: str) -> None:
        self._drop(self.s.routes, (tenant, prefix), _route_key(tenant, prefix))

    def put_binding(self, sb: StoredBinding) -> None:
        b = sb.binding
        if self._macs is not None and b.mac and b.tenant is not None:
            self._macs[(b.tenant, b.mac)] = (b.host, b.port)
        self._set(self.s.bindings, (b.host, b.port), sb, f"bindings/{b.host}/{b.port}",
                  binding_doc(sb))

    def remove_binding(self, host: str, port: str) -> None:
        self._drop(self.s.bindings, (host, port), f"bindings/{host}/{port}")

    def set_link_endpoints(self, host: str, endpoints: list[LinkEndpoint]) -> None:
        new = tuple(sorted(endpoints, key=lambda e: e.mac))
        if new == tuple(sorted(self.s.docker0.get(host, ()), key=lambda e: e.mac)):
            return
        if new:
            self._set(self.s.docker0, host, new, f"docker0/{host}",
                      [{"mac": e.mac, "ips": list(e.ips)} for e in new])
        else:
            self._drop(self.s.docker0, host, f"docker0/{host}")

    def container_names(self) -> dict[str, tuple[NameRecord, ...]]:
        return dict(sorted(self.s.names.items()))

    def set_container_names(self, host: str, records: tuple[NameRecord, ...]) -> None:
        if records == self.s.names.get(host, ()):
            return
        if records:
            self._set(self.s.names, host, records, f"names/{host}",
                      [r.to_json() for r in records])
        else:
            self._drop(self.s.names, host, f"names/{host}")

    def put_qos(self, x: RateLimit | QosRule) -> None:
        doc = {"kind": "limit", **limit_doc(x)} if isinstance(x, RateLimit) else \
            {"kind": "rule", **rule_doc(x)}
        self._set(self.s.qos, x.id, x, f"qos/{x.id}", doc)

    def remove_qos(self, qos_id: int) -> None:
        self._drop(self.s.qos, qos_id, f"qos/{qos_id}")

    # ACL rule and operator flow ids are never reused (they are cookies): each kind keeps
    # its next id in the snapshot (next_acl, next_flow) and in a meta key.
    _COUNTERS = {"next_acl": "meta/next-acl-id", "next_flow": "meta/next-operator-flow-id"}

    def _next_id(self, counter: str, taken: dict[int, Any]) -> int:
        return max(getattr(self.s, counter), max(taken, default=0) + 1)

    def _reserve(self, counter: str, next_id: int) -> None:
        """Move a counter up to ``next_id`` (never down), in the snapshot and in etcd."""
        if next_id > getattr(self.s, counter):
            setattr(self.s, counter, next_id)
            self.ops[self._p + self._COUNTERS[counter]] = str(next_id)

    def new_acl_id(self) -> int:
        return self._next_id("next_acl", self.s.acls)

    def put_acl(self, r: AclRule) -> None:
        self._set(self.s.acls, r.id, r, f"acls/{r.id}", acl_doc(r))
        self._reserve("next_acl", r.id + 1)

    def remove_acl(self, rule_id: int) -> None:
        self._drop(self.s.acls, rule_id, f"acls/{rule_id}")

    def set_acl_policy(self, tenant: str, default: str | None) -> None:
        if default is None:
            if tenant in self.s.policies:
                self._drop(self.s.policies, tenant, f"acl-defaults/{tenant}")
        else:
            self._set(self.s.policies, tenant, default, f"acl-defaults/{tenant}", default)

    def new_operator_flow_id(self) -> int:
        return self._next_id("next_flow", self.s.flows)

    def put_operator_flow(self, f: OperatorFlow) -> None:
        self._set(self.s.flows, f.id, f, f"operator-flows/{f.id}", operator_flow_doc(f))
        self._reserve("next_flow", f.id + 1)

    def remove_operator_flow(self, flow_id: int) -> None:
        self._drop(self.s.flows, flow_id, f"operator-flows/{flow_id}")

    def reserve_ids(self, next_acl: int, next_operator_flow: int) -> None:
        if next_acl > self.new_acl_id():
            self._reserve("next_acl", next_acl)
        if next_operator_flow > self.new_operator_flow_id():
            self._reserve("next_flow", next_operator_flow)

    def set_epoch(self, epoch: str) -> None:
        if epoch != self.s.epoch:
            self.s.epoch = epoch
            self.ops[self._p + "meta/epoch"] = epoch


class _Cluster:
    """The etcd members we were given: requests go to one, and move on to the next
    when it cannot be reached or cannot serve (no leader, timed out)."""

    RETRY = (etcd_exc.ConnectionFailedError, etcd_exc.ConnectionTimeoutError,
             etcd_exc.InternalServerError)
    ROUNDS = 2          # a second pass over the members if one was busy (electing a leader)

    def __init__(self, endpoints: list[tuple[str, int]], timeout: float,
                 access: EtcdAccess) -> None:
        self.endpoints, self.access = endpoints, access
        # one session for every member: TLS files and the weft user's token in one place
        self.session = requests.Session()
        # not the environment's CA bundle (REQUESTS_CA_BUNDLE would replace ours) nor
        # its proxies: etcd is reached directly, trusting only --etcd-ca
        self.session.trust_env = False
        self.session.verify = access.verify()
        self.session.cert = access.client_cert()
        self.clients = [Etcd3Client(host=h, port=p, protocol=access.scheme, timeout=timeout,
                                    api_path="/v3/", session=self.session)
                        for h, p in endpoints]
        self._current = 0
        self._lock = threading.Lock()
        self._token_lock = threading.Lock()
        self._token_gen = 0             # bumped by every login: one re-login per expiry

    def login(self, seen: int | None = None) -> None:
        """Log in as the weft user (no-op without one) on the first member that answers;
        with ``seen``, only if nobody logged in again since the caller's request went
        out (several threads answered 401 log in once)."""
        if not self.access.user:
            return
        with self._token_lock:
            if seen is not None and seen != self._token_gen:
                return
            problems: list[str] = []
            for client in self.rotation():
                try:
                    token = self.access.login(partial(self._login_post, client))
                    break
                except self.RETRY as exc:
                    problems.append(f"{client.host}:{client.port}: {_short(exc)}")
            else:
                raise Unavailable("store", f"cannot log in to etcd as {self.access.user} "
                                           f"({'; '.join(problems)[:300]})")
            self.session.headers["Authorization"] = token or ""
            self._token_gen += 1

    def names(self) -> str:
        return ",".join(f"{h}:{p}" for h, p in self.endpoints)

    def rotation(self) -> Iterator[Etcd3Client]:
        start = self._current
        for k in range(len(self.clients)):
            yield self.clients[(start + k) % len(self.clients)]

    def post(self, path: str, body: dict, timeout: float | None = None) -> dict:
        """POST to the current member, else the next ones.  ``timeout`` per member
        (default: the client's): small requests use a short one, so a write sent to a
        member whose leader just died moves on after 2 s instead of waiting out etcd's
        own request timeout."""
        problems: list[str] = []
        for _round in range(self.ROUNDS):
            busy = False
            for client in self.rotation():
                try:
                    out = self._post(client, path, body, timeout)
                except _TokenExpired:
                    try:                # a restarted member forgot our token: log in again
                        out = self._post(client, path, body, timeout, relogin=False)
                    except self.RETRY as exc:
                        problems.append(f"{client.host}:{client.port}: {_short(exc)}")
                        continue
                except self.RETRY as exc:
                    problems.append(f"{client.host}:{client.port}: {_short(exc)}")
                    busy = busy or not isinstance(exc, etcd_exc.ConnectionFailedError)
                    continue
                if problems:
                    with self._lock:
                        self._current = self.clients.index(client)
                    LOG.warning("etcd: now using %s:%d (%s)", client.host, client.port,
                                "; ".join(problems))
                return out
            if not busy:
                break
        raise Unavailable("store", f"no etcd member answers ({'; '.join(problems)[:300]})")

    def _login_post(self, client: Etcd3Client, path: str, body: dict) -> dict:
        return self._post(client, path.removeprefix("/v3"), body, None, anonymous=True)

    def _post(self, client: Etcd3Client, path: str, body: dict, timeout: float | None,
              relogin: bool = True, anonymous: bool = False) -> dict:
        """etcd3gw's request with this call's own timeout, its errors mapped as it maps
        them (5xx/408/504: try another member; 401: our token expired, log in again and
        raise _TokenExpired so the caller sends it once more; other non-200: refused)."""
        gen = self._token_gen
        try:
            resp = client.session.post(client.get_url(path), data=json.dumps(body),
                                       timeout=timeout or client.timeout,
                                       headers={"Authorization": None} if anonymous  # type: ignore[dict-item]
                                       else None)
        except requests.exceptions.Timeout as exc:
            raise etcd_exc.ConnectionTimeoutError(str(exc)) from None
        except requests.exceptions.ConnectionError as exc:
            raise etcd_exc.ConnectionFailedError(str(exc)) from None
        if resp.status_code in (408, 504):
            raise etcd_exc.ConnectionTimeoutError(resp.text)
        if resp.status_code >= 500:
            raise etcd_exc.InternalServerError(resp.text)
        if resp.status_code == 401 and relogin and not anonymous and self.access.user:
            self.login(seen=gen)
            raise _TokenExpired(resp.text)
        if resp.status_code != 200:
            raise _refused(etcd_exc.Etcd3Exception(resp.text))
        return resp.json()


class _TokenExpired(Exception):
    """etcd no longer knows our token (a member restarted, or it idled out): logged in
    again, the request is worth one more try."""


def _text(exc: Exception) -> str:
    """etcd3gw keeps the reason in ``detail_text``, not in args."""
    return str(getattr(exc, "detail_text", None) or (exc.args[0] if exc.args else exc))


def _short(exc: Exception) -> str:
    text = _text(exc)
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    return " ".join(text.split())[:120]


def _refused(exc: etcd_exc.Etcd3Exception) -> StoreError:
    """etcd refused the request itself: usually a bulk write beyond its limits."""
    text = _text(exc)
    if "too many operations" in text:
        return Invalid("store", "the write touches more keys than etcd's --max-txn-ops "
                                "allows in one transaction: raise it (docs/store.md: 100000)")
    if "too large" in text:
        return Invalid("store", "the write is larger than etcd's --max-request-bytes")
    if "permission denied" in text or "authentication failed" in text or \
            "user name is empty" in text:
        return Unavailable("store", f"etcd refused weft's credentials: "
                                    f"{' '.join(text.split())[:200]} (--etcd-user, its "
                                    "password and its role's prefix: docs/store.md)")
    return Unavailable("store", f"etcd refused the request: {' '.join(text.split())[:200]}")


class EtcdStore(StoreBase):
    """The store on an etcd cluster (3.4's v3 API through its grpc-gateway)."""

    def __init__(self, endpoints: list[tuple[str, int]], prefix: str = DEFAULT_PREFIX,
                 timeout: float = REQUEST_TIMEOUT, access: EtcdAccess = EtcdAccess()) -> None:
        super().__init__()
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        names = ",".join(f"{h}:{p}" for h, p in endpoints)
        self.path = f"etcd://{names}{self.prefix.rstrip('/')}"
        try:
            access.check()
        except EtcdAccessError as exc:
            raise StoreFileError(f"{self.path}: {exc}") from None
        self._etcd = _Cluster(endpoints, timeout, access)
        self._cache: _Snapshot | None = None
        self._write_lock = threading.Lock()
        self._leases: dict[str, tuple[int, str]] = {}      # host -> (lease id, its value)
        self._lease_lock = threading.Lock()
        self._closed = threading.Event()
        self._watch_thread: threading.Thread | None = None
        self._watch_response: requests.Response | None = None
        try:
            self._etcd.login()
            self._init_epoch()
        except Unavailable as exc:
            raise StoreFileError(f"{self.path}: cannot use the etcd store: {exc.message}; "
                                 "is etcd running and reachable?") from None

    @classmethod
    def from_url(cls, url: str, access: EtcdAccess = EtcdAccess()) -> EtcdStore:
        endpoints, prefix = parse_url(url)
        return cls(endpoints, prefix, access=access)

    @property
    def version(self) -> int:               # type: ignore[override]
        """The revision of the last model write this store has seen."""
        return self._cache.rev_mod if self._cache else 0

    def _key(self, rel: str) -> str:
        return self.prefix + rel

    def _init_epoch(self) -> None:
        """Create the epoch if this prefix has none: only the first controller ever does."""
        key = _b64(self._key("meta/epoch"))
        self._etcd.post("/kv/txn", {
            "compare": [{"key": key, "target": "CREATE", "result": "EQUAL",
                         "create_revision": "0"}],
            "success": [{"request_put": {"key": key, "value": _b64(new_epoch())}}]})

    # -- snapshots ---------------------------------------------------------------------
    def _range_all(self) -> dict:
        return {"key": _b64(self.prefix), "range_end": _b64(_range_end(self.prefix))}

    def _load(self) -> _Snapshot:
        reply = self._etcd.post("/kv/range", self._range_all(), BIG_TIMEOUT)
        self._cache = _snapshot(reply.get("kvs", []), self.prefix)
        return self._cache

    def _current(self) -> _Snapshot:
        """The cached model if ``meta/rev`` has not moved since (one small read), else
        a fresh one: reads are as current as etcd's linearizable reads."""
        cache = self._cache
        if cache is not None:
            reply = self._etcd.post("/kv/range", {"key": _b64(self._key("meta/rev"))})
            kvs = reply.get("kvs", [])
            if (int(kvs[0]["mod_revision"]) if kvs else 0) == cache.rev_mod:
                return cache
        return self._load()

    def _read(self, fn: Callable[[ModelTx], T]) -> T:
        return fn(EtcdTx(self._current(), self.prefix))

    def _write(self, fn: Callable[[ModelTx], T]) -> T:
        with self._write_lock:
            snap = self._cache or self._load()
            for _attempt in range(WRITE_ATTEMPTS):
                tx = EtcdTx(snap, self.prefix)
                try:
                    result = fn(tx)         # the shared checks; a StoreError ends the write...
                except StoreError:
                    fresh = self._current()
                    if fresh is snap:       # ...if it was decided on the current model
                        raise
                    snap = fresh            # (another controller wrote since: decide again)
                    continue
                if not tx.ops:
                    if self._current() is snap:
                        return result
                    snap = self._cache or self._load()
                    continue
                for name in sorted(snap.legacy):    # schema 12, written once (_Snapshot)
                    key = self._key(f"tenants/{name}")
                    if key not in tx.ops and name in tx.s.tenants:
                        tx.ops[key] = json.dumps(tenant_doc(tx.s.tenants[name]),
                                                 sort_keys=True)
                rev = _b64(self._key("meta/rev"))
                ops: list[dict] = [
                    {"request_delete_range": {"key": _b64(k)}} if v is None else
                    {"request_put": {"key": _b64(k), "value": _b64(v)}}
                    for k, v in tx.ops.items()]
                ops.append({"request_put": {"key": rev, "value": _b64(str(time.time()))}})
                reply = self._etcd.post("/kv/txn", {
                    "compare": [{"key": rev, "target": "MOD", "result": "EQUAL",
                                 "mod_revision": str(snap.rev_mod)}],
                    "success": ops,
                    "failure": [{"request_range": self._range_all()}]},
                    # big writes, or a big model coming back on a lost race, take longer
                    REQUEST_TIMEOUT + (len(ops) + len(snap.bindings)) / 1000)
                if reply.get("succeeded"):
                    tx.s.rev_mod = int(reply["header"]["revision"])
                    tx.s.legacy = frozenset()
                    self._cache = tx.s
                    return result
                # another controller wrote first: take its model and decide again
                kvs = reply["responses"][0]["response_range"].get("kvs", [])
                snap = self._cache = _snapshot(kvs, self.prefix)
            raise Unavailable("store", f"gave up after {WRITE_ATTEMPTS} lost races with "
                                       "other writers; try again")

    # -- change feed -------------------------------------------------------------------
    def watch(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(version)`` for every change under the prefix, whoever made it
        (a watch stream from the current revision, resumed on another member if this
        one goes away; events are never skipped: a resume starts after the last seen)."""
        super().watch(callback)
        if self._watch_thread is None:
            start = int(self._etcd.post("/kv/range", {"key": _b64(self._key("meta/epoch"))})
                        ["header"]["revision"]) + 1
            self._watch_thread = threading.Thread(target=self._watch_loop, args=(start,),
                                                  name="weft-etcd-watch", daemon=True)
            self._watch_thread.start()

    def _watch_loop(self, start: int) -> None:
        while not self._closed.is_set():
            for client in self._etcd.rotation():
                if self._closed.is_set():
                    return
                try:
                    start = self._watch_stream(client, start)
                except Exception as exc:    # noqa: BLE001  (a dropped stream, or close())
                    if not self._closed.is_set():
                        LOG.info("etcd watch on %s:%d ended (%s); resuming at revision %d",
                                 client.host, client.port, _short(exc), start)
                    continue
            self._closed.wait(0.5)

    def _watch_stream(self, client: Etcd3Client, start: int) -> int:
        """Follow one watch stream; returns the revision to resume from."""
        body = {"create_request": {**self._range_all(), "start_revision": str(start),
                                   "progress_notify": True}}
        with client.session.post(client.get_url("/watch"), json=body, stream=True,
                                 timeout=(REQUEST_TIMEOUT, WATCH_IDLE)) as resp:
            self._watch_response = resp
            if resp.status_code == 401:
                self._etcd.login()      # our token is gone: log in, resume at once
                return start
            for line in resp.iter_lines():
                if self._closed.is_set():
                    return start
                if not line.strip():
                    continue
                msg = json.loads(line)
                if "error" in msg:
                    if msg["error"].get("http_code") == 401:
                        self._etcd.login()
                    raise RuntimeError(msg["error"].get("message", "watch refused"))
                result = msg.get("result", {})
                if result.get("compact_revision"):
                    # history we missed is gone: resync from now, say something changed
                    start = int(result["compact_revision"])
                    self._cache = None
                    self._notify()
                    return start
                events = result.get("events", [])
                if events:
                    start = max(int(e["kv"]["mod_revision"]) for e in events) + 1
                    self._notify()
        return start

    def _notify(self) -> None:
        try:
            self._current()             # so callbacks see `version` of what changed
        except StoreError:
            pass
        super()._notify()

    def close(self) -> None:
        self._closed.set()
        resp = self._watch_response
        if resp is not None:
            try:                        # wake the watch thread: shut its socket down
                s = socket.fromfd(resp.raw._fp.fileno(), socket.AF_INET, socket.SOCK_STREAM)
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except Exception:           # noqa: BLE001  (already closed: nothing to wake)
                pass
        if self._watch_thread is not None:
            self._watch_thread.join(2)
        # Leases are not revoked: a registration outlives this controller until its host
        # stops renewing it (through any controller), so a controller restart drops none.

    # -- host registrations: a key per host attached to a lease ---------------------------
    def _register_host(self, name: str, value: str, ttl: float) -> None:
        """Register or renew: the first call grants a lease of ``ttl`` seconds and puts
        ``hosts/NAME`` on it; later calls keep the lease alive (and rewrite the key only
        if ``value`` changed).  If the registering process stops, etcd deletes the key
        when the lease expires."""
        with self._lease_lock:
            self._register(name, value, ttl)

    def _register(self, name: str, value: str, ttl: float) -> None:
        key = _b64(self._key(f"hosts/{name}"))
        held = self._leases.get(name)
        if held is not None:
            reply = self._etcd.post("/lease/keepalive", {"ID": str(held[0])})
            alive = int(reply.get("result", reply).get("TTL", 0)) > 0
            if not alive:
                held = None
            elif held[1] == value:
                # still ours? (the host may have registered through another controller
                # since, which put the key on its own lease): a read, no write, no event
                kvs = self._etcd.post("/kv/range", {"key": key}).get("kvs", [])
                if kvs and int(kvs[0].get("lease", 0)) == held[0] \
                        and _unb64(kvs[0].get("value", "")) == value:
                    return
        lease_id = held[0] if held else int(self._etcd.post(
            "/lease/grant", {"TTL": str(max(2, math.ceil(ttl)))})["ID"])
        self._etcd.post("/kv/put", {"key": key, "value": _b64(value), "lease": str(lease_id)})
        self._leases[name] = (lease_id, value)

    def registered_hosts(self) -> dict[str, dict]:
        base = self._key("hosts/")
        reply = self._etcd.post("/kv/range", {"key": _b64(base),
                                              "range_end": _b64(_range_end(base))})
        out = {}
        for kv in reply.get("kvs", []):
            try:
                out[_unb64(kv["key"])[len(base):]] = json.loads(_unb64(kv["value"]))
            except ValueError:
                LOG.warning("etcd: ignoring an unreadable registration %s", _unb64(kv["key"]))
        return dict(sorted(out.items()))
