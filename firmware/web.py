"""The web page and the HTTP control API (docs/CONTROL.md): one request per
connection (HTTP/1.1, `Connection: close`), on the terminal's own loop.

serve() is the transport: it reads and checks one request from the socket
and hands it, decoded, to the adapter's request() (class Web, the app's one
instance: firmware.adapter(app, Web)), which answers it.  Bounded: the head
must come within timeouts.request_ms and be at most 2 KB (else 431), a body
at most web.max_body (else 413); every write waits at most _WRITE_MS for the
client.  State-changing calls need `Authorization: Bearer <web.token>` (no
token set: only a loopback client may); reads are open unless
web.open_reads is false.  Imported when the first client connects; the
rarer calls live in firmware/web_admin.py, imported per request and given
the adapter; the live trace it shows is kept by firmware/trace.py.
"""
import asyncio
import json
import os
import select
import sys
import time

from micropython import const

from firmware import adapter, drained, drop, loaded, log, receipt, room, tcp
from wire import http

_MAX_HEAD = const(2048)
_WRITE_MS = const(5000)
_CHUNK = const(512)  # bytes: the page's writes
_PIECE = const(128)  # bytes: a JSON answer's writes (a short heap has more small holes)
_WINDOW = const(10)  # log2 of the page's deflate window (tools/understudy/build.py)
# answers when the heap is short, made once so that sending them needs no room:
# nothing was done (try again), or the change was made but its answer has no room
_SHORT = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n"
          b"Content-Length: 39\r\nConnection: close\r\n\r\nout of memory: nothing done; try again\n")
_DONE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
         b"Content-Length: 61\r\nConnection: close\r\n\r\n"
         b'{"ok": true, "note": "done; no room for the full answer now"}')
_PAGE = ("www/index.html.gz", "www/index.html")
_RESULT = {"approved": "APPROVED", "declined": "DECLINED", "cancelled": "CANCELLED",
           "timeout": "TIME-OUT", "error": "NOT COMPLETED"}
_SCREEN = {"wait_card": "PRESENT CARD", "card_read": "CARD READ", "wait_continue": "PLEASE WAIT",
           "pin": "ENTER PIN", "auth": "AUTHORISING...", "signature": "SIGNATURE?",
           "confirm": "DUPLICATE? OK/STOP"}
_PROFILES = ("chip", "contactless", "magstripe")


class Answer(Exception):
    """Stop here and answer status with a text body (web_admin raises it as
    web.Answer: it never imports this module)."""

    def __init__(self, status, reason, text=""):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.text = text


async def serve(app, name, s, ip):
    """The web listener's transport (App.serve_of): one request read from
    stream s of client ip, checked (route, length, token, room), answered by
    the adapter's request(); its log line; the heap-short answers."""
    web = adapter(app, Web)
    app.trace.record()  # somebody watches: the trace records from now on
    app.web_seen = time.ticks_ms()  # (until web.idle_s after the last request: app._rest_web)
    ms = app.cfg["timeouts"]["request_ms"]
    method = path = "-"
    stage = 0  # 1: a write was made; 2: its answer's head went out (no other status now)
    due = tcp.deadline(ms)  # the whole request, head and body, within request_ms
    try:
        head, early = await tcp.read_head(s, due, http, _MAX_HEAD)
        if head is None:
            return
        method, target, _, headers = http.parse_head(head)
        path, q = _query(target)
        call = _route(method, path)[1]
        write = method != "GET"
        body = None
        if write:
            body = await _read_body(s, headers, early, app.cfg["web"]["max_body"], due)
        private = write or not (app.cfg["web"]["open_reads"] or call is Web.page)  # the page holds no data
        if private and not _authorized(app, headers, ip, q):
            log.event(name, "refused", ip, method, path, "401 wrong or missing token")
            raise http.HTTPError(401, "Unauthorized", (("WWW-Authenticate", "Bearer"),))
        if body is not None:
            try:
                body = json.loads(body) if body.strip() else {}
            except ValueError:
                raise Answer(400, "Bad Request", "the body is not JSON")
            if not isinstance(body, dict):
                raise Answer(400, "Bad Request", "the body must be a JSON object")
        if write and not room(app.cfg["memory"]["headroom"]):  # refused before it changes anything
            raise MemoryError
        out = await web.request(s, method, path, q, headers, body)
        stage = 1 if write else 0  # from here on a MemoryError must not say "nothing done"
        if write:  # whatever it changed (queue, mode, delay, config...), open pages hear of it
            app.trace.kick()
        if out is not None:
            stage = 2
            await web.json(s, out)
        if write:
            log.event(name, method.lower(), ip, path, "ok")
    except asyncio.TimeoutError:
        log.event(name, "silent", ip, "no request within %d ms" % ms)
    except http.HTTPError as e:
        await web.error(name, s, ip, method, path, e.status, e.reason, e.headers, e.reason)
    except Answer as e:
        await web.error(name, s, ip, method, path, e.status, e.reason, (), e.text)
    except MemoryError as e:
        if stage == 2:  # the client sees the answer cut short (not JSON): it asks again
            log.event(name, "out-of-memory", ip, method, path, "200 cut short:", e)
            return
        log.event(name, "out-of-memory", ip, method, path, "200 (done)" if stage else "503", e)
        try:
            await web.write(s, _DONE if stage else _SHORT)
            tcp.read_away(s)  # a request not read to its end: no reset over the answer
        except Exception:  # the client went away
            pass
    app.web_seen = time.ticks_ms()  # an event stream may have lasted hours


async def _read_body(s, headers, early, limit, due):
    if "transfer-encoding" in headers:
        raise http.HTTPError(411, "Length Required")
    try:
        n = int(headers.get("content-length") or "0")
    except ValueError:
        raise http.HTTPError(400, "Bad Request")
    if n < 0:
        raise http.HTTPError(400, "Bad Request")
    if n > limit:
        raise http.HTTPError(413, "Content Too Large")
    body = early[:n]
    while len(body) < n:
        chunk = await tcp.read_by(s, n - len(body), due)
        if not chunk:
            raise http.HTTPError(400, "Bad Request")
        body += chunk
    return body


def _query(target):
    q = {}  # type: dict
    i = target.find("?")
    if i < 0:
        return target, q
    for part in target[i + 1:].split("&"):
        k, _, v = part.partition("=")
        q[k] = v
    return target[:i], q


def _route(method, path):
    """(methods, call) of path from _ROUTES; http.HTTPError 404 or 405."""
    route = _ROUTES.get(path)
    if route is None:
        raise http.HTTPError(404, "Not Found")
    if method not in route[0].split():
        raise http.HTTPError(405, "Method Not Allowed", (("Allow", route[0].replace(" ", ", ")),))
    return route


def _authorized(app, headers, ip, q):
    tok = app.cfg["web"]["token"]
    if not tok:
        return ip == "127.0.0.1"
    got = headers.get("authorization", "")
    return got == "Bearer " + tok or q.get("token") == tok


def _readable(s):
    """The client sent something, or closed: an event stream is then over."""
    p = select.poll()
    p.register(s.s, select.POLLIN)
    return bool(p.poll(0))


async def _admin(web, s, method, path, q, headers, body):
    """A call of web_admin.CALLS, its code loaded for this request only."""
    had = loaded("firmware.web_admin")
    from firmware import web_admin

    try:
        return await web_admin.CALLS[path](web, s, method, q, headers, body)
    finally:
        del web_admin
        drop("firmware.web_admin", had)


def _pieces(v):
    """The JSON of v as short strings, however deep: a dict or a list a key
    or an item at a time (json.dumps of a whole section would be one block
    of its size, and its encoding another)."""
    if isinstance(v, dict):
        sep = "{"
        for k in v:
            yield sep + json.dumps(k) + ": "
            yield from _pieces(v[k])
            sep = ", "
        yield "}" if sep == ", " else "{}"
    elif isinstance(v, (list, tuple)):
        sep = "["
        for x in v:
            yield sep
            yield from _pieces(x)
            sep = ", "
        yield "]" if sep == ", " else "[]"
    else:
        yield json.dumps(v)


class Web:
    """The web face of an app, made at its first request: its state, and
    request(), which answers one decoded request.  The calls of _ROUTES are
    its methods, all called alike: (s, method, q, headers, body); a
    web_admin call receives the adapter and reaches what it needs here."""

    Answer = Answer  # what a call raises to give an error answer
    # the head of a JSON answer, which the end of the connection ends
    JSON_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
                 b"Connection: close\r\n\r\n")

    def __init__(self, app):
        self.app = app
        self.streams = 0  # event-stream clients now (at most web.events)
        self.cleared = 0  # number of the last transaction whose result the cardholder dismissed
        self.config_cost = 0  # bytes the config module's last import took (web_admin)

    def request(self, s, method, path, q, headers, body):
        """Answer one request: path and its query q (a dict), headers (names
        in lower case), body (a dict for a write, None for a read; the
        caller checked the token and the room).  s is where the answer goes
        (write() and drain(): the client's stream).  To be awaited: gives
        the answer as JSON-able data for json(), or None when the call
        wrote its own answer to s (the page, the journal, an event stream);
        raises Answer or http.HTTPError for an error answer, 404 and 405
        included.  (The call's own coroutine is returned: no frame of
        request() stays in RAM while an event stream lasts.)"""
        call = _route(method, path)[1]
        if call is not None:
            return call(self, s, method, q, headers, body)
        return _admin(self, s, method, path, q, headers, body)

    # ---- writing answers ---------------------------------------------------

    async def write(self, s, data):
        s.write(data)
        await drained(s, _WRITE_MS)

    async def json(self, s, obj):
        """A 200 answer that ends when the connection closes, written in
        writes of about _PIECE bytes made of short pieces (_pieces): a long
        one (the config, the state) never needs a block of its size, which
        a busy heap may not have."""
        await self.write(s, self.JSON_HEAD)
        buf = bytearray()
        for piece in _pieces(obj):
            buf += piece
            if len(buf) >= _PIECE:
                await self.write(s, buf)
                buf = bytearray()
        await self.write(s, buf)

    async def error(self, name, s, ip, method, path, status, reason, headers, text):
        if status not in (401,):
            log.event(name, "answered", ip, method, path, status)
        if status == 503:  # a passing state: say when to come back
            headers = tuple(headers) + (("Retry-After", "1"),)
        try:
            await self.write(s, http.response(status, reason, headers, (text + "\n").encode()))
        except Exception:  # the client went away
            pass

    # ---- what the page shows -----------------------------------------------

    def number(self, v, default):
        """v (a query value, a header) as an int; default if it is none."""
        try:
            return int(v)
        except (TypeError, ValueError):
            return default

    def txn_fields(self, t):
        """Transaction t as the control API shows it."""
        ref = t.ref
        return {"no": t.no, "batch": t.batch, "ts": t.ts, "op": t.op, "amount": t.amount, "cur": t.cur,
                "src": t.src, "ref": ref if ref is None or isinstance(ref, (str, int)) else str(ref),
                "orig": t.orig, "state": t.state,
                "outcome": t.outcome, "result": t.result, "reason": t.reason, "auth": t.auth,
                "card": " ".join([x for x in (t.brand, t.mode, t.pan) if x]) or None,
                "delivered": t.delivered, "voided": t.voided}

    def screen(self):
        """The cardholder's screen: two lines."""
        sq = sys.modules.get("firmware.synqpay")  # never loaded here: only read if in use
        dev = sq and self.app.adapters.get(sq.Synqpay)  # its adapter, once a client came
        if dev is not None and dev.pairing():  # a Synqpay device shows its pairing code
            return ["SYNQPAY PAIRING", "CODE " + dev.pairing_code[0]]
        term = self.app.term
        t = term.current
        if t is not None:
            top = receipt.money(t.amount, t.cur)  # the receipts' table: 1250 XPF is not 12.50
            if t.op != "pay":
                top = t.op.upper() + " " + top
            if term.note:  # wrong PIN, insert card, swipe card, possible duplicate
                return [top, term.note.upper()]
            return [top, _SCREEN.get(t.state, "PLEASE WAIT")]
        last = term.journal.last()
        if last is None or last.no == self.cleared or last.result is None:
            return ["WELCOME", "REMOVE CARD" if term.card_in else ""]
        return [_RESULT.get(last.result, last.result),
                "REMOVE CARD" if term.card_in else receipt.money(last.amount, last.cur)]

    def status(self):
        """The terminal as GET /api/state shows it."""
        term = self.app.term
        t = term.current or term.journal.last()
        tr = self.app.trace
        return {"busy": term.current is not None, "state": term.current.state if term.current else "idle",
                "screen": self.screen(), "txn": self.txn_fields(t) if t else None,
                "mode": "interactive" if term.interactive else "auto", "queue": term.queue,
                "auth_ms": term.auth_ms, "card_in": term.card_in,
                "next": term.journal.next_no, "seq": tr.seq if tr else 0}

    def dismiss(self):
        """The cardholder saw the last result: the screen says WELCOME again."""
        last = self.app.term.journal.last()
        self.cleared = last.no if last else 0

    # ---- reads -------------------------------------------------------------

    async def state(self, s, method, q, headers, body):
        return self.status()

    async def trace(self, s, method, q, headers, body):
        tr = self.app.trace
        return {"seq": tr.seq, "lines": tr.since(self.number(q.get("since"), 0))}

    async def page(self, s, method, q, headers, body):
        for path in _PAGE:
            try:
                size = os.stat(path)[6]
                f = open(path, "rb")  # noqa: ASYNC230  (flash: no async file I/O in MicroPython)
            except OSError:
                continue
            src = f
            try:
                enc = "Content-Encoding: gzip\r\n" if path.endswith(".gz") else ""
                head = "Content-Length: %d\r\n" % size
                if enc and "gzip" not in headers.get("accept-encoding", ""):
                    # a client without gzip (plain curl): the page read as text (the
                    # build compresses it with a 1 KB window: about 2.4 KB of RAM while
                    # it is sent), its length unknown: the end of the connection ends it
                    try:
                        import deflate

                        src = deflate.DeflateIO(f, deflate.GZIP, _WINDOW)
                        enc = head = ""
                    except ImportError:  # a port without deflate: the page as it is
                        pass
                await self.write(s, ("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n%s%s"
                                     "Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
                                     % (enc, head)).encode())
                buf = bytearray(_CHUNK)
                mv = memoryview(buf)
                while True:
                    n = src.readinto(buf)
                    if not n:
                        break
                    await self.write(s, bytes(mv[:n]))
            finally:
                f.close()
            return None
        raise Answer(404, "Not Found", "the page is not on this board's flash (www/index.html.gz)")

    async def events(self, s, method, q, headers, body):
        """Server-sent events: the state and the new trace lines at each
        change (at most every 100 ms), a comment line every 15 s otherwise;
        a client that closes (or sends anything) ends its stream within 2 s."""
        if self.streams >= self.app.cfg["web"]["events"]:
            raise Answer(503, "Service Unavailable", "too many event streams (web.events)")
        self.streams += 1
        tr = self.app.trace
        try:
            await self.write(s, b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             b"Cache-Control: no-store\r\nConnection: close\r\n\r\nretry: 2000\n\n")
            cursor = self.number(headers.get("last-event-id") or q.get("since"), 0)
            while True:
                lines = tr.since(cursor)  # (seq, line) pairs: the lines themselves are not copied
                cursor = tr.seq
                news = tr.news
                # written in pieces, never as one JSON text: with the ring full an
                # event is ~5 KB, three copies of which (text, bytes, framed) a
                # small fragmented heap may not have room for
                head = 'id: %d\ndata: {"state": %s, "trace": [' % (cursor, json.dumps(self.status()))
                await self.write(s, head.encode())
                head = ""
                sep = ""
                while lines:
                    n, line = lines.pop(0)
                    await self.write(s, ("%s[%d, %s]" % (sep, n, json.dumps(line))).encode())
                    sep = ", "
                await self.write(s, b"]}\n\n")
                quiet = 0
                while tr.news == news and not _readable(s):
                    await tr.wait(2000)
                    quiet += 1
                    if quiet % 8 == 0:
                        await self.write(s, b": still here\n\n")
                if _readable(s):
                    break
                await asyncio.sleep_ms(100)
        except (OSError, asyncio.TimeoutError):  # the client went away, or stopped reading
            pass
        finally:
            self.streams -= 1

    # ---- the cardholder ------------------------------------------------------

    async def card(self, s, method, q, headers, body):
        profile = body.get("profile", "chip")
        brand = body.get("brand") or None
        if profile not in _PROFILES or not (brand is None or (isinstance(brand, str) and len(brand) <= 16)):
            raise Answer(400, "Bad Request", "profile: chip, contactless or magstripe; brand: text")
        return self._act("card", {"profile": profile, "brand": brand}, "no card is awaited")

    async def pin(self, s, method, q, headers, body):
        if "pin" in body:
            ok = body["pin"] == self.app.cfg["card"]["pin"]
        else:
            ok = bool(body.get("ok", True))
        return self._act("pin", {"ok": ok}, "no PIN is awaited")

    async def confirm(self, s, method, q, headers, body):
        term = self.app.term
        if not term.act("confirm"):
            if term.current is not None:
                raise Answer(409, "Conflict", "nothing to confirm now")
            self.dismiss()
        return self.status()

    async def cancel(self, s, method, q, headers, body):
        return self._act("cancel", None, "nothing to cancel")

    def _act(self, what, data, why):
        """The cardholder's act on the terminal and the new state; 409 (why)
        when the terminal waits for no such act."""
        if not self.app.term.act(what, data):
            raise Answer(409, "Conflict", why)
        return self.status()

    async def remove(self, s, method, q, headers, body):
        term = self.app.term
        t = term.current  # a card pulled out before the end cancels it
        term.act("cancel" if t is None or t.state == "wait_card" else "removed")
        term.card_in = False
        if term.current is None:
            self.dismiss()
        return self.status()


# path -> (methods, call): GET is a read, anything else changes state.  The
# call is a Web method, or None for the rarer calls, in web_admin.CALLS.
_ROUTES = {
    "/": ("GET", Web.page),
    "/index.html": ("GET", Web.page),
    "/api/state": ("GET", Web.state),
    "/api/transactions": ("GET", None),
    "/api/last": ("GET", None),
    "/api/trace": ("GET", Web.trace),
    "/api/events": ("GET", Web.events),
    "/api/receipt": ("GET", None),
    "/api/queue": ("GET POST DELETE", None),
    "/api/config": ("GET PUT", None),
    "/api/card": ("POST", Web.card),
    "/api/pin": ("POST", Web.pin),
    "/api/confirm": ("POST", Web.confirm),
    "/api/cancel": ("POST", Web.cancel),
    "/api/remove": ("POST", Web.remove),
    "/api/delay": ("POST", None),
    "/api/mode": ("POST", None),
    "/api/reset": ("POST", None),
}
