"""/v1/qos: rate limits (meters per port or per tenant on a host), QoS rules (match,
meter, DSCP remark, queue) and the switches' meter stats."""
from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path

from controller.core import Core
from controller.model import MAX_METER_ID, QosRule, RateLimit
from controller.rest.deps import CoreDep, writer
from controller.rest.schemas import LimitIn, LimitPatch, RuleIn, RulePatch
from controller.store import Conflict, Invalid, NotFound
from controller.store.codec import limit_doc, rule_doc
from cluster.hostsfile import Host, datapath_id

router = APIRouter()


def sensible_burst(kbps: int | None, burst_kb: int | None, field: str = "burst_kb") -> int:
    """Default and bound the burst: between one MTU and ten seconds of the rate."""
    if kbps is None:
        if burst_kb:
            raise Invalid(field, "a burst needs a rate (kbps)")
        return 0
    if burst_kb is None:
        return max(kbps // 4, 12)
    if burst_kb and not 12 <= burst_kb <= 10 * kbps:
        raise Invalid(field, f"burst {burst_kb} kbit is not between one packet (12 kbit) and "
                             f"ten seconds of the rate ({10 * kbps} kbit)")
    return burst_kb


def sensible_burst_pkts(pps: int, burst_pkts: int | None) -> int:
    """Default and bound a packet burst: between one packet and ten seconds of the rate."""
    if burst_pkts is None:
        return max(pps // 4, 1)
    if burst_pkts and burst_pkts > 10 * pps:
        raise Invalid("burst_pkts", f"burst {burst_pkts} packets is more than ten seconds of "
                                    f"the rate ({10 * pps} packets)")
    return burst_pkts


def _one_rate(kbps: int | None, pps: int | None, burst_kb: int | None,
              burst_pkts: int | None) -> None:
    """A limit has one unit; a burst in the other unit is a mistake worth a 422."""
    if kbps is not None and pps is not None:
        raise Invalid("pps", "give one rate: kbps (kbit/s) or pps (packets/s), not both")
    if pps is not None and burst_kb:
        raise Invalid("burst_kb", "burst_kb goes with kbps; a pps limit takes burst_pkts")
    if kbps is not None and burst_pkts:
        raise Invalid("burst_pkts", "burst_pkts goes with pps; a kbps limit takes burst_kb")


def limit_json(x: RateLimit) -> dict[str, Any]:
    """The stored document (one renderer: store.codec) and what the API adds to it."""
    return {**limit_doc(x), "meter_id": x.id, "unit": "pps" if x.pps is not None else "kbps"}


def rule_json(r: QosRule) -> dict[str, Any]:
    """The stored document (one renderer: store.codec) and what the API adds to it."""
    return {**rule_doc(r), "meter_id": r.id if r.kbps else None}


def queue_support(host: Host) -> dict:
    if host.datapath_type == "netdev":
        return {"supported": False,
                "reason": "the userspace (netdev) datapath does not honour OpenFlow "
                          "set_queue with linux-htb queues; use meters (rate limits)"}
    return {"supported": True, "reason": "kernel datapath: linux-htb queues from hosts.yaml"}


def _refuse_queues(core: Core) -> None:
    cannot = [h.name for h in core.cluster.hosts if not queue_support(h)["supported"]]
    if cannot:
        raise Conflict("queue", f"hosts {', '.join(cannot)} cannot honour queues: "
                                + queue_support(core.cluster.host(cannot[0]))["reason"])


@router.get("/v1/qos/limits")
def limits(core: CoreDep) -> list[dict]:
    return [limit_json(x) for x in core.store.limits()]


@router.post("/v1/qos/limits", status_code=201, dependencies=[Depends(writer)])
def add_limit(body: LimitIn, core: CoreDep) -> dict:
    if body.host not in {h.name for h in core.cluster.hosts}:
        raise NotFound("host", f"no host {body.host!r} in hosts.yaml")
    _one_rate(body.kbps, body.pps, body.burst_kb, body.burst_pkts)
    if body.pps is not None:
        x = core.store.add_limit(body.host, None, 0, body.port, body.tenant, body.pps,
                                 sensible_burst_pkts(body.pps, body.burst_pkts))
    elif body.kbps is not None:
        x = core.store.add_limit(body.host, body.kbps, sensible_burst(body.kbps, body.burst_kb),
                                 body.port, body.tenant)
    else:
        raise Invalid("kbps", "give a rate: kbps (kbit/s) or pps (packets/s)")
    core.on_change()
    return limit_json(x)


@router.patch("/v1/qos/limits/{limit_id}", dependencies=[Depends(writer)])
def update_limit(body: LimitPatch, core: CoreDep,
                 limit_id: int = Path(ge=1, le=MAX_METER_ID)) -> dict:
    cur = next((x for x in core.store.limits() if x.id == limit_id), None)
    if cur is None:
        raise NotFound("id", f"no rate limit {limit_id}")
    if body.model_dump(exclude_none=True) == {}:
        return limit_json(cur)
    _one_rate(body.kbps, body.pps, body.burst_kb, body.burst_pkts)
    to_pps = body.pps is not None or (body.kbps is None and cur.pps is not None)
    if to_pps:
        _one_rate(None, 1, body.burst_kb, None)
        pps = body.pps or cur.pps or 0
        pburst = body.burst_pkts if body.burst_pkts is not None else \
            (None if body.pps else cur.burst_pkts)
        x = core.store.update_limit(limit_id, pps=pps,
                                    burst_pkts=sensible_burst_pkts(pps, pburst))
    else:
        _one_rate(1, None, None, body.burst_pkts)
        kbps = body.kbps or cur.kbps
        burst = body.burst_kb if body.burst_kb is not None else \
            (None if body.kbps else cur.burst_kb)
        x = core.store.update_limit(limit_id, kbps, sensible_burst(kbps, burst))
    core.on_change()
    return limit_json(x)


@router.delete("/v1/qos/limits/{limit_id}", dependencies=[Depends(writer)])
def delete_limit(core: CoreDep, limit_id: int = Path(ge=1, le=MAX_METER_ID)) -> dict:
    core.store.delete_qos("limit", limit_id)
    core.on_change()
    return {"deleted": limit_id}


@router.get("/v1/qos/rules")
def rules(core: CoreDep) -> list[dict]:
    return [rule_json(r) for r in core.store.rules()]


@router.post("/v1/qos/rules", status_code=201, dependencies=[Depends(writer)])
def add_rule(body: RuleIn, core: CoreDep) -> dict:
    if body.queue is not None:
        _refuse_queues(core)
    r = core.store.add_rule(body.tenant, body.priority, body.match.model_dump(
        exclude_none=True), body.kbps, sensible_burst(body.kbps, body.burst_kb),
        body.set_dscp, body.queue)
    core.on_change()
    return rule_json(r)


@router.patch("/v1/qos/rules/{rule_id}", dependencies=[Depends(writer)])
def update_rule(body: RulePatch, core: CoreDep,
                rule_id: int = Path(ge=1, le=MAX_METER_ID)) -> dict:
    changes = body.model_dump(exclude_unset=True)
    if "kbps" in changes or "burst_kb" in changes:
        cur = next((r for r in core.store.rules() if r.id == rule_id), None)
        if cur is None:
            raise NotFound("id", f"no QoS rule {rule_id}")
        kbps = changes.get("kbps", cur.kbps)
        burst = changes.get("burst_kb", None if "kbps" in changes else cur.burst_kb)
        changes["burst_kb"] = sensible_burst(kbps, burst)
    r = core.store.update_rule(rule_id, **changes)
    core.on_change()
    return rule_json(r)


@router.delete("/v1/qos/rules/{rule_id}", dependencies=[Depends(writer)])
def delete_rule(core: CoreDep, rule_id: int = Path(ge=1, le=MAX_METER_ID)) -> dict:
    core.store.delete_qos("rule", rule_id)
    core.on_change()
    return {"deleted": rule_id}


@router.get("/v1/qos/stats")
def qos_stats(core: CoreDep) -> list[dict]:
    """Per host: every meter's packets/bytes passed and dropped; queue support."""
    out = []
    for h in core.cluster.hosts:
        sw = core.switches.get(datapath_id(h))
        entry = {"host": h.name, "connected": bool(sw and sw.connected),
                 "queues": queue_support(h), "meters": []}
        if sw and sw.connected:
            try:
                entry["meters"] = core.openflow.dump_meters(sw.dpid)
            except (LookupError, TimeoutError) as exc:
                raise Conflict("host", f"switch of {h.name} did not answer: {exc}") from None
        out.append(entry)
    return out
