"""Throughput on the kernel datapath, in a VM lab: weft vs plain kernel OVS vs flannel style.

`weft-lab vm bench [--lab vm] [--rounds 3] [--secs 5]` (after `weft-lab vm up`):
TCP iperf3 from host1 to host2, one interleaved run (weft, plain, flannel, weft, ...):

* **weft**: `docker run` containers on docker0 (the default tenant), weft's br0,
  VXLAN port 4789, flows from the controller;
* **plain kernel OVS VXLAN**: a standalone OVS bridge `brp` (NORMAL), a VXLAN port on
  UDP 4790, a namespace on a veth, same kernel datapath;
* **flannel style**: a Linux bridge `brf` with a kernel VXLAN device (UDP 8472,
  flannel's port) and a namespace on a veth.

All at MTU 1450, inside the guests.  Under QEMU's emulator the absolute figures are
the emulated CPUs', so only the ratios mean something.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from weft_lab import vm

SETUP = """
set -e
ip netns add np 2>/dev/null || true
ip netns add nf 2>/dev/null || true
ovs-vsctl --may-exist add-br brp -- set bridge brp fail_mode=standalone
ovs-vsctl --may-exist add-port brp vxp -- set interface vxp type=vxlan \
  options:remote_ip={peer} options:key=4242 options:dst_port=4790
ip link show np0 >/dev/null 2>&1 || {{ ip link add np0 type veth peer name np1 netns np;
  ovs-vsctl add-port brp np0; }}
ip link set np0 mtu 1450 up
ip -n np link set lo up; ip -n np link set np1 mtu 1450 up
ip -n np addr replace 10.201.0.{n}/24 dev np1
ip link show brf >/dev/null 2>&1 || {{ ip link add brf type bridge;
  ip link add vxf type vxlan id 4243 dstport 8472 local {me} remote {peer} dev eth0;
  ip link set vxf master brf; ip link add nf0 type veth peer name nf1 netns nf;
  ip link set nf0 master brf; }}
ip link set vxf mtu 1450 up; ip link set brf up; ip link set nf0 mtu 1450 up
ip -n nf link set lo up; ip -n nf link set nf1 mtu 1450 up
ip -n nf addr replace 10.202.0.{n}/24 dev nf1
# Docker sets FORWARD's policy to DROP and loads br_netfilter: let brf's frames through,
# as flannel does for its own network
iptables -C FORWARD -i brf -j ACCEPT 2>/dev/null || iptables -I FORWARD -i brf -j ACCEPT
iptables -C FORWARD -o brf -j ACCEPT 2>/dev/null || iptables -I FORWARD -o brf -j ACCEPT
"""

TEARDOWN = """
ip netns pids np 2>/dev/null | xargs -r kill; ip netns pids nf 2>/dev/null | xargs -r kill
ovs-vsctl --if-exists del-br brp; ip link del brf 2>/dev/null; ip link del vxf 2>/dev/null
ip link del np0 2>/dev/null; ip link del nf0 2>/dev/null
ip netns del np 2>/dev/null; ip netns del nf 2>/dev/null
iptables -D FORWARD -i brf -j ACCEPT 2>/dev/null; iptables -D FORWARD -o brf -j ACCEPT 2>/dev/null
true
"""


def _container(lab: str, host: str, name: str) -> str:
    vm.sh(lab, host, f"docker rm -f {name} >/dev/null 2>&1; docker run -d --pull=never "
                     f"--name {name} weft-lab/busybox:1 sleep 100000")
    return vm.sh(lab, host, f"docker inspect -f '{{{{.NetworkSettings.IPAddress}}}}' {name}").strip()


def _run(lab: str, kind: str, target: str, secs: int) -> float:
    server, client = {
        "weft": ("docker exec -d wb2 iperf3 -s -1", f"docker exec wb1 iperf3 -J -O 1 -t {secs} "
                                                     f"-c {target} --connect-timeout 10000"),
        "plain": ("ip netns exec np iperf3 -s -1 -D", f"ip netns exec np iperf3 -J -O 1 "
                                                      f"-t {secs} -c {target} --connect-timeout 10000"),
        "flannel": ("ip netns exec nf iperf3 -s -1 -D", f"ip netns exec nf iperf3 -J -O 1 "
                                                        f"-t {secs} -c {target} --connect-timeout 10000"),
    }[kind]
    vm.sh(lab, "host2", server)
    time.sleep(1)
    out = vm.sh(lab, "host1", client, timeout=secs + 120)
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6


def measure(lab: str, rounds: int = 3, secs: int = 5, log=print) -> dict:
    """Interleaved iperf3 runs; Mbit/s lists per kind, medians and ratios."""
    g1, g2 = vm.load(lab)[:2]
    for n, (me, peer) in ((1, (g1, g2)), (2, (g2, g1))):
        vm.sh(lab, me.name, SETUP.format(peer=peer.ip, me=me.ip, n=n))
    try:
        _container(lab, "host1", "wb1")
        target = {"weft": _container(lab, "host2", "wb2"), "plain": "10.201.0.2",
                  "flannel": "10.202.0.2"}
        runs: dict[str, list[float]] = {k: [] for k in target}
        for r in range(rounds):
            for kind in target:
                mbps = _run(lab, kind, target[kind], secs)
                runs[kind].append(mbps)
                log(f"round {r + 1} {kind:8} {mbps:7.1f} Mbit/s")
    finally:
        for g in (g1, g2):
            vm.sh(lab, g.name, TEARDOWN + "\ndocker rm -f wb1 wb2 >/dev/null 2>&1; true",
                  check=False)
    med = {k: statistics.median(v) for k, v in runs.items()}
    return {"runs": runs, "median_mbps": med,
            "weft_vs_plain": med["weft"] / med["plain"],
            "plain_vs_flannel": med["plain"] / med["flannel"],
            "weft_vs_flannel": med["weft"] / med["flannel"], "secs": secs, "rounds": rounds,
            "accel": vm.accel()[1]}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="weft-lab vm bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--lab", default="vm")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=5)
    args = ap.parse_args(argv)
    res = measure(args.lab, args.rounds, args.secs)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
