#!/usr/bin/env bash
# The main job: build berth, start a local registry, push a busybox image
# built from /bin/busybox, then run the example web pod (examples/web.yaml:
# an init container, a postStart hook, readiness and liveness probes) in
# standalone mode and look at it the way kubectl would.
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

"$bin/berth-testimage" busybox --push "127.0.0.1:$port/busybox:1.36"

# The example manifest names demo.berth.local; the config sends that
# registry to the local one.
cat > "$work/config.toml" <<TOML
root = "$work/state"
run_root = "$work/state/run"
cgroup_parent = "/berth-demo-$$"

[cni]                      # no config in conf_dir: Berth's default bridge network
conf_dir = "$work/net.d"
bridge = "berthdemo$$"
pod_cidr = "10.234.0.0/24"

[registry."demo.berth.local"]
endpoint = "http://127.0.0.1:$port"
TOML
berth() { "$bin/berth" --config "$work/config.toml" "$@"; }
# The bridge plugin turns on IP forwarding; the demo puts it back as it was.
forward=$(cat /proc/sys/net/ipv4/ip_forward)
cleanup_all() {
  berth stop >/dev/null 2>&1 || true
  for d in /sys/fs/cgroup/*/"berth-demo-$$"; do if [ -d "$d" ]; then rmdir "$d" || true; fi; done
  ip link del "berthdemo$$" 2>/dev/null || true
  echo "$forward" > /proc/sys/net/ipv4/ip_forward
  cleanup
}
trap cleanup_all EXIT

echo "--- berth run --detach examples/web.yaml"
# Evict on memory pressure only: a workstation's disk may be fuller than
# kubelet's default nodefs/imagefs thresholds (10%/15% free) allow.
berth run --detach --eviction-hard 'memory.available<100Mi' examples/web.yaml
ready() {
  berth get pods web -o json 2>/dev/null | python3 -c 'import json,sys; p=json.load(sys.stdin); sys.exit(0 if any(c["type"]=="Ready" and c["status"]=="True" for c in p["status"].get("conditions", [])) else 1)' 2>/dev/null
}
for _ in $(seq 120); do ready && break; sleep 0.5; done
echo "--- berth get pods -o wide"
berth get pods -o wide
echo "--- berth exec web -- wget -qO- http://127.0.0.1:8080/"
berth exec web -- wget -qO- http://127.0.0.1:8080/
echo
echo "--- berth logs web"
berth logs web
echo "--- berth describe pod web"
berth describe pod web
echo "--- berth delete pod web"
berth delete pod web
berth stop
