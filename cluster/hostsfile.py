"""The hosts.yaml model shared by every agent and the controller.

Pure and I/O-free (only `load` reads the file): the whole file is validated into frozen
objects before anything touches a switch, so a bad file changes nothing, and every error
names the field and the line. Both sides derive port names and datapath ids from here so
they agree without talking to each other.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass, field as dc_field
from itertools import combinations
from typing import Iterable, NoReturn
from urllib.parse import urlsplit

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from cluster import yamlfile

TUNNEL_TYPES = ("vxlan", "gre")
DATAPATH_TYPES = ("system", "netdev")
# How a netdev (userspace) datapath reads Linux devices: "auto" tries AF_XDP and falls
# back to AF_PACKET per port; "afpacket" is OVS's plain type "".
PORT_TYPES = ("auto", "afxdp-nonpmd", "afxdp", "afpacket")
BRIDGE = "br0"
DOCKER_LINK_PORT = "weft-d0"    # br0 side of the docker0 <-> br0 veth pair
DOCKER_LINK_PEER = "weft-d0p"   # docker0 side
DEFAULT_MTU = 1500
MTU_MIN, MTU_MAX = 1280, 9216
VXLAN_OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
GRE_OVERHEAD = 42    # outer IPv4 20 + GRE 4 + key 4 (key=flow carries the VNI) + inner Ethernet 14
IFNAME_MAX = 15      # Linux IFNAMSIZ - 1
DPID_PREFIX = 0x5746  # "WF": marks a datapath id as one weft derived from a host name

HOST_NAME_PATTERN = r"[a-z0-9][a-z0-9-]{0,62}"   # becomes part of OVS port names
_NAME_RE = re.compile(HOST_NAME_PATTERN)
_TARGET_RE = re.compile(r"(tcp|ssl):(\[[0-9A-Fa-f:.]+\]|[0-9.]+):([0-9]{1,5})")
_TAG = "tag:yaml.org,2002:"
_COLLISION = " (a hash collision: rename one of them)"
_TOP_KEYS = ("controller", "tunnel_type", "datapath_type", "port_type", "mtu", "transport",
             "uplink", "queues", "cluster_subnet", "membership", "encryption", "ipsec", "hosts")
# "ipsec": every tunnel between two hosts is IPsec (ESP, transport mode), set up by OVS's
# ovs-monitor-ipsec with strongSwan on the kernel datapath (docs/security.md).
ENCRYPTIONS = ("none", "ipsec")
_IPSEC_KEYS = ("psk_file", "pki_dir")
_NETDEV_CLEAR = ("the userspace datapath (netdev) builds tunnel packets itself and sends "
                 "them past the kernel's IPsec (XFRM): encryption: ipsec would send them "
                 "in clear; use datapath_type: system")
# "file": hosts.yaml lists every host.  "register": the file's hosts are fixed members
# and more hosts may join by registering with the controller (a lease, renewed by their
# agent); agents learn those peers from the controller.  The file stays the source of
# truth either way: a name, address or subnet it lists cannot be taken by a registration.
MEMBERSHIPS = ("file", "register")
REGISTER_KEYS = ("name", "underlay_ip", "docker_subnet", "tunnel_type", "datapath_type")
# Docker's own default network: the cluster subnet when the file names none, so files
# written before cluster_subnet existed keep working when their docker subnets fit in it.
DEFAULT_CLUSTER_SUBNET = "172.17.0.0/16"
CLUSTER_PREFIX_MIN, CLUSTER_PREFIX_MAX = 8, 28
_HOST_KEYS = ("name", "underlay_ip", "docker_subnet", "tunnel_type", "datapath_type", "uplink",
              "agent_api")
TRANSPORTS = ("tunnel", "vlan")
_IFNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")


class HostsFileError(ValueError):
    """A hosts.yaml problem, located by dotted field path and 1-based line for the user."""

    def __init__(self, field: str, message: str, line: int | None = None,
                 source: str = "<string>") -> None:
        super().__init__(field, message, line, source)
        self.field, self.message, self.line, self.source = field, message, line, source

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return yamlfile.truncate(f"{where}: {self.field}: {self.message}")


@dataclass(frozen=True)
class Host:
    """One host, with cluster defaults already applied so callers never re-derive them."""
    name: str
    underlay_ip: str
    docker_subnet: str | None
    tunnel_type: str
    datapath_type: str
    uplink: str | None = None       # transport vlan: the NIC on the shared L2 network
    # The agent's own HTTP listener (``http://IP:PORT``, ovs_agent.httpserver): where the
    # controller asks this host's switch to trace a packet (docs/observability.md); None:
    # the agent listens nowhere and traces stop at this host.
    agent_api: str | None = None


@dataclass(frozen=True)
class QueueClass:
    """One egress queue (OpenFlow set_queue id) with its guaranteed and maximum rate."""
    id: int
    min_kbps: int
    max_kbps: int


@dataclass(frozen=True)
class Queues:
    """linux-htb queues on each host's egress NIC (underlay NIC or uplink)."""
    max_kbps: int
    classes: tuple[QueueClass, ...]


@dataclass(frozen=True)
class Ipsec:
    """How hosts authenticate each other's IPsec tunnels: exactly one is set.
    `psk_file`: a file holding one pre-shared key, the same on every host (0600);
    `pki_dir`: weft-pki's directory (NAME-cert.pem, NAME-privkey.pem, ca-cert.pem)."""
    psk_file: str | None = None
    pki_dir: str | None = None


@dataclass(frozen=True)
class Cluster:
    """The validated file. `source` only labels errors raised later (e.g. by find_self)."""
    controllers: tuple[str, ...]
    api: str | None
    tunnel_type: str
    datapath_type: str
    mtu: int
    hosts: tuple[Host, ...]
    source: str = dc_field(default="<string>", compare=False)
    port_type: str = "auto"          # netdev datapath only, see PORT_TYPES
    # "tunnel": tenants cross hosts in VXLAN/GRE; "vlan": as 802.1Q VLANs on each
    # host's uplink (hosts share an L2 network; Neutron's vlan networks)
    transport: str = "tunnel"
    queues: Queues | None = None
    # The docker0 network every host shares (the default tenant): each host's docker0
    # gets its gateway address with this prefix, so containers reach other hosts'
    # docker_subnets on-link, through br0, without a router.
    cluster_subnet: str = DEFAULT_CLUSTER_SUBNET
    # Every REST API URL (several controllers); `api` is the first.  Agents report to
    # any that answers, starting with the last one that did.
    apis: tuple[str, ...] = ()
    membership: str = "file"         # see MEMBERSHIPS
    encryption: str = "none"         # see ENCRYPTIONS
    ipsec: Ipsec | None = None       # how tunnels authenticate (needed with "ipsec")

    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def peers(self, name: str) -> tuple[Host, ...]:
        """Every other host, in file order (the hosts `name` needs a tunnel to)."""
        self.host(name)
        return tuple(h for h in self.hosts if h.name != name)

    def link_type(self, a: str, b: str) -> str:
        """Tunnel type between two hosts: gre if either end says gre, else vxlan.

        Symmetric on purpose: each end builds its own port, and a vxlan port never talks
        to a gre port, so both ends must reach the same answer without coordinating.
        gre wins because a host asks for it when it cannot do vxlan (e.g. UDP filtered).
        """
        types = {self.host(a).tunnel_type, self.host(b).tunnel_type}
        return "gre" if "gre" in types else "vxlan"

    def find_self(self, local_ips: Iterable[str], hostname: str) -> Host:
        """This machine's entry: by underlay_ip among `local_ips`, else by hostname.

        An address match wins because hostnames are often generic ("debian", "localhost").
        Several address matches are refused rather than guessed: pass --host instead.
        """
        ips = set()
        for raw in local_ips:
            try:
                ips.add(str(ipaddress.ip_interface(raw).ip))  # "10.0.0.1/24" is fine too
            except ValueError:
                continue
        by_ip = [h for h in self.hosts if h.underlay_ip in ips]
        if len(by_ip) > 1:
            names = ", ".join(h.name for h in by_ip)
            raise HostsFileError("hosts", f"several hosts have a local underlay_ip ({names});"
                                 " choose one with --host NAME", None, self.source)
        if by_ip:
            return by_ip[0]
        wanted = {hostname.lower(), hostname.lower().split(".")[0]}  # FQDN -> short name
        for h in self.hosts:
            if h.name in wanted:
                return h
        raise HostsFileError(
            "hosts", f"no host is this machine: no underlay_ip is a local address "
            f"({', '.join(sorted(ips)) or 'none'}) and no name matches hostname "
            f"{hostname!r}; pass --host NAME", None, self.source)


def tunnel_port_name(link_type: str, peer: str) -> str:
    """Name of the br0 port tunnelling to `peer`, e.g. 'vx-host2'.

    The controller computes the same name to find the port (and its ofport) for a peer,
    so it must be a pure function of its inputs: hashlib, never hash(). It fits Linux's
    15 characters: long peer names are cut and get 4 hex digits of sha1(peer); parse()
    rejects a file where two host names would still collide.
    """
    prefixes = {"vxlan": "vx-", "gre": "gr-"}
    if link_type not in prefixes:
        raise ValueError(f"unknown link type {link_type!r}")
    if not _NAME_RE.fullmatch(peer):
        raise ValueError(f"{peer!r} is not a valid host name")
    return prefixes[link_type] + _port_suffix(peer)


def _port_suffix(peer: str) -> str:
    room = IFNAME_MAX - 3
    if len(peer) <= room:
        return peer
    return f"{peer[:room - 5]}-{hashlib.sha1(peer.encode()).hexdigest()[:4]}"


def tunnel_mtu(cluster: Cluster) -> int:
    """MTU for containers and the docker0 link, leaving room for the biggest encapsulation.

    With a single host there are no links yet; its own tunnel type is used so the MTU does
    not shrink the day a second host of the same type joins.
    """
    if cluster.transport == "vlan":
        return cluster.mtu              # no encapsulation: tenants ride the uplink as VLANs
    types = {cluster.link_type(a.name, b.name) for a, b in combinations(cluster.hosts, 2)}
    types = types or {h.tunnel_type for h in cluster.hosts}
    return cluster.mtu - (VXLAN_OVERHEAD if "vxlan" in types else GRE_OVERHEAD)


def datapath_id(host: Host) -> int:
    """Stable 64-bit datapath id, so the controller knows which host a switch is."""
    return _dpid(host.name)


def _dpid(name: str) -> int:
    return DPID_PREFIX << 48 | int.from_bytes(hashlib.sha1(name.encode()).digest()[-6:], "big")


def dpid_str(dpid: int) -> str:
    """16 hex digits, the form OVS wants in other_config:datapath-id."""
    return f"{dpid:016x}"


def host_for_dpid(cluster: Cluster, dpid: int) -> Host | None:
    return next((h for h in cluster.hosts if datapath_id(h) == dpid), None)


def load(path: str | os.PathLike) -> Cluster:
    """Read and validate hosts.yaml; every problem (I/O included) is a HostsFileError."""
    source = os.fspath(path)
    try:
        text = yamlfile.read_text(path)
    except yamlfile.YamlFileError as e:
        raise HostsFileError(e.field, e.message, e.line, source) from None
    except OSError as e:
        raise HostsFileError("<file>", f"cannot read: {e.strerror or e}", None, source) from None
    return parse(text, source)


def parse(text: str, source: str = "<string>") -> Cluster:
    """Validate the whole document; raise HostsFileError for the first problem found."""
    try:
        root = yamlfile.compose(text)
    except yamlfile.YamlFileError as e:
        raise HostsFileError(e.field, e.message, e.line, source) from None
    try:
        return _cluster(root, source)
    except _Invalid as e:
        raise HostsFileError(e.field, e.message, e.line, source) from None


class _Invalid(Exception):
    def __init__(self, field: str, node: Node | None, message: str) -> None:
        self.field, self.message = field, message
        self.line = _line(node.start_mark) if node is not None else None


def _line(mark: yaml.Mark | None) -> int | None:
    return None if mark is None else mark.line + 1


def _fail(field: str, node: Node | None, message: str) -> NoReturn:
    raise _Invalid(field, node, message)


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return node.tag.removeprefix(_TAG)


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _TAG + "null"


def _mapping(node: Node | None, field: str, allowed: tuple[str, ...],
             required: tuple[str, ...]) -> dict[str, Node]:
    """Keys to value nodes; unknown and duplicate keys are errors so typos cannot pass."""
    if node is None:
        _fail(field or "<root>", None, "the file is empty")
    if not isinstance(node, MappingNode):
        _fail(field or "<root>", node, f"must be a mapping, got {_kind(node)}")
    out: dict[str, Node] = {}
    for key_node, value in node.value:
        key = key_node.value if isinstance(key_node, ScalarNode) else None
        if not isinstance(key, str) or key_node.tag != _TAG + "str":
            _fail(field or "<root>", key_node, f"keys must be strings, got {_kind(key_node)}")
        path = f"{field}.{key}" if field else key
        if key in out:
            _fail(path, key_node, f"duplicate key {yamlfile.shown(key)}")
        if key not in allowed:
            _fail(path, key_node, f"unknown key {yamlfile.shown(key)} (allowed: {', '.join(allowed)})")
        if not (key not in required and _is_null(value)):  # optional `key: null` = unset
            out[key] = value
    for key in required:
        if key not in out:
            _fail(f"{field}.{key}" if field else key, node, "is required")
    return out


def _text(node: Node, field: str) -> str:
    """A scalar's text as written: `name: 123` or `name: no` is a name, not a number."""
    if not isinstance(node, ScalarNode) or _is_null(node):
        _fail(field, node, f"must be a string, got {_kind(node)}")
    return node.value


def _choice(node: Node | None, field: str, allowed: tuple[str, ...], default: str) -> str:
    if node is None:
        return default
    value = _text(node, field)
    if value not in allowed:
        what = field.rsplit(".", 1)[-1].replace("_", " ")
        _fail(field, node, f"unknown {what} {yamlfile.shown(value)} (allowed: {', '.join(allowed)})")
    return value


def _target(node: Node, field: str) -> str:
    value = _text(node, field)
    m = _TARGET_RE.fullmatch(value)
    ok = m is not None and 0 < int(m[3]) < 65536
    if m is not None and ok:
        try:
            ipaddress.ip_address(m[2].strip("[]"))
        except ValueError:
            ok = False
    if not ok:
        _fail(field, node, f"{yamlfile.shown(value)} is not an OpenFlow controller target "
                           "(tcp:IP:PORT or ssl:IP:PORT)")
    return value


def _api(node: Node, field: str) -> str:
    value = _text(node, field)
    try:
        url = urlsplit(value)
        ok = url.scheme in ("http", "https") and bool(url.hostname) and url.port != 0
    except ValueError:
        ok = False
    if not ok:
        _fail(field, node, f"{yamlfile.shown(value)} is not an http(s) URL like http://10.99.0.1:8080")
    return value.rstrip("/")


def _apis(node: Node, field: str) -> tuple[str, ...]:
    """One URL, or a list of them (one per controller instance)."""
    if not isinstance(node, SequenceNode):
        return (_api(node, field),)
    if not node.value:
        _fail(field, node, "must list at least one URL")
    return tuple(_api(n, f"{field}[{i}]") for i, n in enumerate(node.value))


def _ipv4(node: Node, field: str) -> str:
    value = _text(node, field)
    try:
        ip = ipaddress.IPv4Address(value)
    except ValueError:
        _fail(field, node, f"{yamlfile.shown(value)} is not an IPv4 address")
    for bad, what in ((ip.is_loopback, "loopback"), (ip.is_multicast, "multicast"),
                      (ip.is_unspecified, "unspecified"), (ip.is_reserved, "reserved")):
        if bad:
            _fail(field, node, f"{yamlfile.shown(value)} is a {what} address, not a host's underlay IP")
    return str(ip)


def _subnet(node: Node, field: str) -> ipaddress.IPv4Network:
    value = _text(node, field)
    try:
        loose = ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        _fail(field, node, f"{yamlfile.shown(value)} is not an IPv4 CIDR like 172.18.1.0/24")
    if "/" not in value:
        _fail(field, node, f"{yamlfile.shown(value)} has no prefix length (like 172.18.1.0/24)")
    if loose.network_address != ipaddress.IPv4Address(value.split("/")[0]):
        _fail(field, node, f"{yamlfile.shown(value)} has host bits set; did you mean {loose}?")
    return loose


def _cluster(root: Node | None, source: str) -> Cluster:
    top = _mapping(root, "", _TOP_KEYS, ("controller", "hosts"))
    ctl = _mapping(top["controller"], "controller", ("openflow", "api"), ("openflow",))
    controllers = _controllers(ctl["openflow"], "controller.openflow")
    apis = _apis(ctl["api"], "controller.api") if "api" in ctl else ()
    api = apis[0] if apis else None
    tunnel = _choice(top.get("tunnel_type"), "tunnel_type", TUNNEL_TYPES, "vxlan")
    datapath = _choice(top.get("datapath_type"), "datapath_type", DATAPATH_TYPES, "system")
    mtu = _int(top["mtu"], "mtu", MTU_MIN, MTU_MAX) if "mtu" in top else DEFAULT_MTU
    port_type = _choice(top.get("port_type"), "port_type", PORT_TYPES, "auto")
    transport = _choice(top.get("transport"), "transport", TRANSPORTS, "tunnel")
    uplink = _ifname(top["uplink"], "uplink") if top.get("uplink") is not None else None
    membership = _choice(top.get("membership"), "membership", MEMBERSHIPS, "file")
    encryption = _choice(top.get("encryption"), "encryption", ENCRYPTIONS, "none")
    ipsec = _ipsec(top["ipsec"], "ipsec") if "ipsec" in top else None
    if encryption == "ipsec":
        if ipsec is None:
            _fail("ipsec", top["encryption"], "encryption: ipsec needs `ipsec:` with psk_file "
                  "(a pre-shared key file) or pki_dir (weft-pki's certificates)")
        if transport != "tunnel":
            _fail("encryption", top["encryption"], "encryption: ipsec encrypts tunnels: it "
                  "needs transport: tunnel")
        if datapath == "netdev":
            _fail("datapath_type", top["datapath_type"], _NETDEV_CLEAR)
    hosts = _hosts(top["hosts"], "hosts", tunnel, datapath, uplink,
                   allow_empty=membership == "register", encrypted=encryption == "ipsec")
    if membership == "register" and transport != "tunnel":
        _fail("membership", top["membership"], "registration needs transport: tunnel "
              "(a VLAN transport host needs its uplink in the file)")
    if transport == "vlan":
        for i, h in enumerate(hosts):
            if h.uplink is None:
                _fail(f"hosts[{i}].uplink", top["hosts"].value[i],
                      "transport vlan needs an uplink interface (here or at the top level)")
    queues = _queues(top["queues"], "queues") if top.get("queues") is not None else None
    cluster_subnet = _cluster_subnet(top.get("cluster_subnet"), top["hosts"], hosts)
    return Cluster(controllers, api, tunnel, datapath, mtu, hosts, source, port_type, transport,
                   queues, cluster_subnet, apis, membership=membership, encryption=encryption,
                   ipsec=ipsec)


def _ipsec(node: Node, field: str) -> Ipsec:
    """`ipsec: {psk_file: PATH}` or `ipsec: {pki_dir: PATH}`, absolute paths.  Allowed with
    `encryption: none` too, so turning encryption on or off is a one-word edit."""
    m = _mapping(node, field, _IPSEC_KEYS, ())
    if len(m) != 1:
        _fail(field, node, "set exactly one of psk_file (a pre-shared key file) and pki_dir "
              "(weft-pki's certificates)")
    (key, value), = m.items()
    path = _text(value, f"{field}.{key}")
    if not path.startswith("/"):
        _fail(f"{field}.{key}", value, f"{yamlfile.shown(path)} is not an absolute path")
    return Ipsec(**{key: path})


def _cluster_subnet(node: Node | None, hosts_node: Node, hosts: tuple[Host, ...]) -> str:
    """The shared docker0 network; every host's docker_subnet must lie inside it."""
    if node is None:
        net = ipaddress.IPv4Network(DEFAULT_CLUSTER_SUBNET)
    else:
        net = _subnet(node, "cluster_subnet")
        if not CLUSTER_PREFIX_MIN <= net.prefixlen <= CLUSTER_PREFIX_MAX:
            _fail("cluster_subnet", node, f"prefix /{net.prefixlen} is outside "
                  f"/{CLUSTER_PREFIX_MIN}../{CLUSTER_PREFIX_MAX}")
    for i, h in enumerate(hosts):
        if h.docker_subnet and not ipaddress.IPv4Network(h.docker_subnet).subnet_of(net):
            hint = "" if node is not None else \
                " (the default; set cluster_subnet to the network all docker subnets share)"
            _fail(f"hosts[{i}].docker_subnet", hosts_node.value[i],
                  f"{h.docker_subnet} is not inside cluster_subnet {net}{hint}")
        if ipaddress.IPv4Address(h.underlay_ip) in net:
            _fail(f"hosts[{i}].underlay_ip", hosts_node.value[i],
                  f"{h.underlay_ip} is inside cluster_subnet {net}: the underlay must be "
                  "a different network")
    return str(net)


def _int(node: Node, field: str, lo: int, hi: int) -> int:
    if not (isinstance(node, ScalarNode) and node.tag == _TAG + "int"):
        _fail(field, node, f"must be an integer, got {_kind(node)}")
    value = SafeConstructor().construct_yaml_int(node)
    if not lo <= value <= hi:
        _fail(field, node, f"{value} is outside {lo}..{hi}")
    return value


def _queues(node: Node, field: str) -> Queues:
    m = _mapping(node, field, ("max_kbps", "classes"), ("max_kbps", "classes"))
    top = _int(m["max_kbps"], f"{field}.max_kbps", 1, 100_000_000)
    seq = m["classes"]
    if not isinstance(seq, SequenceNode) or not seq.value:
        _fail(f"{field}.classes", seq, "must be a non-empty list")
    classes: list[QueueClass] = []
    for i, c in enumerate(seq.value):
        f = f"{field}.classes[{i}]"
        cm = _mapping(c, f, ("id", "min_kbps", "max_kbps"), ("id",))
        qid = _int(cm["id"], f"{f}.id", 0, 7)
        if any(q.id == qid for q in classes):
            _fail(f"{f}.id", cm["id"], f"queue {qid} is defined twice")
        lo = _int(cm["min_kbps"], f"{f}.min_kbps", 0, top) if "min_kbps" in cm else 0
        hi = _int(cm["max_kbps"], f"{f}.max_kbps", 1, top) if "max_kbps" in cm else top
        if lo > hi:
            _fail(f"{f}.min_kbps", cm["min_kbps"], f"min_kbps {lo} is above max_kbps {hi}")
        classes.append(QueueClass(qid, lo, hi))
    if sum(q.min_kbps for q in classes) > top:
        _fail(f"{field}.classes", seq, "the guaranteed rates add up to more than max_kbps")
    return Queues(top, tuple(classes))


def _ifname(node: Node, field: str) -> str:
    name = _text(node, field)
    if not _IFNAME_RE.fullmatch(name):
        _fail(field, node, f"{yamlfile.shown(name)} is not a Linux interface name (at most 15 characters)")
    return name


def _controllers(node: Node, field: str) -> tuple[str, ...]:
    if not isinstance(node, SequenceNode):
        return (_target(node, field),)
    if not node.value:
        _fail(field, node, "must list at least one target")
    return tuple(_target(n, f"{field}[{i}]") for i, n in enumerate(node.value))


def _hosts(seq: Node, field: str, tunnel: str, datapath: str,
           uplink: str | None = None, allow_empty: bool = False,
           encrypted: bool = False) -> tuple[Host, ...]:
    if not isinstance(seq, SequenceNode):
        _fail(field, seq, f"must be a list of hosts, got {_kind(seq)}")
    if not seq.value and not allow_empty:
        _fail(field, seq, "must list at least one host (or set membership: register)")
    hosts: list[Host] = []
    seen: dict[tuple[str, str], str] = {}
    subnets: list[tuple[ipaddress.IPv4Network, str]] = []
    for i, node in enumerate(seq.value):
        f = f"{field}[{i}]"
        m = _mapping(node, f, _HOST_KEYS, ("name", "underlay_ip"))
        name = _text(m["name"], f"{f}.name")
        if not _NAME_RE.fullmatch(name):
            _fail(f"{f}.name", m["name"], f"{yamlfile.shown(name)} is not a valid host name: lowercase "
                  "letters, digits and '-', starting with a letter or digit, at most 63 "
                  "characters (it becomes part of OVS port names)")
        ip = _ipv4(m["underlay_ip"], f"{f}.underlay_ip")
        for what, key, sub, hint in (
                ("host name", name, "name", ""), ("underlay_ip", ip, "underlay_ip", ""),
                ("tunnel port name suffix", _port_suffix(name), "name", _COLLISION),
                ("datapath id", dpid_str(_dpid(name)), "name", _COLLISION)):
            if (what, key) in seen:
                _fail(f"{f}.{sub}", m[sub],
                      f"duplicate {what} {yamlfile.shown(key)}, also {seen[what, key]}{hint}")
            seen[what, key] = f"{f} {yamlfile.shown(name)}"
        subnet = None
        if "docker_subnet" in m:
            net = _subnet(m["docker_subnet"], f"{f}.docker_subnet")
            for other, owner in subnets:
                if net.overlaps(other):
                    _fail(f"{f}.docker_subnet", m["docker_subnet"],
                          f"{net} overlaps {other} of host {yamlfile.shown(owner)}")
            subnets.append((net, name))
            subnet = str(net)
        hosts.append(Host(
            name, ip, subnet,
            _choice(m.get("tunnel_type"), f"{f}.tunnel_type", TUNNEL_TYPES, tunnel),
            _choice(m.get("datapath_type"), f"{f}.datapath_type", DATAPATH_TYPES, datapath),
            _ifname(m["uplink"], f"{f}.uplink") if m.get("uplink") is not None else uplink,
            _agent_api(m["agent_api"], f"{f}.agent_api") if "agent_api" in m else None))
        if encrypted and hosts[-1].datapath_type == "netdev":
            _fail(f"{f}.datapath_type", m.get("datapath_type", node), _NETDEV_CLEAR)
    return tuple(hosts)


def _agent_api(node: Node, field: str) -> str:
    """An agent's listener: plain http with a literal IPv4 address and a port (the agent
    binds exactly that address, so a name would have to resolve the same everywhere)."""
    url = _api(node, field)
    parts = urlsplit(url)
    try:
        ipaddress.IPv4Address(parts.hostname or "")
        ok = parts.scheme == "http" and parts.port is not None and parts.path == ""
    except ValueError:
        ok = False
    if not ok:
        _fail(field, node, f"{yamlfile.shown(url)} is not an agent listener URL like "
                           "http://10.99.0.11:9180 (http, an IPv4 address, a port, no path)")
    return url


def with_hosts(cluster: Cluster, entries: Iterable[dict[str, object]],
               label: str = "registration") -> Cluster:
    """`cluster` plus hosts from elsewhere (a registration, the controller's member list),
    checked by exactly the rules a host in the file obeys (name, address, subnet,
    uniqueness, port-name and datapath-id collisions, cluster_subnet).

    Raises HostsFileError whose field names the entry (``registration 'h3'.underlay_ip``);
    `cluster` itself is never changed.  Only keys of REGISTER_KEYS are accepted.
    """
    known = [{k: v for k, v in (("name", h.name), ("underlay_ip", h.underlay_ip),
                                ("docker_subnet", h.docker_subnet),
                                ("tunnel_type", h.tunnel_type),
                                ("datapath_type", h.datapath_type), ("uplink", h.uplink),
                                ("agent_api", h.agent_api))
              if v is not None} for h in cluster.hosts]
    extra = [dict(e) for e in entries]
    labels = [f"{label} {yamlfile.shown(e.get('name', '?'))}" for e in extra]
    for e, what in zip(extra, labels):
        unknown = sorted(set(e) - set(REGISTER_KEYS))
        if unknown:
            raise HostsFileError(unknown[0], f"unknown key {yamlfile.shown(unknown[0])} "
                                 f"(allowed: {', '.join(REGISTER_KEYS)})", None, what)
    if not extra:
        return cluster
    docs = known + [{k: v for k, v in e.items() if v is not None} for e in extra]

    def who(m: re.Match) -> str:
        i = int(m[1])
        return labels[i - len(known)] if i >= len(known) else \
            f"host {yamlfile.shown(docs[i]['name'])}"
    try:
        seq = yaml.compose(yaml.safe_dump(docs), Loader=yaml.SafeLoader)
        hosts = _hosts(seq, "hosts", cluster.tunnel_type, cluster.datapath_type,
                       allow_empty=True, encrypted=cluster.encryption == "ipsec")
        _cluster_subnet(ScalarNode(_TAG + "str", cluster.cluster_subnet), seq, hosts)
    except _Invalid as e:
        m = re.match(r"hosts\[(\d+)\]\.?(.*)", e.field)
        source = who(m) if m else label
        message = re.sub(r"hosts\[(\d+)\] ('[^']*'|\S+)", who, e.message)
        raise HostsFileError(m[2] if m and m[2] else e.field, message, None, source) from None
    from dataclasses import replace
    return replace(cluster, hosts=hosts)
