"""The journal's cold paths: replay at boot, reading old records back, and
compaction (rotation).  Loaded only when needed; see journal.py for the
record layout.
"""
import os

from firmware import log
from wire import records, records_reader

_CHUNK = 128  # with what is left of a record, reads need a hole of at most ~260 bytes


def _read(path, reader):
    """Every record of the file, in order (the header already checked)."""
    buf = bytearray(_CHUNK)
    with open(path, "rb") as f:
        f.read(4)
        while True:
            n = f.readinto(buf)
            if not n:
                break
            for r in reader.feed(memoryview(buf)[:n]):
                yield r
    for r in reader.end():
        yield r


def _begun(r):
    from firmware.terminal import Txn

    t = Txn(r[4], r[5], r[6], r[7], r[8], r[9], r[10])
    t.no, t.batch, t.ts = r[1], r[2], r[3]
    return t


def _decided(t, r):
    t.result, t.reason, t.auth, t.amount, t.pan, t.brand, t.mode, t.aid, t.exp = r[2:11]
    if len(r) > 12:
        t.data = r[12]  # an adapter may have changed it after the start
    t.state = "done"


def _fresh(path):
    with open(path, "wb") as f:
        f.write(records.header())


def _prepare(path):
    """Make sure path is a journal this firmware reads; set aside one it cannot."""
    d = path[:path.rfind("/")] if "/" in path else ""
    if d:
        try:
            os.mkdir(d)
        except OSError:
            pass
    try:
        os.remove(path + ".tmp")  # a compaction cut short: the old file is whole
    except OSError:
        pass
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        head = b""
    if not head:
        _fresh(path)
        return
    v = records.version_of(head)
    if v != records.VERSION:
        aside = "%s.v%s" % (path, v)
        os.rename(path, aside)
        log.event("journal", "set-aside", "format v%s is not v%d: kept as %s, new journal started"
                  % (v, records.VERSION, aside))
        _fresh(path)


def replay(j):
    """Rebuild j from its file: batch, totals, newest transactions, next number."""
    _prepare(j.path)
    reader = records_reader.Reader()
    pending = None  # begun, not yet decided
    n = 0
    for r in _read(j.path, reader):
        n += 1
        k = r[0]
        if k == "B":
            t = _begun(r)
            j.saw(t.ref)
            if t.batch > j.batch:  # (a compacted file may skip settlements)
                j.settled += j.in_batch
                j.batch, j.in_batch, j.totals = t.batch, 0, {}
            if t.batch == j.batch:
                j.in_batch += 1
            else:
                j.settled += 1
            j.next_no = max(j.next_no, t.no + 1)
            j._remember(t)
            pending = t
        elif k == "D":
            t = None
            for x in j.recent:
                if x.no == r[1]:
                    t = x
            if t is not None:
                _decided(t, r)
                if t.result == "approved" and t.batch == j.batch:
                    j.count(t, r[11])
            if pending is not None and pending.no == r[1]:
                pending = None
        elif k == "V":
            for x in j.recent:
                if x.no == r[1]:
                    x.delivered = True
        elif k == "S" and r[1] >= j.batch:
            j.settled += j.in_batch
            j.batch, j.in_batch, j.totals = r[1] + 1, 0, {}
    j.report = "%d records, next #%d, batch %d, %d corrupt skipped%s" % (
        n, j.next_no, j.batch, reader.corrupt, ", torn last record ignored" if reader.torn else "")
    if reader.corrupt or reader.torn:
        compact(j)  # a clean file: later appends must not follow a torn record
    else:
        j.f = open(j.path, "ab")
    if pending is not None:
        # cut before its outcome was decided: it was not performed
        pending.result, pending.reason, pending.state = "error", "interrupted", "done"
        j._append(["D", pending.no, "error", "interrupted", None, pending.amount,
                   None, None, None, None, None, None])
        log.event("journal", "interrupted",
                  "#%d %s %d not performed" % (pending.no, pending.op, pending.amount))


def scan(j, want, open_batch, every=False, ref=None):
    """Newest transaction in the file for which want(t) holds (final state);
    with every, all of them, oldest first.  With ref (want holds only for
    that reference), only the transactions carrying it, and voids (which may
    void one of them), are built: a Synqpay or P3 register re-using a
    reference makes the terminal read the whole file mid-traffic, and a
    transaction object per record would churn a small heap."""
    kept = {}  # type: dict
    t = None
    for r in _read(j.path, records_reader.Reader()):
        k = r[0]
        if k == "B":
            t = _begun(r) if ref is None or r[8] == ref or r[4] == "void" else None
        elif k == "D":
            if t is not None and t.no == r[1]:
                _decided(t, r)
                if t.result == "approved" and t.op == "void" and t.orig in kept:
                    kept[t.orig].voided = True
                if (not open_batch or t.batch == j.batch) and want(t):
                    kept[t.no] = t
            t = None
        elif k == "V" and r[1] in kept:
            kept[r[1]].delivered = True
    if every:
        return [kept[no] for no in sorted(kept) if want(kept[no])]
    best = None
    for no in kept:
        x = kept[no]
        if want(x) and (best is None or no > best.no):
            best = x
    return best


def compact(j):
    """Rewrite the file: the newest j.keep settled transactions and the whole
    open batch, nothing damaged.  Written aside, then renamed over: a power
    cut leaves either the old file or the new one."""
    if j.f is not None:
        j.f.close()
        j.f = None
    settled = 0
    last_s = None
    for r in _read(j.path, records_reader.Reader()):
        if r[0] == "B" and r[2] < j.batch:
            settled += 1
        elif r[0] == "S":
            last_s = r
    drop = settled - j.keep
    cutoff = None
    tmp = j.path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(records.header())
        if last_s is not None:
            f.write(records.pack(last_s))
        seen = 0
        # the filter holds what the new file holds: zeroed in place, 64 bytes
        # at a time (a 2 KB block of zeros may not be found in a fragmented heap)
        zero = bytes(64)
        mv = memoryview(j.refs)
        for i in range(0, len(j.refs), 64):
            mv[i:i + 64] = zero
        for r in _read(j.path, records_reader.Reader()):
            k = r[0]
            if k == "B" and cutoff is None:
                seen += r[2] < j.batch
                if r[2] >= j.batch or seen > drop:
                    cutoff = r[1]
            if cutoff is not None and (k == "S" or r[1] >= cutoff):
                f.write(records.pack(r))
                if k == "B":
                    j.saw(r[8])
    os.rename(tmp, j.path)
    j.settled = min(settled, j.keep)
    j.f = open(j.path, "ab")
    log.event("journal", "compacted", "kept %d settled + open batch %d" % (j.settled, j.batch))
