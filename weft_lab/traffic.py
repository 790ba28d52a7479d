"""Real traffic between lab nodes: ping and iperf3, parsed into numbers.

Used by the tests and the benchmarks alike, so both measure the same way.
Every process started here is waited for or killed by PID before returning.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass

from weft_lab.lab import exec_argv


@dataclass(frozen=True)
class PingResult:
    sent: int
    received: int
    rtts_ms: tuple[float, ...]

    @property
    def lost(self) -> int:
        return self.sent - self.received


def node_run(lab: str, node: str, cmd: list[str], timeout: float = 60,
             check: bool = False) -> subprocess.CompletedProcess:
    """Run a command on a lab node and capture its output."""
    return subprocess.run(exec_argv(lab, node, cmd), capture_output=True, text=True,
                          timeout=timeout, check=check)


def ping(lab: str, node: str, dst: str, count: int = 3, interval: float = 0.2,
         wait: float = 1.0) -> PingResult:
    """Ping `dst` from `node`; interval below 0.2 s needs root (we are)."""
    out = node_run(lab, node, ["ping", "-n", "-c", str(count), "-i", str(interval),
                               "-W", str(wait), dst],
                   timeout=count * interval + wait + 30).stdout
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    rtts = tuple(float(x) for x in re.findall(r"time=([\d.]+) ms", out))
    return PingResult(int(m.group(1)), int(m.group(2)), rtts) if m else PingResult(count, 0, ())


def reaches(lab: str, node: str, dst: str, tries: int = 3) -> bool:
    """True if `dst` answers at least one ping (first packets may wait for ARP)."""
    return ping(lab, node, dst, count=tries, interval=0.2, wait=1).received > 0


def iperf(lab: str, client: str, server: str, server_ip: str, seconds: float = 3,
          udp_mbps: float | None = None, port: int = 5201,
          extra: list[str] | None = None) -> float:
    """Throughput in Mbit/s measured at the receiver by iperf3 (TCP, or UDP at a load)."""
    srv = subprocess.Popen(exec_argv(lab, server, ["iperf3", "-s", "-1", "-p", str(port)]),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        cmd = ["iperf3", "-c", server_ip, "-p", str(port), "-t", str(seconds), "-J"]
        if udp_mbps:
            cmd += ["-u", "-b", f"{udp_mbps}M"]
        cmd += extra or []
        for _ in range(50):          # the server needs a moment to listen
            res = node_run(lab, client, cmd, timeout=seconds + 30)
            if "Connection refused" not in res.stdout + res.stderr:
                break
            time.sleep(0.1)
        data = json.loads(res.stdout)
        if "error" in data:
            raise RuntimeError(f"iperf3 {client} -> {server_ip}: {data['error']}")
        end = data["end"]
        summary = end.get("sum_received") or end.get("sum")
        return summary["bits_per_second"] / 1e6
    finally:
        srv.kill()
        srv.wait()
