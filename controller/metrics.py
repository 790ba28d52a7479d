"""The controller's Prometheus families, rendered from plain data (no sockets, no clock).

`families` turns what the controller knows (the switches' published views, the
last counters the stats poller read from each switch, the model) into
`cluster.promtext.Family` values; `controller.rest.observe` only gathers its input
and renders.  Labels are bounded by the model: host, tenant, network, port name,
ACL rule id, meter id; never a MAC or an address (docs/observability.md, Metrics).

Port counters come from OpenFlow port stats: ``rx`` is what the switch received on
the port (what a container sent), ``tx`` what it sent out of it.  A tenant's
counters are the sums over its access ports (and, for the default tenant, every
host's docker0 link); trunks carry several tenants and are counted per port only.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.flows import acl_rule_of, feature_of
from controller.model import ACCESS, DEFAULT_TENANT, Topology
from controller.sync import SwitchView
from cluster.hostsfile import DOCKER_LINK_PORT, dpid_str
from cluster.promtext import Family, render

__all__ = ["SwitchStats", "MetricsInput", "families", "render_metrics", "PORT_COUNTERS"]

# port stats field -> (family name, help)
PORT_COUNTERS = {
    "rx_packets": ("weft_port_rx_packets_total", "packets the switch received on the port"),
    "tx_packets": ("weft_port_tx_packets_total", "packets the switch sent out of the port"),
    "rx_bytes": ("weft_port_rx_bytes_total", "bytes the switch received on the port"),
    "tx_bytes": ("weft_port_tx_bytes_total", "bytes the switch sent out of the port"),
    "rx_dropped": ("weft_port_rx_dropped_total", "packets received on the port and dropped"),
    "tx_dropped": ("weft_port_tx_dropped_total", "packets to send out of the port, dropped"),
    "rx_errors": ("weft_port_rx_errors_total", "receive errors on the port"),
    "tx_errors": ("weft_port_tx_errors_total", "transmit errors on the port"),
}
_TENANT_COUNTERS = ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_dropped",
                    "tx_dropped")


@dataclass(frozen=True)
class SwitchStats:
    """One poll of one switch (`controller.stats`): its counters as plain dicts
    (`switch_queries.port_stats_json`, `meter_json`, `flow_json` of its ACL flows)."""

    at: float                                   # time.time() when the poll ended
    seconds: float                              # how long the poll took
    ports: tuple[Mapping[str, Any], ...] = ()
    meters: tuple[Mapping[str, Any], ...] = ()
    acl_flows: tuple[Mapping[str, Any], ...] = ()
    error: str | None = None                    # the poll failed (the previous counters stay)
    errors: int = 0                             # failed polls of this switch so far


@dataclass(frozen=True)
class MetricsInput:
    """Everything `families` renders; gathered by the REST route in one go."""

    switches: Mapping[int, SwitchView]
    stats: Mapping[int, SwitchStats]
    topology: Topology
    state_version: int
    version: str
    now: float
    learn_limit_macs: int = 0
    handler_errors: Mapping[str, int] = field(default_factory=dict)
    loop: Mapping[str, Any] | None = None
    stats_interval: float = 0.0
    model_valid: bool = True        # False: the store's model did not validate (topology empty)


def _acl_totals(stats: Mapping[int, SwitchStats]) -> dict[int, tuple[int, int]]:
    """(packets, bytes) per ACL rule id over every switch's rule flows."""
    out: dict[int, tuple[int, int]] = {}
    for s in stats.values():
        for f in s.acl_flows:
            cookie = int(f["cookie"], 16)
            rule = acl_rule_of(cookie) if feature_of(cookie) == "acl" else None
            if rule is not None:
                p, b = out.get(rule, (0, 0))
                out[rule] = (p + f["packets"], b + f["bytes"])
    return out


def families(inp: MetricsInput) -> list[Family]:
    """Every family of the controller, in a stable order (HELP/TYPE even when empty)."""
    topo = inp.topology
    tenants = {t.name: t for t in topo.all_tenants}

    def tenant_of(network: str) -> str:
        t = tenants.get(network)
        return t.domain if t is not None and t.domain else network

    # -- the controller and the model ------------------------------------------------------
    build = Family("weft_build_info", "gauge", "the controller's weft version (always 1)")
    build.add(1, version=inp.version)
    state = Family("weft_state_version", "gauge",
                   "the store's version: bumped by every committed change of the model")
    state.add(inp.state_version)
    valid = Family("weft_model_valid", "gauge",
                   "0 when the store's model does not validate (switches keep their flows)")
    valid.add(int(inp.model_valid))
    n_tenants = Family("weft_tenants", "gauge", "tenants (isolation domains), default included")
    n_tenants.add(sum(1 for t in topo.all_tenants if t.domain is None))
    n_networks = Family("weft_networks", "gauge", "networks (L2 segments), tenants' own included")
    n_networks.add(len(topo.all_tenants))
    n_bindings = Family("weft_port_bindings", "gauge", "port bindings in the model")
    n_bindings.add(len(topo.bindings))
    limit = Family("weft_learn_limit_macs", "gauge",
                   "learned MACs allowed per (ingress port or tunnel, network) on a host")
    limit.add(inp.learn_limit_macs)
    handler = Family("weft_handler_errors_total", "counter",
                     "exceptions caught in the controller's OpenFlow event handlers")
    for name, n in sorted(inp.handler_errors.items()):
        handler.add(n, handler=name)
    out = [build, state, valid, n_tenants, n_networks, n_bindings, limit, handler]
    if inp.loop:
        out += [Family("weft_event_queue_depth", "gauge",
                       "events waiting in the OpenFlow event loop's queue").add(
                           inp.loop["queue_depth"]),
                Family("weft_event_loop_alive", "gauge",
                       "1 while the OpenFlow event loop handles its heartbeat").add(
                           int(inp.loop["alive"]))]

    # -- per switch: connection, sync, learning ---------------------------------------------
    connected = Family("weft_switch_connected", "gauge", "1 while the host's switch is connected")
    in_sync = Family("weft_switch_in_sync", "gauge",
                     "1 when the switch holds the flows of the store's current version")
    synced = Family("weft_switch_synced_version", "gauge",
                    "the store version the switch was last brought to (-1: never)")
    mods = Family("weft_flow_mods_sent_total", "counter", "flow-mods sent to the switch")
    syncs = Family("weft_syncs_total", "counter", "syncs (read, diff, send) of the switch")
    sync_errors = Family("weft_sync_errors_total", "counter",
                         "failed syncs: error replies, timeouts, exceptions (then a re-read)")
    duration = Family("weft_sync_duration_seconds", "histogram",
                      "time of each completed sync, from the read to the barrier reply")
    plan = Family("weft_sync_last_plan_mods", "gauge",
                  "messages the last sync sent, by kind (flow, group, meter)")
    desired = Family("weft_sync_desired_flows", "gauge",
                     "flows the model wanted on the switch at its last sync")
    learned = Family("weft_learned_flows", "gauge",
                     "flows the switch learned (two per learned MAC), at its last read")
    for sw in sorted(inp.switches.values(), key=lambda s: (s.host or "", s.dpid)):
        host = sw.host or ""
        lbl = {"host": host, "dpid": dpid_str(sw.dpid)}
        connected.add(int(sw.connected), **lbl)
        mods.add(sw.flow_mods, **lbl)
        syncs.add(sw.syncs, **lbl)
        learned.add(sw.learned_flows, **lbl)
        in_sync.add(int(sw.connected and not sw.syncing
                        and sw.synced_version == inp.state_version), host=host)
        synced.add(sw.synced_version, host=host)
        sync_errors.add(sw.errors, host=host)
        duration.add(sw.sync_seconds, host=host)
        last = sw.last_sync
        if last:
            for kind in ("flow", "group", "meter"):
                plan.add(last.get(f"{kind}_mods", 0), host=host, kind=kind)
            desired.add(last.get("flows_desired", 0), host=host)
    out += [connected, in_sync, synced, mods, syncs, sync_errors, duration, plan, desired,
            learned]

    # -- the stats poller's counters ----------------------------------------------------
    by_host = {dpid: (inp.switches[dpid].host or "") for dpid in inp.stats
               if dpid in inp.switches}
    poll_age = Family("weft_stats_age_seconds", "gauge",
                      "seconds since the switch's counters were last read")
    poll_seconds = Family("weft_stats_poll_seconds", "gauge",
                          "how long the last read of the switch's counters took")
    poll_errors = Family("weft_stats_poll_errors_total", "counter",
                         "reads of the switch's counters that failed")
    interval = Family("weft_stats_interval_seconds", "gauge",
                      "how often the controller reads every switch's counters")
    interval.add(inp.stats_interval)
    port_fams = {k: Family(name, "counter", h) for k, (name, h) in PORT_COUNTERS.items()}
    binding_info = Family("weft_port_binding_info", "gauge",
                          "1 per bound port: its tenant, network and mode (for joins)")
    tenant_ports = Family("weft_tenant_ports", "gauge",
                          "ports bound to the network (access: one network; trunk: each)")
    tenant_fams = {k: Family(f"weft_tenant_{k}_total", "counter",
                             f"{PORT_COUNTERS[k][1].replace('the port', 'its access ports')}"
                             ", summed over the network's access ports on every host")
                   for k in _TENANT_COUNTERS}
    # (host, port) -> network, for access ports and the docker0 links
    network_of: dict[tuple[str, str], str] = {}
    counted: dict[str, int] = {}
    for b in topo.bindings:
        for net in b.tenants:
            counted[net] = counted.get(net, 0) + 1
        if b.mode == ACCESS and b.tenant:
            network_of[(b.host, b.port)] = b.tenant
        binding_info.add(1, host=b.host, port=b.port, tenant=tenant_of(b.tenant or ""),
                         network=b.tenant or "", mode=b.mode)
    for h in topo.hosts:
        network_of.setdefault((h, DOCKER_LINK_PORT), DEFAULT_TENANT.name)
    for t in topo.all_tenants:
        tenant_ports.add(counted.get(t.name, 0), tenant=tenant_of(t.name), network=t.name)
    sums: dict[str, dict[str, int]] = {t.name: dict.fromkeys(_TENANT_COUNTERS, 0)
                                       for t in topo.all_tenants}
    meter_in_p = Family("weft_meter_packets_total", "counter",
                        "packets that reached the meter (QoS rate limit or rule)")
    meter_in_b = Family("weft_meter_bytes_total", "counter", "bytes that reached the meter")
    band_p = Family("weft_meter_band_packets_total", "counter",
                    "packets over the meter's rate: counted by its drop band, dropped")
    band_b = Family("weft_meter_band_bytes_total", "counter",
                    "bytes over the meter's rate, dropped by its band")
    for dpid in sorted(inp.stats, key=lambda d: (by_host.get(d, ""), d)):
        sw_host = by_host.get(dpid)
        if sw_host is None:
            continue
        host = sw_host
        s = inp.stats[dpid]
        poll_age.add(round(max(0.0, inp.now - s.at), 3), host=host)
        poll_seconds.add(round(s.seconds, 6), host=host)
        poll_errors.add(s.errors, host=host)
        names = {no: name for name, no in inp.switches[dpid].ports.items()}
        for p in s.ports:
            pname = names.get(p["port_no"])
            if pname is None:
                continue            # LOCAL, or a port the sync has not seen yet
            for key, fam in port_fams.items():
                fam.add(p[key], host=host, port=pname)
            bound = network_of.get((host, pname))
            if bound in sums:
                for key in _TENANT_COUNTERS:
                    sums[bound][key] += p[key]
        for m in s.meters:
            meter = str(m["meter_id"])
            meter_in_p.add(m["packets_in"], host=host, meter=meter)
            meter_in_b.add(m["bytes_in"], host=host, meter=meter)
            band_p.add(m["packets_dropped"], host=host, meter=meter)
            band_b.add(m["bytes_dropped"], host=host, meter=meter)
    for net, c in sorted(sums.items()):
        for key, fam in tenant_fams.items():
            fam.add(c[key], tenant=tenant_of(net), network=net)
    out += [interval, poll_age, poll_seconds, poll_errors, *port_fams.values(), binding_info,
            tenant_ports, *tenant_fams.values(), meter_in_p, meter_in_b, band_p, band_b]

    # -- ACL rules: their flows' counters over every switch -----------------------------
    acl_p = Family("weft_acl_rule_packets_total", "counter",
                   "first packets of the connections the ACL rule decided, all switches")
    acl_b = Family("weft_acl_rule_bytes_total", "counter",
                   "bytes of those first packets, all switches")
    totals = _acl_totals(inp.stats)
    for r in sorted(topo.acls, key=lambda r: r.id):
        packets, nbytes = totals.get(r.id, (0, 0))
        rule = {"tenant": r.tenant, "rule": str(r.id), "action": r.action}
        acl_p.add(packets, **rule)
        acl_b.add(nbytes, **rule)
    return out + [acl_p, acl_b]


def render_metrics(inp: MetricsInput) -> str:
    return render(families(inp))
