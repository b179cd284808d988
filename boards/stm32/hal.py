"""HAL of the NUCLEO-H743ZI board (STM32H743; before: NUCLEO-F446RE, whose ~96 KB heap
the firmware does not fit with 30 % free): TIM1 complementary gate PWM with hardware dead
time, on-chip ADC, contactors, fan, NTCs, watchdog. ``build(board)`` turns the parsed
``board.json`` into the objects.

Wiring (pin names in board.json):
- Gates: TIM1 (the advanced timer) in centre-aligned mode, ARR = ``pwm_period_counts``
  at ``pwm_clock_hz`` (MicroPython clocks the H743 at 400 MHz; TIM1 on APB2 counts at
  200 MHz). CH1..CH3 drive the high sides (PE9, PE11, PE13), CH1N..CH3N the low sides
  (PE8, PE10, PE12, AF1; the Nucleo-144's PA9/PA10 serve USB and PB13/PB14 Ethernet and
  LED3); ``pyb.Timer(deadtime=...)`` inserts the dead time. Gates are
  switched off with MOE = 0: with OSSI = 1 and the idle levels (CR2 OISx/OISxN, which
  pyb sets high) cleared here, all six outputs go low within one dead time.
- ``gate_enable``: the gate driver's enable input (high = enabled), a second off path.
- ADC: seven on-chip channels read one after another with ``machine.ADC.read_u16``
  (12-bit conversions scaled to 16 bit); about 3 us between channels, so the phases
  are not sampled at one instant (0.05 degree at 50 Hz; the current ripple is not
  sampled at the PWM centre either -- a product triggers the ADC from TIM1 TRGO).
  AC channels are biased at 1.65 V (offset 32768), VDC is unipolar 0..3.3 V.
- Contactor coils active high; aux contact pulls ``contactor_aux`` low when closed.
  Fan on TIM4_CH1 (PD12) at 25 kHz, open-collector tach on PD13.
- The tick: ``pyb.Timer(6)`` (basic timer); pyb timer callbacks always run in hard IRQ
  context. (``machine.Timer`` on stm32 is a 1 ms soft timer: too slow for the tick.)
- All gate and contactor lines need pull-downs: they float during reset and boot.

Tick-context methods: viper closures built at boot over one ``array('I')`` of register
word offsets and values and two ``uctypes.bytearray_at`` windows (port constants of the
``stm`` module: TIM1's CCR1..3 and BDTR, the ``gate_enable`` port's BSRR), so no attribute
is looked up per call. ``pwm_set`` writes
the three CCRs, BDTR with MOE and sets ``gate_enable`` (BSRR set half); ``pwm_off`` writes
BDTR without MOE first, then resets ``gate_enable`` (BSRR reset half). Register stores
only: nothing allocates or can raise, so ``pwm_off`` always works once ``build`` has
returned. ``adc_read`` calls the seven ``read_u16`` bound methods from a list made at boot.
Tick-context cost: measured on the emulated core (``python -m v2g.targets.measure``; the
README's board table); the seven conversions are a wait on top (about 1 us each).

Checks (fakes, heap lock, mpy-cross -march=armv7emdp) and boot usage: boards/README.md.
NOT run on silicon.
"""

from array import array

import machine
import micropython
import pyb
import stm
import uctypes
from micropython import const

import power_stage
import svpwm

# Driven low by safe_outputs() before board.json is read: TIM1 CH1..3 and CH1N..3N,
# gate enable, main and pre-charge contactor. build() refuses a board.json that differs.
SAFE_LOW_PINS = ("E9", "E11", "E13", "E8", "E10", "E12", "E15", "F12", "F13")
_SAFE_KEYS = ("pwm_a", "pwm_b", "pwm_c", "pwm_a_n", "pwm_b_n", "pwm_c_n", "gate_enable",
              "contactor_main", "contactor_pre")

_DUTY_A = const(2)  # svpwm.DUTY_A..C, checked in build()
_DUTY_B = const(3)
_DUTY_C = const(4)
_PWM_TIMER = const(1)  # advanced timer: complementary outputs, dead time, MOE
_TICK_TIMER = const(6)
_FAN_TIMER = const(4)  # TIM4_CH1 = PD12 (AF2)
_FAN_CHANNEL = const(1)
_AF1_TIM1 = const(1)
_BDTR_MOE = const(1 << 15)
_BDTR_OSSR = const(1 << 11)
_BDTR_OSSI = const(1 << 10)
_CR2_OIS_ALL = const(0x3F00)  # OIS1, OIS1N .. OIS3, OIS3N
# words of the PWM closures' state array
_CCR1 = const(0)  # word offsets in the TIM1 window
_CCR2 = const(1)
_CCR3 = const(2)
_BDTR = const(3)
_BDTR_ON = const(4)  # values
_BDTR_OFF = const(5)
_BSRR = const(6)  # word offset of BSRR in gate_enable's GPIO port window
_EN_SET = const(7)
_EN_RESET = const(8)
_PWM_WORDS = const(9)


def _pwm_closures(st, tim, gpio):
    """The tick-context ``pwm_set`` and ``pwm_off`` over the state array ``st`` and the
    TIM1 and GPIO port register windows: viper, register stores only. Context: boot."""

    @micropython.viper
    def pwm_set(pw):
        """Apply pw[DUTY_A..C] (counts of high-side on-time) and enable the gates."""
        # tick context: no allocation; CCR preload: new duties at the next update event
        s = ptr32(st)
        p = ptr32(pw)
        t = ptr32(tim)
        t[s[_CCR1]] = p[_DUTY_A]
        t[s[_CCR2]] = p[_DUTY_B]
        t[s[_CCR3]] = p[_DUTY_C]
        t[s[_BDTR]] = s[_BDTR_ON]
        ptr32(gpio)[s[_BSRR]] = s[_EN_SET]

    @micropython.viper
    def pwm_off():
        """All gates off at once: MOE = 0 (outputs to idle low), then driver enable low."""
        # tick context: no allocation
        s = ptr32(st)
        ptr32(tim)[s[_BDTR]] = s[_BDTR_OFF]
        ptr32(gpio)[s[_BSRR]] = s[_EN_RESET]

    return pwm_set, pwm_off


def _adc_closure(rd):
    """The tick-context ``adc_read`` over the list ``rd`` of seven ``read_u16`` bound
    methods. Context: boot."""

    @micropython.viper
    def adc_read(raw):
        """Fill raw[0..6] (VA VB VC IA IB IC VDC) with 16-bit words, one after another."""
        # tick context: no allocation
        r = ptr32(raw)
        f = rd
        r[0] = int(f[0]())
        r[1] = int(f[1]())
        r[2] = int(f[2]())
        r[3] = int(f[3]())
        r[4] = int(f[4]())
        r[5] = int(f[5]())
        r[6] = int(f[6]())

    return adc_read



class Nucleo(power_stage.PowerStage):
    def __init__(self, b):
        power_stage.PowerStage.__init__(self, machine, b, _SAFE_KEYS, SAFE_LOW_PINS)
        Pin = machine.Pin
        self._m = stm.mem32
        self._init_pwm(b, b["pins"])
        self._rd = [machine.ADC(Pin(ch["pin"])).read_u16 for ch in b["adc"]]
        self.adc_read = _adc_closure(self._rd)

    def _init_fan(self, pins):
        self._fan = pyb.Timer(_FAN_TIMER, freq=power_stage.FAN_HZ).channel(
            _FAN_CHANNEL, pyb.Timer.PWM, pin=machine.Pin(pins["fan_pwm"]),
            pulse_width_percent=0)

    def fan(self, duty_pct):
        self._fan.pulse_width_percent(max(0, min(100, int(duty_pct))))

    def _init_pwm(self, b, pins):
        tim = pyb.Timer(_PWM_TIMER)
        clk = tim.source_freq()
        if clk != b["pwm_clock_hz"]:
            raise ValueError("TIM1 counts at %d Hz but board.json pwm_clock_hz is %d: fix "
                             "the board data (pwm_period_counts with it)"
                             % (clk, b["pwm_clock_hz"]))
        period = b["pwm_period_counts"]
        dead = -(-b["dead_time_ns"] * (clk // 1000000) // 1000)  # timer ticks, rounded up
        step = 1 if dead <= 128 else 2 if dead <= 256 else 8 if dead <= 512 else 16
        dead = -(-dead // step) * step  # pyb's DTG steps; round up, never shorter
        if dead > 1008:
            raise ValueError("dead_time_ns %d is %d TIM1 ticks; pyb allows 0..1008"
                             % (b["dead_time_ns"], dead))
        tim.init(prescaler=0, period=period, mode=pyb.Timer.CENTER, deadtime=dead)
        # channel(): PWM mode 1, CCR preload on, starts CHx and CHxN and sets MOE
        self._ch = [tim.channel(n + 1, pyb.Timer.PWM, pin=machine.Pin(pins["pwm_" + leg]),
                                pulse_width=period // 2)
                    for n, leg in enumerate("abc")]
        m = self._m
        base = stm.TIM1
        m[base + stm.TIM_CR2] = m[base + stm.TIM_CR2] & ~_CR2_OIS_ALL  # idle levels low
        bdtr = (m[base + stm.TIM_BDTR] | _BDTR_OSSR | _BDTR_OSSI) & ~_BDTR_MOE
        m[base + stm.TIM_BDTR] = bdtr  # all six outputs idle (low) until the first pwm_set
        for leg in "abc":  # low sides: CHxN pins to AF1 (pyb only routes the CHx pin)
            machine.Pin(pins["pwm_" + leg + "_n"], machine.Pin.ALT, alt=_AF1_TIM1)
        en = pins["gate_enable"]  # "E15": port E, pin 15 (an output since PowerStage)
        gpio = getattr(stm, "GPIO" + en[0], None)
        if gpio is None or not en[1:].isdigit() or not 0 <= int(en[1:]) < 16:
            raise ValueError("pins.gate_enable %r is not a GPIO pin name like E15" % (en,))
        st = array("I", range(_PWM_WORDS))
        st[_CCR1] = stm.TIM_CCR1 >> 2
        st[_CCR2] = stm.TIM_CCR2 >> 2
        st[_CCR3] = stm.TIM_CCR3 >> 2
        st[_BDTR] = stm.TIM_BDTR >> 2
        st[_BDTR_ON], st[_BDTR_OFF] = bdtr | _BDTR_MOE, bdtr
        st[_BSRR] = stm.GPIO_BSRR >> 2
        st[_EN_SET], st[_EN_RESET] = 1 << int(en[1:]), 1 << (16 + int(en[1:]))
        self._pwm_st = st
        self._tim_win = uctypes.bytearray_at(base, 0x100)  # register windows of the closures
        self._gpio_win = uctypes.bytearray_at(gpio, 0x40)
        self.pwm_set, self.pwm_off = _pwm_closures(st, self._tim_win, self._gpio_win)

    # ---- boot / supervisor context ----

    def start_tick(self, fn):
        """Run fn(timer) at tick_hz; pyb.Timer callbacks are hard IRQs."""
        self.stop_tick()
        t = pyb.Timer(_TICK_TIMER, freq=self._tick_hz)
        t.callback(fn)
        self._timer = t

    def stop_tick(self):
        if self._timer is not None:
            self._timer.callback(None)
            self._timer.deinit()
            self._timer = None


# safe_outputs() and build(board): power_stage.entry_points says what they do
safe_outputs, build = power_stage.entry_points(
    machine, SAFE_LOW_PINS, Nucleo, (_DUTY_A, _DUTY_B, _DUTY_C),
    (svpwm.DUTY_A, svpwm.DUTY_B, svpwm.DUTY_C))
