"""The few DNS messages weft's resolver reads and writes (RFC 1035), as plain bytes.

Pure: no sockets.  The resolver answers one question per query (what every stub and
Docker's embedded resolver send); anything else it forwards untouched or refuses.
Why not a library: the messages needed are small (A and PTR answers, NXDOMAIN, NODATA),
and no DNS package is among the project's dependencies.
"""
from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

TYPE_A, TYPE_PTR, TYPE_AAAA, TYPE_OPT = 1, 12, 28, 41
CLASS_IN = 1
RCODE_OK, RCODE_FORMERR, RCODE_SERVFAIL, RCODE_NXDOMAIN, RCODE_REFUSED = 0, 1, 2, 3, 5
FLAG_QR, FLAG_AA, FLAG_TC, FLAG_RD, FLAG_RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080
OPCODE_MASK = 0x7800
HEADER = struct.Struct("!HHHHHH")
MAX_UDP = 512                   # a client that sent no EDNS size takes no more
TTL = 5                         # seconds: records follow containers, caches must not


class WireError(ValueError):
    """Not a DNS message weft can read."""


@dataclass(frozen=True)
class Query:
    """One DNS query: its id, flags, the question (name lower-cased, no trailing dot)."""

    id: int
    flags: int
    name: str
    qtype: int
    qclass: int
    question: bytes             # the question section as sent (echoed in answers)

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_QR)


def _read_name(msg: bytes, at: int) -> tuple[str, int]:
    """A name without compression (a question's), and the offset after it."""
    labels = []
    total = 0
    while True:
        if at >= len(msg):
            raise WireError("name runs past the message")
        n = msg[at]
        at += 1
        if n == 0:
            break
        if n & 0xC0:
            raise WireError("compressed or extended label in a question")
        label = msg[at:at + n]
        if len(label) != n:
            raise WireError("label runs past the message")
        total += n + 1
        if total > 255:
            raise WireError("name longer than 255 bytes")
        labels.append(label.decode("ascii", "replace").lower())
        at += n
    return ".".join(labels), at


def parse_query(msg: bytes) -> Query:
    """The header and first question; raises WireError for anything else."""
    if len(msg) < HEADER.size:
        raise WireError("shorter than a DNS header")
    qid, flags, qdcount, _an, _ns, _ar = HEADER.unpack_from(msg)
    if qdcount != 1:
        raise WireError(f"{qdcount} questions (one expected)")
    name, at = _read_name(msg, HEADER.size)
    if at + 4 > len(msg):
        raise WireError("question runs past the message")
    qtype, qclass = struct.unpack_from("!HH", msg, at)
    return Query(qid, flags, name, qtype, qclass, msg[HEADER.size:at + 4])


def encode_name(name: str) -> bytes:
    out = b""
    for label in name.strip(".").split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise WireError(f"bad label {label!r}")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def _header(q: Query, rcode: int, ancount: int) -> bytes:
    flags = FLAG_QR | FLAG_AA | FLAG_RA | (q.flags & (OPCODE_MASK | FLAG_RD)) | rcode
    return HEADER.pack(q.id, flags, 1, ancount, 0, 0)


def _answer(rtype: int, rdata: bytes, ttl: int) -> bytes:
    # the owner is the question's name: a pointer to offset 12, where it starts
    return struct.pack("!HHHIH", 0xC00C, rtype, CLASS_IN, ttl, len(rdata)) + rdata


def reply(q: Query, rcode: int = RCODE_OK, a: tuple[str, ...] = (), ptr: tuple[str, ...] = (),
          ttl: int = TTL) -> bytes:
    """The answer to ``q``: A records ``a``, PTR records ``ptr``, or none (NODATA when
    rcode is OK, else the error).  Truncated (TC, fewer records) past 512 bytes."""
    records = [_answer(TYPE_A, ipaddress.IPv4Address(ip).packed, ttl) for ip in a]
    records += [_answer(TYPE_PTR, encode_name(n), ttl) for n in ptr]
    body, kept = q.question, 0
    for r in records:
        if HEADER.size + len(body) + len(r) > MAX_UDP:
            break
        body += r
        kept += 1
    head = bytearray(_header(q, rcode, kept))
    if kept < len(records):
        head[2] |= FLAG_TC >> 8
    return bytes(head) + body


def error(msg: bytes, rcode: int) -> bytes | None:
    """An error answer to a message that may not parse as a query (only its id and
    question are echoed); None when not even a header is there."""
    try:
        return reply(parse_query(msg), rcode)
    except WireError:
        if len(msg) < HEADER.size:
            return None
        qid, flags = struct.unpack_from("!HH", msg)
        return HEADER.pack(qid, FLAG_QR | (flags & (OPCODE_MASK | FLAG_RD)) | rcode, 0, 0, 0, 0)


def reverse_name(ip: str) -> str:
    """10.0.0.5 -> 5.0.0.10.in-addr.arpa"""
    return ".".join(reversed(str(ipaddress.IPv4Address(ip)).split("."))) + ".in-addr.arpa"


def ptr_address(name: str) -> str | None:
    """5.0.0.10.in-addr.arpa -> 10.0.0.5; None for anything else."""
    suffix = ".in-addr.arpa"
    if not name.endswith(suffix):
        return None
    parts = name[:-len(suffix)].split(".")
    if len(parts) != 4:
        return None
    try:
        return str(ipaddress.IPv4Address(".".join(reversed(parts))))
    except ValueError:
        return None


def response_id(msg: bytes) -> int | None:
    """The id of a response (QR set); None for a query or a runt."""
    if len(msg) < HEADER.size:
        return None
    qid, flags = struct.unpack_from("!HH", msg)
    return qid if flags & FLAG_QR else None


def with_id(msg: bytes, qid: int) -> bytes:
    return struct.pack("!H", qid) + msg[2:]


def query(name: str, qtype: int = TYPE_A, qid: int = 0x5745, rd: bool = True) -> bytes:
    """A query message (for clients: tests, the lab's probes)."""
    return HEADER.pack(qid, FLAG_RD if rd else 0, 1, 0, 0, 0) + encode_name(name) \
        + struct.pack("!HH", qtype, CLASS_IN)


def _read_any_name(msg: bytes, at: int) -> tuple[str, int]:
    """A name with compression pointers, and the offset after it."""
    labels: list[str] = []
    end = None
    for _ in range(128):
        if at >= len(msg):
            raise WireError("name runs past the message")
        n = msg[at]
        if n & 0xC0 == 0xC0:
            if at + 1 >= len(msg):
                raise WireError("pointer runs past the message")
            end = at + 2 if end is None else end
            at = ((n & 0x3F) << 8) | msg[at + 1]
            continue
        if n == 0:
            return ".".join(labels), (at + 1 if end is None else end)
        labels.append(msg[at + 1:at + 1 + n].decode("ascii", "replace").lower())
        at += 1 + n
    raise WireError("pointer loop")


@dataclass(frozen=True)
class Answer:
    """What a client reads from a response."""

    id: int
    flags: int
    rcode: int
    a: tuple[str, ...]
    ptr: tuple[str, ...]


def parse_answer(msg: bytes) -> Answer:
    """The A and PTR records of a response's answer section; raises WireError."""
    if len(msg) < HEADER.size:
        raise WireError("shorter than a DNS header")
    qid, flags, qd, an, _ns, _ar = HEADER.unpack_from(msg)
    at = HEADER.size
    for _ in range(qd):
        _, at = _read_any_name(msg, at)
        at += 4
    a, ptr = [], []
    for _ in range(an):
        _, at = _read_any_name(msg, at)
        if at + 10 > len(msg):
            raise WireError("record runs past the message")
        rtype, _cls, _ttl, rdlen = struct.unpack_from("!HHIH", msg, at)
        at += 10
        rdata = msg[at:at + rdlen]
        if rtype == TYPE_A and rdlen == 4:
            a.append(str(ipaddress.IPv4Address(rdata)))
        elif rtype == TYPE_PTR:
            ptr.append(_read_any_name(msg, at)[0])
        at += rdlen
    return Answer(qid, flags, flags & 0xF, tuple(a), tuple(ptr))
