"""Persistent event log: a ring of segment files of CRC-framed records on the board's flash.

    log = eventlog.Log("log", segments=8, records_per_segment=128)
    log.attach(journal)          # every Journal event becomes a record (RAM only)
    log.service(now_ms)          # each supervisor period: commits when due (see below)
    for rec in log.records(since_seq=0): ...   # (seq, t_ms, utc_s, severity, kind, code,
                                                #  name, detail), oldest first

On flash (``root``, e.g. ``log/``): segment files ``00000000.log``, ``00000001.log``...
(8 hex digits: the segment number, growing). At most ``segments`` files exist; a new
segment is started when the current one holds ``records_per_segment`` records, after
removing the oldest segment. The log therefore always keeps at least the newest
``(segments - 1) * records_per_segment`` records on flash; its size is bounded by
``segments * records_per_segment * MAX_RECORD`` bytes (typical record 50-80 bytes: about
60 KB with the defaults; worst case ~200 KB).

A record (little-endian), ``8 + 13 + 4 + strings`` bytes:

    magic 0xE7 | version 1 | u16 n          header: n = payload length (17..MAX_PAYLOAD)
    u32 seq | u32 t_ms | u32 utc_s | u8 sev payload: seq from 1, growing by 1 per record;
    4 x (u8 len, UTF-8 bytes)                t_ms the caller's ms clock (uptime); utc_s
                                             Unix seconds, 0 = unknown; sev 0/1/2 = INFO/
                                             WARN/ERROR; then kind, code, name, detail
                                             (cut to 24/16/40/96 bytes)
    u32 crc32(header + payload)

Power cuts. A record is *committed* when ``flush()`` (or ``service()``/``close()``
flushing) has returned. What this relies on is LittleFS's guarantee (v2, as MicroPython's
``VfsLfs2`` mounts it on rp2/esp32/stm32 boards): every file operation is atomic and
copy-on-write; data written to a file becomes visible only at ``f.flush()``/``close()``
(``lfs_file_sync``), and a power cut at any point leaves the file as of its last sync.
Creating and removing a file are atomic too. So an append is all or nothing, and a cut
never touches a record synced before. The format does not trust that blindly: every record
has a length and a CRC, recovery stops reading a segment at the first bad record (a torn
tail, as FAT or a plain file can leave one) and never appends behind it (the next record
goes to a new segment), and readers keep only records whose ``seq`` grows. FAT gives no
such guarantee (a cut can corrupt its allocation table or directory); on FAT only torn
tails are handled. The power-cut sweep in ``tests_host/firmware/test_eventlog.py`` cuts the flash
at every single write of a run on ``VfsLfs2`` and checks all this.

Cost. ``append`` (the ``Journal`` listener) only encodes the record into RAM, no
file-system call: ~20 us on the x64 unix runtime (a board's interpreter is some 20-50x
slower: about 0.5-1 ms). ``flush`` writes all pending records with one ``write`` and one
sync per segment touched; on LittleFS a sync copies the file's last block to a fresh one
(copy-on-write) and commits its metadata, now and then compacting a metadata pair: on a
RAM disk (x64) 0.1 ms typical, 20 ms at a compaction; on NOR flash each sync costs at
least one sector erase (tens of ms), and on rp2 the flash write runs with interrupts off
(on esp32 with the flash cache off): the tick stalls while it lasts. Hence
``service(now_ms, hold)``: WARN/ERROR records are committed at once (the fault has
de-energized the converter first), INFO ones batch for ``flush_ms`` (1 s), or wait while
``hold`` (energized). Up to ``max_pending`` records wait in RAM; beyond that a flush is
forced, and if it fails the oldest pending ones are dropped and counted in ``dropped``.
``service(now_ms, hold, strict=True)`` (a board whose ``board.json`` says
``flash_stalls_tick``) writes nothing at all while held, WARN records and a full queue
included: the queue then drops its oldest records (counted in ``dropped``) rather than
stall the current loop. A trip de-energizes first, so its ERROR record is committed in the
next period.
File-system errors (full flash...) never reach the caller: they are counted in ``errors``
(``last_error`` holds the exception), the records stay pending, ``service`` retries once
per ``flush_ms``, and the next write goes to a new segment. ``Log()`` itself raises
``OSError`` only when the flash cannot be read at all: boot code should catch that and
run with the in-RAM journal only.

Time. ``t_ms`` is the event's time on the caller's clock (``hal.ticks_ms()``, wrapping
at 2**30 as MicroPython's ticks do). Boards may have no real-time clock: ``utc_s`` is
filled only after ``set_utc(utc_ms, t_ms)`` anchored the clock to UTC (from the
communication controller, the host, or ``rtc_utc_ms()`` where the RTC is set).

Context: supervisor (allocates; never the tick). ``scan``/``frames`` are read-only and
may run beside a writer (the ``v2g logs`` board snippet does). Runs on MicroPython and
CPython.
"""

import os
import struct

import events

try:
    from binascii import crc32 as _crc32
except ImportError:  # a port built without binascii.crc32: table-driven fallback
    _crc32 = None

MAGIC = 0xE7
VERSION = 1
HEADER = 4  # magic, version, u16 payload length
FIXED = 13  # seq, t_ms, utc_s, severity
CAPS = (24, 16, 40, 96)  # byte caps of kind, code, name, detail
MAX_PAYLOAD = FIXED + 4 + 24 + 16 + 40 + 96
MAX_RECORD = HEADER + MAX_PAYLOAD + 4
SEVERITIES = (events.INFO, events.WARN, events.ERROR)
SUFFIX = ".log"
# The frame format the ring stores: (magic, version, smallest and largest payload, segment
# file suffix, ranged). ``ranged``: the payload's second u32 is the last seq the record
# covers (a merged record of the energy journal, services/energy_journal.py), so readers
# skip any later frame whose seq that range already covers. The event log's own format:
EVENT_FMT = (MAGIC, VERSION, FIXED + 4, MAX_PAYLOAD, SUFFIX, False)

# record tuple fields
SEQ = 0
T_MS = 1
UTC_S = 2
SEVERITY = 3
KIND = 4
CODE = 5
NAME = 6
DETAIL = 7

_TICKS_PERIOD = 0x40000000  # MicroPython's ticks_ms wraps here
_TICKS_HALF = 0x20000000
_UNIX_2000 = 946684800  # seconds from 1970-01-01 to 2000-01-01

_LOGS = {}  # root -> open Log, so a board-side reader can flush the live one first

_table = None


def crc32(data, crc=0):
    """CRC-32 (IEEE, as ``binascii.crc32``) of ``data``."""
    if _crc32 is not None:
        return _crc32(data, crc) & 0xFFFFFFFF
    global _table
    if _table is None:
        _table = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0xEDB88320 if c & 1 else c >> 1
            _table.append(c)
    c = crc ^ 0xFFFFFFFF
    for b in data:
        c = _table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def severity_of(kind, code):
    """Severity of an event: the fault table's for a known fault/trip code, ERROR for
    other trips, else INFO (the same rule as ``events.log_line``)."""
    if kind in ("fault", "trip"):
        entry = events.FAULTS.get(code)
        if entry:
            return entry[1]
        if kind == "trip":
            return events.ERROR
    return events.INFO


def _utf8(s, cap):
    """``s`` as UTF-8, cut to ``cap`` bytes on a character boundary."""
    if not isinstance(s, str):
        s = "" if s is None else str(s)
    b = s.encode()
    if len(b) > cap:
        n = cap
        while n > 0 and (b[n] & 0xC0) == 0x80:  # b[n] continues a character: cut before it
            n -= 1
        b = b[:n]
    return b


def encode(seq, t_ms, utc_s, severity, kind, code, name, detail):
    """One framed record (a bytearray). ``utc_s`` None or 0 = unknown."""
    k = _utf8(kind, CAPS[0])
    c = _utf8(code, CAPS[1])
    m = _utf8(name, CAPS[2])
    d = _utf8(detail, CAPS[3])
    n = FIXED + 4 + len(k) + len(c) + len(m) + len(d)
    sev = SEVERITIES.index(severity) if severity in SEVERITIES else 0
    buf = bytearray(HEADER + n + 4)
    struct.pack_into("<BBHIIIB", buf, 0, MAGIC, VERSION, n, seq & 0xFFFFFFFF,
                     t_ms & 0xFFFFFFFF, (utc_s or 0) & 0xFFFFFFFF, sev)
    i = HEADER + FIXED
    for b in (k, c, m, d):
        j = i + 1 + len(b)
        buf[i] = len(b)
        buf[i + 1:j] = b
        i = j
    struct.pack_into("<I", buf, i, crc32(memoryview(buf)[:i]))
    return buf


def decode(frame):
    """A framed record -> ``(seq, t_ms, utc_s or None, severity, kind, code, name,
    detail)``. Raises ``ValueError`` when the frame is not one whole good record."""
    if len(frame) < HEADER + FIXED + 4 + 4 or frame[0] != MAGIC or frame[1] != VERSION:
        raise ValueError("not a record")
    n = frame[2] | frame[3] << 8
    if len(frame) != HEADER + n + 4 or n < FIXED + 4 or n > MAX_PAYLOAD:
        raise ValueError("bad record length")
    if crc32(memoryview(frame)[:HEADER + n]) != struct.unpack_from("<I", frame, HEADER + n)[0]:
        raise ValueError("bad record CRC")
    seq, t_ms, utc_s, sev = struct.unpack_from("<IIIB", frame, HEADER)
    if sev > 2:
        raise ValueError("bad severity")
    out = [seq, t_ms, utc_s or None, SEVERITIES[sev]]
    i = HEADER + FIXED
    end = HEADER + n
    for _ in range(4):
        if i >= end:
            raise ValueError("bad record strings")
        k = frame[i]
        if i + 1 + k > end:
            raise ValueError("bad record strings")
        out.append(str(bytes(frame[i + 1:i + 1 + k]), "utf-8"))
        i += 1 + k
    if i != end:
        raise ValueError("bad record strings")
    return tuple(out)


def event(rec):
    """A record -> the ``Journal`` event tuple ``(t_ms, kind, code, name, detail)``."""
    return (rec[T_MS], rec[KIND], rec[CODE], rec[NAME], rec[DETAIL])


def iso_utc(utc_s):
    """Unix seconds -> ``2026-11-25T10:01:02Z`` (integer civil-date math: the same
    result on every port, whatever the port's ``time`` epoch)."""
    days, secs = divmod(utc_s, 86400)
    z = days + 719468  # days since 0000-03-01
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    y = yoe + era * 400 + (1 if m <= 2 else 0)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (y, m, d, secs // 3600, secs // 60 % 60,
                                              secs % 60)


def time_text(rec):
    """The record's time for a log line: ISO UTC when known, else uptime ``+12.345s``."""
    if rec[UTC_S]:
        return iso_utc(rec[UTC_S])
    return "+%d.%03ds" % (rec[T_MS] // 1000, rec[T_MS] % 1000)


def line(rec):
    """The protocol-log line of a record: ``2026-11-25T10:01:02Z ERROR 0x07 Grid Integrity
    Failure v_a=1.12pu`` (``events.log_line``)."""
    return events.log_line(event(rec), time_text(rec))


def rtc_utc_ms():
    """Unix ms from the board's RTC, or None when the RTC looks unset (before 2024).
    Context: supervisor, host."""
    import time

    t = time.time()
    if time.gmtime(0)[0] == 2000:  # bare-metal ports count from 2000
        t += _UNIX_2000
    if t < 1704067200:  # 2024-01-01
        return None
    return int(t * 1000)


# ---- reading (read-only: safe beside a writer) ----

def _join(root, name):
    return root + "/" + name if root else name


def segment_numbers(root, suffix=SUFFIX):
    """Segment numbers in ``root``, oldest first ([] when there is no log)."""
    try:
        names = os.listdir(root or ".")
    except OSError:
        return []
    out = []
    for name in names:
        if len(name) == 8 + len(suffix) and name.endswith(suffix):
            try:
                out.append(int(name[:8], 16))
            except ValueError:
                pass
    out.sort()
    return out


def segment_path(root, num, suffix=SUFFIX):
    return _join(root, "%08x%s" % (num, suffix))


def _next_frame(f, fmt=EVENT_FMT):
    """The next good frame of an open segment; ``b""`` at its clean end, None at a bad or
    torn record (nothing after it in that segment is trusted)."""
    h = f.read(HEADER)
    if not h:
        return b""
    if len(h) < HEADER or h[0] != fmt[0] or h[1] != fmt[1]:
        return None
    n = h[2] | h[3] << 8
    if n < fmt[2] or n > fmt[3]:
        return None
    rest = f.read(n + 4)
    if rest is None or len(rest) < n + 4:
        return None
    if crc32(memoryview(rest)[:n], crc32(h)) != struct.unpack_from("<I", rest, n)[0]:
        return None
    return h + rest


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def _seq(frame):
    return struct.unpack_from("<I", frame, HEADER)[0]


def _last(frame, fmt):
    """The last seq a frame covers: its seq, or a ranged frame's second u32."""
    return struct.unpack_from("<I", frame, HEADER + 4)[0] if fmt[5] else _seq(frame)


def segment_info(path, fmt=EVENT_FMT):
    """``(good records, first seq, last seq, clean)`` of one segment file; ``clean`` is
    False when bytes follow the last good record (a torn or bad tail). A missing file
    reads as empty and clean."""
    count = first = last = 0
    try:
        f = open(path, "rb")
    except OSError:
        return 0, 0, 0, True
    try:
        while True:
            fr = _next_frame(f, fmt)
            if not fr:
                return count, first, last, fr is not None
            if not count:
                first = _seq(fr)
            last = _last(fr, fmt)
            count += 1
    finally:
        f.close()


def _first_seq(path, fmt=EVENT_FMT):
    try:
        with open(path, "rb") as f:
            fr = _next_frame(f, fmt)
    except OSError:
        return 0
    return _seq(fr) if fr else 0


def frames(root, since_seq=0, fmt=EVENT_FMT):
    """Yield ``(seq, frame bytes)`` of the good records with ``seq > since_seq``, oldest
    first. Starts at the newest segment that can hold ``since_seq + 1`` (one read per
    segment to find it), so polling for new records stays cheap."""
    segs = segment_numbers(root, fmt[4])
    start = 0
    if since_seq > 0:
        for i in range(len(segs) - 1, -1, -1):
            first = _first_seq(segment_path(root, segs[i], fmt[4]), fmt)
            if first and first <= since_seq + 1:
                start = i
                break
    last = since_seq
    for num in segs[start:]:
        try:
            f = open(segment_path(root, num, fmt[4]), "rb")
        except OSError:
            continue  # removed by the writer's rotation meanwhile
        try:
            while True:
                fr = _next_frame(f, fmt)
                if not fr:
                    break
                seq = _seq(fr)
                if seq > last:
                    last = _last(fr, fmt)
                    yield seq, fr
        finally:
            f.close()


def newest_seq(root, fmt=EVENT_FMT):
    """The seq of the newest good record in ``root`` (0: none). Reads the newest
    segment(s) only."""
    segs = segment_numbers(root, fmt[4])
    for i in range(len(segs) - 1, -1, -1):
        last = segment_info(segment_path(root, segs[i], fmt[4]), fmt)[2]
        if last:
            return last
    return 0


def scan(root, since_seq=0):
    """Yield the decoded records with ``seq > since_seq``, oldest first (read-only)."""
    for _, fr in frames(root, since_seq):
        yield decode(fr)


def opened(root):
    """The ``Log`` open on ``root`` in this interpreter, or None."""
    return _LOGS.get(_norm(root))


def _norm(root):
    while len(root) > 1 and root.endswith("/"):
        root = root[:-1]
    return root


# ---- writing ----

class Log:
    """The writer. Opening recovers: it finds the last good record (``last_seq``) and
    decides where the next one goes (the newest segment when it ends clean and has room,
    else a new one). Only one ``Log`` per directory at a time."""

    def __init__(self, root_dir="log", segments=8, records_per_segment=128, flush_ms=1000,
                 max_pending=64, fmt=EVENT_FMT):
        if segments < 2 or records_per_segment < 1:
            raise ValueError("need segments >= 2 and records_per_segment >= 1")
        self.root = _norm(root_dir)
        self.fmt = fmt
        self.segments = segments
        self.records_per_segment = records_per_segment
        self.flush_ms = flush_ms
        self.max_pending = max_pending
        self.errors = 0
        self.last_error = None
        self.dropped = 0
        self.strict_hold = False  # service(hold, strict): no write at all now
        self._pending = []
        self._urgent = False
        self._since_ms = None  # when the oldest pending record was appended
        self._fail_ms = None  # when service()'s last flush failed
        self._utc_base = None  # (utc_ms, t_ms)
        self._f = None
        self._recover()
        _LOGS[self.root] = self

    def _recover(self):
        if self.root:
            try:
                os.mkdir(self.root)
            except OSError:
                pass  # exists (anything else shows at the first flush)
        segs = segment_numbers(self.root, self.fmt[4])
        while len(segs) > self.segments:  # a smaller ring than last time: drop the oldest
            self._remove(segs.pop(0))
        self._segs = segs
        self.last_seq = 0
        self._count = self.records_per_segment  # no room: the first flush starts a segment
        for i in range(len(segs) - 1, -1, -1):
            count, _, last, clean = segment_info(self.path(segs[i]), self.fmt)
            if i == len(segs) - 1 and clean:
                self._count = count  # append to it (a new one when it is full)
            if last:
                self.last_seq = last
                break
        self.committed_seq = self.last_seq

    def path(self, num):
        """The file of segment ``num``."""
        return segment_path(self.root, num, self.fmt[4])

    def _remove(self, num):
        try:
            os.remove(self.path(num))
        except OSError:
            pass

    # ---- clock ----

    def set_utc(self, utc_ms, t_ms):
        """Anchor the caller's ms clock to UTC: at ``t_ms`` it was ``utc_ms`` (Unix ms).
        ``None`` forgets the anchor (records then carry uptime only)."""
        self._utc_base = None if utc_ms is None else (int(utc_ms), t_ms)

    def utc_s(self, t_ms):
        """Unix seconds at the caller's ``t_ms``, or None when not anchored."""
        base = self._utc_base
        if base is None:
            return None
        d = ((t_ms - base[1] + _TICKS_HALF) & (_TICKS_PERIOD - 1)) - _TICKS_HALF
        return (base[0] + d) // 1000

    # ---- appending ----

    def append(self, ev, utc_s=None):
        """Queue the ``Journal`` event ``ev = (t_ms, kind, code, name, detail)`` as the next
        record (RAM only; ``flush`` commits it). Returns its seq. Never raises for a
        file-system problem. ``utc_s`` overrides the anchored clock."""
        t_ms, kind, code, name, detail = ev
        if utc_s is None:
            utc_s = self.utc_s(t_ms)
        sev = severity_of(kind, code)
        self.last_seq += 1
        self._pending.append(encode(self.last_seq, t_ms, utc_s, sev, kind, code, name, detail))
        if sev != events.INFO:
            self._urgent = True
        if self._since_ms is None:
            self._since_ms = t_ms
        if len(self._pending) > self.max_pending and (self.strict_hold or not self.flush()):
            self.dropped += len(self._pending) - self.max_pending
            del self._pending[:len(self._pending) - self.max_pending]
        return self.last_seq

    def append_frame(self, frame, last_seq, urgent=True):
        """Queue an already framed record (the caller's format, ``fmt``) covering up to
        ``last_seq``; ``flush`` commits it. For other record kinds than events (the energy
        journal); never raises for a file-system problem."""
        self.last_seq = last_seq
        self._pending.append(frame)
        if urgent:
            self._urgent = True
        return last_seq

    def attach(self, journal, backlog=True):
        """Record every event ``journal`` adds from now on (a listener); with
        ``backlog``, first the events it already holds (the boot's early faults)."""
        if backlog:
            for ev in journal.items:
                self.append(ev)
        journal.listeners.append(self.append)

    def pending(self):
        return len(self._pending)

    def service(self, now_ms, hold=False, strict=False):
        """Supervisor hook, each period: commit pending records when one is WARN/ERROR or
        the oldest has waited ``flush_ms``. ``hold=True`` (the converter energized)
        postpones the INFO-only flushes; WARN/ERROR records and a full queue still flush.
        ``strict=True`` (a board whose flash writes stall the tick: ``flash_stalls_tick``)
        makes ``hold`` postpone every write until it ends. Returns False when a flush
        failed."""
        self.strict_hold = hold and strict
        if not self._pending or (hold and (strict or not self._urgent)):
            return True
        mask = _TICKS_PERIOD - 1
        if self._fail_ms is not None:  # failing (flash full?): retry once per flush_ms
            if ((now_ms - self._fail_ms) & mask) < self.flush_ms:
                return False
        elif not self._urgent and self._since_ms is not None and (
                ((now_ms - self._since_ms) & mask) < self.flush_ms):
            return True
        ok = self.flush()
        self._fail_ms = None if ok else now_ms
        return ok

    def flush(self):
        """Write every pending record and sync; they are committed when this returns True.
        On a file-system error: False, ``errors``/``last_error`` updated, records kept
        pending, and the next flush starts a new segment."""
        pend = self._pending
        if not pend:
            return True
        rps = self.records_per_segment
        try:
            while pend:
                if self._count >= rps:
                    self._new_segment()
                elif self._f is None:
                    self._f = open(self.path(self._segs[-1]), "ab")
                take = min(rps - self._count, len(pend))
                self._f.write(b"".join(pend[:take]) if take > 1 else pend[0])
                self._f.flush()  # LittleFS: lfs_file_sync, the commit point
                self.committed_seq = _last(pend[take - 1], self.fmt)
                del pend[:take]
                self._count += take
        except OSError as e:
            self.errors += 1
            self.last_error = e
            self._close_file()
            self._count = rps  # never append behind what may be a torn record
            return False
        self._urgent = False
        self._since_ms = None
        return True

    def _new_segment(self):
        """Close the current segment, remove the oldest so that at most ``segments`` files
        exist with the new one, create the new one."""
        self._close_file()
        segs = self._segs
        if segs and _size(self.path(segs[-1])) == 0:
            # the newest is empty (created, then a failed write): fill it rather than
            # letting repeated failures rotate the whole log out
            self._f = open(self.path(segs[-1]), "ab")
            self._count = 0
            return
        while len(segs) >= self.segments:
            if not self._make_room():
                self._remove(segs[0])
                segs.pop(0)
        num = segs[-1] + 1 if segs else 0
        self._f = open(self.path(num), "ab")
        segs.append(num)
        self._count = 0

    def _make_room(self):
        """Called when the ring is full, before the oldest segment goes: True when the
        subclass made room itself (the energy journal merges instead of dropping); an
        OSError fails the flush (records kept pending)."""
        return False

    def _close_file(self):
        f = self._f
        self._f = None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass

    def close(self):
        """Flush and close the segment file. Returns ``flush()``'s result."""
        ok = self.flush()
        self._close_file()
        if _LOGS.get(self.root) is self:
            del _LOGS[self.root]
        return ok

    # ---- reading ----

    def records(self, since_seq=0):
        """Flush, then yield the records with ``seq > since_seq``, oldest first."""
        self.flush()
        if self.fmt is not EVENT_FMT:
            return frames(self.root, since_seq, self.fmt)
        return scan(self.root, since_seq)

    def stats(self):
        return {"last_seq": self.last_seq, "committed_seq": self.committed_seq,
                "pending": len(self._pending), "segments": list(self._segs),
                "errors": self.errors, "dropped": self.dropped}
