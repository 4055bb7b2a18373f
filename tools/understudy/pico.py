"""The terminal on an emulated Raspberry Pi Pico: MicroPython's rp2 port
(a UF2 you give) in rp2040js, driven by tools/pico/pico.mjs.

    image(path, cfg)          the Pico's littlefs, as `understudy deploy` lays
                              it out: boot.py, main.py, lib/, firmware/,
                              www/index.html.gz, tls/, config.json
    Pico(uf2, bootrom, ...)   the emulated board, with the same interface as
                              launch.Firmware (start, wait_for, listeners,
                              serial(), stop, kill, problems...)

The board's UART0 (Concert) and UART1 (Synqpay) are each wired to a null
modem (nullmodem.py): `listening concert-serial serial uart0:tx0:rx1 9600`
from the board is shown with the pty a register opens instead.  USB CDC
(the REPL, where the firmware logs) is the driver's stdin and stdout.

Neither the UF2 nor the boot ROM is part of this repository: build
MicroPython's ports/rp2 (BOARD=RPI_PICO) yourself; the boot ROM is the
RP2040's (B1), 16384 bytes.
"""
import json
import os
import shutil
import signal
import subprocess
import threading
import time

from understudy import paths, uf2
from understudy.launch import Firmware, FirmwareError
from understudy.nullmodem import NullModem

# MicroPython rp2, RPI_PICO: 2 MB of flash, the last 1408 KB are the file
# system (MICROPY_HW_FLASH_STORAGE_BYTES), littlefs v2 in 4 KB blocks
# (rp2.Flash), mounted by the port's _boot.py with progsize=256 and the
# default readsize=32 and lookahead=32.
FS_OFFSET = 0xA0000
BLOCK_SIZE = 4096
BLOCK_COUNT = 1408 * 1024 // BLOCK_SIZE
DRIVER = os.path.join(paths.ROOT, "tools", "pico", "pico.mjs")
UARTS = {"concert-serial": 0, "synqpay-serial": 1}

# A plain Pico has no network: the serial personalities only.
BOARD_CONFIG = {
    "listeners": {
        "concert-ip": {"enabled": False},
        "synqpay": {"enabled": False},
        "synqpay-tls": {"enabled": False},
        "p3-tcp": {"enabled": False},
        "p3-ws": {"enabled": False},
        "concert-serial": {"enabled": True},
        "synqpay-serial": {"enabled": True},
    },
    "web": {"enabled": False},
}


# appended to boot.py by image(heap=...): one block holds the rest of the
# heap (a bytearray: the collector never scans it), kept by a module
HOLD = b"""
import gc, firmware
firmware.held = bytearray(max(0, gc.mem_free() + gc.mem_alloc() - %d))
gc.collect()
"""


def size(text):
    """Bytes from "65536", "64K" or "1M" (argparse type)."""
    t = text.strip().upper()
    n = {"K": 1024, "M": 1 << 20}.get(t[-1:], 1)
    try:
        return int(t[:-1] if n > 1 else t) * n
    except ValueError:
        import argparse

        raise argparse.ArgumentTypeError("not a size: %r (say 65536, 64K or 1M)" % text)


def merged(base, extra):
    out = dict(base)
    for k, v in extra.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def image(path, cfg=None, root=None, tls=None, extra=None, frozen=False, heap=None):
    """Write a littlefs image of the board's file system to path (the whole
    1408 KB): the .mpy build from root (default build/mpy; frozen: without
    firmware/ and lib/wire/, which would shadow the UF2's frozen modules),
    config.json from cfg (a dict, over BOARD_CONFIG), and the TLS identity
    from tls (a directory with cert.der and key.der) if given, and extra
    ({path: bytes}); heap: bytes of GC heap left to the firmware (boot.py
    holds the rest, as a board with less RAM).  Returns the file count."""
    from littlefs import LittleFS

    root = root or paths.MPY
    fs = LittleFS(block_size=BLOCK_SIZE, block_count=BLOCK_COUNT, prog_size=256, read_size=32,
                  lookahead_size=32)
    n = 0

    def put(dst, data):
        nonlocal n
        parts = dst.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d and not _exists(fs, d):
                fs.mkdir(d)
        with fs.open(dst, "wb") as f:
            f.write(data)
        n += 1

    for dst, full in files(root, frozen):
        with open(full, "rb") as f:
            data = f.read()
        put(dst, data + HOLD % heap if dst == "boot.py" and heap else data)
    if tls:
        for name in ("cert.der", "key.der"):
            with open(os.path.join(tls, name), "rb") as f:
                put("tls/" + name, f.read())
    for dst, data in sorted((extra or {}).items()):  # e.g. the journal of an older image
        put(dst, data)
    put("config.json", json.dumps(merged(BOARD_CONFIG, cfg or {}), indent=1).encode())
    with open(path + ".tmp", "wb") as f:
        f.write(fs.context.buffer)
    os.replace(path + ".tmp", path)
    return n


def files(root, frozen=False):
    """(path on the board, path here) of each file of the build at root,
    in order; frozen: without paths.FIRMWARE_DIRS (firmware/, lib/ and its
    wire/), as `deploy --frozen` leaves them off: they would come first on
    sys.path and shadow the UF2's frozen modules."""
    out = []
    for base, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            dst = os.path.relpath(os.path.join(base, name), root).replace(os.sep, "/")
            if not name.startswith(".") and not (frozen and dst.split("/")[0] in paths.FIRMWARE_DIRS):
                out.append((dst, os.path.join(base, name)))
    return out


def _exists(fs, d):
    try:
        fs.stat(d)
        return True
    except Exception:
        return False


def node():
    exe = os.environ.get("NODE") or shutil.which("node")
    if not exe:
        raise FirmwareError("node (Node.js 18 or newer) not found: the emulator runs in it")
    if not os.path.exists(DRIVER):
        raise FirmwareError("the Pico driver (tools/pico/pico.mjs) is not here: run from a checkout")
    if not os.path.isdir(os.path.join(os.path.dirname(DRIVER), "node_modules", "rp2040js")):
        raise FirmwareError("rp2040js is not installed: npm ci --prefix tools/pico")
    return exe


class Pico(Firmware):
    """An emulated Pico running the firmware from its littlefs image.

    uf2, bootrom: paths (MicroPython rp2 RPI_PICO; the RP2040 boot ROM).
    flash: the littlefs image file, kept across restarts (a new one is made
    from the build and config when it does not exist).  stop_insns,
    stop_ms: cut the power after that many emulated instructions or
    milliseconds (the next start() boots from what the flash held);
    cut_after=(text, n): n instructions after the board's first log line
    holding text.
    """

    def __init__(self, uf2, bootrom, flash=None, config=None, echo=False, stop_insns=None,
                 stop_ms=None, line_baud=None, state_dir=None, cut_after=None):
        super().__init__(root=paths.MPY, config=config if isinstance(config, dict) else None,
                         state_dir=state_dir, echo=echo, line_baud=line_baud)
        self.uf2 = os.path.abspath(uf2)
        self.bootrom = os.path.abspath(bootrom)
        self.flash_img = os.path.abspath(flash or os.path.join(self.state_dir, "pico-flash.img"))
        self.cfg = config if isinstance(config, dict) else {}
        if isinstance(config, str):
            with open(config) as f:
                self.cfg = json.load(f)
        self.stop_insns = stop_insns
        self.stop_ms = stop_ms
        self.cut_after = cut_after
        self.stderr = []  # the driver's own `pico: ...` lines

    def start(self, timeout=120, marks=("READY",)):
        for need in (self.uf2, self.bootrom):
            if not os.path.isfile(need):
                raise FirmwareError("%s does not exist" % need)
        if not os.path.exists(self.flash_img):
            image(self.flash_img, self.cfg)
        self.killed = False
        for name in UARTS:
            if name not in self.modems:
                self.modems[name] = NullModem(self.line_baud)
        cmd = [node(), DRIVER, "--uf2", self.uf2, "--bootrom", self.bootrom, "--flash", self.flash_img,
               "--exit-on-eof"]
        for name, n in UARTS.items():
            cmd += ["--uart%d" % n, self.modems[name].firmware_path]
        for m in marks:
            cmd += ["--mark", m]
        if self.stop_insns:
            cmd += ["--stop-insns", str(int(self.stop_insns))]
        if self.stop_ms:
            cmd += ["--stop-ms", str(self.stop_ms)]
        if self.cut_after:
            cmd += ["--cut-after", "%s:%d" % self.cut_after]
        self.lines = []
        self.listeners = {}
        self.stderr = []
        # its own session: a Ctrl-C in the terminal reaches this launcher only,
        # which passes it to the board over USB (stop()) so the journal is closed
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self._eof = False
        self._thread = threading.Thread(target=self._pump, args=(self.proc,), daemon=True)
        self._thread.start()
        self._err = threading.Thread(target=self._pump_err, daemon=True)
        self._err.start()
        if not self.wait_for("READY", timeout):
            out = self.output()
            code = self.proc.poll()
            self.kill()
            why = ("exited (status %d) before READY" % code if code is not None
                   else "did not get READY within %ss" % timeout)
            raise FirmwareError("emulated Pico %s:\n%s\n%s" % (why, out, "\n".join(self.stderr)))
        return self

    def _pump(self, proc):
        """As Firmware._pump, but each board UART is shown as its pty."""
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            parts = line.split()
            if len(parts) == 5 and parts[0] == "listening" and parts[1] in self.modems:
                line = "listening %s %s %s %s" % (parts[1], parts[2], self.modems[parts[1]].register_path,
                                                  parts[4])
            if line.startswith("listening "):
                p = line.split(None, 3)
                self.listeners[p[1]] = (p[2], p[3])
            if self.echo:
                print(line, flush=True)
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _pump_err(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.stderr.append(line)
            if self.echo:
                print(line, flush=True)

    def mark(self, text, timeout=5):
        """(emulated ms, instructions) when a CDC line first held text (a
        --mark), or None; the driver reports it on stderr, just after the line."""
        end = time.monotonic() + timeout
        while True:
            for ln in self.stderr:
                if ln.startswith("pico: mark %s at " % text):
                    words = ln.split()
                    return float(words[-4]), int(words[-2])
            if time.monotonic() > end:
                return None
            time.sleep(0.05)

    def repl(self, data):
        """Bytes to the board's USB CDC (the REPL): b"\\x03" is Ctrl-C."""
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def stop(self, timeout=30):
        """Ctrl-C on the REPL (the firmware closes its journal and says
        `stopped`), then the driver saves the flash and exits."""
        if self.alive():
            i = len(self.lines)
            try:
                self.repl(b"\x03")
            except OSError:
                pass
            self.wait_for("stopped", timeout, start=i)
            self.signal_or_kill(signal.SIGTERM, timeout)
        if self.proc is not None:
            self._thread.join(2)
        return self.output()

    def kill(self):
        """A power cut: the driver saves the flash as it is, nothing else runs."""
        self.killed = True
        if self.alive():
            self.signal_or_kill(signal.SIGTERM, 10)


def _state_of(img):
    """{path: bytes} of the files under /state in an existing image (the
    journal and keys), to carry over when the image is rebuilt."""
    from littlefs import LittleFS

    with open(img, "rb") as f:
        data = f.read()
    fs = LittleFS(block_size=BLOCK_SIZE, block_count=BLOCK_COUNT, prog_size=256, read_size=32,
                  lookahead_size=32, mount=False)
    fs.context.buffer[:len(data)] = data
    fs.mount()
    out = {}
    try:
        names = fs.listdir("state")
    except Exception:
        return out
    for name in names:
        with fs.open("state/" + name, "rb") as f:
            out["state/" + name] = f.read()
    return out


def prepare(img, cfg, fresh=False, frozen=False, heap=None):
    """The flash image for this build and config (frozen: for a UF2 with
    Understudy frozen in): kept as it is when they are unchanged (the
    board's state lives in it), else rebuilt with the state files of the
    old one carried over (unless fresh)."""
    from understudy import build

    root = build.ensure()
    want = "%s %s %s %s" % (build.digest(), json.dumps(cfg, sort_keys=True), frozen, heap)
    stamp = img + ".build"
    try:
        with open(stamp) as f:
            same = f.read() == want
    except OSError:
        same = False
    if same and os.path.exists(img) and not fresh:
        return "kept"
    keep = _state_of(img) if os.path.exists(img) and not fresh else {}
    image(img, cfg, root=root, extra=keep, frozen=frozen, heap=heap)
    with open(stamp, "w") as f:
        f.write(want)
    return "rebuilt, %d state files kept" % len(keep) if keep else "new"


def soak(p, n, out=print):
    """n Concert payments on the board's serial line, with the repo's own
    register (`understudy ecr concert`): V3 and V2 (E+) in turn, amounts
    whose cents choose approve (x.00, x.50) or decline (x.01) as they come.
    Returns (results, heap= figures logged by the firmware, seconds)."""
    import contextlib
    import io

    from understudy.ecr import cli

    path, baud = p.serial("concert-serial")
    results = {}
    t0 = time.monotonic()
    first = len(p.lines)
    for i in range(n):
        cents = (100 + i) * 100 + (1 if i % 10 == 9 else 50 * (i % 2))
        argv = ["concert", "pay", "%d.%02d" % (cents // 100, cents % 100), "--serial", path,
                "--baud", str(baud), "-q"]
        if i % 2:
            argv.append("--v2")
        buf, err = io.StringIO(), io.StringIO()
        at = len(p.lines)
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
            code = cli.main(argv + ["--trace"])
        results[code] = results.get(code, 0) + 1
        if code not in (0, 1):  # no answer: say what the register and the board saw
            said = err.getvalue().strip().replace("\n", "\n  register: ")
            out("soak: #%d %s: exit %d\n  register: %s\n  board: %s" % (
                i + 1, " ".join(argv[:3] + argv[6:]), code, said, "\n  board: ".join(p.lines[at:])))
        if (i + 1) % 20 == 0:
            out("soak: %d payments, exit codes %s, %.0f s" % (i + 1, results, time.monotonic() - t0))
    heaps = [int(w[5:]) for ln in p.lines[first:] for w in ln.split() if w.startswith("heap=")]
    return results, heaps, time.monotonic() - t0


def main(argv=None, prog="understudy pico"):
    import argparse

    ap = argparse.ArgumentParser(
        prog=prog, description="Run the terminal on an emulated Raspberry Pi Pico (MicroPython rp2 "
        "in rp2040js): its serial personalities on host ptys.",
        epilog="Ctrl-C stops it (the flash image keeps the journal for the next run).")
    ap.add_argument("--uf2", default=os.environ.get("PICO_UF2"), help="MicroPython rp2 RPI_PICO "
                    "firmware (.uf2), built by you ($PICO_UF2)")
    ap.add_argument("--bootrom", default=os.environ.get("PICO_BOOTROM"),
                    help="the RP2040 boot ROM, 16384 bytes ($PICO_BOOTROM)")
    ap.add_argument("--flash", default=os.path.join(paths.STATE, "pico-flash.img"),
                    help="the board's file system image, kept across runs (default: %(default)s)")
    ap.add_argument("--config", metavar="PATH", help="config JSON (over the Pico's: serial only)")
    ap.add_argument("--fresh", action="store_true", help="a new image: forget the journal")
    ap.add_argument("--frozen", action="store_true", help="the UF2 was built with Understudy frozen "
                    "in (manifest.py): leave firmware/ and lib/wire/ off the flash so it runs from "
                    "the image (docs/BOARDS.md)")
    ap.add_argument("--heap", type=size, metavar="SIZE", help="leave the firmware this much of "
                    "the GC heap (e.g. 64K; boot.py holds the rest), as -X heapsize does on the unix "
                    "port: the Pico's is 240K")
    ap.add_argument("--soak", type=int, metavar="N", help="make N Concert payments on the serial "
                    "line, print the heap figures, stop")
    a = ap.parse_args(argv)
    if not a.uf2 or not a.bootrom:
        ap.error("give --uf2 and --bootrom (or PICO_UF2=... PICO_BOOTROM=...)")
    if a.frozen and os.path.isfile(a.uf2) and not uf2.frozen(a.uf2):
        ap.error("--frozen, but %s has no Understudy frozen in: build it with FROZEN_MANIFEST naming "
                 "a manifest that includes manifest.py (docs/BOARDS.md), or leave --frozen off" % a.uf2)
    cfg = {"log": {"heap": True}}
    if a.config:
        with open(a.config) as f:
            cfg = merged(cfg, json.load(f))
    os.makedirs(os.path.dirname(os.path.abspath(a.flash)), exist_ok=True)
    print("pico: flash image %s: %s%s%s" % (
        a.flash, prepare(a.flash, cfg, a.fresh, a.frozen, a.heap),
        " (firmware frozen in the UF2)" if a.frozen else "",
        ", a heap of %d bytes" % a.heap if a.heap else ""), flush=True)
    p = Pico(a.uf2, a.bootrom, flash=a.flash, config=cfg, echo=not a.soak)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        p.start(marks=("READY",))
        ready = p.mark("READY") or (float("nan"), 0)
        alloc = [ln for ln in p.lines if ln.startswith("app heap alloc=")]
        print("pico: READY at %.1f ms emulated (%d instructions); %s" % (
            ready[0], ready[1], alloc[-1] if alloc else "no heap line (log.heap off)"), flush=True)
        if a.soak is not None:
            results, heaps, secs = soak(p, a.soak)
            if a.soak:
                print("pico: %d payments in %.0f s, exit codes %s" % (a.soak, secs, results))
            if heaps:
                print("pico: heap= after #1 %d, #10 %s, last %d, min %d, max %d" % (
                    heaps[0], heaps[9] if len(heaps) > 9 else "-", heaps[-1], min(heaps), max(heaps)))
            problems = p.problems()
            if problems:
                print("pico: problems:\n  " + "\n  ".join(problems))
            return 1 if problems else 0
        while p.alive():
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    except FirmwareError as e:
        print("%s: %s" % (prog, e))
        return 1
    finally:
        p.stop()
        if a.soak is not None:  # log.heap: the firmware's mem_info after Ctrl-C
            for ln in p.lines:
                if ln.startswith(("GC: total", " No. of", "journal replayed")):
                    print("pico: board said: " + ln.strip(), flush=True)
        tail = [ln for ln in p.stderr if ln.startswith("pico: stop")]
        if tail and not p.echo:
            print(tail[-1], flush=True)
        p.cleanup()
    return 0
