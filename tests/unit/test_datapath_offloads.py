"""Per-datapath host behaviour: TX checksum offload is turned off only for the
userspace datapath (netdev), never for the kernel datapath (system).

The commands the agent and the plugin would run are recorded instead of run
(the real behaviour on the kernel datapath is checked in tests/vm/)."""
from __future__ import annotations

import subprocess

import pytest

from cluster.hostsfile import parse
from ovs_agent import hostnet, pluginserver

DOC = """\
controller: {{openflow: "tcp:10.99.0.1:6653"}}
datapath_type: {dp}
hosts:
  - {{name: host1, underlay_ip: 192.168.50.10}}
  - {{name: host2, underlay_ip: 192.168.50.11}}
"""


class Recorder:
    """Stands in for subprocess.run: records argv, answers `ethtool -k` as told."""

    def __init__(self, tx: str = "on") -> None:
        self.calls: list[list[str]] = []
        self.tx = tx

    def __call__(self, argv, **_):
        self.calls.append(list(argv))
        out = f"tx-checksumming: {self.tx}\n" if "-k" in argv else ""
        return subprocess.CompletedProcess(argv, 0, out, "")

    def ethtool_sets(self) -> list[list[str]]:
        return [c for c in self.calls if "ethtool" in c and "-K" in c]


@pytest.fixture
def rec(monkeypatch):
    r = Recorder()
    monkeypatch.setattr(hostnet.subprocess, "run", r)
    monkeypatch.setattr(hostnet, "link_exists", lambda name: False)
    monkeypatch.setattr(hostnet, "ip", lambda *a, **k: "")
    return r


def test_only_the_userspace_datapath_needs_tx_checksum_off():
    assert hostnet.needs_tx_checksum_off("netdev") is True
    assert hostnet.needs_tx_checksum_off("system") is False


@pytest.mark.parametrize("dp, turned_off", [("netdev", True), ("system", False)])
def test_plugin_veths_follow_the_hosts_datapath(rec, monkeypatch, dp, turned_off):
    monkeypatch.setattr(pluginserver.attach, "add_container_port", lambda *a, **k: None)
    cluster = parse(DOC.format(dp=dp))
    plane = pluginserver.OvsDataplane(None, cluster, "host1", 1450)
    plane.plug("wdabc", "wpabc", "02:00:00:00:00:01", "red", "sandbox", {})
    sets = rec.ethtool_sets()
    if turned_off:
        assert sorted(c[-3] for c in sets) == ["wdabc", "wpabc"]
        assert all(c[-2:] == ["tx", "off"] for c in sets)
    else:
        assert sets == []


@pytest.mark.parametrize("dp, tx_now, expect", [
    ("system", "off", ["on"]),      # a link left from the netdev datapath gets offload back
    ("system", "on", []),
    ("netdev", "on", ["off"]),
    ("netdev", "off", []),
])
def test_docker_link_offload_follows_the_datapath(rec, monkeypatch, dp, tx_now, expect):
    rec.tx = tx_now
    monkeypatch.setattr(hostnet, "link_exists", lambda name: True)    # link already there
    monkeypatch.setattr(hostnet, "master_of", lambda dev: "docker0")
    monkeypatch.setattr(hostnet, "_link_info", lambda dev: {"mtu": 1450, "flags": ["UP"]})
    changed = hostnet.ensure_docker_link(1450, tx_off=hostnet.needs_tx_checksum_off(dp))
    sets = rec.ethtool_sets()
    assert [c[-1] for c in sets] == expect * 2          # both ends of the link
    assert changed is bool(expect)


def test_kernel_datapath_queues_use_ovs_numbering_on_the_nic():
    """set_queue N becomes skb priority 1:(N+1) on the kernel datapath: the HTB classes
    on the underlay NIC must carry exactly those ids, queue 0 the default."""
    from cluster.hostsfile import QueueClass, Queues
    from ovs_agent.queues import tc_commands
    cmds = tc_commands("eth0", Queues(100000, (QueueClass(1, 1000, 20000),
                                               QueueClass(10, 5000, 50000))))
    assert cmds[0] == ["tc", "qdisc", "replace", "dev", "eth0", "root", "handle", "1:", "htb",
                       "default", "1"]
    classes = {c[c.index("classid") + 1]: (c[c.index("rate") + 1], c[c.index("ceil") + 1])
               for c in cmds[1:]}
    assert classes == {"1:fffe": ("100000kbit", "100000kbit"),
                       "1:1": ("8kbit", "100000kbit"),          # queue 0: the whole link
                       "1:2": ("1000kbit", "20000kbit"),        # queue 1
                       "1:b": ("5000kbit", "50000kbit")}        # queue 10 (hex class ids)
