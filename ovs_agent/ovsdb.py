"""The agent's only door to OVSDB: one ovsdbapp connection, reads and one transaction per pass."""
from __future__ import annotations

import logging
from typing import Any
import os
import time
from collections.abc import Callable

from ovs.db.idl import ROW_UPDATE
from ovsdbapp.backend.ovs_idl import connection, idlutils
from ovsdbapp.schema.open_vswitch import impl_idl

from ovs_agent.desired import (CONTROLLER_MAX_BACKOFF_MS, CONTROLLER_PROBE_MS, MANAGED_ROLES,
                               OWNER, OWNER_KEY, ROLE_KEY, ActualBridge, Op, OvsPortSpec, pairs)

LOG = logging.getLogger("ovs-agent")
BRIDGE_COLUMNS = ("datapath_type", "fail_mode", "protocols", "other_config", "external_ids")


def default_connection() -> str:
    rundir = os.environ.get("OVS_RUNDIR", "/var/run/openvswitch")
    return f"unix:{rundir}/db.sock"


class _WatchingIdl(connection.OvsdbIdl):
    """An IDL that calls `on_container_change` when a container port comes, goes or is
    relabelled (in the IDL's thread: the callback must only signal)."""
    on_container_change: Callable[[], None] | None = None

    def notify(self, event, row, updates=None) -> None:
        callback = self.on_container_change
        if callback is None or row._table.name != "Interface":
            return
        relabelled = updates is not None and "external_ids" in getattr(updates, "_data", {})
        if event != ROW_UPDATE or relabelled:        # not vswitchd's status and stats
            ext = getattr(row, "external_ids", None) or {}
            old = getattr(updates, "external_ids", None) or {} if relabelled else {}
            if "container" in (ext.get(ROLE_KEY), old.get(ROLE_KEY)):
                LOG.debug("container port %s %s", getattr(row, "name", "?"), event)
                callback()


def connect(target: str, timeout: float = 10, wait: float | None = None,
            on_container_change: Callable[[], None] | None = None) -> impl_idl.OvsdbIdl:
    """Connect to ovsdb-server, waiting (with a log line) while it is not up yet.

    `on_container_change` is called whenever a container port's Interface row is
    created, deleted or relabelled (the agent reports attachments at once).
    """
    deadline = None if wait is None else time.monotonic() + wait
    said = False
    while True:
        try:
            helper = idlutils.get_schema_helper(target, "Open_vSwitch")
            break
        except Exception as exc:    # the IDL raises bare Exception subclasses here
            if deadline is not None and time.monotonic() > deadline:
                raise ConnectionError(f"ovsdb-server at {target} is not reachable: {exc}")
            if not said:
                LOG.warning("waiting for ovsdb-server at %s (%s); is Open vSwitch running?",
                            target, exc)
                said = True
            time.sleep(0.5)
    for table in ("Open_vSwitch", "Bridge", "Port", "Interface", "Controller", "QoS", "Queue",
                  "SSL"):
        helper.register_table(table)
    idl = _WatchingIdl(target, helper, leader_only=False)
    idl.on_container_change = on_container_change
    conn = connection.Connection(idl=idl, timeout=timeout)
    api = impl_idl.OvsdbIdl(conn, start=True)
    if said:
        LOG.info("connected to ovsdb-server at %s", target)
    return api


def read_state(api: impl_idl.OvsdbIdl) -> dict[str, ActualBridge]:
    """The bridges as they are, with the agent-owned managed ports as OvsPortSpecs."""
    ifaces = {r["_uuid"]: r for r in api.db_list(
        "Interface", columns=["_uuid", "name", "type", "options", "external_ids"]).execute(
        check_error=True)}
    ports = {r["_uuid"]: r for r in api.db_list(
        "Port", columns=["_uuid", "name", "interfaces"]).execute(check_error=True)}
    ctrl_rows = api.db_list("Controller", columns=["_uuid", "target", "inactivity_probe",
                                                   "max_backoff"]).execute(check_error=True)
    ctrls = {r["_uuid"]: r["target"] for r in ctrl_rows}

    def optional(row: dict, column: str) -> int | None:
        value = row[column]
        return (value or [None])[0] if isinstance(value, list) else value
    probes = {r["_uuid"]: optional(r, "inactivity_probe") for r in ctrl_rows}
    backoffs = {r["_uuid"]: optional(r, "max_backoff") for r in ctrl_rows}
    out: dict[str, ActualBridge] = {}
    for br in api.db_list("Bridge", columns=["name", "ports", "controller", *BRIDGE_COLUMNS]
                          ).execute(check_error=True):
        owned, names = [], set()
        for puuid in br["ports"]:
            port = ports.get(puuid)
            if port is None:
                continue
            names.add(port["name"])
            iface = ifaces.get(port["interfaces"][0]) if len(port["interfaces"]) == 1 else None
            if iface is None:
                continue
            ext = iface["external_ids"]
            if ext.get(OWNER_KEY) == OWNER and ext.get(ROLE_KEY) in MANAGED_ROLES:
                owned.append(OvsPortSpec(port["name"], iface["type"], pairs(iface["options"]),
                                         pairs(ext)))
        cols = {c: (br[c] if br[c] != [] or c == "protocols" else None) for c in BRIDGE_COLUMNS}
        mine = [c for c in br["controller"] if c in ctrls]
        out[br["name"]] = ActualBridge(br["name"], cols, tuple(sorted(ctrls[c] for c in mine)),
                                       tuple(owned), frozenset(names),
                                       tuple(probes[c] for c in mine),
                                       tuple(backoffs[c] for c in mine))
    return out


def refused_afxdp(api: impl_idl.OvsdbIdl, names: set[str] | None = None) -> dict[str, str]:
    """AF_XDP interfaces OVS could not open (name -> error), for the per-port fallback."""
    out = {}
    for row in api.db_list("Interface", columns=["name", "type", "error", "ofport"]).execute(
            check_error=True):
        if row["type"].startswith("afxdp") and (names is None or row["name"] in names):
            error = row["error"][0] if isinstance(row["error"], list) and row["error"] \
                else row["error"]
            ofport = row["ofport"][0] if isinstance(row["ofport"], list) and row["ofport"] \
                else row["ofport"]
            if error and "No such device" in error:
                continue    # the device is missing, not refusing AF_XDP: retried when back
            if error or ofport == -1:
                out[row["name"]] = error or "no ofport"
    return out


def _controller_uuids(api: impl_idl.OvsdbIdl, bridge: str) -> list:
    rows = api.db_find("Bridge", ("name", "=", bridge), columns=["controller"]).execute(
        check_error=True)
    return [getattr(c, "uuid", c) for r in rows for c in r["controller"]]


def apply(api: impl_idl.OvsdbIdl, ops: list[Op]) -> None:
    """Apply all operations in one transaction: all or nothing."""
    if not ops:
        return
    with api.transaction(check_error=True) as txn:
        for op in ops:
            kind = op[0]
            if kind == "add_bridge":
                txn.add(api.add_br(op[1], may_exist=True, datapath_type=op[2]))
            elif kind == "set_bridge":
                txn.add(api.db_set("Bridge", op[1], *op[2].items()))
            elif kind == "set_controller":
                # Controller rows made here carry the probe from the start (one pass).
                rows = [txn.add(api.db_create("Controller", target=t,
                                              inactivity_probe=CONTROLLER_PROBE_MS,
                                              max_backoff=CONTROLLER_MAX_BACKOFF_MS))
                        for t in op[2]]
                txn.add(api.db_set("Bridge", op[1], ("controller", rows)))
            elif kind == "set_probe":
                for uuid in _controller_uuids(api, op[1]):
                    txn.add(api.db_set("Controller", uuid, ("inactivity_probe", op[2]),
                                       ("max_backoff", op[3])))
            elif kind == "del_port":
                txn.add(api.del_port(op[2], bridge=op[1], if_exists=True))
            elif kind == "add_port":
                p: OvsPortSpec = op[2]
                attrs: dict[str, Any] = {"external_ids": dict(p.external_ids)}
                if p.type:
                    attrs["type"] = p.type
                if p.options:
                    attrs["options"] = dict(p.options)
                txn.add(api.add_port(op[1], p.name, may_exist=True, **attrs))
            elif kind == "set_port":
                p = op[2]
                # add_port does not update an existing port: set its interface exactly.
                txn.add(api.db_clear("Interface", p.name, "options"))
                txn.add(api.db_set("Interface", p.name, ("type", p.type),
                                   ("options", dict(p.options)),
                                   ("external_ids", dict(p.external_ids))))
            else:
                raise ValueError(f"unknown op {kind}")


def ensure_ssl(api: impl_idl.OvsdbIdl, files: tuple[str, str, str] | None) -> bool:
    """Point Open_vSwitch's SSL row at ``files`` (key, cert, CA) for ssl: controllers;
    a row made by someone else is replaced only when ours is needed.  True if written."""
    if files is None:
        return False
    key, cert, ca = files
    (root,) = api.db_list("Open_vSwitch", columns=["_uuid", "ssl"]).execute(check_error=True)
    current = root["ssl"] if isinstance(root["ssl"], list) else [root["ssl"]]
    rows = {r["_uuid"]: r for r in api.db_list(
        "SSL", columns=["_uuid", "private_key", "certificate", "ca_cert"]).execute(
        check_error=True)}
    for uuid in current:
        row = rows.get(getattr(uuid, "uuid", uuid))
        if row and (row["private_key"], row["certificate"], row["ca_cert"]) == (key, cert, ca):
            return False
    with api.transaction(check_error=True) as txn:
        row = txn.add(api.db_create("SSL", private_key=key, certificate=cert, ca_cert=ca,
                                    external_ids={OWNER_KEY: OWNER}))
        txn.add(api.db_set("Open_vSwitch", root["_uuid"], ("ssl", row)))
    return True


def ensure_ipsec_pki(api: impl_idl.OvsdbIdl, config: dict[str, str] | None) -> bool:
    """Open_vSwitch other_config certificate/private_key/ca_cert for IPsec with
    certificates (ovs-monitor-ipsec reads them); with `config` None, remove those keys
    only if they are ours (the values weft set: `weft-ipsec-pki` marks them).  True if written."""
    from ovs_agent.ipsec import PKI_KEYS
    (root,) = api.db_list("Open_vSwitch", columns=["_uuid", "other_config", "external_ids"]
                          ).execute(check_error=True)
    have = {k: root["other_config"].get(k) for k in PKI_KEYS}
    ours = root["external_ids"].get("weft-ipsec-pki") == "true"
    if config is not None:
        if have == config and ours:
            return False
        with api.transaction(check_error=True) as txn:
            txn.add(api.db_set("Open_vSwitch", root["_uuid"], ("other_config", config),
                               ("external_ids", {"weft-ipsec-pki": "true"})))
        return True
    if not ours:
        return False
    with api.transaction(check_error=True) as txn:
        txn.add(api.db_remove("Open_vSwitch", root["_uuid"], "other_config", *PKI_KEYS))
        txn.add(api.db_remove("Open_vSwitch", root["_uuid"], "external_ids", "weft-ipsec-pki"))
    return True
