"""`understudy deploy` against the unix port acting as a board on a serial
port (host_tests/fake_board.py; mpremote with `resume`, as on a real board):
the files land on its flash, it resets and boots the terminal; Wi-Fi that
never comes up and a port with no board are reported as a person needs."""
import json
import os
import subprocess
import sys

import pytest

from fake_board import FakeBoard
from understudy import deploy, paths

TOOLS = os.path.join(paths.ROOT, "tools")


def run(*args, timeout=180):
    env = dict(os.environ, PYTHONPATH=TOOLS)
    return subprocess.run([sys.executable, "-m", "understudy", "deploy", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


LOCAL = ["--set", "listeners.concert-ip.host=127.0.0.1", "--set", "listeners.synqpay.host=127.0.0.1",
         "--set", "listeners.synqpay-tls.host=127.0.0.1", "--set", "listeners.p3-tcp.host=127.0.0.1",
         "--set", "listeners.p3-ws.host=127.0.0.1", "--set", "listeners.concert-serial.enabled=false",
         "--set", "web.host=127.0.0.1",
         "--set", "wifi.connect_s=1", "--set", "wifi.retry_s=1"]


@pytest.mark.parametrize("wifi", ["1", "never"])
def test_deploy_to_a_board(tmp_path, wifi):
    board = FakeBoard(tmp_path / "flash", wifi_attempts=wifi)
    try:
        ports = []
        from understudy.testkit import free_port

        for name in ("concert-ip", "synqpay", "synqpay-tls", "p3-tcp", "p3-ws"):
            ports += ["--set", "listeners.%s.port=%d" % (name, free_port())]
        ports += ["--set", "web.port=%d" % free_port()]
        r = run("--port", board.port, "--ssid", "shop", "--password", "secret", "--wait", "30",
                *LOCAL, *ports)
        flash = tmp_path / "flash"
        assert (flash / "firmware" / "app.mpy").exists() and (flash / "main.py").exists(), r.stdout + r.stderr
        assert (flash / "tls" / "cert.der").exists()
        assert (flash / "www" / "index.html.gz").exists()  # the web page, as the terminal serves it
        cfg = json.loads((flash / "config.json").read_text())
        assert cfg["wifi"]["ssid"] == "shop"
        assert "compatible" in r.stdout and "understudy 0.1.0 on esp32" in r.stdout, r.stdout + r.stderr
        assert board.boots == 2  # reset
        if wifi == "1":
            assert r.returncode == 0, r.stdout + r.stderr
            assert "deploy: READY at 192.168.4.2" in r.stdout
        else:
            assert r.returncode == 1
            assert "Wi-Fi did not come up" in r.stdout and "board: wifi down" in r.stdout
        booted = board.text().split("understudy 0.1.0 on esp32")[-1]  # mpremote's own probes before
        assert "Traceback" not in booted and "READY" in booted, booted
    finally:
        board.close()


def test_no_board_and_bad_config(tmp_path):
    r = run("--port", str(tmp_path / "ttyUSB9"))
    assert r.returncode == 1 and "no device at" in r.stderr and "plugged in" in r.stderr
    r = run("--port", "/dev/null", "--set", "timeouts.card_s=0")
    assert r.returncode == 1 and "timeouts.card_s: 0 not allowed (1..600)" in r.stderr


def test_mpy_compatibility_rule():
    build = deploy.mpy_header(paths.MPY)
    assert build == (6, 0, 0)  # bytecode only: no sub-version, no arch
    assert deploy.compatible(2822, build) is None  # the unix port here: v6.3, arch x64
    assert deploy.compatible(6 | 3 << 8 | 10 << 10, build) is None  # ESP32, 1.23+: xtensawin
    assert deploy.compatible(6 | 2 << 8 | 4 << 10, build) is None  # RP2040, 1.22: bytecode loads
    assert deploy.compatible(5 | 4 << 10, build) == "it reads .mpy v5, this build is v6"  # 1.18
    assert "older than 1.12" in deploy.compatible(-1, build)
    native = (6, 3, 10)  # an xtensawin build would need the same sub-version and arch
    assert "native code" in deploy.compatible(6 | 3 << 8 | 4 << 10, native)


def test_frozen_deploy_refused_when_the_board_has_no_frozen_firmware(tmp_path):
    """--frozen on a board whose MicroPython lacks the frozen modules: stops
    before touching its flash, and says what to do."""
    board = FakeBoard(tmp_path / "flash")
    try:
        r = run("--port", board.port, "--frozen", "--no-reset", *LOCAL)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "has no Understudy frozen in" in r.stderr and "manifest.py" in r.stderr, r.stderr
        assert not (tmp_path / "flash" / "config.json").exists()
    finally:
        board.close()


FROZEN = os.environ.get("UNDERSTUDY_FROZEN_MICROPYTHON")


@pytest.mark.skipif(not FROZEN, reason="needs a unix-port micropython built with manifest.py "
                    "($UNDERSTUDY_FROZEN_MICROPYTHON)")
def test_frozen_deploy_to_a_board_built_with_the_manifest(tmp_path, monkeypatch):
    """A board whose MicroPython has the firmware frozen in: an old firmware/
    on its flash is removed, only main.py, boot.py, config and TLS are
    copied, and it boots from the frozen modules."""
    monkeypatch.setenv("MICROPYTHON", FROZEN)
    flash = tmp_path / "flash"
    (flash / "firmware").mkdir(parents=True)
    (flash / "firmware" / "app.py").write_text("raise SystemExit('the stale copy ran')\n")
    board = FakeBoard(flash)
    try:
        from understudy.testkit import free_port

        ports = ["--set", "listeners.concert-ip.port=%d" % free_port(),
                 "--set", "listeners.synqpay.enabled=false", "--set", "listeners.synqpay-tls.enabled=false",
                 "--set", "listeners.p3-tcp.enabled=false", "--set", "listeners.p3-ws.enabled=false"]
        r = run("--port", board.port, "--frozen", "--no-tls", "--wait", "30", *LOCAL, *ports)
        assert r.returncode == 0, r.stdout + r.stderr
        assert not (flash / "firmware").exists() and (flash / "main.py").exists()
        booted = board.text().split("understudy 0.1.0 on esp32")[-1]
        assert "Traceback" not in booted and "READY" in booted, booted
    finally:
        board.close()
