"""The host firewall the agent owns: nftables ``table inet weft``.

Why: on a Docker host (``ip_forward=1``, MASQUERADE for the container range) a
container's packet to a peer's underlay address leaves with this host's
address.  The peer cannot tell it from real tunnel traffic (with the
userspace datapath, tunnel packets never even pass the peer's kernel IP
stack on receive), so the only place to stop it is here, before it leaves:

* forward: traffic routed for containers to any host's tunnel port (VXLAN
  udp 4789, GRE), to an OVSDB port (tcp 6640) or to a controller's OpenFlow
  port (from hosts.yaml) is dropped;
* input: the same from ``docker0`` and Docker's user-defined bridges to this host's
  own addresses.

Tenants' gateway ports ``wx-<id>`` (docs/routing.md section 3) put tenant containers one
routing hop from the host and the cluster, so containers (all of these interfaces) also
may not reach the controllers' API ports, etcd's client and peer ports or SSH on cluster
addresses, and nothing new may come in from a ``wx`` port to the host itself (replies to
the host's own connections, and ICMP errors about them, still may).

With ``encryption: ipsec`` (hosts.yaml) the table also guards the tunnels themselves:
VXLAN and GRE to a host's underlay address leave only if the kernel routes them through
IPsec (``rt ipsec missing`` drops them in output), and arrive only if IPsec decrypted them
(``meta ipsec missing`` drops them in input).  So a tunnel whose IPsec is not (yet) set
up, because ovs-monitor-ipsec is missing, late or dead, carries nothing rather than
clear text, and a packet forged on the underlay in clear is dropped.

The table is replaced whole and atomically when the cluster changes; nothing
outside it is touched (Docker's and the operator's rules stay as they are).
A drop in any nftables base chain is final, so Docker's ACCEPT rules cannot
undo it.
"""
from __future__ import annotations

import ipaddress
import logging
import re
import shutil
import subprocess
from urllib.parse import urlsplit

from cluster.hostsfile import Cluster
from ovs_agent import resolver
from ovs_agent.desired import UNDERLAY_BRIDGE

LOG = logging.getLogger("ovs-agent")
TABLE = "weft"
VXLAN_PORT = 4789
OVSDB_PORTS = (6640,)
# etcd's client and peer ports (hosts.yaml does not name the store's endpoints: the
# well-known ports), and SSH
SERVICE_PORTS = (22, 2379, 2380)
GATEWAY_IFACES = "wx-*"
DNS_METER = "dns_sources"       # per (wx port, source address): queries to the resolver
DNS_RATE, DNS_BURST = 200, 400  # per second; the resolver's own bucket is below it
_TARGET = re.compile(r"(?:tcp|ssl):\[?([0-9A-Fa-f:.]+?)\]?:(\d+)$")


# Where containers' packets enter this host: docker0 and Docker's user-defined bridges
# (br-<network id>).  `--network host` containers share the host's own stack: no
# interface tells them apart from the host's processes (docs/security.md).
CONTAINER_IFACES = ("docker0", "br-*", GATEWAY_IFACES)


def _api_endpoints(cluster: Cluster) -> tuple[set[tuple[str, int]], set[int]]:
    """The controllers' REST APIs and the agents' listeners (hosts' ``agent_api``):
    (IPv4, port) of URLs with a literal address, and the
    ports of URLs naming a host (their address is not known here)."""
    pairs, by_name = set(), set()
    agents = tuple(h.agent_api for h in cluster.hosts if h.agent_api)
    for url in (cluster.apis or ((cluster.api,) if cluster.api else ())) + agents:
        parts = urlsplit(url)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            continue
        try:
            pairs.add((str(ipaddress.IPv4Address(parts.hostname or "")), port))
        except ValueError:
            by_name.add(port)
    return pairs, by_name


def ruleset(cluster: Cluster, container_ifaces: tuple[str, ...] = CONTAINER_IFACES) -> str:
    """The nft script (replacing ``table inet weft``) for this cluster."""
    underlay = ", ".join(sorted({h.underlay_ip for h in cluster.hosts}))
    controllers = sorted({(m[1], int(m[2])) for t in cluster.controllers
                          if (m := _TARGET.match(t)) and ":" not in m[1]})
    ovsdb = ", ".join(str(p) for p in OVSDB_PORTS)
    api_pairs, api_named = _api_endpoints(cluster)
    addresses = sorted({h.underlay_ip for h in cluster.hosts} | {ip for ip, _ in controllers}
                       | {ip for ip, _ in api_pairs}, key=ipaddress.IPv4Address)
    # (address . port) pairs, never a cross product: a container may reach a port
    # published on a host even when the same number is an API port elsewhere
    protected = sorted(api_pairs | {(ip, p) for ip in addresses
                                    for p in (*SERVICE_PORTS, *api_named)},
                       key=lambda x: (ipaddress.IPv4Address(x[0]), x[1]))
    services = ", ".join(f"{ip} . {p}" for ip, p in protected)
    # br-* names Docker's user-defined bridges, and also weft's own underlay bridge
    # br-phy, which carries the host's address: never a container's way in
    ifaces = ", ".join(f'"{i}"' for i in container_ifaces)
    containers = f'iifname {{ {ifaces} }} iifname != "{UNDERLAY_BRIDGE}"'
    deny = [f"ip daddr {{ {underlay} }} udp dport {VXLAN_PORT} drop",
            f"ip daddr {{ {underlay} }} ip protocol gre drop",
            f"ip daddr {{ {underlay} }} tcp dport {{ {ovsdb} }} drop",
            *(f"ip daddr {ip} tcp dport {port} drop" for ip, port in controllers),
            f"{containers} ip daddr . tcp dport {{ {services} }} drop"]
    api_ports = {p for _, p in api_pairs} | api_named
    local_ports = sorted({p for _, p in controllers} | set(SERVICE_PORTS) | api_ports)
    return "\n".join([
        f"table inet {TABLE}", f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        f"  set {DNS_METER} {{ typeof iifname . ip saddr; size 65535; "
        "flags dynamic,timeout; timeout 60s; }",
        "  chain forward {",
        "    type filter hook forward priority filter - 10; policy accept;",
        *(f"    {rule}" for rule in deny),
        "  }",
        "  chain input {",
        "    type filter hook input priority filter - 10; policy accept;",
        f"    {containers} udp dport {VXLAN_PORT} drop",
        f"    {containers} ip protocol gre drop",
        f"    {containers} tcp dport {{ {ovsdb}"
        + "".join(f", {p}" for p in local_ports if p not in OVSDB_PORTS) + " } drop",
        *([f"    ip saddr {{ {underlay} }} udp dport {VXLAN_PORT} meta ipsec missing drop",
           f"    ip saddr {{ {underlay} }} ip protocol gre meta ipsec missing drop"]
          if cluster.encryption == "ipsec" else []),
        *(_dns_rules(containers) if GATEWAY_IFACES in container_ifaces else []),
        *([f'    iifname "{GATEWAY_IFACES}" ct state established,related accept',
           f'    iifname "{GATEWAY_IFACES}" drop'] if GATEWAY_IFACES in container_ifaces else []),
        "  }",
        *(["  chain output {",        # encryption: ipsec, the tunnels' own packets
           "    type filter hook output priority filter - 10; policy accept;",
           f"    ip daddr {{ {underlay} }} udp dport {VXLAN_PORT} rt ipsec missing drop",
           f"    ip daddr {{ {underlay} }} ip protocol gre rt ipsec missing drop",
           "  }"] if cluster.encryption == "ipsec" else []),
        "}", ""])


def _dns_rules(containers: str) -> list[str]:
    """Queries to the agent's resolver (docs/dns.md): the one thing of the host a wx port
    may open, and only ``DNS_RATE`` per (interface, source) of it, checked before
    conntrack's established accept (a client reusing its source port is established).
    docker0's and Docker bridges' containers ask it too (``dns`` in daemon.json applies
    to every container), under the same limit; nothing else of that address is open."""
    to_resolver = f"ip daddr {resolver.ADDRESS} udp dport {resolver.PORT}"
    return [
        f"    {containers} {to_resolver} add @{DNS_METER} "
        f"{{ iifname . ip saddr limit rate over {DNS_RATE}/second burst {DNS_BURST} packets }} "
        "drop",
        f"    {containers} {to_resolver} accept",
        f"    ip daddr {resolver.ADDRESS} drop",
    ]


class Firewall:
    """Keeps ``table inet weft`` equal to ``ruleset``.  The agent refuses to start
    without nft (ovs_agent.cli); if nft goes away later, each pass logs it once."""

    def __init__(self) -> None:
        self.nft = shutil.which("nft")
        self.applied: str | None = None
        self._warned = False

    def ensure(self, cluster: Cluster) -> bool:
        """Apply the ruleset if it changed or the table is gone.  True if written."""
        if self.nft is None:
            if not self._warned:
                LOG.warning("nft not found: containers can reach tunnel, OVSDB and OpenFlow "
                            "ports of other hosts (see docs/security.md)")
                self._warned = True
            return False
        want = ruleset(cluster)
        present = subprocess.run([self.nft, "list", "table", "inet", TABLE], check=False,
                                 capture_output=True).returncode == 0
        if want == self.applied and present:
            return False
        res = subprocess.run([self.nft, "-f", "-"], input=want, text=True, capture_output=True,
                             check=False)
        if res.returncode:
            LOG.error("nft refused table inet %s: %s", TABLE, res.stderr.strip())
            return False
        self.applied = want
        return True


DOCKER_USER = "DOCKER-USER"


def docker_user_rules() -> list[list[str]]:
    """What weft needs in Docker's DOCKER-USER chain: Docker's FORWARD policy is drop, and
    tenants' egress and published ports are forwarded through ``wx-<id>`` ports."""
    return [[flag, "wx-+", "-m", "comment", "--comment", "weft", "-j", "ACCEPT"]
            for flag in ("-i", "-o")]


def ensure_docker_user(iptables: str | None = None) -> list[str]:
    """Insert the DOCKER-USER accepts where missing (Docker rebuilds its chains when it
    restarts: checked every pass).  No iptables or no DOCKER-USER chain (no Docker
    here): nothing.  Returns the rules inserted."""
    iptables = iptables or shutil.which("iptables")
    if iptables is None:
        return []
    res = subprocess.run([iptables, "-w", "5", "-S", DOCKER_USER], capture_output=True,
                         text=True, check=False)
    if res.returncode:
        return []
    have = {line.strip() for line in res.stdout.splitlines()}
    done = []
    for rule in docker_user_rules():
        text = " ".join(rule)
        if f"-A {DOCKER_USER} {text}" in have:
            continue
        ins = subprocess.run([iptables, "-w", "5", "-I", DOCKER_USER, *rule],
                             capture_output=True, text=True, check=False)
        if ins.returncode:
            LOG.warning("iptables -I %s %s: %s", DOCKER_USER, text, ins.stderr.strip())
        else:
            done.append(f"{DOCKER_USER} {text}")
    return done
