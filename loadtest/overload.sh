#!/usr/bin/env bash
# Overload (RELIABILITY.md): measures HTTP capacity (closed loop), then offers twice that rate
# (open loop) for a while, then half of it, and reports per phase the throughput, the answers
# refused and how fast, the latency, and the server's resident memory sampled every 0.5 s.
#   loadtest/overload.sh [SECONDS_PER_PHASE] [WORK_DIR]     (default 20 s, a temporary dir)
# The server runs with its defaults except the mailbox bounds, set small by default so that the
# overload reaches them with the connections one client machine can open:
#   OVERLOAD_MAILBOX=256 OVERLOAD_ENQUEUE_MS=200 (provisiond's defaults: 4096 and 2000).
# Needs `cargo build --release --workspace` first.
set -euo pipefail
cd "$(dirname "$0")/.."
phase_s=${1:-20}
work=${2:-$(mktemp -d -t provisiond-overload.XXXXXX)}
bin=${CARGO_TARGET_DIR:-target}/release
token=overload-admin-token-0123456789ab
port=${OVERLOAD_HTTP_PORT:-38180}
mailbox=${OVERLOAD_MAILBOX:-256}
enqueue_ms=${OVERLOAD_ENQUEUE_MS:-200}
for b in provisiond loadtest; do
  [ -x "$bin/$b" ] || { echo "overload: $bin/$b not found; run cargo build --release --workspace" >&2; exit 2; }
done
mkdir -p "$work"
ulimit -n 65536 2>/dev/null || true

PROVISIOND_ADMIN_TOKEN=$token "$bin/provisiond" serve --data-dir "$work/data" --bind 127.0.0.1 \
  --http-port "$port" --mqtt-port 0 --coap-port 0 \
  --set "engine.mailbox_capacity=$mailbox" --set "engine.enqueue_timeout_ms=$enqueue_ms" \
  >"$work/server.out" 2>"$work/server.err" &
server=$!
trap 'kill -9 $server 2>/dev/null || true; kill $sampler 2>/dev/null || true' EXIT
for _ in $(seq 1 200); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.05
done
# Resident memory every 0.5 s: "<seconds since start> <KiB>".
( t0=$(date +%s.%N); while kill -0 $server 2>/dev/null; do
    echo "$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.1f", a - b }') $(awk '/VmRSS/ {print $2}' /proc/$server/status)"
    sleep 0.5
  done ) >"$work/rss.log" 2>/dev/null &
sampler=$!

common=(run --server "http://127.0.0.1:$port" --admin-token "$token" --transport http --quiet
        --no-verify --devices 100000000)
phase() { # name, extra args...
  local name=$1; shift
  local from; from=$(wc -l <"$work/rss.log")
  "$bin/loadtest" "${common[@]}" --prefix "overload-$name" --json "$work/$name.json" "$@" \
    >"$work/$name.out" 2>&1 || true
  tail -n +"$((from + 1))" "$work/rss.log" | awk -v n="$name" '{ if ($2 > m) m = $2 } END { print n, m }' >>"$work/rss-peaks"
}
: >"$work/rss-peaks"
phase capacity --concurrency 128 --duration 10
capacity=$(python3 -c "import json,sys; print(int(json.load(open(sys.argv[1]))['throughput_per_s']))" "$work/capacity.json")
echo "overload: measured capacity $capacity provisions/s (closed loop, 128 in flight)"
phase overload --rate $((capacity * 2)) --concurrency 8000 --duration "$phase_s"
phase recovery --rate $((capacity / 2)) --concurrency 8000 --duration "$phase_s"

python3 - "$work" "$capacity" <<'PY'
import json, sys
work, capacity = sys.argv[1], int(sys.argv[2])
peaks = dict(line.split() for line in open(f"{work}/rss-peaks"))
print(f"{'phase':<10} {'offered/s':>9} {'done/s':>7} {'succeeded':>9} {'refused':>8} {'never sent':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'peak RSS MiB':>12}  errors")
for name, offered in [("capacity", "closed"), ("overload", 2 * capacity), ("recovery", capacity // 2)]:
    r = json.load(open(f"{work}/{name}.json"))
    lat = r["latency_ms"]
    errors = sorted(r["errors"].items(), key=lambda kv: -kv[1])[:3]
    print(f"{name:<10} {offered:>9} {r['throughput_per_s']:>7.0f} {r['succeeded']:>9} {r['failed']:>8} {r['never_sent'] or 0:>10} "
          f"{lat['p50']:>8.1f} {lat['p99']:>8.1f} {lat['max']:>8.1f} {int(peaks.get(name, 0)) / 1024:>12.0f}  {errors}")
    if name == "recovery":
        tl = r["timeline"]
        print("recovery, per second (succeeded, errors, p99 ms):",
              [(s["succeeded"], s["errors"], round(s["p99_ms"], 1)) for s in tl[:8]])
PY
echo "overload: reports in $work"
