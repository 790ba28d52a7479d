"""Building, inspecting and tearing down a lab.

Names and paths are weft_lab.nodes'.  Interfaces are created straight inside their
namespaces, so nothing of a lab ever appears in the root namespace, and
`down` finds all of it from the name alone, even after a crash.
"""
from __future__ import annotations

import ipaddress
import json
import os
import shutil
import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from cluster.hostsfile import parse as parse_hosts, tunnel_mtu
from weft_lab import docker, keeper, outside
from weft_lab.nodes import (CTL, LabError, host_dir, lab_exists, load_state, ns_name, ovs_env,
                            pki_dir, state_dir, vsctl)
from weft_lab.shell import CommandError, netns_list, netns_pids, run, succeeds
from weft_lab.topology import WAN, ExternalSwitch, Host, Topology

UNDERLAY_BRIDGE = "ul"
MGMT_BRIDGE = "mg"
VLAN_BRIDGE = "vl"          # transport vlan: the shared L2 network of the hosts' uplinks
UPLINK = "eth1"
EXT_BRIDGE = "ext"          # in LAB.wan: the external nodes' network
VSWITCH_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"


def container_mtu(topo: Topology) -> int:
    """The MTU the agent computes for this cluster (same function), for lab veths."""
    return tunnel_mtu(parse_hosts(hosts_yaml(topo)))


# -- plumbing -----------------------------------------------------------------

def _veth(a_ns: str, a: str, b_ns: str, b: str, mtu: int | None = None) -> None:
    """A veth pair created directly in its two namespaces, offloads off.

    The userspace datapath reads veths through AF_PACKET and does not fill
    in partial checksums, so TX checksum offload must be off on both ends.
    """
    run(["ip", "link", "add", a, "netns", a_ns, "type", "veth", "peer", "name", b,
         "netns", b_ns])
    for ns, dev in ((a_ns, a), (b_ns, b)):
        if mtu:
            run(["ip", "link", "set", dev, "mtu", str(mtu)], ns=ns)
        run(["ethtool", "-K", dev, "tx", "off"], ns=ns)
        run(["ip", "link", "set", dev, "up"], ns=ns)


def _bridge(ns: str, name: str, addr: str | None = None, mtu: int | None = None) -> None:
    run(["ip", "link", "add", name, "type", "bridge"], ns=ns)
    if mtu:
        run(["ip", "link", "set", name, "mtu", str(mtu)], ns=ns)
    if addr:
        run(["ip", "addr", "add", addr, "dev", name], ns=ns)
    run(["ip", "link", "set", name, "up"], ns=ns)


def _enslave(ns: str, dev: str, bridge: str) -> None:
    run(["ip", "link", "set", dev, "master", bridge], ns=ns)


def _new_ns(ns: str) -> None:
    run(["ip", "netns", "add", ns])
    run(["ip", "link", "set", "lo", "up"], ns=ns)


# -- OVS per host ---------------------------------------------------------------

def start_ovs(lab: str, host: str) -> None:
    """Start this host's ovsdb-server and ovs-vswitchd under the keeper."""
    start_ovsdb(lab, host)
    vsctl(lab, host, "--no-wait", "init")
    start_vswitchd(lab, host)


def start_ovsdb(lab: str, host: str) -> None:
    """This host's ovsdb-server alone (its database survives a kill: the same file)."""
    d = host_dir(lab, host)
    d.mkdir(parents=True, exist_ok=True)
    db = d / "conf.db"
    if not db.exists():
        run(["ovsdb-tool", "create", str(db), VSWITCH_SCHEMA])
    (d / "db.sock").unlink(missing_ok=True)
    keeper.request(state_dir(lab), {
        "op": "spawn", "ns": ns_name(lab, host), "env": ovs_env(lab, host),
        "log": str(d / "ovsdb-server.out"),
        "argv": ["ovsdb-server", str(db), f"--remote=punix:{d}/db.sock",
                 "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",
                 "--pidfile", f"--log-file={d}/ovsdb-server.log", "--no-chdir"]})
    _wait(lambda: (d / "db.sock").exists(), 10, f"ovsdb-server of {host}")


def start_vswitchd(lab: str, host: str) -> None:
    """This host's ovs-vswitchd alone."""
    d = host_dir(lab, host)
    (d / "ovs-vswitchd.pid").unlink(missing_ok=True)
    keeper.request(state_dir(lab), {
        "op": "spawn", "ns": ns_name(lab, host), "env": ovs_env(lab, host),
        "log": str(d / "ovs-vswitchd.out"),
        "argv": ["ovs-vswitchd", f"unix:{d}/db.sock", "--pidfile",
                 f"--log-file={d}/ovs-vswitchd.log", "--no-chdir"]})
    _wait(lambda: (d / "ovs-vswitchd.pid").exists(), 10, f"ovs-vswitchd of {host}")


def kill_daemon(lab: str, host: str, name: str, sig: int = signal.SIGKILL) -> int:
    """Signal one OVS daemon of a host ("ovsdb-server" or "ovs-vswitchd"); its pid."""
    pid = int((host_dir(lab, host) / f"{name}.pid").read_text().strip())
    os.kill(pid, sig)
    return pid


def stop_ovs(lab: str, host: str, sig: int = signal.SIGKILL) -> None:
    """Kill this host's OVS daemons (used by fault-injection tests)."""
    d = host_dir(lab, host)
    for name in ("ovs-vswitchd", "ovsdb-server"):
        pidfile = d / f"{name}.pid"
        try:
            os.kill(int(pidfile.read_text().strip()), sig)
        except (OSError, ValueError):
            pass
        pidfile.unlink(missing_ok=True)
    (d / "db.sock").unlink(missing_ok=True)


def hosts_yaml(topo: Topology, only: str | None = None) -> str:
    """The lab's hosts.yaml: what every agent and the controller read.

    Hosts with `join: register` or `later` are not listed (the file then says
    `membership: register`); `only` gives the file a registering agent starts from:
    the cluster's settings and its own entry."""
    scheme = "ssl" if topo.controller else "tcp"   # weft's own controller: mutual TLS
    ips = topo.controller_ips()[:topo.controllers]
    lines = ["# written by weft-lab", "controller:",
             "  openflow: [" + ", ".join(f'"{scheme}:{ip}:6653"' for ip in ips) + "]",
             "  api: " + (f'"http://{ips[0]}:8080"' if len(ips) == 1 else
                          "[" + ", ".join(f'"http://{ip}:8080"' for ip in ips) + "]"),
             f"tunnel_type: {topo.tunnel_type}", "datapath_type: netdev",
             f"cluster_subnet: {topo.cluster_subnet}",
             f"port_type: {topo.port_type}"]
    if topo.transport == "vlan":
        lines += ["transport: vlan", f"uplink: {UPLINK}"]
    if any(h.join != "file" for h in topo.hosts):
        lines.append("membership: register")
    listed = [h for h in topo.hosts if (h.name == only if only else h.join == "file")]
    lines.append("hosts:" if listed else "hosts: []")
    for h in listed:
        lines += [f"  - name: {h.name}", f"    underlay_ip: {h.underlay_ip}",
                  f"    docker_subnet: {h.docker_subnet}"]
        if h.tunnel_type:
            lines.append(f"    tunnel_type: {h.tunnel_type}")
        if topo.controller:     # the agent's listener on the mgmt network (traces)
            lines.append(f'    agent_api: "http://{h.mgmt_ip}:{AGENT_PORT}"')
    return "\n".join(lines) + "\n"


AGENT_PORT = 9180       # every lab agent's HTTP listener (ovs_agent.httpserver), on mgmt


def make_pki(lab: str, hosts: list[str]) -> None:
    from cluster import pki
    pki.init_ca(pki_dir(lab), f"weft lab {lab} CA")
    for name in ["controller", *hosts]:
        pki.issue(pki_dir(lab), name)


LAB_LEASE_TTL = 6.0     # seconds: registered lab hosts that die leave quickly


def start_agent(lab: str, host: str, register: bool = False) -> int:
    """Run ovs-agent on a lab host, under the keeper.

    `register`: the host joins by registration, from a peers file of its own
    (`hosts/H/hosts.yaml`, written by `up`: the cluster's settings and only itself).
    """
    d, sd = host_dir(lab, host), state_dir(lab)
    env = ovs_env(lab, host)
    if (sd / "api.token").exists():
        env["WEFT_API_TOKEN"] = (sd / "api.token").read_text().strip()
    # the host's "own resolvers" for weft's resolver to forward to (docs/dns.md): the
    # external nodes serving dns:53, else none; never the machine's /etc/resolv.conf
    env["WEFT_RESOLV_CONF"] = str(d / "resolv.conf")
    peers, extra = sd / "hosts.yaml", []
    if register:
        peers = d / "hosts.yaml"
        extra = ["--register", "--lease-ttl", f"{LAB_LEASE_TTL:g}"]
    return keeper.request(sd, {
        "op": "spawn", "ns": ns_name(lab, host), "env": env,
        "log": str(d / "ovs-agent.log"),
        "argv": [sys.executable, "-m", "ovs_agent.cli", "--peers", str(peers),
                 "--host", host, "--subnet-file", str(d / "subnet.env"),
                 "--ssl-dir", str(pki_dir(lab)), "--interval", "2",
                 "--docker-host", f"unix://{docker.socket_path(d)}",
                 "--plugin-socket", str(docker.plugin_dir(d) / "weft.sock"), *extra,
                 *_verbose()]})["pid"]


def start_plugin(lab: str, host: str, *extra: str) -> int:
    """Run the weft Docker plugin on a lab host, under the keeper (``extra``: more
    flags, e.g. --reclaim-after).

    Its socket is in the host's plugin directory, which that host's dockerd (and
    only it) sees as /run/docker/plugins/weft.sock: the driver is `weft` everywhere.
    """
    d, sd = host_dir(lab, host), state_dir(lab)
    sock = docker.plugin_dir(d) / "weft.sock"
    sock.unlink(missing_ok=True)
    # a host that joins by registration is in no shared hosts.yaml: its own file, as
    # its agent's (the plugin needs its entry: datapath and port type)
    peers = d / "hosts.yaml" if (d / "hosts.yaml").exists() else sd / "hosts.yaml"
    env = ovs_env(lab, host)
    if (sd / "api.token").exists():
        env["WEFT_API_TOKEN"] = (sd / "api.token").read_text().strip()
    pid = keeper.request(sd, {
        "op": "spawn", "ns": ns_name(lab, host), "env": env,
        "log": str(d / "weft-plugin.log"),
        "argv": [sys.executable, "-m", "ovs_agent.cli", "docker-plugin", "--peers",
                 str(peers), "--host", host, "--socket", str(sock),
                 "--docker-host", f"unix://{docker.socket_path(d)}", *extra,
                 *_verbose()]})["pid"]
    _wait(sock.exists, 20, f"the weft plugin of {host} ({d}/weft-plugin.log)")
    return pid


def _verbose() -> tuple[str, ...]:
    """`-v` for the agents and plugins when WEFT_LAB_VERBOSE is set: their DEBUG lines
    (the plugin's call timings) for a timeline (weft_lab.bench firstpacket)."""
    return ("-v",) if os.environ.get("WEFT_LAB_VERBOSE") else ()


def _wait(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise LabError(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- up / down --------------------------------------------------------------------

def _build_host(topo: Topology, host: Host, mtu: int) -> None:
    lab, ns, ctl = topo.name, ns_name(topo.name, host.name), ns_name(topo.name, CTL)
    plen_u = ipaddress.ip_network(topo.underlay).prefixlen
    plen_m = ipaddress.ip_network(topo.mgmt).prefixlen
    _new_ns(ns)
    run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], ns=ns)
    _veth(ns, "eth0", ctl, f"u-{host.name}")
    _enslave(ctl, f"u-{host.name}", UNDERLAY_BRIDGE)
    run(["ip", "addr", "add", f"{host.underlay_ip}/{plen_u}", "dev", "eth0"], ns=ns)
    _veth(ns, "mgmt0", ctl, f"m-{host.name}")
    _enslave(ctl, f"m-{host.name}", MGMT_BRIDGE)
    run(["ip", "addr", "add", f"{host.mgmt_ip}/{plen_m}", "dev", "mgmt0"], ns=ns)
    if topo.transport == "vlan":
        _veth(ns, UPLINK, ctl, f"v-{host.name}")
        # like a physical switch port: tags travel inside the frame, not in skb metadata
        run(["ethtool", "-K", f"v-{host.name}", "txvlan", "off", "rxvlan", "off"], ns=ctl)
        _enslave(ctl, f"v-{host.name}", VLAN_BRIDGE)
    if not topo.docker:
        _bridge(ns, "docker0", host.docker_ip, mtu)    # Docker's bridge, built by hand
    start_ovs(lab, host.name)
    if host.join != "file":     # its own peers file: the cluster's settings and itself
        (host_dir(lab, host.name) / "hosts.yaml").write_text(hosts_yaml(topo, only=host.name))
    (host_dir(lab, host.name) / "resolv.conf").write_text("".join(
        f"nameserver {ipaddress.IPv4Interface(e.ip).ip}\n" for e in topo.external
        if "dns:53" in e.serve))
    if host.join == "later":
        return                  # join_later() starts the rest
    if topo.agent:
        start_agent(lab, host.name, register=host.join == "register")
    if topo.docker:
        _start_docker(topo, host)
    if topo.plugin:
        start_plugin(lab, host.name)


def join_later(topo: Topology, name: str) -> float:
    """A `join: later` host joins the running cluster as a new machine would: its agent
    registers (from its own peers file), then its dockerd starts with the options the
    agent wrote, then the weft plugin.  Its namespace, OVS and state directory were
    built by `up`, so `down` removes everything it started whatever happens.  Seconds."""
    t0 = time.monotonic()
    host = next(h for h in topo.hosts if h.name == name)
    if host.join != "later":
        raise LabError(f"{name} is not a join: later host")
    start_agent(topo.name, name, register=True)
    if topo.docker:
        _start_docker(topo, host)
    if topo.plugin:
        start_plugin(topo.name, name)
    return time.monotonic() - t0


def _start_docker(topo: Topology, host: Host) -> None:
    """This host's dockerd, configured with exactly the daemon.json its agent wrote."""
    lab, d = topo.name, host_dir(topo.name, host.name)
    config = d / "daemon.json"
    _wait(config.exists, 30, f"the agent of {host.name} to write {config}")
    docker.start_dockerd(lab, host.name, ns_name(lab, host.name), d, state_dir(lab), config)
    docker.wait_ready(d)
    docker.load_image(d)


def _build_containers(topo: Topology, host: str, mtu: int) -> None:
    """One host's containers, in file order (Docker hands out addresses in order)."""
    for c in topo.containers:
        if c.host == host and c.attach != "weft":     # those once the tenants exist
            _build_container(topo, c, mtu)


def _build_container(topo: Topology, c, mtu: int) -> None:
    ns = ns_name(topo.name, c.name)
    if topo.docker and c.attach == "docker0" and not c.bare:
        d = host_dir(topo.name, c.host)
        info = docker.run_container(d, topo.name, c.name, ns, c.mac)
        run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], ns=ns)
        if info["ip"] != c.ip:
            raise LabError(f"docker gave {c.name} {info['ip']}, the topology expects {c.ip}")
        return
    _new_ns(ns)
    run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], ns=ns)
    if c.attach != "docker0":
        return          # plugged into br0 later by `ovs-agent attach`
    host_ns = ns_name(topo.name, c.host)
    _veth(ns, "eth0", host_ns, f"v-{c.name}", mtu)
    _enslave(host_ns, f"v-{c.name}", "docker0")
    if c.mac:
        run(["ip", "link", "set", "eth0", "address", c.mac], ns=ns)
    run(["ip", "addr", "add", c.ip, "dev", "eth0"], ns=ns)


def _build_switch(topo: Topology, sw: ExternalSwitch) -> None:
    """An external 802.1Q switch: eth0 is a trunk to a port of a host's br0.

    This kernel has neither 802.1Q subinterfaces (CONFIG_VLAN_8021Q) nor bridge
    VLAN filtering, so the switch is an OVS bridge of its own in the switch's
    namespace: eth0 a real 802.1Q trunk, and one internal port per VLAN (an
    SVI, named vlanVID, or untagged0 for untagged frames) holding the address.
    """
    lab, ns, host_ns = topo.name, ns_name(topo.name, sw.name), ns_name(topo.name, sw.host)
    _new_ns(ns)
    run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], ns=ns)
    mtu = container_mtu(topo)
    _veth(ns, "eth0", host_ns, sw.port, mtu)
    start_ovs(lab, sw.name)
    tagged = sorted(v.vlan for v in sw.vlans if v.vlan is not None)
    args = ["add-br", "sw", "--", "set", "bridge", "sw", "datapath_type=netdev",
            "fail_mode=standalone", "--", "add-port", "sw", "eth0", "--", "set", "port", "eth0",
            "vlan_mode=native-untagged", "tag=4094", f"trunks={','.join(map(str, tagged))},4094"]
    for v in sw.vlans:
        dev = f"vlan{v.vlan}" if v.vlan is not None else "untagged0"
        args += ["--", "add-port", "sw", dev, "--", "set", "interface", dev, "type=internal",
                 "--", "set", "port", dev, f"tag={v.vlan or 4094}"]
    vsctl(lab, sw.name, *args)
    for v in sw.vlans:
        dev = f"vlan{v.vlan}" if v.vlan is not None else "untagged0"
        _wait(lambda dev=dev: succeeds(["ip", "link", "show", dev], ns=ns), 10, dev)
        run(["ethtool", "-K", dev, "tx", "off"], ns=ns)
        run(["ip", "link", "set", dev, "mtu", str(mtu), "up"], ns=ns)
        run(["ip", "addr", "add", v.ip, "dev", dev], ns=ns)


def _build_outside(topo: Topology) -> None:
    """The world beyond the underlay: the router LAB.wan and the external nodes.

    The router has one leg on the underlay bridge (`topo.wan_ip`) and one on the bridge
    `ext` (the first address of each external network), forwards, and does no NAT: an
    external node sees whatever source address a packet left the cluster with, and has
    no route back to anything but the underlay.
    """
    lab, ctl, wan = topo.name, ns_name(topo.name, CTL), ns_name(topo.name, WAN)
    plen_u = ipaddress.ip_network(topo.underlay).prefixlen
    _new_ns(wan)
    run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], ns=wan)
    run(["sysctl", "-qw", "net.ipv4.ip_forward=1"], ns=wan)
    _veth(wan, "eth0", ctl, f"u-{WAN}")
    _enslave(ctl, f"u-{WAN}", UNDERLAY_BRIDGE)
    run(["ip", "addr", "add", f"{topo.wan_ip}/{plen_u}", "dev", "eth0"], ns=wan)
    _bridge(wan, EXT_BRIDGE)
    for addr in sorted({f"{e.router_ip}/{ipaddress.IPv4Interface(e.ip).network.prefixlen}"
                        for e in topo.external}):
        run(["ip", "addr", "add", addr, "dev", EXT_BRIDGE], ns=wan)
    for e in topo.external:
        ns = ns_name(lab, e.name)
        _new_ns(ns)
        run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], ns=ns)
        _veth(ns, "eth0", wan, f"x-{e.name}")
        _enslave(wan, f"x-{e.name}", EXT_BRIDGE)
        run(["ip", "addr", "add", e.ip, "dev", "eth0"], ns=ns)
        run(["ip", "route", "add", "default", "via", e.router_ip], ns=ns)
        outside.start_servers(lab, e)


def route_to_outside(topo: Topology, timeout: float = 60) -> None:
    """Every host: `default via <wan router>` on the interface holding its underlay
    address.  With the agent that is br-phy once the agent moved the address there, so
    this waits for it.  Idempotent; call it again after a fault that took br-phy's
    address away (an ovs-vswitchd restart: the agent puts the address back, not this
    route)."""
    for h in topo.hosts:
        ns = ns_name(topo.name, h.name)
        if topo.agent and topo.transport == "tunnel" and h.join != "later":
            _wait(lambda ns=ns, ip=h.underlay_ip: _underlay_dev(ns, ip) == "br-phy", timeout,
                  f"the agent of {h.name} to move {h.underlay_ip} to br-phy")
        dev = _underlay_dev(ns, h.underlay_ip)
        if dev is None:
            raise LabError(f"{h.name} has no interface with {h.underlay_ip}")
        run(["ip", "route", "replace", "default", "via", topo.wan_ip, "dev", dev], ns=ns)


def _underlay_dev(ns: str, ip: str) -> str | None:
    for link in json.loads(run(["ip", "-j", "-4", "addr", "show"], ns=ns) or "[]"):
        if any(a.get("local") == ip for a in link.get("addr_info", [])):
            return link["ifname"]
    return None


def up(topo: Topology, log: Callable[[str], None] | None = None) -> float:
    """Build the whole lab; on any failure tear down what was built.  Returns seconds.

    `log` (the CLI and the demo pass print) hears each step as it starts and how far
    the parallel ones got, so a large lab is not minutes of silence.
    """
    t0 = time.monotonic()
    lab = topo.name
    say = _Steps(log, t0)
    if lab_exists(lab):
        raise LabError(f"lab {lab!r} is already up (weft-lab down --lab {lab} first, "
                       f"or pick another name with --lab)")
    sd = state_dir(lab)
    try:
        sd.mkdir(parents=True)
        (sd / "topology.json").write_text(json.dumps(_as_json(topo), indent=1))
        (sd / "hosts.yaml").write_text(hosts_yaml(topo))
        ctl = ns_name(lab, CTL)
        say(f"underlay and management network ({len(topo.hosts)} hosts)")
        _new_ns(ctl)
        run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"], ns=ctl)
        _bridge(ctl, UNDERLAY_BRIDGE)
        if topo.transport == "vlan":
            _bridge(ctl, VLAN_BRIDGE)
        plen_m = ipaddress.ip_network(topo.mgmt).prefixlen
        _bridge(ctl, MGMT_BRIDGE, f"{topo.controller_ip}/{plen_m}")
        for ip in topo.controller_ips()[1:]:        # further controllers, etcd members
            run(["ip", "addr", "add", f"{ip}/{plen_m}", "dev", MGMT_BRIDGE], ns=ctl)
        keeper.start(sd, ctl)
        if topo.external:
            say(f"outside world: router {WAN}, {len(topo.external)} external node(s)")
            _build_outside(topo)
        if topo.etcd:
            from weft_lab import cluster
            say("etcd members")
            cluster.start_etcd(topo)
        if topo.controller:
            (sd / "api.token").write_text(secrets.token_hex(16) + "\n")
            make_pki(lab, [h.name for h in topo.hosts])
        mtu = container_mtu(topo)
        what = "OVS, agent" + (", dockerd" if topo.docker else "") + \
            (", plugin" if topo.plugin else "")
        with ThreadPoolExecutor(max_workers=4) as pool:
            say.each(f"hosts ({what})", pool.map(lambda h: _build_host(topo, h, mtu), topo.hosts),
                     len(topo.hosts))
            say.each("containers on docker0 and bare namespaces",
                     pool.map(lambda h: _build_containers(topo, h.name, mtu), topo.hosts),
                     len(topo.hosts), unit="hosts")
        if topo.switches:
            say(f"{len(topo.switches)} external switches")
        for sw in topo.switches:
            _build_switch(topo, sw)
        if topo.controller:
            from weft_lab import cluster
            say(f"controller ({topo.controllers} instance(s)), its API, "
                f"{len(topo.tenants)} tenants")
            cluster.start_controller(topo)
            cluster.wait_api(lab, instances=topo.controllers)
            cluster.setup_tenants(topo)
        if topo.agent:
            from weft_lab import cluster
            say("containers attached to br0, port bindings")
            cluster.attach_containers(topo)
            if topo.controller:
                cluster.bind_switches(topo)
        if topo.plugin:
            from weft_lab import cluster
            say("docker run containers on weft networks")
            cluster.run_weft_containers(topo)
        if topo.external:
            say(f"hosts' default route via {WAN} ({topo.wan_ip})")
            route_to_outside(topo)
    except BaseException:
        down(lab)
        raise
    return time.monotonic() - t0


class _Steps:
    """The progress lines of `up`: a step as it starts, parallel ones as they finish."""

    def __init__(self, log: Callable[[str], None] | None, t0: float) -> None:
        self.log, self.t0 = log, t0

    def __call__(self, what: str) -> None:
        if self.log:
            self.log(f"[{time.monotonic() - self.t0:5.1f}s] {what}")

    def each(self, what: str, results: Iterator, total: int, unit: str = "") -> None:
        """Consume `results` (one per item), saying how many are done as they finish."""
        self(f"{what}: 0/{total}")
        for done, _ in enumerate(results, 1):
            if total > 2 or done == total:
                self(f"{what}: {done}/{total}{' ' + unit if unit else ''}")


def down(lab: str) -> float:
    """Remove every process, namespace, interface and file of the lab.  Idempotent."""
    t0 = time.monotonic()
    spaces = [n for n in netns_list() if n.startswith(lab + ".")]
    ctl = ns_name(lab, CTL)
    # The outside world's servers by their recorded pids, if still in one of the lab's
    # namespaces (a pid of a crashed lab may belong to someone else by now).
    _kill_pids(_recorded_pids(lab, spaces))
    # Daemons first and the keeper (in ctl) last, so the keeper reaps them all.
    _kill_all([n for n in spaces if n != ctl])
    _kill_pids(docker.container_pids(lab))      # containers in namespaces the lab never named
    _kill_all([n for n in spaces if n == ctl])
    for ns in spaces:
        run(["ip", "netns", "del", ns], check=False)
    docker.remove_cgroups(lab)
    shutil.rmtree(state_dir(lab), ignore_errors=True)
    return time.monotonic() - t0


def _recorded_pids(lab: str, spaces: list[str]) -> set[int]:
    """The outside world's pids in the lab's pids.json whose network namespace is still
    one of the lab's (controllers and etcd members are TERMed first by `_kill_all`)."""
    try:
        recorded = json.loads((state_dir(lab) / "pids.json").read_text())
        pids = [pid for name, pid in recorded.items() if name.startswith("outside-")]
    except (OSError, ValueError, AttributeError):
        return set()
    inodes = set()
    for ns in spaces:
        try:
            inodes.add(os.stat(f"/run/netns/{ns}").st_ino)
        except OSError:
            pass
    found = set()
    for pid in pids:
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino in inodes:
                found.add(int(pid))
        except (OSError, TypeError, ValueError):
            pass
    return found


def _kill_pids(pids: set[int]) -> None:
    """KILL these processes and wait (up to 3 s) until they are gone."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 3
    while any(docker.alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _kill_all(spaces: list[str]) -> None:
    """TERM, then KILL, every process in these namespaces; wait until gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for ns in spaces:
            for pid in netns_pids(ns):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 3
        while any(netns_pids(ns) for ns in spaces) and time.monotonic() < deadline:
            time.sleep(0.05)


# -- status / exec ------------------------------------------------------------------

def status(lab: str) -> dict:
    """What is running: namespaces, processes, OVS bridges and ports per host."""
    state = load_state(lab)
    spaces = set(netns_list())
    out: dict = {"lab": lab, "hosts": [], "containers": [], "switches": state["switches"],
                 "ctl": {"netns": ns_name(lab, CTL), "up": ns_name(lab, CTL) in spaces,
                         "processes": _procs(ns_name(lab, CTL))}}
    for h in state["hosts"]:
        ns = ns_name(lab, h["name"])
        bridges: dict[str, list[str]] = {}
        if ns in spaces:
            try:
                for br in vsctl(lab, h["name"], "list-br", timeout=3).split():
                    bridges[br] = vsctl(lab, h["name"], "list-ports", br, timeout=3).split()
            except CommandError as exc:
                bridges = {"<error>": [exc.stderr]}
        out["hosts"].append({**h, "netns": ns, "up": ns in spaces, "bridges": bridges,
                             "processes": _procs(ns)})
    for c in state["containers"]:
        ns = ns_name(lab, c["name"])
        out["containers"].append({**c, "netns": ns, "up": ns in spaces})
    out["external"] = []
    if state.get("external"):
        out["wan"] = {"netns": ns_name(lab, WAN), "up": ns_name(lab, WAN) in spaces,
                      "underlay_ip": str(ipaddress.ip_network(state["underlay"])[-2])}
    for e in state.get("external", []):
        ns = ns_name(lab, e["name"])
        out["external"].append({**e, "netns": ns, "up": ns in spaces, "processes": _procs(ns)})
    return out


def _procs(ns: str) -> list[str]:
    procs = []
    for pid in netns_pids(ns):
        try:
            comm = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            words = comm[:3] if comm[1:2] == [b"-m"] else comm[:2]    # python -m MODULE
            procs.append(f"{pid} {' '.join(p.decode() for p in words)}")
        except OSError:
            pass
    return procs


def _as_json(topo: Topology) -> dict:
    from dataclasses import asdict
    return asdict(topo)


@contextmanager
def running(topo: Topology) -> Iterator[Topology]:
    """A lab for the duration of a with-block (tests and benchmarks)."""
    up(topo)
    try:
        yield topo
    finally:
        down(topo.name)
