"""Schemathesis against the REST API of a standalone controller (real SQLite store).

Bounded (EXAMPLES per operation, a few hundred in all) so it runs in CI on every
change; it must find no 5xx and no status the OpenAPI document does not list.
"""
from __future__ import annotations

import schemathesis

from controller.rest.app import create_app
from controller.core import Core
from controller.store import Store
from cluster.hostsfile import parse
from tests import fuzzing

HOSTS = """
controller: {openflow: ["tcp:127.0.0.1:6653"]}
hosts:
  - {name: host1, underlay_ip: 192.168.50.10}
  - {name: host2, underlay_ip: 192.168.50.11}
"""
TOKEN = "fuzz-token"
EXAMPLES = 30


def _app(tmp: str) -> object:
    core = Core(Store(f"{tmp}/weft.db"), parse(HOSTS))
    core.store.create_tenant("red", vlan=100)          # something to find, conflict with
    core.store.bind("host1", "p1", "red", mac="02:00:00:00:00:01")
    core.openflow.dump_flows = core.openflow.dump_meters = lambda dpid: []     # no switch is connected anyway
    return create_app(core, TOKEN)


def test_no_request_gets_a_server_error_or_an_undocumented_status(tmp_path):
    """Every operation of /openapi.json, EXAMPLES generated requests each."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", _app(str(tmp_path)))

    def send(case: schemathesis.Case, auth: dict[str, str]) -> schemathesis.Response:
        case.headers = {**(case.headers or {}), **auth}
        return case.call()
    calls, failures = fuzzing.run(schema, send, TOKEN, EXAMPLES)
    print(f"schemathesis: {sum(calls.values())} requests over {len(calls)} operations")
    print("\n".join(failures))
    assert len(calls) >= 20 and sum(calls.values()) >= 200
    assert failures == []
