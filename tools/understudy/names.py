"""Names for what travels on the wire: Concert tags and codes, V2 fields,
Synqpay frame types and link errors, P3 states.  Used by `ecr` to print
answers and by `trace` to decode captures.  (From shared/specs and the docs
in docs/; a code not listed prints as itself.)"""
from understudy.codecs import currency as currency_table

# ISO 4217: (alphabetic code, numeric code, decimals), the firmware's own table
CURRENCIES = tuple(currency_table.by_alpha(currency_table.TABLE[i:i + 3])
                   for i in range(0, len(currency_table.TABLE), 7))

CONCERT_TAGS = {
    "CZ": "protocol version",
    "CJ": "register's protocol id",
    "CA": "register number",
    "CB": "amount (minor units)",
    "CC": "application",
    "CD": "action",
    "CE": "currency",
    "CF": "private data",
    "CG": "merchant contract",
    "CH": "transaction reference",
    "CI": "read mode",
    "CK": "tickets wanted",
    "BA": "answer delay",
    "BB": "force authorisation",
    "BF": "partial payment accepted",
    "BH": "shopper phone",
    "BI": "shopper e-mail",
    "AA": "card number",
    "AB": "card expiry (YYMM)",
    "AC": "authorisation number",
    "AD": "cheque CMC7 line",
    "AE": "status",
    "AF": "complement",
    "AG": "FNCI answer",
    "AH": "cheque guarantee",
    "AI": "card AID",
    "AK": "ticket (base64)",
    "AL": "card number type",
    "AP": "operation date",
    "AQ": "terminal serial number",
    "ID": "PayXpert transaction id",
    "IM": "PayXpert debit id",
    "OD": "order details",
    "ZT": "ticket",
}

CONCERT_CODES = {
    "CD": {"0": "debit", "1": "credit (refund)", "2": "cancellation (void)", "3": "duplicate ticket",
           "4": "pre-authorisation", "5": "re-authorisation", "6": "service payment",
           "7": "deferred debit", "B": "settlement", "I": "identification", "P": "print a ticket",
           "R": "reboot", "C": "CTMS status", "T": "status of the last transaction"},
    "AE": {"10": "operation performed", "01": "operation not performed",
           "11": "request taken (immediate mode)"},
    "AF": {"00": "unknown / busy", "01": "transaction authorised", "02": "phone authorisation",
           "03": "forcing", "04": "refused", "05": "forbidden", "06": "abandoned by the cardholder",
           "07": "not completed", "08": "input time-out", "09": "bad message format",
           "10": "selection error", "11": "operator abandon", "12": "unknown action",
           "13": "currency not supported"},
    "CE": {"%03d" % num: alpha for alpha, num, _ in CURRENCIES},
    "CI": {"0": "indifferent", "1": "chip", "2": "contactless", "3": "magnetic stripe",
           "4": "manual entry"},
    "CC": {"000": "indifferent", "001": "CB/Visa/Mastercard contact", "002": "Amex contact",
           "00B": "CB contactless", "00C": "cheque", "00D": "Amex contactless"},
    "AL": {"1": "partial (masked)"},
    "BA": {"0": "at the end", "1": "immediate"},
}

V2_REQUEST = (("pos", 2, "register number"), ("amount", 8, "amount (minor units)"),
              ("ind", 1, "answer format (1: with REP)"), ("mode", 1, "means of payment"),
              ("type", 1, "operation"), ("currency", 3, "currency"), ("private", 10, "private data"),
              ("delai", 4, "answer delay (E+)"), ("auto", 4, "authorisation (E+)"))
V2_ANSWER = (("pos", 2, "register number"), ("stat", 1, "status"), ("amount", 8, "amount (minor units)"),
             ("mode", 1, "means of payment"), ("rep", 55, "reply data"), ("currency", 3, "currency"),
             ("private", 10, "private data"))
V2_CODES = {
    "type": {"0": "debit", "1": "credit (refund)", "2": "cancellation (void)", "4": "pre-authorisation"},
    "stat": {"0": "accepted", "7": "not accepted", "9": "taken, no result yet"},
    "mode": {"1": "card", "C": "cheque"},
    "delai": {"A010": "answer at the end", "A011": "answer at once"},
    "currency": CONCERT_CODES["CE"],
}

LINK = {0x02: "STX", 0x03: "ETX", 0x04: "EOT", 0x05: "ENQ", 0x06: "ACK", 0x15: "NAK", 0x17: "ETB"}

SYNQPAY_TYPES = {1: "Request", 2: "Response", 3: "Event", 4: "KeepAlive", 5: "ACK", 6: "Error"}
SYNQPAY_ERRORS = {1: "malformed frame", 2: "frame type not taken", 3: "bad CRC", 4: "bad length",
                  5: "not authenticated (wrong key)"}

WS_OPCODES = {0: "continuation", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}

def concert_value(tag, value):
    """'value  meaning' for a Concert tag's value, where a meaning is known."""
    table = CONCERT_CODES.get(tag)
    meaning = table.get(value if tag != "AF" else value[:2]) if table else None
    return "%s  (%s)" % (value, meaning) if meaning else value


def currency(code):
    """(alpha, numeric, decimals) for "EUR", "eur" or "978"; ValueError if unknown."""
    c = str(code).upper()
    row = currency_table.by_alpha(c) or (currency_table.by_number(int(c)) if c.isdigit() else None)
    if row:
        return row
    raise ValueError("unknown currency %r (known: %s)" % (code, ", ".join(r[0] for r in CURRENCIES)))
