"""A register's suite against a fleet: one Concert payment on every terminal
that `understudy run --count N --json fleet.json` started.  Stands for your
own POS tests in the CI recipes beside it; it needs only pytest."""
import json
import os
import socket

import pytest

FLEET = json.load(open(os.environ.get("FLEET_JSON", "fleet.json")))
PAY = b"CZ0040300CJ012012345678901CA00201CE003978CD0010CB0041250"  # 12.50 EUR


def whole(buf):
    """True when buf is a run of complete TLV elements (tag, 3-digit length, value)."""
    i = 0
    while i + 5 <= len(buf):
        i += 5 + int(buf[i + 2:i + 5])
    return i == len(buf)


def concert(host, port, request):
    """Send one Concert V3 request; the whole answer (it ends with its AE element's message)."""
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(request)
        answer = b""
        while not (b"AE002" in answer and whole(answer)):
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer


@pytest.mark.parametrize("term", FLEET["terminals"], ids=lambda t: t["id"])
def test_each_terminal_approves_a_payment(term):
    where = term["listeners"]["concert-ip"]
    answer = concert(where["host"], where["port"], PAY)
    assert b"AE00210" in answer, answer
