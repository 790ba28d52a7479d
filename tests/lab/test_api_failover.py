"""Every controller API URL is used: with the first controller dead, a new host still joins.

hosts.yaml lists several `controller.api` URLs when several controllers share a store
(etcd).  Reports always failed over; registration and the member list once used only the
first URL, so losing the first controller stopped hosts from joining.  Lab: the HA
cluster (3 weft-manager instances, 3 etcd members) with `membership: register`, plus
host3, which joins by registration only after the first controller is killed.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from cluster.hostsfile import tunnel_port_name
from tests.conftest import converged_lab, lab_name, wait_for
from weft_lab import cluster as C
from weft_lab import ha
from weft_lab import lab as L
from weft_lab.topology import Topology, parse
from weft_lab.traffic import reaches


def topology(name: str) -> Topology:
    doc = yaml.safe_load(Path("topologies/ha.yaml").read_text())
    doc["name"] = name
    doc["hosts"].append({"name": "host3", "join": "later", "containers": [{"name": "d3"}]})
    return parse(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (run ./dev.sh test)")
    with converged_lab(topology(lab_name("af"))) as t:
        ha.wait_master(t)
        yield t


def members(lab, instance: int) -> set[str]:
    with C.api(lab.name, timeout=3, instance=instance) as c:
        return {h["name"] for h in c.get("/v1/hosts").json()}


def test_a_host_joins_while_the_first_controller_is_down(lab):
    ha.kill(lab.name, "controller-1")               # the first URL of controller.api
    survivor = ha.wait_master(lab, timeout=10, exclude=(1,))
    d = L.host_dir(lab.name, "host3")
    (d / "hosts.yaml").write_text(L.hosts_yaml(lab, only="host3"))
    L.start_agent(lab.name, "host3", register=True)
    wait_for(lambda: "host3" in members(lab, survivor), timeout=30, what="host3 registered")
    # the other hosts learn it from the member list (through a live instance) and
    # build tunnels to it; it learns them; docker0 containers reach each other
    for h, peers in (("host1", ("host2", "host3")), ("host3", ("host1", "host2"))):
        wait_for(lambda h=h, peers=peers: {tunnel_port_name("vxlan", p) for p in peers}
                 <= set(L.vsctl(lab.name, h, "list-ports", "br0").split()),
                 timeout=30, what=f"{h}'s tunnels to {peers}")
    assert wait_for(lambda: reaches(lab.name, "d1", lab.addr("d3")), timeout=30,
                    what="d1 -> d3")
    assert reaches(lab.name, "d3", lab.addr("d2"))
    log = (d / "ovs-agent.log").read_text(errors="replace")
    line = next(x for x in log.splitlines() if "registered with the controller as host3" in x)
    first = f"http://{lab.controller_ips()[0]}:8080"
    assert line.rstrip().endswith(":8080") and not line.rstrip().endswith(first), line
