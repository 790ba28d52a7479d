"""The agent's side of names across hosts (docs/dns.md): report, fetch, serve.

Every ``interval`` (0.4 s: a name follows ``docker run``/``docker rm`` on any host
within about a second) one thread:

1. asks this host's dockerd for its containers on weft networks and docker0 and their names
   (``names.container_records``; a container is inspected once per change of its
   networks, not every round) and PUTs them to the controller when they changed (and
   every ``REPORT_EVERY`` seconds, and after a failure);
2. GETs the records of the tenants with a gateway port here and hands the resolver
   one zone per tenant id (``DEFAULT_ZONE``: docker0's containers, the default tenant;
   ``BRIDGE_ZONE``: Docker's own bridges, forward only);
3. keeps the resolver's address on ``lo`` and the resolver running.

A controller that does not answer changes nothing: the last zones keep being served.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from cluster.names import NameRecord
from ovs_agent import dockerd, names, resolver
from ovs_agent.hostnet import ip

LOG = logging.getLogger("ovs-agent")
INTERVAL = 0.4
ADDRESS_CHECK_EVERY = 5.0      # seconds between looks at lo (an `ip` process each)
REPORT_EVERY = 10.0            # re-sent unchanged (a controller on a new store learns it)


def ensure_address(address: str = resolver.ADDRESS, dev: str = "lo") -> bool:
    """The resolver's address on ``lo`` (a /32, host scope needs no route); True if added."""
    have = json.loads(ip("-j", "-4", "addr", "show", "dev", dev) or "[]")
    if any(a.get("local") == address for link in have for a in link.get("addr_info", [])):
        return False
    ip("addr", "add", f"{address}/32", "dev", dev)
    return True


def resolv_conf() -> Path:
    """Where the host's own resolvers are listed: ``WEFT_RESOLV_CONF`` (the lab: its hosts
    share the machine's /etc), else /etc/resolv.conf."""
    return Path(os.environ.get("WEFT_RESOLV_CONF") or "/etc/resolv.conf")


def parse_names(body: Any) -> dict[int, names.Zone]:
    """The controller's answer as zones by tenant id; entries that do not parse are
    skipped with a warning (the other tenants still resolve)."""
    out: dict[int, names.Zone] = {}
    for t in (body.get("tenants") if isinstance(body, dict) else None) or []:
        try:
            records = [NameRecord(str(t["tenant"]), str(n), str(a), "", bool(p))
                       for n, a, p in t.get("records") or []]
            out[int(t["id"])] = names.Zone.build(records, t.get("subnets") or ())
        except (KeyError, TypeError, ValueError) as exc:
            LOG.warning("controller's names for %r ignored: %s", t, exc)
    return out


@dataclass
class DockerNames:
    """This dockerd's containers' names on weft networks, inspecting only what changed."""

    docker_host: str
    _seen: dict[str, tuple[Any, list[NameRecord]]] = field(default_factory=dict)

    def collect(self) -> list[NameRecord]:
        """Raises dockerd.DockerUnavailable."""
        nets = names.weft_networks(dockerd.get(self.docker_host, "/networks"))
        listed = dockerd.get(self.docker_host, "/containers/json") or []
        out: list[NameRecord] = []
        seen = {}
        for c in listed if isinstance(listed, list) else []:
            cid = str(c.get("Id") or "")
            settings = ((c.get("NetworkSettings") or {}).get("Networks") or {})
            key = json.dumps({k: [v.get("NetworkID"), v.get("IPAddress")]
                              for k, v in settings.items() if isinstance(v, dict)},
                             sort_keys=True)
            if not cid or not any((v or {}).get("NetworkID") in nets
                                   for v in settings.values() if isinstance(v, dict)):
                continue
            cached = self._seen.get(cid)
            if cached is not None and cached[0] == key:
                records = cached[1]
            else:
                records = names.container_records(
                    dockerd.get(self.docker_host, f"/containers/{cid}/json"), nets)
            seen[cid] = (key, records)
            out += records
        self._seen = seen
        out += names.docker0_records(dockerd.get(self.docker_host, "/networks/bridge"))
        return sorted(set(out))


@dataclass
class NameService:
    """Reports names, fetches zones, runs the resolver (one thread: ``run``)."""

    host: str
    urls: tuple[str, ...]
    docker_host: str | None = dockerd.DEFAULT_DOCKER
    interval: float = INTERVAL
    server: resolver.Resolver = field(default_factory=lambda: resolver.Resolver(
        servers=lambda: resolver.upstreams(resolv_conf())))
    _docker: DockerNames | None = None
    _sent: list[NameRecord] | None = None
    _sent_at: float = 0.0
    _api_index: int = 0
    _warned: dict[str, float] = field(default_factory=dict)
    _started: bool = False
    _checked: float = -1e9              # when the address on lo was last looked at

    def _warn(self, what: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._warned.get(what, -1e9) >= 60:
            self._warned[what] = now
            LOG.warning(msg, *args)

    def once(self) -> None:
        import httpx        # lazily, as attach does
        from ovs_agent import attach
        self._ensure_resolver()
        if self.docker_host:
            self._docker = self._docker or DockerNames(self.docker_host)
            try:
                records = self._docker.collect()
            except dockerd.DockerUnavailable as exc:
                records = None
                self._warn("docker", "names: could not ask dockerd (keeping the last "
                           "report): %s", exc)
            now = time.monotonic()
            if records is not None and (records != self._sent
                                        or now - self._sent_at >= REPORT_EVERY):
                body = [r.to_json() for r in records]
                try:
                    self._api_index, _ = attach.first_answer(
                        self.urls, lambda url: _put(url, self.host, body), self._api_index)
                    if records != self._sent:
                        LOG.info("names: reported %d name(s) of this host's containers",
                                 len(records))
                    self._sent, self._sent_at = records, now
                except (httpx.HTTPError, ValueError) as exc:
                    self._sent = None
                    self._warn("put", "names: could not report to %s: %s",
                               ", ".join(self.urls), exc)
        try:
            self._api_index, body = attach.first_answer(
                self.urls, lambda url: _get(url, self.host), self._api_index)
        except (httpx.HTTPError, ValueError) as exc:
            self._warn("get", "names: could not ask %s (serving the last): %s",
                       ", ".join(self.urls), exc)
            return
        zones = parse_names(body)
        zones.setdefault(resolver.DEFAULT_ZONE, names.Zone(authoritative=False))
        zones[resolver.BRIDGE_ZONE] = names.Zone(authoritative=False)
        self.server.zones = zones

    def _ensure_resolver(self) -> None:
        now = time.monotonic()
        if self._started and now - self._checked < ADDRESS_CHECK_EVERY:
            return
        self._checked = now
        try:
            if ensure_address(self.server.address):
                LOG.info("names: %s added to lo", self.server.address)
            if not self._started:
                self.server.start()
                self._started = True
                LOG.info("names: resolver listening on %s:%d", self.server.address,
                         self.server.port)
        except (OSError, RuntimeError) as exc:
            self._warn("resolver", "names: resolver not running (retrying): %s", exc)

    def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                self.once()
            except Exception:  # noqa: BLE001  (a bug must not end the thread)
                LOG.exception("names: a round failed")
            time.sleep(max(0.0, self.interval - (time.monotonic() - started)))


def _headers() -> dict[str, str]:
    from ovs_agent.attach import api_headers
    return api_headers()


def _put(url: str, host: str, body: list[dict]) -> None:
    import httpx
    r = httpx.put(f"{url.rstrip('/')}/v1/hosts/{host}/names", json=body, timeout=3,
                  headers=_headers())
    r.raise_for_status()


def _get(url: str, host: str) -> Any:
    import httpx
    r = httpx.get(f"{url.rstrip('/')}/v1/hosts/{host}/names", timeout=3, headers=_headers())
    if r.status_code == 404:
        return {"tenants": []}
    r.raise_for_status()
    return r.json()
