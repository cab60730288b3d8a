#!/usr/bin/env bash
# Starts a Docker engine for the compose test when none answers: `dockerd --iptables=false`
# in the background (no iptables rules: the test only needs the host to reach published
# ports and containers to reach each other on their bridge). Its log: ~/.cache/modelsplit/dockerd.log.
# Never fails the caller: if no engine can start, tests/tests/docker_compose.rs fails and says why.
set -uo pipefail
if docker info >/dev/null 2>&1; then
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "start-docker: no dockerd (scripts/setup.sh installs Debian's docker.io)" >&2
  exit 0
fi
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
log="${XDG_CACHE_HOME:-$HOME/.cache}/modelsplit/dockerd.log"
mkdir -p "$(dirname "$log")"
# A stale pid file from an engine that died would stop a new one from starting.
[ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null && $sudo_cmd rm -f /var/run/docker.pid
$sudo_cmd sh -c "nohup dockerd --iptables=false >'$log' 2>&1 &"
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 0.5
done
echo "start-docker: dockerd did not answer within 30 s; last lines of $log:" >&2
tail -n 20 "$log" >&2
exit 0
