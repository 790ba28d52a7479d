"""Egress: a tenant's door to the host stack, its gateway port ``wx-<id>``.

The agent keeps one OVS internal port per tenant with a gateway network and a local
port on the host (``controller.model.gateway_port``; docs/routing.md section 3: the
kernel NATs, routes replies back by mark).  The controller reads its presence from
the switch's port list, like any port: without it, no flow.  Cookie
COOKIE_EGRESS | tenant id; per tenant T (id t) with a network N that has ``egress``
and a local port here, while ``wx-<t>`` is on the switch::

    CLASSIFY 100  in_port=wx-<t>, ip, eth_dst=next_hop_mac(t)
                  -> metadata: domain t, FROM_GATEWAY (network bits 0), goto FIB
                  (anything else from wx-<t> misses and drops: kernel ND, stray ARP)
    FIB /0, egress  domain=t, network=N, ip, for each such network N
                  -> dec_ttl, eth_src=GWMAC(N), eth_dst=gateway_port_mac(t), output wx-<t>

A frame from the gateway port finds its container's host route in FIB (eth_src
becomes the destination network's gateway MAC), then ROUTED resubmits it to POLICY:
the tenant's ACLs (conntrack zone t: egress replies are +est) and QoS as a frame of
the destination network.  A network with egress off has no /0 row: its packets to
the outside miss in FIB and drop; a static route (``route``) outranks egress.
"""
from __future__ import annotations

from controller.flows import COOKIE_EGRESS, Flow, flow
from controller.model import gateway_mac, gateway_port, gateway_port_mac, next_hop_mac
from controller.pipeline.base import ETH_TYPE_IPV4, Feature, Part, SwitchContext
from controller.pipeline.route import routing_domains_here
from controller.pipeline.tables import (
    CLASSIFY, CLASSIFY_MASK, DOMAIN_MASK, FIB, FIB_EGRESS, FROM_GATEWAY, PRIO_GATEWAY_PORT,
    VNI_MASK, domain_bits, fib_priority,
)

__all__ = ["FEATURE"]


def _tenant_flows(sw: SwitchContext, tenant: str) -> list[Flow]:
    tid = sw.topo.tenant(tenant).vni
    ofport = sw.ports.get(gateway_port(tid))
    networks = [n for n in sw.topo.networks_of(tenant) if n.egress and n.name in sw.local]
    if ofport is None or not networks:
        return []
    cookie = COOKIE_EGRESS | tid
    out = [flow(CLASSIFY, PRIO_GATEWAY_PORT,
                {"in_port": ofport, "eth_type": ETH_TYPE_IPV4, "eth_dst": next_hop_mac(tid)},
                [("write_metadata", domain_bits(tid) | FROM_GATEWAY,
                  CLASSIFY_MASK | FROM_GATEWAY), ("goto", FIB)], cookie)]
    for n in networks:
        out.append(flow(FIB, fib_priority(0, FIB_EGRESS),
                        {"metadata": (domain_bits(tid) | n.vni, DOMAIN_MASK | VNI_MASK),
                         "eth_type": ETH_TYPE_IPV4},
                        [("apply", (("dec_ttl",), ("set_field", "eth_src", gateway_mac(n.vni)),
                                    ("set_field", "eth_dst", gateway_port_mac(tid)),
                                    ("output", ofport)))], cookie))
    return out


def _contribute(sw: SwitchContext) -> Part:
    return Part(flows=[f for t in routing_domains_here(sw) for f in _tenant_flows(sw, t)])


FEATURE = Feature("egress", _contribute)
