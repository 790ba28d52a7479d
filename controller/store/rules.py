"""The rules that span records, checked inside a write's transaction: names and ids
that must be unique, and references that must resolve (a binding's tenants, a limit's
port).  A single value's range and form are the model's business (controller.model);
SQLite's keys and triggers are the last wall behind both.
"""
from __future__ import annotations

from controller.model import (ACCESS, DEFAULT_TENANT, MAX_ACL_ZONE_VNI, MAX_METER_ID, VNI_MIN,
                              AclRule, Binding, Tenant, check_bindable_port, check_name)
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


def get_tenant(tx: ModelTx, name: str, field: str = "name") -> Tenant:
    t = tx.tenant(name)
    if t is None:
        raise NotFound(field, f"no tenant {str(name)[:40]!r}")
    return t


def tenant_exists(tx: ModelTx, tenant: str) -> None:
    if tenant != DEFAULT_TENANT.name and tx.tenant(tenant) is None:
        raise NotFound("tenant", f"no tenant {tenant!r}")


def check_tenants(tx: ModelTx, b: Binding) -> None:
    """Every tenant the binding names exists (and has a vlan when it rides a trunk).
    SQLite's schema refuses orphans too; this names the field."""
    known = {t.name: t for t in tx.tenants()}
    if b.tenant is not None and b.tenant not in known:
        raise NotFound("tenant", f"no tenant {b.tenant!r}")
    for name in b.trunk:
        if name not in known:
            raise NotFound("trunk", f"no tenant {name!r}")
        if known[name].vlan is None:
            raise Invalid("trunk", f"tenant {name!r} has no VLAN id: set one to carry it "
                                   "on a trunk")


def check_mac(tx: ModelTx, b: Binding) -> None:
    if b.mac and tx.mac_taken(b.tenant, b.mac, b.host, b.port):
        raise Conflict("mac", f"mac {b.mac} is already bound in tenant {b.tenant!r}")


def check_unique(tx: ModelTx, column: str, value: object, name: str) -> None:
    """No other tenant has this vni or vlan (the default tenant holds VNI 1)."""
    if value is None:
        return
    other = next((t.name for t in tx.tenants() if getattr(t, column) == value
                  and t.name != name), None)
    if other or (column == "vni" and value == DEFAULT_TENANT.vni):
        raise Conflict(column, f"{column} {value} is used by tenant {other or 'default'!r}")


def free_vni(tx: ModelTx) -> int:
    """The lowest user VNI no tenant has."""
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
