"""`understudy deploy` (and `make deploy PORT=...`): the firmware onto a board.

Steps, each reported: check the config with the firmware's own rules; build
the .mpy tree (mpy-cross); find the board and ask its MicroPython which .mpy
it reads (sys.implementation._mpy); copy the build, config.json and the TLS
identity with mpremote (with --frozen, only main.py, boot.py, config and TLS:
the modules are in the board's MicroPython already); reset; read the REPL
until the terminal says READY (or that Wi-Fi did not come up).  mpremote is always used with `resume`: it
interrupts the running terminal (Ctrl-C) instead of soft-resetting the board.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from understudy import build, paths, tls
from understudy.testkit import PERSONALITIES

OK, FAILED, USAGE = 0, 1, 2


def say(msg):
    print("deploy: " + msg, flush=True)


class Stop(Exception):
    """Deployment stopped; the message says why and what to do."""


def mpremote_exe():
    here = os.path.join(os.path.dirname(sys.executable), "mpremote")
    return here if os.path.exists(here) else shutil.which("mpremote") or "mpremote"


def mpremote(port, *args, timeout=120):
    cmd = [mpremote_exe(), "connect", port, "resume"] + list(args)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise Stop("mpremote did not finish within %d s (%s): is the board busy? unplug it, plug it "
                   "back, try again" % (timeout, " ".join(args[:2])))
    if r.returncode:
        tail = (r.stdout + r.stderr).strip().splitlines()[-3:]
        raise Stop("mpremote %s failed: %s" % (" ".join(args[:2]), " / ".join(tail)))
    return r.stdout


def mpy_header(root):
    """(version, sub-version, arch) of the build's .mpy files (byte 2 is
    arch << 2 | sub-version; both 0 in a build without native code)."""
    with open(os.path.join(root, "firmware", "app.mpy"), "rb") as f:
        h = f.read(4)
    return h[1], h[2] & 3, h[2] >> 2


def compatible(board_mpy, build_ver):
    """None if a board reporting sys.implementation._mpy = board_mpy loads
    .mpy files of build_ver (version, sub-version, arch); else why not.
    MicroPython's loader wants the same major version, and the same
    sub-version and arch only for native code, which this build has none of."""
    if board_mpy is None or board_mpy < 0:
        return "its MicroPython is older than 1.12 (no sys.implementation._mpy)"
    ver, sub, arch = board_mpy & 0xFF, (board_mpy >> 8) & 3, (board_mpy >> 10) & 15
    need_ver, need_sub, need_arch = build_ver
    if ver != need_ver:
        return "it reads .mpy v%d, this build is v%d" % (ver, need_ver)
    if need_arch and (sub, arch) != (need_sub, need_arch):
        return "its native code is v%d.%d arch %d, this build's v%d.%d arch %d" % (
            ver, sub, arch, need_ver, need_sub, need_arch)
    return None


def load_config(a):
    cfg = {}
    if a.config:
        try:
            with open(a.config) as f:
                cfg = json.load(f)
        except (OSError, ValueError) as e:
            raise Stop("cannot read %s: %s" % (a.config, e))
    if a.ssid is not None:
        cfg.setdefault("wifi", {})["ssid"] = a.ssid
    if a.password is not None:
        cfg.setdefault("wifi", {})["password"] = a.password
    for item in a.set:
        key, eq, value = item.partition("=")
        if not eq:
            raise Stop("--set %r: write KEY=VALUE, e.g. --set listeners.concert-ip.port=8888" % item)
        try:
            v = json.loads(value)
        except ValueError:
            v = value
        d = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            d = d.setdefault(p, {})
        d[parts[-1]] = v
    from understudy.testkit import firmware_config

    merged, problems = firmware_config().merge(cfg)
    if problems:
        raise Stop("the terminal would not take this config:\n  " + "\n  ".join(problems))
    if not (cfg.get("wifi") or {}).get("ssid"):
        say("note: no wifi.ssid: the TCP personalities will not be reachable (--ssid NAME)")
    web = cfg.setdefault("web", {})
    if web.get("enabled", True) and not web.get("token"):
        # without one, only the board itself (loopback) could change its state
        web["token"] = os.urandom(12).hex()
        say("the web page's control token (web.token, kept in the board's config.json): %s"
            % web["token"])
    return cfg, merged


# The heap a board needs from .mpy for the personalities a config enables,
# all used at once: the smallest heap in which load.py's mixed use of just
# those fit 10 runs of 10 on the 32-bit unix port, in steps of 8 or 16K
# (docs/MEMORY.md, "What fits a board"), plus 8 KB for what a board port's
# own buffers take (7 KB more on the emulated rp2 than on the 32-bit unix
# port).  A set not measured takes the figure of the smallest measured set
# that holds it.
NEEDS = ((("Concert", "web"), 104), (("P3", "web"), 120), (("Synqpay", "web"), 120),
         (("Concert", "P3", "web"), 136), (("Concert", "Synqpay", "web"), 136),
         (("P3", "Synqpay", "web"), 152), (("Concert", "P3", "Synqpay"), 136),
         (("Concert", "P3", "Synqpay", "web"), 168))
# On rp2 mbedTLS allocates from MicroPython's heap: a TLS link about 24 KB,
# and 6 to 8 KB more while it shakes hands (an estimate: docs/MEMORY.md).
RP2_TLS = 32
# An ESP32 without PSRAM grows MicroPython's heap once, to 111,936 bytes, and
# leaves the rest of its RAM to Wi-Fi and TLS (MicroPython PR 13219); the
# gc.mem_free() of its 1.23+ firmware counts that rest too (PR 12366).
ESP32_HEAP = 111936


def in_use(merged):
    """The names of the personalities (and "web") a merged config enables."""
    ls = merged["listeners"]
    out = [name for name, listeners in PERSONALITIES if any(ls[n]["enabled"] for n in listeners)]
    return out + ["web"] if merged["web"]["enabled"] else out


def heap_need(names):
    """KB of heap a board needs from .mpy to run `names` at once."""
    return min(kb for have, kb in NEEDS if set(names) <= set(have))


def heap_warning(platform, heap, merged):
    """None, or why this board's heap is short for what the config enables."""
    if platform == "esp32" and heap < 1 << 20:  # PSRAM: megabytes, and no Wi-Fi share to keep
        heap = min(heap, ESP32_HEAP)
    names = in_use(merged)
    need = heap_need(names)
    on = [n for _, lns in PERSONALITIES for n in lns if merged["listeners"][n]["enabled"]]
    if platform == "rp2" and "synqpay-tls" in on:
        need += RP2_TLS
    if heap >= need * 1024:
        return None
    if "web" in names:
        names[-1] = "the web page"
    what = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)
    return ("this config enables %s: used at once, from .mpy, they need about %d KB of heap, and "
            "this board has %d KB (docs/MEMORY.md, \"What fits a board\").  Turn off the listeners "
            "your registers do not use (--set listeners.NAME.enabled=false; on now: %s; the web page: "
            "--set web.enabled=false), or freeze the firmware into the board's MicroPython "
            "(docs/BOARDS.md, --frozen)" % (what, need, heap // 1024, ", ".join(on)))


def find_port(port):
    if "://" in port or os.path.exists(port):
        return
    try:
        from serial.tools import list_ports

        found = [p.device for p in list_ports.comports()]
    except Exception:
        found = []
    hint = ("serial ports here: " + ", ".join(found)) if found else "no serial port is visible"
    raise Stop("no device at %s: is the board plugged in (a USB data cable)?  %s" % (port, hint))


def watch(port, wait):
    """Read the board's REPL after the reset: (ready, wifi down line or None, lines)."""
    import serial

    lines, down, ready = [], None, False
    deadline = time.monotonic() + wait
    try:
        s = serial.Serial(port, 115200, timeout=0.2)
    except (serial.SerialException, OSError) as e:
        raise Stop("cannot open %s after the reset: %s" % (port, e))
    buf = b""
    with s:
        while time.monotonic() < deadline and not ready:
            buf += s.read(256)
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                line = raw.decode("utf-8", "replace").strip("\r")
                lines.append(line)
                print("  board: " + line, flush=True)
                if line.startswith("wifi down"):
                    down = line
                if line == "READY":
                    ready = True
    return ready, down, lines


# appended to the probe with --frozen: can the board import the firmware from
# its frozen modules alone?
FROZEN_PROBE = """
p = sys.path[:]
sys.path[:] = ['.frozen']
try:
    import firmware.app
    print('FROZEN', 1)
except ImportError:
    print('FROZEN', 0)
sys.path[:] = p
"""
REMOVE_TREES = """
import os
def rm(p):
    try:
        if os.stat(p)[0] & 0x4000:
            for n in os.listdir(p):
                rm(p + '/' + n)
            os.rmdir(p)
        else:
            os.remove(p)
    except OSError:
        pass
rm('firmware')
rm('lib/wire')
"""


def put_micropython(a):
    """--uf2: MicroPython onto a Pico in BOOTSEL mode, then wait for its
    serial port to come back."""
    from understudy import uf2

    try:
        blocks, size = uf2.check(a.uf2)
        drive = uf2.find_drive(a.drive)
    except uf2.UF2Error as e:
        raise Stop(str(e))
    say("%s: %d UF2 blocks, %.0f KB for the RP2040's flash; onto %s" % (
        os.path.basename(a.uf2), blocks, size / 1024.0, drive))
    uf2.flash(a.uf2, drive, say)
    say("the Pico restarts into MicroPython; waiting for %s..." % a.port)
    due = time.monotonic() + a.wait
    while "://" not in a.port and not os.path.exists(a.port):
        if time.monotonic() > due:
            raise Stop("%s did not appear within %g s after flashing: is it the Pico's port "
                       "(/dev/ttyACM0 on Linux)?" % (a.port, a.wait))
        time.sleep(0.2)


def left_off(root, dirs, platform, bluetooth):
    """The files under dirs of the build in root that stay off this board
    (build.on_board)."""
    out = []
    for d in dirs:
        for base, _, files in os.walk(os.path.join(root, d)):
            for f in files:
                rel = os.path.relpath(os.path.join(base, f), root)
                if not build.on_board(rel, platform, bluetooth):
                    out.append(rel)
    return sorted(out)


def wants_bluetooth(a, cfg):
    """--bluetooth, or a config that enables a Bluetooth listener."""
    ls = cfg.get("listeners") or {}
    return a.bluetooth or any((ls.get(n) or {}).get("enabled") for n in ("concert-bt", "concert-ble"))


def deploy(a):
    cfg, merged = load_config(a)
    say("config checked (%d top-level keys)" % len(cfg))
    root = build.ensure()
    n, size = build.stats(root)
    ver = mpy_header(root)
    say("built %d modules, %s bytes of .mpy v%d (bytecode only)" % (n, "{:,}".format(size), ver[0]))
    if a.uf2:
        put_micropython(a)
    find_port(a.port)
    say("asking the board on %s..." % a.port)
    probe = ("import sys, gc; gc.collect(); print('HEAP', gc.mem_free() + gc.mem_alloc()); "
             "print('BOARD', sys.platform, getattr(sys.implementation, '_mpy', -1), sys.version)")
    if a.frozen:
        probe += FROZEN_PROBE
    try:
        out = mpremote(a.port, "exec", probe, timeout=30)
    except Stop as e:
        raise Stop("no MicroPython answers on %s (%s).  Is it the board's port, and is MicroPython "
                   "flashed on it?" % (a.port, e))
    words = [ln for ln in out.splitlines() if ln.startswith("BOARD ")]
    if not words:
        raise Stop("the board on %s did not answer the probe: %r" % (a.port, out[-200:]))
    _, platform, mpy, version = words[0].split(" ", 3)
    why = compatible(int(mpy), ver)
    if why and not a.frozen:  # frozen: no .mpy goes to the board
        raise Stop("the board's MicroPython (%s, %s) cannot load this build: %s.  Flash MicroPython "
                   "1.23 or newer (micropython.org/download), then deploy again" % (version, platform, why))
    heap = [int(ln.split()[1]) for ln in out.splitlines() if ln.startswith("HEAP ")]
    say("board: %s, %s, heap %s, .mpy v%d%s" % (
        platform, version.split(";")[-1].strip(), "%d KB" % (heap[0] // 1024) if heap else "?",
        int(mpy) & 255, "" if why else ": compatible"))
    short = not a.frozen and heap and heap_warning(platform, heap[0], merged)
    if short:
        say("warning: " + short)
    if a.frozen:
        if "FROZEN 1" not in out:
            raise Stop("--frozen, but the board's MicroPython has no Understudy frozen in (`import "
                       "firmware.app` fails from .frozen).  Build its firmware with manifest.py "
                       "(README, \"Freezing the firmware\"), or deploy without --frozen")
        say("the firmware is frozen into the board's MicroPython: removing firmware/ and lib/wire/ "
            "from its flash (they would shadow it)")
        mpremote(a.port, "exec", REMOVE_TREES)
    with tempfile.TemporaryDirectory() as tmp:
        cfg_file = os.path.join(tmp, "config.json")
        with open(cfg_file, "w") as f:
            json.dump(cfg, f, indent=1)
        dirs = () if a.frozen else paths.FIRMWARE_DIRS
        say("copying the firmware (%s)..." % ", ".join(dirs + paths.FIRMWARE_FILES))
        args = []  # every destination named: `cp -r dir :` would spill dir's contents at the root
        for d in dirs:
            args += ["+", "fs", "cp", "-r", os.path.join(root, d), ":" + d]
        for f in paths.FIRMWARE_FILES:
            args += ["+", "fs", "cp", os.path.join(root, f), ":" + f]
        bt = wants_bluetooth(a, cfg)
        if not bt:
            say("the Bluetooth listeners are off: their modules stay on the PC (--bluetooth)")
        for f in left_off(root, dirs, platform, bt):  # the unix port's, the other board's...
            args += ["+", "fs", "rm", ":" + f]
        args = args[1:]
        mpremote(a.port, *args, timeout=600)
        page = paths.PAGE + ".gz"
        say("copying the web page (%s, %d bytes)" % (page, os.path.getsize(os.path.join(root, page))))
        mpremote(a.port, "exec", "import os\ntry:\n os.mkdir('www')\nexcept OSError:\n pass")
        mpremote(a.port, "fs", "cp", os.path.join(root, page), ":" + page)
        say("copying config.json")
        mpremote(a.port, "fs", "cp", cfg_file, ":config.json")
    if not a.no_tls:
        tls.make(paths.TLS, a.tls_san, force=bool(a.tls_san))
        say("copying the TLS certificate and key to :tls/")
        mpremote(a.port, "exec", "import os\ntry:\n os.mkdir('tls')\nexcept OSError:\n pass")
        mpremote(a.port, "fs", "cp", os.path.join(paths.TLS, "cert.der"), os.path.join(paths.TLS, "key.der"),
                 ":tls/")
    if a.no_reset:
        say("done (not reset: --no-reset)")
        return OK
    say("resetting the board; its log follows")
    mpremote(a.port, "reset", timeout=30)
    ready, down, lines = watch(a.port, a.wait)
    if not ready:
        raise Stop("the terminal did not say READY within %g s (its log is above; `mpremote connect "
                   "%s` shows it live)" % (a.wait, a.port))
    if down:
        say("the terminal is READY but Wi-Fi did not come up (%s).  Check wifi.ssid and "
            "wifi.password (--ssid, --password); it keeps retrying" % down)
        return FAILED
    up = [ln for ln in lines if ln.startswith("wifi up")]
    say("READY" + (" at %s" % up[-1].split()[-1] if up else ""))
    return OK


def main(argv=None, prog="understudy deploy"):
    p = argparse.ArgumentParser(
        prog=prog, description="Compile the firmware, copy it with its config and TLS identity to a "
        "board with mpremote, reset it and wait for READY.",
        epilog="Exit status: 0 READY, 1 failed (or READY without Wi-Fi), 2 usage.")
    p.add_argument("--port", required=True, help="the board's serial port, e.g. /dev/ttyUSB0 "
                   "(ESP32) or /dev/ttyACM0 (Pico W)")
    p.add_argument("--config", help="a config.json to start from (default: built-in defaults)")
    p.add_argument("--ssid", help="Wi-Fi network (wifi.ssid)")
    p.add_argument("--password", help="Wi-Fi password (wifi.password)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config key, e.g. terminal_id=TILL-01, listeners.concert-ip.port=8888 "
                   "(repeatable; VALUE is JSON, or text)")
    p.add_argument("--tls-san", action="append", default=[], metavar="IP",
                   help="make a new TLS certificate naming this address (the board's IP)")
    p.add_argument("--no-tls", action="store_true", help="do not copy the TLS identity")
    p.add_argument("--no-reset", action="store_true", help="copy only; do not reset the board")
    p.add_argument("--bluetooth", action="store_true",
                   help="copy the Bluetooth listeners' modules (concert-bt, concert-ble: 5.4 KB) "
                        "though the config enables neither (a config that enables one gets them "
                        "anyway), to enable one later without deploying again")
    p.add_argument("--frozen", action="store_true",
                   help="the board's MicroPython was built with Understudy frozen in (manifest.py): "
                   "copy only main.py, boot.py, config and TLS, and remove an older firmware/ from "
                   "its flash")
    p.add_argument("--uf2", metavar="FILE",
                   help="first put this MicroPython firmware on a Pico in BOOTSEL mode (hold "
                   "BOOTSEL while plugging it in; it mounts as a drive named RPI-RP2)")
    p.add_argument("--drive", metavar="DIR",
                   help="with --uf2: where the RPI-RP2 drive is mounted (default: found under "
                   "/media, /run/media or /Volumes)")
    p.add_argument("--wait", type=float, default=60.0,
                   help="seconds to wait for READY after the reset, and for the port after --uf2 "
                   "(default %(default)s)")
    a = p.parse_args(argv)
    try:
        return deploy(a)
    except Stop as e:
        sys.stderr.write("deploy stopped: %s\n" % e)
        return FAILED
