"""A bounded schemathesis run shared by the unit (ASGI) and lab (real controller) tests."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

Send = Callable[[schemathesis.Case, dict[str, str]], schemathesis.Response]


def run(schema: Any, send: Send, token: str, examples: int) -> tuple[dict[str, int], list[str]]:
    """``examples`` generated requests per operation; returns (requests per operation,
    one line per operation where a 5xx or an undocumented status was found)."""
    calls: dict[str, int] = {}
    failures: list[str] = []
    auth = {"Authorization": f"Bearer {token}"}
    for result in schema.get_all_operations():
        op = result.ok()
        try:
            _checker(op, send, auth, calls, examples)()
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001  (collect all)
            failures.append(f"{op.label}: {str(exc)[:800]}")
    return calls, failures


def _checker(op: Any, send: Send, auth: dict[str, str], calls: dict[str, int],
             examples: int) -> Callable[[], None]:
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy())
    def check(case: schemathesis.Case) -> None:
        response = send(case, auth)
        calls[op.label] = calls.get(op.label, 0) + 1
        case.validate_response(response, checks=[not_a_server_error, status_code_conformance])
    return check
