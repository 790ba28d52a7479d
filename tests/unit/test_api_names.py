"""REST for containers' names across hosts (docs/dns.md): agents PUT their hosts' names,
GET the records of the tenants with a gateway on their host; tenants never see each
other's; a host that leaves takes its names; bad input is a 4xx that changes nothing."""
from __future__ import annotations

import pytest

from cluster.hostsfile import parse
from controller.core import Core
from tests.conftest import api_client

HOSTS = """
controller: {openflow: ["tcp:127.0.0.1:6653"]}
hosts:
  - {name: h1, underlay_ip: 192.168.50.10}
  - {name: h2, underlay_ip: 192.168.50.11}
"""
TOKEN = "s3cret"


@pytest.fixture
def core(make_store):
    return Core(make_store(), parse(HOSTS))


@pytest.fixture
def api(core):
    client = api_client(core, TOKEN)
    return client


def _ok(r, status: int = 200) -> dict:
    assert r.status_code == status, r.text
    return r.json()


def _two_tenants(api) -> None:
    for t in ("red", "blue"):
        _ok(api.post("/v1/tenants", json={"name": t, "subnet": "10.10.1.0/24"}), 201)
    _ok(api.post("/v1/networks", json={"name": "red-db", "tenant": "red",
                                       "subnet": "10.10.2.0/24", "egress": False}), 201)
    for host in ("h1", "h2"):
        _ok(api.post("/v1/ports", json={"host": host, "port": "p1", "network": "red"}), 201)
    _ok(api.post("/v1/ports", json={"host": "h1", "port": "p2", "network": "blue"}), 201)


def name(network: str, n: str, ip: str, primary: bool = True) -> dict:
    return {"network": network, "name": n, "ip": ip, "container": f"c-{n.lower()}",
            "primary": primary}


def test_names_of_every_host_reach_the_tenants_hosts_only(api):
    _two_tenants(api)
    _ok(api.put("/v1/hosts/h1/names", json=[name("red", "web1", "10.10.1.5"),
                                            name("red", "web", "10.10.1.5", False),
                                            name("blue", "secret", "10.10.1.5")]))
    got = _ok(api.put("/v1/hosts/h2/names", json=[name("red-db", "DB1", "10.10.2.7"),
                                                  name("red", "web", "10.10.1.6", False)]))
    assert got == {"host": "h2", "names": 2, "changed": True}
    resyncs = []
    api.app.state.core.on_change = lambda: resyncs.append(1)
    assert _ok(api.put("/v1/hosts/h2/names", json=[name("red-db", "db1", "10.10.2.7"),
                                                   name("red", "web", "10.10.1.6", False)])
               )["changed"] is False
    assert resyncs == []                # unchanged: the version stays, nothing to sync
    _ok(api.put("/v1/hosts/h2/names", json=[name("red", "web", "10.10.1.6", False)]))
    assert resyncs == [1]               # changed: switches follow the new store version
    _ok(api.put("/v1/hosts/h2/names", json=[name("red-db", "db1", "10.10.2.7"),
                                            name("red", "web", "10.10.1.6", False)]))
    h1 = {t["tenant"]: t for t in _ok(api.get("/v1/hosts/h1/names"))["tenants"]}
    assert set(h1) == {"default", "red", "blue"}
    assert h1["red"]["records"] == [["db1", "10.10.2.7", True], ["web", "10.10.1.5", False],
                                    ["web", "10.10.1.6", False], ["web1", "10.10.1.5", True]]
    assert h1["red"]["subnets"] == ["10.10.1.0/24", "10.10.2.0/24"]
    assert h1["blue"]["records"] == [["secret", "10.10.1.5", True]]
    h2 = _ok(api.get("/v1/hosts/h2/names"))["tenants"]
    assert [t["tenant"] for t in h2] == ["default", "red"]     # blue has no port on h2
    assert ["secret", "10.10.1.5", True] not in h2[1]["records"]


def test_docker0_names_are_the_default_tenants_on_every_host(api):
    """Item 4: docker0's containers of every host, id 0, with the cluster's docker0 range;
    a tenant network's names never among them."""
    _two_tenants(api)
    _ok(api.put("/v1/hosts/h1/names", json=[name("default", "c1", "172.17.1.2"),
                                            name("red", "web1", "10.10.1.5")]))
    _ok(api.put("/v1/hosts/h2/names", json=[name("default", "c2", "172.17.2.2")]))
    for host in ("h1", "h2"):
        default = _ok(api.get(f"/v1/hosts/{host}/names"))["tenants"][0]
        assert default == {"tenant": "default", "id": 0, "subnets": ["172.17.0.0/16"],
                           "records": [["c1", "172.17.1.2", True], ["c2", "172.17.2.2", True]]}


def test_a_host_that_leaves_takes_its_names(api, core):
    _two_tenants(api)
    _ok(api.put("/v1/hosts/h2/names", json=[name("red", "web2", "10.10.1.6")]))
    core.cluster = parse(HOSTS.replace("  - {name: h2, underlay_ip: 192.168.50.11}\n", ""))
    (_default, red, _blue) = _ok(api.get("/v1/hosts/h1/names"))["tenants"]
    assert red["records"] == []


@pytest.mark.parametrize("body, field", [
    ([name("red", "bad name", "10.10.1.5")], "0.name"),
    ([name("red", "web", "10.10.1.999")], "0"),
    ([name("red", "a..b", "10.10.1.5")], "0"),
    ([{"name": "x", "ip": "10.10.1.5"}], "0.network"),
    ("nope", ""),
])
def test_bad_names_are_refused_and_change_nothing(api, core, body, field):
    _two_tenants(api)
    _ok(api.put("/v1/hosts/h1/names", json=[name("red", "web1", "10.10.1.5")]))
    r = api.put("/v1/hosts/h1/names", json=body)
    assert r.status_code in (400, 422) and r.json()["field"] == field, r.text
    assert core.store.container_names()["h1"][0].name == "web1"


def test_unknown_host_and_no_token(api):
    assert api.put("/v1/hosts/ghost/names", json=[]).status_code == 404
    assert api.get("/v1/hosts/ghost/names").status_code == 404
    api.headers.pop("Authorization")
    assert api.put("/v1/hosts/h1/names", json=[]).status_code == 401
