"""P3 over TCP: each message is a 4-byte big-endian byte count, then UTF-8 JSON.

A connection carries any number of requests.  The first byte of a message
may take up to p3.idle_s; once it has come, the rest of the frame must
follow within timeouts.request_ms.  A count above p3.max_message is refused
before anything is read: an ERROR response, then the connection is closed.
"""
import asyncio

from firmware import adapter, log, p3_adapter
from wire import p3 as p3_codec


async def serve(app, name, s, peer):
    """One POS connection: framed messages until it closes or idles out."""
    p3 = adapter(app, p3_adapter.P3)
    conn = p3_adapter.Conn(app, name, peer, s, p3_codec.head)
    n = 0
    idle = app.cfg["p3"]["idle_s"]
    ms = app.cfg["timeouts"]["request_ms"]
    while conn.open:
        try:
            head = await asyncio.wait_for_ms(s.read(4), idle * 1000)
        except asyncio.TimeoutError:
            log.event(name, "idle", peer, "closed after %d s" % idle)
            break
        if not head:
            break
        try:
            if len(head) < 4:
                head += await asyncio.wait_for_ms(s.readexactly(4 - len(head)), ms)
            n = p3_codec.count(head, app.cfg["p3"]["max_message"])
            data = await p3_adapter.take(s, n, ms)
        except (asyncio.TimeoutError, EOFError) as e:
            p3_adapter.cut(name, peer, e, ms)
            break
        except p3_codec.P3Error as e:
            log.event(name, "oversize", peer, str(e))
            await conn.send(p3_codec.error("ERROR_RESPONSE", None, None, e))
            await p3_adapter.discard(s)  # so that closing does not reset the answer away
            break
        except MemoryError as e:  # allowed by p3.max_message, but no room now
            log.event(name, "out-of-memory", peer, "message of %d bytes; closed:" % n, e)
            break
        await p3.received(conn, data, n)
    conn.open = False
