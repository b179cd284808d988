"""AD7606 driver: 8-channel, 16-bit simultaneous-sampling ADC, serial mode on DOUTA.

The board HAL hands it the port's ``machine`` module and the board data; the driver owns
the CONVST / BUSY / CS / RESET lines and the serial bus named in ``board.json``'s
``ext_adc`` object (``spi``, ``baud``, ``polarity``, ``phase``, ``sck``, ``mosi``, ``miso``,
``cs``, ``convst``, ``busy``, optional ``reset``, optional ``read``). ``adc[i].pin`` names
the AD7606 input ("V1".."V8") of tick channel i. +/-10 V range, OS pins low (no
oversampling): a conversion takes t_CONV <= 4.15 us (AD7606 data sheet, timing table).

Two ways to read, chosen by ``ext_adc.read``:
- ``"cpu"`` (default; esp32): ``adc_read`` (method) in the tick: CONVST pulse through the
  port's ``Pin`` methods, BUSY poll (bounded by ``BUSY_POLLS``), one ``SPI.readinto`` of
  16 bytes into a preallocated buffer, a viper unpack from big-endian two's complement to
  offset binary words 0..65535 (0 V = 32768). The CPU waits the conversion and the bus.
- ``"pio"`` (rp2): two RP2 PIO state machines do the whole acquisition in hardware
  (``pio_programs``): a pacer raises PIO IRQ flag 4 every tick period; the sequencer then
  pulses CONVST (8 PIO cycles high: 53 ns at 150 MHz, t2 >= 25 ns; BUSY rises within
  t1 = 40 ns), waits for BUSY low (bounded: 32 passes of 25 PIO cycles, 5.3 us at
  150 MHz > t_CONV max; past it the frame is read anyway and IRQ flag 5 set), pulls CS
  low and clocks the eight 16-bit results V1..V8 out of DOUTA (12 PIO cycles a bit: SCLK
  low 6, sampled at the end of the low phase, high 6; the AD7606 shifts on the rising
  edge), autopushing one word per channel into the joined 8-deep RX FIFO, raises CS and
  sets its own IRQ flag, which runs the tick. The tick's ``pio_reader`` only pops the 8
  words: no pin, no wait, no call. SCLK = PIO clock / 12 = ``ext_adc.baud``; the side-set
  pins are CS (bit 0) and SCLK = CS + 1 (bit 1); ``mosi`` is not driven (the AD7606 has
  no data input in hardware mode). All eight channels are read: the data sheet describes
  reading the eight results framed by one CS or per channel, not leaving some unread.
  A tick that runs late (interrupts off for more than a period) leaves its frame in the
  FIFO: the sequencer then stalls at the next frame's first push (CS low, the AD7606
  keeps its results) until the late tick has read; the next tick follows at once with
  that frame, and the pacer's next flag brings the period back.

RAM: 16 bytes of buffer, one ``array('I')`` of 16 words (the BUSY timeout counter, the
channel order, the 8 words of a frame), the bound methods it keeps; with "pio" the two
assembled programs (17 and 3 instructions).
Tick-context cost: measured on the emulated core by ``v2g.targets.measure`` (README table);
with ``"cpu"`` the conversion (4.15 us) and 16 bytes at the SPI clock (10.24 us at
12.5 MHz) come on top, with ``"pio"`` they pass before the tick's interrupt.

Used by: boards/rp2 (pio), boards/esp32 (cpu). Context: ``AD7606(...)`` and the programs
at boot; ``adc_read`` / the PIO reader in the tick (no allocation, no floats, never
raises by design).
"""

import time
from array import array

import micropython
from micropython import const

BUSY_POLLS = const(16)  # bound on the BUSY wait (~15-25 us); a conversion takes ~4 us
READS = ("cpu", "pio")
PIO_BIT_CYCLES = const(12)  # PIO cycles per SCLK period in the sequencer's bit loop
PIO_PACE_CYCLES = const(200)  # PIO cycles of the pacer's loop: one tick period
# words of the state array
_TIMEOUTS = const(0)  # BUSY never fell within the bound
_ORDER = const(1)  # 7 words: AD7606 channel (0..7) of tick channel k
_W = const(8)  # 8 words: the frame V1..V8 as the PIO pushed it
_WORDS = const(16)
# PIO block registers (word offsets; RP2040 and RP2350 pio.h): IRQ flags, SM0's RX FIFO
_PIO_RXF0 = const(8)  # 0x020
_PIO_IRQ = const(12)  # 0x030, write 1 to clear
_PIO_BUSY_FLAG = const(0x20)  # flag 5: BUSY still high after the sequencer's bound


def pio_programs(rp2):
    """The sequencer and the pacer (module docstring) as ``rp2.asm_pio`` programs, for
    ``rp2.StateMachine``: the sequencer with ``set_base`` CONVST, ``sideset_base`` CS
    (SCLK next to it), ``in_base`` DOUTA (``miso``), ``jmp_pin`` BUSY, at
    ``baud * PIO_BIT_CYCLES`` Hz; the pacer at ``tick_hz * PIO_PACE_CYCLES`` Hz.
    Context: boot (``asm_pio`` swaps this module's globals while it assembles)."""
    PIO = rp2.PIO

    @rp2.asm_pio(set_init=PIO.OUT_LOW, sideset_init=(PIO.OUT_HIGH, PIO.OUT_HIGH),
                 in_shiftdir=PIO.SHIFT_LEFT, autopush=True, push_thresh=16,
                 fifo_join=PIO.JOIN_RX)
    def sequencer():
        # side-set bit 0 CS, bit 1 SCLK; every instruction sets both
        wrap_target()  # the names are rp2.asm_pio's
        wait(1, irq, 4).side(3)  # paced: flag 4, cleared by the wait
        set(pins, 1).side(3)[7]  # CONVST high 8 cycles
        set(pins, 0).side(3)
        set(x, 31).side(3)  # BUSY bound: 32 passes of 25 cycles
        label("busy")
        jmp(pin, "conv").side(3)  # jmp_pin = BUSY: still converting
        jmp("read").side(3)
        label("conv")
        nop().side(3)[7]
        nop().side(3)[7]
        jmp(x_dec, "busy").side(3)[7]
        irq(5).side(3)  # BUSY did not fall: flag it, read anyway
        label("read")
        set(y, 7).side(2)  # CS low: V1's MSB on DOUTA
        label("word")
        set(x, 15).side(2)
        label("bit")
        nop().side(0)[4]  # SCLK low
        in_(pins, 1).side(0)  # sample DOUTA; autopush every 16 bits
        jmp(x_dec, "bit").side(2)[5]  # SCLK high: next bit shifts out
        jmp(y_dec, "word").side(2)
        irq(rel(0)).side(3)  # CS high; frame in the FIFO: the tick's IRQ
        wrap()

    @rp2.asm_pio()
    def pacer():
        irq(4)[3]  # 4 + 4 + 24 * 8 = 200 cycles a pass
        set(x, 23)[3]
        label("wait")
        jmp(x_dec, "wait")[7]

    return sequencer, pacer


@micropython.viper
def _unpack(buf: ptr8, order: ptr8, raw: ptr32):
    """raw[k] = AD7606 channel order[k], big-endian two's complement -> offset binary
    0..65535 (0 V = 32768). Context: tick."""
    k = 0
    while k < 7:
        j = order[k] << 1
        raw[k] = ((buf[j] << 8) | buf[j + 1]) ^ 0x8000
        k += 1


class AD7606:
    def __init__(self, machine, ext, adc):
        Pin = machine.Pin
        self.read = ext.get("read", "cpu")
        if self.read not in READS:
            raise ValueError("ext_adc.read %r: one of %s" % (self.read, ", ".join(READS)))
        cs = Pin(ext["cs"], Pin.OUT, value=1)  # idle levels before anything drives them
        cv = Pin(ext["convst"], Pin.OUT, value=0)
        if self.read == "cpu":
            self._spi = machine.SPI(ext["spi"], baudrate=ext["baud"],
                                    polarity=ext.get("polarity", 1),
                                    phase=ext.get("phase", 0), sck=Pin(ext["sck"]),
                                    mosi=Pin(ext["mosi"]), miso=Pin(ext["miso"]))
            self._readinto = self._spi.readinto
            self._cs_on, self._cs_off = cs.on, cs.off
            self._cv_on, self._cv_off = cv.on, cv.off
            self._busy = Pin(ext["busy"], Pin.IN).value
        if "reset" in ext:  # the AD7606 needs a reset pulse after power-up
            rst = Pin(ext["reset"], Pin.OUT, value=1)
            time.sleep_us(1)
            rst.off()
        self._buf = bytearray(16)  # 8 channels x 16 bit, DOUTA order V1..V8
        self._order = bytearray(int(ch["pin"][1:]) - 1 for ch in adc)  # V1..V8 -> 0..7
        self._st = array("I", range(_WORDS))
        for k in range(7):
            self._st[_ORDER + k] = self._order[k]
        self._st[_TIMEOUTS] = 0
        # BUSY never fell within the poll bound (both readers count here)
        self.timeouts = memoryview(self._st)[_TIMEOUTS:_TIMEOUTS + 1]

    def pio_reader(self, win):
        """The tick-context reader of a frame the RP2 PIO sequencer (``pio_programs``) has
        put in its state machine's RX FIFO: ``win`` a buffer over the PIO block's
        registers (``uctypes.bytearray_at``), the sequencer on state machine 0 of that
        block. Reads the 8 words, maps them to tick order, counts a BUSY timeout the
        sequencer flagged (PIO IRQ flag 5). Context: boot."""
        st = self._st

        @micropython.viper
        def adc_read(raw):
            """Fill raw[0..6] (VA VB VC IA IB IC VDC) from the frame the PIO read."""
            # tick context: no allocation, no call, never raises (register reads only)
            s = ptr32(st)
            p = ptr32(win)
            if p[_PIO_IRQ] & _PIO_BUSY_FLAG:  # the sequencer read without BUSY falling
                p[_PIO_IRQ] = _PIO_BUSY_FLAG  # write 1 to clear
                s[_TIMEOUTS] = s[_TIMEOUTS] + 1
            s[_W] = p[_PIO_RXF0]  # V1..V8: each read pops one 16-bit word
            s[_W + 1] = p[_PIO_RXF0]
            s[_W + 2] = p[_PIO_RXF0]
            s[_W + 3] = p[_PIO_RXF0]
            s[_W + 4] = p[_PIO_RXF0]
            s[_W + 5] = p[_PIO_RXF0]
            s[_W + 6] = p[_PIO_RXF0]
            s[_W + 7] = p[_PIO_RXF0]
            r = ptr32(raw)
            r[0] = s[_W + s[_ORDER]] ^ 0x8000
            r[1] = s[_W + s[_ORDER + 1]] ^ 0x8000
            r[2] = s[_W + s[_ORDER + 2]] ^ 0x8000
            r[3] = s[_W + s[_ORDER + 3]] ^ 0x8000
            r[4] = s[_W + s[_ORDER + 4]] ^ 0x8000
            r[5] = s[_W + s[_ORDER + 5]] ^ 0x8000
            r[6] = s[_W + s[_ORDER + 6]] ^ 0x8000

        return adc_read

    def adc_read(self, raw):
        """Sample all channels at once; fill raw[0..6] (VA VB VC IA IB IC VDC), 16-bit."""
        # tick context: no allocation
        self._cv_on()  # rising edge: all 8 track-and-holds sample now
        self._cv_off()
        busy = self._busy
        n = BUSY_POLLS
        while busy() and n:
            n -= 1
        if not n:
            self.timeouts[0] += 1  # the words below are the previous conversion's
        self._cs_off()
        self._readinto(self._buf)
        self._cs_on()
        _unpack(self._buf, self._order, raw)
