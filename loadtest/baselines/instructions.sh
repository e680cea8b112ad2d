#!/usr/bin/env bash
# Server instructions per request, counted by callgrind: a measure of a change that this shared
# machine's noise cannot move (ab.sh's throughput runs cannot tell apart changes under about 7%).
# The server runs under valgrind twice, for N1 and for N2 requests of the same closed-loop run;
# the difference of the two totals divided by N2 - N1 leaves out start-up and shutdown, except
# the memtable flush at shutdown, which grows with the requests and is printed apart. Counts
# are user-space instructions only (no kernel time, no waiting), and valgrind runs one thread
# at a time, so group commits hold other batch sizes than on the real machine: compare builds
# with this, and throughput with ab.sh.
# Usage: loadtest/baselines/instructions.sh SERVER [loadtest run args...]
#   SERVER: a provisiond binary (run with --embedded), or `baseline` (loadtest baseline-server)
#   e.g. loadtest/baselines/instructions.sh target/release/provisiond --transport http
#        loadtest/baselines/instructions.sh baseline --transport coap
# N1 (default 2000), N2 (default 12000), CONC (default 256); TOP (default 25) functions are
# listed by their own instructions per request. Needs valgrind (apt-get install valgrind).
set -euo pipefail
usage="usage: instructions.sh SERVER [loadtest run args...]   (SERVER: a provisiond binary or 'baseline')"
server=${1:?$usage}; shift
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind not found (apt-get install valgrind)" >&2; exit 2; }
if [ "$server" != baseline ]; then
  [ -x "$server" ] || { echo "instructions.sh: '$server' is not an executable provisiond binary" >&2; exit 2; }
  server=$(realpath "$server")
fi
cd "$(dirname "$0")/../.."
lt=$(realpath "${LOADTEST:-target/release/loadtest}")
[ -x "$lt" ] || { echo "build first: cargo build --release --workspace" >&2; exit 1; }
n1=${N1:-2000}; n2=${N2:-12000}
(( n2 > n1 )) || { echo "instructions.sh: N2 ($n2) must be larger than N1 ($n1)" >&2; exit 2; }
work=$(mktemp -d /tmp/instructions.XXXXXX)
trap 'rm -rf "$work"' EXIT
valgrind=(valgrind --tool=callgrind --fair-sched=yes)
run=(run --quiet --no-verify --concurrency "${CONC:-256}")
for n in "$n1" "$n2"; do
  out="$work/callgrind.$n"
  if [ "$server" = baseline ]; then
    # The baseline has no admin API: run it on free ports and give the loadtest any key.
    "${valgrind[@]}" --callgrind-out-file="$out" "$lt" baseline-server --http-port 0 \
      --mqtt-port 0 --coap-port 0 > "$work/server.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do grep -q "serving CoAP" "$work/server.log" && break; sleep 0.1; done
    port() { grep -o "serving $1 on 127.0.0.1:[0-9]*" "$work/server.log" | cut -d: -f2; }
    http=$(port HTTP); mqtt=$(port MQTT); coap=$(port CoAP)
    [ -n "$http" ] || { cat "$work/server.log" >&2; kill "$pid"; exit 1; }
    "$lt" "${run[@]}" --devices "$n" --server "http://127.0.0.1:$http" \
      --mqtt "127.0.0.1:$mqtt" --coap "127.0.0.1:$coap" --key baseline --secret baseline "$@" \
      > "$work/run.log" 2>&1 || { cat "$work/run.log" "$work/server.log" >&2; kill "$pid"; exit 1; }
    kill -INT "$pid"; wait "$pid" || true
  else
    printf '#!/usr/bin/env bash\nexec %s --callgrind-out-file=%q %q "$@"\n' "${valgrind[*]}" "$out" "$server" \
      > "$work/server"
    chmod +x "$work/server"
    "$lt" "${run[@]}" --devices "$n" --embedded --server-bin "$work/server" "$@" \
      > "$work/run.log" 2>&1 || { cat "$work/run.log" >&2; exit 1; }
  fi
  [ -s "$out" ] || { echo "instructions.sh: callgrind wrote no profile for $n requests" >&2; exit 1; }
done
python3 - "$work/callgrind.$n1" "$work/callgrind.$n2" "$((n2 - n1))" "${TOP:-25}" <<'PY'
import re, subprocess, sys
# One line of callgrind_annotate: an instruction count, its share, then the function.
ROW = r"\s*([\d,]+) \([^)]*\)\s+(.*)"
def annotate(path, *options):
    return subprocess.run(["callgrind_annotate", "--auto=no", *options, path],
                          capture_output=True, text=True, check=True).stdout
def profile(path):
    """Own instructions per function, and the program's total."""
    own, total = {}, None
    for line in annotate(path, "--threshold=100").splitlines():
        m = re.match(ROW, line)
        if not m:
            continue
        count = int(m[1].replace(",", ""))
        if "PROGRAM TOTALS" in m[2]:
            total = count
        else:
            name = re.sub(r" \[[^\]]*\]$", "", m[2]).removeprefix("???:")
            own[name] = own.get(name, 0) + count
    return own, total
def background(path):
    """Instructions of RocksDB's background threads (flushes, compactions), callees included."""
    for line in annotate(path, "--inclusive=yes").splitlines():
        m = re.match(ROW, line)
        if m and "rocksdb::ThreadPoolImpl::Impl::BGThreadWrapper" in m[2]:
            return int(m[1].replace(",", ""))
    return 0
(small, small_total), (big, big_total) = profile(sys.argv[1]), profile(sys.argv[2])
n, top = int(sys.argv[3]), int(sys.argv[4])
per_request = (big_total - small_total) / n
print(f"instructions per request: {per_request:.0f} (user space, callgrind, {n} requests)")
# The server flushes its memtables when it stops, so the difference includes flushing what the
# extra requests wrote: work a device costs in the end, but which a throughput run of a few
# seconds mostly does not pay while it runs (its memtables rarely fill).
flushed = (background(sys.argv[2]) - background(sys.argv[1])) / n
if flushed > 0:
    print(f"  of which RocksDB background threads (flushes, compactions): {flushed:.0f} "
          f"({100 * flushed / per_request:.1f}%); the rest: {per_request - flushed:.0f}")
rows = sorted(((big.get(k, 0) - small.get(k, 0)) / n, k) for k in set(small) | set(big))
for count, name in reversed(rows[-top:] if top > 0 else []):
    print(f"{count:8.0f}  {100 * count / per_request:5.1f}%  {name[:150]}")
PY
