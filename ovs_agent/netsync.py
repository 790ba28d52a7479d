"""The cluster's networks in this host's dockerd: what the controller lists (wanted)
against the weft networks dockerd has (existing), as the smallest set of changes.

Pure: no I/O.  The agent (`Agent._sync_networks`) reads both sides, asks `stale` which
networks it must inspect for containers, and applies `plan`'s answer through dockerd's
API.  Diff, never wipe: a network that exists and fits is left as it is (created by the
agent or adopted from an operator), only networks the agent created (its label) are
ever deleted, and never while a container of this host is on them.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DRIVER = "weft"
MANAGED_LABEL = "org.weft.managed"      # "true" on networks the agent created
NETWORK_LABEL = "org.weft.network"      # the weft network it was created for
TENANT_OPT = "tenant"                   # the plugin's -o tenant / -o network
NETWORK_OPT = "network"
BUILTIN = "default"                     # docker0's tenant: never a Docker network of weft


@dataclass(frozen=True)
class Wanted:
    """A network of the controller (a further network, or a tenant's default network
    with a subnet) that every Docker host should have."""
    name: str
    tenant: str
    subnet: str
    gateway: str | None         # None: the network has no gateway (any of Docker's fits)
    subnet6: str | None = None  # dual-stack: the Docker network gets --ipv6 and it


@dataclass(frozen=True)
class Existing:
    """A weft-driver network of this dockerd, as `GET /networks` shows it."""
    id: str
    name: str
    segment: str                # the weft network its ports join (-o network/tenant/name)
    tenant: str | None          # -o tenant given beside -o network: the tenant it names
    subnet: str | None
    gateway: str | None
    managed: bool               # created by an agent (its label)
    containers: int | None = None   # this host's containers on it; None: not asked
    subnet6: str | None = None  # its IPv6 subnet (EnableIPv6), None: IPv4 only


@dataclass
class Plan:
    """What to do: ``create`` (missing here), ``replace`` (the agent's own, now
    different and unused: deleted, then created), ``delete`` (the agent's, gone from the
    controller and unused), ``adopt`` (made by hand and fitting: used as it is, never
    deleted by the agent), ``ok`` (the agent's, fitting), ``conflicts`` (name: why it is
    left alone), ``waiting`` (name: why a change waits for containers to leave)."""
    create: list[Wanted] = field(default_factory=list)
    replace: list[tuple[Existing, Wanted]] = field(default_factory=list)
    delete: list[Existing] = field(default_factory=list)
    adopt: list[Existing] = field(default_factory=list)
    ok: list[Existing] = field(default_factory=list)
    conflicts: dict[str, str] = field(default_factory=dict)
    waiting: dict[str, str] = field(default_factory=dict)

    @property
    def changes(self) -> bool:
        return bool(self.create or self.replace or self.delete)


# -- reading both sides ---------------------------------------------------------------
def wanted_from(networks: Any) -> list[Wanted]:
    """The controller's `GET /v1/networks` as networks Docker can hold: IPv4 subnet
    required (the plugin refuses a network without one, and IPv6); the built-in
    ``default`` (docker0) left out.  Raises ValueError on an answer of the wrong shape
    (then nothing is changed: an answer that cannot be read is no empty list)."""
    if not isinstance(networks, list):
        raise ValueError("the controller's network list is not a list")
    out = []
    for n in networks:
        if not isinstance(n, dict) or not isinstance(n.get("name"), str):
            raise ValueError(f"the controller's network entry {str(n)[:80]!r} has no name")
        if n.get("builtin") or n["name"] == BUILTIN or not n.get("subnet"):
            continue
        try:
            if ipaddress.ip_network(n["subnet"], strict=False).version != 4:
                continue
        except ValueError:
            continue
        out.append(Wanted(n["name"], str(n.get("tenant") or n["name"]), n["subnet"],
                          n.get("gateway") or None, n.get("subnet6") or None))
    return out


def existing_from(doc: Mapping[str, Any]) -> Existing:
    """One network of dockerd's `GET /networks` (or `/networks/{id}`, which also counts
    its containers)."""
    opts = doc.get("Options") or {}
    labels = doc.get("Labels") or {}
    configs = [c for c in (doc.get("IPAM") or {}).get("Config") or [] if isinstance(c, dict)]
    config = next((c for c in configs if ":" not in str(c.get("Subnet") or "")),
                  {})   # the IPv4 one (Docker lists the IPv6 one after it)
    config6 = next((c for c in configs if ":" in str(c.get("Subnet") or "")), {})
    name = str(doc.get("Name") or "")
    by_network = opts.get(NETWORK_OPT)
    containers = doc.get("Containers")
    return Existing(
        id=str(doc.get("Id") or ""), name=name,
        segment=str(by_network or opts.get(TENANT_OPT) or name),
        tenant=str(opts[TENANT_OPT]) if by_network and opts.get(TENANT_OPT) else None,
        subnet=config.get("Subnet") or None,
        gateway=(config.get("Gateway") or "").split("/")[0] or None,
        managed=str(labels.get(MANAGED_LABEL, "")).lower() == "true",
        containers=len(containers) if isinstance(containers, dict) else None,
        subnet6=config6.get("Subnet") or None)


def create_body(w: Wanted) -> dict[str, Any]:
    """dockerd's `POST /networks/create` for a wanted network: what `docker network
    create -d weft --ipam-driver weft -o network=NAME -o tenant=T --subnet S [--gateway
    G] [--ipv6 --subnet S6] NAME` sends, labelled as the agent's.  CheckDuplicate: dockerd's API otherwise
    accepts a second network of the same name."""
    config: dict[str, str] = {"Subnet": w.subnet}
    if w.gateway:
        config["Gateway"] = w.gateway
    configs = [config, *([{"Subnet": w.subnet6}] if w.subnet6 else [])]
    return {"Name": w.name, "CheckDuplicate": True, "Driver": DRIVER,
            "EnableIPv6": bool(w.subnet6),
            "IPAM": {"Driver": DRIVER, "Config": configs, "Options": {TENANT_OPT: w.name}},
            "Options": {NETWORK_OPT: w.name, TENANT_OPT: w.tenant},
            "Labels": {MANAGED_LABEL: "true", NETWORK_LABEL: w.name}}


# -- deciding -------------------------------------------------------------------------
def differences(w: Wanted, e: Existing) -> list[str]:
    """How a Docker network named like a cluster network differs from it (empty: fits)."""
    out = []
    if e.segment != w.name:
        out.append(f"joins weft network {e.segment!r}")
    if e.tenant and e.tenant != w.tenant:
        out.append(f"names tenant {e.tenant!r}")
    if not _same_subnet(e.subnet, w.subnet):
        out.append(f"has subnet {e.subnet or 'none'}")
    if w.gateway and e.gateway and e.gateway != w.gateway:
        out.append(f"has gateway {e.gateway}")
    if (w.subnet6 or e.subnet6) and not (w.subnet6 and _same_subnet(e.subnet6, w.subnet6)):
        out.append(f"has IPv6 subnet {e.subnet6 or 'none'}")
    return out


def _same_subnet(a: str | None, b: str) -> bool:
    try:
        return a is not None and ipaddress.ip_network(a, strict=False) == \
            ipaddress.ip_network(b, strict=False)
    except ValueError:
        return False


def stale(wanted: Iterable[Wanted], existing: Iterable[Existing]) -> list[Existing]:
    """The agent's own networks that `plan` would delete or replace: the ones whose
    containers must be counted first (`GET /networks/{id}`)."""
    by_name = {w.name: w for w in wanted}
    return [e for e in existing if e.managed and
            (e.name not in by_name or differences(by_name[e.name], e))]


def plan(wanted: Iterable[Wanted], existing: Iterable[Existing],
         others: Mapping[str, str] | None = None) -> Plan:
    """The changes that make this dockerd hold every wanted network.  ``others``:
    names of dockerd's non-weft networks with their driver (a name taken by a bridge
    network is a conflict, not something to create beside it)."""
    p = Plan()
    wanted = list(wanted)
    names = {w.name for w in wanted}
    have: dict[str, list[Existing]] = {}
    for e in existing:
        have.setdefault(e.name, []).append(e)
    for w in wanted:
        if others and w.name in others:
            p.conflicts[w.name] = (f"Docker network {w.name!r} exists with driver "
                                   f"{others[w.name]!r}, not weft: left alone; remove it "
                                   f"(docker network rm {w.name}) to get the cluster's")
            continue
        found = have.get(w.name, [])
        if not found:
            p.create.append(w)
            continue
        if len(found) > 1:
            p.conflicts[w.name] = (f"{len(found)} Docker networks are named {w.name!r} "
                                   f"({', '.join(e.id[:12] for e in found)}): left alone; "
                                   "remove all but one")
            continue
        e = found[0]
        diff = differences(w, e)
        want = (f"the cluster's network {w.name!r} (tenant {w.tenant!r}, subnet {w.subnet}"
                + (f", gateway {w.gateway}" if w.gateway else "") + ")")
        if not diff:
            (p.ok if e.managed else p.adopt).append(e)
        elif not e.managed:
            p.conflicts[w.name] = (f"Docker network {w.name!r} (made by hand, "
                                   f"{e.id[:12]}) {' and '.join(diff)}, unlike {want}: "
                                   f"left alone; remove it (docker network rm {w.name}) "
                                   "and the agent creates the cluster's")
        elif e.containers == 0:
            p.replace.append((e, w))
        else:
            p.waiting[w.name] = (f"Docker network {w.name!r} {' and '.join(diff)}, unlike "
                                 f"{want}: recreated once no container here uses it "
                                 f"({e.containers if e.containers is not None else 'some'} "
                                 "do)")
    for e in (e for e in (x for group in have.values() for x in group)
              if e.managed and e.name not in names):
        if e.containers == 0:
            p.delete.append(e)
        else:
            p.waiting[e.name] = (f"Docker network {e.name!r} is no longer in the controller: "
                                 f"deleted once no container here uses it "
                                 f"({e.containers if e.containers is not None else 'some'} "
                                 "do)")
    return p
