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
best_mosq=0; best_prov=0; best_base=0; best_bconn=0; at_mosq=none; at_prov=none; at_base=none; at_bconn=none
for conc in "${concs[@]}"; do
  settle "mosquitto, $conc in flight"
  "$lt" run --quiet --server http://127.0.0.1:1 --mqtt "127.0.0.1:$port" --key k --secret s --no-verify \
    --transport mqtt --mqtt-flow connect --devices "$devices" --concurrency "$conc" \
    --json "$work/mosq-$conc.json" > "$work/mosq-$conc.txt"
  settle "provisiond, $conc in flight"
  "$lt" run --quiet --embedded --transport mqtt --devices "$devices" --concurrency "$conc" \
    --json "$work/prov-$conc.json" > "$work/prov-$conc.txt"
  grep -E "throughput|latency|verified|error" "$work/mosq-$conc.txt" | sed "s/^/mosquitto connect+disconnect, $conc in flight: /"
  grep -E "throughput|latency|verified|error" "$work/prov-$conc.txt" | sed "s/^/provisiond full flow, $conc in flight:         /"
  m=$(rate "$work/mosq-$conc.json"); p=$(rate "$work/prov-$conc.json")
  if [ "$m" -gt "$best_mosq" ]; then best_mosq=$m; at_mosq=$conc; fi
  if [ "$p" -gt "$best_prov" ]; then best_prov=$p; at_prov=$conc; fi
  if [ "${BASELINE:-1}" != 0 ]; then
    settle "baseline server, $conc in flight"
    "$lt" run --quiet --embedded-baseline --transport mqtt --devices "$devices" --concurrency "$conc" \
      --json "$work/base-$conc.json" > "$work/base-$conc.txt"
    grep -E "throughput|latency|error" "$work/base-$conc.txt" | sed "s/^/baseline server full flow, $conc in flight:    /"
    b=$(rate "$work/base-$conc.json")
    if [ "$b" -gt "$best_base" ]; then best_base=$b; at_base=$conc; fi
    settle "baseline server connect+disconnect, $conc in flight"
    "$lt" run --quiet --embedded-baseline --transport mqtt --mqtt-flow connect --devices "$devices" \
      --concurrency "$conc" --json "$work/bconn-$conc.json" > "$work/bconn-$conc.txt"
    grep -E "throughput|latency|error" "$work/bconn-$conc.txt" | sed "s/^/baseline server connect+disconnect, $conc in flight: /"
    b=$(rate "$work/bconn-$conc.json")
    if [ "$b" -gt "$best_bconn" ]; then best_bconn=$b; at_bconn=$conc; fi
  fi
done
echo "best: mosquitto $best_mosq connects/s at $at_mosq in flight; provisiond $best_prov full flows/s at $at_prov in flight"
python3 -c "print(f'ratio provisiond full flows/s / mosquitto connects/s, each at its best = {$best_prov/$best_mosq:.2f}')"
if [ "$best_base" -gt 0 ]; then
  echo "best: baseline server $best_base full flows/s at $at_base in flight, $best_bconn connects/s at $at_bconn in flight"
  python3 -c "print(f'ratio baseline server connects/s / mosquitto connects/s (the same flow) = {$best_bconn/$best_mosq:.2f}')"
  python3 -c "print(f'ratio baseline server full flows/s / mosquitto connects/s (the framework limit) = {$best_base/$best_mosq:.2f}')"
  python3 -c "print(f'ratio provisiond / baseline server, full flows/s = {$best_prov/$best_base:.2f}')"
fi
