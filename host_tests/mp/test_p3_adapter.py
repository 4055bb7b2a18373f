"""The P3 adapter fed decoded messages in-process, under MicroPython: no
socket, no transport; what it answers (or what a transaction's task
writes) is collected by a stand-in connection.

Run by host_tests/test_core_micropython.py through mp_runner.
"""
import asyncio
import sys

from inproc import App, run

from firmware import adapter, log
from firmware.p3_adapter import P3
from wire import p3 as p3_codec

log.frames = False

DEVICE = "devices/understudy"
LOGIN = {"providerMode": "TEST", "merchantIdentifier": "understudy", "merchantSecret": "understudy"}


class _Conn:
    """Where the adapter writes: every message decoded back, as a POS reads it."""

    name = "p3-test"
    peer = "in-process"

    def __init__(self):
        self.out = []
        self.open = True

    async def send(self, m):
        self.out.append(p3_codec.loads(p3_codec.dumps(m)))
        return True

    def close(self):
        self.open = False


def _p3(**over):
    app = App(**over)
    return adapter(app, P3), _Conn()


def _msg(op, tag, body=None, resource=DEVICE):
    m = {"type": op + "_REQUEST", "tag": tag, "resource": resource}
    if body is not None:
        m[p3_codec.camel(op + "_REQUEST")] = body
    return m


def _charge(tag, amount="12.50", **extra):
    tp = {"amount": amount, "currency": "EUR", "type": "CHARGE", "autoCapture": True}
    tp.update(extra)
    return _msg("EXECUTE_TRANSACTION", tag, {"transactionParameters": tp})


def _answer(p3, conn, m):
    """What request() answers at once, as the POS reads it (None: nothing now)."""
    a = run(p3.request(conn, m))
    return None if a is None else p3_codec.loads(p3_codec.dumps(a))


def _login(p3, conn):
    a = _answer(p3, conn, _msg("LOGIN_MERCHANT", "L1", LOGIN, None))
    assert a["type"] == "LOGIN_MERCHANT_RESPONSE" and a["status"] == "OK", a


async def _final(conn, tag, ms=3000):
    """The final response of the transaction that request `tag` started."""
    for _ in range(ms // 10):
        for m in conn.out:
            if m.get("tag") == tag and m["type"].endswith("_RESPONSE"):
                return m
        await asyncio.sleep_ms(10)
    raise AssertionError("no final response to %s: %r" % (tag, conn.out))


def _pay(p3, conn, tag, amount="12.50"):
    """Start a charge (request answers nothing at once) and wait for its end."""

    async def go():
        assert await p3.request(conn, _charge(tag, amount)) is None
        return await _final(conn, tag)

    return run(go())


def _error(a):
    assert a["status"] == "ERROR", a
    return a["error"]["type"]


def test_a_payment_is_approved_with_its_updates():
    p3, conn = _p3()
    _login(p3, conn)
    m = _pay(p3, conn, "A1")
    t = m["executeTransactionResponse"]["transaction"]
    assert m["type"] == "EXECUTE_TRANSACTION_RESPONSE" and m["status"] == "OK", m
    assert t["status"] == "APPROVED" and t["amount"] == "12.50" and t["currency"] == "EUR", t
    assert t["identifier"] == "UST00001-000001" and t["clearingDetails"]["authorizationCode"], t
    states = [u["executeTransactionUpdate"]["transactionProcessDetails"]["state"]
              for u in conn.out if u["type"] == "EXECUTE_TRANSACTION_UPDATE"]
    assert states == ["WAITING_FOR_CARD_PRESENTATION", "WAITING_FOR_PIN", "PROCESSING"], states
    assert p3.app.term.journal.last().delivered


def test_a_decline_is_a_declined_transaction_not_an_error():
    p3, conn = _p3()
    _login(p3, conn)
    m = _pay(p3, conn, "D1", "12.01")  # cents 01: the card issuer declines
    assert m["status"] == "OK", m
    assert m["executeTransactionResponse"]["transaction"]["status"] == "DECLINED", m


def test_busy_while_a_transaction_runs_then_abort_through_the_other_requests():
    p3, conn = _p3(delays={"card_ms": 2000})
    _login(p3, conn)

    async def go():
        assert await p3.request(conn, _charge("A1")) is None
        await asyncio.sleep_ms(50)  # waiting for the card now
        busy = await p3.request(conn, _charge("A2", "3.00"))
        abort = await p3.request(conn, _msg("ABORT_TRANSACTION", "X1"))
        return busy, abort, await _final(conn, "A1")

    busy, abort, final = run(go())
    busy, abort = [p3_codec.loads(p3_codec.dumps(a)) for a in (busy, abort)]
    assert busy["type"] == "EXECUTE_TRANSACTION_RESPONSE" and busy["tag"] == "A2", busy
    assert _error(busy) == "ACCESSORY_BUSY"
    assert abort["type"] == "ABORT_TRANSACTION_RESPONSE" and abort["status"] == "OK", abort
    assert final["executeTransactionResponse"]["transaction"]["status"] == "ABORTED", final
    assert "firmware.p3_other_requests" not in sys.modules  # loaded for the abort, then dropped


def test_malformed_requests_get_an_error_naming_the_fault():
    p3, conn = _p3()
    _login(p3, conn)
    m = _charge("B1")
    del m["tag"]
    a = _answer(p3, conn, m)
    assert a["type"] == "EXECUTE_TRANSACTION_RESPONSE" and _error(a) == "PARAMETER_MISSING", a
    a = _answer(p3, conn, {"tag": "B2"})
    assert a["type"] == "ERROR_RESPONSE" and _error(a) == "MESSAGE_INVALID", a
    a = _answer(p3, conn, _msg("FLY_TO_THE_MOON", "B3"))
    assert _error(a) == "MESSAGE_TYPE_UNKNOWN", a
    a = _answer(p3, conn, _charge("B4", "12.505"))
    assert _error(a) == "PARAMETER_INVALID" and "amount" in a["error"]["developerMessage"], a
    a = _answer(p3, conn, _msg("EXECUTE_TRANSACTION", "B5", {"transactionParameters": {}}, "devices/other"))
    assert _error(a) == "RESOURCE_UNKNOWN", a
    run(p3.received(conn, b'{"tag": "B6", "type": '))  # bytes as a transport reads them
    assert conn.out[-1]["type"] == "ERROR_RESPONSE" and _error(conn.out[-1]) == "MESSAGE_INVALID"
    assert p3.app.term.journal.last() is None  # nothing of that reached the terminal


def test_login_is_the_adapters_and_a_refused_one_forgets_it():
    p3, conn = _p3()
    a = _answer(p3, conn, _charge("N1"))
    assert _error(a) == "SERVER_AUTHENTICATION_FAILED", a
    _login(p3, conn)
    assert p3.login == "understudy"
    other, _ = _p3()  # another app: its own adapter, not logged in
    assert other is not p3 and other.login is None
    bad = dict(LOGIN, merchantSecret="wrong")
    a = _answer(p3, conn, _msg("LOGIN_MERCHANT", "L2", bad, None))
    assert _error(a) == "SERVER_AUTHENTICATION_FAILED" and p3.login is None, a
    assert "firmware.p3_other_requests" not in sys.modules


def test_lookup_and_refund_through_the_other_requests():
    p3, conn = _p3()
    _login(p3, conn)
    _pay(p3, conn, "A1")
    a = _answer(p3, conn, _msg("GET_TRANSACTION", "G1", {"transactionIdentifier": "UST00001-000001"}))
    t = a["getTransactionResponse"]["transaction"]
    assert a["status"] == "OK" and t["status"] == "APPROVED" and t["merchantReceipt"]["lines"], a
    a = _answer(p3, conn, _msg("GET_TRANSACTION", "G2", {"transactionIdentifier": "UST00001-000009"}))
    assert _error(a) == "TRANSACTION_NOT_FOUND", a

    async def refund():
        body = {"transactionIdentifier": "UST00001-000001", "amount": "2.50"}
        assert await p3.request(conn, _msg("REFUND_TRANSACTION", "R1", body)) is None
        return await _final(conn, "R1")

    m = run(refund())
    t = m["refundTransactionResponse"]["transaction"]
    assert t["type"] == "REFUND" and t["status"] == "APPROVED" and t["amount"] == "2.50", m
    assert t["referencedTransactionIdentifier"] == "UST00001-000001", t
    a = _answer(p3, conn, _msg("REFUND_TRANSACTION", "R2", {"transactionIdentifier": "UST00001-000001",
                                                             "amount": "11.00"}))
    assert _error(a) == "PARAMETER_INVALID" and "what is left" in a["error"]["message"], a
    assert "firmware.p3_other_requests" not in sys.modules


def test_a_charge_with_no_room_for_its_task_is_busy_and_leaves_the_terminal_free():
    """The terminal was claimed, but the task that would drive the charge
    found no room: the POS hears ACCESSORY_BUSY, the claim is given back
    (nothing was journaled), and the next charge is served."""
    p3, conn = _p3()
    _login(p3, conn)
    real = p3.drive
    calls = [0]

    def drive(*args):
        calls[0] += 1
        if calls[0] == 1:
            raise MemoryError("memory allocation failed, allocating 400 bytes")
        return real(*args)

    p3.drive = drive
    assert _error(_answer(p3, conn, _charge("M1"))) == "ACCESSORY_BUSY"
    assert p3.app.term.current is None and p3.app.term.journal.next_no == 1
    m = _pay(p3, conn, "M2")
    assert m["executeTransactionResponse"]["transaction"]["status"] == "APPROVED", m
