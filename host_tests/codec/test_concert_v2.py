"""Concert V2 (E/E+) codec and its framing, with the byte-exact vectors of
the spec (specs/concert.md 9.3); CPython (pytest) and MicroPython (mp_runner)."""
from check import raises
from wire import concert_link as link
from wire import concert_v2 as v2

SP10 = b" " * 10
# what pypostelium 0.0.5 sends for 12.50 EUR by card: IND 0, A011, B010
PYPOSTELIUM = b"\x02" + b"0100001250" + b"010" + b"978" + SP10 + b"A011B010" + b"\x03\x01"
# pyTeliumManager 2.4.2 new_payment(12.5, target_currency='EUR'): IND 1, A010, B010
PYTELIUM = b"\x02" + b"0100001250" + b"110" + b"978" + SP10 + b"A010B010" + b"\x03\x01"
PROTOCOL_E = b"\x02" + b"0100001250110978" + SP10 + b"\x03\x02"
SHORT_OK = b"\x02" + b"010000012501978" + SP10 + b"\x03\x33"
SHORT_REFUSED = b"\x02" + b"017000012501978" + SP10 + b"\x03\x34"
LONG_OK = (b"\x02" + b"01000001250" + b"1" + b"4970100000000014" + b" " * 39 + b"978" + SP10
           + b"\x03\x1d")


def test_spec_request_vectors_frame_as_the_clients_send_them():
    assert link.frame(PYPOSTELIUM[1:-2]) == PYPOSTELIUM
    assert link.frame(PYTELIUM[1:-2]) == PYTELIUM
    assert link.frame(PROTOCOL_E[1:-2]) == PROTOCOL_E
    assert len(PYTELIUM) == 37 and len(PROTOCOL_E) == 29


def test_decode_e_plus():
    m = v2.decode(PYTELIUM[1:-2])
    assert m == {"pos": "01", "amount": "00001250", "ind": "1", "mode": "1", "type": "0",
                 "currency": "978", "private": " " * 10, "delai": "A010", "auto": "B010"}
    assert v2.decode(PYPOSTELIUM[1:-2])["delai"] == "A011"


def test_decode_protocol_e_defaults_to_answer_at_the_end():
    m = v2.decode(PROTOCOL_E[1:-2])
    assert (m["ind"], m["delai"], m["auto"]) == ("1", "A010", "B010")


def test_answer_vectors():
    req = v2.decode(PYPOSTELIUM[1:-2])
    assert link.frame(v2.encode(req, v2.ACCEPTED)) == SHORT_OK
    assert link.frame(v2.encode(req, v2.REFUSED)) == SHORT_REFUSED
    long_ = v2.encode(v2.decode(PYTELIUM[1:-2]), v2.ACCEPTED, "4970100000000014")
    assert link.frame(long_) == LONG_OK
    assert len(SHORT_OK) == 28 and len(LONG_OK) == 83  # what the clients read, exactly


def test_long_answer_pads_or_cuts_rep_to_55():
    req = v2.decode(PYTELIUM[1:-2])
    assert len(v2.encode(req, v2.REFUSED)) == 80
    assert len(v2.encode(req, v2.ACCEPTED, "9" * 70)) == 80


def test_malformed_requests():
    good = PYTELIUM[1:-2]
    bad = [
        good[:-1],                                # 33 characters
        good + b"X",                              # 35
        b"",
        good[:2] + b"0000I250" + good[10:],       # amount not digits
        b"A1" + good[2:],                         # POS not digits
        good[:13] + b"EUR" + good[16:],           # currency not digits
        good[:10] + b"2" + good[11:],             # IND neither 0 nor 1
        good[:26] + b"A012" + good[30:],          # DELAI
        good[:30] + b"C010",                      # AUTO
        good[:16] + b"\x01" + good[17:],          # control byte
        good[:16] + b"\xe9" + good[17:],          # not ASCII
    ]
    for b in bad:
        e = raises(v2.V2Error, v2.decode, b)
        assert str(e)


def test_salvage_echoes_what_it_can():
    m = v2.salvage(b"01000012X0" + b"1" + b"1" + b"0" + b"978" + b"REF-42    ")
    assert m == {"pos": "01", "amount": "00000000", "ind": "1", "mode": "1",
                 "currency": "978", "private": "REF-42    "}
    assert len(v2.encode(m, v2.REFUSED)) == 80
    m = v2.salvage(b"\x00\x01")
    assert v2.encode(m, v2.REFUSED) == b"007000000000000" + SP10
