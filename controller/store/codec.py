"""The model as JSON documents: `weftctl export/import` and the etcd backend's values.

``*_doc`` renders a value; ``*_of`` reads one back, checked by the model as a write
checks it (errors name the document's field).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import replace as replace_

from cluster.ipam import Claim, IpamError, check_claim
from controller.model import (ACCESS, DEFAULT_CONNTRACK_LIMIT, DEFAULT_TENANT, GATEWAY6_AUTO,
                              AclRule, Binding, QosRule, RateLimit, Route, Tenant, check_host,
                              check_name, holds_address, user_tenant)
from controller.opflows import OperatorFlow
from controller.store.errors import Conflict, Invalid, model_values
from controller.store.rules import valid_binding
from controller.store.tx import BINDING_SOURCES, StoredBinding


def tenant_doc(t: Tenant) -> dict:
    """A tenant or network row; ``domain``: None for a tenant, else the network's tenant.
    Documents written before schema 8 lack domain, gateway and egress: read as
    None, None, false; before schema 11 subnet6: None; before schema 12 gateway6: the
    address schema 11 derived (``tenant_of``, ``keep_loadable``)."""
    return {"name": t.name, "vni": t.vni, "vlan": t.vlan, "subnet": t.subnet,
            "subnet6": t.subnet6, "description": t.description, "domain": t.domain,
            "gateway": t.gateway, "egress": t.egress, "conntrack_limit": t.conntrack_limit,
            "gateway6": t.gateway6}


def route_doc(r: Route) -> dict:
    return {"tenant": r.tenant, "prefix": r.prefix, "via": r.via, "mac": r.mac}


def binding_doc(sb: StoredBinding) -> dict:
    b = sb.binding
    return {"host": b.host, "port": b.port, "tenant": b.tenant, "mode": b.mode, "mac": b.mac,
            "trunk": list(b.trunk), "source": sb.source, "ips": list(b.ips),
            "allowed_address_pairs": [list(p) for p in b.allowed_address_pairs]}


def claim_doc(c: Claim) -> dict:
    return {"network": c.network, "cidr": c.cidr, "host": c.host, "kind": c.kind}


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
    b = valid_binding(d["host"], d["port"], d.get("tenant"), d.get("mode", ACCESS),
                      d.get("mac"), tuple(d.get("trunk") or ()))
    with model_values("ips"):
        b = replace_(b, ips=tuple(d.get("ips") or ()), allowed_address_pairs=tuple(
            tuple(p) for p in d.get("allowed_address_pairs") or ()))
    source = d.get("source", "api")
    if source not in BINDING_SOURCES:
        raise Invalid("source", f"source {str(source)[:20]!r} is not api|agent")
    return StoredBinding(b, source)


def tenant_of(d: dict) -> Tenant:
    """A tenant or network document.  One written before schema 8 (etcd) or in export
    version 1 has no ``gateway`` key: no gateway, egress
    off, as SQLite's upgrade gives its rows; a ``"gateway": null`` is no gateway.  One
    written before schema 11 (etcd, export version 3) has no ``subnet6``: no IPv6 subnet.
    One written before schema 12 (etcd, export version 4) has no ``gateway6``: the
    address schema 11 derived (subnet6's first, with a gateway), which ``keep_loadable``
    takes back where a binding holds it; a ``"gateway6": null`` is none."""
    with model_values("name"):
        gateway = d.get("gateway")
        t = user_tenant(d["name"], d["vni"], d.get("vlan"), d.get("subnet"),
                        d.get("description") or "", d.get("domain"), gateway,
                        d.get("egress", False),
                        d.get("conntrack_limit", DEFAULT_CONNTRACK_LIMIT), d.get("subnet6"),
                        d.get("gateway6") if "gateway6" in d else GATEWAY6_AUTO)
    if t.name == DEFAULT_TENANT.name:
        raise Conflict("name", "the default tenant is built in")
    return t


def keep_loadable(tenants: Iterable[Tenant], legacy: set[str],
                  bindings: Iterable[Binding]) -> list[Tenant]:
    """``tenants`` with no IPv6 gateway on each network named in ``legacy`` (read from
    a document written before schema 12) where a port bound to it holds the address
    schema 11 derived: such a binding was valid then, and the store must load and
    keep its meaning (the SQLite upgrade does the same; schema.py's _upgrade_to_v12)."""
    held: dict[str, list[Binding]] = {}
    for b in bindings:
        if b.tenant in legacy:
            held.setdefault(b.tenant, []).append(b)
    out = []
    for t in tenants:
        gw6 = t.gateway6
        taken = next((b for b in held.get(t.name, ()) if holds_address(b.ips, gw6)),
                     None) if t.name in legacy and gw6 is not None else None
        if taken is not None:
            if (t.name, taken.host, taken.port) not in _LOGGED:
                _LOGGED.add((t.name, taken.host, taken.port))
                LOG.warning("store: network %s keeps no IPv6 gateway: port %s/%s is bound "
                            "with %s, the address weft derived for it before schema 12; "
                            "give it one with `weftctl network set %s --gateway6 ADDR`",
                            t.name, taken.host, taken.port, gw6, t.name)
            t = replace_(t, gateway6=None)
        out.append(t)
    return out


LOG = logging.getLogger("weft.store")
_LOGGED: set[tuple[str, str, str]] = set()     # (network, host, port): said once


def route_of(d: dict) -> Route:
    with model_values("prefix"):
        check_name(d["tenant"], "tenant")
        return Route(d["tenant"], d["prefix"], d["via"], d.get("mac"))


def limit_of(d: dict) -> RateLimit:
    with model_values("kbps"):
        return RateLimit(d["id"], d["host"], d.get("kbps"), d.get("burst_kb", 0), d.get("port"),
                         d.get("tenant"), d.get("pps"), d.get("burst_pkts", 0))


def rule_of(d: dict) -> QosRule:
    match = d.get("match") or {}
    if not isinstance(match, dict):
        raise Invalid("match", "must be an object")
    with model_values("match"):
        check_name(d["tenant"], "tenant")
        return QosRule(d["id"], d["tenant"], d["priority"], tuple(sorted(match.items())),
                       d.get("kbps"), d.get("burst_kb", 0), d.get("set_dscp"), d.get("queue"))


def acl_of(d: dict) -> AclRule:
    with model_values("priority"):
        check_name(d["tenant"], "tenant")
        return AclRule(d["id"], d["tenant"], d["priority"], d["action"],
                       d.get("direction", "ingress"), d.get("ip_proto"), d.get("remote"),
                       d.get("local"), d.get("port"), d.get("icmp_type"),
                       d.get("description") or "")


def operator_flow_of(d: dict) -> OperatorFlow:
    if not isinstance(d.get("match", {}), dict):
        raise Invalid("match", "must be an object")
    actions = d.get("actions", [])
    if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
        raise Invalid("actions", "must be a list of objects")
    with model_values("id"):
        return OperatorFlow(d["id"], d["dpid"], d["table_id"], d["priority"],
                            dict(d.get("match", {})), tuple(actions), bool(d.get("override")),
                            d.get("description") or "")


def match_from_json(text: str | None) -> tuple:
    """A QoS rule's match as SQLite holds it (a JSON object) -> sorted pairs."""
    return tuple(sorted(json.loads(text or "{}").items()))


def claim_of(d: dict) -> Claim:
    """An IPAM claim (schema 9): its network and host names and its CIDR checked."""
    with model_values("network"):
        check_name(d["network"], "network", what="network name")
    with model_values("host"):
        check_host(d["host"])
    try:
        return check_claim(d["network"], d["cidr"], d["host"], d.get("kind", "block"))
    except IpamError as exc:
        raise Invalid("cidr", str(exc)) from None
