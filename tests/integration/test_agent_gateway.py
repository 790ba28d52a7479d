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
