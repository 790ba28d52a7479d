"""/v1/health (open without a token) and /metrics (Prometheus text): what a monitor reads."""
from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from controller.model import Topology
from controller.metrics import MetricsInput, render_metrics
from controller.pipeline import LEARN_LIMIT_MACS
from controller.rest.deps import CoreDep
from controller.store import StoreError
from cluster.hostsfile import dpid_str
from cluster.promtext import CONTENT_TYPE
from cluster.version import version

router = APIRouter()


@router.get("/v1/health", responses={503: {"description": "the OpenFlow event loop is "
                                                         "stuck or the store is unusable"}})
def health(core: CoreDep) -> JSONResponse:
    """Open without a token: counts only.  503 when the controller cannot do its job."""
    switches = core.switches                # one immutable snapshot
    connected = sum(1 for sw in switches.values() if sw.connected)
    loop = core.openflow.loop_health()
    problems = [loop["reason"]] if loop and not loop["alive"] else []
    identity: dict[str, str | None] = {"instance": core.instance, "epoch": None}
    try:
        bindings = core.store.count_bindings()
        identity.update(core.identity())
    except StoreError as exc:
        bindings, problems = -1, problems + [exc.message]
    body = {"status": "unhealthy" if problems else "ok", "problems": problems, **identity,
            "version": version(),
            "hosts": len(core.cluster.hosts),
            "switches_connected": connected, "state_version": core.store.version,
            "bindings": bindings,
            "switches_in_sync": sum(1 for sw in switches.values()
                                    if sw.connected and not sw.syncing
                                    and sw.synced_version == core.store.version),
            # the wipe guard: switches left untouched, programmed under another store
            "switches_refused": sorted(sw.host or dpid_str(sw.dpid)
                                       for sw in switches.values() if sw.sync_refused),
            "event_loop": loop,
            "election": core.election_status() if core.election_status else None}
    return JSONResponse(body, status_code=503 if problems else 200)


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(core: CoreDep) -> PlainTextResponse:
    """Prometheus text: rendered from what the controller holds (the stats poller's last
    counters, the switches' views, the model), never a round trip to a switch."""
    try:
        topology, valid = core.topology(), True
    except Exception:  # noqa: BLE001  (a broken model is what a monitor must still see)
        topology, valid = Topology(), False
    inp = MetricsInput(
        switches=core.switches, stats=core.stats, topology=topology, model_valid=valid,
        state_version=core.store.version, version=version(), now=time.time(),
        learn_limit_macs=LEARN_LIMIT_MACS, handler_errors=core.handler_errors,
        loop=core.openflow.loop_health(), stats_interval=core.stats_interval)
    return PlainTextResponse(render_metrics(inp), media_type=CONTENT_TYPE)
