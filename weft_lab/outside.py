"""The lab's outside world: servers on external nodes, and clients that talk to them.

An external node (topology ``external:``) stands for the LAN or the internet beyond the
hosts' underlay, behind the router ``LAB.wan`` (built by weft_lab.lab).  Each node runs
what its ``serve:`` list names, every process spawned by the lab's keeper, its pid
recorded (``pids.json``: ``outside-NODE-KIND-PORT``) and killed by `weft-lab down`:

* ``tcp:P``  iperf3 -s on port P (throughput; its log names each client);
* ``udp:P``  an echo: every datagram comes back to its sender unchanged;
* ``http:P`` a tiny HTTP/1.0 server on TCP: the reply's body is the peer's address,
  port and the request path (``192.168.50.10 41234 /red``), answered also to a plain
  TCP client that sends nothing;
* ``dns:P``  a tiny DNS server on UDP standing for a host's upstream resolver (the lab
  hosts' agents forward to it: docs/dns.md): ``NAME.outside.test`` has A the node's
  first address, every other name is NXDOMAIN.

udp and http peers are appended to ``peers.log`` (one JSON object a line), iperf3's
to its own log; `peers()` reads both, so a test sees which source address reached the
node: beyond the underlay that is a host's address only if weft NATs.

The clients (`http_get`, `udp_echo`, `tcp_open`) run the machine's Python in a lab
node's network namespace, so they work from hosts, external nodes and containers alike
(the containers' image has no UDP client).
"""
from __future__ import annotations

import argparse
import json
import re
import socket
import socketserver
import sys
import threading
import time
from pathlib import Path

from weft_lab import keeper
from weft_lab.nodes import ns_name, state_dir
from weft_lab.shell import run
from weft_lab.topology import External
from weft_lab.traffic import node_run

PEERS_LOG = "peers.log"
ACCEPTED = re.compile(r"Accepted connection from ([\d.]+), port (\d+)")


def node_dir(lab: str, node: str) -> Path:
    """Where an external node's logs are."""
    return state_dir(lab) / "outside" / node


# -- the servers (run as `python -m weft_lab.outside serve ...` in the node) -------------

class _Log:
    """Appends one JSON line per peer; threads share it."""

    def __init__(self, path: Path) -> None:
        self.path, self.lock = path, threading.Lock()

    def write(self, **record) -> None:
        line = json.dumps({"time": round(time.time(), 3), **record}) + "\n"
        with self.lock, open(self.path, "a") as f:
            f.write(line)


def _udp_echo(port: int, log: _Log) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    while True:
        data, (ip, peer_port) = sock.recvfrom(65535)
        log.write(kind="udp", port=port, peer=ip, peer_port=peer_port,
                  data=data[:64].decode(errors="replace"))
        sock.sendto(data, (ip, peer_port))


def _http_server(port: int, log: _Log) -> socketserver.ThreadingTCPServer:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            ip, peer_port = self.client_address[:2]
            self.request.settimeout(1.0)
            data = b""
            try:                        # a request, or nothing (a bare TCP client)
                while b"\r\n\r\n" not in data and b"\n\n" not in data and len(data) < 8192:
                    chunk = self.request.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            words = data.split(b"\n", 1)[0].split()
            path = words[1].decode(errors="replace") if len(words) >= 2 else ""
            log.write(kind="http", port=port, peer=ip, peer_port=peer_port, path=path)
            body = f"{ip} {peer_port} {path}\n".encode()
            self.request.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n"
                                 b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
                                 + body)

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.daemon_threads = True
    return socketserver.ThreadingTCPServer(("0.0.0.0", port), Handler)


OUTSIDE_ZONE = "outside.test"


def _dns_server(port: int, log: _Log) -> None:
    from ovs_agent import dnswire       # weft_lab may use the agent's wire format
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    me = _own_address()
    while True:
        data, (ip, peer_port) = sock.recvfrom(65535)
        try:
            q = dnswire.parse_query(data)
        except dnswire.WireError:
            continue
        log.write(kind="dns", port=port, peer=ip, peer_port=peer_port, name=q.name)
        if q.name.endswith("." + OUTSIDE_ZONE) and q.qtype == dnswire.TYPE_A:
            out = dnswire.reply(q, a=(me,))
        else:
            out = dnswire.reply(q, dnswire.RCODE_NXDOMAIN)
        sock.sendto(out, (ip, peer_port))


def _own_address() -> str:
    """The node's address on its eth0 (its only interface beside lo)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))         # no packet is sent: the route's source
        return s.getsockname()[0]


def serve(log_path: Path, specs: list[str]) -> None:
    """Serve udp:P and http:P entries until killed."""
    log = _Log(log_path)
    threads = []
    for spec in specs:
        kind, port = spec.split(":")[0], int(spec.split(":")[1])
        if kind == "udp":
            threads.append(threading.Thread(target=_udp_echo, args=(port, log), daemon=True))
        elif kind == "http":
            threads.append(threading.Thread(target=_http_server(port, log).serve_forever,
                                            daemon=True))
        elif kind == "dns":
            threads.append(threading.Thread(target=_dns_server, args=(port, log), daemon=True))
        else:
            raise SystemExit(f"outside: cannot serve {spec!r} (udp:P, http:P or dns:P)")
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# -- starting them (called by weft_lab.lab while the lab is built) ---------------------

def start_servers(lab: str, node: External) -> dict[str, int]:
    """Start a node's servers under the lab's keeper; {pid name: pid} once they listen."""
    from weft_lab.cluster import record_pid
    d, sd, ns = node_dir(lab, node.name), state_dir(lab), ns_name(lab, node.name)
    d.mkdir(parents=True, exist_ok=True)
    (d / PEERS_LOG).touch()
    pids: dict[str, int] = {}
    own = [s for s in node.serve if not s.startswith("tcp:")]
    for spec in node.serve:
        if spec.startswith("tcp:"):
            port = spec.split(":")[1]
            pids[f"outside-{node.name}-iperf3-{port}"] = keeper.request(sd, {
                "op": "spawn", "ns": ns, "log": str(d / f"iperf3-{port}.out"),
                "argv": ["iperf3", "-s", "-p", port, "--forceflush",
                         "--logfile", str(d / f"iperf3-{port}.log")]})["pid"]
    if own:
        pids[f"outside-{node.name}-servers"] = keeper.request(sd, {
            "op": "spawn", "ns": ns, "log": str(d / "servers.out"),
            "argv": [sys.executable, "-m", "weft_lab.outside", "serve", "--log",
                     str(d / PEERS_LOG), *own]})["pid"]
    for name, pid in pids.items():
        record_pid(lab, name, pid)
    _wait_listening(ns, node.serve, d)
    return pids


def _wait_listening(ns: str, specs: tuple[str, ...], d: Path, timeout: float = 20) -> None:
    want = {("udp" if s.startswith(("udp:", "dns:")) else "tcp", s.split(":")[1])
            for s in specs}
    deadline = time.monotonic() + timeout
    while True:
        out = run(["ss", "-Hlntu"], ns=ns, check=False)
        have = {(line.split()[0], line.split()[4].rsplit(":", 1)[1])
                for line in out.splitlines() if len(line.split()) > 4}
        if want <= have:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"servers of {ns} not listening on {sorted(want - have)}; "
                               f"see {d}")
        time.sleep(0.05)


# -- what the servers saw --------------------------------------------------------------

def peers(lab: str, node: str) -> list[dict]:
    """Every peer the node's servers saw, oldest first: {kind, port, peer, peer_port, ...}
    (kind tcp: an iperf3 client's control connection)."""
    d = node_dir(lab, node)
    out = []
    path = d / PEERS_LOG
    if path.exists():
        out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for log in sorted(d.glob("iperf3-*.log")):
        port = int(log.stem.split("-")[1])
        for m in ACCEPTED.finditer(log.read_text(errors="replace")):
            out.append({"kind": "tcp", "port": port, "peer": m.group(1),
                        "peer_port": int(m.group(2))})
    return sorted(out, key=lambda r: r.get("time", 0))


def peer_addresses(lab: str, node: str, kind: str | None = None) -> set[str]:
    """The source addresses the node's servers saw (of one kind of server, or all)."""
    return {r["peer"] for r in peers(lab, node) if kind in (None, r["kind"])}


# -- clients, run in any lab node's namespace -----------------------------------------

_HTTP = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[4]))
s.settimeout(float(sys.argv[4]))
s.sendall(b"GET " + sys.argv[3].encode() + b" HTTP/1.0\\r\\n\\r\\n")
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
sys.stdout.write(data.split(b"\\r\\n\\r\\n", 1)[-1].decode())
"""

_UDP = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((sys.argv[1], int(sys.argv[2])))
s.settimeout(float(sys.argv[3]))
for word in sys.argv[5:]:
    s.send(word.encode())
    try:
        print(s.recv(65535).decode())
    except (socket.timeout, ConnectionRefusedError):
        print("-")
    time.sleep(float(sys.argv[4]))
"""

_TCP = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
except OSError as exc:
    sys.exit(f"{type(exc).__name__}: {exc}")
"""


def http_get(lab: str, node: str, ip: str, port: int = 8000, path: str = "/",
             timeout: float = 5) -> tuple[str, int, str] | None:
    """GET from an http server: (address, port, path) the server saw, or None."""
    res = node_run(lab, node, [sys.executable, "-c", _HTTP, ip, str(port), path,
                               str(timeout)], timeout=timeout + 30)
    words = res.stdout.split()
    if res.returncode != 0 or len(words) < 2:
        return None
    return words[0], int(words[1]), words[2] if len(words) > 2 else ""


def udp_echo(lab: str, node: str, ip: str, port: int, words: list[str],
             timeout: float = 2, gap: float = 0.0) -> list[str | None]:
    """Send each word as one datagram from one socket; the echo of each (None: none)."""
    res = node_run(lab, node, [sys.executable, "-c", _UDP, ip, str(port), str(timeout),
                               str(gap), *words],
                   timeout=len(words) * (timeout + gap) + 30)
    got: list[str | None] = [None if line == "-" else line
                             for line in res.stdout.splitlines()]
    return got + [None] * (len(words) - len(got))


def tcp_open(lab: str, node: str, ip: str, port: int, timeout: float = 3) -> bool:
    """True if a TCP connection to ip:port is accepted."""
    return node_run(lab, node, [sys.executable, "-c", _TCP, ip, str(port), str(timeout)],
                    timeout=timeout + 30).returncode == 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m weft_lab.outside")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve", help="udp:P echo and http:P peer-logging servers")
    p.add_argument("--log", type=Path, required=True)
    p.add_argument("specs", nargs="+")
    args = ap.parse_args(argv)
    serve(args.log, args.specs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
