"""Concert over serial, end to end: the firmware in the unix port on one end
of a pty null modem, registers on the other end through pyserial, exactly
as they would open /dev/ttyACM0: raw bytes (golden transcripts), and the
real client libraries pyTeliumManager 2.4.2 and pypostelium 0.0.5."""
import glob
import json
import logging
import os
import subprocess
import threading
import time

import pypostelium
import pytest
import serial
import telium

from concert_client import exchange, odoo
from golden import Transcript
from understudy import paths
from understudy.launch import micropython
from understudy.nullmodem import NullModem
from wire import concert_link as link
from wire import concert_tlv as tlv

GOLDEN = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "golden", "concert_serial", "*.txt")))
ENQ, ACK, NAK, EOT = b"\x05", b"\x06", b"\x15", b"\x04"
# --update-goldens records what the terminal says until it has been silent
# for QUIET (shorter than byte_ms and reply_ms, so that the register's next
# move comes in time).  Before an exchange, "@wait <ms>" waits that long for
# the first byte (an answer that comes after a time-out), "@quiet <ms>" makes
# the silence that ends the exchange that long (a terminal repeating itself).
QUIET = 0.25


def timings(t):
    """{exchange index: (first byte wait, quiet)} in seconds, from @wait/@quiet."""
    out, n, w, q = {}, 0, None, None
    for ln in t.lines:
        if ln.startswith("@wait "):
            w = int(ln[6:]) / 1000.0
        elif ln.startswith("@quiet "):
            q = int(ln[7:]) / 1000.0
        elif ln.startswith("> "):
            out[n] = (w or q or QUIET, q or QUIET)
            n += 1
            w = q = None
    return out


def line(fw, timeout=8.0):
    path, baud = fw.serial("concert-serial")
    return serial.Serial(path, baud, timeout=timeout)


def converse(fw, t, update):
    got = []
    times = timings(t)
    with line(fw) as s:
        for n, (pieces, expected, _) in enumerate(t.exchanges):
            for i, p in enumerate(pieces):
                if i:
                    time.sleep(0.05)
                s.write(p)
            if update:
                s.timeout, quiet = times[n]
                buf = s.read(1)  # returns at the first byte
                s.timeout = quiet
                while buf:
                    chunk = s.read(4096)  # returns when quiet has passed
                    if not chunk:
                        break
                    buf += chunk
                got.append(buf)
            elif expected:
                got.append(s.read(len(expected)))
            else:
                s.timeout = 0.3
                got.append(s.read(1))
                s.timeout = 8.0
        s.timeout = 0.3
        trailing = s.read(64)
    return got, trailing


@pytest.mark.parametrize("path", GOLDEN, ids=[os.path.basename(p)[:-4] for p in GOLDEN])
def test_golden(firmware, path, request):
    t = Transcript(path)
    fw = firmware(t.config)
    update = request.config.getoption("--update-goldens")
    got, trailing = converse(fw, t, update)
    if update:
        t.update(got)
        pytest.skip("golden rewritten")
    for (pieces, expected, _), answer in zip(t.exchanges, got):
        assert answer == expected, "after %r" % pieces
    assert trailing == b""


def test_golden_answers_are_well_formed_frames():
    """Every frame the terminal sends in the transcripts has a right LRC and at
    most 512 data characters; V2 answers are 25 or 80 characters."""
    seen = 0
    for path in GOLDEN:
        for _, expected, _ in Transcript(path).exchanges:
            i = expected.find(b"\x02") if expected else -1
            while i >= 0:
                end = min(j for j in (expected.find(b"\x03", i), expected.find(b"\x17", i)) if j > 0)
                data = expected[i + 1:end]
                assert expected[i:end + 2] == link.frame(data, expected[end] == 3), path
                assert len(data) <= 512
                if data[:1].isdigit():
                    assert len(data) in (25, 80), path
                seen += 1
                i = expected.find(b"\x02", end)
    assert seen > 30


# -- the real clients ---------------------------------------------------------

def tpe(fw):
    path, baud = fw.serial("concert-serial")
    return telium.Telium(path, baudrate=baud)


def pay(t, amount, mode="debit", long_answer=True):
    ask = telium.TeliumAsk.new_payment(amount, payment_mode=mode, target_currency="EUR",
                                       collect_payment_source_info=long_answer)
    assert t.ask(ask) is True
    return t.verify(ask)


def test_pytelium_payment_refund_declined_cancelled(firmware):
    fw = firmware()
    t = tpe(fw)
    try:
        a = pay(t, 12.5)
        assert a.has_succeeded and a.amount == 12.5 and a.currency_numeric == "978"
        assert a.card_id.startswith("************0014 ")  # REP: the masked PAN, padded
        a = pay(t, 9.9, "credit")  # TYPE 1: the refund
        assert a.has_succeeded and a.amount == 9.9
        a = pay(t, 12.01)
        assert a.transaction_result == 7 and a.repport.strip() == ""
        a = pay(t, 12.02)
        assert a.transaction_result == 7
        a = pay(t, 12.5, long_answer=False)  # 28-byte answer
        assert a.has_succeeded and a.repport == ""
    finally:
        t.close()
    for n, what in ((1, "approved"), (2, "approved"), (3, "declined decline"), (4, "cancelled cancel")):
        assert fw.wait_for("core done #%d %s" % (n, what), 2) is not None
    assert fw.wait_for("core start #2 refund 990 978 concert-serial", 1) is not None


_OPEN_THRICE = """
from firmware.board import unix
lc = {"device": %r, "bits": 7, "parity": "even", "stop": 1, "baud": 9600}
for i in range(3):
    unix.uart("concert-serial", lc)[0].close()
print("opened 3 times")
"""


def test_a_pty_line_opens_again_after_a_restart():
    """Linux keeps a pty at 8 bits without parity: it ignores 7E1 the first
    time and refuses it (EINVAL) once the line was set, as after a reboot
    on the same pty (the launcher restarts a firmware whose drawn port was
    taken) or a config change.  The listener opens it all the same."""
    m = NullModem()
    try:
        lib = os.path.join(paths.SOURCE, "lib")
        env = dict(os.environ, MICROPYPATH="%s:%s:.frozen" % (paths.SOURCE, lib))
        r = subprocess.run([micropython(), "-c", _OPEN_THRICE % m.firmware_path], env=env,
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    finally:
        m.close()
    assert "opened 3 times" in r.stdout, r.stdout + r.stderr


def test_pytelium_refund_type_is_a_void_of_the_last_matching_payment(firmware):
    fw = firmware()
    t = tpe(fw)
    try:
        assert pay(t, 20.0).has_succeeded
        assert pay(t, 20.0, "refund").has_succeeded  # TYPE 2: cancellation of #1
        assert pay(t, 20.0, "refund").transaction_result == 7  # nothing left to cancel
    finally:
        t.close()
    assert fw.wait_for("core start #2 void 2000 978 concert-serial", 2) is not None
    assert fw.wait_for("concert-serial void no matching transaction", 2) is not None


def postelium(fw, amount, caplog):
    path, _ = fw.serial("concert-serial")
    d = pypostelium.Driver({"telium_terminal_device_name": path})
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="pypostelium"):
        ok = d.transaction_start(json.dumps({"amount": amount, "payment_mode": "card",
                                             "currency_iso": "EUR"}))
    answers = [r.getMessage() for r in caplog.records if r.getMessage().startswith("answer_data")]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert "Answer received from Terminal" in caplog.text, caplog.text
    return ok, answers, errors


@pytest.mark.parametrize("amount,result", [(12.5, "approved -"), (12.01, "declined decline"),
                                           (12.02, "cancelled cancel")])
def test_pypostelium_immediate_answer(firmware, caplog, amount, result):
    """pypostelium asks for the immediate answer (A011): it hears STAT 9 at once
    (within its 3 s) and the transaction goes on on the terminal."""
    fw = firmware()
    ok, answers, errors = postelium(fw, amount, caplog)
    assert ok is True and not errors, errors
    assert "'transaction_result': '9'" in answers[0]
    assert fw.wait_for("core done #1 " + result, 3) is not None


@pytest.mark.parametrize("amount,stat", [(12.5, "0"), (12.01, "7"), (12.02, "7")])
def test_pypostelium_with_results(firmware, caplog, amount, stat):
    """With `immediate` off the terminal answers A011 at the end, as A010: within
    pypostelium's 3 s here (no delays), so it reads the real result."""
    fw = firmware({"listeners": {"concert-serial": {"immediate": False}}})
    ok, answers, errors = postelium(fw, amount, caplog)
    assert ok is True and not errors, errors
    assert "'transaction_result': '%s'" % stat in answers[0]
    assert "'amount_msg': '%08d'" % round(amount * 100) in answers[0]


def test_pypostelium_refund_through_its_building_blocks(firmware, caplog):
    """pypostelium's transaction_start only pays; its own steps can refund."""
    fw = firmware({"listeners": {"concert-serial": {"immediate": False}}})
    path, _ = fw.serial("concert-serial")
    d = pypostelium.Driver({"telium_terminal_device_name": path})
    d.serial = serial.Serial(path, 9600, timeout=3)
    try:
        assert d.initialize_msg()
        data = d.prepare_data_to_send({"amount": 7.5, "payment_mode": "card", "currency_iso": "EUR"})
        data["transaction_type"] = "1"
        d.send_message(data)
        assert d.get_one_byte_answer("ACK")
        d.send_one_byte_signal("EOT")
        assert d.get_one_byte_answer("ENQ")
        d.send_one_byte_signal("ACK")
        answer = d.get_answer_from_terminal(data)
        d.send_one_byte_signal("ACK")
        assert d.get_one_byte_answer("EOT")
    finally:
        d.serial.close()
    assert answer["transaction_result"] == "0" and answer["amount_msg"] == "00000750"
    assert fw.wait_for("core start #1 refund 750 978 concert-serial", 2) is not None


# -- one terminal, two lines ----------------------------------------------------

def _in_thread(fn, *args):
    box = {}
    th = threading.Thread(target=lambda: box.setdefault("v", fn(*args)))
    th.start()
    return th, box


SLOW = {"delays": {"slow_auth_ms": 1500}}


def test_serial_payment_makes_tcp_busy(firmware):
    fw = firmware(SLOW)
    t = tpe(fw)
    try:
        th, box = _in_thread(pay, t, 12.05)  # .05: slow authorisation
        assert fw.wait_for("core start #1 pay 1205 978 concert-serial", 5) is not None
        busy = tlv.decode(exchange(fw.address("concert-ip"), odoo(1250)))
        assert (busy["AE"], busy["AF"]) == ("01", "00")
        th.join(10)
        assert box["v"].has_succeeded
    finally:
        t.close()
    assert fw.wait_for("core busy concert-ip pay refused; running concert-serial", 1) is not None


def test_tcp_payment_makes_serial_busy(firmware):
    fw = firmware(SLOW)
    th, box = _in_thread(exchange, fw.address("concert-ip"), odoo(1205))
    assert fw.wait_for("core start #1 pay 1205 978 concert-ip", 5) is not None
    t = tpe(fw)
    try:
        a = pay(t, 12.5)
        assert a.transaction_result == 7
    finally:
        t.close()
    th.join(10)
    assert tlv.decode(box["v"])["AE"] == "10"
    assert fw.wait_for("core busy concert-serial pay refused; running concert-ip", 1) is not None


# -- registers that misbehave ---------------------------------------------------

def test_register_vanishing_mid_frame_leaves_the_terminal_idle(firmware):
    fw = firmware()
    with line(fw) as s:
        s.write(ENQ)
        assert s.read(1) == ACK
        s.write(link.frame(b"0100001250110978" + b" " * 10 + b"A010B010")[:15])
    # gone: the NAK and the EOT go nowhere; the next register is served
    assert fw.wait_for("concert-serial abandoned", 5) is not None
    t = tpe(fw)
    try:
        assert pay(t, 12.5).has_succeeded
    finally:
        t.close()


def test_register_vanishing_before_the_answer_keeps_the_outcome(firmware):
    fw = firmware(SLOW)
    with line(fw) as s:
        s.write(ENQ)
        assert s.read(1) == ACK
        s.write(link.frame(b"0100001205110978" + b" " * 10 + b"A010B010"))
        assert s.read(1) == ACK
        s.write(EOT)
    assert fw.wait_for("concert-serial undelivered no ACK to ENQ", 15) is not None
    assert fw.wait_for("core undelivered #1 approved", 1) is not None
    status = tlv.decode(exchange(fw.address("concert-ip"), b"CZ0040300CJ012012345678901CA00201CD001T"))
    assert (status["AE"], status["CB"]) == ("10", "1205")  # the journal has it


def test_endless_frame_is_not_buffered(firmware):
    fw = firmware({"log": {"heap": True, "frames": False}})
    with line(fw) as s:
        s.write(ENQ)
        assert s.read(1) == ACK
        s.write(b"\x02" + b"7" * 100000 + b"\x03\x00")
        s.timeout = 10
        assert s.read(1) == NAK
        s.write(EOT)
    t = tpe(fw)
    try:
        assert pay(t, 12.5).has_succeeded
    finally:
        t.close()
    assert fw.wait_for("concert-serial nak frame over 512 characters", 1) is not None


def test_v3_tickets_over_serial_match_tcp(firmware):
    fw = firmware()
    req = b"CZ0040300CJ012012345678901CA00201CE003978CD0010CB0041250CK003120"
    with line(fw) as s:
        s.write(ENQ)
        assert s.read(1) == ACK
        s.write(link.frame(req))
        assert s.read(1) == ACK
        s.write(EOT)
        assert s.read(1) == ENQ
        s.write(ACK)
        data, frames = b"", 0
        while True:
            assert s.read(1) == b"\x02"
            body = b""
            while not body or body[-1] not in (3, 0x17):
                body += s.read(1)
            lrc = s.read(1)
            assert link.frame(body[:-1], body[-1] == 3) == b"\x02" + body + lrc
            assert len(body) - 1 <= 512
            data += body[:-1]
            frames += 1
            s.write(ACK)
            if body[-1] == 3:
                break
        assert s.read(1) == EOT
    assert frames >= 2
    serial_ans = tlv.decode(data)
    tcp_ans = tlv.decode(exchange(fw.address("concert-ip"), req))
    assert serial_ans["AE"] == tcp_ans["AE"] == "10"
    assert len(serial_ans["ZT"]) == len(tcp_ans["ZT"]) == 2


def test_baud_change_restarts_only_the_serial_listener(firmware):
    fw = firmware()
    path, baud = fw.serial("concert-serial")
    assert baud == 9600
    cfg = json.load(open(fw.config_path))
    cfg["listeners"]["concert-serial"]["baud"] = 19200
    mark = len(fw.lines)
    fw.write_config(cfg)
    assert fw.wait_for("listening concert-serial serial %s 19200" % path, 10, mark) is not None, fw.output()
    t = telium.Telium(path, baudrate=19200)
    try:
        assert pay(t, 12.5).has_succeeded
    finally:
        t.close()
    assert fw.output().count("READY") == 1


def test_bad_serial_settings_are_reported(firmware):
    fw = firmware({"listeners": {"concert-serial": {"baud": 9601, "parity": "mark", "protocol": "v4"}}})
    out = fw.output()
    assert "listeners.concert-serial.baud: 9601 not allowed (1200, 2400" in out
    assert 'listeners.concert-serial.parity: "mark" not allowed (none, even, odd); using "even"' in out
    assert 'listeners.concert-serial.protocol: "v4" not allowed (auto, v2, v3); using "auto"' in out
    assert fw.serial("concert-serial")[1] == 9600


def test_disabled_serial_listener(firmware):
    fw = firmware({"listeners": {"concert-serial": {"enabled": False}}})
    assert "concert-serial" not in fw.listeners
    assert tlv.decode(exchange(fw.address("concert-ip"), odoo(1250)))["AE"] == "10"


@pytest.mark.parametrize("board,over,want", [
    ("esp32", {}, "where uart2:tx17:rx16 id 2 baud 9600 bits 7 parity 0 stop 1 tx 17 rx 16 timeout 0"),
    ("rp2", {}, "where uart0:tx0:rx1 id 0 baud 9600 bits 7 parity 0 stop 1 tx 0 rx 1 timeout 0"),
    ("esp32", {"id": 1, "tx": 4, "rx": 5, "baud": 115200, "bits": 8, "parity": "none", "stop": 2},
     "where uart1:tx4:rx5 id 1 baud 115200 bits 8 parity None stop 2 tx 4 rx 5 timeout 0"),
    ("rp2", {"parity": "odd"}, "parity 1"),
])
def test_board_uart_from_config(board, over, want):
    """machine.UART gets the listener config (machine faked: no board here)."""
    import subprocess

    from understudy import paths
    from understudy.launch import micropython

    fakes = os.path.join(os.path.dirname(__file__), "fakes")
    lib = os.path.join(paths.ROOT, "lib")
    env = dict(os.environ, MICROPYPATH="%s:%s:%s:.frozen" % (fakes, paths.ROOT, lib))
    r = subprocess.run([micropython(), os.path.join(fakes, "uart_check.py"), board, json.dumps(over)],
                       env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert want in r.stdout, r.stdout
