"""Operator flows: flows a person adds through REST, kept by weft but never computed by it.

An operator flow is stored (``controller.store``) with the switch it belongs
to, in Ryu's ofctl JSON (``match`` dict, ``actions`` list, as ofctl_rest
takes them), and carries the cookie ``COOKIE_OPERATOR | id``.  A sync never
diffs or deletes it: after the model's delta, ``reconcile`` compares the
stored operator flows of a switch with the operator cookies found on it,
adds the missing ones (a switch that restarted, a controller that came back
to an empty switch) and deletes those no longer stored.  A flow already on
the switch is never sent again, so a sync after any model change sends 0
flow-mods for it.

Validation (``check``) keeps operator flows out of weft's own business unless
``override`` is set (and logged): tables below ``OPERATOR_TABLE_MIN`` are
weft's pipeline; ``GOTO_TABLE`` must not lead into them; an output to a port
bound to a tenant, to a tunnel, or to a port-set (FLOOD/ALL/NORMAL) could
hand frames to a tenant.  Timeouts are refused: a stored flow is permanent
(one that expired would come back at the next audit).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from controller.flows import COOKIE_OPERATOR, SwitchState, feature_of
from controller.model import ModelError, check_text

__all__ = ["OperatorFlow", "OPERATOR_TABLE_MIN", "OPERATOR_TABLE_MAX", "operator_cookie",
           "operator_id_of", "check", "reconcile", "ACTION_TYPES", "MAX_OPERATOR_FLOW_ID",
           "MAX_TABLE_ID", "MAX_PRIORITY"]

OPERATOR_TABLE_MIN = 100        # tables 0..99 are weft's (0..4 used today)
OPERATOR_TABLE_MAX = 199
_ID_MASK = (1 << 32) - 1
MAX_OPERATOR_FLOW_ID = _ID_MASK  # the low 32 bits of the flow's cookie
MAX_TABLE_ID = 253              # OpenFlow tables 0..253 (254, 255 are reserved)
MAX_PRIORITY = 0xFFFF
MAX_DPID = (1 << 64) - 1
ACTION_TYPES = frozenset({
    "OUTPUT", "COPY_TTL_OUT", "COPY_TTL_IN", "SET_MPLS_TTL", "DEC_MPLS_TTL", "PUSH_VLAN",
    "POP_VLAN", "PUSH_MPLS", "POP_MPLS", "SET_QUEUE", "GROUP", "SET_NW_TTL", "DEC_NW_TTL",
    "SET_FIELD", "PUSH_PBB", "POP_PBB", "COPY_FIELD", "METER", "GOTO_TABLE", "WRITE_METADATA",
    "WRITE_ACTIONS", "CLEAR_ACTIONS"})
_PORT_SETS = {"FLOOD": 0xFFFFFFFB, "ALL": 0xFFFFFFFC, "NORMAL": 0xFFFFFFFA}


def operator_cookie(flow_id: int) -> int:
    return COOKIE_OPERATOR | (flow_id & _ID_MASK)


def operator_id_of(cookie: int) -> int | None:
    return cookie & _ID_MASK if feature_of(cookie) == "operator" else None


@dataclass(frozen=True)
class OperatorFlow:
    """One stored operator flow of one switch (``dpid``), in ofctl JSON."""

    id: int
    dpid: int
    table_id: int
    priority: int
    match: Mapping[str, Any] = field(default_factory=dict)
    actions: tuple[Mapping[str, Any], ...] = ()
    override: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        _whole(self.id, 1, MAX_OPERATOR_FLOW_ID, "id")
        _whole(self.dpid, 0, MAX_DPID, "dpid")
        _table_id(self.table_id)
        _priority(self.priority)
        check_text(self.description, "description")

    @property
    def cookie(self) -> int:
        return operator_cookie(self.id)


def _whole(value: Any, lo: int, hi: int, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ModelError(field, f"{field} {str(value)[:24]!r} is not in {lo}..{hi}")
    return value


def _table_id(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_TABLE_ID:
        raise ModelError("table_id", f"table_id {value!r} is not a table (0..{MAX_TABLE_ID})")
    return value


def _priority(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_PRIORITY:
        raise ModelError("priority", f"priority {value!r} not in 0..{MAX_PRIORITY}")
    return value


def _port_no(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if value.upper() in _PORT_SETS:
            return _PORT_SETS[value.upper()]
        try:
            return int(value, 0)
        except ValueError:
            return None
    return None


def check(table_id: Any, priority: Any, match: Any, actions: Any, override: bool,
          tenant_ports: Mapping[int, str], idle_timeout: Any = 0,
          hard_timeout: Any = 0, description: Any = "") -> list[str]:
    """Refuse what is malformed (ModelError naming the field); return what ``override``
    let through, as sentences for the log (empty when nothing needed it).

    ``tenant_ports``: OpenFlow port number -> what it is ("port p1 of tenant red",
    "tunnel to host2") for the ports of this switch a frame must not be handed to.
    """
    _table_id(table_id)
    _priority(priority)
    for name, value in (("idle_timeout", idle_timeout), ("hard_timeout", hard_timeout)):
        if value not in (0, None):
            raise ModelError(name, "operator flows are permanent (stored and re-installed): "
                                   f"{name} must be 0")
    if not isinstance(match, Mapping) or any(not isinstance(k, str) for k in match):
        raise ModelError("match", "match must be an object of ofctl field names")
    if not isinstance(actions, list) or any(not isinstance(a, Mapping) for a in actions):
        raise ModelError("actions", "actions must be a list of objects with a type")
    check_text(description, "description")
    escapes: list[tuple[str, str]] = []
    if table_id < OPERATOR_TABLE_MIN or table_id > OPERATOR_TABLE_MAX:
        escapes.append(("table_id", f"table {table_id} is not an operator table "
                                    f"({OPERATOR_TABLE_MIN}..{OPERATOR_TABLE_MAX}); "
                                    "tables 0..99 are weft's pipeline"))
    for i, a in enumerate(_flat(actions)):
        kind = str(a.get("type", "")).upper()
        where = f"actions[{i}]"
        if kind not in ACTION_TYPES:
            raise ModelError(f"{where}.type", f"unknown action type {a.get('type')!r}")
        if kind == "GOTO_TABLE":
            target = a.get("table_id")
            if not isinstance(target, int) or isinstance(target, bool) or \
                    not 0 <= target <= MAX_TABLE_ID:
                raise ModelError(f"{where}.table_id", f"goto table {target!r} is not a table")
            if target <= table_id:
                raise ModelError(f"{where}.table_id", "GOTO_TABLE must go forward")
            if target < OPERATOR_TABLE_MIN:
                escapes.append((f"{where}.table_id", f"goto table {target}: weft's pipeline"))
        if kind == "OUTPUT":
            port = _port_no(a.get("port"))
            if port is None:
                raise ModelError(f"{where}.port", f"port {a.get('port')!r} is not a port number")
            if port in _PORT_SETS.values():
                escapes.append((f"{where}.port", f"output {a.get('port')} reaches every port, "
                                                 "tenants' ones too"))
            elif port in tenant_ports:
                escapes.append((f"{where}.port", f"output to port {port}: {tenant_ports[port]}"))
        if kind == "SET_FIELD" and str(a.get("field", "")) in ("metadata", "tunnel_id",
                                                                "tun_id"):
            escapes.append((f"{where}.field", f"set_field {a.get('field')}: weft's tenant "
                                              "identity"))
        if kind == "WRITE_METADATA":
            escapes.append((f"{where}", "write_metadata: weft's tenant identity"))
    if escapes and not override:
        name, why = escapes[0]
        raise ModelError(name, f"{why}; refused: it could cross tenants or bypass weft's "
                               "pipeline (give override=true to insist; it is logged)")
    return [f"{name}: {why}" for name, why in escapes]


def _flat(actions: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Actions with WRITE_ACTIONS' nested list expanded (it outputs at the end)."""
    out: list[Mapping[str, Any]] = []
    for a in actions:
        out.append(a)
        if str(a.get("type", "")).upper() == "WRITE_ACTIONS":
            nested = a.get("actions")
            if not isinstance(nested, list) or any(not isinstance(x, Mapping) for x in nested):
                raise ModelError("actions", "WRITE_ACTIONS needs a list of actions")
            out.extend(nested)
    return out


def reconcile(stored: Iterable[OperatorFlow], have: SwitchState
              ) -> tuple[list[OperatorFlow], list[int]]:
    """(operator flows to add, operator ids to delete) for one switch: missing ones come
    back, ones no longer stored go; ones on the switch are left alone (no flow-mod)."""
    on_switch = {operator_id_of(f.cookie) for f in have.flows} - {None}
    wanted = {f.id: f for f in stored}
    add = [wanted[i] for i in sorted(wanted) if i not in on_switch]
    delete = sorted(i for i in on_switch if i is not None and i not in wanted)
    return add, delete
