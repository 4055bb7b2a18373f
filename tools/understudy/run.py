#!/usr/bin/env python3
"""`understudy run` (and `make run`): the terminal on this PC, in the MicroPython unix port.

It runs the mpy-cross build (build/mpy, what boards run) with a heap that
never limits a user on a PC (boards have far less: their budgets are
checked by the tests and `understudy bench`), prints where every
personality listens, and stops on Ctrl-C.
"""
import argparse
import os
import signal
import sys
import time

from understudy import INSTALLED, build, fleet, paths, tls
from understudy.launch import Firmware, FirmwareError

DEFAULT_HEAP = "2M"  # a PC is not a board: docs/MEMORY.md has the board budgets


def parse(argv, prog):
    p = argparse.ArgumentParser(
        prog=prog,
        description="Start the Understudy payment terminal on the MicroPython unix port.",
        epilog="Ctrl-C stops it.  Edit the config file while it runs: listener changes "
        "apply within config_watch_s seconds, without a restart.",
    )
    p.add_argument("--config", metavar="PATH",
                   help="config JSON (default: ./config.json if it exists, else built-in defaults)")
    p.add_argument("--heap", metavar="SIZE",
                   help="MicroPython heap, as -X heapsize takes it (default %s, with --count %s; "
                   "a board has about 100-170K: try --heap 96K to see how it copes)"
                   % (DEFAULT_HEAP, fleet.HEAP))
    p.add_argument("--state-dir", metavar="DIR", default=paths.STATE,
                   help="where the journal and other flash files live (default: %s)"
                   % os.path.relpath(paths.STATE))
    p.add_argument("--flash", metavar="SIZE",
                   help="keep the state in a littlefs image of this size (e.g. 64K) inside "
                   "the state dir, as a board does (default: plain files)")
    p.add_argument("--source", action="store_true",
                   help="run the .py sources instead of build/mpy (needs --heap 512K, which the "
                   "default has: compiling on the fly costs RAM; 256K runs out with every "
                   "personality in use)")
    f = p.add_argument_group("a fleet of terminals (docs/FLEET.md)")
    f.add_argument("--count", metavar="N", type=int,
                   help="start N terminals, UST00001 to UST<N>, each with its own ports, state dir "
                   "(<state-dir>/UST00001...) and ptys; every line is printed with its terminal's name")
    f.add_argument("--base-port", metavar="PORT", type=int, default=fleet.BASE,
                   help="terminal i listens on PORT + i * stride + 0 concert-ip, 1 p3-tcp, 2 p3-ws, "
                   "3 synqpay, 4 synqpay-tls, 5 web (default %d)" % fleet.BASE)
    f.add_argument("--stride", metavar="K", type=int, default=fleet.STRIDE,
                   help="ports between two terminals (default %d)" % fleet.STRIDE)
    f.add_argument("--json", metavar="PATH",
                   help="where to describe the fleet once it is READY (default <state-dir>/fleet.json)")
    a = p.parse_args(argv)
    if a.count is None and (a.json or a.base_port != fleet.BASE or a.stride != fleet.STRIDE):
        p.error("--base-port, --stride and --json describe a fleet: give --count N")
    if a.count is not None and a.count < 1:
        p.error("--count must be at least 1")
    return a


def main(argv=None, prog="understudy run"):
    a = parse(argv, prog)
    config = a.config
    default = "config.json" if INSTALLED else os.path.join(paths.ROOT, "config.json")
    if config is None and os.path.exists(default):
        config = default
    if config and not os.path.exists(config):
        sys.stderr.write("%s: config file %s does not exist\n" % (prog, config))
        return 2
    if not a.source:
        build.ensure()  # `make run` has built it; installed, the first run builds it
    tls.make(paths.TLS)
    root = paths.SOURCE if a.source else paths.MPY
    if a.count is not None:
        return fleet.main(a, prog, root, config)
    fw = Firmware(root=root, heap=a.heap or DEFAULT_HEAP, config=config, state_dir=a.state_dir, echo=True,
                  flash=a.flash)
    asked = []
    # Ctrl-C (or a signal sent to this launcher) is passed on as the
    # launcher's ask_stop(): the firmware runs in a session of its own
    signal.signal(signal.SIGINT, lambda *_: asked.append(time.monotonic()))
    signal.signal(signal.SIGTERM, lambda *_: asked.append(time.monotonic()))
    try:
        fw.start(timeout=30)
    except FirmwareError as e:
        sys.stderr.write("%s: %s\n" % (prog, e))
        return 1
    sent = False
    while fw.alive():  # and while it is off for a power cut: the launcher boots it again
        time.sleep(0.1)
        if asked:
            fw.halt()  # stopping: no boot after a power cut now
        if asked and not sent:
            fw.ask_stop()
            sent = True
        if asked and time.monotonic() - asked[0] > 5:
            fw.kill()
    code = fw.wait()
    fw.cleanup()
    if code not in (0, -signal.SIGINT):
        sys.stderr.write("%s: the firmware exited with status %d (output above)\n" % (prog, code))
        return 1
    return 0
