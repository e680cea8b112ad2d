#!/usr/bin/env bash
# Crash consistency (RELIABILITY.md): runs the load tester against provisiond and kills the server
# with SIGKILL at a random moment of every cycle, rotating HTTP, MQTT, CoAP, a mix, and a
# pre-provisioned fleet of 2M devices whose bulk import is in progress; restarts it on the same data directory;
# at the end `loadtest verify` checks that every credential any client was told is stored and
# unchanged, and that no credentials id belongs to two devices.
#   loadtest/crash-consistency.sh [CYCLES] [WORK_DIR]     (default 20 cycles, a temporary dir)
# Needs `cargo build --release --workspace` first (target/release/{provisiond,loadtest}).
set -euo pipefail
cd "$(dirname "$0")/.."
cycles=${1:-20}
work=${2:-$(mktemp -d -t provisiond-crash.XXXXXX)}
bin=${CARGO_TARGET_DIR:-target}/release
token=crash-admin-token-0123456789abcdef
http_port=${CRASH_HTTP_PORT:-38080} mqtt_port=${CRASH_MQTT_PORT:-31883} coap_port=${CRASH_COAP_PORT:-35683}
data=$work/data
for b in provisiond loadtest; do
  [ -x "$bin/$b" ] || { echo "crash: $bin/$b not found; run cargo build --release --workspace" >&2; exit 2; }
done
mkdir -p "$work"
echo "crash: $cycles cycles, work dir $work"

server_pid=
start_server() {
  PROVISIOND_ADMIN_TOKEN=$token "$bin/provisiond" serve --data-dir "$data" --bind 127.0.0.1 \
    --http-port "$http_port" --mqtt-port "$mqtt_port" --coap-port "$coap_port" \
    >>"$work/server.out" 2>>"$work/server.err" &
  server_pid=$!
  for _ in $(seq 1 200); do
    if curl -fs "http://127.0.0.1:$http_port/readyz" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$server_pid" 2>/dev/null; then echo "crash: the server did not start" >&2; exit 1; fi
    sleep 0.05
  done
  echo "crash: the server is not ready after 10 s" >&2
  exit 1
}
trap '[ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null || true' EXIT

# CRASH_SHAPES="import" (space-separated) runs only some of the shapes.
read -r -a shapes <<<"${CRASH_SHAPES:-http mqtt coap http,mqtt5,coap import}"
kills=0
for cycle in $(seq 1 "$cycles"); do
  start_server
  shape=${shapes[$(( (cycle - 1) % ${#shapes[@]} ))]}
  args=(run --server "http://127.0.0.1:$http_port" --mqtt "127.0.0.1:$mqtt_port"
        --coap "127.0.0.1:$coap_port" --admin-token "$token" --prefix "crash$cycle"
        --no-verify --quiet --told "$work/told-$cycle.jsonl" --json "$work/report-$cycle.json"
        --concurrency 32 --duration 8 --replay 0.05)
  case $shape in
    # A fleet of 2M devices is imported first (about 7 s here); the kill lands during the
    # import, or in the provisioning right after it.
    import) args+=(--scenario preprovisioned --devices 2000000 --transport http,mqtt,coap) ;;
    *) args+=(--devices 1000000 --transport "$shape" --credentials token:3,supplied,basic) ;;
  esac
  "$bin/loadtest" "${args[@]}" >"$work/loadtest-$cycle.out" 2>&1 &
  load_pid=$!
  # A random moment between 0.5 s and 5.5 s into the run.
  sleep "$(awk -v s="$RANDOM" 'BEGIN { srand(s); printf "%.2f", 0.5 + rand() * 5 }')"
  if [ "$shape" = import ] && grep -q '^imported' "$work/loadtest-$cycle.out"; then
    echo "crash: cycle $cycle: the import had already finished"
  fi
  kill -9 "$server_pid"
  wait "$server_pid" 2>/dev/null || true
  server_pid=
  kills=$((kills + 1))
  wait "$load_pid" || true
  told=0
  if [ -f "$work/told-$cycle.jsonl" ]; then told=$(wc -l <"$work/told-$cycle.jsonl"); fi
  echo "crash: cycle $cycle ($shape): SIGKILL; $told devices had been told credentials"
done

start_server
echo "crash: $kills SIGKILLs; verifying every told credential against the restarted server"
shopt -s nullglob
told_files=("$work"/told-*.jsonl)
# Every run's profile, told or not: an import cut short must not leave an id with two owners.
profiles=()
for cycle in $(seq 1 "$cycles"); do profiles+=(--profile "crash$cycle"); done
status=0
"$bin/loadtest" verify --server "http://127.0.0.1:$http_port" --admin-token "$token" \
  "${profiles[@]}" "${told_files[@]}" || status=$?
kill "$server_pid"
wait "$server_pid" 2>/dev/null || true
server_pid=
exit "$status"
