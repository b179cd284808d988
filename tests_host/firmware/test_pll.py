"""PLL targets against numpy float references (CPython run of the firmware source; the
runtime tests prove the MicroPython runtime gives the same bits).

Targets (issue: control core): at 10 kHz and 2 kHz, 50 and 60 Hz --
after a 30 degree jump under 10 % negative sequence, 5 % 5th and 5 % 7th (7th in q), the
error stays below 1 degree from one grid cycle after the jump; steady-state error
<= 0.05 degree under that distortion; mean frequency error <= 1 mHz over 60 cycles with
0.5 % rms noise; a +/-2 Hz step settles to +/-0.1 Hz within 50 ms; fixed point within
0.05 degree of the float twin.
"""

import math

import numpy as np
import pytest

import pll
import tables
from v2g.build import gen_tables
from v2g.grid import pll_eval
from v2g.grid.pll_eval import angle_err_deg, run_fixed, three_phase

CASES = [(10000, 50), (10000, 60), (2000, 50), (2000, 60)]


@pytest.mark.parametrize("tick_hz,f_nom", CASES)
def test_phase_jump_under_distortion(tick_hz, f_nom):
    fig = pll_eval.phase_jump_figures(tick_hz, f_nom)
    assert fig["locked_at_end"] == 1
    assert fig["settle_cycles"] <= 1.0, fig
    assert fig["max_err_after_1_cycle_deg"] < 1.0, fig
    assert fig["steady_err_deg"] <= 0.05, fig
    assert fig["fixed_vs_float_deg"] <= 0.05, fig


@pytest.mark.parametrize("tick_hz,f_nom", CASES)
def test_frequency_with_noise(tick_hz, f_nom):
    assert pll_eval.noise_frequency_figure(tick_hz, f_nom, seeds=(1, 2)) <= 1.0
    # off-nominal grid: the window must follow the frequency
    assert pll_eval.noise_frequency_figure(tick_hz, f_nom, seeds=(3,), offset_hz=0.37) <= 1.0


@pytest.mark.parametrize("tick_hz,f_nom", CASES)
@pytest.mark.parametrize("step_hz", [2.0, -2.0])
def test_frequency_step_settles(tick_hz, f_nom, step_hz):
    assert pll_eval.frequency_step_figure(tick_hz, f_nom, step_hz) <= 50.0


def test_angle_convention_va_is_cosine():
    """theta is the angle of the positive-sequence phase a: v_a = V cos(theta)."""
    t, v, th, _ = three_phase(10000, 0.3, 50, v_pu=0.9)
    theta, f, vpos, lock = run_fixed(10000, 50, v)
    assert lock[-1] == 1
    assert abs(angle_err_deg(theta[-1], th[-1])) < 0.05
    assert abs(vpos[-1] - 0.9) < 0.002
    # and v_a really is V cos(theta) at the estimated angle
    assert abs(0.9 * math.cos(theta[-1]) - v[-1, 0]) < 0.002


def test_negative_sequence_grid_is_not_mistaken():
    """A pure negative-sequence (wrong rotation) supply shows as a frequency far off,
    so the PLL does not lock onto it."""
    t, v, _, _ = three_phase(10000, 0.5, 50, v_pu=0.0, neg_seq_pu=1.0)
    _, f, vpos, lock = run_fixed(10000, 50, v)
    assert lock[-1000:].max() == 0
    assert abs(f[-1] - 50.0) > 5.0


def test_single_phase_jump_60deg_stays_locked():
    """IEEE 1547 phase-jump ride-through: 60 degrees on one phase; the lock flag holds."""
    t, v, th, _ = three_phase(10000, 1.5, 60)
    a = np.radians(60.0)
    k = t >= 1.0
    v[k, 0] = np.cos(th[k] + a)  # phase a alone jumps
    _, _, _, lock = run_fixed(10000, 60, v)
    assert lock[int(0.5 * 10000):].min() == 1


def test_loss_of_voltage_unlocks_within_two_cycles():
    t, v, _, _ = three_phase(10000, 1.0, 50)
    v[t >= 0.6] = 0.0
    _, _, _, lock = run_fixed(10000, 50, v)
    assert lock[int(0.59 * 10000)] == 1
    assert lock[int((0.6 + 0.04) * 10000):].max() == 0


@pytest.mark.parametrize("tick_hz", [1999, 20001])
def test_init_rejects_rates_it_cannot_run(tick_hz):
    with pytest.raises(ValueError):
        pll.init(pll.new_state(), tick_hz, 50)


def test_tables_are_generated():
    """firmware/tables.py is exactly the generator's output (integer literals, so a
    float32 board cannot round them differently)."""
    from v2g.common import paths

    assert (paths.FIRMWARE_DIR / "tables.py").read_text() == gen_tables.render()
    assert tables.SIN_BIAS == pll._SIN_BIAS
    assert tables.CORDIC_STEPS == pll._CORDIC_STEPS
    assert 1 << (28 - tables.SIN_BITS) == 1 << pll._SIN_IDX_SHIFT
