"""QoS: meters for rate limits and per-flow rules (``Topology.limits``, ``Topology.rules``).

Every meter has flags kbps+stats (pktps+stats for a limit in packets/s), one
drop band, id = the limit's or rule's id.  Only what a host's local ports send
is limited; frames from tunnels or an uplink were limited on the host where
they entered (a local sender is metadata ``vni`` under ``SENDER_MASK``:
FROM_TUNNEL and FROM_UPLINK both 0)::

    port limit     CLASSIFY flows of the port (an access port's, every one of a
                   trunk's) start with meter:<id>; their cookie is unchanged
    tenant limit   POLICY  priority 10  metadata=<vni>/SENDER_MASK
                                        -> meter:<id>, goto QOS        COOKIE_QOS
    rule           QOS     priority 1000+rule.priority
                                        metadata=<vni>/SENDER_MASK, ip, <rule match>
                                        -> [meter:<id>] [set_field:<dscp>->ip_dscp,
                                           set_queue:<q>] goto L2     COOKIE_QOS

A frame can pass up to three meters (port, tenant, rule), in that order.  A
tenant's limit and rules exist on a host only while the tenant has a local
port bound there (``Topology.local_tenants``: bound, plugged in or not,
uplinks excluded; in any of its networks: the flows are written per network,
with the tenant's one meter); a port limit only while the port is bound there and
present on the switch.  Anything else gives no meter and no flow.  The
port-limit meter instructions are written by the features that classify
(``SwitchContext.port_meter``); this module writes the meters themselves.
"""
from __future__ import annotations

from controller.flows import COOKIE_QOS, Flow, Meter, flow
from controller.model import QosRule, RateLimit
from controller.pipeline.base import Feature, Part, SwitchContext, metered
from controller.pipeline.tables import (
    L2, POLICY, PRIO_QOS_RULE_BASE, PRIO_TENANT_LIMIT, QOS, local_sender_match,
)

__all__ = ["FEATURE", "limit_meter", "rule_flow"]


def limit_meter(x: RateLimit) -> Meter:
    """The meter of a rate limit, in its one unit (kbit/s or packets/s)."""
    if x.pps is not None:
        return Meter(x.id, x.pps, x.burst_pkts, pktps=True)
    assert x.kbps is not None           # the model holds exactly one rate
    return Meter(x.id, x.kbps, x.burst_kb)


def _tenant_limit(vni: int, meter: int) -> Flow:
    """POLICY: everything the tenant's local ports on this host send passes one meter."""
    return flow(POLICY, PRIO_TENANT_LIMIT, local_sender_match(vni),
                [("meter", meter), ("goto", QOS)], COOKIE_QOS)


def rule_flow(vni: int, rule: QosRule) -> Flow:
    """QOS: a tenant's rule on what its local ports send; then on to L2."""
    actions: list[tuple] = []
    if rule.set_dscp is not None:
        actions.append(("set_field", "ip_dscp", rule.set_dscp))
    if rule.queue is not None:
        actions.append(("set_queue", rule.queue))
    return flow(QOS, PRIO_QOS_RULE_BASE + rule.priority,
                {**local_sender_match(vni), **rule.oxm()},
                [*metered(rule.id if rule.kbps is not None else None),
                 ("apply", tuple(actions)), ("goto", L2)],
                COOKIE_QOS)


def _local_vnis(sw: SwitchContext, tenant: str) -> list[int]:
    """VNIs of the tenant's networks with a local port on this host."""
    return [n.vni for n in sw.topo.networks_of(tenant) if n.name in sw.local]


def _contribute(sw: SwitchContext) -> Part:
    """Tenant-wide: a tenant's limit and rules apply to each of its networks with a local
    port here, with the tenant's one meter (its networks share the rate)."""
    meters = [limit_meter(x) for x in (*sw.port_limits, *sw.tenant_limits)]
    flows = [_tenant_limit(vni, x.id)
             for x in sw.tenant_limits if x.tenant is not None
             for vni in _local_vnis(sw, x.tenant)]
    for rule in sw.topo.rules:
        vnis = _local_vnis(sw, rule.tenant)
        if vnis:
            flows.extend(rule_flow(vni, rule) for vni in vnis)
            if rule.kbps is not None:
                meters.append(Meter(rule.id, rule.kbps, rule.burst_kb))
    return Part(flows=flows, meters=meters)


FEATURE = Feature("qos", _contribute)
