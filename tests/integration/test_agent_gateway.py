"""The agent's gateway ports on a real ovsdb-server and ovs-vswitchd (userspace datapath)
in a namespace of their own: wx-<id> ports with their derived MACs, the kernel side
(MTU, neighbour, table, rule), table ip weft-nat with a published port the plugin
recorded on br0, OVS zone limits; a second pass changes nothing; a tenant no longer
listed loses everything; an unanswered controller (None) changes nothing; no gateways
and no published ports leave no NAT table."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from weft_lab.lab import VSWITCH_SCHEMA

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(c) for c in ("nft", "ovs-vswitchd", "ovsdb-server")),
    reason="needs root, nft and Open vSwitch")
ROOT = Path(__file__).resolve().parents[2]

DRIVER = r"""
import json, subprocess, sys, time
sys.path.insert(0, sys.argv[1])
from ovs_agent import gateway, ovsdb
from ovs_agent.nat import Gateway

def gw(tid, limit=0, subnets=("10.10.1.0/24", "10.10.2.0/24")):
    m = f"{tid >> 16 & 0xff:02x}:{tid >> 8 & 0xff:02x}:{tid & 0xff:02x}"
    return Gateway(f"t{tid}", tid, f"wx-{tid}", f"0a:77:68:{m}", f"0a:77:67:{m}", subnets,
                   subnets[:1], limit)

def run(*argv):
    return subprocess.run(argv, capture_output=True, text=True).stdout

def state():
    ports = {r["name"]: {"mac": r["mac"], "type": r["type"], "ext": r["external_ids"]}
             for r in gateway.gateway_ports(api).values()}
    links = {l["ifname"]: {"mtu": l["mtu"], "address": l["address"], "up": "UP" in l["flags"]}
             for l in json.loads(run("ip", "-j", "link", "show")) if l["ifname"].startswith("wx-")}
    return {"ports": ports, "links": links,
            "rules": run("ip", "rule", "show"),
            "routes": {t: run("ip", "route", "show", "table", str(0x77000000 + t))
                       for t in (1001, 1002)},
            "neigh": run("ip", "neigh", "show", "169.254.77.2"),
            "nft": run("nft", "list", "table", "ip", "weft-nat"),
            "limits": gateway.ct_limits(),
            "ipv6_off": {d: open(f"/proc/sys/net/ipv6/conf/{d}/disable_ipv6").read().strip()
                         for d in links}}

api = ovsdb.connect(sys.argv[2], wait=10)
keeper = gateway.GatewayKeeper()
out = {}
both = [gw(1001, limit=100), gw(1002)]
out["first"] = keeper.ensure(api, both, 1450)
deadline = time.monotonic() + 10
while keeper._waiting and time.monotonic() < deadline:     # vswitchd makes the taps
    time.sleep(0.2)
    out["first"] += keeper.ensure(api, both, 1450)
out["state1"] = state()
out["second"] = keeper.ensure(api, both, 1450)
out["fresh_keeper"] = [c for c in gateway.GatewayKeeper().ensure(api, both, 1450)
                       if not c.startswith("nft:")]      # an agent restart: kernel untouched
out["gone"] = keeper.ensure(api, [gw(1001, limit=100)], 1450)
out["state2"] = state()
out["unanswered"] = keeper.ensure(api, None, 1450)
out["none"] = keeper.ensure(api, [], 1450)
out["state3"] = state()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def ovs():
    """ovsdb-server and ovs-vswitchd of our own in a namespace of our own; br0 (netdev)
    with a published port recorded the way the Docker plugin records it."""
    ns = f"gw{secrets.token_hex(3)}"
    d = Path(tempfile.mkdtemp(prefix="weft-gw-"))
    env = {**os.environ, "OVS_RUNDIR": str(d), "OVS_DBDIR": str(d), "OVS_LOGDIR": str(d)}
    procs: list[subprocess.Popen] = []
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(["ovsdb-tool", "create", str(d / "conf.db"), VSWITCH_SCHEMA], check=True)
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", ns, "ovsdb-server", str(d / "conf.db"),
             f"--remote=punix:{d}/db.sock", f"--pidfile={d}/ovsdb-server.pid",
             f"--log-file={d}/ovsdb-server.log", "--no-chdir"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(lambda: (d / "db.sock").exists())
        vsctl = ["ip", "netns", "exec", ns, "ovs-vsctl", "--timeout=10", f"--db=unix:{d}/db.sock"]
        subprocess.run([*vsctl, "--no-wait", "init"], check=True, env=env)
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", ns, "ovs-vswitchd", f"unix:{d}/db.sock",
             f"--pidfile={d}/ovs-vswitchd.pid", f"--log-file={d}/ovs-vswitchd.log",
             "--no-chdir"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(lambda: (d / "ovs-vswitchd.pid").exists())
        record = {"endpoint": "ep1", "proto": "tcp", "host_port": 8080,
                  "container_ip": "10.10.1.5", "container_port": 80, "tenant_id": 1001}
        subprocess.run([*vsctl, "add-br", "br0", "--", "set", "bridge", "br0",
                        "datapath_type=netdev", "--", "set", "bridge", "br0",
                        f"external_ids:weft-dpub-ep1={json.dumps(json.dumps(record))}"],
                       check=True, env=env)
        yield ns, d, env
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        shutil.rmtree(d, ignore_errors=True)


def _wait(cond, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "OVS did not start"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def passes(ovs):
    ns, d, env = ovs
    res = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", DRIVER, str(ROOT),
                          f"unix:{d}/db.sock"], capture_output=True, text=True, env=env,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_first_pass_makes_ports_links_routes_rules_and_nat(passes):
    s = passes["state1"]
    assert set(s["ports"]) == {"wx-1001", "wx-1002"}
    assert s["ports"]["wx-1001"]["mac"] == "0a:77:68:00:03:e9"
    assert s["ports"]["wx-1001"]["type"] == "internal"
    assert s["ports"]["wx-1002"]["ext"]["weft-role"] == "gateway"
    assert s["links"]["wx-1001"] == {"mtu": 1450, "address": "0a:77:68:00:03:e9", "up": True}
    assert s["links"]["wx-1002"]["address"] == "0a:77:68:00:03:ea"
    assert s["ipv6_off"] == {"wx-1001": "1", "wx-1002": "1"}
    assert "fwmark 0x570003e9 lookup 1996489705" in s["rules"]
    assert "fwmark 0x570003ea lookup 1996489706" in s["rules"]
    for tid in ("1001", "1002"):
        assert f"10.10.1.0/24 via 169.254.77.2 dev wx-{tid} onlink" in s["routes"][tid]
        assert f"10.10.2.0/24 via 169.254.77.2 dev wx-{tid} onlink" in s["routes"][tid]
    assert "lladdr 0a:77:67:00:03:e9 PERMANENT" in s["neigh"]
    assert '"wx-1001" : 0x570003e9' in s["nft"]
    assert "tcp . 8080 : 10.10.1.5 . 80" in s["nft"]      # the plugin's record on br0
    assert "meta mark 0x570003e9 add @conns { meta mark ct count over 100 }" in s["nft"]
    if s["limits"] is not None:                            # OVS's own zone limit
        assert s["limits"].get("1001") == 100


def test_second_pass_and_agent_restart_change_nothing(passes):
    assert passes["second"] == []
    assert passes["fresh_keeper"] == []


def test_a_tenant_no_longer_listed_loses_its_port_rule_and_routes(passes):
    assert "del_port wx-1002" in passes["gone"]
    s = passes["state2"]
    assert set(s["ports"]) == {"wx-1001"} and set(s["links"]) == {"wx-1001"}
    assert "lookup 1996489706" not in s["rules"] and "lookup 1996489705" in s["rules"]
    assert s["routes"]["1002"].strip() == ""
    assert "wx-1002" not in s["nft"]


def test_unanswered_controller_changes_nothing_and_none_removes_all(passes):
    assert passes["unanswered"] == []
    s = passes["state3"]
    assert s["ports"] == {} and s["links"] == {}
    assert "lookup 19964897" not in s["rules"]
    # the plugin's record still asks for a published port: the table stays, without tenants
    assert "tcp . 8080 : 10.10.1.5 . 80" in s["nft"] and "wx-1001" not in s["nft"]
    if s["limits"] is not None:
        assert "1001" not in s["limits"]


TRAFFIC_DRIVER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from ovs_agent import gateway, ovsdb
from ovs_agent.nat import Gateway
gws = [Gateway.from_json(d) for d in json.loads(sys.argv[3])]
api = ovsdb.connect(sys.argv[2], wait=10)
keeper = gateway.GatewayKeeper()
print(json.dumps(keeper.ensure(api, gws, 1450, tx_off=True)))
"""


def test_egress_and_published_ports_through_the_userspace_datapath(ovs, passes):
    """The lab's datapath end to end: two tenants' containers with the same MAC and address
    on br0 (netdev), flows standing in for the controller's egress rows (container ->
    wx-<id>, wx-<id> with the next-hop MAC -> container), the agent's gateway pass.  Both
    open the same connection to a server beyond the host at once; published ports reach
    each tenant from the server and from the host's own processes (the tap's checksums)."""
    from tests.integration.test_nat_namespaces import CLIENT, SERVE
    ns, d, env = ovs
    vsctl = ["ip", "netns", "exec", ns, "ovs-vsctl", "--timeout=10", f"--db=unix:{d}/db.sock"]
    ofctl = ["ip", "netns", "exec", ns, "ovs-ofctl", "-O", "OpenFlow13"]
    srv, cns = f"{ns}s", {1001: f"{ns}c1", 1002: f"{ns}c2"}
    procs: list[subprocess.Popen] = []

    def sh(where: str, *argv: str, timeout: float = 20) -> str:
        res = subprocess.run(["ip", "netns", "exec", where, *argv], capture_output=True,
                             text=True, env=env, timeout=timeout, check=False)
        assert res.returncode == 0, f"{where}: {' '.join(argv)}: {res.stderr}"
        return res.stdout

    def spawn(where: str, code: str, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", where, sys.executable, "-c", code, *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    for n in (srv, *cns.values()):
        subprocess.run(["ip", "netns", "add", n], check=True)
    try:
        sh(ns, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", srv)
        sh(ns, "ip", "addr", "add", "192.168.50.1/24", "dev", "up0")
        sh(ns, "ip", "link", "set", "up0", "up")
        sh(srv, "ip", "addr", "add", "192.168.50.10/24", "dev", "eth0")
        sh(srv, "ip", "link", "set", "eth0", "up")
        gws = []
        for tid, c in cns.items():
            m = f"00:03:{tid & 0xff:02x}"
            gws.append({"tenant": f"t{tid}", "id": tid, "port": f"wx-{tid}",
                        "mac": f"0a:77:68:{m}", "next_hop_mac": f"0a:77:67:{m}",
                        "subnets": ["10.10.1.0/24"], "egress_subnets": ["10.10.1.0/24"],
                        "conntrack_limit": 1000})
            sh(ns, "ip", "link", "add", f"cp{tid}", "type", "veth", "peer", "name", "eth0",
               "address", "02:00:00:00:00:01", "netns", c)
            sh(ns, "ethtool", "-K", f"cp{tid}", "tx", "off")
            sh(ns, "ip", "link", "set", f"cp{tid}", "up")
            sh(c, "ethtool", "-K", "eth0", "tx", "off")
            sh(c, "ip", "addr", "add", "10.10.1.2/24", "dev", "eth0")
            sh(c, "ip", "link", "set", "eth0", "up")
            sh(c, "ip", "link", "set", "lo", "up")
            sh(c, "ip", "neigh", "replace", "10.10.1.1", "lladdr", f"0a:77:66:{m}", "dev",
               "eth0", "nud", "permanent")
            sh(c, "ip", "route", "add", "default", "via", "10.10.1.1")
            sh(ns, *vsctl[4:], "add-port", "br0", f"cp{tid}")
        for key, rec in (("ep2", {"endpoint": "ep2", "proto": "tcp", "host_port": 8090,
                                  "container_ip": "10.10.1.2", "container_port": 5201,
                                  "tenant_id": 1002}),
                         ("ep3", {"endpoint": "ep3", "proto": "udp", "host_port": 8091,
                                  "container_ip": "10.10.1.2", "container_port": 5201,
                                  "tenant_id": 1001})):
            sh(ns, *vsctl[4:], "set", "bridge", "br0",
               f"external_ids:weft-dpub-{key}={json.dumps(json.dumps(rec))}")
        res = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", TRAFFIC_DRIVER,
                              str(ROOT), f"unix:{d}/db.sock", json.dumps(gws)],
                             capture_output=True, text=True, env=env, timeout=60, check=False)
        assert res.returncode == 0, res.stderr[-2000:]
        assert "nft: table ip weft-nat written (2 tenants, 3 published ports)" in json.loads(
            res.stdout)
        # a tap: the kernel completes checksums (OVS's userspace datapath would not)
        assert "tx-checksumming: off" in sh(ns, "ethtool", "-k", "wx-1001")
        subprocess.run([*ofctl, "del-flows", "br0"], check=True, env=env)
        for g in gws:
            tid = g["id"]
            flows = [f"priority=10,in_port=cp{tid},ip,actions=dec_ttl,"
                     f"set_field:0a:77:66:{g['mac'][9:]}->eth_src,"
                     f"set_field:{g['mac']}->eth_dst,output:wx-{tid}",
                     f"priority=10,in_port=wx-{tid},ip,dl_dst={g['next_hop_mac']},actions="
                     f"set_field:0a:77:66:{g['mac'][9:]}->eth_src,"
                     f"set_field:02:00:00:00:00:01->eth_dst,output:cp{tid}"]
            for flow in flows:
                subprocess.run([*ofctl, "add-flow", "br0", flow], check=True, env=env)
        spawn(srv, SERVE, "server")
        for tid, c in cns.items():
            spawn(c, SERVE, f"tenant{tid}")
        time.sleep(0.7)
        clients = {tid: spawn(c, CLIENT, "192.168.50.10", "5201", "40000", f"from{tid}", "tcp")
                   for tid, c in cns.items()}
        for tid, p in clients.items():
            out, err = p.communicate(timeout=20)
            assert out.split("\n")[:2] == [f"server saw 192.168.50.1 said from{tid}",
                                           f"server saw 192.168.50.1 said from{tid}+"], err
        out = sh(srv, sys.executable, "-c", CLIENT, "192.168.50.1", "8090", "0", "pub", "tcp")
        assert out.split("\n")[0] == "tenant1002 saw 192.168.50.10 said pub"
        out = sh(srv, sys.executable, "-c", CLIENT, "192.168.50.1", "8091", "0", "pubu", "udp")
        assert out.strip() == "tenant1001 saw 192.168.50.10 said pubu"
        # the host's own process: output DNAT, through the tap (checksums complete)
        out = sh(ns, sys.executable, "-c", CLIENT, "192.168.50.1", "8090", "0", "local", "tcp")
        assert out.split("\n")[0] == "tenant1002 saw 192.168.50.1 said local"
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        for n in (srv, *cns.values()):
            subprocess.run(["ip", "netns", "del", n], capture_output=True, check=False)
