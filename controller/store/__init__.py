"""The store: the model (tenants, bindings, QoS, ACLs, operator flows) kept durably,
in one SQLite file (``Store``) or in an etcd cluster several controllers share
(``controller.store.etcd.EtcdStore``).

Modules, from the bottom up::

    errors   the typed refusals (NotFound, Conflict, Invalid, Unavailable) and the
             one translator of the model's ModelError into them
    tx       ModelTx: what a backend offers inside one transaction
    rules    the checks that span records (uniqueness, references)
    codec    values <-> JSON documents (exports, etcd's values)
    export   export and import of the whole model
    base     StoreBase: every read and write, once for both backends
    schema   the SQLite file: schema, opening checks, upgrades
    sqlite   Store, the SQLite backend
    etcd     EtcdStore, the etcd backend
    open     open_store: the backend the command line names

Callers import from here; the names below are the store's interface.
"""
from controller.store.base import StoreBase
from controller.store.errors import (Conflict, Invalid, NotFound, StoreError, StoreFileError,
                                     Unavailable)
from controller.store.export import parse_export
from controller.store.open import open_store
from controller.store.schema import SCHEMA_VERSION
from controller.store.sqlite import Store
from controller.store.tx import ModelTx, StoredBinding

__all__ = ["StoreBase", "Store", "open_store", "StoreError", "NotFound", "Conflict", "Invalid",
           "Unavailable", "StoreFileError", "parse_export", "SCHEMA_VERSION", "ModelTx",
           "StoredBinding"]
