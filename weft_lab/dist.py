"""The artifact a real host installs, and the commands that install it.

`./dev.sh dist` makes dist/: weft-sdn's wheel and sdist plus the wheel of every
dependency, a complete wheelhouse, so a host without PyPI installs weft with
`pip install --no-index --find-links ./dist weft-sdn` (weft-sdn is not on PyPI).

The install commands live in ONE place, docs/docker.md, between the markers BEGIN and
END around a ```sh block.  `stage` copies that block byte for byte into
install-weft.sh beside a dist/, and vagrant/provision.sh runs it there: the VM lab
and vagrant/ install weft exactly as the docs say, so a change of the docs is what
the VM test runs next.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "docker.md"
BEGIN = "<!-- weft-install:begin -->"
END = "<!-- weft-install:end -->"
SCRIPT = "install-weft.sh"
# What a host needs from the wheel besides code (setup.cfg data_files): checked in every
# build, since setuptools silently leaves out a data file the sdist did not carry.
DATA_FILES = ("share/weft/systemd/weft-manager.service",
              "share/weft/systemd/weft-ovs-agent.service",
              "share/weft/systemd/weft-docker-plugin.service",
              "share/weft/systemd/docker.service.d/10-weft.conf",
              "share/weft/examples/hosts.yaml",
              "share/weft/examples/hosts-gre.yaml")
_FENCE = re.compile(r"\A\s*```sh\n(?P<body>.*?\n)```\s*\Z", re.S)


class DistError(RuntimeError):
    """dist/ or the install commands could not be made; the message says why."""


def install_block(text: str, source: str = str(DOC)) -> str:
    """The shell commands between BEGIN and END: the body of the one ```sh block there."""
    if text.count(BEGIN) != 1 or text.count(END) != 1:
        raise DistError(f"{source}: needs exactly one {BEGIN} and one {END}, found "
                        f"{text.count(BEGIN)} and {text.count(END)}")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    m = _FENCE.match(text[start:end]) if start <= end else None
    if not m or "```" in m["body"]:
        raise DistError(f"{source}: between {BEGIN} and {END} must be one ```sh block "
                        "and nothing else")
    return m["body"]


def write_install_script(dest: Path) -> Path:
    """docs/docker.md's install block as dest/install-weft.sh, unchanged."""
    path = dest / SCRIPT
    path.write_text(install_block(DOC.read_text(encoding="utf-8")), encoding="utf-8")
    path.chmod(0o755)
    return path


def _run(argv: list[str], timeout: float) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise DistError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")


def build(out: Path, deps: Path | None = None) -> Path:
    """weft-sdn's sdist and wheel (the wheel built from the sdist, so the sdist is
    complete) and every dependency's wheel, in `out`; returns the wheel.

    The dependencies come from `deps` (a wheelhouse; nothing else is consulted) or, without
    it, from PyPI through `pip wheel`.  Older weft-sdn builds in `out` are removed, so the
    wheelhouse holds one weft.
    """
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("weft_sdn-*.whl"), *out.glob("weft_sdn-*.tar.gz")]:
        old.unlink()
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO)], timeout=900)
    wheels = sorted(out.glob("weft_sdn-*.whl"))
    if len(wheels) != 1 or not list(out.glob("weft_sdn-*.tar.gz")):
        raise DistError(f"python -m build left {[p.name for p in out.iterdir()]} in {out}, "
                        "not one weft_sdn wheel and sdist")
    wheel = wheels[0]
    with zipfile.ZipFile(wheel) as z:
        have = {n.split(".data/data/", 1)[1] for n in z.namelist() if ".data/data/" in n}
    missing = [f for f in DATA_FILES if f not in have]
    if missing:
        raise DistError(f"{wheel.name} lacks {', '.join(missing)} (setup.cfg data_files)")
    source = ["--no-index", "--find-links", str(deps)] if deps else []
    _run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(out), "--find-links", str(out),
          *source, str(wheel)], timeout=1800)
    return wheel


def stage(dest: Path, deps: Path | None = None) -> Path:
    """What installs weft on a host, in `dest`: dist/ and install-weft.sh beside it
    (run from `dest`, as docs/docker.md's commands are run from the folder holding dist/)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(dest / "dist", ignore_errors=True)
    build(dest / "dist", deps)
    write_install_script(dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m weft_lab.dist", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "dist", help="default: %(default)s")
    ap.add_argument("--find-links", type=Path,
                    help="take the dependencies from this wheelhouse only (default: PyPI)")
    args = ap.parse_args(argv)
    try:
        wheel = build(args.out, args.find_links)
    except DistError as exc:
        print(f"dist: {exc}", file=sys.stderr)
        return 1
    files = sorted(args.out.iterdir())
    print(f"{args.out}: {wheel.name} and {len(files) - 1} more "
          f"({sum(f.stat().st_size for f in files) // 1024} KiB in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
