"""`controller.app`: the os-ken application, a thin shim over the pure core.

Handlers only translate OpenFlow events and send what `controller.pipeline`
and `controller.flows.diff` return.  A sync reads the switch (port desc, flow
stats, group desc), diffs against the desired state and sends only the delta:
stale flows deleted, groups added, flows added, stale groups deleted, then a
barrier.  Nothing is wiped on (re)connect, so controller restarts are hitless.
Work from REST threads arrives as events on this app's queue, so all switch
state is touched by one thread only.
"""
from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from os_ken.base import app_manager
from os_ken.lib import hub
from os_ken.controller import event, ofp_event
from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.ofproto import ofproto_v1_3

from controller import config, ofmsg
from controller.core import Core, Switch
from controller.flows import COOKIE_FEATURE_MASK, COOKIE_LEARNED, COOKIE_PREFIX, Flow, \
    SwitchState, apply_delta, diff, feature_of
from controller.operator import operator_cookie, reconcile
from controller.pipeline import desired_state, flow_reads
from controller.store import open_store
from cluster.hostsfile import dpid_str, host_for_dpid, load

LOG = logging.getLogger("weft.controller")
PROBE_SECONDS = 5     # a first connection silent this long, when a second one claims it, is dead


def _name(port: Any) -> str:
    return port.name.decode() if isinstance(port.name, bytes) else port.name


class EventResync(event.EventBase):
    """Ask for every switch (or one) to be diffed against the model again."""

    def __init__(self, dpid: int | None = None, audit: bool = False) -> None:
        super().__init__()
        self.dpid, self.audit = dpid, audit


class EventStats(event.EventBase):
    """Ask for a switch's live flows or meter stats; the answer is set on `future`."""

    def __init__(self, kind: str, dpid: int, future: Future) -> None:
        super().__init__()
        self.kind, self.dpid, self.future = kind, dpid, future


class EventOfctl(event.EventBase):
    """An ofctl_rest stats request to send to a switch from the OpenFlow thread."""

    def __init__(self, dpid: int, msg: Any) -> None:
        super().__init__()
        self.dpid, self.msg = dpid, msg


class EventHeartbeat(event.EventBase):
    """Posted by the watchdog; handling it proves the event loop is turning."""


STUCK_AFTER = 5.0           # seconds without a heartbeat handled: the loop is stuck
POST_TIMEOUT = 2.0          # how long a REST thread may wait for room in the event queue


class WeftController(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]
    _resync_wanted: bool
    _resync_queued: bool

    # -- no handler can end the controller -------------------------------------------
    # os-ken's native hub defines TaskExit = Exception, so its event loop re-raises
    # every handler exception and dies silently.  Every handler is wrapped here
    # instead (one place, no decorator to forget on a new handler).
    def get_handlers(self, ev: Any, state: Any = None) -> list[Callable[[Any], None]]:
        return [self._guarded(h) for h in super().get_handlers(ev, state)]

    def _guarded(self, handler: Callable[[Any], None]) -> Callable[[Any], None]:
        def run(ev: Any) -> None:
            try:
                handler(ev)
            except Exception as exc:  # noqa: BLE001  (any bug: log, count, recover)
                self._handler_failed(handler.__name__, ev, exc)
        run.__name__ = handler.__name__
        return run

    def _handler_failed(self, name: str, ev: Any, exc: Exception,
                        dpid: int | None = None) -> None:
        dpid = _dpid_of(ev) if dpid is None else dpid
        LOG.error("handler %s failed on %s for switch %s: %s: %s", name,
                  type(ev).__name__, dpid_str(dpid) if dpid is not None else "-",
                  type(exc).__name__, exc, exc_info=exc)
        errors = self.core.handler_errors
        errors[name] = errors.get(name, 0) + 1
        future = getattr(ev, "future", None)
        if isinstance(future, Future) and not future.done():
            future.set_exception(LookupError(f"the controller failed: {exc}"))
        switches = [self.core.switches[dpid]] if dpid in self.core.switches else \
            list(self.core.switches.values()) if isinstance(ev, EventResync) else []
        for sw in switches:
            sw.syncing = sw.dirty = False
            sw.known = None                 # re-read that switch, after a pause
            self._retry_later(sw.dpid)

    def _retry_later(self, dpid: int) -> None:
        """Re-read a switch whose handling failed, backing off 1 s .. 30 s (one timer each)."""
        now = time.monotonic()
        n, last = self._failures.get(dpid, (0, 0.0))
        n = 1 if now - last > 60 else n + 1
        self._failures[dpid] = (n, now)
        if dpid in self._retrying:
            return

        def fire() -> None:
            self._retrying.discard(dpid)
            self._post(EventResync(dpid, audit=True), POST_TIMEOUT)
        self._retrying.add(dpid)
        hub.spawn_after(min(30.0, 0.5 * 2 ** n), fire)

    def _post(self, ev: event.EventBase, timeout: float) -> bool:
        """Queue an event for this app without blocking longer than ``timeout``."""
        if not self._events_sem.acquire(timeout=timeout):
            return False
        self.events.put((ev, None))
        return True

    def _request_resync(self) -> None:
        """After a REST write: one pending full resync is enough; never block the writer."""
        self._resync_wanted = True
        if not self._resync_queued:
            self._resync_queued = True
            if not self._post(EventResync(), 0):
                self._resync_queued = False     # the watchdog posts it when there is room

    def _watchdog(self, interval: float = 1.0) -> None:
        while self.is_active:
            hub.sleep(interval)
            self._post(EventHeartbeat(), 0)
            if self._resync_wanted and not self._resync_queued:
                self._request_resync()

    @set_ev_cls(EventHeartbeat)
    def _heartbeat(self, _: EventHeartbeat) -> None:
        self._beat = time.monotonic()

    def loop_health(self) -> dict[str, Any]:
        """For /v1/health: is the event loop turning, and how full is its queue."""
        age = time.monotonic() - self._beat
        depth = self.events.qsize()
        alive = age < STUCK_AFTER
        return {"alive": alive, "last_heartbeat_seconds": round(age, 3),
                "queue_depth": depth, "queue_max": self.events.maxsize,
                "handler_errors": sum(self.core.handler_errors.values()),
                "reason": None if alive else
                f"the OpenFlow event loop has handled nothing for {age:.0f} s "
                f"({depth} events queued)"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        conf = config.CONF
        cluster = load(conf.weft_hosts)
        self.core = Core(open_store(conf.store, conf.weft_db), cluster)
        self._failures: dict[int, tuple[int, float]] = {}   # dpid -> (in a row, last)
        self._retrying: set[int] = set()                    # dpids with a re-read timer
        self._beat = time.monotonic()
        self._resync_wanted = False     # a REST change is waiting for a full resync
        self._resync_queued = False     # ... and its EventResync is in the queue
        self.core.on_change = self._request_resync
        self.core.loop_health = self.loop_health
        self.core.dump_flows = lambda dpid: self._stats_from_other_thread("flows", dpid)
        self.core.dump_meters = lambda dpid: self._stats_from_other_thread("meters", dpid)
        self.core.ofctl_datapath = self._ofctl_proxy
        # xid -> (bodies so far, callback(bodies)) for multipart requests in flight
        self._pending: dict[tuple[int, int], tuple[list, Callable[[list], None]]] = {}
        LOG.info("weft controller: %d hosts in %s, state in %s", len(cluster.hosts),
                 conf.weft_hosts, conf.weft_db)
        self.threads.append(hub.spawn(self._watchdog))
        if conf.weft_audit_interval > 0:
            self.threads.append(hub.spawn(self._audit_loop, conf.weft_audit_interval))
        token = conf.api_token or os.environ.get("WEFT_API_TOKEN") or None
        if conf.wsapi_port or conf.wsapi_unix:
            from controller.api import serve_in_thread
            serve_in_thread(self.core, conf.wsapi_host, conf.wsapi_port, conf.wsapi_unix, token)

    # -- connection state ---------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state_change(self, ev: Any) -> None:
        dp = ev.datapath
        if dp.id is None:
            return
        host = host_for_dpid(self.core.cluster, dp.id)
        sw = self.core.switch(dp.id)
        if ev.state == MAIN_DISPATCHER:
            if sw.connected and sw.dp is not None and sw.dp is not dp:
                self._refuse_second(sw, dp)
                return
            sw.dp, sw.connected, sw.connected_at = dp, True, time.time()
            sw.syncing = sw.dirty = False
            sw.known = None                 # never trust a cache across connections
            if host is None:
                LOG.warning("switch %s connected but is no host of hosts.yaml: left alone",
                            dpid_str(dp.id))
                return
            LOG.info("switch %s connected: host %s", dpid_str(dp.id), host.name)
            self._sync(sw)
        elif sw.dp is dp:
            sw.connected, sw.dp = False, None
            LOG.info("switch %s (host %s) disconnected; its flows stay (fail_mode secure)",
                     dpid_str(dp.id), sw.host)

    def _refuse_second(self, sw: Switch, dp: Any) -> None:
        """A second connection claims a connected datapath id: never let it replace the
        first.  Refuse it, then ask the first for a barrier: a first connection that does
        not answer within PROBE_SECONDS is dead (e.g. the host rebooted) and is closed,
        so the real switch's next reconnect gets in."""
        LOG.warning("switch %s: second connection from %s claims this datapath id while %s "
                    "is connected; refused", dpid_str(dp.id), dp.address, sw.dp.address)
        sw.refused += 1
        dp.close()
        first = sw.dp
        answered: list[bool] = []
        self._request(first, first.ofproto_parser.OFPBarrierRequest(first),
                      lambda _: answered.append(True))

        def check() -> None:
            if not answered and sw.dp is first:
                LOG.warning("switch %s: connection from %s did not answer for %ds; closed",
                            dpid_str(first.id), first.address, PROBE_SECONDS)
                first.close()
        hub.spawn_after(PROBE_SECONDS, check)

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _port_status(self, ev: Any) -> None:
        msg = ev.msg
        sw = self.core.switch(msg.datapath.id)
        if not sw.host or sw.dp is not msg.datapath:
            return
        name = _name(msg.desc)
        if msg.reason == msg.datapath.ofproto.OFPPR_DELETE:
            if sw.ports.pop(name, None) is None:
                return
        elif sw.ports.get(name) == msg.desc.port_no:
            return                  # a link-state change: nothing for the flows
        else:
            sw.ports[name] = msg.desc.port_no
        self._sync(sw)              # a port came or went: its flows follow

    @set_ev_cls(EventResync)
    def _resync(self, ev: EventResync) -> None:
        if ev.dpid is None and not ev.audit:
            self._resync_queued = self._resync_wanted = False
        for sw in list(self.core.switches.values()):
            if sw.connected and sw.host and (ev.dpid is None or ev.dpid == sw.dpid):
                if ev.audit and not sw.syncing:
                    sw.known = None         # read the switch again: catches outside edits
                try:                        # one switch failing must not starve the others
                    self._sync(sw)
                except Exception as exc:  # noqa: BLE001
                    self._handler_failed("_resync", ev, exc, sw.dpid)

    def _audit_loop(self, interval: float) -> None:
        while True:
            hub.sleep(interval)
            self._post(EventResync(audit=True), POST_TIMEOUT)

    # -- multipart plumbing ----------------------------------------------------------
    def _request(self, dp: Any, msg: Any, done: Callable[[list], None]) -> None:
        dp.set_xid(msg)
        self._pending[(dp.id, msg.xid)] = ([], done)
        dp.send_msg(msg)

    def _reply(self, ev: Any) -> None:
        msg = ev.msg
        key = (msg.datapath.id, msg.xid)
        waiting = self.core.ofctl_waiters.get(msg.datapath.id, {})
        # The sync's own requests first: os-ken starts each switch's xids at a random
        # value, so an ofctl_rest xid may collide with one; a sync must never lose its reply.
        if msg.xid in waiting and key not in self._pending:  # an ofctl_rest request
            lock, msgs = waiting[msg.xid]
            msgs.append(ofmsg.ofctl_printable(msg))
            if not msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE:
                waiting.pop(msg.xid, None)
                lock.set()
            return
        if key not in self._pending or self.core.switch(msg.datapath.id).dp is not msg.datapath:
            return              # not asked, or from a connection that is not the switch's
        bodies, done = self._pending[key]
        bodies.extend(msg.body)
        if not msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE:
            del self._pending[key]
            done(bodies)

    @set_ev_cls([ofp_event.EventOFPDescStatsReply, ofp_event.EventOFPAggregateStatsReply,
                 ofp_event.EventOFPTableStatsReply, ofp_event.EventOFPPortStatsReply,
                 ofp_event.EventOFPGroupStatsReply, ofp_event.EventOFPGroupFeaturesStatsReply,
                 ofp_event.EventOFPMeterFeaturesStatsReply, ofp_event.EventOFPQueueStatsReply],
                MAIN_DISPATCHER)
    def _ofctl_reply(self, ev: Any) -> None:
        self._reply(ev)

    @set_ev_cls(EventOfctl)
    def _ofctl_send(self, ev: EventOfctl) -> None:
        """An ofctl_rest stats request, sent from this thread (xid set by the REST side)."""
        sw = self.core.switches.get(ev.dpid)
        if sw is not None and sw.dp is not None:
            sw.dp.send_msg(ev.msg)

    def _ofctl_proxy(self, dpid: int) -> Any:
        sw = self.core.switches.get(dpid)
        if sw is None or sw.dp is None:
            raise LookupError("switch not connected")
        return _OfctlDatapath(self, dpid, sw.dp)

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    def _port_desc_reply(self, ev: Any) -> None:
        self._reply(ev)

    @set_ev_cls(ofp_event.EventOFPFlowStatsReply, MAIN_DISPATCHER)
    def _flow_stats_reply(self, ev: Any) -> None:
        self._reply(ev)

    @set_ev_cls(ofp_event.EventOFPGroupDescStatsReply, MAIN_DISPATCHER)
    def _group_desc_reply(self, ev: Any) -> None:
        self._reply(ev)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _barrier_reply(self, ev: Any) -> None:
        key = (ev.msg.datapath.id, ev.msg.xid)
        if key in self._pending:
            self._pending.pop(key)[1]([])

    @set_ev_cls(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)
    def _error(self, ev: Any) -> None:
        msg = ev.msg
        LOG.error("switch %s refused a message: type %d code %d", dpid_str(msg.datapath.id),
                  msg.type, msg.code)
        sw = self.core.switch(msg.datapath.id)
        sw.known = None             # what we believed it holds is wrong: read it next time

    # -- sync: read, diff, send the delta -----------------------------------------------
    def _sync(self, sw: Switch) -> None:
        """Bring one switch to the desired state; read it first unless we know it."""
        if sw.syncing:
            sw.dirty = True
            return
        sw.syncing, sw.dirty = True, False
        started = time.monotonic()
        version = self.core.store.version
        if sw.known is not None:
            self._apply(sw, sw.known, started, version)
            return
        dp, parser, ofp = sw.dp, sw.dp.ofproto_parser, sw.dp.ofproto
        got: dict[str, list] = {}

        def collect(kind: str) -> Callable[[list], None]:
            def done(bodies: list) -> None:
                got[kind] = bodies
                if len(got) == 4 and sw.dp is dp:
                    sw.ports = {_name(p): p.port_no for p in got["ports"]
                                if p.port_no < ofp.OFPP_MAX}
                    have = SwitchState(ofmsg.flows_from_stats(got["flows"]),
                                       frozenset(ofmsg.group_from_desc(g) for g in got["groups"]),
                                       frozenset(ofmsg.meter_from_config(m)
                                                 for m in got["meters"]))
                    self._apply(sw, have, started, version)
            return done

        self._request(dp, parser.OFPPortDescStatsRequest(dp, 0), collect("ports"))
        # only weft's own flows, never the learned MACs: a MAC flood cannot inflate this
        reads, parts = flow_reads(), []

        def flows_part(bodies: list) -> None:
            parts.append(bodies)
            if len(parts) == len(reads):
                collect("flows")([b for part in parts for b in part])
        for table, cookie, mask in reads:
            self._request(dp, _flows_request(dp, table, cookie, mask), flows_part)
        self._count_learned(sw)
        self._request(dp, parser.OFPGroupDescStatsRequest(dp, 0), collect("groups"))
        self._request(dp, parser.OFPMeterConfigStatsRequest(dp, 0, ofp.OFPM_ALL),
                      collect("meters"))

    def _apply(self, sw: Switch, have: SwitchState, started: float, version: int) -> None:
        dp = sw.dp
        want = desired_state(sw.host, self.core.topology(), sw.ports, self.core.tunnels(sw.host))
        delta = diff(want, have)
        # deletes first, then what new flows point at, then the flows, stale groups
        # and meters last (no flow refers to them any more)
        plan = ((delta.delete_flows, ofmsg.flow_mod, "delete_strict"),
                (delta.add_meters, ofmsg.meter_mod, "add"),
                (delta.modify_meters, ofmsg.meter_mod, "modify"),
                (delta.modify_groups, ofmsg.group_mod, "modify"),
                (delta.add_groups, ofmsg.group_mod, "add"),
                (delta.add_flows, ofmsg.flow_mod, "add"),
                (delta.delete_groups, ofmsg.group_mod, "delete"),
                (delta.delete_meters, ofmsg.meter_mod, "delete"))
        for items, build, command in plan:
            for item in items:
                dp.send_msg(build(dp, item, command))
        known = apply_delta(have, delta)
        # operator flows: never diffed; the missing come back, the unstored go
        op_add, op_delete = reconcile(self.core.store.operator_flows(sw.dpid), have)
        for of in op_add:
            try:
                dp.send_msg(ofmsg.operator_flow_mod(dp, of, "add"))
            except Exception as exc:  # noqa: BLE001  (a bad stored flow must not stop sync)
                LOG.error("switch %s: operator flow %d cannot be sent: %s", dpid_str(sw.dpid),
                          of.id, exc)
        for op_id in op_delete:
            dp.send_msg(ofmsg.operator_flow_mod(dp, _OpRef(operator_cookie(op_id)), "delete"))
        if op_add or op_delete:
            gone = {operator_cookie(i) for i in op_delete}
            known = SwitchState(frozenset({f for f in known.flows if f.cookie not in gone} | {
                Flow(of.table_id, of.priority, (("operator_id", of.id),), (), of.cookie)
                for of in op_add}), known.groups, known.meters)
            sw.operator_mods += len(op_add) + len(op_delete)
        sw.known = known
        n_flows = len(delta.delete_flows) + len(delta.add_flows)
        n_groups = len(delta.add_groups) + len(delta.modify_groups) + len(delta.delete_groups)
        n_meters = len(delta.add_meters) + len(delta.modify_meters) + len(delta.delete_meters)
        sw.flow_mods += n_flows
        sw.group_mods += n_groups
        sw.meter_mods += n_meters
        sw.syncs += 1

        def finished(_: list) -> None:
            sw.syncing = False
            sw.synced_version = version
            sw.last_sync = {"at": time.time(), "seconds": round(time.monotonic() - started, 4),
                            "flows_desired": len(want.flows), "flows_on_switch": len(have.flows),
                            "flow_mods": n_flows, "group_mods": n_groups, "meter_mods": n_meters}
            if n_flows or n_groups or n_meters:
                LOG.info("switch %s (%s): sent %d flow-mods, %d group-mods, %d meter-mods "
                         "in %.3fs", dpid_str(sw.dpid), sw.host, n_flows, n_groups, n_meters,
                         time.monotonic() - started)
            if sw.dirty and sw.dp is dp:
                self._sync(sw)
        self._request(dp, dp.ofproto_parser.OFPBarrierRequest(dp), finished)

    # -- live state for the REST API -----------------------------------------------------
    def _stats_from_other_thread(self, kind: str, dpid: int, timeout: float = 5) -> list[dict]:
        fut: Future = Future()
        if not self._post(EventStats(kind, dpid, fut), POST_TIMEOUT):
            raise TimeoutError("the controller's event queue is full")
        return fut.result(timeout)

    @set_ev_cls(EventStats)
    def _stats(self, ev: EventStats) -> None:
        sw = self.core.switches.get(ev.dpid)
        if not sw or not sw.dp:
            ev.future.set_exception(LookupError("switch not connected"))
            return
        dp, parser, ofp = sw.dp, sw.dp.ofproto_parser, sw.dp.ofproto
        if ev.kind == "flows":    # weft's flows, learned ones included (learn limits bound them)
            req = _flows_request(dp, None, COOKIE_PREFIX, 0xFFFF << 48)
            render = _flow_json
        else:
            req = parser.OFPMeterStatsRequest(dp, 0, ofp.OFPM_ALL)
            render = _meter_json
        self._request(dp, req, lambda bodies: ev.future.set_result([render(b) for b in bodies]))

    # -- learned MACs: counted by the switch, never read ---------------------------------
    def _count_learned(self, sw: Switch) -> None:
        dp = sw.dp
        ofp, parser = dp.ofproto, dp.ofproto_parser
        req = parser.OFPAggregateStatsRequest(dp, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY,
                                              COOKIE_LEARNED, COOKIE_FEATURE_MASK,
                                              parser.OFPMatch())

        def done(bodies: list) -> None:
            sw.learned_flows = bodies[0].flow_count if bodies else 0
        self._request(dp, req, done)

    @set_ev_cls(ofp_event.EventOFPAggregateStatsReply, MAIN_DISPATCHER)
    def _aggregate_reply(self, ev: Any) -> None:
        key = (ev.msg.datapath.id, ev.msg.xid)
        if key in self._pending:
            self._pending.pop(key)[1]([ev.msg.body])

    @set_ev_cls(ofp_event.EventOFPMeterStatsReply, MAIN_DISPATCHER)
    def _meter_stats_reply(self, ev: Any) -> None:
        self._reply(ev)

    @set_ev_cls(ofp_event.EventOFPMeterConfigStatsReply, MAIN_DISPATCHER)
    def _meter_config_reply(self, ev: Any) -> None:
        self._reply(ev)


_OFCTL_XIDS = itertools.count(0x80000000)     # see _reply for a collision with a sync's


class _OfctlDatapath:
    """What os-ken's ofctl_v1_3 helpers need of a datapath, for a REST thread: messages
    go out through the app's event queue, replies come back via ``core.ofctl_waiters``."""

    def __init__(self, app: WeftController, dpid: int, dp: Any) -> None:
        self.id, self.ofproto, self.ofproto_parser = dpid, dp.ofproto, dp.ofproto_parser
        self._app = app

    def set_xid(self, msg: Any) -> None:
        msg.set_xid(next(_OFCTL_XIDS) & 0xFFFFFFFF)

    def send_msg(self, msg: Any) -> None:
        if msg.xid is None:
            self.set_xid(msg)
        if not self._app._post(EventOfctl(self.id, msg), POST_TIMEOUT):
            raise TimeoutError("the controller's event queue is full")


class _OpRef:
    """Just the cookie of an operator flow: what a delete by cookie needs."""

    def __init__(self, cookie: int) -> None:
        self.cookie = cookie


def _dpid_of(ev: Any) -> int | None:
    """The switch an event is about, when it is about one."""
    for holder in (getattr(ev, "msg", None), ev):
        dp = getattr(holder, "datapath", None)
        if dp is not None and getattr(dp, "id", None) is not None:
            return dp.id
    dpid = getattr(ev, "dpid", None)
    return dpid if isinstance(dpid, int) else None


def _flows_request(dp: Any, table: int | None, cookie: int, mask: int) -> Any:
    """Flow stats of ``table`` (None: all) for flows with ``cookie & mask == cookie``."""
    ofp, parser = dp.ofproto, dp.ofproto_parser
    return parser.OFPFlowStatsRequest(dp, 0, ofp.OFPTT_ALL if table is None else table,
                                      ofp.OFPP_ANY, ofp.OFPG_ANY, cookie, mask, parser.OFPMatch())


def _flow_json(s: Any) -> dict:
    return {"feature": feature_of(s.cookie) or "foreign", "cookie": hex(s.cookie),
            "table": s.table_id, "priority": s.priority, "match": dict(s.match.items()),
            "instructions": [str(i) for i in s.instructions], "packets": s.packet_count,
            "bytes": s.byte_count, "idle_timeout": s.idle_timeout, "duration": s.duration_sec}


def _meter_json(s: Any) -> dict:
    """Passed = counted in minus dropped by the band (one drop band per weft meter)."""
    dropped_p = sum(b.packet_band_count for b in s.band_stats)
    dropped_b = sum(b.byte_band_count for b in s.band_stats)
    return {"meter_id": s.meter_id, "packets_in": s.packet_in_count,
            "bytes_in": s.byte_in_count, "packets_dropped": dropped_p,
            "bytes_dropped": dropped_b, "packets_passed": s.packet_in_count - dropped_p,
            "bytes_passed": s.byte_in_count - dropped_b, "flows": s.flow_count,
            "duration": s.duration_sec}
