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

Checks (fakes, heap lock, mpy-cross -march=xtensawin) and boot usage: boards/README.md.
NOT run on silicon.
"""

import machine
from micropython import const

import ad7606
import power_stage
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
_TICK_TIMER = const(0)



class Esp32(power_stage.PowerStage):
    AUX_PULL = False  # GPIO 34-39: input only, no internal pulls (external pull-up)
    NTC_ADC_KW = {"atten": machine.ADC.ATTN_11DB}
    TACH_HARD = False  # esp32 pin IRQs are soft

    def __init__(self, b):
        power_stage.PowerStage.__init__(self, machine, b, _SAFE_KEYS, SAFE_LOW_PINS)
        pins = b["pins"]
        self._mul = (65535 << _SHIFT) // b["pwm_period_counts"]
        f = b["pwm_freq_hz"]
        Pin = machine.Pin
        self._pwm = [machine.PWM(Pin(pins["pwm_" + leg]), freq=f, duty_u16=0) for leg in "abc"]
        self._da, self._db, self._dc = [p.duty_u16 for p in self._pwm]
        adc = ad7606.AD7606(machine, b["ext_adc"], b["adc"])
        self.adc_read = adc.adc_read  # tick context: the driver's method, no extra call
        self.adc_timeouts = adc.timeouts

    # ---- tick context (a soft IRQ here): no allocation, no floats, nothing raises ----

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


# safe_outputs() and build(board): power_stage.entry_points says what they do
safe_outputs, build = power_stage.entry_points(
    machine, SAFE_LOW_PINS, Esp32, (_DUTY_A, _DUTY_B, _DUTY_C),
    (svpwm.DUTY_A, svpwm.DUTY_B, svpwm.DUTY_C))
