#!/usr/bin/env bash
# Make the Vagrant box `weft/bookworm` (libvirt provider) from weft-lab's cached Debian 12
# guest image (the one tests/vm boots), and vagrant/dist/ for offline provisioning:
#   vagrant/build-box.sh            (root; from the source tree, after ./dev.sh setup)
# The image has no boot loader: the box's own Vagrantfile boots the kernel and initrd
# shipped beside the disk (libvirt direct kernel boot).  Login is root with weft-lab's key
# (/var/cache/weft-lab/vm/id_ed25519; the Vagrantfile of this folder points at it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -m weft_lab.cli vm image
eval "$("$PY" -c 'from weft_lab import vm
for k, v in vm.image_paths().items(): print(f"{k.upper()}={v}")')"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp "$DISK" "$WORK/box.img"
cp "$KERNEL" "$WORK/vmlinuz"
cp "$INITRD" "$WORK/initrd"
SIZE=$(qemu-img info --output=json "$DISK" | "$PY" -c 'import json,sys; print(-(-json.load(sys.stdin)["virtual-size"] // 2**30))')
echo "{\"provider\": \"libvirt\", \"format\": \"qcow2\", \"virtual_size\": $SIZE}" > "$WORK/metadata.json"
cat > "$WORK/Vagrantfile" <<'RUBY'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.kernel = File.join(File.dirname(__FILE__), "vmlinuz")
    lv.initrd = File.join(File.dirname(__FILE__), "initrd")
    lv.cmdline = "root=/dev/vda rw console=ttyS0 net.ifnames=0"
    lv.disk_bus = "virtio"
  end
end
RUBY
tar -C "$WORK" -czf "$WORK/../weft-bookworm.box" .
vagrant box add --force --name weft/bookworm "$WORK/../weft-bookworm.box"
rm -f "$WORK/../weft-bookworm.box"

# vagrant/dist: the wheelhouse (weft from this tree + every dependency), hosts.yaml and one
# token for every host.  Rsynced to /vagrant/dist; provision.sh uses nothing else.
DIST=vagrant/dist
rm -rf "$DIST/wheels" && mkdir -p "$DIST/wheels"
cp "$("$PY" -c 'from weft_lab import vm; print(vm.wheelhouse())')"/*.whl "$DIST/wheels/"
"$PY" -c 'from pathlib import Path; from weft_lab import vm; vm.weft_wheel(Path("vagrant/dist/wheels"))'
cp vagrant/hosts.yaml "$DIST/hosts.yaml"
if [ ! -s "$DIST/weft.env" ]; then
  install -m 0600 /dev/null "$DIST/weft.env"
  printf 'WEFT_API_TOKEN=%s\nWEFT_API_HOST=192.168.56.11\n' "$(openssl rand -hex 16)" > "$DIST/weft.env"
fi
echo "box weft/bookworm added; $DIST ready: vagrant up (from vagrant/)"
