"""ISO 4217 currencies the terminal knows: numeric code -> (alpha, decimals)."""

CURRENCIES = {
    978: ("EUR", 2),
    840: ("USD", 2),
    826: ("GBP", 2),
    756: ("CHF", 2),
    376: ("ILS", 2),
    953: ("XPF", 0),
    392: ("JPY", 0),
    752: ("SEK", 2),
    208: ("DKK", 2),
    578: ("NOK", 2),
    985: ("PLN", 2),
}


def alpha(num):
    c = CURRENCIES.get(num)
    return c[0] if c else "%03d" % num


def numeric(code):
    """'EUR' -> 978; None if unknown."""
    for num, c in CURRENCIES.items():
        if c[0] == code:
            return num
    return None


def decimals(num):
    c = CURRENCIES.get(num)
    return c[1] if c else 2


def fmt(minor, num):
    """1250, 978 -> '12.50 EUR'."""
    d = decimals(num)
    sign = "-" if minor < 0 else ""
    minor = abs(minor)
    if d == 0:
        s = str(minor)
    else:
        p = 10 ** d
        s = "%d.%0*d" % (minor // p, d, minor % p)
    return "%s%s %s" % (sign, s, alpha(num))
