"""The live picture of the cluster (``GET /v1/topology``, ``/ui``, ``weftctl graph``) as
plain data, assembled from what the controller already holds: the member list, each
switch's published view, the store's tenants, networks, bindings and container names,
and the switches' own port descriptions and counters.

Pure: no sockets, no clock, no store.  The REST route reads its inputs once and
calls `assemble`; tests call it with hand-made inputs.  Nothing is guessed: a
tunnel end or a port whose switch did not answer is ``unknown``, not ``up``.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cluster.hostsfile import Cluster, datapath_id, dpid_str, tunnel_port_name
from cluster.names import NameRecord
from controller.model import Tenant
from controller.store.tx import StoredBinding
from controller.sync import SwitchView

# what a switch says of one of its ports, by name: "state" (up|down), "ofport", counters
LivePorts = Mapping[str, Mapping[str, Any]]
COUNTERS = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped", "tx_dropped")
UP, DOWN, MISSING, UNKNOWN = "up", "down", "missing", "unknown"
_OFPPS_LINK_DOWN = 1            # OpenFlow 1.3 port state bit (ofp_port_state)
_UNSUPPORTED = (1 << 64) - 1    # a counter the switch does not keep (OVS: drops of some ports)


def live_ports(descs: Iterable[Mapping[str, Any]],
               stats: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """One switch's port desc and port stats replies (os-ken ofctl_v1_3's shapes) joined
    by port number, keyed by port name.  LOCAL (br0's own port) is left out."""
    by_no = {s.get("port_no"): s for s in stats}
    out: dict[str, dict[str, Any]] = {}
    for d in descs:
        if not isinstance(d.get("port_no"), int):       # "LOCAL" and other reserved ports
            continue
        s = by_no.get(d["port_no"], {})
        out[str(d["name"])] = {
            "ofport": d["port_no"],
            "state": DOWN if int(d.get("state", 0)) & _OFPPS_LINK_DOWN else UP,
            **{k: (None if s[k] == _UNSUPPORTED else s[k]) for k in COUNTERS if k in s}}
    return out


def _counters(port: Mapping[str, Any] | None) -> dict[str, int | None] | None:
    """The port's counters; None when the switch gave none, a counter None when the
    switch does not keep it."""
    if not port or not all(k in port for k in COUNTERS):
        return None
    return {k: None if port[k] is None else int(port[k]) for k in COUNTERS}


def _end(host: str, port: str, view: SwitchView | None,
         live: LivePorts | None) -> dict[str, Any]:
    """One end of a tunnel (a port of one host's br0) as far as it is known."""
    if view is None or not view.connected or live is None:
        state = UNKNOWN
    elif port not in live:
        state = MISSING
    else:
        state = live[port]["state"]
    known = live.get(port) if live is not None else None
    return {"host": host, "port": port, "ofport": view.ports.get(port) if view else None,
            "state": state, "counters": _counters(known)}


def _pair_state(states: list[str]) -> str:
    """Up when both ends say up; down when either end is down or missing; else unknown."""
    if all(s == UP for s in states):
        return UP
    if any(s in (DOWN, MISSING) for s in states):
        return DOWN
    return UNKNOWN


def _segments(rows: Iterable[Tenant]) -> tuple[list[dict[str, Any]], dict[str, tuple[str, str]]]:
    """Tenants with their networks (a tenant row is also its default network), and
    segment name -> (tenant, network)."""
    rows = list(rows)
    tenants: dict[str, dict[str, Any]] = {}
    where: dict[str, tuple[str, str]] = {}
    for t in rows:
        if t.domain is None:
            tenants[t.name] = {"name": t.name, "vni": t.vni, "vlan": t.vlan,
                               "egress": t.egress, "description": t.description,
                               "networks": []}
    for t in rows:
        owner = t.domain or t.name
        if owner not in tenants:            # a network whose tenant row is not (yet) read
            continue
        tenants[owner]["networks"].append({"name": t.name, "vni": t.vni, "vlan": t.vlan,
                                           "subnet": t.subnet, "gateway": t.gateway,
                                           "default": t.domain is None})
        where[t.name] = (owner, t.name)
    for entry in tenants.values():
        entry["networks"].sort(key=lambda n: (not n["default"], n["name"]))
    return sorted(tenants.values(), key=lambda e: (e["name"] != "default", e["name"])), where


def _container(records: Iterable[NameRecord], network: str | None,
               ips: Iterable[str]) -> str | None:
    """The container's name (its primary name record, else any) from the names its
    host's agent reported for the port's network and address (docs/dns.md)."""
    addrs = {ip.split("/")[0] for ip in ips}
    found = sorted((r for r in records if r.network == network and r.ip in addrs),
                   key=lambda r: (not r.primary, r.name))
    return found[0].name if found else None


def assemble(cluster: Cluster, switches: Mapping[int, SwitchView], store_version: int,
             tenant_rows: Iterable[Tenant], bindings: Iterable[StoredBinding],
             names: Mapping[str, Iterable[NameRecord]],
             live: Mapping[str, LivePorts | None]) -> dict[str, Any]:
    """The topology as JSON-ready data.

    ``live``: host -> its switch's ports as `live_ports` made them, or None when the
    switch was not asked or did not answer (its ports' and tunnels' state is then
    ``unknown`` and their counters null).
    """
    hosts, tunnels = [], []
    views = {h.name: switches.get(datapath_id(h)) for h in cluster.hosts}
    for h in cluster.hosts:
        sw = views[h.name]
        connected = bool(sw and sw.connected)
        hosts.append({"name": h.name, "dpid": dpid_str(datapath_id(h)),
                      "address": h.underlay_ip, "tunnel_type": h.tunnel_type,
                      "docker_subnet": h.docker_subnet, "connected": connected,
                      "in_sync": bool(sw and connected and not sw.syncing
                                      and sw.synced_version == store_version),
                      "sync_state": sw.phase if sw else None,
                      "synced_version": sw.synced_version if sw else None,
                      "counters_read": live.get(h.name) is not None})
    if cluster.transport == "tunnel":
        names_ = [h.name for h in cluster.hosts]
        for i, one in enumerate(names_):
            for other in names_[i + 1:]:
                kind = cluster.link_type(one, other)
                ends = [_end(one, tunnel_port_name(kind, other), views[one], live.get(one)),
                        _end(other, tunnel_port_name(kind, one), views[other], live.get(other))]
                tunnels.append({"hosts": [one, other], "type": kind, "ends": ends,
                                "state": _pair_state([e["state"] for e in ends])})
    tenants, where = _segments(tenant_rows)
    ports = []
    for sb in bindings:
        b = sb.binding
        tenant, network = where.get(b.tenant or "", (b.tenant, b.tenant))
        host_live = live.get(b.host)
        sw = views.get(b.host)
        if host_live is None:
            state = UNKNOWN
        else:
            state = host_live[b.port]["state"] if b.port in host_live else MISSING
        ports.append({"host": b.host, "port": b.port,
                      "ofport": sw.ports.get(b.port) if sw else None,
                      "tenant": tenant, "network": network, "mode": b.mode,
                      "trunk": list(b.trunk), "mac": b.mac, "ips": list(b.ips),
                      "container": _container(names.get(b.host, ()), b.tenant, b.ips),
                      "source": sb.source, "state": state,
                      "counters": _counters(host_live.get(b.port) if host_live else None)})
    ports.sort(key=lambda p: (p["host"], p["tenant"] or "", p["port"]))
    return {"state_version": store_version, "transport": cluster.transport,
            "counters": list(COUNTERS), "hosts": hosts, "tunnels": tunnels,
            "tenants": tenants, "ports": ports}
