"""What a new user met following the README (issue 19), end to end: the
terminal's screen shows the Synqpay pairing code, a busy device says how
long to wait, boot names its config file, a client without gzip gets the
page as text."""
import os
import socket
import subprocess
import sys
import time

import pytest

from synqpay_client import Link
from understudy import paths
from understudy.launch import Firmware
from web_client import TOKEN, ok, raw, split

ZERO = b"\x00" * 4
CFG = {"web": {"token": TOKEN}, "synqpay": {"otp": "", "api_key": ""}}


def events(fw, until, timeout=5.0):
    """Read the event stream until `until(text so far)`; the text."""
    s = socket.create_connection(fw.address("web"), timeout=timeout)
    s.sendall(b"GET /api/events HTTP/1.1\r\nHost: t\r\n\r\n")
    buf = b""
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end and not until(buf.decode("utf-8", "replace")):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    finally:
        s.close()
    return buf.decode("utf-8", "replace")


def test_the_pairing_code_is_on_the_screen_while_it_is_valid(firmware):
    fw = firmware(CFG)
    assert ok(fw, "GET", "/api/state")["screen"][0] == "WELCOME"
    link = Link(fw.address("synqpay"))
    mark = len(fw.lines)
    assert link.call("pair", {"serialNumber": "UST00001"}, key=ZERO)["result"] is None
    code = fw.lines[fw.wait_for("synqpay pairing code ", 2, mark)].split()[3]
    # the three faces of the screen: the state, the event stream, (the page draws both)
    assert ok(fw, "GET", "/api/state")["screen"] == ["SYNQPAY PAIRING", "CODE " + code]
    assert '"CODE %s"' % code in events(fw, lambda t: "CODE " in t)
    # a wrong code keeps the pairing open; a second pair says how long it stays
    wrong = "%06d" % ((int(code) + 1) % 1000000)
    assert link.call("authenticate", {"otp": wrong}, key=ZERO)["error"]["code"] == 103
    err = link.call("pair", {"serialNumber": "UST00001"}, key=ZERO)["error"]
    assert err["code"] == 201
    left = int(err["message"].split(" s more")[0].split()[-1])
    assert "pairing" in err["message"] and 25 <= left <= 30, err
    assert link.call("authenticate", {"otp": code}, key=ZERO)["result"]["apiKey"]
    assert ok(fw, "GET", "/api/state")["screen"][0] == "WELCOME"  # paired: the code is gone
    link.close()


def test_boot_names_the_config_file_it_read(firmware):
    fw = firmware(CFG)
    assert fw.wait_for("config read " + fw.config_path, 1) is not None


def test_boot_says_when_it_uses_the_built_in_defaults(tmp_path):
    # no file: every default, so the default ports (held for a moment)
    fw = Firmware(root=paths.MPY, heap="256K", state_dir=str(tmp_path / "state"))
    try:
        fw.start()
        missing = os.path.join(str(tmp_path / "state"), "config.json")
        assert fw.wait_for("config built-in defaults (no file %s)" % missing, 1) is not None
        assert not fw.problems()
    finally:
        fw.stop()
        fw.cleanup()


def test_the_page_as_text_for_a_client_without_gzip(firmware, fw_root):
    fw = firmware(CFG)
    with open(os.path.join(paths.ROOT, paths.PAGE), "rb") as f:
        page = f.read()
    for head in (b"GET / HTTP/1.1\r\nHost: t\r\n\r\n",  # plain curl sends no Accept-Encoding
                 b"GET / HTTP/1.1\r\nHost: t\r\nAccept-Encoding: identity\r\n\r\n"):
        status, headers, body = split(raw(fw, head))
        assert status == 200 and "content-encoding" not in headers
        assert body == page
    status, headers, body = split(raw(fw, b"GET / HTTP/1.1\r\nAccept-Encoding: gzip, deflate\r\n\r\n"))
    if fw_root == "mpy":
        assert headers["content-encoding"] == "gzip" and int(headers["content-length"]) == len(body)


# ---------------------------------------------------------------- the ecr command

def understudy(*args, env=None, timeout=60):
    """The command as a person runs it (stdin not a terminal)."""
    e = dict(os.environ, PYTHONPATH=os.path.join(paths.ROOT, "tools"))
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "understudy", *args], stdin=subprocess.DEVNULL,
                          env=e, capture_output=True, text=True, timeout=timeout)


def at(addr, terminal):
    return ["--host", addr[0], "--port", str(addr[1]), "--web", terminal.web.rsplit(":", 1)[1]]


@pytest.mark.understudy(config={"timeouts": {"card_s": 6}})
def test_ecr_shows_progress_while_the_terminal_waits_and_q_is_quiet(terminal):
    r = understudy("ecr", "concert", "pay", "12.03", *at(terminal.concert, terminal))  # no card: 6 s
    assert r.returncode == 1 and "AF 08" in r.stdout
    want = "... waited 5 s, the terminal shows: 12.03 EUR / PRESENT CARD; giving up in 11"
    assert want in r.stderr, r.stderr
    r = understudy("ecr", "concert", "pay", "12.03", *at(terminal.concert, terminal), "-q")
    assert (r.returncode, r.stdout, r.stderr) == (1, "declined  12.03 EUR  (AF 08: input time-out)\n", "")
    for proto, addr in (("p3", terminal.p3_tcp), ("synqpay", terminal.synqpay)):
        key = ["--key", terminal.synqpay_key] if proto == "synqpay" else []
        r = understudy("ecr", proto, "pay", "12.10", *at(addr, terminal), *key, "-q")  # updates, events
        assert r.returncode == 0 and r.stdout.startswith("approved") and r.stderr == "", r


def test_ecr_p3_names_the_transaction_at_once_and_status_alone_asks_for_it(terminal, tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    r = understudy("ecr", "p3", "status", *at(terminal.p3_tcp, terminal), env=env)
    assert r.returncode == 2 and "no transaction with this terminal seen yet" in r.stderr
    terminal.control.queue("lost")
    r = understudy("ecr", "p3", "pay", "12.50", *at(terminal.p3_tcp, terminal), "--custom", "order-17",
                   env=env)
    assert r.returncode == 3, r  # the answer is lost: what was it?
    assert "... transaction UST00001-000001 (customIdentifier order-17)" in r.stderr.splitlines()[0]
    r = understudy("ecr", "p3", "status", *at(terminal.p3_tcp, terminal), "-q", env=env)
    assert r.returncode == 0 and r.stdout.startswith("approved  12.50 EUR  UST00001-000001"), r


def test_ecr_synqpay_pairs_in_two_steps_with_the_code_from_the_screen(terminal):
    where = at(terminal.synqpay, terminal)
    r = understudy("ecr", "synqpay", "pair", *where)
    assert r.returncode == 0 and "CODE 123456" in r.stdout and "pair --otp CODE" in r.stdout, r
    r = understudy("ecr", "synqpay", "pair", *where)  # again, at once
    assert r.returncode == 1 and "pairing, its code is on the screen" in r.stdout, r
    r = understudy("ecr", "synqpay", "pair", "--otp", "123456", *where)
    assert r.returncode == 0 and r.stdout.startswith("paired: API key %s" % terminal.synqpay_key), r


def test_trace_decodes_each_log_line_with_its_listeners_protocol(terminal):
    for proto, addr, key in (("concert", terminal.concert, []), ("p3", terminal.p3_tcp, []),
                             ("synqpay", terminal.synqpay, ["--key", terminal.synqpay_key])):
        assert understudy("ecr", proto, "pay", "12.50", *at(addr, terminal), *key, "-q").returncode == 0
    assert understudy("ecr", "concert", "pay", "12.50", "--serial", terminal.concert_serial,
                      "-q").returncode == 0
    r = subprocess.run([sys.executable, "-m", "understudy", "trace", "-"], input=terminal.output(),
                       env=dict(os.environ, PYTHONPATH=os.path.join(paths.ROOT, "tools")),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "no known protocol" not in r.stdout, r.stdout
    for head in ("> concert V3 request, 56 bytes", "> P3 message, ", ": EXECUTE_TRANSACTION_REQUEST",
                 "> Synqpay JSON-RPC, ", "params.transactionType  SALE", "> frame: STX, 56 characters"):
        assert head in r.stdout, head
