"""Abuse against the running firmware: what a hostile or broken peer sends.

Every test here runs the .mpy build (what boards run) once, on 127.0.0.1
and ptys only, with bounded loops and short time-outs, and ends with the
same checks (`after`): a normal register still completes a payment on
every protocol it abused, the heap is back at its baseline (the least of
several quiet `heap=` samples before and after: one sample is noise), the
journal holds every transaction the test completed, and (the fixture's
teardown) the firmware printed no Traceback and no MemoryError.
"""
import glob
import json
import os
import random
import re
import socket
import ssl
import struct
import time

import pytest
import serial

import p3_client
from concert_client import exchange, odoo
from synqpay_client import KEY, Link, unverified_context
from understudy import journal_table as journal_tool
from wire import concert_link as link
from wire import concert_tlv as tlv
from wire import synqpay_link as L

HEAP_RE = re.compile(r"core done #(\d+) (\S+) .*heap=(\d+)")
HEAP_SLACK = 3072  # bytes: quiet floors differ by up to ~2 KB without a leak (dict resizes, fragments)
STATUS = b"CZ0040300CJ012012345678901CA00201CD001T"
QUIET = 3.5  # s: past p3.idle_s and synqpay.idle_s (3 s here) and request_ms (1 s)


@pytest.fixture
def fw_root():
    """Once, on the build boards run: abuse takes long enough."""
    return "mpy"


def config(extra=None):
    cfg = {"log": {"heap": True, "frames": False},
           "timeouts": {"request_ms": 1000, "gap_ms": 100},
           "p3": {"idle_s": 3}, "synqpay": {"idle_s": 3}}
    for k, v in (extra or {}).items():
        cfg[k] = dict(cfg.get(k, {}), **v) if isinstance(v, dict) else v
    return cfg


def paired(tmp_path):
    d = tmp_path / "board"
    d.mkdir(exist_ok=True)
    (d / "synqpay.key").write_text(KEY.hex() + "\n")
    return str(d)


class Register:
    """The well-behaved registers, and the bookkeeping of what they completed."""

    def __init__(self, fw):
        self.fw = fw
        self.done = {}  # transaction number -> result, from the firmware's own lines

    def _heap(self, mark):
        while True:
            i = self.fw.wait_for("heap=", 10, mark)
            assert i is not None, self.fw.output()[-3000:]
            m = HEAP_RE.search(self.fw.lines[i])
            if m.group(1) != "0":  # not a request refused before it was recorded, logged late
                break
            mark = i + 1
        self.done[int(m.group(1))] = m.group(2)
        return int(m.group(3))

    def concert(self, cents=1250):
        mark = len(self.fw.lines)
        a = tlv.decode(exchange(self.fw.address("concert-ip"), odoo(cents)))
        assert a["AE"] == "10", a
        return self._heap(mark)

    def p3(self, transport="tcp"):
        mark = len(self.fw.lines)
        c = p3_client.connect(self.fw, transport)
        try:
            assert c.login()["status"] == "OK"
            tag = c.execute(12.50)
            _, final = c.until_final(tag)
            assert final["status"] == "OK" and final["executeTransactionResponse"][
                "transaction"]["status"] == "APPROVED", final
        finally:
            c.close()
        return self._heap(mark)

    def synqpay(self, name="synqpay", ref=None):
        mark = len(self.fw.lines)
        tls = unverified_context() if name.endswith("tls") else None
        lk = Link(self.fw.address(name), tls=tls)
        try:
            ref = ref or "abuse-%d" % random.randrange(10 ** 9)
            a = lk.call("startTransaction", {"paymentMethod": "CREDIT_CARD", "transactionType": "SALE",
                                             "referenceId": ref, "amount": 1250})
            assert a["result"]["result"] == "OK", a
        finally:
            lk.close()
        return self._heap(mark)

    def serial(self, amount="1250"):
        """A Concert V3 payment on the serial line, link layer by hand."""
        mark = len(self.fw.lines)
        path, baud = self.fw.serial("concert-serial")
        with serial.Serial(path, baud, timeout=5) as s:
            s.reset_input_buffer()
            req = b"CZ0040300CJ012012345678901CA00201CE003978CD0010CB%03d%s" % (len(amount), amount.encode())
            ans = None
            for _ in range(5):  # the line may still be settling after noise: retry as a register does
                s.write(b"\x05")
                if s.read(1) != b"\x06":
                    time.sleep(1.2)
                    s.reset_input_buffer()
                    continue
                s.write(link.frame(req))
                if s.read(1) != b"\x06":
                    continue
                s.write(b"\x04")
                ans = _receive(s)
                break
        assert ans is not None, self.fw.output()[-3000:]
        assert tlv.decode(ans)["AE"] == "10", ans
        return self._heap(mark)

    def p3ws(self):
        return self.p3("ws")

    def synqpay_tls(self):
        return self.synqpay("synqpay-tls")

    def warm(self):
        """One of each: every personality's modules loaded, as after abuse."""
        for k in ("concert", "p3", "p3ws", "synqpay", "synqpay_tls"):
            getattr(self, k)()

    def floor(self, kinds=("concert",), n=4):
        """The least heap= of n quiet rounds of each kind of payment."""
        return min(getattr(self, k)() for _ in range(n) for k in kinds)


def _receive(s):
    """The terminal's answer session: ENQ, frames (ACKed), EOT."""
    assert s.read(1) == b"\x05"
    s.write(b"\x06")
    data = b""
    while True:
        stx = s.read(1)
        if stx == b"\x04":
            return data
        assert stx == b"\x02", stx
        body = b""
        while True:
            c = s.read(1)
            assert c, "frame cut"
            if c in (b"\x03", b"\x17"):
                break
            body += c
        s.read(1)  # LRC
        s.write(b"\x06")
        data += body


def after(fw, reg, base, kinds=("concert",), state_dir=None, n=4, slack=HEAP_SLACK):
    """The register still works, the heap is back, nothing said Traceback,
    and (when state_dir is given) the journal holds every transaction."""
    time.sleep(QUIET)  # connections the abuse left open reach their time-outs
    later = reg.floor(kinds, n)
    print("heap floor: %d before, %d after (%+d)" % (base, later, later - base))
    assert later <= base + slack, "heap %d after, %d before:\n%s" % (
        later, base, fw.output()[-3000:])
    assert not fw.problems(), fw.output()
    if state_dir:
        check_journal(fw, reg, state_dir)
    return later


def twice(fw, reg, kinds, state_dir, abuse):
    """Abuse once, measure, abuse again, check.  The first round loads what
    the abuse makes the firmware load (a personality's modules on its first
    client: Synqpay is 25 KB, docs/MEMORY.md), so the baseline is the heap
    after it; the second round must leave nothing behind.  Returns the
    (first round's, second round's) heap deltas."""
    # the checks of after() load concert_tickets (the last-transaction query) once: now
    exchange(fw.address("concert-ip"), STATUS)
    warm = reg.floor(kinds, 3)
    abuse()
    base = after(fw, reg, warm, kinds, state_dir, slack=1 << 20)
    abuse()
    later = after(fw, reg, base, kinds, state_dir)
    return base - warm, later - base


def check_journal(fw, reg, state_dir):
    """Every transaction the firmware said was done is in the journal file,
    with that result; and the protocol's own last-transaction query agrees."""
    last = max(reg.done)
    s = tlv.decode(exchange(fw.address("concert-ip"), STATUS))
    assert s["AE"] == "10" or last != max(reg.done), s
    paths = [p for p in glob.glob(os.path.join(state_dir, "**", "*"), recursive=True)
             if os.path.isfile(p) and open(p, "rb").read(3) == b"USJ"]
    assert paths, os.listdir(state_dir)
    txns, _, reader = journal_tool.read(paths[0])
    by_no = {t["no"]: t for t in txns}
    for no, result in reg.done.items():
        assert no in by_no and by_no[no]["result"] == result, (no, result, by_no.get(no))
    assert reader.corrupt == 0


def connect(addr, timeout=3.0):
    return socket.create_connection(addr, timeout=timeout)


def rst(s):
    """Close with a reset (SO_LINGER 0), as a crashed register's OS does."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def blast(addr, data, read=True, tls=False):
    """Send data on a new connection; read what comes back for a moment; close."""
    try:
        s = connect(addr, 2.0)
        if tls:
            s = unverified_context().wrap_socket(s, server_hostname=addr[0])
        s.sendall(data)
        if read:
            s.settimeout(0.4)
            try:
                while s.recv(4096):
                    pass
            except (socket.timeout, OSError, ssl.SSLError):
                pass
        rst(s) if random.random() < 0.5 else s.close()
    except (OSError, ssl.SSLError):
        pass  # the terminal may refuse or reset: that is its right


# -- the tests


def test_random_truncated_and_oversize_input_on_every_tcp_port(firmware, tmp_path):
    state = paired(tmp_path)
    fw = firmware(config(), state_dir=state)
    reg = Register(fw)
    kinds = ("concert", "p3", "synqpay")
    reg.warm()
    rnd = random.Random(11)
    good = {
        "concert-ip": odoo(1250),
        "p3-tcp": p3_client.json.dumps({"type": "LOGIN_MERCHANT_REQUEST", "tag": "x",
                                        "loginMerchantRequest": p3_client.SECRET}).encode(),
        "synqpay": L.frame(L.REQUEST, b'{"jsonrpc":"2.0","id":"1","method":"getStatus"}', KEY),
    }
    good["p3-tcp"] = struct.pack(">I", len(good["p3-tcp"])) + good["p3-tcp"]
    good["p3-ws"] = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    good["synqpay-tls"] = good["synqpay"]
    oversize = {
        "concert-ip": b"CZ0040300CB999" + b"1" * 999 + b"CA002" * 600,
        "p3-tcp": b"\xff\xff\xff\xff" + b"{" * 300,
        "synqpay": b"\x02\x01" + KEY + b"\x7f\xff\xff\xff" + b"x" * 300,
        "p3-ws": good["p3-ws"] + b"\x81\xff" + b"\x7f" + b"\xff" * 7 + b"abcd" + b"y" * 100,
    }
    oversize["synqpay-tls"] = oversize["synqpay"]
    cases = [0]

    def abuse():
        for name in ("concert-ip", "p3-tcp", "p3-ws", "synqpay", "synqpay-tls"):
            addr = fw.address(name)
            tls = name.endswith("tls")
            for i in range(5):
                blast(addr, bytes(rnd.getrandbits(8) for _ in range(rnd.choice([1, 7, 64, 700]))),
                      read=i % 2 == 0, tls=tls)
                g = good[name]
                blast(addr, g[:rnd.randrange(1, len(g))], read=i % 3 == 0, tls=tls)  # truncated
                cases[0] += 2
            blast(addr, oversize[name], tls=tls)
            blast(addr, good[name][:4] + bytes(rnd.getrandbits(8) for _ in range(200)), tls=tls)
            cases[0] += 2
        # a frame of mutated bytes on a P3 WebSocket that did open
        for i in range(5):
            s = connect(fw.address("p3-ws"))
            s.sendall(good["p3-ws"])
            s.settimeout(2)
            assert s.recv(4096).startswith(b"HTTP/1.1 101")
            s.sendall(bytes(rnd.getrandbits(8) for _ in range(rnd.choice([2, 10, 300]))))
            time.sleep(0.1)
            rst(s) if i % 2 else s.close()
            cases[0] += 1
    twice(fw, reg, kinds, state, abuse)
    assert cases[0] >= 120, cases
    # every refusal was logged, none crashed a listener
    out = fw.output()
    for what in ("concert-ip", "p3-tcp", "p3-ws", "synqpay"):
        assert what + " " in out


def test_slow_senders_are_cut_and_do_not_hold_the_terminal(firmware, tmp_path):
    """Registers that send one byte at a time: the whole request (or
    handshake, or frame) must come within request_ms, so a few of them
    cannot keep the client slots forever."""
    state = paired(tmp_path)
    fw = firmware(config(), state_dir=state)
    reg = Register(fw)
    reg.warm()
    ws_head = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    cuts = []

    def abuse():
        slow = []
        for name, data in (("concert-ip", odoo(1250) * 3), ("concert-ip", odoo(1250) * 3),
                           ("concert-ip", odoo(1250) * 3), ("concert-ip", odoo(1250) * 3),
                           ("p3-ws", ws_head), ("p3-tcp", b"\x00\x00\x00\x40" + b"{" * 60)):
            slow.append((name, connect(fw.address(name)), data))
        closed_at = {}
        t0 = time.monotonic()
        k = 0
        while len(closed_at) < len(slow) and time.monotonic() - t0 < 6:
            for i, (_, s, data) in enumerate(slow):
                if i in closed_at:
                    continue
                try:
                    s.sendall(data[k:k + 1])  # one byte per 0.4 s each
                    s.settimeout(0.01)
                    try:
                        if s.recv(4096) == b"":
                            closed_at[i] = time.monotonic() - t0
                    except socket.timeout:
                        pass
                except OSError:
                    closed_at[i] = time.monotonic() - t0
            k += 1
            time.sleep(0.4)
        for _, s, _ in slow:
            s.close()
        cuts.append(closed_at)
        # request_ms is 1 s: each was cut within about that (then AF 09 for Concert)
        assert len(closed_at) == len(slow) and max(closed_at.values()) < 3.5, (
            closed_at, fw.output()[-3000:])

    twice(fw, reg, ("concert",), state, abuse)
    assert fw.wait_for("concert-ip slow 127.0.0.1", 1) is not None
    assert fw.wait_for("p3-ws silent 127.0.0.1", 1) is not None
    print("slow senders cut after (s):", cuts)


def test_a_storm_of_200_connections_and_half_open_ones(firmware, tmp_path):
    state = paired(tmp_path)
    fw = firmware(config(), state_dir=state)
    reg = Register(fw)
    reg.warm()
    kinds = ("concert", "p3", "synqpay")
    ports = [fw.address(n) for n in ("concert-ip", "p3-tcp", "p3-ws", "synqpay")]
    made = []

    def abuse():
        socks = []
        n = 0
        for i in range(200):
            s = socket.socket()
            try:
                s.settimeout(2)
                s.connect(ports[i % len(ports)])
                n += 1
                if i % 3 == 0:
                    s.shutdown(socket.SHUT_WR)  # half-open: says nothing, closed its sending side
                socks.append(s)
            except OSError:
                s.close()  # the backlog is full: a refusal is fine
        made.append(n)
        time.sleep(0.5)
        for i, s in enumerate(socks):
            rst(s) if i % 2 else s.close()

    twice(fw, reg, kinds, state, abuse)
    assert min(made) >= 100, made


def test_clients_resetting_mid_answer_lose_no_transaction(firmware, tmp_path):
    """A register that resets its connection (SO_LINGER 0) while the answer
    is on its way: the transaction is in the journal, marked undelivered,
    and the protocol's last-transaction query finds it."""
    state = paired(tmp_path)
    fw = firmware(config({"delays": {"slow_auth_ms": 600}}), state_dir=state)
    reg = Register(fw)
    reg.warm()
    kinds = ("concert", "p3", "synqpay")

    def note(mark):
        i = fw.wait_for("heap=", 5, mark)
        assert i is not None, fw.output()[-2000:]
        m = HEAP_RE.search(fw.lines[i])
        reg.done[int(m.group(1))] = m.group(2)

    def abuse():
        for _ in range(2):
            # Concert: the slow outcome (amount ending in 05), reset before the answer
            s = connect(fw.address("concert-ip"))
            mark = len(fw.lines)
            s.sendall(odoo(1205))
            time.sleep(0.3)
            rst(s)
            assert fw.wait_for("core undelivered #", 5, mark) is not None, fw.output()[-2000:]
            note(mark)
            st = tlv.decode(exchange(fw.address("concert-ip"), STATUS))
            assert st["AE"] == "10" and st["CB"] == "1205", st
            # P3: reset while the updates stream
            c = p3_client.connect(fw, "tcp")
            assert c.login()["status"] == "OK"
            mark = len(fw.lines)
            c.execute(12.05)
            time.sleep(0.2)
            rst(c.t.s)
            note(mark)
            # Synqpay: reset mid-transaction; the answer is found by the next link
            lk = Link(fw.address("synqpay"))
            mark = len(fw.lines)
            ref = "rst-%d" % random.randrange(10 ** 9)
            lk.send(L.frame(L.REQUEST, json.dumps(
                {"jsonrpc": "2.0", "id": "9", "method": "startTransaction",
                 "params": {"paymentMethod": "CREDIT_CARD", "transactionType": "SALE",
                            "referenceId": ref, "amount": 1205}}).encode(), KEY))
            time.sleep(0.2)
            rst(lk.s)
            note(mark)
            lk = Link(fw.address("synqpay"))
            got = lk.call("getTransaction", {"lookupMethod": "REF_ID", "lookupValue": ref})
            assert got["result"]["result"] == "OK", got
            lk.close()

    twice(fw, reg, kinds, state, abuse)


def test_line_noise_on_the_serial_lines(firmware, tmp_path):
    state = paired(tmp_path)
    fw = firmware(config(), state_dir=state)
    reg = Register(fw)
    reg.serial(), reg.concert()
    rnd = random.Random(7)
    path, baud = fw.serial("concert-serial")
    spath, sbaud = fw.serial("synqpay-serial")
    noise = [0]

    def abuse():
        with serial.Serial(path, baud, timeout=0.05) as s, serial.Serial(spath, sbaud, timeout=0.05) as q:
            for i in range(30):
                burst = bytes(rnd.getrandbits(8) for _ in range(rnd.choice([1, 3, 20, 120])))
                if i % 4 == 0:  # noise inside a session: ENQ, then a frame hit by noise
                    burst = b"\x05" + link.frame(odoo(1250))[:rnd.randrange(2, 30)] + burst
                s.write(burst)
                q.write(burst[::-1])
                noise[0] += 2 * len(burst)
                s.read(256)
                q.read(256)
                time.sleep(0.02)
            time.sleep(1.6)  # byte_ms and reply_ms (0.5 s, 1 s): the link gives up the broken session
            s.read(4096)
            q.read(4096)

    twice(fw, reg, ("serial", "concert"), state, abuse)
    assert noise[0] > 1000


def test_fields_too_long_for_the_journal_do_not_wedge_the_terminal(firmware, tmp_path):
    """A request whose record the journal cannot hold (over 1 KB: a 999-character
    Concert CF, a 3,000-character P3 customIdentifier, a 1,100-digit Synqpay
    amount) used to leave the core busy for good (Concert, P3) after a
    Traceback.  Each is now refused with its protocol's error, nothing is
    recorded, and the next register is served."""
    state = paired(tmp_path)
    fw = firmware(config(), state_dir=state)
    reg = Register(fw)
    reg.warm()

    def abuse():
        a = tlv.decode(exchange(fw.address("concert-ip"), odoo(1250) + b"CF999" + b"R" * 999))
        assert a["AE"] == "01", a
        reg.concert()
        c = p3_client.connect(fw, "tcp")
        assert c.login()["status"] == "OK"
        _, final = c.until_final(c.execute(12.50, customIdentifier="C" * 3000))
        assert final["status"] == "ERROR", final
        c.close()
        reg.p3()
        lk = Link(fw.address("synqpay"))
        for amount in (10 ** 1100, 10 ** 12):
            got = lk.call("startTransaction", {"paymentMethod": "CREDIT_CARD", "transactionType": "SALE",
                                               "referenceId": "big", "amount": amount})
            assert got["error"]["code"] == 103, got
        lk.close()
        reg.synqpay()

    twice(fw, reg, ("concert", "p3", "synqpay"), state, abuse)


def test_the_control_api_under_abuse(firmware, tmp_path):
    """The web port takes random bytes, cut and oversize heads, bodies that
    are not JSON or too big, a burst of wrong tokens and a storm of
    connections; afterwards the right token still drives the terminal (a
    queued decline reaches the next Concert payment) and every refusal is
    an HTTP status, not a crash."""
    token = "t0ken-under-abuse"
    state = paired(tmp_path)
    fw = firmware(config({"web": {"token": token, "max_clients": 4}}), state_dir=state)
    reg = Register(fw)
    reg.warm()
    web = fw.address("web")
    rnd = random.Random(8)

    def http(method, path, body=b"", tok=None, extra=b""):
        head = b"%s %s HTTP/1.1\r\nHost: x\r\n" % (method, path)
        if tok is not None:
            head += b"Authorization: Bearer %s\r\n" % tok
        head += b"Content-Length: %d\r\n%s\r\n" % (len(body), extra)
        s = connect(web, 3.0)
        s.sendall(head + body)
        got = b""
        try:
            while True:
                c = s.recv(4096)
                if not c:
                    break
                got += c
        except OSError:
            pass
        s.close()
        return int(got.split(b" ", 2)[1]) if got.startswith(b"HTTP/1.1 ") else None

    statuses = {}

    def abuse():
        for _ in range(10):
            blast(web, bytes(rnd.getrandbits(8) for _ in range(rnd.choice([1, 9, 300, 3000]))))
        good = b"POST /api/queue HTTP/1.1\r\nHost: x\r\nContent-Length: 26\r\n\r\n"
        for _ in range(5):
            blast(web, good[:rnd.randrange(1, len(good))])  # cut heads
        for case, want in (
                ((b"GET", b"/api/" + b"x" * 3000), 431),  # a head over 2 KB
                ((b"POST", b"/api/queue", b"{not json", token.encode()), 400),
                ((b"POST", b"/api/queue", b"[1, 2]", token.encode()), 400),
                ((b"POST", b"/api/queue", b"{}" + b" " * 5000, token.encode()), 413),
                ((b"PUT", b"/api/config", b'{"web": {"port": "x"}}', token.encode()), 400),
                ((b"DELETE", b"/api/state", b"", token.encode()), 405),
                ((b"GET", b"/../../etc/passwd"), 404)):
            got = http(*case)
            statuses.setdefault(want, []).append(got)
        for i in range(30):  # wrong tokens, each logged
            statuses.setdefault(401, []).append(
                http(b"POST", b"/api/reset", b"{}", tok=b"guess-%d" % i if i % 3 else None))
        socks = []
        for _ in range(40):  # more than max_clients at once
            try:
                socks.append(connect(web, 2.0))
            except OSError:
                pass
        time.sleep(0.3)
        for i, s in enumerate(socks):
            rst(s) if i % 2 else s.close()
        # the right token still works (once the storm's slots are given
        # back: an extra client is closed at once), and the terminal does
        # what it says
        deadline = time.monotonic() + 3
        while True:
            got = http(b"POST", b"/api/queue", b'{"outcomes": ["decline"]}', tok=token.encode())
            if got is not None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert got == 200, got
        assert tlv.decode(exchange(fw.address("concert-ip"), odoo(1250)))["AE"] == "01"
        reg.concert()

    twice(fw, reg, ("concert",), state, abuse)
    for want, got in statuses.items():
        assert set(got) == {want}, (want, got)
    out = fw.output()
    assert out.count("401 wrong or missing token") >= 60
    assert token not in out and "guess-" not in out
