#!/usr/bin/env bash
# Prints hack/containerd.toml.in with each @KEY@ replaced by VALUE:
#   hack/containerd-config.sh ROOT=/x STATE=/y ... >config.toml
# Fails on a key the template lacks or a placeholder left without a value.
set -euo pipefail
text=$(<"$(dirname "$0")/containerd.toml.in")
for kv in "$@"; do
  [[ $kv == *=* ]] || { echo "containerd-config: want KEY=VALUE, got $kv" >&2; exit 1; }
  key=${kv%%=*}
  [[ $text == *"@$key@"* ]] || { echo "containerd-config: no @$key@ in the template" >&2; exit 1; }
  text=${text//"@$key@"/"${kv#*=}"}
done
if [[ $text =~ @[A-Z_]+@ ]]; then
  echo "containerd-config: no value for ${BASH_REMATCH[0]}" >&2
  exit 1
fi
printf '%s\n' "$text"
