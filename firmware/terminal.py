"""The terminal core: one transaction at a time, whatever the personality.

Adapters call start() (which refuses at once with Busy while a transaction
runs; `current` is the running one), then `await run(t)`, send the answer,
and report delivered().  A transaction walks the states below; every wait
has a time-out.  While it waits (card, PIN, continue, signature), act()
lets the register or the cardholder step in: abort, continue, sign...
Results are protocol-neutral; adapters map them to their codes.

Outcome names: the runtime queue (`queue`, filled by the control API) comes
first, then the `outcomes` config table: "#<n>" for transaction number n,
then the amount's last 2 digits.  The plain ones (approve,
decline, cancel, no_card, pin_blocked, slow, currency, lost, forbidden,
host_error, signature) run here; the rarer ones ("wrong_pin:2",
"power_cut:after_auth"..., unhappy.NAMES) and the duplicate check run in
firmware/unhappy.py, loaded on their first use.  What each does: the
README's outcome table and docs/CONTROL.md.
"""
import asyncio
import gc

from micropython import const

from firmware import OUTCOMES, PIN_TRIES, clock, loaded, log, room, when_room
from firmware.journal import Journal, Txn

# states
WAIT_CARD = "wait_card"
CARD_READ = "card_read"
PIN = "pin"
WAIT_CONTINUE = "wait_continue"  # t.hold has "card": stopped after the card read
AUTH = "auth"
SIGNATURE = "signature"  # t.hold has "signature" and the outcome asks for one
DONE = "done"
# "confirm": a possible duplicate, the cardholder confirms or not (unhappy.py)
_WAITING = (WAIT_CARD, PIN, WAIT_CONTINUE, SIGNATURE, "confirm")
_SPARE = const(512)  # bytes: a run() coroutine and its task, on a 64-bit build too

# results: approved, declined, cancelled, timeout, error (with a reason)


class Busy(Exception):
    """Another transaction is running."""


class Terminal:
    def __init__(self, cfg, journal=None):
        self.cfg = cfg
        self.journal = journal or Journal()
        self.current = None  # the running Txn
        self.watchers = []  # callback(t) on every state change of any transaction
        self._ev = asyncio.Event()
        self._wake = None
        self.wake_data = None  # what came with the last act()
        self.queue = []  # outcomes of the next transactions, whatever their amounts
        self.interactive = False  # True: a person acts as the cardholder (act "card", "pin")
        self.auth_ms = None  # overrides delays.auth_ms when set
        self.card_in = False  # a chip card left in the reader after the transaction
        self.note = None  # a passing message for the screen ("wrong PIN")
        self._tidying = False  # the journal's compaction task runs
        self._ended = asyncio.Event()  # a transaction ended (for that task)
        self.tidy()

    def tidy(self):
        """Run the journal's compaction, if one is due, in steps between transactions."""
        if self.journal.tidy and not self._tidying:
            self._tidying = True
            asyncio.create_task(self._tidy())

    async def _tidy(self):
        # one step whenever the terminal is idle, and at least one after each
        # transaction, however busy the registers keep it
        j = self.journal
        try:
            while j.tidy:
                if self.current is not None:
                    self._ended.clear()
                    await self._ended.wait()  # run() never hangs: its waits all end
                    await asyncio.sleep_ms(0)  # its answer first
                if self.current is None:
                    j.work()
                await asyncio.sleep_ms(500 if j.short else 2)  # no room: let traffic pass
        finally:
            self._tidying = False

    def start(self, op, amount, cur, src, ref=None, orig=None, data=None, outcome=None):
        """Claim the terminal for a new transaction, or raise Busy at once."""
        if self.current:
            log.event("core", "busy", src, op, "refused; running", self.current.src)
            raise Busy
        if not room(self.cfg["memory"]["headroom"]):
            log.event("core", "busy", src, op, "refused; heap short (%d bytes free)" % gc.mem_free())
            raise Busy
        try:  # room() counts free bytes, not one block: a fragmented heap can still fail
            t = Txn(op, amount, cur, src, ref, orig, data)
            t.own()  # its dict at its final size: nothing of it grows once claimed
            # a block for what the caller makes once the terminal is claimed
            # (the run() coroutine, its task): garbage at once, so the
            # collection a failed allocation runs gives it back
            bytearray(_SPARE)
        except MemoryError:
            gc.collect()
            log.event("core", "busy", src, op, "refused; heap short (no block for it)")
            raise Busy
        rules = self.cfg["outcomes"]
        # a row for this transaction's number ("#7") beats the amount's row;
        # all of it before claiming the terminal: a MemoryError here must
        # leave it free (the caller answers busy), and the queue as it was
        queued = self.queue[0] if not outcome and self.queue else None
        t.outcome = (outcome or queued or rules.get("#%d" % self.journal.next_no)
                     or rules.get("%02d" % (amount % 100)) or rules["default"])
        if queued is not None:
            self.queue.pop(0)
        self.current = t
        self._wake = None
        self._ev.clear()
        self.note = None
        return t

    def release(self, t):
        """Give back the terminal claimed for t when t was never run (no
        room for the task that would run it): nothing is journaled yet, and
        the caller answers as for a short heap.  An adapter that allocates
        between start() and run() beyond what start() made sure of (a
        coroutine and its task) calls this when that allocation fails; else
        the terminal would stay claimed, every later request busy."""
        if not t.no and self.current is t:
            self.current = None

    async def run(self, t):
        """Run t to its end; never raises, never leaves the terminal busy."""
        j = self.journal
        mb = self.cfg["journal"]["max_batch"]
        wait = self.cfg["timeouts"]["request_ms"]
        try:
            if mb and j.in_batch >= mb:  # a full batch is collected first, as real terminals do
                j.settle(clock.now())
                log.event("core", "settled", "batch", j.batch - 1, "automatically: journal.max_batch")
                self.tidy()
            # no room for its record: nothing changed, and the terminal is claimed
            # for it: worth a wait, as a slow terminal's, up to request_ms (its end too)
            await when_room(j.begin, t, ms=wait)
            log.event("core", "start", "#%d" % t.no, t.op, t.amount, t.cur, t.src, t.outcome)
            # OUTCOMES run in _flow; any other (checked when set: outcome()),
            # and every one while the duplicate check is on, in unhappy.py,
            # which wraps _flow
            if self.cfg["card"]["dup_min"] or t.outcome not in OUTCOMES:
                loaded("firmware.unhappy", True)  # (a collection first, if not imported)
                from firmware import unhappy

                await unhappy.run(self, t)
            else:
                await self._flow(t)
        except OSError as e:  # the journal cannot record it: refuse, approve nothing
            log.event("core", "journal-full", repr(e))
            t.result, t.reason = "error", "journal"
        except Exception as e:  # a bug, or a request the journal cannot hold (ValueError:
            log.event("core", "error", repr(e))  # a record too long): it must not wedge the terminal
            t.result, t.reason = "error", "internal"
        try:
            if t.no:  # begun: the outcome is recorded (no room for the record: again after a pause)
                await when_room(j.decide, t, ms=wait)
        except OSError as e:  # cannot record the outcome: it must not stand
            log.event("core", "journal-full", repr(e))
            t.result, t.reason, t.auth, t.withhold = "error", "journal", None, False
        except Exception as e:  # (ValueError) the same, whatever the reason
            log.event("core", "error", repr(e))
            t.result, t.reason, t.auth, t.withhold = "error", "internal", None, False
        self.current = None
        self._ended.set()
        self._state(t, DONE)
        if self.cfg["log"]["heap"]:
            gc.collect()
            log.event("core", "done", "#%d" % t.no, t.result, t.reason or "-", "heap=%d" % gc.mem_alloc())
        else:
            log.event("core", "done", "#%d" % t.no, t.result, t.reason or "-")
        return t

    def delivered(self, t, ok=True):
        if t.delivered:  # told once already: answering it again changes nothing
            return
        self.journal.delivered(t, ok)
        if not ok:
            log.event("core", "undelivered", "#%d" % t.no, t.result)

    def withheld(self, t, name, *peer):
        """t's answer is withheld, as its "lost" outcome asks: recorded as
        not delivered, and the listener `name` says so (for peer)."""
        if t is not None and not t.delivered:
            self.delivered(t, False)
            log.event(name, "drop", *peer, "answer withheld (lost outcome)")

    def act(self, what, data=None):
        """Someone steps in while the transaction waits: "abort" (the register;
        before authorisation, or while the signature is awaited: the
        authorisation is then dropped), "cancel" (the cardholder's red button),
        "continue" (data: e.g. {"amount": 900}), "signed", "unsigned"; the
        cardholder: "card" (data: {"profile": "chip", "brand": "VISA"}) while
        a card is awaited, "pin" (data: {"ok": bool}) or "confirm" (the green
        key: the right PIN) while the PIN is, "confirm" or "cancel" while a
        possible duplicate is shown, "removed" (the card pulled out).
        Returns False when nothing is waiting for it."""
        t = self.current
        if t is None or t.state not in ((WAIT_CARD,) if what == "card" else (PIN,) if what == "pin"
                                        else (PIN, "confirm") if what == "confirm" else _WAITING):
            return False
        self._wake = what
        self.wake_data = data
        self._ev.set()
        return True

    def find_void_target(self, amount=None, cur=None, pred=None):
        """Newest approved, not voided pay/refund/capture of the open batch."""
        return self.journal.find(
            lambda t: t.result == "approved" and not t.voided
            and t.op in ("pay", "refund", "capture") and amount in (None, t.amount)
            and cur in (None, t.cur) and (pred is None or pred(t)))

    def settle(self):
        if self.current:
            raise Busy
        s = self.journal.settle(clock.now())
        log.event("core", "settled", "batch", s["batch"])
        self.tidy()
        return s

    def _state(self, t, s):
        t.state = s
        if t.progress:
            t.progress(t)
        for fn in self.watchers:
            fn(t)

    async def _wait(self, ms):
        """Sleep ms unless woken (abort); returns the wake reason or None.
        A zero wait does not even yield: nobody can act within it, and each
        pass of the loop costs (on the unix port with a TLS client, 1 ms)."""
        if ms > 0 and self._wake is None:
            try:
                await asyncio.wait_for_ms(self._ev.wait(), ms)
            except asyncio.TimeoutError:
                pass
        w = self._wake
        self._wake = None
        self._ev.clear()
        return w

    async def _flow(self, t):
        """Sets t.result ("approved", "declined", "cancelled", "timeout",
        "error") and t.reason, walking the states (unhappy.py wraps it):
        the card, then the PIN, then the authorisation; each step returns
        False once it has set the result."""
        o = t.outcome
        if o == "currency" or t.cur not in self.cfg["currencies"]:
            t.result, t.reason = "error", "currency"
            return
        # void, capture and a refund of a known transaction need no card
        if t.op not in ("void", "capture") and not (t.op == "refund" and t.orig):
            if not await self._card(t, o):
                return
            if o == "pin_blocked" or (t.mode == "chip" and t.op in ("pay", "preauth")):
                if not await self._pin(t, o):
                    return
        await self._authorise(t, o)

    async def _card(self, t, o):
        """Wait for the card (presented on the page in interactive mode),
        read it, and stop for the register if it holds at the card."""
        cfg = self.cfg
        to = cfg["timeouts"]
        self._state(t, WAIT_CARD)
        card_ms = to["card_s"] * 1000
        inter = self.interactive
        w = await self._wait(card_ms if o == "no_card" or inter else min(cfg["delays"]["card_ms"], card_ms))
        card = None
        if w == "card":  # presented on the page or through the API
            card, w = self.wake_data or {}, None
        elif w is None and inter:
            o = "no_card"  # nobody presented one in time
        if w or (card is None and o in ("no_card", "cancel")):
            t.result = "cancelled" if w or o == "cancel" else "timeout"
            t.reason = w or o
            return False
        c = cfg["card"]
        t.pan = "*" * (len(c["pan"]) - 4) + c["pan"][-4:]
        t.brand, t.mode, t.aid, t.exp = c["brand"], c["mode"], c["aid"], c["expiry"]
        if card:
            t.mode = card.get("profile") or t.mode
            t.brand = card.get("brand") or t.brand
        self.card_in = inter and t.mode == "chip"  # auto mode: taken out at once
        self._state(t, CARD_READ)
        if "card" in t.hold:  # the register looks at the card first
            self._state(t, WAIT_CONTINUE)
            w = await self._wait(to["continue_s"] * 1000)
            if w != "continue":
                t.result = "cancelled" if w else "timeout"
                t.reason = w or "no_continue"
                return False
            if self.wake_data and self.wake_data.get("amount"):
                t.amount = self.wake_data["amount"]
        return True

    async def _pin(self, t, o):
        """PIN entry: typed on the page in interactive mode, else entered
        after delays.pin_ms (PIN_TRIES wrong ones for "pin_blocked")."""
        pin_ms = self.cfg["timeouts"]["pin_s"] * 1000
        self._state(t, PIN)
        if self.interactive:
            from firmware import cardholder  # only when someone types PINs

            return await cardholder.pin(self, t, o, pin_ms)
        for _ in range(PIN_TRIES if o == "pin_blocked" else 1):
            w = await self._wait(min(self.cfg["delays"]["pin_ms"], pin_ms))
            if w:
                t.result, t.reason = "cancelled", w
                return False
        if o == "pin_blocked":
            t.result, t.reason = "declined", "pin"
            return False
        return True

    async def _authorise(self, t, o):
        """The bank's answer after delays.auth_ms (host error past
        timeouts.auth_s), then the signature if the outcome asks for one."""
        d = self.cfg["delays"]
        to = self.cfg["timeouts"]
        self._state(t, AUTH)
        ms = d["slow_auth_ms"] if o == "slow" else d["auth_ms"] if self.auth_ms is None else self.auth_ms
        host_ms = to["auth_s"] * 1000
        if ms:
            await asyncio.sleep_ms(min(ms, host_ms))
        if ms > host_ms or o == "host_error":
            t.result, t.reason = "error", "host"
        elif o in ("decline", "forbidden"):
            t.result, t.reason = "declined", o
        else:
            t.auth = "%06d" % ((t.no * 7919 + t.amount * 31) % 1000000)
            if o == "signature" and "signature" in t.hold:
                self._state(t, SIGNATURE)
                w = await self._wait(to["signature_s"] * 1000)
                if w != "signed":
                    t.result, t.reason = ("cancelled", w) if w == "abort" else ("declined", "signature")
                    t.auth = None
                    return
            t.result = "approved"
            t.withhold = o == "lost"
