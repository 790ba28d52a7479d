"""`weft-lab bench [--quick]`: data plane and control plane, measured side by side.

Every figure is the median of several runs with its spread (min..max), and the
headline figures are ratios taken within one run, because this machine is
shared and noisy.  Each section brings up its own lab and takes it down.
Results go to a table on stdout and to JSON (and a PNG plot, if matplotlib is
installed: `./dev.sh bench`).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weft_lab import cluster as C
from weft_lab import lab as L
from weft_lab import nodes as N
from weft_lab.measure import bind_to_first_packet, percentile, plug_bare_port
from weft_lab.shell import in_ns, netns_pids, run
from weft_lab.topology import parse
from weft_lab.traffic import iperf, ping

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Figure:
    name: str
    values: list[float]
    unit: str
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "unit": self.unit, "median": statistics.median(self.values),
                "min": min(self.values), "max": max(self.values), "runs": self.values,
                "note": self.note}

    def row(self) -> str:
        med = statistics.median(self.values)
        spread = f"{min(self.values):.3g}..{max(self.values):.3g}" if len(self.values) > 1 else ""
        return f"{self.name:<58} {med:>10.4g} {self.unit:<8} {spread:<20} {self.note}"


def _topo(name: str, hosts: int, tunnel: str = "vxlan", port_type: str = "auto",
          tenant_containers: bool = True, agent: bool = True, controller: bool = True,
          docker: bool = False):
    # dockerd per host only where Docker is what is measured: it costs ~1 s and ~80 MB
    # per host, which would swamp the control-plane figures at 16-32 hosts.
    lines = [f"name: {name}", f"tunnel_type: {tunnel}", f"port_type: {port_type}",
             f"agent: {str(agent).lower()}", f"controller: {str(controller).lower()}",
             f"docker: {str(docker).lower()}",
             "tenants: [{name: bench, subnet: 10.50.0.0/24}]", "hosts:"]
    for i in range(1, hosts + 1):
        lines.append(f"  - name: h{i}")
        if tenant_containers and i <= 2:
            lines.append(f"    containers: [{{name: t{i}, attach: br0, tenant: bench, "
                         f"ip: 10.50.0.{i}/24}}]")
    return parse("\n".join(lines) + "\n")


def _median_ratio(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b)]


# -- data plane ------------------------------------------------------------------------------

def dataplane(tunnel: str, port_type: str, runs: int, seconds: float) -> list[Figure]:
    """Container-to-container through weft's full pipeline vs host-to-host, same lab."""
    topo = _topo(f"bd{tunnel[:2]}{port_type[:2]}", 2, tunnel, port_type)
    label = f"{tunnel}, {port_type} ports"
    with L.running(topo):
        C.wait_converged(topo)
        ping(topo.name, "t1", "10.50.0.2", count=3)         # warm ARP and learning
        c2c, h2h = [], []
        for _ in range(runs):
            c2c.append(iperf(topo.name, "t1", "t2", "10.50.0.2", seconds=seconds))
            h2h.append(iperf(topo.name, "h1", "h2", topo.host("h2").underlay_ip, seconds=seconds))
        lat_c = ping(topo.name, "t1", "10.50.0.2", count=300, interval=0.005).rtts_ms
        lat_h = ping(topo.name, "h1", topo.host("h2").underlay_ip, count=300,
                     interval=0.005).rtts_ms
    return [Figure(f"TCP container->container ({label})", c2c, "Mbit/s"),
            Figure(f"TCP host->host underlay ({label})", h2h, "Mbit/s"),
            Figure(f"overlay/underlay ratio ({label})", _median_ratio(c2c, h2h), "ratio",
                   "physical limit ~0.97"),
            Figure(f"ping p50 container ({label})", [percentile(list(lat_c), 50)], "ms"),
            Figure(f"ping p99 container ({label})", [percentile(list(lat_c), 99)], "ms"),
            Figure(f"ping p50 host ({label})", [percentile(list(lat_h), 50)], "ms"),
            Figure(f"ping p99 host ({label})", [percentile(list(lat_h), 99)], "ms")]


def flannel_baseline(runs: int, seconds: float) -> list[Figure]:
    """Kernel VXLAN device on a Linux bridge per host (flannel style), no OVS at all."""
    topo = _topo("bfl", 1, tenant_containers=False, agent=False, controller=False)
    lab = topo.name
    with L.running(topo):
        ctl = N.ns_name(lab, N.CTL)
        for i, peer in ((1, 2), (2, 1)):
            host, cont = N.ns_name(lab, f"fh{i}"), N.ns_name(lab, f"fc{i}")
            for ns in (host, cont):
                run(["ip", "netns", "add", ns])
                run(["ip", "link", "set", "lo", "up"], ns=ns)
            run(["ip", "link", "add", "eth0", "netns", host, "type", "veth", "peer", "name",
                 f"u-fh{i}", "netns", ctl])
            run(["ip", "link", "set", f"u-fh{i}", "master", L.UNDERLAY_BRIDGE, "up"], ns=ctl)
            run(["ip", "addr", "add", f"192.168.50.{200 + i}/24", "dev", "eth0"], ns=host)
            run(["ip", "link", "set", "eth0", "up"], ns=host)
            run(["ip", "link", "add", "flannel.1", "type", "vxlan", "id", "1", "dstport", "8472",
                 "local", f"192.168.50.{200 + i}", "remote", f"192.168.50.{200 + peer}",
                 "dev", "eth0"], ns=host)
            run(["ip", "link", "add", "cni0", "type", "bridge"], ns=host)
            run(["ip", "link", "set", "flannel.1", "master", "cni0", "up"], ns=host)
            run(["ip", "link", "set", "cni0", "up"], ns=host)
            run(["ip", "link", "add", "veth0", "netns", host, "type", "veth", "peer", "name",
                 "eth0", "netns", cont])
            run(["ip", "link", "set", "veth0", "master", "cni0", "up"], ns=host)
            run(["ip", "link", "set", "eth0", "mtu", "1450", "up"], ns=cont)
            run(["ip", "addr", "add", f"10.244.0.{i}/24", "dev", "eth0"], ns=cont)
        c2c, h2h = [], []
        for _ in range(runs):
            c2c.append(_ns_iperf(N.ns_name(lab, "fc1"), N.ns_name(lab, "fc2"), "10.244.0.2",
                                 seconds))
            h2h.append(_ns_iperf(N.ns_name(lab, "fh1"), N.ns_name(lab, "fh2"), "192.168.50.202",
                                 seconds))
    return [Figure("TCP container->container (flannel-style kernel VXLAN)", c2c, "Mbit/s"),
            Figure("TCP host->host (kernel, same underlay bridge)", h2h, "Mbit/s"),
            Figure("overlay/underlay ratio (flannel-style)", _median_ratio(c2c, h2h), "ratio")]


def _ns_iperf(client_ns: str, server_ns: str, ip: str, seconds: float) -> float:
    srv = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            res = subprocess.run(["ip", "netns", "exec", client_ns, "iperf3", "-c", ip, "-t",
                                  str(seconds), "-J"], capture_output=True, text=True)
            if "Connection refused" not in res.stdout + res.stderr:
                break
            time.sleep(0.1)
        return json.loads(res.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
    finally:
        srv.kill()
        srv.wait()


# -- control plane ------------------------------------------------------------------------------

def bind_latency(hosts: int, rounds: int) -> list[Figure]:
    topo = _topo(f"bb{hosts}", hosts)
    with L.running(topo):
        C.wait_converged(topo)
        ns = plug_bare_port(topo.name, "h1", "x1", "10.50.0.50/24", "02:00:00:00:00:50", "wx1")
        with C.api(topo.name) as c:
            t2_mac = c.get("/v1/ports", params={"host": "h2"}).json()[0]["mac"]
            lat = bind_to_first_packet(c, ns, {"host": "h1", "port": "wx1", "tenant": "bench",
                                               "mac": "02:00:00:00:00:50"},
                                       "10.50.0.2", t2_mac, rounds,
                                       settle=lambda: C.wait_converged(topo))
    ms = [x * 1000 for x in lat]
    return [Figure(f"REST bind -> first packet p50 ({hosts} hosts, {rounds} bindings)",
                   [percentile(ms, 50)], "ms"),
            Figure(f"REST bind -> first packet p99 ({hosts} hosts, {rounds} bindings)",
                   [percentile(ms, 99)], "ms", "target < 100 ms at 16 hosts")]


def docker_run_latency(rounds: int) -> list[Figure]:
    """`docker run` on host1 -> its first ping answered by a container on host2.

    The clock starts before `docker run` and stops at the first reply, polling with
    20 ms pings from the new container's namespace: what a user waiting on a fresh
    container sees (image already local).
    """
    from weft_lab import docker as D
    topo = parse("name: bdock\nhosts:\n  - name: h1\n  - name: h2\n"
                 "    containers: [{name: c2}]\n")
    total, created = [], []
    with L.running(topo):
        C.wait_converged(topo)
        d1, dst = N.host_dir(topo.name, "h1"), topo.addr("c2")
        for i in range(rounds):
            t0 = time.monotonic()
            D.docker(d1, "run", "-d", "--pull=never", "--init", "--name", f"r{i}", D.IMAGE,
                     "sleep", "600")
            t_run = time.monotonic()
            pid = D.inspect(d1, f"r{i}")["pid"]
            while " 1 received" not in run(["nsenter", f"--net=/proc/{pid}/ns/net", "ping", "-n",
                                            "-c", "1", "-W", "0.02", dst], check=False):
                if time.monotonic() - t0 > 10:
                    raise RuntimeError(f"r{i}: no reply from {dst} in 10 s")
            total.append((time.monotonic() - t0) * 1000)
            created.append((t_run - t0) * 1000)
            D.docker(d1, "rm", "-f", f"r{i}")
    return [Figure(f"docker run -> first packet across hosts p50 ({rounds} runs)",
                   [percentile(total, 50)], "ms",
                   f"docker run itself p50 {percentile(created, 50):.0f} ms"),
            Figure(f"docker run -> first packet across hosts p99 ({rounds} runs)",
                   [percentile(total, 99)], "ms",
                   f"docker run itself p99 {percentile(created, 99):.0f} ms")]


def first_packet_in(lab: str, host_dir: Path, target_node: str, dst: str, name: str,
                    network: str | None) -> tuple[float, float, float, float]:
    """One `docker run -d IMAGE ping -i 0.01 DST` on ``host_dir``'s host; the first echo
    request seen on ``target_node`` (another host's container) ends it.

    Returns wall-clock times (time.time()): `docker run` started, returned, the first
    echo request captured there (tcpdump -tt), and the container's process started
    (Docker's State.StartedAt).  The same method for docker0 and a
    weft network, so the two compare within one lab and one run.
    """
    from weft_lab import docker as D
    from weft_lab.traffic import tcpdump
    dump = tcpdump(lab, target_node, ["-i", "eth0", "-c", "1", "-tt",
                                      f"icmp[icmptype] = icmp-echo and dst host {dst}"])
    try:
        t0 = time.time()
        D.docker(host_dir, "run", "-d", "--pull=never", "--name", name,
                 *(("--network", network) if network else ()), D.IMAGE,
                 "ping", "-i", "0.01", dst)
        t_run = time.time()
        out, _ = dump.communicate(timeout=20)
        started = json.loads(D.docker(host_dir, "inspect", "-f", "{{json .State.StartedAt}}",
                                      name))
    finally:
        if dump.poll() is None:
            dump.kill()
            dump.wait()
        D.docker(host_dir, "rm", "-f", name, check=False)
    return t0, t_run, float(out.split()[0]), _rfc3339(started)


def _rfc3339(stamp: str) -> float:
    """Docker's `2026-12-07T18:38:01.123456789Z` as seconds since the epoch."""
    import calendar
    whole, _, frac = stamp.rstrip("Z").partition(".")
    return calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S")) + float(f"0.{frac or 0}")


def docker_first_packet(rounds: int) -> tuple[list[Figure], dict[str, Any]]:
    """`docker run` -> first packet at a container on another host: docker0 (default
    tenant) and a weft network (the plugin), interleaved in one lab
    (topologies/docker-plugin.yaml), the same method for both (`first_packet_in`)."""
    topo = parse((ROOT / "topologies" / "docker-plugin.yaml").read_text()) \
        .with_name("bfirst")
    ms: dict[str, list[float]] = {"docker0": [], "weft": []}
    ran: dict[str, list[float]] = {"docker0": [], "weft": []}
    with L.running(topo):
        C.wait_converged(topo)
        d1 = N.host_dir(topo.name, "host1")
        for i in range(rounds):
            for kind, node, net in (("docker0", "d2", None), ("weft", "red2", "red")):
                t0, t_run, t_pkt, t_start = first_packet_in(topo.name, d1, node, topo.addr(node),
                                                   f"fp{kind[0]}{i}", net)
                ms[kind].append((t_pkt - t0) * 1000)
                ran[kind].append((t_run - t0) * 1000)
                print(f"  {kind:8} run {i}: docker run {t0:.3f} returned +{(t_run - t0) * 1000:.0f}"
                      f" ms, process started +{(t_start - t0) * 1000:.0f} ms, first packet"
                      f" +{(t_pkt - t0) * 1000:.0f} ms", flush=True)
        keep_logs = os.environ.get("WEFT_BENCH_LOGS")     # a timeline from the lab's logs
        if keep_logs:
            import shutil
            dest = Path(keep_logs)
            dest.mkdir(parents=True, exist_ok=True)
            for f in [*N.host_dir(topo.name, "host1").glob("*.log"),
                      *N.state_dir(topo.name).glob("weft-manager*.log")]:
                shutil.copy(f, dest / f.name)
    figs = []
    for kind in ("docker0", "weft"):
        for q in (50, 90):
            figs.append(Figure(f"docker run -> first packet, {kind}, p{q} ({rounds} runs)",
                               [percentile(ms[kind], q)], "ms",
                               f"docker run -d itself p{q} {percentile(ran[kind], q):.0f} ms"))
    ratio = percentile(ms["weft"], 50) / percentile(ms["docker0"], 50)
    figs.append(Figure("docker run -> first packet, weft / docker0 (p50)", [ratio], "x",
                       "goal <= 1.2"))
    return figs, {"rounds": rounds, "ms": ms, "docker_run_ms": ran}


def _endpoints(n: int, hosts: int) -> list[dict]:
    return [{"host": f"h{1 + i % hosts}", "port": f"e{i}", "tenant": "bench",
             "mac": f"02:{(i >> 24) & 255:02x}:{(i >> 16) & 255:02x}:{(i >> 8) & 255:02x}:"
                    f"{i & 255:02x}:01"} for i in range(n)]


def _ofctl(lab: str, host: str, *args: str) -> str:
    return run(["ovs-ofctl", "-O", "OpenFlow13", *args], ns=N.ns_name(lab, host),
               env=N.ovs_env(lab, host), timeout=300)


def program_endpoints(n: int, hosts: int) -> tuple[list[Figure], dict]:
    """N endpoints bound in one call, until every switch is in sync; vs ovs-ofctl add-flows."""
    topo = _topo(f"bp{hosts}x{n // 1000}k", hosts, tenant_containers=False)
    figs: list[Figure] = []
    with L.running(topo):
        C.wait_converged(topo, timeout=120)
        rss_idle = _rss_mb(_controller_pid(topo))
        with C.api(topo.name, timeout=300) as c:
            t0 = time.monotonic()
            c.post("/v1/ports/bulk", json=_endpoints(n, hosts)).raise_for_status()
            C.wait_converged(topo, timeout=600)
            weft_s = time.monotonic() - t0
        rss = _rss_mb(_controller_pid(topo))
        # The practical limit: ovs-ofctl adding the very same flows and groups, read from
        # each switch, into a fresh bridge on that switch's OVS; one after the other, as
        # weft's single OpenFlow thread does.
        ofctl_s, n_flows_h1 = 0.0, 0
        for h in topo.hosts:
            flows = [f.strip() for f in _ofctl(topo.name, h.name, "dump-flows", "--no-stats",
                                               "br0").splitlines()
                     if "cookie=" in f and "cookie=0x5746040000000000" not in f]  # not learned
            groups = [g.strip() for g in _ofctl(topo.name, h.name, "dump-groups",
                                                "br0").splitlines()
                      if g.strip().startswith("group_id=")]
            n_flows_h1 = n_flows_h1 or len(flows)
            N.vsctl(topo.name, h.name, "add-br", "brx", "--", "set", "bridge", "brx",
                    "datapath_type=netdev", "fail_mode=secure", "protocols=OpenFlow13")
            d = N.host_dir(topo.name, h.name)
            (d / "flows.txt").write_text("\n".join(flows) + "\n")
            (d / "groups.txt").write_text("\n".join(groups) + "\n")
            t1 = time.monotonic()
            _ofctl(topo.name, h.name, "add-groups", "brx", str(d / "groups.txt"))
            _ofctl(topo.name, h.name, "add-flows", "brx", str(d / "flows.txt"))
            ofctl_s += time.monotonic() - t1
        # The same again on every switch at once (a fresh bridge each): weft writes to all
        # switches without waiting for one to finish, so this is the closer comparison.
        procs = []
        for h in topo.hosts:
            N.vsctl(topo.name, h.name, "add-br", "bry", "--", "set", "bridge", "bry",
                    "datapath_type=netdev", "fail_mode=secure", "protocols=OpenFlow13")
        t1 = time.monotonic()
        for h in topo.hosts:
            d = N.host_dir(topo.name, h.name)
            script = (f"ovs-ofctl -O OpenFlow13 add-groups bry {d / 'groups.txt'} && "
                      f"ovs-ofctl -O OpenFlow13 add-flows bry {d / 'flows.txt'}")
            procs.append(subprocess.Popen(in_ns(N.ns_name(topo.name, h.name), ["sh", "-c", script]),
                                          env={**os.environ, **N.ovs_env(topo.name, h.name)}))
        if any(p.wait(timeout=600) for p in procs):
            raise RuntimeError("ovs-ofctl add-flows failed on a switch")
        ofctl_parallel_s = time.monotonic() - t1
        # controller restart with everything in place: resync time and flow-mods sent
        restart_s, mods = _restart_controller(topo)
        rss_restart = _rss_mb(_controller_pid(topo))
    figs += [Figure(f"program {n} endpoints on {hosts} hosts (REST -> all in sync)", [weft_s], "s"),
             Figure(f"  flows on h1 after {n} endpoints on {hosts} hosts", [n_flows_h1], "flows"),
             Figure(f"  ovs-ofctl add-groups + add-flows, same flows, all {hosts} switches",
                    [ofctl_s], "s"),
             Figure(f"  weft/ovs-ofctl time ratio ({n} endpoints, {hosts} hosts)",
                    [weft_s / ofctl_s], "ratio", "target <= 1.5 (16 hosts), 1.2 (4)"),
             Figure(f"  ovs-ofctl, same flows, all {hosts} switches at once", [ofctl_parallel_s],
                    "s", f"weft/that: {weft_s / ofctl_parallel_s:.2f}"),
             Figure(f"controller restart -> all in sync ({n} endpoints, {hosts} hosts)",
                    [restart_s], "s"),
             Figure(f"  flow-mods sent on that restart ({n} endpoints, {hosts} hosts)", [mods],
                    "flow-mods", "target 0"),
             Figure(f"controller RSS, {n} endpoints on {hosts} hosts, in sync", [rss], "MiB",
                    f"idle before: {rss_idle:.0f} MiB; after the restart: {rss_restart:.0f} MiB")]
    return figs, {"hosts": hosts, "endpoints": n, "weft_s": weft_s, "ofctl_s": ofctl_s,
                  "ofctl_parallel_s": ofctl_parallel_s,
                  "flows_h1": len(flows), "restart_s": restart_s, "restart_flow_mods": mods,
                  "rss_mb": rss, "rss_idle_mb": rss_idle, "rss_restart_mb": rss_restart}


def pipeline_scale(n: int, hosts: int) -> tuple[list[Figure], dict]:
    """The controller's pure work for N endpoints on H hosts, no switches: the model
    read and validated, then per switch its desired state, the diff against an
    empty switch and every message encoded; in a child process, so its peak RSS
    is this work's own.  Endpoints as in ``program_endpoints``: bound, not plugged in."""
    out = run([sys.executable, "-m", "weft_lab.bench", "--pipeline-child", f"{n}x{hosts}"],
              timeout=3600)
    raw = json.loads(out.strip().splitlines()[-1])
    per = raw["switch_s"]
    return [Figure(f"pure pipeline, {n} endpoints on {hosts} hosts: flows per switch",
                   [raw["flows_per_switch"]], "flows", f"{raw['flows_total']} on all switches"),
            Figure(f"  model read and validated once ({n} endpoints)", [raw["model_s"]], "s"),
            Figure(f"  per switch: desired + diff + encode ({n} endpoints, {hosts} hosts)",
                   per, "s", f"all {hosts}: {sum(per):.1f} s, "
                   f"{raw['flows_total'] / sum(per):.0f} flow-mods/s"),
            Figure(f"  peak RSS of that work ({n} endpoints, {hosts} hosts)", [raw["rss_peak_mb"]],
                   "MiB", "the switches' known state held, as the controller does")], raw


def _pipeline_child(n: int, hosts: int) -> dict:
    from controller import ofmsg
    from controller.flows import SwitchState, apply_delta, diff
    from controller.model import Binding, Tenant, Topology
    from controller.pipeline import desired_state
    import gc
    gc.set_threshold(50_000, 20, 100)           # as controller.manager does
    names = tuple(f"h{i}" for i in range(1, hosts + 1))
    eps = _endpoints(n, hosts)
    t0 = time.perf_counter()
    topo = Topology((Tenant("bench", 1000, subnet="10.50.0.0/16"),),
                    tuple(Binding(e["host"], e["port"], e["tenant"], mac=e["mac"]) for e in eps),
                    names)
    model_s = time.perf_counter() - t0
    known, per, total = [], [], 0
    for k, h in enumerate(names):
        # as in the programming section: endpoints bound with their MACs, their ports not
        # plugged in (no switch holds 6,250 ports; one tenant's flood group-mod could not
        # either: a message is at most 64 KiB, about 2,000 output buckets)
        ports = {"weft-d0": 1}
        tunnels = {p: f"vx-{p}" for p in names if p != h}
        ports.update({f"vx-{p}": 1000 + j for j, p in enumerate(names) if p != h})
        t1 = time.perf_counter()
        want = desired_state(h, topo, ports, tunnels)
        delta = diff(want, SwitchState())
        size = sum(len(ofmsg.encode(x, c)) for xs, c in ((delta.add_groups, "add"),
                                                          (delta.add_flows, "add")) for x in xs)
        per.append(time.perf_counter() - t1)
        known.append(apply_delta(SwitchState(), delta))
        total += len(want.flows)
        if k == 0:
            first = len(want.flows)
    assert size > 0
    return {"endpoints": n, "hosts": hosts, "model_s": model_s, "switch_s": per,
            "flows_per_switch": first, "flows_total": total,
            "rss_peak_mb": _rss_mb(os.getpid(), "VmHWM")}


def metrics_cost(n: int, hosts: int, rounds: int = 5) -> tuple[list[Figure], dict]:
    """The controller's CPU for counters at N endpoints on H hosts, without switches:
    (1) one poll's parsing: every switch's port-stats reply (N/H ports, split in 64 KiB
    parts as OVS sends them), meter stats and ACL flow stats parsed by os-ken's own
    parser and turned into the poller's dicts; (2) one scrape: /metrics rendered from
    that model (N bindings in one tenant, 50 meters and 100 ACL rules per switch).
    Process CPU time (time.process_time), median of ``rounds``."""
    import struct
    from os_ken.ofproto import ofproto_parser, ofproto_v1_3 as ofp, ofproto_v1_3_parser
    from controller.flows import acl_cookie
    from controller.metrics import MetricsInput, SwitchStats, render_metrics
    from controller.model import AclRule, Binding, Tenant, Topology
    from controller.switch_queries import meter_json, port_stats_json
    from controller.sync import SYNC_SECONDS_EMPTY, SwitchView
    from cluster.hostsfile import DOCKER_LINK_PORT
    from types import MappingProxyType

    class _Dp:
        ofproto, ofproto_parser, id = ofp, ofproto_v1_3_parser, 1

    def reply(kind: int, entries: list[bytes]) -> list[bytearray]:
        """Multipart reply messages holding ``entries`` (at most 64 KiB each)."""
        out: list[bytearray] = []
        part: list[bytes] = []
        size = 0
        hdr = ofp.OFP_HEADER_SIZE + ofp.OFP_MULTIPART_REPLY_SIZE
        for e in entries + [b""]:
            if (not e or hdr + size + len(e) > 0xFFFF) and part:
                more = ofp.OFPMPF_REPLY_MORE if e else 0
                body = b"".join(part)
                out.append(bytearray(struct.pack(
                    ofp.OFP_HEADER_PACK_STR, ofp.OFP_VERSION, ofp.OFPT_MULTIPART_REPLY,
                    hdr + len(body), 7) + struct.pack(ofp.OFP_MULTIPART_REPLY_PACK_STR,
                                                       kind, more) + body))
                part, size = [], 0
            if e:
                part.append(e)
                size += len(e)
        return out

    def parse(msgs: list[bytearray]) -> list:
        return [b for m in msgs for b in ofproto_parser.msg(
            _Dp, ofp.OFP_VERSION, ofp.OFPT_MULTIPART_REPLY, len(m), 7, m).body]

    names = [f"h{i}" for i in range(1, hosts + 1)]
    eps = _endpoints(n, hosts)
    topo = Topology((Tenant("bench", 1000, subnet="10.50.0.0/16"),),
                    tuple(Binding(e["host"], e["port"], e["tenant"], mac=e["mac"]) for e in eps),
                    tuple(names), acls=tuple(AclRule(i, "bench", i, "allow") for i in
                                             range(1, 101)))
    switches, wire = {}, {}
    for k, h in enumerate(names, 1):
        ports = {e["port"]: j for j, e in enumerate((e for e in eps if e["host"] == h), 1)}
        ports[DOCKER_LINK_PORT] = len(ports) + 1
        ports.update({f"vx-{p}": 5000 + j for j, p in enumerate(names) if p != h})
        switches[k] = SwitchView(k, h, connected=True, ports=MappingProxyType(ports),
                                 synced_version=1, syncs=3, sync_seconds=SYNC_SECONDS_EMPTY
                                 .observe(0.2), last_sync=MappingProxyType({"flow_mods": 9}))
        stats = [struct.pack(ofp.OFP_PORT_STATS_PACK_STR, no, *(no * 7 + i for i in range(12)),
                             3600, 0) for no in ports.values()]
        band = struct.pack(ofp.OFP_METER_BAND_STATS_PACK_STR, 12, 1200)
        meters = [struct.pack(ofp.OFP_METER_STATS_PACK_STR, m, ofp.OFP_METER_STATS_SIZE
                              + len(band), 1, 100, 10000, 3600, 0) + band for m in range(1, 51)]
        wire[k] = (reply(ofp.OFPMP_PORT_STATS, stats), reply(ofp.OFPMP_METER, meters))
    acl_flows = tuple({"cookie": hex(acl_cookie(i)), "packets": i, "bytes": 60 * i}
                      for i in range(1, 101))
    parse_s, render_s, polled = [], [], {}
    for _ in range(rounds):
        t0 = time.process_time()
        for k, (port_msgs, meter_msgs) in wire.items():
            polled[k] = SwitchStats(time.time(), 0.01,
                                    tuple(port_stats_json(b) for b in parse(port_msgs)),
                                    tuple(meter_json(b) for b in parse(meter_msgs)), acl_flows)
        parse_s.append(time.process_time() - t0)
    inp = MetricsInput(switches, polled, topo, state_version=1, version="bench",
                       now=time.time(), learn_limit_macs=1024, stats_interval=5.0)
    for _ in range(rounds):
        t0 = time.process_time()
        text = render_metrics(inp)
        render_s.append(time.process_time() - t0)
    series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    ports_total = sum(len(sw.ports) for sw in switches.values())
    raw = {"endpoints": n, "hosts": hosts, "ports": ports_total, "series": series,
           "bytes": len(text), "parse_s": parse_s, "render_s": render_s}
    return [Figure(f"counters: one poll parsed, {n} endpoints on {hosts} hosts", parse_s, "s",
                   f"{ports_total} port stats + {hosts * 50} meters, os-ken's parser"),
            Figure(f"counters: /metrics rendered, {n} endpoints on {hosts} hosts", render_s,
                   "s", f"{series} series, {len(text) / 1e6:.1f} MB of text")], raw


def _controller_pid(topo) -> int | None:
    for pid in netns_pids(N.ns_name(topo.name, N.CTL)):
        try:
            if b"controller.manager" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    return None


def _rss_mb(pid: int | None, field: str = "VmRSS") -> float:
    """A process's resident memory (VmRSS, or VmHWM: its peak) in MiB; nan if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, TypeError):
        pass
    return float("nan")


def _restart_controller(topo) -> tuple[float, int]:
    pid = _controller_pid(topo)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    t0 = time.monotonic()
    C.start_controller(topo)
    C.wait_api(topo.name, timeout=120)
    C.wait_converged(topo, timeout=600)
    took = time.monotonic() - t0
    with C.api(topo.name) as c:
        mods = sum(s["flow_mods_sent"] + s["group_mods_sent"] for s in c.get("/v1/switches").json())
    return took, mods


def ipam_allocations(n: int, runs: int) -> tuple[list[Figure], dict]:
    """Cluster-wide IPAM allocations per second, SQLite and etcd (one member on disk)
    in one run, ``runs`` times: the plugin's own code and HTTP client against a real
    weft-manager (weft_lab.store_bench.ipam_rates: ``n`` allocations from a /16, a /26
    block claimed every 64; bare block and --ip address claims over REST)."""
    import tempfile

    from weft_lab.etcd import etcd_cluster
    from weft_lab.store_bench import ipam_rates
    rows: dict[str, list[dict[str, float]]] = {"sqlite": [], "etcd": []}
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="weft-bench-ipam-", dir="/var/tmp") as tmp:
            work = Path(tmp)
            rows["sqlite"].append(ipam_rates(n, ["--weft-db", str(work / "w.db")], work))
            with etcd_cluster(1, on_disk=True) as cluster:
                rows["etcd"].append(ipam_rates(n, cluster.manager_args(), work))
    figs = []
    for key, what in (("allocations_per_s", f"{n} plugin allocations"),
                      ("block_claims_per_s", "block claims"),
                      ("address_claims_per_s", "address claims (--ip)")):
        for store in ("sqlite", "etcd"):
            figs.append(Figure(f"IPAM {what}, {store}", [r[key] for r in rows[store]], "/s"))
        figs.append(Figure(f"IPAM {what}, etcd / sqlite",
                           [e[key] / s[key] for s, e in zip(rows["sqlite"], rows["etcd"])],
                           "x"))
    return figs, rows


def flows_per_switch() -> list[dict]:
    """Desired flows on one switch as hosts, tenants and endpoints grow (pure pipeline)."""
    from controller.model import Binding, Tenant, Topology
    from controller.pipeline import desired_state
    rows = []
    for hosts in (2, 4, 16, 32):
        for tenants in (1, 4, 16):
            for endpoints in (0, 100, 1000):
                tns = tuple(Tenant(f"t{i}", 1000 + i) for i in range(tenants))
                binds = tuple(Binding(f"h{j % hosts}", f"p{j}", f"t{(j // hosts) % tenants}",
                                      mac=f"02:00:00:00:{j >> 8 & 255:02x}:{j & 255:02x}")
                              for j in range(max(endpoints, hosts * tenants)))
                names = tuple(f"h{i}" for i in range(hosts))
                topo = Topology(tns, binds, names)
                ports = {b.port: 10 + k for k, b in enumerate(binds) if b.host == "h0"}
                ports["weft-d0"] = 1
                tunnels = {f"h{i}": f"vx-h{i}" for i in range(1, hosts)}
                ports.update({f"vx-h{i}": 1000 + i for i in range(1, hosts)})
                st = desired_state("h0", topo, ports, tunnels)
                rows.append({"hosts": hosts, "tenants": tenants,
                             "endpoints": max(endpoints, hosts * tenants),
                             "flows": len(st.flows), "groups": len(st.groups)})
    return rows


def routing(runs: int, seconds: float, destinations: int = 100) -> list[Figure]:
    """topologies/routing.yaml: routed vs same-network vs NATed throughput across hosts
    (ratios within one run), and the first packet to routed destinations never used."""
    from weft_lab.topology import load
    topo = load(ROOT / "topologies" / "routing.yaml").with_name("brt")
    with L.running(topo):
        C.wait_converged(topo)
        addr = topo.addr
        for dst in ("red-web2", "red-db2", "203.0.113.10"):     # warm ARP and NAT
            ping(topo.name, "red-web1", addr(dst) if "-" in dst else dst, count=3)
        same, routed, nat = [], [], []
        for _ in range(runs):
            same.append(iperf(topo.name, "red-web1", "red-web2", addr("red-web2"), seconds))
            routed.append(iperf(topo.name, "red-web1", "red-db2", addr("red-db2"), seconds))
            nat.append(_iperf_to(topo.name, "red-web1", "203.0.113.10", 5201, seconds))
        first = _first_routed_packets(topo, destinations)
    return [Figure("TCP same network across hosts (routing lab)", same, "Mbit/s"),
            Figure("TCP routed between networks across hosts", routed, "Mbit/s"),
            Figure("TCP NATed to the external node", nat, "Mbit/s"),
            Figure("routed / same-network ratio", _median_ratio(routed, same), "ratio",
                   "goal >= 0.9"),
            Figure("NATed / routed ratio", _median_ratio(nat, routed), "ratio", "goal >= 0.9"),
            Figure(f"first packet to a new routed destination p50 ({destinations})",
                   [percentile(first, 50)], "ms"),
            Figure(f"first packet to a new routed destination p99 ({destinations})",
                   [percentile(first, 99)], "ms", "goal < 50 ms")]


def _iperf_to(lab: str, node: str, ip: str, port: int, seconds: float) -> float:
    """TCP Mbit/s from a lab node to a server that already runs (the external node's)."""
    for _ in range(20):
        out = subprocess.run(N.exec_argv(lab, node, ["iperf3", "-c", ip, "-p", str(port), "-t",
                                                     str(seconds), "-O", "1", "-J"]),
                             capture_output=True, text=True, timeout=seconds + 60).stdout
        data = json.loads(out or "{}")
        if "busy" not in data.get("error", ""):
            break
        time.sleep(0.5)
    if "error" in data:
        raise RuntimeError(f"iperf3 {node} -> {ip}:{port}: {data['error']}")
    return data["end"]["sum_received"]["bits_per_second"] / 1e6


def _first_routed_packets(topo, n: int) -> list[float]:
    """RTT (ms) of the first ping from red-web1 to each of `n` new endpoints of red-db on
    host2 (bare ports bound through REST with their addresses): one ping each, never
    pinged before. Routing is proactive, so this is one round trip plus the endpoint's
    own ARP for its gateway (answered on its host)."""
    rtts: list[float] = []
    with C.api(topo.name) as api:
        nodes = []
        for i in range(n):
            ip, mac = f"10.10.2.{20 + i}", f"02:00:0a:0b:{i >> 8:02x}:{i & 255:02x}"
            port, node = f"rt{i}", f"rt{i}"
            ns = plug_bare_port(topo.name, "host2", node, f"{ip}/24", mac, port)
            run(["ip", "route", "add", "default", "via", "10.10.2.1"], ns=ns)
            r = api.post("/v1/ports", json={"host": "host2", "port": port, "network": "red-db",
                                            "mac": mac, "ips": [ip]})
            r.raise_for_status()
            nodes.append(ip)
        C.wait_converged(topo)
        for ip in nodes:
            res = ping(topo.name, "red-web1", ip, count=1)
            if res.rtts_ms:
                rtts.append(res.rtts_ms[0])
    if len(rtts) < n:
        raise RuntimeError(f"only {len(rtts)} of {n} routed destinations answered")
    return rtts


def flows_with_routing() -> list[dict]:
    """Desired flows on one host at 1,000 endpoints on 4 hosts: 10 networks of one
    tenant, and 10 tenants of one network each, with gateways (routing) and without."""
    from controller.model import Binding, Tenant, Topology
    from controller.pipeline import desired_state
    rows = []
    for shape in ("10 networks of 1 tenant", "10 tenants of 1 network"):
        for gateways in (False, True):
            nets = []
            for i in range(10):
                subnet = f"10.{i}.0.0/16"
                gw = f"10.{i}.0.1" if gateways else None
                domain = "t0" if shape.startswith("10 networks") and i else None
                nets.append(Tenant(f"t{i}", 1000 + i, subnet=subnet, domain=domain,
                                   gateway=gw, egress=gateways))
            binds = tuple(Binding(f"h{j % 4}", f"p{j}", f"t{j % 10}",
                                  mac=f"02:00:00:00:{j >> 8 & 255:02x}:{j & 255:02x}",
                                  ips=(f"10.{j % 10}.{1 + (j >> 8)}.{(j & 255) or 254}",))
                          for j in range(1000))
            topo = Topology(tuple(nets), binds, ("h0", "h1", "h2", "h3"))
            ports = {b.port: 10 + k for k, b in enumerate(binds) if b.host == "h0"}
            ports["weft-d0"] = 1
            ports.update({f"vx-h{i}": 1000 + i for i in range(1, 4)})
            if gateways:
                ports.update({f"wx-{t.vni}": 2000 + k for k, t in enumerate(nets)
                              if t.domain is None})
            st = desired_state("h0", topo, ports, {f"h{i}": f"vx-h{i}" for i in range(1, 4)})
            rows.append({"shape": shape, "routing": gateways, "endpoints": 1000, "hosts": 4,
                         "flows": len(st.flows), "groups": len(st.groups)})
    return rows


def agent_convergence(hosts: int) -> Figure:
    """From bare OVS on every host to a full mesh everywhere, agents started together."""
    from cluster.hostsfile import tunnel_port_name
    topo = _topo(f"ba{hosts}", hosts, tenant_containers=False, agent=False, controller=False)
    with L.running(topo):
        t0 = time.monotonic()
        for h in topo.hosts:
            L.start_agent(topo.name, h.name)
        pending = {h.name for h in topo.hosts}
        want = {h.name: {tunnel_port_name("vxlan", p.name) for p in topo.hosts if p != h}
                for h in topo.hosts}
        done: dict[str, float] = {}
        while pending and time.monotonic() - t0 < 300:
            for name in sorted(pending):
                try:
                    ports = set(N.vsctl(topo.name, name, "list-ports", "br0", timeout=5).split())
                except Exception:
                    continue
                if want[name] <= ports:
                    done[name] = time.monotonic() - t0
                    pending.discard(name)
            time.sleep(0.05)
    return Figure(f"agent convergence, {hosts} hosts from bare OVS (all meshed)",
                  [max(done.values()) if not pending else float("inf")], "s",
                  "target < 30 s at 32 hosts")


def peer_comparison() -> list[Figure]:
    """First-packet latency and packet-ins: reactive simple_switch_13 vs weft's proactive flows."""
    figs = []
    for app in ("weft", "simple_switch_13"):
        topo = parse(f"name: bpc{app[:2]}\nport_type: auto\ncontroller: {str(app == 'weft').lower()}"
                     "\nhosts:\n  - {name: h1, containers: [{name: c1}]}\n"
                     "  - {name: h2, containers: [{name: c2}]}\n")
        with L.running(topo):
            log = N.state_dir(topo.name) / "peer.log"
            if app != "weft":
                keeper_req = {"op": "spawn", "ns": N.ns_name(topo.name, N.CTL), "log": str(log),
                              "argv": [sys.executable, "-m", "controller.manager",
                                       "weft_lab.peer_simple_switch_13", "--wsapi-port", "0",
                                       "--ofp-listen-host", topo.controller_ip,
                                       "--ofp-tcp-listen-port", "6653"]}
                from weft_lab import keeper
                keeper.request(N.state_dir(topo.name), keeper_req)
                _wait_ports(topo)
            else:
                C.wait_converged(topo)
            time.sleep(2)                   # same settling time for both
            first = ping(topo.name, "c1", topo.addr("c2"), count=1, wait=3).rtts_ms
            rest = ping(topo.name, "c1", topo.addr("c2"), count=50, interval=0.01).rtts_ms
            packet_ins = log.read_text().count("packet-in") if log.exists() else 0
        figs += [Figure(f"first ping RTT, fresh switches ({app})", list(first) or [float("inf")],
                        "ms"),
                 Figure(f"ping p50 after warm-up ({app})", [percentile(list(rest), 50)], "ms"),
                 Figure(f"packets sent to the controller ({app})", [packet_ins], "packets")]
    return figs


def _wait_ports(topo, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if all("weft-d0" in N.vsctl(topo.name, h.name, "list-ports", "br0", timeout=3)
                   and (N.host_dir(topo.name, h.name) / "subnet.env").exists()
                   for h in topo.hosts):
                return
        except Exception:
            pass
        time.sleep(0.1)


# -- report --------------------------------------------------------------------------------------

def plot(results: dict, path: Path) -> bool:
    """Control-plane scaling figures as a PNG (needs matplotlib: ./dev.sh bench)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    rows = results["flows_per_switch"]
    for tenants in sorted({r["tenants"] for r in rows}):
        pts = sorted((r["hosts"], r["flows"]) for r in rows
                     if r["tenants"] == tenants and r["endpoints"] >= 1000)
        axes[0].plot(*zip(*pts), marker="o", label=f"{tenants} tenants, 1000 endpoints")
    axes[0].set(xlabel="hosts", ylabel="flows on one switch", title="Flows per switch")
    axes[0].legend()
    prog = results.get("programming", [])
    if prog:
        x = range(len(prog))
        axes[1].bar([i - 0.2 for i in x], [p["weft_s"] for p in prog], 0.4,
                    label="weft: REST call -> every switch in sync")
        axes[1].bar([i + 0.2 for i in x], [p["ofctl_s"] for p in prog], 0.4,
                    label="ovs-ofctl add-flows, same flows, every switch")
        axes[1].set_xticks(list(x), [f"{p['endpoints']} ep\n{p['hosts']} hosts" for p in prog])
        axes[1].set(ylabel="seconds", title="Programming endpoints")
        axes[1].legend()
    conv = results.get("agent_convergence", [])
    if conv:
        axes[2].plot([c["hosts"] for c in conv], [c["seconds"] for c in conv], marker="s")
        axes[2].set(xlabel="hosts", ylabel="seconds", title="Agent convergence from bare OVS")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="weft-lab bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer runs and smaller scales")
    ap.add_argument("--out", help="where the results go (default docs/bench.json for the "
                                  "whole run, docs/bench-SECTIONS.json with --only: a "
                                  "partial run never overwrites the whole one)")
    ap.add_argument("--plot", default=str(ROOT / "docs" / "performance.png"))
    ap.add_argument("--only", help="comma list of sections: dataplane,flannel,bind,program,"
                                   "flows,scale,agent,peer,docker,firstpacket,routing,metrics,"
                                   "ipam")
    ap.add_argument("--program", metavar="NxH,...",
                    help="programming scales, endpoints x hosts (default 1000x4,1000x16,"
                         "10000x4,10000x16; --quick 1000x4)")
    ap.add_argument("--scale", metavar="NxH,...",
                    help="pure pipeline scales (default 10000x16,100000x16; --quick 10000x16)")
    ap.add_argument("--agent-hosts", metavar="N,...",
                    help="agent convergence host counts (default 2,8,16,32; --quick 2,8)")
    ap.add_argument("--pipeline-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.pipeline_child:
        n, h = (int(x) for x in args.pipeline_child.split("x"))
        print(json.dumps(_pipeline_child(n, h)))
        return 0

    def scales(text: str | None, default: str) -> list[tuple[int, int]]:
        return [(int(a), int(b)) for a, b in (x.split("x") for x in (text or default).split(","))]
    runs, secs = (3, 3) if args.quick else (5, 5)
    only = set(args.only.split(",")) if args.only else None

    def want(s: str) -> bool:
        return only is None or s in only
    figs: list[Figure] = []
    results: dict[str, Any] = {"machine": os.uname().release, "quick": args.quick,
                               "started": time.strftime("%Y-%m-%d %H:%M:%S")}

    # The plan first, so each step can say how far along the run is (a full run takes
    # about an hour: silence for minutes looks like a hang).
    plan: list[tuple[str, Callable[[], list[Figure]]]] = []

    def step(title: str, measure: Callable[[], list[Figure]]) -> None:
        plan.append((title, measure))

    def keep(key: str, pair: tuple[list[Figure], Any]) -> list[Figure]:
        results.setdefault(key, []).append(pair[1])
        return pair[0]

    if want("dataplane"):
        for tunnel in ("vxlan", "gre"):
            def xdp(tunnel: str = tunnel) -> list[Figure]:
                return dataplane(tunnel, "auto", runs, secs)
            step(f"data plane, {tunnel}, AF_XDP", xdp)
        step("data plane, vxlan, AF_PACKET", lambda: dataplane("vxlan", "afpacket", runs, secs))
    if want("flannel"):
        step("flannel-style baseline", lambda: flannel_baseline(runs, secs))
    if want("bind"):
        for h in ((4,) if args.quick else (4, 16)):
            def bind(h: int = h) -> list[Figure]:
                return bind_latency(h, 20 if args.quick else 100)
            step(f"bind latency, {h} hosts", bind)
    if want("docker"):
        step("docker run -> first packet (docker0, default tenant)",
             lambda: docker_run_latency(20))
    if want("firstpacket"):
        step("docker run -> first packet, docker0 vs weft network (plugin)",
             lambda: keep("first_packet", docker_first_packet(10 if args.quick else 30)))
    if want("program"):
        results["programming"] = []
        for n, h in scales(args.program, "1000x4" if args.quick
                           else "1000x4,1000x16,10000x4,10000x16"):
            def program(n: int = n, h: int = h) -> list[Figure]:
                return keep("programming", program_endpoints(n, h))
            step(f"programming {n} endpoints on {h} hosts", program)
    if want("scale"):
        results["pipeline_scale"] = []
        for n, h in scales(args.scale, "10000x16" if args.quick else "10000x16,100000x16"):
            def pure(n: int = n, h: int = h) -> list[Figure]:
                return keep("pipeline_scale", pipeline_scale(n, h))
            step(f"pure pipeline, {n} endpoints on {h} hosts", pure)
    if want("metrics"):
        results["metrics"] = []
        for n, h in scales(None, "1000x4,10000x16"):
            def counters(n: int = n, h: int = h) -> list[Figure]:
                return keep("metrics", metrics_cost(n, h))
            step(f"counters collection, {n} endpoints on {h} hosts", counters)
    if want("agent"):
        default_hosts = "2,8" if args.quick else "2,8,16,32"
        results["agent_convergence"] = []
        for h in (int(x) for x in (args.agent_hosts or default_hosts).split(",")):
            def converge(h: int = h) -> list[Figure]:
                f = agent_convergence(h)
                results["agent_convergence"].append({"hosts": h, "seconds": f.values[0]})
                return [f]
            step(f"agent convergence, {h} hosts", converge)
    if want("ipam"):
        step("cluster IPAM allocations per second, SQLite vs etcd",
             lambda: keep("ipam", ipam_allocations(500 if args.quick else 2000,
                                                   1 if args.quick else 3)))
    if want("routing"):
        step("routing: routed, NATed, first packet (topologies/routing.yaml)",
             lambda: routing(runs, secs, 40 if args.quick else 100))
    if want("peer"):
        step("peer comparison (reactive simple_switch_13 vs proactive weft)", peer_comparison)
    t0 = time.monotonic()
    for i, (title, measure) in enumerate(plan, 1):
        print(f"\n[{i}/{len(plan)}, {time.monotonic() - t0:.0f}s] {title} ...", flush=True)
        new = measure()
        print(f"## {title}", flush=True)
        for f in new:
            print(f.row(), flush=True)
        figs.extend(new)
    if want("flows") or only is None:
        print(f"\n[{time.monotonic() - t0:.0f}s] flows per switch ...", flush=True)
        results["flows_per_switch"] = flows_per_switch()
    if want("routing") or want("flows") or only is None:
        results["flows_with_routing"] = rows = flows_with_routing()
        for row in rows:
            print(f"flows per host, {row['shape']}, routing {'on ' if row['routing'] else 'off'}"
                  f" at {row['endpoints']} endpoints: {row['flows']}", flush=True)
    results["figures"] = [f.as_json() for f in figs]
    out = Path(args.out or ROOT / "docs" / (
        f"bench-{'-'.join(sorted(only))}.json" if only else "bench.json"))
    out.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {out}")
    if "flows_per_switch" in results and plot(results, Path(args.plot)):
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
