"""A TCP listener that can be stopped and restarted on its own.

It owns what every TCP personality shares: binding, the allowed-IP list, a
cap on simultaneous clients, logging, and closing the socket whatever the
handler does.  The handler is the personality's `async serve(app, name,
stream, peer_ip)`, imported only when the first client connects
(App.serve_of): a terminal that nobody talks Synqpay to never loads Synqpay.

The accept loop is our own rather than asyncio.start_server's: that one dies
for good on a MemoryError, which would leave a terminal that accepts
connections nobody serves.  Ours refuses that one client and carries on.
"""
import asyncio
import gc
import select
import socket
import sys
import time

from asyncio import core  # type: ignore[attr-defined]  # MicroPython's loop internals

from micropython import const

from firmware import log, room


def peer_ip(addr):
    if isinstance(addr, tuple):  # boards: (ip, port)
        return addr[0]
    if addr and len(addr) >= 8 and addr[0] == 2:  # unix port: raw sockaddr_in
        return "%d.%d.%d.%d" % (addr[4], addr[5], addr[6], addr[7])
    return "?"


def peer_reset(st):
    """True if the peer has closed its socket completely (not just its sending
    half): after we wrote to it, the kernel reports HUP/ERR."""
    p = select.poll()
    p.register(st.s, select.POLLIN)
    for _, ev in p.poll(0):
        return bool(ev & (select.POLLHUP | select.POLLERR))
    return False


# Nagle's algorithm holds a small write back until the peer acknowledges the
# last one, and a register acknowledges late (40 ms on Linux, 200 ms on
# Windows) when it has nothing to say: a P3 update or a message written in
# pieces would wait that long.  Terminals answer at once.  (The constant is
# the port's own: lwIP's differs from Linux's 1.)
_NODELAY = getattr(socket, "TCP_NODELAY", 1)


_BACKLOG = const(8)  # queued connections: a burst of registers waits here, not for a SYN retry
# A connection that arrives while the heap is short waits in the backlog, up
# to this long, for the transactions being served to finish and give their
# heap back (a register waits as for a busy terminal); only then is it refused.
_ROOM_WAIT_MS = const(1000)
# what an HTTP client (the page, the control API, a P3 WebSocket handshake)
# hears when refused for want of heap: a constant, so saying it allocates nothing
HTTP_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
             b"Connection: close\r\n\r\n")
SINK = bytearray(64)  # what read_away() drops is read into this


def read_away(sock):
    """Drop what the peer has sent and nobody will read (up to 4 KB that
    has arrived; no wait, no allocation): a socket closed with unread bytes
    sends a reset, which can make the peer lose the answer written just
    before it.  sock: a non-blocking socket, or an asyncio stream's."""
    sock = getattr(sock, "s", sock)
    for _ in range(64):
        if not sock.readinto(SINK):
            break


def deadline(ms):
    return time.ticks_add(time.ticks_ms(), ms)


def read_by(s, n, due, cap=0):
    """Awaitable s.read(n), given up with asyncio.TimeoutError at ticks `due`
    (a whole request's deadline: a peer trickling one byte a second must not
    hold a client slot for long), or after `cap` ms if that comes first.
    A plain function, not a coroutine: no frame allocated per read."""
    ms = time.ticks_diff(due, time.ticks_ms())
    if cap and cap < ms:
        ms = cap
    if ms <= 0:
        raise asyncio.TimeoutError
    return asyncio.wait_for_ms(s.read(n), ms)


async def read_head(s, due, http, limit):
    """An HTTP request head by `due`: (head, the bytes after it), or (None,
    b"") if the peer left; http.HTTPError 431 past `limit` bytes.  `http` is
    wire.http, passed in by callers that import it for the occasion."""
    buf = b""
    while True:
        # 128 at a time: a read allocates its whole size first, and an API
        # request's head (~150 bytes) then needs no 513-byte block
        chunk = await read_by(s, min(128, limit + 1 - len(buf)), due)
        if not chunk:
            return None, b""
        buf += chunk
        end = http.head_end(buf)
        if end >= 0:
            return buf[:end], buf[end:]
        if len(buf) > limit:
            raise http.HTTPError(431, "Request Header Fields Too Large")


def close(st):
    """Close a stream's socket now: asyncio's Stream.close() does nothing,
    and awaiting wait_closed() needs a coroutine object, which a short heap
    may not have room for."""
    try:
        st.s.close()
    except Exception:
        pass


class TCPListener:
    kind = "tcp"

    def __init__(self, app, name, ssl=None):
        self.app = app
        self.name = name
        self.handler = None  # its personality's serve(), from the first client on
        self.ssl = ssl
        self.sock = None
        self.task = None
        self.clients = 0
        self.max_clients = 8
        # what a client refused for want of heap hears, when its protocol has
        # a constant busy answer (App.busy_of, with the handler; HTTP's 503)
        self.busy = None

    async def start(self, lc):
        host = lc["host"] or self.app.board.DEFAULT_HOST
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(socket.getaddrinfo(host, lc["port"])[0][-1])
            s.listen(_BACKLOG)  # (lwIP: a pointer per slot)
            s.setblocking(False)
        except OSError:
            s.close()
            raise
        self.sock = s
        self.max_clients = lc.get("max_clients", 8)
        self.task = asyncio.create_task(self._serve(s))
        shown = self.app.board.address() if host == "0.0.0.0" else host
        return ["%s %s %s:%d" % (self.name, self.kind, shown, lc["port"])]

    async def stop(self):
        if self.task is not None:
            self.task.cancel()
            self.task = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        await asyncio.sleep_ms(0)

    async def _serve(self, s):
        while True:
            yield core._io_queue.queue_read(s)
            # before any work: a client taken on now would starve those being served
            # (half the headroom: its transaction, if any, must find all of it)
            need = self.app.cfg["memory"]["headroom"] // 2
            waited = 0
            while waited < _ROOM_WAIT_MS and not room(need):
                await asyncio.sleep_ms(20)
                waited += 20
            s2 = raw = addr = None
            try:
                s2, addr = s.accept()
                raw = s2  # a TLS socket that failed does not close the one it wraps
                if waited >= _ROOM_WAIT_MS and not room(need):
                    raise MemoryError("heap short for %d ms" % waited)
                try:
                    s2.setsockopt(6, _NODELAY, 1)  # IPPROTO_TCP
                except (OSError, TypeError):  # a port without the option: Nagle stays
                    pass
                if self.ssl is not None:
                    s2 = self.ssl.wrap_socket(s2, server_side=True, do_handshake_on_connect=False)
                s2.setblocking(False)
                st = asyncio.StreamReader(s2, {"peername": addr})
                asyncio.create_task(self._client(st, peer_ip(addr), raw))
            except Exception as e:  # MemoryError, a failed TLS setup, a vanished peer...
                if isinstance(e, MemoryError) and raw is not None:
                    self._short(raw, peer_ip(addr), e)
                else:
                    log.event(self.name, "refused", peer_ip(addr), repr(e))
                for x in (s2, raw):  # whatever was made of this client goes
                    if x is not None:
                        x.close()
                s2 = raw = st = None
                gc.collect()

    def _short(self, raw, ip, e):
        """A client taken on but not served for want of heap (e): it hears
        its protocol's constant busy answer if there is one (a new socket's
        buffer is empty: this fits, or the peer is gone), and what it sent
        is read away, so the close is not a reset.  Logged as a refusal
        when it was answered, else as the MemoryError that closed it."""
        busy = HTTP_BUSY if self.kind in ("http", "ws") else self.busy
        try:
            raw.setblocking(False)
            if busy:
                raw.send(busy)
            read_away(raw)
        except Exception:
            pass
        gc.collect()
        log.event(self.name, "refused" if busy else "closed", ip, "busy: %s" % e if busy else repr(e))

    async def _client(self, st, ip, raw):
        allowed = self.app.cfg["allowed_ips"]
        if allowed and ip not in allowed:
            log.event(self.name, "refused", ip, "not in allowed_ips")
        elif self.clients >= self.max_clients:
            log.event(self.name, "refused", ip, "too many clients")
        else:
            self.clients += 1
            try:
                h = self.handler
                if h is None:
                    h = self.handler = self.app.serve_of(self.name)
                    self.busy = self.app.busy_of(self.name)
                try:
                    co = h(self.app, self.name, st, ip)
                except MemoryError as e:  # no room for its coroutine: nothing began, refused
                    co = None
                    self._short(raw, ip, e)
                if co is not None:
                    await co
            except OSError as e:  # the peer reset or vanished
                log.event(self.name, "closed", ip, repr(e))
            except MemoryError as e:  # a heap too small for this client now: it is dropped,
                h = None  # what was decided is in the journal (the register may ask)
                gc.collect()
                log.event(self.name, "closed", ip, repr(e))
            except Exception as e:  # a bug: say so loudly
                log.event(self.name, "error", ip, repr(e))
                try:
                    sys.print_exception(e)
                except MemoryError:
                    pass
            finally:
                self.clients -= 1
        close(st)
        raw.close()
        # a finished task can outlive its end (asyncio's queue may keep a
        # pointer to it, docs/MEMORY.md): it holds nothing of this client
        co = h = st = raw = None


class TLSListener(TCPListener):
    """The same over TLS, with the certificate and key (DER) of the board's
    TLS_DIR.  A missing or unreadable certificate fails this listener only."""

    kind = "tls"

    async def start(self, lc):
        d = self.app.board.TLS_DIR
        try:
            import ssl

            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(d + "/cert.der", d + "/key.der")
        except (ValueError, MemoryError) as e:  # not DER (all MicroPython reads), or no room
            raise OSError("TLS %s/cert.der, key.der: %r" % (d, e))
        self.ssl = ctx
        return await TCPListener.start(self, lc)
