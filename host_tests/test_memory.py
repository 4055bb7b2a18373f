"""Heap budget: the .mpy build under -X heapsize, measured with gc.mem_alloc().

The firmware logs `heap=<bytes>` (after gc.collect()) at the end of every
transaction when log.heap is on; these tests read those lines.  Heap figures
are deterministic enough to assert; time is not, and is not asserted.

CONCERT_HEAP is the smallest -X heapsize in which the Concert-over-TCP soak,
its warm-up settlement and compaction included, passes every run on the x64
unix port (112K, 3 of 3; 104K fails), plus 8K of margin for CI
(docs/MEMORY.md has the figures; a 32-bit board needs about 75 % of them).
"""
import re
import threading

from concert_client import exchange, odoo, request
from conftest import CLOCK, base_config, merge
from understudy import paths
from understudy.launch import Firmware
from wire import concert_tlv as tlv

CONCERT_HEAP = "120K"
HEAP_RE = re.compile(r"core done #(\d+) .*heap=(\d+)")


def last_heap(fw, start):
    """heap= of the first `core done` line at or after line `start`."""
    i = fw.wait_for("heap=", 5, start)
    assert i is not None, fw.output()[-2000:]
    return int(HEAP_RE.search(fw.lines[i]).group(2))


def warm_up(fw, addr):
    """A settlement and the compaction after it: before the first measure,
    their code's names are interned once and stay (docs/MEMORY.md, "names"),
    a step that is no leak; before each measure, both are taken at the same
    point of the batch cycle (the journal's index of the open batch grows
    until a settlement, by design)."""
    mark = len(fw.lines)
    assert tlv.decode(exchange(addr, request(CJ="012345678901", CA="01", CD="B")))["AE"] == "10"
    i = fw.wait_for("journal compacted", 10, mark)
    assert i is not None, fw.output()[-2000:]
    # that line may end the compaction of an earlier settlement, still under
    # way: then this one's follows; measure once none has ended for a second
    while i is not None:
        i = fw.wait_for("journal compacted", 1, i + 1)


def soak(tmp_path, heap, n, hammers=3):
    """n sequential payments from one register while `hammers` others keep
    asking and often hear "busy".  Only the Concert listener is enabled:
    this measures Concert.  Returns (heap at a quiet point after 10
    payments, heap at the same quiet point after all of them, counts)."""
    # the web face off: its trace ring holds log lines (docs/MEMORY.md, test_web_memory.py)
    # keep 0: the warm-up's settlement compacts the journal (every path once, below);
    # max_batch 100: the soak settles and compacts every 100 transactions, so the
    # journal's index (offsets of the open batch) stays as short as a shop's day
    cfg = merge(base_config(), {"log": {"heap": True, "frames": False}, "web": {"enabled": False},
                                "delays": {"auth_ms": 2}, "journal": {"keep": 0, "max_batch": 100}})
    for name in cfg["listeners"]:  # Concert alone: the other personalities have their own figures
        cfg["listeners"][name]["enabled"] = name == "concert-ip"
    fw = Firmware(root=paths.MPY, heap=heap, config=cfg, state_dir=str(tmp_path / "state"),
                  clock=CLOCK).start()
    addr = fw.address("concert-ip")

    def pay():
        mark = len(fw.lines)
        assert tlv.decode(exchange(addr, odoo(1250)))["AE"] == "10"
        return last_heap(fw, mark)

    counts = {"approved": 0, "retried": 0, "busy": 0, "other": 0}
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            a = tlv.decode(exchange(addr, odoo(1250)))
            counts["busy" if a.get("AF") == "00" else "other"] += 1
            stop.wait(0.003)

    try:
        for _ in range(10):  # quiet: one register, one connection at a time
            pay()
        warm_up(fw, addr)
        early = min(pay() for _ in range(4))  # the least of a few: a sample may catch a buffer
        threads = [threading.Thread(target=hammer) for _ in range(hammers)]
        for t in threads:
            t.start()
        try:
            while counts["approved"] < n:  # a register re-presents a payment refused as busy
                a = tlv.decode(exchange(addr, odoo(1250)))
                counts["approved" if a["AE"] == "10" else "retried"] += 1
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        warm_up(fw, addr)  # both measures just after a settlement: the same point of the cycle
        late = min(pay() for _ in range(4))
        out = fw.stop()
    finally:
        fw.cleanup()
    assert "MemoryError" not in out and "Traceback" not in out, out[-3000:]
    peak = max(int(h) for _, h in HEAP_RE.findall(out))
    return early, late, peak, counts


def test_concert_soak_within_budget_and_without_leak(tmp_path):
    early, late, peak, counts = soak(tmp_path, CONCERT_HEAP, 1000)
    print("heap after 10: %d, after the soak: %d, peak live: %d, %s" % (early, late, peak, counts))
    assert counts["approved"] == 1000
    assert counts["busy"] > 100, counts  # the hammering registers did hear "busy"
    assert late - early <= 1024, (early, late)
