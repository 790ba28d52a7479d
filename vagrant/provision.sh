#!/usr/bin/env bash
# Provision one weft host the way docs/docker.md says, offline: kernel OVS, real Docker
# (docker.io), weft installed by docs/docker.md's install commands (install-weft.sh, that
# block byte for byte) from dist/, then the per-cluster files and the units enabled.  Used by
# vagrant/ (SRC = the rsynced vagrant/dist) and by `weft-lab vm` (SRC = the guests'
# read-only 9p share).
#   provision.sh NAME IP ROLE SRC      ROLE: controller (also runs weft-manager) | host
# SRC holds (weft_lab.dist.stage): dist/ (weft's wheel and every dependency's),
# install-weft.sh, and hosts.yaml, weft.env (WEFT_API_TOKEN, the same on every host, and
# WEFT_API_HOST), optionally busybox-iperf3.tar (a test image).
# The packages (openvswitch-switch docker.io apparmor python3-venv ...) come with the image.
set -euo pipefail
NAME=$1 IP=$2 ROLE=${3:-host} SRC=${4:-/vagrant/dist}
VENV=/opt/weft/venv
for f in dist install-weft.sh hosts.yaml weft.env; do
  [ -e "$SRC/$f" ] || { echo "provision: $SRC/$f missing (run vagrant/build-box.sh)" >&2; exit 1; }
done
# A re-provision installs the dist/ given now even if its version is the one installed
# (the documented `pip install --upgrade` keeps an installed weft-sdn of the same version).
[ -x $VENV/bin/pip ] && $VENV/bin/pip uninstall -q -y weft-sdn 2>/dev/null || true
# docs/docker.md's commands, run as the docs say: in the directory holding dist/
(cd "$SRC" && bash -euo pipefail ./install-weft.sh)
install -d -m 0755 /etc/weft
install -m 0644 "$SRC/hosts.yaml" /etc/weft/hosts.yaml
install -m 0600 "$SRC/weft.env" /etc/weft/weft.env
systemctl enable --now openvswitch-switch
[ "$ROLE" = controller ] && systemctl enable --now weft-manager
systemctl enable --now weft-ovs-agent weft-docker-plugin
# Docker after the agent wrote its options; a docker0 made before them goes.
systemctl stop docker.service docker.socket 2>/dev/null || true
ip link del docker0 2>/dev/null || true
systemctl enable --now containerd docker.socket docker.service
if [ -f "$SRC/busybox-iperf3.tar" ] && ! docker image inspect weft-lab/busybox:1 >/dev/null 2>&1; then
  docker import "$SRC/busybox-iperf3.tar" weft-lab/busybox:1 >/dev/null
fi
echo "weft on $NAME ($IP, $ROLE): journalctl -u weft-ovs-agent; Docker options in /run/weft/subnet.env"
