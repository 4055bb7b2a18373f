"""P3 framing and envelope codec; runs under pytest (CPython) and mp_runner (MicroPython)."""
from check import raises
from wire import p3

LOGIN = b'{"tag":"A","type":"LOGIN_MERCHANT_REQUEST","loginMerchantRequest":{"providerMode":"TEST"}}'


def test_frame_is_a_4_byte_big_endian_byte_count():
    f = p3.frame(b'{"tag":"x","type":"X_REQUEST","x":{}}')
    assert f[:4] == b"\x00\x00\x00\x25" and len(f) == 4 + 37
    assert p3.frame("é".encode())[:4] == b"\x00\x00\x00\x02"  # bytes, not characters


def test_size_refuses_above_the_limit_before_reading():
    assert p3.count(b"\x00\x00\x01\x00", 256) == 256
    assert p3.count(b"\x00\x00\x00\x00", 256) == 0
    e = raises(p3.P3Error, p3.count, b"\x00\x00\x01\x01", 256)
    assert e.kind == "MESSAGE_INVALID" and "257" in str(e)
    e = raises(p3.P3Error, p3.count, b"\xff\xff\xff\xff", 16384)
    assert "4294967295" in str(e)  # unsigned


def test_loads_keeps_decimals_exact_as_text():
    m = p3.loads(b'{"a": 5.00, "b": [1, -2.5e3], "c": "x.5\\"3.3", "d": 12, "e": 123456.78}')
    assert m == {"a": "5.00", "b": [1, "-2.5e3"], "c": 'x.5"3.3', "d": 12, "e": "123456.78"}
    assert p3.loads(LOGIN)["loginMerchantRequest"] == {"providerMode": "TEST"}


def test_loads_refuses_what_is_not_a_utf8_json_object():
    for bad, why in ((b"\xff\xfe{}", "UTF-8"), (b"{\"a\":\xc3\x28}", "UTF-8"), (b"", "JSON"),
                     (b"{'a': 1}", "JSON"), (b'{"a":1} x', "JSON"), (b"[1, 2]", "object"),
                     (b'"text"', "object"), (b"nul", "JSON")):
        e = raises(p3.P3Error, p3.loads, bad)
        assert e.kind == "MESSAGE_INVALID" and why in str(e), (bad, str(e))


def test_dumps_keeps_order_skips_none_and_writes_amounts_raw():
    m = p3.message("X_RESPONSE", "t1", None, "OK", None, (("amount", b"12.50"), ("ok", True),
                                                          ("list", [1, "a", (("k", None),)])))
    assert p3.dumps(m) == (b'{"type":"X_RESPONSE","tag":"t1","status":"OK",'
                           b'"xResponse":{"amount":12.50,"ok":true,"list":[1,"a",{}]}}')
    assert p3.dumps(p3.message("Y_UPDATE")) == b'{"type":"Y_UPDATE"}'
    assert p3.dumps((("s", 'a"b\\c\n'),)) == b'{"s":"a\\"b\\\\c\\n"}'


def test_size_and_pieces_match_dumps():
    m = p3.message("X_RESPONSE", "t", None, "OK", None, (("lines", ["x" * 100] * 30), ("n", 1)))
    whole = p3.dumps(m)
    got, bufs = [], set()

    def put(b):  # a piece is only good until put() returns: copied
        got.append(bytes(b))
        bufs.add(id(b))

    p3.pieces(m, put, 256, bytearray(256))
    assert p3.size(m) == len(whole) and b"".join(got) == whole
    assert len(got) > 5 and all(len(g) <= 256 for g in got)
    assert len(bufs) == 1  # one buffer made for every piece: no allocation per piece


def test_error_response():
    e = p3.P3Error(p3.MISSING, "amount is missing", "executeTransactionRequest.amount")
    m = p3.dumps(p3.error("EXECUTE_TRANSACTION_RESPONSE", "B", "devices/x", e))
    assert m == (b'{"type":"EXECUTE_TRANSACTION_RESPONSE","tag":"B","resource":"devices/x","status":"ERROR",'
                 b'"error":{"type":"PARAMETER_MISSING","message":"amount is missing",'
                 b'"developerMessage":"executeTransactionRequest.amount"}}')


def test_camel():
    assert p3.camel("LOGIN_MERCHANT_REQUEST") == "loginMerchantRequest"
    assert p3.camel("EXECUTE_TRANSACTION_UPDATE") == "executeTransactionUpdate"


def test_field_checks_presence_and_type():
    d = {"a": "x", "n": 5, "b": True, "o": {}}
    assert p3.field(d, "a", "p.") == "x" and p3.field(d, "z", "p.", str, False) is None
    assert raises(p3.P3Error, p3.field, d, "z", "p.").kind == "PARAMETER_MISSING"
    e = raises(p3.P3Error, p3.field, d, "n", "p.")
    assert e.kind == "PARAMETER_INVALID" and str(e) == "p.n has the wrong type"
    assert raises(p3.P3Error, p3.field, d, "b", "p.", (int, str)).kind == "PARAMETER_INVALID"
    assert p3.field(d, "b", "p.", bool) is True and p3.field(d, "o", "", dict) == {}


def test_minor_units_exactly():
    ok = (("5.00", 2, 500), ("12.1", 2, 1210), (5, 2, 500), ("5.", 2, 500), ("0.05", 2, 5),
          ("123456.78", 2, 12345678), ("5.000", 2, 500), ("1500", 0, 1500), ("0", 2, 0),
          ("9999999999.99", 2, 999999999999))
    for v, places, want in ok:
        assert p3.minor(v, places) == want, (v, places)
    for v in ("5.005", "-1.00", "1e3", True, None, 1.5, "", " 5", "5.0.0", "10000000000.00", "0x10"):
        assert p3.minor(v, 2) is None, v


def test_decimal():
    assert (p3.decimal(1250, 2), p3.decimal(5, 2), p3.decimal(100, 0)) == (b"12.50", b"0.05", b"100")


def test_redact_hides_secrets_and_signatures():
    m = (b'{"loginMerchantRequest":{"merchantSecret":"s\\"3cr3t","merchantIdentifier":"m"},'
         b'"signature" : "iVBOR"}')
    r = p3.redact(m)
    assert r == (b'{"loginMerchantRequest":{"merchantSecret":"***","merchantIdentifier":"m"},'
                 b'"signature" : "***"}')
    assert b"3cr3t" not in r and p3.redact(b'{"a":1}') == b'{"a":1}'
    assert p3.redact(b'{"merchantSecret":') == b'{"merchantSecret":'
    assert p3.redact(b'{"merchantSecret":"s3cr') == b'{"merchantSecret":"***'  # a cut log line


def test_loads_refuses_json_nested_too_deep_with_its_own_error():
    # refused before json sees it: json needs a stack, or a heap, for each level
    for data in (b'{"a":' + b"[" * 3000 + b"]" * 3000 + b"}", b"[" * 3000,
                 b'{"a":' + b"[" * (p3.MAX_DEPTH) + b"]" * (p3.MAX_DEPTH) + b"}"):
        try:
            p3.loads(data)
        except p3.P3Error as e:
            assert e.kind == "MESSAGE_INVALID" and "deep" in str(e)
        else:
            raise AssertionError("accepted %r" % data[:40])
    # as deep as allowed, brackets inside strings not counted
    deep = b"[" * (p3.MAX_DEPTH - 1) + b"]" * (p3.MAX_DEPTH - 1)
    assert p3.loads(b'{"a":' + deep + b',"b":"' + b"[{" * 40 + b'\\"x"}')["b"] == "[{" * 40 + '"x'


def test_minor_takes_ascii_digits_only():
    # "²".isdigit() is True on CPython, and int() refused it: ValueError
    for bad in ("\u00b2", "1\u00b2", "\u0661\u0662", "1.\u0662", "", ".5", "-1"):
        assert p3.minor(bad, 2) is None, bad
    assert p3.minor("12.5", 2) == 1250 and p3.minor(7, 0) == 7


def test_dumps_escapes_keys_it_did_not_write_itself():
    m = {"a\"b": 1, "\f": [], "": 2, "plain": 3}
    assert p3.loads(p3.dumps(m)) == m


def test_redact_hides_every_occurrence_of_a_secret_key():
    data = b'{"merchantSecret":"first","x":1,"merchantSecret" : "s3cr3t\\"x","signature":"AAAA"}'
    red = p3.redact(data)
    assert b"first" not in red and b"s3cr3t" not in red and b"AAAA" not in red, red
    assert red.count(b"***") == 3
    assert p3.redact(b'{"merchantSecret":"abc') == b'{"merchantSecret":"***'


def test_relax_takes_text_booleans_and_signature_spellings_as_payserver_does():
    body = {"transactionParameters": {"amount": "10.00", "autoCapture": "TRUE"},
            "verifyOnReceipt": "false", "verified": "yes"}
    notes = p3.relax(body)
    assert body["transactionParameters"]["autoCapture"] is True
    assert body["signatureOnReceipt"] is False and "verifyOnReceipt" not in body
    assert body["verified"] == "yes"  # not a boolean spelling: field() refuses it
    assert notes == ["verifyOnReceipt taken as signatureOnReceipt",
                     'signatureOnReceipt "false" taken as false', 'autoCapture "TRUE" taken as true']
    e = raises(p3.P3Error, p3.field, body, "verified", "", bool)
    assert e.kind == "PARAMETER_INVALID"
    body = {"onReceipt": True, "signatureOnReceipt": False}  # the real name wins
    assert p3.relax(body) == [] and body["signatureOnReceipt"] is False
    assert p3.relax({"transactionParameters": "x"}) == []
