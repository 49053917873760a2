#!/usr/bin/env bash
# Builds (or reuses) the cgroup v2 test VM from Debian packages: qemu
# (TCG), the Debian kernel unpacked to vmlinux for a PVH boot, a minbase
# rootfs as an ext4 image and a busybox initramfs. Each part is rebuilt only
# when its recipe (the function below) changes; products live in
# $V2VM_CACHE (default /var/cache/berth/v2vm), outside the clone.
# Needs root and the packages from hack/setup.sh.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="${V2VM_CACHE:-/var/cache/berth/v2vm}"
mirror="${V2VM_MIRROR:-http://deb.debian.org/debian}"
suite="${V2VM_SUITE:-bookworm}"
mkdir -p "$cache"

log() { echo "v2vm: $*" >&2; }

# Packages of the guest rootfs (besides minbase).
rootfs_packages=(
  iproute2 iptables util-linux procps kmod busybox-static
  containernetworking-plugins runc crun
  docker-registry           # standalone tests pull from a local registry
)

# Module directories kept from the kernel package (the rest is hardware).
module_dirs=(fs net lib crypto arch/x86/crypto drivers/virtio drivers/block drivers/char drivers/net)
module_prune=(
  net/wireless net/mac80211 net/bluetooth net/nfc net/6lowpan net/ieee802154 net/mac802154
  net/rxrpc net/sunrpc net/ceph net/rds net/tipc net/sctp net/dccp net/smc net/can net/batman-adv
  net/atm net/l2tp net/phonet net/qrtr net/caif net/appletalk net/x25 net/lapb net/rfkill
  fs/xfs fs/btrfs fs/ocfs2 fs/smb fs/nfs fs/nfsd fs/ceph fs/gfs2 fs/ubifs fs/jffs2 fs/f2fs fs/nilfs2
  fs/reiserfs fs/jfs fs/dlm fs/afs fs/orangefs fs/coda fs/ntfs3 fs/hfs fs/hfsplus fs/befs fs/ufs
  fs/udf fs/omfs fs/qnx4 fs/qnx6 fs/minix fs/sysv fs/efs fs/cramfs fs/romfs fs/vboxsf fs/erofs
  fs/exfat fs/fat fs/isofs fs/lockd fs/nfs_common fs/gfs2 fs/zonefs
  drivers/net/ethernet drivers/net/wireless drivers/net/usb drivers/net/can drivers/net/wan
  drivers/net/ieee802154 drivers/net/hamradio drivers/net/fddi drivers/net/arcnet drivers/net/plip
  drivers/net/slip drivers/net/ppp drivers/net/phy drivers/net/pcs drivers/net/mdio drivers/net/dsa
  drivers/net/ipa drivers/net/mhi drivers/net/wwan drivers/net/hyperv drivers/net/xen-netback
  drivers/net/fjes drivers/net/thunderbolt drivers/net/vmxnet3 drivers/net/team
  drivers/char/ipmi drivers/char/tpm drivers/char/agp drivers/char/pcmcia drivers/char/xillybus
  drivers/block/drbd drivers/block/rnbd drivers/block/mtip32xx drivers/block/aoe drivers/block/zram
)

# Modules the initramfs loads (with their dependencies) before switch_root.
initrd_modules=(virtio_pci virtio_console virtio_blk virtio_rng ext4 9pnet_virtio 9p)

# --- staging helpers ----------------------------------------------------------

tmp=""
cleanup() {
  if [[ -n "$tmp" && -d "$tmp" ]]; then
    # debootstrap mounts proc and sys in the target; never leave them behind.
    { grep -o " $tmp/[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do umount -l "$m" || true; done
    rm -rf "$tmp"
    tmp=""
  fi
}
trap cleanup EXIT
stage() { tmp="$(mktemp -d "$cache/.build.XXXXXX")"; }

# apt-get download into the current directory; with stale package lists
# (a version gone from the mirror) it updates them once and retries.
download() {
  apt-get download -qq "$@" 2>/dev/null && return
  apt-get update -qq
  apt-get download -qq "$@"
}

# A component is current when its stamp holds the hash of its recipe.
recipe_hash() { { declare -f "$1"; shift; for x in "$@"; do echo "$x"; done; } | sha256sum | cut -c1-16; }
current() { [[ -f "$cache/$1.stamp" && "$(cat "$cache/$1.stamp")" == "$2" ]]; }
mark() { echo "$2" >"$cache/$1.stamp"; }

# --- qemu -----------------------------------------------------------------------
# Debian's qemu-system-x86 cannot be installed next to the newer qemu-utils
# some hosts have, so its packages are unpacked into the cache instead.
build_qemu() {
  stage
  (cd "$tmp" && download qemu-system-x86 qemu-system-common qemu-system-data)
  mkdir "$tmp/x"
  for d in "$tmp"/*.deb; do dpkg-deb -x "$d" "$tmp/x"; done
  rm -rf "$cache/qemu"
  mkdir -p "$cache/qemu/bin" "$cache/qemu/modules" "$cache/qemu/share"
  cp "$tmp/x/usr/bin/qemu-system-x86_64" "$cache/qemu/bin/"
  cp "$tmp/x/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so" "$cache/qemu/modules/"
  cp -a "$tmp/x/usr/share/qemu/." "$cache/qemu/share/"
  rm -rf "$cache/qemu/share/keymaps" "$cache/qemu/share/"{openbios,hppa,opensbi,s390,skiboot,slof,palcode,u-boot,edk2,QEMU,bamboo,canyonlands,npcm,petalogix,vof,trace}*
  dpkg-deb -f "$tmp"/qemu-system-x86_*.deb Version >"$cache/qemu/version"
  if ldd "$cache/qemu/bin/qemu-system-x86_64" | grep 'not found' >&2; then
    log "qemu is missing shared libraries: run hack/setup.sh"; return 1
  fi
  cleanup
}

# --- kernel ---------------------------------------------------------------------
# vmlinuz holds an xz-compressed vmlinux; unpacked, qemu boots it through its
# PVH entry (ELF note), about twice as fast as through the bzImage stub.
build_kernel() {
  stage
  local pkg
  pkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
  [[ -n "$pkg" ]] || { log "no kernel package behind linux-image-amd64 (apt-get update?)"; return 1; }
  (cd "$tmp" && download "$pkg")
  local deb kver patterns=()
  deb="$(ls "$tmp"/linux-image-*.deb)"
  kver="${pkg#linux-image-}"
  for d in "${module_dirs[@]}"; do patterns+=("./lib/modules/$kver/kernel/$d/*"); done
  mkdir "$tmp/x"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp/x" --wildcards "./boot/vmlinuz-$kver" "./lib/modules/$kver/modules.*" "${patterns[@]}"
  rm -f "$deb"
  for d in "${module_prune[@]}"; do rm -rf "$tmp/x/lib/modules/$kver/kernel/$d"; done
  depmod -b "$tmp/x" "$kver"
  local off
  off="$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$tmp/x/boot/vmlinuz-$kver" | head -1 | cut -d: -f1)"
  [[ -n "$off" ]] || { log "no xz payload in vmlinuz-$kver"; return 1; }
  tail -c +"$((off + 1))" "$tmp/x/boot/vmlinuz-$kver" | xz -dcq >"$tmp/vmlinux" 2>/dev/null || true
  readelf -n "$tmp/vmlinux" | grep -q 'Unknown note type: (0x00000012)' || { log "vmlinux has no PVH entry note"; return 1; }
  rm -rf "$cache/kernel"
  mkdir -p "$cache/kernel"
  mv "$tmp/vmlinux" "$cache/kernel/vmlinux"
  mv "$tmp/x/lib/modules" "$cache/kernel/modules"
  echo "$kver" >"$cache/kernel/version"
  cleanup
}

# --- rootfs -----------------------------------------------------------------------
build_rootfs() {
  stage
  local kver r="$tmp/root"
  kver="$(cat "$cache/kernel/version")"
  local include
  include="$(IFS=,; echo "${rootfs_packages[*]}")"
  log "debootstrap $suite (a few minutes)"
  debootstrap --variant=minbase --include="$include" "$suite" "$r" "$mirror" >"$tmp/debootstrap.log" 2>&1 || {
    tail -30 "$tmp/debootstrap.log" >&2; return 1; }
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/* "$r"/usr/share/doc/* "$r"/usr/share/man/* \
    "$r"/usr/share/locale/* "$r"/usr/share/info/* "$r"/var/log/*.log
  mkdir -p "$r/lib/modules"
  cp -a "$cache/kernel/modules/$kver" "$r/lib/modules/"
  echo v2vm >"$r/etc/hostname"
  printf '127.0.0.1 localhost v2vm\n::1 localhost ip6-localhost ip6-loopback\n' >"$r/etc/hosts"
  : >"$r/etc/resolv.conf"
  mkdir -p "$r/v2vm"
  local mb
  mb=$(( $(du -sm "$r" | cut -f1) * 13 / 10 + 256 ))
  mkfs.ext4 -q -F -L berthroot -d "$r" "$tmp/rootfs.ext4" "${mb}M" >/dev/null
  mv "$tmp/rootfs.ext4" "$cache/rootfs.ext4"
  cleanup
}

# --- initramfs ----------------------------------------------------------------------
build_initrd() {
  stage
  local kver i="$tmp/initrd" m
  kver="$(cat "$cache/kernel/version")"
  mkdir -p "$i/bin" "$i/lib/modules" "$i/proc" "$i/sys" "$i/dev" "$i/newroot"
  cp /bin/busybox "$i/bin/busybox"
  mkdir -p "$tmp/m/lib"
  ln -s "$cache/kernel/modules" "$tmp/m/lib/modules"
  for m in "${initrd_modules[@]}"; do
    modprobe -d "$tmp/m" -S "$kver" --show-depends "$m"
  done | awk '$1 == "insmod" && !seen[$2]++ {print $2}' >"$tmp/modules"
  : >"$i/modules"
  while read -r m; do
    cp "$m" "$i/lib/modules/"
    echo "/lib/modules/$(basename "$m")" >>"$i/modules"
  done <"$tmp/modules"
  install -m 0755 "$here/initramfs-init" "$i/init"
  (cd "$i" && find . | cpio -o -H newc --quiet | gzip -1) >"$tmp/initrd.gz"
  mv "$tmp/initrd.gz" "$cache/initrd.gz"
  cleanup
}

# Locked: concurrent runs wait for one build.
exec 9>"$cache/.lock"
flock 9

h_qemu="$(recipe_hash build_qemu)"
if ! current qemu "$h_qemu"; then log "building qemu"; build_qemu; mark qemu "$h_qemu"; fi
h_kernel="$(recipe_hash build_kernel "${module_dirs[*]}" "${module_prune[*]}")"
if ! current kernel "$h_kernel"; then log "building kernel"; build_kernel; mark kernel "$h_kernel"; fi
h_rootfs="$(recipe_hash build_rootfs "$h_kernel" "${rootfs_packages[*]}" "$suite")"
if ! current rootfs "$h_rootfs"; then log "building rootfs"; build_rootfs; mark rootfs "$h_rootfs"; fi
h_initrd="$(recipe_hash build_initrd "$h_kernel" "${initrd_modules[*]}" "$(cat "$here/initramfs-init")")"
if ! current initrd "$h_initrd"; then log "building initramfs"; build_initrd; mark initrd "$h_initrd"; fi
