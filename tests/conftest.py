"""Shared fixtures: lab tests need root and Open vSwitch, and must leave nothing behind."""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from weft_lab import lab as L
from weft_lab import nodes as N
from weft_lab.shell import netns_list, run

T = TypeVar("T")
LAB_COMMANDS = ("ovsdb-server", "ovs-vswitchd", "iperf3", "ping", "tcpdump",
                "ovs-agent", "weft-manager", "dockerd", "containerd", "docker-proxy",
                "containerd-shim-runc-v2", "etcd")


LAB_MODULES = ("ovs_agent.cli", "controller.manager", "weft_lab.keeper", "weft_lab.outside")

# Every process this test run starts inherits this mark (the lab's keeper passes its
# environment on).  A process carrying another run's mark belongs to a neighbour (a
# second pytest on the same machine) and is none of this run's business.
RUN_MARK = "WEFT_TEST_RUN"
os.environ[RUN_MARK] = secrets.token_hex(6)


def _foreign(pid: Path) -> bool:
    """True if the process carries another test run's mark."""
    try:
        env = (pid / "environ").read_bytes().split(b"\0")
    except OSError:
        return False
    ours = f"{RUN_MARK}={os.environ[RUN_MARK]}".encode()
    return any(e.startswith(RUN_MARK.encode() + b"=") and e != ours for e in env)


def live_processes() -> set[tuple[int, str]]:
    """Non-zombie processes of the kinds a lab starts (pid, command).

    Matched by program name (argv[0], or the script a Python runs) and by module, not
    by substring: a `flock ... firstping.py` waiting its turn is not a lab's ping.
    Another test run's processes (its mark, above) are left out.
    """
    found = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            argv = (d / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[0] == "Z" or not argv[0]:
            continue
        names = {os.path.basename(a) for a in argv[:2]}
        if (names & set(LAB_COMMANDS) or set(argv[:4]) & set(LAB_MODULES)) \
                and not _foreign(d):
            found.add((int(d.name), " ".join(argv).strip()))
    return found


def snapshot() -> dict:
    return {"netns": set(netns_list()) - BACKGROUND_NETNS, "procs": live_processes(),
            "links": {line.split(":")[1].strip() for line in
                      run(["ip", "-o", "link", "show"]).splitlines() if ":" in line},
            "run": set(os.listdir(N.RUN_ROOT)) if N.RUN_ROOT.exists() else set(),
            "mounts": {line.split()[4] for line in Path("/proc/self/mountinfo").read_text()
                       .splitlines() if str(N.RUN_ROOT) in line.split()[4]},
            "cgroups": {str(g) for pattern in ("weft-lab.*", "*/weft-lab.*")
                        for g in Path("/sys/fs/cgroup").glob(pattern)}}


@contextmanager
def converged_lab(topo) -> Iterator:
    """A lab for a whole test module: up, converged, and afterwards gone without a trace."""
    from weft_lab.cluster import wait_converged
    before = snapshot()
    L.up(topo)
    try:
        wait_converged(topo)
        yield topo
    finally:
        L.down(topo.name)
    after = snapshot()
    assert after["netns"] - before["netns"] == set(), "namespaces left behind"
    assert after["procs"] - before["procs"] == set(), "processes left behind"
    assert after["cgroups"] - before["cgroups"] == set(), "docker cgroups left behind"


def _running_threads() -> set[threading.Thread]:
    """Live non-daemon threads: each one keeps the interpreter from exiting."""
    return {t for t in threading.enumerate()
            if t is not threading.main_thread() and not t.daemon and t.is_alive()}


def _left_running(threads: set[threading.Thread], grace: float) -> list[threading.Thread]:
    deadline = time.monotonic() + grace
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    return sorted((t for t in threads if t.is_alive()), key=lambda t: t.name)


@pytest.fixture(autouse=True)
def no_thread_left_running():
    """A non-daemon thread that a test leaves running keeps pytest from ever exiting: CI
    then prints "N passed" and hits its time limit.  Fail the test that left it."""
    before = _running_threads()
    yield
    left = _left_running(_running_threads() - before, grace=5)
    assert not left, f"non-daemon threads left running: {[t.name for t in left]}"


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """The last line of defence for the same hang (a module or session fixture's thread),
    after the summary: name the threads with their stacks and end the process, failed."""
    left = _left_running(_running_threads(), grace=5)
    if not left:
        return
    frames = sys._current_frames()
    for t in left:
        stack = "".join(traceback.format_stack(frames[t.ident])) if t.ident in frames else ""
        sys.__stderr__.write(f"\nnon-daemon thread left running: {t.name}\n{stack}")
    sys.__stderr__.flush()
    sys.stdout.flush()
    os._exit(1)


@pytest.fixture(scope="session")
def progress(pytestconfig) -> Callable[[str], None]:
    """A log for long steps (image builds, VM boots) that reaches the terminal and the CI
    log as it happens, also while pytest captures output: minutes of silence look like a
    hang, and a real hang then shows where it stopped."""
    capman = pytestconfig.pluginmanager.getplugin("capturemanager")

    def log(msg: str) -> None:
        with capman.global_and_fixture_disabled():
            sys.stdout.write(f"\n[{time.strftime('%H:%M:%S')}] {msg}")
            sys.stdout.flush()
    return log


_IMAGE_BUILD: dict = {}
VM_LOCK = "/tmp/weft-lab-tests.lock"        # one VM lab at a time on this machine
_EARLY_VM: dict = {}
# Namespaces of the VM lab that comes up in the background while the unit tests run: no
# test's business (its own fixture checks them).
BACKGROUND_NETNS: set[str] = set()


def _rank(item) -> int:
    """Lab tests first (they measure latency and throughput: only the niced unit tests
    run beside them), the VM tests last, everything else (integration tests and the
    unit tests marked `foreground`, which measure nothing) in between."""
    return 0 if item.nodeid.startswith("tests/lab/") else 2 if item.get_closest_marker("vm") else 1


# The unit tests beside the lab tests.  The lab tests leave most of the machine idle (they
# wait on dockerd, pings, timers) and the unit tests measure nothing, so with lab tests in
# the run the unit tests go to a second pytest, niced, started with the run, except the
# modules marked `foreground` (they bound time or make named namespaces, which a lab's
# leak check would see).  Its processes carry its own run mark (RUN_MARK), so neither run
# counts the other's as left behind.  It has to be done before the VM tests, which
# measure: the session waits for it there, and its failures fail the run.
BESIDE_ENV = "WEFT_SUITE_BESIDE"
_BESIDE: dict = {}


def _beside_labs(item) -> bool:
    return item.nodeid.startswith("tests/unit/") and not item.get_closest_marker("foreground")


@pytest.hookimpl(trylast=True)              # after -k/-m have deselected
def pytest_collection_modifyitems(session, config, items) -> None:
    """Lab tests first, VM tests last (`_rank`); with lab tests in the run, the unit tests
    that may run beside them leave this session for the second pytest."""
    items.sort(key=_rank)                   # stable: each group keeps its order
    beside = [i.nodeid for i in items if _beside_labs(i)]
    if os.environ.get(BESIDE_ENV) or config.option.collectonly or not beside \
            or not any(_rank(i) == 0 for i in items):
        return
    chosen = set(beside)
    items[:] = [i for i in items if i.nodeid not in chosen]
    _BESIDE["ids"] = beside


def _start_beside(session) -> None:
    from weft_lab import cache
    cache.root().mkdir(parents=True, exist_ok=True)
    log = cache.root() / "unit-beside.log"
    out = open(log, "w")
    _BESIDE.update(log=log, out=out, started=time.monotonic(), proc=subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=10",
         *_BESIDE["ids"]], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env={**os.environ, BESIDE_ENV: "1"}, cwd=str(session.config.rootpath),
        preexec_fn=lambda: os.nice(10)))
    session.config.pluginmanager.getplugin("terminalreporter").write_line(
        f"[{time.strftime('%H:%M:%S')}] {len(_BESIDE['ids'])} unit tests run in a second "
        f"pytest beside the lab tests (niced; log: {log})")


def await_beside() -> None:
    """Wait for the unit tests beside (before the VM tests, and at the end)."""
    proc = _BESIDE.get("proc")
    if proc is None or "rc" in _BESIDE:
        return
    t0 = time.monotonic()
    try:
        _BESIDE["rc"] = proc.wait()
    finally:
        _BESIDE["out"].close()
        if proc.poll() is None:
            _stop(proc)
            _BESIDE["rc"] = proc.returncode
    _BESIDE["waited"] = time.monotonic() - t0
    _BESIDE["took"] = time.monotonic() - _BESIDE["started"]


def pytest_collection_finish(session) -> None:
    """When the VM tests will run:
    - and the guest image is not cached (always so on a cold cache: ./dev.sh test, CI),
      build it now, in the background, while the other tests run: minutes mostly spent
      waiting on the Debian mirror and the disk;
    - mark the first test after the lab tests: there the guests start coming up in the
      background (`weft-lab vm up`: boot and install under QEMU's emulator, minutes of
      CPU), beside the integration tests and the unit tests left in this session, which
      measure nothing.  Never beside the lab tests: emulated guests disturb them niced
      and even at idle priority (SCHED_IDLE): latency bounds failed both ways (tried:
      docs/lab.md).  The VM tests' fixture takes the lab over."""
    if "ids" in _BESIDE:
        _start_beside(session)
    items = session.items
    if os.geteuid() != 0 or not any(i.get_closest_marker("vm") for i in items) \
            or not shutil.which("qemu-system-x86_64") or os.environ.get("WEFT_VM_LAB"):
        return
    first = next(i for i in items if _rank(i) > 0)
    if _rank(first) == 1:
        _EARLY_VM["at"] = first.nodeid
    from weft_lab import cache, vm
    if all(p.exists() for p in vm.image_paths().values()):
        return
    cache.root().mkdir(parents=True, exist_ok=True)
    log = cache.root() / "vm-image-build.log"
    out = open(log, "w")
    _IMAGE_BUILD["proc"] = subprocess.Popen(
        [sys.executable, "-m", "weft_lab.cli", "vm", "image"], stdout=out,
        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parent.parent)
    _IMAGE_BUILD["out"] = out
    session.config.pluginmanager.getplugin("terminalreporter").write_line(
        f"[{time.strftime('%H:%M:%S')}] building the VM guest image in the background "
        f"while the other tests run (log: {log})")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item) -> None:
    """At the test marked at collection, bring the VM lab up in the background (niced:
    the tests beside it keep their CPU).  If another VM lab holds the lock, nothing
    starts here and the VM tests' fixture does it all itself, later.  Before the first VM
    test, wait for the unit tests beside (the VM tests measure)."""
    if _rank(item) == 2:
        await_beside()
    if _EARLY_VM.get("at") != item.nodeid:
        return
    del _EARLY_VM["at"]
    import fcntl

    from weft_lab import cache, vm
    lock = open(VM_LOCK, "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        return
    cache.root().mkdir(parents=True, exist_ok=True)
    name = lab_name("v")
    BACKGROUND_NETNS.add(vm.netns(name))
    log = cache.root() / f"vm-up-{name}.log"
    out = open(log, "w")
    before = snapshot()
    _EARLY_VM.update(name=name, lock=lock, out=out, log=log, before=before,
                     started=time.monotonic(), proc=subprocess.Popen(
                         [sys.executable, "-m", "weft_lab.cli", "vm", "up", "--lab", name],
                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         cwd=Path(__file__).resolve().parent.parent,
                         preexec_fn=lambda: os.nice(10)))
    capman = item.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        sys.stdout.write(f"\n[{time.strftime('%H:%M:%S')}] the lab tests are done: bringing "
                         f"the VM lab {name} up in the background beside the other tests "
                         f"(log: {log})\n")
        sys.stdout.flush()




def early_vm_lab() -> dict | None:
    """The VM lab started in the background (name, lock, log, snapshot before), or None.
    Taken once: the caller owns it from then on (waits for it, downs it, unlocks)."""
    if "proc" not in _EARLY_VM:
        return None
    taken = dict(_EARLY_VM)
    _EARLY_VM.clear()
    return taken


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def pytest_sessionfinish(session, exitstatus) -> None:
    """The unit tests beside are waited for (stopped if the run was interrupted) and their
    failures fail the run; the background image build and a background VM lab that no
    test took over (the run stopped before the VM tests) end with the session."""
    if "proc" in _BESIDE and "rc" not in _BESIDE:
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            _stop(_BESIDE["proc"])
        await_beside()
    if _BESIDE.get("rc") not in (None, 0):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    proc = _IMAGE_BUILD.pop("proc", None)
    if proc is not None:
        _stop(proc)
        _IMAGE_BUILD.pop("out").close()
    early = early_vm_lab()
    if early is not None:
        from weft_lab import vm
        _stop(early["proc"])
        vm.down(early["name"])
        early["out"].close()
        early["lock"].close()


_MODULE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report) -> None:
    module = report.nodeid.split("::")[0]
    _MODULE_SECONDS[module] = _MODULE_SECONDS.get(module, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter) -> None:
    """Seconds per test module (setup, calls, teardown; a module's lab included): where
    the suite's time goes, to keep a cold run under its budget (README)."""
    if "rc" in _BESIDE:
        lines = _BESIDE["log"].read_text(errors="replace").splitlines()
        failed = _BESIDE["rc"] != 0
        terminalreporter.section(f"the {len(_BESIDE['ids'])} unit tests beside the lab "
                                 f"tests: {'FAILED' if failed else 'passed'} (exit "
                                 f"{_BESIDE['rc']}, reaped {_BESIDE['took']:.0f}s after "
                                 f"the start, waited for {_BESIDE['waited']:.0f}s; "
                                 f"{_BESIDE['log']})",
                                 red=failed, green=not failed)
        marks = ("= FAILURES =", "= ERRORS =") if failed else ("seconds per module",)
        start = next((k for k, line in enumerate(lines) if any(m in line for m in marks)),
                     max(0, len(lines) - 40))
        for line in lines[start:][-600:]:
            terminalreporter.write_line(line)
    if len(_MODULE_SECONDS) < 2:
        return
    terminalreporter.section("seconds per module (the 20 slowest)")
    top = sorted(_MODULE_SECONDS.items(), key=lambda kv: -kv[1])
    for module, secs in top[:20]:
        terminalreporter.write_line(f"{secs:8.1f}s  {module}")
    rest = top[20:]
    terminalreporter.write_line(f"{sum(s for _, s in rest):8.1f}s  the other {len(rest)} modules")


def lab_name(prefix: str = "t") -> str:
    """A fresh lab name, so tests never collide with a user's lab."""
    return f"{prefix}{secrets.token_hex(3)}"


def wait_for(cond: Callable[[], T], timeout: float = 20, what: str = "condition") -> T:
    """Poll `cond` every 0.2 s until it returns something true, and return that; an
    AssertionError naming `what` after `timeout` seconds (lab tests wait on real daemons)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def leaves_nothing():
    """Assert that the test leaves no namespace, process, link or state behind."""
    if os.geteuid() != 0 or not shutil.which("ovs-vswitchd"):
        pytest.fail("lab tests need root and openvswitch-switch (run ./dev.sh test)")
    before = snapshot()
    yield before
    after = snapshot()
    assert after["netns"] - before["netns"] == set(), "namespaces left behind"
    assert after["procs"] - before["procs"] == set(), "processes left behind"
    assert after["links"] - before["links"] == set(), "links left in the root namespace"
    assert after["run"] - before["run"] == set(), "lab state left in " + str(N.RUN_ROOT)
    assert after["mounts"] - before["mounts"] == set(), "mounts left behind"
    assert after["cgroups"] - before["cgroups"] == set(), "docker cgroups left behind"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests leave files for people to look at (screenshots): $WEFT_ARTIFACTS, by
    default artifacts/ at the top of the tree (gitignored); kept after the run."""
    root = Path(os.environ.get("WEFT_ARTIFACTS") or Path(__file__).resolve().parents[1] / "artifacts")
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="module")
def etcd_server():
    """One real etcd member on loopback for a test module (killed and removed after)."""
    if not shutil.which("etcd"):
        pytest.fail("the etcd store tests need etcd-server (run ./dev.sh setup)")
    from weft_lab.etcd import etcd_cluster
    with etcd_cluster(1) as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "etcd"])
def make_store(request, tmp_path):
    """A factory of stores on each backend: ``make_store(name)`` opens the store called
    ``name`` (a SQLite file in tmp_path, or a fresh key prefix on a real etcd); the same
    name opens the same store again, as a restart (or a second controller) would."""
    from controller.store import Store
    stores: list = []
    if request.param == "sqlite":
        # in /dev/shm like the etcd member's data (weft_lab.etcd): what these tests prove
        # is the store's logic, and a commit's fsync on disk would be most of their time
        shm = Path(tempfile.mkdtemp(prefix="weft-store-", dir="/dev/shm")) \
            if os.path.isdir("/dev/shm") else tmp_path
        request.addfinalizer(lambda: shutil.rmtree(shm, ignore_errors=True))

        def make(name: str = "weft.db"):
            stores.append(Store(shm / name))
            return stores[-1]
    else:
        from controller.store.etcd import EtcdStore
        server = request.getfixturevalue("etcd_server")
        base = f"/test-{secrets.token_hex(6)}"

        def make(name: str = "weft.db"):
            stores.append(EtcdStore(server.endpoints(), f"{base}/{name}/", access=server.access))
            return stores[-1]
    make.backend = request.param        # type: ignore[attr-defined]
    yield make
    for s in stores:
        s.close()


def api_client(core, token: str):
    """The REST app of ``core`` in a test client that sends ``token`` and returns 5xx
    answers instead of raising (what a real client sees)."""
    from fastapi.testclient import TestClient

    from controller.rest.app import create_app
    client = TestClient(create_app(core, token), raise_server_exceptions=False)
    client.headers["Authorization"] = f"Bearer {token}"
    return client
