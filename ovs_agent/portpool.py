"""A few br0 ports made ahead of time, for the Docker plugin's Join.

On the userspace datapath vswitchd opens a new veth as an AF_XDP port, which costs
100-250 ms (loading the XDP program) inside Join, on the path of `docker run`. The
pool keeps `size` veth pairs whose host end is already on br0 and opened by vswitchd;
Join takes one, gives the peer the endpoint's MAC, relabels the br0 end as a
container port (so the agent reports it and the controller binds it), and the pool
makes a new one in the background.

A pool port is labelled ``weft-role=pool``: the agent's reconcile loop never touches
ports of that role, the agent does not report it, so the controller binds nothing to
it and CLASSIFY drops whatever it might send. Names: ``wq`` + 11 hex digits on br0,
``wr`` + the same digits for the peer that Docker moves into the container.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable

from cluster.hostsfile import BRIDGE
from ovs_agent import attach, hostnet
from ovs_agent.desired import OWNER, OWNER_KEY, ROLE_KEY
from ovs_agent.ovsdb import refused_afxdp

LOG = logging.getLogger("weft-plugin")
POOL_ROLE = "pool"
PORT_PREFIX, PEER_PREFIX = "wq", "wr"
DEFAULT_SIZE = 2
# Refill this long after the last hand-out: a refill keeps vswitchd's main thread busy
# for 100-250 ms and its OVSDB transaction holds the plugin's one connection, so it
# waits until the Join is done and the container's first packets have gone
# (measured: refilling at once made a Join wait 160 ms behind it).
REFILL_DELAY = 0.6


def pool_names() -> tuple[str, str]:
    """(br0 port, peer) for a new pool pair: 13 characters each."""
    digits = secrets.token_hex(6)[:11]
    return PORT_PREFIX + digits, PEER_PREFIX + digits


def peer_of(port: str) -> str:
    return PEER_PREFIX + port[len(PORT_PREFIX):]


class PortPool:
    """Ready (port, peer) pairs; `take` hands one out, a thread makes new ones."""

    def __init__(self, api, mtu: int, port_type: Callable[[str], str], tx_off: bool,
                 size: int = DEFAULT_SIZE, refill_delay: float = REFILL_DELAY) -> None:
        self.api, self.mtu, self.port_type, self.tx_off = api, mtu, port_type, tx_off
        self.size, self.refill_delay = size, refill_delay
        self._taken = 0.0               # time.monotonic() of the last hand-out
        self._ready: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life ---------------------------------------------------------------------------
    def start(self, keep: set[str]) -> None:
        """Remove what an earlier run left (pool ports, and ports made from the pool that
        no endpoint in `keep` holds: a crash between hand-out and the endpoint's record),
        then fill in the background."""
        self.clear(keep)
        if self.size > 0:
            self._thread = threading.Thread(target=self._run, name="port-pool", daemon=True)
            self._thread.start()
            self._wake.set()

    def close(self) -> None:
        """Stop filling and remove every port still in the pool (plugin stop)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            self._ready.clear()
        try:
            self.clear(keep=None)
        except Exception as exc:        # OVS already gone (a lab coming down): nothing to do
            LOG.warning("port pool: could not remove its ports (%s)", exc)

    def clear(self, keep: set[str] | None) -> None:
        """Remove pool ports; with `keep`, also pool-made ports no endpoint holds."""
        rows = self.api.db_list("Interface", columns=["name", "external_ids"]).execute(
            check_error=True)
        for row in rows:
            name, ext = row["name"], row["external_ids"]
            if not name.startswith(PORT_PREFIX) or ext.get(OWNER_KEY) != OWNER:
                continue
            if ext.get(ROLE_KEY) == POOL_ROLE or (keep is not None and name not in keep):
                LOG.info("removing pool port %s (%s)", name, ext.get(ROLE_KEY))
                attach.remove_container_port(self.api, name)

    # -- hand-out -----------------------------------------------------------------------
    def take(self) -> tuple[str, str] | None:
        """A ready pair (its br0 end opened by vswitchd), or None if the pool is empty."""
        with self._lock:
            got = self._ready.pop(0) if self._ready else None
            self._taken = time.monotonic()
        self._wake.set()
        return got

    def ready(self) -> int:
        with self._lock:
            return len(self._ready)

    # -- filling ------------------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            while not self._stop.is_set() and self.ready() < self.size:
                with self._lock:
                    quiet = self._taken + self.refill_delay - time.monotonic()
                if quiet > 0:           # a hand-out just now: let its Join finish first
                    self._stop.wait(quiet)
                    continue
                try:
                    pair = self._make()
                except Exception as exc:        # OVSDB or ip: try later, never die
                    failures += 1
                    LOG.warning("port pool: could not make a port (%s)", exc)
                    self._stop.wait(min(30.0, 0.5 * 2 ** min(failures, 6)))
                    continue
                failures = 0
                if pair is not None:
                    with self._lock:
                        self._ready.append(pair)

    def _make(self) -> tuple[str, str] | None:
        t0 = time.monotonic()
        port, peer = pool_names()
        hostnet.ensure_veth(port, peer, self.mtu, tx_off=self.tx_off)
        port_type = self.port_type(port)
        ext = {OWNER_KEY: OWNER, ROLE_KEY: POOL_ROLE}
        with self.api.transaction(check_error=True) as txn:
            txn.add(self.api.add_port(BRIDGE, port, may_exist=True))
            txn.add(self.api.db_set("Interface", port, ("external_ids", ext),
                                    ("type", port_type)))
        if port_type.startswith("afxdp"):
            attach.wait_opened(self.api, port)
            if refused_afxdp(self.api, {port}):
                self.api.db_set("Interface", port, ("type", "")).execute(check_error=True)
        if self._stop.is_set():         # closing meanwhile: do not leave it behind
            attach.remove_container_port(self.api, port)
            return None
        LOG.debug("port pool: %s ready in %.0f ms", port, (time.monotonic() - t0) * 1000)
        return port, peer
