"""/v1/ports: port bindings of hosts' br0 ports to tenants (access or trunk)."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import Field

from controller.core import Core
from controller.model import Binding
from controller.rest.deps import CoreDep, writer
from controller.rest.schemas import MAX_BULK, PortIn, PortSpec, segment
from controller.store import Conflict, NotFound

router = APIRouter()


def binding_json(b: Binding, source: str) -> dict[str, Any]:
    """``tenant``: the segment (a network, or a tenant's default network), as bound."""
    return {"host": b.host, "port": b.port, "tenant": b.tenant, "mode": b.mode, "mac": b.mac,
            "trunk": list(b.trunk), "source": source, "ips": list(b.ips),
            "allowed_address_pairs": [{"ip_address": ip, "mac_address": mac}
                                      for ip, mac in b.allowed_address_pairs]}


def ports_json(core: Core, host: str | None = None,
               tenant: str | None = None) -> list[dict[str, Any]]:
    return [binding_json(sb.binding, sb.source)
            for sb in core.store.bindings(host=host, tenant=tenant)]


def _addresses(body: PortSpec) -> dict[str, Any]:
    """Port security addresses of a request, as ``Store.bind`` takes them."""
    return {"ips": tuple(body.ips), "allowed_address_pairs": tuple(
        (p.ip_address, p.mac_address) for p in body.allowed_address_pairs)}


def _not_reserved(core: Core, host: str, port: str) -> None:
    """The uplink of a VLAN-transport host belongs to the cluster, not to a binding."""
    if core.cluster.transport == "vlan" and any(
            h.name == host and h.uplink == port for h in core.cluster.hosts):
        raise Conflict("port", f"{port} is {host}'s uplink (transport vlan): not bindable")


@contextmanager
def _named_as_given(body: PortSpec) -> Iterator[None]:
    """A request that named its segment ``network`` hears about it as ``network``."""
    try:
        yield
    except NotFound as exc:
        if exc.field == "tenant" and body.network is not None:
            raise NotFound("network", exc.message) from None
        raise


@router.get("/v1/ports")
def list_ports(core: CoreDep, host: str | None = None, tenant: str | None = None,
               network: str | None = Query(None, description="a synonym of tenant")
               ) -> list[dict]:
    return ports_json(core, host, segment(tenant, network))


@router.post("/v1/ports", status_code=201, dependencies=[Depends(writer)])
def bind(body: PortIn, core: CoreDep) -> dict:
    _not_reserved(core, body.host, body.port)
    with _named_as_given(body):
        b = core.store.bind(body.host, body.port, segment(body.tenant, body.network),
                            body.mode, body.mac, trunk=tuple(body.trunk), **_addresses(body))
    core.on_change()
    return binding_json(b, "api")


@router.put("/v1/ports/{host}/{port}", dependencies=[Depends(writer)])
def rebind(host: str, port: str, body: PortSpec, core: CoreDep) -> dict:
    """Change a bound port in place (e.g. access <-> trunk): only its flows change."""
    _not_reserved(core, host, port)
    with _named_as_given(body):
        b = core.store.bind(host, port, segment(body.tenant, body.network), body.mode,
                            body.mac, trunk=tuple(body.trunk), replace=True, **_addresses(body))
    core.on_change()
    return binding_json(b, "api")


@router.post("/v1/ports/bulk", status_code=201, dependencies=[Depends(writer)])
def bind_many(body: Annotated[list[PortIn], Field(max_length=MAX_BULK)], core: CoreDep) -> dict:
    """Bind many ports in one transaction: all or nothing."""
    for b in body:
        _not_reserved(core, b.host, b.port)
    n = core.store.bind_many([{**b.model_dump(), "tenant": segment(b.tenant, b.network, f"{i}.")}
                              for i, b in enumerate(body)])
    core.on_change()
    return {"bound": n}


@router.delete("/v1/ports/{host}/{port}", dependencies=[Depends(writer)])
def unbind(host: str, port: str, core: CoreDep) -> dict:
    core.store.unbind(host, port)
    core.on_change()
    return {"unbound": f"{host}/{port}"}
