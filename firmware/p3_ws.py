"""P3 over WebSocket (RFC 6455): one JSON message per text message.

The opening handshake must arrive within timeouts.request_ms and be at most
2 KB.  Frames may be fragmented; pings are answered; a close is echoed.  A
message above p3.max_message (1009), a binary message (1003), invalid UTF-8
(1007) or any protocol violation (1002) closes the connection with that
code.  Like TCP: p3.idle_s for the first byte of a frame, then
timeouts.request_ms for the rest of it.
"""
import asyncio

from firmware import adapter, drop, loaded, log, p3_adapter, tcp, when_room
from wire import ws


async def _handshake(app, name, s, peer):
    """Bytes that followed the handshake, or None if it failed."""
    ms = app.cfg["timeouts"]["request_ms"]
    had = loaded("wire.http")
    from wire import http  # only needed while a connection opens

    try:
        # the whole handshake, at most 2 KB (a browser's is about 500 bytes)
        head, early = await tcp.read_head(s, tcp.deadline(ms), http, 2048)
        if head is None:
            return None
        method, target, version, headers = http.parse_head(head)
        ans = ws.handshake(method, target, version, headers, app.cfg["listeners"][name]["path"])
    except asyncio.TimeoutError:
        log.event(name, "silent", peer, "no handshake within %d ms" % ms)
        return None
    except MemoryError:  # refused as any HTTP server short of room refuses
        s.write(tcp.HTTP_BUSY)
        tcp.read_away(s)  # the rest of its head: a close over unread bytes resets
        log.event(name, "refused", peer, "busy: no room for the handshake")
        return None
    except http.HTTPError as e:
        log.event(name, "refused", peer, e.status, e.reason)
        text = "P3 WebSocket endpoint: %s\n" % e.reason
        s.write(http.response(e.status, e.reason, e.headers, text.encode()))
        await s.drain()
        return None
    finally:
        drop("wire.http", had)
    s.write(ans)
    await s.drain()
    log.event(name, "open", peer, target)
    return early


async def _unmask(data, mask):
    """ws.unmask(data, mask), 64 bytes at a time: a piece that finds no
    room (each allocates about three times its size) is done again after
    a collection and a pause (the frame is read: a MemoryError now would
    lose it)."""
    for i in range(0, len(data), 64):
        try:
            ws.unmask_piece(data, mask, i)
        except MemoryError:
            await when_room(ws.unmask_piece, data, mask, i)
    return data


async def serve(app, name, s, peer):
    """One POS WebSocket: the handshake, then text messages until it closes."""
    early = await _handshake(app, name, s, peer)
    if early is None:
        return
    p3 = adapter(app, p3_adapter.P3)
    conn = p3_adapter.Conn(app, name, peer, s, lambda n: ws.head(ws.TEXT, n))

    async def take(n, ms):  # exact reads, first from what came with the handshake
        nonlocal early
        got = await p3_adapter.take(s, n, ms, early)
        early = early[n:]
        return got

    limit = app.cfg["p3"]["max_message"]
    idle = app.cfg["p3"]["idle_s"]
    ms = app.cfg["timeouts"]["request_ms"]
    msg = ws.Message(limit)
    code = reason = None
    while conn.open:
        try:
            h = await take(1, idle * 1000)
        except asyncio.TimeoutError:
            code, reason = ws.GOING_AWAY, "idle"
            break
        except EOFError:
            break
        try:
            h += await take(1, ms)
            h += await take(ws.more_head(h), ms)
            fin, op, n, mask = ws.parse_head(h, limit)
            data = await _unmask(await take(n, ms), mask)
            if len(data) < n:  # read away for want of room, its start kept (take)
                if not fin or op != ws.TEXT:
                    raise MemoryError
                await p3.received(conn, data, n)  # busy, under its tag
            elif op == ws.PING:
                await conn.write(ws.frame(ws.PONG, data))
            elif op == ws.CLOSE:
                code = ws.parse_close(data)[0] or ws.NORMAL  # echoed
                reason = ""
                break
            elif op != ws.PONG:
                whole = msg.feed(fin, op, data)
                if whole is not None:
                    if whole[0] == ws.BINARY:
                        raise ws.WSError(ws.UNSUPPORTED, "binary messages are not P3")
                    try:  # only if not plain ASCII: a copy costs RAM
                        if whole[1] and max(whole[1]) > 127:
                            str(whole[1], "utf-8")
                    except UnicodeError:
                        raise ws.WSError(ws.BAD_DATA, "text message is not UTF-8")
                    await p3.received(conn, whole[1])
        except (asyncio.TimeoutError, EOFError) as e:
            p3_adapter.cut(name, peer, e, ms)
            break
        except ws.WSError as e:
            code, reason = e.code, str(e)
            log.event(name, "protocol-error", peer, code, reason)
            break
        except MemoryError as e:  # allowed by p3.max_message, but no room now
            code, reason = ws.TOO_BIG, "no room for this message now"
            log.event(name, "out-of-memory", peer, reason, e)
            break
    if code and conn.open:
        await conn.write(ws.close_frame(code, reason))
        await p3_adapter.discard(s)  # the peer's close, or what it sent after the fault
    conn.open = False
