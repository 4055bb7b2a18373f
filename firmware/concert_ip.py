"""Concert V3 over TCP: one request and one answer per connection.

TCP has no frame boundary and Concert V3 adds none, so the request is read
until it ends on an element boundary and carries every tag its action needs
(or, if it never does, until the register pauses for timeouts.gap_ms).  The
answer goes out in one write; then the terminal waits for the register to
close.  A register that closed before the answer is marked "not delivered";
one that only closed its sending half (nc, socat do) still gets its answer.
"""
import asyncio
import gc

from firmware import adapter, log
from firmware.concert import Concert, complete
from firmware.tcp import deadline, peer_reset, read_away, read_by
from wire import concert_tlv as tlv


async def _read_request(app, name, r, peer):
    """Bytes of one request, or None (nothing sent, or the register left)."""
    to = app.cfg["timeouts"]
    limit = app.cfg["concert"]["max_request"]
    buf = bytearray()
    boundary = False
    # the whole request within request_ms: a register that trickles bytes
    # (one a second) must not hold a client slot for max_request seconds
    due = deadline(to["request_ms"])
    while True:
        try:
            chunk = await read_by(r, 256, due, to["gap_ms"] if boundary else 0)
        except asyncio.TimeoutError:
            if not buf:
                log.event(name, "silent", peer, "closed after %d ms" % to["request_ms"])
                return None
            if not boundary:
                log.event(name, "slow", peer, "%d bytes in %d ms" % (len(buf), to["request_ms"]))
            return buf  # incomplete: Concert.request answers AF 09
        if not chunk:
            if buf:
                log.event(name, "gone", peer, "closed mid-request")
            return None
        buf += chunk
        if len(buf) > limit:
            log.event(name, "oversize", peer, "%d bytes" % len(buf))
            return buf  # whatever it is, it is malformed: AF 09
        end = tlv.strip_eol(buf, len(buf))
        try:
            boundary = end > 0 and tlv.scan(buf, end) == end
        except tlv.TLVError:
            return buf
        if boundary:
            try:
                if complete(tlv.decode(buf)):
                    return buf
            except tlv.TLVError:
                return buf


async def _watch(r, state):
    """Read until the register closes; state[0] becomes True then."""
    try:
        while await r.read(64):
            pass
    except Exception:
        pass
    state[0] = True


async def serve(app, name, s, peer):
    """One register's connection: one request, one answer."""
    concert = adapter(app, Concert)
    watcher = None
    try:
        msg = await _read_request(app, name, s, peer)
        if msg is None:
            return
        log.frame(name, "rx", peer, msg)
        gone = [False]
        # from here on, anything more the register sends is read and dropped,
        # and its closing is noticed (gone) whenever it happens
        watcher = asyncio.create_task(_watch(s, gone))
        co = concert.request(msg, name)
    except MemoryError as e:  # no room to read it, or to start it: nothing began
        if watcher is not None:
            watcher.cancel()
        gc.collect()
        try:  # busy echoing nothing, straight to the socket: that allocates nothing
            s.s.send(concert.refusal)  # (first: the line below may find no room)
            read_away(s)  # (a close on unread bytes is a reset that can beat it)
        except OSError:
            pass
        log.event(name, "busy", peer, "no room for the request:", e)
        return
    try:
        ans, t = await co
        if ans is None:
            app.term.withheld(t, name, peer)
            return
        ok = await _answer(app, s, ans, gone)
        log.frame(name, "tx", peer, ans)
        if not ok:
            log.event(name, "gone", peer, "closed before the answer")
        if t is not None:
            app.term.delivered(t, ok)
        if ok and not gone[0]:
            # the register closes once it has the answer; do not wait forever
            try:
                await asyncio.wait_for_ms(watcher, app.cfg["timeouts"]["request_ms"])
            except asyncio.TimeoutError:
                log.event(name, "linger", peer, "register kept the connection; closed")
            except MemoryError:  # no room to wait for its close: it has its answer
                pass
    finally:
        if not gone[0]:
            watcher.cancel()


async def _answer(app, s, ans, gone):
    """Write the answer in one piece (unless a fault is configured); True if
    it reached a register that was still there."""
    f = app.cfg["faults"]
    try:
        if f["answer_delay_ms"]:
            await asyncio.sleep_ms(f["answer_delay_ms"])
        half = len(ans) // 2 if f["split_answer_ms"] else 0
        if half:  # half the answer, a pause, the rest
            s.write(ans[:half])
            await s.drain()
            await asyncio.sleep_ms(f["split_answer_ms"])
        s.write(ans[half:] if half else ans)  # ans[0:] would copy it
        await s.drain()
        if gone[0]:  # it closed its side before the answer: half, or whole?
            await asyncio.sleep_ms(50)
            return not peer_reset(s)
        return True
    except OSError:
        return False
