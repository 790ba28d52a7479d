"""Real etcd members on loopback for tests and benchmarks: free ports, a temporary data
directory, stopped by PID and removed afterwards (no lab, no namespace: 127.0.0.1 only)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: str
    log: str
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self, initial_cluster: str, state: str = "new") -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [ETCD, "--name", self.name, "--data-dir", self.data_dir,
                 "--listen-client-urls", f"http://127.0.0.1:{self.client_port}",
                 "--advertise-client-urls", f"http://127.0.0.1:{self.client_port}",
                 "--listen-peer-urls", f"http://127.0.0.1:{self.peer_port}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_port}",
                 "--initial-cluster", initial_cluster, "--initial-cluster-state", state,
                 "--initial-cluster-token", f"weft-test-{os.getpid()}",
                 "--max-txn-ops", "100000", "--max-request-bytes", str(32 * 1024 * 1024),
                 "--heartbeat-interval", "100", "--election-timeout", "1000"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


@dataclass
class EtcdCluster:
    members: list[Member] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(m.endpoint for m in self.members)

    def endpoints(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", m.client_port) for m in self.members]

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for m in self.members:
            if m.proc is None:
                continue
            while True:
                if m.proc.poll() is not None:
                    raise RuntimeError(f"etcd {m.name} exited: {open(m.log).read()[-2000:]}")
                try:
                    r = httpx.get(f"http://{m.endpoint}/health", timeout=2)
                    if r.status_code == 200 and r.json().get("health") == "true":
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"etcd {m.name} not healthy: {open(m.log).read()[-2000:]}")
                time.sleep(0.1)


@contextmanager
def etcd_cluster(size: int = 1, on_disk: bool = False) -> Iterator[EtcdCluster]:
    """``size`` members on loopback; everything killed (by PID) and removed at the end.
    Data in /dev/shm (tests: fsync costs nothing) unless ``on_disk`` (benchmarks)."""
    shm = os.path.isdir("/dev/shm") and not on_disk
    base = tempfile.mkdtemp(prefix="weft-etcd-", dir="/dev/shm" if shm else "/var/tmp")
    cluster = EtcdCluster([Member(f"m{i}", free_port(), free_port(), f"{base}/m{i}",
                                  f"{base}/m{i}.log") for i in range(size)])
    initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in cluster.members)
    try:
        for m in cluster.members:
            m.start(initial)
        cluster.wait_healthy()
        yield cluster
    finally:
        for m in cluster.members:
            m.kill()
        shutil.rmtree(base, ignore_errors=True)
