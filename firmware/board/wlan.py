"""Wi-Fi station for boards that have one (ESP32, Pico W), with retry.

The terminal boots whether or not Wi-Fi comes up: serial personalities work
without it, and a background task keeps trying.  The LED blinks while
connecting and stays on once connected.
"""
import asyncio

import network

from firmware import log

_sta = None


def address():
    if _sta is not None and _sta.isconnected():
        return _sta.ifconfig()[0]
    return "0.0.0.0"


async def _try(w, led):
    _sta.connect(w["ssid"], w["password"])
    on = False
    for _ in range(w["connect_s"] * 4):
        if _sta.isconnected():
            led(True)
            return True
        on = not on
        led(on)
        await asyncio.sleep_ms(250)
    _sta.disconnect()
    led(False)
    return False


async def _retry(w, led):
    while not _sta.isconnected():
        await asyncio.sleep(30)
        if await _try(w, led):
            log.event("wifi", "up", address())


async def up(cfg, led):
    """Connect; returns the IP address, or None (and keeps trying)."""
    global _sta
    w = cfg["wifi"]
    if not w["ssid"]:
        log.event("wifi", "off", "no wifi.ssid in config.json")
        return None
    _sta = network.WLAN(network.STA_IF)
    _sta.active(True)
    try:
        network.hostname(w["hostname"])
    except Exception:
        pass
    log.event("wifi", "connecting", w["ssid"])
    if await _try(w, led):
        log.event("wifi", "up", address())
        return address()
    log.event("wifi", "down", "no connection after %d s; retrying every 30 s" % w["connect_s"])
    asyncio.create_task(_retry(w, led))
    return None
