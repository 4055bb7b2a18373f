"""`understudy ecr`: a cash register's side of every personality.

Each protocol module has add_parser(subparsers) and run(args, trace) ->
Result.  The exit code tells a shell script what happened:

    0  approved (or done: a status that found an approved transaction, a settlement)
    1  not approved: the terminal answered declined, cancelled, timed out, busy, error
    2  usage: the command line is wrong, or the protocol has no such action
    3  no answer: could not connect, time-out, the connection closed before the
       answer, or an answer that cannot be read; the outcome is unknown: ask `status`
"""
import decimal
import sys
import time

from understudy.wiretext import to_text

APPROVED, DECLINED, USAGE, NO_ANSWER = 0, 1, 2, 3


class NoAnswer(Exception):
    """No answer, or none that can be read: the outcome is unknown (exit 3)."""


class Usage(Exception):
    """The request cannot be made as asked (exit 2)."""


class Trace:
    """With --trace: every byte both ways on stderr, one line per read or
    write, `>` sent by the register, `<` received, in the log's notation."""

    def __init__(self, stream=None):
        self.stream = stream
        self.t0 = time.monotonic()

    def _line(self, mark, data, text=None):
        if self.stream is not None and data:
            self.stream.write("%s %7.3f %s\n" % (mark, time.monotonic() - self.t0, text or to_text(data)))
            self.stream.flush()

    def sent(self, data, text=None):
        """text: how to show data when its bytes would not read (a masked frame)."""
        self._line(">", data, text)

    def received(self, data):
        self._line("<", data)


class Result:
    """What the terminal answered: verdict "approved" or "declined" (anything
    not approved), a one-line summary, and named fields to print."""

    def __init__(self, approved, summary, fields=(), notes=()):
        self.approved = approved
        self.summary = summary
        self.fields = list(fields)  # (name, value, meaning)
        self.notes = list(notes)  # more lines (tickets, receipts)

    @property
    def code(self):
        return APPROVED if self.approved else DECLINED

    def show(self, out=sys.stdout, quiet=False):
        out.write(self.summary + "\n")
        if quiet:
            return
        width = max([len(f[0]) for f in self.fields] + [2])
        vwidth = min(max([len(str(f[1])) for f in self.fields] + [1]), 40)
        for name, value, meaning in self.fields:
            line = "  %-*s  %-*s  %s" % (width, name, vwidth, value, meaning or "")
            out.write(line.rstrip() + "\n")
        for n in self.notes:
            out.write(n + "\n")


def progress(text):
    """What the terminal shows while it works (updates, events), on stderr."""
    sys.stderr.write("... %s\n" % text)
    sys.stderr.flush()


def minor(text, decimals):
    """'12.50' -> 1250 exactly (no float on the way); Usage if not an amount
    with at most `decimals` decimals."""
    try:
        d = decimal.Decimal(text)
    except decimal.InvalidOperation:
        raise Usage("%r is not an amount (write 12.50)" % text)
    scaled = d.scaleb(decimals)
    if not d.is_finite() or d < 0 or scaled != scaled.to_integral_value():
        raise Usage("%r is not an amount with at most %d decimals" % (text, decimals))
    if scaled >= 10 ** 12:
        raise Usage("%r is too large" % text)
    return int(scaled)


def major(amount, decimals):
    """1250, 2 -> '12.50'."""
    if not decimals:
        return str(amount)
    return "%d.%0*d" % (amount // 10 ** decimals, decimals, amount % 10 ** decimals)
