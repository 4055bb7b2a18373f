"""Compile the firmware to .mpy with mpy-cross: the tree a board runs.

build/mpy/ gets boot.py and main.py as source (boards only run those two as
.py), every module of lib/ and firmware/ as .mpy, and the web page gzipped
(www/index.html.gz: the terminal streams it as is, Content-Encoding: gzip,
and inflates it for a client that does not take gzip).

The bytecode carries no line numbers (mpy-cross -X no-source-lines): 6 %
less flash and about 1.2 KB less live heap at READY (docs/MEMORY.md).  A
traceback from a board still names every file (by its path below firmware/
or lib/) and function, each at "line 1"; `understudy run --source` runs
the .py with their lines.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import zlib

from understudy import paths

# log2 of the page's deflate window: a board inflating the page for a client
# without gzip needs a buffer this size (1 KB; gzip's usual 32 KB would not
# fit).  firmware/web.py's _WINDOW must be the same.
PAGE_WINDOW = 10
FLAGS = ["-X", "no-source-lines"]  # mpy-cross's, for every module


def shown(rel):
    """The file name a module's tracebacks give: its path without the
    leading firmware/ or lib/ (wire/p3.py, synqpay.py).  The name is kept
    in flash and, once the module is imported, in the heap's names."""
    for top in ("firmware/", "lib/"):
        if rel.startswith(top):
            return rel[len(top):]
    return rel


def mpy_cross():
    here = os.path.join(os.path.dirname(sys.executable), "mpy-cross")
    return here if os.path.exists(here) else shutil.which("mpy-cross") or "mpy-cross"


# modules only the unix port runs: in build/mpy for `make run` and the
# tests, never copied to a board (deploy, package.json)
HOST_ONLY = "firmware/board/unix"
# each board's own module, by sys.platform: `understudy deploy` leaves the
# other board's off a board's flash
BOARD_MODULE = {"firmware/board/esp32": "esp32", "firmware/board/rp2": "rp2"}
# the Bluetooth listeners (off by default): deployed when the config enables
# one, or with --bluetooth
BLUETOOTH = ("firmware/bt_spp", "firmware/ble")


def on_board(rel, platform=None, bluetooth=True):
    """True for a file (path relative to the tree, .py or .mpy) a board
    gets: never the unix port's own modules; on a board of `platform`
    (sys.platform: esp32, rp2), not another board's module (any other
    platform keeps them all); without bluetooth, not the
    Bluetooth listeners'.  Defaults: what any board may use (package.json)."""
    stem = rel.rsplit(".", 1)[0]
    if stem.startswith(HOST_ONLY):
        return False
    if platform in BOARD_MODULE.values() and BOARD_MODULE.get(stem, platform) != platform:
        return False
    return bluetooth or stem not in BLUETOOTH


def largest_board(sizes):
    """(platform, modules, bytes) of the largest default deploy (no
    Bluetooth), from {relative path: size} of a build's .mpy files."""
    out = []
    for platform in sorted(set(BOARD_MODULE.values())):
        got = [n for rel, n in sizes.items() if on_board(rel, platform, False)]
        out.append((sum(got), len(got), platform))
    size, n, platform = max(out)
    return platform, n, size


def sources():
    for d in paths.FIRMWARE_DIRS:
        for base, dirs, files in os.walk(os.path.join(paths.ROOT, d)):
            dirs[:] = sorted(x for x in dirs if x != "__pycache__")
            for f in sorted(files):
                if f.endswith(".py"):
                    yield os.path.relpath(os.path.join(base, f), paths.ROOT)


def build(out=paths.MPY, quiet=False):
    """Compile into out/; returns (modules, .mpy bytes) of what a board gets."""
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)
    for f in paths.FIRMWARE_FILES:
        shutil.copy(os.path.join(paths.ROOT, f), os.path.join(out, f))
    sizes = {}
    tool = mpy_cross()
    for rel in sources():
        dst = os.path.join(out, rel[:-3] + ".mpy")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        r = subprocess.run([tool] + FLAGS + ["-o", dst, "-s", shown(rel), os.path.join(paths.ROOT, rel)],
                           capture_output=True, text=True)
        if r.returncode:
            sys.stderr.write("mpy-cross failed on %s:\n%s%s" % (rel, r.stdout, r.stderr))
            raise SystemExit(1)
        sizes[rel] = os.path.getsize(dst)
    page(out)
    platform, n, size = largest_board(sizes)
    with open(os.path.join(out, ".stamp"), "w") as f:
        f.write("%d %d\n%s\n" % (n, size, digest()))
    if not quiet:
        print("mpy: %d modules, %s bytes of .mpy for a board (%s, the larger), in %s" % (
            n, "{:,}".format(size), platform, os.path.relpath(out)))
    return n, size


def page(out):
    """www/index.html.gz in out (reproducible: no time stamp); its size."""
    with open(os.path.join(paths.ROOT, paths.PAGE), "rb") as f:
        raw = f.read()
    dst = os.path.join(out, paths.PAGE + ".gz")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(dst, "wb") as f:
        z = zlib.compressobj(9, zlib.DEFLATED, 16 + PAGE_WINDOW)  # gzip, no time stamp
        f.write(z.compress(raw) + z.flush())
    return os.path.getsize(dst)


def digest():
    """Of every source file and the flags: a build made otherwise is stale."""
    h = hashlib.sha256(" ".join(FLAGS).encode())
    for rel in list(paths.FIRMWARE_FILES) + list(sources()) + [paths.PAGE]:
        h.update(rel.encode())
        with open(os.path.join(paths.ROOT, rel), "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def stats(out=paths.MPY):
    """(modules, bytes of .mpy) the larger board's default deploy gets of
    the build in out/, from its stamp."""
    with open(os.path.join(out, ".stamp")) as f:
        n, size = f.read().split()[:2]
    return int(n), int(size)


def ensure(out=paths.MPY):
    """The .mpy build in out/, made (quietly) if missing or stale; returns out."""
    try:
        with open(os.path.join(out, ".stamp")) as f:
            if f.read().split()[2:3] == [digest()]:
                return out
    except (OSError, IndexError):
        pass
    build(out, quiet=True)
    return out


if __name__ == "__main__":
    build()
