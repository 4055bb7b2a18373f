"""The bench's report: docs/BENCHMARKS.md and its charts, from the figures
bench.main() measured (bench.py measures, this module writes)."""
import datetime
import os
import platform
import subprocess

from understudy import VERSION
from understudy.launch import micropython


def charts(series, rows, where, mixed=(), say=print):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("matplotlib missing: no charts (make bench installs it)")
        return []
    out = []
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot([n for n, _ in series], [h / 1024.0 for _, h in series], lw=0.8)
    ax.set_xlabel("transaction number (every personality taking turns, one register hammering)")
    ax.set_ylabel("live heap, KB (x64)")
    ax.set_title("Heap over the mixed soak")
    fig.tight_layout()
    fig.savefig(os.path.join(where, "bench-heap.png"), dpi=110)
    out.append("bench-heap.png")
    fig, ax = plt.subplots(figsize=(8, 3.5))
    names = [r[0] for r in rows]
    ax.boxplot([[x * 1000 for x in r[1]["all"]] for r in rows], showfliers=False)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=15, fontsize=8)
    ax.set_ylabel("ms per transaction")
    ax.set_yscale("log")
    ax.set_title("Latency per personality (zero authorisation delay)")
    fig.tight_layout()
    fig.savefig(os.path.join(where, "bench-latency.png"), dpi=110)
    out.append("bench-latency.png")
    if mixed:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.bar([size for size, _ in mixed],
               [100.0 * sum(x["fits"] for x in runs) / len(runs) for _, runs in mixed])
        ax.set_xlabel("heap (-X heapsize)")
        ax.set_ylabel("runs with every request answered, %")
        ax.set_ylim(0, 100)
        ax.set_title("Mixed use: every protocol at once, the page open")
        fig.tight_layout()
        fig.savefig(os.path.join(where, "bench-mixed.png"), dpi=110)
        out.append("bench-mixed.png")
    return out


def cpu():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def runtime():
    """(version line, word size in bits) of the unix port the bench runs."""
    code = "import sys; print(sys.version); print(64 if sys.maxsize > 2**32 else 32)"
    out = subprocess.run([micropython(), "-c", code],
                         capture_output=True, text=True).stdout.split("\n")
    return out[0].strip(), int(out[1])


# the heap budgets are a board's: 4-byte objects, the code frozen in flash
UNJUDGED = ("not judged on this build: the heap budgets are for the 32-bit build with the "
            "firmware frozen in (docs/MEMORY.md, \"Budgets\")")


def report(r, heap):
    mp, bits = runtime()
    ratio = {name: ours["mean"] / floor["mean"] for name, ours, floor in r["rows"]}
    heaps = [h for _, h in r["series"]]
    lk = r["leak"][1] - r["leak"][0] if None not in r["leak"] else None
    intro = ("Written by `make bench` (tools/understudy/bench.py, bench_report.py); do not edit "
             "by hand.  What "
             "the figures mean and what was done about them: [PERFORMANCE.md](PERFORMANCE.md).")
    L_ = ["# Benchmarks", "", intro, "",
          "- date: %s" % datetime.date.today().isoformat(),
          "- machine: %s, %d cores, %s %s (shared: compare figures within one run)"
          % (cpu(), os.cpu_count() or 0, platform.system(), platform.release()),
          "- MicroPython unix port, %d-bit: %s" % (bits, mp),
          "- CPython %s (the registers and the tools); Understudy %s"
          % (platform.python_version(), VERSION),
          "- firmware: %s, `-X heapsize=%s`, zero authorisation delay, `log.frames` off"
          % ("frozen into the interpreter (manifest.py)" if r["frozen"] else "the `.mpy` build",
             heap), "",
          "## Transactions, against the echo floor", "",
          "Sequential transactions from one register (%d each, after 20 to warm up).  The floor "
          "is a bare asyncio server on the same runtime and transport (tools/understudy/"
          "bench_echo.py) doing one request and one answer per exchange; ratio = our mean "
          "time / the floor's." % r["n"], "",
          "| personality | tx/s | p50 ms | p99 ms | floor tx/s | floor p50 ms | ratio |",
          "|---|---|---|---|---|---|---|"]
    for name, ours, floor in r["rows"]:
        L_.append("| %s | %.0f | %.2f | %.2f | %.0f | %.3f | %.1f |" % (
            name, ours["rate"], ours["p50"] * 1000, ours["p99"] * 1000, floor["rate"],
            floor["p50"] * 1000, ratio[name]))
    L_ += ["", "## Memory (%d-bit objects%s)" % (bits, ": about twice a board's" if bits == 64
                                                  else ", as on a board"), "",
           "| what | figure |", "|---|---|",
           "| mixed soak: %d rounds, %d transactions, %d busy answers | live heap after each "
           "transaction: peak %.1f KB, last %.1f KB |" % (
               r["rounds"], len(heaps), r["busy"], max(heaps) / 1024.0, heaps[-1] / 1024.0),
           "| smallest heap the mixed soak runs in (every personality) | %s |" % _kb(r["fit_all"]),
           "| smallest heap Concert over TCP alone runs in (a register hammering) | %s |"
           % _kb(r["fit_concert"]),
           "| largest free block after the mixed soak | %s |" % (
               "%d bytes" % r["max_free"] if r["max_free"] else "?"),
           "| leak: live heap near transaction %d minus near 100 (least of 100 samples each) | %s |" % (
               r["leak_n"], "%+d bytes (%d -> %d)" % (lk, r["leak"][0], r["leak"][1])
               if lk is not None else "?"),
           "| boot to READY, %s (median of 10) | %s |" % (
               "frozen" if r["frozen"] else "`.mpy` / `.py`",
               "%.0f ms" % r["boot_mpy"] + (" / %.0f ms" % r["boot_py"] if r["boot_py"] else "")),
           "| `.mpy` build on flash | {:,} bytes, {} modules |".format(r["mpy"][1], r["mpy"][0])]
    if r.get("serial"):
        L_ += ["| Concert serial link efficiency at 9600 baud (wire time / whole payment) | %s |"
               % r["serial"]]
    if r.get("mixed"):
        L_ += mixed_table(r["mixed"], r["seconds"])
    for c in r["charts"]:
        L_ += ["", "![%s](%s)" % (c, c)]
    c = ratio.get("Concert V3, TCP", 0)
    worst = max(v for k, v in ratio.items() if k != "Concert V3, TCP")
    board = bits == 32 and r["frozen"]  # what the heap budgets are for
    L_ += ["", "## Targets (issue 10)", "", "| target | measured | met |", "|---|---|---|"]
    for what, got, ok in (
        ("Concert over TCP at most 1.5x the echo floor", "%.1fx" % c, c <= 1.5),
        ("the others at most 2x", "up to %.1fx" % worst, worst <= 2),
        ("no leak: under 1 KB over %d transactions" % r["leak_n"],
         "%+d bytes" % lk if lk is not None else "?", lk is not None and lk < 1024),
        (".mpy under 100 KB (102,400 bytes)", "{:,} bytes".format(r["mpy"][1]), r["mpy"][1] < 100 * 1024),
        ("boot to READY under 300 ms", "%.0f ms" % r["boot_mpy"], r["boot_mpy"] < 300),
        ("the mixed soak, every personality, in 64K", _kb(r["fit_all"]),
         r["fit_all"] is not None and r["fit_all"] <= 64 if board else None),
        ("Concert alone in 24K", _kb(r["fit_concert"]),
         r["fit_concert"] is not None and r["fit_concert"] <= 24 if board else None),
    ):
        L_.append("| %s | %s | %s |" % (what, got, UNJUDGED if ok is None else "yes" if ok else "**no**"))
    return "\n".join(L_) + "\n"


def _median(values):
    v = sorted(x for x in values if x is not None)
    return v[len(v) // 2] if v else None


def mixed_table(mixed, seconds):
    """Markdown lines: the fit rate per heap size of load.fit_rates()."""
    out = ["", "## Mixed use, per heap size", "",
           ("Two Concert registers, a P3 POS on TCP and one on WebSocket, a Synqpay POS, a "
            "script reading and writing the control API, the page's event stream, all at once "
            "with a 2 ms authorisation, %d runs of %.0f s per size.  A run fits when every "
            "request got an answer (busy is one) and the log shows no MemoryError or traceback.  "
            "Counts and figures: medians over the runs that booted.") % (len(mixed[0][1]), seconds),
           "",
           ("| heap | fits | answered / unanswered per run | busy | CPU ms per request | "
            "live heap median / peak KB | why a run failed |"),
           "|---|---|---|---|---|---|---|"]
    for size, runs in mixed:
        ran = [x["n"] for x in runs if "n" in x]
        cpu = _median([x.get("cpu_ms") for x in runs])
        med_kb = [_median([x.get(k) for x in runs]) for k in ("heap_median", "heap_peak")]
        why = next((x["why"] for x in runs if not x["fits"]), "")
        out.append("| %s | %d of %d | %s / %s | %s | %s | %s | %s |" % (
            size, sum(x["fits"] for x in runs), len(runs),
            _median([n["approved"] + n["busy"] + n["other"] for n in ran]),
            _median([n["unanswered"] for n in ran]), _median([n["busy"] for n in ran]),
            "%.2f" % cpu if cpu is not None else "?",
            " / ".join("%.0f" % (v / 1024.0) if v is not None else "?" for v in med_kb),
            why[:80].replace("|", "/")))
    return out


def _kb(kb):
    return "%dK" % kb if kb else "none of the sizes tried"
