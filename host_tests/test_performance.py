"""The deterministic targets of `make bench` (docs/PERFORMANCE.md), asserted.

Speed is not asserted here (shared, noisy machines): `make bench` measures
it against an echo floor and writes it down.  Size and memory are asserted:
the .mpy build's size, the mixed soak (every personality, a register
hammering) in its heap budget, and the heap slope over many transactions.
"""
import os

from understudy import bench, build, paths

MPY_LIMIT = 100 * 1024  # the target for the whole build on flash
MIXED_HEAP = "256K"  # the documented budget; `make bench` finds the smallest (224K on x64)
# bytes of live heap between transaction 100 and the last.  Some runs take
# one step of 640 or 1,280 bytes near #1,500 and stay flat after it (a
# block kept, sometimes given back later), so the limit is 2 KB; a leak of
# one 16-byte block every 20 transactions would already exceed it.  The
# 10,000-transaction figure of `make bench` is the one written down.
LEAK_LIMIT = 2048


def test_mpy_build_under_100_kb():
    """What a board's flash gets (`understudy deploy`, package.json): every
    .mpy of the build but the unix port's own board modules."""
    total = 0
    for top, _, files in os.walk(paths.MPY):
        for f in files:
            path = os.path.join(top, f)
            if f.endswith(".mpy") and build.on_board(os.path.relpath(path, paths.MPY)):
                total += os.path.getsize(path)
    print("mpy build for a board: %.1f KB" % (total / 1024))
    assert 40 * 1024 < total < MPY_LIMIT, total  # the lower bound: the build is really there


def test_mixed_soak_fits_the_budget():
    """Concert TCP and serial, P3 TCP and WebSocket, Synqpay TCP and TLS take
    turns for 40 rounds while a register hammers Concert: every register gets
    its answer (approved, or busy when the hammer holds the terminal), and
    the firmware prints no MemoryError or Traceback."""
    series, _, busy, problems = bench.mixed_soak(40, heap=MIXED_HEAP)
    assert not problems, problems
    assert busy > 0, "the hammering register never heard busy: the soak did not overlap"
    heaps = [h for _, h in series]
    assert len(heaps) >= 80, len(heaps)  # transactions that ran to the end
    print("mixed soak: %d transactions, peak live %d, %d busy" % (len(heaps), max(heaps), busy))


def test_no_leak_over_many_transactions():
    """Concert and Synqpay taking turns for 3,000 transactions: the least
    live heap near #100 and near #3,000 differ by under LEAK_LIMIT."""
    early, late, out = bench.leak(3000)
    assert early and late, out[-2000:]
    print("leak: %d near #100, %d near #3000" % (early, late))
    assert late - early < LEAK_LIMIT, (early, late)
