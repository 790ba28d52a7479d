"""Names across hosts, the pure parts: records from dockerd's answers, the wire format,
answers scoped to one tenant, the per-container rate limit (docs/dns.md)."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ovs_agent import dnswire, names
from ovs_agent.dnswire import TYPE_A, TYPE_AAAA, TYPE_PTR
from ovs_agent.names import NameRecord, Zone

NETWORKS = [
    {"Id": "n-red", "Name": "red-web", "Driver": "weft", "Options": {"tenant": "red"}},
    {"Id": "n-red-db", "Name": "whatever", "Driver": "weft",
     "Options": {"tenant": "red", "network": "red-db"}},
    {"Id": "n-plain", "Name": "plain", "Driver": "weft", "Options": {}},
    {"Id": "n-bridge", "Name": "bridge", "Driver": "bridge", "Options": {}},
]


def inspect(name: str, *nets: tuple[str, str, list[str]]) -> dict:
    return {"Id": f"id-{name}", "Name": f"/{name}", "NetworkSettings": {"Networks": {
        f"docker-{nid}": {"NetworkID": nid, "IPAddress": ip, "Aliases": aliases}
        for nid, ip, aliases in nets}}}


def test_weft_networks_name_rule_of_the_plugin():
    assert names.weft_networks(NETWORKS) == {"n-red": "red", "n-red-db": "red-db",
                                             "n-plain": "plain"}
    assert names.weft_networks(None) == {}
    assert names.weft_networks([{"Driver": "weft"}, "x"]) == {}


def test_container_records_name_and_aliases_per_network():
    nets = names.weft_networks(NETWORKS)
    recs = names.container_records(inspect(
        "Web1", ("n-red", "10.10.1.5", ["abc123", "web", "web1"]),
        ("n-red-db", "10.10.2.5", []), ("n-bridge", "172.17.0.2", ["x"]),
        ("n-plain", "", ["noaddr"])), nets)
    assert recs == sorted([
        NameRecord("red", "web1", "10.10.1.5", "id-Web1", primary=True),
        NameRecord("red", "abc123", "10.10.1.5", "id-Web1"),
        NameRecord("red", "web", "10.10.1.5", "id-Web1"),
        NameRecord("red-db", "web1", "10.10.2.5", "id-Web1", primary=True)])


def test_container_records_refuse_what_is_no_dns_name():
    nets = names.weft_networks(NETWORKS)
    recs = names.container_records(inspect("ok", ("n-red", "10.10.1.5",
                                                   ["bad name", "a..b", "-x", "é", "y" * 64])),
                                    nets)
    assert [r.name for r in recs] == ["ok"]
    assert names.container_records("junk", nets) == []
    with pytest.raises(ValueError):
        NameRecord("red", "web", "10.10.1.999", "c")


def test_record_json_round_trip():
    r = NameRecord("red", "web1", "10.10.1.5", "c1", primary=True)
    assert NameRecord.from_json(r.to_json()) == r
    with pytest.raises(ValueError):
        NameRecord.from_json({**r.to_json(), "name": "no spaces"})


RED = Zone.build([NameRecord("red", "web1", "10.10.1.5", "c1", True),
                  NameRecord("red", "web", "10.10.1.5", "c1"),
                  NameRecord("red", "web", "10.10.1.6", "c2"),
                  NameRecord("red", "web2", "10.10.1.6", "c2", True),
                  NameRecord("red", "db.internal", "10.10.2.7", "c3")],
                 ["10.10.1.0/24", "10.10.2.0/24"])
BLUE = Zone.build([NameRecord("blue", "secret", "10.10.1.9", "c9", True)], ["10.10.1.0/24"])


def ask(zone: Zone, name: str, qtype: int = TYPE_A, turn: int = 0) -> dnswire.Answer | None:
    q = dnswire.parse_query(dnswire.query(name, qtype, qid=77))
    out = names.answer(q, zone, turn)
    if out is None:
        return None
    a = dnswire.parse_answer(out)
    assert a.id == 77 and a.flags & dnswire.FLAG_QR and a.flags & dnswire.FLAG_RD
    return a


def test_a_record_and_case():
    a = ask(RED, "WEB1")
    assert a and a.rcode == dnswire.RCODE_OK and a.a == ("10.10.1.5",)


def test_alias_of_two_containers_round_robin():
    first, second = ask(RED, "web", turn=0), ask(RED, "web", turn=1)
    assert first and second
    assert sorted(first.a) == ["10.10.1.5", "10.10.1.6"]
    assert first.a[0] != second.a[0]


def test_ptr_answers_the_container_name_not_aliases():
    a = ask(RED, dnswire.reverse_name("10.10.1.6"), TYPE_PTR)
    assert a and a.ptr == ("web2",)
    gone = ask(RED, dnswire.reverse_name("10.10.1.200"), TYPE_PTR)
    assert gone and gone.rcode == dnswire.RCODE_NXDOMAIN
    assert ask(RED, dnswire.reverse_name("8.8.8.8"), TYPE_PTR) is None    # not ours: forward


def test_unknown_single_label_is_nxdomain_dotted_is_forwarded():
    a = ask(RED, "nosuch")
    assert a and a.rcode == dnswire.RCODE_NXDOMAIN and a.a == ()
    assert ask(RED, "example.org") is None
    dotted = ask(RED, "db.internal")
    assert dotted and dotted.a == ("10.10.2.7",)


def test_other_types_of_a_known_name_are_nodata():
    a = ask(RED, "web1", TYPE_AAAA)
    assert a and a.rcode == dnswire.RCODE_OK and a.a == ()


def test_another_tenants_names_look_like_nothing():
    """blue's name, asked from red, is answered exactly as a name nobody has."""
    secret = names.answer(dnswire.parse_query(dnswire.query("secret", qid=1)), RED, 0)
    nobody = names.answer(dnswire.parse_query(dnswire.query("nosuch", qid=1)), RED, 0)
    assert secret is not None and nobody is not None
    assert secret.replace(dnswire.encode_name("secret"), b"") == \
        nobody.replace(dnswire.encode_name("nosuch"), b"")
    # the same address in both tenants: each gets its own PTR
    red9 = ask(RED, dnswire.reverse_name("10.10.1.9"), TYPE_PTR)
    blue9 = ask(BLUE, dnswire.reverse_name("10.10.1.9"), TYPE_PTR)
    assert red9 and red9.rcode == dnswire.RCODE_NXDOMAIN
    assert blue9 and blue9.ptr == ("secret",)


def test_zones_per_tenant_even_without_records():
    z = names.zones({"red": [NameRecord("red", "a", "10.0.0.1", "c")]},
                    {"red": ["10.0.0.0/24"], "blue": ["10.0.0.0/24"]})
    assert set(z) == {"red", "blue"} and z["blue"].by_name == {}


def test_wire_refuses_what_it_cannot_read():
    for bad in (b"", b"\0" * 11, dnswire.HEADER.pack(1, 0, 2, 0, 0, 0),
                dnswire.HEADER.pack(1, 0, 1, 0, 0, 0) + b"\xc0\x0c\0\1\0\1",
                dnswire.HEADER.pack(1, 0, 1, 0, 0, 0) + b"\x05ab"):
        with pytest.raises(dnswire.WireError):
            dnswire.parse_query(bad)
    err = dnswire.error(dnswire.HEADER.pack(9, 0, 2, 0, 0, 0), dnswire.RCODE_FORMERR)
    assert err and dnswire.parse_answer(err).rcode == dnswire.RCODE_FORMERR
    assert dnswire.error(b"abc", dnswire.RCODE_FORMERR) is None


def test_many_addresses_truncate_to_512_bytes():
    zone = Zone.build([NameRecord("t", "big", f"10.0.{i // 256}.{i % 256}", f"c{i}")
                       for i in range(100)])
    out = names.answer(dnswire.parse_query(dnswire.query("big")), zone, 0)
    assert out is not None and len(out) <= 512
    assert dnswire.parse_answer(out).flags & dnswire.FLAG_TC


@given(st.binary(max_size=600))
def test_garbage_never_crashes(msg: bytes):
    try:
        q = dnswire.parse_query(msg)
    except dnswire.WireError:
        return
    names.answer(q, RED, 0)


def test_ptr_names():
    assert dnswire.ptr_address("5.1.10.10.in-addr.arpa") == "10.10.1.5"
    assert dnswire.ptr_address("1.10.10.in-addr.arpa") is None
    assert dnswire.ptr_address("x.1.10.10.in-addr.arpa") is None
    assert dnswire.reverse_name("10.10.1.5") == "5.1.10.10.in-addr.arpa"


def test_ids_and_responses():
    q = dnswire.query("a", qid=0x1234)
    assert dnswire.response_id(q) is None
    r = names.answer(dnswire.parse_query(q), RED, 0)
    assert r is not None and dnswire.response_id(r) == 0x1234
    assert struct.unpack("!H", dnswire.with_id(r, 5)[:2])[0] == 5


def test_token_bucket_one_key_cannot_spend_anothers():
    b = names.TokenBucket(rate=10, burst=5)
    assert sum(b.allow("flood", 0.0) for _ in range(100)) == 5
    assert b.allow("quiet", 0.0)
    assert not b.allow("flood", 0.05)
    assert b.allow("flood", 0.2)            # refilled 2 tokens
    small = names.TokenBucket(rate=1, burst=1, max_keys=2)
    for k in range(10):
        small.allow(k, 0.0)
    assert len(small._state) <= 2
