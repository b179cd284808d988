"""Thermal supervision (``firmware/thermal.py``): NTC conversion and plausibility, the
derating curve and its fixed point, the fan curve, validation of the thermal rows, and
closed loops against the sim plant's thermal model.

Closed loop (``HARNESS``): the plant's own thermal path (two nodes, losses from the RMS
current, fan with tach, NTC words; ``Plant._thermal_i_rms`` imposes the current
magnitude, ``slow(100.0)`` advances it 100 ms in 10 ms Euler steps) with
``thermal.step`` every 100 ms; the power limit caps the current magnitude, as the
supervisor caps the power command (the current loop settles in milliseconds, which is
nothing against the module's ~5 s and the heatsink's ~120 s). The same harness runs
under CPython and on the MicroPython unix runtime, with identical output.
"""

import math
import os
import random
import subprocess
import sys

import pytest

import params
import thermal
from v2g.common import paths, runtime

SIM_DIR = paths.REPO_ROOT / "boards" / "sim"
if str(SIM_DIR) not in sys.path:
    sys.path.insert(0, str(SIM_DIR))

# The closed-loop harness, as source: exec'd here and run as a script on MicroPython.
HARNESS = r'''
from array import array

import plant as plant_model
import thermal


def closed_loop(held, minutes, demand=1.0, ambient_c=40.0, events=(), dt_ms=100,
                board_thermal=None, words=None):
    """Run the plant's thermal path with thermal.step in the loop.
    demand: pu current asked for, a number or [(t_s, pu), ...]; events: [(t_s, plant
    event dict), ...]; words(plant, t_s) -> (module, heatsink) NTC words (default: the
    plant's). Returns a dict: peak_c, t_module_c, factors, journal, th, plant."""
    held = dict(held)
    th = thermal.Thermal(held, None, board_thermal)
    p = plant_model.Plant(ambient_c=ambient_c, main_closed=True)
    i_rated_rms = p.i_base_a / 1.4142135623730951
    sched = demand if isinstance(demand, (list, tuple)) else [(0, demand)]
    evs = sorted(events, key=lambda e: e[0])
    i = 0.0
    n = int(minutes * 60000 // dt_ms)
    # traces in preallocated arrays: lists of floats fragment MicroPython's heap
    out = {"peak_c": p.t_module_c, "factors": array("d", bytes(8 * n)), "journal": [],
           "t_module": array("d", bytes(8 * n)), "t_pred": array("d", bytes(8 * n))}
    for k in range(n):
        now_ms = k * dt_ms
        while evs and evs[0][0] * 1000 <= now_ms:
            p.event(evs.pop(0)[1])
        want = 0.0
        for t_s, pu in sched:
            if t_s * 1000 <= now_ms:
                want = pu
        w = words(p, now_ms / 1000.0) if words else p.ntc_raw()
        factor, fan_pct, new = th.step(now_ms, w, i, p.fan_tach_hz(), p.v_dc_v)
        for ev in new:
            out["journal"].append((now_ms,) + ev)
        p.fan(fan_pct)
        i = want if want < factor else factor
        p._thermal_i_rms = i * i_rated_rms
        p.slow(float(dt_ms))
        if p.t_module_c > out["peak_c"]:
            out["peak_c"] = p.t_module_c
        out["factors"][k] = factor
        out["t_module"][k] = p.t_module_c
        out["t_pred"][k] = th.t_pred_c if th.t_pred_c is not None else -999.0
    out["t_module_c"] = p.t_module_c
    out["th"] = th
    out["plant"] = p
    return out


def reversals(xs):
    """Direction changes of a sequence (a smooth limit has few; on/off cycling many)."""
    n = 0
    last = 0
    for k in range(1, len(xs)):
        d = (xs[k] > xs[k - 1]) - (xs[k] < xs[k - 1])
        if d and last and d != last:
            n += 1
        if d:
            last = d
    return n
'''

_NS = {}
exec(HARNESS, _NS)  # noqa: S102 - the harness is this file's own source
closed_loop = _NS["closed_loop"]
reversals = _NS["reversals"]


def held_of(**cfg):
    held, errors = params.validate(cfg)
    assert errors == [], errors
    return held


def codes(journal, kind):
    return [e[2] for e in journal if e[1] == kind]


# ---------------------------------------------------------------- NTC conversion

def test_conversion_matches_the_plant_divider_both_ways():
    import plant as plant_model

    p = plant_model.Plant()
    ntc = thermal._merged(thermal.NTC_DEFAULT, None)
    for t in (-39.0, -10.0, 0.0, 25.0, 40.0, 60.0, 85.0, 95.0, 120.0, 149.0):
        w = p._ntc_word(t)
        assert abs(thermal.c_to_word(t) - w) <= 0.5
        got, reason = thermal.convert(w, ntc)
        assert reason is None
        # one ADC count is ~0.006 C at 85 C and ~0.3 C at -40 C (the divider flattens)
        assert abs(got - t) < (0.35 if t < 0 else 0.06), (t, got)
    assert thermal.convert(32768, ntc)[0] == pytest.approx(25.0, abs=0.01)  # R = R25
    assert thermal.convert(30000, ntc)[0] > thermal.convert(31000, ntc)[0]  # hotter: lower


def test_steinhart_hart_and_calibration_offset():
    # Steinhart-Hart through three points of the beta curve reads the beta curve there
    def inv_t(t):
        return 1.0 / (t + 273.15)

    pts = [(t, math.log(10000.0 * math.exp(3950.0 * (inv_t(t) - inv_t(25.0)))))
           for t in (0.0, 50.0, 100.0)]
    # solve a + b L + c L^3 = 1/T (3x3, Cramer)
    rows = [(1.0, ln, ln ** 3, inv_t(t)) for t, ln in pts]

    def det(m):
        return (m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
                - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
                + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]))

    m = [r[:3] for r in rows]
    d = det(m)
    abc = []
    for col in range(3):
        mc = [list(r[:3]) for r in rows]
        for k in range(3):
            mc[k][col] = rows[k][3]
        abc.append(det(mc) / d)
    ntc = thermal._merged(thermal.NTC_DEFAULT, {"sh_abc": abc, "offset_c": [1.5, -0.5]})
    for t in (0.0, 50.0, 100.0):
        w = thermal.c_to_word(t)
        assert thermal.convert(w, ntc, 0)[0] == pytest.approx(t + 1.5, abs=1e-6)
        assert thermal.convert(w, ntc, 1)[0] == pytest.approx(t - 0.5, abs=1e-6)
    # board data in the Thermal object: a scalar offset applies to both channels
    th = thermal.Thermal(held_of(), {"offset_c": 2.0})
    w = int(thermal.c_to_word(50.0) + 0.5)
    th.step(0, (w, w), 0.0, 0.0)
    assert th.t_module_c == pytest.approx(52.0, abs=0.01)
    assert th.t_heatsink_c == pytest.approx(52.0, abs=0.01)
    with pytest.raises(ValueError, match="unknown key 'beta'"):
        thermal.Thermal(held_of(), {"beta": 3950})


@pytest.mark.parametrize("word,reason", [
    (65535, "open"), (65100, "open"), (0, "short"), (150, "short"),
    (int(thermal.c_to_word(-45.0)), "range"), (int(thermal.c_to_word(160.0)), "range"),
    (int(thermal.c_to_word(-35.0)), None), (int(thermal.c_to_word(145.0)), None),
])
def test_open_short_and_range(word, reason):
    ntc = thermal._merged(thermal.NTC_DEFAULT, None)
    assert thermal.convert(word, ntc)[1] == reason


def _w(t_c):
    return int(thermal.c_to_word(t_c) + 0.5)


class Feed:
    """Drives a Thermal with NTC words every 100 ms; temperatures move towards their
    targets at 1 C per sample at most (a faster step is an implausible slope)."""

    def __init__(self, th):
        self.th = th
        self.t_ms = 0
        self.tm = None
        self.ths = None
        self.journal = []

    def hold(self, seconds, tm_c, th_c, i_pu=0.0, tach_hz=200.0):
        out = None
        for _ in range(int(seconds * 10 + 0.5)):
            self.tm = tm_c if self.tm is None else self.tm + max(-1.0, min(1.0, tm_c - self.tm))
            self.ths = th_c if self.ths is None else self.ths + max(-1.0, min(1.0,
                                                                          th_c - self.ths))
            out = self.th.step(self.t_ms, (_w(self.tm), _w(self.ths)), i_pu, tach_hz)
            self.journal += [(self.t_ms,) + ev for ev in out[2]]
            self.t_ms += 100
        return out


def test_open_ntc_faults_after_three_samples_and_caps_the_power():
    th = thermal.Thermal(held_of())
    Feed(th).hold(5.0, 60.0, 50.0)
    assert th.faults == {} and th.factor == 1.0
    j = []
    for k, t in enumerate(range(5000, 5400, 100)):
        f, fan, evs = th.step(t, (65535, _w(50.0)), 0.0, 200.0)
        j += evs
        if k < 2:
            assert f == 1.0 and th.faults == {}  # a glitch holds the last good value
    assert [e[:2] for e in j if e[0] == "fault"] == [("fault", "0x51")]
    assert th.faults["0x51"].startswith("open word=65535")
    assert f == pytest.approx(0.5)  # th_sensor_fault_pct
    assert fan == 100
    # the model stands in: module = heatsink + modelled rise, continuing from the last
    # measured rise (10 K) towards the rise of the present losses (none: 0 K, tau 5 s)
    assert th.t_module_c == pytest.approx(60.0, abs=1.0)
    for t in range(5400, 30000, 100):
        th.step(t, (65535, _w(50.0)), 0.0, 200.0)
    assert th.t_module_c == pytest.approx(50.0, abs=0.1) and th.factor == 0.5
    # both NTCs gone: nothing left to protect with -> limit 0
    for t in range(30000, 30400, 100):
        f, fan, evs = th.step(t, (65535, 0), 0.0, 200.0)
    assert "0x52" in th.faults and f == 0.0 and th.derate_pct == 100
    assert th.t_module_c is None
    # plausible again for 10 s: faults clear, the limit comes back at RESTORE_PU_S
    j = []
    for t in range(30400, 60000, 100):
        f, fan, evs = th.step(t, (_w(52.0), _w(50.0)), 0.0, 200.0)
        j += evs
    assert sorted(e[1] for e in j if e[0] == "clear") == ["0x51", "0x52"]
    assert th.faults == {} and f == 1.0


def test_implausible_slope_is_a_sensor_fault_but_a_single_spike_is_not():
    th = thermal.Thermal(held_of())
    fd = Feed(th)
    fd.hold(3.0, 60.0, 50.0)
    f, _, evs = th.step(3000, (_w(90.0), _w(50.0)), 0.0, 200.0)  # +30 C in 0.1 s
    assert evs == [] and f == 1.0 and th.t_module_c == pytest.approx(60.0, abs=0.01)
    fd.t_ms = 3100
    fd.hold(1.9, 60.0, 50.0)
    assert th.faults == {}
    j = []
    for t in range(5000, 5300, 100):  # stays 30 C away: not a temperature
        j += th.step(t, (_w(90.0), _w(50.0)), 0.0, 200.0)[2]
    assert [e[1] for e in j if e[0] == "fault"] == ["0x51"]
    assert th.faults["0x51"].startswith("slope")


def test_no_reading_at_start_up_means_no_power():
    th = thermal.Thermal(held_of())
    f, fan, _ = th.step(0, (65535, 65535), 0.0, 0.0)
    assert f == 0.0 and fan == 100 and th.t_module_c is None


# ---------------------------------------------------------------- curves

def test_fixed_point_solver_against_bisection():
    rnd = random.Random(7)
    curve = ((80.0, 1.0), (85.0, 0.5), (95.0, 0.0))
    for _ in range(2000):
        a = rnd.uniform(40.0, 100.0)
        b = rnd.choice((0.0, rnd.uniform(0.0, 0.2)))
        pc, ps = rnd.uniform(0.0, 150.0), rnd.uniform(0.0, 120.0)
        got = thermal.solve_limit(curve, a, b, pc, ps)

        def h(i):
            return thermal.interp(curve, a + b * (pc * i * i + ps * i)) - i

        if h(1.0) >= 0:
            want = 1.0
        elif h(0.0) <= 0:
            want = 0.0
        else:
            lo, hi = 0.0, 1.0
            for _ in range(60):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if h(mid) > 0 else (lo, mid)
            want = lo
        assert got == pytest.approx(want, abs=1e-9), (a, b, pc, ps)


def test_limit_follows_the_curve_with_hysteresis_on_the_way_up():
    # horizon 0: the prediction is the (filtered) measured module temperature; the
    # module stays 2 C over the heatsink, as it would at ~0.2 pu (i_pu 0.2)
    th = thermal.Thermal(held_of(th_horizon_s=0))
    fd = Feed(th)
    assert fd.hold(10, 70.0, 68.0, 0.2)[0] == 1.0
    assert th.derated is False and th.derate_pct == 0
    f = fd.hold(20, 82.0, 80.0, 0.2)[0]
    assert f == pytest.approx(0.8, abs=1e-3) and th.derated and th.derate_pct == 20
    assert fd.hold(20, 84.0, 82.0, 0.2)[0] == pytest.approx(0.6, abs=1e-3)
    assert fd.hold(20, 90.0, 88.0, 0.2)[0] == pytest.approx(0.25, abs=1e-3)
    # cooler by less than th_hyst_c (2 C): held
    assert fd.hold(20, 88.5, 86.5, 0.2)[0] == pytest.approx(0.25, abs=1e-3)
    # cooler by more: restored to curve(T + 2 C), at most RESTORE_PU_S
    f0 = th.factor
    f = fd.hold(1, 82.0, 80.0, 0.2)[0]
    assert 0.25 < f <= f0 + thermal.RESTORE_PU_S * 1.0 + 1e-9
    assert fd.hold(30, 82.0, 80.0, 0.2)[0] == pytest.approx(0.6, abs=1e-3)
    fd.hold(40, 70.0, 68.0, 0.2)
    assert th.factor == 1.0 and th.derate_pct == 0 and not th.derated
    derates = [e[3] for e in fd.journal if e[1] == "derate"]
    assert derates[0] != "0%" and derates[-1] == "0%"
    assert th.faults == {}


def test_over_temperature_trips_and_clears_below_the_derated_point():
    th = thermal.Thermal(held_of(th_horizon_s=0))
    fd = Feed(th)
    fd.hold(5, 80.0, 78.0)
    fd.hold(10, 96.0, 94.0)
    assert th.overtemp and th.factor == 0.0 and th.faults["0x50"].startswith("t_module=95")
    assert [e[2] for e in fd.journal if e[1] == "fault"] == ["0x50"]
    fd.hold(20, 84.0, 82.0)  # below 85 but not below 85 - 2
    assert th.overtemp and th.factor == 0.0
    fd.hold(20, 82.0, 80.0)
    assert not th.overtemp and "0x50" not in th.faults
    assert [e[2] for e in fd.journal if e[1] == "clear"] == ["0x50"]
    assert th.factor == pytest.approx(0.6, abs=1e-3)  # back to curve(82 + 2)


def test_fan_curve_minimum_spin_and_hysteresis():
    held = held_of(fan_duty1_pct=10, fan_min_pct=20)
    th = thermal.Thermal(held)
    assert th.fan_duty(39.9) == 0
    assert th.fan_duty(40.0) == 20  # curve says 10 %, the minimum spin is 20 %
    assert th.fan_duty(55.0) == 50
    assert th.fan_duty(60.0) == 63  # 50 + (75 - 50) / 2, rounded
    assert th.fan_duty(75.0) == 100 and th.fan_duty(140.0) == 100
    # hysteresis (3 C): up at once, down only 3 C below the highest
    fd = Feed(th)
    assert fd.hold(10, 61.0, 50.0)[1] == 65
    assert fd.hold(5, 58.5, 50.0)[1] == 65
    assert fd.hold(10, 54.0, 50.0)[1] == th.fan_duty(57.0) == 55
    assert fd.hold(20, 38.0, 30.0)[1] == 20  # 38 + 3 still above 40
    assert fd.hold(10, 36.0, 30.0)[1] == 0


def test_fan_fail_needs_the_full_time_and_a_duty_that_should_spin():
    th = thermal.Thermal(held_of())
    fd = Feed(th)
    fd.hold(3, 60.0, 50.0, 0.5, 126.0)  # 63 % duty
    fd.hold(2.9, 60.0, 50.0, 0.5, 0.0)
    assert fd.journal == [] and not th.fan_failed  # < fan_fail_s
    fd.hold(0.6, 60.0, 50.0, 0.5, 0.0)
    assert th.fan_failed and [e[2] for e in fd.journal if e[1] == "fault"] == ["0x53"]
    assert th.factor == pytest.approx(0.5) and th.fan_duty_pct == 100
    fd.hold(5.5, 60.0, 50.0, 0.5, 180.0)
    assert not th.fan_failed and [e[2] for e in fd.journal if e[1] == "clear"] == ["0x53"]
    # fan off, or a duty whose tach would be below twice the threshold: no check at all
    th = thermal.Thermal(held_of(fan_t1_c=30, fan_duty1_pct=5, fan_min_pct=5))
    Feed(th).hold(60, 31.0, 30.0, 0.0, 0.0)
    assert th.fan_duty_pct == 7 and not th.fan_failed  # 14 Hz expected: below 2 x 20


def test_steps_between_periods_return_the_last_outputs():
    a = thermal.Thermal(held_of())
    b = thermal.Thermal(held_of())
    for t in range(0, 60000, 10):
        temp = 70.0 + t / 2000.0
        ra = a.step(t, (_w(temp), _w(temp - 10.0)), 0.8, 150.0)
        if t % 100 == 0:
            rb = b.step(t, (_w(temp), _w(temp - 10.0)), 0.8, 150.0)
            assert ra == rb
        else:
            assert ra[2] == [] or ra[2] == ()


# ---------------------------------------------------------------- validation

def test_thermal_rows_are_pids_80_to_99_with_sane_defaults():
    rows = [r for r in params.TABLE if 80 <= r[params.PID] <= 99]
    assert [r[params.PID] for r in rows] == list(range(80, 100))
    assert params.row("th_derated_c")[params.DEFAULT] == 85
    held = params.defaults()
    assert params.validate_thermal(held) == []
    for r in rows:  # every temperature row inside the sensor range
        if r[params.UNIT] == "C" and not r[params.NAME].endswith("hyst_c"):
            assert thermal.SENSOR_MIN_C <= r[params.MIN] < r[params.MAX] <= thermal.SENSOR_MAX_C


@pytest.mark.parametrize("cfg,fragment", [
    ({"th_derate_start_c": 86}, "key 'th_derate_start_c': value 86 must be below "
                                "th_derated_c 85; allowed 40..84 C"),
    ({"th_derated_c": 96}, "key 'th_derated_c': value 96 must be below th_trip_c 95; "
                           "allowed 50..94 C"),
    ({"fan_t2_c": 40}, "key 'fan_t2_c': value 40 must exceed fan_t1_c 40 (fan curve "
                       "temperatures increase); allowed 41..150 C"),
    ({"fan_duty3_pct": 40}, "key 'fan_duty3_pct': value 40 below fan_duty2_pct 50 (the "
                            "fan curve must not fall); allowed 50..100 %"),
])
def test_cross_check_messages_name_key_value_and_range(cfg, fragment):
    held, errors = params.validate(cfg)
    errs = params.validate_thermal(held)
    assert errs == [fragment]
    # table ranges are checked by params.validate itself
    _, errors = params.validate({"th_trip_c": 130})
    assert errors == ["key 'th_trip_c': value 130 outside 60..125 C"]


# ---------------------------------------------------------------- closed loop (plant)

def test_rated_discharge_at_40c_stays_below_86c_and_derates_smoothly():
    held = held_of()
    r = closed_loop(held, minutes=15)
    # the plant settles at ~90 C without derating; with it the module stays below 85
    assert 80.0 < r["peak_c"] <= 85.0, r["peak_c"]
    f = r["factors"]
    assert min(f) > 0.8 and f[-1] < 0.95  # reduced, not switched off
    assert reversals(f) == 0  # falls monotonically: no on/off cycling
    assert max(abs(f[k] - f[k - 1]) for k in range(1, len(f))) < 0.01  # per 100 ms
    assert r["th"].derated and r["th"].faults == {}
    assert codes(r["journal"], "fault") == []
    assert 1 <= len(codes(r["journal"], "derate")) <= 3
    print("\n40 C ambient, rated: module peak %.2f C, limit settles at %.1f %%"
          % (r["peak_c"], 100 * f[-1]))


@pytest.mark.parametrize("cfg", [{"th_derate_start_c": 84}, {"th_derate_start_c": 84,
                                                             "th_derated_pct": 0}])
def test_a_late_initiation_temperature_still_holds_85c(cfg):
    r = closed_loop(held_of(**cfg), minutes=15)
    assert r["peak_c"] <= 85.0, r["peak_c"]
    assert reversals(r["factors"]) == 0
    print("\n%s: module peak %.2f C" % (cfg, r["peak_c"]))


def test_prediction_covers_a_slow_sensor():
    """An NTC that lags the module by 20 s (thermal coupling): acting on the measurement
    overshoots the curve's ceiling by ~0.9 C; predicting 20 s ahead keeps it ~0.1 C."""
    lag = {}

    def lagged(p, t_s):
        if "m" not in lag:
            lag["m"], lag["h"] = p.t_module_c, p.t_heatsink_c
        lag["m"] += (p.t_module_c - lag["m"]) * 0.1 / 20.0
        lag["h"] += (p.t_heatsink_c - lag["h"]) * 0.1 / 20.0
        return _w(lag["m"]), _w(lag["h"])

    peaks = {}
    for horizon in (0, 20):
        lag.clear()
        r = closed_loop(held_of(th_derate_start_c=84, th_derated_pct=0,
                                th_horizon_s=horizon), minutes=15, words=lagged)
        peaks[horizon] = r["peak_c"]
    assert peaks[20] <= 84.5 < peaks[0] <= 86.0, peaks
    print("\n20 s NTC lag, curve 84..85 C: peak %.2f C (horizon 0) vs %.2f C (20 s)"
          % (peaks[0], peaks[20]))


@pytest.mark.parametrize("scale", [0.5, 1.3])
def test_a_wrong_loss_model_is_corrected_or_conservative(scale):
    model = {"p_cond_w": 109.8 * scale, "p_sw_w": 89.9 * scale}
    r = closed_loop(held_of(), minutes=15, board_thermal=model)
    assert r["peak_c"] <= 85.0
    assert reversals(r["factors"]) == 0
    if scale < 1:  # reads low: the measured heat flow takes over, same as exact
        assert r["peak_c"] == pytest.approx(81.2, abs=0.2)
    else:  # reads high: derates earlier
        assert r["peak_c"] < 80.0


def test_limit_is_restored_with_hysteresis_when_the_ambient_drops():
    held = held_of()
    r = closed_loop(held, minutes=30, events=[(900, {"ambient_c": 25.0})])
    f = r["factors"]
    k_drop = 9000
    assert f[k_drop - 1] < 0.95  # derated at 40 C
    assert reversals(f) == 1  # down while heating, up after the drop: once
    # the limit does not rise until the predicted module temperature has fallen by the
    # hysteresis (it falls faster than the measured one: the heatsink sheds more)
    k_up = next(k for k in range(k_drop, len(f)) if f[k] > f[k - 1])
    t_held = 80.0 + (1.0 - f[k_up - 1]) * 10.0  # the curve's temperature for the limit held
    assert r["t_pred"][k_up] <= t_held - 2.0 + 1e-6
    assert r["t_module"][k_drop] > r["t_module"][k_up]
    assert f[-1] == 1.0 and r["th"].derate_pct == 0 and not r["th"].derated
    assert codes(r["journal"], "derate")[-1] == ""  # the last derate event: back to 0 %
    assert [e[3] for e in r["journal"] if e[1] == "derate"][-1] == "0%"
    rise = max(f[k] - f[k - 1] for k in range(1, len(f)))
    assert rise <= thermal.RESTORE_PU_S * 0.1 + 1e-9


def test_fan_failure_is_detected_and_derated():
    r = closed_loop(held_of(), minutes=20, events=[(300, {"fan_fail": True})])
    j = r["journal"]
    fails = [e for e in j if e[1] == "fault" and e[2] == "0x53"]
    assert len(fails) == 1
    assert 300000 + 3000 <= fails[0][0] <= 300000 + 3500  # fan_fail_s after the failure
    f = r["factors"]
    assert max(f[3040:]) <= 0.5  # th_fan_fail_pct from detection on
    assert r["peak_c"] <= 86.0, r["peak_c"]
    assert r["th"].fan_duty_pct == 100 and r["th"].fan_failed
    print("\nfan failure: module peak %.2f C, limit %.1f %%" % (r["peak_c"], 100 * f[-1]))


def test_open_module_ntc_is_a_sensor_fault_with_a_safe_derate():
    r = closed_loop(held_of(), minutes=10, events=[(300, {"ntc_open": True})])
    j = r["journal"]
    fault = [e for e in j if e[1] == "fault"]
    assert [(e[2], e[3]) for e in fault] == [("0x51", "NTC_MODULE_FAULT")]
    assert 300000 < fault[0][0] <= 300300
    f = r["factors"]
    assert max(f[3003:]) <= 0.5
    assert r["peak_c"] <= 85.0
    th = r["th"]
    # the modelled module temperature tracks the real one within a few degrees
    assert abs(th.t_module_c - r["t_module_c"]) < 3.0
    assert "0x51" in th.faults and th.fan_duty_pct == 100


def test_noisy_ntc_readings_do_not_cycle_the_limit():
    rnd = random.Random(3)

    def noisy(p, t_s):
        return (_w(p.t_module_c + rnd.gauss(0.0, 0.3)),
                _w(p.t_heatsink_c + rnd.gauss(0.0, 0.3)))

    r = closed_loop(held_of(), minutes=20, words=noisy)
    assert reversals(r["factors"]) <= 2
    assert r["peak_c"] <= 85.0
    assert codes(r["journal"], "fault") == []


# ---------------------------------------------------------------- both runtimes

SAME_BOTH_RUNTIMES = HARNESS + r'''
import sys
import params

try:
    from time import ticks_us, ticks_diff
except ImportError:
    ticks_us = None


def ints(x):
    return "none" if x is None else "%d" % int(x * 1000000)


cases = (({}, [], 12), ({"th_derate_start_c": 84}, [(300, {"fan_fail": True})], 10),
         ({"th_horizon_s": 10}, [(120, {"ntc_open": True})], 5),
         ({}, [(400, {"ambient_c": 25.0})], 12))
for cfg, events, minutes in cases:
    held, errors = params.validate(cfg)
    r = closed_loop(held, minutes, events=events)
    f = r["factors"]
    print("peak", ints(r["peak_c"]), "end", ints(r["t_module_c"]), "rev", reversals(f))
    for k in range(0, len(f), 300):
        print(k, ints(f[k]), ints(r["t_module"][k]))
    th = r["th"]
    print("th", ints(th.t_module_c), ints(th.t_heatsink_c), ints(th.t_pred_c),
          ints(th.q_ha), th.derate_pct, th.fan_duty_pct)
    for ev in r["journal"]:
        print(ev[0], ev[1], ev[2], ev[3])  # the detail's float formatting may differ
if ticks_us is not None and sys.implementation.name == "micropython":
    import thermal
    held, _ = params.validate({})
    th = thermal.Thermal(held)
    t0 = ticks_us()
    for k in range(2000):
        th.step(100 * k, (9000 - k, 12000 - k), 0.9, 150.0, 800.0)
    print("cost_us_per_period %d" % (ticks_diff(ticks_us(), t0) // 2000), file=sys.stderr)
'''


def test_cpython_and_micropython_agree(tmp_path, micropython_exe):
    script = tmp_path / "same.py"
    script.write_text(SAME_BOTH_RUNTIMES)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(paths.SHIM_DIR), str(paths.FIRMWARE_DIR),
                                         str(SIM_DIR)])
    cp = subprocess.run([sys.executable, str(script)], capture_output=True, env=env,
                        timeout=300)
    assert cp.returncode == 0, cp.stderr.decode()
    mp = runtime.run_micropython(script, extra_path=[SIM_DIR], exe=micropython_exe,
                                 timeout=300)
    assert mp.returncode == 0, mp.stderr.decode()
    assert cp.stdout == mp.stdout
    out = cp.stdout.decode()
    assert "0x53 FAN_FAIL" in out and "0x51 NTC_MODULE_FAULT" in out
    print("\nthermal step on the unix runtime:", mp.stderr.decode().strip())
