"""Members and faults in one lab (issue 15): a host joins by registration and leaves when
its lease ends, the controller follows hosts.yaml edits, agents re-report to a controller
restarted on an empty store, and an agent's kill -9 costs no packet.

One lab for the module, tests in order (each leaves the lab as the next expects it):
h1 and h2 are listed in hosts.yaml (`membership: register`), h3 joins by registration.
"""
from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
import yaml

from cluster.hostsfile import tunnel_port_name
from tests.conftest import converged_lab, lab_name, wait_for
from weft_lab import cluster as C
from weft_lab import faults
from weft_lab import lab as L
from weft_lab import nodes as N
from weft_lab.shell import netns_pids
from weft_lab.topology import Topology, parse
from weft_lab.traffic import ping, reaches


def topology(name: str) -> Topology:
    """faults' lab (r1 on h1, r2 on h2, tenant red) plus c1 on h1's docker0 and h3, which
    joins by registration, with c3 on its docker0."""
    doc = faults.topology(name)
    doc["hosts"][0]["containers"].insert(0, {"name": "c1"})
    doc["hosts"].append({"name": "h3", "join": "register", "containers": [{"name": "c3"}]})
    return parse(yaml.safe_dump(doc, sort_keys=False))


@pytest.fixture(scope="module")
def lab():
    if os.geteuid() != 0:
        pytest.fail("lab tests need root (run ./dev.sh test)")
    with converged_lab(topology(lab_name("mb"))) as t:
        yield t


def hosts(t) -> dict[str, dict]:
    with C.api(t.name) as c:
        return {h["name"]: h for h in c.get("/v1/hosts").json()}


def br0_ports(t, host: str) -> set[str]:
    return set(N.vsctl(t.name, host, "list-ports", "br0").split())


def agent_pids(t) -> dict[str, int]:
    return {h.name: faults.agent_pid(t.name, h.name) for h in t.hosts}


def controller_pid(t) -> int:
    for pid in netns_pids(N.ns_name(t.name, N.CTL)):
        if b"controller.manager" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise AssertionError("weft-manager is not running")


def log(t, name: str) -> str:
    return (N.state_dir(t.name) / name).read_text(errors="replace")


def test_a_host_joins_by_registration(lab):
    """h3 is in no hosts.yaml: its agent registers, every host builds tunnels to it and
    containers on its docker0 reach the others'."""
    h3 = wait_for(lambda: hosts(lab).get("h3"), what="h3 registered")
    assert h3["source"] == "registered" and h3["lease_expires_in"] <= L.LAB_LEASE_TTL
    assert hosts(lab)["h1"]["source"] == "hosts.yaml"
    assert "h3" not in (N.state_dir(lab.name) / "hosts.yaml").read_text()
    for h, peers in (("h1", ("h2", "h3")), ("h2", ("h1", "h3")), ("h3", ("h1", "h2"))):
        assert {tunnel_port_name("vxlan", p) for p in peers} <= br0_ports(lab, h), h
    assert reaches(lab.name, "c1", lab.addr("c3")) and reaches(lab.name, "c3", lab.addr("c1"))
    assert "registered with the controller as h3" in \
        (N.host_dir(lab.name, "h3") / "ovs-agent.log").read_text()


def test_agent_kill9_loses_no_packet(lab):
    """The agent is not on the forwarding path: kill -9 and a restart 2 s later cost 0
    packets of a 100/s ping between containers on two hosts (contract)."""
    out = faults.ping_through(lab.name, "r1", lab.addr("r2"), faults.kill_agent(lab.name, "h1"),
                              "agent kill -9", seconds=10)
    print(out)
    assert out.sent == 1000 and out.lost == 0, out


def test_agents_re_report_to_a_controller_restarted_on_an_empty_store(lab):
    """Issue 15: the controller stopped, its database deleted, started again on an empty
    store, the tenant created again: the agents report their containers again by
    themselves (new controller instance and store epoch) and traffic comes back, with no
    agent restarted."""
    assert reaches(lab.name, "r1", lab.addr("r2"))
    agents = agent_pids(lab)
    sd = N.state_dir(lab.name)
    os.kill(controller_pid(lab), signal.SIGKILL)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{sd}/weft.db{suffix}").unlink(missing_ok=True)
    # What a user does who makes the new, empty store the truth: weft-manager --adopt (the
    # switches carry flows stamped by the lost store: without it they are left untouched,
    # docs/controller.md), which deletes the tenant's flows, then creates the tenant again.
    # Traffic comes back only if the agents report their containers to the new store.
    from controller import config
    C.start_controller(lab, *(["--adopt"] if "adopt" in config.CONF else []))
    C.wait_api(lab.name)
    with C.api(lab.name) as c:
        assert c.get("/v1/ports").json() == []              # the store is empty
        r = c.post("/v1/tenants", json={"name": "red", "subnet": "10.100.0.0/24"})
        assert r.status_code == 201, r.text
        wait_for(lambda: sorted((p["host"], p["tenant"], p["source"])
                                for p in c.get("/v1/ports").json()) ==
                 [("h1", "red", "agent"), ("h2", "red", "agent")], what="both agents' bindings back")
    wait_for(lambda: reaches(lab.name, "r1", lab.addr("r2")), what="r1 -> r2 again")
    assert agent_pids(lab) == agents, "no agent may be restarted"
    for h in ("h1", "h2"):
        text = (N.host_dir(lab.name, h) / "ovs-agent.log").read_text()
        assert re.search(r"reported 1 attachment\(s\) to the controller \((the controller's "
                         r"store changed|retrying a failed report)", text), h


def test_a_registered_host_leaves_when_its_agent_dies(lab):
    """kill -9 of h3's agent: no more heartbeats, its lease ends (6 s in the lab) and the
    other hosts remove their tunnels to it; the controller lists it no more."""
    wait_for(lambda: "h3" in hosts(lab), what="h3 registered again after the new store")
    os.kill(faults.agent_pid(lab.name, "h3"), signal.SIGKILL)
    t0 = time.monotonic()
    wait_for(lambda: "h3" not in hosts(lab), timeout=L.LAB_LEASE_TTL + 10, what="lease end")
    gone = time.monotonic() - t0
    for h in ("h1", "h2"):
        wait_for(lambda h=h: "vx-h3" not in br0_ports(lab, h), timeout=10,
                 what=f"vx-h3 removed on {h}")
    print(f"h3 left the member list {gone:.1f} s after its agent was killed "
          f"(lease {L.LAB_LEASE_TTL:g} s)")
    assert gone >= L.LAB_LEASE_TTL - 3          # not before its lease could have ended
    assert "h3: registration expired" in log(lab, "weft-manager.log")
    assert ping(lab.name, "r1", lab.addr("r2"), count=3).received == 3   # others unaffected


def test_the_controller_follows_hosts_yaml_edits(lab):
    """A host added to hosts.yaml is served by GET /v1/hosts within seconds, without a
    restart, and carries traffic; a broken file is refused with file:line and changes
    nothing.

    h3 left by lease expiry (the test before): h1 and h2 deleted their tunnels to it and
    now re-create them under new port numbers, while h1 still holds c3's MAC learned on
    the old number (c1 still has c3 in its ARP cache, so it sends unicast). The
    controller forgets what was learned on a port that went away (controller.sync):
    c1 reaches c3 at once, not after c1's ARP entry runs out (10 s or more before)."""
    path = N.state_dir(lab.name) / "hosts.yaml"
    good = path.read_text()
    h3 = lab.host("h3")
    path.write_text(good + f"  - name: h3\n    underlay_ip: {h3.underlay_ip}\n"
                           f"    docker_subnet: {h3.docker_subnet}\n")
    t0 = time.monotonic()
    wait_for(lambda: hosts(lab).get("h3", {}).get("source") == "hosts.yaml", timeout=10,
             what="h3 in GET /v1/hosts")
    print(f"GET /v1/hosts listed the new host {time.monotonic() - t0:.1f} s after the edit")
    L.start_agent(lab.name, "h3")                      # now an ordinary, listed host
    wait_for(lambda: "vx-h3" in br0_ports(lab, "h1") and "vx-h1" in br0_ports(lab, "h3"),
             what="tunnels h1 <-> h3")
    wait_for(lambda: reaches(lab.name, "c1", lab.addr("c3")), timeout=5,
             what="c1 -> c3 over the file")
    print("\n".join(line for line in log(lab, "weft-manager.log").splitlines()
                    if "forgetting the MACs" in line))

    broken = path.read_text().replace(f"underlay_ip: {h3.underlay_ip}", "underlay_ip: 10.0.0.300")
    path.write_text(broken)
    line = broken.splitlines().index("    underlay_ip: 10.0.0.300") + 1
    wait_for(lambda: f"{path}:{line}: hosts[2].underlay_ip: '10.0.0.300' is not an IPv4 "
                     "address" in log(lab, "weft-manager.log"), timeout=10, what="error logged")
    assert set(hosts(lab)) == {"h1", "h2", "h3"}       # the last good file stays in force
    assert reaches(lab.name, "c1", lab.addr("c3"))
    path.write_text(good)                               # h3 unlisted again (tidy for down)
