"""/v1/tenants: the isolation domains (name, VNI) and their default networks (VLAN,
subnet, gateway, egress), with the names of their further networks and their routes."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path

from controller.core import Core
from controller.model import GATEWAY6_AUTO, Route, Tenant
from controller.rest.deps import CoreDep, writer
from controller.rest.ports import binding_json, ports_json
from controller.rest.schemas import TenantIn, TenantPatch
from controller.store.base import AUTO
from controller.store.codec import route_doc, tenant_doc

router = APIRouter()


def tenant_json(t: Tenant, networks: list[Tenant] | None = None,
                routes: list[Route] | None = None) -> dict[str, Any]:
    """The stored document (one renderer: store.codec) without ``domain`` (a tenant has
    none), and what the API adds: ``networks`` (its further networks' names) and
    ``routes`` when given."""
    doc = {k: v for k, v in tenant_doc(t).items() if k != "domain"}
    out = {**doc, "builtin": t.name == "default"}
    if networks is not None:
        out["networks"] = [n.name for n in networks if n.domain == t.name]
    if routes is not None:
        out["routes"] = [route_doc(r) for r in routes if r.tenant == t.name]
    return out


def _with_rows(core: Core, t: Tenant) -> dict[str, Any]:
    return tenant_json(t, core.store.networks(t.name), core.store.routes(t.name))


@router.get("/v1/tenants")
def list_tenants(core: CoreDep) -> list[dict]:
    rows = core.store.tenants()
    routes = core.store.routes()
    return [tenant_json(t, rows, routes) for t in rows if t.domain is None]


@router.post("/v1/tenants", status_code=201, dependencies=[Depends(writer)])
def create_tenant(body: TenantIn, core: CoreDep) -> dict:
    given = body.model_fields_set
    t = core.store.create_tenant(body.name, body.vni, body.vlan, body.subnet, body.description,
                                 gateway=body.gateway if "gateway" in given else AUTO,
                                 egress=body.egress, conntrack_limit=body.conntrack_limit,
                                 subnet6=body.subnet6,
                                 gateway6=body.gateway6 if "gateway6" in given else GATEWAY6_AUTO)
    core.on_change()
    return _with_rows(core, t)


@router.get("/v1/tenants/{name}")
def get_tenant(core: CoreDep, name: str = Path(max_length=64)) -> dict:
    t = core.store.tenant(name)
    return {**_with_rows(core, t), "ports": [binding_json(sb.binding, sb.source)
                                             for sb in core.store.bindings(tenant=name)]}


@router.patch("/v1/tenants/{name}", dependencies=[Depends(writer)])
def update_tenant(body: TenantPatch, core: CoreDep, name: str = Path(max_length=64)) -> dict:
    t = core.store.update_tenant(name, **body.model_dump(exclude_unset=True))
    core.on_change()
    return _with_rows(core, t)


@router.delete("/v1/tenants/{name}", dependencies=[Depends(writer)])
def delete_tenant(core: CoreDep, name: str = Path(max_length=64), force: bool = False) -> dict:
    n = core.store.delete_tenant(name, force)
    core.on_change()
    return {"deleted": name, "bindings_removed": n}


@router.get("/v1/tenants/{name}/ports")
def tenant_ports(name: str, core: CoreDep) -> list[dict]:
    core.store.tenant(name)
    return ports_json(core, tenant=name)
