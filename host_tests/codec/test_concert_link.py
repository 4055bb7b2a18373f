"""Concert serial link layer (terminal side), driven byte by byte; CPython
and MicroPython.  Time is the caller's: timeout() stands for "link.wait ms
passed without input"."""
from wire import concert_link as L

ENQ, ACK, NAK, STX, ETX, EOT, ETB = b"\x05", b"\x06", b"\x15", b"\x02", b"\x03", b"\x04", b"\x17"
REQ = b"0100001250110978" + b" " * 10 + b"A010B010"


def out(k):
    return bytes(k.output())


def kinds(events):
    return [e[0] for e in events]


def open_session(k):
    assert k.receive(ENQ) == ()
    assert out(k) == ACK and k.state == L.WAIT_STX and k.wait == k.reply_ms


def test_lrc_covers_data_and_etx():
    assert L.lrc(b"\x02AB\x03", 1) == 0x41 ^ 0x42 ^ 0x03
    assert L.frame(b"AB") == b"\x02AB\x03" + bytes([0x41 ^ 0x42 ^ 0x03])
    assert L.frame(b"AB", last=False)[-2:-1] == ETB


def test_whole_exchange_request_then_answer():
    k = L.Link()
    open_session(k)
    ev = k.receive(L.frame(REQ))
    assert ev == [("request", REQ)] and out(k) == ACK and k.state == L.WAIT_EOT
    assert k.receive(EOT) == () and k.state == L.HELD and k.wait is None
    assert k.receive(ENQ) == () and out(k) == NAK  # the answer is owed first
    assert k.send(b"ANSWER") == () and out(k) == ENQ and k.state == L.TX_ENQ
    assert k.receive(ACK) == () and out(k) == L.frame(b"ANSWER")
    assert k.receive(ACK) == [("sent", None)] and out(k) == EOT and k.state == L.IDLE


def test_answer_waits_for_the_registers_eot():
    k = L.Link()
    open_session(k)
    k.receive(L.frame(REQ))
    out(k)
    k.send(b"BUSY")  # decided at once, but the register still holds the line
    assert out(k) == b"" and k.state == L.WAIT_EOT
    k.receive(EOT)
    assert out(k) == ENQ and k.state == L.TX_ENQ


def test_missing_eot_times_out_and_the_terminal_takes_the_line():
    k = L.Link()
    open_session(k)
    k.receive(L.frame(REQ))
    out(k)
    k.send(b"X")
    assert k.timeout() == () and out(k) == ENQ


def test_bytes_in_one_chunk_or_one_by_one_are_the_same():
    a, b = L.Link(), L.Link()
    data = b"noise" + ENQ + L.frame(REQ) + EOT
    ea = a.receive(data)
    eb = []
    for i in range(len(data)):
        eb += list(b.receive(data[i:i + 1]))
    assert ea == eb == [("request", REQ)] and bytes(a.out) == bytes(b.out) == ACK + ACK


def test_noise_between_sessions_is_ignored():
    k = L.Link()
    gen = k.gen
    assert k.receive(b"\x00\xff garbage \x03\x06\x15\x04" + STX + b"12" + ETX + b"x") == ()
    assert out(k) == b"" and k.state == L.IDLE and k.gen == gen


def test_bad_lrc_is_naked_then_the_resent_frame_is_taken():
    k = L.Link()
    open_session(k)
    bad = L.frame(REQ)[:-1] + b"\x00"
    assert kinds(k.receive(bad)) == ["nak"] and out(k) == NAK and k.state == L.WAIT_STX
    assert k.receive(L.frame(REQ)) == [("request", REQ)] and out(k) == ACK


def test_retry_limit_then_eot_and_idle():
    k = L.Link(retries=2)
    open_session(k)
    bad = L.frame(REQ)[:-1] + b"\x00"
    assert kinds(k.receive(bad)) == ["nak"] and out(k) == NAK
    assert kinds(k.receive(bad)) == ["nak"] and out(k) == NAK
    ev = k.receive(bad)
    assert ev == [("abandoned", "bad LRC")] and out(k) == EOT and k.state == L.IDLE
    open_session(k)  # and the next session starts afresh
    assert kinds(k.receive(L.frame(REQ))) == ["request"]


def test_frame_cut_short_is_naked_after_the_byte_timeout():
    k = L.Link()
    open_session(k)
    k.receive(STX + REQ[:10])
    assert k.state == L.IN_FRAME and k.wait == k.byte_ms
    gen = k.gen
    k.receive(REQ[10:12])
    assert k.gen != gen  # every byte restarts the per-byte timer
    assert kinds(k.timeout()) == ["nak"] and out(k) == NAK


def test_silent_register_after_enq_is_given_up_at_once():
    k = L.Link()
    open_session(k)
    assert k.timeout() == [("abandoned", "no frame")] and out(k) == EOT and k.state == L.IDLE


def test_oversize_frame_is_refused_and_never_buffered():
    k = L.Link(max_frame=512)
    open_session(k)
    big = L.frame(b"9" * 5000)
    k.receive(big[:3000])
    assert len(k.msg) == 512  # counted past the limit, not kept
    ev = k.receive(big[3000:])
    assert kinds(ev) == ["nak"] and "over 512" in ev[0][1] and out(k) == NAK
    assert len(k.msg) == 0


def test_endless_stream_without_etx_stays_bounded():
    k = L.Link()
    open_session(k)
    k.receive(STX)
    for _ in range(50):
        k.receive(b"A" * 1000)
    assert len(k.msg) == 512 and k.state == L.IN_FRAME


def test_stx_inside_a_frame_starts_it_again():
    k = L.Link()
    open_session(k)
    assert k.receive(STX + b"0100" + L.frame(REQ)) == [("request", REQ)]


def test_multi_frame_message_with_etb():
    k = L.Link(max_frame=10)
    open_session(k)
    assert k.receive(L.frame(b"CZ0040300C", last=False)) == () and out(k) == ACK
    assert k.state == L.WAIT_STX
    assert k.receive(L.frame(b"D0010")) == [("request", b"CZ0040300CD0010")]


def test_bad_second_frame_keeps_the_first():
    k = L.Link(max_frame=10)
    open_session(k)
    k.receive(L.frame(b"CZ0040300C", last=False))
    assert kinds(k.receive(L.frame(b"D0010")[:-1] + b"\x00")) == ["nak"]
    assert k.receive(L.frame(b"D0010")) == [("request", b"CZ0040300CD0010")]


def test_message_limit_across_frames():
    k = L.Link(max_frame=10, max_msg=15)
    open_session(k)
    k.receive(L.frame(b"0123456789", last=False))
    assert kinds(k.receive(L.frame(b"0123456789"))) == ["nak"]


def _answer(k, msg):
    open_session(k)
    k.receive(L.frame(REQ) + EOT)
    out(k)
    k.send(msg)
    assert out(k) == ENQ


def test_long_answer_goes_out_in_frames_of_512():
    k = L.Link()
    msg = bytes([65 + i % 26 for i in range(1100)])
    _answer(k, msg)
    k.receive(ACK)
    f1 = out(k)
    assert f1 == L.frame(msg[:512], last=False) and len(f1) == 515
    k.receive(ACK)
    assert out(k) == L.frame(msg[512:1024], last=False)
    k.receive(ACK)
    assert out(k) == L.frame(msg[1024:])
    assert k.receive(ACK) == [("sent", None)] and out(k) == EOT


def test_exactly_512_is_one_frame():
    k = L.Link()
    _answer(k, b"A" * 512)
    k.receive(ACK)
    assert out(k) == L.frame(b"A" * 512)
    assert kinds(k.receive(ACK)) == ["sent"]


def test_nak_to_the_answer_resends_it_up_to_the_limit():
    k = L.Link(retries=2)
    _answer(k, b"ANS")
    k.receive(ACK)
    assert out(k) == L.frame(b"ANS")
    k.receive(NAK)
    assert out(k) == L.frame(b"ANS")
    assert k.timeout() == () and out(k) == L.frame(b"ANS")
    assert k.receive(NAK) == [("failed", "frame refused")] and out(k) == EOT
    assert k.state == L.IDLE and k.tx is None


def test_register_that_never_acks_the_enq():
    k = L.Link(retries=3)
    _answer(k, b"ANS")
    for _ in range(3):
        assert k.timeout() == () and out(k) == ENQ
    assert k.timeout() == [("failed", "no ACK to ENQ")] and out(k) == EOT and k.state == L.IDLE


def test_drop_frees_the_line_without_an_answer():
    k = L.Link()
    open_session(k)
    k.receive(L.frame(REQ) + EOT)
    out(k)
    assert k.state == L.HELD
    k.no_answer()
    assert k.state == L.IDLE
    open_session(k)


def test_eot_instead_of_the_frame_ends_the_session():
    k = L.Link()
    open_session(k)
    assert k.receive(EOT) == () and k.state == L.IDLE and out(k) == b""


def test_enq_again_while_waiting_for_the_frame_is_acked_again():
    k = L.Link()
    open_session(k)
    k.receive(ENQ)
    assert out(k) == ACK and k.state == L.WAIT_STX


def test_random_line_noise_never_breaks_the_link():
    """Pseudo-random bytes in random chunks, time-outs now and then: no
    exception, nothing kept past the limits, only control bytes sent back,
    and a proper session works afterwards."""
    k = L.Link(max_frame=64, max_msg=128)
    seed = 12345
    for _ in range(3000):
        seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
        n = 1 + seed % 17
        chunk = bytearray()
        for _ in range(n):
            seed = (seed * 1103515245 + 12345) & 0x7FFFFFFF
            b = (seed >> 16) & 0xFF
            chunk.append(b if b > 0x20 else (2, 3, 4, 5, 6, 0x15, 0x17)[b % 7])
        for kind, _ in k.receive(chunk):
            if kind == "request":
                k.no_answer()
        if seed % 5 == 0:
            k.timeout()
        assert len(k.msg) <= 128
        for b in out(k):
            assert b in (6, 0x15, 4), b
    for _ in range(5):  # whatever state the noise left: time-outs bring it back to idle
        k.receive(EOT)
        k.timeout()
        k.no_answer()
    out(k)
    open_session(k)
    assert k.receive(L.frame(b"0" * 10)) == [("request", b"0" * 10)]
