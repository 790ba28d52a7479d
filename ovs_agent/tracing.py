"""``POST /v1/trace`` on the agent: OVS's ofproto/trace of one packet on this host's br0.

The body is a packet (``controller.trace.Packet``: in_port, MACs, addresses, protocol,
ports, TTL, tunnel metadata); it is validated field by field and the flow string is
built from the validated values, then run as one argv element of ``ovs-appctl`` (never a
shell).  The answer is OVS's own text; the controller parses it.  Nothing is injected
into the datapath: ofproto/trace only looks the packet up in the flow tables.
"""
from __future__ import annotations

import json
import subprocess
import time

from cluster.hostsfile import BRIDGE
from cluster.tracepacket import Packet

TIMEOUT = 10.0


def handle(body: bytes) -> tuple[int, str, bytes]:
    try:
        doc = json.loads(body or b"null")
        if not isinstance(doc, dict):
            raise ValueError("the body must be a JSON object (a packet)")
        packet = Packet.from_dict(doc)
    except (ValueError, TypeError) as exc:
        return _json(422, {"error": str(exc)[:300], "field": "body"})
    t0 = time.monotonic()
    try:
        done = subprocess.run(["ovs-appctl", "ofproto/trace", BRIDGE, packet.flow()],
                              capture_output=True, text=True, timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return _json(503, {"error": f"ovs-appctl: {exc}"[:300], "field": ""})
    if done.returncode != 0:
        return _json(502, {"error": f"ovs-appctl ofproto/trace: {done.stderr.strip()}"[:500],
                           "field": ""})
    return _json(200, {"flow": packet.flow(), "output": done.stdout,
                       "seconds": round(time.monotonic() - t0, 4)})


def _json(status: int, body: object) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(body).encode()
