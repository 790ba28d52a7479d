"""The stats poller: every ``--weft-stats-interval`` seconds, each connected switch's port
stats, meter stats and ACL rule flows, kept as the last `metrics.SwitchStats` per switch.

Why poll and not ask on each scrape: a scrape then costs rendering only, bounded and
independent of how many scrapers there are (two Prometheus servers, a dashboard),
and no scrape ever waits on a slow switch; the switches see three small requests per
interval, whoever reads.  The price is counters up to one interval old
(``weft_stats_age_seconds`` says how old).  The ACL read asks only the ACL feature's
cookie, never learned flows, so what hosts send cannot grow it.

The poller is a thread of its own: it asks through `switch_queries` (its questions
are sent by the OpenFlow thread) and publishes a new mapping in one assignment
(`Core.stats`), which REST threads read without a lock.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from types import MappingProxyType

from controller.core import Core
from controller.flows import COOKIE_ACL, COOKIE_FEATURE_MASK
from controller.metrics import SwitchStats

LOG = logging.getLogger("weft.controller")


def poll_switch(core: Core, dpid: int, previous: SwitchStats | None) -> SwitchStats:
    """One switch's counters now; on failure the previous counters with the error."""
    t0 = time.monotonic()
    side = core.openflow
    try:
        ports = side.dump_port_stats(dpid)
        meters = side.dump_meters(dpid)
        acl = side.dump_flows(dpid, COOKIE_ACL, COOKIE_FEATURE_MASK)
    except (LookupError, TimeoutError) as exc:
        base = previous or SwitchStats(0.0, 0.0)
        return SwitchStats(base.at, time.monotonic() - t0, base.ports, base.meters,
                           base.acl_flows, str(exc), base.errors + 1)
    return SwitchStats(time.time(), time.monotonic() - t0, tuple(ports), tuple(meters),
                       tuple(acl), None, previous.errors if previous else 0)


def poll_once(core: Core) -> Mapping[int, SwitchStats]:
    """Read every connected switch of a host; publish and return the new mapping."""
    old = core.stats
    new: dict[int, SwitchStats] = {}
    for sw in list(core.switches.values()):
        if sw.connected and sw.host:
            new[sw.dpid] = poll_switch(core, sw.dpid, old.get(sw.dpid))
    core.stats = MappingProxyType(new)
    return core.stats


def run(core: Core, interval: float, stop: threading.Event) -> None:
    """Poll until ``stop`` is set (the app's stop)."""
    while not stop.wait(interval):
        try:
            poll_once(core)
        except Exception:  # noqa: BLE001  (a bug here must not end the poller)
            LOG.exception("reading the switches' counters failed")
