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

Registers (board.json ``regs``, hex strings: the chip's PWM block base and EN register,
the SIO GPIO input / output-set / output-clear registers; the Pico 2's are the RP2350's,
an RP2040 board would give its own): the gate PWM is set up with ``machine.mem32`` at
boot. The tick-context methods are viper closures built at boot over one ``array('I')``
of word offsets and values and over ``uctypes.bytearray_at`` windows onto the PWM and SIO
blocks: ``pwm_set`` writes the three CC registers and sets
``gate_enable`` through SIO GPIO_OUT_SET, ``pwm_off`` clears ``gate_enable`` through
GPIO_OUT_CLR first, then writes the all-off compares; ``adc_read`` is the AD7606 driver's
``fast_reader`` (CONVST, CS and BUSY through the same SIO registers, one
``SPI.readinto``). Nothing in them looks up an attribute, allocates or can raise, so
``pwm_off`` always works once ``build`` has returned. ``gate_enable`` and the AD7606 lines
must be GPIO 0..31 (checked in build). The tick timer is ``machine.Timer(...,
hard=True)`` (MicroPython >= 1.26 on rp2).

Tick-context cost: measured on the emulated core (``python -m v2g.targets.measure``; the
README's board table); the AD7606 conversion and the SPI transfer are waits on top.

Verified: compiles with ``mpy-cross -march=armv6m``; smoke-tested with fake
``machine`` modules under CPython and under the MicroPython unix runtime with the heap
locked around the tick-context methods (tests_host/firmware/test_boards.py). NOT run on silicon.

Usage (boot)::

    import hal, json
    hal.safe_outputs()
    h = hal.build(json.load(open("board.json")))
"""

import sys
from array import array

import machine
import micropython
import uctypes
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
# slice registers every 0x14 bytes from board.json regs.pwm
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


_REG_KEYS = ("pwm", "pwm_en", "sio_in", "sio_set", "sio_clr")
# words of the PWM closures' state array
_CC_A = const(0)  # word offsets of the three slices' CC registers in the PWM window
_CC_B = const(1)
_CC_C = const(2)
_LEAD = const(3)
_LAG = const(4)
_CC_OFF = const(5)
_SIO_SET = const(6)  # word offsets in the SIO window
_SIO_CLR = const(7)
_EN_MASK = const(8)
_PWM_WORDS = const(9)


def _regs(b):
    """board.json ``regs`` as ints (hex strings or ints); ValueError if one is missing or
    the chip MicroPython reports is not the one the data is for."""
    regs = b.get("regs")
    if not isinstance(regs, dict) or any(k not in regs for k in _REG_KEYS):
        raise ValueError("board.json regs needs %s" % ", ".join(_REG_KEYS))
    chip = regs.get("chip", "")
    running = getattr(sys.implementation, "_machine", "")
    if "RP2" in running and chip not in running:
        raise ValueError("board.json regs are for %s, this is %s" % (chip, running))
    return {k: int(v, 16) if isinstance(v, str) else v for k, v in regs.items()
            if k in _REG_KEYS}


def _pwm_closures(st, pwm, sio):
    """The tick-context ``pwm_set`` and ``pwm_off`` over the state array ``st`` and the
    PWM and SIO register windows: viper, register stores only. Context: boot."""

    @micropython.viper
    def pwm_set(pw):
        """Apply pw[DUTY_A..C] (counts of high-side on-time) and enable the gates."""
        # tick context: no allocation; CC words < 2**30 (checked in build); svpwm keeps
        # D_MIN <= d <= PERIOD - D_MIN, and D_MIN >= lead, so no field goes negative
        s = ptr32(st)
        p = ptr32(pw)
        r = ptr32(pwm)
        lead = s[_LEAD]
        lag = s[_LAG]
        d = p[_DUTY_A]
        r[s[_CC_A]] = ((d + lag) << 16) | (d - lead)
        d = p[_DUTY_B]
        r[s[_CC_B]] = ((d + lag) << 16) | (d - lead)
        d = p[_DUTY_C]
        r[s[_CC_C]] = ((d + lag) << 16) | (d - lead)
        # new compares latch at the next wrap, so enable can follow at once
        ptr32(sio)[s[_SIO_SET]] = s[_EN_MASK]

    @micropython.viper
    def pwm_off():
        """All gates off: driver enable low now, all-off compares from the next wrap."""
        # tick context: no allocation
        s = ptr32(st)
        ptr32(sio)[s[_SIO_CLR]] = s[_EN_MASK]
        off = s[_CC_OFF]
        r = ptr32(pwm)
        r[s[_CC_A]] = off
        r[s[_CC_B]] = off
        r[s[_CC_C]] = off

    return pwm_set, pwm_off


class Pico(power_stage.PowerStage):
    def __init__(self, b):
        power_stage.PowerStage.__init__(self, machine, b, _SAFE_KEYS, SAFE_LOW_PINS)
        self._m = machine.mem32
        regs = _regs(b)
        sio = min(regs["sio_in"], regs["sio_set"], regs["sio_clr"])
        self._sio = uctypes.bytearray_at(sio, 0x40)  # register windows the closures use
        self._pwm_win = uctypes.bytearray_at(regs["pwm"], 0x100)
        self._init_pwm(b, b["pins"], regs, sio)
        adc = ad7606.AD7606(machine, b["ext_adc"], b["adc"])
        # tick context: the driver's viper reader on the SIO registers, no extra call
        self.adc_read = adc.fast_reader(self._sio, ((regs["sio_in"] - sio) >> 2,
                                                    (regs["sio_set"] - sio) >> 2,
                                                    (regs["sio_clr"] - sio) >> 2))
        self.adc_timeouts = adc.timeouts

    def _init_pwm(self, b, pins, regs, sio):
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
        lead = dead >> 1  # A off this early, B on this late; lead <= D_MIN
        lag = dead - lead
        if period + lag > 16383:  # keeps every CC word below 2**30 (a small int)
            raise ValueError("pwm_period_counts + dead time > 16383 counts")
        en = pins["gate_enable"]
        if not 0 <= en < 32:
            raise ValueError("pins.gate_enable %r is not in GPIO 0..31" % (en,))
        cc_off = period << 16  # A never high, inverted B never high
        base, en_reg = regs["pwm"], regs["pwm_en"]
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
            m[r + _CC] = cc_off
            m[r + _CTR] = 0
            cc.append((r + _CC - base) >> 2)
            mask |= 1 << s
        m[en_reg] = m[en_reg] | mask  # start the three counters on the same clock
        st = array("I", range(_PWM_WORDS))
        st[_CC_A], st[_CC_B], st[_CC_C] = cc
        st[_LEAD], st[_LAG], st[_CC_OFF] = lead, lag, cc_off
        st[_SIO_SET] = (regs["sio_set"] - sio) >> 2
        st[_SIO_CLR] = (regs["sio_clr"] - sio) >> 2
        st[_EN_MASK] = 1 << en
        self._pwm_st = st
        self.pwm_set, self.pwm_off = _pwm_closures(st, self._pwm_win, self._sio)



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
