"""Encrypted tunnels (`encryption: ipsec`): the hosts.yaml rules, the tunnel options the
agent asks of OVS's IPsec, the pre-shared key file and the nftables guard.  The real
thing (ESP on the wire, forged and replayed packets, the gap while turning it on host by
host) is tests/vm/test_kernel_datapath.py."""
from __future__ import annotations

import os
from pathlib import Path
import shutil
import subprocess

import pytest

from cluster.hostsfile import HostsFileError, Ipsec, parse, with_hosts
from ovs_agent import desired, firewall, ipsec
from ovs_agent.agent import Agent

# run in the main session, not beside the lab tests (tests/conftest.py): it makes a named
# network namespace, which a lab's leak check would see
pytestmark = pytest.mark.foreground

HEAD = """controller: {openflow: "tcp:10.0.0.1:6653"}
"""
HOSTS = """hosts:
  - {name: host1, underlay_ip: 10.0.0.11}
  - {name: host2, underlay_ip: 10.0.0.12}
"""
PSK = "ipsec: {psk_file: /etc/weft/ipsec.psk}\n"


def cluster(extra: str = "encryption: ipsec\n" + PSK, hosts: str = HOSTS):
    return parse(HEAD + extra + hosts, "hosts.yaml")


def refused(extra: str, hosts: str = HOSTS) -> HostsFileError:
    with pytest.raises(HostsFileError) as exc:
        cluster(extra, hosts)
    return exc.value


def test_encryption_is_off_by_default_and_ipsec_parses_either_way():
    assert cluster("").encryption == "none" and cluster("").ipsec is None
    c = cluster()
    assert (c.encryption, c.ipsec) == ("ipsec", Ipsec(psk_file="/etc/weft/ipsec.psk"))
    assert cluster("encryption: ipsec\nipsec: {pki_dir: /etc/weft/pki}\n").ipsec == \
        Ipsec(pki_dir="/etc/weft/pki")
    # `ipsec:` may stay while encryption is off: turning it on or off is one word
    assert cluster("encryption: none\n" + PSK).encryption == "none"


@pytest.mark.parametrize("extra, field, fragment", [
    ("encryption: wireguard\n", "encryption", "unknown encryption 'wireguard'"),
    ("encryption: ipsec\n", "ipsec", "needs `ipsec:` with psk_file"),
    ("encryption: ipsec\nipsec: {}\n", "ipsec", "exactly one of psk_file"),
    ("encryption: ipsec\nipsec: {psk_file: /a, pki_dir: /b}\n", "ipsec", "exactly one"),
    ("encryption: ipsec\nipsec: {psk_file: weft.psk}\n", "ipsec.psk_file", "not an absolute"),
    ("encryption: ipsec\nipsec: {psk: swordfish}\n", "ipsec.psk", "unknown key 'psk'"),
    ("encryption: ipsec\ndatapath_type: netdev\n" + PSK, "datapath_type",
     "would send them in clear"),
])
def test_bad_encryption_settings_name_the_field(extra, field, fragment):
    err = refused(extra)
    assert err.field == field and fragment in err.message, err
    assert err.line is not None


def test_a_userspace_host_in_an_encrypted_cluster_is_refused_at_load():
    hosts = HOSTS.replace("10.0.0.12}", "10.0.0.12, datapath_type: netdev}")
    err = refused("encryption: ipsec\n" + PSK, hosts)
    assert err.field == "hosts[1].datapath_type" and "in clear" in err.message
    assert err.line == 6
    assert cluster("", hosts).hosts[1].datapath_type == "netdev"      # fine in clear


def test_vlan_transport_has_no_tunnels_to_encrypt():
    err = refused("encryption: ipsec\n" + PSK + "transport: vlan\nuplink: eth1\n")
    assert err.field == "encryption" and "transport: tunnel" in err.message


def test_a_registered_userspace_host_is_refused_by_an_encrypted_cluster():
    c = cluster("encryption: ipsec\n" + PSK + "membership: register\n")
    with pytest.raises(HostsFileError, match="in clear"):
        with_hosts(c, [{"name": "h3", "underlay_ip": "10.0.0.13", "datapath_type": "netdev"}])
    assert len(with_hosts(c, [{"name": "h3", "underlay_ip": "10.0.0.13"}]).hosts) == 3


def test_tunnel_ports_carry_the_psk_or_the_peer_name():
    def tunnel(c, psk=None):
        (br0,) = desired.desired(c, "host1", None, psk=psk)
        (port,) = [p for p in br0.ports if p.name == "vx-host2"]
        return dict(port.options)
    assert tunnel(cluster(""), "ignored") == {"remote_ip": "10.0.0.12", "key": "flow"}
    assert tunnel(cluster(), "k" * 20) == {"remote_ip": "10.0.0.12", "key": "flow",
                                           "psk": "k" * 20}
    pki = cluster("encryption: ipsec\nipsec: {pki_dir: /etc/weft/pki}\n")
    assert tunnel(pki) == {"remote_ip": "10.0.0.12", "key": "flow", "remote_name": "host2"}
    assert ipsec.pki_config(pki, "host1") == {
        "certificate": "/etc/weft/pki/host1-cert.pem",
        "private_key": "/etc/weft/pki/host1-privkey.pem", "ca_cert": "/etc/weft/pki/ca-cert.pem"}
    assert ipsec.pki_config(cluster(), "host1") is None
    assert ipsec.pki_config(cluster("encryption: none\nipsec: {pki_dir: /p}\n"), "host1") is None
    with pytest.raises(ValueError):
        tunnel(cluster(), None)             # never a clear tunnel because the key is missing
    # turning encryption off takes the option away again (the diff sets the port)
    on = desired.desired(cluster(), "host1", None, psk="k" * 20)
    off = desired.desired(cluster(""), "host1", None)
    have = {"br0": desired.ActualBridge("br0", on[0].columns(), tuple(sorted(on[0].controllers)),
                                        tuple(p for p in on[0].ports),
                                        frozenset(p.name for p in on[0].ports))}
    ops = desired.diff(off, have)
    assert [(op[0], op[2].name) for op in ops] == [("set_port", "vx-host2")]
    assert "psk" not in dict(ops[0][2].options)


def _psk_cluster(path) -> object:
    return cluster(f"encryption: ipsec\nipsec: {{psk_file: {path}}}\n")


def test_the_psk_file_must_be_private_and_one_sane_line(tmp_path):
    f = tmp_path / "ipsec.psk"
    f.write_text("0123456789abcdef0123\n")
    f.chmod(0o600)
    assert ipsec.read_psk(_psk_cluster(f)) == "0123456789abcdef0123"
    assert ipsec.read_psk(cluster("")) is None
    for text, mode, fragment in (("0123456789abcdef0123\n", 0o644, "chmod 600"),
                                 ("short\n", 0o600, "16..256 needed"),
                                 ('0123456789"abcdef0123\n', 0o600, "one line"),
                                 ("0123456789abcdef\n0123\n", 0o600, "one line")):
        f.write_text(text)
        f.chmod(mode)
        with pytest.raises(HostsFileError) as exc:
            ipsec.read_psk(_psk_cluster(f))
        assert exc.value.field == "ipsec.psk_file" and fragment in exc.value.message, exc.value
    with pytest.raises(HostsFileError, match="cannot read"):
        ipsec.read_psk(_psk_cluster(tmp_path / "missing"))


def test_the_agent_refuses_ipsec_without_its_firewall_or_key(tmp_path):
    key = tmp_path / "ipsec.psk"
    key.write_text("0123456789abcdef0123\n")
    key.chmod(0o600)
    peers = tmp_path / "hosts.yaml"
    peers.write_text(HEAD + f"encryption: ipsec\nipsec: {{psk_file: {key}}}\n" + HOSTS)
    agent = Agent(peers, "host1", "unix:/nonexistent")
    agent.load()
    assert agent.ipsec_psk == "0123456789abcdef0123"
    agent.host_firewall = None                  # --no-firewall: the guard would be missing
    with pytest.raises(HostsFileError, match="needs the agent's nftables table"):
        agent.load()
    agent = Agent(peers, "host1", "unix:/nonexistent")
    key.unlink()
    with pytest.raises(HostsFileError, match="cannot read"):
        agent.load()


def test_monitor_running_reads_the_pid_file(tmp_path):
    assert not ipsec.monitor_running(str(tmp_path))
    (tmp_path / ipsec.MONITOR_PIDFILE).write_text(f"{os.getpid()}\n")
    assert ipsec.monitor_running(str(tmp_path))
    (tmp_path / ipsec.MONITOR_PIDFILE).write_text("junk\n")
    assert not ipsec.monitor_running(str(tmp_path))


def test_the_firewall_guards_tunnels_only_when_encrypted():
    clear = firewall.ruleset(cluster(""))
    assert "ipsec" not in clear and "chain output" not in clear
    rules = firewall.ruleset(cluster())
    assert "ip daddr { 10.0.0.11, 10.0.0.12 } udp dport 4789 rt ipsec missing drop" in rules
    assert "ip daddr { 10.0.0.11, 10.0.0.12 } ip protocol gre rt ipsec missing drop" in rules
    assert "ip saddr { 10.0.0.11, 10.0.0.12 } udp dport 4789 meta ipsec missing drop" in rules
    assert "ip saddr { 10.0.0.11, 10.0.0.12 } ip protocol gre meta ipsec missing drop" in rules


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nft")
def test_the_guarded_ruleset_is_valid_nftables():
    """nft -c (check only) in a namespace of its own: the kernel accepts rt/meta ipsec."""
    ns = f"weft-ipsec-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        text = firewall.ruleset(cluster()).split("\n", 2)[2]     # no delete: table is new
        res = subprocess.run(["ip", "netns", "exec", ns, "nft", "-c", "-f", "-"], input=text,
                             text=True, capture_output=True)
        assert res.returncode == 0, res.stderr
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)


def test_the_kernels_acquire_expiry_is_kept_short(tmp_path):
    """charon sets 165 s at start: a failed first IKE (the peer not encrypting yet) would
    keep the tunnel down that long after the peer is ready; the agent lowers it to 5 s."""
    f = tmp_path / "xfrm_acq_expires"
    f.write_text("165\n")
    assert ipsec.ensure_acquire_expiry(str(f))
    assert f.read_text() == f"{ipsec.ACQUIRE_EXPIRY_S}\n"
    assert not ipsec.ensure_acquire_expiry(str(f))
    assert not ipsec.ensure_acquire_expiry(str(tmp_path / "missing"))


def test_the_documented_install_and_the_vm_image_carry_what_ipsec_needs():
    """docs/docker.md's install (what provision.sh runs) and the VM guest image (what the
    cold CI builds from nothing) name OVS's IPsec and strongSwan with the plugins its
    AES-GCM proposal needs (without them IKE fails: NO_PROPOSAL_CHOSEN)."""
    from weft_lab import dist, vm
    needed = {"openvswitch-ipsec", "strongswan", "libstrongswan-standard-plugins"}
    apt = [line.split() for line in dist.install_block(dist.DOC.read_text()).splitlines()
           if line.startswith("apt-get install")]
    assert apt and needed <= set(apt[0])
    assert needed <= set(vm.PACKAGES)


def test_the_documented_install_gives_strongswan_the_acquire_expiry_before_it_starts(tmp_path):
    """docs/docker.md's install writes strongSwan's drop-in (charon sets the kernel's
    acquire expiry from it at start: 165 s without it) before apt-get installs and starts
    strongSwan, with the agent's text, and restarts a running openvswitch-ipsec after."""
    import shlex
    import subprocess

    from weft_lab import dist
    lines = dist.install_block(dist.DOC.read_text()).splitlines()
    writes = [i for i, line in enumerate(lines) if line.endswith(f"> {ipsec.CHARON_DROPIN}")]
    apt = [i for i, line in enumerate(lines) if line.startswith("apt-get install")]
    assert writes and apt and writes[0] < apt[0]
    printf = shlex.split(lines[writes[0]].rsplit(">", 1)[0])
    out = subprocess.run(printf, capture_output=True, text=True, check=True).stdout
    assert out == ipsec.CHARON_DROPIN_TEXT
    assert "charon" in ipsec.CHARON_DROPIN.split("/")       # included inside charon.plugins
    assert "systemctl try-restart openvswitch-ipsec" in lines
    f = tmp_path / "weft.conf"
    assert ipsec.dropin_missing(str(f))
    f.write_text(out)
    assert not ipsec.dropin_missing(str(f))


def test_certificates_are_copied_where_strongswan_may_read_them(tmp_path):
    """Debian's AppArmor profile lets charon read keys and certificates only in
    /etc/ipsec.d: the agent copies pki_dir's three files there, named by content (a new
    file is a new path, which ovs-monitor-ipsec reloads), the key 0600, old copies gone."""
    src, ipsec_d = tmp_path / "pki", tmp_path / "ipsec.d"
    src.mkdir()
    for name, text in (("host1-cert.pem", "C1"), ("host1-privkey.pem", "K1"), ("ca-cert.pem", "CA")):
        (src / name).write_text(text)
    pki = cluster("encryption: ipsec\nipsec: {pki_dir: %s}\n" % src)
    got = ipsec.install_pki(ipsec.pki_config(pki, "host1"), str(ipsec_d))
    assert got is not None and set(got) == set(ipsec.PKI_KEYS)
    assert Path(got["certificate"]).parent == ipsec_d / "certs"
    assert Path(got["private_key"]).parent == ipsec_d / "private"
    assert Path(got["ca_cert"]).parent == ipsec_d / "cacerts"
    assert Path(got["private_key"]).read_text() == "K1"
    assert Path(got["private_key"]).stat().st_mode & 0o777 == 0o600
    assert ipsec.install_pki(ipsec.pki_config(pki, "host1"), str(ipsec_d)) == got
    (src / "host1-privkey.pem").write_text("K2")
    again = ipsec.install_pki(ipsec.pki_config(pki, "host1"), str(ipsec_d))
    assert again is not None and again["private_key"] != got["private_key"]
    assert not Path(got["private_key"]).exists() and again["certificate"] == got["certificate"]
    (ipsec_d / "certs" / "other.pem").write_text("not ours")
    assert ipsec.install_pki(None, str(ipsec_d)) is None
    assert [p.name for p in ipsec_d.rglob("*.pem")] == ["other.pem"]
    (src / "ca-cert.pem").unlink()
    with pytest.raises(OSError):
        ipsec.install_pki(ipsec.pki_config(pki, "host1"), str(ipsec_d))
