"""The lab cache fills safely from many threads and processes at once, from nothing.

The first `./dev.sh demo` on a fresh machine once crashed: both lab hosts built the
image tarball at the same time under one temporary name, and the loser's rename found
it gone.  These tests fill an empty cache the way the lab does (hosts in threads, labs
and test runs in processes) and check that every caller gets the whole entry.
"""
from __future__ import annotations

import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from weft_lab import cache, docker

REPO = Path(__file__).resolve().parents[2]


def test_the_image_tarball_fills_an_empty_cache_from_threads_and_processes_at_once(
        tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"          # does not exist yet: a fresh machine
    monkeypatch.setenv("WEFT_LAB_CACHE", str(cache_dir))
    code = "from weft_lab import docker; print(docker.image_tarball())"
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    start = threading.Barrier(4)

    def one(_: int) -> Path:
        start.wait()
        return docker.image_tarball()

    with ThreadPoolExecutor(max_workers=4) as pool:
        in_threads = list(pool.map(one, range(4)))
    in_procs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        in_procs.append(Path(out.strip()))
    paths = set(in_threads) | set(in_procs)
    assert len(paths) == 1, paths
    path = paths.pop()
    assert path.parent == cache_dir
    with tarfile.open(path) as tar:             # whole: a truncated tar fails here
        names = set(tar.getnames())
    assert {"bin/busybox", "usr/bin/iperf3", "bin/sh", "etc/passwd"} <= names
    assert [p.name for p in cache_dir.iterdir() if not p.name.startswith(".")] == [path.name], \
        "a temporary was left in the cache"


def test_fill_builds_once_and_waiters_never_see_a_half_written_entry(tmp_path):
    path = tmp_path / "entry"
    builds = []
    seen: list[str] = []
    stop = threading.Event()

    def build(tmp: Path) -> None:
        builds.append(tmp)
        with open(tmp, "w") as f:
            for i in range(20):
                f.write(f"{i}\n")
                f.flush()
                time.sleep(0.01)
            f.write("end\n")

    def watch() -> None:        # a reader polling, as `if path.exists(): use it` does
        while not (stop.is_set() and seen):
            if path.exists():
                seen.append(path.read_text())
            time.sleep(0.001)

    reader = threading.Thread(target=watch)
    reader.start()
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            results = list(pool.map(lambda _: cache.fill(path, build), range(6)))
    finally:
        stop.set()
        reader.join()
    assert results == [path] * 6
    assert len(builds) == 1, "every caller built it"
    assert path.read_text().endswith("end\n")
    assert seen and all(text.endswith("end\n") for text in seen), "a reader saw a partial entry"


def test_a_failed_or_killed_build_leaves_nothing_taken_for_whole(tmp_path):
    path = tmp_path / "image"

    def broken(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "half").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        cache.fill(path, broken)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == [tmp_path / ".image.lock"]
    # a builder killed mid-way (no chance to clean up) leaves its temporary behind
    killed = tmp_path / f"image{cache.PART}999999-dead"
    killed.mkdir()
    (killed / "half").write_text("x")

    def good(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / "whole").write_text("ok")

    assert cache.fill(path, good) == path
    assert (path / "whole").read_text() == "ok"
    assert not killed.exists()


def test_a_temporary_with_something_mounted_below_is_never_deleted_through_the_mount(tmp_path):
    stale = tmp_path / f"image{cache.PART}1-x"
    (stale / "proc").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(stale / "proc")], check=True)
    try:
        (stale / "proc" / "precious").write_text("y")
        cache.remove(stale)         # unmounts first, then removes
        assert not stale.exists()
        assert cache.mounts_under(tmp_path) == []
    finally:
        subprocess.run(["umount", "-l", str(stale / "proc")], capture_output=True)
