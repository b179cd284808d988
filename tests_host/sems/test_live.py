"""The reduced site on the broker: 50 stations (TLS 1.3, client certificates, ACL), two of
them the firmware on simulated boards behind their own ``v2g daemon`` (``sim_ev`` cars), 48
emulated; two SEMS instances, a 100 % demand step up, a step down, kill -9 of the active
SEMS, then all down. Checks the reduced forms of the issue's targets, over the boards and
the emulators alike. About 60 s."""

import json
import os

import pytest
from v2g.backend.broker import mosquitto_exe
from v2g.backend.sems_bench import SiteRun
from v2g.common import paths

pytestmark = pytest.mark.skipif(mosquitto_exe() is None,
                                reason="mosquitto not installed (`make tools`)")

SITE = str(paths.REPO_ROOT / "bench" / "sems" / "site-50.yaml")
BOARDS = 2


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    d = tmp_path_factory.mktemp("sems-site")
    run = SiteRun(d, SITE, emulators=1, boards=BOARDS, log=lambda *a: None)
    run.start()
    try:
        run.run_events()
    finally:
        results = run.stop()
    fig = run.figures(results)
    fig["_dir"] = str(d)
    fig["_boards"] = [r for r in results if r.get("boards")]
    return fig


def test_site_limit_held(figures):
    assert figures["max_over_pct"] <= 2.0, figures
    assert figures["failover_max_over_pct"] <= 2.0, figures


def test_dispatch_latency(figures):
    assert figures["setpoints_applied"] > 50
    assert figures["dispatch_p99_s"] <= 1.0, figures


def test_failover_and_no_setpoint_applied_twice(figures):
    assert figures["failover_s"] is not None and figures["failover_s"] <= 5.0, figures
    assert figures["applied_twice"] == 0


def test_all_down_falls_back_to_safe_limit(figures):
    # the fallback starts fallback_lead_s before the hold time ends, so the power is at
    # the safe limit within hold_s (0.5 s allowed here for a busy machine's scheduling)
    assert figures["all_down_fallback_s"] <= figures["hold_s"] - 1.2 + 0.5, figures
    assert figures["all_down_safe_s"] <= figures["hold_s"] + 0.5, figures


def test_fairness_and_soc_floor(figures):
    assert figures["fairness_within_5pct"] >= 0.95, figures
    assert figures["below_soc_floor"] == 0


def test_no_synchronized_ramp(figures):
    assert figures["max_ramp_w_s"] <= 1.1 * figures["site_ramp_w_s"], figures


def test_status_and_plot(figures, tmp_path):
    from v2g.cli import main
    png = tmp_path / "site.png"
    assert main(["sems", "status", "--out", os.path.join(figures["_dir"], "status"),
                 "--plot", str(png)]) == 0
    assert png.stat().st_size > 1000


def test_boards_are_stations_like_the_others(figures):
    """The boards' daemons publish telemetry the SEMS plans with (not stale, a share), apply
    its setpoints within the dispatch target, and reach the safe limit when all are down."""
    assert figures["boards"] == BOARDS
    (res,) = figures["_boards"]
    assert len(res["stations"]) == BOARDS
    lat = [t_ap - ts for _sid, _id, ts, t_ap in res["applied"]]
    assert len({sid for sid, *_ in res["applied"]}) == BOARDS, res["applied"]
    assert max(lat) <= 1.0, res["applied"]
    # exporting while the SEMS runs, and at the safe limit (0 W export) at the end
    assert min(p for _t, p, _fb, _us in res["samples"]) < -1000.0
    t_end, p_end, fb_end, unsafe_end = res["samples"][-1]
    assert fb_end == BOARDS and unsafe_end == 0 and abs(p_end) <= 50.0, res["samples"][-5:]
    # the car's SoC reached the SEMS through the daemon's telemetry
    sdir = os.path.join(figures["_dir"], "status")
    views = []
    for name in os.listdir(sdir):
        if name.endswith(".json"):
            with open(os.path.join(sdir, name)) as f:
                views.append(json.load(f))
    status = max((v for v in views if v["role"] == "active"), key=lambda v: v["t"])
    for sid in res["stations"]:
        assert sid not in status["stale"]
        assert status["shares"][sid]["target_w"] < -100.0, status["shares"][sid]


def test_boards_pump_figures_read(figures):
    """The bench reads each board's real-time pump figures over its console before it stops
    (with the boards niced in ``make sems-bench``, they show whether the boards kept real
    time): every board answers, with at least the run's simulated time."""
    assert figures["boards_pumps_read"] == BOARDS, figures
    (res,) = figures["_boards"]
    for sid, pump in res["pumps"].items():
        assert pump["sim_ms"] >= 30_000, (sid, pump)  # the site file's duration_s: 30
        assert 0 <= pump["slipped_ms"] <= pump["sim_ms"], (sid, pump)
    assert figures["boards_slipped_ms_max"] == max(p["slipped_ms"] for p in res["pumps"].values())
