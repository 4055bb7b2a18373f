"""`understudy run --count N`: a fleet of N terminals on this PC.

Terminal i (0-based) is named UST%05d % (i + 1), keeps its flash in
<state-dir>/<name>/ and listens on base + i * stride + the offset of each
TCP listener (OFFSETS; the serial personalities get ptys of their own).
Every output line of a terminal is printed with its name first, so each
`listening ...` line says which terminal it is; once all are READY the
fleet is described in a JSON file for scripts (--json).  A terminal that
dies is reported with its last lines and the others keep serving; Ctrl-C
stops them all.  docs/FLEET.md.
"""
import json
import os
import signal
import socket
import sys
import threading
import time

from understudy.launch import Firmware, FirmwareError
from understudy.testkit import merge

BASE = 18000
STRIDE = 10
# a terminal's TCP listeners, at base + i * stride + offset
OFFSETS = {"concert-ip": 0, "p3-tcp": 1, "p3-ws": 2, "synqpay": 3, "synqpay-tls": 4, "web": 5}
HEAP = "256K"  # a board's budget, as the pytest fixture: a fleet is many small terminals
LAST_LINES = 10


def name(i):
    return "UST%05d" % (i + 1)


def ports(i, base=BASE, stride=STRIDE):
    """{listener: port} of terminal i."""
    return {k: base + i * stride + off for k, off in OFFSETS.items()}


def in_use(port, host=""):
    """True if a listener could not bind this port (as the firmware binds)."""
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return False
    except OSError:
        return True
    finally:
        s.close()


def busy_port(count, base, stride):
    """(port, terminal name, listener) of the first port of the layout in use, or None."""
    for i in range(count):
        for k, p in ports(i, base, stride).items():
            if in_use(p):
                return p, name(i), k
    return None


def free_base(count, stride, avoid):
    """A base whose whole range is free (for the error message), or None."""
    span = count * stride
    for base in range(BASE, 60000 - span, 1000):
        if abs(base - avoid) >= span and busy_port(count, base, stride) is None:
            return base
    return None


def layout_error(count, base, stride):
    """The message for a layout that cannot be used, or None."""
    if stride < len(OFFSETS):
        return "--stride must be at least %d (each terminal has %d TCP listeners)" % (
            len(OFFSETS), len(OFFSETS))
    last = base + (count - 1) * stride + max(OFFSETS.values())
    if base < 1024 or last > 65535:
        return "ports %d-%d do not fit in 1024-65535: choose another --base-port" % (base, last)
    hit = busy_port(count, base, stride)
    if hit is None:
        return None
    port, who, what = hit
    other = free_base(count, stride, base)
    hint = (" (for example --base-port %d, whose ports are free now)" % other) if other else ""
    return ("port %d is in use (%s's %s): the fleet needs ports %d-%d (--base-port %d, --stride %d); "
            "stop what holds it or choose another base with --base-port%s"
            % (port, who, what, base, last, base, stride, hint))


class Fleet:
    """N terminals: start() boots them in parallel, describe() is the JSON,
    poll() reports the ones that died, stop() stops them all."""

    def __init__(self, count, root, state_dir, base=BASE, stride=STRIDE, heap=HEAP, config=None,
                 echo=None, flash=None):
        self.count, self.base, self.stride, self.heap = count, base, stride, heap
        self.state_dir = os.path.abspath(state_dir)
        self.terminals = []  # [(name, Firmware)]
        self.dead = {}  # name -> exit status
        self.stopping = False
        for i in range(count):
            tid = name(i)
            sd = os.path.join(self.state_dir, tid)
            os.makedirs(sd, exist_ok=True)
            own = os.path.join(sd, "config.json")
            cfg = merge(config or {}, _read(own))  # changes made through its API are kept
            cfg = merge(cfg, {"terminal_id": tid, "synqpay": {"serial_number": tid},
                              "listeners": {k: {"port": p} for k, p in ports(i, base, stride).items()
                                            if k != "web"},
                              "web": {"port": ports(i, base, stride)["web"]}})
            out = None
            if echo is not None:
                out = _prefixed(echo, tid)
            fw = Firmware(root=root, heap=heap, config=cfg, state_dir=sd, echo=out, flash=flash,
                          modem_probe_s=0.1)
            self.terminals.append((tid, fw))

    def start(self, timeout=60):
        """Boot every terminal at once; FirmwareError naming the first that failed."""
        errors = {}

        def boot(tid, fw):
            try:
                fw.start(timeout)
            except Exception as e:  # reported below, with the terminal's name
                errors[tid] = e

        threads = [threading.Thread(target=boot, args=t) for t in self.terminals]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            tid = sorted(errors)[0]
            self.stop()
            raise FirmwareError("terminal %s: %s" % (tid, errors[tid]))
        return self

    def describe(self):
        """The fleet for scripts: every terminal's name, pid, state dir and listeners."""
        out = []
        for i, (tid, fw) in enumerate(self.terminals):
            ls = {}
            for lname, (kind, where) in sorted(fw.listeners.items()):
                if kind == "serial":
                    dev, baud = where.rsplit(" ", 1)
                    ls[lname] = {"kind": kind, "device": dev, "baud": int(baud)}
                else:
                    host, port = where.rsplit(":", 1)
                    ls[lname] = {"kind": kind, "host": host, "port": int(port)}
            out.append({"id": tid, "index": i, "pid": fw.proc.pid if fw.proc else None,
                        "alive": tid not in self.dead, "state_dir": fw.state_dir,
                        "web": "http://127.0.0.1:%d" % ports(i, self.base, self.stride)["web"],
                        "listeners": ls})
        return {"count": self.count, "base_port": self.base, "stride": self.stride,
                "offsets": OFFSETS, "heap": self.heap, "pid": os.getpid(), "terminals": out}

    def write(self, path):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.describe(), f, indent=1)
        os.replace(tmp, path)

    def poll(self):
        """[(name, exit status, last lines)] of terminals that died since the last call."""
        died = []
        for tid, fw in self.terminals:
            if tid in self.dead or fw.proc is None or fw.alive() or self.stopping:
                continue
            fw.wait()  # its last output is in
            self.dead[tid] = fw.proc.returncode
            died.append((tid, fw.proc.returncode, fw.output().splitlines()[-LAST_LINES:]))
        return died

    def alive(self):
        return [tid for tid, fw in self.terminals if fw.alive()]

    def ask_stop(self):
        for _tid, fw in self.terminals:
            if fw.alive():
                fw.ask_stop()

    def stop(self, timeout=5):
        """Every terminal asked to stop at once (Firmware.ask_stop: as
        Ctrl-C); kill -9 those still running after timeout."""
        self.stopping = True
        for _tid, fw in self.terminals:
            fw.halt()  # one off for a power cut stays off
        self.ask_stop()
        end = time.monotonic() + timeout
        while self.alive() and time.monotonic() < end:
            time.sleep(0.05)
        for _tid, fw in self.terminals:
            fw.kill()
            fw.cleanup()

    def rss_kb(self):
        """{name: (Rss, Pss, private) in KB} from /proc/<pid>/smaps_rollup."""
        out = {}
        for tid, fw in self.terminals:
            if fw.alive():
                out[tid] = smaps(fw.proc.pid)
        return out


def smaps(pid):
    """(Rss, Pss, Private_Clean + Private_Dirty) of a process, in KB."""
    got = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                got[parts[0][:-1]] = int(parts[1])
    return got.get("Rss", 0), got.get("Pss", 0), got.get("Private_Clean", 0) + got.get("Private_Dirty", 0)


def _read(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


_print_lock = threading.Lock()


def _prefixed(out, tid):
    def echo(line):
        with _print_lock:
            out.write("%s %s\n" % (tid, line))
            out.flush()
    return echo


def main(a, prog, root, config):
    """`understudy run --count N` (run.py has parsed the arguments)."""
    heap = a.heap or HEAP
    base, stride = a.base_port, a.stride
    err = layout_error(a.count, base, stride)
    if err:
        sys.stderr.write("%s: %s\n" % (prog, err))
        return 2
    cfg = _read(config) if config else {}
    described = os.path.abspath(a.json or os.path.join(a.state_dir, "fleet.json"))
    if os.path.exists(described):  # a script waiting for the file must not read an old fleet
        os.remove(described)
    fleet = Fleet(a.count, root, a.state_dir, base, stride, heap, cfg, echo=sys.stdout, flash=a.flash)
    asked = []
    signal.signal(signal.SIGINT, lambda *_: asked.append(time.monotonic()))
    signal.signal(signal.SIGTERM, lambda *_: asked.append(time.monotonic()))
    t0 = time.monotonic()
    try:
        fleet.start()
    except FirmwareError as e:
        sys.stderr.write("%s: %s\n" % (prog, e))
        return 1
    fleet.write(described)
    with _print_lock:
        print("READY %d terminals in %.2f s, ports %d-%d, described in %s"
              % (a.count, time.monotonic() - t0, base, base + (a.count - 1) * stride + max(OFFSETS.values()),
                 described), flush=True)
    sent = False
    failed = False
    while fleet.alive() or (not asked and len(fleet.dead) < a.count):
        time.sleep(0.2)
        if asked:
            fleet.stopping = True
            if not sent:
                fleet.ask_stop()
                sent = True
            if time.monotonic() - asked[0] > 5:
                break
            continue
        died = fleet.poll()
        for tid, code, last in died:
            failed = True
            with _print_lock:
                sys.stderr.write("%s: terminal %s died (exit status %s); its last lines:\n%s\n"
                                 % (prog, tid, code, "\n".join("  " + ln for ln in last)))
                sys.stderr.write("%s: %d of %d terminals still serving\n"
                                 % (prog, a.count - len(fleet.dead), a.count))
                sys.stderr.flush()
        if died:
            fleet.write(described)
    fleet.stop()
    try:
        os.remove(described)
    except OSError:
        pass
    return 1 if failed else 0
