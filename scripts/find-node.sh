#!/usr/bin/env bash
# Prints a Node.js of version 20 or later for the filter core's wasm32 tests
# (scripts/test-wasm-core.sh), or exits 1 saying how to get one.
#
#   scripts/find-node.sh             # -> /path/to/node (20 or later)
#   scripts/find-node.sh --install   # the same, fetching the pinned Node first when none is found
#
# Why 20: the V8 of Node 18 — what Debian 12 and Ubuntu 24.04 ship — aborts on the test
# harness wasm-bindgen 0.2.130 generates (a V8 fatal error in the first test; Node 20 and 22
# run it). Looked for, first found wins: $NODE_BIN; `node` on PATH; the pinned Node that
# --install puts under ${MODELSPLIT_CACHE:-~/.cache/modelsplit}/node-v$VERSION.
# --install fetches the official Linux build as npm's `node-linux-<arch>` package from the npm
# registry (registry.npmjs.org, reachable where nodejs.org is not) and checks its sha512.
set -euo pipefail

VERSION=22.20.0
declare -A INTEGRITY=(
  [x64]="CWyKqAkT1fUBr1IDD/JhDAYpUrBraNmSM9ndREbhAp14QmgBqq8CmgWHITSK1YXzJj+hWTEC1+F6gOgVFLIaSg=="
  [arm64]="eVexvODYds5ya11f+1D0r33WVf6BGvoSvofyVYQFMFMytblCCwlgJStpOb4IdomSnfVQWLAt0tNgYE5iXxSRuA=="
)
cache="${MODELSPLIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelsplit}/node-v$VERSION"

major() { "$1" --version 2>/dev/null | sed -n 's/^v\([0-9]*\)\..*/\1/p'; }
usable() { local m; m="$(major "$1")"; [ -n "$m" ] && [ "$m" -ge 20 ]; }

if [ -n "${NODE_BIN:-}" ]; then
  usable "$NODE_BIN" || { echo "find-node: NODE_BIN=$NODE_BIN is not Node 20 or later" >&2; exit 1; }
  echo "$NODE_BIN"
  exit 0
fi
on_path="$(command -v node || true)"
if [ -n "$on_path" ] && usable "$on_path"; then
  echo "$on_path"
  exit 0
fi
if [ -x "$cache/bin/node" ] && usable "$cache/bin/node"; then
  echo "$cache/bin/node"
  exit 0
fi
if [ "${1:-}" != --install ]; then
  echo "find-node: no Node.js 20 or later (found: ${on_path:-none}${on_path:+ $("$on_path" --version 2>/dev/null)}): run scripts/setup.sh (fetches Node $VERSION into $cache), or set NODE_BIN" >&2
  exit 1
fi

case "$(uname -m)" in
  x86_64) arch=x64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) echo "find-node: no pinned Node build for $(uname -m); install Node.js 20 or later and put it on PATH" >&2; exit 1 ;;
esac
url="https://registry.npmjs.org/node-linux-$arch/-/node-linux-$arch-$VERSION.tgz"
printf '\033[1m==> %s\033[0m\n' "fetching Node $VERSION ($url) into $cache" >&2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
curl -fsSL --retry 3 -o "$tmp/node.tgz" "$url"
got="$(openssl dgst -sha512 -binary "$tmp/node.tgz" | base64 -w0)"
if [ "$got" != "${INTEGRITY[$arch]}" ]; then
  echo "find-node: $url has sha512 $got, expected ${INTEGRITY[$arch]}; not installed" >&2
  exit 1
fi
mkdir -p "$tmp/node"
tar xzf "$tmp/node.tgz" -C "$tmp/node" --strip-components=1
mkdir -p "$(dirname "$cache")"
rm -rf "$cache"
mv "$tmp/node" "$cache"
usable "$cache/bin/node" || { echo "find-node: $cache/bin/node does not run" >&2; exit 1; }
echo "$cache/bin/node"
