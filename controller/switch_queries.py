"""Questions REST threads ask a connected switch (its live flows, meter stats, Ryu's
ofctl_rest reads), and the one place their answers meet them again.

Only the OpenFlow thread talks to switches, so a REST thread never sends: it wraps
its question in a `Query`, posts it as an `EventQuery` on the app's event queue and
waits on the query's `Future`.  The OpenFlow thread gives it an xid, keeps it in
one table keyed by (dpid, xid) until the last part of the answer, an error reply,
the switch's disconnect or `QUERY_TIMEOUT` settles it, and sends it.  The app's
own liveness probe of a switch (a barrier) is a query too.

Xids of queries are 0x80000000 and above: the sync engine's are below
(`controller.sync`), so a reply is never mistaken for the other's.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from os_ken.controller import event

from controller import ofmsg
from controller.flows import COOKIE_PREFIX, feature_of

QUERY_TIMEOUT = 10.0    # an unanswered query is forgotten (and fails) after this long
POST_TIMEOUT = 2.0      # how long a REST thread may wait for room in the event queue
ANSWER_TIMEOUT = 5.0    # how long a REST thread waits for a switch's answer
_XID_BASE = 0x80000000

Post = Callable[[event.EventBase, float], bool]


def _as_is(msg: Any) -> Any:
    return msg


@dataclass
class Query:
    """One request to one switch: ``build(datapath)`` makes the message on the OpenFlow
    thread; each reply part goes through ``keep`` into ``parts``; ``future`` gets
    ``parts`` after the last one, or the reason there is no answer."""

    dpid: int
    build: Callable[[Any], Any]
    keep: Callable[[Any], Any] = _as_is
    parts: list[Any] = field(default_factory=list)
    future: Future = field(default_factory=Future)
    asked: float = 0.0

    def fail(self, exc: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


class EventQuery(event.EventBase):
    """A REST thread's `Query`, to be sent from the OpenFlow thread."""

    def __init__(self, query: Query) -> None:
        super().__init__()
        self.query, self.dpid = query, query.dpid     # dpid: for the app's error log


class SwitchQueries:
    """The table of queries in flight: the REST side asks (`ask`, `dump_flows`,
    `dump_meters`, `dump_port_stats`, `ofctl_datapath`); the OpenFlow thread sends (`send`) and settles
    (`reply`, `error`, `expire`, `disconnected`)."""

    def __init__(self, post: Post, connection: Callable[[int], Any | None]) -> None:
        self._post = post                    # queue an event on the OpenFlow thread
        self._connection = connection        # dpid -> its live connection, or None
        self._pending: dict[tuple[int, int], Query] = {}    # OpenFlow thread only
        self._xids = itertools.count()

    def next_xid(self) -> int:
        """An xid of the queries' range (any thread: ``count`` is atomic)."""
        return _XID_BASE | (next(self._xids) & 0x7FFFFFFF)

    # -- REST threads ---------------------------------------------------------------
    def submit(self, query: Query) -> None:
        """Hand ``query`` to the OpenFlow thread; TimeoutError when its queue stays full."""
        if not self._post(EventQuery(query), POST_TIMEOUT):
            raise TimeoutError("the controller's event queue is full")

    def ask(self, query: Query, timeout: float = ANSWER_TIMEOUT) -> list[Any]:
        """The reply messages of ``query`` (LookupError: no switch or refused;
        TimeoutError: no answer)."""
        self.submit(query)
        return query.future.result(timeout)

    def dump_flows(self, dpid: int, cookie: int = COOKIE_PREFIX,
                   mask: int = 0xFFFF << 48) -> list[dict[str, Any]]:
        """weft's flows on the switch, learned ones included (learn limits bound them);
        ``cookie``/``mask``: only those flows (e.g. one feature's, for its counters)."""
        parts = self.ask(Query(dpid, lambda dp: ofmsg.read_request(
            dp, "flows", None, cookie, mask)))
        return [flow_json(s) for msg in parts for s in msg.body]

    def dump_port_stats(self, dpid: int) -> list[dict[str, Any]]:
        """Every port's counters (OFPPortStats), LOCAL included."""
        parts = self.ask(Query(dpid, lambda dp: dp.ofproto_parser.OFPPortStatsRequest(
            dp, 0, dp.ofproto.OFPP_ANY)))
        return [port_stats_json(s) for msg in parts for s in msg.body]

    def dump_meters(self, dpid: int) -> list[dict[str, Any]]:
        parts = self.ask(Query(dpid, lambda dp: dp.ofproto_parser.OFPMeterStatsRequest(
            dp, 0, dp.ofproto.OFPM_ALL)))
        return [meter_json(s) for msg in parts for s in msg.body]

    def ofctl_datapath(self, dpid: int) -> OfctlDatapath:
        """A datapath for os-ken's ofctl_v1_3 helpers (LookupError: not connected)."""
        dp = self._connection(dpid)
        if dp is None:
            raise LookupError("switch not connected")
        return OfctlDatapath(self, dpid, dp)

    # -- the OpenFlow thread ---------------------------------------------------------
    def send(self, query: Query, dp: Any | None, now: float) -> Any | None:
        """The message to send for ``query`` on connection ``dp``, now in the table;
        None (and the query failed) when the switch is not connected."""
        if dp is None:
            query.fail(LookupError("switch not connected"))
            return None
        msg = query.build(dp)
        if msg.xid is None:
            msg.set_xid(self.next_xid())
        query.asked = now
        self._pending[(query.dpid, msg.xid)] = query
        return msg

    def reply(self, dpid: int, msg: Any, more: bool) -> bool:
        """A reply part; True when it answered a query."""
        query = self._pending.get((dpid, msg.xid))
        if query is None:
            return False
        query.parts.append(query.keep(msg))
        if not more:
            del self._pending[(dpid, msg.xid)]
            if not query.future.done():
                query.future.set_result(query.parts)
        return True

    def error(self, dpid: int, xid: int, type_: int, code: int) -> bool:
        """An error reply; True when it refused a query."""
        query = self._pending.pop((dpid, xid), None)
        if query is None:
            return False
        query.fail(LookupError(f"the switch refused it: error type {type_} code {code}"))
        return True

    def expire(self, now: float) -> None:
        """Fail the queries unanswered for QUERY_TIMEOUT (``now``: time.monotonic)."""
        for key, query in list(self._pending.items()):
            if now - query.asked > QUERY_TIMEOUT:
                del self._pending[key]
                query.fail(TimeoutError("the switch did not answer"))

    def disconnected(self, dpid: int) -> None:
        for key in [k for k in self._pending if k[0] == dpid]:
            self._pending.pop(key).fail(LookupError("switch disconnected"))


class OfctlDatapath:
    """What os-ken's ofctl_v1_3 helpers need of a datapath, for a REST thread.

    A helper registers ``waiters[dpid][xid] = (event, msgs)`` and calls `send_msg`; the
    request becomes a `Query` whose reply parts land in ``msgs`` (printable by ofctl)
    and whose end sets the event.  ``waiters`` belongs to this one stand-in."""

    def __init__(self, queries: SwitchQueries, dpid: int, dp: Any) -> None:
        self.id, self.ofproto, self.ofproto_parser = dpid, dp.ofproto, dp.ofproto_parser
        self.waiters: dict[int, dict[int, Any]] = {}
        self._queries = queries

    def set_xid(self, msg: Any) -> None:
        msg.set_xid(self._queries.next_xid())

    def send_msg(self, msg: Any) -> None:
        if msg.xid is None:
            self.set_xid(msg)
        done, msgs = self.waiters[self.id][msg.xid]
        query = Query(self.id, lambda _dp: msg, keep=ofmsg.ofctl_printable, parts=msgs)
        query.future.add_done_callback(lambda _: done.set())
        self._queries.submit(query)


def flow_json(s: Any) -> dict:
    return {"feature": feature_of(s.cookie) or "foreign", "cookie": hex(s.cookie),
            "table": s.table_id, "priority": s.priority, "match": dict(s.match.items()),
            "instructions": [str(i) for i in s.instructions], "packets": s.packet_count,
            "bytes": s.byte_count, "idle_timeout": s.idle_timeout, "duration": s.duration_sec}


def port_stats_json(s: Any) -> dict:
    return {"port_no": s.port_no, "rx_packets": s.rx_packets, "tx_packets": s.tx_packets,
            "rx_bytes": s.rx_bytes, "tx_bytes": s.tx_bytes, "rx_dropped": s.rx_dropped,
            "tx_dropped": s.tx_dropped, "rx_errors": s.rx_errors, "tx_errors": s.tx_errors}


def meter_json(s: Any) -> dict:
    """Passed = counted in minus dropped by the band (one drop band per weft meter)."""
    dropped_p = sum(b.packet_band_count for b in s.band_stats)
    dropped_b = sum(b.byte_band_count for b in s.band_stats)
    return {"meter_id": s.meter_id, "packets_in": s.packet_in_count,
            "bytes_in": s.byte_in_count, "packets_dropped": dropped_p,
            "bytes_dropped": dropped_b, "packets_passed": s.packet_in_count - dropped_p,
            "bytes_passed": s.byte_in_count - dropped_b, "flows": s.flow_count,
            "duration": s.duration_sec}
