"""/v1/hosts: the members (hosts.yaml's and registered ones), registration, and the
containers each host's agent attached."""
from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import Field

from controller.rest.deps import CoreDep, writer
from controller.rest.qos import queue_support
from controller.rest.schemas import MAX_BULK, Attachment, DockerNetworksIn, RegisterIn, segment
from controller.store import Invalid, NotFound
from cluster.hostsfile import datapath_id, dpid_str

router = APIRouter()


@router.put("/v1/hosts/{host}/attachments", dependencies=[Depends(writer)])
def attachments(body: Annotated[list[Attachment], Field(max_length=MAX_BULK)], core: CoreDep,
                host: str = Path(max_length=63)) -> dict:
    """Containers the host's ovs-agent plugged into br0 (replaces the previous list)."""
    if host not in {h.name for h in core.cluster.hosts}:
        raise NotFound("host", f"no host {host!r} in hosts.yaml")
    items = []
    for i, a in enumerate(body):
        name = segment(a.tenant, a.network, f"{i}.")
        if name is None:
            raise Invalid(f"{i}.tenant", "Field required (tenant or network)")
        items.append({**a.model_dump(exclude={"network"}), "tenant": name})
    before = core.store.version
    n = core.store.replace_agent_bindings(host, items)
    if core.store.version != before:
        core.on_change()
    return {"host": host, "attachments": n, **core.identity()}


@router.get("/v1/hosts")
def hosts(core: CoreDep) -> list[dict]:
    """Members: hosts.yaml's (as it is now) and registered ones with their lease."""
    out = []
    leases = core.members.registered()
    for h in core.cluster.hosts:
        sw = core.switches.get(datapath_id(h))
        out.append({"name": h.name, "underlay_ip": h.underlay_ip,
                    "docker_subnet": h.docker_subnet, "tunnel_type": h.tunnel_type,
                    "datapath_type": h.datapath_type, "dpid": dpid_str(datapath_id(h)),
                    "connected": bool(sw and sw.connected), "queues": queue_support(h),
                    "source": "registered" if h.name in leases else "hosts.yaml",
                    "lease_expires_in": leases.get(h.name)})
    return out


@router.post("/v1/hosts/register", dependencies=[Depends(writer)])
def register_host(body: RegisterIn, core: CoreDep) -> dict:
    """Join (or renew the lease): the agent's heartbeat.  Refused when hosts.yaml does
    not say `membership: register` or lists this name (the file is the source of truth)."""
    return core.members.register(body.model_dump(exclude={"ttl"}), body.ttl)


def _known(core: Any, host: str) -> None:
    if host not in {h.name for h in core.cluster.hosts}:
        raise NotFound("host", f"no host {host!r} in the cluster")


@router.put("/v1/hosts/{host}/docker-networks", dependencies=[Depends(writer)])
def report_docker_networks(body: DockerNetworksIn, core: CoreDep,
                           host: str = Path(max_length=63)) -> dict:
    """The host's agent: what it did with the cluster's networks in its dockerd (replaces
    its last report; kept in this controller instance's memory)."""
    _known(core, host)
    core.docker_networks[host] = {**body.model_dump(), "reported": time.time()}
    return {"host": host}


@router.get("/v1/hosts/{host}/docker-networks")
def docker_networks(core: CoreDep, host: str = Path(max_length=63)) -> dict:
    """The host's last report (``reported``: its time, null when none arrived here)."""
    _known(core, host)
    return {"host": host, **(core.docker_networks.get(host) or {
        **DockerNetworksIn().model_dump(), "reported": None})}


def docker_states(core: Any, name: str) -> list[dict[str, Any]]:
    """Per host that reported: the Docker network ``name``'s state there (created,
    adopted, conflict, waiting, error, or missing) and why."""
    out = []
    for host, r in sorted(core.docker_networks.items()):
        for state, key in (("conflict", "conflicts"), ("waiting", "waiting"),
                           ("error", "errors")):
            if name in r.get(key, {}):
                out.append({"host": host, "state": state, "reason": r[key][name]})
                break
        else:
            state = "created" if name in r.get("created", ()) else \
                "adopted" if name in r.get("adopted", ()) else "missing"
            out.append({"host": host, "state": state, "reason": None})
    return out
