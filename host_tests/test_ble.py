"""Concert over BLE (concert-ble): the firmware in the unix port with a fake
`bluetooth` module (fakes/ble/bluetooth.py) driven from here over TCP by a
central (ble_central.py) that connects, exchanges an MTU, writes the Nordic
UART Service's RX in MTU - 3 pieces and reads TX notifications.  The
register on top is `understudy ecr concert`'s own serial-line code, and the
serial golden transcripts replay byte for byte."""
import argparse
import os
import threading

import pytest

import test_concert_serial as serial_tests
from ble_central import NUS, Central
from golden import Transcript
from understudy.ecr import Trace
from understudy.ecr import concert as ecr_concert
from wire import concert_link as link

HERE = os.path.dirname(os.path.abspath(__file__))
FAKES = os.path.join(HERE, "fakes", "ble")


@pytest.fixture
def ble(firmware):
    """start(listener overrides, fw config) -> (firmware, central)."""
    made = []

    def start(lc=None, cfg=None):
        c = Central()
        made.append(c)
        th = threading.Thread(target=c.accept, daemon=True)
        th.start()
        lcfg = dict({"enabled": True, "reply_ms": 1000, "byte_ms": 500}, **(lc or {}))
        fw = firmware(dict({"listeners": {"concert-ble": lcfg}}, **(cfg or {})),
                      path=[FAKES], env={"UNDERSTUDY_FAKE_BLE": str(c.port_no)})
        th.join(10)
        c.advertisement()
        return fw, c

    yield start
    for c in made:
        assert c.errors == []
        c.close()


def register(c, *args):
    p = argparse.ArgumentParser()
    ecr_concert.add_parser(p.add_subparsers(dest="protocol"))
    a = p.parse_args(["concert", *args, "--timeout", "15"])
    a.link = c.port(0.05)
    return ecr_concert.run(a, Trace(None))


def test_advertised_under_the_terminal_name(ble):
    fw, c = ble()
    adv, resp = c.advertisement()
    assert adv == b"\x02\x01\x06\x11\x07" + NUS
    assert resp == b"\x14\x09Understudy-UST00001"
    assert "listening concert-ble ble Understudy-UST00001 nus" in fw.output()


@pytest.mark.parametrize("mtu", [23, 185])
def test_pay_refund_status_at_each_mtu(ble, mtu):
    fw, c = ble()
    c.connect(1, mtu)
    r = register(c, "pay", "12.50")
    assert r.approved and r.summary.startswith("approved  12.50 EUR")
    assert register(c, "refund", "3.00").approved
    assert register(c, "status").summary.startswith("approved (last transaction)  3.00 EUR")
    sizes = [n for _, n in c.notifies]
    assert max(sizes) <= mtu - 3  # never more than the MTU takes (the fake reports any)
    assert (max(sizes) == 20) == (mtu == 23)  # at 23 an answer goes out in 20-byte pieces
    assert fw.wait_for("core done #2 approved", 1) is not None


def test_one_central_at_a_time(ble):
    fw, c = ble()
    c.connect(1)
    c._send("connect 2")  # a second register
    assert c.wait(lambda: 2 in c.kicked, 5)
    assert fw.wait_for("concert-ble refused a second central while one is connected", 5) is not None
    assert register(c, "pay", "12.50").approved  # the first is still served


def test_disconnect_mid_transaction_loses_nothing(ble):
    """The register leaves while the bank thinks: the transaction completes,
    its answer finds nobody (undelivered), the terminal advertises again, and
    the register, back, learns the outcome with CD=T."""
    fw, c = ble(cfg={"delays": {"slow_auth_ms": 1500}})
    c.connect(1)
    c.write(b"\x05")
    assert c.read(1, 5) == b"\x06"
    c.write(link.frame(b"CZ0040300CJ012012345678901CA00201CE003978CD0010CB0041205"))
    assert c.read(1, 5) == b"\x06"
    c.write(b"\x04")
    assert fw.wait_for("core start #1 pay 1205 978 concert-ble", 5) is not None
    c.disconnect()
    assert fw.wait_for("concert-ble disconnected central 1; advertising again", 5) is not None
    assert fw.wait_for("concert-ble undelivered no ACK to ENQ", 15) is not None
    assert fw.wait_for("core undelivered #1 approved", 1) is not None
    c.connect(2)
    r = register(c, "status")
    assert r.approved and r.summary.startswith("approved (last transaction)  12.05 EUR")


@pytest.mark.parametrize("name", ["v3_payment", "v2_payment_long", "bad_lrc", "v3_tickets_split"])
def test_serial_golden_over_ble(ble, name, monkeypatch):
    """The Concert serial transcripts, byte for byte, over the service."""
    t = Transcript(os.path.join(HERE, "golden", "concert_serial", name + ".txt"))
    fw, c = ble()
    c.connect(1, 64)
    monkeypatch.setattr(serial_tests, "line", lambda fw, timeout=8.0: c.port(timeout))
    got, trailing = serial_tests.converse(fw, t, False)
    for (pieces, expected, _), answer in zip(t.exchanges, got):
        assert answer == expected, "after %r" % pieces
    assert trailing == b""


def test_no_bluetooth_module_is_one_line(firmware):
    """A board whose MicroPython has no bluetooth (the unix port itself)."""
    fw = firmware({"listeners": {"concert-ble": {"enabled": True}}})
    assert "concert-ble failed cannot listen: OSError(\"this board's MicroPython has no bluetooth" \
        in fw.output()
    assert "concert-ble" not in fw.listeners
