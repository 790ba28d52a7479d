"""What a hostile tenant does from inside a container, for the security tests and benches.

Frames are crafted with a raw AF_PACKET socket in the node's namespace (no
tool beyond python3), so any source MAC, ARP field or IP header can be forged.
Everything stays inside the lab's namespaces.
"""
from __future__ import annotations

import ipaddress
import re
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from weft_lab.nodes import exec_argv, ns_name, ovs_env
from weft_lab.shell import netns_pids, run
from weft_lab.traffic import captured, node_mac, node_run, ping, pinging, tcpdump

PROBE_ETHERTYPE = 0x88B5
PROBE_PAYLOAD = b"weft-isolation-probe".ljust(46, b".")
BCAST = "ff:ff:ff:ff:ff:ff"


def _mac(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def eth(dst: str, src: str, ethertype: int, payload: bytes) -> bytes:
    return _mac(dst) + _mac(src) + struct.pack("!H", ethertype) + payload


def probe(dst: str, src: str) -> bytes:
    """A marked frame (ethertype 0x88b5) the isolation captures count."""
    return eth(dst, src, PROBE_ETHERTYPE, PROBE_PAYLOAD)


def arp(src_mac: str, sha: str, spa: str, tpa: str, op: int = 2, dst: str = BCAST) -> bytes:
    """An ARP reply (op 2, gratuitous when spa == tpa) or request (op 1)."""
    tha = _mac(BCAST) if op == 2 else bytes(6)
    body = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, _mac(sha),
                       ipaddress.IPv4Address(spa).packed, tha, ipaddress.IPv4Address(tpa).packed)
    return eth(dst, src_mac, 0x0806, body.ljust(46, b"\0"))


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ipv4(src_ip: str, dst_ip: str, proto: int, payload: bytes) -> bytes:
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0x77, 0, 64, proto, 0,
                       ipaddress.IPv4Address(src_ip).packed, ipaddress.IPv4Address(dst_ip).packed)
    head = head[:10] + struct.pack("!H", _checksum(head)) + head[12:]
    return head + payload


def icmp_echo(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str) -> bytes:
    body = struct.pack("!BBHHH", 8, 0, 0, 0x7766, 1) + b"weft-spoofed-ip".ljust(32, b".")
    body = body[:2] + struct.pack("!H", _checksum(body)) + body[4:]
    return eth(dst_mac, src_mac, 0x0800, ipv4(src_ip, dst_ip, 1, body))


# --- IPv6 and Neighbour Discovery (RFC 4861) -------------------------------------------
ALL_NODES6, ALL_NODES6_MAC = "ff02::1", "33:33:00:00:00:01"


def ipv6(src_ip: str, dst_ip: str, next_header: int, payload: bytes,
         hop_limit: int = 255) -> bytes:
    """An IPv6 header + ``payload`` (ND needs hop limit 255, which receivers check)."""
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), next_header, hop_limit,
                       ipaddress.IPv6Address(src_ip).packed,
                       ipaddress.IPv6Address(dst_ip).packed) + payload


def icmp6(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str, type_: int, body: bytes,
          code: int = 0) -> bytes:
    """An ICMPv6 message in an Ethernet frame, its checksum over the pseudo-header."""
    msg = struct.pack("!BBH", type_, code, 0) + body
    pseudo = (ipaddress.IPv6Address(src_ip).packed + ipaddress.IPv6Address(dst_ip).packed
              + struct.pack("!I3xB", len(msg), 58))
    msg = msg[:2] + struct.pack("!H", _checksum(pseudo + msg)) + msg[4:]
    return eth(dst_mac, src_mac, 0x86DD, ipv6(src_ip, dst_ip, 58, msg))


def _lladdr_option(kind: int, mac: str) -> bytes:
    return struct.pack("!BB", kind, 1) + _mac(mac)        # 1: source, 2: target lladdr


def neighbour_advert(src_mac: str, src_ip: str, target: str, lladdr: str,
                     dst_mac: str = ALL_NODES6_MAC, dst_ip: str = ALL_NODES6,
                     override: bool = True, solicited: bool = False) -> bytes:
    """An NA for ``target`` at ``lladdr`` (unsolicited with override: what an attacker
    sends to take an address, the IPv6 twin of a gratuitous ARP)."""
    flags = (0x20000000 if override else 0) | (0x40000000 if solicited else 0)
    body = struct.pack("!I16s", flags, ipaddress.IPv6Address(target).packed)
    return icmp6(src_mac, dst_mac, src_ip, dst_ip, 136, body + _lladdr_option(2, lladdr))


def router_advert(src_mac: str, src_ip: str, prefix: str, lifetime: int = 1800) -> bytes:
    """An RA to all nodes: a default router (``lifetime`` s) and an autoconfiguration
    prefix (``prefix``, a /64): what a rogue router in a container would send."""
    body = struct.pack("!BBHII", 64, 0, lifetime, 0, 0) + _lladdr_option(1, src_mac)
    net = ipaddress.IPv6Network(prefix)
    body += struct.pack("!BBBBIII16s", 3, 4, net.prefixlen, 0xC0, 86400, 14400, 0,
                        net.network_address.packed)
    return icmp6(src_mac, ALL_NODES6_MAC, src_ip, ALL_NODES6, 134, body)


def echo6(src_mac: str, dst_mac: str, src_ip: str, dst_ip: str) -> bytes:
    """An ICMPv6 echo request (a forged source address's probe)."""
    body = struct.pack("!HH", 0x7766, 1) + b"weft-spoofed-ip6".ljust(32, b".")
    return icmp6(src_mac, dst_mac, src_ip, dst_ip, 128, body, 0)


def na_hijack(lab: str, attacker: str, attacker_ip: str, pinger: str, victim_ip: str,
              seconds: float = 5) -> Hijack:
    """``attacker`` claims ``victim_ip`` with unsolicited override NAs (from its own
    address, and from the victim's) every 0.1 s while ``pinger`` pings it; the pinger's
    echo requests for the victim at the attacker are stolen."""
    mac = node_mac(lab, attacker)
    frames = [neighbour_advert(mac, attacker_ip, victim_ip, mac),
              neighbour_advert(mac, victim_ip, victim_ip, mac)]
    return hijack(lab, attacker, frames, pinger, victim_ip,
                  f"icmp6 and ip6[40] = 128 and dst host {victim_ip}", seconds)


def send(lab: str, node: str, frames: list[bytes], count: int = 1, iface: str = "eth0") -> None:
    """Send each frame ``count`` times from ``node`` through a raw socket."""
    hexes = [f.hex() for f in frames]
    code = ("import socket;s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW);"
            f"s.bind(({iface!r},0));fs=[bytes.fromhex(h) for h in {hexes!r}];"
            f"[s.send(f) for _ in range({count}) for f in fs]")
    node_run(lab, node, ["python3", "-c", code], check=True)


def flood_random_macs(lab: str, node: str, n: int, iface: str = "eth0", seed: int = 11,
                      src: str | None = None, rate: float = 0) -> subprocess.Popen:
    """Start sending ``n`` broadcast probes with random unicast source MACs (or all from
    ``src``), as fast as python can (about 50k frames/s) or ``rate`` per second; returns
    the process (wait for it or kill it)."""
    fixed = _mac(src).hex() if src else ""
    pause = f"time.sleep({1 / rate})" if rate else "pass"
    code = (f"import socket,random,time;r=random.Random({seed});"
            f"s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW);s.bind(({iface!r},0));"
            f"p=bytes.fromhex('ffffffffffff');t=b'\\x88\\xb5'+{PROBE_PAYLOAD!r};"
            f"fx=bytes.fromhex({fixed!r})\n"
            f"for i in range({n}):\n"
            " m=bytearray(r.randbytes(6));m[0]=(m[0]&0xfc)|2\n"
            " s.send(p+(fx or bytes(m))+t)\n"
            f" {pause}\n")
    return subprocess.Popen(exec_argv(lab, node, ["python3", "-c", code]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def send_every(lab: str, node: str, frames: list[bytes], interval: float, seconds: float,
               iface: str = "eth0") -> subprocess.Popen:
    """Start sending ``frames`` from ``node`` every ``interval`` s for ``seconds`` (as an
    arpspoof keeps a poisoned neighbour entry fresh); returns the process to wait for."""
    hexes = [f.hex() for f in frames]
    code = (f"import socket,time;s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW);"
            f"s.bind(({iface!r},0));fs=[bytes.fromhex(h) for h in {hexes!r}];"
            f"end=time.monotonic()+{seconds}\n"
            "while time.monotonic()<end:\n"
            " [s.send(f) for f in fs]\n"
            f" time.sleep({interval})\n")
    return subprocess.Popen(exec_argv(lab, node, ["python3", "-c", code]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def arp_hijack_frames(kind: str, mac: str, victim_ip: str, target_ip: str,
                      target_mac: str) -> list[bytes]:
    """What an attacker with ``mac`` sends to take ``victim_ip``'s traffic from the
    host at ``target_ip``/``target_mac``: a gratuitous ARP (broadcast, spa == tpa) or a
    unicast ARP reply to the target."""
    if kind == "gratuitous":
        return [arp(mac, mac, victim_ip, victim_ip)]
    if kind == "unicast reply":
        return [arp(mac, mac, victim_ip, target_ip, dst=target_mac)]
    raise ValueError(f"no ARP hijack {kind!r} (gratuitous | unicast reply)")


@dataclass(frozen=True)
class Hijack:
    """What an attack took: frames meant for the victim that reached the attacker, and
    the pings to the victim that were answered during and right after the attack."""
    stolen: int
    during: tuple[int, int]        # (received, sent)
    after: tuple[int, int]

    @property
    def held(self) -> bool:
        """The victim kept all of its traffic."""
        return self.stolen == 0 and all(r == s for r, s in (self.during, self.after))


def hijack(lab: str, attacker: str, frames: list[bytes], pinger: str, victim_ip: str,
           stolen_filter: str, seconds: float = 5, every: float = 0.1,
           after: int = 10) -> Hijack:
    """``attacker`` sends ``frames`` every ``every`` s for ``seconds`` while ``pinger``
    pings ``victim_ip`` (every 50 ms), then ``after`` more pings right after it stops;
    frames matching ``stolen_filter`` (tcpdump) at the attacker are the ones it took."""
    at = tcpdump(lab, attacker, ["-i", "eth0", stolen_filter])
    try:
        count = int(seconds / 0.05)
        with pinging(lab, pinger, victim_ip, count, interval=0.05) as during:
            attack = send_every(lab, attacker, frames, every, seconds)
            try:
                attack.wait(timeout=seconds + 30)
            finally:
                if attack.poll() is None:
                    attack.kill()
                    attack.wait()
        assert attack.returncode == 0, attack.stderr.read() if attack.stderr else ""
        late = ping(lab, pinger, victim_ip, count=after, interval=0.1)
    finally:
        stolen = captured({attacker: at})[attacker]
    return Hijack(stolen, (during.received, during.sent), (late.received, late.sent))


def arp_hijack(lab: str, attacker: str, kind: str, pinger: str, pinger_ip: str,
               victim_ip: str, seconds: float = 5) -> Hijack:
    """``attacker`` claims ``victim_ip`` with ARP (``arp_hijack_frames``) while ``pinger``
    pings it; the pinger's echo requests for the victim at the attacker are stolen."""
    mac = node_mac(lab, attacker)
    frames = arp_hijack_frames(kind, mac, victim_ip, pinger_ip, node_mac(lab, pinger))
    return hijack(lab, attacker, frames, pinger, victim_ip,
                  f"icmp[icmptype] = icmp-echo and dst host {victim_ip}", seconds)


def ofctl(lab: str, host: str, *args: str) -> str:
    """ovs-ofctl (OpenFlow 1.3) against a lab host's br0."""
    return run(["ovs-ofctl", "-O", "OpenFlow13", *args], ns=ns_name(lab, host),
               env=ovs_env(lab, host))


def learned_flows(lab: str, host: str) -> int:
    """Flows the host's br0 learned (weft's learned cookie; two per MAC)."""
    out = ofctl(lab, host, "dump-aggregate", "br0",
                "cookie=0x5746040000000000/0xffffff0000000000")
    m = re.search(r"flow_count=(\d+)", out)
    return int(m.group(1)) if m else 0


def controller_pid(lab: str) -> int:
    for pid in netns_pids(ns_name(lab, "ctl")):
        if b"controller.manager" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise RuntimeError("controller not running")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def meter_latency(api, lab: str, host: str, tenant: str, kbps: int,
                  timeout: float = 60) -> float:
    """Seconds from a REST rate-limit POST to its meter showing on the host's switch
    (the limit is deleted again afterwards)."""
    t0 = time.monotonic()
    resp = api.post("/v1/qos/limits", json={"host": host, "tenant": tenant, "kbps": kbps})
    resp.raise_for_status()
    meter = resp.json()["id"]
    try:
        while time.monotonic() - t0 < timeout:
            if re.search(rf"\bmeter={meter}\b", ofctl(lab, host, "dump-meters", "br0")):
                return time.monotonic() - t0
            time.sleep(0.01)
        return float("inf")
    finally:
        api.delete(f"/v1/qos/limits/{meter}")


# -- a fake switch: an OpenFlow 1.3 client claiming another host's datapath id ----------------
OF_TYPES = {0: "hello", 1: "error", 2: "echo_request", 5: "features_request",
            7: "get_config_request", 9: "set_config", 13: "packet_out", 14: "flow_mod",
            15: "group_mod", 16: "port_mod", 18: "multipart_request", 20: "barrier_request",
            24: "role_request", 29: "meter_mod"}

_FAKE_SWITCH = r'''
import json, socket, ssl, struct, sys, time
host, port, dpid, mode, seconds, cert, key = sys.argv[1:8]
got, out = {}, {"connected": False, "tls": None}
try:
    sock = socket.create_connection((host, int(port)), timeout=5)
    if mode != "tcp":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if cert:
            ctx.load_cert_chain(cert, key)
        sock = ctx.wrap_socket(sock)
        out["tls"] = "handshake done"
    out["connected"] = True
    sock.settimeout(0.5)
    sock.sendall(struct.pack("!BBHI", 4, 0, 8, 1))
    buf, end = b"", time.time() + float(seconds)
    while time.time() < end:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        if not data:
            out["closed_by_controller"] = True
            break
        buf += data
        while len(buf) >= 8:
            ver, typ, length, xid = struct.unpack_from("!BBHI", buf)
            if len(buf) < length:
                break
            body, buf = buf[8:length], buf[length:]
            got[typ] = got.get(typ, 0) + 1
            def reply(t, payload=b""):
                sock.sendall(struct.pack("!BBHI", 4, t, 8 + len(payload), xid) + payload)
            if typ == 2:
                reply(3, body)
            elif typ == 5:
                reply(6, struct.pack("!QIBBxxII", int(dpid, 16), 0, 254, 0, 0x4f, 0))
            elif typ == 20:
                reply(21)
            elif typ == 18:
                (mp,) = struct.unpack_from("!H", body)
                extra = struct.pack("!QQIxxxx", 0, 0, 0) if mp == 2 else b""
                reply(19, struct.pack("!HHxxxx", mp, 0) + extra)
except (OSError, ssl.SSLError) as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
out["received"] = {str(k): v for k, v in sorted(got.items())}
print(json.dumps(out))
'''


def fake_switch(lab: str, node: str, controller: str, dpid: int, mode: str = "tcp",
                seconds: float = 6, cert: str = "", key: str = "") -> dict:
    """Connect from ``node`` to the controller as a switch with datapath id ``dpid``
    (``mode`` tcp or tls, optionally with a client ``cert``/``key``), answer like a
    switch with no ports for ``seconds``; returns what it received, by message type."""
    import json
    res = node_run(lab, node, ["python3", "-c", _FAKE_SWITCH, controller, "6653",
                               f"{dpid:x}", mode, str(seconds), cert, key],
                   timeout=seconds + 30)
    out = json.loads(res.stdout.strip().splitlines()[-1]) if res.stdout.strip() else {
        "error": res.stderr[-500:]}
    out["received"] = {OF_TYPES.get(int(k), k): v for k, v in out.get("received", {}).items()}
    return out


def self_signed(d: Path, cn: str) -> tuple[str, str]:
    """A certificate claiming ``cn`` that no weft CA signed: (cert, key) paths."""
    from cluster import pki
    pki.init_ca(d, cn)
    return str(d / pki.CA_CERT), str(d / pki.CA_KEY)


# -- tunnel injection: a container sends encapsulated frames to a peer's underlay address -----
_INJECT = r'''
import socket, struct, sys
kind, dst, vni, count, inner = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), \
    bytes.fromhex(sys.argv[5])
if kind == "vxlan":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pkt, addr = struct.pack("!II", 0x08000000, vni << 8) + inner, (dst, 4789)
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 47)
    pkt, addr = struct.pack("!HHI", 0x2000, 0x6558, vni) + inner, (dst, 0)
for _ in range(count):
    s.sendto(pkt, addr)
'''


def inject(lab: str, node: str, kind: str, dst_ip: str, vni: int, inner: bytes,
           count: int = 20) -> None:
    """Send ``count`` VXLAN (udp 4789) or GRE (key = ``vni``) packets carrying ``inner``
    from ``node`` to ``dst_ip``: what a container on a Docker host can do."""
    node_run(lab, node, ["python3", "-c", _INJECT, kind, dst_ip, str(vni), str(count),
                         inner.hex()], check=True)
