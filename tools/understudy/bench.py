"""`understudy bench` (`make bench`): how fast and how lean, measured side by side.

For each personality: sequential transactions with a zero authorisation
delay, their rate and p50/p99 latency, against an echo floor measured in the
same run (bench_echo.py: a bare asyncio server on the same unix port and
transport, one request and one answer per exchange).  Then the live heap
over a mixed soak (every personality listening, registers of each protocol
taking turns, a register hammering to hear "busy"), the heap slope over many
transactions, boot to READY, the .mpy size, the largest free block, and the
serial link's efficiency.  bench_report.py writes docs/BENCHMARKS.md and
its charts from the figures.

Wall-clock figures from a shared machine: compare them within one run.
"""
import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from types import SimpleNamespace

from understudy import bench_report, build, paths, tls
from understudy.codecs import concert_link as link
from understudy.codecs import concert_tlv as tlv
from understudy.codecs import synqpay_link as L
from understudy.ecr import Busy, Trace
from understudy.ecr import p3 as ecr_p3
from understudy.ecr import synqpay as ecr_synqpay
from understudy.launch import Firmware, micropython
from understudy.nullmodem import NullModem
from understudy.ports import drawn
from understudy.testkit import TCP, free_port, merge

HEAP = "256K"
KEY = "1234abcd"
CONCERT = b"CZ0040300CJ012012345678901CA00201CE003978CD0010CB0041250"
V2 = link.frame(b"0100001250110978" + b" " * 10 + b"A010B010")
HEAP_RE = re.compile(r"core done #(\d+) .*heap=(\d+)")


def say(msg):
    sys.stderr.write("bench: %s\n" % msg)
    sys.stderr.flush()


# ---- the registers -------------------------------------------------------

def concert_once(addr, req=CONCERT):
    """One Concert exchange: connect, request, the whole answer, close."""
    s = socket.create_connection(addr, timeout=10)
    s.sendall(req)
    buf = b""
    while True:
        c = s.recv(4096)
        if not c:
            break
        buf += c
        if buf == req or (tlv.scan(buf) == len(buf) and b"AE002" in buf):
            break
    s.close()
    return buf


class Serial:
    """A Concert V2 register on a serial line (pyserial), one E+ payment a call."""

    def __init__(self, path, baud=9600):
        import serial

        self.s = serial.Serial(path, baud, timeout=5)

    def pay(self):
        s = self.s
        for out, n in ((b"\x05", 1), (V2, 1), (b"\x04", 1), (b"\x06", 83), (b"\x06", 1)):
            s.write(out)
            got = s.read(n)
            if len(got) != n:
                raise RuntimeError("serial: %r answered %r" % (out, got))

    def echo(self):
        self.s.write(V2)
        if len(self.s.read(len(V2))) != len(V2):
            raise RuntimeError("serial echo short")


class P3:
    """A P3 POS (understudy ecr p3) that logs in once and pays again and again."""

    def __init__(self, addr, websocket):
        a = SimpleNamespace(host=addr[0], port=addr[1], timeout=10, device="devices/understudy",
                            signature="paper", ws="ws://%s:%d/" % addr if websocket else None)
        self.pos = ecr_p3.POS(a, Trace())

    def login(self):
        tag = self.pos.request("LOGIN_MERCHANT", {"providerMode": "TEST",
                                                  "merchantIdentifier": "understudy",
                                                  "merchantSecret": "understudy"})
        m = self.pos.final(tag, "login")
        if m.get("status") == "ERROR":  # busy (no room, say): a POS logs in again
            self.close()
            why = json.dumps(m)[:300]
            raise (Busy if "ACCESSORY_BUSY" in why else RuntimeError)("P3 login refused: " + why)

    def pay(self):
        body = {"transactionParameters": {"amount": 12.50, "currency": "EUR", "type": "CHARGE",
                                          "autoCapture": True}}
        return self.pos.final(self.pos.request("EXECUTE_TRANSACTION", body, "devices/understudy"),
                              "payment")

    def echo(self):
        self.pos.t.send(b'{"type":"EXECUTE_TRANSACTION_REQUEST","tag":"b1"}')
        if self.pos.t.recv(10) is None:
            raise RuntimeError("P3 echo closed")

    def close(self):
        self.pos.close()


class Synqpay:
    """A Synqpay POS (understudy ecr synqpay) on one link, already paired."""

    def __init__(self, addr, secure):
        a = SimpleNamespace(host=addr[0], port=addr[1], tls=secure, timeout=10, insecure=True,
                            cafile=None)
        self.c = ecr_synqpay.Caller(a, Trace(), bytes.fromhex(KEY))

    sales = 0  # every sale of the run a reference of its own, whatever its link

    def pay(self):
        Synqpay.sales += 1
        got = self.c.call("startTransaction", {"paymentMethod": "CREDIT_CARD",
                                               "transactionType": "SALE",
                                               "referenceId": "b%d-%d" % (os.getpid(), Synqpay.sales),
                                               "amount": 1250})
        err = got.get("error") or {}
        if "result" not in got and err.get("code") != 201:  # busy is an answer; the rest is no sale
            raise RuntimeError("Synqpay sale refused: %s" % (err or got))
        return got

    def echo(self):
        self.c.link.send(L.frame(L.REQUEST, b'{"jsonrpc":"2.0","id":"1","method":"getStatus"}',
                                 bytes.fromhex(KEY)))
        if self.c.link.frame(10) is None:
            raise RuntimeError("Synqpay echo closed")

    def close(self):
        self.c.close()


# ---- timing --------------------------------------------------------------

def timed(fn, n, warm=20):
    for _ in range(warm):
        fn()
    ts = []
    t0 = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    whole = time.perf_counter() - t0
    ts.sort()
    return {"n": n, "rate": n / whole, "mean": whole / n, "p50": ts[n // 2],
            "p99": ts[min(n - 1, int(n * 0.99))], "all": ts}


def echo_floor(mode, n, serial_modem=None):
    """Time n exchanges against bench_echo.py in `mode`."""
    port = free_port()
    args = [micropython(), os.path.join(os.path.dirname(__file__), "bench_echo.py"), mode]
    args += [serial_modem.firmware_path] if mode == "serial" else [str(port)]
    if mode == "tls":
        args.append(paths.TLS)
    env = dict(os.environ, MICROPYPATH="%s:.frozen" % paths.LIB)
    p = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        if p.stdout.readline().strip() != b"READY":
            raise RuntimeError("echo floor %s did not start" % mode)
        addr = ("127.0.0.1", port)
        if mode == "once":
            return timed(lambda: concert_once(addr), n)
        if mode == "serial":
            c = Serial(serial_modem.register_path)
            return timed(c.echo, n)
        c = {"persist": lambda: Synqpay(addr, False), "tls": lambda: Synqpay(addr, True),
             "ws": lambda: P3(addr, True)}[mode]()
        try:
            return timed(c.echo, n)
        finally:
            c.close()
    finally:
        p.kill()
        p.wait()


ROOT = [paths.MPY]  # where main.py (and, unless frozen into the binary, the .mpy) are


def start(config, heap=HEAP, root=None, **kw):
    """The firmware with every TCP listener on a free port, Synqpay paired,
    `config` merged on top; its flash a temporary directory it removes at
    cleanup()."""
    base = {"listeners": {name: {"port": free_port()} for name in TCP},
            "web": {"port": free_port()},
            "synqpay": {"api_key": KEY, "otp": "123456"}, "config_watch_s": 0}
    # a drawn port another program takes before the bind is drawn again (launch.Firmware)
    fw = Firmware(root=root or ROOT[0], heap=heap, config=merge(base, config),
                  movable=drawn(TCP + ("web",), config), **kw)
    with open(os.path.join(fw.state_dir, "synqpay.key"), "w") as f:
        f.write(KEY + "\n")
    try:
        return fw.start(timeout=30)
    except Exception:
        fw.cleanup()
        raise


def personalities(n):
    """[(name, ours, floor)] for every personality, measured in one run."""
    rows = []
    fw = start({"log": {"frames": False}})
    modem = NullModem()
    try:
        say("Concert over TCP, %d payments, and its echo floor..." % n)
        ours = timed(lambda: concert_once(fw.address("concert-ip")), n)
        rows.append(("Concert V3, TCP", ours, echo_floor("once", n)))
        for name, ws_ in (("p3-tcp", False), ("p3-ws", True)):
            say("P3 over %s, %d payments..." % ("WebSocket" if ws_ else "TCP", n))
            c = P3(fw.address(name), ws_)
            c.login()
            ours = timed(c.pay, n)
            c.close()
            rows.append(("P3, %s" % ("WebSocket" if ws_ else "framed TCP"), ours,
                         echo_floor("ws" if ws_ else "persist", n)))
        for name, secure in (("synqpay", False), ("synqpay-tls", True)):
            say("Synqpay over %s, %d sales..." % ("TLS" if secure else "TCP", n))
            c = Synqpay(fw.address(name), secure)
            ours = timed(c.pay, n)
            c.close()
            rows.append(("Synqpay, %s" % ("TLS" if secure else "TCP"), ours,
                         echo_floor("tls" if secure else "persist", n)))
        ns = max(20, n // 5)
        say("Concert V2 over the serial line (pty, no speed), %d payments..." % ns)
        path, _ = fw.serial("concert-serial")
        c = Serial(path)
        ours = timed(c.pay, ns, warm=3)
        c.s.close()
        rows.append(("Concert V2, serial (pty)", ours, echo_floor("serial", ns, modem)))
    finally:
        fw.stop()
        fw.cleanup()
        modem.close()
    return rows


def hammering(addr):
    """A register that pays again and again, mostly to hear "busy", until
    stopped or unanswered: (thread, stop event, [busy answers, error])."""
    stop = threading.Event()
    busy = [0, None]

    def run():
        while not stop.is_set():
            try:
                busy[0] += tlv.decode(concert_once(addr)).get("AF") == "00"
            except (OSError, tlv.TLVError) as e:
                if not stop.is_set():
                    busy[1] = "the hammering register got no answer: %s" % e
                return
            stop.wait(0.01)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, stop, busy


class Watcher:
    """The web page opened once, then its event stream kept open and read
    until close(): what a tester's browser costs the terminal."""

    def __init__(self, addr):
        self.addr = addr
        self.events = 0
        page = self._get("/", b"Accept-Encoding: gzip\r\n")
        page.settimeout(10)
        while page.recv(4096):
            pass
        page.close()
        self.s = self._get("/api/events", b"")
        self.s.settimeout(0.5)
        self.stop = threading.Event()
        self.th = threading.Thread(target=self._read, daemon=True)
        self.th.start()

    def _get(self, path, headers):
        s = socket.create_connection(self.addr, timeout=10)
        s.sendall(b"GET %s HTTP/1.1\r\nHost: bench\r\n%s\r\n" % (path.encode(), headers))
        return s

    def _read(self):
        while not self.stop.is_set():
            try:
                data = self.s.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            if not data:
                return
            self.events += data.count(b"\ndata: ") + data.startswith(b"data: ")

    def close(self):
        self.stop.set()
        self.th.join(2)
        self.s.close()


def mixed_soak(rounds, heap=HEAP, log_heap=True):
    """Every personality listening; Concert TCP, P3 TCP and WebSocket, Synqpay
    and Concert serial take turns (Synqpay is one device: its link alternates
    between TCP and TLS, each new link replacing the last, as a POS
    reconnecting does); a register hammers Concert and mostly hears "busy";
    the web page is open with its event stream.
    Returns (heap series, firmware output, busy answers, problems)."""
    fw = start({"log": {"heap": log_heap, "frames": False}, "delays": {"auth_ms": 2}}, heap=heap)
    th = stop = page = None
    busy = [0, None]
    problems = []
    try:
        page = Watcher(fw.address("web"))
        p3t, p3w = P3(fw.address("p3-tcp"), False), P3(fw.address("p3-ws"), True)
        p3t.login()
        ser = Serial(fw.serial("concert-serial")[0])
        th, stop, busy = hammering(fw.address("concert-ip"))
        for r in range(rounds):
            concert_once(fw.address("concert-ip"))
            p3t.pay()
            p3w.pay()
            sq = Synqpay(fw.address("synqpay-tls" if r % 2 else "synqpay"), r % 2)
            sq.pay()
            sq.close()
            ser.pay()
            if r % 50 == 49:
                say("mixed soak: %d of %d rounds" % (r + 1, rounds))
        for c in (p3t, p3w):
            c.close()
        ser.s.close()
    except Exception as e:  # a register that got no answer: the heap was too small
        problems.append("%s: %s" % (type(e).__name__, e))
    finally:
        if stop is not None:
            stop.set()
            th.join(5)
        if busy[1]:
            problems.append(busy[1])
        if page is not None:
            page.close()
            if not page.events:
                problems.append("the page's event stream told nothing")
        out = fw.stop()
        problems += fw.problems()
        fw.cleanup()
    series = [(int(no), int(h)) for no, h in HEAP_RE.findall(out)]
    return series, out, busy[0], problems


def concert_soak(n, heap):
    """Concert over TCP alone (every other listener off): n payments while a
    register hammers.  Returns the problems seen (none: it fits)."""
    off = {"enabled": False}
    fw = start({"listeners": {"p3-tcp": off, "p3-ws": off, "synqpay": off, "synqpay-tls": off,
                              "concert-serial": off, "synqpay-serial": off}, "web": off,
                "log": {"frames": False}, "delays": {"auth_ms": 2}}, heap=heap)
    th, stop, hammer = hammering(fw.address("concert-ip"))
    problems = []
    try:
        for _ in range(n):
            a = tlv.decode(concert_once(fw.address("concert-ip")))
            if a.get("AE") != "10" and a.get("AF") != "00":  # neither approved nor busy
                problems.append("a payment answered %r" % a)
                break
    except (OSError, tlv.TLVError) as e:
        problems.append(str(e))
    finally:
        stop.set()
        th.join(5)
        if hammer[1]:
            problems.append(hammer[1])
        fw.stop()
        problems += fw.problems()
        fw.cleanup()
    return problems


def smallest_heap(probe, sizes):
    """The first heap size (KB) in `sizes` at which probe(heap) finds no problem."""
    for kb in sizes:
        try:
            problems = probe("%dK" % kb)
        except Exception as e:  # it did not even boot
            problems = [str(e)]
        say("  %dK: %s" % (kb, "fits" if not problems else problems[0][:100]))
        if not problems:
            return kb
    return None


def leak(n):
    """Live heap near transaction 100 and near transaction n (Concert and
    Synqpay taking turns, frames not logged): each the smallest of 100
    samples, since a sample may catch a buffer of the next exchange alive
    (the figures swing by a few KB from one transaction to the next, with
    no trend)."""
    fw = start({"log": {"heap": True, "frames": False}})
    try:
        sq = Synqpay(fw.address("synqpay"), False)
        for i in range(n):
            if i % 2:
                sq.pay()
            else:
                concert_once(fw.address("concert-ip"))
            if i and i % 2000 == 0:
                say("leak: %d of %d transactions" % (i, n))
        sq.close()
    finally:
        out = fw.stop()
        fw.cleanup()
    heaps = {int(no): int(h) for no, h in HEAP_RE.findall(out)}
    early = [heaps[k] for k in range(100, 200) if k in heaps]
    late = [heaps[k] for k in range(n - 99, n + 1) if k in heaps]
    return (min(early) if early else None), (min(late) if late else None), out


def boot_ms(root, heap, tries=10):
    """Median time from starting `micropython` to READY, every personality on."""
    times = []
    for _ in range(tries):
        t0 = time.perf_counter()
        fw = start({}, heap=heap, root=root)
        times.append((time.perf_counter() - t0) * 1000)
        fw.stop()
        fw.cleanup()
    return statistics.median(times)


def max_free(out, bits):
    """The largest free block at the end (micropython.mem_info, printed at stop)."""
    m = re.findall(r"max free sz: (\d+)", out)
    return int(m[-1]) * bits // 2 if m else None  # a GC block is 4 words: 16 or 32 bytes


def frozen_root():
    """A flash holding only main.py and boot.py, for an interpreter that has
    the modules frozen in; SystemExit if it has not."""
    env = dict(os.environ, MICROPYPATH=".frozen")
    if subprocess.run([micropython(), "-c", "import firmware.app"], env=env,
                      capture_output=True).returncode:
        raise SystemExit("bench: --frozen, but %s cannot import firmware.app from its frozen "
                         "modules: set MICROPYTHON to a build made with manifest.py" % micropython())
    d = tempfile.mkdtemp(prefix="bench-frozen-")
    for f in paths.FIRMWARE_FILES:
        shutil.copy(os.path.join(paths.MPY, f), d)
    os.mkdir(os.path.join(d, "www"))  # the page is a file on flash, never frozen
    shutil.copy(os.path.join(paths.MPY, paths.PAGE + ".gz"), os.path.join(d, "www"))
    return d


FIT_ALL = (64, 96, 128, 160, 192, 224, 256, 320)
FIT_CONCERT = (24, 32, 48, 64, 80, 96, 128)
MIXED_SIZES = (96, 128, 160, 192, 256)


def main(argv=None, prog="understudy bench"):
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n")[0],
        epilog="Takes about 8 minutes with the defaults (the mixed use: --runs x --sizes runs of "
        "--seconds each).  $MICROPYTHON picks another unix-port "
        "binary (a 32-bit build, say).")
    p.add_argument("-n", type=int, default=500, help="transactions per personality (default 500)")
    p.add_argument("--rounds", type=int, default=200,
                   help="rounds of the mixed soak, one transaction of each protocol a round "
                   "(default 200)")
    p.add_argument("--leak", type=int, default=10000,
                   help="transactions of the leak run (default 10000)")
    p.add_argument("--frozen", action="store_true",
                   help="$MICROPYTHON has the firmware frozen in (built with manifest.py): run it "
                   "from there, not from the .mpy build")
    p.add_argument("--runs", type=int, default=10,
                   help="mixed-use runs per heap size (default 10): a fit rate, not one lucky run")
    p.add_argument("--seconds", type=float, default=5,
                   help="length of each mixed-use run in seconds (default 5)")
    p.add_argument("--sizes", default=",".join("%dK" % k for k in MIXED_SIZES),
                   help="heap sizes of the mixed-use runs (default %(default)s)")
    p.add_argument("--out", default=os.path.join(paths.ROOT, "docs"),
                   help="where BENCHMARKS.md and the charts go (default docs/)")
    a = p.parse_args(argv)
    ecr_p3.progress = ecr_synqpay.progress = lambda text: None  # the registers' chatter
    tls.make()
    r = {"mpy": build.stats(build.ensure()), "leak_n": a.leak, "n": a.n, "rounds": a.rounds,
         "frozen": a.frozen, "seconds": a.seconds}
    if a.frozen:
        ROOT[0] = frozen_root()
    r["rows"] = personalities(a.n)
    say("mixed soak, %d rounds..." % a.rounds)
    r["series"], out, r["busy"], problems = mixed_soak(a.rounds)
    if problems:
        raise SystemExit("bench: the mixed soak failed in %s: %s" % (HEAP, problems[0]))
    r["max_free"] = max_free(out, bench_report.runtime()[1])
    say("the smallest heap the mixed soak runs in (10 rounds a try)...")
    r["fit_all"] = smallest_heap(lambda heap: mixed_soak(10, heap, False)[3], FIT_ALL)
    say("the smallest heap Concert alone runs in (200 payments a try)...")
    r["fit_concert"] = smallest_heap(lambda heap: concert_soak(200, heap), FIT_CONCERT)
    from understudy import load

    say("mixed use: every protocol at once, %d runs of %.0f s per heap size..." % (a.runs, a.seconds))
    r["mixed"] = load.fit_rates(a.sizes.split(","), a.runs, a.seconds, root=ROOT[0], say=say)
    say("leak run, %d transactions..." % a.leak)
    before, after, _ = leak(a.leak)
    r["leak"] = (before, after)
    say("boot times...")
    r["boot_mpy"] = boot_ms(ROOT[0], HEAP)
    r["boot_py"] = None if a.frozen else boot_ms(paths.SOURCE, "512K")
    say("serial link efficiency at 9600 baud...")
    from understudy import bench_serial

    e = bench_serial.measure(9600, 20, ROOT[0])
    r["serial"] = "%.3f (%.1f ms for %.1f ms of wire)" % (e["efficiency"], e["whole_ms"],
                                                        e["wire_ms"])
    os.makedirs(a.out, exist_ok=True)
    r["charts"] = bench_report.charts(r["series"], r["rows"], a.out, r["mixed"], say)
    text = bench_report.report(r, HEAP)
    with open(os.path.join(a.out, "BENCHMARKS.md"), "w") as f:
        f.write(text)
    print(text)
    say("written: %s" % os.path.join(a.out, "BENCHMARKS.md"))


if __name__ == "__main__":
    main()
