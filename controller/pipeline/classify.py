"""Classification: CLASSIFY puts each frame into its tenant (metadata) or drops it.

An access port or a trunk's native tenant: ``in_port=P,vlan_vid=0`` (untagged
only) -> the tenant; a tunnel port: ``in_port=T,tunnel_id=VNI`` -> the tenant,
only for tenants both ends have.  Anything else on a port: table-miss, drop.
Every classified frame runs the learn actions of its ingress
(``controller.pipeline.l2``); a port rate limit is a meter instruction on the
port's flows (an access port's, every one of a trunk's).  Trunks' tagged
tenants are ``controller.pipeline.vlan``'s, bound ports with port security
``controller.pipeline.portsec``'s.
"""
from __future__ import annotations

from controller.flows import COOKIE_ISOLATION, Flow, flow
from controller.pipeline.base import Feature, Part, SwitchContext, metered
from controller.pipeline.l2 import learn_local, learn_tunnel
from controller.pipeline.tables import (
    CLASSIFY, FROM_TUNNEL, FROM_UPLINK, POLICY, PRIO_CLASSIFY, SENDER_MASK, TENANT_MASK,
)

__all__ = ["FEATURE", "enter_tenant", "untagged_actions"]


def enter_tenant(vni: int, from_tunnel: bool, uplink: bool = False) -> tuple[tuple, ...]:
    """Write the tenant's metadata (``controller.pipeline.tables``) and go on to POLICY."""
    if uplink:   # the uplink bit is written only where set: other ports' flows stay as they were
        return (("write_metadata", vni | FROM_UPLINK, SENDER_MASK), ("goto", POLICY))
    value = vni | (FROM_TUNNEL if from_tunnel else 0)
    return (("write_metadata", value, TENANT_MASK), ("goto", POLICY))


def untagged_actions(ofport: int, vni: int, meter: int | None, uplink: bool) -> list[tuple]:
    """What CLASSIFY does with an untagged frame of a local port: meter, learn, enter."""
    return [*metered(meter), ("apply", learn_local(vni, ofport)),
            *enter_tenant(vni, from_tunnel=False, uplink=uplink)]


def _classify_untagged(ofport: int, vni: int, meter: int | None = None,
                       uplink: bool = False) -> Flow:
    """An access port, or a trunk's native tenant: untagged frames only."""
    return flow(CLASSIFY, PRIO_CLASSIFY, {"in_port": ofport, "vlan_vid": 0},
                untagged_actions(ofport, vni, meter, uplink), COOKIE_ISOLATION)


def _classify_tunnel(ofport: int, vni: int) -> Flow:
    return flow(CLASSIFY, PRIO_CLASSIFY, {"in_port": ofport, "tunnel_id": vni},
                [("apply", learn_tunnel(vni, ofport)), *enter_tenant(vni, from_tunnel=True)],
                COOKIE_ISOLATION)


def _contribute(sw: SwitchContext) -> Part:
    flows = [_classify_untagged(m.ofport, sw.topo.tenant(m.tenant).vni,
                                sw.port_meter.get(m.port), m.uplink)
             for m in sw.members if m.vlan is None and not sw.sources(m)]
    for peer in sorted(sw.peer_ofport):
        for name in sorted(sw.shared[peer]):
            flows.append(_classify_tunnel(sw.peer_ofport[peer], sw.topo.tenant(name).vni))
    return Part(flows=flows)


FEATURE = Feature("classify", _contribute)
