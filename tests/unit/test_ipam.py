"""Cluster-wide IPAM (cluster/ipam.py, docs/docker.md "Addresses"): the pure block and
address rules, and several hosts' plugins sharing one store (SQLite) as Docker drives
them, with the controller reachable or not: no address is ever held by two hosts."""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.ipam import (ADDRESS, BLOCK, Claim, IpamError, address_verdict, block_prefix,
                          choose_block, empty_blocks, next_free)
from tests.unit.test_dockerplugin import (FakeController, FakeDataplane, call, network,
                                          plugin, run)


# -- the pure rules ---------------------------------------------------------------------
def test_block_sizes():
    assert block_prefix("10.10.0.0/24") == 28
    assert block_prefix("10.10.0.0/22") == 26
    assert block_prefix("10.0.0.0/8") == 26
    assert block_prefix("10.10.0.0/29") == 32


def test_choose_block_skips_blocks_and_prefers_clean_ones():
    taken = [Claim("n", "10.0.0.0/28", "a"), Claim("n", "10.0.0.20/32", "b", ADDRESS)]
    assert choose_block("10.0.0.0/24", 28, taken) == ("10.0.0.32/28", ())
    full = [Claim("n", f"10.0.0.{16 * i}/28", "a") for i in range(16)]
    assert choose_block("10.0.0.0/24", 28, full) is None
    with_singles = [Claim("n", f"10.0.0.{16 * i + 1}/32", "b", ADDRESS) for i in range(16)]
    assert choose_block("10.0.0.0/24", 28, with_singles) == ("10.0.0.0/28", ("10.0.0.1",))
    with pytest.raises(IpamError):
        choose_block("10.0.0.0/24", 28, [], within="10.1.0.0/28")


def test_address_verdict_names_the_holder():
    claims = [Claim("n", "10.0.0.0/28", "a"), Claim("n", "10.0.0.40/32", "b", ADDRESS)]
    assert address_verdict("n", "10.0.0.5", "a", claims) == claims[0]
    assert address_verdict("n", "10.0.0.99", "a", claims) is None
    with pytest.raises(IpamError, match="held by host b .address."):
        address_verdict("n", "10.0.0.40", "a", claims)
    with pytest.raises(IpamError, match="held by host a .block 10.0.0.0/28."):
        address_verdict("n", "10.0.0.5", "b", claims)


def test_next_free_and_empty_blocks():
    assert next_free("10.0.0.0/24", ["10.0.0.0/30"], {"10.0.0.1"}) == "10.0.0.2"
    assert next_free("10.0.0.0/24", ["10.0.0.0/31"], {"10.0.0.1"}) is None   # .0: network
    assert empty_blocks(["10.0.0.0/28", "10.0.0.16/28"], ["10.0.0.3"]) == ["10.0.0.16/28"]


# -- hosts' plugins on one store ---------------------------------------------------------
def _hosts(n: int = 3, **kw):
    ctl = FakeController()
    dps = [FakeDataplane(host=f"host{i}", controller=ctl) for i in range(n)]
    ps = [plugin(dp, **kw) for dp in dps]
    pools = [network(p, "n", "red") for p in ps]
    return ctl, dps, ps, pools


def _addr(p, pool, want: str = "") -> dict:
    return p.handle("/IpamDriver.RequestAddress", {"PoolID": pool, "Address": want,
                                                   "Options": {}})


def test_ip_in_another_host_s_block_is_refused_naming_it():
    ctl, dps, (a, b, _), (pa, pb, _) = _hosts()
    first = run(a, "n", pa, "a" * 64)["addr"]            # host0 claims 10.10.0.0/28
    assert first == "10.10.0.2/24"
    assert "10.10.0.5 of network 'red' is held by host host0 (block 10.10.0.0/28)" in \
        _addr(b, pb, "10.10.0.5")["Error"]
    assert _addr(b, pb, "10.10.0.200")["Address"] == "10.10.0.200/24"   # in no block
    assert "held by host host1 (address)" in _addr(a, pa, "10.10.0.200")["Error"]
    assert _addr(a, pa, "10.10.0.6")["Address"] == "10.10.0.6/24"       # its own block
    assert "already in use" in _addr(a, pa, "10.10.0.6")["Error"]


def test_a_host_allocates_from_its_blocks_while_no_controller_answers():
    ctl, dps, (a, *_), (pa, *_) = _hosts()
    run(a, "n", pa, "0" * 64)
    ctl.up = False
    got = [_addr(a, pa)["Address"] for _ in range(13)]    # the rest of its /28: .3-.15
    assert got[-1] == "10.10.0.15/24"
    assert "no weft controller answers to claim another" in _addr(a, pa)["Error"]
    assert "cannot be checked cluster-wide" in _addr(a, pa, "10.10.0.99")["Error"]
    assert _addr(a, pa, "10.10.0.2")["Error"]             # its own, in use
    ctl.up = True
    assert _addr(a, pa)["Address"] == "10.10.0.16/24"


def test_empty_blocks_go_back_but_one_and_releases_wait_for_a_controller():
    ctl, dps, (a, b, _), (pa, pb, _) = _hosts()
    addrs = [_addr(a, pa)["Address"] for _ in range(30)]              # two blocks
    assert {c.cidr for c in ctl.store.ipam_claims("red", "host0")} == {"10.10.0.0/28",
                                                                       "10.10.0.16/28"}
    ctl.up = False
    for x in addrs:
        call(a, "IpamDriver.ReleaseAddress", PoolID=pa, Address=x.split("/")[0])
    assert len(ctl.store.ipam_claims("red", "host0")) == 2            # not yet told
    ctl.up = True
    _addr(a, pa)                                        # the next call gives it back
    assert [c.cidr for c in ctl.store.ipam_claims("red", "host0")] == ["10.10.0.16/28"]
    call(a, "IpamDriver.ReleasePool", PoolID=pa)        # docker network rm: all back
    assert ctl.store.ipam_claims("red", "host0") == []


def test_an_address_allocated_before_a_crash_is_reclaimed_only_when_nothing_has_it():
    now = [1000.0]
    ctl = FakeController()
    dp = FakeDataplane(controller=ctl)
    p = plugin(dp, clock=lambda: now[0], reclaim_after=60)
    pool = network(p, "n", "red")
    orphan = _addr(p, pool)["Address"]      # then the plugin died before CreateEndpoint
    again = plugin(dp, clock=lambda: now[0], reclaim_after=60)
    for _ in range(13):                     # fill the block: the orphan is not reused
        assert _addr(again, pool)["Address"] != orphan
    docker_has = _addr(again, pool)["Address"]      # from a second block
    assert docker_has == "10.10.0.16/24"
    dp.docker_knows["x" * 64] = orphan.split("/")[0]      # Docker says it is in use
    now[0] += 120
    for _ in range(15):
        assert _addr(again, pool)["Address"] != orphan
    del dp.docker_knows["x" * 64]           # gone: reclaimed at the next pass
    now[0] += 120
    assert _addr(again, pool)["Address"] == orphan    # blocks full: a pass frees it


def test_nothing_is_reclaimed_while_dockerd_cannot_be_asked():
    now = [1000.0]
    dp = FakeDataplane()
    p = plugin(dp, clock=lambda: now[0], reclaim_after=60)
    pool = network(p, "n", "red")
    orphan = _addr(p, pool)["Address"]
    dp.docker_up = False
    now[0] += 120
    assert orphan not in [_addr(p, pool)["Address"] for _ in range(20)]


def test_an_endpoint_docker_forgot_is_removed_and_its_address_reclaimed():
    now = [1000.0]
    dp = FakeDataplane()
    p = plugin(dp, clock=lambda: now[0], reclaim_after=60)
    pool = network(p, "n", "red")
    out = run(p, "n", pool, "e" * 64)
    dp.ports.clear()                        # the container died with the plugin down
    for i in range(13):
        run(p, "n", pool, f"{i}".ljust(64, "f"))
    now[0] += 120
    for i in range(13):                     # the freed ones first (one pass per interval)
        call(p, "NetworkDriver.DeleteEndpoint", NetworkID="n", EndpointID=f"{i}".ljust(64, "f"))
    now[0] += 120
    assert dp.docker_up
    assert _addr(p, pool)["Address"] == out["addr"]
    assert "e" * 64 not in p.endpoints


# -- any interleaving: no duplicate across hosts -------------------------------------------
OPS = st.lists(st.tuples(st.sampled_from(["run", "ip", "rm", "down", "up", "restart"]),
                         st.integers(0, 2), st.integers(0, 63)), min_size=10, max_size=80)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_no_address_is_ever_held_by_two_hosts(ops):
    ctl = FakeController()
    ctl.store.create_tenant("red", subnet="10.10.0.0/26")     # 16 blocks of 4: full soon
    dps = [FakeDataplane(host=f"host{i}", controller=ctl) for i in range(3)]
    ps = [plugin(dp) for dp in dps]
    pools = [network(p, "n", "red", subnet="10.10.0.0/26") for p in ps]
    live: list[dict[str, str]] = [{}, {}, {}]      # per host: endpoint -> address
    serial = 0
    for op, h, x in ops:
        p, pool = ps[h], pools[h]
        if op in ("run", "ip"):
            serial += 1
            eid = f"{serial}".rjust(64, "e")
            want = f"10.10.0.{x}" if op == "ip" else ""
            resp = _addr(p, pool, want)
            if "Error" in resp:
                continue
            call(p, "NetworkDriver.CreateEndpoint", NetworkID="n", EndpointID=eid,
                 Interface={"Address": resp["Address"]}, Options={})
            live[h][eid] = resp["Address"]
        elif op == "rm" and live[h]:
            eid = sorted(live[h])[x % len(live[h])]
            call(p, "NetworkDriver.DeleteEndpoint", NetworkID="n", EndpointID=eid)
            call(p, "IpamDriver.ReleaseAddress", PoolID=pool,
                 Address=live[h].pop(eid).split("/")[0])
        elif op in ("down", "up"):
            ctl.up = op == "up"
        elif op == "restart":
            ps[h] = plugin(dps[h])
        everywhere = [a for host in live for a in host.values()]
        assert len(everywhere) == len(set(everywhere)), live
        assert "10.10.0.1/26" not in everywhere
    blocks = [c.net for c in ctl.store.ipam_claims("red") if c.kind == BLOCK]
    assert not any(a.overlaps(b) for i, a in enumerate(blocks) for b in blocks[i + 1:])
    for h, host in enumerate(live):         # each host's addresses lie in its own claims
        mine = [c.net for c in ctl.store.ipam_claims("red", f"host{h}")]
        assert all(any(ipaddress.ip_address(a.split("/")[0]) in n for n in mine)
                   for a in host.values()), (h, host, mine)


def test_a_pool_from_before_keeps_its_slice_and_asks_no_controller():
    import json
    dp = FakeDataplane()
    dp.controller.up = False
    dp.store["weft-dpool-old"] = json.dumps({"id": "old", "subnet": "10.10.0.0/24",
                                             "first": "10.10.0.128", "last": "10.10.0.255",
                                             "gateway": "10.10.0.1", "addrs": ["10.10.0.128"]})
    p = plugin(dp)
    assert _addr(p, "old")["Address"] == "10.10.0.129/24"
    call(p, "IpamDriver.ReleaseAddress", PoolID="old", Address="10.10.0.128")
    assert _addr(p, "old")["Address"] == "10.10.0.128/24"
