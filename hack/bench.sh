#!/usr/bin/env bash
# Benchmarks Berth's built-in OCI executor against runc and crun, side by side.
#
#   hack/bench.sh            # 50 measured runs per runtime (BENCH_RUNS, BENCH_WARMUP)
#
# Every runtime does the same work per run: create -> start -> wait for exit
# -> delete, of a busybox /bin/true container, via `<rt> run` (runc, crun and
# `berth oci run` all delete the container when it exits unless --detach).
# The floor is the same namespaces without any runtime:
# `unshare --mount --uts --ipc --net --pid --fork chroot ROOTFS /bin/true`.
# Runs are interleaved (berth, runc, crun, floor, berth, ...) so load from
# other users of the machine hits every runtime alike. Times are wall clock
# from $EPOCHREALTIME around each command (no extra fork in the interval).
#
# Then the shim's memory: BENCH_SHIMS (5) long-running containers, each under
# its own shim, started directly as the daemon's shim::spawn does: the small
# `berth-shim` (which creates the container with `berth oci create`), or with
# BENCH_SHIM=berth the whole berth binary re-executed as `berth shim`; prints
# the shims' VmRSS, RssAnon and PSS per container next to conmon and
# containerd-shim-runc-v2.
#
# crun: crun 1.8 refuses the hybrid cgroup layout ("cgroups in hybrid mode not
# supported") when a cgroup2 mount sits at /sys/fs/cgroup/unified. Like the
# runtime's CLI handler (runtime/src/oci/cli.rs), crun runs in a private mount
# namespace where that mount is gone. Rather than paying for
# `unshare -m sh -c 'umount -l /sys/fs/cgroup/unified; exec crun ...'` on every
# run, the namespace is made once, kept alive by a bind mount, and entered with
# `nsenter --mount=...`; the cost of that nsenter alone is measured and shown.
#
# Then CNI: ADD and DEL of a pod's networks as `berth cri` runs them (the
# loopback network, then Berth's default bridge network: bridge + host-local +
# portmap from /usr/lib/cni), BENCH_CNI_RUNS (30) pods, each in a fresh network
# namespace, timed inside berth (`berth cni bench`, a hidden subcommand) so
# process startup is not counted; on its own bridge and subnet
# (BENCH_CNI_BRIDGE berthbench0, BENCH_CNI_CIDR 10.202.255.0/24), no traffic.
#
# Needs root, runc, crun, busybox-static, jq, containernetworking-plugins.
# Everything it creates (containers, cgroups, shims, temp dirs, the namespace
# mount, the bench bridge) is removed on exit.
set -euo pipefail

RUNS=${BENCH_RUNS:-50}
CNI_RUNS=${BENCH_CNI_RUNS:-30}
CNI_BRIDGE=${BENCH_CNI_BRIDGE:-berthbench0}
CNI_CIDR=${BENCH_CNI_CIDR:-10.202.255.0/24}
WARMUP=${BENCH_WARMUP:-5}
SHIMS=${BENCH_SHIMS:-5}
repo=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/berth/target}

[[ $(id -u) == 0 ]] || { echo "bench: must run as root" >&2; exit 1; }
for b in runc crun busybox jq unshare nsenter; do
  command -v "$b" >/dev/null || { echo "bench: $b not found (hack/setup.sh installs it)" >&2; exit 1; }
done

echo "== building berth (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
(cd "$repo" && cargo build --release -q -p berth-kubelet --bin berth --bin berth-shim)
BERTH=$CARGO_TARGET_DIR/release/berth
if [[ ${BENCH_SHIM:-berth-shim} == berth ]]; then
  shim_cmd=("$BERTH" shim) shim_name="berth shim"
else
  shim_cmd=("$CARGO_TARGET_DIR/release/berth-shim") shim_name="berth-shim"
fi

tag=berth-bench-$$
tmp=$(mktemp -d /tmp/$tag.XXXXXX)
nsdir=$tmp/ns
shim_dirs=()

cleanup() {
  local rc=$? d id pid
  set +e
  trap - EXIT INT TERM
  # Shim containers: delete --force kills them; their shims then exit.
  for d in "${shim_dirs[@]}"; do
    id=$(basename "$d")
    "$BERTH" oci --root "$tmp/shim-exec/builtin" delete --force "$id" >/dev/null 2>&1
  done
  for d in "${shim_dirs[@]}"; do
    pid=$(cat "$d/shim.pid" 2>/dev/null) || continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
  done
  # Leftovers of an interrupted run.
  "$BERTH" oci --root "$tmp/root-berth" delete --force "$tag-berth" >/dev/null 2>&1
  runc --root "$tmp/root-runc" delete --force "$tag-runc" >/dev/null 2>&1
  if [[ -e $nsdir/mnt ]]; then
    nsenter --mount="$nsdir/mnt" crun --root "$tmp/root-crun" delete --force "$tag-crun" >/dev/null 2>&1
    umount "$nsdir/mnt"
  fi
  mountpoint -q "$nsdir" && umount "$nsdir"
  # The CNI bench: its bridge, and ip_forward as it was (the bridge plugin sets it).
  if [[ -n ${cni_made_bridge:-} ]]; then
    ip link del "$CNI_BRIDGE" 2>/dev/null
    [[ -n ${forward_before:-} ]] && echo "$forward_before" >/proc/sys/net/ipv4/ip_forward
  fi
  # Cgroups: every hierarchy, deepest first.
  find /sys/fs/cgroup -mindepth 1 -maxdepth 3 -type d -name "$tag-*" 2>/dev/null | sort -r |
    while read -r d; do rmdir "$d" 2>/dev/null || echo "bench: could not remove cgroup $d" >&2; done
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the bundle -------------------------------------------------------------
rootfs=$tmp/rootfs
mkdir -p "$rootfs"/{bin,proc,dev,sys,tmp}
cp "$(command -v busybox)" "$rootfs/bin/busybox"
for l in sh true sleep; do ln "$rootfs/bin/busybox" "$rootfs/bin/$l"; done

(cd "$tmp" && runc spec)
# make_bundle DIR CGROUP ARGS_JSON: a bundle sharing the rootfs.
make_bundle() {
  mkdir -p "$1"
  jq --arg root "$rootfs" --arg cg "$2" --argjson args "$3" \
    '.root.path = $root | .process.terminal = false | .process.args = $args | .linux.cgroupsPath = $cg' \
    "$tmp/config.json" >"$1/config.json"
}
for rt in berth runc crun; do
  make_bundle "$tmp/bundle-$rt" "/$tag-$rt" '["/bin/true"]'
  mkdir -p "$tmp/root-$rt"
done

# crun's mount namespace without /sys/fs/cgroup/unified, kept by a bind mount.
crun_ns=()
if mountpoint -q /sys/fs/cgroup/unified; then
  mkdir -p "$nsdir"
  mount --bind "$nsdir" "$nsdir" && mount --make-private "$nsdir"
  touch "$nsdir/mnt"
  unshare --mount="$nsdir/mnt" --propagation private umount -l /sys/fs/cgroup/unified
  crun_ns=(nsenter --mount="$nsdir/mnt")
fi

# --- the runs -----------------------------------------------------------------
names=(berth runc crun floor)
declare -A cmd
cmd[berth]="$BERTH oci --root $tmp/root-berth run --bundle $tmp/bundle-berth $tag-berth"
cmd[runc]="runc --root $tmp/root-runc run --bundle $tmp/bundle-runc $tag-runc"
cmd[crun]="${crun_ns[*]} crun --root $tmp/root-crun run --bundle $tmp/bundle-crun $tag-crun"
cmd[floor]="unshare --mount --uts --ipc --net --pid --fork chroot $rootfs /bin/true"
if ((${#crun_ns[@]})); then
  names+=(nsenter)
  cmd[nsenter]="${crun_ns[*]} /bin/true"
fi

# time_one NAME: runs it once; appends the wall time in µs to $tmp/t-NAME.
time_one() {
  local t0 t1
  t0=${EPOCHREALTIME/./}
  # shellcheck disable=SC2086  # the command lines are word-split on purpose
  if ! ${cmd[$1]} </dev/null >"$tmp/out" 2>&1; then
    echo "bench: $1 failed: ${cmd[$1]}" >&2
    cat "$tmp/out" >&2
    exit 1
  fi
  t1=${EPOCHREALTIME/./}
  echo $((t1 - t0)) >>"$tmp/t-$1"
}

echo "== $WARMUP warm-up + $RUNS measured runs each (create, start, exit, delete of /bin/true), interleaved"
for ((i = 0; i < WARMUP; i++)); do
  for n in "${names[@]}"; do time_one "$n"; done
done
for n in "${names[@]}"; do : >"$tmp/t-$n"; done
for ((i = 0; i < RUNS; i++)); do
  for n in "${names[@]}"; do time_one "$n"; done
done

# stats NAME: "median p10 p90" in ms (nearest rank; median of an even count averages the middle two).
stats() {
  sort -n "$tmp/t-$1" | awk '{ v[NR] = $1 }
    function rank(p,  r) { r = int(p * NR + 0.999999); if (r < 1) r = 1; return v[r] }
    END {
      med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "%.2f %.2f %.2f\n", med / 1000, rank(0.10) / 1000, rank(0.90) / 1000
    }'
}
declare -A med p10 p90
for n in "${names[@]}"; do read -r med[$n] p10[$n] p90[$n] < <(stats "$n"); done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", a / b }'; }

echo
printf '%-22s %9s %9s %9s   %-18s %s\n' runtime "median ms" "p10 ms" "p90 ms" "vs berth" "vs floor"
for n in "${names[@]}"; do
  label=$n
  case $n in
    floor) label="floor (unshare+chroot)" ;;
    nsenter) label="(nsenter, in crun row)" ;;
  esac
  vb="-"; vf="-"
  if [[ $n != nsenter ]]; then
    [[ $n != berth ]] && vb="$n/berth $(ratio "${med[$n]}" "${med[berth]}")"
    [[ $n != floor ]] && vf="$n/floor $(ratio "${med[$n]}" "${med[floor]}")"
  fi
  printf '%-22s %9s %9s %9s   %-18s %s\n' "$label" "${med[$n]}" "${p10[$n]}" "${p90[$n]}" "$vb" "$vf"
done
if ((${#crun_ns[@]})); then
  echo "crun row includes the nsenter into its cgroup-v1-only mount namespace (hybrid-cgroup workaround)."
fi

# --- shim memory ----------------------------------------------------------------
echo
echo "== shim memory: $SHIMS containers (sleep) each under its own $shim_name"
exec_root=$tmp/shim-exec
for ((i = 0; i < SHIMS; i++)); do
  id=$tag-shim-$i
  d=$tmp/shim/$id
  mkdir -p "$d"
  shim_dirs+=("$d")
  make_bundle "$d/bundle" "/$id" '["/bin/sleep", "3600"]'
  jq -n --arg id "$id" --arg b "$d/bundle" --arg s "$d" --arg l "$d/c.log" --arg r "$exec_root" --arg berth "$BERTH" \
    '{id: $id, bundle: $b, state_dir: $s, log_path: $l, memory_cgroups: [], handler: "builtin",
      executor_root: $r, binaries: {}, berth: $berth}' >"$d/shim.json"
  # fd 3 is the shim's readiness pipe; a regular file will do: the shim
  # writes "ok <init pid>" (or "err ...") there once the container is created.
  "${shim_cmd[@]}" --config "$d/shim.json" </dev/null >/dev/null 2>&1 3>"$d/ready"
  for _ in $(seq 100); do [[ -s $d/ready ]] && break; sleep 0.05; done
  read -r status rest <"$d/ready" || true
  [[ $status == ok ]] || { echo "bench: shim $id: ${status:-no answer} $rest" >&2; exit 1; }
  # The builtin executor keeps its state under <executor_root>/builtin.
  "$BERTH" oci --root "$exec_root/builtin" start "$id"
done
sleep 0.5
rss=0 pss=0 anon=0
for d in "${shim_dirs[@]}"; do
  pid=$(cat "$d/shim.pid")
  [[ $("$BERTH" oci --root "$exec_root/builtin" state "$(basename "$d")" | jq -r .status) == running ]] ||
    { echo "bench: container $(basename "$d") is not running" >&2; exit 1; }
  rss=$((rss + $(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")))
  anon=$((anon + $(awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status")))
  pss=$((pss + $(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup")))
done
printf '%-34s %8s KiB\n' "$shim_name VmRSS per container" $((rss / SHIMS)) \
  "$shim_name RssAnon per container" $((anon / SHIMS)) \
  "$shim_name PSS per container" $((pss / SHIMS))
printf '%-34s %8s\n' "reference: conmon" "~300 KiB" "reference: containerd-shim-runc-v2" "~10 MiB"

for d in "${shim_dirs[@]}"; do
  "$BERTH" oci --root "$exec_root/builtin" kill "$(basename "$d")" 9
done
for d in "${shim_dirs[@]}"; do
  pid=$(cat "$d/shim.pid")
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  jq -e '.signal == 9' "$d/exit.json" >/dev/null || { echo "bench: shim of $(basename "$d") wrote no kill exit record" >&2; exit 1; }
  "$BERTH" oci --root "$exec_root/builtin" delete "$(basename "$d")"
done
shim_dirs=()

# --- CNI ADD+DEL per pod ----------------------------------------------------------
echo
echo "== CNI: ADD+DEL of a pod's networks, $CNI_RUNS pods (berth cni bench, bridge $CNI_BRIDGE, $CNI_CIDR)"
if ip link show "$CNI_BRIDGE" >/dev/null 2>&1; then
  echo "bench: $CNI_BRIDGE exists already; set BENCH_CNI_BRIDGE" >&2; exit 1
fi
if ip -4 route show match "${CNI_CIDR%/*}" | grep -qv '^default'; then
  echo "bench: $CNI_CIDR is in use on this host; set BENCH_CNI_CIDR" >&2; exit 1
fi
forward_before=$(cat /proc/sys/net/ipv4/ip_forward)
cni_made_bridge=1
mkdir -p "$tmp/cni/net.d"
printf '[cni]\nconf_dir = "%s"\nbridge = "%s"\npod_cidr = "%s"\n' "$tmp/cni/net.d" "$CNI_BRIDGE" "$CNI_CIDR" >"$tmp/cni/config.toml"
"$BERTH" --config "$tmp/cni/config.toml" --root "$tmp/cni/root" cni bench --count "$CNI_RUNS"

echo "== done"
