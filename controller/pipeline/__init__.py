"""The desired OpenFlow state of one host's br0, computed from the topology.

Pure: the model (``controller.model``), the switch's port numbers and its
tunnel names in; flows, groups and meters out.  The layout (tables, metadata,
priorities) is declared once in ``controller.pipeline.tables``; each feature is
one module contributing its part of a switch's desired state through the one
interface of ``controller.pipeline.base`` (``Feature``: a name and a function
``SwitchContext -> Part``).  ``FEATURES`` below is the one place they are
registered: adding a feature (routing, NAT, DNS) is adding its module and one
line there (and its cookie in ``controller.flows`` if its flows need their own).

    skeleton   the table-miss flows of every declared table
    classify   port / tunnel -> tenant metadata (CLASSIFY)
    portsec    source MAC/IP/ARP checks of bound ports, group-source drops (CLASSIFY)
    vlan       trunks: tagged tenants' classify (pop), tag drops in POLICY
    l2         static endpoint MACs (L2); the learn actions CLASSIFY runs
    qos        rate-limit meters, tenant limits (POLICY), per-flow rules (QOS)
    acl        tenants' stateful ACLs with conntrack (POLICY)
    flood      per-tenant flood groups (FLOOD)
    gateway    the distributed gateway: ARP/echo answers, guards (CLASSIFY, L2, GATEWAY)
    route      routing inside a tenant: host, connected and static routes (FIB, ROUTED)
    egress     the tenants' gateway ports wx-<id> into the host stack (CLASSIFY, FIB)
"""
from __future__ import annotations

from typing import Mapping

from controller.flows import Flow, Group, Meter, SwitchState
from controller.model import Topology
from controller.pipeline import (
    acl, classify, egress, flood, gateway, l2, portsec, qos, route, skeleton, vlan,
)
from controller.pipeline.acl import acl_flows, acl_rule_flow
from controller.pipeline.base import (
    ETH_TYPE_VLAN, OFPVID_PRESENT, Feature, switch_context, to_port,
)
from controller.pipeline.flood import flood_group_ids
from controller.pipeline.l2 import (
    LEARN_IDLE_TIMEOUT, LEARN_LIMIT_MACS, flow_reads, learned_cookie, learned_from_port,
)
from controller.pipeline.qos import limit_meter, rule_flow
from controller.pipeline.tables import (
    CLASSIFY, DOMAIN_MASK, FIB, FLOOD, FROM_GATEWAY, FROM_TUNNEL, FROM_UPLINK, GATEWAY, L2,
    NETWORK_MASK, POLICY, PRIO_ACL_DENY_ALL, PRIO_ACL_EST, PRIO_ACL_REL, PRIO_ACL_REMOTE_NEW,
    PRIO_ACL_RULE_BASE, PRIO_ACL_TRACK, PRIO_DROP_GROUP_SRC, PRIO_LEARNED, PRIO_QOS_RULE_BASE,
    PRIO_TENANT_LIMIT, QOS, ROUTED, SENDER_MASK, TENANT_MASK, VNI_MASK, domain_match,
    local_sender_match, network_match, tenant_match,
)

__all__ = [
    "CLASSIFY", "POLICY", "QOS", "L2", "FLOOD", "GATEWAY", "FIB", "ROUTED", "VNI_MASK",
    "FROM_TUNNEL", "FROM_UPLINK", "FROM_GATEWAY", "DOMAIN_MASK", "NETWORK_MASK",
    "network_match", "domain_match", "TENANT_MASK", "SENDER_MASK", "PRIO_LEARNED",
    "PRIO_TENANT_LIMIT", "PRIO_QOS_RULE_BASE",
    "LEARN_IDLE_TIMEOUT", "LEARN_LIMIT_MACS", "OFPVID_PRESENT", "ETH_TYPE_VLAN",
    "flood_group_ids", "learned_cookie", "learned_from_port", "flow_reads", "PRIO_DROP_GROUP_SRC",
    "tenant_match", "local_sender_match", "to_port", "rule_flow", "desired_state",
    "PRIO_ACL_TRACK", "PRIO_ACL_EST", "PRIO_ACL_REL", "PRIO_ACL_REMOTE_NEW", "PRIO_ACL_RULE_BASE",
    "PRIO_ACL_DENY_ALL", "acl_flows", "acl_rule_flow", "limit_meter", "FEATURES",
]

# Every feature of the pipeline, the one place they are registered.  The order does not
# change the result (a switch's state is sets); priorities decide (``tables``).
FEATURES: tuple[Feature, ...] = (
    skeleton.FEATURE,
    classify.FEATURE,
    portsec.FEATURE,
    vlan.FEATURE,
    l2.FEATURE,
    qos.FEATURE,
    acl.FEATURE,
    flood.FEATURE,
    gateway.FEATURE,
    route.FEATURE,
    egress.FEATURE,
)


def desired_state(host: str, topo: Topology, ports: Mapping[str, int],
                  tunnels: Mapping[str, str]) -> SwitchState:
    """Desired flows, groups and meters of ``host``'s switch: every feature's part.

    ``ports``: port name -> OpenFlow port number (port-desc of this switch);
    ``tunnels``: peer host -> name of this host's tunnel port toward it.  Ports
    not (yet) in ``ports`` are skipped, so the result follows the live switch.
    """
    sw = switch_context(host, topo, ports, tunnels)
    flows: list[Flow] = []
    groups: list[Group] = []
    meters: list[Meter] = []
    for feature in FEATURES:
        part = feature.contribute(sw)
        flows.extend(part.flows)
        groups.extend(part.groups)
        meters.extend(part.meters)
    return SwitchState(frozenset(flows), frozenset(groups), frozenset(meters))
