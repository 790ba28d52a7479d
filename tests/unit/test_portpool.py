"""The plugin's pool of br0 ports opened ahead of Join (ovs_agent.portpool), on a fake
OVSDB: filled in the background, handed out, refilled after a quiet spell, and nothing
left behind (pool ports at stop; at start, pool-made ports no endpoint holds)."""
from __future__ import annotations

import time

import pytest

from ovs_agent import attach, hostnet, portpool
from ovs_agent.desired import OWNER, OWNER_KEY, ROLE_KEY


class _Cmd:
    def __init__(self, fn):
        self.fn = fn

    def execute(self, check_error=False):
        return self.fn()


class FakeOvsdb:
    """Interface rows by name: external_ids, type, ofport (vswitchd opens at once)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}

    def db_list(self, table, columns=None):
        return _Cmd(lambda: [{"name": n, **r} for n, r in self.rows.items()])

    def db_find(self, table, cond, columns=None):
        name = cond[2]
        return _Cmd(lambda: [self.rows[name]] if name in self.rows else [])

    def add_port(self, bridge, name, may_exist=False):
        return _Cmd(lambda: self.rows.setdefault(
            name, {"external_ids": {}, "type": "", "ofport": 7, "error": []}))

    def db_set(self, table, name, *cols):
        def run():
            for col, val in cols:
                if col == "external_ids":
                    self.rows[name]["external_ids"].update(val)
                else:
                    self.rows[name][col] = val
        return _Cmd(run)

    def transaction(self, check_error=False):
        api = self

        class Txn:
            def __enter__(self):
                self.cmds = []
                return self

            def add(self, cmd):
                self.cmds.append(cmd)

            def __exit__(self, *exc):
                if exc[0] is None:
                    for cmd in self.cmds:
                        cmd.execute()
        del api
        return Txn()


@pytest.fixture()
def ovsdb(monkeypatch):
    db = FakeOvsdb()
    veths: set[str] = set()
    monkeypatch.setattr(hostnet, "ensure_veth", lambda name, peer, *a, **kw: veths.add(name))
    monkeypatch.setattr(attach, "remove_container_port",
                        lambda api, name: (db.rows.pop(name, None), veths.discard(name)))
    db.veths = veths        # type: ignore[attr-defined]
    return db


def _until(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _pool(db, size=2, delay=0.2) -> portpool.PortPool:
    return portpool.PortPool(db, 1450, lambda port: "afxdp-nonpmd", True, size, delay)


def test_fills_hands_out_and_refills_after_a_quiet_spell(ovsdb):
    pool = _pool(ovsdb)
    pool.start(keep=set())
    try:
        _until(lambda: pool.ready() == 2)
        for name, row in ovsdb.rows.items():
            assert name.startswith("wq") and len(name) <= 15
            assert row["external_ids"] == {OWNER_KEY: OWNER, ROLE_KEY: "pool"}
            assert row["type"] == "afxdp-nonpmd"
        port, peer = pool.take()
        assert peer == portpool.peer_of(port) and peer.startswith("wr") and len(peer) <= 15
        assert pool.ready() == 1
        ovsdb.rows[port]["external_ids"][ROLE_KEY] = "container"     # Join labels it
        time.sleep(0.1)         # within the quiet spell: no refill yet (Join still running)
        assert pool.ready() == 1 and len(ovsdb.rows) == 2
        _until(lambda: pool.ready() == 2)
        assert len(ovsdb.rows) == 3
    finally:
        pool.close()
    # stop: the pool's own ports go, the one handed out (now a container's) stays
    assert list(ovsdb.rows) == [port]


def test_start_removes_leftovers_but_not_ports_endpoints_hold(ovsdb):
    tags = {OWNER_KEY: OWNER, ROLE_KEY: "container"}
    ovsdb.rows = {"wqaaaaaaaaaaa": {"external_ids": {OWNER_KEY: OWNER, ROLE_KEY: "pool"}},
                  "wqbbbbbbbbbbb": {"external_ids": dict(tags)},    # held by an endpoint
                  "wqccccccccccc": {"external_ids": dict(tags)},    # handed out, never saved
                  "wdddddddddddd": {"external_ids": dict(tags)},    # a plugin-made port
                  "wqeeeeeeeeeee": {"external_ids": {}}}            # not ours
    pool = _pool(ovsdb, size=0)
    pool.start(keep={"wqbbbbbbbbbbb"})
    assert sorted(ovsdb.rows) == ["wdddddddddddd", "wqbbbbbbbbbbb", "wqeeeeeeeeeee"]
    assert pool.take() is None      # size 0: no pool, Join makes its own port


def test_a_port_refused_afxdp_falls_back_to_afpacket(ovsdb, monkeypatch):
    monkeypatch.setattr(portpool, "refused_afxdp", lambda api, names: {n: "x" for n in names})
    pool = _pool(ovsdb, size=1)
    pool.start(keep=set())
    try:
        _until(lambda: pool.ready() == 1)
        [row] = ovsdb.rows.values()
        assert row["type"] == ""
    finally:
        pool.close()
    assert ovsdb.rows == {}
