"""/v1/export and /v1/import: the whole model as one JSON document (backup, restore)."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from controller.rest.deps import CoreDep, writer

router = APIRouter()


@router.get("/v1/export")
def export(core: CoreDep) -> dict:
    """Tenants, bindings, QoS limits and rules, ACLs, operator flows and the store
    epoch, from one consistent read (`weftctl export > model.json`)."""
    return core.store.export()


@router.post("/v1/import", dependencies=[Depends(writer)])
def import_model(body: dict[str, Any], core: CoreDep, replace: bool = False) -> dict:
    """Restore an export: all validated first, applied in one transaction (bad input
    changes nothing); 409 on a store holding anything unless ``replace=true``."""
    counts = core.store.import_model(body, replace)
    core.on_change()
    return {"imported": counts, "epoch": core.store.epoch()}
