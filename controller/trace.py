"""Trace a packet through the flows the switches hold: OVS's ``ofproto/trace``, parsed.

Pure (no sockets, no clock): the REST layer (``controller.rest.trace``) asks each host's
agent to run ``ovs-appctl ofproto/trace br0 FLOW`` and hands the text here.  This module

* builds the flow string an agent runs from validated values only (``Packet``),
* parses the output into steps (table, matched flow, cookie, actions) and outputs,
* names each step in weft's terms (the table names of ``controller.pipeline.tables``, the
  cookie spaces of ``controller.flows``), and
* decides one hop's fate (outputs to local ports, tunnels, egress; or the drop and its
  cause) from the flow that decided it.

Why ofproto/trace and not a model of the pipeline: it walks the flows the switch actually
holds (learned MACs, operator flows, stale flows a sync has not removed yet), with OVS's
own matching, so a trace cannot disagree with the datapath about which flow matches.
What it does not simulate: meters (a rate limit never drops a traced packet; the trace
names the meter a packet passes) and the learn action's side effects.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from cluster.tracepacket import MAC_RE, PROTOCOLS, Packet
from controller.flows import COOKIE_FEATURE_MASK, acl_rule_of, feature_of
from controller.pipeline.tables import (
    CLASSIFY, FIB, FLOOD, GATEWAY, PRIO_ACL_DENY_ALL, PRIO_ACL_RULE_BASE, PRIO_GW_IP_DROP,
    PRIO_PIN_DROP, TABLES,
)

__all__ = ["Packet", "Step", "HopTrace", "parse", "table_name", "cookie_meaning",
           "drop_cause", "next_packet", "PROTOCOLS", "MAC_RE"]

_TABLE_NAMES = {t.id: t.name for t in TABLES}
OPERATOR_TABLES = range(100, 200)           # controller.opflows


@dataclass(frozen=True)
class Step:
    """One flow a packet matched: its table, match, priority, cookie, actions."""

    table: int
    match: str
    priority: int
    cookie: int
    actions: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "table_name": table_name(self.table), "match": self.match,
                "priority": self.priority, "cookie": f"{self.cookie:#x}",
                "meaning": cookie_meaning(self.cookie, self.table, self.priority),
                "actions": list(self.actions)}


@dataclass
class HopTrace:
    """One host's ofproto/trace, parsed: the steps, OpenFlow outputs, the final packet."""

    steps: list[Step] = field(default_factory=list)
    outputs: list[int | str] = field(default_factory=list)   # ofports; "in_port" for IN_PORT
    # ofport -> the tunnel id set just before that output (a flood group's bucket sets it:
    # the Final flow does not show a bucket's changes)
    tun_ids: dict[int, int] = field(default_factory=dict)
    final: dict[str, str] = field(default_factory=dict)      # the Final flow's fields
    datapath_actions: str = ""


_STEP_RE = re.compile(r"^\s*(\d+)\. (?:(.*), )?priority (\d+)(?:, cookie (0x[0-9a-f]+))?$")
_NO_MATCH_RE = re.compile(r"^\s*(\d+)\. No match\.?$")
_BRIDGE_RE = re.compile(r'^\s*bridge\("([^"]+)"\)$')
_OUTPUT_RE = re.compile(r"^\s*output:(\d+|in_port|IN_PORT)$")
_METER_RE = re.compile(r"^meter:(\d+)$")
_SET_TUN_RE = re.compile(r"^set_field:(0x[0-9a-f]+)->tun_id$")


def parse(text: str, bridge: str = "br0") -> HopTrace:
    """Parse ``ovs-appctl ofproto/trace`` output (every recirculation, ``bridge`` only).

    Outputs are the OpenFlow ``output:N`` actions the packet really took on ``bridge``
    (an output to the input port, which OVS skips, is left out), in order."""
    out = HopTrace()
    in_bridge = False
    pending: tuple[int, str, int, int] | None = None
    actions: list[str] = []
    last_output: int | str | None = None
    section_flow: dict[str, str] = {}
    last_tun: int | None = None
    nested_at: int | None = None

    def close() -> None:
        nonlocal pending, actions
        if pending is not None:
            out.steps.append(Step(*pending, tuple(actions)))
        pending, actions = None, []

    for line in text.splitlines():
        b = _BRIDGE_RE.match(line)
        indent = len(line) - len(line.lstrip())
        if b and indent and in_bridge and b[1] != bridge:
            nested_at = indent      # an output's trip through br-phy, inside a group bucket
            continue
        if nested_at is not None:
            if line.strip() and indent < nested_at:
                nested_at = None    # back in br0: the group's next bucket
            else:
                continue
        if b:
            close()
            in_bridge = b[1] == bridge
            continue
        if line.startswith("Final flow:"):
            close()
            fields = line.split(":", 1)[1].strip()
            out.final = section_flow if fields == "unchanged" else _flow_fields(fields)
            in_bridge = False
            continue
        if line.startswith("Datapath actions:"):
            out.datapath_actions = line.split(":", 1)[1].strip()
            continue
        if line.startswith("Flow:"):
            section_flow = _flow_fields(line.split(":", 1)[1].strip())
            continue
        if not in_bridge:
            continue
        m = _STEP_RE.match(line)
        if m:
            close()
            pending = (int(m[1]), m[2] or "", int(m[3]), int(m[4] or "0", 16))
            continue
        m = _NO_MATCH_RE.match(line)
        if m:
            close()
            pending = (int(m[1]), "(no match)", -1, 0)
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith((">>", "->")) or pending is None:
            if stripped.startswith(">> skipping output to input port") and last_output is not None:
                out.outputs.remove(last_output)
                last_output = None
            continue
        if stripped.startswith(("learn(", "bucket ", "thaw", "Resuming")):
            if stripped.startswith("learn("):
                actions.append("learn(...)")
            continue
        actions.append(stripped)
        t = _SET_TUN_RE.match(stripped)
        if t:
            last_tun = int(t[1], 16)
        o = _OUTPUT_RE.match(stripped)
        if o:
            last_output = int(o[1]) if o[1].isdigit() else "in_port"
            out.outputs.append(last_output)
            if isinstance(last_output, int) and last_tun is not None:
                out.tun_ids[last_output] = last_tun
        else:
            last_output = None
    close()
    return out


def _flow_fields(text: str) -> dict[str, str]:
    """``icmp,in_port=3,dl_src=...`` -> {"proto": "icmp", "in_port": "3", ...}."""
    d: dict[str, str] = {}
    for part in text.split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            d[k.strip()] = v.strip()
        elif part.strip() in PROTOCOLS:
            d["proto"] = part.strip()
    return d


def next_packet(packet: Packet, final: dict[str, str], in_port: int,
                tunnel: tuple[int, str, str]) -> Packet:
    """The packet as the peer receives it: the source host's rewrites (routing's MACs,
    TTL) taken from its Final flow, re-validated, entering from the peer's tunnel port."""
    p = replace(packet, in_port=in_port, tunnel=tunnel)
    return replace(p, dl_src=final.get("dl_src", p.dl_src), dl_dst=final.get("dl_dst", p.dl_dst),
                   nw_src=final.get("nw_src", p.nw_src), nw_dst=final.get("nw_dst", p.nw_dst),
                   nw_ttl=int(final.get("nw_ttl", p.nw_ttl)))


def table_name(table: int) -> str:
    """A table's name as ``controller.pipeline.tables`` declares it."""
    if table in _TABLE_NAMES:
        return _TABLE_NAMES[table]
    return "operator" if table in OPERATOR_TABLES else f"table {table}"


def cookie_meaning(cookie: int, table: int, priority: int) -> str:
    """What a weft flow is for, from its cookie (feature space + low bits) and table."""
    feature = feature_of(cookie)
    low = cookie & ~COOKIE_FEATURE_MASK
    if feature is None:
        return "not a weft flow" if cookie else "no cookie (not weft's)"
    if feature == "acl":
        rule = acl_rule_of(cookie)
        if rule is not None:
            return f"ACL rule {rule}"
        if priority == PRIO_ACL_DENY_ALL:
            return "ACL: the tenant's default (deny)"
        if priority == PRIO_ACL_RULE_BASE:
            return "ACL: the tenant's default (allow)"
        return "ACL: conntrack (established, related, tracking)"
    if feature == "base":
        return f"table-miss of {table_name(table)}"
    if feature == "learned":
        return f"learned MAC (from port {low >> 24 & 0xFFFF}, network {low & 0xFFFFFF})"
    if feature == "operator":
        return f"operator flow {low}"
    if feature == "route":
        return f"route of tenant {low}" if low else "routing (shared)"
    return {"isolation": "isolation: port/tunnel -> network, flood group",
            "endpoint": "a bound endpoint's MAC", "vlan": "VLAN trunk/tag check",
            "qos": "QoS (rate limit, per-flow rule)", "portsec": "port security",
            "gateway": "distributed gateway", "egress": "egress (NAT) gateway port",
            "stamp": "store-epoch stamp"}.get(feature, feature)


def drop_cause(step: Step | None, tenant_of_rule: dict[int, str] | None = None) -> dict[str, Any]:
    """Why a packet whose last flow was ``step`` went nowhere, in weft's terms.

    Returns {"cause": short name, "detail": sentence, (rule/operator_flow)}."""
    if step is None:
        return {"cause": "unknown", "detail": "the trace matched no flow"}
    feature = feature_of(step.cookie)
    name = table_name(step.table)
    where = f"table {step.table} ({name}), priority {step.priority}"
    if feature == "portsec" or (feature == "isolation" and step.priority == PRIO_PIN_DROP):
        return {"cause": "port security", "detail": "the port may send only from its own "
                f"MAC and addresses: {where}"}
    if feature == "acl":
        rule = acl_rule_of(step.cookie)
        if rule is not None:
            owner = (tenant_of_rule or {}).get(rule)
            return {"cause": "acl", "rule": rule, "tenant": owner,
                    "detail": f"ACL rule {rule}" + (f" of tenant {owner}" if owner else "")
                    + f" drops it: {where}"}
        if step.priority == PRIO_ACL_DENY_ALL:
            return {"cause": "acl", "rule": None, "detail": f"the tenant's ACL default "
                    f"(deny), no rule allows it: {where}"}
        return {"cause": "acl", "rule": None, "detail": f"ACL conntrack (invalid): {where}"}
    if feature == "operator":
        return {"cause": "operator flow", "operator_flow": step.cookie & ~COOKIE_FEATURE_MASK,
                "detail": f"operator flow {step.cookie & ~COOKIE_FEATURE_MASK}: {where}"}
    if feature == "vlan":
        return {"cause": "vlan", "detail": f"a VLAN tag not allowed here: {where}"}
    if feature == "gateway" or (feature == "route" and step.priority == PRIO_GW_IP_DROP):
        return {"cause": "gateway", "detail": f"the distributed gateway drops it: {where}"}
    if step.table == FIB or (step.table == GATEWAY and feature == "base"):
        return {"cause": "no route", "detail": f"no route to the destination: {where}"}
    if feature == "route":
        return {"cause": "route", "detail": f"routing drops it (TTL or no next hop): {where}"}
    if feature == "egress":
        return {"cause": "egress", "detail": f"egress/NAT drops it: {where}"}
    if step.table == CLASSIFY:
        return {"cause": "isolation", "detail": f"the port or tunnel id belongs to no "
                f"network here: {where}"}
    if step.table == FLOOD:
        return {"cause": "isolation", "detail": f"unknown destination, flooded to nobody: "
                f"{where}"}
    return {"cause": "isolation" if feature in ("isolation", "base") else (feature or "unknown"),
            "detail": f"dropped in {where} ({cookie_meaning(step.cookie, step.table, step.priority)})"}


# --- the multi-hop walk ---------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    """A bound port as the trace needs it: where it is and what it may send."""

    host: str
    port: str
    network: str            # the segment (a network, or a tenant's own)
    tenant: str             # its routing domain
    mac: str | None
    ips: tuple[str, ...]

    def label(self) -> str:
        return f"{self.host}/{self.port} ({self.network}" + (
            f", {self.ips[0]})" if self.ips else ")")


@dataclass(frozen=True)
class HostView:
    """One host as the walk needs it: its switch's ports, its tunnels, its agent."""

    name: str
    underlay_ip: str
    ports: dict[str, int]           # port name -> ofport (the switch's port-desc)
    tunnels: dict[str, str]         # tunnel port name -> peer host
    uplink: str | None = None


Ask = Any       # Callable[[str, Packet], str]: run ofproto/trace on a host, return its text
MAX_HOPS = 8


def walk(src_host: str, packet: Packet, hosts: dict[str, HostView],
         bindings: dict[tuple[str, str], Endpoint], ask: Ask,
         tenant_of_rule: dict[int, str] | None = None) -> list[dict[str, Any]]:
    """Follow ``packet`` from ``src_host`` through every tunnel it leaves by.

    Returns one dict per host visited: its steps, what each output reached (a bound
    port, a tunnel to a peer, the egress port, the docker0 link) and, when it went
    nowhere, the drop and its cause.  Each host is traced once per walk (a flood reaches
    each peer once; split horizon keeps frames from tunnels off other tunnels)."""
    hops: list[dict[str, Any]] = []
    queue: list[tuple[str, Packet, str | None]] = [(src_host, packet, None)]
    seen: set[str] = set()
    while queue and len(hops) < MAX_HOPS:
        host, pkt, via = queue.pop(0)
        if host in seen:
            continue
        seen.add(host)
        view = hosts.get(host)
        hop: dict[str, Any] = {"host": host, "via": via, "flow": pkt.flow(), "steps": [],
                               "reached": []}
        hops.append(hop)
        if view is None:
            hop["error"] = f"host {host} is not connected or has no agent listener"
            continue
        try:
            text = ask(host, pkt)
        except Exception as exc:            # the agent is away: say so in the trace
            hop["error"] = f"{type(exc).__name__}: {exc}"[:300]
            continue
        parsed = parse(text)
        hop["steps"] = [s.as_dict() for s in parsed.steps]
        # rate limits the packet passes: ofproto/trace does not run meters, so a limit
        # never drops a traced packet; the trace names it (meter id = the limit's id)
        hop["meters"] = sorted({int(m[1]) for s in parsed.steps for a in s.actions
                                if (m := _METER_RE.match(a))})
        hop["datapath_actions"] = parsed.datapath_actions
        names = {v: k for k, v in view.ports.items()}
        for out in parsed.outputs:
            if out == "in_port":
                hop["reached"].append({"kind": "answered", "port": "IN_PORT"})
                continue
            assert isinstance(out, int)
            name = names.get(out, f"ofport {out}")
            if name in view.tunnels:
                peer = view.tunnels[name]
                hop["reached"].append({"kind": "tunnel", "port": name, "peer": peer})
                pv = hosts.get(peer)
                back = next((n for n, h in (pv.tunnels.items() if pv else ()) if h == host),
                            None)
                if pv is None or back is None or back not in pv.ports:
                    queue.append((peer, pkt, name))     # recorded as an error there
                    continue
                tun_id = parsed.tun_ids.get(out, int(parsed.final.get("tun_id", "0"), 0))
                nxt = next_packet(pkt, parsed.final, pv.ports[back],
                                  (tun_id, view.underlay_ip, pv.underlay_ip))
                queue.append((peer, nxt, name))
            elif name.startswith("wx-"):
                hop["reached"].append({"kind": "egress", "port": name})
            elif name == "weft-d0":
                hop["reached"].append({"kind": "docker0", "port": name})
            elif view.uplink and name == view.uplink:
                hop["reached"].append({"kind": "uplink", "port": name})
            else:
                b = bindings.get((host, name))
                hop["reached"].append({"kind": "port", "port": name,
                                       "binding": b.label() if b else None,
                                       "network": b.network if b else None,
                                       "ips": list(b.ips) if b else []})
        if not parsed.outputs:
            last = parsed.steps[-1] if parsed.steps else None
            hop["dropped"] = {**drop_cause(last, tenant_of_rule),
                              "step": last.as_dict() if last else None}
    return hops


def verdict(hops: list[dict[str, Any]], src: Endpoint, dst_ip: str,
            dst: Endpoint | None) -> dict[str, Any]:
    """The trace's answer: delivered (to whom), left the cluster, or dropped and why.

    Delivered means a port bound in the source's tenant with the destination address got
    the packet.  ``dst``: the binding that holds ``dst_ip`` anywhere (another tenant's
    address says isolation; none says no binding)."""
    reached = [(h["host"], r) for h in hops for r in h["reached"]]
    for host, r in reached:
        if r["kind"] == "port" and dst_ip in r["ips"] and r["binding"]:
            return {"result": "delivered", "cause": "delivered",
                    "detail": f"delivered to {r['binding']} on {host}", "host": host,
                    "port": r["port"]}
    for host, r in reached:
        if r["kind"] == "egress":
            return {"result": "egress", "cause": "egress",
                    "detail": f"leaves the cluster by {r['port']} on {host} (egress, NAT to "
                              f"the host's address)", "host": host, "port": r["port"]}
    for host, r in reached:
        if r["kind"] == "answered":
            return {"result": "answered", "cause": "gateway",
                    "detail": f"answered by the distributed gateway on {host}", "host": host}
    errors = [h for h in hops if h.get("error")]
    if errors:
        return {"result": "unknown", "cause": "not traced",
                "detail": f"{errors[0]['host']}: {errors[0]['error']}"}
    # a drop decided by a flow (port security, an ACL, routing, an operator flow) is the
    # answer; a flood that reached nobody (or only other ports) is about the destination
    drops = [h for h in hops if "dropped" in h and (h["dropped"].get("step") or {}).get(
        "table") != FLOOD]
    if drops:
        d = drops[-1]["dropped"]
        if dst is None and d["cause"] in ("no route", "route"):
            return {"result": "dropped", "cause": "no binding", "host": drops[-1]["host"],
                    "detail": f"no port of tenant {src.tenant} holds {dst_ip}; an unbound "
                              f"address is never routed ({d['detail']})"}
        return {"result": "dropped", "cause": d["cause"], "detail": d["detail"],
                "host": drops[-1]["host"], **{k: d[k] for k in ("rule", "tenant",
                                                                "operator_flow") if k in d}}
    if dst is None:
        return {"result": "dropped", "cause": "no binding",
                "detail": f"no port of tenant {src.tenant} holds {dst_ip}: unknown "
                          "destination (an ARP for it is flooded and unanswered)"}
    if dst.tenant != src.tenant:
        return {"result": "dropped", "cause": "isolation",
                "detail": f"{dst_ip} is {dst.label()} in tenant {dst.tenant}; "
                          f"{src.label()} is in tenant {src.tenant}: tenants never reach "
                          "each other"}
    return {"result": "dropped", "cause": "isolation",
            "detail": f"no flow delivers it to {dst.label()}"}


def render(res: dict[str, Any]) -> str:
    """A trace for people: host by host, table by table, then the verdict line."""
    p = res["packet"]
    l4 = f" port {p['dst_port']}" if p.get("dst_port") else ""
    lines = [f"trace {res['src']} -> {res['dst']} {p['proto']}{l4} (tenant {res['tenant']})"]
    for hop in res["hops"]:
        via = f" (from tunnel {hop['via']})" if hop.get("via") else ""
        lines.append(f"host {hop['host']}{via}: {hop['flow']}")
        if hop.get("error"):
            lines.append(f"  not traced: {hop['error']}")
        for s in hop["steps"]:
            lines.append(f"  {s['table']:>3} {s['table_name']:<9} prio {s['priority']:<5} "
                         f"{s['meaning']}  [{s['match'] or '*'}] cookie {s['cookie']}")
            acts = [a for a in s["actions"] if not a.startswith("learn")]
            if acts:
                lines.append(f"{'':17}-> {', '.join(acts)[:150]}")
        for r in hop["reached"]:
            what = {"tunnel": f"tunnel {r['port']} to {r.get('peer')}",
                    "port": f"port {r['port']}" + (f" = {r['binding']}" if r.get("binding")
                                                    else " (unbound)"),
                    "egress": f"egress port {r['port']} (NAT)",
                    "docker0": "the docker0 link", "uplink": f"uplink {r['port']}",
                    "answered": "back out of the port it came in (answered)"}[r["kind"]]
            lines.append(f"  out: {what}")
        for m in hop.get("meters", []):
            limit = res.get("meters", {}).get(str(m), f"meter {m}")
            lines.append(f"  rate limit: {limit} (a meter: the trace does not apply it)")
        if "dropped" in hop:
            lines.append(f"  dropped: {hop['dropped']['detail']}")
    v = res["verdict"]
    lines.append(f"verdict: {v['result'].upper()} ({v['cause']}): {v['detail']}")
    return "\n".join(lines)
