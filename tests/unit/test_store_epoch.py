"""Store.epoch(): made once when a store is initialised, kept for its life (COMMON
contract); host registrations expire (SQLite: a timestamp, etcd: a lease)."""
from __future__ import annotations

import re
import sqlite3
import time

from controller.store import Store


def test_epoch_is_random_and_survives_reopen(make_store) -> None:
    a = make_store("a")
    epoch = a.epoch()
    assert re.fullmatch(r"[0-9a-f]{32}", epoch)
    a.create_tenant("red")
    a.close()
    assert make_store("a").epoch() == epoch     # reopening never makes a new one
    assert make_store("b").epoch() != epoch     # a fresh store is a different store


def test_registrations_expire(make_store) -> None:
    s = make_store()
    seen: list[int] = []
    s.watch(seen.append)
    s.register_host("h9", {"underlay_ip": "192.168.50.19"}, ttl=2)
    s.register_host("h8", {"underlay_ip": "192.168.50.18"}, ttl=60)
    assert s.registered_hosts() == {"h8": {"underlay_ip": "192.168.50.18"},
                                    "h9": {"underlay_ip": "192.168.50.19"}}
    deadline = time.monotonic() + 10
    while "h9" in s.registered_hosts() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert list(s.registered_hosts()) == ["h8"]
    assert seen, "a registration is a change the watch reports"


def test_store_from_before_epochs_gets_one_and_keeps_it(tmp_path) -> None:
    db = tmp_path / "old.db"
    s = Store(db)
    s.create_tenant("red")
    s.close()
    c = sqlite3.connect(db)                     # what schema 5 left behind: no meta table
    c.execute("DROP TABLE meta")
    c.execute("PRAGMA user_version = 5")
    c.commit()
    c.close()
    s = Store(db)
    epoch = s.epoch()
    assert [t.name for t in s.tenants()] == ["default", "red"]
    s.close()
    assert Store(db).epoch() == epoch
