"""Routing never crosses tenants, and routes where it should: properties over random clusters.

Two tenants with the same subnets (``tests.unit.topologies.routing_labs``: network j is
10.0.j.0/24 in both, gateways, egress, VLAN trunks, static routes, gateway ports
``wx-<id>``) run through the fake switches (``tests.fakeoftable``, which runs
``dec_ttl``, ``move`` and ``resubmit``).  From every port, frames to every gateway MAC
and IP of either tenant, to every bound address, to the outside, ARP for and claiming
every gateway, spoofing gateway MACs: nothing reaches a port (or gateway port) of the
other tenant, and a network without a gateway reaches nothing outside itself.  A routed
packet reaches exactly the destination's port, once, with TTL - 1, the destination
network's gateway MAC as source and the destination's MAC; with TTL 1 nothing; to the
outside: the source host's gateway port of its own tenant when its network has egress.
"""
from __future__ import annotations

from hypothesis import given, settings

from controller.model import (
    Binding, Tenant, gateway_mac, gateway_port, gateway_port_mac, next_hop_mac,
)
from tests.unit.topologies import OUTSIDE, UNKNOWN, Lab, routing_labs

BCAST = "ff:ff:ff:ff:ff:ff"
TENANT_IDS = {"red": 1000, "blue": 2000}


def ip(src_mac: str, dst_mac: str, src: str, dst: str, ttl: int = 64, proto: int = 6) -> dict:
    pkt = {"eth_src": src_mac, "eth_dst": dst_mac, "eth_type": 0x0800, "ipv4_src": src,
           "ipv4_dst": dst, "ip_proto": proto, "ip_ttl": ttl}
    if proto == 1:
        return {**pkt, "icmpv4_type": 8, "icmpv4_code": 0}
    return {**pkt, "tcp_src": 40000, "tcp_dst": 80}


def arp(src_mac: str, spa: str, tpa: str, op: int = 1) -> dict:
    return {"eth_src": src_mac, "eth_dst": BCAST, "eth_type": 0x0806, "arp_op": op,
            "arp_sha": src_mac, "arp_spa": spa, "arp_tha": "00:00:00:00:00:00", "arp_tpa": tpa}


def gateways(lab: Lab) -> list[Tenant]:
    return [n for n in lab.topo.all_tenants if n.gateway]


def domain_ports(lab: Lab, tenant: str) -> set[tuple[str, str, int | None]]:
    """Every place a frame of ``tenant`` may go: its networks' ports (with their tags) and
    its gateway ports."""
    out = {d for n in lab.topo.networks_of(tenant) for d in lab.carriers(n.name)}
    wx = gateway_port(TENANT_IDS[tenant])
    return out | {(h, wx, None) for h in lab.topo.hosts if wx in lab.ports[h]}


def own_address(lab: Lab, host: str, port: str) -> str:
    b = _binding(lab, host, port)
    return b.ips[0] if b is not None and b.ips else "10.0.0.77"


def _binding(lab: Lab, host: str, port: str) -> Binding | None:
    return next((b for b in lab.topo.bindings_on(host) if b.port == port), None)


def senders(lab: Lab) -> list[tuple[str, str, int | None, str | None]]:
    """(host, port, VLAN or None, network or None): every live port but tunnels and
    gateway ports, untagged, and tagged with each VLAN its trunk carries."""
    out = []
    for host, port, vlan, network in lab.senders():
        b = _binding(lab, host, port)
        if port.startswith("wx-") or (vlan is not None and (b is None or not b.trunk)):
            continue
        out.append((host, port, vlan, network))
    return out


def addresses(lab: Lab) -> list[str]:
    bound = {ip for b in lab.topo.bindings for ip in b.ips}
    return sorted(bound | {n.gateway for n in gateways(lab) if n.gateway}
                  | {OUTSIDE, "192.168.0.5", "192.168.1.5", "192.168.2.5"})


@settings(max_examples=100, deadline=None)
@given(routing_labs())
def test_no_frame_crosses_tenants_through_the_gateway(lab):
    cluster = lab.cluster()
    macs = [gateway_mac(n.vni) for n in gateways(lab)] + [BCAST]
    dsts = addresses(lab)
    gw_ips = sorted({n.gateway for n in gateways(lab) if n.gateway})
    for host, port, vlan, network in senders(lab):
        # the gateway answers out the port a frame came in by; nothing else goes back there
        net = None if network is None else lab.topo.tenant(network)
        allowed = set() if net is None else domain_ports(lab, net.tenant) if net.gateway \
            else lab.carriers(net.name) - {(host, port, vlan)}
        routing_here = any(lab.topo.tenant(n).gateway for n in lab.topo.tenants_on(host))
        src_ip = own_address(lab, host, port)
        frames = []
        for src in {lab.src(host, port), UNKNOWN}:
            frames += [ip(src, mac, src_ip, dst, proto=proto)
                       for mac in macs for dst in dsts for proto in (6, 1)]
            frames += [arp(src, src_ip, g) for g in gw_ips]           # ARP for a gateway
            frames += [arp(src, g, g) for g in gw_ips]                # gratuitous: claims it
        for g in gateways(lab):                                       # sent from its MAC
            frames += [ip(gateway_mac(g.vni), mac, src_ip, dst)
                       for mac in macs for dst in dsts[:3]]
            frames.append(arp(gateway_mac(g.vni), g.gateway, g.gateway, op=2))
        for frame in frames:
            got = cluster.frames(host, port, frame, vlan=vlan)
            assert set(got) <= allowed, (host, port, vlan, network, frame, got)
            if frame["eth_src"].startswith("0a:77:66") and routing_here:
                assert got == [], (host, port, frame, got)
            if (frame["eth_type"] == 0x0806 and net is not None
                    and frame["arp_spa"] == net.gateway):
                assert got == [], (host, port, frame, got)        # nobody claims a gateway


@settings(max_examples=100, deadline=None)
@given(routing_labs())
def test_from_a_gateway_port_frames_stay_in_its_tenant(lab):
    cluster = lab.cluster()
    dsts = addresses(lab)
    for host in lab.topo.hosts:
        for tenant, tid in TENANT_IDS.items():
            wx = gateway_port(tid)
            if wx not in lab.ports[host]:
                continue
            allowed = domain_ports(lab, tenant) - {(host, wx, None)}
            for dst in dsts:
                for mac in (next_hop_mac(tid), next_hop_mac(3000 - tid), BCAST,
                            gateway_mac(tid)):
                    frame = ip(gateway_port_mac(tid), mac, OUTSIDE, dst)
                    got = cluster.frames(host, wx, frame)
                    assert set(got) <= allowed, (host, wx, frame, got)
                    if mac != next_hop_mac(tid):
                        assert got == [], (host, wx, frame, got)
            for g in gateways(lab):       # ARP from the host stack: never answered, never out
                assert cluster.frames(host, wx, arp(gateway_port_mac(tid), "169.254.77.1",
                                                    g.gateway)) == []


def _live(lab: Lab, b: Binding) -> bool:
    return b.port in lab.ports[b.host]


def _routable(lab: Lab) -> list[Binding]:
    """Live access bindings with an address in a network with a gateway."""
    return [b for b in lab.topo.bindings if b.ips and b.mac and _live(lab, b)
            and lab.topo.tenant(b.tenant).gateway]


def _egress_here(lab: Lab, host: str, tenant: str) -> bool:
    """The tenant has an egress network with a local port on ``host`` and its gateway
    port is on the switch: what makes egress and its replies flow there."""
    local = lab.topo.local_tenants(host)
    return gateway_port(TENANT_IDS[tenant]) in lab.ports[host] and any(
        n.egress and n.name in local for n in lab.topo.networks_of(tenant))


@settings(max_examples=100, deadline=None)
@given(routing_labs())
def test_routed_packets_reach_exactly_their_destination_once_with_ttl_minus_one(lab):
    cluster = lab.cluster()
    topo = lab.topo
    for s in _routable(lab):
        net = topo.tenant(s.tenant)
        src_mac, src_ip, gw = s.mac, s.ips[0], gateway_mac(net.vni)
        assert src_mac is not None
        for d in _routable(lab):
            dnet = topo.tenant(d.tenant)
            if dnet.tenant != net.tenant or d is s:
                continue
            sent = cluster.trace(s.host, s.port, ip(src_mac, gw, src_ip, d.ips[0]))[0]
            assert [(h, p) for h, p, _ in sent] == [(d.host, d.port)], (s, d, sent)
            frame = sent[0][2]
            assert (frame["eth_src"], frame["eth_dst"], frame["ip_ttl"], frame["ipv4_src"]) \
                == (gateway_mac(dnet.vni), d.mac, 63, src_ip)
            assert cluster.frames(s.host, s.port, ip(src_mac, gw, src_ip, d.ips[0], ttl=1)) == []
        # to the outside: out of its host's gateway port when its network has egress
        sent = cluster.trace(s.host, s.port, ip(src_mac, gw, src_ip, OUTSIDE))[0]
        wx = gateway_port(TENANT_IDS[net.tenant])
        if net.egress and _egress_here(lab, s.host, net.tenant):
            assert [(h, p) for h, p, _ in sent] == [(s.host, wx)]
            frame = sent[0][2]
            assert (frame["eth_src"], frame["eth_dst"], frame["ip_ttl"]) == (
                gw, gateway_port_mac(TENANT_IDS[net.tenant]), 63)
        else:
            assert sent == []


@settings(max_examples=100, deadline=None)
@given(routing_labs())
def test_static_routes_and_replies_from_the_gateway_port(lab):
    cluster = lab.cluster()
    topo = lab.topo
    for s in _routable(lab):
        net = topo.tenant(s.tenant)
        for r in (r for r in topo.routes if r.tenant == net.tenant):
            via = topo.network_of_address(r.tenant, r.via)
            assert via is not None
            holder = next((b for b in topo.bindings if b.tenant == via.name and r.via in b.ips),
                          None)
            dst = r.prefix.replace(".0/24", ".5")
            sent = cluster.trace(s.host, s.port, ip(s.mac, gateway_mac(net.vni), s.ips[0], dst))[0]
            for h, p, frame in sent:
                assert (h, p, None) in lab.carriers(via.name) or (
                    (h, p, frame.get("vlan_vid")) in lab.carriers(via.name))
                assert (frame["eth_src"], frame["eth_dst"], frame["ip_ttl"]) == (
                    gateway_mac(via.vni), holder.mac if holder else r.mac, 63)
            if holder is not None and _live(lab, holder) and holder is not s:
                assert [(h, p) for h, p, _ in sent] == [(holder.host, holder.port)]
    for host in topo.hosts:
        for tenant, tid in TENANT_IDS.items():
            wx = gateway_port(tid)
            if wx not in lab.ports[host]:
                continue
            for d in _routable(lab):
                dnet = topo.tenant(d.tenant)
                reply = ip(gateway_port_mac(tid), next_hop_mac(tid), OUTSIDE, d.ips[0])
                sent = cluster.trace(host, wx, reply)[0]
                if dnet.tenant == tenant and _egress_here(lab, host, tenant):
                    assert [(h, p) for h, p, _ in sent] == [(d.host, d.port)]
                    assert (sent[0][2]["eth_src"], sent[0][2]["eth_dst"]) == (
                        gateway_mac(dnet.vni), d.mac)
                elif dnet.tenant != tenant:
                    assert (d.host, d.port) not in {(h, p) for h, p, _ in sent}
