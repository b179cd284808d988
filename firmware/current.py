"""dq current control of the grid-side converter: fixed point, allocation-free.

From the power commands and the PLL's angle to converter voltage references:
1. P/Q commands (supervisor, Q12 of rated apparent power) are ramp-limited per tick.
2. Current references in the PLL frame: ``i_d = p / v_pos``, ``i_q = -q / v_pos``;
   magnitude limited to ``I_MAX`` with active-power priority: ``|i_d| <= I_MAX``,
   ``|i_q| <= sqrt(I_MAX**2 - i_d**2)``.
3. PI per axis with grid-voltage feed-forward and dq decoupling, for a converter behind
   an inductance ``L`` (current positive into the converter)::

       u_d = v_d + wL * i_q - (Kp * e_d + I_d)
       u_q = v_q - wL * i_d - (Kp * e_q + I_q)        e = i_ref - i

   Anti-windup: the integrators hold while the modulator reported saturation and the
   error would drive them further, and are clamped to +/-INT_MAX.
4. Measured p and q from the dq voltages and currents for the supervisor.

Sign convention (docs/design.md section 7): ``p > 0`` charges the vehicle (import from the grid),
``p < 0`` discharges (V2G export); ``q > 0`` absorbs reactive power (inductive,
current lagging). In per unit (bases: nominal phase peak voltage, rated peak current,
1.5 * V * I for power): ``p = v_d i_d + v_q i_q``, ``q = v_q i_d - v_d i_q``.

Units: Q12 per unit everywhere (4096 = 1.0); ramped commands Q20, integrators Q24.
Context: ``step`` tick (viper); ``init``/``set_power``/``set_enable``/readers supervisor.
"""

from array import array

import micropython
from micropython import const

_BIAS = const(1 << 29)  # signed words the hot path reads back are stored + _BIAS
_SIN_BIAS = const(16384)  # pll COS_B/SIN_B bias (tables.SIN_BIAS)
_E_MAX = const(8192)  # current error clamp, 2 pu
_V_MIN_Q12 = const(410)  # 0.1 pu: floor of the voltage that divides p and q

# parameters (init)
KP_Q12 = const(0)  # proportional gain, pu voltage per pu current, Q12
KI_Q12 = const(1)  # integral gain per tick: Ki * Ts, Q12 (pu voltage per pu current)
WL_Q12 = const(2)  # filter reactance at nominal frequency, pu, Q12
I_MAX_Q12 = const(3)  # current magnitude limit, pu
RAMP_Q20 = const(4)  # power command ramp, pu per tick, Q20
INT_MAX_Q24 = const(5)  # integrator clamp, pu voltage, Q24
# commands (supervisor -> tick), stored + _BIAS
P_CMD = const(8)
Q_CMD = const(9)
ENABLE = const(10)  # 0/1: 0 resets integrators and ramps to the present power
# state
_P_REF_Q20 = const(12)
_Q_REF_Q20 = const(13)
_INT_D_Q24 = const(14)
_INT_Q_Q24 = const(15)
SAT = const(16)  # written by the modulator: 1 when the last duty was clamped
# outputs (tick -> supervisor), plain signed words (never read back by viper)
I_D = const(20)
I_Q = const(21)
V_D = const(22)
V_Q = const(23)
U_D_B = const(24)  # converter voltage reference d, Q12 + _BIAS (read by the modulator)
U_Q_B = const(25)
P_MEAS = const(26)
Q_MEAS = const(27)
I_D_REF = const(28)
I_Q_REF = const(29)
WORDS = const(32)


def new_state():
    return array("i", bytes(4 * WORDS))


def init(cc, kp_q12, ki_q12, wl_q12, i_max_q12, ramp_q20, int_max_q24):
    """Load gains and limits (ints, already validated against the parameter table) and
    reset the controller with power commands of zero. Context: boot / supervisor."""
    for i in range(WORDS):
        cc[i] = 0
    cc[KP_Q12] = kp_q12
    cc[KI_Q12] = ki_q12
    cc[WL_Q12] = wl_q12
    cc[I_MAX_Q12] = i_max_q12
    cc[RAMP_Q20] = ramp_q20
    cc[INT_MAX_Q24] = int_max_q24
    for i in (P_CMD, Q_CMD, _P_REF_Q20, _Q_REF_Q20, _INT_D_Q24, _INT_Q_Q24):
        cc[i] = _BIAS


def set_power(cc, p_q12, q_q12):
    """Command active and reactive power, Q12 of rated apparent power, each clamped to
    +/-1.5 pu. One word per store: the tick never sees half a command pair that matters
    (each axis ramps on its own). Context: supervisor."""
    p_q12 = max(-6144, min(6144, int(p_q12)))
    q_q12 = max(-6144, min(6144, int(q_q12)))
    cc[P_CMD] = p_q12 + _BIAS
    cc[Q_CMD] = q_q12 + _BIAS


def set_enable(cc, on):
    cc[ENABLE] = 1 if on else 0


def u_dq_q12(cc):
    """The converter voltage references (u_d, u_q) of the last tick, Q12."""
    return cc[U_D_B] - _BIAS, cc[U_Q_B] - _BIAS


def power_ref_q12(cc):
    """The ramped (p, q) references now in force, Q12."""
    return (cc[_P_REF_Q20] - _BIAS) >> 8, (cc[_Q_REF_Q20] - _BIAS) >> 8


@micropython.viper
def _isqrt(n: int) -> int:
    """floor(sqrt(n)) for 0 <= n < 2**30, 15 fixed iterations. Context: tick."""
    root = 0
    bit = 1 << 28
    while bit > n:
        bit >>= 2
    while bit != 0:
        if n >= root + bit:
            n -= root + bit
            root = (root >> 1) + bit
        else:
            root >>= 1
        bit >>= 2
    return root


isqrt = _isqrt  # the same root for supervisor code (meter, islanding): 0 <= n < 2**30


@micropython.viper
def step(cc: ptr32, pll_st: ptr32, va: int, vb: int, vc: int, ia: int, ib: int, ic: int):
    """One control period. Phase voltages and currents in Q12 (|x| < 4 pu); the PLL
    state supplies cos/sin of the grid angle and the positive-sequence amplitude.
    Writes U_D_B/U_Q_B (Q12, biased) and the measurement outputs. Context: tick."""
    cs = pll_st[11] - _SIN_BIAS  # pll.COS_B
    sn = pll_st[12] - _SIN_BIAS  # pll.SIN_B
    v_pos = pll_st[8]  # pll.V_POS
    # Clarke + Park of voltages and currents (10923 = 2**15/3, 18919 = 2**15/sqrt(3)).
    al = ((va + va - vb - vc) * 10923) >> 15
    be = ((vb - vc) * 18919) >> 15
    v_d = (al * cs + be * sn) >> 14
    v_q = (be * cs - al * sn) >> 14
    al = ((ia + ia - ib - ic) * 10923) >> 15
    be = ((ib - ic) * 18919) >> 15
    i_d = (al * cs + be * sn) >> 14
    i_q = (be * cs - al * sn) >> 14
    cc[I_D] = i_d
    cc[I_Q] = i_q
    cc[V_D] = v_d
    cc[V_Q] = v_q
    cc[P_MEAS] = ((v_d * i_d) >> 12) + ((v_q * i_q) >> 12)
    cc[Q_MEAS] = ((v_q * i_d) >> 12) - ((v_d * i_q) >> 12)

    # Ramp the power references toward the commands (Q20).
    p_ref = cc[_P_REF_Q20] - _BIAS
    q_ref = cc[_Q_REF_Q20] - _BIAS
    if cc[ENABLE] == 0:
        # Disabled: hold references at zero power and integrators empty.
        cc[_P_REF_Q20] = _BIAS
        cc[_Q_REF_Q20] = _BIAS
        cc[_INT_D_Q24] = _BIAS
        cc[_INT_Q_Q24] = _BIAS
        cc[I_D_REF] = 0
        cc[I_Q_REF] = 0
        cc[U_D_B] = v_d + _BIAS
        cc[U_Q_B] = v_q + _BIAS
        return
    ramp = cc[RAMP_Q20]
    t = ((cc[P_CMD] - _BIAS) << 8) - p_ref
    if t > ramp:
        t = ramp
    elif t < -ramp:
        t = -ramp
    p_ref += t
    t = ((cc[Q_CMD] - _BIAS) << 8) - q_ref
    if t > ramp:
        t = ramp
    elif t < -ramp:
        t = -ramp
    q_ref += t
    cc[_P_REF_Q20] = p_ref + _BIAS
    cc[_Q_REF_Q20] = q_ref + _BIAS

    # Current references, active-power priority under the magnitude limit.
    if v_pos < _V_MIN_Q12:
        v_pos = _V_MIN_Q12
    i_max = cc[I_MAX_Q12]
    id_ref = (p_ref >> 8 << 12) // v_pos
    iq_ref = -((q_ref >> 8 << 12) // v_pos)
    if id_ref > i_max:
        id_ref = i_max
    elif id_ref < -i_max:
        id_ref = -i_max
    # |iq_ref| <= isqrt(i_max**2 - id_ref**2) <= i_max. Clamping to +/-i_max first gives
    # the same result and bounds iq_ref**2; the root is only needed when the vector is
    # beyond the limit (iq_ref**2 <= n means |iq_ref| <= floor(sqrt(n)): no clamp).
    if iq_ref > i_max:
        iq_ref = i_max
    elif iq_ref < -i_max:
        iq_ref = -i_max
    n = i_max * i_max - id_ref * id_ref
    if iq_ref * iq_ref > n:
        t = int(_isqrt(n))
        if iq_ref > t:
            iq_ref = t
        elif iq_ref < -t:
            iq_ref = -t
    cc[I_D_REF] = id_ref
    cc[I_Q_REF] = iq_ref

    # PI with feed-forward and decoupling; conditional integration for anti-windup.
    kp = cc[KP_Q12]
    ki = cc[KI_Q12]
    int_max = cc[INT_MAX_Q24]
    sat = cc[SAT]
    wl = cc[WL_Q12]
    e = id_ref - i_d
    if e > _E_MAX:
        e = _E_MAX
    elif e < -_E_MAX:
        e = -_E_MAX
    integ = cc[_INT_D_Q24] - _BIAS
    if sat == 0 or (e > 0 and integ < 0) or (e < 0 and integ > 0):
        integ += ki * e
        if integ > int_max:
            integ = int_max
        elif integ < -int_max:
            integ = -int_max
    cc[_INT_D_Q24] = integ + _BIAS
    cc[U_D_B] = v_d + ((wl * i_q) >> 12) - ((kp * e) >> 12) - (integ >> 12) + _BIAS
    e = iq_ref - i_q
    if e > _E_MAX:
        e = _E_MAX
    elif e < -_E_MAX:
        e = -_E_MAX
    integ = cc[_INT_Q_Q24] - _BIAS
    if sat == 0 or (e > 0 and integ < 0) or (e < 0 and integ > 0):
        integ += ki * e
        if integ > int_max:
            integ = int_max
        elif integ < -int_max:
            integ = -int_max
    cc[_INT_Q_Q24] = integ + _BIAS
    cc[U_Q_B] = v_q - ((wl * i_d) >> 12) - ((kp * e) >> 12) - (integ >> 12) + _BIAS
