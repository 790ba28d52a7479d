"""The agent's Prometheus families: a counters object the agent increments, and a pure
function from a snapshot of the agent to the exposition text (`cluster.promtext`).

Served at ``/metrics`` by the agent's listener (``--listen``, `ovs_agent.listener`).
Labels are bounded: the peer host of a tunnel, the tunnel type; nothing per
container, MAC or address.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from cluster.promtext import Family, render

__all__ = ["AgentCounters", "AgentSnapshot", "TunnelState", "families", "render_metrics"]


@dataclass
class AgentCounters:
    """What the agent counts as it goes (any thread increments through `add`)."""

    passes: int = 0                 # reconcile passes completed
    pass_failures: int = 0          # passes that raised (OVS restarting...): retried
    repairs: int = 0                # passes that changed OVSDB (something was not as wanted)
    repair_ops: int = 0             # OVSDB operations those passes applied
    afxdp_fallbacks: int = 0        # ports that went back from AF_XDP to AF_PACKET
    reports_sent: int = 0           # attachment reports the controller acknowledged
    reports_failed: int = 0         # attachment reports no controller took
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)


@dataclass(frozen=True)
class TunnelState:
    peer: str                       # the peer host's name (hosts.yaml)
    kind: str                       # vxlan, gre
    up: bool                        # OVS has the port (ofport > 0) and its link is up


@dataclass(frozen=True)
class AgentSnapshot:
    """The agent as `families` renders it; gathered on each scrape (cheap: OVSDB is
    read from the agent's in-memory replica, links from /sys)."""

    host: str
    version: str
    counters: AgentCounters
    tunnels: tuple[TunnelState, ...] = ()
    docker0_link_up: bool | None = None         # None: this host has no docker0 link
    resolver: Mapping[str, int] | None = None   # answered, forwarded, dropped, limited
    zones: int | None = None                    # tenants whose names the resolver serves
    networks: Mapping[str, int] | None = None   # Docker networks: managed, conflicts, ...


def families(s: AgentSnapshot) -> list[Family]:
    c = s.counters
    host = {"host": s.host}
    out = [
        Family("weft_agent_build_info", "gauge", "the agent's weft version (always 1)").add(
            1, version=s.version, **host),
        Family("weft_agent_passes_total", "counter", "reconcile passes completed").add(
            c.passes, **host),
        Family("weft_agent_pass_failures_total", "counter",
               "reconcile passes that failed and were retried").add(c.pass_failures, **host),
        Family("weft_agent_repairs_total", "counter",
               "reconcile passes that found OVSDB not as wanted and changed it").add(
            c.repairs, **host),
        Family("weft_agent_repair_operations_total", "counter",
               "OVSDB operations applied by those passes").add(c.repair_ops, **host),
        Family("weft_agent_afxdp_fallbacks_total", "counter",
               "ports OVS could not open with AF_XDP, moved back to AF_PACKET").add(
            c.afxdp_fallbacks, **host),
        Family("weft_agent_reports_total", "counter",
               "attachment reports to the controller, by result (sent: acknowledged)").add(
            c.reports_sent, result="sent", **host).add(c.reports_failed, result="failed", **host),
    ]
    tunnels = Family("weft_agent_tunnel_up", "gauge",
                     "1 when the tunnel port to the peer is open in OVS and its link is up")
    for t in sorted(s.tunnels, key=lambda t: t.peer):
        tunnels.add(int(t.up), peer=t.peer, type=t.kind, **host)
    out.append(tunnels)
    link = Family("weft_agent_docker0_link_up", "gauge",
                  "1 when the docker0 <-> br0 veth pair has carrier on both ends")
    if s.docker0_link_up is not None:
        link.add(int(s.docker0_link_up), **host)
    out.append(link)
    queries = Family("weft_agent_dns_queries_total", "counter",
                     "queries to the host's resolver, by outcome (answered from weft's "
                     "records, forwarded upstream, dropped, rate-limited)")
    for outcome, n in sorted((s.resolver or {}).items()):
        queries.add(n, outcome=outcome, **host)
    zones = Family("weft_agent_dns_zones", "gauge",
                   "tenants whose records the host's resolver holds")
    if s.zones is not None:
        zones.add(s.zones, **host)
    nets = Family("weft_agent_docker_networks", "gauge",
                  "the controller's networks in this dockerd, by state (managed: created "
                  "or adopted; conflicts; waiting; errors)")
    for state, n in sorted((s.networks or {}).items()):
        nets.add(n, state=state, **host)
    return out + [queries, zones, nets]


def render_metrics(s: AgentSnapshot) -> str:
    return render(families(s))
