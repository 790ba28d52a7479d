"""`weftctl trace` / POST /v1/trace against real traffic (issue 24 item 1).

One lab (two hosts, weft's controller, agents listening on the mgmt network): tenants red
and blue share 10.10.0.0/24 (different addresses), blue has ACL rule "drop tcp/8080",
tenant green routes between its networks green-a and green-b.  For many seeded random
pairs (print the seed), across hosts and tenants, allowed and denied (other tenant, the
ACL rule, a spoofed source, routed, no binding), the test sends real traffic (ping, or a
TCP connection whose echo comes back) inside the lab's namespaces, traces the same
packet through the REST API, and asserts the trace's verdict equals what happened, and
for drops names the expected cause.  It also times the REST call (p50/p99), and checks
that the agent's listener refuses requests without the token and bad input.
"""
from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time

import pytest

from tests.conftest import converged_lab, lab_name
from tests.lab.test_acl import CLIENT, Servers
from weft_lab import cluster as C
from weft_lab.lab import AGENT_PORT
from weft_lab.nodes import CTL, ns_name
from weft_lab.topology import parse
from weft_lab.traffic import node_run

TOPO = """
name: {name}
tunnel_type: vxlan
controller: true
agent: true
tenants:
  - {{name: red, subnet: 10.10.0.0/24}}
  - {{name: blue, subnet: 10.10.0.0/24}}
  - name: green
    networks:
      - {{name: green-a, subnet: 10.20.1.0/24}}
      - {{name: green-b, subnet: 10.20.2.0/24}}
hosts:
  - name: host1
    containers:
      - {{name: red1, attach: br0, tenant: red, ip: 10.10.0.1/24}}
      - {{name: red3, attach: br0, tenant: red, ip: 10.10.0.3/24}}
      - {{name: blue1, attach: br0, tenant: blue, ip: 10.10.0.11/24}}
      - {{name: ga1, attach: br0, network: green-a, ip: 10.20.1.11/24}}
  - name: host2
    containers:
      - {{name: red2, attach: br0, tenant: red, ip: 10.10.0.2/24}}
      - {{name: blue2, attach: br0, tenant: blue, ip: 10.10.0.12/24}}
      - {{name: gb2, attach: br0, network: green-b, ip: 10.20.2.12/24}}
      - {{name: ga2, attach: br0, network: green-a, ip: 10.20.1.12/24}}
"""
TENANT = {"red1": "red", "red3": "red", "red2": "red", "blue1": "blue", "blue2": "blue",
          "ga1": "green", "ga2": "green", "gb2": "green"}
GATEWAY = {"ga1": "10.20.1.1", "ga2": "10.20.1.1", "gb2": "10.20.2.1"}
SPOOF = "10.10.0.99"          # red3 also holds it (not bound): its packets are spoofed
ACL_PORT = 8080               # blue's rule: drop tcp/8080 (ingress)
UNBOUND = {"red": "10.10.0.77", "blue": "10.10.0.77", "green": "10.20.2.99"}
PAIRS = 44
ACL_RULE: dict[str, int] = {}


@pytest.fixture(scope="module")
def lab():
    topo = parse(TOPO.format(name=lab_name("tr")))
    with converged_lab(topo) as t:
        for c, gw in GATEWAY.items():       # routed networks: their gateway as default route
            node_run(t.name, c, ["ip", "route", "add", "default", "via", gw], check=True)
        node_run(t.name, "red3", ["ip", "addr", "add", f"{SPOOF}/24", "dev", "eth0"],
                 check=True)
        with C.api(t.name) as c:
            r = c.post("/v1/tenants/blue/acls", json={"priority": 100, "action": "drop",
                                                      "ip_proto": "tcp", "port": ACL_PORT})
            assert r.status_code == 201, r.text
            ACL_RULE["id"] = r.json()["id"]
        C.wait_converged(t)
        servers = Servers(t.name)
        for node in TENANT:
            for port in (80, ACL_PORT):
                servers.start(node, port)
        try:
            yield t
        finally:
            servers.stop()


def really(lab, src: str, dst_ip: str, proto: str, port: int | None, spoof: bool) -> bool:
    """Real traffic: a ping answered, or a TCP connection whose echo comes back."""
    if proto == "icmp":
        cmd = ["ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", dst_ip]
        if spoof:
            cmd[1:1] = ["-I", SPOOF]
        out = node_run(lab.name, src, cmd, timeout=10).stdout
        return " 0 received" not in out and "received" in out
    out = node_run(lab.name, src, ["python3", "-c", CLIENT, dst_ip, str(port), "1.5"],
                   timeout=15).stdout
    return out.strip() == "echo:weft"


def traced(lab, body: dict) -> tuple[dict, float]:
    t0 = time.monotonic()
    with C.api(lab.name, timeout=60) as c:
        r = c.post("/v1/trace", json=body)
    dt = time.monotonic() - t0
    assert r.status_code == 200, r.text
    return r.json(), dt


def scenario(rng: random.Random) -> dict:
    """One random pair: source, destination address and what the test expects."""
    src = rng.choice(sorted(TENANT))
    kind = rng.choices(["peer", "other-tenant", "acl", "spoof", "unbound"],
                       weights=[5, 3, 2, 1, 1])[0]
    t = TENANT[src]
    if kind == "acl" and t != "blue":
        src, t = rng.choice(["blue1", "blue2"]), "blue"
    if kind == "spoof":
        src, t = "red3", "red"
    if kind == "unbound":
        return {"src": src, "dst": UNBOUND[t], "dst_name": None, "proto": "icmp", "port": None,
                "kind": kind, "spoof": False}
    if kind == "other-tenant":
        dst = rng.choice([d for d in TENANT if TENANT[d] != t])
    elif kind == "acl":
        dst = "blue2" if src == "blue1" else "blue1"
    else:
        dst = rng.choice([d for d in TENANT if TENANT[d] == t and d != src])
    # a spoofed source is sent by ping -I (the TCP client binds no address)
    proto = "tcp" if kind == "acl" else "icmp" if kind == "spoof" else rng.choice(["icmp", "tcp"])
    port = ACL_PORT if kind == "acl" else (80 if proto == "tcp" else None)
    return {"src": src, "dst": None, "dst_name": dst, "proto": proto, "port": port,
            "kind": kind, "spoof": kind == "spoof"}


def expected_cause(lab, s: dict) -> str | None:
    """None: delivered; else the cause the trace must name."""
    src_t = TENANT[s["src"]]
    if s["kind"] == "spoof":
        return "port security"
    if s["kind"] == "unbound":
        return "no binding"
    if s["kind"] == "acl":
        return "acl"
    if s["kind"] == "other-tenant":
        # green routes: another tenant's address is outside every green subnet, so it
        # leaves by the egress port (and is NATed toward an underlay with no such address)
        return "egress" if src_t == "green" else "isolation"
    return None


def test_trace_agrees_with_real_traffic(lab):
    seed = int(os.environ.get("WEFT_TRACE_SEED", random.randrange(1 << 30)))
    print(f"\ntrace seed {seed} (WEFT_TRACE_SEED={seed} repeats it)")
    rng = random.Random(seed)
    addr = {c.name: lab.addr(c.name) for c in lab.containers}
    times, tally, disagreements = [], {"delivered": 0, "denied": 0}, []
    causes: dict[str, int] = {}
    for i in range(PAIRS):
        s = scenario(rng)
        dst_ip = s["dst"] or addr[s["dst_name"]]
        body = {"src": s["src"], "dst": dst_ip, "proto": s["proto"], "tenant": TENANT[s["src"]]}
        body["src"] = addr[s["src"]]
        if TENANT[s["src"]] == "green":
            body["tenant"] = next(c.segment for c in lab.containers if c.name == s["src"])
        if s["port"]:
            body["port"] = s["port"]
        if s["spoof"]:
            body["src_ip"] = SPOOF
        res, dt = traced(lab, body)
        times.append(dt)
        happened = really(lab, s["src"], dst_ip, s["proto"], s["port"], s["spoof"])
        v = res["verdict"]
        want = expected_cause(lab, s)
        said_delivered = v["result"] == "delivered"
        causes[v["cause"]] = causes.get(v["cause"], 0) + 1
        line = (f"{i:2} {s['kind']:<12} {s['src']:>5} -> {dst_ip:<11} {s['proto']}"
                f"{'/' + str(s['port']) if s['port'] else '':<6} real={'ok' if happened else 'no'}"
                f"  trace={v['result']} ({v['cause']}) hosts={res['hosts']}")
        print(line)
        if said_delivered != happened or (want is None) != said_delivered or \
                (want is not None and v["cause"] != want):
            disagreements.append(f"{line}\n    expected {want or 'delivered'}: {v['detail']}")
        if want == "acl":
            if v.get("rule") != ACL_RULE['id'] or v.get("tenant") != "blue":
                disagreements.append(f"{line}\n    ACL rule {v.get('rule')} of "
                                     f"{v.get('tenant')}, not {ACL_RULE['id']} of blue")
        if s["kind"] == "peer" and TENANT[s["src"]] == "green" and \
                s["dst_name"][:2] != s["src"][:2]:
            fib = [st for h in res["hops"] for st in h["steps"] if st["table_name"] == "fib"]
            if not fib:
                disagreements.append(f"{line}\n    routed, but no fib step in the trace")
        tally["delivered" if happened else "denied"] += 1
    times.sort()
    p50 = statistics.median(times)
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"pairs {PAIRS}: {tally['delivered']} delivered, {tally['denied']} denied; "
          f"verdict causes {json.dumps(causes, sort_keys=True)}")
    print(f"trace time (REST end to end): p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    assert not disagreements, "\n".join(disagreements)
    assert tally["delivered"] >= 5 and tally["denied"] >= 5, tally


def test_trace_shows_the_path(lab):
    """A routed pair across hosts: both hosts, the tunnel, FIB on the source host, the TTL
    decremented and the MACs rewritten on the peer; weftctl prints it."""
    res, _ = traced(lab, {"src": lab.addr("ga1"), "dst": lab.addr("gb2"), "tenant": "green-a"})
    assert res["hosts"] == ["host1", "host2"], res["hosts"]
    assert res["tunnels"] == ["vx-host2"], res["tunnels"]
    assert "nw_ttl=63" in res["hops"][1]["flow"], res["hops"][1]["flow"]
    assert res["verdict"]["result"] == "delivered"
    routed = weftctl(lab, "trace", lab.addr("ga1"), lab.addr("gb2"), "--tenant", "green")
    assert routed.splitlines()[-1].startswith("verdict: DELIVERED (delivered): delivered to "
                                              "host2/"), routed
    assert " fib " in routed and "out: tunnel vx-host2 to host2" in routed, routed
    denied = weftctl(lab, "trace", lab.addr("blue1"), lab.addr("blue2"), "--port",
                     str(ACL_PORT), "--tenant", "blue")
    assert f"verdict: DROPPED (acl): ACL rule {ACL_RULE['id']} of tenant blue" in denied


def weftctl(lab, *args: str) -> str:
    """weftctl as a user runs it against the lab (printed: docs/observability.md)."""
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "weftctl"), "--api",
                          f"unix:{C.api_socket(lab.name)}", "--token", C.api_token(lab.name),
                          *args], capture_output=True, text=True, timeout=60)
    print(f"$ weftctl {' '.join(args)}\n{out.stdout}")
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_rest_refuses_bad_input(lab):
    with C.api(lab.name) as c:
        r = c.post("/v1/trace", json={"src": lab.addr("red1"), "dst": "10.10.0.2",
                                      "tenant": "red", "proto": "icmp", "port": 80})
        assert r.status_code == 422 and r.json()["field"] == "port", r.text
        r = c.post("/v1/trace", json={"src": "host1/nosuchport", "dst": "10.10.0.2"})
        assert r.status_code == 404 and r.json()["field"] == "src", r.text
        r = c.post("/v1/trace", json={"src": "10.10.0.1", "dst": "10.10.0.2", "proto": "sctp"})
        assert r.status_code == 422, r.text


def _agent(lab, body: bytes, token: str | None) -> tuple[int, dict]:
    """POST to host1's agent listener from the controller's namespace (as the controller)."""
    url = f"http://{lab.host('host1').mgmt_ip}:{AGENT_PORT}/v1/trace"
    script = ("import sys, urllib.request, urllib.error\n"
              "req = urllib.request.Request(sys.argv[1], data=sys.stdin.buffer.read(), "
              "method='POST', headers={'Content-Type': 'application/json'})\n"
              "if len(sys.argv) > 2: req.add_header('Authorization', 'Bearer ' + sys.argv[2])\n"
              "try:\n    r = urllib.request.urlopen(req, timeout=10); print(r.status); "
              "print(r.read().decode())\n"
              "except urllib.error.HTTPError as e:\n    print(e.code); print(e.read().decode())\n")
    argv = ["ip", "netns", "exec", ns_name(lab.name, CTL), "python3", "-c", script, url]
    if token:
        argv.append(token)
    out = subprocess.run(argv, input=body, capture_output=True, timeout=30)
    status, _, rest = out.stdout.decode().partition("\n")
    return int(status), json.loads(rest)


def test_agent_listener_needs_the_token_and_valid_input(lab):
    good = json.dumps({"in_port": 1, "dl_src": "02:00:00:00:00:01", "dl_dst": "02:00:00:00:00:02",
                       "nw_src": "10.10.0.1", "nw_dst": "10.10.0.2"}).encode()
    assert _agent(lab, good, None)[0] == 401
    assert _agent(lab, good, "wrong-token")[0] == 401
    token = C.api_token(lab.name)
    status, body = _agent(lab, good, token)
    assert status == 200 and "bridge(\"br0\")" in body["output"], body
    for bad in ({"in_port": "1,actions=drop", "dl_src": "02:00:00:00:00:01",
                 "dl_dst": "02:00:00:00:00:02", "nw_src": "10.10.0.1", "nw_dst": "10.10.0.2"},
                {"in_port": 1, "dl_src": "02:00:00:00:00:01;reboot", "dl_dst": "02:00:00:00:00:02",
                 "nw_src": "10.10.0.1", "nw_dst": "10.10.0.2"},
                {"in_port": 1, "dl_src": "02:00:00:00:00:01", "dl_dst": "02:00:00:00:00:02",
                 "nw_src": "10.10.0.1", "nw_dst": "10.10.0.2", "extra": "x"}):
        status, body = _agent(lab, json.dumps(bad).encode(), token)
        assert status == 422 and body["field"] == "body" and "output" not in body, body
