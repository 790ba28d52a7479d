"""Tenant ACLs on real OVS (userspace datapath, conntrack) with real TCP, on each transport.

Tenant "w": w1 and w3 on host1, w2 on host2.  With a default-deny policy and
one rule (tcp/80 to w2), exactly that connection opens, across hosts and
from the same host as well, data flows both ways in it (the replies pass
by conntrack), and nothing else does: not another port, not the other
direction, not ping, not another address.  Removing the policy restores
everything.  Run over VXLAN, GRE and VLAN transport.
"""
from __future__ import annotations

import subprocess
import time

import pytest

from tests.conftest import converged_lab, lab_name
from weft_lab import cluster as C
from weft_lab import nodes as N
from weft_lab.topology import parse
from weft_lab.nodes import exec_argv
from weft_lab.traffic import iperf, node_run, reaches

TOPO = """
name: {name}
{transport}
controller: true
agent: true
tenants: [{{name: w, vlan: 300, subnet: 10.70.0.0/24}}]
hosts:
  - name: host1
    containers:
      - {{name: w1, attach: br0, tenant: w, ip: 10.70.0.1/24}}
      - {{name: w3, attach: br0, tenant: w, ip: 10.70.0.3/24}}
  - name: host2
    containers:
      - {{name: w2, attach: br0, tenant: w, ip: 10.70.0.2/24}}
"""
IP = {"w1": "10.70.0.1", "w2": "10.70.0.2", "w3": "10.70.0.3"}
TRANSPORTS = {"vxlan": "tunnel_type: vxlan", "gre": "tunnel_type: gre", "vlan": "transport: vlan"}
SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16); print("ready", flush=True)
while True:
    c, _ = s.accept(); c.settimeout(3)
    try:
        c.sendall(b"echo:" + c.recv(100))
    except OSError:
        pass
    c.close()
"""
CLIENT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    c.sendall(b"weft"); c.settimeout(3); print(c.recv(100).decode())
except OSError as e:
    print("fail", e)
"""


@pytest.fixture(scope="module", params=list(TRANSPORTS))
def lab(request):
    text = TOPO.format(name=lab_name("a"), transport=TRANSPORTS[request.param])
    with converged_lab(parse(text)) as topo:
        yield topo


class Servers:
    """TCP echo servers in lab containers, killed at the end."""

    def __init__(self, lab: str) -> None:
        self.lab, self.procs = lab, []

    def start(self, node: str, port: int) -> None:
        p = subprocess.Popen(exec_argv(self.lab, node, ["python3", "-c", SERVER, str(port)]),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert p.stdout and p.stdout.readline().strip() == "ready"
        self.procs.append(p)

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


@pytest.fixture
def servers(lab):
    s = Servers(lab.name)
    for node in IP:
        for port in (80, 8080):
            s.start(node, port)
    yield s
    s.stop()


def connects(lab: str, src: str, dst: str, port: int, timeout: float = 2.0) -> bool:
    """A TCP connection from ``src`` to ``dst``:port whose echo comes back (both ways)."""
    out = node_run(lab, src, ["python3", "-c", CLIENT, IP[dst], str(port), str(timeout)],
                   timeout=timeout + 10).stdout.strip()
    return out == "echo:weft"


def eventually(check, tries: int = 3) -> bool:
    """First connections may wait for ARP; a refused one stays refused."""
    for _ in range(tries):
        if check():
            return True
        time.sleep(0.3)
    return False


def test_default_deny_passes_exactly_tcp80_to_one_container(lab, servers):
    name = lab.name
    assert eventually(lambda: connects(name, "w1", "w2", 8080))        # before: all open
    with C.api(name) as api:
        try:
            assert api.put("/v1/tenants/w/acls/default",
                           json={"default": "deny"}).status_code == 200
            rule = api.post("/v1/tenants/w/acls", json={
                "priority": 100, "action": "allow", "direction": "ingress", "ip_proto": "tcp",
                "local": IP["w2"], "port": 80}).json()
            C.wait_converged(lab)
            assert eventually(lambda: connects(name, "w1", "w2", 80))      # across hosts
            assert eventually(lambda: connects(name, "w3", "w2", 80))
            refused = [("w1", "w2", 8080), ("w2", "w1", 80), ("w2", "w3", 80),
                       ("w1", "w3", 80), ("w3", "w1", 8080), ("w2", "w1", 8080)]
            for src, dst, port in refused:
                assert not connects(name, src, dst, port, timeout=1.5), (src, dst, port)
            assert not reaches(name, "w1", IP["w2"], tries=2)             # no ICMP rule
            assert connects(name, "w1", "w2", 80)                          # still open
            body = api.get("/v1/tenants/w/acls", params={"counters": "true"}).json()
            counted = next(r for r in body["rules"] if r["id"] == rule["id"])
            assert counted["packets"] >= 3                                 # one SYN each
            assert body["established_counters"]["packets"] > 0
            metrics = api.get("/metrics").text
            assert f'rule="{rule["id"]}"' in metrics
        finally:
            api.put("/v1/tenants/w/acls/default", json={"default": "allow"})
            for r in api.get("/v1/tenants/w/acls").json()["rules"]:
                api.delete(f"/v1/tenants/w/acls/{r['id']}")
            C.wait_converged(lab)
    assert eventually(lambda: connects(name, "w2", "w1", 8080))        # after: all open again
    assert reaches(name, "w1", IP["w2"])


@pytest.mark.parametrize("lab", ["vxlan"], indirect=True)
def test_measure_100_rules_bind_latency_and_conntrack_throughput(lab):
    """Numbers for the report (VXLAN only): flows per switch with 100 rules, bind -> first
    packet with them in place, iperf3 through conntrack ACLs vs with no policy."""
    from weft_lab.measure import bind_to_first_packet, percentile, plug_bare_port
    from weft_lab.shell import run
    name = lab.name
    bare_mbps = iperf(name, "w1", "w2", IP["w2"], seconds=5)
    with C.api(name) as api:
        try:
            api.put("/v1/tenants/w/acls/default", json={"default": "deny"})
            api.post("/v1/tenants/w/acls", json={"priority": 1, "action": "allow",
                                                 "ip_proto": "icmp"})
            api.post("/v1/tenants/w/acls", json={"priority": 2, "action": "allow",
                                                 "ip_proto": "tcp", "port": 5201})
            for i in range(98):
                api.post("/v1/tenants/w/acls", json={
                    "priority": 10 + i, "action": "allow" if i % 2 else "drop",
                    "ip_proto": "tcp", "remote": f"10.70.{i}.0/24", "port": 1000 + i})
            C.wait_converged(lab)
            flows = api.get("/v1/switches/host1/flows").json()
            acl = [f for f in flows if f["feature"] == "acl"]
            acl_mbps = iperf(name, "w1", "w2", IP["w2"], seconds=5)
            mac2 = node_run(name, "w2", ["cat", "/sys/class/net/eth0/address"]).stdout.strip()
            ns = plug_bare_port(name, "host1", "x1", "10.70.0.50/24", "02:00:00:00:00:50", "wx1")
            try:
                lat = bind_to_first_packet(
                    api, ns, {"host": "host1", "port": "wx1", "tenant": "w",
                              "mac": "02:00:00:00:00:50"}, IP["w2"], mac2,
                    rounds=10, settle=lambda: C.wait_converged(lab))
            finally:
                N.vsctl(name, "host1", "--if-exists", "del-port", "br0", "wx1")
                run(["ip", "netns", "del", ns], check=False)
        finally:
            api.put("/v1/tenants/w/acls/default", json={"default": "allow"})
            for r in api.get("/v1/tenants/w/acls").json()["rules"]:
                api.delete(f"/v1/tenants/w/acls/{r['id']}")
            C.wait_converged(lab)
    print(f"\nACL numbers: 100 rules in tenant w -> {len(acl)} ACL flows of {len(flows)} on "
          f"host1; bind->first packet p50 {percentile(lat, 50) * 1000:.1f} ms, max "
          f"{max(lat) * 1000:.1f} ms (10 rounds); iperf3 w1->w2 no policy {bare_mbps:.0f} "
          f"Mbit/s, conntrack ACLs {acl_mbps:.0f} Mbit/s, ratio {acl_mbps / bare_mbps:.2f}")
    assert len(acl) >= 100 and max(lat) < 1.0 and acl_mbps > 10


UDP_SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[3])):
    s.sendto(b"op", (sys.argv[1], int(sys.argv[2])))
"""


def _controller_pid(lab: str) -> int:
    from pathlib import Path

    from weft_lab.shell import netns_pids
    for pid in netns_pids(N.ns_name(lab, "ctl")):
        if b"controller.manager" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise AssertionError("controller not running")


@pytest.mark.parametrize("lab", ["vxlan"], indirect=True)
def test_operator_flow_survives_syncs_controller_kill9_and_switch_restart(lab):
    """A drop flow for UDP/9999 from w1, added in table 0 with override: counted, untouched
    by a model change (0 operator flow-mods), still there after a controller kill -9 (0
    sent), re-installed after host1's OVS restarts, and gone when deleted."""
    import os
    import signal

    from weft_lab import lab as L
    name = lab.name

    def counted(api) -> dict:
        return {f["id"]: f for f in api.get("/v1/switches/host1/operator-flows").json()}

    def udp(n: int = 5) -> None:
        node_run(name, "w1", ["python3", "-c", UDP_SEND, IP["w2"], "9999", str(n)])

    def op_mods(api) -> int:
        return api.get("/v1/switches/host1").json()["operator_flow_mods_sent"]

    with C.api(name) as api:
        mac1 = node_run(name, "w1", ["cat", "/sys/class/net/eth0/address"]).stdout.strip()
        port = next(p["port"] for p in api.get("/v1/ports").json() if p["mac"] == mac1)
        ofport = api.get("/v1/switches/host1").json()["ports"][port]
        body = {"table_id": 0, "priority": 40000, "override": True,
                "match": {"in_port": ofport, "dl_type": 2048, "nw_proto": 17, "tp_dst": 9999},
                "actions": []}
        refused = api.post("/v1/switches/host1/flows", json={**body, "override": False})
        assert refused.status_code == 422 and refused.json()["field"] == "table_id"
        fid = api.post("/v1/switches/host1/flows", json=body).json()["id"]
        try:
            C.wait_converged(lab)
            udp()
            # OVS pushes datapath counters to the flow about every second: poll
            assert eventually(lambda: counted(api)[fid]["packets"] >= 5, tries=15)
            # a model change: the sync sends nothing for the operator flow
            before = op_mods(api)
            api.post("/v1/tenants", json={"name": "opx"})
            C.wait_converged(lab)
            assert op_mods(api) == before
            assert counted(api)[fid]["installed"]
            # controller kill -9: the new one finds it on the switch and sends nothing
            os.kill(_controller_pid(name), signal.SIGKILL)
            time.sleep(1)
            C.start_controller(lab)
            C.wait_api(name)
            C.wait_converged(lab)
        finally:
            pass
    with C.api(name) as api:
        try:
            assert op_mods(api) == 0
            got = counted(api)[fid]
            assert got["installed"] and got["packets"] >= 5
            # host1's OVS restarts: its flows are gone; the controller puts it back
            L.stop_ovs(name, "host1")
            L.start_ovs(name, "host1")
            C.wait_converged(lab, timeout=90)
            assert eventually(lambda: counted(api)[fid]["installed"], tries=20)
            assert op_mods(api) >= 1
            udp()
            assert eventually(lambda: counted(api)[fid]["packets"] >= 5, tries=15)
            print(f"\noperator flow {fid}: counted, 0 flow-mods after a model change and a "
                  f"controller kill -9, re-installed after an OVS restart ({op_mods(api)} sent)")
        finally:
            api.delete(f"/v1/switches/host1/flows/{fid}")
            api.delete("/v1/tenants/opx")
            C.wait_converged(lab)
        assert fid not in counted(api)
        flows = api.get("/v1/switches/host1/flows").json()
        assert not [f for f in flows if f["feature"] == "operator"]


@pytest.mark.parametrize("lab", ["vxlan"], indirect=True)
def test_ryu_ofctl_rest_documented_curl_calls(lab):
    """Ryu's ofctl_rest documentation's curl calls, as a script, against host1's switch."""
    from pathlib import Path
    import json
    with C.api(lab.name) as api:
        dpid = int(api.get("/v1/switches/host1").json()["dpid"], 16)
    script = Path(__file__).with_name("ryu_ofctl_examples.sh")
    out = subprocess.run([str(script), str(C.api_socket(lab.name)), C.api_token(lab.name),
                          str(dpid)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    calls = []
    for line in out.stdout.splitlines():
        method, path, code, body = (line.split(" ", 3) + [""])[:4]
        calls.append((method, path, int(code), json.loads(body) if body else None))
    print("\n" + "\n".join(f"{m} {p} -> {c}" for m, p, c, _ in calls))
    key = str(dpid)
    by = {}
    for m, p, c, b in calls:
        by.setdefault((m, p), []).append((c, b))
    first = {k: v[0] for k, v in by.items()}
    assert first[("GET", "/stats/switches")][0] == 200
    assert dpid in first[("GET", "/stats/switches")][1]
    desc = first[("GET", f"/stats/desc/{dpid}")]
    assert desc[0] == 200 and {"mfr_desc", "hw_desc", "sw_desc", "serial_num",
                               "dp_desc"} <= set(desc[1][key])
    flows = first[("GET", f"/stats/flow/{dpid}")][1][key]
    assert flows and {"priority", "cookie", "idle_timeout", "hard_timeout", "byte_count",
                      "duration_sec", "duration_nsec", "packet_count", "length", "flags",
                      "actions", "match", "table_id"} <= set(flows[0])
    agg = first[("GET", f"/stats/aggregateflow/{dpid}")][1][key][0]
    assert {"packet_count", "byte_count", "flow_count"} <= set(agg) and agg["flow_count"] > 0
    tables = first[("GET", f"/stats/table/{dpid}")][1][key]
    assert {"table_id", "active_count", "lookup_count", "matched_count"} <= set(tables[0])
    ports = first[("GET", f"/stats/port/{dpid}")][1][key]
    assert {"port_no", "rx_packets", "tx_packets", "rx_bytes"} <= set(ports[0])
    assert {p["port_no"] for p in first[("GET", f"/stats/port/{dpid}/1")][1][key]} == {1}
    descs = first[("GET", f"/stats/portdesc/{dpid}")][1][key]
    assert {"port_no", "name", "hw_addr", "config", "state"} <= set(descs[0])
    for name in ("meterfeatures", "meterconfig", "meter", "groupfeatures", "groupdesc",
                 "group"):
        code, body = first[("GET", f"/stats/{name}/{dpid}")]
        assert code == 200 and key in body, name
    adds = by[("POST", "/stats/flowentry/add")]
    assert adds[0][0] == 422 and adds[0][1]["field"] in ("table_id", "idle_timeout")
    assert [c for c, _ in adds[1:]] == [200, 200, 200]
    installed = by[("POST", f"/stats/flow/{dpid}")][1][1][key]
    assert [(f["priority"], f["match"], f["actions"]) for f in installed] == [
        (11111, {"in_port": 1}, ["OUTPUT:2"])]
    for cmd in ("modify", "modify_strict", "delete_strict", "delete"):
        assert first[("POST", f"/stats/flowentry/{cmd}")][0] == 200, cmd
    assert first[("DELETE", f"/stats/flowentry/clear/{dpid}")][0] == 200
    table100 = by[("POST", f"/stats/flow/{dpid}")]
    assert len(table100[2][1][key]) == 1 and table100[3][1][key] == []   # before/after clear
    with C.api(lab.name) as api:
        assert api.get("/v1/switches/host1/operator-flows").json() == []
        assert api.get(f"/stats/flow/{dpid}",
                       headers={"Authorization": "Bearer wrong"}).status_code == 401
