"""The agent's resolver: tenants' containers ask it for each other's names (docs/dns.md).

It listens on ``ADDRESS`` (a link-local address on this host's ``lo``), UDP port 53.
Queries reach it through the tenant's gateway port ``wx-<id>`` (Docker's embedded
resolver forwards what it cannot answer to the daemon's ``dns`` server, this address,
from inside the container's namespace; the container's default route is its network's
distributed gateway).  The interface a query came in on (``IP_PKTINFO``) names the
tenant: no field of the packet does, so a container cannot ask as another tenant.  A
query from docker0 (its containers get the same ``dns``) is answered from the default
tenant's zone, ``DEFAULT_ZONE`` (docker0's containers of every host); one from a Docker
bridge is only forwarded (``BRIDGE_ZONE``); one that came in any other way (the underlay,
lo) is dropped.

Answers come from the tenant's zone (``ovs_agent.names``); the rest is forwarded to the
host's own resolvers (resolv.conf) under a fresh id, and only an answer from the server
asked, with that id, goes back.  Each (interface, source address) has a token bucket
(``names.TokenBucket``): one container's flood costs only itself; forwarded queries in
flight are bounded as a whole.  Anything with QR set sent to the resolver (a container
answering in place of it) is dropped.
"""
from __future__ import annotations

import ipaddress
import logging
import random
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cluster.names import RESOLVER_ADDRESS, RESOLVER_PORT
from ovs_agent import dnswire, names
from ovs_agent.desired import UNDERLAY_BRIDGE
from ovs_agent.nat import PORT_PREFIX, mark

LOG = logging.getLogger("ovs-agent")
ADDRESS, PORT = RESOLVER_ADDRESS, RESOLVER_PORT   # on every host (daemon.json "dns")
DEFAULT_ZONE = 0                # docker0's containers: the default tenant (tenant ids are > 0)
BRIDGE_ZONE = -1                # Docker's own bridges' containers: forwarded only
FORWARD_TIMEOUT = 2.0           # seconds an upstream has to answer
BATCH = 256                     # packets read per wake-up
RCVBUF = 4 << 20               # bytes of queued queries
MAX_PENDING = 1024              # forwarded queries in flight, all tenants together
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
SO_MARK = getattr(socket, "SO_MARK", 36)
_PKTINFO = struct.Struct("=I4s4s")  # ipi_ifindex, ipi_spec_dst, ipi_addr


def upstreams(resolv_conf: Path = Path("/etc/resolv.conf"), skip: str = ADDRESS) -> list[str]:
    """The host's own IPv4 name servers (never this resolver itself)."""
    out = []
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                addr = str(ipaddress.IPv4Address(parts[1]))
            except ValueError:
                continue
            if addr != skip and addr not in out:
                out.append(addr)
    return out


def tenant_id_of(ifname: str) -> int | None:
    """The zone an interface asks in: wx-<id> -> the tenant id; docker0 ->
    ``DEFAULT_ZONE``; Docker's bridges (br-*, not weft's br-phy) -> ``BRIDGE_ZONE``;
    None for anything else."""
    if ifname.startswith(PORT_PREFIX):
        try:
            return int(ifname[len(PORT_PREFIX):])
        except ValueError:
            return None
    if ifname == "docker0":
        return DEFAULT_ZONE
    if ifname.startswith("br-") and ifname != UNDERLAY_BRIDGE:
        return BRIDGE_ZONE
    return None


def reply_mark(ifname: str | None) -> int:
    """The packet mark an answer to a query that came in on ``ifname`` is sent with: a
    tenant's (``ovs_agent.nat.mark``) for its port wx-<id>, so that the kernel's first
    route lookup already uses the tenant's table (its fwmark rule); 0 for anything else
    (docker0's containers are on the main table's connected route).

    Without it the first lookup is the main table's, which has no route to a tenant's
    subnets: on a host with a default route the answer left that way and the output
    hook's mark (from the query's connection) rerouted it to wx-<id>; on a host without
    one, sendmsg failed (ENETUNREACH, IpOutNoRoutes) and no container got an answer."""
    if ifname and ifname.startswith(PORT_PREFIX):
        tid = tenant_id_of(ifname)
        if tid is not None and 0 < tid <= 0xFFFF:
            return mark(tid)
    return 0


@dataclass
class _Pending:
    client: tuple[str, int]
    ifindex: int
    qid: int
    server: tuple[str, int]
    deadline: float


@dataclass
class Resolver:
    """Serves until ``stop``; ``zones`` maps tenant id -> that tenant's zone and may be
    replaced whole at any time (the agent does, when records or gateways change)."""

    address: str = ADDRESS
    port: int = PORT
    upstream_port: int = 53
    servers: Callable[[], list[str]] = upstreams
    rate: float = 200.0             # per (interface, source): the host firewall's limit too
    burst: float = 400.0
    zones: dict[int, names.Zone] = field(default_factory=dict)
    ifname: Callable[[int], str | None] = field(default=lambda i: _ifname(i))
    answered: int = 0
    forwarded: int = 0
    dropped: int = 0
    limited: int = 0
    _sock: socket.socket | None = None
    _up: socket.socket | None = None
    _pending: dict[int, _Pending] = field(default_factory=dict)
    _mark: int = 0                  # the socket's SO_MARK now (reply_mark)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind (raises OSError when the address is not on this host) and serve in a
        thread."""
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        try:        # a deep queue: a burst must not push others' queries out (root only)
            s.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), RCVBUF)
        except OSError:
            pass
        s.bind((self.address, self.port))
        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        up.bind(("0.0.0.0", 0))
        s.setblocking(False)
        up.setblocking(False)
        self._sock, self._up = s, up
        self._bucket = names.TokenBucket(self.rate, self.burst)
        self._thread = threading.Thread(target=self._serve, name="weft-resolver", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        for s in (self._sock, self._up):
            if s:
                s.close()

    def _serve(self) -> None:
        assert self._sock and self._up
        while not self._stop.is_set():
            ready, _, _ = select.select([self._sock, self._up], [], [], 0.2)
            now = time.monotonic()
            for s in ready:
                for _ in range(BATCH):      # drain: one select per batch, not per packet
                    try:
                        if s is self._sock:
                            self._query(now)
                        else:
                            self._upstream_answer()
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        LOG.debug("resolver: %s", exc)
                    except Exception:  # noqa: BLE001  (a bug must not end the resolver)
                        LOG.exception("resolver: a query failed")
            self._expire(now)

    def _query(self, now: float) -> None:
        assert self._sock
        msg, anc, _flags, client = self._sock.recvmsg(4096, socket.CMSG_SPACE(_PKTINFO.size))
        ifindex = next((_PKTINFO.unpack(data[:_PKTINFO.size])[0] for lvl, typ, data in anc
                        if lvl == socket.IPPROTO_IP and typ == IP_PKTINFO), 0)
        tid = tenant_id_of(self.ifname(ifindex) or "") if ifindex else None
        zone = self.zones.get(tid) if tid is not None else None
        if zone is None:
            self.dropped += 1           # not from a tenant's gateway port served here
            return
        if not self._bucket.allow((ifindex, client[0]), now):
            self.limited += 1
            return
        try:
            q = dnswire.parse_query(msg)
        except dnswire.WireError:
            err = dnswire.error(msg, dnswire.RCODE_FORMERR)
            if err and not dnswire.response_id(msg):
                self._send(err, client, ifindex)
            return
        if q.is_response:
            self.dropped += 1           # an answer sent to the resolver: never relayed
            return
        out = names.answer(q, zone)
        if out is not None:
            self.answered += 1
            self._send(out, client, ifindex)
            return
        self._forward(msg, q, client, ifindex, now)

    def _forward(self, msg: bytes, q: dnswire.Query, client: tuple[str, int], ifindex: int,
                 now: float) -> None:
        assert self._up
        servers = self.servers()
        if not servers or len(self._pending) >= MAX_PENDING:
            self._send(dnswire.reply(q, dnswire.RCODE_SERVFAIL), client, ifindex)
            return
        new = random.randrange(1 << 16)
        while new in self._pending:
            new = random.randrange(1 << 16)
        server = (servers[0], self.upstream_port)
        self._pending[new] = _Pending(client, ifindex, q.id, server, now + FORWARD_TIMEOUT)
        self.forwarded += 1
        self._up.sendto(dnswire.with_id(msg, new), server)

    def _upstream_answer(self) -> None:
        assert self._up
        msg, source = self._up.recvfrom(65535)
        rid = dnswire.response_id(msg)
        p = self._pending.get(rid) if rid is not None else None
        if rid is None or p is None or (source[0], source[1]) != p.server:
            self.dropped += 1           # not the server asked, or not asked at all
            return
        del self._pending[rid]
        self._send(dnswire.with_id(msg, p.qid), p.client, p.ifindex)

    def _expire(self, now: float) -> None:
        for k in [k for k, p in self._pending.items() if p.deadline < now]:
            del self._pending[k]

    def _send(self, msg: bytes, client: tuple[str, int], ifindex: int) -> None:
        """From ADDRESS, whatever route the kernel picks (the connection's mark takes the
        reply back to the tenant's wx port: ovs_agent.nat)."""
        assert self._sock
        want = reply_mark(self.ifname(ifindex))
        if want != self._mark:
            try:        # root (CAP_NET_ADMIN), as the agent runs
                self._sock.setsockopt(socket.SOL_SOCKET, SO_MARK, want)
                self._mark = want
            except PermissionError:
                pass    # unprivileged (tests): the output hook's reroute only
        info = _PKTINFO.pack(0, socket.inet_aton(self.address), b"\0" * 4)
        self._sock.sendmsg([msg], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, client)


def _ifname(ifindex: int) -> str | None:
    try:
        return socket.if_indextoname(ifindex)
    except OSError:
        return None
