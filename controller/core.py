"""The controller's state between the OpenFlow shim and the REST API.

Holds the store, the cluster from hosts.yaml and what is known about each
switch.  Only the OpenFlow thread touches switch sync state (`controller.sync`);
it publishes an immutable `SwitchView` per switch in a new mapping after each
event (`publish`: one assignment), which is all REST threads read.  The REST
side asks for work through one interface, `OpenFlowSide` (`controller.app` is it).
"""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Protocol

from controller.membership import Membership
from controller.metrics import SwitchStats
from controller.model import TRUNK, Binding, Topology
from controller.store import StoreBase
from controller.sync import ModelSnapshot, SwitchView
from cluster.hostsfile import Cluster, datapath_id, tunnel_port_name


# What REST threads see of a switch: an immutable value the OpenFlow thread publishes.
Switch = SwitchView


class OpenFlowSide(Protocol):
    """What REST threads (and the store's watchers) ask of the OpenFlow side: the one
    interface between them, passed to `Core`.  `controller.app.WeftController` is it;
    `NoOpenFlow` stands in when no OpenFlow app runs in the process."""

    def request_resync(self) -> None:
        """The model changed: bring every switch to it (never blocks the caller)."""

    def loop_health(self) -> dict[str, Any] | None:
        """Is the event loop turning (for /v1/health); None: there is no event loop."""

    def dump_flows(self, dpid: int, cookie: int = ..., mask: int = ...) -> list[dict[str, Any]]:
        """A connected switch's live flows, all of weft's or those of ``cookie``/``mask``
        (LookupError: not connected or refused; TimeoutError: no answer)."""

    def dump_port_stats(self, dpid: int) -> list[dict[str, Any]]:
        """A connected switch's port counters (errors as `dump_flows`)."""

    def dump_meters(self, dpid: int) -> list[dict[str, Any]]:
        """A connected switch's meter stats (errors as `dump_flows`)."""

    def ofctl_datapath(self, dpid: int) -> Any:
        """A datapath for os-ken's ofctl_v1_3 read helpers (`switch_queries.OfctlDatapath`)."""


class NoOpenFlow:
    """No OpenFlow app in this process (the REST API alone): nothing to resync, no
    event loop, no switch to ask."""

    def request_resync(self) -> None:
        pass

    def loop_health(self) -> dict[str, Any] | None:
        return None

    def dump_flows(self, dpid: int, cookie: int = 0, mask: int = 0) -> list[dict[str, Any]]:
        raise LookupError("no OpenFlow app runs in this process")

    def dump_port_stats(self, dpid: int) -> list[dict[str, Any]]:
        raise LookupError("no OpenFlow app runs in this process")

    def dump_meters(self, dpid: int) -> list[dict[str, Any]]:
        raise LookupError("no OpenFlow app runs in this process")

    def ofctl_datapath(self, dpid: int) -> Any:
        raise LookupError("no OpenFlow app runs in this process")


class Core:
    """Shared controller state; `switches` is an immutable snapshot, replaced whole."""

    def __init__(self, store: StoreBase, cluster: Cluster,
                 openflow: OpenFlowSide | None = None) -> None:
        self.store = store
        self.openflow: OpenFlowSide = openflow or NoOpenFlow()
        self.cluster = cluster
        self.lock = threading.RLock()
        self.switches: Mapping[int, SwitchView] = MappingProxyType({
            datapath_id(h): SwitchView(datapath_id(h), h.name) for h in cluster.hosts})
        self.started = time.time()
        # Who answers: a new id per controller process.  Agents re-send their whole
        # attachment list when it (or the store epoch) changes: a controller restarted
        # on another store must learn every binding again without an agent restart.
        self.instance = uuid.uuid4().hex
        # event handler -> exceptions caught: published by the OpenFlow thread (copy on write)
        self.handler_errors: dict[str, int] = {}
        # dpid -> the switch's last counters (controller.stats publishes, /metrics reads)
        self.stats: Mapping[int, SwitchStats] = MappingProxyType({})
        self.stats_interval = 0.0           # seconds between polls; 0: nobody polls
        # host -> what its agent last said of its Docker networks (docs/docker.md): kept in
        # memory by the instance it reported to; agents report on change and every minute
        self.docker_networks: dict[str, dict[str, Any]] = {}
        self._topology: tuple[int, Cluster, Topology] | None = None  # (version, members, model)
        # set by controller.election_app when several instances elect a master: role, generation, leader
        self.election_status: Callable[[], dict[str, Any]] | None = None
        # hosts.yaml (followed by `watch_hosts`) plus registered hosts -> self.cluster
        self.members = Membership(store, cluster, self.set_cluster)
        self.members.poll()         # registered hosts are members from the first sync on

    def watch_hosts(self, path: str) -> Membership:
        """Follow edits of hosts.yaml at `path` (call `self.members.run` in a thread)."""
        self.members.path = path
        self.members._stat = self.members._file_stat()
        return self.members

    def on_change(self) -> None:
        """The model or the member list changed: every switch is to be brought to it."""
        self.openflow.request_resync()

    def set_cluster(self, cluster: Cluster) -> None:
        """Swap in a new member list (hosts.yaml edited, a host registered or expired) and
        resync: the next model carries the members (ModelSnapshot.hosts), so the sync engine reads
        and programs a new host's switch, leaves a departed one alone, and every switch
        gets the flows of its new set of tunnels."""
        self.cluster = cluster
        self.on_change()

    def identity(self) -> dict[str, str]:
        """What an agent compares to know it talks to the controller and store it reported to."""
        return {"instance": self.instance, "epoch": self.store.epoch()}

    def publish(self, views: Mapping[int, SwitchView]) -> None:
        """The OpenFlow thread's new snapshot of every switch (one assignment)."""
        self.switches = views

    def snapshot(self) -> ModelSnapshot:
        """The whole model, read from the store once, for every switch's desired state."""
        version = self.store.version        # before reading: a later write resyncs again
        ops: dict[int, list] = {}
        for of in self.store.operator_flows():
            ops.setdefault(of.dpid, []).append(of)
        cluster = self.cluster              # one member list for the whole model
        return ModelSnapshot(version, self.topology(),
                     {h.name: self.tunnels(h.name) for h in cluster.hosts},
                     {dpid: tuple(fs) for dpid, fs in ops.items()}, self.store.epoch(),
                     {datapath_id(h): h.name for h in cluster.hosts})

    def topology(self) -> Topology:
        """A snapshot of the model for the pipeline: read and validated once per store
        version (every committed change bumps it), not once per switch sync."""
        version = getattr(self.store, "version", None)
        cached = self._topology
        cluster = self.cluster              # hosts.yaml edits and registrations change it
        if cached is not None and version is not None and cached[0] == version \
                and cached[1] is cluster:
            return cached[2]
        m = self.store.model()              # one consistent read of every part
        # every row: tenants and their networks (Tenant.domain); routes between them
        tenants = tuple(t for t in m.tenants if t.name != "default")
        topo = Topology(tenants, m.bindings + self.uplink_bindings(tenants),
                        tuple(h.name for h in cluster.hosts),
                        limits=m.limits, rules=m.rules, acls=m.acls, acl_deny=m.acl_deny,
                        endpoints=m.endpoints, routes=m.routes)
        if version is not None and version == getattr(self.store, "version", None):
            self._topology = (version, cluster, topo)   # not if a change landed meanwhile
        return topo

    def uplink_bindings(self, tenants: tuple) -> tuple[Binding, ...]:
        """With VLAN transport each host's uplink is a trunk of every tenant with a VLAN.

        The default tenant rides it untagged (native); a tenant without a VLAN id
        cannot leave its host in this mode.
        """
        if self.cluster.transport != "vlan":
            return ()
        tagged = tuple(t.name for t in tenants if t.vlan is not None)
        return tuple(Binding(h.name, h.uplink, "default", TRUNK, trunk=tagged, uplink=True)
                     for h in self.cluster.hosts if h.uplink)   # vlan transport: all have one

    def tunnels(self, host: str) -> dict[str, str]:
        if self.cluster.transport != "tunnel":
            return {}
        return {p.name: tunnel_port_name(self.cluster.link_type(host, p.name), p.name)
                for p in self.cluster.peers(host)}

    def switch_by_name(self, key: str) -> SwitchView | None:
        """Find a switch by host name or dpid (hex, with or without 0x)."""
        switches = self.switches            # one snapshot for the whole lookup
        for sw in switches.values():
            if sw.host == key:
                return sw
        try:
            return switches.get(int(key, 16))
        except ValueError:
            return None
