"""The `weft` Docker network plugin, pure: libnetwork's remote driver and IPAM protocols.

`Plugin.handle(path, request)` maps the JSON body of each call Docker makes
("/NetworkDriver.Join", "/IpamDriver.RequestAddress", ...) to the JSON body of
the answer.  Everything with side effects goes through the injected
`Dataplane`: persisting the state (OVSDB external_ids on br0 in production,
so it survives the plugin's restart and can never diverge from a file),
plugging veths into br0, asking the controller, holding published ports.

Addressing: every Docker network gets its own pool, keyed by an opaque pool
id, so two tenants' networks may share 10.10.0.0/24 on one daemon.  Addresses
are unique cluster-wide (cluster/ipam.py, docs/docker.md "Addresses"): the host
hands them out of blocks of the weft network's subnet it has claimed in the
controller's store (a ``Space`` per weft network: its blocks, address claims
and handed-out addresses), claims another block when they are full, keeps
allocating from them while no controller answers, gives empty blocks back
(all but one), and checks `docker run --ip` against every host's claims.
Pools made before this (``Pool.first``/``last``: a slice of the subnet per
host) keep their slice.  The gateway address Docker insists on is reserved; it
must be the weft network's gateway (br0 answers for it on every host), which
Join gives the container as its default route.

Port security: every endpoint is plugged with the address IPAM gave it, and the
controller binds the port with its MAC and that address, so ARP and IP spoofing
fail by default.  ``docker network create -o port_security=off`` plugs the
network's endpoints without (the controller then checks nothing on them).

Published ports (``docker run -p HOSTPORT:PORT``, ProgramExternalConnectivity):
all or nothing, checked against this host's other published ports and against
the host's sockets (a bound, never listening socket holds each one), stored as
``weft-dpub-<endpoint>`` and DNATed by ``table ip weft-nat`` (docs/routing.md 4).
"""
from __future__ import annotations

import errno
import hashlib
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import cluster.ipam as ipam
from ovs_agent.nat import Published

LOG = logging.getLogger("weft-plugin")

GENERIC = "com.docker.network.generic"          # where `docker network create -o` lands
GATEWAY_REQUEST = "com.docker.network.gateway"   # RequestAddress Options["RequestAddressType"]
ADDRESS_SPACE = "weft"
TENANT_OPT = "tenant"
NETWORK_OPT = "network"                         # -o network=NAME: a network of a tenant
PORT_SECURITY_OPT = "port_security"             # -o port_security=on|off (default on)
PORTMAP = "com.docker.network.portmap"          # ProgramExternalConnectivity Options
# br0 external_ids keys holding the plugin's state, one record per key.
NET_KEY, POOL_KEY, EP_KEY = "weft-dnet-", "weft-dpool-", "weft-dep-"
SPACE_KEY = "weft-dspace-"                      # + weft network: its blocks on this host
RECLAIM_AFTER = 60.0    # seconds an address without a container waits before reuse
# + endpoint id, proto, [host ip,] host port: one ovs_agent.nat.Published as a JSON object
PUB_KEY = "weft-dpub-"
PROTOS = {6: "tcp", 17: "udp"}
PORT_PREFIX, PEER_PREFIX = "wd", "wp"           # host end on br0, container end before the move

Json = dict[str, Any]


class PluginError(Exception):
    """A request Docker made that weft refuses; the message reaches the user."""


class IpamRefused(Exception):
    """The controller's IPAM refused a claim (a 4xx); ``args[0]``: its message."""


@dataclass
class Pool:
    id: str
    subnet: str
    first: str = ""             # a pool from before cluster IPAM: its slice (inclusive)
    last: str = ""
    gateway: str | None = None
    addrs: list[str] = field(default_factory=list)      # a slice pool's handed-out ones
    within: str = ""            # --ip-range: blocks only inside it
    network: str = ""           # the weft network (Space) its addresses come from
    created: float = 0.0
    v6: bool = False            # an IPv6 pool: random interface ids, ``addrs`` handed out

    @property
    def sliced(self) -> bool:
        return bool(self.first)


@dataclass
class Space:
    """This host's share of one weft network's addresses (cluster/ipam.py)."""

    network: str
    subnet: str
    blocks: list[str] = field(default_factory=list)     # blocks this host holds
    claimed: list[str] = field(default_factory=list)    # address claims it holds
    skip: list[str] = field(default_factory=list)       # others' claims in its blocks
    addrs: list[str] = field(default_factory=list)      # handed out
    since: dict[str, float] = field(default_factory=dict)   # address -> last change
    unreleased: list[str] = field(default_factory=list)     # claims to give back

    @property
    def id(self) -> str:
        return self.network


@dataclass
class Network:
    """A Docker network of this driver.  ``tenant`` names the weft network (segment)
    its ports are bound to: a tenant's default network or a further network of a
    tenant (the field keeps its old name: records written before networks existed)."""

    id: str
    tenant: str
    subnet: str = ""
    port_security: bool = True  # bind endpoints with their MAC and address
    docker_gateway: str = ""    # Docker's IPv4Data Gateway (its IPAM's reservation)
    learnt: bool = False        # the fields below hold the controller's last answer
    gateway: str | None = None  # the weft network's gateway (None: it has none)
    egress: bool = False
    tenant_id: int | None = None    # the VNI of its tenant (routing domain)
    pool: str = ""              # its IPv4 pool's id (CreateNetwork links them)
    subnet6: str = ""           # Docker's IPv6Data Pool (--ipv6 --subnet fd00:..::/64)
    gateway6: str | None = None     # the weft network's IPv6 gateway (learnt with gateway)


@dataclass(frozen=True)
class Segment:
    """What the controller says about a weft network (``exists`` False: it has none)."""

    name: str
    exists: bool = True
    tenant: str = ""                # the tenant (routing domain) it belongs to
    tenant_id: int | None = None    # that tenant's VNI
    gateway: str | None = None
    egress: bool = False
    subnet6: str | None = None      # its IPv6 subnet (dual-stack), None: IPv4 only
    gateway6: str | None = None     # its IPv6 gateway (dual-stack with a gateway)


@dataclass
class Endpoint:
    id: str
    network: str
    mac: str
    address: str = ""
    address6: str = ""          # its IPv6 address/prefix (a dual-stack network)
    port: str | None = None     # the br0 port while joined
    created: float = 0.0


class Dataplane(Protocol):
    """What the plugin needs from the host: its state store and br0."""

    def load(self) -> dict[str, str]:
        """Every stored state record (key -> JSON)."""

    def save(self, put: dict[str, str], delete: list[str]) -> None:
        """Store and delete records in one atomic step."""

    def plug(self, port: str, peer: str, mac: str, tenant: str, container: str,
             extra: dict[str, str], ips: tuple[str, ...],
             port_security: bool) -> tuple[str, str] | None:
        """Create the veth `port`/`peer` (peer with `mac`) and put `port` on br0, labelled
        with its addresses and whether the port is to be bound with them; or hand out a
        pair made ahead of time (ovs_agent.portpool): the names used (None: these)."""

    def unplug(self, port: str) -> None:
        """Remove `port` from br0 and delete the veth; no error if already gone."""

    def segment(self, name: str) -> Segment | None:
        """Ask the controller about weft network (or tenant) ``name``; None when it
        cannot be asked."""

    def ipam(self, op: str, network: str, args: dict[str, str]) -> Json | None:
        """Ask the controller's IPAM for this host (``op``: claim_block, release_block,
        claim_address, release_address; docs/docker.md "Addresses"): its answer; None
        when no controller answers; IpamRefused for a refusal (a release of a claim the
        store no longer has is an answer, not a refusal)."""

    def in_use(self, network_ids: list[str]) -> tuple[set[str], set[str]] | None:
        """The addresses and endpoint ids dockerd and br0 know on these Docker networks
        (None when dockerd cannot be asked: then nothing is reclaimed)."""

    def network_name(self, network_id: str) -> str | None:
        """Ask Docker for a network's name; None when it cannot be asked."""

    def container_name(self, network_id: str, endpoint_id: str) -> str | None:
        """Ask Docker which container an endpoint belongs to (for messages)."""

    def reserve(self, proto: str, host_ip: str | None, port: int) -> Reservation:
        """Bind (never listen on) a socket on ``host_ip`` (None: every address) and
        ``port``, without SO_REUSEADDR; raises OSError when the port is taken."""

    def publish(self, records: list[Published], add: bool) -> None:
        """Add (or delete) the NAT elements of ``records`` in ``table ip weft-nat``
        now, if the agent has made the table; never raises (the agent re-renders)."""


class Reservation(Protocol):
    def close(self) -> None: ...


def _v6(subnet: str | None) -> ipaddress.IPv6Network | None:
    try:
        return ipaddress.IPv6Network(subnet) if subnet else None
    except ValueError:
        return None


def endpoint_mac(endpoint_id: str) -> str:
    """A stable, locally administered unicast MAC for an endpoint."""
    h = hashlib.sha256(endpoint_id.encode()).hexdigest()
    return "02:" + ":".join(h[i:i + 2] for i in range(0, 10, 2))


def port_names(endpoint_id: str) -> tuple[str, str]:
    """(br0 port, container-side veth) for an endpoint: 13 characters each."""
    return PORT_PREFIX + endpoint_id[:11], PEER_PREFIX + endpoint_id[:11]


class Plugin:
    """libnetwork remote NetworkDriver + IpamDriver over a Dataplane."""

    def __init__(self, dataplane: Dataplane, new_token: Callable[[], str] | None = None,
                 host: str = "this host", clock: Callable[[], float] = time.time,
                 reclaim_after: float = RECLAIM_AFTER) -> None:
        import secrets
        self.dp = dataplane
        self.host = host
        self.new_token = new_token or (lambda: secrets.token_hex(4))
        self.clock, self.reclaim_after = clock, reclaim_after
        self.swept: dict[str, float] = {}       # weft network -> last reclaim pass
        self.lock = threading.Lock()
        self.pools: dict[str, Pool] = {}
        self.spaces: dict[str, Space] = {}
        self.networks: dict[str, Network] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.published: dict[str, list[Published]] = {}     # endpoint id -> its ports
        self.held: dict[tuple[str, str | None, int], Reservation] = {}
        self._load()
        self._rebind()

    # -- state ------------------------------------------------------------------------
    def _load(self) -> None:
        for key, value in self.dp.load().items():
            try:
                data = json.loads(value)
                if key.startswith(POOL_KEY):
                    self.pools[data["id"]] = Pool(**data)
                elif key.startswith(SPACE_KEY):
                    self.spaces[data["network"]] = Space(**data)
                elif key.startswith(NET_KEY):
                    self.networks[data["id"]] = Network(**data)
                elif key.startswith(EP_KEY):
                    self.endpoints[data["id"]] = Endpoint(**data)
                elif key.startswith(PUB_KEY):
                    r = Published(**data)
                    self.published.setdefault(r.endpoint, []).append(r)
            except (ValueError, TypeError, KeyError) as exc:
                LOG.warning("ignoring unreadable state record %s: %s", key, exc)
        LOG.info("state: %d networks, %d endpoints, %d pools, %d endpoints with published "
                 "ports", len(self.networks), len(self.endpoints), len(self.pools),
                 len(self.published))

    def _rebind(self) -> None:
        """After a restart: hold the published ports again (their sockets died with the
        old process) and put their NAT elements back (the agent would, next interval)."""
        for eid in [e for e in self.published if e not in self.endpoints]:
            LOG.warning("dropping published ports of unknown endpoint %s", eid[:12])
            self._unpublish(eid)
        records = [r for rs in self.published.values() for r in rs]
        self._hold(records)
        if records:
            self.dp.publish(records, add=True)

    def _hold(self, records: list[Published]) -> None:
        """Bind the sockets of records already published (restart, rollback)."""
        for r in records:
            try:
                self.held[_hold_key(r)] = self.dp.reserve(r.proto, r.host_ip, r.host_port)
            except OSError as exc:
                LOG.warning("published port %s of endpoint %s: cannot hold it again (%s); "
                            "NAT still sends it to the container", _label(r), r.endpoint[:12],
                            exc)

    def _put(self, *records: Pool | Network | Endpoint | Space) -> None:
        self.dp.save({_key(r): json.dumps(asdict(r), sort_keys=True) for r in records}, [])

    def _delete(self, *records: Pool | Network | Endpoint | Space) -> None:
        self.dp.save({}, [_key(r) for r in records])

    # -- dispatch ---------------------------------------------------------------------
    def handle(self, path: str, request: Json) -> Json:
        """One call: the answer Docker expects, or the error in the field Docker reads.

        The network driver protocol names it "Err", the IPAM protocol "Error";
        Docker ignores the other one and would take the empty answer for success.
        """
        name = path.lstrip("/")
        err = "Error" if name.startswith("IpamDriver.") else "Err"
        method = HANDLERS.get(name)
        if method is None:
            return {err: f"weft: {name} is not supported"}
        try:
            with self.lock:
                return method(self, request or {})
        except PluginError as exc:
            LOG.warning("%s refused: %s", name, exc)
            return {err: str(exc)}
        except Exception as exc:       # report, never kill the server thread
            LOG.exception("%s failed", name)
            return {err: f"weft: {name}: {exc}"}

    # -- Plugin / capabilities --------------------------------------------------------
    def activate(self, _: Json) -> Json:
        return {"Implements": ["NetworkDriver", "IpamDriver"]}

    def capabilities(self, _: Json) -> Json:
        return {"Scope": "local", "ConnectivityScope": "global"}

    def nothing(self, _: Json) -> Json:
        return {}

    # -- IPAM -------------------------------------------------------------------------
    def ipam_capabilities(self, _: Json) -> Json:
        return {"RequiresMACAddress": False, "RequiresRequestReplay": False}

    def address_spaces(self, _: Json) -> Json:
        return {"LocalDefaultAddressSpace": ADDRESS_SPACE,
                "GlobalDefaultAddressSpace": ADDRESS_SPACE}

    def request_pool(self, req: Json) -> Json:
        if req.get("V6"):
            return self._request_pool6(req)
        if not req.get("Pool"):
            raise PluginError("weft: give the tenant's subnet: docker network create -d weft "
                              "--ipam-driver weft --subnet CIDR ...")
        try:
            net = ipaddress.ip_network(req["Pool"])
            sub = ipaddress.ip_network(req["SubPool"]) if req.get("SubPool") else None
        except ValueError as exc:
            raise PluginError(f"weft: {exc}") from None
        if net.version != 4 or net.num_addresses < 4:
            raise PluginError(f"weft: {net} is not an IPv4 subnet of at least 4 addresses")
        if sub is not None and not sub.subnet_of(net):  # type: ignore[arg-type]
            raise PluginError(f"weft: --ip-range {sub} is not inside {net}")
        label = (req.get("Options") or {}).get(TENANT_OPT)
        pid = f"{net}@{label + '-' if label else ''}{self.new_token()}"
        pool = Pool(pid, str(net), within=str(sub) if sub else "", created=self.clock())
        self.pools[pid] = pool
        self._put(pool)
        LOG.info("pool %s: addresses from cluster-wide blocks%s", pid,
                 f" inside {sub}" if sub else "")
        return {"PoolID": pid, "Pool": str(net), "Data": {}}

    def _request_pool6(self, req: Json) -> Json:
        """An IPv6 pool (``docker network create --ipv6 --subnet fd00:..::/64``).  Its
        addresses take a random 64-bit interface id (``request_address``), so no host
        asks the controller or another host for one (see docs/docker.md)."""
        if not req.get("Pool"):
            raise PluginError("weft: give the IPv6 subnet: docker network create --ipv6 "
                              "--subnet fd00:..::/64 ...")
        if req.get("SubPool"):
            raise PluginError("weft: --ip-range is not supported for IPv6 subnets")
        try:
            net = ipaddress.IPv6Network(req["Pool"])
        except ValueError as exc:
            raise PluginError(f"weft: {exc}") from None
        if net.prefixlen > 64:
            raise PluginError(f"weft: {net} is longer than /64 (weft gives IPv6 addresses "
                              "random 64-bit interface ids)")
        label = (req.get("Options") or {}).get(TENANT_OPT)
        pid = f"{net}@{label + '-' if label else ''}{self.new_token()}"
        pool = Pool(pid, str(net), created=self.clock(), v6=True)
        self.pools[pid] = pool
        self._put(pool)
        LOG.info("pool %s: IPv6, random interface ids", pid)
        return {"PoolID": pid, "Pool": str(net), "Data": {}}

    def _request_address6(self, pool: Pool, want: str, gateway: bool) -> Json:
        """An IPv6 address: the one asked for (``--ip6``), the subnet's first for
        Docker's gateway request, else a random interface id no endpoint here holds.
        Two hosts pick the same one with probability n^2/2^65 for n containers."""
        import secrets
        net = ipaddress.IPv6Network(pool.subnet)
        if want:
            addr = ipaddress.IPv6Address(want.split("/")[0])
            if addr not in net or addr == net.network_address:
                raise PluginError(f"weft: {addr} is not a host address of {net}")
            if str(addr) in pool.addrs or str(addr) == pool.gateway:
                raise PluginError(f"weft: {addr} is already in use in {net}")
        elif gateway:
            addr = net.network_address + 1
        else:
            while True:
                iid = secrets.randbits(128 - net.prefixlen)
                addr = net.network_address + iid
                if iid > 1 and str(addr) not in pool.addrs and str(addr) != pool.gateway:
                    break
        if gateway:
            pool.gateway = str(addr)
        else:
            pool.addrs.append(str(addr))
        self._put(pool)
        return {"Address": f"{addr}/{net.prefixlen}", "Data": {}}

    def release_pool(self, req: Json) -> Json:
        pool = self.pools.pop(req.get("PoolID", ""), None)
        if pool:
            self._delete(pool)
            space = self.spaces.get(pool.network)
            if space is not None and not any(p.network == space.network
                                             for p in self.pools.values()):
                self._drop_space(space)
        return {}

    def _pool(self, pool_id: str) -> Pool:
        try:
            return self.pools[pool_id]
        except KeyError:
            raise PluginError(f"weft: no address pool {pool_id!r}") from None

    def request_address(self, req: Json) -> Json:
        pool = self._pool(req.get("PoolID", ""))
        net = ipaddress.ip_network(pool.subnet)
        gateway = (req.get("Options") or {}).get("RequestAddressType") == GATEWAY_REQUEST
        want = req.get("Address") or ""
        if pool.v6:
            return self._request_address6(pool, want, gateway)
        if want:
            addr = ipaddress.ip_address(want.split("/")[0])
            if addr not in net or addr in (net.network_address, net.broadcast_address):
                raise PluginError(f"weft: {addr} is not a host address of {net}")
        if gateway:     # the weft network's own, the same on every host: never handed out
            if want and str(addr) in self._handed_out(pool):
                raise PluginError(f"weft: {addr} is already in use in {net}")
            pool.gateway = str(addr) if want else str(net.network_address + 1)
            self._put(pool)
            return {"Address": f"{pool.gateway}/{net.prefixlen}", "Data": {}}
        if pool.sliced:
            chosen = self._from_slice(pool, net, str(addr) if want else "")
            pool.addrs.append(chosen)
            self._put(pool)
            return {"Address": f"{chosen}/{net.prefixlen}", "Data": {}}
        space = self._space(pool)
        chosen = self._requested(pool, space, str(addr)) if want else self._next(pool, space)
        space.addrs.append(chosen)
        space.since[chosen] = self.clock()
        self._put(space)
        return {"Address": f"{chosen}/{net.prefixlen}", "Data": {}}

    def _handed_out(self, pool: Pool) -> set[str]:
        space = self.spaces.get(pool.network)
        return set(pool.addrs) | set(space.addrs if space else ())

    def _from_slice(self, pool: Pool, net: Any, want: str) -> str:
        """A pool from before cluster IPAM: its own slice, as it always did."""
        used = set(pool.addrs) | {pool.gateway, str(net.network_address),
                                  str(net.broadcast_address)}
        if want:
            if want in used:
                raise PluginError(f"weft: {want} is already in use in {net}")
            return want
        lo, hi = int(ipaddress.ip_address(pool.first)), int(ipaddress.ip_address(pool.last))
        for n in range(lo, hi + 1):
            if str(ipaddress.ip_address(n)) not in used:
                return str(ipaddress.ip_address(n))
        raise PluginError(f"weft: no free address left in {pool.first}-{pool.last} of "
                          f"{pool.subnet} on this host")

    # -- cluster-wide blocks (cluster/ipam.py) --------------------------------------------
    def _space(self, pool: Pool) -> Space:
        """The weft network a pool's addresses belong to, and this host's share of it.
        Docker's calls carry no network name: the pool is linked to its network by
        CreateNetwork (``Network.pool``), the name learnt as Join learns it."""
        if not pool.network:
            net = next((n for n in self.networks.values() if n.pool == pool.id), None)
            if net is None:
                same = {n.tenant or n.id for n in self.networks.values()
                        if n.subnet == pool.subnet}
                raise PluginError(f"weft: pool {pool.id} belongs to no network yet" if not same
                                  else f"weft: cannot tell which network pool {pool.id} "
                                       "serves; recreate the Docker network")
            pool.network = self._tenant_of(net)
            self._put(pool)
        space = self.spaces.get(pool.network)
        if space is None:
            space = self.spaces[pool.network] = Space(pool.network, pool.subnet)
        elif space.subnet != pool.subnet:
            raise PluginError(f"weft: weft network {pool.network!r} has subnet "
                              f"{space.subnet} on this host, not {pool.subnet}")
        return space

    def _reserved(self, space: Space) -> set[str]:
        """What a space never hands out: its pools' gateways and others' claims."""
        return {p.gateway for p in self.pools.values()
                if p.network == space.network and p.gateway} | set(space.skip)

    def _next(self, pool: Pool, space: Space) -> str:
        """The lowest free address of the host's blocks (addresses whose containers are
        gone reclaimed first); a new block when they are full."""
        self._retry_releases(space)
        self._reclaim(space)            # at most every reclaim_after / 2
        blocks = [b for b in space.blocks if not pool.within or ipaddress.ip_network(
            b).subnet_of(ipaddress.ip_network(pool.within))]   # type: ignore[arg-type]
        used = set(space.addrs) | self._reserved(space)
        found = ipam.next_free(space.subnet, blocks, used)
        if found is None and self._reclaim(space):
            found = ipam.next_free(space.subnet, blocks, set(space.addrs) |
                                   self._reserved(space))
        if found is not None:
            return found
        args = {"subnet": space.subnet, **({"within": pool.within} if pool.within else {})}
        try:
            got = self.dp.ipam("claim_block", space.network, args)
        except IpamRefused as exc:
            raise PluginError(f"weft: {exc.args[0]}") from None
        if got is None:
            raise PluginError(f"weft: the blocks of network {space.network!r} on {self.host} "
                              "are full and no weft controller answers to claim another: "
                              "try again when one does")
        space.blocks.append(got["cidr"])
        space.skip.extend(a for a in got.get("skip", []) if a not in space.skip)
        LOG.info("network %s: claimed block %s%s", space.network, got["cidr"],
                 f" (skipping {', '.join(got['skip'])})" if got.get("skip") else "")
        found = ipam.next_free(space.subnet, [got["cidr"]], set(space.addrs) |
                               self._reserved(space))
        if found is None:
            raise PluginError(f"weft: block {got['cidr']} has no free address")
        return found

    def _requested(self, pool: Pool, space: Space, want: str) -> str:
        """``docker run --ip``: free on this host, and held by it cluster-wide (its block,
        its address claim, or a new address claim); another host's is refused."""
        if want in space.addrs:
            raise PluginError(f"weft: {want} is already in use in {space.subnet} on "
                              f"{self.host}")
        if want in {p.gateway for p in self.pools.values() if p.network == space.network}:
            raise PluginError(f"weft: {want} is the gateway of network {space.network!r}")
        if want in space.claimed or (ipam.block_of(want, space.blocks)
                                     and want not in space.skip):
            return want
        try:
            got = self.dp.ipam("claim_address", space.network,
                               {"address": want, "subnet": space.subnet})
        except IpamRefused as exc:
            raise PluginError(f"weft: {exc.args[0]}") from None
        if got is None:
            raise PluginError(f"weft: no weft controller answers, so {want} cannot be checked "
                              "cluster-wide; try again, or leave --ip out (this host's "
                              "blocks still have addresses)")
        if got.get("kind") == ipam.BLOCK:       # a block of ours this state lost
            if got["cidr"] not in space.blocks:
                space.blocks.append(got["cidr"])
        elif want not in space.claimed:
            space.claimed.append(want)
        return want

    def _retry_releases(self, space: Space) -> None:
        """Give back what the controller could not take before (best effort)."""
        for item in list(space.unreleased):
            kind, _, what = item.partition(":")
            op = "release_block" if kind == ipam.BLOCK else "release_address"
            try:
                done = self.dp.ipam(op, space.network,
                                    {"cidr" if kind == ipam.BLOCK else "address": what})
            except IpamRefused as exc:
                LOG.warning("network %s: %s %s not given back: %s", space.network, kind,
                            what, exc.args[0])
                done = {}
            if done is None:
                return
            space.unreleased.remove(item)

    def _give_back(self, space: Space) -> None:
        """Empty blocks (all but one: the host keeps one warm) and the address claims no
        container uses go back to the cluster."""
        for addr in [a for a in space.claimed if a not in space.addrs]:
            space.claimed.remove(addr)
            space.unreleased.append(f"{ipam.ADDRESS}:{addr}")
        empty = ipam.empty_blocks(space.blocks, space.addrs)
        for block in empty[1:] if len(empty) == len(space.blocks) else empty:
            space.blocks.remove(block)
            space.unreleased.append(f"{ipam.BLOCK}:{block}")
            LOG.info("network %s: block %s is empty: given back", space.network, block)
        space.skip = [a for a in space.skip if ipam.block_of(a, space.blocks)]
        self._retry_releases(space)

    def _drop_space(self, space: Space) -> None:
        """The last pool of a weft network on this host is gone: every claim goes back."""
        space.addrs.clear()
        space.since.clear()
        self._give_back(space)
        for block in space.blocks:
            space.unreleased.append(f"{ipam.BLOCK}:{block}")
        space.blocks = []
        self._retry_releases(space)
        if space.unreleased:        # kept until a controller takes them
            self._put(space)
            return
        del self.spaces[space.network]
        self._delete(space)

    def _reclaim(self, space: Space) -> bool:
        """Addresses whose container is gone (a crash between allocation and Join, a
        ``docker rm`` while the plugin was down): free again once no endpoint record, no
        br0 port and no dockerd network of this host knows them, and nothing happened
        to them for ``reclaim_after`` seconds.  True if any was freed."""
        now = self.clock()
        if now - self.swept.get(space.network, 0.0) < self.reclaim_after / 2:
            return False
        self.swept[space.network] = now
        nets = [n.id for n in self.networks.values()
                if n.pool in {p.id for p in self.pools.values() if p.network == space.network}]
        seen = self.dp.in_use(nets)
        if seen is None:
            return False
        addrs, endpoint_ids = seen
        stale = [ep for ep in self.endpoints.values() if ep.network in nets
                 and ep.id not in endpoint_ids and now - ep.created > self.reclaim_after]
        for ep in stale:
            LOG.warning("endpoint %s (%s): Docker and br0 no longer know it: removed",
                        ep.id[:12], ep.address)
            self._unplug(ep)
            del self.endpoints[ep.id]
            self._delete(ep)
            space.since[ep.address.split("/")[0]] = now - self.reclaim_after - 1
        held = {ep.address.split("/")[0] for ep in self.endpoints.values()}
        free = [a for a in space.addrs if a not in held and a not in addrs
                and now - space.since.get(a, 0.0) > self.reclaim_after]
        for a in free:
            space.addrs.remove(a)
            space.since.pop(a, None)
        if free:
            LOG.warning("network %s: reclaimed %s (no container has them)", space.network,
                        ", ".join(free))
            self._put(space)
        return bool(free)

    def release_address(self, req: Json) -> Json:
        pool = self.pools.get(req.get("PoolID", ""))
        addr = (req.get("Address") or "").split("/")[0]
        if pool is None:
            return {}
        if addr == pool.gateway:
            pool.gateway = None
            self._put(pool)
            return {}
        if pool.sliced or pool.v6:
            if addr in pool.addrs:
                pool.addrs.remove(addr)
                self._put(pool)
            return {}
        space = self.spaces.get(pool.network)
        if space is None or addr not in space.addrs:
            return {}
        space.addrs.remove(addr)
        space.since.pop(addr, None)
        self._give_back(space)
        self._put(space)
        return {}

    # -- networks ---------------------------------------------------------------------
    def create_network(self, req: Json) -> Json:
        nid = req["NetworkID"]
        opts = req.get("Options") or {}
        generic = opts.get(GENERIC) or {}
        # Without -o network or -o tenant the weft network is the Docker network's name;
        # Docker does not send the name and stores the network only after this call, so
        # it is looked up later.
        name = generic.get(NETWORK_OPT) or generic.get(TENANT_OPT) or ""
        security = generic.get(PORT_SECURITY_OPT, "on")
        if security not in ("on", "off"):
            raise PluginError(f"weft: -o {PORT_SECURITY_OPT}={str(security)[:20]!r}: give on "
                              "(the default: endpoints send only from their MAC and address) "
                              "or off")
        v4 = req.get("IPv4Data") or []
        subnet = v4[0].get("Pool", "") if v4 else ""
        docker_gw = (v4[0].get("Gateway") or "").split("/")[0] if v4 else ""
        if not v4 and req.get("IPv6Data"):
            raise PluginError("weft: an IPv6-only network is not supported: give an IPv4 "
                              "subnet too (--subnet 10.x.y.0/24 --ipv6 --subnet fd00:..::/64)")
        v6 = req.get("IPv6Data") or []
        net = Network(nid, name, subnet, security == "on", docker_gw,
                      subnet6=v6[0].get("Pool", "") if v6 else "")
        old = self.networks.get(nid)     # created again (dockerd restart): keep its pool
        net.pool = old.pool if old is not None and old.pool else \
            self._unlinked_pool(subnet, docker_gw)
        if name:    # -o tenant alone names a segment too (a network's name works)
            by_network = bool(generic.get(NETWORK_OPT))
            self._learn(net, by_network,
                        tenant=(generic.get(TENANT_OPT) or None) if by_network else None)
        self.networks[nid] = net
        pool = self.pools.get(net.pool)
        if pool is not None and net.tenant and not pool.sliced:
            pool.network = net.tenant
            self._put(pool)
        self._put(net)
        LOG.info("network %s: weft network %s, subnet %s, gateway %s, port security %s",
                 nid[:12], name or "(the network's name)", subnet or "-",
                 net.gateway if net.learnt else docker_gw or "-", security)
        return {}

    def _unlinked_pool(self, subnet: str, gateway: str) -> str:
        """The pool Docker requested for the network it now creates: the newest of this
        subnet and gateway no network has yet.  Two such made within a minute (two
        networks of one subnet created at once) are refused rather than guessed."""
        linked = {n.pool for n in self.networks.values()}
        cands = sorted((p for p in self.pools.values() if p.subnet == subnet
                        and p.id not in linked and (p.gateway or "") == gateway),
                       key=lambda p: p.created, reverse=True)
        if not cands:
            return ""
        if len(cands) > 1 and cands[1].created > self.clock() - 60:
            raise PluginError(f"weft: two networks of subnet {subnet} are being created at "
                              "once on this host; create them one after the other")
        return cands[0].id

    def _learn(self, net: Network, by_network: bool = False, tenant: str | None = None) -> None:
        """Check the weft network ``net.tenant`` with the controller (it exists, in
        ``tenant`` if given, with Docker's gateway) and keep what it says.  When the
        controller cannot be asked the network is taken as it is (as before)."""
        seg = self.dp.segment(net.tenant)
        if seg is None:
            LOG.warning("cannot ask the controller about weft network %s: taken as it is",
                        net.tenant)
            return
        if not seg.exists:
            if by_network:
                raise PluginError(f"weft: no network {net.tenant!r} in the weft controller: "
                                  f"create it first (weftctl network create {net.tenant} "
                                  f"--tenant TENANT --subnet CIDR)")
            raise PluginError(f"weft: no tenant {net.tenant!r} in the weft controller: "
                              f"create it first (weftctl tenant create {net.tenant})")
        if tenant and seg.tenant and seg.tenant != tenant:
            raise PluginError(f"weft: network {net.tenant!r} belongs to tenant {seg.tenant!r}, "
                              f"not {tenant!r}")
        if net.subnet6 and seg.subnet6 != net.subnet6 and _v6(net.subnet6) != _v6(seg.subnet6):
            raise PluginError(f"weft: weft network {net.tenant!r} has " + (
                f"IPv6 subnet {seg.subnet6}: create the Docker network with --ipv6 --subnet "
                f"{seg.subnet6}" if seg.subnet6 else
                f"no IPv6 subnet: give it one first (weftctl network set {net.tenant} "
                f"--subnet6 {net.subnet6})"))
        if seg.gateway and net.docker_gateway and net.docker_gateway != seg.gateway:
            raise PluginError(f"weft: the gateway of weft network {net.tenant!r} is "
                              f"{seg.gateway}, Docker's would be {net.docker_gateway}: "
                              f"create the Docker network with --gateway {seg.gateway}")
        self._keep(net, seg)

    def _keep(self, net: Network, seg: Segment) -> bool:
        """Store the controller's answer in the record; True if anything changed."""
        now = (True, seg.gateway, seg.egress, seg.tenant_id, seg.gateway6)
        if (net.learnt, net.gateway, net.egress, net.tenant_id, net.gateway6) == now:
            return False
        net.learnt, net.gateway, net.egress, net.tenant_id, net.gateway6 = now
        return True

    def _refresh(self, net: Network) -> None:
        """The controller's current gateway, egress and tenant id for a network; its last
        answer stays when it cannot be asked (or no longer knows the network)."""
        seg = self.dp.segment(net.tenant)
        if seg is None or not seg.exists:
            if seg is not None:
                LOG.warning("the controller has no weft network %s (Docker network %s)",
                            net.tenant, net.id[:12])
            return
        if self._keep(net, seg):
            self._put(net)

    @staticmethod
    def _gateway(net: Network) -> str | None:
        """The default route's next hop: the controller's gateway once it answered (None:
        the network has none), else the address Docker's IPAM reserved."""
        if net.learnt:
            return net.gateway
        return net.docker_gateway or None

    def _tenant_of(self, net: Network) -> str:
        """The network's weft network; the first endpoint of a Docker network made without
        -o network/tenant learns its name from Docker."""
        if net.tenant:
            return net.tenant
        name = self.dp.network_name(net.id)
        if not name:
            raise PluginError(f"weft: cannot learn the name of network {net.id[:12]} from "
                              "Docker; create it with -o tenant=NAME")
        net.tenant = name
        try:
            self._learn(net)
        except PluginError:
            net.tenant = ""
            raise
        self._put(net)
        LOG.info("network %s: weft network %s (its name)", net.id[:12], name)
        return name

    def delete_network(self, req: Json) -> Json:
        nid = req.get("NetworkID", "")
        gone = [ep for ep in self.endpoints.values() if ep.network == nid]
        for ep in gone:
            self._unpublish(ep.id)
            self._unplug(ep)
            del self.endpoints[ep.id]
        net = self.networks.pop(nid, None)
        self._delete(*gone, *([net] if net else []))
        return {}

    def _network(self, nid: str) -> Network:
        try:
            return self.networks[nid]
        except KeyError:
            raise PluginError(f"weft: unknown network {nid[:12]}") from None

    # -- endpoints --------------------------------------------------------------------
    def create_endpoint(self, req: Json) -> Json:
        net = self._network(req["NetworkID"])
        self._tenant_of(net)
        eid = req["EndpointID"]
        iface = req.get("Interface") or {}
        if iface.get("AddressIPv6") and not net.subnet6:
            raise PluginError("weft: an IPv6 address on a network created without --ipv6")
        # `-p` is refused here already when it cannot work: Docker asks the driver to
        # publish (ProgramExternalConnectivity) only if its Join gave a gateway, so on a
        # network without one the ports would be dropped without a word.
        if parse_portmap((req.get("Options") or {}).get(PORTMAP)):
            self._refresh(net)
            self._check_publishable(net)
        given = iface.get("MacAddress") or ""
        ep = Endpoint(eid, req["NetworkID"], given or endpoint_mac(eid),
                      iface.get("Address") or "", created=self.clock(),
                      address6=iface.get("AddressIPv6") or "")
        self.endpoints[eid] = ep
        self._put(ep)
        return {"Interface": {} if given else {"MacAddress": ep.mac}}

    def _endpoint(self, req: Json) -> Endpoint:
        try:
            return self.endpoints[req["EndpointID"]]
        except KeyError:
            raise PluginError(f"weft: unknown endpoint {req.get('EndpointID', '')[:12]}") \
                from None

    def delete_endpoint(self, req: Json) -> Json:
        eid = req.get("EndpointID", "")
        self._unpublish(eid)
        ep = self.endpoints.pop(eid, None)
        if ep:
            self._unplug(ep)
            self._delete(ep)
            self._touch(ep)
        elif eid:
            self.dp.unplug(port_names(eid)[0])
        return {}

    def _touch(self, ep: Endpoint) -> None:
        """An address whose endpoint went waits ``reclaim_after`` before a reclaim pass
        may take it (its ReleaseAddress is on the way)."""
        net = self.networks.get(ep.network)
        pool = self.pools.get(net.pool) if net else None
        space = self.spaces.get(pool.network) if pool else None
        addr = ep.address.split("/")[0]
        if space is not None and addr in space.addrs:
            space.since[addr] = self.clock()
            self._put(space)

    def endpoint_info(self, req: Json) -> Json:
        ep = self._endpoint(req)
        net = self.networks.get(ep.network)
        return {"Value": {"tenant": net.tenant if net else "", "port": ep.port or "",
                          "mac": ep.mac}}

    def join(self, req: Json) -> Json:
        ep = self._endpoint(req)
        net = self._network(ep.network)
        tenant = self._tenant_of(net)
        self._refresh(net)
        gateway = self._gateway(net)
        address = ep.address.split("/")[0]
        if gateway and address == gateway:
            raise PluginError(f"weft: {address} is the gateway of weft network {tenant!r}; "
                              "give the container another address")
        port, peer = port_names(ep.id)
        if ep.port:             # a repeated Join: start from a clean veth
            self.dp.unplug(ep.port)
        ips = tuple(a.split("/")[0] for a in (ep.address, ep.address6) if a)
        used = self.dp.plug(port, peer, ep.mac, tenant, req.get("SandboxKey") or ep.id,
                            {"weft-docker-network": net.id, "weft-docker-endpoint": ep.id},
                            ips, net.port_security)
        port, peer = used or (port, peer)
        ep.port = port
        self._put(ep)
        LOG.info("joined %s (%s, %s) to weft network %s as port %s, gateway %s", ep.id[:12],
                 " ".join(ips) or "no address", ep.mac, tenant, port, gateway or "none")
        # Docker's gateway service (docker_gwbridge) stays off: br0 is the gateway.
        resp: Json = {"InterfaceName": {"SrcName": peer, "DstPrefix": "eth"},
                      "DisableGatewayService": True}
        if gateway:
            resp["Gateway"] = gateway
        if net.learnt and net.gateway6 and ep.address6:
            resp["GatewayIPv6"] = net.gateway6      # the default route of IPv6 too
        return resp

    def leave(self, req: Json) -> Json:
        eid = req.get("EndpointID", "")
        self._unpublish(eid)
        ep = self.endpoints.get(eid)
        if ep:
            self._unplug(ep)
            self._put(ep)
        return {}

    def _unplug(self, ep: Endpoint) -> None:
        # By name, not by the record: a crash between plug and save leaves a port
        # the record does not know, and Docker's DeleteEndpoint must still remove it.
        self.dp.unplug(port_names(ep.id)[0])
        if ep.port and ep.port != port_names(ep.id)[0]:
            self.dp.unplug(ep.port)     # a pool port (ovs_agent.portpool)
        if ep.port:
            LOG.info("unplugged %s (port %s)", ep.id[:12], ep.port)
        ep.port = None

    # -- published ports ----------------------------------------------------------------
    def program(self, req: Json) -> Json:
        """`docker run -p HOSTPORT:PORT`: all of the endpoint's ports published, or none
        (an error Docker shows, the container does not start)."""
        wanted = parse_portmap((req.get("Options") or {}).get(PORTMAP))
        if not wanted and not self.published.get(req.get("EndpointID", "")):
            return {}
        ep = self._endpoint(req)
        net = self._network(ep.network)
        records: list[Published] = []
        if wanted:
            self._tenant_of(net)
            if not net.learnt or net.tenant_id is None:
                self._refresh(net)
            tenant_id = self._check_publishable(net)
            address = ep.address.split("/")[0]
            if not address:
                raise PluginError(f"weft: endpoint {ep.id[:12]} has no IPv4 address to "
                                  "publish ports to")
            records = [Published(ep.id, proto, host_port, address, port, tenant_id,
                                 host_ip) for proto, host_ip, host_port, port in wanted]
        self._check_conflicts(ep, records)
        old = self.published.get(ep.id, [])
        keep = {_hold_key(r) for r in records}
        dropped = [r for r in old if _hold_key(r) not in keep]
        for r in dropped:           # first: a new, narrower port may need the old socket
            self._release(r)
        fresh: dict[tuple[str, str | None, int], Reservation] = {}
        try:
            for r in records:
                key = _hold_key(r)
                if key not in self.held and key not in fresh:
                    fresh[key] = self._reserve(r)
            self._save_published(ep.id, records)
        except Exception:           # all or nothing: the old ports stay held
            for sock in fresh.values():
                sock.close()
            self._hold(dropped)
            raise
        self.held.update(fresh)
        gone = [r for r in old if r not in records]
        if gone:
            self.dp.publish(gone, add=False)
        if records:
            self.dp.publish(records, add=True)
        LOG.info("endpoint %s publishes %s", ep.id[:12],
                 ", ".join(f"{_label(r)} -> {r.container_ip}:{r.container_port}"
                           for r in records) or "nothing")
        return {}

    @staticmethod
    def _check_publishable(net: Network) -> int:
        """Published ports enter the tenant through its gateway port on this host: the
        tenant's id (VNI), or refused."""
        name = net.tenant
        if not net.learnt or net.tenant_id is None:
            raise PluginError(f"weft: cannot ask the weft controller about network "
                              f"{name!r}, which published ports need: try again")
        if not net.gateway:
            raise PluginError(f"weft: weft network {name!r} has no gateway; published "
                              f"ports need one (weftctl network set {name} --gateway IP)")
        if not net.egress:
            raise PluginError(f"weft: weft network {name!r} has egress off; published "
                              f"ports need it on (weftctl network set {name} --egress on)")
        return net.tenant_id

    def revoke(self, req: Json) -> Json:
        self._unpublish(req.get("EndpointID", ""))
        return {}

    def _check_conflicts(self, ep: Endpoint, records: list[Published]) -> None:
        """Another endpoint publishing the same port (on this host), or the request
        itself naming one host port twice."""
        for i, r in enumerate(records):
            for other in records[:i]:
                if _overlap(r, other):
                    raise PluginError(f"weft: port {_label(r)} is given twice")
            for eid, theirs in self.published.items():
                if eid == ep.id:
                    continue
                for o in theirs:
                    if _overlap(r, o):
                        raise PluginError(f"weft: port {_label(r)} is already published on "
                                          f"{self.host} ({self._whose(o)})")

    def _whose(self, r: Published) -> str:
        """'endpoint X, container Y' for a message (Y asked from Docker, best effort)."""
        who = f"endpoint {r.endpoint[:12]}"
        ep = self.endpoints.get(r.endpoint)
        container = r.container
        if not container and ep is not None:
            container = self.dp.container_name(ep.network, ep.id) or ""
        return f"{who}, container {container}" if container else who

    def _reserve(self, r: Published) -> Reservation:
        try:
            return self.dp.reserve(r.proto, r.host_ip, r.host_port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PluginError(f"weft: port {_label(r)} is in use on {self.host} by "
                                  "another process") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise PluginError(f"weft: {r.host_ip} is not an address of {self.host}") \
                    from None
            raise PluginError(f"weft: cannot hold port {_label(r)} on {self.host}: "
                              f"{exc.strerror or exc}") from None

    def _release(self, r: Published) -> None:
        sock = self.held.pop(_hold_key(r), None)
        if sock is not None:
            sock.close()

    def _save_published(self, eid: str, records: list[Published]) -> None:
        """One key per published port (what the agent reads), old ones gone, one step."""
        put = {_pub_key(r): json.dumps(asdict(r), sort_keys=True) for r in records}
        self.dp.save(put, [k for k in map(_pub_key, self.published.get(eid, []))
                           if k not in put])
        if records:
            self.published[eid] = records
        else:
            self.published.pop(eid, None)

    def _unpublish(self, eid: str) -> None:
        """Revoke, Leave, DeleteEndpoint (whichever comes first): NAT elements, record and
        sockets gone."""
        records = self.published.get(eid)
        if not records:
            return
        self.dp.publish(records, add=False)
        self._save_published(eid, [])
        for r in records:
            self._release(r)
        LOG.info("endpoint %s publishes nothing now (was %s)", eid[:12],
                 ", ".join(_label(r) for r in records))


def parse_portmap(portmap: Any) -> list[tuple[str, str | None, int, int]]:
    """libnetwork's port bindings as (proto, host ip or None for all, host port, port).

    Refused, with what to type instead: a host port Docker would choose (`-p PORT`,
    `-P`: a remote driver cannot tell Docker the port it took), ranges, loopback host
    addresses (DNAT in the host's prerouting never sees them), other protocols, IPv6."""
    out: list[tuple[str, str | None, int, int]] = []
    for b in portmap or ():
        if not isinstance(b, dict):
            raise PluginError(f"weft: unreadable port binding {str(b)[:60]!r}")
        proto = PROTOS.get(b.get("Proto"))  # type: ignore[arg-type]
        port = b.get("Port") or 0
        if proto is None:
            raise PluginError(f"weft: port {port}: only tcp and udp can be published")
        host_port, end = b.get("HostPort") or 0, b.get("HostPortEnd") or 0
        if not isinstance(port, int) or not 0 < port < 65536:
            raise PluginError(f"weft: {port!r} is not a container port")
        if not host_port:
            raise PluginError(f"weft: port {port}/{proto}: give the host port: -p "
                              f"HOSTPORT:{port} (with -p {port} or -P Docker would choose "
                              "one, which a network plugin cannot report back)")
        if not isinstance(host_port, int) or not 0 < host_port < 65536:
            raise PluginError(f"weft: {host_port!r} is not a host port")
        if end and end != host_port:
            raise PluginError(f"weft: host port ranges ({host_port}-{end}) are not "
                              f"supported: give one host port: -p HOSTPORT:{port}")
        raw = b.get("HostIP") or ""
        try:
            ip = ipaddress.ip_address(raw) if raw else None
        except ValueError:
            raise PluginError(f"weft: {raw!r} is not an IP address") from None
        if ip is not None and ip.version == 6:
            if ip.is_unspecified:       # Docker's dual-stack twin of 0.0.0.0
                LOG.info("port %d/%s: IPv6 [::] left out (weft publishes IPv4)", host_port,
                         proto)
                continue
            raise PluginError(f"weft: {raw}: weft publishes ports on IPv4 addresses only")
        if ip is not None and ip.is_loopback:
            raise PluginError(f"weft: {raw}: publishing on a loopback address is not "
                              f"supported; publish on a host address or all (-p "
                              f"{host_port}:{port})")
        entry = (proto, None if ip is None or ip.is_unspecified else str(ip), host_port, port)
        if entry not in out:
            out.append(entry)
    return out


def _pub_key(r: Published) -> str:
    """br0 external_ids key of a published port: weft-dpub-<endpoint>-tcp-[IP-]8080."""
    return f"{PUB_KEY}{r.endpoint}-{r.proto}-{r.host_ip + '-' if r.host_ip else ''}{r.host_port}"


def _hold_key(r: Published) -> tuple[str, str | None, int]:
    return r.proto, r.host_ip, r.host_port


def _overlap(a: Published, b: Published) -> bool:
    """Same protocol and port on a common address (None: every address)."""
    return (a.proto == b.proto and a.host_port == b.host_port
            and (a.host_ip is None or b.host_ip is None or a.host_ip == b.host_ip))


def _label(r: Published) -> str:
    return f"{r.host_ip + ':' if r.host_ip else ''}{r.host_port}/{r.proto}"


def _key(r: Pool | Network | Endpoint | Space) -> str:
    prefix = POOL_KEY if isinstance(r, Pool) else NET_KEY if isinstance(r, Network) else \
        SPACE_KEY if isinstance(r, Space) else EP_KEY
    return prefix + r.id


HANDLERS: dict[str, Callable[[Plugin, Json], Json]] = {
    "Plugin.Activate": Plugin.activate,
    "NetworkDriver.GetCapabilities": Plugin.capabilities,
    "NetworkDriver.CreateNetwork": Plugin.create_network,
    "NetworkDriver.DeleteNetwork": Plugin.delete_network,
    "NetworkDriver.CreateEndpoint": Plugin.create_endpoint,
    "NetworkDriver.DeleteEndpoint": Plugin.delete_endpoint,
    "NetworkDriver.EndpointOperInfo": Plugin.endpoint_info,
    "NetworkDriver.Join": Plugin.join,
    "NetworkDriver.Leave": Plugin.leave,
    "NetworkDriver.DiscoverNew": Plugin.nothing,
    "NetworkDriver.DiscoverDelete": Plugin.nothing,
    "NetworkDriver.ProgramExternalConnectivity": Plugin.program,
    "NetworkDriver.RevokeExternalConnectivity": Plugin.revoke,
    "IpamDriver.GetCapabilities": Plugin.ipam_capabilities,
    "IpamDriver.GetDefaultAddressSpaces": Plugin.address_spaces,
    "IpamDriver.RequestPool": Plugin.request_pool,
    "IpamDriver.ReleasePool": Plugin.release_pool,
    "IpamDriver.RequestAddress": Plugin.request_address,
    "IpamDriver.ReleaseAddress": Plugin.release_address,
}
