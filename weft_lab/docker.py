"""Real Docker in the lab: one dockerd per lab host, `docker run` containers.

Each lab host runs Debian's dockerd (docker.io) inside the host's network
namespace, started with exactly the daemon.json fragment that host's ovs-agent
wrote, so the lab tests what users run.  Three things are global on one
machine and are made per host here:

* ``/run/docker/plugins`` (where dockerd finds network plugins) and
  ``/etc/docker`` (dockerd writes key.json there): each dockerd runs in a
  private mount namespace with per-host directories bind-mounted over them, so
  every host can have its own ``weft`` plugin socket under the same name;
* cgroups: containers go under ``/weft-lab.LAB.HOST`` (``--cgroup-parent``),
  which `down` removes;
* nothing else: data and exec roots live in the host's state directory.

Containers are namespaces like any other lab node: the lab names the
container's network namespace ``LAB.C`` (`ip netns attach`), so `weft-lab exec`,
the traffic tools and `down` work on them unchanged, while ``docker exec`` and
``docker ps`` show real containers.  No registry is reachable: the image is
built once from Debian's busybox-static plus iperf3 and its libraries
(`docker import` of a local tarball), cached in the lab cache (weft_lab/cache.py).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import tarfile
import time
from pathlib import Path

from weft_lab import cache, keeper
from weft_lab.shell import CommandError, run

DOCKER = "/usr/bin/docker"          # Debian's client; /usr/local/bin/docker may be newer
DOCKERD = "/usr/sbin/dockerd"
IMAGE = "weft-lab/busybox:1"
PLUGIN_DIR = Path("/run/docker/plugins")
ETC_DIR = Path("/etc/docker")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CONTAINERD_RUN = Path("/run/containerd")
# What goes into the image: busybox (static) as every command, iperf3 with its libraries.
IMAGE_BINARIES = ("/bin/busybox", "/usr/bin/iperf3")


class DockerError(RuntimeError):
    """Docker could not be started or driven in the lab; the message says why."""


def available() -> bool:
    return Path(DOCKERD).exists() and Path(DOCKER).exists()


# -- paths ----------------------------------------------------------------------------

def docker_dir(host_dir: Path) -> Path:
    return host_dir / "docker"


def socket_path(host_dir: Path) -> Path:
    return docker_dir(host_dir) / "docker.sock"


def plugin_dir(host_dir: Path) -> Path:
    """This host's /run/docker/plugins, as its dockerd sees it."""
    return docker_dir(host_dir) / "plugins"


def cgroup_parent(lab: str, host: str) -> str:
    return f"/weft-lab.{lab}.{host}"


# -- the image ------------------------------------------------------------------------

def _closure(binaries: tuple[str, ...]) -> list[Path]:
    """The binaries and every shared library they load (ldd), resolved."""
    files: dict[str, Path] = {}
    for b in binaries:
        files[b] = Path(b)
        out = run(["ldd", b], check=False)
        for line in out.splitlines():
            parts = line.split()
            path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0] if parts else ""
            if path.startswith("/"):
                files[path] = Path(path)
    return sorted(files.values())


def image_tarball() -> Path:
    """A root filesystem tarball for `docker import`, built once per input version.

    Safe to call from several lab hosts (threads) and labs (processes) at once: the
    cache builds it once and hands every caller the whole file (weft_lab/cache.py).
    """
    files = _closure(IMAGE_BINARIES)
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f).encode() + f.resolve().read_bytes())
    path = cache.root() / f"busybox-iperf3-{digest.hexdigest()[:12]}.tar"
    return cache.fill(path, lambda tmp: _write_image(tmp, files))


def _write_image(dest: Path, files: list[Path]) -> None:
    with tarfile.open(dest, "w") as tar:
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "proc", "sys", "dev",
                  "root", "lib", "lib64", "lib/x86_64-linux-gnu", "var/run"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        for f in files:
            tar.add(str(f.resolve()), arcname=str(f).lstrip("/"))
        for applet in run(["/bin/busybox", "--list"]).split():
            if applet == "busybox":
                continue
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "/bin/busybox"
            tar.addfile(info)
        for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
                           ("etc/group", "root:x:0:\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


# -- the daemon ------------------------------------------------------------------------

def start_dockerd(lab: str, host: str, ns: str, host_dir: Path, state_dir: Path,
                  config: Path) -> int:
    """Start this host's dockerd with `config` (the agent's daemon.json), under the keeper."""
    d = docker_dir(host_dir)
    for sub in ("data", "exec", "plugins", "etc"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    for mount_point in (PLUGIN_DIR, ETC_DIR, CONTAINERD_RUN):
        mount_point.mkdir(parents=True, exist_ok=True)
    dockerd = [DOCKERD, "--config-file", str(config), "--data-root", str(d / "data"),
               "--exec-root", str(d / "exec"), "-H", f"unix://{socket_path(host_dir)}",
               "-p", str(d / "docker.pid"), "--cgroup-parent", cgroup_parent(lab, host),
               # cgroupfs: with systemd as the cgroup driver (cgroup v2 hosts running
               # systemd) a --cgroup-parent must be a slice, and the lab's is a path
               "--exec-opt", "native.cgroupdriver=cgroupfs",
               "--log-level", "warn"]
    # Private mounts so the per-host plugin dir and /etc/docker are seen only by this
    # dockerd (and its containerd); they vanish with its last process.
    # A tmpfs on /run/containerd hides the machine's containerd socket (dockerd would
    # use a system containerd if it found one, putting the lab's containers out of
    # reach of `down`): each lab dockerd starts its own containerd.
    script = ("mount -t tmpfs tmpfs /run/containerd && "
              f"mount --bind {d / 'plugins'} {PLUGIN_DIR} && "
              f"mount --bind {d / 'etc'} {ETC_DIR} && "
              f"exec nsenter --net=/run/netns/{ns} \"$@\"")
    # Not `ip netns exec`: its private /sys hides the cgroup mounts dockerd needs.
    # The keeper lives in the machine's mount namespace, so start from there.
    pid = keeper.request(state_dir, {
        "op": "spawn", "ns": None, "log": str(d / "dockerd.log"),
        "argv": ["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                 "dockerd", *dockerd]})["pid"]
    return pid


def stop_dockerd(host_dir: Path, timeout: float = 30) -> None:
    """Stop this host's dockerd the way systemd does (SIGTERM) and wait until it is gone."""
    pidfile = docker_dir(host_dir) / "docker.pid"
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and _state(pid) != "Z":
        if time.monotonic() > deadline:
            raise DockerError(f"dockerd {pid} did not stop in {timeout:.0f}s")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    return _state(pid) not in ("Z", "gone")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def start_container(host_dir: Path, name: str, ns: str) -> dict:
    """`docker start` a stopped lab container and point the lab's netns name at it again."""
    docker(host_dir, "start", name)
    info = inspect(host_dir, name)
    run(["ip", "netns", "del", ns], check=False)
    run(["ip", "netns", "attach", ns, str(info["pid"])])
    return info


def docker(host_dir: Path, *args: str, timeout: float = 60, check: bool = True) -> str:
    """Run the Docker CLI against a lab host's dockerd."""
    return run([DOCKER, "-H", f"unix://{socket_path(host_dir)}", *args], timeout=timeout,
               check=check)


def wait_ready(host_dir: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            docker(host_dir, "version", "--format", "{{.Server.Version}}", timeout=10)
            return
        except (CommandError, OSError) as exc:
            if time.monotonic() > deadline:
                log = docker_dir(host_dir) / "dockerd.log"
                tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
                raise DockerError(f"dockerd did not come up in {timeout:.0f}s: {exc}\n{tail}")
        time.sleep(0.2)


def load_image(host_dir: Path) -> None:
    """Import the lab image into this host's dockerd (idempotent)."""
    if docker(host_dir, "images", "-q", IMAGE).strip():
        return
    docker(host_dir, "import", str(image_tarball()), IMAGE, timeout=120)


def run_container(host_dir: Path, lab: str, name: str, ns: str, mac: str | None = None,
                  network: str | None = None, ip: str | None = None) -> dict:
    """`docker run` a lab container and name its network namespace `ns`.

    Returns what Docker says of it: id, pid, ip (with prefix) and mac.
    """
    args = ["run", "-d", "--pull=never", "--init", "--name", name, "--hostname", name,
            "--label", f"weft-lab={lab}"]
    if mac:
        args += ["--mac-address", mac]
    if network:
        args += ["--network", network]
    if ip:
        args += ["--ip", ip]
    docker(host_dir, *args, IMAGE, "sleep", "2147483647")
    info = inspect(host_dir, name)
    run(["ip", "netns", "attach", ns, str(info["pid"])])
    return info


def inspect(host_dir: Path, name: str) -> dict:
    raw = json.loads(docker(host_dir, "inspect", name))[0]
    nets = raw["NetworkSettings"]["Networks"]
    net = next(iter(nets.values())) if nets else {}
    ip = f"{net['IPAddress']}/{net['IPPrefixLen']}" if net.get("IPAddress") else None
    return {"id": raw["Id"], "pid": raw["State"]["Pid"], "ip": ip,
            "mac": net.get("MacAddress"), "running": raw["State"]["Running"]}


def _lab_groups(lab: str) -> list[Path]:
    """The lab's container cgroups in every hierarchy (v1 controllers, or the v2 root)."""
    prefix = f"weft-lab.{lab}."
    found = []
    for hierarchy in [CGROUP_ROOT, *(p for p in CGROUP_ROOT.iterdir() if p.is_dir())] \
            if CGROUP_ROOT.exists() else []:
        try:
            found += [g for g in hierarchy.iterdir() if g.name.startswith(prefix)]
        except OSError:
            continue
    return found


def container_pids(lab: str) -> set[int]:
    """Every process in the lab's container cgroups.

    A container started by a plain `docker run` has a network namespace the lab never
    named, so killing by namespace misses it; once its shim is gone it would live on
    under PID 1.  Its cgroup always knows it.
    """
    pids: set[int] = set()
    for group in _lab_groups(lab):
        for procs in group.rglob("cgroup.procs"):
            try:
                pids |= {int(p) for p in procs.read_text().split()}
            except (OSError, ValueError):
                continue
    return pids


def remove_cgroups(lab: str) -> None:
    """Delete the cgroups the lab's dockerds made (empty once their processes are gone)."""
    for group in _lab_groups(lab):
        for sub in sorted((p for p in group.rglob("*") if p.is_dir()),
                          key=lambda p: len(p.parts), reverse=True):
            _rmdir(sub)
        _rmdir(group)


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def ensure_tools() -> None:
    if not available():
        raise DockerError("docker.io is not installed (./dev.sh setup installs it)")
    if not shutil.which("unshare") or not shutil.which("nsenter"):
        raise DockerError("unshare/nsenter missing (util-linux)")
