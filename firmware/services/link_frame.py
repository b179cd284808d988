"""The link's byte layer: COBS framing and CRC-32, into preallocated buffers.

A frame on the wire is ``COBS(body) + b"\\x00"`` where ``body = header + payload +
CRC-32`` (see ``link_msgs`` and docs/link.md). COBS here is the basic method with the
same output as the ``cobs`` PyPI package (cobs-python): a block of 254 non-zero bytes at
the very end of the input gets no trailing ``0x01`` code byte.

- ``cobs_encode(src, n, dst)``: ``src[0:n]`` -> ``dst``; returns the encoded length, or -1
  when ``dst`` is smaller than ``max_encoded(n)``. Never writes outside ``dst``.
- ``cobs_decode(src, n, dst)``: ``src[0:n]`` -> ``dst`` (``dst`` may be ``src``: decoding in
  place is safe, the output index never passes the input index); returns the decoded
  length, -1 on a decode error (a zero byte inside, a block longer than the input) or -2
  when ``dst`` is smaller than ``n - 1``. Never writes outside ``dst``.
- ``crc32(buf, n)``: CRC-32 (IEEE 802.3, zlib's) of ``buf[0:n]``, 0 .. 2**32-1;
  ``put_crc(buf, n)`` appends it little-endian at ``buf[n:n+4]`` and returns ``n + 4``;
  ``crc_ok(buf, n)`` checks the last four bytes of ``buf[0:n]`` against the rest.

CRC backend: ``binascii.crc32`` where the port has it (the unix runtime and the
rp2/stm32/esp32 ports do, as does CPython), else a 256-entry table (1 KB, built on first
use) walked by a viper loop. The viper code keeps the CRC in a ``uint`` word and builds
0xFFFFFFFF from two 16-bit halves, so it gives the same bits on a 32-bit board (machine
words) as on the 64-bit unix runtime (a ``ptr32`` load zero-extends there, which is what
unsigned arithmetic wants) and under CPython (the shim makes viper plain Python).

Bounds: the viper loops index raw pointers, so every write is checked against the
capacity first. Under CPython the same source indexes the bytearray itself, where an
out-of-range index would raise: the host fuzz runs the decoder there and on the unix
runtime.

Allocation: the COBS functions and the table CRC allocate nothing; the binascii path
allocates one memoryview slice per call and, on a 32-bit board, the returned int when it
is >= 2**30 (a 16-byte long int). Cost (x86-64 unix runtime, viper): ~20 ns per byte
encode or decode.
Context: supervisor / services (asyncio). Not for the tick.
"""

from array import array

import micropython

try:
    from binascii import crc32 as _binascii_crc32
except ImportError:  # a port built without it: the table below stands in
    _binascii_crc32 = None

DELIMITER = 0


def max_encoded(n):
    """Worst-case COBS length of ``n`` bytes (one code byte per 254 bytes, plus one);
    the delimiter is not included."""
    return n + n // 254 + 1


@micropython.viper
def _encode(src: ptr8, n: int, dst: ptr8, cap: int) -> int:
    if n + n // 254 + 1 > cap:
        return -1
    code_i = 0
    o = 1
    code = 1
    i = 0
    while i < n:
        b = src[i]
        i += 1
        if b == 0:
            dst[code_i] = code
            code_i = o
            o += 1
            code = 1
        else:
            dst[o] = b
            o += 1
            code += 1
            if code == 0xFF and i < n:  # a full block, and more input follows
                dst[code_i] = code
                code_i = o
                o += 1
                code = 1
    dst[code_i] = code
    return o


@micropython.viper
def _decode(src: ptr8, n: int, dst: ptr8, cap: int) -> int:
    if n > cap + 1:
        return -2
    i = 0
    o = 0
    while i < n:
        code = src[i]
        if code == 0:
            return -1
        i += 1
        end = i + code - 1
        if end > n:
            return -1  # the block runs past the frame
        while i < end:
            b = src[i]
            if b == 0:
                return -1
            dst[o] = b  # o < i <= n - 1 < cap + 1 here
            o += 1
            i += 1
        if code < 0xFF and i < n:
            dst[o] = 0
            o += 1
    return o


def cobs_encode(src, n, dst):
    """``src[0:n]`` -> ``dst``; encoded length, or -1 when ``dst`` is too small."""
    if n < 0 or n > len(src):
        return -1
    return _encode(src, n, dst, len(dst))


def cobs_decode(src, n, dst):
    """``src[0:n]`` -> ``dst`` (may be ``src``); decoded length, -1 decode error, -2 no room."""
    if n < 0 or n > len(src):
        return -1
    return _decode(src, n, dst, len(dst))


# ---- CRC-32 ----

_table = None


def crc_table():
    """The 256-entry reflected CRC-32 table (polynomial 0xEDB88320), built once (1 KB)."""
    global _table
    if _table is None:
        t = array("I", bytes(1024))
        poly = (0xEDB8 << 16) | 0x8320
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ poly if c & 1 else c >> 1
            t[i] = c
        _table = t
    return _table


@micropython.viper
def _crc_words(buf: ptr8, start: int, end: int, crc: uint, table: ptr32) -> uint:
    m = (uint(0xFFFF) << 16) | uint(0xFFFF)
    c = crc ^ m
    i = start
    while i < end:
        c = uint(table[int((c ^ uint(buf[i])) & 0xFF)]) ^ (c >> 8)
        i += 1
    return c ^ m


@micropython.viper
def _crc_check_words(buf: ptr8, n: int, table: ptr32) -> int:
    m = (uint(0xFFFF) << 16) | uint(0xFFFF)
    c = m
    i = 0
    end = n - 4
    while i < end:
        c = uint(table[int((c ^ uint(buf[i])) & 0xFF)]) ^ (c >> 8)
        i += 1
    c = c ^ m
    got = uint(buf[end]) | (uint(buf[end + 1]) << 8) | (uint(buf[end + 2]) << 16) | (
        uint(buf[end + 3]) << 24)
    if c == got:
        return 1
    return 0


def crc32_table(buf, n, crc=0):
    """CRC-32 of ``buf[0:n]`` by the table (continuing from ``crc``)."""
    return _crc_words(buf, 0, n, crc, crc_table())


def crc32_binascii(buf, n, crc=0):
    """CRC-32 of ``buf[0:n]`` by ``binascii.crc32`` (ImportError-free: None if absent)."""
    if _binascii_crc32 is None:
        return None
    return _binascii_crc32(memoryview(buf)[:n], crc)


def crc32(buf, n):
    """CRC-32 of ``buf[0:n]``, 0 .. 2**32-1 (binascii where present, else the table)."""
    if _binascii_crc32 is not None:
        return _binascii_crc32(memoryview(buf)[:n])
    return _crc_words(buf, 0, n, 0, crc_table())


def put_crc(buf, n):
    """Append the CRC of ``buf[0:n]`` little-endian at ``buf[n:n+4]``; returns ``n + 4``."""
    c = crc32(buf, n)
    buf[n] = c & 0xFF
    buf[n + 1] = (c >> 8) & 0xFF
    buf[n + 2] = (c >> 16) & 0xFF
    buf[n + 3] = (c >> 24) & 0xFF
    return n + 4


def crc_ok(buf, n):
    """True when ``buf[0:n]`` ends with the little-endian CRC-32 of what precedes it."""
    if n < 4 or n > len(buf):
        return False
    if _binascii_crc32 is None:
        return _crc_check_words(buf, n, crc_table()) == 1
    c = crc32(buf, n - 4)
    return (buf[n - 4] == c & 0xFF and buf[n - 3] == (c >> 8) & 0xFF
            and buf[n - 2] == (c >> 16) & 0xFF and buf[n - 1] == (c >> 24) & 0xFF)


def crc_ok_table(buf, n):
    """``crc_ok`` by the viper table, whatever the port has (tests run both)."""
    if n < 4 or n > len(buf):
        return False
    return _crc_check_words(buf, n, crc_table()) == 1


@micropython.viper
def gather(src: ptr8, i: int, n: int, dst: ptr8, d: int, cap: int) -> int:
    """Copy ``src[i:]`` into ``dst[d:]`` up to the first zero byte or ``n``; returns the
    index in ``src`` where it stopped (the zero's index, or ``n``). Bytes that would land
    at or past ``cap`` are not written; the caller sees the overflow as
    ``d + (stop - i) > cap``. Allocates nothing."""
    while i < n:
        b = src[i]
        if b == 0:
            return i
        if d < cap:
            dst[d] = b
        d += 1
        i += 1
    return i


@micropython.viper
def copy(src: ptr8, dst: ptr8, n: int):
    """``dst[0:n] = src[0:n]`` without allocating (caller checks both lengths)."""
    i = 0
    while i < n:
        dst[i] = src[i]
        i += 1
