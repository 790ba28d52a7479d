"""Fault injection with a 100 pps ping running: what each daemon's death costs traffic.

    python -m weft_lab.faults [--rounds 3] [--seconds 20]

builds its own lab (two hosts, a tenant container on each; docker: false), pings between
the containers at 100 packets/s, kills one daemon of the sender's host with SIGKILL 3 s
in, restarts it the way a supervisor would (after `--restart-after` seconds, systemd's
RestartSec), and reports packets lost and the longest gap. tests/lab/test_members.py runs
the same functions with assertions where the behaviour is a contract (agent: 0 lost).
"""
from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import yaml

from weft_lab import lab as L
from weft_lab import nodes as N
from weft_lab.shell import netns_pids


@dataclass(frozen=True)
class Outage:
    fault: str
    sent: int
    lost: int
    longest_gap_s: float        # longest run of lost replies, in seconds of the ping
    max_rtt_ms: float = 0.0     # a frozen datapath queues packets: late, not lost

    def __str__(self) -> str:
        return (f"{self.fault}: {self.lost}/{self.sent} lost, longest gap "
                f"{self.longest_gap_s:.2f} s, max rtt {self.max_rtt_ms:.0f} ms")


def ping_through(lab: str, src: str, dst: str, fault: Callable[[], None], name: str,
                 seconds: float = 20, pps: int = 100, fault_at: float = 3.0) -> Outage:
    """Ping `dst` from container `src` at `pps` for `seconds`; `fault()` runs `fault_at` s in."""
    count = int(seconds * pps)
    proc = subprocess.Popen(N.exec_argv(lab, src, ["ping", "-n", "-i", str(1 / pps), "-c",
                                                   str(count), "-W", "1", dst]),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(fault_at)
        fault()
        out, _ = proc.communicate(timeout=seconds + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    seqs = sorted({int(s) for s in re.findall(r"icmp_seq=(\d+)", out)})
    m = re.search(r"(\d+) packets transmitted", out)
    sent = int(m.group(1)) if m else count
    edges = [0, *seqs, sent + 1]
    gap = max(b - a - 1 for a, b in zip(edges, edges[1:]))
    rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]
    return Outage(name, sent, sent - len(seqs), round(gap / pps, 2), max(rtts, default=0.0))


def agent_pid(lab: str, host: str) -> int:
    for pid in netns_pids(N.ns_name(lab, host)):
        try:
            if b"ovs_agent.cli" in open(f"/proc/{pid}/cmdline", "rb").read():
                return pid
        except OSError:
            continue
    raise LookupError(f"no ovs-agent runs on {host}")


def kill_agent(lab: str, host: str, restart_after: float = 2.0) -> Callable[[], None]:
    def fault() -> None:
        import os
        os.kill(agent_pid(lab, host), signal.SIGKILL)
        time.sleep(restart_after)
        L.start_agent(lab, host)
    return fault


def kill_ovs(lab: str, host: str, daemon: str,
             restart_after: float | None = 1.0) -> Callable[[], None]:
    """SIGKILL "ovsdb-server" or "ovs-vswitchd"; restart it after `restart_after` (None: never
    within the run; the caller restarts it afterwards)."""
    start = {"ovsdb-server": L.start_ovsdb, "ovs-vswitchd": L.start_vswitchd}[daemon]

    def fault() -> None:
        L.kill_daemon(lab, host, daemon)
        if restart_after is not None:
            time.sleep(restart_after)
            start(lab, host)
    return fault


def topology(name: str) -> dict:
    """The fault lab as a topology document (weft_lab.topology): two hosts with a
    container of tenant red on each, r1 pinging r2; docker: false.
    tests/lab/test_members.py builds its lab from this one, with more added."""
    def red(n: int) -> dict:
        return {"name": f"r{n}", "attach": "br0", "tenant": "red", "ip": f"10.100.0.1{n}/24",
                "mac": f"02:00:00:00:01:0{n}"}
    return {"name": name, "agent": True, "docker": False,
            "tenants": [{"name": "red", "subnet": "10.100.0.0/24"}],
            "hosts": [{"name": f"h{n}", "containers": [red(n)]} for n in (1, 2)]}


def main(argv: list[str] | None = None) -> int:
    from weft_lab.cluster import wait_converged
    from weft_lab.topology import parse
    ap = argparse.ArgumentParser(prog="python -m weft_lab.faults", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lab", default="faults")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--restart-after", type=float, default=1.0)
    ap.add_argument("--only", help="run only the faults whose name contains this")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    topo = parse(yaml.safe_dump(topology(args.lab), sort_keys=False))
    results: list[Outage] = []
    with L.running(topo) as t:
        wait_converged(t)
        lab, r2 = t.name, t.addr("r2")
        faults = {
            "ovs-agent kill -9 (restarted 2 s later)": lambda: kill_agent(lab, "h1"),
            f"ovsdb-server kill -9 (restarted {args.restart_after:g} s later)":
                lambda: kill_ovs(lab, "h1", "ovsdb-server", args.restart_after),
            "ovsdb-server kill -9 (restarted 5 s later)":
                lambda: kill_ovs(lab, "h1", "ovsdb-server", 5.0),
            "ovsdb-server kill -9 (not restarted)":
                lambda: kill_ovs(lab, "h1", "ovsdb-server", None),
            f"ovs-vswitchd kill -9 (restarted {args.restart_after:g} s later)":
                lambda: kill_ovs(lab, "h1", "ovs-vswitchd", args.restart_after),
        }
        for name, make in faults.items():
            if args.only and args.only not in name:
                continue
            for _ in range(args.rounds):
                out = ping_through(lab, "r1", r2, make(), name, args.seconds)
                results.append(out)
                print(out, flush=True)
                if "not restarted" in name:
                    L.start_ovsdb(lab, "h1")
                wait_converged(t)
                time.sleep(2)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
