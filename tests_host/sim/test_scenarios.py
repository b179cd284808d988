"""Scenario mode of the simulated board: the real firmware on the MicroPython runtime
against the plant, in simulated time.

Targets (issue: boards and the simulated board): at rated power and a 10 kHz tick the
injected current's total rated-current distortion <= 2.5 % and every odd harmonic
< 4 %; P and Q within 1 % of their setpoints; a setpoint step settles within 2 grid
cycles with overshoot below 10 %. Same scenario -> same bytes. Bad scenarios exit 2
and write nothing.
"""

import json
import math

import pytest

from v2g import cli
from v2g.common import paths, twin
from v2g.sim import analysis, mpycache, plot, runner, scenario

P_RATED = 11000.0
I_RATED_PEAK = P_RATED / (3 * 230.0) * math.sqrt(2)


def _scenario(f_nom, events, duration=1.6, **config):
    cfg = {"enter_service_delay_s": 0.1, "enter_service_ramp_s": 0.0, "ai_enable": 0}
    cfg.update(config)
    return scenario.validate({"name": "t", "duration_s": duration,
                              "grid": {"v_nom_ln_rms": 230.0, "f_nom_hz": f_nom},
                              "initial": {"f_hz": f_nom}, "config": cfg, "events": events})


def _run(tmp_path, sc, trace_every=1, tag="r", compiled=True):
    out, tr = tmp_path / (tag + ".json"), tmp_path / (tag + ".csv")
    result = runner.simulate(sc, trace_path=str(tr), trace_every=trace_every, out_path=str(out),
                          compiled=compiled)
    return result, plot.load_trace(str(tr)), out, tr


@pytest.fixture(scope="module", params=[50, 60])
def rated_run(request, tmp_path_factory, micropython_exe):
    f0 = request.param
    events = [{"t_s": 0.0, "setpoint": {"id": "a", "p_w": -P_RATED, "q_var": 0}},
              {"t_s": 0.8, "setpoint": {"id": "b", "p_w": -5500, "q_var": 3000}},
              {"t_s": 1.1, "setpoint": {"id": "c", "p_w": P_RATED, "q_var": 0}},
              {"t_s": 1.35, "setpoint": {"id": "d", "p_w": 0, "q_var": -5000}}]
    sc = _scenario(f0, events)
    return (f0,) + _run(tmp_path_factory.mktemp("rated%d" % f0), sc)


def test_rated_current_distortion(rated_run):
    f0, result, cols, _, _ = rated_run
    assert result["first_trip_s"] is None
    cycles = f0 // 5  # 0.2 s: a whole number of cycles and of ticks at 50 and 60 Hz
    for ph, (fund, trd, h) in analysis.current_distortion(cols, 0.5, cycles, f0,
                                                          I_RATED_PEAK).items():
        assert abs(fund / I_RATED_PEAK - 1.0) < 0.01, (ph, fund)
        assert trd <= 2.5, (ph, trd)
        assert max(v for n, v in h.items() if n % 2) < 4.0, (ph, h)


@pytest.mark.parametrize("t0,p,q", [(0.5, -P_RATED, 0.0), (1.0, -5500.0, 3000.0),
                                    (1.3, P_RATED, 0.0), (1.55, 0.0, -5000.0)])
def test_power_settles_on_setpoint(rated_run, t0, p, q):
    f0, result, cols, _, _ = rated_run
    m = analysis.window(cols, t0, 2, f0)
    assert abs(cols["p_w"][m].mean() - p) <= 0.01 * P_RATED
    assert abs(cols["q_var"][m].mean() - q) <= 0.01 * P_RATED


@pytest.mark.parametrize("t_step,p,q", [(0.8, -5500.0, 3000.0), (1.1, P_RATED, 0.0),
                                        (1.35, 0.0, -5000.0)])
def test_setpoint_step_settles_within_two_cycles(rated_run, t_step, p, q):
    f0, result, cols, _, _ = rated_run
    for key, target in (("p_w", p), ("q_var", q)):
        settle, over = analysis.step_response(cols, key, t_step, target, P_RATED)
        assert settle <= 2.0 / f0, (key, settle)
        assert over < 10.0, (key, over)


def test_same_scenario_same_bytes(tmp_path, micropython_exe):
    """Twice the same run, and once more from source instead of the precompiled .mpy
    modules (``v2g.sim.mpycache``): the same bytes all three times."""
    sc = scenario.load(runner.SIM_DIR / "scenarios" / "v2g_session.json")
    dirs = twin.sim_path([runner.SIM_DIR, paths.FIRMWARE_DIR])  # as runner.simulate
    assert mpycache.compiled_dir(dirs) is not None
    _, _, out1, tr1 = _run(tmp_path, sc, trace_every=7, tag="one")
    _, _, out2, tr2 = _run(tmp_path, sc, trace_every=7, tag="two")
    _, _, out3, tr3 = _run(tmp_path, sc, trace_every=7, tag="src", compiled=False)
    assert out1.read_bytes() == out2.read_bytes() == out3.read_bytes()
    assert tr1.read_bytes() == tr2.read_bytes() == tr3.read_bytes()


def test_v2g_session_rides_through_phase_jump(tmp_path, micropython_exe):
    sc = scenario.load(runner.SIM_DIR / "scenarios" / "v2g_session.json")
    result, cols, out, _ = _run(tmp_path, sc, trace_every=10)
    kinds = [e["kind"] for e in result["events"]]
    assert "lock" in kinds and "trip" not in kinds
    assert result["final"]["state"] == "ENERGIZED"
    assert result["final"]["contactor_status"] == 2
    (t_on, t_off), = result["energized_intervals"]  # one interval: no interruption
    assert t_on < 1.5 and t_off == sc["duration_s"]
    assert result["energy_wh"]["export"] > 5.0 and result["energy_wh"]["import"] < 0.1
    assert result["tick"] == {"count": 60000, "overruns": 0}
    # around the 20 degree jump at 4 s: current keeps flowing, export stays near 7 kW
    m = (cols["t_s"] > 4.0) & (cols["t_s"] < 4.1)
    assert cols["p_w"][m].max() < -5000
    saved = json.loads(out.read_text())
    assert list(saved)[:9] == list(runner.RESULT_ORDER)


@pytest.mark.parametrize("text,needle", [
    ('{"name": "x", "duration_s": 1, "events": [{"t_s": 0.5, "v_pu": 9}]}',
     "events[0].v_pu: value 9 outside 0..2 pu"),
    ('{"name": "x", "duration_s": 1, "events": [{"t_s": 0.5, "warp": 1}]}',
     "events[0].warp: unknown key"),
    ('{"name": "x", "duration_s": 1, "config": {"i_max_pu": 7}}',
     "key 'i_max_pu': value 7 outside 0.10..1.10 pu"),
    ('{"name": "x", "duration_s": 1,\n "events": [}', "line 2 column"),
    ('{"name": "x", "duration_s": 1, "grid": {"f_nom_hz": 55}}', "grid.f_nom_hz"),
    ('{"name": "x", "duration_s": 1, "events": [{"t_s": 0.5, "hang": "banana"}]}',
     "events[0].hang: value 'banana' names no part of the firmware; allowed: \"tick\", "
     "\"supervisor\", \"link\""),
    ('{"name": "x", "duration_s": 1, "events": [{"t_s": 0.5, "harmonics": [{"order": 51, '
     '"pu": 0.1}]}]}', "events[0].harmonics[0].order: value 51: allowed whole numbers 2..50"),
    ('{"name": "x", "duration_s": 1, "events": [{"t_s": 0.5, "ev_limits": {"soc_min": 2}}]}',
     "events[0].ev_limits.soc_min: value 2 outside 0..1"),
])
def test_bad_scenario_exit_2_and_nothing_written(tmp_path, capsys, text, needle):
    sc = tmp_path / "bad.json"
    sc.write_text(text)
    out = tmp_path / "out.json"
    rc = cli.main(["sim", "run", str(sc), "--out", str(out), "--trace", str(tmp_path / "t.csv")])
    assert rc == 2
    assert needle in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "t.csv").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.json"]


@pytest.mark.parametrize("f0", [50, 60])
def test_rated_export_with_anti_islanding_on(tmp_path, micropython_exe, f0):
    """The default configuration (active anti-islanding perturbing Q by +/-0.8 % of |P|):
    distortion and P/Q accuracy still meet the targets."""
    sc = _scenario(f0, [{"t_s": 0.0, "setpoint": {"id": "a", "p_w": -P_RATED, "q_var": 0}}],
                   duration=1.0, ai_enable=1)
    result, cols, _, _ = _run(tmp_path, sc)
    assert result["first_trip_s"] is None
    cycles = f0 // 5
    for ph, (fund, trd, h) in analysis.current_distortion(cols, 0.6, cycles, f0,
                                                          I_RATED_PEAK).items():
        assert trd <= 2.5 and max(v for n, v in h.items() if n % 2) < 4.0, (ph, trd)
    m = analysis.window(cols, 0.6, cycles, f0)
    assert abs(cols["p_w"][m].mean() + P_RATED) <= 0.01 * P_RATED
    assert abs(cols["q_var"][m].mean()) <= 0.01 * P_RATED
