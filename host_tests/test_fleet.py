"""`understudy run --count N`: a fleet of terminals, as a script runs it.

The command is started as a person starts it; its `listening` lines name
each terminal, the JSON file describes the fleet, every terminal answers a
Concert payment on its own port, a terminal killed -9 is reported with its
last lines while the others keep serving, a port in use stops the start
with a clear message, and Ctrl-C stops them all.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

from understudy import paths

PAY = b"CZ0040300CJ012012345678901CA00201CE003978CD0010CB0041250"
BASE = 15400  # base + 10 * i + offset: below the 20000-32000 other tests draw ports from


def pay(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(PAY)
        return s.recv(4096)


def start(tmp_path, *args):
    cmd = [sys.executable, os.path.join(paths.ROOT, "tools", "run.py"), "--state-dir", str(tmp_path)]
    return subprocess.Popen(cmd + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)


def wait_file(path, proc, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if os.path.exists(path):
            return json.load(open(path))
        time.sleep(0.1)
    raise AssertionError("no %s; the command said:\n%s" % (path, proc.communicate(timeout=10)))


def test_a_fleet_serves_reports_a_death_and_stops(tmp_path):
    proc = start(tmp_path, "--count", "3", "--base-port", str(BASE))
    try:
        fleet = wait_file(str(tmp_path / "fleet.json"), proc)
        ids = [t["id"] for t in fleet["terminals"]]
        assert ids == ["UST00001", "UST00002", "UST00003"]
        for i, t in enumerate(fleet["terminals"]):
            assert t["listeners"]["concert-ip"]["port"] == BASE + 10 * i
            assert t["listeners"]["web"]["port"] == BASE + 10 * i + 5
            assert t["state_dir"] == str(tmp_path / t["id"])
            answer = pay(t["listeners"]["concert-ip"]["port"])
            assert b"AE00210" in answer, answer
        devices = {t["listeners"]["concert-serial"]["device"] for t in fleet["terminals"]}
        assert len(devices) == 3
        os.kill(fleet["terminals"][1]["pid"], signal.SIGKILL)
        time.sleep(1.5)
        for t in (fleet["terminals"][0], fleet["terminals"][2]):  # the others keep serving
            assert b"AE00210" in pay(t["listeners"]["concert-ip"]["port"])
        again = json.load(open(tmp_path / "fleet.json"))
        assert [t["alive"] for t in again["terminals"]] == [True, False, True]
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    lines = out.splitlines()
    for tid in ("UST00001", "UST00002", "UST00003"):
        assert "%s listening concert-ip tcp 127.0.0.1:%d" % (tid, BASE + 10 * (int(tid[3:]) - 1)) in lines
        assert "%s listening concert-serial serial /dev/pts/" % tid in out
    assert "terminal UST00002 died (exit status -9); its last lines:" in err, err
    assert "  UST00002" not in err and "core done #1" in err.split("died")[1]  # its own lines
    assert "2 of 3 terminals still serving" in err
    assert "UST00001 stopped" in lines and "UST00003 stopped" in lines
    assert proc.returncode == 1  # a terminal died
    assert not os.path.exists(tmp_path / "fleet.json")


def test_a_port_in_use_names_it_and_a_free_base(tmp_path):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("", BASE + 100 + 13))  # the second terminal's synqpay
    s.listen(1)
    try:
        proc = start(tmp_path, "--count", "2", "--base-port", str(BASE + 100))
        out, err = proc.communicate(timeout=30)
    finally:
        s.close()
    assert proc.returncode == 2, (out, err)
    assert "port %d is in use (UST00002's synqpay)" % (BASE + 113) in err, err
    assert "choose another base with --base-port (for example --base-port " in err
    assert out == ""


def test_fleet_options_need_a_count(tmp_path):
    proc = start(tmp_path, "--base-port", "19000")
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "give --count N" in err, err
