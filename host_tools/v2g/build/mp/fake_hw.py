"""Permissive stand-ins for ``machine``, ``pyb`` and ``stm`` (runs ON the MicroPython unix
runtime, and under CPython): enough for a real board's ``hal.build(board)`` to complete,
so that a whole board tree (firmware + the board's HAL + board.json) boots off target.

    import fake_hw
    fake_hw.install(board)      # sys.modules machine/pyb/stm; clocks from the board data

Nothing is recorded (``tests_host/test_boards.py`` has the recording fakes that check what
the HALs write where); every object is small, so a heap measurement of the boot is not
distorted by the fakes. ADC reads return mid-scale (32768), pins read 1 (pull-ups idle).
Context: host test harness only.
"""

import sys


class _Obj:
    """Any call or attribute: a harmless callable that returns 0."""

    def __init__(self, *args, **kw):
        pass

    def __call__(self, *args, **kw):
        return 0

    def __getattr__(self, name):
        return _Obj()


class _Mem:
    def __getitem__(self, addr):
        return 0

    def __setitem__(self, addr, value):
        pass


class _Pin(_Obj):
    IN = 0
    OUT = 1
    ALT = 2
    OPEN_DRAIN = 3
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 4
    IRQ_RISING = 8

    def value(self, v=None):
        return 1 if v is None else None

    def on(self):
        pass

    def off(self):
        pass


class _ADC(_Obj):
    ATTN_0DB = 0
    ATTN_11DB = 3

    def read_u16(self):
        return 32768


class _SPI(_Obj):
    MSB = 0

    def write_readinto(self, wbuf, rbuf):
        pass

    def readinto(self, buf, write=0):
        pass


class _Timer(_Obj):
    PERIODIC = 1
    ONE_SHOT = 0
    CENTER = 2
    PWM = 3
    UP = 0
    clock_hz = 0

    def source_freq(self):
        return _Timer.clock_hz

    def channel(self, *args, **kw):
        return _Obj()


class machine:
    Pin = _Pin
    ADC = _ADC
    SPI = _SPI
    Timer = _Timer
    PWM = _Obj
    WDT = _Obj
    mem32 = _Mem()
    PWRON_RESET = 1
    WDT_RESET = 3
    SOFT_RESET = 5
    clock_hz = 0

    @staticmethod
    def freq(hz=None):
        return machine.clock_hz

    @staticmethod
    def reset_cause():
        return machine.PWRON_RESET

    @staticmethod
    def disable_irq():
        return 0

    @staticmethod
    def enable_irq(state=0):
        pass


class pyb:
    Timer = _Timer


class stm:
    mem32 = _Mem()
    TIM1 = 0x40010000
    TIM_CR2 = 4
    TIM_BDTR = 0x44
    TIM_CCR1 = 0x34
    TIM_CCR2 = 0x38
    TIM_CCR3 = 0x3C


def install(board):
    """Put the fakes in ``sys.modules`` with the clock the board data expects."""
    clk = board.get("pwm_clock_hz", 0)
    machine.clock_hz = clk
    _Timer.clock_hz = clk
    sys.modules["machine"] = machine
    sys.modules["pyb"] = pyb
    sys.modules["stm"] = stm
