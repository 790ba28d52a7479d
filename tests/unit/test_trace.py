"""controller.trace on real ``ovs-appctl ofproto/trace`` output captured from a lab (OVS
3.1, userspace datapath; tests/unit/trace_samples), the multi-hop walk with a fake
``ask``, the verdicts' causes, and the agent's trace handler (validation before any
command runs)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cluster.tracepacket import Packet
from controller.pipeline.tables import CLASSIFY, FIB, L2, POLICY
from controller.trace import (Endpoint, HostView, cookie_meaning, drop_cause, parse, render,
                              table_name, verdict, walk)
from ovs_agent import httpserver, tracing

SAMPLES = Path(__file__).parent / "trace_samples"


def sample(name: str) -> str:
    return (SAMPLES / f"{name}.txt").read_text()


def test_parse_to_tunnel():
    h = parse(sample("to_tunnel"))
    assert [s.table for s in h.steps] == [CLASSIFY, POLICY, 2, L2]
    assert h.outputs == [1]
    assert h.final["tun_id"] == "0x3e8" and h.final["dl_dst"] == "42:f8:ee:d8:67:91"
    assert h.steps[0].cookie == 0x5746080000000000          # port security's allow
    assert cookie_meaning(h.steps[-1].cookie, L2, 100) == "a bound endpoint's MAC"
    assert "output:1" in h.steps[-1].actions


def test_parse_routed_keeps_the_rewrites():
    h = parse(sample("routed"))
    names = [table_name(s.table) for s in h.steps]
    assert names == ["classify", "policy", "qos", "l2", "gateway", "fib", "routed", "l2"]
    fib = h.steps[names.index("fib")]
    assert cookie_meaning(fib.cookie, FIB, fib.priority) == "route of tenant 1002"
    assert h.final["nw_ttl"] == "63" and h.final["dl_src"] == "0a:77:66:00:03:ec"
    assert h.outputs == [1]


def test_parse_acl_drop_after_recirculation():
    h = parse(sample("acl_rule_drop"))
    assert h.outputs == []
    last = h.steps[-1]
    assert last.table == POLICY and last.actions == ("drop",)
    cause = drop_cause(last, {1: "blue"})
    assert cause["cause"] == "acl" and cause["rule"] == 1 and cause["tenant"] == "blue"
    assert "ACL rule 1 of tenant blue" in cause["detail"]


def test_parse_port_security_drop():
    h = parse(sample("portsec_drop"))
    assert h.outputs == [] and len(h.steps) == 1
    assert drop_cause(h.steps[0])["cause"] == "port security"


def test_parse_flood_skips_the_input_port():
    h = parse(sample("flood_other_tenant"))
    assert h.outputs == [1]          # bucket 0 (the input port) is skipped by OVS
    assert h.tun_ids == {1: 0x3E8}   # set in the bucket: the Final flow does not show it
    assert "tun_id" not in h.final
    assert h.steps[-1].table == 4


def test_packet_refuses_what_could_change_the_flow_string():
    base = {"in_port": 3, "dl_src": "02:00:00:00:00:01", "dl_dst": "02:00:00:00:00:02",
            "nw_src": "10.0.0.1", "nw_dst": "10.0.0.2"}
    assert Packet.from_dict(base).flow().startswith("icmp,in_port=3,dl_src=")
    for bad in ({"in_port": "3,actions=drop"}, {"dl_src": "02:00:00:00:00:01,in_port=9"},
                {"nw_dst": "10.0.0.2 "}, {"proto": "arp"}, {"dst_port": 80},
                {"in_port": True}, {"tunnel": [1, "10.0.0.1"]}, {"junk": 1}):
        with pytest.raises((ValueError, TypeError)):
            Packet.from_dict({**base, **bad})


HOSTS = {
    "host1": HostView("host1", "192.168.50.10", {"vx-host2": 1, "wcda05bb24286": 3}, {"vx-host2": "host2"}),
    "host2": HostView("host2", "192.168.50.11", {"vx-host1": 1, "wc3f667973d18": 3}, {"vx-host1": "host1"}),
}
RED1 = Endpoint("host1", "wcda05bb24286", "red", "red", "b2:bb:4c:81:f6:f4", ("10.10.0.1",))
RED2 = Endpoint("host2", "wc3f667973d18", "red", "red", "42:f8:ee:d8:67:91", ("10.10.0.2",))
BINDINGS = {(e.host, e.port): e for e in (RED1, RED2)}


def test_walk_follows_the_tunnel_with_the_peer_metadata():
    asked = []

    def ask(host: str, p: Packet) -> str:
        asked.append((host, p))
        return sample("to_tunnel" if host == "host1" else "from_tunnel_delivered")
    p = Packet(3, RED1.mac or "", RED2.mac or "", "10.10.0.1", "10.10.0.2")
    hops = walk("host1", p, HOSTS, BINDINGS, ask)
    assert [h["host"] for h in hops] == ["host1", "host2"]
    peer = asked[1][1]
    assert peer.in_port == 1 and peer.tunnel == (0x3E8, "192.168.50.10", "192.168.50.11")
    assert "tun_id=0x3e8,tun_src=192.168.50.10,tun_dst=192.168.50.11" in peer.flow()
    v = verdict(hops, RED1, "10.10.0.2", RED2)
    assert v["result"] == "delivered" and v["host"] == "host2"
    res = {"src": RED1.label(), "dst": "10.10.0.2", "tenant": "red", "packet": p.as_dict(),
           "hops": hops, "verdict": v}
    text = render(json.loads(json.dumps(res)))
    assert "out: tunnel vx-host2 to host2" in text and text.splitlines()[-1].startswith(
        "verdict: DELIVERED")


def test_verdicts_name_the_cause():
    blue2 = Endpoint("host2", "wcf6475dd9793", "blue", "blue", "3a:a5:84:fa:fe:6e",
                     ("10.10.0.12",))
    hops = walk("host1", Packet(3, RED1.mac or "", blue2.mac or "", "10.10.0.1", "10.10.0.12"),
                HOSTS, BINDINGS, lambda h, p: sample("flood_other_tenant" if h == "host1"
                                                     else "from_tunnel_delivered"))
    assert verdict(hops, RED1, "10.10.0.12", blue2)["cause"] == "isolation"
    assert verdict(hops, RED1, "10.10.0.12", None)["cause"] == "no binding"
    spoof = walk("host1", Packet(3, RED1.mac or "", RED2.mac or "", "10.10.0.99", "10.10.0.2"),
                 HOSTS, BINDINGS, lambda h, p: sample("portsec_drop"))
    assert verdict(spoof, RED1, "10.10.0.2", RED2)["cause"] == "port security"


def test_walk_reports_an_unreachable_agent():
    def ask(host: str, p: Packet) -> str:
        raise ConnectionError("refused")
    hops = walk("host1", Packet(3, RED1.mac or "", RED2.mac or "", "10.10.0.1", "10.10.0.2"),
                HOSTS, BINDINGS, ask)
    assert verdict(hops, RED1, "10.10.0.2", RED2)["result"] == "unknown"


def test_agent_handler_validates_before_running_anything(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("ovs-appctl ran on bad input")
    monkeypatch.setattr(subprocess, "run", boom)
    for body in (b"not json", b"[]", json.dumps({"in_port": "1;reboot"}).encode(),
                 json.dumps({"in_port": 1, "dl_src": "x", "dl_dst": "y",
                             "nw_src": "1.2.3.4", "nw_dst": "1.2.3.5"}).encode()):
        status, _, out = tracing.handle(body)
        assert status == 422 and json.loads(out)["field"] == "body"


def test_agent_listener_routes_and_token():
    import urllib.error
    import urllib.request
    routes = {("GET", "/x"): lambda body: httpserver.json_answer(200, {"ok": True})}
    server = httpserver.serve(("127.0.0.1", 0), "s3cret", routes)
    port = server.server_address[1]
    try:
        def get(token: str | None, path: str = "/x") -> int:
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
            if token:
                req.add_header("Authorization", f"Bearer {token}")
            try:
                return urllib.request.urlopen(req, timeout=5).status
            except urllib.error.HTTPError as e:
                return e.code
        assert get(None) == 401 and get("nope") == 401
        assert get("s3cret") == 200 and get("s3cret", "/y") == 404
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ValueError, match="without a token"):
        httpserver.serve(("10.0.0.1", 0), "", routes)


def test_a_rate_limit_is_named_not_applied():
    """A port rate limit is a meter instruction on the port's CLASSIFY flow; OVS prints it
    as ``meter:N`` and does not run it in a trace.  (The captured samples carry none: this
    one is the to_tunnel sample with the meter line OVS writes for it.)"""
    text = sample("to_tunnel").replace("    write_metadata:0x3e8/0x100ffffff",
                                       "    meter:7\n    write_metadata:0x3e8/0x100ffffff", 1)
    hops = walk("host1", Packet(3, RED1.mac or "", RED2.mac or "", "10.10.0.1", "10.10.0.2"),
                HOSTS, BINDINGS, lambda h, p: text if h == "host1" else
                sample("from_tunnel_delivered"))
    assert hops[0]["meters"] == [7] and hops[1]["meters"] == []
    res = {"src": RED1.label(), "dst": "10.10.0.2", "tenant": "red",
           "packet": Packet(3, RED1.mac or "", RED2.mac or "", "10.10.0.1", "10.10.0.2").as_dict(),
           "hops": hops, "verdict": verdict(hops, RED1, "10.10.0.2", RED2),
           "meters": {"7": "QoS limit 7: 1000 kbit/s on host1/wcda05bb24286"}}
    assert "rate limit: QoS limit 7: 1000 kbit/s on host1/wcda05bb24286" in render(res)


def test_flood_to_several_tunnels_keeps_every_bucket():
    """With three hosts a flood group has a bucket per tunnel, each output followed by
    its trip through br-phy (indented): the buckets after it are still br0's."""
    text = sample("flood_other_tenant")
    nested = text[text.index("        bridge(\"br-phy\")"):text.index("\nFinal flow:")]
    third = ("    bucket 2\n            set_field:0x3e8->tun_id\n            output:2\n"
             "             -> output to native tunnel\n\n")
    h = parse(text.replace(nested, nested + "\n" + third + nested, 1))
    assert h.outputs == [1, 2] and h.tun_ids == {1: 0x3E8, 2: 0x3E8}
    assert h.steps[-1].table == 4 and "output:2" in h.steps[-1].actions
