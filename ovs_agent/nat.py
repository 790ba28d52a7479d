"""The host's NAT for tenants' egress and published ports: nftables `table ip weft-nat`.

Pure: builds nft scripts from data; the agent (``ovs_agent.gateway``) and the Docker
plugin apply them. Design: docs/routing.md sections 3 and 4.
"""
from __future__ import annotations

from dataclasses import dataclass

TABLE = "weft-nat"


@dataclass(frozen=True)
class Published:
    """One published port (``docker run -p HOST_PORT:PORT``) of a container on this host.

    ``host_ip`` None: every address of the host. ``tenant_id``: the VNI of the
    container's tenant (its gateway port is ``wx-<tenant_id>``)."""

    endpoint: str
    proto: str              # "tcp" | "udp"
    host_port: int
    container_ip: str
    container_port: int
    tenant_id: int
    host_ip: str | None = None
    container: str = ""     # the container's name or id, for conflict messages
