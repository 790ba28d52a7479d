"""Lab topologies with external nodes, tenants' networks and containers on them."""
from __future__ import annotations

from pathlib import Path

import pytest

from weft_lab.cluster import network_body, weft_network_args
from weft_lab.topology import DEFAULT_SERVE, External, Network, TopologyError, load, parse

ROOT = Path(__file__).resolve().parents[2]


def topo(external: str = "", tenants: str = "", containers: str = "{name: d1}") -> str:
    return f"""name: t
tenants: {tenants or "[]"}
hosts:
  - name: host1
    containers:
      - {containers}
{external}"""


def test_the_shipped_routing_topology():
    t = load(ROOT / "topologies" / "routing.yaml")
    assert t.plugin and t.docker and t.tunnel_type == "vxlan"
    assert [(x.name, [n.name for n in x.networks], x.subnet) for x in t.tenants] == \
        [("red", ["red-web", "red-db"], None), ("blue", ["blue-web", "blue-db"], None)]
    assert t.external == (External("ext", "203.0.113.10/24", (*DEFAULT_SERVE, "dns:53")),)
    assert t.wan_ip == "192.168.50.254" and t.external[0].router_ip == "203.0.113.1"
    assert t.external_addr("ext") == "203.0.113.10"
    by_name = {c.name: c for c in t.containers}
    assert (by_name["red-db2"].tenant, by_name["red-db2"].segment) == ("red", "red-db")
    assert t.addr("red-web1") == t.addr("blue-web1")
    assert len(t.containers) == 8
    gre = t.with_tunnel_type("gre")
    assert gre.tunnel_type == "gre" and gre.hosts == t.hosts and t.tunnel_type == "vxlan"
    with pytest.raises(TopologyError, match="not one of"):
        t.with_tunnel_type("geneve")


def test_external_defaults_and_serve():
    t = parse(topo("external: [{name: ext, ip: 203.0.113.10/24}, "
                   "{name: lan, ip: 198.51.100.7/25, serve: ['http:80', 'udp:53']}]"))
    assert t.external == (External("ext", "203.0.113.10/24", DEFAULT_SERVE),
                          External("lan", "198.51.100.7/25", ("http:80", "udp:53")))
    assert [e.router_ip for e in t.external] == ["203.0.113.1", "198.51.100.1"]
    assert parse(topo()).external == ()


@pytest.mark.parametrize("external,says", [
    ("[{name: ext, ip: 203.0.113.1/24}]", "other than its first"),
    ("[{name: ext, ip: 203.0.113.0/24}]", "must be a host address"),
    ("[{name: ext, ip: 203.0.113.10}]", "needs a prefix length"),
    ("[{name: ext, ip: 192.168.50.99/24}]", "overlaps the underlay"),
    ("[{name: ext, ip: 172.17.9.9/24}]", "overlaps the cluster"),
    ("[{name: ext, ip: 10.99.0.99/24}]", "overlaps the mgmt"),
    ("[{name: ext, ip: 203.0.113.10/24, serve: ['ssh:22']}]", "KIND:PORT"),
    ("[{name: ext, ip: 203.0.113.10/24, serve: ['tcp:0']}]", "KIND:PORT"),
    ("[{name: ext, ip: 203.0.113.10/24, serve: ['tcp:80', 'http:80']}]", "served twice"),
    ("[{name: ext, ip: 203.0.113.10/24, serve: ['udp:53', 'dns:53']}]", "served twice"),
    ("[{name: a, ip: 203.0.113.10/24}, {name: b, ip: 203.0.113.10/24}]", "another external"),
    ("[{name: a, ip: 203.0.113.10/24}, {name: b, ip: 203.0.113.130/25}]", "overlaps another"),
    ("[{name: wan, ip: 203.0.113.10/24}]", "reserved"),
    ("[{name: d1, ip: 203.0.113.10/24}]", "unique"),
    ("[{name: ext, ip: 203.0.113.10/24, port: 1}]", "unknown key"),
])
def test_external_mistakes_are_named(external, says):
    with pytest.raises(TopologyError, match=says):
        parse(topo(f"external: {external}"))


NETS = ("[{name: red, networks: [{name: red-web, subnet: 10.10.1.0/24}, "
        "{name: red-db, subnet: 10.10.2.0/24, gateway: 10.10.2.254, egress: false}]}]")


def test_networks_and_containers_on_them():
    t = parse(topo(tenants=NETS, containers="{name: w, attach: weft, network: red-db, "
                   "ip: 10.10.2.5/24}"))
    red = t.tenant("red")
    assert red.networks == (Network("red-web", "10.10.1.0/24"),
                            Network("red-db", "10.10.2.0/24", "10.10.2.254", False))
    [w] = t.containers
    assert (w.tenant, w.network, w.segment) == ("red", "red-db", "red-db")
    assert network_body(red, red.networks[0]) == \
        {"name": "red-web", "tenant": "red", "subnet": "10.10.1.0/24"}
    assert network_body(red, red.networks[1]) == \
        {"name": "red-db", "tenant": "red", "subnet": "10.10.2.0/24", "gateway": "10.10.2.254",
         "egress": False}
    assert weft_network_args(red.networks[1])[-5:] == \
        ["--subnet", "10.10.2.0/24", "--gateway", "10.10.2.254", "red-db"]
    assert "tenant=red-db" in weft_network_args(red.networks[1])
    br0 = parse(topo(tenants=NETS, containers="{name: b, attach: br0, tenant: red, "
                     "network: red-web, ip: 10.10.1.9/24}")).containers[0]
    assert br0.segment == "red-web"


@pytest.mark.parametrize("tenants,container,says", [
    ("[{name: red, networks: [{name: red, subnet: 10.0.0.0/24}]}]", "{name: d1}",
     "tenant's own network"),
    ("[{name: red, networks: [{name: blue, subnet: 10.0.0.0/24}]}, {name: blue}]",
     "{name: d1}", "names a network"),
    ("[{name: red, networks: [{name: x, subnet: 10.0.0.0/24}]}, "
     "{name: blue, networks: [{name: x, subnet: 10.1.0.0/24}]}]", "{name: d1}",
     "already a tenant or network"),
    ("[{name: red, subnet: 10.0.0.0/16, networks: [{name: x, subnet: 10.0.1.0/24}]}]",
     "{name: d1}", "overlaps another network"),
    ("[{name: red, networks: [{name: x, subnet: 10.0.0.0/31}]}]", "{name: d1}", "too small"),
    ("[{name: red, networks: [{name: x, subnet: 10.0.0.0/24, gateway: 10.0.0.255}]}]",
     "{name: d1}", "not a host address"),
    ("[{name: red, networks: [{name: x, subnet: 10.0.0.0/24, gateway: 10.0.1.1}]}]",
     "{name: d1}", "not a host address"),
    ("[{name: red, networks: [{name: x}]}]", "{name: d1}", "missing required"),
    (NETS, "{name: w, attach: weft, network: nope, ip: 10.10.1.5/24}", "unknown network"),
    (NETS, "{name: w, network: red-web, ip: 10.10.1.5/24}", "attach: br0 or weft"),
    (NETS[:-1] + ", {name: blue}]",
     "{name: w, attach: weft, network: red-web, tenant: blue, ip: 10.10.1.5/24}",
     "belongs to tenant red"),
    (NETS, "{name: w, attach: weft, network: red-web, ip: 10.10.2.5/24}",
     "network red-web's subnet"),
    (NETS, "{name: w, attach: weft, network: red-db, ip: 10.10.2.254/24}", "gateway address"),
    (NETS, "{name: w, attach: weft, network: red-db, ip: 10.10.2.1/24}", "gateway address"),
    (NETS, "{name: w, attach: br0, network: red-db, ip: 10.10.1.5/24}", "subnet"),
])
def test_network_mistakes_are_named(tenants, container, says):
    with pytest.raises(TopologyError, match=says):
        parse(topo(tenants=tenants, containers=container))
