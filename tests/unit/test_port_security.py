"""Port security and bounded learning in the pure pipeline, run through the fake switch.

Each test sends the frames an attacker would (issue 11) and asserts where they
go, or that they are never learned.
"""
from __future__ import annotations

import pytest

from controller.flows import COOKIE_FEATURE_MASK, COOKIE_LEARNED, feature_of
from controller.model import DOCKER_LINK_PORT, TRUNK, Binding, Tenant, Topology
from controller.pipeline import (
    L2,
    LEARN_LIMIT_MACS,
    flow_reads,
    learned_cookie,
)
from tests.fakeoftable import FakeCluster, FakeOFTable
from tests.unit.topologies import Lab, mesh_tunnels

BCAST = "ff:ff:ff:ff:ff:ff"
RED, BLUE = Tenant("red", 100, vlan=10), Tenant("blue", 200, vlan=20)
R1, R2, R3 = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:03"
AAP_MAC = "02:00:00:00:00:aa"
TOPO = Topology(
    tenants=(RED, BLUE),
    bindings=(Binding("h1", "r1", "red", mac=R1, ips=("10.0.0.1",),
                      allowed_address_pairs=(("10.0.0.100", None), ("10.0.9.0/24", AAP_MAC))),
              Binding("h1", "r3", "red", mac=R3),                    # mac, no ips
              Binding("h1", "free", "red"),                          # no mac: no port security
              Binding("h1", "trk", None, TRUNK, trunk=("red", "blue")),
              Binding("h2", "r2", "red", mac=R2),
              Binding("h2", "red2", "red")),
    hosts=("h1", "h2"))
PORTS = {"h1": {"r1": 1, "r3": 2, "free": 3, "trk": 4, DOCKER_LINK_PORT: 5, "tun-h2": 9},
         "h2": {"r2": 1, "red2": 2, DOCKER_LINK_PORT: 5, "tun-h1": 9}}
TUNNELS = mesh_tunnels(TOPO.hosts)
LAB = Lab(TOPO, PORTS, TUNNELS)


def _eth(src: str, dst: str = BCAST, **kw: object) -> dict:
    return {"eth_src": src, "eth_dst": dst, **kw}


def _ip(src_mac: str, ip: str, dst: str = BCAST) -> dict:
    return _eth(src_mac, dst, eth_type=0x0800, ip_proto=17, ipv4_src=ip, ipv4_dst="10.0.0.2",
                ip_dscp=0)


def _arp(src_mac: str, sha: str, spa: str) -> dict:
    return _eth(src_mac, BCAST, eth_type=0x0806, arp_sha=sha, arp_spa=spa, arp_tpa="10.0.0.2")


def _learned_count(cluster: FakeCluster, host: str) -> int:
    return sum(1 for f in cluster.hosts[host].table.flows.values()
               if feature_of(f.cookie) == "learned")


# --- multicast / broadcast source MACs ----------------------------------------------------------
@pytest.mark.parametrize("src", [BCAST, "01:00:5e:00:00:01", "33:33:00:00:00:01"])
@pytest.mark.parametrize("host,port,vlan", [
    ("h1", "free", None), ("h1", "r1", None), ("h1", DOCKER_LINK_PORT, None),
    ("h1", "trk", 10), ("h1", "trk", 20), ("h2", "red2", None)])
def test_group_source_mac_is_dropped_everywhere_and_never_learned(src, host, port, vlan):
    cluster = LAB.cluster(learn=True)
    assert cluster.frames(host, port, _eth(src), vlan=vlan) == []
    assert _learned_count(cluster, "h1") == _learned_count(cluster, "h2") == 0
    # the tenant's broadcast still reaches everyone (the attack took 100% of ARP before)
    got = {(h, p) for h, p, _ in cluster.frames("h2", "red2", _eth("06:00:00:00:00:07"))}
    assert got == {("h1", "free"), ("h1", "trk"), ("h1", "r1"), ("h1", "r3"), ("h2", "r2")}


def test_group_source_mac_from_a_tunnel_is_dropped():
    table = FakeOFTable(LAB.state("h1"), learn=True)
    assert table.forward(9, {**_eth(BCAST), "tunnel_id": RED.vni}) == set()
    assert not [f for f in table.flows.values() if feature_of(f.cookie) == "learned"]


# --- bound ports send only from their addresses ----------------------------------------------
def test_bound_port_sends_only_from_its_mac():
    cluster = LAB.cluster(learn=True)
    assert cluster.frames("h1", "r3", _eth(R3))                       # its own: floods
    for spoofed in (R2, "06:00:00:00:00:09", R1):
        assert cluster.frames("h1", "r3", _eth(spoofed)) == []
    # the spoofed frame taught nobody anything
    assert cluster.frames("h1", "free", _eth("06:00:00:00:00:01", "06:00:00:00:00:09"))
    assert _learned_count(cluster, "h2") == 2 * 2   # R3's and free's MACs, nothing spoofed


def test_bound_port_with_ips_sends_only_from_them():
    cluster = LAB.cluster(learn=True)
    assert cluster.frames("h1", "r1", _ip(R1, "10.0.0.1"))
    assert cluster.frames("h1", "r1", _ip(R1, "10.0.0.100"))          # address pair, port MAC
    assert cluster.frames("h1", "r1", _ip(AAP_MAC, "10.0.9.77"))       # address pair, own MAC
    for bad in (_ip(R1, "10.0.0.2"), _ip(AAP_MAC, "10.0.0.1"), _ip(R2, "10.0.0.1"),
                _eth(R1, eth_type=0x86DD)):                           # no IPv6 when ips are set
        assert cluster.frames("h1", "r1", bad) == [], bad
    assert cluster.frames("h1", "r1", _eth(R1, eth_type=0x88CC))       # other L2 from its MAC


def test_arp_sender_mac_and_ip_are_checked():
    cluster = LAB.cluster(learn=True)
    assert cluster.frames("h1", "r1", _arp(R1, R1, "10.0.0.1"))
    assert cluster.frames("h1", "r1", _arp(AAP_MAC, AAP_MAC, "10.0.9.1"))
    for bad in (_arp(R1, R1, "10.0.0.2"),          # claims a neighbour's IP
                _arp(R1, R2, "10.0.0.1"),          # claims a neighbour's MAC inside ARP
                _arp(AAP_MAC, AAP_MAC, "10.0.0.1")):
        assert cluster.frames("h1", "r1", bad) == [], bad
    # a mac without ips: any IP, but the ARP sender MAC must be its own
    assert cluster.frames("h1", "r3", _arp(R3, R3, "10.0.0.99"))
    assert cluster.frames("h1", "r3", _arp(R3, R2, "10.0.0.99")) == []


def test_ports_without_a_mac_and_trunks_are_not_restricted():
    cluster = LAB.cluster(learn=True)
    assert cluster.frames("h1", "free", _eth("06:00:00:00:00:01"))
    assert cluster.frames("h1", "trk", _eth("06:00:00:00:00:02"), vlan=10)


@pytest.mark.parametrize("bad", [
    {"ips": ("10.0.0.1",)},                                                # no mac
    {"mac": R1, "ips": ("nope",)},
    {"mac": R1, "ips": "10.0.0.1"},
    {"mac": R1, "allowed_address_pairs": (("10.0.0.1", "01:00:00:00:00:01"),)},
    {"mac": R1, "ips": ("10.0.0.1", "10.0.0.1")},
])
def test_bad_addresses_are_rejected(bad):
    with pytest.raises(ValueError):
        Binding("h", "p", "red", **bad)


def test_address_pairs_accept_neutron_dicts():
    b = Binding("h", "p", "red", mac=R1, allowed_address_pairs=(
        {"ip_address": "10.0.0.0/24", "mac_address": "02:00:00:00:00:AB"},
        {"ip_address": "10.1.0.1"}))
    assert b.allowed_address_pairs == (("10.0.0.0/24", "02:00:00:00:00:ab"), ("10.1.0.1", None))
    assert b.source_addresses() == {R1: None, "02:00:00:00:00:ab": frozenset({"10.0.0.0/24"})}


# --- learning never overrides a binding --------------------------------------------------------
@pytest.mark.parametrize("spoofer", [("h2", "red2", None), ("h1", "free", None),
                                     ("h1", "trk", 10)])
def test_a_bound_mac_cannot_be_taken_over_by_learning(spoofer):
    cluster = LAB.cluster(learn=True)
    host, port, vlan = spoofer
    for _ in range(3):
        cluster.frames(host, port, _eth(R1), vlan=vlan)               # "I am R1", repeatedly
    for sender in (("h2", "r2", R2), ("h1", "r3", R3), ("h2", "red2", "06:00:00:00:00:05")):
        h, p, src = sender
        got = cluster.frames(h, p, _eth(src, R1))
        assert got == [("h1", "r1", None)], (spoofer, sender)


# --- bounded learning -------------------------------------------------------------------------
def test_every_learn_is_bounded_and_counted_per_ingress_and_tenant():
    for host in ("h1", "h2"):
        state = LAB.state(host)
        specs = [a[1] for f in state.flows for i in f.instructions if i[0] == "apply"
                 for a in i[1] if a[0] == "learn"]
        assert specs and all(s.limit == 2 * LEARN_LIMIT_MACS for s in specs)
        assert all(feature_of(s.cookie) == "learned" for s in specs)
        # one cookie per (ingress, tenant): a port's and a tunnel's learns never share one
        by_cookie = {(s.cookie, s.metadata & 0xFFFFFF) for s in specs}
        assert len({c for c, _ in by_cookie}) == len(by_cookie)
    assert learned_cookie(4, RED.vni) != learned_cookie(4, BLUE.vni) != learned_cookie(5, BLUE.vni)


def test_a_mac_flood_is_bounded_per_port_and_other_ports_still_learn():
    cluster = LAB.cluster(learn=True)
    for i in range(LEARN_LIMIT_MACS + 300):                            # random-MAC flood
        cluster.frames("h1", "free", _eth(f"06:00:00:{i >> 16 & 0xFF:02x}:{i >> 8 & 0xFF:02x}:"
                                          f"{i & 0xFF:02x}"))
    for host, ingress in (("h1", 3), ("h2", 9)):                     # the port, and the tunnel
        table = cluster.hosts[host].table
        assert table.count(L2, learned_cookie(ingress, RED.vni)) == 2 * LEARN_LIMIT_MACS
        assert _learned_count(cluster, host) == 2 * LEARN_LIMIT_MACS
    # the flood's victims: another port's MAC is still learned and reached exactly
    cluster.frames("h2", "red2", _eth("06:00:00:00:aa:aa"))
    assert cluster.frames("h1", "r3", _eth(R3, "06:00:00:00:aa:aa")) == [("h2", "red2", None)]
    # a MAC learned before the bound was reached keeps working
    assert cluster.frames("h2", "r2", _eth(R2, "06:00:00:00:00:05")) == [("h1", "free", None)]


# --- the controller reads only what it owns ----------------------------------------------------
def test_flow_reads_cover_every_owned_flow_and_no_learned_mac():
    state = LAB.state("h1")

    def read(table: int, cookie: int) -> bool:
        return any((t is None or t == table) and cookie & mask == c & mask
                   for t, c, mask in flow_reads())

    assert all(read(f.table, f.cookie) for f in state.flows)
    for cookie in (COOKIE_LEARNED, learned_cookie(3, RED.vni), learned_cookie(0xFFFF, 0xFFFFFF)):
        assert not read(L2, cookie)
        assert read(L2 - 1, cookie)             # leftovers outside L2 are still found
    assert all(mask == COOKIE_FEATURE_MASK for _, _, mask in flow_reads())
