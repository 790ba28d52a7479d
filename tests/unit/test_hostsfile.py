"""Unit tests for the hosts.yaml model (cluster.hostsfile): pure, no OVS needed."""
from __future__ import annotations

import pickle
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from cluster import hostsfile as hf
from cluster.hostsfile import Cluster, Host, HostsFileError, parse

GOOD = """\
controller:
  openflow: ["tcp:10.99.0.1:6653", "ssl:10.99.0.2:6653"]
  api: "http://10.99.0.1:8080/"
tunnel_type: vxlan
datapath_type: netdev
mtu: 9000
cluster_subnet: 172.18.0.0/16
hosts:
  - name: host1
    underlay_ip: 192.168.50.11
    docker_subnet: 172.18.1.0/24
  - name: host2
    underlay_ip: 192.168.50.12
    docker_subnet: 172.18.2.0/24
    tunnel_type: gre
  - name: host3
    underlay_ip: 192.168.50.13
    datapath_type: system
"""

MINIMAL = """\
controller:
  openflow: tcp:10.99.0.1:6653
hosts:
  - name: host1
    underlay_ip: 192.168.50.11
"""

HEAD = 'controller: {openflow: "tcp:10.99.0.1:6653"}\n'


def hosts_doc(*entries: str, head: str = HEAD) -> str:
    """A document with the given host entries (flow mappings), one per line from line 3."""
    return head + "hosts:\n" + "".join(f"  - {e}\n" for e in entries)


def error(text: str) -> HostsFileError:
    with pytest.raises(HostsFileError) as info:
        parse(text, "hosts.yaml")
    return info.value


def cluster_of(*specs: tuple[str, str]) -> Cluster:
    """Hosts named by (name, tunnel_type) pairs; ips are made up."""
    entries = [f"{{name: {n}, underlay_ip: 10.0.0.{i + 1}, tunnel_type: {t}}}"
               for i, (n, t) in enumerate(specs)]
    return parse(hosts_doc(*entries))


# --- the good file --------------------------------------------------------------------

def test_full_example_parses_with_defaults_applied():
    c = parse(GOOD)
    assert c.controllers == ("tcp:10.99.0.1:6653", "ssl:10.99.0.2:6653")
    assert c.api == "http://10.99.0.1:8080"  # trailing slash dropped
    assert (c.tunnel_type, c.datapath_type, c.mtu) == ("vxlan", "netdev", 9000)
    assert c.hosts == (
        Host("host1", "192.168.50.11", "172.18.1.0/24", "vxlan", "netdev"),
        Host("host2", "192.168.50.12", "172.18.2.0/24", "gre", "netdev"),
        Host("host3", "192.168.50.13", None, "vxlan", "system"),
    )


def test_minimal_file_gets_documented_defaults():
    c = parse(MINIMAL)
    assert c.controllers == ("tcp:10.99.0.1:6653",)  # single string accepted
    assert (c.api, c.tunnel_type, c.datapath_type, c.mtu) == (None, "vxlan", "system", 1500)
    assert c.hosts == (Host("host1", "192.168.50.11", None, "vxlan", "system"),)


def test_load_reads_file_and_names_it_in_errors(tmp_path):
    path = tmp_path / "hosts.yaml"
    path.write_text(GOOD)
    assert hf.load(path) == parse(GOOD)
    path.write_text(GOOD.replace("192.168.50.12", "10.0.0.300"))
    with pytest.raises(HostsFileError) as info:
        hf.load(str(path))
    assert str(info.value) == (
        f"{path}:13: hosts[1].underlay_ip: '10.0.0.300' is not an IPv4 address")


def test_model_is_frozen():
    c = parse(GOOD)
    with pytest.raises(AttributeError):
        c.mtu = 1400  # type: ignore[misc]
    with pytest.raises(AttributeError):
        c.hosts[0].name = "x"  # type: ignore[misc]


def test_optional_keys_set_to_null_mean_unset():
    c = parse(hosts_doc("{name: a, underlay_ip: 10.0.0.1, docker_subnet: null, tunnel_type: ~}",
                        head=HEAD + "mtu:\n"))
    assert c.mtu == 1500 and c.hosts[0].docker_subnet is None and c.hosts[0].tunnel_type == "vxlan"


def test_yaml_oddities_in_names_stay_text():
    # Unquoted 123 and `no` are an int and a bool to YAML 1.1 but valid host names here.
    c = parse(hosts_doc("{name: 123, underlay_ip: 10.0.0.1}", "{name: no, underlay_ip: 10.0.0.2}"))
    assert [h.name for h in c.hosts] == ["123", "no"]


def test_controller_targets_accept_ipv6_and_many_forms():
    c = parse(HEAD.replace('"tcp:10.99.0.1:6653"', '["tcp:[::1]:6653", "ssl:10.0.0.1:1"]')
              + "hosts: [{name: a, underlay_ip: 10.0.0.1}]\n")
    assert c.controllers == ("tcp:[::1]:6653", "ssl:10.0.0.1:1")


# --- errors: (text, field, line, message fragment) ---------------------------------------

CASES = {
    "yaml syntax": ("controller: [\nhosts: {\n", "<yaml>", 3, "invalid YAML"),
    "yaml tab": ("controller:\n\tfoo: 1\n", "<yaml>", 2, "invalid YAML"),
    "two documents": (MINIMAL + "---\n" + MINIMAL, "<yaml>", 6, "single document"),
    "empty file": ("", "<root>", None, "empty"),
    "comments only": ("# nothing\n", "<root>", None, "empty"),
    "top level list": ("- a\n- b\n", "<root>", 1, "must be a mapping, got a list"),
    "top level scalar": ("hello\n", "<root>", 1, "must be a mapping, got str"),
    "duplicate top key": (MINIMAL + "controller: {openflow: 'tcp:1.1.1.1:1'}\n",
                          "controller", 6, "duplicate key"),
    "duplicate host key": (hosts_doc("{name: a, underlay_ip: 10.0.0.1, name: b}"),
                           "hosts[0].name", 3, "duplicate key"),
    "non-string key": (MINIMAL + "1: x\n", "<root>", 6, "keys must be strings, got int"),
    "unknown top key": (MINIMAL + "tunel_type: gre\n", "tunel_type", 6, "unknown key 'tunel_type'"),
    "unknown controller key": (MINIMAL.replace("controller:\n", "controller:\n  ap1: x\n"),
                               "controller.ap1", 2, "unknown key"),
    "unknown host key": (hosts_doc("{name: a, underlay_ip: 10.0.0.1, subnet: 10.1.0.0/24}"),
                         "hosts[0].subnet", 3, "allowed: name, underlay_ip"),
    "merge key unsupported": (hosts_doc("{name: a, underlay_ip: 10.0.0.1, <<: {}}"),
                              "hosts[0]", 3, "keys must be strings, got merge"),
    "missing controller": ("hosts: [{name: a, underlay_ip: 10.0.0.1}]\n",
                           "controller", 1, "is required"),
    "missing hosts": (HEAD, "hosts", 1, "is required"),
    "missing openflow": ("controller: {api: 'http://x'}\nhosts: []\n",
                         "controller.openflow", 1, "is required"),
    "missing name": (hosts_doc("{name: a, underlay_ip: 10.0.0.1}", "{underlay_ip: 10.0.0.2}"),
                     "hosts[1].name", 4, "is required"),
    "missing underlay_ip": (hosts_doc("{name: a}"), "hosts[0].underlay_ip", 3, "is required"),
    "null name": (hosts_doc("{name: null, underlay_ip: 10.0.0.1}"),
                  "hosts[0].name", 3, "must be a string, got null"),
    "controller is null": ("controller:\nhosts: []\n", "controller", 1, "got null"),
    "controller is a list": ("controller: [a]\nhosts: []\n", "controller", 1, "got a list"),
    "hosts is a string": (HEAD + "hosts: host1\n", "hosts", 2, "must be a list of hosts, got str"),
    "hosts is a mapping": (HEAD + "hosts: {a: 1}\n", "hosts", 2, "got a mapping"),
    "hosts empty": (HEAD + "hosts: []\n", "hosts", 2, "at least one host"),
    "host is a string": (hosts_doc("host1"), "hosts[0]", 3, "must be a mapping, got str"),
    "name is a list": (hosts_doc("{name: [a], underlay_ip: 10.0.0.1}"),
                       "hosts[0].name", 3, "must be a string, got a list"),
    "mtu is a string": (HEAD + "mtu: '1500'\nhosts: x\n", "mtu", 2, "must be an integer, got str"),
    "mtu is a bool": (HEAD + "mtu: true\nhosts: x\n", "mtu", 2, "must be an integer, got bool"),
    "mtu too small": (HEAD + "mtu: 1279\nhosts: x\n", "mtu", 2, "1279 is outside 1280..9216"),
    "mtu too big": (HEAD + "mtu: 9217\nhosts: x\n", "mtu", 2, "outside"),
    "no openflow targets": ("controller: {openflow: []}\nhosts: x\n",
                            "controller.openflow", 1, "at least one target"),
    "bad target scheme": (HEAD.replace("tcp:", "udp:") + "hosts: x\n",
                          "controller.openflow", 1, "not an OpenFlow controller target"),
    "bad target ip": (HEAD.replace("10.99.0.1", "10.99.0.256") + "hosts: x\n",
                      "controller.openflow", 1, "tcp:IP:PORT"),
    "target without port": (HEAD.replace(":6653", "") + "hosts: x\n",
                            "controller.openflow", 1, "not an OpenFlow"),
    "target port 0": (HEAD.replace(":6653", ":0") + "hosts: x\n",
                      "controller.openflow", 1, "not an OpenFlow"),
    "target port too big": (HEAD.replace(":6653", ":65536") + "hosts: x\n",
                            "controller.openflow", 1, "not an OpenFlow"),
    "second target bad": ("controller:\n  openflow:\n    - tcp:1.1.1.1:1\n    - tcp:1.1.1.1\n"
                          "hosts: x\n", "controller.openflow[1]", 4, "not an OpenFlow"),
    "bad api url": ("controller: {openflow: 'tcp:1.1.1.1:1', api: 'ftp://x'}\nhosts: x\n",
                    "controller.api", 1, "not an http(s) URL"),
    "api without host": ("controller: {openflow: 'tcp:1.1.1.1:1', api: 'http://'}\nhosts: x\n",
                         "controller.api", 1, "not an http(s) URL"),
    "api bad port": ("controller: {openflow: 'tcp:1.1.1.1:1', api: 'http://x:99999'}\nhosts: x\n",
                     "controller.api", 1, "not an http(s) URL"),
    "unknown tunnel type": (HEAD + "tunnel_type: geneve\nhosts: x\n", "tunnel_type", 2,
                            "unknown tunnel type 'geneve' (allowed: vxlan, gre)"),
    "unknown host tunnel type": (hosts_doc("{name: a, underlay_ip: 10.0.0.1, tunnel_type: GRE}"),
                                 "hosts[0].tunnel_type", 3, "(allowed: vxlan, gre)"),
    "unknown datapath type": (HEAD + "datapath_type: dpdk\nhosts: x\n", "datapath_type", 2,
                              "unknown datapath type 'dpdk' (allowed: system, netdev)"),
    "unknown host datapath type": (
        hosts_doc("{name: a, underlay_ip: 10.0.0.1, datapath_type: kernel}"),
        "hosts[0].datapath_type", 3, "allowed: system, netdev"),
    "uppercase name": (hosts_doc("{name: Host1, underlay_ip: 10.0.0.1}"),
                       "hosts[0].name", 3, "not a valid host name"),
    "name with dot": (hosts_doc("{name: a.b, underlay_ip: 10.0.0.1}"),
                      "hosts[0].name", 3, "not a valid host name"),
    "name starts with dash": (hosts_doc("{name: -a, underlay_ip: 10.0.0.1}"),
                              "hosts[0].name", 3, "not a valid host name"),
    "name too long": (hosts_doc("{name: %s, underlay_ip: 10.0.0.1}" % ("a" * 64)),
                      "hosts[0].name", 3, "at most 63"),
    "empty name": (hosts_doc("{name: '', underlay_ip: 10.0.0.1}"),
                   "hosts[0].name", 3, "not a valid host name"),
    "duplicate name": (hosts_doc("{name: a, underlay_ip: 10.0.0.1}", "{name: b, underlay_ip: 10.0.0.2}",
                                 "{name: a, underlay_ip: 10.0.0.3}"),
                       "hosts[2].name", 5, "duplicate host name 'a', also hosts[0] 'a'"),
    "duplicate underlay ip": (hosts_doc("{name: a, underlay_ip: 10.0.0.1}",
                                        "{name: b, underlay_ip: 10.0.0.1}"),
                              "hosts[1].underlay_ip", 4, "duplicate underlay_ip '10.0.0.1'"),
    "bad ip": (hosts_doc("{name: a, underlay_ip: 10.0.0.300}"),
               "hosts[0].underlay_ip", 3, "'10.0.0.300' is not an IPv4 address"),
    "ipv6 underlay": (hosts_doc("{name: a, underlay_ip: '::1'}"),
                      "hosts[0].underlay_ip", 3, "not an IPv4 address"),
    "ip with leading zero": (hosts_doc("{name: a, underlay_ip: 10.0.0.01}"),
                             "hosts[0].underlay_ip", 3, "not an IPv4 address"),
    "ip as number": (hosts_doc("{name: a, underlay_ip: 10}"),
                     "hosts[0].underlay_ip", 3, "'10' is not an IPv4 address"),
    "loopback ip": (hosts_doc("{name: a, underlay_ip: 127.0.0.2}"),
                    "hosts[0].underlay_ip", 3, "loopback"),
    "multicast ip": (hosts_doc("{name: a, underlay_ip: 239.1.1.1}"),
                     "hosts[0].underlay_ip", 3, "multicast"),
    "unspecified ip": (hosts_doc("{name: a, underlay_ip: 0.0.0.0}"),
                       "hosts[0].underlay_ip", 3, "unspecified"),
    "broadcast ip": (hosts_doc("{name: a, underlay_ip: 255.255.255.255}"),
                     "hosts[0].underlay_ip", 3, "reserved"),
    "bad cidr": (hosts_doc("{name: a, underlay_ip: 10.0.0.1, docker_subnet: 172.18.1.0/33}"),
                 "hosts[0].docker_subnet", 3, "not an IPv4 CIDR"),
    "cidr garbage": (hosts_doc("{name: a, underlay_ip: 10.0.0.1, docker_subnet: nope}"),
                     "hosts[0].docker_subnet", 3, "not an IPv4 CIDR"),
    "cidr without prefix": (hosts_doc("{name: a, underlay_ip: 10.0.0.1, docker_subnet: 172.18.1.0}"),
                            "hosts[0].docker_subnet", 3, "no prefix length"),
    "cidr host bits": (hosts_doc("{name: a, underlay_ip: 10.0.0.1, docker_subnet: 172.18.1.5/24}"),
                       "hosts[0].docker_subnet", 3, "host bits set; did you mean 172.18.1.0/24?"),
    "overlapping subnets": (
        hosts_doc("{name: a, underlay_ip: 10.0.0.1, docker_subnet: 172.18.0.0/16}",
                  "{name: b, underlay_ip: 10.0.0.2}",
                  "{name: c, underlay_ip: 10.0.0.3, docker_subnet: 172.18.5.0/24}"),
        "hosts[2].docker_subnet", 5, "172.18.5.0/24 overlaps 172.18.0.0/16 of host 'a'"),
    "equal subnets": (
        hosts_doc("{name: a, underlay_ip: 10.0.0.1, docker_subnet: 172.18.1.0/24}",
                  "{name: b, underlay_ip: 10.0.0.2, docker_subnet: 172.18.1.0/24}"),
        "hosts[1].docker_subnet", 4, "overlaps"),
}


@pytest.mark.parametrize("text, field, line, fragment", CASES.values(), ids=list(CASES))
def test_each_problem_names_field_and_line(text, field, line, fragment):
    e = error(text)
    assert (e.field, e.line) == (field, line), str(e)
    assert fragment in e.message
    assert str(e) == f"hosts.yaml{'' if line is None else f':{line}'}: {field}: {e.message}"


def test_error_is_a_value_error_with_default_source_and_pickles():
    with pytest.raises(ValueError) as info:
        parse("[]")
    e = info.value
    assert str(e).startswith("<string>:1: <root>: ")
    again = pickle.loads(pickle.dumps(e))
    assert (again.field, again.line, again.message, str(again)) == (e.field, e.line, e.message, str(e))


def test_error_on_a_later_line_of_a_block_file():
    e = error(GOOD.replace("tunnel_type: gre", "tunnel_type: ipip"))
    assert (e.field, e.line) == ("hosts[1].tunnel_type", 15)


def test_port_name_collision_between_hosts_is_rejected():
    a, b = "worker-node-677", "worker-node-746"  # same 7-char head and same 4 hex digits
    assert hf.tunnel_port_name("vxlan", a) == hf.tunnel_port_name("vxlan", b)
    e = error(hosts_doc(f"{{name: {a}, underlay_ip: 10.0.0.1}}", f"{{name: {b}, underlay_ip: 10.0.0.2}}"))
    assert (e.field, e.line) == ("hosts[1].name", 4)
    assert "duplicate tunnel port name" in e.message and a in e.message
    assert "hash collision: rename one" in e.message


# --- cluster queries ------------------------------------------------------------------

def test_host_and_peers_keep_file_order():
    c = parse(GOOD)
    assert c.host("host2").underlay_ip == "192.168.50.12"
    assert [h.name for h in c.peers("host2")] == ["host1", "host3"]
    assert c.peers("host1") == c.hosts[1:]
    with pytest.raises(KeyError):
        c.host("nope")
    with pytest.raises(KeyError):
        c.peers("nope")


def test_link_type_is_gre_if_either_end_says_gre():
    c = cluster_of(("v1", "vxlan"), ("v2", "vxlan"), ("g1", "gre"), ("g2", "gre"))
    assert c.link_type("v1", "v2") == "vxlan"
    assert c.link_type("v1", "g1") == "gre"
    assert c.link_type("g1", "g2") == "gre"
    with pytest.raises(KeyError):
        c.link_type("v1", "nope")


@given(st.lists(st.sampled_from(hf.TUNNEL_TYPES), min_size=2, max_size=6), st.data())
def test_link_type_is_symmetric(types, data):
    c = cluster_of(*((f"h{i}", t) for i, t in enumerate(types)))
    a = data.draw(st.sampled_from(c.hosts)).name
    b = data.draw(st.sampled_from(c.hosts)).name
    assert c.link_type(a, b) == c.link_type(b, a)


def test_find_self_prefers_local_address():
    c = parse(GOOD)
    # hostname names host1 but the address says host3: the address wins
    assert c.find_self(["127.0.0.1", "::1", "192.168.50.13/24"], "host1").name == "host3"


def test_find_self_falls_back_to_hostname_fqdn_and_case():
    c = parse(GOOD)
    assert c.find_self(["10.1.1.1", "garbage"], "host2").name == "host2"
    assert c.find_self([], "HOST2.example.org").name == "host2"


def test_find_self_without_match_names_what_was_tried(tmp_path):
    path = tmp_path / "hosts.yaml"
    path.write_text(GOOD)
    with pytest.raises(HostsFileError) as info:
        hf.load(path).find_self(["10.1.1.1"], "debian")
    e = info.value
    assert (e.field, e.line) == ("hosts", None)
    assert str(e).startswith(f"{path}: hosts: no host is this machine")
    assert "10.1.1.1" in e.message and "'debian'" in e.message and "--host" in e.message


def test_find_self_refuses_to_guess_between_two_local_hosts():
    c = parse(GOOD)
    with pytest.raises(HostsFileError, match="several hosts.*host1, host2.*--host"):
        c.find_self(["192.168.50.12", "192.168.50.11"], "host3")


# --- MTU ------------------------------------------------------------------------------

@pytest.mark.parametrize("specs, expected", [
    ([("a", "vxlan"), ("b", "vxlan")], 1450),
    ([("a", "gre"), ("b", "gre")], 1458),
    ([("a", "vxlan"), ("b", "gre")], 1458),                  # the only link is gre
    ([("a", "vxlan"), ("b", "vxlan"), ("c", "gre")], 1450),  # a-b is still vxlan
    ([("a", "vxlan")], 1450),
    ([("a", "gre")], 1458),
])
def test_tunnel_mtu_leaves_room_for_the_largest_encapsulation(specs, expected):
    assert hf.tunnel_mtu(cluster_of(*specs)) == expected


def test_tunnel_mtu_follows_underlay_mtu():
    assert hf.tunnel_mtu(parse(GOOD)) == 9000 - 50


# --- port names -----------------------------------------------------------------------

NAMES = st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,62}\Z")
IFNAME = re.compile(r"(vx|gr)-[a-z0-9-]{1,12}")


def test_port_name_examples():
    assert hf.tunnel_port_name("vxlan", "host2") == "vx-host2"
    assert hf.tunnel_port_name("gre", "host2") == "gr-host2"
    assert hf.tunnel_port_name("vxlan", "a" * 12) == "vx-" + "a" * 12
    long = hf.tunnel_port_name("vxlan", "compute-node-0042")
    assert re.fullmatch(r"vx-compute-[0-9a-f]{4}", long) and len(long) == 15


def test_port_name_rejects_bad_input():
    with pytest.raises(ValueError):
        hf.tunnel_port_name("geneve", "host2")
    with pytest.raises(ValueError):
        hf.tunnel_port_name("vxlan", "Host2")


@given(st.sampled_from(hf.TUNNEL_TYPES), NAMES)
def test_port_name_fits_ifnamsiz_and_is_readable(link, name):
    port = hf.tunnel_port_name(link, name)
    assert len(port) <= 15 and IFNAME.fullmatch(port)
    assert port.startswith({"vxlan": "vx-", "gre": "gr-"}[link])
    if len(name) <= 12:
        assert port[3:] == name
    else:
        assert port[3:10] == name[:7]


@settings(max_examples=20, deadline=None)
@given(st.lists(NAMES, min_size=1, max_size=5))
def test_port_name_is_deterministic_across_processes(names):
    code = ("import sys; from cluster.hostsfile import tunnel_port_name as t;"
            "print(' '.join(t('gre', n) for n in sys.argv[1:]))")
    out = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True,
                         check=True, env={"PYTHONHASHSEED": "random"}, cwd=_repo_root())
    assert out.stdout.split() == [hf.tunnel_port_name("gre", n) for n in names]


@given(st.sampled_from(hf.TUNNEL_TYPES), st.lists(NAMES, unique=True, min_size=2, max_size=30))
def test_port_names_are_distinct_for_distinct_peers(link, names):
    # 4 hex digits make a collision between two long names with the same 7-character head
    # a 1/65536 event; parse() rejects such a file (see the collision test above).
    ports = [hf.tunnel_port_name(link, n) for n in names]
    assert len(set(ports)) == len(ports)


def _repo_root() -> str:
    import pathlib
    return str(pathlib.Path(hf.__file__).resolve().parent.parent)


# --- datapath ids ---------------------------------------------------------------------

def test_datapath_id_is_stable_tagged_and_reversible():
    c = parse(GOOD)
    dpids = [hf.datapath_id(h) for h in c.hosts]
    assert len(set(dpids)) == len(dpids)
    assert all(d >> 48 == 0x5746 and d < 2**64 for d in dpids)
    assert hf.datapath_id(Host("host1", "1.2.3.4", None, "gre", "netdev")) == dpids[0]
    assert [hf.host_for_dpid(c, d) for d in dpids] == list(c.hosts)
    assert hf.host_for_dpid(c, 1) is None


def test_dpid_str_is_16_hex_digits():
    assert hf.dpid_str(1) == "0000000000000001"
    assert hf.dpid_str(0x5746_0000_0000_abcd) == "574600000000abcd"
    c = parse(GOOD)
    assert re.fullmatch(r"[0-9a-f]{16}", hf.dpid_str(hf.datapath_id(c.hosts[0])))


def test_constants():
    assert hf.TUNNEL_TYPES == ("vxlan", "gre") and hf.DATAPATH_TYPES == ("system", "netdev")
    assert (hf.BRIDGE, hf.DOCKER_LINK_PORT, hf.DOCKER_LINK_PEER) == ("br0", "weft-d0", "weft-d0p")
    assert all(len(n) <= 15 for n in (hf.BRIDGE, hf.DOCKER_LINK_PORT, hf.DOCKER_LINK_PEER))


# -- cluster_subnet: what each host's docker0 is configured with ------------------------

def test_cluster_subnet_defaults_to_dockers_own_network():
    c = parse(hosts_doc("{name: a, underlay_ip: 10.0.0.1, docker_subnet: 172.17.1.0/24}"))
    assert c.cluster_subnet == "172.17.0.0/16"


@pytest.mark.parametrize("subnet, host_subnet, message", [
    ("172.18.0.0/16", "172.17.1.0/24", "172.17.1.0/24 is not inside cluster_subnet"),
    ("0.0.0.0/0", "172.17.1.0/24", "prefix /0 is outside /8../28"),
    ("172.17.0.0/30", None, "prefix /30 is outside"),
    ("10.0.0.0/8", None, "10.0.0.1 is inside cluster_subnet 10.0.0.0/8"),
    ("172.17.0.1/16", None, "has host bits set"),
])
def test_cluster_subnet_is_checked_against_hosts(subnet, host_subnet, message):
    host = "{name: a, underlay_ip: 10.0.0.1" + (f", docker_subnet: {host_subnet}}}"
                                                if host_subnet else "}")
    doc = hosts_doc(host).replace("hosts:", f"cluster_subnet: {subnet}\nhosts:", 1)
    with pytest.raises(HostsFileError) as info:
        parse(doc)
    assert message in str(info.value)


def test_docker_subnet_outside_the_default_names_the_fix():
    with pytest.raises(HostsFileError) as info:
        parse(hosts_doc("{name: a, underlay_ip: 10.0.0.1, docker_subnet: 10.5.1.0/24}"))
    assert info.value.field == "hosts[0].docker_subnet"
    assert "set cluster_subnet" in str(info.value)


def test_api_may_list_every_controller_instance():
    from cluster.hostsfile import parse
    c = parse("controller:\n  openflow: ['tcp:10.99.0.1:6653', 'tcp:10.99.0.2:6653']\n"
              "  api: ['http://10.99.0.1:8080/', 'http://10.99.0.2:8080']\n"
              "hosts:\n  - {name: h1, underlay_ip: 192.168.50.11}\n")
    assert c.apis == ("http://10.99.0.1:8080", "http://10.99.0.2:8080")
    assert c.api == "http://10.99.0.1:8080"
    assert len(c.controllers) == 2
    one = parse("controller: {openflow: 'tcp:10.99.0.1:6653', api: 'http://10.99.0.1:8080'}\n"
                "hosts:\n  - {name: h1, underlay_ip: 192.168.50.11}\n")
    assert one.apis == ("http://10.99.0.1:8080",)


def test_agent_api_is_an_http_url_with_an_address_and_a_port():
    c = parse(hosts_doc('{name: h1, underlay_ip: 192.168.50.11, agent_api: "http://10.99.0.11:9180"}'))
    assert c.host("h1").agent_api == "http://10.99.0.11:9180"
    assert parse(MINIMAL).host("host1").agent_api is None
    for bad in ("https://10.99.0.11:9180", "http://agent1:9180", "http://10.99.0.11",
                "http://10.99.0.11:9180/v1", "10.99.0.11:9180"):
        e = error(hosts_doc(f'{{name: h1, underlay_ip: 192.168.50.11, agent_api: "{bad}"}}'))
        assert e.field == "hosts[0].agent_api" and e.line == 3, (bad, e)
    # a registration never carries it, and merging registered hosts keeps the file's
    merged = hf.with_hosts(c, [{"name": "h2", "underlay_ip": "192.168.50.12"}])
    assert merged.host("h1").agent_api == "http://10.99.0.11:9180"
    assert merged.host("h2").agent_api is None


def test_the_firewall_keeps_containers_off_the_agents_listeners():
    from ovs_agent.firewall import _api_endpoints
    c = parse(hosts_doc('{name: h1, underlay_ip: 192.168.50.11, agent_api: "http://10.99.0.11:9180"}'))
    assert ("10.99.0.11", 9180) in _api_endpoints(c)[0]
