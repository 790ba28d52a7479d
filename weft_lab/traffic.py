"""Real traffic between lab nodes: ping and iperf3, parsed into numbers.

Used by the tests and the benchmarks alike, so both measure the same way.
Every process started here is waited for or killed by PID before returning.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from weft_lab.nodes import exec_argv


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


def node_mac(lab: str, node: str, iface: str = "eth0") -> str:
    """The MAC address of a node's interface, as the node sees it."""
    return node_run(lab, node, ["cat", f"/sys/class/net/{iface}/address"],
                    check=True).stdout.strip()


def ping(lab: str, node: str, dst: str, count: int = 3, interval: float = 0.2,
         wait: float = 1.0) -> PingResult:
    """Ping `dst` from `node`; interval below 0.2 s needs root (we are)."""
    out = node_run(lab, node, ["ping", "-n", "-c", str(count), "-i", str(interval),
                               "-W", str(wait), dst],
                   timeout=count * interval + wait + 30).stdout
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    rtts = tuple(float(x) for x in re.findall(r"time=([\d.]+) ms", out))
    return PingResult(int(m.group(1)), int(m.group(2)), rtts) if m else PingResult(count, 0, ())


@dataclass
class PingTally:
    """Filled in when a background ping (`pinging`) has finished."""
    sent: int = 0
    received: int = 0


@contextmanager
def pinging(lab: str, node: str, dst: str, count: int,
            interval: float = 0.01) -> Iterator[PingTally]:
    """Ping in the background while the with-block runs; the result is filled after it.

    For "this change loses no packet of other traffic" checks: the block makes
    the change, and the ping (count x interval long) is then waited for.
    """
    proc = subprocess.Popen(exec_argv(lab, node, ["ping", "-n", "-i", str(interval), "-c",
                                                  str(count), "-W", "1", dst]),
                            stdout=subprocess.PIPE, text=True)
    result = PingTally()
    try:
        yield result
        out, _ = proc.communicate(timeout=count * interval + 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    result.sent, result.received = (int(m.group(1)), int(m.group(2))) if m else (count, 0)


def reaches(lab: str, node: str, dst: str, tries: int = 3) -> bool:
    """True if `dst` answers at least one ping (first packets may wait for ARP)."""
    return ping(lab, node, dst, count=tries, interval=0.2, wait=1).received > 0


def iperf(lab: str, client: str, server: str, server_ip: str, seconds: float = 3,
          udp_mbps: float | None = None, port: int = 5201,
          extra: list[str] | None = None) -> float:
    """Throughput in Mbit/s measured at the receiver by iperf3 (TCP, or UDP at a load)."""
    end = _iperf_end(lab, client, server, server_ip, seconds, udp_mbps, port, extra)
    summary = end.get("sum_received") or end["sum"]
    return float(summary["bits_per_second"]) / 1e6


def udp_pps(lab: str, client: str, server: str, server_ip: str, seconds: float = 3,
            udp_mbps: float = 20, length: int = 64, port: int = 5201) -> tuple[float, float]:
    """(offered, received) packets/s of a small-frame UDP flood (iperf3 -u -l ``length``);
    received is what the server counted (sent minus lost) over the whole run: with
    ``-O`` iperf3 omits the first second from ``packets`` but not from ``lost_packets``."""
    end = _iperf_end(lab, client, server, server_ip, seconds, udp_mbps, port,
                     ["-l", str(length)])
    s = end["sum"]
    return s["packets"] / s["seconds"], (s["packets"] - s["lost_packets"]) / s["seconds"]


def _iperf_end(lab: str, client: str, server: str, server_ip: str, seconds: float,
               udp_mbps: float | None, port: int, extra: list[str] | None) -> dict:
    """The "end" section of an iperf3 -J run (server started for one test, then killed)."""
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
        return data["end"]
    finally:
        srv.kill()
        srv.wait()


# -- isolation probes: marked traffic, counted where it must (not) arrive -----------------

PROBE = "77656674"          # "weft": the ping payload pattern that marks probe traffic
PROBE_ARP_TARGET = "10.10.0.77"   # probes ARP for this address, which nobody has


def probe_filter(arp_target: str = PROBE_ARP_TARGET) -> str:
    """tcpdump filter for probe traffic only, so ARP upkeep of the lab is not counted."""
    return (f"ether proto 0x88b5 or (arp and host {arp_target}) or "
            f"(icmp and icmp[24:4] = 0x{PROBE})")


def tcpdump(lab: str, node: str, args: list[str]) -> subprocess.Popen:
    """Start tcpdump on a node (line-buffered, to stdout); returns once it listens."""
    proc = subprocess.Popen(exec_argv(lab, node, ["tcpdump", "-n", "-l", "--immediate-mode",
                                                  *args]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = ""
    assert proc.stderr is not None
    while "listening on" not in seen:
        line = proc.stderr.readline()
        if not line:
            proc.wait()
            raise RuntimeError(f"tcpdump on {node} did not start: {seen}")
        seen += line
    return proc


def capture(lab: str, nodes: list[str], arp_target: str = PROBE_ARP_TARGET,
            iface: str = "eth0") -> dict[str, subprocess.Popen]:
    """Start tcpdump for probe traffic on each node; returns once all of them listen."""
    procs: dict[str, subprocess.Popen] = {}
    try:
        for n in nodes:
            procs[n] = tcpdump(lab, n, ["-i", iface, probe_filter(arp_target)])
    except RuntimeError:
        captured(procs)
        raise
    return procs


def captured(procs: dict[str, subprocess.Popen]) -> dict[str, int]:
    """Stop the captures; probe packets seen per node."""
    out = {}
    for n, p in procs.items():
        p.send_signal(signal.SIGINT)
        try:
            text, _ = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            text, _ = p.communicate()
        out[n] = len([line for line in text.splitlines() if line.strip()])
    return out


def send_raw(lab: str, node: str, dst_mac: str, count: int = 5, iface: str = "eth0") -> None:
    """Raw Ethernet probes (ethertype 0x88b5, local experimental) to `dst_mac`."""
    code = ("import socket;s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW);"
            f"s.bind(('{iface}',0));"
            f"src=open('/sys/class/net/{iface}/address').read().strip();"
            f"f=bytes.fromhex('{dst_mac.replace(':', '')}')+bytes.fromhex(src.replace(':',''))"
            "+b'\\x88\\xb5'+b'weft-isolation-probe'.ljust(46,b'.');"
            f"[s.send(f) for _ in range({count})]")
    node_run(lab, node, ["python3", "-c", code], check=True)


def probe_all(lab: str, node: str, broadcast: str, unicast: str, macs: list[str],
              iface: str = "eth0") -> None:
    """Every kind of frame a tenant could leak: broadcast, ARP, multicast, unknown and known unicast."""
    node_run(lab, node, ["ping", "-I", iface, "-b", "-p", PROBE, "-c", "3", "-i", "0.2", "-W",
                         "1", broadcast])
    node_run(lab, node, ["arping", "-c", "3", "-w", "2", "-I", iface, PROBE_ARP_TARGET])
    node_run(lab, node, ["ping", "-I", iface, "-p", PROBE, "-c", "3", "-i", "0.2", "-W", "1",
                         unicast])
    for mac in ["ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "02:00:00:00:00:99", *macs]:
        send_raw(lab, node, mac, iface=iface)
