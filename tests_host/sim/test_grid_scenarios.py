"""Grid-facing behaviour on the simulated board that the 1547 suite does not cover:
idempotent setpoints under a flood of requests, the volt-watt curve, 0 W while fault
0x07 holds, and permit_service.
"""

import random

import numpy as np
import pytest

from v2g.sim import analysis, plot, runner, scenario

P_RATED = 11000.0


def _run(tmp_path, events, duration=2.0, trace_every=10, **config):
    cfg = {"enter_service_delay_s": 0.2, "enter_service_ramp_s": 0.0, "ai_enable": 0}
    cfg.update(config)
    sc = scenario.validate({"name": "grid", "duration_s": duration,
                            "grid": {"v_nom_ln_rms": 230.0, "f_nom_hz": 60},
                            "config": cfg, "events": events})
    tr = tmp_path / "t.csv"
    result = runner.simulate(sc, trace_path=str(tr), trace_every=trace_every)
    return result, plot.load_trace(str(tr))


def test_flood_of_injection_requests_never_adds_up(tmp_path, micropython_exe):
    """2000 requests in 1.5 s: repeats of one id, re-sent older ids and bursts of new ids
    in the same instant. Export never exceeds the largest single accepted setpoint."""
    rng = random.Random(7)
    events = [{"t_s": 0.0, "setpoint": {"id": "s0", "p_w": -5000, "q_var": 0}}]
    accepted_max = 5000
    for k in range(2000):
        t = round(0.4 + k * 0.00075, 5)
        if rng.random() < 0.6:
            sp = {"id": "s0", "p_w": -5000, "q_var": 0}  # the same request again
        else:
            p = -rng.choice((3000, 4000, 5000, 6000))
            sp = {"id": "n%d" % k, "p_w": p, "q_var": 0}
            accepted_max = max(accepted_max, -p)
        events.append({"t_s": t, "setpoint": sp})
    result, cols = _run(tmp_path, events, duration=2.2, trace_every=5)
    dup = [e for e in result["events"] if e["kind"] == "setpoint_duplicate"]
    assert len(dup) > 1000
    export = -cols["p_w"][cols["t_s"] > 0.4]
    assert export.max() <= accepted_max * 1.02 + 30  # within the controller's ripple
    assert result["first_trip_s"] is None


@pytest.mark.parametrize("v_pu,limit_pu", [(1.0, 1.0), (1.07, 0.8), (1.08, 0.6),
                                           (1.09, 0.4)])
def test_volt_watt_limits_export(tmp_path, micropython_exe, v_pu, limit_pu):
    result, cols = _run(tmp_path, [
        {"t_s": 0.0, "setpoint": {"id": "a", "p_w": -P_RATED, "q_var": 0}},
        {"t_s": 0.8, "v_pu": v_pu}], duration=1.6, trace_every=1)
    assert result["first_trip_s"] is None
    m = analysis.window(cols, 1.3, 12, 60)
    export_pu = -cols["p_w"][m].mean() / P_RATED
    assert abs(export_pu - limit_pu) <= 0.02, export_pu


def test_no_energy_while_grid_integrity_fault_holds(tmp_path, micropython_exe):
    result, cols = _run(tmp_path, [
        {"t_s": 0.0, "v_pu": 0.85},
        {"t_s": 0.0, "setpoint": {"id": "a", "p_w": -7000, "q_var": 0}},
        {"t_s": 1.0, "v_pu": 1.0}], duration=2.0)
    faults = [e for e in result["events"] if e.get("code") == "0x07"]
    assert faults and faults[0]["name"] == "GRID_INTEGRITY"
    clear = [e for e in result["events"] if e["kind"] == "clear" and e.get("code") == "0x07"]
    t_clear = clear[0]["t_s"]
    before = cols["t_s"] < t_clear
    assert np.abs(cols["p_w"][before]).max() == 0.0
    assert result["energized_intervals"][0][0] > t_clear


def test_permit_service_false_ceases_within_2s(tmp_path, micropython_exe):
    result, cols = _run(tmp_path, [
        {"t_s": 0.0, "setpoint": {"id": "a", "p_w": -7000, "q_var": 0}},
        {"t_s": 1.0, "permit_service": False}], duration=2.5)
    (iv,) = result["energized_intervals"]
    assert iv[1] - 1.0 <= 2.0 and iv[1] >= 1.0
    assert np.abs(cols["p_w"][cols["t_s"] > iv[1] + 0.01]).max() < 1.0


def test_momentary_cessation_rides_through_a_deep_sag(tmp_path, micropython_exe):
    """Category III, 0.02 pu for 1.03 s: current ceases (the PLL loses the grid), no trip,
    and output is back within 0.5 s of the voltage's return."""
    result, cols = _run(tmp_path, [
        {"t_s": 0.0, "setpoint": {"id": "a", "p_w": -7000, "q_var": 0}},
        {"t_s": 1.0, "v_pu": 0.02}, {"t_s": 2.03, "v_pu": 1.0}], duration=3.0,
        abnormal_category=3)
    assert result["first_trip_s"] is None
    (a, b), (c, d) = result["energized_intervals"]
    assert 1.0 <= b <= 1.0 + 1.0 / 60 + 0.01  # ceased within a cycle of the sag
    assert 2.03 <= c <= 2.03 + 0.5
