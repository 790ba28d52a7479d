"""Agent start-up and per-peer work: what 32 agents starting at once on a small machine pay.

The agent process never imports eventlet (the ovs library only asks it whether select
is monkey-patched) nor httpx before it reports; the tunnel neighbours of every peer
are set in ovs-vswitchd's cache concurrently, not one ovs-appctl after the other.
"""
from __future__ import annotations

import subprocess
import sys

from ovs_agent import hostnet


def test_the_agent_process_starts_without_eventlet_or_httpx():
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "ovs_agent.cli", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    assert "ovs.db.idl" in imported and "ovsdbapp.backend" in imported
    # ("eventlet" itself is listed: the import attempt, refused at once)
    assert not {m for m in imported if m.startswith(("eventlet.", "httpx", "dns."))}


class _Proc:
    def __init__(self, log: list, argv: list) -> None:
        self.argv, self.log = argv, log
        log.append(("start", argv[-2]))

    def wait(self) -> int:
        self.log.append(("wait", self.argv[-2]))
        return 0


def test_tunnel_neighbours_of_all_peers_are_set_concurrently(monkeypatch):
    peers = [f"192.168.50.{i}" for i in range(11, 16)]
    kernel = {ip: f"02:00:00:00:00:{i:02x}" for i, ip in enumerate(peers)}
    log: list = []
    caches = iter([{peers[0]: kernel[peers[0]]}, dict(kernel)])   # before, after
    monkeypatch.setattr(hostnet, "kernel_neighbours", lambda dev, fresh_only=False: kernel)
    monkeypatch.setattr(hostnet, "ovs_tunnel_neighbours", lambda: next(caches))
    monkeypatch.setattr(hostnet.subprocess, "Popen",
                        lambda argv, **kw: _Proc(log, argv))
    assert hostnet.seed_tunnel_neighbours(peers, "br-phy") == []
    assert [k for k, _ in log] == ["start"] * 4 + ["wait"] * 4     # all started, then waited
    assert {ip for _, ip in log} == set(peers[1:])                 # the known one untouched
