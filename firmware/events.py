"""Fault table and the in-memory event journal.

The fault table is the one list of fault codes: code, name, severity, action, operator
text. Event kinds are the ones scenario results and logs use (docs/formats.md section 2): lock,
unlock, trip, fault, clear, state, derate, wdt_reset, setpoint_accepted,
setpoint_rejected, setpoint_duplicate.

``Journal`` keeps the newest events in a ring preallocated at boot for the supervisor, the status
command and the scenario runner; the persistent log on flash builds on it.

Context: supervisor (allocates; never the tick).
"""

from array import array

# severity
INFO = "INFO"
WARN = "WARN"
ERROR = "ERROR"

# action: what the supervisor does when the fault is raised
CEASE = "cease"  # stop energizing (PWM off), may re-enter when the cause clears
BLOCK = "block"  # do not energize until the cause clears
LOCKOUT = "lockout"  # stay de-energized until an operator clears it
REPORT = "report"  # record only

# code -> (name, severity, action, operator text)
FAULTS = {
    "0x07": ("GRID_INTEGRITY", ERROR, BLOCK, "Grid Integrity Failure"),
    "0x10": ("PLL_LOSS_OF_LOCK", WARN, CEASE, "PLL lost lock on the grid voltage"),
    "0x21": ("OVER_CURRENT", ERROR, CEASE, "Instantaneous over-current trip"),
    "0x22": ("DC_OVER_VOLTAGE", ERROR, CEASE, "DC-link over-voltage trip"),
    "0x2F": ("EXTERNAL_TRIP", ERROR, CEASE, "Trip requested by the supervisor"),
    "0x30": ("CONFIG_REJECTED", WARN, REPORT, "Config rejected, last good config in use"),
    "0x31": ("PRECHARGE_TIMEOUT", ERROR, LOCKOUT, "DC-link pre-charge timed out"),
    "0x32": ("CONTACTOR_STUCK", ERROR, LOCKOUT, "DC contactor not following its command"),
    "0x49": ("ISLAND", ERROR, CEASE, "Unintentional island detected"),
    "0x60": ("WATCHDOG_RESET", WARN, REPORT, "Controller restarted by the hardware watchdog"),
    "0x61": ("WATCHDOG_LOCKOUT", ERROR, LOCKOUT,
             "Repeated watchdog resets: locked out until an operator clears it"),
    "0x62": ("TICK_OVERRUN", WARN, REPORT, "Control tick overran its period repeatedly"),
    # signed updates (bootslot, services/update.py, services/lockdown.py)
    "0x70": ("UPDATE_REVERTED", WARN, REPORT,
             "Firmware trial not confirmed: previous firmware restored"),
    "0x71": ("UPDATE_REJECTED", WARN, REPORT,
             "Signed update or signed config refused (signature, board, counter, files)"),
    "0x72": ("FIRMWARE_FALLBACK", ERROR, REPORT,
             "Firmware slot inconsistent: booted the last confirmed firmware"),
    # raised by the communication link (ISO 15118 negotiation on the comm controller)
    "V2G-502": ("PACKET_LOSS", WARN, BLOCK,
                "Packet-loss threshold violated during ISO 15118 negotiation"),
}

def _merge_thermal():
    import thermal

    for code, row in thermal.FAULTS.items():
        FAULTS.setdefault(code, row)


_merge_thermal()

KINDS = ("lock", "unlock", "trip", "fault", "clear", "state", "derate", "wdt_reset",
         "setpoint_accepted", "setpoint_rejected", "setpoint_duplicate")


def code_hex(code):
    """Fault code int -> its table key, e.g. 7 -> "0x07", 0x21 -> "0x21"."""
    return "0x%02X" % code


def fault_name(code):
    entry = FAULTS.get(code if isinstance(code, str) else code_hex(code))
    return entry[0] if entry else "UNKNOWN"


class Journal:
    """The newest ``capacity`` events ``(t_ms, kind, code, name, detail)``, oldest first,
    in a ring preallocated at boot: a full journal holds no more RAM than an empty one
    and leaves no trail of small blocks behind (the persistent log on flash keeps the
    history). Each slot packs code, name and detail as UTF-8 into ``SLOT`` bytes (longer
    text is cut there; listeners get the event whole). ``items`` (a new list) and
    iteration rebuild the tuples: supervisor and host only."""

    SLOT = 96  # bytes of code + name + detail per event, 3 length bytes included

    def __init__(self, capacity=64):
        self.capacity = capacity
        # big blocks first and without temporaries (a fragmented heap may not have
        # room for a copy beside them): bytearray(n) is allocated zeroed in place
        self._text = bytearray(capacity * self.SLOT)
        self._t = array("i", range(capacity))  # sized from len(range): no temporary
        self._kind = bytearray(capacity)
        self._next = 0
        self._n = 0
        self.dropped = 0
        self.listeners = []

    def add(self, t_ms, kind, code="", name="", detail=""):
        ev = (t_ms, kind, code, name, detail)
        i = self._next
        if self._n >= self.capacity:
            self.dropped += 1
        else:
            self._n += 1
        self._next = (i + 1) % self.capacity
        self._t[i] = int(t_ms) & 0x3FFFFFFF
        self._kind[i] = KINDS.index(kind) if kind in KINDS else 255
        buf = self._text
        o = i * self.SLOT
        end = o + self.SLOT
        for field in (code, name, detail if kind in KINDS else kind + " " + detail):
            b = str(field).encode()[:max(0, min(255, end - o - 1))]
            buf[o] = len(b)
            buf[o + 1:o + 1 + len(b)] = b
            o += 1 + len(b)
        for fn in self.listeners:
            fn(ev)
        return ev

    def fault(self, t_ms, code, detail=""):
        return self.add(t_ms, "fault", code, fault_name(code), detail)

    def __len__(self):
        return self._n

    def _get(self, k):
        """The k-th stored event, 0 = the oldest."""
        i = (self._next - self._n + k) % self.capacity
        buf = self._text
        o = i * self.SLOT
        out = []
        for _ in range(3):
            n = buf[o]
            out.append(bytes(buf[o + 1:o + 1 + n]).decode())
            o += 1 + n
        k = self._kind[i]
        kind = KINDS[k] if k < len(KINDS) else ""
        if not kind:  # a kind outside KINDS rides in front of the detail
            kind, _, out[2] = out[2].partition(" ")
        return (self._t[i], kind, out[0], out[1], out[2])

    def __iter__(self):
        for k in range(self._n):
            yield self._get(k)

    @property
    def items(self):
        return [self._get(k) for k in range(self._n)]


def log_line(ev, iso_time):
    """One protocol-log line: ``2026-11-25T10:01:02Z ERROR 0x07 Grid Integrity Failure
    v_a=1.12pu``; non-fault events read ``... INFO state ENERGIZED``."""
    t_ms, kind, code, name, detail = ev
    if kind in ("fault", "trip") and code in FAULTS:
        _, severity, _, text = FAULTS[code]
        line = "%s %s %s %s" % (iso_time, severity, code, text)
    elif kind == "trip":
        line = "%s ERROR %s %s" % (iso_time, code, name)
    else:
        line = "%s INFO %s %s" % (iso_time, kind, name or code)
    return line + (" " + detail if detail else "")
