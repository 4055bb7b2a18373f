"""Ordinary use, all at once: registers of every protocol paying concurrently
while a tester's page is open and a script reads and writes the control API.

Every request must get an answer: approved, declined or busy all count; a
connection closed without one, or no answer in time, is "unanswered" (the
register must then assume the worst).  Used by `understudy bench` (the
mixed-use figures and the fit rate per heap size) and by the memory tests,
with a smaller count.
"""
import contextlib
import io
import json
import os
import socket
import threading

from understudy.bench import CONCERT, P3, Synqpay, Watcher, concert_once
from understudy.codecs import concert_tlv as tlv
from understudy.ecr import Busy
from understudy.testkit import PERSONALITIES


class Tally:
    """What one register heard, by kind."""

    def __init__(self, name):
        self.name = name
        self.n = {"approved": 0, "busy": 0, "other": 0, "unanswered": 0}
        self.why = []  # the first few unanswered requests, in words

    def add(self, kind, why=None):
        self.n[kind] += 1
        if why and len(self.why) < 3:
            self.why.append("%s: %s" % (self.name, why))


def _concert(addr, tally, stop, pause):
    while not stop.is_set():
        try:
            a = tlv.decode(concert_once(addr, CONCERT))
        except (OSError, tlv.TLVError) as e:
            tally.add("unanswered", repr(e))
            continue
        if not a:
            tally.add("unanswered", "closed without an answer")
        elif a.get("AE") == "10":
            tally.add("approved")
        elif a.get("AF") == "00":
            tally.add("busy")
        else:
            tally.add("other")
        stop.wait(pause)


def _pos(connect, pay, judge, tally, stop, pause):
    """A POS on one connection paying again and again (a new connection
    after one that failed): connect() -> pos, pay(pos) -> answer,
    judge(answer) -> approved, busy or other."""
    pos = None
    while not stop.is_set():
        try:
            if pos is None:
                pos = connect()
            got = pay(pos)
        except Busy:  # refused before anything started (503 with Retry-After): an answer
            tally.add("busy")
            pos = None
        except Exception as e:  # no answer, a reset, a time-out: a new connection next
            tally.add("unanswered", repr(e))
            if pos is not None:
                pos.close()
            pos = None
        else:
            tally.add(judge(got))
        stop.wait(pause)
    if pos is not None:
        pos.close()


def _p3(addr, websocket, tally, stop, pause):
    def connect():
        pos = P3(addr, websocket)
        pos.login()
        return pos

    def pay(pos):
        with contextlib.redirect_stderr(io.StringIO()):  # its progress lines
            return json.dumps(pos.pay())

    def judge(body):
        return "approved" if '"APPROVED"' in body else "busy" if "BUSY" in body else "other"

    _pos(connect, pay, judge, tally, stop, pause)


def _synqpay(addr, tally, stop, pause):
    def judge(got):
        if "result" not in got:
            return "busy"  # Synqpay.pay() raises for any error but 201
        return "approved" if '"CAPTURED"' in json.dumps(got) else "other"

    _pos(lambda: Synqpay(addr, False), lambda pos: pos.pay(), judge, tally, stop, pause)


def _http(addr, method, path, token, body=None):
    """(status, headers+body bytes) of one control-API call."""
    s = socket.create_connection(addr, timeout=10)
    try:
        data = json.dumps(body).encode() if body is not None else b""
        s.sendall(("%s %s HTTP/1.1\r\nHost: load\r\nAuthorization: Bearer %s\r\n"
                   "Content-Length: %d\r\n\r\n" % (method, path, token, len(data))).encode() + data)
        buf = b""
        while True:
            c = s.recv(4096)
            if not c:
                break
            buf += c
    finally:
        s.close()
    return int(buf.split(b" ", 2)[1]) if buf.startswith(b"HTTP/1.") else 0, buf


def _api(addr, token, tally, stop, pause):
    """A tester's script: reads state, the journal and the config; now and
    then writes the config.  503 with Retry-After counts as busy."""
    reads = ("/api/state", "/api/transactions?n=10", "/api/config")
    i = 0
    while not stop.is_set():
        i += 1
        if i % 10 == 0:
            method, path, body = "PUT", "/api/config", {"delays": {"card_ms": i % 3}}
        else:
            method, path, body = "GET", reads[i % 3], None
        try:
            status, buf = _http(addr, method, path, token, body)
        except OSError as e:
            tally.add("unanswered", "%s %s: %r" % (method, path, e))
            continue
        if status == 200:
            tally.add("approved")
        elif status == 503 and b"Retry-After:" in buf:
            tally.add("busy")
        else:
            tally.add("unanswered" if status == 0 else "other", "%s %s: %d" % (method, path, status))
        stop.wait(pause)


# The mixed use by personality, and "web" (the page's event stream and the
# API script).  A run of some of them turns the other listeners off
# (one_run), as a board's config would.
FAMILIES = dict([(name.lower(), listeners) for name, listeners in PERSONALITIES], web=())
ALL = tuple(sorted(FAMILIES))


def mixed_use(fw, seconds, concert=2, token="", pause=0.005, families=ALL):
    """Run the mixed use against a started firmware (Synqpay paired) for
    `seconds`, with the registers of `families` only: {register name:
    Tally}, and the page's event count."""
    stop = threading.Event()
    tallies = {}
    jobs = []

    def job(name, fn, *args):
        tallies[name] = t = Tally(name)
        jobs.append(threading.Thread(target=fn, args=args + (t, stop, pause), daemon=True))

    if "concert" in families:
        for i in range(concert):
            job("concert-%d" % (i + 1), _concert, fw.address("concert-ip"))
    if "p3" in families:
        job("p3-tcp", _p3, fw.address("p3-tcp"), False)
        job("p3-ws", _p3, fw.address("p3-ws"), True)
    if "synqpay" in families:
        job("synqpay", _synqpay, fw.address("synqpay"))
    page = None
    if "web" in families:
        job("api", _api, fw.address("web"), token)
        try:
            page = Watcher(fw.address("web"))
        except OSError as e:  # the page refused or reset (a short heap): a failed run, not a failed bench
            tallies["page"] = Tally("page")
            tallies["page"].add("unanswered", repr(e))
    for th in jobs:
        th.start()
    stop.wait(seconds)
    stop.set()
    for th in jobs:
        th.join(15)
    if page is None:
        return tallies, 0
    page.close()
    return tallies, page.events


def unanswered(tallies):
    """Every unanswered request's register, with the first few reasons."""
    return [w for t in tallies.values() for w in t.why if t.n["unanswered"]]


def _cpu_s(pid):
    """User + system CPU seconds of a process so far (Linux /proc)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))


def only(families):
    """The config that turns off every listener `families` does not use."""
    off = {name: {"enabled": False} for f, names in FAMILIES.items() if f not in families
           for name in names}
    return {"listeners": off, "web": {"enabled": "web" in families}}


def one_run(heap, seconds, concert, root=None, families=ALL):
    """The mixed use once in `heap`, with the listeners of `families` only:
    a dict of what it gave (fits: every request answered, no MemoryError or
    traceback in the log)."""
    from understudy.bench import HEAP_RE, merge, start

    try:
        fw = start(merge({"log": {"heap": True, "frames": False}, "delays": {"auth_ms": 2}},
                         only(families)), heap=heap, root=root)
    except Exception as e:  # it did not even boot in this heap
        return {"fits": False, "why": "no boot: %s" % str(e).splitlines()[0]}
    try:
        tallies, events = mixed_use(fw, seconds, concert, families=families)
        try:
            cpu = _cpu_s(fw.proc.pid)
        except OSError:  # it is gone: the run failed, and why is in its log
            cpu = 0
            exited = "the terminal exited (status %s)" % fw.proc.poll()
        else:
            exited = None
    finally:
        fw.stop()
        problems = fw.problems()
        out = fw.output()
        fw.cleanup()
    n = {k: sum(t.n[k] for t in tallies.values()) for k in ("approved", "busy", "other", "unanswered")}
    heaps = sorted(int(h) for _, h in HEAP_RE.findall(out))
    why = ([exited] if exited else []) + unanswered(tallies) + [_exception(out, p) for p in problems]
    why = why[:1]
    return {"fits": not why and not n["other"], "why": why[0] if why else "", "n": n,
            "events": events, "cpu_ms": 1000.0 * cpu / max(1, sum(n.values())),
            "heap_median": heaps[len(heaps) // 2] if heaps else None,
            "heap_peak": heaps[-1] if heaps else None}


def _exception(out, line):
    """A traceback's exception line in place of its first line."""
    if not line.startswith("Traceback"):
        return line
    rest = out.split(line, 1)[1].splitlines()
    return "Traceback: " + next((ln for ln in rest if ln and not ln.startswith(" ")), "?")


def fit_rates(sizes, runs, seconds, concert=2, root=None, say=print, families=ALL):
    """[(size, [one_run results])] for each heap size."""
    table = []
    for size in sizes:
        results = []
        for i in range(runs):
            r = one_run(size, seconds, concert, root, families)
            results.append(r)
            say("mixed use in %s, run %d of %d: %s" % (
                size, i + 1, runs, "fits" if r["fits"] else "fails: " + r["why"][:90]))
        table.append((size, results))
    return table
