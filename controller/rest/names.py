"""/v1/hosts/{host}/names: containers' names across hosts (docs/dns.md).

Each agent reports the names of its dockerd's containers on weft networks (PUT, the whole
list, replacing the last); each agent asks for the records its resolver serves (GET):
those of the tenants with a gateway port on its host, from every host that is a member
now (a host that leaves takes its names with it), grouped by tenant id, the key its
resolver knows a query's tenant by (the ``wx-<id>`` port it came in on; 0: docker0, the
built-in default tenant, whose containers every host has).
"""
from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import Field

from cluster.names import MAX_NAMES_PER_HOST, NameRecord
from controller.model import DEFAULT_TENANT, Topology
from controller.rest.deps import CoreDep, writer
from controller.rest.networks import gateways_of
from controller.rest.schemas import ContainerName
from controller.store import Invalid, NotFound

router = APIRouter()


def _member(core: Any, host: str) -> None:
    if host not in {h.name for h in core.cluster.hosts}:
        raise NotFound("host", f"no host {host!r} in the cluster")


@router.put("/v1/hosts/{host}/names", dependencies=[Depends(writer)])
def put_names(body: Annotated[list[ContainerName], Field(max_length=MAX_NAMES_PER_HOST)],
              core: CoreDep, host: str = Path(max_length=63)) -> dict:
    """The host's containers' names on weft networks (replaces the previous list)."""
    _member(core, host)
    records = []
    for i, n in enumerate(body):
        try:
            records.append(NameRecord(n.network, n.name.lower(), n.ip, n.container, n.primary))
        except ValueError as exc:
            raise Invalid(f"{i}", str(exc)) from None
    changed = core.store.replace_container_names(host, records)
    if changed:
        # no flow depends on names, but the write moved the store's version on: the
        # switches are brought to it (a sync that finds nothing to send), else /v1/health
        # and /v1/switches call them out of sync until the next model change
        core.on_change()
    return {"host": host, "names": len(set(records)), "changed": changed}


def names_for(topo: Topology, host: str, reported: dict[str, tuple[NameRecord, ...]],
              members: set[str], docker_subnet: str | None = None) -> list[dict[str, Any]]:
    """Per tenant with a gateway on ``host``: its subnets and its containers' records
    ([name, ip, primary]) from member hosts, on networks of that tenant only.  First,
    id 0: the default tenant, docker0's containers of every member host (``docker_subnet``:
    the cluster's docker0 range, its reverse names)."""
    out = [{"tenant": DEFAULT_TENANT.name, "id": 0,
            "subnets": [docker_subnet] if docker_subnet else [],
            "records": [list(r) for r in sorted(
                {(r.name, r.ip, r.primary) for h, recs in reported.items() if h in members
                 for r in recs if r.network == DEFAULT_TENANT.name})]}]
    for gw in gateways_of(topo, host):
        networks = {n.name for n in topo.networks_of(gw["tenant"])}
        records = sorted({(r.name, r.ip, r.primary) for h, recs in reported.items()
                          if h in members for r in recs if r.network in networks})
        out.append({"tenant": gw["tenant"], "id": gw["id"], "subnets": gw["subnets"],
                    "records": [list(r) for r in records]})
    return out


@router.get("/v1/hosts/{host}/names")
def get_names(core: CoreDep, host: str = Path(max_length=63)) -> dict:
    """For the host's resolver: the names its tenants' containers may ask for."""
    _member(core, host)
    members = {h.name for h in core.cluster.hosts}
    return {"tenants": names_for(core.topology(), host, core.store.container_names(), members,
                                 core.cluster.cluster_subnet)}
