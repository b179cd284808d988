"""32-bit safety of every hot path, proven on worst-case inputs by ``v2g.build.wordcheck``.

Each viper function runs three ways -- 32-bit board words (every intermediate, argument
and constant must stay within +/-2**30), 64-bit host words (ptr loads zero-extend), and
plain CPython -- and all three must agree bit for bit. Inputs are the corners: full-scale
ADC words and voltages at +/-4 pu, grids at 40 and 70 Hz at both tick-rate limits,
saturated integrators, the DC link at its floor and ceiling, the longest PWM period.
"""

import math

import pytest

import current
import pll
import protect_fast
import svpwm
import tick
from v2g.build import wordcheck
from v2g.common import paths

FW = paths.FIRMWARE_DIR
FULL = 16384  # 4 pu, the input range of every hot path


def _assert_clean(wm, rep):
    assert rep.ok, "\n".join(str(p) for p in rep.problems)


def _signals(kind, n, tick_hz, f_hz):
    """Phase-voltage triples (Q12) for a worst-case pattern."""
    out = []
    for k in range(n):
        th = 2 * math.pi * f_hz * k / tick_hz
        if kind == "sine4pu":
            v = [int(16383 * math.cos(th - j * 2 * math.pi / 3)) for j in range(3)]
        elif kind == "square":
            v = [FULL if math.cos(th - j * 2 * math.pi / 3) >= 0 else -FULL for j in range(3)]
        elif kind == "toggle":
            s = FULL if k % 2 else -FULL
            v = [s, -s, s]
        else:  # "one_phase": one phase pinned high, two low
            v = [FULL, -FULL, -FULL]
        out.append(v)
    return out


@pytest.fixture(scope="module")
def pll_wm():
    return wordcheck.load_viper_module(FW / "pll.py")


@pytest.mark.parametrize("tick_hz", [pll.TICK_HZ_MIN, pll.TICK_HZ_MAX])
@pytest.mark.parametrize("f_hz", [40.0, 70.0])
@pytest.mark.parametrize("kind", ["sine4pu", "square", "toggle", "one_phase"])
def test_pll_step_word_safe(pll_wm, tick_hz, f_hz, kind):
    st = pll.new_state()
    pll.init(st, tick_hz, 50)
    n = int(3 * tick_hz / f_hz)  # three grid cycles: windows full, lock logic exercised
    for va, vb, vc in _signals(kind, n, tick_hz, f_hz):
        rep = pll_wm.check("step", st, va, vb, vc, update=True)
        _assert_clean(pll_wm, rep)


def test_pll_step_word_safe_at_frequency_limits(pll_wm):
    """Reference frequency pinned at its clamps, sums at their largest."""
    for w_key, f_grid in (("_W_MIN", 30.0), ("_W_MAX", 80.0)):
        st = pll.new_state()
        pll.init(st, pll.TICK_HZ_MIN if f_grid > 50 else pll.TICK_HZ_MAX, 60)
        st[pll._W_R_Q6] = st[getattr(pll, w_key)] << 6
        fs = st[pll.TICK_HZ]
        for va, vb, vc in _signals("sine4pu", int(2 * fs / 40), fs, f_grid):
            _assert_clean(pll_wm, pll_wm.check("step", st, va, vb, vc, update=True))


@pytest.fixture(scope="module")
def cc_wm():
    return wordcheck.load_viper_module(FW / "current.py")


def _pll_with(cos_q14, sin_q14, v_pos):
    st = pll.new_state()
    st[pll.COS_B] = 16384 + cos_q14
    st[pll.SIN_B] = 16384 + sin_q14
    st[pll.V_POS] = v_pos
    return st


@pytest.mark.parametrize("i_max", [410, 4505, 8192])
@pytest.mark.parametrize("sat", [0, 1])
def test_current_step_word_safe(cc_wm, i_max, sat):
    cc = current.new_state()
    current.init(cc, 16383, 4095, 16383, i_max, 1 << 20, 1 << 25)  # largest gains
    current.set_enable(cc, 1)
    corners = [(16384, 0), (0, 16384), (-16384, 0), (0, -16384), (11585, 11585),
               (-11585, 11585)]
    values = [FULL, -FULL, 0]
    k = 0
    for cos_q14, sin_q14 in corners:
        for v_pos in (0, 410, FULL):
            st = _pll_with(cos_q14, sin_q14, v_pos)
            for p, q in ((6144, 6144), (-6144, -6144), (6144, -6144)):
                current.set_power(cc, p, q)
                for _ in range(40):  # long enough to ramp and to saturate the integrators
                    a, b, c = values[k % 3], values[(k + 1) % 3], values[(k + 2) % 3]
                    k += 1
                    cc[current.SAT] = sat
                    rep = cc_wm.check("step", cc, st, a, b, c, c, a, b, update=True)
                    _assert_clean(cc_wm, rep)
    for n in (0, 1, 2, 3, 1 << 20, (1 << 26) - 1, (1 << 30) - 1):
        rep = cc_wm.check("_isqrt", n)
        _assert_clean(cc_wm, rep)
        assert rep.value == math.isqrt(n)


@pytest.mark.parametrize("period", [16, 2500, 16384])
@pytest.mark.parametrize("v_dc", [0, 2048, 10076, 16384, 40000])
def test_modulate_word_safe(period, v_dc):
    wm = wordcheck.load_viper_module(FW / "svpwm.py")
    pw = svpwm.new_state()
    svpwm.init(pw, period, 0 if period == 16 else period // 8)
    cc = current.new_state()
    for cos_q14, sin_q14 in ((16384, 0), (11585, 11585), (0, -16384), (-14189, 8192)):
        st = _pll_with(cos_q14, sin_q14, 0)
        for u_d, u_q in ((1 << 20, 1 << 20), (-(1 << 20), 3), (16383, -16383), (0, 0)):
            cc[current.U_D_B] = u_d + (1 << 29)
            cc[current.U_Q_B] = u_q + (1 << 29)
            rep = wm.check("modulate", cc, st, pw, v_dc)
            _assert_clean(wm, rep)


def test_protect_and_compute_word_safe():
    wm = wordcheck.load_viper_module(FW / "protect_fast.py")
    prot = protect_fast.new_state()
    protect_fast.init(prot, 8192, 15114)
    for args in ((FULL, 0, 0, 0), (0, -FULL, 0, 0), (0, 0, 0, FULL), (100, 100, 100, 100)):
        _assert_clean(wm, wm.check("check", prot, *args, update=True))
        protect_fast.clear(prot)
    # ADC scaling of the tick at the calibration corners that Control accepts
    wm = wordcheck.load_viper_module(FW / "tick.py")
    for off, gain in ((32768, 8191), (0, 4096), (65535, 4096), (32768, 1)):
        ctl = tick.Control(10000, 50, [off] * 7, [gain] * 7, 2500, 20,
                           (5242, 263, 327, 4505, 2097, 1 << 25), (8192, 15114))
        for word in (0, 65535, 32768):
            for ch in range(7):
                ctl.raw[ch] = word
            rep = wm.check("compute", ctl.raw, ctl.cal, ctl.pll, ctl.cc, ctl.prot, ctl.pw,
                           ctl.gm)
            _assert_clean(wm, rep)


def test_control_refuses_calibration_outside_4pu():
    with pytest.raises(ValueError, match="outside"):
        tick.Control(10000, 50, [32768] * 7, [8193] * 7, 2500, 20,
                     (5242, 263, 327, 4505, 2097, 1 << 25), (8192, 15114))


def test_checker_catches_a_planted_overflow(tmp_path):
    """The checker is live on this code base: the modulator without its pre-clamp
    overflows at the longest period and the DC-link floor."""
    src = (FW / "svpwm.py").read_text()
    broken = src.replace("    if ua > v_dc:\n        ua = v_dc\n", "    if False:\n        pass\n")
    assert broken != src
    path = tmp_path / "svpwm.py"
    path.write_text(broken)
    wm = wordcheck.load_viper_module(path)
    pw = svpwm.new_state()
    svpwm.init(pw, 16384, 2048)
    cc = current.new_state()
    cc[current.U_D_B] = (1 << 20) + (1 << 29)
    cc[current.U_Q_B] = 1 << 29
    rep = wm.check("modulate", cc, _pll_with(16384, 0, 0), pw, 2048)
    assert not rep.ok
    assert any("outside" in str(p) for p in rep.problems)


@pytest.mark.parametrize("tick_hz,f_hz", [(pll.TICK_HZ_MIN, 40.0), (pll.TICK_HZ_MAX, 70.0)])
def test_fused_compute_word_safe(tick_hz, f_hz):
    """The generated ``tick_fused_compute.compute`` (every step inlined) over two grid cycles at
    +/-4 pu square-ish voltages, near-full-scale currents and a huge export command, with
    the trips set out of reach so that every step runs, saturating, on every tick."""
    wm = wordcheck.load_viper_module(FW / "tick_fused_compute.py")
    ctl = tick.Control(tick_hz, 50, [32768] * 7, [8192] * 7, 16384, 20,
                       (5242, 263, 327, 8191, 2097, 1 << 25), (16384, 16384))
    current.set_enable(ctl.cc, 1)
    current.set_power(ctl.cc, -8192, 8191)
    n = int(2 * tick_hz / f_hz)
    for k, (va, vb, vc) in enumerate(_signals("sine4pu", n, tick_hz, f_hz)):
        s = 1 if (k // 7) % 2 else -1
        words = [va, vb, vc, s * 16000, -s * 16000, s * 8000, 4096 + (k % 3) * 6000]
        for ch in range(7):
            ctl.raw[ch] = max(0, min(65535, 32768 + 2 * words[ch]))
        rep = wm.check("compute", ctl.mem, update=True)
        _assert_clean(wm, rep)
    assert ctl.pw[svpwm.DUTY_A] != 0 and ctl.prot[protect_fast.LATCH] == 0
