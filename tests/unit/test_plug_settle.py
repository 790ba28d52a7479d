"""The Docker plugin's Join returns once OVSDB has the container's port; vswitchd
opening an AF_XDP port (and the AF_PACKET fallback) runs beside Docker's work
(`attach.settle_afxdp`, `pluginserver.OvsDataplane.plug`)."""
from __future__ import annotations

import threading

import pytest

from cluster.hostsfile import parse
from ovs_agent import attach, hostnet, pluginserver

DOC = """\
controller: {{openflow: "tcp:10.99.0.1:6653"}}
datapath_type: netdev
port_type: {port_type}
hosts:
  - {{name: host1, underlay_ip: 192.168.50.10}}
  - {{name: host2, underlay_ip: 192.168.50.11}}
"""


class _Cmd:
    def __init__(self, result=None, log=None, what=None) -> None:
        self.result, self.log, self.what = result, log, what

    def execute(self, check_error: bool = False):
        if self.log is not None:
            self.log.append(self.what)
        return self.result


class FakeApi:
    """An Interface row as vswitchd leaves it: `ofport` and `error` after its try."""

    def __init__(self, ofport, error, port_type: str = "afxdp-nonpmd") -> None:
        self.row = {"name": "wdabc", "type": port_type, "ofport": ofport, "error": error}
        self.sets: list = []

    def db_find(self, table, *conds, columns=None):
        return _Cmd([self.row])

    def db_list(self, table, columns=None):
        return _Cmd([self.row])

    def db_set(self, table, name, *values):
        return _Cmd(None, self.sets, (table, name, values))


def test_settle_keeps_an_opened_afxdp_port():
    api = FakeApi(ofport=7, error=[])
    assert attach.settle_afxdp(api, "wdabc", "afxdp-nonpmd") is False
    assert api.sets == []


def test_settle_falls_back_to_af_packet_when_refused():
    api = FakeApi(ofport=-1, error=["could not open network device wdabc (Operation "
                                    "not supported)"])
    assert attach.settle_afxdp(api, "wdabc", "afxdp-nonpmd") is True
    assert api.sets == [("Interface", "wdabc", (("type", ""),))]


def test_settle_has_nothing_to_do_for_af_packet():
    api = FakeApi(ofport=[], error=[], port_type="")
    assert attach.settle_afxdp(api, "wdabc", "") is False
    assert api.sets == []


@pytest.fixture
def no_host(monkeypatch):
    monkeypatch.setattr(hostnet, "link_exists", lambda name: False)
    monkeypatch.setattr(hostnet, "ensure_veth", lambda *a, **k: None)
    monkeypatch.setattr(hostnet, "ip", lambda *a, **k: "")
    added: list[dict] = []
    monkeypatch.setattr(pluginserver.attach, "add_container_port",
                        lambda *a, **k: added.append({"args": a, **k}))
    return added


def test_join_does_not_wait_for_vswitchd_to_open_an_afxdp_port(no_host, monkeypatch):
    release, settled = threading.Event(), threading.Event()

    def slow_settle(api, port, port_type):
        release.wait(5)                  # vswitchd loading the XDP program
        settled.set()
        return False
    monkeypatch.setattr(pluginserver.attach, "settle_afxdp", slow_settle)
    plane = pluginserver.OvsDataplane(None, parse(DOC.format(port_type="auto")), "host1", 1450)
    plane.plug("wdabc", "wpabc", "02:00:00:00:00:01", "red", "sandbox", {}, ("10.0.0.5",))
    assert no_host[0]["settle"] is False         # the port is in OVSDB, not yet opened
    assert not settled.is_set()                  # plug returned while the open goes on
    release.set()
    assert settled.wait(5)


def test_af_packet_ports_have_nothing_to_settle(no_host, monkeypatch):
    calls: list = []
    monkeypatch.setattr(pluginserver.attach, "settle_afxdp", lambda *a: calls.append(a))
    plane = pluginserver.OvsDataplane(None, parse(DOC.format(port_type="afpacket")),
                                      "host1", 1450)
    plane.plug("wdabc", "wpabc", "02:00:00:00:00:01", "red", "sandbox", {})
    assert no_host[0]["settle"] is False and calls == []
