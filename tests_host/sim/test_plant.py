"""The sim board's plant model (``boards/sim/plant.py``), driven without firmware by
``boards/sim/plant_runner.py`` on the MicroPython unix runtime (and under CPython), outputs
analysed with numpy.

Checks: grid source (amplitude, frequency, ROCOF, phase jump, harmonics and their
sequences, negative sequence, noise, the true angle, ADC scaling); the L filter against
the analytic phasor solution at 2, 10 and 20 kHz; the dead-time error; the islanded RLC
(matched: voltage holds; mismatched: it moves); DC side (power balance, pre-charge);
contactor delay, weld and aux; thermal steady state and time constants, fan and fan
failure; NTC words and an open NTC; input validation; determinism, CPython = unix runtime
bit for bit; the tick path allocates nothing (heap_lock) and its cost is printed.
"""

import contextlib
import io
import json
import math
import sys

import numpy as np
import pytest

from v2g.common import paths, twin

SIM_DIR = paths.BOARDS_DIR / "sim"
RUNNER = SIM_DIR / "plant_runner.py"
if str(SIM_DIR) not in sys.path:
    sys.path.append(str(SIM_DIR))  # after firmware/: nothing there is shadowed

import plant as plant_mod  # noqa: E402
import plant_runner  # noqa: E402

TH = 2.0 * math.pi / 3.0
ALL_TRUTH = ["t_s", "grid_theta_rad", "v_a_pu", "v_b_pu", "v_c_pu", "i_a_pu", "i_b_pu",
             "i_c_pu", "p_w", "q_var", "v_dc_v", "t_module_c", "t_heatsink_c", "soc",
             "energized", "contactor_closed", "island", "i_bat_a", "p_loss_w"]


# ---------------------------------------------------------------- helpers

def run_mp(run_micropython, tmp_path, spec, name="spec.json"):
    path = tmp_path / name
    path.write_text(json.dumps(spec))
    r = run_micropython(RUNNER, (str(path),), extra_path=(SIM_DIR,))
    out = r.stdout.decode()
    assert r.returncode == 0 and out.rstrip().endswith("END"), out[-2000:] + r.stderr.decode()
    return out


def run_cpython(spec):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        plant_runner.run(spec)
    return buf.getvalue() + "END\n"


def rows(out):
    """'R n w0..w6 truth...' lines -> (ticks, adc words, truth floats) arrays."""
    recs = [line.split() for line in out.splitlines() if line.startswith("R ")]
    n = np.array([int(r[1]) for r in recs])
    adc = np.array([[int(x) for x in r[2:9]] for r in recs])
    tr = np.array([[float(x) for x in r[9:]] for r in recs]) if len(recs[0]) > 9 else None
    return n, adc, tr


def phasor(x, t, f, order=1):
    """Complex amplitude of the component at order * f (x = Re(X e^{j w t}))."""
    return 2.0 * np.mean(x * np.exp(-1j * 2 * np.pi * f * order * t))


def wrap(a):
    return (a + math.pi) % (2 * math.pi) - math.pi


def sym(pa, pb, pc):
    """Symmetrical components (positive, negative, zero) of three phasors."""
    a = np.exp(1j * TH)
    return ((pa + a * pb + a * a * pc) / 3, (pa + a * a * pb + a * pc) / 3, (pa + pb + pc) / 3)


def grid_spec(ticks, events, truth=("t_s", "grid_theta_rad", "v_a_pu", "v_b_pu", "v_c_pu"),
              frm=0, every=1, **plant_kw):
    return {"plant": plant_kw, "ticks": ticks, "events": events,
            "record": {"every": every, "from": frm, "truth": list(truth)}}


# ---------------------------------------------------------------- grid source

def test_balanced_grid_amplitude_frequency_angle_and_adc(run_micropython, tmp_path):
    spec = grid_spec(2000, [[0, {"v_pu": [1.0, 0.9, 1.1]}]], theta0_deg=30.0)
    n, adc, tr = rows(run_mp(run_micropython, tmp_path, spec))
    t, th, va, vb, vc = tr.T
    for k, (v, amp) in enumerate(((va, 1.0), (vb, 0.9), (vc, 1.1))):
        ph = phasor(v, t, 50.0)
        assert abs(abs(ph) - amp) < 0.005 * amp
        assert abs(wrap(np.angle(ph) - (math.radians(30) - k * TH))) < 1e-3
        # ADC words: 32768 + round(v_pu * 8192), within the rounding of the truth print
        assert np.max(np.abs(adc[:, k] - (32768 + np.round(v * 8192)))) <= 1
    # the currents read zero with the gates off; VDC 0 with the link discharged
    assert np.all(adc[:, 3:6] == 32768) and np.all(adc[:, 6] == 0)
    # frequency from the zero crossings of phase a
    s = np.signbit(va)
    idx = np.nonzero(s[1:] != s[:-1])[0]
    tz = t[idx] - va[idx] * (t[idx + 1] - t[idx]) / (va[idx + 1] - va[idx])
    f_est = 1.0 / (2 * np.mean(np.diff(tz)))
    assert abs(f_est - 50.0) < 0.0025 * 50
    # true angle: positive sequence of phase a, v_a = V cos(theta), in [0, 2 pi)
    assert np.all((th >= 0) & (th < 2 * math.pi))
    v_pos = abs(sym(*(phasor(v, t, 50.0) for v in (va, vb, vc)))[0])
    assert abs(v_pos - 1.0) < 1e-3
    assert np.max(np.abs(np.unwrap(th) - (math.radians(30) + 2 * math.pi * 50 * t))) < 1e-6


def test_frequency_step_rocof_and_phase_jump(run_micropython, tmp_path):
    fs = 10000
    ev = [[0, {"f_hz": 60.0}], [3000, {"rocof_hz_s": -20.0, "until_hz": 55.0}],
          [8000, {"phase_jump_deg": 20.0}]]
    spec = grid_spec(12000, ev, truth=("t_s", "grid_theta_rad", "v_a_pu", "v_b_pu", "v_c_pu",
                                      "grid_f_hz"))
    n, adc, tr = rows(run_mp(run_micropython, tmp_path, spec))
    t, th, va, vb, vc, f = tr.T
    assert abs(f[2999] - 60.0) < 1e-6
    # ramp: -20 Hz/s from 60 Hz, ends at 55 Hz after 0.25 s
    k = 3000 + 1000
    assert abs(f[k] - (60.0 - 20.0 * 0.1)) < 0.01
    assert abs(f[6000] - 55.0) < 1e-6
    # frequency from the phase-a waveform in the flat parts
    for lo, hi, f_true in ((0, 3000, 60.0), (6000, 8000, 55.0)):  # whole cycles
        ph1 = phasor(va[lo:hi], t[lo:hi], f_true)
        assert abs(abs(ph1) - 1.0) < 0.005
        s = np.signbit(va[lo:hi])
        idx = lo + np.nonzero(s[1:] != s[:-1])[0]
        tz = t[idx] - va[idx] * (t[idx + 1] - t[idx]) / (va[idx + 1] - va[idx])
        assert abs(1.0 / (2 * np.mean(np.diff(tz))) - f_true) < 0.0025 * f_true
    d_th = np.diff(np.unwrap(th[6000:8000]))
    assert abs(np.mean(d_th) * fs / (2 * math.pi) - 55.0) < 1e-6
    # phase jump of +20 deg at tick 8000: the angle and the waveform both move
    jump = np.unwrap(th)[8000] - np.unwrap(th)[7999] - 2 * math.pi * 55.0 / fs
    assert abs(jump - math.radians(20)) < 1e-6
    before = np.angle(phasor(va[6000:8000], t[6000:8000], 55.0))
    after = np.angle(phasor(va[8000:10000], t[8000:10000], 55.0))
    assert abs(wrap(after - before - math.radians(20))) < 0.005
    # v_a = V cos(theta) all along (balanced, unit amplitude)
    assert np.max(np.abs(va - np.cos(th))) < 2e-4


def test_harmonics_negative_sequence_noise(run_micropython, tmp_path):
    harm = [{"order": 5, "pu": 0.05, "phase_deg": 30}, {"order": 7, "pu": 0.03},
            {"order": 3, "pu": 0.02, "phase_deg": -45}, {"order": 11, "pu": 0.01}]
    ev = [[0, {"harmonics": harm, "neg_seq_pu": 0.1, "phase_jump_deg": [0, 10, 0]}]]
    spec = grid_spec(4000, ev)
    n, adc, tr = rows(run_mp(run_micropython, tmp_path, spec))
    t, th, va, vb, vc = tr.T
    ph = [[phasor(v, t, 50.0, h) for v in (va, vb, vc)] for h in (1, 3, 5, 7, 11)]
    # fundamental: per-phase jump on b, plus 0.1 pu negative sequence
    pos, neg, zero = sym(*ph[0])
    fund_b = np.exp(1j * (math.radians(10) - TH))
    pos_exp, neg_exp, _ = sym(1.0, fund_b, np.exp(1j * TH))
    assert abs(abs(pos) - abs(pos_exp)) < 0.005 * abs(pos_exp)
    assert abs(wrap(np.angle(pos) - np.angle(pos_exp))) < 1e-3
    # negative sequence: the jump's own part plus 0.1 pu at the positive sequence angle
    assert abs(neg - (neg_exp + 0.1 * np.exp(1j * np.angle(pos_exp)))) < 0.0005
    # harmonics: magnitudes per phase and their natural sequences
    for (h, pu), phs in zip(((3, 0.02), (5, 0.05), (7, 0.03), (11, 0.01)), ph[1:]):
        for p in phs:
            assert abs(abs(p) - pu) < 0.005 * pu, (h, p)
        s_pos, s_neg, s_zero = (abs(x) for x in sym(*phs))
        want = {3: s_zero, 5: s_neg, 7: s_pos, 11: s_neg}[h]
        assert abs(want - pu) < 0.005 * pu, h
    # harmonic phase relative to h times the positive-sequence angle
    d = np.angle(pos)
    assert abs(np.angle(ph[2][0] * np.exp(-1j * 5 * d)) - math.radians(30)) < 0.005
    # noise: uniform, rms as asked, deterministic
    spec = grid_spec(4000, [[0, {"noise_pu_rms": 0.01}]])
    n, adc, tr = rows(run_mp(run_micropython, tmp_path, spec))
    t, th, va, vb, vc = tr.T
    resid = np.concatenate([v - np.cos(th - k * TH) for k, v in enumerate((va, vb, vc))])
    assert abs(np.sqrt(np.mean(resid ** 2)) - 0.01) < 0.0005
    assert np.max(np.abs(resid)) <= 0.01 * math.sqrt(3) + 1e-4


# ---------------------------------------------------------------- converter and filter

@pytest.mark.parametrize("tick_hz", [2000, 10000, 20000])
def test_l_filter_matches_analytic_phasor(run_micropython, tmp_path, tick_hz):
    """Duties for u = U cos(theta + phi) taken at mid-tick and held over the tick, no dead
    time. Sampled at the ticks, the steady current is the analytic phasor solution of
    L di/dt = v - u - R i: the grid part V / (R + jX), the held converter voltage's part
    b U / (e^{jx} - a e^{-jx}) (exact for a held input: a = exp(-R T / L),
    b = (1 - a) / R, x = w T / 2; ~ U / sinc(x) / (R + jX), the held steps' ripple
    aliases onto the fundamental when sampled)."""
    u_pu, phi = 0.9, -8.0
    ticks = int(0.6 * tick_hz)
    spec = {"plant": {"tick_hz": tick_hz, "main_closed": True, "pwm_period_counts": 16384,
                      "dead_time_ns": 0},
            "ticks": ticks, "drive": {"mode": "sine", "u_pu": u_pu, "phase_deg": phi},
            "record": {"every": 1, "from": ticks - int(0.2 * tick_hz),
                       "truth": ["t_s", "v_a_pu", "i_a_pu", "i_b_pu", "i_c_pu", "p_w",
                                 "q_var"]}}
    n, adc, tr = rows(run_mp(run_micropython, tmp_path, spec))
    t, va, ia, ib, ic, p, q = tr.T
    r_pu, l_pu, w, T = 0.005, 0.08 / (2 * math.pi * 50), 2 * math.pi * 50, 1.0 / tick_hz
    a = math.exp(-r_pu * T / l_pu)
    b = (1 - a) / r_pu
    x = w * T / 2
    u = u_pu * np.exp(1j * math.radians(phi))
    v = phasor(va, t, 50.0)
    assert abs(v - 1.0) < 1e-4
    i_exp = v / (r_pu + 1j * w * l_pu) - b * u / (np.exp(1j * x) - a * np.exp(-1j * x))
    # the continuous-time textbook phasor is within a few % (ZOH aliasing ~ x**2/6 of U)
    i_cont = (v - u) / (r_pu + 1j * w * l_pu)
    assert abs(i_cont - i_exp) < 0.05 * abs(i_exp)
    for k, i in enumerate((ia, ib, ic)):
        got = phasor(i, t, 50.0) * np.exp(1j * k * TH)
        assert abs(got - i_exp) < 0.01 * abs(i_exp), (got, i_exp)
    # p > 0 import, q > 0 absorbing: S = 1.5 V conj(I) with I into the converter
    s = v * np.conj(i_exp) * 11000.0
    assert abs(np.mean(p) - s.real) < 0.01 * abs(s)
    assert abs(np.mean(q) - s.imag) < 0.01 * abs(s)


def test_dead_time_error_opposes_the_current(run_micropython, tmp_path):
    """The dead-time error acts like a voltage of (4/pi) * td/T * v_dc in phase with the
    current into the converter (describing function of sign(i))."""
    base = {"main_closed": True, "pwm_period_counts": 16384}
    res = {}
    for td in (0, 500):
        spec = {"plant": dict(base, dead_time_ns=td), "ticks": 6000,
                "drive": {"mode": "sine", "u_pu": 0.9, "phase_deg": -8.0},
                "record": {"every": 1, "from": 4000, "truth": ["t_s", "v_a_pu", "i_a_pu",
                                                               "v_dc_v"]}}
        n, adc, tr = rows(run_mp(run_micropython, tmp_path, spec))
        res[td] = (phasor(tr[:, 2], tr[:, 0], 50.0), tr[-1, 3])
    i0, vdc = res[0]
    u_dt = 500e-9 * 10000 * vdc / (230 * math.sqrt(2))
    # iterate the describing-function solution: I = I0 - (4/pi) u_dt e^{j arg I} / Z
    i1 = i0
    for _ in range(20):
        i1 = i0 - 4 / math.pi * u_dt * np.exp(1j * np.angle(i1)) / (0.005 + 0.08j)
    got = res[500][0]
    assert abs(got - i1) < 0.1 * abs(i1 - i0)
    assert abs(got) < abs(i0)


def test_gates_off_no_current_and_energized_flag():
    p = plant_mod.Plant(main_closed=True)
    from array import array
    raw = array("i", [0] * 7)
    pw = array("i", [2500, 20, 1250, 1250, 1250])
    for _ in range(50):
        p.advance(pw, 1)
    assert p.truth()["energized"] == 1 and abs(p.truth()["i_a"]) > 1.0
    p.advance(None, 0)
    tr = p.truth()
    assert tr["energized"] == 0 and tr["i_a"] == tr["i_b"] == tr["i_c"] == 0.0
    p.sample(raw)
    assert list(raw[3:6]) == [32768] * 3
    assert raw[6] == round(p.v_dc_v / (230 * math.sqrt(2)) * 16384)
    # the cheap trace tuple carries the same numbers as truth()
    p.advance(pw, 1)
    tr = p.truth()
    tv = dict(zip(p.TRACE_KEYS, p.trace_values()))
    for key, value in tv.items():
        assert value == pytest.approx(tr[key], rel=1e-12, abs=1e-9), key
    # switching with the contactors open: not energized
    q = plant_mod.Plant()
    q.advance(pw, 1)
    assert q.truth()["energized"] == 0


# ---------------------------------------------------------------- island

def _island_run(run_micropython, tmp_path, load=None):
    ev = {"island": True}
    if load:
        ev["island_load"] = load
    spec = {"plant": {"main_closed": True}, "ticks": 6000, "events": [[2000, ev]],
            "drive": {"mode": "current", "i_pu": 0.8, "phase_deg": 180.0},
            "record": {"every": 1, "from": 1000, "truth": ["t_s", "v_a_pu", "v_b_pu",
                                                           "v_c_pu", "i_a_pu", "island"]}}
    n, adc, tr = rows(run_mp(run_micropython, tmp_path, spec))
    t = tr[:, 0]
    before = slice(0, 1000)  # ticks 1000..2000, grid-connected
    after = slice(3000, 5000)  # ticks 4000..6000, islanded
    assert np.all(tr[after, 5] == 1) and np.all(tr[before, 5] == 0)

    def amp_ang(sl):
        v = phasor(tr[sl, 1], t[sl], 50.0)
        i = phasor(tr[sl, 4], t[sl], 50.0)
        return abs(v), abs(i), v / i

    return amp_ang(before), amp_ang(after)


def _z_load_angle(qf=1.0, f=50.0, f_res=50.0):
    """angle of v / i in the island: the converter current (into it) leaves the load, so
    v / i = -Z_load, with Y_load / G = 1 + j qf (f / f_res - f_res / f)."""
    return np.angle(-1.0 / (1.0 + 1j * qf * (f / f_res - f_res / f)))


def test_island_matched_rlc_holds_voltage(run_micropython, tmp_path):
    (v0, i0, z0), (v1, i1, z1) = _island_run(run_micropython, tmp_path)
    assert abs(v0 - 1.0) < 0.01 and abs(i0 - 0.8) < 0.03
    # matched: R takes the unit's power, L and C cancel at f_nom -> the voltage holds
    assert abs(v1 - v0) < 0.01 * v0
    assert abs(wrap(np.angle(z1) - _z_load_angle())) < math.radians(0.5)


def test_island_mismatched_rlc_moves_voltage(run_micropython, tmp_path):
    # R sized for 30 % more power than the unit exports: the voltage sags to ~1/1.3
    (v0, i0, z0), (v1, i1, z1) = _island_run(run_micropython, tmp_path,
                                             {"p_w": 0.79 * 11000 * 1.3})
    assert 0.72 < v1 / v0 < 0.82
    # resonance at 52 Hz instead of 50 Hz: the voltage turns against the current
    (v0, i0, z0), (v1, i1, z1) = _island_run(run_micropython, tmp_path, {"f_res_hz": 52.0})
    want = _z_load_angle(f_res=52.0)
    assert abs(wrap(want - _z_load_angle())) > math.radians(4)
    assert abs(wrap(np.angle(z1) - want)) < math.radians(0.5)


# ---------------------------------------------------------------- DC side

def test_dc_power_balance_and_soc(run_micropython, tmp_path):
    spec = {"plant": {"main_closed": True, "dead_time_ns": 0}, "ticks": 4000,
            "drive": {"mode": "sine", "u_pu": 0.95, "phase_deg": -5.0},
            "record": {"every": 10, "from": 3000, "truth": ["p_w", "v_dc_v", "i_bat_a", "soc",
                                                            "energized"]},
            "final": ["soc"]}
    out = run_mp(run_micropython, tmp_path, spec)
    n, adc, tr = rows(out)
    p, vdc, ibat, soc, en = tr.T
    assert np.all(en == 1)
    assert np.mean(p) > 5000  # importing: charging the EV
    # battery current carries the converter's power (filter R is on the AC side)
    assert abs(np.mean(vdc * ibat) - np.mean(p)) < 0.03 * np.mean(p)
    assert np.all(np.diff(soc) >= 0) and soc[-1] > 0.8
    v_oc = 700 + 130 * 0.8
    assert abs(np.mean(vdc) - (v_oc + 0.1 * np.mean(ibat))) < 0.1


def test_precharge_and_contactor_delay_weld_aux():
    p = plant_mod.Plant(soc=0.5)
    v_oc = 700 + 130 * 0.5
    p.contactor_cmd(0, 1)
    for _ in range(19):
        p.slow(1.0)
    assert p.truth()["precharge_closed"] == 0
    p.slow(1.0)
    assert p.truth()["precharge_closed"] == 1 and p.contactor_aux() == 0
    for _ in range(50):  # tau = (50 + 0.1) ohm * 1 mF = 50.1 ms
        p.slow(1.0)
    # 51 ms of charging (the closing step counts); bleeder negligible
    assert abs(p.v_dc_v - v_oc * (1 - math.exp(-51 / 50.1))) < 0.005 * v_oc
    for _ in range(300):
        p.slow(1.0)
    assert abs(p.v_dc_v - v_oc) < 2.0  # 7 tau, and the bleeder divides 50 ohm : 100 kohm
    p.contactor_cmd(1, 1)
    for _ in range(19):
        p.slow(1.0)
    assert p.contactor_aux() == 0
    p.slow(1.0)
    assert p.contactor_aux() == 1 and p.truth()["contactor_closed"] == 1
    # a command that flips back inside the delay never moves the contactor
    p.contactor_cmd(0, 0)
    for _ in range(10):
        p.slow(1.0)
    p.contactor_cmd(1, 0)
    for _ in range(30):
        p.slow(1.0)
    assert p.contactor_aux() == 1
    # weld: stays closed whatever the command, aux tells the truth
    p.event({"contactor_weld": True})
    p.contactor_cmd(0, 0)
    for _ in range(100):
        p.slow(1.0)
    assert p.contactor_aux() == 1 and p.truth()["contactor_welded"] == 1
    p.event({"contactor_weld": False})
    for _ in range(20):
        p.slow(1.0)
    assert p.contactor_aux() == 0
    # weld while open: welds at its next closing
    p.event({"contactor_weld": True})
    p.contactor_cmd(1, 0)
    for _ in range(20):
        p.slow(1.0)
    p.contactor_cmd(0, 0)
    for _ in range(50):
        p.slow(1.0)
    assert p.contactor_aux() == 1


# ---------------------------------------------------------------- thermal, fan, NTC

def _thermal_plant(**kw):
    p = plant_mod.Plant(ambient_c=40.0, main_closed=True, **kw)
    p._thermal_i_rms = 11000.0 / (3 * 230.0)  # rated RMS current, test hook
    return p


def test_thermal_steady_state_at_rated_current_above_derating_point():
    p = _thermal_plant()
    p.fan(100)
    for _ in range(1500):  # 1500 s in 1 s slow steps (10 ms thermal sub-steps)
        p.slow(1000.0)
    tr = p.truth()
    assert 200 < tr["p_loss_w"] < 215
    assert 87.0 < tr["t_module_c"] < 93.0  # above the 85 C derating point
    assert tr["t_heatsink_c"] < tr["t_module_c"]
    p.event({"fan_fail": True})
    p.slow(1.0)
    assert p.fan_tach_hz() == 0.0
    for _ in range(3000):
        p.slow(1000.0)
    assert p.truth()["t_module_c"] > 150.0  # without the fan the module would cook


def test_thermal_time_constants():
    p = _thermal_plant()
    p._thermal_i_rms = 0.0
    p.fan(100)
    for _ in range(50):  # fan spun up, no load yet
        p.slow(100.0)
    assert p.t_module_c == 40.0
    p._thermal_i_rms = 11000.0 / (3 * 230.0)
    t, tm, th = [], [], []
    for k in range(6000):  # 600 s in 100 ms steps
        p.slow(100.0)
        t.append(0.1 * (k + 1))
        tm.append(p.t_module_c)
        th.append(p.t_heatsink_c)
    t, tm, th = np.array(t), np.array(tm), np.array(th)
    # module over heatsink: first-order-like with tau ~ 5 s
    d = tm - th
    d_end = d[-1]
    tau_m = t[np.argmax(d >= (1 - math.exp(-1)) * d_end)]
    assert 3.5 < tau_m < 6.5
    # heatsink over ambient: tau ~ 120 s (130 s with the coupling)
    rise = th - 40.0
    final = p.p_loss_w * 0.17
    tau_h = t[np.argmax(rise >= (1 - math.exp(-1)) * final)]
    assert 100.0 < tau_h < 160.0


def test_fan_speed_tach_and_failure():
    p = plant_mod.Plant()
    assert p.fan_tach_hz() == 0.0
    p.fan(50)
    for _ in range(3000):
        p.slow(1.0)
    assert abs(p.fan_tach_hz() - 100.0) < 1.0
    p.event({"fan_fail": True})
    assert p.fan_tach_hz() == 0.0
    p.slow(1.0)
    assert p.fan_tach_hz() == 0.0 and p.truth()["fan_speed_pct"] == 0.0
    p.event({"fan_fail": False})
    for _ in range(3000):
        p.slow(1.0)
    assert p.fan_tach_hz() > 90.0


def test_ntc_words_and_open_ntc():
    p = plant_mod.Plant(ambient_c=25.0)
    mod, hs = p.ntc_raw()
    assert mod == hs == 32768  # 10 k NTC against 10 k pull-up at 25 C: half scale
    p.t_module_c = 85.0
    r85 = 10e3 * math.exp(3950 * (1 / 358.15 - 1 / 298.15))
    assert p.ntc_raw()[0] == round(65535 * r85 / (r85 + 10e3))
    assert p.ntc_raw()[0] < 32768  # hotter reads lower
    p.event({"ntc_open": True})
    assert p.ntc_raw() == (65535, 32768)
    p.event({"ntc_open": False})
    assert p.ntc_raw()[0] < 32768


def test_ambient_event():
    p = plant_mod.Plant(ambient_c=25.0)
    p.event({"ambient_c": 45.0})
    for _ in range(2000):
        p.slow(1000.0)
    assert abs(p.t_module_c - 45.0) < 0.5


# ---------------------------------------------------------------- API, validation

def test_event_validation_and_foreign_keys():
    p = plant_mod.Plant()
    before = p.truth()
    for bad in ({"v_pu": [1, 1]}, {"v_pu": "high"}, {"f_hz": -1}, {"harmonics": [{"order": 1,
                                                                                 "pu": 0.1}]},
                {"harmonics": [{"order": 5}]}, {"island": "yes"}, {"noise_pu_rms": 2.0},
                {"v_pu": 1.1, "phase_jump_deg": [1, 2]}):
        with pytest.raises(ValueError):
            p.event(bad)
    assert p.truth() == before  # a refused event changes nothing
    p.event({"t_s": 1.0, "setpoint": {"id": "x", "p_w": 1}, "permit_service": True,
             "ev_limits": {}, "hang": "tick", "config": {}})
    assert p.truth() == before
    for bad in ({"bogus": 1}, {"r_bat_ohm": 0}, {"c_dc_f": "1m"}, {"main_closed": 2},
                {"noise_seed": 1.5}, {"v_pu": [1, 2]}):
        with pytest.raises(ValueError):
            plant_mod.Plant(**bad)
    assert plant_mod.Plant(v_pu=1.05, f_hz=60.0).grid_f_hz() == pytest.approx(60.0, abs=1e-6)


def test_constants_match_firmware_and_board():
    import svpwm
    assert (plant_mod._DUTY_A, plant_mod._DUTY_B, plant_mod._DUTY_C) == (
        svpwm.DUTY_A, svpwm.DUTY_B, svpwm.DUTY_C)
    board = json.loads((SIM_DIR / "board.json").read_text())
    p = plant_mod.Plant(tick_hz=board["tick_hz"], pwm_period_counts=board["pwm_period_counts"],
                        **board.get("plant", {}))
    sc = p.board_scaling()
    assert sc["v_base_mv"] == board["v_base_mv"]
    assert abs(sc["i_base_ma"] - board["i_base_ma"]) <= 1
    assert [(c["offset"], c["gain_q14"]) for c in sc["adc"]] == [
        (c["offset"], c["gain_q14"]) for c in board["adc"]]


def test_energy_meter():
    from array import array
    p = plant_mod.Plant(main_closed=True, dead_time_ns=0)
    pw = array("i", [2500, 20, 1250, 1250, 1250])
    e = 0.0
    for n in range(2000):
        # converter voltage 0.95 pu at -5 deg: imports (see the filter test)
        th = 2 * math.pi * 50 * (n + 0.5) / 10000
        for k in range(3):
            u = 0.95 * math.cos(th - math.radians(5) - k * TH)
            pw[2 + k] = int(1250 + u / (p.v_dc_v / (230 * math.sqrt(2))) * 2500 + 0.5)
        e += p.truth()["p_w"] / 10000 / 3600
        p.advance(pw, 1)
        if n % 10 == 9:
            p.slow(1.0)
    imp, exp = p.energy_wh()
    assert exp < 1e-3 * imp
    assert abs(imp - e) < 1e-6 * abs(e) + 1e-9


# ---------------------------------------------------------------- runtimes, speed

MIXED = {
    "plant": {"main_closed": True, "tick_hz": 10000, "noise_seed": 7},
    "ticks": 3000,
    "events": [[0, {"harmonics": [{"order": 5, "pu": 0.0625}, {"order": 7, "pu": 0.03125}],
                    "noise_pu_rms": 0.0078125, "neg_seq_pu": 0.03125}],
               [500, {"phase_jump_deg": [15, 0, -15]}],
               [900, {"rocof_hz_s": 2.5, "until_hz": 50.5}],
               [1500, {"island": True}], [2200, {"island": False}],
               [2600, {"v_pu": [0.5, 1.0, 1.25], "f_hz": 49.5}]],
    "contactor": [[100, 1, 1]],
    "fan": [[0, 75]],
    "drive": {"mode": "current", "i_pu": 0.5, "phase_deg": 180.0, "on_from": 200},
    "record": {"every": 1, "hex": True, "truth": ["grid_theta_rad", "v_dc_v", "t_module_c",
                                                   "soc", "p_w", "q_var"]},
    "final": ["t_module_c", "t_heatsink_c", "v_dc_v", "soc", "i_bat_a", "p_loss_w",
              "fan_speed_pct", "grid_theta_rad"],
}


def _ulps_apart(x, y):
    """Distance in units in the last place of two doubles given as 16 hex digits."""
    def key(h):
        v = int(h, 16)
        return v if v < 1 << 63 else (1 << 63) - v
    return abs(key(x) - key(y))


def test_deterministic_and_cpython_equals_unix_runtime(run_micropython, tmp_path,
                                                       micropython_exe):
    a = run_mp(run_micropython, tmp_path, MIXED, "a.json")
    b = run_mp(run_micropython, tmp_path, MIXED, "b.json")
    assert a == b
    c = run_cpython(MIXED)
    if twin.needs_plant_twin(micropython_exe):
        # a 32-bit runtime: the tick (the plant twin) gives the same words bit for bit, but
        # an x87 build double-rounds its floats (80-bit registers, then 64-bit), so the
        # float truths may differ from CPython's in a last bit now and then
        la, lc = a.splitlines(), c.splitlines()
        assert len(la) == len(lc)
        for ra, rc in zip(la, lc):
            fa, fc = ra.split(), rc.split()
            assert len(fa) == len(fc), (ra, rc)
            for x, y in zip(fa, fc):
                if x != y:
                    assert len(x) == len(y) == 16 and _ulps_apart(x, y) <= 4, (ra, rc)
    else:
        assert c == a
    assert a.count("\nR ") == MIXED["ticks"] - 1


def test_tick_allocates_nothing_and_cost(run_micropython, tmp_path, micropython_exe):
    if twin.needs_plant_twin(micropython_exe):
        pytest.skip("64-bit only: with 31-bit small ints the plant runs as its bytecode twin "
                    "(v2g.common.twin), whose 40-bit accumulators and ~53-bit products are "
                    "heap-allocated long ints, so its tick allocates by design")
    spec = {"plant": {"main_closed": True}, "ticks": 200,
            "events": [[0, {"harmonics": [{"order": 5, "pu": 0.05}, {"order": 7, "pu": 0.03}],
                            "noise_pu_rms": 0.01}]],
            "bench": 100000, "heap_lock": 2000}
    out = run_mp(run_micropython, tmp_path, spec)
    assert "HEAPLOCK ok" in out, out
    # and in the island (the other integrator)
    spec_i = dict(spec, events=spec["events"] + [[100, {"island": True}]], bench=0)
    out_i = run_mp(run_micropython, tmp_path, spec_i, "island.json")
    assert "HEAPLOCK ok" in out_i, out_i
    bench = [line for line in out.splitlines() if line.startswith("BENCH")][0]
    print("\nplant on the unix runtime (5th + 7th harmonics, noise): " + bench)
    kv = dict(x.split("=") for x in bench.split()[1:])
    assert int(kv["tick_ns"]) > 0
