"""Master election among weft-manager instances, on an etcd lease.

Each instance holds a lease of ``ttl`` seconds (kept alive every ttl/6) and
campaigns by creating one key (``/weft/election/master``) bound to its lease,
only if the key does not exist (a compare-and-swap transaction).  The holder of
the key is master; the key's create revision, an etcd revision and so monotonic
across the cluster, is the OpenFlow role generation id (a switch refuses a role
request with an older one, so a deposed master is fenced by the switch too).

`ElectionCore` is the pure decision logic (no clock, no sockets): every input
carries the monotonic time at which the request that produced it was *sent*.
An instance trusts its lease until ``sent + ttl - guard`` of the last
acknowledged grant/keepalive: etcd can only expire the lease after
``sent + ttl`` (it restarts the TTL when it handles the request, later than we
sent it), so a node that cannot reach etcd steps down before any other node
can have won.  `Election` is the thin I/O shell over etcd's v3 JSON gateway.
"""
from __future__ import annotations

import base64
import logging
import threading
import time
from functools import partial
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from controller.etcd_access import EtcdAccess

LOG = logging.getLogger("weft.election")
MASTER, SLAVE = "master", "slave"
ELECTION_KEY = "/weft/v1-election/master"   # beside the store's default prefix


@dataclass(frozen=True)
class Role:
    """What this instance is, and the generation id to send with its role request."""
    role: str
    generation: int          # 0: no master known yet


class ElectionCore:
    """Pure election state of one instance; the shell feeds it results and the time."""

    def __init__(self, name: str, ttl: float, guard: float | None = None) -> None:
        if ttl < 1:
            raise ValueError("the lease TTL must be at least 1 s")
        self.name, self.ttl = name, ttl
        # a margin for our own scheduling delays (clock-rate differences are ppm): the
        # old master must be silent before etcd can expire its lease at ``sent + ttl``
        self.guard = guard if guard is not None else max(0.5, ttl / 6)
        self.lease: int | None = None
        self.valid_until = 0.0      # our lease is certainly alive in etcd before this
        self.role = SLAVE
        self.generation = 0         # create revision of the newest master key seen
        self.leader: str | None = None

    # -- inputs ----------------------------------------------------------------------
    def lease_granted(self, lease: int, ttl: float, sent: float) -> None:
        self.lease = lease
        self.valid_until = sent + ttl - self.guard

    def keepalive_answered(self, ttl: float, sent: float) -> None:
        """A keepalive for our lease was acknowledged; ttl 0 means etcd has no such lease."""
        if ttl <= 0:
            self.lease_lost()
        else:
            self.valid_until = max(self.valid_until, sent + ttl - self.guard)

    def lease_lost(self) -> None:
        """etcd says our lease is gone (expired or revoked): step down now."""
        self.lease, self.valid_until = None, 0.0
        self.role = SLAVE

    def observed(self, holder: str | None, lease: int | None, create_revision: int,
                 sent: float) -> None:
        """The master key as a campaign transaction saw it (we created it, or another
        instance holds it, or nobody: ``holder`` None)."""
        self.tick(sent)
        if holder is None:
            self.leader = None
            self.role = SLAVE
            return
        self.generation = max(self.generation, create_revision)
        self.leader = holder
        mine = self.lease is not None and lease == self.lease and holder == self.name
        self.role = MASTER if mine and create_revision >= self.generation else SLAVE

    def tick(self, now: float) -> None:
        """Without an acknowledged keepalive in time, assume the lease gone: step down
        before any other instance could have won."""
        if self.lease is not None and now >= self.valid_until:
            self.lease_lost()

    # -- outputs ---------------------------------------------------------------------
    def current(self, now: float) -> Role:
        self.tick(now)
        return Role(self.role, self.generation)

    def needs_lease(self, now: float) -> bool:
        self.tick(now)
        return self.lease is None

    def keepalive_interval(self) -> float:
        """Often enough to ride out an etcd leader election (about 1 s) without losing
        the lease locally: a keepalive is acknowledged within ttl - guard - this."""
        return self.ttl / 6

    def time_left(self, now: float) -> float:
        """How long a request may take before the lease must be presumed lost."""
        return max(0.0, self.valid_until - now)


# -- the I/O shell: etcd's v3 JSON gateway (etcd 3.4 serves /v3/) ----------------------

def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _unb64(s: str) -> str:
    return base64.b64decode(s).decode()


def endpoints(url: str, scheme: str = "http") -> list[str]:
    """``etcd://h:p,h:p`` (or http://h:p,h:p) -> ['SCHEME://h:p', ...]."""
    parts = urlsplit(url if "://" in url else "etcd://" + url)
    hosts = [h for h in parts.netloc.split(",") if h]
    if parts.scheme not in ("etcd", "http") or not hosts:
        raise ValueError(f"{url!r} is not an etcd endpoint list like etcd://127.0.0.1:2379")
    return [f"{scheme}://{h}" for h in hosts]


class EtcdGateway:
    """The few etcd calls the election needs; rotates to the next member on an error.
    ``access``: TLS and the weft user (controller/etcd_access.py), as the store's."""

    def __init__(self, urls: Sequence[str], access: EtcdAccess) -> None:
        self.urls = list(urls)
        self.access = access.check()
        self._i = 0
        self._http = httpx.Client(verify=access.ssl_context(), trust_env=False)
        self._token: str | None = None

    def call(self, path: str, body: dict, timeout: float) -> dict[str, Any]:
        last: Exception | None = None
        deadline = time.monotonic() + timeout
        for _ in range(len(self.urls) + 1):        # + 1: a request after a fresh login
            left = deadline - time.monotonic()
            if left <= 0:
                break
            url = self.urls[self._i % len(self.urls)]
            try:
                if self.access.user and self._token is None:
                    self._token = self.access.login(partial(self._post, url, timeout=left))
                r = self._http.post(url + path, json=body, timeout=left,
                                    headers={"Authorization": self._token or ""})
                if r.status_code == 401:            # a restarted member forgot the token
                    self._token = None
                r.raise_for_status()
                return r.json()
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                last = exc
                self._i += 1
        raise ConnectionError(f"etcd unreachable ({', '.join(self.urls)}): {last}")

    def _post(self, base: str, path: str, body: dict, timeout: float) -> dict[str, Any]:
        r = self._http.post(base + path, json=body, timeout=timeout)
        r.raise_for_status()
        return r.json()

    def grant(self, ttl: float, timeout: float) -> tuple[int, float]:
        r = self.call("/v3/lease/grant", {"TTL": int(ttl)}, timeout)
        return int(r["ID"]), float(r["TTL"])

    def keepalive(self, lease: int, timeout: float) -> float:
        r = self.call("/v3/lease/keepalive", {"ID": lease}, timeout)
        return float(r.get("result", {}).get("TTL", 0))

    def revoke(self, lease: int, timeout: float) -> None:
        self.call("/v3/lease/revoke", {"ID": lease}, timeout)

    def campaign(self, key: str, value: str, lease: int,
                 timeout: float) -> tuple[str | None, int | None, int]:
        """Create ``key`` bound to ``lease`` unless it exists; (holder, its lease,
        create revision) of the key as it is after the transaction."""
        k = _b64(key)
        r = self.call("/v3/kv/txn", {
            "compare": [{"key": k, "target": "CREATE", "result": "EQUAL",
                         "create_revision": "0"}],
            "success": [{"request_put": {"key": k, "value": _b64(value), "lease": lease}}],
            "failure": [{"request_range": {"key": k}}]}, timeout)
        if r.get("succeeded"):
            return value, lease, int(r["header"]["revision"])
        kvs = (r.get("responses") or [{}])[0].get("response_range", {}).get("kvs") or []
        if not kvs:
            return None, None, 0
        kv = kvs[0]
        return _unb64(kv["value"]), int(kv.get("lease", 0)), int(kv["create_revision"])


class Election:
    """Runs `ElectionCore` against etcd in a thread; calls ``on_change(role)`` (from that
    thread) whenever the role or the generation id changes."""

    def __init__(self, gateway: EtcdGateway, name: str, ttl: float,
                 on_change: Callable[[Role], None], poll: float = 0.1,
                 key: str = ELECTION_KEY) -> None:
        self.core = ElectionCore(name, ttl)
        self.gw, self.key, self.poll, self.on_change = gateway, key, poll, on_change
        self.last: Role = Role(SLAVE, 0)
        self.master_since: float | None = None     # wall clock, for the API and tests
        self.stepped_down_at: float | None = None
        self.transitions = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="weft-election", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, resign: bool = True) -> None:
        """Stop campaigning; resigning revokes the lease so a standby takes over at once."""
        self._stop.set()
        self.thread.join(timeout=self.core.ttl)
        if resign and self.core.lease is not None:
            try:
                self.gw.revoke(self.core.lease, timeout=1)
            except ConnectionError:
                pass
        self.core.lease_lost()
        self._publish()

    def status(self) -> dict[str, Any]:
        return {"role": self.last.role, "generation": self.last.generation,
                "leader": self.core.leader, "name": self.core.name, "ttl": self.core.ttl,
                "master_since": self.master_since, "transitions": self.transitions}

    def _publish(self) -> None:
        role = self.core.current(time.monotonic())
        if role == self.last:
            return
        LOG.info("election: %s -> %s (generation %d, leader %s)", self.last.role, role.role,
                 role.generation, self.core.leader)
        if role.role == MASTER and self.last.role != MASTER:
            self.master_since = time.time()
        elif role.role != MASTER and self.last.role == MASTER:
            self.stepped_down_at = time.time()
        self.last = role
        self.transitions += 1
        try:
            self.on_change(role)
        except Exception:  # noqa: BLE001  (the election must outlive a failing callback)
            LOG.exception("election: role change callback failed")

    def _budget(self) -> float:
        """How long the next request may take: never past the moment our lease must be
        presumed lost, so a hanging etcd cannot delay stepping down."""
        c = self.core
        left = c.time_left(time.monotonic())
        return min(c.keepalive_interval(), left) if c.lease is not None else c.ttl / 3

    def _step(self) -> None:
        c, now = self.core, time.monotonic()
        if c.needs_lease(now):
            sent = time.monotonic()
            lease, ttl = self.gw.grant(c.ttl, self._budget())
            c.lease_granted(lease, ttl, sent)
            self._last_keepalive = sent
        elif now - self._last_keepalive >= c.keepalive_interval():
            sent = time.monotonic()
            self._last_keepalive = sent
            budget = self._budget()
            if budget < 0.01:
                return                  # too late: the lease is presumed lost (tick)
            c.keepalive_answered(self.gw.keepalive(c.lease or 0, budget), sent)
        if c.lease is not None and self._budget() >= 0.01:
            sent = time.monotonic()
            holder, held, rev = self.gw.campaign(self.key, c.name, c.lease, self._budget())
            c.observed(holder, held, rev, sent)

    def _run(self) -> None:
        self._last_keepalive = 0.0
        while not self._stop.is_set():
            try:
                self._step()
            except (ConnectionError, KeyError, ValueError) as exc:
                LOG.warning("election: %s", exc)
            self._publish()
            # the master only needs to keep its lease; standbys poll for a free key
            wait = self.poll if self.last.role == SLAVE else min(
                self.poll * 2, self.core.keepalive_interval())
            if self.core.lease is not None:     # wake up in time to step down
                wait = min(wait, max(0.0, self.core.time_left(time.monotonic())))
            self._stop.wait(wait)
