"""Permissive stand-ins for ``machine``, ``pyb``, ``stm`` and ``rp2`` (runs ON the MicroPython unix
runtime, and under CPython): enough for a real board's ``hal.build(board)`` to complete,
so that a whole board tree (firmware + the board's HAL + board.json) boots off target.

    import fake_hw
    fake_hw.install(board)      # sys.modules machine/pyb/stm; clocks from the board data

Nothing is recorded (``tests_host/test_boards.py`` has the recording fakes that check what
the HALs write where); every object is small, so a heap measurement of the boot is not
distorted by the fakes. ADC reads return mid-scale (32768), pins read 1 (pull-ups idle).
``SPI.readinto`` is the C method ``[].count`` (a C-level call, as on a port; reads nothing).
``rp2.asm_pio`` assembles nothing and ``rp2.StateMachine`` runs nothing: the PIO reader
of the AD7606 then pops words from a RAM page (zeros: mid-scale samples).

Registers the HALs' viper tick methods write directly: on MicroPython ``install`` points
them at scratch RAM (one 256-byte page per register page: board.json ``regs`` values and
the fake ``stm`` block bases), so a boot on the unix runtime or the emulated core writes
RAM, not an unmapped address; under CPython ``install`` puts a ``uctypes`` stand-in whose
``bytearray_at`` windows read 0 and ignore writes.
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

    def __init__(self, *args, **kw):
        self.readinto = [].count  # C-level call of readinto(buf)'s shape

    def write_readinto(self, wbuf, rbuf):
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


class _PIO:
    SHIFT_LEFT = 0
    SHIFT_RIGHT = 1
    JOIN_NONE = 0
    JOIN_TX = 1
    JOIN_RX = 2
    OUT_LOW = 0
    OUT_HIGH = 1
    IN_LOW = 0
    IN_HIGH = 1


class _StateMachine(_Obj):
    def rx_fifo(self):
        return 0


class rp2:
    PIO = _PIO
    StateMachine = _StateMachine

    @staticmethod
    def asm_pio(**kw):
        return lambda f: None


class stm:
    mem32 = _Mem()
    TIM1 = 0x40010000
    TIM_CR2 = 4
    TIM_BDTR = 0x44
    TIM_CCR1 = 0x34
    TIM_CCR2 = 0x38
    TIM_CCR3 = 0x3C
    GPIOE = 0x58021000
    GPIO_BSRR = 0x18


_pages = {}


def _scratch(addr):
    """``addr`` moved into a 256-byte scratch page standing for its register page."""
    import uctypes

    page = _pages.get(addr >> 8)
    if page is None:
        page = _pages[addr >> 8] = bytearray(256)
    return uctypes.addressof(page) + (addr & 0xFF)


class _Window:
    def __getitem__(self, i):
        return 0

    def __setitem__(self, i, v):
        pass


class uctypes:
    @staticmethod
    def bytearray_at(addr, size):
        return _Window()


def install(board):
    """Put the fakes in ``sys.modules`` with the clock the board data expects; on
    MicroPython, move the registers the HAL writes directly into scratch RAM (the
    board dict's ``regs``, the fake ``stm`` block bases)."""
    if sys.implementation.name == "micropython":
        regs = board.get("regs")
        if regs:
            for k, v in regs.items():
                if k != "chip":
                    regs[k] = _scratch(int(v, 16) if isinstance(v, str) else v)
        if not isinstance(stm.TIM1, int) or stm.TIM1 == 0x40010000:
            stm.TIM1 = _scratch(0x40010000)
            stm.GPIOE = _scratch(0x58021000)
    clk = board.get("pwm_clock_hz", 0)
    machine.clock_hz = clk
    _Timer.clock_hz = clk
    sys.modules["machine"] = machine
    sys.modules["pyb"] = pyb
    sys.modules["stm"] = stm
    sys.modules["rp2"] = rp2
    if sys.implementation.name != "micropython":
        sys.modules.setdefault("uctypes", uctypes)
