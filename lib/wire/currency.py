"""ISO 4217: the currencies the terminal and the host tools can name.

One record of 7 characters per currency, alphabetic code, numeric code and
decimals ("XPF9530": XPF, 953, no decimals), in one string: a single object
in RAM, shared by receipts, P3 (which speaks alphabetic codes) and the host
tools.  Which of them the terminal accepts is config.json's `currencies`.
"""
TABLE = ("EUR9782USD8402GBP8262CHF7562ILS3762XPF9530JPY3920SEK7522DKK2082NOK5782"
         "PLN9852CAD1242AUD0362")


def _at(i):
    return TABLE[i:i + 3], int(TABLE[i + 3:i + 6]), int(TABLE[i + 6])


def by_alpha(code):
    """(alpha, numeric, decimals) of "EUR", or None."""
    if len(code) == 3:
        for i in range(0, len(TABLE), 7):
            if TABLE[i:i + 3] == code:
                return _at(i)
    return None


def by_number(num):
    """(alpha, numeric, decimals) of 978, or None."""
    key = "%03d" % num
    for i in range(3, len(TABLE), 7):
        if TABLE[i:i + 3] == key:
            return _at(i - 3)
    return None


def name(num):
    """(alpha, decimals) of 978: ("EUR", 2); an unknown one as ("999", 2)."""
    row = by_number(num)
    return (row[0], row[2]) if row else ("%03d" % num, 2)
