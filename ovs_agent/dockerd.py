"""What this host's dockerd knows, asked over its API socket.

The plugin asks it for network names; the agent asks it which containers sit on
docker0 (MAC and address, as `docker inspect` shows them), so the controller can
pin their MACs to this host's docker0 link: no other host learns them elsewhere,
and frames from their MACs entering anywhere else are dropped.  Inside docker0
(a Linux bridge) weft sees nothing and enforces nothing.
"""
from __future__ import annotations

import ipaddress
import logging
import re
from typing import Any

from cluster.hostsfile import DOCKER_LINK_PORT

LOG = logging.getLogger("ovs-agent")
DEFAULT_DOCKER = "unix:///var/run/docker.sock"
DOCKER0 = "docker0"
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
DEFAULT_TENANT = "default"      # the docker0 link's tenant (controller.model.DEFAULT_TENANT)
_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


class DockerUnavailable(Exception):
    """dockerd could not be asked (no socket, not answering, an error status)."""


def socket_of(docker_host: str) -> str:
    """The socket path of a ``unix://PATH`` docker host (what `DOCKER_HOST` holds)."""
    if not docker_host.startswith("unix://"):
        raise ValueError(f"{docker_host!r}: only unix:// docker hosts are supported")
    return docker_host.removeprefix("unix://")


def get(docker_host: str, path: str, timeout: float = 3) -> Any:
    """GET ``path`` of dockerd's API; the JSON body, or None for 404.
    Raises DockerUnavailable."""
    return call(docker_host, "GET", path, timeout=timeout)


def call(docker_host: str, method: str, path: str, body: Any = None,
         timeout: float = 3) -> Any:
    """``method`` ``path`` of dockerd's API (JSON ``body``); the JSON answer (None when
    it has none, and for 404).  Another error status raises DockerUnavailable, with
    dockerd's message."""
    import httpx    # lazily: not on the agent's start-up path
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=socket_of(docker_host)),
                          timeout=timeout) as client:
            resp = client.request(method, f"http://docker{path}", json=body)
    except httpx.HTTPError as exc:
        raise DockerUnavailable(f"{docker_host}: {exc}") from None
    if resp.status_code == 404:
        return None
    if resp.status_code >= 300:
        try:
            why = str(resp.json().get("message") or resp.text)
        except (ValueError, AttributeError):
            why = resp.text
        raise DockerUnavailable(f"{docker_host}: {method} {path}: {resp.status_code} "
                                f"{why[:300]}")
    if not resp.content:
        return None
    try:
        return resp.json()
    except ValueError:
        raise DockerUnavailable(f"{docker_host}: {method} {path}: not JSON") from None


def docker0_endpoints(network: Any) -> list[dict[str, Any]]:
    """The containers of dockerd's ``bridge`` network (``GET /networks/bridge``) as
    attachments behind the docker0 link: port, tenant default, mac, container, ips.

    Nothing when that network is not on docker0 (``--bridge`` elsewhere): weft's link
    is to docker0 only.  Entries without a usable unicast MAC are left out."""
    if not isinstance(network, dict):
        return []
    options = network.get("Options") or {}
    if options.get(BRIDGE_NAME_OPTION, DOCKER0) != DOCKER0:
        return []
    out = []
    for cid, c in sorted((network.get("Containers") or {}).items()):
        if not isinstance(c, dict):
            continue
        mac = str(c.get("MacAddress") or "").lower()
        if not _MAC.fullmatch(mac) or int(mac[:2], 16) & 1:
            continue
        ips = []
        if c.get("IPv4Address"):
            try:
                ips.append(str(ipaddress.IPv4Interface(c["IPv4Address"]).ip))
            except ValueError:
                pass
        out.append({"port": DOCKER_LINK_PORT, "tenant": DEFAULT_TENANT, "mac": mac,
                    "container": str(cid)[:64], "ips": ips, "port_security": True})
    return out


def ask_docker0(docker_host: str) -> list[dict[str, Any]]:
    """This host's docker0 containers (`docker0_endpoints`); raises DockerUnavailable."""
    return docker0_endpoints(get(docker_host, "/networks/bridge"))
