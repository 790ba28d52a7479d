"""POST /v1/trace: the path a packet takes, traced on the switches themselves.

The source port's binding (host, port, MAC, address, network) comes from the store; the
packet is traced with OVS's ``ofproto/trace`` by the agent of each host it reaches
(``agent_api`` in hosts.yaml, the same bearer token), hop by hop over the tunnels it
leaves by; ``controller.trace`` parses each answer and names the verdict.
"""
from __future__ import annotations

import ipaddress
import time
from typing import Any

from fastapi import APIRouter, Request

from cluster.hostsfile import tunnel_port_name
from controller.core import Core
from controller.model import ACCESS, gateway_mac
from controller.rest.deps import CoreDep
from controller.rest.schemas import TraceIn
from controller.store import Invalid, NotFound
from controller.trace import Endpoint, HostView, Packet, verdict, walk

router = APIRouter()
AGENT_TIMEOUT = 15.0
BROADCAST = "ff:ff:ff:ff:ff:ff"


def endpoints(core: Core) -> dict[tuple[str, str], Endpoint]:
    """Every access port bound to one network, with its network's tenant."""
    nets = {n.name: n for n in core.store.networks()}
    out = {}
    for sb in core.store.bindings():
        b = sb.binding
        if b.mode != ACCESS or not b.tenant or b.tenant not in nets:
            continue
        out[b.host, b.port] = Endpoint(b.host, b.port, b.tenant, nets[b.tenant].tenant, b.mac,
                                       tuple(ip.split("/")[0] for ip in b.ips))
    return out


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
        return True
    except ValueError:
        return False


def resolve(core: Core, eps: dict[tuple[str, str], Endpoint], key: str, field: str,
            tenant: str | None) -> Endpoint | None:
    """HOST/PORT, an address (one binding, or one in ``tenant``), or a container name."""
    def in_tenant(e: Endpoint) -> bool:
        return tenant is None or tenant in (e.network, e.tenant)
    if "/" in key:
        host, _, port = key.partition("/")
        return eps.get((host, port))
    ip = key
    if not _is_ipv4(key):
        records = [r for rs in core.store.container_names().values() for r in rs
                   if key in (r.name, r.container)]
        if not records:
            return None
        ip = records[0].ip
        tenant = tenant or records[0].network
    found = [e for e in eps.values() if ip in e.ips and in_tenant(e)]
    if len(found) > 1:
        raise Invalid(field, f"{key} is bound in {', '.join(sorted({e.network for e in found}))}"
                             ": name the tenant (or network)")
    return found[0] if found else None


def _host_views(core: Core) -> dict[str, HostView]:
    cluster = core.cluster
    views = {}
    for h in cluster.hosts:
        sw = core.switch_by_name(h.name)
        if not h.agent_api or sw is None or not sw.connected:
            continue
        tunnels = {} if cluster.transport != "tunnel" else {
            tunnel_port_name(cluster.link_type(h.name, p.name), p.name): p.name
            for p in cluster.peers(h.name)}
        views[h.name] = HostView(h.name, h.underlay_ip, dict(sw.ports), tunnels, h.uplink)
    return views


def _asker(core: Core, token: str | None) -> Any:
    import httpx
    apis = {h.name: h.agent_api for h in core.cluster.hosts}
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def ask(host: str, packet: Packet) -> str:
        r = httpx.post(f"{apis[host]}/v1/trace", json=packet.as_dict(), headers=headers,
                       timeout=AGENT_TIMEOUT)
        if r.status_code != 200:
            raise RuntimeError(f"agent of {host}: {r.status_code} {r.text[:200]}")
        return str(r.json()["output"])
    return ask


def trace(core: Core, body: TraceIn, ask: Any) -> dict[str, Any]:
    """The trace of ``body`` (the REST handler without the HTTP: tests give ``ask``)."""
    if body.port is not None and body.proto == "icmp":
        raise Invalid("port", "a destination port needs proto tcp or udp")
    if body.src_ip is not None and not _is_ipv4(body.src_ip):
        raise Invalid("src_ip", f"{body.src_ip!r} is not an IPv4 address")
    eps = endpoints(core)
    src = resolve(core, eps, body.src, "src", body.tenant)
    if src is None:
        raise NotFound("src", f"no bound port {body.src!r} (HOST/PORT, address or container)")
    if not src.mac:
        raise Invalid("src", f"{src.label()} is bound without a MAC (port security off): "
                             "its frames cannot be traced by binding")
    if _is_ipv4(body.dst):
        dst_ip = body.dst
    else:
        named = resolve(core, eps, body.dst, "dst", body.tenant)
        if named is None or not named.ips:
            raise NotFound("dst", f"no bound port {body.dst!r} with an address")
        dst_ip = named.ips[0]
    src_ip = body.src_ip or (src.ips[0] if src.ips else None)
    if src_ip is None:
        raise Invalid("src_ip", f"{src.label()} has no address: give src_ip")
    holders = [e for e in eps.values() if dst_ip in e.ips]
    dst = next((e for e in holders if e.network == src.network), None) or \
        next((e for e in holders if e.tenant == src.tenant), None) or \
        (holders[0] if holders else None)
    net = core.store.network(src.network)
    in_subnet = net.subnet is not None and _is_ipv4(dst_ip) and \
        ipaddress.IPv4Address(dst_ip) in ipaddress.ip_network(net.subnet)
    if dst is not None and dst.network == src.network and dst.mac:
        dl_dst = dst.mac
    elif net.gateway and not in_subnet:
        dl_dst = gateway_mac(net.vni)            # routed: the frame goes to the gateway
    elif dst is not None and dst.mac:
        dl_dst = dst.mac
    else:
        dl_dst = BROADCAST                       # what an unanswered ARP does: flood
    views = _host_views(core)
    sw_ports = views[src.host].ports if src.host in views else {}
    if src.host in views and src.port not in sw_ports:
        raise NotFound("src", f"{src.label()} is bound but not on {src.host}'s switch")
    packet = Packet(sw_ports.get(src.port, 1), src.mac, dl_dst, src_ip, dst_ip, body.proto,
                    body.port if body.proto != "icmp" else None)
    rules = {r.id: r.tenant for r in core.store.acls()}
    t0 = time.monotonic()
    hops = walk(src.host, packet, views, eps, ask, rules)
    meters = {str(x.id): f"QoS limit {x.id}: " + (f"{x.kbps} kbit/s" if x.kbps is not None
                                                  else f"{x.pps} packets/s")
              + f" on {x.host}" + (f"/{x.port}" if x.port else f" for {x.tenant}")
              for x in core.store.limits()
              if any(x.id in h.get("meters", ()) for h in hops)}
    return {"src": src.label(), "dst": dst_ip, "tenant": src.tenant, "packet": packet.as_dict(),
            "meters": meters,
            "hops": hops, "hosts": [h["host"] for h in hops],
            "tunnels": [r["port"] for h in hops for r in h["reached"] if r["kind"] == "tunnel"],
            "verdict": verdict(hops, src, dst_ip, dst),
            "seconds": round(time.monotonic() - t0, 4)}


@router.post("/v1/trace")
def trace_route(body: TraceIn, core: CoreDep, request: Request) -> dict:
    """Where a packet from ``src`` to ``dst`` goes: each host's tables (the flow that
    matched, its cookie's meaning), the tunnels crossed, and the verdict with its cause."""
    return trace(core, body, _asker(core, request.app.state.token))
