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
# Needs root and busybox-static. Everything it starts is stopped and removed.
set -euo pipefail

PODS=${BENCH_PODS:-50}
IDLE=${BENCH_IDLE:-30}
repo=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/berth/target}
[[ $(id -u) == 0 ]] || { echo "bench-pods: must run as root" >&2; exit 1; }

cargo build -q --release -p berth-kubelet --bin berth --bin berth-shim -p berth-tests --bin berth-testimage --manifest-path "$repo/Cargo.toml"
bin="$CARGO_TARGET_DIR/release"
work=$(mktemp -d /tmp/berth-bench-pods.XXXXXX)
cg="/berth-bench-pods-$$"
berth() { "$bin/berth" --root "$work/state" --cgroup-parent "$cg" "$@"; }
cleanup() {
  berth stop >/dev/null 2>&1 || true
  for d in /sys/fs/cgroup/*/"${cg#/}"; do [ -d "$d" ] && rmdir "$d" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

"$bin/berth-testimage" busybox --oci-layout "$work/layout" >/dev/null
berth images import "$work/layout" --name bench/busybox:1 >/dev/null 2>&1

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
    image: bench/busybox:1
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

cpu_ticks() { # utime+stime of a pid and its children, in clock ticks
  awk '{print $14+$15+$16+$17}' "/proc/$1/stat"
}
hz=$(getconf CLK_TCK)

run_phase() { # $1: label, $2: extra fields
  manifests "$2" > "$work/pods.yaml"
  local t0 t1
  t0=$EPOCHREALTIME
  berth run --detach --eviction-hard 'memory.available<100Mi' "$work/pods.yaml" >/dev/null
  until all_ready; do sleep 0.1; done
  t1=$EPOCHREALTIME
  local pid shims rss pss c0 c1
  pid=$(pgrep -f -- "run --daemon-child $work/pods.yaml" | head -1)
  printf '%-34s %8.2f s\n' "$1: all $PODS pods Ready after" "$(echo "$t1 - $t0" | bc -l)"
  sleep 3
  rss=$(awk '/^VmRSS/{print $2}' "/proc/$pid/status")
  shims=$(pgrep -f "berth-shim --config $work/state" | tr '\n' ' ' || true)
  pss=0
  for s in $shims; do pss=$((pss + $(awk '/^Pss:/{print $2}' "/proc/$s/smaps_rollup"))); done
  c0=$(cpu_ticks "$pid")
  sleep "$IDLE"
  c1=$(cpu_ticks "$pid")
  printf '%-34s %8d KiB\n' "$1: daemon RSS" "$rss"
  printf '%-34s %8d KiB (%d KiB per pod)\n' "$1: shims PSS" "$pss" $((pss / PODS))
  printf '%-34s %8.2f %% of one core\n' "$1: daemon CPU" "$(echo "($c1 - $c0) * 100 / $hz / $IDLE" | bc -l)"
  echo "$(( c1 - c0 ))" > "$work/$1.ticks"
  berth stop >/dev/null
}

echo "== berth run: $PODS pods"
run_phase idle ""
run_phase probes "    livenessProbe: {exec: {command: [\"true\"]}, periodSeconds: 10}"
idle=$(cat "$work/idle.ticks"); probes=$(cat "$work/probes.ticks")
runs=$(( PODS * IDLE / 10 ))
printf '%-34s %8.2f ms CPU per exec probe (%d probes)\n' "exec liveness probes" "$(echo "($probes - $idle) * 1000 / $hz / $runs" | bc -l)" "$runs"
