"""The transaction interface a backend gives the shared store logic (``ModelTx``).

A ModelTx holds the model's facts and its mutations inside one transaction (SQLite:
BEGIN IMMEDIATE; etcd: a snapshot committed with compare-and-swap).  It decides
nothing: the checks live in ``rules`` and ``base``.
"""
from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass

from cluster.ipam import Claim
from cluster.names import NameRecord
from controller.model import AclRule, Binding, LinkEndpoint, QosRule, RateLimit, Route, Tenant
from controller.opflows import OperatorFlow


BINDING_SOURCES = ("api", "agent")     # who made a binding: REST/weftctl, or ovs-agent attach


def route_order(r: Route) -> tuple[str, int, int]:
    """Routes listed by tenant, then address, then prefix length (both backends alike)."""
    net = r.network
    return r.tenant, int(net.network_address), net.prefixlen


def claim_order(c: Claim) -> tuple[str, int, int]:
    """IPAM claims listed by network, then address, then size (both backends alike)."""
    return c.network, int(c.net.network_address), c.net.prefixlen


def new_epoch() -> str:
    """A fresh store epoch: 128 random bits as 32 hex digits."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class StoredBinding:
    binding: Binding
    source: str             # one of BINDING_SOURCES


class ModelTx(ABC):
    """What a backend offers the shared logic: the model's facts and its mutations, inside
    one transaction (SQLite: BEGIN IMMEDIATE; etcd: a snapshot committed with
    compare-and-swap).  No checks live here: the rules decide, the backend stores."""

    # -- facts ------------------------------------------------------------------
    @abstractmethod
    def tenants(self) -> list[Tenant]:
        """Every tenant and network row (``Tenant.domain``), the built-in default first,
        then by name."""

    def tenant(self, name: str) -> Tenant | None:
        return next((t for t in self.tenants() if t.name == name), None)

    @abstractmethod
    def routes(self, tenant: str | None = None) -> list[Route]:
        """Static routes (of ``tenant``), in ``route_order``."""

    @abstractmethod
    def bindings(self, host: str | None = None) -> list[StoredBinding]:
        """Bindings ordered by (host, port), with their port security addresses."""

    @abstractmethod
    def binding(self, host: str, port: str) -> StoredBinding | None: ...

    def count_bindings(self) -> int:
        return len(self.bindings())

    def mac_taken(self, tenant: str | None, mac: str, host: str, port: str) -> bool:
        """Another port of ``tenant`` is bound with ``mac`` (None never matches, as in SQL)."""
        return tenant is not None and any(
            sb.binding.tenant == tenant and sb.binding.mac == mac and
            (sb.binding.host, sb.binding.port) != (host, port) for sb in self.bindings())

    @abstractmethod
    def link_endpoints(self) -> list[LinkEndpoint]:
        """docker0 endpoints of every host, by (host, mac)."""

    @abstractmethod
    def container_names(self) -> dict[str, tuple[NameRecord, ...]]:
        """Host -> the names of its containers on weft networks, as its agent reported."""

    @abstractmethod
    def limits(self) -> list[RateLimit]:
        """Rate limits by id."""

    @abstractmethod
    def rules(self) -> list[QosRule]:
        """QoS rules by tenant, then priority, highest first."""

    def qos(self, qos_id: int) -> RateLimit | QosRule | None:
        return next((x for x in all_qos(self) if x.id == qos_id), None)

    @abstractmethod
    def acls(self, tenant: str | None = None) -> list[AclRule]:
        """ACL rules by tenant, then priority, highest first."""

    @abstractmethod
    def acl_policies(self) -> dict[str, str]:
        """Tenant -> its stored default ("allow"/"deny"); tenants never set are absent."""

    @abstractmethod
    def operator_flows(self, dpid: int | None = None) -> list[OperatorFlow]:
        """Operator flows by id."""

    @abstractmethod
    def epoch(self) -> str: ...

    @abstractmethod
    def claims(self, network: str | None = None) -> list[Claim]:
        """IPAM claims (of ``network``), by network, then address."""

    # -- mutations (already decided by StoreBase) ----------------------------------------
    @abstractmethod
    def put_tenant(self, t: Tenant) -> None: ...

    @abstractmethod
    def remove_tenant(self, name: str) -> None: ...

    @abstractmethod
    def put_route(self, r: Route) -> None: ...

    @abstractmethod
    def remove_route(self, tenant: str, prefix: str) -> None: ...

    @abstractmethod
    def put_binding(self, sb: StoredBinding) -> None:
        """Create or replace a binding together with its port security addresses."""

    @abstractmethod
    def remove_binding(self, host: str, port: str) -> None: ...

    @abstractmethod
    def set_link_endpoints(self, host: str, endpoints: list[LinkEndpoint]) -> None:
        """Make ``host``'s docker0 endpoints exactly ``endpoints`` (MACs unique)."""

    @abstractmethod
    def set_container_names(self, host: str, records: tuple[NameRecord, ...]) -> None:
        """Make ``host``'s container names exactly ``records`` (none: forget the host)."""

    @abstractmethod
    def put_qos(self, x: RateLimit | QosRule) -> None: ...

    @abstractmethod
    def remove_qos(self, qos_id: int) -> None: ...

    @abstractmethod
    def new_acl_id(self) -> int:
        """An ACL rule id never handed out before in this store (ids are in cookies)."""

    @abstractmethod
    def put_acl(self, r: AclRule) -> None: ...

    @abstractmethod
    def remove_acl(self, rule_id: int) -> None: ...

    @abstractmethod
    def set_acl_policy(self, tenant: str, default: str | None) -> None:
        """Store a tenant's default; None forgets it."""

    @abstractmethod
    def new_operator_flow_id(self) -> int:
        """An operator flow id never handed out before in this store."""

    @abstractmethod
    def put_operator_flow(self, f: OperatorFlow) -> None: ...

    @abstractmethod
    def remove_operator_flow(self, flow_id: int) -> None: ...

    @abstractmethod
    def set_epoch(self, epoch: str) -> None: ...

    @abstractmethod
    def put_claim(self, c: Claim) -> None: ...

    @abstractmethod
    def remove_claim(self, network: str, cidr: str) -> None: ...

    @abstractmethod
    def reserve_ids(self, next_acl: int, next_operator_flow: int) -> None:
        """Hand out no ACL or operator flow id below these again (a restore)."""


def all_qos(tx: ModelTx) -> list[RateLimit | QosRule]:
    """Rate limits and QoS rules: they share the meter ids."""
    out: list[RateLimit | QosRule] = [*tx.limits()]
    return out + tx.rules()
