"""HAL of the Raspberry Pi Pico (RP2040) board: gate PWM, AD7606 sampling, contactors,
fan, NTCs, watchdog. ``build(board)`` turns the parsed ``board.json`` into the objects.

Wiring (numbers in board.json):
- Gates: leg x high side on GPIO 2k = PWM slice k channel A, low side on GPIO 2k+1 =
  channel B of the same slice. Slices run phase-correct (centre-aligned, counter
  0..TOP..0, one count per system clock), ``TOP = pwm_period_counts - 1``. B is inverted;
  for a duty of d counts A compares at d - dead/2 and B at d + dead/2, so every edge gets
  ``dead_time_ns`` of dead time in hardware and both pulses lose it equally (as TIM1's
  dead-time generator does; D_MIN = dead + min on-time then keeps both pulses >= the
  minimum). The three slices start on one write of the EN register (in phase).
- ``gate_enable``: the gate driver's enable input (high = enabled, pull-down on the
  board). ``pwm_off`` drops it at once; the all-off compare values latch at the next
  counter wrap (<= 1 PWM period).
- ADC: the RP2040 has 3 usable ADC inputs, not 7, and samples them one after another.
  The phase voltages, currents and DC link go to an AD7606 (8 channels, 16 bit,
  simultaneous sample-and-hold, +/-10 V range, OS pins low, serial mode on DOUTA):
  CONVST pulse, BUSY poll, one ``SPI.readinto`` of 16 bytes into a preallocated buffer.
  ``adc[i].pin`` names the AD7606 input ("V1".."V8") of tick channel i. The on-chip ADC
  reads the two NTC dividers (supervisor context only).
- Contactor coils: active high. Aux contact: pulls ``contactor_aux`` low when the main
  contactor is closed (input with pull-up). Fan: 25 kHz PWM, open-collector tach.
- All gate and contactor lines need pull-downs: they float during reset and boot.

Registers: the gate PWM is written with ``machine.mem32`` (CC, TOP, DIV, CSR, EN of the
PWM block); addresses are picked for RP2040 or RP2350 from ``sys.implementation``.
The tick timer is ``machine.Timer(..., hard=True)`` (MicroPython >= 1.26 on rp2).

Tick-context cost, ESTIMATED for 125 MHz (not measured): interrupt entry ~20 us,
adc_read ~30 us (2 pin writes, BUSY poll over the 4 us conversion, 16 bytes at
12.5 MHz = 10 us, viper unpack), pwm_set ~12 us, pwm_off ~10 us. That leaves ~140 us of
the 200 us tick (5 kHz) for the control step; the tick publishes its measured cost in
``tick.STATS`` -- read COST_MAX_US on the bench before raising the rate.

Verified: compiles with ``mpy-cross -march=armv6m``; smoke-tested with fake
``machine`` modules under CPython and under the MicroPython unix runtime with the heap
locked around the tick-context methods (tests_host/firmware/test_boards.py). NOT run on silicon.

Usage (boot)::

    import hal, json
    hal.safe_outputs()
    h = hal.build(json.load(open("board.json")))
"""

import sys

import machine
from micropython import const

import ad7606
import power_stage
import svpwm

# Driven low by safe_outputs() before board.json is read: gates (A, B of three slices),
# gate enable, main and pre-charge contactor. build() refuses a board.json that differs.
SAFE_LOW_PINS = (0, 1, 2, 3, 4, 5, 6, 7, 8)
_SAFE_KEYS = ("pwm_a", "pwm_a_n", "pwm_b", "pwm_b_n", "pwm_c", "pwm_c_n", "gate_enable",
              "contactor_main", "contactor_pre")

_DUTY_A = const(2)  # svpwm.DUTY_A..C, checked in build()
_DUTY_B = const(3)
_DUTY_C = const(4)
# PWM block: (base, EN register) per chip; slice registers every 0x14 bytes
_PWM_REGS = {"RP2040": (0x40050000, 0x400500A0), "RP2350": (0x400A8000, 0x400A80F0)}
_CSR = const(0x00)
_DIV = const(0x04)
_CTR = const(0x08)
_CC = const(0x0C)
_TOP = const(0x10)
_SLICE = const(0x14)
_CSR_PH_CORRECT = const(0x02)
_CSR_B_INV = const(0x08)


def safe_outputs():
    """Gates off, contactors open: stop the tick, then drive the gate, gate-enable and
    contactor pins low as plain GPIO. Works before board.json is read; after a build()
    the PWM pins stay GPIO until the next build(). Context: boot / supervisor."""
    power_stage.safe_outputs(machine, SAFE_LOW_PINS)


def build(board):
    """The HAL for the parsed board.json. Raises ValueError on data this board cannot
    wire. Context: boot, before the tick starts."""
    if (svpwm.DUTY_A, svpwm.DUTY_B, svpwm.DUTY_C) != (_DUTY_A, _DUTY_B, _DUTY_C):
        raise ValueError("hal.py duty indices differ from svpwm.DUTY_A..C")
    return power_stage.build(Pico, board)


def _chip():
    return "RP2350" if "RP2350" in getattr(sys.implementation, "_machine", "") else "RP2040"


class Pico(power_stage.PowerStage):
    def __init__(self, b):
        power_stage.PowerStage.__init__(self, machine, b, _SAFE_KEYS, SAFE_LOW_PINS)
        self._m = machine.mem32
        self._init_pwm(b, b["pins"])
        adc = ad7606.AD7606(machine, b["ext_adc"], b["adc"])
        self.adc_read = adc.adc_read  # tick context: the driver's method, no extra call
        self.adc_timeouts = adc.timeouts

    def _init_pwm(self, b, pins):
        clk = machine.freq()
        if clk != b["pwm_clock_hz"]:
            raise ValueError("system clock %d Hz but board.json pwm_clock_hz %d: set "
                             "machine.freq(%d) first, or fix the board data"
                             % (clk, b["pwm_clock_hz"], b["pwm_clock_hz"]))
        period = b["pwm_period_counts"]
        if clk != 2 * period * b["pwm_freq_hz"]:  # phase-correct: 2 * counts clocks
            raise ValueError("pwm_period_counts %d does not give pwm_freq_hz %d at %d Hz"
                             % (period, b["pwm_freq_hz"], clk))
        dead = -(-b["dead_time_ns"] * (clk // 1000) // 1000000)  # clocks per edge, rounded up
        self._lead = dead >> 1  # A off this early, B on this late; lead <= D_MIN
        self._lag = dead - self._lead
        if period + self._lag > 16383:  # keeps every CC word below 2**30 (a small int)
            raise ValueError("pwm_period_counts + dead time > 16383 counts")
        self._cc_off = period << 16  # A never high, inverted B never high
        base, en_reg = _PWM_REGS[_chip()]
        m = self._m
        mask = 0
        self._pwm = []
        cc = []
        for leg in "abc":
            hi, lo = pins["pwm_" + leg], pins["pwm_" + leg + "_n"]
            if hi & 1 or lo != hi + 1:
                raise ValueError("pins.pwm_%s/_n = %d/%d: the low side must be GPIO 2k+1 "
                                 "beside the high side 2k (one PWM slice)" % (leg, hi, lo))
            for p in (hi, lo):  # GPIO function -> PWM; objects kept so nothing deinits
                self._pwm.append(machine.PWM(machine.Pin(p)))
            s = (hi >> 1) & 7
            r = base + s * _SLICE
            m[r + _CSR] = _CSR_PH_CORRECT | _CSR_B_INV  # EN clear until all three are set
            m[r + _DIV] = 1 << 4  # integer divider 1: one count per system clock
            m[r + _TOP] = period - 1
            m[r + _CC] = self._cc_off
            m[r + _CTR] = 0
            cc.append(r + _CC)
            mask |= 1 << s
        self._cc_a, self._cc_b, self._cc_c = cc
        m[en_reg] = m[en_reg] | mask  # start the three counters on the same clock

    # ---- tick context: no allocation, no floats, nothing raises by design ----

    def pwm_set(self, pw):
        """Apply pw[DUTY_A..C] (counts of high-side on-time) and enable the gates."""
        # tick context: no allocation; CC words < 2**30 (checked in build); svpwm keeps
        # D_MIN <= d <= PERIOD - D_MIN, and D_MIN >= lead, so no field goes negative
        m = self._m
        lead = self._lead
        lag = self._lag
        d = pw[_DUTY_A]
        m[self._cc_a] = ((d + lag) << 16) | (d - lead)
        d = pw[_DUTY_B]
        m[self._cc_b] = ((d + lag) << 16) | (d - lead)
        d = pw[_DUTY_C]
        m[self._cc_c] = ((d + lag) << 16) | (d - lead)
        self._en_on()  # new compares latch at the next wrap, so enable can follow at once

    def pwm_off(self):
        """All gates off: driver enable low now, all-off compares from the next wrap."""
        # tick context: no allocation
        self._en_off()
        m = self._m
        off = self._cc_off
        m[self._cc_a] = off
        m[self._cc_b] = off
        m[self._cc_c] = off

    # ---- boot / supervisor context ----

    def start_tick(self, fn):
        """Run fn(timer) at tick_hz in hard IRQ context."""
        self.stop_tick()
        self._timer = machine.Timer(mode=machine.Timer.PERIODIC, freq=self._tick_hz,
                                    callback=fn, hard=True)

    def stop_tick(self):
        if self._timer is not None:
            self._timer.deinit()
            self._timer = None
