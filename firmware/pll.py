"""Three-phase grid PLL: fixed point, allocation-free, robust to unbalance and harmonics.

Algorithm (one ``step`` per tick):
1. Clarke: phase voltages (Q12 per unit of nominal phase peak) -> alpha, beta.
2. Park into a reference frame ``th_r`` that advances at the tracked grid frequency
   ``w_r`` and never jumps -> d, q.
3. Moving-average filter over exactly half a grid period, frequency adaptive
   (``W = pi / w_r`` samples; trapezoidal integral of the linearly interpolated samples, so
   the fractional part of ``W`` is exact). In the dq frame the negative sequence sits at
   2*f and the 5th/7th harmonics at 6*f, so a half-period window cancels them completely;
   so are all odd harmonics of either sequence.
4. CORDIC on the filtered vector -> ``phi`` (grid angle relative to the window's mean
   frame angle) and the positive-sequence amplitude.
5. Open-loop angle: ``theta = th_r + phi + (w_g - w_r) * D``, where ``D`` is the
   window's delay and ``w_g`` the grid frequency measured from the slope of the delayed
   grid angle ``th_r + phi - w_r * D`` over ``L`` ticks. After a phase jump the error is
   gone as soon as the window has refilled (half a cycle) and the slope lag has passed,
   about 0.7 cycle in all, instead of the several cycles of a closed loop.
6. ``w_r`` follows ``w_g`` slowly (tau 50 ms) so a jump hardly moves the frame; the
   reported frequency follows ``w_g`` through a 3 ms low-pass.
7. Lock flag with hysteresis from amplitude and frequency plausibility.

Units: angles in turns * 2**28 ("t28", 0 .. 2**28-1 = [0, 2*pi)); frequencies as phase
increments per tick ("inc", t28 per tick), stored with 6 extra fraction bits ("q6");
voltages Q12 (4096 = 1.0 pu = nominal phase-to-neutral peak), accepted in [-4, 4) pu.
Tick rate 2 000 .. 20 000 Hz, grid 40 .. 70 Hz. Every intermediate stays within
+/-2**30 (proven by ``v2g.build.wordcheck``), so results are bit-identical on 32-bit boards,
the 64-bit unix runtime and CPython.

Usage::

    st = pll.new_state(); pll.init(st, 10000, 50)       # boot / supervisor
    pll.step(st, va_q12, vb_q12, vc_q12)                # tick
    pll.theta_rad(st), pll.f_hz(st), pll.locked(st)     # supervisor / host

Context: ``step`` is tick-safe (viper, no allocation, no floats, never raises);
everything else is supervisor or host code.
Cost: see ``make bench`` (``tick_ns_viper`` covers this step and the rest of the tick).
"""

from array import array

import micropython
from micropython import const

from tables import ATAN_T28, SIN_Q14_B

# Angle and table format (must match tables.py; tests check it).
_MASK28 = const(0xFFFFFFF)
_HALF28 = const(0x8000000)
_QUARTER28 = const(0x4000000)
_SIN_BIAS = const(16384)
_SIN_IDX_SHIFT = const(19)  # 28 - 9 table bits
_CORDIC_STEPS = const(18)

# Stored-word biases: viper ptr32 loads zero-extend on 64-bit hosts, so signed values that
# the hot path reads back are stored with a bias that keeps every word non-negative.
_RING_BIAS = const(1 << 20)  # |d|, |q| < 2**15
_SUM_BIAS = const(1 << 29)  # |running sums| < 2**24

_V_MAX_Q12 = const(16383)  # input clamp: 4 pu
_DW_CLAMP = const(1 << 19)  # |w_g - w_r| clamp, inc (39 Hz at 20 kHz, 3.9 Hz at 2 kHz)
_RING = const(256)  # ring length, power of two; window <= 254 samples
_RING_MASK = const(255)

# State layout: scalars, then three rings.
_TH_R = const(0)  # reference-frame angle, t28
_W_R_Q6 = const(1)  # reference frequency, inc q6
_W_F_Q6 = const(2)  # reported frequency, inc q6
W_F_Q6 = const(2)  # the same word, public: reported frequency, inc q6 (grid_measure)
_POS = const(3)  # ring write index
_NI = const(4)  # integer part of the window length, samples
_SD = const(5)  # running sum of d over NI samples, + _SUM_BIAS
_SQ = const(6)
THETA = const(7)  # output angle, t28
V_POS = const(8)  # positive-sequence amplitude, Q12
LOCKED = const(9)  # 0/1
_LOCK_CNT = const(10)
COS_B = const(11)  # cos(theta) Q14 + 16384 (biased, for viper readers)
SIN_B = const(12)  # sin(theta) Q14 + 16384
DW = const(13)  # w_g - w_r, inc + _SUM_BIAS (frequency slope, for ROCOF users)
WIN_Q8 = const(14)  # half-period window length now in use, samples, Q8 (for other MAFs)
# parameters written by init()
_W_MIN = const(16)
_W_MAX = const(17)
_K_R = const(18)  # 65536 / (tau_r * tick_hz)
_K_F = const(19)  # 65536 / (tau_f * tick_hz)
_D_Q2 = const(20)  # window delay at nominal frequency, samples * 4
_L_SH = const(21)  # slope lag L = 2**_L_SH ticks
_DW_LOCK = const(22)
_AMP_LOCK = const(23)
_CNT_MAX = const(24)
TICK_HZ = const(25)
_W_NOM = const(26)
_RING_D = const(32)
_RING_Q = const(288)
_RING_T = const(544)
STATE_WORDS = const(800)

TAU_R_PER_S = 20  # 1 / 50 ms: reference-frame frequency tracking
TAU_F_PER_S = 333  # 1 / 3 ms: reported-frequency low-pass
LOCK_DF_MHZ = 2000  # |f_g - f_r| above this counts against lock
LOCK_V_Q12 = 410  # 0.1 pu: below this the grid counts as absent
TICK_HZ_MIN = 2000
TICK_HZ_MAX = 20000
F_MIN_MHZ = 40000
F_MAX_MHZ = 70000


def new_state():
    """Return a zeroed state array; call ``init`` before the first ``step``."""
    return array("i", bytes(4 * STATE_WORDS))


def inc_from_mhz(f_mhz, tick_hz):
    """Phase increment per tick (t28) for a frequency in mHz. Integer math: identical on
    every runtime. Context: host or supervisor."""
    return (f_mhz << 28) // (1000 * tick_hz)


def init(st, tick_hz, f_nom_hz):
    """Reset ``st`` for a tick rate (int Hz, 2 000 .. 20 000) and nominal grid frequency
    (Hz, 40 .. 70). Raises ValueError outside those ranges. Context: boot / supervisor."""
    tick_hz = int(tick_hz)
    f_mhz = int(round(f_nom_hz * 1000))
    if not TICK_HZ_MIN <= tick_hz <= TICK_HZ_MAX:
        raise ValueError("tick_hz %d outside %d..%d" % (tick_hz, TICK_HZ_MIN, TICK_HZ_MAX))
    if not F_MIN_MHZ <= f_mhz <= F_MAX_MHZ:
        raise ValueError("f_nom_hz %s outside 40..70" % f_nom_hz)
    for i in range(STATE_WORDS):
        st[i] = 0
    w_nom = inc_from_mhz(f_mhz, tick_hz)
    st[_W_NOM] = w_nom
    st[_W_MIN] = inc_from_mhz(F_MIN_MHZ, tick_hz)
    st[_W_MAX] = inc_from_mhz(F_MAX_MHZ, tick_hz)
    st[_W_R_Q6] = w_nom << 6
    st[_W_F_Q6] = w_nom << 6
    st[_K_R] = (65536 * TAU_R_PER_S + tick_hz // 2) // tick_hz
    st[_K_F] = (65536 * TAU_F_PER_S + tick_hz // 2) // tick_hz
    # Delay of a half-period trapezoidal window: a quarter period, in samples * 4.
    st[_D_Q2] = (tick_hz * 1000 + f_mhz // 2) // f_mhz
    lag = (tick_hz * 1000) // (4 * f_mhz)  # quarter period, samples
    sh = 0
    while (2 << sh) <= lag:
        sh += 1
    st[_L_SH] = sh
    st[_DW_LOCK] = inc_from_mhz(LOCK_DF_MHZ, tick_hz)
    st[_AMP_LOCK] = LOCK_V_Q12
    st[_CNT_MAX] = 2 * (tick_hz * 1000) // f_mhz  # two nominal cycles
    st[TICK_HZ] = tick_hz
    st[_NI] = (1 << 27) // w_nom
    st[_SD] = _SUM_BIAS
    st[_SQ] = _SUM_BIAS
    st[COS_B] = _SIN_BIAS + 16384
    st[SIN_B] = _SIN_BIAS
    st[DW] = _SUM_BIAS
    for i in range(_RING):
        st[_RING_D + i] = _RING_BIAS
        st[_RING_Q + i] = _RING_BIAS


@micropython.viper
def step(st: ptr32, va: int, vb: int, vc: int):
    """Advance the PLL by one tick with phase voltages in Q12 (clamped to +/-4 pu).
    Writes THETA, V_POS, LOCKED, COS_B, SIN_B, DW. Context: tick."""
    tab = ptr16(SIN_Q14_B)
    atan = ptr32(ATAN_T28)
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
    # Clarke (amplitude invariant): 10923 = 2**15 / 3, 18919 = 2**15 / sqrt(3).
    # Rounded, not floored: a floor's -0.5 LSB is a DC offset in alpha/beta, which the
    # half-period window cannot cancel (it shows as a ripple at the grid frequency).
    al = ((va + va - vb - vc) * 10923 + 16384) >> 15
    be = ((vb - vc) * 18919 + 16384) >> 15

    # Park into the reference frame; sin/cos by table + linear interpolation (Q14).
    th_r = st[_TH_R]
    k = th_r >> _SIN_IDX_SHIFT
    s0 = tab[k]
    sn = s0 + (((tab[k + 1] - s0) * ((th_r >> 4) & 0x7FFF) + 16384) >> 15) - _SIN_BIAS
    t = (th_r + _QUARTER28) & _MASK28
    k = t >> _SIN_IDX_SHIFT
    s0 = tab[k]
    cs = s0 + (((tab[k + 1] - s0) * ((t >> 4) & 0x7FFF) + 16384) >> 15) - _SIN_BIAS
    d = (al * cs + be * sn + 8192) >> 14
    q = (be * cs - al * sn + 8192) >> 14

    # Half-period moving average, frequency adaptive.
    pos = (st[_POS] + 1) & _RING_MASK
    st[_POS] = pos
    st[_RING_D + pos] = d + _RING_BIAS
    st[_RING_Q + pos] = q + _RING_BIAS
    w_r_q6 = st[_W_R_Q6]
    w_r = w_r_q6 >> 6
    win_q8 = 0x20000000 // (w_r >> 6)  # pi / w_r in samples, Q8
    st[WIN_Q8] = win_q8
    ni = st[_NI]
    j = (pos - ni) & _RING_MASK
    sd = st[_SD] - _SUM_BIAS + d - (st[_RING_D + j] - _RING_BIAS)
    sq = st[_SQ] - _SUM_BIAS + q - (st[_RING_Q + j] - _RING_BIAS)
    if (win_q8 >> 8) > ni:
        ni += 1
        j = (pos - ni + 1) & _RING_MASK
        sd += st[_RING_D + j] - _RING_BIAS
        sq += st[_RING_Q + j] - _RING_BIAS
    elif (win_q8 >> 8) < ni:
        j = (pos - ni + 1) & _RING_MASK
        sd -= st[_RING_D + j] - _RING_BIAS
        sq -= st[_RING_Q + j] - _RING_BIAS
        ni -= 1
    st[_NI] = ni
    st[_SD] = sd + _SUM_BIAS
    st[_SQ] = sq + _SUM_BIAS
    fr = (win_q8 - (ni << 8)) << 6  # fractional window part, Q14
    if fr < 0:
        fr = 0
    elif fr > 16384:
        fr = 16384
    fr2 = (fr * fr) >> 15  # fr**2 / 2, Q14
    j = (pos - ni) & _RING_MASK
    a = st[_RING_D + j] - _RING_BIAS
    b = st[_RING_D + ((j - 1) & _RING_MASK)] - _RING_BIAS
    x = sd + sd - d + a + ((fr * a) >> 13) + ((fr2 * (b - a)) >> 13)  # 2 * window integral
    a = st[_RING_Q + j] - _RING_BIAS
    b = st[_RING_Q + ((j - 1) & _RING_MASK)] - _RING_BIAS
    y = sq + sq - q + a + ((fr * a) >> 13) + ((fr2 * (b - a)) >> 13)

    # CORDIC vectoring: phi = angle of (x, y) in t28, x -> 1.6468 * |(x, y)|.
    phi = 0
    if x < 0:
        x = -x
        y = -y
        phi = _HALF28
    i = 0
    while i < _CORDIC_STEPS:
        # (operand order and the copy inside each branch: the cheapest viper shape)
        if y > 0:
            t = (y >> i) + x
            y = y - (x >> i)
            x = t
            phi += atan[i]
        else:
            t = x - (y >> i)
            y = (x >> i) + y
            x = t
            phi -= atan[i]
        i += 1
    # |V| = (x / 1.6468 / 2) / W and 1 / W = w_r / 2**27; 19898 = 0.60725 * 2**15.
    v_pos = ((x >> 8) * (((w_r >> 8) * 19898) >> 12)) >> 15

    # Grid frequency from the slope of the delayed grid angle over L ticks.
    d_q2 = st[_D_Q2]
    l_sh = st[_L_SH]
    t = (th_r + phi - ((w_r * d_q2) >> 2)) & _MASK28
    st[_RING_T + pos] = t
    dw = t - st[_RING_T + ((pos - (1 << l_sh)) & _RING_MASK)] - (w_r << l_sh)
    dw = (((dw + _HALF28) & _MASK28) - _HALF28) >> l_sh  # w_g - w_r, inc
    if dw > _DW_CLAMP:
        dw = _DW_CLAMP
    elif dw < -_DW_CLAMP:
        dw = -_DW_CLAMP
    st[DW] = dw + _SUM_BIAS

    # Output angle: frame + filtered offset, extrapolated over the window delay.
    theta = (th_r + phi + ((dw * d_q2) >> 2)) & _MASK28
    st[THETA] = theta

    # Reported frequency (3 ms low-pass of w_g) and reference frequency (50 ms).
    w_f_q6 = st[_W_F_Q6]
    e = w_r + dw - (w_f_q6 >> 6)
    if e > _DW_CLAMP:
        e = _DW_CLAMP
    elif e < -_DW_CLAMP:
        e = -_DW_CLAMP
    st[_W_F_Q6] = w_f_q6 + ((((e + 4) >> 3) * st[_K_F]) >> 7)
    w_r_q6 += (dw * st[_K_R]) >> 10
    if w_r_q6 < (st[_W_MIN] << 6):
        w_r_q6 = st[_W_MIN] << 6
    elif w_r_q6 > (st[_W_MAX] << 6):
        w_r_q6 = st[_W_MAX] << 6
    st[_W_R_Q6] = w_r_q6
    st[_TH_R] = (th_r + w_r) & _MASK28

    # Lock with hysteresis: +1 per plausible tick, -2 per implausible one.
    cnt = st[_LOCK_CNT]
    lim = st[_DW_LOCK]
    if v_pos >= st[_AMP_LOCK] and dw <= lim and dw >= -lim:
        if cnt < st[_CNT_MAX]:
            cnt += 1
        else:
            st[LOCKED] = 1
    else:
        cnt -= 2
        if cnt <= 0:
            cnt = 0
            st[LOCKED] = 0
    st[_LOCK_CNT] = cnt
    st[V_POS] = v_pos

    # sin/cos of the output angle for the current controller (biased Q14).
    k = theta >> _SIN_IDX_SHIFT
    s0 = tab[k]
    st[SIN_B] = s0 + (((tab[k + 1] - s0) * ((theta >> 4) & 0x7FFF)) >> 15)
    t = (theta + _QUARTER28) & _MASK28
    k = t >> _SIN_IDX_SHIFT
    s0 = tab[k]
    st[COS_B] = s0 + (((tab[k + 1] - s0) * ((t >> 4) & 0x7FFF)) >> 15)


def raw_outputs(st):
    """(theta_t28, f_inc_q6, v_pos_q12, locked) as ints. Context: supervisor / host."""
    return st[THETA], st[_W_F_Q6], st[V_POS], st[LOCKED]


def theta_rad(st):
    """Estimated angle of the positive-sequence phase-a voltage, [0, 2*pi)."""
    return st[THETA] * (6.283185307179586 / (1 << 28))


def f_hz(st):
    """Estimated grid frequency, Hz (3 ms low-pass)."""
    return st[_W_F_Q6] * st[TICK_HZ] / (1 << 34)


def v_pos_pu(st):
    """Positive-sequence amplitude, per unit of nominal phase peak."""
    return st[V_POS] / 4096


def locked(st):
    return st[LOCKED]
