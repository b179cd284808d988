"""Power-cut sweep of the energy journal (runs ON the MicroPython unix runtime).

    micropython journal_powercut.py sweep [STEP]

The same RAM flash, LittleFS image and cut/torn power-ups as the event log's sweep
(``powercut_runner``: ``Flash``, ``formatted``, ``mount``). The workload: a journal on a
3 x 4 ring (12 records) with 1 s intervals, a metering stand-in whose totals grow by a
pure function of the step, three sessions, a daemon stand-in that takes and acknowledges
records (``next_record``/``ack``) except during two outages long enough to fill the ring
(so it compacts and merges), and clean closes and unclean restarts between runs. For
each write N (every STEP-th) the run starts again from the formatted image and the power
goes at write N; both images (nothing of write N / its first half) are powered up and:
1. the file system mounts and the journal opens and reads (never unreadable);
2. every record is whole; seq ranges are contiguous (each record starts at the last one's
   ``seq_last + 1``): 0 records doubled, no gap;
3. every record committed and not acknowledged by the cut is there (at most the open
   interval lost), session start/end included, and each record's energy equals the
   metered energy over its range (merges preserve it);
4. the journal keeps working: 3 more records follow on contiguously, and a second
   power-up reads the same.
Prints one JSON line: ``{"ok", "writes", "swept", "cuts", "torn", "records", "merged",
"compactions", "failures", "s"}``.

Context: host test tool (MicroPython unix runtime).
"""

import json
import os
import sys

sys.path.append(sys.path[0] if sys.path and sys.path[0] else ".")
try:
    import powercut_runner as pr
except ImportError:
    sys.path.append(__file__.rsplit("/", 1)[0])
    import powercut_runner as pr

from services import energy_journal as ej  # noqa: E402

SEGMENTS = 3
PER_SEGMENT = 4
STEP_MS = 250
RUNS = ((40, "clean"), (36, "cut"), (44, "clean"), (30, "cut"), (20, "clean"))
OUTAGES = ((10, 90), (100, 160))  # global steps without daemon acks (the ring fills)
SESSIONS = ((6, True), (50, False), (70, True), (120, False), (140, True))


class Meter:
    def __init__(self):
        self.imp = 0
        self.exp = 0

    def set_step(self, k):
        # cumulative totals: a pure function of the global step
        self.imp = k * 37 + (k * k) % 11
        self.exp = k * 113 + (k * 7) % 13

    def totals_mwh(self):
        return self.imp, self.exp


def workload(st, root):
    """``st``: ``committed`` (highest seq_last flushed), ``acked`` (daemon stand-in),
    ``cum`` (seq -> meter totals at its opening and at its end), ``journal``."""
    meter = Meter()
    k = 0
    for steps, end in RUNS:
        j = ej.EnergyJournal(root, SEGMENTS, PER_SEGMENT, interval_s=1)
        st["journal"] = j
        j.acked = max(j.acked, 0)
        nxt = 0
        for _ in range(steps):
            meter.set_step(k)
            for at, start in SESSIONS:
                if at == k:
                    before = _mark(j)
                    j.session_event(k * STEP_MS, start, meter)
                    _note(st, j, before, meter)
            before = _mark(j)
            j.step(k * STEP_MS, meter)
            _note(st, j, before, meter)
            if not any(a <= k < b for a, b in OUTAGES):
                while True:
                    rec = j.next_record(nxt)
                    if rec is None:
                        break
                    nxt = rec[0] + 1
                    j.ack(rec[0])
                    st["acked"] = max(st["acked"], rec[6])
            k += 1
        if end == "clean":
            before = _mark(j)
            j.close(k * STEP_MS, meter)
            _note(st, j, before, meter)
        else:
            j.ring._close_file()  # an unclean stop: RAM gone, nothing more written
    st["records"] = st["committed"]


def _mark(j):
    return j.ring.last_seq, (j.imp0, j.exp0)


def _note(st, j, before, meter):
    last, start = before
    for seq in range(last + 1, j.ring.last_seq + 1):
        # an interval runs from the totals when it opened to the totals now (a session
        # record after it in the same call: zero energy)
        st["cum"][seq] = (start, meter.totals_mwh())
        start = meter.totals_mwh()
    fl = st.get("flash")
    if fl is not None and fl.image is not None:
        return  # the power is gone: what "commits" now never reaches the flash
    if j.ring.committed_seq > st["committed"]:
        st["committed"] = j.ring.committed_seq


def check(recs, st, label):
    acked, committed, cum = st["acked"], st["committed"], st["cum"]
    prev = None
    for r in recs:
        if prev is not None:
            assert r[ej.SEQ] == prev[ej.SEQ_LAST] + 1, "%s: not contiguous: %d after %d" % (
                label, r[ej.SEQ], prev[ej.SEQ_LAST])
        assert r[ej.SEQ_LAST] >= r[ej.SEQ]
        prev = r
        rng = range(r[ej.SEQ], r[ej.SEQ_LAST] + 1)
        if r[ej.KIND] == ej.INTERVAL and all(q in cum for q in rng):
            # the energy of the records it covers, each metered from its opening to its
            # close (merges preserve it)
            want = (sum(cum[q][1][0] - cum[q][0][0] for q in rng),
                    sum(cum[q][1][1] - cum[q][0][1] for q in rng))
            assert (r[ej.IMPORT], r[ej.EXPORT]) == want, \
                "%s: record %d..%d energy %r, metered %r" % (
                    label, r[ej.SEQ], r[ej.SEQ_LAST], (r[ej.IMPORT], r[ej.EXPORT]), want)
    first = recs[0][ej.SEQ] if recs else 1
    last = recs[-1][ej.SEQ_LAST] if recs else 0
    assert last >= committed, "%s: committed %d lost (last %d)" % (label, committed, last)
    assert first <= acked + 1, "%s: unacked records %d..%d dropped" % (label, acked + 1,
                                                                        first - 1)


def _power_up_twice(image, st, label, failures):
    try:
        flash = pr.Flash(image)
        root = pr.mount(flash) + "/energy"
        try:
            j = ej.EnergyJournal(root, SEGMENTS, PER_SEGMENT, interval_s=1)
            recs = list(ej.records(root))
            check(recs, st, label)
            last = recs[-1][ej.SEQ_LAST] if recs else 0
            assert j.ring.last_seq == last, "%s: last_seq %d, last record %d" % (
                label, j.ring.last_seq, last)
            assert len(os.listdir(root)) <= SEGMENTS + 1, "%s: ring unbounded" % label
            meter = Meter()
            for i in range(3):
                meter.set_step(1000 + i)
                j.step(i * 1000, meter)
            j.close(5000, meter)
            after = list(ej.records(root))
            assert after[-1][ej.SEQ_LAST] >= last + 3, "%s: new records missing" % label
            for a, b in zip(after, after[1:]):
                assert b[ej.SEQ] == a[ej.SEQ_LAST] + 1, "%s: after power-up: gap" % label
        finally:
            os.umount("/pw")
        root = pr.mount(pr.Flash(flash.buf)) + "/energy"
        try:
            again = list(ej.records(root))
            assert again == after, "%s: second power-up reads differently" % label
        finally:
            os.umount("/pw")
    except pr.PowerCut:
        failures.append(label + ": power-up wrote past a cut?")
    except Exception as e:  # noqa: BLE001 - every failure is reported, the sweep goes on
        failures.append("%s: %s: %s" % (label, type(e).__name__, e))


def _fresh():
    return {"committed": 0, "acked": 0, "cum": {}, "journal": None, "records": 0}


def sweep(step=1):
    import time

    t0 = time.ticks_ms()
    image0 = pr.formatted()
    flash = pr.Flash(image0)
    root = pr.mount(flash) + "/energy"
    st = _fresh()
    workload(st, root)
    os.umount("/pw")
    uncut = st
    total = flash.writes
    failures = []
    swept = cuts = torn = 0
    _power_up_twice(bytes(flash.buf), st, "uncut", failures)
    for n in range(0, total, step):
        swept += 1
        flash = pr.Flash(image0, n)
        root = pr.mount(flash) + "/energy"
        st = _fresh()
        st["flash"] = flash
        try:
            # a cut inside LittleFS reaches the journal as an OSError (a failed flush,
            # retried): the run may go on, writing nothing more
            workload(st, root)
        except pr.PowerCut:
            pass
        j = st["journal"]
        if j is not None and j.ring._f is not None:
            try:
                j.ring._f.close()
            except Exception:  # noqa: BLE001 - the file system was cut mid-operation
                pass
        os.umount("/pw")
        if flash.image is None:
            failures.append("write %d: the run ended without reaching the cut" % n)
            continue
        _power_up_twice(flash.image, st, "write %d" % n, failures)
        _power_up_twice(flash.torn_image, st, "write %d torn" % n, failures)
        cuts += 1
        torn += 1
        if len(failures) > 20:
            break
    uj = uncut["journal"]
    return {"ok": not failures, "writes": total, "swept": swept, "step": step, "cuts": cuts,
            "torn": torn, "records": uncut["records"], "merged": uj.merged,
            "compactions": uj.compactions, "failures": failures[:20],
            "s": time.ticks_diff(time.ticks_ms(), t0) / 1000}


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "sweep":
        print(json.dumps(sweep(int(args[1]) if len(args) > 1 else 1)))
