"""Ryu's ofctl_rest (OpenFlow 1.3) on weft: the ``/stats/...`` paths, methods, JSON shapes
and status codes of Ryu 4.34, so scripts written against ``ryu.app.ofctl_rest`` keep working.

Reads go through os-ken's own ``os_ken.lib.ofctl_v1_3`` helpers (the code Ryu's
ofctl_rest called), with a datapath stand-in that sends from the OpenFlow
thread.  Writes (``/stats/flowentry/...``) go through weft's operator flows:
stored, re-installed after restarts, never touched by a sync, validated.

Differences from Ryu (docs/ofctl_rest.md): a flow entry gets weft's operator
cookie (``0x574609...`` + its id), not the one given; an entry that could
cross tenants or lands in weft's tables (0..99) is refused with 422 unless the
body says ``"override": true``; ``clear`` removes the operator flows only
(weft's pipeline stays); ``modify`` replaces a stored entry, so its counters
restart; timeouts are refused (stored flows are permanent); group, meter and
port modifications are not offered.  Token rules are those of /v1.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from os_ken.lib import ofctl_v1_3 as ofctl

from controller.core import Core
from controller.ofmsg import OFP13
from controller.opflows import OperatorFlow
from controller.rest.deps import CoreDep
from controller.rest.operator_flows import checked_operator_flows

LOG = logging.getLogger("weft.ofctl_rest")
_FLOW_COMMANDS = ("add", "modify", "modify_strict", "delete", "delete_strict")
_OFPTT_ALL = 0xFF
router = APIRouter(tags=["ofctl_rest"])


class _Status(Exception):
    def __init__(self, status: int, body: Any = None) -> None:
        super().__init__(status)
        self.status, self.body = status, body


def _dpid(value: Any) -> int:
    try:
        return int(str(value), 0)
    except ValueError:
        raise _Status(400) from None


def _json(ret: Any) -> Response:
    return Response(content=json.dumps(ret), media_type="application/json")


def _ask(core: Core, dpid: Any, fn: Callable, *args: Any) -> Any:
    """Run one of os-ken's ofctl_v1_3 readers against a connected switch (404: none)."""
    sw = core.switches.get(_dpid(dpid))
    if sw is None or not sw.connected:
        raise _Status(404)
    try:
        dp = core.openflow.ofctl_datapath(sw.dpid)
    except LookupError:
        raise _Status(404) from None
    return fn(dp, dp.waiters, *args)


def _answer(fn: Callable[[], Any]) -> Response:
    try:
        return _json(fn())
    except _Status as s:
        return Response(status_code=s.status) if s.body is None else \
            JSONResponse(s.body, status_code=s.status)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        LOG.info("ofctl_rest: invalid request: %s", exc)
        return Response(status_code=400)


async def _body_of(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        raise _Status(400) from None


@router.get("/stats/switches")
def switches(core: CoreDep) -> Response:
    return _answer(lambda: sorted(sw.dpid for sw in core.switches.values() if sw.connected))


def _reader(fn: Callable) -> Callable[..., Response]:
    def read(dpid: str, core: CoreDep) -> Response:
        return _answer(lambda: _ask(core, dpid, fn))
    return read


def _item_reader(fn: Callable) -> Callable[..., Response]:
    def one(dpid: str, item: str, core: CoreDep) -> Response:
        return _answer(lambda: _ask(core, dpid, fn, item))
    return one


def _flow_readers(fn: Callable) -> tuple[Callable[..., Response],
                                         Callable[..., Awaitable[Response]]]:
    """GET: every flow; POST: the body is Ryu's filter (table_id, match, cookie ...)."""
    def get(dpid: str, core: CoreDep) -> Response:
        return _answer(lambda: _ask(core, dpid, fn, {}))

    async def post(dpid: str, request: Request, core: CoreDep) -> Response:
        try:
            flt = await _body_of(request)
        except _Status as s:
            return Response(status_code=s.status)
        return _answer(lambda: _ask(core, dpid, fn, flt if isinstance(flt, dict) else None))
    return get, post


for _name, _fn in {"desc": ofctl.get_desc_stats, "portdesc": ofctl.get_port_desc,
                   "table": ofctl.get_table_stats, "groupdesc": ofctl.get_group_desc,
                   "groupfeatures": ofctl.get_group_features,
                   "meterfeatures": ofctl.get_meter_features}.items():
    router.add_api_route(f"/stats/{_name}/{{dpid}}", _reader(_fn), methods=["GET"],
                         name=f"ofctl_{_name}")

for _name, _fn in {"port": ofctl.get_port_stats, "group": ofctl.get_group_stats,
                   "meter": ofctl.get_meter_stats, "meterconfig": ofctl.get_meter_config}.items():
    router.add_api_route(f"/stats/{_name}/{{dpid}}", _reader(_fn), methods=["GET"],
                         name=f"ofctl_{_name}")
    router.add_api_route(f"/stats/{_name}/{{dpid}}/{{item}}", _item_reader(_fn),
                         methods=["GET"], name=f"ofctl_{_name}_one")

for _name, _fn in (("flow", ofctl.get_flow_stats),
                   ("aggregateflow", ofctl.get_aggregate_flow_stats)):
    _get, _post = _flow_readers(_fn)
    router.add_api_route(f"/stats/{_name}/{{dpid}}", _get, methods=["GET"],
                         name=f"ofctl_{_name}_get")
    router.add_api_route(f"/stats/{_name}/{{dpid}}", _post, methods=["POST"],
                         name=f"ofctl_{_name}_post")


# -- flow entries: weft's operator flows -------------------------------------------------
def _same_match(a: dict, b: dict) -> bool:
    return dict(ofctl.to_match(OFP13, dict(a)).items()) == \
        dict(ofctl.to_match(OFP13, dict(b)).items())


def _covers(stored: dict, wanted: dict) -> bool:
    """Non-strict: the stored match holds every field of the wanted one."""
    have = dict(ofctl.to_match(OFP13, dict(stored)).items())
    return all(have.get(k) == v for k, v in ofctl.to_match(OFP13, dict(wanted)).items())


def _selected(flows: list[OperatorFlow], req: dict, strict: bool) -> list[OperatorFlow]:
    table = int(req.get("table_id", 0 if strict else _OFPTT_ALL))
    prio = int(req.get("priority", 0))
    match = req.get("match") or {}
    return [f for f in flows
            if (table == _OFPTT_ALL or f.table_id == table)
            and (not strict or (f.priority == prio and _same_match(dict(f.match), match)))
            and (strict or _covers(dict(f.match), match))]


def _apply(core: Core, cmd: str, req: Any) -> None:
    """One flowentry command on the stored operator flows (a _Status on refusal)."""
    if cmd not in _FLOW_COMMANDS:
        raise _Status(404)
    if not isinstance(req, dict) or "dpid" not in req:
        raise _Status(400)
    sw = core.switches.get(_dpid(req["dpid"]))
    if sw is None:
        raise _Status(404)
    spec = {"table_id": int(req.get("table_id", 0)),
            "priority": int(req.get("priority", 32768)),
            "match": req.get("match") or {}, "actions": req.get("actions") or [],
            "idle_timeout": int(req.get("idle_timeout", 0)),
            "hard_timeout": int(req.get("hard_timeout", 0)),
            "override": bool(req.get("override", False)), "description": "ofctl_rest"}
    stored = core.store.operator_flows(sw.dpid)
    if cmd == "add":
        core.store.add_operator_flows(checked_operator_flows(core, sw, [spec]))
    elif cmd.startswith("modify"):
        old = _selected(stored, req, cmd == "modify_strict")
        fresh = checked_operator_flows(core, sw, [
            {**spec, "table_id": f.table_id, "priority": f.priority, "match": dict(f.match)}
            for f in old])
        if old:
            core.store.delete_operator_flows(sw.dpid, [f.id for f in old])
            core.store.add_operator_flows(fresh)
    else:
        gone = _selected(stored, req, cmd == "delete_strict")
        if gone:
            core.store.delete_operator_flows(sw.dpid, [f.id for f in gone])
    core.on_change()


@router.post("/stats/flowentry/{cmd}")
async def flowentry(cmd: str, request: Request, core: CoreDep) -> Response:
    """Ryu's add/modify/modify_strict/delete/delete_strict, as operator flows."""
    try:
        _apply(core, cmd, await _body_of(request))
        return Response(status_code=200)
    except _Status as s:
        return Response(status_code=s.status)
    except (ValueError, KeyError, TypeError, AttributeError):
        return Response(status_code=400)


@router.delete("/stats/flowentry/clear/{dpid}")
def clear(dpid: str, core: CoreDep) -> Response:
    """Ryu's clear: here the switch's operator flows only (weft's pipeline stays)."""
    try:
        sw = core.switches.get(_dpid(dpid))
    except _Status as s:
        return Response(status_code=s.status)
    if sw is None:
        return Response(status_code=404)
    core.store.delete_operator_flows(sw.dpid)
    core.on_change()
    return Response(status_code=200)
