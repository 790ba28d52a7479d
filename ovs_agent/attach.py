"""Plug a container straight into br0 (like ovs-docker) and record its tenant.

The tenant, MAC, addresses and container live in the interface's external_ids,
so the controller can bind the port without a REST call and the agent's
reconcile loop knows these ports are not tunnels to remove.  A port is bound
with its MAC and addresses (port security: it may send only from them) unless
it was plugged with port security off.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ovs_agent.desired import OWNER, OWNER_KEY, ROLE_KEY, TENANT_KEY
from ovs_agent.hostnet import ensure_veth, ip, link_exists
from cluster.hostsfile import BRIDGE
from ovs_agent.ovsdb import refused_afxdp

R = TypeVar("R")

CONTAINER_KEY = "weft-container"
MAC_KEY = "attached-mac"
IPS_KEY = "attached-ips"                # IPv4 addresses, comma-separated: the port's only sources
PORT_SECURITY_KEY = "weft-port-security"    # "on" (the default) or "off"
Attachment = dict[str, Any]             # one container port, as the controller is told of it


def port_name(netns: str, ifname: str) -> str:
    """Host-side veth name: stable for (netns, ifname), 15 chars at most."""
    return "wc" + hashlib.sha1(f"{netns}/{ifname}".encode()).hexdigest()[:11]


def _in_ns(netns: str, *args: str) -> str:
    proc = subprocess.run(["ip", "netns", "exec", netns, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} in {netns}: {proc.stderr.strip()}")
    return proc.stdout


def attach(api, netns: str, tenant: str, mtu: int, ip_cidr: str | None = None,
           mac: str | None = None, ifname: str = "eth0", port_type: str = "",
           tx_off: bool = True, port_security: bool = True) -> str:
    """Create the veth, configure the container side, add the host side to br0.

    `tx_off`: TX checksum offload off on both ends (netdev datapath only, see
    hostnet.needs_tx_checksum_off).  `ip_cidr`'s address is recorded as the port's
    only source address unless `port_security` is off."""
    ips = (ip_address(ip_cidr),) if ip_cidr else ()
    if subprocess.run(["ip", "netns", "exec", netns, "true"], capture_output=True).returncode:
        raise ValueError(f"no network namespace {netns!r}")
    name = port_name(netns, ifname)
    ensure_veth(name, ifname, mtu, peer_netns=netns, tx_off=tx_off)
    if mac:
        _in_ns(netns, "ip", "link", "set", ifname, "address", mac)
    if ip_cidr:
        _in_ns(netns, "ip", "addr", "replace", ip_cidr, "dev", ifname)
    _in_ns(netns, "ip", "link", "set", ifname, "up")
    actual_mac = _in_ns(netns, "cat", f"/sys/class/net/{ifname}/address").strip()
    add_container_port(api, name, tenant, netns, actual_mac, port_type, ips=ips,
                       port_security=port_security)
    return name


def ip_address(ip_cidr: str) -> str:
    """The address of "10.0.0.5/24" (or of "10.0.0.5"), checked: IPv4 only."""
    try:
        return str(ipaddress.IPv4Interface(ip_cidr.strip()).ip)
    except ValueError:
        raise ValueError(f"{ip_cidr!r} is not an IPv4 address[/prefix]") from None


def add_container_port(api, name: str, tenant: str, container: str, mac: str,
                       port_type: str = "", extra: dict[str, str] | None = None,
                       ips: tuple[str, ...] = (), port_security: bool = True) -> None:
    """Put the host end of a container's veth on br0, labelled for the agent's report.

    Both address keys are always written, so a port re-plugged without an address
    or with port security back on keeps no stale value."""
    ext = container_ext(tenant, container, mac, extra, ips, port_security)
    with api.transaction(check_error=True) as txn:
        txn.add(api.add_port(BRIDGE, name, may_exist=True))
        txn.add(api.db_set("Interface", name, ("external_ids", ext), ("type", port_type)))
    if port_type.startswith("afxdp"):
        wait_opened(api, name)          # vswitchd tries to open it: ofport or error
        if refused_afxdp(api, {name}):
            api.db_set("Interface", name, ("type", "")).execute(check_error=True)


def container_ext(tenant: str, container: str, mac: str, extra: dict[str, str] | None = None,
                  ips: tuple[str, ...] = (), port_security: bool = True) -> dict[str, str]:
    """The external_ids of a container port (what the agent reports, the controller binds)."""
    return {OWNER_KEY: OWNER, ROLE_KEY: "container", TENANT_KEY: tenant,
            CONTAINER_KEY: container, MAC_KEY: mac, IPS_KEY: ",".join(ips),
            PORT_SECURITY_KEY: "on" if port_security else "off", **(extra or {})}


def label_container_port(api, name: str, tenant: str, container: str, mac: str,
                         extra: dict[str, str] | None = None, ips: tuple[str, ...] = (),
                         port_security: bool = True) -> None:
    """Turn a port already on br0 (a pool port, ovs_agent.portpool) into a container
    port: its external_ids replaced by a container port's, its type left as opened."""
    ext = container_ext(tenant, container, mac, extra, ips, port_security)
    api.db_set("Interface", name, ("external_ids", ext)).execute(check_error=True)


def wait_opened(api, name: str, timeout: float = 1.0) -> None:
    """Until vswitchd has tried the port (an ofport or an error), at most `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = api.db_find("Interface", ("name", "=", name),
                           columns=["ofport", "error"]).execute(check_error=True)
        if rows and (rows[0]["ofport"] or rows[0]["error"]):
            return
        time.sleep(0.02)


def remove_container_port(api, name: str) -> None:
    """Take a container's port off br0 and delete its veth; fine if already gone."""
    with api.transaction(check_error=True) as txn:
        txn.add(api.del_port(name, bridge=BRIDGE, if_exists=True))
    if link_exists(name):
        ip("link", "del", name, check=False)


def detach(api, netns: str, ifname: str = "eth0") -> str:
    """Remove the container's port from br0 and delete the veth."""
    name = port_name(netns, ifname)
    remove_container_port(api, name)
    return name


def attachments(api) -> list[Attachment]:
    """Containers plugged into br0 on this host (`attachment_of` each)."""
    out = []
    for row in api.db_list("Interface", columns=["name", "external_ids"]).execute(
            check_error=True):
        ext = row["external_ids"]
        if ext.get(OWNER_KEY) == OWNER and ext.get(ROLE_KEY) == "container":
            out.append(attachment_of(row["name"], ext))
    return sorted(out, key=lambda a: a["port"])


def attachment_of(port: str, ext: dict[str, str]) -> Attachment:
    """A container port as the controller binds it: port, tenant, mac, container, its
    addresses (`ips`) and whether port security is on.  Ports plugged before addresses
    were recorded have none (bound with the MAC only, as then)."""
    return {"port": port, "tenant": ext.get(TENANT_KEY, ""), "mac": ext.get(MAC_KEY, ""),
            "container": ext.get(CONTAINER_KEY, ""),
            "ips": [ip for ip in ext.get(IPS_KEY, "").split(",") if ip],
            "port_security": ext.get(PORT_SECURITY_KEY, "on") != "off"}


def api_headers() -> dict[str, str]:
    """The controller API's bearer token, from WEFT_API_TOKEN (as the agent has it)."""
    token = os.environ.get("WEFT_API_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _identity(body: object) -> tuple[str | None, str | None]:
    body = body if isinstance(body, dict) else {}
    return body.get("instance"), body.get("epoch")


def report(api_url: str, host: str, current: list[Attachment],
           timeout: float = 3) -> tuple[str | None, str | None]:
    """PUT this host's attachments to the controller, which binds them; raises httpx.HTTPError.

    Returns who acknowledged them: (controller instance, store epoch).
    """
    import httpx    # here, not at import: 32 agents starting on one small machine all pay it
    resp = httpx.put(f"{api_url.rstrip('/')}/v1/hosts/{host}/attachments", json=current,
                     timeout=timeout, headers=api_headers())
    resp.raise_for_status()
    return _identity(resp.json())


def controller_identity(api_url: str, timeout: float = 2) -> tuple[str | None, str | None] | None:
    """(instance, epoch) from the open GET /v1/health (503 bodies carry them too), or None
    when the controller does not answer."""
    import httpx
    try:
        resp = httpx.get(f"{api_url.rstrip('/')}/v1/health", timeout=timeout)
        return _identity(resp.json())
    except (httpx.HTTPError, ValueError):
        return None


def register(api_url: str, host: dict[str, object], ttl: float, timeout: float = 3) -> None:
    """Create or renew this host's lease with the controller; raises httpx.HTTPError."""
    import httpx
    resp = httpx.post(f"{api_url.rstrip('/')}/v1/hosts/register", json={**host, "ttl": ttl},
                      timeout=timeout, headers=api_headers())
    resp.raise_for_status()


def members(api_url: str, timeout: float = 3) -> list[dict[str, object]]:
    """The controller's member list (GET /v1/hosts); raises httpx.HTTPError."""
    import httpx
    resp = httpx.get(f"{api_url.rstrip('/')}/v1/hosts", timeout=timeout, headers=api_headers())
    resp.raise_for_status()
    return resp.json()


def first_answer(urls: tuple[str, ...], call: Callable[[str], R], prefer: int = 0
                 ) -> tuple[int, R]:
    """``call(url)`` on the controller instances in turn, starting at ``prefer``, until
    one answers; returns that one's index and what it returned.  Unreachable or 5xx: the
    next one, so losing any instance (the first included) stops nothing.  A 4xx is an
    answer (the request is wrong everywhere) and is raised."""
    import httpx    # lazily, as in report()
    last: httpx.HTTPError | None = None
    for k in range(len(urls)):
        i = (prefer + k) % len(urls)
        try:
            return i, call(urls[i])
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code < 500:
                raise
            last = exc
        except httpx.HTTPError as exc:
            last = exc
    raise last or httpx.TransportError("no controller API URL")


def report_any(urls: tuple[str, ...], host: str, current: list[Attachment],
               prefer: int = 0, timeout: float = 3
               ) -> tuple[int, tuple[str | None, str | None]]:
    """Report to the first controller instance that takes it (`first_answer`); returns
    the index of the one that did and its identity (as `report`)."""
    return first_answer(urls, lambda url: report(url, host, current, timeout), prefer)
