"""Reading journal records back (boot replay, lookups, host tools).

Kept apart from records.py so that the firmware's hot path, which only
writes records, does not carry the reader in RAM.
"""
import json
from binascii import crc32

from wire.records import MAX_PAYLOAD, SYNC


class Reader:
    """Feed the file's bytes (after the header) in chunks; get records back.

    Memory stays bounded: at most one record plus one chunk is buffered.
    `corrupt` counts damaged stretches skipped; `torn` is True if the file
    ended inside a record (a write cut by a power loss).  With pos (the
    file offset of the first byte fed), `starts` lists the offset of each
    record the last feed or end returned.
    """

    def __init__(self, pos=None):
        self.buf = bytearray()
        self.corrupt = 0
        self.torn = False
        self._bad = False  # inside a damaged stretch
        self.pos = pos  # type: int | None  # file offset of buf[0]
        self.starts = None  # type: list | None
        self.at = 0  # the offset of the record being read (set by the caller)

    def feed(self, data):
        self.buf.extend(data)  # in place: the buffer keeps its room from chunk to chunk
        return self._parse(False)

    def end(self):
        """Call at the end of the file; returns the last records, if any.

        What is left must be a record the power cut short, unless a damaged
        length made a record look longer than the file: so the leftovers are
        searched once more for whole records before calling the rest torn."""
        out = self._parse(True)
        self.buf = bytearray()
        return out

    def _parse(self, eof):
        out = []
        starts = None if self.pos is None else []  # type: list | None
        base = self.pos or 0
        buf = self.buf
        i = 0
        while i < len(buf):
            if buf[i] == SYNC:
                n = (buf[i + 1] << 8) | buf[i + 2] if len(buf) - i >= 3 else -1
                if 0 <= n <= MAX_PAYLOAD and i + 7 + n <= len(buf):
                    fields = self._check(buf, i, i + 7 + n)
                    if fields is not None:
                        self._bad = False
                        out.append(fields)
                        if starts is not None:
                            starts.append(base + i)
                        i += 7 + n
                        continue
                elif n <= MAX_PAYLOAD:  # not all here yet
                    if not eof:
                        break
                    if self._tail(buf, i):
                        self.torn = True
                        i = len(buf)
                        break
            if not self._bad:  # a damaged stretch counts once
                self._bad = True
                self.corrupt += 1
            i += 1
        buf[:i] = b""  # in place, not a new copy of the rest for each chunk
        if starts is not None:
            self.pos = base + i
            self.starts = starts
        return out

    def _tail(self, buf, i):
        """No whole record anywhere in buf[i:]: it is the torn last one."""
        for k in range(i + 1, len(buf)):
            if buf[k] == SYNC and len(buf) - k >= 7:
                n = (buf[k + 1] << 8) | buf[k + 2]
                if k + 7 + n <= len(buf) and self._check(buf, k, k + 7 + n) is not None:
                    return False
        return True

    def _check(self, buf, i, end):
        want = (buf[end - 4] << 24) | (buf[end - 3] << 16) | (buf[end - 2] << 8) | buf[end - 1]
        if crc32(buf[i + 1:end - 4]) & 0xFFFFFFFF != want:
            return None
        try:
            return json.loads(bytes(buf[i + 3:end - 4]))
        except ValueError:
            return None


def read(path, reader, at=4, chunk=128):
    """Every record of a journal file from offset at (4: after the header),
    in order, read chunk bytes at a time (with what is left of a record, a
    hole of at most ~260 bytes for 128); with a reader given a position,
    reader.at is each one's offset."""
    buf = bytearray(chunk)
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
