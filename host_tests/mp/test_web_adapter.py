"""The web face's adapter (firmware.web.Web) fed decoded requests in-process,
under MicroPython: no socket, the answer written to a list.

Run by host_tests/test_core_micropython.py through mp_runner.
"""
import asyncio
import json
import sys

from inproc import App, Arrived, run

from firmware import adapter, log
from firmware.trace import Trace
from firmware.web import Answer, Web
from wire import http

log.frames = False


class Sink:
    """Where an answer is written: what a stream offers the adapter."""

    def __init__(self):
        self.out = []

    def write(self, data):
        self.out.append(bytes(data))

    async def drain(self):
        pass

    def text(self):
        return b"".join(self.out).decode()


def _web(**over):
    app = App(**over)
    app.trace = Trace(app)
    return adapter(app, Web)


def _call(web, method, path, body=None, q=None, headers=None):
    """(answer, what was written) of one request."""
    s = Sink()
    out = run(web.request(s, method, path, q or {}, headers or {}, body))
    return out, s


def _refused(web, method, path, body=None, q=None):
    """(status, text) of a request answered with an error."""
    try:
        _call(web, method, path, body, q)
    except Answer as e:
        return e.status, e.text
    except http.HTTPError as e:
        return e.status, e.reason
    raise AssertionError("%s %s was answered" % (method, path))


async def _until(term, state, t):
    for _ in range(200):
        if t.state == state:
            return
        await asyncio.sleep_ms(5)
    raise AssertionError("never %s: %s" % (state, t.state))


def _payment(web, steps):
    """A payment started on the core in interactive mode; steps(t) acts on
    it through the adapter while it runs.  The transaction when it ends."""
    term = web.app.term
    term.interactive = True

    async def go():
        t = term.start("pay", 1250, 978, "test")
        task = asyncio.create_task(term.run(t))
        await steps(t)
        await task
        return t

    return run(go())


def test_the_adapter_is_the_apps_one():
    web = _web()
    assert adapter(web.app, Web) is web and web.streams == 0


def test_a_payment_approved_by_the_cardholder():
    web = _web()
    seen = []

    async def steps(t):
        await _until(web.app.term, "wait_card", t)
        st = await web.request(Sink(), "POST", "/api/card", {}, {}, {"profile": "chip", "brand": "VISA"})
        seen.append(st["screen"])
        await _until(web.app.term, "pin", t)
        st = await web.request(Sink(), "POST", "/api/pin", {}, {}, {"pin": web.app.cfg["card"]["pin"]})
        seen.append(st["state"])

    t = _payment(web, steps)
    assert t.result == "approved" and t.brand == "VISA", (t.result, t.reason)
    assert seen[0][0] == "12.50 EUR", seen
    st, _ = _call(web, "GET", "/api/state")
    assert st["screen"] == ["APPROVED", "REMOVE CARD"] and st["card_in"], st
    assert st["txn"]["result"] == "approved" and st["txn"]["card"] == "VISA chip ************0014"
    st, _ = _call(web, "POST", "/api/remove", {})
    assert st["screen"] == ["WELCOME", ""] and web.cleared == t.no, st


def test_three_wrong_pins_decline():
    web = _web()

    async def steps(t):
        await _until(web.app.term, "wait_card", t)
        await web.request(Sink(), "POST", "/api/card", {}, {}, {})
        await _until(web.app.term, "pin", t)
        for _ in range(3):
            await web.request(Sink(), "POST", "/api/pin", {}, {}, {"pin": "0000"})
            await asyncio.sleep_ms(10)

    t = _payment(web, steps)
    assert (t.result, t.reason) == ("declined", "pin"), (t.result, t.reason)
    st, _ = _call(web, "GET", "/api/state")
    assert st["screen"][0] == "DECLINED", st


def test_busy_answers():
    web = _web(web={"events": 0})
    assert _refused(web, "GET", "/api/events") == (503, "too many event streams (web.events)")
    assert web.streams == 0
    assert _refused(web, "POST", "/api/card", {}) == (409, "no card is awaited")  # no payment
    assert _refused(web, "POST", "/api/cancel", {}) == (409, "nothing to cancel")


def test_malformed_requests():
    web = _web()
    assert _refused(web, "GET", "/api/nothing") == (404, "Not Found")
    assert _refused(web, "GET", "/api/card") == (405, "Method Not Allowed")
    status, text = _refused(web, "POST", "/api/card", {"profile": "floppy"})
    assert status == 400 and text.startswith("profile:"), text
    status, text = _refused(web, "POST", "/api/mode", {"mode": "fast"})  # answered by web_admin
    assert status == 400 and text == "mode: auto or interactive", text


def test_rarer_calls_go_through_web_admin_and_leave():
    web = _web()
    term = web.app.term
    out, _ = _call(web, "POST", "/api/queue", {"outcomes": ["decline"]})
    assert out == {"queue": ["decline"], "next": 1}, out
    status, text = _refused(web, "POST", "/api/queue", {"outcomes": ["nonsense"]})
    assert status == 400 and text.startswith("outcomes:"), text
    t = run(term.run(term.start("pay", 1250, 978, "test")))
    assert t.result == "declined"
    out, s = _call(web, "GET", "/api/transactions")
    assert out is None  # written as it is read
    head, _, body = s.text().partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200 OK") and "application/json" in head
    rows = json.loads(body)["transactions"]
    assert [(r["no"], r["result"], r["reason"]) for r in rows] == [(1, "declined", "decline")], rows
    out, _ = _call(web, "GET", "/api/receipt", q={"no": "1"})
    assert out["no"] == 1 and "DECLINED" in out["text"].upper(), out
    assert _refused(web, "GET", "/api/receipt", q={"no": "9"}) == (404, "no such finished transaction")
    out, _ = _call(web, "POST", "/api/delay", {"auth_ms": 7})
    assert out["auth_ms"] == 7 and term.auth_ms == 7
    out, _ = _call(web, "POST", "/api/reset", {})
    assert out["auth_ms"] is None and out["queue"] == [] and web.cleared == 1
    assert "firmware.web_admin" not in sys.modules  # loaded for each call, then dropped


def test_every_route_has_its_call():
    from firmware import web as web_module
    from firmware import web_admin

    try:
        rare = sorted(p for p, (_, call) in web_module._ROUTES.items() if call is None)
        assert rare == sorted(web_admin.CALLS), (rare, sorted(web_admin.CALLS))
    finally:
        del sys.modules["firmware.web_admin"]


def test_json_answers_are_written_in_pieces():
    """However deep, no write is much longer than 128 bytes, and the pieces
    make the JSON of the whole (the running config: 3 KB)."""
    web = _web()
    for obj in ({"a": 1, "b": [2, {"c": None}], "d": {}, "e": []}, web.app.cfg):
        s = Sink()
        run(web.json(s, obj))
        assert s.out[0] == Web.JSON_HEAD, s.out
        assert max(len(x) for x in s.out[1:]) < 200, [len(x) for x in s.out]
        assert json.loads(b"".join(s.out[1:])) == json.loads(json.dumps(obj)), s.out


def test_a_config_write_without_room_for_the_config_module_changes_nothing():
    """PUT /api/config imports the config module (13 KB of a 32-bit heap
    from .mpy): without that much room beside memory.headroom, as its last
    import took, it is refused before anything changes (MemoryError: the
    listener answers 503, nothing done); with it, written and applied."""
    from firmware import drop

    web = _web()
    app = web.app
    app.board.CONFIG_PATH = app.board.STATE_DIR + "/config-put.json"
    applied = []

    async def apply(cfg):
        applied.append(cfg["delays"]["card_ms"])

    app.apply = apply
    drop("firmware.config")  # (inproc merged its config with it)
    _call(web, "PUT", "/api/config", {"delays": {"card_ms": 1}})
    assert applied == [1] and web.config_cost > 1000, (applied, web.config_cost)
    web.config_cost = 1 << 24  # more than this heap will ever have free
    try:
        _call(web, "PUT", "/api/config", {"delays": {"card_ms": 2}})
    except MemoryError:
        pass
    else:
        raise AssertionError("written without room for the config module")
    with open(app.board.CONFIG_PATH) as f:
        assert json.load(f) == {"delays": {"card_ms": 1}} and applied == [1]


class _NoRoomToRead(Sink):
    """A client stream whose request finds no heap to be read into."""

    def __init__(self):
        super().__init__()
        self.s = Arrived(b"GET /api/state HTTP/1.1\r\nHost: x\r\n\r\n" * 10)

    async def read(self, n):
        raise MemoryError("memory allocation failed, allocating 512 bytes")


def test_a_request_with_no_room_to_be_read_hears_503_and_is_read_away():
    """No room to read the head: 503 with Retry-After, and the request's
    bytes read away before the close, which would otherwise be a reset
    that can reach the client before the 503 does."""
    from firmware import web as web_module

    web = _web()
    s = _NoRoomToRead()
    run(web_module.serve(web.app, "web", s, "127.0.0.1"))
    assert s.text().startswith("HTTP/1.1 503 ") and "Retry-After: 1" in s.text(), s.out
    assert s.s.data == b"", len(s.s.data)
