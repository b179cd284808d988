"""Test definitions of ``v2g conformance``: IEEE 1547.1-2020-style test plans built from
the firmware's parameter table and the IEEE 1547-2018 tables, as scenario dicts.

Nothing here runs anything: ``plan(category, reduced)`` returns ``(tests, skipped)``
where each test is a dict with the scenario of every repetition and what to check
(``conformance`` runs and judges them).

What is used (stated in every report, ``ACCURACY_TEXT``):
- measurement accuracy of the procedure (1547.1 minimum): voltage +/-1 % of nominal,
  frequency +/-10 mHz, time +/-1 % of the clearing time but at least one grid cycle;
- a trip test steps from ``pickup -/+ 2 x accuracy`` (the side that does not trip) to
  ``pickup +/- 2 x accuracy``; the plant's step is instantaneous (rise 0 <= 2 cycles);
  the voltage goes straight to the start value, the frequency ramps there at 0.5 Hz/s
  (inside every category's ROCOF ride-through); the start value is held ``DWELL_S``;
- after the step the condition is held ``clearing + 2 x time accuracy`` (+ a short tail);
- the 5 repetitions move the step instant by a fifth of a grid cycle each;
- the functions that are not under test sit at their widest settings (as the standard's
  procedures do, so they cannot pre-empt the function under test), moved only where the
  parameter table's cross-checks require it (OV1 <= OV2, UV2 <= UV1, OF1 <= OF2,
  UF1 <= UF2); a step that also crosses another function's pickup accepts that
  function's trip too when its clearing time is not longer;
- ride-through tests run with every trip function at its widest setting (1547.1 tests the
  ride-through capability, not the trip settings).

Context: host only.
"""

import math

from v2g.sim import scenario as scenario_mod

CATEGORY_NUM = {"I": 1, "II": 2, "III": 3}
V_ACC_PU = 0.01  # +/-1 % of nominal
F_ACC_HZ = 0.010  # +/-10 mHz
T_ACC_FRAC = 0.01  # +/-1 % of the clearing time, at least one cycle
REPS = 5
DWELL_S = 1.0  # start value held before the step
TAIL_S = 0.1  # simulated after the hold (the last interval and the trip get recorded)
APPROACH_HZ_S = 0.5  # frequency ramp to the start value (Cat I ROCOF ride-through)
SETPOINT_W = -7000  # exporting 7 kW (rated 11 kW)
P_RATED_W = 11000
V_NOM = 230.0
F_NOM = 60
ES_CONFIG = {"enter_service_delay_s": 0.2, "enter_service_ramp_s": 0.0}
EARLY_CYCLES = 3  # a trip may come up to this many cycles (or 2 x time accuracy) early
LONG_S = 180.0  # clearing times from here up are the "long-time" settings
RT_REDUCED_HOLD_S = 10.0  # frequency ride-through hold in the reduced form (299 s full)
ISLAND_LEVELS = (1.00, 0.66, 0.33)  # of rated output (1547.1 / IEC 62116 levels)
ISLAND_LIMIT_S = 2.0

ACCURACY_TEXT = (
    "Accuracy used (IEEE 1547.1 minimum measurement accuracy of the procedure): voltage "
    "+/-1 %% of nominal, frequency +/-10 mHz, time +/-1 %% of the clearing time or one grid "
    "cycle, whichever is larger. Trip steps go from pickup -/+ 2 x accuracy to pickup "
    "+/- 2 x accuracy (0.02 pu, 0.02 Hz); the plant's step is instantaneous (rise time 0, "
    "<= 2 cycles); after the step the condition is held for clearing time + 2 x time "
    "accuracy. The start value is held %.1f s before the step (frequency reached by a "
    "%.1f Hz/s ramp). Measured clearing time = step to the end of the last energized "
    "interval (cessation of current, 1 ms resolution of the simulated meter); pass when "
    "it is at least one grid cycle inside the clearing-time setting, the trip event "
    "names the function and comes within the setting but not earlier than the setting "
    "minus the larger of 2 x time accuracy and %d cycles (the setting must be honoured, "
    "not ignored), nothing trips before the step, and the unit does not energize again "
    "during the hold." % (DWELL_S, APPROACH_HZ_S, EARLY_CYCLES))

# function -> (quantity, over, magnitude key, time key)
FUNCTIONS = {
    "OV2": ("v", True, "ov2_pu", "ov2_s"),
    "OV1": ("v", True, "ov1_pu", "ov1_s"),
    "UV1": ("v", False, "uv1_pu", "uv1_s"),
    "UV2": ("v", False, "uv2_pu", "uv2_s"),
    "OF2": ("f", True, "of2_dhz", "of2_s"),
    "OF1": ("f", True, "of1_dhz", "of1_s"),
    "UF1": ("f", False, "uf1_dhz", "uf1_s"),
    "UF2": ("f", False, "uf2_dhz", "uf2_s"),
}
ORDER = tuple(FUNCTIONS)

# IEEE 1547-2018 Tables 14-16 (voltage ride-through), from the bottom up:
# (lower pu, upper pu, operation, minimum ride-through time: seconds or f(v))
VRT_REGIONS = {
    1: ((0.00, 0.50, "cease", None),
        (0.50, 0.70, "permissive", 0.16),
        (0.70, 0.88, "mandatory", lambda v: 0.7 + 4.0 * (v - 0.70)),
        (1.10, 1.15, "permissive", 1.0),
        (1.15, 1.175, "permissive", 0.5),
        (1.175, 1.20, "permissive", 0.2)),
    2: ((0.00, 0.30, "cease", None),
        (0.30, 0.45, "permissive", 0.16),
        (0.45, 0.65, "permissive", 0.32),
        (0.65, 0.88, "mandatory", lambda v: 3.0 + 8.7 * (v - 0.65)),
        (1.10, 1.15, "permissive", 1.0),
        (1.15, 1.175, "permissive", 0.5),
        (1.175, 1.20, "permissive", 0.2)),
    3: ((0.00, 0.50, "momentary cessation", 1.0),
        (0.50, 0.70, "mandatory", 10.0),
        (0.70, 0.88, "mandatory", 20.0),
        (1.10, 1.20, "momentary cessation", 12.0)),
}
VRT_TEXT = {1: "Table 14", 2: "Table 15", 3: "Table 16"}
# IEEE 1547-2018 Table 21 (frequency ride-through, every category), offsets from 60 Hz
FRT_REGIONS = ((-3.0, -1.2, "mandatory", 299.0), (1.2, 1.8, "mandatory", 299.0))
RESTORE_S = 0.4  # momentary cessation: output restored within this after the return


def _params():
    return scenario_mod.firmware_params()


def setting_range(key, cat):
    """(min, max, default) of a trip setting for category ``cat`` (1..3), in the table's
    units, from the table row, CATEGORY_RANGES and CATEGORY_DEFAULTS."""
    p = _params()
    r = p.row(key)
    lo, hi, default = r[p.MIN], r[p.MAX], r[p.DEFAULT]
    if key in p.CATEGORY_RANGES.get(cat, {}):
        lo, hi = p.CATEGORY_RANGES[cat][key]
    default = p.CATEGORY_DEFAULTS.get(cat, {}).get(key, default)
    return float(lo), float(hi), float(default)


def widest(cat):
    """Every trip function at its widest (least sensitive, slowest) setting."""
    cfg = {}
    for name, (what, over, mkey, tkey) in FUNCTIONS.items():
        lo, hi, _ = setting_range(mkey, cat)
        if what == "v":
            cfg[mkey] = hi if over else lo
        else:
            cfg[mkey] = hi  # the largest offset from nominal
        cfg[tkey] = setting_range(tkey, cat)[1]
    return cfg


def pickup(name, value, f_nom=F_NOM):
    what, over, _, _ = FUNCTIONS[name]
    if what == "v":
        return value
    return f_nom + value if over else f_nom - value


def fmt_setting(name, mag, t):
    what, over, mkey, tkey = FUNCTIONS[name]
    if what == "v":
        m = "%s=%.2f pu" % (mkey, mag)
    else:
        m = "%s=%.1f Hz (%.2f Hz)" % (mkey, mag, pickup(name, mag))
    return "%s, %s=%g s" % (m, tkey, t)


def t_acc(clearing_s, f_nom=F_NOM):
    return max(T_ACC_FRAC * clearing_s, 1.0 / f_nom)


def early_limit(clearing_s, f_nom=F_NOM):
    """How much sooner than its clearing-time setting a trip may come: the larger of two
    time accuracies and three grid cycles (a unit must clear a little early to meet the
    setting, not ignore it: a 2 s setting that trips at 0.16 s fails)."""
    return max(2 * t_acc(clearing_s, f_nom), EARLY_CYCLES / f_nom)


def trip_config(name, mag, t, cat):
    """Config for a trip test of ``name`` at (mag, t): the others at their widest, moved
    only as the table's cross-checks require."""
    what, over, mkey, tkey = FUNCTIONS[name]
    cfg = widest(cat)
    cfg[mkey] = mag
    cfg[tkey] = t
    if name == "UV2":
        cfg["uv1_pu"] = max(cfg["uv1_pu"], mag)
    elif name == "OF2":
        cfg["of1_dhz"] = min(cfg["of1_dhz"], mag)
    elif name == "UF2":
        cfg["uf1_dhz"] = min(cfg["uf1_dhz"], mag)
    elif name == "OV1":
        cfg["ov2_pu"] = max(cfg["ov2_pu"], mag)
    elif name == "UV1":
        cfg["uv2_pu"] = min(cfg["uv2_pu"], mag)
    elif name == "OF1":
        cfg["of2_dhz"] = max(cfg["of2_dhz"], mag)
    elif name == "UF1":
        cfg["uf2_dhz"] = max(cfg["uf2_dhz"], mag)
    return cfg


def accepted_trips(name, cfg, end_value, f_nom=F_NOM):
    """Functions whose trip is a correct outcome of the step: the one under test, and any
    other of the same quantity whose pickup the end value also crosses with a clearing
    time not longer (e.g. OV1 at 1.20 pu: the step to 1.22 pu crosses OV2 too)."""
    what, _, _, tkey = FUNCTIONS[name]
    t_test = cfg[tkey]
    ok = [name]
    for other, (w, over, mkey, tk) in FUNCTIONS.items():
        if other == name or w != what:
            continue
        pk = pickup(other, cfg[mkey], f_nom)
        crossed = end_value > pk if over else end_value < pk
        if crossed and cfg[tk] <= t_test + 1e-9:
            ok.append(other)
    return ok


def _cycle_offsets(n, f_nom=F_NOM):
    return [k / (n * f_nom) if n > 1 else 0.0 for k in range(n)]


def _round_cycles(t, f_nom=F_NOM):
    """t rounded up to a whole number of nominal cycles."""
    return math.ceil(t * f_nom - 1e-9) / f_nom


def _approach_events(what, t0, start, f_nom=F_NOM):
    """Events taking the grid from nominal to ``start`` from ``t0``; returns (events, time
    the start value is reached)."""
    if what == "v":
        return [{"t_s": round(t0, 4), "v_pu": start}], t0
    df = start - f_nom
    if abs(df) <= 0.05:
        return [{"t_s": round(t0, 4), "f_hz": start}], t0
    rate = APPROACH_HZ_S if df > 0 else -APPROACH_HZ_S
    return ([{"t_s": round(t0, 4), "rocof_hz_s": rate, "until_hz": round(start, 4)}],
            t0 + abs(df) / APPROACH_HZ_S)


def _base(name, cat, duration, cfg, events, initial=None, setpoint_w=SETPOINT_W,
          es=ES_CONFIG):
    config = {"abnormal_category": CATEGORY_NUM[cat]}
    config.update(es)
    config.update(cfg)
    sc = {"name": name, "duration_s": round(duration, 4),
          "grid": {"v_nom_ln_rms": V_NOM, "f_nom_hz": F_NOM, "category": cat},
          "initial": dict({"v_pu": 1.0, "f_hz": float(F_NOM), "ambient_c": 25.0,
                           "soc": 0.8}, **(initial or {})),
          "config": config,
          "events": [{"t_s": 0.0, "setpoint": {"id": "s1", "p_w": setpoint_w,
                                               "q_var": 0}}] + events}
    return scenario_mod.validate(sc, name)


T_ENERGIZED = 1.0  # the unit is exporting well before this (delay 0.2 s, ramp 0)


def _trip_points(name, cat, reduced):
    """[(label, mag, t)] for a function: magnitude min and max at the minimum clearing
    time, then the maximum clearing time at the default magnitude; fixed settings once.
    Reduced: the default setting only."""
    what, over, mkey, tkey = FUNCTIONS[name]
    mlo, mhi, mdef = setting_range(mkey, cat)
    tlo, thi, tdef = setting_range(tkey, cat)
    if reduced:
        return [("default", mdef, tdef, None)]
    if mlo == mhi and tlo == thi:
        return [("fixed", mlo, tlo, None)]
    pts = []
    mags = [("mag min", mlo), ("mag max", mhi)] if mlo != mhi else [("mag fixed", mlo)]
    for label, m in mags:
        note = None
        if what == "v" and not over and m < 2 * V_ACC_PU:
            note = ("%s=%.2f pu cannot be stepped below (no voltage under 0 pu): tested at "
                    "the lowest testable setting %.2f pu" % (mkey, m, 2 * V_ACC_PU))
            label += " (%.2f untestable)" % m
            m = 2 * V_ACC_PU
        pts.append(("%s, time min" % label if tlo != thi else label, m, tlo, note))
    if thi != tlo:
        pts.append(("time max, mag default", mdef, thi, None))
    return pts


def trip_tests(cat, reduced, reps=None):
    n = CATEGORY_NUM[cat]
    tests, skipped = [], []
    n_reps = reps or (1 if reduced else REPS)
    for name in ORDER:
        what, over, mkey, tkey = FUNCTIONS[name]
        pts = _trip_points(name, n, reduced)
        if reduced:
            for label, m, t, _ in _trip_points(name, n, False):
                skipped.append("%s %s (%s), 5 repetitions: full form only"
                               % (name, label, fmt_setting(name, m, t)))
        variants = [("3ph", None)]
        if name.startswith("UV"):
            variants.append(("1ph", 0))  # phase a only
        for label, mag, t, note in pts:
            notes = [note] if note else []
            for var, phase in variants:
                tid = "%s %s%s" % (name, label, "" if var == "3ph" else " one-phase")
                acc = V_ACC_PU if what == "v" else F_ACC_HZ
                pk = pickup(name, mag)
                sign = 1 if over else -1
                start = round(pk - sign * 2 * acc, 4)
                end = round(pk + sign * 2 * acc, 4)
                cfg = trip_config(name, mag, t, n)
                accept = accepted_trips(name, cfg, end)
                clearing = min(cfg[FUNCTIONS[a][3]] for a in accept)
                hold = clearing + 2 * t_acc(clearing)
                runs = []
                for k, off in enumerate(_cycle_offsets(n_reps)):
                    if what == "v" and phase is not None:
                        sv = [start if j == phase else 1.0 for j in range(3)]
                        ev_val = [end if j == phase else 1.0 for j in range(3)]
                    elif what == "v":
                        sv, ev_val = [start] * 3, [end] * 3
                    else:
                        sv, ev_val = start, end
                    approach, t_at = _approach_events(what, T_ENERGIZED, sv)
                    t_step = round(_round_cycles(t_at + DWELL_S) + off, 4)
                    key = "v_pu" if what == "v" else "f_hz"
                    events = approach + [{"t_s": t_step, key: ev_val}]
                    duration = t_step + hold + TAIL_S
                    sc = _base("%s rep %d" % (tid, k + 1), cat, duration, cfg, events)
                    runs.append({"rep": k + 1, "scenario": sc, "t_step": t_step})
                tests.append({
                    "id": tid, "group": "trip", "function": name,
                    "setting_label": label, "variant": var,
                    "setting": fmt_setting(name, mag, t),
                    "step": "%s %s -> %s%s" % (
                        "V" if what == "v" else "f",
                        _fmtv(what, start), _fmtv(what, end),
                        " (phase a)" if phase is not None else " (all phases)"
                        if what == "v" else ""),
                    "accept": accept, "clearing_s": clearing, "hold_s": hold,
                    "early_s": early_limit(clearing),
                    "quantity": what, "runs": runs, "notes": list(notes),
                    "long": t >= LONG_S,
                })
    return tests, skipped


def _fmtv(what, x):
    return "%.2f pu" % x if what == "v" else "%.2f Hz" % x


def _vrt_points(lo, hi):
    """Test voltages inside a region: 2 x accuracy inside each end (the middle when the
    band is narrower than 4 x accuracy)."""
    if hi - lo < 4 * V_ACC_PU + 1e-9:
        return [round((lo + hi) / 2, 4)]
    return [round(lo + 2 * V_ACC_PU, 4), round(hi - 2 * V_ACC_PU, 4)]


def ride_through_tests(cat, reduced):
    n = CATEGORY_NUM[cat]
    tests, skipped = [], []
    cfg = widest(n)
    observe = 1.0
    for lo, hi, op, tspec in VRT_REGIONS[n]:
        if tspec is None:
            continue  # "cease to energize": no ride-through requirement
        for v in _vrt_points(lo, hi):
            t_rt = tspec(v) if callable(tspec) else tspec
            hold = t_rt + 2 * t_acc(t_rt)
            t0 = round(_round_cycles(T_ENERGIZED), 4)
            t_ret = round(t0 + hold, 4)
            events = [{"t_s": t0, "v_pu": [v] * 3}, {"t_s": t_ret, "v_pu": 1.0}]
            tid = "VRT %s %g-%g pu at %.2f pu" % (op, lo, hi, v)
            sc = _base(tid, cat, t_ret + observe, cfg, events)
            tests.append({
                "id": tid, "group": "ride-through", "operation": op,
                "setting": "%.2f pu for %.2f s (min ride-through %.2f s, %s)"
                           % (v, hold, t_rt, VRT_TEXT[n]),
                "t0": t0, "t_ret": t_ret, "ride_through_s": t_rt, "hold_s": hold,
                "runs": [{"rep": 1, "scenario": sc, "t_step": t0}], "notes": [],
                "quantity": "v"})
    for dlo, dhi, op, t_rt in FRT_REGIONS:
        for df in (round(dlo + 2 * F_ACC_HZ, 4), round(dhi - 2 * F_ACC_HZ, 4)):
            f = round(F_NOM + df, 4)
            full_hold = t_rt + 2 * t_acc(t_rt)
            tid = "FRT %s %.1f-%.1f Hz at %.2f Hz" % (op, F_NOM + dlo, F_NOM + dhi, f)
            if reduced and (abs(df) < 1.5):
                skipped.append("%s: full form only" % tid)
                continue
            hold = RT_REDUCED_HOLD_S if reduced else full_hold
            approach, t_at = _approach_events("f", T_ENERGIZED, f)
            t0 = round(_round_cycles(t_at), 4)
            t_ret = round(t0 + hold, 4)
            back_s = abs(df) / APPROACH_HZ_S
            events = approach + [{"t_s": t_ret, "rocof_hz_s": -math.copysign(
                APPROACH_HZ_S, df), "until_hz": float(F_NOM)}]
            sc = _base(tid, cat, t_ret + back_s + observe, cfg, events)
            notes = []
            if reduced:
                notes.append("REDUCED hold %.0f s of the required %.0f s" % (hold, t_rt))
            tests.append({
                "id": tid, "group": "ride-through", "operation": op,
                "setting": "%.2f Hz for %.1f s (min ride-through %.0f s, Table 21)%s"
                           % (f, hold, t_rt, " REDUCED" if reduced else ""),
                "t0": round(T_ENERGIZED, 4), "t_ret": round(t_ret + back_s, 4),
                "ride_through_s": t_rt, "hold_s": hold,
                "runs": [{"rep": 1, "scenario": sc, "t_step": t0}], "notes": notes,
                "quantity": "f"})
    return tests, skipped


def phase_jump_tests(cat):
    cfg = widest(CATEGORY_NUM[cat])
    tests = []
    for label, jump in (("20 deg all phases", 20), ("60 deg phase a", [60, 0, 0])):
        t0 = round(_round_cycles(T_ENERGIZED) + 0.25 / F_NOM, 4)  # mid-cycle
        tid = "Phase jump %s" % label
        sc = _base(tid, cat, t0 + 2.0, cfg, [{"t_s": t0, "phase_jump_deg": jump}])
        tests.append({"id": tid, "group": "phase-jump", "operation": "mandatory",
                      "setting": "phase_jump_deg %s at %.4f s, observed 2 s" % (jump, t0),
                      "t0": t0, "t_ret": t0 + 2.0, "runs": [{"rep": 1, "scenario": sc,
                                                              "t_step": t0}],
                      "notes": [], "quantity": "v"})
    return tests


def enter_service_tests(cat, reduced):
    tests = []
    p = _params()
    full_delay = float(p.row("enter_service_delay_s")[p.DEFAULT])
    full_ramp = float(p.row("enter_service_ramp_s")[p.DEFAULT])
    delay, ramp = (5.0, 5.0) if reduced else (full_delay, full_ramp)
    t_ret = 1.0
    variants = [("voltage 0.85 -> 1.00 pu", {"v_pu": 0.85}, {"v_pu": 1.0})]
    if not reduced:
        variants.append(("frequency 59.30 -> 60.00 Hz", {"f_hz": 59.3}, {"f_hz": 60.0}))
    for label, init, back in variants:
        # long enough to see the ramp reach the setpoint (7/11 of the ramp time)
        dur = t_ret + 0.5 + delay + ramp * abs(SETPOINT_W) / P_RATED_W + 2.0
        if label.startswith("frequency"):
            dur = t_ret + 0.5 + delay + 2.0
        tid = "Enter service after %s" % label
        sc = _base(tid, cat, dur, {}, [dict({"t_s": t_ret}, **back)], initial=init,
                   es={"enter_service_delay_s": delay, "enter_service_ramp_s": ramp})
        notes = []
        if reduced:
            notes.append("REDUCED: delay %.0f s and ramp %.0f s (defaults %.0f s / %.0f s)"
                         % (delay, ramp, full_delay, full_ramp))
        tests.append({"id": tid, "group": "enter-service",
                      "setting": "enter_service_delay_s=%g s, enter_service_ramp_s=%g s"
                                 % (delay, ramp),
                      "delay_s": delay, "ramp_s": ramp, "t_ret": t_ret,
                      "check_ramp": not label.startswith("frequency"),
                      "runs": [{"rep": 1, "scenario": sc, "t_step": t_ret}],
                      "notes": notes, "quantity": "v" if "v_pu" in back else "f"})
    return tests


def islanding_tests(cat, reduced):
    tests = []
    levels = (0.66,) if reduced else ISLAND_LEVELS
    for lvl in levels:
        p_w = -int(round(lvl * P_RATED_W))
        t0 = round(_round_cycles(T_ENERGIZED), 4)
        tid = "Unintentional islanding at %d %% output" % round(lvl * 100)
        sc = _base(tid, cat, t0 + ISLAND_LIMIT_S + 1.0, {}, [{"t_s": t0, "island": True}],
                   setpoint_w=p_w)
        tests.append({"id": tid, "group": "islanding",
                      "setting": "export %d W, RLC load matched, Qf 1, default trip "
                                 "settings" % -p_w,
                      "t0": t0, "runs": [{"rep": 1, "scenario": sc, "t_step": t0}],
                      "notes": [], "quantity": "v"})
    return tests


def plan(cat, reduced=False, reps=None):
    """All tests of a category (``"I"``, ``"II"``, ``"III"``): (tests, skipped).
    ``reps`` overrides the trip tests' repetition count (5 full, 1 reduced)."""
    tests, skipped = trip_tests(cat, reduced, reps)
    rt, sk = ride_through_tests(cat, reduced)
    tests += rt
    skipped += sk
    tests += phase_jump_tests(cat)
    tests += enter_service_tests(cat, reduced)
    tests += islanding_tests(cat, reduced)
    return tests, skipped
