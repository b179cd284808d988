"""Energy journal: the board's billing records on flash, kept until the daemon has them.

Records (one frame each, CRC-32 like an event-log record; ``FMT``)::

    magic 0xE8 | version 1 | u16 n=38                   header (as eventlog's)
    u32 seq | u32 seq_last | u8 kind | u8 flags          payload, little-endian
    u32 session | u32 t_start | u32 t_end                UTC s (uptime s + clock_unsynced)
    u32 import_mwh | u32 export_mwh                      energy over the interval, mWh
    u16 soc_start_pm | u16 soc_end_pm                    0xFFFF = unknown
    u32 acked                                            highest seq the daemon had stored
    u32 crc32(header + payload)                          when this record was written

``kind``: 0 interval, 1 session_start, 2 session_end. ``flags`` (as ENERGY_RECORD, link
version 3): bit 0 power_cut (the board came up without a clean close: the open
interval before it was lost; on the first record after that boot, whatever its kind:
a session end the boot closes says it), 1 wdt_reset (likewise), 2 merged, 3
clock_unsynced, 4 meter_fault; bit 7 is the journal's own "closed cleanly" mark (never
sent). ``seq`` grows by 1 per record across
reboots and watchdog resets (recovered from the ring at boot); a merged record covers
``seq .. seq_last``.

Storage: THE SAME ring as the event log (``eventlog.Log`` with this module's frame format:
segment files ``NNNNNNNN.enj`` in ``energy/``, an append is committed at its flush, a torn
tail is never appended behind, recovery finds the last good record). A record is flushed
when it is written (one interval record every ``interval_s``, default 60 s, plus session
start/end). The ring is fixed: ``segments`` x ``records_per_segment`` (4 x 32 by default:
128 records, 46 bytes each, 5.9 KB of data; 4-5 LittleFS blocks). When the ring is full
and its oldest segment still holds records the daemon has not acknowledged, the two oldest
segments are compacted into one instead of dropped (``_compact``): acknowledged records
go, consecutive interval records of one session that were never sent merge (energy
summed, ``seq .. seq_last`` kept, flag merged) until they fit; session start/end records
are never dropped or merged. The compacted segment is written to ``compact.tmp``, then
renamed over the oldest segment (atomic on LittleFS), then the second one is removed: a
power cut between the two leaves records covered twice, which every reader skips (a frame
whose seq a ranged record already covers: ``eventlog.frames``). A record that may have
been sent (seq <= the highest sent, or any record from before this boot) is never merged,
so the daemon never sees the same seq with other content.

Power cuts: the open interval (in RAM) is lost at a cut; everything flushed stays, read
back whole, contiguous, never twice (``tests_host/firmware/test_energy_journal.py``, the
sweep of ``host_tools/v2g/build/mp/journal_powercut.py``).

Boards whose flash writes stall the tick (``board.json`` ``flash_stalls_tick``: rp2 runs
a flash program or erase with interrupts off, for milliseconds up to a sector erase's
tens or hundreds; the gate PWM meanwhile keeps its last duties against a moving grid
voltage, which the current loop cannot correct): ``step(..., hold=True)`` while the
converter is energized. Held, records are closed and queued in RAM but not written, not
sent (the link reads flushed records only, so a record the daemon has seen always has its
seq on flash and a reboot never reuses it), and when the queue holds ``HOLD_QUEUE``
records the open interval simply runs on (energy kept, fewer records). The first period
after the hold ends writes them all. The cost of that choice: a power cut while
energized on such a board loses the queued intervals as well as the open one (at most
``HOLD_QUEUE`` x ``interval_s`` of records plus the open interval) where a board without
the stall loses only the open one. A journal on a medium whose writes do not stall the
tick (an SPI FRAM or a second flash chip on its own bus) removes the trade-off; see
docs/billing.md.

The link (``link_service.Wiring``) sends the oldest unacknowledged record first, in order
(``next_record``) and calls ``ack(seq)`` on ENERGY_ACK; a new link session (HELLO) starts
again from the oldest unacknowledged record, and so does a reboot.

RAM: the ``Log`` (~600 bytes with its lists), this object's ints and a <= 4-entry in-flight
dict: ~1.2 KB measured on the 64-bit unix runtime (``stats()``; less on 32 bits), plus the
38+8-byte frame built per record. Flash: ``segments * records_per_segment * 46`` bytes of
data. CPU: nothing per tick; per supervisor period a compare or two; a flash write per
record. Context: supervisor (``App.supervise_once``) and the link task; never the tick.
"""

import struct

import eventlog

HOLD_QUEUE = 14  # records queued in RAM while held (the ring's queue holds 16)

MAGIC = 0xE8
VERSION = 1
PAYLOAD_FMT = "<IIBBIIIIIHHI"
PAYLOAD = struct.calcsize(PAYLOAD_FMT)  # 38
RECORD = eventlog.HEADER + PAYLOAD + 4  # 46
SUFFIX = ".enj"
FMT = (MAGIC, VERSION, PAYLOAD, PAYLOAD, SUFFIX, True)

INTERVAL = 0
SESSION_START = 1
SESSION_END = 2
F_POWER_CUT = 1
F_WDT_RESET = 2
F_MERGED = 4
F_CLOCK_UNSYNCED = 8
F_METER_FAULT = 16
F_CLEAN = 0x80  # internal: written by close(); stripped before sending
SOC_UNKNOWN = 0xFFFF

# record tuple fields
SEQ, SEQ_LAST, KIND, FLAGS, SESSION, T_START, T_END, IMPORT, EXPORT, SOC_START, SOC_END, \
    ACKED = range(12)

TMP = "compact.tmp"


def encode(rec):
    """A record tuple -> its frame (bytearray)."""
    buf = bytearray(RECORD)
    struct.pack_into("<BBH", buf, 0, MAGIC, VERSION, PAYLOAD)
    struct.pack_into(PAYLOAD_FMT, buf, eventlog.HEADER, *rec)
    n = eventlog.HEADER + PAYLOAD
    struct.pack_into("<I", buf, n, eventlog.crc32(memoryview(buf)[:n]))
    return buf


def decode(frame):
    """A frame -> the record tuple; ValueError when it is not one good record."""
    n = eventlog.HEADER + PAYLOAD
    if len(frame) != RECORD or frame[0] != MAGIC or frame[1] != VERSION or \
            (frame[2] | frame[3] << 8) != PAYLOAD:
        raise ValueError("not an energy record")
    if eventlog.crc32(memoryview(frame)[:n]) != struct.unpack_from("<I", frame, n)[0]:
        raise ValueError("bad energy record CRC")
    return struct.unpack_from(PAYLOAD_FMT, frame, eventlog.HEADER)


def records(root, since_seq=0):
    """The good records on flash with seq > since_seq, oldest first (read-only)."""
    for _, fr in eventlog.frames(root, since_seq, FMT):
        yield decode(fr)


class _Ring(eventlog.Log):
    """The event log's ring with this module's frames; full: compact, not drop."""

    def __init__(self, owner, root, segments, records_per_segment):
        self.owner = owner
        super().__init__(root, segments, records_per_segment, flush_ms=0, max_pending=16,
                         fmt=FMT)

    def _make_room(self):
        return self.owner._compact()


class EnergyJournal:
    def __init__(self, root="energy", segments=4, records_per_segment=32, interval_s=60,
                 reset_cause=None, clock=None, journal=None):
        if segments < 3:
            raise ValueError("the energy journal needs segments >= 3")
        self.interval_ms = interval_s * 1000
        self.clock = clock  # t_ms -> UTC s or None (eventlog.Log.utc_s)
        self.events = journal
        self.ring = _Ring(self, root, segments, records_per_segment)
        self.root = self.ring.root
        self.acked = 0
        self.session = 0
        clean = True
        last = None
        for rec in records(self.root):
            last = rec
            if rec[ACKED] > self.acked:
                self.acked = rec[ACKED]
            if rec[SESSION] > self.session:
                self.session = rec[SESSION]
        if last is not None:
            clean = bool(last[FLAGS] & F_CLEAN)
        self.in_session = last is not None and last[KIND] != SESSION_END and last[SESSION] > 0
        if not self.in_session:
            self.session_open = 0
        else:
            self.session_open = last[SESSION]
        # anything on flash before this boot may have been sent: never merged
        self.sent = self.ring.last_seq
        self.inflight = {}
        self.boot_flags = 0
        if not clean:
            self.boot_flags |= F_POWER_CUT
        if reset_cause == "wdt":
            self.boot_flags |= F_WDT_RESET
        self.t0_ms = None  # the open interval: start (caller's ms), meter totals then
        self.imp0 = self.exp0 = 0
        self.soc0 = SOC_UNKNOWN
        self.soc = SOC_UNKNOWN
        self.flags = self.boot_flags
        self.compactions = 0
        self.merged = 0
        self.hold = False  # step(hold=True): nothing written or sent while energized

    # ---- the open interval ----

    def set_soc(self, soc_pm):
        """The EV's state of charge, permille (None: unknown)."""
        self.soc = SOC_UNKNOWN if soc_pm is None else max(0, min(1000, int(soc_pm)))

    def _utc(self, t_ms):
        u = self.clock(t_ms) if self.clock is not None else None
        if u is None:
            return (t_ms // 1000) & 0xFFFFFFFF, F_CLOCK_UNSYNCED
        return u & 0xFFFFFFFF, 0

    def step(self, now_ms, meter, hold=False):
        """Each supervisor period: close the interval when it is due (a record).
        ``hold``: the converter is energized on a board whose flash writes stall the
        tick: queue records in RAM, write nothing (module docstring)."""
        self.hold = hold
        imp, exp = meter.totals_mwh()
        if self.t0_ms is None:
            self._open(now_ms, imp, exp)
            return
        if ((now_ms - self.t0_ms) & 0x3FFFFFFF) >= self.interval_ms and not (
                hold and self.ring.pending() >= HOLD_QUEUE):
            self._close_interval(now_ms, imp, exp, 0)
        self.ring.service(now_ms, hold=hold, strict=True)  # commits, retries a failed flush

    def _open(self, now_ms, imp, exp):
        self.t0_ms = now_ms
        self.imp0, self.exp0 = imp, exp
        self.soc0 = self.soc

    def _close_interval(self, now_ms, imp, exp, extra):
        t0, f0 = self._utc(self.t0_ms)
        t1, f1 = self._utc(now_ms)
        if t1 < t0:
            t1 = t0
        self._write(INTERVAL, t0, t1, imp - self.imp0, exp - self.exp0,
                    self.flags | f0 | f1 | extra, self.soc0, self.soc)
        self.flags = 0
        self._open(now_ms, imp, exp)

    def _write(self, kind, t0, t1, imp, exp, flags, soc0, soc1):
        seq = self.ring.last_seq + 1
        rec = (seq, seq, kind, flags, self.session_open, t0, t1, imp, exp, soc0, soc1,
               self.acked)
        self.ring.append_frame(encode(rec), seq)
        if not self.hold:
            self.ring.flush()  # committed now (or retried by service)
        if self.events is not None:
            self.events.add(self.t0_ms or 0, "energy", "", "", "seq=%d kind=%d imp=%dmWh "
                            "exp=%dmWh flags=0x%x" % (seq, kind, imp, exp, flags))
        return seq

    def session_event(self, now_ms, start, meter):
        """A session starts (True) or ends: close the interval, then the session record."""
        if start == self.in_session:
            return
        imp, exp = meter.totals_mwh()
        if self.t0_ms is not None and (now_ms != self.t0_ms or imp != self.imp0
                                       or exp != self.exp0):
            self._close_interval(now_ms, imp, exp, 0)  # (an empty one is not a record)
        t, f = self._utc(now_ms)
        f |= self.flags  # the first record after a boot says power_cut / wdt_reset
        self.flags = 0
        if start:
            self.session += 1
            self.session_open = self.session
            self._write(SESSION_START, t, t, 0, 0, f, self.soc, self.soc)
        else:
            self._write(SESSION_END, t, t, 0, 0, f, self.soc, self.soc)
            self.session_open = 0
        self.in_session = start
        self._open(now_ms, imp, exp)

    def on_event(self, ev):
        """``events.Journal`` listener: session start/stop from the supervisor (needs
        ``meter`` set: ``attach``)."""
        if ev[1] == "state" and ev[3] in ("SESSION_START", "SESSION_STOP"):
            self.session_event(ev[0], ev[3] == "SESSION_START", self.meter)

    def attach(self, journal, meter):
        self.meter = meter
        self.events = journal
        journal.listeners.append(self.on_event)

    def close(self, now_ms, meter):
        """Clean shutdown: the open interval becomes a record marked closed cleanly."""
        imp, exp = meter.totals_mwh()
        if self.t0_ms is not None:
            self._close_interval(now_ms, imp, exp, F_CLEAN)
        ok = self.ring.close()
        return ok

    # ---- the link ----

    def next_record(self, min_seq):
        """The oldest record not acknowledged with seq >= min_seq, as the ENERGY_RECORD
        values (link_msgs order), or None."""
        if self.ring.last_seq <= self.acked or min_seq > self.ring.last_seq:
            return None  # nothing to send: no file-system call (asked every link pass)
        lo = max(min_seq - 1, self.acked)
        if self.hold:
            if self.ring.committed_seq <= lo:
                return None  # what waits is in RAM only: sent once it is on flash
        else:
            self.ring.flush()
        gen = eventlog.frames(self.root, lo, FMT)
        try:  # close the generator (and its open segment file) when returning early
            for seq, fr in gen:
                r = decode(fr)
                if r[SEQ_LAST] <= self.acked or seq < min_seq:
                    continue
                if r[SEQ_LAST] > self.sent:
                    self.sent = r[SEQ_LAST]
                self.inflight[seq] = r[SEQ_LAST]
                if len(self.inflight) > 16:
                    self.inflight.pop(min(self.inflight))
                return (r[SEQ], r[SESSION], r[T_START], r[T_END], r[IMPORT], r[EXPORT],
                        r[SEQ_LAST], r[KIND], r[FLAGS] & 0x7F, r[SOC_START], r[SOC_END])
        finally:
            gen.close()
        return None

    def ack(self, seq):
        """The daemon stored record ``seq`` durably."""
        last = self.inflight.pop(seq, seq)
        if last > self.acked:
            self.acked = last

    def unacked(self):
        return max(0, self.ring.last_seq - self.acked)

    # ---- a full ring ----

    def _compact(self):
        """Make room without losing an unacknowledged record (see the module docstring);
        False when the oldest segment holds nothing unacknowledged (the ring drops it)."""
        ring = self.ring
        segs = ring._segs
        if len(segs) < 3:
            return False
        s0, s1 = segs[0], segs[1]
        recs = []
        n0 = 0
        last = 0
        for num in (s0, s1):
            try:
                f = open(ring.path(num), "rb")
            except OSError:
                continue
            try:
                while True:
                    fr = eventlog._next_frame(f, FMT)
                    if not fr:
                        break
                    r = decode(fr)
                    if r[SEQ] > last:
                        last = r[SEQ_LAST]
                        recs.append(r)
            finally:
                f.close()
            if num == s0:
                n0 = len(recs)
        if not any(r[SEQ_LAST] > self.acked for r in recs[:n0]):
            return False  # all acknowledged: the ring drops it as the event log does
        keep = [r for r in recs if r[SEQ_LAST] > self.acked]
        limit = ring.records_per_segment
        for force in (False, True):
            # force: the daemon has acknowledged nothing for 2 segments and this boot
            # cannot tell what was sent before it; merge those too rather than grow
            while len(keep) > (limit if not force else 2 * limit):
                out = []
                i = 0
                while i < len(keep):
                    a = keep[i]
                    b = keep[i + 1] if i + 1 < len(keep) else None
                    if b is not None and len(out) + (len(keep) - i) > limit and \
                            self._mergeable(a, b, force):
                        out.append(self._merge(a, b))
                        i += 2
                    else:
                        out.append(a)
                        i += 1
                if len(out) == len(keep):
                    break
                keep = out
        # an OSError here fails the flush (record kept pending, retried): never a drop
        import os

        tmp = ring.root + "/" + TMP
        with open(tmp, "wb") as f:
            for r in keep:
                f.write(encode(r))
        os.rename(tmp, ring.path(s0))
        segs.pop(1)
        os.remove(ring.path(s1))
        self.compactions += 1
        return True

    def _mergeable(self, a, b, force=False):
        return (a[KIND] == INTERVAL and b[KIND] == INTERVAL and a[SESSION] == b[SESSION]
                and a[SEQ_LAST] + 1 == b[SEQ] and (force or a[SEQ] > self.sent))

    def _merge(self, a, b):
        self.merged += 1
        return (a[SEQ], b[SEQ_LAST], INTERVAL, (a[FLAGS] | b[FLAGS] | F_MERGED) & 0x7F,
                a[SESSION], a[T_START], b[T_END], a[IMPORT] + b[IMPORT],
                a[EXPORT] + b[EXPORT], a[SOC_START], b[SOC_END], max(a[ACKED], b[ACKED]))

    def stats(self):
        return {"last_seq": self.ring.last_seq, "acked": self.acked,
                "unacked": self.unacked(), "session": self.session_open,
                "segments": list(self.ring._segs), "compactions": self.compactions,
                "merged": self.merged, "errors": self.ring.errors,
                "pending": self.ring.pending()}
