"""One representative switch's whole desired state, pinned to a stored snapshot.

The model uses every feature of the pipeline at once (access, trunk and uplink
ports, port security with IPs and address pairs, VLANs, tunnels to two peers,
port and tenant rate limits in both units, QoS rules, ACLs with and without
default-deny), so any change to any flow, group or meter of any feature shows
here as a line of the diff.  A deliberate change regenerates the snapshot:
``WEFT_UPDATE_SNAPSHOT=1 pytest tests/unit/test_pipeline_snapshot.py``; review
the diff of the ``.txt`` like code.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from controller.model import (
    DOCKER_LINK_PORT, TRUNK, AclRule, Binding, QosRule, RateLimit, Route, Tenant, Topology,
)
from controller.pipeline import desired_state

SNAPSHOT = Path(__file__).parent / "snapshots" / "pipeline_h1.txt"

TOPO = Topology(
    tenants=(Tenant("red", 100, vlan=10), Tenant("blue", 200), Tenant("green", 300, vlan=30)),
    bindings=(
        Binding("h1", "r1", "red", mac="02:00:00:00:00:01", ips=("10.0.0.1", "10.0.1.0/24"),
                allowed_address_pairs=(("10.9.0.1", "02:00:00:00:00:09"), ("10.8.0.1", None))),
        Binding("h1", "r2", "red", mac="02:00:00:00:00:02"),
        Binding("h1", "b1", "blue"),
        Binding("h1", "trk", "blue", TRUNK, trunk=("red", "green")),
        Binding("h1", "up", None, TRUNK, trunk=("green",), uplink=True),
        Binding("h2", "r3", "red", mac="02:00:00:00:00:03"),
        Binding("h2", "g2", "green", mac="02:00:00:00:00:04"),
        Binding("h3", "b3", "blue", mac="02:00:00:00:00:01"),
    ),
    hosts=("h1", "h2", "h3"),
    limits=(RateLimit(1, "h1", 1000, burst_kb=100, port="r1"),
            RateLimit(2, "h1", None, port="trk", pps=500, burst_pkts=20),
            RateLimit(3, "h1", 5000, tenant="red"),
            RateLimit(4, "h1", None, tenant="blue", pps=900),
            RateLimit(5, "h2", 700, tenant="green")),
    rules=(QosRule(10, "red", 100, (("ip_proto", "tcp"), ("dst_port", 80)), kbps=2000,
                   set_dscp=46),
           QosRule(11, "blue", 50, {"dst": "10.0.0.0/24"}, set_dscp=10, queue=1),
           QosRule(12, "green", 1, {"ip_proto": "udp"}, set_dscp=8)),
    acls=(AclRule(1, "red", 100, "allow", "ingress", ip_proto="tcp", local="10.0.0.2", port=80),
          AclRule(2, "red", 5, "drop", "egress", ip_proto="udp", local="10.0.0.0/24",
                  remote="10.9.8.7", port=53),
          AclRule(3, "blue", 6, "allow", "ingress", ip_proto="icmp", icmp_type=8)),
    acl_deny=frozenset({"red"}),
)
PORTS = {"r1": 1, "r2": 2, "b1": 3, "trk": 4, "up": 5, DOCKER_LINK_PORT: 6,
         "tun-h2": 10, "tun-h3": 11, "stray": 12}
TUNNELS = {"h2": "tun-h2", "h3": "tun-h3"}


def render() -> str:
    """The switch's desired state, one sorted line per flow, group and meter."""
    state = desired_state("h1", TOPO, PORTS, TUNNELS)
    lines = [*sorted(repr(f) for f in state.flows), *sorted(repr(g) for g in state.groups),
             *sorted(repr(m) for m in state.meters)]
    return "\n".join(lines) + "\n"


def test_desired_state_of_a_switch_using_every_feature_is_the_snapshot():
    got = render()
    if os.environ.get("WEFT_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(got)
    assert got.splitlines() == SNAPSHOT.read_text().splitlines()


ROUTING_SNAPSHOT = Path(__file__).parent / "snapshots" / "pipeline_routing_h1.txt"


def render_routing() -> str:
    """A routing switch (tests.unit.test_route_pipeline's cluster: two tenants with the
    same addresses, a second network on a trunk, egress ports, a static default route,
    a default-deny ACL and a tenant rate limit), one sorted line per flow/group/meter."""
    from tests.unit.test_route_pipeline import ALLOW_HTTPS, IP, PORTS, TOPO, TUNNELS
    topo = replace(TOPO, routes=(Route("red", "0.0.0.0/0", IP["b"]),), acls=(ALLOW_HTTPS,),
                   acl_deny=frozenset({"red"}), limits=(RateLimit(1, "h1", 1000, tenant="red"),))
    state = desired_state("h1", topo, PORTS["h1"], TUNNELS["h1"])
    lines = [*sorted(repr(f) for f in state.flows), *sorted(repr(g) for g in state.groups),
             *sorted(repr(m) for m in state.meters)]
    return "\n".join(lines) + "\n"


def test_desired_state_of_a_routing_switch_is_the_snapshot():
    got = render_routing()
    if os.environ.get("WEFT_UPDATE_SNAPSHOT"):
        ROUTING_SNAPSHOT.write_text(got)
    assert got.splitlines() == ROUTING_SNAPSHOT.read_text().splitlines()
