#!/usr/bin/env bash
# Runs one command as root in a throw-away VM whose kernel has only cgroup v2
# (every controller enabled in the root's cgroup.subtree_control):
#
#   hack/v2vm/run.sh [OPTIONS] -- CMD [ARGS...]
#
# The checkout is shared at the same path (read-write), and so is
# $CARGO_TARGET_DIR (read-only); CMD starts in the current directory when it
# is inside a share, else in /. Its stdout and stderr stream back and
# run.sh exits with its exit code (124 when the VM timed out, 125 when it
# died without one). The VM has no network device. /tmp is a tmpfs.
#
# Options:
#   --share HOST[:GUEST][:ro]  share another host folder (default: same path, rw)
#   -e NAME[=VALUE]            pass an environment variable (RUST_BACKTRACE,
#                              RUST_LOG, CARGO_TARGET_DIR, BERTH_* and NEXTEST_*
#                              pass by default)
#   --mem MB (2048)  --cpus N (host cores, at most 4)  --timeout SECS (3600)
#
# The VM is built (hack/v2vm/build.sh) on first use and cached in
# $V2VM_CACHE (default /var/cache/berth/v2vm).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${V2VM_CACHE:-/var/cache/berth/v2vm}"
mem=2048
cpus="$(nproc)"; ((cpus > 4)) && cpus=4
timeout=3600
shares=()
envs=()

die() { echo "v2vm: $*" >&2; exit 125; }
while (($#)); do
  case "$1" in
    --share) shares+=("$2"); shift 2 ;;
    -e) envs+=("$2"); shift 2 ;;
    --mem) mem="$2"; shift 2 ;;
    --cpus) cpus="$2"; shift 2 ;;
    --timeout) timeout="$2"; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (the command goes after --)" ;;
  esac
done
(($#)) || die "usage: hack/v2vm/run.sh [OPTIONS] -- CMD [ARGS...]"
[[ $EUID -eq 0 ]] || die "needs root"

"$here/build.sh"

run="$(mktemp -d "$cache/run.XXXXXX")"
qpid=""
cleanup() {
  [[ -n "$qpid" ]] && kill "$qpid" 2>/dev/null && wait "$qpid" 2>/dev/null
  rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Shares: the checkout, the target dir, then --share folders.
declare -a fsargs=()
: >"$run/mounts"
n=0
share() { # HOST GUEST MODE
  local host guest="$2" mode="$3" ro=""
  host="$(realpath -e "$1")" || die "no folder $1"
  [[ "$host$guest" != *[[:space:]]* ]] || die "share paths with spaces are not supported: $host"
  [[ $mode == ro ]] && ro=",readonly=on"
  fsargs+=(-fsdev "local,id=fs$n,path=$host,security_model=none,multidevs=remap$ro"
    -device "virtio-9p-pci,fsdev=fs$n,mount_tag=share$n")
  echo "share$n $guest $mode" >>"$run/mounts"
  n=$((n + 1))
}
under() { [[ "$1" == "$2" || "$1" == "$2"/* ]]; }
share "$repo" "$repo" rw
if [[ -n "${CARGO_TARGET_DIR:-}" && -d "$CARGO_TARGET_DIR" ]]; then
  t="$(realpath "$CARGO_TARGET_DIR")"
  under "$t" "$repo" || share "$t" "$t" ro
fi
for s in "${shares[@]}"; do
  IFS=: read -r host guest mode <<<"$s"
  if [[ "$guest" == ro || "$guest" == rw ]]; then mode="$guest"; guest=""; fi
  share "$host" "${guest:-$(realpath "$host")}" "${mode:-rw}"
done

# The command: environment, working directory, argv.
{
  echo "set -e"
  for name in $(compgen -e | grep -E '^(RUST_BACKTRACE|RUST_LOG|CARGO_TARGET_DIR|BERTH_.*|NEXTEST_.*)$' || true); do
    printf 'export %s=%q\n' "$name" "${!name}"
  done
  for e in "${envs[@]}"; do
    if [[ "$e" == *=* ]]; then printf 'export %s=%q\n' "${e%%=*}" "${e#*=}"
    elif [[ -n "${!e+set}" ]]; then printf 'export %s=%q\n' "$e" "${!e}"; fi
  done
  cwd="/"
  while read -r _ guest _; do under "$PWD" "$guest" && cwd="$PWD"; done <"$run/mounts"
  printf 'cd %q\n' "$cwd"
  printf 'set +e\nexec'; printf ' %q' "$@"; printf '\n'
} >"$run/cmd"
cp "$here/guest-init" "$run/guest-init"

mkfifo "$run/out" "$run/err"
cat "$run/out" &
cat_out=$!
cat "$run/err" >&2 &
cat_err=$!

# The rootfs snapshot's overlay goes to TMPDIR.
TMPDIR="$run" QEMU_MODULE_DIR="$cache/qemu/modules" timeout -k 5 "$timeout" \
  "$cache/qemu/bin/qemu-system-x86_64" \
  -L "$cache/qemu/share" -L /usr/share/seabios -L /usr/lib/ipxe/qemu \
  -nodefaults -no-user-config -display none -no-reboot \
  -M pc -accel tcg,thread=multi -cpu max -smp "$cpus" -m "$mem" \
  -kernel "$cache/kernel/vmlinux" -initrd "$cache/initrd.gz" \
  -append "console=ttyS0 quiet loglevel=2 panic=-1 cgroup_no_v1=all rdinit=/init" \
  -serial "file:$run/console.log" \
  -drive "file=$cache/rootfs.ext4,if=virtio,format=raw,snapshot=on" \
  -fsdev "local,id=fsrun,path=$run,security_model=none" -device virtio-9p-pci,fsdev=fsrun,mount_tag=v2vmrun \
  "${fsargs[@]}" \
  -device virtio-rng-pci \
  -device virtio-serial-pci \
  -chardev "file,id=out,path=$run/out" -device virtserialport,chardev=out,name=out \
  -chardev "file,id=err,path=$run/err" -device virtserialport,chardev=err,name=err \
  </dev/null &
qpid=$!
set +e
wait "$qpid"
qrc=$?
set -e
qpid=""
# A reader still blocked in open() (qemu never opened its end) sees EOF.
for f in "$run/out" "$run/err"; do exec 3<>"$f"; exec 3>&-; done
wait "$cat_out" "$cat_err" 2>/dev/null || true

if [[ -f "$run/status" ]]; then
  exit "$(cat "$run/status")"
fi
echo "v2vm: the VM ended without an exit status (qemu exit $qrc); console:" >&2
tail -n 40 "$run/console.log" >&2 || true
((qrc == 124)) && { echo "v2vm: timed out after ${timeout}s" >&2; exit 124; }
exit 125
