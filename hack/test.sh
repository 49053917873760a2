#!/usr/bin/env bash
# Runs every test: unit tests and the end-to-end tests of the real berth binary.
# Needs root (namespaces, mounts, cgroups) and the packages from hack/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/berth/target}"
cargo build --workspace --bins
exec cargo nextest run --workspace --no-fail-fast "$@"
