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
    # fast protection
    (40, "oc_trip_pu", "pu", 1.20, 3.00, 2.00, 2, "instantaneous over-current trip"),
    (41, "vdc_max_v", "V", 300, 1100, 950, 0, "DC-link over-voltage trip"),
)

PID, NAME, UNIT, MIN, MAX, DEFAULT, DECIMALS, DOC = range(8)

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
    if held["f_nom_hz"] not in (50, 60):
        errors.append("key 'f_nom_hz': value %d not allowed; allowed 50 or 60 Hz"
                      % held["f_nom_hz"])
    # the trip must sit above the controlled peak plus ripple and transients: 0.2 pu
    if held["oc_trip_pu"] < held["i_max_pu"] + 20:
        errors.append("key 'oc_trip_pu': value %.2f must exceed i_max_pu %.2f by 0.20 pu"
                      % (held["oc_trip_pu"] / 100, held["i_max_pu"] / 100))
    return errors


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
