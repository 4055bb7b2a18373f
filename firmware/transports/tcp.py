"""A TCP listener that can be stopped and restarted on its own.

It owns what every TCP personality shares: binding, the allowed-IP list,
a cap on simultaneous clients, logging, and closing the socket whatever the
handler does.  The handler is `async handler(reader, writer, peer_ip)`.
"""
import asyncio

from firmware import log


def peer_ip(w):
    a = w.get_extra_info("peername")
    if isinstance(a, tuple):  # boards: (ip, port)
        return a[0]
    if a and len(a) >= 8 and a[0] == 2:  # unix port: raw sockaddr_in
        return "%d.%d.%d.%d" % (a[4], a[5], a[6], a[7])
    return "?"


async def close(w):
    try:
        w.close()
        await w.wait_closed()
    except Exception:
        pass


class TCPListener:
    kind = "tcp"

    def __init__(self, app, name, handler, ssl=None):
        self.app = app
        self.name = name
        self.handler = handler
        self.ssl = ssl
        self.server = None
        self.clients = 0
        self.where = None

    async def start(self, lc):
        host = lc["host"] or self.app.board.DEFAULT_HOST
        if self.ssl is None:
            self.server = await asyncio.start_server(self._client, host, lc["port"])
        else:
            self.server = await asyncio.start_server(self._client, host, lc["port"], ssl=self.ssl)
        self.max_clients = lc.get("max_clients", 8)
        shown = self.app.board.address() if host == "0.0.0.0" else host
        self.where = "%s:%d" % (shown, lc["port"])
        return ["%s %s %s" % (self.name, self.kind, self.where)]

    async def stop(self):
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def _client(self, r, w):
        ip = peer_ip(w)
        allowed = self.app.cfg["allowed_ips"]
        if allowed and ip not in allowed:
            log.event(self.name, "refused", ip, "not in allowed_ips")
            await close(w)
            return
        if self.clients >= self.max_clients:
            log.event(self.name, "refused", ip, "too many clients")
            await close(w)
            return
        self.clients += 1
        try:
            await self.handler(r, w, ip)
        except Exception as e:
            log.event(self.name, "error", ip, repr(e))
        finally:
            self.clients -= 1
            await close(w)
