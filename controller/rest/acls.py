"""/v1/tenants/{name}/acls: a tenant's connection rules and default, with counters
summed from the switches' live flows."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path

from controller.core import Core
from controller.flows import acl_rule_of, feature_of
from controller.model import MAX_ACL_ID
from controller.pipeline import PRIO_ACL_EST, PRIO_ACL_RULE_BASE, VNI_MASK
from controller.rest.deps import CoreDep, writer
from controller.rest.schemas import AclDefaultIn, AclIn, AclPatch
from controller.store import NotFound
from controller.store.codec import acl_doc

router = APIRouter()


def _vni_of(match: dict) -> int | None:
    md = match.get("metadata")
    value = md[0] if isinstance(md, (tuple, list)) else md
    return None if value is None else int(value) & VNI_MASK


def acl_counters(flows_by_host: dict[str, list[dict]],
                 vni: int | None = None) -> dict[Any, dict[str, int]]:
    """Packets/bytes per ACL rule id summed over switches ("default", "established" too).

    A rule's flows see the first packet of each connection it decided; the rest
    of an allowed connection (and its replies) passes the tenant's established flows."""
    out: dict[Any, dict[str, int]] = {}
    for flows in flows_by_host.values():
        for f in flows:
            cookie = int(f["cookie"], 16)
            if feature_of(cookie) != "acl" or (vni is not None and _vni_of(f["match"]) != vni):
                continue
            rule = acl_rule_of(cookie)
            key: int | str = rule if rule is not None else \
                {PRIO_ACL_EST: "established", PRIO_ACL_EST + 1: "established",
                 PRIO_ACL_RULE_BASE: "default"}.get(f["priority"], "other")
            c = out.setdefault(key, {"packets": 0, "bytes": 0})
            c["packets"] += f["packets"]
            c["bytes"] += f["bytes"]
    return out


def live_flows(core: Core) -> dict[str, list[dict]]:
    """Every connected switch's flows (for counters); a silent switch counts nothing."""
    out: dict[str, list[dict]] = {}
    for sw in list(core.switches.values()):
        if sw.connected and sw.host:
            try:
                out[sw.host] = core.openflow.dump_flows(sw.dpid)
            except (LookupError, TimeoutError):
                continue
    return out


@router.get("/v1/tenants/{name}/acls")
def tenant_acls(core: CoreDep, name: str = Path(max_length=64), counters: bool = False) -> dict:
    """The tenant's default and rules, highest priority first; with ``counters=true``
    each rule's packets/bytes (first packets of the connections it decided)."""
    default = core.store.acl_default(name)
    rules = [acl_doc(r) for r in core.store.acls(name)]
    body: dict[str, Any] = {"tenant": name, "default": default, "rules": rules}
    if counters:
        totals = acl_counters(live_flows(core), core.store.tenant(name).vni)
        for r in rules:
            r.update(totals.get(r["id"], {"packets": 0, "bytes": 0}))
        body["default_counters"] = totals.get("default", {"packets": 0, "bytes": 0})
        body["established_counters"] = totals.get("established",
                                                  {"packets": 0, "bytes": 0})
    return body


@router.put("/v1/tenants/{name}/acls/default", dependencies=[Depends(writer)])
def acl_default(body: AclDefaultIn, core: CoreDep, name: str = Path(max_length=64)) -> dict:
    d = core.store.set_acl_default(name, body.default)
    core.on_change()
    return {"tenant": name, "default": d}


@router.post("/v1/tenants/{name}/acls", status_code=201, dependencies=[Depends(writer)])
def add_acl(body: AclIn, core: CoreDep, name: str = Path(max_length=64)) -> dict:
    r = core.store.add_acl(name, **body.model_dump())
    core.on_change()
    return acl_doc(r)


@router.get("/v1/tenants/{name}/acls/{rule_id}")
def get_acl(core: CoreDep, name: str = Path(max_length=64),
            rule_id: int = Path(ge=1, le=MAX_ACL_ID)) -> dict:
    r = next((r for r in core.store.acls(name) if r.id == rule_id), None)
    if r is None:
        core.store.acl_default(name)          # 404 naming the tenant first
        raise NotFound("id", f"tenant {name!r} has no ACL rule {rule_id}")
    return {**acl_doc(r), **acl_counters(live_flows(core)).get(r.id, {"packets": 0,
                                                                        "bytes": 0})}


@router.patch("/v1/tenants/{name}/acls/{rule_id}", dependencies=[Depends(writer)])
def update_acl(body: AclPatch, core: CoreDep, name: str = Path(max_length=64),
               rule_id: int = Path(ge=1, le=MAX_ACL_ID)) -> dict:
    r = core.store.update_acl(name, rule_id, **body.model_dump(exclude_unset=True))
    core.on_change()
    return acl_doc(r)


@router.delete("/v1/tenants/{name}/acls/{rule_id}", dependencies=[Depends(writer)])
def delete_acl(core: CoreDep, name: str = Path(max_length=64),
               rule_id: int = Path(ge=1, le=MAX_ACL_ID)) -> dict:
    core.store.delete_acl(name, rule_id)
    core.on_change()
    return {"deleted": rule_id}
