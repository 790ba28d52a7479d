"""The VM lab's wheelhouse cache: old requirement sets' wheelhouses do not pile up."""
from __future__ import annotations

import os
import time

from weft_lab import vm

HOUR = 3600.0


def test_stale_wheelhouses_are_other_sets_and_partial_builds_unused_for_the_grace():
    now = 1_000_000.0
    used = {"wheels-current": now - 10 * 24 * HOUR,      # old, but the current set: kept
            "wheels-old": now - 3 * HOUR,
            "wheels-old2.tmp": now - 5 * HOUR,             # a crashed build
            "wheels-other": now - 0.5 * HOUR,              # another checkout used it lately
            "wheels-building.tmp": now - 60,               # a build in progress elsewhere
            "debian12-abc.qcow2": now - 30 * 24 * HOUR,    # not a wheelhouse
            "id_ed25519": now - 30 * 24 * HOUR}
    assert vm.stale_wheelhouses(used, "wheels-current", now) == ["wheels-old", "wheels-old2.tmp"]
    assert vm.stale_wheelhouses(used, "wheels-current", now, grace=0) == \
        ["wheels-building.tmp", "wheels-old", "wheels-old2.tmp", "wheels-other"]


def test_wheelhouse_prunes_the_stale_ones_and_keeps_the_current(tmp_path, monkeypatch):
    monkeypatch.setattr(vm, "cache_dir", lambda: tmp_path)
    current = vm.wheelhouse_path()
    current.mkdir()
    (current / "six-1.0-py3-none-any.whl").write_text("x")
    old_time = time.time() - 3 * HOUR
    for name in ("wheels-0123456789ab", "wheels-ba9876543210.tmp", "wheels-fedcba987654"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "a.whl").write_text("x")
    for name in ("wheels-0123456789ab", "wheels-ba9876543210.tmp"):
        os.utime(tmp_path / name, (old_time, old_time))
    os.utime(current, (old_time, old_time))
    (tmp_path / "debian12-x.qcow2").write_text("image")
    os.utime(tmp_path / "debian12-x.qcow2", (old_time, old_time))

    assert vm.wheelhouse() == current        # exists already: nothing is built
    assert sorted(p.name for p in tmp_path.iterdir()) == \
        sorted([current.name, "wheels-fedcba987654", "debian12-x.qcow2"])
    assert (current / "six-1.0-py3-none-any.whl").exists()
    assert time.time() - current.stat().st_mtime < 60     # marked used: stays fresh
