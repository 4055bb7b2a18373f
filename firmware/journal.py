"""The journal: the terminal's memory of transactions and of the open batch.

The core calls it at three points of every transaction (write-ahead):
begin (request received, before anything happens), decide (outcome known,
before the answer is sent) and delivered (answer written, or not).  Readers
(status, void, lookup, settlement) only use the methods below.

This implementation keeps a bounded window of recent records in RAM.
"""


def _zero():
    return {"pay": [0, 0], "refund": [0, 0], "void": [0, 0], "net": 0}


class Journal:
    def __init__(self, keep=4):
        self.keep = keep
        self.recent = []  # Txn records, oldest first
        self.batch = 1
        self.next_no = 1
        self.totals = {}  # currency -> {"pay": [n, amount], ..., "net": amount}

    def begin(self, t):
        t.no = self.next_no
        t.batch = self.batch
        self.next_no += 1
        self.recent.append(t)
        if len(self.recent) > self.keep:
            self.recent.pop(0)

    def decide(self, t):
        if t.result == "approved":
            self._count(t)

    def delivered(self, t, ok=True):
        t.delivered = ok

    def _count(self, t):
        tot = self.totals.get(t.cur)
        if tot is None:
            tot = self.totals[t.cur] = _zero()
        op = t.op
        if op == "preauth":
            return
        if op == "capture":
            op = "pay"
        row = tot[op]
        row[0] += 1
        row[1] += t.amount
        if op == "pay":
            tot["net"] += t.amount
        elif op == "refund":
            tot["net"] -= t.amount
        else:
            orig = self.get(t.orig)
            if orig is not None:
                orig.voided = True
                tot["net"] += t.amount if orig.op == "refund" else -t.amount

    def last(self):
        return self.recent[-1] if self.recent else None

    def get(self, no):
        for t in self.recent:
            if t.no == no:
                return t
        return None

    def lookup(self, ref=None, src=None):
        """Newest record with this register reference (and personality)."""
        for i in range(len(self.recent) - 1, -1, -1):
            t = self.recent[i]
            if t.ref == ref and src in (None, t.src):
                return t
        return None

    def undelivered(self, src):
        """Finished records of this personality whose answer never arrived."""
        return [t for t in self.recent if t.src == src and t.result and not t.delivered]

    def newest(self):
        """Records of the open batch, newest first."""
        for i in range(len(self.recent) - 1, -1, -1):
            t = self.recent[i]
            if t.batch != self.batch:
                return
            yield t

    def settle(self, ts):
        s = {"batch": self.batch, "ts": ts, "totals": self.totals}
        self.batch += 1
        self.totals = {}
        return s
