"""The firmware on an emulated Raspberry Pi Pico: MicroPython's rp2 port in
rp2040js (tools/pico/pico.mjs, tools/understudy/pico.py).

Neither the MicroPython UF2 nor the RP2040 boot ROM is in this repository:
these tests run only when both are given, as UNDERSTUDY_PICO_UF2 and
UNDERSTUDY_PICO_BOOTROM (paths), and need node with tools/pico's
node_modules (`npm ci --prefix tools/pico`) and littlefs-python
(requirements-pico.txt); otherwise they are skipped, saying which is missing.
A UF2 built with Understudy frozen in (manifest.py) runs the frozen firmware
(`understudy pico --frozen`).
"""
import os
import shutil

import pytest

from understudy import paths

UF2 = os.environ.get("UNDERSTUDY_PICO_UF2")
BOOTROM = os.environ.get("UNDERSTUDY_PICO_BOOTROM")


def _missing():
    if not UF2 or not BOOTROM:
        return ("set UNDERSTUDY_PICO_UF2 and UNDERSTUDY_PICO_BOOTROM (MicroPython rp2 RPI_PICO "
                "UF2 and the RP2040 boot ROM: not in this repository) to run the emulated Pico")
    if not shutil.which("node"):
        return "node is not installed (the emulator runs in it)"
    if not os.path.isdir(os.path.join(paths.ROOT, "tools", "pico", "node_modules", "rp2040js")):
        return "rp2040js is not installed: npm ci --prefix tools/pico"
    try:
        import littlefs  # noqa: F401
    except ImportError:
        return "littlefs-python is not installed: pip install -r requirements-pico.txt"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=_missing() or "")


def _pay(path, amount, *extra):
    from understudy.ecr import cli

    return cli.main(["concert", "pay", amount, "--serial", path, "-q"] + list(extra))


def _board(tmp_path, more=None, **kw):
    from understudy import pico, uf2

    img = str(tmp_path / "flash.img")
    cfg = {"log": {"heap": True}, "delays": {"slow_auth_ms": 60000}, "timeouts": {"auth_s": 120}}
    cfg = pico.merged(cfg, more or {})
    pico.prepare(img, cfg, frozen=uf2.frozen(UF2))  # (a UF2 with the firmware in: run that)
    return pico.Pico(UF2, BOOTROM, flash=img, config=cfg, **kw)


def test_boots_and_pays_over_uart0(tmp_path):
    p = _board(tmp_path).start()
    try:
        out = p.output()
        assert " on rp2, heap " in out
        assert "wifi none" in out
        kind, where = p.listeners["concert-serial"]
        assert kind == "serial" and where.startswith("/dev/pts/") and where.endswith(" 9600")
        assert "app heap alloc=" in out
        path, _ = p.serial("concert-serial")
        assert _pay(path, "12.50") == 0  # V3
        assert _pay(path, "12.50", "--v2") == 0  # V2 (E+)
        assert _pay(path, "12.01") == 1  # declined
        assert p.wait_for("heap=", 5) is not None
        assert not p.problems()
    finally:
        p.stop()
        p.cleanup()


def test_power_cut_mid_transaction(tmp_path):
    """The power goes while the bank is asked (a `slow` outcome); at the next
    boot the journal closes that transaction as interrupted, and the
    register's status request (CD=T) hears it was not approved."""
    import threading

    p = _board(tmp_path)
    p.start()
    try:
        path, _ = p.serial("concert-serial")
        t = threading.Thread(target=_pay, args=(path, "12.05", "--timeout", "5"), daemon=True)
        t.start()
        assert p.wait_for("core start #1", 60) is not None
        p.kill()  # the driver keeps the flash as it is at this instant
        t.join(60)  # the register gives up (no answer) before the board comes back
        p.start()
        out = p.output()
        assert "journal interrupted" in out, out
        import contextlib
        import io

        from understudy.ecr import cli

        said = io.StringIO()
        with contextlib.redirect_stdout(said):
            code = cli.main(["concert", "status", "--serial", path, "-q"])
        assert code == 1 and "AF 07" in said.getvalue(), said.getvalue()  # interrupted: not performed
    finally:
        p.stop()
        p.cleanup()


def test_synqpay_pairs_and_sells_over_uart1(tmp_path):
    """Synqpay's link frames at 115200 on the board's UART1; the key is kept
    on the board's flash."""
    import json

    import serial

    from synqpay_client import Link, Serial, request
    from test_synqpay import ZERO, sale

    p = _board(tmp_path, {"synqpay": {"otp": "123456", "api_key": "1234abcd"}}).start()
    try:
        path, baud = p.serial("synqpay-serial")
        assert baud == 115200
        link = Link(None, stream=Serial(serial.Serial(path, baud, timeout=20)))
        assert link.call("pair", {"serialNumber": "UST00001"}, key=ZERO)["result"] is None
        assert link.call("authenticate", {"otp": "123456"}, key=ZERO, rid="2")["result"] == {
            "apiKey": "1234abcd"}
        link.send(request("startTransaction", sale("s1", notifyEvents=True), "3"))
        events, last = link.answer()
        assert len(events) == 4
        tx = json.loads(last[2])["result"]["transaction"]
        assert (tx["transactionStatus"], tx["amount"]) == ("CAPTURED", 1250)
        assert not p.problems()
    finally:
        p.stop()
        p.cleanup()


@pytest.mark.parametrize("cut, status", [("core start #2", "AF 07"), ("core done #2", "approved")])
def test_power_cut_at_a_chosen_point(tmp_path, cut, status):
    """The driver cuts the power one instruction after the board logs `cut`:
    after the transaction's first journal record, the next boot closes it as
    interrupted (AF 07 to CD=T); after its outcome, it stays approved.
    Either way the journal replays with nothing corrupt and the next
    payment works."""
    import contextlib
    import io

    from understudy import pico
    from understudy.ecr import cli

    p = _board(tmp_path)
    p.start()
    _pay(p.serial("concert-serial")[0], "10.00")
    p.stop()
    p.cleanup()
    p = pico.Pico(UF2, BOOTROM, flash=p.flash_img, config=p.cfg, cut_after=(cut, 1))
    p.start()
    assert _pay(p.serial("concert-serial")[0], "20.00", "--timeout", "5") == 3  # no answer
    p.wait()
    p.cleanup()
    p = pico.Pico(UF2, BOOTROM, flash=p.flash_img, config=p.cfg)
    p.start()
    try:
        assert "0 corrupt skipped" in p.output()
        path = p.serial("concert-serial")[0]
        said = io.StringIO()
        with contextlib.redirect_stdout(said):
            cli.main(["concert", "status", "--serial", path, "-q"])
        assert status in said.getvalue() and "20.00" in said.getvalue(), said.getvalue()
        assert _pay(path, "30.00") == 0
        assert not p.problems()
    finally:
        p.stop()
        p.cleanup()
