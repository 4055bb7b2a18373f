"""Wi-Fi station for boards that have one (ESP32, Pico W), with retry.

The terminal boots whether or not Wi-Fi comes up: serial personalities work
without it, and a background task keeps trying.  The LED blinks while
connecting and stays on once connected.  (network.WLAN(STA_IF) is the one
station interface; asking for it again costs nothing, and lets the static
check see every call made on it.)
"""
import asyncio

import network

from firmware import log


def address():
    sta = network.WLAN(network.STA_IF)
    return sta.ifconfig()[0] if sta.isconnected() else "0.0.0.0"


async def _try(w, led):
    sta = network.WLAN(network.STA_IF)
    sta.connect(w["ssid"], w["password"])
    on = False
    for _ in range(w["connect_s"] * 4):
        if sta.isconnected():
            led(True)
            return True
        on = not on
        led(on)
        await asyncio.sleep_ms(250)
    sta.disconnect()
    led(False)
    return False


async def _retry(w, led):
    while not network.WLAN(network.STA_IF).isconnected():
        await asyncio.sleep(w["retry_s"])
        if await _try(w, led):
            log.event("wifi", "up", address())


async def up(cfg, led):
    """Connect; returns the IP address, or None (and keeps trying)."""
    w = cfg["wifi"]
    if not w["ssid"]:
        log.event("wifi", "off", "no wifi.ssid in config.json")
        return None
    network.WLAN(network.STA_IF).active(True)
    try:
        network.hostname(w["hostname"])
    except Exception:
        pass
    log.event("wifi", "connecting", w["ssid"])
    if await _try(w, led):
        log.event("wifi", "up", address())
        return address()
    log.event("wifi", "down", "no connection after %d s; retrying every %d s; serial personalities work"
              % (w["connect_s"], w["retry_s"]))
    asyncio.create_task(_retry(w, led))
    return None
