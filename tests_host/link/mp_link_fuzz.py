"""Fuzz the board's link receive path: N mutated frames into ``services.link.Link``.

Runs on the MicroPython unix runtime and under CPython (shim) with the same xorshift32
generator, so both see the same bytes and must end with the same counters. Frames are
built by the board's own encoder and then mutated: bit flips, truncation, inserted and
deleted bytes, random garbage, delimiters dropped or doubled, and re-CRC'd frames (valid
CRC) with a wrong length field, version, unknown type or payload size, and every message
type with random payload bytes.
Prints one line: ``fuzz N escaped=E handler_errors=H applied=A <counters>`` and, after a
good HELLO and SETPOINT, ``after applied=...``. Usage: mp_link_fuzz.py N SEED
"""

import struct
import sys

from services import link
from services import link_frame as lf
from services import link_msgs as lm

_state = [1]


def rnd(n):
    """0 .. n-1 from xorshift32 (identical on every runtime)."""
    x = _state[0]
    x ^= (x << 13) & 0xFFFFFFFF
    x ^= x >> 17
    x ^= (x << 5) & 0xFFFFFFFF
    _state[0] = x
    return x % n


class H(link.Handlers):
    def __init__(self):
        self.applied = 0
        self.errors = 0

    def on_setpoint(self, now_ms, *a):
        self.applied += 1
        return lm.OK

    def on_config(self, now_ms, cfg):
        self.applied += 1
        return True, ""

    def on_ev_limits(self, now_ms, *a):
        self.applied += 1
        return lm.OK

    def on_session(self, now_ms, *a):
        self.applied += 1
        return lm.OK

    def on_log(self, now_ms, kind, detail):
        if detail.startswith("frame handling failed"):
            self.errors += 1


BODY = bytearray(lm.MAX_BODY + 64)
ENC = bytearray(lf.max_encoded(len(BODY)) + 8)
IDS = [row[lm.ID] for row in lm.MESSAGES]


def body(typ, seq, ack, n, version=lm.VERSION, length=None):
    """A body with random payload bytes into BODY; returns its length (CRC included)."""
    for i in range(n):
        BODY[8 + i] = rnd(256)
    BODY[0] = version
    BODY[1] = typ
    struct.pack_into("<HHH", BODY, 2, seq, ack, n if length is None else length)
    return lf.put_crc(BODY, 8 + n)


def frame():
    """One mutated frame (bytes, delimiters as the mutation leaves them)."""
    r = rnd(16)
    typ = IDS[rnd(len(IDS))]
    n = lm.FIXED_SIZE[typ] if rnd(2) else rnd(40)
    if r == 0:
        typ = rnd(256)
    if r == 1:
        k = body(typ, rnd(65536), rnd(65536), n, length=rnd(600))
    elif r == 2:
        k = body(typ, rnd(65536), rnd(65536), n, version=rnd(4))
    else:
        k = body(typ, rnd(8), rnd(8), n)
    m = lf.cobs_encode(BODY, k, ENC)
    out = bytearray(ENC[:m])
    out.append(0)
    if r >= 8:
        for _ in range(1 + rnd(4)):
            i = rnd(len(out))
            out[i] ^= 1 << rnd(8)
    if r == 9 and len(out) > 2:
        out = out[:rnd(len(out))]
    if r == 10:
        i = rnd(len(out))
        out = out[:i] + bytearray((rnd(256),)) + out[i:]
    if r == 11 and len(out) > 2:
        i = rnd(len(out) - 1)
        out = out[:i] + out[i + 1:]
    if r == 12:
        out = bytearray(rnd(256) for _ in range(rnd(700)))
    if r == 13:
        out = out[:-1]  # no delimiter: merges with the next frame
    if r == 14:
        out = bytearray(b"\x00") + out + b"\x00"
    return out


def main():
    n = int(sys.argv[1])
    _state[0] = int(sys.argv[2]) or 1
    h = H()
    sent = []
    lk = link.Link(h, lambda mv: sent.append(len(mv)))
    now = 0
    escaped = 0
    for i in range(n):
        if i % 50 == 0:  # keep a session open most of the time, sometimes a new one
            body(lm.HELLO, 0, 0, 6, version=1)  # HELLO frames: always version 1
            struct.pack_into("<BBI", BODY, 8, lm.VERSION, lm.VERSION, rnd(3))
            k = lf.put_crc(BODY, 14)
            m = lf.cobs_encode(BODY, k, ENC)
            ENC[m] = 0
            lk.receive(ENC, m + 1, now)
        f = frame()
        now += 3
        try:
            lk.receive(f, len(f), now)
            if i % 7 == 0:
                lk.service(now)
        except Exception as e:  # must never happen
            escaped += 1
            sys.stderr.write("escaped: %r\n" % (e,))
        del sent[:]
    c = lk.counters
    print("fuzz %d escaped=%d handler_errors=%d applied=%d %s" % (
        n, escaped, h.errors, h.applied, " ".join(str(x) for x in c)))
    # the link still works: a fresh session, one setpoint, applied once
    lk.receive(b"\x00", 1, now)
    before = h.applied
    struct.pack_into("<BBI", BODY, 8, lm.VERSION, lm.VERSION, 999)
    BODY[0], BODY[1] = 1, lm.HELLO
    struct.pack_into("<HHH", BODY, 2, 0, 0, 6)
    k = lf.put_crc(BODY, 14)
    m = lf.cobs_encode(BODY, k, ENC)
    ENC[m] = 0
    lk.receive(ENC, m + 1, now)
    BODY[0], BODY[1] = lm.VERSION, lm.SETPOINT
    struct.pack_into("<HHH", BODY, 2, 1, 0, 12)
    struct.pack_into("<Iii", BODY, 8, 5, 100, 0)
    k = lf.put_crc(BODY, 20)
    m = lf.cobs_encode(BODY, k, ENC)
    ENC[m] = 0
    lk.receive(ENC, m + 1, now)
    lk.receive(ENC, m + 1, now)
    print("after applied=%d state=%d" % (h.applied - before, lk.state))


main()
