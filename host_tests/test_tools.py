"""The `understudy` command as a person runs it: ecr against a running
terminal on every transport (exit codes, decoded answers, --trace), trace
decoding what ecr traced and the golden transcripts, journal, --help."""
import os
import subprocess
import sys

import pytest

from understudy import paths

TOOLS = os.path.join(paths.ROOT, "tools")


def understudy(*args, stdin=None, timeout=60):
    env = dict(os.environ, PYTHONPATH=TOOLS)
    return subprocess.run([sys.executable, "-m", "understudy", *args], input=stdin, env=env,
                          capture_output=True, text=True, timeout=timeout)


def at(addr):
    return ["--host", addr[0], "--port", str(addr[1])]


def test_concert_over_tcp_exit_codes_and_trace(terminal):
    r = understudy("ecr", "concert", "pay", "12.50", *at(terminal.concert), "--trace")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("approved  12.50 EUR  auth ") and "card ************0014" in r.stdout
    assert "AF  01  (transaction authorised)" in r.stdout
    sent = [ln for ln in r.stderr.splitlines() if ln.startswith(">")]
    assert sent[0].endswith("CZ0040300CJ012012345678901CA00201CE003978CD0010CB0041250"), sent
    # what --trace printed decodes back into the same request and answer
    t = understudy("trace", "-", stdin=r.stderr)
    assert t.returncode == 0 and "> concert V3 request, 56 bytes" in t.stdout
    assert "< concert V3 answer" in t.stdout and "AC" in t.stdout
    r = understudy("ecr", "concert", "pay", "12.01", *at(terminal.concert), "-q")
    assert (r.returncode, r.stdout) == (1, "declined  12.01 EUR  (AF 04: refused)\n")
    r = understudy("ecr", "concert", "pay", "12.07", *at(terminal.concert))  # lost
    assert r.returncode == 3 and "outcome is unknown" in r.stderr, r
    r = understudy("ecr", "concert", "status", *at(terminal.concert), "-q")
    assert r.returncode == 0 and r.stdout.startswith("approved (last transaction)  12.07 EUR")
    r = understudy("ecr", "concert", "void", "12.50", *at(terminal.concert), "-q")
    assert r.returncode == 0
    r = understudy("ecr", "concert", "settle", *at(terminal.concert), "--tickets", "merchant")
    assert r.returncode == 0 and "--- merchant ticket (text) ---" in r.stdout and "BATCH CLOSED" in r.stdout
    assert [t["result"] for t in terminal.control.transactions()] == ["approved", "declined", "approved",
                                                                      "approved"]


def test_concert_over_serial_v3_and_v2(terminal):
    line = ["--serial", terminal.concert_serial]
    r = understudy("ecr", "concert", "pay", "12.50", *line, "--trace", "-q")
    assert r.returncode == 0, r.stderr
    assert "> " in r.stderr and "<05>" in r.stderr
    r = understudy("ecr", "concert", "refund", "3.00", *line, "--v2")
    assert r.returncode == 0 and "STAT      0  (accepted)" in r.stdout, r.stdout + r.stderr
    terminal.control.queue("cancel")
    r = understudy("ecr", "concert", "pay", "8.00", *line, "--v2", "-q")
    assert (r.returncode, r.stdout) == (1, "declined  8.00 EUR  (STAT 7: not accepted)\n")
    r = understudy("ecr", "concert", "status", *line, "--v2")
    assert r.returncode == 2 and "V2 has no status" in r.stderr


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_p3(terminal, transport):
    where = at(terminal.p3_tcp) if transport == "tcp" else ["--ws", terminal.p3_ws]
    r = understudy("ecr", "p3", "pay", "12.10", *where, "--custom", "order-17", "--trace")
    assert r.returncode == 0, r.stderr
    assert "signature asked: signed on the receipt" in r.stderr
    assert '"merchantSecret":"***"' in r.stderr and '"understudy"}' not in r.stderr.split("Secret")[1][:20]
    ident = r.stdout.split()[3]
    assert ident == "UST00001-000001", r.stdout
    t = understudy("trace", "-", stdin=r.stderr)
    assert "EXECUTE_TRANSACTION_RESPONSE" in t.stdout and "transaction.status" in t.stdout, t.stdout
    r = understudy("ecr", "p3", "status", *where, "--custom", "order-17", "-q")
    assert r.returncode == 0 and ident in r.stdout
    r = understudy("ecr", "p3", "refund", "2.00", "--of", ident, *where, "-q")
    assert r.returncode == 0
    r = understudy("ecr", "p3", "void", ident, *where, "-q")  # refunded: cannot be reversed
    assert r.returncode == 1 and "PARAMETER_INVALID" in r.stdout
    r = understudy("ecr", "p3", "pay", "12.01", *where, "-q")
    assert r.returncode == 1 and r.stdout.startswith("declined  12.01 EUR")
    r = understudy("ecr", "p3", "pay", "12.50", *where, "--secret", "wrong", "-q")
    assert r.returncode == 1 and "SERVER_AUTHENTICATION_FAILED" in r.stdout
    r = understudy("ecr", "p3", "settle", *where)
    assert r.returncode == 2 and "no settlement" in r.stderr


def test_synqpay_tcp_tls_pairing_and_a_lost_result(terminal):
    key = ["--key", terminal.synqpay_key]
    r = understudy("ecr", "synqpay", "pay", "12.50", *at(terminal.synqpay), *key, "--ref", "s1",
                   "--trace", "-q")
    assert r.returncode == 0 and r.stdout.startswith("approved  12.50 ILS  s1"), r.stdout + r.stderr
    assert terminal.synqpay_key not in r.stderr and "<02><01>****" in r.stderr
    r = understudy("ecr", "synqpay", "pay", "12.07", *at(terminal.synqpay), *key, "--ref", "s2")
    assert r.returncode == 3, r  # lost: the link drops
    r = understudy("ecr", "synqpay", "status", "s2", *at(terminal.synqpay_tls), "--tls",
                   "--cafile", terminal.tls_ca, *key)
    assert r.returncode == 0 and "missed earlier arrived: s2 SALE CAPTURED" in r.stderr, r.stderr
    r = understudy("ecr", "synqpay", "void", "s1", *at(terminal.synqpay), *key, "-q")
    assert r.returncode == 0 and r.stdout.startswith("voided  12.50 ILS  s1")
    r = understudy("ecr", "synqpay", "pay", "1.00", *at(terminal.synqpay), "--key", "00112233", "-q")
    assert r.returncode == 1 and "pair first" in r.stdout
    r = understudy("ecr", "synqpay", "pair", "--otp", "123456", *at(terminal.synqpay))
    assert r.returncode == 0 and r.stdout.startswith("paired: API key %s" % terminal.synqpay_key)
    r = understudy("ecr", "synqpay", "settle", *at(terminal.synqpay), *key, "-q")
    assert r.returncode == 0 and r.stdout.startswith("settled")


def test_no_terminal_and_bad_usage():
    r = understudy("ecr", "concert", "pay", "12.50", "--port", "1")
    assert r.returncode == 3 and "cannot connect to 127.0.0.1:1" in r.stderr
    r = understudy("ecr", "concert", "pay", "12.505")
    assert r.returncode == 2 and "at most 2 decimals" in r.stderr
    r = understudy("ecr", "concert", "pay")
    assert r.returncode == 2 and "needs an amount" in r.stderr
    r = understudy("ecr", "synqpay", "pay", "1.00")
    assert r.returncode == 2 and "--key" in r.stderr
    r = understudy("ecr", "fax", "pay")
    assert r.returncode == 2


GOLDEN = os.path.join(os.path.dirname(__file__), "golden")


@pytest.mark.parametrize("path,expect", [
    ("concert_ip/debit_odoo.txt", ["> concert V3 request", "CD 0 (debit) action", "AE 10 (operation"]),
    ("concert_ip/tickets_customer.txt", ["ZT ticket", "| APPROVED"]),
    ("concert_serial/v2_cancel.txt", ["concert V2 request, 34 characters", "STAT 7 (not accepted)"]),
    ("synqpay/sale_events.txt", ["< Synqpay Event frame", "params.type WAITING_FOR_CARD",
                                 "result.transaction.maskedPan XXXXXXXXXXXX0014"]),
    ("synqpay/pairing.txt", ["< Synqpay Error frame, 4 bytes code 05 not authenticated",
                             "result.apiKey ********"]),
    ("p3_tcp/framing.txt", ["P3 message, length", "MESSAGE_INVALID"]),
])
def test_trace_reads_the_golden_transcripts(path, expect):
    r = understudy("trace", os.path.join(GOLDEN, path))
    assert r.returncode == 0, r.stdout + r.stderr
    flat = " ".join(r.stdout.split())
    for e in expect:
        assert e in flat, (e, r.stdout)
    assert "1234abcd" not in flat


def test_trace_of_hex_raw_and_unknown_bytes(tmp_path):
    r = understudy("trace", "--hex", "02 04 03 02 05 03 02 06 05 03")
    assert r.returncode == 0
    assert r.stdout.splitlines() == ["Synqpay KeepAlive frame, 3 bytes", "Synqpay ACK frame, 3 bytes",
                                     "Synqpay Error frame, 4 bytes",
                                     "    code  05  not authenticated (wrong key)"]
    raw = tmp_path / "cap.bin"
    raw.write_bytes(b"\x00\x00\x00\x0f" + b'{"type":"X_REQ"}'[:15])
    r = understudy("trace", str(raw))
    assert r.returncode == 0 and "P3 message, length 15" in r.stdout
    raw.write_bytes(b"\xff\xfe garbage")
    r = understudy("trace", str(raw))
    assert r.returncode == 1 and "no known protocol" in r.stdout
    r = understudy("trace", str(tmp_path / "missing"))
    assert r.returncode == 2 and "cannot read" in r.stderr


def test_journal_command(terminal):
    terminal.control.queue("lost")
    understudy("ecr", "concert", "pay", "4.20", *at(terminal.concert))
    r = understudy("journal", os.path.join(terminal.state_dir, "journal.bin"))
    assert r.returncode == 0
    rows = r.stdout.splitlines()
    assert rows[0].split()[:3] == ["no", "batch", "time"] and "420" in rows[1] and " no " in rows[1]
    r = understudy("journal", os.path.join(terminal.state_dir, "nothing.bin"))
    assert r.returncode == 1 and "No such file" in r.stderr


def test_docs_show_the_true_help_and_the_example_that_runs():
    # the README's reference sections live in docs/ (README.md links them)
    tools = open(os.path.join(paths.ROOT, "docs", "TOOLS.md")).read()
    testing = open(os.path.join(paths.ROOT, "docs", "TESTING.md")).read()
    env = dict(os.environ, PYTHONPATH=TOOLS, COLUMNS="80")
    helptext = subprocess.run([sys.executable, "-m", "understudy", "--help"], env=env,
                              capture_output=True, text=True).stdout
    assert "```\n" + helptext + "```" in tools, "docs/TOOLS.md's `understudy --help` is stale"
    example = open(os.path.join(os.path.dirname(__file__), "test_pos_example.py")).read()
    assert "```python\n" + example + "```" in testing, \
        "docs/TESTING.md's POS example differs from test_pos_example.py"


def test_build_unix32_says_how_to_get_a_checkout(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(paths.ROOT, "tools", "build_unix32.py"), str(tmp_path)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "is not a MicroPython checkout" in r.stderr, r.stderr
    assert "git clone --depth 1 --branch v1.28.0 https://github.com/micropython/micropython" in r.stderr


def test_p3_over_websocket_refused_as_busy_says_so():
    """A terminal short of heap answers the WebSocket handshake 503 with
    Retry-After: the POS is told it is busy and that nothing started."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def answer():
        c, _ = srv.accept()
        c.recv(4096)
        c.sendall(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
                  b"Connection: close\r\n\r\n")
        c.close()

    threading.Thread(target=answer, daemon=True).start()
    r = understudy("ecr", "p3", "--ws", "ws://127.0.0.1:%d/" % srv.getsockname()[1], "--no-login",
                   "pay", "1.00")
    srv.close()
    assert r.returncode == 3, r.stdout + r.stderr
    assert "the terminal is busy (503 Service Unavailable, Retry-After: 1 s): nothing started" in r.stderr


def test_bench_report_writes_every_figure_it_is_given(monkeypatch):
    """bench_report turns bench.main()'s figures into docs/BENCHMARKS.md; a
    figure over its target is marked **no**, a heap budget only on the build
    it is for."""
    from understudy import bench_report

    def timing(ms):
        return {"mean": ms / 1000, "rate": 1000 / ms, "p50": ms / 1000, "p99": 2 * ms / 1000,
                "all": [ms / 1000]}

    r = {"rows": [("Concert V3, TCP", timing(1.2), timing(1.0)),
                  ("P3, framed TCP", timing(3.0), timing(1.0))],
         "series": [(1, 50_000), (2, 51_200)], "leak": (60_000, 60_100), "leak_n": 10_000, "busy": 3,
         "rounds": 2, "fit_all": 96, "fit_concert": 24, "max_free": 4096, "boot_mpy": 120.0,
         "boot_py": None, "mpy": (43, 99_272), "serial": None, "charts": [], "frozen": False, "n": 500,
         "seconds": 5, "mixed": [("96K", [{"fits": False, "why": "concert-1 got no answer",
                                           "n": {"approved": 9, "busy": 1, "other": 0, "unanswered": 2}}])]}
    text = bench_report.report(r, "256K")
    assert "| Concert V3, TCP | 833 | 1.20 | 2.40 | 1000 | 1.000 | 1.2 |" in text
    assert "| 96K | 0 of 1 | 10 / 2 | 1 |" in text and "concert-1 got no answer" in text
    assert "| the others at most 2x | up to 3.0x | **no** |" in text
    assert "| .mpy under 100 KB (102,400 bytes) | 99,272 bytes | yes |" in text
    assert "`-X heapsize=256K`" in text
    # the heap budgets are judged on a board's build only: 32-bit, frozen
    assert "| Concert alone in 24K | 24K | not judged on this build" in text
    monkeypatch.setattr(bench_report, "runtime", lambda: ("MicroPython v1.28.0", 32))
    frozen = bench_report.report(dict(r, frozen=True), "64K")
    assert "| Concert alone in 24K | 24K | yes |" in frozen
    assert "| the mixed soak, every personality, in 64K | 96K | **no** |" in frozen


def test_the_launcher_stops_the_firmware_by_closing_its_stdin(firmware):
    """stop() closes the firmware's stdin rather than sending SIGINT (the
    unix port raises that wherever the interpreter is: inside a garbage
    collection it locks the heap for good); the firmware stops as Ctrl-C
    stops it, journal closed and `stopped` said."""
    fw = firmware()
    fw.ask_stop()
    assert fw.proc.wait(10) == 0
    fw.wait()
    assert fw.output().splitlines()[-1] == "stopped", fw.output()[-500:]

