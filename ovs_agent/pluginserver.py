"""`ovs-agent docker-plugin`: the weft network plugin's I/O shell.

HTTP on a unix socket in /run/docker/plugins (where dockerd discovers plugins
by name), each call handed to the pure `dockerplugin.Plugin`.  The dataplane
below keeps the plugin's state in br0's external_ids over the agent's own
ovsdbapp connection helpers, plugs veths into br0 exactly as `ovs-agent
attach` does.  The host's ovs-agent sees the labelled port in OVSDB at once
and reports it to the controller, which binds it.  Published ports are held
by bound sockets and DNATed by elements in the agent's `table ip weft-nat`.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx

from cluster.hostsfile import BRIDGE, Cluster, HostsFileError, load, tunnel_mtu
from ovs_agent import attach, dockerd, hostnet, nat, ovsdb, portpool
from ovs_agent.agent import pick_host
from ovs_agent.desired import device_port_type
from ovs_agent.dockerplugin import (EP_KEY, NET_KEY, POOL_KEY, PUB_KEY, RECLAIM_AFTER,
                                    SPACE_KEY, IpamRefused, Json, Plugin, Segment)
from ovs_agent.nat import Published

LOG = logging.getLogger("weft-plugin")
DEFAULT_SOCKET = Path("/run/docker/plugins/weft.sock")
STATE_PREFIXES = (NET_KEY, POOL_KEY, EP_KEY, PUB_KEY, SPACE_KEY)
# the controller's IPAM (controller/rest/ipam.py): op -> (method, path under the network)
IPAM_CALLS = {"claim_block": ("POST", "blocks"), "release_block": ("DELETE", "blocks"),
              "claim_address": ("POST", "addresses"), "release_address": ("DELETE", "addresses")}
CONTENT_TYPE = "application/vnd.docker.plugins.v1+json"


class _Unanswered(Exception):
    """A controller answered neither 200 nor 404 (ask the next one)."""


def reserve_port(proto: str, host_ip: str | None, port: int) -> socket.socket:
    """Hold a published port: a socket bound (never listening) to it, SO_REUSEADDR off.

    Binding fails (EADDRINUSE) if any socket holds the port, listening or not, a
    docker-proxy included; and while ours is bound nobody else can bind it, since
    Linux shares a port only between sockets that all set SO_REUSEADDR. Packets to the
    port are DNATed before local delivery, so the socket never sees one (a UDP one
    gets a tiny buffer all the same)."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        if kind == socket.SOCK_DGRAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
        sock.bind((host_ip or "0.0.0.0", port))
    except OSError:
        sock.close()
        raise
    return sock


class OvsDataplane:
    """The plugin's state in br0's external_ids, its veths on br0."""

    def __init__(self, api, cluster: Cluster, host: str, mtu: int,
                 docker_host: str = dockerd.DEFAULT_DOCKER) -> None:
        self.api, self.cluster, self.host, self.mtu = api, cluster, host, mtu
        self.docker_host = docker_host
        self._clients: dict[str, httpx.Client] = {}
        self.pool: portpool.PortPool | None = None

    def start_pool(self, size: int, keep: set[str]) -> None:
        """Keep `size` br0 ports opened ahead of Join (0: none; see ovs_agent.portpool);
        ports of an earlier run's pool that no endpoint in `keep` holds are removed."""
        tx_off = hostnet.needs_tx_checksum_off(self.cluster.host(self.host).datapath_type)
        pool = portpool.PortPool(self.api, self.mtu,
                                 lambda p: device_port_type(self.cluster, self.host, p),
                                 tx_off, size)
        pool.start(keep)
        self.pool = pool if size > 0 else None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()

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
             port_security: bool = True) -> tuple[str, str]:
        """The endpoint's veth on br0: a pool pair if one is ready (its names), else
        `port`/`peer` made now."""
        t0 = time.monotonic()
        pair = self.pool.take() if self.pool is not None else None
        if pair is not None:
            hostnet.ip("link", "set", pair[1], "address", mac)
            attach.label_container_port(self.api, pair[0], tenant, container, mac, extra,
                                        ips, port_security)
            LOG.debug("plug %s from the pool: %.0f ms", pair[0],
                      (time.monotonic() - t0) * 1000)
            return pair
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
        return port, peer

    def unplug(self, port: str) -> None:
        attach.remove_container_port(self.api, port)

    def segment(self, name: str) -> Segment | None:
        """The controller's weft network ``name`` (a tenant's default network or a
        further one): gateway, egress, its tenant and that tenant's id."""
        for url in self.cluster.apis or ((self.cluster.api,) if self.cluster.api else ()):
            try:            # any controller instance answers; the next when one does not
                return _segment(self._client(url), name)
            except (httpx.HTTPError, _Unanswered, ValueError) as exc:
                LOG.debug("controller %s about %s: %s", url, name, exc)
                continue
        return None

    def ipam(self, op: str, network: str, args: dict[str, str]) -> Json | None:
        """One IPAM call to the first controller that answers (any instance: they share
        the store); a 4xx is the answer (IpamRefused), a 404 of a release is done."""
        method, what = IPAM_CALLS[op]
        path = f"/v1/networks/{network}/ipam/{what}"
        for url in self.cluster.apis or ((self.cluster.api,) if self.cluster.api else ()):
            try:
                client = self._client(url)
                if method == "POST":
                    resp = client.post(path, json={"host": self.host, **args})
                else:
                    resp = client.delete(path, params={"host": self.host, **args})
            except httpx.HTTPError as exc:
                LOG.debug("controller %s: %s %s: %s", url, method, path, exc)
                continue
            if resp.status_code in (200, 201):
                return resp.json()
            if resp.status_code == 404 and method == "DELETE":
                return {}
            if 400 <= resp.status_code < 500 and resp.status_code not in (401, 403, 408):
                try:
                    msg = resp.json().get("error") or resp.text
                except ValueError:
                    msg = resp.text
                raise IpamRefused(str(msg)[:300])
            LOG.debug("controller %s: %s %s: %d", url, method, path, resp.status_code)
        return None

    def in_use(self, network_ids: list[str]) -> tuple[set[str], set[str]] | None:
        """Addresses and endpoint ids on these Docker networks, as dockerd (its containers,
        aux addresses) and br0 (ports' attached-ips) see them."""
        addrs: set[str] = set()
        endpoints: set[str] = set()
        for nid in network_ids:
            try:
                net = dockerd.get(self.docker_host, f"/networks/{nid}")
            except (dockerd.DockerUnavailable, ValueError) as exc:
                LOG.info("cannot ask Docker about network %s (%s): nothing reclaimed",
                         nid[:12], exc)
                return None
            if not isinstance(net, dict):
                continue
            for c in (net.get("Containers") or {}).values():
                if isinstance(c, dict):
                    endpoints.add(str(c.get("EndpointID") or ""))
                    addrs.add(str(c.get("IPv4Address") or "").split("/")[0])
            for cfg in (net.get("IPAM") or {}).get("Config") or []:
                if isinstance(cfg, dict):
                    addrs.update(str(a) for a in (cfg.get("AuxiliaryAddresses") or {}).values())
        rows = self.api.db_list("Interface", columns=["external_ids"]).execute(check_error=True)
        for row in rows:
            ext = row.get("external_ids") or {}
            if ext.get("weft-docker-network") in network_ids:
                endpoints.add(ext.get("weft-docker-endpoint", ""))
                addrs.update(a.split("/")[0] for a in ext.get(attach.IPS_KEY, "").split(",") if a)
        return addrs, endpoints

    def _client(self, url: str) -> httpx.Client:
        """One client per controller, kept: a Join asks it, and a new client (its TLS
        context, a new connection) cost more than the question (~30 ms in the lab)."""
        client = self._clients.get(url)
        if client is None:
            client = self._clients[url] = httpx.Client(
                base_url=url.rstrip("/"), timeout=3, headers=attach.api_headers())
        return client

    def network_name(self, network_id: str) -> str | None:
        try:
            net = dockerd.get(self.docker_host, f"/networks/{network_id}")
        except (dockerd.DockerUnavailable, ValueError) as exc:
            LOG.warning("could not ask Docker for network %s: %s", network_id[:12], exc)
            return None
        return net.get("Name") if isinstance(net, dict) else None

    def container_name(self, network_id: str, endpoint_id: str) -> str | None:
        try:
            net = dockerd.get(self.docker_host, f"/networks/{network_id}")
        except (dockerd.DockerUnavailable, ValueError) as exc:
            LOG.warning("could not ask Docker for network %s: %s", network_id[:12], exc)
            return None
        containers = net.get("Containers") if isinstance(net, dict) else None
        for cid, c in (containers or {}).items():
            if isinstance(c, dict) and c.get("EndpointID") == endpoint_id:
                return str(c.get("Name") or cid[:12])
        return None

    def reserve(self, proto: str, host_ip: str | None, port: int) -> socket.socket:
        return reserve_port(proto, host_ip, port)

    def publish(self, records: list[Published], add: bool) -> None:
        """The elements now, if the agent has made ``table ip weft-nat``; otherwise (or
        if nft fails) the agent's loop renders them from the records."""
        script_of = getattr(nat, "publish_script", None)    # ovs_agent.nat, from hoststack
        nft = shutil.which("nft")
        if script_of is None or nft is None:
            LOG.debug("no nat.publish_script or nft: the agent publishes %d ports",
                      len(records))
            return
        if subprocess.run([nft, "list", "table", "ip", nat.TABLE], check=False,
                          capture_output=True).returncode != 0:
            LOG.info("no table ip %s yet: the agent adds the published ports", nat.TABLE)
            return
        res = subprocess.run([nft, "-f", "-"], input=script_of(records, add), text=True,
                             capture_output=True, check=False)
        if res.returncode != 0:
            LOG.warning("nft %s published ports: %s (the agent retries)",
                        "adding" if add else "deleting", res.stderr.strip()[:300])


def _segment(client: httpx.Client, name: str) -> Segment:
    """One GET /v1/networks (every network, the tenants' default ones too, without their
    ports: a Join must stay cheap) finds the network and its tenant's id (the VNI of the
    tenant's own row); a controller from before networks answers 404 there, and
    /v1/tenants/NAME (no gateway) instead."""
    rows = _get(client, "/v1/networks")
    if rows is None:
        doc = _get(client, f"/v1/tenants/{name}")
        if not isinstance(doc, dict):
            return Segment(name, exists=False)
        return Segment(name, True, name, _int(doc.get("vni")), doc.get("gateway") or None,
                       bool(doc.get("egress")))
    if not isinstance(rows, list):
        raise _Unanswered("GET /v1/networks: not a list")
    by_name = {r.get("name"): r for r in rows if isinstance(r, dict)}
    net = by_name.get(name)
    if net is None:
        return Segment(name, exists=False)
    tenant = str(net.get("tenant") or name)
    return Segment(name, True, tenant, _int((by_name.get(tenant) or {}).get("vni")),
                   net.get("gateway") or None, bool(net.get("egress")),
                   net.get("subnet6") or None, net.get("gateway6") or None)


def _get(client: httpx.Client, path: str) -> Any:
    """A controller's JSON document; None for 404."""
    resp = client.get(path)
    if resp.status_code == 404:
        return None
    if resp.status_code != 200:
        raise _Unanswered(f"GET {path}: {resp.status_code}")
    return resp.json()


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


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
    ap.add_argument("--reclaim-after", type=float, default=RECLAIM_AFTER, metavar="SECONDS",
                    help="an address no container, br0 port or dockerd network has is "
                         "handed out again after this long (default: %(default)s)")
    ap.add_argument("--port-pool", type=int, default=portpool.DEFAULT_SIZE, metavar="N",
                    help="br0 ports kept opened ahead of Join, so vswitchd's open of a new "
                         "port is off the path of docker run (0: none; default: "
                         "%(default)s)")
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
    dataplane = OvsDataplane(api, cluster, me.name, tunnel_mtu(cluster), args.docker_host)
    plugin = Plugin(dataplane, host=me.name, reclaim_after=args.reclaim_after)
    dataplane.start_pool(max(0, args.port_pool),
                         keep={ep.port for ep in plugin.endpoints.values() if ep.port})
    try:
        serve(plugin, args.socket)
    except KeyboardInterrupt:
        pass
    finally:
        dataplane.close()       # the pool's ports go (SIGTERM too: serve's SystemExit)
    return 0
