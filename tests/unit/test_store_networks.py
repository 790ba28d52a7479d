"""Networks inside tenants and static routes in the store (issue 22 item 1, docs/routing.md
section 0), on both backends: the upgrade from schema 7 (a SQLite file built with the old
schema, an etcd prefix holding old documents, an export of version 1), the rules, and
refusals that change nothing."""
from __future__ import annotations

import base64
import json
import secrets
import sqlite3

import pytest

from cluster.hostsfile import parse
from controller.core import Core
from controller.model import Route
from controller.store import SCHEMA_VERSION, Conflict, Invalid, NotFound, Store
from controller.store.etcd import EtcdStore
from controller.store.errors import InUse
from tests.unit.test_api import HOSTS

# What weft with schema 7 created (`.schema` of a store made by main at c4cb404, comments
# dropped): the file the upgrade starts from.
SCHEMA_7 = """
CREATE TABLE tenants (
    name TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 32),
    vni INTEGER NOT NULL UNIQUE CHECK (vni BETWEEN 1 AND 16777215),
    vlan INTEGER UNIQUE CHECK (vlan IS NULL OR vlan BETWEEN 1 AND 4094),
    subnet TEXT,
    description TEXT NOT NULL DEFAULT ''
);
CREATE TABLE bindings (
    host TEXT NOT NULL,
    port TEXT NOT NULL,
    tenant TEXT REFERENCES tenants(name),
    mode TEXT NOT NULL CHECK (mode IN ('access', 'trunk')),
    mac TEXT,
    source TEXT NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'agent')),
    trunk TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (host, port),
    CHECK (mode = 'trunk' OR (tenant IS NOT NULL AND trunk = '')),
    CHECK (mode = 'access' OR tenant IS NOT NULL OR trunk != '')
);
CREATE TABLE qos (
    id INTEGER PRIMARY KEY AUTOINCREMENT CHECK (id BETWEEN 1 AND 65535),
    kind TEXT NOT NULL CHECK (kind IN ('limit', 'rule')),
    host TEXT, port TEXT, tenant TEXT REFERENCES tenants(name), kbps INTEGER,
    burst_kb INTEGER NOT NULL DEFAULT 0, priority INTEGER, match TEXT, set_dscp INTEGER,
    queue INTEGER{QOS_V5}
);
CREATE TABLE acl_rules (
    id INTEGER PRIMARY KEY AUTOINCREMENT CHECK (id BETWEEN 1 AND 4294967295),
    tenant TEXT NOT NULL REFERENCES tenants(name),
    priority INTEGER NOT NULL CHECK (priority BETWEEN 1 AND 10000),
    action TEXT NOT NULL CHECK (action IN ('allow', 'drop')),
    direction TEXT NOT NULL CHECK (direction IN ('ingress', 'egress')),
    ip_proto TEXT, remote TEXT, local TEXT, port INTEGER, icmp_type INTEGER,
    description TEXT NOT NULL DEFAULT '',
    UNIQUE (tenant, priority)
);
CREATE TABLE acl_policy (
    tenant TEXT PRIMARY KEY REFERENCES tenants(name),
    default_action TEXT NOT NULL CHECK (default_action IN ('allow', 'deny'))
);
CREATE TABLE operator_flows (
    id INTEGER PRIMARY KEY AUTOINCREMENT CHECK (id BETWEEN 1 AND 4294967295),
    dpid INTEGER NOT NULL,
    table_id INTEGER NOT NULL CHECK (table_id BETWEEN 0 AND 253),
    priority INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 65535),
    match TEXT NOT NULL, actions TEXT NOT NULL, override INTEGER NOT NULL DEFAULT 0,
    description TEXT NOT NULL DEFAULT ''
);
CREATE INDEX bindings_tenant ON bindings(tenant);
CREATE INDEX bindings_tenant_mac ON bindings(tenant, mac);
CREATE INDEX qos_tenant ON qos(tenant);
CREATE TRIGGER tenant_not_on_a_trunk BEFORE DELETE ON tenants BEGIN
    SELECT RAISE(ABORT, 'tenant is carried on a trunk') WHERE EXISTS (
        SELECT 1 FROM bindings WHERE instr(',' || trunk || ',', ',' || OLD.name || ',') > 0);
END;
CREATE TABLE port_addresses (
    host TEXT NOT NULL, port TEXT NOT NULL, ips TEXT NOT NULL DEFAULT '[]',
    address_pairs TEXT NOT NULL DEFAULT '[]', PRIMARY KEY (host, port)
);
CREATE TRIGGER port_addresses_unbind AFTER DELETE ON bindings BEGIN
    DELETE FROM port_addresses WHERE host = old.host AND port = old.port;
END;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE registrations (name TEXT PRIMARY KEY, data TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE link_endpoints (
    mac TEXT PRIMARY KEY, host TEXT NOT NULL, ips TEXT NOT NULL DEFAULT '[]'
) WITHOUT ROWID;
INSERT INTO meta VALUES ('epoch', 'e7e7e7');
INSERT INTO tenants (name, vni) VALUES ('default', 1);
INSERT INTO tenants VALUES ('red', 1000, 10, '10.1.0.0/24', 'red team');
INSERT INTO tenants VALUES ('blue', 1001, NULL, NULL, '');
INSERT INTO tenants VALUES ('big', 70000, NULL, '10.2.0.0/24', 'VNI past a conntrack zone');
INSERT INTO tenants VALUES ('six', 1002, NULL, 'fd00::/64', '');
INSERT INTO tenants VALUES ('tiny', 1003, 11, '10.3.0.0/31', '');
INSERT INTO bindings VALUES ('h1', 'p1', 'red', 'access', '02:00:00:00:00:01', 'api', '');
INSERT INTO port_addresses VALUES ('h1', 'p1', '["10.1.0.5"]', '[]');
INSERT INTO bindings VALUES ('h1', 't1', 'blue', 'trunk', NULL, 'api', 'red,tiny');
INSERT INTO acl_rules (tenant, priority, action, direction) VALUES ('red', 10, 'drop', 'ingress');
INSERT INTO acl_policy VALUES ('red', 'deny');
INSERT INTO qos (kind, host, tenant, kbps{QOS_V5_COLS}) VALUES ('limit', 'h1', 'red', 1000{QOS_V5_VALS});
"""
QOS_V5 = ",\n    pps INTEGER, burst_pkts INTEGER NOT NULL DEFAULT 0"


def _old_file(path, version: int = 7) -> None:
    """A store file as weft with schema ``version`` (7, or 4: no packet rates) left it."""
    v5 = version >= 5
    script = SCHEMA_7.replace("{QOS_V5}", QOS_V5 if v5 else "") \
        .replace("{QOS_V5_COLS}", ", pps" if v5 else "").replace("{QOS_V5_VALS}", ", NULL" if v5 else "")
    db = sqlite3.connect(path)
    db.executescript(script + f"PRAGMA user_version = {version};")
    db.commit()
    db.close()


# What the upgrade gives each tenant: no gateway, egress off (today's meaning: a device
# may hold the first address), whatever its subnet.
UPGRADED = {"default": (None, False), "red": (None, False), "blue": (None, False),
            "big": (None, False), "six": (None, False), "tiny": (None, False)}


def _gateways(store) -> dict[str, tuple[str | None, bool]]:
    return {t.name: (t.gateway, t.egress) for t in store.tenants()}


@pytest.mark.parametrize("version", [7, 4])
def test_a_schema_7_file_is_upgraded_in_place_keeping_today_s_meaning(tmp_path, version):
    db = tmp_path / "weft.db"
    _old_file(db, version)
    s = Store(db)
    assert s._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert _gateways(s) == UPGRADED
    assert all(t.domain is None for t in s.tenants())             # every row a tenant
    assert s.routes() == [] and s.orphans() == 0 and s.epoch() == "e7e7e7"
    assert [(b.binding.port, b.binding.tenant, b.binding.trunk, b.binding.ips)
            for b in s.bindings()] == [("p1", "red", (), ("10.1.0.5",)),
                                       ("t1", "blue", ("red", "tiny"), ())]
    assert s.acl_deny() == {"red"} and len(s.acls("red")) == 1
    (limit,) = s.limits()
    assert (limit.kbps, limit.pps, limit.tenant) == (1000, None, "red")  # v4: pps added too
    Core(s, parse(HOSTS)).topology()                               # a valid model
    # the upgraded store takes networks and routes; a second open changes nothing
    s.create_network("red-db", "red", subnet="10.1.2.0/24")
    s.update_tenant("red", gateway="10.1.0.1")           # the operator turns routing on
    s.add_route("red", "10.9.0.0/16", "10.1.0.5")
    s.close()
    again = Store(db)
    assert _gateways(again)["red"] == ("10.1.0.1", False)
    assert [r.prefix for r in again.routes()] == ["10.9.0.0/16"]
    assert again.network("red-db").domain == "red"


def test_the_first_schema_gets_every_step_in_order(tmp_path):
    """A file of schema 0 (no foreign keys) is migrated, then upgraded to 8."""
    db = tmp_path / "weft.db"
    c = sqlite3.connect(db)
    c.executescript("""
        CREATE TABLE qos (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, host TEXT,
            port TEXT, tenant TEXT, kbps INTEGER, burst_kb INTEGER NOT NULL DEFAULT 0,
            priority INTEGER, match TEXT, set_dscp INTEGER, queue INTEGER);
        CREATE TABLE tenants (name TEXT PRIMARY KEY, vni INTEGER NOT NULL UNIQUE,
            vlan INTEGER UNIQUE, subnet TEXT, description TEXT NOT NULL DEFAULT '');
        CREATE TABLE bindings (host TEXT NOT NULL, port TEXT NOT NULL, tenant TEXT,
            mode TEXT NOT NULL, mac TEXT, source TEXT NOT NULL DEFAULT 'api',
            trunk TEXT NOT NULL DEFAULT '', PRIMARY KEY (host, port));
        INSERT INTO tenants VALUES ('red', 1000, 10, '10.1.0.0/24', '');
    """)
    c.commit()
    c.close()
    s = Store(db)
    assert s._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert s.tenant("red").gateway is None and s.tenant("red").egress is False


def _put_raw(store: EtcdStore, key: str, value: str) -> None:
    b64 = base64.b64encode
    store._etcd.post("/kv/put", {"key": b64((store.prefix + key).encode()).decode(),
                                 "value": b64(value.encode()).decode()})


def test_an_etcd_prefix_with_schema_7_documents_reads_as_the_sqlite_upgrade(etcd_server):
    prefix = f"/up7-{secrets.token_hex(4)}/"
    old = EtcdStore(etcd_server.endpoints(), prefix, access=etcd_server.access)
    for doc in ({"name": "red", "vni": 1000, "vlan": 10, "subnet": "10.1.0.0/24",
                 "description": "red team"},
                {"name": "blue", "vni": 1001, "vlan": None, "subnet": None, "description": ""},
                {"name": "big", "vni": 70000, "vlan": None, "subnet": "10.2.0.0/24",
                 "description": ""},
                {"name": "six", "vni": 1002, "vlan": None, "subnet": "fd00::/64",
                 "description": ""},
                {"name": "tiny", "vni": 1003, "vlan": 11, "subnet": "10.3.0.0/31",
                 "description": ""}):
        _put_raw(old, f"tenants/{doc['name']}", json.dumps(doc))
    _put_raw(old, "bindings/h1/p1", json.dumps(
        {"host": "h1", "port": "p1", "tenant": "red", "mode": "access",
         "mac": "02:00:00:00:00:01", "trunk": [], "source": "api", "ips": ["10.1.0.5"],
         "allowed_address_pairs": []}))
    old.close()
    s = EtcdStore(etcd_server.endpoints(), prefix, access=etcd_server.access)
    try:
        assert _gateways(s) == UPGRADED
        assert s.bindings()[0].binding.tenant == "red" and s.orphans() == 0
        Core(s, parse(HOSTS)).topology()
        # old documents stay as written until a write changes them (no CAS upgrade)
        raw = s._etcd.post("/kv/range", {"key": base64.b64encode(
            f"{prefix}tenants/blue".encode()).decode()})["kvs"][0]["value"]
        assert "gateway" not in base64.b64decode(raw).decode()
        s.create_network("red-db", "red", subnet="10.1.2.0/24")
        s.update_tenant("red", gateway="10.1.0.1", egress=True)
        s.add_route("red", "0.0.0.0/0", "10.1.0.5")
        other = EtcdStore(etcd_server.endpoints(), prefix, access=etcd_server.access)    # a second controller
        assert _gateways(other)["red"] == ("10.1.0.1", True)
        assert other.routes() == [Route("red", "0.0.0.0/0", "10.1.0.5")]
        assert other.network("red-db").tenant == "red"
        other.close()
    finally:
        s.close()


def test_an_export_of_version_1_imports_as_the_upgrade(make_store):
    v1 = {"format": "weft-model", "version": 1, "epoch": "e1",
          "tenants": [{"name": "red", "vni": 1000, "vlan": None, "subnet": "10.1.0.0/24",
                       "description": ""},
                      {"name": "big", "vni": 70000, "subnet": "10.2.0.0/24"}],
          "bindings": [{"host": "h1", "port": "p1", "tenant": "red", "mode": "access"}]}
    s = make_store()
    assert s.import_model(v1)["tenants"] == 2
    assert _gateways(s) == {"default": (None, False), "big": (None, False),
                            "red": (None, False)}
    assert s.export()["version"] == 5
    with pytest.raises(Invalid) as e:                 # version 1 had no routes
        make_store("other").import_model({**v1, "routes": []})
    assert e.value.field == "routes"


def _networked(s) -> None:
    """Tenant red with networks red-web (its default) ... red-db, a bound port and routes."""
    s.create_tenant("red", vlan=100, subnet="10.10.1.0/24")
    s.create_tenant("blue", subnet="10.10.1.0/24")
    s.create_network("red-db", "red", vlan=101, subnet="10.10.2.0/24", egress=False,
                     description="databases")
    s.create_network("red-lab", "red", subnet="10.10.3.0/24", gateway=None)
    s.bind("h1", "p1", "red-db", mac="02:00:00:00:00:01", ips=("10.10.2.5",))
    s.bind("h1", "t1", "blue", mode="trunk", trunk=("red", "red-db"))
    s.add_route("red", "0.0.0.0/0", "10.10.2.254", mac="02:00:00:00:00:fe")
    s.add_route("red", "192.168.0.0/16", "10.10.2.5")


def test_networks_defaults_and_round_trip(make_store, tmp_path):
    s = make_store()
    _networked(s)
    red, db, lab = s.network("red"), s.network("red-db"), s.network("red-lab")
    assert (red.gateway, red.egress, red.domain) == ("10.10.1.1", True, None)  # issue's default
    assert (db.gateway, db.egress, db.domain, db.vni) == ("10.10.2.1", False, "red", 1002)
    assert (lab.gateway, lab.egress) == (None, False)
    assert [n.name for n in s.networks("red")] == ["red", "red-db", "red-lab"]
    assert [n.name for n in s.networks()] == ["default", "blue", "red", "red-db", "red-lab"]
    with pytest.raises(NotFound) as e:
        s.tenant("red-db")                            # a network is not a tenant
    assert "network of tenant 'red'" in e.value.message
    model = s.export()
    assert [t["domain"] for t in model["tenants"]] == [None, None, "red", "red"]
    assert [r["prefix"] for r in model["routes"]] == ["0.0.0.0/0", "192.168.0.0/16"]
    dst = make_store("dst")
    dst.import_model(model)
    assert dst.export() == model and dst.networks() == s.networks()
    back = Store(tmp_path / "back.db")                # and across backends
    back.import_model(dst.export())
    assert back.export() == model
    # the pipeline gets both: core.topology() carries the networks and the routes
    topo = Core(s, parse(HOSTS)).topology()
    assert [n.name for n in topo.networks_of("red")] == ["red", "red-db", "red-lab"]
    assert len(topo.routes) == 2
    assert {t.name for t in topo.routing_tenants} == {"blue", "red"}


def test_the_model_snapshot_changes_with_networks_and_routes(make_store):
    core = Core(make_store(), parse(HOSTS))
    core.store.create_tenant("red", subnet="10.10.1.0/24")
    first = core.snapshot()
    core.store.create_network("red-db", "red", subnet="10.10.2.0/24")
    second = core.snapshot()
    assert second.version != first.version and second.topology != first.topology
    core.store.add_route("red", "10.9.0.0/16", "10.10.2.9", mac="02:00:00:00:00:09")
    third = core.snapshot()
    assert third.version != second.version
    assert third.topology.routes == (Route("red", "10.9.0.0/16", "10.10.2.9",
                                           "02:00:00:00:00:09"),)
    core.store.delete_route("red", "10.9.0.0/16")
    assert core.snapshot().topology.routes == ()


REFUSALS = [
    # (what, the call, the error, its field, words of the message)
    ("an unknown tenant", lambda s: s.create_network("n1", "ghost"), NotFound, "tenant",
     "no tenant 'ghost'"),
    ("a bad tenant name", lambda s: s.create_network("n1", "Red\n"), Invalid, "tenant",
     "not a valid tenant name"),
    ("a bad network name", lambda s: s.create_network("N1", "red"), Invalid, "name",
     "not a valid tenant name"),
    ("a network as tenant", lambda s: s.create_network("n1", "red-db"), NotFound, "tenant",
     "network of tenant 'red'"),
    ("the default tenant", lambda s: s.create_network("n1", "default"), Conflict, "tenant",
     "default tenant"),
    ("a tenant's name", lambda s: s.create_network("blue", "red"), Conflict, "name",
     "already exists"),
    ("a network's name", lambda s: s.create_tenant("red-db"), Conflict, "name",
     "network of that name"),
    ("a taken VNI", lambda s: s.create_network("n1", "red", vni=1002), Conflict, "vni",
     "network 'red-db'"),
    ("a taken VLAN", lambda s: s.create_network("n1", "red", vlan=101), Conflict, "vlan",
     "network 'red-db'"),
    ("a gateway outside", lambda s: s.create_network("n1", "red", subnet="10.20.0.0/24",
                                                    gateway="10.30.0.1"), Invalid, "gateway",
     "not a host address"),
    ("egress without gateway", lambda s: s.create_network("n1", "red", egress=True), Invalid,
     "egress", "needs a gateway"),
    ("a gateway past zone ids", lambda s: s.create_network("n1", "big", subnet="10.20.0.0/24",
                                                          gateway="10.20.0.1"),
     Conflict, "gateway", "VNI up to 65535"),
    ("a tenant with networks", lambda s: s.delete_tenant("red"), Conflict, "name",
     "networks red-db, red-lab"),
    ("a bound network", lambda s: s.delete_network("red-lab"), InUse, "name",
     "1 port binding(s): h2/p2;"),
    ("a route's network", lambda s: s.delete_network("red-db", force=True), Conflict, "name",
     "routes 0.0.0.0/0, 192.168.0.0/16"),
    ("a default network", lambda s: s.delete_network("red"), Conflict, "name",
     "delete the tenant"),
    ("the built-in network", lambda s: s.delete_network("default"), Conflict, "name",
     "built in"),
    ("a route's gateway gone", lambda s: s.update_network("red-db", gateway=None), Conflict,
     "gateway", "via 10.10.2.254"),
    ("a route's subnet gone", lambda s: s.update_network("red-db", subnet="10.10.4.0/24"),
     Conflict, "subnet", "via 10.10.2.254"),
    ("a duplicate route", lambda s: s.add_route("red", "0.0.0.0/0", "10.10.2.5"), Conflict,
     "prefix", "already has a route"),
    ("a next hop outside", lambda s: s.add_route("red", "10.8.0.0/16", "10.10.3.5",
                                                 mac="02:00:00:00:00:03"),
     Invalid, "via", "none of the networks with a gateway of tenant 'red'"),
    ("a next hop that is no host", lambda s: s.add_route("red", "10.8.0.0/16", "10.10.2.255",
                                                        mac="02:00:00:00:00:03"),
     Invalid, "via", "not a host address of 10.10.2.0/24"),
    ("a next hop that is a gateway", lambda s: s.add_route("red", "10.8.0.0/16", "10.10.1.1"),
     Invalid, "via", "gateway of network 'red'"),
    ("a next hop nobody has", lambda s: s.add_route("red", "10.8.0.0/16", "10.10.2.6"),
     Invalid, "mac", "give the next hop's mac"),
    ("a reserved next hop MAC", lambda s: s.add_route("red", "10.8.0.0/16", "10.10.2.6",
                                                      mac="0a:77:66:00:03:e8"),
     Invalid, "mac", "reserved"),
    ("a route of a network", lambda s: s.add_route("red-db", "10.8.0.0/16", "10.10.2.5"),
     NotFound, "tenant", "network of tenant"),
    ("a bad prefix", lambda s: s.add_route("red", "10.8.0.0/33", "10.10.2.5"), Invalid,
     "prefix", "not an IPv4"),
    ("a route nobody has", lambda s: s.delete_route("red", "10.7.0.0/16"), NotFound, "prefix",
     "no route to 10.7.0.0/16"),
    ("an ACL of a network", lambda s: s.add_acl("red-db", 10, "drop"), NotFound, "tenant",
     "network of tenant"),
    ("QoS of a network", lambda s: s.add_rule("red-db", 10, {}, kbps=100), NotFound, "tenant",
     "network of tenant"),
    ("a tenant limit of a network", lambda s: s.add_limit("h1", 100, tenant="red-db"),
     NotFound, "tenant", "network of tenant"),
    ("a binding to nothing", lambda s: s.bind("h1", "p9", "ghost"), NotFound, "tenant",
     "no tenant or network 'ghost'"),
]


@pytest.mark.parametrize("what, call, error, field, words", REFUSALS,
                         ids=[r[0] for r in REFUSALS])
def test_bad_requests_are_refused_clearly_and_change_nothing(make_store, what, call, error,
                                                             field, words):
    s = make_store()
    _networked(s)
    s.create_tenant("big", vni=70000)
    s.bind("h2", "p2", "red-lab")
    before, version = s.export(), s.version
    with pytest.raises(error) as e:
        call(s)
    assert (e.value.field, type(e.value)) == (field, error), e.value.message
    assert words in e.value.message, e.value.message
    assert s.export() == before and s.version == version


def test_force_deletes_follow_the_tenants(make_store):
    s = make_store()
    _networked(s)
    s.delete_route("red", "0.0.0.0/0")
    s.delete_route("red", "192.168.0.0/16")
    # a network's force unbinds its access ports and takes it off trunks
    assert s.delete_network("red-db", force=True) == 2
    assert [(b.binding.port, b.binding.trunk) for b in s.bindings()] == [("t1", ("red",))]
    # a tenant's force takes its networks, their ports and its routes with it
    s.create_network("red-db", "red", subnet="10.10.2.0/24")
    s.bind("h1", "p1", "red-db", mac="02:00:00:00:00:01", ips=("10.10.2.5",))
    s.add_route("red", "10.9.0.0/16", "10.10.2.5")
    assert s.delete_tenant("red", force=True) == 3    # p1, red on t1, the route
    assert [n.name for n in s.networks()] == ["default", "blue"]
    assert s.routes() == [] and s.orphans() == 0
    assert [(b.binding.port, b.binding.tenant, b.binding.trunk) for b in s.bindings()] == \
        [("t1", "blue", ())]


def test_patching_a_network_moves_its_gateway_with_its_subnet(make_store):
    s = make_store()
    s.create_tenant("red", subnet="10.10.1.0/24")
    s.create_network("red-db", "red", subnet="10.10.2.0/24", gateway="10.10.2.254")
    assert s.update_network("red-db", subnet="10.10.0.0/16").gateway == "10.10.2.254"  # kept
    moved = s.update_network("red-db", subnet="10.20.0.0/24")
    assert (moved.gateway, moved.egress) == ("10.20.0.1", True)
    gone = s.update_network("red-db", subnet=None)
    assert (gone.gateway, gone.egress) == (None, False)                   # egress ends too
    s.update_network("red-db", subnet="10.30.0.0/24", gateway=None)
    assert s.update_network("red-db", subnet="10.31.0.0/24").gateway is None  # kept none
    assert s.update_tenant("red", egress=False).egress is False           # default network
    assert s.update_network("red", description="web").description == "web"
    with pytest.raises(Invalid) as e:
        s.update_network("red-db", vni=5)
    assert e.value.field == "vni"
