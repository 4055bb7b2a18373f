"""The journal's compaction, crash-safe and in steps (loaded for one step
and dropped; journal.py, journal_replay.py).

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

from micropython import const

from firmware import log
from wire import records, records_reader
from wire.records_reader import read as _read

_STEP = const(32)  # records copied per compaction step
_SPAN = const(16)  # as journal._SPAN


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


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


def resume(j):
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
        n = max(j.n - d, 0)
        if j.idx is not None:
            mv = memoryview(j.idx)
            mv[:2 * n] = mv[2 * d:2 * d + 2 * n]
            for i in range(2 * n, 2 * j.n):  # from n on: zeros
                mv[i] = 0
        j.n = n
        j.base = cutoff
    j.marks = c[4]
    j.size = c[3]
    j.voided = [v for v in j.voided if v >= cutoff]
    j.settled = max(0, j.first_open - cutoff)
    j.tidy = True if j.settled > j.keep else None
    log.event("journal", "compacted", "kept %d settled + open batch %d" % (j.settled, j.batch))
