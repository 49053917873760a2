#!/usr/bin/env bash
# The cgroup v2 suite: the end-to-end tests that touch cgroups, built on the
# host and run inside the v2 VM (hack/v2vm/run.sh) with nextest, against a
# kernel that has only cgroup v2. Extra arguments go to `nextest run`;
# filter expressions given there replace the list below (e.g.
# `hack/v2vm/suite.sh -E 'test(cgroup_values)'`).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/berth/target}"

# What runs in the VM: nextest filter expressions, one a line (their union).
# Software emulation is 25-35x slower than the host: tests that wait on
# short probe, hook or back-off timings are left to the host suite.
filters=(
  'binary(conformance) & test(/^(cgroup_values|memory_limit_oom|pids_limit|stop|remove_leaves_nothing)::/)'
  'binary(oci_builtin)'
  'binary(cri_stats)'
  'binary(sandbox) & test(run_sets_up_namespaces_files_shm_and_cgroup)'
  'binary(resources) & test(/^(qos_classes_and_the_cgroup_values_kubelet_computes|memory_hog_is_oom_killed_and_restarted_per_policy|cpu_limit_throttles_a_busy_container|a_fork_loop_stops_at_the_pod_pids_limit|eviction_order_under_simulated_memory_pressure|in_place_resize_changes_the_live_limits|top_tracks_a_known_load)$/)'
  'binary(standalone) & test(/^(adopts_running_pods_after_kill_9|invalid_manifests_are_rejected_and_valid_pods_still_run|logs_follow_across_restarts|drives_a_remote_cri_endpoint)$/)'
)

# Build on the host: the berth binaries and the test binaries, plus the
# metadata nextest needs to run them without cargo.
cargo build --workspace --bins
meta="$CARGO_TARGET_DIR/v2vm"
mkdir -p "$meta"
cargo nextest list --workspace --list-type binaries-only --message-format json >"$meta/binaries.json"
cargo metadata --format-version 1 --all-features --no-deps >"$meta/cargo-metadata.json"
nextest="$(command -v cargo-nextest)" || { echo "v2 suite: cargo-nextest is missing (hack/setup.sh)" >&2; exit 1; }

args=()
if [[ " $* " != *" -E "* && " $* " != *" --filterset "* ]]; then
  for f in "${filters[@]}"; do args+=(-E "$f"); done
fi
exec hack/v2vm/run.sh --share "$(dirname "$nextest"):/opt/v2vm-nextest:ro" -e CI -- \
  "/opt/v2vm-nextest/$(basename "$nextest")" nextest run --profile v2vm --no-fail-fast \
  --binaries-metadata "$meta/binaries.json" --cargo-metadata "$meta/cargo-metadata.json" \
  "${args[@]}" "$@"
