"""The suite's "processes left behind" check ignores a neighbouring test run's processes
(two pytest runs on one machine), and still sees this run's own."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import RUN_MARK, live_processes, wait_for


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


def test_full_speed_gives_this_runs_idle_threads_normal_priority_and_no_others():
    """The background VM lab runs at idle priority (SCHED_IDLE) beside the lab tests; the
    VM tests' fixture gives every thread of this run normal priority back, and leaves a
    neighbour's processes alone."""
    from tests.conftest import _idle_priority, full_speed
    code = "import threading, time; threading.Thread(target=time.sleep, args=(30,)).start()" \
           "; time.sleep(30)"
    ours = subprocess.Popen([sys.executable, "-c", code], preexec_fn=_idle_priority)
    theirs = subprocess.Popen([sys.executable, "-c", code], preexec_fn=_idle_priority,
                              env={**os.environ, RUN_MARK: "another-run"})
    try:
        def policies(p: subprocess.Popen) -> set[int]:
            wait_for(lambda: len(os.listdir(f"/proc/{p.pid}/task")) == 2, timeout=10)
            return {os.sched_getscheduler(int(t)) for t in os.listdir(f"/proc/{p.pid}/task")}
        assert policies(ours) == policies(theirs) == {os.SCHED_IDLE}
        assert full_speed() >= 2
        assert policies(ours) == {os.SCHED_OTHER}
        assert policies(theirs) == {os.SCHED_IDLE}
    finally:
        for p in (ours, theirs):
            p.kill()
            p.wait()
