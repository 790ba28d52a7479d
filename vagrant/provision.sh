#!/usr/bin/env bash
# Provision one weft host: Docker-style docker0, kernel OVS, the agent; the controller on host1.
set -euo pipefail
NAME=$1 IP=$2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openvswitch-switch python3-venv iperf3 ethtool
python3 -m venv /opt/weft-venv
/opt/weft-venv/bin/pip install -q -e /opt/weft
install -d /etc/weft
cp /opt/weft/vagrant/hosts.yaml /etc/weft/hosts.yaml
# docker0 as Docker makes it (install docker.io to run real containers on it)
ip link show docker0 >/dev/null 2>&1 || ip link add docker0 type bridge
ip link set docker0 up
if [ "$NAME" = host1 ]; then
  WEFT_API_TOKEN=$(cat /etc/weft/token 2>/dev/null || openssl rand -hex 16 | tee /etc/weft/token)
  export WEFT_API_TOKEN
  nohup /opt/weft-venv/bin/weft-manager controller.app --weft-hosts /etc/weft/hosts.yaml \
      --weft-db /var/lib/weft/weft.db --wsapi-host 192.168.56.11 \
      >/var/log/weft-manager.log 2>&1 &
fi
nohup /opt/weft-venv/bin/ovs-agent --peers /etc/weft/hosts.yaml --host "$NAME" \
    >/var/log/ovs-agent.log 2>&1 &
echo "weft on $NAME ($IP): see /var/log/ovs-agent.log; Docker options in /run/weft/subnet.env"
