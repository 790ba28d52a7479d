"""The lab keeper: parent and reaper of every long-running process of a lab.

A lab's daemons (ovsdb-server, ovs-vswitchd, agents, the controller) outlive
the `weft-lab up` that started them.  Orphans are adopted by PID 1, and where
PID 1 does not reap (containers, sandboxes) every killed daemon would stay a
zombie.  The keeper is a child subreaper: it starts the daemons on request,
waits for them, and so `down` leaves no process behind, zombie or not.

Protocol: one JSON object per connection on a unix socket,
``{"op": "spawn", "ns": NS, "argv": [...], "env": {...}, "log": PATH}`` ->
``{"pid": N}``, and ``{"op": "exit"}``.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
from typing import Any
import threading
import time
from pathlib import Path

from weft_lab.shell import in_ns

PR_SET_CHILD_SUBREAPER = 36
SOCKET_NAME = "keeper.sock"


def _become_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _reap_forever() -> None:
    """Collect every child and adopted orphan as it exits."""
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            time.sleep(0.2)


def _spawn(req: dict) -> int:
    log = open(req["log"], "ab", buffering=0)
    env = {**os.environ, **req.get("env", {})}
    proc = subprocess.Popen(in_ns(req.get("ns"), req["argv"]), env=env,
                            stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return proc.pid


def serve(state_dir: Path) -> None:
    """Run the keeper loop until asked to exit."""
    _become_subreaper()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    threading.Thread(target=_reap_forever, daemon=True).start()
    path = state_dir / SOCKET_NAME
    path.unlink(missing_ok=True)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(16)
    while True:
        conn, _ = srv.accept()
        with conn:
            req = json.loads(conn.makefile("r").readline())
            if req["op"] == "exit":
                conn.sendall(b'{"ok": true}\n')
                path.unlink(missing_ok=True)
                return
            try:
                reply: dict[str, Any] = {"pid": _spawn(req)}
            except OSError as exc:
                reply = {"error": str(exc)}
            conn.sendall(json.dumps(reply).encode() + b"\n")


def request(state_dir: Path, req: dict, timeout: float = 10) -> dict:
    """Send one request to a lab's keeper and return its reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(state_dir / SOCKET_NAME))
        sock.sendall(json.dumps(req).encode() + b"\n")
        reply = json.loads(sock.makefile("r").readline())
    if "error" in reply:
        raise RuntimeError(f"keeper: {reply['error']}")
    return reply


def start(state_dir: Path, ns: str) -> int:
    """Start a keeper for the lab in `state_dir`, living in namespace `ns`."""
    log = open(state_dir / "keeper.log", "ab", buffering=0)
    # nsenter, not `ip netns exec`: the keeper keeps the machine's mount namespace (and
    # its /sys with the cgroup mounts), which dockerd needs; daemons that want the
    # namespace's own /sys are spawned with `ip netns exec` (in_ns) as before.
    proc = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{ns}", sys.executable, "-m", "weft_lab.keeper",
         str(state_dir)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    log.close()
    deadline = time.monotonic() + 10
    while not (state_dir / SOCKET_NAME).exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"keeper did not start, see {state_dir}/keeper.log")
        time.sleep(0.02)
    return proc.pid


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
