"""Golden transcripts: the bytes of a whole flow, both ways, as a text file.

    # what the flow is               (comments)
    @config {"delays": {...}}        (optional: config overrides, JSON)
    > CZ0040300CJ...                 request (a new connection)
    + CB0041250                      more of the same request, sent 50 ms later
    < CZ0040300...AE00210...         the exact answer; "<" alone: closed, no answer

Bytes outside printable ASCII, and "<" itself, are written <hh>.
`pytest --update-goldens` rewrites the "<" lines from what the firmware says.
"""
import json
import re

_HEX = re.compile(r"<([0-9a-f]{2})>")


def to_bytes(text):
    out = bytearray()
    i = 0
    for m in _HEX.finditer(text):
        out += text[i:m.start()].encode("ascii")
        out.append(int(m.group(1), 16))
        i = m.end()
    out += text[i:].encode("ascii")
    return bytes(out)


def to_text(data):
    return "".join(chr(b) if 32 <= b < 127 and b != 60 else "<%02x>" % b for b in data)


class Transcript:
    def __init__(self, path):
        self.path = path
        self.lines = open(path).read().splitlines()
        self.config = {}
        self.exchanges = []  # [pieces(list of bytes), expected bytes, index of "<" line]
        for i, line in enumerate(self.lines):
            if line.startswith("@config "):
                self.config = json.loads(line[8:])
            elif line.startswith("> "):
                self.exchanges.append([[to_bytes(line[2:])], None, None])
            elif line.startswith("+ "):
                self.exchanges[-1][0].append(to_bytes(line[2:]))
            elif line.startswith("<"):
                self.exchanges[-1][1] = to_bytes(line[2:])
                self.exchanges[-1][2] = i

    def update(self, answers):
        for (_, _, idx), got in zip(self.exchanges, answers):
            self.lines[idx] = ("< " + to_text(got)) if got else "<"
        with open(self.path, "w") as f:
            f.write("\n".join(self.lines) + "\n")
