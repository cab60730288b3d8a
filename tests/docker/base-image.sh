#!/usr/bin/env bash
# A local Debian 12 base image for the compose test, since no registry can be reached:
# `debootstrap --variant=minbase bookworm` (about 30 s, cached as a tarball under
# ~/.cache/modelsplit/docker), imported as the image named by $1.
#   tests/docker/base-image.sh modelsplit-test-base:bookworm
set -euo pipefail
image="${1:?usage: $0 IMAGE}"
if docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi
cache="${XDG_CACHE_HOME:-$HOME/.cache}/modelsplit/docker"
tarball="$cache/debian-bookworm-minbase.tar"
if [ ! -s "$tarball" ]; then
  command -v debootstrap >/dev/null || {
    echo "debootstrap is missing (apt-get install debootstrap; scripts/setup.sh installs it)" >&2
    exit 1
  }
  mkdir -p "$cache"
  root="$(mktemp -d)"
  trap 'rm -rf "$root"' EXIT
  echo "debootstrap --variant=minbase bookworm (once; cached in $tarball)" >&2
  if ! debootstrap --variant=minbase bookworm "$root" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" \
      >"$cache/debootstrap.log" 2>&1; then
    tail -20 "$cache/debootstrap.log" >&2
    exit 1
  fi
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -cf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
fi
docker import "$tarball" "$image" >/dev/null
