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
the file when asked for (journal_replay.scan).  A 2 KB Bloom filter of every
register reference in the file answers "never seen" without reading it, so a
register that sends a fresh reference with each sale (and wants it unique)
costs no file scan: with the file's 1,200 transactions at most (`keep` 200
settled, `max_batch` 1,000 open), it is wrong (a needless scan) about once
in a hundred.  Its three bit positions come from a CRC32 of the reference:
MicroPython's own str hash has 16 bits, near-sequential for references like
"sale-41", "sale-42" (with it, 2,000 references made a third of all lookups
scan the file).  Without a path the journal lives in RAM only (tests of the
core).
"""
import os
from binascii import crc32

from firmware import drop
from wire import records


_BLOOM = 16384  # bits


def _zero():
    return {"pay": [0, 0], "refund": [0, 0], "void": [0, 0], "net": 0}


# taken by the first Journal: allocated at import, before the config's load
# and drop leave the heap in pieces, so a 2 KB block is still there to take
_spare = [bytearray(_BLOOM // 8)]


class Journal:
    def __init__(self, path=None, keep=200, recent=4, min_free=4096, flush=True):
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
        # Bloom filter of the references in the file
        self.refs = _spare.pop() if _spare else bytearray(_BLOOM // 8)
        if path:
            self._cold("replay")

    def _cold(self, job, *args):
        """Run replay, scan or compact from journal_replay, then forget it."""
        from firmware import journal_replay

        try:
            return getattr(journal_replay, job)(self, *args)
        finally:
            drop("firmware.journal_replay")
            drop("wire.records_reader")

    # ---- writing -------------------------------------------------------

    def _append(self, fields, sync=True):
        """Write a record; commit it to flash (littlefs: flush; a PC's files:
        fsync, if journal.fsync) unless losing it in a power cut is harmless."""
        if self.f is not None:
            self.f.write(records.pack(fields))
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
        # packed first: a record too long (ValueError) changes nothing
        rec = records.pack(["B", self.next_no, self.batch, t.ts, t.op, t.amount, t.cur, t.src, t.ref,
                            t.orig, t.data])
        t.no = self.next_no
        t.batch = self.batch
        self.next_no += 1
        self.in_batch += 1
        if self.f is not None:
            self.f.write(rec)
            if self.flush:
                self.f.flush()
        self._remember(t)
        self.saw(t.ref)

    def _bits(self, ref):
        h = crc32(ref.encode())
        for k in (h, h >> 11, (h >> 22) ^ (h << 5)):
            k %= _BLOOM
            yield k >> 3, 1 << (k & 7)

    def saw(self, ref):
        if ref:
            for i, m in self._bits(ref):
                self.refs[i] |= m

    def _maybe(self, ref):
        for i, m in self._bits(ref):
            if not self.refs[i] & m:
                return False
        return True

    def decide(self, t):
        vop = None
        if t.op == "void" and t.result == "approved":
            orig = self.get(t.orig)
            vop = orig.op if orig else "pay"
        self._append(["D", t.no, t.result, t.reason, t.auth, t.amount, t.pan, t.brand, t.mode,
                      t.aid, t.exp, vop, t.data])
        if t.result == "approved":
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
            tot["net"] += t.amount if vop == "refund" else -t.amount
        else:
            tot["net"] += -t.amount if op == "refund" else t.amount

    def settle(self, ts):
        self._append(["S", self.batch, ts])
        s = {"batch": self.batch, "ts": ts, "totals": self.totals}
        self.settled += self.in_batch
        self.in_batch = 0
        self.batch += 1
        self.totals = {}
        if self.path and self.settled > self.keep:
            self._cold("compact")
        return s

    def close(self):
        if self.f is not None:
            self.f.close()
            self.f = None

    # ---- reading -------------------------------------------------------

    def last(self):
        return self.recent[-1] if self.recent else None

    def _find(self, want, open_batch=False, ref=None):
        """Newest transaction for which want(t) holds: RAM first, then the file
        (with ref: want holds only for transactions with that reference)."""
        for i in range(len(self.recent) - 1, -1, -1):
            t = self.recent[i]
            if want(t) and (not open_batch or t.batch == self.batch):
                return t
        if self.path and (not self.recent or self.recent[0].no > 1):
            return self._cold("scan", want, open_batch, False, ref)
        return None

    def get(self, no):
        return self._find(lambda t: t.no == no)

    def lookup(self, ref, src=None):
        """Newest transaction with this register reference (and personality)."""
        if not ref or not self._maybe(ref):  # never seen: no need to read the file
            return None
        return self._find(lambda t: t.ref == ref and src in (None, t.src), False, ref)

    def select(self, want):
        """Every transaction of the open batch for which want(t) holds, oldest first."""
        if self.path:
            return self._cold("scan", want, True, True)
        return [t for t in self.recent if t.batch == self.batch and want(t)]

    def find(self, want):
        """Newest transaction of the open batch for which want(t) holds."""
        return self._find(want, True)

    def undelivered(self, src):
        """Recent decided transactions of this personality whose answer never arrived."""
        return [t for t in self.recent if t.src == src and t.result and not t.delivered]
