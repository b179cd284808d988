"""AD7606 driver: 8-channel, 16-bit simultaneous-sampling ADC on SPI (serial mode, DOUTA).

The board HAL hands it the port's ``machine`` module and the board data; the driver owns
the SPI bus and the CONVST / BUSY / CS / RESET lines named in ``board.json``'s
``ext_adc`` object (``spi``, ``baud``, ``polarity``, ``phase``, ``sck``, ``mosi``, ``miso``,
``cs``, ``convst``, ``busy``, optional ``reset``). ``adc[i].pin`` names the AD7606 input
("V1".."V8") of tick channel i. +/-10 V range, OS pins low (no oversampling): a
conversion takes ~4 us.

One read: CONVST pulse (all 8 track-and-holds sample at once), BUSY poll (bounded by
``BUSY_POLLS``), one ``SPI.readinto`` of 16 bytes into a preallocated buffer, and a viper
unpack from big-endian two's complement to offset binary words 0..65535 (0 V = 32768).

Two tick-context readers with the same result:
- ``adc_read`` (method): the lines through the port's ``Pin`` methods; any port.
- ``fast_reader(win, gpio)``: a viper closure that drives CONVST and CS and polls BUSY
  through the MCU's GPIO set / clear / input registers (``win``: a buffer over the GPIO
  register block, e.g. ``uctypes.bytearray_at``, made by the board HAL from its register
  data; ``gpio``: the three registers' word offsets in it), with the unpack inlined: one
  Python-level call per read (``SPI.readinto``) instead of seven. Timing it keeps by
  construction: CONVST high for a 4-pass spin (>= 12 core cycles: >= 80 ns at 150 MHz;
  AD7606 t2 >= 25 ns, and BUSY rises
  within t1 = 40 ns of the CONVST edge, so the poll never starts before BUSY is up), the
  BUSY poll bounded by ``FAST_BUSY_POLLS`` (>= 3 cycles a pass: >= 20 us at 150 MHz, t_CONV
  is 4.15 us max). The three lines must be GPIO 0..31 in SIO/GPIO function (Pin objects made
  here do that). Lines shared with another core's writes are safe: the set / clear
  registers are atomic.

RAM: 16 bytes of buffer, one ``array('I')`` of 14 words (the fast reader's registers, pin
masks, channel order and the BUSY timeout counter), the bound methods it keeps.
Tick-context cost: measured on the emulated core by ``v2g.targets.measure`` (README table);
the conversion (4.15 us) and 16 bytes at the SPI clock (10.24 us at 12.5 MHz) come on top.

Used by: boards/rp2, boards/esp32. Context: ``AD7606(...)`` at boot; ``adc_read`` in the
tick (no allocation, no floats, never raises by design).
"""

import time
from array import array

import micropython
from micropython import const

BUSY_POLLS = const(16)  # bound on the BUSY wait (~15-25 us); a conversion takes ~4 us
FAST_BUSY_POLLS = const(1000)  # the fast reader's bound (register reads: 20-40 us)
# words of the fast reader's state array
_IN = const(0)  # word offset of the GPIO input register in the window
_SET = const(1)  # ... of the GPIO output set register
_CLR = const(2)  # ... of the GPIO output clear register
_CV = const(3)  # CONVST pin mask
_CS = const(4)  # CS pin mask
_BUSY = const(5)  # BUSY pin mask
_TIMEOUTS = const(6)  # BUSY never fell within the bound
_ORDER = const(7)  # 7 words: AD7606 channel (0..7) of tick channel k
_WORDS = const(14)


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
        if "reset" in ext:  # the AD7606 needs a reset pulse after power-up
            rst = Pin(ext["reset"], Pin.OUT, value=1)
            time.sleep_us(1)
            rst.off()
        self._buf = bytearray(16)  # 8 channels x 16 bit, DOUTA order V1..V8
        self._order = bytearray(int(ch["pin"][1:]) - 1 for ch in adc)  # V1..V8 -> 0..7
        self._pins = (ext["convst"], ext["cs"], ext["busy"])
        self._st = array("I", range(_WORDS))
        for k in range(7):
            self._st[_ORDER + k] = self._order[k]
        self._st[_TIMEOUTS] = 0
        # BUSY never fell within the poll bound (both readers count here)
        self.timeouts = memoryview(self._st)[_TIMEOUTS:_TIMEOUTS + 1]

    def fast_reader(self, win, gpio):
        """The register-level reader (module docstring): ``win`` a buffer over the GPIO
        register block, ``gpio`` = word offsets of its input, output set and output clear
        registers (the bank holding CONVST, CS and BUSY). Raises ValueError for a line
        beyond GPIO 31. Context: boot."""
        st = self._st
        st[_IN], st[_SET], st[_CLR] = gpio
        for word, pin in zip((_CV, _CS, _BUSY), self._pins):
            if not 0 <= pin < 32:
                raise ValueError("ext_adc line GPIO %r is not in GPIO 0..31" % (pin,))
            st[word] = 1 << pin
        buf = self._buf
        readinto = self._readinto

        @micropython.viper
        def adc_read(raw):
            """Sample all channels at once; fill raw[0..6] (VA VB VC IA IB IC VDC)."""
            # tick context: no allocation, never raises (registers, one C call)
            s = ptr32(st)
            g = ptr32(win)
            gset = s[_SET]
            gclr = s[_CLR]
            gin = s[_IN]
            cv = s[_CV]
            g[gset] = cv  # rising edge: all 8 track-and-holds sample now
            n = 4
            while n:  # CONVST high >= t2; BUSY up within t1 before the poll
                n -= 1
            g[gclr] = cv
            busy = s[_BUSY]
            n = FAST_BUSY_POLLS
            while (g[gin] & busy) and n:
                n -= 1
            if not n:
                s[_TIMEOUTS] = s[_TIMEOUTS] + 1  # the words are the previous conversion's
            cs = s[_CS]
            g[gclr] = cs
            readinto(buf)
            g[gset] = cs
            b = ptr8(buf)
            r = ptr32(raw)
            k = 0
            while k < 7:
                j = s[_ORDER + k] << 1
                r[k] = ((b[j] << 8) | b[j + 1]) ^ 0x8000
                k += 1

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
