"""A new user's first contact: `./dev.sh demo` on a machine where nothing is cached.

The demo once crashed on its first run (two lab hosts filled the image cache at once)
and only ever passed where the cache was warm, as on every developer's machine.  This
runs the demo exactly as dev.sh does (`python -m weft_lab.demo`), with the lab cache
pointed at an empty directory, and then a second time on the cache the first filled.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import lab_name

REPO = Path(__file__).resolve().parents[2]


def run_demo(topology: Path, cache_dir: Path) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "weft_lab.demo", "--topology", str(topology)],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "WEFT_LAB_CACHE": str(cache_dir)},
                          stdin=subprocess.DEVNULL)
    return proc, time.monotonic() - t0


def test_the_demo_passes_on_its_first_run_with_an_empty_cache(leaves_nothing, tmp_path):
    # the demo's own topology, under a name of the test's (the demo replaces a lab of its
    # name, and a user's `two` lab must survive the test suite)
    text = (REPO / "topologies" / "two-hosts.yaml").read_text()
    topology = tmp_path / "demo.yaml"
    topology.write_text(text.replace("name: two\n", f"name: {lab_name('demo')}\n", 1))
    cache_dir = tmp_path / "cache"
    assert not cache_dir.exists()

    first, first_s = run_demo(topology, cache_dir)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "DEMO OK" in first.stdout
    assert "Traceback" not in first.stdout + first.stderr
    tarballs = list(cache_dir.glob("busybox-iperf3-*.tar"))
    assert len(tarballs) == 1, sorted(p.name for p in cache_dir.iterdir())
    assert not list(cache_dir.glob("*.part-*")), "a temporary was left in the cache"
    built = tarballs[0].stat().st_mtime

    second, second_s = run_demo(topology, cache_dir)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "DEMO OK" in second.stdout
    assert tarballs[0].stat().st_mtime == built, "the warm run rebuilt the image"
    print(f"demo: first run (empty cache) {first_s:.1f}s, second run {second_s:.1f}s")
