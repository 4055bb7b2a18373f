"""The web page and HTTP control API, end to end: the firmware in the unix
port, real HTTP over real sockets (docs/CONTROL.md)."""
import glob
import gzip
import json
import os
import socket
import threading
import time

import pytest

from concert_client import exchange, odoo
from conftest import quiet_port
from golden import Transcript
from p3_client import connect
from web_client import TOKEN, addr, get, ok, post, raw, request, split
from wire import concert_tlv as tlv

CFG = {"web": {"token": TOKEN}}


def concert(fw, cents, box=None):
    a = tlv.decode(exchange(fw.address("concert-ip"), odoo(cents)))
    if box is not None:
        box["a"] = a
    return a


def in_background(fn, *args):
    box = {}
    th = threading.Thread(target=lambda: box.update(v=fn(*args)), daemon=True)
    th.start()
    return th, box


def wait_state(fw, want, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = ok(fw, "GET", "/api/state")
        if st["state"] == want:
            return st
        time.sleep(0.05)
    raise AssertionError("the terminal never reached %s: %r" % (want, st))


def test_reads_after_a_payment(firmware):
    fw = firmware(CFG)
    st = ok(fw, "GET", "/api/state")
    assert st["busy"] is False and st["state"] == "idle" and st["screen"][0] == "WELCOME"
    assert st["mode"] == "auto" and st["queue"] == [] and st["next"] == 1
    cursor = ok(fw, "GET", "/api/trace")["seq"]
    assert concert(fw, 1250)["AE"] == "10"
    txns = ok(fw, "GET", "/api/transactions")["transactions"]
    assert [(t["no"], t["op"], t["amount"], t["result"], t["src"]) for t in txns] == [
        (1, "pay", 1250, "approved", "concert-ip")]
    assert txns[0]["card"] == "CB chip ************0014"
    st = ok(fw, "GET", "/api/state")
    assert st["txn"]["no"] == 1 and st["screen"] == ["APPROVED", "12.50 EUR"] and st["next"] == 2
    last = ok(fw, "GET", "/api/last")
    assert last["concert-ip"]["request"].startswith("concert-ip rx 127.0.0.1 CZ0040300")
    assert "AE00210" in last["concert-ip"]["answer"] and " tx " in last["concert-ip"]["answer"]
    tr = ok(fw, "GET", "/api/trace?since=%d" % cursor)
    lines = [ln for _, ln in tr["lines"]]
    assert [n for n, _ in tr["lines"]] == list(range(cursor + 1, tr["seq"] + 1))
    assert any(ln.startswith("concert-ip rx") for ln in lines) and any(" tx " in ln for ln in lines)
    assert ok(fw, "GET", "/api/trace?since=%d" % tr["seq"])["lines"] == []
    rec = ok(fw, "GET", "/api/receipt?no=1")
    assert "12.50" in rec["text"] and "0014" in rec["text"] and "4970100000000014" not in rec["text"]
    cfg = ok(fw, "GET", "/api/config")
    assert cfg["web"]["token"] == "***" and TOKEN not in json.dumps(cfg)
    assert cfg["listeners"]["concert-ip"]["port"] == fw.address("concert-ip")[1]


def test_the_page_is_served_gzipped_from_flash(firmware, fw_root):
    fw = firmware(CFG)
    status, headers, body = split(raw(fw, b"GET / HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n"))
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert int(headers["content-length"]) == len(body)
    if fw_root == "mpy":  # the build (what boards get) keeps it gzipped
        assert headers["content-encoding"] == "gzip"
        body = gzip.decompress(body)
    assert body.startswith(b"<!doctype html>") and b"</html>" in body


def test_token_refused_and_logged(firmware):
    fw = firmware(CFG)
    for tok in (None, "wrong-token"):
        mark = len(fw.lines)
        status, text = post(fw, "/api/queue", {"outcomes": ["decline"]}, token=tok)
        assert status == 401 and "Unauthorized" in text
        i = fw.wait_for("401 wrong or missing token", 5, mark)
        assert i is not None and "POST /api/queue" in fw.lines[i]
    assert ok(fw, "GET", "/api/queue")["queue"] == []  # nothing was queued
    assert TOKEN not in fw.output() and "wrong-token" not in fw.output()
    status, _ = request(fw, "PUT", "/api/config", {"terminal_id": "X"}, token=None)
    assert status == 401
    status, _ = get(fw, "/api/state", token=None)  # reads are open (web.open_reads)
    assert status == 200


def test_reads_can_need_the_token(firmware):
    fw = firmware({"web": {"token": TOKEN, "open_reads": False}})
    assert get(fw, "/api/state", token=None)[0] == 401
    assert get(fw, "/api/events", token=None)[0] == 401
    assert get(fw, "/api/state")[0] == 200
    assert get(fw, "/api/state?token=" + TOKEN, token=None)[0] == 200  # what the page's event stream does
    assert get(fw, "/", token=None)[0] == 200  # the page itself holds no data


def test_bad_requests(firmware):
    fw = firmware(dict(CFG, web={"token": TOKEN, "max_body": 1024}))
    assert post(fw, "/api/queue", b"{not json")[0] == 400
    assert post(fw, "/api/queue", b"[1, 2]")[0] == 400
    assert post(fw, "/api/queue", {"outcomes": ["explode"]})[0] == 400
    assert post(fw, "/api/card", {"profile": "floppy"})[0] == 400
    assert post(fw, "/api/delay", {"auth_ms": -1})[0] == 400
    assert get(fw, "/nowhere")[0] == 404
    status, headers, _ = split(raw(fw, b"DELETE /api/state HTTP/1.1\r\nHost: t\r\n\r\n"))
    assert status == 405 and headers["allow"] == "GET"
    assert post(fw, "/api/queue", {"outcomes": ["approve"] * 200})[0] == 413  # body > web.max_body
    huge = b"GET /api/state HTTP/1.1\r\nX-Big: " + b"a" * 3000 + b"\r\n\r\n"
    assert split(raw(fw, huge))[0] == 431
    assert split(raw(fw, b"NOT HTTP AT ALL\r\n\r\n"))[0] == 400
    # nothing to act on: 409
    assert post(fw, "/api/pin", {"ok": True})[0] == 409
    assert post(fw, "/api/cancel")[0] == 409
    assert get(fw, "/api/state")[0] == 200  # still serving


def test_slow_and_vanishing_clients_wedge_nothing(firmware):
    fw = firmware({"web": {"token": TOKEN, "max_clients": 6}})  # timeouts.request_ms 2000
    idle = [socket.create_connection(addr(fw)) for _ in range(2)]
    half = socket.create_connection(addr(fw))
    half.sendall(b"GET /api/state HTTP/1.1\r\nHo")  # and never the rest
    gone = socket.create_connection(addr(fw))
    gone.sendall(b"GET /api/events HTTP/1.1\r\n\r\n")
    gone.close()
    t0 = time.monotonic()
    assert concert(fw, 1000)["AE"] == "10"  # the terminal goes on
    assert get(fw, "/api/state")[0] == 200
    assert time.monotonic() - t0 < 2
    assert fw.wait_for("web silent", 5) is not None  # the silent ones are closed
    for s in idle + [half]:
        s.settimeout(5)
        assert s.recv(100) == b""
        s.close()


def test_interactive_cardholder_on_the_api(firmware):
    fw = firmware(dict(CFG, timeouts={"card_s": 10, "pin_s": 10}))
    assert ok(fw, "POST", "/api/mode", {"mode": "interactive"})["mode"] == "interactive"
    th, box = in_background(concert, fw, 1234)
    st = wait_state(fw, "wait_card")
    assert st["busy"] and st["screen"] == ["12.34 EUR", "PRESENT CARD"]
    ok(fw, "POST", "/api/card", {"profile": "chip", "brand": "VISA"})
    st = wait_state(fw, "pin")
    assert st["screen"] == ["12.34 EUR", "ENTER PIN"]
    st = ok(fw, "POST", "/api/pin", {"pin": "0000"})  # wrong: two tries left
    time.sleep(0.2)
    assert ok(fw, "GET", "/api/state")["screen"][1] == "WRONG PIN, 2 TRIES LEFT"
    ok(fw, "POST", "/api/pin", {"pin": "1234"})  # card.pin
    th.join(10)
    assert box["v"]["AE"] == "10"
    st = ok(fw, "GET", "/api/state")
    assert st["screen"] == ["APPROVED", "REMOVE CARD"] and st["card_in"]
    assert st["txn"]["card"].startswith("VISA chip")
    st = ok(fw, "POST", "/api/remove")
    assert st["screen"] == ["WELCOME", ""] and not st["card_in"]
    # the red button while the card is awaited
    th, box = in_background(concert, fw, 1234)
    wait_state(fw, "wait_card")
    ok(fw, "POST", "/api/cancel")
    th.join(10)
    assert (box["v"]["AE"], box["v"]["AF"]) == ("01", "06")
    # contactless: no PIN
    th, box = in_background(concert, fw, 500)
    wait_state(fw, "wait_card")
    ok(fw, "POST", "/api/card", {"profile": "contactless"})
    th.join(10)
    assert box["v"]["AE"] == "10"


def test_a_possible_duplicate_is_confirmed_or_refused_on_the_page(firmware):
    """card.dup_min: the same card and amount again within it asks the
    cardholder (the page's OK and STOP keys); nothing to confirm is a 409."""
    fw = firmware(dict(CFG, card={"dup_min": 5}, timeouts={"card_s": 10, "pin_s": 10}))
    assert concert(fw, 1234)["AE"] == "10"  # the first: nothing to compare with
    ok(fw, "POST", "/api/mode", {"mode": "interactive"})
    th, box = in_background(concert, fw, 1234)
    st = wait_state(fw, "confirm")
    assert st["screen"][1] == "POSSIBLE DUPLICATE, OK?", st
    ok(fw, "POST", "/api/confirm")
    wait_state(fw, "wait_card")
    assert post(fw, "/api/confirm", {})[0] == 409  # a card is awaited, not a yes
    ok(fw, "POST", "/api/card", {"profile": "chip"})
    wait_state(fw, "pin")
    ok(fw, "POST", "/api/pin", {"pin": "1234"})
    th.join(10)
    assert box["v"]["AE"] == "10"
    ok(fw, "POST", "/api/remove")
    th, box = in_background(concert, fw, 1234)  # again: refused with the red key
    wait_state(fw, "confirm")
    ok(fw, "POST", "/api/cancel")
    th.join(10)
    assert (box["v"]["AE"], box["v"]["AF"]) == ("01", "06")
    assert [t["reason"] for t in ok(fw, "GET", "/api/transactions")["transactions"]][-1] == "duplicate"
    th, box = in_background(concert, fw, 990)  # another amount is not a duplicate:
    wait_state(fw, "wait_card")  # straight to the card
    ok(fw, "POST", "/api/cancel")
    th.join(10)


def test_interactive_nobody_acts_register_gets_the_timeout(firmware):
    fw = firmware(dict(CFG, web={"token": TOKEN, "mode": "interactive"},
                       timeouts={"card_s": 1, "pin_s": 1}))
    assert ok(fw, "GET", "/api/state")["mode"] == "interactive"  # from web.mode
    t0 = time.monotonic()
    a = concert(fw, 1000)  # an amount that auto mode approves at once
    assert (a["AE"], a["AF"]) == ("01", "08")  # no card in time
    assert time.monotonic() - t0 >= 0.9
    th, box = in_background(concert, fw, 1000)
    wait_state(fw, "wait_card")
    ok(fw, "POST", "/api/card", {"profile": "chip"})
    th.join(10)  # nobody types the PIN
    assert (box["v"]["AE"], box["v"]["AF"]) == ("01", "08")
    assert [t["reason"] for t in ok(fw, "GET", "/api/transactions")["transactions"]] == ["no_card", "no_pin"]


def test_queued_outcomes_across_personalities_and_auth_delay(firmware):
    fw = firmware(CFG)
    out = ok(fw, "POST", "/api/queue", {"outcomes": ["decline", "cancel"]})
    assert out == {"queue": ["decline", "cancel"], "next": 1}
    assert concert(fw, 1000)["AE"] == "01"  # 10.00 approves by the amount rules
    assert ok(fw, "GET", "/api/queue")["queue"] == ["cancel"]
    pos = connect(fw, "tcp")
    try:
        assert pos.login()["status"] == "OK"
        _, final = pos.until_final(pos.execute(10.00))
        assert final["executeTransactionResponse"]["transaction"]["status"] == "ABORTED", final
        # the queue is empty: the amount rules again
        _, final = pos.until_final(pos.execute(10.00))
        assert final["executeTransactionResponse"]["transaction"]["status"] == "APPROVED", final
    finally:
        pos.close()
    ok(fw, "POST", "/api/queue", {"outcomes": ["decline", "decline"]})
    assert ok(fw, "DELETE", "/api/queue")["queue"] == []
    assert ok(fw, "POST", "/api/delay", {"auth_ms": 700})["auth_ms"] == 700
    t0 = time.monotonic()
    assert concert(fw, 1000)["AE"] == "10"
    assert time.monotonic() - t0 >= 0.7
    ok(fw, "POST", "/api/queue", {"outcomes": ["decline"]})
    st = ok(fw, "POST", "/api/reset")
    assert st["queue"] == [] and st["auth_ms"] is None and st["mode"] == "auto"
    txns = ok(fw, "GET", "/api/transactions")["transactions"]
    assert [(t["src"], t["result"]) for t in txns] == [
        ("concert-ip", "declined"), ("p3", "cancelled"), ("p3", "approved"), ("concert-ip", "approved")]


def test_config_put_applies_ports_and_allowed_ips_live(firmware):
    fw = firmware(CFG)
    old = fw.address("concert-ip")
    new = quiet_port()
    mark = len(fw.lines)
    patch = {"listeners": {"concert-ip": {"port": new}}, "terminal_id": "TILL0042"}
    cfg = ok(fw, "PUT", "/api/config", patch)
    assert cfg["listeners"]["concert-ip"]["port"] == new and cfg["terminal_id"] == "TILL0042"
    assert fw.wait_for("listening concert-ip tcp 127.0.0.1:%d" % new, 5, mark) is not None
    assert concert(fw, 1000)["AE"] == "10"  # fw.address follows the new listening line
    with pytest.raises(OSError):
        socket.create_connection(old, timeout=2).close()
    # written to the file: a reboot keeps it, and the watcher does not apply it twice
    with open(fw.config_path) as f:
        assert json.load(f)["listeners"]["concert-ip"]["port"] == new
    time.sleep(1.5)  # config_watch_s 1
    assert fw.output().count("listening concert-ip") == 2
    # a value the rules refuse: 400, nothing changes
    status, text = request(fw, "PUT", "/api/config", {"listeners": {"concert-ip": {"port": 70000}}})
    assert status == 400 and "listeners.concert-ip.port" in text
    assert ok(fw, "GET", "/api/config")["listeners"]["concert-ip"]["port"] == new
    # allowed_ips live: this client is no longer let in, on any listener (the web too)
    ok(fw, "PUT", "/api/config", {"allowed_ips": ["10.9.9.9"]})
    assert exchange(fw.address("concert-ip"), odoo(1000)) == b""
    assert raw(fw, b"GET /api/state HTTP/1.1\r\n\r\n") == b""
    assert fw.wait_for("concert-ip refused 127.0.0.1 not in allowed_ips", 5) is not None
    # the file watcher takes the web's own settings too (here: let us back in)
    with open(fw.config_path) as f:
        cfg = json.load(f)
    cfg["allowed_ips"] = []
    cfg["web"]["port"] = quiet_port()
    fw.write_config(cfg)
    assert fw.wait_for("listening web http 127.0.0.1:%d" % cfg["web"]["port"], 5, mark) is not None
    assert get(fw, "/api/state")[0] == 200


def test_web_port_change_through_the_api(firmware):
    fw = firmware(CFG)
    new = quiet_port()
    mark = len(fw.lines)
    cfg = ok(fw, "PUT", "/api/config", {"web": {"port": new}})  # answered on the old connection
    assert cfg["web"]["port"] == new
    assert fw.wait_for("listening web http 127.0.0.1:%d" % new, 5, mark) is not None
    assert addr(fw)[1] == new
    assert get(fw, "/api/state")[0] == 200


def _events(fw, until, timeout=10.0, since=0):
    """Server-sent events (data decoded) of a new stream, until until(events)."""
    s = socket.create_connection(addr(fw), timeout=timeout)
    s.sendall(b"GET /api/events?since=%d HTTP/1.1\r\nHost: t\r\n\r\n" % since)
    buf = b""
    events = []
    try:
        while not until(events):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            while b"\n\n" in buf.partition(b"\r\n\r\n")[2]:
                head, _, rest = buf.partition(b"\r\n\r\n")
                ev, _, rest = rest.partition(b"\n\n")
                buf = head + b"\r\n\r\n" + rest
                fields = dict(ln.split(": ", 1) for ln in ev.decode().split("\n") if ": " in ln)
                if "data" in fields:
                    events.append((int(fields["id"]), json.loads(fields["data"])))
    finally:
        s.close()
    return buf.partition(b"\r\n\r\n")[0], events


def test_server_sent_events(firmware):
    fw = firmware(dict(CFG, web={"token": TOKEN, "events": 1}))
    box = {}
    def seen(events):
        return any(ln.startswith("concert-ip tx") for _, d in events for _, ln in d["trace"])

    th = threading.Thread(target=lambda: box.update(v=_events(fw, seen)), daemon=True)
    th.start()
    time.sleep(0.5)
    # one stream at most (web.events 1): the second is refused at once
    assert split(raw(fw, b"GET /api/events HTTP/1.1\r\n\r\n"))[0] == 503
    assert concert(fw, 1250)["AE"] == "10"
    th.join(10)
    head, events = box["v"]
    assert b"text/event-stream" in head
    assert events[0][1]["state"]["state"] == "idle"
    lines = [ln for _, d in events for _, ln in d["trace"]]
    assert any(ln.startswith("concert-ip rx") for ln in lines), events
    ids = [i for i, _ in events]
    assert ids == sorted(ids)
    # the stream's slot is given back when its client goes
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = _stream_status(fw)
        if status == 200:
            break
        time.sleep(0.5)
    assert status == 200


def _stream_status(fw):
    s = socket.create_connection(addr(fw), timeout=5)
    try:
        s.sendall(b"GET /api/events HTTP/1.1\r\n\r\n")
        return int(s.recv(12).split()[1])
    finally:
        s.close()


GOLDEN = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "golden", "web", "*.txt")))


@pytest.mark.parametrize("path", GOLDEN, ids=[os.path.basename(p)[:-4] for p in GOLDEN])
def test_golden(firmware, path, request):
    t = Transcript(path)
    fw = firmware(t.config)
    got = []
    for pieces, _, _ in t.exchanges:
        s = socket.create_connection(addr(fw), timeout=5)
        try:
            for i, p in enumerate(pieces):
                if i:
                    time.sleep(0.05)
                s.sendall(p)
            buf = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        finally:
            s.close()
        got.append(buf)
    if request.config.getoption("--update-goldens"):
        t.update(got)
        pytest.skip("golden rewritten")
    for (pieces, expected, _), answer in zip(t.exchanges, got):
        assert answer == expected, "request %r" % pieces
