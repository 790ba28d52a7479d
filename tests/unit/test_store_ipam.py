"""Cluster-wide IPAM in the store, on both backends (SQLite, real etcd): block claims
never overlap, --ip addresses are checked against every host's claims, releases,
a network's deletion, export/import, and the schema 8 -> 9 upgrade."""
from __future__ import annotations

import ipaddress
import sqlite3

import pytest

from cluster.ipam import ADDRESS, BLOCK, Claim
from controller.store import SCHEMA_VERSION, Conflict, Invalid, NotFound, Store


@pytest.fixture
def store(make_store):
    s = make_store()
    s.create_tenant("red", subnet="10.10.0.0/24")
    return s


def test_hosts_claim_disjoint_blocks_until_the_subnet_is_full(store):
    got = [store.claim_block("red", f"h{i % 3}", "10.10.0.0/24")[0] for i in range(16)]
    assert [c.cidr for c in got] == [f"10.10.0.{16 * i}/28" for i in range(16)]
    assert {c.kind for c in got} == {BLOCK}
    with pytest.raises(Conflict, match="every /28 block of 10.10.0.0/24 of network 'red'"):
        store.claim_block("red", "h0", "10.10.0.0/24")
    assert store.ipam_claims("red", host="h1") == [c for c in got if c.host == "h1"]


def test_a_released_block_is_claimed_again_and_only_its_holder_releases_it(store):
    a = store.claim_block("red", "h1")[0]
    b = store.claim_block("red", "h2")[0]
    with pytest.raises(Conflict, match="held by host h1, not h2"):
        store.release_block("red", a.cidr, "h2")
    store.release_block("red", a.cidr, "h1")
    with pytest.raises(NotFound):
        store.release_block("red", a.cidr, "h1")
    assert store.claim_block("red", "h3")[0].cidr == a.cidr
    assert b.cidr != a.cidr


def test_an_address_in_another_host_s_block_is_refused_naming_the_host(store):
    block = store.claim_block("red", "h1")[0]
    inside = str(ipaddress.IPv4Network(block.cidr)[5])
    with pytest.raises(Conflict, match=f"{inside} of network 'red' is held by host h1"):
        store.claim_address("red", "h2", inside)
    assert store.claim_address("red", "h1", inside) == block      # its own: no new claim
    free = store.claim_address("red", "h2", "10.10.0.200")
    assert free == Claim("red", "10.10.0.200/32", "h2", ADDRESS)
    assert store.claim_address("red", "h2", "10.10.0.200") == free  # idempotent
    with pytest.raises(Conflict, match="held by host h2"):
        store.claim_address("red", "h3", "10.10.0.200")


def test_a_block_claimed_over_an_address_claim_lists_it_and_prefers_clean_blocks(store):
    for i in range(16):         # one address claim in every /28
        store.claim_address("red", "h9", f"10.10.0.{16 * i + 3}")
    c, skip = store.claim_block("red", "h1")
    assert skip == (str(ipaddress.IPv4Network(c.cidr)[3]),)
    store.release_address("red", skip[0], "h9")
    with pytest.raises(NotFound):
        store.release_address("red", skip[0], "h9")
    with pytest.raises(Conflict, match="held by host h9, not h1"):
        store.release_address("red", "10.10.0.35", "h1")


def test_bad_requests_change_nothing(store):
    with pytest.raises(Invalid, match="not the subnet of weft network 'red'"):
        store.claim_block("red", "h1", "10.20.0.0/24")
    with pytest.raises(Invalid, match="not inside"):
        store.claim_block("red", "h1", within="10.99.0.0/26")
    with pytest.raises(NotFound):
        store.claim_block("nosuch", "h1", "10.10.0.0/24")
    with pytest.raises(Invalid):
        store.claim_block("red", "bad host!", "10.10.0.0/24")
    with pytest.raises(Invalid, match="not in 10.10.0.0/24"):
        store.claim_address("red", "h1", "10.99.0.1")
    with pytest.raises(Invalid):
        store.claim_address("red", "h1", "10.10.0.999")
    assert store.ipam_claims() == []


def test_within_an_ip_range_and_a_host_s_claims_released_at_once(store):
    c = store.claim_block("red", "h1", within="10.10.0.128/25")[0]
    assert c.cidr == "10.10.0.128/28"
    store.claim_address("red", "h1", "10.10.0.3")
    store.claim_block("red", "h2")
    assert store.release_host("h1") == 2
    assert [c.host for c in store.ipam_claims()] == ["h2"]


def test_deleting_a_network_drops_its_claims_and_export_import_carries_them(store,
                                                                             make_store):
    store.create_network("red-db", "red", subnet="10.30.0.0/24")
    store.claim_block("red-db", "h1")
    store.claim_block("red", "h1")
    store.claim_address("red", "h2", "10.10.0.250")
    doc = store.export()
    assert [c["cidr"] for c in doc["ipam"]] == ["10.10.0.0/28", "10.10.0.250/32",
                                                "10.30.0.0/28"]
    copy = make_store("copy.db")
    assert copy.import_model(doc)["ipam"] == 3
    assert copy.ipam_claims() == store.ipam_claims()
    store.delete_network("red-db")
    assert {c.network for c in store.ipam_claims()} == {"red"}
    bad = {**doc, "ipam": doc["ipam"] + [{**doc["ipam"][0], "cidr": "10.10.0.0/27"}]}
    with pytest.raises(Conflict, match="overlaps 10.10.0.0/28 .host h1.") as err:
        make_store("bad.db").import_model(bad)
    assert err.value.field == "ipam[3].cidr"


def test_a_schema_8_file_gains_the_claims_table(tmp_path):
    db = tmp_path / "weft.db"
    Store(db).close()
    raw = sqlite3.connect(db)
    raw.execute("DROP TABLE ipam_claims")
    raw.execute("PRAGMA user_version = 8")
    raw.commit()
    raw.close()
    s = Store(db)
    assert s._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    s.create_tenant("red", subnet="10.10.0.0/24")
    assert s.claim_block("red", "h1")[0].cidr == "10.10.0.0/28"
