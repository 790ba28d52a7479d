"""Fault injection for labs with several controllers and an etcd cluster.

Used by tests/lab/test_ha.py and by `python -m weft_lab.failover failover` (the failover
time over repeated kills of the master).  Flow tables are compared as the
switch has them: a flow the new master re-sent would come back with its
duration and counters reset, so "0 flow-mods" is checked on the switch, not
only on the controller's own counter.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass


from weft_lab import cluster as C
from weft_lab import lab as L
from weft_lab import nodes as N
from weft_lab.measure import percentile
from weft_lab.shell import run
from weft_lab.topology import Topology, load

FLOW_RE = re.compile(r"cookie=(0x[0-9a-f]+), duration=([\d.]+)s, table=(\d+), "
                     r"n_packets=(\d+), n_bytes=\d+, (.*)$")
WEFT_COOKIE, COOKIE_MASK = "0x5746000000000000", "0xffff000000000000"
LEARNED_FEATURE = 4                   # flows the switch writes itself (learn): left out


def wait_master(topo: Topology, timeout: float = 15,
                exclude: tuple[int, ...] = ()) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = C.master(topo, exclude)
        if m is not None:
            return m
        time.sleep(0.05)
    raise N.LabError(f"no single master among the controllers of {topo.name}")


def kill(lab: str, name: str) -> float:
    """kill -9 a lab daemon (controller-K, etcd-K); returns the wall-clock time of the kill."""
    pid = C.pid_of(lab, name)
    t = time.time()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.01)
    return t


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass(frozen=True)
class FlowEntry:
    duration: float
    packets: int


def flows(lab: str, host: str) -> dict[str, FlowEntry]:
    """weft's flows on a host's br0 (learned ones left out), keyed by everything but the
    counters: cookie, table, priority, match and actions."""
    out = run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br0",
                 f"cookie={WEFT_COOKIE}/{COOKIE_MASK}"],
                ns=N.ns_name(lab, host), env=N.ovs_env(lab, host))
    table: dict[str, FlowEntry] = {}
    for line in out.splitlines():
        m = FLOW_RE.search(line.strip())
        if not m or (int(m[1], 16) >> 40) & 0xFF == LEARNED_FEATURE:
            continue
        rest = re.sub(r"(idle_age|hard_age)=\d+, ", "", m[5])
        table[f"{m[1]} table={m[3]} {rest}"] = FlowEntry(float(m[2]), int(m[4]))
    return table


def groups(lab: str, host: str) -> set[str]:
    out = run(["ovs-ofctl", "-O", "OpenFlow13", "dump-groups", "br0"],
                ns=N.ns_name(lab, host), env=N.ovs_env(lab, host))
    return {line.strip() for line in out.splitlines() if "group_id=" in line}


def rewritten(before: dict[str, FlowEntry], after: dict[str, FlowEntry],
              elapsed: float) -> list[str]:
    """Flows added, removed, or re-sent (their age restarted) between two dumps
    ``elapsed`` seconds apart."""
    changed = sorted(set(before) ^ set(after))
    changed += [k for k in before.keys() & after.keys()
                if after[k].duration < before[k].duration + elapsed - 1.0
                or after[k].packets < before[k].packets]
    return changed


def etcd_leader(topo: Topology) -> int | None:
    """The etcd member (1-based) that leads the cluster now."""
    ips = topo.controller_ips()[:topo.etcd]
    for k, ip in enumerate(ips):
        out = run([*C.etcd_curl(topo.name), "-X", "POST", "-d", "{}",
                   f"https://{ip}:{C.ETCD_CLIENT_PORT}/v3/maintenance/status"],
                    ns=N.ns_name(topo.name, N.CTL), check=False)
        try:
            st = json.loads(out)
        except ValueError:
            continue
        if st.get("leader") and st.get("leader") == st.get("header", {}).get("member_id"):
            return k + 1
    return None


def failover_once(topo: Topology, timeout: float = 15) -> tuple[float, int, int]:
    """Kill the master, time until another instance says master (its `master_since`
    minus the kill), restart the killed one as a standby.  (seconds, old, new)."""
    old = wait_master(topo)
    t_kill = kill(topo.name, f"controller-{old}")
    new = wait_master(topo, timeout, exclude=(old,))
    since = (C.election(topo.name, new) or {}).get("master_since") or time.time()
    C.start_controller(topo, instances=range(old - 1, old))
    C.wait_api(topo.name, instances=topo.controllers)
    return since - t_kill, old, new


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m weft_lab.failover",
                                description="failover time over repeated kills of the master")
    p.add_argument("command", choices=["failover"])
    p.add_argument("--topology", default="topologies/ha.yaml")
    p.add_argument("--lab", default="hafail")
    p.add_argument("--kills", type=int, default=10)
    args = p.parse_args(argv)
    topo = load(args.topology).with_name(args.lab)
    times = []
    with L.running(topo):
        C.wait_api(topo.name, instances=topo.controllers)
        for i in range(args.kills):
            t, old, new = failover_once(topo)
            times.append(t)
            print(f"kill {i + 1}: master ctl{old} -> ctl{new} in {t:.3f} s", flush=True)
            time.sleep(1.0)
    print(json.dumps({"kills": len(times), "p50": round(percentile(times, 50), 3),
                      "p99": round(percentile(times, 99), 3), "max": round(max(times), 3),
                      "lease_ttl": 3.0}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
