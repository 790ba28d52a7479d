"""The demo: two Docker hosts, a container on each, reaching each other through weft.

`./dev.sh demo [--keep] [--topology FILE]` brings up the lab, shows what it
built, sends real traffic between containers on different hosts, and tears
the lab down again (unless --keep).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from weft_lab import lab as L
from weft_lab.topology import load
from weft_lab.traffic import iperf, ping

ROOT = Path(__file__).resolve().parent.parent


def say(msg: str) -> None:
    print(f"\n== {msg}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="weft-demo", description=__doc__)
    ap.add_argument("--topology", default=str(ROOT / "topologies" / "two-hosts.yaml"))
    ap.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    args = ap.parse_args(argv)
    topo = load(args.topology)
    if L.lab_exists(topo.name):
        say(f"lab {topo.name} is already up: taking it down first")
        L.down(topo.name)
    say(f"weft-lab up {args.topology}")
    secs = L.up(topo, log=print)
    print(f"built in {secs:.1f}s")
    ok = False
    try:
        if topo.controller or topo.agent:
            from weft_lab.cluster import wait_converged
            say("waiting for the agents and the controller to converge")
            print(f"converged in {wait_converged(topo):.1f}s")
        say("weft-lab status")
        subprocess.run([sys.executable, "-m", "weft_lab.cli", "status", "--lab", topo.name])
        c1, c2 = topo.containers[0], topo.containers[1]
        dst = c2.ip.split("/")[0]
        if topo.docker:
            from weft_lab import docker
            for h in topo.hosts:
                d = L.host_dir(topo.name, h.name)
                say(f"{h.name}: dockerd started with the agent's {d / 'daemon.json'}: "
                    + " ".join((d / "daemon.json").read_text().split()))
                print(docker.docker(d, "ps", "--format",
                                    "table {{.Names}}\t{{.Image}}\t{{.Status}}"), end="")
            say(f"docker exec {c1.name} ping {dst}  ({c2.name}, a docker run container on "
                f"{c2.host})")
            out = docker.docker(L.host_dir(topo.name, c1.host), "exec", c1.name, "ping", "-c",
                                "3", "-W", "2", dst, check=False)
            print(out, end="")
        say(f"ping from {c1.name} (on {c1.host}) to {c2.name} {dst} (on {c2.host})")
        res = ping(topo.name, c1.name, dst, count=5, interval=0.2)
        print(f"{res.received}/{res.sent} replies, rtt ms {', '.join(f'{r:.2f}' for r in res.rtts_ms)}")
        say(f"iperf3 TCP {c1.name} -> {c2.name} across the tunnel")
        c2c = iperf(topo.name, c1.name, c2.name, dst, seconds=3)
        print(f"{c2c:.0f} Mbit/s container to container")
        h1, h2 = topo.host(c1.host), topo.host(c2.host)
        say(f"iperf3 TCP {h1.name} -> {h2.name} over the underlay, for comparison")
        h2h = iperf(topo.name, h1.name, h2.name, h2.underlay_ip, seconds=3)
        print(f"{h2h:.0f} Mbit/s host to host; overlay/underlay ratio {c2c / h2h:.2f}")
        for host in (h1.name,):
            say(f"OpenFlow rules on {host}'s br0")
            subprocess.run(L.exec_argv(topo.name, host, ["ovs-ofctl", "-O", "OpenFlow13",
                                                          "dump-flows", "br0"]))
        ok = res.received > 0
    finally:
        if args.keep:
            say(f"lab left up: weft-lab exec --lab {topo.name} c1 -- ping {topo.addr('c2')}; "
                f"weft-lab down --lab {topo.name}")
        else:
            t0 = time.monotonic()
            L.down(topo.name)
            say(f"weft-lab down: removed in {time.monotonic() - t0:.1f}s")
    print("\nDEMO " + ("OK: containers on different hosts reach each other" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
