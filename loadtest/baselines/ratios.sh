#!/usr/bin/env bash
# The same-run ratios of BENCHMARKS.md that need only provisiond and the baseline server:
# HTTP and CoAP provisions/s against the baseline server, WAL synced against sync off, and the
# p99 latency at half the maximum HTTP rate (open loop). Every run uses the same client tool.
# Usage: [ROUNDS=4] loadtest/baselines/ratios.sh [SECONDS] [CONCURRENCY]   (default: 15 s, 64)
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-15}; conc=${2:-64}
lt=${LOADTEST:-target/release/loadtest}
[ -x "$lt" ] || { echo "build first: cargo build --release --workspace" >&2; exit 1; }
work=$(mktemp -d /tmp/ratios.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(free -m | awk '/Mem:/{print $2}') MiB, load average $(cut -d' ' -f1-3 /proc/loadavg)"
run() { # NAME ARGS...: one run, its JSON kept as $work/NAME.json
  local name=$1; shift
  "$lt" run --quiet --devices 100000000 --duration "$secs" --concurrency "${RUN_CONC:-$conc}" --json "$work/$name.json" "$@" > "$work/$name.txt"
  python3 - "$work/$name.json" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); l = r["latency_ms"]
v = r["verification"]
ver = f'{v["verified"]}/{v["checked"]} verified' if v else "not verified"
print(f'{sys.argv[2]:<22} {r["throughput_per_s"]:>9.0f}/s  p50 {l["p50"]:.2f} p99 {l["p99"]:.2f} p99.9 {l["p999"]:.2f} ms  failed {r["failed"]}  {ver}')
PY
}
# ROUNDS rounds, each running every pair back to back, so that a noisy moment hits both sides of
# a ratio; the ratio reported is the median over the rounds, with every round's shown. Even rounds
# run in the reverse order, so that no side of a ratio always runs first (keep ROUNDS even).
rounds=${ROUNDS:-4}
declare -A args=(
  [http_provisiond]="--embedded --transport http"
  [http_baseline]="--embedded-baseline --transport http"
  [coap_provisiond]="--embedded --transport coap"
  [coap_baseline]="--embedded-baseline --transport coap"
  [http_sync_off]="--embedded --transport http --server-arg=--sync-writes=false"
)
order=(http_provisiond http_baseline coap_provisiond coap_baseline http_sync_off)
for r in $(seq 1 "$rounds"); do
  names=("${order[@]}")
  (( r % 2 )) || { names=(); for n in "${order[@]}"; do names=("$n" "${names[@]}"); done; }
  # shellcheck disable=SC2086 # each entry of args is a list of flags
  for name in "${names[@]}"; do run "$name.$r" ${args[$name]}; done
done
half=$(python3 -c "
import json, statistics
print(max(1, round(statistics.median(json.load(open('$work/http_provisiond.%d.json' % r))['throughput_per_s'] for r in range(1, $rounds + 1)) / 2)))")
# The first WARMUP seconds (default 2) are left out of the percentiles: at the start 1024
# connections are opened into a rate that is already running, which is not the steady state. The
# baseline server at the same rate shows the machine's own tail.
warmup=${WARMUP:-2}
RUN_CONC=1024 run http_half_rate --embedded --transport http --rate "$half" --warmup "$warmup"
RUN_CONC=1024 run http_half_rate_baseline --embedded-baseline --transport http --rate "$half" --warmup "$warmup"
python3 - "$work" "$rounds" <<'PY'
import json, sys, os, statistics
w, rounds = sys.argv[1], int(sys.argv[2])
t = lambda n: json.load(open(os.path.join(w, n + ".json")))["throughput_per_s"]
half = json.load(open(os.path.join(w, "http_half_rate.json")))
p99 = half["latency_ms"]["p99"]
p99_base = json.load(open(os.path.join(w, "http_half_rate_baseline.json")))["latency_ms"]["p99"]
def ratio(label, a, b, target):
    each = [t(f"{a}.{r}") / t(f"{b}.{r}") for r in range(1, rounds + 1)]
    rounds_text = " ".join(f"{x:.2f}" for x in each)
    print(f"ratio {label:<34} = {statistics.median(each):.2f}   (target >= {target}; rounds: {rounds_text})")
ratio("HTTP provisiond / baseline server", "http_provisiond", "http_baseline", 0.6)
ratio("CoAP provisiond / baseline server", "coap_provisiond", "coap_baseline", 0.6)
ratio("HTTP WAL synced / sync off", "http_provisiond", "http_sync_off", 0.7)
print(f"p99 at half the max HTTP rate            = {p99:.2f} ms (target <= 10 ms; "
      f"baseline server at the same rate {p99_base:.2f} ms; {half['config']['rate']:.0f}/s, "
      f"first {half['config']['warmup_s']:.0f} s left out)")
PY
