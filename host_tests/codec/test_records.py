"""Journal record format; runs under pytest (CPython) and mp_runner (MicroPython)."""
from wire import records, records_reader


def _read(data, chunk=7):
    r = records_reader.Reader()
    out = []
    for i in range(0, len(data), chunk):
        out += r.feed(data[i:i + chunk])
    out += r.end()
    return out, r


RECS = [["B", 1, "pay", 1250], ["D", 1, "approved", "046669"], ["V", 1, 1], ["S", 1, 1795000000]]
DATA = b"".join(records.pack(f) for f in RECS)


def test_header_and_version():
    h = records.header()
    assert h == b"USJ\x01" and records.version_of(h) == 1
    assert records.version_of(b"USJ\x00") == 0
    assert records.version_of(b"JUNK") is None and records.version_of(b"US") is None


def test_pack_layout():
    b = records.pack(["V", 1, 1])
    assert b[0] == 0xA5 and b[1:3] == b"\x00\x0b" and b[3:14] == b'["V", 1, 1]' and len(b) == 18


def test_roundtrip_in_any_chunking():
    for chunk in (1, 2, 7, 64, 4096):
        out, r = _read(DATA, chunk)
        assert out == RECS and r.corrupt == 0 and not r.torn


def test_torn_last_record_is_ignored():
    for cut in range(1, len(records.pack(RECS[-1]))):
        out, r = _read(DATA[:-cut])
        assert out == RECS[:-1] and r.torn and r.corrupt == 0, cut


def test_bit_flips_anywhere_skip_one_record_and_keep_the_rest():
    for pos in range(len(DATA)):
        for bit in (0x01, 0x80):
            bad = bytearray(DATA)
            bad[pos] ^= bit
            out, r = _read(bytes(bad))
            assert len(out) == len(RECS) - 1, (pos, bit, out)  # exactly the damaged one lost
            for f in out:
                assert f in RECS
            assert r.corrupt + (1 if r.torn else 0) >= 1, (pos, bit)


def test_garbage_between_records():
    # noise before the file's records and inside the first one: that one is lost
    out, r = _read(b"\x00\xff" + DATA[:20] + b"noise\xa5\x00" + DATA[20:])
    assert out == RECS[1:] and r.corrupt >= 1 and not r.torn


def test_oversize_record_refused():
    try:
        records.pack(["x" * (records.MAX_PAYLOAD + 1)])
    except ValueError:
        return
    raise AssertionError("no error")
