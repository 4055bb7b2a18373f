"""Concert V3 over TCP, end to end: the firmware in the unix port, real sockets."""
import glob
import os
import socket
import threading
import time

import pytest

from concert_client import akretion, exchange, odoo
from golden import Transcript
from wire import concert_tlv as tlv

GOLDEN = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "golden", "concert_ip", "*.txt")))


def addr(fw):
    return fw.address("concert-ip")


@pytest.mark.parametrize("path", GOLDEN, ids=[os.path.basename(p)[:-4] for p in GOLDEN])
def test_golden(firmware, path, request):
    t = Transcript(path)
    fw = firmware(t.config)
    got = [exchange(addr(fw), pieces) for pieces, _, _ in t.exchanges]
    if request.config.getoption("--update-goldens"):
        t.update(got)
        pytest.skip("golden rewritten")
    for (pieces, expected, _), answer in zip(t.exchanges, got):
        assert answer == expected, "request %r" % pieces


def odoo_verdict(answer, cents, action="0", currency="978"):
    """What Odoo's l10n_fr_pos_caisse_ap_ip concludes from an answer (its own rules,
    restated): flat TLV walk, AE 10 needs CA/CD/CE equal and CB equal once
    leading zeros are stripped; AE 01 is a failure; anything else an issue."""
    if len(answer) > 1024:  # Odoo reads once, 1024 bytes
        return "issue"
    text = answer.decode("ascii")
    d, i = {}, 0
    while i < len(text):
        tag, size = text[i:i + 2], int(text[i + 2:i + 5])
        d[tag] = text[i + 5:i + 5 + size]
        i += 5 + size
    sent = {"CA": "01", "CD": action, "CE": currency, "CB": str(cents)}
    if d.get("AE") == "10":
        for k in ("CA", "CD", "CE"):
            if d.get(k) != sent[k]:
                return "issue"
        if d.get("CB", "").lstrip("0") != sent["CB"]:
            return "issue"
        return "success"
    if d.get("AE") == "01":
        return "failure:" + d.get("AF", "")
    return "issue"


@pytest.mark.parametrize("cents,verdict", [
    (1250, "success"), (5, "success"), (1201, "failure:04"), (1202, "failure:06"),
    (1204, "failure:04"), (1206, "failure:13"), (1208, "failure:05"), (1209, "failure:07"),
])
def test_odoo_reads_our_answers(firmware, cents, verdict):
    fw = firmware({"outcomes": {"05": "approve"}})  # 0.05 EUR: a one-digit CB
    assert odoo_verdict(exchange(addr(fw), odoo(cents)), cents) == verdict


def test_odoo_refund_and_akretion_client(firmware):
    fw = firmware()
    assert odoo_verdict(exchange(addr(fw), odoo(990, action="1")), 990, action="1") == "success"
    a = tlv.decode(exchange(addr(fw), akretion(11245)))
    assert a["AE"] == "10" and a["CB"] == "11245" and a["CD"] == "0"


def _slow(extra=None):
    cfg = {"delays": {"slow_auth_ms": 1500}}
    cfg.update(extra or {})
    return cfg


def _in_thread(fn, *args):
    box = {}
    th = threading.Thread(target=lambda: box.setdefault("v", fn(*args)))
    th.start()
    return th, box


def test_busy_is_refused_at_once_and_running_one_is_untouched(firmware):
    fw = firmware(_slow())
    th, box = _in_thread(exchange, addr(fw), odoo(1205))  # .05: slow authorisation
    assert fw.wait_for("core start #1", 5) is not None
    t0 = time.monotonic()
    busy = tlv.decode(exchange(addr(fw), odoo(1250)))
    assert time.monotonic() - t0 < 1.0
    assert (busy["AE"], busy["AF"], busy["CB"]) == ("01", "00", "1250")
    th.join(10)
    first = tlv.decode(box["v"])
    assert first["AE"] == "10" and first["CB"] == "1205"
    assert fw.wait_for("core busy concert-ip pay refused", 2) is not None


def test_register_leaving_before_the_answer_is_recorded_undelivered(firmware):
    fw = firmware(_slow())
    exchange(addr(fw), odoo(1205), close_early=True)
    assert fw.wait_for("closed before the answer", 5) is not None
    assert fw.wait_for("core undelivered #1 approved", 2) is not None
    status = tlv.decode(exchange(addr(fw), b"CZ0040300CJ012012345678901CA00201CD001T"))
    assert status["AE"] == "10" and status["CB"] == "1205"


def test_silent_client_times_out_and_does_not_block(firmware):
    fw = firmware({"timeouts": {"request_ms": 1000}})
    s = socket.create_connection(addr(fw))
    try:
        a = tlv.decode(exchange(addr(fw), odoo(1250)))  # served while the silent one waits
        assert a["AE"] == "10"
        s.settimeout(5)
        t0 = time.monotonic()
        assert s.recv(10) == b""  # closed by the terminal, no answer
        assert 0.3 < time.monotonic() - t0 < 4
    finally:
        s.close()
    assert fw.wait_for("concert-ip silent 127.0.0.1", 2) is not None


def test_truncated_request_gets_format_error_after_the_timeout(firmware):
    fw = firmware({"timeouts": {"request_ms": 500}})
    a = exchange(addr(fw), odoo(1250)[:-2])  # stops inside the CB element
    assert tlv.decode(a)["AF"] == "09"


def test_oversize_request_is_refused(firmware):
    fw = firmware({"concert": {"max_request": 256}})
    big = odoo(1250) + b"CF099" + b"x" * 99 + b"CH099" + b"y" * 99
    a = tlv.decode(exchange(addr(fw), big))
    assert (a["AE"], a["AF"]) == ("01", "09")
    assert fw.wait_for("concert-ip oversize", 2) is not None


def test_allowed_ips_refuse_other_registers(firmware):
    fw = firmware({"allowed_ips": ["192.0.2.10"]})
    assert exchange(addr(fw), odoo(1250)) == b""
    assert fw.wait_for("concert-ip refused 127.0.0.1 not in allowed_ips", 2) is not None


def test_port_change_restarts_only_that_listener(firmware):
    fw = firmware()
    old = addr(fw)
    assert tlv.decode(exchange(old, odoo(1250)))["AE"] == "10"
    import json
    cfg = json.load(open(fw.config_path))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    new_port = s.getsockname()[1]
    s.close()
    cfg["listeners"]["concert-ip"]["port"] = new_port
    mark = len(fw.lines)
    fw.write_config(cfg)
    assert fw.wait_for("listening concert-ip tcp 127.0.0.1:%d" % new_port, 10, mark) is not None
    with pytest.raises(OSError):
        socket.create_connection(old, timeout=2).close()
    a = tlv.decode(exchange(("127.0.0.1", new_port), odoo(1250)))
    assert a["AE"] == "10"
    assert fw.output().count("READY") == 1  # not rebooted
    assert fw.wait_for("core start #2", 2) is not None  # same terminal, numbering goes on


def test_invalid_config_is_reported_and_defaults_used(firmware):
    fw = firmware({"timeouts": {"card_s": 0}, "card": {"mode": "telepathy"}, "bogus": 1,
                   "outcomes": {"00": "decline"}})
    out = fw.output()
    assert "timeouts.card_s: 0 not allowed (1..600); using 30" in out
    assert 'card.mode: "telepathy" not allowed (chip, contactless, magstripe); using "chip"' in out
    assert "bogus: unknown key; ignored" in out
    assert "outcomes.00: amounts ending in 00 always approve" in out
    assert tlv.decode(exchange(addr(fw), odoo(1200)))["AE"] == "10"


def test_outcome_rules_are_configurable(firmware):
    fw = firmware({"outcomes": {"42": "decline", "default": "forbidden"}})
    assert tlv.decode(exchange(addr(fw), odoo(1242)))["AF"] == "04"
    assert tlv.decode(exchange(addr(fw), odoo(1243)))["AF"] == "05"
    assert tlv.decode(exchange(addr(fw), odoo(1250)))["AE"] == "10"


def test_cancel_with_zero_amount_setting(firmware):
    fw = firmware({"concert": {"zero_amount_on_cancel": True}})
    a = tlv.decode(exchange(addr(fw), odoo(1202)))
    assert (a["AE"], a["AF"], a["CB"]) == ("01", "06", "0000")


def test_fixed_answer_version(firmware):
    fw = firmware({"concert": {"version": "0320"}})
    assert exchange(addr(fw), odoo(1250)).startswith(b"CZ0040320")


def test_contactless_card_profile(firmware):
    fw = firmware({"card": {"mode": "contactless", "brand": "AMEX"}})
    a = tlv.decode(exchange(addr(fw), odoo(1250)))
    assert (a["CC"], a["CI"]) == ("00D", "2")


def test_half_closing_register_still_gets_its_answer(firmware):
    """nc and socat shut their sending side after the request: still answered."""
    fw = firmware()
    s = socket.create_connection(addr(fw), timeout=5)
    s.sendall(odoo(1250))
    s.shutdown(socket.SHUT_WR)
    answer = s.recv(4096)
    s.close()
    assert tlv.decode(answer)["AE"] == "10"
    assert fw.wait_for("core done #1", 2) is not None
    time.sleep(0.2)
    assert "undelivered" not in fw.output()


def test_config_that_is_not_json_keeps_the_running_one(firmware):
    """An editor saving a half-written file, or a typo: the terminal keeps going as it was."""
    fw = firmware()
    port = addr(fw)[1]
    mark = len(fw.lines)
    with open(fw.config_path, "w") as f:
        f.write('{"listeners": {"concert-ip": {"port": ')
    assert fw.wait_for("not valid JSON", 5, mark) is not None, fw.output()
    assert "keeping the running config" in fw.output()
    assert tlv.decode(exchange(("127.0.0.1", port), odoo(1250)))["AE"] == "10"
    assert "stopped" not in fw.output().split("READY", 1)[1]
