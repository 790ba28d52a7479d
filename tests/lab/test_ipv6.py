"""IPv6 on tenant networks with a real dockerd and the weft plugin (issue 25 item 2).

The docker-plugin lab (topologies/docker-plugin.yaml, two hosts over VXLAN), one lab for
the module.  Here: dual-stack networks red6 (tenant red) and blue6 (tenant blue) with the
same subnets, 10.10.6.0/24 and fd00:6::/64, made once with `weftctl network create
--subnet6` (every host's agent makes the Docker networks, `--ipv6`); `docker run
--network red6|blue6` containers a1 (host1), a2, a3 (host2) of red and b1 (host1), b2
(host2) of blue, each bound by the plugin with both its addresses.  Attacks from a1,
crafted with raw AF_PACKET sockets (weft_lab.attack), counted with tcpdump.
"""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Iterator

import pytest

from controller.model import eui64_link_local
from tests.conftest import converged_lab, lab_name
from tests.lab.test_docker_plugin import SYNC_S, docker, remove, start, weftctl
from tests.lab.test_security import _count
from weft_lab import attack as A
from weft_lab import cluster as C
from weft_lab.topology import load
from weft_lab.traffic import node_mac, node_run, ping, reaches

ROOT = Path(__file__).resolve().parents[2]
SUBNET, SUBNET6 = "10.10.6.0/24", "fd00:6::/64"
RA = "icmp6 and ip6[40] = 134"
CONTAINERS = {"a1": ("host1", "red6"), "a2": ("host2", "red6"), "a3": ("host2", "red6"),
              "b1": ("host1", "blue6"), "b2": ("host2", "blue6")}


@pytest.fixture(scope="module")
def lab():
    with converged_lab(load(ROOT / "topologies" / "docker-plugin.yaml")
                       .with_name(lab_name("v6"))) as topo:
        yield topo


@pytest.fixture(scope="module")
def v6(lab) -> Iterator[dict[str, str]]:
    """The dual-stack networks and containers; container name -> its IPv6 address."""
    for net, tenant in (("red6", "red"), ("blue6", "blue")):
        out = weftctl(lab, "network", "create", net, "--tenant", tenant, "--subnet", SUBNET,
                      "--subnet6", SUBNET6)
        assert out.returncode == 0, out.stderr
    C.wait_docker_networks(lab, {"red6", "blue6"}, timeout=SYNC_S)
    addrs = {}
    try:
        for name, (host, net) in CONTAINERS.items():
            start(lab, host, name, network=net)
            addrs[name] = docker(lab, host, "inspect", "-f", "{{range .NetworkSettings.Networks}}"
                                 "{{.GlobalIPv6Address}}{{end}}", name).strip()
            assert ipaddress.IPv6Address(addrs[name]) in ipaddress.IPv6Network(SUBNET6), addrs
        C.wait_converged(lab)
        yield addrs
    finally:
        for name, (host, _) in CONTAINERS.items():
            remove(lab, host, name)


def _v6_addrs(lab, node: str) -> str:
    return node_run(lab.name, node, ["ip", "-6", "-o", "addr", "show", "dev", "eth0"]).stdout


def test_dual_stack_containers_ping6_across_hosts(lab, v6):
    """Each container has its plugin-given address and the kernel's EUI-64 link-local
    one (what port security allows besides); red6 and blue6 each reach their own
    containers on the other host over IPv6 (neighbour discovery through the tunnel)."""
    for name in CONTAINERS:
        addrs = _v6_addrs(lab, name)
        assert v6[name] in addrs, addrs
        ll = eui64_link_local(node_mac(lab.name, name))
        assert f"{ll}/64" in addrs, (name, addrs)
    mode = node_run(lab.name, "a1", ["cat", "/proc/sys/net/ipv6/conf/eth0/addr_gen_mode"])
    print(f"\na1: {_v6_addrs(lab, 'a1').strip()} (addr_gen_mode {mode.stdout.strip()})")
    for a, b in (("a1", "a2"), ("a2", "a1"), ("a3", "a1"), ("b1", "b2"), ("b2", "b1")):
        got = ping(lab.name, a, v6[b], count=3)
        assert got.received == 3, (a, b, got)
    for a, b in (("a1", "a2"), ("b1", "b2")):      # IPv4 on the same networks still works
        assert reaches(lab.name, a, docker(lab, CONTAINERS[b][0], "inspect", "-f",
                                            "{{range .NetworkSettings.Networks}}"
                                            "{{.IPAddress}}{{end}}", b).strip())


def test_another_tenant_with_the_same_v6_subnet_cannot_reach(lab, v6):
    """blue6 has red6's subnets: b1 and b2 reach none of red's addresses (nor its
    link-local ones), and red's containers none of blue's."""
    for a, b in (("b1", "a2"), ("b2", "a1"), ("b1", "a1"), ("a1", "b2"), ("a2", "b1")):
        assert not reaches(lab.name, a, v6[b], tries=2), (a, b)
    ll = eui64_link_local(node_mac(lab.name, "a2"))
    got = ping(lab.name, "b1", f"{ll}%eth0", count=2)
    assert got.received == 0, got


def test_na_spoofing_takes_nothing(lab, v6):
    """a1 claims a2's address with unsolicited override NAs (from its own address and from
    a2's, 0.1 s apart for 5 s) while a3 pings a2: 0 echo requests reach a1, every ping
    is answered during and after, and a3's neighbour entry for a2 keeps a2's MAC."""
    got = A.na_hijack(lab.name, "a1", v6["a1"], "a3", v6["a2"])
    print(f"\nNA hijack of a2 by a1: {got}")
    assert got.held, got
    neigh = node_run(lab.name, "a3", ["ip", "-6", "neigh", "show", v6["a2"]]).stdout
    assert node_mac(lab.name, "a2") in neigh and node_mac(lab.name, "a1") not in neigh, neigh


def test_ipv6_source_spoofing_is_dropped(lab, v6):
    """a1 sends 20 echo requests to a3 from a2's address (and 20 from a2's link-local
    one): none arrives; the same from its own address do (the control)."""
    a1, a3 = node_mac(lab.name, "a1"), node_mac(lab.name, "a3")
    spoofed = [A.echo6(a1, a3, v6["a2"], v6["a3"]),
               A.echo6(a1, a3, eui64_link_local(node_mac(lab.name, "a2")), v6["a3"])]
    echo = "icmp6 and ip6[40] = 128"
    got = _count(lab.name, ["a3"], echo, lambda: A.send(lab.name, "a1", spoofed, count=10))
    control = _count(lab.name, ["a3"], echo, lambda: A.send(
        lab.name, "a1", [A.echo6(a1, a3, v6["a1"], v6["a3"])], count=5))
    print(f"\nIPv6 source spoofing a1 -> a3: {got['a3']} of 20 arrived; control {control}")
    assert got == {"a3": 0} and control == {"a3": 5}, (got, control)


def test_router_advertisements_from_a_container_never_arrive(lab, v6):
    """a1 sends RAs (default router, prefix fd00:bad::/64) to all nodes: a2 and a3 see
    none, get no default route and no address in that prefix."""
    a1 = node_mac(lab.name, "a1")
    ra = A.router_advert(a1, eui64_link_local(a1), "fd00:bad::/64")
    seen = _count(lab.name, ["a2", "a3"], RA, lambda: A.send(lab.name, "a1", [ra], count=10))
    assert seen == {"a2": 0, "a3": 0}, seen
    for n in ("a2", "a3"):
        routes = node_run(lab.name, n, ["ip", "-6", "route"]).stdout
        assert "default" not in routes and "fd00:bad" not in routes, routes
        assert "fd00:bad" not in _v6_addrs(lab, n)


def test_without_port_security_the_same_attacks_succeed(lab, v6):
    """The control (what the attacks do to unchecked ports, as on main before IPv6 port
    security, where such networks could not exist): red6 again, as a Docker network made
    by hand with -o port_security=off on both hosts; o1 (host1) claims o2's address
    (host2) while o3 (host2) pings it, and sends an RA."""
    for host in ("host1", "host2"):
        docker(lab, host, "network", "create", "-d", "weft", "--ipam-driver", "weft", "-o",
               "network=red6", "-o", "port_security=off", "--subnet", SUBNET, "--ipv6",
               "--subnet", SUBNET6, "red6open")
    names = {"o1": "host1", "o2": "host2", "o3": "host2"}
    try:
        addrs = {}
        for name, host in names.items():
            start(lab, host, name, network="red6open")
            addrs[name] = docker(lab, host, "inspect", "-f", "{{range .NetworkSettings."
                                 "Networks}}{{.GlobalIPv6Address}}{{end}}", name).strip()
        C.wait_converged(lab)
        assert ping(lab.name, "o3", addrs["o2"], count=3).received == 3
        got = A.na_hijack(lab.name, "o1", addrs["o1"], "o3", addrs["o2"])
        o1 = node_mac(lab.name, "o1")
        ra = A.router_advert(o1, eui64_link_local(o1), "fd00:bad::/64")
        ras = _count(lab.name, ["o3"], RA, lambda: A.send(lab.name, "o1", [ra], count=10))["o3"]
        print(f"\nport security off: NA hijack of o2 by o1: {got}; RAs at o3: {ras}/10")
        assert got.stolen > 0 and ras == 10, (got, ras)
    finally:
        for name, host in names.items():
            remove(lab, host, name)
        for host in ("host1", "host2"):
            docker(lab, host, "network", "rm", "red6open", check=False)
