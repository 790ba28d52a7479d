"""/v1/networks, /v1/tenants/{t}/routes and /v1/hosts/{host}/gateways: the networks
inside tenants, their static routes, and what a host's agent needs to route them
(docs/routing.md section 0).

A network is a row of the tenants table (``Tenant.domain`` names its tenant); a
tenant's name is also its default network's, so every segment is listed here,
the built-in ``default`` too."""
from __future__ import annotations

import ipaddress
from typing import Any

from fastapi import APIRouter, Depends, Path, Query

from controller.model import (GATEWAY6_AUTO, Route, Tenant, Topology, gateway_mac, gateway_port,
                              gateway_port_mac, next_hop_mac)
from controller.rest.deps import CoreDep, writer
from controller.rest.hosts import docker_states
from controller.rest.ports import ports_json
from controller.rest.schemas import NetworkIn, NetworkPatch, RouteIn
from controller.store import NotFound
from controller.store.base import AUTO
from controller.store.codec import route_doc, tenant_doc

router = APIRouter()



def network_json(n: Tenant) -> dict[str, Any]:
    """A network: the stored row with ``tenant`` (its routing domain) in place of
    ``domain``; ``default_network``: the tenant's own row (delete the tenant to delete
    it); ``gateway_mac``: the anycast MAC its gateway (and ``gateway6``, its IPv6
    gateway, stored since schema 12) answers with."""
    doc = {k: v for k, v in tenant_doc(n).items() if k != "domain"}
    return {**doc, "tenant": n.tenant, "default_network": n.domain is None,
            "gateway_mac": gateway_mac(n.vni) if n.gateway else None,
            "builtin": n.name == "default"}


def route_json(r: Route, networks: list[Tenant]) -> dict[str, Any]:
    """A route and ``network``: the network its next hop is in (None once it is in none)."""
    via = ipaddress.ip_address(r.via)
    home = next((n.name for n in networks if n.tenant == r.tenant and n.gateway
                 and any(s and via in ipaddress.ip_network(s) for s in (n.subnet, n.subnet6))),
                None)
    return {**route_doc(r), "network": home}


# -- networks -------------------------------------------------------------------------
@router.get("/v1/networks")
def list_networks(core: CoreDep,
                  tenant: str | None = Query(None, max_length=64,
                                             description="only this tenant's")) -> list[dict]:
    if tenant is not None:
        core.store.tenant(tenant)           # 404 for an unknown tenant, not an empty list
    return [network_json(n) for n in core.store.networks(tenant)]


@router.post("/v1/networks", status_code=201, dependencies=[Depends(writer)])
def create_network(body: NetworkIn, core: CoreDep) -> dict:
    n = core.store.create_network(
        body.name, body.tenant, body.vni, body.vlan, body.subnet, body.description,
        gateway=body.gateway if "gateway" in body.model_fields_set else AUTO,
        egress=body.egress, subnet6=body.subnet6,
        gateway6=body.gateway6 if "gateway6" in body.model_fields_set else GATEWAY6_AUTO)
    core.on_change()
    return network_json(n)


@router.get("/v1/networks/{name}")
def get_network(core: CoreDep, name: str = Path(max_length=64)) -> dict:
    return {**network_json(core.store.network(name)), "ports": ports_json(core, tenant=name),
            "docker": docker_states(core, name)}


@router.patch("/v1/networks/{name}", dependencies=[Depends(writer)])
def update_network(body: NetworkPatch, core: CoreDep, name: str = Path(max_length=64)) -> dict:
    n = core.store.update_network(name, **body.model_dump(exclude_unset=True))
    core.on_change()
    return network_json(n)


@router.delete("/v1/networks/{name}", dependencies=[Depends(writer)])
def delete_network(core: CoreDep, name: str = Path(max_length=64), force: bool = False) -> dict:
    n = core.store.delete_network(name, force)
    core.on_change()
    return {"deleted": name, "bindings_removed": n}


@router.get("/v1/networks/{name}/ports")
def network_ports(core: CoreDep, name: str = Path(max_length=64)) -> list[dict]:
    core.store.network(name)
    return ports_json(core, tenant=name)


# -- static routes ------------------------------------------------------------------------
@router.get("/v1/tenants/{name}/routes")
def list_routes(core: CoreDep, name: str = Path(max_length=64)) -> list[dict]:
    core.store.tenant(name)
    networks = core.store.networks(name)
    return [route_json(r, networks) for r in core.store.routes(name)]


@router.post("/v1/tenants/{name}/routes", status_code=201, dependencies=[Depends(writer)])
def add_route(body: RouteIn, core: CoreDep, name: str = Path(max_length=64)) -> dict:
    r = core.store.add_route(name, body.prefix, body.via, body.mac)
    core.on_change()
    return route_json(r, core.store.networks(name))


@router.delete("/v1/tenants/{name}/routes", dependencies=[Depends(writer)])
def delete_route(core: CoreDep, name: str = Path(max_length=64),
                 prefix: str = Query(max_length=43, description="the route's prefix")) -> dict:
    core.store.delete_route(name, prefix)
    core.on_change()
    return {"tenant": name, "deleted": prefix}


# -- what a host's agent needs ---------------------------------------------------------
def gateways_of(topo: Topology, host: str) -> list[dict[str, Any]]:
    """One entry per tenant with a gateway network and a local (non-uplink) port on
    ``host``: its gateway port ``wx-<id>`` and MACs (derived from the tenant id, its
    VNI), the subnets the host stack routes back into it and those that may leave."""
    local = {topo.tenant(seg).tenant for seg in topo.local_tenants(host)}
    out = []
    for t in topo.routing_tenants:
        if t.name not in local:
            continue
        nets = [n for n in topo.networks_of(t.name) if n.gateway and n.subnet]
        out.append({"tenant": t.name, "id": t.vni, "port": gateway_port(t.vni),
                    "mac": gateway_port_mac(t.vni), "next_hop_mac": next_hop_mac(t.vni),
                    "subnets": [n.subnet for n in nets],
                    "egress_subnets": [n.subnet for n in nets if n.egress],
                    "conntrack_limit": t.conntrack_limit})
    return out


@router.get("/v1/hosts/{host}/gateways")
def host_gateways(core: CoreDep, host: str = Path(max_length=63)) -> dict:
    """For the host's ovs-agent: the tenants' gateway ports it keeps (docs/routing.md)."""
    if host not in {h.name for h in core.cluster.hosts}:
        raise NotFound("host", f"no host {host!r} in the cluster")
    return {"gateways": gateways_of(core.topology(), host)}
