"""Port security: CLASSIFY lets a bound port send only from its addresses.

Cookie COOKIE_PORTSEC unless said; before any learning::

    priority 1000  eth_src multicast/broadcast (01:00:00:00:00:00/01:...)  -> drop
                   on every port: local, docker0 link, tunnels, trunks, uplinks
    bound access port P with a mac (Binding.source_addresses: mac -> IPs or any):
      100  in_port=P, untagged, eth_src=<mac>               -> the port's classify
                                                              (COOKIE_ISOLATION)
      110  in_port=P, eth_src=<mac>, arp                    -> drop
      120  in_port=P, untagged, eth_src=<mac>, arp, arp_sha=<mac>[, arp_spa=<ip>]
                                                            -> the port's classify
      with IPs for <mac>:
      110  in_port=P, eth_src=<mac>, ip / ipv6              -> drop
      120  in_port=P, untagged, eth_src=<mac>, ip, ipv4_src=<ip>  -> classify
      with IPv6 for <mac> (IPv6 addresses in its IPs, or the port's network dual-stack);
      V = its IPv6 addresses/CIDRs + LL, the MAC's EUI-64 link-local (fe80::/64):
      120  ..., ipv6, ipv6_src=<v in V>                     -> classify
      125  in_port=P, eth_src=<mac>, icmpv6 type 134 (RA), 135 (NS), 136 (NA),
           137 (redirect)                                   -> drop
      130  ..., icmpv6 135 code 0, ipv6_src=<v in V>, nd_sll=<mac> or none
                                                            -> classify    (NS)
      130  ..., icmpv6 135 code 0, ipv6_src=::, nd_target=<a>, nd_sll none
                                                            -> classify    (DAD)
      130  ..., icmpv6 136 code 0, ipv6_src=<v in V>, nd_target=<a>, nd_tll=<mac> or none
                                                            -> classify    (NA)
           (<a>: a single address of V: OpenFlow cannot mask nd_target, so a CIDR
           in the port's IPs lets it send from the CIDR, not advertise it)
    any other source MAC on P: table-miss, drop.
    docker0 endpoints (``Topology.endpoints``, MAC M pinned to host H's docker0 link),
    on every port Q of this host carrying the default tenant unchecked (the docker0
    link, ports without port security, a trunk's native tenant; not uplinks) other than
    H's docker0 link itself:
      105  in_port=Q, vlan_vid=0, eth_src=M                 -> drop

The pins keep a docker0 container's spoofed frames from reaching any docker0
bridge, which would learn its MAC at the weft link and cut the real container
off from its own host; ``l2`` forwards the MAC to its host (static flows).
"""
from __future__ import annotations

import ipaddress
from typing import Mapping, Sequence

from controller.flows import COOKIE_ISOLATION, COOKIE_PORTSEC, Flow, flow
from controller.model import DEFAULT_TENANT, IPPROTO_ICMPV6, eui64_link_local, is_ipv6
from controller.pipeline.base import (
    ETH_TYPE_ARP, ETH_TYPE_IPV4, ETH_TYPE_IPV6, Feature, Part, SwitchContext,
)
from controller.pipeline.classify import untagged_actions
from controller.pipeline.tables import (
    CLASSIFY, PRIO_CLASSIFY, PRIO_DROP_GROUP_SRC, PRIO_PIN_DROP, PRIO_PORTSEC_ALLOW,
    PRIO_PORTSEC_DROP, PRIO_PORTSEC_ND_ALLOW, PRIO_PORTSEC_ND_DROP,
)

__all__ = ["FEATURE"]

GROUP_BIT_MAC = "01:00:00:00:00:00"


def _drop_group_source() -> Flow:
    """CLASSIFY: no frame from a multicast/broadcast source goes anywhere or is learned."""
    return flow(CLASSIFY, PRIO_DROP_GROUP_SRC, {"eth_src": (GROUP_BIT_MAC, GROUP_BIT_MAC)}, (),
                COOKIE_PORTSEC)


ICMPV6_NS, ICMPV6_NA, ICMPV6_RA, ICMPV6_REDIRECT = 135, 136, 134, 137
NO_LLADDR = "00:00:00:00:00:00"   # nd_sll/nd_tll of an NS/NA without that option (OVS)


def _classify_secured(ofport: int, ids: tuple[int, int],
                      sources: Mapping[str, frozenset[str] | None],
                      meter: int | None = None, dual_stack: bool = False) -> list[Flow]:
    """A bound access port with port security: only its MAC(s), ARP, IPv4 and IPv6
    (with Neighbour Discovery) checked; ``dual_stack``: its network has an IPv6 subnet,
    so a MAC with IPs but no IPv6 ones still gets its link-local address."""
    vni, domain = ids
    actions = untagged_actions(ofport, vni, meter, False, domain)
    flows = []
    for mac, ips in sorted(sources.items()):
        port = {"in_port": ofport, "eth_src": mac}
        sent = {**port, "vlan_vid": 0}
        flows.append(flow(CLASSIFY, PRIO_CLASSIFY, sent, actions, COOKIE_ISOLATION))
        arp = {**sent, "eth_type": ETH_TYPE_ARP, "arp_sha": mac}
        flows.append(flow(CLASSIFY, PRIO_PORTSEC_DROP, {**port, "eth_type": ETH_TYPE_ARP}, (),
                          COOKIE_PORTSEC))
        if ips is None:
            flows.append(flow(CLASSIFY, PRIO_PORTSEC_ALLOW, arp, actions, COOKIE_PORTSEC))
            continue
        for eth_type in (ETH_TYPE_IPV4, ETH_TYPE_IPV6):
            flows.append(flow(CLASSIFY, PRIO_PORTSEC_DROP, {**port, "eth_type": eth_type}, (),
                              COOKIE_PORTSEC))
        v6 = sorted(ip for ip in ips if is_ipv6(ip))
        if v6 or dual_stack:
            flows.extend(_ipv6_secured(port, sent, mac, v6, actions))
        for ip in sorted(ip for ip in ips if not is_ipv6(ip)):
            value = _ipv4_match(ip)
            flows.append(flow(CLASSIFY, PRIO_PORTSEC_ALLOW, {**arp, "arp_spa": value}, actions,
                              COOKIE_PORTSEC))
            flows.append(flow(CLASSIFY, PRIO_PORTSEC_ALLOW,
                              {**sent, "eth_type": ETH_TYPE_IPV4, "ipv4_src": value}, actions,
                              COOKIE_PORTSEC))
    return flows


def _ipv6_secured(port: dict, sent: dict, mac: str, v6: list[str],
                  actions: Sequence[tuple]) -> list[Flow]:
    """IPv6 from ``mac`` only from ``v6`` and its link-local address; ND checked:
    solicitations and advertisements only from those addresses, with ``mac`` as the
    link-layer option, advertising only its own addresses; DAD (from ::) only for
    them; no router advertisements or redirects (see the module docstring)."""
    sources = [*v6, eui64_link_local(mac)]
    single = [a for a in sources if "/" not in a]
    ip6 = {**sent, "eth_type": ETH_TYPE_IPV6}
    icmp6 = {**ip6, "ip_proto": IPPROTO_ICMPV6, "icmpv6_code": 0}
    out = [flow(CLASSIFY, PRIO_PORTSEC_ND_DROP,
                {**port, "eth_type": ETH_TYPE_IPV6, "ip_proto": IPPROTO_ICMPV6,
                 "icmpv6_type": t}, (), COOKIE_PORTSEC)
           for t in (ICMPV6_RA, ICMPV6_NS, ICMPV6_NA, ICMPV6_REDIRECT)]
    for src in sources:
        value = _ipv6_match(src)
        out.append(flow(CLASSIFY, PRIO_PORTSEC_ALLOW, {**ip6, "ipv6_src": value}, actions,
                        COOKIE_PORTSEC))
        for lladdr in (mac, NO_LLADDR):
            out.append(flow(CLASSIFY, PRIO_PORTSEC_ND_ALLOW,
                            {**icmp6, "icmpv6_type": ICMPV6_NS, "ipv6_src": value,
                             "ipv6_nd_sll": lladdr}, actions, COOKIE_PORTSEC))
            out.extend(flow(CLASSIFY, PRIO_PORTSEC_ND_ALLOW,
                            {**icmp6, "icmpv6_type": ICMPV6_NA, "ipv6_src": value,
                             "ipv6_nd_target": target, "ipv6_nd_tll": lladdr}, actions,
                            COOKIE_PORTSEC) for target in single)
    out.extend(flow(CLASSIFY, PRIO_PORTSEC_ND_ALLOW,
                    {**icmp6, "icmpv6_type": ICMPV6_NS, "ipv6_src": "::",
                     "ipv6_nd_target": target, "ipv6_nd_sll": NO_LLADDR}, actions,
                    COOKIE_PORTSEC) for target in single)
    return out


def _ipv6_match(ip: str) -> str | tuple[str, str]:
    net = ipaddress.IPv6Network(ip)
    return str(net.network_address) if net.prefixlen == 128 else (str(net.network_address),
                                                                    str(net.netmask))


def _ipv4_match(ip: str) -> str | tuple[str, str]:
    net = ipaddress.IPv4Network(ip)
    return str(net.network_address) if net.prefixlen == 32 else (str(net.network_address),
                                                                   str(net.netmask))


def _pinned_elsewhere(sw: SwitchContext) -> list[Flow]:
    """CLASSIFY: a docker0 endpoint's MAC sending into an unchecked port of the default
    tenant that is not its own host's docker0 link: drop (see the module docstring)."""
    unchecked = [m for m in sw.members if m.tenant == DEFAULT_TENANT.name and m.vlan is None
                 and not m.uplink and not sw.sources(m)]
    out = []
    for b in sw.topo.endpoint_bindings if unchecked else ():
        for m in unchecked:
            if (b.host, b.port) != (sw.host, m.port):
                out.append(flow(CLASSIFY, PRIO_PIN_DROP,
                                {"in_port": m.ofport, "vlan_vid": 0, "eth_src": b.mac}, (),
                                COOKIE_PORTSEC))
    return out


def _contribute(sw: SwitchContext) -> Part:
    flows = [_drop_group_source(), *_pinned_elsewhere(sw)]
    for m in sw.members:
        sources = sw.sources(m)
        if sources:
            flows.extend(_classify_secured(
                m.ofport, sw.ids(m.tenant), sources, sw.port_meter.get(m.port),
                sw.topo.tenant(m.tenant).ipv6_subnet is not None))
    return Part(flows=flows)


FEATURE = Feature("portsec", _contribute)
