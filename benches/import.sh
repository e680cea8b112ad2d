#!/usr/bin/env bash
# Bulk-import throughput and memory: imports N generated rows (name + access token, the
# pre-provisioned-fleet case) into a fresh data directory with the WAL synced (durable), and
# again with syncing off as the same-run baseline. Prints rows/s and peak RSS for each.
# Usage: benches/import.sh [ROWS...]   (default: 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${PROVISIOND:-target/release/provisiond}
[ -x "$bin" ] || { echo "build first: cargo build --release (or set PROVISIOND)" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/provisiond-import.XXXXXX")
trap 'rm -rf "$work"' EXIT
[ $# -gt 0 ] || set -- 1000000
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r)"
printf '%-10s %-8s %10s %12s %14s\n' rows mode seconds rows/s peak_RSS_MiB
for rows in "$@"; do
  csv="$work/fleet-$rows.csv"
  awk -v n="$rows" 'BEGIN { print "name,accessToken"; for (i = 0; i < n; i++) printf "device-%09d,token-%09d\n", i, i }' > "$csv"
  for mode in durable sync-off; do
    data="$work/data-$rows-$mode"
    sync=true; [ "$mode" = sync-off ] && sync=false
    "$bin" profile create fleet --strategy CHECK_PRE_PROVISIONED_DEVICES --data-dir "$data" > /dev/null
    /usr/bin/time -f '%e %M' -o "$work/time" \
      "$bin" import "$csv" --profile fleet --data-dir "$data" --sync-writes "$sync" > "$work/out" 2> "$work/err" \
      || { cat "$work/err" >&2; exit 1; }
    grep -q "created $rows, updated 0, failed 0" "$work/out" || { cat "$work/out" "$work/err" >&2; exit 1; }
    read -r secs kb < "$work/time"
    awk -v r="$rows" -v m="$mode" -v s="$secs" -v k="$kb" \
      'BEGIN { printf "%-10d %-8s %10.2f %12.0f %14.1f\n", r, m, s, r / s, k / 1024 }'
    rm -rf "$data"
  done
  rm -f "$csv"
done
