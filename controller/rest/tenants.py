"""/v1/tenants: the isolated segments (name, VNI, VLAN, subnet) and their ports."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path

from controller.store.codec import tenant_doc
from controller.model import Tenant
from controller.rest.deps import CoreDep, writer
from controller.rest.ports import binding_json, ports_json
from controller.rest.schemas import TenantIn, TenantPatch

router = APIRouter()


def tenant_json(t: Tenant) -> dict[str, Any]:
    """The stored document (one renderer: store.codec) and what the API adds to it."""
    return {**tenant_doc(t), "builtin": t.name == "default"}


@router.get("/v1/tenants")
def list_tenants(core: CoreDep) -> list[dict]:
    return [tenant_json(t) for t in core.store.tenants()]


@router.post("/v1/tenants", status_code=201, dependencies=[Depends(writer)])
def create_tenant(body: TenantIn, core: CoreDep) -> dict:
    t = core.store.create_tenant(body.name, body.vni, body.vlan, body.subnet, body.description)
    core.on_change()
    return tenant_json(t)


@router.get("/v1/tenants/{name}")
def get_tenant(core: CoreDep, name: str = Path(max_length=64)) -> dict:
    t = core.store.tenant(name)
    return {**tenant_json(t), "ports": [binding_json(sb.binding, sb.source)
                                        for sb in core.store.bindings(tenant=name)]}


@router.patch("/v1/tenants/{name}", dependencies=[Depends(writer)])
def update_tenant(body: TenantPatch, core: CoreDep, name: str = Path(max_length=64)) -> dict:
    t = core.store.update_tenant(name, **body.model_dump(exclude_unset=True))
    core.on_change()
    return tenant_json(t)


@router.delete("/v1/tenants/{name}", dependencies=[Depends(writer)])
def delete_tenant(core: CoreDep, name: str = Path(max_length=64), force: bool = False) -> dict:
    n = core.store.delete_tenant(name, force)
    core.on_change()
    return {"deleted": name, "bindings_removed": n}


@router.get("/v1/tenants/{name}/ports")
def tenant_ports(name: str, core: CoreDep) -> list[dict]:
    core.store.tenant(name)
    return ports_json(core, tenant=name)
