"""``LinkPeer``: the daemon's end of the link, an asyncio session over any byte transport.

Same rules as the board (``firmware/services/link.py``, docs/link.md): reliable messages
carry a 16-bit seq, are kept in a window of ``window`` frames until the board's cumulative
ack covers them and are all sent again (fresh ack, fresh CRC) after ``rto_s`` without
progress; from the board, only the next expected seq is taken (exactly once, in order), a
duplicate is re-acked, a frame beyond a gap dropped; every reliable frame is acked at once.
HELLO opens the session (versions, a fresh nonce); HEARTBEAT both ways every
``hb_period_s``; the state is "DOWN" (no session), "UP" or "LOST" (no valid frame for
``hb_timeout_s``).

Commands return a ``Result`` matched by the request's seq, with a timeout: a timed-out
setpoint may or may not have been applied, and sending it again with the same id is safe
(the board's setpoint path is idempotent). Energy records arrive on ``records`` (an
``asyncio.Queue`` of dicts) and are acknowledged with ``energy_ack(record_no)`` once
stored. ``image`` holds the newest register image (dict; ``image_at``: when it arrived),
``peer_counters`` the board's; ``image_listeners`` are called with every image as it
arrives (a meter that must not miss one while the event loop was busy).

Time: ``clock`` (seconds, monotonic; ``loop.time`` by default), never wall time.
Transports: ``open_serial(device)`` (pyserial, non-blocking, on the event loop's reader)
and ``open_streams(reader, writer)``; or build ``LinkPeer(write)`` and call ``feed(data)``.
Context: host (the daemon's event loop).
"""

import asyncio
import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass

from cobs import cobs as _cobs

from v2g.link.codec import (
    FrameError,
    Splitter,
    config_payload,
    decode_frame,
    encode_body,
    msgs,
    pack,
)
from v2g.link.codec import unpack as unpack_payload


@dataclass
class Result:
    """The board's answer to a command."""

    status: str  # "OK", "REJECTED", "DUPLICATE", "MALFORMED", "UNSUPPORTED", "FAILED"
    detail: str
    request_seq: int
    request_type: int

    @property
    def ok(self):
        return self.status == "OK"


STATUS_NAMES = msgs.STATUS_NAMES + ("FAILED",)

TIMER_MIN_S = 0.005  # the timer task sleeps at least this long between passes
TIMER_MAX_S = 0.25  # and at most this long (nothing due: no session yet)
TIMER_SLACK_S = 0.001  # past a liveness threshold (its tests are strict)


class LinkPeer:
    def __init__(self, write, *, clock=None, window=4, rto_s=0.2, hb_period_s=0.2,
                 hb_timeout_s=1.0, versions=(msgs.VERSION_MIN, msgs.VERSION_MAX),
                 nonce=None, log=None):
        self.write = write
        self.clock = clock or (lambda: asyncio.get_running_loop().time())
        self.window = window
        self.rto_s = rto_s
        self.hb_period_s = hb_period_s
        self.hb_timeout_s = hb_timeout_s
        self.versions = versions
        self.nonce = nonce if nonce is not None else int.from_bytes(os.urandom(4), "little")
        self.log = log or (lambda msg: None)
        self.splitter = Splitter()
        self.counters = dict.fromkeys(msgs.COUNTERS, 0)
        self.peer_counters = {}
        self.image = None
        self.images = 0
        self.image_at = None  # clock() when the newest image arrived
        self.image_listeners = []  # callables(image dict), for every image received
        self.records = asyncio.Queue()
        self.service_rsp = asyncio.Queue()
        self.hello = None
        self.version = 0
        self._hello_event = asyncio.Event()
        self._sent_reliable = asyncio.Event()  # wakes the timer task (its RTO)
        self._space = asyncio.Condition()
        self._order = asyncio.Lock()
        self._task = None
        self._reset()

    def _reset(self):
        self.tx_seq = 1
        self.rx_expected = 1
        self.unacked = deque()  # (seq, body bytearray, sent_at)
        self.results = {}  # request seq -> Future[Result]
        self.last_rx = None
        self.last_hb = None
        self.in_gap = False
        self.lost = False
        self.peer_tx = None
        self.peer_rx_mark = 0

    @property
    def state(self):
        if not self.version:
            return "DOWN"
        return "LOST" if self.lost else "UP"

    # ---- receive ----

    def feed(self, data):
        """Bytes from the board, in any chunking; frames are handled as they complete."""
        for enc in self.splitter.feed(data):
            if enc is None:
                self._drop("malformed", "frame longer than %d bytes" % self.splitter.max_len)
                continue
            try:
                self._frame(decode_frame(enc))
            except FrameError as e:
                self._drop(e.kind, str(e))

    def _drop(self, kind, detail):
        self.counters[kind] += 1
        self.log("link: dropped frame (%s): %s" % (kind, detail))

    def _frame(self, f):
        now = self.clock()
        row = msgs.BY_ID.get(f.msg_id)
        if row is None or row[msgs.DIRECTION] == "h2b":
            raise FrameError("unknown", "unknown message type 0x%02x" % f.msg_id)
        if f.msg_id == msgs.HELLO_ACK:
            self.counters["rx_frames"] += 1
            self._hello_ack(unpack_payload(f.msg_id, f.payload), now)
            return
        if not self.version:
            raise FrameError("malformed", "type 0x%02x before HELLO_ACK" % f.msg_id)
        if f.version != self.version:
            raise FrameError("malformed", "version %d, session speaks %d"
                             % (f.version, self.version))
        self.counters["rx_frames"] += 1
        self.last_rx = now
        self.in_gap = False
        self.lost = False
        self._acked(f.ack)
        if row[msgs.RELIABLE]:
            d = msgs.seq_diff(f.seq, self.rx_expected)
            if d:
                self._drop("duplicates" if d >= msgs.SEQ_HALF else "out_of_order",
                           "seq %d, expected %d" % (f.seq, self.rx_expected))
            else:
                self.rx_expected = msgs.seq_next(self.rx_expected)
                try:
                    self._reliable(f, unpack_payload(f.msg_id, f.payload))
                except FrameError as e:
                    self._drop(e.kind, str(e))
            self._send(msgs.ACK, b"")
            return
        values = unpack_payload(f.msg_id, f.payload)
        if f.msg_id == msgs.REGISTER_IMAGE:
            self.image = values
            self.images += 1
            self.image_at = now
            for fn in self.image_listeners:
                fn(values)
        elif f.msg_id == msgs.HEARTBEAT:
            self._heartbeat(values)

    def _hello_ack(self, v, now):
        if v["nonce"] != self.nonce:
            return  # the answer to someone else's HELLO (or an old one)
        self.hello = v
        if v["status"] == 0 and v["version"]:
            if self.version != v["version"]:
                self._reset()
            self.version = v["version"]
            self.last_rx = now
        self._hello_event.set()

    def _heartbeat(self, v):
        self.peer_counters = v
        if self.peer_tx is not None:
            sent = (v["tx_frames"] - self.peer_tx) & 0xFFFFFFFF
            got = self.counters["rx_frames"] - self.peer_rx_mark
            if sent < 100000:
                self.counters["lost"] += max(0, sent - got)
        self.peer_tx = v["tx_frames"]
        self.peer_rx_mark = self.counters["rx_frames"]

    def _reliable(self, f, v):
        if f.msg_id == msgs.RESULT:
            fut = self.results.pop(v["request_seq"], None)
            status = v["status"]
            res = Result(STATUS_NAMES[status] if status < len(STATUS_NAMES) else str(status),
                         v.get("tail", ""), v["request_seq"], v["request_type"])
            if fut is not None and not fut.done():
                fut.set_result(res)
        elif f.msg_id == msgs.ENERGY_RECORD:
            self.records.put_nowait(v)
        elif f.msg_id == msgs.SERVICE_RSP:
            self.service_rsp.put_nowait(v)

    def _acked(self, ack):
        last_sent = (self.tx_seq - 1) & 0xFFFF
        if msgs.seq_diff(last_sent, ack) >= msgs.SEQ_HALF:
            return
        freed = False
        while self.unacked and msgs.seq_diff(ack, self.unacked[0][0]) < msgs.SEQ_HALF:
            self.unacked.popleft()
            freed = True
        if freed:
            asyncio.ensure_future(self._notify_space())

    async def _notify_space(self):
        async with self._space:
            self._space.notify_all()

    # ---- send ----

    def _send(self, msg_id, payload, version=None):
        """Write one frame; a reliable one is stored in the window (the caller made room)."""
        reliable = msgs.BY_ID[msg_id][msgs.RELIABLE]
        seq = 0
        if reliable:
            seq = self.tx_seq
            self.tx_seq = msgs.seq_next(seq)
        body = bytearray(encode_body(version or self.version, msg_id, seq, 0, payload))
        if reliable:
            self.unacked.append([seq, body, self.clock()])
            self._sent_reliable.set()
        self._emit(body)
        return seq

    def _emit(self, body):
        ack = (self.rx_expected - 1) & 0xFFFF
        struct.pack_into("<H", body, 4, ack)
        n = len(body) - 4
        struct.pack_into("<I", body, n, zlib.crc32(body[:n]))
        self.counters["tx_frames"] += 1
        self.write(_cobs.encode(bytes(body)) + b"\x00")

    async def request(self, msg_id, payload, timeout=5.0):
        """Send one reliable command and wait for its RESULT (``Result``); waits for a
        window slot first. Commands go out (and are applied) in the order of the calls.
        ``asyncio.TimeoutError`` when no answer came in time."""
        if not self.version:
            raise ConnectionError("link: no session (call open() first)")
        async with self._order:  # FIFO: commands go out in the order they were called
            async with self._space:
                await asyncio.wait_for(
                    self._space.wait_for(lambda: len(self.unacked) < self.window), timeout)
            seq = self._send(msg_id, payload)
        if msg_id in (msgs.ENERGY_ACK, msgs.SERVICE_REQ):
            return None
        fut = asyncio.get_running_loop().create_future()
        self.results[seq] = fut
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.results.pop(seq, None)

    async def setpoint(self, setpoint_id, p_w, q_var, timeout=5.0):
        """Power setpoint (W, var; p > 0 charges the EV) with a u32 id."""
        return await self.request(msgs.SETPOINT, pack(msgs.SETPOINT, (setpoint_id, p_w,
                                                                      q_var)), timeout)

    async def config(self, entries, timeout=5.0):
        """Config change ``{pid: held_int}`` (params.TABLE ids and held units)."""
        return await self.request(msgs.CONFIG, config_payload(entries), timeout)

    async def ev_limits(self, max_charge_w, max_discharge_w, soc_min_permille, timeout=5.0):
        return await self.request(msgs.EV_LIMITS, pack(msgs.EV_LIMITS, (
            max_charge_w, max_discharge_w, soc_min_permille)), timeout)

    async def ev_soc(self, soc_pm, timeout=5.0):
        """The EV's state of charge, permille (``msgs.SOC_UNKNOWN``: not known); link
        version 4. The board's journal puts it in its records' start/end SoC."""
        return await self.request(msgs.EV_SOC, pack(msgs.EV_SOC, (soc_pm,)), timeout)

    async def session(self, start, session_id=0, timeout=5.0):
        action = msgs.SESSION_START if start else msgs.SESSION_STOP
        return await self.request(msgs.SESSION, pack(msgs.SESSION, (action, session_id)),
                                  timeout)

    async def energy_ack(self, record_no, timeout=5.0):
        """Tell the board record ``record_no`` is stored durably (it may forget it)."""
        await self.request(msgs.ENERGY_ACK, pack(msgs.ENERGY_ACK, (record_no,)), timeout)

    # ---- session and timers ----

    async def open(self, timeout=5.0, retry_s=0.25):
        """Version handshake: HELLO until the board's HELLO_ACK names our nonce; starts the
        timer task. ``ConnectionError`` when the board refuses every version we speak."""
        self._hello_event.clear()
        self.version = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        payload = pack(msgs.HELLO, (self.versions[0], self.versions[1], self.nonce))
        while not self._hello_event.is_set():
            self._send(msgs.HELLO, payload, version=1)
            left = deadline - loop.time()
            if left <= 0:
                raise asyncio.TimeoutError("link: no HELLO_ACK within %.1f s" % timeout)
            try:
                await asyncio.wait_for(self._hello_event.wait(), min(retry_s, left))
            except asyncio.TimeoutError:
                continue
        if not self.version:
            raise ConnectionError("link: board speaks versions %d..%d, we %d..%d" % (
                self.hello["version_min"], self.hello["version_max"], *self.versions))
        if self._task is None:
            self._task = asyncio.ensure_future(self._timers())
        return self.hello

    def service(self):
        """Timers (called by ``open``'s task when ``next_due``): retransmission, heartbeat,
        liveness."""
        if not self.version:
            return
        now = self.clock()
        if self.unacked and now - self.unacked[0][2] >= self.rto_s:
            for item in self.unacked:
                item[2] = now
                self.counters["retransmissions"] += 1
                self._emit(item[1])
        if self.last_hb is None or now - self.last_hb >= self.hb_period_s:
            self.last_hb = now
            c = self.counters
            vals = [int(now * 1000) & 0xFFFFFFFF] + [c[k] for k in msgs.COUNTERS]
            vals[2] += 1  # tx_frames, this heartbeat included
            self._send(msgs.HEARTBEAT, pack(msgs.HEARTBEAT, [v & 0xFFFFFFFF for v in vals]))
        quiet = now - (self.last_rx or now)
        if quiet > 2 * self.hb_period_s and not self.in_gap:
            self.in_gap = True
            self.counters["hb_gaps"] += 1
        if quiet > self.hb_timeout_s:
            self.lost = True

    def next_due(self):
        """``clock()`` time of the next thing ``service`` has to do: a retransmission, a
        heartbeat, a heartbeat gap or the loss of the peer (None: nothing until a frame is
        sent or received)."""
        if not self.version:
            return None
        due = []
        if self.unacked:
            due.append(self.unacked[0][2] + self.rto_s)
        due.append(self.hb_period_s + (self.last_hb if self.last_hb is not None else 0.0))
        if self.last_rx is not None:
            if not self.in_gap:
                due.append(self.last_rx + 2 * self.hb_period_s + TIMER_SLACK_S)
            if not self.lost:
                due.append(self.last_rx + self.hb_timeout_s + TIMER_SLACK_S)
        return min(due)

    async def _timers(self):
        """Run ``service`` when something is due (``next_due``), or when a reliable frame
        goes out (its retransmission time); at most every TIMER_MIN_S. A 10 ms poll cost a
        daemon ~1 % of a core for nothing: five heartbeats a second are what is due."""
        while True:
            self.service()
            due = self.next_due()
            wait = TIMER_MAX_S if due is None else due - self.clock()
            self._sent_reliable.clear()
            try:
                await asyncio.wait_for(self._sent_reliable.wait(),
                                       min(TIMER_MAX_S, max(TIMER_MIN_S, wait)))
            except asyncio.TimeoutError:
                pass

    async def close(self):
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        for fut in self.results.values():
            if not fut.done():
                fut.cancel()


def open_streams(reader, writer, **kw):
    """A ``LinkPeer`` over asyncio streams; a task feeds it from ``reader``."""
    peer = LinkPeer(writer.write, **kw)

    async def pump():
        while True:
            data = await reader.read(4096)
            if not data:
                break
            peer.feed(data)

    peer.pump_task = asyncio.ensure_future(pump())
    return peer


async def open_serial(device, baudrate=115200, **kw):
    """A ``LinkPeer`` over a serial device (pyserial; a pty such as the simulated board's
    ``link: /dev/pts/M`` works), read through the event loop's reader callback."""
    import serial

    ser = serial.Serial(device, baudrate=baudrate, timeout=0, write_timeout=1)
    loop = asyncio.get_running_loop()
    peer = LinkPeer(ser.write, **kw)

    def readable():
        data = ser.read(ser.in_waiting or 1)
        if data:
            peer.feed(data)

    loop.add_reader(ser.fileno(), readable)
    peer.serial = ser
    return peer
