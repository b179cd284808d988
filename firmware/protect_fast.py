"""Fast protection checked inside the tick: instantaneous over-current and DC-link
over-voltage. A trip latches: the first cause and its measured value stay recorded
until the supervisor clears the latch, and the tick keeps the PWM off meanwhile.

The tick's fast IEEE 1547 regions (OV2, UV2, OF2, UF2) are timed in ``grid_measure`` and
latch through this module's latch; the slower regions are timed by the supervisor
(``grid_protect``), which latches through ``trip()``.

Units: Q12 per unit (phase currents of rated peak current, DC link of nominal phase
peak voltage). Context: ``check`` tick (viper, never raises); the rest supervisor.
"""

from array import array

import micropython
from micropython import const

OC_TRIP_Q12 = const(0)  # instantaneous phase-current trip level, pu
VDC_TRIP_Q12 = const(1)  # DC-link over-voltage trip level, pu
LATCH = const(2)  # 0 = clear, else the fault code of the first trip
VALUE_B = const(3)  # measured value that tripped, Q12 + _BIAS
COUNT = const(4)  # trips since boot
WORDS = const(8)

# Fault codes raised here (the supervisor's fault table names them).
OVER_CURRENT = const(0x21)
DC_OVER_VOLTAGE = const(0x22)
EXTERNAL = const(0x2F)  # latched by the supervisor through trip()

_BIAS = const(1 << 29)


def new_state():
    return array("i", bytes(4 * WORDS))


def init(prot, oc_trip_q12, vdc_trip_q12):
    for i in range(WORDS):
        prot[i] = 0
    prot[OC_TRIP_Q12] = oc_trip_q12
    prot[VDC_TRIP_Q12] = vdc_trip_q12
    prot[VALUE_B] = _BIAS


def trip(prot, code, value_q12=0):
    """Latch a trip from outside the tick (first cause wins). Context: supervisor."""
    if prot[LATCH] == 0:
        prot[VALUE_B] = value_q12 + _BIAS
        prot[LATCH] = code
        prot[COUNT] += 1


def clear(prot):
    """Release the latch; the caller has made sure the cause is gone. Context: supervisor."""
    prot[LATCH] = 0
    prot[VALUE_B] = _BIAS


def latched(prot):
    """(code, value_q12) of the latched trip, or (0, 0)."""
    return prot[LATCH], prot[VALUE_B] - _BIAS


@micropython.viper
def check(prot: ptr32, ia: int, ib: int, ic: int, v_dc: int) -> int:
    """Return the latched fault code (0 = healthy), latching a new one first if a phase
    current or the DC link is beyond its trip level. Context: tick."""
    code = prot[LATCH]
    if code != 0:
        return code
    lim = prot[OC_TRIP_Q12]
    value = 0
    if ia > lim or ia < -lim:
        value = ia
        code = OVER_CURRENT
    elif ib > lim or ib < -lim:
        value = ib
        code = OVER_CURRENT
    elif ic > lim or ic < -lim:
        value = ic
        code = OVER_CURRENT
    elif v_dc > prot[VDC_TRIP_Q12]:
        value = v_dc
        code = DC_OVER_VOLTAGE
    if code != 0:
        prot[VALUE_B] = value + _BIAS
        prot[LATCH] = code
        prot[COUNT] = prot[COUNT] + 1
    return code
