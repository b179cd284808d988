"""Plant model of the simulated board: grid, averaged inverter, L filter, DC side, thermal.

What the firmware of the sim board controls. Runs on the MicroPython unix runtime (64-bit)
in scenario and board mode, and under CPython (tests, through the project's ``micropython``
stand-in) with bit-identical results.

Two rates:
- per tick (``sample``, ``advance``): grid source, converter, L filter, islanded RLC and
  the ADC words. Viper integer code on preallocated ``array('i')`` state: no allocation,
  no floats. 64-bit intermediates are fine here (the plant never runs on a board), but
  every *stored* word is a signed 32-bit value, stored with a bias of 2**30 where it can
  be negative (viper ``ptr32`` loads zero-extend on 64-bit hosts).
- every 1 ms of simulated time (``slow``): DC link and battery, pre-charge and contactor,
  plus the coefficients the tick uses (v_dc); fan and thermal every 10 ms of it. Python
  floats, kept few and in ``@micropython.native`` methods: MicroPython boxes every float,
  and a bytecode function whose frame lives on the heap, allocating as it runs, makes the
  allocator rescan the garbage since the last collection (measured: 10-20 us per call
  with the default 2 MB heap); native code keeps its frame on the C stack.

Per-unit bases (``pu``): voltage 1 pu = nominal phase-to-neutral peak (230*sqrt(2) V);
current 1 pu = rated peak current (p_rated / (3 * v_nom_rms) * sqrt(2)); power 1 pu =
p_rated (= 1.5 * V_base * I_base); impedance 1 pu = V_base / I_base.
Fixed point inside the tick: voltages and currents Q24 pu; angles in turns * 2**40
(accumulator) and turns * 2**31 (table offsets).

Sign conventions (docs/design.md section 7): phase currents positive INTO the converter (load
convention, like the firmware); ``p_w > 0`` import (charging the EV), ``q_var > 0``
absorbing (inductive, current lagging the voltage); ``grid_theta_rad`` in [0, 2*pi) is the
angle of the positive-sequence phase-a voltage, ``v_a = V cos(theta)``.

Model:
- Grid source, per phase k (k = 0, 1, 2 for a, b, c), with theta0 the accumulator angle
  (integral of ``f_hz``) and delta the positive-sequence angle offset of the phase jumps:
    fundamental  v_pu[k] * cos(theta0 + jump[k] - k*2pi/3)
    negative seq neg_seq_pu * cos(theta0 + delta + neg_seq_deg + k*2pi/3)
    harmonic h   pu * cos(h * (theta0 + delta - k*2pi/3) + phase_deg)
  so harmonic sequences are the natural ones of a balanced set: 3, 6, 9... zero sequence,
  2, 5, 8, 11, 14... negative, 4, 7, 10, 13... positive. ``noise_pu_rms``: independent
  uniform noise per phase (rms as given) from a 31-bit LCG (deterministic).
- Converter: averaged three-leg bridge, leg voltage ``(duty / period - 0.5) * v_dc`` plus
  the dead-time error ``+sign(i) * dead_time / T_pwm * v_dc`` with i positive INTO the
  converter (the error opposes the current; same as ``-sign(i_out)``), linear inside
  +/-1 % of rated current. Three-wire: the common mode of (v_pcc - u) drives no current.
  Gates off -> no current at all (diode rectification is not modelled: a real bridge
  would charge an isolated DC link to the line peak; with the battery above it, no
  current would flow anyway).
- L filter: ``L di/dt = v_pcc - u - R i`` per phase, integrated exactly for a converter
  voltage held over the tick (``i' = a i + b (mean(v) - u)``, a = exp(-R T / L),
  b = (1 - a) / R); the grid voltage's mean over the tick from the trapezoid of its end
  values, corrected by sinc(x) / cos(x) (x = w_nom T / 2, exact for the fundamental), so
  2..20 kHz all work. Currents and island voltages are clamped at +/-32 pu (far beyond
  any trip; keeps every stored word in range on both runtimes).
- Island (``island: true``): the grid breaker opens and a parallel RLC per phase (wye,
  star point at the source neutral) stays at the PCC, matched to the unit's output at
  that instant: R absorbs |p| (the unit's present active power, at least 1 % of rated),
  X_L = X_C = R / qf at f_res (qf 1, f_res = f_nom: IEEE 1547.1). An importing unit
  therefore sees its voltage collapse (a passive load cannot feed it). Optional
  ``island_load: {"p_w", "qf", "f_res_hz"}`` overrides the match (mismatch tests).
  Filter current, PCC voltage and load-inductor current are then integrated together,
  exactly for the held converter voltage (matrix exponential, computed at the event).
  Zero-sequence voltage is dropped at the breaker opening.
- DC side: DC-link capacitor with bleeder; EV battery (open-circuit voltage linear in
  SoC, internal resistance, capacity) behind a main contactor, with a pre-charge relay +
  resistor in parallel with it. DC current from the converter = its AC power (averaged
  over the slow step) / v_dc. Exact exponential update per slow step (stable).
- Contactor and pre-charge relay: follow their command after ``contactor_delay_ms``;
  ``contactor_weld: true`` welds the main contactor (at once if closed, else at its next
  closing): it then stays closed whatever the command. ``contactor_aux()`` is the real
  state of the main contactor.
- Thermal: losses ``3 * (a * I_rms**2 + b * I_rms * v_dc)`` (per phase RMS current);
  module -> heatsink -> ambient, heatsink-to-ambient conductance between natural
  convection and full fan by the fan's speed (which follows the duty with a lag;
  ``fan_fail`` stops it at once: tach 0). Defaults: rated current at 40 C ambient with the
  fan at 100 % -> module ~90 C steady state (tau ~5 s and ~130 s).
- NTC 10 kOhm at 25 C, beta 3950, to ground, pull-up 10 kOhm to the ADC reference:
  ``word = 65535 * R_ntc / (R_ntc + R_pullup)`` (hotter -> lower). ``ntc_open: true``
  makes the module NTC read as open: 65535.

ADC words (16-bit, the sim board's calibration, channel order VA VB VC IA IB IC VDC):
``raw = 32768 + round(x_pu * 8192)`` for phase voltages and currents (offset 32768,
gain_q14 8192), ``raw = round(v_dc_pu * 16384)`` for the DC link (offset 0, gain_q14
4096); all clamped to 0..65535.

Truth: ``truth()`` (dict, SI units plus ``_pu`` copies; ~10 us on the unix runtime: not
per tick), ``trace_values()`` (the trace columns of docs/formats.md as a tuple, cheaper),
``energy_wh()`` (import/export through the PCC, metered every tick), ``energized()``.

Determinism: integer tick; the slow path uses + - * / and sqrt, plus libm (cos, sin,
atan2, exp) only for tables, event set-up and NTC words. The unix runtime of the venv
links the same glibc libm as CPython, so both give the same bits (tested; a runtime built
against another libm could differ in a last bit, rarely enough to move an integer).
Scenario numbers reach both as the same doubles (3000 random decimals parse identically
in the venv's MicroPython; the cross-runtime test uses dyadic values all the same).

Context: ``sample``/``advance`` tick (no allocation, never raise on valid arrays);
everything else host / supervisor rate.
"""

import math
import sys
from array import array

try:
    import micropython
except ImportError:  # CPython without the stand-in on the path: find it in the repo
    _here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    sys.path.append(_here + "/../../host_tools/v2g/build/shim")
    import micropython
from micropython import const

_TWO_PI = 2.0 * math.pi
_SQRT2 = math.sqrt(2.0)
_SQRT3 = math.sqrt(3.0)

_DUTY_A = const(2)  # svpwm.DUTY_A (B, C follow)
_DUTY_B = const(3)
_DUTY_C = const(4)

# ---- fixed point ----
_B = const(0x40000000)  # bias of signed stored words
_Q24 = 16777216.0
_LIM = const(0x20000000)  # state clamp: 32 pu, Q24
_M20 = const(0xFFFFF)
_M24 = const(0xFFFFFF)
_M31 = const(0x7FFFFFFF)
_M40 = const(0xFFFFFFFFFF)
_TAB_BITS = 12
_TAB_N = 1 << _TAB_BITS
_TB = const(0x20000000)  # cos table: Q29 + this bias (non-negative words)
_TURN40 = float(1 << 40)
_TURN31 = 1 << 31

# ---- state words (array 'i') ----
_FLAGS = const(0)  # bit0 island, bit1 noise, bit2 frequency ramp
_ACC_HI = const(1)  # grid angle accumulator, turns * 2**40 = HI << 20 | LO
_ACC_LO = const(2)
_INC_HI = const(3)  # increment per tick, same units
_INC_LO = const(4)
_DINC = const(5)  # ramp: increment change per tick, + _B
_UNT_HI = const(6)  # ramp end increment
_UNT_LO = const(7)
_NCOMP = const(8)  # grid components (fundamental first, then harmonic orders)
_NOISE = const(9)  # uniform noise half-width, Q24 pu
_SEED = const(10)  # LCG state, 31 bits
_VA = const(11)  # PCC voltages, Q24 + _B  (VA VB VC IA IB IC contiguous: sample())
_VB = const(12)
_VC = const(13)
_IA = const(14)  # filter currents into the converter, Q24 + _B
_IB = const(15)
_IC = const(16)
_LA = const(17)  # island: load-inductor currents, Q24 + _B
_LB = const(18)
_KU = const(19)  # leg voltage per count of (2*duty - period), Q24 pu << 8
_UDT = const(20)  # dead-time voltage error, Q24 pu
_GDT = const(21)  # its slope inside the linear band, Q24 pu per pu
_AF = const(22)  # grid mode: i' = (AF * i + BV * (Dv0 + Dv1) - BU * Du) >> 28
_BU = const(23)
_PERIOD = const(24)  # PWM period, counts
_N = const(25)  # ticks since the last slow()
_PC_HI = const(26)  # sum of converter power, Q24 (pu of V_base*I_base) = HI << 24 | LO
_PC_LO = const(27)
_SQ_HI = const(28)  # sum of i_a**2 + i_b**2 + i_c**2, Q24
_SQ_LO = const(29)
_VDC_RAW = const(31)  # ADC word of the DC link
_ON = const(32)  # gates on during the last tick
_F = const(33)  # island, gates on: 3x3 transition matrix Q26 + _B (33..41)
_G = const(42)  # island, gates on: input column Q26 + _B (42..44)
_H = const(45)  # island, gates off: 2x2 for (v, iL), Q26 + _B (45..48)
_PI_HI = const(49)  # sum of PCC power where > 0 (import), Q24 pu of V_base*I_base
_PI_LO = const(50)
_PE_HI = const(51)  # sum of -PCC power where < 0 (export)
_PE_LO = const(52)
_BV = const(53)
_COMP = const(64)  # components: m, amp a b c (Q24), offset a b c (turns * 2**31)
_COMP_WORDS = 7
_MAX_COMP = 24
_WORDS = 64 + _COMP_WORDS * _MAX_COMP

_ISLAND = const(1)
_NOISY = const(2)
_RAMP = const(4)


def _cos_table():
    tab = array("i", bytes(4 * (_TAB_N + 1)))
    for j in range(_TAB_N + 1):
        tab[j] = int(math.floor(math.cos(_TWO_PI * j / _TAB_N) * 536870912.0 + 0.5)) + _TB
    return tab


_TAB = _cos_table()


@micropython.viper
def _step(st: ptr32, tab: ptr32, pw: ptr32, mode: int):
    """One tick: mode 1 gates on (duties from pw), 0 gates off, -1 only re-evaluate the
    grid source at the present instant (after an event; time does not move)."""
    flags = st[_FLAGS]
    if mode >= 0:
        inc = (st[_INC_HI] << 20) | st[_INC_LO]
        if flags & _RAMP:
            dinc = st[_DINC] - _B
            inc += dinc
            unt = (st[_UNT_HI] << 20) | st[_UNT_LO]
            if (dinc > 0 and inc >= unt) or (dinc < 0 and inc <= unt):
                inc = unt
                flags = flags & 3
                st[_FLAGS] = flags
            st[_INC_HI] = inc >> 20
            st[_INC_LO] = inc & _M20
        acc = (((st[_ACC_HI] << 20) | st[_ACC_LO]) + inc) & _M40
        st[_ACC_HI] = acc >> 20
        st[_ACC_LO] = acc & _M20
        st[_N] = st[_N] + 1
    else:
        acc = (st[_ACC_HI] << 20) | st[_ACC_LO]
    va0 = st[_VA] - _B
    vb0 = st[_VB] - _B
    vc0 = st[_VC] - _B
    va1 = 0
    vb1 = 0
    vc1 = 0
    if (flags & _ISLAND) == 0:
        n = st[_NCOMP]
        k = _COMP
        while n > 0:
            base = (st[k] * acc) >> 9
            amp = st[k + 1]
            if amp != 0:
                ang = (base + st[k + 4]) & _M31
                j = ang >> 19
                t0 = tab[j]
                va1 += (amp * (t0 - _TB + (((tab[j + 1] - t0) * (ang & 0x7FFFF)) >> 19))) >> 29
            amp = st[k + 2]
            if amp != 0:
                ang = (base + st[k + 5]) & _M31
                j = ang >> 19
                t0 = tab[j]
                vb1 += (amp * (t0 - _TB + (((tab[j + 1] - t0) * (ang & 0x7FFFF)) >> 19))) >> 29
            amp = st[k + 3]
            if amp != 0:
                ang = (base + st[k + 6]) & _M31
                j = ang >> 19
                t0 = tab[j]
                vc1 += (amp * (t0 - _TB + (((tab[j + 1] - t0) * (ang & 0x7FFFF)) >> 19))) >> 29
            k += 7
            n -= 1
        if flags & _NOISY:
            amp = st[_NOISE]
            s = st[_SEED]
            s = (s * 1103515245 + 12345) & _M31
            va1 += (((s >> 7) - 0x800000) * amp) >> 23
            s = (s * 1103515245 + 12345) & _M31
            vb1 += (((s >> 7) - 0x800000) * amp) >> 23
            s = (s * 1103515245 + 12345) & _M31
            vc1 += (((s >> 7) - 0x800000) * amp) >> 23
            st[_SEED] = s
        if mode < 0:
            st[_VA] = va1 + _B
            st[_VB] = vb1 + _B
            st[_VC] = vc1 + _B
            return
    elif mode < 0:
        return
    ia = st[_IA] - _B
    ib = st[_IB] - _B
    ic = st[_IC] - _B
    p = (va0 * ia + vb0 * ib + vc0 * ic) >> 24  # PCC power of the instant, for metering
    if p > 0:
        lo = st[_PI_LO] + p
        st[_PI_HI] = st[_PI_HI] + (lo >> 24)
        st[_PI_LO] = lo & _M24
    elif p < 0:
        lo = st[_PE_LO] - p
        st[_PE_HI] = st[_PE_HI] + (lo >> 24)
        st[_PE_LO] = lo & _M24
    ua = 0
    ub = 0
    uc = 0
    if mode == 1:
        per = st[_PERIOD]
        ku = st[_KU]
        ua = (((pw[_DUTY_A] << 1) - per) * ku) >> 8
        ub = (((pw[_DUTY_B] << 1) - per) * ku) >> 8
        uc = (((pw[_DUTY_C] << 1) - per) * ku) >> 8
        udt = st[_UDT]
        g = st[_GDT]
        d = (ia * g) >> 24
        if d > udt:
            d = udt
        elif d < -udt:
            d = -udt
        ua += d
        d = (ib * g) >> 24
        if d > udt:
            d = udt
        elif d < -udt:
            d = -udt
        ub += d
        d = (ic * g) >> 24
        if d > udt:
            d = udt
        elif d < -udt:
            d = -udt
        uc += d
    ua3 = ua + ua - ub - uc  # 3 * (u_a - common mode)
    ub3 = ub + ub - ua - uc
    if flags & _ISLAND:
        la = st[_LA] - _B
        lb = st[_LB] - _B
        if mode == 1:
            f0 = st[_F] - _B
            f1 = st[_F + 1] - _B
            f2 = st[_F + 2] - _B
            f3 = st[_F + 3] - _B
            f4 = st[_F + 4] - _B
            f5 = st[_F + 5] - _B
            f6 = st[_F + 6] - _B
            f7 = st[_F + 7] - _B
            f8 = st[_F + 8] - _B
            g0 = st[_G] - _B
            g1 = st[_G + 1] - _B
            g2 = st[_G + 2] - _B
            ia1 = (f0 * ia + f1 * va0 + f2 * la + g0 * ua3 + 0x2000000) >> 26
            va1 = (f3 * ia + f4 * va0 + f5 * la + g1 * ua3 + 0x2000000) >> 26
            la1 = (f6 * ia + f7 * va0 + f8 * la + g2 * ua3 + 0x2000000) >> 26
            ib1 = (f0 * ib + f1 * vb0 + f2 * lb + g0 * ub3 + 0x2000000) >> 26
            vb1 = (f3 * ib + f4 * vb0 + f5 * lb + g1 * ub3 + 0x2000000) >> 26
            lb1 = (f6 * ib + f7 * vb0 + f8 * lb + g2 * ub3 + 0x2000000) >> 26
        else:
            h0 = st[_H] - _B
            h1 = st[_H + 1] - _B
            h2 = st[_H + 2] - _B
            h3 = st[_H + 3] - _B
            ia1 = 0
            ib1 = 0
            va1 = (h0 * va0 + h1 * la + 0x2000000) >> 26
            la1 = (h2 * va0 + h3 * la + 0x2000000) >> 26
            vb1 = (h0 * vb0 + h1 * lb + 0x2000000) >> 26
            lb1 = (h2 * vb0 + h3 * lb + 0x2000000) >> 26
        if va1 > _LIM:  # 32 pu: far beyond any trip, keeps every stored word in range
            va1 = _LIM
        elif va1 < -_LIM:
            va1 = -_LIM
        if vb1 > _LIM:
            vb1 = _LIM
        elif vb1 < -_LIM:
            vb1 = -_LIM
        if la1 > _LIM:
            la1 = _LIM
        elif la1 < -_LIM:
            la1 = -_LIM
        if lb1 > _LIM:
            lb1 = _LIM
        elif lb1 < -_LIM:
            lb1 = -_LIM
        vc1 = 0 - va1 - vb1
        st[_LA] = la1 + _B
        st[_LB] = lb1 + _B
    elif mode == 1:
        af = st[_AF]
        bv = st[_BV]
        bu = st[_BU]
        e = va0 + va0 - vb0 - vc0 + va1 + va1 - vb1 - vc1
        ia1 = (af * ia + bv * e - bu * ua3 + 0x8000000) >> 28
        e = vb0 + vb0 - va0 - vc0 + vb1 + vb1 - va1 - vc1
        ib1 = (af * ib + bv * e - bu * ub3 + 0x8000000) >> 28
    else:
        ia1 = 0
        ib1 = 0
    if ia1 > _LIM:
        ia1 = _LIM
    elif ia1 < -_LIM:
        ia1 = -_LIM
    if ib1 > _LIM:
        ib1 = _LIM
    elif ib1 < -_LIM:
        ib1 = -_LIM
    ic1 = 0 - ia1 - ib1
    if mode == 1:
        p = (ua * (ia + ia1) + ub * (ib + ib1) + uc * (ic + ic1)) >> 25
        lo = st[_PC_LO] + p
        st[_PC_HI] = st[_PC_HI] + (lo >> 24)
        st[_PC_LO] = lo & _M24
        lo = st[_SQ_LO] + ((ia1 * ia1 + ib1 * ib1 + ic1 * ic1) >> 24)
        st[_SQ_HI] = st[_SQ_HI] + (lo >> 24)
        st[_SQ_LO] = lo & _M24
    st[_ON] = mode
    st[_VA] = va1 + _B
    st[_VB] = vb1 + _B
    st[_VC] = vc1 + _B
    st[_IA] = ia1 + _B
    st[_IB] = ib1 + _B
    st[_IC] = ic1 + _B


# ---- deterministic float helpers (slow path; only + - * / and sqrt: same bits on every
# IEEE runtime) ----

def _expm(m, t):
    """exp(m * t) of a small square matrix (list of rows): scaling and squaring of an
    18-term Taylor series."""
    n = len(m)
    a = [[m[r][c] * t for c in range(n)] for r in range(n)]
    norm = max(sum(abs(x) for x in row) for row in a)
    s = 0
    while norm > 0.25:
        norm *= 0.5
        s += 1
    sc = 1.0 / (1 << s)
    a = [[x * sc for x in row] for row in a]
    res = [[1.0 if r == c else 0.0 for c in range(n)] for r in range(n)]
    term = [row[:] for row in res]
    for k in range(1, 19):
        term = [[sum(term[r][i] * a[i][c] for i in range(n)) / k for c in range(n)]
                for r in range(n)]
        res = [[res[r][c] + term[r][c] for c in range(n)] for r in range(n)]
    for _ in range(s):
        res = [[sum(res[r][i] * res[i][c] for i in range(n)) for c in range(n)]
               for r in range(n)]
    return res


def _exp(x):
    """exp(x) from + - * / only: (Taylor of x / 2**s) ** (2**s)."""
    s = 0
    while abs(x) > 0.125:
        x *= 0.5
        s += 1
    term = 1.0
    res = 1.0
    for k in range(1, 12):
        term = term * x / k
        res += term
    for _ in range(s):
        res *= res
    return res


def _rnd(x):
    return int(math.floor(x + 0.5))


def _num3(key, v, lo=None, hi=None):
    """A number or a list of three numbers -> list of three floats (ValueError if not)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        vals = [float(v)] * 3
    elif isinstance(v, (list, tuple)) and len(v) == 3 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        vals = [float(x) for x in v]
    else:
        raise ValueError("%s: %r is not a number or a list of 3 numbers" % (key, v))
    for x in vals:
        if (lo is not None and x < lo) or (hi is not None and x > hi) or x != x:
            raise ValueError("%s: %r outside %s..%s" % (key, v, lo, hi))
    return vals


def _num(key, v, lo=None, hi=None):
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v:
        raise ValueError("%s: %r is not a number" % (key, v))
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError("%s: %r outside %s..%s" % (key, v, lo, hi))
    return float(v)


def _flag(key, v):
    if not isinstance(v, bool) and v not in (0, 1):
        raise ValueError("%s: %r is not a boolean" % (key, v))
    return bool(v)


# Parameters a caller may override (Plant(..., name=value)), with their defaults.
DEFAULTS = {
    "x_filter_pu": 0.08,  # filter reactance at f_nom, pu
    "r_filter_pu": 0.005,  # filter resistance, pu
    "i_dt_band_pu": 0.01,  # dead-time error linear within +/- this current
    "c_dc_f": 1.0e-3,  # DC-link capacitance
    "r_bleed_ohm": 100.0e3,  # DC-link bleeder
    "v_bat_soc0_v": 700.0,  # battery open-circuit voltage at SoC 0
    "v_bat_soc1_v": 830.0,  # ... at SoC 1
    "r_bat_ohm": 0.1,  # battery internal resistance
    "bat_kwh": 60.0,  # battery capacity
    "r_pre_ohm": 50.0,  # pre-charge resistor
    "contactor_delay_ms": 20.0,  # main contactor and pre-charge relay, both ways
    "main_closed": False,  # initial main contactor state (tests); the link starts charged
    "loss_a_ohm": 0.144,  # conduction loss per phase: a * I_rms**2
    "loss_b_v": 2.35e-3,  # switching loss per phase: b * I_rms * v_dc
    "r_mh_k_w": 0.08,  # module -> heatsink
    "c_m_j_k": 62.5,  # module heat capacity (tau ~ 5 s)
    "r_ha_fan_k_w": 0.17,  # heatsink -> ambient, fan at full speed
    "r_ha_nat_k_w": 0.6,  # heatsink -> ambient, fan stopped
    "c_h_j_k": 706.0,  # heatsink heat capacity (tau ~ 120 s with the fan)
    "fan_tau_s": 0.5,  # fan speed lag behind its duty
    "fan_tach_full_hz": 200.0,  # tach frequency at full speed
    "ntc_r25_ohm": 10.0e3,
    "ntc_beta_k": 3950.0,
    "ntc_pullup_ohm": 10.0e3,
    "noise_seed": 12345,
    "theta0_deg": 0.0,  # initial positive-sequence phase-a angle
    "island_min_p_pu": 0.01,  # floor of |p| when the island load is matched
}


class Plant:
    """The simulated power stage. See the module docstring for the model and units."""

    def __init__(self, tick_hz=10000, f_nom_hz=50.0, v_nom_ln_rms=230.0, p_rated_w=11000.0,
                 pwm_period_counts=2500, dead_time_ns=500, pwm_freq_hz=10000, ambient_c=25.0,
                 soc=0.8, **overrides):
        grid_init = {}
        for key in ("v_pu", "f_hz"):  # scenario "initial" keys are accepted here too
            if key in overrides:
                grid_init[key] = overrides.pop(key)
        for key in overrides:
            if key not in DEFAULTS:
                raise ValueError("Plant: unknown parameter %r (allowed: %s)"
                                 % (key, ", ".join(sorted(DEFAULTS))))
        prm = dict(DEFAULTS)
        for key, value in overrides.items():
            if isinstance(DEFAULTS[key], bool):
                prm[key] = _flag(key, value)
            elif key == "theta0_deg":
                prm[key] = _num(key, value)
            elif key == "noise_seed":
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise ValueError("Plant: noise_seed %r is not an integer >= 0" % (value,))
                prm[key] = value
            else:
                prm[key] = _num(key, value, 0.0 if key == "r_filter_pu" else 1e-12)
        self.prm = prm
        self.tick_hz = int(_num("tick_hz", tick_hz, 1000, 100000))
        self.f_nom_hz = _num("f_nom_hz", f_nom_hz, 1.0, 1000.0)
        self.v_nom_ln_rms = _num("v_nom_ln_rms", v_nom_ln_rms, 1.0, 100000.0)
        self.p_rated_w = _num("p_rated_w", p_rated_w, 1.0, 1.0e9)
        self.period = int(_num("pwm_period_counts", pwm_period_counts, 16, 16384))
        self.dead_time_ns = _num("dead_time_ns", dead_time_ns, 0, 1.0e6)
        self.pwm_freq_hz = _num("pwm_freq_hz", pwm_freq_hz, 1.0, 1.0e6)
        self.v_base_v = self.v_nom_ln_rms * _SQRT2
        self.i_base_a = self.p_rated_w / (3.0 * self.v_nom_ln_rms) * _SQRT2
        self.z_base_ohm = self.v_base_v / self.i_base_a
        self.w_nom = _TWO_PI * self.f_nom_hz
        self.t_tick = 1.0 / self.tick_hz

        st = array("i", bytes(4 * _WORDS))
        self._st = st
        for i in (_VA, _VB, _VC, _IA, _IB, _IC, _LA, _LB, _DINC, _PC_HI, _SQ_HI):
            st[i] = _B
        for i in range(_F, _H + 4):
            st[i] = _B
        st[_PERIOD] = self.period
        st[_SEED] = int(prm["noise_seed"]) & 0x7FFFFFFF
        # L filter, grid mode: i' = a i + b * mean(v - u) over the tick, u held, v from the
        # trapezoid of its end values (x 3 for the common-mode removal, see _step), with
        # the trapezoid's error for a sinusoid at f_nom corrected: mean = trapezoid *
        # sinc(x) / cos(x), x = w_nom * T / 2
        lf = prm["x_filter_pu"] / self.w_nom
        rf = prm["r_filter_pu"]
        if not lf > 0 or rf < 0:
            raise ValueError("Plant: x_filter_pu must be > 0 and r_filter_pu >= 0")
        self._lf, self._rf = lf, rf
        a = _exp(-rf * self.t_tick / lf)
        b = (1.0 - a) / rf if rf > 0 else self.t_tick / lf
        x = self.w_nom * self.t_tick / 2.0
        k1 = math.sin(x) / x / math.cos(x)
        st[_AF] = _rnd(a * 268435456.0)
        st[_BV] = _rnd(b / 6.0 * k1 * 268435456.0)
        st[_BU] = _rnd(b / 3.0 * 268435456.0)

        # grid source parameters (floats; _rebuild() turns them into components)
        self._f_hz = self.f_nom_hz
        self._amp = [1.0, 1.0, 1.0]
        self._jump = [0.0, 0.0, 0.0]  # radians
        self._neg = 0.0
        self._neg_rad = 0.0
        self._harm = []  # (order, pu, phase_rad)
        self._noise = 0.0
        self._delta = 0.0  # positive-sequence offset, radians
        self._island = False
        self._island_load = None
        self._ticks = 0  # ticks folded in by slow()
        self._set_inc(self._f_hz)
        th0 = _num("theta0_deg", prm["theta0_deg"]) / 360.0
        acc = int(math.floor((th0 - math.floor(th0)) * _TURN40)) & 0xFFFFFFFFFF
        st[_ACC_HI] = acc >> 20
        st[_ACC_LO] = acc & 0xFFFFF

        # DC side, contactors, thermal, fan
        self.ambient_c = _num("ambient_c", ambient_c, -60.0, 100.0)
        self.soc = _num("soc", soc, 0.0, 1.0)
        self.main_cmd = self.pre_cmd = False
        self.main_closed = bool(prm["main_closed"])
        self.main_cmd = self.main_closed
        self.pre_closed = False
        self.welded = False
        self.weld_pending = False
        self._main_timer = self._pre_timer = 0.0
        self.v_dc_v = self._v_oc() if self.main_closed else 0.0
        self.i_bat_a = 0.0
        self.t_module_c = self.t_heatsink_c = self.ambient_c
        self.fan_duty = 0.0
        self.fan_speed = 0.0
        self.fan_failed = False
        self.ntc_is_open = False
        self.p_conv_w = 0.0  # converter AC power over the last slow step (+ into DC)
        self.i_rms_a = 0.0
        self.p_loss_w = 0.0
        self._thermal_i_rms = None  # test hook: thermal load current override
        self._exp_key = -1.0
        self._exp_v = self._exp_m = 0.0
        self._th_ms = 0.0
        self._sq = self._n_th = 0
        self._e_imp = self._e_exp = 0
        self._v_words = -1.0
        self._delay_ms = float(prm["contactor_delay_ms"]) - 1e-9
        self._g_main = 1.0 / prm["r_bat_ohm"]
        self._g_pre = 1.0 / (prm["r_bat_ohm"] + prm["r_pre_ohm"])
        self._g_bleed = 1.0 / prm["r_bleed_ohm"]
        self._c_dc = prm["c_dc_f"]
        self._k_soc = 1e-3 / (prm["bat_kwh"] * 3.6e6)
        self._k_p = self.p_rated_w / (_Q24 * 1.5)  # converter power sum -> W * ticks
        self._k_e = self.p_rated_w / (_Q24 * 1.5) / self.tick_hz / 3600.0
        self._g_mh = 1.0 / prm["r_mh_k_w"]
        self._k_v = self.v_base_v / _Q24  # state words -> V, A, W, var
        self._k_i = self.i_base_a / _Q24
        self._k_pw = self.p_rated_w / (1.5 * self.v_base_v * self.i_base_a)
        self._k_qw = self._k_pw / _SQRT3
        self._g_ha_nat = 1.0 / prm["r_ha_nat_k_w"]
        self._k_vdc = 1.0 / self.v_base_v
        self._k_ku = _Q24 * 256.0 / (2.0 * self.period)  # Q24 pu << 8 per count
        self._k_udt = self.dead_time_ns * 1e-9 * self.pwm_freq_hz * _Q24
        self._k_gdt = 1.0 / prm["i_dt_band_pu"]
        self._g_ha_fan = 1.0 / prm["r_ha_fan_k_w"] - self._g_ha_nat
        self._update_dc_words()
        self._rebuild()
        if grid_init:
            self.event(grid_init)

    # ---------------------------------------------------------------- grid source
    def _set_inc(self, f_hz):
        inc = _rnd(f_hz / self.tick_hz * _TURN40)
        self._st[_INC_HI] = inc >> 20
        self._st[_INC_LO] = inc & 0xFFFFF
        self._f_hz = f_hz

    def _inc(self):
        return (self._st[_INC_HI] << 20) | self._st[_INC_LO]

    def grid_f_hz(self):
        """Present frequency of the grid source, Hz."""
        return self._inc() / _TURN40 * self.tick_hz

    def _rebuild(self):
        """Grid parameters -> component words, then the voltage of the present instant."""
        st = self._st
        third = _TWO_PI / 3.0
        # positive-sequence offset of the fundamental: arg(sum A_k e^{j jump_k})
        re = sum(self._amp[k] * math.cos(self._jump[k]) for k in range(3))
        im = sum(self._amp[k] * math.sin(self._jump[k]) for k in range(3))
        if re * re + im * im > 1e-18:
            self._delta = math.atan2(im, re)
        else:
            self._delta = sum(self._jump) / 3.0
        d = self._delta
        comps = {}  # order -> [phasor re/im per phase]
        fund = []
        for k in range(3):
            ang = self._jump[k] - k * third
            x = self._amp[k] * math.cos(ang)
            y = self._amp[k] * math.sin(ang)
            ang = d + self._neg_rad + k * third
            x += self._neg * math.cos(ang)
            y += self._neg * math.sin(ang)
            fund.append((x, y))
        comps[1] = fund
        for order, pu, ph in self._harm:
            ph_list = comps.setdefault(order, [(0.0, 0.0)] * 3)
            new = []
            for k in range(3):
                ang = order * (d - k * third) + ph
                new.append((ph_list[k][0] + pu * math.cos(ang),
                            ph_list[k][1] + pu * math.sin(ang)))
            comps[order] = new
        orders = sorted(comps)
        if len(orders) > _MAX_COMP:
            raise ValueError("harmonics: at most %d distinct orders" % (_MAX_COMP - 1))
        w = _COMP
        for order in orders:
            st[w] = order
            for k in range(3):
                x, y = comps[order][k]
                amp = math.sqrt(x * x + y * y)
                st[w + 1 + k] = _rnd(amp * _Q24)
                turns = math.atan2(y, x) / _TWO_PI if amp > 0 else 0.0
                turns -= math.floor(turns)
                st[w + 4 + k] = int(math.floor(turns * _TURN31)) & 0x7FFFFFFF
            w += _COMP_WORDS
        st[_NCOMP] = len(orders)
        if self._noise > 0:
            st[_NOISE] = _rnd(self._noise * _SQRT3 * _Q24)
            st[_FLAGS] |= _NOISY
        else:
            st[_NOISE] = 0
            st[_FLAGS] &= ~_NOISY
        _step(st, _TAB, st, -1)

    def event(self, ev):
        """Apply the plant keys of one scenario event at the present instant. Keys the
        plant does not own (setpoint, permit_service, ev_limits, hang, config, t_s, ...)
        are ignored. Raises ValueError naming the key on a bad value (and then changes
        nothing). Context: host (between ticks)."""
        new = {}
        if "v_pu" in ev:
            new["amp"] = _num3("v_pu", ev["v_pu"], 0.0, 4.0)
        if "phase_jump_deg" in ev:
            new["jump"] = _num3("phase_jump_deg", ev["phase_jump_deg"], -3600.0, 3600.0)
        if "f_hz" in ev:
            new["f"] = _num("f_hz", ev["f_hz"], 0.1, self.tick_hz / 20.0)
        if "rocof_hz_s" in ev:
            new["rocof"] = _num("rocof_hz_s", ev["rocof_hz_s"], -1000.0, 1000.0)
            if "until_hz" in ev:
                new["until"] = _num("until_hz", ev["until_hz"], 0.1, self.tick_hz / 20.0)
        if "harmonics" in ev:
            hs = ev["harmonics"]
            if not isinstance(hs, (list, tuple)):
                raise ValueError("harmonics: %r is not a list" % (hs,))
            harm = []
            for h in hs:
                if not isinstance(h, dict) or "order" not in h or "pu" not in h:
                    raise ValueError("harmonics: %r needs 'order' and 'pu'" % (h,))
                order = h["order"]
                if not isinstance(order, int) or isinstance(order, bool) or not 2 <= order <= 50:
                    raise ValueError("harmonics: order %r not an integer in 2..50" % (order,))
                harm.append((order, _num("harmonics pu", h["pu"], 0.0, 1.0),
                             math.radians(_num("harmonics phase_deg", h.get("phase_deg", 0.0)))))
            new["harm"] = harm
        if "neg_seq_pu" in ev:
            new["neg"] = _num("neg_seq_pu", ev["neg_seq_pu"], 0.0, 1.0)
        if "neg_seq_deg" in ev:
            new["neg_deg"] = _num("neg_seq_deg", ev["neg_seq_deg"])
        if "noise_pu_rms" in ev:
            new["noise"] = _num("noise_pu_rms", ev["noise_pu_rms"], 0.0, 0.5)
        if "island_load" in ev:
            il = ev["island_load"]
            if not isinstance(il, dict):
                raise ValueError("island_load: %r is not an object" % (il,))
            load = {}
            for k, lo, hi in (("p_w", 1e-3, 1e9), ("qf", 0.05, 20.0), ("f_res_hz", 1.0, 1000.0)):
                if k in il:
                    load[k] = _num("island_load " + k, il[k], lo, hi)
            new["island_load"] = load
        if "island" in ev:
            new["island"] = _flag("island", ev["island"])
        if "ambient_c" in ev:
            new["ambient"] = _num("ambient_c", ev["ambient_c"], -60.0, 100.0)
        for key in ("fan_fail", "contactor_weld", "ntc_open"):
            if key in ev:
                new[key] = _flag(key, ev[key])
        # all valid: apply
        grid = False
        if "amp" in new:
            self._amp = new["amp"]
            grid = True
        if "jump" in new:
            self._jump = [self._jump[k] + math.radians(new["jump"][k]) for k in range(3)]
            grid = True
        if "harm" in new:
            self._harm = new["harm"]
            grid = True
        if "neg" in new:
            self._neg = new["neg"]
            grid = True
        if "neg_deg" in new:
            self._neg_rad = math.radians(new["neg_deg"])
            grid = True
        if "noise" in new:
            self._noise = new["noise"]
            grid = True
        if "f" in new:
            self._st[_FLAGS] &= ~_RAMP
            self._set_inc(new["f"])
        if "rocof" in new:
            self._start_ramp(new["rocof"], new.get("until"))
        if grid:
            self._rebuild()
        if "island_load" in new:
            self._island_load = new["island_load"]
        if "island" in new:
            if new["island"] and not self._island:
                self._open_breaker()
            elif not new["island"] and self._island:
                self._island = False
                self._st[_FLAGS] &= ~_ISLAND
                _step(self._st, _TAB, self._st, -1)
        if "ambient" in new:
            self.ambient_c = new["ambient"]
        if "fan_fail" in new:
            self.fan_failed = new["fan_fail"]
            if self.fan_failed:
                self.fan_speed = 0.0
        if "contactor_weld" in new:
            if new["contactor_weld"]:
                if self.main_closed:
                    self.welded = True
                else:
                    self.weld_pending = True
            else:
                self.welded = self.weld_pending = False
        if "ntc_open" in new:
            self.ntc_is_open = new["ntc_open"]

    def _start_ramp(self, rocof, until):
        st = self._st
        st[_FLAGS] &= ~_RAMP
        if rocof == 0:
            return
        f0 = self.grid_f_hz()
        if until is None:  # no end given: stop at +/-50 % of nominal
            until = self.f_nom_hz * (1.5 if rocof > 0 else 0.5)
        else:
            rocof = abs(rocof) if until >= f0 else -abs(rocof)
        if (rocof > 0 and until <= f0) or (rocof < 0 and until >= f0):
            return
        dinc = _rnd(rocof / (self.tick_hz * self.tick_hz) * _TURN40)
        if dinc == 0:
            dinc = 1 if rocof > 0 else -1
        unt = _rnd(until / self.tick_hz * _TURN40)
        st[_DINC] = dinc + _B
        st[_UNT_HI] = unt >> 20
        st[_UNT_LO] = unt & 0xFFFFF
        st[_FLAGS] |= _RAMP

    # ---------------------------------------------------------------- island
    def _v_pos_pu(self):
        re = sum(self._amp[k] * math.cos(self._jump[k]) for k in range(3)) / 3.0
        im = sum(self._amp[k] * math.sin(self._jump[k]) for k in range(3)) / 3.0
        return math.sqrt(re * re + im * im)

    def _open_breaker(self):
        st = self._st
        v = self.voltages_pu()
        i = self.currents_pu()
        p = (v[0] * i[0] + v[1] * i[1] + v[2] * i[2]) / 1.5  # pu, + = unit absorbing
        load = self._island_load or {}
        if "p_w" in load:
            p_load = load["p_w"] / self.p_rated_w
        else:
            p_load = max(abs(p), self.prm["island_min_p_pu"])
        qf = load.get("qf", 1.0)
        w_res = _TWO_PI * load.get("f_res_hz", self.f_nom_hz)
        vmag = max(self._v_pos_pu(), 0.05)
        r = vmag * vmag / p_load
        l_l = r / (qf * w_res)
        c = qf / (r * w_res)
        lf, rf, t = self._lf, self._rf, self.t_tick
        # x = (i, v, iL); input: 3 * (u - common mode)
        m = [[-rf / lf, 1.0 / lf, 0.0, -1.0 / (3.0 * lf)],
             [-1.0 / c, -1.0 / (r * c), -1.0 / c, 0.0],
             [0.0, 1.0 / l_l, 0.0, 0.0],
             [0.0, 0.0, 0.0, 0.0]]
        e = _expm(m, t)
        words = [e[0][0], e[0][1], e[0][2], e[1][0], e[1][1], e[1][2], e[2][0], e[2][1],
                 e[2][2], e[0][3], e[1][3], e[2][3]]
        e2 = _expm([[-1.0 / (r * c), -1.0 / c], [1.0 / l_l, 0.0]], t)
        words += [e2[0][0], e2[0][1], e2[1][0], e2[1][1]]
        for x in words:
            if not abs(x) < 15.0:
                raise ValueError("island: RLC load too stiff for %d Hz ticks" % self.tick_hz)
        for n, x in enumerate(words):
            st[_F + n] = _rnd(x * 67108864.0) + _B
        # start from the present PCC voltage (zero sequence dropped) and the load
        # inductor's steady current for the fundamental (integral of v / L)
        v0 = sum(v) / 3.0
        w = _TWO_PI * self.grid_f_hz()
        acc = ((st[_ACC_HI] << 20) | st[_ACC_LO]) / _TURN40 * _TWO_PI
        il = []
        for k in range(3):
            amp = st[_COMP + 1 + k] / _Q24
            ang = acc + st[_COMP + 4 + k] / _TURN31 * _TWO_PI
            il.append(amp * math.sin(ang) / (w * l_l))
        i0 = sum(il) / 3.0
        for k in range(3):
            st[_VA + k] = _rnd((v[k] - v0) * _Q24) + _B
        st[_VC] = _B - (st[_VA] - _B) - (st[_VB] - _B)
        st[_LA] = _rnd((il[0] - i0) * _Q24) + _B
        st[_LB] = _rnd((il[1] - i0) * _Q24) + _B
        self.island_rlc = {"r_ohm": r * self.z_base_ohm, "l_h": l_l * self.z_base_ohm,
                           "c_f": c / self.z_base_ohm, "p_w": p_load * self.p_rated_w,
                           "unit_p_w": p * self.p_rated_w}
        self._island = True
        st[_FLAGS] |= _ISLAND

    # ---------------------------------------------------------------- tick context
    @micropython.viper
    def sample(self, raw: ptr32):  # noqa: F821 (viper type)
        """Fill raw[0..6] with the ADC words of this instant (VA VB VC IA IB IC VDC).
        Context: tick (no allocation; viper, the sim board's ADC driver)."""
        st = ptr32(self._st)  # noqa: F821 (viper cast)
        k = 0
        while k < 6:
            w = 32768 + ((st[_VA + k] - _B + 1024) >> 11)
            if w < 0:
                w = 0
            elif w > 65535:
                w = 65535
            raw[k] = w
            k += 1
        raw[6] = st[_VDC_RAW]

    def stepper(self):
        """(step, st, tab) for a runner's per-tick loop: ``step(st, tab, pw, pwm_on)``
        is ``advance(pw, pwm_on)`` without the method call (pw must be an int array
        whichever pwm_on is). Context: host (loop set-up)."""
        return _step, self._st, _TAB

    def advance(self, pw, pwm_on):
        """One tick forward: the converter holds the duties pw[svpwm.DUTY_A..C] (counts of
        pwm_period_counts) over the tick when pwm_on, else the gates are off (pw may then
        be None). Context: tick (no allocation)."""
        if pwm_on:
            _step(self._st, _TAB, pw, 1)
        else:
            _step(self._st, _TAB, self._st, 0)

    # ---------------------------------------------------------------- slow part
    def _v_oc(self):
        p = self.prm
        return p["v_bat_soc0_v"] + (p["v_bat_soc1_v"] - p["v_bat_soc0_v"]) * self.soc

    @micropython.native
    def _update_dc_words(self):
        """The tick's v_dc-dependent words (all >= 0: int(x + 0.5) rounds)."""
        st = self._st
        vdc_pu = self.v_dc_v * self._k_vdc
        self._v_words = self.v_dc_v
        x = vdc_pu * self._k_ku + 0.5
        st[_KU] = int(x) if x < 2147483647.0 else 0x7FFFFFFF
        x = vdc_pu * self._k_udt
        st[_UDT] = int(x + 0.5)
        x = x * self._k_gdt + 0.5
        st[_GDT] = int(x) if x < 2147483647.0 else 0x7FFFFFFF
        x = vdc_pu * 16384.0 + 0.5
        st[_VDC_RAW] = int(x) if x < 65535.0 else 65535

    @micropython.native
    def slow(self, dt_ms=1.0):
        """Advance the slow part by dt_ms of simulated time (call every 1 ms): DC link and
        battery from the converter power of the ticks since the last call, contactors,
        and the DC-link words the tick uses; fan and thermal every 10 ms (of the calls'
        dt). Few float operations: MicroPython boxes every float. Context: host."""
        st = self._st
        n = st[_N]
        if n:
            pc = ((st[_PC_HI] - _B) << 24) + st[_PC_LO]
            self._sq += ((st[_SQ_HI] - _B) << 24) + st[_SQ_LO]
            self._e_imp += (st[_PI_HI] << 24) + st[_PI_LO]
            self._e_exp += (st[_PE_HI] << 24) + st[_PE_LO]
            self._n_th += n
            self._ticks += n
            st[_N] = 0
            st[_PC_HI] = _B
            st[_PC_LO] = 0
            st[_SQ_HI] = _B
            st[_SQ_LO] = 0
            st[_PI_HI] = 0
            st[_PI_LO] = 0
            st[_PE_HI] = 0
            st[_PE_LO] = 0
            self.p_conv_w = pc * self._k_p / n if pc else 0.0
        # contactors: follow the command after the delay; a welded main stays closed
        if self.main_cmd != self.main_closed and not self.welded:
            self._main_timer += dt_ms
            if self._main_timer >= self._delay_ms:
                self.main_closed = self.main_cmd
                self._main_timer = 0.0
                if self.main_closed and self.weld_pending:
                    self.welded, self.weld_pending = True, False
        elif self._main_timer:
            self._main_timer = 0.0
        if self.pre_cmd != self.pre_closed:
            self._pre_timer += dt_ms
            if self._pre_timer >= self._delay_ms:
                self.pre_closed = self.pre_cmd
                self._pre_timer = 0.0
        elif self._pre_timer:
            self._pre_timer = 0.0
        # DC link: C dv/dt = I_conv + g_b (V_oc - v) - v / R_bleed, I_conv held over dt
        v = self.v_dc_v
        v_oc = self._v_oc()
        g_b = self._g_main if self.main_closed else (self._g_pre if self.pre_closed else 0.0)
        g = g_b + self._g_bleed
        v_inf = (self.p_conv_w / (v if v > 10.0 else 10.0) + g_b * v_oc) / g
        key = g * dt_ms
        if key != self._exp_key:  # contactor states and dt rarely change
            x = key * 1e-3 / self._c_dc
            ex = _exp(-x)
            self._exp_key, self._exp_v = key, ex
            self._exp_m = (1.0 - ex) / x if x > 1e-12 else 1.0
        d = v - v_inf
        v = v_inf + d * self._exp_v
        self.v_dc_v = v if v > 0.0 else 0.0
        if g_b:
            self.i_bat_a = g_b * (v_inf + d * self._exp_m - v_oc)  # mean over dt, + charging
            self.soc += v_oc * self.i_bat_a * dt_ms * self._k_soc
            if not 0.0 <= self.soc <= 1.0:
                self.soc = 0.0 if self.soc < 0.0 else 1.0
        elif self.i_bat_a:
            self.i_bat_a = 0.0
        dv = self.v_dc_v - self._v_words
        if dv > 1e-3 or dv < -1e-3:
            self._update_dc_words()
        self._th_ms += dt_ms
        if self._th_ms >= 10.0:
            self._thermal(self._th_ms * 1e-3)
            self._th_ms = 0.0

    @micropython.native
    def _thermal(self, dt):
        """Fan speed, losses from the RMS current since the last call, and the two thermal
        nodes (Euler, steps <= 10 ms against time constants >= ~4.5 s)."""
        prm = self.prm
        if self.fan_failed:
            self.fan_speed = 0.0
        else:
            k = dt / prm["fan_tau_s"]
            self.fan_speed += (self.fan_duty * 0.01 - self.fan_speed) * (k if k < 1.0 else 1.0)
        if self._n_th:
            self.i_rms_a = math.sqrt(self._sq / (3.0 * _Q24 * self._n_th)) * self.i_base_a
            self._sq = 0
            self._n_th = 0
        i_rms = self.i_rms_a if self._thermal_i_rms is None else self._thermal_i_rms
        self.p_loss_w = p = 3.0 * i_rms * (prm["loss_a_ohm"] * i_rms
                                           + prm["loss_b_v"] * self.v_dc_v)
        g_ha = self._g_ha_nat + self._g_ha_fan * self.fan_speed
        g_mh = self._g_mh
        steps = 1
        while dt / steps > 0.0101:
            steps += 1
        h = dt / steps
        tm = self.t_module_c
        th = self.t_heatsink_c
        ta = self.ambient_c
        while steps:
            q_mh = (tm - th) * g_mh
            tm += h * (p - q_mh) / prm["c_m_j_k"]
            th += h * (q_mh - (th - ta) * g_ha) / prm["c_h_j_k"]
            steps -= 1
        self.t_module_c = tm
        self.t_heatsink_c = th

    @micropython.native
    def energy_wh(self):
        """(import, export) energy through the PCC since construction, Wh, metered per
        tick (export as a positive number). Context: host."""
        st = self._st
        imp = self._e_imp + (st[_PI_HI] << 24) + st[_PI_LO]
        exp = self._e_exp + (st[_PE_HI] << 24) + st[_PE_LO]
        return imp * self._k_e, exp * self._k_e

    # ---------------------------------------------------------------- supervisor I/O
    def contactor_cmd(self, main_on, pre_on):
        """Command the main contactor and the pre-charge relay (each follows after the
        contactor delay)."""
        self.main_cmd = bool(main_on)
        self.pre_cmd = bool(pre_on)

    def contactor_aux(self):
        """Aux contact of the main contactor: 1 when it is really closed."""
        return 1 if self.main_closed else 0

    def fan(self, duty_pct):
        self.fan_duty = max(0.0, min(100.0, float(duty_pct)))

    def fan_tach_hz(self):
        return 0.0 if self.fan_failed else self.fan_speed * self.prm["fan_tach_full_hz"]

    def _ntc_word(self, t_c):
        prm = self.prm
        r = prm["ntc_r25_ohm"] * math.exp(prm["ntc_beta_k"] * (1.0 / (t_c + 273.15)
                                                             - 1.0 / 298.15))
        return max(0, min(65535, _rnd(65535.0 * r / (r + prm["ntc_pullup_ohm"]))))

    def ntc_raw(self):
        """(module, heatsink) ADC words of the NTC dividers; an open module NTC reads
        65535."""
        mod = 65535 if self.ntc_is_open else self._ntc_word(self.t_module_c)
        return mod, self._ntc_word(self.t_heatsink_c)

    # ---------------------------------------------------------------- truth
    def ticks(self):
        """Ticks advanced since construction."""
        return self._ticks + self._st[_N]

    def t_s(self):
        return self.ticks() / self.tick_hz

    def voltages_pu(self):
        st = self._st
        return ((st[_VA] - _B) / _Q24, (st[_VB] - _B) / _Q24, (st[_VC] - _B) / _Q24)

    def currents_pu(self):
        st = self._st
        return ((st[_IA] - _B) / _Q24, (st[_IB] - _B) / _Q24, (st[_IC] - _B) / _Q24)

    def voltages_v(self):
        return tuple(x * self.v_base_v for x in self.voltages_pu())

    def currents_a(self):
        return tuple(x * self.i_base_a for x in self.currents_pu())

    def grid_theta_rad(self):
        """True positive-sequence phase-a angle in [0, 2*pi): from the source while the
        breaker is closed, from the alpha-beta PCC voltage in the island."""
        st = self._st
        if self._island:
            va, vb, vc = self.voltages_pu()
            th = math.atan2((vb - vc) / _SQRT3, (2.0 * va - vb - vc) / 3.0)
        else:
            acc = ((st[_ACC_HI] << 20) | st[_ACC_LO]) / _TURN40
            turns = acc + self._delta / _TWO_PI
            th = (turns - math.floor(turns)) * _TWO_PI
        th = th % _TWO_PI
        return 0.0 if th >= _TWO_PI else th

    def energized(self):
        return 1 if self._st[_ON] == 1 and (self.main_closed or self.pre_closed) else 0

    @micropython.native
    def truth(self):
        """Trace quantities of the present instant (volts, amps, W, var, C; pu copies
        with a _pu suffix). p_w > 0 import, q_var > 0 absorbing. Context: host."""
        v = self.voltages_pu()
        i = self.currents_pu()
        p = (v[0] * i[0] + v[1] * i[1] + v[2] * i[2]) / 1.5
        q = ((v[1] - v[2]) * i[0] + (v[2] - v[0]) * i[1] + (v[0] - v[1]) * i[2]) / (1.5 * _SQRT3)
        vb, ib = self.v_base_v, self.i_base_a
        return {
            "t_s": self.t_s(),
            "grid_theta_rad": self.grid_theta_rad(),
            "grid_f_hz": self.grid_f_hz(),
            "v_a": v[0] * vb, "v_b": v[1] * vb, "v_c": v[2] * vb,
            "i_a": i[0] * ib, "i_b": i[1] * ib, "i_c": i[2] * ib,
            "v_a_pu": v[0], "v_b_pu": v[1], "v_c_pu": v[2],
            "i_a_pu": i[0], "i_b_pu": i[1], "i_c_pu": i[2],
            "p_w": p * self.p_rated_w, "q_var": q * self.p_rated_w,
            "p_pu": p, "q_pu": q,
            "p_conv_w": self.p_conv_w,
            "energized": self.energized(),
            "island": 1 if self._island else 0,
            "t_module_c": self.t_module_c, "t_heatsink_c": self.t_heatsink_c,
            "t_ambient_c": self.ambient_c,
            "p_loss_w": self.p_loss_w, "i_rms_a": self.i_rms_a,
            "v_dc_v": self.v_dc_v, "i_bat_a": self.i_bat_a, "soc": self.soc,
            "contactor_closed": 1 if self.main_closed else 0,
            "precharge_closed": 1 if self.pre_closed else 0,
            "contactor_welded": 1 if self.welded else 0,
            "fan_speed_pct": self.fan_speed * 100.0,
        }

    TRACE_KEYS = ("grid_theta_rad", "v_a", "v_b", "v_c", "i_a", "i_b", "i_c", "p_w", "q_var",
                  "energized", "t_module_c")

    @micropython.native
    def trace_values(self):
        """The trace quantities (docs/formats.md section 3) of this instant as a tuple, in
        TRACE_KEYS order (V, A, W, var, C): the same numbers as truth(), at a fraction of
        its cost."""
        st = self._st
        va = (st[_VA] - _B) * self._k_v
        vb = (st[_VB] - _B) * self._k_v
        vc = (st[_VC] - _B) * self._k_v
        ia = (st[_IA] - _B) * self._k_i
        ib = (st[_IB] - _B) * self._k_i
        ic = (st[_IC] - _B) * self._k_i
        p = (va * ia + vb * ib + vc * ic) * self._k_pw
        q = ((vb - vc) * ia + (vc - va) * ib + (va - vb) * ic) * self._k_qw
        return (self.grid_theta_rad(), va, vb, vc, ia, ib, ic, p, q, self.energized(),
                self.t_module_c)

    def board_scaling(self):
        """The ADC calibration and bases this plant's words assume (board.json keys)."""
        adc = [{"offset": 32768, "gain_q14": 8192}] * 6 + [{"offset": 0, "gain_q14": 4096}]
        return {"v_base_mv": _rnd(self.v_base_v * 1000.0),
                "i_base_ma": _rnd(self.i_base_a * 1000.0), "adc": adc}
