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


class Busy(NoAnswer):
    """Refused before anything started (HTTP 503 with Retry-After): nothing
    happened, try again (exit 3, as the register cannot know more)."""


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


QUIET = False  # -q: the one-line summary only, no progress either


def progress(text):
    """What the terminal shows while it works (updates, events), on stderr."""
    if QUIET:
        return
    sys.stderr.write("... %s\n" % text)
    sys.stderr.flush()


class Waiting:
    """While the terminal works and says nothing (a card nobody presents, a
    slow bank): every EVERY seconds a progress line, how long the register has
    waited and when it gives up, with what the terminal's screen shows when
    its control API answers (Understudy's web port; --web 0: never asked)."""

    EVERY = 5.0

    def __init__(self, host=None, web_port=0, every=EVERY):
        """every=None: no progress at all (the clients used as a library)."""
        self.url = "http://%s:%d/api/state" % (host, web_port) if web_port else None
        self.every = every
        self.begin(0)

    @staticmethod
    def of(a):
        """The command line's Waiting (set by `ecr`), else a silent one."""
        return getattr(a, "wait", None) or Waiting(every=None)

    def begin(self, timeout):
        """A new wait of at most timeout seconds starts."""
        self.t0 = time.monotonic()
        self.timeout = timeout
        self.next = self.t0 + (self.every or 0)

    def slice(self, left):
        """How long to block before the next tick (at most left)."""
        if self.every is None:
            return max(0.01, left)
        return max(0.01, min(left, self.next - time.monotonic()))

    def tick(self):
        now = time.monotonic()
        if self.every is None or now < self.next:
            return
        self.next = now + self.every
        screen = self.screen()
        progress("waited %d s%s; giving up in %d s" % (
            now - self.t0, ", the terminal shows: " + screen if screen else "",
            max(0, self.timeout - (now - self.t0))))

    def screen(self):
        """The terminal's two screen lines ("12.03 EUR / PRESENT CARD"), or ""."""
        if not self.url or QUIET:
            return ""
        import json
        import urllib.request

        try:
            with urllib.request.urlopen(self.url, timeout=0.5) as r:
                lines = json.loads(r.read()).get("screen") or []
        except (OSError, ValueError):
            self.url = None  # not Understudy, or not reachable: not asked again
            return ""
        return " / ".join(ln for ln in lines if ln)


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
