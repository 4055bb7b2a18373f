"""The loopback test kit: a terminal for a POS developer's own test suite.

    from understudy.testkit import Terminal

    with Terminal() as t:                     # the firmware in the unix port, free ports
        pay_with_my_register(t.concert)       # ("127.0.0.1", 27431)
        t.control.queue("decline", "lost")    # the next two transactions, whatever the amount
        t.control.transactions()              # the journal, as dicts

The pytest plugin (understudy.pytest_plugin) gives the same as the
`terminal` fixture.  Control goes through the terminal's HTTP control API
(docs/CONTROL.md) with a token made for this terminal.
"""
import importlib.util
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request

from understudy import build, paths, tls
from understudy.launch import Firmware
from understudy.ports import drawn, free_port, port_range, worker  # noqa: F401  (the kit's API)

# test-friendly time-outs: an unhappy path takes seconds, not minutes
DEFAULTS = {
    "timeouts": {"card_s": 5, "pin_s": 5, "auth_s": 10, "continue_s": 10, "signature_s": 10,
                 "request_ms": 5000},
    "delays": {"slow_auth_ms": 3000},
    "config_watch_s": 1,
}
TCP = ("concert-ip", "p3-tcp", "p3-ws", "synqpay", "synqpay-tls")
# Each personality's listeners (the web face is `web.enabled`)
PERSONALITIES = (("Concert", ("concert-ip", "concert-serial", "concert-bt", "concert-ble")),
                 ("P3", ("p3-tcp", "p3-ws")), ("Synqpay", ("synqpay", "synqpay-tls", "synqpay-serial")))


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
                               "synqpay": {"otp": "123456", "api_key": self.synqpay_key},
                               "web": {"port": free_port(), "token": os.urandom(8).hex()}})
        self.config = merge(cfg, config)
        self.movable = drawn(TCP + ("web",), config)
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
                           echo=self.echo, movable=self.movable)
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
        died = not self.fw.alive() and self.fw.proc.poll() not in (None, 0) and not self.fw.killed
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
    def web(self):
        """The web page and control API: http://127.0.0.1:<port>."""
        host, port = self._tcp("web")
        return "http://%s:%d" % (host, port)

    @property
    def token(self):
        """The control API's token (web.token)."""
        return self.config["web"]["token"]

    @property
    def tls_ca(self):
        """The root the TLS certificate is signed by (DER): what a register trusts or pins."""
        return os.path.join(paths.TLS, "ca.der")

    # -- what it says

    def output(self):
        return self.fw.output()

    def wait_for(self, text, timeout=10, start=0):
        """The index of the first log line at or after `start` containing
        text, or None."""
        return self.fw.wait_for(text, timeout, start)

    def wait_ready(self, timeout=30, start=0):
        """After a power cut (the power_cut outcome): wait until the terminal
        has booted again (the launcher restarts it on the same state dir and
        ports) and is READY; False if it did not within timeout.  start: the
        first log line to look at (len(fw.lines) before the transaction)."""
        cut = self.fw.wait_for("launcher power-cut", timeout, start)
        return cut is not None and self.fw.wait_for("READY", timeout, cut) is not None


class Control:
    """Decide what the terminal does, and read what it did: the terminal's
    HTTP control API (docs/CONTROL.md), with the terminal's token."""

    def __init__(self, terminal):
        self.t = terminal

    @property
    def url(self):  # read each time: configure() may move the port or change the token
        return self.t.web

    @property
    def token(self):
        return self.t.token

    def call(self, method, path, body=None, timeout=10):
        """(status, decoded JSON or text) of one API call.  A 503 with
        Retry-After (the terminal's heap was short: nothing was done) is
        asked again after the time it gives, as a client honouring
        Retry-After does, until `timeout` seconds have gone by; then the
        503 is the answer."""
        data = None if body is None else json.dumps(body).encode()
        end = time.monotonic() + timeout
        while True:
            req = urllib.request.Request(self.url + path, data=data, method=method)
            req.add_header("Authorization", "Bearer " + self.token)
            if data is not None:
                req.add_header("Content-Type", "application/json")
            try:
                with urllib.request.urlopen(req, timeout=timeout) as r:
                    status, raw, headers = r.status, r.read(), r.headers
            except urllib.error.HTTPError as e:
                status, raw, headers = e.code, e.read(), e.headers
            wait = headers.get("Retry-After") if status == 503 else None
            if wait is None or not wait.isdigit() or time.monotonic() + int(wait) > end:
                break
            time.sleep(int(wait))
        text = raw.decode("utf-8", "replace")
        kind = headers.get("Content-Type", "")
        return status, json.loads(text) if kind.startswith("application/json") else text

    def _ok(self, method, path, body=None):
        status, out = self.call(method, path, body)
        if status != 200:
            raise TerminalError("%s %s: %s %s" % (method, path, status, str(out).strip()))
        return out

    def queue(self, *outcomes):
        """The outcomes of the next transactions, in order, whatever their
        amounts (even those ending in .00/.50): "approve", "decline",
        "cancel" (the cardholder's red button), "no_card", "pin_blocked",
        "slow", "currency", "lost" (approved, the answer never sent),
        "forbidden", "host_error", "signature".  Added after those still
        queued."""
        self._ok("POST", "/api/queue", {"outcomes": list(outcomes)})

    def queued(self):
        """The outcomes still queued, in order."""
        return self._ok("GET", "/api/queue")["queue"]

    def outcome_for(self, cents, outcome):
        """Amounts whose last two digits are `cents` ("42" or 42) end so,
        from now on (the table the README lists)."""
        self.configure({"outcomes": {"%02d" % int(cents): outcome}})

    def configure(self, patch, replace=()):
        """Change settings live (the keys of the README's table); returns
        once the terminal has taken them.  replace: top-level sections
        written as given instead of merged."""
        path = "/api/config"
        if replace:
            path += "?replace=" + ",".join(replace)
        status, out = self.call("PUT", path, patch)
        if status == 400:
            raise ValueError("the terminal would not take this config: " + str(out).strip())
        if status != 200:
            raise TerminalError("PUT /api/config: %s %s" % (status, str(out).strip()))
        cfg = merge(self.t.config, {k: v for k, v in patch.items() if k not in replace})
        for k in replace:
            cfg[k] = patch[k]
        self.t.config = cfg

    def state(self):
        """What the terminal shows and does now (GET /api/state)."""
        return self._ok("GET", "/api/state")

    def present_card(self, profile="chip", brand=None):
        """The cardholder presents a card (interactive mode): chip, contactless, magstripe."""
        return self._ok("POST", "/api/card", {"profile": profile, "brand": brand})

    def pin(self, ok=True):
        """The cardholder types the right PIN (or a wrong one)."""
        return self._ok("POST", "/api/pin", {"ok": ok})

    def cancel(self):
        """The red button."""
        return self._ok("POST", "/api/cancel", {})

    def mode(self, mode):
        """"auto" (the amount rules decide) or "interactive" (the cardholder acts)."""
        return self._ok("POST", "/api/mode", {"mode": mode})

    def transactions(self):
        """The newest transactions of the journal (up to 200), oldest first:
        dicts with no, batch, op, amount (minor units), cur, src, ref,
        result, reason, auth, card, delivered, voided."""
        return self._ok("GET", "/api/transactions?n=200")["transactions"]

    def last(self):
        """The newest transaction, or None."""
        txns = self.transactions()
        return txns[-1] if txns else None

    def next_number(self):
        """The number the next transaction will get."""
        return self._ok("GET", "/api/state")["next"]
