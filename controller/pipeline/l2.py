"""L2 and learning: static endpoint MACs in L2, and the learn actions CLASSIFY runs.

Split horizon: a frame that came from a tunnel never leaves by a tunnel
(full-mesh tunnels: the sender already reached every peer itself), for
flooding, static and learned unicast alike; this is what rules out loops and
duplicates between hosts.

A bound MAC cannot be taken over by learning elsewhere: its static L2 flows
(priority 100) outrank every learned flow (priority 10), on every host.  A docker0
endpoint's MAC (``Topology.endpoints``) gets the same static flows, to its host's
docker0 link (``portsec`` drops its spoofed frames where they enter).

Learning is bounded: every learn action carries ``limit`` (OVS
``learn(limit=N)``, counted per cookie in L2) and a cookie naming its
ingress, ``COOKIE_LEARNED | ofport << 24 | vni`` (``learned_cookie``): at
most ``LEARN_LIMIT_MACS`` MACs per (ingress port or tunnel, tenant) on each
host (each MAC is two flows, hence ``limit = 2 * LEARN_LIMIT_MACS``).  A
tenant's total on a host is at most that times its ports there plus its
peers' tunnels.  Beyond the bound, new MACs are not learned (their frames
flood); MACs already learned keep working.
"""
from __future__ import annotations

from functools import lru_cache

from controller.flows import (
    COOKIE_ENDPOINT, COOKIE_FEATURE_MASK, COOKIE_LEARNED, OWNED_FEATURE_COOKIES, Flow, LearnSpec,
)
from controller.model import ACCESS, Binding, Topology
from controller.pipeline.base import Feature, Part, SwitchContext, to_tunnel
from controller.pipeline.tables import (
    FROM_TUNNEL, L2, PRIO_ENDPOINT, PRIO_LEARNED, TABLES, TENANT_MASK, VNI_MASK,
)

__all__ = ["FEATURE", "LEARN_IDLE_TIMEOUT", "LEARN_LIMIT_MACS", "learned_cookie",
           "learned_from_port", "flow_reads", "learn_local", "learn_tunnel"]

LEARN_IDLE_TIMEOUT = 300
LEARN_LIMIT_MACS = 1024      # learned MACs per (ingress port or tunnel, tenant) on a host


def learned_cookie(ofport: int, vni: int) -> int:
    """Cookie of the flows learned from ``ofport`` for tenant ``vni``: the unit OVS's
    ``learn(limit=...)`` counts, so each ingress has its own bound."""
    return COOKIE_LEARNED | (ofport & 0xFFFF) << 24 | vni


def learned_from_port(ofport: int) -> tuple[int, int]:
    """(cookie, mask) of every flow learned on ``ofport``, in any tenant: exactly the
    learned flows that send to it (a learned flow outputs to the port it was learned on,
    or drops), so a delete by this cookie and mask forgets the port."""
    return learned_cookie(ofport, 0), COOKIE_FEATURE_MASK | 0xFFFF << 24


def flow_reads() -> tuple[tuple[int | None, int, int], ...]:
    """(table or None for all, cookie, cookie_mask) of the flow-stats requests a sync
    sends: every flow weft writes, and learned flows only in tables no learn writes
    to (leftovers of a renumbered pipeline); never the learned MACs themselves, so
    what hosts send cannot inflate what the controller reads."""
    owned = tuple((None, c, COOKIE_FEATURE_MASK) for c in OWNED_FEATURE_COOKIES)
    return owned + tuple((t.id, COOKIE_LEARNED, COOKIE_FEATURE_MASK)
                         for t in TABLES if t.id != L2)


def _learn(vni: int, from_tunnel: bool, load_tunnel_id: bool, output: bool,
           ofport: int, vlan: int | None = None) -> tuple:
    """A learn action writing "eth_dst == this eth_src" for frames of one ingress kind."""
    spec = LearnSpec(
        table=L2, priority=PRIO_LEARNED, idle_timeout=LEARN_IDLE_TIMEOUT,
        cookie=learned_cookie(ofport, vni),
        metadata=vni | (FROM_TUNNEL if from_tunnel else 0), metadata_mask=TENANT_MASK,
        load_tunnel_id=load_tunnel_id, output_in_port=output, vlan_vid=vlan,
        limit=2 * LEARN_LIMIT_MACS)
    return ("learn", spec)


# Every learned MAC is written as the same pair of flows (local-ingress and
# tunnel-ingress lookups), so a MAC moving between a local port and a tunnel
# overwrites both instead of leaving a stale twin at the same priority.
# ``vlan``: the frame came tagged from a trunk; the learned flow tags it again.
def learn_local(vni: int, ofport: int, vlan: int | None = None) -> tuple[tuple, ...]:
    """The learn actions of a frame from a local port (CLASSIFY runs them)."""
    return (_learn(vni, False, False, True, ofport, vlan),
            _learn(vni, True, False, True, ofport, vlan))


def learn_tunnel(vni: int, ofport: int) -> tuple[tuple, ...]:
    """The learn actions of a frame from a tunnel (CLASSIFY runs them)."""
    # from a local port: send back through that tunnel; from another tunnel: drop.
    return (_learn(vni, False, True, True, ofport), _learn(vni, True, False, False, ofport))


# Endpoint flows are most of a switch's flows (one per local endpoint, two per remote
# one, on every switch): they are built directly in ``flow()``'s normal form (match
# items sorted, MAC lowercase as ``Binding`` keeps it, metadata masked) instead of
# normalising each; tests/unit/test_pipeline.py checks they equal ``flow()``'s.
def _endpoint_local(vni: int, mac: str, ofport: int) -> Flow:
    return Flow(L2, PRIO_ENDPOINT, (("eth_dst", mac), ("metadata", (vni & VNI_MASK, VNI_MASK))),
                (("apply", (("output", ofport),)),), COOKIE_ENDPOINT)


def _endpoint_remote(vni: int, mac: str, tunnel_ofport: int,
                     to_peer: tuple | None = None) -> list[Flow]:
    """Frames from local ports tunnel to the MAC's host; from tunnels, drop (never relay).

    ``to_peer``: the instructions toward ``tunnel_ofport``, shared by every MAC
    behind that peer (built once per peer and tenant by the caller)."""
    if to_peer is None:
        to_peer = (("apply", to_tunnel(vni, tunnel_ofport)),)
    from_local, from_tunnel_drop = _remote_endpoint_parts(vni, mac)
    return [Flow(L2, PRIO_ENDPOINT, from_local, to_peer, COOKIE_ENDPOINT), from_tunnel_drop]


@lru_cache(maxsize=1 << 18)
def _remote_endpoint_parts(vni: int, mac: str) -> tuple[tuple, Flow]:
    """What a remote endpoint's flows share on every switch (all but the tunnel port):
    the from-local match and the whole from-tunnel drop flow, built once per MAC, so
    16 switches hold one copy of each, not 15 (memory; and time)."""
    from_local = (("eth_dst", mac), ("metadata", (vni & TENANT_MASK, TENANT_MASK)))
    drop = Flow(L2, PRIO_ENDPOINT,
                (("eth_dst", mac), ("metadata", ((vni | FROM_TUNNEL) & TENANT_MASK, TENANT_MASK))),
                (), COOKIE_ENDPOINT)
    return from_local, drop


def _endpoints(topo: Topology, tenants: frozenset[str]) -> list[Binding]:
    """Access bindings with a known MAC, of tenants present here, and docker0 endpoints."""
    return [b for b in (*topo.bindings, *topo.endpoint_bindings)
            if b.mac and b.mode == ACCESS and b.tenant in tenants]


def _contribute(sw: SwitchContext) -> Part:
    """L2: every endpoint of a tenant present here, local (to its port) or behind a peer;
    and of a network only routed to from here (``SwitchContext.routed``), the flows that
    send it to its host: only routed frames ever carry that network's metadata here."""
    segments = sw.here | sw.routed
    vnis = {name: sw.topo.tenant(name).vni for name in segments}
    to_peer: dict[tuple[int, int], tuple] = {}
    flows: list[Flow] = []
    for b in _endpoints(sw.topo, segments):
        vni = vnis[b.tenant]  # type: ignore[index]  # access bindings have a tenant
        mac: str = b.mac      # type: ignore[assignment]  # and ``_endpoints`` a mac
        if b.host == sw.host and b.port in sw.ports:
            flows.append(_endpoint_local(vni, mac, sw.ports[b.port]))
        elif b.host in sw.peer_ofport:
            tun = sw.peer_ofport[b.host]
            instrs = to_peer.get((vni, tun))
            if instrs is None:
                instrs = to_peer[(vni, tun)] = (("apply", to_tunnel(vni, tun)),)
            remote = _endpoint_remote(vni, mac, tun, instrs)
            flows.extend(remote if b.tenant in sw.here else remote[:1])
    return Part(flows=flows)


FEATURE = Feature("l2", _contribute)
