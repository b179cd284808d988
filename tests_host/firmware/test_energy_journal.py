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
