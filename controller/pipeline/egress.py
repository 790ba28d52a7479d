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
    FIB /32+1       domain=t, network=N, udp to 169.254.53.53:53, for every network N
                  with a gateway here (egress or not): the same actions (docs/dns.md)

The CLASSIFY row exists for a tenant with any gateway network here (its resolver's
answers come back through wx-<t>); without egress only those answers have a route back
to a container (the host stack marks and routes only connections that wx-<t> opened).

A frame from the gateway port finds its container's host route in FIB (eth_src
becomes the destination network's gateway MAC), then ROUTED resubmits it to POLICY:
the tenant's ACLs (conntrack zone t: egress replies are +est) and QoS as a frame of
the destination network.  A network with egress off has no /0 row: its packets to
the outside miss in FIB and drop; a static route (``route``) outranks egress.
"""
from __future__ import annotations

from cluster.names import RESOLVER_ADDRESS, RESOLVER_PORT
from controller.flows import COOKIE_EGRESS, Flow, flow
from controller.model import Tenant, gateway_mac, gateway_port, gateway_port_mac, next_hop_mac
from controller.pipeline.base import ETH_TYPE_IPV4, Feature, Part, SwitchContext
from controller.pipeline.route import routing_domains_here
from controller.pipeline.tables import (
    CLASSIFY, CLASSIFY_MASK, DOMAIN_MASK, FIB, FIB_CONNECTED, FIB_EGRESS, FROM_GATEWAY,
    PRIO_GATEWAY_PORT, VNI_MASK, domain_bits, fib_priority,
)

__all__ = ["FEATURE", "RESOLVER_MATCH"]
# a query to the agent's resolver (docs/dns.md)
RESOLVER_MATCH = {"ip_proto": 17, "ipv4_dst": RESOLVER_ADDRESS, "udp_dst": RESOLVER_PORT}


def _tenant_flows(sw: SwitchContext, tenant: str) -> list[Flow]:
    tid = sw.topo.tenant(tenant).vni
    ofport = sw.ports.get(gateway_port(tid))
    routed = [n for n in sw.topo.networks_of(tenant) if n.gateway and n.name in sw.local]
    if ofport is None or not routed:
        return []
    cookie = COOKIE_EGRESS | tid

    def out_of_the_door(n: Tenant, prio: int, match: dict) -> Flow:
        return flow(FIB, prio, {"metadata": (domain_bits(tid) | n.vni, DOMAIN_MASK | VNI_MASK),
                                "eth_type": ETH_TYPE_IPV4, **match},
                    [("apply", (("dec_ttl",), ("set_field", "eth_src", gateway_mac(n.vni)),
                                ("set_field", "eth_dst", gateway_port_mac(tid)),
                                ("output", ofport)))], cookie)
    out = [flow(CLASSIFY, PRIO_GATEWAY_PORT,
                {"in_port": ofport, "eth_type": ETH_TYPE_IPV4, "eth_dst": next_hop_mac(tid)},
                [("write_metadata", domain_bits(tid) | FROM_GATEWAY,
                  CLASSIFY_MASK | FROM_GATEWAY), ("goto", FIB)], cookie)]
    # DNS to the agent's resolver (docs/dns.md) is not egress: every routed network, over
    # the link-local drop (route.UNROUTABLE) at the same length
    out += [out_of_the_door(n, fib_priority(32, FIB_CONNECTED) + 1, RESOLVER_MATCH)
            for n in routed]
    out += [out_of_the_door(n, fib_priority(0, FIB_EGRESS), {}) for n in routed if n.egress]
    return out


def _contribute(sw: SwitchContext) -> Part:
    return Part(flows=[f for t in routing_domains_here(sw) for f in _tenant_flows(sw, t)])


FEATURE = Feature("egress", _contribute)
