"""`controller.app`: the os-ken application, a thin shim over the sync engine.

Handlers translate OpenFlow events into calls of `controller.sync.SyncEngine`
(connect, replies, errors, barrier and role replies, port status, model change,
the 1 s tick, disconnect) and hand what it returns to the switch's sender
(`controller.sender`).  The engine reads, diffs and sends only the delta (see its
docstring); nothing is wiped on (re)connect, so controller restarts are hitless.
Work from REST threads arrives as events on this app's queue, so switch state is
touched by one thread only; REST threads read the immutable snapshots the engine
publishes (`Core.switches`) and ask switches through `controller.switch_queries`.
The app is the `core.OpenFlowSide` the REST side talks to.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from os_ken.base import app_manager
from os_ken.lib import hub
from os_ken.controller import event, ofp_event
from os_ken.controller.handler import DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.ofproto import ofproto_v1_3

from controller import config, ofmsg
from controller.core import Core
from controller.flows import COOKIE_PREFIX
from controller.sender import Senders
from controller.store.open import open_configured
from controller.switch_queries import POST_TIMEOUT, EventQuery, OfctlDatapath, Query, SwitchQueries
from controller.sync import SyncEngine
from cluster.hostsfile import datapath_id, dpid_str, host_for_dpid, load

LOG = logging.getLogger("weft.controller")
PROBE_SECONDS = 5     # a first connection silent this long, when a second one claims it, is dead
STUCK_AFTER = 5.0     # seconds without a heartbeat handled: the loop is stuck


def _name(port: Any) -> str:
    return port.name.decode() if isinstance(port.name, bytes) else port.name


class EventResync(event.EventBase):
    """The model changed (read it once, diff every switch), or (audit) re-read switches."""

    def __init__(self, dpid: int | None = None, audit: bool = False) -> None:
        super().__init__()
        self.dpid, self.audit = dpid, audit


class EventRole(event.EventBase):
    """`set_role` from another thread (the election): apply it on the OpenFlow thread."""

    def __init__(self, role: str, generation_id: int) -> None:
        super().__init__()
        self.role, self.generation_id = role, generation_id


class EventHeartbeat(event.EventBase):
    """Posted by the watchdog; handling it proves the event loop is turning (and ticks).

    The tick uses the time it was posted: every reply that arrived before then was
    handled first (one FIFO queue), so a busy loop never times out a switch whose
    answer is merely waiting in the queue."""

    def __init__(self) -> None:
        super().__init__()
        self.posted = time.time()


class EventSent(event.EventBase):
    """A sender finished a batch: the switch's answers are due from ``posted`` on."""

    def __init__(self, dpid: int) -> None:
        super().__init__()
        self.dpid, self.posted = dpid, time.time()


class EventSendFailed(event.EventBase):
    """A sender thread could not encode or send a message: re-read that switch."""

    def __init__(self, dpid: int, error: str) -> None:
        super().__init__()
        self.dpid, self.error = dpid, error


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

    def _handler_failed(self, name: str, ev: Any, exc: Exception) -> None:
        dpid = _dpid_of(ev)
        LOG.error("handler %s failed on %s for switch %s: %s: %s", name,
                  type(ev).__name__, dpid_str(dpid) if dpid is not None else "-",
                  type(exc).__name__, exc, exc_info=exc)
        self._count_error(name)
        if isinstance(ev, EventQuery):
            ev.query.fail(LookupError(f"the controller failed: {exc}"))
        if isinstance(ev, EventResync) and not ev.audit:
            self._resync_wanted = True      # the watchdog asks again (1 s)
        elif dpid is not None and dpid in self._dps:
            self.engine.fail(dpid, f"{name} failed ({type(exc).__name__}: {exc})", time.time())

    def _count_error(self, name: str) -> None:
        """Copy on write: REST threads iterate `handler_errors` without a lock."""
        errors = dict(self.core.handler_errors)
        errors[name] = errors.get(name, 0) + 1
        self.core.handler_errors = errors

    def _post(self, ev: event.EventBase, timeout: float) -> bool:
        """Queue an event for this app without blocking longer than ``timeout``."""
        if not self._events_sem.acquire(timeout=timeout):
            return False
        self.events.put((ev, None))
        return True

    # -- what the REST side asks (core.OpenFlowSide) -----------------------------------
    def request_resync(self) -> None:
        """After a REST write: one pending full resync is enough; never block the writer."""
        self._resync_wanted = True
        if not self._resync_queued:
            self._resync_queued = True
            if not self._post(EventResync(), 0):
                self._resync_queued = False     # the watchdog posts it when there is room

    def stop(self) -> None:
        """End the app's own loops, then os-ken's (its event loop and joinall)."""
        self._stopping.set()
        super().stop()

    def _watchdog(self, interval: float = 1.0) -> None:
        while self.is_active and not self._stopping.wait(interval):
            self._post(EventHeartbeat(), 0)
            if self._resync_wanted and not self._resync_queued:
                self.request_resync()

    @set_ev_cls(EventHeartbeat)
    def _heartbeat(self, ev: EventHeartbeat) -> None:
        self._beat = time.monotonic()
        self.senders.send(self.engine.tick(ev.posted))
        self.queries.expire(self._beat)

    def loop_health(self) -> dict[str, Any]:
        """For /v1/health: is the event loop turning, and how full is its queue."""
        age = time.monotonic() - self._beat
        depth = self.events.qsize()
        alive = age < STUCK_AFTER
        return {"alive": alive, "last_heartbeat_seconds": round(age, 3),
                "queue_depth": depth, "queue_max": self.events.maxsize,
                "handler_errors": sum(self.core.handler_errors.values()),
                "sync_exceptions": self.engine.exceptions,
                "reason": None if alive else
                f"the OpenFlow event loop has handled nothing for {age:.0f} s "
                f"({depth} events queued)"}

    def dump_flows(self, dpid: int, cookie: int = COOKIE_PREFIX,
                   mask: int = 0xFFFF << 48) -> list[dict[str, Any]]:
        return self.queries.dump_flows(dpid, cookie, mask)

    def dump_port_stats(self, dpid: int) -> list[dict[str, Any]]:
        return self.queries.dump_port_stats(dpid)

    def dump_meters(self, dpid: int) -> list[dict[str, Any]]:
        return self.queries.dump_meters(dpid)

    def ofctl_datapath(self, dpid: int) -> OfctlDatapath:
        return self.queries.ofctl_datapath(dpid)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        conf = config.CONF
        self._beat = time.monotonic()
        self._resync_wanted = False     # a REST change is waiting for a full resync
        self._resync_queued = False     # ... and its EventResync is in the queue
        self._dps: dict[int, Any] = {}          # dpid -> its live connection
        self.queries = SwitchQueries(self._post, self._dps.get)
        self.senders = Senders(
            lambda dpid, error: self._post(EventSendFailed(dpid, error), POST_TIMEOUT),
            lambda dpid: self._post(EventSent(dpid), POST_TIMEOUT))
        cluster = load(conf.weft_hosts)
        self.core = Core(open_configured(conf), cluster, self)
        # core.cluster: hosts.yaml plus the hosts registered in the store
        self.engine = SyncEngine({datapath_id(h): h.name for h in self.core.cluster.hosts},
                                 adopt=conf.adopt, on_publish=self.core.publish)
        from controller.election_app import election_url
        if election_url(conf):      # several instances: slave of every switch until elected
            self.engine.role_wanted = ("slave", 0)
        LOG.info("weft controller: %d hosts in %s, state in %s (epoch %s)%s",
                 len(cluster.hosts), conf.weft_hosts, self.core.store.path, self.core.store.epoch(),
                 "; --adopt: switches of another store are taken over" if conf.adopt else "")
        # os-ken's native hub threads are not daemons: every loop below ends on this event
        # (set by stop()), or the process could never exit
        self._stopping = threading.Event()
        self.threads.append(hub.spawn(self._watchdog))
        # hosts.yaml edits and host registrations, without a restart (controller.membership)
        self.threads.append(hub.spawn(self.core.watch_hosts(conf.weft_hosts).run,
                                      stop=self._stopping))
        if conf.weft_audit_interval > 0:
            self.threads.append(hub.spawn(self._audit_loop, conf.weft_audit_interval))
        if conf.weft_stats_interval > 0:
            from controller import stats
            self.core.stats_interval = conf.weft_stats_interval
            self.threads.append(hub.spawn(stats.run, self.core, conf.weft_stats_interval,
                                          self._stopping))
        token = conf.api_token or os.environ.get("WEFT_API_TOKEN") or None
        if conf.wsapi_port or conf.wsapi_unix:
            from controller.rest.app import serve_in_thread
            serve_in_thread(self.core, conf.wsapi_host, conf.wsapi_port, conf.wsapi_unix, token)

    # -- roles (several controllers) --------------------------------------------------
    def set_role(self, role: str, generation_id: int) -> None:
        """Become ``master`` or ``slave`` of every switch, now and on later connects
        (OFPRoleRequest with ``generation_id``); any thread may call it.  Never called:
        no role request is ever sent (one controller)."""
        if not self._post(EventRole(role, generation_id), POST_TIMEOUT):
            raise TimeoutError("the controller's event queue is full")

    @set_ev_cls(EventRole)
    def _role(self, ev: EventRole) -> None:
        LOG.info("role %s (generation %d) for every switch", ev.role, ev.generation_id)
        self.senders.send(self.engine.set_role(ev.role, ev.generation_id, time.time()))

    @set_ev_cls(ofp_event.EventOFPRoleReply, MAIN_DISPATCHER)
    def _role_reply(self, ev: Any) -> None:
        msg = ev.msg
        if self._current(msg.datapath):
            role = ofmsg.ROLE_NAMES.get(msg.role, "unknown")
            LOG.info("switch %s: role %s (generation %d)", dpid_str(msg.datapath.id), role,
                     msg.generation_id)
            self.senders.send_to(msg.datapath.id,
                                 self.engine.role_reply(msg.datapath.id, role, time.time()))

    def _current(self, dp: Any) -> bool:
        """Is ``dp`` the connection the switch is known by (not a refused second one)?"""
        return dp.id is not None and self._dps.get(dp.id) is dp

    def _read_model(self) -> None:
        """Read the model once (not once per switch) and hand it to the engine."""
        self._resync_queued = self._resync_wanted = False
        self.senders.send(self.engine.set_model(self.core.snapshot(), time.time()))

    # -- connection state ---------------------------------------------------------
    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state_change(self, ev: Any) -> None:
        dp = ev.datapath
        if dp.id is None:
            return
        if ev.state == MAIN_DISPATCHER:
            first = self._dps.get(dp.id)
            if first is not None and first is not dp:
                self._refuse_second(first, dp)
                return
            host = host_for_dpid(self.core.cluster, dp.id)
            if host is None:
                LOG.warning("switch %s connected but is no host of hosts.yaml: left alone",
                            dpid_str(dp.id))
            else:
                LOG.info("switch %s connected: host %s", dpid_str(dp.id), host.name)
            if self.engine.model is None:
                try:
                    self._read_model()
                except Exception as exc:  # noqa: BLE001  (connect anyway; its read retries)
                    self._handler_failed("_read_model", EventResync(), exc)
            self._dps[dp.id] = dp
            self.senders.open(dp.id, dp)
            self.senders.send_to(dp.id, self.engine.connect(dp.id, dp, time.time()))
        elif self._current(dp):
            del self._dps[dp.id]
            self.senders.close(dp.id)
            self.engine.disconnect(dp.id)
            self.queries.disconnected(dp.id)
            LOG.info("switch %s disconnected; its flows stay (fail_mode secure)",
                     dpid_str(dp.id))

    def _refuse_second(self, first: Any, dp: Any) -> None:
        """A second connection claims a connected datapath id: never let it replace the
        first.  Refuse it, then ask the first for a barrier: a first connection that does
        not answer within PROBE_SECONDS is dead (e.g. the host rebooted) and is closed,
        so the real switch's next reconnect gets in."""
        LOG.warning("switch %s: second connection from %s claims this datapath id while %s "
                    "is connected; refused", dpid_str(dp.id), dp.address, first.address)
        self.engine.refused_connection(dp.id)
        dp.close()
        probe = Query(first.id, lambda conn: ofmsg.read_request(conn, "barrier"))
        self.senders.send_to(first.id, [self.queries.send(probe, first, time.monotonic())])

        conn: Any = first

        def check() -> None:
            answered = probe.future.done() and probe.future.exception() is None
            if not answered and id(self._dps.get(conn.id)) == id(conn):   # (no narrowing)
                LOG.warning("switch %s: connection from %s did not answer for %ds; closed",
                            dpid_str(conn.id), conn.address, PROBE_SECONDS)
                conn.close()
        hub.spawn_after(PROBE_SECONDS, check)

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _port_status(self, ev: Any) -> None:
        msg = ev.msg
        if not self._current(msg.datapath):
            return
        gone = msg.reason == msg.datapath.ofproto.OFPPR_DELETE
        self.senders.send_to(msg.datapath.id, self.engine.port_status(
            msg.datapath.id, _name(msg.desc), None if gone else msg.desc.port_no, time.time()))

    @set_ev_cls(EventResync)
    def _resync(self, ev: EventResync) -> None:
        if ev.audit:
            self.senders.send(self.engine.audit(time.time(), ev.dpid))
        else:
            self._read_model()

    @set_ev_cls(EventSent)
    def _sent(self, ev: EventSent) -> None:
        if ev.dpid in self._dps:
            self.engine.sent(ev.dpid, ev.posted)

    @set_ev_cls(EventSendFailed)
    def _send_failed(self, ev: EventSendFailed) -> None:
        if ev.dpid in self._dps:
            self.engine.fail(ev.dpid, f"a message could not be sent ({ev.error})", time.time())

    def _audit_loop(self, interval: float) -> None:
        while not self._stopping.wait(interval):
            self._post(EventResync(audit=True), POST_TIMEOUT)

    # -- replies ---------------------------------------------------------------------
    def _reply(self, ev: Any, body: list | None = None) -> None:
        """A stats reply (part): the sync engine's, else a query's (`switch_queries`)."""
        msg = ev.msg
        dp = msg.datapath
        if not self._current(dp):
            return              # from a connection that is not the switch's
        more = bool(msg.flags & dp.ofproto.OFPMPF_REPLY_MORE)
        if self.engine.owns(dp.id, msg.xid):
            self.senders.send_to(dp.id, self.engine.reply(
                dp.id, msg.xid, msg.body if body is None else body, more, time.time(),
                type(msg).__name__))
        else:
            self.queries.reply(dp.id, msg, more)

    @set_ev_cls([ofp_event.EventOFPDescStatsReply, ofp_event.EventOFPTableStatsReply,
                 ofp_event.EventOFPPortStatsReply, ofp_event.EventOFPGroupStatsReply,
                 ofp_event.EventOFPGroupFeaturesStatsReply,
                 ofp_event.EventOFPMeterFeaturesStatsReply, ofp_event.EventOFPQueueStatsReply,
                 ofp_event.EventOFPPortDescStatsReply, ofp_event.EventOFPFlowStatsReply,
                 ofp_event.EventOFPGroupDescStatsReply, ofp_event.EventOFPMeterStatsReply,
                 ofp_event.EventOFPMeterConfigStatsReply], MAIN_DISPATCHER)
    def _stats_reply(self, ev: Any) -> None:
        self._reply(ev)

    @set_ev_cls(ofp_event.EventOFPAggregateStatsReply, MAIN_DISPATCHER)
    def _aggregate_reply(self, ev: Any) -> None:
        self._reply(ev, [ev.msg.body])

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _barrier_reply(self, ev: Any) -> None:
        dp = ev.msg.datapath
        if self._current(dp) and not self.queries.reply(dp.id, ev.msg, False):
            self.senders.send_to(dp.id, self.engine.reply(dp.id, ev.msg.xid, [], False,
                                                          time.time(), "barrier reply"))

    @set_ev_cls(ofp_event.EventOFPErrorMsg, MAIN_DISPATCHER)
    def _error(self, ev: Any) -> None:
        msg = ev.msg
        dp = msg.datapath
        if self._current(dp) and not self.queries.error(dp.id, msg.xid, msg.type, msg.code):
            self.senders.send_to(dp.id, self.engine.error(dp.id, msg.xid, msg.type, msg.code,
                                                          time.time()))

    @set_ev_cls(EventQuery)
    def _query(self, ev: EventQuery) -> None:
        """A REST thread's question to a switch, sent from this thread."""
        msg = self.queries.send(ev.query, self._dps.get(ev.query.dpid), time.monotonic())
        if msg is not None:
            self.senders.send_to(ev.query.dpid, [msg])


def _dpid_of(ev: Any) -> int | None:
    """The switch an event is about, when it is about one."""
    for holder in (getattr(ev, "msg", None), ev):
        dp = getattr(holder, "datapath", None)
        if dp is not None and getattr(dp, "id", None) is not None:
            return dp.id
    dpid = getattr(ev, "dpid", None)
    return dpid if isinstance(dpid, int) else None
