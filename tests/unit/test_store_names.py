"""Containers' names in the store (schema 10, docs/dns.md): per host, replaced whole by
its agent's report, kept across a restart, forgotten by an import; a schema-8 file
upgrades with nothing to move."""
from __future__ import annotations

import sqlite3

from cluster.names import NameRecord
from controller.store import SCHEMA_VERSION, Store

WEB1 = NameRecord("red-web", "web1", "10.10.1.5", "c1", True)
WEB = NameRecord("red-web", "web", "10.10.1.5", "c1")


def test_names_per_host_replaced_whole(make_store):
    """On both backends (SQLite, a real etcd): the same store opened again (a restarted
    or a second controller) holds what the first wrote."""
    s = make_store()
    assert s.container_names() == {}
    assert s.replace_container_names("h1", [WEB, WEB1, WEB1])
    assert not s.replace_container_names("h1", [WEB1, WEB])     # same set: no write
    assert s.replace_container_names("h2", [NameRecord("red-web", "web2", "10.10.1.6")])
    assert s.container_names()["h1"] == (WEB, WEB1)
    assert s.replace_container_names("h1", [WEB1])
    again = make_store()
    assert again.container_names() == {"h1": (WEB1,), "h2": (
        NameRecord("red-web", "web2", "10.10.1.6"),)}
    assert again.replace_container_names("h1", [])
    assert set(s.container_names()) == {"h2"}


def test_import_forgets_reported_names(make_store):
    s = make_store()
    s.replace_container_names("h1", [WEB1])
    s.import_model(s.export(), replace=True)
    assert s.container_names() == {}


def test_schema_8_file_upgrades(tmp_path):
    path = tmp_path / "old.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE container_names")
    db.execute("PRAGMA user_version = 8")
    db.commit()
    db.close()
    s = Store(path)
    assert s._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 12
    assert s.replace_container_names("h1", [WEB1])
    s.close()
