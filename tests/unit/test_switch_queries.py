"""REST-to-switch queries (controller.switch_queries): one table of queries in flight,
settled by the last reply part, an error reply, the switch's disconnect or a timeout;
os-ken's own ofctl_v1_3 readers go through the same table."""
from __future__ import annotations

import queue
import threading
from concurrent.futures import TimeoutError as FutureTimeout

import pytest
from os_ken.lib import ofctl_v1_3
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as ofpp

from controller.switch_queries import QUERY_TIMEOUT, EventQuery, Query, SwitchQueries

DPID = 0x10


class Conn:
    """A switch connection as far as building a request goes."""
    ofproto, ofproto_parser = ofp, ofpp
    id = DPID


def reply(xid: int, body: object, flags: int = 0) -> object:
    return type("Reply", (), {"xid": xid, "body": body, "flags": flags})()


def desc_query() -> Query:
    return Query(DPID, lambda dp: dp.ofproto_parser.OFPDescStatsRequest(dp, 0))


def test_reply_parts_settle_the_query_in_order_and_only_once():
    queries = SwitchQueries(lambda ev, timeout: True, {DPID: Conn()}.get)
    q = desc_query()
    msg = queries.send(q, Conn(), now=0.0)
    assert msg.xid >= 0x80000000          # never in the sync engine's range
    assert not queries.reply(DPID, reply(msg.xid + 1, []), more=False)   # not ours
    assert queries.reply(DPID, reply(msg.xid, ["a"]), more=True)
    assert not q.future.done()
    assert queries.reply(DPID, reply(msg.xid, ["b"]), more=False)
    assert [p.body for p in q.future.result(0)] == [["a"], ["b"]]
    assert not queries.reply(DPID, reply(msg.xid, ["c"]), more=False)    # settled: gone


def test_error_disconnect_and_timeout_fail_the_query():
    queries = SwitchQueries(lambda ev, timeout: True, {DPID: Conn()}.get)
    refused, dropped, silent, other = desc_query(), desc_query(), desc_query(), Query(
        DPID + 1, lambda dp: dp.ofproto_parser.OFPDescStatsRequest(dp, 0))
    xid = queries.send(refused, Conn(), now=0.0).xid
    assert queries.error(DPID, xid, 1, 2)
    with pytest.raises(LookupError, match="error type 1 code 2"):
        refused.future.result(0)
    queries.send(dropped, Conn(), now=0.0)
    queries.send(other, Conn(), now=0.0)
    queries.disconnected(DPID)
    with pytest.raises(LookupError, match="disconnected"):
        dropped.future.result(0)
    assert not other.future.done()        # another switch's query stays
    queries.send(silent, Conn(), now=100.0)
    queries.expire(100.0 + QUERY_TIMEOUT - 1)
    assert not silent.future.done()
    queries.expire(100.0 + QUERY_TIMEOUT + 1)
    with pytest.raises(TimeoutError):
        silent.future.result(0)
    assert queries.send(desc_query(), None, now=0.0) is None     # no connection: refused
    assert not queries.error(DPID, xid, 1, 2)


def test_a_full_event_queue_is_a_timeout_not_a_hang():
    queries = SwitchQueries(lambda ev, timeout: False, {DPID: Conn()}.get)
    with pytest.raises(TimeoutError, match="queue is full"):
        queries.dump_flows(DPID)


class OpenFlowThread:
    """The app's side: takes posted queries off a queue, sends them, and answers as a
    switch would (``answer(msg) -> [(body, more)]``)."""

    def __init__(self, answer) -> None:
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.queries = SwitchQueries(self.post, {DPID: Conn()}.get)
        self.answer = answer
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def post(self, ev: EventQuery, timeout: float) -> bool:
        self.events.put(ev)
        return True

    def run(self) -> None:
        while (ev := self.events.get()) is not None:
            msg = self.queries.send(ev.query, Conn(), now=0.0)
            for body, more in self.answer(msg):
                self.queries.reply(DPID, reply(msg.xid, body, ofp.OFPMPF_REPLY_MORE if more
                                               else 0), more)

    def stop(self) -> None:
        self.events.put(None)
        self.thread.join(5)


def flow_stats(priority: int) -> ofpp.OFPFlowStats:
    return ofpp.OFPFlowStats(table_id=0, duration_sec=1, duration_nsec=0, priority=priority,
                             idle_timeout=0, hard_timeout=0, flags=0, cookie=0x5746 << 48,
                             packet_count=3, byte_count=300, match=ofpp.OFPMatch(in_port=1),
                             instructions=[])


def test_dump_flows_and_os_kens_ofctl_readers_share_the_one_table():
    def answer(msg):
        if isinstance(msg, ofpp.OFPFlowStatsRequest):
            return [([flow_stats(7)], True), ([flow_stats(8)], False)]
        return [(ofpp.OFPDescStats("weft", "ovs", "3.1", "0", "br0"), False)]
    of = OpenFlowThread(answer)
    try:
        flows = of.queries.dump_flows(DPID)
        assert [f["priority"] for f in flows] == [7, 8] and flows[0]["packets"] == 3
        dp = of.queries.ofctl_datapath(DPID)
        assert ofctl_v1_3.get_desc_stats(dp, dp.waiters) == {str(DPID): {
            "mfr_desc": "weft", "hw_desc": "ovs", "sw_desc": "3.1", "serial_num": "0",
            "dp_desc": "br0"}}
        with pytest.raises(LookupError):
            of.queries.ofctl_datapath(DPID + 1)       # not connected
    finally:
        of.stop()


def test_an_unanswered_query_times_out_for_the_asker():
    of = OpenFlowThread(lambda msg: [])
    try:
        with pytest.raises(FutureTimeout):
            of.queries.ask(desc_query(), timeout=0.2)
    finally:
        of.stop()
