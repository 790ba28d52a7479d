"""The weft Docker plugin's protocol logic, as Docker drives it, over a fake dataplane."""
from __future__ import annotations

import ipaddress
import itertools
import json
import socket
import threading
from pathlib import Path

import httpx
import pytest

from controller.store import NotFound, Store, StoreError
from ovs_agent.dockerplugin import (GATEWAY_REQUEST, GENERIC, IpamRefused, Plugin, Segment,
                                    _pub_key, endpoint_mac, port_names)
from ovs_agent.nat import Published
from ovs_agent.pluginserver import _Server, make_handler, reserve_port


class FakeController:
    """The controllers' IPAM: a real store (SQLite in memory) several hosts' fake
    dataplanes share, called as controller/rest/ipam.py calls it."""

    def __init__(self) -> None:
        self.store = Store(":memory:")
        self.up = True

    def call(self, host: str, op: str, network: str, args: dict):
        if not self.up:
            return None
        s = self.store
        try:
            s.network(network)
        except NotFound:
            s.create_tenant(network)        # the fake knows every network it is asked
        try:
            if op == "claim_block":
                c, skip = s.claim_block(network, host, args.get("subnet"), None,
                                        args.get("within"))
                return {"cidr": c.cidr, "kind": c.kind, "host": c.host, "skip": list(skip)}
            if op == "claim_address":
                c = s.claim_address(network, host, args["address"], args.get("subnet"))
                return {"cidr": c.cidr, "kind": c.kind, "host": c.host}
            if op == "release_block":
                s.release_block(network, args["cidr"], host)
            else:
                s.release_address(network, args["address"], host)
            return {}
        except NotFound:
            return {}
        except StoreError as exc:
            raise IpamRefused(exc.message) from None


class FakeDataplane:
    """The host, faked but for published ports' sockets: those are real (bound, never
    listening), so conflicts with the machine's own sockets are real too."""

    def __init__(self, tenants=("red", "blue"), host: str = "host1",
                 controller: FakeController | None = None) -> None:
        self.host = host
        self.controller = controller or FakeController()
        self.docker_up = True
        self.docker_knows: dict[str, str] = {}      # endpoint id -> address (running)
        self.store: dict[str, str] = {}
        self.ports: dict[str, dict] = {}
        # what the controller says: tenants (default networks, no gateway) by name
        self.segments: dict[str, Segment] = {
            t: Segment(t, True, t, 1000 + i) for i, t in enumerate(tenants)}
        self.controller_up = True
        self.fail_save = False
        self.names: dict[str, str] = {}      # what Docker would say a network is called
        self.containers: dict[str, str] = {}     # endpoint id -> container name (Docker)
        self.nat: list[tuple[bool, list]] = []    # publish calls: (add, records)

    def load(self):
        return dict(self.store)

    def save(self, put, delete):
        if self.fail_save:
            raise RuntimeError("ovsdb-server went away")
        self.store.update(put)
        for k in delete:
            self.store.pop(k, None)

    def plug(self, port, peer, mac, tenant, container, extra, ips, port_security):
        self.ports[port] = {"peer": peer, "mac": mac, "tenant": tenant, "ips": ips,
                            "port_security": port_security, **extra}

    def unplug(self, port):
        self.ports.pop(port, None)

    def segment(self, name):
        if not self.controller_up:
            return None
        return self.segments.get(name, Segment(name, exists=False))

    def network_name(self, network_id):
        return self.names.get(network_id)

    def ipam(self, op, network, args):
        return self.controller.call(self.host, op, network, args)

    def in_use(self, network_ids):
        if not self.docker_up:
            return None
        addrs = set(self.docker_knows.values()) | {
            a for port in self.ports.values() for a in port["ips"]}
        eids = set(self.docker_knows) | {port.get("weft-docker-endpoint", "")
                                         for port in self.ports.values()}
        return addrs, eids

    def container_name(self, network_id, endpoint_id):
        return self.containers.get(endpoint_id)

    def reserve(self, proto, host_ip, port):
        return reserve_port(proto, host_ip, port)

    def publish(self, records, add):
        self.nat.append((add, list(records)))


def plugin(dp=None, **kw) -> Plugin:
    counter = itertools.count()
    dp = dp or FakeDataplane()
    return Plugin(dp, new_token=lambda: f"t{next(counter)}", host=dp.host, **kw)


def call(p: Plugin, name: str, **req) -> dict:
    resp = p.handle("/" + name, req)
    assert "Err" not in resp and "Error" not in resp, resp
    return resp


def error(p: Plugin, name: str, **req) -> str:
    """The refusal, read from the field Docker reads for this protocol."""
    resp = p.handle("/" + name, req)
    return resp["Error" if name.startswith("IpamDriver.") else "Err"]


def network(p: Plugin, nid: str, tenant: str, subnet="10.10.0.0/24", ip_range="",
            gateway="", **opts: str) -> str:
    """What `docker network create -d weft --ipam-driver weft -o tenant=T --subnet S
    [--gateway G]` does (``opts``: more ``-o`` options; tenant "": none)."""
    pool = call(p, "IpamDriver.RequestPool", AddressSpace="weft", Pool=subnet,
                SubPool=ip_range, Options={}, V6=False)["PoolID"]
    gw = call(p, "IpamDriver.RequestAddress", PoolID=pool, Address=gateway,
              Options={"RequestAddressType": GATEWAY_REQUEST})["Address"]
    generic = {"tenant": tenant, **opts} if tenant else opts
    call(p, "NetworkDriver.CreateNetwork", NetworkID=nid,
         Options={GENERIC: generic, "com.docker.network.enable_ipv6": False},
         IPv4Data=[{"AddressSpace": "weft", "Pool": subnet, "Gateway": gw}], IPv6Data=[])
    return pool


def run(p: Plugin, nid: str, pool: str, eid: str) -> dict:
    """What `docker run --network N` does: address, endpoint, join."""
    addr = call(p, "IpamDriver.RequestAddress", PoolID=pool, Address="", Options={})["Address"]
    mac = call(p, "NetworkDriver.CreateEndpoint", NetworkID=nid, EndpointID=eid,
               Interface={"Address": addr, "AddressIPv6": "", "MacAddress": ""},
               Options={})["Interface"]["MacAddress"]
    join = call(p, "NetworkDriver.Join", NetworkID=nid, EndpointID=eid,
                SandboxKey=f"/var/run/docker/netns/{eid[:12]}", Options={})
    return {"addr": addr, "mac": mac, "join": join}


def stop(p: Plugin, nid: str, pool: str, eid: str, addr: str) -> None:
    """What `docker rm` does: leave, delete the endpoint, release the address."""
    call(p, "NetworkDriver.Leave", NetworkID=nid, EndpointID=eid)
    call(p, "NetworkDriver.DeleteEndpoint", NetworkID=nid, EndpointID=eid)
    call(p, "IpamDriver.ReleaseAddress", PoolID=pool, Address=addr.split("/")[0])


def test_activate_and_capabilities():
    p = plugin()
    assert set(call(p, "Plugin.Activate")["Implements"]) == {"NetworkDriver", "IpamDriver"}
    assert call(p, "NetworkDriver.GetCapabilities")["Scope"] == "local"
    assert call(p, "IpamDriver.GetCapabilities")["RequiresRequestReplay"] is False
    assert call(p, "IpamDriver.GetDefaultAddressSpaces")["LocalDefaultAddressSpace"]
    for name in ("DiscoverNew", "DiscoverDelete", "ProgramExternalConnectivity",
                 "RevokeExternalConnectivity"):       # nothing to publish: nothing to say
        assert call(p, "NetworkDriver." + name, NetworkID="n", EndpointID="e") == {}


def test_join_plugs_a_labelled_veth_without_gateway_service():
    dp = FakeDataplane()
    p = plugin(dp)
    pool = network(p, "n1" * 32, "red")
    out = run(p, "n1" * 32, pool, "ab" * 32)
    assert out["addr"] == "10.10.0.2/24"          # .1 is Docker's gateway reservation
    # red has no gateway in weft: only the connected route, no docker_gwbridge
    assert out["join"]["DisableGatewayService"] is True
    assert "Gateway" not in out["join"] and "StaticRoutes" not in out["join"]
    src = out["join"]["InterfaceName"]["SrcName"]
    assert out["join"]["InterfaceName"]["DstPrefix"] == "eth"
    [(port, info)] = dp.ports.items()
    assert len(port) <= 15 and len(src) <= 15 and info["peer"] == src
    assert info["tenant"] == "red" and info["mac"] == out["mac"] == endpoint_mac("ab" * 32)
    assert int(out["mac"][:2], 16) & 3 == 2       # unicast, locally administered
    info_v = call(p, "NetworkDriver.EndpointOperInfo", NetworkID="n1" * 32,
                  EndpointID="ab" * 32)["Value"]
    assert info_v["tenant"] == "red" and info_v["port"] == port


def test_endpoints_are_plugged_with_their_address_for_port_security():
    """The address IPAM gave is what the port is bound with (issue 25: ARP spoofing)."""
    dp = FakeDataplane()
    p = plugin(dp)
    pool = network(p, "n", "red")
    run(p, "n", pool, "ab" * 32)
    [info] = dp.ports.values()
    assert info["ips"] == ("10.10.0.2",) and info["port_security"] is True


def test_port_security_off_is_a_network_option_and_anything_else_is_refused():
    dp = FakeDataplane()
    p = plugin(dp)
    pool = network(p, "n", "red", port_security="off")
    run(p, "n", pool, "ab" * 32)
    assert [i["port_security"] for i in dp.ports.values()] == [False]
    before = dict(p.networks)
    msg = error(p, "NetworkDriver.CreateNetwork", NetworkID="m",
                Options={GENERIC: {"tenant": "red", "port_security": "no"}}, IPv4Data=[])
    assert "port_security" in msg and "on" in msg and "off" in msg
    assert p.networks == before


def test_a_network_stored_before_port_security_keeps_it_on():
    dp = FakeDataplane()
    dp.store["weft-dnet-n"] = json.dumps({"id": "n", "tenant": "red", "subnet": "10.0.0.0/24"})
    assert plugin(dp).networks["n"].port_security is True


def test_a_mac_docker_gives_is_kept():
    dp = FakeDataplane()
    p = plugin(dp)
    network(p, "n", "red")
    resp = call(p, "NetworkDriver.CreateEndpoint", NetworkID="n", EndpointID="e" * 64,
                Interface={"Address": "10.10.0.9/24", "MacAddress": "02:00:00:00:00:09"})
    assert resp == {"Interface": {}}
    call(p, "NetworkDriver.Join", NetworkID="n", EndpointID="e" * 64, SandboxKey="/x")
    assert [i["mac"] for i in dp.ports.values()] == ["02:00:00:00:00:09"]


def test_two_tenants_share_a_subnet_with_separate_pools():
    dp = FakeDataplane()
    p = plugin(dp)
    red, blue = network(p, "r", "red"), network(p, "b", "blue")
    assert red != blue
    a = run(p, "r", red, "1" * 64)
    b = run(p, "b", blue, "2" * 64)
    assert a["addr"] == b["addr"] == "10.10.0.2/24"
    assert sorted(i["tenant"] for i in dp.ports.values()) == ["blue", "red"]


def test_hosts_allocate_distinct_addresses_from_blocks_they_claim():
    ctl = FakeController()
    got = []
    for i in range(3):
        p = plugin(FakeDataplane(host=f"host{i}", controller=ctl))
        pool = network(p, "n", "red")
        for j in range(20):         # more than one /28 block each
            got.append(run(p, "n", pool, f"{i}{j}".ljust(64, "0"))["addr"])
    assert len(set(got)) == 60 and "10.10.0.1/24" not in got and "10.10.0.0/24" not in got
    claims = ctl.store.ipam_claims("red")
    assert [c.host for c in claims] == ["host0", "host0", "host1", "host1", "host2", "host2"]
    assert got[0] == "10.10.0.2/24" and got[20] == "10.10.0.32/24"   # .1: every gateway


def test_ip_range_bounds_the_blocks_and_is_exhausted_cleanly():
    p = plugin()
    pool = network(p, "n", "red", subnet="10.10.0.0/24", ip_range="10.10.0.224/28")
    addrs = [call(p, "IpamDriver.RequestAddress", PoolID=pool, Address="",
                  Options={})["Address"] for _ in range(16)]
    assert addrs == [f"10.10.0.{i}/24" for i in range(224, 240)]
    err = error(p, "IpamDriver.RequestAddress", PoolID=pool, Address="")
    assert "every /28 block of 10.10.0.224/28" in err


def test_requested_addresses_and_gateways():
    p = plugin()
    pool = network(p, "n", "red", subnet="10.20.0.0/24", gateway="10.20.0.254")
    assert call(p, "IpamDriver.RequestAddress", PoolID=pool, Address="10.20.0.7",
                Options={})["Address"] == "10.20.0.7/24"
    for addr in ("10.20.0.7", "10.20.0.254", "10.20.1.1", "10.20.0.255"):
        assert error(p, "IpamDriver.RequestAddress", PoolID=pool, Address=addr, Options={})
    # a block without address claims comes first: 10.20.0.0/28 holds 10.20.0.7's
    assert call(p, "IpamDriver.RequestAddress", PoolID=pool, Address="",
                Options={})["Address"] == "10.20.0.16/24"


def test_refusals_say_what_to_type():
    p = plugin()
    assert "--subnet" in error(p, "IpamDriver.RequestPool", Pool="", V6=False)
    assert "longer than /64" in error(p, "IpamDriver.RequestPool", Pool="fd00::/80", V6=True)
    unknown = error(p, "NetworkDriver.CreateNetwork", NetworkID="n",
                    Options={GENERIC: {"tenant": "green"}})
    assert "weftctl tenant create green" in unknown
    unknown = error(p, "NetworkDriver.CreateNetwork", NetworkID="n",
                    Options={GENERIC: {"network": "green-db"}})
    assert "weftctl network create green-db --tenant" in unknown
    assert error(p, "NetworkDriver.Join", NetworkID="n", EndpointID="x")
    assert "not supported" in error(p, "NetworkDriver.AllocateNetwork")
    assert "not supported" in error(p, "IpamDriver.Nonsense")


def test_docker_rm_cleans_up_completely():
    dp = FakeDataplane()
    p = plugin(dp)
    pool = network(p, "n", "red")
    out = run(p, "n", pool, "e" * 64)
    stop(p, "n", pool, "e" * 64, out["addr"])
    assert dp.ports == {}
    assert not any(k.startswith("weft-dep-") for k in dp.store)
    # the address is free again
    assert run(p, "n", pool, "f" * 64)["addr"] == out["addr"]


def test_delete_network_releases_everything():
    dp = FakeDataplane()
    p = plugin(dp)
    pool = network(p, "n", "red")
    run(p, "n", pool, "e" * 64)
    call(p, "NetworkDriver.DeleteNetwork", NetworkID="n")
    call(p, "IpamDriver.ReleaseAddress", PoolID=pool, Address="10.10.0.1")
    call(p, "IpamDriver.ReleasePool", PoolID=pool)
    assert dp.ports == {} and dp.store == {}


def test_restart_keeps_networks_endpoints_and_allocations():
    dp = FakeDataplane()
    p = plugin(dp)
    pool = network(p, "n", "red")
    first = run(p, "n", pool, "e" * 64)
    ports_before = dict(dp.ports)
    again = plugin(dp)          # kill -9 and start: only the stored state survives
    assert dp.ports == ports_before
    second = run(again, "n", pool, "f" * 64)
    assert second["addr"] != first["addr"]
    assert call(again, "NetworkDriver.EndpointOperInfo", NetworkID="n",
                EndpointID="e" * 64)["Value"]["tenant"] == "red"
    stop(again, "n", pool, "e" * 64, first["addr"])
    assert len(dp.ports) == 1


def test_state_is_written_before_the_answer():
    dp = FakeDataplane()
    p = plugin(dp)
    pool = network(p, "n", "red")
    dp.fail_save = True
    assert "ovsdb-server went away" in error(p, "IpamDriver.RequestAddress", PoolID=pool,
                                             Address="")


def test_http_over_a_unix_socket(tmp_path: Path):
    """The shell: Docker's POST with JSON body, answered as JSON on the plugin socket."""
    path = tmp_path / "weft.sock"
    server = _Server(str(path), make_handler(plugin()))
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
            body = b"{}"
            s.sendall(b"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n" + body)
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"}"):
                data += s.recv(4096)
        head, payload = data.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200")
        assert json.loads(payload)["Implements"] == ["NetworkDriver", "IpamDriver"]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("garbage", [{"EndpointID": "nope"}, {}])
def test_leave_and_delete_of_unknown_endpoints_are_harmless(garbage):
    p = plugin()
    assert call(p, "NetworkDriver.Leave", **garbage) == {}
    assert call(p, "NetworkDriver.DeleteEndpoint", **garbage) == {}


def test_a_port_plugged_before_a_crash_is_removed_by_delete_endpoint():
    """Killed between plugging and saving: the record has no port, br0 has one."""
    dp = FakeDataplane()
    p = plugin(dp)
    pool = network(p, "n", "red")
    run(p, "n", pool, "e" * 64)
    dp.store = {k: json.dumps({**json.loads(v), "port": None}) if k.startswith("weft-dep-")
                else v for k, v in dp.store.items()}
    again = plugin(dp)
    call(again, "NetworkDriver.DeleteEndpoint", NetworkID="n", EndpointID="e" * 64)
    assert dp.ports == {}
    # and one Docker gives up on entirely (no record at all)
    run(again, "n", pool, "f" * 64)
    dp.store = {k: v for k, v in dp.store.items() if not k.startswith("weft-dep-")}
    call(plugin(dp), "NetworkDriver.DeleteEndpoint", NetworkID="n", EndpointID="f" * 64)
    assert dp.ports == {}


def test_without_tenant_option_the_tenant_is_the_network_name():
    """Docker sends no name with CreateNetwork; the first endpoint asks Docker for it."""
    dp = FakeDataplane()
    p = plugin(dp)
    pool = call(p, "IpamDriver.RequestPool", Pool="10.10.0.0/24", V6=False)["PoolID"]
    call(p, "NetworkDriver.CreateNetwork", NetworkID="n1", Options={GENERIC: {}},
         IPv4Data=[{"Pool": "10.10.0.0/24"}])
    dp.names["n1"] = "blue"                   # Docker stores the network after the call
    run(p, "n1", pool, "a" * 64)
    assert [i["tenant"] for i in dp.ports.values()] == ["blue"]
    assert json.loads(dp.store["weft-dnet-n1"])["tenant"] == "blue"     # learnt once, kept
    # a name that is no tenant, or no name at all: refused when the container starts
    for nid, name, says in (("n2", "green", "weftctl tenant create green"),
                            ("n3", None, "-o tenant=NAME")):
        call(p, "NetworkDriver.CreateNetwork", NetworkID=nid, Options={GENERIC: {}},
             IPv4Data=[{"Pool": "10.10.0.0/24"}])
        if name:
            dp.names[nid] = name
        assert says in error(p, "NetworkDriver.CreateEndpoint", NetworkID=nid,
                             EndpointID="b" * 64, Interface={"Address": "10.10.0.9/24"})


# -- the gateway (issue 22) ---------------------------------------------------------------

def routed(dp: FakeDataplane, name="red", gateway="10.10.0.1", egress=True, tenant=None,
           tenant_id=1000) -> None:
    """The controller's weft network ``name`` with a gateway (docs/routing.md)."""
    dp.segments[name] = Segment(name, True, tenant or name, tenant_id, gateway, egress)


def test_join_gives_the_weft_gateway_as_the_default_route_without_gateway_service():
    dp = FakeDataplane()
    routed(dp)
    p = plugin(dp)
    pool = network(p, "n", "red")
    join = run(p, "n", pool, "a" * 64)["join"]
    assert join["Gateway"] == "10.10.0.1"
    assert join["DisableGatewayService"] is True      # no docker_gwbridge
    assert json.loads(dp.store["weft-dnet-n"])["gateway"] == "10.10.0.1"


def test_join_follows_the_controller_and_its_last_answer_when_it_is_away():
    dp = FakeDataplane()
    p = plugin(dp)
    pool = network(p, "n", "red")
    assert "Gateway" not in run(p, "n", pool, "a" * 64)["join"]     # none configured
    routed(dp, gateway="10.10.0.1")                   # weftctl network set red --gateway
    assert run(p, "n", pool, "b" * 64)["join"]["Gateway"] == "10.10.0.1"
    dp.controller_up = False                          # the last answer stays, also restarted
    assert run(plugin(dp), "n", pool, "c" * 64)["join"]["Gateway"] == "10.10.0.1"
    dp.controller_up = True
    dp.segments["red"] = Segment("red", True, "red", 1000)     # gateway removed
    assert "Gateway" not in run(p, "n", pool, "d" * 64)["join"]


def test_join_uses_dockers_gateway_when_the_controller_never_answered():
    dp = FakeDataplane()
    routed(dp)
    dp.controller_up = False        # (its IPAM still answers: the host gets a block)
    p = plugin(dp)
    pool = network(p, "n", "red")                     # created anyway, as before
    assert run(p, "n", pool, "a" * 64)["join"]["Gateway"] == "10.10.0.1"


def test_a_docker_gateway_other_than_the_weft_gateway_is_refused():
    dp = FakeDataplane()
    routed(dp, gateway="10.10.0.254")
    p = plugin(dp)
    msg = error(p, "NetworkDriver.CreateNetwork", NetworkID="n",
                Options={GENERIC: {"tenant": "red"}},
                IPv4Data=[{"Pool": "10.10.0.0/24", "Gateway": "10.10.0.1/24"}])
    assert "10.10.0.254" in msg and "--gateway 10.10.0.254" in msg and "n" not in p.networks
    pool = network(p, "n", "red", gateway="10.10.0.254")
    out = run(p, "n", pool, "a" * 64)
    assert out["join"]["Gateway"] == "10.10.0.254" and out["addr"] == "10.10.0.1/24"
    # a network named by Docker is checked when its first container starts
    call(p, "NetworkDriver.CreateNetwork", NetworkID="m", Options={GENERIC: {}},
         IPv4Data=[{"Pool": "10.10.0.0/24", "Gateway": "10.10.0.1/24"}])
    dp.names["m"] = "red"
    msg = error(p, "NetworkDriver.CreateEndpoint", NetworkID="m", EndpointID="b" * 64,
                Interface={"Address": "10.10.0.9/24"})
    assert "--gateway 10.10.0.254" in msg and p.networks["m"].tenant == ""


def test_a_container_on_the_gateway_address_is_refused():
    """The gateway moved after Docker handed its address to a container."""
    dp = FakeDataplane()
    p = plugin(dp)
    pool = network(p, "n", "red")
    call(p, "IpamDriver.RequestAddress", PoolID=pool, Address="10.10.0.7", Options={})
    call(p, "NetworkDriver.CreateEndpoint", NetworkID="n", EndpointID="a" * 64,
         Interface={"Address": "10.10.0.7/24"})
    routed(dp, gateway="10.10.0.7")
    msg = error(p, "NetworkDriver.Join", NetworkID="n", EndpointID="a" * 64, SandboxKey="/x")
    assert "10.10.0.7 is the gateway" in msg and dp.ports == {}


def test_network_option_names_a_network_of_a_tenant():
    dp = FakeDataplane()
    routed(dp, "red")
    routed(dp, "red-db", gateway="10.20.0.1", tenant="red", tenant_id=1000)
    p = plugin(dp)
    pool = network(p, "n", "", subnet="10.20.0.0/24", network="red-db")
    out = run(p, "n", pool, "a" * 64)
    assert out["join"]["Gateway"] == "10.20.0.1"
    assert [i["tenant"] for i in dp.ports.values()] == ["red-db"]   # bound to the network
    msg = error(p, "NetworkDriver.CreateNetwork", NetworkID="m",
                Options={GENERIC: {"network": "red-db", "tenant": "blue"}},
                IPv4Data=[{"Pool": "10.20.0.0/24", "Gateway": "10.20.0.1/24"}])
    assert "belongs to tenant 'red', not 'blue'" in msg
    # -o tenant=NAME names any weft network (as `weftctl port bind` does)
    pool = network(p, "k", "red-db", subnet="10.20.0.0/24")
    assert run(p, "k", pool, "b" * 64)["join"]["Gateway"] == "10.20.0.1"


# -- published ports ----------------------------------------------------------------------

def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binding(host_port, port=5201, proto=6, host_ip="", end=None) -> dict:
    """One entry of libnetwork's com.docker.network.portmap, as the remote driver sends it."""
    return {"Proto": proto, "IP": "", "Port": port, "HostIP": host_ip, "HostPort": host_port,
            "HostPortEnd": host_port if end is None else end}


def publish(p: Plugin, eid: str, *bindings: dict) -> dict:
    return p.handle("/NetworkDriver.ProgramExternalConnectivity",
                    {"NetworkID": "n", "EndpointID": eid,
                     "Options": {"com.docker.network.portmap": list(bindings),
                                 "com.docker.network.endpoint.exposedports": []}})


def is_free(port: int, kind=socket.SOCK_STREAM) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


@pytest.fixture
def pub():
    """A plugin on host1 with red (gateway, egress, tenant id 1000) and one container
    a*64 at 10.10.0.2; its held sockets are closed at the end."""
    dp = FakeDataplane()
    routed(dp)
    p = Plugin(dp, new_token=lambda: "t", host="host1")
    pool = network(p, "n", "red")
    run(p, "n", pool, "a" * 64)
    yield p, dp, pool
    for sock in p.held.values():
        sock.close()


def test_published_ports_are_held_stored_and_natted(pub):
    p, dp, _ = pub
    tcp, udp = free_port(), free_port(socket.SOCK_DGRAM)
    assert publish(p, "a" * 64, binding(tcp, 5201), binding(udp, 5201, proto=17),
                   binding(tcp, 5201, host_ip="::")) == {}       # Docker's IPv6 twin: left out
    # one key per port, one Published each: what the agent renders table ip weft-nat from
    stored = {k: json.loads(v) for k, v in dp.store.items() if k.startswith("weft-dpub-")}
    assert stored == {
        f"weft-dpub-{'a' * 64}-tcp-{tcp}": {
            "endpoint": "a" * 64, "proto": "tcp", "host_port": tcp, "container_ip": "10.10.0.2",
            "container_port": 5201, "tenant_id": 1000, "host_ip": None, "container": ""},
        f"weft-dpub-{'a' * 64}-udp-{udp}": {
            "endpoint": "a" * 64, "proto": "udp", "host_port": udp, "container_ip": "10.10.0.2",
            "container_port": 5201, "tenant_id": 1000, "host_ip": None, "container": ""}}
    assert [Published(**d) for d in stored.values()] == p.published["a" * 64]
    assert _pub_key(Published("e", "udp", 53, "10.10.0.2", 53, 1, "192.0.2.1")) == \
        "weft-dpub-e-udp-192.0.2.1-53"
    [(add, records)] = dp.nat
    assert add is True and [(r.proto, r.host_port) for r in records] == [("tcp", tcp),
                                                                          ("udp", udp)]
    assert not is_free(tcp) and not is_free(udp, socket.SOCK_DGRAM)
    # nothing listens: the socket only holds the port
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", tcp)) != 0


@pytest.mark.parametrize("entry, says", [
    (binding(0, 5201), "give the host port: -p HOSTPORT:5201"),       # -p 5201, -P
    (binding(8080, end=8090), "ranges"),
    (binding(8080, host_ip="127.0.0.1"), "loopback"),
    (binding(8080, host_ip="127.1.2.3"), "loopback"),
    (binding(8080, proto=132), "only tcp and udp"),
    (binding(8080, host_ip="fd00::1"), "IPv4"),
    (binding(8080, host_ip="nonsense"), "not an IP address"),
])
def test_what_cannot_be_published_is_refused_with_what_to_type(pub, entry, says):
    p, dp, _ = pub
    good = free_port()
    msg = publish(p, "a" * 64, binding(good), entry)["Err"]     # all or nothing
    assert says in msg
    assert p.published == {} and p.held == {} and dp.nat == [] and is_free(good)
    assert not any(k.startswith("weft-dpub-") for k in dp.store)


@pytest.mark.parametrize("segment, says", [
    (Segment("red", True, "red", 1000, None, False), "has no gateway"),
    (Segment("red", True, "red", 1000, "10.10.0.1", False),
     "egress off; published ports need it on (weftctl network set red --egress on)"),
])
def test_networks_without_gateway_or_egress_publish_nothing(pub, segment, says):
    p, dp, pool = pub
    dp.segments["red"] = segment
    run(p, "n", pool, "b" * 64)                  # Join learns the network's settings
    assert says in publish(p, "b" * 64, binding(free_port()))["Err"]
    assert p.published == {}


def test_ports_that_cannot_be_published_are_refused_at_create_endpoint():
    """Docker calls ProgramExternalConnectivity only when Join gave a gateway: without
    this check `-p` on a network without one would be dropped without a word."""
    dp = FakeDataplane()
    p = plugin(dp)
    network(p, "n", "red")
    opts = {"com.docker.network.portmap": [binding(8080)],
            "com.docker.network.endpoint.exposedports": [{"Proto": 6, "Port": 5201}]}

    def create(eid, options):
        return p.handle("/NetworkDriver.CreateEndpoint",
                        {"NetworkID": "n", "EndpointID": eid, "Options": options,
                         "Interface": {"Address": "10.10.0.9/24"}})
    assert "has no gateway" in create("a" * 64, opts)["Err"]
    routed(dp, egress=False)
    assert "egress off" in create("a" * 64, opts)["Err"]
    routed(dp)
    assert "give the host port" in create("a" * 64, {
        "com.docker.network.portmap": [binding(0)]})["Err"]
    assert p.endpoints == {}
    assert "Err" not in create("a" * 64, opts)
    dp.segments.clear()
    assert "Err" not in create("b" * 64, {"com.docker.network.portmap": []})


def test_a_port_published_by_another_container_on_this_host_is_refused(pub):
    p, dp, pool = pub
    port = free_port()
    assert publish(p, "a" * 64, binding(port)) == {}
    run(p, "n", pool, "b" * 64)
    dp.containers["a" * 64] = "web1"
    for entry in (binding(port, 80), binding(port, 80, host_ip="192.0.2.1")):
        msg = publish(p, "b" * 64, entry)["Err"]
        assert msg == (f"weft: port {entry['HostIP'] + ':' if entry['HostIP'] else ''}{port}"
                       f"/tcp is already published on host1 (endpoint {'a' * 12}, "
                       f"container web1)")
    assert publish(p, "b" * 64, binding(port, 80, proto=17)) == {}   # udp is another port
    assert "given twice" in publish(p, "b" * 64, binding(port, 1, proto=17),
                                    binding(port, 2, proto=17))["Err"]


def test_a_port_a_host_process_holds_is_refused(pub):
    """A real socket bound on loopback (no listen, like a docker-proxy starting):
    publishing the port on every address cannot take it."""
    p, dp, _ = pub
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        port = other.getsockname()[1]
        msg = publish(p, "a" * 64, binding(port))["Err"]
    assert msg == f"weft: port {port}/tcp is in use on host1 by another process"
    assert p.published == {} and p.held == {}
    msg = publish(p, "a" * 64, binding(free_port(), host_ip="192.0.2.1"))["Err"]
    assert msg == "weft: 192.0.2.1 is not an address of host1"


@pytest.mark.parametrize("how", ["revoke", "leave", "delete", "network"])
def test_revoke_leave_or_delete_unpublishes(pub, how):
    p, dp, _ = pub
    port = free_port()
    publish(p, "a" * 64, binding(port))
    req = {"NetworkID": "n", "EndpointID": "a" * 64}
    name = {"revoke": "RevokeExternalConnectivity", "leave": "Leave",
            "delete": "DeleteEndpoint", "network": "DeleteNetwork"}[how]
    assert call(p, "NetworkDriver." + name, **req) == {}
    assert dp.nat[-1][0] is False and [r.host_port for r in dp.nat[-1][1]] == [port]
    assert p.published == {} and p.held == {} and is_free(port)
    assert not any(k.startswith("weft-dpub-") for k in dp.store)
    calls = len(dp.nat)                           # whichever comes first: the rest is a no-op
    for later in ("RevokeExternalConnectivity", "Leave", "DeleteEndpoint"):
        call(p, "NetworkDriver." + later, **req)
    assert len(dp.nat) == calls


def test_programming_again_replaces_and_keeps_what_stays(pub):
    p, dp, _ = pub
    a, b = free_port(), free_port()
    publish(p, "a" * 64, binding(a), binding(b))
    held_a = p.held[("tcp", None, a)]
    assert publish(p, "a" * 64, binding(a)) == {}         # b goes, a stays held throughout
    assert p.held[("tcp", None, a)] is held_a and is_free(b)
    assert [r.host_port for r in dp.nat[-2][1]] == [b] and dp.nat[-2][0] is False
    assert publish(p, "a" * 64) == {}                      # no -p any more
    assert p.published == {} and is_free(a)


def test_published_ports_survive_a_plugin_restart(pub):
    p, dp, pool = pub
    port = free_port()
    publish(p, "a" * 64, binding(port))
    for sock in p.held.values():                  # kill -9: the process's sockets go
        sock.close()
    p.held.clear()
    again = Plugin(dp, host="host1")
    assert list(again.published) == ["a" * 64]
    assert not is_free(port)                      # held again
    assert dp.nat[-1][0] is True and [r.host_port for r in dp.nat[-1][1]] == [port]
    run(again, "n", pool, "b" * 64)
    assert "already published" in publish(again, "b" * 64, binding(port))["Err"]
    call(again, "NetworkDriver.RevokeExternalConnectivity", NetworkID="n",
         EndpointID="a" * 64)
    assert is_free(port) and again.held == {}


def test_a_restart_keeps_a_record_whose_port_was_taken_meanwhile(pub):
    p, dp, _ = pub
    port = free_port()
    publish(p, "a" * 64, binding(port))
    for sock in p.held.values():
        sock.close()
    p.held.clear()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        again = Plugin(dp, host="host1")
        assert list(again.published) == ["a" * 64] and again.held == {}
    # records of endpoints the plugin no longer knows are dropped
    stray = {**json.loads(dp.store[f"weft-dpub-{'a' * 64}-tcp-{port}"]), "endpoint": "z" * 64,
             "host_port": 1}
    dp.store[f"weft-dpub-{'z' * 64}-tcp-1"] = json.dumps(stray)
    third = Plugin(dp, host="host1")
    assert "z" * 64 not in third.published and f"weft-dpub-{'z' * 64}-tcp-1" not in dp.store
    assert list(third.published) == ["a" * 64]
    for sock in third.held.values():
        sock.close()


# -- asking the controller (the shell's REST lookups) ---------------------------------------

def controller(docs: dict[str, object]) -> httpx.Client:
    def answer(request: httpx.Request) -> httpx.Response:
        doc = docs.get(request.url.path)
        return httpx.Response(200, json=doc) if doc is not None else \
            httpx.Response(404, json={"detail": "Not Found"})
    return httpx.Client(transport=httpx.MockTransport(answer), base_url="http://c")


def test_the_controller_is_asked_for_networks_then_tenants():
    from ovs_agent.pluginserver import _segment
    new = controller({"/v1/networks": [
        {"name": "default", "tenant": "default", "vni": 1, "gateway": None, "egress": False},
        {"name": "red", "tenant": "red", "vni": 1000, "gateway": "10.10.1.1", "egress": True,
         "default_network": True},
        {"name": "red-db", "tenant": "red", "vni": 1002, "gateway": "10.10.2.1",
         "egress": False, "default_network": False}]})
    assert _segment(new, "red") == Segment("red", True, "red", 1000, "10.10.1.1", True)
    # a further network: the tenant id is its tenant's VNI, not its own
    assert _segment(new, "red-db") == Segment("red-db", True, "red", 1000, "10.10.2.1",
                                              False)
    assert _segment(new, "green") == Segment("green", exists=False)
    # a controller from before networks: tenants only, no gateway
    old = controller({"/v1/tenants/red": {"name": "red", "vni": 7, "vlan": None,
                                          "subnet": "10.10.0.0/24", "description": ""}})
    assert _segment(old, "red") == Segment("red", True, "red", 7, None, False)
    assert _segment(old, "green") == Segment("green", exists=False)


def test_nat_elements_are_applied_only_when_the_agent_made_the_table(monkeypatch):
    from ovs_agent import nat, pluginserver
    runs: list[tuple[list[str], str | None]] = []
    table = {"there": False}

    class Done:
        def __init__(self, rc):
            self.returncode, self.stderr = rc, ""

    def fake_run(argv, input=None, **_):
        runs.append((argv, input))
        return Done(0 if argv[1] == "-f" or table["there"] else 1)
    monkeypatch.setattr(pluginserver.shutil, "which", lambda name: "/usr/sbin/nft")
    monkeypatch.setattr(pluginserver.subprocess, "run", fake_run)
    monkeypatch.setattr(nat, "publish_script",
                        lambda records, add: f"{'add' if add else 'delete'} {len(records)}\n",
                        raising=False)
    plane = pluginserver.OvsDataplane(None, None, "host1", 1450)  # type: ignore[arg-type]
    rec = Published("e", "tcp", 8080, "10.10.0.2", 80, 1000)
    plane.publish([rec], add=True)
    assert [a for a, _ in runs] == [["/usr/sbin/nft", "list", "table", "ip", "weft-nat"]]
    table["there"] = True
    plane.publish([rec], add=False)
    assert runs[-1] == (["/usr/sbin/nft", "-f", "-"], "delete 1\n")


def _dual_stack(p: Plugin, nid: str = "n6", subnet6: str = "fd00:10::/64") -> tuple[str, str]:
    """`docker network create -d weft --ipam-driver weft -o tenant=red --subnet
    10.10.0.0/24 --ipv6 --subnet SUBNET6`: (IPv4 pool, IPv6 pool)."""
    pool4 = call(p, "IpamDriver.RequestPool", Pool="10.10.0.0/24", V6=False)["PoolID"]
    gw4 = call(p, "IpamDriver.RequestAddress", PoolID=pool4, Address="",
               Options={"RequestAddressType": GATEWAY_REQUEST})["Address"]
    pool6 = call(p, "IpamDriver.RequestPool", Pool=subnet6, V6=True)["PoolID"]
    gw6 = call(p, "IpamDriver.RequestAddress", PoolID=pool6, Address="",
               Options={"RequestAddressType": GATEWAY_REQUEST})["Address"]
    call(p, "NetworkDriver.CreateNetwork", NetworkID=nid,
         Options={GENERIC: {"tenant": "red"}, "com.docker.network.enable_ipv6": True},
         IPv4Data=[{"AddressSpace": "weft", "Pool": "10.10.0.0/24", "Gateway": gw4}],
         IPv6Data=[{"AddressSpace": "weft", "Pool": subnet6, "Gateway": gw6}])
    return pool4, pool6


def test_a_dual_stack_endpoint_is_bound_with_both_addresses():
    dp = FakeDataplane()
    dp.segments["red"] = Segment("red", True, "red", 1000, subnet6="fd00:10::/64")
    p = plugin(dp)
    pool4, pool6 = _dual_stack(p)
    got = []
    for eid in ("e1" * 32, "e2" * 32):
        addr = call(p, "IpamDriver.RequestAddress", PoolID=pool4, Address="",
                    Options={})["Address"]
        addr6 = call(p, "IpamDriver.RequestAddress", PoolID=pool6, Address="",
                     Options={})["Address"]
        call(p, "NetworkDriver.CreateEndpoint", NetworkID="n6", EndpointID=eid,
             Interface={"Address": addr, "AddressIPv6": addr6, "MacAddress": ""}, Options={})
        join = call(p, "NetworkDriver.Join", NetworkID="n6", EndpointID=eid,
                    SandboxKey="/var/run/docker/netns/x", Options={})
        assert "GatewayIPv6" not in join        # the weft network has no IPv6 gateway
        got.append((addr, addr6, dp.ports[port_names(eid)[0]]["ips"]))
    (a1, v1, ips1), (a2, v2, ips2) = got
    assert ips1 == (a1.split("/")[0], v1.split("/")[0]) and ips2[1] == v2.split("/")[0]
    for v in (v1, v2):
        net6 = ipaddress.ip_network("fd00:10::/64")
        assert v.endswith("/64") and ipaddress.ip_address(v.split("/")[0]) in net6
        assert v.split("/")[0] not in ("fd00:10::", "fd00:10::1")   # gateway stays Docker's
    assert v1 != v2
    # --ip6 is honoured, and refused while taken; a release frees it
    assert error(p, "IpamDriver.RequestAddress", PoolID=pool6, Address=v1.split("/")[0],
                 Options={})
    stop(p, "n6", pool6, "e1" * 32, v1)
    assert call(p, "IpamDriver.RequestAddress", PoolID=pool6, Address=v1.split("/")[0],
                Options={})["Address"] == v1
    again = plugin(dp)                          # a restart keeps the IPv6 pool
    assert again.pools[pool6].v6 and v2.split("/")[0] in again.pools[pool6].addrs


def test_join_gives_the_ipv6_gateway_as_the_ipv6_default_route():
    """A dual-stack weft network with a gateway: Join answers GatewayIPv6, the controller's
    gateway6 (its IPv6 subnet's first address), beside Gateway."""
    dp = FakeDataplane()
    dp.segments["red"] = Segment("red", True, "red", 1000, "10.10.0.1", subnet6="fd00:10::/64",
                                 gateway6="fd00:10::1")
    p = plugin(dp)
    pool4, pool6 = _dual_stack(p)
    addr = call(p, "IpamDriver.RequestAddress", PoolID=pool4, Address="", Options={})["Address"]
    addr6 = call(p, "IpamDriver.RequestAddress", PoolID=pool6, Address="", Options={})["Address"]
    call(p, "NetworkDriver.CreateEndpoint", NetworkID="n6", EndpointID="e3" * 32,
         Interface={"Address": addr, "AddressIPv6": addr6, "MacAddress": ""}, Options={})
    join = call(p, "NetworkDriver.Join", NetworkID="n6", EndpointID="e3" * 32,
                SandboxKey="/var/run/docker/netns/x", Options={})
    assert (join["Gateway"], join["GatewayIPv6"]) == ("10.10.0.1", "fd00:10::1")


def test_ipv6_networks_must_match_the_controller_s():
    dp = FakeDataplane()
    p = plugin(dp)
    assert "weftctl network set red --subnet6 fd00:10::/64" in error(
        p, "NetworkDriver.CreateNetwork", NetworkID="x", Options={GENERIC: {"tenant": "red"}},
        IPv4Data=[{"Pool": "10.10.0.0/24", "Gateway": "10.10.0.1/24"}],
        IPv6Data=[{"Pool": "fd00:10::/64"}])
    dp.segments["red"] = Segment("red", True, "red", 1000, subnet6="fd00:99::/64")
    assert "--ipv6 --subnet fd00:99::/64" in error(
        p, "NetworkDriver.CreateNetwork", NetworkID="x", Options={GENERIC: {"tenant": "red"}},
        IPv4Data=[{"Pool": "10.10.0.0/24", "Gateway": "10.10.0.1/24"}],
        IPv6Data=[{"Pool": "fd00:10::/64"}])
    assert "IPv6-only" in error(p, "NetworkDriver.CreateNetwork", NetworkID="x",
                                Options={GENERIC: {"tenant": "red"}}, IPv4Data=[],
                                IPv6Data=[{"Pool": "fd00:99::/64"}])
    assert "--ip-range" in error(p, "IpamDriver.RequestPool", Pool="fd00::/64",
                                 SubPool="fd00::/80", V6=True)
    assert "without --ipv6" in error(
        p, "NetworkDriver.CreateEndpoint", NetworkID=network(p, "n4", "red") and "n4",
        EndpointID="e" * 64, Interface={"Address": "10.10.0.9/24",
                                        "AddressIPv6": "fd00::9/64"}, Options={})


class PooledDataplane(FakeDataplane):
    """A host whose plugin keeps br0 ports opened ahead of Join (ovs_agent.portpool)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.ready = [("wq00000000001", "wr00000000001"), ("wq00000000002", "wr00000000002")]

    def plug(self, port, peer, mac, tenant, container, extra, ips, port_security):
        port, peer = self.ready.pop(0) if self.ready else (port, peer)
        super().plug(port, peer, mac, tenant, container, extra, ips, port_security)
        return port, peer


def test_join_hands_out_a_pool_port_and_leave_removes_it():
    """Join gives Docker the pool pair's peer, the endpoint holds the pool's br0 port,
    and Leave / DeleteEndpoint remove that port (not only the endpoint's own name)."""
    dp = PooledDataplane()
    p = plugin(dp)
    pool = network(p, "n", "red")
    out = run(p, "n", pool, "ab" * 32)
    assert out["join"]["InterfaceName"] == {"SrcName": "wr00000000001", "DstPrefix": "eth"}
    info = dp.ports["wq00000000001"]
    assert info["mac"] == out["mac"] and info["ips"] == ("10.10.0.2",)
    assert info["weft-docker-endpoint"] == "ab" * 32 and info["port_security"] is True
    assert call(p, "NetworkDriver.EndpointOperInfo", NetworkID="n",
                EndpointID="ab" * 32)["Value"]["port"] == "wq00000000001"
    # a plugin restarted in between still knows which port the endpoint holds
    p2 = plugin(dp)
    call(p2, "NetworkDriver.Leave", NetworkID="n", EndpointID="ab" * 32)
    assert dp.ports == {}
    call(p2, "NetworkDriver.DeleteEndpoint", NetworkID="n", EndpointID="ab" * 32)
    # the last pool pair, then (the pool empty) the endpoint's own port as before
    run(p2, "n", pool, "cd" * 32)
    run(p2, "n", pool, "ef" * 32)
    assert sorted(dp.ports) == ["wdefefefefefe", "wq00000000002"]
