"""The controller's state between the OpenFlow shim and the REST API.

Holds the store, the cluster from hosts.yaml and what is known about each
switch.  Both sides read it; only the OpenFlow thread touches switch sync
state, the REST side asks for work by posting requests (see `controller.app`).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.model import TRUNK, Binding, Topology
from controller.store import StoreBase
from cluster.hostsfile import Cluster, datapath_id, dpid_str, tunnel_port_name


@dataclass
class Switch:
    """One datapath as the controller knows it."""
    dpid: int
    host: str | None
    connected: bool = False
    ports: dict[str, int] = field(default_factory=dict)
    connected_at: float = 0.0
    syncs: int = 0
    flow_mods: int = 0              # flow-mods sent since the controller started
    group_mods: int = 0
    meter_mods: int = 0
    operator_mods: int = 0          # operator flows (re)installed or removed by syncs
    refused: int = 0                # second connections claiming this datapath id, refused
    learned_flows: int = 0          # flows the switch learned (2 per MAC), counted at each sync
    last_sync: dict[str, Any] = field(default_factory=dict)
    # sync machinery (OpenFlow thread only)
    dp: Any = None
    syncing: bool = False
    dirty: bool = False
    synced_version: int = -1
    known: Any = None               # SwitchState as last read plus what we sent; None: read it

    def summary(self, cluster: Cluster) -> dict[str, Any]:
        tunnels = {}
        if self.host and cluster.transport == "tunnel":
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
                "last_sync": self.last_sync}


def _no_switches(dpid: int) -> list[dict[str, Any]]:
    raise LookupError("no OpenFlow app runs in this process")


class Core:
    """Shared controller state; `lock` guards `switches`."""

    def __init__(self, store: StoreBase, cluster: Cluster) -> None:
        self.store = store
        self.cluster = cluster
        self.lock = threading.RLock()
        self.switches: dict[int, Switch] = {
            datapath_id(h): Switch(datapath_id(h), h.name) for h in cluster.hosts}
        self.started = time.time()
        self.on_change: Callable[[], None] = lambda: None  # set by the app: resync every switch
        # set by the app: the event loop's liveness; None when no OpenFlow app runs
        self.loop_health: Callable[[], dict[str, Any]] | None = None
        self.handler_errors: dict[str, int] = {}   # event handler -> exceptions caught
        # set by the app: a connected switch's live flows / meter stats (REST threads)
        self.dump_flows: Callable[[int], list[dict[str, Any]]] = _no_switches
        self.dump_meters: Callable[[int], list[dict[str, Any]]] = _no_switches
        # set by the app: a datapath stand-in for os-ken's ofctl_v1_3 helpers (ofctl_rest)
        self.ofctl_datapath: Callable[[int], Any] = _no_switches
        self.ofctl_waiters: dict[int, dict[int, Any]] = {}   # dpid -> xid -> (event, msgs)
        # set by controller.ha when several instances elect a master: role, generation, leader
        self.election_status: Callable[[], dict[str, Any]] | None = None

    def topology(self) -> Topology:
        """A snapshot of the model for the pipeline."""
        tenants = tuple(t for t in self.store.tenants() if t.name != "default")
        return Topology(tenants, tuple(sb.binding for sb in self.store.bindings())
                        + self.uplink_bindings(tenants),
                        tuple(h.name for h in self.cluster.hosts),
                        limits=tuple(self.store.limits()), rules=tuple(self.store.rules()),
                        acls=tuple(self.store.acls()), acl_deny=self.store.acl_deny())

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

    def switch(self, dpid: int) -> Switch:
        with self.lock:
            if dpid not in self.switches:
                self.switches[dpid] = Switch(dpid, None)
            return self.switches[dpid]

    def switch_by_name(self, key: str) -> Switch | None:
        """Find a switch by host name or dpid (hex, with or without 0x)."""
        with self.lock:
            for sw in self.switches.values():
                if sw.host == key:
                    return sw
            try:
                return self.switches.get(int(key, 16))
            except ValueError:
                return None
