#!/usr/bin/env bash
# Coverage-guided fuzzing of the filter core (cargo fuzz / libFuzzer with AddressSanitizer).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Runs each target (default: config classify route) for SECONDS (default 20) with a
# memory cap and an input size cap. New inputs go to a scratch corpus (FUZZ_WORK, default
# a temporary directory), seeded from the small corpus kept in fuzz/corpus/<target>, so the
# tree stays clean. A crash, leak, out-of-memory, timeout or broken invariant fails the
# script and leaves the input in fuzz/artifacts/<target>/; reproduce it in fuzz/ with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run -O <target> <artifact>`.
#
# The long run documented in SECURITY.md: FUZZ_WORK=/var/tmp/modelsplit-fuzz scripts/fuzz.sh 3600
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

seconds=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config classify route grpc_frame)

step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if ! cargo fuzz --version >/dev/null 2>&1; then
  step "installing cargo-fuzz (once, about 2 minutes)"
  cargo install --quiet --locked cargo-fuzz
fi
# cargo fuzz passes -Zsanitizer and other unstable flags: fine on nightly, and on
# stable with RUSTC_BOOTSTRAP=1 (rustup's stable ships the sanitizer runtimes).
if ! rustc --version | grep -q nightly; then
  export RUSTC_BOOTSTRAP=1
fi

work=${FUZZ_WORK:-}
if [ -z "$work" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi

step "building the fuzz targets"
cargo fuzz build -O

for target in "${targets[@]}"; do
  case $target in
    config) dict=dict/config.dict ;;
    grpc_frame) dict=dict/grpc_frame.dict ;;
    *) dict=dict/request.dict ;;
  esac
  # A target may have no seeds in the repo yet; libFuzzer refuses a missing corpus directory.
  mkdir -p "$work/$target" "corpus/$target"
  step "fuzzing $target for ${seconds}s"
  # -rss_limit_mb: no unbounded allocation; -max_len: inputs up to 8 KiB (headers and
  # configs beyond that only repeat structure); -timeout: no input may take a second.
  log="$work/$target.log"
  if ! cargo fuzz run -O "$target" "$work/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=1024 -max_len=8192 -timeout=1 \
    -dict="$dict" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" >&2 || true
done
step "fuzzing passed: ${targets[*]}, ${seconds}s each"
