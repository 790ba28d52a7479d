"""One version, setup.cfg's: what the installed console scripts and /v1/health report."""
from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

from cluster import version as version_mod
from cluster.version import version

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent         # the venv's console scripts (.venv/bin)


def setup_cfg_version() -> str:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg["metadata"]["version"]


def test_the_version_is_setup_cfgs():
    assert version() == setup_cfg_version()


def test_a_tree_pip_never_installed_says_so(monkeypatch):
    monkeypatch.setattr(version_mod, "DISTRIBUTION", "weft-sdn-not-installed")
    assert version() == "unknown"


@pytest.mark.parametrize("cmd", ["weft-manager", "ovs-agent", "weftctl"])
def test_console_scripts_print_it(cmd):
    out = subprocess.run([str(BIN / cmd), "--version"], capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [cmd, setup_cfg_version()]


def test_health_reports_it(make_store):
    from fastapi.testclient import TestClient

    from cluster.hostsfile import parse
    from controller.rest.app import create_app
    from controller.core import Core
    core = Core(make_store(), parse("controller: {openflow: tcp:127.0.0.1:6653}\n"
                                    "hosts: [{name: h1, underlay_ip: 192.168.50.10}]\n"))
    body = TestClient(create_app(core, "t")).get("/v1/health").json()
    assert body["version"] == setup_cfg_version()
