"""The pipeline's layout, declared once: its tables, the metadata they pass on, the priorities.

Every feature module writes into these tables and nothing else names a table
number.  A frame walks the tables in order; a table-miss goes where its
``Table.miss`` says (``controller.pipeline.skeleton`` writes those flows)::

    CLASSIFY (0)  which tenant is this frame in? in_port (+ tunnel_id) -> metadata;
                  learn where its source MAC lives; anything unclassified drops.
                  A port rate limit is a meter instruction on the port's flows.
    POLICY   (1)  drops frames still tagged; tenant ACLs (conntrack); a tenant's
                  aggregate rate limit on this host (meter); table-miss goes on to QOS.
    QOS      (2)  per-flow QoS rules of the tenant (meter, DSCP, queue);
                  table-miss goes on to L2.
    L2       (3)  known destination MAC of the tenant -> one port or one tunnel
                  (static endpoints, priority 100; learned, priority 10).
    FLOOD    (4)  unknown/broadcast/multicast -> the tenant's flood group.
    GATEWAY  (5)  frames a local port sent to its network's gateway (L2 diverts them):
                  ARP and ICMP echo answered in place, IPv4 on to FIB.
    FIB      (6)  routing domain + ipv4_dst prefix -> next hop (dec_ttl, MACs, network),
                  or out of the tenant's gateway port (egress).
    ROUTED   (7)  after FIB: back into the pipeline with ``resubmit`` (POLICY for frames
                  from the gateway port, else L2), as a frame of the destination network.

The routing tables come after FLOOD (OpenFlow gotos only go forward, and renumbering
L2 would drop every learned MAC); ROUTED returns with ``resubmit``.  "Tenant" in this
module's older names means a segment: a network (its VNI), which a tenant may have
several of (``controller.model.Tenant``); the tenant itself is the routing domain.

Metadata layout (written in CLASSIFY, read by every later table)::

    bits  0-23  network VNI                                  (VNI_MASK)
    bits 24-31  reserved, always 0
    bit     32  FROM_TUNNEL: the frame came from a peer host (split horizon)
    bit     33  FROM_UPLINK: the frame came in on a VLAN-transport uplink
                (another host sent it); only QoS looks at it
    bit     34  FROM_GATEWAY: the frame came out of the host stack through the
                tenant's gateway port wx-<id> (egress replies, published ports)
    bits 40-63  the routing domain: the tenant id (the tenant's VNI)  (DOMAIN_MASK);
                written for networks with a gateway only (0: does not route), so a
                network without one keeps the flows it had before routing existed

FIB writes the destination network's VNI (bits 0-23 only) when it routes.

Priorities are listed here per table, whichever feature writes them, because
flows of different features in one table outrank each other by them.  Tables
0..99 are weft's (a new one: one line in ``TABLES``); 100..199 are the
operators' (``controller.opflows``), never reached from these.
"""
from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "Table", "TABLES", "CLASSIFY", "POLICY", "QOS", "L2", "FLOOD", "GATEWAY", "FIB", "ROUTED",
    "VNI_MASK", "FROM_TUNNEL", "FROM_UPLINK", "FROM_GATEWAY", "DOMAIN_SHIFT", "DOMAIN_MASK",
    "NETWORK_MASK", "TENANT_MASK", "SENDER_MASK", "CLASSIFY_MASK", "domain_bits",
    "network_match", "tenant_match", "local_sender_match", "domain_match",
    "PRIO_ROUTED_FROM_TUNNEL", "PRIO_DROP_GATEWAY_SRC", "PRIO_GATEWAY_PORT",
    "PRIO_GATEWAY_GUARD", "PRIO_GATEWAY_ARP", "PRIO_TO_GATEWAY", "PRIO_GATEWAY_ARP_REMOTE",
    "PRIO_TO_GATEWAY_REMOTE", "PRIO_GW_TRUNK", "PRIO_GW_ANSWER", "PRIO_GW_IP_DROP",
    "PRIO_GW_NO_IPV6", "PRIO_GW_FORWARD", "PRIO_FIB_BASE", "FIB_CONNECTED", "FIB_STATIC", "FIB_EGRESS",
    "fib_priority", "PRIO_ROUTED_FROM_GATEWAY", "PRIO_ROUTED", "PRIO_MISS", "PRIO_DROP_GROUP_SRC",
    "PRIO_PORTSEC_ALLOW", "PRIO_PORTSEC_DROP", "PRIO_PORTSEC_ND_ALLOW", "PRIO_PORTSEC_ND_DROP",
    "PRIO_PIN_DROP", "PRIO_CLASSIFY",
    "PRIO_ACL_TRACK", "PRIO_ACL_ND", "PRIO_ACL_EST", "PRIO_ACL_DNS",
    "PRIO_ACL_REL", "PRIO_ACL_REMOTE_NEW", "PRIO_ACL_RULE_BASE", "PRIO_DROP_TAGGED",
    "PRIO_DROP_INNER_TAG", "PRIO_ACL_DENY_ALL", "PRIO_TENANT_LIMIT", "PRIO_QOS_RULE_BASE",
    "PRIO_ENDPOINT", "PRIO_LEARNED", "PRIO_FLOOD",
]


class Table(NamedTuple):
    """One table of weft's pipeline: its id, name, what it holds, where a miss goes."""

    id: int
    name: str
    holds: str
    miss: int | None          # table-miss: goto this table; None: drop


CLASSIFY, POLICY, QOS, L2, FLOOD, GATEWAY, FIB, ROUTED = 0, 1, 2, 3, 4, 5, 6, 7

TABLES = (
    Table(CLASSIFY, "classify", "port (+ VLAN, + tunnel id) -> tenant metadata; learning; "
          "port security; port rate limits", None),
    Table(POLICY, "policy", "tag drops; tenant ACLs (conntrack); tenant rate limits", QOS),
    Table(QOS, "qos", "per-flow QoS rules (meter, DSCP, queue)", L2),
    Table(L2, "l2", "known destination MACs: static endpoints, learned MACs", FLOOD),
    Table(FLOOD, "flood", "unknown, broadcast, multicast -> the tenant's flood group", None),
    Table(GATEWAY, "gateway", "frames to a network's gateway: ARP and ICMP echo answered, "
          "IPv4 on to FIB", None),
    Table(FIB, "fib", "routing domain + IPv4 destination prefix -> next hop", None),
    Table(ROUTED, "routed", "routed frames back into POLICY (from the gateway port) or L2",
          None),
)

# --- metadata: written in CLASSIFY, read by every later table ------------------------
VNI_MASK = 0xFFFFFF
FROM_TUNNEL = 1 << 32
FROM_UPLINK = 1 << 33
FROM_GATEWAY = 1 << 34
DOMAIN_SHIFT = 40
DOMAIN_MASK = 0xFFFFFF << DOMAIN_SHIFT
NETWORK_MASK = FROM_TUNNEL | VNI_MASK       # the segment and its ingress side
TENANT_MASK = NETWORK_MASK                  # its older name (a tenant was one segment)
SENDER_MASK = NETWORK_MASK | FROM_UPLINK    # vni under this mask: sent by a local port
CLASSIFY_MASK = SENDER_MASK | DOMAIN_MASK   # what CLASSIFY writes at most


def domain_bits(tenant_id: int) -> int:
    """The metadata bits of routing domain (tenant id) ``tenant_id``."""
    return tenant_id << DOMAIN_SHIFT & DOMAIN_MASK


def network_match(vni: int, from_tunnel: bool | None = None) -> dict[str, tuple[int, int]]:
    """Match on the network's metadata; ``from_tunnel`` None means either ingress."""
    if from_tunnel is None:
        return {"metadata": (vni, VNI_MASK)}
    return {"metadata": (vni | (FROM_TUNNEL if from_tunnel else 0), NETWORK_MASK)}


tenant_match = network_match                # its older name


def domain_match(tenant_id: int) -> dict[str, tuple[int, int]]:
    """Frames of routing domain ``tenant_id`` (any of its networks, or its gateway port)."""
    return {"metadata": (domain_bits(tenant_id), DOMAIN_MASK)}


def local_sender_match(vni: int) -> dict[str, tuple[int, int]]:
    """Frames of the tenant sent by a local port of this host (not a tunnel, not an uplink)."""
    return {"metadata": (vni, SENDER_MASK)}


# --- priorities, per table --------------------------------------------------------------
PRIO_MISS = 0                # every table: its table-miss flow

# CLASSIFY
PRIO_ROUTED_FROM_TUNNEL = 1001  # a peer's routed frame: src = the network's gateway MAC  (routing)
PRIO_DROP_GATEWAY_SRC = 1000    # reserved gateway/next-hop MACs as source, any port   (routing)
PRIO_DROP_GROUP_SRC = 1000   # multicast/broadcast source MAC, any port (port security)
PRIO_PORTSEC_ND_ALLOW = 130  # a bound port's NS/NA/DAD for its own addresses (port security)
PRIO_PORTSEC_ND_DROP = 125   # a bound port's RA, redirect, other NS/NA (port security)
PRIO_PORTSEC_ALLOW = 120     # a bound port's ARP/IP from its addresses (port security)
PRIO_PORTSEC_DROP = 110      # a bound port's ARP/IP not from its addresses (port security)
PRIO_PIN_DROP = 105          # a docker0 endpoint's MAC entering elsewhere (port security)
PRIO_CLASSIFY = 100          # port (+ VLAN, + tunnel id) -> tenant
PRIO_GATEWAY_PORT = 100      # wx-<id> -> the tenant's routing domain, on to FIB   (egress)

# POLICY
PRIO_ACL_ND = 30010         # IPv6 Neighbour Discovery passes untracked         (ACLs)
PRIO_ACL_TRACK = 30000       # untracked IPv4 -> conntrack; invalid; ARP (deny)   (ACLs)
PRIO_ACL_EST = 29990         #                                                    (ACLs)
PRIO_ACL_REL = 29980         #                                                    (ACLs)
PRIO_ACL_REMOTE_NEW = 29970  # a new connection decided on the host it entered    (ACLs)
PRIO_ACL_DNS = 29960         # a query to the agent's resolver (docs/dns.md)      (ACLs)
PRIO_ACL_RULE_BASE = 10000   # a rule's flow is this + rule.priority (1..10000)   (ACLs)
PRIO_DROP_TAGGED = 100       # a tag still visible after CLASSIFY                 (VLANs)
PRIO_DROP_INNER_TAG = 90     # a tag beyond OVS's vlan-limit                      (VLANs)
PRIO_ACL_DENY_ALL = 20       # default-deny catch-all (above the tenant limit's 10)  (ACLs)
PRIO_TENANT_LIMIT = 10       # a tenant's aggregate meter on this host            (QoS)

# QOS
PRIO_QOS_RULE_BASE = 1000    # a rule's flow is this + rule.priority (1..1000)

# L2
PRIO_GATEWAY_GUARD = 210       # ARP claiming a gateway's IP: drop                  (gateway)
PRIO_GATEWAY_ARP = 205         # a local port's ARP request for its gateway -> GATEWAY
PRIO_TO_GATEWAY = 200          # a local port's frame to its gateway MAC -> GATEWAY
PRIO_GATEWAY_ARP_REMOTE = 195  # the same from a tunnel or uplink: drop (routing is at the
PRIO_TO_GATEWAY_REMOTE = 190   # source host; the gateway's ARP never crosses hosts)
PRIO_ENDPOINT = 100          # a bound endpoint's static MAC
PRIO_LEARNED = 10            # written by the switch's learn action

# FLOOD
PRIO_FLOOD = 100             # the tenant's flood group

# GATEWAY
PRIO_GW_TRUNK = 300          # ARP/echo answers to a trunk's tagged network (push the tag)
PRIO_GW_ANSWER = 200         # ARP reply, ICMP echo reply for a gateway IP, out IN_PORT
PRIO_GW_IP_DROP = 150        # any other IP to one of the tenant's gateway IPs: drop
PRIO_GW_NO_IPV6 = 20         # IPv6 from a dual-stack network without gateway6: drop
PRIO_GW_FORWARD = 10         # IPv4 -> FIB

# FIB: PRIO_FIB_BASE + 4 * prefix length + kind, so the longest prefix wins, and at one
# length a connected subnet or host route beats a static route beats egress
PRIO_FIB_BASE = 1000
FIB_CONNECTED, FIB_STATIC, FIB_EGRESS = 3, 1, 0


def fib_priority(prefix_len: int, kind: int) -> int:
    """The FIB priority of a ``prefix_len`` route of ``kind`` (FIB_CONNECTED, ...)."""
    return PRIO_FIB_BASE + 4 * prefix_len + kind


# ROUTED
PRIO_ROUTED_FROM_GATEWAY = 100  # from the gateway port: resubmit(,POLICY) (ACLs, QoS)
PRIO_ROUTED = 10                # otherwise resubmit(,L2)
