"""The resolver's socket side on loopback (real UDP sockets, no root): the tenant comes
from the interface, answers, forwarding to an upstream, spoofed answers, a flood."""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovs_agent import dnswire, names, resolver
from ovs_agent.names import NameRecord, Zone

# run in the main session, not beside the lab tests (tests/conftest.py): it bounds time (rate limits, floods)
pytestmark = pytest.mark.foreground

LO = socket.if_nametoindex("lo")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Upstream:
    """A tiny DNS server standing for the host's own resolver: example.org -> 192.0.2.1."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.2", 0))
        self.port = self.sock.getsockname()[1]
        self.asked: list[str] = []
        self.sock.settimeout(0.2)
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                msg, peer = self.sock.recvfrom(4096)
            except OSError:
                continue
            q = dnswire.parse_query(msg)
            self.asked.append(q.name)
            out = dnswire.reply(q, a=("192.0.2.1",)) if q.name == "example.org" \
                else dnswire.reply(q, dnswire.RCODE_NXDOMAIN)
            self.sock.sendto(out, peer)

    def close(self) -> None:
        self._stop = True
        self.thread.join()
        self.sock.close()


@pytest.fixture
def served() -> Iterator[tuple[resolver.Resolver, Upstream]]:
    up = Upstream()
    r = resolver.Resolver(address="127.0.0.1", port=free_port(), upstream_port=up.port,
                          servers=lambda: ["127.0.0.2"], rate=20, burst=20,
                          ifname=lambda i: "wx-7" if i == LO else None)
    r.zones = {7: Zone.build([NameRecord("red", "web1", "10.10.1.5", "c1", True),
                              NameRecord("red", "web", "10.10.1.5", "c1"),
                              NameRecord("red", "web", "10.10.1.6", "c2")],
                             ["10.10.1.0/24"])}
    r.start()
    yield r, up
    r.stop()
    up.close()


def ask(r: resolver.Resolver, name: str, qtype: int = dnswire.TYPE_A, src: str = "127.0.0.1",
        timeout: float = 1.0) -> dnswire.Answer | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        s.settimeout(timeout)
        s.sendto(dnswire.query(name, qtype, qid=4242), (r.address, r.port))
        try:
            msg, peer = s.recvfrom(4096)
        except TimeoutError:
            return None
    assert peer == (r.address, r.port)
    a = dnswire.parse_answer(msg)
    assert a.id == 4242
    return a


def test_answers_the_tenants_names(served):
    r, up = served
    a = ask(r, "web1")
    assert a and a.a == ("10.10.1.5",)
    both = ask(r, "web")
    assert both and sorted(both.a) == ["10.10.1.5", "10.10.1.6"]
    ptr = ask(r, dnswire.reverse_name("10.10.1.5"), dnswire.TYPE_PTR)
    assert ptr and ptr.ptr == ("web1",)
    nx = ask(r, "nosuch")
    assert nx and nx.rcode == dnswire.RCODE_NXDOMAIN
    assert up.asked == []                   # none of these left the host


def test_forwards_the_rest_to_the_hosts_resolver(served):
    r, up = served
    a = ask(r, "example.org")
    assert a and a.a == ("192.0.2.1",) and up.asked == ["example.org"]
    nx = ask(r, "nothing.example")
    assert nx and nx.rcode == dnswire.RCODE_NXDOMAIN


def test_not_a_tenant_interface_gets_nothing(served):
    r, _ = served
    r.zones = {8: r.zones[7]}               # lo is wx-7; tenant 7 is not served now
    assert ask(r, "web1", timeout=0.3) is None
    assert r.dropped >= 1


def test_spoofed_answers_are_never_relayed(served):
    """A container answering in the resolver's place: an answer sent to the resolver is
    dropped, and an answer to the forwarding socket from anyone but the server asked
    (even with the right id) is dropped; the real answer still arrives."""
    r, up = served
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        q = dnswire.parse_query(dnswire.query("web1", qid=1))
        s.sendto(dnswire.reply(q, a=("6.6.6.6",)), (r.address, r.port))
    time.sleep(0.1)
    assert r.dropped >= 1
    assert r._up is not None
    forwarder = r._up.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.bind(("127.0.0.1", 0))
        client.settimeout(2)
        client.sendto(dnswire.query("example.org", qid=9), (r.address, r.port))
        deadline = time.monotonic() + 1
        while not r._pending and time.monotonic() < deadline:
            time.sleep(0.001)
        for rid in list(r._pending):        # every id the forwarder waits for, spoofed
            q = dnswire.parse_query(dnswire.query("example.org", qid=rid))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as spoof:
                spoof.sendto(dnswire.reply(q, a=("6.6.6.6",)), ("127.0.0.1", forwarder))
        msg, _ = client.recvfrom(4096)
    assert dnswire.parse_answer(msg).a == ("192.0.2.1",)


def test_a_flood_from_one_container_leaves_another_resolving(served):
    """One source sends 1,000 queries/s for the whole test (20 times its bucket);
    another source resolves every time.  An unpaced flood is the host firewall's to cut
    (its per-source limit keeps it out of the socket's queue: docs/dns.md)."""
    r, _ = served
    query = dnswire.query("web1")
    flooder = subprocess.Popen([sys.executable, "-c", (
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.bind(('127.0.0.3', 0))\n"
        "import time\n"
        "while True:\n"
        f"    for _ in range(50): s.sendto({query!r}, ('{r.address}', {r.port}))\n"
        "    time.sleep(0.05)\n")])
    began = time.monotonic()
    try:
        # the flood is on (more than its bucket was refused) before the other source asks:
        # a loaded machine may take a while to start the flooder
        deadline = time.monotonic() + 20
        while r.limited <= 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.limited > 100, f"the flood never got going ({r.limited} refused)"
        ok = 0
        for _ in range(10):
            for _try in range(3):
                a = ask(r, "web1", src="127.0.0.4", timeout=1.0)
                if a is not None:
                    ok += a.a == ("10.10.1.5",)
                    break
    finally:
        flooder.kill()
        flooder.wait()
    assert ok == 10
    # the flood got its bucket's worth (burst 20 + 20/s) and no more
    assert r.answered <= 20 + 20 * (time.monotonic() - began) + 10 + 1


def test_upstreams_from_resolv_conf(tmp_path: Path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("# x\nnameserver 10.0.0.2\nnameserver 169.254.53.53\nnameserver ::1\n"
                    "nameserver 10.0.0.2\nsearch lab\n")
    assert resolver.upstreams(conf) == ["10.0.0.2"]
    assert resolver.upstreams(tmp_path / "none") == []


def test_default_zone_forwards_what_it_has_no_record_of(served):
    r, up = served
    r.zones = {7: names.Zone(authoritative=False)}
    nx = ask(r, "nosuch")
    assert nx and nx.rcode == dnswire.RCODE_NXDOMAIN and up.asked == ["nosuch"]


def test_tenant_id_of():
    assert resolver.tenant_id_of("wx-1000") == 1000
    assert resolver.tenant_id_of("wx-x") is None
    assert resolver.tenant_id_of("docker0") == resolver.DEFAULT_ZONE == 0
    assert resolver.tenant_id_of("br-1a2b") == resolver.BRIDGE_ZONE
    assert resolver.tenant_id_of("br-phy") is None and resolver.tenant_id_of("eth0") is None
    assert names.valid_name("web1")


def test_answers_go_out_marked_for_the_tenant_they_came_from():
    """An answer to a query from wx-<id> is sent with the tenant's mark, so its first
    route lookup is the tenant's table: on a host with no default route (the three-host
    ipam lab) the main table has no route to the tenant's subnets and every answer
    failed with ENETUNREACH.  Anything else goes unmarked."""
    from ovs_agent import nat
    assert resolver.reply_mark("wx-1001") == nat.mark(1001) == 0x570003E9
    assert resolver.reply_mark("wx-65535") == nat.MARK_BASE | 0xFFFF
    for other in ("docker0", "br-3f2a1b2c3d4e", "br-phy", "lo", "eth0", "wx-", "wx-x",
                  "wx-0", "wx-65536", None):
        assert resolver.reply_mark(other) == 0, other
