"""Generate ``firmware/tables.py``: the integer lookup tables of the fixed-point hot paths.

The tables are written out as integer literals instead of being computed at import on the
board, because 32-bit boards have single-precision ``math.sin``: rounding there could differ
by one LSB from the host, and the project promises bit-identical results on every runtime.

Usage (host): ``python -m v2g.build.gen_tables > firmware/tables.py``; ``tests_host`` checks that
the committed file equals the generator's output.
"""

import math

SIN_BITS = 9  # 512 intervals per turn, linear interpolation between them
SIN_ONE = 1 << 14  # Q14 amplitude
SIN_BIAS = 1 << 14  # stored as unsigned 'H': value + bias in [0, 32768]
TURN_BITS = 28  # angle unit: 2**28 per turn
CORDIC_STEPS = 18


def sin_table():
    n = 1 << SIN_BITS
    return [SIN_BIAS + round(SIN_ONE * math.sin(2 * math.pi * k / n)) for k in range(n + 1)]


def atan_table():
    return [round(math.atan(2.0**-i) / (2 * math.pi) * (1 << TURN_BITS))
            for i in range(CORDIC_STEPS)]


def _wrap(values, per_line=12):
    rows = []
    for i in range(0, len(values), per_line):
        rows.append("    " + ", ".join(str(v) for v in values[i:i + per_line]) + ",")
    return "\n".join(rows)


def render():
    return f'''"""Integer lookup tables for the fixed-point hot paths (generated: do not edit).

Regenerate with ``python -m v2g.build.gen_tables > firmware/tables.py``.

SIN_Q14_B: sin over one turn at {1 << SIN_BITS} intervals (+1 closing entry), Q14
(16384 = 1.0) plus a bias of {SIN_BIAS} so every entry is a non-negative 'H' word: viper
``ptr16`` loads zero-extend on 64-bit hosts, so the table must hold no negative values.
ATAN_T28: atan(2**-i) for the CORDIC, in angle units of 2**{TURN_BITS} per turn.
Context: imported once at boot; read-only afterwards (tick-safe).
"""

from array import array

from micropython import const

SIN_BITS = const({SIN_BITS})
SIN_BIAS = const({SIN_BIAS})
CORDIC_STEPS = const({CORDIC_STEPS})

SIN_Q14_B = array("H", (
{_wrap(sin_table())}
))

ATAN_T28 = array("i", (
{_wrap(atan_table(), 6)}
))
'''


if __name__ == "__main__":
    print(render(), end="")
