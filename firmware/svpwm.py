"""Space-vector modulation by min-max (zero-sequence) injection: dq voltage -> duty counts.

``u_dq`` (Q12 pu) is turned back to the stationary frame with the PLL's angle, split into
phases, and the mean of the largest and smallest phase is subtracted from all three.
That centres the three references in the DC link exactly as classic SVPWM does and
stretches the linear range from ``v_dc / 2`` to ``v_dc / sqrt(3)``. Each phase then
becomes an up/down (centre-aligned) compare value::

    duty = period / 2 + u * period / v_dc         counts, 0 .. period

clamped to ``[D_MIN, PERIOD - D_MIN]``. Dead-time allowance: ``D_MIN`` is the board's
dead time plus its minimum on-time, in counts (board data), so that no commanded pulse
is shorter than the gate driver can honour; the modulator reports the clamp through
``current.SAT`` so the current controller stops integrating. Dead-time distortion itself
is left to the current loop, which sees it as a disturbance.

Units: u in Q12 pu of nominal phase peak; v_dc in the same base (an 800 V link on a
230 V grid is 2.46 pu = 10076). Context: ``modulate`` tick (viper); ``init`` boot.
"""

from array import array

import micropython
from micropython import const

_BIAS = const(1 << 29)  # current.U_D_B / U_Q_B bias
_SIN_BIAS = const(16384)  # pll COS_B / SIN_B bias
_VDC_MIN_Q12 = const(2048)  # 0.5 pu: below it duties are computed as if v_dc were 0.5 pu
_VDC_MAX_Q12 = const(16384)  # 4 pu: the ADC range

PERIOD = const(0)  # PWM period, counts (board data), 16 .. 16384
D_MIN = const(1)  # dead time + minimum on-time, counts
DUTY_A = const(2)
DUTY_B = const(3)
DUTY_C = const(4)
WORDS = const(5)


def new_state():
    return array("i", bytes(4 * WORDS))


def init(pw, period_counts, d_min_counts):
    """Set the PWM period and the dead-time allowance; duties start at 50 % (zero
    volts across the filter when enabled). Raises ValueError on impossible values.
    Context: boot."""
    if not 16 <= period_counts <= 16384:
        raise ValueError("pwm period %d counts outside 16..16384" % period_counts)
    if not 0 <= d_min_counts < period_counts // 4:
        raise ValueError("d_min %d counts outside 0..period/4" % d_min_counts)
    pw[PERIOD] = period_counts
    pw[D_MIN] = d_min_counts
    for i in (DUTY_A, DUTY_B, DUTY_C):
        pw[i] = period_counts >> 1


@micropython.viper
def modulate(cc: ptr32, pll_st: ptr32, pw: ptr32, v_dc: int):
    """Duty counts for the three legs from current.U_D_B/U_Q_B and the PLL angle.
    Writes DUTY_A..C and current.SAT. Context: tick."""
    cs = pll_st[11] - _SIN_BIAS  # pll.COS_B
    sn = pll_st[12] - _SIN_BIAS  # pll.SIN_B
    u_d = cc[24] - _BIAS  # current.U_D_B
    u_q = cc[25] - _BIAS  # current.U_Q_B
    if u_d > 16383:
        u_d = 16383
    elif u_d < -16383:
        u_d = -16383
    if u_q > 16383:
        u_q = 16383
    elif u_q < -16383:
        u_q = -16383
    ua = (u_d * cs - u_q * sn) >> 14  # alpha
    be = (u_d * sn + u_q * cs) >> 14
    ub = (be * 28378 - ua * 16384) >> 15  # -alpha/2 + beta*sqrt(3)/2; 28378 = 2**15*sqrt(3)/2
    uc = -ua - ub
    mx = ua
    if ub > mx:
        mx = ub
    if uc > mx:
        mx = uc
    mn = ua
    if ub < mn:
        mn = ub
    if uc < mn:
        mn = uc
    v0 = (mx + mn) >> 1
    if v_dc < _VDC_MIN_Q12:
        v_dc = _VDC_MIN_Q12
    elif v_dc > _VDC_MAX_Q12:
        v_dc = _VDC_MAX_Q12
    period = pw[PERIOD]
    lo = pw[D_MIN]
    hi = period - lo
    half = period >> 1
    scale = (period << 14) // v_dc  # counts per Q12 unit, Q14
    # Beyond +/-v_dc a leg is clamped anyway; limiting first keeps the product < 2**28.
    sat = 0
    ua -= v0
    ub -= v0
    uc -= v0
    if ua > v_dc:
        ua = v_dc
    elif ua < -v_dc:
        ua = -v_dc
    if ub > v_dc:
        ub = v_dc
    elif ub < -v_dc:
        ub = -v_dc
    if uc > v_dc:
        uc = v_dc
    elif uc < -v_dc:
        uc = -v_dc
    t = half + ((ua * scale) >> 14)
    if t < lo:
        t = lo
        sat = 1
    elif t > hi:
        t = hi
        sat = 1
    pw[DUTY_A] = t
    t = half + ((ub * scale) >> 14)
    if t < lo:
        t = lo
        sat = 1
    elif t > hi:
        t = hi
        sat = 1
    pw[DUTY_B] = t
    t = half + ((uc * scale) >> 14)
    if t < lo:
        t = lo
        sat = 1
    elif t > hi:
        t = hi
        sat = 1
    pw[DUTY_C] = t
    cc[16] = sat  # current.SAT
