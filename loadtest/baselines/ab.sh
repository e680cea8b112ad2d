#!/usr/bin/env bash
# Two provisiond builds, or one build with two sets of server flags, compared the way
# BENCHMARKS.md measures a change: embedded closed-loop runs (cpu-split.sh), alternating in ABBA
# order so that neither side always runs first, each in a fresh data directory, with TIME_WAIT
# sockets drained before each run. Prints every run (rate, client and server CPU per request),
# then each side's mean and median and how many rounds each side won. On a shared machine one
# run can be 20% off the next; run the same build as A and B first to see the noise floor.
# Usage: loadtest/baselines/ab.sh ROUNDS A B [loadtest run args...]
#   A, B: a provisiond binary, optionally followed by ,FLAG,... (each passed as --server-arg)
#   e.g. loadtest/baselines/ab.sh 6 before/provisiond after/provisiond --transport http
#        loadtest/baselines/ab.sh 6 target/release/provisiond target/release/provisiond,--shards=2 --transport http
# SECS (default 10) and CONC (default 256) are cpu-split.sh's.
set -euo pipefail
usage="usage: ab.sh ROUNDS A B [loadtest run args...]   (A, B: BINARY[,SERVER_FLAG...])"
rounds=${1:?$usage}; spec_a=${2:?$usage}; spec_b=${3:?$usage}; shift 3
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "ab.sh: ROUNDS must be a positive number, got '$rounds'" >&2; exit 2; }
# Binaries are resolved before the cd below, so that paths relative to the caller work.
resolve() {
  local spec=$1 bin rest
  bin=${spec%%,*}; rest=${spec#"$bin"}
  [ -x "$bin" ] || { echo "ab.sh: '$bin' is not an executable provisiond binary" >&2; exit 2; }
  echo "$(realpath "$bin")$rest"
}
spec_a=$(resolve "$spec_a"); spec_b=$(resolve "$spec_b")
cd "$(dirname "$0")/../.."
. loadtest/baselines/settle.sh
export SECS=${SECS:-10}
work=$(mktemp -d /tmp/ab.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(free -m | awk '/Mem:/{print $2}') MiB, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "A = $spec_a"
echo "B = $spec_b"
side() { # LABEL SPEC ROUND [loadtest run args...]
  local label=$1 spec=$2 round=$3; shift 3
  local parts extra=()
  IFS=',' read -ra parts <<< "$spec"
  for flag in "${parts[@]:1}"; do extra+=("--server-arg=$flag"); done
  settle "$label.$round" > /dev/null
  rm -rf "$work/data"
  loadtest/baselines/cpu-split.sh "$label.$round" --embedded --server-bin "${parts[0]}" \
    --data-dir "$work/data" "${extra[@]}" "$@" | tee -a "$work/lines"
}
for r in $(seq 1 "$rounds"); do
  if (( r % 2 )); then
    side A "$spec_a" "$r" "$@"; side B "$spec_b" "$r" "$@"
  else
    side B "$spec_b" "$r" "$@"; side A "$spec_a" "$r" "$@"
  fi
done
python3 - "$work/lines" <<'PY'
import re, statistics, sys
rates = {"A": {}, "B": {}}
for line in open(sys.argv[1]):
    m = re.match(r"([AB])\.(\d+): (\d+)/s", line)
    if m:
        rates[m[1]][int(m[2])] = int(m[3])
a, b = rates["A"], rates["B"]
for side, r in (("A", a), ("B", b)):
    v = list(r.values())
    print(f"{side}: mean {statistics.mean(v):.0f}/s, median {statistics.median(v):.0f}/s, "
          f"min {min(v)}, max {max(v)} over {len(v)} runs")
wins = sum(b[k] > a[k] for k in a if k in b)
print(f"B / A: {statistics.mean(b.values()) / statistics.mean(a.values()):.3f} (means); "
      f"B faster in {wins} of {len(a)} rounds")
PY
