"""A short heap never kills the terminal, and never reaches a client as a
silent close: work is refused before it starts, with each protocol's busy
answer (Concert AE=01 AF=00, P3 ACCESSORY_BUSY, Synqpay 201, HTTP 503 with
Retry-After), and everything else is answered (docs/MEMORY.md).

The .mpy build (what boards run), every listener on, over real sockets.
"""
import json
import re
import time
from types import SimpleNamespace

from concert_client import exchange, odoo
from understudy import bench, load
from understudy.testkit import Control
from wire import concert_tlv as tlv

from test_memory import HEAP_RE

HEAP = "256K"  # the budget every personality is tested in (docs/MEMORY.md)


def _free_at_ready():
    fw = bench.start({"log": {"heap": True, "frames": False}}, heap="512K")
    try:
        out = fw.output()
    finally:
        fw.stop()
        fw.cleanup()
    total = int(re.search(r"heap (\d+) bytes", out).group(1))
    return total - int(re.search(r"app heap alloc=(\d+)", out).group(1))


def test_a_short_heap_refuses_work_before_it_starts_on_every_protocol():
    # a headroom above what the heap has free: connections are still taken
    # (they need half of it) but no transaction or control-API write may start
    headroom = _free_at_ready() * 11 // 10
    fw = bench.start({"memory": {"headroom": headroom}, "log": {"frames": False}}, heap="512K")
    try:
        a = tlv.decode(exchange(fw.address("concert-ip"), odoo(1250)))
        assert (a["AE"], a["AF"]) == ("01", "00"), a
        p3 = bench.P3(fw.address("p3-ws"), True)
        p3.login()
        m = p3.pay()
        p3.close()
        assert m["status"] == "ERROR" and m["error"]["type"] == "ACCESSORY_BUSY", m
        sq = bench.Synqpay(fw.address("synqpay"), False)
        got = sq.pay()
        sq.close()
        assert got["error"]["code"] == 201, got
        status, answer = load._http(fw.address("web"), "PUT", "/api/config", "",
                                    {"delays": {"card_ms": 7}})
        assert status == 503 and b"\r\nRetry-After: 1\r\n" in answer, answer
        status, answer = load._http(fw.address("web"), "GET", "/api/config", "")
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert status == 200 and body["delays"]["card_ms"] == 0  # not applied
        status, answer = load._http(fw.address("web"), "GET", "/api/transactions", "")
        assert status == 200 and json.loads(answer.split(b"\r\n\r\n", 1)[1])["transactions"] == []
        # the fixture's client honours Retry-After: asked again each second, then the 503
        control = Control(SimpleNamespace(web="http://%s:%d" % fw.address("web"), token=""))
        mark = len(fw.lines)
        assert control.call("POST", "/api/queue", {"outcomes": ["decline"]}, timeout=2.5)[0] == 503
        asked = []
        for _ in range(100):  # (the log lines reach us a moment after the answers)
            asked = [ln for ln in fw.lines[mark:] if "POST /api/queue 503" in ln]
            if len(asked) >= 3:
                break
            time.sleep(0.05)
        time.sleep(0.2)
        assert len([ln for ln in fw.lines[mark:] if "POST /api/queue 503" in ln]) == 3, fw.lines[mark:]
    finally:
        fw.stop()
        problems = fw.problems()
        out = fw.output()
        fw.cleanup()
    assert not problems, problems
    assert len(re.findall(r"core busy .* heap short", out)) == 3, out[-3000:]


def test_ordinary_use_gets_every_request_answered():
    """Four Concert registers, a P3 POS on TCP and one on WebSocket, a
    Synqpay POS, the page open with its event stream, a script reading and
    writing the control API, all at once with a 2 ms authorisation: in the
    board budget every request gets an answer (busy is one) and the log has
    no MemoryError or traceback."""
    fw = bench.start({"log": {"heap": True, "frames": False}, "delays": {"auth_ms": 2}}, heap=HEAP)
    try:
        tallies, events = load.mixed_use(fw, 8, concert=4)
        a = tlv.decode(exchange(fw.address("concert-ip"), odoo(1250)))  # and it still pays
    finally:
        fw.stop()
        problems = fw.problems()
        out = fw.output()
        fw.cleanup()
    heard = {name: t.n for name, t in tallies.items()}
    why = [ln for ln in out.splitlines() if " refused " in ln or " closed " in ln][:20]
    assert not load.unanswered(tallies), (load.unanswered(tallies), heard, why)
    for name, n in heard.items():
        assert n["approved"] > 0 and n["other"] == 0, (name, n)
    assert a["AE"] == "10" and events > 0
    assert not problems, problems[:5]
    assert HEAP_RE.search(out)


def test_the_web_face_rests_when_nobody_uses_it():
    """web.idle_s after the last request its code and the trace's lines go,
    and the next request brings them back."""
    fw = bench.start({"log": {"heap": True, "frames": False}, "config_watch_s": 1,
                      "web": {"idle_s": 3}}, heap=HEAP)

    def paid():
        mark = len(fw.lines)
        assert tlv.decode(exchange(fw.address("concert-ip"), odoo(1250)))["AE"] == "10"
        i = fw.wait_for("heap=", 5, mark)
        return int(HEAP_RE.search(fw.lines[i]).group(2))

    try:
        before = paid()
        assert load._http(fw.address("web"), "GET", "/", "")[0] == 200
        assert load._http(fw.address("web"), "GET", "/api/state", "")[0] == 200
        used = paid()
        assert fw.wait_for("web rested", 8) is not None
        rested = paid()
        assert load._http(fw.address("web"), "GET", "/api/state", "")[0] == 200  # back
    finally:
        fw.stop()
        problems = fw.problems()
        fw.cleanup()
    assert not problems, problems
    # x64: about 31 KB while used, 21 KB of it given back; the rest are the names
    # its code interned, which MicroPython keeps for good (docs/MEMORY.md)
    assert used - rested > 15000, (before, used, rested)


def test_a_page_refused_in_a_short_heap_fails_the_run_not_the_bench(monkeypatch):
    """`make bench`'s mixed use opens the page first; in a heap too short
    for it the terminal resets it.  That run fails, naming the page, and
    the bench goes on to the next (it stopped with a traceback)."""
    def reset(addr):
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(load, "Watcher", reset)
    r = load.one_run(HEAP, 1, 1)
    assert not r["fits"] and r["why"].startswith("page: ConnectionResetError"), r
    assert r["n"]["approved"] > 0 and r["events"] == 0


def test_the_mixed_use_of_some_personalities_only():
    """What fits a board (docs/MEMORY.md) is measured per personality: a run
    of some of them turns the others' listeners off, as a board's config
    would, and drives only their registers."""
    off = load.only(("concert", "web"))
    assert off["web"] == {"enabled": True}
    assert sorted(off["listeners"]) == ["p3-tcp", "p3-ws", "synqpay", "synqpay-serial", "synqpay-tls"]
    assert load.only(load.ALL) == {"listeners": {}, "web": {"enabled": True}}
    r = load.one_run(HEAP, 1, 1, families=("p3",))
    assert r["fits"], r
    assert r["n"]["approved"] > 0 and r["events"] == 0  # no page: web is off


def test_a_terminal_gone_mid_run_fails_that_run_not_the_bench(monkeypatch):
    """A terminal that exits during a run (its /proc entry gone when the
    run reads its CPU time) fails that run, saying so; the fit table goes on."""
    def gone(pid):
        raise FileNotFoundError(2, "No such file or directory: '/proc/%d/stat'" % pid)

    monkeypatch.setattr(load, "_cpu_s", gone)
    r = load.one_run(HEAP, 1, 1, families=("concert",))
    assert not r["fits"] and r["why"].startswith("the terminal exited (status "), r
