"""The Modbus register map: the status block at protocol address 0 and the SunSpec device.

Two regions of holding registers (function 3; function 4 reads the same words):

- **status block** at protocol address 0 (register 40001): the DC-contactor status code
  (docs/formats.md section 8: 0 STUCK, 1 OPEN, 2 CLOSED, 3 PRECHARGING, 4 OPENING), then
  state, fault, voltages, power, energy, temperature, tick and link figures (``STATUS``),
  each with its type, unit and scale factor; the **unlock register** at 100 (16
  registers, write-only); the **session register** at 120 (0 stop, 1 start);
- **SunSpec device** at 40000: "SunS", models 1, 701, 702, 704, 705-710, 713, end 0xFFFF.
  Each model's points come from the SunSpec model JSON that pysunspec2 ships
  (``sunspec2/models/json/model_N.json``: names, types, sizes, scale-factor names, units,
  access); ``_BIND`` joins them with the firmware's parameter table (``firmware/params.py``:
  limits, units, decimals) and the register image (``link_msgs.REGISTER_FIELDS``). A point
  without a binding reads as SunSpec "not implemented" (0x8000 int16, 0xFFFF uint16 and
  enums, 0xFFFFFFFF uint32, NUL strings) and is read-only.

Values are computed from a ``Snap`` (image, parameters, daemon controls, link figures):
``build()`` -> ``RegisterMap``; ``RegisterMap.encode(snap)`` -> ``{address: word}``; with the
link down or the image older than ``stale_s`` every point that is not structure (ID, L,
counts, scale factors, model 1 strings) reads "not implemented".

Writable points carry a ``Setting``: ``param`` (a config change over the link, range and
resolution from the parameter table), ``control`` (a 704 control the daemon turns into an
idempotent setpoint) or ``unlock``. ``markdown()`` prints the map (``v2g modbus map``).

Context: host (daemon, ``v2g modbus``).
"""

import bisect
import importlib.util
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from v2g.common import paths
from v2g.link.codec import msgs

SUNS_BASE = 40000  # SunSpec's default base address (SUNS_BASE_ADDR_DEFAULT)
UNLOCK_ADDR = 100
UNLOCK_REGS = 16  # token up to 32 ASCII bytes, NUL-padded
SESSION_ADDR = 120  # session control: write 0 stop, 1 start (SESSION over the link)
END_MODEL = 0xFFFF
MODELS = (1, 701, 702, 704, 705, 706, 707, 708, 709, 710, 713)

# SunSpec "not implemented" value of each type (sunspec2.mb's SUNS_UNIMPL_*)
NI = {"int16": 0x8000, "uint16": 0xFFFF, "count": 0, "acc16": 0, "enum16": 0xFFFF,
      "bitfield16": 0xFFFF, "pad": 0x8000, "sunssf": 0x8000, "int32": 0x80000000,
      "uint32": 0xFFFFFFFF, "acc32": 0, "enum32": 0xFFFFFFFF, "bitfield32": 0xFFFFFFFF,
      "ipaddr": 0, "int64": 0x8000000000000000, "uint64": 0xFFFFFFFFFFFFFFFF, "acc64": 0,
      "float32": 0x7FC00000, "string": 0}
SIGNED = {"int16", "int32", "int64", "sunssf"}
CONTACTOR = ("STUCK", "OPEN", "CLOSED", "PRECHARGING", "OPENING")
LINK_STATES = ("DOWN", "UP", "DEGRADED", "LOST")


def load_params():
    """The firmware's parameter table module (``firmware/params.py``), loaded once."""
    name = "v2g_params"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, paths.FIRMWARE_DIR / "params.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


P = load_params()


def model_json(model_id):
    """The SunSpec model definition pysunspec2 ships, as a dict."""
    import sunspec2

    path = Path(sunspec2.__file__).parent / "models" / "json" / ("model_%d.json" % model_id)
    return json.loads(path.read_text())


# ---- values ----

@dataclass
class Snap:
    """What the registers show at one instant. ``image``: the newest register image (dict,
    link_msgs.REGISTER_FIELDS) or None; ``params``: {name: held int} (the daemon's view of
    the board's config); ``controls``: the 704 controls; ``stale``: link down or image too
    old; ``link``: {state, age_ms, counters...}; ``fw``: the board's firmware name."""

    image: dict = None
    params: dict = None
    controls: dict = None
    stale: bool = True
    link: dict = None
    fw: str = ""
    serial: str = ""
    refused: int = 0

    def p(self, name):
        """A parameter's value in its unit (float or int)."""
        r = P.row(name)
        return P.to_number(r, self.params[name])

    def m(self):
        """Engineering values derived from the image (cached): V, A, W, var, VA, PF, Hz."""
        if getattr(self, "_m", None) is None:
            self._m = derive(self.image, self)
        return self._m


def derive(im, snap):
    """Engineering values from one register image (link v2: the measured power, per-phase
    voltages and the phase current); power signs as the firmware's (``p_w`` > 0 charging
    the EV = absorbing from the grid). Per phase: the tick measures each phase's voltage
    but one (positive-sequence) current, so a phase's W/VA/var are the totals shared in
    proportion to its voltage (exact for a balanced current set, which the current control
    produces), and its line-to-line voltage assumes 120 degrees between the phases."""
    if im is None:
        return {}
    v_nom = snap.p("v_nom_ln_rms")
    v_min = im["v_min_mpu"] / 1000 * v_nom
    v_max = im["v_max_mpu"] / 1000 * v_nom
    v_ph = (im["v_a_dv"] / 10, im["v_b_dv"] / 10, im["v_c_dv"] / 10)
    v_ln = sum(v_ph) / 3
    p, q = im["p_meas_w"], im["q_meas_var"]
    s = math.hypot(p, q)
    i_ph = im["i_ca"] / 100
    pf = None if im["pf_milli"] == msgs.PF_NONE else -im["pf_milli"] / 1000
    share = [v / sum(v_ph) if sum(v_ph) > 0 else 1 / 3 for v in v_ph]
    v_ll = [math.sqrt(a * a + b * b + a * b) for a, b in zip(v_ph, v_ph[1:] + v_ph[:1])]
    return {
        "v_min": v_min, "v_max": v_max, "v_ln": v_ln, "v_ll": sum(v_ll) / 3,
        "v_ph": v_ph, "v_ll_ph": v_ll, "share": share,
        "f_hz": im["f_mhz"] / 1000, "p_w": p, "q_var": q, "s_va": s,
        # SunSpec: PF carries the sign of the active power (generation positive)
        "pf": pf, "i_ph": i_ph, "i_a": 3 * i_ph,
        "t_module_c": im["t_module_dc"] / 10, "v_dc": im["v_dc_dv"] / 10,
    }


def sc(value, sf):
    """An engineering value -> the integer stored with scale factor ``sf`` (None stays)."""
    if value is None:
        return None
    return int(round(value / 10 ** sf))


def power_sf(snap):
    """Scale factor for W/VA/var in int16/uint16 points: 0 up to 32767 W rated, else 1."""
    rated = snap.p("p_rated_w")
    return 0 if rated <= 32767 else 1


@dataclass
class Setting:
    """How a write to a point is applied.

    - ``kind`` "param": ``target`` names a parameter; ``to_param(raw, snap)`` gives the value
      in the parameter's unit (the table's min/max/decimals check it);
    - ``kind`` "control": ``target`` names a 704 control; ``limits(snap)`` -> (lo, hi) raw;
    - ``kind`` "unlock": the unlock register;
    - ``kind`` "session": the session register (0 stop, 1 start)."""

    kind: str
    target: str
    to_param: object = None
    limits: object = None


@dataclass
class Reg:
    addr: int  # protocol address (0 = register 40001)
    size: int  # registers
    type: str  # SunSpec type name
    name: str  # "status.contactor_status", "701.W", "706.Crv[0].Pt[1].V"
    units: str
    sf: object  # None, a fixed int, or the name of the SunSpec scale-factor point
    doc: str
    get: object  # snap -> raw int / str / None (not implemented)
    static: bool = False  # structure: kept while stale
    setting: Setting = None


def encode_value(reg, value):
    """A raw value -> the list of ``reg.size`` words (big-endian, SunSpec byte order)."""
    if reg.type == "string":
        b = (value or "").encode()[: 2 * reg.size].ljust(2 * reg.size, b"\0")
        return [(b[i] << 8) | b[i + 1] for i in range(0, len(b), 2)]
    v = NI.get(reg.type, 0) if value is None else int(value)
    bits = 16 * reg.size
    if reg.type in SIGNED:
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        if value is not None and (v < lo or v > hi or v == lo):
            v = NI[reg.type]  # out of the type's range: say "not implemented", never wrap
        v &= (1 << bits) - 1
    elif value is not None and not 0 <= v < (1 << bits) - (0 if reg.type == "count" else 1):
        v = NI.get(reg.type, 0)
    return [(v >> (16 * (reg.size - 1 - i))) & 0xFFFF for i in range(reg.size)]


def decode_words(reg, words):
    """Words written by a client -> the raw value (signed where the type is)."""
    v = 0
    for w in words:
        v = (v << 16) | (w & 0xFFFF)
    if reg.type in SIGNED and v >= 1 << (16 * reg.size - 1):
        v -= 1 << (16 * reg.size)
    return v


# ---- the status block at protocol address 0 ----

def _im(field, fn=lambda v: v):
    return lambda s: None if s.image is None else fn(s.image[field])


def _mv(key, sf):
    return lambda s: sc(s.m().get(key), sf)


def _link(key):
    return lambda s: (s.link or {}).get(key)


STATUS = (
    # (offset, name, type, size, units, sf, get, doc, live while stale)
    (0, "contactor_status", "uint16", 1, "", None, _im("contactor_status"),
     "DC contactor: 0 STUCK, 1 OPEN, 2 CLOSED, 3 PRECHARGING, 4 OPENING", False),
    (1, "state", "uint16", 1, "", None, _im("state"),
     "supervisor state: " + ", ".join("%d %s" % x for x in enumerate(msgs.STATES)), False),
    (2, "flags", "uint16", 1, "", None, _im("flags"),
     "bit 0 PLL locked, 1 permitted, 2 ceased, 3 link degraded, 4 link lost", False),
    (3, "fault_count", "uint16", 1, "", None, _im("fault_count"),
     "faults raised since the board booted (wraps at 65536)", False),
    (4, "last_fault", "string", 4, "", None,
     _im("last_fault", lambda b: bytes(b).rstrip(b"\0").decode("ascii", "replace")),
     "code of the newest fault, ASCII, NUL-padded (e.g. '0x07', 'V2G-502')", False),
    (8, "f_hz", "uint16", 1, "Hz", -2, _mv("f_hz", -2), "grid frequency (PLL)", False),
    (9, "v_min_v", "uint16", 1, "V", -1, _mv("v_min", -1),
     "lowest phase-to-neutral voltage (RMS)", False),
    (10, "v_max_v", "uint16", 1, "V", -1, _mv("v_max", -1),
     "highest phase-to-neutral voltage (RMS)", False),
    (11, "v_a_v", "uint16", 1, "V", -1, _im("v_a_dv"),
     "phase A voltage, fundamental RMS (the tick's per-phase measurement)", False),
    (12, "v_b_v", "uint16", 1, "V", -1, _im("v_b_dv"), "phase B voltage: as phase A", False),
    (13, "v_c_v", "uint16", 1, "V", -1, _im("v_c_dv"), "phase C voltage: as phase A", False),
    (14, "i_a_a", "int16", 1, "A", -2, _im("i_ca"),
     "phase A current, RMS: the positive-sequence current the tick measures (the same "
     "in every phase: the tick has no per-phase current magnitude)", False),
    (15, "i_b_a", "int16", 1, "A", -2, _im("i_ca"), "phase B current: as phase A", False),
    (16, "i_c_a", "int16", 1, "A", -2, _im("i_ca"), "phase C current: as phase A", False),
    (17, "p_w", "int32", 2, "W", 0, _im("p_meas_w"),
     "active power measured by the tick, > 0 charging the EV (absorbing), < 0 exporting",
     False),
    (19, "q_var", "int32", 2, "var", 0, _im("q_meas_var"),
     "reactive power measured by the tick, > 0 absorbing", False),
    (21, "pf", "int16", 1, "", -3, _mv("pf", -3),
     "power factor |P|/S of the measured power, sign of the exported active power; 0x8000 "
     "below 0.1 % of rated", False),
    (22, "energy_import_wh", "uint32", 2, "Wh", 0, _im("energy_import_wh"),
     "energy imported (EV charging) since the board booted", False),
    (24, "energy_export_wh", "uint32", 2, "Wh", 0, _im("energy_export_wh"),
     "energy exported (V2G) since the board booted", False),
    (26, "t_module_c", "int16", 1, "C", -1, _im("t_module_dc"),
     "power-module temperature", False),
    (27, "v_dc_v", "uint16", 1, "V", -1, _im("v_dc_dv"), "DC-link voltage", False),
    (28, "derate_pct", "uint16", 1, "%", 0, _im("derate_pct"),
     "thermal derating in force, % of rated (0 = none)", False),
    (29, "tick_count", "uint32", 2, "", None, _im("tick_count"),
     "control ticks since the board booted (wraps at 2**32)", False),
    (31, "tick_overruns", "uint32", 2, "", None, _im("tick_overruns"),
     "tick overruns since the board booted", False),
    (33, "tick_cost_pct", "uint16", 1, "%", -1,
     lambda s: None if s.image is None or not s.image["tick_period_us"] else
     s.image["tick_cost_us"] * 1000 // s.image["tick_period_us"],
     "run time of the last tick, % of the tick period", False),
    (34, "setpoint_id", "uint32", 2, "", None, _im("setpoint_id"),
     "id of the setpoint in force (0 = none)", False),
    (36, "ev_max_charge_w", "int32", 2, "W", 0, _im("ev_max_charge_w"),
     "EV limit in force: charge", False),
    (38, "ev_max_discharge_w", "int32", 2, "W", 0, _im("ev_max_discharge_w"),
     "EV limit in force: discharge", False),
    (40, "board_uptime_s", "uint32", 2, "s", None, _im("t_ms", lambda t: t // 1000),
     "board uptime (wraps at 2**32 ms)", False),
    # the daemon's own link figures: valid while the image is stale (they say why)
    (42, "link_state", "uint16", 1, "", None, _link("state"),
     "link as the daemon sees it: 0 DOWN, 1 UP, 2 DEGRADED, 3 LOST", True),
    (43, "link_age_ms", "uint16", 1, "ms", None, _link("age_ms"),
     "age of the newest register image (65535 = none or older)", True),
    (44, "link_crc_errors", "uint32", 2, "", None, _link("crc_errors"),
     "link frames from the board dropped for a bad CRC", True),
    (46, "link_lost", "uint32", 2, "", None, _link("lost"),
     "link frames from the board estimated lost", True),
    (48, "link_retransmissions", "uint32", 2, "", None, _link("retransmissions"),
     "link frames the daemon sent again", True),
    (50, "writes_refused", "uint32", 2, "", None, lambda s: s.refused,
     "Modbus writes refused since the daemon started", True),
    # link v2 image
    (52, "p_cmd_w", "int32", 2, "W", 0, _im("p_cmd_w"),
     "active power command in force (setpoint after the supervisor's clamps)", False),
    (54, "q_cmd_var", "int32", 2, "var", 0, _im("q_cmd_var"),
     "reactive power command in force", False),
    (56, "tick_cost_us", "uint16", 1, "us", 0, _im("tick_cost_us"),
     "run time of the last tick", False),
    (57, "tick_cost_max_us", "uint16", 1, "us", 0, _im("tick_cost_max_us"),
     "longest tick since the board booted", False),
    (58, "board_link_state", "uint16", 1, "", None, _im("link_state"),
     "link as the board sees it: 0 DOWN, 1 UP, 2 DEGRADED (V2G-502), 3 LOST", False),
    (59, "board_link_crc_errors", "uint16", 1, "", None, _im("link_crc_errors"),
     "frames from the daemon the board dropped for a bad CRC (wraps at 65536)", False),
    (60, "board_link_lost", "uint16", 1, "", None, _im("link_lost"),
     "frames from the daemon the board estimates lost (wraps at 65536)", False),
    (61, "board_link_hb_gaps", "uint16", 1, "", None, _im("link_hb_gaps"),
     "heartbeat gaps the board saw (wraps at 65536)", False),
)
STATUS_LEN = 62


# ---- SunSpec bindings ----

def const(v, static=True):
    return {"get": lambda s: v, "static": static}


def meas(fn):
    return {"get": fn}


def param(name, to_raw, to_param):
    """A point that shows parameter ``name`` and writes it: ``to_raw(value, snap)`` and
    ``to_param(raw, snap)`` convert between the parameter's unit and the stored integer."""
    return {"get": lambda s: to_raw(s.p(name), s),
            "setting": Setting("param", name, to_param=to_param)}


def control(name, limits):
    return {"get": lambda s: s.controls[name], "setting": Setting("control", name,
                                                                  limits=limits)}


def _pct_pu(sf):  # pu <-> % of nominal with scale factor sf
    return (lambda v, s: sc(v * 100, sf)), (lambda raw, s: raw * 10 ** sf / 100)


def _hz(sf, above):  # a pickup "this far above/below nominal" <-> an absolute frequency
    sign = 1 if above else -1
    return ((lambda v, s: sc(s.p("f_nom_hz") + sign * v, sf)),
            (lambda raw, s: sign * (raw * 10 ** sf - s.p("f_nom_hz"))))


def _secs(sf):
    return (lambda v, s: sc(v, sf)), (lambda raw, s: raw * 10 ** sf)


def _wsf(s):
    return power_sf(s)


def _rated(s):
    return s.p("p_rated_w")


_V_SF, _A_SF, _PF_SF, _TMP_SF, _HZ_SF_701 = -1, -2, -3, -1, -3


def _w(key, sign=-1):  # firmware sign (> 0 absorbing) -> SunSpec (generation positive)
    return lambda s: (None if s.image is None or s.m().get(key) is None
                      else sc(sign * s.m()[key], _wsf(s)))


def _phase_points(i):
    """701 points of phase ``i`` (L1, L2, L3): W/VA/var shared by voltage (see derive),
    PF as the total, the phase current, voltages to neutral and to the next phase."""
    n = i + 1
    nxt = "L%d" % (n % 3 + 1)

    def share(key, sign):
        return lambda s: sc(sign * s.m()[key] * s.m()["share"][i], _wsf(s))

    return {"WL%d" % n: meas(share("p_w", -1)), "VAL%d" % n: meas(share("s_va", 1)),
            "VarL%d" % n: meas(share("q_var", -1)),
            "PFL%d" % n: meas(lambda s: sc(s.m()["pf"], _PF_SF)),
            "AL%d" % n: meas(lambda s: sc(s.m()["i_ph"], _A_SF)),
            "VL%d%s" % (n, nxt): meas(lambda s: sc(s.m()["v_ll_ph"][i], _V_SF)),
            "VL%d" % n: meas(lambda s: sc(s.m()["v_ph"][i], _V_SF))}


def _inv_state(s):
    st = msgs.STATES[s.image["state"]] if s.image["state"] < len(msgs.STATES) else ""
    return {"BOOT": 2, "WAIT_GRID": 7, "SYNCING": 2, "ENTER_SERVICE_DELAY": 2,
            "ENERGIZED": 3, "DERATED": 4, "TRIPPED": 6, "FAULT_LOCKOUT": 6}.get(st)


def _trip_curve(points):
    """Bindings of a 707-710 trip model: curve 0's MustTrip points from ``points``
    [(value binding, time param)]; MayTrip and MomCess not implemented (ActPt 0)."""
    b = {"Ena": const(1, static=False), "AdptCrvReq": const(0, False),
         "AdptCrvRslt": const(2, False),  # 2 COMPLETED: the curve in force is the one shown
         "NPt": const(len(points)), "NCrvSet": const(1), "Tms_SF": const(-2),
         "Crv[0].ReadOnly": const(0), "Crv[0].MustTrip.ActPt": const(len(points), False),
         "Crv[0].MayTrip.ActPt": const(0, False), "Crv[0].MomCess.ActPt": const(0, False)}
    for i, (vbind, tname) in enumerate(points):
        b["Crv[0].MustTrip.Pt[%d].%s" % (i, vbind[0])] = vbind[1]
        b["Crv[0].MustTrip.Pt[%d].Tms" % i] = param(tname, *_secs(-2))
    return b


def _v_trip(names):
    return _trip_curve([(("V", param(v, *_pct_pu(-2))), t) for v, t in names])


def _f_trip(names, above):
    return _trip_curve([(("Hz", param(f, *_hz(-2, above))), t) for f, t in names])


_BIND = {
    1: {"Mn": const("V2G"), "Md": const("v2g-charger"), "Opt": const("link-v%d" % msgs.VERSION),
        "Vr": {"get": lambda s: s.fw[:16], "static": True},
        "SN": {"get": lambda s: s.serial, "static": True}, "DA": const(1), "Pad": const(0)},
    701: {
        "ACType": const(2),  # THREE_PHASE
        "St": meas(lambda s: 1 if s.image["contactor_status"] == 2 else 0),
        "InvSt": meas(_inv_state),
        "ConnSt": meas(lambda s: 1 if s.image["contactor_status"] == 2 else 0),
        "W": meas(_w("p_w")), "VA": meas(lambda s: sc(s.m()["s_va"], _wsf(s))),
        "Var": meas(_w("q_var")), "PF": meas(lambda s: sc(s.m()["pf"], _PF_SF)),
        "A": meas(lambda s: sc(s.m()["i_a"], _A_SF)),  # total: the three phases' sum
        "LLV": meas(lambda s: sc(s.m()["v_ll"], _V_SF)),
        "LNV": meas(lambda s: sc(s.m()["v_ln"], _V_SF)),
        "Hz": meas(lambda s: s.image["f_mhz"]),  # Hz_SF -3: mHz as the image holds it
        "TotWhInj": meas(lambda s: s.image["energy_export_wh"]),
        "TotWhAbs": meas(lambda s: s.image["energy_import_wh"]),
        "TmpSw": meas(lambda s: s.image["t_module_dc"]),
        **{k: v for i in range(3) for k, v in _phase_points(i).items()},
        "ThrotPct": meas(lambda s: s.image["derate_pct"]),
        "MnAlrmInfo": meas(lambda s: bytes(s.image["last_fault"]).rstrip(b"\0").decode(
            "ascii", "replace")),
        "A_SF": const(_A_SF), "V_SF": const(_V_SF), "Hz_SF": const(_HZ_SF_701),
        "W_SF": {"get": _wsf, "static": True}, "PF_SF": const(_PF_SF),
        "VA_SF": {"get": _wsf, "static": True}, "Var_SF": {"get": _wsf, "static": True},
        "TotWh_SF": const(0), "Tmp_SF": const(_TMP_SF),
    },
    702: {
        "WMaxRtg": meas(lambda s: sc(_rated(s), _wsf(s))),
        "VAMaxRtg": meas(lambda s: sc(_rated(s), _wsf(s))),
        "WChaRteMaxRtg": meas(lambda s: sc(_rated(s), _wsf(s))),
        "WDisChaRteMaxRtg": meas(lambda s: sc(_rated(s) * s.p("bidirectional"), _wsf(s))),
        "VNomRtg": meas(lambda s: sc(s.p("v_nom_ln_rms"), _V_SF)),
        "AMaxRtg": meas(lambda s: sc(s.p("i_max_pu") * _rated(s) / 3
                                     / s.p("v_nom_ln_rms"), _A_SF)),
        "AbnOpCatRtg": meas(lambda s: s.p("abnormal_category") - 1),
        # MAX_W, FIXED_W, FIXED_VAR, LV_TRIP, HV_TRIP, VOLT_WATT, LF_TRIP, HF_TRIP
        "CtrlModes": const(sum(1 << b for b in (0, 1, 2, 7, 8, 10, 12, 13))),
        "WMax": meas(lambda s: sc(_rated(s), _wsf(s))),
        "VAMax": meas(lambda s: sc(_rated(s), _wsf(s))),
        "VNom": meas(lambda s: sc(s.p("v_nom_ln_rms"), _V_SF)),
        "W_SF": {"get": _wsf, "static": True}, "PF_SF": const(_PF_SF),
        "VA_SF": {"get": _wsf, "static": True}, "Var_SF": {"get": _wsf, "static": True},
        "V_SF": const(_V_SF), "A_SF": const(_A_SF),
    },
    704: {
        "WMaxLimPctEna": control("WMaxLimPctEna", lambda s: (0, 1)),
        "WMaxLimPct": control("WMaxLimPct", lambda s: (0, 100)),
        "WSetEna": control("WSetEna", lambda s: (0, 1)),
        "WSetMod": const(1, False),  # WATTS
        "WSet": control("WSet", lambda s: (-int(_rated(s)), int(_rated(s)))),
        "VarSetEna": control("VarSetEna", lambda s: (0, 1)),
        "VarSetMod": const(4, False),  # VARS
        "VarSetPri": const(0, False),  # ACTIVE: the firmware keeps P priority
        "VarSet": control("VarSet", lambda s: (-int(_rated(s)), int(_rated(s)))),
        # p_ramp_pu_s (pu/s) <-> %Max/Sec
        "WRmp": param("p_ramp_pu_s", lambda v, s: sc(v * 100, 0), lambda raw, s: raw / 100),
        "AntiIslEna": param("ai_enable", lambda v, s: v, lambda raw, s: raw),
        "PF_SF": const(_PF_SF), "WMaxLimPct_SF": const(0), "WSet_SF": const(0),
        "WSetPct_SF": const(0), "VarSet_SF": const(0), "VarSetPct_SF": const(0),
    },
    # volt-var: not in this firmware; the model is there (disabled) so clients see that
    705: {"Ena": const(0, False), "AdptCrvReq": const(0, False), "AdptCrvRslt": const(0, False),
          "NPt": const(1), "NCrv": const(1), "V_SF": const(-2), "DeptRef_SF": const(0),
          "RspTms_SF": const(0), "Crv[0].ActPt": const(0, False), "Crv[0].ReadOnly": const(1)},
    706: {
        "Ena": param("vw_enable", lambda v, s: v, lambda raw, s: raw),
        "AdptCrvReq": const(0, False), "AdptCrvRslt": const(2, False),
        "NPt": const(2), "NCrv": const(1), "V_SF": const(-2), "DeptRef_SF": const(0),
        "RspTms_SF": const(0),
        "Crv[0].ActPt": const(2, False), "Crv[0].DeptRef": const(0, False),  # W_MAX_PCT
        "Crv[0].ReadOnly": const(0),
        "Crv[0].Pt[0].V": param("vw_v1_pu", *_pct_pu(-2)),
        "Crv[0].Pt[0].W": const(100, False),
        "Crv[0].Pt[1].V": param("vw_v2_pu", *_pct_pu(-2)),
        "Crv[0].Pt[1].W": param("vw_p2_pu", *_pct_pu(0)),
    },
    707: dict(_v_trip([("uv1_pu", "uv1_s"), ("uv2_pu", "uv2_s")]), V_SF=const(-2)),
    708: dict(_v_trip([("ov1_pu", "ov1_s"), ("ov2_pu", "ov2_s")]), V_SF=const(-2)),
    709: dict(_f_trip([("uf1_dhz", "uf1_s"), ("uf2_dhz", "uf2_s")], False), Hz_SF=const(-2)),
    710: dict(_f_trip([("of1_dhz", "of1_s"), ("of2_dhz", "of2_s")], True), Hz_SF=const(-2)),
    # EV battery: "not implemented" until the ISO 15118 issue reports SoC and energy
    713: {"WH_SF": const(0), "Pct_SF": const(-1)},
}

_COUNT_NAMES = {"NPt", "NCrv", "NCrvSet"}


def _flatten(group, counts, prefix, out):
    """Points of a SunSpec group in address order: (path, point definition)."""
    for p in group.get("points", ()):
        out.append((prefix + p["name"], p))
    for g in group.get("groups", ()):
        n = g.get("count", 1)
        if isinstance(n, str):
            n = counts[n]
        if "count" in g:
            for i in range(n):
                _flatten(g, counts, "%s%s[%d]." % (prefix, g["name"], i), out)
        else:
            _flatten(g, counts, "%s%s." % (prefix, g["name"]), out)


class RegisterMap:
    """Every register of the device: ``regs`` (address order), lookup by address."""

    def __init__(self, regs):
        self.regs = sorted(regs, key=lambda r: r.addr)
        self.by_addr = {}
        for r in self.regs:
            for a in range(r.addr, r.addr + r.size):
                self.by_addr[a] = r
        self.by_name = {r.name: r for r in self.regs}
        self.sunspec_end = max(r.addr + r.size for r in self.regs)
        self._ends = [r.addr + r.size for r in self.regs]  # ascending: points don't overlap
        self.models = []  # (model id, address of its ID point, length L)

    def regions(self):
        """Contiguous address ranges [(start, count)] that hold registers."""
        out = []
        for r in self.regs:
            if out and out[-1][0] + out[-1][1] == r.addr:
                out[-1][1] += r.size
            else:
                out.append([r.addr, r.size])
        return [tuple(x) for x in out]

    def encode(self, snap, out=None, start=0, end=None):
        """The register words for ``snap`` -> ``out`` (a list indexed by address): every
        point, or only the points that overlap addresses ``start`` .. ``end`` - 1 (a read
        encodes what it reads: the whole map is ~300 points)."""
        if out is None:
            out = [0] * self.sunspec_end
        if end is None:
            regs = self.regs
        else:
            regs = self.regs[bisect.bisect_right(self._ends, start):]
        for r in regs:
            if end is not None and r.addr >= end:
                break
            if snap.stale and not r.static:
                value = None
            else:
                try:
                    value = r.get(snap)
                except (KeyError, TypeError, ValueError, ZeroDivisionError, IndexError):
                    value = None
            out[r.addr:r.addr + r.size] = encode_value(r, value)
        return out

    def covering(self, address, count):
        """The points a write of ``count`` words at ``address`` touches, or None when it
        touches an unmapped word or only part of a point."""
        regs, a, end = [], address, address + count
        while a < end:
            r = self.by_addr.get(a)
            if r is None or r.addr != a or r.addr + r.size > end:
                return None
            regs.append(r)
            a += r.size
        return regs


def build():
    """The register map: status block, unlock register, SunSpec device."""
    regs = []
    for off, name, typ, size, units, sf, get, doc, live in STATUS:
        regs.append(Reg(off, size, typ, "status." + name, units, sf, doc, get, static=live))
    regs.append(Reg(UNLOCK_ADDR, UNLOCK_REGS, "string", "unlock", "", None,
                    "write the configured unlock token (ASCII, NUL-padded) to allow writes "
                    "on this connection; always reads 0", lambda s: "", static=True,
                    setting=Setting("unlock", "unlock")))
    regs.append(Reg(SESSION_ADDR, 1, "uint16", "session", "", None,
                    "session control: write 0 to stop (power ceases, the DC contactors open; "
                    "40001 then reads 0 if one is welded), 1 to start; reads the last value "
                    "written through this daemon (0xFFFF: none)",
                    lambda s: (s.controls or {}).get("session"), static=True,
                    setting=Setting("session", "session")))
    addr = SUNS_BASE
    regs.append(Reg(addr, 2, "string", "SunS", "", None, "SunSpec marker 0x53756e53",
                    lambda s: "SunS", static=True))
    addr += 2
    models = []
    for mid in MODELS:
        mj = model_json(mid)
        bind = _BIND.get(mid, {})
        counts = {k: bind[k]["get"](None) for k in _COUNT_NAMES if k in bind}
        pts = []
        _flatten(mj["group"], counts, "", pts)
        length = sum(int(p.get("size", 1)) for _, p in pts) - 2
        models.append((mid, addr, length))
        for path, p in pts:
            size = int(p.get("size", 1))
            b = bind.get(path)
            typ = p["type"]
            if path == "ID":
                b = const(mid)
            elif path == "L":
                b = const(length)
            elif b is None:
                b = {"get": lambda s: None, "static": typ == "sunssf"}
            static = b.get("static", False) or path in _COUNT_NAMES
            if mid == 1:
                static = True
            sf = p.get("sf")
            doc = (p.get("label") or "") + (": " + p["desc"] if p.get("desc") else "")
            regs.append(Reg(addr, size, typ, "%d.%s" % (mid, path), p.get("units", ""), sf,
                            doc, b["get"], static=static, setting=b.get("setting")))
            addr += size
    regs.append(Reg(addr, 1, "uint16", "end.ID", "", None, "end model", lambda s: END_MODEL,
                    static=True))
    regs.append(Reg(addr + 1, 1, "uint16", "end.L", "", None, "end model length",
                    lambda s: 0, static=True))
    rm = RegisterMap(regs)
    rm.models = models
    return rm


# ---- the Markdown map (``v2g modbus map``) ----

def _sf_text(reg, rm):
    if reg.sf is None:
        return ""
    if isinstance(reg.sf, int):
        return str(reg.sf)
    model = reg.name.split(".")[0]
    sfr = rm.by_name.get("%s.%s" % (model, reg.sf))
    if sfr is None:
        return reg.sf
    snap = Snap(params=P.defaults(), controls={}, stale=False)
    try:
        v = sfr.get(snap)
    except (KeyError, TypeError):
        v = None
    return "%s (%s)" % (reg.sf, "n/i" if v is None else v)


def _access(reg):
    if reg.setting is None:
        return "R"
    if reg.setting.kind == "param":
        r = P.row(reg.setting.target)
        return "RW: `%s` %s" % (reg.setting.target, P.describe_range(r))
    if reg.setting.kind == "control":
        return "RW: setpoint over the link"
    if reg.setting.kind == "session":
        return "RW: SESSION over the link"
    return "W: unlock"


def markdown():
    """The register map as Markdown tables (status block, then each SunSpec model)."""
    rm = build()
    lines = ["# Modbus register map (v2g-daemon)", "",
             "Holding registers (function 3; 4 reads the same). Address = protocol address "
             "(register number = address + 40001 for the status block, as in docs/formats.md). "
             "Value = stored integer x 10^SF in the unit. Multi-register values big-endian. "
             "'not implemented' values: 0x8000 int16, 0xFFFF uint16/enum16, 0xFFFFFFFF "
             "uint32, 0x80000000 int32, NUL strings; every point except structure reads so "
             "while the link is down or the image older than `modbus.stale_s`.", "",
             "## Status block", "",
             "| address | register | name | type | units | SF | access | meaning |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rm.regs:
        if r.addr >= SUNS_BASE:
            break
        lines.append("| %d | %d | %s | %s%s | %s | %s | %s | %s |" % (
            r.addr, 40001 + r.addr, r.name, r.type, "[%d]" % r.size if r.size > 1 else "",
            r.units, "" if r.sf is None else r.sf, _access(r) if r.setting else "R", r.doc))
    lines += ["", "## SunSpec device at %d ('SunS')" % SUNS_BASE, "",
              "| model | address | length |", "|---|---|---|"]
    for mid, a, length in rm.models:
        lines.append("| %d %s | %d | %d |" % (mid, model_json(mid)["group"].get("label", ""),
                                             a, length))
    cur = None
    for r in rm.regs:
        if r.addr < SUNS_BASE + 2 or r.name.startswith("end."):
            continue
        model = r.name.split(".")[0]
        if model != cur:
            cur = model
            lines += ["", "### Model %s" % model, "",
                      "| address | point | type | units | SF | access | implemented |",
                      "|---|---|---|---|---|---|---|"]
        impl = "yes"
        try:
            v = r.get(Snap(params=P.defaults(), controls=dict(CONTROL_DEFAULTS), stale=False,
                           image=SAMPLE_IMAGE, fw="fw", serial="sn"))
            impl = "yes" if v is not None else "no"
        except (KeyError, TypeError):
            impl = "no"
        lines.append("| %d | %s | %s | %s | %s | %s | %s |" % (
            r.addr, r.name.split(".", 1)[1], r.type, r.units, _sf_text(r, rm), _access(r),
            impl))
    a = rm.sunspec_end - 2
    lines += ["", "End model at %d: 0xFFFF, 0." % a, ""]
    return "\n".join(lines)


CONTROL_DEFAULTS = {"WMaxLimPctEna": 0, "WMaxLimPct": 100, "WSetEna": 0, "WSet": 0,
                    "VarSetEna": 0, "VarSet": 0}

# a plausible image (for the map's "implemented" column and the tests)
SAMPLE_IMAGE = dict(zip(msgs.BY_ID[msgs.REGISTER_IMAGE][msgs.FIELDS], (
    1000, 4, 2, 0, 3, 60000, 1000, 1000, 7000, -7000, 0, 1, 250, 1, 2, 11000, 11000, 0,
    b"0x07\0\0\0\0", 10000, 0, -7000, 0, 2300, 2300, 2300, 1014, -1000, 20, 30, 100, 1, 0,
    0, 0)))
