"""Hardening with switches connected (issue 12): races and fuzzing against the real
controller of a two-host lab must leave no orphan, no dead event loop, no 5xx, and
every switch back in sync; reads need the token."""
from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
import schemathesis

from tests import fuzzing
from tests.conftest import converged_lab, lab_name
from weft_lab import cluster as C
from weft_lab.nodes import state_dir
from weft_lab.topology import load

ROOT = Path(__file__).resolve().parents[2]
RACES = 1000
EXAMPLES = 10


@pytest.fixture(scope="module")
def lab():
    with converged_lab(load(ROOT / "topologies" / "two-hosts.yaml").with_name(lab_name("h"))) \
            as topo:
        yield topo


def _orphans(lab: str) -> int:
    db = sqlite3.connect(f"file:{state_dir(lab) / 'weft.db'}?mode=ro", uri=True)
    try:
        return db.execute(
            "SELECT COUNT(*) FROM bindings WHERE tenant IS NOT NULL AND tenant NOT IN "
            "(SELECT name FROM tenants)").fetchone()[0]
    finally:
        db.close()


def _healthy_and_in_sync(lab: str, hosts: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    with C.api(lab) as c:
        while True:
            h = c.get("/v1/health")
            body = h.json()
            if h.status_code == 200 and body["switches_in_sync"] == hosts:
                return body
            assert time.monotonic() < deadline, body
            time.sleep(0.2)


def test_reads_need_the_token_health_does_not(lab):
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(C.api_socket(lab.name))),
                      base_url="http://weft") as anon:
        assert anon.get("/v1/tenants").status_code == 401
        assert anon.get("/v1/switches").status_code == 401
        assert anon.get("/v1/health").status_code == 200


def test_1000_delete_vs_bind_races_leave_no_orphan_and_the_switches_in_sync(lab):
    both = 0
    with C.api(lab.name) as a, C.api(lab.name) as b:
        for i in range(RACES):
            assert a.post("/v1/tenants", json={"name": f"r{i}"}).status_code == 201
            go = threading.Barrier(2)
            codes: dict[str, int] = {}

            def delete(i: int = i, go: threading.Barrier = go, codes: dict = codes) -> None:
                go.wait()
                codes["delete"] = a.delete(f"/v1/tenants/r{i}").status_code

            def bind(i: int = i, go: threading.Barrier = go, codes: dict = codes) -> None:
                go.wait()
                codes["bind"] = b.post("/v1/ports", json={"host": "host1", "port": f"r{i}",
                                                          "tenant": f"r{i}"}).status_code
            ts = [threading.Thread(target=delete), threading.Thread(target=bind)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            assert max(codes.values()) < 500, codes
            both += codes["delete"] == 200 and codes["bind"] == 201
    assert both == 0
    assert _orphans(lab.name) == 0
    health = _healthy_and_in_sync(lab.name, len(lab.hosts))
    assert health["event_loop"]["alive"] and health["event_loop"]["handler_errors"] == 0
    with C.api(lab.name) as c:          # the controller still programs switches
        c.post("/v1/tenants", json={"name": "after"})
        assert c.post("/v1/ports", json={"host": "host2", "port": "late",
                                         "tenant": "after"}).status_code == 201
    _healthy_and_in_sync(lab.name, len(lab.hosts))


def test_schemathesis_against_a_controller_with_switches_finds_no_5xx(lab):
    token = C.api_token(lab.name)
    with C.api(lab.name, timeout=20) as c:
        schema = schemathesis.openapi.from_dict(c.get("/openapi.json").json())

        def send(case: schemathesis.Case, auth: dict[str, str]) -> schemathesis.Response:
            kw = case.as_transport_kwargs(base_url="http://weft")
            headers = {k: v for k, v in kw["headers"].items() if k.lower() != "authorization"}
            r = c.request(kw["method"], kw["url"], headers={**headers, **auth},
                          params=kw.get("params") or None, json=kw.get("json"),
                          content=kw.get("data"))
            return schemathesis.Response.from_httpx(r, verify=False)
        calls, failures = fuzzing.run(schema, send, token, EXAMPLES)
    print(f"schemathesis (switches connected): {sum(calls.values())} requests over "
          f"{len(calls)} operations")
    assert len(calls) >= 20 and failures == [], "\n".join(failures)
    assert _orphans(lab.name) == 0
    _healthy_and_in_sync(lab.name, len(lab.hosts))
