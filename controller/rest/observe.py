"""/v1/health (open without a token) and /metrics (Prometheus text): what a monitor reads."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from controller.core import Core
from controller.pipeline import LEARN_LIMIT_MACS
from controller.rest.acls import acl_counters, live_flows
from controller.rest.deps import CoreDep
from controller.store import StoreError
from cluster.hostsfile import dpid_str
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


def _acl_metrics(core: Core) -> list[str]:
    rules = {r.id: r for r in core.store.acls()}
    if not rules:
        return []
    lines = ["# TYPE weft_acl_rule_packets_total counter",
             "# TYPE weft_acl_rule_bytes_total counter"]
    totals = acl_counters(live_flows(core))
    for rid, r in sorted(rules.items()):
        c = totals.get(rid, {"packets": 0, "bytes": 0})
        lbl = f'{{tenant="{r.tenant}",rule="{rid}",action="{r.action}"}}'
        lines += [f"weft_acl_rule_packets_total{lbl} {c['packets']}",
                  f"weft_acl_rule_bytes_total{lbl} {c['bytes']}"]
    return lines


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(core: CoreDep) -> str:
    lines = ["# TYPE weft_switch_connected gauge", "# TYPE weft_flow_mods_sent_total counter",
             "# TYPE weft_syncs_total counter", "# TYPE weft_learned_flows gauge",
             "# TYPE weft_learn_limit_macs gauge"]
    for sw in core.switches.values():
        lbl = f'{{host="{sw.host}",dpid="{dpid_str(sw.dpid)}"}}'
        lines += [f"weft_switch_connected{lbl} {int(sw.connected)}",
                  f"weft_flow_mods_sent_total{lbl} {sw.flow_mods}",
                  f"weft_syncs_total{lbl} {sw.syncs}",
                  f"weft_learned_flows{lbl} {sw.learned_flows}"]
    rows = core.store.tenants()             # tenants and their networks
    lines += [f"weft_learn_limit_macs {LEARN_LIMIT_MACS}",
              f"weft_tenants {sum(1 for t in rows if t.domain is None)}",
              f"weft_networks {len(rows)}",
              f"weft_port_bindings {len(core.store.bindings())}",
              "# TYPE weft_handler_errors_total counter"]
    lines += [f'weft_handler_errors_total{{handler="{name}"}} {n}'
              for name, n in sorted(core.handler_errors.items())]
    lines += _acl_metrics(core)
    loop = core.openflow.loop_health()
    if loop:
        lines += ["# TYPE weft_event_queue_depth gauge",
                  f"weft_event_queue_depth {loop['queue_depth']}",
                  "# TYPE weft_event_loop_alive gauge",
                  f"weft_event_loop_alive {int(loop['alive'])}"]
    return "\n".join(lines) + "\n"
