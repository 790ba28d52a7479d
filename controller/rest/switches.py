"""/v1/switches: each switch as the OpenFlow thread last published it, and its live flows."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from controller.core import Core, Switch
from controller.rest.deps import CoreDep, KnownSwitch
from controller.store import Conflict

router = APIRouter()


def _switch_json(core: Core, sw: Switch) -> dict[str, Any]:
    return {**sw.summary(core.cluster),
            "in_sync": sw.connected and not sw.syncing
            and sw.synced_version == core.store.version}


@router.get("/v1/switches")
def switches(core: CoreDep) -> list[dict]:
    return [_switch_json(core, sw) for sw in core.switches.values()]   # an immutable snapshot


@router.get("/v1/switches/{key}")
def switch(sw: KnownSwitch, core: CoreDep) -> dict:
    return _switch_json(core, sw)


@router.get("/v1/switches/{key}/flows")
def flows(key: str, sw: KnownSwitch, core: CoreDep) -> list[dict]:
    if not sw.connected:
        raise Conflict("dpid", f"switch {key!r} is not connected")
    try:
        return core.openflow.dump_flows(sw.dpid)
    except (LookupError, TimeoutError) as exc:
        raise Conflict("dpid", f"switch {key!r} did not answer: {exc}") from None
