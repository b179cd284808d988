"""What every board's power stage wires the same way: the safe-output pins, the gate
driver's enable line, DC contactors with an aux contact, two NTC dividers, a fan with a
tach, a LED, the hardware watchdog and the reset cause.

``PowerStage`` is the base class of each board's HAL object; a board's ``hal.py`` adds
only what is port-specific (gate PWM, the tick timer, its ADC path) and may override the
port-dependent details through class attributes (``AUX_PULL``, ``NTC_ADC_KW``,
``TACH_HARD``) or methods (``_init_fan``/``fan``). ``safe_outputs`` is the pin-level
"everything off" that a HAL's module function of the same name calls.

RAM: a dozen bound methods and pin objects, one ``array('i')`` tach counter.
Context: boot and supervisor; ``_tach_isr`` runs in a (hard or soft) pin IRQ.
"""

import time
from array import array

import micropython
from micropython import const

FAN_HZ = const(25000)  # fan PWM frequency (4-wire fans: 21-28 kHz)


def check_safe_pins(pins, keys, safe_low_pins):
    """Raise ValueError unless the board data's gate/contactor pins are exactly the HAL's
    ``SAFE_LOW_PINS`` (driven low at every boot before board.json is read)."""
    got = sorted(pins[k] for k in keys)
    if got != sorted(safe_low_pins):
        raise ValueError("board.json gate/contactor pins %s differ from hal.SAFE_LOW_PINS "
                         "%s: fix one of them" % (got, sorted(safe_low_pins)))


_active = None  # the HAL object build() made last (a board has one)


def build(cls, board):
    """Make the board's HAL object ``cls(board)`` and remember it for safe_outputs().
    Context: boot, before the tick starts."""
    global _active
    micropython.alloc_emergency_exception_buf(100)
    _active = cls(board)
    return _active


def entry_points(machine, safe_low_pins, cls, duty_idx, svpwm_idx):
    """The two module functions every board's ``hal.py`` exports, for its HAL class
    ``cls``:

    - ``safe_outputs()``: gates off, contactors open: stop the tick and the PWM, then
      drive ``safe_low_pins`` (gates, gate enable or driver shutdown, contactor coils) low
      as plain GPIO. Works before board.json is read; after a ``build()`` the PWM pins stay
      GPIO until the next ``build()``. Context: boot / supervisor.
    - ``build(board)``: the HAL object for the parsed board.json; ValueError on data this
      board cannot wire, or when the HAL's duty indices ``duty_idx`` are not svpwm's
      ``DUTY_A..C`` (``svpwm_idx``). Context: boot, before the tick starts.
    """

    def safe_outputs_():
        safe_outputs(machine, safe_low_pins)

    def build_(board):
        if tuple(duty_idx) != tuple(svpwm_idx):
            raise ValueError("hal.py duty indices %s differ from svpwm.DUTY_A..C %s"
                             % (tuple(duty_idx), tuple(svpwm_idx)))
        return build(cls, board)

    return safe_outputs_, build_


def safe_outputs(machine, safe_low_pins):
    """Gates off, contactors open: stop the tick and the PWM of the HAL object build()
    made (if any), then drive ``safe_low_pins`` low as plain GPIO. Never raises from the
    HAL step: the pin-level step is what counts. Context: boot / supervisor."""
    global _active
    h = _active
    _active = None
    if h is not None:
        try:
            h.stop_tick()
            h.pwm_off()
        except Exception:  # noqa: BLE001 - the pin-level step below is what counts
            pass
    for p in safe_low_pins:
        machine.Pin(p, machine.Pin.OUT, value=0)


class PowerStage:
    AUX_PULL = True  # aux contact input with the MCU's pull-up (False: external pull-up)
    NTC_ADC_KW = None  # extra keyword arguments of machine.ADC for the NTC inputs
    TACH_HARD = True  # fan tach pin IRQ as a hard IRQ (False where the port has none)

    def __init__(self, machine, b, safe_keys, safe_low_pins):
        """Check the safe pins, then wire the gate enable (disabled) first, so no gate
        can switch while the rest is set up; then contactors, NTCs, fan, tach, LED."""
        pins = b["pins"]
        check_safe_pins(pins, safe_keys, safe_low_pins)
        self._machine = machine
        Pin = machine.Pin
        en = Pin(pins["gate_enable"], Pin.OUT, value=0)
        self._en_on = en.on
        self._en_off = en.off
        self._main = Pin(pins["contactor_main"], Pin.OUT, value=0)
        self._pre = Pin(pins["contactor_pre"], Pin.OUT, value=0)
        if self.AUX_PULL:
            self._aux = Pin(pins["contactor_aux"], Pin.IN, Pin.PULL_UP)
        else:
            self._aux = Pin(pins["contactor_aux"], Pin.IN)
        kw = self.NTC_ADC_KW or {}
        self._ntc_m = machine.ADC(Pin(pins["ntc_module"]), **kw).read_u16
        self._ntc_h = machine.ADC(Pin(pins["ntc_heatsink"]), **kw).read_u16
        self._init_fan(pins)
        self._tach = array("i", [0])
        self._tach_ms = time.ticks_ms()
        tach = Pin(pins["fan_tach"], Pin.IN, Pin.PULL_UP)
        if self.TACH_HARD:
            tach.irq(handler=self._tach_isr, trigger=Pin.IRQ_FALLING, hard=True)
        else:
            tach.irq(handler=self._tach_isr, trigger=Pin.IRQ_FALLING)
        self._led = Pin(pins["led"], Pin.OUT, value=0)
        self._tick_hz = b["tick_hz"]
        self._timer = None
        self._wdt = None
        self.ticks_us = time.ticks_us  # tick context
        self.ticks_diff = time.ticks_diff  # tick context
        self.ticks_ms = time.ticks_ms

    def _init_fan(self, pins):
        m = self._machine
        self._fan = m.PWM(m.Pin(pins["fan_pwm"]), freq=FAN_HZ, duty_u16=0)

    def fan(self, duty_pct):
        duty_pct = max(0, min(100, int(duty_pct)))
        self._fan.duty_u16(duty_pct * 65535 // 100)

    def _tach_isr(self, _pin):
        # pin IRQ context (hard where TACH_HARD): no allocation
        self._tach[0] += 1

    def contactor(self, main_on, pre_on):
        self._main.value(1 if main_on else 0)
        self._pre.value(1 if pre_on else 0)

    def contactor_aux(self):
        """1 when the main contactor's aux contact reports closed (it pulls the line low)."""
        return 1 - self._aux.value()

    def ntc_raw(self):
        """(module, heatsink) NTC divider readings, 16-bit words."""
        return self._ntc_m(), self._ntc_h()

    def fan_tach_hz(self):
        """Tach pulses per second since the last call (most fans: 2 per revolution)."""
        m = self._machine
        state = m.disable_irq()
        n = self._tach[0]
        self._tach[0] = 0
        m.enable_irq(state)
        now = time.ticks_ms()
        dt_ms = time.ticks_diff(now, self._tach_ms)
        self._tach_ms = now
        return n * 1000 // dt_ms if dt_ms > 0 else 0

    def led(self, on):
        self._led.value(1 if on else 0)

    def wdt_start(self, timeout_ms):
        """Start the hardware watchdog; it cannot be stopped (the port's limits: the
        board's README)."""
        self._wdt = self._machine.WDT(timeout=timeout_ms)

    def wdt_feed(self):
        if self._wdt is not None:
            self._wdt.feed()

    def reset_cause(self):
        """One of "power", "wdt", "soft". (rp2 reports machine.reset() as a watchdog
        reset, and a soft reboot keeps the cause of the last hardware reset.)"""
        m = self._machine
        cause = m.reset_cause()
        if cause == m.WDT_RESET:
            return "wdt"
        if cause == getattr(m, "SOFT_RESET", -1):
            return "soft"
        return "power"
