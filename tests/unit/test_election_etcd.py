"""The election against a real etcd on loopback: one master, failover, fencing by generation."""
from __future__ import annotations

import shutil
import socket
import time

import pytest

from controller.election import MASTER, SLAVE, Election, EtcdGateway, Role

# foreground: run in the main session, not beside the lab tests (tests/conftest.py): it
# bounds time (leases)
pytestmark = [pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed"),
              pytest.mark.foreground]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def etcd():
    """One member with TLS and authentication, as weft expects etcd (weft_lab/etcd.py)."""
    from weft_lab.etcd import etcd_cluster
    with etcd_cluster(1) as cluster:
        yield cluster


def _gw(cluster, port: int | None = None) -> EtcdGateway:
    """The election's client of ``cluster`` (through ``port``: a relay to it)."""
    return EtcdGateway([f"https://127.0.0.1:{port or cluster.members[0].client_port}"],
                       cluster.access)


def _wait(cond, timeout: float) -> float:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "condition not reached"
        time.sleep(0.02)
    return time.monotonic() - t0


def test_one_master_then_failover_within_the_ttl(etcd):
    seen: dict[str, list[Role]] = {"a": [], "b": []}
    a = Election(_gw(etcd), "a", 2, seen["a"].append)
    a.start()
    _wait(lambda: a.last.role == MASTER, 5)
    b = Election(_gw(etcd), "b", 2, seen["b"].append)
    b.start()
    _wait(lambda: b.last.generation == a.last.generation, 5)
    assert b.last.role == SLAVE
    gen = a.last.generation
    # a "dies" without resigning: it stops keeping its lease alive
    a.stop(resign=False)
    took = _wait(lambda: b.last.role == MASTER, 5)
    assert took <= 2 + 0.5
    assert b.last.generation > gen                  # the switch fences the old master
    b.stop()
    assert seen["b"][-1] == Role(SLAVE, b.last.generation)


def test_resign_hands_over_at_once(etcd):
    a = Election(_gw(etcd), "a", 3, lambda r: None)
    a.start()
    _wait(lambda: a.last.role == MASTER, 5)
    b = Election(_gw(etcd), "b", 3, lambda r: None)
    b.start()
    _wait(lambda: b.core.leader == "a", 5)
    a.stop(resign=True)
    assert _wait(lambda: b.last.role == MASTER, 3) < 1.0
    b.stop()


def test_master_cut_off_from_etcd_steps_down_before_the_lease_expires(etcd):
    """Split brain: the master loses etcd (here: its only endpoint stops answering); it
    must be slave before its lease could have expired, i.e. before anyone else can win."""
    port = _free_port()
    proxy = _Proxy(port, etcd.members[0].client_port)
    a = Election(_gw(etcd, port), "a", 2, lambda r: None)
    a.start()
    try:
        _wait(lambda: a.last.role == MASTER, 5)
        b = Election(_gw(etcd), "b", 2, lambda r: None)
        b.start()
        _wait(lambda: b.core.leader == "a", 5)
        proxy.block()
        _wait(lambda: b.last.role == MASTER, 5)
        _wait(lambda: a.last.role == SLAVE, 1)
        # a said "slave" (to its switches) before b said "master"
        assert a.stepped_down_at is not None and b.master_since is not None
        assert a.stepped_down_at < b.master_since, (b.master_since - a.stepped_down_at)
        b.stop()
    finally:
        a.stop(resign=False)
        proxy.close()


class _Proxy:
    """A TCP relay to etcd that can be made to swallow everything (a partition)."""

    def __init__(self, port: int, target: int) -> None:
        import threading
        self.blocked = False
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", port))
        self.srv.listen(16)
        self.target = target
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            if self.blocked:
                self.conns.append(c)                # hold it open, answer nothing
                continue
            u = socket.create_connection(("127.0.0.1", self.target))
            self.conns += [c, u]
            for x, y in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(x, y), daemon=True).start()

    def _pipe(self, x: socket.socket, y: socket.socket) -> None:
        try:
            while not self.blocked and (data := x.recv(65536)):
                if self.blocked:
                    return
                y.sendall(data)
        except OSError:
            pass

    def block(self) -> None:
        self.blocked = True

    def close(self) -> None:
        self.srv.close()
        for c in self.conns:
            c.close()
