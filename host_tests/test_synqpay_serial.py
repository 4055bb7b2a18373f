"""Synqpay over the serial line: the same link frames at 115200 8N1, through
the launcher's null modem, read by pyserial as a POS would (docs/SYNQPAY.md)."""
import json
import os

import serial

from synqpay_client import KEY, Link, Serial, request
from test_synqpay import ZERO, paired_state, sale, tcp

CFG = {"synqpay": {"otp": "123456", "api_key": "1234abcd"}}


def line(fw):
    path, baud = fw.serial("synqpay-serial")
    assert baud == 115200
    return Link(None, stream=Serial(serial.Serial(path, baud, timeout=5)))


def test_pair_and_pay_over_the_line(firmware, tmp_path):
    fw = firmware(CFG, state_dir=str(tmp_path / "flash"))
    link = line(fw)
    assert link.call("pair", {"serialNumber": "UST00001"}, key=ZERO)["result"] is None
    assert link.call("authenticate", {"otp": "123456"}, key=ZERO, rid="2")["result"] == {"apiKey": "1234abcd"}
    assert open(os.path.join(str(tmp_path / "flash"), "synqpay.key")).read().strip() == "1234abcd"
    link.send(request("startTransaction", sale("s1", notifyEvents=True), "3"))
    events, last = link.answer()
    assert [e["params"]["type"] for e in events] == ["WAITING_FOR_CARD", "CARD_DETECTED", "PIN_STARTED",
                                                     "AUTHORIZATION_STARTED"]
    tx = json.loads(last[2])["result"]["transaction"]
    assert (tx["transactionStatus"], tx["referenceId"], tx["amount"]) == ("CAPTURED", "s1", 1250)
    assert link.call("getStatus", key=KEY)["result"]["deviceStatus"] == "IDLE"
    fw.stop()
    out = fw.output()
    assert "listening synqpay-serial serial" in out and "synqpay-serial tx line" in out


def test_line_and_tcp_evict_each_other_and_the_line_comes_back(firmware, tmp_path):
    fw = firmware(CFG, state_dir=paired_state(tmp_path))
    a = line(fw)
    assert a.call("getStatus")["result"]["deviceStatus"] == "IDLE"
    b = Link(tcp(fw))  # a TCP client evicts the line's session
    assert b.call("getStatus")["result"]["deviceStatus"] == "IDLE"
    assert fw.wait_for("synqpay evicted line new client", 3) is not None
    assert a.call("getStatus", rid="9")["result"]["deviceStatus"] == "IDLE"  # the line speaks: it is back
    assert b.closed()  # ...and the TCP client is the one evicted now
    assert fw.wait_for("synqpay-serial line the register speaks again", 3) is not None


def test_garbage_on_the_line_gets_the_link_error_and_the_next_frame_is_served(firmware, tmp_path):
    fw = firmware(CFG, state_dir=paired_state(tmp_path))
    a = line(fw)
    a.send(b"\x02\x09\x03")  # a frame type nobody sends
    assert a.frame_bytes() == b"\x02\x06\x02\x03"  # Error frame, code 02: invalid type
    assert a.call("getStatus")["result"]["deviceStatus"] == "IDLE"
