"""`controller.sync`: the per-switch sync engine, pure (faucet's ``valve`` is the model).

No sockets, no threads, no clock: the os-ken shim (`controller.app`) feeds it
events (connect, replies, errors, barrier and role replies, port status,
model change, timer tick, disconnect), each with the current time, and sends
the os-ken messages it returns, in order, to that switch.  Tests feed it the
same way and apply what it returns to a fake switch.

One switch's life (``SwitchSync.phase``)::

    disconnected --connect--> reading --all replies--> sending --barrier--> in_sync
         ^                    |   ^                                          |
         |                    |   +----- error / audit / promotion ----------+
         +--- disconnect -----+   (any phase)        model change: delta --> sending
    reading --all replies, wrong stamp--> refused      (0 mods, until --adopt or the
                                                        store's epoch matches)
    reading --all replies, role slave--> tracking      (read, nothing sent)
    any --exception / timeout / refused read--> backoff --tick after 0.5..30 s--> reading

* **read**: port desc, flow stats of weft's own cookies (``pipeline.flow_reads``),
  group desc, meter config and the learned-flow count;
* **send plan**: stale flows deleted, meters then groups added/modified, flows added,
  operator flows reconciled, stale groups and meters deleted, a barrier: a flow never
  reaches the switch before the meter or group it uses, and a group or meter is
  deleted only once no flow of ours uses it;
* a model change while reading or sending marks the switch dirty; the barrier
  reply then diffs again (a second pass) against what the switch now holds;
* an error reply: re-read (when a plan is in flight: after its barrier, with the
  back-off below, so a switch refusing the same mod again is not hammered);
* every request has a deadline (``timeout`` seconds, renewed for all of a switch's
  requests by each reply or part of one: it answers in order), checked on ``tick``:
  a silent switch is read again, never left syncing; an exception while handling
  one switch's event is logged with that event, contained to that switch, and leads
  to a re-read after a back-off.

**Roles** (several controllers, issue 15): without ``set_role`` every switch is
master and no role request is sent (one controller, as before).  A slave reads its
switches (connect, audit) but sends no flow, group or meter mod.  Promotion to
master (the switch's role reply) re-reads the switch and sends the delta: 0 mods
when the previous master had it in sync.  A stale-generation role error or an
"is slave" error makes the switch slave.

**Wipe guard**: every switch weft programs carries a stamp, one flow in table
``STAMP_TABLE`` (no flow leads there, so no packet hits it) with cookie
``COOKIE_STAMP | 40-bit hash of Store.epoch()``.  A read that finds weft flows
without this store's stamp (none, or another store's) refuses the switch: 0 mods,
an ERROR log saying how to adopt (``weft-manager --adopt``) or restore
(``weftctl import FILE``), and ``sync_refused`` in ``GET /v1/switches``.  A switch
with no weft flow (fresh) is programmed and stamped.

REST threads never see this module's mutable state: after each event the engine
publishes a new immutable ``SwitchView`` per switch in a new mapping, swapped in
one assignment (``SyncEngine.views``).
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from controller import ofmsg
from controller.flows import COOKIE_FEATURE_MASK, COOKIE_LEARNED, COOKIE_STAMP, Flow, Group, \
    Meter, SwitchState, apply_delta, diff, feature_of, flow
from controller.model import Topology
from controller.opflows import OperatorFlow, operator_cookie, reconcile
from controller.pipeline import desired_state, flow_reads, learned_from_port
from cluster.hostsfile import Cluster, dpid_str, tunnel_port_name
from cluster.promtext import Histogram

__all__ = ["ModelSnapshot", "SwitchView", "SwitchSync", "SyncEngine", "stamp_flow", "stamp_cookie",
           "state_digest", "flows_sum", "digest_flow",
           "STAMP_TABLE", "MASTER", "SLAVE", "REQUEST_TIMEOUT", "DOWN", "IDLE", "READING",
           "SENDING", "IN_SYNC", "TRACKING", "REFUSED", "BACKOFF"]

LOG = logging.getLogger("weft.controller")
REQUEST_TIMEOUT = 30.0          # seconds without an answer (or a further part): re-read
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
STAMP_TABLE = 250               # no goto leads here: its one flow is never hit
MASTER, SLAVE = "master", "slave"
DOWN, IDLE, READING, SENDING = "disconnected", "idle", "reading", "sending"
IN_SYNC, TRACKING, REFUSED, BACKOFF = "in_sync", "tracking", "refused", "backoff"
_BUSY = frozenset({READING, SENDING, BACKOFF})
_STAMP_BITS = (1 << 40) - 1
_XID_LIMIT = 0x80000000          # ofctl_rest and the shim's own requests use xids above
_OFPP_MAX = 0xFFFFFF00
_OFPET_BAD_REQUEST, _OFPBRC_IS_SLAVE = 1, 10
_OFPET_ROLE_REQUEST_FAILED = 11


def stamp_cookie(epoch: str) -> int:
    """The stamp's cookie: weft's stamp feature plus 40 bits of the epoch's SHA-256."""
    return COOKIE_STAMP | int.from_bytes(hashlib.sha256(epoch.encode()).digest()[:5], "big")


def stamp_flow(epoch: str) -> Flow:
    """The flow saying "programmed under store ``epoch``" (drop, in a table nothing reaches)."""
    return flow(STAMP_TABLE, 0, {}, [], stamp_cookie(epoch))


_DIGEST_BITS = (1 << 64) - 1
# a sync's duration, read to barrier reply: buckets of the /metrics histogram
SYNC_SECONDS_EMPTY = Histogram.empty((0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                                      10.0, 30.0))


def state_digest(want: SwitchState, operator_ids: Iterable[int]) -> int:
    """64 bits naming a switch's desired state (every flow, group and meter as its
    wire bytes, and the ids of its operator flows), the same in every process: the
    sum of each item's own BLAKE2b, so the order of the sets does not matter (and a
    changed state's flow part is the old sum plus the added minus the removed)."""
    return (flows_sum(want.flows) + _rest_digest(want, operator_ids)) & _DIGEST_BITS


def flows_sum(flows: Iterable[Flow]) -> int:
    total = 0
    for f in flows:
        total += int.from_bytes(hashlib.blake2b(ofmsg.encode_flow_mod(f, "add"),
                                                digest_size=8).digest(), "big")
    return total


def _rest_digest(want: SwitchState, operator_ids: Iterable[int]) -> int:
    total = 0
    items: list[Group | Meter] = [*want.groups, *want.meters]
    for item in items:
        total += int.from_bytes(hashlib.blake2b(ofmsg.encode(item, "add"),
                                                digest_size=8).digest(), "big")
    ids = ",".join(str(i) for i in sorted(operator_ids)).encode()
    return total + int.from_bytes(hashlib.blake2b(b"operator:" + ids,
                                                  digest_size=8).digest(), "big")


def digest_flow(epoch: str, digest: int) -> Flow:
    """The second flow of the stamp table: the epoch's stamp cookie (the guard sees one
    stamp) and, in its match, the digest of the state the last plan sent completely."""
    return flow(STAMP_TABLE, 1, {"metadata": digest}, [], stamp_cookie(epoch))


@dataclass(frozen=True)
class ModelSnapshot:
    """The model as read from the store once per change, for every switch."""

    version: int
    topology: Topology
    tunnels: Mapping[str, Mapping[str, str]]              # host -> peer -> tunnel port
    operator_flows: Mapping[int, tuple[OperatorFlow, ...]]  # dpid -> its operator flows
    epoch: str
    hosts: Mapping[int, str] | None = None   # dpid -> host (hosts.yaml, registrations)


@dataclass(frozen=True)
class SwitchView:
    """One switch as REST threads see it: an immutable value, replaced, never changed."""

    dpid: int
    host: str | None
    connected: bool = False
    ports: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    connected_at: float = 0.0
    phase: str = DOWN
    role: str = MASTER
    syncs: int = 0
    flow_mods: int = 0              # flow-mods sent since the controller started
    group_mods: int = 0
    meter_mods: int = 0
    operator_mods: int = 0          # operator flows (re)installed or removed by syncs
    refused: int = 0                # second connections claiming this datapath id, refused
    learned_flows: int = 0          # flows the switch learned (2 per MAC), counted at each read
    errors: int = 0                 # error replies, timeouts and exceptions
    synced_version: int = -1
    sync_refused: str | None = None  # why the wipe guard leaves this switch alone
    last_sync: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    sync_seconds: Histogram = SYNC_SECONDS_EMPTY    # every completed sync's duration (/metrics)

    @property
    def syncing(self) -> bool:
        return self.phase in _BUSY

    def summary(self, cluster: Cluster) -> dict[str, Any]:
        tunnels = {}
        if self.host and cluster.transport == "tunnel" \
                and any(h.name == self.host for h in cluster.hosts):   # may have just left
            for peer in cluster.peers(self.host):
                name = tunnel_port_name(cluster.link_type(self.host, peer.name), peer.name)
                tunnels[name] = {"peer": peer.name, "remote_ip": peer.underlay_ip,
                                 "ofport": self.ports.get(name)}
        return {"dpid": dpid_str(self.dpid), "host": self.host, "connected": self.connected,
                "ports": dict(sorted(self.ports.items(), key=lambda kv: kv[1])),
                "tunnels": tunnels, "syncs": self.syncs, "flow_mods_sent": self.flow_mods,
                "group_mods_sent": self.group_mods, "meter_mods_sent": self.meter_mods,
                "operator_flow_mods_sent": self.operator_mods,
                "learned_flows": self.learned_flows, "refused_connections": self.refused,
                "sync_state": self.phase, "role": self.role, "sync_refused": self.sync_refused,
                "sync_errors": self.errors, "last_sync": dict(self.last_sync)}


@dataclass
class _Pending:
    kind: str                   # ports, flows0.., groups, meters, aggregate, barrier
    deadline: float
    bodies: list = field(default_factory=list)


class _OpRef:
    """Just the cookie of an operator flow: what a delete by cookie needs."""

    def __init__(self, cookie: int) -> None:
        self.cookie = cookie


def _op_placeholder(of: OperatorFlow) -> Flow:
    """An operator flow as ``known`` holds it: what ``reconcile`` looks for (its cookie)."""
    return Flow(of.table_id, of.priority, (("operator_id", of.id),), (), of.cookie)


def _port_name(port: Any) -> str:
    return port.name.decode() if isinstance(port.name, bytes) else port.name


class SwitchSync:
    """The sync state machine of one switch.  Methods return the messages to send."""

    def __init__(self, dpid: int, host: str | None, engine: SyncEngine) -> None:
        self.dpid, self.host, self.engine = dpid, host, engine
        self.dp: Any = None
        self.phase = DOWN
        self.role = MASTER
        self.ports: dict[str, int] = {}
        self.known: SwitchState | None = None   # as read, plus every delta sent since
        self.pending: dict[int, _Pending] = {}
        self.read: dict[str, list] = {}
        self.port_events: list[tuple[str, int | None]] = []   # after the port-desc reply
        self.dirty = False          # the model changed while reading/sending
        self.reread = False         # an error arrived while a plan was in flight
        self.failures = 0           # in a row (back-off)
        self.retry_at = 0.0
        self.refusal: str | None = None
        self.started = 0.0
        self.plan: dict[str, Any] = {}
        self.quick = False          # this read asks only the stamp table (see _trusted)
        self.sent_digest: Flow | None = None    # the digest of the plan in flight
        # (model, ports, desired, digest flow, sum of the desired flows' digests)
        self._want: tuple[Any, Any, SwitchState, Flow, int] | None = None
        self.connected_at = 0.0
        self.syncs = self.flow_mods = self.group_mods = self.meter_mods = 0
        self.operator_mods = self.refused_connections = self.learned_flows = self.errors = 0
        self.synced_version = -1
        self.last_sync: Mapping[str, Any] = MappingProxyType({})
        self.sync_seconds = SYNC_SECONDS_EMPTY
        self._ports_view: Mapping[str, int] = MappingProxyType({})

    # -- events ------------------------------------------------------------------------
    def connect(self, dp: Any, now: float) -> list:
        self._reset()
        self.dp, self.connected_at = dp, now
        if self.host is None:
            self.phase = IDLE
            return []
        out = []
        wanted = self.engine.role_wanted
        if wanted is not None:      # several controllers: a slave until the switch says
            out.append(ofmsg.role_request(dp, *wanted))
            self.role = SLAVE
        else:
            self.role = MASTER
        return out + self._start_read(now, quick=True)

    def disconnect(self) -> None:
        self._reset()
        self.dp, self.phase = None, DOWN

    def reply(self, xid: int, body: list, more: bool, now: float) -> list:
        p = self.pending.get(xid)
        if p is None:
            return []               # asked before a reset: its answer no longer counts
        p.bodies.extend(body)
        for q in self.pending.values():     # it answers in order: the rest waits behind
            q.deadline = now + self.engine.timeout
        if more:
            return []
        del self.pending[xid]
        if p.kind == "barrier":
            return self._barrier_done(now)
        self.read[p.kind] = p.bodies
        if self.pending:
            return []
        return self._read_done(now)

    def error(self, xid: int, type_: int, code: int, now: float) -> list:
        self.errors += 1
        if (type_, code) == (_OFPET_BAD_REQUEST, _OFPBRC_IS_SLAVE) \
                or type_ == _OFPET_ROLE_REQUEST_FAILED:
            LOG.warning("switch %s: %s; this controller is slave for it", dpid_str(self.dpid),
                        "role request refused (stale generation id?)"
                        if type_ == _OFPET_ROLE_REQUEST_FAILED else "a mod was refused: slave")
            self.role, self.dirty = SLAVE, False
        p = self.pending.get(xid)
        if p is not None and p.kind != "barrier":
            return self._fail(f"the switch refused the {p.kind} read (error type {type_} "
                              f"code {code})", now)
        LOG.error("switch %s (%s) refused a message: type %d code %d; reading it again",
                  dpid_str(self.dpid), self.host, type_, code)
        if self.phase == SENDING:
            self.reread = True      # after the barrier: what it holds is not what we think
            digest, self.sent_digest = self.sent_digest, None
            if digest is None:
                return []
            self.flow_mods += 1     # the plan did not all land: no digest may claim it did
            return [ofmsg.flow_mod(self.dp, digest, "delete_strict")]
        if self.phase in (IN_SYNC, TRACKING):
            return self._start_read(now)
        return []                   # reading: the read shows the truth

    def role_reply(self, role: str, now: float) -> list:
        if role == SLAVE:
            self.role, self.dirty = SLAVE, False
            return []
        was, self.role = self.role, MASTER
        if was == SLAVE and self.phase in (TRACKING, IN_SYNC):
            LOG.info("switch %s (%s): promoted to master; reading it, then the delta",
                     dpid_str(self.dpid), self.host)
            return self._start_read(now)        # the old master may have changed it
        return []                   # reading: its end diffs as master

    def port_status(self, name: str, port_no: int | None, now: float) -> list:
        if self.host is None or self.phase in (DOWN, IDLE):
            return []
        forget = self._forget_learned(name, port_no)
        if self.phase == READING:
            if "ports" in self.read:            # the port desc predates this change
                self.port_events.append((name, port_no))
            return forget
        if not self._set_port(name, port_no):
            return forget
        return forget + self.model_changed(now, epoch_changed=False)

    def _forget_learned(self, name: str, port_no: int | None) -> list:
        """A port gone or renumbered: delete the MACs the switch learned on its old number.

        Learned flows outlive their port (OVS keeps them; traffic to the MAC refreshes
        their idle timeout), and OVS gives a re-created port a new number: a tunnel to a
        host that left and came back kept sending its containers' frames to the dead
        number, and a port that later takes the number would receive another port's
        tenant traffic.  Forgotten, those MACs flood until learned again."""
        old = self.ports.get(name)
        if old is None or old == port_no or self.role != MASTER \
                or self.phase not in (READING, SENDING, IN_SYNC):
            return []
        LOG.info("switch %s (%s): port %s %s; forgetting the MACs learned on port %d",
                 dpid_str(self.dpid), self.host, name,
                 "gone" if port_no is None else f"now {port_no}", old)
        return [ofmsg.delete_by_cookie(self.dp, *learned_from_port(old))]

    def model_changed(self, now: float, epoch_changed: bool) -> list:
        if self.phase == IN_SYNC and self.role == MASTER:
            return self._send_delta(now)
        if self.phase in (READING, SENDING):
            self.dirty = True
        elif self.phase == REFUSED and epoch_changed:
            return self._start_read(now)        # e.g. `weftctl import` restored the epoch
        return []

    def audit(self, now: float) -> list:
        """Read the switch again (catches edits by hand); not while a pass runs."""
        if self.phase in (IN_SYNC, TRACKING, REFUSED):
            return self._start_read(now)
        return []

    def tick(self, now: float) -> list:
        if self.phase == BACKOFF and now >= self.retry_at:
            return self._start_read(now)
        late = sorted({p.kind for p in self.pending.values() if p.deadline <= now})
        if late:
            return self._fail(f"no answer to {', '.join(late)} within "
                              f"{self.engine.timeout:g} s", now)
        return []

    def fail(self, reason: str, now: float) -> list:
        """An exception while handling this switch's event: forget, back off, read again."""
        return self._fail(reason, now)

    # -- the read ------------------------------------------------------------------------
    def _start_read(self, now: float, quick: bool = False) -> list:
        """Read the switch: every flow of ours, or (``quick``, on connect) only the stamp
        table, trusted when its digest names the desired state (``_trusted``)."""
        dp = self.dp
        self.pending.clear()
        self.read, self.port_events = {}, []
        self.known, self.reread, self.refusal = None, False, None
        self.phase, self.started, self.quick = READING, now, quick
        self.sent_digest = None
        reads = [(STAMP_TABLE, COOKIE_STAMP, COOKIE_FEATURE_MASK)] if quick else flow_reads()
        reqs = [("ports", ofmsg.read_request(dp, "ports"))]
        reqs += [(f"flows{i}", ofmsg.read_request(dp, "flows", table, cookie, mask))
                 for i, (table, cookie, mask) in enumerate(reads)]
        reqs += [("groups", ofmsg.read_request(dp, "groups")),
                 ("meters", ofmsg.read_request(dp, "meters")),
                 ("aggregate", ofmsg.read_request(dp, "aggregate", None, COOKIE_LEARNED,
                                                  COOKIE_FEATURE_MASK))]
        return [self._ask(kind, msg, now) for kind, msg in reqs]

    def _ask(self, kind: str, msg: Any, now: float) -> Any:
        xid = self.engine.next_xid()
        msg.set_xid(xid)
        self.pending[xid] = _Pending(kind, now + self.engine.timeout)
        return msg

    def _read_done(self, now: float) -> list:
        got = self.read
        self._replace_ports({_port_name(p): p.port_no for p in got["ports"]
                             if p.port_no < _OFPP_MAX})
        for name, port_no in self.port_events:
            self._set_port(name, port_no)
        flows = [b for kind in sorted(got) if kind.startswith("flows") for b in got[kind]]
        have = SwitchState(ofmsg.flows_from_stats(flows),
                           frozenset(ofmsg.group_from_desc(g) for g in got["groups"]),
                           frozenset(ofmsg.meter_from_config(m) for m in got["meters"]))
        agg = got["aggregate"]
        self.learned_flows = agg[0].flow_count if agg else 0
        self.read, self.port_events = {}, []
        trusted = self._trusted(have) if self.quick else None
        if self.quick and trusted is None:  # stamp, digest, groups or meters differ:
            return self._start_read(now)    # read it all
        self.known = have = trusted or have
        refusal = None if trusted else self._guard(have)    # trusted: this store's stamp
        if refusal is not None:
            self.phase, self.refusal, self.dirty = REFUSED, refusal, False
            LOG.error("switch %s (%s): NOT programming it: %s. Nothing was changed on it. "
                      "To make this store's model its state (deleting weft flows the store "
                      "does not have), restart weft-manager with --adopt; to restore the "
                      "store it was programmed from, `weftctl import FILE` (an export); "
                      "GET /v1/switches shows sync_refused", dpid_str(self.dpid),
                      self.host, refusal)
            return []
        if self.role == SLAVE:
            self.phase, self.dirty = TRACKING, False
            return []
        if trusted:                 # it holds what we would send: no diff, a barrier
            return self._send_nothing(now, have)
        return self._send_delta(now)

    def _send_nothing(self, now: float, have: SwitchState) -> list:
        self.dirty = False
        self.syncs += 1
        want = self._desired_and_digest()[0]     # cached: what _trusted compared
        self.plan = {"version": self._model().version, "flows_desired": len(want.flows),
                     "flows_on_switch": len(have.flows), "flow_mods": 0, "group_mods": 0,
                     "meter_mods": 0, "read": "stamp table: the digest matched"}
        self.phase = SENDING
        return [self._ask("barrier", ofmsg.read_request(self.dp, "barrier"), now)]

    def _trusted(self, have: SwitchState) -> SwitchState | None:
        """The state of a switch whose stamp table (all ``have.flows`` holds after a quick
        read) is this store's stamp plus the digest of what we would send it now, and
        whose groups and meters are the desired ones: the desired state, not read.

        The digest is written last in a plan and deleted on the plan's first error,
        so it names a state the switch received whole.  A flow of ours changed by hand
        while the digest stayed is not seen here: the periodic audit (a full read,
        ``--weft-audit-interval``) repairs it, as it does for any edit by hand."""
        model = self._model()
        want, digest = self._desired_and_digest()
        if have.flows != {stamp_flow(model.epoch), digest} or have.groups != want.groups \
                or have.meters != want.meters:
            return None
        ops = frozenset(_op_placeholder(of) for of in model.operator_flows.get(self.dpid, ()))
        return SwitchState(want.flows | {digest} | ops, want.groups, want.meters)

    def _guard(self, have: SwitchState) -> str | None:
        """Why this switch must not be programmed from this store (None: go ahead)."""
        epoch = self._model().epoch
        ours = sum(1 for f in have.flows if feature_of(f.cookie) not in (None, "stamp"))
        stamps = sorted({f.cookie for f in have.flows if feature_of(f.cookie) == "stamp"})
        want = stamp_cookie(epoch)
        if not ours or stamps == [want]:
            return None
        why = (f"it carries {ours} weft flows "
               + ("and no store stamp (programmed by an older weft or its stamp was removed)"
                  if not stamps else
                  f"stamped by another store (stamp {', '.join(hex(c) for c in stamps)}, this "
                  f"store's epoch {epoch} is {hex(want)})"))
        if self.engine.adopt:
            LOG.warning("switch %s (%s): %s; adopting it (--adopt): this store's model "
                        "replaces its flows", dpid_str(self.dpid), self.host, why)
            return None
        return why

    # -- the plan --------------------------------------------------------------------------
    def _model(self) -> ModelSnapshot:
        model = self.engine.model
        if model is None:
            raise RuntimeError("no model read from the store yet")
        return model

    def desired(self) -> SwitchState:
        """What the switch should hold: the pipeline's state, the stamp, the digest."""
        want, digest = self._desired_and_digest()
        return SwitchState(want.flows | {digest}, want.groups, want.meters)

    def _desired_and_digest(self) -> tuple[SwitchState, Flow]:
        """The desired state (with the stamp) and its digest flow, computed once per
        model and set of ports; the flows' part of the digest from the previous one's
        (only the flows that changed are hashed: a model change costs no full pass)."""
        model = self._model()
        cached = self._want
        if cached is not None and cached[0] is model and cached[1] is self.ports:
            return cached[2], cached[3]
        assert self.host is not None
        got = desired_state(self.host, model.topology, self.ports,
                            model.tunnels.get(self.host, {}))
        want = SwitchState(got.flows | {stamp_flow(model.epoch)}, got.groups, got.meters)
        if cached is None:
            fsum = flows_sum(want.flows)
        else:
            old = cached[2].flows
            fsum = cached[4] + flows_sum(want.flows - old) - flows_sum(old - want.flows)
        ops = model.operator_flows.get(self.dpid, ())
        digest = digest_flow(model.epoch, (fsum + _rest_digest(want, (of.id for of in ops)))
                             & _DIGEST_BITS)
        self._want = (model, self.ports, want, digest, fsum)
        return want, digest

    def _send_delta(self, now: float) -> list:
        dp, model, have = self.dp, self._model(), self.known
        assert have is not None
        if self.phase != READING:
            self.started = now
        self.dirty = False
        want, digest = self._desired_and_digest()
        delta = diff(SwitchState(want.flows | {digest}, want.groups, want.meters), have)
        add_flows = [f for f in delta.add_flows if f is not digest]   # (diff returns want's)
        self.sent_digest = digest       # what this plan stands for: gone on its first error
        # deletes first, then what new flows point at, then the flows; stale groups
        # and meters last (no flow of ours refers to them any more)
        out: list = [ofmsg.flow_mod(dp, f, "delete_strict") for f in delta.delete_flows]
        out += [ofmsg.meter_mod(dp, m, "add") for m in delta.add_meters]
        out += [ofmsg.meter_mod(dp, m, "modify") for m in delta.modify_meters]
        out += [ofmsg.group_mod(dp, g, "modify") for g in delta.modify_groups]
        out += [ofmsg.group_mod(dp, g, "add") for g in delta.add_groups]
        out += [ofmsg.flow_mod(dp, f, "add") for f in add_flows]
        known = apply_delta(have, delta)
        # operator flows: never diffed; the missing come back, the unstored go
        op_add, op_delete = reconcile(model.operator_flows.get(self.dpid, ()), have)
        for of in op_add:
            try:
                out.append(ofmsg.operator_flow_mod(dp, of, "add"))
            except Exception as exc:  # noqa: BLE001  (a bad stored flow must not stop sync)
                LOG.error("switch %s: operator flow %d cannot be sent: %s",
                          dpid_str(self.dpid), of.id, exc)
        out += [ofmsg.operator_flow_mod(dp, _OpRef(operator_cookie(i)), "delete")
                for i in op_delete]
        out += [ofmsg.group_mod(dp, g, "delete") for g in delta.delete_groups]
        out += [ofmsg.meter_mod(dp, m, "delete") for m in delta.delete_meters]
        if len(add_flows) < len(delta.add_flows):  # last: the switch got all before it
            out.append(ofmsg.flow_mod(dp, digest, "add"))
        if op_add or op_delete:
            gone = {operator_cookie(i) for i in op_delete}
            known = SwitchState(frozenset({f for f in known.flows if f.cookie not in gone} | {
                _op_placeholder(of) for of in op_add}), known.groups, known.meters)
            self.operator_mods += len(op_add) + len(op_delete)
        self.known = known
        n_flows = len(delta.delete_flows) + len(delta.add_flows)
        n_groups = len(delta.add_groups) + len(delta.modify_groups) + len(delta.delete_groups)
        n_meters = len(delta.add_meters) + len(delta.modify_meters) + len(delta.delete_meters)
        self.flow_mods += n_flows
        self.group_mods += n_groups
        self.meter_mods += n_meters
        self.syncs += 1
        self.plan = {"version": model.version, "flows_desired": len(want.flows),
                     "flows_on_switch": len(have.flows), "flow_mods": n_flows,
                     "group_mods": n_groups, "meter_mods": n_meters}
        self.phase = SENDING
        out.append(self._ask("barrier", ofmsg.read_request(dp, "barrier"), now))
        return out

    def _barrier_done(self, now: float) -> list:
        plan = self.plan
        self.phase = IN_SYNC
        if not self.reread:
            self.failures, self.synced_version = 0, plan["version"]
        took = now - self.started
        self.sync_seconds = self.sync_seconds.observe(took)
        self.last_sync = MappingProxyType({"at": now, "seconds": round(took, 4),
                                           **{k: v for k, v in plan.items() if k != "version"}})
        if plan["flow_mods"] or plan["group_mods"] or plan["meter_mods"]:
            LOG.info("switch %s (%s): sent %d flow-mods, %d group-mods, %d meter-mods in %.3fs",
                     dpid_str(self.dpid), self.host, plan["flow_mods"], plan["group_mods"],
                     plan["meter_mods"], took)
        if self.reread:             # it refused part of the plan: read it again, backing
            return self._fail("the switch refused messages of the plan", now)  # off
        if self.dirty and self.role == MASTER:
            return self._send_delta(now)
        self.dirty = False
        return []

    # -- helpers ---------------------------------------------------------------------------
    def _fail(self, reason: str, now: float) -> list:
        self.errors += 1
        self.failures += 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.failures - 1))
        LOG.warning("switch %s (%s): %s; reading it again in %.1f s", dpid_str(self.dpid),
                    self.host, reason, delay)
        self.pending.clear()
        self.read, self.port_events = {}, []
        self.known, self.dirty, self.reread, self.sent_digest = None, False, False, None
        self.phase, self.retry_at = BACKOFF, now + delay
        return []

    def _reset(self) -> None:
        self.pending.clear()
        self.read, self.port_events = {}, []
        self.known, self.dirty, self.reread, self.refusal = None, False, False, None
        self.failures, self.sent_digest = 0, None
        self._replace_ports({})

    def _set_port(self, name: str, port_no: int | None) -> bool:
        """Apply one port-status; True when the flows may change."""
        if port_no is None:
            if name not in self.ports:
                return False
            ports = {k: v for k, v in self.ports.items() if k != name}
        elif self.ports.get(name) == port_no:
            return False            # a link-state change: nothing for the flows
        else:
            ports = {**self.ports, name: port_no}
        self._replace_ports(ports)
        return True

    def _replace_ports(self, ports: dict[str, int]) -> None:
        self.ports = ports
        self._ports_view = MappingProxyType(ports)   # ports is never mutated afterwards

    def view(self) -> SwitchView:
        return SwitchView(
            dpid=self.dpid, host=self.host, connected=self.phase != DOWN,
            ports=self._ports_view, connected_at=self.connected_at, phase=self.phase,
            role=self.role, syncs=self.syncs, flow_mods=self.flow_mods,
            group_mods=self.group_mods, meter_mods=self.meter_mods,
            operator_mods=self.operator_mods, refused=self.refused_connections,
            learned_flows=self.learned_flows, errors=self.errors,
            synced_version=self.synced_version, sync_refused=self.refusal,
            last_sync=self.last_sync, sync_seconds=self.sync_seconds)


Out = dict[int, list]


class SyncEngine:
    """Every switch's ``SwitchSync``, the model they share, the role and the guard.

    Methods about one switch return the messages for it; methods about all of them
    return ``{dpid: messages}``.  ``views`` is the published, immutable state.
    """

    def __init__(self, hosts: Mapping[int, str], *, adopt: bool = False,
                 timeout: float = REQUEST_TIMEOUT,
                 on_publish: Callable[[Mapping[int, SwitchView]], None] | None = None) -> None:
        self.hosts = dict(hosts)            # dpid -> host name (hosts.yaml)
        self.adopt, self.timeout = adopt, timeout
        self.model: ModelSnapshot | None = None
        self.role_wanted: tuple[str, int] | None = None   # None: no role requests at all
        self.switches: dict[int, SwitchSync] = {d: SwitchSync(d, h, self)
                                                for d, h in self.hosts.items()}
        self.exceptions = 0
        self._xid = 0
        self._on_publish = on_publish
        self.views: Mapping[int, SwitchView] = MappingProxyType(
            {d: sw.view() for d, sw in self.switches.items()})

    def next_xid(self) -> int:
        self._xid = self._xid % (_XID_LIMIT - 1) + 1
        return self._xid

    def owns(self, dpid: int, xid: int) -> bool:
        sw = self.switches.get(dpid)
        return sw is not None and xid in sw.pending

    def switch(self, dpid: int) -> SwitchSync:
        sw = self.switches.get(dpid)
        if sw is None:
            sw = self.switches[dpid] = SwitchSync(dpid, self.hosts.get(dpid), self)
        return sw

    # -- one switch --------------------------------------------------------------------
    def connect(self, dpid: int, dp: Any, now: float) -> list:
        return self._run(dpid, "connect", now, lambda sw: sw.connect(dp, now))

    def disconnect(self, dpid: int) -> None:
        def gone(sw: SwitchSync) -> list:
            sw.disconnect()
            return []
        self._run(dpid, "disconnect", 0.0, gone)

    def reply(self, dpid: int, xid: int, body: list, more: bool, now: float,
              what: str = "reply") -> list:
        return self._run(dpid, f"{what} (xid {xid})", now,
                         lambda sw: sw.reply(xid, body, more, now))

    def error(self, dpid: int, xid: int, type_: int, code: int, now: float) -> list:
        return self._run(dpid, f"error type {type_} code {code} (xid {xid})", now,
                         lambda sw: sw.error(xid, type_, code, now))

    def role_reply(self, dpid: int, role: str, now: float) -> list:
        return self._run(dpid, f"role reply {role}", now, lambda sw: sw.role_reply(role, now))

    def port_status(self, dpid: int, name: str, port_no: int | None, now: float) -> list:
        return self._run(dpid, f"port status {name} -> {port_no}", now,
                         lambda sw: sw.port_status(name, port_no, now))

    def sent(self, dpid: int, now: float) -> None:
        """Everything handed out for this switch is on the wire (at ``now``): its answers
        are due from now on, so a large plan queued behind others never times out."""
        sw = self.switches.get(dpid)
        if sw is not None:
            for p in sw.pending.values():
                p.deadline = max(p.deadline, now + self.timeout)

    def fail(self, dpid: int, reason: str, now: float) -> None:
        """Something outside the engine failed for this switch (the shim, a sender)."""
        self._run(dpid, "failure", now, lambda sw: sw.fail(reason, now))

    def refused_connection(self, dpid: int) -> None:
        def count(sw: SwitchSync) -> list:
            sw.refused_connections += 1
            return []
        self._run(dpid, "second connection", 0.0, count)

    # -- every switch ------------------------------------------------------------------
    def set_model(self, model: ModelSnapshot, now: float) -> Out:
        """A new model (read once from the store): each in-sync master gets its delta.

        With ``model.hosts``, the members follow it first: a switch whose datapath id
        became a host's is read and programmed, one whose host left is left alone."""
        old, self.model = self.model, model
        epoch_changed = old is not None and old.epoch != model.epoch
        out: Out = {}
        moved: set[int] = set()
        if model.hosts is not None and dict(model.hosts) != self.hosts:
            self.hosts = dict(model.hosts)
            for dpid in set(self.switches) | set(self.hosts):
                sw = self.switch(dpid)
                host = self.hosts.get(dpid)
                if sw.host != host:
                    sw.host = host
                    moved.add(dpid)

            def rehome(sw: SwitchSync) -> list:
                if sw.dpid not in moved:
                    return []
                LOG.info("switch %s: host now %s", dpid_str(sw.dpid), sw.host or "none")
                if sw.host is None:
                    sw._reset()
                    sw.phase = IDLE
                    return []
                return sw._start_read(now)
            out = self._each("hosts change", now, rehome)
        changed = self._each(f"model change to version {model.version}", now,
                             lambda sw: [] if sw.dpid in moved
                             else sw.model_changed(now, epoch_changed))
        for dpid, msgs in changed.items():
            out.setdefault(dpid, []).extend(msgs)
        return out

    def set_role(self, role: str, generation_id: int, now: float) -> Out:
        """This controller's role toward every switch, now and for those connecting later."""
        if role not in (MASTER, SLAVE):
            raise ValueError(f"role {role!r} is not {MASTER} or {SLAVE}")
        self.role_wanted = (role, generation_id)

        def one(sw: SwitchSync) -> list:
            if sw.dp is None or sw.host is None:
                return []
            if role == SLAVE:       # stop sending at once; master waits for the switch
                sw.role, sw.dirty = SLAVE, False
            return [ofmsg.role_request(sw.dp, role, generation_id)]
        return self._each(f"set_role {role} {generation_id}", now, one)

    def tick(self, now: float) -> Out:
        return self._each("tick", now, lambda sw: sw.tick(now))

    def audit(self, now: float, dpid: int | None = None) -> Out:
        return self._each("audit", now, lambda sw: sw.audit(now)
                          if dpid is None or sw.dpid == dpid else [])

    # -- containment and publication -----------------------------------------------------
    def _run(self, dpid: int, what: str, now: float,
             fn: Callable[[SwitchSync], list]) -> list:
        sw = self.switch(dpid)
        try:
            out = fn(sw)
        except Exception as exc:  # noqa: BLE001  (one switch's bug must not stop the rest)
            self.exceptions += 1
            LOG.error("switch %s (%s): handling %s failed: %s: %s", dpid_str(dpid), sw.host,
                      what, type(exc).__name__, exc, exc_info=exc)
            out = sw.fail(f"handling {what} failed ({type(exc).__name__}: {exc})", now)
        self._publish((sw,))
        return out

    def _each(self, what: str, now: float, fn: Callable[[SwitchSync], list]) -> Out:
        out: Out = {}
        for sw in list(self.switches.values()):
            if sw.phase == DOWN:
                continue
            try:
                msgs = fn(sw)
            except Exception as exc:  # noqa: BLE001
                self.exceptions += 1
                LOG.error("switch %s (%s): handling %s failed: %s: %s", dpid_str(sw.dpid),
                          sw.host, what, type(exc).__name__, exc, exc_info=exc)
                msgs = sw.fail(f"handling {what} failed ({type(exc).__name__}: {exc})", now)
            if msgs:
                out[sw.dpid] = msgs
        self._publish(self.switches.values())
        return out

    def _publish(self, changed: Any) -> None:
        views = dict(self.views)
        for sw in changed:
            views[sw.dpid] = sw.view()
        self.views = MappingProxyType(views)       # one assignment: readers see old or new
        if self._on_publish is not None:
            self._on_publish(self.views)
