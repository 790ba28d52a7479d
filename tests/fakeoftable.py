"""A fake OpenFlow 1.3 switch (and cluster of them) that answers "where does this frame go".

In the spirit of faucet's ``clib/fakeoftable.py``: it evaluates the plain-data
``SwitchState`` the pipeline computes, so tests assert forwarding behaviour
rather than flow text.  Modelled: priorities (an ambiguous tie is an error,
since OpenFlow leaves it undefined), masked matches, goto (forward only),
write-metadata with mask, apply-actions (output, set_field, group ALL with a
per-bucket copy of the frame, push/pop vlan), and OpenFlow's rule that
output to the ingress port is dropped.

VLANs: a frame's ``vlan_vid`` is its outer 802.1Q VID (12 bits, None =
untagged) and ``vlans`` the VIDs of any inner tags, outer first.  Matching
follows OVS, which parses only ``vlan_limit`` tags (``other_config:vlan-limit``,
default 1; 0 = as many as OVS can, 2) when the frame enters and then tracks
its own actions: ``vlan_vid`` matches ``0x1000|vid`` of a parsed outer tag, 0
otherwise; a tag beyond the limit shows as ``eth_type`` 0x8100, and stays
invisible after the outer tag is popped.  ``set_field vlan_tci`` (what a
learned ``load:...->NXM_OF_VLAN_TCI[]`` does) pushes a tag onto an untagged
frame when the CFI bit is set, as OVS does.

Routing: ``dec_ttl`` decrements the frame's ``ip_ttl`` (IPv4's TTL or IPv6's hop limit,
64 when not given) and, on a
frame arriving with TTL 0 or 1, stops the flow's processing: the rest of its actions
and instructions (OVS: "processing the current set of actions then stops"), so
the frame is dropped unless an outer ``resubmit`` goes on.  ``move`` copies one
whole field into another.  ``resubmit(,T)`` looks the frame up in table T (any
table, forward or back), runs that flow's instructions there (gotos included, as
OVS does) and then goes on with the rest of the resubmitting flow's actions;
changes to the frame and its metadata stay.

``learn`` is a no-op by default.  With ``learn=True`` it installs the flow
the LearnSpec describes after the frame has been processed (as OVS does: a
learned flow is visible to later frames, never to the one that wrote it).
A ``limit`` is honoured as OVS 3.1 does (checked with ovs-ofctl on a real
switch): a flow is not written while the table already holds ``limit``
flows with the spec's cookie, unless it refreshes one of those (a MAC
moving in from another ingress at the limit keeps its old flow).

ARP fields (``arp_sha``, ``arp_spa``, ...) match only frames whose visible
``eth_type`` is 0x0806.

QoS: a ``meter`` instruction records the meter id the frame passed (meters
never drop here: rates are not modelled) and is an error when the switch has
no such meter (OVS refuses that flow).  IPv4 fields (``ip_proto``,
``ipv4_src``/``ipv4_dst`` as dotted strings, ``ip_dscp`` 0..63) match only
when the visible ``eth_type`` is 0x0800, ``tcp_*``/``udp_*`` only with
``ip_proto`` 6/17, as in OVS.  ``set_field ip_dscp`` rewrites the frame's
DSCP (an error on a non-IPv4 frame); ``set_queue`` sets its ``queue``.

Conntrack (``ct``): each switch keeps committed connections per zone, keyed
by the IPv4 or IPv6 5-tuple (ICMP, ICMPv6: addresses, type and code; the reply direction of
a query is its reply type, so an echo request the other way is new).  ``ct`` sets the frame's
``ct_state``: +trk+est for a committed connection in either direction
(+rpl for the reply direction), +trk+new otherwise; ``commit`` records it
(once the frame has been processed, as OVS does).  ``ct(table=T)``
recirculates: the frame is looked up again from table T, which may be the
current one.  ``related`` and ``invalid`` are not modelled; ``ct`` on an ICMPv6
Neighbour Discovery message is an error (OVS conntrack calls it invalid).
"""
from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from controller.flows import Flow, Group, LearnSpec, Meter, SwitchState, flow
from controller.model import Topology
from controller.pipeline import desired_state

OFPP_IN_PORT = 0xFFFFFFF8
OFPVID_PRESENT = 0x1000
ETH_TYPE_VLAN = 0x8100
ETH_TYPE_IPV4 = 0x0800
_L3_FIELDS = frozenset({"ip_proto", "ipv4_src", "ipv4_dst", "ip_dscp", "ip_ttl"})
_ARP_FIELDS = frozenset({"arp_sha", "arp_spa", "arp_tha", "arp_tpa", "arp_op"})
ETH_TYPE_ARP = 0x0806
ETH_TYPE_IPV6 = 0x86DD
# IPv6 fields match only IPv6 frames; icmpv6_* only ICMPv6 (ip_proto 58); nd_target only
# NS/NA (type 135/136), nd_sll only NS, nd_tll only NA, and an absent option is
# 00:00:00:00:00:00, as OVS extracts them
_IPV6_FIELDS = frozenset({"ipv6_src", "ipv6_dst", "icmpv6_type", "icmpv6_code",
                          "ipv6_nd_target", "ipv6_nd_sll", "ipv6_nd_tll"})
_ND_FIELDS = {"ipv6_nd_target": (135, 136), "ipv6_nd_sll": (135,), "ipv6_nd_tll": (136,)}
_L4_FIELDS = {"tcp_src": 6, "tcp_dst": 6, "udp_src": 17, "udp_dst": 17, "icmpv4_type": 1,
              "icmpv4_code": 1}
CT_NEW, CT_EST, CT_RPL, CT_TRK = 0x01, 0x02, 0x08, 0x20
# what a frame keeps when it crosses a tunnel (queue and metadata are the switch's own)
_WIRE_FIELDS = ("eth_src", "eth_dst", "eth_type", "vlan_vid", "vlans", *sorted(_L3_FIELDS),
                *sorted(_ARP_FIELDS), *sorted(_IPV6_FIELDS),
                *sorted(_L4_FIELDS))
_OVS_MAX_VLAN_HEADERS = 2        # FLOW_MAX_VLAN_HEADERS: what vlan-limit 0 means
_MAX_TABLE_HOPS = 64
_MAX_RESUBMIT_DEPTH = 64         # OVS's MAX_DEPTH of nested resubmits
DEFAULT_TTL = 64
_MAX_TUNNEL_HOPS = 16

Packet = dict[str, Any]


class FakeSwitchError(AssertionError):
    """The flows do something OpenFlow leaves undefined or forbids."""


def _as_int(value: Any) -> int:
    if isinstance(value, str) and "." in value:          # dotted IPv4
        a, b, c, d = (int(x) for x in value.split("."))
        return a << 24 | b << 16 | c << 8 | d
    if isinstance(value, str) and ":" in value and not (len(value) == 17
                                                        and value.count(":") == 5):
        return int(ipaddress.IPv6Address(value))         # IPv6 (a MAC has 5 colons)
    return int(value.replace(":", ""), 16) if isinstance(value, str) else int(value)


def _tags(pkt: Packet) -> tuple[int, ...]:
    """The frame's VIDs, outer first."""
    outer = pkt.get("vlan_vid")
    return () if outer is None else (outer, *pkt.get("vlans", ()))


def _set_tags(pkt: Packet, tags: tuple[int, ...]) -> None:
    pkt["vlan_vid"], pkt["vlans"] = (tags[0], tags[1:]) if tags else (None, ())


def _field_value(pkt: Packet, name: str) -> int | None:
    if name == "vlan_vid":   # OXM: VID | PRESENT when tagged, 0 (OFPVID_NONE) untagged
        return pkt["vlan_vid"] | OFPVID_PRESENT if pkt.get("_parsed") else 0
    if name == "eth_type" and len(_tags(pkt)) > pkt.get("_parsed", 0):
        return ETH_TYPE_VLAN     # a tag OVS did not parse: its TPID is the Ethertype
    if name in ("tunnel_id", "metadata", "ct_state"):
        return pkt.get(name) or 0
    if name in ("ip_proto", "ip_ttl"):        # ip_ttl: IPv4's TTL or IPv6's hop limit
        if _field_value(pkt, "eth_type") not in (ETH_TYPE_IPV4, ETH_TYPE_IPV6):
            return None
    elif name in _L3_FIELDS and _field_value(pkt, "eth_type") != ETH_TYPE_IPV4:
        return None
    if name in _IPV6_FIELDS:
        if _field_value(pkt, "eth_type") != ETH_TYPE_IPV6:
            return None
        if name.startswith("icmpv6") or name in _ND_FIELDS:
            if _field_value(pkt, "ip_proto") != 58:
                return None
        if name in _ND_FIELDS:
            if pkt.get("icmpv6_type") not in _ND_FIELDS[name] or pkt.get("icmpv6_code", 0):
                return None
            if name != "ipv6_nd_target" and pkt.get(name) is None:
                return 0                    # the option is absent

    if name in _ARP_FIELDS and _field_value(pkt, "eth_type") != ETH_TYPE_ARP:
        return None
    if name in _L4_FIELDS and _field_value(pkt, "ip_proto") != _L4_FIELDS[name]:
        return None
    value = pkt.get(name)
    return None if value is None else _as_int(value)


def _matches(flow_: Flow, pkt: Packet) -> bool:
    for name, want in flow_.match:
        have = _field_value(pkt, name)
        if have is None:
            return False
        if isinstance(want, tuple):
            value, mask = _as_int(want[0]), _as_int(want[1])
            if have & mask != value & mask:
                return False
        elif have != _as_int(want):
            return False
    return True


def parse_wire(buf: bytes, datapath: Any = None) -> list[Any]:
    """The os-ken messages in ``buf`` (one write of a connection, as OVS reads it).

    os-ken parses only what a switch sends plus the mods; the requests weft sends
    (barrier, role, the multipart reads) are decoded here into os-ken's request objects."""
    import struct

    from os_ken.ofproto import ofproto_parser
    from os_ken.ofproto import ofproto_v1_3 as ofp
    from os_ken.ofproto import ofproto_v1_3_parser as ofpp
    dp = datapath
    msgs, off = [], 0
    while off < len(buf):
        version, msg_type, length, xid = struct.unpack_from("!BBHI", buf, off)
        if length < 8 or off + length > len(buf):
            raise FakeSwitchError(f"a message cut at byte {off} of a {len(buf)}-byte write")
        body = buf[off + 8:off + length]
        if msg_type == ofp.OFPT_BARRIER_REQUEST:
            msg = ofpp.OFPBarrierRequest(dp)
        elif msg_type == ofp.OFPT_ROLE_REQUEST:
            msg = ofpp.OFPRoleRequest(dp, *struct.unpack_from("!I4xQ", body))
        elif msg_type == ofp.OFPT_MULTIPART_REQUEST:
            kind = struct.unpack_from("!H", body)[0]
            part = body[8:]
            if kind == ofp.OFPMP_PORT_DESC:
                msg = ofpp.OFPPortDescStatsRequest(dp)
            elif kind == ofp.OFPMP_GROUP_DESC:
                msg = ofpp.OFPGroupDescStatsRequest(dp)
            elif kind == ofp.OFPMP_METER_CONFIG:
                msg = ofpp.OFPMeterConfigStatsRequest(dp, 0, struct.unpack_from("!I", part)[0])
            elif kind in (ofp.OFPMP_FLOW, ofp.OFPMP_AGGREGATE):
                table, out_port, out_group, cookie, mask = struct.unpack_from("!B3xII4xQQ",
                                                                              part)
                cls = ofpp.OFPFlowStatsRequest if kind == ofp.OFPMP_FLOW \
                    else ofpp.OFPAggregateStatsRequest
                msg = cls(dp, 0, table, out_port, out_group, cookie, mask,
                          ofpp.OFPMatch.parser(part, 32))
            else:
                raise FakeSwitchError(f"multipart request type {kind} not modelled")
        elif msg_type == ofp.OFPT_GROUP_MOD:
            command, type_, group_id = struct.unpack_from("!HBxI", body)
            msg = ofpp.OFPGroupMod(dp, command, type_, group_id,
                                   _parse_each(ofpp.OFPBucket.parser, body))
        elif msg_type == ofp.OFPT_METER_MOD:
            command, flags, meter_id = struct.unpack_from("!HHI", body)
            msg = ofpp.OFPMeterMod(dp, command, flags, meter_id,
                                   _parse_each(ofpp.OFPMeterBandHeader.parser, body))
        else:
            msg = ofproto_parser.msg(dp, version, msg_type, length, xid, buf[off:off + length])
            if msg is None:
                raise FakeSwitchError(f"message type {msg_type} not parsed")
        msg.xid = xid
        msgs.append(msg)
        off += length
    return msgs


def _parse_each(parser: Any, body: bytes, at: int = 8) -> list:
    """The variable-length items (buckets, bands) after a mod's 8-byte fixed part."""
    items = []
    while at < len(body):
        items.append(parser(body, at))
        at += items[-1].len
    return items


class FakeOFTable:
    """One switch: its flow tables and groups; ``forward`` runs a frame through them."""

    def __init__(self, state: SwitchState = SwitchState(), learn: bool = False,
                 vlan_limit: int = 1, ports: Mapping[str, int] | None = None) -> None:
        self.flows: dict[tuple, Flow] = {f.identity: f for f in state.flows}
        self.ports: dict[str, int] = dict(ports or {})       # port desc, for apply_ofmsgs
        self.groups: dict[int, Group] = {g.group_id: g for g in state.groups}
        self.meters: dict[int, Meter] = {m.meter_id: m for m in state.meters}
        self.learn = learn
        self.vlan_limit = vlan_limit or _OVS_MAX_VLAN_HEADERS
        self.conntrack: dict[int, set[tuple]] = {}     # zone -> committed 5-tuples

    @property
    def state(self) -> SwitchState:
        return SwitchState(frozenset(self.flows.values()), frozenset(self.groups.values()),
                           frozenset(self.meters.values()))

    def apply_ofmsgs(self, msgs: Iterable[Any]) -> list[tuple[int, list]]:
        """Apply os-ken messages in order as OVS does (faucet's ``apply_ofmsgs``) and
        return the (xid, body) replies to the requests among them.

        Mods change the tables; a flow naming a missing group or meter, a group
        or meter added twice or modified while absent, and the deletion of a group
        or meter a flow still uses (OVS would silently delete those flows) raise
        ``FakeSwitchError``: an ordering bug of the sender.  Requests (port desc,
        flow stats by table and cookie, group desc, meter config, aggregate, barrier,
        role) are answered with os-ken objects that ``controller.ofmsg`` parses.
        """
        from os_ken.ofproto import ofproto_v1_3 as ofp
        from os_ken.ofproto import ofproto_v1_3_parser as ofpp

        from controller import ofmsg
        replies: list[tuple[int, list]] = []
        dp = ofmsg.OFP13
        for msg in msgs:
            if isinstance(msg, ofpp.OFPFlowMod):
                self._flow_mod(msg, ofp, ofmsg)
            elif isinstance(msg, ofpp.OFPGroupMod):
                self._table_mod(self.groups, "group", msg.group_id, msg.command,
                                (ofp.OFPGC_ADD, ofp.OFPGC_MODIFY, ofp.OFPGC_DELETE),
                                lambda m=msg: ofmsg.group_from_desc(m))
            elif isinstance(msg, ofpp.OFPMeterMod):
                self._table_mod(self.meters, "meter", msg.meter_id, msg.command,
                                (ofp.OFPMC_ADD, ofp.OFPMC_MODIFY, ofp.OFPMC_DELETE),
                                lambda m=msg: ofmsg.meter_from_config(m))
            elif isinstance(msg, ofpp.OFPPortDescStatsRequest):
                replies.append((msg.xid, [ofpp.OFPPort(n, "00:00:00:00:00:00", name.encode(),
                                                       0, 0, 0, 0, 0, 0, 0, 0)
                                          for name, n in self.ports.items()]))
            elif isinstance(msg, (ofpp.OFPFlowStatsRequest, ofpp.OFPAggregateStatsRequest)):
                hits = [f for f in self.flows.values()
                        if (msg.table_id == ofp.OFPTT_ALL or f.table == msg.table_id)
                        and f.cookie & msg.cookie_mask == msg.cookie & msg.cookie_mask]
                if isinstance(msg, ofpp.OFPFlowStatsRequest):
                    replies.append((msg.xid, [ofmsg.flow_mod(dp, f, "add") for f in hits]))
                else:
                    replies.append((msg.xid, [ofpp.OFPAggregateStats(0, 0, len(hits))]))
            elif isinstance(msg, ofpp.OFPGroupDescStatsRequest):
                replies.append((msg.xid, [ofmsg.group_mod(dp, g, "add")
                                          for g in self.groups.values()]))
            elif isinstance(msg, ofpp.OFPMeterConfigStatsRequest):
                replies.append((msg.xid, [ofmsg.meter_mod(dp, m, "add")
                                          for m in self.meters.values()]))
            elif isinstance(msg, (ofpp.OFPBarrierRequest, ofpp.OFPRoleRequest)):
                replies.append((msg.xid, []))
            else:
                raise FakeSwitchError(f"message not modelled: {msg}")
        return replies

    def _uses(self, f: Flow) -> tuple[set[int], set[int]]:
        """(group ids, meter ids) a flow refers to."""
        groups = {a[1] for i in f.instructions if i[0] == "apply" for a in i[1]
                  if a[0] == "group"}
        return groups, {i[1] for i in f.instructions if i[0] == "meter"}

    def _flow_mod(self, msg: Any, ofp: Any, ofmsg: Any) -> None:
        if msg.command == ofp.OFPFC_ADD:
            f = ofmsg.flow_from_stats(msg)
            groups, meters = self._uses(f)
            if groups - set(self.groups) or meters - set(self.meters):
                raise FakeSwitchError(f"flow sent before its group/meter: {f}")
            self.flows[f.identity] = f
        elif msg.command == ofp.OFPFC_DELETE_STRICT:
            f = ofmsg.flow_from_stats(msg)
            old = self.flows.get(f.identity)
            if old is not None and old.cookie & msg.cookie_mask == msg.cookie & msg.cookie_mask:
                del self.flows[f.identity]
        elif msg.command == ofp.OFPFC_DELETE:
            for ident, f in list(self.flows.items()):
                if (msg.table_id in (ofp.OFPTT_ALL, f.table)
                        and f.cookie & msg.cookie_mask == msg.cookie & msg.cookie_mask):
                    del self.flows[ident]
        else:
            raise FakeSwitchError(f"flow-mod command {msg.command} not modelled")

    def _table_mod(self, table: dict, what: str, ident: int, command: int,
                   commands: tuple[int, int, int], build: Any) -> None:
        add, modify, delete = commands
        if command == add and ident in table:
            raise FakeSwitchError(f"{what} {ident} added twice")
        if command == modify and ident not in table:
            raise FakeSwitchError(f"{what} {ident} modified while absent")
        if command == delete:
            users = [f for f in self.flows.values()
                     if ident in self._uses(f)[0 if what == "group" else 1]]
            if users:
                raise FakeSwitchError(f"{what} {ident} deleted while flows use it: {users[:2]}")
            table.pop(ident, None)
        else:
            table[ident] = build()

    def lookup(self, table: int, pkt: Packet) -> Flow | None:
        """The flow that handles ``pkt`` in ``table``; None on a miss (drop)."""
        hits = [f for f in self.flows.values() if f.table == table and _matches(f, pkt)]
        if not hits:
            return None
        best = max(f.priority for f in hits)
        top = [f for f in hits if f.priority == best]
        if len(top) > 1:
            raise FakeSwitchError(f"ambiguous match in table {table} at priority {best}: {top}")
        return top[0]

    def outputs(self, in_port: int, pkt: Mapping[str, Any]) -> list[tuple[int, Packet]]:
        """Every (port, frame as sent) in order, duplicates kept."""
        return self.run(in_port, pkt)[0]

    def meters_hit(self, in_port: int, pkt: Mapping[str, Any]) -> list[int]:
        """The meter ids the frame passes, in order (it runs the frame: learns with learn=True)."""
        return self.run(in_port, pkt)[1]

    def run(self, in_port: int,
            pkt: Mapping[str, Any]) -> tuple[list[tuple[int, Packet]], list[int]]:
        """Every (port, frame as sent) in order, and the meter ids passed on the way."""
        state: Packet = {"metadata": 0, "tunnel_id": None, "vlan_vid": None, **pkt,
                         "in_port": in_port}
        _set_tags(state, _tags(state))
        state["_parsed"] = min(len(_tags(state)), self.vlan_limit)
        if _field_value(state, "eth_type") in (ETH_TYPE_IPV4, ETH_TYPE_IPV6) \
                and state.get("ip_ttl") is None:
            state["ip_ttl"] = DEFAULT_TTL
        out: list[tuple[int, Packet]] = []
        meters: list[int] = []
        learned: list[Flow] = []
        commits: list[tuple[int, tuple]] = []
        self._pipeline(0, state, out, meters, learned, commits, 0)
        for f, limit in learned:
            old = self.flows.get(f.identity)
            if (limit and (old is None or old.cookie != f.cookie)
                    and self.count(f.table, f.cookie) >= limit):
                continue                       # OVS learn(limit=...): full, not written
            self.flows[f.identity] = f
        for zone, key in commits:
            self.conntrack.setdefault(zone, set()).add(key)
        return out, meters

    def _pipeline(self, table: int, state: Packet, out: list, meters: list, learned: list,
                  commits: list, depth: int) -> None:
        """Look ``state`` up from ``table`` on, following gotos and recirculations."""
        if depth > _MAX_RESUBMIT_DEPTH:
            raise FakeSwitchError("resubmits nested too deep (a resubmit loop)")
        for _ in range(_MAX_TABLE_HOPS):
            entry = self.lookup(table, state)
            if entry is None:
                break
            next_table = None
            state.pop("_recirc", None)
            for instr in entry.instructions:
                kind = instr[0]
                if kind == "apply":
                    if not self._apply(instr[1], state, out, learned, commits,
                                       (meters, depth)):
                        next_table = None
                        break                  # dec_ttl on TTL <= 1: processing stops
                elif kind == "write_metadata":
                    _, value, mask = instr
                    state["metadata"] = (state["metadata"] & ~mask) | (value & mask)
                elif kind == "goto":
                    next_table = instr[1]
                elif kind == "meter":
                    if instr[1] not in self.meters:
                        raise FakeSwitchError(f"flow {entry} uses missing meter {instr[1]}")
                    meters.append(instr[1])
                else:
                    raise FakeSwitchError(f"unknown instruction {instr!r}")
            if state.get("_recirc") is not None:     # ct(table=T): looked up again from T
                table = state.pop("_recirc")
                continue
            if next_table is None:
                break
            if next_table <= table:
                raise FakeSwitchError(f"goto {next_table} from table {table}: must go forward")
            table = next_table
        else:
            raise FakeSwitchError("too many tables")

    def count(self, table: int, cookie: int) -> int:
        """Flows in ``table`` with exactly ``cookie`` (what learn's limit counts)."""
        return sum(1 for f in self.flows.values() if f.table == table and f.cookie == cookie)

    def forward(self, in_port: int, pkt: Mapping[str, Any]) -> set[tuple[int, int | None]]:
        """The set of (out_port, tunnel_id at output or None) for one frame."""
        return {(port, sent["tunnel_id"]) for port, sent in self.outputs(in_port, pkt)}

    def forward_frames(self, in_port: int,
                       pkt: Mapping[str, Any]) -> set[tuple[int, int | None, int | None]]:
        """The set of (out_port, tunnel_id or None, outer VLAN id or None) for one frame."""
        return {(port, sent["tunnel_id"], sent["vlan_vid"])
                for port, sent in self.outputs(in_port, pkt)}

    def _apply(self, actions: Iterable[tuple], state: Packet, out: list, learned: list,
               commits: list | None = None,
               nested: tuple[list, int] | None = None) -> bool:
        """Run ``actions`` on ``state``; False when ``dec_ttl`` stopped the processing.
        ``nested``: (meters passed, resubmit depth), for ``resubmit``."""
        for action in actions:
            kind = action[0]
            if kind == "dec_ttl":
                if _field_value(state, "eth_type") not in (ETH_TYPE_IPV4, ETH_TYPE_IPV6):
                    continue                     # OVS: no effect on non-IP frames
                if state["ip_ttl"] <= 1:
                    return False
                state["ip_ttl"] -= 1
                continue
            if kind == "move":
                _, src, dst = action
                if _field_value(state, src) is None or _field_value(state, dst) is None:
                    raise FakeSwitchError(f"{action!r} on a frame without those fields")
                state[dst] = state[src]
                continue
            if kind == "resubmit":
                if nested is None:
                    raise FakeSwitchError(f"{action!r} in a group bucket")
                meters, depth = nested
                self._pipeline(action[1], state, out, meters, learned,
                               commits if commits is not None else [], depth + 1)
                continue
            if kind == "ct":
                _, commit, zone, table = action
                key = _conn_key(state)
                if key is None:
                    raise FakeSwitchError(f"{action!r} on a non-IP frame or an ND message "
                                          "(conntrack calls ND invalid)")
                known = self.conntrack.get(zone, set())
                if key in known:
                    state["ct_state"] = CT_TRK | CT_EST
                elif _reverse(key) in known:
                    state["ct_state"] = CT_TRK | CT_EST | CT_RPL
                else:
                    state["ct_state"] = CT_TRK | CT_NEW
                if commit and commits is not None and _reverse(key) not in known:
                    commits.append((zone, key))
                if table is not None:
                    state["_recirc"] = table
                continue
            if kind == "output":
                port = state["in_port"] if action[1] == OFPP_IN_PORT else action[1]
                if action[1] == OFPP_IN_PORT or port != state["in_port"]:
                    out.append((port, dict(state)))
            elif kind == "set_field" and action[1] == "vlan_vid":
                if not state["_parsed"]:
                    raise FakeSwitchError(f"{action!r} on a frame without a (parsed) tag")
                state["vlan_vid"] = action[2] & 0xFFF
            elif kind == "set_field" and action[1] == "vlan_tci":
                tci = action[2]
                if tci & OFPVID_PRESENT and not state["_parsed"]:     # OVS: pushes a tag
                    _set_tags(state, (tci & 0xFFF, *_tags(state)))
                    state["_parsed"] = 1
                elif tci & OFPVID_PRESENT:
                    state["vlan_vid"] = tci & 0xFFF
                elif state["_parsed"]:                                 # OVS: strips it
                    _set_tags(state, _tags(state)[1:])
                    state["_parsed"] -= 1
            elif kind == "set_field" and action[1] in _L3_FIELDS | set(_L4_FIELDS):
                if _field_value(state, action[1]) is None:
                    raise FakeSwitchError(f"{action!r} on a frame without that field")
                state[action[1]] = action[2]
            elif kind == "set_field" and action[1] == "nd_options_type":
                if _field_value(state, "icmpv6_type") not in (135, 136):
                    raise FakeSwitchError(f"{action!r} on a frame that is not NS/NA")
                # OVS rewrites the option's type: its link-layer address stays, now the
                # other option (an NS's source option becomes an NA's target option)
                old, new = ("ipv6_nd_tll", "ipv6_nd_sll") if action[2] == 1 else \
                    ("ipv6_nd_sll", "ipv6_nd_tll")
                if state.get(old) is not None:
                    state[new] = state.pop(old)
            elif kind == "set_field":
                state[action[1]] = action[2]
            elif kind == "set_queue":
                state["queue"] = action[1]
            elif kind == "group":
                group = self.groups.get(action[1])
                if group is None:
                    raise FakeSwitchError(f"output to missing group {action[1]}")
                if group.type != "all":
                    raise FakeSwitchError(f"group type {group.type} not modelled")
                for bucket in group.buckets:
                    self._apply(bucket, dict(state), out, learned, commits)   # no dec_ttl
            elif kind == "push_vlan":     # the new tag copies the outer VID, if any
                tags = _tags(state)
                _set_tags(state, (tags[0] if tags else 0, *tags))
                state["_parsed"] = min(state["_parsed"] + 1, _OVS_MAX_VLAN_HEADERS)
            elif kind == "pop_vlan":      # OVS pops only a tag it parsed
                if state["_parsed"]:
                    _set_tags(state, _tags(state)[1:])
                    state["_parsed"] -= 1
            elif kind == "learn":
                if self.learn:
                    learned.append((_learned_flow(action[1], state), action[1].limit))
            else:
                raise FakeSwitchError(f"unknown action {action!r}")
        return True


def _conn_key(pkt: Packet) -> tuple | None:
    """The connection a frame belongs to, as conntrack keys it; None if not IP, or an
    ICMPv6 Neighbour Discovery message (OVS conntrack marks those invalid)."""
    eth_type = _field_value(pkt, "eth_type")
    if eth_type not in (ETH_TYPE_IPV4, ETH_TYPE_IPV6):
        return None
    v = "ipv4" if eth_type == ETH_TYPE_IPV4 else "ipv6"
    proto = pkt.get("ip_proto")
    if proto == 58 and eth_type == ETH_TYPE_IPV6 and pkt.get("icmpv6_type") in range(133, 138):
        return None
    if proto in (1, 58):    # ICMP: conntrack keys a query by its type (and id, not modelled)
        icmp = "icmpv4" if proto == 1 else "icmpv6"
        return (pkt.get(f"{v}_src"), pkt.get(f"{v}_dst"), proto, pkt.get(f"{icmp}_type"),
                pkt.get(f"{icmp}_code"))
    l4 = {6: "tcp", 17: "udp"}.get(proto or 0)
    sport = pkt.get(f"{l4}_src") if l4 else None
    dport = pkt.get(f"{l4}_dst") if l4 else None
    return (pkt.get(f"{v}_src"), pkt.get(f"{v}_dst"), proto, sport, dport)


# ICMP query types and their replies: the reply direction of an echo request (8) is an
# echo reply (0), so a request the other way is a new connection, as in Linux conntrack
_ICMP_REPLY = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17}
_ICMPV6_REPLY = {128: 129, 129: 128}      # echo request, reply


def _reverse(key: tuple) -> tuple:
    src, dst, proto, sport, dport = key
    if proto == 1:
        return (dst, src, proto, _ICMP_REPLY.get(sport, sport), dport)
    if proto == 58:
        return (dst, src, proto, _ICMPV6_REPLY.get(sport, sport), dport)
    return (dst, src, proto, dport, sport)


def _learned_flow(spec: LearnSpec, pkt: Packet) -> Flow:
    actions: list[tuple] = []
    if spec.load_tunnel_id:
        actions.append(("set_field", "tunnel_id", pkt["tunnel_id"] or 0))
    if spec.vlan_vid is not None:
        actions.append(("set_field", "vlan_tci", OFPVID_PRESENT | spec.vlan_vid))
    if spec.output_in_port:
        actions.append(("output", pkt["in_port"]))
    return flow(spec.table, spec.priority,
                {"metadata": (spec.metadata, spec.metadata_mask), "eth_dst": pkt["eth_src"]},
                [("apply", tuple(actions))], spec.cookie, spec.idle_timeout)


@dataclass
class FakeHost:
    """One host of a ``FakeCluster``: its switch and how its port names map."""

    table: FakeOFTable
    ports: Mapping[str, int]                 # port name -> ofport
    tunnels: Mapping[str, str]               # peer host -> tunnel port name
    names: dict[int, str] = field(init=False)        # ofport -> port name
    peer_of: dict[str, str] = field(init=False)      # tunnel port name -> peer host

    def __post_init__(self) -> None:
        self.names = {ofport: name for name, ofport in self.ports.items()}
        self.peer_of = {name: peer for peer, name in self.tunnels.items()}


class FakeCluster:
    """Several fake switches joined by tunnels: follow a frame to every port it reaches.

    An output to the tunnel toward peer P with tunnel_id v arrives at P's
    tunnel port toward this host, carrying tunnel_id v.
    """

    def __init__(self, hosts: Mapping[str, FakeHost]) -> None:
        self.hosts = dict(hosts)

    @classmethod
    def from_topology(cls, topo: Topology, ports: Mapping[str, Mapping[str, int]],
                      tunnels: Mapping[str, Mapping[str, str]],
                      learn: bool = False, vlan_limit: int = 1) -> FakeCluster:
        """Each host of ``ports`` running the pipeline's desired state."""
        def switch(host: str) -> FakeOFTable:
            return FakeOFTable(desired_state(host, topo, ports[host], tunnels[host]), learn,
                               vlan_limit)
        return cls({host: FakeHost(switch(host), ports[host], tunnels[host]) for host in ports})

    def deliveries(self, host: str, port: str, pkt: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Every (host, port name) the frame reaches outside the tunnels, duplicates kept."""
        return [(at, name) for at, name, _ in self.frames(host, port, pkt)]

    def frames(self, host: str, port: str, pkt: Mapping[str, Any],
               vlan: int | None = None) -> list[tuple[str, str, int | None]]:
        """Every (host, port name, outer VLAN id or None) the frame reaches outside the
        tunnels, duplicates kept.  ``vlan``: send it with this outer tag (as a trunk's
        peer would), any tags of ``pkt`` (or its ``vlans`` alone) becoming inner tags."""
        return [(at, name, sent["vlan_vid"])
                for at, name, sent in self.trace(host, port, pkt, vlan)[0]]

    def meters_hit(self, host: str, port: str, pkt: Mapping[str, Any],
                   vlan: int | None = None) -> list[tuple[str, int]]:
        """Every (host, meter id) the frame passes on its way, on any switch, in order."""
        return self.trace(host, port, pkt, vlan)[1]

    def trace(self, host: str, port: str, pkt: Mapping[str, Any], vlan: int | None = None
              ) -> tuple[list[tuple[str, str, Packet]], list[tuple[str, int]]]:
        """(every (host, port name, frame as sent) outside the tunnels, every (host,
        meter id) passed); see ``frames`` for ``vlan``."""
        if vlan is not None:
            inner = _tags(pkt) if pkt.get("vlan_vid") is not None else tuple(pkt.get("vlans", ()))
            pkt = {**pkt, "vlan_vid": vlan, "vlans": inner}
        result: list[tuple[str, str, Packet]] = []
        metered: list[tuple[str, int]] = []
        queue = deque([(host, port, dict(pkt), 0)])
        while queue:
            at, port_name, frame, hops = queue.popleft()
            if hops > _MAX_TUNNEL_HOPS:
                raise FakeSwitchError(f"forwarding loop: {frame} still travelling at {at}")
            node = self.hosts[at]
            outputs, meters = node.table.run(node.ports[port_name], frame)
            metered.extend((at, m) for m in meters)
            for ofport, sent in outputs:
                name = node.names[ofport]
                peer = node.peer_of.get(name)
                if peer is None:
                    result.append((at, name, sent))
                    continue
                arrival = self.hosts.get(peer)
                back = arrival.tunnels.get(at) if arrival else None
                if back is None or back not in arrival.ports:
                    continue          # the far end has no tunnel back: lost
                onward = {k: sent[k] for k in _WIRE_FIELDS if sent.get(k) is not None}
                onward["tunnel_id"] = sent["tunnel_id"] or 0
                queue.append((peer, back, onward, hops + 1))
        return result, metered

    def inject(self, host: str, port: str, pkt: Mapping[str, Any]) -> set[tuple[str, str]]:
        """The set of (host, port name) a frame injected at ``host``/``port`` reaches."""
        return set(self.deliveries(host, port, pkt))
