"""The rarer outcomes through real clients: each queued with the pytest
fixture's control API (`terminal.control.queue(...)`), each driven by the
repository's own registers, `understudy ecr concert|p3|synqpay`, over real
sockets; the asserts are on what those registers print.

One terminal for the whole module (the `terminal` fixture of
understudy.pytest_plugin, made module-wide here: the same testkit.Terminal
and Control), so the dozens of transactions cost one boot.  The power cuts
boot it again: the launcher restarts the firmware on the same state dir
(tools/understudy/launch.py), and the register finds the truth with its
protocol's own means (Concert CD=T, P3 lookup by customIdentifier,
Synqpay's cached answer by referenceId).
"""
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from understudy.testkit import Terminal

UNDERSTUDY = [sys.executable, "-m", "understudy"]
ENV = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))


@pytest.fixture(scope="module")
def terminal(tmp_path_factory):
    t = Terminal(state_dir=tmp_path_factory.mktemp("unhappy"))
    t.start()
    yield t
    bad = t.stop()
    assert not bad, t.output()[-3000:]


def ecr(terminal, proto, *args, quiet=False, timeout=60):
    """(exit status, stdout, stderr) of `understudy ecr <proto> ...` against the terminal."""
    cmd = UNDERSTUDY + ["ecr", proto, "--web", "0"]
    if proto == "concert":
        cmd += ["--port", str(terminal.concert[1])]
    elif proto == "p3":
        cmd += ["--port", str(terminal.p3_tcp[1])]
    elif proto == "synqpay":
        cmd += ["--port", str(terminal.synqpay[1]), "--key", terminal.synqpay_key]
    cmd += list(args) + (["-q"] if quiet else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)
    return r.returncode, r.stdout, r.stderr


def first(out):
    return out.splitlines()[0] if out else ""


# ---------------------------------------------------------------- Concert V3 over TCP

CONCERT = [
    # outcome, exit status, first line (a regex), a line of the decoded answer
    ("wrong_pin", 0, r"^approved  12\.00 EUR", r"CI  1  \(chip\)"),
    ("wrong_pin:2", 0, r"^approved  12\.00 EUR", r"AF  01"),
    ("fallback", 0, r"^approved  12\.00 EUR", r"CI  3  \(magnetic stripe\)"),
    ("removed", 1, r"^declined  12\.00 EUR  \(AF 06: abandoned by the cardholder\)", r"AE  01"),
    ("sca", 0, r"^approved  12\.00 EUR", r"CI  1  \(chip\)"),
    ("sca:decline", 1, r"^declined  12\.00 EUR  \(AF 04: refused\)", r"AE  01"),
    ("duplicate", 0, r"^approved  12\.00 EUR", r"AF  01"),
    ("duplicate:no", 1, r"^declined  12\.00 EUR  \(AF 06", r"AE  01"),
    ("partial", 0, r"^approved  6\.00 EUR", r"CB  600 "),
    ("partial:500", 0, r"^approved  5\.00 EUR", r"CB  500 "),
]


@pytest.mark.parametrize("outcome,status,head,line", CONCERT, ids=[c[0] for c in CONCERT])
def test_concert(terminal, outcome, status, head, line):
    terminal.control.queue(outcome)
    code, out, err = ecr(terminal, "concert", "pay", "12.00")
    assert code == status, out + err
    assert re.search(head, first(out)), out
    assert re.search(line, out), out
    assert terminal.control.queued() == []  # it was this transaction's


def test_concert_v2_has_no_approved_amount_so_partial_is_declined(terminal):
    terminal.control.queue("partial")
    code, out, err = ecr(terminal, "concert", "pay", "12.00", "--serial", terminal.concert_serial, "--v2")
    assert code == 1 and first(out).startswith("declined  12.00 EUR"), out + err
    assert terminal.control.last()["reason"] == "decline"  # not approved for another amount


def test_concert_paper_out_answers_without_the_tickets_asked_for(terminal):
    code, out, err = ecr(terminal, "concert", "pay", "12.00", "--tickets", "both")
    assert code == 0 and "ZT" in out, out + err  # the ticket Concert carries, when there is paper
    terminal.control.queue("paper_out")
    code, out, err = ecr(terminal, "concert", "pay", "12.00", "--tickets", "both")
    assert code == 0 and first(out).startswith("approved  12.00 EUR"), out + err
    assert "ZT" not in out, out


# ---------------------------------------------------------------- P3 over TCP

P3 = [
    # outcome, exit status, first line, a field of the response, an UPDATE (stderr) or None
    # (P3 has no state for "possible duplicate?": its UPDATEs say nothing of it)
    ("wrong_pin", 0, r"^approved  12\.00 EUR", r"transaction\.status\s+APPROVED",
     "Wrong PIN, 2 tries left"),
    ("wrong_pin:2", 0, r"^approved  12\.00 EUR", r"transaction\.status\s+APPROVED",
     "Wrong PIN, 1 tries left"),
    ("fallback", 0, r"^approved  12\.00 EUR", r"paymentDetails\.source\s+MAGNETIC_STRIPE",
     "Chip error, swipe card"),
    ("removed", 1, r"^aborted  12\.00 EUR  UST\S+  \(REMOVED\)", r"statusDetails\.code\s+REMOVED", None),
    ("sca", 0, r"^approved  12\.00 EUR", r"paymentDetails\.source\s+ICC", "Insert card"),
    ("sca:decline", 1, r"^declined  12\.00 EUR  UST\S+  \(DECLINE\)", r"statusDetails\.code\s+DECLINE",
     "Insert card"),
    ("duplicate", 0, r"^approved  12\.00 EUR", r"transaction\.status\s+APPROVED", None),
    ("duplicate:no", 1, r"^aborted  12\.00 EUR  UST\S+  \(DUPLICATE\)", r"statusDetails\.code\s+DUPLICATE",
     None),
    ("partial", 0, r"^approved  6\.00 EUR", r"statusDetails\.code\s+PARTIAL", None),
    ("partial:500", 0, r"^approved  5\.00 EUR", r"transaction\.amount\s+5\.00", None),
]


@pytest.mark.parametrize("outcome,status,head,field,update", P3, ids=[c[0] for c in P3])
def test_p3(terminal, outcome, status, head, field, update):
    terminal.control.queue(outcome)
    code, out, err = ecr(terminal, "p3", "pay", "12.00")
    assert code == status, out + err
    assert re.search(head, first(out)), out
    assert re.search(field, out), out
    if update:
        assert update in err, err


def test_p3_paper_out_says_so_and_sends_no_receipt(terminal):
    code, out, err = ecr(terminal, "p3", "pay", "12.00", "--receipts")
    assert code == 0 and "--- merchant receipt ---" in out, out + err  # with paper: the receipts
    terminal.control.queue("paper_out")
    code, out, err = ecr(terminal, "p3", "pay", "12.00", "--receipts")
    assert code == 0 and first(out).startswith("approved  12.00 EUR"), out + err
    assert re.search(r"statusDetails\.code\s+PAPER_OUT", out), out
    assert "receipt ---" not in out, out


# ---------------------------------------------------------------- Synqpay over TCP

SYNQPAY = [
    # outcome, exit status, first line, a field of the TxResult
    ("wrong_pin", 0, r"^approved  12\.00 ILS", r"panEntryMode\s+EMV"),
    ("fallback", 0, r"^approved  12\.00 ILS", r"panEntryMode\s+MAGNETIC"),
    ("removed", 1, r"^declined  12\.00 ILS  \S+  \(SMART_CARD_ERROR\)", r"transactionStatus\s+DECLINED"),
    ("sca", 0, r"^approved  12\.00 ILS", r"panEntryMode\s+EMV"),
    ("sca:decline", 1, r"^declined  12\.00 ILS  \S+  \(HOST_ERROR\)", r"transactionStatus\s+DECLINED"),
    ("duplicate", 0, r"^approved  12\.00 ILS", r"transactionStatus\s+CAPTURED"),
    ("duplicate:no", 1, r"^declined  12\.00 ILS  \S+  \(CANCELED\)", r"transactionStatus\s+DECLINED"),
    # no receipt in Synqpay's answers: a paper-out approval reads as any approval
    ("paper_out", 0, r"^approved  12\.00 ILS", r"transactionStatus\s+CAPTURED"),
    # no partial approval in Synqpay: declined rather than approved for the whole amount
    ("partial", 1, r"^declined  12\.00 ILS  \S+  \(HOST_ERROR\)", r"amount\s+1200"),
]


@pytest.mark.parametrize("outcome,status,head,field", SYNQPAY, ids=[c[0] for c in SYNQPAY])
def test_synqpay(terminal, outcome, status, head, field):
    terminal.control.queue(outcome)
    ref = "u-" + outcome.replace(":", "-")
    code, out, err = ecr(terminal, "synqpay", "pay", "12.00", "--ref", ref)
    assert code == status, out + err
    assert re.search(head, first(out)), out
    assert re.search(field, out), out


# ---------------------------------------------------------------- power cuts


def refused_while_off(terminal, name, within=5.0):
    """True once a connection to listener `name` is refused (the power is off)."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            socket.create_connection(terminal.fw.address(name), timeout=0.5).close()
        except OSError:
            return True
        time.sleep(0.02)
    return False


def cut(terminal, outcome, off_ms=1500):
    terminal.control.configure({"faults": {"off_ms": off_ms}})
    terminal.control.queue(outcome)
    return len(terminal.fw.lines)


def test_power_cut_after_auth_concert_asks_status_after_the_reboot(terminal):
    mark = cut(terminal, "power_cut:after_auth")
    code, out, err = ecr(terminal, "concert", "pay", "12.50")
    assert code == 3 and "no answer" in first(out + err), out + err  # the register never got it
    assert terminal.wait_for("launcher power-cut", 10, mark) is not None, terminal.output()[-2000:]
    assert refused_while_off(terminal, "concert-ip"), "the listener answered while the power was off"
    assert terminal.wait_ready(30, mark), terminal.output()[-2000:]
    code, out, err = ecr(terminal, "concert", "status", quiet=True)
    assert code == 0 and out.startswith("approved (last transaction)  12.50 EUR"), out + err


def test_power_cut_after_card_concert_status_says_not_completed(terminal):
    mark = cut(terminal, "power_cut:after_card", off_ms=0)
    code, out, err = ecr(terminal, "concert", "pay", "12.50")
    assert code == 3, out + err
    assert terminal.wait_for("power-cut", 10, mark) is not None
    assert terminal.wait_ready(30, mark), terminal.output()[-2000:]
    code, out, err = ecr(terminal, "concert", "status", quiet=True)
    # interrupted before its outcome: not completed (AF 07), nothing was charged
    assert code == 1 and "(AF 07" in out, out + err
    assert terminal.control.last()["result"] == "error" and terminal.control.last()["reason"] == "interrupted"


def test_power_cut_after_answer_concert_has_its_answer_and_the_terminal_reboots(terminal):
    mark = cut(terminal, "power_cut:after_answer", off_ms=0)
    code, out, err = ecr(terminal, "concert", "pay", "12.50", quiet=True)
    assert code == 0 and out.startswith("approved  12.50 EUR"), out + err
    assert terminal.wait_for("power-cut", 10, mark) is not None, terminal.output()[-2000:]
    assert terminal.wait_ready(30, mark), terminal.output()[-2000:]
    code, out2, err = ecr(terminal, "concert", "status", quiet=True)
    assert code == 0 and out2.startswith("approved (last transaction)  12.50 EUR"), out2 + err
    assert out.split("auth ")[1].split()[0] == out2.split("auth ")[1].split()[0]  # the same one


def test_power_cut_over_the_concert_serial_line_the_line_comes_back(terminal):
    """The same pty after the reboot (7E1, which Linux refuses on a pty once
    the line was set: the unix board keeps the pty's own format)."""
    mark = cut(terminal, "power_cut:after_auth", off_ms=0)
    line = terminal.concert_serial
    code, out, err = ecr(terminal, "concert", "pay", "12.50", "--serial", line, "--timeout", "10")
    assert code != 0 and "approved" not in out, out + err  # the answer never came
    assert terminal.wait_for("power-cut", 10, mark) is not None
    assert terminal.wait_ready(30, mark), terminal.output()[-2000:]
    assert terminal.concert_serial == line
    code, out, err = ecr(terminal, "concert", "status", "--serial", line, quiet=True)
    assert code == 0 and out.startswith("approved (last transaction)  12.50 EUR"), out + err


def test_power_cut_after_auth_p3_looks_it_up_after_the_reboot(terminal):
    mark = cut(terminal, "power_cut:after_auth")
    ref = "order-cut-%d" % mark
    code, out, err = ecr(terminal, "p3", "pay", "12.50", "--custom", ref, "--timeout", "10")
    assert code != 0 and "approved" not in out, out + err  # the response never came
    assert terminal.wait_for("launcher power-cut", 10, mark) is not None, terminal.output()[-2000:]
    assert refused_while_off(terminal, "p3-tcp"), "the listener answered while the power was off"
    assert terminal.wait_ready(30, mark), terminal.output()[-2000:]
    code, out, err = ecr(terminal, "p3", "status", "--custom", ref, quiet=True)
    assert code == 0 and out.startswith("approved  12.50 EUR"), out + err


def test_power_cut_after_auth_synqpay_gets_the_cached_answer_after_the_reboot(terminal):
    mark = cut(terminal, "power_cut:after_auth", off_ms=0)
    ref = "cut-%d" % mark
    code, out, err = ecr(terminal, "synqpay", "pay", "12.50", "--ref", ref, "--timeout", "10")
    assert code != 0 and "approved" not in out, out + err
    assert terminal.wait_for("power-cut", 10, mark) is not None
    assert terminal.wait_ready(30, mark), terminal.output()[-2000:]
    code, out, err = ecr(terminal, "synqpay", "status", ref, quiet=True)
    assert code == 0 and out.startswith("approved  12.50 ILS  " + ref), out + err


def test_understudy_run_boots_the_terminal_again_after_a_power_cut(tmp_path):
    """`understudy run` (make run) is the launcher on a PC: the firmware
    exits with the power cut's status and run starts it again on the same
    state dir; Ctrl-C then stops it as usual."""
    import json
    import signal
    import threading
    import urllib.request

    from understudy import paths
    from understudy.testkit import free_port

    ports = {n: free_port() for n in ("concert-ip", "p3-tcp", "p3-ws", "synqpay", "synqpay-tls")}
    web = free_port()
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"listeners": {n: {"port": p} for n, p in ports.items()},
                               "web": {"port": web}, "faults": {"off_ms": 300}}))
    run = os.path.join(paths.ROOT, "tools", "run.py")
    state = str(tmp_path / "state")
    proc = subprocess.Popen([sys.executable, run, "--config", str(cfg), "--state-dir", state],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    ready = threading.Semaphore(0)

    def pump():
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.strip() == "READY":
                ready.release()

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert ready.acquire(timeout=60), "\n".join(lines)
        req = urllib.request.Request("http://127.0.0.1:%d/api/queue" % web, method="POST",
                                     data=json.dumps({"outcomes": ["power_cut:after_auth"]}).encode())
        urllib.request.urlopen(req, timeout=10).read()
        cmd = UNDERSTUDY + ["ecr", "concert", "--web", "0", "--port", str(ports["concert-ip"])]
        r = subprocess.run(cmd + ["pay", "12.50"], capture_output=True, text=True, timeout=60, env=ENV)
        assert r.returncode == 3, r.stdout + r.stderr
        assert ready.acquire(timeout=60), "\n".join(lines)  # READY again, on its own
        assert any("launcher power-cut" in ln for ln in lines), "\n".join(lines)
        r = subprocess.run(cmd + ["status", "-q"], capture_output=True, text=True, timeout=60, env=ENV)
        assert r.returncode == 0 and r.stdout.startswith("approved (last transaction)  12.50 EUR"), r.stdout
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            code = proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    assert code == 0, "\n".join(lines)
    assert lines[-1] == "stopped", "\n".join(lines)
    assert not [ln for ln in lines if "Traceback" in ln or "MemoryError" in ln], "\n".join(lines)


def test_the_core_hands_every_rarer_outcome_to_unhappy_py():
    """terminal.py runs firmware.OUTCOMES itself and hands any other to
    unhappy.py: a rarer outcome named in OUTCOMES would run as an approval."""
    import ast

    from understudy import paths

    def assigned(name, var):
        tree = ast.parse(open(os.path.join(paths.ROOT, "firmware", name)).read())
        return next(ast.literal_eval(n.value) for n in tree.body
                    if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == var)

    plain, rarer = assigned("__init__.py", "OUTCOMES"), assigned("unhappy.py", "NAMES")
    assert "approve" in plain and "wrong_pin" in rarer and not set(plain) & set(rarer)
