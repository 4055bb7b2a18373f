"""The unix port on a PC: loopback networking, files in the state dir.

Set by the host launcher (tools/run.py) through the environment:
UNDERSTUDY_CONFIG (config file), UNDERSTUDY_STATE (state dir: journal and
other "flash" files), UNDERSTUDY_FLASH ("<image>:<KB>": keep the state in a
littlefs image instead, like a board; see unix_flash.py), UNDERSTUDY_TLS
(where cert.der and key.der are), UNDERSTUDY_SERIAL (the ptys the launcher
made: `name=ours,register's name=...`, see uart()), UNDERSTUDY_CLOCK (freeze
the clock at these Unix seconds, for reproducible receipts in tests),
UNDERSTUDY_STOP=stdin (stop as Ctrl-C does when stdin ends: how the
launcher stops the firmware, see setup()).
"""
import os

from firmware import clock

NAME = "unix"
DEFAULT_HOST = "127.0.0.1"
CONFIG_PATH = os.getenv("UNDERSTUDY_CONFIG") or "config.json"
STATE_DIR = os.getenv("UNDERSTUDY_STATE") or "state"
_FLASH = os.getenv("UNDERSTUDY_FLASH")
if _FLASH:
    from firmware.board import unix_flash

    STATE_DIR = unix_flash.mount(_FLASH)
TLS_DIR = os.getenv("UNDERSTUDY_TLS") or "build/tls"
# a record written to a host file is the kernel's at once and survives the
# process being killed; flushing (an fsync) only adds surviving the PC losing
# power (journal.fsync).  littlefs keeps records cached until a flush.
JOURNAL_FLUSH = bool(_FLASH)

_c = os.getenv("UNDERSTUDY_CLOCK")
if _c:
    clock.fixed = int(_c)


def stopped():
    if _FLASH:
        unix_flash.report()


async def network_up(cfg):
    return DEFAULT_HOST


def address():
    return DEFAULT_HOST


def led(on):
    pass


def setup(cfg):
    if os.getenv("UNDERSTUDY_STOP") == "stdin":
        import asyncio

        asyncio.create_task(_stop_at_eof())


async def _stop_at_eof():
    """Stop (KeyboardInterrupt, as Ctrl-C) once stdin is readable: the
    launcher holds its other end, and closes it to stop the firmware, or
    dies.  A SIGINT would do, but the unix port raises its KeyboardInterrupt
    wherever the interpreter is, and one that lands inside a garbage
    collection leaves the heap locked for good (every later allocation:
    "heap is locked")."""
    import sys
    from asyncio import core  # type: ignore[attr-defined]

    yield core._io_queue.queue_read(sys.stdin)
    raise KeyboardInterrupt


# Linux termios values the port's termios module does not name
_BAUD = {1200: 0o11, 2400: 0o13, 4800: 0o14, 9600: 0o15, 19200: 0o16, 38400: 0o17,
         57600: 0o10001, 115200: 0o10002}


class _Pin:
    """A GPIO on a PC: the file <UNDERSTUDY_PINS>/gpio<n> holds 0 or 1, so a
    host test's fake device sees what the firmware drives and sets what it
    reads (the Bluetooth module's KEY and STATE pins)."""

    def __init__(self, n):
        self.path = "%s/gpio%d" % (os.getenv("UNDERSTUDY_PINS") or STATE_DIR, n)

    def value(self, v=None):
        if v is not None:
            with open(self.path, "w") as f:
                f.write("1" if v else "0")
            return None
        try:
            with open(self.path) as f:
                return 1 if f.read(1) == "1" else 0
        except OSError:
            return 0


def pin(n, out):
    return _Pin(n)


def uart(name, lc):
    """The serial line of listener `name`: lc["device"] (a tty, e.g. a USB
    adapter), else the pty pair the launcher made for it; shown is the path
    the register opens.  Raw, non-blocking (VMIN=0, VTIME=0: the port has
    no fcntl), with the configured speed, data bits, parity and stop bits."""
    import termios

    path = shown = lc["device"]
    if not path:
        for item in (os.getenv("UNDERSTUDY_SERIAL") or "").split():
            k, _, v = item.partition("=")
            if k == name:
                path, _, shown = v.partition(",")
    if not path:
        raise OSError("no serial device: set listeners.%s.device" % name)
    f = open(path, "r+b", buffering=0)
    fd = f.fileno()
    termios.setraw(fd)
    a = termios.tcgetattr(fd)
    own = a[2]
    a[2] = (a[2] & ~0o1560) | (0o40 if lc["bits"] == 7 else 0o60)  # CSIZE, CSTOPB, PARENB, PARODD
    a[2] |= (0o100 if lc["stop"] == 2 else 0) | {"none": 0, "even": 0o400, "odd": 0o1400}[lc["parity"]]
    a[4] = a[5] = _BAUD[lc["baud"]]
    a[6][6] = a[6][5] = 0  # VMIN, VTIME
    try:
        termios.tcsetattr(fd, termios.TCSANOW, a)
    except OSError as e:
        # a pty keeps 8 bits, no parity: Linux ignores another format the
        # first time and refuses it (EINVAL) once the line has been set
        # (a restart, a config change); its bytes carry 7E1 text all the same
        if e.args[0] != 22:
            raise
        a[2] = (a[2] & ~0o1560) | (own & 0o1560)
        termios.tcsetattr(fd, termios.TCSANOW, a)
    return f, shown


def power_cut(ms):
    """The power_cut outcome on a PC: the firmware exits at once with status
    75 (EX_TEMPFAIL; launch.POWER_CUT), through every task: SystemExit is no
    Exception, so no handler catches it and the firmware neither answers nor
    closes anything itself.  Its launcher (tools/understudy/launch.py) read
    the `power-cut ... off <ms> ms` line just printed and starts it again on
    the same state dir after that long.  (75 is written out: one more global
    here grows this module's table by 448 bytes of heap, docs/MEMORY.md.)"""
    raise SystemExit(75)
