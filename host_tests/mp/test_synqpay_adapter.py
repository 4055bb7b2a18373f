"""The Synqpay adapter fed link frames in-process, under MicroPython: no
socket, no listener; the answers are the bytes written to a stream in RAM,
read back with the link's own decoder.

Run by host_tests/test_core_micropython.py through mp_runner.
"""
import asyncio
import json

from inproc import App, run

from firmware import adapter, log, synqpay
from wire import synqpay_link as L

log.frames = False
KEY = b"\x12\x34\xab\xcd"


class _Stream:
    """A link's stream: what the adapter writes, kept."""

    def __init__(self):
        self.out = bytearray()

    def write(self, data):
        self.out += bytes(data)

    async def drain(self):
        pass


def _frames(out):
    """The frames written, decoded: ("answer" or "event", the JSON) or ("error", link code)."""
    d = L.Decoder(1 << 16, L.CRC_BE, (L.RESPONSE, L.EVENT, L.ERROR))
    d.feed(out)
    got = []
    f = d.next()
    while f is not None:
        assert f[0] != L.BAD, (f, out)
        if f[0] == L.ERROR:
            got.append(("error", f[1]))
        else:
            got.append(("answer" if f[0] == L.RESPONSE else "event", json.loads(f[2])))
        f = d.next()
    assert not d.pending(), out  # nothing left half written
    return got


def _rpc(method, params=None, rid="1"):
    return json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}).encode()


def _sale(ref, amount=1250, **more):
    p = {"paymentMethod": "CREDIT_CARD", "transactionType": "SALE", "referenceId": ref,
         "amount": amount, "currency": 978}
    p.update(more)
    return p


async def _link(a, frames, until=None):
    """A link on a stream in RAM that sends frames (each a (key, payload) or a
    whole decoded frame) one after the other; then, if until, waits (at most
    2 s) for until(app) to be true.  The frames written back, decoded."""
    s = _Stream()
    me = a.connect("synqpay", s, "test")
    for f in frames:
        await a.request(me, f if len(f) == 3 else (L.REQUEST, f[0], f[1]))
    for _ in range(200):
        if until is None or until(a.app):
            break
        await asyncio.sleep_ms(10)
    await asyncio.sleep_ms(0)  # a send posted last goes out
    return _frames(s.out)


def _paired(**over):
    app = App(**over)
    a = adapter(app, synqpay.Synqpay)
    a.api_key = KEY
    return app, a


def _ended(app):
    t = app.term.journal.last()
    return app.term.current is None and t is not None and t.delivered


def _final(got):
    """The last answer: the transaction's TxResult."""
    answers = [m for kind, m in got if kind == "answer"]
    assert answers, got
    return answers[-1]


def test_a_sale_is_approved_and_its_result_written_to_the_link():
    app, a = _paired()
    got = run(_link(a, [(KEY, _rpc("startTransaction", _sale("s1", notifyEvents=True), "7"))], _ended))
    assert [m["params"]["type"] for kind, m in got if kind == "event"] == [
        "WAITING_FOR_CARD", "CARD_DETECTED", "PIN_STARTED", "AUTHORIZATION_STARTED"], got
    r = _final(got)
    assert r["id"] == "7" and r["result"]["result"] == "OK", r
    tx = r["result"]["transaction"]
    assert (tx["transactionStatus"], tx["amount"], tx["referenceId"]) == ("CAPTURED", 1250, "s1"), tx
    t = app.term.journal.last()
    assert t.result == "approved" and t.src == "synqpay" and t.delivered


def test_a_declined_sale_says_host_error():
    app, a = _paired()
    r = _final(run(_link(a, [(KEY, _rpc("startTransaction", _sale("d1", 1201)))], _ended)))
    assert r["result"]["result"] == "HOST_ERROR", r
    tx = r["result"]["transaction"]
    assert tx["transactionStatus"] == "DECLINED" and tx["hostErrorCode"] == 4, tx
    assert app.term.journal.last().result == "declined"


def test_busy_while_another_personality_pays():
    app, a = _paired()
    other = app.term.start("pay", 500, 978, "concert-ip")  # running, not ours
    got = run(_link(a, [(KEY, _rpc("startTransaction", _sale("b1"))), (KEY, _rpc("cancel", {}, "2"))]))
    assert got == [("answer", {"jsonrpc": "2.0", "id": "1",
                               "error": {"code": 201, "message": "device is busy"}}),
                   ("answer", {"jsonrpc": "2.0", "id": "2",
                               "error": {"code": 201, "message": "nothing to cancel"}})], got
    assert app.term.current is other and app.term.journal.lookup("b1", "synqpay") is None


def test_malformed_requests_get_their_errors_and_the_link_goes_on():
    app, a = _paired()
    got = run(_link(a, [
        (KEY, b'{"jsonrpc":"2.0","id":1,"method":'),  # cut JSON
        (KEY, b'{"jsonrpc":"1.0","id":2,"method":"getStatus"}'),
        (KEY, _rpc("startTransaction", _sale("m1", -5), "3")),
        (b"\x00\x00\x00\x01", _rpc("getStatus")),  # not the paired key
        (L.BAD, L.E_CRC, None),  # what the decoder hands out for a bad CRC
        (KEY, _rpc("getStatus", None, "4")),
    ]))
    assert [g[1]["error"]["code"] if g[0] == "answer" and "error" in g[1] else g for g in got] == [
        -32700, -32600, 103, ("error", L.E_AUTH), ("error", L.E_CRC),
        ("answer", {"jsonrpc": "2.0", "id": "4",
                    "result": {"deviceStatus": "IDLE", "cancelable": False}})], got
    assert app.term.journal.next_no == 1  # nothing began


def test_pairing_through_the_admin_half():
    app = App(synqpay={"otp": "123456", "api_key": "0badc0de"})
    a = adapter(app, synqpay.Synqpay)
    a.api_key = KEY  # paired before: pairing again replaces the key
    zero = L.ZERO_KEY
    got = run(_link(a, [
        (zero, _rpc("pair", {"serialNumber": "UST00001"})),
        (zero, _rpc("startTransaction", _sale("p1"), "2")),  # the zero key pays nothing
        (KEY, _rpc("getStatus", None, "3")),
        (KEY, _rpc("startTransaction", _sale("p2"), "3b")),  # busy: the code is on the screen
        (zero, _rpc("authenticate", {"otp": "654321"}, "4")),
        (zero, _rpc("authenticate", {"otp": "123456"}, "5")),
        (KEY, _rpc("getStatus", None, "6")),
    ]))
    assert got[0] == ("answer", {"jsonrpc": "2.0", "id": "1", "result": None}), got
    assert got[1] == ("error", L.E_AUTH), got
    assert got[2][1]["result"] == {"deviceStatus": "PAIRING", "cancelable": False}, got
    assert got[3][1]["error"] == {"code": 201, "message": "device is busy: pairing, its code is on the screen"
                                  " 30 s more"}, got
    assert got[4][1]["error"] == {"code": 103, "message": "wrong code"}, got
    assert got[5][1]["result"] == {"apiKey": "0badc0de"}, got
    assert got[6] == ("error", L.E_AUTH), got  # the old key is refused from then on
    assert a.api_key == b"\x0b\xad\xc0\xde" and a.pairing_code is None
    with open(app.board.STATE_DIR + a.KEY_FILE) as f:
        assert f.read() == "0badc0de\n"


def test_a_sale_looked_up_through_the_admin_half():
    app, a = _paired()
    run(_link(a, [(KEY, _rpc("startTransaction", _sale("l1")))], _ended))
    got = run(_link(a, [(KEY, _rpc("getTransaction", {"lookupMethod": "REF_ID", "lookupValue": "l1"}, "2")),
                        (KEY, _rpc("getTransaction", {"lookupMethod": "REF_ID", "lookupValue": "x"}, "3")),
                        (KEY, _rpc("noSuchMethod", {}, "4"))]))
    r = got[0][1]["result"]
    assert r["transactionResult"] == "OK" and r["transaction"]["referenceId"] == "l1", got
    assert r["transaction"]["transactionId"] == a.txid(app.term.journal.last()), got
    assert [g[1]["error"]["code"] for g in got[1:]] == [302, -32601], got


def test_an_answer_owed_goes_to_the_next_link_that_shows_the_key():
    """The lost outcome (amount ending in 07): approved, the link ended
    before the answer; the next link to show the key hears it first."""
    app, a = _paired()

    async def go():
        first = asyncio.create_task(_link(a, [(KEY, _rpc("startTransaction", _sale("c1", 1207), "9"))],
                                          lambda app: False))
        try:
            await first
            ended = False
        except asyncio.CancelledError:  # ended by the adapter (serve() would close the link)
            ended = True
        assert ended and a.app.term.journal.last().delivered is False
        return await _link(a, [(KEY, _rpc("getStatus", None, "10"))], _ended)

    got = run(go())
    assert [m["id"] for kind, m in got] == ["9", "10"], got
    assert got[0][1]["result"]["result"] == "OK" and app.term.journal.last().delivered


def test_a_sale_with_no_room_for_its_task_leaves_the_terminal_free():
    """The terminal was claimed, but the task that would run the sale found
    no room: the claim is given back (nothing was journaled) and the request
    is handled again a moment later, rather than a terminal busy for good."""
    app, a = _paired()
    real = a._run
    calls = [0]

    def _run(t):
        calls[0] += 1
        if calls[0] == 1:
            assert app.term.current is t  # claimed when it fails
            raise MemoryError("memory allocation failed, allocating 200 bytes")
        return real(t)

    a._run = _run
    r = _final(run(_link(a, [(KEY, _rpc("startTransaction", _sale("r1")))], _ended)))
    assert r["result"]["transaction"]["transactionStatus"] == "CAPTURED" and calls[0] == 2, r
    assert app.term.journal.next_no == 2  # one transaction, journaled once


class _Reads(_Stream):
    """A link whose first read finds no heap, then brings a request, then ends."""

    def __init__(self, frames):
        super().__init__()
        self.frames = [MemoryError("memory allocation failed, allocating 257 bytes")] + frames

    async def read(self, n):
        await asyncio.sleep_ms(0)
        if not self.frames:
            return b""
        f = self.frames.pop(0)
        if isinstance(f, Exception):
            raise f
        return f


def test_a_link_with_no_room_to_read_reads_again_a_moment_later():
    """No room for a read (it allocates its size first, before taking any
    byte from the socket): the link waits and reads again, rather than
    closing under the POS with its request unanswered."""
    app, _ = _paired()  # (serve() finds the paired adapter through the app)
    s = _Reads([L.frame(L.REQUEST, _rpc("getStatus", None, "4"), KEY)])
    run(synqpay.serve(app, "synqpay", s, "test"))
    got = _frames(s.out)
    assert got and got[0][0] == "answer" and got[0][1]["id"] == "4", got


def test_a_link_that_never_finds_room_to_read_ends_after_the_request_time_out():
    """Reads that keep finding no room are tried again for as long as the
    link may stay silent (timeouts.request_ms here), then the link ends:
    a heap that never comes back does not keep the socket for ever."""
    app, _ = _paired(timeouts={"request_ms": 300})
    s = _Reads([])
    s.frames = [MemoryError("memory allocation failed, allocating 257 bytes")] * 100
    seen = []
    log.watch(lambda src, what, line: seen.append(line))
    try:
        run(synqpay.serve(app, "synqpay", s, "test"), 3000)
    finally:
        log.observers.clear()
    assert "synqpay closed test no room to read for 300 ms" in seen, seen
    assert 3 <= 100 - len(s.frames) <= 5, len(s.frames)  # read again every 100 ms meanwhile
