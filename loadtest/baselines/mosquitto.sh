#!/usr/bin/env bash
# BASELINE: plain MQTT connect+disconnect per second against Mosquitto 2.0 (Debian), measured
# with the same client tool (loadtest --mqtt-flow connect: CONNECT as `provision`, CONNACK,
# DISCONNECT, new connection each time), beside provisiond's full MQTT device flow (connect,
# subscribe, publish, response, disconnect; durable) from the same tool in the same run.
# Each side runs at every in-flight count given and is compared at its best, as postgres.sh
# takes PostgreSQL at its best client count: Mosquitto drops SYNs when too many connections
# arrive at once (256 in flight), so a single count can hold back either side.
# The baseline server (loadtest baseline-server: ntex-mqtt answering a fixed SUCCESS body, no
# engine, no store) runs both flows beside them: its connect+disconnect compares the framework
# with Mosquitto on the same flow, its full flow is the most a server built on provisiond's MQTT
# framework can reach against Mosquitto on this machine (BASELINE=0 leaves both out).
# Usage: loadtest/baselines/mosquitto.sh [DEVICES] [CONCURRENCY ...]   (default: 30000, 16 64 256)
set -euo pipefail
cd "$(dirname "$0")/../.."
. loadtest/baselines/settle.sh
devices=${1:-30000}; shift || true
concs=("$@"); [ ${#concs[@]} -gt 0 ] || concs=(16 64 256)
command -v mosquitto >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; }
lt=${LOADTEST:-target/release/loadtest}
[ -x "$lt" ] || { echo "build first: cargo build --release --workspace" >&2; exit 1; }
work=$(mktemp -d /tmp/mosquitto-baseline.XXXXXX)
port=$((20000 + RANDOM % 20000))
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_connections -1\npersistence false\nlog_dest none\n' "$port" > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" & mpid=$!
trap 'kill $mpid 2>/dev/null; rm -rf "$work"' EXIT
sleep 1
echo "machine: $(nproc) cores, $(free -m | awk '/Mem:/{print $2}') MiB, $(mosquitto -h | head -1)"
# Every flow is a new TCP connection, and each leaves a TIME_WAIT socket for 60 s. A run of
# 30,000 fills the ephemeral port range, and the next run's connect() then has to search it for
# a reusable port: that costs the *second* run's client, which would always be provisiond's.
# So each run starts only once the previous connections have drained (settle, at most 75 s).
rate() { python3 -c "import json,sys;print(round(json.load(open(sys.argv[1]))['throughput_per_s']))" "$1"; }
declare -A best=() at=()
failed=0
# measure KEY LABEL ARGS...: one run of the load tester at $conc in flight, its summary printed
# under LABEL, and the best rate of each KEY over the in-flight counts kept with its count.
# A run that fails (nothing succeeded, or a credential not verified) is reported, kept out of
# the best rates, and makes the script exit 1 at the end; the other runs still go ahead.
measure() {
  local key=$1 label=$2 r; shift 2
  settle "$label, $conc in flight"
  if ! "$lt" run --quiet --devices "$devices" --concurrency "$conc" --json "$work/$key-$conc.json" "$@" \
    > "$work/$key-$conc.txt" 2>&1; then
    echo "$label, $conc in flight: FAILED (the load tester exited non-zero); its output ends:" >&2
    tail -n 12 "$work/$key-$conc.txt" | sed "s/^/  /" >&2
    failed=1
    return
  fi
  grep -E "throughput|latency|verified|error" "$work/$key-$conc.txt" | sed "s/^/$label, $conc in flight: /"
  r=$(rate "$work/$key-$conc.json")
  if [ "$r" -gt "${best[$key]:-0}" ]; then best[$key]=$r; at[$key]=$conc; fi
}
# best_of KEY: "RATE at CONC in flight", or "no successful run".
best_of() { if [ -n "${best[$1]:-}" ]; then echo "${best[$1]} at ${at[$1]} in flight"; else echo "no successful run"; fi; }
# ratio LABEL KEY_A KEY_B: the best rate of A over that of B, when both have one.
ratio() {
  if [ -z "${best[$2]:-}" ] || [ -z "${best[$3]:-}" ]; then
    echo "ratio $1: not measured ($(best_of "$2"), $(best_of "$3"))"
  else
    python3 -c "print(f'ratio $1 = {${best[$2]}/${best[$3]}:.2f}')"
  fi
}
for conc in "${concs[@]}"; do
  measure mosq "mosquitto connect+disconnect" --server http://127.0.0.1:1 --mqtt "127.0.0.1:$port" \
    --key k --secret s --no-verify --transport mqtt --mqtt-flow connect
  measure prov "provisiond full flow" --embedded --transport mqtt
  if [ "${BASELINE:-1}" != 0 ]; then
    measure base "baseline server full flow" --embedded-baseline --transport mqtt
    measure bconn "baseline server connect+disconnect" --embedded-baseline --transport mqtt --mqtt-flow connect
  fi
done
echo "best: mosquitto connects/s $(best_of mosq); provisiond full flows/s $(best_of prov)"
ratio "provisiond full flows/s / mosquitto connects/s, each at its best" prov mosq
if [ "${BASELINE:-1}" != 0 ]; then
  echo "best: baseline server full flows/s $(best_of base); connects/s $(best_of bconn)"
  ratio "baseline server connects/s / mosquitto connects/s (the same flow)" bconn mosq
  ratio "baseline server full flows/s / mosquitto connects/s (the framework limit)" base mosq
  ratio "provisiond / baseline server, full flows/s" prov base
fi
exit "$failed"
