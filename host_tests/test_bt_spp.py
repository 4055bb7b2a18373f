"""Concert over classic Bluetooth (concert-bt): the firmware in the unix port
drives a fake HC-05 / HC-06 module on a pty (fake_bt_module.py) as it would
the module on a board's UART: AT commands at boot, its KEY and STATE pins
(files the fake reads and writes), then the Concert serial link.  Registers
open the fake's "rfcomm" pty, as a paired PC opens /dev/rfcomm0: the real
client pyTeliumManager, `understudy ecr concert --serial`, and the serial
golden transcripts replayed byte for byte."""
import glob
import os
import subprocess
import sys
import time

import pytest
import telium

import test_concert_serial as serial_tests
from conftest import TCP_NAMES
from fake_bt_module import FakeModule
from golden import Transcript

HERE = os.path.dirname(os.path.abspath(__file__))
AT_GOLDEN = sorted(glob.glob(os.path.join(HERE, "golden", "concert_bt", "*.txt")))
# the serial transcripts with no config of their own and no timing marks: over
# the module they must read exactly as over a wire
LINE_GOLDEN = ["v3_payment", "v2_payment_long", "v2_declined", "lost", "bad_lrc", "v3_tickets_split",
               "v3_request_in_two_frames"]
KEY, STATE = 5, 6
NAME = "Understudy-UST00001"


@pytest.fixture
def bt(firmware, tmp_path, monkeypatch):
    """start(module=FakeModule kwargs, config=listener overrides, fw config) ->
    (firmware, module); the same module again is the same module after a reboot."""
    pins = tmp_path / "pins"
    pins.mkdir()
    monkeypatch.setenv("UNDERSTUDY_PINS", str(pins))
    modules = []
    state = str(tmp_path / "state")

    def start(module=None, lc=None, cfg=None, fm=None, ready=True):
        m = fm or FakeModule(str(pins), **dict({"key": KEY, "state": STATE}, **(module or {})))
        if fm is None:
            modules.append(m)
        c = {"enabled": True, "device": m.uart_path, "key": KEY, "state": STATE,
             "reply_ms": 1000, "byte_ms": 500}
        c.update(lc or {})
        # no TCP listener, the web face only when asked: a drawn port another
        # program takes makes the launcher boot the firmware again, and the
        # module would hear a second AT dialogue (seen: "> ATAT")
        listeners = {n: {"enabled": False} for n in TCP_NAMES if n != "web"}
        listeners["concert-bt"] = c
        fw = firmware(dict({"listeners": listeners, "web": {"enabled": False}}, **(cfg or {})),
                      state_dir=state)
        if ready:
            assert fw.wait_for("concert-bt ready", 20) is not None, fw.output()
        return fw, m

    yield start
    for m in modules:
        m.close()


def tpe(m):
    return telium.Telium(m.rfcomm_path, baudrate=9600)


def ecr(m, *args):
    r = subprocess.run([sys.executable, "-m", "understudy", "ecr", "concert", *args, "--serial",
                        m.rfcomm_path, "-q", "--web", "0", "--timeout", "20"],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(HERE), "tools")))
    return r.returncode, r.stdout.strip()


def test_first_boot_sets_the_module_then_leaves_its_flash_alone(bt):
    fw, m = bt(lc={"pin": "4321"})
    assert m.name == NAME and m.pin == "4321" and m.resets == 1
    assert sorted(w[0] for w in m.writes) == ["NAME", "PSWD"]
    assert fw.wait_for("concert-bt module hc05 answered at 9600 baud; set name, PIN") is not None
    assert "4321" not in fw.output()  # the PIN is a secret: never logged
    t = tpe(m)
    try:
        a = serial_tests.pay(t, 12.5)  # V2 (E+), pyTeliumManager
        assert a.has_succeeded and a.amount == 12.5
    finally:
        t.close()
    code, out = ecr(m, "pay", "12.50")
    assert code == 0 and out.startswith("approved  12.50 EUR  auth ")
    assert out.endswith("card ************0014")
    assert ecr(m, "status")[1].startswith("approved (last transaction)  12.50 EUR")
    fw.stop()
    writes = len(m.writes)
    fw2, _ = bt(fm=m, lc={"pin": "4321"})  # the board boots again: the module is as wanted
    assert len(m.writes) == writes and m.resets == 1
    assert fw2.wait_for("concert-bt module hc05 answered at 9600 baud; nothing to change") is not None
    assert ecr(m, "pay", "7.00")[0] == 0


def test_module_in_full_at_mode_and_a_new_speed(bt):
    """KEY high at power-up: the module talks at 38400 whatever its data speed;
    the listener wants 19200: AT+UART is written, the module restarted, and
    the Concert line runs at 19200."""
    fw, m = bt(module={"full_at": True}, lc={"baud": 19200})
    assert ("UART", "19200,0,0") in m.writes and m.baud == 19200 and m.resets == 1
    assert fw.wait_for("concert-bt module hc05 answered at 38400 baud; set name, UART") is not None
    assert m.line_baud() == 19200
    t = telium.Telium(m.rfcomm_path, baudrate=19200)
    try:
        assert serial_tests.pay(t, 3.5).has_succeeded
    finally:
        t.close()


def test_a_module_that_does_not_answer_at_is_one_clear_line(bt):
    """No KEY pin: an HC-05 in data mode ignores AT.  The terminal says what
    to check, changes nothing, and serves the line (a module set up by hand)."""
    fw, m = bt(lc={"key": -1})
    line = fw.wait_for("concert-bt module no answer to AT at 9600/38400/115200/57600/19200 baud")
    assert line is not None
    assert "KEY/EN is wired to the key pin (none set)" in fw.lines[line]
    assert m.writes == [] and m.commands == []
    assert ecr(m, "pay", "12.50")[0] == 0


def test_hc06_is_set_once(bt):
    """An HC-06 cannot be asked its settings: the terminal writes them once
    and keeps what it wrote in its state dir; the next boot writes nothing."""
    fw, m = bt(module={"kind": "hc06", "key": None, "baud": 9600}, lc={"module": "hc06", "key": -1})
    assert [w[0] for w in m.writes] == ["NAME", "PIN", "BAUD"] and m.name == NAME
    assert ecr(m, "pay", "12.50")[0] == 0
    fw.stop()
    fw, _ = bt(fm=m, lc={"module": "hc06", "key": -1})
    assert len(m.writes) == 3
    assert fw.wait_for("concert-bt module hc06 answered at 9600 baud; nothing to change") is not None
    assert ecr(m, "refund", "2.00")[0] == 0


def test_state_pin_and_a_register_gone_mid_transaction(bt):
    """The register disconnects while the card is read: the transaction goes
    on, its answer finds nobody (undelivered), and after reconnecting the
    register learns the outcome with CD=T.  The STATE pin's moves are logged."""
    fw, m = bt(cfg={"delays": {"slow_auth_ms": 1500}})
    ser = serial_tests.serial.Serial(m.rfcomm_path, 9600, timeout=5)
    from wire import concert_link as link
    ser.write(b"\x05")
    assert ser.read(1) == b"\x06"
    ser.write(link.frame(b"CZ0040300CJ012012345678901CA00201CE003978CD0010CB0041205"))
    assert ser.read(1) == b"\x06"
    ser.write(b"\x04")
    assert fw.wait_for("concert-bt connected (the module's state pin)", 5) is not None
    ser.close()
    assert fw.wait_for("concert-bt disconnected (the module's state pin)", 5) is not None
    assert fw.wait_for("concert-bt undelivered no ACK to ENQ", 15) is not None
    assert fw.wait_for("core undelivered #1 approved", 1) is not None
    assert ecr(m, "status")[1].startswith("approved (last transaction)  12.05 EUR")


@pytest.mark.parametrize("name", LINE_GOLDEN)
def test_serial_golden_over_the_module(bt, name, monkeypatch):
    """The Concert serial transcripts, byte for byte, through the module."""
    path = os.path.join(HERE, "golden", "concert_serial", name + ".txt")
    t = Transcript(path)
    fw, m = bt()
    monkeypatch.setattr(serial_tests, "line", lambda fw, timeout=8.0: serial_tests.serial.Serial(
        m.rfcomm_path, 9600, timeout=timeout))
    got, trailing = serial_tests.converse(fw, t, False)
    for (pieces, expected, _), answer in zip(t.exchanges, got):
        assert answer == expected, "after %r" % pieces
    assert trailing == b""


def at_transcript(path):
    """(module kwargs, listener config, expected dialogue lines) of a golden AT file."""
    import json

    module, lc, lines = {}, {}, []
    for ln in open(path).read().splitlines():
        if ln.startswith("@module "):
            module = json.loads(ln[8:])
        elif ln.startswith("@listener "):
            lc = json.loads(ln[10:])
        elif ln[:2] in ("> ", "< "):
            lines.append(ln)
    return module, lc, lines


@pytest.mark.parametrize("path", AT_GOLDEN, ids=[os.path.basename(p)[:-4] for p in AT_GOLDEN])
def test_at_dialogue_golden(bt, path, request):
    """What the terminal says to the module at boot, and what it answers."""
    module, lc, want = at_transcript(path)
    _fw, m = bt(module=module, lc=lc)
    time.sleep(0.3)
    if request.config.getoption("--update-goldens"):
        keep = [ln for ln in open(path).read().splitlines() if ln[:2] not in ("> ", "< ")]
        with open(path, "w") as f:
            f.write("\n".join(keep + m.talk) + "\n")
        pytest.skip("golden rewritten")
    assert m.talk == want


@pytest.mark.parametrize("board,want", [
    ("esp32", "where uart1:tx25:rx26 id 1 baud 9600 bits 8 parity None stop 1 tx 25 rx 26 timeout 0"),
    ("rp2", "where uart1:tx8:rx9 id 1 baud 9600 bits 8 parity None stop 1 tx 8 rx 9 timeout 0"),
])
def test_board_uart_for_the_module(board, want):
    """The module's UART on each board (machine faked)."""
    import json

    from understudy import paths
    from understudy.launch import micropython

    fakes = os.path.join(HERE, "fakes")
    lib = os.path.join(paths.ROOT, "lib")
    env = dict(os.environ, MICROPYPATH="%s:%s:%s:.frozen" % (fakes, paths.ROOT, lib))
    check = os.path.join(fakes, "uart_check.py")
    r = subprocess.run([micropython(), check, board, json.dumps({}), "concert-bt"],
                       env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert want in r.stdout, r.stdout


def test_bad_module_settings_are_reported(bt):
    fw, m = bt(lc={"module": "hc08", "pin": "12", "bits": 7, "name": "my till"})
    assert m.name == NAME
    out = fw.output()
    assert 'listeners.concert-bt.module: "hc08" not allowed (hc05, hc06); using "hc05"' in out
    assert "listeners.concert-bt.pin: the value set is not allowed (4 digits); using the default" in out
    assert "listeners.concert-bt.bits: 7 not allowed (8..8); using 8" in out
    assert 'listeners.concert-bt.name: "my till" not allowed (up to 20 characters' in out
    assert m.pin == "1234" and m.name == NAME


def test_the_pin_is_masked_by_the_control_api(bt):
    import json
    import urllib.request

    fw, _m = bt(lc={"pin": "4321"}, cfg={"web": {"enabled": True}})
    host, port = fw.address("web")
    with urllib.request.urlopen("http://%s:%d/api/config" % (host, port), timeout=10) as r:
        cfg = json.loads(r.read())
    assert cfg["listeners"]["concert-bt"]["pin"] == "***"
    assert cfg["listeners"]["concert-bt"]["name"] == ""
