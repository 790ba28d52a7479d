"""Routing's flows on a real ovs-vswitchd: accepted, read back equal, forwarding as modelled.

One private ovsdb-server and ovs-vswitchd (a ``dummy`` datapath: ports that are no
kernel interfaces, nothing leaves the process) in a temporary directory; the routing
switch of ``tests.unit.test_route_pipeline`` (gateways, FIB, egress, a default-deny
ACL, a tenant meter) is sent as the controller encodes it (``controller.ofmsg.encode``)
over the bridge's OpenFlow management socket.  OVS must refuse nothing, its flow
stats must read back as exactly the desired flows (a controller restart then sends 0
flow-mods), and ``ofproto/trace`` must show what the fake switch says: the ARP and
echo answers, routed frames with TTL - 1 and rewritten MACs, TTL 1 dropped in the
datapath (no slow path), egress out of the tenant's gateway port and replies back.
Heavy tests' rule: run it under ``flock /tmp/weft-heavy.lock`` (it starts OVS daemons).
"""
from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from os_ken.ofproto import ofproto_parser
from os_ken.ofproto import ofproto_v1_3 as ofp

from controller import ofmsg
from controller.flows import SwitchState
from controller.model import RateLimit, Route
from controller.pipeline import desired_state
from tests.unit.test_route_pipeline import ALLOW_HTTPS, IP, MAC, PORTS, TOPO, TUNNELS

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not SCHEMA.exists()
    or not all(shutil.which(c) for c in ("ovsdb-server", "ovs-vswitchd", "ovs-vsctl",
                                         "ovs-appctl", "ovsdb-tool")),
    reason="needs root and Open vSwitch")

ROUTING = replace(TOPO, routes=(Route("red", "0.0.0.0/0", IP["b"]),), acls=(ALLOW_HTTPS,),
                  acl_deny=frozenset({"red"}), limits=(RateLimit(1, "h1", 1000, tenant="red"),))
GW = "0a:77:66:00:03:e8"


@dataclass
class Ovs:
    run: Path

    def vsctl(self, *args: str) -> None:
        subprocess.run(["ovs-vsctl", f"--db=unix:{self.run}/db.sock", "--no-wait", *args],
                       check=True, capture_output=True, timeout=30)

    def trace(self, flow: str) -> str:
        out = subprocess.run(["ovs-appctl", "-t", f"{self.run}/vs.ctl", "ofproto/trace", "br0",
                              flow], check=True, capture_output=True, text=True, timeout=30)
        (line,) = [x for x in out.stdout.splitlines() if x.startswith("Datapath actions:")]
        return line.removeprefix("Datapath actions:").strip()


def _wait_for(path: Path, what: str) -> None:
    for _ in range(100):
        if path.exists():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} did not come up ({path})")


@pytest.fixture
def ovs() -> Iterator[Ovs]:
    run = Path(tempfile.mkdtemp(prefix="weft-ovs-routing-"))
    db = run / "conf.db"
    env = {**os.environ, "OVS_RUNDIR": str(run), "OVS_LOGDIR": str(run),
           "OVS_DBDIR": str(run)}
    subprocess.run(["ovsdb-tool", "create", str(db), str(SCHEMA)], check=True, timeout=30)
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen(
            ["ovsdb-server", str(db), f"--remote=punix:{run}/db.sock", "--no-chdir",
             f"--unixctl={run}/ovsdb.ctl", f"--log-file={run}/ovsdb.log"], env=env))
        _wait_for(run / "db.sock", "ovsdb-server")
        procs.append(subprocess.Popen(
            ["ovs-vswitchd", f"unix:{run}/db.sock", "--no-chdir", "--enable-dummy",
             f"--unixctl={run}/vs.ctl", f"--log-file={run}/vs.log"], env=env))
        o = Ovs(run)
        o.vsctl("add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=dummy",
                "protocols=OpenFlow13")
        for name, n in PORTS["h1"].items():
            o.vsctl("add-port", "br0", name, "--", "set", "interface", name, "type=dummy",
                    f"ofport_request={n}")
        _wait_for(run / "br0.mgmt", "br0's management socket")
        yield o
    finally:
        for p in reversed(procs):           # only what this fixture started, by its pid
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        shutil.rmtree(run, ignore_errors=True)


class _OpenFlow:
    """A bare OpenFlow 1.3 connection to the bridge's management socket."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(str(path))
        self.sock.sendall(struct.pack("!BBHI", 4, ofp.OFPT_HELLO, 8, 1))
        assert self.recv()[0] == ofp.OFPT_HELLO

    def recv(self) -> tuple[int, bytes]:
        head = self._exactly(8)
        _, kind, length, _ = struct.unpack("!BBHI", head)
        return kind, head + self._exactly(length - 8)

    def _exactly(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            assert chunk, "the switch closed the connection"
            buf += chunk
        return buf

    def send_state(self, state: SwitchState, flows_only: bool = False) -> list[bytes]:
        """Meters, groups, flows as the controller encodes them, then a barrier: errors.
        ``flows_only``: every flow deleted first, groups and meters kept."""
        msgs = [] if flows_only else [
            *(ofmsg.encode(m, "add") for m in sorted(state.meters, key=lambda m: m.meter_id)),
            *(ofmsg.encode(g, "add") for g in sorted(state.groups, key=lambda g: g.group_id))]
        if flows_only:
            wipe = ofmsg.delete_by_cookie(ofmsg.OFP13, 0, 0)
            wipe.set_xid(0)
            wipe.serialize()
            msgs.append(bytes(wipe.buf))
        msgs += [ofmsg.encode(f, "add") for f in sorted(state.flows, key=repr)]
        self.sock.sendall(b"".join(msgs) + struct.pack("!BBHI", 4, ofp.OFPT_BARRIER_REQUEST, 8,
                                                       99))
        errors = []
        while True:
            kind, raw = self.recv()
            if kind == ofp.OFPT_ERROR:
                errors.append(raw)
            if kind == ofp.OFPT_BARRIER_REPLY:
                return errors

    def flows(self) -> frozenset:
        req = struct.pack("!HH4xB3xII4xQQ", ofp.OFPMP_FLOW, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY,
                          ofp.OFPG_ANY, 0, 0) + struct.pack("!HH4x", ofp.OFPMT_OXM, 4)
        self.sock.sendall(struct.pack("!BBHI", 4, ofp.OFPT_MULTIPART_REQUEST, 8 + len(req), 100)
                          + req)
        got: set = set()
        while True:
            kind, raw = self.recv()
            if kind != ofp.OFPT_MULTIPART_REPLY:
                continue
            msg = ofproto_parser.msg(ofmsg.OFP13, 4, kind, len(raw), 100, bytearray(raw))
            got |= ofmsg.flows_from_stats(msg.body)
            if not struct.unpack_from("!H", raw, 10)[0] & ofp.OFPMPF_REPLY_MORE:
                return frozenset(got)


def test_routing_flows_are_accepted_read_back_equal_and_forward_as_modelled(ovs):
    state = desired_state("h1", ROUTING, PORTS["h1"], TUNNELS["h1"])
    conn = _OpenFlow(ovs.run / "br0.mgmt")
    assert conn.send_state(state) == []
    assert conn.flows() == state.flows            # a controller restart: 0 flow-mods

    # without ACL and meter (recirculations, meter actions make traces longer to read) and
    # without the static default route (it outranks egress)
    plain = desired_state("h1", replace(ROUTING, acls=(), acl_deny=frozenset(), limits=(),
                                        routes=()),
                          PORTS["h1"], TUNNELS["h1"])
    assert conn.send_state(plain, flows_only=True) == []
    assert conn.flows() == plain.flows
    a, e = f"in_port=1,dl_src={MAC['a']}", f"nw_src={IP['a']}"
    # the datapath numbers ports its own way: output to a port is checked by name below
    assert ovs.trace(f"{a},dl_dst=ff:ff:ff:ff:ff:ff,arp,arp_op=1,arp_sha={MAC['a']},"
                     f"arp_spa={IP['a']},arp_tpa=10.10.1.1").startswith(
        f"set(eth(src={GW},dst={MAC['a']})),set(arp(sip=10.10.1.1,tip={IP['a']},op=2,"
        f"sha={GW},tha={MAC['a']}))")
    assert ovs.trace(f"{a},dl_dst={GW},icmp,{e},nw_dst=10.10.1.1,icmp_type=8,nw_ttl=64"
                     ).startswith(f"set(eth(src={GW},dst={MAC['a']})),set(ipv4(src=10.10.1.1,"
                                  f"dst={IP['a']})),set(icmp(type=0,code=0))")
    routed = ovs.trace(f"{a},dl_dst={GW},tcp,{e},nw_dst={IP['e']},nw_ttl=64,tp_dst=80")
    assert routed.startswith(f"set(eth(src=0a:77:66:00:03:e9,dst={MAC['e']})),"
                             "set(ipv4(ttl=63)),")
    assert ovs.trace(f"{a},dl_dst={GW},tcp,{e},nw_dst={IP['b']},nw_ttl=1,tp_dst=80") == "drop"
    out = ovs.trace(f"{a},dl_dst={GW},tcp,{e},nw_dst=8.8.8.8,nw_ttl=64,tp_dst=80")
    assert out.startswith(f"set(eth(src={GW},dst=0a:77:68:00:03:e8)),set(ipv4(ttl=63)),")
    back = ovs.trace(f"in_port=20,dl_src=0a:77:68:00:03:e8,dl_dst=0a:77:67:00:03:e8,tcp,"
                     f"nw_src=8.8.8.8,nw_dst={IP['a']},nw_ttl=64,tp_src=80")
    assert back.startswith(f"set(eth(src={GW},dst={MAC['a']})),set(ipv4(ttl=63)),")
    assert ovs.trace(f"in_port=20,dl_src=0a:77:68:00:03:e8,dl_dst=0a:77:67:00:03:e8,tcp,"
                     f"nw_src=8.8.8.8,nw_dst={IP['a']},nw_ttl=1,tp_src=80") == "drop"
    # another tenant's gateway MAC as the source: dropped before anything
    assert ovs.trace(f"{a.replace(MAC['a'], '0a:77:66:00:07:d0')},dl_dst={MAC['e']},tcp,{e},"
                     f"nw_dst={IP['e']}") == "drop"


def test_ipv6_gateway_flows_are_accepted_read_back_equal_and_answer_and_route(ovs):
    """The dual-stack cluster of test_route6_pipeline with an IPv6 ACL: every flow accepted
    (the NA responder's set_fields pass OVS's prerequisite checks, nd_reserved and
    nd_options_type included) and read back equal; an NS for the IPv6 gateway becomes an
    NA out of its port; routed IPv6 leaves with hop limit 63."""
    from controller.model import AclRule
    from tests.unit.test_route6_pipeline import GW6, IP6, TOPO6
    topo = replace(TOPO6, acls=(AclRule(1, "red", 10, "allow", "ingress", ip_proto="tcp",
                                        local=IP6["e"], port=80),),
                   acl_deny=frozenset({"red"}))
    state = desired_state("h1", topo, PORTS["h1"], TUNNELS["h1"])
    conn = _OpenFlow(ovs.run / "br0.mgmt")
    assert conn.send_state(state) == []
    assert conn.flows() == state.flows
    plain = desired_state("h1", TOPO6, PORTS["h1"], TUNNELS["h1"])
    assert conn.send_state(plain, flows_only=True) == []
    a = f"in_port=1,dl_src={MAC['a']}"
    na = ovs.trace(f"{a},dl_dst=33:33:ff:00:00:01,icmp6,ipv6_src={IP6['a']},"
                   f"ipv6_dst=ff02::1:ff00:1,icmpv6_type=135,icmpv6_code=0,nd_target={GW6['red']},"
                   f"nd_sll={MAC['a']},nw_ttl=255")
    print(f"\nNS for {GW6['red']}: {na}")
    assert f"set(eth(src={GW},dst={MAC['a']}))" in na and "type=136" in na, na
    assert f"tll={GW}" in na or f"sll={GW}" in na, na
    routed = ovs.trace(f"{a},dl_dst={GW},tcp6,ipv6_src={IP6['a']},ipv6_dst={IP6['e']},"
                       "nw_ttl=64,tp_dst=80")
    print(f"routed IPv6: {routed}")
    assert routed.startswith(f"set(eth(src=0a:77:66:00:03:e9,dst={MAC['e']})),") \
        and "hlimit=63" in routed, routed
    assert ovs.trace(f"{a},dl_dst={GW},tcp6,ipv6_src={IP6['a']},ipv6_dst={IP6['e']},"
                     "nw_ttl=1,tp_dst=80") == "drop"


def test_a_configured_ipv6_gateway_static_ipv6_routes_and_no_gateway6_on_real_ovs(ovs):
    """tests/unit/test_gateway6.py's cluster (red's IPv6 gateway fd00:1::fe, ::1 a port's)
    with static IPv6 routes, then red without gateway6: every flow accepted and read
    back equal; an NS for fd00:1::fe becomes an NA, a packet to fd00:99::/48 is routed
    with hop limit 63, and without gateway6 IPv6 to the gateway MAC drops."""
    from controller.model import Route
    from tests.unit.test_gateway6 import GW6, RED6, _topo
    from tests.unit.test_route6_pipeline import IP6
    topo = replace(_topo(), routes=(Route("red", "fd00:99::/48", IP6["e"]),
                                    Route("red", "::/0", "fd00:2::77", "02:00:00:00:00:77")))
    state = desired_state("h1", topo, PORTS["h1"], TUNNELS["h1"])
    conn = _OpenFlow(ovs.run / "br0.mgmt")
    assert conn.send_state(state) == []
    assert conn.flows() == state.flows
    a = f"in_port=1,dl_src={MAC['a']}"
    na = ovs.trace(f"{a},dl_dst=33:33:ff:00:00:fe,icmp6,ipv6_src={IP6['a']},"
                   f"ipv6_dst=ff02::1:ff00:fe,icmpv6_type=135,icmpv6_code=0,"
                   f"nd_target={GW6['red']},nd_sll={MAC['a']},nw_ttl=255")
    assert f"set(eth(src={GW},dst={MAC['a']}))" in na and "type=136" in na, na
    routed = ovs.trace(f"{a},dl_dst={GW},tcp6,ipv6_src={IP6['a']},ipv6_dst=fd00:99::5,"
                       "nw_ttl=64,tp_dst=80")
    print(f"\nstatic IPv6 route: {routed}")
    assert routed.startswith(f"set(eth(src=0a:77:66:00:03:e9,dst={MAC['e']})),") \
        and "hlimit=63" in routed, routed
    none = desired_state("h1", _topo(replace(RED6, gateway6=None)), PORTS["h1"], TUNNELS["h1"])
    assert conn.send_state(none, flows_only=True) == []
    assert conn.flows() == none.flows
    assert ovs.trace(f"{a},dl_dst={GW},tcp6,ipv6_src={IP6['a']},ipv6_dst={IP6['e']},"
                     "nw_ttl=64,tp_dst=80") == "drop"
