"""Board modules (ESP32, Pico W) import and run on the unix port, with machine
and network faked: Wi-Fi up, and Wi-Fi that never comes up."""
import os
import subprocess

import pytest

from understudy import paths
from understudy.launch import micropython

FAKES = os.path.join(os.path.dirname(__file__), "fakes")


def board(name, mode):
    env = dict(os.environ, MICROPYPATH="%s:%s:%s:.frozen" % (FAKES, paths.ROOT, os.path.join(paths.ROOT, "lib")))
    r = subprocess.run([micropython(), os.path.join(FAKES, "board_check.py"), name, mode],
                       env=env, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.mark.parametrize("name,led", [("esp32", "2"), ("rp2", "'LED'")])
def test_board_boots_with_wifi(name, led):
    out = board(name, "up")
    assert "wifi up 192.168.4.2" in out
    assert "ip 192.168.4.2 address 192.168.4.2 hostname understudy" in out
    assert "host 0.0.0.0 config /config.json state /state" in out
    assert "('pin', %s, 1)" % led in out and "('set', %s, 1)" % led in out


@pytest.mark.parametrize("name", ["esp32", "rp2"])
def test_board_boots_without_wifi_and_says_so(name):
    out = board(name, "never")
    assert "wifi down no connection after 1 s; retrying every 30 s" in out
    assert "ip None address 0.0.0.0" in out
