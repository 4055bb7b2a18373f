"""Read a terminal's journal file (copied off a board with mpremote, or the
state dir on a PC) and show it as a table, one line per transaction."""
import argparse
import json
import os
import sys
import time

from understudy import paths
from understudy.codecs import records, records_reader

COLUMNS = ("no", "batch", "time", "op", "amount", "cur", "result", "reason", "auth", "card",
           "src", "ref", "delivered", "voided")


def read(path):
    """(transactions as dicts in order, settlements, reader) from a journal file."""
    with open(path, "rb") as f:
        head = f.read(4)
        v = records.version_of(head)
        if v != records.VERSION:
            raise ValueError("%s is not a v%d journal (header %r)" % (path, records.VERSION, head))
        reader = records_reader.Reader()
        recs = []
        while True:
            chunk = f.read(4096)
            if not chunk:
                break
            recs += reader.feed(chunk)
        recs += reader.end()
    txns, order, settlements = {}, [], []
    for r in recs:
        k = r[0]
        if k == "B":
            t = dict(zip(("no", "batch", "ts", "op", "amount", "cur", "src", "ref", "orig", "data"), r[1:]))
            t.update(result=None, reason=None, auth=None, card=None, delivered=False, voided=False)
            txns[t["no"]] = t
            order.append(t["no"])
        elif k == "D" and r[1] in txns:
            t = txns[r[1]]
            t.update(result=r[2], reason=r[3], auth=r[4], amount=r[5],
                     card=" ".join(x for x in (r[7], r[8], r[6]) if x) or None)
            if len(r) > 12:
                t["data"] = r[12]
            if r[2] == "approved" and t["op"] == "void" and t["orig"] in txns:
                txns[t["orig"]]["voided"] = True
        elif k == "V" and r[1] in txns:
            txns[r[1]]["delivered"] = True
        elif k == "S":
            settlements.append({"batch": r[1], "ts": r[2]})
    return [txns[n] for n in order], settlements, reader


def _cell(t, c):
    if c == "time":
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t["ts"]))
    v = t.get(c)
    if v is None:
        return "-" if c != "result" else "(running or cut)"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def main(argv=None, prog="understudy journal"):
    p = argparse.ArgumentParser(prog=prog, description="Print a terminal's journal as a table.")
    p.add_argument("path", nargs="?", default=os.path.join(paths.STATE, "journal.bin"),
                   help="journal file (default: state/journal.bin, what `make run` writes); "
                   "from a board: mpremote fs cp :state/journal.bin .")
    p.add_argument("--json", action="store_true", help="one JSON object per transaction")
    a = p.parse_args(argv)
    try:
        txns, settlements, reader = read(a.path)
    except (OSError, ValueError) as e:
        sys.stderr.write("%s: %s\n" % (prog, e))
        return 1
    if a.json:
        for t in txns:
            print(json.dumps(t))
        return
    rows = [COLUMNS] + [tuple(_cell(t, c) for c in COLUMNS) for t in txns]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    for r in rows:
        print("  ".join(x.ljust(w) for x, w in zip(r, widths)).rstrip())
    for s in settlements:
        print("batch %d settled %s" % (s["batch"], time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s["ts"]))))
    notes = []
    if reader.corrupt:
        notes.append("%d damaged stretch(es) skipped" % reader.corrupt)
    if reader.torn:
        notes.append("the last record was cut short (power loss) and ignored")
    if notes:
        print("note: " + "; ".join(notes))


if __name__ == "__main__":
    main()
