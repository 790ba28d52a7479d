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

Metadata layout (written in CLASSIFY, read by every later table)::

    bits  0-23  tenant VNI                                   (VNI_MASK)
    bits 24-31  reserved, always 0
    bit     32  FROM_TUNNEL: the frame came from a peer host (split horizon)
    bit     33  FROM_UPLINK: the frame came in on a VLAN-transport uplink
                (another host sent it); only QoS looks at it

Priorities are listed here per table, whichever feature writes them, because
flows of different features in one table outrank each other by them.  Tables
0..99 are weft's (a new one: one line in ``TABLES``); 100..199 are the
operators' (``controller.opflows``), never reached from these.
"""
from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "Table", "TABLES", "CLASSIFY", "POLICY", "QOS", "L2", "FLOOD",
    "VNI_MASK", "FROM_TUNNEL", "FROM_UPLINK", "TENANT_MASK", "SENDER_MASK",
    "tenant_match", "local_sender_match", "PRIO_MISS", "PRIO_DROP_GROUP_SRC",
    "PRIO_PORTSEC_ALLOW", "PRIO_PORTSEC_DROP", "PRIO_PIN_DROP", "PRIO_CLASSIFY",
    "PRIO_ACL_TRACK", "PRIO_ACL_EST",
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


CLASSIFY, POLICY, QOS, L2, FLOOD = 0, 1, 2, 3, 4

TABLES = (
    Table(CLASSIFY, "classify", "port (+ VLAN, + tunnel id) -> tenant metadata; learning; "
          "port security; port rate limits", None),
    Table(POLICY, "policy", "tag drops; tenant ACLs (conntrack); tenant rate limits", QOS),
    Table(QOS, "qos", "per-flow QoS rules (meter, DSCP, queue)", L2),
    Table(L2, "l2", "known destination MACs: static endpoints, learned MACs", FLOOD),
    Table(FLOOD, "flood", "unknown, broadcast, multicast -> the tenant's flood group", None),
)

# --- metadata: written in CLASSIFY, read by every later table ------------------------
VNI_MASK = 0xFFFFFF
FROM_TUNNEL = 1 << 32
FROM_UPLINK = 1 << 33
TENANT_MASK = FROM_TUNNEL | VNI_MASK
SENDER_MASK = TENANT_MASK | FROM_UPLINK     # vni under this mask: sent by a local port


def tenant_match(vni: int, from_tunnel: bool | None = None) -> dict[str, tuple[int, int]]:
    """Match on the tenant's metadata; ``from_tunnel`` None means either ingress."""
    if from_tunnel is None:
        return {"metadata": (vni, VNI_MASK)}
    return {"metadata": (vni | (FROM_TUNNEL if from_tunnel else 0), TENANT_MASK)}


def local_sender_match(vni: int) -> dict[str, tuple[int, int]]:
    """Frames of the tenant sent by a local port of this host (not a tunnel, not an uplink)."""
    return {"metadata": (vni, SENDER_MASK)}


# --- priorities, per table --------------------------------------------------------------
PRIO_MISS = 0                # every table: its table-miss flow

# CLASSIFY
PRIO_DROP_GROUP_SRC = 1000   # multicast/broadcast source MAC, any port (port security)
PRIO_PORTSEC_ALLOW = 120     # a bound port's ARP/IP from its addresses (port security)
PRIO_PORTSEC_DROP = 110      # a bound port's ARP/IP not from its addresses (port security)
PRIO_PIN_DROP = 105          # a docker0 endpoint's MAC entering elsewhere (port security)
PRIO_CLASSIFY = 100          # port (+ VLAN, + tunnel id) -> tenant

# POLICY
PRIO_ACL_TRACK = 30000       # untracked IPv4 -> conntrack; invalid; ARP (deny)   (ACLs)
PRIO_ACL_EST = 29990         #                                                    (ACLs)
PRIO_ACL_REL = 29980         #                                                    (ACLs)
PRIO_ACL_REMOTE_NEW = 29970  # a new connection decided on the host it entered    (ACLs)
PRIO_ACL_RULE_BASE = 10000   # a rule's flow is this + rule.priority (1..10000)   (ACLs)
PRIO_DROP_TAGGED = 100       # a tag still visible after CLASSIFY                 (VLANs)
PRIO_DROP_INNER_TAG = 90     # a tag beyond OVS's vlan-limit                      (VLANs)
PRIO_ACL_DENY_ALL = 20       # default-deny catch-all (above the tenant limit's 10)  (ACLs)
PRIO_TENANT_LIMIT = 10       # a tenant's aggregate meter on this host            (QoS)

# QOS
PRIO_QOS_RULE_BASE = 1000    # a rule's flow is this + rule.priority (1..1000)

# L2
PRIO_ENDPOINT = 100          # a bound endpoint's static MAC
PRIO_LEARNED = 10            # written by the switch's learn action

# FLOOD
PRIO_FLOOD = 100             # the tenant's flood group
