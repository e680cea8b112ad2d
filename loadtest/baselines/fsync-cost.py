#!/usr/bin/env python3
"""What one fdatasync costs on this file system, appending or overwriting.

    fsync-cost.py append|overwrite SYNCS PATH

Writes SYNCS chunks of 20,000 bytes (about one group commit of the HTTP benchmark in the WAL),
each followed by fdatasync. `append` grows a new file, as RocksDB's WAL does after a start;
`overwrite` writes over a file already written and synced, as a recycled WAL does
(`recycle_log_file_num`), so the sync has no file size or block allocation to journal.
Prints syncs per second, CPU per sync (this process, and the whole machine from /proc/stat,
which includes the file system's journal thread) and sync latency percentiles. PATH is deleted.
"""
import os
import sys
import time

CHUNK = b"x" * 20000


def busy_ticks():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user, nice, system, irq, softirq: not idle, not iowait
    return sum(fields[i] for i in (0, 1, 2, 5, 6))


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("append", "overwrite"):
        sys.exit("usage: fsync-cost.py append|overwrite SYNCS PATH")
    mode, syncs, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if syncs < 100:
        sys.exit("fsync-cost.py: SYNCS must be at least 100")
    if os.path.exists(path):
        os.unlink(path)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        if mode == "overwrite":
            os.write(fd, CHUNK * syncs)
            os.fsync(fd)
            os.lseek(fd, 0, os.SEEK_SET)
        busy0, cpu0, t0 = busy_ticks(), os.times(), time.perf_counter()
        latencies = []
        for _ in range(syncs):
            os.write(fd, CHUNK)
            start = time.perf_counter()
            os.fdatasync(fd)
            latencies.append(time.perf_counter() - start)
        elapsed = time.perf_counter() - t0
        cpu1, busy1 = os.times(), busy_ticks()
    finally:
        os.close(fd)
        os.unlink(path)
    own = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    machine = (busy1 - busy0) / os.sysconf("SC_CLK_TCK")
    latencies.sort()

    def pct(p):
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1e6

    print(
        f"{mode}: {syncs / elapsed:.0f} syncs/s, CPU per sync {own / syncs * 1e6:.0f} us "
        f"(machine {machine / syncs * 1e6:.0f} us), latency p50 {pct(0.5):.0f} us "
        f"p99 {pct(0.99):.0f} us p99.9 {pct(0.999):.0f} us max {latencies[-1] * 1e6:.0f} us"
    )


if __name__ == "__main__":
    main()
