"""The parameter table: every configurable setting of the controller, in one place.

Each row: ``(pid, name, unit, minimum, maximum, default, decimals, doc)``.
- ``pid`` is stable forever (Modbus register offsets and log records use it);
- values are held as integers in units of ``10**-decimals`` of ``unit`` (``filter_x_pu``
  0.080 with 3 decimals is held as 80), so every later conversion to fixed point is
  integer arithmetic and gives the same bits on a float32 board as on the host;
- ``validate`` checks a whole config at once and names key, value and allowed range.

Config validation on the host (``v2g config push``), on the board at boot, the Modbus
register map and the parameter docs are all generated from ``TABLE``; nothing else
restates a limit.

Context: boot and supervisor (never the tick).
"""

TABLE = (
    # grid and rating
    (1, "f_nom_hz", "Hz", 50, 60, 60, 0, "nominal grid frequency (50 or 60)"),
    (2, "v_nom_ln_rms", "V", 100, 400, 230, 1, "nominal phase-to-neutral RMS voltage"),
    (3, "p_rated_w", "W", 1000, 50000, 11000, 0, "rated apparent power of the unit"),
    (4, "bidirectional", "", 0, 1, 1, 0, "1 allows discharge to the grid (V2G export)"),
    # current control
    (20, "cc_bandwidth_hz", "Hz", 100, 2000, 800, 0,
     "current-loop crossover; Kp = X * bandwidth / f_nom"),
    (21, "cc_integral_hz", "Hz", 5, 400, 80, 0, "PI zero: Ki = Kp * 2*pi * this"),
    (22, "filter_x_pu", "pu", 0.020, 0.300, 0.080, 3,
     "grid filter reactance at nominal frequency (feed-forward, decoupling, gains)"),
    (23, "i_max_pu", "pu", 0.10, 1.10, 1.00, 2, "current magnitude limit, of rated peak"),
    (24, "p_ramp_pu_s", "pu/s", 0.1, 200.0, 100.0, 1,
     "ramp of power commands inside the tick (100 pu/s: a full reversal in 20 ms)"),
    # grid integrity and enter service (IEEE 1547-2018 defaults)
    (30, "integrity_band_pu", "pu", 0.05, 0.20, 0.10, 2,
     "every phase within +/- this of nominal before energizing, else fault 0x07"),
    (31, "es_v_min_pu", "pu", 0.880, 0.950, 0.917, 3, "enter service: minimum voltage"),
    (32, "es_v_max_pu", "pu", 1.050, 1.060, 1.050, 3, "enter service: maximum voltage"),
    (33, "es_df_low_hz", "Hz", 0.1, 1.0, 0.5, 1,
     "enter service: frequency at least nominal minus this"),
    (34, "es_df_high_hz", "Hz", 0.1, 1.0, 0.1, 1,
     "enter service: frequency at most nominal plus this"),
    (35, "enter_service_delay_s", "s", 0.0, 600.0, 300.0, 1,
     "grid must stay inside the enter-service window this long"),
    (36, "enter_service_ramp_s", "s", 0.0, 1000.0, 300.0, 1,
     "power ramp from zero after entering service (0 = step)"),
    # IEEE 1547-2018 abnormal voltage and frequency response (Tables 11-13, 18). Table
    # defaults are Category II; CATEGORY_DEFAULTS / CATEGORY_RANGES hold the others.
    (50, "abnormal_category", "", 1, 3, 2, 0, "IEEE 1547 abnormal performance category I-III"),
    (51, "ov2_pu", "pu", 1.20, 1.20, 1.20, 2, "OV2 trip pickup (fixed by the standard)"),
    (52, "ov2_s", "s", 0.16, 0.16, 0.16, 2, "OV2 clearing time (fixed)"),
    (53, "ov1_pu", "pu", 1.10, 1.20, 1.10, 2, "OV1 trip pickup"),
    (54, "ov1_s", "s", 1.00, 13.00, 2.00, 2, "OV1 clearing time"),
    (55, "uv1_pu", "pu", 0.00, 0.88, 0.70, 2, "UV1 trip pickup"),
    (56, "uv1_s", "s", 2.00, 50.00, 10.00, 2, "UV1 clearing time"),
    (57, "uv2_pu", "pu", 0.00, 0.50, 0.45, 2, "UV2 trip pickup"),
    (58, "uv2_s", "s", 0.16, 21.00, 0.16, 2, "UV2 clearing time"),
    (59, "of2_dhz", "Hz", 1.8, 6.0, 2.0, 1, "OF2 pickup above nominal (62.0 Hz at 60 Hz)"),
    (60, "of2_s", "s", 0.16, 1000.00, 0.16, 2, "OF2 clearing time"),
    (61, "of1_dhz", "Hz", 1.0, 6.0, 1.2, 1, "OF1 pickup above nominal (61.2 Hz at 60 Hz)"),
    (62, "of1_s", "s", 180.0, 1000.0, 300.0, 1, "OF1 clearing time"),
    (63, "uf1_dhz", "Hz", 1.0, 10.0, 1.5, 1, "UF1 pickup below nominal (58.5 Hz at 60 Hz)"),
    (64, "uf1_s", "s", 180.0, 1000.0, 300.0, 1, "UF1 clearing time"),
    (65, "uf2_dhz", "Hz", 3.0, 10.0, 3.5, 1, "UF2 pickup below nominal (56.5 Hz at 60 Hz)"),
    (66, "uf2_s", "s", 0.16, 1000.00, 0.16, 2, "UF2 clearing time"),
    # volt-watt (IEEE 1547-2018 5.4.2, Table 10): export limited as the voltage rises
    (70, "vw_enable", "", 0, 1, 1, 0, "1 enables the voltage-active power function"),
    (71, "vw_v1_pu", "pu", 1.05, 1.09, 1.06, 2, "volt-watt: full export up to this"),
    (72, "vw_v2_pu", "pu", 1.06, 1.10, 1.10, 2, "volt-watt: export reduced to vw_p2 here"),
    (73, "vw_p2_pu", "pu", 0.00, 1.00, 0.20, 2, "volt-watt: export limit at vw_v2, of rated"),
    # unintentional islanding (IEEE 1547-2018 8.1): active Q-perturbation detector
    (74, "ai_enable", "", 0, 1, 1, 0,
     "1 enables active anti-islanding (0 only for controller characterisation tests)"),
    (75, "ai_amp_pct", "%", 0.2, 5.0, 0.8, 1, "anti-islanding Q perturbation, % of |P|"),
    # thermal derating and fan (firmware/thermal.py; thermal.conf pushes these keys).
    # The limit follows the PREDICTED module temperature: 100 % up to the start, then
    # linear to th_derated_pct at th_derated_c and to 0 at th_trip_c.
    (80, "th_derate_start_c", "C", 40, 100, 80, 0,
     "initiation temperature: the power limit starts to fall here (lower it to throttle "
     "earlier)"),
    (81, "th_derated_c", "C", 50, 110, 85, 0,
     "de-rated point: the limit is down to th_derated_pct here (above it: de-rated state)"),
    (82, "th_derated_pct", "%", 0, 100, 50, 0, "power limit at th_derated_c, % of rated"),
    (83, "th_trip_c", "C", 60, 125, 95, 0,
     "module over-temperature trip (fault 0x50); the limit reaches 0 here"),
    (84, "th_hyst_c", "C", 0.5, 10.0, 2.0, 1,
     "limit restored only this far below the curve; over-temperature clears this far "
     "below th_derated_c"),
    (85, "th_horizon_s", "s", 0, 60, 20, 0,
     "module temperature predicted this far ahead (0 = act on the measurement)"),
    (86, "fan_t1_c", "C", 0, 150, 40, 0, "fan curve point 1: module temperature (fan off below)"),
    (87, "fan_duty1_pct", "%", 0, 100, 30, 0, "fan curve point 1: duty"),
    (88, "fan_t2_c", "C", 0, 150, 55, 0, "fan curve point 2: module temperature"),
    (89, "fan_duty2_pct", "%", 0, 100, 50, 0, "fan curve point 2: duty"),
    (90, "fan_t3_c", "C", 0, 150, 65, 0, "fan curve point 3: module temperature"),
    (91, "fan_duty3_pct", "%", 0, 100, 75, 0, "fan curve point 3: duty"),
    (92, "fan_t4_c", "C", 0, 150, 75, 0, "fan curve point 4: module temperature (held above)"),
    (93, "fan_duty4_pct", "%", 0, 100, 100, 0, "fan curve point 4: duty"),
    (94, "fan_min_pct", "%", 0, 100, 20, 0, "minimum spin: the fan never runs slower when on"),
    (95, "fan_hyst_c", "C", 0.0, 10.0, 3.0, 1, "fan curve hysteresis on the way down"),
    (96, "fan_fail_tach_hz", "Hz", 1, 1000, 20, 0,
     "fan fail: tach below this while the duty should give at least twice it"),
    (97, "fan_fail_s", "s", 0.5, 60.0, 3.0, 1, "fan fail: for this long (fault 0x53)"),
    (98, "th_fan_fail_pct", "%", 0, 100, 50, 0, "power limit with a failed fan, % of rated"),
    (99, "th_sensor_fault_pct", "%", 0, 100, 50, 0,
     "power limit with one NTC faulted (0x51/0x52; the model stands in); both: 0"),
    # watchdog
    (100, "wdt_lockout_k", "", 1, 10, 3, 0,
     "consecutive watchdog resets that lock the unit out (FAULT_LOCKOUT)"),
    (101, "wdt_window_s", "s", 10, 3600, 600, 0,
     "healthy running this long forgets earlier watchdog resets"),
    # signed updates and production lockdown (services/update.py, services/lockdown.py)
    (120, "upd_confirm_s", "s", 1, 3600, 60, 0,
     "a firmware in trial is confirmed after running this long with the grid synced and "
     "no fault (else the next reset reverts it)"),
    (121, "production", "", 0, 1, 0, 0,
     "1 locks the board: no REPL, no Ctrl-C; only a signed config unlocks it"),
    # fast protection
    (40, "oc_trip_pu", "pu", 1.20, 3.00, 2.00, 2, "instantaneous over-current trip"),
    (41, "vdc_max_v", "V", 300, 1100, 950, 0, "DC-link over-voltage trip"),
    # the link to the communication controller (firmware/services/link_service.py,
    # docs/link.md). A healthy UART loses next to nothing (bit errors ~1e-9: frame loss
    # ~1e-5), so these flag a broken link, not chance. Used only where the board data
    # names a link UART; a board without one runs as before.
    (110, "link_hb_timeout_ms", "ms", 300, 10000, 1000, 0,
     "no valid frame from the daemon this long: export ceased, then the DC contactors "
     "open (5 heartbeat periods: 4 heartbeats lost in a row are ridden through; bounds "
     "uncontrolled export after a daemon crash to 1 s)"),
    (111, "link_hb_period_ms", "ms", 50, 2000, 200, 0,
     "the board's heartbeat period (the daemon sends its own at the same rate)"),
    (112, "link_loss_permille", "permille", 1, 1000, 50, 0,
     "frames from the daemon lost above this share over a window: fault V2G-502, export "
     "ceased until a window is below it again (5 %: an order above a healthy UART)"),
    (113, "link_loss_window_ms", "ms", 1000, 60000, 5000, 0,
     "loss estimation window (25 daemon heartbeats at 200 ms)"),
    (114, "link_loss_min_frames", "", 5, 1000, 20, 0,
     "a window with fewer frames from the daemon is not judged (LOST covers silence)"),
    (115, "link_image_ms", "ms", 10, 1000, 10, 0,
     "register image period (10 = the supervisor period: the daemon's mirror is at most "
     "two periods old when one image is lost)"),
)

PID, NAME, UNIT, MIN, MAX, DEFAULT, DECIMALS, DOC = range(8)

# Category-dependent defaults and allowed ranges of the voltage trip settings (IEEE
# 1547-2018 Tables 11-13; frequency settings are the same for every category). A config
# that names a category gets that category's defaults for the keys it does not set.
CATEGORY_DEFAULTS = {
    1: {"ov1_s": 2.0, "uv1_pu": 0.70, "uv1_s": 2.0, "uv2_pu": 0.45, "uv2_s": 0.16},
    2: {"ov1_s": 2.0, "uv1_pu": 0.70, "uv1_s": 10.0, "uv2_pu": 0.45, "uv2_s": 0.16},
    3: {"ov1_s": 13.0, "uv1_pu": 0.88, "uv1_s": 21.0, "uv2_pu": 0.50, "uv2_s": 2.0},
}
CATEGORY_RANGES = {
    1: {"uv1_s": (2.0, 21.0), "uv2_s": (0.16, 2.0)},
    2: {"uv1_s": (2.0, 21.0), "uv2_s": (0.16, 2.0)},
    3: {"uv1_s": (21.0, 50.0), "uv2_s": (2.0, 21.0)},
}

_BY_NAME = {row[NAME]: row for row in TABLE}


def row(name):
    return _BY_NAME[name]


def to_int(row_, value):
    """A number in the row's unit -> the held integer (round half away from zero)."""
    scaled = value * 10 ** row_[DECIMALS]
    return int(scaled + 0.5) if scaled >= 0 else -int(-scaled + 0.5)


def to_number(row_, held):
    """The held integer -> a number in the row's unit (int where decimals is 0)."""
    d = row_[DECIMALS]
    return held if d == 0 else held / 10 ** d


def defaults():
    """{name: held int} for every parameter."""
    return {r[NAME]: to_int(r, r[DEFAULT]) for r in TABLE}


def _fmt(r, v):
    return ("%d" if r[DECIMALS] == 0 else "%." + str(r[DECIMALS]) + "f") % v


def describe_range(r):
    unit = (" " + r[UNIT]) if r[UNIT] else ""
    return "%s..%s%s" % (_fmt(r, r[MIN]), _fmt(r, r[MAX]), unit)


def validate(cfg, base=None):
    """Check ``cfg`` ({name: number}) on top of ``base`` ({name: held int}, defaults when
    None). Returns ``(held, errors)``: the full set of held ints, and a list of messages,
    one per problem, each naming the key, the value and what is allowed. When ``errors``
    is not empty, ``held`` must not be applied."""
    held = dict(base) if base is not None else defaults()
    errors = []
    cat = cfg.get("abnormal_category", held["abnormal_category"])
    if cat in CATEGORY_DEFAULTS:
        for key, value in CATEGORY_DEFAULTS[cat].items():
            if key not in cfg:
                held[key] = to_int(_BY_NAME[key], value)
    for key in cfg:
        value = cfg[key]
        r = _BY_NAME.get(key)
        if r is None:
            errors.append("unknown key '%s' (known: %s)" % (key, ", ".join(sorted(_BY_NAME))))
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            errors.append("key '%s': value %r is not a number; allowed %s"
                          % (key, value, describe_range(r)))
            continue
        v = to_int(r, value)
        if v < to_int(r, r[MIN]) or v > to_int(r, r[MAX]):
            errors.append("key '%s': value %r outside %s" % (key, value, describe_range(r)))
            continue
        held[key] = v
    errors.extend(_cross_checks(held))
    return held, errors


def _cross_checks(held):
    errors = []
    cat = held["abnormal_category"]
    for key, (lo, hi) in CATEGORY_RANGES.get(cat, {}).items():
        r = _BY_NAME[key]
        if not to_int(r, lo) <= held[key] <= to_int(r, hi):
            errors.append("key '%s': value %s outside %s..%s %s for category %s"
                          % (key, _fmt(r, to_number(r, held[key])), _fmt(r, lo), _fmt(r, hi),
                             r[UNIT], "I" * cat))
    if held["ov1_pu"] > held["ov2_pu"]:
        errors.append("key 'ov1_pu': value %.2f above ov2_pu %.2f; OV1 must be the lower "
                      "over-voltage region" % (held["ov1_pu"] / 100, held["ov2_pu"] / 100))
    if held["uv2_pu"] > held["uv1_pu"]:
        errors.append("key 'uv2_pu': value %.2f above uv1_pu %.2f; UV2 must be the deeper "
                      "under-voltage region" % (held["uv2_pu"] / 100, held["uv1_pu"] / 100))
    if held["of1_dhz"] > held["of2_dhz"]:
        errors.append("key 'of1_dhz': value %.1f above of2_dhz %.1f" % (
            held["of1_dhz"] / 10, held["of2_dhz"] / 10))
    if held["uf1_dhz"] > held["uf2_dhz"]:
        errors.append("key 'uf1_dhz': value %.1f above uf2_dhz %.1f" % (
            held["uf1_dhz"] / 10, held["uf2_dhz"] / 10))
    errors.extend(validate_thermal(held))
    if held["vw_v2_pu"] <= held["vw_v1_pu"]:
        errors.append("key 'vw_v2_pu': value %.2f must exceed vw_v1_pu %.2f" % (
            held["vw_v2_pu"] / 100, held["vw_v1_pu"] / 100))
    if held["f_nom_hz"] not in (50, 60):
        errors.append("key 'f_nom_hz': value %d not allowed; allowed 50 or 60 Hz"
                      % held["f_nom_hz"])
    # the trip must sit above the controlled peak plus ripple and transients: 0.2 pu
    if held["oc_trip_pu"] < held["i_max_pu"] + 20:
        errors.append("key 'oc_trip_pu': value %.2f must exceed i_max_pu %.2f by 0.20 pu"
                      % (held["oc_trip_pu"] / 100, held["i_max_pu"] / 100))
    errors.extend(validate_link(held))
    return errors


def validate_link(held):
    """Cross-checks of the link rows: the timeout must span at least three heartbeat
    periods (a gap is counted after two)."""
    if held["link_hb_timeout_ms"] < 3 * held["link_hb_period_ms"]:
        return ["key 'link_hb_timeout_ms': value %d below 3 x link_hb_period_ms %d; allowed "
                "%d..10000 ms" % (held["link_hb_timeout_ms"], held["link_hb_period_ms"],
                                  max(300, 3 * held["link_hb_period_ms"]))]
    return []


def isqrt(n):
    """floor(sqrt(n)) for an int n >= 0 (MicroPython's math has no isqrt)."""
    if n < 2:
        return n
    x = 1 << ((n.bit_length() + 1) >> 1) if hasattr(n, "bit_length") else n
    while True:
        y = (x + n // x) >> 1
        if y >= x:
            return x
        x = y


def v_peak_mv(held):
    """Voltage base: nominal phase-to-neutral peak, mV (integer: sqrt(2) * RMS)."""
    v_rms_mv = held["v_nom_ln_rms"] * 100  # held in 0.1 V
    return isqrt(2 * v_rms_mv * v_rms_mv)


def control_ints(held, tick_hz):
    """Fixed-point gains and limits for ``tick.Control`` from held parameters, integer math
    only (same bits on every runtime). Returns (cc_params, prot_params) as
    ``current.init`` and ``protect_fast.init`` take them."""
    f_nom = held["f_nom_hz"]
    x_mpu = held["filter_x_pu"]  # milli-pu
    kp_q12 = (x_mpu * held["cc_bandwidth_hz"] * 4096) // (f_nom * 1000)
    # Ki * Ts = Kp * 2*pi*f_i / tick_hz; 2*pi ~ 710/113 (error 8e-8)
    ki_q12 = (kp_q12 * 710 * held["cc_integral_hz"]) // (113 * tick_hz)
    wl_q12 = (x_mpu * 4096) // 1000
    i_max_q12 = (held["i_max_pu"] * 4096) // 100
    ramp_q20 = (held["p_ramp_pu_s"] << 20) // (10 * tick_hz)  # decis pu/s -> Q20 per tick
    int_max_q24 = 1 << 25  # 2 pu of voltage
    oc_q12 = (held["oc_trip_pu"] * 4096) // 100
    vdc_q12 = (held["vdc_max_v"] * 1000 * 4096) // v_peak_mv(held)
    return ((kp_q12, ki_q12, wl_q12, i_max_q12, ramp_q20, int_max_q24), (oc_q12, vdc_q12))


# ---------------------------------------------------------------- thermal cross-checks

SENSOR_MIN_C = -40.0  # the NTC's specified range (thermal.py faults readings outside it)
SENSOR_MAX_C = 150.0


def _pnum(held, key):
    return to_number(row(key), held[key])


def _rng(key, lo, hi):
    r = row(key)
    unit = (" " + r[UNIT]) if r[UNIT] else ""
    fmt = "%d" if r[DECIMALS] == 0 else "%." + str(r[DECIMALS]) + "f"
    return (fmt + ".." + fmt + "%s") % (lo, hi, unit)


def validate_thermal(held):
    """Cross-checks of the thermal rows of a full set of held ints; returns a list of
    messages naming key, value and the allowed range (empty when consistent). Part of
    ``validate``; the thermal supervision itself lives in ``thermal.py``."""
    errors = []
    g = {}
    for key in ("th_derate_start_c", "th_derated_c", "th_trip_c", "fan_t1_c", "fan_t2_c",
                "fan_t3_c", "fan_t4_c", "fan_duty1_pct", "fan_duty2_pct", "fan_duty3_pct",
                "fan_duty4_pct"):
        g[key] = _pnum(held, key)
    for key in ("th_derate_start_c", "th_derated_c", "th_trip_c", "fan_t1_c", "fan_t2_c",
                "fan_t3_c", "fan_t4_c"):
        if not SENSOR_MIN_C <= g[key] <= SENSOR_MAX_C:
            errors.append("key '%s': value %s outside the sensor range %s" % (
                key, g[key], _rng(key, SENSOR_MIN_C, SENSOR_MAX_C)))
    order = (("th_derate_start_c", "th_derated_c"), ("th_derated_c", "th_trip_c"))
    for lo_key, hi_key in order:
        if g[lo_key] >= g[hi_key]:
            r = row(lo_key)
            errors.append("key '%s': value %s must be below %s %s; allowed %s" % (
                lo_key, g[lo_key], hi_key, g[hi_key],
                _rng(lo_key, r[MIN], min(r[MAX], g[hi_key] - 1))))
    for n in (2, 3, 4):
        t_key, prev_t = "fan_t%d_c" % n, "fan_t%d_c" % (n - 1)
        if g[t_key] <= g[prev_t]:
            r = row(t_key)
            errors.append("key '%s': value %s must exceed %s %s (fan curve temperatures "
                          "increase); allowed %s" % (
                              t_key, g[t_key], prev_t, g[prev_t],
                              _rng(t_key, max(r[MIN], g[prev_t] + 1), r[MAX])))
        d_key, prev_d = "fan_duty%d_pct" % n, "fan_duty%d_pct" % (n - 1)
        if g[d_key] < g[prev_d]:
            r = row(d_key)
            errors.append("key '%s': value %s below %s %s (the fan curve must not fall); "
                          "allowed %s" % (d_key, g[d_key], prev_d, g[prev_d],
                                          _rng(d_key, g[prev_d], r[MAX])))
    return errors
