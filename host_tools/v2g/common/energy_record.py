"""The energy record: one metered interval (or a session start/end) of one station.

The unit of billing from the board's energy journal to the back-end ledger. The board
numbers its records with ``seq`` (+1 per record, across reboots and watchdog resets); a
record the board merged when its ring was full covers ``seq .. seq_last`` (energy
preserved). The daemon adds the station id and the firmware version, signs the record's
canonical bytes and publishes it; the ledger verifies, deduplicates by (station, seq) and
credits it once.

Units: energy in mWh (integers, no float in anything that is signed), times in whole UTC
seconds since the Unix epoch, state of charge in permille (0..1000, ``None`` = unknown).

Wire form (MQTT ``v2g/<station>/energy`` payload, UTF-8 JSON, one object)::

    {"v": 1, "station": "ST-0001", "seq": 17, "seq_last": 17, "kind": "interval",
     "session": 3, "t_start": 1767225600, "t_end": 1767225660,
     "import_mwh": 0, "export_mwh": 116667, "soc_start_pm": 812, "soc_end_pm": 805,
     "flags": ["power_cut"], "fw": "v2g-fw 0.4.0",
     "sig": {"alg": "ed25519", "key": "ST-0001", "value": "<128 lowercase hex>"}}

``canonical_bytes()`` is what is signed: a fixed prefix, then the record without ``sig`` as
JSON with sorted keys, no spaces, ASCII only. Parsing is strict (every key required, no
unknown or repeated key, exact types, lowercase hex signature), so one flipped bit anywhere
in a payload either breaks parsing or changes the signed bytes: it is never credited.

Context: host (daemon and back end). Imports the standard library only.
"""

import json
import re
from dataclasses import asdict, dataclass, field

WIRE_VERSION = 1
CANON_PREFIX = b"v2g-energy-record/1\n"

KINDS = ("interval", "session_start", "session_end")
# flags a record may carry; the board sets them, the ledger reports them
FLAGS = (
    "power_cut",       # the supply failed inside the interval (energy up to the cut)
    "wdt_reset",       # a watchdog reset inside the interval
    "merged",          # consecutive intervals merged when the board's ring was full
    "clock_unsynced",  # the board's clock was not synchronised: times are estimates
    "meter_fault",     # a metering fault was raised inside the interval
)
# station ids: letters, digits, '-', '_'; 1..32 characters; starts with a letter or digit.
# They become MQTT topic levels and certificate common names: no '/', '+', '#', spaces.
STATION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
SIG_RE = re.compile(r"^[0-9a-f]{2,1024}$")
U32 = 2 ** 32 - 1
MAX_MWH = 10 ** 9  # one record: 1 GWh at most (a sanity limit far above any interval)


class RecordError(ValueError):
    """A record (or payload) that does not validate; the message names field and value."""


def check_station(station, what="station"):
    """Return ``station`` when it is a valid station id, else raise ``RecordError``."""
    if not isinstance(station, str) or not STATION_RE.match(station):
        raise RecordError("%s %r: not a station id (1..32 of A-Z a-z 0-9 - _, starting with "
                          "a letter or digit)" % (what, station))
    return station


@dataclass(frozen=True)
class EnergyRecord:
    """One record as the daemon receives it from the board (plus station and firmware).

    ``seq``: the board's record number (+1 per record, never reused; starts at 1);
    ``seq_last``: last number a merged record covers (``seq`` when not merged);
    ``session``: the board's session counter (0 = outside any session);
    ``t_start``/``t_end``: UTC seconds; ``import_mwh`` (EV charging, from the grid) and
    ``export_mwh`` (V2G, to the grid) in mWh over the interval; ``soc_start_pm`` /
    ``soc_end_pm``: EV state of charge in permille or None when unknown; ``flags``: sorted
    tuple of names from ``FLAGS``; ``fw``: the board's firmware version string.
    """

    station: str
    seq: int
    kind: str
    session: int
    t_start: int
    t_end: int
    import_mwh: int
    export_mwh: int
    fw: str
    seq_last: int = -1  # -1: same as seq (normalised in __post_init__)
    soc_start_pm: int | None = None
    soc_end_pm: int | None = None
    flags: tuple = field(default=())

    def __post_init__(self):
        if self.seq_last == -1 and isinstance(self.seq, int):
            object.__setattr__(self, "seq_last", self.seq)
        if isinstance(self.flags, list):
            object.__setattr__(self, "flags", tuple(self.flags))
        self.validate()

    def validate(self):
        """Raise ``RecordError`` naming the first bad field and its value."""
        check_station(self.station)
        for name in ("seq", "seq_last", "session", "t_start", "t_end"):
            _int_in(name, getattr(self, name), 0, U32)
        if self.seq < 1:
            raise RecordError("seq %r: record numbers start at 1" % self.seq)
        if self.seq_last < self.seq:
            raise RecordError("seq_last %r: below seq %r" % (self.seq_last, self.seq))
        if self.t_end < self.t_start:
            raise RecordError("t_end %r: before t_start %r" % (self.t_end, self.t_start))
        for name in ("import_mwh", "export_mwh"):
            _int_in(name, getattr(self, name), 0, MAX_MWH)
        for name in ("soc_start_pm", "soc_end_pm"):
            v = getattr(self, name)
            if v is not None:
                _int_in(name, v, 0, 1000)
        if self.kind not in KINDS:
            raise RecordError("kind %r: not one of %s" % (self.kind, ", ".join(KINDS)))
        if not isinstance(self.flags, tuple) or any(f not in FLAGS for f in self.flags):
            raise RecordError("flags %r: allowed %s" % (self.flags, ", ".join(FLAGS)))
        if list(self.flags) != sorted(set(self.flags)):
            raise RecordError("flags %r: must be sorted, each once" % (self.flags,))
        if not isinstance(self.fw, str) or not (1 <= len(self.fw) <= 64) \
                or not self.fw.isascii() or not self.fw.isprintable():
            raise RecordError("fw %r: 1..64 printable ASCII characters" % (self.fw,))

    def fields(self):
        """The record as a plain dict (the wire form without ``v`` and ``sig``)."""
        d = asdict(self)
        d["flags"] = list(self.flags)
        return d

    def canonical_bytes(self):
        """The bytes that are signed: prefix + sorted-key compact ASCII JSON (with ``v``)."""
        d = self.fields()
        d["v"] = WIRE_VERSION
        return CANON_PREFIX + json.dumps(d, sort_keys=True, separators=(",", ":"),
                                         ensure_ascii=True).encode("ascii")

    def to_payload(self, alg, key_id, signature):
        """The MQTT payload (bytes) carrying this record and its signature."""
        d = self.fields()
        d["v"] = WIRE_VERSION
        d["sig"] = {"alg": alg, "key": key_id, "value": signature.hex()}
        return json.dumps(d, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=True).encode("ascii")

    @property
    def wh_import(self):
        return self.import_mwh / 1000.0

    @property
    def wh_export(self):
        return self.export_mwh / 1000.0


_WIRE_KEYS = {"v", "station", "seq", "seq_last", "kind", "session", "t_start", "t_end",
              "import_mwh", "export_mwh", "soc_start_pm", "soc_end_pm", "flags", "fw", "sig"}
_SIG_KEYS = {"alg", "key", "value"}


def _int_in(name, value, lo, hi):
    if type(value) is not int or not lo <= value <= hi:
        raise RecordError("%s %r: an integer %d..%d" % (name, value, lo, hi))
    return value


def _no_repeats(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise RecordError("key %r: repeated" % k)
        d[k] = v
    return d


def parse_payload(payload):
    """Parse an ``energy`` payload (bytes) strictly.

    Returns ``(record, sig)`` with ``sig = {"alg", "key", "value": bytes}``; raises
    ``RecordError`` naming the bad key/field and value.
    """
    try:
        text = payload.decode("ascii")
    except (UnicodeDecodeError, AttributeError):
        raise RecordError("payload: not ASCII JSON") from None
    try:
        d = json.loads(text, object_pairs_hook=_no_repeats)
    except json.JSONDecodeError as e:
        raise RecordError("payload: not JSON (%s)" % e) from None
    if not isinstance(d, dict):
        raise RecordError("payload: not a JSON object")
    keys = set(d)
    if keys != _WIRE_KEYS:
        missing, extra = sorted(_WIRE_KEYS - keys), sorted(keys - _WIRE_KEYS)
        raise RecordError("payload keys: missing %s, unknown %s" % (missing, extra))
    if type(d["v"]) is not int or d["v"] != WIRE_VERSION:
        raise RecordError("v %r: this ledger reads version %d" % (d["v"], WIRE_VERSION))
    sig = d.pop("sig")
    if not isinstance(sig, dict) or set(sig) != _SIG_KEYS:
        raise RecordError("sig %r: an object with keys alg, key, value" % (sig,))
    if not isinstance(sig["value"], str) or not SIG_RE.match(sig["value"]):
        raise RecordError("sig.value: lowercase hex expected")
    if not isinstance(sig["alg"], str) or not isinstance(sig["key"], str):
        raise RecordError("sig.alg / sig.key: strings expected")
    del d["v"]
    if not isinstance(d["flags"], list) or any(not isinstance(f, str) for f in d["flags"]):
        raise RecordError("flags %r: a list of names" % (d["flags"],))
    d["flags"] = tuple(d["flags"])
    try:
        rec = EnergyRecord(**d)
    except TypeError as e:
        raise RecordError("payload: %s" % e) from None
    return rec, {"alg": sig["alg"], "key": sig["key"], "value": bytes.fromhex(sig["value"])}


# --- the board's ENERGY_RECORD over the link --------------------------------------------

# ``link_msgs.ENERGY_RECORD`` today carries (record_no, session_id, t_start_s, t_end_s,
# import_mwh, export_mwh). Everything else the ledger wants has a default here until the
# board's journal sends it (see docs/billing.md, "What the board sends").
KIND_CODES = {0: "interval", 1: "session_start", 2: "session_end"}
FLAG_BITS = {1: "power_cut", 2: "wdt_reset", 4: "merged", 8: "clock_unsynced",
             16: "meter_fault"}
SOC_UNKNOWN = 0xFFFF


def from_link(msg, station, fw):
    """Build an ``EnergyRecord`` from a decoded ENERGY_RECORD message (a dict of fields).

    Reads the six fields of today's message and, when present, the extended ones the board
    journal is to add: ``seq_last``, ``kind`` (code, ``KIND_CODES``), ``flags`` (bits,
    ``FLAG_BITS``), ``soc_start_pm`` / ``soc_end_pm`` (``SOC_UNKNOWN`` = unknown).
    ``station`` comes from the daemon's config, ``fw`` from the board's HELLO_ACK text.
    Raises ``RecordError`` naming the field and value.
    """
    bits = msg.get("flags", 0)
    flags = tuple(sorted(name for bit, name in FLAG_BITS.items() if bits & bit))
    if bits & ~sum(FLAG_BITS):
        raise RecordError("flags 0x%x: unknown bits" % bits)
    kind = KIND_CODES.get(msg.get("kind", 0))
    if kind is None:
        raise RecordError("kind %r: codes %s" % (msg.get("kind"), sorted(KIND_CODES)))

    def soc(name):
        v = msg.get(name, SOC_UNKNOWN)
        return None if v == SOC_UNKNOWN else v

    return EnergyRecord(
        station=station, seq=msg["record_no"], seq_last=msg.get("seq_last", msg["record_no"]),
        kind=kind, session=msg["session_id"], t_start=msg["t_start_s"], t_end=msg["t_end_s"],
        import_mwh=msg["import_mwh"], export_mwh=msg["export_mwh"],
        soc_start_pm=soc("soc_start_pm"), soc_end_pm=soc("soc_end_pm"), flags=flags, fw=fw)
