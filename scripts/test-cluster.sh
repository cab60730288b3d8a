#!/usr/bin/env bash
# The real-cluster tests alone: builds (or reuses) kube-apiserver, etcd, kubectl and istiod
# from their Go modules, then runs tests/tests/cluster_*.rs — `modelsplit run` installed from
# controller/deploy/ as its ServiceAccount, a gateway configured by istiod, traffic through it.
#   scripts/test-cluster.sh                 # all cluster tests
#   scripts/test-cluster.sh cluster_gateway # one test file (extra args go to cargo test)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

MODELSPLIT_CONTROL_PLANE="$(tests/control-plane/build.sh)"
export MODELSPLIT_CONTROL_PLANE
[ -s target/wasm32-unknown-unknown/release/modelsplit_filter.wasm ] || scripts/build-wasm.sh
cargo build --quiet -p modelsplit-controller --bin modelsplit
export MODELSPLIT_BIN="$PWD/target/debug/modelsplit"

if [ "$#" -gt 0 ] && [[ "$1" != -* ]]; then
  file="$1"; shift
  step "cluster tests: $file"
  cargo test -p modelsplit-e2e --test "$file" -- "$@"
else
  for file in tests/tests/cluster_*.rs; do
    name="$(basename "$file" .rs)"
    step "cluster tests: $name"
    cargo test -p modelsplit-e2e --test "$name" -- "$@"
  done
fi
