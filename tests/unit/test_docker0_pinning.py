"""docker0 containers pinned to their host (issue 25, item 0), through the fake switches.

d1 behind h1's docker0 link sends from d2's MAC (d2 is behind h2's): before, every
host learned d2 at h1 and h3's frames to d2 went to d1.  With d2 reported as a docker0
endpoint of h2, the spoofed frames are dropped where they enter and every host sends
d2's frames to h2.
"""
from __future__ import annotations

import pytest

from controller.model import DOCKER_LINK_PORT, TRUNK, Binding, LinkEndpoint, Tenant, Topology
from controller.pipeline import learned_cookie
from tests.fakeoftable import FakeCluster

D1, D2, D3 = "02:42:ac:11:01:02", "02:42:ac:11:02:02", "02:42:ac:11:03:02"
BLUE = Tenant("blue", 200, vlan=20)
ENDPOINTS = (LinkEndpoint("h1", D1, ("172.17.1.2",)), LinkEndpoint("h2", D2, ("172.17.2.2",)),
             LinkEndpoint("h3", D3, ("172.17.3.2",)))
BINDINGS = (Binding("h1", "open", "default"),                  # default tenant, no port security
            Binding("h1", "sec", "default", mac="02:00:00:00:00:05"),
            Binding("h1", "trk", "default", TRUNK, trunk=("blue",)))
PORTS = {h: {DOCKER_LINK_PORT: 5, "open": 6, "sec": 7, "trk": 8,
             **{f"tun-{p}": 9 + i for i, p in enumerate(x for x in ("h1", "h2", "h3") if x != h)}}
         for h in ("h1", "h2", "h3")}
TUNNELS = {h: {p: f"tun-{p}" for p in ("h1", "h2", "h3") if p != h} for h in ("h1", "h2", "h3")}


def _cluster(endpoints=ENDPOINTS, bindings=BINDINGS) -> FakeCluster:
    topo = Topology((BLUE,), bindings, ("h1", "h2", "h3"), endpoints=endpoints)
    return FakeCluster.from_topology(topo, PORTS, TUNNELS, learn=True)


def _eth(src: str, dst: str = "ff:ff:ff:ff:ff:ff") -> dict:
    return {"eth_src": src, "eth_dst": dst, "eth_type": 0x88B5}


def test_without_pinning_a_docker0_container_takes_another_hosts():
    """The attack of issue 25 on the old pipeline (learned endpoints only): shows the
    fake switches reproduce it, so the tests below can fail."""
    cluster = _cluster(endpoints=())
    cluster.frames("h2", DOCKER_LINK_PORT, _eth(D2))           # d2 speaks: learned at h2
    cluster.frames("h1", DOCKER_LINK_PORT, _eth(D2))           # d1 sends from d2's MAC
    assert cluster.deliveries("h3", DOCKER_LINK_PORT, _eth(D3, D2)) == \
        [("h1", DOCKER_LINK_PORT)]


@pytest.mark.parametrize("port", [DOCKER_LINK_PORT, "open"])
def test_a_pinned_mac_entering_another_hosts_unchecked_port_is_dropped(port):
    cluster = _cluster()
    cluster.frames("h2", DOCKER_LINK_PORT, _eth(D2))
    assert cluster.deliveries("h1", port, _eth(D2)) == []
    assert cluster.deliveries("h1", port, _eth(D3, D2)) == []     # d3's MAC is h3's
    # d2's frames still go to h2 from everywhere, and nowhere else
    for host, src in (("h1", D1), ("h3", D3)):
        assert cluster.deliveries(host, DOCKER_LINK_PORT, _eth(src, D2)) == \
            [("h2", DOCKER_LINK_PORT)]
    # h1 learned nothing for d2 at the port the spoof came in
    assert not [f for f in cluster.hosts["h1"].table.flows.values()
                if f.cookie == learned_cookie(PORTS["h1"][port], 1) and ("eth_dst", D2) in f.match]


def test_a_pinned_mac_from_its_own_docker0_link_floods_as_before():
    got = set(_cluster().deliveries("h2", DOCKER_LINK_PORT, _eth(D2)))
    assert got == {("h1", DOCKER_LINK_PORT), ("h1", "open"), ("h1", "sec"), ("h1", "trk"),
                   ("h3", DOCKER_LINK_PORT)}


def test_unknown_docker0_macs_are_still_learned_and_reach_their_container():
    """A container dockerd has not listed yet (or a host without the report) works as
    before: learned behind its docker0 link."""
    cluster = _cluster()
    new = "02:42:ac:11:01:09"
    cluster.frames("h1", DOCKER_LINK_PORT, _eth(new))
    assert cluster.deliveries("h3", DOCKER_LINK_PORT, _eth(D3, new)) == \
        [("h1", DOCKER_LINK_PORT)]


def test_the_drops_are_per_port_tenant_and_tag():
    """A trunk carrying the default tenant natively drops the pinned MAC untagged only;
    the same MAC in another tenant (its VLAN) is that tenant's business."""
    cluster = _cluster()
    assert cluster.deliveries("h1", "trk", _eth(D2)) == []
    assert cluster.frames("h1", "trk", _eth(D2), vlan=20) == []         # no blue port else
    # secured ports never send another MAC anyway; no pinned drop is written for them
    flows = cluster.hosts["h1"].table.flows.values()
    pins = {(dict(f.match)["in_port"], dict(f.match)["vlan_vid"]) for f in flows
            if f.priority == 105 and dict(f.match).get("eth_src") == D2}
    assert pins == {(5, 0), (6, 0), (8, 0)}


def test_a_mac_bound_to_a_default_tenant_port_wins_over_a_docker0_report():
    bound = (*BINDINGS, Binding("h3", "bound", "default", mac=D2))
    ports = {**PORTS, "h3": {**PORTS["h3"], "bound": 12}}
    topo = Topology((BLUE,), bound, ("h1", "h2", "h3"), endpoints=ENDPOINTS)
    assert [b.mac for b in topo.endpoint_bindings] == [D1, D3]
    cluster = FakeCluster.from_topology(topo, ports, TUNNELS, learn=True)
    assert cluster.deliveries("h1", DOCKER_LINK_PORT, _eth(D1, D2)) == [("h3", "bound")]


def test_a_mac_is_pinned_to_one_host_only():
    with pytest.raises(ValueError, match="docker0 endpoint mac"):
        Topology((), (), ("h1", "h2"), endpoints=(LinkEndpoint("h1", D1),
                                                  LinkEndpoint("h2", D1.upper())))


@pytest.mark.parametrize("mac,ips", [("01:00:5e:00:00:01", ()), ("nope", ()),
                                     (D1, ("172.17.1.300",)), (D1, "172.17.1.2")])
def test_an_endpoint_needs_a_unicast_mac_and_ipv4_addresses(mac, ips):
    with pytest.raises(ValueError):
        LinkEndpoint("h1", mac, ips)
