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
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from controller.core import Core
from controller.operator import OperatorFlow

LOG = logging.getLogger("weft.ofctl_rest")
_FLOW_COMMANDS = ("add", "modify", "modify_strict", "delete", "delete_strict")
_OFPTT_ALL = 0xFF


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


def register(app: FastAPI, core: Core,
             checked: Callable[[Any, list[dict]], list[dict]],
             changed: Callable[[], None]) -> None:
    """Add the /stats routes.  ``checked(switch, bodies)`` validates operator flows (422
    naming the field) and returns them ready for the store."""
    from os_ken.lib import ofctl_v1_3 as ofctl

    def connected(dpid: Any) -> Any:
        sw = core.switches.get(_dpid(dpid))
        if sw is None or not sw.connected:
            raise _Status(404)
        try:
            return core.ofctl_datapath(sw.dpid)
        except LookupError:
            raise _Status(404) from None

    def answer(fn: Callable[[], Any]) -> Response:
        try:
            return _json(fn())
        except _Status as s:
            return Response(status_code=s.status) if s.body is None else \
                JSONResponse(s.body, status_code=s.status)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            LOG.info("ofctl_rest: invalid request: %s", exc)
            return Response(status_code=400)

    async def body_of(request: Request) -> Any:
        raw = await request.body()
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            raise _Status(400) from None

    waiters = core.ofctl_waiters

    @app.get("/stats/switches", tags=["ofctl_rest"])
    def switches() -> Response:
        return answer(lambda: sorted(sw.dpid for sw in core.switches.values() if sw.connected))

    simple = {
        "desc": ofctl.get_desc_stats, "portdesc": ofctl.get_port_desc,
        "table": ofctl.get_table_stats, "groupdesc": ofctl.get_group_desc,
        "groupfeatures": ofctl.get_group_features, "meterfeatures": ofctl.get_meter_features,
    }
    for name, fn in simple.items():
        def make(fn: Callable = fn) -> Callable[[str], Response]:
            def read(dpid: str) -> Response:
                return answer(lambda: fn(connected(dpid), waiters))
            return read
        app.add_api_route(f"/stats/{name}/{{dpid}}", make(), methods=["GET"],
                          tags=["ofctl_rest"], name=f"ofctl_{name}")

    with_id = {"port": ofctl.get_port_stats, "group": ofctl.get_group_stats,
               "meter": ofctl.get_meter_stats, "meterconfig": ofctl.get_meter_config}
    for name, fn in with_id.items():
        def make_id(fn: Callable = fn) -> tuple[Callable, Callable]:
            def all_(dpid: str) -> Response:
                return answer(lambda: fn(connected(dpid), waiters))

            def one(dpid: str, item: str) -> Response:
                return answer(lambda: fn(connected(dpid), waiters, item))
            return all_, one
        read_all, read_one = make_id()
        app.add_api_route(f"/stats/{name}/{{dpid}}", read_all, methods=["GET"],
                          tags=["ofctl_rest"], name=f"ofctl_{name}")
        app.add_api_route(f"/stats/{name}/{{dpid}}/{{item}}", read_one, methods=["GET"],
                          tags=["ofctl_rest"], name=f"ofctl_{name}_one")

    for name, fn in (("flow", ofctl.get_flow_stats),
                     ("aggregateflow", ofctl.get_aggregate_flow_stats)):
        def make_flow(fn: Callable = fn) -> tuple[Callable, Callable]:
            def get(dpid: str) -> Response:
                return answer(lambda: fn(connected(dpid), waiters, {}))

            async def post(dpid: str, request: Request) -> Response:
                try:
                    flt = await body_of(request)
                except _Status as s:
                    return Response(status_code=s.status)
                return answer(lambda: fn(connected(dpid), waiters,
                                         flt if isinstance(flt, dict) else None))
            return get, post
        flow_get, flow_post = make_flow()
        app.add_api_route(f"/stats/{name}/{{dpid}}", flow_get, methods=["GET"],
                          tags=["ofctl_rest"], name=f"ofctl_{name}_get")
        app.add_api_route(f"/stats/{name}/{{dpid}}", flow_post, methods=["POST"],
                          tags=["ofctl_rest"], name=f"ofctl_{name}_post")

    # -- flow entries: weft's operator flows -------------------------------------------------
    def same_match(a: dict, b: dict) -> bool:
        from controller.ofmsg import OFP13
        return dict(ofctl.to_match(OFP13, dict(a)).items()) == \
            dict(ofctl.to_match(OFP13, dict(b)).items())

    def covers(stored: dict, wanted: dict) -> bool:
        """Non-strict: the stored match holds every field of the wanted one."""
        from controller.ofmsg import OFP13
        have = dict(ofctl.to_match(OFP13, dict(stored)).items())
        return all(have.get(k) == v for k, v in ofctl.to_match(OFP13, dict(wanted)).items())

    def selected(flows: list[OperatorFlow], req: dict, strict: bool) -> list[OperatorFlow]:
        table = int(req.get("table_id", 0 if strict else _OFPTT_ALL))
        prio = int(req.get("priority", 0))
        match = req.get("match") or {}
        return [f for f in flows
                if (table == _OFPTT_ALL or f.table_id == table)
                and (not strict or (f.priority == prio and same_match(dict(f.match), match)))
                and (strict or covers(dict(f.match), match))]

    @app.post("/stats/flowentry/{cmd}", tags=["ofctl_rest"])
    async def flowentry(cmd: str, request: Request) -> Response:
        """Ryu's add/modify/modify_strict/delete/delete_strict, as operator flows."""
        try:
            req = await body_of(request)
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
                core.store.add_operator_flows(checked(sw, [spec]))
            elif cmd.startswith("modify"):
                old = selected(stored, req, cmd == "modify_strict")
                fresh = checked(sw, [{**spec, "table_id": f.table_id, "priority": f.priority,
                                      "match": dict(f.match)} for f in old])
                if old:
                    core.store.delete_operator_flows(sw.dpid, [f.id for f in old])
                    core.store.add_operator_flows(fresh)
            else:
                gone = selected(stored, req, cmd == "delete_strict")
                if gone:
                    core.store.delete_operator_flows(sw.dpid, [f.id for f in gone])
            changed()
            return Response(status_code=200)
        except _Status as s:
            return Response(status_code=s.status)
        except (ValueError, KeyError, TypeError, AttributeError):
            return Response(status_code=400)

    @app.delete("/stats/flowentry/clear/{dpid}", tags=["ofctl_rest"])
    def clear(dpid: str) -> Response:
        """Ryu's clear: here the switch's operator flows only (weft's pipeline stays)."""
        try:
            sw = core.switches.get(_dpid(dpid))
        except _Status as s:
            return Response(status_code=s.status)
        if sw is None:
            return Response(status_code=404)
        core.store.delete_operator_flows(sw.dpid)
        changed()
        return Response(status_code=200)
