"""The web control API's rarer calls (docs/CONTROL.md): the journal, the
receipts, the outcome queue, the mode, the delay, reset, and the config.
firmware/web.py imports this module for one request and drops it, so a
terminal whose page only watches does not keep it in RAM."""
import json
import os

from firmware import SECRET, drop, loaded, log, signature
from firmware.web import _Answer, _dismiss, _int, _status, _txn, _write

async def _transactions(app, name, s, method, q, body, headers):
    """The newest n (default 50) decided transactions of the journal, oldest
    first, written one by one as they are read: the answer is never whole in
    RAM (Connection: close ends it)."""
    n = max(1, min(_int(q.get("n"), 50), 200))
    rows = app.term.journal.rows(app.term.journal.next_no - n)
    try:
        await _write(s, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
                     b"Connection: close\r\n\r\n{\"transactions\": [")
        sep = b""
        for t in rows:
            await _write(s, sep + json.dumps(_txn(t)).encode())
            sep = b", "
        await _write(s, b"]}")
    finally:
        if hasattr(rows, "close"):
            rows.close()


async def _last(app, name, s, method, q, body, headers):
    last = app.trace.last if app.trace else {}
    return {src: {"request": p[0], "answer": p[1]} for src, p in last.items()}



async def _receipt(app, name, s, method, q, body, headers):
    j = app.term.journal
    no = _int(q.get("no"), 0)
    t = j.get(no) if no else j.last()
    if t is None or t.result is None:
        raise _Answer(404, "Not Found", "no such finished transaction")
    had = loaded("firmware.receipt")
    from firmware import receipt

    try:
        text = receipt.transaction(t, app.cfg, q.get("copy") == "merchant")
    finally:
        drop("firmware.receipt", had)
    return {"no": t.no, "text": text}



# ---- the tester ----------------------------------------------------------


def _bad_outcomes(got):
    """None if got is a list of outcomes the core knows; else what is allowed.
    The rarer outcomes' names are firmware/unhappy.py's: imported only for
    one of them, or to list them."""
    had = loaded("firmware.config")
    from firmware import config

    try:
        if isinstance(got, list) and all(config.outcome(o) for o in got):
            return None
        had_u = loaded("firmware.unhappy")
        from firmware import unhappy

        names = ", ".join(config.OUTCOMES + unhappy.NAMES)
        args = ", ".join("%s:%s" % (k, "|".join(a for a in v if a)) for k, v in unhappy.ARGS.items())
        drop("firmware.unhappy", had_u)
        return "outcomes: a list of %s (arguments: %s, partial:N)" % (names, args)
    finally:
        drop("firmware.config", had)


async def _queue(app, name, s, method, q, body, headers):
    term = app.term
    if method == "DELETE":
        term.queue = []
    elif method == "POST":
        got = body.get("outcomes")
        bad = _bad_outcomes(got)
        if bad:
            raise _Answer(400, "Bad Request", bad)
        if body.get("replace"):
            term.queue = []
        term.queue.extend(got)
    return {"queue": term.queue, "next": term.journal.next_no}


async def _delay(app, name, s, method, q, body, headers):
    v = body.get("auth_ms")
    if v is not None and not (isinstance(v, int) and 0 <= v <= 600000):
        raise _Answer(400, "Bad Request", "auth_ms: 0..600000, or null for delays.auth_ms")
    app.term.auth_ms = v
    return _status(app)


async def _mode(app, name, s, method, q, body, headers):
    m = body.get("mode")
    if m not in ("auto", "interactive"):
        raise _Answer(400, "Bad Request", "mode: auto or interactive")
    app.term.mode = m
    return _status(app)


async def _reset(app, name, s, method, q, body, headers):
    term = app.term
    term.act("cancel")
    term.queue = []
    term.auth_ms = None
    term.mode = app.cfg["web"]["mode"]
    term.card_in = False
    _dismiss(app)
    return _status(app)


# ---- config ------------------------------------------------------------------


def _masked(cfg):
    out = dict(cfg)
    for path in SECRET:  # "section.key" or "section.name.key"
        keys = path.split(".")
        d = out
        for k in keys[:-1]:  # copy down the path: the running config is not touched
            d[k] = dict(d[k])
            d = d[k]
        if d[keys[-1]]:
            d[keys[-1]] = "***"
    return out


def _patch(base, extra):
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _patch(base[k], v)
        else:
            base[k] = v


async def _config(app, name, s, method, q, body, headers):
    if method == "PUT":
        await _put_config(app, body, [k for k in q.get("replace", "").split(",") if k])
    return _masked(app.cfg)


async def _put_config(app, patch, replace):
    """Merge the patch into the config file (the top-level sections named in
    replace are written as given), check it with the firmware's
    own rules, write it (atomically) and apply it as the file watcher does:
    listeners whose settings changed restart, the rest applies to the next
    transaction."""

    path = app.board.CONFIG_PATH
    try:
        with open(path) as f:  # noqa: ASYNC230
            user = json.load(f)
    except OSError:  # no file yet: the defaults
        user = {}
    except ValueError:  # a hand-edited file that is not JSON: never overwrite it with the patch
        raise _Answer(409, "Conflict", "%s is not valid JSON: fix it first" % path)
    if not isinstance(user, dict):
        user = {}
    for k in replace:
        user.pop(k, None)
    _patch(user, patch)
    had = loaded("firmware.config")
    from firmware import config

    try:
        cfg, problems = config.merge(user)
    finally:
        drop("firmware.config", had)
    if problems:
        raise _Answer(400, "Bad Request", "; ".join(problems))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:  # noqa: ASYNC230
        json.dump(user, f)
    os.rename(tmp, path)
    app.seen = signature(path)  # the file watcher must not apply it again
    log.event("config", "reloaded", path, "(PUT /api/config)")
    await app.apply(cfg)
