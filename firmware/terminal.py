"""The terminal core: one transaction at a time, whatever the personality.

Adapters call start() (which refuses at once with Busy while a transaction
runs; `current` is the running one), then `await run(t)`, send the answer,
and report delivered().  A transaction walks the states below; every wait
has a time-out.  While it waits (card, PIN, continue, signature), act()
lets the register or the cardholder step in: abort, continue, sign...
Results are protocol-neutral; adapters map them to their codes.

Outcome names: the runtime queue (`queue`, filled by the control API) comes
first, then the `outcomes` config table: "#<n>" for transaction number n,
then the amount's last 2 digits.  The names, and their arguments
("wrong_pin:2", "power_cut:after_auth"), are in config.OUTCOMES; what each
does: the README's outcome table and docs/CONTROL.md.
"""
import asyncio
import gc

from micropython import const

from firmware import clock, log, room
from firmware.journal import Journal

# states
IDLE = "idle"
WAIT_CARD = "wait_card"
CARD_READ = "card_read"
PIN = "pin"
WAIT_CONTINUE = "wait_continue"  # t.hold has "card": stopped after the card read
AUTH = "auth"
SIGNATURE = "signature"  # t.hold has "signature" and the outcome asks for one
CONFIRM = "confirm"  # a possible duplicate: the cardholder confirms or not
DONE = "done"
_WAITING = (WAIT_CARD, PIN, WAIT_CONTINUE, SIGNATURE, CONFIRM)
_ABORTABLE = _WAITING
_SPARE = const(512)  # bytes: a run() coroutine and its task, on a 64-bit build too

# results: approved, declined, cancelled, timeout, error (with a reason)


class Busy(Exception):
    """Another transaction is running."""


class Txn:
    """One transaction; also the journal record."""

    def __init__(self, op, amount, cur, src, ref, orig, data):
        self.op = op  # pay, refund, void, preauth, capture
        self.amount = amount  # minor units
        self.cur = cur  # ISO 4217 numeric
        self.src = src  # personality that asked
        self.ref = ref  # the register's reference, if its protocol has one
        self.orig = orig  # number of the transaction voided/captured/refunded
        self.data = data  # small protocol extras kept with the record
        self.no = self.batch = 0
        self.ts = clock.now()
        self.state = IDLE
        self.outcome = self.result = self.reason = self.auth = None
        self.pan = self.brand = self.mode = self.aid = self.exp = None  # card, PAN masked
        self.delivered = self.voided = False
        self.drop = False  # "lost" outcome: the adapter withholds the answer
        # where the adapter wants the flow to stop ("card", "signature"), and
        # what its protocol can say ("partial": an approved amount of its own)
        self.hold = ()
        self.progress = None  # callback(t) on each state change; not kept


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
        self.mode = "auto"  # or "interactive": the cardholder acts (act "card", "pin")
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

    async def run(self, t):
        """Run t to its end; never raises, never leaves the terminal busy."""
        j = self.journal
        mb = self.cfg["journal"]["max_batch"]
        try:
            if mb and j.in_batch >= mb:  # a full batch is collected first, as real terminals do
                j.settle(clock.now())
                log.event("core", "settled", "batch", j.batch - 1, "automatically: journal.max_batch")
                self.tidy()
            j.begin(t)
            log.event("core", "start", "#%d" % t.no, t.op, t.amount, t.cur, t.src, t.outcome)
            await self._flow(t)
        except OSError as e:  # the journal cannot record it: refuse, approve nothing
            log.event("core", "journal-full", repr(e))
            t.result, t.reason = "error", "journal"
        except Exception as e:  # a bug, or a request the journal cannot hold (ValueError:
            log.event("core", "error", repr(e))  # a record too long): it must not wedge the terminal
            t.result, t.reason = "error", "internal"
        try:
            if t.no:  # begun: the outcome is recorded
                self.journal.decide(t)
                if t.outcome == "power_cut:after_auth":
                    self._cut(t, "after_auth")  # decided, not answered
        except OSError as e:  # cannot record the outcome: it must not stand
            log.event("core", "journal-full", repr(e))
            t.result, t.reason, t.auth, t.drop = "error", "journal", None, False
        except Exception as e:  # (ValueError) the same, whatever the reason
            log.event("core", "error", repr(e))
            t.result, t.reason, t.auth, t.drop = "error", "internal", None, False
        self.current = None
        self.note = None
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
        if ok and t.outcome == "power_cut:after_answer":
            self._cut(t, "after_answer")
        if not ok:
            log.event("core", "undelivered", "#%d" % t.no, t.result)

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
        if t is None or t.state not in (_ABORTABLE if what == "abort" else (WAIT_CARD,) if what == "card"
                                        else (PIN,) if what == "pin" else (PIN, CONFIRM) if what == "confirm"
                                        else _WAITING):
            return False
        self._wake = what
        self.wake_data = data
        self._ev.set()
        return True

    def abort(self):
        return self.act("abort")

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
        "error") and t.reason, walking the steps: card, PIN, duplicate
        check, authorisation.  A step that ends the transaction returns
        False.  t.outcome is "name" or "name:argument" (power_cut:after_auth)."""
        o, _, arg = t.outcome.partition(":")
        if o == "currency" or t.cur not in self.cfg["currencies"]:
            t.result, t.reason = "error", "currency"
            return
        # void, capture and a refund of a known transaction need no card
        if t.op not in ("void", "capture") and not (t.op == "refund" and t.orig):
            if not (await self._card(t, o, arg) and await self._continue(t)
                    and await self._pin(t, o, arg) and await self._duplicate(t, o, arg)):
                return
        await self._auth(t, o, arg)

    async def _present(self, t, o, first):
        """Waits for a card: its data ({} in automatic mode), or None once
        the result is set (time-out, cancelled)."""
        to = self.cfg["timeouts"]
        self._state(t, WAIT_CARD)
        card_ms = to["card_s"] * 1000
        inter = self.mode == "interactive"
        w = await self._wait(card_ms if (o == "no_card" and first) or inter
                             else min(self.cfg["delays"]["card_ms"], card_ms))
        card = None
        if w == "card":  # presented on the page or through the API
            card, w = self.wake_data or {}, None
        elif w is None and inter:
            o = "no_card"  # nobody presented one in time
        if w or (card is None and first and o in ("no_card", "cancel")):
            t.result = "cancelled" if w or o == "cancel" else "timeout"
            t.reason = w or o
            return None
        return card or {}

    async def _card(self, t, o, arg):
        """The card step: presented, read; a contactless tap refused for
        strong authentication (sca: insert the card) or a chip that cannot
        be read (fallback: swipe it) asks for the card again."""
        card = await self._present(t, o, True)
        if card is None:
            return False
        c = self.cfg["card"]
        t.pan = "*" * (len(c["pan"]) - 4) + c["pan"][-4:]
        t.brand, t.mode, t.aid, t.exp = c["brand"], c["mode"], c["aid"], c["expiry"]
        t.mode = card.get("profile") or t.mode
        t.brand = card.get("brand") or t.brand
        again = None
        if o == "sca" and t.mode != "magstripe":
            t.mode, again = "contactless", ("Insert card", "chip")  # the tap the issuer refused
        elif o == "fallback" and t.mode == "chip":
            again = ("Chip error, swipe card", "magstripe")
        if again:
            self._state(t, CARD_READ)
            log.event("core", "card", "#%d" % t.no, t.mode, "refused:", again[0])
            self.note = again[0]
            card = await self._present(t, o, False)
            self.note = None
            if card is None:
                return False
            t.mode = again[1]  # whatever the page said: inserted, swiped
        self.card_in = self.mode == "interactive" and t.mode == "chip"  # auto mode: taken out at once
        self._state(t, CARD_READ)
        if o == "power_cut" and arg == "after_card":
            self._cut(t, arg)
        return True

    async def _continue(self, t):
        if "card" not in t.hold:  # the register looks at the card first
            return True
        self._state(t, WAIT_CONTINUE)
        w = await self._wait(self.cfg["timeouts"]["continue_s"] * 1000)
        if w != "continue":
            t.result = "cancelled" if w else "timeout"
            t.reason = w or "no_continue"
            return False
        if self.wake_data and self.wake_data.get("amount"):
            t.amount = self.wake_data["amount"]
        return True

    async def _pin(self, t, o, arg):
        """The PIN step (chip cards paying): right at once, wrong once or
        twice first (wrong_pin[:2]), three times wrong (pin_blocked); the
        card pulled out meanwhile (removed)."""
        d = self.cfg["delays"]
        ms = self.cfg["timeouts"]["pin_s"] * 1000
        if o != "pin_blocked" and not (t.mode == "chip" and t.op in ("pay", "preauth")):
            if o == "removed":  # no PIN to wait for: pulled out while it is read
                return self._removed(t)
            return True
        self._state(t, PIN)
        if self.mode == "interactive":
            from firmware import cardholder  # only when someone types PINs

            return await cardholder.pin(self, t, o, ms)
        wrong = 3 if o == "pin_blocked" else int(arg or 1) if o == "wrong_pin" else 0
        for i in range(wrong + 1):
            w = await self._wait(min(d["pin_ms"], ms))
            if w:
                t.result, t.reason = "cancelled", w
                return False
            if o == "removed":
                return self._removed(t)
            if i == wrong:
                break
            log.event("core", "pin", "#%d" % t.no, "wrong")
            if i == 2:
                t.result, t.reason = "declined", "pin"
                return False
            self.note = "Wrong PIN, %d tries left" % (2 - i)
            self._state(t, PIN)
        self.note = None
        return True

    def _removed(self, t):
        log.event("core", "card", "#%d" % t.no, "removed before the end")
        self.card_in = False
        t.result, t.reason = "cancelled", "removed"
        return False

    async def _duplicate(self, t, o, arg):
        """Possible duplicate: the same card and amount approved within
        duplicate_min minutes (or the outcome says so): the cardholder
        confirms (green key) or not (red key)."""
        if o != "duplicate" and not self._seen(t):
            return True
        self.note = "Possible duplicate, OK?"
        self._state(t, CONFIRM)
        if self.mode == "interactive":
            w = await self._wait(self.cfg["timeouts"]["pin_s"] * 1000)
        else:
            w = await self._wait(min(self.cfg["delays"]["pin_ms"], self.cfg["timeouts"]["pin_s"] * 1000))
            w = w or ("cancel" if arg == "no" else "confirm")
        self.note = None
        if w == "confirm":
            return True
        if w:
            t.result, t.reason = "cancelled", "duplicate" if w == "cancel" else w
        else:
            t.result, t.reason = "timeout", "no_confirm"
        return False

    def _seen(self, t):
        n = self.cfg["duplicate_min"]
        if not n or not t.pan:
            return False
        for r in self.journal.recent:
            if (r is not t and r.result == "approved" and r.op == t.op and r.amount == t.amount
                    and r.pan == t.pan and r.cur == t.cur and 0 <= t.ts - r.ts < n * 60):
                return True
        return False

    async def _auth(self, t, o, arg):
        d = self.cfg["delays"]
        to = self.cfg["timeouts"]
        self._state(t, AUTH)
        ms = d["slow_auth_ms"] if o == "slow" else d["auth_ms"] if self.auth_ms is None else self.auth_ms
        host_ms = to["auth_s"] * 1000
        if ms:
            await asyncio.sleep_ms(min(ms, host_ms))
        if ms > host_ms or o == "host_error":
            t.result, t.reason = "error", "host"
            return
        if o in ("decline", "forbidden") or (o == "sca" and arg == "decline"):
            t.result, t.reason = "declined", "decline" if o == "sca" else o
            return
        if o == "partial":
            part = int(arg) if arg else t.amount // 2
            if "partial" not in t.hold or not 0 < part < t.amount:
                log.event("core", "partial", "#%d" % t.no, "not expressible here: declined")
                t.result, t.reason = "declined", "decline"
                return
            t.amount, t.reason = part, "partial"
        t.auth = "%06d" % ((t.no * 7919 + t.amount * 31) % 1000000)
        if o == "signature" and "signature" in t.hold:
            self._state(t, SIGNATURE)
            w = await self._wait(to["signature_s"] * 1000)
            if w != "signed":
                t.result, t.reason = ("cancelled", w) if w == "abort" else ("declined", "signature")
                t.auth = None
                return
        t.result = "approved"
        if o == "paper_out":
            t.reason = "paper_out"  # approved; its ticket could not be printed
        t.drop = o == "lost"

    def _cut(self, t, step):
        """The power goes: the board reboots now (on a PC the launcher
        starts the firmware again on the same state dir)."""
        ms = self.cfg["faults"]["power_off_ms"]
        log.event("core", "power-cut", "#%d" % t.no, step, "off %d ms" % ms)
        from firmware.board import load

        load().power_cut(ms)
