"""Concert serial link layer, terminal side, sans-I/O.

The register opens a session with ENQ, the terminal ACKs, the register
sends STX data ETX LRC, the terminal ACKs (NAK if the LRC is wrong) and the
register ends with EOT.  The answer goes the other way in a session the
terminal opens with ENQ.  LRC is the XOR of every byte after STX up to and
including ETX.  The line is half duplex: whoever opened a session owns the
line until its EOT.

A frame carries at most 512 data characters.  A longer message (a Concert V3
answer with tickets) goes out as several frames in one session: every frame
but the last ends with ETB instead of ETX, the receiver joins their data.

Link is bytes in, bytes out: feed what the line brings to receive(), call
timeout() when `wait` ms have passed without input since `gen` last changed,
write what output() returns to the line.  Each call returns a list of events:

    ("request", bytes)   a whole message arrived and was ACKed
    ("nak", why)         a frame was refused; the register may send it again
    ("abandoned", why)   a receive session was given up (EOT sent)
    ("sent", None)       the answer was ACKed, EOT sent
    ("failed", why)      the answer could not be delivered (EOT sent)

After a request, the terminal owes an answer: send(msg) queues it (it goes
out once the register has handed the line over with EOT), drop() says there
will be none.  Meanwhile an ENQ from the register is NAKed.
"""

ENQ = 0x05
ACK = 0x06
NAK = 0x15
STX = 0x02
ETX = 0x03
EOT = 0x04
ETB = 0x17
MAX_FRAME = 512

# states
IDLE = 0  # nothing going on; noise is ignored
WAIT_STX = 1  # ENQ ACKed (or frame NAKed): the register's frame is due
IN_FRAME = 2  # between STX and ETX/ETB
WAIT_LRC = 3  # ETX/ETB seen: the LRC byte is next
WAIT_EOT = 4  # message ACKed: the register should hand the line over
HELD = 5  # the line is the terminal's, the answer is being prepared
TX_ENQ = 6  # our ENQ is out, waiting for ACK
TX_FRAME = 7  # a frame of the answer is out, waiting for ACK


def lrc(data, start=0, end=None):
    x = 0
    for i in range(start, len(data) if end is None else end):
        x ^= data[i]
    return x


def frame(data, last=True):
    """STX data ETX|ETB LRC."""
    out = bytearray(len(data) + 3)
    out[0] = STX
    out[1:-2] = data
    out[-2] = ETX if last else ETB
    out[-1] = lrc(out, 1, len(out) - 1)
    return bytes(out)


class Link:
    def __init__(self, retries=3, byte_ms=1000, reply_ms=3000, max_msg=2048, max_frame=MAX_FRAME):
        self.retries = retries  # NAKs (or resends) allowed before giving up
        self.byte_ms = byte_ms  # silence allowed inside a frame
        self.reply_ms = reply_ms  # waiting for the other side's turn
        self.max_msg = max_msg
        self.max_frame = max_frame
        self.out = bytearray()
        self.state = IDLE
        self.wait = None  # ms until timeout(), None: no time-out
        self.gen = 0  # changes whenever the time-out restarts
        self.msg = bytearray()  # message being received
        self.mark = 0  # where the current frame starts in msg
        self.x = 0  # running LRC of the frame
        self.end = ETX
        self.over = False  # the current frame is too long: refuse it
        self.tries = 0
        self.owed = False  # a request was delivered; its answer is not queued yet
        self.tx = None  # type: bytes | None  # the answer being (or waiting to be) sent
        self.k = 0  # index of its frame on the line
        self._ev = None

    # -- what the I/O side calls

    def receive(self, data):
        for b in data:
            s = self.state
            if s == IN_FRAME:
                if b == ETX or b == ETB:
                    self.x ^= b
                    self.end = b
                    self._go(WAIT_LRC, self.byte_ms)
                    continue
                if b == STX:  # a new frame starts over a broken one: resync
                    self._start_frame()
                    continue
                self.x ^= b
                if len(self.msg) - self.mark < self.max_frame and len(self.msg) < self.max_msg:
                    self.msg.append(b)
                else:
                    self.over = True  # counted, never buffered
                self.gen += 1
            elif s == WAIT_LRC:
                self._frame_end(b == self.x)
            elif b == ENQ:
                if s == IDLE or s == WAIT_STX:
                    self.msg = bytearray()
                    self.mark = self.tries = 0
                    self.out.append(ACK)
                    self._go(WAIT_STX, self.reply_ms)
                elif s == HELD:
                    self.out.append(NAK)  # our turn: the answer is owed first
            elif s == WAIT_STX:
                if b == STX:
                    self._start_frame()
                elif b == EOT:  # the register ends its session
                    if self.mark:
                        self._emit("abandoned", "EOT between frames")
                    self._rest()
            elif s == WAIT_EOT:
                if b == EOT:
                    self._rest()
            elif s == TX_ENQ:
                if b == ACK:
                    self.tries = 0
                    self._send_frame()
                elif b == NAK:
                    self._retry("ENQ refused")
            elif s == TX_FRAME:
                if b == ACK:
                    self.k += 1
                    self.tries = 0
                    if self.tx is not None and self.k * self.max_frame < len(self.tx):
                        self._send_frame()
                    else:
                        self.out.append(EOT)
                        self.tx = None
                        self._emit("sent", None)
                        self._rest()
                elif b == NAK:
                    self._retry("frame refused")
        return self._take()

    def timeout(self):
        s = self.state
        if s == WAIT_STX:  # silent register: it is gone, or never meant it
            self.tries = self.retries
            self._bad("no frame")
        elif s == IN_FRAME or s == WAIT_LRC:
            self._bad("frame cut short")
        elif s == WAIT_EOT:  # the register forgot EOT: take the line anyway
            self._rest()
        elif s == TX_ENQ:
            self._retry("no ACK to ENQ")
        elif s == TX_FRAME:
            self._retry("no ACK to the frame")
        return self._take()

    def send(self, msg):
        """Queue the answer; it starts now if the line is ours."""
        self.owed = False
        self.tx = msg
        if self.state == IDLE or self.state == HELD:
            self._rest()
        return self._take()

    def no_answer(self):
        """No answer will come for the last request."""
        self.owed = False
        if self.state == HELD:
            self._go(IDLE, None)

    def output(self):
        """The bytes to write to the line now (and forget)."""
        o = self.out
        if o:
            self.out = bytearray()
        return o

    # -- inside

    def _emit(self, kind, detail):
        if self._ev is None:
            self._ev = []
        self._ev.append((kind, detail))

    def _take(self):
        ev = self._ev
        self._ev = None
        return ev or ()

    def _go(self, state, wait):
        self.state = state
        self.wait = wait
        self.gen += 1

    def _rest(self):
        """The register has handed over the line (or never took it)."""
        self.msg = bytearray()
        self.mark = 0
        if self.tx is not None:
            self.k = self.tries = 0
            self.out.append(ENQ)
            self._go(TX_ENQ, self.reply_ms)
        else:
            self._go(HELD if self.owed else IDLE, None)

    def _start_frame(self):
        self.msg = self.msg[:self.mark]
        self.x = 0
        self.over = False
        self._go(IN_FRAME, self.byte_ms)

    def _frame_end(self, ok):
        if self.over:
            self._bad("frame over %d characters" % min(self.max_frame, self.max_msg))
        elif not ok:
            self._bad("bad LRC")
        else:
            self.out.append(ACK)
            self.tries = 0
            if self.end == ETB:  # more frames of the same message follow
                self.mark = len(self.msg)
                self._go(WAIT_STX, self.reply_ms)
            else:
                self.owed = True
                self._emit("request", bytes(self.msg))
                self.msg = bytearray()
                self.mark = 0
                self._go(WAIT_EOT, self.reply_ms)

    def _bad(self, why):
        self.msg = self.msg[:self.mark]
        self.tries += 1
        if self.tries > self.retries:
            self.out.append(EOT)
            self._emit("abandoned", why)
            self.tries = 0
            self._rest()
        else:
            self.out.append(NAK)
            self._emit("nak", why)
            self._go(WAIT_STX, self.reply_ms)

    def _retry(self, why):
        self.tries += 1
        if self.tries > self.retries:
            self.out.append(EOT)
            self.tx = None
            self._emit("failed", why)
            self._rest()
        elif self.state == TX_ENQ:
            self.out.append(ENQ)
            self._go(TX_ENQ, self.reply_ms)
        else:
            self._send_frame()

    def _send_frame(self):
        tx = self.tx or b""
        i = self.k * self.max_frame
        j = i + self.max_frame
        self.out += frame(tx[i:j], j >= len(tx))
        self._go(TX_FRAME, self.reply_ms)
