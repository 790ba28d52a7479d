"""Containers' names across hosts: the records and the answers (pure; docs/dns.md).

An agent builds ``NameRecord`` rows from its dockerd (containers on weft networks: the
container name and its ``--network-alias`` names, with the address on that network).
The resolver answers a query with the records of the asking container's tenant only:
``Zone`` holds one tenant's records, ``answer`` decides A / PTR / NXDOMAIN / NODATA, or
None: not a name of the cluster, forward it to the host's resolvers.

What is a name of the cluster: a single-label name (``web1``: Docker's own names have no
dots), any name a record holds (an alias may have dots), and the reverse name of an
address in the tenant's subnets.  Another tenant's names are answered exactly as names
that do not exist (NXDOMAIN, or forwarded when they have dots): the asker learns nothing.
"""
from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cluster.names import NameRecord, valid_name
from ovs_agent import dnswire
from ovs_agent.dnswire import Query

WEFT_DRIVER = "weft"
TENANT_OPT, NETWORK_OPT = "tenant", "network"      # as ovs_agent.dockerplugin reads them
__all__ = ["NameRecord", "valid_name", "weft_networks", "container_records", "docker0_records",
           "Zone", "answer", "zones", "rotated", "TokenBucket"]


def weft_networks(networks: Any) -> dict[str, str]:
    """Docker network id -> weft network name, from ``GET /networks``: networks of the
    weft driver; ``-o network=``, else ``-o tenant=``, else the Docker network's name
    (the plugin's rule, ovs_agent.dockerplugin.create_network)."""
    out: dict[str, str] = {}
    for n in networks if isinstance(networks, list) else []:
        if not isinstance(n, dict) or n.get("Driver") != WEFT_DRIVER or not n.get("Id"):
            continue
        opts = n.get("Options") or {}
        name = opts.get(NETWORK_OPT) or opts.get(TENANT_OPT) or n.get("Name") or ""
        if name:
            out[str(n["Id"])] = str(name)
    return out


DEFAULT_NETWORK = "default"     # docker0's containers: the built-in default tenant
DOCKER0 = "docker0"
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"


def docker0_records(network: Any) -> list[NameRecord]:
    """docker0's containers' names (``GET /networks/bridge``: ``Containers`` with
    ``Name`` and ``IPv4Address``) as records of the default tenant.  Nothing when that
    network is not on docker0; names that are no DNS names are left out."""
    if not isinstance(network, dict):
        return []
    if (network.get("Options") or {}).get(BRIDGE_NAME_OPTION, DOCKER0) != DOCKER0:
        return []
    out = set()
    for cid, c in (network.get("Containers") or {}).items():
        if not isinstance(c, dict):
            continue
        name = str(c.get("Name") or "").lower()
        try:
            ip = str(ipaddress.IPv4Interface(str(c.get("IPv4Address") or "")).ip)
            out.add(NameRecord(DEFAULT_NETWORK, name, ip, str(cid)[:64], primary=True))
        except ValueError:
            continue
    return sorted(out)


def container_records(inspect: Any, networks: Mapping[str, str]) -> list[NameRecord]:
    """The records of one container (``GET /containers/{id}/json``) on weft networks:
    its name and aliases on each, with its address there.  Names that are no DNS names
    are left out; a container without an address on a network has no records there."""
    if not isinstance(inspect, dict):
        return []
    cid = str(inspect.get("Id") or "")
    own = str(inspect.get("Name") or "").lstrip("/").lower()
    nets = ((inspect.get("NetworkSettings") or {}).get("Networks") or {})
    out = set()
    for settings in nets.values() if isinstance(nets, dict) else []:
        if not isinstance(settings, dict):
            continue
        network = networks.get(str(settings.get("NetworkID") or ""))
        address = str(settings.get("IPAddress") or "")
        if not network or not address:
            continue
        aliases = [str(a).lower() for a in settings.get("Aliases") or [] if a]
        for name in dict.fromkeys([own, *aliases]):
            if not valid_name(name):
                continue
            try:
                out.add(NameRecord(network, name, address, cid, primary=name == own))
            except ValueError:
                continue
    return sorted(out)


@dataclass
class Zone:
    """One tenant's names: what its containers may ask for."""

    subnets: tuple[ipaddress.IPv4Network, ...] = ()
    authoritative: bool = True      # False: only its records; everything else forwarded
    by_name: dict[str, list[str]] = field(default_factory=dict)
    by_ip: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, records: Iterable[NameRecord], subnets: Iterable[str] = ()) -> Zone:
        z = cls(tuple(ipaddress.IPv4Network(s) for s in subnets))
        for r in sorted(set(records)):
            ips = z.by_name.setdefault(r.name, [])
            if r.ip not in ips:
                ips.append(r.ip)
            if r.primary and r.name not in z.by_ip.setdefault(r.ip, []):
                z.by_ip[r.ip].append(r.name)
        return z

    def in_subnets(self, ip: str) -> bool:
        addr = ipaddress.IPv4Address(ip)
        return any(addr in net for net in self.subnets)


_turns = itertools.count()


def rotated(ips: list[str], turn: int) -> tuple[str, ...]:
    """Round robin as Docker's resolver does it: every answer starts elsewhere."""
    if not ips:
        return ()
    k = turn % len(ips)
    return tuple(ips[k:] + ips[:k])


def answer(q: Query, zone: Zone, turn: int | None = None) -> bytes | None:
    """The resolver's answer to ``q`` from one tenant's zone, or None: forward it."""
    if q.qclass != dnswire.CLASS_IN or q.flags & dnswire.OPCODE_MASK:
        return None
    name = q.name
    ptr = dnswire.ptr_address(name) if q.qtype == dnswire.TYPE_PTR else None
    if ptr is not None and zone.in_subnets(ptr):
        names = zone.by_ip.get(ptr)
        if not names:
            return dnswire.reply(q, dnswire.RCODE_NXDOMAIN)
        return dnswire.reply(q, ptr=tuple(names))
    if name in zone.by_name:
        if q.qtype != dnswire.TYPE_A:
            return dnswire.reply(q)         # the name exists, not with this type: NODATA
        t = next(_turns) if turn is None else turn
        return dnswire.reply(q, a=rotated(zone.by_name[name], t))
    if zone.authoritative and name and "." not in name:
        return dnswire.reply(q, dnswire.RCODE_NXDOMAIN)
    return None


def zones(records_by_tenant: Mapping[str, Iterable[NameRecord]],
          subnets_by_tenant: Mapping[str, Iterable[str]]) -> dict[str, Zone]:
    """Tenant -> its zone; a tenant with subnets and no records still gets one (its
    single-label names are NXDOMAIN, its reverse names too)."""
    tenants = set(records_by_tenant) | set(subnets_by_tenant)
    return {t: Zone.build(records_by_tenant.get(t, ()), subnets_by_tenant.get(t, ()))
            for t in tenants}


@dataclass
class TokenBucket:
    """Queries per second per key (a container port), ``burst`` at once; pure (the
    caller gives the time).  At most ``max_keys`` keys, the least recently seen forgotten
    first (a forgotten key starts again with a full bucket)."""

    rate: float = 50.0
    burst: float = 100.0
    max_keys: int = 4096
    _state: dict[Any, tuple[float, float]] = field(default_factory=dict)

    def allow(self, key: Any, now: float) -> bool:
        tokens, at = self._state.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        while len(self._state) >= self.max_keys:       # the least recently seen goes
            del self._state[next(iter(self._state))]
        ok = tokens >= 1
        self._state[key] = (tokens - 1 if ok else tokens, now)
        return ok
