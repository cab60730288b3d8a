#!/usr/bin/env bash
# Builds the real control plane the cluster tests run against — kube-apiserver, etcd, istiod and
# kubectl — from their published Go modules, at pinned versions, into a cache outside the work tree.
# A second run with the same versions costs nothing. Prints the bin directory on stdout.
#
#   tests/control-plane/build.sh            # -> ~/.cache/modelsplit/control-plane/<stamp>/bin
#
# Versions (also stated in docs/testing.md):
#   Kubernetes v1.34.4 (kube-apiserver, kubectl), etcd v3.6.16, istiod from istio.io/istio at
#   v0.0.0-20260827124520-eed52ebb66ad (the Istio 1.31 development line).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

KUBE_VERSION=v1.34.4
KUBE_STAGING_VERSION=v0.34.4
ETCD_VERSION=v3.6.16
ISTIO_VERSION=v0.0.0-20260827124520-eed52ebb66ad

stamp="k8s-${KUBE_VERSION}_etcd-${ETCD_VERSION}_istio-${ISTIO_VERSION##*-}"
cache="${MODELSPLIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelsplit}/control-plane/$stamp"
bin="$cache/bin"
mkdir -p "$bin"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Go: the newest `go` line of these modules is 1.26 (istio.io/istio). A Go of 1.21 or later that
# is older than that fetches the go1.26.0 toolchain itself (GOTOOLCHAIN; the toolchain is a module
# on the Go module proxy). `go` on PATH first, else the newest Debian golang-1.2x package
# (scripts/setup.sh installs one from bookworm-backports on Debian 12, whose golang-go is 1.19).
GO_TOOLCHAIN=go1.26.0
go_minor() { "$1" env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p'; }
go_ready=false
need_go() { # finds (or has go fetch) a Go new enough; only when something is built
  $go_ready && return
  go_bin=""; go_best=0
  for g in "$(command -v go || true)" /usr/lib/go-1.*/bin/go; do
    [ -x "$g" ] || continue
    m="$(go_minor "$g")"
    if [ -n "$m" ] && [ "$m" -gt "$go_best" ]; then go_bin="$g"; go_best="$m"; fi
  done
  if [ -z "$go_bin" ] || [ "$go_best" -lt 21 ]; then
    echo "control-plane build: needs Go 1.21 or later (it then fetches $GO_TOOLCHAIN itself); found $( [ -n "$go_bin" ] && "$go_bin" env GOVERSION || echo 'no go'). Run scripts/setup.sh, or install a newer Go, and run again." >&2
    exit 1
  fi
  export PATH="$(dirname "$go_bin"):$PATH"
  if [ "$go_best" -lt 26 ] && [ -z "${GOTOOLCHAIN:-}" ]; then
    export GOTOOLCHAIN="$GO_TOOLCHAIN"
    log "Go 1.$go_best found ($go_bin): building with $GO_TOOLCHAIN (fetched by go once)"
  fi
  go_ready=true
}
export GOFLAGS="${GOFLAGS:-} -buildvcs=false" CGO_ENABLED=0

# wrapper NAME MODULE-REQUIREMENTS... : a fresh module dir with main.go from tests/control-plane/NAME
wrapper() {
  local name="$1" dir="$cache/src/$1"
  rm -rf "$dir"; mkdir -p "$dir"
  cp -r "$here/$name/." "$dir/"
  printf 'module modelsplit.test/%s\n\ngo 1.24\n' "$name" >"$dir/go.mod"
  echo "$dir"
}

build_kube() {
  [ -x "$bin/kube-apiserver" ] && [ -x "$bin/kubectl" ] && return
  need_go
  log "building kube-apiserver and kubectl $KUBE_VERSION from Go modules (cold: ~10 CPU-minutes)"
  local dir; dir="$(wrapper kube)"
  (
    cd "$dir"
    # k8s.io/kubernetes points its staging modules at ./staging; use their published tags instead.
    go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" >/dev/null
    local modfile; modfile="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$KUBE_VERSION.mod"
    go mod edit -require="k8s.io/kubernetes@$KUBE_VERSION"
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$modfile" | while read -r m; do
      go mod edit -replace="$m=$m@$KUBE_STAGING_VERSION"
    done
    go mod tidy >/dev/null 2>&1 || go mod tidy
    local ld="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION"
    ld="$ld -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34"
    ld="$ld -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"
    go build -ldflags "$ld" -o "$bin/kube-apiserver.tmp" ./apiserver && mv "$bin/kube-apiserver.tmp" "$bin/kube-apiserver"
    go build -ldflags "$ld" -o "$bin/kubectl.tmp" ./kubectl && mv "$bin/kubectl.tmp" "$bin/kubectl"
  )
}

build_etcd() {
  [ -x "$bin/etcd" ] && return
  need_go
  log "building etcd $ETCD_VERSION from Go modules"
  local dir; dir="$(wrapper etcd)"
  (
    cd "$dir"
    go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    go mod tidy >/dev/null 2>&1 || go mod tidy
    go build -ldflags "-s -w" -o "$bin/etcd.tmp" . && mv "$bin/etcd.tmp" "$bin/etcd"
  )
}

build_istiod() {
  [ -x "$bin/istiod" ] && [ -f "$cache/crd-all.gen.yaml" ] && return
  need_go
  log "building istiod (istio.io/istio $ISTIO_VERSION) from Go modules (cold: ~9 CPU-minutes)"
  local dir; dir="$(wrapper istiod)"
  (
    cd "$dir"
    go mod edit -require="istio.io/istio@$ISTIO_VERSION"
    go mod tidy >/dev/null 2>&1 || go mod tidy
    go build -ldflags "-s -w" -o "$bin/istiod.tmp" . && mv "$bin/istiod.tmp" "$bin/istiod"
    # Istio's CRDs come from the same module, read at test time, never committed.
    local src; src="$(go list -m -f '{{.Dir}}' istio.io/istio)"
    cp "$src/manifests/charts/base/files/crd-all.gen.yaml" "$cache/crd-all.gen.yaml.tmp"
    mv "$cache/crd-all.gen.yaml.tmp" "$cache/crd-all.gen.yaml"
  )
}

case "${1:-all}" in
  all) build_etcd; build_kube; build_istiod ;;
  etcd) build_etcd ;; kube) build_kube ;; istiod) build_istiod ;;
  *) echo "usage: $0 [all|etcd|kube|istiod]" >&2; exit 2 ;;
esac
echo "$bin"
