"""Figures from scenario traces: current distortion, setpoint settling, overshoot.

Current distortion follows IEEE 1547's total rated-current distortion (TRD): the RMS of
harmonics 2..40 over rated current, measured over a whole number of grid cycles (the
trace must be written every tick or at an integer divisor of it).

Context: host only (numpy).
"""

import numpy as np


def window(cols, t_start_s, cycles, f_hz):
    """Boolean mask of exactly ``cycles`` grid cycles starting at ``t_start_s``."""
    t = cols["t_s"]
    return (t >= t_start_s - 1e-9) & (t < t_start_s + cycles / f_hz - 1e-9)


def current_distortion(cols, t_start_s, cycles, f_hz, i_rated_peak_a, max_order=40):
    """Per phase: (fundamental peak A, TRD %, {order: % of rated}) over the window."""
    m = window(cols, t_start_s, cycles, f_hz)
    out = {}
    for ph in "abc":
        x = cols["i_" + ph][m]
        spec = np.abs(np.fft.rfft(x)) / len(x) * 2.0
        h = {n: float(spec[cycles * n]) / i_rated_peak_a * 100.0
             for n in range(2, max_order + 1) if cycles * n < len(spec)}
        trd = float(np.sqrt(sum(v * v for v in h.values())))
        out[ph] = (float(spec[cycles]), trd, h)
    return out


def step_response(cols, key, t_step_s, target, full_scale, band=0.01, horizon_s=0.2):
    """Settling time (s) into +/- band * full_scale of ``target`` after ``t_step_s``, and
    the overshoot past the target in % of the step size."""
    t = cols["t_s"]
    y = cols[key]
    k = int(np.searchsorted(t, t_step_s - 1e-9))
    start = float(y[k - 1]) if k > 0 else float(y[0])
    seg = (t >= t[k]) & (t < t[k] + horizon_s)
    ys = y[seg]
    ts = t[seg]
    bad = np.nonzero(np.abs(ys - target) > band * full_scale)[0]
    settle = float(ts[bad[-1]] - t[k] + (ts[1] - ts[0])) if len(bad) else 0.0
    size = abs(target - start)
    if size == 0:
        return settle, 0.0
    if target > start:
        over = (float(ys.max()) - target) / size * 100.0
    else:
        over = (target - float(ys.min())) / size * 100.0
    return settle, max(over, 0.0)
