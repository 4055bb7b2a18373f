"""Bytes as one line of text, the notation of the firmware's log, the golden
transcripts and `ecr --trace`: printable ASCII as it is, every other byte
(and "<" itself) as <hh>.  `understudy trace` reads it back."""
import re

_HEX = re.compile(r"<([0-9a-fA-F]{2})>")


def to_text(data):
    return "".join(chr(b) if 32 <= b < 127 and b != 60 else "<%02x>" % b for b in data)


def from_text(text):
    out = bytearray()
    i = 0
    for m in _HEX.finditer(text):
        out += text[i:m.start()].encode("latin-1")
        out.append(int(m.group(1), 16))
        i = m.end()
    out += text[i:].encode("latin-1")
    return bytes(out)
