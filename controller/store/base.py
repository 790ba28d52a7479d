"""The store's logic, once for every backend (``StoreBase``): reads, and writes that
check the model's rules before a backend stores them.

A backend (controller.store.sqlite, controller.store.etcd) supplies only a
transaction (``ModelTx``), ``_read`` and ``_write``, and host registrations; so
both refuse the same requests with the same field and message.  Every write checks
first and runs in one transaction, so a refused request changes nothing.
"""
from __future__ import annotations

import ipaddress
import json
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from dataclasses import replace as replace_
from typing import Any, Callable, Final, TypeVar

from cluster.names import NameRecord
from controller.model import (ACCESS, ACL_DEFAULTS, DEFAULT_CONNTRACK_LIMIT, DEFAULT_TENANT,
                              DOCKER_LINK_PORT, MAX_ACL_ID,
                              MAX_METER_ID, TRUNK, VNI_MIN, AclRule, Binding, LinkEndpoint,
                              GATEWAY6_AUTO, ModelError, QosRule, RateLimit, Route, Tenant,
                              check_host, check_name, user_tenant)
from controller.opflows import MAX_OPERATOR_FLOW_ID, OperatorFlow
import cluster.ipam as ipam
from cluster.ipam import Claim, IpamError
import controller.store.rules as rules
from controller.store.errors import Conflict, Invalid, InUse, NotFound, model_values
from controller.store.export import export_model, import_into, parse_export
from controller.store.tx import ModelTx, StoredBinding, all_qos

LOG = logging.getLogger("weft.store")
T = TypeVar("T")
ChangeCallback = Callable[[int], None]
MAX_TTL = 86400                 # seconds a host registration may last without renewal


class _Auto:
    """The gateway a caller did not choose (``AUTO``): the subnet's first address."""

    def __repr__(self) -> str:
        return "AUTO"


AUTO: Final = _Auto()
Gateway = str | None | _Auto        # an IPv4 address, None (no gateway), or AUTO
_ROW_FIELDS = ("vlan", "subnet", "description", "gateway", "egress",   # what PATCH changes
               "conntrack_limit", "subnet6", "gateway6")


def _changed_row(cur: Tenant, changes: dict[str, Any], tenant_id: int) -> Tenant:
    """``cur`` (a tenant's or network's row) with ``changes``.  A new subnet without a
    gateway named moves the gateway with it: kept when still a host of the new subnet,
    else the new subnet's default (``rules.default_gateway``); a row that had a subnet
    and no gateway keeps none.  Egress ends with the gateway unless asked for."""
    with model_values("subnet"):
        probe = Tenant(cur.name, cur.vni, changes.get("vlan", cur.vlan),
                       changes.get("subnet", cur.subnet),
                       changes.get("description", cur.description), cur.domain,
                       subnet6=changes.get("subnet6", cur.subnet6))
    gateway: str | None
    if "gateway" in changes:
        gateway = changes["gateway"]
    elif probe.subnet == cur.subnet or (cur.gateway is None and cur.subnet is not None):
        gateway = cur.gateway
    else:
        try:
            gateway = replace_(probe, gateway=cur.gateway).gateway
        except ModelError:
            gateway = None
        gateway = gateway or rules.default_gateway(probe.subnet, tenant_id)
    egress = changes["egress"] if "egress" in changes else cur.egress and gateway is not None
    with model_values("gateway"):
        out = replace_(probe, gateway=gateway, egress=egress, gateway6=None)
    with model_values("gateway6"):
        out = replace_(out, gateway6=_changed_gateway6(cur, out, changes))
    with model_values("conntrack_limit"):
        return replace_(out, conntrack_limit=changes.get("conntrack_limit", cur.conntrack_limit))


def _changed_gateway6(cur: Tenant, new: Tenant, changes: dict[str, Any]) -> str | None:
    """The IPv6 gateway of ``cur`` changed into ``new`` (its gateway6 not yet set): the
    one asked for; else kept while subnet6 and the IPv4 gateway stay; none once either
    is gone; else (a new subnet6, a gateway given) the default, unless the row had a
    subnet6 and a gateway but no gateway6 (an operator's none stays none)."""
    if "gateway6" in changes:
        return changes["gateway6"]
    if new.gateway is None or new.subnet6 is None:
        return None
    if new.subnet6 == cur.subnet6 and cur.gateway is not None:
        return cur.gateway6
    if cur.gateway6 is None and cur.gateway is not None and cur.subnet6 is not None:
        return None
    return GATEWAY6_AUTO


def _carries(b: Binding, segment: str) -> int:
    """1 if the binding carries ``segment`` (access, native or on its trunk), else 0."""
    return int(segment in b.tenants)


MAX_LISTED = 20     # bound ports a refusal names in its message (its `ports` has all)


def _bound_to(tx: ModelTx, segments: tuple[str, ...]) -> list[dict[str, Any]]:
    """The ports bound to any of ``segments``, for a refusal to delete them."""
    return [{"host": sb.binding.host, "port": sb.binding.port, "mac": sb.binding.mac,
             "ips": list(sb.binding.ips), "source": sb.source}
            for sb in tx.bindings() if any(_carries(sb.binding, s) for s in segments)]


def _named(ports: list[dict[str, Any]]) -> str:
    """``host1/wd0123 (10.10.0.5), ...``: what a refusal's message lists."""
    out = ", ".join(f"{p['host']}/{p['port']}" + (f" ({', '.join(p['ips'])})" if p["ips"] else "")
                    for p in ports[:MAX_LISTED])
    return out + (f" and {len(ports) - MAX_LISTED} more" if len(ports) > MAX_LISTED else "")


def _unbind_segment(tx: ModelTx, segment: str) -> None:
    """Take ``segment`` (a tenant's default network or a network) off every binding:
    an access port is unbound, a trunk loses it (a trunk carrying nothing goes too)."""
    for sb in tx.bindings():
        b = sb.binding
        if segment not in b.tenants:
            continue
        native = None if b.tenant == segment else b.tenant
        trunk = tuple(t for t in b.trunk if t != segment)
        if (b.tenant == segment and not b.trunk) or (b.mode == TRUNK and not trunk
                                                     and native is None):
            tx.remove_binding(b.host, b.port)
        else:
            tx.put_binding(replace_(sb, binding=replace_(b, tenant=native, trunk=trunk)))


def _drop_claims(tx: ModelTx, network: str) -> None:
    """A deleted network's IPAM claims go with it (its addresses mean nothing now)."""
    for c in tx.claims(network):
        tx.remove_claim(c.network, c.cidr)


def _ipam_network(tx: ModelTx, network: str, subnet: str | None = None) -> str:
    """The subnet claims of ``network`` are cut from: the network's own, which a
    Docker network's (``subnet``) must equal; ``subnet`` when the network has none."""
    net = rules.get_network(tx, network)
    if net.subnet is not None:
        if subnet is not None and subnet != net.subnet:
            raise Invalid("subnet", f"{subnet} is not the subnet of weft network "
                                    f"{network!r} ({net.subnet}): create the Docker network "
                                    f"with --subnet {net.subnet}")
        return net.subnet
    if subnet is None:
        raise Invalid("subnet", f"weft network {network!r} has no subnet: give one")
    return subnet


def _ipam_args(host: str, subnet: str | None, within: str | None) -> tuple[str | None,
                                                                          str | None]:
    """Checked host name and CIDRs (normalised), or Invalid naming the field."""
    with model_values("host"):
        check_host(host)
    out: list[str | None] = []
    for name, value in (("subnet", subnet), ("within", within)):
        if value is None:
            out.append(None)
            continue
        try:
            out.append(str(ipaddress.IPv4Network(value)))
        except (ValueError, TypeError):
            raise Invalid(name, f"{str(value)[:40]!r} is not an IPv4 CIDR") from None
    return out[0], out[1]


@dataclass(frozen=True)
class ModelParts:
    """What the pipeline's Topology is made of, read in one transaction (``model``)."""
    tenants: tuple[Tenant, ...]
    bindings: tuple[Binding, ...]
    limits: tuple[RateLimit, ...]
    rules: tuple[QosRule, ...]
    acls: tuple[AclRule, ...]
    acl_deny: frozenset[str]
    endpoints: tuple[LinkEndpoint, ...]
    routes: tuple[Route, ...]


class StoreBase(ABC):
    """The store interface and every check and decision behind it, once, for every
    backend: a backend only supplies ModelTx (facts and mutations in one transaction),
    `_read` and `_write`.  So SQLite and etcd refuse the same requests with the same
    field and message, and the same test suite runs on both."""

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

    def register_host(self, name: str, data: dict, ttl: float) -> None:
        """Register (or renew) a host for ``ttl`` seconds (agent self-registration)."""
        with model_values("host"):
            check_host(name)
        if not isinstance(ttl, (int, float)) or isinstance(ttl, bool) or not 0 < ttl <= MAX_TTL:
            raise Invalid("ttl", f"ttl must be in (0, {MAX_TTL}] seconds")
        self._register_host(name, json.dumps(data, sort_keys=True), ttl)

    @abstractmethod
    def _register_host(self, name: str, value: str, ttl: float) -> None:
        """Store a checked registration (``value``: its JSON) for ``ttl`` seconds."""

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
        """A tenant (a network's name is 404, saying whose network it is)."""
        return self._read(lambda tx: rules.get_tenant(tx, name))

    def model(self) -> ModelParts:
        """Every part the pipeline needs from one consistent read: rows read apart could
        disagree (a network deleted between reading it and its routes)."""
        def read(tx: ModelTx) -> ModelParts:
            return ModelParts(
                tuple(tx.tenants()), tuple(sb.binding for sb in tx.bindings()),
                tuple(tx.limits()), tuple(tx.rules()), tuple(tx.acls()),
                frozenset(t for t, d in tx.acl_policies().items() if d == "deny"),
                tuple(tx.link_endpoints()), tuple(tx.routes()))
        return self._read(read)

    def networks(self, tenant: str | None = None) -> list[Tenant]:
        """Every network (every row: a tenant is also its default network), of ``tenant``
        only when given; by name."""
        return [n for n in self._read(lambda tx: tx.tenants())
                if tenant is None or n.tenant == tenant]

    def network(self, name: str) -> Tenant:
        return self._read(lambda tx: rules.get_network(tx, name))

    def routes(self, tenant: str | None = None) -> list[Route]:
        return self._read(lambda tx: tx.routes(tenant))

    def count_bindings(self) -> int:
        return self._read(lambda tx: tx.count_bindings())

    def bindings(self, host: str | None = None, tenant: str | None = None) -> list[StoredBinding]:
        out = self._read(lambda tx: tx.bindings(host or None))
        return [sb for sb in out if tenant is None or tenant in sb.binding.tenants]

    def link_endpoints(self) -> list[LinkEndpoint]:
        """docker0 containers the agents reported, pinned to their hosts' docker0 links."""
        return self._read(lambda tx: tx.link_endpoints())

    def container_names(self) -> dict[str, tuple[NameRecord, ...]]:
        """Host -> its containers' names on weft networks (docs/dns.md)."""
        return self._read(lambda tx: tx.container_names())

    def replace_container_names(self, host: str, records: list[NameRecord]) -> bool:
        """Make ``host``'s reported names exactly ``records`` (deduplicated, sorted);
        True if that changed anything."""
        new = tuple(sorted(set(records)))

        def replace(tx: ModelTx) -> bool:
            if tx.container_names().get(host, ()) == new:
                return False
            tx.set_container_names(host, new)
            return True
        if self._read(lambda tx: tx.container_names().get(host, ())) == new:
            return False            # the common case (a report with nothing new): no write
        return self._write(replace)

    def orphans(self) -> int:
        """Rows naming a tenant that does not exist (the schema makes this 0; tests check it)."""
        def count(tx: ModelTx) -> int:
            names = {t.name for t in tx.tenants()}
            n = sum(1 for sb in tx.bindings() if sb.binding.tenant is not None
                    and sb.binding.tenant not in names)
            n += sum(1 for sb in tx.bindings() if any(t not in names for t in sb.binding.trunk))
            n += sum(1 for t in tx.tenants() if t.domain is not None and t.domain not in names)
            n += sum(1 for r in tx.routes() if r.tenant not in names)
            n += sum(1 for x in all_qos(tx)
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
        self._read(lambda tx: rules.acl_tenant(tx, tenant))
        return "deny" if tenant in self.acl_deny() else "allow"

    def operator_flows(self, dpid: int | None = None) -> list[OperatorFlow]:
        return self._read(lambda tx: tx.operator_flows(dpid))

    # -- tenant writes ----------------------------------------------------------
    def create_tenant(self, name: str, vni: int | None = None, vlan: int | None = None,
                      subnet: str | None = None, description: str = "",
                      gateway: Gateway = AUTO, egress: bool | None = None,
                      conntrack_limit: int = DEFAULT_CONNTRACK_LIMIT,
                      subnet6: str | None = None, gateway6: str | None = GATEWAY6_AUTO
                      ) -> Tenant:
        """A tenant and its default network (same name and VNI).  ``gateway``: AUTO (the
        subnet's first address, ``rules.default_gateway``), None or an address;
        ``egress`` None: on when there is a gateway; ``subnet6``: dual-stack;
        ``gateway6``: GATEWAY6_AUTO (subnet6's first address when there is a gateway),
        None or an IPv6 address of subnet6."""
        return self._create_row(name, None, vni, vlan, subnet, description, gateway, egress,
                                conntrack_limit, subnet6, gateway6)

    def create_network(self, name: str, tenant: str, vni: int | None = None,
                       vlan: int | None = None, subnet: str | None = None,
                       description: str = "", gateway: Gateway = AUTO,
                       egress: bool | None = None, subnet6: str | None = None,
                       gateway6: str | None = GATEWAY6_AUTO) -> Tenant:
        """A further network of ``tenant``: its own segment (VNI, VLAN, subnet, and with
        ``subnet6`` an IPv6 subnet and ``gateway6``, as create_tenant's); names, VNIs and
        VLANs are unique across tenants and networks."""
        with model_values("tenant"):
            check_name(tenant, "tenant", what="tenant name")
        return self._create_row(name, tenant, vni, vlan, subnet, description, gateway, egress,
                                subnet6=subnet6, gateway6=gateway6)

    def _create_row(self, name: str, domain: str | None, vni: int | None, vlan: int | None,
                    subnet: str | None, description: str, gateway: Gateway,
                    egress: bool | None,
                    conntrack_limit: int = DEFAULT_CONNTRACK_LIMIT,
                    subnet6: str | None = None,
                    gateway6: str | None = GATEWAY6_AUTO) -> Tenant:
        what = "tenant" if domain is None else "network"
        auto = isinstance(gateway, _Auto)
        with model_values("name"):      # the values first: a bad request waits for nothing
            asked = user_tenant(name, VNI_MIN if vni is None else vni, vlan, subnet,
                                description or "", domain, None if auto else gateway,
                                False if auto or egress is None else egress,
                                conntrack_limit, subnet6, None)
        if not auto:
            with model_values("gateway6"):  # checked now when the gateway is known
                replace_(asked, gateway6=gateway6)

        def create(tx: ModelTx) -> Tenant:
            if tx.tenant(name) is not None or name == DEFAULT_TENANT.name:
                other = tx.tenant(name)
                kind = "network" if other is not None and other.domain else "tenant"
                raise Conflict("name", f"{what} {name!r}: a {kind} of that name already "
                                       "exists (tenants and networks share one namespace)")
            owner = rules.owner_of_new_network(tx, domain) if domain is not None else None
            t = asked if vni is not None else replace_(asked, vni=rules.free_vni(tx))
            rules.check_unique(tx, "vni", t.vni, name)
            rules.check_unique(tx, "vlan", t.vlan, name)
            if auto:
                tenant_id = owner.vni if owner is not None else t.vni
                t = replace_(t, gateway=rules.default_gateway(t.subnet, tenant_id))
            with model_values("egress"):
                t = replace_(t, egress=t.gateway is not None if egress is None else egress)
            with model_values("gateway6"):
                t = replace_(t, gateway6=gateway6)
            rules.gateway_id_ok(tx, t)
            tx.put_tenant(t)
            rules.check_model(tx, "gateway")
            return t
        return self._write(create)

    def update_tenant(self, name: str, **changes: Any) -> Tenant:
        """Change vlan, subnet, subnet6, description, gateway or egress of a tenant's
        default network (the VNI is the tenant's identity)."""
        return self._update_row(name, "tenant", changes)

    def update_network(self, name: str, **changes: Any) -> Tenant:
        """Change vlan, subnet, description, gateway or egress of a network (a tenant's
        name: its default network)."""
        return self._update_row(name, "network", changes)

    def _update_row(self, name: str, what: str, changes: dict[str, Any]) -> Tenant:
        if name == DEFAULT_TENANT.name:
            raise Conflict("name", f"the default {what} is built in and cannot be changed")
        unknown = set(changes) - set(_ROW_FIELDS)
        if unknown:
            raise Invalid(sorted(unknown)[0], f"only {', '.join(_ROW_FIELDS)} can change")

        def update(tx: ModelTx) -> Tenant:
            cur = rules.get_tenant(tx, name) if what == "tenant" else rules.get_network(tx, name)
            owner = rules.get_network(tx, cur.tenant)
            new = _changed_row(cur, changes, owner.vni)
            rules.check_unique(tx, "vlan", new.vlan, name)
            if new.vlan is None and any(name in sb.binding.trunk for sb in tx.bindings()
                                    if sb.binding.mode == TRUNK):
                raise Conflict("vlan", f"{what} {name!r} is carried on a trunk and needs a vlan")
            rules.gateway_id_ok(tx, new)
            rules.gateways_unbound(tx, new)
            tx.put_tenant(new)
            rules.check_model(tx, next((f for f in ("gateway", "gateway6") if f in changes),
                                       "subnet"))
            return new
        return self._write(update)

    def delete_tenant(self, name: str, force: bool = False) -> int:
        """Delete a tenant; with force also its bindings.  Returns bindings removed."""
        if name == DEFAULT_TENANT.name:
            raise Conflict("name", "the default tenant is built in and cannot be deleted")

        def delete(tx: ModelTx) -> int:
            rules.get_tenant(tx, name)  # inside the transaction: no bind can slip in between
            networks = [t.name for t in tx.tenants() if t.domain == name]
            if networks and not force:
                raise Conflict("name", f"tenant {name!r} has networks {', '.join(networks)}; "
                                       "delete them first or delete with force=true (their "
                                       "ports are unbound)")
            bound = _bound_to(tx, (name, *networks))
            n = len(bound)
            if n and not force:
                raise InUse("name", f"tenant {name!r} has {n} port binding(s): "
                                    f"{_named(bound)}; remove their containers, unbind them, "
                                    "or delete with force=true", bound)
            qos = [x for x in all_qos(tx) if x.tenant == name]
            acls = tx.acls(name)
            routes = tx.routes(name)
            n += len(qos) + len(acls) + len(routes)
            if n and not force:
                raise Conflict("name", f"tenant {name!r} has QoS settings, ACL rules or "
                                       "static routes; remove them or delete with force=true")
            for x in qos:
                tx.remove_qos(x.id)
            for r in acls:
                tx.remove_acl(r.id)
            for route in routes:
                tx.remove_route(name, route.prefix)
            tx.set_acl_policy(name, None)
            for seg in (*networks, name):
                _unbind_segment(tx, seg)
                _drop_claims(tx, seg)
                tx.remove_tenant(seg)
            return n
        return self._write(delete)

    def delete_network(self, name: str, force: bool = False) -> int:
        """Delete a network; with force also its bindings (as a tenant's).  Refused while a
        static route's next hop lies in it, and for a tenant's default network (delete
        the tenant).  Returns bindings removed."""
        if name == DEFAULT_TENANT.name:
            raise Conflict("name", "the default network is built in and cannot be deleted")

        def delete(tx: ModelTx) -> int:
            net = rules.get_network(tx, name)
            if net.domain is None:
                raise Conflict("name", f"network {name!r} is the default network of tenant "
                                       f"{name!r}: delete the tenant instead")
            vias = rules.route_vias_in(tx, net)
            if vias:
                raise Conflict("name", f"network {name!r} holds the next hop of routes "
                                       f"{', '.join(r.prefix for r in vias)} of tenant "
                                       f"{net.tenant!r}; delete them first")
            bound = _bound_to(tx, (name,))
            n = len(bound)
            if n and not force:
                raise InUse("name", f"network {name!r} has {n} port binding(s): "
                                    f"{_named(bound)}; remove their containers (docker rm; "
                                    "a port's weft-docker-endpoint external_id names its "
                                    "endpoint), unbind "
                                    "them, or delete with force=true", bound)
            _unbind_segment(tx, name)
            _drop_claims(tx, name)
            tx.remove_tenant(name)
            return n
        return self._write(delete)

    # -- static routes ------------------------------------------------------------
    def add_route(self, tenant: str, prefix: str, via: str, mac: str | None = None) -> Route:
        """A tenant's static route: ``prefix`` via a host of one of its gateway networks
        (a bound port's address, or any address with ``mac``)."""
        with model_values("prefix"):
            route = Route(tenant, prefix, via, mac)

        def add(tx: ModelTx) -> Route:
            rules.check_route(tx, route)
            tx.put_route(route)
            rules.check_model(tx, "via")
            return route
        return self._write(add)

    def delete_route(self, tenant: str, prefix: str) -> None:
        with model_values("prefix"):
            normal = Route(tenant, prefix, "::" if ":" in str(prefix) else "0.0.0.0").prefix

        def delete(tx: ModelTx) -> None:
            rules.get_tenant(tx, tenant, "tenant")
            if not any(r.prefix == normal for r in tx.routes(tenant)):
                raise NotFound("prefix", f"tenant {tenant!r} has no route to {normal}")
            tx.remove_route(tenant, normal)
        self._write(delete)

    # -- binding writes -----------------------------------------------------------
    def bind(self, host: str, port: str, tenant: str | None, mode: str = ACCESS,
             mac: str | None = None, source: str = "api", trunk: tuple[str, ...] = (),
             replace: bool = False, ips: tuple[str, ...] = (),
             allowed_address_pairs: tuple = ()) -> Binding:
        """Bind a port; `replace` changes an existing binding (e.g. access <-> trunk).

        ``ips``/``allowed_address_pairs``: port security addresses (see Binding)."""
        b = rules.valid_binding(host, port, tenant, mode, mac, trunk)
        with model_values("ips"):
            b = replace_(b, ips=tuple(ips), allowed_address_pairs=tuple(allowed_address_pairs))

        def bind(tx: ModelTx) -> Binding:
            rules.check_tenants(tx, b)
            row = tx.binding(host, port)
            if row and not replace and (row.binding.tenant, row.binding.mode,
                                        row.binding.trunk) != (tenant, mode, tuple(trunk)):
                raise Conflict("port", f"port {host}/{port} is already bound "
                                       f"({row.binding.mode}, tenant {row.binding.tenant!r}); "
                                       "unbind it or replace it with PUT")
            if replace and not row:
                raise NotFound("port", f"port {host}/{port} is not bound")
            rules.check_mac(tx, b)
            rules.binding_off_gateways(tx, b)
            tx.put_binding(StoredBinding(b, source))
            return b
        return self._write(bind)

    def bind_many(self, items: list[dict]) -> int:
        """Bind many ports at once, all or nothing (orchestrators, benchmarks)."""
        wanted = [rules.valid_binding(i["host"], i["port"], i.get("tenant"), i.get("mode", ACCESS),
                                 i.get("mac"), tuple(i.get("trunk") or ())) for i in items]
        keys = [(b.host, b.port) for b in wanted]
        if len(set(keys)) != len(keys):
            raise Conflict("port", "the same port is listed twice")
        macs = [(b.tenant, b.mac) for b in wanted if b.mac]
        if len(set(macs)) != len(macs):
            raise Conflict("mac", "the same MAC is listed twice in one tenant")

        def bind(tx: ModelTx) -> int:
            for b in wanted:
                rules.check_tenants(tx, b)
                row = tx.binding(b.host, b.port)
                if row and row.binding.tenant != b.tenant:
                    raise Conflict("port", f"port {b.host}/{b.port} is bound to tenant "
                                           f"{row.binding.tenant!r}; unbind it first")
                rules.check_mac(tx, b)
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
        wanted = [rules.agent_binding(host, a) for a in attachments
                  if a["port"] != DOCKER_LINK_PORT]
        docker0 = rules.link_endpoints(host, [a for a in attachments
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
                rules.check_tenants(tx, b)
                if tx.binding(host, b.port):    # an explicit REST binding wins over the agent's
                    continue
                try:                            # a container on the gateway's address
                    rules.binding_off_gateways(tx, b)   # (docker run --ip6 GW6) is left
                except Invalid as exc:                  # unbound: the model stays loadable
                    LOG.warning("%s reports port %s: not bound: %s", host, b.port, exc.message)
                    continue
                rules.check_mac(tx, b)
                tx.put_binding(StoredBinding(b, "agent"))
            return len(wanted)
        return self._write(replace_all)

    # -- QoS: rate limits and per-flow rules --------------------------------------------
    def add_limit(self, host: str, kbps: int | None, burst_kb: int = 0, port: str | None = None,
                  tenant: str | None = None, pps: int | None = None,
                  burst_pkts: int = 0) -> RateLimit:
        """Limit what a bound port sends, or a tenant's aggregate on one host, in kbit/s
        (``kbps``) or packets/s (``pps``)."""
        with model_values("host"):
            check_host(host)

        def add(tx: ModelTx) -> RateLimit:
            if port is not None and tx.binding(host, port) is None:
                raise NotFound("port", f"port {host}/{port} is not bound")
            if tenant is not None:
                rules.tenant_exists(tx, tenant)
            if any((x.host, x.port, x.tenant) == (host, port, tenant) for x in tx.limits()):
                raise Conflict("port" if port else "tenant", "that already has a rate limit; "
                                                            "change it with PATCH")
            meter = rules.next_meter(tx)
            with model_values("kbps"):
                limit = RateLimit(meter, host, kbps, burst_kb, port, tenant, pps, burst_pkts)
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
                with model_values("pps"):
                    new = replace_(cur, kbps=None, burst_kb=0, pps=pps,
                                   burst_pkts=burst_pkts or 0)
            else:
                with model_values("kbps"):
                    if kbps is not None and pps is None and cur.pps is not None:
                        new = replace_(cur, kbps=kbps, burst_kb=burst_kb or 0, pps=None,
                                       burst_pkts=0)
                    else:
                        new = replace_(
                            cur, kbps=cur.kbps if kbps is None else kbps,
                            burst_kb=cur.burst_kb if burst_kb is None else burst_kb,
                            pps=cur.pps if pps is None else pps,
                            burst_pkts=cur.burst_pkts if burst_pkts is None else burst_pkts)
            tx.put_qos(new)
            return new
        return self._write(update)

    def add_rule(self, tenant: str, priority: int, match: dict, kbps: int | None = None,
                 burst_kb: int = 0, set_dscp: int | None = None,
                 queue: int | None = None) -> QosRule:
        """A per-flow QoS rule of a tenant: match -> meter and/or DSCP remark and/or queue."""
        items = tuple(sorted((match or {}).items()))

        def add(tx: ModelTx) -> QosRule:
            rules.tenant_exists(tx, tenant)
            if any(r.tenant == tenant and r.priority == priority for r in tx.rules()):
                raise Conflict("priority", f"tenant {tenant!r} already has a rule at priority "
                                           f"{priority}: priorities order the rules")
            meter = rules.next_meter(tx)
            with model_values("match"):
                rule = QosRule(meter, tenant, priority, items, kbps, burst_kb, set_dscp, queue)
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
            with model_values("kbps"):
                new = QosRule(cur.id, cur.tenant, cur.priority, cur.match, **fields)
            tx.put_qos(new)
            return new
        return self._write(update)

    def delete_qos(self, kind: str, qos_id: int) -> None:
        what = "rate limit" if kind == "limit" else "QoS rule"
        if isinstance(qos_id, bool) or not isinstance(qos_id, int) or \
                not 1 <= qos_id <= MAX_METER_ID:
            raise NotFound("id", f"no {what} {str(qos_id)[:24]} (ids are 1..{MAX_METER_ID})")

        def delete(tx: ModelTx) -> None:
            x = tx.qos(qos_id)
            if x is None or isinstance(x, RateLimit) != (kind == "limit"):
                raise NotFound("id", f"no {what} {qos_id}")
            tx.remove_qos(qos_id)
        self._write(delete)

    # -- ACLs: a tenant's ordered, stateful rules and its default ------------------------
    def set_acl_default(self, tenant: str, default: str) -> str:
        if default not in ACL_DEFAULTS:
            raise Invalid("default", f"default {str(default)[:20]!r} is not allow|deny")

        def set_default(tx: ModelTx) -> str:
            t = rules.acl_tenant(tx, tenant)
            if default == "deny":
                rules.acl_zone_ok(t)
            tx.set_acl_policy(tenant, default)
            return default
        return self._write(set_default)

    def add_acl(self, tenant: str, priority: int, action: str, direction: str = "ingress",
                ip_proto: Any = None, remote: str | None = None, local: str | None = None,
                port: int | None = None, icmp_type: int | None = None,
                description: str = "") -> AclRule:
        """A rule of a tenant's security policy; its id is the low half of its flows' cookie."""
        with model_values("priority"):  # the values first, with a stand-in id
            AclRule(1, tenant, priority, action, direction, ip_proto, remote, local, port,
                    icmp_type, description)

        def add(tx: ModelTx) -> AclRule:
            rules.acl_zone_ok(rules.acl_tenant(tx, tenant))
            rules.acl_priority_free(tx, tenant, priority, None)
            rule_id = tx.new_acl_id()
            if rule_id > MAX_ACL_ID:
                raise Conflict("id", "all ACL rule ids are used")
            with model_values("priority"):
                rule = AclRule(rule_id, tenant, priority, action, direction, ip_proto, remote,
                               local, port, icmp_type, description)
            tx.put_acl(rule)
            return rule
        return self._write(add)

    def update_acl(self, tenant: str, rule_id: int, **changes: Any) -> AclRule:
        unknown = set(changes) - {"priority", "action", "direction", "ip_proto", "remote",
                                  "local", "port", "icmp_type", "description"}
        if unknown:
            raise Invalid(sorted(unknown)[0], "not a field of an ACL rule")

        def update(tx: ModelTx) -> AclRule:
            cur = rules.acl(tx, tenant, rule_id)
            fields = {k: getattr(cur, k) for k in ("priority", "action", "direction", "ip_proto",
                                                   "remote", "local", "port", "icmp_type",
                                                   "description")} | changes
            with model_values("priority"):
                new = AclRule(rule_id, tenant, **fields)
            rules.acl_priority_free(tx, tenant, new.priority, rule_id)
            tx.put_acl(new)
            return new
        return self._write(update)

    def delete_acl(self, tenant: str, rule_id: int) -> None:
        def delete(tx: ModelTx) -> None:
            rules.acl(tx, tenant, rule_id)
            tx.remove_acl(rule_id)
        self._write(delete)

    # -- operator flows -------------------------------------------------------------
    def add_operator_flows(self, flows: list[dict]) -> list[OperatorFlow]:
        """Store already-checked operator flows, all or nothing; ids are assigned here."""
        def add(tx: ModelTx) -> list[OperatorFlow]:
            out = []
            for f in flows:
                flow_id = tx.new_operator_flow_id()
                if flow_id > MAX_OPERATOR_FLOW_ID:
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

    # -- cluster-wide IPAM: blocks and addresses hosts hold (cluster/ipam.py) -----------
    # These writes change no flow: callers do not resync switches after them.
    def ipam_claims(self, network: str | None = None, host: str | None = None) -> list[Claim]:
        """The claims (of ``network``, of ``host``); 404 for an unknown network."""
        def read(tx: ModelTx) -> list[Claim]:
            if network is not None:
                rules.get_network(tx, network)
            return [c for c in tx.claims(network) if host is None or c.host == host]
        return self._read(read)

    def claim_block(self, network: str, host: str, subnet: str | None = None,
                    prefix: int | None = None,
                    within: str | None = None) -> tuple[Claim, tuple[str, ...]]:
        """A free block of ``network``'s subnet for ``host`` (inside ``within``, e.g.
        Docker's --ip-range), and the address claims inside it that the host must skip.
        One transaction: two hosts (through any controllers) never get one block."""
        subnet, within = _ipam_args(host, subnet, within)

        def claim(tx: ModelTx) -> tuple[Claim, tuple[str, ...]]:
            space = _ipam_network(tx, network, subnet)
            size = ipam.block_prefix(space) if prefix is None else prefix
            try:
                found = ipam.choose_block(space, size, tx.claims(network), within)
            except IpamError as exc:
                raise Invalid("within" if within else "prefix", str(exc)) from None
            if found is None:
                raise Conflict("network", f"every /{size} block of {within or space} of "
                                          f"network {network!r} is held by a host: free "
                                          "addresses on other hosts, or give the network a "
                                          "larger subnet")
            c = Claim(network, found[0], host, ipam.BLOCK)
            tx.put_claim(c)
            return c, found[1]
        return self._write(claim)

    def release_block(self, network: str, cidr: str, host: str) -> None:
        """``host`` gives its block back (it is empty); another host's block is 409."""
        with model_values("host"):
            check_host(host)
        try:
            cidr = str(ipaddress.IPv4Network(cidr))
        except (ValueError, TypeError):
            raise Invalid("cidr", f"{str(cidr)[:40]!r} is not an IPv4 CIDR") from None

        def release(tx: ModelTx) -> None:
            rules.get_network(tx, network)
            c = next((c for c in tx.claims(network) if c.cidr == cidr), None)
            if c is None or c.kind != ipam.BLOCK:
                raise NotFound("cidr", f"network {network!r} has no block {cidr}")
            if c.host != host:
                raise Conflict("host", f"block {cidr} of network {network!r} is held by "
                                       f"host {c.host}, not {host}")
            tx.remove_claim(network, cidr)
        self._write(release)

    def claim_address(self, network: str, host: str, address: str,
                      subnet: str | None = None) -> Claim:
        """``docker run --ip``: the claim giving ``address`` to ``host``: its own block or
        address claim, else a new address claim; 409 naming the host that holds it."""
        subnet = _ipam_args(host, subnet, None)[0]
        try:
            addr = str(ipaddress.IPv4Address(address))
        except (ValueError, TypeError):
            raise Invalid("address", f"{str(address)[:40]!r} is not an IPv4 address") from None

        def claim(tx: ModelTx) -> Claim:
            space = ipaddress.IPv4Network(_ipam_network(tx, network, subnet))
            if ipaddress.IPv4Address(addr) not in space:
                raise Invalid("address", f"{addr} is not in {space}, the subnet of network "
                                         f"{network!r}")
            try:
                held = ipam.address_verdict(network, addr, host, tx.claims(network))
            except IpamError as exc:
                raise Conflict("address", str(exc)) from None
            if held is not None:
                return held
            c = Claim(network, f"{addr}/32", host, ipam.ADDRESS)
            tx.put_claim(c)
            return c
        return self._write(claim)

    def release_address(self, network: str, address: str, host: str) -> None:
        """``host`` gives an address claim back; none (or another host's) changes nothing
        and says so."""
        try:
            cidr = f"{ipaddress.IPv4Address(address)}/32"
        except (ValueError, TypeError):
            raise Invalid("address", f"{str(address)[:40]!r} is not an IPv4 address") from None

        def release(tx: ModelTx) -> None:
            rules.get_network(tx, network)
            c = next((c for c in tx.claims(network) if c.cidr == cidr), None)
            if c is None or c.kind != ipam.ADDRESS:
                raise NotFound("address", f"network {network!r} has no address claim "
                                          f"{address}")
            if c.host != host:
                raise Conflict("host", f"address {address} of network {network!r} is held "
                                       f"by host {c.host}, not {host}")
            tx.remove_claim(network, cidr)
        self._write(release)

    def release_host(self, host: str) -> int:
        """Every claim of ``host`` (a host gone for good, with its containers): the
        operator's way out of blocks nobody will give back.  Returns how many."""
        with model_values("host"):
            check_host(host)

        def release(tx: ModelTx) -> int:
            mine = [c for c in tx.claims() if c.host == host]
            for c in mine:
                tx.remove_claim(c.network, c.cidr)
            return len(mine)
        return self._write(release)

    # -- backup: the whole model as JSON --------------------------------------------
    def export(self) -> dict:
        """The whole model and the epoch, as plain JSON, from one consistent read."""
        return self._read(export_model)

    def import_model(self, data: object, replace: bool = False) -> dict[str, int]:
        """Restore an export: everything is validated first (the same checks as the API's
        writes), then applied in one transaction, so bad input changes nothing.  Refuses a
        store that holds anything unless ``replace``.  Returns counts of what it restored."""
        model = parse_export(data)
        return self._write(lambda tx: import_into(tx, model, replace))
