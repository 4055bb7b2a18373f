"""The Concert adapter fed requests in-process, under MicroPython: no socket,
no serial line; Concert.request (V3) and concert_v2_requests.request (V2)
return the bytes a transport would write.

Run by host_tests/test_core_micropython.py through mp_runner.
"""
import asyncio

import inproc
from firmware import adapter, log
from firmware.concert import Concert
from wire import concert_tlv as tlv

log.frames = False

# Odoo's payment request, as the end-to-end tests send it
_HEAD = [("CZ", "0300"), ("CJ", "012345678901"), ("CA", "01")]


def _concert(**over):
    over.setdefault("delays", {"auth_ms": 0})
    return adapter(inproc.App(**over), Concert)


def _msg(cd="0", cb="1250", ce="978", *more):
    pairs = list(_HEAD) + [("CE", ce), ("CD", cd), ("CB", cb)] + list(more)
    return tlv.encode([p for p in pairs if p[1] is not None])


def _ask(c, msg):
    """(the answer decoded or None, Txn or None)."""
    ans, t = inproc.run(c.request(msg, "concert-ip"))
    return (None if ans is None else tlv.decode(ans)), t


def test_the_adapter_is_the_apps_one():
    c = _concert()
    assert adapter(c.app, Concert) is c
    assert inproc.App().adapters == {}  # a fresh app: none made yet


def test_payment_approved():
    c = _concert()
    app = c.app
    got, t = _ask(c, _msg("0", "1250", "978", ("CF", "order-1")))
    assert (got["AE"], got["AF"]) == ("10", "01"), got
    assert got["AC"] == t.auth and got["AA"] == t.pan and got["CC"] == "001", got
    assert got["CG"] == app.cfg["merchant_id"] and got["CF"] == "order-1", got
    # echoed: register, amount, action, currency
    echoed = (got["CJ"], got["CA"], got["CB"], got["CD"], got["CE"])
    assert echoed == ("012345678901", "01", "1250", "0", "978"), echoed
    assert t.result == "approved" and t.amount == 1250 and t.op == "pay"
    assert app.term.journal.last() is t and app.term.current is None


def test_payment_declined():
    c = _concert()
    got, t = _ask(c, _msg("0", "1201"))  # .01: the bank declines
    assert (got["AE"], got["AF"]) == ("01", "04"), got
    assert "AC" not in got and "AA" not in got and t.result == "declined"


def test_outcomes_become_their_af_codes():
    c = _concert(timeouts={"card_s": 1, "auth_s": 1})
    want = {1202: "06", 1203: "08", 1204: "04", 1205: "07", 1206: "13", 1208: "05"}
    for amount, af in want.items():
        got, t = _ask(c, _msg("0", str(amount)))
        assert (got["AE"], got["AF"]) == ("01", af) and t.amount == amount, (amount, got)


def test_busy_while_another_transaction_runs():
    c = _concert()
    app = c.app
    other = app.term.start("pay", 500, 978, "synqpay")
    got, t = _ask(c, _msg())
    assert (got["AE"], got["AF"]) == ("01", "00") and t is None, got
    assert app.term.current is other and app.term.journal.last() is None  # nothing began


def test_malformed_requests_answer_af_09():
    c = _concert()
    app = c.app
    for msg in (tlv.encode(_HEAD + [("CD", "0"), ("CB", "1250")]),  # no currency
                b"CZ0040300CJ0120123",  # cut short
                b"XX0040300",  # not CZ first
                _msg("0", "12a0"),  # an amount that is not digits
                _msg() + b"CH999" + b"x" * 2000):  # over concert.max_request
        got, t = _ask(c, msg)
        assert (got["AE"], got["AF"]) == ("01", "09") and t is None, (msg, got)
    assert app.term.journal.next_no == 1  # nothing began


def test_immediate_mode_answers_taken_and_pays_after():
    c = _concert()
    app = c.app

    async def go():
        ans, t = await c.request(_msg("0", "1250", "978", ("BA", "1")), "concert-ip")
        while app.term.current is not None:
            await asyncio.sleep_ms(5)
        return ans, t

    ans, t = inproc.run(go())
    got = tlv.decode(ans)
    assert got["AE"] == "11" and "AF" not in got and t is None, got
    assert app.term.journal.last().result == "approved"


def test_a_retried_payment_is_answered_from_the_journal():
    c = _concert()
    app = c.app
    first, t1 = _ask(c, _msg("0", "1250", "978", ("CF", "order-7")))
    again, t2 = _ask(c, _msg("0", "1250", "978", ("CF", "order-7")))
    assert t2 is t1 and again == first and app.term.journal.next_no == 2


def test_void_with_nothing_to_void_is_refused():
    c = _concert()
    got, t = _ask(c, _msg("2", "1250"))
    assert (got["AE"], got["AF"]) == ("01", "04") and t is None, got


def test_identification_through_the_rare_half():
    c = _concert()
    app = c.app
    got, t = _ask(c, tlv.encode([("CZ", "0300"), ("CD", "I")]))
    assert got["AE"] == "10" and got["AQ"] == app.cfg["terminal_id"] and t is None, got
    assert got["CG"] == app.cfg["merchant_id"], got


def test_status_repeats_the_last_answer():
    c = _concert()
    got, t = _ask(c, tlv.encode([("CZ", "0300"), ("CD", "T")]))
    assert (got["AE"], got["AF"]) == ("01", "00") and t is None, got  # nothing yet
    paid, t1 = _ask(c, _msg("0", "1250", "978", ("CF", "order-2")))
    got, t = _ask(c, tlv.encode([("CZ", "0300"), ("CD", "T")]))
    assert t is t1 and got["CD"] == "T" and got["AC"] == paid["AC"] and got["CF"] == "order-2", got


def test_settlement_sends_its_ticket():
    import binascii

    c = _concert()
    _ask(c, _msg())
    got, t = _ask(c, tlv.encode([("CZ", "0300"), ("CD", "B")]))
    assert got["AE"] == "10" and t is None, got
    assert [z["CK"] for z in got["ZT"]] == ["110"], got  # CK 110 by default: the merchant's copy
    text = binascii.a2b_base64(got["ZT"][0]["AK"]).decode()
    assert "12.50" in text, text


def test_tickets_on_request_and_none_when_the_paper_is_out():
    c = _concert(outcomes={"#2": "paper_out"})
    got, t = _ask(c, _msg("0", "1250", "978", ("CK", "120")))
    assert got["AE"] == "10" and [z["CK"] for z in got["ZT"]] == ["100", "110"], got
    got, t = _ask(c, _msg("0", "1250", "978", ("CK", "120")))
    assert t.reason == "paper_out" and got["AE"] == "10" and "ZT" not in got, got


def test_a_partial_approval_answers_the_amount_approved():
    c = _concert(outcomes={"#1": "partial:600"})
    got, t = _ask(c, _msg("0", "1250"))
    assert (got["AE"], got["AF"], got["CB"]) == ("10", "01", "600"), got
    assert t.reason == "partial"  # the transaction keeps its reason


def test_unknown_action_answers_af_12():
    c = _concert()
    got, t = _ask(c, tlv.encode([("CZ", "0300"), ("CD", "X")]))
    assert (got["AE"], got["AF"]) == ("01", "12") and t is None, got


def _v2(c, msg, immediate=False):
    from firmware import concert_v2_requests

    ans, t = inproc.run(concert_v2_requests.request(c, msg, "concert-serial", immediate))
    return ans, t


def _v2_msg(amount, type_="0"):
    # POS 2, AMOUNT 8, IND 1 (0: short answer), MODE 1 (1: card), TYPE 1, CURRENCY 3, PRIVATE 10
    return b"01%08d01%s978" % (amount, type_.encode()) + b" " * 10


def test_v2_payment_approved_declined_malformed():
    c = _concert()
    app = c.app
    ans, t = _v2(c, _v2_msg(1250))
    assert ans == b"01000001250" + b"1978" + b" " * 10 and t.result == "approved", ans
    ans, t = _v2(c, _v2_msg(1201))
    assert ans == b"01700001201" + b"1978" + b" " * 10 and t.result == "declined", ans
    ans, t = _v2(c, _v2_msg(1250) + b"9")  # 27 characters: neither E nor E+
    assert ans == b"01700001250" + b"1978" + b" " * 10 and t is None, ans
    app.term.start("pay", 500, 978, "synqpay")
    ans, t = _v2(c, _v2_msg(1250))  # busy
    assert ans[:3] == b"017" and t is None, ans


def test_a_lost_answer_is_none_with_its_transaction():
    c = _concert()
    got, t = _ask(c, _msg("0", "1207"))  # .07: the answer is lost on purpose
    assert got is None and t is not None and t.withhold, (got, t)
    assert c.app.term.journal.last() is t
