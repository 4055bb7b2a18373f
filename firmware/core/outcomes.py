"""What happens to a transaction: chosen by the amount's last two digits.

An outcome is what the simulated cardholder and bank do.  Every personality
maps the result to its own codes (see the adapters).  The table is the
`outcomes` section of the config; "00" and "50" always approve at once, so
everyday test amounts just work.
"""

APPROVE = "approve"
NAMES = (
    "approve",      # approved at once
    "decline",      # refused by the issuer
    "cancel",       # cardholder presses the red button
    "no_card",      # no card presented before the card time-out
    "pin_blocked",  # wrong PIN three times
    "slow",         # approved after delays.slow_auth_ms
    "currency",     # currency not supported
    "lost",         # approved, then the connection drops before the answer
    "forbidden",    # card not allowed (blacklisted, expired)
    "host_error",   # no answer from the bank: not completed
    "signature",    # approved after the cardholder signs (P3 asks the POS)
)

RULES = {
    "00": "approve",
    "50": "approve",
    "01": "decline",
    "02": "cancel",
    "03": "no_card",
    "04": "pin_blocked",
    "05": "slow",
    "06": "currency",
    "07": "lost",
    "08": "forbidden",
    "09": "host_error",
    "10": "signature",
    "default": "approve",
}
FIXED = ("00", "50")


def choose(rules, amount):
    return rules.get("%02d" % (amount % 100)) or rules.get("default") or APPROVE
