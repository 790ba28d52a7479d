"""The one interface every pipeline feature implements, and what features share.

A feature (classification, port security, VLAN trunks, L2 and learning, QoS,
ACLs, flooding; routing, NAT and DNS next) is a module with one ``Feature``:
a name and a pure function from the switch being computed (``SwitchContext``,
derived once per switch from the model) to its ``Part`` of that switch's desired
state.  ``controller.pipeline.FEATURES`` lists them; ``desired_state`` unions
their parts.  Parts are sets in the end (``SwitchState``), so the order of the
features does not matter; priorities do (``controller.pipeline.tables``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping, NamedTuple

from controller.flows import Flow, Group, Meter
from controller.model import ETH_TYPE_IPV4, ETH_TYPE_IPV6, RateLimit, Topology

__all__ = [
    "Feature", "Part", "SwitchContext", "Member", "switch_context", "routed_networks",
    "metered", "to_port",
    "to_tunnel", "OFPVID_PRESENT", "ETH_TYPE_VLAN", "ETH_TYPE_QINQ", "ETH_TYPE_ARP",
    "ETH_TYPE_IPV4", "ETH_TYPE_IPV6",
]

OFPVID_PRESENT = 0x1000
ETH_TYPE_VLAN = 0x8100       # 802.1Q C-tag: the tag weft pushes
ETH_TYPE_QINQ = 0x88A8       # 802.1ad S-tag: OVS parses it as a VLAN header too
ETH_TYPE_ARP = 0x0806


class Member(NamedTuple):
    """A live port of the host carrying one tenant."""

    tenant: str
    ofport: int
    vlan: int | None          # the tenant's tag on this port; None: untagged
    port: str
    uplink: bool


@dataclass(frozen=True, slots=True)
class SwitchContext:
    """What every feature needs to know about one switch, derived once from the model.

    ``ports``: port name -> OpenFlow port number (port-desc of this switch); ports
    not (yet) in it have no flow, so the result follows the live switch.
    """

    host: str
    topo: Topology
    ports: Mapping[str, int]
    members: list[Member]             # every live port, once per tenant it carries
    here: frozenset[str]              # tenants carried by any port of the host
    local: frozenset[str]             # tenants with a local port (uplinks excluded)
    routed: frozenset[str]            # networks with a gateway of tenants routing here
    peer_ofport: dict[str, int]       # peer host -> its tunnel's OpenFlow port
    shared: dict[str, frozenset[str]]  # peer host -> tenants both ends have
    port_limits: tuple[RateLimit, ...]    # limits of live ports of this host
    tenant_limits: tuple[RateLimit, ...]  # limits of tenants with a local port here (in
    port_meter: dict[str, int]        # live port -> its rate limit's meter id  any network)
    tenant_meter: dict[str, int]      # local tenant -> its rate limit's meter id on this host
    secured: dict[str, dict[str, frozenset[str] | None]]  # port -> its port security

    def ids(self, name: str) -> tuple[int, int]:
        """(VNI, routing domain) CLASSIFY writes for segment ``name``: the domain is its
        tenant's id for a network with a gateway, else 0 (its frames never reach FIB,
        and its flows stay as they were before routing)."""
        n = self.topo.tenant(name)
        return n.vni, (self.topo.tenant(n.tenant).vni if n.gateway else 0)

    def sources(self, m: Member) -> Mapping[str, frozenset[str] | None]:
        """Port security of an untagged member: source MAC -> its IPv4 sources (None:
        any); empty when the port has none (then a plain or tagged classify takes it)."""
        return self.secured.get(m.port, {}) if m.vlan is None else {}


def switch_context(host: str, topo: Topology, ports: Mapping[str, int],
                   tunnels: Mapping[str, str]) -> SwitchContext:
    """The ``SwitchContext`` of ``host``; ``tunnels``: peer host -> name of this
    host's tunnel port toward it."""
    members = sorted(_members(host, topo, ports), key=lambda m: (m.tenant, m.ofport))
    here = topo.tenants_on(host)
    peer_ofport = {peer: ports[name] for peer, name in tunnels.items()
                   if name in ports and peer != host}
    local = topo.local_tenants(host)
    live = {m.port for m in members}
    port_limits = tuple(x for x in topo.limits if x.host == host and x.port in live)
    local_domains = {topo.tenant(name).tenant for name in local}
    tenant_limits = tuple(x for x in topo.limits if x.host == host and x.tenant in local_domains)
    return SwitchContext(
        host=host, topo=topo, ports=ports, members=members, here=here, local=local,
        routed=routed_networks(topo, here), peer_ofport=peer_ofport,
        # a peer's frames of a tenant matter only if both ends have it
        shared={peer: topo.tenants_on(peer) & here for peer in peer_ofport},
        port_limits=port_limits, tenant_limits=tenant_limits,
        port_meter={x.port: x.id for x in port_limits if x.port is not None},
        tenant_meter={x.tenant: x.id for x in tenant_limits if x.tenant is not None},
        secured={b.port: b.source_addresses() for b in topo.bindings_on(host)})


def routed_networks(topo: Topology, networks: frozenset[str]) -> frozenset[str]:
    """The networks with a gateway of every tenant that has one among ``networks``: where
    frames entering those networks may be routed to (``controller.pipeline.route``)."""
    domains = {topo.tenant(name).tenant for name in networks if topo.tenant(name).gateway}
    return frozenset(n.name for t in domains for n in topo.networks_of(t) if n.gateway)


def _members(host: str, topo: Topology, ports: Mapping[str, int]) -> list[Member]:
    """Every (tenant, port) pair of the live ports of ``host``."""
    out = []
    for b in topo.bindings_on(host):
        if b.port not in ports:
            continue
        if b.tenant is not None:
            out.append(Member(b.tenant, ports[b.port], None, b.port, b.uplink))
        out.extend(Member(name, ports[b.port], topo.tenant(name).vlan, b.port, b.uplink)
                   for name in b.trunk)
    return out


class Part(NamedTuple):
    """A feature's share of a switch's desired state."""

    flows: Iterable[Flow] = ()
    groups: Iterable[Group] = ()
    meters: Iterable[Meter] = ()


class Feature(NamedTuple):
    """A pipeline feature: its name and the function computing its ``Part`` of a switch."""

    name: str
    contribute: Callable[[SwitchContext], Part]


# --- actions several features write --------------------------------------------------
def metered(meter: int | None) -> list[tuple]:
    """The meter instruction of a rate limit, if there is one."""
    return [] if meter is None else [("meter", meter)]


def to_port(ofport: int, vlan: int | None) -> tuple[tuple, ...]:
    """Actions sending a (pipeline-internal, untagged) frame out of a local port,
    tagged with ``vlan`` when the port carries the frame's tenant as a trunk VLAN."""
    if vlan is None:
        return (("output", ofport),)
    return (("push_vlan", ETH_TYPE_VLAN), ("set_field", "vlan_vid", OFPVID_PRESENT | vlan),
            ("output", ofport))


def to_tunnel(vni: int, tunnel_ofport: int) -> tuple[tuple, ...]:
    """Actions sending a frame of tenant ``vni`` to the peer behind ``tunnel_ofport``."""
    return (("set_field", "tunnel_id", vni), ("output", tunnel_ofport))
