#!/usr/bin/env bash
# The main job: build berth, start a local registry, push a busybox image
# built from /bin/busybox, pull and list it with berth, then run a container
# from it with the built-in executor and show its CRI-format log.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/berth/target}"
cargo build -q --bins
bin="$CARGO_TARGET_DIR/debug"

work=$(mktemp -d /tmp/berth-demo.XXXXXX)
reg_pid=
cleanup() {
  if [ -n "$reg_pid" ]; then
    kill "$reg_pid" 2>/dev/null || true
    wait "$reg_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YAML
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
log:
  level: error
YAML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
reg_pid=$!
for _ in $(seq 50); do
  curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
  sleep 0.1
done

"$bin/berth-testimage" busybox --push "127.0.0.1:$port/demo/busybox:latest"
berth() { "$bin/berth" --root "$work/state" --cgroup-parent "/berth-demo-$$" "$@"; }
cleanup_containers() {
  for id in $(berth container ps -a -q 2>/dev/null); do berth container rm "$id" >/dev/null; done
  for d in /sys/fs/cgroup/*/"berth-demo-$$"; do if [ -d "$d" ]; then rmdir "$d" || true; fi; done
  cleanup
}
trap cleanup_containers EXIT

berth images pull "127.0.0.1:$port/demo/busybox:latest"
berth images ls
echo
berth container run --name demo --image "127.0.0.1:$port/demo/busybox:latest" -- \
  sh -c 'echo "hello from $(hostname), pid $$, uid $(id -u)"; grep -E "CapEff|Seccomp:" /proc/self/status'
berth container ps -a
echo "--- its log file, in the CRI format:"
cat "$(berth container inspect demo | python3 -c 'import json,sys; print(json.load(sys.stdin)["record"]["log_path"])')"
