"""The egress NAT and published ports of docs/routing.md section 3, on this machine's kernel.

A "host" namespace plays a weft host's kernel: two tenants' gateway ports ``wx-1001`` and
``wx-1002`` (veths here; their other ends stand for OVS and hold a container address, the
same 10.10.1.2 in both tenants), and an underlay link to a server namespace beyond it.
The host gets exactly what the agent gives a host (``gateway.ensure_link``,
``gateway.ensure_rules``, ``nat.ruleset``).  Proved: both tenants open the *same*
connection (10.10.1.2:40000 -> server:5201) at once and each gets its own answers, the
server sees only the host's address; published ports reach the right tenant's container
with the client's address; a tenant's conntrack limit stops it alone; a tenant cannot
inject into another tenant's connection; with a kernel-OVS style commit in the tenant's
ACL zone before the host stack (simulated), egress is still NATed.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ovs_agent import nat
from ovs_agent.nat import Gateway, Published

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"),
                                reason="needs root and nft")
ROOT = Path(__file__).resolve().parents[2]
SERVER = "192.168.50.10"
HOST = "192.168.50.1"
CONTAINER = "10.10.1.2"


def gw(tid: int, limit: int = 0) -> Gateway:
    mac = f"{tid >> 16 & 0xff:02x}:{tid >> 8 & 0xff:02x}:{tid & 0xff:02x}"
    return Gateway(f"t{tid}", tid, f"wx-{tid}", f"0a:77:68:{mac}", f"0a:77:67:{mac}",
                   ("10.10.1.0/24",), ("10.10.1.0/24",), limit)


def sh(ns: str, *argv: str, check: bool = True, timeout: float = 20,
       stdin: str | None = None) -> subprocess.CompletedProcess:
    res = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                         timeout=timeout, input=stdin, check=False)
    if check and res.returncode:
        raise AssertionError(f"{ns}: {' '.join(argv)}: {res.stderr.strip()}")
    return res


def py(ns: str, code: str, *args: str, check: bool = True, timeout: float = 20) -> str:
    return sh(ns, sys.executable, "-c", textwrap.dedent(code), *args, check=check,
              timeout=timeout).stdout


SERVE = """
import socket, sys, threading
tag = sys.argv[1]
def answer(c, a):
    with c:
        while (d := c.recv(1000)):
            c.sendall(f"{tag} saw {a[0]} said {d.decode()}".encode())
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 5201)); s.listen(128)
    while True:
        c, a = s.accept(); threading.Thread(target=answer, args=(c, a), daemon=True).start()
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); u.bind(("0.0.0.0", 5201))
    while True:
        d, a = u.recvfrom(1000); u.sendto(f"{tag} saw {a[0]} said {d.decode()}".encode(), a)
threading.Thread(target=udp, daemon=True).start(); tcp()
"""

# TCP from a fixed source port, held open across two exchanges (so both tenants'
# connections exist at once), or one UDP exchange (one datagram, never resent)
CLIENT = """
import socket, sys, time
dst, port, sport, msg, proto = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
if proto == "tcp":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if sport: s.bind(("0.0.0.0", sport))
    s.settimeout(3); s.connect((dst, port)); time.sleep(1)
    s.sendall(msg.encode()); print(s.recv(1000).decode())
    time.sleep(1); s.sendall((msg + "+").encode()); print(s.recv(1000).decode())
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    if sport: s.bind(("0.0.0.0", sport))
    s.sendto(msg.encode(), (dst, port)); print(s.recvfrom(1000)[0].decode())
"""

# Rounds of first datagrams at agreed instants: round i sends once from a new socket
# bound to BASE+i at START + i*GAP (spinning for the instant), never resends; prints the
# rounds that got no answer.  Run in both tenants at once: the same tuple, the same time.
RACE = """
import select, socket, sys, time
dst, port, base, rounds, start, gap = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                                       int(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]))
socks, got = {}, set()
def collect(until):
    while (left := until - time.time()) > 0.002:
        ready, _, _ = select.select(list(socks.values()), [], [], left - 0.002)
        for s in ready:
            s.recv(1000); got.add(next(i for i, t in socks.items() if t is s))
for i in range(rounds):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", base + i))
    socks[i] = s
    at = start + i * gap
    collect(at)
    while time.time() < at:
        pass
    s.sendto(b"r%d" % i, (dst, port))
collect(time.time() + 2)
print(" ".join(str(i) for i in range(rounds) if i not in got))
"""


class Net:
    def __init__(self) -> None:
        tag = secrets.token_hex(2)
        self.host, self.srv = f"nat{tag}.host", f"nat{tag}.srv"
        self.tenants = {1001: f"nat{tag}.t1", 1002: f"nat{tag}.t2"}
        self.procs: list[subprocess.Popen] = []

    @property
    def namespaces(self) -> list[str]:
        return [self.host, self.srv, *self.tenants.values()]

    def up(self) -> None:
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "add", ns], check=True)
            sh(ns, "ip", "link", "set", "lo", "up")
        sh(self.host, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1",
           "net.ipv4.conf.default.rp_filter=1")
        sh(self.host, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "eth0",
           "netns", self.srv)
        sh(self.host, "ip", "addr", "add", f"{HOST}/24", "dev", "up0")
        sh(self.host, "ip", "link", "set", "up0", "up")
        sh(self.srv, "ip", "addr", "add", f"{SERVER}/24", "dev", "eth0")
        sh(self.srv, "ip", "link", "set", "eth0", "up")
        for tid, ns in self.tenants.items():
            self.add_tenant(tid, ns, gw(tid))

    def add_tenant(self, tid: int, ns: str, g: Gateway) -> None:
        """wx-<id> in the host; its peer ("OVS" and a container) holds 10.10.1.2 and the
        kernel's next-hop MAC, and routes everything to the wx port's MAC."""
        sh(self.host, "ip", "link", "add", g.port, "address", g.mac, "type", "veth", "peer",
           "name", "eth0", "address", g.next_hop_mac, "netns", ns)
        sh(ns, "ip", "addr", "add", f"{CONTAINER}/24", "dev", "eth0")
        sh(ns, "ip", "link", "set", "eth0", "up")
        sh(ns, "ip", "neigh", "replace", "169.254.77.1", "lladdr", g.mac, "dev", "eth0",
           "nud", "permanent")
        sh(ns, "ip", "route", "add", "default", "via", "169.254.77.1", "dev", "eth0", "onlink")

    def apply(self, gateways: list[Gateway], published: list[Published] = ()) -> str:
        """What the agent's pass does to the kernel (gateway.py) and nft (nat.py)."""
        docs = json.dumps([{**g.__dict__, "subnets": list(g.subnets),
                            "egress_subnets": list(g.egress_subnets)} for g in gateways])
        out = py(self.host, """
            import json, sys
            sys.path.insert(0, sys.argv[2])
            from ovs_agent import gateway, nat
            gws = [nat.Gateway.from_json(d) for d in json.loads(sys.argv[1])]
            for k, v in gateway.SYSCTLS.items():
                gateway._set_sysctl(k, v)
            done = [c for g in gws for c in gateway.ensure_link(g, 1450)]
            print(json.dumps(done + gateway.ensure_rules(gws)))
            """, docs, str(ROOT))
        sh(self.host, "nft", "-f", "-", stdin=nat.ruleset(gateways, published))
        return out

    def spawn(self, ns: str, code: str, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c",
                                 textwrap.dedent(code), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc

    def down(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    n = Net()
    try:
        n.up()
        n.apply([gw(1001), gw(1002)])
        n.spawn(n.srv, SERVE, "server")
        for tid, ns in n.tenants.items():
            n.spawn(ns, SERVE, f"tenant{tid}")
        time.sleep(0.5)
        yield n
    finally:
        n.down()


def conntrack(ns: str) -> str:
    return Path("/proc/net/nf_conntrack").exists() and sh(ns, "cat", "/proc/net/nf_conntrack").stdout or ""


def test_the_agents_kernel_side_is_idempotent(net):
    assert json.loads(net.apply([gw(1001), gw(1002)])) == []
    rules = sh(net.host, "ip", "rule", "show").stdout
    assert f"fwmark {nat.mark(1001):#x} lookup {nat.ROUTE_TABLE_BASE + 1001}" in rules
    routes = sh(net.host, "ip", "route", "show", "table", str(nat.ROUTE_TABLE_BASE + 1002)).stdout
    assert "10.10.1.0/24 via 169.254.77.2 dev wx-1002 onlink" in routes


def test_two_tenants_same_address_same_connection_at_once(net):
    """The same 5-tuple from both tenants at once: two connections (zones 1001^0x8000 and
    1002^0x8000 in the original direction), two host ports, each its own answers."""
    clients = {tid: net.spawn(ns, CLIENT, SERVER, "5201", "40000", f"from{tid}", "tcp")
               for tid, ns in net.tenants.items()}
    outs = {tid: p.communicate(timeout=15) for tid, p in clients.items()}
    for tid, (out, err) in outs.items():
        assert clients[tid].returncode == 0, err
        assert out.split("\n")[:2] == [f"server saw {HOST} said from{tid}",
                                       f"server saw {HOST} said from{tid}+"], out
    table = conntrack(net.host)
    if table:
        lines = [line for line in table.splitlines() if "sport=40000 dport=5201" in line]
        assert {f"zone-orig={nat.zone(t)}" for t in net.tenants} <= {
            w for line in lines for w in line.split() if w.startswith("zone-orig")}


def test_a_rewritten_table_keeps_nated_connections(net):
    """An agent restart rewrites the whole table (one transaction): connections already
    NATed go on (their bindings live in conntrack, and the NAT hooks never go away)."""
    clients = {tid: net.spawn(ns, CLIENT, SERVER, "5201", "40010", f"keep{tid}", "tcp")
               for tid, ns in net.tenants.items()}
    time.sleep(1.5)                     # connected, first exchange done, second pending
    net.apply([gw(1001), gw(1002)])
    sh(net.host, "nft", "-f", "-", stdin=nat.ruleset([gw(1002), gw(1001)]))
    for tid, p in clients.items():
        out, err = p.communicate(timeout=15)
        assert out.split("\n")[1] == f"server saw {HOST} said keep{tid}+", err


def test_udp_and_ping_both_tenants(net):
    clients = {tid: net.spawn(ns, CLIENT, SERVER, "5201", "40001", f"u{tid}", "udp")
               for tid, ns in net.tenants.items()}
    for tid, p in clients.items():
        out, err = p.communicate(timeout=10)
        assert out.strip() == f"server saw {HOST} said u{tid}", err
    for ns in net.tenants.values():
        assert "3 received" in sh(ns, "ping", "-c3", "-i0.2", "-W1", SERVER).stdout


def test_simultaneous_first_datagrams_of_two_tenants_are_never_lost(net):
    """Both tenants send the first datagram of the same tuple (10.10.1.2:BASE+i ->
    server:5201) at the same instant, round after round, without ever resending: each
    tenant masquerades into its own port range (nat.port_ranges), so the two connections
    can never pick the same host port and the kernel never drops one at confirm."""
    rounds = 300
    start = time.time() + 1.5
    racers = {tid: net.spawn(ns, RACE, SERVER, "5201", "42000", str(rounds), repr(start),
                             "0.01")
              for tid, ns in net.tenants.items()}
    for tid, p in racers.items():
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        assert out.strip() == "", f"tenant {tid} lost rounds {out.strip()}"


def test_published_ports_reach_the_right_tenant_with_the_clients_address(net):
    pub = [Published("ep1", "tcp", 8080, CONTAINER, 5201, 1001),
           Published("ep2", "udp", 8081, CONTAINER, 5201, 1002, HOST)]
    net.apply([gw(1001), gw(1002)], pub)
    out = py(net.srv, CLIENT, HOST, "8080", "0", "pub", "tcp")
    assert out.split("\n")[0] == f"tenant1001 saw {SERVER} said pub"
    out = py(net.srv, CLIENT, HOST, "8081", "0", "pubu", "udp")
    assert out.strip() == f"tenant1002 saw {SERVER} said pubu"
    # the host's own processes (output hook): every packet, not only the first, is routed
    # to the tenant (two exchanges a second apart)
    out = py(net.host, CLIENT, HOST, "8080", "0", "local", "tcp")
    assert out.split("\n")[:2] == [f"tenant1001 saw {HOST} said local",
                                   f"tenant1001 saw {HOST} said local+"], out
    # the plugin's way: elements added and removed at once, no whole table
    extra = Published("ep3", "tcp", 9090, CONTAINER, 5201, 1002)
    sh(net.host, "nft", "-f", "-", stdin=nat.publish_script([extra], add=True))
    assert py(net.srv, CLIENT, HOST, "9090", "0", "p3", "tcp").startswith("tenant1002 saw")
    sh(net.host, "nft", "-f", "-", stdin=nat.publish_script([extra], add=False))
    assert "refused" in py(net.srv, """
        import socket
        try:
            socket.create_connection(("%s", 9090), timeout=2); print("open")
        except ConnectionRefusedError: print("refused")
        """ % HOST)
    net.apply([gw(1001), gw(1002)])


def test_a_tenant_cannot_inject_into_another_tenants_connection(net):
    """With directional zones any tenant's packet matches a zone-0 reply tuple: the
    `wx_owner` check is what stops tenant 1001 answering in 1002's published connection
    (rp_filter loose here, so nothing else would)."""
    net.apply([gw(1001), gw(1002)], [Published("ep2", "udp", 8081, CONTAINER, 5201, 1002)])
    sh(net.host, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0",
       "net.ipv4.conf.wx-1001.rp_filter=0", "net.ipv4.conf.up0.rp_filter=0")
    try:
        out = py(net.srv, """
            import socket, subprocess, sys
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 45000))
            u.settimeout(2)
            u.sendto(b"hello", (sys.argv[1], 8081)); print(u.recvfrom(1000)[0].decode())
            subprocess.run(["ip", "netns", "exec", sys.argv[2], sys.executable, "-c",
                "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
                "s.bind(('0.0.0.0', 5201)); s.sendto(b'INJECTED', (sys.argv[1], 45000))".replace(
                "sys.argv[1]", repr(sys.argv[3]))], check=True)
            try:
                print("got", u.recvfrom(1000)[0].decode())
            except socket.timeout:
                print("nothing")
            """, HOST, net.tenants[1001], SERVER)
        assert out.split("\n")[:2] == [f"tenant1002 saw {SERVER} said hello", "nothing"], out
    finally:
        sh(net.host, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1")
        net.apply([gw(1001), gw(1002)])


def test_conntrack_limit_bounds_one_tenant_only(net):
    net.apply([gw(1001, limit=4), gw(1002)])
    hold = """
        import socket, sys, time
        socks, ok = [], 0
        for i in range(int(sys.argv[2])):
            s = socket.socket(); s.settimeout(1)
            try:
                s.connect((sys.argv[1], 5201)); socks.append(s); ok += 1
            except OSError:
                pass
        print(ok)
        """
    try:
        # the table (and its count) is new: only connections from now on count
        assert int(py(net.tenants[1001], hold, SERVER, "8", timeout=30)) == 4
        assert int(py(net.tenants[1002], hold, SERVER, "8", timeout=30)) == 8
    finally:
        net.apply([gw(1001), gw(1002)])


def test_egress_still_nated_after_an_ovs_commit_in_the_tenants_acl_zone(net, monkeypatch):
    """Kernel datapath: OVS commits the connection in zone = tenant id, then hands the
    packet to the kernel through wx-<id>.  Simulated: tenant 1003's packets pass the
    host's stack once through a "datapath" (k1003 -> lp1003, zone 1003, committed) and
    enter again at wx-1003 (the veth peer of lp1003).  Had the host-stack zone been the
    tenant id, the kernel would find the confirmed entry and never NAT it."""
    ns = net.tenants[1001].replace(".t1", ".t3")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    g3 = gw(1003)
    h = net.host
    sh(h, "ip", "link", "add", "k1003", "address", "0a:77:68:00:03:e0", "type", "veth",
       "peer", "name", "eth0", "address", g3.next_hop_mac, "netns", ns)
    sh(ns, "ip", "addr", "add", f"{CONTAINER}/24", "dev", "eth0")
    sh(ns, "ip", "link", "set", "eth0", "up")
    sh(ns, "ip", "neigh", "replace", "169.254.77.1", "lladdr", "0a:77:68:00:03:e0", "dev",
       "eth0", "nud", "permanent")
    sh(ns, "ip", "route", "add", "default", "via", "169.254.77.1", "dev", "eth0", "onlink")
    sh(h, "ip", "link", "add", "lp1003", "address", g3.next_hop_mac, "type", "veth", "peer",
       "name", g3.port, "address", g3.mac)
    for dev in ("k1003", "lp1003"):
        sh(h, "ip", "link", "set", dev, "up")
        sh(h, "sysctl", "-qw", f"net.ipv4.conf.{dev}.rp_filter=0")
    sh(h, "ip", "route", "add", "default", "via", "169.254.77.1", "dev", "lp1003", "onlink",
       "table", "500")
    sh(h, "ip", "neigh", "replace", "169.254.77.1", "lladdr", g3.mac, "dev", "lp1003", "nud",
       "permanent")
    sh(h, "ip", "route", "add", "10.10.1.0/24", "dev", "k1003", "table", "501")
    sh(h, "ip", "rule", "add", "iif", "k1003", "lookup", "500", "pref", "100")
    sh(h, "ip", "rule", "add", "iif", "lp1003", "lookup", "501", "pref", "101")
    sh(h, "nft", "-f", "-", stdin=textwrap.dedent("""
        table ip ovs-sim {
          chain pre {
            type filter hook prerouting priority raw - 10;
            iifname { "k1003", "lp1003" } ct zone set 1003 meta mark set 0
          }
        }
        """))
    try:
        with monkeypatch.context() as m:      # the zone = the tenant id: broken
            m.setattr(nat, "ZONE_FLIP", 0)
            net.apply([gw(1001), gw(1002), g3])
            sh(h, "sysctl", "-qw", f"net.ipv4.conf.{g3.port}.rp_filter=0")
            res = sh(ns, sys.executable, "-c", CLIENT, SERVER, "5201", "40005", "t3", "tcp",
                     check=False)
            assert res.returncode and "timed out" in res.stderr, res.stdout
        net.apply([gw(1001), gw(1002), g3])
        out = py(ns, CLIENT, SERVER, "5201", "40006", "t3", "tcp")
        assert out.split("\n")[0] == f"server saw {HOST} said t3", out
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        sh(h, "nft", "delete", "table", "ip", "ovs-sim", check=False)
        sh(h, "ip", "rule", "del", "pref", "100", check=False)
        sh(h, "ip", "rule", "del", "pref", "101", check=False)
        sh(h, "ip", "link", "del", "k1003", check=False)
        sh(h, "ip", "link", "del", "lp1003", check=False)
        net.apply([gw(1001), gw(1002)])


def test_a_removed_tenant_leaves_no_rule_and_no_routes(net):
    net.apply([gw(1001)])
    try:
        rules = sh(net.host, "ip", "rule", "show").stdout
        assert f"lookup {nat.ROUTE_TABLE_BASE + 1002}" not in rules
        assert f"lookup {nat.ROUTE_TABLE_BASE + 1001}" in rules
        assert sh(net.host, "ip", "route", "show", "table",
                  str(nat.ROUTE_TABLE_BASE + 1002), check=False).stdout.strip() == ""
        # its port is no longer a known wx: nothing from it passes
        assert sh(net.tenants[1002], "ping", "-c1", "-W1", SERVER, check=False).returncode
    finally:
        net.apply([gw(1001), gw(1002)])
