"""Concert serial link efficiency: wire time of the bytes / whole transaction.

The .mpy firmware runs with its serial line throttled to a real character
time (10 bits a character at the baud rate; a pty alone has no speed), zero
authorisation delay, and a register that makes pyTeliumManager's E+ payment
(IND 1, A010) byte for byte, timing every turn of the session:

    ENQ>ACK  frame>ACK  EOT>ENQ (the transaction)  ACK>answer  ACK>EOT

Efficiency = characters exchanged x character time / (last byte read - first
byte written).  Each turn's "rest" is its time minus the wire time of what
went each way: the terminal's reaction, the null-modem thread, the register.
`main` also times pyTeliumManager itself (ask + verify) and a bare echo on
the same null modem (what the cable alone adds).
"""
import argparse
import os
import statistics
import threading
import time

from understudy import paths
from understudy.codecs import concert_link as link
from understudy.launch import Firmware
from understudy.nullmodem import NullModem

REQUEST = link.frame(b"0100001250110978" + b" " * 10 + b"A010B010")
TURNS = (  # (name, what the register writes, how many bytes it reads back)
    ("ENQ > ACK", b"\x05", 1),
    ("frame > ACK", REQUEST, 1),
    ("EOT > ENQ (the transaction)", b"\x04", 1),
    ("ACK > answer frame", b"\x06", 83),
    ("ACK > EOT", b"\x06", 1),
)
CHARS = sum(len(out) + n for _, out, n in TURNS)


def one(s, char_s):
    """[(turn seconds, wire seconds)] and the whole time of one payment."""
    turns = []
    start = time.monotonic()
    for _, out, n in TURNS:
        t0 = time.monotonic()
        s.write(out)
        got = s.read(n)
        t1 = time.monotonic()
        if len(got) != n:
            raise RuntimeError("the terminal answered %r to %r" % (got, out))
        turns.append((t1 - t0, (len(out) + n) * char_s))
    return turns, time.monotonic() - start


def start(baud, frames=False, root=paths.MPY):
    cfg = {"listeners": {"concert-ip": {"enabled": False}, "concert-serial": {"baud": baud}},
           "log": {"frames": frames}}
    return Firmware(root=root, heap="256K", config=cfg, line_baud=baud).start()  # the budget


def runs(fw, baud, n):
    """n timed payments (after two that warm the caches up)."""
    import serial

    path, baud = fw.serial("concert-serial")
    with serial.Serial(path, baud, timeout=5) as s:
        return [one(s, 10.0 / baud) for _ in range(n + 2)][2:]


def measure(baud=9600, n=30, root=paths.MPY):
    """{"efficiency", "whole_ms", "wire_ms"}: the median payment."""
    fw = start(baud, root=root)
    try:
        r = runs(fw, baud, n)
    finally:
        fw.stop()
        fw.cleanup()
    whole = statistics.median([w for _, w in r])
    wire = CHARS * 10.0 / baud
    return {"efficiency": wire / whole, "whole_ms": whole * 1000, "wire_ms": wire * 1000}


def cable(baud, n):
    """Median turn time beyond the wire for a bare echo on the terminal's end
    of the same throttled null modem: what the cable itself adds."""
    import serial

    m = NullModem(baud)
    fd = os.open(m.firmware_path, os.O_RDWR | os.O_NOCTTY)
    stop = []

    def echo():
        while not stop:
            try:
                os.write(fd, os.read(fd, 1))
            except OSError:
                return

    threading.Thread(target=echo, daemon=True).start()
    rest = []
    with serial.Serial(m.register_path, baud, timeout=5) as s:
        time.sleep(0.05)
        for _ in range(n):
            t0 = time.monotonic()
            s.write(b"\x05")
            if s.read(1) != b"\x05":
                raise RuntimeError("the null modem lost a byte")
            rest.append(time.monotonic() - t0 - 20.0 / baud)
    stop.append(1)
    os.close(fd)
    m.close()
    return statistics.median(rest)


def telium_ms(fw, n):
    """Median ask+verify of pyTeliumManager, the real client, same payment."""
    import telium

    path, baud = fw.serial("concert-serial")
    t = telium.Telium(path, baudrate=baud)
    times = []
    try:
        for i in range(n + 2):
            ask = telium.TeliumAsk.new_payment(12.5, target_currency="EUR")
            t0 = time.monotonic()
            if not (t.ask(ask) and t.verify(ask).has_succeeded):
                raise RuntimeError("pyTeliumManager's payment failed")
            if i >= 2:
                times.append(time.monotonic() - t0)
    finally:
        t.close()
    return statistics.median(times) * 1000


def main(argv=None):
    p = argparse.ArgumentParser(prog="understudy bench serial", description=__doc__.split("\n")[0])
    p.add_argument("--baud", type=int, default=9600, help="line speed (default %(default)s)")
    p.add_argument("-n", type=int, default=30, help="payments to time (default %(default)s)")
    p.add_argument("--frames", action="store_true", help="keep log.frames on (the default config)")
    a = p.parse_args(argv)
    char_s = 10.0 / a.baud
    wire = CHARS * char_s
    fw = start(a.baud, a.frames)
    try:
        r = runs(fw, a.baud, a.n)
        wholes = [w for _, w in r]
        med = statistics.median(wholes)
        print("%d baud, %d characters a payment, wire time %.1f ms, log.frames %s"
              % (a.baud, CHARS, wire * 1000, "on" if a.frames else "off"))
        print("whole payment: median %.1f ms (min %.1f, max %.1f) -> efficiency %.3f"
              % (med * 1000, min(wholes) * 1000, max(wholes) * 1000, wire / med))
        print("%-30s %9s %9s %9s" % ("turn (register > terminal)", "time ms", "wire ms", "rest ms"))
        turn_med = [statistics.median([turns[k][0] for turns, _ in r]) for k in range(len(TURNS))]
        for k, (name, _, _) in enumerate(TURNS):
            ww = r[0][0][k][1]
            print("%-30s %9.2f %9.2f %9.2f" % (name, turn_med[k] * 1000, ww * 1000,
                                               (turn_med[k] - ww) * 1000))
        print("%-30s %9s %9s %9.2f" % ("register between turns", "", "", (med - sum(turn_med)) * 1000))
        print("the null modem alone adds %.2f ms a turn (a bare echo in place of the terminal)"
              % (cable(a.baud, a.n) * 1000))
        ms = telium_ms(fw, a.n)
        print("pyTeliumManager ask+verify: median %.1f ms -> efficiency %.3f" % (ms, wire * 1000 / ms))
    finally:
        fw.stop()
        fw.cleanup()


if __name__ == "__main__":
    main()
