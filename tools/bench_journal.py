#!/usr/bin/env python3
"""Measure what the journal costs: time per transaction with and without it,
bytes on flash, flash wear, and replay time at boot.  CPython host tool.

    .venv/bin/python tools/bench_journal.py [-n 500]

Runs the .mpy build (make mpy) in the unix port; prints a Markdown table.
Figures are wall-clock on a shared machine: compare them within one run.
"""
import argparse
import os
import re
import socket
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from understudy import paths
from understudy.launch import Firmware

REQ = b"CZ0040300CJ012012345678901CA00201CE003978CD0010CB0041250"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def pay(addr):
    s = socket.create_connection(addr)
    s.sendall(REQ)
    data = s.recv(4096)
    s.close()
    assert b"AE00210" in data, data


def run(n, journal=True, flash=None, state=None, fsync=False):
    state = state or tempfile.mkdtemp(prefix="bench-")
    cfg = {"listeners": {"concert-ip": {"port": free_port()}}, "log": {"frames": False},
           "journal": {"enabled": journal, "keep": 200, "fsync": fsync}}
    fw = Firmware(root=paths.MPY, heap="256K", config=cfg, state_dir=state, flash=flash).start()
    addr = fw.address("concert-ip")
    for _ in range(20):  # warm up
        pay(addr)
    t0 = time.perf_counter()
    for _ in range(n):
        pay(addr)
    dt = time.perf_counter() - t0
    out = fw.stop()
    fw.cleanup()
    wear = re.search(r"flash wear (\d+) bytes in (\d+) programs", out)
    return dt / n, state, wear


def boot_ms(state, flash=None, tries=5):
    times = []
    for _ in range(tries):
        cfg = {"listeners": {"concert-ip": {"port": free_port()}}, "log": {"frames": False}}
        t0 = time.perf_counter()
        fw = Firmware(root=paths.MPY, heap="256K", config=cfg, state_dir=state, flash=flash).start()
        times.append((time.perf_counter() - t0) * 1000)
        fw.stop()
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-n", type=int, default=500, help="payments per run (default 500)")
    a = p.parse_args()
    print("measuring %d sequential Concert payments per configuration..." % a.n, file=sys.stderr)
    off, _, _ = run(a.n, journal=False)
    on, state, _ = run(a.n)
    synced, _, _ = run(a.n, fsync=True)
    lfs, _, wear = run(a.n, flash="1024K")
    size = os.path.getsize(os.path.join(state, "journal.bin")) - 4
    per_txn = size / (a.n + 20)
    print("replay: boot times with an empty and a full journal...", file=sys.stderr)
    empty = boot_ms(tempfile.mkdtemp(prefix="bench-"))
    full = boot_ms(state)
    print("| what | figure |")
    print("|---|---|")
    print("| time per payment, journal off (RAM) | %.2f ms |" % (off * 1000))
    print("| time per payment, journal in files | %.2f ms (x%.2f) |" % (on * 1000, on / off))
    print("| time per payment, journal in files, journal.fsync | %.2f ms (x%.2f) |"
          % (synced * 1000, synced / off))
    print("| time per payment, journal in littlefs image | %.2f ms (x%.2f) |" % (lfs * 1000, lfs / off))
    print("| journal bytes per payment (3 records) | %.0f |" % per_txn)
    if wear:
        w, progs = int(wear.group(1)), int(wear.group(2))
        print("| littlefs wear per payment (512-byte blocks) | %.0f bytes in %.1f programs |"
              % (w / (a.n + 20), progs / (a.n + 20)))
    print("| boot to READY, empty journal | %.0f ms |" % empty)
    print("| boot to READY, %d transactions in the open batch (%.0f KB) | %.0f ms |"
          % (a.n + 20, size / 1024.0, full))


if __name__ == "__main__":
    main()
