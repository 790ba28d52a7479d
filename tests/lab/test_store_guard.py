"""The wipe guard: a controller restarted on an empty store beside live switches deletes
nothing (issue 15).  Two hosts, red containers on br0, 100 pings/s across the tunnel
while the controller is killed, its database (and -wal/-shm) removed, and it starts
again: 0 flow-mods reach the switches, 0 pings are lost, the API says why; then
`weftctl import` of an export taken before restores the store (and its epoch) and the
switches are in sync again with 0 flow-mods."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import converged_lab, lab_name
from weft_lab import cluster as C
from weft_lab import nodes as N
from weft_lab.attack import controller_pid, ofctl
from weft_lab.topology import parse
from weft_lab.traffic import pinging

ROOT = Path(__file__).resolve().parents[2]
TOPO = """
name: guard
tunnel_type: vxlan
agent: true
controller: true
tenants:
  - {name: red, subnet: 10.10.0.0/24}
hosts:
  - name: host1
    containers:
      - {name: red1, attach: br0, tenant: red, ip: 10.10.0.1/24, mac: "02:00:00:00:00:01"}
  - name: host2
    containers:
      - {name: red2, attach: br0, tenant: red, ip: 10.10.0.2/24, mac: "02:00:00:00:00:02"}
"""


@pytest.fixture(scope="module")
def lab():
    with converged_lab(parse(TOPO).with_name(lab_name("g"))) as topo:
        yield topo


def weft_flows(lab: str, host: str) -> list[str]:
    """Flow dump of br0 without counters or learned flows: what the controller writes."""
    out = ofctl(lab, host, "dump-flows", "--no-stats", "br0")
    return sorted(line.strip() for line in out.splitlines()
                  if "cookie=0x5746" in line and "cookie=0x5746040" not in line)


def test_empty_store_beside_live_switches_deletes_nothing(lab):
    with C.api(lab.name) as c:
        assert all(s["sync_refused"] is None and s["sync_state"] == "in_sync"
                   for s in c.get("/v1/switches").json())
        export = c.get("/v1/export").json()
    before = {h.name: weft_flows(lab.name, h.name) for h in lab.hosts}
    assert all(any("table=250" in f for f in flows) for flows in before.values())  # stamped
    backup = N.state_dir(lab.name) / "export.json"
    backup.write_text(json.dumps(export))
    db = N.state_dir(lab.name) / "weft.db"
    with pinging(lab.name, "red1", "10.10.0.2", 1500) as res:
        time.sleep(1)
        os.kill(controller_pid(lab.name), signal.SIGKILL)
        time.sleep(0.5)
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            path.unlink(missing_ok=True)
        C.start_controller(lab)
        C.wait_api(lab.name)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with C.api(lab.name) as c:
                sws = c.get("/v1/switches").json()
            if all(s["sync_refused"] for s in sws):
                break
            time.sleep(0.2)
        refused = sws
        with C.api(lab.name) as c:
            health = c.get("/v1/health").json()
        after = {h.name: weft_flows(lab.name, h.name) for h in lab.hosts}
        # restore the backup: the store gets its epoch back, the switches sync, 0 mods
        weftctl = ROOT / ".venv/bin/weftctl"
        out = subprocess.run([str(weftctl) if weftctl.exists() else "weftctl", "--api",
                              f"unix:{C.api_socket(lab.name)}", "--token",
                              C.api_token(lab.name), "import", str(backup), "--replace"],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        C.wait_converged(lab)
    assert res.sent == res.received == 1500, res
    sws = refused
    assert all(s["connected"] and s["sync_state"] == "refused" for s in sws), sws
    assert all("stamped by another store" in s["sync_refused"] for s in sws), sws
    assert [s["flow_mods_sent"] + s["group_mods_sent"] + s["meter_mods_sent"]
            for s in sws] == [0, 0], sws
    assert health["switches_refused"] == ["host1", "host2"] and health["switches_in_sync"] == 0
    assert after == before
    with C.api(lab.name) as c:
        sws = c.get("/v1/switches").json()
    assert all(s["sync_state"] == "in_sync" and s["sync_refused"] is None for s in sws), sws
    assert [s["flow_mods_sent"] + s["group_mods_sent"] + s["meter_mods_sent"]
            for s in sws] == [0, 0], sws
    assert {h.name: weft_flows(lab.name, h.name) for h in lab.hosts} == before
    log = (N.state_dir(lab.name) / "weft-manager.log").read_text()
    assert "NOT programming it" in log and "--adopt" in log and "weftctl import" in log
