#!/usr/bin/env bash
# Make the Vagrant box `weft/bookworm` (libvirt provider) from weft-lab's cached Debian 12
# guest image (the one tests/vm boots), and vagrant/dist/ for offline provisioning:
#   vagrant/build-box.sh            (root; from the source tree, after ./dev.sh setup)
#   vagrant/build-box.sh --dist-only   only vagrant/dist/ (dist/ of this tree, install-weft.sh), box kept
# VAGRANT_HOME decides where the box goes (vagrant/try-here.sh sets it).
#
# The box is a copy of the image made into an ordinary Vagrant box (the image itself is
# left as tests/vm expects it, so its hash and cache do not change):
#  * user `vagrant` with Vagrant's well-known insecure key and passwordless sudo (Vagrant
#    swaps the key for a fresh one at the first `vagrant up`);
#  * systemd-networkd with DHCP on eth0 (client id: the MAC, the machine-id is shared): vagrant-libvirt's management network (the first
#    NIC) hands out the address Vagrant connects to, and Vagrant's Debian guest support
#    writes its private networks as networkd files (the image has no ifupdown);
#  * weft-lab's guest-identity unit off (it reads weft-lab's kernel command line; Vagrant
#    sets the hostname itself).
# The image has no boot loader: the box's own Vagrantfile boots the kernel and initrd
# shipped beside the disk (libvirt direct kernel boot).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
T0=$(date +%s)

make_box() {
"$PY" -m weft_lab.cli vm image
eval "$("$PY" -c 'from weft_lab import vm
for k, v in vm.image_paths().items(): print(f"{k.upper()}={v}")')"
INSECURE_PUB=""
for k in /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub \
         /opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub; do
  [ -s "$k" ] && INSECURE_PUB=$k
done
[ -n "$INSECURE_PUB" ] || { echo "build-box: Vagrant's keys/vagrant.pub not found" >&2; exit 1; }

WORK=$(mktemp -d /var/tmp/weft-box.XXXXXX)
MNT=$WORK/mnt
cleanup() {
  if mountpoint -q "$MNT"; then umount "$MNT"; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$MNT" "$WORK/box"
qemu-img convert -f qcow2 -O raw "$DISK" "$WORK/root.raw"
mount -o loop "$WORK/root.raw" "$MNT"
chroot "$MNT" useradd --create-home --shell /bin/bash --groups sudo vagrant
chroot "$MNT" usermod --password '*' vagrant        # no password, but not locked (ssh keys)
install -d -m 0700 "$MNT/home/vagrant/.ssh"
install -m 0600 "$INSECURE_PUB" "$MNT/home/vagrant/.ssh/authorized_keys"
chroot "$MNT" chown -R vagrant:vagrant /home/vagrant/.ssh
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' > "$MNT/etc/sudoers.d/vagrant"
chmod 0440 "$MNT/etc/sudoers.d/vagrant"
cat > "$MNT/etc/systemd/network/10-vagrant-mgmt.network" <<'EOF'
# vagrant-libvirt's management network: Vagrant finds the guest by its DHCP lease.
[Match]
Name=eth0

[Network]
DHCP=ipv4

[DHCPv4]
# Every guest of the box has the image's machine-id, hence the same DUID: by MAC instead,
# or dnsmasq gives the second guest no lease.
ClientIdentifier=mac
EOF
chroot "$MNT" systemctl enable systemd-networkd.service >/dev/null 2>&1
rm -f "$MNT/etc/systemd/system/multi-user.target.wants/weft-lab-guest.service"
echo weft-box > "$MNT/etc/hostname"
umount "$MNT"
qemu-img convert -f raw -O qcow2 "$WORK/root.raw" "$WORK/box/box.img"
rm -f "$WORK/root.raw"
cp "$KERNEL" "$WORK/box/vmlinuz"
cp "$INITRD" "$WORK/box/initrd"
SIZE=$(qemu-img info --output=json "$DISK" | "$PY" -c 'import json,sys; print(-(-json.load(sys.stdin)["virtual-size"] // 2**30))')
echo "{\"provider\": \"libvirt\", \"format\": \"qcow2\", \"virtual_size\": $SIZE}" > "$WORK/box/metadata.json"
cat > "$WORK/box/Vagrantfile" <<'RUBY'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.kernel = File.join(File.dirname(__FILE__), "vmlinuz")
    lv.initrd = File.join(File.dirname(__FILE__), "initrd")
    lv.cmd_line = "root=/dev/vda rw console=ttyS0 net.ifnames=0"
    lv.disk_bus = "virtio"
  end
end
RUBY
tar -C "$WORK/box" -cf "$WORK/weft-bookworm.box" .
vagrant box add --force --name weft/bookworm "$WORK/weft-bookworm.box"
echo "box weft/bookworm added in $(( $(date +%s) - T0 ))s"
}
[ "${1:-}" = --dist-only ] || make_box

# vagrant/dist: dist/ (weft from this tree + every dependency) and install-weft.sh
# (docs/docker.md's install commands, weft_lab.dist.stage), hosts.yaml, one token for every
# host and the test image.  Rsynced to /vagrant/dist; provision.sh uses nothing else.
DIST=vagrant/dist
rm -rf "$DIST/wheels" && mkdir -p "$DIST"
"$PY" -c 'from pathlib import Path; from weft_lab import dist, vm; dist.stage(Path("vagrant/dist"), vm.wheelhouse())'
cp "$("$PY" -c 'from weft_lab import docker; print(docker.image_tarball())')" "$DIST/busybox-iperf3.tar"
cp vagrant/hosts.yaml "$DIST/hosts.yaml"
if [ ! -s "$DIST/weft.env" ]; then
  install -m 0600 /dev/null "$DIST/weft.env"
  printf 'WEFT_API_TOKEN=%s\nWEFT_API_HOST=192.168.56.11\n' "$(openssl rand -hex 16)" > "$DIST/weft.env"
fi
echo "$DIST ready in $(( $(date +%s) - T0 ))s: vagrant up (from vagrant/)"
