"""`weftctl export` and `weftctl import`: the whole model as one JSON document, and
its restore, checked whole before anything is written (bad input changes nothing).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from cluster.ipam import BLOCK, Claim
from controller.model import (ACL_DEFAULTS, DEFAULT_TENANT, MAX_ACL_ID, AclRule, QosRule,
                              RateLimit, Route, Tenant)
from controller.opflows import MAX_OPERATOR_FLOW_ID, OperatorFlow
import controller.store.rules as rules
from controller.store.codec import (acl_doc, acl_of, binding_doc, binding_of, claim_doc,
                                    claim_of, limit_doc,
                                    limit_of, operator_flow_doc, operator_flow_of, route_doc,
                                    route_of, rule_doc, rule_of, tenant_doc, tenant_of,
                                    keep_loadable)
from controller.store.errors import Conflict, Invalid, NotFound, StoreError
from controller.store.tx import ModelTx, StoredBinding, all_qos

EXPORT_FORMAT = "weft-model"
EXPORT_VERSION = 5          # 2: networks (tenant rows with domain, gateway, egress), routes
                            # 3: ipam (the blocks and addresses hosts hold, schema 9)
                            # 4: tenant rows' subnet6, IPv6 in bindings' ips (schema 11)
                            # 5: tenant rows' gateway6 (schema 12)
IMPORT_VERSIONS = (1, 2, 3, 4, 5)  # 1: tenants without gateway get the upgrade's (codec.tenant_of)


def export_model(tx: ModelTx) -> dict:
    return {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "epoch": tx.epoch(),
            "tenants": [tenant_doc(t) for t in tx.tenants() if t.name != DEFAULT_TENANT.name],
            "bindings": [binding_doc(sb) for sb in tx.bindings()],
            "routes": [route_doc(r) for r in tx.routes()],
            "limits": [limit_doc(x) for x in tx.limits()],
            "rules": [rule_doc(r) for r in tx.rules()],
            "acls": [acl_doc(r) for r in tx.acls()],
            "acl_defaults": dict(sorted(tx.acl_policies().items())),
            "operator_flows": [operator_flow_doc(f) for f in tx.operator_flows()],
            "ipam": [claim_doc(c) for c in tx.claims()],
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
    routes: tuple[Route, ...] = ()
    next_acl: int = 1
    next_operator_flow: int = 1
    claims: tuple[Claim, ...] = ()


_SECTIONS: dict[str, Callable[[dict], Any]] = {
    "tenants": tenant_of, "bindings": binding_of, "limits": limit_of, "rules": rule_of,
    "acls": acl_of, "operator_flows": operator_flow_of, "routes": route_of, "ipam": claim_of}
_V1_SECTIONS = set(_SECTIONS) - {"routes", "ipam"}
_V2_SECTIONS = set(_SECTIONS) - {"ipam"}


def parse_export(data: object) -> ParsedModel:
    """Every item of an export checked on its own (shape, names, ranges), errors naming
    the item (``tenants[3].vni``); what needs the whole model is checked in `_restore`."""
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise Invalid("format", f"not a weft model export (want \"format\": "
                                f"\"{EXPORT_FORMAT}\")")
    version = data.get("version")
    if isinstance(version, bool) or version not in IMPORT_VERSIONS:
        raise Invalid("version", f"export version {str(version)[:10]} is not one of "
                                 f"{', '.join(map(str, IMPORT_VERSIONS))}")
    sections = _SECTIONS if version >= 3 else {
        k: _SECTIONS[k] for k in (_V2_SECTIONS if version == 2 else _V1_SECTIONS)}
    unknown = set(data) - {"format", "version", "epoch", "acl_defaults", "next_ids", *sections}
    if unknown:
        raise Invalid(sorted(unknown)[0], "not a section of a weft model export")
    epoch = data.get("epoch")
    if not isinstance(epoch, str) or not 1 <= len(epoch) <= 64 or not epoch.isalnum():
        raise Invalid("epoch", "must be the exported store's epoch (letters and digits)")
    parsed: dict[str, tuple] = {"routes": (), "ipam": ()}
    for section, parse in sections.items():
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
            isinstance(k, str) and v in ACL_DEFAULTS for k, v in defaults.items()):
        raise Invalid("acl_defaults", "must map tenant names to allow|deny")
    next_ids = data.get("next_ids", {})
    tops = {"acl": MAX_ACL_ID, "operator_flow": MAX_OPERATOR_FLOW_ID}
    if not isinstance(next_ids, dict) or set(next_ids) - set(tops) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= tops[k] + 1
            for k, v in next_ids.items()):
        raise Invalid("next_ids", "must be {\"acl\": N, \"operator_flow\": N}, ids to "
                                  "hand out next")
    legacy = {t.name for t, item in zip(parsed["tenants"], data.get("tenants", []))
              if "gateway6" not in item}
    if legacy:          # before version 5: as the schema 12 upgrade (codec.keep_loadable)
        parsed["tenants"] = tuple(keep_loadable(
            parsed["tenants"], legacy, (sb.binding for sb in parsed["bindings"])))
    return ParsedModel(epoch, parsed["tenants"], parsed["bindings"], parsed["limits"],
                       parsed["rules"], parsed["acls"], tuple(sorted(defaults.items())),
                       parsed["operator_flows"], parsed["routes"], next_ids.get("acl", 1),
                       next_ids.get("operator_flow", 1), parsed["ipam"])


def _is_empty(tx: ModelTx) -> bool:
    return (len(tx.tenants()) == 1 and not tx.bindings() and not tx.limits()
            and not tx.rules() and not tx.acls() and not tx.acl_policies()
            and not tx.operator_flows() and not tx.routes() and not tx.claims())


def _wipe(tx: ModelTx) -> None:
    for f in tx.operator_flows():
        tx.remove_operator_flow(f.id)
    for r in tx.acls():
        tx.remove_acl(r.id)
    for tenant in tx.acl_policies():
        tx.set_acl_policy(tenant, None)
    for x in all_qos(tx):
        tx.remove_qos(x.id)
    for sb in tx.bindings():
        tx.remove_binding(sb.binding.host, sb.binding.port)
    for host in {e.host for e in tx.link_endpoints()}:
        tx.set_link_endpoints(host, [])
    for host in tx.container_names():
        tx.set_container_names(host, ())
    for route in tx.routes():
        tx.remove_route(route.tenant, route.prefix)
    for c in tx.claims():
        tx.remove_claim(c.network, c.cidr)
    for t in sorted(tx.tenants(), key=lambda t: t.domain is None):     # networks first
        if t.name != DEFAULT_TENANT.name:
            tx.remove_tenant(t.name)


def import_into(tx: ModelTx, m: ParsedModel, replace: bool) -> dict[str, int]:
    """Make the store hold exactly ``m``; refuse a store holding anything unless
    ``replace``.  Returns counts of what was restored."""
    empty = _is_empty(tx)
    _wipe(tx)
    counts = _restore(tx, m)            # the input is checked whole first...
    if not replace and not empty:       # ...then the refusal (the write rolls all back)
        raise Conflict("store", "the store is not empty; import with --replace "
                                "(replace=true) to overwrite everything in it")
    return counts


def _restore(tx: ModelTx, m: ParsedModel) -> dict[str, int]:
    """Put a parsed export into an empty transaction with the writes' own checks."""
    def each_at(section: str, i: int, item: Any, put: Callable[[Any], None]) -> None:
        try:
            put(item)
        except StoreError as exc:
            raise type(exc)(f"{section}[{i}].{exc.field}", exc.message) from None

    def each(section: str, items: tuple, put: Callable[[Any], None]) -> None:
        for i, item in enumerate(items):
            each_at(section, i, item, put)

    def tenant(t: Tenant) -> None:
        if tx.tenant(t.name) is not None:
            raise Conflict("name", f"tenant {t.name!r} is listed twice")
        if t.domain is not None:
            rules.owner_of_new_network(tx, t.domain)
        rules.check_unique(tx, "vni", t.vni, t.name)
        rules.check_unique(tx, "vlan", t.vlan, t.name)
        rules.gateway_id_ok(tx, t)
        tx.put_tenant(t)

    def route(r: Route) -> None:
        rules.check_route(tx, r, need_mac=False)
        tx.put_route(r)

    def binding(sb: StoredBinding) -> None:
        b = sb.binding
        rules.check_tenants(tx, b)
        if tx.binding(b.host, b.port) is not None:
            raise Conflict("port", f"port {b.host}/{b.port} is listed twice")
        rules.check_mac(tx, b)
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
            rules.tenant_exists(tx, x.tenant)
        if isinstance(x, QosRule) and any(r.tenant == x.tenant and r.priority == x.priority
                                           for r in tx.rules()):
            raise Conflict("priority", f"tenant {x.tenant!r} has two rules at priority "
                                       f"{x.priority}")
        tx.put_qos(x)

    def acl(r: AclRule) -> None:
        rules.acl_zone_ok(rules.acl_tenant(tx, r.tenant))
        if any(a.id == r.id for a in tx.acls()):
            raise Conflict("id", f"ACL rule id {r.id} is listed twice")
        rules.acl_priority_free(tx, r.tenant, r.priority, r.id)
        tx.put_acl(r)

    def default(item: tuple[str, str]) -> None:
        tenant, value = item
        t = rules.acl_tenant(tx, tenant)
        if value == "deny":
            rules.acl_zone_ok(t)
        tx.set_acl_policy(tenant, value)

    def operator_flow(f: OperatorFlow) -> None:
        if any(g.id == f.id for g in tx.operator_flows()):
            raise Conflict("id", f"operator flow id {f.id} is listed twice")
        tx.put_operator_flow(f)

    def claim(c: Claim) -> None:
        rules.get_network(tx, c.network)
        for o in tx.claims(c.network):
            if o.cidr == c.cidr or (c.kind == o.kind == BLOCK and c.net.overlaps(o.net)):
                raise Conflict("cidr", f"{c.cidr} of network {c.network!r} overlaps "
                                       f"{o.cidr} (host {o.host})")
        tx.put_claim(c)

    # tenants before their networks (a network names its tenant), errors at their index
    order = sorted(range(len(m.tenants)), key=lambda i: m.tenants[i].domain is not None)
    for i in order:
        each_at("tenants", i, m.tenants[i], tenant)
    each("bindings", m.bindings, binding)
    each("routes", m.routes, route)
    rules.check_model(tx, "tenants")          # the whole model's rules, once
    each("limits", m.limits, qos)
    each("rules", m.rules, qos)
    each("acls", m.acls, acl)
    each("acl_defaults", m.acl_defaults, default)
    each("operator_flows", m.operator_flows, operator_flow)
    each("ipam", m.claims, claim)
    tx.set_epoch(m.epoch)
    tx.reserve_ids(m.next_acl, m.next_operator_flow)
    return {"tenants": len(m.tenants), "bindings": len(m.bindings), "routes": len(m.routes),
            "limits": len(m.limits),
            "rules": len(m.rules), "acls": len(m.acls), "acl_defaults": len(m.acl_defaults),
            "operator_flows": len(m.operator_flows), "ipam": len(m.claims)}

