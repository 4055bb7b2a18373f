"""The automatic settlement's cost: payments back to back across journal.max_batch.

    PYTHONPATH=tools .venv/bin/python -m understudy.bench_settlement [--runs 3]

One Concert register pays max_batch + 30 times over TCP (the .mpy build,
256K, default config); each exchange is timed on the client.  Payment
max_batch + 1 closes the batch first, and the compaction after it runs in
steps between transactions: compare that payment and the 30 after it with
the median and the slowest of the ones before.
"""
import argparse
import statistics
import time

from understudy import bench, build, paths, tls
from understudy.codecs import concert_tlv as tlv

MAX_BATCH = 1000  # the default journal.max_batch


def one(n_after=30):
    fw = bench.start({"log": {"frames": False}}, heap="256K")
    try:
        addr = fw.address("concert-ip")
        lat = []
        for _ in range(MAX_BATCH + n_after):
            t0 = time.perf_counter()
            a = tlv.decode(bench.concert_once(addr))
            lat.append((time.perf_counter() - t0) * 1000)
            if a.get("AE") != "10":
                raise SystemExit("bench_settlement: payment %d not approved: %r" % (len(lat), a))
        settled = fw.wait_for("automatically: journal.max_batch", 2) is not None
    finally:
        fw.stop()
        fw.cleanup()
    before, after = lat[:MAX_BATCH], lat[MAX_BATCH:]
    return {"median": statistics.median(before), "slowest_before": max(before),
            "first": after[0], "slowest_after": max(after), "settled": settled}


def main(argv=None):
    p = argparse.ArgumentParser(prog="understudy.bench_settlement",
                                description="Time Concert payments across the automatic settlement.")
    p.add_argument("--runs", type=int, default=3, help="runs (default 3: give ranges, not one run)")
    a = p.parse_args(argv)
    build.ensure()
    tls.make(paths.TLS)
    print("| run | median ms | slowest of #1-#%d ms | #%d ms | slowest of #%d-#%d ms | settled |"
          % (MAX_BATCH, MAX_BATCH + 1, MAX_BATCH + 1, MAX_BATCH + 30))
    print("|---|---|---|---|---|---|")
    for i in range(a.runs):
        r = one()
        print("| %d | %.2f | %.1f | %.1f | %.1f | %s |" % (
            i + 1, r["median"], r["slowest_before"], r["first"], r["slowest_after"],
            "yes" if r["settled"] else "NO"), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
