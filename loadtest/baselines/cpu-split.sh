#!/usr/bin/env bash
# CPU per request of the client and of the server, for BENCHMARKS.md's accounting: one embedded
# closed-loop run, with the server's CPU time read from /proc/PID/stat near the end of the run
# and the client's (plus its waited-for child, the server) from /usr/bin/time.
# Usage: loadtest/baselines/cpu-split.sh LABEL [loadtest run args...]
#   e.g. loadtest/baselines/cpu-split.sh provisiond --embedded --transport http --data-dir /dev/shm/x
#        loadtest/baselines/cpu-split.sh baseline --embedded-baseline --transport http
# SECS (default 8) and CONC (default 256) set the run's length and requests in flight.
set -euo pipefail
cd "$(dirname "$0")/../.."
label=${1:?usage: cpu-split.sh LABEL [loadtest run args...]}; shift
lt=${LOADTEST:-target/release/loadtest}
[ -x "$lt" ] || { echo "build first: cargo build --release --workspace" >&2; exit 1; }
work=$(mktemp -d /tmp/cpu-split.XXXXXX)
trap 'kill "$sampler" 2>/dev/null; rm -rf "$work"' EXIT
# The server is the loadtest's child; its CPU time (utime + stime, in clock ticks) is sampled
# until it exits, and the last sample kept. It is found by its arguments, not by its binary's
# name, so that builds kept under other names (ab.sh's A and B) are found too.
( while sleep 0.3; do
    p=$(pgrep -n -f " serve --bind 127.0.0.1 |loadtest baseline-server" || true)
    [ -n "$p" ] && awk '{print $14 + $15}' "/proc/$p/stat" > "$work/server.tmp" 2>/dev/null \
      && mv "$work/server.tmp" "$work/server"
  done ) &
sampler=$!
/usr/bin/time -f "%e %U %S" -o "$work/time" "$lt" run --quiet --no-verify --devices 100000000 \
  --duration "${SECS:-8}" --concurrency "${CONC:-256}" --json "$work/run.json" "$@" > /dev/null
python3 - "$label" "$work" "$(getconf CLK_TCK)" <<'PY'
import json, sys, os
label, work, hz = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = json.load(open(os.path.join(work, "run.json")))
elapsed, user, system = map(float, open(os.path.join(work, "time")).read().split())
server = int(open(os.path.join(work, "server")).read()) / hz
requests = r["succeeded"] + r["failed"]
client = user + system - server
print(f"{label}: {r['throughput_per_s']:.0f}/s over {r['elapsed_s']:.1f} s; "
      f"client {1e6 * client / requests:.0f} us/request, server {1e6 * server / requests:.0f} us/request "
      f"(CPU seconds: client {client:.1f}, server {server:.1f}; {os.cpu_count()} cores)")
PY
