#!/usr/bin/env bash
# Runs the filter core's unit tests compiled to wasm32 under Node (wasm-bindgen-test):
# the same test bodies as `cargo test -p modelsplit-filter`, on the target Envoy runs.
# The proxy-wasm glue (filter/src/host.rs) is left out of test builds, so Node needs no
# proxy_* imports. Installs wasm-bindgen-cli (the version in Cargo.lock) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

target=wasm32-unknown-unknown
# Own target dir: leaves the release artifact in target/ untouched.
export CARGO_TARGET_DIR="$PWD/target/wasm-test"

# Node 20 or later (scripts/find-node.sh says why), first on PATH for the test runner.
node_bin="$(scripts/find-node.sh)"
export PATH="$(dirname "$node_bin"):$PATH"

# The runner must match the wasm-bindgen crate exactly.
version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)
[ -n "$version" ] || { echo "test-wasm-core: no wasm-bindgen in Cargo.lock" >&2; exit 1; }
installed=$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $2}' || true)
if [ "$installed" != "$version" ]; then
  step "installing wasm-bindgen-cli $version (a few minutes, once)"
  # Not --locked: its lock may name crates newer than the registry mirror has.
  cargo install --quiet wasm-bindgen-cli --version "=$version"
fi
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
# The 100k-key rendezvous tests are slow unoptimised; a light optimisation keeps them quick.
export CARGO_PROFILE_DEV_OPT_LEVEL=1

if rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  step "filter core tests on $target (rustup target) under Node"
  cargo test --target "$target" -p modelsplit-filter --lib
else
  step "filter core tests on $target (Debian Rust, std from source) under Node"
  [ -d /usr/lib/rustlib/src/rust/library ] || {
    echo "test-wasm-core: Debian's Rust sources are missing; run scripts/build-wasm.sh first" >&2
    exit 1
  }
  export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
  RUSTC_BOOTSTRAP=1 /usr/bin/cargo test --target "$target" -Zbuild-std=std,panic_abort \
    -p modelsplit-filter --lib
fi
