"""The `weft` Docker network plugin, pure: libnetwork's remote driver and IPAM protocols.

`Plugin.handle(path, request)` maps the JSON body of each call Docker makes
("/NetworkDriver.Join", "/IpamDriver.RequestAddress", ...) to the JSON body of
the answer.  Everything with side effects goes through the injected
`Dataplane`: persisting the state (OVSDB external_ids on br0 in production,
so it survives the plugin's restart and can never diverge from a file) and
plugging veths into br0.

Addressing: every Docker network gets its own pool, keyed by an opaque pool
id, so two tenants' networks may share 10.10.0.0/24 on one daemon.  Docker
scopes this driver "local": each host runs its own IPAM, so each host hands
out addresses from its own slice of the subnet (`--ip-range` if given, else
slice number i of the subnet for host number i of hosts.yaml), and no two
hosts give the same address.  The gateway address Docker insists on is
reserved and never configured: weft tenants route nothing.

Port security: every endpoint is plugged with the address IPAM gave it, and the
controller binds the port with its MAC and that address, so ARP and IP spoofing
fail by default.  ``docker network create -o port_security=off`` plugs the
network's endpoints without (the controller then checks nothing on them).
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

LOG = logging.getLogger("weft-plugin")

GENERIC = "com.docker.network.generic"          # where `docker network create -o` lands
GATEWAY_REQUEST = "com.docker.network.gateway"   # RequestAddress Options["RequestAddressType"]
ADDRESS_SPACE = "weft"
TENANT_OPT = "tenant"
PORT_SECURITY_OPT = "port_security"             # -o port_security=on|off (default on)
# br0 external_ids keys holding the plugin's state, one record per key.
NET_KEY, POOL_KEY, EP_KEY = "weft-dnet-", "weft-dpool-", "weft-dep-"
PORT_PREFIX, PEER_PREFIX = "wd", "wp"           # host end on br0, container end before the move

Json = dict[str, Any]


class PluginError(Exception):
    """A request Docker made that weft refuses; the message reaches the user."""


@dataclass
class Pool:
    id: str
    subnet: str
    first: str                  # the slice this host allocates from (inclusive)
    last: str
    gateway: str | None = None
    addrs: list[str] = field(default_factory=list)


@dataclass
class Network:
    id: str
    tenant: str
    subnet: str = ""
    port_security: bool = True  # bind endpoints with their MAC and address


@dataclass
class Endpoint:
    id: str
    network: str
    mac: str
    address: str = ""
    port: str | None = None     # the br0 port while joined


class Dataplane(Protocol):
    """What the plugin needs from the host: its state store and br0."""

    def load(self) -> dict[str, str]:
        """Every stored state record (key -> JSON)."""

    def save(self, put: dict[str, str], delete: list[str]) -> None:
        """Store and delete records in one atomic step."""

    def plug(self, port: str, peer: str, mac: str, tenant: str, container: str,
             extra: dict[str, str], ips: tuple[str, ...], port_security: bool) -> None:
        """Create the veth `port`/`peer` (peer with `mac`) and put `port` on br0, labelled
        with its addresses and whether the port is to be bound with them."""

    def unplug(self, port: str) -> None:
        """Remove `port` from br0 and delete the veth; no error if already gone."""

    def tenant_exists(self, tenant: str) -> bool | None:
        """Ask the controller; None when it cannot be asked."""

    def network_name(self, network_id: str) -> str | None:
        """Ask Docker for a network's name; None when it cannot be asked."""


def host_slice(subnet: str, index: int, count: int) -> tuple[str, str]:
    """Slice `index` of `count` equal power-of-two slices of `subnet` (whole if too small)."""
    net = ipaddress.ip_network(subnet)
    blocks = 1 << max(0, (count - 1).bit_length())
    size = net.num_addresses // blocks
    if size < 4 or not 0 <= index < count:
        return str(net.network_address), str(net.broadcast_address)
    start = int(net.network_address) + index * size
    return str(ipaddress.ip_address(start)), str(ipaddress.ip_address(start + size - 1))


def endpoint_mac(endpoint_id: str) -> str:
    """A stable, locally administered unicast MAC for an endpoint."""
    h = hashlib.sha256(endpoint_id.encode()).hexdigest()
    return "02:" + ":".join(h[i:i + 2] for i in range(0, 10, 2))


def port_names(endpoint_id: str) -> tuple[str, str]:
    """(br0 port, container-side veth) for an endpoint: 13 characters each."""
    return PORT_PREFIX + endpoint_id[:11], PEER_PREFIX + endpoint_id[:11]


class Plugin:
    """libnetwork remote NetworkDriver + IpamDriver over a Dataplane."""

    def __init__(self, dataplane: Dataplane, host_index: int = 0, host_count: int = 1,
                 new_token: Callable[[], str] | None = None) -> None:
        import secrets
        self.dp = dataplane
        self.host_index, self.host_count = host_index, host_count
        self.new_token = new_token or (lambda: secrets.token_hex(4))
        self.lock = threading.Lock()
        self.pools: dict[str, Pool] = {}
        self.networks: dict[str, Network] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self._load()

    # -- state ------------------------------------------------------------------------
    def _load(self) -> None:
        for key, value in self.dp.load().items():
            try:
                data = json.loads(value)
                if key.startswith(POOL_KEY):
                    self.pools[data["id"]] = Pool(**data)
                elif key.startswith(NET_KEY):
                    self.networks[data["id"]] = Network(**data)
                elif key.startswith(EP_KEY):
                    self.endpoints[data["id"]] = Endpoint(**data)
            except (ValueError, TypeError, KeyError) as exc:
                LOG.warning("ignoring unreadable state record %s: %s", key, exc)
        LOG.info("state: %d networks, %d endpoints, %d pools", len(self.networks),
                 len(self.endpoints), len(self.pools))

    def _put(self, *records: Pool | Network | Endpoint) -> None:
        self.dp.save({_key(r): json.dumps(asdict(r), sort_keys=True) for r in records}, [])

    def _delete(self, *records: Pool | Network | Endpoint) -> None:
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
            raise PluginError("weft: IPv6 is not supported")
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
        if sub is not None:
            if not sub.subnet_of(net):  # type: ignore[arg-type]
                raise PluginError(f"weft: --ip-range {sub} is not inside {net}")
            first, last = str(sub.network_address), str(sub.broadcast_address)
        else:
            first, last = host_slice(str(net), self.host_index, self.host_count)
        label = (req.get("Options") or {}).get(TENANT_OPT)
        pid = f"{net}@{label + '-' if label else ''}{self.new_token()}"
        pool = Pool(pid, str(net), first, last)
        self.pools[pid] = pool
        self._put(pool)
        LOG.info("pool %s: this host allocates %s-%s", pid, first, last)
        return {"PoolID": pid, "Pool": str(net), "Data": {}}

    def release_pool(self, req: Json) -> Json:
        pool = self.pools.pop(req.get("PoolID", ""), None)
        if pool:
            self._delete(pool)
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
        if want:
            addr = ipaddress.ip_address(want.split("/")[0])
            if addr not in net or addr in (net.network_address, net.broadcast_address):
                raise PluginError(f"weft: {addr} is not a host address of {net}")
            if str(addr) in pool.addrs or (str(addr) == pool.gateway and not gateway):
                raise PluginError(f"weft: {addr} is already in use in {net}")
        elif gateway:
            addr = net.network_address + 1      # reserved, never configured anywhere
        else:
            addr = self._free(pool, net)
        if gateway:
            pool.gateway = str(addr)
        else:
            pool.addrs.append(str(addr))
        self._put(pool)
        return {"Address": f"{addr}/{net.prefixlen}", "Data": {}}

    def _free(self, pool: Pool, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Any:
        used = set(pool.addrs) | {pool.gateway, str(net.network_address),
                                  str(net.broadcast_address)}
        lo, hi = int(ipaddress.ip_address(pool.first)), int(ipaddress.ip_address(pool.last))
        for n in range(lo, hi + 1):
            addr = ipaddress.ip_address(n)
            if str(addr) not in used:
                return addr
        raise PluginError(f"weft: no free address left in {pool.first}-{pool.last} of "
                          f"{pool.subnet} on this host")

    def release_address(self, req: Json) -> Json:
        pool = self.pools.get(req.get("PoolID", ""))
        addr = (req.get("Address") or "").split("/")[0]
        if pool is None:
            return {}
        if addr == pool.gateway:
            pool.gateway = None
        elif addr in pool.addrs:
            pool.addrs.remove(addr)
        else:
            return {}
        self._put(pool)
        return {}

    # -- networks ---------------------------------------------------------------------
    def create_network(self, req: Json) -> Json:
        nid = req["NetworkID"]
        opts = req.get("Options") or {}
        generic = opts.get(GENERIC) or {}
        if req.get("IPv6Data"):
            raise PluginError("weft: IPv6 is not supported")
        # Without -o tenant the tenant is the network's name; Docker does not send the
        # name and stores the network only after this call, so it is looked up later.
        tenant = generic.get(TENANT_OPT) or ""
        security = generic.get(PORT_SECURITY_OPT, "on")
        if security not in ("on", "off"):
            raise PluginError(f"weft: -o {PORT_SECURITY_OPT}={str(security)[:20]!r}: give on "
                              "(the default: endpoints send only from their MAC and address) "
                              "or off")
        if tenant:
            self._check_tenant(tenant)
        v4 = req.get("IPv4Data") or []
        subnet = v4[0].get("Pool", "") if v4 else ""
        net = Network(nid, tenant, subnet, security == "on")
        self.networks[nid] = net
        self._put(net)
        LOG.info("network %s: tenant %s, subnet %s, port security %s", nid[:12],
                 tenant or "(the network's name)", subnet or "-", security)
        return {}

    def _check_tenant(self, tenant: str) -> None:
        if self.dp.tenant_exists(tenant) is False:
            raise PluginError(f"weft: no tenant {tenant!r} in the weft controller: create it "
                              f"first (weftctl tenant create {tenant})")

    def _tenant_of(self, net: Network) -> str:
        """The network's tenant; the first endpoint of a network made without -o tenant
        learns its name from Docker."""
        if net.tenant:
            return net.tenant
        name = self.dp.network_name(net.id)
        if not name:
            raise PluginError(f"weft: cannot learn the name of network {net.id[:12]} from "
                              "Docker; create it with -o tenant=NAME")
        self._check_tenant(name)
        net.tenant = name
        self._put(net)
        LOG.info("network %s: tenant %s (its name)", net.id[:12], name)
        return name

    def delete_network(self, req: Json) -> Json:
        nid = req.get("NetworkID", "")
        gone = [ep for ep in self.endpoints.values() if ep.network == nid]
        for ep in gone:
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
        self._tenant_of(self._network(req["NetworkID"]))
        eid = req["EndpointID"]
        iface = req.get("Interface") or {}
        if iface.get("AddressIPv6"):
            raise PluginError("weft: IPv6 is not supported")
        given = iface.get("MacAddress") or ""
        ep = Endpoint(eid, req["NetworkID"], given or endpoint_mac(eid),
                      iface.get("Address") or "")
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
        ep = self.endpoints.pop(eid, None)
        if ep:
            self._unplug(ep)
            self._delete(ep)
        elif eid:
            self.dp.unplug(port_names(eid)[0])
        return {}

    def endpoint_info(self, req: Json) -> Json:
        ep = self._endpoint(req)
        net = self.networks.get(ep.network)
        return {"Value": {"tenant": net.tenant if net else "", "port": ep.port or "",
                          "mac": ep.mac}}

    def join(self, req: Json) -> Json:
        ep = self._endpoint(req)
        net = self._network(ep.network)
        tenant = self._tenant_of(net)
        port, peer = port_names(ep.id)
        if ep.port:             # a repeated Join: start from a clean veth
            self.dp.unplug(ep.port)
        ips = (ep.address.split("/")[0],) if ep.address else ()
        self.dp.plug(port, peer, ep.mac, tenant, req.get("SandboxKey") or ep.id,
                     {"weft-docker-network": net.id, "weft-docker-endpoint": ep.id},
                     ips, net.port_security)
        ep.port = port
        self._put(ep)
        LOG.info("joined %s (%s, %s) to tenant %s as port %s", ep.id[:12], ep.address, ep.mac,
                 tenant, port)
        return {"InterfaceName": {"SrcName": peer, "DstPrefix": "eth"},
                "DisableGatewayService": True}

    def leave(self, req: Json) -> Json:
        ep = self.endpoints.get(req.get("EndpointID", ""))
        if ep:
            self._unplug(ep)
            self._put(ep)
        return {}

    def _unplug(self, ep: Endpoint) -> None:
        # By name, not by the record: a crash between plug and save leaves a port
        # the record does not know, and Docker's DeleteEndpoint must still remove it.
        self.dp.unplug(port_names(ep.id)[0])
        if ep.port:
            LOG.info("unplugged %s (port %s)", ep.id[:12], ep.port)
        ep.port = None


def _key(r: Pool | Network | Endpoint) -> str:
    prefix = POOL_KEY if isinstance(r, Pool) else NET_KEY if isinstance(r, Network) else EP_KEY
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
    "NetworkDriver.ProgramExternalConnectivity": Plugin.nothing,
    "NetworkDriver.RevokeExternalConnectivity": Plugin.nothing,
    "IpamDriver.GetCapabilities": Plugin.ipam_capabilities,
    "IpamDriver.GetDefaultAddressSpaces": Plugin.address_spaces,
    "IpamDriver.RequestPool": Plugin.request_pool,
    "IpamDriver.ReleasePool": Plugin.release_pool,
    "IpamDriver.RequestAddress": Plugin.request_address,
    "IpamDriver.ReleaseAddress": Plugin.release_address,
}
