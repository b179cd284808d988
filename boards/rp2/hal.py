"""HAL of the Raspberry Pi Pico 2 (RP2350) board: gate PWM, AD7606 sampling, contactors,
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
  simultaneous sample-and-hold, +/-10 V range, OS pins low, serial mode on DOUTA), read
  by two PIO state machines (``ext_adc.read`` "pio", the AD7606 driver's
  ``pio_programs``): state machine 1 paces (PIO IRQ flag 4 every 1/tick_hz s, 200 PIO
  cycles at tick_hz * 200 Hz), state machine 0 pulses CONVST, waits for BUSY low, clocks
  the eight results out at ``ext_adc.baud`` (12.5 MHz: 12 PIO cycles at 150 MHz a bit)
  into its RX FIFO and raises its IRQ, which runs the tick: the conversion (<= 4.15 us)
  and the 128 bits (10.24 us) pass while the CPU is free. The sample is the tick's own
  (taken ~14.5 us before its interrupt), not the previous tick's: from sampling to the
  new duties it is ~2-3 us longer than when the handler pulsed CONVST itself (the
  interrupt entry and dispatch now come after the sample), small beside the up to 50 us
  until new compares latch at the PWM wrap. The tick period is the PIO's, divided from
  the system clock, instead of the alarm pool's behind ``machine.Timer``.
  ``adc[i].pin`` names the AD7606 input ("V1".."V8") of tick channel i. Lines: CS and
  SCLK are the side-set pair (``sck`` = ``cs`` + 1), CONVST the set pin, BUSY the jmp
  pin, DOUTA (``miso``) the in pin; ``mosi`` and the SPI block are not used. The on-chip
  ADC reads the two NTC dividers (supervisor context only).
- Contactor coils: active high. Aux contact: pulls ``contactor_aux`` low when the main
  contactor is closed (input with pull-up). Fan: 25 kHz PWM, open-collector tach.
- All gate and contactor lines need pull-downs: they float during reset and boot.

Registers (board.json ``regs``, hex strings: the chip's PWM block base and EN register,
the SIO GPIO input / output-set / output-clear registers, the PIO block of the AD7606
state machines; the Pico 2's are the RP2350's (pico-sdk ``hardware_regs`` addressmap.h:
PWM 0x400A8000, SIO 0xD0000000, PIO0 0x50200000; pio.h: RXF0 0x020, IRQ 0x030), an
RP2040 board would give its own): the gate PWM is set up with ``machine.mem32`` at boot.
The tick-context methods are viper closures built at boot over one ``array('I')`` of word
offsets and values and over ``uctypes.bytearray_at`` windows onto the PWM, SIO and PIO
blocks: ``pwm_set`` writes the three CC registers and sets ``gate_enable`` through SIO
GPIO_OUT_SET, ``pwm_off`` clears ``gate_enable`` through GPIO_OUT_CLR first, then writes
the all-off compares; ``adc_read`` is the AD7606 driver's ``pio_reader`` (pops the eight
words of the frame from state machine 0's RX FIFO, counts a BUSY timeout the sequencer
flagged). Nothing in them looks up an attribute, allocates or can raise, so ``pwm_off``
always works once ``build`` has returned. ``gate_enable`` must be GPIO 0..31 (checked in
build). The tick is the sequencer's ``StateMachine.irq(..., hard=True)``; ``stop_tick``
stops the pacer, lets the frame in flight finish (CS high) and stops the sequencer.

Tick-context cost: measured on the emulated core (``python -m v2g.targets.measure``; the
README's board table): 6 359 instructions a tick, of which this HAL's ``adc_read`` +
``pwm_set`` 1 662, and no wait (the PIO's part is done before the interrupt).

Checks (fakes, heap lock, mpy-cross -march=armv6m) and boot usage: boards/README.md.
NOT run on silicon.
"""

import sys
import time
from array import array

import machine
import micropython
import rp2
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



_REG_KEYS = ("pwm", "pwm_en", "sio_in", "sio_set", "sio_clr", "pio")
_SM_SEQ = const(0)  # the AD7606 sequencer: state machine 0 of the PIO block at regs.pio
_SM_PACE = const(1)  # its pacer, state machine 1 of the same block
_PIO_IRQ_OFS = const(0x30)  # PIO IRQ flags (write 1 to clear)
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
        self._init_adc(b, regs)

    def _init_adc(self, b, regs):
        """The AD7606 read by PIO (ad7606 driver): check the timing the programs assume,
        assemble them; the state machines start with the tick (``start_tick``)."""
        ext = b["ext_adc"]
        if ext.get("read") != "pio":
            raise ValueError("ext_adc.read must be \"pio\" on rp2 (the PIO reads the AD7606)")
        clk = b["cpu_hz"]
        seq_hz = ext["baud"] * ad7606.PIO_BIT_CYCLES
        pace_hz = b["tick_hz"] * ad7606.PIO_PACE_CYCLES
        if seq_hz > clk or clk % seq_hz or clk % pace_hz:
            raise ValueError("ext_adc.baud %d and tick_hz %d need PIO clocks %d and %d Hz "
                             "that divide cpu_hz %d" % (ext["baud"], b["tick_hz"], seq_hz,
                                                        pace_hz, clk))
        if ext["sck"] != ext["cs"] + 1:
            raise ValueError("ext_adc.sck must be ext_adc.cs + 1 (PIO side-set pins)")
        adc = ad7606.AD7606(machine, ext, b["adc"])
        self._pio_win = uctypes.bytearray_at(regs["pio"], 0x40)  # the reader's registers
        self._pio_irq = regs["pio"] + _PIO_IRQ_OFS
        # tick context: the driver's viper reader of the PIO's RX FIFO, no call
        self.adc_read = adc.pio_reader(self._pio_win)
        self.adc_timeouts = adc.timeouts
        self._progs = ad7606.pio_programs(rp2)
        Pin = machine.Pin
        self._seq_kw = {"freq": seq_hz, "in_base": Pin(ext["miso"]),
                        "set_base": Pin(ext["convst"]), "sideset_base": Pin(ext["cs"]),
                        "jmp_pin": Pin(ext["busy"])}
        self._pace_hz = pace_hz

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
        """Run fn(state_machine) in hard IRQ context once per tick period: the pacer
        starts an AD7606 frame every 1/tick_hz s, the sequencer's IRQ when the frame is
        in its FIFO runs fn (ad7606 driver docstring)."""
        self.stop_tick()
        seq = rp2.StateMachine(_SM_SEQ, self._progs[0], **self._seq_kw)
        pace = rp2.StateMachine(_SM_PACE, self._progs[1], freq=self._pace_hz)
        while seq.rx_fifo():  # a frame left from before: the tick reads whole frames
            seq.get()
        self._m[self._pio_irq] = 0x30  # clear flags 4 (pace) and 5 (BUSY timeout)
        seq.irq(fn, 1, True)
        seq.active(1)
        pace.active(1)
        self._timer = (seq, pace)

    def stop_tick(self):
        if self._timer is not None:
            seq, pace = self._timer
            pace.active(0)
            time.sleep_us(50)  # the sequencer ends its frame (<= 16 us): CS high
            seq.active(0)
            seq.irq(None)
            self._timer = None


# safe_outputs() and build(board): power_stage.entry_points says what they do
safe_outputs, build = power_stage.entry_points(
    machine, SAFE_LOW_PINS, Pico, (_DUTY_A, _DUTY_B, _DUTY_C),
    (svpwm.DUTY_A, svpwm.DUTY_B, svpwm.DUTY_C))
