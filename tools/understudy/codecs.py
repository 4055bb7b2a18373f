"""The firmware's own sans-I/O codecs (lib/wire/), imported on CPython: the
host tools speak every protocol through exactly the code the terminal runs.

    from understudy.codecs import concert_tlv, p3, synqpay_link, ws
"""
import sys

from understudy import paths

if paths.LIB not in sys.path:
    sys.path.insert(0, paths.LIB)

from wire import (
    concert_link,
    concert_tlv,
    concert_v2,
    currency,
    http,
    p3,
    records,
    records_reader,
    synqpay_link,
    ws,
)

__all__ = ["concert_link", "concert_tlv", "concert_v2", "currency", "http", "p3", "records", "records_reader",
           "synqpay_link", "ws"]
