#!/usr/bin/env bash
# Installs every system package Berth and its tests need (Debian 12), idempotently.
set -euo pipefail

packages=(
  build-essential pkg-config ca-certificates curl git
  busybox-static            # test images are built from /bin/busybox
  docker-registry           # the tests' local OCI registry
  runc crun                 # OCI runtime handlers
  containerd                # hack/bench.sh compares `berth cri` with containerd's CRI plugin
  containernetworking-plugins iproute2 iptables
  util-linux procps kmod
  jq                        # hack/bench.sh edits the bundle config
  openssl                   # probe tests make a self-signed certificate
  # hack/v2vm (the cgroup v2 VM): rootfs and initramfs tools, firmware and
  # the shared libraries of Debian's qemu-system-x86, whose packages
  # hack/v2vm/build.sh unpacks itself (they conflict with a newer qemu-utils).
  debootstrap e2fsprogs cpio xz-utils binutils seabios ipxe-qemu
  libaio1 libbpf1 libcapstone4 libfdt1 libfuse3-3 libglib2.0-0 libgmp10 libgnutls30 libibverbs1
  libjpeg62-turbo libnuma1 libpixman-1-0 libpmem1 libpng16-16 librdmacm1 libsasl2-2 libseccomp2
  libslirp0 libudev1 liburing2 libvdeplug2 libzstd1 zlib1g
)
# kubectl, the reference streaming client of the tests: Debian's unless one is there.
command -v kubectl >/dev/null || packages+=(kubernetes-client)

missing=()
containerd_was_installed=0
dpkg-query -W -f='${Status}' containerd 2>/dev/null | grep -q 'install ok installed' && containerd_was_installed=1
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The Debian docker-registry service is not wanted: tests start their own.
if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
  systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
# Nor the containerd service that installing the package just started (the
# benchmark starts its own); one that was there before is left alone.
if ((containerd_was_installed == 0)) && command -v systemctl >/dev/null && systemctl is-active --quiet containerd 2>/dev/null; then
  systemctl disable --now containerd >/dev/null 2>&1 || true
fi

if ! command -v cargo >/dev/null; then
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi
echo "setup: all packages present"
