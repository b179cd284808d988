"""System figures for ``v2g bench``: the PLL against its targets and the simulated board
(speed against real time, current distortion and setpoint settling at rated power).

Context: host only.
"""

import math
import time

from v2g.grid import pll_eval
from v2g.sim import analysis, plot, runner, scenario

P_RATED = 11000.0


def pll_figures():
    """One row per (tick rate, grid) with the PLL target figures (``pll_eval.figures``)."""
    return [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
            for row in pll_eval.figures()]


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def sim_figures(tmp_dir, reps=3):
    """Scenario speed (simulated seconds per wall second, median of ``reps`` runs of the
    V2G session stretched to 10 s) and the rated-power figures at 50 Hz, measured with the
    anti-islanding perturbation off (controller characterisation, as 1547.1 tests one
    function at a time; tests_host/sim/test_scenarios.py checks distortion with it on)."""
    sc = scenario.load(runner.SIM_DIR / "scenarios" / "v2g_session.json")
    sc["duration_s"] = 10.0
    walls = []
    for _ in range(reps):
        t0 = time.monotonic()
        runner.simulate(sc)
        walls.append(time.monotonic() - t0)
    wall = _median(walls)
    events = [{"t_s": 0.0, "setpoint": {"id": "a", "p_w": -P_RATED, "q_var": 0}},
              {"t_s": 0.8, "setpoint": {"id": "b", "p_w": -5500, "q_var": 3000}},
              {"t_s": 1.1, "setpoint": {"id": "c", "p_w": P_RATED, "q_var": 0}}]
    rated = scenario.validate({"name": "rated", "duration_s": 1.4,
                               "grid": {"v_nom_ln_rms": 230.0, "f_nom_hz": 50},
                               "config": {"enter_service_delay_s": 0.1,
                                          "enter_service_ramp_s": 0.0, "ai_enable": 0},
                               "events": events})
    trace = str(tmp_dir / "rated.csv")
    runner.simulate(rated, trace_path=trace, trace_every=1)
    cols = plot.load_trace(trace)
    i_rated = P_RATED / (3 * 230.0) * math.sqrt(2)
    dist = analysis.current_distortion(cols, 0.5, 10, 50, i_rated)
    trd = max(v[1] for v in dist.values())
    odd = max(max(x for n, x in v[2].items() if n % 2) for v in dist.values())
    steps = []
    for t_step, p, q in ((0.8, -5500.0, 3000.0), (1.1, P_RATED, 0.0)):
        for key, target in (("p_w", p), ("q_var", q)):
            s, o = analysis.step_response(cols, key, t_step, target, P_RATED)
            steps.append((s, o))
    m = analysis.window(cols, 0.5, 10, 50)
    return {
        "scenario_speed_x": round(sc["duration_s"] / wall, 1),
        "scenario_wall_s": round(wall, 3),
        "rated_current_trd_pct": round(trd, 3),
        "rated_worst_odd_harmonic_pct": round(odd, 3),
        "rated_p_error_pct": round(abs(cols["p_w"][m].mean() + P_RATED) / P_RATED * 100, 3),
        "setpoint_settle_ms_worst": round(max(s for s, _ in steps) * 1000, 1),
        "setpoint_overshoot_pct_worst": round(max(o for _, o in steps), 2),
    }


def format_system(pll_rows, simfig):
    lines = []
    if pll_rows:
        lines.append("")
        lines.append("PLL (30 deg jump under 10 % neg. seq. + 5 % 5th + 5 % 7th; targets in "
                     "brackets)")
        lines.append("  tick_hz  f   settle[<=1]  err>1cyc[<1]  steady[<=.05]  "
                     "fx-float[<=.05]  f_noise mHz[<=1]  fstep ms[<=50]")
        for r in pll_rows:
            lines.append("  %6d  %2d   %6.2f cyc   %7.3f deg   %7.4f deg    %7.4f deg      "
                         "%7.3f          %6.1f" % (
                             r["tick_hz"], r["f_nom_hz"], r["settle_cycles"],
                             r["max_err_after_1_cycle_deg"], r["steady_err_deg"],
                             r["fixed_vs_float_deg"], r["freq_noise_err_mhz"],
                             r["fstep_settle_ms"]))
    if simfig:
        lines.append("")
        lines.append("simulated board (10 kHz tick, 11 kW, 50 Hz)")
        lines.append("  speed                      %.1f x real time [>= 20] (10 s session in "
                     "%.2f s)" % (simfig["scenario_speed_x"], simfig["scenario_wall_s"]))
        lines.append("  current TRD at rated       %.3f %% [<= 2.5], worst odd harmonic "
                     "%.3f %% [< 4]" % (simfig["rated_current_trd_pct"],
                                         simfig["rated_worst_odd_harmonic_pct"]))
        lines.append("  P error at rated           %.3f %% [<= 1]" % simfig["rated_p_error_pct"])
        lines.append("  setpoint steps             settle %.1f ms [<= 40], overshoot %.2f %% "
                     "[< 10]" % (simfig["setpoint_settle_ms_worst"],
                                 simfig["setpoint_overshoot_pct_worst"]))
    return "\n".join(lines)
