"""The journal under a storm of power cuts (issue 23): kill -9 at a random
instant of every round while three Concert registers, a P3 POS and a
Synqpay POS pay concurrently, with settlements (and so compactions, at the
default journal.keep) happening during the storm; on plain files and on a
littlefs image.  After every restart:

- every approval a register received is in the journal exactly once, with
  its amount (and its number or authorisation code);
- no transaction number is ever used for two transactions;
- no reference is charged twice: a register retries what it never heard
  the end of (and, for Concert and P3, pays `.07`, approved with the
  answer lost, and retries it 6 payments later, outside journal.recent);
- the free space the firmware reports at boot is what a fresh mount of the
  image reports (littlefs);
- GET /api/transactions answers;
- boot time stays flat.

UNDERSTUDY_STORM_ROUNDS sets the rounds per storage (default 40: about
20 s each); `make storm` runs 300.  Figures: docs/JOURNAL.md.
"""
import json
import os
import random
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

import p3_client
from concert_client import odoo
from conftest import CLOCK, MPY_HEAP, base_config, merge
from synqpay_client import KEY, Link
from synqpay_client import request as synqpay_request
from understudy import paths
from understudy.launch import Firmware, micropython
from web_client import get
from wire import concert_tlv as tlv
from wire import records_reader

ROUNDS = int(os.environ.get("UNDERSTUDY_STORM_ROUNDS", "40"))
ZERO = b"\x00" * 4
STORM = {
    "log": {"frames": False},
    "delays": {"card_ms": 4, "pin_ms": 2, "auth_ms": 6},
    "faults": {"answer_delay_ms": 3},
    "synqpay": {"otp": "123456", "api_key": "1234abcd"},
    "timeouts": {"request_ms": 1000},
    "listeners": {"concert-serial": {"enabled": False}, "synqpay-serial": {"enabled": False},
                  "synqpay-tls": {"enabled": False}, "p3-ws": {"enabled": False}},
}


@pytest.fixture
def fw_root():
    return "mpy"


class Ledger:
    """What the registers know: approvals received (with what identifies
    them), and what they still have to find out."""

    def __init__(self):
        self.lock = threading.Lock()
        self.approved = {}  # (src, ref) -> (amount, no or None, auth or None)
        self.finished = set()  # (src, ref) whose outcome the register heard
        self.retries = 0  # requests sent again after a cut or a lost answer
        self.from_journal = 0  # approvals a register heard twice (the same one)
        self.problems = []  # what a register saw wrong (its thread must not swallow it)

    def ok(self, src, ref, amount, no=None, auth=None):
        with self.lock:
            k = (src, ref)
            if k in self.approved:  # told twice: it must be the same transaction
                a = self.approved[k]
                if not (a[0] == amount and (no is None or a[1] in (None, no)) and (
                        auth is None or a[2] in (None, auth))):
                    self.problems.append("told two approvals for %s: %s and %s" % (k, a, (amount, no, auth)))
                self.from_journal += 1
            else:
                self.approved[k] = (amount, no, auth)
            self.finished.add(k)

    def done(self, src, ref):
        with self.lock:
            self.finished.add((src, ref))


class Register(threading.Thread):
    """Pays in a loop until the terminal dies; keeps what it has not heard
    the end of, and retries it (same reference) in the next round."""

    def __init__(self, fw, ledger, name, seed):
        super().__init__(daemon=True)
        self.fw, self.ledger, self.name = fw, ledger, name
        self.rnd = random.Random(seed)
        self.pending = None  # (ref, amount) sent, outcome unknown
        self.later = []  # [(payments to wait, ref, amount)]: lost answers, retried later
        self.seq = 0
        self.stop = False
        self.busy = False  # the pending one was refused as busy (not a retry)

    def next_payment(self):
        for i, (wait, ref, amount) in enumerate(self.later):
            if wait <= 0:
                self.later.pop(i)
                self.ledger.retries += 1
                return ref, amount
        self.later = [(w - 1, r, a) for w, r, a in self.later]
        if self.pending:
            if not self.busy:
                self.ledger.retries += 1
            self.busy = False
            return self.pending
        self.seq += 1
        cents = self.rnd.choice((0, 0, 0, 0, 0, 0, 1, 7)) if self.lost_ok else self.rnd.choice((0, 0, 0, 1))
        return "%s-%d" % (self.name, self.seq), 100 * self.rnd.randrange(10, 99) + cents

    def run(self):
        try:
            self.session()
        except (OSError, p3_client.Closed, AssertionError, ValueError, TypeError, KeyError,
                tlv.TLVError):
            pass  # the terminal was cut: what is pending stays pending


class ConcertRegister(Register):
    lost_ok = True

    def session(self):
        while not self.stop:
            if self.rnd.random() < 0.03:
                self.ask(b"CZ0040300CJ012012345678901CA00201CD001B")  # settlement
                continue
            ref, amount = self.pending = self.next_payment()
            req = odoo(amount) + ("CF%03d%s" % (len(ref), ref)).encode()
            a = self.ask(req)
            if a is None:  # closed without an answer: lost (.07), or the cut
                if amount % 100 == 7:
                    self.later.append((6, ref, amount))
                    self.pending = None
                    continue
                return
            self.pending = None
            if a["AE"] == "10":
                self.ledger.ok("concert-ip", ref, amount, auth=a.get("AC"))
            elif a.get("AF") == "00":
                self.pending = (ref, amount)  # busy: the same payment again
                self.busy = True
                time.sleep(0.002)
            else:
                self.ledger.done("concert-ip", ref)

    def ask(self, req):
        s = socket.create_connection(self.fw.address("concert-ip"), timeout=3)
        try:
            s.sendall(req)
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    return None
                data += chunk
                if tlv.scan(data) == len(data):
                    return tlv.decode(data)
        finally:
            s.close()


class P3Register(Register):
    lost_ok = True

    def session(self):
        c = p3_client.connect(self.fw, "tcp")
        try:
            assert c.login()["status"] == "OK"
            while not self.stop:
                ref, amount = self.pending = self.next_payment()
                tag = c.execute(amount / 100, customIdentifier=ref)
                _, final = c.until_final(tag, 3)
                if final is None:
                    if amount % 100 == 7:  # lost: the connection is closed
                        self.later.append((6, ref, amount))
                        self.pending = None
                        c.close()
                        c = p3_client.connect(self.fw, "tcp")
                        assert c.login()["status"] == "OK"
                        continue
                    return
                self.pending = None
                if final.get("status") != "OK":
                    self.pending = (ref, amount)  # ACCESSORY_BUSY
                    self.busy = True
                    time.sleep(0.002)
                    continue
                tr = final["executeTransactionResponse"]["transaction"]
                if tr["status"] == "APPROVED":
                    self.ledger.ok("p3", ref, amount, no=int(tr["identifier"].rsplit("-", 1)[1]))
                else:
                    self.ledger.done("p3", ref)
        finally:
            c.close()


class SynqpayRegister(Register):
    lost_ok = False

    def call(self, lk, method, params, rid):
        """The answer to this request; a result resent on reconnect (cached
        responses: a sale's result the last link never got) is taken in
        on the way."""
        lk.send(synqpay_request(method, params, rid, KEY))
        while True:
            _, ev = lk.answer(3)
            assert ev is not None, "closed"
            r = json.loads(ev[2])
            if r.get("id") == rid:
                return r
            if str(r.get("id", "")).startswith("s:") and "result" in r:
                ref = r["id"][2:]
                if self.pending and self.pending[0] == ref:
                    self.record(ref, self.pending[1], r["result"]["transaction"])
                    self.pending = None

    def session(self):
        lk = Link(self.fw.address("synqpay"), timeout=3)
        try:
            while not self.stop:
                if self.pending:  # did it happen?  ask before paying again
                    ref, amount = self.pending
                    r = self.call(lk, "getTransaction", {"lookupMethod": "REF_ID", "lookupValue": ref},
                                  "q:" + ref)
                    if "result" in r and self.pending:
                        self.record(ref, amount, r["result"]["transaction"])
                        self.pending = None
                        continue
                ref, amount = self.pending = self.next_payment()
                sale = {"paymentMethod": "CREDIT_CARD", "transactionType": "SALE",
                        "referenceId": ref, "amount": amount}
                r = self.call(lk, "startTransaction", sale, "s:" + ref)
                if "error" in r:
                    assert r["error"]["code"] in (201, 303), r  # busy; exists: looked up next
                    self.busy = True
                    time.sleep(0.002)
                    continue
                self.record(ref, amount, r["result"]["transaction"])
                self.pending = None
        finally:
            lk.close()

    def record(self, ref, amount, tr):
        if tr["referenceId"] != ref or tr["amount"] != amount:
            self.ledger.problems.append("asked for %s %d, got %s" % (ref, amount, tr))
        if tr["transactionStatus"] == "CAPTURED":
            self.ledger.ok("synqpay", ref, amount, no=int(tr["transactionId"][12:]),
                           auth=None)
        else:
            self.ledger.done("synqpay", ref)


def read_journal(data):
    """{no: (B record, D record or None)} of a journal file's bytes."""
    rd = records_reader.Reader()
    out = {}
    counts = {}
    for r in rd.feed(data[4:]) + rd.end():
        if r[0] in ("B", "D"):
            counts[(r[0], r[1])] = counts.get((r[0], r[1]), 0) + 1
            b, d = out.get(r[1], (None, None))
            out[r[1]] = (r, d) if r[0] == "B" else (b, r)
    twice = [k for k, n in counts.items() if n > 1]
    assert not twice, "records written twice in one file: %s" % twice[:5]
    return out


_FLASH_PROBE = """
import os, sys, vfs
sys.path.insert(0, %r)
import unix_flash
dev = unix_flash.FileBlocks(%r, %d)
vfs.mount(vfs.VfsLfs2(dev), "/f")
st = os.statvfs("/f")
out = {"free": st[1] * st[4], "tmp": False}
try:
    os.stat("/f/state/journal.bin.tmp")
    out["tmp"] = True
except OSError:
    pass
with open("/f/state/journal.bin", "rb") as f:
    data = f.read()
with open(%r, "wb") as g:
    g.write(data)
print("PROBE", out["free"], int(out["tmp"]))
"""


def flash_view(state, kb, dump):
    """(free bytes, compaction copy present) as a fresh mount of a copy of
    the image reports; the journal's bytes written to dump."""
    img = os.path.join(state, "probe.img")
    shutil.copyfile(os.path.join(state, "flash.img"), img)
    code = _FLASH_PROBE % (os.path.join(paths.ROOT, "firmware", "board"), img, kb * 2, dump)
    r = subprocess.run([micropython(), "-c", code], capture_output=True, text=True, timeout=30)
    m = re.search(r"PROBE (\d+) (\d)", r.stdout)
    assert m, r.stdout + r.stderr
    return int(m.group(1)), m.group(2) == "1"


def read(fw, rnd_no, problems):
    """GET /api/transactions (n=50), streamed from the journal: it answers."""
    try:
        status, body = get(fw, "/api/transactions")
        n = len(body["transactions"])
    except (OSError, IndexError, ValueError, TypeError, KeyError):  # no answer, or half of one
        status = n = None
    if status != 200 or (rnd_no and not n):
        problems.append("round %d: GET /api/transactions answered %s (%s rows):\n%s"
                        % (rnd_no, status, n, "\n".join(fw.output().splitlines()[-5:])))


def storm(tmp_path, flash, rounds, seed):
    rnd = random.Random(seed)
    state = str(tmp_path / "board")
    kb = 256
    cfg = merge(base_config(), STORM)
    fw = Firmware(root=paths.MPY, heap=MPY_HEAP, config=cfg, clock=CLOCK, state_dir=state,
                  flash="%dK" % kb if flash else None)
    ledger = Ledger()
    history = {}  # no -> (B, D) as first seen
    boots = []
    kills = {"in a transaction": 0, "between transactions": 0, "during a compaction": 0}  # where they landed
    concert = [ConcertRegister(fw, ledger, "c%d" % i, seed * 10 + i) for i in range(3)]
    p3 = P3Register(fw, ledger, "p", seed * 10 + 5)
    sq = SynqpayRegister(fw, ledger, "s", seed * 10 + 6)
    regs = concert + [p3, sq]
    dump = str(tmp_path / "journal.dump")
    problems = []
    t0 = time.monotonic()
    fw.start()
    lk = Link(fw.address("synqpay"))  # pair once, as a register does
    assert lk.call("pair", {"serialNumber": "UST00001"}, key=ZERO)["result"] is None
    assert "apiKey" in lk.call("authenticate", {"otp": "123456"}, key=ZERO)["result"]
    lk.close()
    fw.kill()
    free = flash_view(state, kb, dump)[0] if flash else 0
    compactions = settlements = replayed = resumed = 0
    for rnd_no in range(rounds):
        t = time.monotonic()
        fw.start()
        boots.append(time.monotonic() - t)
        out = fw.output()
        m = re.search(r"journal replayed .*?(\d+) bytes free", out)
        if flash:
            assert m, out
            fw_free = int(m.group(1))
            if abs(fw_free - free) > 4 * 512:
                problems.append("round %d: firmware sees %d bytes free, a fresh mount %d"
                                % (rnd_no, fw_free, free))
        read(fw, rnd_no, problems)
        threads = []
        for reg in regs:
            th = type(reg)(fw, ledger, reg.name, 0)
            th.rnd, th.pending, th.later, th.seq = reg.rnd, reg.pending, reg.later, reg.seq
            threads.append(th)
            th.start()
        if rnd_no % 2:
            read(fw, rnd_no, problems)  # under traffic, a compaction maybe running
        time.sleep(rnd.uniform(0.05, 0.6))
        lines = fw.output().splitlines()
        fw.kill()
        for th, reg in zip(threads, regs):
            th.join(5)
            assert not th.is_alive(), "a register hangs"
            reg.pending, reg.later, reg.seq = th.pending, th.later, th.seq
        core = [ln for ln in lines if ln.startswith("core start") or ln.startswith("core done")]
        busy = core and core[-1].startswith("core start")
        compactions += sum(1 for ln in lines if ln.startswith("journal compacted"))
        settlements += sum(1 for ln in lines if ln.startswith("core settled"))
        replayed += sum(1 for ln in lines if " retry #" in ln)
        resumed += sum(1 for ln in lines if ln.startswith("journal compaction resumed"))
        if flash:
            free, copying = flash_view(state, kb, dump)
        else:
            shutil.copyfile(os.path.join(state, "journal.bin"), dump)
            copying = os.path.exists(os.path.join(state, "journal.bin.tmp"))
        where = "during a compaction" if copying else "in a transaction" if busy else "between transactions"
        kills[where] += 1
        with open(dump, "rb") as f:
            now = read_journal(f.read())
        for no, (b, d) in now.items():
            if b is None:
                continue
            seen = history.get(no)
            if seen is None or (seen[1] is None and d is not None):
                if seen is not None and seen[0] != b:
                    problems.append("number %d reused: %s then %s" % (no, seen[0], b))
                history[no] = (b, d)
            elif seen[0] != b or (d is not None and seen[1] != d):
                problems.append("number %d changed: %s then %s" % (no, seen, (b, d)))
    t = time.monotonic()
    fw.start()  # a last boot: its checks, then a clean stop
    boots.append(time.monotonic() - t)
    read(fw, rounds, problems)
    fw.stop()
    # every approval a register received: in the journal exactly once
    approved = {}
    for no, (b, d) in history.items():
        if d is not None and d[2] == "approved":
            approved.setdefault((b[7], b[8]), []).append((no, b, d))
    problems += ledger.problems
    for k, got in approved.items():
        if len(got) > 1:
            problems.append("charged twice: %s %s" % (k, [g[0] for g in got]))
    for k, (amount, no, auth) in ledger.approved.items():
        got = approved.get(k)
        if not got:
            problems.append("approval %s (%d) the register received is not in the journal" % (k, amount))
            continue
        n, b, d = got[0]
        if b[5] != amount or (no is not None and no != n) or (auth is not None and d[4] != auth):
            problems.append("approval %s: register %s, journal #%d %s %s"
                            % (k, (amount, no, auth), n, b[5], d[4]))
    figures = {
        "rounds": rounds, "storage": "littlefs %dK" % kb if flash else "files",
        "seconds": round(time.monotonic() - t0, 1),
        "transactions": len(history), "approvals checked": len(ledger.approved),
        "retries": ledger.retries, "retries answered from the journal": replayed,
        "kills": kills, "settlements": settlements, "compactions finished": compactions,
        "compactions resumed after a cut": resumed,
        "boot ms first 5 / last 5": (round(1000 * sum(boots[:5]) / 5), round(1000 * sum(boots[-5:]) / 5)),
        "boot ms median by quarter": [round(1000 * sorted(q)[len(q) // 2]) for q in (
            boots[i * len(boots) // 4:(i + 1) * len(boots) // 4] for i in range(4)) if q],
        "journal bytes at the end": os.path.getsize(dump),
    }
    print("STORM", json.dumps(figures))
    return problems, figures, boots


@pytest.mark.parametrize("flash", [False, True], ids=["files", "littlefs"])
def test_storm_of_power_cuts_under_concurrent_traffic(tmp_path, flash):
    problems, figures, _ = storm(tmp_path, flash, ROUNDS, 20261206 + flash)
    assert not problems, "\n".join(problems[:20])
    assert figures["approvals checked"] > 5 * ROUNDS, figures
    assert figures["retries answered from the journal"] > 0, figures
    first, last = figures["boot ms first 5 / last 5"]
    assert last < 2 * first + 150, figures  # flat: the journal does not keep growing
