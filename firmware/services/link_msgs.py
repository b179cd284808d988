"""The link's message table: the one list of message types, ids and field layouts.

The board (``services.link``) and the host (``v2g.link``) both read this file; nothing
else restates a message id, a field or a struct format. ``docs/link.md`` carries a copy of
the table generated from it (``python -m v2g.link.doc``).

Frame body (before COBS, see docs/link.md)::

    offset 0  u8   version    protocol version (VERSION; HELLO frames always 1)
           1  u8   type       message id, below
           2  u16  seq        sender's sequence number (reliable types; else 0)
           4  u16  ack        last in-order reliable seq received from the peer
           6  u16  length     payload length in bytes, 0 .. MAX_PAYLOAD
           8  ...  payload    ``length`` bytes, the type's fields (little-endian)
    8+length u32   crc        CRC-32 (zlib's) of bytes 0 .. 8+length-1, little-endian

Each row of ``MESSAGES``: ``(id, name, reliable, direction, fmt, fields, tail, doc)``:
- ``reliable``: 1 = sequenced, acknowledged and retransmitted, applied exactly once and in
  order; 0 = fire and forget (the newest one wins: images, heartbeats, acks);
- ``direction``: "h2b" (daemon -> board), "b2h" or "both";
- ``fmt``: ``struct`` format of the fixed part ("<" little-endian, no padding);
- ``fields``: names of the fixed part, units in the names;
- ``tail``: what may follow the fixed part: None (nothing: the length must equal
  ``calcsize(fmt)``), "text" (UTF-8, up to the end), "bytes" (opaque, up to the end), or
  a struct format repeated to the end (CONFIG's ``(pid, value)`` entries).
Ids are stable forever; a new field is a new message type or a new protocol version.

Ranges: ids 0x01-0x0F session, 0x10-0x1F state mirror, 0x20-0x2F commands, 0x30-0x3F
results, 0x40-0x4F energy records, 0x60-0x6F service (the signed-update issue's groups).

Context: board (services, supervisor) and host. Imports ``struct`` only.
"""

import struct

# 2: REGISTER_IMAGE gained measured P/Q, per-phase V, current, PF, tick cost and the
# board's link figures (appended); the one table has one image layout, so 1 is dropped
# 3: ENERGY_RECORD gained seq_last, kind, flags and the EV SoC (the energy journal)
# 4: EV_SOC (the car's state of charge for the journal's interval start/end SoC)
# 5: REGISTER_IMAGE gained the energy counters' mWh below the whole Wh (appended), so the
# daemon's transaction energy is the firmware's to the mWh, not estimated between images
VERSION = 5  # the version this firmware speaks by default
VERSION_MIN = 5  # the oldest version it still speaks
VERSION_MAX = 5
HEADER_FMT = "<BBHHH"
HEADER_SIZE = 8
CRC_SIZE = 4
MAX_PAYLOAD = 480  # fits a CONFIG with every parameter (6 bytes each) and update chunks
MAX_BODY = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE  # 492
SEQ_MOD = 65536
SEQ_HALF = 32768  # seq ahead of the expected one by less than this: a gap; else a duplicate

# message ids
HELLO = 0x01
HELLO_ACK = 0x02
HEARTBEAT = 0x03
ACK = 0x04
REGISTER_IMAGE = 0x10
SETPOINT = 0x20
CONFIG = 0x21
EV_LIMITS = 0x22
SESSION = 0x23
EV_SOC = 0x24
RESULT = 0x30
ENERGY_RECORD = 0x40
ENERGY_ACK = 0x41
SERVICE_REQ = 0x60
SERVICE_RSP = 0x61

# RESULT status
OK = 0  # applied (a setpoint: accepted)
REJECTED = 1  # valid, but refused (out of range, config invalid); nothing changed
DUPLICATE = 2  # an id already applied (setpoint idempotency); nothing changed
MALFORMED = 3  # the payload did not match the table; nothing changed
UNSUPPORTED = 4  # no handler on this board; nothing changed
STATUS_NAMES = ("OK", "REJECTED", "DUPLICATE", "MALFORMED", "UNSUPPORTED")

# SESSION actions
SESSION_STOP = 0  # cease power and open the DC contactors, as a session end does
SESSION_START = 1

SOC_UNKNOWN = 0xFFFF  # EV_SOC and ENERGY_RECORD: state of charge not known

# supervisor states, in register-image order (index = the ``state`` field)
STATES = ("BOOT", "WAIT_GRID", "SYNCING", "ENTER_SERVICE_DELAY", "ENERGIZED", "DERATED",
          "TRIPPED", "FAULT_LOCKOUT")

# register-image ``flags`` bits
FLAG_LOCKED = 1  # PLL locked
FLAG_PERMIT = 2  # service permitted
FLAG_CEASED = 4  # momentary cessation
FLAG_LINK_DEGRADED = 8  # frame loss over the window above the threshold (V2G-502)
FLAG_LINK_LOST = 16  # heartbeat lost: export ceased, contactors opened

# link counters, in HEARTBEAT order (each side reports its own)
COUNTERS = ("rx_frames", "tx_frames", "crc_errors", "malformed", "unknown",
            "retransmissions", "duplicates", "out_of_order", "lost", "hb_gaps")

REGISTER_FIELDS = (
    # (name, struct code, doc)
    ("t_ms", "I", "board uptime, ms (wraps at 2**32)"),
    ("state", "B", "supervisor state, index into STATES"),
    ("contactor_status", "B", "0 STUCK, 1 OPEN, 2 CLOSED, 3 PRECHARGING, 4 OPENING"),
    ("derate_pct", "B", "thermal derating in force, % of rated (0 = none)"),
    ("flags", "B", "bit 0 PLL locked, 1 permitted, 2 ceased, 3 link degraded, 4 link lost"),
    ("f_mhz", "i", "grid frequency from the PLL, mHz"),
    ("v_min_mpu", "H", "lowest phase voltage, 0.001 pu of nominal"),
    ("v_max_mpu", "H", "highest phase voltage, 0.001 pu of nominal"),
    ("v_dc_dv", "H", "DC-link voltage, 0.1 V"),
    ("p_cmd_w", "i", "active power command in force, W (> 0 charging the EV)"),
    ("q_cmd_var", "i", "reactive power command in force, var (> 0 absorbing)"),
    ("setpoint_id", "I", "id of the setpoint in force (0 = none)"),
    ("t_module_dc", "h", "power-module temperature, 0.1 degC"),
    ("energy_import_wh", "I", "energy imported (EV charging) since boot, Wh"),
    ("energy_export_wh", "I", "energy exported (V2G) since boot, Wh"),
    ("ev_max_charge_w", "i", "EV limit in force: charge, W"),
    ("ev_max_discharge_w", "i", "EV limit in force: discharge, W"),
    ("fault_count", "H", "faults raised since boot (wraps at 2**16)"),
    ("last_fault", "8s", "code of the newest fault, ASCII (b'0x07', b'V2G-502'), 0-padded"),
    ("tick_count", "I", "control ticks since boot (wraps at 2**32)"),
    ("tick_overruns", "I", "tick overruns since boot"),
    # version 2
    ("p_meas_w", "i", "active power measured by the tick (dq), W (> 0 charging the EV)"),
    ("q_meas_var", "i", "reactive power measured by the tick (dq), var (> 0 absorbing)"),
    ("v_a_dv", "H", "phase A fundamental RMS voltage (grid_measure), 0.1 V"),
    ("v_b_dv", "H", "phase B fundamental RMS voltage, 0.1 V"),
    ("v_c_dv", "H", "phase C fundamental RMS voltage, 0.1 V"),
    ("i_ca", "H", "RMS phase current, 0.01 A: the positive-sequence fundamental the tick "
     "measures (dq); the tick has no per-phase current magnitude"),
    ("pf_milli", "h", "power factor P/S of the measured power, 0.001, sign of p_meas_w; "
     "-32768 when S is below 0.1 % of rated"),
    ("tick_cost_us", "H", "run time of the last tick, us"),
    ("tick_cost_max_us", "H", "longest tick since boot, us"),
    ("tick_period_us", "H", "tick period, us"),
    ("link_state", "B", "the board's link state: 0 DOWN, 1 UP, 2 DEGRADED, 3 LOST"),
    ("link_crc_errors", "H", "frames from the daemon dropped for a bad CRC (wraps at 2**16)"),
    ("link_lost", "H", "frames from the daemon estimated lost (wraps at 2**16)"),
    ("link_hb_gaps", "H", "heartbeat gaps seen by the board (wraps at 2**16)"),
    # version 5
    ("energy_import_sub_mwh", "H", "energy imported below the whole Wh, mWh 0..999: the "
     "board's counter is energy_import_wh x 1000 + this"),
    ("energy_export_sub_mwh", "H", "energy exported below the whole Wh, mWh 0..999"),
)
PF_NONE = -32768  # pf_milli when the apparent power is too small for a power factor

MESSAGES = (
    (HELLO, "HELLO", 0, "h2b", "<BBI", ("version_min", "version_max", "nonce"), None,
     "daemon opens a session: versions it speaks, a nonce the answer echoes; a new nonce "
     "resets both sides' sequence numbers"),
    (HELLO_ACK, "HELLO_ACK", 0, "b2h", "<BBBBIH",
     ("version", "status", "version_min", "version_max", "nonce", "max_payload"), "text",
     "board answers HELLO: chosen version (0 = none in common, status 1), its range, the "
     "nonce, its payload limit; the text names the firmware"),
    (HEARTBEAT, "HEARTBEAT", 0, "both", "<I" + "I" * len(COUNTERS), ("t_ms",) + COUNTERS,
     None, "sent every heartbeat period by both sides: sender's clock and link counters "
     "(the receiver estimates frame loss from the peer's tx_frames)"),
    (ACK, "ACK", 0, "both", "<", (), None,
     "nothing but the header's ack: sent at once for every reliable frame received"),
    (REGISTER_IMAGE, "REGISTER_IMAGE", 0, "b2h", "<" + "".join(f[1] for f in REGISTER_FIELDS),
     tuple(f[0] for f in REGISTER_FIELDS), None,
     "every measurement, state, fault and counter the daemon mirrors, each supervisor "
     "image period (REGISTER_FIELDS)"),
    (SETPOINT, "SETPOINT", 1, "h2b", "<Iii", ("setpoint_id", "p_w", "q_var"), None,
     "power setpoint into the supervisor's idempotent path (an id seen before changes "
     "nothing); RESULT OK, REJECTED or DUPLICATE"),
    (CONFIG, "CONFIG", 1, "h2b", "<B", ("count",), "<Hi",
     "config change: count entries (parameter id, value held as an integer in "
     "10**-decimals of the unit, as params.TABLE says); validated on the board by the "
     "parameter table, applied all or nothing; RESULT with the errors as text"),
    (EV_LIMITS, "EV_LIMITS", 1, "h2b", "<iiH",
     ("max_charge_w", "max_discharge_w", "soc_min_permille"), None,
     "limits the EV negotiated (ISO 15118 on the daemon), W and 0.1 % state of charge"),
    (SESSION, "SESSION", 1, "h2b", "<BI", ("action", "session_id"), None,
     "session start (1) or stop (0: cease power, open the DC contactors)"),
    (EV_SOC, "EV_SOC", 1, "h2b", "<H", ("soc_pm",), None,
     "the EV's state of charge as the daemon knows it (ISO 15118), permille, 0xFFFF = "
     "unknown; the energy journal's interval start/end SoC"),
    (RESULT, "RESULT", 1, "b2h", "<HBB", ("request_seq", "request_type", "status"), "text",
     "the board's answer to a command: its seq and type, status (OK, REJECTED, DUPLICATE, "
     "MALFORMED, UNSUPPORTED) and a reason"),
    (ENERGY_RECORD, "ENERGY_RECORD", 1, "b2h", "<IIIIIIIBBHH",
     ("record_no", "session_id", "t_start_s", "t_end_s", "import_mwh", "export_mwh",
      "seq_last", "kind", "flags", "soc_start_pm", "soc_end_pm"), None,
     "one record of the board's energy journal (kind 0 interval, 1 session start, 2 session "
     "end; a merged interval covers record_no..seq_last; flags bit 0 power_cut, 1 "
     "wdt_reset, 2 merged, 3 clock_unsynced, 4 meter_fault; SoC permille, 0xFFFF unknown); "
     "kept on the board until an ENERGY_ACK names it, sent again oldest first after a "
     "reconnect or reboot"),
    (ENERGY_ACK, "ENERGY_ACK", 1, "h2b", "<I", ("record_no",), None,
     "the daemon has stored record_no durably: the board may forget it"),
    (SERVICE_REQ, "SERVICE_REQ", 1, "h2b", "<BB", ("group", "command"), "bytes",
     "service request (reserved for the signed-update issue: group 1 image, 2 keys)"),
    (SERVICE_RSP, "SERVICE_RSP", 1, "b2h", "<BBB", ("group", "command", "status"), "bytes",
     "service response: group, command, status, data"),
)

ID, NAME, RELIABLE, DIRECTION, FMT, FIELDS, TAIL, DOC = range(8)

BY_ID = {row[ID]: row for row in MESSAGES}
BY_NAME = {row[NAME]: row for row in MESSAGES}
FIXED_SIZE = {row[ID]: struct.calcsize(row[FMT]) for row in MESSAGES}


def payload_ok(msg_id, length):
    """True when ``length`` payload bytes fit the type's layout (fixed part, then the
    tail: nothing, any text/bytes, or whole entries). Unknown ids: False."""
    row = BY_ID.get(msg_id)
    if row is None or length > MAX_PAYLOAD:
        return False
    fixed = FIXED_SIZE[msg_id]
    tail = row[TAIL]
    if tail is None:
        return length == fixed
    if length < fixed:
        return False
    if tail == "text" or tail == "bytes":
        return True
    return (length - fixed) % struct.calcsize(tail) == 0


def seq_next(seq):
    """The sequence number after ``seq`` (16 bits, wrapping)."""
    return (seq + 1) & 0xFFFF


def seq_diff(a, b):
    """``a - b`` modulo 2**16, 0 .. 65535 (below SEQ_HALF: ``a`` is at or after ``b``)."""
    return (a - b) & 0xFFFF
