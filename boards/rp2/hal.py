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
locked around the tick-context methods (tests_host/test_boards.py). NOT run on silicon.

Usage (boot)::

    import hal, json
    hal.safe_outputs()
    h = hal.build(json.load(open("board.json")))
"""

import sys
import time
from array import array

import machine
import micropython
from micropython import const

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
_BUSY_POLLS = const(16)  # bound on the BUSY wait (~25 us); a conversion takes ~4 us
_FAN_HZ = const(25000)

_hal = None


def safe_outputs():
    """Gates off, contactors open: stop the tick, then drive the gate, gate-enable and
    contactor pins low as plain GPIO. Works before board.json is read; after a build()
    the PWM pins stay GPIO until the next build(). Context: boot / supervisor."""
    global _hal
    h = _hal
    _hal = None
    if h is not None:
        try:
            h.stop_tick()
            h.pwm_off()
        except Exception:  # noqa: BLE001 - the pin-level step below is what counts
            pass
    for p in SAFE_LOW_PINS:
        machine.Pin(p, machine.Pin.OUT, value=0)


def build(board):
    """The HAL for the parsed board.json. Raises ValueError on data this board cannot
    wire. Context: boot, before the tick starts."""
    global _hal
    micropython.alloc_emergency_exception_buf(100)
    if (svpwm.DUTY_A, svpwm.DUTY_B, svpwm.DUTY_C) != (_DUTY_A, _DUTY_B, _DUTY_C):
        raise ValueError("hal.py duty indices differ from svpwm.DUTY_A..C")
    _hal = Pico(board)
    return _hal


def _chip():
    return "RP2350" if "RP2350" in getattr(sys.implementation, "_machine", "") else "RP2040"


@micropython.viper
def _unpack(buf: ptr8, order: ptr8, raw: ptr32):
    """raw[k] = AD7606 channel order[k], big-endian two's complement -> offset binary
    0..65535 (0 V = 32768). Context: tick."""
    k = 0
    while k < 7:
        j = order[k] << 1
        raw[k] = ((buf[j] << 8) | buf[j + 1]) ^ 0x8000
        k += 1


class Pico:
    def __init__(self, b):
        pins = b["pins"]
        got = sorted(pins[k] for k in _SAFE_KEYS)
        if got != sorted(SAFE_LOW_PINS):
            raise ValueError("board.json gate/contactor pins %s differ from hal.SAFE_LOW_PINS "
                             "%s: fix one of them" % (got, sorted(SAFE_LOW_PINS)))
        Pin = machine.Pin
        en = Pin(pins["gate_enable"], Pin.OUT, value=0)  # first: no gate can switch below
        self._en_on = en.on
        self._en_off = en.off
        self._m = machine.mem32
        self._init_pwm(b, pins)
        self._init_adc(b["ext_adc"], b["adc"])
        self._main = Pin(pins["contactor_main"], Pin.OUT, value=0)
        self._pre = Pin(pins["contactor_pre"], Pin.OUT, value=0)
        self._aux = Pin(pins["contactor_aux"], Pin.IN, Pin.PULL_UP)
        self._ntc_m = machine.ADC(Pin(pins["ntc_module"])).read_u16
        self._ntc_h = machine.ADC(Pin(pins["ntc_heatsink"])).read_u16
        self._fan = machine.PWM(Pin(pins["fan_pwm"]), freq=_FAN_HZ, duty_u16=0)
        self._tach = array("i", [0])
        self._tach_ms = time.ticks_ms()
        Pin(pins["fan_tach"], Pin.IN, Pin.PULL_UP).irq(
            handler=self._tach_isr, trigger=Pin.IRQ_FALLING, hard=True)
        self._led = Pin(pins["led"], Pin.OUT, value=0)
        self._tick_hz = b["tick_hz"]
        self._timer = None
        self._wdt = None
        self.ticks_us = time.ticks_us  # tick context
        self.ticks_diff = time.ticks_diff  # tick context
        self.ticks_ms = time.ticks_ms

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

    def _init_adc(self, ext, adc):
        Pin = machine.Pin
        self._spi = machine.SPI(ext["spi"], baudrate=ext["baud"],
                                polarity=ext.get("polarity", 1), phase=ext.get("phase", 0),
                                sck=Pin(ext["sck"]), mosi=Pin(ext["mosi"]),
                                miso=Pin(ext["miso"]))
        self._readinto = self._spi.readinto
        cs = Pin(ext["cs"], Pin.OUT, value=1)
        self._cs_on, self._cs_off = cs.on, cs.off
        cv = Pin(ext["convst"], Pin.OUT, value=0)
        self._cv_on, self._cv_off = cv.on, cv.off
        self._busy = Pin(ext["busy"], Pin.IN).value
        if "reset" in ext:  # AD7606 needs a reset pulse after power-up
            rst = Pin(ext["reset"], Pin.OUT, value=1)
            time.sleep_us(1)
            rst.off()
        self._buf = bytearray(16)  # 8 channels x 16 bit, DOUTA order V1..V8
        self._order = bytearray(int(ch["pin"][1:]) - 1 for ch in adc)
        self.adc_timeouts = array("i", [0])  # BUSY never fell within the poll bound

    # ---- tick context: no allocation, no floats, nothing raises by design ----

    def adc_read(self, raw):
        """Sample all channels at once; fill raw[0..6] (VA VB VC IA IB IC VDC), 16-bit."""
        # tick context: no allocation
        self._cv_on()  # rising edge: all 8 track-and-holds sample now
        self._cv_off()
        busy = self._busy
        n = _BUSY_POLLS
        while busy() and n:
            n -= 1
        if not n:
            self.adc_timeouts[0] += 1  # the words below are the previous conversion's
        self._cs_off()
        self._readinto(self._buf)
        self._cs_on()
        _unpack(self._buf, self._order, raw)

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

    def _tach_isr(self, _pin):
        # hard IRQ context: no allocation
        self._tach[0] += 1

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

    def contactor(self, main_on, pre_on):
        self._main.value(1 if main_on else 0)
        self._pre.value(1 if pre_on else 0)

    def contactor_aux(self):
        """1 when the main contactor's aux contact reports closed."""
        return 1 - self._aux.value()

    def ntc_raw(self):
        """(module, heatsink) NTC divider readings, 16-bit words."""
        return self._ntc_m(), self._ntc_h()

    def fan(self, duty_pct):
        duty_pct = max(0, min(100, int(duty_pct)))
        self._fan.duty_u16(duty_pct * 65535 // 100)

    def fan_tach_hz(self):
        """Tach pulses per second since the last call (most fans: 2 per revolution)."""
        state = machine.disable_irq()
        n = self._tach[0]
        self._tach[0] = 0
        machine.enable_irq(state)
        now = time.ticks_ms()
        dt_ms = time.ticks_diff(now, self._tach_ms)
        self._tach_ms = now
        return n * 1000 // dt_ms if dt_ms > 0 else 0

    def led(self, on):
        self._led.value(1 if on else 0)

    def wdt_start(self, timeout_ms):
        """Start the hardware watchdog (cannot be stopped; max 8388 ms on RP2040)."""
        self._wdt = machine.WDT(timeout=timeout_ms)

    def wdt_feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def reset_cause(self):
        """One of "power", "wdt", "soft". rp2 reports machine.reset() as a watchdog reset,
        and a soft reboot (Ctrl-D) keeps the cause of the last hardware reset."""
        cause = machine.reset_cause()
        if cause == machine.WDT_RESET:
            return "wdt"
        if cause == getattr(machine, "SOFT_RESET", -1):
            return "soft"
        return "power"
