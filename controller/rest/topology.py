"""/v1/topology (the live picture as JSON, token required) and /ui (the page that draws
it, open: it is a static file that holds no data; see docs/observability.md "Live
picture" for why the token travels in the page's fetches, never in its URL).

The route is thin: `read_live` asks each connected switch for its ports, and
`controller.topology.assemble` does the rest.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import re
from functools import cache
from importlib import resources
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from os_ken.lib import ofctl_v1_3 as ofctl

from controller import topology as T
from controller.core import Core
from controller.rest.deps import CoreDep

LOG = logging.getLogger("weft.topology")
router = APIRouter()


def read_live(core: Core) -> dict[str, T.LivePorts | None]:
    """Host -> its switch's ports (state and counters), None when not connected or it
    did not answer.  The one place the picture reads switches: port desc through
    os-ken's ofctl reader (as /stats/portdesc), counters through `switch_queries`, the
    one port-stats reader (the metrics poller's too).  Read live, not from the
    poller's last read: the page shows rates per second, the poller may run every 5 s."""
    out: dict[str, T.LivePorts | None] = {}
    for sw in core.switches.values():           # one immutable snapshot
        if not sw.host:
            continue
        out[sw.host] = None
        if not sw.connected:
            continue
        try:
            dp = core.openflow.ofctl_datapath(sw.dpid)
            descs = ofctl.get_port_desc(dp, dp.waiters).get(str(sw.dpid), [])
            stats = core.openflow.dump_port_stats(sw.dpid)
        except (LookupError, TimeoutError) as exc:
            LOG.info("topology: switch %s did not answer: %s", sw.host, exc)
            continue
        out[sw.host] = T.live_ports(descs, stats) if descs else None
    return out


@router.get("/v1/topology")
def topology(core: CoreDep) -> dict[str, Any]:
    """Hosts, tunnels and their state, tenants and networks, bound ports with their
    containers and the switches' counters of them (rx: received by the switch from the
    port).  State the controller does not know is ``unknown``."""
    cluster = core.cluster
    return T.assemble(cluster, core.switches, core.store.version, core.store.tenants(),
                      core.store.bindings(), core.store.container_names(), read_live(core))


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@cache
def page() -> tuple[bytes, str]:
    """The page and its Content-Security-Policy: its own one inline script and one
    style only (by hash), fetches to this origin only, no frames, forms or other origin."""
    html = resources.files("controller.rest").joinpath("ui.html").read_text()
    script = re.search(r"<script>(.*?)</script>", html, re.S)
    style = re.search(r"<style>(.*?)</style>", html, re.S)
    assert script and style, "ui.html has one <script> and one <style>"
    csp = (f"default-src 'none'; script-src {_sha256(script[1])}; "
           f"style-src {_sha256(style[1])}; connect-src 'self'; img-src data:; "
           "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return html.encode(), csp


@router.get("/ui", response_class=HTMLResponse, include_in_schema=False)
def ui() -> HTMLResponse:
    """The read-only page: static, no data (open without the token; its fetches send it)."""
    body, csp = page()
    return HTMLResponse(body, headers={
        "Content-Security-Policy": csp, "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})
