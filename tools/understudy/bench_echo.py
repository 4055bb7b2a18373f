"""The echo floor of `understudy bench`: run by `micropython` (the unix port),
not by CPython.  A bare asyncio server on the same port and transport as a
personality, doing one request and one answer per exchange and nothing
else: what any terminal written for this runtime would pay at least.

    micropython bench_echo.py once|persist|ws|tls PORT [CERT_DIR]
    micropython bench_echo.py serial TTY

once: one exchange per connection (Concert over TCP).  persist: exchanges on
one connection (P3 framed TCP, Synqpay).  ws: a WebSocket handshake, then
text frames echoed (P3 WebSocket).  tls: persist over TLS (Synqpay TLS).
serial: every byte read from the tty written back.
"""
import asyncio
import sys

mode = sys.argv[1]


async def once(s, _):
    s.write(await s.read(4096))
    await s.drain()
    await s.read(16)  # the client closes
    s.close()
    await s.wait_closed()


async def persist(s, _):
    while True:
        d = await s.read(4096)
        if not d:
            break
        s.write(d)
        await s.drain()
    s.close()


async def websocket(s, _):
    from wire import http, ws

    head = b""
    while http.head_end(head) < 0:
        head += await s.read(1024)
    method, target, version, headers = http.parse_head(head[:http.head_end(head)])
    s.write(ws.handshake(method, target, version, headers, "/"))
    await s.drain()
    while True:
        h = await s.readexactly(2)
        more = await s.readexactly(ws.more_head(h)) if ws.more_head(h) else b""
        n, mask = ws.parse_head(h + more, 1 << 16)[2:4]
        payload = ws.unmask(bytearray(await s.readexactly(n)), mask)
        if h[0] & 15 == ws.CLOSE:
            break
        s.write(ws.frame(ws.TEXT, payload))
        await s.drain()
    s.close()


async def line(path):
    import termios

    f = open(path, "r+b", buffering=0)
    termios.setraw(f.fileno())
    a = termios.tcgetattr(f.fileno())
    a[6][6] = a[6][5] = 0
    termios.tcsetattr(f.fileno(), termios.TCSANOW, a)
    st = asyncio.StreamReader(f)
    print("READY")
    while True:
        d = await st.read(256)
        if d:
            st.write(d)
            await st.drain()
        else:
            await asyncio.sleep_ms(1)


async def main():
    if mode == "serial":
        await line(sys.argv[2])
        return
    ssl = None
    if mode == "tls":
        import ssl as _ssl

        ssl = _ssl.SSLContext(_ssl.PROTOCOL_TLS_SERVER)
        ssl.load_cert_chain(sys.argv[3] + "/cert.der", sys.argv[3] + "/key.der")
    cb = {"once": once, "persist": persist, "ws": websocket, "tls": persist}[mode]
    if ssl is None:
        await asyncio.start_server(cb, "127.0.0.1", int(sys.argv[2]))
    else:
        await asyncio.start_server(cb, "127.0.0.1", int(sys.argv[2]), ssl=ssl)
    print("READY")
    while True:
        await asyncio.sleep(3600)


asyncio.run(main())
