"""table ip weft-nat as a pure value (ovs_agent.nat), checked by this machine's nft in a
network namespace of its own where root allows; the gateway list's parsing."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess

import httpx
import pytest

from ovs_agent import gateway, nat
from ovs_agent.nat import Gateway, Published

CONTRACT = {"gateways": [{"tenant": "red", "id": 1000, "port": "wx-1000",
                          "mac": "0a:77:68:00:03:e8", "next_hop_mac": "0a:77:67:00:03:e8",
                          "subnets": ["10.10.1.0/24", "10.10.2.0/24"],
                          "egress_subnets": ["10.10.1.0/24"], "conntrack_limit": 65536}]}
NFT = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft")
                         or not shutil.which("unshare"), reason="needs root and nft")


def gw(tid: int, limit: int = 0) -> Gateway:
    m = f"{tid >> 16 & 0xff:02x}:{tid >> 8 & 0xff:02x}:{tid & 0xff:02x}"
    return Gateway(f"t{tid}", tid, f"wx-{tid}", f"0a:77:68:{m}", f"0a:77:67:{m}",
                   ("10.10.1.0/24",), ("10.10.1.0/24",), limit)


PUB = [Published("ep1", "tcp", 8080, "10.10.1.2", 5201, 1001),
       Published("ep2", "udp", 8081, "10.10.1.2", 5201, 1002, "192.168.50.1")]


def nft_in_netns(*scripts: str, after: str = "") -> subprocess.CompletedProcess:
    """Apply scripts one by one in a fresh network namespace, then run `after` (nft args)."""
    cmds = [f"nft -f - <<'EOF'\n{s}EOF" for s in scripts]
    if after:
        cmds.append(f"nft {after}")
    return subprocess.run(["unshare", "-n", "sh", "-ec", "\n".join(cmds)], capture_output=True,
                          text=True, check=False, timeout=60)


def test_the_controllers_contract_parses():
    (g,) = gateway.parse_gateways(CONTRACT)
    assert (g.id, g.port, g.mark, g.zone, g.route_table) == (
        1000, "wx-1000", 0x570003E8, 1000 ^ 0x8000, 0x770003E8)
    assert g.subnets == ("10.10.1.0/24", "10.10.2.0/24") and g.conntrack_limit == 65536


def test_a_bad_gateway_entry_is_skipped_not_fatal():
    bad = dict(CONTRACT["gateways"][0], id=70000)
    wrong_port = dict(CONTRACT["gateways"][0], port="wx-1")
    out = gateway.parse_gateways({"gateways": [bad, wrong_port, *CONTRACT["gateways"]]})
    assert [g.id for g in out] == [1000]
    assert gateway.parse_gateways({"nope": 1}) == [] and gateway.parse_gateways([]) == []


def test_fetch_treats_404_as_no_gateways(monkeypatch):
    """A controller without the route (older) or that does not know the host yet."""
    def get(url, **_):
        code = 404 if "old" in url else 200
        return httpx.Response(code, json=CONTRACT, request=httpx.Request("GET", url))
    monkeypatch.setattr(httpx, "get", get)
    assert gateway.fetch("http://old:8080", "h1") == []
    assert [g.id for g in gateway.fetch("http://new:8080", "h1")] == [1000]


def test_published_refuses_what_would_break_or_inject_nft():
    with pytest.raises(ValueError):
        Published("e", "sctp", 80, "10.0.0.2", 80, 1000)
    with pytest.raises(ValueError):
        Published("e", "tcp", 0, "10.0.0.2", 80, 1000)
    with pytest.raises(ValueError):
        Published("e", "tcp", 80, "10.0.0.2; flush ruleset", 80, 1000)
    with pytest.raises(ValueError):
        Published("e", "tcp", 80, "10.0.0.2", 80, 0x10000)


def test_published_round_trips_as_the_plugins_json_record():
    for p in PUB:
        assert Published(**json.loads(json.dumps(dataclasses.asdict(p)))) == p


def test_ruleset_shape():
    text = nat.ruleset([gw(1002), gw(1001, limit=10)], PUB)
    assert text.startswith("table ip weft-nat\ndelete table ip weft-nat\n")
    # tenants: their ports, zones (flipped), marks, ownership
    assert '"wx-1001" : 33769, "wx-1002" : 33770' in text
    assert '"wx-1001" : 0x570003e9, "wx-1002" : 0x570003ea' in text
    assert '"wx-1001" . 0x570003e9' in text
    assert 'iifname "wx-*" ct original zone set iifname map @wx_zone' in text
    assert 'iifname "wx-*" ct direction reply iifname . ct mark != @wx_owner drop' in text
    assert 'iifname "wx-*" oifname != "wx-*" masquerade' in text
    # TCP/UDP: each tenant its own half of the NAT ports, random within it
    assert ('iifname "wx-1001" oifname != "wx-*" meta l4proto { tcp, udp } '
            'masquerade to :1024-33279 fully-random') in text
    assert ('iifname "wx-1002" oifname != "wx-*" meta l4proto { tcp, udp } '
            'masquerade to :33280-65535 fully-random') in text
    # the tenants' rules come before the catch-all (ICMP) one
    assert text.index('"wx-1002" oifname') < text.index('"wx-*" oifname != "wx-*" masq')
    # published: any address and one address, each with the tenant's mark
    assert "tcp . 8080 : 10.10.1.2 . 5201" in text and "tcp . 8080 : 0x570003e9" in text
    assert "192.168.50.1 . udp . 8081 : 10.10.1.2 . 5201" in text
    assert "192.168.50.1 . udp . 8081 : 0x570003ea" in text
    # a bound only where a limit is given
    assert "ct state new meta mark 0x570003e9 add @conns { meta mark ct count over 10 } drop" \
        in text
    assert "meta mark 0x570003ea add @conns" not in text


def test_port_ranges_are_disjoint_until_slices_would_be_too_small():
    assert nat.port_ranges([]) == {}
    assert nat.port_ranges([7]) == {7: (1024, 65535)}
    assert nat.port_ranges([9, 3, 9]) == {3: (1024, 33279), 9: (33280, 65535)}
    for n in (3, 10, 63):
        r = nat.port_ranges(range(1, n + 1))
        spans = sorted(r.values())
        assert spans[0][0] >= 1024 and spans[-1][1] <= 65535
        assert all(a[1] < b[0] for a, b in zip(spans, spans[1:], strict=False)), n
        assert all(hi - lo + 1 >= nat.MIN_SLICE for lo, hi in spans)
    # beyond 63 tenants: slices of MIN_SLICE reused round robin, never smaller
    r = nat.port_ranges(range(1, 201))
    assert len(set(r.values())) == 63 and r[1] == r[64] != r[2]
    assert all(hi - lo + 1 == nat.MIN_SLICE and hi <= 65535 for lo, hi in r.values())
    # the ranges are by id order, not by the order given
    assert nat.port_ranges([5, 1, 3]) == nat.port_ranges([1, 3, 5])


def test_ruleset_is_deterministic_and_duplicates_do_not_break_it():
    dup = Published("ep0", "tcp", 8080, "10.10.1.9", 80, 1002)
    a = nat.ruleset([gw(1001), gw(1002), gw(1001)], [*PUB, dup])
    assert a == nat.ruleset([gw(1002), gw(1001)], [dup, *reversed(PUB)])
    assert a.count("tcp . 8080 :") == 2            # published and its mark, once each
    assert "tcp . 8080 : 10.10.1.9 . 80" in a       # the first endpoint by name wins


@NFT
@pytest.mark.parametrize("gateways,published", [
    ([], []), ([gw(1001), gw(1002, limit=5)], PUB),
    ([gw(t, limit=100) for t in range(1, 200)], PUB), ([gw(0xFFFF)], [])],
    ids=["empty", "two", "199-tenants", "max-id"])
def test_ruleset_is_valid_nftables(gateways, published):
    res = subprocess.run(["unshare", "-n", "nft", "-c", "-f", "-"],
                         input=nat.ruleset(gateways, published), text=True,
                         capture_output=True, check=False)
    assert res.returncode == 0, res.stderr


@NFT
def test_ruleset_replaces_itself_atomically():
    res = nft_in_netns(nat.ruleset([gw(1001)], PUB), nat.ruleset([gw(1002)], []),
                       after="list table ip weft-nat")
    assert res.returncode == 0, res.stderr
    assert "wx-1002" in res.stdout and "wx-1001" not in res.stdout and "8080" not in res.stdout


@NFT
def test_publish_script_adds_and_deletes_idempotently():
    extra = [Published("ep3", "tcp", 9090, "10.10.1.3", 80, 1001),
             Published("ep4", "udp", 53, "10.10.1.3", 53, 1001, "192.168.50.1")]
    add, delete = nat.publish_script(extra, add=True), nat.publish_script(extra, add=False)
    res = nft_in_netns(nat.ruleset([gw(1001)], PUB), add, add, after="list table ip weft-nat")
    assert res.returncode == 0, res.stderr
    assert "tcp . 9090 : 10.10.1.3 . 80" in res.stdout
    assert "192.168.50.1 . udp . 53 : 0x570003e9" in res.stdout
    assert "tcp . 8080 : 10.10.1.2 . 5201" in res.stdout          # the others stay
    res = nft_in_netns(nat.ruleset([gw(1001)], PUB), add, delete, delete,
                       after="list table ip weft-nat")
    assert res.returncode == 0, res.stderr
    assert "9090" not in res.stdout and "tcp . 8080 : 10.10.1.2 . 5201" in res.stdout
    # before the agent made the table (no gateway yet): the maps are made
    res = nft_in_netns(add, after="list table ip weft-nat")
    assert res.returncode == 0 and "tcp . 9090 : 10.10.1.3 . 80" in res.stdout, res.stderr
    # then the agent's whole table replaces it (with the records it read)
    res = nft_in_netns(add, nat.ruleset([gw(1001)], extra), after="list table ip weft-nat")
    assert res.returncode == 0 and "chain masq" in res.stdout, res.stderr


@NFT
def test_publish_script_refuses_a_port_taken_by_another_container():
    """The plugin checks conflicts first; nft refuses one too rather than replace it."""
    other = Published("ep9", "tcp", 8080, "10.10.1.7", 80, 1002)
    res = nft_in_netns(nat.ruleset([gw(1001)], PUB), nat.publish_script([other], add=True))
    assert res.returncode != 0 and "File exists" in res.stderr


def test_the_agent_asks_each_api_url_and_keeps_its_list_while_none_answers(monkeypatch):
    """Failing over across the controllers' API URLs (as reports do); unreachable: the
    last list stays (egress keeps working through a controller restart) and the pass
    touches nothing before the first answer; an answer that changes the list wakes it."""
    from pathlib import Path

    from cluster.hostsfile import parse
    from ovs_agent.agent import Agent
    agent = Agent(Path("unused"), "h1", "unix:unused")
    agent.cluster = parse("controller: {openflow: [\"tcp:10.0.0.1:6653\"], api: "
                          "[\"http://a:1\", \"http://b:1\"]}\n"
                          "hosts:\n  - {name: h1, underlay_ip: 192.168.50.10}\n")
    agent.me = agent.cluster.host("h1")
    asked: list[str] = []
    answer: dict = {"a": "down", "b": "down"}

    def fetch(url: str, host: str) -> list[Gateway]:
        asked.append(url)
        what = answer[url[7]]
        if what == "down":
            raise httpx.ConnectError("refused")
        return gateway.parse_gateways(what)
    monkeypatch.setattr(gateway, "fetch", fetch)

    class NoApi:            # the pass must not touch OVSDB before the first answer
        def __getattr__(self, name):
            raise AssertionError(f"api.{name} used")
    agent._fetch_gateways()
    assert agent._gateways is None and asked == ["http://a:1", "http://b:1"]
    agent._ensure_gateways(NoApi(), 1450)
    answer["b"] = CONTRACT
    agent._fetch_gateways()
    assert [g.id for g in agent._gateways] == [1000] and agent._wake.is_set()
    agent._wake.clear()
    answer["b"] = "down"
    agent._fetch_gateways()
    assert [g.id for g in agent._gateways] == [1000] and not agent._wake.is_set()
