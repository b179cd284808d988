"""``v2g sync-check --test-grid``: can this inverter synchronise to the grid it sees?

    v2g sync-check --test-grid (--port PORT | --sim [--scenario S.json]) [--json]

Reads, from the running controller, a burst of raw phase-voltage samples together with
the PLL's angle at each sample (the tick's capture buffer), plus the PLL's lock, frequency
and amplitude. On the host: per-phase RMS over whole cycles, frequency, phase sequence,
the PLL's phase error against the waveform's own fundamental, voltage THD and
unbalance. Then PASS or FAIL with every reason. ``--sim`` starts the virtual board (in
real time, optionally playing a scenario) and checks it over its serial port: the same
path as a real board.

Limits (documented so a technician knows why a check fails):
    every phase RMS within +/- integrity_band_pu of nominal (the 0x07 window, 10 %)
    frequency within the enter-service window (nominal -0.5 / +0.1 Hz by default)
    positive phase sequence (a-b-c), PLL locked
    PLL phase error <= 2 degrees
    voltage THD <= 8 % (IEEE 519 limit for buses up to 1 kV)
    unbalance V-/V+ <= 3 % (ANSI C84.1 advises below 3 %)

Exit 0 pass, 1 fail, 2 error (no board, not a controller, bad input).
Context: host only.
"""

import json
import math
import threading
import time
from pathlib import Path

import numpy as np

from v2g.board.console import BoardLink
from v2g.common.errors import ToolError, UsageError

THD_MAX_PCT = 8.0
UNBALANCE_MAX_PCT = 3.0
PHASE_ERR_MAX_DEG = 2.0

_ARM = """
import sys, tick
_a = sys.modules['main']._app
print(tick.arm_capture(_a.ctl))
del _a
"""

_READ = """
import sys, json, tick, pll, params
_a = sys.modules['main']._app
_c = _a.ctl
_h = _a.held
if tick.capture_left(_c):
    print(json.dumps({'ready': False}))
else:
    print(json.dumps({'ready': True, 'tick_hz': _c.tick_hz,
        'cap': list(_c.cap), 'offsets': list(_c.cal[0:3]), 'gains': list(_c.cal[7:10]),
        'v_base_v': params.v_peak_mv(_h) / 1000, 'f_nom_hz': _h['f_nom_hz'],
        'band_pu': _h['integrity_band_pu'] / 100,
        'es_df_low_hz': _h['es_df_low_hz'] / 10, 'es_df_high_hz': _h['es_df_high_hz'] / 10,
        'locked': pll.locked(_c.pll), 'f_hz': pll.f_hz(_c.pll),
        'v_pos_pu': pll.v_pos_pu(_c.pll)}))
del _a, _c, _h
"""


def add_arguments(p):
    p.add_argument("--test-grid", action="store_true", required=True,
                   help="measure the grid the controller sees and judge synchronisation")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--port", help="serial port of a running controller")
    src.add_argument("--sim", action="store_true",
                     help="start the virtual board and check it (optionally --scenario)")
    p.add_argument("--scenario", metavar="S.json",
                   help="with --sim: a scenario the virtual board plays (e.g. a distorted grid)")
    p.add_argument("--settle", type=float, default=1.5, metavar="S",
                   help="with --sim: seconds to let the board lock before measuring")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def capture(port, timeout_s=5.0):
    """Arm the controller's capture, wait for it to fill, read it back."""
    with BoardLink(port) as link:
        out = link.exec(_ARM, what="arming the waveform capture").decode().strip()
    if not out.lstrip("-").isdigit():
        raise ToolError("port %s: unexpected answer arming the capture: %r" % (port, out))
    t_end = time.monotonic() + timeout_s
    while True:
        time.sleep(0.2)
        with BoardLink(port) as link:
            text = link.exec(_READ, what="reading the capture", timeout=20).decode()
        data = json.loads(text.strip().splitlines()[-1])
        if data["ready"]:
            return data
        if time.monotonic() > t_end:
            raise ToolError("port %s: the capture did not fill within %.0f s (is the tick "
                            "running?)" % (port, timeout_s))


def analyse(data):
    """Figures and a verdict from a capture dict (see ``_READ``)."""
    fs = data["tick_hz"]
    cap = np.array(data["cap"], dtype=np.int64).reshape(-1, 4)
    v = np.empty((len(cap), 3))
    for ph in range(3):
        q12 = ((cap[:, ph] - data["offsets"][ph]) * data["gains"][ph]) >> 14
        v[:, ph] = q12 / 4096.0 * data["v_base_v"]
    theta = cap[:, 3] * (2 * math.pi / (1 << 28))
    f_est = data["f_hz"] if data["locked"] else float(data["f_nom_hz"])
    n_cyc = int(len(v) * f_est / fs)
    n = int(round(n_cyc * fs / f_est)) if n_cyc else len(v)
    n = min(n, len(v))
    w = v[:n]
    t = np.arange(n) / fs
    ph_fund = []
    rms = []
    thd = []
    for k in range(3):
        x = w[:, k]
        rms.append(float(np.sqrt(np.mean(x * x))))
        # fundamental and harmonics by correlation at the measured frequency
        def comp(h):
            c = 2.0 / n * np.sum(x * np.exp(-1j * 2 * math.pi * h * f_est * t))
            return c
        c1 = comp(1)
        ph_fund.append(c1)
        harm = [abs(comp(h)) for h in range(2, 41)]
        thd.append(float(np.sqrt(np.sum(np.square(harm))) / max(abs(c1), 1e-9) * 100.0))
    a = np.exp(2j * math.pi / 3)
    va, vb, vc = ph_fund
    v_pos = (va + a * vb + a * a * vc) / 3
    v_neg = (va + a * a * vb + a * vc) / 3
    sequence = "abc" if abs(v_pos) >= abs(v_neg) else "acb"
    unbalance = float(abs(v_neg) / max(abs(v_pos), 1e-9) * 100.0)
    # PLL angle vs the waveform: the fundamental of phase a has angle arg(va) at t = 0,
    # i.e. v_a = |va| cos(w t + arg va); the PLL's theta at t = 0 should equal arg(va)
    err = math.degrees(math.atan2(math.sin(theta[0] - np.angle(va)),
                                  math.cos(theta[0] - np.angle(va))))
    v_nom_rms = data["v_base_v"] / math.sqrt(2)
    f_nom = data["f_nom_hz"]
    fig = {
        "v_rms_v": [round(x, 2) for x in rms],
        "v_rms_pu": [round(x / v_nom_rms, 4) for x in rms],
        "f_hz": round(f_est, 4),
        "phase_sequence": sequence,
        "pll_locked": bool(data["locked"]),
        "pll_phase_error_deg": round(err, 3),
        "thd_pct": [round(x, 3) for x in thd],
        "unbalance_pct": round(unbalance, 3),
        "cycles": n_cyc,
    }
    reasons = []
    band = data["band_pu"]
    for name, x in zip("abc", fig["v_rms_pu"]):
        if abs(x - 1.0) > band:
            reasons.append("phase %s RMS %.1f V (%.3f pu) outside 1 +/- %.2f pu "
                           "(ERROR 0x07 Grid Integrity Failure)" % (name, x * v_nom_rms, x,
                                                                    band))
    if not fig["pll_locked"]:
        reasons.append("PLL not locked: no stable reference (grid instability or "
                       "distortion)")
    lo, hi = f_nom - data["es_df_low_hz"], f_nom + data["es_df_high_hz"]
    if not lo <= f_est <= hi:
        reasons.append("frequency %.3f Hz outside the enter-service window %.1f..%.1f Hz"
                       % (f_est, lo, hi))
    if sequence != "abc":
        reasons.append("phase sequence %s: phases b and c are swapped" % sequence)
    if abs(err) > PHASE_ERR_MAX_DEG and fig["pll_locked"]:
        reasons.append("PLL phase error %.2f deg above %.1f deg" % (err, PHASE_ERR_MAX_DEG))
    worst_thd = max(thd)
    if worst_thd > THD_MAX_PCT:
        reasons.append("voltage THD %.2f %% above %.1f %% (IEEE 519)" % (worst_thd,
                                                                        THD_MAX_PCT))
    if unbalance > UNBALANCE_MAX_PCT:
        reasons.append("unbalance %.2f %% above %.1f %%" % (unbalance, UNBALANCE_MAX_PCT))
    fig["pass"] = not reasons
    fig["reasons"] = reasons
    return fig


def format_text(fig):
    lines = ["grid sync check: %s" % ("PASS" if fig["pass"] else "FAIL"),
             "  RMS          %s V  (%s pu)" % (", ".join("%.1f" % x for x in fig["v_rms_v"]),
                                             ", ".join("%.3f" % x for x in fig["v_rms_pu"])),
             "  frequency    %.3f Hz   sequence %s   PLL %s, phase error %.2f deg"
             % (fig["f_hz"], fig["phase_sequence"], "locked" if fig["pll_locked"] else
                "NOT locked", fig["pll_phase_error_deg"]),
             "  THD          %s %%   unbalance %.2f %%"
             % (", ".join("%.2f" % x for x in fig["thd_pct"]), fig["unbalance_pct"])]
    for r in fig["reasons"]:
        lines.append("  FAIL: " + r)
    return "\n".join(lines)


def run(args):
    if args.scenario and not args.sim:
        raise UsageError("--scenario goes with --sim")
    if args.sim:
        fig = _run_sim(args)
    else:
        fig = analyse(capture(args.port))
    if args.json:
        print(json.dumps(fig))
    else:
        print(format_text(fig))
    return 0 if fig["pass"] else 1


def _run_sim(args):
    import shutil
    import tempfile

    from v2g.sim import scenario, simboard

    work = Path(tempfile.mkdtemp(prefix="v2g-sync-"))
    flash_dir = work / "flash"
    flash_dir.mkdir()
    board = None
    try:
        sc_file = None
        if args.scenario:
            sc = scenario.load(args.scenario)
            sc_file = work / "scenario.json"
            sc_file.write_text(json.dumps(sc))
            (flash_dir / "config.json").write_text(json.dumps(sc["config"]))
        simboard.populate(flash_dir)
        board = simboard.SimBoard(flash_dir, sc_file, log=lambda m: None, link=False)
        port = board.start()
        threading.Thread(target=board.serve, daemon=True).start()
        time.sleep(max(0.5, args.settle))
        return analyse(capture(port))
    finally:
        if board is not None:
            board.stop()
        shutil.rmtree(work, ignore_errors=True)

