"""hosts.yaml and topology files cannot crash weft: every bad file is one line
``file:line: field: message`` and exit 2, and a running agent keeps its configuration
(issue 12).  Includes the hypothesis YAML fuzz run in CI."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster import hostsfile, yamlfile
from cluster.hostsfile import HostsFileError
from ovs_agent import cli as agent_cli
from ovs_agent.agent import Agent
from weft_lab import cli as lab_cli
from weft_lab import topology
from weft_lab.topology import TopologyError

# run in the main session, not beside the lab tests (tests/conftest.py): it bounds time
pytestmark = pytest.mark.foreground

GOOD_HOSTS = """\
# the cluster
controller:
  openflow: ["tcp:10.99.0.1:6653"]
mtu: 1500
hosts:
  - {name: h1, underlay_ip: 192.168.50.10}
  - {name: h2, underlay_ip: 192.168.50.11}
"""
GOOD_TOPO = Path(__file__).parents[2] / "topologies" / "three-hosts-tenants.yaml"
MAX_LINE = 400

BAD_HOSTS: dict[str, bytes] = {
    "binary": bytes(range(256)) * 4,
    "latin-1 comment": GOOD_HOSTS.replace("# the cluster", "# caf\xe9").encode("latin-1"),
    "!!int abc": GOOD_HOSTS.replace("mtu: 1500", "mtu: !!int abc").encode(),
    "5000-digit integer": GOOD_HOSTS.replace("mtu: 1500", "mtu: " + "9" * 5000).encode(),
    "20,000 nested brackets": b"controller: " + b"[" * 20000 + b"]" * 20000 + b"\n",
    "10 MB host name": GOOD_HOSTS.replace("name: h2", "name: " + "a" * 10_000_000).encode(),
    "python tag": b"controller: !!python/object/apply:os.system ['true']\n",
    "alias bomb": b"a: &a [1,1,1,1]\nb: &b [*a,*a,*a,*a]\nc: [*b,*b,*b,*b]\n",
    "NUL": GOOD_HOSTS.encode() + b"\x00",
}


def _one_line(text: str, source: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text[:2000]
    assert len(lines[0]) <= MAX_LINE, lines[0][:500]
    assert re.search(re.escape(source) + r"(:\d+)?: [^:]+: ", lines[0]), lines[0]
    return lines[0]


@pytest.mark.parametrize("case", list(BAD_HOSTS))
def test_ovs_agent_refuses_a_bad_hosts_file_in_one_line(case, tmp_path, capsys):
    f = tmp_path / "hosts.yaml"
    f.write_bytes(BAD_HOSTS[case])
    t0 = time.monotonic()
    assert agent_cli.main(["--peers", str(f), "--once", "--ovsdb", "unix:/nonexistent"]) == 2
    assert time.monotonic() - t0 < 10
    line = _one_line(capsys.readouterr().err, str(f))
    if case in ("latin-1 comment", "!!int abc", "5000-digit integer"):
        assert re.search(re.escape(str(f)) + r":\d+:", line), line      # the line is named


def test_a_50_mb_file_is_refused_quickly(tmp_path):
    f = tmp_path / "hosts.yaml"
    f.write_bytes(GOOD_HOSTS.encode() + b"#" * 50_000_000 + b"\n")
    t0 = time.monotonic()
    with pytest.raises(HostsFileError, match="larger than"):
        hostsfile.load(f)
    assert time.monotonic() - t0 < 2


@pytest.mark.parametrize("case", list(BAD_HOSTS))
def test_a_running_agent_keeps_its_configuration_after_any_bad_reload(case, tmp_path):
    f = tmp_path / "hosts.yaml"
    f.write_text(GOOD_HOSTS)
    agent = Agent(f, "h1", "unix:/nonexistent")
    agent.load()
    before = agent.cluster
    f.write_bytes(BAD_HOSTS[case])
    assert agent.reload() is False
    assert agent.cluster is before and agent.me.name == "h1"
    f.unlink()
    assert agent.reload() is False      # a vanished file too


def test_weft_manager_with_a_bad_hosts_file_exits_2_in_one_line(tmp_path):
    for name, data in (("latin1.yaml", BAD_HOSTS["latin-1 comment"]), ("missing.yaml", None)):
        f = tmp_path / name
        if data is not None:
            f.write_bytes(data)
        res = subprocess.run([sys.executable, "-m", "controller.manager", "--weft-hosts", str(f),
                              "--weft-db", str(tmp_path / "w.db"), "--wsapi-port", "0"],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 2
        _one_line(res.stderr, str(f))


# -- topologies -----------------------------------------------------------------------
TOPO = GOOD_TOPO.read_text()
BAD_TOPOLOGIES = {
    "cluster /0": "name: t\ncluster_subnet: 0.0.0.0/0\nhosts: [{name: a}]\n",
    "cluster overlaps underlay": "name: t\nunderlay: 10.0.0.0/24\ncluster_subnet: 10.0.0.0/16\n"
                                "hosts: [{name: a}]\n",
    "cluster overlaps mgmt": "name: t\ncluster_subnet: 10.99.0.0/16\nhosts: [{name: a}]\n",
    "name ends in newline": 'name: "lab\\n"\nhosts: [{name: a}]\n',
    "host name ends in newline": 'name: t\nhosts: [{name: "a\\n"}]\n',
    "non-string key": "name: t\n[1, 2]: x\nhosts: [{name: a}]\n",
    "integer key": "name: t\n1: x\nhosts: [{name: a}]\n",
    "mapping as key": "name: t\n{a: 1}: x\nhosts: [{name: a}]\n",
    "subnet as integer": "name: t\nunderlay: 12\nhosts: [{name: a}]\n",
    "huge integer": "name: t\ntenants: [{name: r, vlan: " + "1" * 5000 + "}]\nhosts: [{name: a}]\n",
    "ip as list": "name: t\nhosts: [{name: a, containers: [{name: c, ip: [1]}]}]\n",
    "tag": "name: !!binary aGVsbG8=\nhosts: [{name: a}]\n",
    "date as name": "name: 2001-01-01\nhosts: [{name: a}]\n",
    "too many hosts for the cluster": "name: t\ncluster_subnet: 10.0.0.0/23\n"
                                      "hosts: [{name: a}, {name: b}]\n",
    "deep": "name: t\nhosts: " + "[" * 20000 + "]" * 20000 + "\n",
    "latin-1": "name: t\n# caf\xe9\nhosts: [{name: a}]\n",
}


@pytest.mark.parametrize("case", list(BAD_TOPOLOGIES))
def test_weft_lab_refuses_a_bad_topology_in_one_line(case, tmp_path, capsys):
    f = tmp_path / "topo.yaml"
    f.write_bytes(BAD_TOPOLOGIES[case].encode("latin-1" if case == "latin-1" else "utf-8"))
    t0 = time.monotonic()
    with pytest.raises(TopologyError):
        topology.load(f)
    assert time.monotonic() - t0 < 5
    assert lab_cli.main(["up", str(f)]) == 2
    _one_line(capsys.readouterr().err, str(f))


# -- fuzz -------------------------------------------------------------------------------
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _mutations(text: str) -> st.SearchStrategy[bytes]:
    data = text.encode()
    pieces = st.sampled_from([b"", b"\n", b" ", b":", b"-", b"[", b"]", b"{", b"}", b",", b"'",
                              b'"', b"!!int ", b"&a ", b"*a", b"? ", b"|", b">", b"#", b"\t",
                              b"\xe9", b"\x00", b"99999999999999999999999", b"~", b"null",
                              b"0x1f", b"1e400", b".inf", b"yes", b"<<: ", b"%YAML 1.1\n---\n"])

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 6))):
            i = draw(st.integers(0, len(out)))
            j = draw(st.integers(i, min(len(out), i + 8)))
            out[i:j] = draw(pieces)
        return bytes(out)
    return mutate()


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                     st.floats(allow_nan=True), st.text(max_size=20))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8) | st.integers(), inner,
                                                 max_size=4)), max_leaves=20)


def _hosts_like(doc: dict) -> bytes:
    return yaml.safe_dump(doc, allow_unicode=True).encode()


def _check_hosts(data: bytes, tmp: Path) -> None:
    f = tmp / "hosts.yaml"
    f.write_bytes(data)
    try:
        hostsfile.load(f)
    except HostsFileError as exc:
        assert len(str(exc)) <= MAX_LINE and str(exc).startswith(str(f))


def _check_topology(data: bytes, tmp: Path) -> None:
    f = tmp / "topo.yaml"
    f.write_bytes(data)
    try:
        topology.load(f)
    except TopologyError as exc:
        assert len(str(exc)) <= MAX_LINE and str(exc).startswith(str(f))


@FUZZ
@given(data=_mutations(GOOD_HOSTS))
def test_fuzz_mutated_hosts_files_never_crash(data, tmp_path_factory):
    _check_hosts(data, tmp_path_factory.mktemp("h"))


@FUZZ
@given(doc=st.fixed_dictionaries({"controller": _values, "hosts": _values},
                                 optional={"mtu": _values, "tunnel_type": _values,
                                           "queues": _values, "transport": _values}))
def test_fuzz_structured_hosts_files_never_crash(doc, tmp_path_factory):
    _check_hosts(_hosts_like(doc), tmp_path_factory.mktemp("h"))


@FUZZ
@given(data=_mutations(TOPO))
def test_fuzz_mutated_topologies_never_crash(data, tmp_path_factory):
    _check_topology(data, tmp_path_factory.mktemp("t"))


@FUZZ
@given(doc=st.fixed_dictionaries({"name": _values, "hosts": _values},
                                 optional={"cluster_subnet": _values, "underlay": _values,
                                           "mgmt": _values, "tenants": _values,
                                           "switches": _values}))
def test_fuzz_structured_topologies_never_crash(doc, tmp_path_factory):
    _check_topology(_hosts_like(doc), tmp_path_factory.mktemp("t"))


def test_the_reader_limits_are_what_the_docs_say():
    assert yamlfile.MAX_BYTES == 1 << 20 and yamlfile.MAX_DEPTH == 32
