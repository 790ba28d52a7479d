"""Classification: CLASSIFY puts each frame into its tenant (metadata) or drops it.

The metadata is the frame's network (segment VNI, ingress side) and, for a network
with a gateway, its tenant's routing domain (the tenant id; see
``controller.pipeline.tables``).

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
    CLASSIFY, DOMAIN_MASK, FROM_TUNNEL, FROM_UPLINK, NETWORK_MASK, POLICY, PRIO_CLASSIFY,
    SENDER_MASK, domain_bits,
)

__all__ = ["FEATURE", "enter_tenant", "untagged_actions"]


def enter_tenant(vni: int, from_tunnel: bool, uplink: bool = False,
                 domain: int = 0) -> tuple[tuple, ...]:
    """Write the network's metadata and, for a network with a gateway, its tenant's
    routing domain ``domain`` (``controller.pipeline.tables``); go on to POLICY."""
    # the uplink and domain bits are written only where set: other flows stay as they were
    mask = (SENDER_MASK if uplink else NETWORK_MASK) | (DOMAIN_MASK if domain else 0)
    value = vni | (FROM_UPLINK if uplink else 0) | (FROM_TUNNEL if from_tunnel else 0) \
        | domain_bits(domain)
    return (("write_metadata", value, mask), ("goto", POLICY))


def untagged_actions(ofport: int, vni: int, meter: int | None, uplink: bool,
                     domain: int = 0) -> list[tuple]:
    """What CLASSIFY does with an untagged frame of a local port: meter, learn, enter."""
    return [*metered(meter), ("apply", learn_local(vni, ofport)),
            *enter_tenant(vni, from_tunnel=False, uplink=uplink, domain=domain)]


def _classify_untagged(ofport: int, ids: tuple[int, int], meter: int | None = None,
                       uplink: bool = False) -> Flow:
    """An access port, or a trunk's native tenant: untagged frames only."""
    vni, domain = ids
    return flow(CLASSIFY, PRIO_CLASSIFY, {"in_port": ofport, "vlan_vid": 0},
                untagged_actions(ofport, vni, meter, uplink, domain), COOKIE_ISOLATION)


def _classify_tunnel(ofport: int, ids: tuple[int, int]) -> Flow:
    vni, domain = ids
    return flow(CLASSIFY, PRIO_CLASSIFY, {"in_port": ofport, "tunnel_id": vni},
                [("apply", learn_tunnel(vni, ofport)),
                 *enter_tenant(vni, from_tunnel=True, domain=domain)],
                COOKIE_ISOLATION)


def _contribute(sw: SwitchContext) -> Part:
    flows = [_classify_untagged(m.ofport, sw.ids(m.tenant), sw.port_meter.get(m.port), m.uplink)
             for m in sw.members if m.vlan is None and not sw.sources(m)]
    for peer in sorted(sw.peer_ofport):
        for name in sorted(sw.shared[peer]):
            flows.append(_classify_tunnel(sw.peer_ofport[peer], sw.ids(name)))
    return Part(flows=flows)


FEATURE = Feature("classify", _contribute)
