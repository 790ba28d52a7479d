"""What a host's OVS should hold, as data, and the delta from what it holds.

Pure: no OVSDB, no clock.  `desired()` turns hosts.yaml into bridge and port
specs; `diff()` compares them with the agent-owned part of the actual state
and returns the few operations that make them equal.  An unchanged cluster
gives an empty list, which is why a second pass writes nothing to OVSDB.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cluster.hostsfile import (BRIDGE, DOCKER_LINK_PORT, Cluster, datapath_id, dpid_str,
                                 tunnel_port_name)
from ovs_agent import ipsec

OWNER_KEY = "weft-owner"
OWNER = "ovs-agent"
ROLE_KEY = "weft-role"
PEER_KEY = "weft-peer"
TENANT_KEY = "weft-tenant"
UNDERLAY_BRIDGE = "br-phy"
# Roles the reconcile loop manages; ports of other roles (containers plugged by
# `ovs-agent attach`) are owned by the agent too, but never removed by a pass.
MANAGED_ROLES = ("tunnel", "docker-link", "underlay", "uplink")
# OVS drops a controller connection after 5 s without an answer to its echo; a
# controller busy installing tens of thousands of flows can take longer, and a
# reconnect means a full resync.  With fail_mode=secure nothing depends on
# noticing a dead controller quickly, so wait longer.
CONTROLLER_PROBE_MS = 30000
# After losing its controller (a restart, an upgrade) OVS retries with a backoff that
# doubles up to max_backoff (default 8 s): a controller back after 4 s waited for the
# attempt at 7 s, one back after 8 s for the one at 15 s.  One attempt a second per
# switch costs nothing and puts a restarted controller in sync seconds sooner.
CONTROLLER_MAX_BACKOFF_MS = 1000

Pairs = tuple[tuple[str, str], ...]


def pairs(d: dict[str, str]) -> Pairs:
    return tuple(sorted(d.items()))


@dataclass(frozen=True)
class OvsPortSpec:
    """A port with one interface of the same name (all the agent ever makes)."""
    name: str
    type: str = ""                      # "" (system/veth), "vxlan", "gre"
    options: Pairs = ()
    external_ids: Pairs = ()


@dataclass(frozen=True)
class BridgeSpec:
    name: str
    datapath_type: str
    fail_mode: str | None
    protocols: tuple[str, ...]
    controllers: tuple[str, ...]
    other_config: Pairs
    ports: tuple[OvsPortSpec, ...] = field(default=())

    def columns(self) -> dict[str, object]:
        """The Bridge columns the agent sets (other_config keys merge, never replace)."""
        return {"datapath_type": self.datapath_type, "fail_mode": self.fail_mode or [],
                "protocols": list(self.protocols), "other_config": dict(self.other_config),
                "external_ids": {OWNER_KEY: OWNER}}


def _tags(role: str, **extra: str) -> Pairs:
    return pairs({OWNER_KEY: OWNER, ROLE_KEY: role, **extra})


def device_port_type(cluster: Cluster, me: str, port: str,
                     afxdp_refused: frozenset[str] = frozenset()) -> str:
    """OVS interface type for a Linux device (veth, NIC) on this host's bridges.

    The userspace datapath reads devices with AF_PACKET (type "") by default;
    AF_XDP is more than twice as fast here, so "auto" asks for it and falls
    back per port once OVS has refused it (`afxdp_refused`).
    """
    if cluster.host(me).datapath_type != "netdev" or cluster.port_type == "afpacket":
        return ""
    if cluster.port_type == "auto":
        return "" if port in afxdp_refused else "afxdp-nonpmd"
    return cluster.port_type


def desired(cluster: Cluster, me: str, underlay_iface: str | None,
            afxdp_refused: frozenset[str] = frozenset(),
            underlay_mac: str | None = None, psk: str | None = None) -> tuple[BridgeSpec, ...]:
    """Bridges and agent-managed ports this host should have (`psk`: the cluster's
    pre-shared key, for `encryption: ipsec` with psk_file)."""
    host = cluster.host(me)
    ports = [OvsPortSpec(DOCKER_LINK_PORT,
                      device_port_type(cluster, me, DOCKER_LINK_PORT, afxdp_refused),
                      external_ids=_tags("docker-link"))]
    if cluster.transport == "vlan" and host.uplink:
        # Tenants cross hosts as VLANs on the uplink; the controller makes it a trunk.
        ports.append(OvsPortSpec(host.uplink,
                              device_port_type(cluster, me, host.uplink, afxdp_refused),
                              external_ids=_tags("uplink")))
    for peer in (cluster.peers(me) if cluster.transport == "tunnel" else ()):
        kind = cluster.link_type(me, peer.name)
        ports.append(OvsPortSpec(tunnel_port_name(kind, peer.name), kind,
                              pairs({"remote_ip": peer.underlay_ip, "key": "flow",
                                     **ipsec.tunnel_options(cluster, peer.name, psk)}),
                              _tags("tunnel", **{PEER_KEY: peer.name,
                                                 "weft-peer-ip": peer.underlay_ip})))
    br0 = BridgeSpec(BRIDGE, host.datapath_type, "secure",
                     ("OpenFlow13", "OpenFlow14", "OpenFlow15"), cluster.controllers,
                     pairs({"datapath-id": dpid_str(datapath_id(host)),
                            "disable-in-band": "true"}), tuple(ports))
    if host.datapath_type != "netdev" or cluster.transport != "tunnel":
        return (br0,)
    # Userspace tunnelling sends encapsulated packets through the bridge that
    # holds the underlay address, so the underlay NIC must sit on an OVS bridge.
    phy_ports = (OvsPortSpec(underlay_iface,
                          device_port_type(cluster, me, underlay_iface, afxdp_refused),
                          external_ids=_tags("underlay")),) if underlay_iface else ()
    # br-phy takes the NIC's MAC: the underlay address keeps its MAC when it moves
    # from the NIC to br-phy, so peers' cached neighbour entries stay right.
    phy_config = {"disable-in-band": "true"}
    if underlay_mac:
        phy_config["hwaddr"] = underlay_mac
    phy = BridgeSpec(UNDERLAY_BRIDGE, "netdev", "standalone", ("OpenFlow13",), (),
                     pairs(phy_config), phy_ports)
    return (phy, br0)


DEFAULT_SSL_DIR = Path("/etc/weft/pki")


def ssl_files(cluster: Cluster, me: str, ssl_dir: Path) -> tuple[str, str, str] | None:
    """(private key, certificate, CA certificate) OVS needs for ``ssl:`` controller
    targets (mutual TLS, files named as weft-pki makes them); None without such a target."""
    if not any(t.startswith("ssl:") for t in cluster.controllers):
        return None
    return (str(ssl_dir / f"{me}-privkey.pem"), str(ssl_dir / f"{me}-cert.pem"),
            str(ssl_dir / "ca-cert.pem"))


@dataclass(frozen=True)
class ActualBridge:
    name: str
    columns: dict                       # the columns BridgeSpec.columns() names
    controllers: tuple[str, ...]
    ports: tuple[OvsPortSpec, ...]      # agent-owned, managed-role ports only
    port_names: frozenset[str]          # every port, owned or not
    probes: tuple[int | None, ...] = ()  # the controllers' inactivity_probe
    backoffs: tuple[int | None, ...] = ()  # ... and max_backoff


# Operations: small tuples the OVSDB shell turns into ovsdbapp commands.
Op = tuple


def diff(want: tuple[BridgeSpec, ...], have: dict[str, ActualBridge]) -> list[Op]:
    """Operations that make `have` match `want`, touching only what the agent owns."""
    ops: list[Op] = []
    for br in want:
        cur = have.get(br.name)
        if cur is None:
            ops.append(("add_bridge", br.name, br.datapath_type))
            ops.append(("set_bridge", br.name, br.columns()))
        else:
            changed = {k: v for k, v in br.columns().items() if not _same(cur.columns.get(k), v)}
            if changed:
                ops.append(("set_bridge", br.name, changed))
        if (cur.controllers if cur else ()) != tuple(sorted(br.controllers)):
            ops.append(("set_controller", br.name, tuple(sorted(br.controllers))))
        elif br.controllers and cur and (
                any(p != CONTROLLER_PROBE_MS for p in cur.probes)
                or any(b != CONTROLLER_MAX_BACKOFF_MS for b in cur.backoffs)):
            ops.append(("set_probe", br.name, CONTROLLER_PROBE_MS, CONTROLLER_MAX_BACKOFF_MS))
        owned = {p.name: p for p in cur.ports} if cur else {}
        present = cur.port_names if cur else frozenset()
        wanted = {p.name for p in br.ports}
        for name in sorted(set(owned) - wanted):
            ops.append(("del_port", br.name, name))
        for p in br.ports:
            if p.name not in present:
                ops.append(("add_port", br.name, p))
            elif owned.get(p.name) != p:
                ops.append(("set_port", br.name, p))
    return ops


def _same(actual: object, want: object) -> bool:
    """Compare an OVSDB column with what we set; maps only on the keys we set."""
    if isinstance(want, dict):
        return isinstance(actual, dict) and all(actual.get(k) == v for k, v in want.items())
    if isinstance(want, list):
        return sorted(actual or []) == sorted(want)  # type: ignore[call-overload]
    return actual == want
