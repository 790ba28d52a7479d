"""Which backend weft-manager uses, from its command line."""
from __future__ import annotations

from pathlib import Path

from controller.store.base import StoreBase
from controller.store.sqlite import Store


def open_store(store: str | None, db: str | Path) -> StoreBase:
    """The backend weft-manager was told to use: ``--store etcd://HOST:PORT[,HOST:PORT]``
    (a cluster, see controller/store/etcd.py), else the SQLite file ``--weft-db``."""
    if store:
        # imported here: etcd3gw and requests load only in controllers that use etcd
        from controller.store.etcd import EtcdStore
        return EtcdStore.from_url(store)
    return Store(db)
