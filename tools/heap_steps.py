#!/usr/bin/env python3
"""The live heap after each personality's first use, as docs/MEMORY.md tables it.

Boots the .mpy build (`make mpy`) with every listener on, then: READY, a
Concert payment twice, one P3 payment over framed TCP and one over
WebSocket, one Synqpay sale over TCP and one over TLS, each connection
closed.  Each figure is the `heap=` (gc.collect(); gc.mem_alloc()) of a
Concert payment made after the step; READY is `app heap alloc=`.  Heap
figures are deterministic within a few dozen bytes: a few runs show the
spread.  $MICROPYTHON picks another unix-port binary (a 32-bit build:
tools/build_unix32.py; --frozen when it has the firmware frozen in).
Compare two trees at paths of the same length: a module's path is one of
its names.
"""
import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from understudy import bench, paths


def one_run(heap, root):
    """[(step, live heap bytes)] of one boot."""
    fw = bench.start({"log": {"heap": True, "frames": False}}, heap=heap, root=root)
    try:
        i = fw.wait_for("app heap", 10)
        rows = [("READY", int(re.search(r"alloc=(\d+)", fw.lines[i]).group(1)))]

        def concert(step):
            n = len(fw.lines)
            bench.concert_once(fw.address("concert-ip"))
            j = fw.wait_for("heap=", 10, n)
            rows.append((step, int(re.search(r"heap=(\d+)", fw.lines[j]).group(1))))

        concert("first Concert payment")
        concert("second Concert payment")
        for name, ws in (("p3-tcp", False), ("p3-ws", True)):
            pos = bench.P3(fw.address(name), ws)
            pos.login()
            pos.pay()
            pos.close()
            concert("+ " + name)
        for name, tls in (("synqpay", False), ("synqpay-tls", True)):
            pos = bench.Synqpay(fw.address(name), tls)
            pos.pay()
            pos.close()
            concert("+ " + name)
        return rows
    finally:
        fw.stop()
        fw.cleanup()


def main(argv=None):
    p = argparse.ArgumentParser(prog="heap_steps.py", description=__doc__.split("\n")[0],
                                epilog="Run `make mpy` first; about 5 s a run.")
    p.add_argument("--runs", type=int, default=3, help="boots (default 3)")
    p.add_argument("--heap", default="256K", help="-X heapsize (default 256K)")
    p.add_argument("--frozen", action="store_true",
                   help="$MICROPYTHON has the firmware frozen in (tools/build_unix32.py --frozen)")
    a = p.parse_args(argv)
    root = bench.frozen_root() if a.frozen else paths.MPY
    bench.ecr_p3.progress = bench.ecr_synqpay.progress = lambda text: None
    table = {}
    for run in range(a.runs):
        print("run %d of %d..." % (run + 1, a.runs), file=sys.stderr)
        for step, value in one_run(a.heap, root):
            table.setdefault(step, []).append(value)
    for step, values in table.items():
        print("%-24s %s" % (step, " ".join("%d" % v for v in values)))


if __name__ == "__main__":
    main()
