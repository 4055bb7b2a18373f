"""The `understudy` command: one entry point for the host tools.

    understudy ecr concert pay 12.50 --host 192.168.1.42
    understudy trace capture.bin
    understudy journal state/journal.bin
    understudy deploy --port /dev/ttyUSB0 --ssid shop --password ...
    understudy run
    understudy pico --uf2 RPI_PICO.uf2 --bootrom rp2040-b1.bin
    understudy bench
"""
import argparse
import sys

from understudy import VERSION

COMMANDS = (
    ("ecr", "act as a cash register: pay, refund, void, status, settle"),
    ("trace", "decode captured bytes of any of the protocols into named fields"),
    ("journal", "print a terminal's journal file as a table"),
    ("deploy", "compile the firmware and copy it, its config and TLS identity to a board"),
    ("run", "start the terminal on this PC in the MicroPython unix port"),
    ("pico", "start it on an emulated Raspberry Pi Pico (rp2040js; you give the UF2 and boot ROM)"),
    ("bench", "measure speed and memory against an echo floor; write docs/BENCHMARKS.md"),
)


def parser():
    p = argparse.ArgumentParser(
        prog="understudy",
        description="Understudy, a payment terminal stand-in: the host tools.",
        epilog="`understudy COMMAND --help` tells more.  Exit codes of `ecr`: 0 approved, "
        "1 not approved, 2 usage, 3 no answer (outcome unknown, or the terminal too busy to "
        "start: nothing happened).")
    p.add_argument("--version", action="version", version="understudy %s" % VERSION)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, text in COMMANDS:
        c = sub.add_parser(name, help=text, add_help=False)
        c.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    a = parser().parse_args(argv[:1] if argv and not argv[0].startswith("-") else argv)
    rest = argv[1:]
    if a.command == "ecr":
        from understudy.ecr import cli
    elif a.command == "trace":
        from understudy import trace as cli
    elif a.command == "journal":
        from understudy import journal_table as cli
    elif a.command == "deploy":
        from understudy import deploy as cli
    elif a.command == "pico":
        from understudy import pico as cli
    elif a.command == "bench":
        from understudy import bench as cli
    else:
        from understudy import run as cli
    return cli.main(rest, prog="understudy " + a.command)


def entry():
    """The console script: exit with what the command returns."""
    try:
        code = main()
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        code = 130
    except BrokenPipeError:  # `understudy ... | head`
        code = 0
    sys.exit(code or 0)
