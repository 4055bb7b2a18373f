"""The terminal core driven directly, under MicroPython (it needs its asyncio).

Run by host_tests/test_core_micropython.py through mp_runner.
"""
import asyncio

from firmware import config, journal_compact, log
from firmware.terminal import Busy, Terminal

log.frames = False


def _term(**over):
    cfg, problems = config.merge(over)
    assert not problems, problems
    return Terminal(cfg)


def _run(coro):
    return asyncio.run(coro)


def test_approved_payment_walks_the_states():
    term = _term()
    seen = []
    t = term.start("pay", 1250, 978, "test")
    t.progress = lambda t: seen.append(t.state)
    _run(term.run(t))
    assert t.result == "approved" and t.auth and t.pan == "************0014"
    assert seen == ["wait_card", "card_read", "pin", "auth", "done"], seen
    assert term.current is None and term.journal.last() is t and t.no == 1


def test_busy_while_running():
    term = _term(delays={"auth_ms": 50})

    async def go():
        t = term.start("pay", 1250, 978, "a")
        task = asyncio.create_task(term.run(t))
        await asyncio.sleep_ms(10)
        try:
            term.start("pay", 100, 978, "b")
            raise AssertionError("not busy")
        except Busy:
            pass
        await task
        return t

    assert _run(go()).result == "approved"


def test_outcomes_by_cents():
    term = _term(timeouts={"card_s": 1, "auth_s": 1}, delays={"slow_auth_ms": 1500})
    want = {1201: ("declined", "decline"), 1202: ("cancelled", "cancel"),
            1203: ("timeout", "no_card"), 1204: ("declined", "pin"),
            1205: ("error", "host"), 1206: ("error", "currency"),
            1208: ("declined", "forbidden"), 1209: ("error", "host")}
    for amount, (result, reason) in list(want.items()) + [(1250, ("approved", None))]:
        t = term.start("pay", amount, 978, "test")
        fields = sorted(t.__dict__)
        _run(term.run(t))
        assert (t.result, t.reason) == (result, reason), (amount, t.result, t.reason)
        term.delivered(t)
        # no field first set once claimed: that would grow its dict mid-payment
        assert sorted(t.__dict__) == fields, (amount, set(t.__dict__) - set(fields))
    t = _run(term.run(term.start("pay", 1207, 978, "test")))
    assert t.result == "approved" and t.withhold


def test_abort_while_waiting_for_the_card():
    term = _term(delays={"card_ms": 5000})

    async def go():
        t = term.start("pay", 1250, 978, "test")
        task = asyncio.create_task(term.run(t))
        await asyncio.sleep_ms(20)
        assert term.act("abort")
        await task
        return t

    t = _run(go())
    assert (t.result, t.reason) == ("cancelled", "abort")


def test_no_abort_during_authorisation():
    term = _term(delays={"auth_ms": 100})

    async def go():
        t = term.start("pay", 1250, 978, "test")
        task = asyncio.create_task(term.run(t))
        await asyncio.sleep_ms(30)
        assert t.state == "auth" and not term.act("abort")
        await task
        return t

    assert _run(go()).result == "approved"


def test_hold_after_card_then_continue_with_a_new_amount():
    term = _term()

    async def go():
        t = term.start("pay", 1000, 376, "test")
        t.hold = ("card",)
        task = asyncio.create_task(term.run(t))
        await asyncio.sleep_ms(20)
        assert t.state == "wait_continue" and t.pan
        assert term.act("continue", {"amount": 900})
        await task
        return t

    t = _run(go())
    assert t.result == "approved" and t.amount == 900


def test_hold_after_card_times_out():
    term = _term(timeouts={"continue_s": 1})
    t = term.start("pay", 1000, 376, "test")
    t.hold = ("card",)
    _run(term.run(t))
    assert (t.result, t.reason) == ("timeout", "no_continue")


def test_signature_signed_refused_and_not_asked():
    term = _term()

    async def go(answer):
        t = term.start("pay", 1210, 978, "test")  # .10: signature
        t.hold = ("signature",)
        task = asyncio.create_task(term.run(t))
        await asyncio.sleep_ms(20)
        assert t.state == "signature"
        assert term.act(answer)
        await task
        return t

    assert _run(go("signed")).result == "approved"
    t = _run(go("unsigned"))
    assert (t.result, t.reason, t.auth) == ("declined", "signature", None)
    t = _run(term.run(term.start("pay", 1210, 978, "test")))  # nobody asks: paper receipt
    assert t.result == "approved"


def test_abort_while_the_signature_is_awaited_drops_the_authorisation():
    term = _term()

    async def go():
        t = term.start("pay", 1210, 978, "test")  # .10: signature
        t.hold = ("signature",)
        task = asyncio.create_task(term.run(t))
        await asyncio.sleep_ms(20)
        assert t.state == "signature" and t.auth
        assert term.act("abort")
        await task
        return t

    t = _run(go())
    assert (t.result, t.reason, t.auth) == ("cancelled", "abort", None)


def test_refund_of_a_known_transaction_needs_no_card():
    term = _term()
    p = _run(term.run(term.start("pay", 2000, 978, "test")))
    seen = []
    t = term.start("refund", 500, 978, "test", orig=p.no)
    t.progress = lambda t: seen.append(t.state)
    _run(term.run(t))
    assert t.result == "approved" and t.pan is None and seen == ["auth", "done"]
    seen = []
    t = term.start("refund", 500, 978, "test")  # no original: the card is presented
    t.progress = lambda t: seen.append(t.state)
    _run(term.run(t))
    assert t.result == "approved" and t.pan and seen[0] == "wait_card"


def test_act_refused_when_nothing_waits():
    term = _term()
    assert not term.act("continue")
    assert not term.act("abort")


def test_void_marks_the_original_and_settlement_totals():
    term = _term()
    p = _run(term.run(term.start("pay", 2000, 978, "test")))
    _run(term.run(term.start("refund", 500, 978, "test")))
    target = term.find_void_target(2000, 978)
    assert target is p
    v = _run(term.run(term.start("void", 2000, 978, "test", orig=p.no)))
    assert v.result == "approved" and p.voided and v.pan is None
    assert term.find_void_target(2000, 978) is None
    s = term.settle()
    assert s["batch"] == 1 and s["totals"][978] == {"pay": [1, 2000], "refund": [1, 500],
                                                    "void": [1, 2000], "net": -500}
    assert term.journal.batch == 2


def _failing_records(j, exc, times):
    """j's outcome ("D") records raise exc the first `times` times; [calls]."""
    real = j._append
    calls = [0]

    def append(fields, sync=True, rec=None):
        if fields and fields[0] == "D":
            calls[0] += 1
            if calls[0] <= times:
                raise exc
        return real(fields, sync, rec)

    j._append = append
    return calls


def test_an_outcome_with_no_room_for_its_record_is_recorded_a_moment_later():
    """An approved payment whose record finds no room is recorded after a
    collection and a pause (nothing was written), not turned into an
    error the register would hear for a payment the card holder made."""
    term = _term()
    p = _run(term.run(term.start("pay", 2000, 978, "test")))
    calls = _failing_records(term.journal, MemoryError("allocating 166 bytes"), 1)
    v = _run(term.run(term.start("void", 2000, 978, "test", orig=p.no)))
    assert calls[0] == 2 and v.result == "approved" and p.voided, (calls, v.result, v.reason)
    assert term.journal.voided == [p.no] and term.settle()["totals"][978]["void"] == [1, 2000]


def test_a_void_that_cannot_be_recorded_leaves_the_original_standing():
    """The void's place among the voided is taken before its record is
    written (a MemoryError must come before the write); if the record
    cannot be written at all, the place is given back."""
    term = _term()
    p = _run(term.run(term.start("pay", 2000, 978, "test")))
    _failing_records(term.journal, OSError(28), 1)
    v = _run(term.run(term.start("void", 2000, 978, "test", orig=p.no)))
    assert v.result == "error" and v.reason == "journal" and not p.voided
    assert term.journal.voided == [] and term.find_void_target(2000, 978) is p


def test_lookup_by_reference_and_undelivered():
    term = _term()
    t = _run(term.run(term.start("pay", 1250, 978, "p3", ref="order-1")))
    assert term.journal.lookup("order-1") is t and term.journal.lookup("order-1", "concert") is None
    assert term.journal.undelivered("p3") == [t]
    term.delivered(t)
    assert term.journal.undelivered("p3") == []


def test_outcome_row_by_transaction_number_beats_the_amount():
    # "#2": the second transaction is declined, whatever its amount (even .50)
    term = _term(outcomes={"#2": "decline", "#3": "lost"})
    first = _run(term.run(term.start("pay", 1250, 978, "test")))
    second = _run(term.run(term.start("pay", 1250, 978, "test")))
    third = _run(term.run(term.start("pay", 1201, 978, "test")))
    fourth = _run(term.run(term.start("pay", 1250, 978, "test")))
    assert (first.no, first.result) == (1, "approved")
    assert (second.no, second.outcome, second.result) == (2, "decline", "declined")
    assert (third.no, third.outcome, third.result, third.withhold) == (3, "lost", "approved", True)
    assert (fourth.no, fourth.result) == (4, "approved")


def test_outcome_rows_by_number_are_checked():
    cfg, problems = config.merge({"outcomes": {"#4": "telepathy", "#x": "decline", "7": "decline"}})
    assert cfg["outcomes"]["#4"] == "approve" and "#x" not in cfg["outcomes"], cfg["outcomes"]
    assert len(problems) == 3, problems  # a wrong outcome is replaced by approve, as in any row


def _path(name="journal.bin"):
    import os

    d = os.getenv("TMPDIR") or "/tmp"
    for f in (name, name + ".tmp"):
        try:
            os.remove(d + "/" + f)
        except OSError:
            pass
    return d + "/" + name


def _cands(j, ref):
    from firmware import journal_replay

    return list(journal_replay.candidates(j, ref))


def test_reference_index_is_rarely_wrong_for_near_sequential_references():
    """1,200 references a register would number one by one (the most a full
    journal holds): fewer than 3 in 100 fresh ones name a transaction to
    read.  (With MicroPython's 16-bit str hash it was about 1 in 5.)"""
    from firmware.journal import Journal

    j = Journal(_path(), flush=False)
    for i in range(1200):
        j.index(i + 1, "sale-%d" % i, 4)
    assert all(i + 1 in list(_cands(j, "sale-%d" % i)) for i in range(1200))
    wrong = sum(1 for i in range(1200, 3200) if list(_cands(j, "sale-%d" % i)))
    assert wrong < 60, wrong
    j.close()
def test_the_reference_index_grows_without_the_readers_code():
    """The index grows as references come (the first one, then past its
    planned size) without importing the journal's reader: that import,
    mid-traffic, needs blocks a busy heap does not have, and it failed
    the payment whose reference came at that moment."""
    from firmware import journal

    def no_room():
        raise MemoryError("memory allocation failed, allocating 736 bytes")

    j = journal.Journal(_path(), flush=False)
    real = journal._replay
    journal._replay = no_room  # what importing the reader does in a busy heap
    try:
        for i in range(3 * j.room):  # past the planned size, twice
            j.index(i + 1, "sale-%d" % i, 4)
    finally:
        journal._replay = real
    assert j.idx is not None and len(j.idx) >= 6 * j.room and not j.lost
    j.close()


def test_a_full_batch_is_settled_before_the_next_transaction():
    term = _term(journal={"max_batch": 3})
    for _ in range(4):
        _run(term.run(term.start("pay", 1000, 978, "test")))
    j = term.journal
    assert (j.batch, j.in_batch) == (2, 1), (j.batch, j.in_batch)
    assert j.totals[978]["pay"] == [1, 1000], j.totals


def test_compaction_forgets_the_references_it_rotates_out():
    from firmware.journal import Journal

    j = Journal(_path(), keep=0, flush=False)
    for ref in ("old-1", "old-2"):
        t = _term().start("pay", 1000, 978, "test", ref=ref)
        j.begin(t)
        t.result = "approved"
        j.decide(t)
    assert list(_cands(j, "old-1")) == [1]
    j.settle(0)  # keep 0: the settled batch leaves the file
    j._cold(journal_compact.run)  # the whole compaction at once (the core runs it in steps)
    assert not list(_cands(j, "old-1")) and not list(_cands(j, "old-2"))
    t = _term().start("pay", 1000, 978, "test", ref="new-1")
    j.begin(t)
    assert list(_cands(j, "new-1")) == [3]
    j.close()


def test_a_retry_is_found_by_its_reference_far_outside_the_ram_window():
    """Only recent (4) transactions stay in RAM: the index finds the 3rd of
    60 in the file, and after a restart, reading one span of the file."""
    from firmware.journal import Journal

    path = _path()
    j = Journal(path, recent=4, flush=False)
    for i in range(60):
        t = _term().start("pay", 1000 + i, 978, "test", ref="sale-%d" % i)
        j.begin(t)
        t.result = "approved" if i % 2 == 0 else "declined"
        j.decide(t)
        j.delivered(t)
    for jj in (j, Journal(path, recent=4, flush=False)):
        t = jj.lookup("sale-2", "test")
        assert (t.no, t.amount, t.result, t.delivered) == (3, 1002, "approved", True), t
        assert jj.lookup("sale-3", "test", lambda t: t.result == "approved") is None
        assert jj.lookup("sale-2", "other") is None and jj.lookup("sale-99") is None
        assert jj.get(40).ref == "sale-39"
        jj.close()


