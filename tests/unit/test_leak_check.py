"""The suite's "processes left behind" check ignores a neighbouring test run's processes
(two pytest runs on one machine), and still sees this run's own."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import RUN_MARK, live_processes


@pytest.mark.parametrize("mark, seen", [(None, True), ("another-run", False)])
def test_a_neighbours_process_is_not_ours(mark, seen):
    if not shutil.which("ping"):
        pytest.fail("needs ping (iputils-ping, installed by ./dev.sh setup)")
    env = dict(os.environ)
    if mark:
        env[RUN_MARK] = mark
    # a lab command by name, to loopback only
    proc = subprocess.Popen(["ping", "-q", "-i", "1", "-c", "30", "127.0.0.1"], env=env,
                            stdout=subprocess.DEVNULL)
    try:
        assert any(pid == proc.pid for pid, _ in live_processes()) is seen
    finally:
        proc.kill()
        proc.wait()

