"""The link session, board side: header, seq/ack, retransmission, heartbeat, handshake.

``Link(handlers, write, ...)`` speaks the protocol of docs/link.md over any byte stream:
``receive(buf, n, now_ms)`` takes bytes from the UART, ``service(now_ms)`` runs the timers
(retransmission, heartbeat, register image, energy records, liveness, loss window), and
every frame goes out through ``write(memoryview)`` (``uart.write``; the sim's pty or
stdout). Time comes in as arguments (ms, monotonic); nothing here reads a clock.
``serve(link, stream, ticks_ms)`` is the asyncio service around it.

Rules (the host peer ``v2g.link`` keeps the same ones):
- reliable types (``link_msgs.MESSAGES``) carry a 16-bit seq; the receiver applies only
  the next expected seq (exactly once, in order), re-acks a duplicate without applying it,
  drops a frame from beyond a gap; the header's ``ack`` is cumulative;
- the sender keeps up to ``window`` unacked frames and after ``rto_ms`` without progress
  sends them all again (go-back-N) with a fresh ack and CRC;
- a reliable command is accepted only when its RESULT can be queued (a free window slot),
  else it is left unacked and the peer sends it again (flow control);
- every reliable frame received is answered at once (a RESULT or an ACK);
- HELLO opens a session (a new nonce resets both sides' seq); before it, only HELLO is
  read; HEARTBEAT both ways every ``hb_period_ms``;
- link state (``state``): DOWN (no session), UP, DEGRADED (frames from the daemon lost
  above ``loss_permille`` over ``loss_window_ms``, estimated from the daemon's own
  tx_frames count in its heartbeats: fault V2G-502 upstream), LOST (no valid frame for
  ``hb_timeout_ms``); changes go to ``handlers.on_link_state(now_ms, state)``;
- a malformed frame (COBS, length, CRC, version, layout) or an unknown type is dropped,
  counted and logged (``handlers.on_log``, at most once a second per kind); never applied.

RAM (fixed, allocated in ``__init__``): rx 495 + tx 492 + tx-encoded 496 + window x 492
(1968 at window 4) = 3.5 KB of buffers; 5152 bytes in all measured (gc.mem_alloc) on
the 64-bit unix runtime at the default window (less on a 32-bit board). Per frame
received: no allocation for the byte layer; the CRC's memoryview slice; command payloads
unpack into a tuple (a few dozen bytes, commands are rare). Per frame sent: one
memoryview slice (and the values tuple of heartbeats; images are packed in place by
``handlers.pack_image``).
Context: services (asyncio task beside the supervisor); never the tick.
"""

import struct

from services import link_frame as lf
from services import link_msgs as lm

# link states
DOWN = 0
UP = 1
DEGRADED = 2
LOST = 3
STATE_NAMES = ("DOWN", "UP", "DEGRADED", "LOST")

# counter indices (lm.COUNTERS order)
RX_FRAMES, TX_FRAMES, CRC_ERRORS, MALFORMED, UNKNOWN, RETRANSMISSIONS, DUPLICATES, \
    OUT_OF_ORDER, LOST_FRAMES, HB_GAPS = range(10)

FAILED = 5  # RESULT status: the handler raised; state unknown


class Handlers:
    """What the link calls; the app overrides what it supports. Commands return a RESULT
    status (``link_msgs.OK`` ...) or ``(status, text)``. All run in the link's task."""

    def on_setpoint(self, now_ms, setpoint_id, p_w, q_var):
        return lm.UNSUPPORTED

    def on_config(self, now_ms, cfg):
        """``cfg``: {name: number in the parameter's unit}. Returns ``(ok, error_text)``;
        all or nothing."""
        return False, "config over the link not supported"

    def on_ev_limits(self, now_ms, max_charge_w, max_discharge_w, soc_min_permille):
        return lm.UNSUPPORTED

    def on_session(self, now_ms, action, session_id):
        return lm.UNSUPPORTED

    def on_ev_soc(self, now_ms, soc_pm):
        return lm.UNSUPPORTED

    def on_service(self, now_ms, group, command, data):
        """Returns ``(status, bytes)``; ``data`` is a memoryview valid during the call."""
        return lm.UNSUPPORTED, b""

    def register_image(self, now_ms):
        """A tuple in ``link_msgs.REGISTER_FIELDS`` order, or None (nothing to send)."""
        return None

    def pack_image(self, buf, offset, now_ms):
        """Write the register image's payload into ``buf`` at ``offset``; False when there
        is nothing to send. This default packs ``register_image``'s tuple; the firmware's
        wiring packs its values straight in (no tuple, no star-call)."""
        vals = self.register_image(now_ms)
        if vals is None:
            return False
        struct.pack_into(lm.BY_ID[lm.REGISTER_IMAGE][lm.FMT], buf, offset, *vals)
        return True

    def energy_record(self, min_no):
        """The oldest unacknowledged record with record_no >= min_no, as a tuple in
        ENERGY_RECORD field order, or None."""
        return None

    def on_energy_ack(self, now_ms, record_no):
        pass

    def on_link_state(self, now_ms, state):
        pass

    def on_log(self, now_ms, kind, detail):
        pass


def _u16(buf, i):
    return buf[i] | (buf[i + 1] << 8)


class Link:
    def __init__(self, handlers, write, name="v2g-fw", hb_period_ms=200, hb_timeout_ms=1000,
                 rto_ms=200, window=4, image_period_ms=100, loss_window_ms=5000,
                 loss_permille=50, loss_min_frames=20):
        self.h = handlers
        self.write = write
        self.name = name
        self.hb_period_ms = hb_period_ms
        self.hb_timeout_ms = hb_timeout_ms
        self.rto_ms = rto_ms
        self.window = window
        self.image_period_ms = image_period_ms
        self.loss_window_ms = loss_window_ms
        self.loss_permille = loss_permille
        self.loss_min_frames = loss_min_frames
        self.rx_cap = lf.max_encoded(lm.MAX_BODY)
        self.rx = bytearray(self.rx_cap)
        self.rx_n = 0
        self.tx = bytearray(lm.MAX_BODY)
        self.txenc = bytearray(lf.max_encoded(lm.MAX_BODY) + 1)
        self.txenc_mv = memoryview(self.txenc)
        self.slots = [bytearray(lm.MAX_BODY) for _ in range(window)]
        self.slot_len = [0] * window
        self.slot_seq = [0] * window
        self.slot_sent_ms = [0] * window
        self.counters = [0] * len(lm.COUNTERS)
        self.version = 0
        self.nonce = None
        self.state = DOWN
        self.degraded = False
        self.lost = False
        self.last_rx_ms = 0
        self.in_gap = False
        self.log_ms = {}
        self.cfg_rows = None
        self._reset(0)

    # ---- session state ----

    def _reset(self, now_ms):
        self.tx_seq = 1  # next reliable seq to send
        self.rx_expected = 1  # next reliable seq to accept
        self.head = 0
        self.count = 0
        self.image_ms = now_ms - self.image_period_ms
        self.hb_ms = now_ms - self.hb_period_ms
        self.rec_next = 0
        self.peer_tx = None  # peer's tx_frames at its last heartbeat, and our rx then
        self.peer_rx_mark = 0
        self.win_ms = now_ms
        self.win_sent = 0
        self.win_lost = 0

    def _set_state(self, now_ms):
        if self.version == 0:
            s = DOWN
        elif self.lost:
            s = LOST
        elif self.degraded:
            s = DEGRADED
        else:
            s = UP
        if s != self.state:
            self.state = s
            self.h.on_link_state(now_ms, s)

    def _log(self, now_ms, kind, detail):
        last = self.log_ms.get(kind)
        if last is None or now_ms - last >= 1000:
            self.log_ms[kind] = now_ms
            self.h.on_log(now_ms, kind, "%s (%s=%d)" % (detail, kind, self._count_of(kind)))

    def _count_of(self, kind):
        i = lm.COUNTERS.index(kind) if kind in lm.COUNTERS else -1
        return self.counters[i] if i >= 0 else 0

    def _drop(self, now_ms, idx, detail):
        self.counters[idx] += 1
        self._log(now_ms, lm.COUNTERS[idx], detail)

    # ---- receive ----

    def receive(self, buf, n, now_ms):
        """Bytes ``buf[0:n]`` from the stream; frames are handled as their delimiter
        arrives. Never raises on any input."""
        i = 0
        while i < n:
            stop = lf.gather(buf, i, n, self.rx, self.rx_n, self.rx_cap)
            self.rx_n += stop - i
            if stop >= n:
                return
            m = self.rx_n
            self.rx_n = 0
            i = stop + 1
            if m > self.rx_cap:
                self._drop(now_ms, MALFORMED, "frame longer than %d bytes" % self.rx_cap)
            elif m:
                try:
                    self._frame(m, now_ms)
                except Exception as e:  # a handler bug must not stop the link
                    self._drop(now_ms, MALFORMED, "frame handling failed: %r" % e)

    def _frame(self, m, now_ms):
        rx = self.rx
        k = lf.cobs_decode(rx, m, rx)
        if k < lm.HEADER_SIZE + lm.CRC_SIZE:
            self._drop(now_ms, MALFORMED, "COBS error or short frame (%d)" % k)
            return
        if not lf.crc_ok(rx, k):
            self._drop(now_ms, CRC_ERRORS, "CRC mismatch")
            return
        ver = rx[0]
        typ = rx[1]
        seq = _u16(rx, 2)
        ack = _u16(rx, 4)
        length = _u16(rx, 6)
        if length != k - lm.HEADER_SIZE - lm.CRC_SIZE:
            self._drop(now_ms, MALFORMED, "length %d in a %d-byte frame" % (length, k))
            return
        if typ == lm.HELLO:
            if ver == 1 and lm.payload_ok(typ, length):
                self.counters[RX_FRAMES] += 1
                self._hello(now_ms)
            else:
                self._drop(now_ms, MALFORMED, "bad HELLO")
            return
        if self.version == 0:
            self._drop(now_ms, MALFORMED, "type 0x%02x before HELLO" % typ)
            return
        if ver != self.version:
            self._drop(now_ms, MALFORMED, "version %d, session speaks %d" % (ver, self.version))
            return
        row = lm.BY_ID.get(typ)
        if row is None or row[lm.DIRECTION] == "b2h":
            self._drop(now_ms, UNKNOWN, "unknown message type 0x%02x" % typ)
            return
        self.counters[RX_FRAMES] += 1
        self.last_rx_ms = now_ms
        self.in_gap = False
        if self.lost:
            self.lost = False
            self._set_state(now_ms)
        self._acked(ack)
        if row[lm.RELIABLE]:
            self._reliable(typ, seq, length, now_ms)
        elif not lm.payload_ok(typ, length):
            self._drop(now_ms, MALFORMED, "type 0x%02x with %d payload bytes" % (typ, length))
        elif typ == lm.HEARTBEAT:
            self._heartbeat(now_ms)

    def _acked(self, ack):
        """Release window slots up to ``ack`` (cumulative); an ack beyond what was sent
        is ignored."""
        last_sent = (self.tx_seq - 1) & 0xFFFF
        if lm.seq_diff(last_sent, ack) >= lm.SEQ_HALF:
            return
        while self.count and lm.seq_diff(ack, self.slot_seq[self.head]) < lm.SEQ_HALF:
            self.head = (self.head + 1) % self.window
            self.count -= 1

    def _reliable(self, typ, seq, length, now_ms):
        d = lm.seq_diff(seq, self.rx_expected)
        if d:
            self._drop(now_ms, DUPLICATES if d >= lm.SEQ_HALF else OUT_OF_ORDER,
                       "seq %d, expected %d" % (seq, self.rx_expected))
            self._send_ack(now_ms)
            return
        if typ != lm.ENERGY_ACK and self.count >= self.window:
            return  # no room for the answer: unacked, so the peer sends it again
        self.rx_expected = lm.seq_next(self.rx_expected)
        if not lm.payload_ok(typ, length):
            self._drop(now_ms, MALFORMED, "type 0x%02x with %d payload bytes" % (typ, length))
            self._result(now_ms, seq, typ, lm.MALFORMED, "payload does not match the table")
            return
        answered = False
        try:
            answered = self._command(typ, seq, length, now_ms)
        except Exception as e:
            self._result(now_ms, seq, typ, FAILED, "handler failed: %r" % e)
            answered = True
        if not answered:
            self._send_ack(now_ms)

    def _command(self, typ, seq, length, now_ms):
        """Apply one in-order reliable message; True when a reliable answer went out."""
        rx = self.rx
        h = self.h
        p = lm.HEADER_SIZE
        if typ == lm.SETPOINT:
            sp_id, p_w, q_var = struct.unpack_from("<Iii", rx, p)
            r = h.on_setpoint(now_ms, sp_id, p_w, q_var)
        elif typ == lm.CONFIG:
            r = self._config(now_ms, length)
        elif typ == lm.EV_LIMITS:
            c, d, s = struct.unpack_from("<iiH", rx, p)
            r = h.on_ev_limits(now_ms, c, d, s)
        elif typ == lm.SESSION:
            action, sid = struct.unpack_from("<BI", rx, p)
            if action not in (lm.SESSION_START, lm.SESSION_STOP):
                r = (lm.REJECTED, "session action %d not 0 (stop) or 1 (start)" % action)
            else:
                r = h.on_session(now_ms, action, sid)
        elif typ == lm.EV_SOC:
            r = h.on_ev_soc(now_ms, struct.unpack_from("<H", rx, p)[0])
        elif typ == lm.ENERGY_ACK:
            h.on_energy_ack(now_ms, struct.unpack_from("<I", rx, p)[0])
            return False
        elif typ == lm.SERVICE_REQ:
            status, data = h.on_service(now_ms, rx[p], rx[p + 1],
                                        memoryview(rx)[p + 2:p + length])
            self._send(now_ms, lm.SERVICE_RSP, (rx[p], rx[p + 1], status), data)
            return True
        else:
            r = lm.UNSUPPORTED
        if isinstance(r, tuple):
            status, text = r
        else:
            status, text = r, ""
        self._result(now_ms, seq, typ, status, text)
        return True

    def _config(self, now_ms, length):
        p = lm.HEADER_SIZE
        count = self.rx[p]
        if 1 + 6 * count != length:
            return lm.MALFORMED, "count %d does not match %d bytes" % (count, length)
        import params  # here: only a CONFIG needs the table (cached by the import system)

        if self.cfg_rows is None:
            self.cfg_rows = {r[params.PID]: r for r in params.TABLE}
        cfg = {}
        for j in range(count):
            pid, held = struct.unpack_from("<Hi", self.rx, p + 1 + 6 * j)
            r = self.cfg_rows.get(pid)
            if r is None:
                return lm.REJECTED, "unknown parameter id %d" % pid
            if r[params.NAME] in cfg:
                return lm.REJECTED, "parameter id %d given twice" % pid
            cfg[r[params.NAME]] = params.to_number(r, held)
        ok, err = self.h.on_config(now_ms, cfg)
        return (lm.OK, "") if ok else (lm.REJECTED, err or "rejected")

    def _hello(self, now_ms):
        vmin, vmax, nonce = struct.unpack_from("<BBI", self.rx, lm.HEADER_SIZE)
        v = min(vmax, lm.VERSION_MAX)
        if v < max(vmin, lm.VERSION_MIN):
            v = 0
        if v and (nonce != self.nonce or self.version != v):
            self._reset(now_ms)
            self.version = v
            self.nonce = nonce
            self.degraded = False
        if v:
            self.last_rx_ms = now_ms
            self.lost = False
        self._send(now_ms, lm.HELLO_ACK, (v, 0 if v else 1, lm.VERSION_MIN, lm.VERSION_MAX,
                                         nonce, lm.MAX_PAYLOAD), self.name, hello=True)
        self._set_state(now_ms)

    def _heartbeat(self, now_ms):
        peer_tx = struct.unpack_from("<I", self.rx, lm.HEADER_SIZE + 8)[0]  # tx_frames
        rx = self.counters[RX_FRAMES]
        if self.peer_tx is not None:
            sent = (peer_tx - self.peer_tx) & 0xFFFFFFFF
            got = rx - self.peer_rx_mark
            lost = sent - got if sent > got else 0
            if sent < 100000:  # a restarted peer's counter: not a loss figure
                self.win_sent += sent
                self.win_lost += lost
                self.counters[LOST_FRAMES] += lost
        self.peer_tx = peer_tx
        self.peer_rx_mark = rx

    # ---- send ----

    def _send_ack(self, now_ms):
        self._send(now_ms, lm.ACK, None)

    def _result(self, now_ms, seq, typ, status, text):
        self._send(now_ms, lm.RESULT, (seq, typ, status), text)

    def free_slots(self):
        return self.window - self.count

    def _send(self, now_ms, typ, values, tail=None, hello=False):
        """Build, store (reliable types) and write one frame; False when the window is
        full (a reliable frame) or the payload does not fit."""
        row = lm.BY_ID[typ]
        reliable = row[lm.RELIABLE]
        if reliable and self.count >= self.window:
            return False
        tx = self.tx
        p = lm.HEADER_SIZE
        if values:
            struct.pack_into(row[lm.FMT], tx, p, *values)
        n = lm.FIXED_SIZE[typ]
        if tail:
            if isinstance(tail, str):
                tail = tail.encode()
            k = len(tail)
            if k > lm.MAX_PAYLOAD - n:
                k = lm.MAX_PAYLOAD - n
            tx[p + n:p + n + k] = tail[:k]
            n += k
        seq = 0
        if reliable:
            seq = self.tx_seq
            self.tx_seq = lm.seq_next(seq)
        tx[0] = 1 if hello else self.version
        tx[1] = typ
        tx[2] = seq & 0xFF
        tx[3] = seq >> 8
        tx[6] = n & 0xFF
        tx[7] = n >> 8
        body = p + n + lm.CRC_SIZE
        if reliable:
            i = (self.head + self.count) % self.window
            lf.copy(tx, self.slots[i], body)
            self.slot_len[i] = body
            self.slot_seq[i] = seq
            self.slot_sent_ms[i] = now_ms
            self.count += 1
        self._emit(tx, body)
        return True

    def _emit(self, body_buf, body):
        """Stamp the current ack and the CRC on ``body_buf[0:body]``, COBS it, write it."""
        a = (self.rx_expected - 1) & 0xFFFF
        body_buf[4] = a & 0xFF
        body_buf[5] = a >> 8
        lf.put_crc(body_buf, body - lm.CRC_SIZE)
        k = lf.cobs_encode(body_buf, body, self.txenc)
        self.txenc[k] = 0
        self.counters[TX_FRAMES] += 1
        self.write(self.txenc_mv[:k + 1])

    def send(self, now_ms, typ, values, tail=None):
        """Send one message of the table (the app's own reliable messages, e.g. energy
        records pushed at once); False when the window is full."""
        if self.version == 0:
            return False
        return self._send(now_ms, typ, values, tail)

    # ---- timers ----

    def service(self, now_ms):
        """Timers, every supervisor period or faster: retransmission, heartbeat, image,
        energy records, liveness and the loss window. Never raises on link state."""
        if self.version:
            if self.count and now_ms - self.slot_sent_ms[self.head] >= self.rto_ms:
                for j in range(self.count):
                    i = (self.head + j) % self.window
                    self.slot_sent_ms[i] = now_ms
                    self.counters[RETRANSMISSIONS] += 1
                    self._emit(self.slots[i], self.slot_len[i])
            if now_ms - self.hb_ms >= self.hb_period_ms:
                self.hb_ms = now_ms
                c = self.counters
                self._send(now_ms, lm.HEARTBEAT, (now_ms & 0xFFFFFFFF, c[0], c[1] + 1, c[2],
                                                  c[3], c[4], c[5], c[6], c[7], c[8], c[9]))
            if now_ms - self.image_ms >= self.image_period_ms:
                self.image_ms = now_ms
                # the handler packs the payload into the transmit buffer itself
                if self.h.pack_image(self.tx, lm.HEADER_SIZE, now_ms):
                    self._send(now_ms, lm.REGISTER_IMAGE, None)
            while self.count < self.window // 2:  # the other half stays free for RESULTs
                rec = self.h.energy_record(self.rec_next)
                if rec is None:
                    break
                self._send(now_ms, lm.ENERGY_RECORD, rec)
                self.rec_next = rec[0] + 1
            self._liveness(now_ms)
            self._loss_window(now_ms)
        elif self.state != DOWN:
            self._set_state(now_ms)

    def _liveness(self, now_ms):
        quiet = now_ms - self.last_rx_ms
        if quiet > 2 * self.hb_period_ms and not self.in_gap:
            self.in_gap = True
            self.counters[HB_GAPS] += 1
        if quiet > self.hb_timeout_ms and not self.lost:
            self.lost = True
            self._log(now_ms, "hb_gaps", "no frame from the daemon for %d ms" % quiet)
            self._set_state(now_ms)

    def _loss_window(self, now_ms):
        if now_ms - self.win_ms < self.loss_window_ms:
            return
        sent, lost = self.win_sent, self.win_lost
        self.win_ms = now_ms
        self.win_sent = 0
        self.win_lost = 0
        if sent < self.loss_min_frames:
            return  # too few frames to judge (a lost link is LOST's business)
        bad = lost * 1000 > self.loss_permille * sent
        if bad != self.degraded:
            self.degraded = bad
            if bad:
                self._log(now_ms, "lost", "%d of %d frames from the daemon lost" % (lost, sent))
            self._set_state(now_ms)

    def counters_dict(self):
        return {name: self.counters[i] for i, name in enumerate(lm.COUNTERS)}


async def serve(link, stream, ticks_ms, period_ms=10, chunk=128):
    """Run ``link`` over ``stream`` until the stream ends: one task reads (``readinto``
    where the stream has it: MicroPython's ``asyncio.StreamReader`` over a UART or stdin;
    else ``read``), this one runs ``link.service`` every ``period_ms``.
    ``ticks_ms()`` is the clock (ms, monotonic). Allocates the read buffer once."""
    import asyncio

    buf = bytearray(chunk)
    done = [False]

    async def reader():
        try:
            while True:
                if hasattr(stream, "readinto"):
                    n = await stream.readinto(buf)
                    data = buf
                else:
                    data = await stream.read(chunk)
                    n = len(data)
                if not n:
                    break
                link.receive(data, n, ticks_ms())
        finally:
            done[0] = True

    sleep_ms = getattr(asyncio, "sleep_ms", None)
    task = asyncio.create_task(reader())
    while not done[0]:
        link.service(ticks_ms())
        if sleep_ms:
            await sleep_ms(period_ms)
        else:
            await asyncio.sleep(period_ms / 1000)
    link.service(ticks_ms())
    return task
