"""The distributed gateway: every host answers for every network's gateway itself.

Each network N with a ``gateway`` (an IPv4 address of its subnet) has an anycast
gateway MAC, ``gateway_mac(VNI(N))``, the same on every host; nothing is learned
or flooded about it.  Cookie COOKIE_GATEWAY; on hosts where N is present
(``SwitchContext.here``)::

    CLASSIFY 1000  eth_src=0a:77:66:*/0a:77:67:* (gateway, next-hop MACs)   -> drop
                   (any port: no one sends from a gateway MAC; once per host)
    CLASSIFY 1001  in_port=<tunnel to P>, tunnel_id=VNI(N), eth_src=GWMAC(N)
                   -> enter N (from a tunnel), no learning: P routed it into N
                   (per peer P with a gateway network of N's tenant)
    L2  210  N, arp, arp_spa=GW(N)                       -> drop (nobody claims the gateway)
    L2  205  N local sender, arp, arp_op=1, arp_tpa=GW(N) -> GATEWAY (never flooded)
    L2  200  N local sender, eth_dst=GWMAC(N)             -> GATEWAY
    L2  195  N, arp, arp_op=1, arp_tpa=GW(N)              -> drop (from a tunnel or uplink:
    L2  190  N, eth_dst=GWMAC(N)                          -> drop  routing is at the source)
    GATEWAY 200  N, arp, arp_op=1, arp_tpa=GW(N)   -> ARP reply in place, out IN_PORT
    GATEWAY 200  N, icmp echo request, ipv4_dst=GW(M) (each gateway M of the tenant)
                                                   -> echo reply in place, out IN_PORT
    GATEWAY 300  the same two with in_port=P, for a trunk P carrying N tagged
                                                   -> the same, tagged again
    GATEWAY 150  domain=T, ip, ipv4_dst=GW(M) (each gateway M of T)  -> drop: the
                 gateway answers ping, nothing else, and never leads to the host
    GATEWAY 20   N, ipv6, for a dual-stack N with a gateway but no ``gateway6`` -> drop
                 (it routes IPv4 only: IPv6 neither leaves it nor, without /128 rows,
                 comes back)
    GATEWAY 10   ip, ipv6                          -> FIB (``controller.pipeline.route``)

IPv6: a dual-stack network with a gateway has ``gateway6`` (stored since schema 12: by
default its IPv6 subnet's first address, or any address of it, or none) on the same
MAC: NS for it are ARP requests (L2 205/195; GATEWAY 200/300 turn
them into an NA: router, solicited, override, then ``resubmit(,GATEWAY)``, where GATEWAY
200 ``N local sender, eth_src=GWMAC(N), NA for gateway6`` sets the gateway MAC as target
link-layer address and sends it out IN_PORT), an NA claiming it is an ARP claim (L2
210), ping6 to a gateway is answered and nothing else reaches it (GATEWAY 150), IPv6
goes on to FIB.

A frame to another tenant's gateway MAC finds none of these in its own network
(they match the network) and floods there like any unknown MAC.
"""
from __future__ import annotations

from controller.flows import COOKIE_GATEWAY, Flow, flow
from controller.model import IPPROTO_ICMPV6, Tenant, gateway_mac
from controller.pipeline.base import (
    ETH_TYPE_ARP, ETH_TYPE_IPV4, ETH_TYPE_IPV6, ETH_TYPE_VLAN, OFPVID_PRESENT, Feature, Part,
    SwitchContext,
)
from controller.pipeline.classify import enter_tenant
from controller.pipeline.tables import (
    CLASSIFY, FIB, GATEWAY, L2, PRIO_DROP_GATEWAY_SRC, PRIO_GATEWAY_ARP, PRIO_GATEWAY_ARP_REMOTE,
    PRIO_GATEWAY_GUARD, PRIO_GW_ANSWER, PRIO_GW_FORWARD, PRIO_GW_IP_DROP, PRIO_GW_NO_IPV6,
    PRIO_GW_TRUNK,
    PRIO_ROUTED_FROM_TUNNEL, PRIO_TO_GATEWAY, PRIO_TO_GATEWAY_REMOTE, domain_match,
    local_sender_match, network_match,
)

__all__ = ["FEATURE", "RESERVED_SOURCE", "OFPP_IN_PORT", "gateway_networks"]

OFPP_IN_PORT = 0xFFFFFFF8
# gateway MACs (0a:77:66:*) and the kernel's next hop (0a:77:67:*) under one mask; the
# gateway port's own MAC (0a:77:68:*) is what wx-<id> sends from (``egress``)
RESERVED_SOURCE = ("0a:77:66:00:00:00", "ff:ff:fe:00:00:00")
ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0
ARP_REQUEST, ARP_REPLY = 1, 2
ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY = 128, 129
ICMPV6_NS, ICMPV6_NA = 135, 136
ND_FLAGS_ROUTER_SOLICITED_OVERRIDE = 0xE0000000     # an NA's R, S, O bits (nd_reserved)
ND_OPT_TARGET_LLADDR = 2


def gateway_networks(sw: SwitchContext) -> list[Tenant]:
    """The networks with a gateway present on this host, by name."""
    return [n for n in (sw.topo.tenant(name) for name in sorted(sw.here)) if n.gateway]


def _arp_request(gw: str) -> dict:
    return {"eth_type": ETH_TYPE_ARP, "arp_op": ARP_REQUEST, "arp_tpa": gw}


def _echo_request(gw: str) -> dict:
    return {"eth_type": ETH_TYPE_IPV4, "ip_proto": 1, "icmpv4_type": ICMP_ECHO_REQUEST,
            "ipv4_dst": gw}


def _nd(icmpv6_type: int, target: str) -> dict:
    """An NS or NA about ``target`` (OVS: nd_target needs the type and code 0 matched)."""
    return {"eth_type": ETH_TYPE_IPV6, "ip_proto": IPPROTO_ICMPV6, "icmpv6_type": icmpv6_type,
            "icmpv6_code": 0, "ipv6_nd_target": target}


def _echo6_request(gw: str) -> dict:
    return {"eth_type": ETH_TYPE_IPV6, "ip_proto": IPPROTO_ICMPV6,
            "icmpv6_type": ICMPV6_ECHO_REQUEST, "ipv6_dst": gw}


def _na_reply(mac: str, gw: str) -> tuple[tuple, ...]:
    """The solicitation turned into the gateway's advertisement (router, solicited,
    override; hop limit 255 kept; OVS fixes the checksum).  The NS's source link-layer
    option becomes the NA's target link-layer option, with the gateway MAC: OVS checks a
    set_field's prerequisites against the match, so this flow (an NS) sets the option as
    ``nd_sll`` and its type, and ``_na_tail`` (matching the NA the frame now is, after a
    resubmit) sets it as ``nd_tll`` too.  Whichever of the two the datapath applies (OVS
    writes the option by its type, before or after changing the type), it is the
    gateway MAC."""
    return (("move", "eth_src", "eth_dst"), ("set_field", "eth_src", mac),
            ("move", "ipv6_src", "ipv6_dst"), ("set_field", "ipv6_src", gw),
            ("set_field", "ipv6_nd_sll", mac), ("set_field", "icmpv6_type", ICMPV6_NA),
            ("set_field", "nd_reserved", ND_FLAGS_ROUTER_SOLICITED_OVERRIDE),
            ("set_field", "nd_options_type", ND_OPT_TARGET_LLADDR))


def _na_tail(n: Tenant) -> Flow:
    """GATEWAY: the NA ``_na_reply`` made (its source is the gateway MAC, which no port
    can send from: CLASSIFY drops it) gets the gateway MAC as target link-layer address
    and goes out the port the NS came in by."""
    mac, gw6 = gateway_mac(n.vni), n.gateway6
    assert gw6 is not None
    return flow(GATEWAY, PRIO_GW_ANSWER,
                {**local_sender_match(n.vni), "eth_src": mac, **_nd(ICMPV6_NA, gw6)},
                [("apply", (("set_field", "ipv6_nd_tll", mac), ("output", OFPP_IN_PORT)))],
                COOKIE_GATEWAY)


def _echo6_reply(mac: str, gw: str) -> tuple[tuple, ...]:
    return (("move", "eth_src", "eth_dst"), ("set_field", "eth_src", mac),
            ("move", "ipv6_src", "ipv6_dst"), ("set_field", "ipv6_src", gw),
            ("set_field", "icmpv6_type", ICMPV6_ECHO_REPLY))


def _arp_reply(mac: str, gw: str) -> tuple[tuple, ...]:
    """The request turned into the gateway's reply (Antrea's ARP responder idea)."""
    return (("move", "eth_src", "eth_dst"), ("set_field", "eth_src", mac),
            ("set_field", "arp_op", ARP_REPLY), ("move", "arp_sha", "arp_tha"),
            ("set_field", "arp_sha", mac), ("move", "arp_spa", "arp_tpa"),
            ("set_field", "arp_spa", gw))


def _echo_reply(mac: str, gw: str) -> tuple[tuple, ...]:
    """The echo request turned into the gateway's echo reply (OVS fixes the checksums)."""
    return (("move", "eth_src", "eth_dst"), ("set_field", "eth_src", mac),
            ("move", "ipv4_src", "ipv4_dst"), ("set_field", "ipv4_src", gw),
            ("set_field", "icmpv4_type", ICMP_ECHO_REPLY))


def _answers(sw: SwitchContext, n: Tenant, gateways: list[str]) -> list[Flow]:
    """GATEWAY: ARP (NS) for N's gateway (IPv6 gateway) and pings to the tenant's
    gateways of either family, answered out the port they came in by (tagged again on a
    trunk carrying N tagged)."""
    mac, gw = gateway_mac(n.vni), n.gateway
    assert gw is not None
    sender = local_sender_match(n.vni)
    out = ("output", OFPP_IN_PORT)
    answers = [({**sender, **_arp_request(gw)}, _arp_reply(mac, gw), out)]
    if n.gateway6 is not None:      # the NA goes out by _na_tail
        answers.append(({**sender, **_nd(ICMPV6_NS, n.gateway6)}, _na_reply(mac, n.gateway6),
                        ("resubmit", GATEWAY)))
    answers += [({**sender, **_echo6_request(g)}, _echo6_reply(mac, g), out) if ":" in g
                else ({**sender, **_echo_request(g)}, _echo_reply(mac, g), out)
                for g in gateways]
    trunks = [m for m in sw.members if m.tenant == n.name and m.vlan is not None]
    flows = [_na_tail(n)] if n.gateway6 is not None else []
    for match, actions, last in answers:
        flows.append(flow(GATEWAY, PRIO_GW_ANSWER, match, [("apply", (*actions, last))],
                          COOKIE_GATEWAY))
        for m in trunks:
            assert m.vlan is not None
            tag = (("push_vlan", ETH_TYPE_VLAN), ("set_field", "vlan_vid", OFPVID_PRESENT | m.vlan))
            flows.append(flow(GATEWAY, PRIO_GW_TRUNK, {**match, "in_port": m.ofport},
                              [("apply", (*actions, *tag, last))], COOKIE_GATEWAY))
    return flows


def _l2(n: Tenant) -> list[Flow]:
    """L2: a local port's frames for N's gateway go to GATEWAY, anyone else's drop."""
    mac, gw = gateway_mac(n.vni), n.gateway
    assert gw is not None
    sender, any_ = local_sender_match(n.vni), network_match(n.vni)
    to_gateway = [("goto", GATEWAY)]
    out = [
        flow(L2, PRIO_GATEWAY_GUARD, {**any_, "eth_type": ETH_TYPE_ARP, "arp_spa": gw}, (),
             COOKIE_GATEWAY),
        flow(L2, PRIO_GATEWAY_ARP, {**sender, **_arp_request(gw)}, to_gateway, COOKIE_GATEWAY),
        flow(L2, PRIO_TO_GATEWAY, {**sender, "eth_dst": mac}, to_gateway, COOKIE_GATEWAY),
        flow(L2, PRIO_GATEWAY_ARP_REMOTE, {**any_, **_arp_request(gw)}, (), COOKIE_GATEWAY),
        flow(L2, PRIO_TO_GATEWAY_REMOTE, {**any_, "eth_dst": mac}, (), COOKIE_GATEWAY),
    ]
    if n.gateway6 is not None:          # the same for IPv6: NS as ARP requests, NA as claims
        gw6 = n.gateway6
        out += [flow(L2, PRIO_GATEWAY_GUARD, {**any_, **_nd(ICMPV6_NA, gw6)}, (),
                     COOKIE_GATEWAY),
                flow(L2, PRIO_GATEWAY_ARP, {**sender, **_nd(ICMPV6_NS, gw6)}, to_gateway,
                     COOKIE_GATEWAY),
                flow(L2, PRIO_GATEWAY_ARP_REMOTE, {**any_, **_nd(ICMPV6_NS, gw6)}, (),
                     COOKIE_GATEWAY)]
    return out


def _from_peers(sw: SwitchContext, n: Tenant, domain: int,
                peers: dict[str, set[str]]) -> list[Flow]:
    """CLASSIFY: frames a peer routed into N (source: N's gateway MAC), not learned;
    ``peers``: peer -> the tenants it routes for (``_routing_domains``)."""
    out = []
    for peer in sorted(sw.peer_ofport):
        if n.tenant not in peers[peer]:
            continue
        out.append(flow(CLASSIFY, PRIO_ROUTED_FROM_TUNNEL,
                        {"in_port": sw.peer_ofport[peer], "tunnel_id": n.vni,
                         "eth_src": gateway_mac(n.vni)},
                        enter_tenant(n.vni, from_tunnel=True, domain=domain), COOKIE_GATEWAY))
    return out


def _routing_domains(sw: SwitchContext, host: str) -> set[str]:
    """Tenants with a gateway network present on ``host``: those it may route from."""
    topo = sw.topo
    return {topo.tenant(name).tenant for name in topo.tenants_on(host)
            if topo.tenant(name).gateway}


def _contribute(sw: SwitchContext) -> Part:
    networks = gateway_networks(sw)
    if not networks:
        return Part()
    topo = sw.topo
    flows = [flow(CLASSIFY, PRIO_DROP_GATEWAY_SRC, {"eth_src": RESERVED_SOURCE}, (),
                  COOKIE_GATEWAY),
             *(flow(GATEWAY, PRIO_GW_FORWARD, {"eth_type": eth_type}, [("goto", FIB)],
                    COOKIE_GATEWAY) for eth_type in (ETH_TYPE_IPV4, ETH_TYPE_IPV6))]
    domains = sorted({n.tenant for n in networks})
    gateways = {t: sorted({g for m in topo.networks_of(t) for g in (m.gateway, m.gateway6)
                           if g is not None}) for t in domains}
    for t in domains:
        tid = topo.tenant(t).vni
        flows.extend(flow(GATEWAY, PRIO_GW_IP_DROP,
                          {**domain_match(tid), **({"eth_type": ETH_TYPE_IPV6, "ipv6_dst": g}
                                                   if ":" in g else
                                                   {"eth_type": ETH_TYPE_IPV4, "ipv4_dst": g})},
                          (), COOKIE_GATEWAY) for g in gateways[t])
    peers = {peer: _routing_domains(sw, peer) for peer in sw.peer_ofport}
    flows.extend(flow(GATEWAY, PRIO_GW_NO_IPV6, {**network_match(n.vni),
                                                 "eth_type": ETH_TYPE_IPV6}, (), COOKIE_GATEWAY)
                 for n in networks if n.subnet6 is not None and n.gateway6 is None)
    for n in networks:
        flows.extend(_l2(n))
        flows.extend(_answers(sw, n, gateways[n.tenant]))
        flows.extend(_from_peers(sw, n, topo.tenant(n.tenant).vni, peers))
    return Part(flows=flows)


FEATURE = Feature("gateway", _contribute)
