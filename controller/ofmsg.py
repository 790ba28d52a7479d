"""Translate weft's plain flows and groups to os-ken messages and back.

The only module that touches os-ken's ofproto.  The reverse direction
(stats -> ``Flow``/``Group``) lands in the same normal form as
``controller.flows.flow`` so that a flow read back from OVS compares equal to
the desired one: with nothing changed, a reconnect sends zero flow-mods.

Normalisation on the way back:
  * NXM field names (``eth_dst_nxm``, ``tunnel_id_nxm``, ...) become their OXM
    names, whichever header the switch chose to echo;
  * output ``max_len`` is ignored (it only matters for the controller port);
  * anything weft does not model becomes ``("unknown", text)``, which never
    equals a desired flow, so such a flow of ours is simply replaced.

Conntrack is NXAST_CT with an immediate zone (``zone_src`` empty), no ALG
and no nested actions: ``("ct", commit, zone, table)``.  Routing's actions:
``("dec_ttl",)`` is NXAST_DEC_TTL_CNT_IDS with no controller ids (OVS echoes it
so): a frame with TTL 0 or 1 then just drops in the datapath, where OFPAT_DEC_NW_TTL
(controller id 0) makes OVS handle each such frame in its slow path (a ``controller``
action it then does not send), ``("move", src, dst)`` NXAST_REG_MOVE of whole fields named by
their NXM headers (as OVS echoes them; read back by either spelling),
``("resubmit", table)`` NXAST_RESUBMIT_TABLE with in_port OFPP_IN_PORT.

The learn action is sent as NXAST_LEARN with specs written the way OVS
echoes them (neutron br_tun does the same): metadata as immediates per
contiguous run of the mask, ``NXM_OF_ETH_DST[]=NXM_OF_ETH_SRC[]``,
``load:NXM_NX_TUN_ID[]->NXM_NX_TUN_ID[]``, ``load:0x1000|vid->NXM_OF_VLAN_TCI[]``
(an immediate: OVS pushes a tag when CFI is set on an untagged frame; os-ken
names the field ``vlan_tci``), ``output:OXM_OF_IN_PORT[]``.

A LearnSpec with ``limit`` goes as NXAST_LEARN2 (subtype 45, OVS 2.8+):
the NXAST_LEARN body plus ``limit`` (32 bits), ``result_dst_ofs`` and two
pad bytes before the specs; os-ken has no class for it, so ``NXActionLearn2``
below adds one (registered, so flow stats with it parse as well).

``set_field vlan_vid`` is read back with OFPVID_PRESENT set (see
``controller.flows.normal_action``), whatever the switch echoes.

Meters are sent with flags kbps|stats, or pktps|stats for a packet-rate meter
(|burst when ``burst_kb`` > 0) and one drop band (rate=kbps, burst_size=burst_kb,
in packets for pktps).  Read back, a burst_size without
the burst flag counts as 0 (OVS may echo 0, or the size it chose itself); any
other config (both or no unit, no stats, several or other bands) is not what weft writes
and reads back as a ``Meter`` with ``unknown`` set, which the diff modifies.
"""
from __future__ import annotations

import struct
from functools import cached_property
from typing import Any, Callable, Iterable, Protocol

from os_ken.lib import type_desc
from os_ken.lib.pack_utils import msg_pack_into
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as ofpp
from os_ken.ofproto import oxm_fields

from controller.flows import Flow, Group, LearnSpec, Meter, flow, normal_action

__all__ = ["flow_mod", "group_mod", "meter_mod", "encode", "encode_flow_mod", "send_encoded",
           "send_batched", "unsent_bytes",
           "RawFlowStats", "flow_from_stats", "flows_from_stats",
           "group_from_desc", "meter_from_config", "meters_from_config", "operator_flow_mod",
           "ofctl_match_ok", "ofctl_printable", "OFP13"]


class Datapath(Protocol):
    """What we need of an os-ken Datapath (a stub with these two serves tests)."""

    ofproto: Any
    ofproto_parser: Any


_FLOW_COMMANDS = {"add": ofp.OFPFC_ADD, "delete_strict": ofp.OFPFC_DELETE_STRICT}
_GROUP_COMMANDS = {"add": ofp.OFPGC_ADD, "modify": ofp.OFPGC_MODIFY, "delete": ofp.OFPGC_DELETE}
_GROUP_TYPES = {"all": ofp.OFPGT_ALL, "select": ofp.OFPGT_SELECT,
                "indirect": ofp.OFPGT_INDIRECT, "ff": ofp.OFPGT_FF}
_GROUP_TYPE_NAMES = {v: k for k, v in _GROUP_TYPES.items()}
_METER_COMMANDS = {"add": ofp.OFPMC_ADD, "modify": ofp.OFPMC_MODIFY, "delete": ofp.OFPMC_DELETE}
_METER_FLAGS = ofp.OFPMF_KBPS | ofp.OFPMF_STATS
_METER_FLAGS_PKTPS = ofp.OFPMF_PKTPS | ofp.OFPMF_STATS
_ALL_COOKIE_BITS = (1 << 64) - 1
_VLAN_CFI = 0x1000            # in NXM_OF_VLAN_TCI: "a tag is present" (OVS)
_NX_CT_F_COMMIT = 1
_NX_CT_RECIRC_NONE = 0xFF     # ct() without table=: no recirculation
_OFPP_IN_PORT_16 = 0xFFF8     # resubmit's in_port: "the frame's own" (OVS ``resubmit(,T)``)
# ("move", src, dst): whole fields, sent by their NXM names as OVS echoes NXAST_REG_MOVE
_MOVE_FIELD_BITS = {"eth_src": 48, "eth_dst": 48, "arp_sha": 48, "arp_tha": 48,
                    "arp_spa": 32, "arp_tpa": 32, "ipv4_src": 32, "ipv4_dst": 32,
                    "ipv6_src": 128, "ipv6_dst": 128}


class _EricssonOxm(oxm_fields._OxmClass):  # type: ignore[misc]
    """OVS's ERICOXM_OF_ class (0x1000, OVS 2.11+), which os-ken lacks: the ICMPv6 ND
    ``nd_reserved`` (the NA's R/S/O flags) and ``nd_options_type`` fields, what an NA
    responder sets (``controller.pipeline.gateway``)."""

    _class = 0x1000


if not any(f.name == "nd_reserved" for f in ofp.oxm_types):
    ofp.oxm_types += [_EricssonOxm("nd_reserved", 1, type_desc.Int4),
                      _EricssonOxm("nd_options_type", 2, type_desc.Int1)]
    oxm_fields.generate(ofp.__name__)


_NXAST_LEARN2 = 45
_NX_LEARN_F_WRITE_RESULT = 4


class NXActionLearn2(ofpp.NXActionLearn):  # type: ignore[name-defined,misc]
    """NXAST_LEARN2: NXAST_LEARN plus ``limit`` (OVS ``learn(limit=N,...)``)."""

    _subtype = _NXAST_LEARN2
    _learn2_fmt = "!IHxx"       # limit, result_dst_ofs, pad

    def __init__(self, table_id: int, specs: list, limit: int = 0, **kwargs: Any) -> None:
        kwargs.pop("subtype", None)
        super().__init__(table_id, specs, **kwargs)
        self.limit = limit

    @classmethod
    def parser(cls, buf: bytes) -> Any:
        head = struct.calcsize(cls._fmt_str)
        extra = struct.calcsize(cls._learn2_fmt)
        (limit, _ofs) = struct.unpack_from(cls._learn2_fmt, buf, head)
        flags = struct.unpack_from("!H", buf, 14)[0]
        if flags & _NX_LEARN_F_WRITE_RESULT:     # a result_dst header we never write
            return ofpp.NXActionUnknown(_NXAST_LEARN2, buf)
        base = ofpp.NXActionLearn.parser(bytes(buf[:head]) + bytes(buf[head + extra:]))
        return cls(base.table_id, base.specs, limit=limit, idle_timeout=base.idle_timeout,
                   hard_timeout=base.hard_timeout, priority=base.priority, cookie=base.cookie,
                   flags=base.flags, fin_idle_timeout=base.fin_idle_timeout,
                   fin_hard_timeout=base.fin_hard_timeout)

    def serialize_body(self) -> bytearray:
        data = bytearray()
        msg_pack_into(self._fmt_str + self._learn2_fmt[1:], data, 0, self.idle_timeout,
                      self.hard_timeout, self.priority, self.cookie, self.flags, self.table_id,
                      self.fin_idle_timeout, self.fin_hard_timeout, self.limit, 0)
        for spec in self.specs:
            data += spec.serialize()
        return data


ofpp.NXAction.register(NXActionLearn2)


# --- weft -> os-ken -----------------------------------------------------------------
def flow_mod(dp: Datapath, f: Flow, command: str) -> Any:
    """An OFPFlowMod: ``add`` (also replaces an entry of the same identity) or
    ``delete_strict`` (only if the cookie still matches: never someone else's).

    A real ``OFPFlowMod`` whose bytes come from ``encode_flow_mod`` (cached parts, no
    netaddr); its os-ken match and instructions are built only if someone reads them."""
    if command not in _FLOW_COMMANDS:
        raise ValueError(f"flow command {command!r} not in {sorted(_FLOW_COMMANDS)}")
    return _EncodedFlowMod(dp, f, command)


class _EncodedFlowMod(ofpp.OFPFlowMod):  # type: ignore[misc]
    """``flow_mod``'s message: os-ken's attributes, weft's encoder."""

    def __init__(self, dp: Datapath, f: Flow, command: str) -> None:
        ofpp.MsgBase.__init__(self, dp)      # no OFPMatch/instruction objects: see match
        add = command == "add"
        self.weft_flow, self.weft_command = f, command
        self.cookie, self.table_id, self.priority = f.cookie, f.table, f.priority
        self.cookie_mask = 0 if add else _ALL_COOKIE_BITS
        self.command = ofp.OFPFC_ADD if add else ofp.OFPFC_DELETE_STRICT
        self.idle_timeout = f.idle_timeout if add else 0
        self.hard_timeout, self.flags, self.buffer_id = 0, 0, ofp.OFP_NO_BUFFER
        self.out_port = 0 if add else ofp.OFPP_ANY
        self.out_group = 0 if add else ofp.OFPG_ANY

    @cached_property
    def match(self) -> Any:
        return ofpp.OFPMatch(**dict(self.weft_flow.match))

    @cached_property
    def instructions(self) -> list:
        if self.weft_command != "add":
            return []
        return [_instruction(ofpp, i) for i in self.weft_flow.instructions]

    def serialize(self) -> None:
        buf = bytearray(encode_flow_mod(self.weft_flow, self.weft_command))
        struct.pack_into("!I", buf, 4, self.xid or 0)
        self.version, self.msg_type, self.msg_len = ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD, len(buf)
        self.buf = buf


def _osken_flow_mod(dp: Datapath, f: Flow, command: str) -> Any:
    """The same message built and serialized by os-ken alone: the reference the encoder
    is tested against (tests/unit/test_ofmsg_encode.py)."""
    ofproto, parser = dp.ofproto, dp.ofproto_parser
    match = parser.OFPMatch(**dict(f.match))
    if command == "add":
        return parser.OFPFlowMod(
            dp, cookie=f.cookie, table_id=f.table, command=ofproto.OFPFC_ADD,
            idle_timeout=f.idle_timeout, priority=f.priority, buffer_id=ofproto.OFP_NO_BUFFER,
            match=match, instructions=[_instruction(parser, i) for i in f.instructions])
    if command == "delete_strict":
        return parser.OFPFlowMod(
            dp, cookie=f.cookie, cookie_mask=_ALL_COOKIE_BITS, table_id=f.table,
            command=ofproto.OFPFC_DELETE_STRICT, priority=f.priority,
            out_port=ofproto.OFPP_ANY, out_group=ofproto.OFPG_ANY, match=match)
    raise ValueError(f"flow command {command!r} not in {sorted(_FLOW_COMMANDS)}")


# --- encode once: flow-mods as bytes ---------------------------------------------------
# os-ken builds an OFPMatch per message (netaddr for every MAC, a generic TLV walk for
# every field): ~0.5 ms a flow-mod, which made the controller 2-8x slower than
# ovs-ofctl.  Here a flow-mod is the fixed header plus the match bytes plus the
# instruction bytes, each piece cached by its value: a remote endpoint's match is the
# same on every switch, its instructions ("tunnel to peer P") the same for every MAC
# behind P, so each distinct piece is encoded once and reused across flows and switches.
# Matches of plain OXM fields are packed here (no netaddr); anything else, and every
# instruction, is serialized by os-ken once.  tests/unit/test_ofmsg_encode.py checks the
# bytes are exactly os-ken's for every flow the pipeline computes.
_OFP_HEADER = struct.Struct("!BBHI")
_FLOW_MOD_BODY = struct.Struct("!QQBBHHHIIIH2x")       # ofp_flow_mod after the header
_OXM_OFB = 0x8000
# OXM basic fields weft matches on: name -> (field number, value width in bytes, kind)
_OXM_FIELDS: dict[str, tuple[int, int, str]] = {
    "in_port": (0, 4, "int"), "metadata": (2, 8, "int"), "eth_dst": (3, 6, "mac"),
    "eth_src": (4, 6, "mac"), "eth_type": (5, 2, "int"), "vlan_vid": (6, 2, "int"),
    "ip_dscp": (8, 1, "int"), "ip_proto": (10, 1, "int"), "ipv4_src": (11, 4, "ipv4"),
    "ipv4_dst": (12, 4, "ipv4"), "tcp_src": (13, 2, "int"), "tcp_dst": (14, 2, "int"),
    "udp_src": (15, 2, "int"), "udp_dst": (16, 2, "int"), "icmpv4_type": (19, 1, "int"),
    "icmpv4_code": (20, 1, "int"), "arp_op": (21, 2, "int"), "arp_spa": (22, 4, "ipv4"),
    "arp_tpa": (23, 4, "ipv4"), "arp_sha": (24, 6, "mac"), "arp_tha": (25, 6, "mac"),
    "tunnel_id": (38, 8, "int"),
}
_CACHE_LIMIT = 1 << 18          # entries per cache; cleared when full (bounded memory)
_match_cache: dict[tuple, bytes] = {}
_instructions_cache: dict[tuple, bytes] = {}


def _oxm_value(kind: str, width: int, value: Any) -> bytes | None:
    if kind == "int":
        return value.to_bytes(width, "big") if isinstance(value, int) and value >= 0 else None
    if not isinstance(value, str):
        return None
    if kind == "mac":
        raw = value.replace(":", "")
        return bytes.fromhex(raw) if len(raw) == 12 and value.count(":") == 5 else None
    parts = value.split(".")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        return None
    return bytes(int(p) for p in parts)


def _pack_match(match: tuple) -> bytes | None:
    """ofp_match (padded) for plain OXM fields, os-ken's field order; None: not only those."""
    tlvs = []
    for name, value in match:
        spec = _OXM_FIELDS.get(name)
        if spec is None:
            return None
        field, width, kind = spec
        if isinstance(value, tuple):
            v, m = _oxm_value(kind, width, value[0]), _oxm_value(kind, width, value[1])
            if v is None or m is None:
                return None
            head = (_OXM_OFB << 16) | (field << 9) | (1 << 8) | (2 * width)
            tlvs.append((field, head.to_bytes(4, "big") + v + m))
        else:
            v = _oxm_value(kind, width, value)
            if v is None:
                return None
            head = (_OXM_OFB << 16) | (field << 9) | width
            tlvs.append((field, head.to_bytes(4, "big") + v))
    tlvs.sort(key=lambda t: t[0])
    fields = b"".join(t[1] for t in tlvs)
    length = 4 + len(fields)
    return struct.pack("!HH", ofp.OFPMT_OXM, length) + fields + bytes(-length % 8)


def _match_bytes(match: tuple) -> bytes:
    data = _match_cache.get(match)
    if data is None:
        data = _pack_match(match)
        if data is None:
            buf = bytearray()
            ofpp.OFPMatch(**dict(match)).serialize(buf, 0)
            data = bytes(buf)
        if len(_match_cache) >= _CACHE_LIMIT:
            _match_cache.clear()
        _match_cache[match] = data
    return data


def _instructions_bytes(instructions: tuple) -> bytes:
    data = _instructions_cache.get(instructions)
    if data is None:
        buf = bytearray()
        for instr in instructions:
            obj = _instruction(ofpp, instr)
            obj.serialize(buf, len(buf))
        data = bytes(buf)
        if len(_instructions_cache) >= _CACHE_LIMIT:
            _instructions_cache.clear()
        _instructions_cache[instructions] = data
    return data


def encode_flow_mod(f: Flow, command: str) -> bytes:
    """``flow_mod(dp, f, command)`` serialized with xid 0, byte for byte, from cached parts."""
    match = _match_bytes(f.match)
    if command == "add":
        instrs = _instructions_bytes(f.instructions)
        body = _FLOW_MOD_BODY.pack(f.cookie, 0, f.table, ofp.OFPFC_ADD, f.idle_timeout, 0,
                                   f.priority, ofp.OFP_NO_BUFFER, 0, 0, 0)
    elif command == "delete_strict":
        instrs = b""
        body = _FLOW_MOD_BODY.pack(f.cookie, _ALL_COOKIE_BITS, f.table, ofp.OFPFC_DELETE_STRICT,
                                   0, 0, f.priority, ofp.OFP_NO_BUFFER, ofp.OFPP_ANY,
                                   ofp.OFPG_ANY, 0)
    else:
        raise ValueError(f"flow command {command!r} not in {sorted(_FLOW_COMMANDS)}")
    length = _OFP_HEADER.size + len(body) + len(match) + len(instrs)
    return b"".join((_OFP_HEADER.pack(ofp.OFP_VERSION, ofp.OFPT_FLOW_MOD, length, 0), body,
                     match, instrs))


def encode(item: Flow | Group | Meter, command: str) -> bytes:
    """A flow-, group- or meter-mod for ``item`` as wire bytes with xid 0 (see send_encoded)."""
    if isinstance(item, Flow):
        return encode_flow_mod(item, command)
    msg = group_mod(OFP13, item, command) if isinstance(item, Group) \
        else meter_mod(OFP13, item, command)
    msg.set_xid(0)
    msg.serialize()
    return bytes(msg.buf)


_SEND_CHUNK = 1 << 16


def send_encoded(dp: Any, messages: Iterable[bytes]) -> int:
    """Send encoded messages, each with the next xid of ``dp`` (what ``send_msg`` would
    give it), batched into large writes: one queue slot and one syscall per ~64 KiB
    instead of one per message.  Returns how many were sent."""
    buf, n, xid, max_xid = bytearray(), 0, dp.xid, dp.ofproto.MAX_XID
    for data in messages:
        xid = (xid + 1) & max_xid
        start = len(buf)
        buf += data
        struct.pack_into("!I", buf, start + 4, xid)
        n += 1
        if len(buf) >= _SEND_CHUNK:
            dp.xid = xid
            dp.send(bytes(buf))
            buf = bytearray()
    dp.xid = xid
    if buf:
        dp.send(bytes(buf))
    return n


def unsent_bytes(msg: Any) -> bytes | None:
    """A mod's wire bytes with xid 0, when the message takes the connection's next xid
    (none set yet); None for a message carrying its own xid (a request the sync engine
    awaits the answer of: it must keep that xid)."""
    if msg.xid is not None:
        return None
    if isinstance(msg, _EncodedFlowMod):
        return encode_flow_mod(msg.weft_flow, msg.weft_command)
    msg.set_xid(0)
    msg.serialize()
    return bytes(msg.buf)


def send_batched(dp: Any, msgs: Iterable[Any],
                 on_error: Callable[[Any, Exception], None]) -> int:
    """Send ``msgs`` in order: each run of mods as ~64 KiB writes (``send_encoded``),
    every request (it carries its xid) with ``send_msg`` after the mods before it.

    One write per message cost a queue slot, a TLS record and a syscall each: 300,000
    of them to program 10,000 endpoints on 16 hosts.  A message that cannot be encoded
    or sent is handed to ``on_error`` and the rest still go.  Returns the number sent."""
    run: list[bytes] = []
    n = 0
    for msg in msgs:
        try:
            data = unsent_bytes(msg)
        except Exception as exc:  # noqa: BLE001  (one bad message must not stop the rest)
            on_error(msg, exc)
            continue
        if data is not None:
            run.append(data)
            continue
        if run:
            n += send_encoded(dp, run)
            run = []
        try:
            dp.send_msg(msg)
            n += 1
        except Exception as exc:  # noqa: BLE001
            on_error(msg, exc)
    if run:
        n += send_encoded(dp, run)
    return n


def group_mod(dp: Datapath, group: Group, command: str) -> Any:
    """An OFPGroupMod: ``add``, ``modify`` or ``delete``."""
    ofproto, parser = dp.ofproto, dp.ofproto_parser
    if command not in _GROUP_COMMANDS:
        raise ValueError(f"group command {command!r} not in {sorted(_GROUP_COMMANDS)}")
    buckets = [] if command == "delete" else [
        parser.OFPBucket(weight=0, watch_port=ofproto.OFPP_ANY, watch_group=ofproto.OFPG_ANY,
                         actions=[_action(parser, a) for a in bucket])
        for bucket in group.buckets]
    return parser.OFPGroupMod(dp, command=_GROUP_COMMANDS[command],
                              type_=_GROUP_TYPES[group.type], group_id=group.group_id,
                              buckets=buckets)


def meter_mod(dp: Datapath, meter: Meter, command: str) -> Any:
    """An OFPMeterMod: ``add``, ``modify`` or ``delete``."""
    ofproto, parser = dp.ofproto, dp.ofproto_parser
    if command not in _METER_COMMANDS:
        raise ValueError(f"meter command {command!r} not in {sorted(_METER_COMMANDS)}")
    if command == "delete":
        return parser.OFPMeterMod(dp, command=ofproto.OFPMC_DELETE, flags=0,
                                  meter_id=meter.meter_id, bands=[])
    flags = (_METER_FLAGS_PKTPS if meter.pktps else _METER_FLAGS) \
        | (ofproto.OFPMF_BURST if meter.burst_kb else 0)
    band = parser.OFPMeterBandDrop(rate=meter.kbps, burst_size=meter.burst_kb)
    return parser.OFPMeterMod(dp, command=_METER_COMMANDS[command], flags=flags,
                              meter_id=meter.meter_id, bands=[band])


def _instruction(parser: Any, instr: tuple) -> Any:
    kind = instr[0]
    if kind == "apply":
        return parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS,
                                            [_action(parser, a) for a in instr[1]])
    if kind == "write_metadata":
        return parser.OFPInstructionWriteMetadata(instr[1], instr[2])
    if kind == "goto":
        return parser.OFPInstructionGotoTable(instr[1])
    if kind == "meter":
        return parser.OFPInstructionMeter(instr[1], ofp.OFPIT_METER)
    raise ValueError(f"unknown instruction {instr!r}")


def _action(parser: Any, action: tuple) -> Any:
    kind = action[0]
    if kind == "output":
        max_len = ofp.OFPCML_NO_BUFFER if action[1] == ofp.OFPP_CONTROLLER else 0
        return parser.OFPActionOutput(action[1], max_len)
    if kind == "set_field":
        return parser.OFPActionSetField(**{action[1]: action[2]})
    if kind == "group":
        return parser.OFPActionGroup(action[1])
    if kind == "set_queue":
        return parser.OFPActionSetQueue(action[1])
    if kind == "push_vlan":
        return parser.OFPActionPushVlan(action[1])
    if kind == "pop_vlan":
        return parser.OFPActionPopVlan()
    if kind == "learn":
        return _learn_action(parser, action[1])
    if kind == "ct":
        _, commit, zone, table = action
        return parser.NXActionCT(flags=_NX_CT_F_COMMIT if commit else 0, zone_src="",
                                 zone_ofs_nbits=zone,
                                 recirc_table=_NX_CT_RECIRC_NONE if table is None else table,
                                 alg=0, actions=[])
    if kind == "dec_ttl":      # no controller ids: TTL 0/1 drops in the datapath
        return parser.NXActionDecTtlCntIds(cnt_ids=[])
    if kind == "move":
        _, src, dst = action
        bits = _MOVE_FIELD_BITS[src]
        if _MOVE_FIELD_BITS[dst] != bits:
            raise ValueError(f"move {src} -> {dst}: fields of different widths")
        return parser.NXActionRegMove(src_field=f"{src}_nxm", dst_field=f"{dst}_nxm",
                                      n_bits=bits)
    if kind == "resubmit":
        return parser.NXActionResubmitTable(in_port=_OFPP_IN_PORT_16, table_id=action[1])
    raise ValueError(f"unknown action {action!r}")


def _learn_action(parser: Any, spec: LearnSpec) -> Any:
    specs = [parser.NXFlowSpecMatch(src=(spec.metadata >> ofs) & ((1 << n) - 1),
                                    dst=("metadata", ofs), n_bits=n)
             for ofs, n in _bit_runs(spec.metadata_mask)]
    specs.append(parser.NXFlowSpecMatch(src=("eth_src_nxm", 0), dst=("eth_dst_nxm", 0), n_bits=48))
    if spec.load_tunnel_id:
        specs.append(parser.NXFlowSpecLoad(src=("tunnel_id_nxm", 0), dst=("tunnel_id_nxm", 0),
                                           n_bits=64))
    if spec.vlan_vid is not None:
        specs.append(parser.NXFlowSpecLoad(src=_VLAN_CFI | spec.vlan_vid, dst=("vlan_tci", 0),
                                           n_bits=16))
    if spec.output_in_port:
        specs.append(parser.NXFlowSpecOutput(src=("in_port", 0), dst="", n_bits=32))
    if spec.limit:
        return NXActionLearn2(table_id=spec.table, specs=specs, limit=spec.limit,
                              idle_timeout=spec.idle_timeout, priority=spec.priority,
                              cookie=spec.cookie)
    return parser.NXActionLearn(table_id=spec.table, specs=specs, idle_timeout=spec.idle_timeout,
                                priority=spec.priority, cookie=spec.cookie)


def _bit_runs(mask: int) -> list[tuple[int, int]]:
    """Contiguous runs of 1-bits in ``mask`` as (offset, n_bits), lowest first."""
    runs, ofs = [], 0
    while mask >> ofs:
        if mask >> ofs & 1:
            n = 0
            while mask >> (ofs + n) & 1:
                n += 1
            runs.append((ofs, n))
            ofs += n
        else:
            ofs += 1
    return runs


def operator_flow_mod(dp: Datapath, of: Any, command: str) -> Any:
    """An operator flow (``controller.opflows.OperatorFlow``, ofctl JSON) as a flow-mod:
    ``add``, or ``delete`` of every flow carrying its cookie (any table)."""
    from os_ken.lib import ofctl_v1_3
    ofproto, parser = dp.ofproto, dp.ofproto_parser
    if command == "add":
        return parser.OFPFlowMod(
            dp, cookie=of.cookie, table_id=of.table_id, command=ofproto.OFPFC_ADD,
            priority=of.priority, buffer_id=ofproto.OFP_NO_BUFFER,
            match=ofctl_v1_3.to_match(dp, dict(of.match)),
            instructions=ofctl_v1_3.to_actions(dp, [dict(a) for a in of.actions]))
    if command == "delete":
        return delete_by_cookie(dp, of.cookie)
    raise ValueError(f"operator flow command {command!r} not add|delete")


def delete_by_cookie(dp: Datapath, cookie: int, mask: int = _ALL_COOKIE_BITS) -> Any:
    """Delete every flow (any table, any match) whose cookie is ``cookie`` under ``mask``."""
    ofproto, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPFlowMod(
        dp, cookie=cookie, cookie_mask=mask, table_id=ofproto.OFPTT_ALL,
        command=ofproto.OFPFC_DELETE, out_port=ofproto.OFPP_ANY,
        out_group=ofproto.OFPG_ANY, match=parser.OFPMatch())


def ofctl_printable(msg: Any) -> Any:
    """Give Nicira actions os-ken's ofctl cannot name (learn with a limit, NXAST_LEARN2)
    the raw ``data`` its formatter prints for them (``NX_UNKNOWN: {subtype, data}``);
    without it ``actions_to_str`` raises on weft's own flows."""
    for stats in msg.body if isinstance(msg.body, list) else ():
        if isinstance(stats, RawFlowStats):
            stats._materialize()
        for instr in getattr(stats, "instructions", ()) or ():
            for act in getattr(instr, "actions", ()) or ():
                if getattr(act, "experimenter", None) is not None and not hasattr(act, "data"):
                    buf = bytearray()
                    try:
                        act.serialize(buf, 0)
                    except Exception:  # noqa: BLE001  (printing must not fail)
                        pass
                    act.data = bytes(buf[8:])
    return msg


class _Ofp13:
    """A datapath stand-in for building and checking messages with no switch at hand."""

    ofproto = ofp
    ofproto_parser = ofpp
    id = 0


OFP13: Datapath = _Ofp13()


def ofctl_match_ok(dp: Datapath, match: dict) -> bool:
    """True when os-ken's ofctl understood every field of ``match`` (it skips unknown ones)."""
    from os_ken.lib import ofctl_v1_3
    try:
        return len(list(ofctl_v1_3.to_match(dp, dict(match)).items())) == len(match)
    except Exception:  # noqa: BLE001  (ofctl raises whatever a bad value provokes)
        return False


# --- os-ken -> weft -----------------------------------------------------------------
def flow_from_stats(stats: Any) -> Flow:
    """An OFPFlowStats entry as the ``Flow`` weft would have asked for."""
    match = {_oxm_name(k): v for k, v in stats.match.items()}
    return flow(stats.table_id, stats.priority, match,
                [_parse_instruction(i) for i in stats.instructions],
                stats.cookie, stats.idle_timeout)


def group_from_desc(desc: Any) -> Group:
    """An OFPGroupDescStats entry as a ``Group``."""
    return Group(desc.group_id, _GROUP_TYPE_NAMES.get(desc.type, f"unknown-{desc.type}"),
                 tuple(tuple(_parse_action(a) for a in b.actions) for b in desc.buckets))


def _oxm_name(name: str) -> str:
    return name.removesuffix("_nxm")


def _parse_instruction(instr: Any) -> tuple:
    if isinstance(instr, ofpp.OFPInstructionActions) and instr.type == ofp.OFPIT_APPLY_ACTIONS:
        return ("apply", tuple(_parse_action(a) for a in instr.actions))
    if isinstance(instr, ofpp.OFPInstructionWriteMetadata):
        return ("write_metadata", instr.metadata, instr.metadata_mask)
    if isinstance(instr, ofpp.OFPInstructionGotoTable):
        return ("goto", instr.table_id)
    if isinstance(instr, ofpp.OFPInstructionMeter):
        return ("meter", instr.meter_id)
    return ("unknown", str(instr))


def _parse_action(action: Any) -> tuple:
    if isinstance(action, ofpp.OFPActionOutput):
        return ("output", action.port)
    if isinstance(action, ofpp.OFPActionSetField):
        value = action.value.lower() if isinstance(action.value, str) else action.value
        return normal_action(("set_field", _oxm_name(action.key), value))
    if isinstance(action, ofpp.OFPActionGroup):
        return ("group", action.group_id)
    if isinstance(action, ofpp.OFPActionSetQueue):
        return ("set_queue", action.queue_id)
    if isinstance(action, ofpp.OFPActionPushVlan):
        return ("push_vlan", action.ethertype)
    if isinstance(action, ofpp.OFPActionPopVlan):
        return ("pop_vlan",)
    if isinstance(action, ofpp.NXActionLearn):
        spec = _parse_learn(action)
        if spec is not None:
            return ("learn", spec)
    if isinstance(action, ofpp.NXActionCT) and not action.zone_src and not action.alg \
            and not action.actions and not action.flags & ~_NX_CT_F_COMMIT:
        table = None if action.recirc_table == _NX_CT_RECIRC_NONE else action.recirc_table
        return ("ct", bool(action.flags & _NX_CT_F_COMMIT), action.zone_ofs_nbits, table)
    if isinstance(action, ofpp.NXActionDecTtlCntIds) and not action.cnt_ids:
        return ("dec_ttl",)
    if isinstance(action, ofpp.NXActionRegMove):
        src, dst = _oxm_name(action.src_field), _oxm_name(action.dst_field)
        bits = _MOVE_FIELD_BITS.get(src)
        if (bits is not None and _MOVE_FIELD_BITS.get(dst) == bits and action.n_bits == bits
                and action.src_ofs == 0 and action.dst_ofs == 0):
            return ("move", src, dst)
    if isinstance(action, ofpp.NXActionResubmitTable) and action.in_port == _OFPP_IN_PORT_16:
        return ("resubmit", action.table_id)
    return ("unknown", str(action))


def _parse_learn(action: Any) -> LearnSpec | None:
    """The LearnSpec an NXActionLearn expresses; None if it is not one of ours."""
    if action.hard_timeout or action.flags or action.fin_idle_timeout or action.fin_hard_timeout:
        return None
    metadata = mask = 0
    eth = load_tunnel_id = output = False
    vlan_vid = None
    for s in action.specs:
        src = (_oxm_name(s.src[0]), s.src[1]) if isinstance(s.src, tuple) else s.src
        dst = (_oxm_name(s.dst[0]), s.dst[1]) if isinstance(s.dst, tuple) else s.dst
        kind, spec = type(s).__name__, (src, dst, s.n_bits)
        if output:
            return None        # ours output last: a load after it would be another flow
        if kind == "NXFlowSpecMatch" and isinstance(src, int) and dst[0] == "metadata":
            run = ((1 << s.n_bits) - 1) << dst[1]
            metadata, mask = metadata | (src << dst[1]) & run, mask | run
        elif kind == "NXFlowSpecMatch" and spec == (("eth_src", 0), ("eth_dst", 0), 48):
            eth = True
        elif kind == "NXFlowSpecLoad" and spec == (("tunnel_id", 0), ("tunnel_id", 0), 64):
            load_tunnel_id = True
        elif (kind == "NXFlowSpecLoad" and isinstance(src, int) and dst == ("vlan_tci", 0)
              and s.n_bits == 16 and src & ~0xFFF == _VLAN_CFI and vlan_vid is None):
            vlan_vid = src & 0xFFF   # a tag with PCP 0; anything else is not ours
        elif kind == "NXFlowSpecOutput" and src == ("in_port", 0) and s.n_bits in (16, 32):
            output = True      # OXM_OF_IN_PORT (32 bits) or NXM_OF_IN_PORT (16)
        else:
            return None
    if not eth:
        return None
    return LearnSpec(table=action.table_id, priority=action.priority,
                     idle_timeout=action.idle_timeout, cookie=action.cookie,
                     metadata=metadata, metadata_mask=mask,
                     load_tunnel_id=load_tunnel_id, output_in_port=output, vlan_vid=vlan_vid,
                     limit=getattr(action, "limit", 0))


def flows_from_stats(entries: Iterable[Any]) -> frozenset[Flow]:
    """A whole flow-stats reply body as a set (entries kept as bytes: from cached parts)."""
    return frozenset(_flow_from_raw(e.raw) if type(e) is RawFlowStats and e.raw is not None
                     else flow_from_stats(e) for e in entries)


# --- flow stats read as bytes ------------------------------------------------------------
# A controller (re)start reads every weft flow of every switch back: os-ken parses each
# entry into objects (a match with netaddr MACs, instructions, actions; ~50 us each,
# 340,000 entries at 10,000 endpoints on 16 hosts).  Flow-stats replies are therefore
# kept as bytes per entry (``RawFlowStats``) and turned into ``Flow`` values from parts
# cached by their bytes: a match's normal form depends only on the match bytes, the
# instructions' only on the instruction bytes, and most of both repeat across entries
# and switches.  Anyone else looking at an entry (ofctl_rest, /v1/switches/x/flows)
# gets os-ken's full parse on first access, transparently.
_FLOW_STATS_HEAD = struct.Struct(ofp.OFP_FLOW_STATS_0_PACK_STR)
_osken_flow_stats_parser = ofpp.OFPFlowStats.parser
_stats_match_cache: dict[bytes, tuple] = {}
_stats_instructions_cache: dict[bytes, tuple] = {}


class RawFlowStats(ofpp.OFPFlowStats):  # type: ignore[misc]
    """A flow-stats entry as its wire bytes; os-ken's attributes parsed on first use."""

    def __init__(self, raw: bytes) -> None:     # no super().__init__: nothing parsed yet
        self.__dict__["raw"] = raw
        self.__dict__["length"] = len(raw)

    def _materialize(self) -> None:
        raw = self.__dict__.get("raw")
        if raw is not None:
            real = _osken_flow_stats_parser(raw, 0)
            self.__dict__.update(real.__dict__)
            self.__dict__["raw"] = None

    def __getattr__(self, name: str) -> Any:    # only for attributes not (yet) set
        if name.startswith("_") or self.__dict__.get("raw") is None:
            raise AttributeError(name)
        self._materialize()
        return getattr(self, name)

    def stringify_attrs(self) -> Any:           # str(), to_jsondict(): the parsed entry
        self._materialize()
        return ((k, v) for k, v in super().stringify_attrs() if k != "raw")


    @classmethod
    def parser(cls, buf: Any, offset: int) -> RawFlowStats:
        (length,) = struct.unpack_from("!H", buf, offset)
        if length < _FLOW_STATS_HEAD.size:
            raise ValueError(f"flow stats entry of {length} bytes")
        return cls(bytes(buf[offset:offset + length]))


# str() and to_jsondict() name the class: they read exactly as os-ken's own entry
RawFlowStats.__name__ = RawFlowStats.__qualname__ = "OFPFlowStats"
# what os-ken's multipart reply parser builds each OFPMP_FLOW entry with
ofpp.OFPFlowStatsReply.cls_stats_body_cls = RawFlowStats


_OXM_BY_NUMBER = {field: (name, width, kind) for name, (field, width, kind) in _OXM_FIELDS.items()}


def _oxm_user(kind: str, data: bytes) -> Any:
    if kind == "int":
        return int.from_bytes(data, "big")
    if kind == "mac":
        return ":".join(f"{b:02x}" for b in data)
    return ".".join(str(b) for b in data)


def _unpack_match(raw: bytes) -> tuple | None:
    """``_pack_match`` backwards, in ``flow()``'s normal form; None: not only plain OXM."""
    mtype, length = struct.unpack_from("!HH", raw, 0)
    if mtype != ofp.OFPMT_OXM:
        return None
    items: dict[str, Any] = {}
    off = 4
    while off < length:
        (head,) = struct.unpack_from("!I", raw, off)
        cls, field, hasmask, size = head >> 16, head >> 9 & 0x7F, head >> 8 & 1, head & 0xFF
        spec = _OXM_BY_NUMBER.get(field)
        if cls != _OXM_OFB or spec is None or size != spec[1] * (1 + hasmask):
            return None
        name, width, kind = spec
        value = raw[off + 4:off + 4 + width]
        items[name] = (_oxm_user(kind, value), _oxm_user(kind, raw[off + 4 + width:off + 4 + size])) \
            if hasmask else _oxm_user(kind, value)
        off += 4 + size
    return flow(0, 0, items, (), 0).match


def _flow_from_raw(raw: bytes) -> Flow:
    (_len, table, _s, _ns, priority, idle, _hard, _flags, cookie, _p, _b) = \
        _FLOW_STATS_HEAD.unpack_from(raw, 0)
    head = _FLOW_STATS_HEAD.size
    (match_len,) = struct.unpack_from("!H", raw, head + 2)
    split = head + match_len + (-match_len % 8)
    match_raw, instr_raw = raw[head:split], raw[split:]
    match = _stats_match_cache.get(match_raw)
    if match is None:
        match = _unpack_match(match_raw)
        if match is not None:
            if len(_stats_match_cache) >= _CACHE_LIMIT:
                _stats_match_cache.clear()
            _stats_match_cache[match_raw] = match
    instrs = _stats_instructions_cache.get(instr_raw)
    if match is None or instrs is None:
        full = flow_from_stats(_osken_flow_stats_parser(raw, 0))
        match, instrs = full.match, full.instructions
        for cache, key, value in ((_stats_match_cache, match_raw, match),
                                  (_stats_instructions_cache, instr_raw, instrs)):
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[key] = value
    return Flow(table, priority, match, instrs, cookie, idle)


def meter_from_config(entry: Any) -> Meter:
    """An OFPMeterConfigStats entry as a ``Meter``, equal to the desired one when the
    switch holds what ``meter_mod`` sent."""
    flags, bands = entry.flags, list(entry.bands)
    burst = flags & ofp.OFPMF_BURST
    unit = flags & ~ofp.OFPMF_BURST
    if unit not in (_METER_FLAGS, _METER_FLAGS_PKTPS) or len(bands) != 1 \
            or not isinstance(bands[0], ofpp.OFPMeterBandDrop) \
            or (burst and not bands[0].burst_size):
        return Meter(entry.meter_id, bands[0].rate if bands else 0, 0,
                     unknown=f"flags=0x{flags:x} bands={bands}")
    band = bands[0]
    return Meter(entry.meter_id, band.rate, band.burst_size if burst else 0,
                 pktps=unit == _METER_FLAGS_PKTPS)


def meters_from_config(entries: Iterable[Any]) -> frozenset[Meter]:
    """Convenience: a whole meter-config reply body as a set."""
    return frozenset(meter_from_config(e) for e in entries)


# --- requests a sync sends (controller.sync) ------------------------------------------
ROLES = {"master": ofp.OFPCR_ROLE_MASTER, "slave": ofp.OFPCR_ROLE_SLAVE,
         "equal": ofp.OFPCR_ROLE_EQUAL, "nochange": ofp.OFPCR_ROLE_NOCHANGE}
ROLE_NAMES = {v: k for k, v in ROLES.items()}


def read_request(dp: Datapath, kind: str, table: int | None = None, cookie: int = 0,
                 mask: int = 0) -> Any:
    """A read of the switch: ``ports`` (port desc), ``flows`` (flow stats of ``table``,
    None: all, for ``cookie & mask == cookie``), ``groups`` (group desc), ``meters``
    (meter config), ``aggregate`` (flow count by cookie), ``barrier``."""
    ofproto, parser = dp.ofproto, dp.ofproto_parser
    if kind == "ports":
        return parser.OFPPortDescStatsRequest(dp, 0)
    if kind in ("flows", "aggregate"):
        cls = parser.OFPFlowStatsRequest if kind == "flows" else parser.OFPAggregateStatsRequest
        return cls(dp, 0, ofproto.OFPTT_ALL if table is None else table, ofproto.OFPP_ANY,
                   ofproto.OFPG_ANY, cookie, mask, parser.OFPMatch())
    if kind == "groups":
        return parser.OFPGroupDescStatsRequest(dp, 0)
    if kind == "meters":
        return parser.OFPMeterConfigStatsRequest(dp, 0, ofproto.OFPM_ALL)
    if kind == "barrier":
        return parser.OFPBarrierRequest(dp)
    raise ValueError(f"read kind {kind!r} unknown")


def role_request(dp: Datapath, role: str, generation_id: int) -> Any:
    """An OFPRoleRequest: ``master`` or ``slave`` with the election's generation id."""
    return dp.ofproto_parser.OFPRoleRequest(dp, ROLES[role], generation_id & ((1 << 64) - 1))
