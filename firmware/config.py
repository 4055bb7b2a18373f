"""The terminal's settings: one JSON file merged over the defaults below.

Every key is documented in the README.  A missing file means defaults.  A
wrong value is reported (key, value, what is allowed) and replaced by its
default; the terminal starts anyway.  Only boot and config reloads need this
module: the app drops it afterwards to give its RAM back.
"""
import json

from firmware import OUTCOMES, SECRET, outcome

# amounts ending in these always approve at once: everyday test amounts just work
ALWAYS_APPROVE = ("00", "50")

DEFAULTS = {
    "terminal_id": "UST00001",
    "merchant_id": "1234567",
    "merchant_name": "UNDERSTUDY TEST SHOP",
    "merchant_city": "PARIS",
    "currency": 978,
    "currencies": [978, 840, 826, 756, 376, 953],
    "allowed_ips": [],
    "listeners": {
        "concert-ip": {"enabled": True, "host": "", "port": 8888},
        "synqpay": {"enabled": True, "host": "", "port": 9000},
        "synqpay-tls": {"enabled": True, "host": "", "port": 9443},
        # device "": the board's UART (id/tx/rx -1: its default), the launcher's pty on a PC
        "concert-serial": {"enabled": True, "device": "", "id": -1, "tx": -1, "rx": -1,
                           "baud": 9600, "bits": 7, "parity": "even", "stop": 1,
                           "protocol": "auto", "immediate": True,
                           "retries": 3, "byte_ms": 1000, "reply_ms": 3000},
        "synqpay-serial": {"enabled": True, "device": "", "id": -1, "tx": -1, "rx": -1,
                           "baud": 115200, "bits": 8, "parity": "none", "stop": 1},
        "p3-tcp": {"enabled": True, "host": "", "port": 4245, "max_clients": 8},
        "p3-ws": {"enabled": True, "host": "", "port": 8080, "path": "/", "max_clients": 8},
        # Concert over classic Bluetooth: an HC-05/HC-06 module on a UART (firmware/bt_spp.py);
        # name "": Understudy-<terminal_id>; key, state: GPIOs wired to KEY/EN and STATE, -1 none
        "concert-bt": {"enabled": False, "device": "", "id": -1, "tx": -1, "rx": -1,
                       "baud": 9600, "bits": 8, "parity": "none", "stop": 1,
                       "protocol": "auto", "immediate": True,
                       "retries": 3, "byte_ms": 1000, "reply_ms": 3000,
                       "module": "hc05", "name": "", "pin": "1234", "key": -1, "state": -1,
                       "at_ms": 1000},
        # Concert over Bluetooth Low Energy on the board (firmware/ble.py): a Nordic UART Service
        "concert-ble": {"enabled": False, "name": "", "protocol": "auto", "immediate": True,
                        "retries": 3, "byte_ms": 1000, "reply_ms": 3000,
                        "rx_buffer": 512, "adv_ms": 250},
    },
    "timeouts": {
        "card_s": 30,
        "pin_s": 30,
        "auth_s": 60,
        "request_ms": 10000,
        "gap_ms": 200,
        "continue_s": 60,
        "signature_s": 60,
    },
    "delays": {"card_ms": 0, "pin_ms": 0, "auth_ms": 0, "slow_auth_ms": 20000},
    "outcomes": {
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
    },
    "card": {
        "pan": "4970100000000014",
        "brand": "CB",
        "mode": "chip",
        "expiry": "2812",
        "aid": "A0000000421010",
        "pin": "1234",
        # the same card and amount approved this recently (minutes, 0: never) asks
        # "possible duplicate?" (firmware/unhappy.py)
        "dup_min": 0,
    },
    "concert": {"version": "echo", "zero_amount_on_cancel": False, "max_request": 2048},
    "synqpay": {
        "serial_number": "UST00001",
        "currency": 376,
        "crc": "be",
        "max_payload": 4096,
        "cached_responses": True,
        "otp": "",
        "api_key": "",
        "idle_s": 0,
    },
    "p3": {
        "merchant_identifier": "understudy",
        "merchant_secret": "understudy",
        "require_login": True,
        "device": "understudy",
        "device_name": "Understudy",
        "device_type": "VERIFONE",
        "location": "Understudy test terminal",
        "max_message": 8192,
        "idle_s": 3600,
    },
    "receipt": {"width": 24},
    "journal": {"enabled": True, "keep": 200, "max_batch": 1000, "recent": 4, "min_free": 4096,
                "fsync": False},
    "faults": {"answer_delay_ms": 0, "split_answer_ms": 0, "off_ms": 0},
    "log": {"frames": True, "heap": False},
    # a transaction starts only with this much heap free; else the register hears "busy"
    "memory": {"headroom": 6144},
    "board": {"led": -1, "led_active_low": False},
    "wifi": {"ssid": "", "password": "", "hostname": "understudy", "connect_s": 20, "retry_s": 30},
    # the web page and control API (docs/CONTROL.md); token "": only loopback may change state
    "web": {"enabled": True, "host": "", "port": 8088, "max_clients": 4, "token": "",
            "open_reads": True, "mode": "auto", "events": 2, "trace": 24, "max_body": 4096,
            "idle_s": 120},
    "config_watch_s": 2,
}

_PORT = (1, 65535)
_MS = (0, 600000)
_BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)


def _digits(n0, n1):
    def ok(v):
        return n0 <= len(v) <= n1 and v.isdigit()

    return ok


def _ipv4(v):
    if not isinstance(v, str):
        return False
    p = v.split(".")
    if len(p) != 4:
        return False
    for x in p:
        if not (0 < len(x) <= 3 and x.isdigit() and int(x) <= 255):
            return False
    return True


def _hex8(v):
    if v == "":
        return True
    for c in v:
        if c not in "0123456789abcdefABCDEF":
            return False
    return len(v) == 8 and v != "00000000"


# Extra checks beyond "same type as the default".  A tuple of two ints is an
# inclusive range, a tuple of str the allowed values, a (function, text) pair
# a predicate and how to say what it allows.  "*" matches any key.
RULES = {
    "currency": (1, 999),
    "currencies.*": (1, 999),
    "allowed_ips.*": (_ipv4, "an IPv4 address, as 192.168.1.20"),
    "listeners.*.port": _PORT,
    "listeners.*.baud": (lambda v: v in _BAUDS, "1200, 2400, 4800, 9600, 19200, 38400, 57600 or 115200"),
    "listeners.*.bits": (7, 8),
    "listeners.*.parity": ("none", "even", "odd"),
    "listeners.*.stop": (1, 2),
    "listeners.*.id": (-1, 9),
    "listeners.*.tx": (-1, 99),
    "listeners.*.rx": (-1, 99),
    "listeners.*.protocol": ("auto", "v2", "v3"),
    "listeners.*.retries": (0, 9),
    "listeners.*.byte_ms": (10, 60000),
    "listeners.*.reply_ms": (100, 600000),
    "listeners.concert-bt.bits": (8, 8),
    "listeners.concert-bt.module": ("hc05", "hc06"),
    "listeners.*.name": (lambda v: len(v) <= 20 and " " not in v and "," not in v,
                         "up to 20 characters, no space or comma (empty: Understudy-<terminal_id>)"),
    "listeners.concert-bt.pin": (_digits(4, 4), "4 digits"),
    "listeners.*.key": (-1, 99),
    "listeners.*.state": (-1, 99),
    "listeners.concert-bt.at_ms": (100, 10000),
    "listeners.concert-ble.rx_buffer": (64, 4096),
    "listeners.concert-ble.adv_ms": (20, 10240),
    "timeouts.card_s": (1, 600),
    "timeouts.pin_s": (1, 600),
    "timeouts.auth_s": (1, 600),
    "timeouts.request_ms": (100, 600000),
    "timeouts.gap_ms": (0, 10000),
    "timeouts.continue_s": (1, 600),
    "timeouts.signature_s": (1, 600),
    "delays.*": _MS,
    "faults.*": _MS,
    "outcomes.*": (outcome, "an outcome: " + ", ".join(OUTCOMES) + ", or wrong_pin[:2], fallback, removed, "
                   "sca[:decline], duplicate[:no], paper_out, partial[:N], "
                   "power_cut:after_card|after_auth|after_answer"),
    "card.dup_min": (0, 1440),
    "card.pan": (_digits(12, 19), "12 to 19 digits"),
    "card.mode": ("chip", "contactless", "magstripe"),
    "card.expiry": (_digits(4, 4), "YYMM"),
    "concert.version": (lambda v: v == "echo" or (len(v) == 4 and v.isdigit()), "echo or 4 digits"),
    "concert.max_request": (256, 65536),
    "receipt.width": (20, 32),
    "journal.keep": (0, 100000),
    "journal.max_batch": (0, 100000),
    "journal.recent": (1, 64),
    "journal.min_free": (0, 1048576),
    "memory.headroom": (0, 1048576),
    "synqpay.currency": (1, 999),
    "synqpay.crc": ("be", "either", "off"),
    "synqpay.max_payload": (256, 65536),
    "synqpay.otp": (lambda v: v == "" or (len(v) == 6 and v.isdigit()), "empty (random) or 6 digits"),
    "synqpay.api_key": (_hex8, "empty (random) or 8 hex digits, not all zero"),
    "synqpay.idle_s": (0, 86400),
    "listeners.*.max_clients": (1, 32),
    "listeners.p3-ws.path": (lambda v: v[:1] == "/" and " " not in v and "?" not in v,
                             "a path starting with /"),
    "p3.device": (lambda v: 0 < len(v) <= 32 and " " not in v and "/" not in v,
                  "1 to 32 characters, no space or /"),
    "p3.device_type": ("MOCK", "MIURA", "VERIFONE"),
    "p3.max_message": (256, 65536),
    "p3.idle_s": (1, 86400),
    "wifi.connect_s": (1, 600),
    "wifi.retry_s": (1, 3600),
    "config_watch_s": (0, 3600),
    "card.pin": (_digits(4, 12), "4 to 12 digits"),
    "web.port": _PORT,
    "web.max_clients": (1, 16),
    "web.token": (lambda v: len(v) <= 64 and " " not in v, "up to 64 characters, no space"),
    "web.mode": ("auto", "interactive"),
    "web.events": (0, 8),
    "web.trace": (4, 256),
    "web.max_body": (256, 65536),
    "web.idle_s": (0, 86400),
}



def _rule(path):
    r = RULES.get(path)
    if r is None:
        i = path.rfind(".")
        if i > 0:
            r = RULES.get(path[:i] + ".*")
            if r is None:
                a = path.split(".")  # listeners.<name>.port matches listeners.*.port
                if len(a) == 3:
                    r = RULES.get(a[0] + ".*." + a[2])
    return r


def _allowed(rule):
    if isinstance(rule[0], int):
        return "%d..%d" % rule
    if callable(rule[0]):
        return rule[1]
    return ", ".join(rule)


def _check(v, rule):
    if isinstance(rule[0], int):
        return rule[0] <= v <= rule[1]
    if callable(rule[0]):
        return rule[0](v)
    return v in rule


def _merge(d, u, path, problems):
    out = {}
    for k, dv in d.items():
        out[k] = _merge(dv, {}, "", problems) if isinstance(dv, dict) else dv
    if not isinstance(u, dict):
        problems.append("%s: expected an object, got %s; using defaults" % (path or "config", _show(u)))
        return out
    for k, v in u.items():
        p = path + "." + k if path else k
        if k in d:
            dv = d[k]
        elif path == "outcomes" and (k == "default" or (len(k) == 2 and k.isdigit())
                                     or (k[:1] == "#" and k[1:].isdigit())):
            dv = "approve"
        else:
            problems.append("%s: unknown key; ignored" % p)
            continue
        out[k] = _value(p, v, dv, problems)
    if not path and u.get("allowed_ips") and not out["allowed_ips"]:
        # an allow list was meant and none of it is usable: refusing every
        # client is safe and says so in the log; allowing all would not be
        problems.append("allowed_ips: no valid address; every TCP client is refused until it is fixed")
        out["allowed_ips"] = ["0.0.0.0"]  # no peer has this address
    if path == "outcomes":
        for k in ALWAYS_APPROVE:
            if out.get(k) != "approve":
                problems.append("outcomes.%s: amounts ending in %s always approve; kept approve" % (k, k))
                out[k] = "approve"
    return out


def _value(p, v, dv, problems):
    if p in SECRET:  # checked as any other, but the problem line shows no value
        quiet = []  # type: list
        out = _checked(p, v, dv, quiet)
        if quiet:
            r = _rule(p)
            problems.append("%s: the value set is not allowed (%s); using the default" % (
                p, _allowed(r) if r and type(v) is type(dv) else "a " + type(dv).__name__))
        return out
    return _checked(p, v, dv, problems)


def _checked(p, v, dv, problems):
    if isinstance(dv, dict):
        return _merge(dv, v, p, problems)
    if isinstance(dv, list):
        if not isinstance(v, list):
            problems.append("%s: %s is not a list; using %s" % (p, _show(v), _show(dv)))
            return dv
        # the default's type, else (an empty default) the rule's, else the first item's
        sample = dv[0] if dv else None if _rule(p + ".*") else v[0] if v else None
        out = []
        for i, x in enumerate(v):
            if sample is not None and type(x) is not type(sample):
                problems.append("%s[%d]: %s has the wrong type; dropped" % (p, i, _show(x)))
                continue
            r = _rule(p + ".*")
            if r and not _check(x, r):
                problems.append("%s[%d]: %s not allowed (%s); dropped" % (p, i, _show(x), _allowed(r)))
                continue
            out.append(x)
        return out
    if type(v) is not type(dv):
        problems.append(
            "%s: %s should be %s; using %s" % (p, _show(v), type(dv).__name__, _show(dv))
        )
        return dv
    r = _rule(p)
    if r and not _check(v, r):
        problems.append("%s: %s not allowed (%s); using %s" % (p, _show(v), _allowed(r), _show(dv)))
        return dv
    return v


_show = json.dumps  # a value as the config file has it


def merge(user):
    """(config, problems) for a parsed JSON object."""
    problems = []  # type: list
    return _merge(DEFAULTS, user, "", problems), problems


def load(path, running=None):
    """Read path -> (config, problems).  Absent: the defaults.  Not JSON (a
    typo, or read while an editor was writing it): the running config if
    there is one, else the defaults."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return merge({})
    try:
        user = json.loads(text)
    except ValueError as e:
        if running is not None:
            return running, ["%s: not valid JSON (%s); keeping the running config" % (path, e)]
        cfg, problems = merge({})
        problems.insert(0, "%s: not valid JSON (%s); using defaults" % (path, e))
        return cfg, problems
    return merge(user)
