#!/usr/bin/env bash
# The fresh-OS proof, on demand (far too long for every CI run): builds a clean Debian 12 root
# file system (`debootstrap --variant=minbase bookworm`), copies a fresh `git clone` of this
# repository into it, and runs the README's two set-up commands inside it with chroot —
# `scripts/demo.sh`, then `scripts/test.sh` — as root, with nothing installed beforehand but
# what the README asks a user to bring: Rust (from rustup).
#
#   scripts/fresh-os.sh                       # Debian 12: demo, then all tests
#   scripts/fresh-os.sh --only demo           # only scripts/demo.sh (or: --only test)
#   scripts/fresh-os.sh --only setup          # only scripts/setup.sh and what it installed
#   scripts/fresh-os.sh --ubuntu              # Ubuntu 24.04 (noble) instead (see below)
#
# Options:
#   --dir DIR              where the root file system goes (default /var/tmp/modelsplit-fresh-os/<os>);
#                          it is made anew on every run
#   --keep                 leave the root file system (and its logs) in place afterwards
#   --rust auto|rustup|debian
#                          how the "bring Rust" step is done: rustup (its installer from
#                          static.rust-lang.org, the README's way), Debian's rustc-web/cargo-web
#                          (for machines that cannot reach that host), or auto (default: rustup
#                          when its host answers, else Debian's)
#   --reuse-control-plane  copy this machine's built control plane (tests/control-plane/build.sh's
#                          cache) in, instead of building it again inside (about 17 CPU-minutes)
#   --commit REV           the commit to clone (default: HEAD; uncommitted changes are not copied)
#   --resume               go on in the root file system an earlier run left (after a failure,
#                          or with --keep): skips building it, Rust and the clone, and runs the
#                          commands asked for (e.g. --resume --only test after a run that passed
#                          the demo and then stopped)
#
# Needs: root (debootstrap, mount, chroot), debootstrap (installed with apt-get if missing), and
# the network the suite needs anyway (this machine's resolv.conf, extra CA certificates and
# CA-bundle variables are carried in, as the network's settings): the distribution's archive, PyPI, crates.io, the Go module
# proxy (and for --rust rustup, static.rust-lang.org). Runs everything under `nice -n 19`.
# Ubuntu: Debian 12's debootstrap has no noble script and Debian ships no Ubuntu archive
# keyring, so --ubuntu uses debootstrap's generic Ubuntu script without signature checks
# (--no-check-gpg); the packages inside are then installed by apt with Ubuntu's own keyring.
#
# Prints one line per step, and at the end PASS or the step that failed; every step's output
# is in <dir>/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

os=debian only="" keep=false rust=auto reuse_cp=false commit=HEAD dir="" resume=false
while [ "$#" -gt 0 ]; do
  case "$1" in
    --ubuntu) os=ubuntu ;;
    --debian) os=debian ;;
    --only) only="$2"; shift ;;
    --dir) dir="$2"; shift ;;
    --keep) keep=true ;;
    --rust) rust="$2"; shift ;;
    --reuse-control-plane) reuse_cp=true ;;
    --commit) commit="$2"; shift ;;
    --resume) resume=true ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fresh-os: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$only" in ""|demo|test|setup) ;; *) echo "fresh-os: --only demo, test or setup" >&2; exit 2 ;; esac
case "$rust" in auto|rustup|debian) ;; *) echo "fresh-os: --rust auto, rustup or debian" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "fresh-os: needs root (debootstrap, mount, chroot)" >&2; exit 1; }
dir="${dir:-/var/tmp/modelsplit-fresh-os/$os}"
root="$dir/root"
logs="$dir/logs"

step() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
started=$SECONDS
current="preparing"
result_line() { printf '%s\n' "$*" | tee -a "$logs/summary.txt" >&2; }

# Unmounts everything under the root file system; ends processes still running in it (ours).
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -d "$root" ]; then
    for p in /proc/[0-9]*; do
      if [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ]; then
        kill -KILL "${p#/proc/}" 2>/dev/null || true
      fi
    done
    sleep 0.5
    for m in dev/pts dev sys proc; do
      mountpoint -q "$root/$m" 2>/dev/null && umount -R -l "$root/$m" 2>/dev/null || true
    done
  fi
  if [ "$status" -ne 0 ]; then
    result_line "FAIL at: $current (exit $status) after $((SECONDS - started)) s; logs in $logs/"
  fi
  if ! $keep && [ "$status" -eq 0 ] && [ -d "$root" ]; then
    rm -rf "$root"
  fi
  exit "$status"
}

# run_logged NAME COMMAND...: runs, output to $logs/NAME.log, times it, one summary line.
run_logged() {
  local name=$1; shift
  current="$name"
  local t0=$SECONDS
  step "$name (log: $logs/$name.log)"
  if "$@" >"$logs/$name.log" 2>&1; then
    result_line "ok   $name ($((SECONDS - t0)) s)"
  else
    local status=$?
    tail -n 40 "$logs/$name.log" >&2
    return "$status"
  fi
}

# This machine's network, as its own settings: variables that name the CA bundle (a
# TLS-inspecting proxy's CA is in it) pass through; they name /etc/ssl/certs/... paths, which
# inside are the root file system's own bundle (with the CAs copied below).
net_env=()
for v in SSL_CERT_FILE SSL_CERT_DIR PIP_CERT REQUESTS_CA_BUNDLE CURL_CA_BUNDLE NODE_EXTRA_CA_CERTS GIT_SSL_CAINFO; do
  [ -n "${!v:-}" ] && net_env+=("$v=${!v}")
done

# in_root COMMAND: a login-like shell in the root file system, with a clean environment.
in_root() {
  chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 USER=root \
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CARGO_INCREMENTAL=0 ${CARGO_BUILD_JOBS:+CARGO_BUILD_JOBS=$CARGO_BUILD_JOBS} "${net_env[@]}" \
    nice -n 19 bash -c "$1"
}

commit="$(git rev-parse --verify "$commit^{commit}")"
if ! git diff --quiet HEAD -- 2>/dev/null; then
  step "note: uncommitted changes are not part of the test (it clones $commit)"
fi

if [ -e "$dir" ]; then
  for m in dev/pts dev sys proc; do
    mountpoint -q "$root/$m" 2>/dev/null && umount -R -l "$root/$m" 2>/dev/null || true
  done
  $resume || rm -rf "$dir"
fi
if $resume; then
  [ -d "$root/root/modelsplit/.git" ] || { echo "fresh-os: --resume: no earlier root file system in $root" >&2; exit 1; }
  commit="$(git -C "$root/root/modelsplit" rev-parse HEAD)"
else
  mkdir -p "$root" "$logs"
  : >"$logs/summary.txt"
fi
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
result_line "fresh-os: $os, commit $commit, $(date -u '+%Y-%m-%d %H:%M UTC')"

if $resume; then
  result_line "resumed in the root file system of an earlier run ($root, commit $commit)"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  mount -t proc proc "$root/proc"
  mount --rbind /sys "$root/sys" && mount --make-rslave "$root/sys"
  mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev"
else
if ! command -v debootstrap >/dev/null; then
  run_logged install-debootstrap bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap'
fi

if [ "$os" = debian ]; then
  run_logged debootstrap nice -n 19 debootstrap --variant=minbase bookworm "$root"
  # What a stock Debian 12 installation has: the release, its updates and security archives.
  cat >"$root/etc/apt/sources.list" <<'EOF'
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF
else
  run_logged debootstrap nice -n 19 debootstrap --variant=minbase --no-check-gpg \
    --components=main,universe noble "$root" http://archive.ubuntu.com/ubuntu gutsy
  # What a stock Ubuntu 24.04 installation has: main and universe, with updates and security.
  cat >"$root/etc/apt/sources.list" <<'EOF'
deb http://archive.ubuntu.com/ubuntu noble main universe
deb http://archive.ubuntu.com/ubuntu noble-updates main universe
deb http://security.ubuntu.com/ubuntu noble-security main universe
EOF
fi
cp /etc/resolv.conf "$root/etc/resolv.conf"
# CA certificates this machine trusts beyond the distribution's (here: the network's
# TLS-inspecting proxy): ca-certificates, when installed inside, adds them to the bundle.
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  result_line "note: copied this machine's extra CA certificates (/usr/local/share/ca-certificates) in"
fi
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys" && mount --make-rslave "$root/sys"
mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev"

# The user's part before the README: Rust (rustup, or Debian's), and the clone.
if [ "$rust" = auto ]; then
  if curl -sfI --max-time 15 https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init >/dev/null; then
    rust=rustup
  else
    step "static.rust-lang.org does not answer from here: Rust from Debian's rustc-web/cargo-web instead of rustup"
    rust=debian
  fi
fi
result_line "Rust from: $rust"
if [ "$rust" = rustup ]; then
  # rustup's installer needs a TLS client; the README's reader has one (a stock system has
  # ca-certificates; curl is what rustup's instructions use).
  run_logged rust-prerequisites in_root 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates curl'
  run_logged rustup in_root 'curl -sSf -o /tmp/rustup-init https://static.rust-lang.org/rustup/dist/x86_64-unknown-linux-gnu/rustup-init && chmod +x /tmp/rustup-init && /tmp/rustup-init -y -q --profile minimal -c rustfmt,clippy && rm /tmp/rustup-init && . /root/.cargo/env && rustc --version && cargo --version'
else
  # Debian's Rust: its rustfmt and clippy too (the tests run them). The fuzz step needs
  # rustup's sanitizer runtimes, which Debian's rustc does not ship: expect it to fail there.
  run_logged rust-debian in_root 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates rustc-web cargo-web rustfmt-web rust-web-clippy && rustc --version && cargo --version'
fi

current="clone"
git clone --quiet --no-checkout "$repo" "$root/root/modelsplit"
git -C "$root/root/modelsplit" checkout --quiet "$commit"
result_line "ok   clone ($commit)"

if $reuse_cp; then
  current="reuse-control-plane"
  bin="$(tests/control-plane/build.sh)"   # the cached build (no Go work when it is there)
  stamp_dir="$(dirname "$bin")"
  mkdir -p "$root/root/.cache/modelsplit/control-plane"
  cp -a "$stamp_dir" "$root/root/.cache/modelsplit/control-plane/"
  rm -rf "$root/root/.cache/modelsplit/control-plane/$(basename "$stamp_dir")/src"
  result_line "ok   control plane copied from this machine's cache (not built inside)"
fi

fi # not resumed

if [ "$only" = setup ]; then
  run_logged setup in_root 'cd /root/modelsplit && scripts/setup.sh && envoy="$(scripts/find-envoy.sh)" && "$envoy" --version && "$(scripts/find-node.sh)" --version && cc --version | head -n 1 && protoc --version && for g in $(command -v go) /usr/lib/go-1.*/bin/go; do [ -x "$g" ] && "$g" version; done; (rustup target list --installed; command -v rustc; /usr/bin/rustc --version) 2>/dev/null || true'
  current="done"
  result_line "PASS: scripts/setup.sh ran green in a fresh $os root file system ($((SECONDS - started)) s)"
  exit 0
fi

# The README's two commands.
if [ "$only" != test ]; then
  run_logged readme-demo in_root 'cd /root/modelsplit && scripts/demo.sh'
fi
if [ "$only" != demo ]; then
  run_logged readme-test in_root 'cd /root/modelsplit && scripts/test.sh'
fi
current="done"
result_line "PASS: the README's set-up commands ran green in a fresh $os root file system ($((SECONDS - started)) s)"
