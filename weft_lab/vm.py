"""The VM lab: weft on the kernel datapath, in Debian 12 guests under QEMU.

The namespace lab (lab.py) can only run OVS's userspace datapath: this machine's
kernel has no openvswitch module.  Here every weft host is a real Debian 12
virtual machine with Debian's kernel, kernel OVS (`datapath_type: system`) and
Debian's dockerd, and weft is installed and run exactly as docs/docker.md says:
its install commands (weft_lab.dist) from the dist/ that `./dev.sh dist` makes,
as the systemd units in systemd/.

* **Image**: built once from Debian packages (debootstrap), an ext4 filesystem
  in a qcow2 plus the guest's own kernel and initrd (booted directly, no boot
  loader), cached in the lab cache's vm/ (weft_lab/cache.py).  Each guest writes to its own
  copy-on-write overlay.  weft's Python dependencies are pre-installed in the
  image's venv from the host's wheelhouse (a speed-up: `up` installs weft from
  dist/ again, so new or changed dependencies still come from there).
* **Accelerator**: KVM only when the CPU has VT-x/AMD-V; PVM's /dev/kvm
  (KVM without them: stock Debian kernels hang) falls back to QEMU's
  emulator, `-accel tcg,tb-size=256`.
* **Network**: only inside the private namespace `LAB.vmnet`: a bridge with one
  tap per guest and the address the host side uses (ssh); no route out, no QEMU
  user networking, no libvirt.
* **Control**: ssh as root with a key made with the image (from inside the
  namespace), a 9p share (read-only) carrying dist/ and install-weft.sh,
  hosts.yaml, the token and the provisioning script.
* **State**: /var/tmp/weft-lab-vm/LAB (overlays, console logs, pid files).
  `down` kills QEMU by pid (and anything else in the namespace), deletes the
  namespace and that directory: only the cached image stays, also after a crash.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from weft_lab import cache, dist, docker
from weft_lab.shell import CommandError, netns_list, netns_pids, run, run_logged

STATE_ROOT = Path(os.environ.get("WEFT_VM_STATE", "/var/tmp/weft-lab-vm"))
REPO = Path(__file__).resolve().parent.parent
MIRROR = os.environ.get("WEFT_VM_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
PACKAGES = ("linux-image-amd64", "systemd-sysv", "openvswitch-switch", "docker.io", "apparmor",
            "sudo", "rsync", "iperf3", "python3", "python3-venv", "openssh-server", "iproute2",
            "ethtool", "iputils-ping", "kmod", "nftables", "procps", "tcpdump", "udev", "dbus",
            "arping", "openvswitch-ipsec", "strongswan",
            "libstrongswan-standard-plugins")
# Bump when the recipe below changes: the image is rebuilt under a new name.
RECIPE = "4"
UNDERLAY = ipaddress.ip_network("10.77.0.0/24")
HOST_SIDE = "10.77.0.1"                 # the namespace's own address (ssh from here)
BRIDGE = "vmbr"
SSH_USER = "root"


class VMError(RuntimeError):
    """The VM lab could not be built or driven; the message says why."""


# -- the image ---------------------------------------------------------------------------

def _requirements() -> list[str]:
    """weft's install_requires, from setup.cfg (what the wheelhouse must hold)."""
    import configparser
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return [r.strip() for r in cfg["options"]["install_requires"].splitlines() if r.strip()]


# A wheelhouse of another requirement set is removed once unused for this long: another
# checkout (other setup.cfg) may be between picking it and copying it (an image build
# copies it after debootstrap, minutes later), and it would only be rebuilt, from PyPI.
WHEELHOUSE_GRACE = 2 * 3600.0


def cache_dir() -> Path:
    """The VM lab's part of the lab cache (image, key, wheelhouses)."""
    return cache.root() / "vm"


def wheelhouse_path() -> Path:
    """Where the wheelhouse of this tree's requirement set lives (built or not)."""
    reqs = _requirements()
    return cache_dir() / f"wheels-{hashlib.sha256(' '.join(reqs).encode()).hexdigest()[:12]}"


def wheelhouse(log=print) -> Path:
    """weft's dependencies as wheels, built once per requirement set (pip, on the host).

    Each call marks it used (its mtime) and prunes the stale ones of other requirement
    sets, so old wheelhouses do not pile up in the cache as the dependencies change.
    """
    reqs = _requirements()

    def build(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        with cache.Heartbeat(f"pip wheel: {len(reqs)} requirements and their dependencies",
                             log, progress=lambda: f"{len(list(tmp.glob('*.whl')))} wheels"):
            run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(tmp), *reqs], timeout=900)

    path = cache.fill(wheelhouse_path(), build)
    os.utime(path)
    prune_wheelhouses(path)
    return path


def stale_wheelhouses(last_used: dict[str, float], current: str, now: float,
                      grace: float = WHEELHOUSE_GRACE) -> list[str]:
    """The cache entries (name -> last use, epoch s) to remove: wheelhouses of other
    requirement sets and left-over partial builds, unused for `grace` seconds.
    The current one always stays; so does everything that is not a wheelhouse."""
    return sorted(name for name, used in last_used.items()
                  if name.startswith("wheels-") and name != current and now - used > grace)


def prune_wheelhouses(current: Path) -> list[str]:
    """Remove the stale wheelhouses beside `current` (the I/O around stale_wheelhouses)."""
    last_used = {}
    for entry in current.parent.iterdir():
        try:
            last_used[entry.name] = entry.stat().st_mtime
        except OSError:             # removed meanwhile by another run's prune
            continue
    gone = stale_wheelhouses(last_used, current.name, time.time())
    for name in gone:
        shutil.rmtree(current.parent / name, ignore_errors=True)
    return gone


def image_key() -> str:
    return hashlib.sha256(f"{RECIPE} {SUITE} {' '.join(PACKAGES)}".encode()).hexdigest()[:10]


def image_paths() -> dict[str, Path]:
    image = cache_dir() / f"debian12-{image_key()}"
    return {"disk": image / "disk.qcow2", "kernel": image / "vmlinuz",
            "initrd": image / "initrd", "key": cache_dir() / "sshkey" / "id_ed25519"}


GUEST_INIT = """#!/bin/sh
# weft-lab guest identity from the kernel command line: weft.name= weft.ip= (CIDR)
for arg in $(cat /proc/cmdline); do
  case "$arg" in weft.name=*) NAME=${arg#weft.name=} ;; weft.ip=*) IP=${arg#weft.ip=} ;; esac
done
[ -n "$NAME" ] && hostname "$NAME" && echo "$NAME" > /etc/hostname
ip link set lo up
ip link set eth0 up
[ -n "$IP" ] && ip addr replace "$IP" dev eth0
grep -q " $NAME\\$" /etc/hosts || echo "${IP%/*} $NAME" >> /etc/hosts
mkdir -p /mnt/weft
mountpoint -q /mnt/weft || mount -t 9p -o trans=virtio,version=9p2000.L,ro weft /mnt/weft
exit 0
"""

GUEST_INIT_UNIT = """[Unit]
Description=weft-lab guest identity (name, address, share)
DefaultDependencies=no
After=systemd-remount-fs.service
Before=network-pre.target ssh.service openvswitch-switch.service
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/weft-lab-guest-init

[Install]
WantedBy=multi-user.target
"""

# Units that only cost boot time in a throw-away guest.
MASKED = ("apt-daily.timer", "apt-daily-upgrade.timer", "man-db.timer", "e2scrub_all.timer",
          "e2scrub_reap.service", "fstrim.timer", "systemd-timesyncd.service",
          "logrotate.timer", "dpkg-db-backup.timer", "getty@tty1.service",
          "systemd-networkd-wait-online.service", "networking.service")


def build_image(force: bool = False, log=print) -> dict[str, Path]:
    """The guest image (qcow2, kernel, initrd) and its ssh key, built once and cached.

    The image is one cache entry (a directory renamed into place when whole), so
    several labs or test runs may ask for it at once: one builds, the others wait.
    """
    paths = image_paths()
    if not force and all(p.exists() for p in paths.values()):
        return paths
    for tool in ("debootstrap", "mkfs.ext4", "qemu-img", "ssh-keygen"):
        if not shutil.which(tool):
            raise VMError(f"{tool} missing: apt-get install debootstrap e2fsprogs qemu-utils "
                          "openssh-client (./dev.sh setup)")
    key = paths["key"]
    cache.fill(key.parent, lambda tmp: _make_key(tmp / key.name))
    image = paths["disk"].parent
    if force:
        with cache.locked(image.with_name(f".{image.name}.lock")):
            cache.remove(image)
    wheels = wheelhouse(log)
    cache.fill(image, lambda tmp: _build_image_in(tmp, key.with_suffix(".pub"), wheels, log),
               log=log)
    return paths


def _make_key(path: Path) -> None:
    path.parent.mkdir(parents=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "weft-lab-vm", "-f", str(path)])


def _build_image_in(dest: Path, pubkey: Path, wheels: Path, log) -> None:
    """Build the image's files into the directory `dest` (about 6 minutes from cold)."""
    dest.mkdir(parents=True)
    root, raw, out = dest / "root", dest / "root.raw", dest / "debootstrap.log"
    log(f"building the VM guest image (Debian {SUITE}, {len(PACKAGES)} packages and their "
        f"dependencies from {MIRROR}; about 6 minutes, once per cache)")

    def fetched() -> str:
        try:
            text = out.read_text(errors="replace")
        except OSError:
            return ""
        return (f"{text.count('I: Retrieving ')} retrieved, {text.count('I: Unpacking ')} "
                f"unpacked, {text.count('I: Configuring ')} configured")

    try:
        with cache.Heartbeat("[1/3] debootstrap", log, progress=fetched):
            run_logged(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                        SUITE, str(root), MIRROR], out, timeout=1800)
        with cache.Heartbeat("[2/3] configure the guest: initramfs, weft's venv", log):
            _configure_root(root, pubkey, wheels)
        boot = root / "boot"
        shutil.copyfile(sorted(boot.glob("vmlinuz-*"))[-1], dest / "vmlinuz")
        shutil.copyfile(sorted(boot.glob("initrd.img-*"))[-1], dest / "initrd")
        with cache.Heartbeat("[3/3] ext4 filesystem and qcow2", log):
            run(["mkfs.ext4", "-q", "-F", "-L", "weftroot", "-d", str(root), str(raw), "4G"],
                timeout=900)
            run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw),
                 str(dest / "disk.qcow2")], timeout=900)
    finally:
        cache.remove(root)
        raw.unlink(missing_ok=True)


def _chroot(root: Path, *argv: str, timeout: float = 900) -> str:
    return run(["chroot", str(root), *argv], timeout=timeout,
               env={"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8",
                    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def _configure_root(root: Path, pubkey: Path, wheels: Path) -> None:
    """Everything the guest needs besides packages: identity, ssh, weft's venv."""
    (root / "etc/fstab").write_text("/dev/vda / ext4 rw,errors=remount-ro 0 1\n")
    (root / "etc/hostname").write_text("weft-guest\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n")
    init = root / "usr/local/sbin/weft-lab-guest-init"
    init.write_text(GUEST_INIT)
    init.chmod(0o755)
    (root / "etc/systemd/system/weft-lab-guest.service").write_text(GUEST_INIT_UNIT)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "weft-lab-guest.service").unlink(missing_ok=True)
    (wants / "weft-lab-guest.service").symlink_to("/etc/systemd/system/weft-lab-guest.service")
    for unit in MASKED:
        link = root / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    # Docker starts once weft has written its options (provisioning enables it).
    for unit in ("docker.service", "docker.socket", "containerd.service"):
        for w in (root / "etc/systemd/system").glob(f"*.wants/{unit}"):
            w.unlink()
    ssh = root / "root/.ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    (ssh / "authorized_keys").write_text(pubkey.read_text())
    (ssh / "authorized_keys").chmod(0o600)
    (root / "etc/ssh/sshd_config.d").mkdir(exist_ok=True)
    (root / "etc/ssh/sshd_config.d/weft-lab.conf").write_text(
        "PermitRootLogin prohibit-password\nUseDNS no\nPasswordAuthentication no\n")
    (root / "etc/sysctl.d/90-weft-lab.conf").write_text("net.ipv6.conf.all.disable_ipv6=1\n")
    (root / "etc/modules-load.d/weft-lab.conf").write_text("openvswitch\n9p\n9pnet_virtio\n")
    (root / "etc/initramfs-tools/modules").write_text("virtio_pci\nvirtio_blk\nvirtio_net\n")
    # weft's dependencies, from the host's wheelhouse (the guest never sees PyPI)
    dst = root / "tmp/wheels"
    shutil.copytree(wheels, dst)
    try:
        for sub, kind in (("proc", "proc"), ("sys", "sysfs")):
            run(["mount", "-t", kind, kind, str(root / sub)])
        _chroot(root, "update-initramfs", "-u")
        _chroot(root, "python3", "-m", "venv", "/opt/weft/venv")
        _chroot(root, "/opt/weft/venv/bin/pip", "install", "-q", "--no-index",
                "--find-links", "/tmp/wheels", *_requirements())
    finally:
        cache.umount_below(root)
    shutil.rmtree(dst)
    _chroot(root, "apt-get", "clean")
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)
    for f in (root / "etc/ssh").glob("ssh_host_*"):
        f.unlink()          # made per guest at first boot (sshd-keygen below)
    _chroot(root, "ssh-keygen", "-A")


# -- accelerator --------------------------------------------------------------------------

def accel() -> tuple[list[str], str]:
    """QEMU's accelerator arguments and a one-word name.

    /dev/kvm alone is not enough: on PVM hosts (KVM without VT-x/AMD-V, e.g. this
    machine, itself a PVM guest) only PVM-enabled guest kernels boot, a stock Debian
    kernel hangs.  So KVM needs the CPU flags too; WEFT_VM_ACCEL=kvm|tcg overrides.
    """
    forced = os.environ.get("WEFT_VM_ACCEL")
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    kvm = os.access("/dev/kvm", os.R_OK | os.W_OK) and bool(flags & {"vmx", "svm"})
    if forced == "kvm" or (forced != "tcg" and kvm):
        return ["-accel", "kvm", "-cpu", "host"], "kvm"
    return ["-accel", "tcg,tb-size=256", "-cpu", "max"], "tcg"


# -- a VM lab ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Guest:
    name: str
    ip: str                  # underlay address (no prefix)
    mac: str
    memory: int              # MiB


def state_dir(lab: str) -> Path:
    return STATE_ROOT / lab


def netns(lab: str) -> str:
    return f"{lab}.vmnet"


def plan(lab: str, count: int, memory: int = 1024) -> list[Guest]:
    hosts = list(UNDERLAY.hosts())
    return [Guest(f"host{i + 1}", str(hosts[10 + i]), f"52:54:00:77:00:{0x11 + i:02x}",
                  memory + (256 if i == 0 else 0))      # host1 runs the controller too
            for i in range(count)]


def hosts_yaml(guests: list[Guest]) -> str:
    """The cluster as the guests see it: kernel datapath, controller on the first guest."""
    ctl = guests[0].ip
    lines = ["# written by weft-lab vm", "controller:", f"  openflow: [\"tcp:{ctl}:6653\"]",
             f"  api: \"http://{ctl}:8080\"", "tunnel_type: vxlan", "datapath_type: system",
             "cluster_subnet: 172.17.0.0/16",
             # linux-htb on each guest's NIC: queue 1 capped at 20 Mbit/s (tests/vm)
             "queues:", "  max_kbps: 1000000", "  classes:",
             "    - {id: 1, min_kbps: 1000, max_kbps: 20000}", "hosts:"]
    for i, g in enumerate(guests):
        lines += [f"  - name: {g.name}", f"    underlay_ip: {g.ip}",
                  f"    docker_subnet: 172.17.{i + 1}.0/24"]
    return "\n".join(lines) + "\n"


def load(lab: str) -> list[Guest]:
    try:
        data = json.loads((state_dir(lab) / "guests.json").read_text())
    except (OSError, ValueError):
        raise VMError(f"VM lab {lab!r} is not up (known: {', '.join(list_labs()) or 'none'})")
    return [Guest(**g) for g in data]


def list_labs() -> list[str]:
    names = {p.name for p in STATE_ROOT.iterdir()} if STATE_ROOT.exists() else set()
    names |= {n[: -len(".vmnet")] for n in netns_list() if n.endswith(".vmnet")}
    return sorted(names)


def ssh_argv(lab: str, guest: Guest, cmd: list[str] | str, tty: bool = False) -> list[str]:
    """ssh to a guest from inside the lab's namespace (the only place it is reachable)."""
    sd = state_dir(lab)
    key = image_paths()["key"]
    remote = cmd if isinstance(cmd, str) else " ".join(_quote(c) for c in cmd)
    return ["ip", "netns", "exec", netns(lab), "ssh", "-i", str(key), "-T" if not tty else "-t",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "-o", "BatchMode=yes",
            "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=6",
            "-o", "ControlMaster=auto", "-o", f"ControlPath={sd}/ssh-%h",
            "-o", "ControlPersist=300", f"{SSH_USER}@{guest.ip}", remote]


def _quote(s: str) -> str:
    import shlex
    return shlex.quote(s)


def guest(lab: str, name: str) -> Guest:
    for g in load(lab):
        if g.name == name:
            return g
    raise VMError(f"no guest {name!r} in VM lab {lab!r}")


def sh(lab: str, name: str, cmd: list[str] | str, timeout: float = 300,
       check: bool = True) -> str:
    """Run a command in a guest (a string goes through the guest's shell); its stdout."""
    g = guest(lab, name)
    argv = ssh_argv(lab, g, cmd)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise CommandError([name, cmd if isinstance(cmd, str) else " ".join(cmd)],
                           proc.returncode, proc.stderr + proc.stdout[-2000:])
    return proc.stdout


def _qemu_argv(lab: str, g: Guest, paths: dict[str, Path]) -> list[str]:
    sd = state_dir(lab)
    plen = UNDERLAY.prefixlen
    return ["qemu-system-x86_64", "-name", f"weft-{lab}-{g.name}", *accel()[0],
            "-machine", "pc", "-smp", "1", "-m", str(g.memory),
            "-display", "none", "-monitor", "none", "-no-reboot",
            "-serial", f"file:{sd}/{g.name}.console",
            "-kernel", str(paths["kernel"]), "-initrd", str(paths["initrd"]),
            "-append", f"root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet "
                       f"weft.name={g.name} weft.ip={g.ip}/{plen}",
            "-drive", f"file={sd}/{g.name}.qcow2,if=virtio,format=qcow2,cache=unsafe",
            "-netdev", f"tap,id=n0,ifname=t-{g.name},script=no,downscript=no",
            "-device", f"virtio-net-pci,netdev=n0,mac={g.mac}",
            "-virtfs", f"local,path={sd}/share,mount_tag=weft,security_model=none,readonly=on",
            "-pidfile", f"{sd}/{g.name}.pid", "-daemonize"]


def up(lab: str = "vm", count: int = 2, memory: int = 1024, provision_weft: bool = True,
       log=print, boot_timeout: float = 900, keep: bool = False) -> dict[str, float]:
    """Boot `count` guests and (by default) install and start weft in them.

    Returns the seconds each phase took.  On failure everything is torn down (unless
    `keep`: the guests stay up to be looked at; `down` removes them).
    """
    times: dict[str, float] = {}
    sd, ns = state_dir(lab), netns(lab)
    if not (sd / "prepared").exists():
        times.update(prepare(lab, count, memory, log))
    if ns in netns_list():
        raise VMError(f"VM lab {lab!r} is running: weft-lab vm down --lab {lab} first")
    paths = image_paths()
    guests = load(lab)
    try:
        run(["ip", "netns", "add", ns])
        run(["ip", "link", "set", "lo", "up"], ns=ns)
        run(["ip", "link", "add", BRIDGE, "type", "bridge"], ns=ns)
        run(["ip", "addr", "add", f"{HOST_SIDE}/{UNDERLAY.prefixlen}", "dev", BRIDGE], ns=ns)
        run(["ip", "link", "set", BRIDGE, "up"], ns=ns)
        t2 = time.monotonic()
        for g in guests:
            run(["ip", "tuntap", "add", f"t-{g.name}", "mode", "tap"], ns=ns)
            run(["ip", "link", "set", f"t-{g.name}", "master", BRIDGE, "up"], ns=ns)
            run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                 str(paths["disk"]), str(sd / f"{g.name}.qcow2")])
            run(["nsenter", f"--net=/run/netns/{ns}", *_qemu_argv(lab, g, paths)])
        log(f"{count} guests started ({accel()[1]}), waiting for ssh")
        for g in guests:
            _wait_ssh(lab, g, t2 + boot_timeout)
        times["boot"] = time.monotonic() - t2
        log(f"guests up in {times['boot']:.0f}s")
        if provision_weft:
            t3 = time.monotonic()
            provision(lab, guests)
            times["provision"] = time.monotonic() - t3
            log(f"weft running in {times['provision']:.0f}s")
    except BaseException:
        if not keep:
            down(lab)
        raise
    (sd / "times.json").write_text(json.dumps(times))
    return times


def prepare(lab: str, count: int = 2, memory: int = 1024, log=print) -> dict[str, float]:
    """Everything `up` needs that runs no guest: the image, the wheels, the share.

    Separate so tests can do it before they take the lab lock.
    """
    if lab in list_labs():
        raise VMError(f"VM lab {lab!r} exists: weft-lab vm down --lab {lab} first")
    t0 = time.monotonic()
    build_image(log=log)
    times = {"image": time.monotonic() - t0}
    sd = state_dir(lab)
    guests = plan(lab, count, memory)
    try:
        STATE_ROOT.mkdir(parents=True, exist_ok=True)
        sd.mkdir(mode=0o700)                # the share holds the cluster's API token
        (sd / "share").mkdir()
        (sd / "guests.json").write_text(json.dumps([asdict(g) for g in guests]))
        t1 = time.monotonic()
        _fill_share(sd / "share", guests)
        times["wheelhouse"] = time.monotonic() - t1
        (sd / "prepared").write_text(json.dumps(times))
    except BaseException:
        down(lab)
        raise
    return times


def _fill_share(share: Path, guests: list[Guest]) -> None:
    """What the guests read from the 9p share: dist/ and install-weft.sh (docs/docker.md's
    install, weft_lab.dist), hosts.yaml, token, provisioning script, image."""
    dist.stage(share, wheelhouse())
    (share / "hosts.yaml").write_text(hosts_yaml(guests))
    (share / "weft.env").write_text(f"WEFT_API_TOKEN={secrets.token_hex(16)}\n"
                                    f"WEFT_API_HOST={guests[0].ip}\n")
    shutil.copyfile(REPO / "vagrant" / "provision.sh", share / "provision.sh")
    tar = docker.image_tarball()
    shutil.copyfile(tar, share / "busybox-iperf3.tar")


def _wait_ssh(lab: str, g: Guest, deadline: float) -> None:
    sd = state_dir(lab)
    while time.monotonic() < deadline:
        pid = _pid(sd / f"{g.name}.pid")
        if pid is None or not docker.alive(pid):
            raise VMError(f"QEMU of {g.name} exited; console: {sd}/{g.name}.console")
        proc = subprocess.run(ssh_argv(lab, g, "true"), capture_output=True, timeout=120,
                              stdin=subprocess.DEVNULL)
        if proc.returncode == 0:
            return
        time.sleep(3)
    raise VMError(f"{g.name} not reachable by ssh in time; console: {sd}/{g.name}.console")


def provision(lab: str, guests: list[Guest]) -> None:
    """Install and start weft in every guest, controller first (vagrant/provision.sh)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int, g: Guest) -> None:
        role = "controller" if i == 0 else "host"
        sh(lab, g.name, ["bash", "/mnt/weft/provision.sh", g.name, g.ip, role, "/mnt/weft"],
           timeout=900)

    # in parallel: an agent that starts before the controller keeps retrying
    with ThreadPoolExecutor(max_workers=len(guests)) as pool:
        for f in [pool.submit(one, i, g) for i, g in enumerate(guests)]:
            f.result()


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def down(lab: str) -> float:
    """Kill the guests (by pid), delete the namespace and the lab's files.  Idempotent."""
    t0 = time.monotonic()
    sd, ns = state_dir(lab), netns(lab)
    pids = {p for p in (_pid(f) for f in sd.glob("*.pid")) if p} if sd.exists() else set()
    if ns in netns_list():
        pids |= set(netns_pids(ns))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            if _is_ours(pid, lab, ns):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        while any(docker.alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
    if ns in netns_list():
        run(["ip", "netns", "del", ns], check=False)
    shutil.rmtree(sd, ignore_errors=True)
    return time.monotonic() - t0


def _is_ours(pid: int, lab: str, ns: str) -> bool:
    """A pid from a pid file may be reused: kill only QEMU of this lab, or what is in ns."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        if f"weft-{lab}-" in cmd:
            return True
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{ns}").st_ino
    except OSError:
        return False


def status(lab: str) -> dict:
    sd = state_dir(lab)
    out: dict = {"lab": lab, "netns": netns(lab), "accel": accel()[1], "guests": []}
    for g in load(lab):
        pid = _pid(sd / f"{g.name}.pid")
        rss = None
        if pid and docker.alive(pid):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) // 1024
        overlay = sd / f"{g.name}.qcow2"
        out["guests"].append({**asdict(g), "pid": pid, "alive": bool(pid and docker.alive(pid)),
                              "rss_mib": rss,
                              "overlay_mib": overlay.stat().st_blocks * 512 // 2**20
                              if overlay.exists() else None})
    try:
        out["times"] = json.loads((sd / "times.json").read_text())
    except (OSError, ValueError):
        pass
    return out


# -- command line ----------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    """`weft-lab vm image|up|down|status|exec|list` (`vm bench` is weft_lab.vmbench's)."""
    import argparse
    ap = argparse.ArgumentParser(prog="weft-lab vm", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_img = sub.add_parser("image", help="build the guest image (once; cached)")
    p_img.add_argument("--force", action="store_true", help="rebuild even if cached")
    p_up = sub.add_parser("up", help="boot guests and run weft in them")
    p_up.add_argument("--lab", default="vm")
    p_up.add_argument("--guests", type=int, default=2)
    p_up.add_argument("--memory", type=int, default=1024, help="MiB per guest (+256 on host1)")
    p_up.add_argument("--no-weft", action="store_true", help="boot only, install nothing")
    p_up.add_argument("--keep", action="store_true", help="on failure leave the guests up")
    p_down = sub.add_parser("down", help="kill the guests; leave only the cached image")
    p_down.add_argument("--lab", default="vm")
    p_st = sub.add_parser("status", help="guests, their QEMU pid, memory, overlay size")
    p_st.add_argument("--lab", default="vm")
    p_ex = sub.add_parser("exec", help="run a command in a guest: weft-lab vm exec host1 -- CMD")
    p_ex.add_argument("--lab", default="vm")
    p_ex.add_argument("guest")
    p_ex.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("list", help="VM labs that are up")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "image":
            t0 = time.monotonic()
            paths = build_image(force=args.force)
            print(f"{paths['disk']} ({time.monotonic() - t0:.0f}s)")
        elif args.cmd == "up":
            times = up(args.lab, args.guests, args.memory, not args.no_weft, keep=args.keep)
            print(f"VM lab {args.lab} up: " + ", ".join(f"{k} {v:.0f}s" for k, v in times.items()))
        elif args.cmd == "down":
            print(f"VM lab {args.lab} down in {down(args.lab):.1f}s")
        elif args.cmd == "status":
            print(json.dumps(status(args.lab), indent=1))
        elif args.cmd == "list":
            print("\n".join(list_labs()))
        elif args.cmd == "exec":
            cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
            if not cmd:
                ap.error("exec needs a command after --")
            # one argument is a shell command line (`exec host1 -- 'a | b'`)
            full = ssh_argv(args.lab, guest(args.lab, args.guest),
                            cmd[0] if len(cmd) == 1 else cmd, tty=sys.stdin.isatty())
            os.execvp(full[0], full)
    except (VMError, CommandError) as exc:
        print(f"weft-lab vm: {exc}", file=sys.stderr)
        return 1
    return 0


def api(lab: str, method: str, path: str, body: dict | None = None, timeout: float = 30):
    """Call the controller's REST API from inside the lab's namespace (curl); JSON back.

    The API listens on host1's underlay address, reachable only from the namespace.
    """
    env = dict(line.split("=", 1) for line in
               (state_dir(lab) / "share" / "weft.env").read_text().split())
    url = f"http://{load(lab)[0].ip}:8080{path}"
    argv = ["curl", "-sS", "-m", str(int(timeout)), "-X", method, "-H",
            f"Authorization: Bearer {env['WEFT_API_TOKEN']}", "-w", "\n%{http_code}"]
    if body is not None:
        argv += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    try:
        out = run([*argv, url], ns=netns(lab), timeout=timeout + 5)
    except (CommandError, subprocess.TimeoutExpired) as exc:
        raise VMError(f"{method} {path}: {exc}") from None
    text, _, code = out.rpartition("\n")
    if not code.startswith("2"):
        raise VMError(f"{method} {path}: HTTP {code}: {text[:300]}")
    return json.loads(text) if text.strip() else None


def wait_converged(lab: str, timeout: float = 600) -> float:
    """Until every guest's switch is connected and in sync and Docker runs everywhere."""
    t0 = time.monotonic()
    guests = load(lab)
    while time.monotonic() - t0 < timeout:
        try:
            health = api(lab, "GET", "/v1/health", timeout=10)
            if health["switches_in_sync"] == len(guests) and all(
                    sh(lab, g.name, "systemctl is-active docker weft-ovs-agent weft-docker-plugin",
                       check=False, timeout=60).split() == ["active"] * 3 for g in guests):
                return time.monotonic() - t0
        except (VMError, CommandError, subprocess.TimeoutExpired, KeyError, ValueError):
            pass
        time.sleep(3)
    raise VMError(f"VM lab {lab} did not converge in {timeout:.0f}s")
