"""Temporary harness: a real dockerd and the weft plugin per lab host.

Stands in until weft_lab's own Docker support lands on main (then the tests
use that).  Each dockerd runs in the host's network namespace and in a
private mount namespace with a per-host directory bound over
/run/docker/plugins, so every host's plugin is called `weft`.  Docker-run
containers get their namespace named ``LAB.NAME`` (`ip netns attach`) and are
added to the lab's node list, so the lab's traffic tools and `down` treat
them like any other node.
"""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from weft_lab import keeper
from weft_lab import lab as L
from weft_lab.shell import run

DOCKER = "/usr/bin/docker"
IMAGE = "weft-plugin-test:1"
CACHE = Path("/var/cache/weft-lab")
PLUGINS = Path("/run/docker/plugins")
ETC = Path("/etc/docker")


def ddir(lab: str, host: str) -> Path:
    return L.host_dir(lab, host) / "docker"


def image_tarball() -> Path:
    """busybox-static as every command, iperf3 with its ldd closure; built once."""
    path = CACHE / "weft-plugin-test-image.tar"
    if path.exists():
        return path
    files = {"/usr/bin/busybox", "/usr/bin/iperf3"}
    for line in run(["ldd", "/usr/bin/iperf3"]).splitlines():
        parts = line.split()
        p = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if p.startswith("/"):
            files.add(p)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        for d in ("bin", "usr/bin", "etc", "tmp", "proc", "sys", "dev", "lib", "lib64",
                  "lib/x86_64-linux-gnu"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        for f in sorted(files):
            tar.add(str(Path(f).resolve()), arcname=f.lstrip("/"))
        for applet in run(["/usr/bin/busybox", "--list"]).split():
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "/usr/bin/busybox"
            tar.addfile(info)
        data = b"root:x:0:0:root:/root:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    tmp.replace(path)
    return path


def docker(lab: str, host: str, *args: str, timeout: float = 60, check: bool = True) -> str:
    return run([DOCKER, "-H", f"unix://{ddir(lab, host)}/docker.sock", *args],
               timeout=timeout, check=check)


def start_dockerd(lab: str, host: str) -> subprocess.Popen:
    d = ddir(lab, host)
    for sub in ("data", "exec", "plugins", "etc"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    for mp in (PLUGINS, ETC):
        mp.mkdir(parents=True, exist_ok=True)
    script = (f"mount --bind {d / 'plugins'} {PLUGINS} && mount --bind {d / 'etc'} {ETC} && "
              f"exec nsenter --net=/run/netns/{L.ns_name(lab, host)} \"$@\"")
    log = open(d / "dockerd.log", "ab")
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "dockerd",
         "/usr/sbin/dockerd", "--data-root", str(d / "data"), "--exec-root", str(d / "exec"),
         "-H", f"unix://{d}/docker.sock", "-p", str(d / "docker.pid"), "--bridge=none",
         "--iptables=false", "--ip-masq=false", "--log-level=warn"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    log.close()
    deadline = time.monotonic() + 60
    while docker(lab, host, "version", "--format", "{{.Server.Version}}", check=False,
                 timeout=10).strip() == "":
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"dockerd of {host} did not start: {d}/dockerd.log")
        time.sleep(0.2)
    if not docker(lab, host, "images", "-q", IMAGE).strip():
        docker(lab, host, "import", str(image_tarball()), IMAGE, timeout=120)
    return proc


def start_plugin(lab: str, host: str, verbose: bool = False) -> int:
    """`ovs-agent docker-plugin` on a lab host, under the keeper; its socket in the host's
    plugin directory, which its dockerd sees as /run/docker/plugins/weft.sock."""
    sd, d = L.state_dir(lab), ddir(lab, host)
    sock = d / "plugins" / "weft.sock"
    sock.unlink(missing_ok=True)
    env = L.ovs_env(lab, host)
    env["WEFT_API_TOKEN"] = (sd / "api.token").read_text().strip()
    pid = keeper.request(sd, {
        "op": "spawn", "ns": L.ns_name(lab, host), "env": env,
        "log": str(L.host_dir(lab, host) / "weft-plugin.log"),
        "argv": [sys.executable, "-m", "ovs_agent.cli", "docker-plugin", "--peers",
                 str(sd / "hosts.yaml"), "--host", host, "--socket", str(sock),
                 *(["-v"] if verbose else [])]})["pid"]
    deadline = time.monotonic() + 20
    while not sock.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the plugin of {host} did not start")
        time.sleep(0.05)
    return pid


def run_container(lab: str, host: str, name: str, network: str, *cmd: str,
                  extra: tuple[str, ...] = ()) -> dict:
    """`docker run -d --network NET`; the container becomes lab node NAME."""
    docker(lab, host, "run", "-d", "--pull=never", "--name", name, "--network", network,
           *extra, IMAGE, *(cmd or ("sleep", "1000000")))
    info = inspect(lab, host, name)
    ns = L.ns_name(lab, name)
    run(["ip", "netns", "attach", ns, str(info["pid"])])
    state = L.state_dir(lab) / "topology.json"
    topo = json.loads(state.read_text())
    topo["containers"].append({"name": name, "host": host, "attach": "docker",
                               "ip": info["ip"], "mac": info["mac"], "tenant": None})
    state.write_text(json.dumps(topo))
    return info


def remove_container(lab: str, host: str, name: str) -> None:
    docker(lab, host, "rm", "-f", name, check=False)
    run(["ip", "netns", "del", L.ns_name(lab, name)], check=False)
    state = L.state_dir(lab) / "topology.json"
    topo = json.loads(state.read_text())
    topo["containers"] = [c for c in topo["containers"] if c["name"] != name]
    state.write_text(json.dumps(topo))


def inspect(lab: str, host: str, name: str) -> dict:
    raw = json.loads(docker(lab, host, "inspect", name))[0]
    net = next(iter(raw["NetworkSettings"]["Networks"].values()), {})
    return {"id": raw["Id"], "pid": raw["State"]["Pid"],
            "ip": f"{net['IPAddress']}/{net['IPPrefixLen']}" if net.get("IPAddress") else None,
            "mac": net.get("MacAddress")}


def stop_all(lab: str, hosts: list[str], procs: list[subprocess.Popen]) -> None:
    """Remove every container, stop every dockerd (before `weft-lab down`)."""
    for h in hosts:
        ids = docker(lab, h, "ps", "-aq", check=False, timeout=30).split()
        if ids:
            docker(lab, h, "rm", "-f", *ids, check=False, timeout=60)
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
