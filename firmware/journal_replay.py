"""The journal's cold paths: replay at boot, reading old records back, and
compaction (rotation).  Loaded only when needed; see journal.py for the
record layout.

Compaction, crash-safe and in steps.  It writes journal.bin.tmp: the
header, ["C", cutoff, last settled batch, offset where the copy starts in
the journal], then the records of every transaction numbered from cutoff
on (and the settlements after the first of them), copied from the journal
at most _STEP records per step (reading at most 4 _STEP), each step but
the last closed by ["P", offset in the journal where the next step
starts].  The journal itself is only appended to meanwhile.  When a step
reaches its end, the copy is renamed over it.  A power cut leaves the
journal whole; at boot the copy is read, and the next step starts at its
last P, skipping the records copied after it (on a PC's files each record
is one write; on littlefs a file is as of its last flush or close: a
step's records all or none).  A copy that does not read clean is deleted
and the compaction starts again.  Replay reads C as a settlement of its
batch and ignores P.
"""
import os
from array import array

from firmware import drop, log
from wire import records, records_reader

_CHUNK = 128  # with what is left of a record, reads need a hole of at most ~260 bytes
_STEP = 32  # records copied per compaction step
_SPAN = 16  # as journal._SPAN


def _read(path, reader, at=4):
    """Every record of the file from offset at, in order (the header already
    checked); with a reader given a position, reader.at is each one's offset."""
    buf = bytearray(_CHUNK)
    with open(path, "rb") as f:
        f.seek(at)
        while True:
            n = f.readinto(buf)
            if not n:
                break
            out = reader.feed(memoryview(buf)[:n])
            for i in range(len(out)):
                if reader.starts is not None:
                    reader.at = reader.starts[i]
                yield out[i]
    out = reader.end()
    for i in range(len(out)):
        if reader.starts is not None:
            reader.at = reader.starts[i]
        yield out[i]


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
            t = _begun(r)
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
        run(j)
    else:
        j.f = open(j.path, "ab")
        _resume(j)
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
                    t = _begun(r)
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
            t = _begun(r)
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
            t = _begun(r) if r[1] >= first else None
        elif k == "D" and t is not None and t.no == r[1]:
            _decided(t, r)
            i = t.no - first
            t.delivered = i < n and bool(seen[i >> 3] & (1 << (i & 7)))
            t.voided = t.no in j.voided
            yield t
            t = None


def _start(j):
    """A new copy: its header and C record; returns the compaction's state:
    [cutoff, journal offset of the next step, records to skip there, size
    of the copy, offsets of its begun records (journal.marks), a
    transaction already copied]."""
    cutoff = max(j.base, j.first_open - j.keep)
    # the copy starts at the indexed offset nearest below cutoff's begun
    # record: nothing before it is kept (a transaction's records follow its
    # begun one; the settlements before are summed up by C)
    k = (cutoff - j.base) // _SPAN
    m = j.marks
    at = m[k] if j.size is not None and k < len(m) else 4
    rec = records.pack(["C", cutoff, j.batch - 1, at])
    with open(j.path + ".tmp", "wb") as f:
        f.write(records.header())
        f.write(rec)
    return [cutoff, at, 0, 4 + len(rec), array("I"), False]


def _resume(j):
    """After replay: pick up the copy a power cut left, or start a due one."""
    tmp = j.path + ".tmp"
    try:
        with open(tmp, "rb") as f:
            ok = f.read(4) == records.header()
    except OSError:
        if j.settled > j.keep:
            j.tidy = True
        return
    c = None
    skip = 0
    copied = False  # a transaction copied before the last P
    rd = records_reader.Reader(4)
    if ok:
        for r in _read(tmp, rd):
            k = r[0]
            if c is None:
                if k != "C":
                    break
                c = [r[1], r[3], 0, 0, array("I"), False]
            elif k == "P":
                c[1], skip, copied = r[1], 0, c[5]
            else:
                skip += 1
                if k == "B":
                    _mark(c, r[1], rd.at)
    if c is None or rd.corrupt or rd.torn or not j.base <= c[0] <= j.next_no:  # (not of this journal)
        _remove(tmp)
        log.event("journal", "compaction", "restarted (its copy was not whole)")
        j.tidy = True
        return
    c[2], c[3], c[5] = skip, rd.pos, copied
    j.tidy = c
    log.event("journal", "compaction", "resumed at offset %d of the journal" % c[1])


def _mark(c, no, at):
    m = c[4]
    while len(m) * _SPAN + c[0] <= no:
        m.append(at)
    c[5] = True


def run(j):
    """A whole compaction now (tests, and a damaged file at boot)."""
    if j.tidy is None and j.path:
        j.tidy = True
    while j.tidy:
        step(j)


def abandon(j, why):
    _remove(j.path + ".tmp")
    log.event("journal", "compaction", "abandoned: %s" % why)


def step(j):
    """One step of the compaction (see the top of this module)."""
    c = j.tidy
    if c is True:
        j.tidy = _start(j)
        return
    cutoff, skip = c[0], c[2]
    tmp = j.path + ".tmp"
    rd = records_reader.Reader(c[1])
    nxt = None
    copied = seen = 0
    g = _read(j.path, rd, c[1])
    with open(tmp, "ab") as f:
        try:
            for r in g:
                if copied >= _STEP or seen >= 4 * _STEP:
                    nxt = rd.at
                    break
                seen += 1
                k = r[0]
                if k == "P" or k == "C" or (k == "S" and not c[5]) or (k != "S" and r[1] < cutoff):
                    continue
                if skip:  # copied before a power cut, after the last P
                    skip -= 1
                    if k == "B":
                        c[5] = True
                    continue
                if k == "B":
                    _mark(c, r[1], c[3])
                rec = records.pack(r)
                f.write(rec)
                c[3] += len(rec)
                copied += 1
        finally:
            g.close()
        if nxt is not None:
            rec = records.pack(["P", nxt])
            f.write(rec)
            c[3] += len(rec)
            c[1], c[2] = nxt, 0
    if nxt is None:
        _finish(j, c)


def _finish(j, c):
    """The copy has caught up with the journal: it becomes the journal."""
    cutoff = c[0]
    if j.f is not None:
        j.f.close()
        j.f = None
    try:
        os.rename(j.path + ".tmp", j.path)
    finally:
        j.f = open(j.path, "ab")
    d = cutoff - j.base
    if d > 0:  # the index forgets the numbers the copy left out
        mv = memoryview(j.idx)
        n = max(j.n - d, 0)
        mv[:2 * n] = mv[2 * d:2 * d + 2 * n]
        j.n = n
        j.base = cutoff
    j.marks = c[4]
    j.size = c[3]
    j.voided = [v for v in j.voided if v >= cutoff]
    j.settled = max(0, j.first_open - cutoff)
    j.tidy = True if j.settled > j.keep else None
    log.event("journal", "compacted", "kept %d settled + open batch %d" % (j.settled, j.batch))
