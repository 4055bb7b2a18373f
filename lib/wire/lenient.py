"""What a lenient JSON reader takes, shared by the JSON protocols (P3, Synqpay).

The real servers behind both are Java/Kotlin services whose JSON readers
coerce scalars: a boolean sent as "true", an integer sent as "1250".  A
stand-in takes the same, and says so: coerce() changes d in place and returns
one note per change, for the log.  Only unambiguous text is taken: "true" or
"false" in any case; 1 to 12 ASCII digits.
"""


def coerce(d, bools=(), ints=()):
    notes = []
    for key in bools:
        v = d.get(key)
        if isinstance(v, str) and v.lower() in ("true", "false"):
            d[key] = v.lower() == "true"
            notes.append('%s "%s" taken as %s' % (key, v, v.lower()))
    for key in ints:
        v = d.get(key)
        if isinstance(v, str) and 0 < len(v) <= 12 and not v.strip("0123456789"):
            d[key] = int(v)
            notes.append('%s "%s" taken as %d' % (key, v, d[key]))
    return notes
