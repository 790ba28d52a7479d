"""Lab topology files: parsed and fully validated into frozen objects.

A topology describes hosts, their containers, tenants (and their networks),
external 802.1Q switches and external nodes (the world beyond the underlay);
`docs/lab.md` documents the format.  Everything is checked before
the lab touches the machine, and an error names the field and line.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cluster import yamlfile
from weft_lab.nodes import CTL, WAN

NAME_RE = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")     # used with fullmatch
MAX_NAME = 12          # keeps "<lab>.<node>" and derived interface names short
TUNNEL_TYPES = ("vxlan", "gre")
ATTACH_MODES = ("docker0", "br0", "weft")
PORT_TYPES = ("auto", "afxdp-nonpmd", "afxdp", "afpacket")
TRANSPORTS = ("tunnel", "vlan")
MAX_CONTROLLERS = 5     # controllers and etcd members take mgmt addresses 1..5 (hosts: 10+)
RESERVED_NODES = (CTL, WAN)
SERVE_KINDS = ("tcp", "udp", "http", "dns")  # iperf3 -s; echo; peer logger; DNS (outside.py)
DEFAULT_SERVE = ("tcp:5201", "udp:5201", "http:8000")


class TopologyError(ValueError):
    """A topology file is malformed; names the field and line."""

    def __init__(self, source: str, field: str, line: int | None, message: str):
        self.field, self.line = field, line
        where = f"{source}:{line}" if line else source
        super().__init__(yamlfile.truncate(f"{where}: {field}: {message}"))


@dataclass(frozen=True)
class Container:
    name: str
    host: str
    attach: str                 # "docker0" (plain docker run), "br0" (ovs-agent attach) or
                                # "weft" (docker run on the tenant's weft plugin network)
    ip: str                     # interface address, CIDR
    mac: str | None
    tenant: str | None          # for br0- and weft-attached containers
    bare: bool = False          # docker0 container as a bare namespace even with docker
    network: str | None = None  # a network of the tenant (None: the tenant's own network)

    @property
    def segment(self) -> str | None:
        """What the container is plugged into: its network, else its tenant's own one
        (a tenant name also names its default network, docs/routing.md)."""
        return self.network or self.tenant


@dataclass(frozen=True)
class Host:
    name: str
    index: int
    underlay_ip: str
    mgmt_ip: str
    docker_subnet: str          # this host's allocation range
    docker_ip: str              # docker0 address, CIDR within the cluster subnet
    tunnel_type: str | None     # per-host override
    # How the host becomes a member: "file" (listed in the lab's hosts.yaml), "register"
    # (not listed: its agent runs with --register and a peers file naming only itself),
    # "later" (not listed, no agent, no dockerd or plugin: `lab.join_later` starts them,
    # the agent registering, as a host joining a running cluster)
    join: str = "file"


JOIN_MODES = ("file", "register", "later")


@dataclass(frozen=True)
class Network:
    """A further network (L2 segment) of a tenant, created with POST /v1/networks."""
    name: str
    subnet: str
    gateway: str | None = None  # None: the controller's default (the first address)
    egress: bool | None = None  # None: the controller's default (on)


@dataclass(frozen=True)
class Tenant:
    name: str
    vlan: int | None
    subnet: str | None
    networks: tuple[Network, ...] = ()

    def segment(self, name: str) -> tuple[str | None, str | None]:
        """(subnet, explicit gateway) of the tenant's own network or one of its networks."""
        if name == self.name:
            return self.subnet, None
        n = next(n for n in self.networks if n.name == name)
        return n.subnet, n.gateway


@dataclass(frozen=True)
class External:
    """A node beyond the underlay (the LAN or the internet), behind the lab's router
    `LAB.wan`, running servers: ``tcp:P`` iperf3, ``udp:P`` an echo, ``http:P`` a server
    that answers with and logs each peer's address (weft_lab/outside.py)."""
    name: str
    ip: str                     # CIDR; the router takes the first address of the network
    serve: tuple[str, ...] = DEFAULT_SERVE

    @property
    def router_ip(self) -> str:
        return str(ipaddress.IPv4Interface(self.ip).network[1])


@dataclass(frozen=True)
class SwitchVlan:
    vlan: int | None            # None: untagged (native)
    ip: str


@dataclass(frozen=True)
class ExternalSwitch:
    """An external 802.1Q switch (a namespace) on a trunk port of a host's br0."""
    name: str
    host: str
    port: str                   # port name on br0
    vlans: tuple[SwitchVlan, ...]
    native: str | None = None   # tenant of untagged frames on the trunk


@dataclass(frozen=True)
class Topology:
    name: str
    tunnel_type: str
    underlay: str
    mgmt: str
    cluster_subnet: str
    controller: bool
    agent: bool
    port_type: str
    transport: str
    hosts: tuple[Host, ...]
    containers: tuple[Container, ...]
    tenants: tuple[Tenant, ...]
    switches: tuple[ExternalSwitch, ...]
    # Real dockerd on every host, docker0 containers made by `docker run` (needs the agent:
    # dockerd is started with the daemon.json the agent writes).  False: the lab builds
    # docker0 itself and containers are bare namespaces (plumbing tests, benchmarks).
    docker: bool = False
    # The weft Docker network plugin beside each agent, and a weft network per tenant with
    # a subnet on every host (`attach: weft` containers run on them).
    plugin: bool = False
    # weft-manager instances in LAB.ctl (one is elected master on etcd when several) and
    # etcd members (0: the controller keeps its state in SQLite, as one controller does)
    controllers: int = 1
    etcd: int = 0
    external: tuple[External, ...] = ()

    @property
    def wan_ip(self) -> str:
        """The router's address on the underlay: its last host address (hosts take .10+)."""
        return str(ipaddress.ip_network(self.underlay)[-2])

    @property
    def members(self) -> tuple[Host, ...]:
        """Hosts that are members from the start (listed, or registering)."""
        return tuple(h for h in self.hosts if h.join != "later")

    @property
    def controller_ip(self) -> str:
        return str(ipaddress.ip_network(self.mgmt)[1])

    def controller_ips(self) -> list[str]:
        """Instance k (0-based) listens on mgmt[1 + k]; etcd member k uses the same address."""
        net = ipaddress.ip_network(self.mgmt)
        return [str(net[1 + k]) for k in range(max(self.controllers, self.etcd))]

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def addr(self, container: str) -> str:
        """A container's IPv4 address, without the prefix length."""
        return next(c.ip for c in self.containers if c.name == container).split("/")[0]

    def external_addr(self, name: str) -> str:
        """An external node's IPv4 address, without the prefix length."""
        return next(e.ip for e in self.external if e.name == name).split("/")[0]

    def tenant(self, name: str) -> Tenant:
        return next(t for t in self.tenants if t.name == name)

    def with_name(self, name: str) -> "Topology":
        _check_name(name, "name", None, "<--lab>")
        return Topology(**{**self.__dict__, "name": name})

    def with_tunnel_type(self, tunnel_type: str) -> "Topology":
        """The same lab with another tunnel type (per-host overrides are kept)."""
        if tunnel_type not in TUNNEL_TYPES:
            raise TopologyError("<tunnel_type>", "tunnel_type", None,
                                f"{tunnel_type!r} is not one of {', '.join(TUNNEL_TYPES)}")
        return Topology(**{**self.__dict__, "tunnel_type": tunnel_type})


def _check_name(value: Any, field: str, line: int | None, src: str) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value) or len(value) > MAX_NAME:
        raise TopologyError(src, field, line,
                            f"{yamlfile.shown(value)} is not a valid name (lowercase letters, digits "
                            f"and inner dashes, starting with a letter, at most {MAX_NAME})")
    return value


class _Reader:
    """Walks composed YAML nodes, so every value knows its line."""

    def __init__(self, source: str) -> None:
        self.src = source

    def fail(self, field: str, node: yaml.Node | None, msg: str) -> TopologyError:
        return TopologyError(self.src, field, node.start_mark.line + 1 if node else None, msg)

    def mapping(self, node: yaml.Node, field: str, allowed: set[str],
                required: set[str] | frozenset[str] = frozenset()) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(field, node, "must be a mapping")
        out: dict[str, yaml.Node] = {}
        for key, val in node.value:
            if not isinstance(key, yaml.ScalarNode) or not isinstance(key.value, str):
                raise self.fail(field or "<root>", key, "keys must be plain strings")
            name = key.value
            if name not in allowed:
                raise self.fail(f"{field}.{name}".lstrip("."), key,
                                f"unknown key (allowed: {', '.join(sorted(allowed))})")
            if name in out:
                raise self.fail(f"{field}.{name}".lstrip("."), key, "duplicate key")
            out[name] = val
        for name in sorted(required - out.keys()):
            raise self.fail(f"{field}.{name}".lstrip("."), node, "missing required field")
        return out

    def seq(self, node: yaml.Node, field: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(field, node, "must be a list")
        return list(node.value)

    def scalar(self, node: yaml.Node, field: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(field, node, "must be a single value")
        # Construct from the composed node: re-serialising it and parsing again broke on
        # scalars such as "..." (a document end marker once written out bare).
        try:
            return yaml.constructor.SafeConstructor().construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError) as exc:
            raise self.fail(field, node, f"not a valid value: {exc}") from None

    def choice(self, node: yaml.Node, field: str, choices: tuple[str, ...]) -> str:
        value = self.scalar(node, field)
        if value not in choices:
            raise self.fail(field, node,
                            f"{yamlfile.shown(value)} is not one of {', '.join(choices)}")
        return value

    def boolean(self, node: yaml.Node, field: str) -> bool:
        value = self.scalar(node, field)
        if not isinstance(value, bool):
            raise self.fail(field, node, "must be true or false")
        return value

    def network(self, node: yaml.Node, field: str) -> ipaddress.IPv4Network:
        value = self.scalar(node, field)
        try:
            if not isinstance(value, str):
                raise ValueError("write it as a string like 10.0.0.0/24")
            return ipaddress.IPv4Network(value)
        except ValueError as exc:
            raise self.fail(field, node, f"{yamlfile.shown(value)} is not an IPv4 network: "
                                         f"{yamlfile.shown(str(exc), 120)}") from None

    def interface(self, node: yaml.Node, field: str) -> ipaddress.IPv4Interface:
        value = self.scalar(node, field)
        try:
            if not isinstance(value, str) or "/" not in value:
                raise ValueError("needs a prefix length, e.g. 10.0.0.2/24")
            return ipaddress.IPv4Interface(value)
        except ValueError as exc:
            raise self.fail(field, node, f"{yamlfile.shown(value)} is not an IPv4 "
                                         f"address/prefix: {yamlfile.shown(str(exc), 120)}") from None

    def vlan(self, node: yaml.Node, field: str) -> int:
        value = self.scalar(node, field)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 4094:
            raise self.fail(field, node, f"{yamlfile.shown(value)} is not a VLAN id (1-4094)")
        return value

    def mac(self, node: yaml.Node, field: str) -> str:
        value = str(self.scalar(node, field)).lower()
        if not re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", value) or int(value[:2], 16) & 1:
            raise self.fail(field, node, f"{yamlfile.shown(value)} is not a unicast MAC address")
        return value


def _check_weft_container(r, c: dict, cf: str, cnode, docker: bool, tenant: Tenant,
                          segment: str) -> None:
    """A `docker run --network NET` container: Docker, a subnet, a usable ip."""
    if not docker:
        raise r.fail(cf + ".attach", c["attach"], "attach: weft needs docker: true")
    subnet, gateway = tenant.segment(segment)
    what = f"tenant {tenant.name}" if segment == tenant.name else f"network {segment}"
    if subnet is None:
        raise r.fail(cf + ".tenant", c["tenant"], f"tenant {tenant.name!r} needs a subnet "
                     "(its weft Docker network is created with it)")
    if "ip" not in c:
        return
    ip = r.interface(c["ip"], cf + ".ip")
    net = ipaddress.IPv4Network(subnet)
    if ip.ip not in net or ip.network != net:
        raise r.fail(cf + ".ip", c["ip"], f"must be in {what}'s subnet {net} "
                     "with its prefix length")
    if ip.ip == net.network_address + 1 or (gateway and str(ip.ip) == gateway):
        raise r.fail(cf + ".ip", c["ip"], f"{ip.ip} is the Docker network's gateway address, "
                     "which the weft IPAM reserves")


def _parse_networks(r: _Reader, t: dict, f: str, tname: str, taken: set[str],
                    own_subnet: str | None) -> tuple[Network, ...]:
    """A tenant's `networks:` list: unique names (also across tenants), disjoint subnets."""
    out: list[Network] = []
    subnets = [ipaddress.IPv4Network(own_subnet)] if own_subnet else []
    for j, node in enumerate(r.seq(t["networks"], f + ".networks") if "networks" in t else []):
        nf = f"{f}.networks[{j}]"
        n = r.mapping(node, nf, {"name", "subnet", "gateway", "egress"}, {"name", "subnet"})
        name = _check_name(r.scalar(n["name"], nf + ".name"), nf + ".name",
                           n["name"].start_mark.line + 1, r.src)
        if name == tname:
            raise r.fail(nf + ".name", n["name"], "is the tenant's own network: give the "
                         "tenant a subnet instead")
        if name in taken or name == "default":
            raise r.fail(nf + ".name", n["name"], f"{name!r} is already a tenant or network "
                         "name, or reserved (names are unique across both)")
        taken.add(name)
        subnet = r.network(n["subnet"], nf + ".subnet")
        if subnet.prefixlen > 30:
            raise r.fail(nf + ".subnet", n["subnet"], f"{subnet} is too small for a gateway "
                         "and a host (/30 or shorter)")
        if any(subnet.overlaps(x) for x in subnets):
            raise r.fail(nf + ".subnet", n["subnet"], f"{subnet} overlaps another network of "
                         f"tenant {tname} (a tenant routes between its networks)")
        subnets.append(subnet)
        gateway = None
        if "gateway" in n:
            value = r.scalar(n["gateway"], nf + ".gateway")
            try:
                gw = ipaddress.IPv4Address(value if isinstance(value, str) else "x")
            except ValueError:
                raise r.fail(nf + ".gateway", n["gateway"],
                             f"{yamlfile.shown(value)} is not an IPv4 address") from None
            if gw not in subnet or gw in (subnet.network_address, subnet.broadcast_address):
                raise r.fail(nf + ".gateway", n["gateway"], f"{gw} is not a host address "
                             f"of {subnet}")
            gateway = str(gw)
        egress = r.boolean(n["egress"], nf + ".egress") if "egress" in n else None
        out.append(Network(name, str(subnet), gateway, egress))
    return tuple(out)


def _parse_external(r: _Reader, top: dict, nets: dict[str, ipaddress.IPv4Network]
                    ) -> tuple[External, ...]:
    """External nodes: addresses outside every lab network, servers on distinct ports."""
    out: list[External] = []
    for i, node in enumerate(r.seq(top["external"], "external") if "external" in top else []):
        f = f"external[{i}]"
        e = r.mapping(node, f, {"name", "ip", "serve"}, {"name", "ip"})
        name = _check_name(r.scalar(e["name"], f + ".name"), f + ".name",
                           e["name"].start_mark.line + 1, r.src)
        ip = r.interface(e["ip"], f + ".ip")
        net = ip.network
        if net.prefixlen > 30 or ip.ip in (net.network_address, net.broadcast_address,
                                           net.network_address + 1):
            raise r.fail(f + ".ip", e["ip"], f"{ip.ip} must be a host address of {net} "
                         f"other than its first ({net.network_address + 1}: the lab's router)")
        for what, other in nets.items():
            if net.overlaps(other):
                raise r.fail(f + ".ip", e["ip"], f"{net} overlaps the {what} network {other}")
        if any(x.ip == str(ip) or ipaddress.IPv4Interface(x.ip).ip == ip.ip for x in out):
            raise r.fail(f + ".ip", e["ip"], f"{ip.ip} is used by another external node")
        if any(ipaddress.IPv4Interface(x.ip).network != net
               and ipaddress.IPv4Interface(x.ip).network.overlaps(net) for x in out):
            raise r.fail(f + ".ip", e["ip"], f"{net} overlaps another external node's network")
        serve: list[str] = []
        ports: set[tuple[str, int]] = set()
        for j, snode in enumerate(r.seq(e["serve"], f + ".serve") if "serve" in e else []):
            value = r.scalar(snode, f"{f}.serve[{j}]")
            kind, _, port = str(value).partition(":")
            if kind not in SERVE_KINDS or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise r.fail(f"{f}.serve[{j}]", snode, f"{yamlfile.shown(value)} is not "
                             f"KIND:PORT with KIND one of {', '.join(SERVE_KINDS)}")
            key = ("udp" if kind in ("udp", "dns") else "tcp", int(port))
            if key in ports:
                raise r.fail(f"{f}.serve[{j}]", snode, f"{key[0]} port {port} is served twice")
            ports.add(key)
            serve.append(f"{kind}:{int(port)}")
        out.append(External(name, str(ip), tuple(serve) if "serve" in e else DEFAULT_SERVE))
    return tuple(out)


def parse(text: str, source: str = "<string>") -> Topology:
    """Parse and validate a topology; raise TopologyError naming the field."""
    r = _Reader(source)
    try:
        root = yamlfile.compose(text)
    except yamlfile.YamlFileError as exc:
        raise TopologyError(source, exc.field, exc.line, exc.message) from None
    if root is None:
        raise TopologyError(source, "<file>", None, "is empty")
    top = r.mapping(root, "", {"name", "tunnel_type", "underlay", "mgmt", "cluster_subnet",
                               "controller", "agent", "port_type", "transport", "hosts",
                               "tenants", "switches", "docker", "plugin", "controllers",
                               "etcd", "external"},
                    {"name", "hosts"})
    name = _check_name(r.scalar(top["name"], "name"), "name", top["name"].start_mark.line + 1,
                       source)
    tunnel = r.choice(top["tunnel_type"], "tunnel_type", TUNNEL_TYPES) \
        if "tunnel_type" in top else "vxlan"
    underlay = r.network(top["underlay"], "underlay") if "underlay" in top \
        else ipaddress.IPv4Network("192.168.50.0/24")
    mgmt = r.network(top["mgmt"], "mgmt") if "mgmt" in top \
        else ipaddress.IPv4Network("10.99.0.0/24")
    cluster = r.network(top["cluster_subnet"], "cluster_subnet") if "cluster_subnet" in top \
        else ipaddress.IPv4Network("172.17.0.0/16")
    controller = r.boolean(top["controller"], "controller") if "controller" in top else True
    agent = r.boolean(top["agent"], "agent") if "agent" in top else True
    docker = r.boolean(top["docker"], "docker") if "docker" in top else agent
    if docker and not agent:
        raise r.fail("docker", top["docker"], "docker: true needs agent: true (each dockerd "
                     "is started with the daemon.json its host's agent writes)")
    n_ctl = _count(r, top, "controllers", 1, 1, MAX_CONTROLLERS)
    n_etcd = _count(r, top, "etcd", 0, 0, MAX_CONTROLLERS)
    if n_ctl > 1 and not n_etcd:
        raise r.fail("controllers", top["controllers"], "several controllers share their "
                     "state in etcd: set etcd: 1 or more (3 survives a member's loss)")
    if (n_ctl > 1 or n_etcd) and not controller:
        raise r.fail("controllers" if "controllers" in top else "etcd",
                     top.get("controllers", top.get("etcd")), "needs controller: true")
    port_type = r.choice(top["port_type"], "port_type", PORT_TYPES) \
        if "port_type" in top else "auto"
    transport = r.choice(top["transport"], "transport", TRANSPORTS) \
        if "transport" in top else "tunnel"
    if underlay.overlaps(mgmt):
        raise r.fail("mgmt", top.get("mgmt"), f"{mgmt} overlaps the underlay {underlay}")
    if not 8 <= cluster.prefixlen <= 23:
        raise r.fail("cluster_subnet", top.get("cluster_subnet"),
                     f"{cluster} must be /8 to /23 (hosts get /24s out of it)")
    for other, what in ((underlay, "underlay"), (mgmt, "mgmt")):
        if cluster.overlaps(other):
            raise r.fail("cluster_subnet", top.get("cluster_subnet"),
                         f"{cluster} overlaps the {what} network {other}")
    for net, what in ((underlay, "underlay"), (mgmt, "mgmt")):
        if not 8 <= net.prefixlen <= 29:
            raise r.fail(what, top.get(what), f"{net} must be /8 to /29")

    tenants: list[Tenant] = []
    segment_names: set[str] = set()       # tenants and networks share one name space
    for i, node in enumerate(r.seq(top["tenants"], "tenants") if "tenants" in top else []):
        f = f"tenants[{i}]"
        t = r.mapping(node, f, {"name", "vlan", "subnet", "networks"}, {"name"})
        tname = _check_name(r.scalar(t["name"], f + ".name"), f + ".name",
                            t["name"].start_mark.line + 1, source)
        if tname in segment_names or tname == "default":
            raise r.fail(f + ".name", t["name"], f"tenant {tname!r} is defined twice, "
                         "names a network, or is reserved")
        segment_names.add(tname)
        vlan = r.vlan(t["vlan"], f + ".vlan") if "vlan" in t else None
        if vlan is not None and any(x.vlan == vlan for x in tenants):
            raise r.fail(f + ".vlan", t["vlan"], f"VLAN {vlan} is used by another tenant")
        subnet = str(r.network(t["subnet"], f + ".subnet")) if "subnet" in t else None
        networks = _parse_networks(r, t, f, tname, segment_names, subnet)
        tenants.append(Tenant(tname, vlan, subnet, networks))
    tenant_names = {t.name for t in tenants}

    host_nodes = r.seq(top["hosts"], "hosts")
    if not host_nodes:
        raise r.fail("hosts", top["hosts"], "needs at least one host")
    if len(host_nodes) > min(underlay.num_addresses, mgmt.num_addresses) - 20:
        raise r.fail("hosts", top["hosts"], "more hosts than the underlay/mgmt networks hold")
    hosts: list[Host] = []
    containers: list[Container] = []
    used_ips: dict[str, str] = {}
    for i, node in enumerate(host_nodes):
        f = f"hosts[{i}]"
        h = r.mapping(node, f, {"name", "docker_subnet", "tunnel_type", "containers", "join"},
                      {"name"})
        hname = _check_name(r.scalar(h["name"], f + ".name"), f + ".name",
                            h["name"].start_mark.line + 1, source)
        if any(x.name == hname for x in hosts):
            raise r.fail(f + ".name", h["name"], f"host {hname!r} is defined twice")
        dsub = r.network(h["docker_subnet"], f + ".docker_subnet") if "docker_subnet" in h \
            else _nth_24(cluster, i + 1, r.fail("hosts", top["hosts"], "more hosts than "
                                                   "cluster_subnet has /24s"))
        if not dsub.subnet_of(cluster):
            raise r.fail(f + ".docker_subnet", h.get("docker_subnet"),
                         f"{dsub} is not inside cluster_subnet {cluster}")
        if any(ipaddress.ip_network(x.docker_subnet).overlaps(dsub) for x in hosts):
            raise r.fail(f + ".docker_subnet", h.get("docker_subnet"),
                         f"{dsub} overlaps another host's docker subnet")
        override = r.choice(h["tunnel_type"], f + ".tunnel_type", TUNNEL_TYPES) \
            if "tunnel_type" in h else None
        docker_ip = f"{dsub[1]}/{cluster.prefixlen}"
        join = r.choice(h["join"], f + ".join", JOIN_MODES) if "join" in h else "file"
        if join != "file" and (not agent or transport != "tunnel"):
            raise r.fail(f + ".join", h["join"], "join: register/later needs agent: true "
                         "and transport: tunnel")
        if join == "later" and docker and "containers" in h:
            raise r.fail(f + ".containers", h["containers"], "a join: later host's dockerd "
                         "starts when it joins: its containers are the test's to run")
        host = Host(hname, i, str(underlay[10 + i]), str(mgmt[10 + i]), str(dsub),
                    docker_ip, override, join)
        hosts.append(host)
        # Docker hands out fixed-cidr addresses in order, skipping its gateway: inside a
        # /16 bip, 172.17.1.0 is an ordinary host address and comes first.
        next_ip = 0 if docker else 2
        for j, cnode in enumerate(r.seq(h["containers"], f + ".containers")
                                  if "containers" in h else []):
            cf = f"{f}.containers[{j}]"
            c = r.mapping(cnode, cf, {"name", "attach", "ip", "mac", "tenant", "bare",
                                      "network"}, {"name"})
            bare = r.boolean(c["bare"], cf + ".bare") if "bare" in c else False
            cname = _check_name(r.scalar(c["name"], cf + ".name"), cf + ".name",
                                c["name"].start_mark.line + 1, source)
            attach = r.choice(c["attach"], cf + ".attach", ATTACH_MODES) \
                if "attach" in c else "docker0"
            tenant = network = None
            if "network" in c:
                network = r.scalar(c["network"], cf + ".network")
                owner = next((t for t in tenants if network in {n.name for n in t.networks}),
                             None)
                if owner is None:
                    raise r.fail(cf + ".network", c["network"], f"unknown network "
                                 f"{network!r} (a tenant's networks: list defines it)")
                if attach not in ("br0", "weft"):
                    raise r.fail(cf + ".network", c["network"], "only containers with "
                                 "attach: br0 or weft join a network")
                if "tenant" in c and r.scalar(c["tenant"], cf + ".tenant") != owner.name:
                    raise r.fail(cf + ".tenant", c["tenant"], f"network {network} belongs "
                                 f"to tenant {owner.name}")
                tenant = owner.name
            elif "tenant" in c:
                tenant = r.scalar(c["tenant"], cf + ".tenant")
                if attach == "docker0":
                    raise r.fail(cf + ".tenant", c["tenant"],
                                 "only containers with attach: br0 or weft join a tenant "
                                 "(docker0 containers belong to the default tenant)")
                if tenant not in tenant_names:
                    raise r.fail(cf + ".tenant", c["tenant"], f"unknown tenant {tenant!r}")
            elif attach != "docker0":
                raise r.fail(cf, cnode, f"a container with attach: {attach} needs a tenant")
            if attach == "weft":
                _check_weft_container(r, c, cf, cnode, docker,
                                      next(t for t in tenants if t.name == tenant),
                                      network or str(tenant))
            elif network is not None and "ip" in c:
                net = ipaddress.IPv4Network(next(t for t in tenants if t.name == tenant)
                                            .segment(network)[0])
                if r.interface(c["ip"], cf + ".ip").ip not in net:
                    raise r.fail(cf + ".ip", c["ip"], f"must be in network {network}'s "
                                 f"subnet {net}")
            if "ip" in c and attach == "docker0" and docker and not bare:
                raise r.fail(cf + ".ip", c["ip"], "with docker: true, Docker assigns docker0 "
                             "containers' addresses (in order, from the host's docker_subnet); "
                             "leave ip out, or make it a bare namespace (bare: true)")
            if bare and attach == "docker0" and docker and "ip" not in c:
                raise r.fail(cf, cnode, "a bare docker0 container in a docker lab needs an ip "
                             "(outside the addresses Docker hands out first)")
            if "ip" in c:
                ip = r.interface(c["ip"], cf + ".ip")
            elif attach == "docker0":
                ip = ipaddress.IPv4Interface(f"{dsub[next_ip]}/{cluster.prefixlen}")
                next_ip += 2 if next_ip == 0 else 1
            else:
                raise r.fail(cf, cnode, f"a container with attach: {attach} needs an ip")
            key = f"{tenant or 'default'}/{ip.ip}"
            if key in used_ips:
                raise r.fail(cf + ".ip", c.get("ip", cnode),
                             f"{ip.ip} is already used by {used_ips[key]} in the same tenant")
            used_ips[key] = cname
            mac = r.mac(c["mac"], cf + ".mac") if "mac" in c else None
            containers.append(Container(cname, hname, attach, str(ip), mac, tenant, bare,
                                        network))

    wants_plugin = any(c.attach == "weft" for c in containers)
    plugin = r.boolean(top["plugin"], "plugin") if "plugin" in top else wants_plugin
    if wants_plugin and not plugin:
        raise r.fail("plugin", top["plugin"], "attach: weft containers need plugin: true")
    if plugin and not docker:
        raise r.fail("plugin", top["plugin"], "plugin: true needs docker: true")
    nodes = [h.name for h in hosts] + [c.name for c in containers]
    switches: list[ExternalSwitch] = []
    for i, node in enumerate(r.seq(top["switches"], "switches") if "switches" in top else []):
        f = f"switches[{i}]"
        s = r.mapping(node, f, {"name", "host", "port", "vlans", "native"},
                      {"name", "host", "vlans"})
        sname = _check_name(r.scalar(s["name"], f + ".name"), f + ".name",
                            s["name"].start_mark.line + 1, source)
        nodes.append(sname)
        shost = r.scalar(s["host"], f + ".host")
        if shost not in {h.name for h in hosts}:
            raise r.fail(f + ".host", s["host"], f"unknown host {shost!r}")
        port = _check_name(r.scalar(s["port"], f + ".port"), f + ".port",
                           s["port"].start_mark.line + 1, source) if "port" in s else f"t-{sname}"
        vlans: list[SwitchVlan] = []
        for j, vnode in enumerate(r.seq(s["vlans"], f + ".vlans")):
            vf = f"{f}.vlans[{j}]"
            v = r.mapping(vnode, vf, {"vlan", "ip"}, {"ip"})
            vid = r.vlan(v["vlan"], vf + ".vlan") if "vlan" in v else None
            if any(x.vlan == vid for x in vlans):
                raise r.fail(vf + ".vlan", v.get("vlan", vnode), "listed twice on this switch")
            vlans.append(SwitchVlan(vid, str(r.interface(v["ip"], vf + ".ip"))))
        native = r.scalar(s["native"], f + ".native") if "native" in s else None
        if native is not None and native not in tenant_names:
            raise r.fail(f + ".native", s["native"], f"unknown tenant {native!r}")
        switches.append(ExternalSwitch(sname, shost, port, tuple(vlans), native))

    lab_nets = {"underlay": underlay, "mgmt": mgmt, "cluster": cluster}
    external = _parse_external(r, top, lab_nets)
    nodes += [e.name for e in external]
    dupes = {n for n in nodes if nodes.count(n) > 1} | (set(RESERVED_NODES) & set(nodes))
    if dupes:
        raise TopologyError(source, "hosts", None,
                            f"node names must be unique across hosts, containers, switches "
                            f"and external nodes ({', '.join(RESERVED_NODES)} are reserved): "
                            f"{', '.join(sorted(dupes))}")
    return Topology(name, tunnel, str(underlay), str(mgmt), str(cluster), controller, agent,
                    port_type, transport, tuple(hosts), tuple(containers), tuple(tenants),
                    tuple(switches), docker, plugin, n_ctl, n_etcd, external)


def _count(r: _Reader, top: dict, key: str, default: int, lo: int, hi: int) -> int:
    if key not in top:
        return default
    value = r.scalar(top[key], key)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise r.fail(key, top[key], f"{yamlfile.shown(value)} is not a number from {lo} to {hi}")
    return value


def _nth_24(net: ipaddress.IPv4Network, n: int, error: TopologyError) -> ipaddress.IPv4Network:
    """The n-th /24 of ``net`` without listing them all (a /8 has 65,536)."""
    if n >= 1 << (24 - net.prefixlen):
        raise error
    return ipaddress.IPv4Network((int(net.network_address) + (n << 8), 24))


def load(path: str | Path) -> Topology:
    """Read and validate a topology file."""
    p = Path(path)
    try:
        text = yamlfile.read_text(p)
    except yamlfile.YamlFileError as exc:
        raise TopologyError(str(p), exc.field, exc.line, exc.message) from None
    except OSError as exc:
        raise TopologyError(str(p), "<file>", None, exc.strerror or str(exc)) from None
    return parse(text, str(p))
