"""P3 PayProtocol end to end: the firmware in the unix port, a POS over framed
TCP and over WebSocket (the `websockets` client), real sockets."""
import glob
import os
import socket
import struct
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from p3_client import DEVICE, TCP, WS, Client, connect, url
from p3_golden import Script, run_messages, run_raw

HERE = os.path.dirname(__file__)


def _goldens(sub):
    paths = sorted(glob.glob(os.path.join(HERE, "golden", sub, "*.txt")))
    return pytest.mark.parametrize("path", paths, ids=[os.path.basename(p)[:-4] for p in paths])


def _check(request, script, bad, got):
    if request.config.getoption("--update-goldens"):
        script.save(got)
        pytest.skip("golden rewritten")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("transport", ["tcp", "ws"])
@_goldens("p3")
def test_golden_flow(firmware, path, transport, request):
    script = Script(path)
    fw = firmware(script.config)
    update = request.config.getoption("--update-goldens") and transport == "tcp"
    if request.config.getoption("--update-goldens") and transport != "tcp":
        pytest.skip("goldens are rewritten from the TCP run; the WebSocket run checks them")
    bad, got = run_messages(script, lambda: connect(fw, transport), update)
    _check(request, script, bad, got)


def test_lenient_spellings_are_logged_as_notes(firmware):
    script = Script(os.path.join(HERE, "golden", "p3", "lenient.txt"))
    fw = firmware(script.config)
    bad, _got = run_messages(script, lambda: connect(fw, "tcp"), False)
    assert not bad, "\n".join(bad)
    for note in ('autoCapture "true" taken as true', 'autoCapture "True" taken as true',
                 "verifyOnReceipt taken as signatureOnReceipt",
                 'signatureOnReceipt "true" taken as true'):
        assert fw.wait_for(" note ", 5) is not None and note in fw.output(), fw.output()[-2000:]


@_goldens("p3_tcp")
def test_golden_tcp_bytes(firmware, path, request):
    script = Script(path)
    fw = firmware(script.config)
    update = request.config.getoption("--update-goldens")
    _check(request, script, *run_raw(script, fw.address("p3-tcp"), update))


@_goldens("p3_ws")
def test_golden_ws_bytes(firmware, path, request):
    script = Script(path)
    fw = firmware(script.config)
    update = request.config.getoption("--update-goldens")
    _check(request, script, *run_raw(script, fw.address("p3-ws"), update))


# A POS, scripted: log in, pay, sign, abort, refund, look up -----------------

def body(m):
    key = m["type"].lower().split("_")
    return m.get(key[0] + "".join(p.title() for p in key[1:]))


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_scripted_pos(firmware, transport):
    fw = firmware({"delays": {"card_ms": 300}})
    pos = connect(fw, transport)
    try:
        login = pos.login()
        assert login["status"] == "OK"
        assert body(login)["devices"][0]["resource"] == DEVICE

        # pay: updates, then one final response with the masked card and receipts
        tag = pos.execute(12.50, customIdentifier="order-17", subject="Two coffees")
        updates, final = pos.until_final(tag)
        states = [body(u)["transactionProcessDetails"]["state"] for u in updates]
        assert states == ["WAITING_FOR_CARD_PRESENTATION", "WAITING_FOR_PIN", "PROCESSING"]
        assert [body(u)["abortable"] for u in updates] == [True, True, False]
        assert all(u["tag"] == tag and u["resource"] == DEVICE for u in updates)
        tx = body(final)["transaction"]
        assert final["status"] == "OK" and tx["status"] == "APPROVED" and tx["amount"] == 12.5
        assert tx["cardDetails"]["maskedCardNumber"] == "************0014"
        assert "4970100000000014" not in str(final)
        assert any("12.50 EUR" in line for line in tx["customerReceipt"]["lines"])
        paid = tx["identifier"]

        # a signature is asked for: the process waits for SUBMIT_SIGNATURE
        tag = pos.execute(7.10)
        seen = []
        while True:
            m = pos.recv()
            seen.append(m["type"])
            if m["type"] == "EXECUTE_TRANSACTION_ACTION":
                break
        assert body(m)["type"] == "SIGNATURE" and m["tag"] == tag
        time.sleep(0.3)
        stag = pos.request("SUBMIT_SIGNATURE", {"signature": "iVBORw0KGgoAAAANSUhEUg=="}, DEVICE)
        answer = pos.recv()
        assert (answer["type"], answer["tag"], answer["status"]) == ("SUBMIT_SIGNATURE_RESPONSE", stag, "OK")
        _, final = pos.until_final(tag)
        assert body(final)["transaction"]["status"] == "APPROVED"

        # abort while the terminal waits for the card
        tag = pos.execute(3.00)
        first = pos.recv()
        assert body(first)["abortable"] is True
        atag = pos.request("ABORT_TRANSACTION", None, DEVICE)
        answer = pos.recv()
        assert (answer["type"], answer["tag"], answer["status"]) == ("ABORT_TRANSACTION_RESPONSE", atag, "OK")
        _, final = pos.until_final(tag)
        tx = body(final)["transaction"]
        assert (final["status"], tx["status"], tx["statusDetails"]["code"]) == ("OK", "ABORTED", "ABORT")

        # refund the payment by its identifier, then look both up
        rtag = pos.request("REFUND_TRANSACTION", {"transactionIdentifier": paid, "amount": 2.50})
        updates, final = pos.until_final(rtag)
        refund = body(final)["transaction"]
        assert not updates and final["type"] == "REFUND_TRANSACTION_RESPONSE"
        assert (refund["type"], refund["status"], refund["amount"]) == ("REFUND", "APPROVED", 2.5)
        assert refund["referencedTransactionIdentifier"] == paid

        pos.request("GET_TRANSACTION", {"customIdentifier": "order-17"})
        found = body(pos.recv())["transaction"]
        assert (found["identifier"], found["status"], found["subject"]) == (paid, "APPROVED", "Two coffees")
        pos.request("GET_TRANSACTION", {"transactionIdentifier": refund["identifier"]})
        assert body(pos.recv())["transaction"]["amount"] == 2.5
    finally:
        pos.close()
    out = fw.output()
    assert '"merchantSecret":"***"' in out.replace(" ", "") and "iVBORw0KGgo" not in out


def test_login_is_kept_per_server_and_new_sockets_work(firmware):
    """KA1-style: log in over one WebSocket, pay over a new one, look up over TCP."""
    fw = firmware()
    a = connect(fw, "ws")
    assert a.login()["status"] == "OK"
    a.close()
    b = connect(fw, "ws")
    tag = b.execute(4.00, customIdentifier="k-1")
    _, final = b.until_final(tag)
    assert body(final)["transaction"]["status"] == "APPROVED"
    b.close()
    c = connect(fw, "tcp")
    c.request("GET_TRANSACTION", {"customIdentifier": "k-1"})
    assert body(c.recv())["transaction"]["status"] == "APPROVED"
    c.close()


def test_several_pos_connections_one_transaction_at_a_time(firmware):
    fw = firmware({"delays": {"card_ms": 1500}})
    a, b = connect(fw, "tcp"), connect(fw, "ws")
    try:
        a.login()
        tag = a.execute(9.00)
        assert a.recv()["type"] == "EXECUTE_TRANSACTION_UPDATE"
        t0 = time.monotonic()
        btag = b.execute(5.00)
        busy = b.recv()
        assert time.monotonic() - t0 < 1.0
        assert (busy["tag"], busy["status"], busy["error"]["type"]) == (btag, "ERROR", "ACCESSORY_BUSY")
        b.request("GET_TRANSACTION", {"transactionIdentifier": "UST00001-000001"})
        pending = b.recv()
        assert body(pending)["transaction"]["status"] == "PENDING"  # still usable
        _, final = a.until_final(tag)
        assert body(final)["transaction"]["status"] == "APPROVED"
    finally:
        a.close()
        b.close()


def test_pos_vanishing_mid_transaction_is_recorded_undelivered(firmware):
    fw = firmware({"delays": {"card_ms": 800}})
    a = connect(fw, "tcp")
    a.login()
    a.execute(6.50, customIdentifier="gone-1")
    assert a.recv()["type"] == "EXECUTE_TRANSACTION_UPDATE"
    a.close()
    assert fw.wait_for("core undelivered #1 approved", 5) is not None
    b = connect(fw, "ws")
    b.request("GET_TRANSACTION", {"customIdentifier": "gone-1"})
    assert body(b.recv())["transaction"]["status"] == "APPROVED"  # charged once, found
    b.close()


def test_lost_answer_closes_then_lookup_finds_it(firmware):
    fw = firmware()
    a = connect(fw, "ws")
    a.login()
    tag = a.execute(1.07, customIdentifier="lost-1")  # .07: approved, answer lost
    _, final = a.until_final(tag)
    assert final is None
    assert fw.wait_for("core undelivered #1 approved", 3) is not None
    b = connect(fw, "tcp")
    b.request("GET_TRANSACTION", {"customIdentifier": "lost-1"})
    assert body(b.recv())["transaction"]["status"] == "APPROVED"
    b.close()


def test_oversize_length_is_refused_without_allocating(firmware):
    fw = firmware({"p3": {"max_message": 1024}})
    for size in (0xFFFFFFFF, 1025):
        s = TCP(fw.address("p3-tcp"))
        s.send_bytes(struct.pack(">I", size))
        m = s.recv_raw()
        assert b'"MESSAGE_INVALID"' in m and (b"%d bytes" % size) in m
        assert s.recv_raw() is None  # and closed
        s.close()
    assert "MemoryError" not in fw.output()


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_json_nested_deep_is_refused_and_the_connection_kept(firmware, transport):
    fw = firmware()
    pos = connect(fw, transport)
    pos.send(b"[" * 2000 + b"]" * 2000)
    m = pos.recv()
    assert (m["type"], m["status"], m["error"]["type"]) == ("ERROR_RESPONSE", "ERROR", "MESSAGE_INVALID")
    assert pos.login()["status"] == "OK"
    pos.close()


def test_half_a_frame_times_out_and_nothing_leaks(firmware):
    fw = firmware({"timeouts": {"request_ms": 500}})
    tcp = socket.create_connection(fw.address("p3-tcp"))
    tcp.sendall(b"\x00\x00\x00\x40{\"tag\"")
    ws = socket.create_connection(fw.address("p3-ws"))
    ws.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    for s in (tcp, ws):
        s.settimeout(5)
        assert s.recv(100) == b""  # closed by the terminal
        s.close()
    assert fw.wait_for("p3-tcp truncated", 2) is not None
    assert fw.wait_for("p3-ws silent", 2) is not None
    c = connect(fw, "tcp")  # still serving
    assert c.login()["status"] == "OK"
    c.close()


def test_a_frame_cut_short_is_logged_as_such_on_both_transports(firmware):
    """Half a frame, then the POS closes: "gone ... closed mid-frame"; half
    a WebSocket frame and silence: "truncated" after request_ms.  Either
    way the terminal closes and goes on serving."""
    fw = firmware({"timeouts": {"request_ms": 500}})
    upgrade = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    half = b"\x81\x90\x01\x02\x03\x04{\"tag\""  # 16 bytes announced, 6 sent
    for transport, first, then in (("tcp", b"", b"\x00\x00\x00\x40{\"tag\""), ("ws", upgrade, half)):
        for close in (True, False):
            s = socket.create_connection(fw.address("p3-" + transport))
            s.settimeout(5)
            if first:
                s.sendall(first)
                assert s.recv(200).startswith(b"HTTP/1.1 101 ")
            s.sendall(then)
            mark = len(fw.lines)
            if close:
                s.close()
                assert fw.wait_for("p3-%s gone 127.0.0.1 closed mid-frame" % transport, 3, mark) is not None
            else:
                s.recv(100)  # the terminal closes (over WebSocket after its close frame)
                s.close()
                assert fw.wait_for("p3-%s truncated" % transport, 3, mark) is not None
    c = connect(fw, "ws")  # still serving
    assert c.login()["status"] == "OK"
    c.close()


def test_ws_ping_fragments_and_close_with_a_real_client(firmware):
    fw = firmware()
    from websockets.sync.client import connect as ws_connect
    with ws_connect(url(fw), ping_interval=None) as ws:
        ws.ping(b"are you there").wait(5)  # answered with a pong
        login = ('{"tag":"f1","type":"LOGIN_MERCHANT_REQUEST","loginMerchantRequest":'
                 '{"providerMode":"TEST","merchantIdentifier":"understudy","merchantSecret":"understudy"}}')
        ws.send([login[:20], login[20:50], login[50:]])  # one message in three fragments
        assert '"status":"OK"' in ws.recv(5)
    assert fw.wait_for("p3-ws open", 2) is not None


def test_idle_connections_are_closed(firmware):
    fw = firmware({"p3": {"idle_s": 1}})
    tcp = TCP(fw.address("p3-tcp"))
    from websockets.sync.client import connect as ws_connect
    with ws_connect(url(fw), ping_interval=None) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(5)
        assert closed.value.rcvd.code == 1001  # going away
    assert tcp.recv_raw(5) is None  # closed, after 1 s of silence
    tcp.close()
    assert fw.wait_for("p3-tcp idle 127.0.0.1 closed after 1 s", 2) is not None


def test_wrong_ws_path_and_plain_http(firmware):
    fw = firmware({"listeners": {"p3-ws": {"path": "/p3"}}})
    s = socket.create_connection(fw.address("p3-ws"), timeout=5)
    s.sendall(b"GET /p3 HTTP/1.1\r\nHost: x\r\n\r\n")  # a browser, not a WebSocket
    assert s.recv(200).startswith(b"HTTP/1.1 426 Upgrade Required")
    s.close()
    with pytest.raises(InvalidStatus) as refused:
        WS(url(fw, "/"))
    assert refused.value.response.status_code == 404
    pos = Client(WS(url(fw, "/p3")))
    assert pos.login()["status"] == "OK"
    pos.close()


def test_busy_across_personalities(firmware):
    """A Concert transaction running makes P3 answer ACCESSORY_BUSY, and back."""
    from concert_client import exchange, odoo
    fw = firmware({"delays": {"slow_auth_ms": 1200}})
    box = {}
    th = threading.Thread(target=lambda: box.setdefault("a", exchange(fw.address("concert-ip"), odoo(1205))))
    th.start()
    assert fw.wait_for("core start #1", 5) is not None
    pos = connect(fw, "tcp")
    pos.login()
    pos.execute(5.00)
    m = pos.recv()
    assert m["error"]["type"] == "ACCESSORY_BUSY"
    pos.close()
    th.join(10)
    assert b"AE00210" in box["a"]


def test_settings_login_open_and_identifier(firmware):
    fw = firmware({"terminal_id": "SHOP0042", "p3": {"merchant_identifier": "", "merchant_secret": "",
                                                     "require_login": False, "device": "counter1"}})
    pos = connect(fw, "ws")
    tag = pos.request("EXECUTE_TRANSACTION", {"transactionParameters": {
        "amount": "3.20", "currency": "USD", "type": "CHARGE", "autoCapture": True}}, "devices/counter1")
    _, final = pos.until_final(tag)
    tx = body(final)["transaction"]
    assert tx["identifier"] == "SHOP0042-000001" and tx["currency"] == "USD" and tx["amount"] == 3.2
    assert pos.login(merchantIdentifier="anyone", merchantSecret="anything")["status"] == "OK"
    pos.close()


def test_bad_p3_settings_are_reported_and_defaults_used(firmware):
    fw = firmware({"p3": {"device_type": "TOASTER", "max_message": 10, "device": "a/b"},
                   "listeners": {"p3-ws": {"path": "p3"}}})
    out = fw.output()
    assert 'p3.device_type: "TOASTER" not allowed (MOCK, MIURA, VERIFONE); using "VERIFONE"' in out
    assert "p3.max_message: 10 not allowed (256..65536); using 8192" in out
    assert 'p3.device: "a/b" not allowed' in out
    assert 'listeners.p3-ws.path: "p3" not allowed (a path starting with /); using "/"' in out
    pos = connect(fw, "ws")  # on the default path
    assert body(pos.login())["devices"][0]["type"] == "VERIFONE"
    pos.close()


def test_allowed_ips_and_a_browser_on_the_tcp_port(firmware):
    fw = firmware({"allowed_ips": ["192.0.2.10"]})
    s = socket.create_connection(fw.address("p3-ws"), timeout=5)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        assert s.recv(100) == b""  # refused before anything is read
    except ConnectionResetError:  # closed on unread bytes: a reset, no answer either
        pass
    s.close()
    assert fw.wait_for("p3-ws refused 127.0.0.1 not in allowed_ips", 2) is not None
    fw2 = firmware()
    t = TCP(fw2.address("p3-tcp"))
    t.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # "GET " read as a byte count: refused
    m = t.recv_raw()
    assert b'"MESSAGE_INVALID"' in m and b"1195725856 bytes" in m
    assert t.recv_raw() is None
    t.close()
