"""IPv6 on tenant networks (issue 25 item 2): the model (dual-stack networks, IPv6 in a
binding's ips), the store (schema 11, both encodings, export), and IPv6 port security in
the pure pipeline run through the fake switch: source addresses, Neighbour Discovery
(NS/NA/DAD), router advertisements and redirects, tenant isolation (a hypothesis
property over random IPv6 frames)."""
from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import controller.weftctl as weftctl
from cluster.hostsfile import parse
from controller.core import Core
from controller.model import Binding, ModelError, Tenant, Topology, eui64_link_local
from controller.store import SCHEMA_VERSION, Invalid, Store
from controller.store.codec import tenant_doc, tenant_of
from tests.conftest import api_client
from tests.unit.test_api_networks import HOSTS, TOKEN
from tests.unit.topologies import Lab, mesh_tunnels

# --- the model ---------------------------------------------------------------------------


def test_link_local_is_the_mac_s_eui64() -> None:
    # what Linux gives an interface with addr_gen_mode 0 (the kernel default, which
    # Docker's containers keep): U/L bit flipped, ff:fe in the middle
    assert eui64_link_local("02:00:00:00:00:01") == "fe80::ff:fe00:1"
    assert eui64_link_local("02:42:ac:11:00:02") == "fe80::42:acff:fe11:2"


def test_a_dual_stack_network_normalises_its_v6_subnet() -> None:
    t = Tenant("red", 1000, subnet="10.0.0.0/24", subnet6="FD00:10::/64")
    assert t.subnet6 == "fd00:10::/64" and t.ipv6_subnet == "fd00:10::/64"
    assert Tenant("six", 1001, subnet="fd00:6::/64").ipv6_subnet == "fd00:6::/64"
    assert Tenant("four", 1002, subnet="10.0.0.0/24").ipv6_subnet is None


@pytest.mark.parametrize("subnet,subnet6,says", [
    ("10.0.0.0/24", "10.1.0.0/24", "not an IPv6 network"),
    ("10.0.0.0/24", "fd00::/120", "longer than /64"),
    ("10.0.0.0/24", "fe80::/64", "not a unicast subnet"),
    ("10.0.0.0/24", "ff02::/16", "not a unicast subnet"),
    ("10.0.0.0/24", "fd00::1/64", "host bits set"),
    ("fd00:1::/64", "fd00:2::/64", "is IPv6 already"),
    ("10.0.0.0/24", 64, "must be an IPv6 network"),
])
def test_a_bad_v6_subnet_is_refused_naming_subnet6(subnet, subnet6, says) -> None:
    with pytest.raises(ModelError) as exc:
        Tenant("red", 1000, subnet=subnet, subnet6=subnet6)
    assert exc.value.field == "subnet6" and says in exc.value.message


def test_a_binding_holds_v6_addresses_normalised() -> None:
    b = Binding("h1", "p1", "red", mac="02:00:00:00:00:01",
                ips=("10.0.0.1", "FD00:10::0001/128", "fd00:99::/64"),
                allowed_address_pairs=(("fd00:10::100", None),))
    assert b.ips == ("10.0.0.1", "fd00:10::1", "fd00:99::/64")
    assert b.source_addresses() == {"02:00:00:00:00:01": frozenset(
        {"10.0.0.1", "fd00:10::1", "fd00:99::/64", "fd00:10::100"})}


@pytest.mark.parametrize("ip", ["fe80::1", "ff02::1", "::", "::1", "::ffff:10.0.0.1",
                                "fd00::zz", "fd00::1/129"])
def test_a_v6_address_no_port_can_own_is_refused(ip) -> None:
    with pytest.raises(ModelError) as exc:
        Binding("h1", "p1", "red", mac="02:00:00:00:00:01", ips=(ip,))
    assert exc.value.field == "ips"


# --- the store -----------------------------------------------------------------------------


def test_store_keeps_subnet6_and_refuses_a_bad_one_changing_nothing(tmp_path) -> None:
    s = Store(tmp_path / "weft.db")
    s.create_tenant("red", subnet="10.0.0.0/24", subnet6="fd00:10::/64")
    s.create_network("red-db", "red", subnet="10.0.1.0/24", subnet6="fd00:11::/64")
    with pytest.raises(Invalid) as exc:
        s.create_network("bad", "red", subnet="10.0.2.0/24", subnet6="fd00::/96")
    assert exc.value.field == "subnet6"
    with pytest.raises(Invalid) as exc:
        s.update_network("red-db", subnet6="10.9.0.0/24")
    assert exc.value.field == "subnet6"
    assert s.network("red-db").subnet6 == "fd00:11::/64" and "bad" not in \
        {t.name for t in s.tenants()}
    assert s.update_network("red-db", subnet6=None).subnet6 is None
    s.bind("h1", "p1", "red", mac="02:00:00:00:00:01")
    s.close()
    again = Store(tmp_path / "weft.db")
    assert again.tenant("red").subnet6 == "fd00:10::/64"
    model = again.export()
    assert model["version"] == 5
    assert [t["subnet6"] for t in model["tenants"]] == ["fd00:10::/64", None]
    again.import_model(model, replace=True)
    assert again.tenant("red").subnet6 == "fd00:10::/64"
    again.close()


def test_a_schema_10_file_upgrades_in_place(tmp_path) -> None:
    path = tmp_path / "old.db"
    s = Store(path)
    s.create_tenant("red", subnet="10.0.0.0/24")
    s.close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE tenants DROP COLUMN subnet6")
    db.execute("PRAGMA user_version = 10")
    db.commit()
    db.close()
    s = Store(path)
    assert s._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 12
    assert s.tenant("red").subnet6 is None and s.tenant("red").subnet == "10.0.0.0/24"
    assert s.update_tenant("red", subnet6="fd00:10::/64").subnet6 == "fd00:10::/64"
    s.close()


def test_an_etcd_document_from_before_schema_11_reads_as_ipv4_only() -> None:
    doc = tenant_doc(Tenant("red", 1000, subnet="10.0.0.0/24", subnet6="fd00:10::/64"))
    assert tenant_of(doc).subnet6 == "fd00:10::/64"
    old = {k: v for k, v in doc.items() if k != "subnet6"}
    assert tenant_of(old).subnet6 is None


@pytest.fixture
def api(make_store):
    return api_client(Core(make_store(), parse(HOSTS)), TOKEN)


def test_rest_and_weftctl_dual_stack_networks_on_both_backends(api, monkeypatch, capsys) -> None:
    monkeypatch.setattr(weftctl, "client", lambda *_: api)
    assert weftctl.main(["tenant", "create", "red", "--subnet", "10.10.1.0/24",
                         "--subnet6", "fd00:10::/64"]) == 0
    assert weftctl.main(["network", "create", "red-db", "--tenant", "red", "--subnet",
                         "10.10.2.0/24", "--subnet6", "fd00:11::/64"]) == 0
    assert weftctl.main(["network", "list"]) == 0
    assert "fd00:11::/64" in capsys.readouterr().out
    before = api.get("/v1/export").json()
    for body in ({"name": "x", "tenant": "red", "subnet": "10.10.3.0/24", "subnet6": "10.1.0.0/16"},
                 {"name": "x", "tenant": "red", "subnet6": "fd00::/100"},
                 {"name": "x", "tenant": "red", "subnet": "fd00:1::/64", "subnet6": "fd00:2::/64"}):
        r = api.post("/v1/networks", json=body)
        assert r.status_code == 422 and r.json()["field"] == "subnet6", r.text
    r = api.patch("/v1/networks/red-db", json={"subnet6": "fe80::/64"})
    assert r.status_code == 422 and r.json()["field"] == "subnet6", r.text
    r = api.post("/v1/ports", json={"host": "h1", "port": "p1", "tenant": "red",
                                    "mac": "02:00:00:00:00:01", "ips": ["fe80::5"]})
    assert r.status_code == 422 and r.json()["field"] == "ips", r.text
    assert api.get("/v1/export").json() == before
    r = api.post("/v1/ports", json={"host": "h1", "port": "p1", "tenant": "red-db",
                                    "mac": "02:00:00:00:00:01",
                                    "ips": ["10.10.2.5", "fd00:11::5"]})
    assert r.status_code in (200, 201), r.text
    assert api.get("/v1/networks/red-db").json()["subnet6"] == "fd00:11::/64"
    assert [p["ips"] for p in api.get("/v1/ports").json()] == [["10.10.2.5", "fd00:11::5"]]
    assert weftctl.main(["network", "set", "red-db", "--subnet6", "none"]) == 0
    assert api.get("/v1/networks/red-db").json()["subnet6"] is None


# --- port security --------------------------------------------------------------------------
R1, R2, R4, B1, B2, G1 = ("02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:04",
                          "02:00:00:00:00:b1", "02:00:00:00:00:b2", "02:00:00:00:00:c1")
# red and blue: dual-stack with the same subnets (tenants may overlap); green IPv4 only
RED = Tenant("red", 1000, subnet="10.0.0.0/24", subnet6="fd00:1::/64")
BLUE = Tenant("blue", 2000, subnet="10.0.0.0/24", subnet6="fd00:1::/64")
GREEN = Tenant("green", 3000, subnet="10.3.0.0/24")
A1, A2, A4 = "fd00:1::1", "fd00:1::2", "fd00:1::4"
TOPO = Topology(
    tenants=(RED, BLUE, GREEN),
    bindings=(Binding("h1", "r1", "red", mac=R1, ips=("10.0.0.1", A1)),
              Binding("h2", "r2", "red", mac=R2, ips=("10.0.0.2", A2)),
              Binding("h1", "r4", "red", mac=R4, ips=("10.0.0.4",)),      # no v6 address
              Binding("h1", "b1", "blue", mac=B1, ips=("10.0.0.1", A1)),  # same as r1's
              Binding("h2", "b2", "blue", mac=B2, ips=("10.0.0.2", A2)),
              Binding("h1", "g1", "green", mac=G1, ips=("10.3.0.1",))),
    hosts=("h1", "h2"))
PORTS = {"h1": {"r1": 1, "r4": 2, "b1": 3, "g1": 4, "tun-h2": 9},
         "h2": {"r2": 1, "b2": 3, "tun-h1": 9}}
LAB = Lab(TOPO, PORTS, mesh_tunnels(TOPO.hosts))
CLUSTER = LAB.cluster()
TENANT_OF = {(b.host, b.port): b.tenant for b in TOPO.bindings}
HOST_OF = {b.mac: (b.host, b.port) for b in TOPO.bindings}
OWN = {b.port: {*(ip for ip in b.ips if ":" in ip), eui64_link_local(b.mac or "")}
       for b in TOPO.bindings}
LL = {mac: eui64_link_local(mac) for mac in (R1, R2, R4, B1, B2, G1)}
ALL_NODES, ALL_ROUTERS = "33:33:00:00:00:01", "33:33:00:00:00:02"


def _solicited(addr: str) -> str:
    """The solicited-node multicast MAC of ``addr`` (33:33:ff + its last 24 bits)."""
    import ipaddress
    last = ipaddress.IPv6Address(addr).packed[-3:]
    return "33:33:ff:" + ":".join(f"{b:02x}" for b in last)


def _v6(src_mac: str, src: str, dst_mac: str = ALL_NODES, proto: int = 17,
        **kw: object) -> dict:
    return {"eth_src": src_mac, "eth_dst": dst_mac, "eth_type": 0x86DD, "ip_proto": proto,
            "ipv6_src": src, "ipv6_dst": "ff02::1", **kw}


def _icmp6(src_mac: str, src: str, type_: int, dst_mac: str = ALL_NODES, **kw: object) -> dict:
    return _v6(src_mac, src, dst_mac, 58, icmpv6_type=type_, icmpv6_code=0, **kw)


def _ns(src_mac: str, src: str, target: str, sll: str | None = None) -> dict:
    kw = {} if sll is None else {"ipv6_nd_sll": sll}
    return _icmp6(src_mac, src, 135, _solicited(target), ipv6_nd_target=target, **kw)


def _na(src_mac: str, src: str, target: str, tll: str | None = None,
        dst_mac: str = ALL_NODES) -> dict:
    kw = {} if tll is None else {"ipv6_nd_tll": tll}
    return _icmp6(src_mac, src, 136, dst_mac, ipv6_nd_target=target, **kw)


def _to(host: str, port: str, pkt: dict) -> set[tuple[str, str]]:
    return set(CLUSTER.deliveries(host, port, pkt))


RED_FROM_R1 = {("h1", "r4"), ("h2", "r2")}         # red's other ports, r1 sending


def test_a_port_sends_ipv6_from_its_addresses_and_its_link_local_only() -> None:
    assert _to("h1", "r1", _v6(R1, A1, R2)) == {("h2", "r2")}           # across the tunnel
    assert _to("h1", "r1", _v6(R1, LL[R1])) == RED_FROM_R1
    assert _to("h1", "r1", _v6(R1, A2, R2)) == set()                     # r2's address
    assert _to("h1", "r1", _v6(R1, LL[R2])) == set()                     # r2's link-local
    assert _to("h1", "r1", _v6(R1, "fd00:1::99")) == set()               # anything else
    assert _to("h1", "r1", _v6(R2, A2, R2)) == set()                     # r2's MAC


def test_without_v6_addresses_a_dual_stack_port_has_its_link_local_only() -> None:
    assert _to("h1", "r4", _v6(R4, LL[R4])) == {("h1", "r1"), ("h2", "r2")}
    assert _to("h1", "r4", _v6(R4, A4)) == set()
    assert _to("h1", "r4", _ns(R4, "::", LL[R4])) == {("h1", "r1"), ("h2", "r2")}


def test_on_an_ipv4_only_network_a_port_bound_with_ips_sends_no_ipv6() -> None:
    for pkt in (_v6(G1, LL[G1]), _ns(G1, "::", LL[G1]), _ns(G1, LL[G1], "fd00::9", G1)):
        assert _to("h1", "g1", pkt) == set()


def test_neighbour_solicitations_only_from_own_addresses_and_own_mac() -> None:
    assert _to("h1", "r1", _ns(R1, A1, A2, R1)) == RED_FROM_R1
    assert _to("h1", "r1", _ns(R1, LL[R1], A2)) == RED_FROM_R1            # no sll option
    assert _to("h1", "r1", _ns(R1, A1, A2, R2)) == set()                 # sll: r2's MAC
    assert _to("h1", "r1", _ns(R1, A2, A1, R1)) == set()                 # from r2's address


def test_dad_is_allowed_for_own_addresses_only() -> None:
    assert _to("h1", "r1", _ns(R1, "::", A1)) == RED_FROM_R1
    assert _to("h1", "r1", _ns(R1, "::", LL[R1])) == RED_FROM_R1
    assert _to("h1", "r1", _ns(R1, "::", A2)) == set()                   # r2's: a DAD DoS
    assert _to("h1", "r1", _ns(R1, "::", A1, R1)) == set()               # DAD has no sll


def test_neighbour_advertisements_only_for_own_addresses_with_own_mac() -> None:
    assert _to("h1", "r1", _na(R1, A1, A1, R1)) == RED_FROM_R1
    assert _to("h1", "r1", _na(R1, LL[R1], LL[R1])) == RED_FROM_R1
    assert _to("h1", "r1", _na(R1, A1, A1, R1, R2)) == {("h2", "r2")}    # solicited, unicast
    # the attack: r1 claims r2's address (unsolicited, override), any way it can
    assert _to("h1", "r1", _na(R1, A1, A2, R1)) == set()
    assert _to("h1", "r1", _na(R1, A2, A2, R1)) == set()
    assert _to("h1", "r1", _na(R1, A1, A2)) == set()
    assert _to("h1", "r1", _na(R1, A1, A1, R2)) == set()                 # tll: r2's MAC
    assert _to("h1", "r1", _na(R1, A1, A2, R1, R2)) == set()


@pytest.mark.parametrize("type_", [134, 137])
def test_router_advertisements_and_redirects_from_a_container_are_dropped(type_) -> None:
    assert _to("h1", "r1", _icmp6(R1, LL[R1], type_)) == set()
    assert _to("h1", "r1", _icmp6(R1, A1, type_, R2)) == set()


def test_router_solicitations_and_echo_pass() -> None:
    assert _to("h1", "r1", _icmp6(R1, LL[R1], 133, ALL_ROUTERS)) == RED_FROM_R1
    assert _to("h1", "r1", _icmp6(R1, A1, 128, R2)) == {("h2", "r2")}


def test_nd_multicast_is_flooded_within_the_tenant_only() -> None:
    # blue's b1 holds the same address as red's r1: its NS reaches blue's b2 only
    assert _to("h1", "b1", _ns(B1, A1, A2, B1)) == {("h2", "b2")}
    assert _to("h2", "b2", _na(B2, A2, A2, B2)) == {("h1", "b1")}


_MACS = [R1, R2, R4, B1, B2, G1, "02:00:00:00:00:99"]
_ADDRS = [A1, A2, A4, "fd00:1::99", "::", *LL.values()]
_DSTS = [ALL_NODES, ALL_ROUTERS, "ff:ff:ff:ff:ff:ff", _solicited(A1), _solicited(A2),
         R1, R2, R4, B1, B2, G1]
_SENDERS = [(b.host, b.port) for b in TOPO.bindings]


@st.composite
def _frames(draw: st.DrawFn) -> tuple[tuple[str, str], dict]:
    sender = draw(st.sampled_from(_SENDERS))
    proto = draw(st.sampled_from([58, 58, 58, 17, 6]))
    pkt = _v6(draw(st.sampled_from(_MACS)), draw(st.sampled_from(_ADDRS)),
              draw(st.sampled_from(_DSTS)), proto)
    if proto == 58:
        pkt["icmpv6_type"] = draw(st.sampled_from([128, 129, 133, 134, 135, 136, 137]))
        pkt["icmpv6_code"] = draw(st.sampled_from([0, 0, 0, 1]))
        if pkt["icmpv6_type"] in (135, 136):
            pkt["ipv6_nd_target"] = draw(st.sampled_from(_ADDRS))
            opt = "ipv6_nd_sll" if pkt["icmpv6_type"] == 135 else "ipv6_nd_tll"
            lladdr = draw(st.sampled_from([None, *_MACS]))
            if lladdr is not None:
                pkt[opt] = lladdr
    return sender, pkt


@settings(max_examples=400, deadline=None)
@given(_frames())
def test_no_ipv6_frame_crosses_tenants_or_claims_another_s_address(frame) -> None:
    (host, port), pkt = frame
    got = _to(host, port, pkt)
    mine = TENANT_OF[(host, port)]
    assert all(TENANT_OF[d] == mine for d in got), (pkt, got)
    if not got:
        return
    own = OWN[port]
    sender_mac = next(b.mac for b in TOPO.bindings if (b.host, b.port) == (host, port))
    assert pkt["eth_src"] == sender_mac
    assert pkt["ipv6_src"] in own or (pkt["ipv6_src"] == "::" and pkt.get("icmpv6_type") == 135)
    assert pkt.get("icmpv6_type") not in (134, 137)
    if pkt.get("icmpv6_type") == 136:                   # no NA for another port's address
        assert pkt["ipv6_nd_target"] in own and pkt.get("ipv6_nd_tll", sender_mac) == sender_mac
    if pkt.get("icmpv6_type") == 135:
        assert pkt.get("ipv6_nd_sll", sender_mac) == sender_mac
        if pkt["ipv6_src"] == "::":
            assert pkt["ipv6_nd_target"] in own and "ipv6_nd_sll" not in pkt
