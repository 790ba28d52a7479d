"""REST for the cluster-wide IPAM (docs/docker.md "Addresses"), on both backends: the
plugin's claims and releases, refusals as 4xx naming the field, no switch resynced."""
from __future__ import annotations

import pytest

from cluster.hostsfile import parse
from controller.core import Core
from tests.conftest import api_client

HOSTS = """
controller: {openflow: ["tcp:127.0.0.1:6653"]}
hosts:
  - {name: h1, underlay_ip: 192.168.50.10}
"""
TOKEN = "s3cret"


@pytest.fixture
def api(make_store):
    core = Core(make_store(), parse(HOSTS))
    core.store.create_tenant("red", subnet="10.10.0.0/24")
    core.on_change = lambda: pytest.fail("an IPAM write resynced the switches")
    client = api_client(core, TOKEN)
    return client


def _ok(r, status: int = 200) -> dict:
    assert r.status_code == status, r.text
    return r.json()


def test_claim_list_and_release_over_rest(api):
    b = _ok(api.post("/v1/networks/red/ipam/blocks", json={"host": "h1",
                                                           "subnet": "10.10.0.0/24"}), 201)
    assert b == {"network": "red", "cidr": "10.10.0.0/28", "host": "h1", "kind": "block",
                 "skip": []}
    a = _ok(api.post("/v1/networks/red/ipam/addresses",
                     json={"host": "h2", "address": "10.10.0.99"}), 201)
    assert a["kind"] == "address" and a["cidr"] == "10.10.0.99/32"
    r = api.post("/v1/networks/red/ipam/addresses", json={"host": "h2", "address": "10.10.0.5"})
    assert r.status_code == 409 and r.json()["field"] == "address"
    assert "held by host h1 (block 10.10.0.0/28)" in r.json()["error"]
    assert [c["cidr"] for c in _ok(api.get("/v1/networks/red/ipam"))["claims"]] == \
        ["10.10.0.0/28", "10.10.0.99/32"]
    assert _ok(api.get("/v1/networks/red/ipam?host=h2"))["claims"] == [
        {k: v for k, v in a.items()}]
    r = api.delete("/v1/networks/red/ipam/blocks", params={"cidr": "10.10.0.0/28", "host": "h2"})
    assert r.status_code == 409 and r.json()["field"] == "host"
    _ok(api.delete("/v1/networks/red/ipam/blocks", params={"cidr": "10.10.0.0/28",
                                                          "host": "h1"}))
    _ok(api.delete("/v1/networks/red/ipam/addresses", params={"address": "10.10.0.99",
                                                             "host": "h2"}))
    assert _ok(api.get("/v1/networks/red/ipam"))["claims"] == []
    _ok(api.post("/v1/networks/red/ipam/blocks", json={"host": "h3"}), 201)
    assert _ok(api.delete("/v1/hosts/h3/ipam")) == {"host": "h3", "released": 1}


@pytest.mark.parametrize("path, body, field", [
    ("blocks", {"host": "h1", "subnet": "10.20.0.0/24"}, "subnet"),
    ("blocks", {"host": "h1", "within": "10.20.0.0/26"}, "within"),
    ("blocks", {"host": "h1", "prefix": 8}, "prefix"),
    ("blocks", {"host": "-bad"}, "host"),
    ("blocks", {"host": "h1", "extra": 1}, "extra"),
    ("addresses", {"host": "h1", "address": "10.20.0.1"}, "address"),
    ("addresses", {"host": "h1", "address": "nonsense"}, "address"),
])
def test_bad_claims_are_4xx_naming_the_field_and_change_nothing(api, path, body, field):
    r = api.post(f"/v1/networks/red/ipam/{path}", json=body)
    assert 400 <= r.status_code < 500 and field in r.json()["field"], r.text
    assert api.post("/v1/networks/nosuch/ipam/blocks", json={"host": "h1"}).status_code == 404
    assert _ok(api.get("/v1/networks/red/ipam"))["claims"] == []


def test_claims_need_the_token(api):
    del api.headers["Authorization"]
    assert api.post("/v1/networks/red/ipam/blocks", json={"host": "h1"}).status_code == 401
