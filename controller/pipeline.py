"""The desired OpenFlow state of one host's br0, computed from the topology.

Tables (a frame walks them in order)::

    CLASSIFY (0)  which tenant is this frame in? in_port (+ tunnel_id) -> metadata;
                  learn where its source MAC lives; anything unclassified drops.
    POLICY   (1)  placeholder for ACL/QoS; table-miss goes on to L2.
    L2       (2)  known destination MAC of the tenant -> one port or one tunnel
                  (static endpoints, priority 100; learned, priority 10).
    FLOOD    (3)  unknown/broadcast/multicast -> the tenant's flood group.

Metadata layout (written in CLASSIFY, read by every later table)::

    bits  0-23  tenant VNI                                   (VNI_MASK)
    bits 24-31  reserved, always 0
    bit     32  FROM_TUNNEL: the frame came from a peer host (split horizon)

Split horizon: a frame that came from a tunnel never leaves by a tunnel
(full-mesh tunnels: the sender already reached every peer itself), for
flooding, static and learned unicast alike; this is what rules out loops and
duplicates between hosts.

Flood groups of a tenant: ``2*vni`` floods a frame from a local port (local
ports + one tunnel per peer that has the tenant), ``2*vni + 1`` a frame from a
tunnel (local ports only).  Buckets include the ingress port: OpenFlow drops
output to the in_port, so that bucket does nothing for that frame.

VLANs (802.1Q).  A tenant's frames are untagged inside the pipeline and in
the tunnels (the VNI says whose they are); tags exist only on trunk ports::

    access port          in_port=P,vlan_vid=0 (untagged only)        -> tenant
    trunk, native tenant in_port=P,vlan_vid=0                        -> tenant
    trunk, tagged tenant in_port=P,vlan_vid=0x1000|T.vlan, pop_vlan  -> T
    anything else on a local port (other VLANs, tags on access ports): table-miss drop

Out to a trunk for a tagged tenant T (flood buckets, learned flows):
``push_vlan:0x8100, set_field:0x1000|T.vlan->vlan_vid, output:P``; out to an
access port or for the native tenant: plain output.  So a VLAN on one host's
trunk is the VNI in the tunnels and the same VLAN on every other host's trunks.

POLICY drops whatever is still tagged after CLASSIFY (double-tagged frames
on trunks, whose outer tag was popped; tagged frames out of a tunnel).  OVS
parses only ``other_config:vlan-limit`` tags (default 1): beyond it, the inner
tag shows as ``eth_type`` 0x8100/0x88a8 and, after the pop, the frame looks
untagged, so POLICY drops on those Ethertypes too.  Trunk-only flows and the
POLICY drops carry COOKIE_VLAN; a native tenant's CLASSIFY flow is exactly an
access port's, so turning an access port into a trunk with that native tenant
changes nothing for it.
"""
from __future__ import annotations

from typing import Mapping

from controller.flows import (
    COOKIE_BASE, COOKIE_ENDPOINT, COOKIE_ISOLATION, COOKIE_LEARNED, COOKIE_VLAN, Flow, Group,
    LearnSpec, SwitchState, flow,
)
from controller.model import ACCESS, Binding, Topology

__all__ = [
    "CLASSIFY", "POLICY", "L2", "FLOOD", "VNI_MASK", "FROM_TUNNEL", "TENANT_MASK",
    "PRIO_LEARNED", "LEARN_IDLE_TIMEOUT", "OFPVID_PRESENT", "ETH_TYPE_VLAN", "flood_group_ids",
    "tenant_match", "to_port", "desired_state",
]

CLASSIFY, POLICY, L2, FLOOD = 0, 1, 2, 3

VNI_MASK = 0xFFFFFF
FROM_TUNNEL = 1 << 32
TENANT_MASK = FROM_TUNNEL | VNI_MASK

PRIO_MISS = 0
PRIO_CLASSIFY = 100
PRIO_ENDPOINT = 100
PRIO_FLOOD = 100
PRIO_LEARNED = 10
PRIO_DROP_TAGGED = 100       # POLICY: a tag still visible after CLASSIFY
PRIO_DROP_INNER_TAG = 90     # POLICY: a tag beyond OVS's vlan-limit
LEARN_IDLE_TIMEOUT = 300

OFPVID_PRESENT = 0x1000
ETH_TYPE_VLAN = 0x8100       # 802.1Q C-tag: the tag weft pushes
ETH_TYPE_QINQ = 0x88A8       # 802.1ad S-tag: OVS parses it as a VLAN header too


def flood_group_ids(vni: int) -> tuple[int, int]:
    """(from-local, from-tunnel) flood group ids of a tenant: unique, stable across restarts."""
    return 2 * vni, 2 * vni + 1


def tenant_match(vni: int, from_tunnel: bool | None = None) -> dict[str, tuple[int, int]]:
    """Match on the tenant's metadata; ``from_tunnel`` None means either ingress."""
    if from_tunnel is None:
        return {"metadata": (vni, VNI_MASK)}
    return {"metadata": (vni | (FROM_TUNNEL if from_tunnel else 0), TENANT_MASK)}


def _enter_tenant(vni: int, from_tunnel: bool) -> tuple[tuple, ...]:
    value = vni | (FROM_TUNNEL if from_tunnel else 0)
    return (("write_metadata", value, TENANT_MASK), ("goto", POLICY))


def to_port(ofport: int, vlan: int | None) -> tuple[tuple, ...]:
    """Actions sending a (pipeline-internal, untagged) frame out of a local port,
    tagged with ``vlan`` when the port carries the frame's tenant as a trunk VLAN."""
    if vlan is None:
        return (("output", ofport),)
    return (("push_vlan", ETH_TYPE_VLAN), ("set_field", "vlan_vid", OFPVID_PRESENT | vlan),
            ("output", ofport))


def _learn(vni: int, from_tunnel: bool, load_tunnel_id: bool, output: bool,
           vlan: int | None = None) -> tuple:
    """A learn action writing "eth_dst == this eth_src" for frames of one ingress kind."""
    spec = LearnSpec(
        table=L2, priority=PRIO_LEARNED, idle_timeout=LEARN_IDLE_TIMEOUT, cookie=COOKIE_LEARNED,
        metadata=vni | (FROM_TUNNEL if from_tunnel else 0), metadata_mask=TENANT_MASK,
        load_tunnel_id=load_tunnel_id, output_in_port=output, vlan_vid=vlan)
    return ("learn", spec)


# Every learned MAC is written as the same pair of flows (local-ingress and
# tunnel-ingress lookups), so a MAC moving between a local port and a tunnel
# overwrites both instead of leaving a stale twin at the same priority.
# ``vlan``: the frame came tagged from a trunk; the learned flow tags it again.
def _learn_local(vni: int, vlan: int | None = None) -> tuple[tuple, ...]:
    return (_learn(vni, False, False, True, vlan), _learn(vni, True, False, True, vlan))


def _learn_tunnel(vni: int) -> tuple[tuple, ...]:
    # from a local port: send back through that tunnel; from another tunnel: drop.
    return (_learn(vni, False, True, True), _learn(vni, True, False, False))


def _table_misses() -> list[Flow]:
    return [
        flow(CLASSIFY, PRIO_MISS, {}, (), COOKIE_BASE),
        flow(POLICY, PRIO_MISS, {}, [("goto", L2)], COOKIE_BASE),
        flow(L2, PRIO_MISS, {}, [("goto", FLOOD)], COOKIE_BASE),
        flow(FLOOD, PRIO_MISS, {}, (), COOKIE_BASE),
    ]


def _drop_tagged() -> list[Flow]:
    """POLICY: no frame still carrying a tag goes on (double tags, tags out of tunnels)."""
    return [
        flow(POLICY, PRIO_DROP_TAGGED, {"vlan_vid": (OFPVID_PRESENT, OFPVID_PRESENT)}, (),
             COOKIE_VLAN),
        flow(POLICY, PRIO_DROP_INNER_TAG, {"eth_type": ETH_TYPE_VLAN}, (), COOKIE_VLAN),
        flow(POLICY, PRIO_DROP_INNER_TAG, {"eth_type": ETH_TYPE_QINQ}, (), COOKIE_VLAN),
    ]


def _classify_untagged(ofport: int, vni: int) -> Flow:
    """An access port, or a trunk's native tenant: untagged frames only."""
    return flow(CLASSIFY, PRIO_CLASSIFY, {"in_port": ofport, "vlan_vid": 0},
                [("apply", _learn_local(vni)), *_enter_tenant(vni, from_tunnel=False)],
                COOKIE_ISOLATION)


def _classify_tagged(ofport: int, vni: int, vlan: int) -> Flow:
    """A trunk's tagged tenant: its VLAN, popped; the learned flow pushes it back."""
    return flow(CLASSIFY, PRIO_CLASSIFY, {"in_port": ofport, "vlan_vid": OFPVID_PRESENT | vlan},
                [("apply", (("pop_vlan",), *_learn_local(vni, vlan))),
                 *_enter_tenant(vni, from_tunnel=False)],
                COOKIE_VLAN)


def _classify_tunnel(ofport: int, vni: int) -> Flow:
    return flow(CLASSIFY, PRIO_CLASSIFY, {"in_port": ofport, "tunnel_id": vni},
                [("apply", _learn_tunnel(vni)), *_enter_tenant(vni, from_tunnel=True)],
                COOKIE_ISOLATION)


def _endpoint_local(vni: int, mac: str, ofport: int) -> Flow:
    return flow(L2, PRIO_ENDPOINT, {**tenant_match(vni), "eth_dst": mac},
                [("apply", (("output", ofport),))], COOKIE_ENDPOINT)


def _endpoint_remote(vni: int, mac: str, tunnel_ofport: int) -> list[Flow]:
    """Frames from local ports tunnel to the MAC's host; from tunnels, drop (never relay)."""
    return [
        flow(L2, PRIO_ENDPOINT, {**tenant_match(vni, from_tunnel=False), "eth_dst": mac},
             [("apply", _to_tunnel(vni, tunnel_ofport))], COOKIE_ENDPOINT),
        flow(L2, PRIO_ENDPOINT, {**tenant_match(vni, from_tunnel=True), "eth_dst": mac},
             (), COOKIE_ENDPOINT),
    ]


def _to_tunnel(vni: int, tunnel_ofport: int) -> tuple[tuple, ...]:
    return (("set_field", "tunnel_id", vni), ("output", tunnel_ofport))


def _flood_group(group_id: int, vni: int, from_tunnel: bool,
                 buckets: list[tuple]) -> tuple[Flow, Group]:
    return (flow(FLOOD, PRIO_FLOOD, tenant_match(vni, from_tunnel),
                 [("apply", (("group", group_id),))], COOKIE_ISOLATION),
            Group(group_id, "all", tuple(buckets)))


def desired_state(host: str, topo: Topology, ports: Mapping[str, int],
                  tunnels: Mapping[str, str]) -> SwitchState:
    """Desired flows and groups of ``host``'s switch.

    ``ports``: port name -> OpenFlow port number (port-desc of this switch);
    ``tunnels``: peer host -> name of this host's tunnel port toward it.  Ports
    not (yet) in ``ports`` are skipped, so the result follows the live switch.
    """
    # (tenant, ofport, vlan or None) of every live local port, for each tenant it carries
    members = sorted(_members(host, topo, ports), key=lambda m: (m[0], m[1]))
    here = set(topo.tenants_on(host))
    peer_ofport = {peer: ports[name] for peer, name in tunnels.items()
                   if name in ports and peer != host}
    # A peer's frames of a tenant matter only if both ends have it.
    shared = {peer: topo.tenants_on(peer) & here for peer in peer_ofport}

    flows: list[Flow] = [*_table_misses(), *_drop_tagged()]
    groups: list[Group] = []

    for name, ofport, vlan in members:
        vni = topo.tenant(name).vni
        flows.append(_classify_untagged(ofport, vni) if vlan is None
                     else _classify_tagged(ofport, vni, vlan))
    for peer in sorted(peer_ofport):
        for name in sorted(shared[peer]):
            flows.append(_classify_tunnel(peer_ofport[peer], topo.tenant(name).vni))

    for b in _endpoints(topo, here):
        vni = topo.tenant(b.tenant).vni
        if b.host == host and b.port in ports:
            flows.append(_endpoint_local(vni, b.mac, ports[b.port]))
        elif b.host in peer_ofport:
            flows.extend(_endpoint_remote(vni, b.mac, peer_ofport[b.host]))

    for name in sorted(here):
        vni = topo.tenant(name).vni
        local_out = [to_port(ofport, vlan) for t, ofport, vlan in members if t == name]
        tunnel_out = [_to_tunnel(vni, peer_ofport[peer]) for peer in sorted(peer_ofport)
                      if name in shared[peer]]
        from_local, from_tunnel = flood_group_ids(vni)
        for gid, is_tunnel, buckets in ((from_local, False, local_out + tunnel_out),
                                        (from_tunnel, True, local_out)):
            if buckets:   # a group with no bucket is a drop: leave it to table-miss
                f, g = _flood_group(gid, vni, is_tunnel, buckets)
                flows.append(f)
                groups.append(g)

    return SwitchState(frozenset(flows), frozenset(groups))


def _members(host: str, topo: Topology,
             ports: Mapping[str, int]) -> list[tuple[str, int, int | None]]:
    """(tenant, ofport, VLAN tag on that port or None) for the live ports of ``host``."""
    out = []
    for b in topo.bindings_on(host):
        if b.port not in ports:
            continue
        if b.tenant is not None:
            out.append((b.tenant, ports[b.port], None))
        out.extend((name, ports[b.port], topo.tenant(name).vlan) for name in b.trunk)
    return out


def _endpoints(topo: Topology, tenants: set[str]) -> list[Binding]:
    """Access bindings with a known MAC, of tenants present here."""
    return [b for b in topo.bindings if b.mac and b.mode == ACCESS and b.tenant in tenants]
