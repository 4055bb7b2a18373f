"""A POS developer's test, exactly as docs/TESTING.md shows it: their register
(here a small Concert one) against the `terminal` fixture."""
import socket

REQUEST = "CZ0040300CJ012012345678901CA00201CE003978CD001%sCB%03d%d"


class Register:
    """The register under test: pays over Concert V3 (TCP), and when an answer
    is lost it asks the terminal for the last transaction (CD=T)."""

    def __init__(self, address):
        self.address = address

    def ask(self, request):
        with socket.create_connection(self.address, timeout=30) as s:
            s.sendall(request)
            try:
                return s.recv(4096).decode()  # the terminal answers in one write (as Odoo reads)
            except ConnectionResetError:
                return ""

    def pay(self, cents):
        answer = self.ask((REQUEST % ("0", len(str(cents)), cents)).encode())
        if not answer:  # lost on the network: did the terminal charge the card?
            answer = self.ask(b"CZ0040300CJ012012345678901CA00201CD001T")
            if "CB%03d%d" % (len(str(cents)), cents) not in answer:
                return "unknown"
        return "approved" if "AE00210" in answer else "declined"


def test_register_recovers_a_lost_answer(terminal):
    register = Register(terminal.concert)
    assert register.pay(1250) == "approved"

    terminal.control.queue("decline", "lost")  # the next two, whatever their amounts
    assert register.pay(1250) == "declined"
    assert register.pay(1250) == "approved"  # no answer came: the register asked, and knows

    journal = terminal.control.transactions()
    assert [t["result"] for t in journal] == ["approved", "declined", "approved"]
    assert terminal.wait_for("core undelivered #3 approved") is not None  # the answer was lost
