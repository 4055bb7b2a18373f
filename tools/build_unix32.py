#!/usr/bin/env python3
"""Build MicroPython's unix port 32-bit (4-byte pointers, as on ESP32 and
RP2040), optionally with Understudy frozen in: the stand-in for a board that
docs/MEMORY.md and docs/PERFORMANCE.md measure with.

    git clone --depth 1 --branch v1.28.0 https://github.com/micropython/micropython ~/mp
    python3 tools/build_unix32.py ~/mp            # ~/mp/ports/unix/build-standard-32/micropython
    python3 tools/build_unix32.py ~/mp --frozen   # ~/mp/ports/unix/build-frozen-32/micropython
    python3 tools/build_unix32.py ~/mp --split 2  # ~/mp/ports/unix/build-standard-32-split2/micropython
    MICROPYTHON=~/mp/ports/unix/build-frozen-32/micropython make bench ARGS=--frozen

Needs gcc able to build 32-bit programs (Debian: `apt install
gcc-multilib`) and the checkout's submodules (`make -C ports/unix
submodules`, which this runs when lib/mbedtls is empty; it needs GitHub).
The port is built without `ffi` and `btree`, which Understudy does not
use (no 32-bit libffi needed).
Run it again after changing the firmware: a frozen build holds a copy.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TAG = "v1.28.0"  # the MicroPython release the documented figures come from


def say(msg):
    print("build_unix32: " + msg, flush=True)


def run(cmd, cwd=None):
    say("$ " + " ".join(cmd))
    r = subprocess.run(cmd, cwd=cwd)
    if r.returncode:
        raise SystemExit("build_unix32: that failed (exit status %d); its output is above" % r.returncode)


def can_build_32bit():
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "a.c")
        with open(src, "w") as f:
            f.write("int main(void) { return 0; }\n")
        return subprocess.run(["gcc", "-m32", src, "-o", os.path.join(d, "a")],
                              capture_output=True).returncode == 0


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="tools/build_unix32.py",
        description="Build MicroPython's unix port 32-bit, optionally with Understudy frozen in.")
    p.add_argument("micropython", metavar="DIR", help="a MicroPython checkout (%s for the documented "
                   "figures)" % TAG)
    p.add_argument("--frozen", action="store_true",
                   help="freeze firmware/ and lib/wire in (this repository's manifest.py)")
    p.add_argument("--split", type=int, default=1, metavar="N",
                   help="the heap in N equal areas, no block spanning two (2: an ESP32's heap once "
                   "it has grown, two 56K areas in -X heapsize=112K)")
    p.add_argument("-j", type=int, default=os.cpu_count() or 2, help="parallel jobs (default: the cores)")
    a = p.parse_args(argv)
    mp = os.path.abspath(os.path.expanduser(a.micropython))
    unix = os.path.join(mp, "ports", "unix")
    if not os.path.isdir(unix):
        raise SystemExit("build_unix32: %s is not a MicroPython checkout (no ports/unix).  Get one with\n"
                         "  git clone --depth 1 --branch %s https://github.com/micropython/micropython %s"
                         % (mp, TAG, a.micropython))
    if not can_build_32bit():
        raise SystemExit("build_unix32: gcc cannot build 32-bit programs here.  On Debian or Ubuntu:\n"
                         "  sudo apt install gcc-multilib")
    if not os.listdir(os.path.join(mp, "lib", "mbedtls")):
        say("fetching the unix port's submodules (TLS, berkeley-db, micropython-lib)")
        run(["make", "-C", unix, "submodules"])
    build = "build-frozen-32" if a.frozen else "build-standard-32"
    args = ["make", "-C", unix, "-j%d" % a.j, "MICROPY_FORCE_32BIT=1", "MICROPY_PY_FFI=0",
            "MICROPY_PY_BTREE=0"]
    if a.split > 1:
        build += "-split%d" % a.split
        args.append("CFLAGS_EXTRA=-DMICROPY_GC_SPLIT_HEAP=1 -DMICROPY_GC_SPLIT_HEAP_N_HEAPS=%d" % a.split)
    args.append("BUILD=" + build)
    # both variants freeze modules (the standard one its asyncio...): mpy-cross first
    run(["make", "-C", os.path.join(mp, "mpy-cross"), "-j%d" % a.j])
    with tempfile.TemporaryDirectory() as d:
        if a.frozen:
            manifest = os.path.join(d, "manifest.py")
            with open(manifest, "w") as f:  # the port's own modules (asyncio...), then ours
                f.write('include("$(PORT_DIR)/variants/standard/manifest.py")\n')
                f.write("include(%r)\n" % os.path.join(ROOT, "manifest.py"))
            args.append("FROZEN_MANIFEST=" + manifest)
            # make compares times: a .mpy compiled from another checkout or branch
            # looks newer than an older source and would be frozen in unchanged
            shutil.rmtree(os.path.join(unix, build, "frozen_mpy"), ignore_errors=True)
        run(args)
    exe = os.path.join(unix, build, "micropython")
    say("done: %s" % exe)
    say("use it: MICROPYTHON=%s make bench%s" % (exe, " ARGS=--frozen" if a.frozen else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
