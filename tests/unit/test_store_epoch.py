"""Store.epoch(): made once when a store is initialised, kept for its life (COMMON contract)."""
from __future__ import annotations

import re
import sqlite3

from controller.store import Store


def test_epoch_is_random_and_survives_reopen(tmp_path) -> None:
    a = Store(tmp_path / "a.db")
    epoch = a.epoch()
    assert re.fullmatch(r"[0-9a-f]{32}", epoch)
    a.create_tenant("red")
    a.close()
    again = Store(tmp_path / "a.db")
    assert again.epoch() == epoch               # reopening never makes a new one
    again.close()
    other = Store(tmp_path / "b.db")
    assert other.epoch() != epoch               # a fresh store is a different store
    other.close()


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
