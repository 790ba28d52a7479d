"""The agent's host firewall (nftables table inet weft) and TLS file choice, as pure values."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cluster.hostsfile import parse
from ovs_agent.desired import ssl_files
from ovs_agent import firewall
from ovs_agent.firewall import ruleset

HOSTS = """
controller: {openflow: ["ssl:10.99.0.1:6653", "tcp:10.99.0.2:6633"]}
hosts:
  - {name: h1, underlay_ip: 192.168.50.10}
  - {name: h2, underlay_ip: 192.168.50.11}
"""
# containers' interfaces, never the underlay bridge br-phy (it matches br-*, but carries
# the host's own address: other hosts reach their services through it)
CONTAINERS = 'iifname { "docker0", "br-*", "wx-*" } iifname != "br-phy"'


def test_ruleset_closes_tunnel_ovsdb_and_openflow_ports_to_forwarded_traffic():
    text = ruleset(parse(HOSTS))
    forward = text[text.index("chain forward"):text.index("chain input")]
    peers = "{ 192.168.50.10, 192.168.50.11 }"
    for rule in (f"ip daddr {peers} udp dport 4789 drop", f"ip daddr {peers} ip protocol gre drop",
                 f"ip daddr {peers} tcp dport {{ 6640 }} drop",
                 "ip daddr 10.99.0.1 tcp dport 6653 drop", "ip daddr 10.99.0.2 tcp dport 6633 drop"):
        assert rule in forward, rule
    assert f'{CONTAINERS} tcp dport {{ 6640, 22, 2379, 2380, 6633, 6653 }} drop' in text
    # replaced whole and atomically, nothing else touched
    assert text.startswith("table inet weft\ndelete table inet weft\n")


def test_containers_may_ask_the_resolver_and_nothing_more():
    """DNS to the agent's resolver (docs/dns.md) is the one new thing a wx port may send
    to the host: UDP 53 of that one address, limited per (interface, source) before the
    established accept (a reused source port is established); nothing else of it."""
    inp = ruleset(parse(HOSTS)).split("chain input")[1].splitlines()
    lines = [line.strip() for line in inp]
    limit = next(i for i, line in enumerate(lines) if "limit rate over" in line)
    to = "ip daddr 169.254.53.53 udp dport 53"
    accept = lines.index(f"{CONTAINERS} {to} accept")
    est = lines.index('iifname "wx-*" ct state established,related accept')
    assert limit < accept < lines.index("ip daddr 169.254.53.53 drop") < est
    assert lines[limit].startswith(f"{CONTAINERS} {to} add @dns_sources "
                                   "{ iifname . ip saddr limit rate over ")
    assert lines[limit].endswith("drop")
    assert [line for line in lines if line.endswith(" accept")] == [lines[accept], lines[est]]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nft")
def test_ruleset_is_valid_nftables():
    res = subprocess.run(["unshare", "-n", "nft", "-c", "-f", "-"], input=ruleset(parse(HOSTS)),
                         text=True, capture_output=True, check=False)
    assert res.returncode == 0, res.stderr


API_HOSTS = HOSTS.replace(
    'controller: {openflow: ["ssl:10.99.0.1:6653", "tcp:10.99.0.2:6633"]}',
    'controller: {openflow: ["ssl:10.99.0.1:6653", "tcp:10.99.0.2:6633"], '
    'api: ["http://10.99.0.1:8080", "https://ctl.example:9443", "http://10.99.0.7"]}')


def test_gateway_ports_are_container_interfaces_and_closed_to_host_services():
    """wx-<id> (tenants' doors to the host stack) get every drop docker0 gets; containers
    may not reach the API, etcd or SSH of any cluster address; nothing new comes in to
    the host from a wx port."""
    text = ruleset(parse(API_HOSTS))
    forward = text[text.index("chain forward"):text.index("chain input")]
    inp = text[text.index("chain input"):]
    rule = next(line for line in forward.splitlines() if "ip daddr . tcp dport" in line)
    assert rule.strip().startswith(f'{CONTAINERS} ip daddr . tcp dport')
    pairs = {x.strip() for x in rule[rule.index("{", rule.index("dport")) + 1:
                                      rule.rindex("}")].split(",")}
    addresses = ("10.99.0.1", "10.99.0.2", "10.99.0.7", "192.168.50.10", "192.168.50.11")
    # each API at its own address only; SSH, etcd and a named API's port everywhere
    assert pairs == {"10.99.0.1 . 8080", "10.99.0.7 . 80"} | {
        f"{ip} . {p}" for ip in addresses for p in (22, 2379, 2380, 9443)}
    assert "192.168.50.10 . 8080" not in pairs      # a port published on a host stays open
    assert (f'{CONTAINERS} tcp dport {{ 6640, 22, 80, 2379, 2380, 6633, '
            '6653, 8080, 9443 } drop') in inp
    assert inp.index('iifname "wx-*" ct state established,related accept') \
        < inp.index('iifname "wx-*" drop')
    # the old drops apply to wx too
    assert f'{CONTAINERS} udp dport 4789 drop' in inp


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nft")
def test_ruleset_with_apis_is_valid_nftables():
    res = subprocess.run(["unshare", "-n", "nft", "-c", "-f", "-"],
                         input=ruleset(parse(API_HOSTS)), text=True, capture_output=True,
                         check=False)
    assert res.returncode == 0, res.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("iptables")
                    or not shutil.which("unshare"), reason="needs root and iptables")
def test_docker_user_accepts_wx_once_and_again_after_docker_rebuilds_it(tmp_path):
    """Docker's FORWARD policy is drop; DOCKER-USER gets the two accepts, a second pass
    adds nothing, and after Docker flushed its chains (a restart) they come back.  No
    DOCKER-USER chain (no Docker): nothing is touched.  In a network namespace of its own."""
    script = tmp_path / "run.py"
    script.write_text(
        "import json, subprocess, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})\n"
        "from ovs_agent.firewall import ensure_docker_user\n"
        "out = [ensure_docker_user()]\n"
        "subprocess.run(['iptables', '-N', 'DOCKER-USER'], check=True)\n"
        "subprocess.run(['iptables', '-A', 'DOCKER-USER', '-j', 'RETURN'], check=True)\n"
        "out += [ensure_docker_user(), ensure_docker_user()]\n"
        "subprocess.run(['iptables', '-F', 'DOCKER-USER'], check=True)\n"
        "out += [ensure_docker_user()]\n"
        "out += [subprocess.run(['iptables', '-S', 'DOCKER-USER'], capture_output=True,"
        " text=True).stdout]\n"
        "print(json.dumps(out))\n")
    import json
    import sys
    res = subprocess.run(["unshare", "-n", sys.executable, str(script)], capture_output=True,
                         text=True, check=False, timeout=60)
    assert res.returncode == 0, res.stderr
    none, first, second, after_flush, listing = json.loads(res.stdout)
    assert none == [] and second == []
    assert len(first) == 2 and len(after_flush) == 2
    for rule in firewall.docker_user_rules():
        assert f"-A DOCKER-USER {' '.join(rule)}" in listing


def test_ssl_files_only_for_ssl_targets():
    assert ssl_files(parse(HOSTS), "h1", Path("/p")) == (
        "/p/h1-privkey.pem", "/p/h1-cert.pem", "/p/ca-cert.pem")
    plain = parse(HOSTS.replace('"ssl:10.99.0.1:6653", ', ""))
    assert ssl_files(plain, "h1", Path("/p")) is None


def test_the_agent_refuses_to_start_without_nft_unless_told(tmp_path):
    """No nft: a clear error and exit 2 before anything is touched, not a warning in a log
    while containers reach the tunnel, OVSDB and OpenFlow ports."""
    import sys
    peers = tmp_path / "hosts.yaml"
    peers.write_text(HOSTS)
    bin_dir = tmp_path / "bin"          # a PATH with everything but nft
    bin_dir.mkdir()
    argv = [sys.executable, "-m", "ovs_agent.cli", "--peers", str(peers), "--host", "h1",
            "--once", "--ovsdb", f"unix:{tmp_path}/none.sock"]
    env = {**os.environ, "PATH": str(bin_dir)}
    res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 2, res.stderr
    assert "nft not found" in res.stderr and "--no-firewall" in res.stderr
    # told explicitly: it goes on (and waits for the missing OVSDB, not refusing)
    proc = subprocess.Popen([*argv, "--no-firewall"], stderr=subprocess.PIPE, text=True,
                            env=env, cwd=Path(__file__).resolve().parents[2])
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert "nft not found" not in err
