"""The web page and the HTTP control API (docs/CONTROL.md): one request per
connection (HTTP/1.1, `Connection: close`), on the terminal's own loop.

Bounded: the head must come within timeouts.request_ms and be at most 2 KB
(else 431), a body at most web.max_body (else 413); every write waits at
most _WRITE_MS for the client.  State-changing calls need `Authorization:
Bearer <web.token>` (no token set: only a loopback client may); reads are
open unless web.open_reads is false.  Imported when the first client
connects (its rarer calls live in firmware/web_admin.py, imported per
request); the live trace it shows is kept by firmware/trace.py.
"""
import asyncio
import json
import os
import select
import sys
import time

from firmware import drop, loaded, log, receipt, room, tcp
from wire import http

_MAX_HEAD = 2048
_WRITE_MS = 5000
# answers when the heap is short, made once so that sending them needs no room:
# nothing was done (try again), or the change was made but its answer has no room
_SHORT = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n"
          b"Content-Length: 39\r\nConnection: close\r\n\r\nout of memory: nothing done; try again\n")
_DONE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
         b"Content-Length: 61\r\nConnection: close\r\n\r\n"
         b'{"ok": true, "note": "done; no room for the full answer now"}')
_CHUNK = 512
_WINDOW = 10  # log2 of the page's deflate window (tools/understudy/build.py)
_PAGE = ("www/index.html.gz", "www/index.html")
_RESULT = {"approved": "APPROVED", "declined": "DECLINED", "cancelled": "CANCELLED",
           "timeout": "TIME-OUT", "error": "NOT COMPLETED"}
_SCREEN = {"wait_card": "PRESENT CARD", "card_read": "CARD READ", "wait_continue": "PLEASE WAIT",
           "pin": "ENTER PIN", "auth": "AUTHORISING...", "signature": "SIGNATURE?",
           "confirm": "DUPLICATE? OK/STOP"}
_PROFILES = ("chip", "contactless", "magstripe")
# path -> (methods, handler name); GET is a read, anything else changes state.
# Handlers are _<name> here, or in firmware/web_admin.py for the names in _ADMIN.
_ADMIN = ("transactions", "last", "receipt", "queue", "config", "delay", "mode", "reset")
_ROUTES = {
    "/": ("GET", "page"),
    "/index.html": ("GET", "page"),
    "/api/state": ("GET", "state"),
    "/api/transactions": ("GET", "transactions"),
    "/api/last": ("GET", "last"),
    "/api/trace": ("GET", "trace"),
    "/api/events": ("GET", "events"),
    "/api/receipt": ("GET", "receipt"),
    "/api/queue": ("GET POST DELETE", "queue"),
    "/api/config": ("GET PUT", "config"),
    "/api/card": ("POST", "card"),
    "/api/pin": ("POST", "pin"),
    "/api/confirm": ("POST", "confirm"),
    "/api/cancel": ("POST", "cancel"),
    "/api/remove": ("POST", "remove"),
    "/api/delay": ("POST", "delay"),
    "/api/mode": ("POST", "mode"),
    "/api/reset": ("POST", "reset"),
}
_sse = 0  # event-stream clients now
_cleared = 0  # number of the last transaction whose result the cardholder dismissed


class _Answer(Exception):
    """Stop here and answer status with a text body."""

    def __init__(self, status, reason, text=""):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.text = text


async def _write(s, data):
    s.write(data)
    await asyncio.wait_for_ms(s.drain(), _WRITE_MS)


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


def _int(v, default):
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def _authorized(app, headers, ip, q):
    tok = app.cfg["web"]["token"]
    if not tok:
        return ip == "127.0.0.1"
    got = headers.get("authorization", "")
    return got == "Bearer " + tok or q.get("token") == tok


async def serve(app, name, s, ip):
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
        route = _ROUTES.get(path)
        if route is None:
            raise http.HTTPError(404, "Not Found")
        if method not in route[0].split():
            raise http.HTTPError(405, "Method Not Allowed", (("Allow", route[0].replace(" ", ", ")),))
        write = method != "GET"
        body = None
        if write:
            body = await _read_body(s, headers, early, app.cfg["web"]["max_body"], due)
        private = write or not (app.cfg["web"]["open_reads"] or route[1] == "page")  # the page holds no data
        if private and not _authorized(app, headers, ip, q):
            log.event(name, "refused", ip, method, path, "401 wrong or missing token")
            raise http.HTTPError(401, "Unauthorized", (("WWW-Authenticate", "Bearer"),))
        if body is not None:
            try:
                body = json.loads(body) if body.strip() else {}
            except ValueError:
                raise _Answer(400, "Bad Request", "the body is not JSON")
            if not isinstance(body, dict):
                raise _Answer(400, "Bad Request", "the body must be a JSON object")
        if write and not room(app.cfg["memory"]["headroom"]):  # refused before it changes anything
            raise MemoryError
        what = route[1]
        if what in _ADMIN:  # imported for this request only
            had = loaded("firmware.web_admin")
            from firmware import web_admin

            try:
                out = await getattr(web_admin, "_" + what)(app, name, s, method, q, body, headers)
            finally:
                del web_admin
                drop("firmware.web_admin", had)
        else:
            out = await globals()["_" + what](app, name, s, method, q, body, headers)
        stage = 1 if write else 0  # from here on a MemoryError must not say "nothing done"
        if write:  # whatever it changed (queue, mode, delay, config...), open pages hear of it
            app.trace.kick()
        if out is not None:
            stage = 2
            await _json(s, 200, out)
        if write:
            log.event(name, method.lower(), ip, path, "ok")
    except asyncio.TimeoutError:
        log.event(name, "silent", ip, "no request within %d ms" % ms)
    except http.HTTPError as e:
        await _error(app, name, s, ip, method, path, e.status, e.reason, e.headers, e.reason)
    except _Answer as e:
        await _error(app, name, s, ip, method, path, e.status, e.reason, (), e.text)
    except MemoryError:
        if stage == 2:  # the client sees the answer cut short (not JSON): it asks again
            log.event(name, "out-of-memory", ip, method, path, "200 cut short")
            return
        log.event(name, "out-of-memory", ip, method, path, "200 (done)" if stage else "503")
        try:
            await _write(s, _DONE if stage else _SHORT)
        except Exception:  # the client went away
            pass
    app.web_seen = time.ticks_ms()  # an event stream may have lasted hours


async def _error(app, name, s, ip, method, path, status, reason, headers, text):
    if status not in (401,):
        log.event(name, "answered", ip, method, path, status)
    if status == 503:  # a passing state: say when to come back
        headers = tuple(headers) + (("Retry-After", "1"),)
    try:
        await _write(s, http.response(status, reason, headers, (text + "\n").encode()))
    except Exception:  # the client went away
        pass


async def _json(s, status, obj):
    """The answer ends when the connection closes, written a top-level key
    or list item at a time: a long one (the config, the journal) never
    needs a block of its whole size, which a busy heap may not have."""
    await _write(s, b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
                 b"Connection: close\r\n\r\n" % status)
    if isinstance(obj, dict):
        sep = "{"
        for k, v in obj.items():
            await _write(s, (sep + json.dumps(k) + ": ").encode())
            await _write(s, json.dumps(v).encode())
            sep = ", "
        await _write(s, b"}" if sep == ", " else b"{}")
    elif isinstance(obj, list):
        sep = "["
        for v in obj:
            await _write(s, (sep + json.dumps(v)).encode())
            sep = ", "
        await _write(s, b"]" if sep == ", " else b"[]")
    else:
        await _write(s, json.dumps(obj).encode())


# ---- reads -------------------------------------------------------------


def _plain(v):
    return v if v is None or isinstance(v, (str, int, bool)) else str(v)


def _txn(t):
    return {"no": t.no, "batch": t.batch, "ts": t.ts, "op": t.op, "amount": t.amount, "cur": t.cur,
            "src": t.src, "ref": _plain(t.ref), "orig": t.orig, "state": t.state, "outcome": t.outcome,
            "result": t.result, "reason": t.reason, "auth": t.auth,
            "card": " ".join([x for x in (t.brand, t.mode, t.pan) if x]) or None,
            "delivered": t.delivered, "voided": t.voided}


def _money(t):
    return receipt.money(t.amount, t.cur)  # the receipts' own table: 1250 XPF is not 12.50


def screen(app):
    """The cardholder's screen: two lines."""
    sq = sys.modules.get("firmware.synqpay")  # never loaded here: only read if in use
    dev = sq and app.adapters.get(sq.Synqpay)  # its adapter, once a client came
    if dev is not None and dev.pairing():  # a Synqpay device shows its pairing code
        return ["SYNQPAY PAIRING", "CODE " + dev.pairing_code[0]]
    term = app.term
    t = term.current
    if t is not None:
        top = _money(t) if t.op == "pay" else "%s %s" % (t.op.upper(), _money(t))
        if term.note:  # wrong PIN, insert card, swipe card, possible duplicate
            return [top, term.note.upper()]
        return [top, _SCREEN.get(t.state, "PLEASE WAIT")]
    last = term.journal.last()
    if last is None or last.no == _cleared or last.result is None:
        return ["WELCOME", "REMOVE CARD" if term.card_in else ""]
    return [_RESULT.get(last.result, last.result), "REMOVE CARD" if term.card_in else _money(last)]


def _status(app):
    term = app.term
    t = term.current or term.journal.last()
    tr = app.trace
    return {"busy": term.current is not None, "state": term.current.state if term.current else "idle",
            "screen": screen(app), "txn": _txn(t) if t else None, "mode": term.mode,
            "queue": term.queue, "auth_ms": term.auth_ms, "card_in": term.card_in,
            "next": term.journal.next_no, "seq": tr.seq if tr else 0}


async def _state(app, name, s, method, q, body, headers):
    return _status(app)


async def _trace(app, name, s, method, q, body, headers):
    tr = app.trace
    return {"seq": tr.seq, "lines": tr.since(_int(q.get("since"), 0))}


async def _page(app, name, s, method, q, body, headers):
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
                src = _inflate(f)  # a client without gzip (plain curl): the page as text
                if src is not f:  # its length unknown: the end of the connection ends it
                    enc = head = ""
            await _write(s, ("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n%s%s"
                             "Cache-Control: no-cache\r\nConnection: close\r\n\r\n"
                             % (enc, head)).encode())
            buf = bytearray(_CHUNK)
            mv = memoryview(buf)
            while True:
                n = src.readinto(buf)
                if not n:
                    break
                await _write(s, bytes(mv[:n]))
        finally:
            f.close()
        return None
    raise _Answer(404, "Not Found", "the page is not on this board's flash (www/index.html.gz)")


def _inflate(f):
    """The gzipped page read as text (the build compresses it with a 1 KB
    window: about 2.4 KB of RAM while it is sent); f itself where the port
    has no deflate module."""
    try:
        import deflate
    except ImportError:
        return f
    return deflate.DeflateIO(f, deflate.GZIP, _WINDOW)


async def _events(app, name, s, method, q, body, headers):
    """Server-sent events: the state and the new trace lines at each change
    (at most every 100 ms), a comment line every 15 s otherwise; a client
    that closes (or sends anything) ends its stream within 2 s."""
    global _sse
    if _sse >= app.cfg["web"]["events"]:
        raise _Answer(503, "Service Unavailable", "too many event streams (web.events)")
    _sse += 1
    tr = app.trace
    try:
        await _write(s, b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
                     b"Connection: close\r\n\r\nretry: 2000\n\n")
        cursor = _int(headers.get("last-event-id") or q.get("since"), 0)
        while True:
            lines = tr.since(cursor)  # (seq, line) pairs: the lines themselves are not copied
            cursor = tr.seq
            news = tr.news
            # written in pieces, never as one JSON text: with the ring full an
            # event is ~5 KB, three copies of which (text, bytes, framed) a
            # small fragmented heap may not have room for
            head = 'id: %d\ndata: {"state": %s, "trace": [' % (cursor, json.dumps(_status(app)))
            await _write(s, head.encode())
            head = ""
            sep = ""
            while lines:
                n, line = lines.pop(0)
                await _write(s, ("%s[%d, %s]" % (sep, n, json.dumps(line))).encode())
                sep = ", "
            await _write(s, b"]}\n\n")
            quiet = 0
            while tr.news == news and not _readable(s):
                await tr.wait(2000)
                quiet += 1
                if quiet % 8 == 0:
                    await _write(s, b": still here\n\n")
            if _readable(s):
                break
            await asyncio.sleep_ms(100)
    except (OSError, asyncio.TimeoutError):  # the client went away, or stopped reading
        pass
    finally:
        _sse -= 1


def _readable(s):
    """The client sent something, or closed: an event stream is then over."""
    p = select.poll()
    p.register(s.s, select.POLLIN)
    return bool(p.poll(0))


# ---- the cardholder ------------------------------------------------------


def _conflict(what):
    raise _Answer(409, "Conflict", what)


async def _card(app, name, s, method, q, body, headers):
    profile = body.get("profile", "chip")
    brand = body.get("brand") or None
    if profile not in _PROFILES or not (brand is None or (isinstance(brand, str) and len(brand) <= 16)):
        raise _Answer(400, "Bad Request", "profile: chip, contactless or magstripe; brand: text")
    if not app.term.act("card", {"profile": profile, "brand": brand}):
        _conflict("no card is awaited")
    return _status(app)


async def _pin(app, name, s, method, q, body, headers):
    if "pin" in body:
        ok = body["pin"] == app.cfg["card"]["pin"]
    else:
        ok = bool(body.get("ok", True))
    if not app.term.act("pin", {"ok": ok}):
        _conflict("no PIN is awaited")
    return _status(app)


def _dismiss(app):
    global _cleared
    last = app.term.journal.last()
    _cleared = last.no if last else 0


async def _confirm(app, name, s, method, q, body, headers):
    term = app.term
    if not term.act("confirm"):
        if term.current is not None:
            _conflict("nothing to confirm now")
        _dismiss(app)
    return _status(app)


async def _cancel(app, name, s, method, q, body, headers):
    if not app.term.act("cancel"):
        _conflict("nothing to cancel")
    return _status(app)


async def _remove(app, name, s, method, q, body, headers):
    term = app.term
    t = term.current  # a card pulled out before the end cancels it
    term.act("cancel" if t is None or t.state == "wait_card" else "removed")
    term.card_in = False
    if term.current is None:
        _dismiss(app)
    return _status(app)


