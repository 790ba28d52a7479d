"""The I/O shell of `ovs_agent.netsync`: the controller's networks made Docker networks
of this host's dockerd, every `interval` seconds (the agent's `_follow_networks`).

One pass: `GET /v1/networks` from a controller instance, `GET /networks` from dockerd,
`netsync.plan`, then the creates and deletes through dockerd's API (so dockerd calls the
weft plugin as for `docker network create`).  No answer from the controller: nothing is
changed (an unreachable controller is no empty list).  What the pass saw is written to
``status_file`` (JSON: created, adopted, conflicts, waiting, errors) for the operator, and
each new conflict or error is logged once.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ovs_agent import dockerd, netsync

LOG = logging.getLogger("ovs-agent")
DEFAULT_PLUGIN_SOCKET = Path("/run/docker/plugins/weft.sock")
STATUS_NAME = "docker-networks.json"     # beside the agent's subnet file
CREATE_TIMEOUT = 30.0   # dockerd calls the plugin, which asks the controller


def fetch(api_url: str, timeout: float = 3) -> list[netsync.Wanted]:
    """The controller's networks that Docker hosts hold; raises httpx.HTTPError or
    ValueError (an answer that cannot be read)."""
    import httpx        # lazily, as attach does
    from ovs_agent.attach import api_headers
    resp = httpx.get(f"{api_url.rstrip('/')}/v1/networks", timeout=timeout,
                     headers=api_headers())
    resp.raise_for_status()
    return netsync.wanted_from(resp.json())


def report(api_url: str, host: str, doc: dict[str, Any], timeout: float = 3) -> None:
    """Tell one controller what this host did (`PUT /v1/hosts/{host}/docker-networks`);
    raises httpx.HTTPError."""
    import httpx
    from ovs_agent.attach import api_headers
    httpx.put(f"{api_url.rstrip('/')}/v1/hosts/{host}/docker-networks", json=doc,
              timeout=timeout, headers=api_headers()).raise_for_status()


@dataclass
class NetworkKeeper:
    """Keeps this dockerd's weft networks those of the controller (docs/docker.md,
    Tenant networks).  ``plugin_socket``: no socket there, no weft driver to create
    networks with: the pass does nothing (the plugin started later: the next does)."""
    docker_host: str
    status_file: Path
    plugin_socket: Path = DEFAULT_PLUGIN_SOCKET
    last: netsync.Plan | None = None
    doc: dict[str, Any] = field(default_factory=dict)      # the last pass, as reported
    errors: dict[str, str] = field(default_factory=dict)
    _said: dict[str, str] = field(default_factory=dict)     # logged conflicts/waits/errors
    _docker_error: str = ""

    def sync(self, wanted: list[netsync.Wanted]) -> netsync.Plan | None:
        """One pass against ``wanted`` (the controller's answer); the plan it applied,
        None when dockerd or the plugin is not there (nothing changed)."""
        if not self.plugin_socket.exists():
            return None
        try:
            p = self._plan(wanted)
        except dockerd.DockerUnavailable as exc:
            if str(exc) != self._docker_error:
                LOG.warning("docker networks: cannot ask dockerd (retrying every pass): %s",
                            exc)
            self._docker_error = str(exc)
            return None
        self._docker_error = ""
        self.errors = {}
        for e, w in p.replace:
            if self._do(w.name, "DELETE", f"/networks/{e.id}", None, "removed (to recreate: "
                        "it differs from the controller's)"):
                self._do(w.name, "POST", "/networks/create", netsync.create_body(w),
                         f"created (tenant {w.tenant}, subnet {w.subnet})")
        for e in p.delete:
            self._do(e.name, "DELETE", f"/networks/{e.id}", None,
                     "removed (deleted in the controller)")
        for w in p.create:
            self._do(w.name, "POST", "/networks/create", netsync.create_body(w),
                     f"created (tenant {w.tenant}, subnet {w.subnet}"
                     + (f", gateway {w.gateway})" if w.gateway else ", no gateway)"))
        if self.last is None or {e.id for e in p.adopt} != {e.id for e in self.last.adopt}:
            for e in p.adopt:
                LOG.info("docker network %s: adopted (made by hand, fits the controller's "
                         "network)", e.name)
        self._say({**p.conflicts, **p.waiting, **self.errors})
        self.last = p
        self._write_status(p)
        return p

    def _plan(self, wanted: list[netsync.Wanted]) -> netsync.Plan:
        docs = dockerd.get(self.docker_host, "/networks") or []
        weft = [netsync.existing_from(d) for d in docs
                if isinstance(d, dict) and d.get("Driver") == netsync.DRIVER]
        others = {str(d.get("Name")): str(d.get("Driver")) for d in docs
                  if isinstance(d, dict) and d.get("Driver") != netsync.DRIVER}
        # `GET /networks` does not list containers: count them where it matters (the
        # running ones' endpoints, and stopped containers still connected to it)
        counted = {e.id: self._containers(e.id) for e in netsync.stale(wanted, weft)}
        weft = [replace(e, containers=counted.get(e.id)) for e in weft]
        return netsync.plan(wanted, weft, others)

    def _containers(self, network_id: str) -> int:
        doc = dockerd.get(self.docker_host, f"/networks/{network_id}")
        running = (netsync.existing_from(doc).containers or 0) if doc else 0
        query = json.dumps({"network": [network_id]})
        listed = dockerd.get(self.docker_host, f"/containers/json?all=1&filters={quote(query)}")
        return max(running, len(listed) if isinstance(listed, list) else 0)

    def _do(self, name: str, method: str, path: str, body: Any, done: str) -> bool:
        try:
            dockerd.call(self.docker_host, method, path, body,
                         timeout=CREATE_TIMEOUT if method == "POST" else 10)
        except dockerd.DockerUnavailable as exc:
            self.errors[name] = f"docker network {name}: {method} failed: {exc}"
            return False
        LOG.info("docker network %s: %s", name, done)
        return True

    def _say(self, now: dict[str, str]) -> None:
        """Log each conflict, wait or error once (and when it ends)."""
        for name, why in now.items():
            if self._said.get(name) != why:
                LOG.warning("docker network %s: %s", name, why)
        for name in self._said.keys() - now.keys():
            LOG.info("docker network %s: no longer in conflict or waiting", name)
        self._said = dict(now)

    def _write_status(self, p: netsync.Plan) -> None:
        from ovs_agent.hostnet import write_if_changed
        made = [e.name for e in p.ok] + [w.name for w in p.create] + \
            [w.name for _, w in p.replace]
        doc = {"created": sorted(n for n in made if n not in self.errors),
               "adopted": sorted(e.name for e in p.adopt),
               "conflicts": dict(sorted(p.conflicts.items())),
               "waiting": dict(sorted(p.waiting.items())),
               "errors": dict(sorted(self.errors.items()))}
        self.doc = doc
        try:
            write_if_changed(self.status_file, json.dumps(doc, indent=1) + "\n")
        except OSError as exc:
            LOG.debug("could not write %s: %s", self.status_file, exc)
