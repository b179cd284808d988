"""The real chain with loss on the link and ``kill -9`` of the daemon mid-stream.

``v2g sim board`` (firmware: meter, energy journal, link) -> ``LinkRelay`` (frames lost
or CRC-corrupted with probability ``loss``) -> ``v2g daemon`` -> lossy proxy (2 %) ->
mosquitto (TLS 1.3) -> ``v2g ledger serve`` (``v2g.backend.chain``). The daemon is killed
with SIGKILL once the ledger has credited a few records, and started again a second
later. Every (station, seq) must be credited exactly once: no gap, no conflict, the
credited export equal to the firmware's metered export within 0.5 %, as many ledger
records as the board's journal wrote. ``make test`` runs 5 % link loss over a 12 s
session; ``V2G_BILLING_SWEEP=full`` (``make billing-sweep``) 1, 5 and 20 % over 40 s.
"""

import os
import time

import pytest

from v2g.backend.broker import mosquitto_exe
from v2g.backend.chain import STATION, Chain

FULL = os.getenv("V2G_BILLING_SWEEP") == "full"
LOSSES = (0.01, 0.05, 0.2) if FULL else (0.05,)
SESSION_S = 40.0 if FULL else 12.0

pytestmark = pytest.mark.skipif(mosquitto_exe() is None,
                                reason="mosquitto not installed (make tools)")


@pytest.mark.parametrize("loss", LOSSES)
def test_exactly_once_with_link_loss_and_daemon_kill(tmp_path, loss):
    chain = Chain(tmp_path, proxy_loss=0.02, link_loss=loss, session_s=SESSION_S)
    try:
        chain.start()
        deadline = time.monotonic() + 90
        while chain.bed.acked(STATION) < 3 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert chain.bed.acked(STATION) >= 3, "no records reached the ledger"
        chain.kill_daemon()  # kill -9 mid-stream: the outbox and the board keep records
        killed_at = chain.bed.acked(STATION)
        time.sleep(1.0)
        chain.start_daemon()
        st, totals = chain.wait_done(timeout_s=SESSION_S + 150)
        rep = chain.bed.report()[STATION]
    finally:
        chain.close()
    m = totals[1] / 1000.0
    c = rep["credited_wh_export"]
    print("\nchain, link loss %.0f %%, proxy 2 %%, daemon killed at acked seq %d: metered "
          "%.3f Wh, credited %.3f Wh, %d records (journal %d), %d duplicates suppressed, "
          "gaps %r, conflicts %r, relay %r" % (loss * 100, killed_at, m, c, rep["records"],
                                               st["last_seq"], rep["duplicates_suppressed"],
                                               rep["gaps"], rep["conflicts"],
                                               chain.relay.stats))
    assert rep["gaps"] == [] and not rep["conflicts"]
    assert rep["records"] == st["last_seq"]  # each of the journal's records, once
    assert m > 1.0 and abs(c - m) <= 0.005 * m
