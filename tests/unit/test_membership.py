"""The controller follows hosts.yaml edits and host registrations (leases) without restart."""
from __future__ import annotations

import logging
import os

import pytest

from controller.core import Core
from controller.store import Store
from cluster.hostsfile import HostsFileError, load, parse, with_hosts
from tests.conftest import api_client

HEAD = 'controller: {openflow: ["tcp:127.0.0.1:6653"]}\ncluster_subnet: 172.17.0.0/16\n'
TWO = HEAD + """hosts:
  - {name: h1, underlay_ip: 192.168.50.11, docker_subnet: 172.17.1.0/24}
  - {name: h2, underlay_ip: 192.168.50.12, docker_subnet: 172.17.2.0/24}
"""
REG = TWO.replace("hosts:", "membership: register\nhosts:")
H3 = {"name": "h3", "underlay_ip": "192.168.50.13", "docker_subnet": "172.17.3.0/24"}
TOKEN = "t"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path, text: str, clock: Clock | None = None):
    path = tmp_path / "hosts.yaml"
    path.write_text(text)
    core = Core(Store(tmp_path / "weft.db"), load(path))
    core.changes = 0

    def bump() -> None:
        core.changes += 1
    core.on_change = bump
    if clock is not None:
        core.members.clock = clock
        core.members.started = clock()
    core.watch_hosts(str(path))
    api = api_client(core, TOKEN)
    return path, core, api


def rewrite(path, text: str) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a visible change


def names(api) -> list[str]:
    return [h["name"] for h in api.get("/v1/hosts").json()]


def test_an_added_host_is_served_and_resynced_without_restart(tmp_path):
    path, core, api = make(tmp_path, TWO)
    assert names(api) == ["h1", "h2"] and not core.members.poll()   # unchanged: nothing
    rewrite(path, TWO + "  - {name: h3, underlay_ip: 192.168.50.13}\n")
    assert core.members.poll()
    assert names(api) == ["h1", "h2", "h3"] and core.changes == 1
    assert core.tunnels("h1") == {"h2": "vx-h2", "h3": "vx-h3"}
    rewrite(path, TWO)                                   # and it leaves again
    assert core.members.poll() and names(api) == ["h1", "h2"]
    assert core.tunnels("h1") == {"h2": "vx-h2"}


def test_a_bad_file_keeps_the_old_members_and_logs_file_and_line(tmp_path, caplog):
    path, core, api = make(tmp_path, TWO)
    rewrite(path, TWO + "  - {name: h3, underlay_ip: 192.168.50.300}\n")
    with caplog.at_level(logging.ERROR, "weft.membership"):
        assert not core.members.poll()
    assert names(api) == ["h1", "h2"] and core.changes == 0 and core.members.file_errors == 1
    assert f"{path}:6: hosts[2].underlay_ip: '192.168.50.300' is not an IPv4 address" in caplog.text
    assert "keeping the previous configuration" in caplog.text
    rewrite(path, TWO.replace("h2, underlay", "h2x, underlay"))   # a good one is taken again
    assert core.members.poll() and names(api) == ["h1", "h2x"]


def test_registration_is_refused_while_hosts_yaml_is_the_only_source(tmp_path):
    _, core, api = make(tmp_path, TWO)
    r = api.post("/v1/hosts/register", json=H3)
    assert r.status_code == 409 and "membership: register" in r.json()["error"]
    assert names(api) == ["h1", "h2"]


def test_a_registered_host_joins_renews_and_expires(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr("controller.store.sqlite.time.time", clock)   # the store's lease clock
    _, core, api = make(tmp_path, REG, clock)
    r = api.post("/v1/hosts/register", json={**H3, "ttl": 10})
    assert r.status_code == 200, r.text
    hosts = {h["name"]: h for h in api.get("/v1/hosts").json()}
    assert hosts["h3"]["source"] == "registered" and hosts["h1"]["source"] == "hosts.yaml"
    assert hosts["h3"]["lease_expires_in"] == 10
    assert core.tunnels("h1")["h3"] == "vx-h3" and core.changes == 1
    version = core.store.version
    clock.now += 8
    assert api.post("/v1/hosts/register", json={**H3, "ttl": 10}).status_code == 200
    assert core.changes == 1 and core.store.version == version  # a heartbeat is no change
    clock.now += 8
    assert not core.members.poll() and "h3" in names(api)   # renewed: still there
    clock.now += 3
    assert core.members.poll() and names(api) == ["h1", "h2"]   # no heartbeat for 10 s
    assert core.store.registered_hosts() == {} and "h3" not in core.tunnels("h1")


def test_registrations_obey_the_file_rules_and_the_file_wins(tmp_path):
    _, core, api = make(tmp_path, REG)
    for body, status, field in (
            ({**H3, "name": "h1"}, 409, "name"),                         # listed in the file
            ({**H3, "underlay_ip": "192.168.50.11"}, 409, "underlay_ip"),
            ({**H3, "docker_subnet": "172.17.2.0/25"}, 409, "docker_subnet"),
            ({**H3, "docker_subnet": "10.1.0.0/24"}, 422, "docker_subnet"),  # outside cluster
            ({**H3, "docker_subnet": "172.17.3.1/24"}, 422, "docker_subnet"),
            ({**H3, "underlay_ip": "127.0.0.1"}, 422, "underlay_ip"),
            ({**H3, "name": "H3"}, 422, "name"),
            ({**H3, "ttl": 1}, 422, "ttl")):
        r = api.post("/v1/hosts/register", json=body)
        assert (r.status_code, r.json()["field"]) == (status, field), (body, r.text)
    assert names(api) == ["h1", "h2"] and core.store.registered_hosts() == {}
    assert api.post("/v1/hosts/register", json=H3).status_code == 200
    r = api.post("/v1/hosts/register", json={**H3, "name": "h4"})
    assert r.status_code == 409 and "'h3'" in r.json()["error"]    # h3's address is taken


def test_a_restarted_controller_starts_with_the_registered_hosts(tmp_path):
    """Registrations live in the store: the first sync after a restart already has them."""
    path, core, api = make(tmp_path, REG)
    api.post("/v1/hosts/register", json={**H3, "ttl": 30})
    again = Core(Store(tmp_path / "weft.db"), load(path))
    assert "h3" in {h.name for h in again.cluster.hosts}
    assert again.members.registered() == {"h3": None}      # renewed before this one started


def test_with_hosts_names_the_registration_not_a_file_line():
    c = parse(REG, "hosts.yaml")
    assert [h.name for h in with_hosts(c, [H3]).hosts] == ["h1", "h2", "h3"]
    with pytest.raises(HostsFileError) as e:
        with_hosts(c, [{**H3, "underlay_ip": "192.168.50.12"}])
    assert str(e.value) == ("registration 'h3': underlay_ip: duplicate underlay_ip "
                            "'192.168.50.12', also host 'h2'")
    with pytest.raises(HostsFileError, match="unknown key 'uplink'"):
        with_hosts(c, [{**H3, "uplink": "eth1"}])
    assert parse(HEAD + "membership: register\nhosts: []\n").hosts == ()


def test_an_agent_adds_the_controllers_members_to_its_file_and_keeps_its_own_entry(tmp_path):
    """`membership: register`: peers from GET /v1/hosts, checked by the file's rules; the
    file's own entries win and a list that does not fit is refused whole."""
    from pathlib import Path

    from ovs_agent.agent import Agent
    agent = Agent(Path("unused"), "h1", "unix:unused")
    mine = parse(REG, "hosts.yaml")
    listed = [{"name": "h1", "underlay_ip": "192.168.50.99"},     # the file wins for h1
              {**H3, "tunnel_type": "vxlan", "datapath_type": "system", "dpid": "x"}]
    merged = agent._with_remote(mine, listed)
    assert merged is not None and [h.name for h in merged.hosts] == ["h1", "h2", "h3"]
    assert merged.host("h1").underlay_ip == "192.168.50.11"
    clash = [{**H3, "underlay_ip": "192.168.50.12"}]
    assert agent._with_remote(mine, clash) is None
    assert agent._with_remote(parse(TWO), listed).hosts == parse(TWO).hosts   # file mode


def test_switch_views_of_a_host_that_just_left_still_render(tmp_path):
    """Between the member change and the engine's next model a view names a gone host."""
    from controller.sync import SwitchView
    _, core, _ = make(tmp_path, TWO)
    view = SwitchView(0x5746_0000_0000_0003, "h3")
    assert view.summary(core.cluster)["tunnels"] == {}
