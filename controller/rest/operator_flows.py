"""/v1/switches/{key}/flows: operator flows, stored per switch, re-installed after
restarts, never touched by a sync; validated here (Ryu's flowentry paths too)."""
from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Path
from pydantic import Field

from controller.core import Core, Switch
from controller.model import ModelError
from controller.ofmsg import OFP13, ofctl_match_ok
from controller.opflows import OperatorFlow, check, operator_id_of
from controller.rest.deps import CoreDep, KnownSwitch, find_switch, writer
from controller.rest.schemas import MAX_BULK, OperatorFlowIn
from controller.store import Invalid, NotFound
from cluster.hostsfile import dpid_str

LOG = logging.getLogger("weft.api")
router = APIRouter()


def _guarded_ports(core: Core, sw: Switch) -> dict[int, str]:
    """Ports of this switch an operator flow must not output to without override."""
    out: dict[int, str] = {}
    if not sw.host:
        return out
    topo = core.topology()
    for b in topo.bindings_on(sw.host):
        if b.port in sw.ports:
            out[sw.ports[b.port]] = f"port {b.port} of tenant(s) {', '.join(b.tenants)}"
    for peer, name in core.tunnels(sw.host).items():
        if name in sw.ports:
            out[sw.ports[name]] = f"the tunnel to {peer}"
    return out


def checked_operator_flows(core: Core, sw: Switch, items: list[dict],
                           prefix: str = "") -> list[dict]:
    """Validate operator flows of one switch (422 naming the field), log overrides."""
    guarded = _guarded_ports(core, sw)
    out = []
    for i, f in enumerate(items):
        where = f"{prefix}{i}." if prefix else ""
        try:
            escapes = check(f.get("table_id"), f.get("priority"), f.get("match", {}),
                            f.get("actions", []), bool(f.get("override")), guarded,
                            f.get("idle_timeout", 0), f.get("hard_timeout", 0),
                            f.get("description", ""))
        except ModelError as exc:
            raise Invalid(where + exc.field, exc.message) from None
        if not ofctl_match_ok(OFP13, f.get("match", {})):
            raise Invalid(where + "match", "a match field is unknown to ofctl or its "
                                           "value is invalid")
        for why in escapes:
            LOG.warning("operator flow on %s accepted with override: %s", sw.host, why)
        out.append({**f, "dpid": sw.dpid})
    return out


def operator_json(of: OperatorFlow, counters: dict[int, dict] | None = None) -> dict:
    body = {"id": of.id, "dpid": dpid_str(of.dpid), "cookie": hex(of.cookie),
            "table_id": of.table_id, "priority": of.priority, "match": dict(of.match),
            "actions": [dict(a) for a in of.actions], "override": of.override,
            "description": of.description}
    if counters is not None:
        body.update(counters.get(of.id, {"packets": None, "bytes": None,
                                         "installed": False}))
    return body


@router.post("/v1/switches/{key}/flows", status_code=201, dependencies=[Depends(writer)])
def add_operator_flow(body: OperatorFlowIn, key: str, core: CoreDep) -> dict:
    """An operator flow: stored, re-installed after restarts, never touched by a sync."""
    sw = find_switch(core, key)
    of = core.store.add_operator_flows(checked_operator_flows(core, sw, [body.model_dump()]))[0]
    core.on_change()
    return operator_json(of)


@router.post("/v1/switches/{key}/flows/bulk", status_code=201, dependencies=[Depends(writer)])
def add_operator_flows(body: Annotated[list[OperatorFlowIn], Field(max_length=MAX_BULK)],
                       key: str, core: CoreDep) -> dict:
    """Many operator flows of one switch, all or nothing."""
    sw = find_switch(core, key)
    flows = core.store.add_operator_flows(checked_operator_flows(
        core, sw, [b.model_dump() for b in body], prefix="flows."))
    core.on_change()
    return {"added": [of.id for of in flows]}


@router.get("/v1/switches/{key}/operator-flows")
def operator_flows(sw: KnownSwitch, core: CoreDep) -> list[dict]:
    """The switch's stored operator flows, with their live counters when connected."""
    counters: dict[int, dict] = {}
    if sw.connected:
        try:
            for f in core.openflow.dump_flows(sw.dpid):
                op = operator_id_of(int(f["cookie"], 16))
                if op is not None:
                    counters[op] = {"packets": f["packets"], "bytes": f["bytes"],
                                    "installed": True}
        except (LookupError, TimeoutError):
            pass
    return [operator_json(of, counters) for of in core.store.operator_flows(sw.dpid)]


@router.delete("/v1/switches/{key}/flows/{flow_id}", dependencies=[Depends(writer)])
def delete_operator_flow(key: str, core: CoreDep,
                         flow_id: int = Path(ge=1, le=0xFFFFFFFF)) -> dict:
    sw = find_switch(core, key)
    if not core.store.delete_operator_flows(sw.dpid, [flow_id]):
        raise NotFound("id", f"switch {key!r} has no operator flow {flow_id}")
    core.on_change()
    return {"deleted": flow_id}
