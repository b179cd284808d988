"""Thermal supervision: NTC conversion and plausibility, predictive derating, fan curve.

Above ``th_derated_c`` (85 C) the unit is in the de-rated state (field manual); this
module decides how far to limit, early enough that the module does not overshoot.

Units: temperatures C, current ``i_rms_pu`` (RMS current magnitude per unit of rated RMS
current: 1.0 = rated, the same number as the dq current magnitude in pu of rated peak),
power W, time ms in, s inside. Outputs: ``power_limit_factor`` 0.0..1.0 (limit on the
current magnitude, i.e. on the apparent power at nominal voltage, of rated), fan duty
0..100 %, ``derate_pct`` 0..100 (0 = no limit).

Pipeline (every ``PERIOD_MS``; ``step`` may be called more often and then returns the
last outputs):

1. NTC words -> temperature: ``R = R_pullup * w / (full_scale - w)`` (NTC to ground,
   pull-up to the ADC reference), beta model ``1/T = 1/T25 + ln(R/R25)/beta`` or the
   board's Steinhart-Hart ``1/T = a + b ln R + c ln^3 R``, plus a per-board offset.
   Plausibility per channel: open (word near full scale), short (near 0), outside the
   sensor range ``SENSOR_MIN_C..SENSOR_MAX_C``, slope beyond ``SLOPE_MAX_C_S`` against the
   last good value. A bad reading holds the last good value; ``BAD_SAMPLES`` in a row
   latch a sensor fault (0x51 module, 0x52 heatsink) that clears after ``CLEAR_MS`` of
   plausible readings. Plausible readings are low-passed (``FILTER_TAU_S``, 1 s, against
   noise; the module's own time constant is ~5 s). A faulted NTC is replaced by the
   model (module = heatsink + modelled module-over-heatsink rise, or the reverse) and the
   power is capped at ``th_sensor_fault_pct``; both faulted: limit 0.
2. Model, two nodes: module -> (R_mh, C_m) -> heatsink -> (unknown, fan-dependent) ->
   ambient. Losses ``P(i) = p_cond_w * i^2 + p_sw_w * i * v_dc / v_dc_ref_v``. The heat
   the heatsink sheds (``q_ha``, which hides ambient and fan) is estimated by an observer
   on the heatsink temperature; everything else is measured. Prediction of the module
   temperature ``H = th_horizon_s`` ahead if the current ``i`` were held from now:
       T_p(i) = A + B * P(i)        (affine in the losses; H = 0: T_p = measured module)
   Where the measured module-to-heatsink heat flow exceeds the model's losses at the
   present current, the difference is added to P (filtered): a loss model that reads
   low cannot make the prediction read low in steady state; one that reads high only
   derates earlier.
3. Derating curve on the *predicted* module temperature, piecewise linear, continuous:
   100 % up to ``th_derate_start_c`` (the initiation temperature), ``th_derated_pct`` at
   ``th_derated_c``, 0 at ``th_trip_c``. The limit is the fixed point
   ``i = curve(T_p(i))`` (solved exactly per segment: a quadratic), so the limit never
   chases its own effect on the prediction: no on/off cycling. Hysteresis: the limit
   falls at once, but rises only when the curve read ``th_hyst_c`` hotter allows more,
   and then at most ``RESTORE_PU_S``. Caps: failed fan ``th_fan_fail_pct``, sensor fault
   ``th_sensor_fault_pct``; module at/above ``th_trip_c``: over-temperature 0x50, limit 0,
   ``overtemp`` set until the module is back below ``th_derated_c - th_hyst_c``.
4. Fan: curve of 4 points (temperature of the module -> duty), linear between them, 0
   below the first point, ``fan_min_pct`` at least when on, hysteresis ``fan_hyst_c`` on
   the way down; 100 % with any fault. Fan fail: commanded duty that should give at
   least twice ``fan_fail_tach_hz`` but the tach reads below ``fan_fail_tach_hz`` for
   ``fan_fail_s`` -> fault 0x53 and the fan cap.

Events returned by ``step``: tuples ``(kind, code, name, detail)`` ready for
``journal.add(now_ms, *ev)``: ``("derate", "", "<pct>%", detail)`` on entering,
leaving and every ``DERATE_EVENT_STEP_PCT`` of change; ``("fault", code, NAME, detail)``;
``("clear", code, NAME, detail)``.

Usage::

    th = thermal.Thermal(held, board.get("ntc"), board.get("thermal"))
    factor, fan_pct, evs = th.step(now_ms, hal.ntc_raw(), i_rms_pu, hal.fan_tach_hz())

Context: supervisor (floats, allocates a little every ``PERIOD_MS``; never the tick).
Same results in CPython and the MicroPython unix runtime (+ - * / sqrt log exp only).
"""

import math

import params

try:
    from micropython import const
except ImportError:  # plain CPython without the project's stand-in
    def const(x):
        return x

PERIOD_MS = const(100)  # thermal update period (time constants are seconds)
SENSOR_MIN_C = params.SENSOR_MIN_C  # the NTC's specified range: readings outside it are faults
SENSOR_MAX_C = params.SENSOR_MAX_C
OPEN_FRAC = 0.992  # word above this fraction of full scale: open NTC (~-55 C)
SHORT_FRAC = 0.003  # word below this fraction: shorted NTC (~+240 C)
SLOPE_MAX_C_S = 20.0  # faster than this is not a temperature (module tau is ~5 s)
SLOPE_MARGIN_C = 2.0  # noise allowance on top of the slope limit
FILTER_TAU_S = 1.0  # plausible readings are low-passed before use (noise; module tau 5 s)
BAD_SAMPLES = const(3)  # consecutive implausible readings that latch a sensor fault
CLEAR_MS = const(10000)  # plausible this long clears a sensor fault
OBSERVER_TAU_S = 5.0  # heatsink observer: double pole at this time constant
RESTORE_PU_S = 0.1  # the limit rises at most this fast (pu per second)
DERATE_EVENT_STEP_PCT = const(10)

OVER_TEMPERATURE = "0x50"
NTC_MODULE = "0x51"
NTC_HEATSINK = "0x52"
FAN_FAIL = "0x53"

# rows for events.FAULTS: code -> (name, severity, action, operator text)
FAULTS = {
    "0x50": ("OVER_TEMPERATURE", "ERROR", "cease", "Power module over-temperature trip"),
    "0x51": ("NTC_MODULE_FAULT", "WARN", "report",
             "Module NTC implausible (open, short, range or slope); derated"),
    "0x52": ("NTC_HEATSINK_FAULT", "WARN", "report",
             "Heatsink NTC implausible (open, short, range or slope); derated"),
    "0x53": ("FAN_FAIL", "WARN", "report", "Fan commanded but its tach stays low; derated"),
}

# Board data defaults (board.json "ntc" and "thermal"): the reference power stage, which
# is what the sim board's plant models (boards/sim/plant.py DEFAULTS, 11 kW, 230 V):
# I_rated_rms = 11000 / (3 * 230) = 15.94 A; conduction 3 * 0.144 * I^2 = 109.8 W,
# switching 3 * 2.35e-3 * I * 800 V = 89.9 W at rated current.
NTC_DEFAULT = {"r25_ohm": 10000.0, "beta_k": 3950.0, "pullup_ohm": 10000.0,
               "full_scale": 65535, "sh_abc": None, "offset_c": (0.0, 0.0)}
MODEL_DEFAULT = {"r_mh_k_w": 0.08, "c_m_j_k": 62.5, "c_h_j_k": 706.0, "p_cond_w": 109.8,
                 "p_sw_w": 89.9, "v_dc_ref_v": 800.0, "tach_full_hz": 200.0}

_K0 = 273.15


def _merged(default, given):
    d = dict(default)
    if given:
        for k in given:
            if k not in default:
                raise ValueError("thermal board data: unknown key %r (known: %s)"
                                 % (k, ", ".join(sorted(default))))
            d[k] = given[k]
    return d


# ---------------------------------------------------------------- NTC conversion

def ntc_ohm(word, pullup_ohm=10000.0, full_scale=65535):
    """ADC word of the divider -> NTC resistance (ohm); None at or beyond the rails."""
    if word <= 0 or word >= full_scale:
        return None
    return pullup_ohm * word / (full_scale - word)


def ohm_to_c(r_ohm, r25_ohm=10000.0, beta_k=3950.0, sh_abc=None):
    """NTC resistance -> temperature, C: Steinhart-Hart when ``sh_abc`` is given, else the
    beta model."""
    ln_r = math.log(r_ohm)
    if sh_abc:
        a, b, c = sh_abc
        inv = a + b * ln_r + c * ln_r * ln_r * ln_r
    else:
        inv = 1.0 / (25.0 + _K0) + (ln_r - math.log(r25_ohm)) / beta_k
    return 1.0 / inv - _K0


def c_to_word(t_c, r25_ohm=10000.0, beta_k=3950.0, pullup_ohm=10000.0, full_scale=65535):
    """Inverse (beta model): the word an NTC at ``t_c`` reads (float; tests, limits)."""
    r = r25_ohm * math.exp(beta_k * (1.0 / (t_c + _K0) - 1.0 / (25.0 + _K0)))
    return full_scale * r / (r + pullup_ohm)


def convert(word, ntc, channel=0):
    """One NTC word -> (temperature C or None, fault reason or None). Reasons: "open",
    "short", "range". ``ntc``: merged board NTC data; ``channel`` picks the offset."""
    fs = ntc["full_scale"]
    if word >= fs * OPEN_FRAC:
        return None, "open"
    if word <= fs * SHORT_FRAC:
        return None, "short"
    t = ohm_to_c(ntc_ohm(word, ntc["pullup_ohm"], fs), ntc["r25_ohm"], ntc["beta_k"],
                 ntc["sh_abc"]) + ntc["offset_c"][channel]
    if t < SENSOR_MIN_C or t > SENSOR_MAX_C:
        return t, "range"
    return t, None


# ---------------------------------------------------------------- curves

def interp(points, x):
    """Piecewise-linear y(x) through ``points`` [(x, y), ...] (x increasing), clamped to
    the end values outside."""
    if x <= points[0][0]:
        return points[0][1]
    for k in range(1, len(points)):
        x1, y1 = points[k]
        if x <= x1:
            x0, y0 = points[k - 1]
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def solve_limit(curve, a, b, p_cond, p_sw):
    """The largest current i in [0, 1] (pu) with ``i = curve(a + b * P(i))``,
    ``P(i) = p_cond * i^2 + p_sw * i``: the fixed point of a decreasing curve
    [(t_c, factor), ...] (t increasing, factor decreasing from 1.0) and an increasing
    prediction. Exact per segment (quadratic, cancellation-free root)."""
    t_hi = a + b * (p_cond + p_sw)  # prediction at full current
    if t_hi <= curve[0][0]:
        return 1.0
    for k in range(1, len(curve)):
        t0, f0 = curve[k - 1]
        t1, f1 = curve[k]
        if a + b * (p_cond * f1 * f1 + p_sw * f1) <= t1:  # root in [f1, f0]
            m = (f0 - f1) / (t1 - t0)
            qa = m * b * p_cond
            qb = 1.0 + m * b * p_sw
            qc = f0 - m * (a - t0)
            if qc <= 0.0:
                return 0.0
            i = 2.0 * qc / (qb + math.sqrt(qb * qb + 4.0 * qa * qc))
            return i if i < 1.0 else 1.0
    return 0.0


# ---------------------------------------------------------------- the supervisor object

class _Channel:
    """Plausibility state of one NTC."""

    def __init__(self, code):
        self.code = code
        self.good_c = None  # last plausible temperature
        self.bad = 0  # consecutive implausible readings
        self.fault = False
        self.reason = ""
        self.prev_c = None  # previous raw reading while faulted (slope for clearing)
        self.ok_since_ms = None


class Thermal:
    """Thermal supervision of one power stage. ``held``: the parameter table's held ints
    (``params.validate``); ``board_ntc`` / ``board_thermal``: board.json's ``ntc`` and
    ``thermal`` objects (keys of ``NTC_DEFAULT`` / ``MODEL_DEFAULT``; None: defaults).

    Read after ``step``: ``derate_pct`` (int 0..100), ``factor`` (the last power limit
    factor), ``derated`` (limit in force: supervisor state DERATED), ``overtemp`` (trip
    0x50 active: keep the unit de-energized), ``t_module_c``, ``t_heatsink_c`` (measured,
    or modelled where the NTC is faulted; None before the first reading), ``t_pred_c``
    (predicted module temperature at the limit current), ``fan_duty_pct``,
    ``faults`` ({code: detail} of the active thermal faults)."""

    def __init__(self, held, board_ntc=None, board_thermal=None):
        def num(key):
            return params.to_number(params.row(key), held[key])

        self.ntc = _merged(NTC_DEFAULT, board_ntc)
        off = self.ntc["offset_c"]
        if isinstance(off, (int, float)):
            self.ntc["offset_c"] = (float(off), float(off))
        m = _merged(MODEL_DEFAULT, board_thermal)
        self.r_mh = float(m["r_mh_k_w"])
        self.c_h = float(m["c_h_j_k"])
        self.tau_m = self.r_mh * float(m["c_m_j_k"])
        self.p_cond = float(m["p_cond_w"])
        self.p_sw = float(m["p_sw_w"])
        self.v_dc_ref = float(m["v_dc_ref_v"])
        self.tach_full_hz = float(m["tach_full_hz"])

        self.t_start = float(num("th_derate_start_c"))
        self.t_derated = float(num("th_derated_c"))
        self.t_trip = float(num("th_trip_c"))
        self.hyst = float(num("th_hyst_c"))
        self.horizon_s = float(num("th_horizon_s"))
        self.curve = ((self.t_start, 1.0), (self.t_derated, num("th_derated_pct") / 100.0),
                      (self.t_trip, 0.0))
        self.fan_curve = tuple((float(num("fan_t%d_c" % n)), float(num("fan_duty%d_pct" % n)))
                               for n in (1, 2, 3, 4))
        self.fan_min = float(num("fan_min_pct"))
        self.fan_hyst = float(num("fan_hyst_c"))
        self.fail_tach_hz = float(num("fan_fail_tach_hz"))
        self.fail_ms = int(num("fan_fail_s") * 1000 + 0.5)
        self.cap_fan = num("th_fan_fail_pct") / 100.0
        self.cap_sensor = num("th_sensor_fault_pct") / 100.0
        # prediction constants (fixed per config): see step()
        e = math.exp(-self.horizon_s / self.tau_m)
        self._e = e
        self._b = (self.horizon_s - self.tau_m * (1.0 - e)) / self.c_h + self.r_mh * (1.0 - e)

        self.ch = (_Channel(NTC_MODULE), _Channel(NTC_HEATSINK))
        self.last_ms = None
        self.t_module_c = None
        self.t_heatsink_c = None
        self.t_pred_c = None
        self.dt_mh = 0.0  # modelled module-over-heatsink rise, K
        self.th_obs = None  # observer: heatsink temperature, C
        self.q_ha = 0.0  # observer: heat leaving the heatsink, W
        self.extra_w = 0.0  # measured losses above the loss model, W (filtered, >= 0)
        self.lim_curve = 1.0  # curve limit after the hysteresis
        self.factor = 1.0  # output; the first step sets it without the restore ramp
        self.derate_pct = 0
        self.derated = False
        self.reported_pct = 0
        self.reason = ""  # what limits: temperature, sensor, fan_fail, overtemp
        self.overtemp = False
        self.fan_t = None  # fan-curve temperature after the hysteresis
        self.fan_duty_pct = 100
        self.fan_failed = False
        self.fan_since_ms = None
        self.faults = {}
        self._out = (1.0, 100, ())

    # ---- pieces (pure given the state) ----

    def losses_w(self, i_pu, v_dc_v=None):
        """Module losses at ``i_pu`` (W)."""
        ps = self.p_sw if v_dc_v is None else self.p_sw * v_dc_v / self.v_dc_ref
        return self.p_cond * i_pu * i_pu + ps * i_pu

    def fan_duty(self, t_c):
        """Fan duty (%) for a fan-curve temperature (after hysteresis)."""
        if t_c < self.fan_curve[0][0]:
            return 0
        d = interp(self.fan_curve, t_c)
        if d < self.fan_min:
            d = self.fan_min
        return int(d + 0.5)

    def _fault(self, evs, code, detail):
        self.faults[code] = detail
        evs.append(("fault", code, FAULTS[code][0], detail))

    def _clear(self, evs, code, detail=""):
        if code in self.faults:
            del self.faults[code]
            evs.append(("clear", code, FAULTS[code][0], detail))

    def _read(self, ch, k, word, now_ms, dt, evs):
        """Plausibility of one channel: the temperature to use, or None (faulted)."""
        t, reason = convert(word, self.ntc, k)
        lim = SLOPE_MAX_C_S * dt + SLOPE_MARGIN_C
        if not ch.fault:
            if reason is None and ch.good_c is not None and abs(t - ch.good_c) > lim:
                reason = "slope"
            if reason is None:
                ch.good_c = t
                ch.bad = 0
                return t
            ch.bad += 1
            if ch.bad < BAD_SAMPLES:
                return ch.good_c  # hold the last good value (None at start-up)
            ch.fault = True
            ch.reason = reason
            ch.prev_c = t
            ch.ok_since_ms = None
            self._fault(evs, ch.code, "%s word=%d last_good=%s" % (
                reason, word, "none" if ch.good_c is None else "%.1fC" % ch.good_c))
            return None
        # faulted: clear after CLEAR_MS of in-range readings that move plausibly
        steady = reason is None and ch.prev_c is not None and abs(t - ch.prev_c) <= lim
        ch.prev_c = t
        if not steady:
            ch.ok_since_ms = None
        elif ch.ok_since_ms is None:
            ch.ok_since_ms = now_ms
        elif now_ms - ch.ok_since_ms >= CLEAR_MS:
            ch.fault = False
            ch.bad = 0
            ch.good_c = t
            self._clear(evs, ch.code, "%.1fC" % t)
            return t
        return None

    # ---- the step ----

    def step(self, now_ms, ntc_words, i_rms_pu, fan_tach_hz, v_dc_v=None):
        """One supervision step. ``ntc_words``: (module, heatsink) words as
        ``hal.ntc_raw()`` returns them; ``i_rms_pu``: present current magnitude, pu of
        rated; ``fan_tach_hz``: ``hal.fan_tach_hz()``; ``v_dc_v``: DC-link voltage (None:
        the model's reference). Returns ``(power_limit_factor 0..1, fan_duty_pct 0..100,
        events)``. Work is done every ``PERIOD_MS``; calls in between return the last
        outputs with no events."""
        if self.last_ms is not None and now_ms - self.last_ms < PERIOD_MS:
            return self._out
        first = self.last_ms is None
        dt = PERIOD_MS / 1000.0 if first else (now_ms - self.last_ms) / 1000.0
        self.last_ms = now_ms
        evs = []
        i = i_rms_pu if i_rms_pu >= 0 else -i_rms_pu
        ps = self.p_sw if v_dc_v is None else self.p_sw * v_dc_v / self.v_dc_ref
        p_now = self.p_cond * i * i + ps * i
        # 1. sensors, with the model standing in for a faulted one
        tm = self._read(self.ch[0], 0, ntc_words[0], now_ms, dt, evs)
        th = self._read(self.ch[1], 1, ntc_words[1], now_ms, dt, evs)
        kf = dt / FILTER_TAU_S
        kf = kf if kf < 1.0 else 1.0
        if tm is not None:
            tm = tm if self.t_module_c is None else self.t_module_c + (tm - self.t_module_c) * kf
        if th is not None:
            th = (th if self.t_heatsink_c is None
                  else self.t_heatsink_c + (th - self.t_heatsink_c) * kf)
        k = dt / self.tau_m
        self.dt_mh += (p_now * self.r_mh - self.dt_mh) * (k if k < 1.0 else 1.0)
        if tm is not None and th is not None:
            self.dt_mh = tm - th  # measured: the model continues from reality
        elif tm is None and th is not None:
            tm = th + self.dt_mh
        elif th is None and tm is not None:
            th = tm - self.dt_mh
        self.t_module_c = tm
        self.t_heatsink_c = th
        cap = 1.0
        why = "temperature"
        if self.ch[0].fault or self.ch[1].fault:
            cap = self.cap_sensor
            why = "sensor"
        if tm is None:
            cap = 0.0
        if self.fan_failed and self.cap_fan < cap:
            cap = self.cap_fan
            why = "fan_fail"
        # 2. observer of the heat the heatsink sheds (ambient and fan hidden in it)
        if th is not None:
            q_mh = self.dt_mh / self.r_mh
            if self.th_obs is None:
                self.th_obs = th
                self.q_ha = q_mh  # start-up: assume steady state
            a = dt / OBSERVER_TAU_S
            if a > 0.5:
                a = 0.5
            err = th - self.th_obs
            self.th_obs += dt * (q_mh - self.q_ha) / self.c_h + 2.0 * a * err
            self.q_ha -= a * a * self.c_h / dt * err
            # the measured heat flow corrects a loss model that reads low: the future
            # losses are P(i) + extra, extra = max(0, q_mh - P(i_now)) filtered, so the
            # prediction is exact in steady state whatever the loss model says, and
            # never below what the model says (conservative for a model that reads high)
            x = q_mh - p_now
            self.extra_w += ((x if x > 0.0 else 0.0) - self.extra_w) * (k if k < 1.0 else 1.0)
            # prediction H ahead with the current i held: T_p(i) = A + B * P(i)
            e = self._e
            h = self.horizon_s
            big_a = (th + (q_mh * self.tau_m * (1.0 - e) - h * self.q_ha) / self.c_h
                     + self.dt_mh * e + self._b * self.extra_w)
            # 3. the curve's fixed point, with hysteresis on the way up
            down = solve_limit(self.curve, big_a, self._b, self.p_cond, ps)
            if down < self.lim_curve:
                self.lim_curve = down
            else:
                up = solve_limit(self.curve, big_a + self.hyst, self._b, self.p_cond, ps)
                if up > self.lim_curve:
                    self.lim_curve = up
            lc = self.lim_curve
            self.t_pred_c = big_a + self._b * (self.p_cond * lc * lc + ps * lc)
        else:
            self.t_pred_c = None
        # over-temperature: trip at th_trip_c, clear below th_derated_c - hysteresis
        if tm is not None:
            if not self.overtemp and tm >= self.t_trip:
                self.overtemp = True
                self._fault(evs, OVER_TEMPERATURE, "t_module=%.1fC >= %.1fC" % (
                    tm, self.t_trip))
            elif self.overtemp and tm < self.t_derated - self.hyst:
                self.overtemp = False
                self._clear(evs, OVER_TEMPERATURE, "t_module=%.1fC" % tm)
        if self.overtemp:
            cap = 0.0
            why = "overtemp"
        target = self.lim_curve if self.lim_curve < cap else cap
        self.reason = "temperature" if self.lim_curve < cap else why
        if target <= self.factor or first:
            self.factor = target
        else:
            f = self.factor + RESTORE_PU_S * dt
            self.factor = f if f < target else target
        pct = 100 - int(self.factor * 100.0 + 0.5)
        self.derate_pct = pct
        self.derated = pct > 0
        rp = self.reported_pct
        if pct != rp and (pct == 0 or rp == 0 or pct - rp >= DERATE_EVENT_STEP_PCT
                          or rp - pct >= DERATE_EVENT_STEP_PCT):
            self.reported_pct = pct
            evs.append(("derate", "", "%d%%" % pct, "reason=%s t_module=%s t_pred=%s" % (
                self.reason if pct else "none", _c(tm), _c(self.t_pred_c))))
        # 4. fan: curve with hysteresis on the way down, 100 % with any fault
        self._fan(now_ms, tm, fan_tach_hz, evs)
        self._out = (self.factor, self.fan_duty_pct, ())  # calls until the next period
        return self.factor, self.fan_duty_pct, evs

    def _fan(self, now_ms, tm, tach_hz, evs):
        cmd = self.fan_duty_pct  # what the fan has been running on since the last step
        expect_hz = cmd * self.tach_full_hz / 100.0
        if expect_hz >= 2.0 * self.fail_tach_hz and cmd > 0:
            bad = tach_hz < self.fail_tach_hz
            if bad != self.fan_failed:  # a change must persist fan_fail_s
                if self.fan_since_ms is None:
                    self.fan_since_ms = now_ms
                elif now_ms - self.fan_since_ms >= self.fail_ms:
                    self.fan_failed = bad
                    self.fan_since_ms = None
                    if bad:
                        self._fault(evs, FAN_FAIL, "duty=%d%% tach=%.1fHz for %.1fs" % (
                            cmd, tach_hz, self.fail_ms / 1000.0))
                    else:
                        self._clear(evs, FAN_FAIL, "tach=%.1fHz" % tach_hz)
            else:
                self.fan_since_ms = None
        else:
            self.fan_since_ms = None
        if tm is None or self.faults:
            self.fan_duty_pct = 100
            return
        ft = self.fan_t
        if ft is None or tm > ft:
            ft = tm
        elif tm < ft - self.fan_hyst:
            ft = tm + self.fan_hyst
        self.fan_t = ft
        self.fan_duty_pct = self.fan_duty(ft)

    def status(self):
        """Dict for the status command and Modbus input registers."""
        return {"t_module_c": self.t_module_c, "t_heatsink_c": self.t_heatsink_c,
                "t_pred_c": self.t_pred_c, "derate_pct": self.derate_pct,
                "power_limit_factor": self.factor, "fan_duty_pct": self.fan_duty_pct,
                "fan_failed": self.fan_failed, "overtemp": self.overtemp, "reason": self.reason,
                "faults": dict(self.faults)}


def _c(t):
    return "none" if t is None else "%.1fC" % t
