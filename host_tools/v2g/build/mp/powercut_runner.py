"""Power-cut sweep and portable checks of ``eventlog`` (runs ON the MicroPython unix runtime).

    micropython powercut_runner.py sweep [STEP [BLOCK NBLOCKS]]   # every STEP-th write
    micropython powercut_runner.py unit            # the portable checks, on VfsLfs2 and
                                                   # on plain files (VfsPosix)

``sweep``: a RAM block device (``Flash``: ``readblocks``/``writeblocks`` with an offset
and ``ioctl`` erase, the extended interface ``os.VfsLfs2`` uses; 64 blocks of 512 bytes
by default, or BLOCK x NBLOCKS, e.g. 16 x 4096 as on rp2/esp32 flash) is formatted once
with ``os.VfsLfs2.mkfs``. A fixed workload (``workload``: a log on a 3 x 4 ring, 116
records in flushes of 1 to 9 records, closed and opened again six times, rotating many
times, details up to the 96-byte cap) runs on it; every program and every erase counts
as one write. Then for each write N of that run (STEP 1: all of them) the run starts
again from the formatted image, and the power goes at write N: the flash is frozen
there and ``PowerCut`` (not an OSError: the log must not swallow it) aborts the run;
later writes (a finaliser closing a file) never reach the frozen image. Two images are
taken at the cut and both are powered up:
- *cut*: nothing of write N landed;
- *torn*: the first half of write N landed (half a program, half an erased block).
Power-up: a fresh ``Flash`` on those bytes, mount, ``eventlog.Log`` opens (recovery),
and ``_power_up_twice`` asserts:
1. the file system mounts and the log opens and reads (never unreadable);
2. records are whole and intact (equal to what was appended for that seq), their seqs
   contiguous;
3. every committed record (its ``flush``/``close`` returned before the cut) is there,
   unless the ring had dropped it by then: the log holds the newest ``(segments - 1) *
   records_per_segment`` records on flash (a flush that spans segments may start a
   segment, and so drop the oldest, before it returns); records appended but not
   committed may or may not be there (whole if they are);
4. at most ``segments`` segment files;
5. the log keeps working: 5 more records appended and flushed read back, and again
   after a second power-up (unmount, mount).
Prints one JSON line: ``{"ok", "writes", "erases", "swept", "cuts", "torn", "records",
"block", "blocks", "failures", "s"}``. Cost (x64): ~300 writes swept in ~5 s.

``unit``: ``CHECKS`` (format, torn tails, ring bound, ``since_seq``, UTC, journal attach,
failing writes) on a VfsLfs2 RAM disk and on a temp directory of plain files. pytest
imports this module and runs the same ``CHECKS`` under CPython.

Context: host test tool (MicroPython unix runtime; ``CHECKS`` also CPython).
"""

import os
import sys

import eventlog
import events

BLOCK = 512
NBLOCKS = 64
SEGMENTS = 3
PER_SEGMENT = 4
UTC0_MS = 1795600862000  # 2026-11-25T10:01:02Z
# records per flush; the log is closed and opened again between runs of batches (a
# batch longer than PER_SEGMENT spans two or three segments)
BATCHES = ((1, 1, 2, 3, 1, 5), (1, 6, 2, 1, 1, 4, 3, 1, 2, 3), (9, 1, 1, 1, 2, 2, 5)) * 2
MORE = 5  # records appended after power-up


class PowerCut(Exception):
    """The power went (not an OSError: the log must not swallow it)."""


class Flash:
    """RAM NOR-flash stand-in with the extended block interface. ``cut_at``: the write
    (program or erase, counted from 0) at which the power goes. ``image`` is the flash as
    the power left it with nothing of that write; ``torn_image`` with its first half."""

    def __init__(self, image, cut_at=-1):
        self.buf = bytearray(image)
        self.mv = memoryview(self.buf)
        self.writes = 0
        self.erases = 0
        self.cut_at = cut_at
        self.image = None
        self.torn_image = None

    def readblocks(self, block, buf, off=0):
        a = block * BLOCK + off
        buf[:] = self.mv[a:a + len(buf)]

    def _write(self, a, data):
        n = self.writes
        self.writes += 1
        if self.image is not None:
            return  # no power: nothing reaches the flash any more (no raise: finalisers)
        if n == self.cut_at:
            self.image = bytes(self.buf)
            h = len(data) // 2
            self.mv[a:a + h] = data[:h]
            self.torn_image = bytes(self.buf)
            raise PowerCut()
        self.mv[a:a + len(data)] = data

    def writeblocks(self, block, buf, off=0):
        self._write(block * BLOCK + off, buf)

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return NBLOCKS
        if op == 5:  # block size
            return BLOCK
        if op == 6:  # erase
            self.erases += 1
            self._write(arg * BLOCK, b"\xff" * BLOCK)
        return 0


def formatted():
    f = Flash(b"\xff" * (BLOCK * NBLOCKS))
    os.VfsLfs2.mkfs(f)
    return bytes(f.buf)


def mount(flash, at="/pw"):
    vfs = os.VfsLfs2(flash, mtime=False)  # no mtime: runs are byte-for-byte repeatable
    os.mount(vfs, at)
    return at


# ---- what the log is given, and what it must give back ----

def content(seq):
    """The event appended as record ``seq`` (a pure function of seq, so that records
    appended after a power-up with a reused seq are expected the same)."""
    k = seq % 5
    t_ms = (seq * 1237) & 0x3FFFFFFF
    if k == 0:
        ev = (t_ms, "fault", "0x07", "GRID_INTEGRITY", "v_a=1.%02dpu" % (seq % 100))
    elif k == 1:
        ev = (t_ms, "state", "", "ENERGIZED", "")
    elif k == 2:
        ev = (t_ms, "trip", "0x21", "OVER_CURRENT", "value=%d.%03dpu" % (seq, seq * 7 % 1000))
    elif k == 3:
        ev = (t_ms, "setpoint_accepted", "", "", "id=%d p=%dW " % (seq, -seq * 100)
              + "x" * (seq * 13 % 120))  # up to 130 bytes: cut to 96
    else:
        ev = (t_ms, "lock", "", "", "f=50.0%02dHz v=1.0%02dpu \u00b5" % (seq % 100, seq % 37))
    return ev


def expected(seq):
    ev = content(seq)
    utc_s = (UTC0_MS + ev[0]) // 1000
    return eventlog.decode(eventlog.encode(seq, ev[0], utc_s, eventlog.severity_of(
        ev[1], ev[2]), ev[1], ev[2], ev[3], ev[4]))


def open_log(root):
    log = eventlog.Log(root, segments=SEGMENTS, records_per_segment=PER_SEGMENT)
    log.set_utc(UTC0_MS, 0)
    return log


def _batches(st, root, sizes):
    log = st["log"]
    for n in sizes:
        for _ in range(n):
            seq = log.last_seq + 1
            assert log.append(content(seq)) == seq
            st["appended"] = seq
        assert log.flush() is True
        st["committed"] = log.last_seq


def workload(st, root):
    """The run the sweep cuts. ``st`` tracks ``appended`` (highest seq handed to the log)
    and ``committed`` (highest seq whose flush/close returned)."""
    for sizes in BATCHES:
        st["log"] = open_log(root)  # from the 2nd: recovery, appends to the newest segment
        _batches(st, root, sizes)
        assert st["log"].close() is True


def check_records(recs, committed, appended, label):
    assert recs, "%s: no records" % label
    seqs = [r[0] for r in recs]
    for i in range(1, len(seqs)):
        assert seqs[i] == seqs[i - 1] + 1, "%s: seqs not contiguous: %r" % (label, seqs)
    for r in recs:
        assert r == expected(r[0]), "%s: record %d garbled: %r" % (label, r[0], r)
    assert seqs[-1] >= committed, "%s: committed %d lost (last %d)" % (label, committed,
                                                                       seqs[-1])
    assert seqs[-1] <= appended, "%s: seq %d never appended" % (label, seqs[-1])
    # the ring keeps the newest (segments - 1) * records_per_segment records on flash (a
    # flush spanning segments may drop the oldest segment before it returns)
    must_from = max(1, seqs[-1] - (SEGMENTS - 1) * PER_SEGMENT + 1)
    assert seqs[0] <= must_from, "%s: records %d..%d lost (first %d, last %d)" % (
        label, must_from, seqs[0] - 1, seqs[0], seqs[-1])


def sweep(step=1):
    import time

    t0 = time.ticks_ms()
    image0 = formatted()
    # the uncut run: how many writes it makes
    flash = Flash(image0)
    root = mount(flash) + "/log"
    st = {"appended": 0, "committed": 0, "log": None}
    workload(st, root)
    os.umount("/pw")
    st_uncut = st
    total = flash.writes
    erases = flash.erases
    final = flash.buf
    failures = []
    swept = cuts = torn = 0
    # the uncut end state powers up too
    _power_up_twice(bytes(final), st["committed"], st["appended"], "uncut", failures)
    for n in range(0, total, step):
        swept += 1
        flash = Flash(image0, n)
        root = mount(flash) + "/log"
        st = {"appended": 0, "committed": 0, "log": None}
        try:
            workload(st, root)
            failures.append("write %d: the run ended without reaching the cut" % n)
        except PowerCut:
            pass
        lg = st["log"]
        if lg is not None and lg._f is not None:
            try:  # close now (its writes go nowhere) rather than in a GC finaliser
                lg._f.close()
            except Exception:  # noqa: BLE001 - the file system was cut mid-operation
                pass
        os.umount("/pw")
        if flash.image is None:
            failures.append("write %d: no cut happened" % n)
            continue
        _power_up_twice(flash.image, st["committed"], st["appended"], "write %d" % n,
                        failures)
        _power_up_twice(flash.torn_image, st["committed"], st["appended"],
                        "write %d torn" % n, failures)
        cuts += 1
        torn += 1
        if len(failures) > 20:
            break
    return {"ok": not failures, "writes": total, "swept": swept, "step": step,
            "cuts": cuts, "torn": torn, "records": st_uncut["appended"],
            "erases": erases, "block": BLOCK, "blocks": NBLOCKS,
            "failures": failures[:20], "s": time.ticks_diff(time.ticks_ms(), t0) / 1000}


def _power_up_twice(image, committed, appended, label, failures):
    try:
        flash = Flash(image)
        root = mount(flash) + "/log"
        try:
            log = open_log(root)
            recs = list(log.records())
            if committed or recs:
                check_records(recs, committed, appended, label)
            last = recs[-1][0] if recs else 0
            assert log.last_seq == last, "%s: last_seq %d, last record %d" % (
                label, log.last_seq, last)
            assert len(eventlog.segment_numbers(root)) <= SEGMENTS, "%s: ring unbounded" % label
            for _ in range(MORE):
                log.append(content(log.last_seq + 1))
            assert log.flush() is True, "%s: flush after power-up failed: %r" % (
                label, log.last_error)
            after = list(log.records())
            check_records(after, last + MORE, last + MORE, label + " (+%d)" % MORE)
            assert after[-1][0] == last + MORE, "%s: new records missing" % label
            assert log.close() is True
        finally:
            os.umount("/pw")
        root = mount(Flash(flash.buf)) + "/log"  # second power-up
        try:
            again = list(open_log(root).records())
            assert again == after, "%s: second power-up reads differently" % label
        finally:
            os.umount("/pw")
    except PowerCut:
        failures.append(label + ": power-up wrote past a cut?")
    except Exception as e:  # noqa: BLE001 - every failure is reported, the sweep goes on
        failures.append("%s: %s: %s" % (label, type(e).__name__, e))


# ---- portable checks (MicroPython on VfsLfs2 / VfsPosix, and CPython on plain files) ----

def _rm_tree(root):
    for name in os.listdir(root):
        os.remove(root + "/" + name)
    os.rmdir(root)


def _fill(log, n):
    for _ in range(n):
        log.append(content(log.last_seq + 1))
    assert log.flush() is True


def check_roundtrip(root):
    for seq in range(1, 30):
        rec = expected(seq)
        assert rec[0] == seq and rec[3] in ("INFO", "WARN", "ERROR")
    fr = eventlog.encode(7, 1234, None, "ERROR", "fault", "0x07", "GRID_INTEGRITY",
                         "v_a=1.12pu")
    rec = eventlog.decode(fr)
    assert rec == (7, 1234, None, "ERROR", "fault", "0x07", "GRID_INTEGRITY", "v_a=1.12pu")
    assert eventlog.line(rec) == "+1.234s ERROR 0x07 Grid Integrity Failure v_a=1.12pu"
    rec = eventlog.decode(eventlog.encode(7, 1234, 1795600862, "ERROR", "fault", "0x07",
                                          "GRID_INTEGRITY", "v_a=1.12pu"))
    assert eventlog.line(rec) == "2026-11-25T10:01:02Z ERROR 0x07 Grid Integrity Failure " \
                                 "v_a=1.12pu", eventlog.line(rec)
    assert eventlog.iso_utc(0) == "1970-01-01T00:00:00Z"
    assert eventlog.iso_utc(951782400) == "2000-02-29T00:00:00Z"
    assert eventlog.iso_utc(4107542399) == "2100-02-28T23:59:59Z"
    # a detail beyond its cap is cut on a character boundary
    long = "\u00b5" * 100
    rec = eventlog.decode(eventlog.encode(1, 0, None, "INFO", "state", "", "", long))
    assert rec[7] == "\u00b5" * 48
    # any flipped bit or cut is refused
    for i in range(len(fr)):
        bad = bytearray(fr)
        bad[i] ^= 0x10
        try:
            eventlog.decode(bytes(bad))
            raise AssertionError("flipped byte %d accepted" % i)
        except ValueError:
            pass
    for n in range(len(fr)):
        try:
            eventlog.decode(fr[:n])
            raise AssertionError("cut at %d accepted" % n)
        except ValueError:
            pass


def check_ring_and_reopen(root):
    log = open_log(root)
    assert log.last_seq == 0 and list(log.records()) == []
    _fill(log, 3)
    log.close()
    log = open_log(root)  # clean newest segment with room: appended to
    assert log.last_seq == 3
    _fill(log, 30)
    recs = list(log.records())
    assert len(eventlog.segment_numbers(root)) == SEGMENTS
    assert recs[-1][0] == 33 and recs[0][0] <= 33 - (SEGMENTS - 1) * PER_SEGMENT + 1
    assert [r[0] for r in recs] == list(range(recs[0][0], 34))
    for r in recs:
        assert r == expected(r[0])
    assert [r[0] for r in log.records(30)] == [31, 32, 33]
    assert [r[0] for r in log.records(33)] == []
    assert [r[0] for r in eventlog.scan(root, 29)] == [30, 31, 32, 33]
    assert [r[0] for r in log.records(0)] == [r[0] for r in recs]
    log.close()
    # a smaller ring next boot: trimmed at open
    small = eventlog.Log(root, segments=2, records_per_segment=PER_SEGMENT)
    assert len(eventlog.segment_numbers(root)) == 2 and small.last_seq == 33
    small.close()


def check_torn_tail(root):
    log = open_log(root)
    _fill(log, 6)  # segment 0: 1-4, segment 1: 5-6
    log.close()
    segs = eventlog.segment_numbers(root)
    newest = eventlog.segment_path(root, segs[-1])
    good = open(newest, "rb").read()
    half = eventlog.encode(7, 1, None, "INFO", "state", "", "X", "torn")
    for tail in (half[:5], half[:-1], b"\xff" * 9, b"\x00"):
        with open(newest, "wb") as f:
            f.write(good + tail)
        log = open_log(root)
        assert log.last_seq == 6, (tail, log.last_seq)
        assert [r[0] for r in log.records()] == [1, 2, 3, 4, 5, 6]
        log.append(content(7))
        assert log.flush() is True
        # never appended behind the torn bytes: a new segment took record 7
        assert eventlog.segment_numbers(root)[-1] == segs[-1] + 1
        assert [r[0] for r in log.records()][-3:] == [5, 6, 7]
        log.close()
        _rm_tree(root)
        log = open_log(root)
        _fill(log, 6)
        log.close()
        segs = eventlog.segment_numbers(root)
    # a bad record in the middle of a segment: the rest of that segment is skipped
    path = eventlog.segment_path(root, segs[0])
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x01
    with open(path, "wb") as f:
        f.write(data)
    seqs = [r[0] for r in eventlog.scan(root)]
    assert seqs[-2:] == [5, 6] and seqs == sorted(seqs) and len(seqs) < 6


def check_attach_utc_service(root):
    j = events.Journal()
    j.fault(0, "0x30", "config.json: bad")  # a boot fault before the log exists
    log = eventlog.Log(root, segments=4, records_per_segment=8, flush_ms=1000)
    log.attach(j)
    assert log.pending() == 1 and log.last_seq == 1
    assert log.service(5) is True and log.pending() == 0  # WARN: at once
    log.set_utc(UTC0_MS, 500)
    j.add(600, "state", name="WAIT_GRID")
    assert log.service(700) is True and log.pending() == 1  # INFO only: waits
    assert log.service(1599) is True and log.pending() == 1
    assert log.service(1600) is True and log.pending() == 0  # 1 s after it
    j.add(1700, "state", name="ENERGIZED")
    assert log.service(5000, hold=True) is True and log.pending() == 1  # held
    assert log.service(5010) is True and log.pending() == 0
    j.fault(6000, "0x07", "v_a=1.12pu")
    assert log.service(6010, hold=True) is True and log.pending() == 0  # ERROR: at once
    recs = list(log.records())
    assert [r[4] for r in recs] == ["fault", "state", "state", "fault"]
    assert recs[0][2] is None and recs[0][3] == "WARN"  # before set_utc: uptime only
    assert recs[1][2] == (UTC0_MS + 100) // 1000
    assert eventlog.line(recs[3]) == "2026-11-25T10:01:07Z ERROR 0x07 Grid Integrity " \
                                     "Failure v_a=1.12pu", eventlog.line(recs[3])
    assert eventlog.line(recs[0]).startswith("+0.000s WARN 0x30 ")
    assert eventlog.opened(root + "/") is log
    # the ticks clock wraps at 2**30: UTC still counts forward
    log.set_utc(UTC0_MS, 0x3FFFFF00)
    assert log.utc_s(0x100) == (UTC0_MS + 0x200) // 1000
    log.close()
    assert eventlog.opened(root) is None


class _FailingFile:
    def write(self, b):
        raise OSError(28)  # ENOSPC

    def flush(self):
        raise OSError(28)

    def close(self):
        pass


def check_write_errors(root):
    log = open_log(root)
    _fill(log, 2)
    log._f = _FailingFile()
    log._count = 0
    log.append(content(3))  # t_ms 3711, INFO
    assert log.service(5000) is False and log.errors == 1 and log.pending() == 1
    assert isinstance(log.last_error, OSError)
    assert log.service(5010) is False and log.errors == 1  # retried once per flush_ms
    assert log.service(6000) is True and log.pending() == 0  # new segment, works again
    assert [r[0] for r in log.records()] == [1, 2, 3]
    # pending overflow while the flash keeps failing: oldest pending dropped, counted
    log.max_pending = 4

    def fail_open(*a):
        raise OSError(5)

    log._count = PER_SEGMENT
    real = log._new_segment
    log._new_segment = fail_open
    for _ in range(6):
        log.append(content(log.last_seq + 1))
    assert log.pending() == 4 and log.dropped == 2 and log.errors >= 1
    log._new_segment = real
    assert log.flush() is True
    assert [r[0] for r in log.records()] == [1, 2, 3, 6, 7, 8, 9]
    log.close()


CHECKS = (check_roundtrip, check_ring_and_reopen, check_torn_tail,
          check_attach_utc_service, check_write_errors)


def unit():
    import time

    results = []
    flash = Flash(b"\xff" * (BLOCK * NBLOCKS))
    os.VfsLfs2.mkfs(flash)
    mount(flash)
    tmp = "/tmp/v2g-eventlog-%d" % time.ticks_cpu()
    os.mkdir(tmp)
    try:
        for base in ("/pw", tmp):
            for i, fn in enumerate(CHECKS):
                root = "%s/log%d" % (base, i)
                try:
                    fn(root)
                    results.append([fn.__name__, base, "ok"])
                except Exception as e:  # noqa: BLE001 - report every check
                    sys.print_exception(e)
                    results.append([fn.__name__, base, "%s: %s" % (type(e).__name__, e)])
                for name in os.listdir(base):
                    _rm_tree(base + "/" + name)
    finally:
        os.umount("/pw")
        os.rmdir(tmp)
    return {"ok": all(r[2] == "ok" for r in results), "results": results}


def main():
    import json

    what = sys.argv[1] if len(sys.argv) > 1 else "sweep"
    if what == "sweep":
        global BLOCK, NBLOCKS
        if len(sys.argv) > 3:
            BLOCK, NBLOCKS = int(sys.argv[3]), int(sys.argv[4])
        out = sweep(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    elif what == "unit":
        out = unit()
    else:
        print("usage: powercut_runner.py sweep [STEP] | unit")
        sys.exit(2)
    print(json.dumps(out))
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    main()
