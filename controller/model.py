"""The cluster as the controller sees it: tenants, port bindings, hosts.

Plain frozen values, validated on construction, so the pipeline can trust them
and two snapshots can be compared with ``==`` (diff old vs new config).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ovs_agent.hostsfile import DOCKER_LINK_PORT

__all__ = [
    "ACCESS", "TRUNK", "MAX_VNI", "DOCKER_LINK_PORT", "DEFAULT_TENANT",
    "Tenant", "Binding", "Topology",
]

ACCESS = "access"
TRUNK = "trunk"
MAX_VNI = (1 << 24) - 1          # VXLAN VNIs are 24 bits; metadata holds them
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


@dataclass(frozen=True)
class Tenant:
    """An isolated L2 segment spanning hosts; the VNI is its identity on the wire."""

    name: str
    vni: int
    vlan: int | None = None          # 802.1Q id used on trunk ports
    subnet: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("tenant name must not be empty")
        if not 1 <= self.vni <= MAX_VNI:
            raise ValueError(f"tenant {self.name!r}: vni {self.vni} not in 1..{MAX_VNI}")
        if self.vlan is not None and not 1 <= self.vlan <= 4094:
            raise ValueError(f"tenant {self.name!r}: vlan {self.vlan} not in 1..4094")


DEFAULT_TENANT = Tenant(
    "default", vni=1,
    description="built-in: every host's docker0 link; stock docker run containers share it",
)


@dataclass(frozen=True)
class Binding:
    """A br0 port on one host given to one tenant (access) or several (trunk).

    ``access``: ``tenant`` is required and its frames are untagged; ``mac`` is a
    known endpoint behind the port.  ``trunk``: ``trunk`` names the tenants
    carried tagged with their ``Tenant.vlan``; ``tenant`` is the optional native
    tenant (untagged frames), not also in ``trunk``; no ``mac``.
    """

    host: str
    port: str
    tenant: str | None
    mode: str = ACCESS
    mac: str | None = None
    trunk: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = f"binding {self.host}/{self.port}"
        if self.mode not in (ACCESS, TRUNK):
            raise ValueError(f"{where}: mode {self.mode!r} not access|trunk")
        if isinstance(self.trunk, str):
            raise ValueError(f"{where}: trunk must be a list of tenant names, "
                             f"not the string {self.trunk!r}")
        trunk = tuple(self.trunk)
        object.__setattr__(self, "trunk", trunk)
        if self.tenant is not None and (not isinstance(self.tenant, str) or not self.tenant):
            raise ValueError(f"{where}: bad tenant {self.tenant!r}")
        if any(not isinstance(t, str) or not t for t in trunk):
            raise ValueError(f"{where}: bad tenant name in trunk {trunk!r}")
        if self.mode == ACCESS:
            if self.tenant is None:
                raise ValueError(f"{where}: an access port needs a tenant")
            if trunk:
                raise ValueError(f"{where}: an access port carries no trunk tenants")
        else:
            if self.mac is not None:
                raise ValueError(f"{where}: a trunk port has no mac")
            _unique(list(trunk), f"tenant in trunk of {self.host}/{self.port}")
            if self.tenant is not None and self.tenant in trunk:
                raise ValueError(f"{where}: native tenant {self.tenant!r} is also in the trunk")
            if self.tenant is None and not trunk:
                raise ValueError(f"{where}: a trunk port carries at least one tenant")
        if self.mac is not None:
            mac = self.mac.lower()
            if not _MAC_RE.match(mac):
                raise ValueError(f"{where}: bad mac {self.mac!r}")
            if int(mac[:2], 16) & 1:
                raise ValueError(f"{where}: mac {mac} is multicast")
            object.__setattr__(self, "mac", mac)  # normalise: flows compare lowercase MACs

    @property
    def tenants(self) -> tuple[str, ...]:
        """Every tenant the port carries: the native/access tenant first, then the trunk."""
        native = () if self.tenant is None else (self.tenant,)
        return (*native, *self.trunk)


@dataclass(frozen=True)
class Topology:
    """Everything the pipeline needs about the cluster, for every switch at once.

    The default tenant is always present (added if absent) and owns the docker0
    link port of every host in ``hosts``; that binding is implicit, not stored.
    """

    tenants: tuple[Tenant, ...] = ()
    bindings: tuple[Binding, ...] = ()
    hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = [t.name for t in self.all_tenants]
        vnis = [t.vni for t in self.all_tenants]
        _unique(names, "tenant name")
        _unique(vnis, "tenant vni")
        _unique([t.vlan for t in self.all_tenants if t.vlan is not None], "tenant vlan")
        by_name = {t.name: t for t in self.all_tenants}
        for b in self.bindings:
            for name in b.tenants:
                if name not in by_name:
                    raise ValueError(f"binding {b.host}/{b.port}: unknown tenant {name!r}")
            for name in b.trunk:
                if by_name[name].vlan is None:
                    raise ValueError(f"binding {b.host}/{b.port}: tenant {name!r} has no vlan "
                                     "to carry it on a trunk")
            if b.port == DOCKER_LINK_PORT:
                raise ValueError(f"binding {b.host}/{b.port}: the docker0 link "
                                 "belongs to the default tenant")
        _unique([(b.host, b.port) for b in self.bindings], "binding of port")
        _unique([(b.tenant, b.mac) for b in self.bindings if b.mac], "mac in tenant")

    @property
    def all_tenants(self) -> tuple[Tenant, ...]:
        """``tenants`` plus the built-in default tenant when not listed."""
        if any(t.name == DEFAULT_TENANT.name for t in self.tenants):
            return self.tenants
        return (DEFAULT_TENANT, *self.tenants)

    def tenant(self, name: str) -> Tenant:
        for t in self.all_tenants:
            if t.name == name:
                return t
        raise KeyError(name)

    def bindings_on(self, host: str) -> tuple[Binding, ...]:
        """Stored bindings of ``host`` plus its implicit docker0 link binding."""
        stored = tuple(b for b in self.bindings if b.host == host)
        if host not in self.hosts:
            return stored
        return (Binding(host, DOCKER_LINK_PORT, DEFAULT_TENANT.name), *stored)

    def tenants_on(self, host: str) -> frozenset[str]:
        """Names of the tenants carried by any port of ``host`` (access, native or trunk)."""
        return frozenset(name for b in self.bindings_on(host) for name in b.tenants)


def _unique(values: list, what: str) -> None:
    seen = set()
    for v in values:
        if v in seen:
            raise ValueError(f"duplicate {what}: {v!r}")
        seen.add(v)
