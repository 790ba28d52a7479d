"""Flooding: FLOOD sends unknown, broadcast and multicast frames to the tenant's group.

Flood groups of a tenant: ``2*vni`` floods a frame from a local port (local
ports + one tunnel per peer that has the tenant), ``2*vni + 1`` a frame from a
tunnel (local ports only: split horizon, ``controller.pipeline.l2``).  Buckets
include the ingress port: OpenFlow drops output to the in_port, so that bucket
does nothing for that frame.  Out to a trunk for a tagged tenant, a bucket
pushes the tenant's tag (``controller.pipeline.base.to_port``).
"""
from __future__ import annotations

from controller.flows import COOKIE_ISOLATION, Flow, Group, flow
from controller.pipeline.base import Feature, Part, SwitchContext, to_port, to_tunnel
from controller.pipeline.tables import FLOOD, PRIO_FLOOD, tenant_match

__all__ = ["FEATURE", "flood_group_ids"]


def flood_group_ids(vni: int) -> tuple[int, int]:
    """(from-local, from-tunnel) flood group ids of a tenant: unique, stable across restarts."""
    return 2 * vni, 2 * vni + 1


def _flood_group(group_id: int, vni: int, from_tunnel: bool,
                 buckets: list[tuple]) -> tuple[Flow, Group]:
    return (flow(FLOOD, PRIO_FLOOD, tenant_match(vni, from_tunnel),
                 [("apply", (("group", group_id),))], COOKIE_ISOLATION),
            Group(group_id, "all", tuple(buckets)))


def _contribute(sw: SwitchContext) -> Part:
    flows: list[Flow] = []
    groups: list[Group] = []
    for name in sorted(sw.here):
        vni = sw.topo.tenant(name).vni
        local_out = [to_port(m.ofport, m.vlan) for m in sw.members if m.tenant == name]
        tunnel_out = [to_tunnel(vni, sw.peer_ofport[peer]) for peer in sorted(sw.peer_ofport)
                      if name in sw.shared[peer]]
        from_local, from_tunnel = flood_group_ids(vni)
        for gid, is_tunnel, buckets in ((from_local, False, local_out + tunnel_out),
                                        (from_tunnel, True, local_out)):
            if buckets:   # a group with no bucket is a drop: leave it to table-miss
                f, g = _flood_group(gid, vni, is_tunnel, buckets)
                flows.append(f)
                groups.append(g)
    return Part(flows=flows, groups=groups)


FEATURE = Feature("flood", _contribute)
