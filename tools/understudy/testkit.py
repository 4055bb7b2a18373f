"""The loopback test kit: a terminal for a POS developer's own test suite.

    from understudy.testkit import Terminal

    with Terminal() as t:                     # the firmware in the unix port, free ports
        pay_with_my_register(t.concert)       # ("127.0.0.1", 27431)
        t.control.queue("decline", "lost")    # the next two transactions, whatever the amount
        t.control.transactions()              # the journal, as dicts

The pytest plugin (understudy.pytest_plugin) gives the same as the
`terminal` fixture.  Control goes through the terminal's config file (which
it re-reads within `config_watch_s`, 1 s here) and its journal file; when the
terminal's HTTP control API exists, Control will use it instead, with the
same methods.
"""
import importlib.util
import json
import os
import random
import re
import shutil
import socket
import tempfile

from understudy import build, paths, tls
from understudy.launch import Firmware

# test-friendly time-outs: an unhappy path takes seconds, not minutes
DEFAULTS = {
    "timeouts": {"card_s": 5, "pin_s": 5, "auth_s": 10, "continue_s": 10, "signature_s": 10,
                 "request_ms": 5000},
    "delays": {"slow_auth_ms": 3000},
    "config_watch_s": 1,
}
TCP = ("concert-ip", "p3-tcp", "p3-ws", "synqpay", "synqpay-tls")


def free_port():
    """A free port below Linux's ephemeral range (32768+), where no outgoing
    connection can take it between now and the firmware's bind."""
    while True:
        port = random.randint(20000, 32000)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            pass
        finally:
            s.close()


def merge(base, extra):
    out = dict(base)
    for k, v in (extra or {}).items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def firmware_config():
    """The firmware's own config module (defaults and rules), loaded from its file."""
    spec = importlib.util.spec_from_file_location(
        "understudy_firmware_config", os.path.join(paths.ROOT, "firmware", "config.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class TerminalError(RuntimeError):
    pass


class Terminal:
    """One terminal: start() (or `with`), its endpoints, control, stop().

    config: overrides merged over DEFAULTS (listener ports are chosen free);
    state_dir: its flash (default: a temporary directory, removed at stop);
    heap: MicroPython -X heapsize; source: run the .py files instead of the
    .mpy build (needs a larger heap); echo: print the terminal's log live.
    """

    def __init__(self, config=None, state_dir=None, heap="256K", source=False, echo=False):
        self._tmp = None
        if state_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="understudy-")
            state_dir = self._tmp
        self.state_dir = os.path.abspath(str(state_dir))
        os.makedirs(self.state_dir, exist_ok=True)
        ports = {name: {"port": free_port()} for name in TCP}
        self.synqpay_key = os.urandom(4).hex()
        cfg = merge(DEFAULTS, {"listeners": ports,
                               "synqpay": {"otp": "123456", "api_key": self.synqpay_key}})
        self.config = merge(cfg, config)
        self.heap = "512K" if source and heap == "256K" else heap
        self.source = source
        self.echo = echo
        self.fw = None
        self.control = None

    # -- life

    def start(self, timeout=30):
        root = paths.SOURCE if self.source else build.ensure()
        tls.make(paths.TLS)
        key = os.path.join(self.state_dir, "synqpay.key")
        if not os.path.exists(key):  # paired already, with a key the test knows
            with open(key, "w") as f:
                f.write(self.synqpay_key)
        self.fw = Firmware(root=root, heap=self.heap, config=self.config, state_dir=self.state_dir,
                           echo=self.echo)
        try:
            self.fw.start(timeout)
        except Exception:
            self.fw.cleanup()
            raise
        self.control = Control(self)
        return self

    def stop(self):
        """Stop it (Ctrl-C); the lines it must never print: tracebacks, memory
        errors, and a death of its own."""
        if self.fw is None:
            return []
        died = self.fw.proc.poll() not in (None, 0) and not self.fw.killed
        self.fw.stop()
        bad = self.fw.problems()
        if died:
            bad.append("the terminal died (exit status %s)" % self.fw.proc.returncode)
        self.fw.cleanup()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
        return bad

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        bad = self.stop()
        if bad and exc[0] is None:
            raise TerminalError("the terminal printed:\n" + self.output())

    def restart(self):
        """Power-cycle: kill -9 (nothing flushed is lost) and boot on the same flash."""
        self.fw.kill()
        self.fw.start()

    # -- where it listens

    def _tcp(self, name):
        return self.fw.address(name)

    @property
    def concert(self):
        """(host, port) of Concert V3 over TCP."""
        return self._tcp("concert-ip")

    @property
    def concert_serial(self):
        """The serial line a register opens with pyserial (a pty; 9600 baud, 7E1)."""
        return self.fw.serial("concert-serial")[0]

    @property
    def p3_tcp(self):
        """(host, port) of P3 over length-prefixed TCP."""
        return self._tcp("p3-tcp")

    @property
    def p3_ws(self):
        """The P3 WebSocket URL."""
        host, port = self._tcp("p3-ws")
        return "ws://%s:%d%s" % (host, port, self.config["listeners"]["p3-ws"].get("path", "/"))

    @property
    def synqpay(self):
        """(host, port) of the Synqpay device link over TCP; paired with synqpay_key."""
        return self._tcp("synqpay")

    @property
    def synqpay_tls(self):
        """(host, port) of the Synqpay link over TLS (trust tls_ca, hostname 127.0.0.1)."""
        return self._tcp("synqpay-tls")

    @property
    def tls_ca(self):
        """The root the TLS certificate is signed by (DER): what a register trusts or pins."""
        return os.path.join(paths.TLS, "ca.der")

    # -- what it says

    def output(self):
        return self.fw.output()

    def wait_for(self, text, timeout=10):
        """The index of the first log line containing text, or None."""
        return self.fw.wait_for(text, timeout)


class Control:
    """Decide what the terminal does, and read what it did."""

    def __init__(self, terminal):
        self.t = terminal
        self.fw = terminal.fw
        self._mod = None

    def queue(self, *outcomes):
        """The outcomes of the next transactions, in order, whatever their
        amounts (even those ending in .00/.50): "approve", "decline",
        "cancel" (the cardholder's red button), "no_card", "pin_blocked",
        "slow", "currency", "lost" (approved, the answer never sent),
        "forbidden", "host_error", "signature".  Added after those still
        queued.  Call it while the terminal is idle."""
        cfg = self.t.config
        rows = dict(cfg.get("outcomes", {}))
        n = self.next_number()
        for k in [k for k in rows if k.startswith("#") and int(k[1:]) < n]:
            del rows[k]  # used
        queued = [int(k[1:]) for k in rows if k.startswith("#")]
        n = max(queued + [n - 1]) + 1
        for i, o in enumerate(outcomes):
            rows["#%d" % (n + i)] = o
        self.configure({"outcomes": rows}, replace=("outcomes",))

    def queued(self):
        """The outcomes still queued, in order."""
        n = self.next_number()
        rows = self.t.config.get("outcomes", {})
        return [rows[k] for k in sorted((k for k in rows if k.startswith("#") and int(k[1:]) >= n),
                                        key=lambda k: int(k[1:]))]

    def outcome_for(self, cents, outcome):
        """Amounts whose last two digits are `cents` ("42" or 42) end so,
        from now on (the table the README lists)."""
        self.configure({"outcomes": {"%02d" % int(cents): outcome}})

    def configure(self, patch, replace=()):
        """Change settings live (the keys of the README's table); returns
        once the terminal has taken them.  replace: top-level sections
        written as given instead of merged."""
        cfg = merge(self.t.config, {k: v for k, v in patch.items() if k not in replace})
        for k in replace:
            cfg[k] = patch[k]
        if self._mod is None:
            self._mod = firmware_config()
        _, problems = self._mod.merge(cfg)
        if problems:
            raise ValueError("the terminal would not take this config: " + "; ".join(problems))
        mark = len(self.fw.lines)
        tmp = self.fw.config_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(cfg, f, indent=1)
        os.replace(tmp, self.fw.config_path)  # never a half-written file
        self.t.config = cfg
        wait = cfg.get("config_watch_s", 2) * 3 + 5
        if self.fw.wait_for("config reloaded", wait, mark) is None:
            raise TerminalError("the terminal did not reload its config within %d s" % wait)

    def transactions(self):
        """Every transaction in the journal, oldest first: dicts with no,
        batch, op, amount (minor units), cur, src, ref, result, reason,
        auth, card, delivered, voided."""
        from understudy.journal import read

        path = os.path.join(self.t.state_dir, "journal.bin")
        if not os.path.exists(path):
            return []
        return read(path)[0]

    def last(self):
        """The newest transaction, or None."""
        txns = self.transactions()
        return txns[-1] if txns else None

    def next_number(self):
        """The number the next transaction will get."""
        n = 1
        for line in self.fw.lines:
            m = re.search(r"^core start #(\d+)|^journal replayed .* next #(\d+)", line)
            if m:
                n = max(n, int(m.group(1)) + 1 if m.group(1) else int(m.group(2)))
        for t in self.transactions():  # written before any answer: never behind the register
            n = max(n, t["no"] + 1)
        return n
