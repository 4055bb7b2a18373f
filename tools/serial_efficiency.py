#!/usr/bin/env python3
"""Concert serial link efficiency: wire time of the bytes / whole transaction.

Runs the .mpy firmware (128K heap) with its serial line throttled to a real
character time (10 bits a character at --baud; a pty alone has no speed),
zero authorisation delay, and a register that makes pyTeliumManager's E+
payment (IND 1, A010) byte for byte, timing every turn of the session:

    ENQ>ACK  frame>ACK  EOT>ENQ (the transaction)  ACK>answer  ACK>EOT

Efficiency = characters exchanged x character time / (last byte read - first
byte written).  Each turn's "rest" is its time minus the wire time of what
went each way: the terminal's reaction, the null-modem thread, the register.
Then the same with pyTeliumManager itself (ask + verify).

    .venv/bin/python tools/serial_efficiency.py [--baud 9600] [-n 30] [--frames]
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
import serial

from understudy import paths
from understudy.launch import Firmware
from wire import concert_link as link

REQUEST = link.frame(b"0100001250110978" + b" " * 10 + b"A010B010")
TURNS = (  # (name, what the register writes, how many bytes it reads back)
    ("ENQ > ACK", b"\x05", 1),
    ("frame > ACK", REQUEST, 1),
    ("EOT > ENQ (the transaction)", b"\x04", 1),
    ("ACK > answer frame", b"\x06", 83),
    ("ACK > EOT", b"\x06", 1),
)


def one(s, char_s):
    """[(turn seconds, wire seconds)] and the whole time of one payment."""
    turns = []
    start = time.monotonic()
    for _, out, n in TURNS:
        t0 = time.monotonic()
        s.write(out)
        got = s.read(n)
        t1 = time.monotonic()
        assert len(got) == n, (out, got)
        turns.append((t1 - t0, (len(out) + n) * char_s))
    return turns, time.monotonic() - start


def calibrate(baud, n):
    """Median turn time beyond the wire for a bare echo on the terminal's end
    of the same throttled null modem: what the cable itself adds."""
    import threading

    from understudy.nullmodem import NullModem

    m = NullModem(baud)
    fd = os.open(m.firmware_path, os.O_RDWR | os.O_NOCTTY)
    stop = []

    def echo():
        while not stop:
            try:
                os.write(fd, os.read(fd, 1))
            except OSError:
                return

    th = threading.Thread(target=echo, daemon=True)
    th.start()
    rest = []
    with serial.Serial(m.register_path, baud, timeout=5) as s:
        time.sleep(0.05)
        for _ in range(n):
            t0 = time.monotonic()
            s.write(b"\x05")
            assert s.read(1) == b"\x05"
            rest.append(time.monotonic() - t0 - 20.0 / baud)
    stop.append(1)
    os.close(fd)
    m.close()
    return statistics.median(rest)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--baud", type=int, default=9600)
    p.add_argument("-n", type=int, default=30, help="payments to time (default 30)")
    p.add_argument("--frames", action="store_true", help="keep log.frames on (the default config)")
    a = p.parse_args()
    char_s = 10.0 / a.baud
    cfg = {"listeners": {"concert-ip": {"enabled": False}, "concert-serial": {"baud": a.baud}},
           "log": {"frames": a.frames}}
    fw = Firmware(root=paths.MPY, heap="128K", config=cfg, line_baud=a.baud).start()
    try:
        path, baud = fw.serial("concert-serial")
        chars = sum(len(out) + n for _, out, n in TURNS)
        runs = []
        with serial.Serial(path, baud, timeout=5) as s:
            for i in range(a.n + 2):
                r = one(s, char_s)
                if i >= 2:  # the first two warm the caches up
                    runs.append(r)
        wholes = [w for _, w in runs]
        med = statistics.median(wholes)
        wire = chars * char_s
        print("%d baud, %d characters a payment, wire time %.1f ms, log.frames %s"
              % (a.baud, chars, wire * 1000, "on" if a.frames else "off"))
        print("whole payment: median %.1f ms (min %.1f, max %.1f) -> efficiency %.3f"
              % (med * 1000, min(wholes) * 1000, max(wholes) * 1000, wire / med))
        print("%-30s %9s %9s %9s" % ("turn (register > terminal)", "time ms", "wire ms", "rest ms"))
        for k, (name, _, _) in enumerate(TURNS):
            tt = statistics.median([turns[k][0] for turns, _ in runs])
            ww = runs[0][0][k][1]
            print("%-30s %9.2f %9.2f %9.2f" % (name, tt * 1000, ww * 1000, (tt - ww) * 1000))
        between = med - sum(statistics.median([turns[k][0] for turns, _ in runs]) for k in range(len(TURNS)))
        print("%-30s %9s %9s %9.2f" % ("register between turns", "", "", between * 1000))
        print("the null modem alone adds %.2f ms a turn (a bare echo in place of the terminal)"
              % (calibrate(a.baud, a.n) * 1000))

        import telium  # the real client, same payment
        t = telium.Telium(path, baudrate=baud)
        times = []
        for i in range(a.n + 2):
            ask = telium.TeliumAsk.new_payment(12.5, target_currency="EUR")
            t0 = time.monotonic()
            assert t.ask(ask)
            assert t.verify(ask).has_succeeded
            if i >= 2:
                times.append(time.monotonic() - t0)
        t.close()
        med = statistics.median(times)
        print("pyTeliumManager ask+verify: median %.1f ms -> efficiency %.3f" % (med * 1000, wire / med))
    finally:
        fw.stop()
        fw.cleanup()


if __name__ == "__main__":
    main()
