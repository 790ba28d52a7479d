"""Thin wrappers over the commands the lab drives (ip, ovs-vsctl, ethtool).

Every command goes through `run` so that failures carry the command line and
its stderr, and nothing is run through a shell.
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence


class CommandError(RuntimeError):
    """A command the lab ran failed; carries the command and its stderr."""

    def __init__(self, argv: Sequence[str], code: int, stderr: str) -> None:
        self.argv = list(argv)
        self.code = code
        self.stderr = stderr.strip()
        super().__init__(f"`{' '.join(argv)}` exited {code}: {self.stderr}")


def in_ns(ns: str | None, argv: Sequence[str]) -> list[str]:
    """The argv that runs `argv` inside network namespace `ns` (None: here)."""
    return ["ip", "netns", "exec", ns, *argv] if ns else list(argv)


def run(argv: Sequence[str], ns: str | None = None, check: bool = True,
        env: Mapping[str, str] | None = None, timeout: float = 60) -> str:
    """Run a command (in a namespace) and return its stdout."""
    full = in_ns(ns, argv)
    merged = {**os.environ, **env} if env else None
    # stdin too: nothing the lab runs (or leaves daemonized) holds the caller's terminal/pipe
    proc = subprocess.run(full, capture_output=True, text=True, env=merged,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise CommandError(full, proc.returncode, proc.stderr)
    return proc.stdout


def succeeds(argv: Sequence[str], ns: str | None = None,
             env: Mapping[str, str] | None = None, timeout: float = 30) -> bool:
    """True if the command exits 0."""
    merged = {**os.environ, **env} if env else None
    return subprocess.run(in_ns(ns, argv), capture_output=True, env=merged,
                          timeout=timeout, stdin=subprocess.DEVNULL).returncode == 0


def netns_list() -> list[str]:
    """Names of all network namespaces on the machine."""
    out = run(["ip", "netns", "list"])
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_pids(ns: str) -> list[int]:
    """PIDs of the processes living in namespace `ns`."""
    out = run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def run_logged(argv: Sequence[str], log: os.PathLike | str, timeout: float = 1800,
               env: Mapping[str, str] | None = None) -> None:
    """Run a long command with its output going to the file `log` as it comes (so a
    heartbeat can read how far it got); on failure the error carries the log's tail."""
    merged = {**os.environ, **env} if env else None
    with open(log, "w") as out:
        proc = subprocess.run(list(argv), stdout=out, stderr=subprocess.STDOUT, text=True,
                              env=merged, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        with open(log, errors="replace") as f:
            tail = f.read()[-3000:]
        raise CommandError(argv, proc.returncode, tail)
