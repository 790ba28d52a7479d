"""`ovs-agent docker-plugin`: the weft network plugin's I/O shell.

HTTP on a unix socket in /run/docker/plugins (where dockerd discovers plugins
by name), each call handed to the pure `dockerplugin.Plugin`.  The dataplane
below keeps the plugin's state in br0's external_ids over the agent's own
ovsdbapp connection helpers, plugs veths into br0 exactly as `ovs-agent
attach` does.  The host's ovs-agent sees the labelled port in OVSDB at once
and reports it to the controller, which binds it.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socketserver
import sys
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx

from cluster.hostsfile import BRIDGE, Cluster, HostsFileError, load, tunnel_mtu
from ovs_agent import attach, dockerd, hostnet, ovsdb
from ovs_agent.agent import pick_host
from ovs_agent.desired import device_port_type
from ovs_agent.dockerplugin import EP_KEY, NET_KEY, POOL_KEY, Plugin

LOG = logging.getLogger("weft-plugin")
DEFAULT_SOCKET = Path("/run/docker/plugins/weft.sock")
STATE_PREFIXES = (NET_KEY, POOL_KEY, EP_KEY)
CONTENT_TYPE = "application/vnd.docker.plugins.v1+json"


class OvsDataplane:
    """The plugin's state in br0's external_ids, its veths on br0."""

    def __init__(self, api, cluster: Cluster, host: str, mtu: int,
                 docker_host: str = dockerd.DEFAULT_DOCKER) -> None:
        self.api, self.cluster, self.host, self.mtu = api, cluster, host, mtu
        self.docker_host = docker_host

    def load(self) -> dict[str, str]:
        ext = self.api.db_get("Bridge", BRIDGE, "external_ids").execute(check_error=True)
        return {k: v for k, v in ext.items() if k.startswith(STATE_PREFIXES)}

    def save(self, put: dict[str, str], delete: list[str]) -> None:
        with self.api.transaction(check_error=True) as txn:
            if put:
                txn.add(self.api.db_set("Bridge", BRIDGE, ("external_ids", put)))
            if delete:
                txn.add(self.api.db_remove("Bridge", BRIDGE, "external_ids", *delete))

    def plug(self, port: str, peer: str, mac: str, tenant: str, container: str,
             extra: dict[str, str], ips: tuple[str, ...] = (),
             port_security: bool = True) -> None:
        t0 = time.monotonic()
        for name in (port, peer):       # leftovers of a crash between create and plug
            if hostnet.link_exists(name):
                hostnet.ip("link", "del", name, check=False)
        tx_off = hostnet.needs_tx_checksum_off(self.cluster.host(self.host).datapath_type)
        hostnet.ensure_veth(port, peer, self.mtu, tx_off=tx_off)
        hostnet.ip("link", "set", peer, "address", mac)
        t1 = time.monotonic()
        attach.add_container_port(self.api, port, tenant, container, mac,
                                  device_port_type(self.cluster, self.host, port), extra,
                                  ips, port_security)
        LOG.debug("plug %s: veth %.0f ms, br0 %.0f ms", port, (t1 - t0) * 1000,
                  (time.monotonic() - t1) * 1000)

    def unplug(self, port: str) -> None:
        attach.remove_container_port(self.api, port)

    def tenant_exists(self, tenant: str) -> bool | None:
        for url in self.cluster.apis or ((self.cluster.api,) if self.cluster.api else ()):
            try:            # any controller instance answers; the next when one does not
                resp = httpx.get(f"{url.rstrip('/')}/v1/tenants/{tenant}", timeout=3,
                                 headers=attach.api_headers())
            except httpx.HTTPError:
                continue
            if resp.status_code in (200, 404):
                return resp.status_code == 200
        return None


    def network_name(self, network_id: str) -> str | None:
        try:
            net = dockerd.get(self.docker_host, f"/networks/{network_id}")
        except (dockerd.DockerUnavailable, ValueError) as exc:
            LOG.warning("could not ask Docker for network %s: %s", network_id[:12], exc)
            return None
        return net.get("Name") if isinstance(net, dict) else None


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def make_handler(plugin: Plugin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                req = json.loads(raw) if raw.strip() else {}
            except ValueError:
                req = {}
            t0 = time.monotonic()
            resp = plugin.handle(self.path, req)
            LOG.debug("%s %s -> %s (%.0f ms)", self.path, raw[:400], json.dumps(resp)[:200],
                      (time.monotonic() - t0) * 1000)
            body = json.dumps(resp).encode()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def address_string(self) -> str:
            return "docker"

        def log_message(self, fmt: str, *args: object) -> None:
            LOG.debug(fmt, *args)

    return Handler


def _exit(*_: object) -> None:
    raise SystemExit(0)


def serve(plugin: Plugin, socket_path: Path) -> None:
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)
    server = _Server(str(socket_path), make_handler(plugin))
    os.chmod(socket_path, 0o660)
    signal.signal(signal.SIGTERM, _exit)
    LOG.info("weft network and IPAM driver listening on %s", socket_path)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        socket_path.unlink(missing_ok=True)


def _wait_for_bridge(api) -> None:
    """The state lives on br0, which ovs-agent makes: wait for it (with one log line)."""
    said = False
    while not api.br_exists(BRIDGE).execute(check_error=True):
        if not said:
            LOG.warning("waiting for %s (is ovs-agent running?)", BRIDGE)
            said = True
        time.sleep(0.5)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="ovs-agent docker-plugin",
                                 description="the weft Docker network + IPAM driver")
    ap.add_argument("--peers", type=Path, required=True, help="hosts.yaml")
    ap.add_argument("--host", help="this host's name in hosts.yaml")
    ap.add_argument("--socket", type=Path, default=DEFAULT_SOCKET,
                    help="unix socket dockerd finds the driver by (default: %(default)s)")
    ap.add_argument("--docker-host", default=dockerd.DEFAULT_DOCKER,
                    help="dockerd's API, asked for the names of networks made without "
                         "-o tenant (default: %(default)s)")
    ap.add_argument("--ovsdb", default=ovsdb.default_connection(),
                    help="OVSDB connection (default: %(default)s)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s weft-plugin %(levelname)s %(message)s")
    for noisy in ("httpx", "httpcore", "ovsdbapp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        cluster = load(args.peers)
        me = pick_host(cluster, args.host)
    except (HostsFileError, OSError) as exc:
        print(f"ovs-agent docker-plugin: {exc}", file=sys.stderr)
        return 2
    api = ovsdb.connect(args.ovsdb)
    _wait_for_bridge(api)
    names = [h.name for h in cluster.hosts]
    plugin = Plugin(OvsDataplane(api, cluster, me.name, tunnel_mtu(cluster), args.docker_host),
                    host_index=names.index(me.name), host_count=len(names))
    try:
        serve(plugin, args.socket)
    except KeyboardInterrupt:
        pass
    return 0
