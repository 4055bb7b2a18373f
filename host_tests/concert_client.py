"""A minimal Concert V3 register for tests: one request, one answer, per connection."""
import socket
import time

from wire import concert_tlv as tlv


def exchange(addr, pieces, pause=0.05, timeout=5.0, close_early=False):
    """Send the request (bytes, or a list of pieces sent `pause` apart) and
    return the answer bytes; b"" when the terminal closed without answering
    (a reset counts as a close: it is what closing on unread bytes sends).
    close_early: close right after sending, as a register that gives up."""
    if isinstance(pieces, (bytes, bytearray)):
        pieces = [pieces]
    s = socket.create_connection(addr, timeout=timeout)
    try:
        for i, p in enumerate(pieces):
            if i:
                time.sleep(pause)
            s.sendall(p)
        if close_early:
            return None
        buf = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                if buf:
                    raise
                return b""
            if not chunk:
                return buf
            buf += chunk
            if tlv.scan(buf) == len(buf):
                return buf
    finally:
        s.close()


def request(**tags):
    """Build a request with CZ first, then the given tags in order."""
    pairs = [("CZ", tags.pop("CZ", "0300"))] + list(tags.items())
    return tlv.encode(pairs)


def odoo(amount_cents, action="0", currency="978"):
    """The exact bytes Odoo's l10n_fr_pos_caisse_ap_ip sends."""
    return ("CZ0040300CJ012012345678901CA00201CE003%sCD001%sCB%03d%d"
            % (currency, action, len(str(amount_cents)), amount_cents)).encode()


def akretion(amount_cents):
    """The exact bytes akretion's caisse_ap_ip_client.py sends."""
    a = str(amount_cents)
    return ("CZ0040300CJ012012345678901CA00201CE003978BA0010CD0010CB%03d%s" % (len(a), a)).encode()
