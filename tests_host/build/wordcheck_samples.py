"""Toy viper functions for ``tests_host/build/test_wordcheck.py``: fixtures, not firmware.

Each function is either clean (the word checker must pass it) or has exactly one of the
hazards the checker exists for: an intermediate beyond +/-2**30, a negative word read
through ``ptr32``/``ptr16`` (zero-extended on the 64-bit host), a constant that is not a
32-bit machine word, a shift count beyond the word, an unrepresentable store, a bad
index. Loaded through ``v2g.build.wordcheck.load_viper_module`` (which puts the ``micropython``
shim on ``sys.path``). Context: host tests only.
"""

# ptr16/ptr32 are viper builtins (installed by the shim on CPython): not undefined names.
# ruff: noqa: F821

from array import array

import micropython
from micropython import const

_GAIN = const(3)
_BIAS = const(1 << 20)  # stored-word bias: keeps signed state non-negative in its word
_MIN_WORD = const(-1073741824)  # -2**30, the lowest value the rule allows
_BIG = const(2147483648)  # 2**31: not a machine word on a 32-bit board
TABLE = array("H", (0, 100, 200, 65535))


@micropython.viper
def clean_filter(st: ptr32, x: int) -> int:
    """First-order low-pass, gain 3/8; the state word holds y + _BIAS."""
    y = st[0] - _BIAS
    y += ((x - y) * _GAIN) >> 3
    st[0] = y + _BIAS
    return y


@micropython.viper
def accumulate(st: ptr32, x: int):
    st[0] += x
    st[1] = st[1] | (x & 0xFF)


@micropython.viper
def mul_shift(a: int, b: int) -> int:
    return (a * b) >> 16


@micropython.viper
def read_signed(st: ptr32) -> int:
    return st[0] >> 1


@micropython.viper
def read_half(buf: ptr16, i: int) -> int:
    return buf[i]


@micropython.viper
def big_literal(x: int) -> int:
    return x & 0x80000000


@micropython.viper
def big_const(x: int) -> int:
    return x + _BIG


@micropython.viper
def min_const(x: int) -> int:
    if x < -1073741824:
        return _MIN_WORD
    return -x


@micropython.viper
def shift_far(x: int) -> int:
    return x << 40


@micropython.viper
def store_half(buf: ptr16, v: int):
    buf[0] = v


@micropython.viper
def index_at(st: ptr32, i: int) -> int:
    return st[i]


@micropython.viper
def div(a: int, b: int) -> int:
    return a // b + a % b


@micropython.viper
def table_sum(n: int) -> int:
    tab = ptr16(TABLE)
    s = 0
    for i in range(n):
        s += tab[i]
    return s


@micropython.viper
def scale(x: int) -> int:
    return (x * 3) >> 2


@micropython.viper
def scale_sum(st: ptr32, n: int) -> int:
    """Calls another viper function of this module: it must be instrumented too."""
    acc = 0
    for i in range(n):
        acc += int(scale(st[i]))  # a viper call returns an object: cast it
        st[i] = acc
    return acc


def plain_helper(x):
    """Not viper: runs as plain Python even inside the checker."""
    return x * 2**40
