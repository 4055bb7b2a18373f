"""Concert V3 TLV codec; runs under pytest (CPython) and mp_runner (MicroPython)."""
from check import raises
from wire import concert_tlv as tlv

ODOO = b"CZ0040300CJ012012345678901CA00201CE003978CD0010CB0041250"


def test_decode_odoo_request():
    m = tlv.decode(ODOO)
    assert m == {"CZ": "0300", "CJ": "012345678901", "CA": "01", "CE": "978", "CD": "0", "CB": "1250"}


def test_trailing_crlf_is_tolerated():
    assert tlv.decode(ODOO + b"\r\n") == tlv.decode(ODOO)


def test_encode_roundtrip_and_skips_empty():
    pairs = [("CZ", "0320"), ("CB", "1250"), ("CF", ""), ("CF", None)]
    assert tlv.encode(pairs) == b"CZ0040320CB0041250"
    assert tlv.decode(tlv.encode(pairs)) == {"CZ": "0320", "CB": "1250"}


def test_constructed_ticket_tags_repeat():
    data = tlv.encode([("CZ", "0320"), ("ZT", [("CK", "100"), ("AK", "QUJD")]),
                       ("ZT", [("CK", "110"), ("AK", "REVG")])])
    assert data == b"CZ0040320ZT017CK003100AK004QUJDZT017CK003110AK004REVG"
    m = tlv.decode(data)
    assert m["ZT"] == [{"CK": "100", "AK": "QUJD"}, {"CK": "110", "AK": "REVG"}]


def test_spec_constructed_example():
    # the ZX example of the Concert rules: 14 chars holding AX and BY
    m = tlv.decode(b"CZ0040320ZX014AX003123BY001A")
    assert m["ZX"] == [{"AX": "123", "BY": "A"}]


def test_malformed_messages():
    bad = [
        b"",                                  # empty
        b"CJ012012345678901CZ0040300",         # CZ not first
        b"CZ0040300CZ0040320",                 # repeated tag
        b"CZ0040300ZX010ZY005AB001",           # nested constructed tag
        b"CZ0040300cb0041250",                 # lower-case tag
        b"CZ0040300CB0X41250",                 # bad length digits
        b"CZ0040300CB0101250",                 # value runs past the end
        b"CZ0040300CB000",                     # zero length
        b"CZ0040300CF003a\x01b",               # control byte in a value
        b"CZ0040300CF003\xe9ab",               # non-ASCII byte
        b"CZ0040300C",                         # truncated head
    ]
    for b in bad:
        e = raises(tlv.TLVError, tlv.decode, b)
        assert str(e)


def test_scan_walks_complete_elements():
    assert tlv.scan(ODOO) == len(ODOO)
    assert tlv.scan(ODOO[:-3]) == len(ODOO) - 9  # CB element incomplete
    assert tlv.scan(b"CZ00") == 0
    assert tlv.scan(ODOO + b"\r\n") == len(ODOO)


def test_scan_rejects_garbage_early():
    raises(tlv.TLVError, tlv.scan, b"\x00\x01\x02\x03\x04\x05")
    raises(tlv.TLVError, tlv.scan, b"CZ0040300xx")
    raises(tlv.TLVError, tlv.scan, b"CZ00X0300")


def test_encode_refuses_bad_tags_and_long_values():
    raises(tlv.TLVError, tlv.encode, [("cz", "1")])
    raises(tlv.TLVError, tlv.encode, [("CZX", "1")])
    raises(tlv.TLVError, tlv.encode, [("AK", "x" * 1000)])
    assert len(tlv.encode([("AK", "x" * 999)])) == 1004


def test_strip_eol():
    assert tlv.strip_eol(b"AB\r\n", 4) == 2
    assert tlv.strip_eol(b"\n\n", 2) == 0
