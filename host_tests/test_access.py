"""Access control and secrets: every refusal is tested and logged; no secret
(Synqpay API key, P3 merchant secret, Wi-Fi password, full card number)
appears in what the firmware prints, not even when it is misconfigured or
a client sends a wrong one.  (The control API's token belongs with the
control API, issue 8.)"""
import json
import os
import socket
import ssl
import warnings

import pytest

import p3_client
import web_client as web
from concert_client import exchange, odoo
from conftest import merge
from synqpay_client import KEY, Link, request, unverified_context
from understudy import journal_table as journal_tool
from wire import concert_tlv as tlv
from wire import synqpay_link as L

TCP_LISTENERS = ("concert-ip", "p3-tcp", "p3-ws", "synqpay", "synqpay-tls", "web")


@pytest.fixture
def fw_root():
    return "mpy"


def closed_without_answer(addr, data, tls=False):
    """True if the terminal closes (or resets) without a byte of answer."""
    s = socket.create_connection(addr, timeout=5)
    try:
        if tls:
            s = unverified_context().wrap_socket(s, server_hostname=addr[0])
        s.sendall(data)
        return s.recv(100) == b""
    except (ConnectionResetError, ssl.SSLError, OSError):
        return True
    finally:
        s.close()


def paired(tmp_path, key=KEY):
    d = tmp_path / "board"
    d.mkdir(exist_ok=True)
    (d / "synqpay.key").write_text(key.hex() + "\n")
    return str(d)


# -- the IP allow-list


def test_allow_list_refuses_on_every_tcp_listener_and_logs(firmware):
    fw = firmware({"allowed_ips": ["192.0.2.10"], "log": {"frames": False}})
    for name in TCP_LISTENERS:
        assert closed_without_answer(fw.address(name), b"x" * 10, tls=False), name
        assert fw.wait_for("%s refused 127.0.0.1 not in allowed_ips" % name, 2) is not None, name
    assert "core start" not in fw.output()


def test_allow_list_that_is_not_a_list_refuses_everyone(firmware):
    """A typo (a string, not a list) used to mean "no list": everyone allowed."""
    fw = firmware({"allowed_ips": "192.0.2.10"})
    assert fw.wait_for("config problem allowed_ips: no valid address; every TCP client is refused", 2)
    assert exchange(fw.address("concert-ip"), odoo(1250)) == b""
    assert fw.wait_for("concert-ip refused 127.0.0.1 not in allowed_ips", 2) is not None


def test_allow_list_entries_are_checked(firmware):
    fw = firmware({"allowed_ips": ["127.0.0.1 ", "300.1.2.3", 7, "127.0.0.1"]})
    out = fw.output()
    assert 'allowed_ips[0]: "127.0.0.1 " not allowed' in out and 'allowed_ips[1]: "300.1.2.3"' in out
    assert "allowed_ips[2]: 7 not allowed" in out
    assert tlv.decode(exchange(fw.address("concert-ip"), odoo(1250)))["AE"] == "10"  # the valid one


# -- the Synqpay API key


def test_wrong_api_key_gets_error_05_and_a_log_line(firmware, tmp_path):
    fw = firmware({"log": {"frames": False}}, state_dir=paired(tmp_path))
    link = Link(fw.address("synqpay"))
    assert link.call("getStatus", key=b"\x01\x02\x03\x04") == ("error", L.E_AUTH)
    assert fw.wait_for("synqpay refused 127.0.0.1 wrong API key", 2) is not None
    # the zero key is for pairing only
    assert link.call("startTransaction", {"paymentMethod": "CREDIT_CARD", "transactionType": "SALE",
                                          "referenceId": "r1", "amount": 100},
                     key=L.ZERO_KEY) == ("error", L.E_AUTH)
    assert fw.wait_for("synqpay refused 127.0.0.1 zero API key for startTransaction", 2) is not None
    assert "core start" not in fw.output()
    # the right key still works on the same link
    assert link.call("getStatus")["result"]["deviceStatus"] == "IDLE"


def test_unpaired_terminal_refuses_every_key(firmware, tmp_path):
    fw = firmware({"synqpay": {"api_key": "", "otp": ""}, "log": {"frames": False}})
    link = Link(fw.address("synqpay"))
    assert link.call("getStatus") == ("error", L.E_AUTH)
    assert fw.wait_for("synqpay refused 127.0.0.1 wrong API key", 2) is not None


# -- TLS on 9443


def test_tls_refusals_are_logged_and_tls_still_serves(firmware, tmp_path):
    fw = firmware({"timeouts": {"request_ms": 1000}}, state_dir=paired(tmp_path))
    addr = fw.address("synqpay-tls")
    # a client that does not trust the terminal's certificate aborts the handshake
    s = socket.create_connection(addr, timeout=5)
    with pytest.raises(ssl.SSLCertVerificationError):
        ssl.create_default_context().wrap_socket(s, server_hostname="127.0.0.1")
    s.close()
    assert fw.wait_for("synqpay-tls closed 127.0.0.1", 3) is not None
    # a client that only speaks an old TLS version
    old = unverified_context()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1
    except (ValueError, AttributeError):
        old = None
    if old is not None:
        s = socket.create_connection(addr, timeout=5)
        with pytest.raises((ssl.SSLError, OSError)):
            old.wrap_socket(s, server_hostname="127.0.0.1")
        s.close()
    # plain bytes on the TLS port: no TLS, no answer
    mark = len(fw.lines)
    assert closed_without_answer(addr, request("getStatus"))
    assert fw.wait_for("synqpay-tls", 3, mark) is not None
    # TLS on the plain port: a link error, logged; not a crash
    s = socket.create_connection(fw.address("synqpay"), timeout=5)
    try:
        unverified_context().wrap_socket(s, server_hostname="127.0.0.1")
    except (ssl.SSLError, OSError):
        pass
    s.close()
    assert fw.wait_for("synqpay link-error 127.0.0.1", 3) is not None
    link = Link(addr, tls=unverified_context())
    assert link.call("getStatus")["result"]["deviceStatus"] == "IDLE"
    link.close()


# -- secrets never printed

SECRETS = {
    "api_key": "5ec2e7a1",
    "p3": "P3-s3cret-Q7",
    "wifi": "wifi-Pa55-Z9",
    "pan": "5413330089020011",
    "token": "web-T0ken-x4",
}


def test_no_secret_in_logs_traces_or_journal(firmware, tmp_path):
    state = paired(tmp_path, bytes.fromhex(SECRETS["api_key"]))
    cfg = {"synqpay": {"api_key": SECRETS["api_key"], "otp": "135790"},
           "p3": {"merchant_secret": SECRETS["p3"]},
           "wifi": {"ssid": "shop", "password": SECRETS["wifi"]},
           "card": {"pan": SECRETS["pan"]},
           "web": {"token": SECRETS["token"]},
           "log": {"frames": True, "heap": True}}
    fw = firmware(cfg, state_dir=state)
    key = bytes.fromhex(SECRETS["api_key"])
    # Concert: a payment, the last-transaction query
    assert tlv.decode(exchange(fw.address("concert-ip"), odoo(1250)))["AE"] == "10"
    exchange(fw.address("concert-ip"), b"CZ0040300CJ012012345678901CA00201CD001T")
    # P3: a wrong secret, then the right one, a payment with receipts
    c = p3_client.connect(fw, "tcp")
    assert c.login(merchantSecret="wrong-" + SECRETS["p3"])["status"] == "ERROR"
    assert c.login(merchantSecret=SECRETS["p3"])["status"] == "OK"
    _, final = c.until_final(c.execute(12.50))
    assert final["status"] == "OK"
    c.close()
    c = p3_client.connect(fw, "ws")
    assert c.login(merchantSecret=SECRETS["p3"])["status"] == "OK"
    c.close()
    # Synqpay: a sale, a lookup, pairing again (the key is sent back to the POS: masked in the log)
    link = Link(fw.address("synqpay"))
    a = link.call("startTransaction", {"paymentMethod": "CREDIT_CARD", "transactionType": "SALE",
                                       "referenceId": "sec-1", "amount": 1250}, key=key)
    assert a["result"]["result"] == "OK"
    assert link.call("getTransaction", {"lookupMethod": "LAST_TRANS"}, key=key)["result"]
    assert link.call("pair", {"serialNumber": "UST00001"}, key=L.ZERO_KEY)["result"] is None
    got = link.call("authenticate", {"otp": "135790"}, key=L.ZERO_KEY)
    assert got["result"]["apiKey"] == SECRETS["api_key"]  # the POS gets it; the log must not
    link.close()
    # the control API: a wrong token, the right one; what it shows holds no secret
    assert web.post(fw, "/api/queue", {"outcomes": []}, token="x" + SECRETS["token"])[0] == 401
    assert web.post(fw, "/api/queue", {"outcomes": []}, token=SECRETS["token"])[0] == 200
    shown = "".join(json.dumps(web.get(fw, path, token=None)[1]) for path in
                    ("/api/config", "/api/state", "/api/last", "/api/trace?since=0",
                     "/api/transactions", "/api/receipt"))
    for name, v in SECRETS.items():
        assert v not in shown, "%s shown by the control API" % name
    # a config with secrets in wrong places and wrong shapes, reloaded live
    with open(fw.config_path) as f:
        running = json.load(f)
    bad = merge(running, {"synqpay": {"api_key": "zz" + SECRETS["api_key"]},
                            "p3": {"merchant_secret": [SECRETS["p3"]]},
                            "wifi": {"password": {"x": SECRETS["wifi"]}},
                            "card": {"pan": SECRETS["pan"][:4] + " " + SECRETS["pan"][4:]}})
    mark = len(fw.lines)
    fw.write_config(bad)
    assert fw.wait_for("config problem synqpay.api_key", 5, mark) is not None
    fw.stop()
    out = fw.output()
    for name, v in SECRETS.items():
        for form in {v, v.upper(), v.lower()}:
            assert form not in out, "%s printed:\n%s" % (name, [ln for ln in out.splitlines() if form in ln])
    assert SECRETS["pan"][:6] + " " not in out and SECRETS["pan"][4:] not in out
    # the journal as the tool shows it: masked card numbers only
    files = [os.path.join(dp, f) for dp, _, fs in os.walk(state) for f in fs]
    journals = [p for p in files if open(p, "rb").read(3) == b"USJ"]
    assert journals
    txns, _, _ = journal_tool.read(journals[0])
    text = json.dumps(txns)
    assert SECRETS["pan"] not in text and SECRETS["pan"][-4:] in text
    for p in files:  # whatever the firmware stored (the config and the key file hold them by design)
        if not p.endswith(("synqpay.key", "config.json")):
            raw = open(p, "rb").read()
            for v in (SECRETS["p3"], SECRETS["wifi"], SECRETS["pan"]):
                assert v.encode() not in raw, (p, v)


def test_config_problems_never_show_secret_values():
    from firmware import config

    _, problems = config.merge({"synqpay": {"api_key": "SECRETKEYZZ", "otp": "12"},
                                "wifi": {"password": 1234567},
                                "p3": {"merchant_secret": ["hunter2"]},
                                "card": {"pan": "4970 1000 0000 0014"}})
    text = "\n".join(problems)
    assert len(problems) == 5, problems
    for v in ("SECRETKEYZZ", "1234567", "hunter2", "4970", "0014", '"12"'):
        assert v not in text, (v, text)
    assert "synqpay.api_key: the value set is not allowed" in text


def test_config_allow_list_fails_closed():
    from firmware import config

    for bad in ("10.0.0.1", ["10.0.0.300"], [7], {"a": 1}):
        cfg, problems = config.merge({"allowed_ips": bad})
        assert cfg["allowed_ips"] == ["0.0.0.0"], (bad, cfg["allowed_ips"])
        assert any("every TCP client is refused" in p for p in problems)
    for ok in ([], None):
        cfg, _ = config.merge({"allowed_ips": ok})
        assert cfg["allowed_ips"] == []
    cfg, problems = config.merge({"allowed_ips": [7, "10.0.0.1"]})
    assert cfg["allowed_ips"] == ["10.0.0.1"]
