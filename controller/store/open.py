"""Which backend weft-manager uses, from its command line."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from controller.etcd_access import EtcdAccess, EtcdAccessError, access_from_conf
from controller.store.base import StoreBase
from controller.store.errors import StoreFileError
from controller.store.sqlite import Store


def open_store(store: str | None, db: str | Path,
               access: EtcdAccess = EtcdAccess()) -> StoreBase:
    """The backend weft-manager was told to use: ``--store etcd://HOST:PORT[,HOST:PORT]``
    (a cluster, see controller/store/etcd.py) reached with ``access`` (TLS and the weft
    user, controller/etcd_access.py), else the SQLite file ``--weft-db``."""
    if store:
        # imported here: etcd3gw and requests load only in controllers that use etcd
        from controller.store.etcd import EtcdStore
        return EtcdStore.from_url(store, access)
    return Store(db)


def configured_access(conf: Any) -> EtcdAccess:
    """weft-manager's `EtcdAccess` when it uses etcd at all (store or election); a
    StoreFileError saying what to add when its options are not safe."""
    if not (conf.store or conf.weft_election):
        return EtcdAccess()
    try:
        return access_from_conf(conf)
    except EtcdAccessError as exc:
        raise StoreFileError(str(exc)) from None


def open_configured(conf: Any) -> StoreBase:
    """The store weft-manager's flags name (--store, --weft-db, --etcd-*)."""
    return open_store(conf.store, conf.weft_db, configured_access(conf))
