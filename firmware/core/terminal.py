"""The terminal core: one transaction at a time, whatever the personality.

Adapters call start() (which refuses at once with Busy while a transaction
runs), then `await run(t)`, send the answer, and report delivered().  The
transaction walks the states below; each wait has a time-out and, while the
card or PIN is awaited, can be cut short by abort() (the register) or by the
cardholder.  Results are protocol-neutral: adapters map them to their codes.
"""
import asyncio
import gc

from firmware import log
from firmware.core import clock, outcomes
from firmware.core.journal import Journal

IDLE = "idle"
WAIT_CARD = "wait_card"
CARD_READ = "card_read"
PIN = "pin"
AUTH = "auth"
DONE = "done"
_ABORTABLE = (WAIT_CARD, PIN)

# results
APPROVED = "approved"
DECLINED = "declined"
CANCELLED = "cancelled"
TIMEOUT = "timeout"
ERROR = "error"

OPS = ("pay", "refund", "void", "preauth", "capture")
_NO_CARD_OPS = ("void", "capture")


class Busy(Exception):
    """Another transaction is running."""


class Txn:
    """One transaction; also the journal record."""

    def __init__(self, op, amount, cur, src, ref=None, orig=None, data=None):
        self.no = 0
        self.batch = 0
        self.ts = 0
        self.op = op
        self.amount = amount
        self.cur = cur
        self.src = src  # personality that asked
        self.ref = ref  # the register's reference, if its protocol has one
        self.orig = orig  # number of the transaction voided/captured/refunded
        self.data = data  # small protocol extras kept with the record
        self.outcome = None
        self.state = IDLE
        self.result = None
        self.reason = None
        self.auth = None
        self.pan = None  # masked
        self.brand = None
        self.mode = None  # chip, contactless, magstripe
        self.aid = None
        self.exp = None
        self.delivered = False
        self.voided = False
        self.drop = False  # "lost" outcome: the adapter drops the answer
        self.progress = None  # callback(t) on each state change; not kept

    def approved(self):
        return self.result == APPROVED


def mask(pan):
    return "*" * (len(pan) - 4) + pan[-4:]


class Terminal:
    def __init__(self, cfg, journal=None):
        self.cfg = cfg
        self.journal = journal or Journal()
        self.current = None
        self.watchers = []  # callback(t) on every state change of any transaction
        self._ev = asyncio.Event()
        self._wake = None

    # ---- what adapters call -------------------------------------------------

    def busy(self):
        return self.current is not None

    def start(self, op, amount, cur, src, ref=None, orig=None, data=None, outcome=None):
        """Claim the terminal for a new transaction, or raise Busy at once."""
        if self.current is not None:
            log.event("core", "busy", src, op, "refused; running", self.current.src)
            raise Busy()
        t = Txn(op, amount, cur, src, ref, orig, data)
        t.ts = clock.now()
        t.outcome = outcome or outcomes.choose(self.cfg["outcomes"], amount)
        self.current = t
        self._wake = None
        self._ev.clear()
        return t

    async def run(self, t):
        """Run t to its end; never raises, never leaves the terminal busy."""
        try:
            try:
                self.journal.begin(t)
            except OSError as e:
                log.event("core", "journal-full", repr(e))
                self._end(t, ERROR, "journal")
                return t
            log.event("core", "start", "#%d" % t.no, t.op, t.amount, t.cur, t.src, t.outcome)
            await self._flow(t)
        except Exception as e:  # a bug must not wedge the terminal
            log.event("core", "error", repr(e))
            self._end(t, ERROR, "internal")
        finally:
            t.state = DONE
            self.current = None
            self._notify(t)
        try:
            self.journal.decide(t)
        except OSError as e:
            log.event("core", "journal-error", repr(e))
        if self.cfg["log"]["heap"]:
            gc.collect()
            log.event("core", "done", "#%d" % t.no, t.result, t.reason or "-", "heap=%d" % gc.mem_alloc())
        else:
            log.event("core", "done", "#%d" % t.no, t.result, t.reason or "-")
        return t

    def delivered(self, t, ok=True):
        self.journal.delivered(t, ok)
        if not ok:
            log.event("core", "undelivered", "#%d" % t.no, t.result)

    def abort(self, who="abort"):
        """The register asks to stop: honoured while card or PIN is awaited."""
        t = self.current
        if t is None or t.state not in _ABORTABLE:
            return False
        self._wake = who
        self._ev.set()
        return True

    def abortable(self):
        t = self.current
        return t is not None and t.state in _ABORTABLE

    def last(self):
        return self.journal.last()

    def find_void_target(self, amount=None, cur=None, pred=None):
        """Newest approved, not voided pay/refund/capture of the open batch."""
        for t in self.journal.newest():
            if t.result != APPROVED or t.voided or t.op not in ("pay", "refund", "capture"):
                continue
            if amount is not None and t.amount != amount:
                continue
            if cur is not None and t.cur != cur:
                continue
            if pred is None or pred(t):
                return t
        return None

    def settle(self):
        if self.current is not None:
            raise Busy()
        s = self.journal.settle(clock.now())
        log.event("core", "settled", "batch", s["batch"])
        return s

    # ---- the flow -----------------------------------------------------------

    def _notify(self, t):
        if t.progress:
            t.progress(t)
        for fn in self.watchers:
            fn(t)

    def _state(self, t, s):
        t.state = s
        self._notify(t)

    def _end(self, t, result, reason=None):
        t.result = result
        t.reason = reason

    async def _wait(self, ms):
        """Sleep ms unless woken (abort); returns the wake reason or None."""
        if ms <= 0:
            await asyncio.sleep_ms(0)
        elif self._wake is None:
            try:
                await asyncio.wait_for_ms(self._ev.wait(), ms)
            except asyncio.TimeoutError:
                pass
        w = self._wake
        self._wake = None
        self._ev.clear()
        return w

    async def _flow(self, t):
        cfg = self.cfg
        d = cfg["delays"]
        to = cfg["timeouts"]
        o = t.outcome
        if o == "currency" or t.cur not in cfg["currencies"]:
            return self._end(t, ERROR, "currency")
        if t.op not in _NO_CARD_OPS:
            self._state(t, WAIT_CARD)
            card_to = to["card_s"] * 1000
            if o == "no_card":
                w = await self._wait(card_to)
                return self._end(t, CANCELLED if w else TIMEOUT, w or "no_card")
            w = await self._wait(min(d["card_ms"], card_to))
            if w:
                return self._end(t, CANCELLED, w)
            if o == "cancel":
                return self._end(t, CANCELLED, "cancel")
            self._read_card(t)
            if o == "pin_blocked" or (t.mode == "chip" and t.op in ("pay", "preauth")):
                self._state(t, PIN)
                for _ in range(3 if o == "pin_blocked" else 1):
                    w = await self._wait(min(d["pin_ms"], to["pin_s"] * 1000))
                    if w:
                        return self._end(t, CANCELLED, w)
                if o == "pin_blocked":
                    return self._end(t, DECLINED, "pin")
        self._state(t, AUTH)
        ms = d["slow_auth_ms"] if o == "slow" else d["auth_ms"]
        if ms > to["auth_s"] * 1000:
            await asyncio.sleep_ms(to["auth_s"] * 1000)
            return self._end(t, ERROR, "host")
        await asyncio.sleep_ms(ms)
        if o == "decline":
            return self._end(t, DECLINED, "decline")
        if o == "forbidden":
            return self._end(t, DECLINED, "forbidden")
        if o == "host_error":
            return self._end(t, ERROR, "host")
        t.auth = "%06d" % ((t.no * 7919 + t.amount * 31) % 1000000)
        self._end(t, APPROVED)
        if o == "lost":
            t.drop = True

    def _read_card(self, t):
        c = self.cfg["card"]
        t.pan = mask(c["pan"])
        t.brand = c["brand"]
        t.mode = c["mode"]
        t.aid = c["aid"]
        t.exp = c["expiry"]
        self._state(t, CARD_READ)
