"""PLL evaluation: a float64 twin of ``firmware/pll.py``, test signals, and the figures
the PLL is held to (tests assert them, ``v2g bench`` prints them).

``FloatPLL`` has the same structure, gains and clamps as the firmware; only the number
format differs (radians and radians per sample instead of 2**28 turns and phase
increments), so comparing the two measures the fixed-point error alone.

The fixed-point runs here go through CPython; the tests prove the MicroPython runtime
gives the same bits, so every figure holds for both.

Context: host only.
"""

import math

import numpy as np

TWO_PI = 2 * math.pi
DW_CLAMP_T28 = 1 << 19  # firmware _DW_CLAMP, in 2**28 turn units per tick


def _wrap(x):
    return (x + math.pi) % TWO_PI - math.pi


class FloatPLL:
    """Float twin of ``pll.step``; ``step`` returns (theta_rad, f_hz, v_pos_pu, locked)."""

    def __init__(self, tick_hz, f_nom_hz):
        self.fs = tick_hz
        w_nom = TWO_PI * f_nom_hz / tick_hz
        self.w_min = TWO_PI * 40.0 / tick_hz
        self.w_max = TWO_PI * 70.0 / tick_hz
        self.k_r = 20.0 / tick_hz
        self.k_f = 333.0 / tick_hz
        self.delay = round(tick_hz / f_nom_hz) / 4  # quarter period, samples (as firmware)
        lag = int(tick_hz / (4 * f_nom_hz))
        self.lag = 1 << (lag.bit_length() - 1)
        self.dw_clamp = DW_CLAMP_T28 * TWO_PI / (1 << 28)
        self.dw_lock = TWO_PI * 2.0 / tick_hz
        self.cnt_max = int(2 * tick_hz / f_nom_hz)
        self.th_r = 0.0
        self.w_r = self.w_f = w_nom
        self.ring = 256
        self.d = np.zeros(self.ring)
        self.q = np.zeros(self.ring)
        self.tl = np.zeros(self.ring)
        self.pos = 0
        self.ni = int(math.pi / w_nom)
        self.sd = self.sq = 0.0
        self.cnt = 0
        self.locked = 0

    def step(self, va, vb, vc):
        al = (2 * va - vb - vc) / 3
        be = (vb - vc) / math.sqrt(3)
        c, s = math.cos(self.th_r), math.sin(self.th_r)
        d = al * c + be * s
        q = be * c - al * s
        r = self.ring
        pos = self.pos = (self.pos + 1) % r
        self.d[pos], self.q[pos] = d, q
        win = math.pi / self.w_r
        ni = self.ni
        self.sd += d - self.d[(pos - ni) % r]
        self.sq += q - self.q[(pos - ni) % r]
        if int(win) > ni:
            ni += 1
            self.sd += self.d[(pos - ni + 1) % r]
            self.sq += self.q[(pos - ni + 1) % r]
        elif int(win) < ni:
            self.sd -= self.d[(pos - ni + 1) % r]
            self.sq -= self.q[(pos - ni + 1) % r]
            ni -= 1
        self.ni = ni
        fr = min(max(win - ni, 0.0), 1.0)
        j = (pos - ni) % r
        a, b = self.d[j], self.d[(j - 1) % r]
        x = 2 * self.sd - d + a + 2 * fr * a + fr * fr * (b - a)
        a, b = self.q[j], self.q[(j - 1) % r]
        y = 2 * self.sq - q + a + 2 * fr * a + fr * fr * (b - a)
        phi = math.atan2(y, x)
        v_pos = math.hypot(x, y) / 2 * self.w_r / math.pi
        t = self.th_r + phi - self.w_r * self.delay
        self.tl[pos] = t
        lag = self.lag
        dw = _wrap(t - self.tl[(pos - lag) % r] - self.w_r * lag) / lag
        dw = min(max(dw, -self.dw_clamp), self.dw_clamp)
        theta = (self.th_r + phi + dw * self.delay) % TWO_PI
        e = min(max(self.w_r + dw - self.w_f, -self.dw_clamp), self.dw_clamp)
        self.w_f += self.k_f * e
        w_r = self.w_r
        self.w_r = min(max(w_r + self.k_r * dw, self.w_min), self.w_max)
        self.th_r = (self.th_r + w_r) % TWO_PI
        if v_pos >= 0.1 and abs(dw) <= self.dw_lock:
            if self.cnt < self.cnt_max:
                self.cnt += 1
            else:
                self.locked = 1
        else:
            self.cnt -= 2
            if self.cnt <= 0:
                self.cnt = 0
                self.locked = 0
        return theta, self.w_f * self.fs / TWO_PI, v_pos, self.locked


def three_phase(tick_hz, duration_s, f_hz, *, v_pu=1.0, jump_t_s=None, jump_deg=0.0,
                neg_seq_pu=0.0, h5_pu=0.0, h7_pu=0.0, h7_phase_deg=0.0, fstep_t_s=None,
                fstep_hz=0.0, noise_pu_rms=0.0, seed=1):
    """Phase voltages in per unit of nominal peak, and the true positive-sequence angle.

    Returns (t_s, v[n, 3], theta_true_rad, f_true_hz). The 5th harmonic is negative
    sequence, the 7th positive sequence; ``h7_phase_deg`` shifts the 7th (a 7th at 90
    degrees puts its 6*f ripple into q, the PLL's error axis).
    """
    n = int(round(duration_s * tick_hz))
    t = np.arange(n) / tick_hz
    f = np.full(n, float(f_hz))
    if fstep_t_s is not None:
        f[t >= fstep_t_s] += fstep_hz
    th = np.concatenate([[0.0], np.cumsum(TWO_PI * f / tick_hz)[:-1]])
    if jump_t_s is not None:
        th = th + np.where(t >= jump_t_s, math.radians(jump_deg), 0.0)
    ph = np.array([0.0, -TWO_PI / 3, TWO_PI / 3])
    tt = th[:, None]
    v = v_pu * np.cos(tt + ph)
    v = v + neg_seq_pu * np.cos(-tt + ph)
    v = v + h5_pu * np.cos(-5 * tt + ph)
    v = v + h7_pu * np.cos(7 * tt + ph + math.radians(h7_phase_deg))
    if noise_pu_rms:
        v = v + np.random.default_rng(seed).normal(0.0, noise_pu_rms, v.shape)
    return t, v, th % TWO_PI, f


def to_q12(v):
    """Per unit -> the firmware's Q12 integers, clamped to its +/-4 pu input range."""
    return np.clip(np.round(np.asarray(v) * 4096), -16383, 16383).astype(np.int64)


def angle_err_deg(a, b):
    """Wrapped difference a - b in degrees."""
    return np.degrees(np.angle(np.exp(1j * (np.asarray(a) - np.asarray(b)))))


def run_fixed(tick_hz, f_nom_hz, v_pu):
    """Run the firmware PLL (CPython) over per-unit phase voltages ``v_pu[n, 3]``.
    Returns (theta_rad, f_hz, v_pos_pu, locked) arrays."""
    from v2g.common.runtime import import_firmware_cpython

    import_firmware_cpython()
    import pll

    st = pll.new_state()
    pll.init(st, tick_hz, f_nom_hz)
    step = pll.step
    n = len(v_pu)
    raw = np.zeros((n, 4), dtype=np.int64)
    for k, (a, b, c) in enumerate(to_q12(v_pu).tolist()):
        step(st, a, b, c)
        raw[k] = pll.raw_outputs(st)
    theta = raw[:, 0] * (TWO_PI / (1 << 28))
    f = raw[:, 1] * (tick_hz / float(1 << 34))
    return theta, f, raw[:, 2] / 4096.0, raw[:, 3]


def run_float(tick_hz, f_nom_hz, v_pu):
    p = FloatPLL(tick_hz, f_nom_hz)
    out = np.array([p.step(*row) for row in np.asarray(v_pu).tolist()])
    return out[:, 0], out[:, 1], out[:, 2], out[:, 3]


DISTORTION = dict(neg_seq_pu=0.10, h5_pu=0.05, h7_pu=0.05, h7_phase_deg=90.0)


def phase_jump_figures(tick_hz, f_nom_hz, jump_deg=30.0):
    """30 degree jump under 10 % negative sequence, 5 % 5th and 5 % 7th (7th phased into
    q). Returns settle time to < 1 degree for good (cycles), worst error from one cycle
    after the jump (deg), steady-state error before the jump (deg), and the worst
    fixed-vs-float angle difference once locked (deg)."""
    t_jump = 1.0
    t, v, th, _ = three_phase(tick_hz, t_jump + 0.5, f_nom_hz, jump_t_s=t_jump,
                              jump_deg=jump_deg, **DISTORTION)
    theta, _, _, lock = run_fixed(tick_hz, f_nom_hz, v)
    theta_f = run_float(tick_hz, f_nom_hz, v)[0]
    err = np.abs(angle_err_deg(theta, th))
    cycle = 1.0 / f_nom_hz
    after = t >= t_jump
    bad = np.nonzero(after & (err >= 1.0))[0]
    settle = (t[bad[-1]] + 1.0 / tick_hz - t_jump) / cycle if len(bad) else 0.0
    ss = err[(t >= t_jump - 0.3) & (t < t_jump)].max()
    locked_from = np.argmax(lock > 0)
    fx = np.abs(angle_err_deg(theta, theta_f))[max(locked_from, int(0.2 * tick_hz)):].max()
    return {"settle_cycles": float(settle),
            "max_err_after_1_cycle_deg": float(err[t >= t_jump + cycle].max()),
            "steady_err_deg": float(ss),
            "fixed_vs_float_deg": float(fx),
            "locked_at_end": int(lock[-1])}


def noise_frequency_figure(tick_hz, f_nom_hz, seeds=(1, 2, 3), offset_hz=0.0):
    """Worst |mean frequency error| over 60 cycles with 0.5 % rms noise, mHz."""
    worst = 0.0
    f_grid = f_nom_hz + offset_hz
    for seed in seeds:
        t_start = 0.5
        t, v, _, _ = three_phase(tick_hz, t_start + 60.0 / f_grid, f_grid,
                                 noise_pu_rms=0.005, seed=seed)
        f = run_fixed(tick_hz, f_nom_hz, v)[1]
        worst = max(worst, abs(float(f[t >= t_start].mean()) - f_grid) * 1000.0)
    return worst


def frequency_step_figure(tick_hz, f_nom_hz, step_hz):
    """Time from a frequency step until the estimate stays within +/-0.1 Hz, ms."""
    t_step = 0.5
    t, v, _, f_true = three_phase(tick_hz, t_step + 0.3, f_nom_hz, fstep_t_s=t_step,
                                  fstep_hz=step_hz)
    f = run_fixed(tick_hz, f_nom_hz, v)[1]
    bad = np.nonzero((t >= t_step) & (np.abs(f - f_true) > 0.1))[0]
    return float((t[bad[-1]] + 1.0 / tick_hz - t_step) * 1000.0) if len(bad) else 0.0


def figures(rates=(10000, 2000), grids=(50, 60)):
    """Every PLL figure the issue targets, per (tick rate, grid)."""
    out = []
    for fs in rates:
        for f0 in grids:
            row = {"tick_hz": fs, "f_nom_hz": f0}
            row.update(phase_jump_figures(fs, f0))
            row["freq_noise_err_mhz"] = noise_frequency_figure(fs, f0)
            row["fstep_settle_ms"] = max(frequency_step_figure(fs, f0, 2.0),
                                         frequency_step_figure(fs, f0, -2.0))
            out.append(row)
    return out
