"""OpenFlow state as plain values, cookie ownership, and the desired-vs-actual diff.

A switch's state is a set of ``Flow``, ``Group`` and ``Meter`` values.  The
pipeline computes the desired set, ``controller.ofmsg`` reads the actual one
back from flow/group/meter stats in the same normal form, and ``diff`` says
what to send, so a controller restart with nothing changed sends nothing
(hitless).

Instructions are tuples, kept in OpenFlow 1.3 execution order (the order OVS
echoes them): ``("meter", id)``, ``("apply", (action, ...))``,
``("write_metadata", value, mask)``, ``("goto", table)``.  Empty = drop.
Actions: ``("output", port)`` (port OFPP_IN_PORT: back where the frame came from),
``("set_field", field, value)`` (e.g.
``("set_field", "ip_dscp", 46)``: the 6-bit DSCP), ``("set_queue", queue_id)``,
``("group", id)``, ``("push_vlan", ethertype)``, ``("pop_vlan",)``,
``("learn", LearnSpec)``, ``("ct", commit, zone, table)`` (OVS conntrack:
``ct(commit?, zone=Z, table=T?)``; ``table`` None means no recirculation,
the frame goes on with this flow's instructions), ``("dec_ttl",)`` (IPv4 TTL - 1; a
frame with TTL 0 or 1 stops there: dropped in the datapath, no packet-in),
``("move", src, dst)`` (copy whole field ``src`` into ``dst``: OVS
``move:src[]->dst[]``), ``("resubmit", table)`` (look the frame up in ``table``, any
table, then go on with this flow's actions).

``ct_state`` matches are ``(bits, mask)`` of the ``CT_*`` bits.

Match values: ints, lowercase MAC strings, dotted IPv4 strings; masked fields
are ``(value, mask)`` with the mask applied to the value, and a full mask is
written as the plain value (the switch echoes it that way).

VLAN values are OpenFlow 1.3 OXM ``vlan_vid``: ``0x1000 | vid`` for a tag
(OFPVID_PRESENT), ``0`` for "no tag" (ovs-ofctl shows it as
``vlan_tci=0x0000/0x1fff``), ``(0x1000, 0x1000)`` for "any tag".
``("set_field", "vlan_vid", v)`` always carries OFPVID_PRESENT (OF1.2+ requires
it), so ``flow()`` adds the bit if a caller left it out.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from controller.model import MAX_METER_ID

__all__ = [
    "COOKIE_PREFIX", "COOKIE_BASE", "COOKIE_ISOLATION", "COOKIE_ENDPOINT",
    "COOKIE_LEARNED", "COOKIE_VLAN", "COOKIE_QOS", "COOKIE_ACL", "COOKIE_PORTSEC",
    "COOKIE_FEATURE_MASK", "OWNED_FEATURE_COOKIES", "feature_of",
    "LearnSpec", "Flow", "Group", "Meter", "SwitchState", "Delta", "flow", "diff",
    "apply_delta", "owns_group", "owns_meter", "MatchValue", "normal_action",
    "COOKIE_OPERATOR", "COOKIE_STAMP", "COOKIE_GATEWAY", "COOKIE_ROUTE", "COOKIE_EGRESS",
    "acl_cookie", "acl_rule_of", "CT_NEW", "CT_EST",
    "CT_REL", "CT_RPL",
    "CT_INV", "CT_TRK",
]

# --- cookies: bits 48-63 say "weft", bits 40-47 name the feature ---------------
COOKIE_PREFIX = 0x5746 << 48                # "WF"
_FEATURE_SHIFT = 40
_FEATURES = {1: "base", 2: "isolation", 3: "endpoint", 4: "learned", 5: "vlan", 6: "qos", 7: "acl",
             8: "portsec", 9: "operator", 10: "stamp", 11: "gateway", 12: "route", 13: "egress"}


def _cookie(feature_id: int) -> int:
    return COOKIE_PREFIX | feature_id << _FEATURE_SHIFT


COOKIE_BASE = _cookie(1)          # table-miss flows: the pipeline skeleton
COOKIE_ISOLATION = _cookie(2)     # classify, flood: what keeps tenants apart
COOKIE_ENDPOINT = _cookie(3)      # static MACs of bound endpoints
COOKIE_LEARNED = _cookie(4)       # written by the switch's learn action, never by us
COOKIE_VLAN = _cookie(5)          # trunk ports, tag checks
COOKIE_QOS = _cookie(6)           # QoS: tenant-aggregate limits, per-flow rules
COOKIE_ACL = _cookie(7)           # tenant ACLs; the low 32 bits: the rule id (0: not a rule)
COOKIE_OPERATOR = _cookie(9)      # operator flows (REST, ofctl_rest); low bits: the flow id
COOKIE_STAMP = _cookie(10)        # the store-epoch stamp (controller.sync); low bits: the epoch
COOKIE_GATEWAY = _cookie(11)      # distributed gateway: ARP/echo answers, gateway guards
COOKIE_ROUTE = _cookie(12)        # FIB and ROUTED; low bits: the tenant id (0: shared rows)
COOKIE_EGRESS = _cookie(13)       # the tenants' gateway ports (wx-<id>): egress, its replies
_ACL_ID_MASK = (1 << 32) - 1


def acl_cookie(rule_id: int = 0) -> int:
    """The cookie of an ACL flow: a rule's own (counters per rule), or 0 for the skeleton."""
    return COOKIE_ACL | (rule_id & _ACL_ID_MASK)


def acl_rule_of(cookie: int) -> int | None:
    """The ACL rule id a cookie names; None for other flows and the ACL skeleton."""
    if feature_of(cookie) != "acl":
        return None
    return (cookie & _ACL_ID_MASK) or None


# conntrack state bits (OVS ct_state)
CT_NEW, CT_EST, CT_REL, CT_RPL, CT_INV, CT_TRK = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
COOKIE_PORTSEC = _cookie(8)       # port security: source MAC/IP/ARP checks, group-source drops
# cookie & COOKIE_FEATURE_MASK == COOKIE_X: the flow belongs to feature X (the low 40
# bits are the feature's own: learned flows carry their ingress port and tenant there)
COOKIE_FEATURE_MASK = (1 << 64) - (1 << _FEATURE_SHIFT)
# the features whose flows weft writes itself (every one but "learned"): what a sync reads
OWNED_FEATURE_COOKIES = tuple(_cookie(i) for i, name in sorted(_FEATURES.items())
                              if name != "learned")


def feature_of(cookie: int) -> str | None:
    """The weft feature owning ``cookie``; None when the flow is not ours to touch."""
    if cookie >> 48 != COOKIE_PREFIX >> 48:
        return None
    return _FEATURES.get(cookie >> _FEATURE_SHIFT & 0xFF)


# --- flows and groups -------------------------------------------------------------
MatchValue = int | str | tuple[int, int] | tuple[str, str]

_FIELD_BITS = {"metadata": 64, "arp_op": 16, "tunnel_id": 64, "eth_dst": 48, "eth_src": 48,
               "vlan_vid": 13, "in_port": 32, "eth_type": 16, "ip_proto": 8, "ip_dscp": 6,
               "tcp_src": 16, "tcp_dst": 16, "udp_src": 16, "udp_dst": 16, "ct_state": 32,
               "icmpv4_type": 8, "icmpv4_code": 8, "icmpv6_type": 8, "icmpv6_code": 8}
_MAC_FIELDS = frozenset({"eth_src", "eth_dst", "arp_sha", "arp_tha", "ipv6_nd_sll",
                         "ipv6_nd_tll"})
_IPV6_FIELDS = frozenset({"ipv6_src", "ipv6_dst", "ipv6_nd_target"})
_IPV4_FIELDS = frozenset({"ipv4_src", "ipv4_dst", "arp_spa", "arp_tpa"})
_IPV4_ALL = (1 << 32) - 1
_INSTRUCTION_ORDER = {"meter": 0, "apply": 1, "write_metadata": 2, "goto": 3}  # others last


@dataclass(frozen=True)
class LearnSpec:
    """An in-switch MAC-learning action (OVS ``learn``), described by intent.

    Each packet that runs it (re)writes one flow into ``table``: match
    ``metadata & metadata_mask == metadata`` (immediates: the learn runs in
    apply-actions, before write-metadata, so the packet's own metadata is not
    yet the tenant's) and ``eth_dst == packet eth_src``; actions: copy the
    packet's tunnel_id if ``load_tunnel_id``, tag the frame with 802.1Q VLAN
    ``vlan_vid`` (the plain 12-bit id) if not None, output to the packet's
    in_port if ``output_in_port`` (no action at all = a learned drop).  The
    tag is written as ``load:0x1000|vid->NXM_OF_VLAN_TCI[]``: on an untagged
    frame OVS pushes an 802.1Q header (the CFI bit means "tag present").

    ``limit`` > 0: OVS ``learn(limit=N)`` (NXAST_LEARN2): no new flow is
    written while ``table`` holds N or more flows with this ``cookie``, which
    is what bounds the MACs one ingress can make a switch learn.
    """

    table: int
    priority: int
    idle_timeout: int
    cookie: int
    metadata: int
    metadata_mask: int
    load_tunnel_id: bool = False
    output_in_port: bool = True
    vlan_vid: int | None = None
    limit: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.limit <= 0xFFFFFFFF:
            raise ValueError(f"learn: limit {self.limit} is not a 32-bit count")
        if self.vlan_vid is not None and not 0 <= self.vlan_vid <= 0xFFF:
            raise ValueError(f"learn: vlan_vid {self.vlan_vid} is not a 12-bit VLAN id")


@dataclass(frozen=True, slots=True)
class Flow:
    """One flow entry; OpenFlow identity is (table, priority, match). Build with ``flow()``.

    Slotted: the controller holds every switch's flows (3,000,000 at 100,000 endpoints
    on 16 hosts), and a per-instance dict was most of each one's memory."""

    table: int
    priority: int
    match: tuple[tuple[str, MatchValue], ...]
    instructions: tuple
    cookie: int
    idle_timeout: int = 0

    @property
    def identity(self) -> tuple[int, int, tuple]:
        return (self.table, self.priority, self.match)


def flow(table: int, priority: int, match: Mapping[str, Any], instructions: Iterable[tuple],
         cookie: int, idle_timeout: int = 0) -> Flow:
    """A ``Flow`` in the normal form the switch echoes, so equal flows compare equal.

    Match items are sorted, MACs lowercased, masks applied to values, full masks
    dropped; instructions sorted in execution order, empty apply-actions dropped.
    """
    items = tuple(sorted((k, _normal_match_value(k, v)) for k, v in match.items()))
    instrs = tuple(sorted(
        (_normal_instruction(i) for i in instructions if not (i[0] == "apply" and not i[1])),
        key=lambda i: _INSTRUCTION_ORDER.get(i[0], len(_INSTRUCTION_ORDER))))
    return Flow(table, priority, items, instrs, cookie, idle_timeout)


def _normal_match_value(field: str, value: Any) -> MatchValue:
    if field in _IPV6_FIELDS:       # compressed text, as os-ken reads it back
        return _ipv6_normal(value)
    if not isinstance(value, tuple):
        return value.lower() if isinstance(value, str) else value
    val, mask = value
    if field in _MAC_FIELDS:
        v, m = _mac_int(val), _mac_int(mask)
        return _mac_str(v) if m == (1 << 48) - 1 else (_mac_str(v & m), _mac_str(m))
    if field in _IPV4_FIELDS:
        v, m = _ipv4_int(val), _ipv4_int(mask)
        return _ipv4_str(v) if m == _IPV4_ALL else (_ipv4_str(v & m), _ipv4_str(m))
    if isinstance(val, str):
        return (val.lower(), mask.lower())
    bits = _FIELD_BITS.get(field)
    if bits is not None and mask == (1 << bits) - 1:
        return val
    return (val & mask, mask)


def _ipv6_normal(value: str | tuple[str, str]) -> str | tuple[str, str]:
    if not isinstance(value, tuple):
        return str(ipaddress.IPv6Address(value))
    v, m = (int(ipaddress.IPv6Address(x)) for x in value)
    if m == (1 << 128) - 1:
        return str(ipaddress.IPv6Address(v))
    return (str(ipaddress.IPv6Address(v & m)), str(ipaddress.IPv6Address(m)))


def _normal_instruction(instr: tuple) -> tuple:
    if instr[0] == "write_metadata":
        _, value, mask = instr
        return ("write_metadata", value & mask, mask)
    if instr[0] == "apply":
        return ("apply", tuple(normal_action(a) for a in instr[1]))
    return instr


_OFPVID_PRESENT = 0x1000


def normal_action(action: tuple) -> tuple:
    """An action in the form the switch echoes (``set_field vlan_vid`` with OFPVID_PRESENT)."""
    if action[0] == "set_field" and action[1] == "vlan_vid":
        return ("set_field", "vlan_vid", action[2] | _OFPVID_PRESENT)
    return action


def _mac_int(mac: str) -> int:
    return int(mac.replace(":", ""), 16)


def _mac_str(value: int) -> str:
    raw = f"{value:012x}"
    return ":".join(raw[i:i + 2] for i in range(0, 12, 2))


def _ipv4_int(addr: str | int) -> int:
    if isinstance(addr, int):
        return addr
    a, b, c, d = (int(x) for x in addr.split("."))
    return a << 24 | b << 16 | c << 8 | d


def _ipv4_str(value: int) -> str:
    return ".".join(str(value >> s & 0xFF) for s in (24, 16, 8, 0))


@dataclass(frozen=True)
class Group:
    """A group entry; weft uses type "all" for per-tenant flooding."""

    group_id: int
    type: str
    buckets: tuple[tuple[tuple, ...], ...]


# Flood groups are 2*vni and 2*vni+1 (see pipeline); groups carry no cookie, so
# ownership is by id range.
_GROUP_ID_LIMIT = 2 << 24


def owns_group(group_id: int) -> bool:
    """True for group ids in weft's range (groups have no cookie to say so)."""
    return 0 < group_id < _GROUP_ID_LIMIT


@dataclass(frozen=True)
class Meter:
    """An OpenFlow 1.3 meter as weft writes it: kbit/s (or packets/s), stats, one drop band.

    ``pktps``: the band's rate (``kbps``) is in packets/s and ``burst_kb`` in
    packets (flag OFPMF_PKTPS instead of OFPMF_KBPS; one unit per meter).
    ``burst_kb`` 0 means no burst flag (the switch's default bucket).
    ``unknown``: set only when read back from a switch, describing a config
    weft never writes (no stats, several bands, dscp_remark, ...); such a meter
    never equals a desired one, so the diff modifies it.
    """

    meter_id: int
    kbps: int
    burst_kb: int = 0
    unknown: str = ""
    pktps: bool = False


def owns_meter(meter_id: int) -> bool:
    """True for meter ids in weft's range, 1..MAX_METER_ID: every ordinary meter of the
    switch (meters have no cookie; above 0xffff0000 are OpenFlow's virtual meters)."""
    return 0 < meter_id <= MAX_METER_ID


@dataclass(frozen=True)
class SwitchState:
    """Everything weft cares about on one switch."""

    flows: frozenset[Flow] = frozenset()
    groups: frozenset[Group] = frozenset()
    meters: frozenset[Meter] = frozenset()


# --- diff ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Delta:
    """What to send to turn actual into desired.

    Send in this order:

    1. delete_flows (delete_strict, our cookie only);
    2. add_meters and modify_meters, add_groups and modify_groups (before the
       flows that point at them: OVS refuses a flow naming a missing meter or
       group);
    3. add_flows;
    4. delete_groups and delete_meters last (OVS also removes any flow still
       pointing at a deleted group or meter; no desired flow does);

    then a barrier.  ``add_flows`` also holds flows whose identity exists
    with other instructions/cookie/timeout: an OFPFC_ADD with an existing
    identity replaces that entry atomically, so a changed flow never has a
    gap (delete+add would).
    """

    delete_flows: tuple[Flow, ...] = ()
    add_flows: tuple[Flow, ...] = ()
    delete_groups: tuple[Group, ...] = ()
    add_groups: tuple[Group, ...] = ()
    modify_groups: tuple[Group, ...] = ()
    add_meters: tuple[Meter, ...] = ()
    modify_meters: tuple[Meter, ...] = ()
    delete_meters: tuple[Meter, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.delete_flows or self.add_flows or self.delete_groups
                    or self.add_groups or self.modify_groups or self.add_meters
                    or self.modify_meters or self.delete_meters)


def _flow_order(f: Flow) -> tuple:
    return (f.table, -f.priority, repr(f.match), f.cookie, repr(f.instructions))


def _identity_order(f: Flow) -> tuple:
    """``_flow_order`` for flows of distinct identities (the same order: their
    (table, priority, match) already differ), without the costly repr of instructions."""
    return (f.table, -f.priority, repr(f.match))


def diff(desired: SwitchState, actual: SwitchState) -> Delta:
    """The minimal, deterministic delta from ``actual`` to ``desired``.

    Never wipes: only flows with a weft cookie are deleted, only weft-range
    groups and meters go.  Flows written by the learn action are neither
    deleted nor missed, except those sitting in a table the desired flows
    use but no desired learn action writes to (left behind when the pipeline's
    tables were renumbered: they would forward around the tables now in front
    of the learned ones); when nothing desired learns, learned flows stay.
    Operator flows (``COOKIE_OPERATOR``) are never diffed: see
    ``controller.opflows.reconcile``.
    """
    # Flows equal on both sides (all of them on a switch in sync: a controller restart,
    # a periodic audit) need nothing: set intersection finds them on the hashes the
    # frozensets already hold, so only the rest is indexed by identity.  Identities
    # are unique on each side (a switch holds one entry per identity; the pipeline
    # computes one), so a flow found on both sides has no other entry to pair with.
    common = desired.flows & actual.flows
    want = {(f.table, f.priority, f.match): f for f in desired.flows - common}
    have = {(f.table, f.priority, f.match): f for f in actual.flows - common
            if feature_of(f.cookie) not in ("learned", "operator")}
    delete = [f for ident, f in have.items()
              if ident not in want and feature_of(f.cookie) is not None]
    delete += _misplaced_learned(desired, actual)
    add = [f for ident, f in want.items() if have.get(ident) != f]

    want_g = {g.group_id: g for g in desired.groups}
    have_g = {g.group_id: g for g in actual.groups}
    del_g = [g for gid, g in have_g.items() if gid not in want_g and owns_group(gid)]
    add_g = [g for gid, g in want_g.items() if gid not in have_g]
    mod_g = [g for gid, g in want_g.items() if gid in have_g and have_g[gid] != g]

    want_m = {m.meter_id: m for m in desired.meters}
    have_m = {m.meter_id: m for m in actual.meters}
    del_m = [m for mid, m in have_m.items() if mid not in want_m and owns_meter(mid)]
    add_m = [m for mid, m in want_m.items() if mid not in have_m]
    mod_m = [m for mid, m in want_m.items() if mid in have_m and have_m[mid] != m]

    by_id = lambda g: g.group_id  # noqa: E731
    by_meter = lambda m: m.meter_id  # noqa: E731
    return Delta(
        delete_flows=tuple(sorted(delete, key=_flow_order)),
        add_flows=tuple(sorted(add, key=_identity_order)),
        delete_groups=tuple(sorted(del_g, key=by_id)),
        add_groups=tuple(sorted(add_g, key=by_id)),
        modify_groups=tuple(sorted(mod_g, key=by_id)),
        add_meters=tuple(sorted(add_m, key=by_meter)),
        modify_meters=tuple(sorted(mod_m, key=by_meter)),
        delete_meters=tuple(sorted(del_m, key=by_meter)),
    )


def _misplaced_learned(desired: SwitchState, actual: SwitchState) -> list[Flow]:
    """Learned flows in a table that desired flows use and no desired learn writes to."""
    learn_tables = {a[1].table for f in desired.flows for i in f.instructions
                    if i[0] == "apply" for a in i[1] if a[0] == "learn"}
    if not learn_tables:
        return []
    used = {f.table for f in desired.flows} - learn_tables
    return [f for f in actual.flows if feature_of(f.cookie) == "learned" and f.table in used]


def apply_delta(actual: SwitchState, delta: Delta) -> SwitchState:
    """What the switch holds once `delta` is applied (learned flows aside).

    Lets the controller diff a model change against what it knows the switch
    has, instead of dumping every flow again; a full read replaces it on every
    (re)connect, after any error and on the periodic audit.
    """
    if delta.delete_flows or delta.add_flows:
        by_identity = {f.identity: f for f in actual.flows}
        for f in delta.delete_flows:
            by_identity.pop(f.identity, None)
        for f in delta.add_flows:
            by_identity[f.identity] = f
        flows = frozenset(by_identity.values())
    else:                   # in sync: the same set (no re-hashing of every flow)
        flows = frozenset(actual.flows)
    groups = {g.group_id: g for g in actual.groups}
    for g in delta.delete_groups:
        groups.pop(g.group_id, None)
    for g in (*delta.add_groups, *delta.modify_groups):
        groups[g.group_id] = g
    meters = {m.meter_id: m for m in actual.meters}
    for m in delta.delete_meters:
        meters.pop(m.meter_id, None)
    for m in (*delta.add_meters, *delta.modify_meters):
        meters[m.meter_id] = m
    return SwitchState(flows, frozenset(groups.values()), frozenset(meters.values()))
