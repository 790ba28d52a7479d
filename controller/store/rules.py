"""The rules that span records, checked inside a write's transaction: names and ids
that must be unique, and references that must resolve (a binding's tenants, a limit's
port).  A single value's range and form are the model's business (controller.model);
SQLite's keys and triggers are the last wall behind both.
"""
from __future__ import annotations

import ipaddress
from dataclasses import replace

from controller.model import (ACCESS, DEFAULT_TENANT, DOCKER_LINK_PORT, MAX_ACL_ZONE_VNI,
                              MAX_METER_ID, RESERVED_MAC_PREFIXES, VNI_MIN, AclRule, Binding,
                              LinkEndpoint, Route, Tenant, Topology, check_bindable_port,
                              check_name, first_host, holds_address)
from controller.store.errors import Conflict, Invalid, NotFound, model_values
from controller.store.tx import ModelTx, all_qos


def valid_binding(host: str, port: str, tenant: str | None, mode: str = ACCESS,
                  mac: str | None = None, trunk: tuple[str, ...] = ()) -> Binding:
    """The model's checks of a binding (tenants are checked later, inside the write)."""
    with model_values("port"):
        check_bindable_port(host, port)
        if tenant is not None:
            check_name(tenant, "tenant")
        for name in trunk:
            check_name(name, "trunk")
        return Binding(host, port, tenant, mode, mac, tuple(trunk))


def agent_binding(host: str, a: dict) -> Binding:
    """An attachment an agent reported, as ``replace_agent_bindings`` binds it: with its
    MAC and addresses, or with neither when its port security is off."""
    secured = a.get("port_security", True)
    b = valid_binding(host, a["port"], a["tenant"], ACCESS,
                      (a.get("mac") or None) if secured else None)
    with model_values("ips"):
        return replace(b, ips=tuple(a.get("ips") or ())) if secured else b


def link_endpoints(host: str, attachments: list[dict]) -> list[LinkEndpoint]:
    """docker0 containers an agent reported (port ``weft-d0``), checked, each MAC once."""
    out: dict[str, LinkEndpoint] = {}
    for a in attachments:
        if a["tenant"] != DEFAULT_TENANT.name:
            raise Invalid("tenant", f"{DOCKER_LINK_PORT} is the default tenant's, not "
                                    f"{str(a['tenant'])[:40]!r}")
        with model_values("mac"):
            e = LinkEndpoint(host, a.get("mac") or "", tuple(a.get("ips") or ()))
        out.setdefault(e.mac, e)
    return list(out.values())


def _not_a_tenant(t: Tenant, field: str) -> NotFound:
    return NotFound(field, f"{t.name!r} is a network of tenant {t.domain!r}, not a tenant "
                           "(ACLs, QoS, routes and networks belong to tenants)")


def get_tenant(tx: ModelTx, name: str, field: str = "name") -> Tenant:
    """A tenant (a row without domain); a network's name is 404 saying whose it is."""
    t = tx.tenant(name)
    if t is None:
        raise NotFound(field, f"no tenant {str(name)[:40]!r}")
    if t.domain is not None:
        raise _not_a_tenant(t, field)
    return t


def tenant_exists(tx: ModelTx, tenant: str) -> None:
    if tenant != DEFAULT_TENANT.name:
        get_tenant(tx, tenant, "tenant")


def get_network(tx: ModelTx, name: str, field: str = "name") -> Tenant:
    """A network: any row (a tenant's name is also its default network's)."""
    t = tx.tenant(name)
    if t is None:
        raise NotFound(field, f"no network {str(name)[:40]!r}")
    return t


def owner_of_new_network(tx: ModelTx, tenant: str) -> Tenant:
    """The tenant a new network goes into: exists, is a tenant, is not the default."""
    if tenant == DEFAULT_TENANT.name:
        raise Conflict("tenant", "the default tenant has no further networks (docker0 is "
                                 "its only segment)")
    return get_tenant(tx, tenant, "tenant")


def default_gateway(subnet: str | None, tenant_id: int) -> str | None:
    """A new network's gateway when none is asked for: its subnet's first address, or
    none when the subnet cannot route (none, IPv6, smaller than /30) or the tenant's id
    is past a conntrack zone (``MAX_ACL_ZONE_VNI``: the pipeline needs it as one)."""
    return first_host(subnet) if tenant_id <= MAX_ACL_ZONE_VNI else None


def gateway_id_ok(tx: ModelTx, t: Tenant) -> None:
    """A row with a gateway needs its tenant's id (VNI) to fit a conntrack zone (the
    one rule ``check_model`` would find for a single row, cheaply)."""
    if t.gateway is None:
        return
    tenant_id = t.vni if t.domain is None else get_tenant(tx, t.domain, "domain").vni
    if tenant_id > MAX_ACL_ZONE_VNI:
        raise Conflict("gateway", f"network {t.name!r}: a gateway needs its tenant's VNI up "
                                  f"to {MAX_ACL_ZONE_VNI} (the tenant id is a conntrack zone), "
                                  f"not {tenant_id}")


def gateways_unbound(tx: ModelTx, t: Tenant) -> None:
    """No port bound to network ``t`` holds its gateway or IPv6 gateway (the Topology
    would refuse to load): a 422 naming the field and the port."""
    for field, gw in (("gateway", t.gateway), ("gateway6", t.gateway6)):
        if gw is None:
            continue
        for sb in tx.bindings():
            b = sb.binding
            if b.tenant == t.name and holds_address(b.ips, gw):
                raise Invalid(field, f"network {t.name!r}: {field} {gw} is the address of "
                                     f"port {b.host}/{b.port} bound there; give the network "
                                     "another one, or the port another address")


def binding_off_gateways(tx: ModelTx, b: Binding) -> None:
    """A binding's ips do not hold its network's gateway or IPv6 gateway (422)."""
    t = tx.tenant(b.tenant) if b.tenant is not None else None
    if t is None:
        return
    for gw in (t.gateway, t.gateway6):
        if gw is not None and holds_address(b.ips, gw):
            raise Invalid("ips", f"{gw} is the gateway of network {t.name!r}; give the port "
                                 "another address, or the network another gateway")


def check_model(tx: ModelTx, field: str) -> None:
    """The whole model's cross-row rules (``Topology``: networks' tenants, gateways and
    tenant ids, routes' next hops) on what this transaction would commit; bindings are
    left out (their rules are checked as they are written).  A broken one refuses the
    write, naming ``field``, and the transaction rolls back: nothing changed."""
    try:
        Topology(tuple(t for t in tx.tenants() if t.name != DEFAULT_TENANT.name),
                 routes=tuple(tx.routes()))
    except ValueError as exc:
        raise Conflict(field, f"refused: {exc}") from None


def route_vias_in(tx: ModelTx, network: Tenant) -> list[Route]:
    """The routes of ``network``'s tenant whose next hop lies in its subnet."""
    nets = [ipaddress.ip_network(s) for s in (network.subnet, network.subnet6) if s]
    return [r for r in tx.routes(network.tenant)
            if any(ipaddress.ip_address(r.via) in net for net in nets)]


def check_route(tx: ModelTx, r: Route, need_mac: bool = True) -> None:
    """A new route: its tenant is one, its prefix is new there, its next hop is a host of
    one of the tenant's gateway networks (not a gateway) whose MAC is known: a binding
    of that network holding ``via`` in its ips or address pairs, else ``mac``.  A
    restore (``need_mac`` False) takes routes whose next hop has gone unbound since."""
    t = get_tenant(tx, r.tenant, "tenant")
    if any(x.prefix == r.prefix for x in tx.routes(t.name)):
        raise Conflict("prefix", f"tenant {t.name!r} already has a route to {r.prefix}; "
                                 "delete it first")
    nets = [n for n in tx.tenants() if n.tenant == t.name]
    gateways = {g: n.name for n in nets for g in (n.gateway, n.gateway6) if g}
    if r.via in gateways:
        raise Invalid("via", f"via {r.via} is the gateway of network {gateways[r.via]!r}, "
                             "not a next hop")
    addr = ipaddress.ip_address(r.via)
    routed = [(n, n.subnet6 if r.v6 else n.subnet) for n in nets
              if (n.gateway6 if r.v6 else n.gateway)]
    home = next((n for n, s in routed if s and addr in ipaddress.ip_network(s)), None)
    if home is None:
        subnets = ", ".join(sorted(s for _, s in routed if s))
        kind = "an IPv6 gateway" if r.v6 else "a gateway"
        raise Invalid("via", f"via {r.via} is in none of the networks with {kind} of "
                             f"tenant {t.name!r} ({subnets or 'it has none'})")
    net = ipaddress.ip_network((home.subnet6 if r.v6 else home.subnet) or "")
    if addr in (net.network_address, net.broadcast_address):
        raise Invalid("via", f"via {r.via} is not a host address of {net} "
                             f"(network {home.name!r})")
    if r.mac is not None:
        if r.mac.startswith(RESERVED_MAC_PREFIXES):
            raise Invalid("mac", f"mac {r.mac} is reserved for weft's gateways")
        return
    if not need_mac:
        return
    held = any(sb.binding.tenant == home.name and (
        r.via in sb.binding.ips or any(ip == r.via for ip, _ in
                                        sb.binding.allowed_address_pairs))
        for sb in tx.bindings())
    if not held:
        raise Invalid("mac", f"no port of network {home.name!r} is bound with address "
                             f"{r.via}: give the next hop's mac")


def check_tenants(tx: ModelTx, b: Binding) -> None:
    """Every tenant the binding names exists (and has a vlan when it rides a trunk).
    SQLite's schema refuses orphans too; this names the field."""
    known = {t.name: t for t in tx.tenants()}
    if b.tenant is not None and b.tenant not in known:
        raise NotFound("tenant", f"no tenant or network {b.tenant!r}")
    for name in b.trunk:
        if name not in known:
            raise NotFound("trunk", f"no tenant or network {name!r}")
        if known[name].vlan is None:
            raise Invalid("trunk", f"tenant {name!r} has no VLAN id: set one to carry it "
                                   "on a trunk")


def check_mac(tx: ModelTx, b: Binding) -> None:
    if b.mac and tx.mac_taken(b.tenant, b.mac, b.host, b.port):
        raise Conflict("mac", f"mac {b.mac} is already bound in tenant {b.tenant!r}")


def check_unique(tx: ModelTx, column: str, value: object, name: str) -> None:
    """No other tenant or network has this vni or vlan (the default tenant holds VNI 1)."""
    if value is None:
        return
    other = next((t for t in tx.tenants() if getattr(t, column) == value
                  and t.name != name), None)
    if other is not None and other.domain is not None:
        raise Conflict(column, f"{column} {value} is used by network {other.name!r} of "
                               f"tenant {other.domain!r}")
    if other or (column == "vni" and value == DEFAULT_TENANT.vni):
        raise Conflict(column, f"{column} {value} is used by tenant "
                               f"{other.name if other else 'default'!r}")


def free_vni(tx: ModelTx) -> int:
    """The lowest user VNI no tenant or network has."""
    used = {t.vni for t in tx.tenants()}
    vni = VNI_MIN
    while vni in used:
        vni += 1
    return vni


def next_meter(tx: ModelTx) -> int:
    """The lowest meter id no rate limit or QoS rule has."""
    used = {x.id for x in all_qos(tx)}
    meter = next((i for i in range(1, MAX_METER_ID + 1) if i not in used), None)
    if meter is None:
        raise Conflict("id", f"all {MAX_METER_ID} meter ids are in use")
    return meter


def acl_tenant(tx: ModelTx, tenant: str) -> Tenant:
    return get_tenant(tx, tenant, "tenant")


def acl(tx: ModelTx, tenant: str, rule_id: int) -> AclRule:
    acl_tenant(tx, tenant)
    rule = next((r for r in tx.acls(tenant) if r.id == rule_id), None)
    if rule is None:
        raise NotFound("id", f"tenant {tenant!r} has no ACL rule {str(rule_id)[:24]}")
    return rule


def acl_priority_free(tx: ModelTx, tenant: str, priority: int, rule_id: int | None) -> None:
    other = next((r.id for r in tx.acls(tenant) if r.priority == priority), None)
    if other is not None and other != rule_id:
        raise Conflict("priority", f"tenant {tenant!r} already has ACL rule {other} at "
                                   f"priority {priority}: priorities order the rules")


def acl_zone_ok(t: Tenant) -> None:
    """A tenant with ACLs needs a VNI that fits a conntrack zone (the pipeline's rule)."""
    if t.vni > MAX_ACL_ZONE_VNI:
        raise Conflict("tenant", f"tenant {t.name!r} has VNI {t.vni}: ACLs need a VNI up "
                                 f"to {MAX_ACL_ZONE_VNI} (it is the conntrack zone)")
