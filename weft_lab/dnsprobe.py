"""DNS from inside a lab node (run with the machine's Python in its namespace, as
weft_lab.outside's clients are): ask, measure, flood, spoof (docs/dns.md, the lab tests).

    python -m weft_lab.dnsprobe ask SERVER NAME[/TYPE] ... [--count N]
        one JSON line per answer: {"name", "rcode", "a", "ptr", "ms"} (rcode -1: none)
    python -m weft_lab.dnsprobe until SERVER NAME (--found|--gone) [--within S]
        asks every 50 ms; a line {"ready": true} after the first answer, then, once NAME
        has an address (--found) or is NXDOMAIN (--gone), {"at": wall-clock time of that
        answer, "tries", "row"}; exit status 1 if not within S seconds
    python -m weft_lab.dnsprobe flood SERVER NAME SECONDS
        queries as fast as one socket sends them; prints how many were sent
    python -m weft_lab.dnsprobe spoof SERVER NAME ADDRESS SECONDS
        answers (QR set, ``NAME`` -> ``ADDRESS``) with every id, from port 53, to SERVER
"""
from __future__ import annotations

import argparse
import json
import socket
import sys
import time

from ovs_agent import dnswire

TYPES = {"A": dnswire.TYPE_A, "PTR": dnswire.TYPE_PTR, "AAAA": dnswire.TYPE_AAAA}
NXDOMAIN = 3


def ask(server: str, names: list[str], count: int = 1, timeout: float = 2.0) -> list[dict]:
    out = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        qid = 1
        for _ in range(count):
            for spec in names:
                name, _, kind = spec.partition("/")
                qid = (qid + 1) & 0xFFFF
                began = time.perf_counter()
                s.sendto(dnswire.query(name, TYPES[kind or "A"], qid), (server, 53))
                row: dict = {"name": spec, "rcode": -1, "a": [], "ptr": [], "ms": None}
                try:
                    while True:
                        msg = s.recv(4096)
                        got = dnswire.parse_answer(msg)
                        if got.id == qid:
                            break
                    row.update(rcode=got.rcode, a=list(got.a), ptr=list(got.ptr),
                               ms=round((time.perf_counter() - began) * 1000, 3))
                except (TimeoutError, dnswire.WireError):
                    pass
                out.append(row)
    return out


def until(server: str, name: str, found: bool, within: float, every: float = 0.05) -> int:
    """Ask until the answer turns (see the module's doc); the lines go to stdout."""
    deadline = time.monotonic() + within
    tries = 0
    while time.monotonic() < deadline:
        [row] = ask(server, [name], timeout=0.5)
        at = time.time()
        tries += 1
        if tries == 1:
            print(json.dumps({"ready": True, "row": row}), flush=True)
        if (bool(row["a"]) if found else row["rcode"] == NXDOMAIN):
            print(json.dumps({"at": at, "tries": tries, "row": row}), flush=True)
            return 0
        time.sleep(every)
    return 1


def flood(server: str, name: str, seconds: float) -> int:
    msg, sent = dnswire.query(name), 0
    end = time.monotonic() + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        while time.monotonic() < end:
            try:
                s.sendto(msg, (server, 53))
                sent += 1
            except BlockingIOError:
                pass
    return sent


def spoof(server: str, name: str, address: str, seconds: float) -> int:
    sent = 0
    end = time.monotonic() + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", 53))
        while time.monotonic() < end:
            for qid in range(0, 1 << 16, 7):
                q = dnswire.parse_query(dnswire.query(name, qid=qid))
                try:
                    s.sendto(dnswire.reply(q, a=(address,)), (server, 53))
                    sent += 1
                except OSError:
                    pass
                if time.monotonic() >= end:
                    break
    return sent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m weft_lab.dnsprobe")
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("ask")
    a.add_argument("server")
    a.add_argument("names", nargs="+")
    a.add_argument("--count", type=int, default=1)
    a.add_argument("--timeout", type=float, default=2.0)
    u = sub.add_parser("until")
    u.add_argument("server")
    u.add_argument("name")
    way = u.add_mutually_exclusive_group(required=True)
    way.add_argument("--found", action="store_true")
    way.add_argument("--gone", action="store_true")
    u.add_argument("--within", type=float, default=10.0)
    f = sub.add_parser("flood")
    f.add_argument("server")
    f.add_argument("name")
    f.add_argument("seconds", type=float)
    sp = sub.add_parser("spoof")
    sp.add_argument("server")
    sp.add_argument("name")
    sp.add_argument("address")
    sp.add_argument("seconds", type=float)
    args = ap.parse_args(argv)
    if args.cmd == "ask":
        for row in ask(args.server, args.names, args.count, args.timeout):
            print(json.dumps(row))
    elif args.cmd == "until":
        return until(args.server, args.name, args.found, args.within)
    elif args.cmd == "flood":
        print(flood(args.server, args.name, args.seconds))
    else:
        print(spoof(args.server, args.name, args.address, args.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
