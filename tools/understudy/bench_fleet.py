"""Fleet measurement: N terminals on this host, 10% of them paying at any time.

    PYTHONPATH=tools .venv/bin/python -m understudy.bench_fleet 10 30 50

For each N: boot time of the whole fleet (all READY), memory per terminal
(/proc/<pid>/smaps_rollup: Rss, Pss, private), then ceil(N / 10) registers
pay over Concert TCP back to back for --seconds, each going round its own
share of the terminals, so every terminal pays; the answer times' p50, p99
and max.  A fleet holds when every payment was answered within 1 s.
With --chart PATH (make bench: docs/bench-fleet.png) it also draws the
answer times and the memory per terminal against N.
"""
import argparse
import math
import socket
import tempfile
import threading
import time

from understudy import build, tls, paths
from understudy.fleet import Fleet, smaps

PAY = b"CZ0040300CJ012012345678901CA00201CE003978CD0010CB0041250"


def pay(port):
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(PAY)
        ok = b"AE00210" in s.recv(4096)
    return time.monotonic() - t0, ok


def one(n, seconds, base):
    with tempfile.TemporaryDirectory(prefix="understudy-fleet-") as d:
        fleet = Fleet(n, paths.MPY, d, base=base)
        t0 = time.monotonic()
        fleet.start(timeout=120)
        boot = time.monotonic() - t0
        try:
            mem = [smaps(fw.proc.pid) for _t, fw in fleet.terminals]
            ports = [fleet.describe()["terminals"][i]["listeners"]["concert-ip"]["port"] for i in range(n)]
            c = max(1, math.ceil(n / 10))
            times, bad = [], []
            end = time.monotonic() + seconds

            def register(k):
                mine = ports[k::c]
                i = 0
                while time.monotonic() < end or i < len(mine):
                    dt, ok = pay(mine[i % len(mine)])
                    times.append(dt)
                    if not ok:
                        bad.append(dt)
                    i += 1

            th = [threading.Thread(target=register, args=(k,)) for k in range(c)]
            for t in th:
                t.start()
            for t in th:
                t.join()
        finally:
            fleet.stop()
    times.sort()
    q = lambda p: times[min(len(times) - 1, int(p * len(times)))] * 1000
    return {"n": n, "boot_s": boot, "rss": sum(m[0] for m in mem) / n / 1024,
            "pss": sum(m[1] for m in mem) / n / 1024,
            "private": sum(m[2] for m in mem) / n / 1024, "payments": len(times), "bad": len(bad),
            "p50": q(0.5), "p99": q(0.99), "max": times[-1] * 1000, "paying": max(1, math.ceil(n / 10))}


def chart(rows, path):
    """Answer times (p50, p99, slowest) and private memory per terminal
    against the fleet's size, side by side."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no chart (make bench installs it)")
        return
    ns = [r["n"] for r in rows]
    fig, (ax, mx) = plt.subplots(1, 2, figsize=(9, 3.5))
    for key, label in (("p50", "p50"), ("p99", "p99"), ("max", "slowest")):
        ax.plot(ns, [r[key] for r in rows], marker="o", label=label)
    ax.axhline(1000, color="grey", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("terminals (10% paying at any time)")
    ax.set_ylabel("Concert payment answered in, ms")
    ax.legend(fontsize=8)
    mx.bar([str(n) for n in ns], [r["private"] for r in rows])
    mx.set_xlabel("terminals")
    mx.set_ylabel("private memory per terminal, MB")
    fig.suptitle("A fleet on one host (2 cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print("chart: %s" % path)


def main(argv=None):
    p = argparse.ArgumentParser(prog="understudy.bench_fleet")
    p.add_argument("counts", nargs="*", type=int, default=[10, 30, 50])
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--base-port", type=int, default=24000)
    p.add_argument("--chart", metavar="PATH", help="draw the figures into this PNG")
    a = p.parse_args(argv)
    build.ensure()
    tls.make(paths.TLS)
    print("| terminals | paying | boot s | Rss MB | Pss MB | private MB | payments | p50 ms | p99 ms "
          "| max ms | all < 1 s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for n in a.counts:
        r = one(n, a.seconds, a.base_port)
        rows.append(r)
        print("| %(n)d | %(paying)d | %(boot_s).2f | %(rss).1f | %(pss).1f | %(private).2f | %(payments)d "
              "| %(p50).1f | %(p99).1f | %(max).1f |" % r
              + (" yes |" if r["max"] < 1000 and not r["bad"] else " no |"),
              flush=True)
    if a.chart:
        chart(rows, a.chart)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
