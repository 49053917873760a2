#!/usr/bin/env bash
# Builds berth-testimage and runs it with the given args, e.g.
#   hack/test-image.sh busybox --push 127.0.0.1:5000/busybox:latest
#   hack/test-image.sh busybox --oci-layout /tmp/layout --tag latest
#   hack/test-image.sh busybox --docker-archive /tmp/busybox.tar --tag busybox:latest
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/berth/target}"
cargo build --quiet -p berth-tests --bin berth-testimage
exec "$CARGO_TARGET_DIR/debug/berth-testimage" "$@"
