"""Unintentional-islanding detection (IEEE 1547-2018 8.1: cease to energize and trip
within 2 s of an island forming), for the supervisor of a current-controlled converter.

Method: reactive-power perturbation with frequency correlation (an active method of the
reactive-power-variation family), plus a sustained-ROCOF passive line.

Why this method. In the IEEE 1547.1 test island (a parallel RLC resonant at f_nom with
quality factor Qf and R matched to the unit's P) a current-controlled unit keeps voltage
and frequency where they were: passive methods see nothing. But the island frequency now
answers the unit's reactive power: the RLC absorbs ``Q_L = P * Qf * (f0/f - f/f0)``, so a
unit absorbing ``dq`` more moves the frequency by ``df / f0 = dq / (2 Qf |P|)`` within
milliseconds (the RLC's own time constant is ``Qf / (pi f0)``, 6 ms at 50 Hz for Qf 1).
A grid does not move at all. So the detector steps the reactive-power command by a small
known pattern and measures how much the frequency follows it: the "island stiffness"
``k = (df / f0) / (dq / |P|)`` is ``1 / (2 Qf)`` in an island (0.5 for the 1547.1 load)
and 0 on the grid. It suits a unit whose supervisor can only change its P/Q commands
every 10 ms: the perturbation is pure reactive power (no harmonics, no energy), needs no
frequency threshold inside the ride-through range, and does not care where the island's
frequency settles. Frequency-shift methods (Sandia, slip-mode: positive Q-f feedback)
were not chosen: they only act together with the OF/UF trips, whose 1547 ride-through
windows are wide (56.5..62 Hz at 60 Hz), and they add reactive power to every grid
frequency excursion.

Pattern: the Q command steps by ``+/-amp`` in chips of ``chip_periods`` supervisor
periods (40 ms); a window is four chips with the signs ``(+, -, -, +)`` times a
pseudo-random polarity per window (16-bit LFSR), so no periodic disturbance correlates
with it window after window. A frequency sample answers the chip emitted
``delay_periods`` earlier (1: the sample taken just before the next step sees the whole
chip); the first ``skip_periods`` samples of each chip are left out (PLL and RLC
settling). With ``F1..F4`` the chip sums (n samples each, mHz), the window statistic
``D = pol * (F1 - F2 - F3 + F4)`` is blind to the frequency's offset AND its linear trend
(a ROCOF ramp cancels exactly); an island gives ``D = 4 n f0 k amp / |P|``, so
``k = D |P| / (4 n f0 amp)``. A window votes "island" when ``k >= k_min`` (with the right
sign: an island always answers absorbed Q with a frequency rise) and the residual
``|F1 - 3 F2 + 3 F3 - F4|`` (what neither offset, ramp nor pattern explains, scaled to
the answer) stays below ``resid_max``: a clean island answer leaves < 0.08, a frequency
step or phase jump typically 0.45 or 1.34. ``confirm_windows`` votes in a row trip.
Measured in simulation (1547.1 load, Qf 1): k = 0.39..0.50; Qf 2.5: 0.20.

ROCOF immunity, by construction: a measured frequency whose slope stays within R
(Hz/s) moves ``|D| / n`` by at most ``2 R T_chip`` (F4 - F3 and F2 - F1 are sums of
samples one chip apart), i.e. ``k <= R T_chip / (2 f0 amp/|P|)``. With the defaults
(k_min 0.1, amp 2 % of |P|, 40 ms chips) no window can vote below R = 5 Hz/s at 50 Hz
(6 Hz/s at 60 Hz): every ROCOF the unit must ride through (3 Hz/s at most, Category
III) is invisible, whatever the trajectory. ``rocof_immune_mhz_s`` gives the figure for
the settings in use. Frequency steps and phase jumps are not slope-bounded, but each
disturbs one window (two at most) and mostly fails the residual test as well.

Amplitude: ``amp = max(amp_permille / 1000 * |P|, amp_min)``, fixed per window, so the
island answer ``df = f0 * k * amp / |P|`` (0.5 Hz at 50 Hz, 0.6 Hz at 60 Hz for k = 0.5)
is the same at every output level. Near the current limit (active-power priority:
``|q| <= sqrt(S**2 - p**2)``, ``S = v * i_max``) the step would be clipped and the unit
blind (a sustained island at rated export with a Q setpoint beyond the limit was seen in
simulation). ``perturbation`` therefore acts around the Q the unit really delivers and
returns a small P reduction that makes room: ``|P| -> sqrt(S**2 - (|Q| + amp)**2)``.

Passive line: mean frequency over blocks of ``rocof_block_periods`` (50 ms); a trip
when the block-to-block ROCOF stays beyond ``rocof_mhz_s`` (5 Hz/s) with one sign for
``rocof_blocks`` (5) blocks in a row (250 ms). A frequency step or a phase jump moves at
most two blocks, so it takes several same-signed ones within 250 ms to fool it. It
catches islands whose frequency runs away (a rotating load, a drifting mismatch); the
1547.1 island does not run away, the active line finds it.

Usage (supervisor, every period, in this order; ``active`` is true while the unit
commands current: ENERGIZED/DERATED, PLL locked, not in momentary cessation)::

    det = islanding.Detector(f_nom_hz, period_ms=10, i_max_q12=i_max_pu * 4096 // 100)
    hit = det.step(now_ms, f_hz, v_pos_pu, active)       # None or ("ISLAND", detail)
    if hit: latch the trip "ISLAND": PWM off, contactor open, TRIPPED
    ...
    q_x, p_x = det.perturbation(now_ms, active, p_q12, q_q12)     # in _apply_power
    current.set_power(cc, p_q12 + p_x, q_q12 + q_x)

Units: powers Q12 of rated apparent power (as ``current.set_power``), ``q > 0``
absorbing (docs/design.md section 7); the frequency is converted once to integer mHz and the voltage
to Q12; everything after that is integer arithmetic within +/-2**30, so CPython, the
unix runtime and 32-bit boards agree bit for bit on the same inputs (on a float32 board
``f_hz`` is itself rounded to a few uHz first, which can move the mHz value by one).
Context: supervisor. Per period: a few boxed floats in the conversions, nothing else
allocated (a tuple and a string on a detection).
"""

import current

_PATTERN = (1, -1, -1, 1)  # chip signs of a window: orthogonal to offset and ramp
_MARGIN_Q12 = 2  # headroom kept below the current limit for the voltage moving


def _check(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError("islanding: %s=%r outside %d..%d" % (name, value, lo, hi))


class Detector:
    """Islanding detector for one grid-side converter. See the module docstring.

    Settings (integers; ValueError naming the setting outside the ranges given):
    - ``f_nom_hz``: nominal frequency, a number in 40..70 (50 or 60);
    - ``period_ms`` (5..50): the supervisor period between ``step`` calls;
    - ``chip_periods`` (2..16, default 4): periods per chip (a window is 4 chips);
    - ``delay_periods`` (1..4, default 1): a sample answers the chip emitted this many
      periods before it;
    - ``skip_periods`` (0..chip_periods-1, default 2): leading samples of a chip left out;
    - ``amp_permille`` (1..100, default 20): Q step, permille of |P|;
    - ``amp_min_q12`` (1..200, default 8): Q step floor, Q12 of rated (0.2 %);
    - ``p_floor_q12`` (1..4096, default 41): |P| floor of the normalisation, Q12 (1 %);
    - ``k_min_permille`` (10..1000, default 100): stiffness a window must show (k = 1 /
      (2 Qf): 0.1 still sees Qf 5);
    - ``resid_max_permille`` (10..2000, default 250): largest residual of a voting window;
    - ``confirm_windows`` (1..10, default 3): votes in a row that trip;
    - ``rocof_mhz_s`` (0 = off, else 1000..100000; default 5000), ``rocof_block_periods``
      (2..20, default 5), ``rocof_blocks`` (2..10, default 5): the passive line;
    - ``i_max_q12`` (400..4506, default 4096): the current controller's magnitude limit,
      Q12 of rated peak current (``params`` ``i_max_pu * 4096 // 100``);
    - ``seed`` (1..65535, default 0xACE1): LFSR seed of the window polarities.
    ``amp_min_q12`` may not be below ``amp_permille * p_floor_q12 / 1000`` (the step
    relative to the normalising |P| never shrinks below ``amp_permille``).
    """

    def __init__(self, f_nom_hz, period_ms=10, chip_periods=4, delay_periods=1,
                 skip_periods=2, amp_permille=20, amp_min_q12=8, p_floor_q12=41,
                 k_min_permille=100, resid_max_permille=250, confirm_windows=3,
                 rocof_mhz_s=5000, rocof_block_periods=5, rocof_blocks=5, i_max_q12=4096,
                 seed=0xACE1):
        if isinstance(f_nom_hz, bool) or not isinstance(f_nom_hz, (int, float)) or \
                not 40 <= f_nom_hz <= 70:
            raise ValueError("islanding: f_nom_hz=%r outside 40..70" % (f_nom_hz,))
        _check("period_ms", period_ms, 5, 50)
        _check("chip_periods", chip_periods, 2, 16)
        _check("delay_periods", delay_periods, 1, 4)
        _check("skip_periods", skip_periods, 0, chip_periods - 1)
        _check("amp_permille", amp_permille, 1, 100)
        _check("amp_min_q12", amp_min_q12, 1, 200)
        _check("p_floor_q12", p_floor_q12, 1, 4096)
        _check("k_min_permille", k_min_permille, 10, 1000)
        _check("resid_max_permille", resid_max_permille, 10, 2000)
        _check("confirm_windows", confirm_windows, 1, 10)
        if rocof_mhz_s != 0:
            _check("rocof_mhz_s", rocof_mhz_s, 1000, 100000)
        _check("rocof_block_periods", rocof_block_periods, 2, 20)
        _check("rocof_blocks", rocof_blocks, 2, 10)
        _check("i_max_q12", i_max_q12, 400, 4506)
        _check("seed", seed, 1, 65535)
        if amp_min_q12 * 1000 < amp_permille * p_floor_q12:
            raise ValueError("islanding: amp_min_q12=%d below amp_permille * p_floor_q12 / "
                             "1000 = %d" % (amp_min_q12, amp_permille * p_floor_q12 // 1000))
        self.f0_mhz = int(f_nom_hz * 1000 + 0.5)
        self.period_ms = period_ms
        self.m = chip_periods
        self.d = delay_periods
        self.skip = skip_periods
        self.amp_pm = amp_permille
        self.amp_min = amp_min_q12
        self.p_floor = p_floor_q12
        self.k_min_pm = k_min_permille
        self.resid_max_pm = resid_max_permille
        self.confirm = confirm_windows
        self.rocof_mhz_s = rocof_mhz_s
        self.blk = rocof_block_periods
        self.rocof_n = rocof_blocks
        self.i_max = i_max_q12
        self._lfsr = seed
        # per emission window, two slots (window index & 1): polarity, Q step (Q12) and
        # E1 = 4 f0 amp / |P| (mHz), the per-sample D of an island with k = 1
        self._pol = [1, 1]
        self._amp = [0, 0]
        self._e1 = [1, 1]
        self._chip = [0, 0, 0, 0]  # frequency sums (mHz) per chip of the window answered
        self.v_q12 = 4096
        # telemetry: the newest window, and the extremes of the newest energized run
        self.last_k_permille = 0
        self.last_resid_permille = 0
        self.windows = 0  # windows that voted (either way) in the run
        self.k_hi_permille = 0
        self.k_lo_permille = 0
        self.hits_hi = 0  # most votes in a row
        self.rocof_mhz_s_last = 0
        self.rocof_hi_mhz_s = 0  # largest |block-to-block ROCOF|
        self.detected = None  # the ("ISLAND", detail) last returned, until reset()
        self._reset_run()

    @property
    def rocof_immune_mhz_s(self):
        """The grid ROCOF (mHz/s) below which no window can vote, whatever the frequency
        trajectory: ``2 k_min f0 (amp/|P|) / T_chip`` (module docstring)."""
        return (2 * self.k_min_pm * self.f0_mhz * self.amp_pm
                // (self.m * self.period_ms * 1000))

    # ---- state ----

    def _reset_run(self):
        """Forget the measurement: the next energized period starts a new run."""
        self._k = 0  # perturbation periods emitted in this run
        self._last_ms = None
        self._fresh = False
        for i in range(4):
            self._chip[i] = 0
        self.hits = 0  # votes in a row
        self._blk_sum = 0
        self._blk_cnt = 0
        self._blk_prev = None  # previous block's frequency sum (mHz * periods)
        self._rocof_run = 0  # signed count of blocks in a row beyond the threshold

    def reset(self):
        """Clear a detection and the measurement (after the trip has been handled)."""
        self.detected = None
        self._reset_run()

    # ---- supervisor calls ----

    def step(self, now_ms, f_hz, v_pos_pu, energized):
        """Take this period's PLL frequency (Hz) and positive-sequence amplitude (pu).
        ``energized``: the unit commands current this period. Returns None, or
        ``("ISLAND", detail)`` in the period the island is recognised (and again each
        window after, should the unit still be energized). Call once every period,
        before ``perturbation``. Context: supervisor."""
        if not energized:
            if self._last_ms is not None:
                self._reset_run()
            return None
        if self._last_ms is None:  # a new run: fresh telemetry
            self.windows = 0
            self.k_hi_permille = 0
            self.k_lo_permille = 0
            self.hits_hi = 0
            self.rocof_hi_mhz_s = 0
        elif now_ms - self._last_ms > 2 * self.period_ms:
            self._reset_run()  # a late supervisor: samples and chips no longer line up
        self._last_ms = now_ms
        self._fresh = True
        f = int(f_hz * 1000 + 0.5)
        f = 0 if f < 0 else (200000 if f > 200000 else f)
        v = int(v_pos_pu * 4096 + 0.5)
        self.v_q12 = 0 if v < 0 else (8192 if v > 8192 else v)
        hit = self._passive(f)
        if hit is None:
            hit = self._active(f)
        if hit is not None:
            self.detected = hit
        return hit

    def perturbation(self, now_ms, energized, p_q12, q_q12):
        """``(q_extra_q12, p_extra_q12)`` to add to this period's power commands, given
        the commands ``p_q12``/``q_q12`` (Q12 of rated, within +/-8192) the supervisor is
        about to apply; (0, 0) when not energized. The first call after ``step`` moves
        the pattern on by one period; more calls in the same period (a setpoint applied
        at once) return the same Q step, with the headroom worked out for the new
        commands. ``p_extra`` only ever shrinks |P| (near the current limit).
        Context: supervisor."""
        if not energized:
            return 0, 0
        k = self._k
        win = 4 * self.m
        ap = p_q12 if p_q12 >= 0 else -p_q12
        if ap > 8192:  # 2 pu: set_power() accepts 1.5
            ap = 8192
        if self._fresh:
            self._fresh = False
            self._k = k + 1
            if k % win == 0:
                self._new_window((k // win) & 1, ap)
        elif k == 0:
            return 0, 0
        else:
            k -= 1
        amp = self._amp[(k // win) & 1]
        q_x = self._pol[(k // win) & 1] * _PATTERN[(k % win) // self.m] * amp
        # Headroom under the current limit (active-power priority): act around the Q
        # the unit really delivers (a command beyond the limit comes back to it; the
        # controller would clip it anyway) and shrink |p| just enough for |q| + amp.
        s_lim = ((self.v_q12 * self.i_max) >> 12) - _MARGIN_Q12
        if s_lim <= 0:
            return q_x, 0
        p_d = ap if ap < s_lim else s_lim
        q_room = current.isqrt(s_lim * s_lim - p_d * p_d)
        aq = q_q12 if q_q12 >= 0 else -q_q12
        if aq > 8192:
            aq = 8192
        if aq > q_room:
            q_x += (q_room - aq) if q_q12 >= 0 else (aq - q_room)
            aq = q_room
        need = aq + amp
        if need >= s_lim:
            return q_x, 0
        p_max = current.isqrt(s_lim * s_lim - need * need)
        if ap <= p_max:
            return q_x, 0
        return q_x, (p_max - ap if p_q12 > 0 else ap - p_max)

    # ---- internals ----

    def _new_window(self, slot, ap):
        b = self._lfsr  # 16-bit Galois LFSR, taps 0xB400 (maximal length)
        lsb = b & 1
        b >>= 1
        if lsb:
            b ^= 0xB400
        self._lfsr = b
        self._pol[slot] = 1 if lsb else -1
        amp = (ap * self.amp_pm + 500) // 1000
        if amp < self.amp_min:
            amp = self.amp_min
        pn = ap if ap > self.p_floor else self.p_floor
        self._amp[slot] = amp
        self._e1[slot] = (4 * self.f0_mhz * amp) // pn  # mHz; 4 f0 amp < 2**28

    def _active(self, f):
        j = self._k - self.d  # the emission this sample answers
        if j < 0:
            return None
        m = self.m
        win = 4 * m
        pos = j % win
        c = self._chip
        if pos % m >= self.skip:
            c[pos // m] += f
        if pos != win - 1:
            return None
        slot = (j // win) & 1
        dd = c[0] - c[1] - c[2] + c[3]
        cu = c[0] - 3 * c[1] + 3 * c[2] - c[3]
        c[0] = c[1] = c[2] = c[3] = 0
        # clamps keep every product below 2**30 (far beyond any real answer)
        dd = -0xFFFFF if dd < -0xFFFFF else (0xFFFFF if dd > 0xFFFFF else dd)
        cu = -cu if cu < 0 else cu
        cu = 0x1FFFFF if cu > 0x1FFFFF else cu
        e1 = (m - self.skip) * self._e1[slot]
        k_pm = (self._pol[slot] * dd * 1000) // e1
        ad = dd if dd > 0 else -dd
        # residual / answer: (|cu| / sqrt(20)) / (|dd| / 2) = 0.4472 |cu| / |dd|
        resid = (cu * 447) // ad if ad > 0 else 9999
        self.last_k_permille = k_pm
        self.last_resid_permille = resid
        if j < win:  # the first window of a run holds the ramp-in: no vote
            return None
        self.windows += 1
        if k_pm > self.k_hi_permille:
            self.k_hi_permille = k_pm
        if k_pm < self.k_lo_permille:
            self.k_lo_permille = k_pm
        if k_pm < self.k_min_pm or resid > self.resid_max_pm:
            self.hits = 0
            return None
        self.hits += 1
        if self.hits > self.hits_hi:
            self.hits_hi = self.hits
        if self.hits < self.confirm:
            return None
        return ("ISLAND", "active: k=%d.%03d (Qf~%s) in %d windows of %d ms" % (
            k_pm // 1000, k_pm % 1000, _qf_text(k_pm), self.hits, win * self.period_ms))

    def _passive(self, f):
        if self.rocof_mhz_s == 0:
            return None
        self._blk_sum += f
        self._blk_cnt += 1
        if self._blk_cnt < self.blk:
            return None
        s = self._blk_sum
        self._blk_sum = 0
        self._blk_cnt = 0
        prev = self._blk_prev
        self._blk_prev = s
        if prev is None:
            return None
        b = self.blk
        # ROCOF between block means, mHz/s: (s - prev) / b / (b * period_ms / 1000)
        diff = s - prev
        diff = -0x3FFFF if diff < -0x3FFFF else (0x3FFFF if diff > 0x3FFFF else diff)
        r = diff * 1000 // (b * b * self.period_ms)
        self.rocof_mhz_s_last = r
        if r > self.rocof_hi_mhz_s or -r > self.rocof_hi_mhz_s:
            self.rocof_hi_mhz_s = r if r > 0 else -r
        run = self._rocof_run
        if r >= self.rocof_mhz_s:
            run = run + 1 if run > 0 else 1
        elif r <= -self.rocof_mhz_s:
            run = run - 1 if run < 0 else -1
        else:
            run = 0
        self._rocof_run = run
        if -self.rocof_n < run < self.rocof_n:
            return None
        return ("ISLAND", "rocof: %d mHz/s for %d ms" % (
            r, (run if run > 0 else -run) * b * self.period_ms))

    def status(self):
        """Telemetry dict (allocates: for status requests, not every period)."""
        return {"k_permille": self.last_k_permille, "resid_permille": self.last_resid_permille,
                "k_hi_permille": self.k_hi_permille, "k_lo_permille": self.k_lo_permille,
                "hits": self.hits, "hits_hi": self.hits_hi, "windows": self.windows,
                "rocof_mhz_s": self.rocof_mhz_s_last, "rocof_hi_mhz_s": self.rocof_hi_mhz_s,
                "detected": self.detected[1] if self.detected else None}


def _qf_text(k_pm):
    """The equivalent quality factor 1 / (2 k) as text with one decimal."""
    if k_pm <= 0:
        return "inf"
    x = (10000 + k_pm) // (2 * k_pm)  # 10 * Qf, rounded
    return "%d.%d" % (x // 10, x % 10)
