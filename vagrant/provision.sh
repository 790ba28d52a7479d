#!/usr/bin/env bash
# Provision one weft host the way docs/docker.md says: kernel OVS, real Docker (docker.io),
# weft from the synced source, the systemd units, the same hosts.yaml and token everywhere.
set -euo pipefail
NAME=$1 IP=$2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openvswitch-switch docker.io \
    python3-venv iperf3 ethtool iproute2
install -d /opt/weft /etc/weft /etc/systemd/system/docker.service.d
[ -x /opt/weft/venv/bin/python ] || python3 -m venv /opt/weft/venv
/opt/weft/venv/bin/pip install -q /vagrant-src
cp /vagrant-src/vagrant/hosts.yaml /etc/weft/hosts.yaml
# One token for the whole cluster (the synced folder carries it to every host): agents
# report attachments with it; without it host2's containers are never bound.
[ -s /vagrant-src/vagrant/.token ] || openssl rand -hex 16 > /vagrant-src/vagrant/.token
install -m 0600 /dev/null /etc/weft/weft.env
{ echo "WEFT_API_TOKEN=$(cat /vagrant-src/vagrant/.token)"; echo "WEFT_API_HOST=192.168.56.11"; } \
    > /etc/weft/weft.env
cp /vagrant-src/systemd/*.service /etc/systemd/system/
cp /vagrant-src/systemd/docker.service.d/10-weft.conf /etc/systemd/system/docker.service.d/
systemctl daemon-reload
[ "$NAME" = host1 ] && systemctl enable --now weft-manager
systemctl enable --now weft-ovs-agent weft-docker-plugin
# Docker's default docker0 was made before weft's options existed: recreate it with them.
systemctl stop docker
ip link del docker0 2>/dev/null || true
systemctl start docker
echo "weft on $NAME ($IP): journalctl -u weft-ovs-agent; Docker options in /run/weft/subnet.env"
