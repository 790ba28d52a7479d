"""The controller's member list: hosts.yaml, followed as it changes, plus registered hosts.

hosts.yaml is polled (every second: stat only; re-read when its mtime, size or inode
moved) and re-validated by `cluster.hostsfile`; a good file replaces the member list
whole, a bad one is logged with file:line and changes nothing. With `membership:
register` in the file, hosts may also join by registering (`POST /v1/hosts/register`),
like flannel's subnet leases: the entry is checked by the same rules as a host in the
file and kept in the store for `ttl` seconds (`Store.register_host`: an etcd lease, or
an expiry time in SQLite), renewed by the agent's heartbeat, gone when it expires. The
file stays the source of truth: a registration may not take a name, address or subnet
it lists.

Every change of the effective list goes to `apply` (Core.set_cluster: switches and
tunnels follow, every switch is resynced); nothing else is touched.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from cluster.hostsfile import REGISTER_KEYS, Cluster, HostsFileError, load, with_hosts
from controller.store import Conflict, Invalid, StoreBase

LOG = logging.getLogger("weft.membership")
TTL_MIN, TTL_MAX, TTL_DEFAULT = 3.0, 3600.0, 30.0


class Membership:
    """hosts.yaml plus live leases -> the Cluster the controller runs on."""

    def __init__(self, store: StoreBase, file_cluster: Cluster,
                 apply: Callable[[Cluster], None], path: str | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.file, self.apply, self.path, self.clock = \
            store, file_cluster, apply, path, clock
        self.lock = threading.RLock()
        self._stat = self._file_stat()
        self.current = file_cluster
        self.file_errors = 0            # bad hosts.yaml versions seen (and ignored)
        self._renewed: dict[str, tuple[float, float]] = {}   # name -> (last heartbeat, ttl)

    # -- the effective member list ------------------------------------------------------
    def _effective(self, registered: dict[str, dict[str, Any]]) -> Cluster:
        """The file's hosts, then each live registration that still fits (oldest first)."""
        cluster = self.file
        if cluster.membership != "register":
            return cluster
        for name, reg in sorted(registered.items(), key=lambda kv: kv[1].get("since", 0)):
            try:
                cluster = with_hosts(cluster, [reg.get("host", {})])
            except HostsFileError as exc:
                LOG.warning("registration of %s does not fit the cluster, ignored: %s",
                            name, exc)
        return cluster

    def _publish(self) -> bool:
        registered = self.store.registered_hosts() if self.file.membership == "register" else {}
        cluster = self._effective(registered)
        if cluster == self.current:
            return False
        before = {h.name for h in self.current.hosts}
        after = {h.name for h in cluster.hosts}
        for name in sorted(before - after):
            if name in self._renewed:
                LOG.info("host %s: registration expired (no heartbeat for %gs): removed",
                         name, self._renewed.pop(name)[1])
        self.current = cluster
        LOG.info("members: %d hosts%s%s", len(after),
                 f", joined {', '.join(sorted(after - before))}" if after - before else "",
                 f", left {', '.join(sorted(before - after))}" if before - after else "")
        self.apply(cluster)
        return True

    def registered(self) -> dict[str, float | None]:
        """Registered member -> seconds until its lease ends (None: renewed through another
        controller, or before this one started)."""
        now = self.clock()
        names = {h.name for h in self.current.hosts} - {h.name for h in self.file.hosts}
        out: dict[str, float | None] = {}
        for n in sorted(names):
            seen = self._renewed.get(n)
            out[n] = round(seen[0] + seen[1] - now, 1) if seen else None
        return out

    # -- registration ---------------------------------------------------------------------
    def register(self, entry: dict[str, Any], ttl: float = TTL_DEFAULT) -> dict[str, Any]:
        """Create or renew a host's registration; raises Conflict/Invalid (nothing stored)."""
        name = str(entry.get("name", ""))
        with self.lock:
            if self.file.membership != "register":
                raise Conflict("name", f"hosts.yaml ({self.file.source}) is the source of truth "
                               "for this cluster (membership: file): add the host there, or set "
                               "`membership: register` in the controller's hosts.yaml")
            if any(h.name == name for h in self.file.hosts):
                raise Conflict("name", f"host {name!r} is listed in hosts.yaml "
                               f"({self.file.source}), which is the source of truth: it is a "
                               "member already and needs no registration")
            if not TTL_MIN <= ttl <= TTL_MAX:
                raise Invalid("ttl", f"ttl {ttl:g} is outside {TTL_MIN:g}..{TTL_MAX:g} s")
            host = {k: entry[k] for k in REGISTER_KEYS if entry.get(k) is not None}
            live = self.store.registered_hosts()
            others = [reg.get("host", {}) for n, reg in live.items() if n != name]
            try:
                with_hosts(with_hosts(self.file, others), [host])
            except HostsFileError as exc:
                kind = Conflict if "duplicate" in exc.message or "overlaps" in exc.message \
                    else Invalid
                raise kind(exc.field, str(exc)) from None
            old = live.get(name)
            same = old is not None and old.get("host") == host and old.get("ttl") == ttl
            # the data stays the same across heartbeats, so a renewal is only a lease renewal
            self.store.register_host(name, {"host": host, "ttl": ttl,
                                            "since": old["since"] if old and same
                                            else time.time()}, ttl)
            self._renewed[name] = (self.clock(), ttl)
            if not same:
                LOG.info("host %s registered (%s, lease %gs)", name, host.get("underlay_ip"), ttl)
                self._publish()
            return {"name": name, "ttl": ttl, "expires_in": ttl}

    # -- polling: the file and the leases ------------------------------------------------
    def _file_stat(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def poll(self) -> bool:
        """Re-read hosts.yaml if it changed, notice ended registrations; True if the
        members changed."""
        with self.lock:
            stat = self._file_stat()
            if stat is not None and stat != self._stat:
                self._stat = stat
                try:
                    new = load(self.path or "")
                except HostsFileError as exc:
                    self.file_errors += 1
                    LOG.error("hosts.yaml rejected, keeping the previous configuration: %s", exc)
                else:
                    LOG.info("hosts.yaml changed: %d hosts in the file", len(new.hosts))
                    self.file = new
            return self._publish()

    def run(self, interval: float = 1.0, stop: threading.Event | None = None) -> None:
        """Poll until `stop` is set (a thread of the controller)."""
        stop = stop or threading.Event()
        while not stop.wait(interval):
            try:
                self.poll()
            except Exception:  # noqa: BLE001  (a store hiccup must not end the watcher)
                LOG.exception("membership poll failed; retrying")

