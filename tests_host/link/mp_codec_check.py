"""The board codec (``services.link_frame``) over vectors on stdin, one per line:
``E hex`` -> COBS-encoded hex; ``D hex`` -> decoded hex, or ``ERR code``; ``C hex`` -> the
CRC-32 by the default backend, the binascii one and the table (decimal; ``-`` where the
port has no binascii). One output line per input line. Runs on MicroPython and CPython.
"""

import sys

from services import link_frame as lf

try:
    from binascii import hexlify, unhexlify
except ImportError:  # pragma: no cover
    from ubinascii import hexlify, unhexlify

inp = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin
class _Out:
    def append(self, s):
        sys.stdout.write(s + "\n")


out = _Out()
while True:
    line = inp.readline().rstrip(b"\n")
    if not line:
        break
    op = line[:1]
    data = unhexlify(line[2:])
    if op == b"E":
        dst = bytearray(lf.max_encoded(len(data)))
        n = lf.cobs_encode(data, len(data), dst)
        out.append(hexlify(dst[:n]).decode() if n >= 0 else "ERR %d" % n)
    elif op == b"D":
        buf = bytearray(data)
        n = lf.cobs_decode(buf, len(buf), buf)  # in place, as the link does
        out.append(hexlify(buf[:n]).decode() if n >= 0 else "ERR %d" % n)
    elif op == b"C":
        b = lf.crc32_binascii(data, len(data))
        out.append("%d %s %d" % (lf.crc32(data, len(data)), "-" if b is None else b,
                                 lf.crc32_table(data, len(data))))
