"""The artifact and its install commands (weft_lab.dist): docs/docker.md's marked block is
what install-weft.sh holds, byte for byte, and it installs nothing from PyPI."""
from __future__ import annotations

import configparser
import shlex
import subprocess
from pathlib import Path

import pytest

from cluster import hostsfile
from weft_lab import dist

DOC_BYTES = dist.DOC.read_bytes()


def test_docker_md_has_one_marked_sh_block_and_the_script_is_it_byte_for_byte(tmp_path):
    # found here without install_block: the bytes between the fence lines inside the markers
    begin = DOC_BYTES.index(dist.BEGIN.encode()) + len(dist.BEGIN)
    end = DOC_BYTES.index(dist.END.encode())
    inner = DOC_BYTES[begin:end]
    assert inner.startswith(b"\n```sh\n") and inner.endswith(b"\n```\n")
    expected = inner[len(b"\n```sh\n"):-len(b"```\n")]
    script = dist.write_install_script(tmp_path)
    assert script == tmp_path / "install-weft.sh" and script.stat().st_mode & 0o111
    assert script.read_bytes() == expected
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def _commands() -> list[list[str]]:
    text = dist.install_block(dist.DOC.read_text())
    return [shlex.split(line, comments=True) for line in text.splitlines() if line.strip()]


def test_the_block_needs_no_pypi_and_installs_weft_from_dist():
    pips = [c for c in _commands() if Path(c[0]).name in ("pip", "pip3") or "pip" in c[1:3]]
    assert pips, "the block installs weft with pip"
    for cmd in pips:
        assert cmd[1] == "install" and "--no-index" in cmd, cmd
        assert cmd[cmd.index("--find-links") + 1] == "./dist", cmd
        assert "weft-sdn" in cmd
    words = {w for c in _commands() for w in c}
    assert not words & {"curl", "wget", "easy_install", "pipx", "--index-url", "--extra-index-url"}
    assert not any(w.startswith(("http://", "https://", "git+")) for w in words)


def test_the_block_copies_every_unit_the_wheel_carries():
    text = dist.install_block(dist.DOC.read_text())
    assert "/opt/weft/venv/share/weft/systemd/*.service /etc/systemd/system/" in text
    assert "share/weft/systemd/docker.service.d/10-weft.conf" in text
    units = {p.name for p in Path(dist.REPO, "systemd").glob("*.service")}
    assert units == {Path(f).name for f in dist.DATA_FILES if f.endswith(".service")}


@pytest.mark.parametrize("doc, why", [
    ("# no markers\n```sh\nls\n```\n", "exactly one"),
    (f"{dist.BEGIN}\n```sh\nls\n```\n", "exactly one"),
    (f"{dist.BEGIN}\n```sh\nls\n```\n{dist.END}\n{dist.BEGIN}\n{dist.END}\n", "exactly one"),
    (f"{dist.END}\n```sh\nls\n```\n{dist.BEGIN}\n", "one ```sh block"),
    (f"{dist.BEGIN}\n```bash\nls\n```\n{dist.END}\n", "one ```sh block"),
    (f"{dist.BEGIN}\nrun this:\n```sh\nls\n```\n{dist.END}\n", "one ```sh block"),
    (f"{dist.BEGIN}\n```sh\nls\n```\n```sh\nid\n```\n{dist.END}\n", "one ```sh block"),
    (f"{dist.BEGIN}\n```sh\nls\n{dist.END}\n", "one ```sh block"),
])
def test_a_broken_block_is_refused_with_the_reason(doc, why):
    with pytest.raises(dist.DistError, match=why):
        dist.install_block(doc, "x.md")


def test_a_good_block_is_returned_as_written():
    assert dist.install_block(f"a\n{dist.BEGIN}\n```sh\nls  -l\n\necho 'x'\n```\n{dist.END}\nb") \
        == "ls  -l\n\necho 'x'\n"


def test_the_examples_are_valid_hosts_files_shipped_in_the_wheel():
    cfg = configparser.ConfigParser()
    cfg.read(dist.REPO / "setup.cfg")
    shipped = cfg["options.data_files"]["share/weft/examples"].split()
    assert sorted(shipped) == ["examples/hosts-gre.yaml", "examples/hosts.yaml"]
    assert {f"share/weft/{p}" for p in shipped} <= set(dist.DATA_FILES)
    vxlan = hostsfile.load(dist.REPO / "examples/hosts.yaml")
    gre = hostsfile.load(dist.REPO / "examples/hosts-gre.yaml")
    assert (vxlan.tunnel_type, hostsfile.tunnel_mtu(vxlan)) == ("vxlan", 1450)
    assert (gre.tunnel_type, hostsfile.tunnel_mtu(gre)) == ("gre", 8958)
    for c in (vxlan, gre):
        assert [h.name for h in c.hosts] == ["host1", "host2", "host3"]
        assert c.controllers == ("tcp:192.168.50.11:6653",)
