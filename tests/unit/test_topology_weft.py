"""Lab topologies with the weft Docker plugin: `attach: weft` containers and `plugin:`."""
from __future__ import annotations

from pathlib import Path

import pytest

from weft_lab.topology import TopologyError, load, parse

ROOT = Path(__file__).resolve().parents[2]


def topo(container: str, extra: str = "", subnet: str = "10.10.0.0/24") -> str:
    return f"""name: t
{extra}
tenants:
  - {{name: red, subnet: {subnet}}}
hosts:
  - name: host1
    containers:
      - {container}
"""


def test_the_shipped_plugin_topology():
    t = load(ROOT / "topologies" / "docker-plugin.yaml")
    assert t.plugin and t.docker
    weft = [c for c in t.containers if c.attach == "weft"]
    assert {(c.name, c.tenant) for c in weft} == {("red1", "red"), ("blue1", "blue"),
                                                  ("red2", "red"), ("blue2", "blue")}
    assert t.addr("red1") == t.addr("blue1")


def test_weft_containers_turn_the_plugin_on():
    assert parse(topo("{name: r1, attach: weft, tenant: red, ip: 10.10.0.5/24}")).plugin
    assert not parse(topo("{name: d1}")).plugin
    assert parse(topo("{name: d1}", "plugin: true")).plugin


@pytest.mark.parametrize("container,extra,subnet,says", [
    ("{name: r1, attach: weft, ip: 10.10.0.5/24}", "", "10.10.0.0/24", "needs a tenant"),
    ("{name: r1, attach: weft, tenant: red}", "", "10.10.0.0/24", "needs an ip"),
    ("{name: r1, attach: weft, tenant: red, ip: 10.20.0.5/24}", "", "10.10.0.0/24",
     "subnet 10.10.0.0/24"),
    ("{name: r1, attach: weft, tenant: red, ip: 10.10.0.5/16}", "", "10.10.0.0/24",
     "prefix length"),
    ("{name: r1, attach: weft, tenant: red, ip: 10.10.0.1/24}", "", "10.10.0.0/24",
     "gateway address"),
    ("{name: r1, attach: weft, tenant: red, ip: 10.10.0.5/24}", "plugin: false", "10.10.0.0/24",
     "need plugin: true"),
    ("{name: r1, attach: weft, tenant: red, ip: 10.10.0.5/24}", "docker: false",
     "10.10.0.0/24", "needs docker: true"),
    ("{name: d1}", "docker: false\nplugin: true", "10.10.0.0/24", "needs docker: true"),
])
def test_weft_container_mistakes_are_named(container, extra, subnet, says):
    with pytest.raises(TopologyError, match=says):
        parse(topo(container, extra, subnet))


def test_a_tenant_without_subnet_has_no_weft_network():
    text = """name: t
tenants:
  - {name: red}
hosts:
  - name: host1
    containers:
      - {name: r1, attach: weft, tenant: red, ip: 10.10.0.5/24}
"""
    with pytest.raises(TopologyError, match="needs a subnet"):
        parse(text)


def test_docker_hosts_may_join_later():
    """A Docker host with the plugin may join a running lab later (by registration):
    listed in no shared hosts.yaml, only in its own; its containers are the test's."""
    from cluster.hostsfile import parse as parse_hosts
    from weft_lab.lab import hosts_yaml
    t = load(ROOT / "topologies" / "ipam.yaml")
    assert t.docker and t.plugin
    assert [h.name for h in t.members] == ["host1", "host2", "host3"]
    shared = parse_hosts(hosts_yaml(t))
    assert shared.membership == "register"
    assert [h.name for h in shared.hosts] == ["host1", "host2", "host3"]
    own = parse_hosts(hosts_yaml(t, only="host4"))
    assert [h.name for h in own.hosts] == ["host4"] and own.apis == shared.apis
    with pytest.raises(TopologyError, match="its containers are the test's"):
        parse("name: t\nhosts:\n  - name: h1\n  - name: h2\n    join: later\n"
              "    containers:\n      - {name: d2}\n")
    with pytest.raises(TopologyError, match="needs agent: true"):
        parse("name: t\nagent: false\nhosts:\n  - name: h1\n    join: later\n")
