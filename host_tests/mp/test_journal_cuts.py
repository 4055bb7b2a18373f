"""Compaction cut at every instant (host_tests/test_journal.py runs this
under MicroPython): on a PC's files, at every record written to the copy;
on littlefs, at every block the file system programs.  After each cut the
journal is opened as at boot (the compaction resumed or restarted), the
compaction is run to its end, and the file must hold every transaction it
held before, once, and nothing else."""
import os

import vfs

from firmware import log
from firmware import journal_compact
from firmware.journal import Journal, Txn
from wire import records_reader

log.frames = False
log.event = lambda *a: None  # quiet: thousands of boots

TMP = os.getenv("TMPDIR") or "/tmp"


def _rm(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _pay(j, i, ref=None, void=None):
    t = Txn("void" if void else "pay", 1000 + i, 978, "test", ref or "r-%d" % i, void, None)
    j.begin(t)
    t.result = "approved" if i % 3 else "declined"
    j.decide(t)
    if i % 2:
        j.delivered(t)
    return t


def _raw(path):
    """{no: [begun records, decided records]} and the other records, read raw."""
    got = {}
    other = []
    rd = records_reader.Reader()
    with open(path, "rb") as f:
        f.read(4)
        for r in rd.feed(f.read()):
            if r[0] in ("B", "D"):
                got.setdefault(r[1], [0, 0])[0 if r[0] == "B" else 1] += 1
            else:
                other.append(r)
    assert not rd.end() and not rd.corrupt and not rd.torn, (rd.corrupt, rd.torn)
    return got, other


def _check(path, want, keep, next_no, batch):
    """Open the journal as at boot, finish its compaction, compare."""
    j = Journal(path, keep=keep, flush=True)
    assert j.next_no == next_no and j.batch == batch, (j.next_no, next_no, j.batch, batch)
    j._cold(journal_compact.run)  # the whole compaction at once (the core runs it in steps)
    j.close()
    assert not _exists(path + ".tmp")
    got, _ = _raw(path)
    for no, bd in got.items():
        assert bd == [1, 1], (no, bd)  # once, begun and decided
    nos = sorted(got)
    assert nos == [n for n in sorted(want) if n >= nos[0]], (nos, sorted(want))
    assert nos[-1] == next_no - 1
    j = Journal(path, keep=keep, flush=True)
    assert j.settled <= keep and j.tidy is None, (j.settled, keep, j.tidy)
    j.close()
    return len(nos)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _records(path, start):
    """Offsets just past each record of path from start on."""
    rd = records_reader.Reader(start)
    ends = []
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    out = rd.feed(data)
    for i in range(len(out)):
        ends.append(rd.starts[i + 1] if i + 1 < len(out) else rd.pos)
    return ends


def _copy(src, dst, n=None):
    with open(src, "rb") as f:
        data = f.read() if n is None else f.read(n)
    with open(dst, "wb") as f:
        f.write(data)


def test_compaction_cut_at_every_record_of_the_copy_on_files():
    """Transactions keep coming between the steps; a cut can fall between
    any two records the copy receives (each is one write)."""
    path = TMP + "/cut.bin"
    snap = TMP + "/snap.bin"
    for p in (path, path + ".tmp"):
        _rm(p)
    keep = 40
    j = Journal(path, keep=keep, flush=False)
    for i in range(1, 101):
        _pay(j, i)
        if i % 30 == 0:
            j.settle(i)
    _pay(j, 101, void=100)
    j.settle(999)
    assert j.tidy is True
    cuts = steps = checked = 0
    i = 102
    while j.tidy:
        tsize = os.stat(path + ".tmp")[6] if _exists(path + ".tmp") else 0
        _copy(path, snap + ".old")  # the journal as the step starts
        state = (j.next_no, j.batch)
        want = set(_raw(path)[0])
        j.work()
        steps += 1
        if _exists(path + ".tmp"):
            ends = [e for e in _records(path + ".tmp", 4) if e > tsize] if tsize else \
                [0, 4] + _records(path + ".tmp", 4)
        else:  # renamed: the cut fell before (a whole copy) or after
            ends = []
        for e in ends:
            _copy(snap + ".old", snap)
            _rm(snap + ".tmp")
            if _exists(path + ".tmp"):
                _copy(path + ".tmp", snap + ".tmp", e)
            checked += _check(snap, want, keep, *state)
            cuts += 1
        _copy(path, snap)
        _rm(snap + ".tmp")
        if _exists(path + ".tmp"):
            _copy(path + ".tmp", snap + ".tmp")
        checked += _check(snap, set(_raw(path)[0]), keep, j.next_no, j.batch)
        cuts += 1
        if j.tidy:  # a payment between two steps
            _pay(j, i)
            i += 1
    j.close()
    assert steps >= 3 and cuts > 30, (steps, cuts)
    print("files: %d steps, %d cuts, %d transactions checked" % (steps, cuts, checked))


class RAMBlocks:
    """A littlefs block device in RAM that logs every program operation."""

    def __init__(self, data, log=None):
        self.data = data
        self.log = log

    def readblocks(self, block, buf, off=0):
        a = block * 512 + off
        buf[:] = self.data[a:a + len(buf)]

    def writeblocks(self, block, buf, off=0):
        a = block * 512 + off
        self.data[a:a + len(buf)] = buf
        if self.log is not None:
            self.log.append((a, bytes(buf)))

    def ioctl(self, op, arg):
        if op == 4:
            return len(self.data) // 512
        if op == 5:
            return 512
        if op == 6:  # erase
            return 0
        return 0


def test_compaction_cut_at_every_block_programmed_on_littlefs():
    keep = 40
    image = bytearray(b"\xff" * 64 * 1024)
    dev = RAMBlocks(image)
    vfs.VfsLfs2.mkfs(dev)
    vfs.mount(vfs.VfsLfs2(dev), "/cut")
    path = "/cut/journal.bin"
    j = Journal(path, keep=keep, flush=True)
    for i in range(1, 81):
        _pay(j, i)
        if i % 30 == 0:
            j.settle(i)
    j.settle(99)
    assert j.tidy is True
    want = set(_raw(path)[0])
    state = (j.next_no, j.batch)
    base = bytes(image)
    dev.log = []
    j._cold(journal_compact.run)  # the whole compaction at once (the core runs it in steps)
    j.close()
    writes = dev.log
    vfs.umount("/cut")
    cuts = checked = 0
    img = bytearray(base)
    for k in range(len(writes) + 1):
        if k:
            a, b = writes[k - 1]
            img[a:a + len(b)] = b
        snap = bytearray(img)
        vfs.mount(vfs.VfsLfs2(RAMBlocks(snap)), "/snap")
        try:
            checked += _check("/snap/journal.bin", want, keep, *state)
        finally:
            vfs.umount("/snap")
        cuts += 1
    assert cuts > 20, cuts
    print("littlefs: %d cuts (one per block programmed), %d transactions checked" % (cuts, checked))
