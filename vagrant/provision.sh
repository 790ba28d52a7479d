#!/usr/bin/env bash
# Provision one weft host the way docs/docker.md says, offline: kernel OVS, real Docker
# (docker.io), weft from a wheelhouse, the systemd units, the same hosts.yaml and token on
# every host.  Used by vagrant/ (SRC = the rsynced vagrant/dist) and by `weft-lab vm`
# (SRC = the guests' read-only 9p share).
#   provision.sh NAME IP ROLE SRC      ROLE: controller (also runs weft-manager) | host
# SRC holds: wheels/ (weft and every dependency), hosts.yaml, weft.env (WEFT_API_TOKEN, the
# same on every host, and WEFT_API_HOST), optionally busybox-iperf3.tar (a test image).
# The packages (openvswitch-switch docker.io apparmor python3-venv ...) come with the image.
set -euo pipefail
NAME=$1 IP=$2 ROLE=${3:-host} SRC=${4:-/vagrant/dist}
VENV=/opt/weft/venv
for f in wheels hosts.yaml weft.env; do
  [ -e "$SRC/$f" ] || { echo "provision: $SRC/$f missing (run vagrant/build-box.sh)" >&2; exit 1; }
done
[ -x $VENV/bin/python ] || python3 -m venv $VENV
WHEEL=$(ls "$SRC"/wheels/weft_sdn-*.whl | tail -n 1)
# dependencies only from the wheelhouse (never PyPI); weft itself replaced on a re-run
REINSTALL=0; [ -x $VENV/bin/ovs-agent ] && REINSTALL=1
$VENV/bin/pip install -q --no-index --find-links "$SRC/wheels" "$WHEEL"
[ $REINSTALL = 1 ] && $VENV/bin/pip install -q --no-index --no-deps --force-reinstall "$WHEEL"
install -d -m 0755 /etc/weft /etc/systemd/system/docker.service.d
install -m 0644 "$SRC/hosts.yaml" /etc/weft/hosts.yaml
install -m 0600 "$SRC/weft.env" /etc/weft/weft.env
UNITS=$VENV/share/weft/systemd          # shipped in the wheel (setup.cfg data_files)
cp "$UNITS"/*.service /etc/systemd/system/
cp "$UNITS"/docker.service.d/10-weft.conf /etc/systemd/system/docker.service.d/
systemctl daemon-reload
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
