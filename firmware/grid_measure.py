"""Per-phase grid voltage measurement and the fast IEEE 1547 trip regions, in the tick.

Measurement (``step``, every tick after ``pll.step``): each phase's fundamental phasor by
synchronous demodulation with the PLL's output angle ``theta`` (``pll.COS_B``/``SIN_B``)::

    z_x = v_x + j * v_x(t - T/4)                  quarter-period delay line, whole samples
    X_x = mean(z_x * exp(-j theta))               over the PLL's half-period window
        = mean(v_x cos + v_xd sin) + j mean(v_xd cos - v_x sin)
    |V_x| = |X_x|                                 fundamental amplitude (peak) of phase x

The window is the very one the PLL's own moving average uses (``pll.WIN_Q8``: integer
part followed one sample per tick, plus the trapezoidal fractional part over the linearly
interpolated samples, exactly as in ``pll.step``). Plain ``v_x * cos(theta)`` and
``v_x * sin(theta)`` would do in steady state: for ``v = V cos(theta + phi) +
harmonics`` the product holds ``V/2 exp(j phi)``, a term at 2*f, and the odd harmonics
land on even multiples of f, all cancelled by a half-period window. But after a phase
jump the 2*f term (half the amplitude) no longer cancels inside the window, and a phase
reads 0.58 .. 1.31 pu for half a cycle after a 60 degree single-phase jump (0.74 .. 1.23
after 30 degrees on all phases): enough to look like an OV2 / momentary-cessation
excursion to a reader of these words. The quarter-period delayed copy makes ``z`` nearly
analytic, which removes that term before the window: the same jumps read 0.75 .. 1.08 and
0.90 .. 1.06 (ideal: the blend of the old and new phasor, cos of half the jump). In
steady state the window still cancels whatever is left of it, so the delay's whole-sample
rounding (at most half a sample) costs only ``1 - cos(w / 4)`` of gain (``w``: grid phase
per sample): 0.15 % at a
2 kHz tick and 70 Hz, 0.07 % at 59.5 Hz, nothing at 50 Hz. Each phase is measured on its
own, so negative and zero sequence only change its phasor, and a constant offset of
``theta`` does not change ``|X|``: the measurement needs a settled PLL frequency, not a
settled angle. A step of amplitude is fully in after the delay plus the window: 3/4 of a
cycle.

Fixed point: the delay line holds the Q12 phase voltages (three rings of 128: a quarter
period is at most 125 samples); the products are Q12 per unit (``|p| < 2**15``) in six
rings of 256; the window integrals are normalised by ``1 / W`` (one division per tick)
into the phasor components, Q12 per unit of nominal phase peak, clamped to +/-23170
(5.66 pu) so that ``MAG2_x = re**2 + im**2`` (Q24, ``(pu * 4096)**2``) stays below 2**30
and compares against squared pickups without a square root.

Public words (read by the supervisor; ``phase_rms_pu`` does the conversion)::

    MAG2_A, MAG2_B, MAG2_C    squared fundamental amplitude, (pu * 4096)**2, >= 0
    PHASOR_B + 2*k, + 2*k+1   re, im of phase k's phasor X, Q12 + BIAS (k = 0, 1, 2: a b c;
                              v_k = re cos(theta) - im sin(theta))

Per-phase RMS volts of the fundamental: ``sqrt(MAG2_x) / 4096 * V_nom_rms`` (per unit of
nominal peak is per unit of nominal RMS for a sinusoid; ``V_nom_rms = v_nom_peak / sqrt 2``).

Fast trip regions (IEEE 1547-2018 Tables 11/13 functions with the 0.16 s clearing times;
any setting is accepted, the supervisor's timers back every function up)::

    OV2  any phase above the pickup      UV2  any phase below the pickup
    OF2  PLL frequency above f_nom + offset   UF2  below f_nom + (negative) offset

A region's count advances every tick its condition holds and restarts at zero when it
drops out; the region trips once the count reaches its hold count. The frequency regions
count only while the PLL sees a grid (``pll.V_POS`` >= 0.1 pu, its lock level): a grid
that is gone has no frequency, and UV2 names that cause. A trip latches in
``protect_fast``'s latch word exactly as ``protect_fast.check`` does (first cause wins;
``VALUE_B`` = the measured value in Q12 + bias: the phase amplitude in per unit, or the
frequency in per unit of nominal), and only while the current controller is enabled
(``armed``): a unit that is not energizing has nothing to cease, and a grid that is down
before start-up must not latch a trip. Counts go on while disarmed, so a condition that
has lasted past its hold trips at once when the unit energizes. ``tick.compute`` then
turns the PWM off on this very tick. The record of the last grid trip: ``TRIP_CODE``,
``TRIP_PHASE`` (0, 1, 2 = a, b, c; 3 = frequency) and ``TRIP_VALUE_B`` (the compared word
+ BIAS: ``MAG2`` of that phase, or ``pll.W_F_Q6``); ``trip_record`` converts it.

Hold counts (ticks, integer math in ``set_trips``)::

    hold      = max(1, clearing_ms * tick_hz // 1000 - latency - cycle)
    cycle     = one nominal grid cycle (rounded up): the margin
    latency_v = 3/4 cycle at the UF2 pickup frequency (rounded up) + 1
                (delay line + window refill; one tick to act: the PWM turns off at the
                next PWM update)
    latency_f = 1/2 cycle at the UF2 pickup + 1 + 1/4 cycle + 3 * 3 ms (rounded up)
                (the PLL's window, its frequency slope lag and its 3 ms low-pass)

Delay and window are fractions of the grid's period, so they are longest at the lowest
frequency the unit runs at without UF2 tripping: its pickup. A voltage beyond a pickup
is seen within ``latency_v - 1`` ticks (delay and window hold only new samples then; a
step to 1.25 or 0.40 pu is seen in about half a cycle, one to 1.21 / 0.44 pu in 0.7
cycle), and the PWM is off ``hold - 1`` ticks after that: from the crossing to PWM off
takes at most ``clearing - cycle``. The PLL's frequency follows a step of pickup + 0.5 Hz
past OF2/UF2 within 0.75 cycle, of pickup + 0.1 Hz within one cycle. The 0.16 s regions hold, at 10 kHz: 1237 ticks
(voltage) and 1150 (frequency) at 50 Hz, 1299 and 1210 at 60 Hz; at 2 kHz: 246 / 228 at
50 Hz, 258 / 239 at 60 Hz.

Units: voltages Q12 per unit of nominal phase peak, accepted in [-4, 4) pu (clamped like
``pll.step``); frequencies as ``pll`` keeps them (phase increment per tick, t28, Q6).
Tick rate 2 000 .. 20 000 Hz, grid 40 .. 70 Hz (``pll``'s ranges). Every intermediate stays
within +/-2**30 (``tests_host/firmware/test_grid_measure.py`` proves it with ``v2g.build.wordcheck``).

Usage::

    gm = grid_measure.new_state(); grid_measure.init(gm, 10000, 50)   # boot
    grid_measure.set_trips(gm, 4915, 160, 1843, 160, 2000, 160, -3500, 160)  # supervisor
    code = grid_measure.step(gm, pll_st, prot, va, vb, vc, armed)     # tick, after pll
    grid_measure.phase_rms_pu(gm)  # -> (a, b, c)                     # supervisor / host

Context: ``step`` is tick-safe (viper, no allocation, no floats, never raises); everything
else is boot, supervisor or host code.
Cost: ~2 500 instructions per ``step`` on the x86-64 unix runtime (callgrind), +20 % on the
whole tick (``make bench``: 13 100 -> 15 800 instructions per tick); 7.9 KB of state.
"""

from array import array

import micropython
from micropython import const

# Words of other modules' state read here (tests check them against pll / protect_fast).
_PLL_W_F_Q6 = const(2)  # pll.W_F_Q6: reported frequency, inc q6
_PLL_V_POS = const(8)  # pll.V_POS
_PLL_COS_B = const(11)  # pll.COS_B: cos(theta) Q14 + 16384
_PLL_SIN_B = const(12)  # pll.SIN_B
_PLL_WIN_Q8 = const(14)  # pll.WIN_Q8: half-period window, samples, Q8
_PROT_LATCH = const(2)  # protect_fast.LATCH
_PROT_VALUE_B = const(3)  # protect_fast.VALUE_B
_PROT_COUNT = const(4)  # protect_fast.COUNT
_SIN_BIAS = const(16384)
_V_PRESENT_Q12 = const(410)  # pll.LOCK_V_Q12: below it the PLL sees no grid

# Fault codes latched in protect_fast's latch word (the supervisor's fault table names
# them: grid_protect.CODES).
OV2 = const(0x41)
UV2 = const(0x42)
OF2 = const(0x43)
UF2 = const(0x44)
NAMES = {OV2: "OV2", UV2: "UV2", OF2: "OF2", UF2: "UF2"}

BIAS = const(1 << 29)  # signed public words are stored + BIAS
_RING_BIAS = const(1 << 20)  # |p| < 2**15
_V_MAX_Q12 = const(16383)  # input clamp: 4 pu (as pll.step)
_COMP_MAX = const(23170)  # phasor component clamp: 2 * 23170**2 < 2**30
_RING = const(256)
_RING_MASK = const(255)
_NI_MAX = const(254)  # the trapezoid reads the two samples past the window
_VRING_LEN = const(128)  # delay line: a quarter period is <= 125 samples
_VRING_MASK = const(127)

# State layout. Public words (tick -> supervisor):
MAG2_A = const(0)
MAG2_B = const(1)
MAG2_C = const(2)
TRIP_CODE = const(3)  # code of the last grid trip this module latched, 0 = none yet
TRIP_PHASE = const(4)  # 0, 1, 2 = phase a, b, c; 3 = frequency
TRIP_VALUE_B = const(5)  # MAG2 of that phase or pll.W_F_Q6 at the trip, + BIAS
PHASOR_B = const(8)  # 8..13: re a, im a, re b, im b, re c, im c; Q12 + BIAS
# Measurement state
_POS = const(16)  # ring write index
_NI = const(17)  # integer part of the window in use, samples
_SUM = const(18)  # 18..23: per channel, sum of (product + _RING_BIAS) over _NI samples
_CNT = const(24)  # 24..27: region counts OV2, UV2, OF2, UF2, ticks
# Settings (init / set_trips)
_OV2_M2 = const(28)  # squared pickups, Q24
_UV2_M2 = const(29)
_OF2_Q6 = const(30)  # frequency pickups, inc q6
_UF2_Q6 = const(31)
_HOLD = const(32)  # 32..35: hold counts OV2, UV2, OF2, UF2, ticks
_ONE_K = const(36)  # 2**K: m = 2**K // WIN_Q8 normalises by 1/W
_A_SH = const(37)  # x >> _A_SH before the multiply by m (K - 20)
_WIN_MIN = const(38)  # WIN_Q8 range of the PLL at this tick rate (70 .. 40 Hz)
_WIN_MAX = const(39)
_F_DIV = const(40)  # nominal inc q6 >> 12: W_F_Q6 // _F_DIV = frequency pu Q12
TICK_HZ = const(41)
F_NOM_MHZ = const(42)
# the settings as given (for readers)
OV2_Q12 = const(44)
UV2_Q12 = const(45)
OF2_MHZ_B = const(46)  # offsets from nominal, mHz + BIAS
UF2_MHZ_B = const(47)
OV2_MS = const(48)
UV2_MS = const(49)
OF2_MS = const(50)
UF2_MS = const(51)
_VRING = const(64)  # three rings of _VRING_LEN words: the phase voltages (delay line)
_RING0 = const(448)  # six rings of _RING words: re a, im a, re b, im b, re c, im c
STATE_WORDS = const(1984)  # _RING0 + 6 * _RING

# IEEE 1547-2018 Category II defaults (Tables 11 and 13), at 50 and 60 Hz alike.
OV2_Q12_DEFAULT = 4915  # 1.20 pu
UV2_Q12_DEFAULT = 1843  # 0.45 pu
OF2_MHZ_DEFAULT = 2000  # +2.0 Hz
UF2_MHZ_DEFAULT = -3500  # -3.5 Hz
CLEAR_MS_DEFAULT = 160

TICK_HZ_MIN = 2000
TICK_HZ_MAX = 20000
F_MIN_MHZ = 40000  # pll.F_MIN_MHZ / F_MAX_MHZ: the PLL's window range
F_MAX_MHZ = 70000
TAU_F_PER_S = 333  # pll.TAU_F_PER_S: reported-frequency low-pass
CLEAR_MS_MAX = 1000000  # 1000 s (parameter table: OF2/UF2 up to 1000 s)


def new_state():
    """Return a zeroed state array; call ``init`` before the first ``step``."""
    return array("i", bytes(4 * STATE_WORDS))


def _inc_q6(f_mhz, tick_hz):
    """Phase increment per tick (t28) with 6 fraction bits, rounded (pll's W_F_Q6)."""
    den = 1000 * tick_hz
    return ((f_mhz << 34) + den // 2) // den


def init(gm, tick_hz, f_nom_hz, ov2_q12=OV2_Q12_DEFAULT, ov2_ms=CLEAR_MS_DEFAULT,
         uv2_q12=UV2_Q12_DEFAULT, uv2_ms=CLEAR_MS_DEFAULT, of2_mhz=OF2_MHZ_DEFAULT,
         of2_ms=CLEAR_MS_DEFAULT, uf2_mhz=UF2_MHZ_DEFAULT, uf2_ms=CLEAR_MS_DEFAULT):
    """Reset ``gm`` for a tick rate (int Hz, 2 000 .. 20 000) and nominal grid frequency
    (Hz, 40 .. 70) and load the trip settings (see ``set_trips``). Raises ValueError
    outside the ranges. Context: boot / supervisor (not while the tick runs)."""
    tick_hz = int(tick_hz)
    f_mhz = int(round(f_nom_hz * 1000))
    if not TICK_HZ_MIN <= tick_hz <= TICK_HZ_MAX:
        raise ValueError("tick_hz %d outside %d..%d" % (tick_hz, TICK_HZ_MIN, TICK_HZ_MAX))
    if not F_MIN_MHZ <= f_mhz <= F_MAX_MHZ:
        raise ValueError("f_nom_hz %s outside 40..70" % f_nom_hz)
    for i in range(STATE_WORDS):
        gm[i] = 0
    gm[TICK_HZ] = tick_hz
    gm[F_NOM_MHZ] = f_mhz
    # The PLL's window, Q8 samples, at its frequency limits: WIN_Q8 = 2**29 // (w_r >> 6)
    w_min = (F_MIN_MHZ << 28) // (1000 * tick_hz)
    w_max = (F_MAX_MHZ << 28) // (1000 * tick_hz)
    win_min = 0x20000000 // (w_max >> 6)
    win_max = 0x20000000 // (w_min >> 6)
    gm[_WIN_MIN] = win_min
    gm[_WIN_MAX] = win_max
    # 1/W = 256 / WIN_Q8 ~ m / 2**K with m = 2**K // WIN_Q8 below 2**15 (K <= 29).
    k = 29
    while (1 << k) // win_min >= 32768:
        k -= 1
    gm[_ONE_K] = 1 << k
    gm[_A_SH] = k - 20
    gm[_F_DIV] = _inc_q6(f_mhz, tick_hz) >> 12
    w_nom = (f_mhz << 28) // (1000 * tick_hz)  # pll's initial window: (1 << 27) // w_nom
    gm[_NI] = (1 << 27) // w_nom
    for i in range(6):
        gm[_SUM + i] = gm[_NI] * _RING_BIAS  # ni zero products
        gm[PHASOR_B + i] = BIAS
    for i in range(_VRING, STATE_WORDS):
        gm[i] = _RING_BIAS
    gm[TRIP_VALUE_B] = BIAS
    set_trips(gm, ov2_q12, ov2_ms, uv2_q12, uv2_ms, of2_mhz, of2_ms, uf2_mhz, uf2_ms)


def latency_ticks(tick_hz, f_nom_mhz, uf2_mhz):
    """(voltage, frequency) detection latency and the one-cycle margin, in ticks, as the
    hold counts use them (module docstring)."""
    f_low = f_nom_mhz + uf2_mhz  # the UF2 pickup: the lowest frequency the unit runs at
    per_s = tick_hz * 1000
    cycle = (per_s + f_nom_mhz - 1) // f_nom_mhz
    lat_v = (3 * per_s + 4 * f_low - 1) // (4 * f_low) + 1
    half = (per_s + 2 * f_low - 1) // (2 * f_low)
    quarter = (per_s + 4 * f_nom_mhz - 1) // (4 * f_nom_mhz)
    lat_f = half + 1 + quarter + (3 * tick_hz + TAU_F_PER_S - 1) // TAU_F_PER_S
    return lat_v, lat_f, cycle


def hold_ticks(tick_hz, clear_ms, latency, cycle):
    """Hold count for a clearing time: ``max(1, clear_ms * tick_hz // 1000 - latency -
    cycle)``."""
    return max(1, clear_ms * tick_hz // 1000 - latency - cycle)


def set_trips(gm, ov2_q12, ov2_ms, uv2_q12, uv2_ms, of2_mhz, of2_ms, uf2_mhz, uf2_ms):
    """Load the pickups (voltage Q12 per unit of nominal peak; frequency offsets from
    nominal in mHz, ``of2_mhz`` > 0, ``uf2_mhz`` < 0) and clearing times (ms) of the four
    fast regions, and derive the hold counts (``uv2_q12`` 0 turns UV2 off). Region counts
    keep running (each word is written whole, so a running tick sees old or new settings,
    never a torn word). Raises ValueError naming the first bad value. Context: boot /
    supervisor."""
    tick_hz = gm[TICK_HZ]
    f_mhz = gm[F_NOM_MHZ]
    if not 0 < ov2_q12 <= _V_MAX_Q12:
        raise ValueError("ov2_q12 %d outside 1..%d" % (ov2_q12, _V_MAX_Q12))
    if not 0 <= uv2_q12 < ov2_q12:
        raise ValueError("uv2_q12 %d outside 0..ov2_q12-1 (%d)" % (uv2_q12, ov2_q12 - 1))
    if not (0 < of2_mhz and f_mhz + of2_mhz <= F_MAX_MHZ):
        raise ValueError("of2_mhz %d: must be > 0 and f_nom + of2 <= 70 Hz" % of2_mhz)
    if not (uf2_mhz < 0 and f_mhz + uf2_mhz >= F_MIN_MHZ):
        raise ValueError("uf2_mhz %d: must be < 0 and f_nom + uf2 >= 40 Hz" % uf2_mhz)
    for name, ms in (("ov2_ms", ov2_ms), ("uv2_ms", uv2_ms), ("of2_ms", of2_ms),
                     ("uf2_ms", uf2_ms)):
        if not 0 <= ms <= CLEAR_MS_MAX:
            raise ValueError("%s %d outside 0..%d" % (name, ms, CLEAR_MS_MAX))
    lat_v, lat_f, cycle = latency_ticks(tick_hz, f_mhz, uf2_mhz)
    gm[_OV2_M2] = ov2_q12 * ov2_q12
    gm[_UV2_M2] = uv2_q12 * uv2_q12
    gm[_OF2_Q6] = _inc_q6(f_mhz + of2_mhz, tick_hz)
    gm[_UF2_Q6] = _inc_q6(f_mhz + uf2_mhz, tick_hz)
    gm[_HOLD] = hold_ticks(tick_hz, ov2_ms, lat_v, cycle)
    gm[_HOLD + 1] = hold_ticks(tick_hz, uv2_ms, lat_v, cycle)
    gm[_HOLD + 2] = hold_ticks(tick_hz, of2_ms, lat_f, cycle)
    gm[_HOLD + 3] = hold_ticks(tick_hz, uf2_ms, lat_f, cycle)
    gm[OV2_Q12] = ov2_q12
    gm[UV2_Q12] = uv2_q12
    gm[OF2_MHZ_B] = of2_mhz + BIAS
    gm[UF2_MHZ_B] = uf2_mhz + BIAS
    gm[OV2_MS] = ov2_ms
    gm[UV2_MS] = uv2_ms
    gm[OF2_MS] = of2_ms
    gm[UF2_MS] = uf2_ms


def holds(gm):
    """Hold counts in ticks, ``{"OV2": n, "UV2": n, "OF2": n, "UF2": n}``."""
    return {name: gm[_HOLD + i] for i, name in enumerate(("OV2", "UV2", "OF2", "UF2"))}


@micropython.viper
def step(gm: ptr32, pll_st: ptr32, prot, va: int, vb: int, vc: int, armed: int) -> int:
    """Measure the three phases over the PLL's window and advance the fast trip regions;
    call after ``pll.step`` on the same tick. ``prot`` is protect_fast's state (cast only
    when a region is due), ``armed`` non-zero while the unit energizes. Returns 0, or the
    latched fault code when a region has reached its hold count (its own code, or the
    cause latched before it). Context: tick."""
    if va > _V_MAX_Q12:
        va = _V_MAX_Q12
    elif va < -_V_MAX_Q12:
        va = -_V_MAX_Q12
    if vb > _V_MAX_Q12:
        vb = _V_MAX_Q12
    elif vb < -_V_MAX_Q12:
        vb = -_V_MAX_Q12
    if vc > _V_MAX_Q12:
        vc = _V_MAX_Q12
    elif vc < -_V_MAX_Q12:
        vc = -_V_MAX_Q12
    cs = pll_st[_PLL_COS_B] - _SIN_BIAS
    sn = pll_st[_PLL_SIN_B] - _SIN_BIAS
    win_q8 = pll_st[_PLL_WIN_Q8]  # the PLL's half period, samples, Q8
    if win_q8 < gm[_WIN_MIN]:
        win_q8 = gm[_WIN_MIN]
    elif win_q8 > gm[_WIN_MAX]:
        win_q8 = gm[_WIN_MAX]
    pos = (gm[_POS] + 1) & _RING_MASK
    gm[_POS] = pos
    k = pos & _VRING_MASK
    gm[_VRING + k] = va + _RING_BIAS
    gm[_VRING + _VRING_LEN + k] = vb + _RING_BIAS
    gm[_VRING + 2 * _VRING_LEN + k] = vc + _RING_BIAS
    jd = (pos - ((win_q8 + 256) >> 9)) & _VRING_MASK  # a quarter period back (rounded)

    # The PLL's window: integer part followed one sample per tick, as pll.step does.
    ni = gm[_NI]
    grow = 0
    if (win_q8 >> 8) > ni and ni < _NI_MAX:
        grow = 1
    elif (win_q8 >> 8) < ni:
        grow = -1
    j0 = (pos - ni) & _RING_MASK  # leaves the window (stays when it grows)
    j1 = (j0 + 1) & _RING_MASK  # leaves as well when it shrinks
    ni += grow
    gm[_NI] = ni
    ja = (pos - ni) & _RING_MASK  # the two samples past the window: trapezoid tail
    jb = (ja - 1) & _RING_MASK
    nb = ni << 20  # ni * _RING_BIAS: the bias inside a running sum
    fr = (win_q8 - (ni << 8)) << 6  # fractional window part, Q14
    if fr < 0:
        fr = 0
    elif fr > 16384:
        fr = 16384
    fr2 = (fr * fr) >> 15  # fr**2 / 2, Q14
    m = gm[_ONE_K] // win_q8  # 2**K / WIN_Q8 = 2**(K-8) / W
    a_sh = gm[_A_SH]
    rnd = (1 << a_sh) >> 1
    # Six channels, unrolled (constant ring offsets: 2 500 instructions per step on the
    # x86-64 unix runtime against 2 900 for a loop over the phases). Per channel: the
    # product + _RING_BIAS into its ring and running sum (the bias cancels in every
    # difference), 2 * the window integral (trapezoid + fractional tail, as pll.step),
    # divided by W into Q12: x * 128 / WIN_Q8 = ((x >> A) * m) >> (K - 7 - A), A = K - 20.
    # The products are re, im of (v + j v_delayed) * (cos - j sin), Q12, rounded (a
    # floor's -0.5 LSB would be a DC term, which the window does not cancel).
    da = gm[_VRING + 0 + jd] - _RING_BIAS
    db = gm[_VRING + 128 + jd] - _RING_BIAS
    dc = gm[_VRING + 256 + jd] - _RING_BIAS
    pb = ((va * cs + da * sn + 8192) >> 14) + _RING_BIAS  # re_a
    gm[_RING0 + pos] = pb
    sb = gm[_SUM] + pb - gm[_RING0 + j0]
    if grow != 0:
        if grow > 0:
            sb += gm[_RING0 + j0]
        else:
            sb -= gm[_RING0 + j1]
    gm[_SUM] = sb
    ab = gm[_RING0 + ja]
    x = sb - nb
    x = x + x + ab - pb + ((fr * (ab - _RING_BIAS)) >> 13)
    x += (fr2 * (gm[_RING0 + jb] - ab)) >> 13
    re_a = (((x + rnd) >> a_sh) * m + 4096) >> 13
    if re_a > _COMP_MAX:
        re_a = _COMP_MAX
    elif re_a < -_COMP_MAX:
        re_a = -_COMP_MAX
    gm[PHASOR_B + 0] = re_a + BIAS
    pb = ((da * cs - va * sn + 8192) >> 14) + _RING_BIAS  # im_a
    gm[_RING0 + 256 + pos] = pb
    sb = gm[_SUM + 1] + pb - gm[_RING0 + 256 + j0]
    if grow != 0:
        if grow > 0:
            sb += gm[_RING0 + 256 + j0]
        else:
            sb -= gm[_RING0 + 256 + j1]
    gm[_SUM + 1] = sb
    ab = gm[_RING0 + 256 + ja]
    x = sb - nb
    x = x + x + ab - pb + ((fr * (ab - _RING_BIAS)) >> 13)
    x += (fr2 * (gm[_RING0 + 256 + jb] - ab)) >> 13
    im_a = (((x + rnd) >> a_sh) * m + 4096) >> 13
    if im_a > _COMP_MAX:
        im_a = _COMP_MAX
    elif im_a < -_COMP_MAX:
        im_a = -_COMP_MAX
    gm[PHASOR_B + 1] = im_a + BIAS
    pb = ((vb * cs + db * sn + 8192) >> 14) + _RING_BIAS  # re_b
    gm[_RING0 + 512 + pos] = pb
    sb = gm[_SUM + 2] + pb - gm[_RING0 + 512 + j0]
    if grow != 0:
        if grow > 0:
            sb += gm[_RING0 + 512 + j0]
        else:
            sb -= gm[_RING0 + 512 + j1]
    gm[_SUM + 2] = sb
    ab = gm[_RING0 + 512 + ja]
    x = sb - nb
    x = x + x + ab - pb + ((fr * (ab - _RING_BIAS)) >> 13)
    x += (fr2 * (gm[_RING0 + 512 + jb] - ab)) >> 13
    re_b = (((x + rnd) >> a_sh) * m + 4096) >> 13
    if re_b > _COMP_MAX:
        re_b = _COMP_MAX
    elif re_b < -_COMP_MAX:
        re_b = -_COMP_MAX
    gm[PHASOR_B + 2] = re_b + BIAS
    pb = ((db * cs - vb * sn + 8192) >> 14) + _RING_BIAS  # im_b
    gm[_RING0 + 768 + pos] = pb
    sb = gm[_SUM + 3] + pb - gm[_RING0 + 768 + j0]
    if grow != 0:
        if grow > 0:
            sb += gm[_RING0 + 768 + j0]
        else:
            sb -= gm[_RING0 + 768 + j1]
    gm[_SUM + 3] = sb
    ab = gm[_RING0 + 768 + ja]
    x = sb - nb
    x = x + x + ab - pb + ((fr * (ab - _RING_BIAS)) >> 13)
    x += (fr2 * (gm[_RING0 + 768 + jb] - ab)) >> 13
    im_b = (((x + rnd) >> a_sh) * m + 4096) >> 13
    if im_b > _COMP_MAX:
        im_b = _COMP_MAX
    elif im_b < -_COMP_MAX:
        im_b = -_COMP_MAX
    gm[PHASOR_B + 3] = im_b + BIAS
    pb = ((vc * cs + dc * sn + 8192) >> 14) + _RING_BIAS  # re_c
    gm[_RING0 + 1024 + pos] = pb
    sb = gm[_SUM + 4] + pb - gm[_RING0 + 1024 + j0]
    if grow != 0:
        if grow > 0:
            sb += gm[_RING0 + 1024 + j0]
        else:
            sb -= gm[_RING0 + 1024 + j1]
    gm[_SUM + 4] = sb
    ab = gm[_RING0 + 1024 + ja]
    x = sb - nb
    x = x + x + ab - pb + ((fr * (ab - _RING_BIAS)) >> 13)
    x += (fr2 * (gm[_RING0 + 1024 + jb] - ab)) >> 13
    re_c = (((x + rnd) >> a_sh) * m + 4096) >> 13
    if re_c > _COMP_MAX:
        re_c = _COMP_MAX
    elif re_c < -_COMP_MAX:
        re_c = -_COMP_MAX
    gm[PHASOR_B + 4] = re_c + BIAS
    pb = ((dc * cs - vc * sn + 8192) >> 14) + _RING_BIAS  # im_c
    gm[_RING0 + 1280 + pos] = pb
    sb = gm[_SUM + 5] + pb - gm[_RING0 + 1280 + j0]
    if grow != 0:
        if grow > 0:
            sb += gm[_RING0 + 1280 + j0]
        else:
            sb -= gm[_RING0 + 1280 + j1]
    gm[_SUM + 5] = sb
    ab = gm[_RING0 + 1280 + ja]
    x = sb - nb
    x = x + x + ab - pb + ((fr * (ab - _RING_BIAS)) >> 13)
    x += (fr2 * (gm[_RING0 + 1280 + jb] - ab)) >> 13
    im_c = (((x + rnd) >> a_sh) * m + 4096) >> 13
    if im_c > _COMP_MAX:
        im_c = _COMP_MAX
    elif im_c < -_COMP_MAX:
        im_c = -_COMP_MAX
    gm[PHASOR_B + 5] = im_c + BIAS
    m_a = re_a * re_a + im_a * im_a
    m_b = re_b * re_b + im_b * im_b
    m_c = re_c * re_c + im_c * im_c
    gm[MAG2_A] = m_a
    gm[MAG2_B] = m_b
    gm[MAG2_C] = m_c
    hi = m_a
    ph_hi = 0
    if m_b > hi:
        hi = m_b
        ph_hi = 1
    if m_c > hi:
        hi = m_c
        ph_hi = 2
    lo = m_a
    ph_lo = 0
    if m_b < lo:
        lo = m_b
        ph_lo = 1
    if m_c < lo:
        lo = m_c
        ph_lo = 2

    # Regions: count while the condition holds (saturating at the hold), else restart.
    due = 0
    if hi > gm[_OV2_M2]:
        n = gm[_CNT]
        if n < gm[_HOLD]:
            n += 1
            gm[_CNT] = n
        if n >= gm[_HOLD]:
            due = 1
    else:
        gm[_CNT] = 0
    if lo < gm[_UV2_M2]:
        n = gm[_CNT + 1]
        if n < gm[_HOLD + 1]:
            n += 1
            gm[_CNT + 1] = n
        if n >= gm[_HOLD + 1]:
            due |= 2
    else:
        gm[_CNT + 1] = 0
    w_f = pll_st[_PLL_W_F_Q6]
    if w_f > gm[_OF2_Q6] and pll_st[_PLL_V_POS] >= _V_PRESENT_Q12:  # no grid, no frequency
        n = gm[_CNT + 2]
        if n < gm[_HOLD + 2]:
            n += 1
            gm[_CNT + 2] = n
        if n >= gm[_HOLD + 2]:
            due |= 4
    else:
        gm[_CNT + 2] = 0
    if w_f < gm[_UF2_Q6] and pll_st[_PLL_V_POS] >= _V_PRESENT_Q12:
        n = gm[_CNT + 3]
        if n < gm[_HOLD + 3]:
            n += 1
            gm[_CNT + 3] = n
        if n >= gm[_HOLD + 3]:
            due |= 8
    else:
        gm[_CNT + 3] = 0
    if due == 0 or armed == 0:
        return 0

    # Trip: latch as protect_fast.check does (first cause wins), then record.
    pr = ptr32(prot)
    code = pr[_PROT_LATCH]
    if code != 0:
        return code
    if due & 3:
        if due & 1:
            code = OV2
            n = hi
            ph = ph_hi
        else:
            code = UV2
            n = lo
            ph = ph_lo
        # amplitude, Q12 = isqrt(MAG2): bit by bit, only on the trip tick
        r = 0
        bit = 1 << 28
        while bit > n:
            bit >>= 2
        v = n
        while bit != 0:
            if v >= r + bit:
                v -= r + bit
                r = (r >> 1) + bit
            else:
                r >>= 1
            bit >>= 2
    else:
        code = UF2
        if due & 4:
            code = OF2
        n = w_f
        ph = 3
        r = w_f // gm[_F_DIV]  # frequency, per unit of nominal, Q12
    pr[_PROT_VALUE_B] = r + BIAS
    pr[_PROT_LATCH] = code
    pr[_PROT_COUNT] = pr[_PROT_COUNT] + 1
    gm[TRIP_CODE] = code
    gm[TRIP_PHASE] = ph
    gm[TRIP_VALUE_B] = n + BIAS
    return code


def phase_rms_pu(gm):
    """Per-phase fundamental RMS voltage, per unit of nominal (a, b, c) floats: the
    amplitude per unit of nominal peak. Context: supervisor / host."""
    return (gm[MAG2_A] ** 0.5 / 4096, gm[MAG2_B] ** 0.5 / 4096, gm[MAG2_C] ** 0.5 / 4096)


def phasors_pu(gm):
    """Per-phase fundamental phasors relative to the PLL's angle, per unit of nominal
    peak: ((re_a, im_a), ...), ``v_x = re cos(theta) - im sin(theta)``. Context:
    supervisor / host."""
    out = []
    for k in range(3):
        out.append(((gm[PHASOR_B + 2 * k] - BIAS) / 4096,
                    (gm[PHASOR_B + 2 * k + 1] - BIAS) / 4096))
    return tuple(out)


def trip_record(gm):
    """The last grid trip this module latched: ``(name, phase, value)`` with ``phase``
    "a"/"b"/"c" and the amplitude in per unit, or "f" and the frequency in Hz; None when
    there has been none. Context: supervisor / host."""
    code = gm[TRIP_CODE]
    if code == 0:
        return None
    ph = gm[TRIP_PHASE]
    word = gm[TRIP_VALUE_B] - BIAS
    if ph == 3:
        return NAMES.get(code, hex(code)), "f", word * gm[TICK_HZ] / (1 << 34)
    return NAMES.get(code, hex(code)), "abc"[ph], word ** 0.5 / 4096
