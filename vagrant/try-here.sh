#!/usr/bin/env bash
# `vagrant up` of vagrant/ on this machine, with libvirt confined to a private namespace:
#   vagrant/try-here.sh up       box (vagrant/build-box.sh), libvirtd, vagrant up --provider libvirt
#   vagrant/try-here.sh check    a container on host1 pings a container on host2 (docker0)
#   vagrant/try-here.sh run CMD  any command (vagrant ssh host1 -c ..., virsh list) in there
#   vagrant/try-here.sh down     vagrant destroy, stop everything by PID, remove the namespace
# Root, Debian 12, after ./dev.sh setup and
#   apt-get install vagrant vagrant-libvirt libvirt-daemon-system dnsmasq-base qemu-system-x86
# (installing them starts no daemon here: policy-rc.d; on a machine where it does, stop
# libvirtd/virtlogd first: this script runs its own).
#
# Why a namespace: libvirt's networks (vagrant-libvirt's management network, the private
# network) NAT and route out.  Here libvirtd, virtlogd, dnsmasq, QEMU and vagrant itself run
# in the network namespace $NS (loopback plus the bridges libvirt makes; no route out) and
# in one private mount namespace in which libvirt's own directories (/etc/libvirt,
# /run/libvirt, /var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt) are bind mounts of
# $STATE/...: no libvirt config, network, pool or domain is ever written on the machine.
# `down` leaves only the box in $VAGRANT_HOME (a cache) and weft-lab's cached image.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
NS=${WEFT_VG_NS:-weftvg}
STATE=${WEFT_VG_STATE:-/var/tmp/weft-vagrant}
export VAGRANT_HOME=${VAGRANT_HOME:-/var/cache/weft-lab/vagrant.d}
export VAGRANT_DEFAULT_PROVIDER=libvirt VAGRANT_CHECKPOINT_DISABLE=1
export WEFT_VAGRANT_CONSOLE=$STATE/console
LIBVIRT_DIRS="etc/libvirt run/libvirt var/lib/libvirt var/cache/libvirt var/log/libvirt"

log() { printf '%s try-here: %s\n' "$(date -u +%T)" "$*" >&2; }
die() { log "$*"; exit 1; }
pid_of() { local p; p=$(cat "$1" 2>/dev/null) && [ -n "$p" ] && kill -0 "$p" 2>/dev/null && echo "$p"; }

# Run a command in the namespace pair (libvirtd's network and mount namespaces), from vagrant/.
in_ns() {
  local p
  p=$(pid_of "$STATE/libvirtd.pid") || die "libvirtd is not running (try-here.sh up first)"
  nsenter --target "$p" --mount --net -- env -C "$HERE" "$@"
}

# Timestamp every line (vagrant prints none): per-guest boot and provisioning times.
stamp() { while IFS= read -r line; do printf '%s %s\n' "$(date -u +%T)" "$line"; done; }

start_libvirt() {
  ip netns add "$NS" || die "ip netns add $NS failed (left over? try-here.sh down)"
  ip -n "$NS" link set lo up
  mkdir -p "$STATE/console"
  for d in $LIBVIRT_DIRS; do mkdir -p "$STATE/$d"; done
  cp -a /etc/libvirt/. "$STATE/etc/libvirt/"
  cp -a /var/lib/libvirt/. "$STATE/var/lib/libvirt/"
  mkdir -p "$STATE/var/lib/libvirt/images" "$STATE/var/log/libvirt/qemu"
  rm -f "$STATE/etc/libvirt/qemu/networks/default.xml" "$STATE"/etc/libvirt/qemu/networks/autostart/*
  # QEMU as root (the box's kernel and initrd sit in VAGRANT_HOME), no per-VM cgroups, mount
  # namespaces or security labels: this machine is a container; isolation is the netns.
  cat >> "$STATE/etc/libvirt/qemu.conf" <<'EOF'
# try-here.sh (weft): a private libvirtd in a namespace
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
EOF
  # /run/libvirt must exist as a mount point on the machine: made here, removed by down.
  [ -d /run/libvirt ] || { mkdir /run/libvirt && touch "$STATE/made-run-libvirt"; }
  # ip netns exec: the namespace's own /sys, in a new mount namespace (slave of /), where
  # the bind mounts below stay; the daemons keep that mount namespace alive.
  ip netns exec "$NS" bash -euc '
    for d in '"$LIBVIRT_DIRS"'; do mount --bind "'"$STATE"'/$d" "/$d"; done
    virtlogd -d -p "'"$STATE"'/virtlogd.pid"
    libvirtd -d -p "'"$STATE"'/libvirtd.pid"
  ' || die "starting libvirtd in $NS failed"
  for _ in $(seq 60); do
    [ -S "$STATE/run/libvirt/libvirt-sock" ] && in_ns virsh -q -c qemu:///system version >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  die "libvirtd did not answer; see $STATE"
}

up() {
  [ -e "/run/netns/$NS" ] && die "namespace $NS exists: vagrant/try-here.sh down first"
  local t0 t1
  t0=$(date +%s)
  if [ "${WEFT_VG_REBUILD_BOX:-0}" = 1 ] || ! vagrant box list 2>/dev/null | grep -q '^weft/bookworm '; then
    "$HERE/build-box.sh" || die "build-box.sh failed"
  else
    "$HERE/build-box.sh" --dist-only || die "build-box.sh --dist-only failed"
  fi
  t1=$(date +%s); log "box and dist ready in $((t1 - t0))s"
  start_libvirt
  log "libvirtd $(cat "$STATE/libvirtd.pid") in netns $NS; vagrant up"
  in_ns vagrant up --provider libvirt 2>&1 | stamp | tee "$STATE/vagrant-up.log"
  local rc=${PIPESTATUS[0]}
  log "vagrant up exited $rc after $(( $(date +%s) - t1 ))s (log: $STATE/vagrant-up.log)"
  return "$rc"
}

# A container on each host; host1's pings host2's over docker0 and weft's VXLAN tunnel.
check() {
  local img=weft-lab/busybox:1 ip2 n
  for h in host1 host2; do
    in_ns vagrant ssh "$h" -c "sudo docker rm -f c-$h >/dev/null 2>&1; sudo docker run -d --pull=never --name c-$h $img sleep 100000" >/dev/null \
      || die "docker run on $h failed"
  done
  ip2=$(in_ns vagrant ssh host2 -c "sudo docker inspect -f '{{.NetworkSettings.IPAddress}}' c-host2" | tr -d '\r\n ')
  log "c-host2 has $ip2; pinging it from c-host1"
  for n in $(seq 20); do
    if in_ns vagrant ssh host1 -c "sudo docker exec c-host1 ping -c 3 -W 2 $ip2" 2>&1; then
      log "PASS: c-host1 (host1) reaches c-host2 ($ip2, host2) over docker0 (try $n)"
      return 0
    fi
    sleep 5
  done
  die "FAIL: no echo reply from $ip2"
}

down() {
  local p f
  if p=$(pid_of "$STATE/libvirtd.pid"); then
    log "vagrant destroy"
    timeout 300 nsenter --target "$p" --mount --net -- env -C "$HERE" vagrant destroy -f 2>&1 | stamp
  fi
  # Whatever is left, by PID: QEMU and dnsmasq (libvirt's pid files), the daemons, then
  # anything else in our namespace (only this script puts processes there).
  for f in "$STATE"/run/libvirt/qemu/*.pid "$STATE"/run/libvirt/network/*.pid \
           "$STATE/libvirtd.pid" "$STATE/virtlogd.pid"; do
    [ "$(basename "$f")" = driver.pid ] && continue     # libvirtd's own, not a QEMU
    p=$(pid_of "$f") && { log "kill $p ($(basename "$f"))"; kill "$p"; }
  done
  if [ -e "/run/netns/$NS" ]; then
    for _ in $(seq 20); do [ -z "$(ip netns pids "$NS")" ] && break; sleep 0.5; done
    for p in $(ip netns pids "$NS"); do log "kill -9 $p (left in $NS)"; kill -9 "$p"; done
    sleep 0.5
    ip netns del "$NS"
  fi
  [ -e "$STATE/made-run-libvirt" ] && rmdir /run/libvirt 2>/dev/null
  rm -rf "$STATE" "$HERE/.vagrant"
  log "down: namespace, daemons and $STATE gone (box cached in $VAGRANT_HOME)"
}

case "${1:-}" in
  up) up ;;
  check) check ;;
  run) shift; in_ns "$@" ;;
  down) down ;;
  *) sed -n '2,6p' "$0"; exit 2 ;;
esac
