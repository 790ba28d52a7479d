"""Measurements shared by the tests and the benchmarks, so both measure the same way."""
from __future__ import annotations

import re
import subprocess
import time

import httpx

from weft_lab.nodes import ns_name, vsctl
from weft_lab.shell import run


def plug_bare_port(lab: str, host: str, node: str, ip: str, mac: str, port: str,
                   mtu: int = 1450) -> str:
    """A container-like namespace on an operator-made br0 port, bound to no tenant.

    Its namespace carries the lab prefix, so `weft-lab down` removes it too.
    """
    host_ns, ns = ns_name(lab, host), ns_name(lab, node)
    run(["ip", "netns", "add", ns])
    run(["ip", "link", "add", port, "netns", host_ns, "type", "veth", "peer", "name", "eth0",
         "netns", ns])
    for where, dev in ((host_ns, port), (ns, "eth0")):
        run(["ethtool", "-K", dev, "tx", "off"], ns=where)
        run(["ip", "link", "set", dev, "mtu", str(mtu), "up"], ns=where)
    run(["ip", "link", "set", "eth0", "address", mac], ns=ns)
    run(["ip", "addr", "add", ip, "dev", "eth0"], ns=ns)
    vsctl(lab, host, "add-port", "br0", port)
    return ns


def pings(ns: str, dst: str, count: int = 2) -> bool:
    """True if `dst` answers from namespace `ns`."""
    return subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", str(count), "-i", "0.2",
                           "-W", "1", dst], capture_output=True).returncode == 0


def bind_to_first_packet(api: httpx.Client, ns: str, binding: dict, dst: str, dst_mac: str,
                         rounds: int, settle) -> list[float]:
    """Seconds from a REST call binding a port to the first reply through it, per round.

    A static neighbour entry for `dst` keeps ARP out of the measurement, and a
    ping every 2 ms runs before the call is made; after each round the port is
    unbound again and `settle()` waits for the switches to follow.
    """
    run(["ip", "neigh", "replace", dst, "lladdr", dst_mac, "dev", "eth0"], ns=ns)
    out: list[float] = []
    for _ in range(rounds):
        proc = subprocess.Popen(["ip", "netns", "exec", ns, "ping", "-D", "-n", "-i", "0.002",
                                 "-c", "2500", "-W", "1", dst], stdout=subprocess.PIPE,
                                text=True)
        try:
            time.sleep(0.1)
            t0 = time.time()
            resp = api.post("/v1/ports", json=binding)
            resp.raise_for_status()
            first = None
            for line in proc.stdout or ():
                m = re.match(r"\[(\d+\.\d+)\] \d+ bytes from", line)
                if m and float(m.group(1)) > t0:
                    first = float(m.group(1))
                    break
        finally:
            proc.kill()
            proc.wait()
        if first is None:
            raise RuntimeError("no packet went through after binding")
        out.append(first - t0)
        api.delete(f"/v1/ports/{binding['host']}/{binding['port']}").raise_for_status()
        settle()
    return out


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]
