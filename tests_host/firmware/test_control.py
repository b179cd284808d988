"""Current control and modulation in closed loop with an averaged L-filter converter on a
stiff grid (numpy plant, firmware tick in CPython), plus the parameter table.

Checks: P and Q follow their commands with the sign convention of docs/design.md section 7 (p > 0
imports, q > 0 absorbs); the command ramp; the current-magnitude limit with active-power
priority; anti-windup (after the DC link sags and recovers the current comes back
without a long overshoot); duties inside [D_MIN, PERIOD - D_MIN]; a trip turns the PWM
off at once and keeps it off; min-max injection keeps the modulator linear up to
v_dc / sqrt(3).
"""

import math
import subprocess
import sys

import numpy as np
import pytest

import current
import params
import protect_fast
import svpwm
import tick
from v2g.common import paths

FS = 10000
F0 = 50
X_PU = 0.08
R_PU = 0.005
PERIOD = 2500
D_MIN = 20
GAIN = 8192  # ADC: q12 = (raw - 32768) * 8192 >> 14 -> 2 counts per q12 unit


class AveragedConverter:
    """Grid + L filter + averaged three-leg converter; also the board's HAL."""

    def __init__(self, vdc_pu=2.46, theta0=0.3):
        self.vdc_pu = vdc_pu
        self.th = theta0
        self.i = np.zeros(3)
        self.on = False
        self.duty = np.zeros(3)
        self.duty_log = []
        self.ph = np.array([0.0, -2 * math.pi / 3, 2 * math.pi / 3])

    # HAL
    def adc_read(self, raw):
        v = np.cos(self.th + self.ph)
        for k in range(3):
            raw[k] = 32768 + int(round(v[k] * 8192))
            raw[3 + k] = 32768 + int(round(self.i[k] * 8192))
        raw[6] = 32768 + int(round(self.vdc_pu * 8192))

    def pwm_set(self, pw):
        self.on = True
        self.duty = np.array([pw[svpwm.DUTY_A], pw[svpwm.DUTY_B], pw[svpwm.DUTY_C]], float)
        self.duty_log.append(self.duty.copy())

    def pwm_off(self):
        self.on = False

    def ticks_us(self):
        return 0

    def ticks_diff(self, a, b):
        return a - b

    def advance(self, dt, sub=10):
        l_pu_s = X_PU / (2 * math.pi * F0)
        h = dt / sub
        for _ in range(sub):
            vg = np.cos(self.th + self.ph)
            if self.on:
                u = (self.duty / PERIOD - 0.5) * self.vdc_pu
                u = u - u.mean()
                self.i = self.i + (vg - u - R_PU * self.i) / l_pu_s * h
            else:
                self.i = np.zeros(3)  # gates off, current decays through the diodes
            self.th += 2 * math.pi * F0 * h

    def pq(self):
        vg = np.cos(self.th + self.ph)
        p = 2.0 / 3.0 * float(vg @ self.i)
        v_ab = vg[0] - vg[1]
        v_bc = vg[1] - vg[2]
        v_ca = vg[2] - vg[0]
        # q = (v_bc i_a + v_ca i_b + v_ab i_c) / sqrt(3), load convention, positive absorbs
        q = 2.0 / 3.0 * (v_bc * self.i[0] + v_ca * self.i[1] + v_ab * self.i[2]) / math.sqrt(3)
        return p, q


def build(held=None):
    held = held or params.defaults()
    cc_params, prot_params = params.control_ints(held, FS)
    ctl = tick.Control(FS, F0, [32768] * 7, [GAIN] * 7, PERIOD, D_MIN, cc_params,
                       prot_params)
    return ctl


def run(ctl, plant, seconds, events=(), log=None):
    t_tick = tick.make_tick(plant, ctl)
    n0 = getattr(plant, "n", 0)
    for n in range(n0, n0 + int(seconds * FS)):
        for at, fn in events:
            if n == int(at * FS):
                fn()
        t_tick(None)
        plant.advance(1.0 / FS)
        if log is not None:
            log.append((n / FS,) + plant.pq() + (ctl.cc[current.SAT],))
    plant.n = n0 + int(seconds * FS)


def test_power_follows_commands_with_sign_convention():
    ctl = build()
    plant = AveragedConverter()
    log = []
    run(ctl, plant, 0.5, events=[
        (0.1, lambda: (current.set_enable(ctl.cc, 1),
                       current.set_power(ctl.cc, -int(0.7 * 4096), 0))),
        (0.3, lambda: current.set_power(ctl.cc, int(0.5 * 4096), int(0.3 * 4096))),
    ], log=log)
    a = np.array(log)
    t, p, q = a[:, 0], a[:, 1], a[:, 2]
    w1 = (t > 0.25) & (t < 0.3)
    w2 = (t > 0.45)
    assert abs(p[w1].mean() + 0.7) < 0.01 and abs(q[w1].mean()) < 0.01  # export 0.7 pu
    assert abs(p[w2].mean() - 0.5) < 0.01 and abs(q[w2].mean() - 0.3) < 0.01
    # the ramp (100 pu/s by default) spreads the 0.7 pu step over 7 ms
    assert p[(t > 0.1) & (t < 0.103)].min() > -0.45
    assert p[(t > 0.11) & (t < 0.115)].mean() < -0.65
    assert a[(t > 0.25), 3].max() == 0  # never saturated in normal operation


def test_current_limit_gives_active_power_priority():
    held = params.defaults()
    held["i_max_pu"] = 80  # 0.80 pu
    ctl = build(held)
    plant = AveragedConverter()
    log = []
    run(ctl, plant, 0.4, events=[
        (0.1, lambda: (current.set_enable(ctl.cc, 1),
                       current.set_power(ctl.cc, -int(0.7 * 4096), int(0.7 * 4096)))),
    ], log=log)
    a = np.array(log)
    p, q = a[-500:, 1].mean(), a[-500:, 2].mean()
    assert abs(p + 0.7) < 0.01  # active power served in full
    assert abs(math.hypot(p, q) - 0.8) < 0.01  # reactive takes what the limit leaves


def test_anti_windup_after_dc_link_sag():
    ctl = build()
    plant = AveragedConverter()
    log = []

    def sag():
        plant.vdc_pu = 1.6  # below sqrt(3) * 1 pu: the modulator saturates

    def recover():
        plant.vdc_pu = 2.46

    run(ctl, plant, 0.6, events=[
        (0.05, lambda: (current.set_enable(ctl.cc, 1),
                        current.set_power(ctl.cc, -int(0.7 * 4096), 0))),
        (0.2, sag), (0.3, recover)], log=log)
    a = np.array(log)
    t, p, sat = a[:, 0], a[:, 1], a[:, 3]
    assert sat[(t > 0.2) & (t < 0.3)].max() == 1
    after = (t > 0.3 + 2.0 / F0)  # two grid cycles after the recovery
    assert np.abs(p[after] + 0.7).max() < 0.05


def test_duties_stay_inside_the_dead_time_allowance():
    ctl = build()
    plant = AveragedConverter(vdc_pu=1.0)  # far too low: duties pinned at the clamps
    run(ctl, plant, 0.2, events=[
        (0.05, lambda: (current.set_enable(ctl.cc, 1), current.set_power(ctl.cc, -4096, 0)))])
    d = np.array(plant.duty_log)
    assert d.min() >= D_MIN and d.max() <= PERIOD - D_MIN
    assert d.min() == D_MIN or d.max() == PERIOD - D_MIN


def test_trip_turns_pwm_off_and_latches():
    ctl = build()
    plant = AveragedConverter()
    run(ctl, plant, 0.15, events=[
        (0.05, lambda: (current.set_enable(ctl.cc, 1),
                        current.set_power(ctl.cc, -int(0.7 * 4096), 0)))])
    assert plant.on
    plant.i = plant.i + np.array([2.5, -1.25, -1.25])  # a fault current, 2.5 pu
    t_tick = tick.make_tick(plant, ctl)
    t_tick(None)
    assert not plant.on
    assert protect_fast.latched(ctl.prot)[0] == protect_fast.OVER_CURRENT
    assert ctl.stats[tick.STATE] == protect_fast.OVER_CURRENT
    plant.i = np.zeros(3)
    for _ in range(100):  # cause gone, latch holds until the supervisor clears it
        t_tick(None)
        assert not plant.on
    protect_fast.clear(ctl.prot)
    t_tick(None)
    assert not plant.on  # still off: a trip also dropped the enable
    current.set_enable(ctl.cc, 1)
    t_tick(None)
    assert plant.on


def test_min_max_injection_linear_to_vdc_over_sqrt3():
    """A voltage vector of 0.97 * v_dc / sqrt(3) is produced without clamping (the rest
    up to 1.0 is the dead-time allowance: 2 * D_MIN / PERIOD = 1.6 %)."""
    pw = svpwm.new_state()
    svpwm.init(pw, PERIOD, D_MIN)
    cc = current.new_state()
    import pll

    st = pll.new_state()
    pll.init(st, FS, F0)
    vdc = 10076
    amp = int(0.97 * vdc / math.sqrt(3))
    for k in range(64):
        th = 2 * math.pi * k / 64
        st[pll.COS_B] = 16384 + int(round(16384 * math.cos(th)))
        st[pll.SIN_B] = 16384 + int(round(16384 * math.sin(th)))
        cc[current.U_D_B] = amp + (1 << 29)
        cc[current.U_Q_B] = 1 << 29
        svpwm.modulate(cc, st, pw, vdc)
        assert cc[current.SAT] == 0
        u = (np.array([pw[2], pw[3], pw[4]]) / PERIOD - 0.5) * vdc
        u -= u.mean()
        assert abs(u[0] - amp * math.cos(th)) < 12  # within 3 mpu
    # 5 % beyond the linear range: clamped (and reported) at the hexagon's corners
    st[pll.COS_B] = 16384 + int(round(16384 * math.cos(math.pi / 6)))
    st[pll.SIN_B] = 16384 + int(round(16384 * math.sin(math.pi / 6)))
    cc[current.U_D_B] = int(1.05 * vdc / math.sqrt(3)) + (1 << 29)
    svpwm.modulate(cc, st, pw, vdc)
    assert cc[current.SAT] == 1
    assert min(pw[2], pw[3], pw[4]) == D_MIN or max(pw[2], pw[3], pw[4]) == PERIOD - D_MIN


def test_parameter_table_rejects_bad_values_with_key_value_and_range():
    held0 = params.defaults()
    held, errors = params.validate({"filter_x_pu": 0.5, "nope": 1, "i_max_pu": "x",
                                    "f_nom_hz": 55})
    errors += params.validate({"i_max_pu": 1.1, "oc_trip_pu": 1.25})[1]
    text = "\n".join(errors)
    assert "filter_x_pu" in text and "0.5" in text and "0.020..0.300 pu" in text
    assert "unknown key 'nope'" in text
    assert "'i_max_pu'" in text and "not a number" in text
    assert "oc_trip_pu" in text and "must exceed i_max_pu" in text
    assert "f_nom_hz" in text and "50 or 60" in text
    assert params.defaults() == held0


def test_parameter_ids_and_names_are_unique_and_defaults_in_range():
    ids = [r[params.PID] for r in params.TABLE]
    names = [r[params.NAME] for r in params.TABLE]
    assert len(set(ids)) == len(ids) and len(set(names)) == len(names)
    for r in params.TABLE:
        assert r[params.MIN] <= r[params.DEFAULT] <= r[params.MAX], r
    held, errors = params.validate({})
    assert errors == []


@pytest.mark.parametrize("tick_hz", [2000, 10000, 20000])
def test_control_gains_are_integers_in_range(tick_hz):
    cc_params, prot_params = params.control_ints(params.defaults(), tick_hz)
    assert all(isinstance(v, int) and 0 < v < 2 ** 30 for v in cc_params + prot_params)


_RAISING_HAL = '''
import sys
from array import array
import micropython
import tick

class Hal:
    def __init__(self):
        self.n = 0
        self.offs = 0
        self.sets = 0
    def adc_read(self, raw):
        self.n += 1
        if self.n % 3 == 0:
            raise OSError(5)  # an SPI error, every third tick
        for ch in range(7):
            raw[ch] = 32768
    def pwm_set(self, pw):
        self.sets += 1
    def pwm_off(self):
        self.offs += 1
    def ticks_us(self):
        return 0

for inline in (True, False):
    ctl = tick.Control(10000, 50, [32768] * 7, [8192] * 7, 2500, 20,
                       (5242, 263, 327, 4505, 2097, 1 << 25), (8192, 15114))
    hal = Hal()
    isr = tick.make_tick(hal, ctl, inline)
    for _ in range(30):
        isr(None)
    print(inline, ctl.stats[tick.ERRORS], ctl.stats[tick.COUNT], hal.offs, hal.sets)
'''


def test_an_exception_in_the_tick_turns_the_pwm_off_and_is_counted(run_micropython,
                                                                    tmp_path):
    """A HAL driver that raises inside the interrupt: nothing escapes the handler, the
    PWM goes off on that tick, STATS counts the error and the heartbeat goes on -- for
    the generated body and the written one, on the unix runtime and in CPython."""
    script = tmp_path / "raising.py"
    script.write_text(_RAISING_HAL)
    mp = run_micropython(script)
    assert mp.returncode == 0, mp.stdout + mp.stderr
    # 10 of 30 ticks raise; the other 20 run with the controller disabled (pwm_off too)
    expect = ["True 10 30 30 0", "False 10 30 30 0"]
    assert mp.stdout.decode().split("\n")[:2] == expect
    cp = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                        env={"PYTHONPATH": "%s:%s" % (paths.SHIM_DIR, paths.FIRMWARE_DIR)})
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split("\n")[:2] == expect
