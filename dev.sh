#!/usr/bin/env bash
# One entry point for a fresh Debian 12 machine (run as root):
#   ./dev.sh demo   install everything, bring up the two-host lab, show traffic, tear down
#   ./dev.sh test   install everything, run the whole test suite
#   ./dev.sh bench  install everything (+ matplotlib), run the benchmarks (--quick: fewer)
#   ./dev.sh setup  install only
#   ./dev.sh dist   install, then build dist/: weft-sdn's wheel and sdist and every dependency's
#                   wheel, what docs/docker.md installs on a host (--find-links DIR: deps from DIR)
# Idempotent: a second run only checks what is already there.
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(openvswitch-switch iperf3 ethtool tcpdump iproute2 iputils-ping arping chromium
              docker.io busybox-static util-linux curl nftables
              procps python3-venv python3-dev gcc etcd-server etcd-client
              qemu-system-x86 qemu-utils debootstrap openssh-client e2fsprogs
              prometheus)
VENV=${WEFT_VENV:-.venv}

setup() {
  if [ "$(id -u)" != 0 ]; then echo "dev.sh: run as root (the lab creates namespaces)" >&2; exit 1; fi
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  # The lab runs its own OVS per host namespace; a system-wide one is not needed.
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== python venv in $VENV"
    python3 -m venv "$VENV"
  fi
  if ! "$VENV/bin/python" -c 'import controller, ovs_agent, weft_lab, pytest, hypothesis' 2>/dev/null \
     || [ setup.cfg -nt "$VENV/.installed" ]; then
    echo "== pip install -e .[test]"
    "$VENV/bin/pip" install -q --upgrade pip >/dev/null
    "$VENV/bin/pip" install -q -e '.[test]'
    touch "$VENV/.installed"
  fi
}

# The test suite starts cold, as a new user's machine does: every weft cache (the lab's
# image tarball, the VM guest image, the wheelhouses) goes to a fresh empty directory,
# removed afterwards.  WEFT_LAB_CACHE=/var/cache/weft-lab ./dev.sh test reuses a warm one.
cold_cache() {
  if [ -n "${WEFT_LAB_CACHE:-}" ]; then
    echo "== lab cache: $WEFT_LAB_CACHE (given)"
    return
  fi
  WEFT_LAB_CACHE=$(mktemp -d /var/tmp/weft-cache.XXXXXX)
  export WEFT_LAB_CACHE
  trap '"$VENV/bin/python" -c "import sys; from pathlib import Path; from weft_lab.cache import remove; remove(Path(sys.argv[1]))" "$WEFT_LAB_CACHE"' EXIT
  echo "== lab cache: $WEFT_LAB_CACHE (empty: everything is built from nothing)"
}

case "${1:-}" in
  setup) setup ;;
  demo)  setup; exec "$VENV/bin/python" -m weft_lab.demo "${@:2}" ;;
  test)  setup; cold_cache
         "$VENV/bin/ruff" check . && "$VENV/bin/mypy" && "$VENV/bin/python" -m pytest -q --durations=25 "${@:2}" ;;
  bench) setup; "$VENV/bin/pip" install -q -e '.[test,bench]'
         exec "$VENV/bin/python" -m weft_lab.bench "${@:2}" ;;
  dist)  setup; exec "$VENV/bin/python" -m weft_lab.dist "${@:2}" ;;
  *) echo "usage: $0 demo|test|bench|setup|dist" >&2; exit 2 ;;
esac
