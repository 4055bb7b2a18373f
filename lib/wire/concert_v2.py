"""Concert V2 fixed-field messages (protocols E and E+), sans-I/O.

Request (register -> terminal), inside STX..ETX:

    POS 2 | AMOUNT 8 | IND 1 | MODE 1 | TYPE 1 | CURRENCY 3 | PRIVATE 10 [| DELAI 4 | AUTO 4]

26 characters (E) or 34 (E+).  IND 1 asks for the long answer (with REP),
MODE is the means of payment (1 card, C cheque...), TYPE the operation,
DELAI A010 (answer at the end) or A011 (answer at once), AUTO B010/B011.

Answer (terminal -> register):

    POS 2 | STAT 1 | AMOUNT 8 | MODE 1 [| REP 55] | CURRENCY 3 | PRIVATE 10

25 characters, or 80 with REP when IND was 1.  STAT: 0 accepted,
7 not accepted, 9 request taken (immediate answer, no result yet).
Messages are dicts of str fields named as above in lower case.
"""

ACCEPTED = "0"
REFUSED = "7"
TAKEN = "9"
REP_LEN = 55


class V2Error(ValueError):
    """Not a Concert V2 request; the message says why."""


def decode(msg):
    n = len(msg)
    if n != 26 and n != 34:
        raise V2Error("%d characters, not 26 (E) or 34 (E+)" % n)
    for i in range(n):
        if not 32 <= msg[i] <= 126:
            raise V2Error("byte %d at offset %d is not ASCII text" % (msg[i], i))
    s = bytes(msg).decode()
    m = {"pos": s[0:2], "amount": s[2:10], "ind": s[10], "mode": s[11], "type": s[12],
         "currency": s[13:16], "private": s[16:26],
         "delai": s[26:30] if n == 34 else "A010", "auto": s[30:34] if n == 34 else "B010"}
    for k in ("pos", "amount", "currency"):
        if not m[k].isdigit():
            raise V2Error("%s %r is not digits" % (k, m[k]))
    if m["ind"] not in "01":
        raise V2Error("IND %r is not 0 or 1" % m["ind"])
    if m["delai"] not in ("A010", "A011"):
        raise V2Error("DELAI %r is not A010 or A011" % m["delai"])
    if m["auto"][:3] != "B01":
        raise V2Error("AUTO %r is not B01x" % m["auto"])
    return m


def encode(m, stat, rep=""):
    """The answer to request m (a dict from decode)."""
    s = m["pos"] + stat + m["amount"] + m["mode"]
    if m["ind"] == "1":
        s += (rep + " " * REP_LEN)[:REP_LEN]
    return (s + m["currency"] + m["private"]).encode()


def salvage(msg):
    """The fields of a malformed request, where they make sense, so that a
    refusal can echo them; defaults elsewhere."""
    s = "".join([chr(b) if 32 <= b <= 126 else " " for b in msg[:26]]) + " " * 26
    m = {"pos": s[0:2], "amount": s[2:10], "ind": "1" if s[10] == "1" else "0",
         "mode": s[11] if s[11].isalpha() or s[11].isdigit() else "0",
         "currency": s[13:16], "private": s[16:26]}
    for k, dflt in (("pos", "00"), ("amount", "00000000"), ("currency", "000")):
        if not m[k].isdigit():
            m[k] = dflt
    return m


def refusal(msg):
    """The refusal (STAT 7) of message msg, whatever it holds: its fields
    echoed where they make sense (salvage)."""
    return encode(salvage(msg), REFUSED)
