"""The web control API's rarer calls (docs/CONTROL.md): the journal, the
receipts, the outcome queue, the mode, the delay, reset, and the config.
firmware/web.py imports this module for one request and drops it, so a
terminal whose page only watches does not keep it in RAM.

Each call is given the web face's adapter (firmware.web.Web) and the
request as Web.request() has it; what it needs of the web face (the state,
writing, Answer) it reaches through the adapter: this module never imports
firmware.web."""
import gc
import json
import os

from firmware import OUTCOMES, SECRET, drop, loaded, log, outcome, room, signature


async def transactions(web, s, method, q, headers, body):
    """The newest n (default 50) decided transactions of the journal, oldest
    first, written one by one as they are read: the answer is never whole in
    RAM (Connection: close ends it)."""
    journal = web.app.term.journal
    n = max(1, min(web.number(q.get("n"), 50), 200))
    rows = journal.rows(journal.next_no - n)
    try:
        await web.write(s, web.JSON_HEAD)
        await web.write(s, b'{"transactions": [')
        sep = b""
        for t in rows:
            await web.write(s, sep + json.dumps(web.txn_fields(t)).encode())
            sep = b", "
        await web.write(s, b"]}")
    finally:
        if hasattr(rows, "close"):
            rows.close()


async def last_frames(web, s, method, q, headers, body):
    tr = web.app.trace
    frames = tr.last if tr else {}
    return {src: {"request": p[0], "answer": p[1]} for src, p in frames.items()}


async def receipt_text(web, s, method, q, headers, body):
    j = web.app.term.journal
    no = web.number(q.get("no"), 0)
    t = j.get(no) if no else j.last()
    if t is None or t.result is None:
        raise web.Answer(404, "Not Found", "no such finished transaction")
    had = loaded("firmware.receipt")
    from firmware import receipt

    try:
        text = receipt.transaction(t, web.app.cfg, q.get("copy") == "merchant")
    finally:
        drop("firmware.receipt", had)
    return {"no": t.no, "text": text}


# ---- the tester ----------------------------------------------------------


def _bad_outcomes(got):
    """None if got is a list of outcomes the core knows; else what is allowed.
    The rarer outcomes' names are firmware/unhappy.py's: imported only for
    one of them, or to list them."""
    if isinstance(got, list) and all(outcome(o) for o in got):
        return None
    had = loaded("firmware.unhappy")
    from firmware import unhappy

    names = ", ".join(OUTCOMES + unhappy.NAMES)
    args = ", ".join("%s:%s" % (k, "|".join(a for a in v if a)) for k, v in unhappy.ARGS.items())
    drop("firmware.unhappy", had)
    return "outcomes: a list of %s (arguments: %s, partial:N)" % (names, args)


async def outcome_queue(web, s, method, q, headers, body):
    term = web.app.term
    if method == "DELETE":
        term.queue = []
    elif method == "POST":
        got = body.get("outcomes")
        bad = _bad_outcomes(got)
        if bad:
            raise web.Answer(400, "Bad Request", bad)
        if body.get("replace"):
            term.queue = []
        term.queue.extend(got)
    return {"queue": term.queue, "next": term.journal.next_no}


async def auth_delay(web, s, method, q, headers, body):
    v = body.get("auth_ms")
    if v is not None and not (isinstance(v, int) and 0 <= v <= 600000):
        raise web.Answer(400, "Bad Request", "auth_ms: 0..600000, or null for delays.auth_ms")
    web.app.term.auth_ms = v
    return web.status()


async def terminal_mode(web, s, method, q, headers, body):
    m = body.get("mode")
    if m not in ("auto", "interactive"):
        raise web.Answer(400, "Bad Request", "mode: auto or interactive")
    web.app.term.interactive = m == "interactive"
    return web.status()


async def reset(web, s, method, q, headers, body):
    term = web.app.term
    term.act("cancel")
    term.queue = []
    term.auth_ms = None
    term.interactive = web.app.cfg["web"]["mode"] == "interactive"
    term.card_in = False
    web.dismiss()
    return web.status()


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


async def running_config(web, s, method, q, headers, body):
    if method == "PUT":
        await _put_config(web, body, [k for k in q.get("replace", "").split(",") if k])
    return _masked(web.app.cfg)


async def _put_config(web, patch, replace):
    """Merge the patch into the config file (the top-level sections named in
    replace are written as given), check it with the firmware's
    own rules, write it (atomically) and apply it as the file watcher does:
    listeners whose settings changed restart, the rest applies to the next
    transaction."""
    app = web.app
    path = app.board.CONFIG_PATH
    try:
        with open(path) as f:  # noqa: ASYNC230
            user = json.load(f)
    except OSError:  # no file yet: the defaults
        user = {}
    except ValueError:  # a hand-edited file that is not JSON: never overwrite it with the patch
        raise web.Answer(409, "Conflict", "%s is not valid JSON: fix it first" % path)
    if not isinstance(user, dict):
        user = {}
    for k in replace:
        user.pop(k, None)
    _patch(user, patch)
    had = loaded("firmware.config")
    if not had:  # its import takes what it took last time (13 KB of a 32-bit heap
        # from .mpy, 4 KB frozen): without that room, nothing is done (503)
        # rather than the transactions being served starved of it
        if not room(app.cfg["memory"]["headroom"] + web.config_cost):
            raise MemoryError
        before = gc.mem_alloc()
    from firmware import config

    if not had:
        web.config_cost = gc.mem_alloc() - before
    try:
        cfg, problems = config.merge(user)
    finally:
        drop("firmware.config", had)
    if problems:
        raise web.Answer(400, "Bad Request", "; ".join(problems))
    tmp = path + ".tmp"
    with open(tmp, "w") as f:  # noqa: ASYNC230
        json.dump(user, f)
    os.rename(tmp, path)
    app.seen = signature(path)  # the file watcher must not apply it again
    log.event("config", "reloaded", path, "(PUT /api/config)")
    await app.apply(cfg)


# path -> call, for the paths firmware.web's _ROUTES gives no Web method
CALLS = {
    "/api/transactions": transactions,
    "/api/last": last_frames,
    "/api/receipt": receipt_text,
    "/api/queue": outcome_queue,
    "/api/config": running_config,
    "/api/delay": auth_delay,
    "/api/mode": terminal_mode,
    "/api/reset": reset,
}
