"""`understudy ecr PROTOCOL ACTION ...`: parse, run, print, exit code."""
import argparse
import sys

from understudy.ecr import APPROVED, NO_ANSWER, USAGE, NoAnswer, Trace, Usage, __doc__ as CODES
from understudy import ecr
from understudy.ecr import concert, p3, synqpay

PROTOCOLS = {"concert": concert, "p3": p3, "synqpay": synqpay}


def parser(prog="understudy ecr"):
    p = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Act as a cash register towards a terminal (Understudy or a real one): "
        "send one request, print the decoded answer.",
        epilog="exit codes:" + CODES.split("tells a shell script what happened:")[1].rstrip())
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--trace", action="store_true",
                        help="print every byte both ways on stderr (> sent, < received; the "
                        "register's WebSocket frames unmasked, secrets and keys hidden)")
    common.add_argument("-q", "--quiet", action="store_true",
                        help="print the one-line summary only (no progress on stderr either)")
    common.add_argument("--web", type=int, default=8088, metavar="PORT",
                        help="while waiting, show what the terminal's screen says, asked from "
                        "Understudy's control API on this port (default %(default)s; 0: never)")
    sub = p.add_subparsers(dest="protocol", metavar="PROTOCOL")
    sub.required = True
    for m in PROTOCOLS.values():
        m.add_parser(_With(sub, common))
    return p


class _With:
    """Adds the common options (--trace, --quiet) to every protocol's parser."""

    def __init__(self, sub, common):
        self.sub = sub
        self.common = common

    def add_parser(self, name, **kw):
        return self.sub.add_parser(name, parents=[self.common], **kw)


def main(argv=None, prog="understudy ecr"):
    p = parser(prog)
    a = p.parse_args(argv)
    trace = Trace(sys.stderr if a.trace else None)
    ecr.QUIET = a.quiet
    a.wait = ecr.Waiting(a.host, a.web)
    try:
        result = PROTOCOLS[a.protocol].run(a, trace)
    except Usage as e:
        sys.stderr.write("%s %s: %s\n" % (prog, a.protocol, e))
        return USAGE
    except NoAnswer as e:
        sys.stderr.write("no answer: %s\n" % e)
        return NO_ANSWER
    result.show(sys.stdout, a.quiet)
    return APPROVED if result.approved else result.code
