"""The journal's cold paths: replay at boot, reading old records back, and
compaction (rotation).  Loaded only when needed; see journal.py for the
record layout.
"""
import os

from firmware import drop, log
from wire import records, records_reader
from wire.records_reader import read as _read

_SPAN = 16  # as journal._SPAN


def _begun(j, r):
    t = j.Txn(r[4], r[5], r[6], r[7], r[8], r[9], r[10])
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
        _remove(path + ".tmp")  # a compaction of the file set aside


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def replay(j):
    """Rebuild j from its file: batch, totals, newest transactions, next
    number, the index; resume a compaction a power cut interrupted."""
    _prepare(j.path)
    reader = records_reader.Reader(4)
    pending = None  # begun, not yet decided
    n = 0
    for r in _read(j.path, reader):
        n += 1
        k = r[0]
        if k == "B":
            t = _begun(j, r)
            if j.n == 0:
                j.base = t.no
            if t.batch > j.batch:  # (a compacted file may skip settlements)
                j.settled += j.in_batch
                j.batch, j.in_batch, j.totals = t.batch, 0, {}
            if t.batch == j.batch:
                if not j.in_batch:
                    j.first_open = t.no
                j.in_batch += 1
            else:
                j.settled += 1
            j.next_no = max(j.next_no, t.no + 1)
            j._remember(t)
            j.index(t.no, t.ref, reader.at)
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
                elif t.result == "approved" and t.op == "void" and t.orig not in j.voided:
                    j.voided.append(t.orig)
            if pending is not None and pending.no == r[1]:
                pending = None
        elif k == "V":
            for x in j.recent:
                if x.no == r[1]:
                    x.delivered = True
        elif (k == "S" and r[1] >= j.batch) or (k == "C" and r[2] >= j.batch):
            j.settled += j.in_batch
            j.batch, j.in_batch, j.totals = r[1 if k == "S" else 2] + 1, 0, {}
            j.first_open = j.next_no
    j.size = reader.pos if reader.pos is not None else None
    j.report = "%d records, next #%d, batch %d, %d corrupt skipped%s" % (
        n, j.next_no, j.batch, reader.corrupt, ", torn last record ignored" if reader.torn else "")
    if reader.corrupt or reader.torn:
        # a clean file: later appends must not follow a torn record
        _remove(j.path + ".tmp")
        j.tidy = None
        from firmware import journal_compact

        journal_compact.run(j)
        drop("firmware.journal_compact")
    else:
        j.f = open(j.path, "ab")
        try:  # a compaction a power cut interrupted?
            os.stat(j.path + ".tmp")
            cut = True
        except OSError:
            cut = False
        if cut:
            from firmware import journal_compact

            journal_compact.resume(j)
            drop("firmware.journal_compact")
        elif j.settled > j.keep:
            j.tidy = True
    if pending is not None:
        # cut before its outcome was decided: it was not performed
        pending.result, pending.reason, pending.state = "error", "interrupted", "done"
        j._append(["D", pending.no, "error", "interrupted", None, pending.amount,
                   None, None, None, None, None, None])
        log.event("journal", "interrupted",
                  "#%d %s %d not performed" % (pending.no, pending.op, pending.amount))
    if j.min_free:  # what the flash-full guard will see (a board's littlefs: after a flush)
        j.f.flush()
        st = os.statvfs(j.path)
        j.report += ", %d bytes free" % (st[1] * st[4])


def candidates(j, ref):
    """Numbers of the file's transactions whose reference may be ref, newest first."""
    h = records.ref_hash(ref)
    pat = bytes((h >> 8, h & 0xFF))
    idx = j.idx
    end = 2 * j.n if idx is not None else 0
    while end > 0:
        i = idx.rfind(pat, 0, end)
        if i < 0:
            return
        end = i + 1 if i & 1 else i  # (straddling two entries: not one)
        if not i & 1:
            yield j.base + i // 2


def find(j, ref, src, want, open_batch, old):
    """journal.lookup in the file: the candidates the index names, newest
    first, each read from the nearest offset; the whole file if the index
    could not grow.  old: the first number in RAM (seen already)."""
    def ok(t):
        return t.ref == ref and src in (None, t.src) and (want is None or want(t))

    if j.lost:
        return scan(j, lambda t: t.no < old and ok(t), open_batch)
    for no in candidates(j, ref):
        if no >= old:
            continue
        if open_batch and no < j.first_open:
            return None
        t = load(j, no)
        if t is not None and ok(t):
            return t
    return None


def load(j, no):
    """Transaction no as the file has it (decided, delivered, voided), read
    from the nearest offset the index keeps; None if it is not there."""
    k = (no - j.base) // _SPAN
    m = j.marks
    at = m[k] if k < len(m) else m[-1] if m else 4
    t = None
    g = _read(j.path, records_reader.Reader(), at)
    try:
        for r in g:
            k = r[0]
            if k == "B":
                if r[1] == no:
                    t = _begun(j, r)
                elif r[1] > no + 2:  # (its delivery may follow the next one's start)
                    break
            elif t is not None and r[1] == no:
                if k == "D":
                    _decided(t, r)
                elif k == "V":
                    t.delivered = True
    finally:
        g.close()
    if t is not None:
        t.voided = no in j.voided
    return t


def scan(j, want, open_batch, every=False):
    """Newest transaction in the file for which want(t) holds (final state);
    with every, all of them, oldest first."""
    kept = {}  # type: dict
    t = None
    for r in _read(j.path, records_reader.Reader()):
        k = r[0]
        if k == "B":
            t = _begun(j, r)
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


def rows(j, first):
    """The decided transactions numbered from first on, oldest first, one at
    a time (a reader's answer is written as they come, never held whole).
    A first pass notes which answers were delivered (a bit each)."""
    if j.f is not None:
        j.f.flush()
    j.readers += 1  # no compaction step while the file is read
    try:
        for t in _rows(j, first):
            yield t
    finally:
        j.readers -= 1
        drop("firmware.journal_replay")
        drop("wire.records_reader")


def _rows(j, first):
    first = max(first, j.base)
    n = j.next_no - first
    if n <= 0:
        return
    seen = bytearray((n + 7) // 8)
    k = (first - j.base) // _SPAN
    m = j.marks
    at = m[k] if k < len(m) else m[-1] if m else 4
    for r in _read(j.path, records_reader.Reader(), at):
        if r[0] == "V" and first <= r[1] < j.next_no:
            i = r[1] - first
            seen[i >> 3] |= 1 << (i & 7)
    t = None
    for r in _read(j.path, records_reader.Reader(), at):
        k = r[0]
        if k == "B":
            t = _begun(j, r) if r[1] >= first else None
        elif k == "D" and t is not None and t.no == r[1]:
            _decided(t, r)
            i = t.no - first
            t.delivered = i < n and bool(seen[i >> 3] & (1 << (i & 7)))
            t.voided = t.no in j.voided
            yield t
            t = None


