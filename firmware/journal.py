"""The journal: every transaction on flash, written ahead of the answer.

The core calls it at three points of every transaction: begin (request
received, before anything happens), decide (outcome known, before the
answer is sent) and delivered (the answer reached the register).  Each call
appends one checked record (lib/wire/records.py) and flushes it, so after a
power cut at any instant the file holds every decided outcome; a record cut
in half is detected and ignored.  On boot, journal_replay rebuilds the
batch, its totals and the last transactions; a transaction begun but never
decided is recorded then as not performed.

Records (JSON arrays):
    ["B", no, batch, ts, op, amount, cur, src, ref, orig, data]    begun
    ["D", no, result, reason, auth, amount, pan, brand, mode, aid, exp, vop, data]
                                                  decided (vop: op a void undid)
    ["V", no]                                     answer delivered
    ["S", batch, ts]                              batch closed by a settlement

The newest `recent` transactions stay in RAM; older ones are read back from
the file when asked for (journal_replay).  An index kept beside it, two bytes
per transaction of the file (a 16-bit CRC of the register's reference) and
the file offset of every 16th begun record, finds a transaction by its
reference without reading the file (a fresh reference: no read at all) and
reads one by its number from the nearest offset: a retry is recognised
across the whole file (1,200 transactions, 2.7 KB) at the cost of reading
at most 16 transactions.

Compaction (journal_compact) copies what it keeps to journal.bin.tmp in
steps of at most 32 records, run by the core between transactions, and
renames it over the journal when it has caught up: a power cut leaves the
old file whole, and the copy is resumed from where it stopped after the
next boot.  Without a path the journal lives in RAM only (tests of the
core).
"""
import os
from array import array

from micropython import const

from firmware import clock, drop, loaded, log
from wire import records

_SPAN = const(16)  # an offset kept for every 16th transaction
_PATIENCE = const(20)  # compaction steps short of room (half a second apart) before it is abandoned


def _replay():
    """journal_replay, for one job (Journal._cold forgets it after),
    imported after a collection (loaded(name, True))."""
    loaded("firmware.journal_replay", True)
    from firmware import journal_replay

    return journal_replay


def _compact():
    """journal_compact, for one job (as _replay)."""
    loaded("firmware.journal_compact", True)
    from firmware import journal_compact

    return journal_compact


def _zero():
    return {"pay": [0, 0], "refund": [0, 0], "void": [0, 0], "net": 0}


IDLE = "idle"  # a new transaction's state (the others: firmware/terminal.py)


class Txn:
    """One transaction, as the core runs it and the journal records it.
    What a new one holds is said once, here, by the class: an attribute is
    the instance's own only once it changes, so the transactions the
    journal reads stay lean (32-bit build: 128 bytes).  One the terminal
    runs owns every field from the start (own(): 320 bytes)."""

    no = batch = 0
    state = IDLE
    outcome = result = reason = auth = None
    pan = brand = mode = aid = exp = None  # the card (PAN masked)
    delivered = voided = False
    withhold = False  # "lost" outcome: the adapter sends no answer
    # where the adapter wants the flow to stop ("card", "signature"), and what
    # its protocol cannot say ("whole": no approved amount of its own, so no
    # partial approval)
    hold = ()
    progress = None  # callback(t) on each state change; not kept

    def __init__(self, op, amount, cur, src, ref, orig, data):
        self.op = op  # pay, refund, void, preauth, capture
        self.amount = amount  # minor units
        self.cur = cur  # ISO 4217 numeric
        self.src = src  # personality that asked
        self.ref = ref  # the register's reference, if its protocol has one
        self.orig = orig  # number of the transaction voided/captured/refunded
        self.data = data  # small protocol extras kept with the record
        self.ts = clock.now()

    def own(self):
        """Make every field the flow may set the instance's own, at the
        class's value: its dict takes its final size now.  Terminal.start
        does this before it claims the terminal (no room: busy); a field
        first set mid-payment would grow the dict (368 bytes on x64) after
        the terminal committed, and fail there at a peak."""
        for k, v in Txn.__dict__.items():  # the fields the class says, not its methods
            if k[0] != "_" and not callable(v):
                setattr(self, k, v)


class Journal:
    Txn = Txn  # what replay and reads (journal_replay) make of a begun record

    def __init__(self, path=None, keep=200, recent=4, min_free=4096, flush=True, max_batch=1000):
        self.path = path
        self.flush = flush  # commit each record (littlefs keeps it cached until then)
        self.keep = keep  # settled transactions kept in the file
        self.nrecent = recent
        self.min_free = min_free
        self.recent = []  # newest transactions, oldest first
        self.batch = 1
        self.next_no = 1
        self.totals = {}  # currency -> {"pay": [n, amount], ..., "net": amount}
        self.settled = 0  # settled transactions in the file
        self.in_batch = 0  # transactions of the open batch
        self.f = None
        self.report = None  # what the replay found, for the boot log
        # the index: numbers base.. (n of them), 2 bytes each: hash of the reference
        self.base = 1
        self.n = 0
        # allocated with the first reference (registers that send none need
        # none), room for keep settled and a full open batch; grows if need be
        self.idx = None
        self.room = keep + (max_batch or 1000) + 64
        self.marks = array("I")  # offset of the begun record of base + 16 k
        self.size = 4  # type: int | None  # bytes in the file (its header: 4); None: unknown
        self.voided = []  # numbers of the file's voided transactions
        self.first_open = 1  # number of the open batch's first transaction
        self.tidy = None  # type: object  # a compaction under way (journal_compact), or True: one is due
        self.readers = 0  # rows() being read: no compaction step meanwhile
        self.short = 0  # compaction steps in a row that found no room (tried again later)
        self.lost = False  # the index could not grow: lookups scan the file
        if path:
            self._cold(_replay().replay)
            # the compaction's code once, forgotten at once: its names are interned
            # now, while the heap is whole, not by a compaction hours into traffic,
            # when the table of names may need a new block of KBs (docs/MEMORY.md)
            _compact()
            drop("firmware.journal_compact")

    def _cold(self, fn, *args):
        """fn(self, *args): replay or a read (_replay()), a compaction step
        (_compact()), imported by the caller for this one job; their modules
        are forgotten afterwards."""
        if self.f is not None:
            self.f.flush()  # what is read must include what was written
        try:
            return fn(self, *args)
        finally:
            fn = None
            drop("firmware.journal_replay")
            drop("firmware.journal_compact")
            drop("wire.records_reader")

    # ---- writing -------------------------------------------------------

    def _append(self, fields, sync=True, rec=None):
        """Write a record (packed already: rec); commit it to flash (littlefs:
        flush; a PC's files: fsync, if journal.fsync) unless losing it in a
        power cut is harmless."""
        if self.f is not None:
            rec = rec or records.pack(fields)
            try:
                self.f.write(rec)
            except OSError:
                self.size = None  # offsets unknown until the file is read again
                raise
            if self.size is not None:
                self.size += len(rec)
            if sync and self.flush:
                self.f.flush()

    def _remember(self, t):
        self.recent.append(t)
        if len(self.recent) > self.nrecent:
            self.recent.pop(0)

    def begin(self, t):
        """Raises OSError (28, no space) rather than start what it cannot record."""
        if self.f is not None and self.min_free:
            # littlefs counts a file open for appending twice until it is
            # flushed (and an unflushed write can make the count wrap
            # around): commit it first, whatever the board
            self.f.flush()
            st = os.statvfs(self.path)
            if st[1] * st[4] < self.min_free:
                raise OSError(28, "journal: flash full")
        # what may find no room, or a record too long (ValueError), comes
        # before anything changes: the caller may try again (when_room)
        rec = records.pack(["B", self.next_no, self.batch, t.ts, t.op, t.amount, t.cur, t.src, t.ref,
                            t.orig, t.data])
        self._remember(t)
        t.no = self.next_no
        t.batch = self.batch
        self.next_no += 1
        self.in_batch += 1
        at = self.size
        self._append(None, True, rec)
        if self.path:
            try:
                self.index(t.no, t.ref, at)
            except MemoryError:  # begun all the same: lookups read the file
                self.lost = True
                self.size = None

    def index(self, no, ref, at):
        """Enter transaction no (its reference, the offset of its begun
        record) in the index (entries from n on are zeros: no reference)."""
        k = no - self.base
        if k < 0:
            return
        if ref and not self.lost:
            if self.idx is None or 2 * k + 2 > len(self.idx):
                self._grow(k)  # the first reference, or more than planned
            if self.idx is not None:
                h = records.ref_hash(ref)
                self.idx[2 * k] = h >> 8
                self.idx[2 * k + 1] = h & 0xFF
        self.n = max(self.n, k + 1)
        if at is None:
            self.size = None
        m = self.marks
        while self.size is not None and len(m) * _SPAN <= k:
            m.append(at)

    def _grow(self, k):
        """The index, or more of it, with room for entry k; if there is no
        memory for it, lookups read the file.  (Here, not with the reader's
        code: importing that mid-traffic needs blocks a busy heap lacks.)"""
        try:
            b = bytearray(max(2 * self.room, 2 * k + 256))
        except MemoryError:
            self.lost = True
            self.idx = None
            return
        if self.idx is not None:
            b[:2 * self.n] = memoryview(self.idx)[:2 * self.n]
        self.idx = b

    def decide(self, t):
        """Record t's outcome.  A MemoryError comes before the record is
        written, so the caller may try again: what count() would allocate
        (a currency's totals, the void's place among the voided) is made
        first; the void's place is taken back if the record is not written
        (an empty row of totals says nothing wrong)."""
        vop = None
        ok = t.result == "approved"
        if ok and t.op == "void":
            orig = self.get(t.orig)
            vop = orig.op if orig else "pay"
        void = vop and t.orig not in self.voided
        if void:
            self.voided.append(t.orig)
        if ok and t.op != "preauth" and t.cur not in self.totals:
            self.totals[t.cur] = _zero()
        try:
            self._append(["D", t.no, t.result, t.reason, t.auth, t.amount, t.pan, t.brand, t.mode,
                          t.aid, t.exp, vop, t.data])
        except Exception:
            if void:
                self.voided.pop()
            raise
        if ok:
            self.count(t, vop)

    def delivered(self, t, ok=True):
        t.delivered = ok
        if ok and t.no:  # (0: never begun, nothing on file)
            # not flushed: lost in a power cut, it reads "not delivered", the
            # safe side (the register is told again if it asks); the next
            # flush carries it
            self._append(["V", t.no], False)

    def count(self, t, vop=None):
        """Add an approved transaction to the open batch's totals."""
        op = "pay" if t.op == "capture" else t.op
        if op == "preauth":
            return
        tot = self.totals.get(t.cur)
        if tot is None:
            tot = self.totals[t.cur] = _zero()
        row = tot[op]
        row[0] += 1
        row[1] += t.amount
        if op == "void":
            for r in self.recent:
                if r.no == t.orig:
                    r.voided = True
            if t.orig not in self.voided:
                self.voided.append(t.orig)
            tot["net"] += t.amount if vop == "refund" else -t.amount
        else:
            tot["net"] += -t.amount if op == "refund" else t.amount

    def settle(self, ts):
        self._append(["S", self.batch, ts])
        s = {"batch": self.batch, "ts": ts, "totals": self.totals}
        self.settled += self.in_batch
        self.in_batch = 0
        self.batch += 1
        self.first_open = self.next_no
        self.totals = {}
        if self.path and self.settled > self.keep and self.tidy is None:
            self.tidy = True  # the core runs it, step by step (work)
        return s

    def work(self):
        """One step of the compaction under way (at most 32 records copied);
        True while there is more to do.  Never raises: a compaction that
        fails is abandoned, the journal is whole without it."""
        if not self.tidy or self.readers:
            return bool(self.tidy)
        try:
            self._cold(_compact().step)
            self.short = 0
        except MemoryError as e:  # no room for its code or its copy now: again later, a while
            self.short += 1
            if self.short > _PATIENCE:
                self._give_up(repr(e))
        except Exception as e:
            self._give_up(repr(e))
        return bool(self.tidy)

    def _give_up(self, why):
        """Abandon the compaction (it waits for the next settlement); the
        journal is whole without it, and a copy left over is dealt with at
        boot."""
        self.tidy = None
        self.short = 0
        try:
            self._cold(_compact().abandon, why)
        except Exception:  # (no room to load even that)
            log.event("journal", "compaction", "abandoned: %s" % why)

    def close(self):
        if self.f is not None:
            self.f.close()
            self.f = None

    # ---- reading -------------------------------------------------------

    def last(self):
        return self.recent[-1] if self.recent else None

    def _find(self, want, open_batch=False):
        """Newest transaction for which want(t) holds: RAM first, then the file."""
        for i in range(len(self.recent) - 1, -1, -1):
            t = self.recent[i]
            if want(t) and (not open_batch or t.batch == self.batch):
                return t
        if self.path and (not self.recent or self.recent[0].no > 1):
            return self._cold(_replay().scan, want, open_batch, False)
        return None

    def get(self, no):
        for t in self.recent:
            if t.no == no:
                return t
        if self.path and self.base <= no < self.next_no:
            return self._cold(_replay().load, no)
        return None

    def lookup(self, ref, src=None, want=None, open_batch=False):
        """Newest transaction with this register reference (and personality,
        and for which want(t) holds): RAM first, then the file through the
        index, which reads only the transactions the reference's hash names
        (a reference it has not seen: nothing)."""
        if not ref:
            return None
        old = self.next_no
        for i in range(len(self.recent) - 1, -1, -1):
            t = self.recent[i]
            old = t.no
            if t.ref == ref and src in (None, t.src) and (want is None or want(t)):
                return t if not open_batch or t.batch == self.batch else None
        if not self.path:
            return None
        if not self.lost:  # a reference the index has not seen: nothing to read
            if self.idx is None:
                return None
            h = records.ref_hash(ref)
            pat = bytes((h >> 8, h & 0xFF))
            i = self.idx.rfind(pat, 0, 2 * self.n)
            while i > 0 and i & 1:  # (straddling two entries: not one)
                i = self.idx.rfind(pat, 0, i + 1)
            if i < 0:
                return None
        return self._cold(_replay().find, ref, src, want, open_batch, old)

    def rows(self, first):
        """The decided transactions numbered first and up, oldest first, one
        at a time (journal_replay.rows: close it when done)."""
        if not self.path:
            return iter([t for t in self.recent if t.result and t.no >= first])
        return _replay().rows(self, first)

    def select(self, want):
        """Every transaction of the open batch for which want(t) holds, oldest first."""
        if self.path:
            return self._cold(_replay().scan, want, True, True)
        return [t for t in self.recent if t.batch == self.batch and want(t)]

    def find(self, want):
        """Newest transaction of the open batch for which want(t) holds."""
        return self._find(want, True)

    def undelivered(self, src):
        """Recent decided transactions of this personality whose answer never arrived."""
        return [t for t in self.recent if t.src == src and t.result and not t.delivered]
