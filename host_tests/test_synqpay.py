"""Synqpay over TCP and TLS, end to end: the firmware in the unix port, real sockets.

Golden transcripts (host_tests/golden/synqpay/*.txt), one link per file:

    # comment
    @config {...}        config overrides (JSON), merged over GOLDEN_CONFIG
    @paired              the terminal boots already paired with key 1234abcd
    @connect [tls]       open a new link (the previous one stays open: evicted)
    @restart             stop the firmware, start it again on the same flash, reconnect
    @wait MS             pause
    @read                read what comes next (an answer that takes its time)
    >> KEYHEX JSON       send a Request frame with this key and payload
    > BYTES              send these bytes (<hh> for non-printable, as in golden.py)
    < BYTES              the next frame the terminal sends, exactly
    <                    the terminal closes the link

`pytest --update-goldens` rewrites the "<" lines from what the terminal says
(after a send it reads until 0.5 s of silence; after @read, until an answer
and 0.5 s more): read every new line before committing.
"""
import glob
import json
import os
import socket
import ssl
import threading
import time

import pytest

from concert_client import exchange, odoo
from golden import to_bytes, to_text
from synqpay_client import KEY, Link, pinned_context, request, unverified_context
from understudy import tls
from wire import concert_tlv
from wire import synqpay_link as L

GOLDEN = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "golden", "synqpay", "*.txt")))
GOLDEN_CONFIG = {"synqpay": {"otp": "123456", "api_key": "1234abcd"}}
ZERO = b"\x00" * 4
SALE = {"paymentMethod": "CREDIT_CARD", "transactionType": "SALE", "referenceId": "r1", "amount": 1250}


@pytest.fixture(scope="module", autouse=True)
def certificate():
    tls.make()  # what `make` does; here too for a bare `pytest -k synqpay`


def sale(ref="r1", amount=1250, **more):
    p = dict(SALE, referenceId=ref, amount=amount)
    p.update(more)
    return p


def paired_state(tmp_path, name="flash"):
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    (d / "synqpay.key").write_text("1234abcd\n")
    return str(d)


def start(firmware, tmp_path, config=None, paired=True):
    cfg = json.loads(json.dumps(GOLDEN_CONFIG))
    for k, v in (config or {}).items():
        cfg.setdefault(k, {}).update(v) if isinstance(v, dict) else cfg.__setitem__(k, v)
    state = paired_state(tmp_path) if paired else str(tmp_path / "flash")
    return firmware(cfg, state_dir=state)


def tcp(fw):
    return fw.address("synqpay")


# ---------------------------------------------------------------- goldens

class Golden:
    def __init__(self, path):
        self.path = path
        self.lines = open(path).read().splitlines()

    def run(self, firmware, tmp_path, update):
        cfg = json.loads(json.dumps(GOLDEN_CONFIG))
        steps = []
        for i, line in enumerate(self.lines):
            if line.startswith("@config "):
                for k, v in json.loads(line[8:]).items():
                    if isinstance(v, dict):
                        cfg.setdefault(k, {}).update(v)
                    else:
                        cfg[k] = v
            elif line == "@paired":
                paired_state(tmp_path)
            elif line.startswith("@") or line.startswith(">"):
                steps.append((i, line))
        state = str(tmp_path / "flash")
        fw = firmware(cfg, state_dir=state)
        link = None
        got = {}  # index of the send line -> frames read after it (update mode)
        expected = self._expected()
        try:
            for i, line in steps:
                if line.startswith("@connect") or line == "@restart":
                    if line == "@restart":
                        fw.stop()
                        fw = firmware(cfg, state_dir=state)
                    use = (pinned_context() if line.endswith(" tls") else None)
                    link = Link(fw.address("synqpay-tls" if use else "synqpay"), tls=use)
                    continue
                if line.startswith("@wait "):
                    time.sleep(int(line[6:]) / 1000.0)
                    continue
                if link is None:
                    link = Link(fw.address("synqpay"))
                if line == "@read":
                    pass
                elif line.startswith(">> "):
                    key, payload = line[3:].split(" ", 1)
                    link.send(L.frame(L.REQUEST, payload.encode(), bytes.fromhex(key)))
                else:
                    link.send(to_bytes(line[2:]))
                if update:
                    got[i] = self._read_all(link, line == "@read")
                else:
                    for want in expected.get(i, []):
                        frame = link.frame_bytes()
                        assert frame == want, "after line %d: %r\n got %s\nwant %s" % (
                            i + 1, line, to_text(frame), to_text(want) if want else "(closed)")
            if not update and link is not None:
                try:
                    extra = link.frame_bytes(0.3)
                except socket.timeout:
                    extra = None
                assert extra in (None, b""), "an extra frame: " + to_text(extra)
        finally:
            if link is not None:
                link.close()
        if update:
            self._rewrite(got)

    def _expected(self):
        out = {}
        cur = None
        for i, line in enumerate(self.lines):
            if line.startswith(">") or line == "@read":
                cur = i
                out[cur] = []
            elif line.startswith("<") and cur is not None:
                out[cur].append(to_bytes(line[2:]) if len(line) > 1 else b"")
        return out

    @staticmethod
    def _read_all(link, patient):
        """Frames until 0.5 s of quiet (patient: and an answer came, within 5 s)."""
        frames = []
        while True:
            done = not patient or (frames and frames[-1][1:2] in (b"\x02", b"\x05", b"\x06"))
            try:
                f = link.frame_bytes(0.5 if done else 5.0)
            except socket.timeout:
                return frames
            frames.append(f)
            if not f:
                return frames

    def _rewrite(self, got):
        out = []
        for i, line in enumerate(self.lines):
            if line.startswith("<"):
                continue
            out.append(line)
            if i in got:
                out += [("< " + to_text(f)) if f else "<" for f in got[i]]
        with open(self.path, "w") as f:
            f.write("\n".join(out) + "\n")


@pytest.mark.parametrize("path", GOLDEN, ids=[os.path.basename(p)[:-4] for p in GOLDEN])
def test_golden(firmware, tmp_path, path, request):
    update = request.config.getoption("--update-goldens")
    Golden(path).run(firmware, tmp_path, update)
    if update:
        pytest.skip("golden rewritten")


def test_coerced_params_are_logged_as_notes(firmware, tmp_path):
    fw = start(firmware, tmp_path)
    link = Link(tcp(fw))
    r = link.call("startTransaction", {"paymentMethod": "CREDIT_CARD", "transactionType": "SALE",
                                       "referenceId": "n1", "amount": "0800", "notifyUpdate": "false"})
    assert r["result"]["transaction"]["amount"] == 800, r
    for note in ('amount "0800" taken as 800', 'notifyUpdate "false" taken as false'):
        assert fw.wait_for(note, 5) is not None, fw.output()[-2000:]


# ---------------------------------------------------------------- TLS

def test_tls_client_pinning_the_root_and_one_skipping_verification_both_connect(firmware, tmp_path):
    fw = start(firmware, tmp_path)
    addr = fw.address("synqpay-tls")
    assert fw.listeners["synqpay-tls"][0] == "tls"
    pinned = Link(addr, tls=pinned_context())  # hostname 127.0.0.1 checked against the SAN
    assert pinned.call("getStatus")["result"]["deviceStatus"] == "IDLE"
    pinned.close()
    loose = Link(addr, tls=unverified_context())
    cert = loose.s.getpeercert(binary_form=True)
    assert cert == open(os.path.join(tls.paths.TLS, "cert.der"), "rb").read()  # pin by fingerprint
    assert loose.call("getStatus")["result"]["deviceStatus"] == "IDLE"
    loose.close()
    with pytest.raises(ssl.SSLCertVerificationError):  # not a public certificate
        Link(addr, tls=ssl.create_default_context())


def test_plain_bytes_on_the_tls_port_do_not_hurt(firmware, tmp_path):
    fw = start(firmware, tmp_path, {"timeouts": {"request_ms": 1000}})
    s = socket.create_connection(fw.address("synqpay-tls"), timeout=5)
    s.sendall(request("getStatus"))  # not a TLS record: the handshake never completes
    try:
        assert s.recv(100) == b""  # closed after timeouts.request_ms
    except ConnectionResetError:
        pass
    s.close()
    assert fw.wait_for("synqpay-tls closed 127.0.0.1 OSError", 2) is not None
    s = socket.create_connection(fw.address("synqpay-tls"), timeout=5)  # and says nothing
    try:
        assert s.recv(100) == b""
    except ConnectionResetError:
        pass
    s.close()
    assert fw.wait_for("synqpay-tls silent 127.0.0.1 closed after 1000 ms", 2) is not None
    link = Link(fw.address("synqpay-tls"), tls=unverified_context())
    assert link.call("getStatus")["result"]["deviceStatus"] == "IDLE"


def test_missing_certificate_disables_only_tls(firmware, tmp_path):
    fw_env = os.environ.get("UNDERSTUDY_TLS")
    os.environ["UNDERSTUDY_TLS"] = str(tmp_path / "nowhere")
    try:
        fw = start(firmware, tmp_path)
    finally:
        if fw_env is None:
            del os.environ["UNDERSTUDY_TLS"]
        else:
            os.environ["UNDERSTUDY_TLS"] = fw_env
    assert "synqpay-tls failed cannot listen" in fw.output()
    assert Link(tcp(fw)).call("getStatus")["result"]["deviceStatus"] == "IDLE"


# ---------------------------------------------------------------- pairing

def pair(link, fw, otp=None):
    mark = len(fw.lines)
    assert link.call("pair", {"serialNumber": "UST00001"}, key=ZERO)["result"] is None
    if otp is None:
        i = fw.wait_for("synqpay pairing code ", 2, mark)
        otp = fw.lines[i].split()[3]
    return link.call("authenticate", {"otp": otp}, key=ZERO)


def test_pairing_with_random_code_survives_a_restart(firmware, tmp_path):
    cfg = {"synqpay": {"otp": "", "api_key": ""}}
    state = str(tmp_path / "flash")
    fw = firmware(cfg, state_dir=state)
    link = Link(tcp(fw))
    assert link.call("getStatus", key=ZERO) == ("error", L.E_AUTH)  # zero key: pairing only
    assert link.call("authenticate", {"otp": "000000"}, key=ZERO)["error"]["code"] == 201  # no pairing open
    mark = len(fw.lines)
    assert link.call("pair", {"serialNumber": "UST00001"}, key=ZERO)["result"] is None
    otp = fw.lines[fw.wait_for("synqpay pairing code ", 2, mark)].split()[3]
    assert link.call("getStatus", key=ZERO) == ("error", L.E_AUTH)
    wrong = "%06d" % ((int(otp) + 1) % 1000000)
    assert link.call("authenticate", {"otp": wrong}, key=ZERO)["error"]["code"] == 103
    key = link.call("authenticate", {"otp": otp}, key=ZERO)["result"]["apiKey"]
    assert len(key) == 8 and int(key, 16) > 0
    assert key not in fw.output()  # never logged
    k = bytes.fromhex(key)
    assert link.call("getStatus", key=k)["result"]["deviceStatus"] == "IDLE"
    assert link.call("getStatus", key=KEY if k != KEY else b"\x99" * 4) == ("error", L.E_AUTH)
    link.close()
    fw.stop()
    fw = firmware(cfg, state_dir=state)  # same flash
    link = Link(tcp(fw))
    assert link.call("getStatus", key=k)["result"]["deviceStatus"] == "IDLE"
    # pairing again gives a new key; the old one is refused from then on
    new = pair(link, fw)["result"]["apiKey"]
    assert link.call("getStatus", key=bytes.fromhex(new))["result"]["deviceStatus"] == "IDLE"
    if new != key:  # random: the same key again only by a 1-in-4-billion chance
        assert link.call("getStatus", key=k) == ("error", L.E_AUTH)


def test_pair_checks_the_serial_number_and_the_code_expires(firmware, tmp_path):
    fw = start(firmware, tmp_path, paired=False)
    link = Link(tcp(fw))
    assert link.call("pair", {"serialNumber": "NOT-ME"}, key=ZERO)["error"]["code"] == 103
    assert link.call("pair", {}, key=ZERO)["error"]["code"] == 102
    assert link.call("startTransaction", SALE) == ("error", L.E_AUTH)  # unpaired: no key is right
    assert pair(link, fw, "123456")["result"] == {"apiKey": "1234abcd"}
    assert link.call("pair", {"serialNumber": "UST00001"}, key=ZERO)["result"] is None
    assert link.call("getStatus")["result"]["deviceStatus"] == "PAIRING"
    assert link.call("startTransaction", SALE)["error"]["code"] == 201


# ---------------------------------------------------------------- one client at a time

def test_a_new_client_evicts_the_old_one(firmware, tmp_path):
    fw = start(firmware, tmp_path)
    a = Link(tcp(fw))
    assert a.call("getStatus")["result"]["deviceStatus"] == "IDLE"
    b = Link(fw.address("synqpay-tls"), tls=unverified_context())  # across ports too
    assert a.closed()
    assert b.call("getStatus")["result"]["deviceStatus"] == "IDLE"
    c = Link(tcp(fw))
    assert b.closed()
    assert c.call("getStatus")["result"]["deviceStatus"] == "IDLE"
    first = fw.wait_for(" evicted ", 5)
    fw.wait_for(" evicted ", 5, first + 1)  # (a line reaches us a moment after the answers)
    assert fw.output().count(" evicted ") == 2


def test_no_idle_timeout_and_keepalive(firmware, tmp_path):
    fw = start(firmware, tmp_path, {"timeouts": {"request_ms": 300}})
    link = Link(tcp(fw))
    time.sleep(1.0)  # longer than any time-out of the link
    link.send(L.control(L.KEEPALIVE))
    assert link.frame() == (L.ACK, None, None)
    link.send(L.control(L.ACK))  # an ACK needs no answer
    assert link.call("getStatus")["result"]["deviceStatus"] == "IDLE"


def _slow(extra=None):
    cfg = {"delays": {"auth_ms": 800}}
    cfg.update(extra or {})
    return cfg


def test_result_of_an_evicted_client_goes_to_the_new_one(firmware, tmp_path):
    fw = start(firmware, tmp_path, _slow())
    a = Link(tcp(fw))
    a.send(request("startTransaction", sale(), rid="s1"))
    assert fw.wait_for("core start #1", 5) is not None
    b = Link(tcp(fw))
    assert a.closed()
    st = b.call("getStatus", rid="g1")
    assert st["id"] == "g1" and st["result"] == {"deviceStatus": "TRANSACTION", "cancelable": False}
    _, last = b.answer()
    r = json.loads(last[2])
    assert r["id"] == "s1" and r["result"]["transaction"]["transactionStatus"] == "CAPTURED"
    assert fw.wait_for("core done #1 approved", 2) is not None
    time.sleep(0.2)
    assert "undelivered" not in fw.output()


def test_answer_lost_with_the_client_is_resent_when_it_comes_back(firmware, tmp_path):
    fw = start(firmware, tmp_path, _slow())
    a = Link(tcp(fw))
    a.send(request("startTransaction", sale(), rid="s1"))
    assert fw.wait_for("core start #1", 5) is not None
    a.close()
    assert fw.wait_for("core undelivered #1 approved", 5) is not None
    b = Link(tcp(fw))
    b.send(L.control(L.KEEPALIVE))  # not the key yet: nothing resent
    assert b.frame() == (L.ACK, None, None)
    b.send(request("getStatus", rid="g1"))
    first = json.loads(b.frame()[2])
    second = json.loads(b.frame()[2])
    assert first["id"] == "s1" and first["result"]["transaction"]["referenceId"] == "r1"
    assert second["id"] == "g1" and second["result"]["deviceStatus"] == "IDLE"
    assert fw.wait_for("synqpay resend 127.0.0.1 #1", 2) is not None
    b.close()
    c = Link(tcp(fw))  # delivered now: not sent again
    assert c.call("getStatus", rid="g2")["id"] == "g2"


def test_without_cached_responses_the_register_asks(firmware, tmp_path):
    fw = start(firmware, tmp_path, _slow({"synqpay": {"cached_responses": False}}))
    a = Link(tcp(fw))
    a.send(request("startTransaction", sale(), rid="s1"))
    assert fw.wait_for("core start #1", 5) is not None
    a.close()
    assert fw.wait_for("core undelivered #1 approved", 5) is not None
    b = Link(tcp(fw))
    r = b.call("getTransaction", {"lookupMethod": "REF_ID", "lookupValue": "r1"}, rid="q1")
    assert r["id"] == "q1" and r["result"]["transaction"]["transactionStatus"] == "CAPTURED"
    r = b.call("startTransaction", sale(), rid="s2")  # the same referenceId is never charged twice
    assert r["error"]["code"] == 303


def test_busy_while_another_personality_pays(firmware, tmp_path):
    fw = start(firmware, tmp_path, {"delays": {"slow_auth_ms": 1500}})
    box = {}
    th = threading.Thread(target=lambda: box.setdefault("a", exchange(fw.address("concert-ip"), odoo(1205))))
    th.start()
    assert fw.wait_for("core start #1", 5) is not None
    link = Link(tcp(fw))
    assert link.call("getStatus")["result"] == {"deviceStatus": "TRANSACTION", "cancelable": False}
    assert link.call("startTransaction", sale())["error"]["code"] == 201
    assert link.call("cancel", {})["error"]["code"] == 201  # not ours to cancel
    th.join(10)
    assert concert_tlv.decode(box["a"])["AE"] == "10"
    assert link.call("startTransaction", sale())["result"]["result"] == "OK"


# ---------------------------------------------------------------- bad input

def test_slow_sender_one_byte_at_a_time(firmware, tmp_path):
    fw = start(firmware, tmp_path)
    link = Link(tcp(fw))
    for b in request("getStatus", rid="slow"):
        link.send(bytes((b,)))
        time.sleep(0.005)
    assert json.loads(link.frame()[2])["id"] == "slow"


def test_truncated_frame_is_dropped_after_the_pause_and_the_next_served(firmware, tmp_path):
    fw = start(firmware, tmp_path, {"timeouts": {"request_ms": 400}})
    link = Link(tcp(fw))
    link.send(request("getStatus", rid="cut")[:20])
    assert link.frame() == (L.ERROR, L.E_MESSAGE, None)
    assert link.call("getStatus", rid="next")["id"] == "next"
    assert fw.wait_for("synqpay cut 127.0.0.1", 2) is not None


def test_huge_length_allocates_nothing_and_the_next_frame_is_served(firmware, tmp_path):
    fw = start(firmware, tmp_path)
    link = Link(tcp(fw))
    link.send(b"\x02\x01" + KEY + b"\xff\xff\xff\xff" + b'{"jsonrpc":"2.0"}' * 2000)
    assert link.frame() == (L.ERROR, L.E_LEN, None)
    assert link.call("getStatus", rid="after")["id"] == "after"


def test_frame_above_max_payload_is_a_length_error(firmware, tmp_path):
    fw = start(firmware, tmp_path, {"synqpay": {"max_payload": 256}})
    link = Link(tcp(fw))
    big = request("getStatus", {"pad": "x" * 300}, rid="big")
    link.send(big)
    assert link.frame() == (L.ERROR, L.E_LEN, None)
    assert link.call("getStatus", rid="ok")["id"] == "ok"


def test_crc_byte_order_setting(firmware, tmp_path):
    f = bytearray(request("getStatus", rid="le"))
    f[-3], f[-2] = f[-2], f[-3]
    fw = start(firmware, tmp_path)
    link = Link(tcp(fw))
    link.send(bytes(f))
    assert link.frame() == (L.ERROR, L.E_CRC, None)
    link.close()
    fw.stop()
    fw = start(firmware, tmp_path, {"synqpay": {"crc": "either"}})
    link = Link(tcp(fw))
    link.send(bytes(f))
    assert json.loads(link.frame()[2])["id"] == "le"


def test_garbage_flood_keeps_memory_bounded(firmware, tmp_path):
    fw = start(firmware, tmp_path, {"log": {"heap": True}})
    link = Link(tcp(fw))
    for _ in range(50):
        link.send(os.urandom(2048).replace(b"\x02", b"\x00"))
    assert link.frame() == (L.ERROR, L.E_MESSAGE, None)  # one error for the whole run
    assert link.call("getStatus", rid="alive")["id"] == "alive"


# ---------------------------------------------------------------- memory

def test_heap_over_many_sales_and_reconnects(firmware, tmp_path, fw_root):
    if fw_root != "mpy":
        pytest.skip("heap figures are for the .mpy build boards run")
    fw = start(firmware, tmp_path, {"log": {"heap": True, "frames": False}})
    heaps = []
    for i in range(120):
        if i % 10 == 0:
            link = Link(tcp(fw)) if i % 20 else Link(fw.address("synqpay-tls"), tls=unverified_context())
        mark = len(fw.lines)
        link.send(request("startTransaction", sale("h%d" % i), rid="%d" % i))
        _, last = link.answer()
        assert json.loads(last[2])["result"]["result"] == "OK"
        j = fw.wait_for("heap=", 5, mark)
        heaps.append(int(fw.lines[j].rsplit("heap=", 1)[1]))
    # a sample catches a link's buffers alive or not (2.5 KB either way), so
    # compare floors: sales 10-19 and 110-119, both on a TCP link
    early, late = min(heaps[10:20]), min(heaps[110:])
    print("synqpay heap floor over sales 10-19 / 110-119: %d / %d" % (early, late))
    assert late - early <= 1024, heaps
