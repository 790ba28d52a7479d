"""ACLs: a tenant's stateful security policy in POLICY, with OVS conntrack.

A tenant with a rule or a default-deny policy (``Topology.acls``,
``Topology.acl_deny``) gets, in POLICY, for each of its networks present on a
host (zone = the tenant's VNI, its id, for all its networks; "pass" = [the tenant's meter for local senders]
goto QOS; every flow matches the tenant's metadata and ``vlan_vid=0``, so a
frame still tagged never matches one and the tag drops above still win)::

    30010 icmpv6 type 135/136 (NS, NA)         -> pass   (Neighbour Discovery: never tracked)
    30000 ip, ct_state=-trk                    -> ct(zone, table=POLICY)  (track, recirculate)
    30000 ip, ct_state=+trk+inv                -> drop
    29990 ip, ct_state=+trk+est                -> pass   (replies, the rest of a connection)
    29980 ip, ct_state=+trk+rel                -> pass   (ICMP errors about a connection)
    29970 ip, +trk+new, from a tunnel/uplink   -> ct(commit, zone), pass: decided where it entered
    29960 udp to the resolver, +trk+new, local sender
                                               -> ct(commit, zone), pass: names are not
                                                  egress (docs/dns.md), default-deny or not
    10000+priority  ip, +trk+new, local sender, <rule match>
                                               -> allow: ct(commit, zone), pass; drop: drop
                                                  cookie COOKIE_ACL|rule id (its counters)
    10000 ip, +trk+new, local sender           -> the default: allow (commit, pass) or drop
    30000 arp                                  -> pass   (default-deny tenants only)
    20    anything else of the tenant          -> drop   (default-deny tenants only)

Every ``ip`` flow is there twice, for IPv4 and for IPv6 (``ipv6``), except the
resolver's (IPv4); a rule is of one family (``AclRule.ipv6``) and matches only it.
(a "pass" with a meter is two flows: local senders at priority+1 with the
meter, everyone else without.)  A connection is decided once, by its first
packet, on the host where it enters weft; the receiving host commits it
when it arrives from the tunnel, so the replies are +est on both hosts.
"""
from __future__ import annotations

from typing import Mapping

from controller.flows import CT_EST, CT_INV, CT_NEW, CT_REL, CT_TRK, Flow, acl_cookie, flow
from controller.model import IPPROTO_ICMPV6, AclRule
from controller.pipeline.egress import RESOLVER_MATCH
from controller.pipeline.base import (
    ETH_TYPE_ARP, ETH_TYPE_IPV4, ETH_TYPE_IPV6, Feature, Part, SwitchContext, metered,
)
from controller.pipeline.tables import (
    FROM_TUNNEL, FROM_UPLINK, POLICY, PRIO_ACL_DENY_ALL, PRIO_ACL_DNS, PRIO_ACL_EST, PRIO_ACL_ND,
    PRIO_ACL_REL, PRIO_ACL_REMOTE_NEW, PRIO_ACL_RULE_BASE, PRIO_ACL_TRACK, QOS, SENDER_MASK, TENANT_MASK,
    local_sender_match, tenant_match,
)

__all__ = ["FEATURE", "ND_TYPES", "acl_flows", "acl_rule_flow"]

ND_TYPES = (135, 136)     # ICMPv6 neighbour solicitation and advertisement


def _acl_pass(priority: int, vni: int, match: Mapping, meter: int | None,
              apply: tuple = (), cookie: int = acl_cookie()) -> list[Flow]:
    """On to QOS; with the tenant's meter for local senders (one more flow, above)."""
    base = {**tenant_match(vni), "vlan_vid": 0, **match}
    out = [flow(POLICY, priority, base, [("apply", apply), ("goto", QOS)], cookie)]
    if meter is not None:
        out.append(flow(POLICY, priority + 1, {**base, **local_sender_match(vni)},
                        [("meter", meter), ("apply", apply), ("goto", QOS)], cookie))
    return out


def _ct_state(bits: int) -> dict[str, tuple[int, int]]:
    return {"ct_state": (CT_TRK | bits, CT_TRK | bits)}


def acl_rule_flow(vni: int, rule: AclRule, meter: int | None, zone: int | None = None) -> Flow:
    """POLICY: a rule deciding a new connection a local port of network ``vni`` opens
    (``zone``: the tenant's conntrack zone, its id; None: ``vni``, a one-network tenant)."""
    zone = vni if zone is None else zone
    match = {**local_sender_match(vni), "vlan_vid": 0, **_ct_state(CT_NEW), **rule.oxm()}
    prio = PRIO_ACL_RULE_BASE + rule.priority
    if rule.action == "drop":
        return flow(POLICY, prio, match, (), acl_cookie(rule.id))
    return flow(POLICY, prio, match,
                [*metered(meter), ("apply", (("ct", True, zone, None),)), ("goto", QOS)],
                acl_cookie(rule.id))


def acl_flows(vni: int, rules: list[AclRule], deny: bool, meter: int | None,
              zone: int | None = None) -> list[Flow]:
    """A tenant's stateful security policy on one host, for its network ``vni`` (see the
    module docstring); ``zone``: the tenant's id (None: ``vni``, its default network)."""
    zone = vni if zone is None else zone
    commit = (("ct", True, zone, None),)
    out: list[Flow] = []
    for eth_type in (ETH_TYPE_IPV4, ETH_TYPE_IPV6):
        ip = {"eth_type": eth_type}
        out += [
            flow(POLICY, PRIO_ACL_TRACK, {**tenant_match(vni), "vlan_vid": 0, **ip,
                                          "ct_state": (0, CT_TRK)},
                 [("apply", (("ct", False, zone, POLICY),))], acl_cookie()),
            flow(POLICY, PRIO_ACL_TRACK, {**tenant_match(vni), "vlan_vid": 0, **ip,
                                          **_ct_state(CT_INV)}, (), acl_cookie()),
            *_acl_pass(PRIO_ACL_EST, vni, {**ip, **_ct_state(CT_EST)}, meter),
            *_acl_pass(PRIO_ACL_REL, vni, {**ip, **_ct_state(CT_REL)}, meter),
        ]
        for arrived in ({"metadata": (vni | FROM_TUNNEL, TENANT_MASK)},
                        {"metadata": (vni | FROM_UPLINK, SENDER_MASK)}):
            out.append(flow(POLICY, PRIO_ACL_REMOTE_NEW,
                            {**arrived, "vlan_vid": 0, **ip, **_ct_state(CT_NEW)},
                            [("apply", commit), ("goto", QOS)], acl_cookie()))
        new_local = {**local_sender_match(vni), "vlan_vid": 0, **ip, **_ct_state(CT_NEW)}
        if deny:
            out.append(flow(POLICY, PRIO_ACL_RULE_BASE, new_local, (), acl_cookie()))
        else:
            out.append(flow(POLICY, PRIO_ACL_RULE_BASE, new_local,
                            [*metered(meter), ("apply", commit), ("goto", QOS)], acl_cookie()))
        if eth_type == ETH_TYPE_IPV4:
            out.append(flow(POLICY, PRIO_ACL_DNS, {**new_local, **RESOLVER_MATCH},
                            [*metered(meter), ("apply", commit), ("goto", QOS)], acl_cookie()))
    out += [acl_rule_flow(vni, r, meter, zone) for r in rules]
    # Neighbour Discovery is IPv6's ARP: never through conntrack (which calls it invalid)
    for nd in ND_TYPES:
        out += _acl_pass(PRIO_ACL_ND, vni, {"eth_type": ETH_TYPE_IPV6,
                                            "ip_proto": IPPROTO_ICMPV6, "icmpv6_type": nd},
                         meter)
    if deny:
        out += _acl_pass(PRIO_ACL_TRACK, vni, {"eth_type": ETH_TYPE_ARP}, meter)
        out.append(flow(POLICY, PRIO_ACL_DENY_ALL, tenant_match(vni), (), acl_cookie()))
    return out


def _contribute(sw: SwitchContext) -> Part:
    """Per network present here of a tenant with a policy: the tenant's rules, its zone
    (its id: one connection is one entry whichever network it enters by) and meter."""
    topo = sw.topo
    flows: list[Flow] = []
    for name in sorted(topo.acl_tenants):
        rules = [r for r in topo.acls if r.tenant == name]
        zone = topo.tenant(name).vni
        for net in topo.networks_of(name):
            if net.name in sw.here:
                flows.extend(acl_flows(net.vni, rules, name in topo.acl_deny,
                                       sw.tenant_meter.get(name), zone))
    return Part(flows=flows)


FEATURE = Feature("acl", _contribute)
