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

RAM: 16 + 7 bytes of buffers, one ``array('i')`` counter, the bound methods it keeps.
Tick-context cost, ESTIMATED (not measured on silicon): 2 pin writes, the BUSY poll over
the conversion, 16 bytes at the SPI clock (10 us at 12.5 MHz), the unpack.

Used by: boards/rp2, boards/esp32. Context: ``AD7606(...)`` at boot; ``adc_read`` in the
tick (no allocation, no floats, never raises by design).
"""

import time
from array import array

import micropython
from micropython import const

BUSY_POLLS = const(16)  # bound on the BUSY wait (~15-25 us); a conversion takes ~4 us


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
        self.timeouts = array("i", [0])  # BUSY never fell within the poll bound

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
