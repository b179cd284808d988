"""The energy journal (``firmware/services/energy_journal.py``): records, sequence across
restarts, compaction/merging of a full ring, the link's send/ack/replay, and the power-cut
sweep on LittleFS (``host_tools/v2g/build/mp/journal_powercut.py`` on the MicroPython unix
runtime; ``make test`` cuts at every 3rd write, ``make journal-sweep`` at every write).
"""

import json
import os

from services import energy_journal as ej
from v2g.common import paths, runtime

RUNNER = paths.MP_DIR / "journal_powercut.py"
STEP = 1 if os.getenv("V2G_SWEEP") == "full" else 3


class Meter:
    def __init__(self):
        self.imp = self.exp = 0

    def totals_mwh(self):
        return self.imp, self.exp


def test_power_cut_sweep(micropython_exe):
    r = runtime.run_micropython(RUNNER, ["sweep", str(STEP)],
                                extra_path=[str(paths.REPO_ROOT / "firmware")],
                                exe=micropython_exe, timeout=600)
    res = json.loads(r.stdout.decode().strip().splitlines()[-1])
    print("\nenergy journal power-cut sweep (VfsLfs2 64 x 512 B, every %d. write): %d writes, "
          "%d cuts + %d torn power-ups, %d records, %d merges, %d compactions, %.1f s: %s"
          % (STEP, res["writes"], res["cuts"], res["torn"], res["records"], res["merged"],
             res["compactions"], res["s"], "ok" if res["ok"] else res["failures"]))
    assert res["ok"], res["failures"]
    assert res["compactions"] >= 1 and res["merged"] >= 1


def test_records_sequence_merge_and_link(tmp_path):
    root = str(tmp_path / "energy")
    m = Meter()
    j = ej.EnergyJournal(root, segments=3, records_per_segment=4, interval_s=1)
    t = 0
    total_exp = 0
    j.step(t, m)
    j.session_event(t, True, m)
    for _ in range(30):  # 30 intervals of 1 s, no daemon: the ring (12) must compact
        t += 1000
        m.exp += 1000
        total_exp += 1000
        j.step(t, m)
    j.session_event(t, False, m)
    recs = list(ej.records(root))
    kinds = [r[ej.KIND] for r in recs]
    assert kinds[0] == ej.SESSION_START and kinds[-1] == ej.SESSION_END
    assert sum(r[ej.EXPORT] for r in recs) == total_exp  # merging preserved every mWh
    assert any(r[ej.FLAGS] & ej.F_MERGED for r in recs)
    for a, b in zip(recs, recs[1:], strict=False):
        assert b[ej.SEQ] == a[ej.SEQ_LAST] + 1
    assert recs[0][ej.SEQ] == 1
    # the link: oldest first, merged ranges acked by their first seq
    sent = []
    nxt = 0
    while True:
        v = j.next_record(nxt)
        if v is None:
            break
        sent.append(v)
        nxt = v[0] + 1
        j.ack(v[0])
    assert [v[0] for v in sent] == [r[ej.SEQ] for r in recs]
    assert j.acked == recs[-1][ej.SEQ_LAST] and j.unacked() == 0
    # a restart without a clean close: seq goes on, the first interval says power_cut
    last = j.ring.last_seq
    j.ring._close_file()
    j2 = ej.EnergyJournal(root, segments=3, records_per_segment=4, interval_s=1,
                          reset_cause="wdt")
    assert j2.ring.last_seq == last
    j2.step(0, m)
    m.imp += 5
    j2.step(1000, m)
    new = list(ej.records(root, last))
    assert new[0][ej.SEQ] == last + 1 and new[0][ej.IMPORT] == 5
    assert new[0][ej.FLAGS] & ej.F_POWER_CUT and new[0][ej.FLAGS] & ej.F_WDT_RESET
    # after a reboot records are replayed from the oldest the journal does not know acked
    assert j2.next_record(0) is not None
    j2.close(2000, m)
    j3 = ej.EnergyJournal(root, segments=3, records_per_segment=4, interval_s=1)
    j3.step(0, m)
    m.imp += 1
    j3.step(1000, m)
    assert not list(ej.records(root, last + 2))[-1][ej.FLAGS] & ej.F_POWER_CUT


def test_frame_crc_refuses_any_flipped_bit():
    rec = (7, 9, 0, 4, 2, 1767225600, 1767225660, 12, 34567, 812, 805, 3)
    fr = ej.encode(rec)
    assert ej.decode(fr) == rec
    for i in range(len(fr) * 8):
        bad = bytearray(fr)
        bad[i // 8] ^= 1 << (i % 8)
        try:
            ej.decode(bytes(bad))
        except ValueError:
            continue
        raise AssertionError("bit %d flipped accepted" % i)


def _files_bytes(root):
    return sum(os.path.getsize(os.path.join(root, f)) for f in os.listdir(root))


def test_held_journal_writes_and_sends_nothing_then_commits_everything(tmp_path):
    """``hold`` (energized on a board whose flash writes stall the tick): no byte reaches
    the file system and no record goes to the link while held; the queue stays bounded
    (the open interval runs on, energy kept); the first period after the hold commits
    every record, contiguous, and the link then sends them."""
    root = str(tmp_path / "energy")
    m = Meter()
    j = ej.EnergyJournal(root, segments=4, records_per_segment=32, interval_s=1)
    t = 0
    j.step(t, m)
    j.session_event(t, True, m)
    j.step(t, m)  # not held yet: the session start is committed
    size0 = _files_bytes(root)
    first = j.next_record(1)
    assert first is not None and first[7] == ej.SESSION_START
    j.ack(first[0])
    for _ in range(40):  # 40 s energized, 1 s intervals, more than the queue holds
        t += 1000
        m.exp += 1000
        j.step(t, m, hold=True)
        assert j.next_record(first[0] + 1) is None
    assert _files_bytes(root) == size0
    assert j.ring.pending() <= ej.HOLD_QUEUE
    j.session_event(t, False, m)  # the session ends (SESSION_STOP while still energized)
    assert _files_bytes(root) == size0
    j.step(t + 10, m)  # de-energized: everything is written
    assert j.ring.pending() == 0 and _files_bytes(root) > size0
    recs = list(ej.records(root))
    seqs = [r[ej.SEQ] for r in recs]
    assert seqs == list(range(1, len(recs) + 1))
    assert recs[-1][ej.KIND] == ej.SESSION_END
    assert sum(r[ej.EXPORT] for r in recs) == m.exp == 40000
    # fewer, longer intervals (the session's end closes the open one): energy unchanged
    assert len(recs) - 2 <= ej.HOLD_QUEUE + 1
    sent, seq = [], first[0] + 1
    while True:
        r = j.next_record(seq)
        if r is None:
            break
        sent.append(r[0])
        j.ack(r[0])
        seq = r[6] + 1
    assert sent == seqs[1:]


def test_held_event_log_writes_nothing_even_for_warnings(tmp_path):
    import eventlog

    log = eventlog.Log(str(tmp_path / "log"), max_pending=8)
    log.service(0)
    size0 = _files_bytes(log.root)
    for i in range(20):
        log.append((i, "fault", "0x70", "", "t=%d" % i))  # a WARN of the fault table
        log.service(i, hold=True, strict=True)
    assert _files_bytes(log.root) == size0
    assert log.pending() == 8 and log.dropped == 12
    log.service(100, hold=True)  # held but not strict: WARN records flush
    assert _files_bytes(log.root) > size0 and log.pending() == 0
