"""The desired OpenFlow state of one host's br0, computed from the topology.

Tables (a frame walks them in order)::

    CLASSIFY (0)  which tenant is this frame in? in_port (+ tunnel_id) -> metadata;
                  learn where its source MAC lives; anything unclassified drops.
                  A port rate limit is a meter instruction on the port's flows.
    POLICY   (1)  drops frames still tagged; a tenant's aggregate rate limit on
                  this host (meter); table-miss goes on to QOS.
    QOS      (2)  per-flow QoS rules of the tenant (meter, DSCP, queue);
                  table-miss goes on to L2.
    L2       (3)  known destination MAC of the tenant -> one port or one tunnel
                  (static endpoints, priority 100; learned, priority 10).
    FLOOD    (4)  unknown/broadcast/multicast -> the tenant's flood group.

Metadata layout (written in CLASSIFY, read by every later table)::

    bits  0-23  tenant VNI                                   (VNI_MASK)
    bits 24-31  reserved, always 0
    bit     32  FROM_TUNNEL: the frame came from a peer host (split horizon)
    bit     33  FROM_UPLINK: the frame came in on a VLAN-transport uplink
                (another host sent it); only QoS looks at it

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

QoS (``Topology.limits`` and ``Topology.rules``; every meter has flags
kbps+stats (pktps+stats for a limit in packets/s), one drop band, id = the limit's or rule's id).  Only what a
host's local ports send is limited; frames from tunnels or an uplink were
limited on the host where they entered (a local sender is metadata
``vni`` under ``SENDER_MASK``: FROM_TUNNEL and FROM_UPLINK both 0)::

    port limit     CLASSIFY flows of the port (an access port's, every one of a
                   trunk's) start with meter:<id>; their cookie is unchanged
    tenant limit   POLICY  priority 10  metadata=<vni>/SENDER_MASK
                                        -> meter:<id>, goto QOS        COOKIE_QOS
    rule           QOS     priority 1000+rule.priority
                                        metadata=<vni>/SENDER_MASK, ip, <rule match>
                                        -> [meter:<id>] [set_field:<dscp>->ip_dscp,
                                           set_queue:<q>] goto L2     COOKIE_QOS

ACLs (``Topology.acls``, ``Topology.acl_deny``): a tenant with a rule or a
default-deny policy gets, in POLICY, on every host where it is present
(zone = the tenant's VNI; "pass" = [the tenant's meter for local senders]
goto QOS; every flow matches the tenant's metadata and ``vlan_vid=0``, so a
frame still tagged never matches one and the tag drops above still win)::

    30000 ip, ct_state=-trk                    -> ct(zone, table=POLICY)  (track, recirculate)
    30000 ip, ct_state=+trk+inv                -> drop
    29990 ip, ct_state=+trk+est                -> pass   (replies, the rest of a connection)
    29980 ip, ct_state=+trk+rel                -> pass   (ICMP errors about a connection)
    29970 ip, +trk+new, from a tunnel/uplink   -> ct(commit, zone), pass: decided where it entered
    10000+priority  ip, +trk+new, local sender, <rule match>
                                               -> allow: ct(commit, zone), pass; drop: drop
                                                  cookie COOKIE_ACL|rule id (its counters)
    10000 ip, +trk+new, local sender           -> the default: allow (commit, pass) or drop
    30000 arp                                  -> pass   (default-deny tenants only)
    20    anything else of the tenant          -> drop   (default-deny tenants only)

(a "pass" with a meter is two flows: local senders at priority+1 with the
meter, everyone else without.)  A connection is decided once, by its first
packet, on the host where it enters weft; the receiving host commits it
when it arrives from the tunnel, so the replies are +est on both hosts.

Port security (CLASSIFY, before any learning; cookie COOKIE_PORTSEC unless said)::

    priority 1000  eth_src multicast/broadcast (01:00:00:00:00:00/01:...)  -> drop
                   on every port: local, docker0 link, tunnels, trunks, uplinks
    bound access port P with a mac (Binding.source_addresses: mac -> IPs or any):
      100  in_port=P, untagged, eth_src=<mac>               -> the port's classify
                                                              (COOKIE_ISOLATION)
      110  in_port=P, eth_src=<mac>, arp                    -> drop
      120  in_port=P, untagged, eth_src=<mac>, arp, arp_sha=<mac>[, arp_spa=<ip>]
                                                            -> the port's classify
      with IPs for <mac>:
      110  in_port=P, eth_src=<mac>, ip / ipv6              -> drop
      120  in_port=P, untagged, eth_src=<mac>, ip, ipv4_src=<ip>  -> classify
    any other source MAC on P: table-miss, drop.
    docker0 endpoints (``Topology.endpoints``, MAC M pinned to host H's docker0 link),
    on every port Q of this host carrying the default tenant unchecked (the docker0
    link, ports without port security; not uplinks) other than H's docker0 link itself:
      105  in_port=Q, vlan_vid=<the default tenant's tag on Q, or 0>, eth_src=M -> drop

A bound MAC cannot be taken over by learning elsewhere: its static L2 flows
(priority 100) outrank every learned flow (priority 10), on every host.  A
docker0 endpoint's MAC gets the same static flows (to its host's docker0 link),
and the drops above keep its spoofed frames from reaching any docker0 bridge,
which would learn the MAC at the weft link and cut the real container off.

Learning is bounded: every learn action carries ``limit`` (OVS
``learn(limit=N)``, counted per cookie in L2) and a cookie naming its
ingress, ``COOKIE_LEARNED | ofport << 24 | vni`` (``learned_cookie``): at
most ``LEARN_LIMIT_MACS`` MACs per (ingress port or tunnel, tenant) on each
host (each MAC is two flows, hence ``limit = 2 * LEARN_LIMIT_MACS``).  A
tenant's total on a host is at most that times its ports there plus its
peers' tunnels.  Beyond the bound, new MACs are not learned (their frames
flood); MACs already learned keep working.

A frame can pass up to three meters (port, tenant, rule), in that order.  A
tenant's limit and rules exist on a host only while the tenant has a local
port bound there (``Topology.local_tenants``: bound, plugged in or not,
uplinks excluded); a port limit only while the port is bound there and
present on the switch.  Anything else gives no meter and no flow.
"""
from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Mapping, NamedTuple

from controller.flows import (
    CT_EST, CT_INV, CT_NEW, CT_REL, CT_TRK, acl_cookie,
    COOKIE_BASE, COOKIE_ENDPOINT, COOKIE_FEATURE_MASK, COOKIE_ISOLATION, COOKIE_LEARNED,
    COOKIE_PORTSEC, COOKIE_QOS, COOKIE_VLAN, OWNED_FEATURE_COOKIES, Flow, Group, LearnSpec, Meter,
    SwitchState, flow,
)
from controller.model import (ACCESS, DEFAULT_TENANT, AclRule, Binding, QosRule, RateLimit,
                              Topology)

__all__ = [
    "CLASSIFY", "POLICY", "QOS", "L2", "FLOOD", "VNI_MASK", "FROM_TUNNEL", "FROM_UPLINK",
    "TENANT_MASK", "SENDER_MASK", "PRIO_LEARNED", "PRIO_TENANT_LIMIT", "PRIO_QOS_RULE_BASE",
    "LEARN_IDLE_TIMEOUT", "LEARN_LIMIT_MACS", "OFPVID_PRESENT", "ETH_TYPE_VLAN",
    "flood_group_ids", "learned_cookie", "learned_from_port", "flow_reads", "PRIO_DROP_GROUP_SRC",
    "tenant_match", "local_sender_match", "to_port", "rule_flow", "desired_state",
    "PRIO_ACL_TRACK", "PRIO_ACL_EST", "PRIO_ACL_REL", "PRIO_ACL_REMOTE_NEW", "PRIO_ACL_RULE_BASE",
    "PRIO_ACL_DENY_ALL", "acl_flows", "acl_rule_flow",
]

CLASSIFY, POLICY, QOS, L2, FLOOD = 0, 1, 2, 3, 4

VNI_MASK = 0xFFFFFF
FROM_TUNNEL = 1 << 32
FROM_UPLINK = 1 << 33
TENANT_MASK = FROM_TUNNEL | VNI_MASK
SENDER_MASK = TENANT_MASK | FROM_UPLINK     # vni under this mask: sent by a local port

PRIO_MISS = 0
PRIO_CLASSIFY = 100
PRIO_ENDPOINT = 100
PRIO_FLOOD = 100
PRIO_LEARNED = 10
PRIO_DROP_TAGGED = 100       # POLICY: a tag still visible after CLASSIFY
PRIO_DROP_INNER_TAG = 90     # POLICY: a tag beyond OVS's vlan-limit
PRIO_TENANT_LIMIT = 10       # POLICY: a tenant's aggregate meter on this host
PRIO_QOS_RULE_BASE = 1000    # QOS: a rule's flow is this + rule.priority (1..1000)
LEARN_IDLE_TIMEOUT = 300
PRIO_ACL_TRACK = 30000       # POLICY: untracked IPv4 -> conntrack; invalid; ARP (deny)
PRIO_ACL_EST = 29990
PRIO_ACL_REL = 29980
PRIO_ACL_REMOTE_NEW = 29970  # POLICY: a new connection decided on the host it entered
PRIO_ACL_RULE_BASE = 10000   # POLICY: a rule's flow is this + rule.priority (1..10000)
PRIO_ACL_DENY_ALL = 20       # POLICY: default-deny catch-all (above the tenant limit's 10)
ETH_TYPE_IP = 0x0800
ETH_TYPE_ARP_ = 0x0806
LEARN_LIMIT_MACS = 1024      # learned MACs per (ingress port or tunnel, tenant) on a host
PRIO_DROP_GROUP_SRC = 1000   # CLASSIFY: multicast/broadcast source MAC, any port
PRIO_PIN_DROP = 105          # CLASSIFY: a docker0 endpoint's MAC entering elsewhere
PRIO_PORTSEC_DROP = 110      # CLASSIFY: a bound port's ARP/IP not from its addresses
PRIO_PORTSEC_ALLOW = 120     # CLASSIFY: a bound port's ARP/IP from its addresses
ETH_TYPE_ARP = 0x0806
ETH_TYPE_IPV4 = 0x0800
ETH_TYPE_IPV6 = 0x86DD
GROUP_BIT_MAC = "01:00:00:00:00:00"

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


def local_sender_match(vni: int) -> dict[str, tuple[int, int]]:
    """Frames of the tenant sent by a local port of this host (not a tunnel, not an uplink)."""
    return {"metadata": (vni, SENDER_MASK)}


def _enter_tenant(vni: int, from_tunnel: bool, uplink: bool = False) -> tuple[tuple, ...]:
    if uplink:   # the uplink bit is written only where set: other ports' flows stay as they were
        return (("write_metadata", vni | FROM_UPLINK, SENDER_MASK), ("goto", POLICY))
    value = vni | (FROM_TUNNEL if from_tunnel else 0)
    return (("write_metadata", value, TENANT_MASK), ("goto", POLICY))


def limit_meter(x: RateLimit) -> Meter:
    """The meter of a rate limit, in its one unit (kbit/s or packets/s)."""
    if x.pps is not None:
        return Meter(x.id, x.pps, x.burst_pkts, pktps=True)
    assert x.kbps is not None           # the model holds exactly one rate
    return Meter(x.id, x.kbps, x.burst_kb)


def _metered(meter: int | None) -> list[tuple]:
    return [] if meter is None else [("meter", meter)]


def to_port(ofport: int, vlan: int | None) -> tuple[tuple, ...]:
    """Actions sending a (pipeline-internal, untagged) frame out of a local port,
    tagged with ``vlan`` when the port carries the frame's tenant as a trunk VLAN."""
    if vlan is None:
        return (("output", ofport),)
    return (("push_vlan", ETH_TYPE_VLAN), ("set_field", "vlan_vid", OFPVID_PRESENT | vlan),
            ("output", ofport))


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
    return owned + tuple((t, COOKIE_LEARNED, COOKIE_FEATURE_MASK)
                         for t in (CLASSIFY, POLICY, QOS, FLOOD))


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
def _learn_local(vni: int, ofport: int, vlan: int | None = None) -> tuple[tuple, ...]:
    return (_learn(vni, False, False, True, ofport, vlan),
            _learn(vni, True, False, True, ofport, vlan))


def _learn_tunnel(vni: int, ofport: int) -> tuple[tuple, ...]:
    # from a local port: send back through that tunnel; from another tunnel: drop.
    return (_learn(vni, False, True, True, ofport), _learn(vni, True, False, False, ofport))


def _table_misses() -> list[Flow]:
    return [
        flow(CLASSIFY, PRIO_MISS, {}, (), COOKIE_BASE),
        flow(POLICY, PRIO_MISS, {}, [("goto", QOS)], COOKIE_BASE),
        flow(QOS, PRIO_MISS, {}, [("goto", L2)], COOKIE_BASE),
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


def _drop_group_source() -> Flow:
    """CLASSIFY: no frame from a multicast/broadcast source goes anywhere or is learned."""
    return flow(CLASSIFY, PRIO_DROP_GROUP_SRC, {"eth_src": (GROUP_BIT_MAC, GROUP_BIT_MAC)}, (),
                COOKIE_PORTSEC)


def _untagged_actions(ofport: int, vni: int, meter: int | None, uplink: bool) -> list[tuple]:
    return [*_metered(meter), ("apply", _learn_local(vni, ofport)),
            *_enter_tenant(vni, from_tunnel=False, uplink=uplink)]


def _classify_untagged(ofport: int, vni: int, meter: int | None = None,
                       uplink: bool = False) -> Flow:
    """An access port, or a trunk's native tenant: untagged frames only."""
    return flow(CLASSIFY, PRIO_CLASSIFY, {"in_port": ofport, "vlan_vid": 0},
                _untagged_actions(ofport, vni, meter, uplink), COOKIE_ISOLATION)


def _classify_secured(ofport: int, vni: int, sources: Mapping[str, frozenset[str] | None],
                      meter: int | None = None) -> list[Flow]:
    """A bound access port with port security: only its MAC(s), ARP and IPv4 checked."""
    actions = _untagged_actions(ofport, vni, meter, False)
    flows = []
    for mac, ips in sorted(sources.items()):
        port = {"in_port": ofport, "eth_src": mac}
        sent = {**port, "vlan_vid": 0}
        flows.append(flow(CLASSIFY, PRIO_CLASSIFY, sent, actions, COOKIE_ISOLATION))
        arp = {**sent, "eth_type": ETH_TYPE_ARP, "arp_sha": mac}
        flows.append(flow(CLASSIFY, PRIO_PORTSEC_DROP, {**port, "eth_type": ETH_TYPE_ARP}, (),
                          COOKIE_PORTSEC))
        if ips is None:
            flows.append(flow(CLASSIFY, PRIO_PORTSEC_ALLOW, arp, actions, COOKIE_PORTSEC))
            continue
        for eth_type in (ETH_TYPE_IPV4, ETH_TYPE_IPV6):
            flows.append(flow(CLASSIFY, PRIO_PORTSEC_DROP, {**port, "eth_type": eth_type}, (),
                              COOKIE_PORTSEC))
        for ip in sorted(ips):
            value = _ipv4_match(ip)
            flows.append(flow(CLASSIFY, PRIO_PORTSEC_ALLOW, {**arp, "arp_spa": value}, actions,
                              COOKIE_PORTSEC))
            flows.append(flow(CLASSIFY, PRIO_PORTSEC_ALLOW,
                              {**sent, "eth_type": ETH_TYPE_IPV4, "ipv4_src": value}, actions,
                              COOKIE_PORTSEC))
    return flows


def _pinned_elsewhere(host: str, topo: Topology, members: list[_Member],
                      secured: Mapping[str, Mapping]) -> list[Flow]:
    """CLASSIFY: a docker0 endpoint's MAC sending into an unchecked port of the default
    tenant that is not its own host's docker0 link: drop (see the module docstring)."""
    unchecked = [m for m in members if m.tenant == DEFAULT_TENANT.name and not m.uplink
                 and not secured.get(m.port)]
    out = []
    for b in topo.endpoint_bindings if unchecked else ():
        for m in unchecked:
            if (b.host, b.port) != (host, m.port):
                vid = 0 if m.vlan is None else OFPVID_PRESENT | m.vlan
                out.append(flow(CLASSIFY, PRIO_PIN_DROP,
                                {"in_port": m.ofport, "vlan_vid": vid, "eth_src": b.mac}, (),
                                COOKIE_PORTSEC))
    return out


def _ipv4_match(ip: str) -> str | tuple[str, str]:
    net = ipaddress.IPv4Network(ip)
    return str(net.network_address) if net.prefixlen == 32 else (str(net.network_address),
                                                                   str(net.netmask))


def _classify_tagged(ofport: int, vni: int, vlan: int, meter: int | None = None,
                     uplink: bool = False) -> Flow:
    """A trunk's tagged tenant: its VLAN, popped; the learned flow pushes it back."""
    return flow(CLASSIFY, PRIO_CLASSIFY, {"in_port": ofport, "vlan_vid": OFPVID_PRESENT | vlan},
                [*_metered(meter), ("apply", (("pop_vlan",), *_learn_local(vni, ofport, vlan))),
                 *_enter_tenant(vni, from_tunnel=False, uplink=uplink)],
                COOKIE_VLAN)


def _classify_tunnel(ofport: int, vni: int) -> Flow:
    return flow(CLASSIFY, PRIO_CLASSIFY, {"in_port": ofport, "tunnel_id": vni},
                [("apply", _learn_tunnel(vni, ofport)), *_enter_tenant(vni, from_tunnel=True)],
                COOKIE_ISOLATION)


# Endpoint flows are most of a switch's flows (one per local endpoint, two per remote
# one, on every switch): they are built directly in ``flow()``'s normal form (match
# items sorted, MAC lowercase as ``Binding`` keeps it, metadata masked) instead of
# normalising each; tests/unit/test_pipeline.py checks they equal ``flow()``'s.
def _endpoint_local(vni: int, mac: str, ofport: int) -> Flow:
    return Flow(L2, PRIO_ENDPOINT, (("eth_dst", mac), ("metadata", (vni & VNI_MASK, VNI_MASK))),
                (("apply", (("output", ofport),)),), COOKIE_ENDPOINT)


def _endpoint_remote(vni: int, mac: str, tunnel_ofport: int,
                     to_tunnel: tuple | None = None) -> list[Flow]:
    """Frames from local ports tunnel to the MAC's host; from tunnels, drop (never relay).

    ``to_tunnel``: the instructions toward ``tunnel_ofport``, shared by every MAC
    behind that peer (built once per peer and tenant by the caller)."""
    if to_tunnel is None:
        to_tunnel = (("apply", _to_tunnel(vni, tunnel_ofport)),)
    from_local, from_tunnel_drop = _remote_endpoint_parts(vni, mac)
    return [Flow(L2, PRIO_ENDPOINT, from_local, to_tunnel, COOKIE_ENDPOINT), from_tunnel_drop]


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


def _to_tunnel(vni: int, tunnel_ofport: int) -> tuple[tuple, ...]:
    return (("set_field", "tunnel_id", vni), ("output", tunnel_ofport))


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
                [*_metered(rule.id if rule.kbps is not None else None),
                 ("apply", tuple(actions)), ("goto", L2)],
                COOKIE_QOS)


def _flood_group(group_id: int, vni: int, from_tunnel: bool,
                 buckets: list[tuple]) -> tuple[Flow, Group]:
    return (flow(FLOOD, PRIO_FLOOD, tenant_match(vni, from_tunnel),
                 [("apply", (("group", group_id),))], COOKIE_ISOLATION),
            Group(group_id, "all", tuple(buckets)))


def desired_state(host: str, topo: Topology, ports: Mapping[str, int],
                  tunnels: Mapping[str, str]) -> SwitchState:
    """Desired flows, groups and meters of ``host``'s switch.

    ``ports``: port name -> OpenFlow port number (port-desc of this switch);
    ``tunnels``: peer host -> name of this host's tunnel port toward it.  Ports
    not (yet) in ``ports`` are skipped, so the result follows the live switch.
    """
    # every live port of this host, once for each tenant it carries
    members = sorted(_members(host, topo, ports), key=lambda m: (m.tenant, m.ofport))
    here = set(topo.tenants_on(host))
    peer_ofport = {peer: ports[name] for peer, name in tunnels.items()
                   if name in ports and peer != host}
    # A peer's frames of a tenant matter only if both ends have it.
    shared = {peer: topo.tenants_on(peer) & here for peer in peer_ofport}

    flows: list[Flow] = [*_table_misses(), *_drop_tagged(), _drop_group_source()]
    groups: list[Group] = []
    meters: list[Meter] = []

    port_meter: dict[str, int] = {}
    live = {m.port for m in members}
    for x in topo.limits:
        if x.host == host and x.port in live:
            port_meter[x.port] = x.id
            meters.append(limit_meter(x))
    secured = {b.port: b.source_addresses() for b in topo.bindings_on(host)}
    for m in members:
        vni = topo.tenant(m.tenant).vni
        meter = port_meter.get(m.port)
        if m.vlan is not None:
            flows.append(_classify_tagged(m.ofport, vni, m.vlan, meter, m.uplink))
        elif secured.get(m.port):
            flows.extend(_classify_secured(m.ofport, vni, secured[m.port], meter))
        else:
            flows.append(_classify_untagged(m.ofport, vni, meter, m.uplink))
    flows.extend(_pinned_elsewhere(host, topo, members, secured))
    for peer in sorted(peer_ofport):
        for name in sorted(shared[peer]):
            flows.append(_classify_tunnel(peer_ofport[peer], topo.tenant(name).vni))

    vnis = {name: topo.tenant(name).vni for name in here}
    to_tunnel: dict[tuple[int, int], tuple] = {}
    for b in _endpoints(topo, here):
        vni = vnis[b.tenant]  # type: ignore[index]  # access bindings have a tenant
        if b.host == host and b.port in ports:
            flows.append(_endpoint_local(vni, b.mac, ports[b.port]))
        elif b.host in peer_ofport:
            tun = peer_ofport[b.host]
            instrs = to_tunnel.get((vni, tun))
            if instrs is None:
                instrs = to_tunnel[(vni, tun)] = (("apply", _to_tunnel(vni, tun)),)
            flows.extend(_endpoint_remote(vni, b.mac, tun, instrs))

    local = topo.local_tenants(host)
    for x in topo.limits:
        if x.host == host and x.tenant in local:
            flows.append(_tenant_limit(topo.tenant(x.tenant).vni, x.id))
            meters.append(limit_meter(x))
    for rule in topo.rules:
        if rule.tenant in local:
            flows.append(rule_flow(topo.tenant(rule.tenant).vni, rule))
            if rule.kbps is not None:
                meters.append(Meter(rule.id, rule.kbps, rule.burst_kb))

    tenant_meter = {x.tenant: x.id for x in topo.limits
                    if x.host == host and x.tenant in local}
    for name in sorted(topo.acl_tenants & here):
        flows.extend(acl_flows(topo.tenant(name).vni,
                               [r for r in topo.acls if r.tenant == name],
                               name in topo.acl_deny, tenant_meter.get(name)))

    for name in sorted(here):
        vni = topo.tenant(name).vni
        local_out = [to_port(m.ofport, m.vlan) for m in members if m.tenant == name]
        tunnel_out = [_to_tunnel(vni, peer_ofport[peer]) for peer in sorted(peer_ofport)
                      if name in shared[peer]]
        from_local, from_tunnel = flood_group_ids(vni)
        for gid, is_tunnel, buckets in ((from_local, False, local_out + tunnel_out),
                                        (from_tunnel, True, local_out)):
            if buckets:   # a group with no bucket is a drop: leave it to table-miss
                f, g = _flood_group(gid, vni, is_tunnel, buckets)
                flows.append(f)
                groups.append(g)

    return SwitchState(frozenset(flows), frozenset(groups), frozenset(meters))


def _acl_pass(priority: int, vni: int, match: Mapping, meter: int | None,
              apply: tuple = (), cookie: int = acl_cookie()) -> list[Flow]:
    """On to QOS; with the tenant's meter for local senders (one more flow, above)."""
    base = {**tenant_match(vni), "vlan_vid": 0, **match}
    out = [flow(POLICY, priority, base, [("apply", apply), ("goto", QOS)], cookie)]
    if meter is not None:
        out.append(flow(POLICY, priority + 1, {**base, **local_sender_match(vni)},
                        [("meter", meter), ("apply", apply), ("goto", QOS)], cookie))
    return out


def _ct_state(bits: int) -> dict[str, tuple[int, int]]:
    return {"ct_state": (CT_TRK | bits, CT_TRK | bits)}


def acl_rule_flow(vni: int, rule: AclRule, meter: int | None) -> Flow:
    """POLICY: a rule deciding a new connection a local port opens."""
    match = {**local_sender_match(vni), "vlan_vid": 0, **_ct_state(CT_NEW), **rule.oxm()}
    prio = PRIO_ACL_RULE_BASE + rule.priority
    if rule.action == "drop":
        return flow(POLICY, prio, match, (), acl_cookie(rule.id))
    return flow(POLICY, prio, match,
                [*_metered(meter), ("apply", (("ct", True, vni, None),)), ("goto", QOS)],
                acl_cookie(rule.id))


def acl_flows(vni: int, rules: list[AclRule], deny: bool, meter: int | None) -> list[Flow]:
    """A tenant's stateful security policy on one host (see the module docstring)."""
    ip = {"eth_type": ETH_TYPE_IP}
    commit = (("ct", True, vni, None),)
    out = [
        flow(POLICY, PRIO_ACL_TRACK, {**tenant_match(vni), "vlan_vid": 0, **ip,
                                      "ct_state": (0, CT_TRK)},
             [("apply", (("ct", False, vni, POLICY),))], acl_cookie()),
        flow(POLICY, PRIO_ACL_TRACK, {**tenant_match(vni), "vlan_vid": 0, **ip,
                                      **_ct_state(CT_INV)}, (), acl_cookie()),
        *_acl_pass(PRIO_ACL_EST, vni, {**ip, **_ct_state(CT_EST)}, meter),
        *_acl_pass(PRIO_ACL_REL, vni, {**ip, **_ct_state(CT_REL)}, meter),
    ]
    for arrived in ({"metadata": (vni | FROM_TUNNEL, TENANT_MASK)},
                    {"metadata": (vni | FROM_UPLINK, SENDER_MASK)}):
        out.append(flow(POLICY, PRIO_ACL_REMOTE_NEW,
                        {**arrived, "vlan_vid": 0, **ip, **_ct_state(CT_NEW)},
                        [("apply", commit), ("goto", QOS)], acl_cookie()))
    out += [acl_rule_flow(vni, r, meter) for r in rules]
    new_local = {**local_sender_match(vni), "vlan_vid": 0, **ip, **_ct_state(CT_NEW)}
    if deny:
        out.append(flow(POLICY, PRIO_ACL_RULE_BASE, new_local, (), acl_cookie()))
        out += _acl_pass(PRIO_ACL_TRACK, vni, {"eth_type": ETH_TYPE_ARP_}, meter)
        out.append(flow(POLICY, PRIO_ACL_DENY_ALL, tenant_match(vni), (), acl_cookie()))
    else:
        out.append(flow(POLICY, PRIO_ACL_RULE_BASE, new_local,
                        [*_metered(meter), ("apply", commit), ("goto", QOS)], acl_cookie()))
    return out


class _Member(NamedTuple):
    """A live port of the host carrying one tenant."""

    tenant: str
    ofport: int
    vlan: int | None          # the tenant's tag on this port; None: untagged
    port: str
    uplink: bool


def _members(host: str, topo: Topology, ports: Mapping[str, int]) -> list[_Member]:
    """Every (tenant, port) pair of the live ports of ``host``."""
    out = []
    for b in topo.bindings_on(host):
        if b.port not in ports:
            continue
        if b.tenant is not None:
            out.append(_Member(b.tenant, ports[b.port], None, b.port, b.uplink))
        out.extend(_Member(name, ports[b.port], topo.tenant(name).vlan, b.port, b.uplink)
                   for name in b.trunk)
    return out


def _endpoints(topo: Topology, tenants: set[str]) -> list[Binding]:
    """Access bindings with a known MAC, of tenants present here, and docker0 endpoints."""
    return [b for b in (*topo.bindings, *topo.endpoint_bindings)
            if b.mac and b.mode == ACCESS and b.tenant in tenants]
