"""The pure reconcile of the cluster's networks against a dockerd's weft networks
(ovs_agent.netsync, docs/docker.md "Tenant networks"): create what is missing, adopt a
fitting hand-made network, never touch a differing one, delete only the agent's own
and only when no container uses it; a second pass changes nothing."""
from __future__ import annotations

import pytest

from ovs_agent import netsync as S

RED = S.Wanted("red", "red", "10.10.0.0/24", "10.10.0.1")
RED_DB = S.Wanted("red-db", "red", "10.10.2.0/24", "10.10.2.1")
LAB = S.Wanted("red-lab", "red", "10.10.3.0/24", None)
TWO = S.Wanted("two", "red", "10.10.4.0/24", None, "fd00:4::/64")      # dual-stack


def docker_net(w: S.Wanted, *, managed: bool = True, containers: int | None = None,
               **over) -> dict:
    """A network as dockerd's `GET /networks` shows one the agent (or a user) made."""
    body = S.create_body(w)
    doc = {"Name": w.name, "Id": f"{w.name}-id".ljust(64, "0"), "Driver": "weft",
           "Options": body["Options"], "Labels": body["Labels"] if managed else {},
           "IPAM": {"Driver": "weft", "Config": [{"Subnet": w.subnet, "Gateway":
                                                  w.gateway or "10.10.3.1"}]}}
    if containers is not None:
        doc["Containers"] = {f"ep{i}": {} for i in range(containers)}
    for k, v in over.items():
        doc[k] = v
    return doc


def existing(*docs: dict) -> list[S.Existing]:
    return [S.existing_from(d) for d in docs]


def test_the_controllers_list_as_wanted_networks():
    listed = [{"name": "default", "tenant": "default", "subnet": None, "builtin": True},
              {"name": "red", "tenant": "red", "subnet": "10.10.0.0/24",
               "gateway": "10.10.0.1", "default_network": True},
              {"name": "bare", "tenant": "bare", "subnet": None},
              {"name": "v6", "tenant": "red", "subnet": "fd00::/64", "gateway": None},
              {"name": "red-lab", "tenant": "red", "subnet": "10.10.3.0/24", "gateway": None},
              {"name": "two", "tenant": "red", "subnet": "10.10.4.0/24", "gateway": None,
               "subnet6": "fd00:4::/64"}]
    assert S.wanted_from(listed) == [RED, LAB, TWO]
    for bad in ({"networks": []}, [{"subnet": "10.0.0.0/24"}], None):
        with pytest.raises(ValueError):
            S.wanted_from(bad)          # unreadable is no empty list: nothing is deleted


def test_create_body_is_what_the_plugin_needs():
    body = S.create_body(RED_DB)
    assert body == {
        "Name": "red-db", "CheckDuplicate": True, "Driver": "weft", "EnableIPv6": False,
        "IPAM": {"Driver": "weft", "Config": [{"Subnet": "10.10.2.0/24",
                                               "Gateway": "10.10.2.1"}],
                 "Options": {"tenant": "red-db"}},
        "Options": {"network": "red-db", "tenant": "red"},
        "Labels": {"org.weft.managed": "true", "org.weft.network": "red-db"}}
    assert "Gateway" not in S.create_body(LAB)["IPAM"]["Config"][0]   # IPAM's first address


def test_missing_networks_are_created_and_a_second_pass_does_nothing():
    p = S.plan([RED, RED_DB, LAB], [])
    assert p.create == [RED, RED_DB, LAB] and not (p.delete or p.replace or p.conflicts)
    now = existing(*(docker_net(w) for w in (RED, RED_DB, LAB)))
    again = S.plan([RED, RED_DB, LAB], now)
    assert not again.changes and [e.name for e in again.ok] == ["red", "red-db", "red-lab"]
    assert S.stale([RED, RED_DB, LAB], now) == []       # nothing to inspect either


def test_a_fitting_hand_made_network_is_adopted_not_recreated():
    """`docker network create -d weft --ipam-driver weft -o tenant=red --subnet ... red`
    as docs/docker.md said before: the cluster's network red, used as it is."""
    by_hand = docker_net(RED, managed=False, Options={"tenant": "red"})
    by_name = docker_net(RED_DB, managed=False, Options={})            # tenant = its name
    p = S.plan([RED, RED_DB], existing(by_hand, by_name))
    assert not p.changes and not p.conflicts
    assert [e.name for e in p.adopt] == ["red", "red-db"]
    # the cluster network deleted: a hand-made network is the operator's, never deleted
    gone = S.plan([], existing(by_hand))
    assert not gone.changes and not gone.waiting


@pytest.mark.parametrize("over,says", [
    ({"IPAM": {"Config": [{"Subnet": "10.20.0.0/24", "Gateway": "10.20.0.1"}]}},
     "has subnet 10.20.0.0/24"),
    ({"Options": {"tenant": "blue"}}, "joins weft network 'blue'"),
    ({"Options": {"network": "red", "tenant": "blue"}}, "names tenant 'blue'"),
    ({"IPAM": {"Config": [{"Subnet": "10.10.0.0/24", "Gateway": "10.10.0.254"}]}},
     "has gateway 10.10.0.254"),
])
def test_a_differing_hand_made_network_is_a_conflict_left_alone(over, says):
    """The careless operator: same name, another subnet, tenant or gateway."""
    p = S.plan([RED], existing(docker_net(RED, managed=False, **over)))
    assert not p.changes and not p.adopt
    assert says in p.conflicts["red"] and "left alone" in p.conflicts["red"]
    assert "docker network rm red" in p.conflicts["red"]


def test_a_name_taken_by_another_driver_or_twice_is_a_conflict():
    p = S.plan([RED], [], others={"red": "bridge"})
    assert not p.create and "driver 'bridge'" in p.conflicts["red"]
    twice = existing(docker_net(RED), docker_net(RED, Id="f" * 64))
    p = S.plan([RED], twice)
    assert not p.changes and "2 Docker networks are named 'red'" in p.conflicts["red"]


def test_deleted_in_the_controller_goes_only_when_unused():
    mine = existing(docker_net(RED), docker_net(RED_DB))
    assert [e.name for e in S.stale([RED], mine)] == ["red-db"]        # to be counted
    unknown = S.plan([RED], mine)                  # containers not counted: kept
    assert not unknown.delete and "red-db" in unknown.waiting
    used = S.plan([RED], existing(docker_net(RED), docker_net(RED_DB, containers=2)))
    assert not used.delete and "(2 do)" in used.waiting["red-db"]
    unused = S.plan([RED], existing(docker_net(RED), docker_net(RED_DB, containers=0)))
    assert [e.name for e in unused.delete] == ["red-db"] and not unused.waiting


def test_the_agents_own_network_that_now_differs_is_recreated_when_unused():
    """`weftctl network set red --subnet ...` (or delete and create with another one)."""
    moved = S.Wanted("red", "red", "10.30.0.0/24", "10.30.0.1")
    used = S.plan([moved], existing(docker_net(RED, containers=1)))
    assert not used.changes and "recreated once no container" in used.waiting["red"]
    free = S.plan([moved], existing(docker_net(RED, containers=0)))
    assert [(e.name, w) for e, w in free.replace] == [("red", moved)]


def test_gateway_none_accepts_dockers_reserved_address():
    assert not S.differences(LAB, S.existing_from(docker_net(LAB)))


def test_a_dual_stack_network_is_created_with_ipv6_and_its_change_noticed():
    body = S.create_body(TWO)
    assert body["EnableIPv6"] is True
    assert body["IPAM"]["Config"] == [{"Subnet": "10.10.4.0/24"}, {"Subnet": "fd00:4::/64"}]
    doc = docker_net(TWO, IPAM={"Driver": "weft", "Config": [
        {"Subnet": "fd00:4::/64"}, {"Subnet": "10.10.4.0/24", "Gateway": "10.10.4.1"}]})
    e = S.existing_from(doc)
    assert (e.subnet, e.subnet6) == ("10.10.4.0/24", "fd00:4::/64")
    assert S.differences(TWO, e) == []
    v4_only = S.Wanted("two", "red", "10.10.4.0/24", None)
    assert S.differences(v4_only, e) == ["has IPv6 subnet fd00:4::/64"]
    other = S.Wanted("two", "red", "10.10.4.0/24", None, "fd00:5::/64")
    assert S.differences(other, e) == ["has IPv6 subnet fd00:4::/64"]
    assert S.differences(TWO, S.existing_from(docker_net(v4_only))) == ["has IPv6 subnet none"]
