#!/usr/bin/env bash
# Builds the comparison filters (bench/wasm/empty, bare, bare-header) exactly the way
# scripts/build-wasm.sh builds modelsplit: rustup's wasm32 target where installed, else
# Debian's Rust with -Zbuild-std (docs/design.md section 7). Prints the .wasm paths, in that order.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
target=wasm32-unknown-unknown
export CARGO_TARGET_DIR="${BENCH_WASM_TARGET_DIR:-/tmp/t-bench-wasm}"

for crate in empty bare bare-header; do
  manifest="$here/wasm/$crate/Cargo.toml"
  if rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    cargo build --quiet --release --target "$target" --manifest-path "$manifest"
  else
    # scripts/build-wasm.sh installs the Debian packages this needs; run it first.
    export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
    if ! command -v rust-lld >/dev/null 2>&1 && [ ! -x "$($RUSTC --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld" ]; then
      export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=/usr/bin/wasm-ld-22
    fi
    RUSTC_BOOTSTRAP=1 /usr/bin/cargo build --quiet --release --target "$target" \
      -Zbuild-std=std,panic_abort --manifest-path "$manifest"
  fi
  artifact="$CARGO_TARGET_DIR/$target/release/bench_${crate//-/_}_filter.wasm"
  [ -s "$artifact" ] || { echo "build-comparison-filters: $artifact was not produced" >&2; exit 1; }
  echo "$artifact"
done
