"""Exactly once end to end: stand-in daemon (outbox + publisher) -> lossy proxy -> mosquitto
(TLS 1.3, client certificates) -> ledger, under loss, crashes, a back end that is down and an
expired certificate. Every (station, seq) credited once, no gap, credited == metered.

Reduced sweeps here (``make test``); ``make billing-sweep`` (V2G_BILLING_SWEEP=full) runs
more records and seeds. Figures go to out/billing/figures.jsonl.
"""

import os
import signal
import statistics
import time

import pytest


from v2g.backend import pki
from v2g.backend.ledger import Ledger
from v2g.gateway.record_source import ProfileSource

FULL = os.environ.get("V2G_BILLING_SWEEP") == "full"
ST = "ST-0001"
N_LOSS = 150 if FULL else 40
SEEDS = (1, 2, 3) if FULL else (1,)
N_CRASH = 200 if FULL else 60


def check_exactly_once(bed, n, station=ST):
    """Every sequence 1..n credited once, no gap, nothing flagged, credited == metered."""
    assert bed.wait_acked(station, n, timeout=30), "ledger acked %d of %d" % (
        bed.acked(station), n)
    rep = bed.report()[station]
    metered = ProfileSource(station, n).metered()
    assert rep["records"] == n, rep
    assert rep["gaps"] == [] and rep["conflicts"] == 0 and rep["flagged"] == {}, rep
    assert rep["credited_wh_export"] == pytest.approx(metered["wh_export"], abs=1e-9)
    assert rep["credited_wh_import"] == pytest.approx(metered["wh_import"], abs=1e-9)
    return rep


def run_node(bed, n, rate=100.0, timeout=90.0, **kw):
    proc = bed.start_node(bed.node_config(ST, **kw), n, rate=rate, timeout=timeout)
    rc, summary = bed.node_result(proc, timeout=timeout + 30)
    assert rc == 0, summary
    return summary


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("loss", [0.01, 0.05, 0.20])
def test_exactly_once_under_proxy_loss(bed, figures, loss, seed):
    bed.start_proxy(loss, seed=seed)
    bed.start_ledger()
    assert bed.wait_ledger()
    t0 = time.monotonic()
    summary = run_node(bed, N_LOSS, rate=50.0)
    rep = check_exactly_once(bed, N_LOSS)
    figures(loss=loss, seed=seed, records=N_LOSS, seconds=round(time.monotonic() - t0, 2),
            proxy=bed.proxy.stats, connections=summary["connections"],
            published=summary["published"], duplicates_suppressed=rep["duplicates_suppressed"])


def test_exactly_once_broker_kill9_mid_stream(bed, figures):
    bed.start_proxy(0.01, seed=7)
    bed.start_ledger()
    assert bed.wait_ledger()
    proc = bed.start_node(bed.node_config(ST), N_CRASH, rate=40.0, timeout=90)
    kills = 0
    for at in ((0.6, 1.6) if not FULL else (0.6, 1.6, 3.0, 4.0)):
        while bed.acked(ST) < N_CRASH * at / 5.0 and proc.poll() is None:
            time.sleep(0.05)
        bed.broker.kill9()
        kills += 1
        time.sleep(0.5)
        bed.broker.start()
    rc, summary = bed.node_result(proc, timeout=120)
    assert rc == 0, summary
    rep = check_exactly_once(bed, N_CRASH)
    figures(case="broker kill -9", kills=kills, records=N_CRASH,
            connections=summary["connections"], resends=summary["resends"],
            duplicates_suppressed=rep["duplicates_suppressed"])


def test_exactly_once_publisher_kill9_and_restart_from_outbox(bed, figures):
    bed.start_proxy(0.01, seed=8)
    bed.start_ledger()
    assert bed.wait_ledger()
    cfg = bed.node_config(ST)
    kills = 0
    for _ in range(3 if FULL else 1):
        proc = bed.start_node(cfg, N_CRASH, rate=40.0, timeout=90)
        time.sleep(0.8)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
    stored_before = len(open(cfg + ".stored").read().split("\n")) - 1
    assert 0 < stored_before < N_CRASH, "killed mid-stream"
    summary = run_node(bed, N_CRASH, rate=40.0)
    assert summary["stored"]["exists"] >= 1, "the restart replayed records the outbox had"
    rep = check_exactly_once(bed, N_CRASH)
    figures(case="publisher kill -9", kills=kills, stored_before_restart=stored_before,
            records=N_CRASH, duplicates_suppressed=rep["duplicates_suppressed"])


def test_exactly_once_backend_down_then_up(bed, figures):
    bed.start_proxy(0.0)
    bed.start_ledger()
    assert bed.wait_ledger()
    proc = bed.start_node(bed.node_config(ST), N_CRASH, rate=40.0, timeout=90)
    while bed.acked(ST) < 10:
        time.sleep(0.05)
    bed.stop_ledger(signal.SIGKILL)   # the back end dies
    down_at = bed.acked(ST)
    time.sleep(2.0 if not FULL else 10.0)
    led = Ledger(bed.db)
    assert led.acked_seq(ST) == down_at, "nothing credited while down"
    led.close()
    bed.start_ledger()                # back: its persistent session holds what was queued
    rc, summary = bed.node_result(proc, timeout=120)
    assert rc == 0, summary
    rep = check_exactly_once(bed, N_CRASH)
    figures(case="back end down", acked_when_down=down_at, records=N_CRASH,
            resends=summary["resends"], duplicates_suppressed=rep["duplicates_suppressed"])


def test_expired_certificate_then_renewed(bed, figures):
    bed.start_ledger()
    assert bed.wait_ledger()
    nb, na = pki.expired_window()
    bed.ca.issue(ST, ST, not_before=nb, not_after=na)
    cfg = bed.node_config(ST, via_proxy=False)
    log_path = "%s/%s.log" % (bed.dir, cfg.rsplit("/", 1)[1])
    n = 30
    t0 = time.monotonic()
    proc = bed.start_node(cfg, n, rate=0, timeout=60)
    text = ""
    while time.monotonic() - t0 < 10 and "REJECTED" not in text:
        time.sleep(0.05)
        text = open(log_path).read()
    first_reject_s = time.monotonic() - t0
    lines = [ln for ln in text.splitlines() if " WARNING " in ln or " ERROR " in ln]
    assert lines and "REJECTED: Certificate Expired: client certificate subject=CN=ST-0001 " \
        "expired " + na.strftime("%Y-%m-%dT%H:%M") in lines[0], lines[:3]
    time.sleep(1.5)
    assert bed.acked(ST) == 0 and bed.report().get(ST) is None, "nothing credited meanwhile"
    bed.ca.issue(ST, ST)  # renewal: the file is replaced; the daemon is not restarted
    t1 = time.monotonic()
    rc, summary = bed.node_result(proc, timeout=60)
    assert rc == 0, summary
    rep = check_exactly_once(bed, n)
    figures(case="expired certificate", first_reject_s=round(first_reject_s, 2),
            renewed_to_all_acked_s=round(time.monotonic() - t1, 2),
            attempts=summary["attempts"], records=n,
            duplicates_suppressed=rep["duplicates_suppressed"])


def test_latency_at_zero_loss(bed, figures):
    bed.start_ledger()
    assert bed.wait_ledger()
    n = 40
    cfg = bed.node_config(ST, via_proxy=False)
    run_node(bed, n, rate=20.0)
    check_exactly_once(bed, n)
    stored = dict(tuple(map(int, ln.split())) for ln in open(cfg + ".stored") if ln.strip())
    led = Ledger(bed.db)
    received = dict(led.db.execute("SELECT seq, received_ms FROM ledger_record WHERE "
                                   "station=?", (ST,)))
    led.close()
    lat = sorted(received[k] - stored[k] for k in stored)
    p50, worst = statistics.median(lat), lat[-1]
    figures(case="latency 0 % loss", records=n, p50_ms=p50, max_ms=worst)
    assert worst < 2000, "a record reaches the ledger within 2 s (p50 %d ms, max %d ms)" % (
        p50, worst)
