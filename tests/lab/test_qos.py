"""QoS that holds on the wire: meters measured with iperf3, DSCP seen by the receiver.

q1 and q2 share host1, q3 receives on host2; all in tenant "q".
"""
from __future__ import annotations

import re
import subprocess
import threading
import time

import pytest

from tests.conftest import converged_lab, lab_name
from weft_lab import cluster as C
from weft_lab import nodes as N
from weft_lab.topology import parse
from weft_lab.traffic import iperf, node_run, pinging, tcpdump, udp_pps

TOPO = """
name: {name}
tenants: [{{name: q, subnet: 10.60.0.0/24}}]
hosts:
  - name: host1
    containers:
      - {{name: q1, attach: br0, tenant: q, ip: 10.60.0.1/24}}
      - {{name: q2, attach: br0, tenant: q, ip: 10.60.0.2/24}}
  - name: host2
    containers:
      - {{name: q3, attach: br0, tenant: q, ip: 10.60.0.3/24}}
"""
Q3 = "10.60.0.3"
RESULTS: dict[str, str] = {}


@pytest.fixture(scope="module")
def lab():
    try:
        with converged_lab(parse(TOPO.format(name=lab_name("q")))) as topo:
            yield topo
    finally:
        print("\nQoS measured (configured -> measured):")
        for k, v in RESULTS.items():
            print(f"  {k}: {v}")


@pytest.fixture
def api(lab):
    with C.api(lab.name) as c:
        yield c
        # every test leaves no QoS behind
        for x in c.get("/v1/qos/limits").json():
            c.delete(f"/v1/qos/limits/{x['id']}")
        for r in c.get("/v1/qos/rules").json():
            c.delete(f"/v1/qos/rules/{r['id']}")
        C.wait_converged(lab)


node_mac: dict[str, str] = {}


def port_of(api, node: str) -> tuple[str, str]:
    """(host, br0 port) of a container, from the bindings its agent reported."""
    ports = {p["mac"]: (p["host"], p["port"])
             for p in api.get("/v1/ports", params={"tenant": "q"}).json()}
    return ports[node_mac[node]]


@pytest.fixture(scope="module", autouse=True)
def macs(lab):
    for n in ("q1", "q2", "q3"):
        node_mac[n] = node_run(lab.name, n, ["cat", "/sys/class/net/eth0/address"]).stdout.strip()


def together(*jobs) -> list[float]:
    """Run iperf jobs at the same time; each job is a kwargs dict for traffic.iperf."""
    out: list[float] = [0.0] * len(jobs)

    def run(i: int, kw: dict) -> None:
        out[i] = iperf(**kw)
    threads = [threading.Thread(target=run, args=(i, kw)) for i, kw in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def job(lab, client: str, seconds: float = 4, port: int = 5201, udp: float | None = None) -> dict:
    """An iperf3 run whose first second (slow start, the meter's burst) is not counted."""
    return {"lab": lab.name, "client": client, "server": "q3", "server_ip": Q3,
            "seconds": seconds, "port": port, "udp_mbps": udp, "extra": ["-O", "1"]}


def test_port_limit_holds_and_spares_the_neighbour(lab, api):
    free = iperf(**job(lab, "q2"))
    host, port = port_of(api, "q1")
    r = api.post("/v1/qos/limits", json={"host": host, "port": port, "kbps": 20000})
    assert r.status_code == 201, r.text
    C.wait_converged(lab)
    limited, neighbour = together(job(lab, "q1"), job(lab, "q2", port=5202))
    udp = iperf(**job(lab, "q1", udp=50))
    RESULTS["port limit 20 Mbit/s, TCP"] = f"{limited:.1f} Mbit/s"
    RESULTS["port limit 20 Mbit/s, UDP offered 50"] = f"{udp:.1f} Mbit/s"
    RESULTS["unlimited neighbour alone / beside"] = f"{free:.0f} / {neighbour:.0f} Mbit/s"
    assert 16 <= limited <= 22, limited
    assert 16 <= udp <= 22, udp
    assert neighbour >= 0.8 * free, (neighbour, free)
    stats = {m["meter_id"]: m for h in api.get("/v1/qos/stats").json() for m in h["meters"]}
    meter = stats[r.json()["meter_id"]]
    assert meter["packets_passed"] > 0 and meter["packets_dropped"] > 0, meter



def test_packet_rate_limit_holds_against_a_small_frame_flood(lab, api):
    """1000 packets/s on q1, against 64-byte UDP; a kbit/s limit worth 1000 full-size
    frames/s (12 Mbit/s) lets many times more small frames through."""
    host, port = port_of(api, "q1")
    flood = {"lab": lab.name, "client": "q1", "server": "q3", "server_ip": Q3,
             "seconds": 4, "udp_mbps": 20, "length": 64}
    r = api.post("/v1/qos/limits", json={"host": host, "port": port, "kbps": 12_000})
    assert r.status_code == 201, r.text
    C.wait_converged(lab)
    kb_offered, kb_passed = udp_pps(**flood)
    p = api.patch(f"/v1/qos/limits/{r.json()['id']}", json={"pps": 1000})
    assert p.status_code == 200 and p.json()["pps"] == 1000, p.text
    C.wait_converged(lab)
    meters = _dump(lab, host)["meters"]
    assert "pktps" in meters and "rate=1000" in meters, meters
    offered, passed = udp_pps(**flood)
    RESULTS["pps limit 1000, 64-byte UDP flood: offered -> passed"] = \
        f"{offered:.0f} -> {passed:.0f} pkts/s"
    RESULTS["kbps limit 12000 (1000 x 1500 B), same flood"] = \
        f"{kb_offered:.0f} -> {kb_passed:.0f} pkts/s"
    assert offered > 3000, offered              # a flood well above the limit
    assert 800 <= passed <= 1200, passed
    assert kb_passed > 3 * passed, (kb_passed, passed)
    stats = {m["meter_id"]: m for h in api.get("/v1/qos/stats").json() for m in h["meters"]}
    assert stats[r.json()["meter_id"]]["packets_dropped"] > 0

def test_tenant_aggregate_limit_holds_across_two_ports(lab, api):
    r = api.post("/v1/qos/limits", json={"host": "host1", "tenant": "q", "kbps": 20000})
    assert r.status_code == 201, r.text
    C.wait_converged(lab)
    a, b = together(job(lab, "q1"), job(lab, "q2", port=5202))
    RESULTS["tenant aggregate 20 Mbit/s on host1 (q1 + q2)"] = f"{a:.1f} + {b:.1f} = {a + b:.1f}"
    assert 16 <= a + b <= 22, (a, b)


def test_per_flow_rule_limits_only_matching_traffic(lab, api):
    r = api.post("/v1/qos/rules", json={"tenant": "q", "priority": 10, "kbps": 20000,
                                        "match": {"ip_proto": "tcp", "dst_port": 5201}})
    assert r.status_code == 201, r.text
    C.wait_converged(lab)
    matching = iperf(**job(lab, "q1", port=5201))
    other = iperf(**job(lab, "q1", port=5202))
    RESULTS["rule tcp dst 5201 at 20 Mbit/s: 5201 / 5202"] = f"{matching:.1f} / {other:.0f}"
    assert 16 <= matching <= 22, matching
    assert other > 40, other


def test_dscp_remark_is_seen_by_the_receiver(lab, api):
    r = api.post("/v1/qos/rules", json={"tenant": "q", "priority": 20, "set_dscp": 46,
                                        "match": {"ip_proto": "udp", "dst_port": 9999}})
    assert r.status_code == 201, r.text
    C.wait_converged(lab)
    dump = tcpdump(lab.name, "q3", ["-i", "eth0", "-v", "udp"])
    send = ("import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
            "[s.sendto(b'x'*64,('10.60.0.3',p)) for p in (9999,9998) for _ in range(3)]")
    node_run(lab.name, "q1", ["python3", "-c", send], check=True)
    time.sleep(1)
    dump.send_signal(2)
    out, _ = dump.communicate(timeout=10)
    tos = {int(p): int(t, 16) for t, p in re.findall(
        r"tos (0x[0-9a-f]+).*?\n\s+10\.60\.0\.1\.\d+ > 10\.60\.0\.3\.(\d+)", out)}
    RESULTS["set_dscp 46 on udp 9999: tos seen 9999 / 9998"] = \
        f"{hex(tos.get(9999, -1))} / {hex(tos.get(9998, -1))}"
    assert tos.get(9999) == 46 << 2, out
    assert tos.get(9998) == 0, out


def test_rate_change_at_run_time_without_drops_for_others(lab, api):
    host, port = port_of(api, "q1")
    r = api.post("/v1/qos/limits", json={"host": host, "port": port, "kbps": 20000})
    C.wait_converged(lab)
    with pinging(lab.name, "q2", Q3, 300) as res:
        time.sleep(0.5)
        p = api.patch(f"/v1/qos/limits/{r.json()['id']}", json={"kbps": 40000})
        assert p.status_code == 200
        C.wait_converged(lab)
        faster = iperf(**job(lab, "q1", seconds=3))
    RESULTS["port limit changed 20 -> 40 Mbit/s"] = f"{faster:.1f} Mbit/s"
    assert res.sent == res.received == 300, res
    assert 32 <= faster <= 44, faster


def test_deleting_all_qos_leaves_nothing_on_any_switch(lab, api):
    host, port = port_of(api, "q1")
    ids = [api.post("/v1/qos/limits", json={"host": host, "port": port, "kbps": 5000}).json(),
           api.post("/v1/qos/limits", json={"host": "host2", "tenant": "q", "kbps": 5000}).json(),
           api.post("/v1/qos/rules", json={"tenant": "q", "priority": 5, "kbps": 1000,
                                           "set_dscp": 10, "match": {"ip_proto": "icmp"}}).json()]
    C.wait_converged(lab)
    dumps = {h.name: _dump(lab, h.name) for h in lab.hosts}
    assert any("meter=" in d["meters"] for d in dumps.values())
    for x in ids[:2]:
        assert api.delete(f"/v1/qos/limits/{x['id']}").status_code == 200
    assert api.delete(f"/v1/qos/rules/{ids[2]['id']}").status_code == 200
    C.wait_converged(lab)
    for h in lab.hosts:
        d = _dump(lab, h.name)
        assert "meter=" not in d["meters"], d["meters"]
        assert "meter:" not in d["flows"] and "0x5746060000000000" not in d["flows"], d["flows"]


def _dump(lab, host: str) -> dict[str, str]:
    def ofctl(*args: str) -> str:
        return subprocess.run(N.exec_argv(lab.name, host, ["ovs-ofctl", "-O", "OpenFlow13",
                                                           *args]),
                              capture_output=True, text=True, check=True).stdout
    return {"meters": ofctl("dump-meters", "br0"), "flows": ofctl("dump-flows", "br0")}


def test_bad_qos_requests_are_refused_and_change_nothing(lab, api):
    host, port = port_of(api, "q1")
    bad = [("/v1/qos/limits", {"host": host, "port": port, "kbps": 0}, "kbps"),
           ("/v1/qos/limits", {"host": host, "port": port, "kbps": 10**9}, "kbps"),
           ("/v1/qos/limits", {"host": host, "port": port, "kbps": 100, "burst_kb": -1},
            "burst_kb"),
           ("/v1/qos/limits", {"host": host, "port": port, "kbps": 100, "burst_kb": 5},
            "burst_kb"),
           ("/v1/qos/limits", {"host": host, "port": port, "kbps": 100, "burst_kb": 5000},
            "burst_kb"),
           ("/v1/qos/limits", {"host": host, "port": "nope", "kbps": 100}, "port"),
           ("/v1/qos/limits", {"host": "zz", "port": port, "kbps": 100}, "host"),
           ("/v1/qos/limits", {"host": host, "kbps": 100}, "port"),
           ("/v1/qos/rules", {"tenant": "nope", "priority": 1, "kbps": 100}, "tenant"),
           ("/v1/qos/rules", {"tenant": "q", "priority": 1, "kbps": 100,
                              "match": {"dst_port": 80}}, "match"),
           ("/v1/qos/rules", {"tenant": "q", "priority": 1, "kbps": 100,
                              "match": {"src": "10.0.0.300"}}, "match"),
           ("/v1/qos/rules", {"tenant": "q", "priority": 1, "match": {"dscp": 99}}, "dscp"),
           ("/v1/qos/rules", {"tenant": "q", "priority": 1, "queue": 1}, "queue"),
           ("/v1/qos/rules", {"tenant": "q", "priority": 0, "kbps": 100}, "priority")]
    for path, body, field in bad:
        r = api.post(path, json=body)
        assert 400 <= r.status_code < 500, (body, r.status_code, r.text)
        assert field in r.json()["field"], (body, r.json())
    assert api.get("/v1/qos/limits").json() == [] and api.get("/v1/qos/rules").json() == []
    hosts = api.get("/v1/hosts").json()
    assert all(not h["queues"]["supported"] and "userspace" in h["queues"]["reason"]
               for h in hosts)


def test_agent_builds_egress_queues_from_hosts_yaml(lab):
    """linux-htb QoS and Queue rows on the underlay NIC, changed and removed cleanly."""
    hy = N.state_dir(lab.name) / "hosts.yaml"
    original = hy.read_text()

    def rows(table: str) -> int:
        return N.vsctl(lab.name, "host1", "list", table).count("_uuid")

    def classes() -> str:
        return subprocess.run(N.exec_argv(lab.name, "host1", ["tc", "class", "show", "dev",
                                                              "eth0"]),
                              capture_output=True, text=True).stdout
    try:
        hy.write_text(original + "queues:\n  max_kbps: 1000000\n  classes:\n"
                                 "    - {id: 1, min_kbps: 100000, max_kbps: 500000}\n")
        _wait(lambda: "ceil 500Mbit" in classes())
        assert rows("QoS") == 1 and rows("Queue") == 2
    finally:
        hy.write_text(original)
    _wait(lambda: rows("QoS") == 0 and rows("Queue") == 0)


def _wait(cond, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
