"""The agent's host firewall (nftables table inet weft) and TLS file choice, as pure values."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cluster.hostsfile import parse
from ovs_agent.desired import ssl_files
from ovs_agent.firewall import ruleset

HOSTS = """
controller: {openflow: ["ssl:10.99.0.1:6653", "tcp:10.99.0.2:6633"]}
hosts:
  - {name: h1, underlay_ip: 192.168.50.10}
  - {name: h2, underlay_ip: 192.168.50.11}
"""


def test_ruleset_closes_tunnel_ovsdb_and_openflow_ports_to_forwarded_traffic():
    text = ruleset(parse(HOSTS))
    forward = text[text.index("chain forward"):text.index("chain input")]
    peers = "{ 192.168.50.10, 192.168.50.11 }"
    for rule in (f"ip daddr {peers} udp dport 4789 drop", f"ip daddr {peers} ip protocol gre drop",
                 f"ip daddr {peers} tcp dport {{ 6640 }} drop",
                 "ip daddr 10.99.0.1 tcp dport 6653 drop", "ip daddr 10.99.0.2 tcp dport 6633 drop"):
        assert rule in forward, rule
    assert 'iifname { "docker0" } tcp dport { 6640, 6633, 6653 } drop' in text
    # replaced whole and atomically, nothing else touched
    assert text.startswith("table inet weft\ndelete table inet weft\n")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nft")
def test_ruleset_is_valid_nftables():
    res = subprocess.run(["unshare", "-n", "nft", "-c", "-f", "-"], input=ruleset(parse(HOSTS)),
                         text=True, capture_output=True, check=False)
    assert res.returncode == 0, res.stderr


def test_ssl_files_only_for_ssl_targets():
    assert ssl_files(parse(HOSTS), "h1", Path("/p")) == (
        "/p/h1-privkey.pem", "/p/h1-cert.pem", "/p/ca-cert.pem")
    plain = parse(HOSTS.replace('"ssl:10.99.0.1:6653", ', ""))
    assert ssl_files(plain, "h1", Path("/p")) is None
