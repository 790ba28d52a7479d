"""Encrypted tunnels (hosts.yaml `encryption: ipsec`): what the agent asks of OVS's IPsec.

OVS encrypts a tunnel when its Interface carries IPsec options: `ovs-monitor-ipsec`
(Debian's openvswitch-ipsec, with strongSwan) watches OVSDB and turns every such tunnel
into an IKEv2 connection and kernel XFRM policies (ESP, transport mode, between the two
underlay addresses, for the tunnel's protocol and port).  That works on the kernel
datapath only: its tunnel packets leave through the kernel's IP stack, where XFRM applies.

* pre-shared key: ``options:psk`` on each tunnel (read from ``ipsec.psk_file``);
* certificates (weft-pki's): ``other_config:certificate/private_key/ca_cert`` on the
  Open_vSwitch row and ``options:remote_name`` (the peer's host name, its certificate's
  CN and DNS name) on each tunnel.  The three files are copies in /etc/ipsec.d
  (`install_pki`): Debian's AppArmor profile for charon lets it read certificates and
  keys only there (from pki_dir, e.g. /etc/weft/pki, it gets "Permission denied": seen in
  the VM tests).  Each copy is named by its content, so a changed file is a new path in
  OVSDB and ovs-monitor-ipsec reloads it.

Pure except `read_psk`, `install_pki`, `monitor_running` and the acquire expiry (files).  The agent's nftables
table adds the guard that makes a missing or late IPsec fail closed (ovs_agent.firewall).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from cluster.hostsfile import Cluster, HostsFileError

PSK_MIN, PSK_MAX = 16, 256
MONITOR_PIDFILE = "ovs-monitor-ipsec.pid"
PKI_KEYS = ("certificate", "private_key", "ca_cert")
IPSEC_D = "/etc/ipsec.d"
PKI_SUBDIRS = {"certificate": "certs", "private_key": "private", "ca_cert": "cacerts"}
COPY_PREFIX = "weft-"
# How long the kernel keeps a tunnel's "acquire" (larval) state while IKE runs: no new
# IKE attempt for that flow before it ends.  charon writes its own value (165 s unless
# configured; OVS 3.1's strongSwan drop-in means to set 10 s but misspells the option)
# each time it starts, so a first attempt that failed (the peer not encrypting yet, when
# turning encryption on host by host) kept the tunnel down for up to 165 s after the
# peer was ready.  The fix is charon's own setting, in place before it starts: the
# strongSwan drop-in CHARON_DROPIN that docs/docker.md's install writes (inside
# charon.plugins: /etc/strongswan.conf includes strongswan.d/charon/*.conf there).  The
# agent also keeps the sysctl at most that (a strongSwan that started without the drop-in).
ACQUIRE_EXPIRY_S = 5
ACQUIRE_SYSCTL = "/proc/sys/net/core/xfrm_acq_expires"
CHARON_DROPIN = "/etc/strongswan.d/charon/weft.conf"
CHARON_DROPIN_TEXT = f"kernel-netlink {{\n    xfrm_acq_expires = {ACQUIRE_EXPIRY_S}\n}}\n"


def read_psk(cluster: Cluster) -> str | None:
    """The pre-shared key of an encrypted cluster that uses one (None otherwise).

    Refused (HostsFileError naming ipsec.psk_file) if unreadable, readable by group or
    others, shorter than PSK_MIN or not one line of printable ASCII without '"' (it goes
    into strongSwan's ipsec.secrets between double quotes)."""
    if cluster.encryption != "ipsec" or cluster.ipsec is None or not cluster.ipsec.psk_file:
        return None
    path = cluster.ipsec.psk_file

    def bad(message: str) -> HostsFileError:
        return HostsFileError("ipsec.psk_file", f"{path}: {message}", None, cluster.source)
    try:
        mode = os.stat(path).st_mode
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise bad(f"cannot read the pre-shared key: {getattr(exc, 'strerror', None) or exc}")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise bad("readable by others: chmod 600 it (it is the key of every tunnel)")
    psk = text.strip("\n")
    if "\n" in psk or not psk.isprintable() or '"' in psk or psk != psk.strip():
        raise bad('must be one line of printable ASCII, without \'"\' or blanks around it')
    if not PSK_MIN <= len(psk) <= PSK_MAX:
        raise bad(f"the key has {len(psk)} characters, {PSK_MIN}..{PSK_MAX} needed "
                  "(openssl rand -hex 32 > FILE makes one)")
    return psk


def tunnel_options(cluster: Cluster, peer: str, psk: str | None) -> dict[str, str]:
    """The IPsec options of the tunnel to `peer` ({} on a clear cluster)."""
    if cluster.encryption != "ipsec" or cluster.ipsec is None:
        return {}
    if cluster.ipsec.psk_file:
        if psk is None:
            raise ValueError("encryption: ipsec with psk_file, but no key was read")
        return {"psk": psk}
    return {"remote_name": peer}


def pki_config(cluster: Cluster, me: str) -> dict[str, str] | None:
    """This host's certificate, key and CA in pki_dir (weft-pki's file names), by
    other_config key; None when the cluster does not authenticate IPsec with certificates."""
    if cluster.encryption != "ipsec" or cluster.ipsec is None or not cluster.ipsec.pki_dir:
        return None
    d = Path(cluster.ipsec.pki_dir)
    return {"certificate": str(d / f"{me}-cert.pem"), "private_key": str(d / f"{me}-privkey.pem"),
            "ca_cert": str(d / "ca-cert.pem")}


def monitor_running(rundir: str | None = None) -> bool:
    """Is ovs-monitor-ipsec (which makes the IPsec options real) alive?  Its pid file."""
    rundir = rundir or os.environ.get("OVS_RUNDIR", "/var/run/openvswitch")
    try:
        pid = int(Path(rundir, MONITOR_PIDFILE).read_text().split()[0])
        os.kill(pid, 0)
        return True
    except (OSError, ValueError, IndexError):
        return False


def ensure_acquire_expiry(path: str = ACQUIRE_SYSCTL, limit: int = ACQUIRE_EXPIRY_S) -> bool:
    """Keep the kernel's acquire expiry at most `limit` seconds (charon raises it to 165
    each time it starts); True if written."""
    try:
        if int(Path(path).read_text().split()[0]) <= limit:
            return False
        Path(path).write_text(f"{limit}\n")
        return True
    except (OSError, ValueError, IndexError):
        return False


def dropin_missing(path: str = CHARON_DROPIN) -> bool:
    """Is strongSwan's drop-in with weft's acquire expiry absent (or saying otherwise)?"""
    try:
        return Path(path).read_text() != CHARON_DROPIN_TEXT
    except OSError:
        return True


def install_pki(sources: dict[str, str] | None, ipsec_d: str = IPSEC_D) -> dict[str, str] | None:
    """Copy the files of `sources` (pki_config) to where strongSwan may read them
    (IPSEC_D's certs/, private/ (0600), cacerts/, each named weft-<its sha256>.pem) and
    return Open_vSwitch other_config naming the copies; other weft- copies there are
    removed (all of them with `sources` None).  OSError if a source cannot be read."""
    import hashlib
    wanted: dict[str, str] = {}
    data = {key: Path(path).read_bytes() for key, path in (sources or {}).items()}
    for key, blob in data.items():
        d = Path(ipsec_d, PKI_SUBDIRS[key])
        target = d / f"{COPY_PREFIX}{hashlib.sha256(blob).hexdigest()[:16]}.pem"
        if not target.exists() or target.read_bytes() != blob:
            d.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                         0o600 if key == "private_key" else 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, target)
        wanted[key] = str(target)
    for sub in PKI_SUBDIRS.values():
        for old in Path(ipsec_d, sub).glob(f"{COPY_PREFIX}*.pem"):
            if str(old) not in wanted.values():
                old.unlink(missing_ok=True)
    return wanted or None


def reread_cacerts() -> bool:
    """`ipsec rereadcacerts`: charon loads /etc/ipsec.d/cacerts again (it reads that
    directory only at start).  True if it answered."""
    import subprocess
    try:
        return subprocess.run(["ipsec", "rereadcacerts"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
