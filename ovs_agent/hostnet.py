"""The Linux side of a host: addresses, the docker0 veth link, subnet.env.

Each `ensure_*` reads first and changes only what is missing, so it is safe
to call on every pass (OVS restarts drop the address of br-phy's tap device,
for instance, and the next pass puts it back).
"""
from __future__ import annotations

import ctypes
import ipaddress
import json
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from cluster.names import RESOLVER_ADDRESS
from cluster.hostsfile import DOCKER_LINK_PEER, DOCKER_LINK_PORT, Cluster, Host

LOG = logging.getLogger("ovs-agent")


def ip(*args: str, check: bool = True) -> str:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout


def addresses() -> dict[str, list[str]]:
    """Interface name -> IPv4 addresses with prefix, as `ip -j addr` reports them."""
    out: dict[str, list[str]] = {}
    for link in json.loads(ip("-j", "-4", "addr", "show") or "[]"):
        out[link["ifname"]] = [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])]
    return out


def local_ips() -> list[str]:
    return [a for addrs in addresses().values() for a in addrs]


def mac_of(dev: str) -> str | None:
    try:
        return Path(f"/sys/class/net/{dev}/address").read_text().strip()
    except OSError:
        return None


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def underlay_iface(host: Host, phy_bridge: str, phy_ports: list[str]) -> str | None:
    """The NIC that carries (or carried) the underlay address.

    Before the first pass the address sits on the NIC; after it, on the OVS
    bridge, and the NIC is the bridge's agent-owned port.
    """
    for name, addrs in addresses().items():
        if any(a.split("/")[0] == host.underlay_ip for a in addrs) and name != phy_bridge:
            return name
    return phy_ports[0] if phy_ports else None


def ensure_underlay_address(host: Host, phy_bridge: str, nic: str) -> bool:
    """Move the underlay address from the NIC to the OVS bridge; True if changed."""
    addrs = addresses()
    have = [a for a in addrs.get(nic, []) if a.split("/")[0] == host.underlay_ip]
    on_bridge = [a for a in addrs.get(phy_bridge, []) if a.split("/")[0] == host.underlay_ip]
    changed = False
    if not link_exists(phy_bridge):
        return False                     # vswitchd has not made the tap yet: next pass
    if not on_bridge:
        prefix = have[0] if have else _remembered_prefix(host)
        if have:
            ip("addr", "del", prefix, "dev", nic)
        ip("addr", "add", prefix, "dev", phy_bridge)
        changed = True
    if "UP" not in json.loads(ip("-j", "link", "show", phy_bridge))[0]["flags"]:
        ip("link", "set", phy_bridge, "up")
        changed = True
    if changed:
        LOG.info("underlay address %s on %s (NIC %s)", host.underlay_ip, phy_bridge, nic)
    return changed


_prefixes: dict[str, str] = {}


def _remembered_prefix(host: Host) -> str:
    return _prefixes.get(host.underlay_ip, f"{host.underlay_ip}/24")


def remember_prefix(host: Host) -> None:
    for addrs in addresses().values():
        for a in addrs:
            if a.split("/")[0] == host.underlay_ip:
                _prefixes[host.underlay_ip] = a


OFFLOAD_NAMES = {"tx": "tx-checksumming", "rxvlan": "rx-vlan-offload",
                 "txvlan": "tx-vlan-offload"}


def needs_tx_checksum_off(datapath_type: str) -> bool:
    """Whether veths this host's OVS reads need TX checksum offload off.

    Only the userspace datapath (netdev) needs it: it reads veths with AF_PACKET or
    AF_XDP and does not complete partial checksums, so TCP hangs unless the sender
    computes them.  The kernel datapath (system) hands partial checksums on to the
    VXLAN/GRE device, which completes or offloads them: turning offload off there only
    costs CPU (weft ran at 0.49x plain kernel OVS VXLAN with it off, measured in VMs).
    """
    return datapath_type == "netdev"


def ensure_tx_checksum(dev: str, on: bool, netns: str | None = None) -> bool:
    """TX checksum offload of `dev` on or off as asked; True if it was changed."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    out = subprocess.run([*prefix, "ethtool", "-k", dev], capture_output=True, text=True).stdout
    want, have = ("on" if on else "off"), None
    for line in out.splitlines():
        if line.startswith(f"{OFFLOAD_NAMES['tx']}:"):
            have = line.split(":", 1)[1].split()[0]
    if have is None or have == want:
        return False
    subprocess.run([*prefix, "ethtool", "-K", dev, "tx", want], capture_output=True)
    return True


def ensure_offloads_off(dev: str, features: tuple[str, ...] = ("tx",)) -> bool:
    """Turn offloads off that OVS's userspace datapath cannot live with.

    tx: it does not complete partial checksums (needed on veths it reads and on
    its own tap, br-phy: the host's TCP over the underlay hangs with AF_XDP
    otherwise).  rxvlan/txvlan: with the tag kept in skb metadata instead of the
    frame, AF_XDP sees VLAN-tagged frames untagged (the VLAN transport uplink).
    """
    out = subprocess.run(["ethtool", "-k", dev], capture_output=True, text=True).stdout
    on = [f for f in features if f"{OFFLOAD_NAMES[f]}: on" in out]
    if not on:
        return False
    subprocess.run(["ethtool", "-K", dev, *[x for f in on for x in (f, "off")]],
                   capture_output=True)
    return True


def kernel_neighbours(dev: str, fresh_only: bool = False) -> dict[str, str]:
    """IP -> MAC of the kernel's resolved neighbours on `dev` (fresh: confirmed lately)."""
    good = {"REACHABLE", "PERMANENT"} if fresh_only else None
    return {n["dst"]: n["lladdr"]
            for n in json.loads(ip("-j", "neigh", "show", "dev", dev, check=False) or "[]")
            if n.get("lladdr") and n.get("state")
            and not {"FAILED", "INCOMPLETE"} & set(n["state"])
            and (good is None or good & set(n["state"]))}


def unresolved(ips: list[str], dev: str) -> list[str]:
    """The addresses the kernel has no neighbour entry for on `dev`."""
    known = kernel_neighbours(dev)
    return [a for a in ips if a not in known]


def ovs_tunnel_neighbours() -> dict[str, str]:
    """IP -> MAC in ovs-vswitchd's own tunnel neighbour cache (`tnl/neigh/show`)."""
    proc = subprocess.run(["ovs-appctl", "tnl/neigh/show"], capture_output=True, text=True)
    out: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0][0].isdigit() and ":" in parts[1]:
            out[parts[0]] = parts[1]
    return out


def seed_tunnel_neighbours(ips: list[str], bridge: str) -> list[str]:
    """Copy the kernel's answers for `ips` into ovs-vswitchd's tunnel neighbour cache.

    The userspace datapath does not use the kernel's neighbour table: it keeps its
    own, filled only by ARP replies it snoops on the underlay bridge.  The kernel can
    know a peer (for example from the peer's own ARP request) while OVS does not;
    then OVS drops the first frame it should encapsulate to that peer and sends an
    ARP request instead, and a container's first ARP costs it a one-second retry
    (the "first ping takes 1000 ms" seen on fresh labs).  Returns the peers still
    missing from OVS's cache.
    """
    kernel, fresh = kernel_neighbours(bridge), kernel_neighbours(bridge, fresh_only=True)
    cached = ovs_tunnel_neighbours()
    procs = []
    for addr in ips:
        # A missing peer takes any resolved kernel answer; a different MAC replaces what
        # OVS snooped itself only when the kernel confirmed it lately (a STALE entry
        # could push a peer's old MAC back over its new one).
        mac = kernel.get(addr) if addr not in cached else fresh.get(addr)
        if mac and cached.get(addr) != mac:
            # every peer at once (a full mesh of 31 peers was 31 ovs-appctl in a row)
            procs.append(subprocess.Popen(["ovs-appctl", "tnl/neigh/set", bridge, addr, mac],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            LOG.info("tunnel neighbour %s is %s: set in ovs-vswitchd's cache (was %s)",
                     addr, mac, cached.get(addr, "missing"))
    for proc in procs:
        proc.wait()
    if procs:
        cached = ovs_tunnel_neighbours()
    return [a for a in ips if a not in cached]


def warm_neighbours(ips: list[str], timeout: float = 0.3) -> None:
    """Resolve peers' underlay addresses now, so the first tunnelled frame is not lost.

    OVS's userspace tunnelling learns the next hop's MAC by snooping ARP replies on
    the underlay bridge; until then it drops what it should encapsulate (a container's
    first ARP request, costing it a one-second retry).  One ping per new peer fills
    the cache.  Netdev datapath only: the kernel datapath uses the kernel's own ARP.
    """
    procs = [subprocess.Popen(["ping", "-c", "1", "-W", f"{timeout:.1f}", "-q", addr],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for addr in ips]
    for proc in procs:
        proc.wait()


def ensure_veth(name: str, peer: str, mtu: int, master: str | None = None,
                peer_netns: str | None = None, tx_off: bool = True) -> bool:
    """A veth pair; TX checksum offload off on both ends if `tx_off` (the userspace
    datapath needs it, see needs_tx_checksum_off)."""
    if link_exists(name):
        return False
    args = ["link", "add", name, "mtu", str(mtu), "type", "veth", "peer", "name", peer,
            "mtu", str(mtu)]
    if peer_netns:
        args += ["netns", peer_netns]
    ip(*args)
    if tx_off:
        for dev, ns in ((name, None), (peer, peer_netns)):
            prefix = ["ip", "netns", "exec", ns] if ns else []
            subprocess.run([*prefix, "ethtool", "-K", dev, "tx", "off"], capture_output=True)
    ip("link", "set", name, "up")
    if master:
        ip("link", "set", peer, "master", master)
        ip("link", "set", peer, "up")
    return True


def master_of(dev: str) -> str | None:
    """The bridge a device is enslaved to, or None."""
    try:
        return Path(f"/sys/class/net/{dev}/master").resolve().name
    except OSError:
        return None


def _link_info(dev: str) -> dict:
    out = ip("-j", "link", "show", dev, check=False)
    links = json.loads(out) if out.strip() else []
    return links[0] if links else {}


def _die_with_parent() -> None:
    """In a child: get SIGTERM when the agent dies, so no `ip monitor` outlives it."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def watch_links(names: Iterable[str], wake: Callable[[], object]) -> threading.Thread:
    """Call `wake` whenever the kernel reports a change to one of these links.

    Docker creates and deletes docker0 on its own schedule; reacting to the netlink
    event (through `ip monitor`) repairs the docker0 link within a pass instead of
    within a polling interval.  The periodic pass stays the safety net.
    """
    wanted = set(names)

    def follow() -> None:
        while True:
            proc = subprocess.Popen(["ip", "-o", "monitor", "link"], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True,
                                    preexec_fn=_die_with_parent)
            assert proc.stdout is not None
            for line in proc.stdout:
                # "12: weft-d0p@weft-d0: <...> master docker0": the link's own name
                # only, so every container veth joining docker0 does not wake a pass
                parts = line.split(":", 2)
                name = parts[1].strip().split("@")[0] if len(parts) > 1 else ""
                if name in wanted:
                    wake()
            proc.wait()

    thread = threading.Thread(target=follow, name="link-watch", daemon=True)
    thread.start()
    return thread


def ensure_docker_link(mtu: int, tx_off: bool = True) -> bool:
    """The veth between docker0 and br0, repaired whatever Docker did to docker0.

    docker0 belongs to Docker and follows its life: it may appear after the agent
    started, and a dockerd restart with a new ``--bip`` deletes and recreates it,
    which leaves our end ``weft-d0p`` with no master (silent 100% loss).  Every pass
    therefore checks the whole link: both ends exist and are up, ``weft-d0p`` is
    docker0's port, the MTU is the cluster's, and TX checksum offload is what the
    datapath needs (`tx_off`: netdev only; a host moved between datapaths follows).
    Returns True if anything changed.
    """
    if not link_exists("docker0"):
        LOG.warning("no docker0 bridge yet: the docker0 link waits for Docker")
        return False
    changed = ensure_veth(DOCKER_LINK_PORT, DOCKER_LINK_PEER, mtu, master="docker0",
                          tx_off=tx_off)
    if changed:
        LOG.info("created the docker0 link %s <-> %s (mtu %d)", DOCKER_LINK_PORT,
                 DOCKER_LINK_PEER, mtu)
    master = master_of(DOCKER_LINK_PEER)
    if master != "docker0":
        ip("link", "set", DOCKER_LINK_PEER, "master", "docker0")
        LOG.warning("docker0 link: %s had master %s (docker0 was recreated?): re-attached "
                    "to docker0", DOCKER_LINK_PEER, master or "none")
        changed = True
    for dev in (DOCKER_LINK_PORT, DOCKER_LINK_PEER):
        info = _link_info(dev)
        if info.get("mtu") != mtu:
            ip("link", "set", dev, "mtu", str(mtu))
            LOG.info("docker0 link: %s mtu %s -> %d", dev, info.get("mtu"), mtu)
            changed = True
        if "UP" not in info.get("flags", []):
            ip("link", "set", dev, "up")
            LOG.info("docker0 link: %s set up", dev)
            changed = True
        if ensure_tx_checksum(dev, on=not tx_off):
            LOG.info("docker0 link: %s TX checksum offload %s", dev, "off" if tx_off else "on")
            changed = True
    return changed


def docker_options(cluster: Cluster, host: Host, mtu: int) -> dict[str, str | int]:
    """The dockerd settings this host needs, as daemon.json keys.

    ``bip`` is the host's gateway address with the *cluster* prefix, not the host's
    /24: containers then reach every other host's containers on-link through
    docker0 -> br0, and the host routes the whole cluster subnet to docker0.  A /24
    ``bip`` leaves containers with only a default route via their own host, which
    has no route to the other hosts' /24s (100% loss).  ``fixed-cidr`` keeps Docker's
    allocations inside this host's own range; ``mtu`` leaves room for the tunnel
    header (without it TCP blackholes).
    """
    opts: dict[str, str | int] = {"mtu": mtu}
    if host.docker_subnet:
        net = ipaddress.ip_network(host.docker_subnet)
        cluster_net = ipaddress.ip_network(cluster.cluster_subnet)
        opts["bip"] = f"{net[1]}/{cluster_net.prefixlen}"
        opts["fixed-cidr"] = str(net)
    return opts


# weft's resolver (docs/dns.md): containers' name server
DOCKER_DNS = (RESOLVER_ADDRESS,)


def docker_daemon_json(cluster: Cluster, host: Host, mtu: int) -> str:
    """A ready daemon.json fragment (merge it into /etc/docker/daemon.json).  ``dns``:
    Docker's embedded resolver forwards what it cannot answer (other hosts' containers,
    the outside) to weft's resolver; docker0's containers ask it directly."""
    conf: dict[str, object] = {**docker_options(cluster, host, mtu), "dns": list(DOCKER_DNS)}
    return json.dumps(conf, indent=2, sort_keys=True) + "\n"


def subnet_env(cluster: Cluster, host: Host, mtu: int) -> str:
    """What a Docker daemon on this host needs, as flannel's subnet.env gives it."""
    opts = docker_options(cluster, host, mtu)
    lines = [f"WEFT_HOST={host.name}", f"WEFT_MTU={mtu}",
             f"WEFT_CLUSTER_SUBNET={cluster.cluster_subnet}"]
    if host.docker_subnet:
        lines.append(f"WEFT_SUBNET={host.docker_subnet}")
    flags = " ".join([*(f"--{k}={opts[k]}" for k in ("bip", "fixed-cidr", "mtu") if k in opts),
                      *(f"--dns={a}" for a in DOCKER_DNS)])
    lines.append(f"DOCKER_OPTS=\"{flags}\"")
    return "\n".join(lines) + "\n"


def write_if_changed(path: Path, text: str) -> bool:
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    # a name of its own: a second writer (`ovs-agent --once` beside the daemon) never
    # renames this one's file away, and a reader sees the old text or the new, whole
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


def docker_link_up() -> bool | None:
    """Carrier on both ends of the docker0 <-> br0 veth pair; None: no docker0 here."""
    if not Path("/sys/class/net/docker0").exists():
        return None
    def carrier(dev: str) -> bool:
        try:
            return Path(f"/sys/class/net/{dev}/carrier").read_text().strip() == "1"
        except OSError:             # missing, or down (reading carrier fails then)
            return False
    return carrier(DOCKER_LINK_PORT) and carrier(DOCKER_LINK_PEER)
