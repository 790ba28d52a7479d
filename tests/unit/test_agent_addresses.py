"""What the agent tells the controller about containers' addresses (issue 25, item 0):
br0 ports with the address they were plugged with, docker0's containers from dockerd."""
from __future__ import annotations

import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from cluster.hostsfile import DOCKER_LINK_PORT
from ovs_agent import attach, dockerd
from ovs_agent.agent import Agent

# GET /networks/bridge of Docker 20.10-26 (trimmed to what is read)
BRIDGE = {
    "Name": "bridge", "Driver": "bridge",
    "Options": {"com.docker.network.bridge.name": "docker0",
                "com.docker.network.bridge.default_bridge": "true"},
    "Containers": {
        "b" * 64: {"Name": "d2", "EndpointID": "e2", "MacAddress": "02:42:AC:11:00:03",
                   "IPv4Address": "172.17.0.3/16", "IPv6Address": ""},
        "a" * 64: {"Name": "d1", "EndpointID": "e1", "MacAddress": "02:42:ac:11:00:02",
                   "IPv4Address": "172.17.0.2/16", "IPv6Address": ""},
    },
}


def test_docker0_containers_become_endpoints_behind_the_docker0_link():
    got = dockerd.docker0_endpoints(BRIDGE)
    assert got == [
        {"port": DOCKER_LINK_PORT, "tenant": "default", "mac": "02:42:ac:11:00:02",
         "container": "a" * 64, "ips": ["172.17.0.2"], "port_security": True},
        {"port": DOCKER_LINK_PORT, "tenant": "default", "mac": "02:42:ac:11:00:03",
         "container": "b" * 64, "ips": ["172.17.0.3"], "port_security": True},
    ]


@pytest.mark.parametrize("bad", [
    {"MacAddress": "", "IPv4Address": "172.17.0.4/16"},                 # no MAC yet
    {"MacAddress": "01:00:5e:00:00:01", "IPv4Address": "172.17.0.4/16"},  # multicast
    {"MacAddress": "02:42:ac:11:00:zz", "IPv4Address": "172.17.0.4/16"},
    "not an object",
])
def test_entries_without_a_usable_mac_are_left_out(bad):
    net = {**BRIDGE, "Containers": {"c" * 64: bad}}
    assert dockerd.docker0_endpoints(net) == []


def test_a_bad_address_leaves_the_mac_pinned_without_it():
    net = {**BRIDGE, "Containers": {"c" * 64: {"MacAddress": "02:42:ac:11:00:09",
                                               "IPv4Address": "no"}}}
    [ep] = dockerd.docker0_endpoints(net)
    assert ep["mac"] == "02:42:ac:11:00:09" and ep["ips"] == []


def test_a_bridge_network_elsewhere_than_docker0_or_no_answer_gives_nothing():
    other = {**BRIDGE, "Options": {"com.docker.network.bridge.name": "br-custom"}}
    assert dockerd.docker0_endpoints(other) == []
    assert dockerd.docker0_endpoints(None) == []        # 404: no bridge network


def test_only_unix_docker_hosts_are_taken():
    assert dockerd.socket_of("unix:///run/docker.sock") == "/run/docker.sock"
    with pytest.raises(ValueError, match="unix://"):
        dockerd.socket_of("tcp://10.0.0.1:2375")


def test_a_plugged_port_reports_its_addresses_and_port_security():
    ext = {attach.TENANT_KEY: "red", attach.MAC_KEY: "02:00:00:00:00:01",
           attach.CONTAINER_KEY: "ns1", attach.IPS_KEY: "10.0.0.1",
           attach.PORT_SECURITY_KEY: "on"}
    assert attach.attachment_of("wc1", ext) == {
        "port": "wc1", "tenant": "red", "mac": "02:00:00:00:00:01", "container": "ns1",
        "ips": ["10.0.0.1"], "port_security": True}
    off = attach.attachment_of("wc1", {**ext, attach.PORT_SECURITY_KEY: "off"})
    assert off["port_security"] is False


def test_a_port_plugged_before_addresses_were_recorded_reports_none():
    ext = {attach.TENANT_KEY: "red", attach.MAC_KEY: "02:00:00:00:00:01"}
    got = attach.attachment_of("wc1", ext)
    assert got["ips"] == [] and got["port_security"] is True


@pytest.mark.parametrize("value,want", [("10.0.0.5/24", "10.0.0.5"), ("10.0.0.5", "10.0.0.5")])
def test_attach_records_the_address_of_its_ip_option(value, want):
    assert attach.ip_address(value) == want


@pytest.mark.parametrize("value", ["10.0.0.300/24", "fd00::1/64", "host"])
def test_attach_refuses_what_is_not_an_ipv4_address(value):
    with pytest.raises(ValueError, match="IPv4"):
        attach.ip_address(value)


class _FakeDockerd(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """dockerd's API on a unix socket: GET /networks/bridge answers ``self.bridge``
    (None: 500, dockerd in trouble)."""
    daemon_threads = True
    bridge: dict | None = BRIDGE


def _dockerd(path: Path) -> _FakeDockerd:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            bridge = self.server.bridge            # type: ignore[attr-defined]
            ok = self.path == "/networks/bridge" and bridge is not None
            body = json.dumps(bridge if ok else {"message": "no"}).encode()
            self.send_response(200 if ok else 500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass
    server = _FakeDockerd(str(path), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_the_agent_reports_docker0_as_dockerd_has_it_and_keeps_it_while_dockerd_is_sick(
        tmp_path: Path):
    sock = tmp_path / "docker.sock"
    agent = Agent(Path("unused"), "h1", "unix:unused", docker_host=f"unix://{sock}")
    assert agent._docker0_containers() == []                 # no Docker on this host
    server = _dockerd(sock)
    try:
        got = agent._docker0_containers()
        assert [e["mac"] for e in got] == ["02:42:ac:11:00:02", "02:42:ac:11:00:03"]
        server.bridge = None                                 # dockerd answers 500
        assert agent._docker0_containers() == got            # the last list stays
        server.bridge = {**BRIDGE, "Containers": {}}
        assert agent._docker0_containers() == []
    finally:
        server.shutdown()
        server.server_close()
    assert Agent(Path("unused"), "h1", "unix:unused", docker_host=None)._docker0_containers() \
        == []
