"""What a short heap does to the firmware's own code, under MicroPython:
micropython.heap_lock() makes every allocation raise MemoryError, exactly
where it would on a board whose heap ran out.

Run by host_tests/test_core_micropython.py through mp_runner.
"""
import asyncio
import micropython

from firmware import app, config, log
from firmware.terminal import Busy, Terminal
from inproc import Arrived

log.frames = True


def _locked(fn):
    """fn() with every allocation refused; what it raised, or None.  (fn
    takes no arguments: a call with *args allocates in the caller.)"""
    micropython.heap_lock()
    try:
        fn()
    except Exception as e:  # what was raised is the answer
        micropython.heap_unlock()
        return e
    micropython.heap_unlock()
    return None


def _raises(exc, fn):
    """True if fn() raises exc; AssertionError (naming what happened) if it returns."""
    try:
        fn()
    except exc:
        return True
    raise AssertionError("%r did not raise %s" % (fn, exc.__name__))


def test_logging_never_raises_when_the_heap_is_gone():
    seen = []
    log.watch(lambda src, what, line: seen.append(line))
    try:
        # (the details of log.event(source, what, *details) are a tuple the caller
        # makes: with the heap locked that call fails before log runs)
        assert _locked(lambda: log.event("concert-ip", "closed")) is None
        assert _locked(lambda: log.frame("p3-tcp", "tx", "127.0.0.1", b"{\"type\":\"x\"}")) is None
        log.event("concert-ip", "closed", "127.0.0.1")  # and it still logs afterwards
    finally:
        log.observers.clear()
    assert seen and seen[-1] == "concert-ip closed 127.0.0.1", seen


def test_the_orphan_handler_never_raises_when_the_heap_is_gone():
    """asyncio calls it for a task that failed unawaited; a MemoryError out
    of it ends asyncio.run and the terminal (seen: exit status 1 at 112K on
    a modelled ESP32, Concert and P3 and the web page in use)."""
    ctx = {"exception": OSError(104)}
    assert _locked(lambda: app._orphan(None, ctx)) is None


def test_a_transaction_is_refused_as_busy_before_it_starts_when_the_heap_is_short():
    cfg, problems = config.merge({"memory": {"headroom": 1 << 20}})  # more than this heap has
    assert not problems, problems
    term = Terminal(cfg)
    assert _raises(Busy, lambda: term.start("pay", 1250, 978, "test"))
    assert term.current is None and term.journal.next_no == 1  # nothing begun, nothing recorded


def test_no_block_for_the_transaction_is_busy_too():
    """room() counts free bytes; a fragmented heap can still have no block
    for the transaction itself: that is busy as well, not a MemoryError
    that closes the register's connection unanswered."""
    from firmware import terminal

    def no_block(*args):
        raise MemoryError("memory allocation failed, allocating 464 bytes")

    cfg, problems = config.merge({"memory": {"headroom": 0}})
    assert not problems, problems
    term = Terminal(cfg)
    real, terminal.Txn = terminal.Txn, no_block
    try:
        assert _raises(Busy, lambda: term.start("pay", 1250, 978, "test"))
    finally:
        terminal.Txn = real
    assert term.current is None and term.journal.next_no == 1
    assert term.start("pay", 1250, 978, "test") is term.current  # and the next one starts


def _fails_for(real, times, why):
    """(real, but its first `times` calls raise MemoryError(why); [calls so far])."""
    calls = [0]

    def f(*args):
        calls[0] += 1
        if calls[0] <= times:
            raise MemoryError(why)
        return real(*args)

    return f, calls


def _fails_once(real, why):
    """(real, but its first call raises MemoryError(why); [calls so far])."""
    return _fails_for(real, 1, why)


def _fails_locked(real, times):
    """(real, but its first `times` calls raise MemoryError and leave the
    heap locked until the next call: the retry must make nothing, not even
    a coroutine, before it calls again; [calls so far, heap locked, ...]).
    Run it inside _unlocked()."""
    calls = [0, False, real, times]

    # (not *args: its tuple is a block; and one closed-over name, as a
    # closure with more than five names and arguments allocates to be called)
    def f(a, b=calls, c=calls):
        if calls[1]:
            micropython.heap_unlock()
            calls[1] = False
        calls[0] += 1
        if calls[0] <= calls[3]:
            micropython.heap_lock()
            calls[1] = True
            raise MemoryError
        real = calls[2]
        return real(a) if b is calls else real(a, b) if c is calls else real(a, b, c)

    return f, calls


def _unlocked(fn, calls):
    """fn(), and the heap unlocked afterwards if a _fails_locked left it so."""
    try:
        return fn()
    finally:
        if calls[1]:
            micropython.heap_unlock()
            calls[1] = False


class _App:
    def __init__(self, cfg):
        self.cfg = cfg
        self.seen = None
        self.applied = 0
        self.listeners = {}
        self.web_seen = None

    async def apply(self, cfg):
        self.applied += 1


def test_the_config_watcher_outlives_a_memory_error():
    import os

    path = (os.getenv("TMPDIR") or "/tmp") + "/short_heap_config.json"
    with open(path, "w") as f:
        f.write('{"delays": {"card_ms": 1}}')
    cfg, _ = config.merge({"config_watch_s": 1})
    a = _App(cfg)
    real = app.signature
    failing, calls = _fails_once(real, "memory allocation failed")
    app.signature = failing
    try:
        async def go():
            task = asyncio.create_task(app._tend(a, path))
            await asyncio.sleep_ms(2300)  # two ticks: the first fails, the second reads
            done = task.done()
            task.cancel()
            return done

        assert asyncio.run(go()) is False  # still watching
    finally:
        app.signature = real
    assert calls[0] >= 2 and a.seen == real(path), (calls, a.seen)


def test_a_synqpay_link_dropped_from_its_own_task_ends_cleanly():
    from firmware import synqpay

    cfg, _ = config.merge({})
    a = _App(cfg)

    async def link():
        me = synqpay.Session(a, "synqpay", None, "127.0.0.1")
        try:
            me.disconnect("no memory for the answer")  # was RuntimeError: can't cancel self
        except asyncio.CancelledError:
            return "ended"
        return "went on"

    assert asyncio.run(link()) == "ended"


def test_a_synqpay_frame_cut_for_good_ends_its_link_even_with_no_room_to_say_so():
    """A frame half written, its link must end (its reader is cancelled),
    also when the line saying so finds no room: the next frame would follow
    the half one."""
    from firmware import synqpay

    cfg, _ = config.merge({})
    a = _App(cfg)

    async def reading():
        await asyncio.sleep_ms(10000)

    async def go():
        reader = asyncio.create_task(reading())
        me = synqpay.Session(a, "synqpay", _HeadOnly(), "127.0.0.1")
        me.task = reader
        try:
            await me.send((b"\x02head", b"body\x03"), b"")
        except MemoryError:
            pass
        await asyncio.sleep_ms(0)
        return reader.done()

    assert asyncio.run(go()) is True


class _Board:
    DEFAULT_HOST = "127.0.0.1"


def test_a_connection_waits_in_the_backlog_while_the_heap_is_short():
    """A register that connects while the heap is short is left in the
    listen backlog until the transactions being served give their heap
    back, then served, rather than accepted and closed unanswered."""
    import os
    import socket

    from firmware import tcp

    cfg, _ = config.merge({"allowed_ips": []})
    a = _App(cfg)
    a.board = _Board()
    short = [3]  # room() says no three times, then the heap is back

    def room(need):
        short[0] -= 1
        return short[0] < 0

    async def serve(app_, name, st, ip):
        st.write(b"answer")
        await st.drain()

    async def go():
        lst = tcp.TCPListener(a, "test-tcp", None)
        lst.handler = serve
        port = int(os.getenv("UNDERSTUDY_TEST_PORTS").split()[0])  # free, from the test's worker
        await lst.start({"host": "127.0.0.1", "port": port})
        c = socket.socket()
        c.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        c.setblocking(False)
        got = b""
        for _ in range(100):
            await asyncio.sleep_ms(20)
            try:
                got += c.recv(64) or b""
            except OSError:
                continue
            if got:
                break
        c.close()
        await lst.stop()
        return got

    real, tcp.room = tcp.room, room
    try:
        got = asyncio.run(go())
    finally:
        tcp.room = real
    assert got == b"answer" and short[0] < 0, (got, short)


async def _ask(lst, k, request):
    """Start listener lst on the test's k-th free port, connect, send
    request, and read until the listener closes (3 s at most): the bytes."""
    import os
    import socket

    port = int(os.getenv("UNDERSTUDY_TEST_PORTS").split()[k])
    await lst.start({"host": "127.0.0.1", "port": port})
    c = socket.socket()
    c.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
    c.send(request)
    c.setblocking(False)
    got = b""
    for _ in range(150):
        await asyncio.sleep_ms(20)
        try:
            data = c.recv(256)
        except OSError:
            continue
        if not data:
            break
        got += data
    c.close()
    await lst.stop()
    return got


def test_an_http_client_refused_for_want_of_heap_hears_503():
    """After the wait in the backlog, still no heap: an HTTP client (the
    page, the API, a P3 WebSocket handshake) hears 503 with Retry-After,
    not a silent close; the bytes are a constant, so saying them needs none."""

    from firmware import tcp

    cfg, _ = config.merge({"allowed_ips": []})
    a = _App(cfg)
    a.board = _Board()

    async def serve(app_, name, st, ip):
        raise AssertionError("served")

    lst = tcp.TCPListener(a, "web", None)
    lst.kind = "http"
    lst.handler = serve
    real, tcp.room = tcp.room, lambda need: False
    try:
        got = asyncio.run(_ask(lst, 1, b"GET /api/state HTTP/1.1\r\nHost: x\r\n\r\n"))
    finally:
        tcp.room = real
    assert got.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 1\r\n" in got, got


def test_an_http_client_whose_handler_finds_no_room_hears_503():
    """Taken on, but no room for the coroutine that would serve it: an HTTP
    client hears 503 with Retry-After, not a close on its unread request."""

    from firmware import tcp

    cfg, _ = config.merge({"allowed_ips": []})
    a = _App(cfg)
    a.board = _Board()

    def serve(app_, name, st, ip):  # (calling it is what allocates the coroutine)
        raise MemoryError("memory allocation failed, allocating 416 bytes")

    lst = tcp.TCPListener(a, "web", None)
    lst.kind = "http"
    lst.handler = serve
    got = asyncio.run(_ask(lst, 0, b"GET /api/state HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert got.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 1\r\n" in got, got


def test_a_concert_register_whose_handler_finds_no_room_hears_busy():
    """The same for a Concert register: it hears Concert's busy (AE=01
    AF=00, no field echoed: its request was not read), not a closed
    connection that leaves it guessing."""

    from firmware import tcp
    from firmware.app import App
    from wire import concert_tlv as tlv

    a = _concert_app()
    a.board = _Board()
    a.busy_of = lambda name: App.busy_of(a, name)

    def serve(app_, name, st, ip):  # (calling it is what allocates the coroutine)
        raise MemoryError("memory allocation failed, allocating 296 bytes")

    a.serve_of = lambda name: serve

    got = tlv.decode(asyncio.run(_ask(tcp.TCPListener(a, "concert-ip", None), 1, _PAY)))
    assert (got["AE"], got["AF"]) == ("01", "00") and "CJ" not in got, got


def _concert_app():
    cfg, _ = config.merge({"delays": {"auth_ms": 0}})
    a = _App(cfg)
    a.term = Terminal(cfg)
    a.adapters = {}  # firmware.adapter(): the Concert adapter, made at its first use
    return a


_PAY = b"CZ0040300CJ012012345678901CA00201CE003978CD0010CB0041250"


def test_concert_out_of_heap_before_anything_began_answers_busy():
    from firmware import concert
    from wire import concert_tlv as tlv

    a = _concert_app()
    real = concert.tlv.decode
    concert.tlv.decode = _fails_once(real, "memory allocation failed, allocating 96 bytes")[0]
    try:
        ans, t = asyncio.run(concert.Concert(a).request(_PAY, "concert-ip"))
    finally:
        concert.tlv.decode = real
    got = tlv.decode(ans)
    assert (got["AE"], got["AF"]) == ("01", "00") and t is None, got
    assert a.term.current is None and a.term.journal.next_no == 1  # nothing began


def test_concert_out_of_heap_after_the_payment_never_says_busy():
    """The payment ran: an answer that finds no room must not become a busy
    (the register would drop a charged sale); the error goes up, the
    connection closes, and CD=T tells the register the truth."""
    from firmware import concert

    a = _concert_app()
    real = concert.Concert.answer

    def answer(self, req, t):
        raise MemoryError("memory allocation failed, allocating 200 bytes")

    concert.Concert.answer = answer
    try:
        assert _raises(MemoryError, lambda: asyncio.run(concert.Concert(a).request(_PAY, "concert-ip")))
    finally:
        concert.Concert.answer = real
    assert a.term.journal.next_no == 2 and a.term.journal.last().result == "approved"


def test_a_memory_error_while_choosing_the_outcome_leaves_the_terminal_free():
    cfg, _ = config.merge({})
    term = Terminal(cfg)

    class Rules:
        def get(self, key):
            raise MemoryError("memory allocation failed, allocating 16 bytes")

    real, cfg["outcomes"] = cfg["outcomes"], Rules()
    try:
        assert _raises(MemoryError, lambda: term.start("pay", 1250, 978, "test"))
    finally:
        cfg["outcomes"] = real
    assert term.current is None  # free: the next one starts
    assert term.start("pay", 1250, 978, "test") is term.current


def _begin_with(name, fake, j=None, request_ms=10000):
    """A payment run to its end with wire.records' function name faked for
    the journal (j, or one in RAM); (the transaction, the terminal)."""
    from wire import records

    cfg, _ = config.merge({"delays": {"auth_ms": 0}, "timeouts": {"request_ms": request_ms}})
    term = Terminal(cfg, j)
    real = getattr(records, name)
    setattr(records, name, fake(real))
    try:
        t = term.start("pay", 1250, 978, "test", "sale-1")
        asyncio.run(term.run(t))
    finally:
        setattr(records, name, real)
    return t, term


def test_a_payment_whose_journal_record_finds_no_room_begins_a_moment_later():
    """The record of a payment's start (166 bytes at 56K frozen) found no
    block: the register heard "error internal" for a payment never begun.
    Nothing has changed when the record cannot be made, and the terminal
    is claimed for it: it is made again after a pause, for up to
    timeouts.request_ms (then the error, nothing begun)."""
    calls = []

    def fake(real):
        f, n = _fails_for(real, 5, "memory allocation failed, allocating 166 bytes")
        calls[:] = [n]
        return f

    for request_ms, begun in ((10000, True), (100, False)):
        t, term = _begin_with("pack", fake, request_ms=request_ms)
        if begun:  # (RAM: its B record only)
            assert (t.result, t.no, calls[0][0]) == ("approved", 1, 6), (t.result, t.no, calls)
            assert term.journal.next_no == 2 and term.journal.last() is t
        else:
            assert (t.result, t.reason, t.no) == ("error", "internal", 0), (t.result, t.no, calls)
            assert term.journal.next_no == 1 and term.journal.last() is None and term.current is None


def test_a_payment_whose_outcome_record_finds_no_room_is_recorded_a_moment_later():
    """The outcome's record (160 bytes, "core error" at 48K frozen) found
    no block for longer than two short pauses: the payment ran, the
    terminal is still claimed for it, so the record is tried again up to
    timeouts.request_ms, as its start is (then the error: an outcome not
    on file must not stand)."""
    for request_ms, recorded in ((10000, True), (100, False)):
        cfg, _ = config.merge({"delays": {"auth_ms": 0}, "timeouts": {"request_ms": request_ms}})
        term = Terminal(cfg)
        j = term.journal
        j.decide, calls = _fails_for(j.decide, 5, "memory allocation failed, allocating 160 bytes")
        t = term.start("pay", 1250, 978, "test", "sale-1")
        asyncio.run(term.run(t))
        if recorded:
            assert (t.result, t.no, calls[0]) == ("approved", 1, 6), (t.result, calls)
        else:
            assert (t.result, t.reason, t.auth) == ("error", "internal", None), (t.result, calls)
        assert term.current is None


def test_a_payment_whose_reference_finds_no_room_in_the_index_begins_once():
    """The begun record is on flash when the reference's hash finds no
    room: the payment goes on (begun once, not again under a new number)
    and lookups read the file for it."""
    import os

    from firmware.journal import Journal

    path = (os.getenv("TMPDIR") or "/tmp") + "/short-heap-journal.bin"
    for f in (path, path + ".tmp"):
        try:
            os.remove(f)
        except OSError:
            pass
    j = Journal(path, recent=1, flush=False)
    t, term = _begin_with("ref_hash", lambda real: _fails_once(real, "memory allocation failed")[0], j)
    assert (t.result, t.no, j.next_no, j.lost) == ("approved", 1, 2, True), (t.result, t.no, j.next_no)
    term.start("pay", 100, 978, "test", "sale-2")
    asyncio.run(term.run(term.current))
    assert j.lookup("sale-1").no == 1 and j.lookup("sale-2").no == 2  # the first from the file
    j.close()


def test_concert_answer_after_the_payment_waits_for_room():
    """The payment ran and the heap has no block for its answer just then
    (other clients mid-answer): the answer is built a moment later, and the
    register hears its approval instead of a closed connection."""
    from firmware import concert
    from wire import concert_tlv as tlv

    a = _concert_app()
    real = concert.Concert.answer
    concert.Concert.answer, calls = _fails_once(real, "memory allocation failed, allocating 512 bytes")
    try:
        ans, t = asyncio.run(concert.Concert(a).request(_PAY, "concert-ip"))
    finally:
        concert.Concert.answer = real
    assert tlv.decode(ans)["AE"] == "10" and t.result == "approved" and calls[0] == 2


def test_concert_answer_after_the_payment_waits_for_room_up_to_the_request_time_out():
    """Past the two short pauses too (at 56K frozen a peak outlasts them):
    the answer of a payment run is owed, and is tried again up to
    timeouts.request_ms before the connection closes unanswered."""
    from firmware import concert
    from wire import concert_tlv as tlv

    for request_ms, answered in ((10000, True), (100, False)):
        a = _concert_app()
        a.cfg["timeouts"]["request_ms"] = request_ms
        real = concert.Concert.answer
        concert.Concert.answer, calls = _fails_for(real, 5, "memory allocation failed, allocating 512 bytes")
        try:
            c = concert.Concert(a)
            if answered:
                ans, _ = asyncio.run(c.request(_PAY, "concert-ip"))
                assert tlv.decode(ans)["AE"] == "10" and calls[0] == 6, calls
            else:
                assert _raises(MemoryError, lambda: asyncio.run(c.request(_PAY, "concert-ip")))  # noqa: B023
        finally:
            concert.Concert.answer = real
        assert a.term.journal.last().result == "approved"


def test_concert_answer_after_the_payment_waits_for_room_with_no_block_to_spare():
    """Right after the answer found no block, nothing else may be made
    either (when_room's coroutine was: at 56K frozen that closed the
    connection unanswered): the retry waits in request()'s own frame."""
    from firmware import concert
    from wire import concert_tlv as tlv

    a = _concert_app()
    real = concert.Concert.answer
    concert.Concert.answer, calls = _fails_locked(real, 3)
    try:
        ans, t = _unlocked(lambda: asyncio.run(concert.Concert(a).request(_PAY, "concert-ip")), calls)
    finally:
        concert.Concert.answer = real
    assert tlv.decode(ans)["AE"] == "10" and t.result == "approved" and calls[0] == 4, calls


class _Stream:
    def __init__(self):
        self.out = b""

    def write(self, data):
        self.out += bytes(data)

    async def drain(self):
        pass


def test_a_synqpay_request_without_room_is_answered_a_moment_later():
    """A request the heap had no room for before it changed anything is
    handled again after a pause, not a link dropped under the POS."""
    from firmware import adapter, synqpay
    from wire import synqpay_link as L

    a = _concert_app()
    a.adapters = {}
    sq = adapter(a, synqpay.Synqpay)
    s = _Stream()
    sq.api_key = b"\x01\x02\x03\x04"
    real = sq.status
    sq.status, calls = _fails_once(real, "memory allocation failed, allocating 328 bytes")

    async def link():
        me = synqpay.Session(a, "synqpay", s, "127.0.0.1")
        me.auth = True
        await sq.request(me, (L.REQUEST, sq.api_key, b'{"jsonrpc":"2.0","id":7,"method":"getStatus"}'))

    asyncio.run(link())
    assert b'"id":7,"result":{"deviceStatus":"IDLE"' in s.out and calls[0] == 2, s.out


def test_a_concert_v2_answer_after_the_payment_waits_for_room_up_to_the_request_time_out():
    """The same for V2 (E, E+): approved or declined, the answer of a
    payment run is owed."""
    from firmware import concert, concert_v2_requests
    from wire import concert_v2 as v2

    pay = b"01%08d01%s978" % (1250, b"0") + b" " * 10
    for request_ms, answered in ((10000, True), (100, False)):
        a = _concert_app()
        a.cfg["timeouts"]["request_ms"] = request_ms
        real = v2.encode
        v2.encode, calls = _fails_for(real, 5, "memory allocation failed, allocating 48 bytes")
        try:
            co = concert_v2_requests.request(concert.Concert(a), pay, "concert-serial", False)
            if answered:
                ans, _ = asyncio.run(co)
                assert ans[:3] == b"010" and calls[0] == 6, (ans, calls)
            else:
                assert _raises(MemoryError, lambda: asyncio.run(co))  # noqa: B023
        finally:
            v2.encode = real
        assert a.term.journal.last().result == "approved"


async def _sale(sq, s, t):
    """t run by Synqpay sq, its answer for a link on stream s."""
    from firmware import synqpay

    sq.link = synqpay.Session(sq.app, "synqpay", s, "127.0.0.1")
    sq.link.auth = True
    sq.link.task = None  # (no reader task to end)
    await sq._run(t)


def test_a_synqpay_sale_answer_waits_for_room_up_to_the_request_time_out():
    """An approved sale's answer with no room past the two short pauses is
    tried again up to timeouts.request_ms before the link is dropped (the
    answer then waits for the POS's reconnection)."""
    from firmware import adapter, synqpay

    for request_ms, delivered in ((10000, True), (100, False)):
        a = _concert_app()
        a.cfg["timeouts"]["request_ms"] = request_ms
        a.adapters = {}
        sq = adapter(a, synqpay.Synqpay)
        s = _Stream()
        t = a.term.start("pay", 1250, 376, "synqpay", data={"id": 8})
        sq._built, calls = _fails_for(sq._built, 5, "memory allocation failed, allocating 300 bytes")
        asyncio.run(_sale(sq, s, t))
        assert t.result == "approved" and t.delivered is delivered, (request_ms, t.delivered, calls)
        assert (b'"id":8' in s.out) is delivered, (request_ms, s.out)


class _Reads(_Stream):
    """A stream whose reads give these chunks, then the end."""

    def __init__(self, *chunks):
        super().__init__()
        self.chunks = list(chunks)

    async def read(self, n):
        return self.chunks.pop(0) if self.chunks else b""


def test_a_synqpay_frame_read_but_not_taken_out_for_want_of_room_is_answered():
    """The frame's bytes are read; taking its payload out of the decoder
    finds no room once (171 bytes, seen on a modelled ESP32): taken out
    again after a pause and answered, not the link closed under the POS
    with its request unanswered."""
    from firmware import adapter, synqpay
    from wire import synqpay_link as L

    a = _concert_app()
    a.adapters = {}
    sq = adapter(a, synqpay.Synqpay)
    sq.api_key = b"\x01\x02\x03\x04"
    s = _Reads(L.frame(L.REQUEST, b'{"jsonrpc":"2.0","id":8,"method":"getStatus"}', sq.api_key))
    real = L.Decoder.next
    L.Decoder.next, calls = _fails_once(real, "memory allocation failed, allocating 171 bytes")
    try:
        asyncio.run(synqpay.serve(a, "synqpay", s, "127.0.0.1"))
    finally:
        L.Decoder.next = real
    assert b'"id":8,"result":{"deviceStatus":"IDLE"' in s.out and calls[0] >= 2, s.out


def test_a_synqpay_frame_read_with_no_block_to_spare_waits_in_the_reader():
    """The same when, right after, nothing else may be made either, for
    longer than a moment: the reader waits in its own frame (when_room's
    coroutine was a block too, and at 56K frozen one found none: the link
    closed, "allocating 136 bytes"), for both what it feeds the decoder and
    what it takes out."""
    from firmware import adapter, synqpay
    from wire import synqpay_link as L

    for method in ("feed", "next"):
        a = _concert_app()
        a.adapters = {}
        sq = adapter(a, synqpay.Synqpay)
        sq.api_key = b"\x01\x02\x03\x04"
        s = _Reads(L.frame(L.REQUEST, b'{"jsonrpc":"2.0","id":9,"method":"getStatus"}', sq.api_key))
        real = getattr(L.Decoder, method)
        fake, calls = _fails_locked(real, 3)
        setattr(L.Decoder, method, fake)
        try:
            _unlocked(lambda: asyncio.run(synqpay.serve(a, "synqpay", s, "127.0.0.1")), calls)  # noqa: B023
        finally:
            setattr(L.Decoder, method, real)
        assert b'"id":9,"result":{"deviceStatus":"IDLE"' in s.out and calls[0] >= 4, (method, s.out)


def test_a_synqpay_request_that_never_finds_room_hears_busy():
    """No room for a request before it changed anything, after every pause
    too: the POS hears busy (201) under its id, and the link stays (it
    ended before, the request unanswered)."""
    from firmware import adapter, synqpay
    from wire import synqpay_link as L

    a = _concert_app()
    a.adapters = {}
    sq = adapter(a, synqpay.Synqpay)
    s = _Stream()
    sq.api_key = b"\x01\x02\x03\x04"
    sq.status = _no_block

    async def link():
        me = synqpay.Session(a, "synqpay", s, "127.0.0.1")
        me.auth = True
        await sq.request(me, (L.REQUEST, sq.api_key, b'{"jsonrpc":"2.0","id":9,"method":"getStatus"}'))

    asyncio.run(link())
    assert b'"id":9,"error":{"code":201' in s.out, s.out


class _NoRoomToRead:
    async def read(self, n):
        raise MemoryError("memory allocation failed, allocating 257 bytes")


def test_reading_away_a_p3_peer_with_no_room_ends_quietly():
    """What a P3 peer sent after a fault is read away before the close, a
    courtesy: with no room for the read it ends there, rather than raising
    out of the connection's task."""
    from firmware import p3_adapter

    asyncio.run(p3_adapter.discard(_NoRoomToRead()))


class _Sock:
    """The socket under a test's stream: what was sent to it straight."""

    def __init__(self):
        self.sent = b""

    def send(self, data):
        self.sent += data
        return len(data)

    def readinto(self, buf):
        return None  # nothing more arrived


class _Register:
    """A Concert register's connection whose first read finds no heap."""

    def __init__(self):
        self.out = b""
        self.reads = 0
        self.s = _Sock()

    async def read(self, n):
        self.reads += 1
        if self.reads == 1:
            raise MemoryError("memory allocation failed, allocating 256 bytes")
        await asyncio.sleep_ms(100)  # it closes once it has the answer
        return b""

    def write(self, data):
        self.out += bytes(data)

    async def drain(self):
        pass


def test_concert_over_tcp_with_no_room_to_read_the_request_answers_busy():
    """The request could not be read: nothing began, and the register hears
    busy (AE=01 AF=00) rather than a connection reset on its unread bytes."""
    from firmware import concert_ip
    from wire import concert_tlv as tlv

    a = _concert_app()
    reg = _Register()
    asyncio.run(concert_ip.serve(a, "concert-ip", reg, "127.0.0.1"))
    got = tlv.decode(reg.s.sent)
    assert (got["AE"], got["AF"]) == ("01", "00"), got
    assert a.term.journal.next_no == 1  # nothing began


class _Paying(_Register):
    """A register's connection that brings one payment request, then ends."""

    async def read(self, n):
        self.reads += 1
        await asyncio.sleep_ms(0)
        return _PAY if self.reads == 1 else b""


def test_concert_over_tcp_with_no_room_for_the_request_answers_busy():
    """The request was read, but its coroutine finds no block: nothing
    began, and the register hears busy rather than a closed connection;
    a busy answer that cannot echo its fields is the constant one."""
    from firmware import adapter, concert, concert_ip
    from wire import concert_tlv as tlv

    a = _concert_app()
    c = adapter(a, concert.Concert)
    c.request = lambda msg, src: _no_block()
    reg = _Paying()
    asyncio.run(concert_ip.serve(a, "concert-ip", reg, "127.0.0.1"))
    got = tlv.decode(reg.s.sent)
    assert (got["AE"], got["AF"]) == ("01", "00") and "CJ" not in got, got
    assert a.term.journal.next_no == 1 and a.term.current is None  # nothing began

    c.fail = lambda req, af: _no_block()
    assert c.busy(tlv.decode(_PAY)) is c.refusal


def test_concert_busy_for_want_of_room_goes_out_when_its_log_line_cannot_be_made():
    """The busy answer is sent before the line saying why: a line with no
    room would otherwise leave the register with a closed connection."""
    from firmware import adapter, concert, concert_ip
    from wire import concert_tlv as tlv

    a = _concert_app()
    c = adapter(a, concert.Concert)

    def no_room(msg, src):
        raise _NoRoomToSay("memory allocation failed, allocating 160 bytes")

    c.request = no_room
    reg = _Paying()
    try:
        asyncio.run(concert_ip.serve(a, "concert-ip", reg, "127.0.0.1"))
    except MemoryError:
        pass
    got = tlv.decode(reg.s.sent)
    assert (got["AE"], got["AF"]) == ("01", "00"), got


def _no_block():
    raise MemoryError("memory allocation failed, allocating 160 bytes")


class _Flaky(_Stream):
    """A stream whose third write finds no heap, `times` times over."""

    def __init__(self, times=1):
        super().__init__()
        self.writes = 0
        self.times = times

    def write(self, data):
        self.writes += 1
        if 3 <= self.writes < 3 + self.times:
            raise MemoryError("memory allocation failed, allocating 256 bytes")
        super().write(data)


def test_a_p3_message_cut_by_a_short_heap_goes_on_where_it_stopped():
    """A P3 message goes out in 256-byte pieces as they are made; a piece
    with no room half way is made again after a pause and the message goes
    on from there: the POS reads it whole, each byte once."""
    from firmware import p3_adapter
    from wire import p3 as w

    a = _concert_app()
    s = _Flaky()
    m = w.message("TRANSACTION_RESPONSE", "T1", "devices/x", "SUCCESS",
                  body=(("receipt", "x" * 900), ("amount", 1250)))
    conn = p3_adapter.Conn(a, "p3-tcp", "127.0.0.1", s, lambda n: b"%d\n" % n)
    assert asyncio.run(conn.send(m)) is True
    body = bytes(w.dumps(m))
    assert len(body) > 3 * 256 and s.out == b"%d\n" % len(body) + body, s.out


def test_a_p3_message_whose_start_is_out_waits_for_room_up_to_the_request_time_out():
    """Once a message's head and first piece are out, the connection is
    good for nothing until the rest follows: a piece with no room through
    the usual two pauses (at 56K frozen, an approved payment's answer was
    cut there, the POS told nothing) is tried again up to
    timeouts.request_ms, then the connection closes."""
    from firmware import p3_adapter
    from wire import p3 as w

    m = w.message("TRANSACTION_RESPONSE", "T1", "devices/x", "SUCCESS",
                  body=(("receipt", "x" * 900), ("amount", 1250)))
    body = bytes(w.dumps(m))
    for request_ms, whole in ((10000, True), (100, False)):
        a = _concert_app()
        a.cfg["timeouts"]["request_ms"] = request_ms
        s = _Flaky(times=5)
        s.s = _PosSocket()
        conn = p3_adapter.Conn(a, "p3-tcp", "127.0.0.1", s, lambda n: b"%d\n" % n)
        assert asyncio.run(conn.send(m)) is whole and conn.open is whole, request_ms
        assert (s.out == b"%d\n" % len(body) + body) is whole, (request_ms, s.out)


def _sent_with(module, name, fake):
    """What Conn.send() of a long answer writes, and its result, while
    module's `name` is replaced by fake; the frame log on."""
    from firmware import p3_adapter
    from wire import p3 as w

    a = _concert_app()
    s = _Taken()
    m = w.message("TRANSACTION_RESPONSE", "T1", "devices/x", "OK", body=(("receipt", "x" * 400),))
    conn = p3_adapter.Conn(a, "p3-tcp", "127.0.0.1", s, lambda n: b"%d\n" % n)
    setattr(module, name, fake)
    try:
        ok = asyncio.run(conn.send(m))
    finally:
        delattr(module, name)
    body = bytes(w.dumps(m))
    return ok and s.out == b"%d\n" % len(body) + body and conn.open, s.out


def test_a_p3_answer_needs_no_new_block_to_be_written_in_pieces():
    """The pieces of every answer are made in one buffer the adapter made
    once: at a short heap's worst the answer, its head already out, found
    no 128-byte hole for its own, and the connection closed mid-message."""
    from wire import p3 as w

    ok, out = _sent_with(w, "bytearray", lambda n: _no_block())
    assert ok, out


def test_a_p3_answer_whose_log_copy_finds_no_room_still_goes_out():
    """The frame log's copy of an answer's first piece is a courtesy: with
    no room for it the answer goes out whole and the connection stays."""
    from firmware import p3_adapter

    ok, out = _sent_with(p3_adapter, "bytes", lambda b: _no_block())
    assert ok, out


class _NoRoomToSay(MemoryError):
    def __repr__(self):  # the log line about it finds no room either
        raise MemoryError("memory allocation failed, allocating 64 bytes")

    __str__ = __repr__


class _HeadOnly(_Stream):
    """A stream that takes a message's head, then finds no heap for more."""

    def __init__(self):
        super().__init__()
        self.s = self  # its socket
        self.closed = False

    def close(self):
        self.closed = True

    def write(self, data):
        if self.out:
            raise _NoRoomToSay("memory allocation failed, allocating 128 bytes")
        super().write(data)


def test_a_p3_message_cut_for_good_closes_even_when_its_log_line_cannot_be_made():
    """A message whose body never finds room closes its connection, even if
    the line saying so raises too: the head is out, and anything written
    after it (the busy answer that follows a MemoryError) would be read as
    that message's body.  Seen: a POS read an answer's head as the start of
    a login answer (\"unreadable message\"), at 96K and 112K on 32 bits."""
    from firmware import p3_adapter
    from wire import p3 as w

    a = _concert_app()
    a.cfg["timeouts"]["request_ms"] = 100  # (how long the rest is waited for)
    s = _HeadOnly()
    conn = p3_adapter.Conn(a, "p3-tcp", "127.0.0.1", s, lambda n: b"%d\n" % n)
    m = w.message("LOGIN_MERCHANT_RESPONSE", "T1", None, "OK", body=(("merchantId", "M1"),))
    try:
        asyncio.run(conn.send(m))
    except MemoryError:
        pass  # (what received() turns into a busy answer)
    assert not conn.open and s.closed
    head = s.out
    assert asyncio.run(conn.send(m)) is False and s.out == head  # nothing after the head


class _Taken(_Stream):
    out_buf = b""  # asyncio's stream: the socket took every byte at once


class _Stuck(_Stream):
    out_buf = b"rest"  # the socket did not take it all, and the reader never reads

    async def drain(self):
        await asyncio.sleep_ms(60000)


def test_a_p3_answer_the_socket_takes_needs_no_room_for_a_time_out():
    """A write the socket takes at once arms no time-out (wait_for's task
    and coroutines): a heap with no room for one still sends the answer,
    and the connection stays.  A reader that stops reading still meets the
    time-out, and its connection is closed."""
    from firmware import p3_adapter
    from wire import p3 as w

    a = _concert_app()
    m = w.message("TRANSACTION_RESPONSE", "T1", "devices/x", "SUCCESS", body=(("amount", 1250),))
    s = _Taken()
    conn = p3_adapter.Conn(a, "p3-tcp", "127.0.0.1", s, lambda n: b"%d\n" % n)
    real = asyncio.wait_for_ms
    asyncio.wait_for_ms = lambda aw, ms: _no_block()
    try:
        assert asyncio.run(conn.send(m)) is True and conn.open
    finally:
        asyncio.wait_for_ms = real
    body = bytes(w.dumps(m))
    assert s.out == b"%d\n" % len(body) + body, s.out
    a.cfg["timeouts"]["request_ms"] = 100
    conn = p3_adapter.Conn(a, "p3-tcp", "127.0.0.1", _Stuck(), lambda n: b"%d\n" % n)
    conn.close = lambda: setattr(conn, "open", False)  # (no socket under this stream)
    assert asyncio.run(conn.send(m)) is False and not conn.open


class _NoRoomLock:
    """asyncio.Lock whose enter finds no block (its coroutines: 84 bytes at
    56K frozen, at the end of an approved P3 payment)."""

    async def __aenter__(self):
        raise MemoryError("memory allocation failed, allocating 84 bytes")

    async def __aexit__(self, *exc):
        pass


class _Slow(_Stream):
    """A socket that takes a write, then makes the writer wait for the rest."""

    out_buf = b"rest"

    async def drain(self):
        await asyncio.sleep_ms(20)


def test_writers_take_turns_with_no_block_for_a_lock():
    """An answer and an update written from two tasks go out one after the
    other, each whole, and taking turns needs no block (asyncio.Lock's
    enter and exit are coroutines): P3 and Concert's serial line.  (Synqpay's
    writers take tickets: its events must go out in the order they were
    posted, which a wait in turn does not promise.)"""
    from firmware import concert_serial, p3_adapter
    from wire import p3 as w

    real, asyncio.Lock = asyncio.Lock, _NoRoomLock
    try:
        a = _concert_app()
        s = _Slow()
        conn = p3_adapter.Conn(a, "p3-tcp", "127.0.0.1", s, lambda n: b"%d\n" % n)
        m1 = w.message("TRANSACTION_RESPONSE", "T1", "devices/x", "SUCCESS", body=(("receipt", "x" * 300),))
        m2 = w.message("EXECUTE_TRANSACTION_UPDATE", "T2", "devices/x", None, body=(("state", "PIN"),))

        async def both():
            return await asyncio.gather(conn.send(m1), conn.send(m2))

        assert asyncio.run(both()) == [True, True] and conn.open
        b1, b2 = bytes(w.dumps(m1)), bytes(w.dumps(m2))
        assert s.out == b"%d\n" % len(b1) + b1 + b"%d\n" % len(b2) + b2, s.out
        serial = _Slow()
        ln = concert_serial.Line(a, "concert-serial", serial, a.cfg["listeners"]["concert-serial"])
        outs = [b"\x06", b"\x05"]
        ln.link.output = lambda: outs.pop(0) if outs else b""

        async def line():
            await asyncio.gather(ln._flush(), ln._flush())

        asyncio.run(line())
        assert serial.out == b"\x06\x05", serial.out
    finally:
        asyncio.Lock = real


def test_a_synqpay_answer_waits_for_room_to_take_its_turn():
    """A Synqpay link's writers take turns in the order they came (its
    events before the answer), and taking a turn needs no block:
    asyncio.Lock's acquire is a coroutine, and at 56K frozen a busy answer
    found no block for it and the POS heard nothing."""
    from firmware import synqpay

    real = asyncio.Lock
    fails = [2]

    class Lock(real):
        def acquire(self):
            if fails[0]:
                fails[0] -= 1
                raise MemoryError("memory allocation failed, allocating 84 bytes")
            return real.acquire(self)

    asyncio.Lock = Lock
    try:
        a = _concert_app()
        line = _Slow()

        async def link():
            me = synqpay.Session(a, "synqpay", line, "127.0.0.1")
            return await asyncio.gather(me.send((b"AB", b"CD"), "first"), me.send(b"EF", "second"),
                                        me.send(b"GH", "third"))

        assert asyncio.run(link()) == [True, True, True] and line.out == b"ABCDEFGH", line.out
    finally:
        asyncio.Lock = real


def test_a_synqpay_writer_cancelled_before_its_turn_ends_its_link_in_time():
    """A writer cancelled while it waited for its turn (its link evicted)
    never takes it: the writers after it give up after request_ms, not
    never (their tasks would pile up)."""
    from firmware import synqpay

    a = _concert_app()
    a.cfg["timeouts"]["request_ms"] = 100
    line = _Slow()

    async def link():
        me = synqpay.Session(a, "synqpay", line, "127.0.0.1")
        first = asyncio.create_task(me.send(b"AB", "first"))
        second = asyncio.create_task(me.send(b"CD", "second"))
        third = asyncio.create_task(me.send(b"EF", "third"))
        await asyncio.sleep_ms(0)
        second.cancel()
        return await first, await third

    assert asyncio.run(link()) == (True, False) and line.out == b"AB", line.out


def test_a_p3_final_answer_without_room_is_built_a_moment_later():
    """The transaction ran; its final response found no room once: it is
    built again after a pause and sent, not left to a task that dies (the
    POS would wait in silence)."""
    from firmware import p3_adapter

    a = _concert_app()
    s = _Stream()
    conn = p3_adapter.Conn(a, "p3-tcp", "127.0.0.1", s, lambda n: b"%d\n" % n)
    t = a.term.start("pay", 1250, 978, "p3", ref="order-1")
    p3 = p3_adapter.P3(a)
    p3.result, calls = _fails_once(p3.result, "memory allocation failed, allocating 464 bytes")
    asyncio.run(p3.drive(conn, t, "TRANSACTION_RESPONSE", "T1", "devices/x", False))
    assert calls[0] == 2 and b'"TRANSACTION_RESPONSE"' in s.out and b'"T1"' in s.out, s.out
    assert t.delivered and t.result == "approved"


def test_a_p3_final_answer_waits_for_room_up_to_the_request_time_out():
    """The transaction ran and its answer found no room through a few
    collections and pauses (on a modelled ESP32 the connection then
    closed, the POS left to look the outcome up): it keeps trying for up
    to timeouts.request_ms, then closes."""
    from firmware import p3_adapter

    for request_ms, delivered in ((10000, True), (100, False)):
        a = _concert_app()
        a.cfg["timeouts"]["request_ms"] = request_ms
        s = _Taken()
        s.s = _PosSocket()
        conn = p3_adapter.Conn(a, "p3-tcp", "127.0.0.1", s, lambda n: b"%d\n" % n)
        t = a.term.start("pay", 1250, 978, "p3", ref="order-9")
        p3 = p3_adapter.P3(a)
        p3.result, calls = _fails_for(p3.result, 6, "memory allocation failed, allocating 464 bytes")
        asyncio.run(p3.drive(conn, t, "TRANSACTION_RESPONSE", "T9", "devices/x", False))
        assert t.result == "approved" and t.delivered is delivered, (request_ms, t.delivered)
        assert (b'"T9"' in s.out) is delivered and conn.open is delivered, s.out
        assert (calls[0] > 6) is delivered, calls  # built until it fitted, or given up early


def test_a_p3_final_answer_whose_send_finds_no_block_to_start_is_sent_later():
    """Sending needs blocks of its own before a byte goes out (its
    coroutines, the message's length): at 56K frozen one found none right
    after an approved payment and the connection closed unanswered.  The
    answer is tried again in drive()'s own frame, which needs no block to
    wait."""
    from firmware import p3_adapter

    a = _concert_app()
    s = _Stream()
    conn = p3_adapter.Conn(a, "p3-tcp", "127.0.0.1", s, lambda n: b"%d\n" % n)
    t = a.term.start("pay", 1250, 978, "p3", ref="order-2")
    p3 = p3_adapter.P3(a)
    conn.send, calls = _fails_for(conn.send, 3, "memory allocation failed, allocating 96 bytes")
    asyncio.run(p3.drive(conn, t, "TRANSACTION_RESPONSE", "T2", "devices/x", False))
    assert calls[0] == 4 and t.delivered and b'"T2"' in s.out, (calls, s.out)


def test_a_p3_final_answer_needs_no_block_for_a_whole_receipt():
    """P3 sends receipts line by line: its final answer is built from the
    lines (small blocks), never from the receipt's whole text, a block of
    200 bytes and more that a fragmented board heap often lacks (the final
    answer of an approved payment was lost so on a modelled ESP32)."""
    from firmware import p3_adapter, receipt

    a = _concert_app()
    s = _Stream()
    conn = p3_adapter.Conn(a, "p3-tcp", "127.0.0.1", s, lambda n: b"%d\n" % n)
    t = a.term.start("pay", 1250, 978, "p3", ref="order-2")

    def whole(*args):
        raise MemoryError("memory allocation failed, allocating 225 bytes")

    real, receipt.transaction = receipt.transaction, whole
    try:
        asyncio.run(p3_adapter.P3(a).drive(conn, t, "TRANSACTION_RESPONSE", "T2", "devices/x", False))
    finally:
        receipt.transaction = real
    assert b'"merchantReceipt"' in s.out and b'"T2"' in s.out, s.out
    assert t.delivered and t.result == "approved"
    assert receipt.lines(t, a.cfg) == real(t, a.cfg).split("\n")[:-1]  # the same text


def test_a_p3_payment_with_no_room_for_its_task_hears_busy():
    """The terminal was claimed, and the task that would run the payment
    finds no room: the claim is given back and the POS hears
    ACCESSORY_BUSY under its tag (it heard nothing, and the terminal
    stayed claimed)."""
    from firmware import p3_adapter

    a = _concert_app()
    s = _Taken()
    conn = p3_adapter.Conn(a, "p3-tcp", "127.0.0.1", s, lambda n: b"%d\n" % n)
    t = a.term.start("pay", 1250, 978, "p3", ref="order-2")
    real = p3_adapter.spawn
    p3_adapter.spawn = lambda co: _no_block()
    try:
        asyncio.run(p3_adapter.P3(a).drive(conn, t, "TRANSACTION_RESPONSE", "T3", "devices/x", False))
    finally:
        p3_adapter.spawn = real
    assert b'"ACCESSORY_BUSY"' in s.out and b'"T3"' in s.out, s.out
    assert a.term.current is None and not t.no


def test_a_p3_payment_whose_wait_finds_no_room_is_still_answered():
    """While the payment runs, the task that answers it waits for news
    with a time-out; with no room for the time-out it looks again a moment
    later, and the POS gets its final answer (it waited in silence)."""
    from firmware import p3_adapter

    a = _concert_app()
    s = _Taken()
    conn = p3_adapter.Conn(a, "p3-tcp", "127.0.0.1", s, lambda n: b"%d\n" % n)
    t = a.term.start("pay", 1250, 978, "p3", ref="order-3")
    real = asyncio.wait_for_ms
    asyncio.wait_for_ms = lambda aw, ms: _no_block()
    try:
        asyncio.run(p3_adapter.P3(a).drive(conn, t, "TRANSACTION_RESPONSE", "T4", "devices/x", False))
    finally:
        asyncio.wait_for_ms = real
    assert b'"TRANSACTION_RESPONSE"' in s.out and b'"T4"' in s.out, s.out
    assert t.result == "approved" and t.delivered


def _received_with(name, fake, data):
    """What P3.received(data) writes to its POS while wire.p3's function
    `name` is replaced by fake."""
    from firmware import p3_adapter
    from wire import p3 as p3_codec

    a = _concert_app()
    s = _Stream()
    conn = p3_adapter.Conn(a, "p3-tcp", "127.0.0.1", s, lambda n: b"%d\n" % n)
    real = getattr(p3_codec, name)
    setattr(p3_codec, name, fake)
    try:
        asyncio.run(p3_adapter.P3(a).received(conn, data))
    finally:
        setattr(p3_codec, name, real)
    return s.out


def test_a_p3_message_decoded_through_a_short_heap_is_answered_under_its_tag():
    """No room to decode a P3 message: it is decoded again after a pause
    (its bytes are in hand), so its answer carries its tag; an ERROR
    response without one would reach no request, and the POS would wait."""
    from wire import p3 as p3_codec

    loads, calls = _fails_once(p3_codec.loads, "memory allocation failed, allocating 240 bytes")
    out = _received_with("loads", loads, b'{"type":"NO_SUCH_REQUEST","tag":"T7"}')
    assert calls[0] == 2 and b'"tag":"T7"' in out, out


def test_a_p3_message_whose_log_line_finds_no_room_is_answered():
    """The frame log's copy of a received message (its start, secrets
    starred) is made only for someone reading it; with no room for it the
    line goes, and the message is still answered under its tag."""
    out = _received_with("redact", lambda data: _no_block(), b'{"type":"NO_SUCH_REQUEST","tag":"T8"}')
    assert b'"tag":"T8"' in out, out


def test_a_p3_message_that_never_finds_room_to_decode_hears_busy_under_its_tag():
    """No room to decode a message even after the pauses: its tag is read
    off its bytes, and the ACCESSORY_BUSY goes out under it (without a tag
    it answered nothing, and the POS waited 10 s)."""
    from firmware import p3_adapter

    out = _received_with("loads", lambda data: _no_block(), bytearray(
        b'{"type":"EXECUTE_TRANSACTION_REQUEST", "tag" : "T9","resource":"x"}'))
    assert b'"tag":"T9"' in out and b'"ACCESSORY_BUSY"' in out, out
    assert p3_adapter._tag(b'{"type":"X"}') is None and p3_adapter._tag(b'{"tag":null}') is None


class _Trickle:
    """A P3 POS's socket that sends `data` a few bytes a read; the read
    after the first finds no room (the view or the wait), once."""

    def __init__(self, data):
        self.data = data
        self.reads = 0
        self.s = _Sock()  # nothing has come yet: every read waits

    async def readinto(self, mv):
        self.reads += 1
        if self.reads == 2:
            raise MemoryError("memory allocation failed, allocating 32 bytes")
        await asyncio.sleep_ms(0)
        n = min(len(mv), 3, len(self.data))
        mv[:n] = self.data[:n]
        self.data = self.data[n:]
        return n


def test_a_p3_message_read_through_a_short_heap_comes_whole():
    """No room for a P3 message's buffer, then none for one of its reads
    midway: each is tried again after a pause, and the message comes
    whole, no byte lost, rather than its connection closed."""
    from firmware import p3_adapter

    msg = b'{"type":"LOGIN_REQUEST","tag":"1"}'
    p3_adapter.bytearray, calls = _fails_once(bytearray, "memory allocation failed, allocating 35 bytes")
    try:
        got = asyncio.run(p3_adapter.take(_Trickle(msg), len(msg), 5000))
    finally:
        del p3_adapter.bytearray
    assert bytes(got) == msg and calls[0] == 2, (got, calls)


class _Waits:
    """A stream whose awaited reads must not be used."""

    def __init__(self, data):
        self.s = Arrived(data)

    async def readinto(self, mv):
        raise AssertionError("waited for bytes that had come")


def test_a_p3_message_that_has_come_is_read_with_no_time_out_armed():
    """A message whose bytes are in the socket is taken without a wait:
    wait_for's two tasks and coroutines, allocated per message, were where
    a short heap closed connections ("message of 165 bytes; closed")."""
    from firmware import p3_adapter

    msg = b'{"type":"LOGIN_REQUEST","tag":"1"}'
    real, asyncio.wait_for_ms = asyncio.wait_for_ms, lambda aw, ms: _no_block()
    try:
        s = _Waits(msg[1:] + b"NEXT")  # its first byte came with the head (early)
        got = asyncio.run(p3_adapter.take(s, len(msg), 5000, msg[:1]))
    finally:
        asyncio.wait_for_ms = real
    assert bytes(got) == msg and s.s.data == b"NEXT", (got, s.s.data)


def test_a_p3_websocket_frame_unmasked_through_a_short_heap_comes_whole():
    """The frame is read; unmasking allocates (big ints): a piece that
    finds no room is done again after a pause, not the frame lost."""
    from firmware import p3_ws
    from wire import ws

    msg = b'{"type":"LOGIN_REQUEST","tag":"1","merchantId":"' + b"m" * 150 + b'"}'
    mask = b"\x01\x02\x03\x04"
    data = ws.unmask(bytearray(msg), mask)
    real = ws.unmask_piece
    ws.unmask_piece, calls = _fails_once(real, "memory allocation failed, allocating 80 bytes")
    try:
        got = asyncio.run(p3_ws._unmask(data, mask))
    finally:
        ws.unmask_piece = real
    assert bytes(got) == msg and calls[0] == 5, (got, calls)  # 4 pieces, one done twice


class _PosSocket(_Sock):
    def close(self):
        pass


class _Pos(_Taken):
    """A P3 POS's connection: every byte of `data` is there to read, then
    it closes (read gives b"")."""

    def __init__(self, data):
        super().__init__()
        self.data = data
        self.s = _PosSocket()

    async def read(self, n):
        await asyncio.sleep_ms(0)
        got, self.data = self.data[:n], self.data[n:]
        return got

    async def readexactly(self, n):
        return await self.read(n)

    async def readinto(self, mv):
        await asyncio.sleep_ms(0)
        n = min(len(mv), len(self.data))
        mv[:n] = self.data[:n]
        self.data = self.data[n:]
        return n


def _no_block_over(size):
    """bytearray, but with no block above size bytes (a fragmented heap)."""
    return lambda n: _no_block() if n > size else bytearray(n)


_WINDOW = 96  # p3_adapter._HEAD (a const: no name kept at run time)
# a request long enough that a short heap has no block for it; its tag first,
# as every P3 client seen sends it
_LONG = (b'{"tag":"T1","type":"EXECUTE_TRANSACTION_REQUEST","resource":"devices/x",'
         b'"executeTransaction":{"transactionParameters":{"subject":"' + b"s" * 200 + b'"}}}')
_SHORT = b'{"type":"NO_SUCH_REQUEST","tag":"T2"}'


def _busy_then_answered(out):
    """The POS's two answers: ACCESSORY_BUSY under T1, then T2's own."""
    i = out.find(b'"tag":"T1"')
    j = out.find(b'"tag":"T2"')
    assert 0 <= i < j and b'"ACCESSORY_BUSY"' in out[i:j] and b'"MESSAGE_TYPE_UNKNOWN"' in out[j:], out


def test_a_p3_message_with_no_block_for_it_is_read_away_and_its_start_kept():
    """No block for a message's buffer even after the pauses: it is read
    away through a small window, exactly its bytes (the next message's are
    left), the window keeping its start, where its tag is; bytes that came
    early (a WebSocket's, after the handshake) count as read."""
    from firmware import p3_adapter

    p3_adapter.bytearray = _no_block_over(_WINDOW)
    try:
        for early in (b"", _LONG[:150], _LONG[:40]):
            s = _Pos(_LONG[len(early):] + b"NEXT")
            got = asyncio.run(p3_adapter.take(s, len(_LONG), 5000, early))
            assert bytes(got) == _LONG[:_WINDOW] and s.data == b"NEXT", (early, got, s.data)
    finally:
        del p3_adapter.bytearray


def test_a_p3_tcp_message_with_no_block_for_it_hears_busy_under_its_tag():
    """The whole framed-TCP path: the message with no block hears
    ACCESSORY_BUSY under its tag, the connection stays, and the next
    message is answered (it used to close the connection, the POS left to
    ask for the outcome)."""
    from firmware import p3_adapter, p3_tcp

    a = _concert_app()
    s = _Pos(len(_LONG).to_bytes(4, "big") + _LONG + len(_SHORT).to_bytes(4, "big") + _SHORT)
    p3_adapter.bytearray = _no_block_over(_WINDOW)
    try:
        asyncio.run(p3_tcp.serve(a, "p3-tcp", s, "127.0.0.1"))
    finally:
        del p3_adapter.bytearray
    _busy_then_answered(s.out)


def _ws_frame(msg):
    """A POS's masked text frame (RFC 6455)."""
    from wire import ws

    mask = b"\x0a\x0b\x0c\x0d"
    n = len(msg)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126, n >> 8, n & 255])
    return head + mask + bytes(ws.unmask(bytearray(msg), mask))


_UPGRADE = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def test_a_p3_websocket_message_with_no_block_for_it_hears_busy_under_its_tag():
    """The same over a WebSocket, the message's first bytes arriving with
    the handshake: busy under its tag (it was a close 1009), then the next
    message answered."""
    from firmware import p3_adapter, p3_ws

    a = _concert_app()
    s = _Pos(_UPGRADE + _ws_frame(_LONG) + _ws_frame(_SHORT))
    p3_adapter.bytearray = _no_block_over(_WINDOW)
    try:
        asyncio.run(p3_ws.serve(a, "p3-ws", s, "127.0.0.1"))
    finally:
        del p3_adapter.bytearray
    assert s.out.startswith(b"HTTP/1.1 101 "), s.out
    _busy_then_answered(s.out)


def test_a_p3_websocket_handshake_with_no_room_hears_503():
    """No room to read or answer the handshake: 503 with Retry-After, as
    the web page's listener answers, not a close on an unanswered upgrade."""
    from firmware import p3_ws, tcp

    async def no_room(*args):
        _no_block()

    s = _Pos(_UPGRADE)
    real, tcp.read_head = tcp.read_head, no_room
    try:
        asyncio.run(p3_ws.serve(_concert_app(), "p3-ws", s, "127.0.0.1"))
    finally:
        tcp.read_head = real
    assert s.out == tcp.HTTP_BUSY, s.out


def _kept_after(spawn_it):
    """Heap kept once a task made by spawn_it() ended while asyncio's queue
    still points at it: a long-lived task is woken just before spawn_it()
    makes the task, so the queue keeps the pointer on purpose."""
    import gc

    async def sleeper(ev):
        while True:
            await ev.wait()
            ev.clear()

    async def go():
        ev = asyncio.Event()
        holder = asyncio.create_task(sleeper(ev))
        await asyncio.sleep_ms(5)
        gc.collect()
        before = gc.mem_alloc()
        ev.set()  # the holder goes on the queue first...
        spawn_it()  # ...the new task behind it
        await asyncio.sleep_ms(20)  # both ran; the task ended
        gc.collect()
        kept = gc.mem_alloc() - before
        holder.cancel()
        return kept

    return asyncio.run(go())


async def _holding(*args):
    held = bytearray(20000)  # a client's buffers, its transaction...
    await asyncio.sleep_ms(0)
    return len(held)


def test_a_finished_client_task_holds_nothing_of_its_client():
    """asyncio's task queue (a pairing heap) can keep a pointer to a task
    after it ended: a task that was the queue's top while another was
    queued behind it keeps pointing at that one until it is next the top
    of another.  What the ended task's coroutine still references stays
    in the heap meanwhile (2.5 KB of a Concert payment, on x64, for
    seconds)."""
    from firmware import tcp

    cfg, _ = config.merge({"allowed_ips": []})
    lst = tcp.TCPListener(_App(cfg), "test-tcp", None)
    lst.handler = _holding

    class Sock:
        s = None

        def close(self):
            pass

    kept = _kept_after(lambda: asyncio.create_task(lst._client(Sock(), "127.0.0.1", Sock())))
    assert kept < 2000, kept  # its coroutine's frame, not the 20 KB


def test_a_spawned_task_holds_nothing_once_ended():
    """The same for the tasks that run a transaction or send an answer
    (firmware.spawn); asyncio.create_task keeps the 20 KB."""
    from firmware import spawn

    assert _kept_after(lambda: asyncio.create_task(_holding())) > 20000  # the trap works
    kept = _kept_after(lambda: spawn(_holding()))
    assert kept < 2000, kept
