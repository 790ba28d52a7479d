"""The lab's cache: artefacts built once and shared by every lab, test and process.

Lives in /var/cache/weft-lab, or wherever ``WEFT_LAB_CACHE`` points (CI points it at an
empty directory, so every run builds from nothing as a new machine does).  It holds the
Docker image tarball, the VM guest image, its ssh key and the VM wheelhouses.

Every fill goes through `fill`, because several builders may want the same entry at
once (the lab builds its hosts in parallel threads; two test runs or a test and a
`weft-lab up` are separate processes): builders take turns under an flock on a lock
file beside the entry, each builds under a temporary name of its own and renames it
into place when whole.  A reader therefore sees the entry complete or not at all, and
a builder that crashed leaves only a temporary that the next builder removes.
"""
from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

DEFAULT = "/var/cache/weft-lab"
PART = ".part-"         # infix of a fill in progress: NAME.part-PID-RANDOM


def root() -> Path:
    """The cache directory, read from the environment at each call (tests and CI set it)."""
    return Path(os.environ.get("WEFT_LAB_CACHE", DEFAULT))


@contextmanager
def locked(lock: Path, log: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive flock on `lock`: excludes other processes and, since each
    call opens its own file description, other threads of this one too.  `log` hears
    it when another holder makes this one wait."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if log:
                log(f"waiting for another builder of {lock.name[1:-5]} (a thread or process)")
            t0 = time.monotonic()
            fcntl.flock(fd, fcntl.LOCK_EX)
            if log:
                log(f"  ... it finished after {time.monotonic() - t0:.0f}s")
        yield
    finally:
        os.close(fd)        # closing releases the lock


def mounts_under(path: Path) -> list[str]:
    """Mount points strictly below `path` (a chroot's /proc, /sys, a bind-mounted /dev)."""
    prefix = str(path) + "/"
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f]
    return [p for p in points if p.startswith(prefix)]


def umount_below(path: Path) -> None:
    """Unmount everything below `path`, deepest first; raise if anything stays mounted,
    so that removing `path` can never reach the host's own /dev, /proc or /sys."""
    for point in sorted(mounts_under(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, stdin=subprocess.DEVNULL)
    left = mounts_under(path)
    if left:
        raise OSError(f"still mounted, not removing {path}: {', '.join(left)}")


def remove(path: Path) -> None:
    """Remove a file or a directory tree (after unmounting what is mounted below it)."""
    if path.is_dir() and not path.is_symlink():
        umount_below(path)
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def fill(path: Path, build: Callable[[Path], None],
         log: Callable[[str], None] | None = None) -> Path:
    """`path`, built by ``build(tmp)`` unless it exists already.

    `build` writes a file or a directory at the temporary path it is given; it is
    renamed to `path` only once `build` returned.  Concurrent callers wait for the
    first one and then find `path` built.
    """
    if path.exists():
        return path
    with locked(path.with_name(f".{path.name}.lock"), log):
        if path.exists():           # another builder finished while this one waited
            return path
        for stale in path.parent.glob(f"{path.name}{PART}*"):
            remove(stale)           # a crashed builder's: only the lock holder builds
        tmp = path.with_name(f"{path.name}{PART}{os.getpid()}-{secrets.token_hex(4)}")
        t0 = time.monotonic()
        try:
            build(tmp)
            os.replace(tmp, path)
        except BaseException:
            remove(tmp)
            raise
        if log:
            log(f"cached {path.name} in {time.monotonic() - t0:.0f}s")
    return path


class Heartbeat:
    """Says every `every` seconds that a long step is still running, and how far it got.

    `progress()` (optional) returns a short phrase such as "123 packages unpacked".  Used
    around steps that print nothing for minutes (debootstrap, pip wheel, mkfs), so a
    terminal or a CI log shows what is happening instead of silence.
    """

    def __init__(self, what: str, log: Callable[[str], None], every: float = 15.0,
                 progress: Callable[[], str] | None = None) -> None:
        self.what, self.log, self.every, self.progress = what, log, every, progress
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {what}", daemon=True)
        self.t0 = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            extra = self.progress() if self.progress else ""
            self.log(f"  ... {self.what}: {time.monotonic() - self.t0:.0f}s"
                     + (f", {extra}" if extra else ""))

    def __enter__(self) -> Heartbeat:
        self.log(f"{self.what} ...")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if exc[0] is None:
            self.log(f"{self.what}: done in {time.monotonic() - self.t0:.0f}s")
