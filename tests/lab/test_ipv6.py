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
import re
import subprocess
import time
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
from weft_lab.nodes import exec_argv
from weft_lab.traffic import node_mac, node_run, ping, reaches

ROOT = Path(__file__).resolve().parents[2]
SUBNET, SUBNET6 = "10.10.6.0/24", "fd00:6::/64"
RA = "icmp6 and ip6[40] = 134"
CONTAINERS = {"a1": ("host1", "red6"), "a2": ("host2", "red6"), "a3": ("host2", "red6"),
              "b1": ("host1", "blue6"), "b2": ("host2", "blue6")}
GW6 = "fd00:6::1"           # red6's (and blue6's) IPv6 gateway: the subnet's first address
# routing: a second network of each tenant, each with one container on host2
ROUTED = {"red6b": ("red", "10.10.7.0/24", "fd00:7::/64"),
          "blue6b": ("blue", "10.10.9.0/24", "fd00:9::/64")}
ROUTED_CONTAINERS = {"a4": ("host2", "red6b"), "b4": ("host2", "blue6b")}
# a configurable IPv6 gateway (schema 12): red6c's is not its subnet's first address
CUSTOM = ("red6c", "red", "10.10.8.0/24", "fd00:8::/64")
CUSTOM_GW6 = "fd00:8::fe"
SERVER6 = """
import socket, sys
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1]))); s.listen(16); print("ready", flush=True)
while True:
    c, _ = s.accept(); c.settimeout(3)
    try:
        c.sendall(b"echo:" + c.recv(100))
    except OSError:
        pass
    c.close()
"""
CLIENT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    c.sendall(b"weft"); c.settimeout(3); print(c.recv(100).decode())
except OSError as e:
    print("fail", e)
"""


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
    none, get no default route but weft's gateway and no address in that prefix."""
    a1 = node_mac(lab.name, "a1")
    ra = A.router_advert(a1, eui64_link_local(a1), "fd00:bad::/64")
    seen = _count(lab.name, ["a2", "a3"], RA, lambda: A.send(lab.name, "a1", [ra], count=10))
    assert seen == {"a2": 0, "a3": 0}, seen
    for n in ("a2", "a3"):
        routes = node_run(lab.name, n, ["ip", "-6", "route"]).stdout
        defaults = [r for r in routes.splitlines() if r.startswith("default")]
        assert "fd00:bad" not in routes, routes      # the only default: weft's gateway
        assert all(r.startswith(f"default via {GW6} ") for r in defaults), routes
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


# --- IPv6 through the tenant's distributed gateway, IPv6 ACLs -----------------------------
def _addr(lab, host: str, name: str, field: str = "GlobalIPv6Address") -> str:
    return docker(lab, host, "inspect", "-f", "{{range .NetworkSettings.Networks}}{{."
                  + field + "}}{{end}}", name).strip()


@pytest.fixture(scope="module")
def routed6(lab, v6) -> Iterator[dict[str, str]]:
    """red6b (tenant red) and blue6b (tenant blue), dual-stack with their own subnets,
    one container each on host2: a4, b4; name -> IPv6 address (a1..b2's too)."""
    for net, (tenant, subnet, subnet6) in ROUTED.items():
        out = weftctl(lab, "network", "create", net, "--tenant", tenant, "--subnet", subnet,
                      "--subnet6", subnet6)
        assert out.returncode == 0, out.stderr
    C.wait_docker_networks(lab, set(ROUTED), timeout=SYNC_S)
    addrs = dict(v6)
    try:
        for name, (host, net) in ROUTED_CONTAINERS.items():
            start(lab, host, name, network=net)
            addrs[name] = _addr(lab, host, name)
            assert ipaddress.IPv6Address(addrs[name]) in ipaddress.IPv6Network(
                ROUTED[net][2]), addrs
        C.wait_converged(lab)
        yield addrs
    finally:
        for name, (host, _) in ROUTED_CONTAINERS.items():
            remove(lab, host, name)


def _ping6_ttls(lab, node: str, dst: str, count: int = 3) -> list[int]:
    """The hop limits of the echo replies ``node`` received (ping prints them as ttl=)."""
    out = node_run(lab.name, node, ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "1",
                                    dst], timeout=30).stdout
    return [int(t) for t in re.findall(r"ttl=(\d+)", out)]


def test_ping6_between_a_tenants_networks_across_hosts_through_the_gateway(lab, routed6):
    """a1 (red6, host1) and a4 (red6b, host2): each has its network's IPv6 gateway as
    default route (the plugin's GatewayIPv6), resolves it to the gateway MAC on its own
    host, and each echo reply arrives with hop limit 63: routed once."""
    for node, gw in (("a1", GW6), ("a4", "fd00:7::1")):
        routes = node_run(lab.name, node, ["ip", "-6", "route", "show", "default"]).stdout
        assert routes.startswith(f"default via {gw} "), (node, routes)
    ttls = _ping6_ttls(lab, "a1", routed6["a4"])
    back = _ping6_ttls(lab, "a4", routed6["a1"])
    neigh = node_run(lab.name, "a1", ["ip", "-6", "neigh", "show", GW6]).stdout
    print(f"\na1 -> a4 hop limits {ttls}, a4 -> a1 {back}; a1's neighbour {neigh.strip()}")
    assert len(ttls) >= 2 and set(ttls) == {63}, ttls
    assert len(back) >= 2 and set(back) == {63}, back
    assert " lladdr 0a:77:66:" in neigh and "router" in neigh, neigh
    assert ping(lab.name, "a1", GW6, count=2).received == 2         # the gateway answers


def test_no_ipv6_route_into_another_tenant(lab, routed6):
    """From red, blue6b's subnet (fd00:9::/64) is routed nowhere: a1 and a4 reach none of
    b4's addresses; blue's own b1 reaches b4 through blue's gateway."""
    for node in ("a1", "a4"):
        assert not reaches(lab.name, node, routed6["b4"], tries=2), node
    assert ping(lab.name, "b1", routed6["b4"], count=3).received == 3


def test_frames_to_the_gateway_mac_for_another_tenants_subnet_deliver_nothing(lab, routed6):
    """a1 sends echo requests to its gateway's MAC (learnt by ND) addressed to b4 (blue,
    another subnet) and to b2 (blue, red6's own subnet): none arrives; the same addressed
    to a4 (red) do, their hop limit 255 decremented once (the control)."""
    assert ping(lab.name, "a1", GW6, count=1).received == 1
    neigh = node_run(lab.name, "a1", ["ip", "-6", "neigh", "show", GW6]).stdout.split()
    gw_mac = neigh[neigh.index("lladdr") + 1]
    a1 = node_mac(lab.name, "a1")
    echo = "icmp6 and ip6[40] = 128"
    frames = [A.echo6(a1, gw_mac, routed6["a1"], routed6["b4"]),
              A.echo6(a1, gw_mac, routed6["a1"], routed6["b2"])]
    got = _count(lab.name, ["b4", "b2"], echo, lambda: A.send(lab.name, "a1", frames,
                                                              count=10))
    control = _count(lab.name, ["a4"], echo + " and ip6[7] = 254", lambda: A.send(
        lab.name, "a1", [A.echo6(a1, gw_mac, routed6["a1"], routed6["a4"])], count=5))
    print(f"\nto the gateway MAC for blue's addresses: {got}; control to a4: {control}")
    assert got == {"b4": 0, "b2": 0} and control == {"a4": 5}, (got, control)


def _connects(lab, src: str, dst_ip: str, port: int, timeout: float = 2.0) -> bool:
    out = node_run(lab.name, src, ["python3", "-c", CLIENT, dst_ip, str(port), str(timeout)],
                   timeout=timeout + 10).stdout.strip()
    return out == "echo:weft"


def _eventually(check, tries: int = 3) -> bool:
    for _ in range(tries):
        if check():
            return True
        time.sleep(0.3)
    return False


def test_ipv6_acl_in_a_default_deny_tenant(lab, routed6):
    """red default-deny with one rule, tcp/8080 to a2's IPv6 address: from a1 (same
    network, other host, neighbour caches flushed: ND must pass) and from a4 (routed)
    8080 connects and echoes, 8081 does not, nor ping6, nor IPv4 to 8080; the rule and
    the default removed, 8081 connects again."""
    procs = []
    rule = None
    try:
        for port in (8080, 8081):
            p = subprocess.Popen(exec_argv(lab.name, "a2", ["python3", "-c", SERVER6, str(port)]),
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            procs.append(p)
            assert p.stdout and p.stdout.readline().strip() == "ready"
        assert _eventually(lambda: _connects(lab, "a1", routed6["a2"], 8081))  # no policy
        for cmd in (["acl", "add", "red", "--priority", "100", "--action", "allow",
                     "--proto", "tcp", "--local", routed6["a2"], "--port", "8080"],
                    ["acl", "default", "red", "deny"]):
            out = weftctl(lab, *cmd)
            assert out.returncode == 0, out.stderr
            if cmd[1] == "add":
                rule = re.search(r"ACL rule (\d+)", out.stdout).group(1)   # type: ignore[union-attr]
        C.wait_converged(lab)
        for node in ("a1", "a4"):
            node_run(lab.name, node, ["ip", "-6", "neigh", "flush", "dev", "eth0"])
        a2v4 = _addr(lab, "host2", "a2", "IPAddress")
        got = {src: (_eventually(lambda src=src: _connects(lab, src, routed6["a2"], 8080)),
                     _connects(lab, src, routed6["a2"], 8081),
                     reaches(lab.name, src, routed6["a2"], tries=2),
                     _connects(lab, src, a2v4, 8080))
               for src in ("a1", "a4")}
        print(f"\ndefault-deny + tcp/8080 to a2 (v6): (8080, 8081, ping6, IPv4 8080) {got}")
        assert got == {"a1": (True, False, False, False), "a4": (True, False, False, False)}
        for cmd in (["acl", "default", "red", "allow"], ["acl", "del", "red", rule]):
            assert weftctl(lab, *cmd).returncode == 0
        rule = None
        C.wait_converged(lab)
        assert _eventually(lambda: _connects(lab, "a1", routed6["a2"], 8081))
    finally:
        if rule is not None:
            weftctl(lab, "acl", "default", "red", "allow")
            weftctl(lab, "acl", "del", "red", rule)
        for p in procs:
            p.kill()
            p.wait()


# --- a network whose IPv6 gateway is not ::1 (schema 12, `--gateway6`) ---------------------
@pytest.fixture(scope="module")
def custom6(lab, routed6) -> Iterator[dict[str, str]]:
    """red6c (tenant red, fd00:8::/64) made with `weftctl network create --gateway6
    fd00:8::fe`, container a5 on host1; name -> IPv6 address (the others' too)."""
    net, tenant, subnet, subnet6 = CUSTOM
    out = weftctl(lab, "network", "create", net, "--tenant", tenant, "--subnet", subnet,
                  "--subnet6", subnet6, "--gateway6", CUSTOM_GW6)
    assert out.returncode == 0 and f"gateway6 {CUSTOM_GW6}" in out.stdout, out
    C.wait_docker_networks(lab, {net}, timeout=SYNC_S)
    try:
        start(lab, "host1", "a5", network=net)
        addrs = {**routed6, "a5": _addr(lab, "host1", "a5")}
        C.wait_converged(lab)
        yield addrs
    finally:
        remove(lab, "host1", "a5")


def test_a_network_whose_ipv6_gateway_is_not_the_first_address(lab, custom6):
    """a5's IPv6 default route is red6c's stored gateway6 (the plugin's Join), which
    answers ND (the gateway MAC, router flag) and ping6; a5 <-> a4 (red6b, host2) is
    routed through it, each echo reply with hop limit 63; fd00:8::1, which nothing holds
    now, answers nothing."""
    routes = node_run(lab.name, "a5", ["ip", "-6", "route", "show", "default"]).stdout
    assert routes.startswith(f"default via {CUSTOM_GW6} "), routes
    assert ping(lab.name, "a5", CUSTOM_GW6, count=2).received == 2
    neigh = node_run(lab.name, "a5", ["ip", "-6", "neigh", "show", CUSTOM_GW6]).stdout
    ttls = _ping6_ttls(lab, "a5", custom6["a4"])
    back = _ping6_ttls(lab, "a4", custom6["a5"])
    print(f"\na5 -> a4 via {CUSTOM_GW6}: hop limits {ttls}, a4 -> a5 {back}; "
          f"a5's neighbour {neigh.strip()}")
    assert " lladdr 0a:77:66:" in neigh and "router" in neigh, neigh
    assert len(ttls) >= 2 and set(ttls) == {63}, ttls
    assert len(back) >= 2 and set(back) == {63}, back
    assert ping(lab.name, "a5", "fd00:8::1", count=2).received == 0
