"""The Docker options the agent writes: right by construction (pure, no Docker needed)."""
from __future__ import annotations

import json

import pytest

from cluster.hostsfile import parse, tunnel_mtu
from ovs_agent import resolver
from ovs_agent.hostnet import docker_daemon_json, docker_options, subnet_env

DOC = """\
controller: {{openflow: "tcp:10.99.0.1:6653"}}
tunnel_type: {tunnel}
{cluster}hosts:
  - {{name: host1, underlay_ip: 192.168.50.10, docker_subnet: {s1}}}
  - {{name: host2, underlay_ip: 192.168.50.11, docker_subnet: 10.20.2.0/24}}
  - {{name: host3, underlay_ip: 192.168.50.12}}
"""


def cluster(tunnel: str = "vxlan", s1: str = "10.20.1.0/24",
            subnet: str | None = "10.20.0.0/16"):
    return parse(DOC.format(tunnel=tunnel, s1=s1,
                            cluster=f"cluster_subnet: {subnet}\n" if subnet else ""))


@pytest.mark.parametrize("tunnel, mtu", [("vxlan", 1450), ("gre", 1458)])
def test_bip_carries_the_cluster_prefix_not_the_hosts(tunnel, mtu):
    c = cluster(tunnel)
    assert tunnel_mtu(c) == mtu
    assert docker_options(c, c.host("host1"), tunnel_mtu(c)) == {
        "bip": "10.20.1.1/16", "fixed-cidr": "10.20.1.0/24", "mtu": mtu}


def test_a_host_without_docker_subnet_gets_only_the_mtu():
    c = cluster()
    assert docker_options(c, c.host("host3"), 1450) == {"mtu": 1450}


def test_daemon_json_and_subnet_env_say_the_same():
    c = cluster(s1="10.20.8.0/22")
    host = c.host("host1")
    conf = json.loads(docker_daemon_json(c, host, 1450))
    assert conf == {"bip": "10.20.8.1/16", "fixed-cidr": "10.20.8.0/22", "mtu": 1450,
                    "dns": [resolver.ADDRESS]}
    env = dict(line.split("=", 1) for line in subnet_env(c, host, 1450).splitlines())
    assert env["DOCKER_OPTS"] == ('"--bip=10.20.8.1/16 --fixed-cidr=10.20.8.0/22 --mtu=1450 '
                                  f'--dns={resolver.ADDRESS}"')
    assert env["WEFT_CLUSTER_SUBNET"] == "10.20.0.0/16" and env["WEFT_SUBNET"] == "10.20.8.0/22"


def test_every_containers_address_is_on_link_from_every_host():
    """The property the /16 bip buys: each host's docker0 network holds all hosts' ranges."""
    import ipaddress
    c = cluster()
    for h in c.hosts:
        opts = docker_options(c, h, 1450)
        if "bip" not in opts:
            continue
        on_link = ipaddress.ip_interface(str(opts["bip"])).network
        for other in c.hosts:
            if other.docker_subnet:
                assert ipaddress.ip_network(other.docker_subnet).subnet_of(on_link)
