#!/usr/bin/env bash
# Benchmarks Berth against other runtimes, side by side.
#
#   hack/bench.sh            # everything: oci, shim, cni, cri, pods
#   hack/bench.sh oci cri    # only those parts
#
# oci:  Berth's built-in OCI executor vs runc and crun (BENCH_RUNS, BENCH_WARMUP).
# shim: the shim's memory per container (BENCH_SHIMS).
# cni:  CNI ADD and DEL of a pod's networks inside berth (BENCH_CNI_RUNS).
# cri:  `berth cri` vs containerd's CRI plugin: pod lifecycle times and memory
#       (BENCH_PODS, BENCH_CRI_WARMUP, BENCH_RSS_PODS; BENCH_RAW=DIR keeps
#       every pod's phase times in DIR/<runtime>.tsv).
# pods: standalone mode with many pods, see hack/bench-pods.sh.
#
# oci: every runtime does the same work per run: create -> start -> wait for exit
# -> delete, of a busybox /bin/true container, via `<rt> run` (runc, crun and
# `berth-oci run` all delete the container when it exits unless --detach).
# berth-oci is `berth oci` in its own small binary, the one the shim runs.
# The floor is the same namespaces without any runtime:
# `unshare --mount --uts --ipc --net --pid --fork chroot ROOTFS /bin/true`.
# Runs are interleaved (berth, runc, crun, floor, berth, ...) so load from
# other users of the machine hits every runtime alike. Times are wall clock
# from $EPOCHREALTIME around each command (no extra fork in the interval).
#
# shim: BENCH_SHIMS (5) long-running containers, each under
# its own shim, started directly as the daemon's shim::spawn does: the small
# `berth-shim` (which creates the container with `berth-oci create`), or with
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
# cni: ADD and DEL of a pod's networks as `berth cri` runs them (the
# loopback network, then Berth's default bridge network: bridge + host-local +
# portmap from /usr/lib/cni), BENCH_CNI_RUNS (30) pods, each in a fresh network
# namespace, timed inside berth (`berth cni bench`, a hidden subcommand) so
# process startup is not counted; on its own bridge and subnet
# (BENCH_CNI_BRIDGE berthbench0, BENCH_CNI_CIDR 10.202.255.0/24), no traffic.
#
# cri: pods from RunPodSandbox to a started container (RunPodSandbox,
# CreateContainer, StartContainer) and back to removed (StopContainer with
# timeout 0, RemoveContainer, StopPodSandbox, RemovePodSandbox), each RPC
# timed by the `cri-bench` client (tests/src/bin/cri-bench.rs) over the unix
# socket, BENCH_PODS pods per runtime, interleaved; then the memory of the
# daemons and of the per-pod processes with BENCH_RSS_PODS running pods.
# Berth: `berth cri` on its own socket and state root. containerd: Debian's
# containerd 1.6 with a private config (own root, state, gRPC socket, CRI
# plugin, runc via containerd-shim-runc-v2, overlayfs snapshotter, the
# sandbox image a busybox `sleep` built and imported by this script, since
# nothing comes from the internet). Both run the same pod: network and IPC
# namespaces of the pod, a PID namespace per container (kubelet's defaults),
# a cgroup parent per pod, a log directory, busybox `sleep 3600`. Each
# daemon keeps its persistent state (images, snapshots, records) on disk under
# /tmp and its volatile state (Berth's run root; containerd's state dir, runc
# root and pinned network namespaces) on a tmpfs, as /run is in production.
# Networking, the same for both: each makes and pins a network namespace and
# runs CNI plugins from the same dirs: the loopback plugin (its own `lo`
# network), then the one network of the conflist written here, a stub plugin
# (a /bin/sh script) that configures nothing and reports 127.0.0.1/32 on eth0
# (containerd fails RunPodSandbox without an address on eth0), so no bridge,
# veth or IPAM work is timed. containerd also keeps shim sockets in /run/containerd/s and CNI results in
# /var/lib/cni (both emptied when the pods go; the directories are removed if
# this script made them). Both daemons log at warn level.
#
# Needs root, runc, crun, busybox-static, jq, containernetworking-plugins (and
# containerd for cri). Everything it creates (containers, pods, daemons,
# cgroups, shims, mounts, temp dirs, the namespace mount, the bench bridge) is
# removed on exit.
set -euo pipefail

RUNS=${BENCH_RUNS:-50}
CNI_RUNS=${BENCH_CNI_RUNS:-30}
CNI_BRIDGE=${BENCH_CNI_BRIDGE:-berthbench0}
CNI_CIDR=${BENCH_CNI_CIDR:-10.202.255.0/24}
WARMUP=${BENCH_WARMUP:-5}
SHIMS=${BENCH_SHIMS:-5}
PODS=${BENCH_PODS:-30}
CRI_WARMUP=${BENCH_CRI_WARMUP:-3}
RSS_PODS=${BENCH_RSS_PODS:-50}
repo=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/berth/target}

parts=("$@")
((${#parts[@]})) || parts=(oci shim cni cri pods)
for p in "${parts[@]}"; do
  [[ $p =~ ^(oci|shim|cni|cri|pods)$ ]] || { echo "bench: unknown part $p (oci, shim, cni, cri, pods)" >&2; exit 2; }
done
want() { [[ " ${parts[*]} " == *" $1 "* ]]; }

[[ $(id -u) == 0 ]] || { echo "bench: must run as root" >&2; exit 1; }
need=(busybox jq)
want oci && need+=(runc crun unshare nsenter)
want cni && need+=(ip)
want cri && need+=(containerd ctr containerd-shim-runc-v2 runc findmnt)
for b in "${need[@]}"; do
  command -v "$b" >/dev/null || { echo "bench: $b not found (hack/setup.sh installs it)" >&2; exit 1; }
done

echo "== building berth (release, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
(cd "$repo" && cargo build --release -q -p berth-kubelet --bin berth --bin berth-shim --bin berth-pause --bin berth-oci)
want cri && (cd "$repo" && cargo build --release -q -p berth-tests --bin cri-bench --bin berth-testimage)
BERTH=$CARGO_TARGET_DIR/release/berth
BERTH_OCI=$CARGO_TARGET_DIR/release/berth-oci
CRI_BENCH=$CARGO_TARGET_DIR/release/cri-bench
if [[ ${BENCH_SHIM:-berth-shim} == berth ]]; then
  shim_cmd=("$BERTH" shim) shim_name="berth shim"
else
  shim_cmd=("$CARGO_TARGET_DIR/release/berth-shim") shim_name="berth-shim"
fi

tag=berth-bench-$$
tmp=$(mktemp -d /tmp/$tag.XXXXXX)
nsdir=$tmp/ns
cri=$tmp/cri
shim_dirs=()

# kill_wait PID: SIGTERM, up to 10 s, then SIGKILL.
kill_wait() {
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null
}

# PIDs of processes whose command line mentions $1 (our own unique paths).
pids_mentioning() {
  local f
  for f in /proc/[0-9]*/cmdline; do
    grep -qF -- "$1" "$f" 2>/dev/null && { f=${f#/proc/}; echo "${f%/cmdline}"; }
  done
}

cri_cleanup() {
  local pid d
  # Pods through the API first, then the daemons.
  if [[ -n ${berthd_pid:-} ]] && kill -0 "$berthd_pid" 2>/dev/null; then
    "$CRI_BENCH" down --socket "$cri/berth.sock" --tag "$tag" >/dev/null 2>&1 ||
      echo "bench: removing berth's pods failed" >&2
    kill_wait "$berthd_pid"
  fi
  if [[ -n ${containerd_pid:-} ]] && kill -0 "$containerd_pid" 2>/dev/null; then
    "$CRI_BENCH" down --socket "$cri/containerd/containerd.sock" --tag "$tag" >/dev/null 2>&1 ||
      echo "bench: removing containerd's pods failed" >&2
    kill_wait "$containerd_pid"
  fi
  # Leftovers of an interrupted run: pod processes (in the pod cgroups),
  # then shims (their command lines name our state dirs), then mounts.
  for d in $(find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d -name "$tag-*" 2>/dev/null); do
    find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -u | while read -r pid; do kill -9 "$pid" 2>/dev/null; done
  for pid in $(pids_mentioning "$cri/"); do
    [[ $pid != "$$" ]] && kill -9 "$pid" 2>/dev/null
  done
  sleep 0.2
  findmnt -rn -o TARGET | grep -F "$cri/" | sort -r | while read -r d; do umount -l "$d" 2>/dev/null; done
  # Directories containerd makes outside its root and state, if they were not there before.
  [[ ${had_run_containerd:-1} == 0 ]] && { rmdir /run/containerd/s /run/containerd 2>/dev/null; }
  [[ ${had_cni_results:-1} == 0 ]] && rmdir /var/lib/cni/results 2>/dev/null
  [[ ${had_var_lib_cni:-1} == 0 ]] && rmdir /var/lib/cni 2>/dev/null
}

cleanup() {
  local rc=$? d id pid
  set +e
  trap - EXIT INT TERM
  cri_cleanup
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
  "$BERTH_OCI" --root "$tmp/root-berth" delete --force "$tag-berth" >/dev/null 2>&1
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
  find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d -name "$tag-*" 2>/dev/null |
    while read -r top; do find "$top" -depth -type d; done |
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
if want oci; then
  if mountpoint -q /sys/fs/cgroup/unified; then
    mkdir -p "$nsdir"
    mount --bind "$nsdir" "$nsdir" && mount --make-private "$nsdir"
    touch "$nsdir/mnt"
    unshare --mount="$nsdir/mnt" --propagation private umount -l /sys/fs/cgroup/unified
    crun_ns=(nsenter --mount="$nsdir/mnt")
  fi
fi

# --- the runs -----------------------------------------------------------------
if want oci; then
  names=(berth runc crun floor)
  declare -A cmd
  cmd[berth]="$BERTH_OCI --root $tmp/root-berth run --bundle $tmp/bundle-berth $tag-berth"
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
    crun_alone=$(awk -v a="${med[crun]}" -v b="${med[nsenter]}" 'BEGIN { printf "%.2f", a - b }')
    echo "crun without that nsenter (median difference): $crun_alone ms, crun/berth $(ratio "$crun_alone" "${med[berth]}")"
  fi

fi
# --- shim memory ----------------------------------------------------------------
if want shim; then
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
fi
# --- CNI ADD+DEL per pod ----------------------------------------------------------
if want cni; then
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
fi

# --- CRI: berth cri vs containerd ---------------------------------------------
# mem_of PID: "VmRSS PSS" in KiB.
mem_of() {
  echo "$(awk '/^VmRSS:/ { print $2 }' "/proc/$1/status") $(awk '/^Pss:/ { print $2 }' "/proc/$1/smaps_rollup")"
}

# wait_socket PATH PID NAME: until PATH exists, while PID lives.
wait_socket() {
  for _ in $(seq 200); do
    [[ -S $1 ]] && return 0
    kill -0 "$2" 2>/dev/null || break
    sleep 0.05
  done
  echo "bench: $3 did not start; its log:" >&2
  cat "$cri/$3.log" >&2
  exit 1
}

if want cri; then
  echo
  echo "== CRI: berth cri vs containerd $(containerd --version | awk '{ print $3 }') (runc $(runc --version | awk 'NR == 1 { print $3 }'))"
  [[ -x /usr/lib/cni/loopback ]] || { echo "bench: /usr/lib/cni/loopback not found (containernetworking-plugins)" >&2; exit 1; }
  [[ -d /run/containerd ]] && had_run_containerd=1 || had_run_containerd=0
  [[ -d /var/lib/cni ]] && had_var_lib_cni=1 || had_var_lib_cni=0
  [[ -d /var/lib/cni/results ]] && had_cni_results=1 || had_cni_results=0
  mkdir -p "$cri"/{berth,containerd,cni-bin,cni-conf,logs,layout,run}
  # Volatile state on a tmpfs, as /run is in production (here / holds /run).
  mount -t tmpfs -o mode=0755 bench-run "$cri/run"
  image=berth.local/busybox:1
  pause_image=berth.local/pause:1
  testimage=$CARGO_TARGET_DIR/release/berth-testimage
  "$testimage" busybox --oci-layout "$cri/layout" --tag "$image" >/dev/null
  "$testimage" busybox --docker-archive "$cri/busybox.tar" --tag "$image" >/dev/null
  # containerd's sandbox image: busybox sleeping for good (Berth's pause needs no image).
  "$testimage" busybox --cmd sleep --cmd 2147483647 --docker-archive "$cri/pause.tar" --tag "$pause_image" >/dev/null

  # Both runtimes' CNI: their own loopback network, then the stub (see the top of this file).
  ln -s /usr/lib/cni/loopback "$cri/cni-bin/loopback"
  cat >"$cri/cni-bin/bench-stub" <<'STUB'
#!/bin/sh
# A CNI plugin that configures nothing: ADD reports 127.0.0.1/32 on eth0; DEL and CHECK succeed.
case "$CNI_COMMAND" in
ADD) printf '{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"%s"}],"ips":[{"version":"4","interface":0,"address":"127.0.0.1/32"}]}\n' "$CNI_NETNS" ;;
VERSION) echo '{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0"]}' ;;
esac
STUB
  chmod 755 "$cri/cni-bin/bench-stub"
  echo '{"cniVersion":"0.4.0","name":"bench","plugins":[{"type":"bench-stub"}]}' >"$cri/cni-conf/10-bench.conflist"

  cd_dir=$cri/containerd
  cd_sock=$cd_dir/containerd.sock
  "$repo/hack/containerd-config.sh" ROOT="$cd_dir/root" STATE="$cri/run/containerd" SOCKET="$cd_sock" \
    OPT="$cd_dir/opt" SANDBOX_IMAGE="$pause_image" RUNC="$(command -v runc)" RUNC_ROOT="$cri/run/runc" \
    CNI_BIN="$cri/cni-bin" CNI_CONF="$cri/cni-conf" >"$cri/containerd.toml"
  containerd --config "$cri/containerd.toml" --log-level warn </dev/null >"$cri/containerd.log" 2>&1 &
  containerd_pid=$!
  wait_socket "$cd_sock" "$containerd_pid" containerd
  for f in busybox pause; do
    ctr --address "$cd_sock" -n k8s.io images import "$cri/$f.tar" >"$cri/import.log" 2>&1 ||
      { cat "$cri/import.log" >&2; exit 1; }
  done
  printf '[cni]\nconf_dir = "%s"\nplugin_dirs = ["%s"]\n' "$cri/cni-conf" "$cri/cni-bin" >"$cri/berth.toml"
  berth_cmd=("$BERTH" --config "$cri/berth.toml" --root "$cri/berth" --run-root "$cri/run/berth" --log-level warn)
  "${berth_cmd[@]}" images import "$cri/layout" --name "$image" >"$cri/import.log" 2>&1 ||
    { cat "$cri/import.log" >&2; exit 1; }
  "${berth_cmd[@]}" cri --socket "$cri/berth.sock" </dev/null >"$cri/berth.log" 2>&1 &
  berthd_pid=$!
  wait_socket "$cri/berth.sock" "$berthd_pid" berth

  pod_opts=(--image "$image" --tag "$tag" --cgroup-parent "/$tag-cri" --log-dir "$cri/logs")
  echo "== pod lifecycle: RunPodSandbox .. StartContainer (start), StopContainer .. RemovePodSandbox (teardown)"
  "$CRI_BENCH" cycle --target "berth=$cri/berth.sock" --target "containerd=$cd_sock" \
    --pods "$PODS" --warmup "$CRI_WARMUP" ${BENCH_RAW:+--raw "$BENCH_RAW"} "${pod_opts[@]}"
  echo
  "$CRI_BENCH" trace --socket "$cri/berth.sock" --name berth-trace "${pod_opts[@]}"
  "$CRI_BENCH" trace --socket "$cd_sock" --name containerd-trace "${pod_opts[@]}"

  echo
  echo "== memory with $RSS_PODS running pods per runtime (each: its pause and one sleep container)"
  declare -A row
  for rt in berth containerd; do
    sock=$cri/berth.sock dpid=$berthd_pid
    [[ $rt == containerd ]] && sock=$cd_sock dpid=$containerd_pid
    read -r idle_rss idle_pss < <(mem_of "$dpid")
    "$CRI_BENCH" up --socket "$sock" --name "$rt-up" --pods "$RSS_PODS" "${pod_opts[@]}" >"$cri/up-$rt"
    sleep 1
    read -r d_rss d_pss < <(mem_of "$dpid")
    # A container's shim is its init's parent (both shims are subreapers).
    shims=$(awk '{ print $4 }' "$cri/up-$rt" | while read -r p; do awk '/^PPid:/ { print $2 }' "/proc/$p/status"; done | sort -u)
    shim_comm=$(for p in $shims; do cat "/proc/$p/comm"; done | sort -u | tr '\n' ' ')
    s_rss=0 s_pss=0 p_rss=0 p_pss=0
    for p in $shims; do
      read -r a b < <(mem_of "$p")
      s_rss=$((s_rss + a)) s_pss=$((s_pss + b))
    done
    for p in $(awk '{ print $2 }' "$cri/up-$rt"); do
      read -r a b < <(mem_of "$p")
      p_rss=$((p_rss + a)) p_pss=$((p_pss + b))
    done
    n=$RSS_PODS
    row[$rt,shims]="$(wc -w <<<"$shims") x ${shim_comm% }"
    row[$rt,d_idle]="$((idle_rss / 1024)) MiB"
    row[$rt,d_rss]="$((d_rss / 1024)) MiB"
    row[$rt,d_pss]="$((d_pss / 1024)) MiB"
    row[$rt,d_grow]="$(((d_rss - idle_rss) / n)) KiB"
    row[$rt,s_rss]="$((s_rss / n)) KiB"
    row[$rt,s_pss]="$((s_pss / n)) KiB"
    row[$rt,p_rss]="$((p_rss / n)) KiB"
    row[$rt,p_pss]="$((p_pss / n)) KiB"
    row[$rt,total]="$(((d_pss - idle_pss + s_pss + p_pss) / n)) KiB"
    "$CRI_BENCH" down --socket "$sock" --tag "$tag"
  done
  cmp_ratio() { awk -v a="${1%% *}" -v b="${2%% *}" 'BEGIN { if (a > 0) printf "%.2fx", b / a; else print "-" }'; }
  printf '%-42s %12s %12s %17s\n' "" "berth cri" containerd "containerd/berth"
  for k in d_idle:"daemon VmRSS, idle" d_rss:"daemon VmRSS, $RSS_PODS pods" d_pss:"daemon PSS, $RSS_PODS pods" \
    d_grow:"daemon VmRSS growth per pod" s_rss:"shim VmRSS per pod" s_pss:"shim PSS per pod" \
    p_rss:"pause VmRSS per pod" p_pss:"pause PSS per pod" total:"per pod, PSS of daemon growth+shim+pause"; do
    printf '%-42s %12s %12s %17s\n' "${k#*:}" "${row[berth,${k%%:*}]}" "${row[containerd,${k%%:*}]}" \
      "$(cmp_ratio "${row[berth,${k%%:*}]}" "${row[containerd,${k%%:*}]}")"
  done
  echo "shims: berth ${row[berth,shims]}; containerd ${row[containerd,shims]}"
  echo "(berth: a berth-shim per container and a detached berth-pause per pod; containerd: one"
  echo " containerd-shim-runc-v2 per pod, parent of its pause container (busybox sleep) and containers)"

  # Both daemons stop here; nothing of theirs may stay behind.
  kill_wait "$berthd_pid"
  kill_wait "$containerd_pid"
  wait "$berthd_pid" "$containerd_pid" 2>/dev/null || true
  berthd_pid='' containerd_pid=''
  left=$(findmnt -rn -o TARGET | grep -F "$cri/" | grep -vxF "$cri/run" || true)
  [[ -z $left ]] || echo "bench: mounts left: $left" >&2
fi

if want pods; then
  "$repo/hack/bench-pods.sh"
fi
echo "== done"
