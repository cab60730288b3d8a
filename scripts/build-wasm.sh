#!/usr/bin/env bash
# Builds the Envoy filter: target/wasm32-unknown-unknown/release/modelsplit_filter.wasm
#
# Where rustup has the wasm32-unknown-unknown target, this is an ordinary cargo build.
# Otherwise (rustup cannot add targets on these machines) the wasm32 standard library is
# built from source with Debian's Rust (docs/design.md section 7); the Debian packages are
# installed first if missing. Idempotent: a second run only re-checks and re-links.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

target=wasm32-unknown-unknown
# The artifact path is a contract (docs/design.md section 6): always the workspace's target/.
export CARGO_TARGET_DIR="$PWD/target"
artifact="$CARGO_TARGET_DIR/$target/release/modelsplit_filter.wasm"

if rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  step "building the filter with rustup's $target target"
  cargo build --quiet --release --target "$target" -p modelsplit-filter
else
  debian_packages=(rustc-web cargo-web rust-web-src rust-web-llvm lld-22)
  missing=()
  for p in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    step "installing Debian packages for the wasm32 build-std route: ${missing[*]}"
    sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
  fi

  # rustup's proxies come first on PATH: pin Debian's compiler, which ships the std sources.
  export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
  # rustc links wasm with its bundled `rust-lld`; fall back to Debian's lld-22 if absent.
  if ! command -v rust-lld >/dev/null 2>&1 && [ ! -x "$($RUSTC --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld" ]; then
    export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=/usr/bin/wasm-ld-22
  fi
  step "building the filter with Debian's Rust ($($RUSTC --version | cut -d' ' -f2)), std from source"
  RUSTC_BOOTSTRAP=1 /usr/bin/cargo build --quiet --release --target "$target" \
    -Zbuild-std=std,panic_abort -p modelsplit-filter
fi

[ -s "$artifact" ] || { echo "build-wasm: $artifact was not produced" >&2; exit 1; }
size=$(stat -c %s "$artifact")
step "built ${artifact#"$PWD"/} ($size bytes, $((size / 1024)) KiB)"
