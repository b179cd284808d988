"""DC contactor and pre-charge relay supervision: commands, aux feedback, stuck and welded
detection, and the DC-link zero-energy check.

Status codes (docs/formats.md section 8, Modbus holding register 40001):
    0 STUCK        welded (aux still closed OPEN_TIMEOUT_MS after an open command) or not
                   following a close command within CLOSE_TIMEOUT_MS
    1 OPEN         main and pre-charge open
    2 CLOSED       main closed, aux confirms
    3 PRECHARGING  pre-charge relay closed, main open (or main commanded, aux not yet)
    4 OPENING      open commanded, aux not yet open (inside OPEN_TIMEOUT_MS)
STUCK latches until ``clear()`` (an operator's decision: the coil actuator needs a look).

Zero-energy: both open, aux open and the DC link below ZERO_ENERGY_V (60 V): only then is
it safe to handle the DC side (lock-out / tag-out).

Context: supervisor.
"""

STUCK = 0
OPEN = 1
CLOSED = 2
PRECHARGING = 3
OPENING = 4
NAMES = ("STUCK", "OPEN", "CLOSED", "PRECHARGING", "OPENING")

OPEN_TIMEOUT_MS = 500  # a contactor opens in tens of ms: 0.5 s without aux is a weld
CLOSE_TIMEOUT_MS = 500
ZERO_ENERGY_V = 60.0


class Contactor:
    def __init__(self, hal):
        self.hal = hal
        self.main = 0
        self.pre = 0
        self.changed_ms = 0
        self.stuck = False
        self.stuck_detail = ""
        self.status = OPEN
        self.zero_energy = False

    def command(self, now_ms, main_on, pre_on):
        main_on = 1 if main_on else 0
        pre_on = 1 if pre_on else 0
        if main_on != self.main:
            self.changed_ms = now_ms
        self.main = main_on
        self.pre = pre_on
        self.hal.contactor(main_on, pre_on)

    def step(self, now_ms, v_dc_v):
        """Update the status from the aux contact and the DC link. Returns a detail
        string the first time the contactor is found stuck, else None."""
        aux = self.hal.contactor_aux()
        since = now_ms - self.changed_ms
        newly = None
        if self.main:
            if aux:
                status = CLOSED
            elif since > CLOSE_TIMEOUT_MS:
                status = STUCK
                newly = "not closing: aux open %d ms after the close command" % since
            else:
                status = PRECHARGING
        elif aux:
            if since > OPEN_TIMEOUT_MS:
                status = STUCK
                newly = "welded: aux closed %d ms after the open command, v_dc=%.0fV" % (
                    since, v_dc_v)
            else:
                status = OPENING
        else:
            status = PRECHARGING if self.pre else OPEN
        if status == STUCK and not self.stuck:
            self.stuck = True
            self.stuck_detail = newly
        else:
            newly = None
        self.status = STUCK if self.stuck else status
        self.zero_energy = (not self.main and not self.pre and not aux
                            and v_dc_v < ZERO_ENERGY_V)
        return newly

    def clear(self, now_ms):
        """Operator clear after inspection; the next step re-evaluates from scratch."""
        self.stuck = False
        self.stuck_detail = ""
        self.changed_ms = now_ms
