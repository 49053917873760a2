#!/usr/bin/env bash
# Benchmarks standalone mode (`berth run`) with many pods.
#
#   hack/bench-pods.sh          # BENCH_PODS (50) pods, BENCH_IDLE (30) s idle window
#
# 1. Start-up: `berth run --detach` of BENCH_PODS single-container pods (busybox
#    `sleep`, an exec readiness probe); wall time until every pod is Running
#    and Ready, polled through `berth get pods -o json`.
# 2. Idle: the daemon's RSS (it holds the runtime in-process), the shims' total
#    PSS, and the CPU time the daemon and the shims use over BENCH_IDLE seconds.
# 3. Probes: the same pods with an `exec` liveness probe every 10 s; the CPU
#    time of the daemon and its reaped children (the `berth exec-sync` helper
#    each exec probe runs; under kubelet + runc that is a `runc exec`) over
#    BENCH_IDLE seconds, minus the idle baseline, per probe run.
#
# 4. The same two phases with `berth run --runtime-endpoint` driving Debian's
#    containerd (CRI plugin, runc), where each exec probe is an ExecSync
#    through containerd-shim-runc-v2 and `runc exec`; CPU is the berth engine
#    plus containerd plus its shims (with their reaped children).
#
# Needs root, busybox-static and containerd. Everything it starts is stopped
# and removed.
set -euo pipefail

PODS=${BENCH_PODS:-50}
IDLE=${BENCH_IDLE:-30}
repo=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/berth/target}
[[ $(id -u) == 0 ]] || { echo "bench-pods: must run as root" >&2; exit 1; }

cargo build -q --release -p berth-kubelet --bin berth --bin berth-shim --bin berth-pause --bin berth-oci -p berth-tests --bin berth-testimage --manifest-path "$repo/Cargo.toml"
bin="$CARGO_TARGET_DIR/release"
work=$(mktemp -d /tmp/berth-bench-pods.XXXXXX)
cg="/berth-bench-pods-$$"
berth() { "$bin/berth" --root "$work/state" --cgroup-parent "$cg" "$@"; }
cleanup() {
  berth stop >/dev/null 2>&1 || true
  if [[ -n ${cd_pid:-} ]]; then
    kill "$cd_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$cd_pid" 2>/dev/null || break; sleep 0.1; done
    for p in $(pids_mentioning "$work/"); do [[ $p != "$$" ]] && kill -9 "$p" 2>/dev/null; done
    findmnt -rn -o TARGET | grep -F "$work/" | sort -r | while read -r d; do umount -l "$d" 2>/dev/null; done
    [[ ${had_run_containerd:-1} == 0 ]] && { rmdir /run/containerd/s /run/containerd 2>/dev/null || true; }
  fi
  for d in /sys/fs/cgroup/*/"${cg#/}"; do [ -d "$d" ] && rmdir "$d" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/berth-testimage" busybox --oci-layout "$work/layout" >/dev/null
berth images import "$work/layout" --name berth.local/busybox:1 >/dev/null 2>&1

manifests() { # $1: extra container fields (YAML, indented 4)
  for i in $(seq "$PODS"); do
    cat <<YAML
---
apiVersion: v1
kind: Pod
metadata: {name: p$i}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: berth.local/busybox:1
    command: ["sleep", "100000"]
    readinessProbe: {exec: {command: ["true"]}, periodSeconds: 10}
$1
YAML
  done
}

all_ready() {
  berth get pods -o json 2>/dev/null | python3 -c '
import json, sys
items = json.load(sys.stdin).get("items", [])
ok = sum(1 for p in items if any(c["type"] == "Ready" and c["status"] == "True" for c in p.get("status", {}).get("conditions", [])))
sys.exit(0 if ok == int(sys.argv[1]) else 1)' "$PODS"
}

cpu_ticks() { # utime+stime of pids and their reaped children, in clock ticks
  local t=0 p
  for p in "$@"; do t=$((t + $(awk '{print $14+$15+$16+$17}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo "$t"
}
# PIDs of processes whose command line mentions $1.
pids_mentioning() {
  local f
  for f in /proc/[0-9]*/cmdline; do
    grep -qF -- "$1" "$f" 2>/dev/null && { f=${f#/proc/}; echo "${f%/cmdline}"; }
  done
}
hz=$(getconf CLK_TCK)

run_phase() { # $1: label, $2: extra fields, $3...: berth run options
  local label=$1 extra=$2
  shift 2
  manifests "$extra" > "$work/pods.yaml"
  local t0 t1
  t0=$EPOCHREALTIME
  berth run --detach --eviction-hard 'memory.available<100Mi' "$@" "$work/pods.yaml" >/dev/null
  until all_ready; do sleep 0.1; done
  t1=$EPOCHREALTIME
  local pid shims rss pss c0 c1
  pid=$(pgrep -f -- "run --daemon-child $work/pods.yaml" | head -1)
  # The processes doing the runtime's work: berth's daemon, or with containerd
  # also containerd and its shims.
  local all=("$pid")
  if [[ -n ${cd_pid:-} ]]; then all+=("$cd_pid" $(pids_mentioning "$cd_sock" | grep -v "^$cd_pid$" || true)); fi
  printf '%-34s %8.2f s\n' "$label: all $PODS pods Ready after" "$(echo "$t1 - $t0" | bc -l)"
  sleep 3
  rss=$(awk '/^VmRSS/{print $2}' "/proc/$pid/status")
  shims=$(pgrep -f "berth-shim --config $work/state" | tr '\n' ' ' || true)
  pss=0
  for s in $shims; do pss=$((pss + $(awk '/^Pss:/{print $2}' "/proc/$s/smaps_rollup"))); done
  c0=$(cpu_ticks "${all[@]}")
  sleep "$IDLE"
  c1=$(cpu_ticks "${all[@]}")
  printf '%-34s %8d KiB\n' "$label: berth RSS" "$rss"
  printf '%-34s %8d KiB (%d KiB per pod)\n' "$label: berth shims PSS" "$pss" $((pss / PODS))
  printf '%-34s %8.2f %% of one core\n' "$label: runtime CPU" "$(echo "($c1 - $c0) * 100 / $hz / $IDLE" | bc -l)"
  echo "$(( c1 - c0 ))" > "$work/$label.ticks"
  berth stop >/dev/null
}

per_probe() { # $1: idle label, $2: probes label
  local idle probes runs
  idle=$(cat "$work/$1.ticks"); probes=$(cat "$work/$2.ticks"); runs=$(( PODS * IDLE / 10 ))
  echo "($probes - $idle) * 1000 / $hz / $runs" | bc -l
}

echo "== berth run: $PODS pods, Berth's own runtime"
run_phase berth ""
run_phase berth-probes "    livenessProbe: {exec: {command: [\"true\"]}, periodSeconds: 10}"
b=$(per_probe berth berth-probes)

echo "== berth run: $PODS pods through containerd $(containerd --version | awk '{ print $3 }') + runc"
cd_dir=$work/containerd
cd_sock=$cd_dir/containerd.sock
mkdir -p "$cd_dir"/{root,state,opt,cni-bin,cni-conf}
[[ -d /run/containerd ]] && had_run_containerd=1 || had_run_containerd=0
ln -s /usr/lib/cni/loopback "$cd_dir/cni-bin/loopback"
# containerd refuses a sandbox without an eth0 address: a stub reports one.
cat >"$cd_dir/cni-bin/stub" <<'STUB'
#!/bin/sh
case "$CNI_COMMAND" in
ADD) printf '{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"%s"}],"ips":[{"version":"4","interface":0,"address":"127.0.0.1/32"}]}\n' "$CNI_NETNS" ;;
VERSION) echo '{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0"]}' ;;
esac
STUB
chmod 755 "$cd_dir/cni-bin/stub"
echo '{"cniVersion":"0.4.0","name":"bench","plugins":[{"type":"stub"}]}' >"$cd_dir/cni-conf/10-bench.conflist"
"$repo/hack/containerd-config.sh" ROOT="$cd_dir/root" STATE="$cd_dir/state" SOCKET="$cd_sock" \
  OPT="$cd_dir/opt" SANDBOX_IMAGE=berth.local/pause:1 RUNC="$(command -v runc)" RUNC_ROOT="$cd_dir/state/runc" \
  CNI_BIN="$cd_dir/cni-bin" CNI_CONF="$cd_dir/cni-conf" >"$cd_dir/config.toml"
containerd --config "$cd_dir/config.toml" --log-level warn </dev/null >"$cd_dir/log" 2>&1 &
cd_pid=$!
until [[ -S $cd_sock ]]; do kill -0 "$cd_pid" || { cat "$cd_dir/log" >&2; exit 1; }; sleep 0.1; done
"$bin/berth-testimage" busybox --docker-archive "$work/busybox.tar" --tag berth.local/busybox:1 >/dev/null
"$bin/berth-testimage" busybox --cmd sleep --cmd 2147483647 --docker-archive "$work/pause.tar" --tag berth.local/pause:1 >/dev/null
for f in busybox pause; do ctr --address "$cd_sock" -n k8s.io images import "$work/$f.tar" >/dev/null; done
run_phase containerd "" --runtime-endpoint "unix://$cd_sock"
run_phase containerd-probes "    livenessProbe: {exec: {command: [\"true\"]}, periodSeconds: 10}" --runtime-endpoint "unix://$cd_sock"
c=$(per_probe containerd containerd-probes)

echo "== exec liveness probes, CPU per probe run"
printf '%-34s %8.2f ms\n' "berth" "$b" "containerd + runc" "$c"
printf '%-34s %8.2fx\n' "containerd/berth" "$(echo "$c / $b" | bc -l)"
