"""Scenario files (docs/formats.md, ``v2g sim run``): parse, validate, normalise.

Every problem is reported at once, each naming the file, the JSON path of the key, the
bad value and what is allowed, e.g.
``ov2.json: events[2].v_pu: value 5 outside 0..2 pu``.
A valid scenario is normalised for the simulated board: defaults filled in, events
sorted by time (stable), the device-config overrides merged with the grid's nominal
values and validated against the firmware's parameter table.

Context: host only.
"""

import json
import math
from pathlib import Path

from v2g.common.errors import UsageError

CATEGORIES = ("I", "II", "III")
MAX_DURATION_S = 3600.0

# event key -> (kind, lo, hi, unit) for scalar or per-phase numbers
_NUMBERS = {
    "v_pu": ("phases", 0.0, 2.0, "pu"),
    "f_hz": ("number", 40.0, 70.0, "Hz"),
    "rocof_hz_s": ("number", -10.0, 10.0, "Hz/s"),
    "until_hz": ("number", 40.0, 70.0, "Hz"),
    "phase_jump_deg": ("phases", -180.0, 180.0, "deg"),
    "neg_seq_pu": ("number", 0.0, 1.0, "pu"),
    "noise_pu_rms": ("number", 0.0, 0.1, "pu"),
    "ambient_c": ("number", -40.0, 70.0, "C"),
}
_BOOLS = ("island", "fan_fail", "contactor_weld", "ntc_open", "permit_service")
# what a hang event may stop: the tick, or a firmware task by name (``link``: the link
# service, board mode with a link; scenario mode has no link, so nothing stops)
HANG_TARGETS = ("tick", "supervisor", "link")
SESSION_ACTIONS = ("start", "stop")
# nested objects: key -> {field: (lo, hi, unit)}
HARMONIC_FIELDS = {"order": (2, 50, ""), "pu": (0.0, 0.3, "pu"),
                   "phase_deg": (-360.0, 360.0, "deg")}
SETPOINT_FIELDS = {"p_w": (-1e6, 1e6, "W"), "q_var": (-1e6, 1e6, "var")}
EV_LIMIT_FIELDS = {"max_charge_w": (0.0, 1e6, "W"), "max_discharge_w": (0.0, 1e6, "W"),
                   "soc_min": (0.0, 1.0, "")}
EVENT_KEYS = tuple(_NUMBERS) + _BOOLS + ("harmonics", "hang", "setpoint", "ev_limits",
                                         "session", "t_s")

# what each event key does, for docs/formats.md (v2g.docs.generate); ranges come from the
# tables above
EVENT_DOCS = {
    "t_s": "when the event applies, s from the start (0..duration_s)",
    "v_pu": "grid voltage magnitude, per unit of nominal; a number or [a, b, c]",
    "f_hz": "grid frequency, a step",
    "rocof_hz_s": "frequency ramp; goes with until_hz, where the ramp stops",
    "until_hz": "end frequency of a rocof_hz_s ramp",
    "phase_jump_deg": "phase jump of the grid voltage; a number or [a, b, c]",
    "harmonics": "list of {order, pu, phase_deg}: voltage harmonics on top of the "
                 "fundamental (replace any before)",
    "neg_seq_pu": "negative-sequence voltage, per unit",
    "noise_pu_rms": "white noise on the measured voltages, per unit RMS",
    "island": "true opens the grid breaker and leaves a parallel RLC load matched to the "
              "unit's output (quality factor 1, resonant at nominal frequency)",
    "ambient_c": "ambient temperature of the power stage",
    "fan_fail": "true stops the fan (its tach reads 0)",
    "contactor_weld": "true welds the main DC contactor (it stays closed when opened)",
    "ntc_open": "true opens the module NTC (its reading goes to full scale)",
    "hang": "stop a part of the firmware: one of " + ", ".join(HANG_TARGETS)
            + " (the watchdog is expected to act)",
    "setpoint": "{id, p_w, q_var}: an idempotent power setpoint (p_w > 0 charges the "
                "vehicle, < 0 exports; q_var > 0 absorbs)",
    "permit_service": "the operator's permission to enter service",
    "ev_limits": "{max_charge_w, max_discharge_w, soc_min}: the vehicle's limits, "
                 "enforced every supervisor cycle",
    "session": "start or stop a charging session; stop ceases power and opens the DC "
               "contactors, as a session end does",
}


def event_table():
    """[(key, allowed values, meaning)] for every event key, as the validator enforces
    them (the docs are generated from this)."""
    def num(x):
        return "%d" % x if float(x).is_integer() else "%g" % x

    def rng(lo, hi, unit):
        return ("%s..%s %s" % (num(lo), num(hi), unit)).strip()

    rows = []
    for key in EVENT_KEYS:
        if key == "t_s":
            allowed = "0..duration_s s"
        elif key in _NUMBERS:
            kind, lo, hi, unit = _NUMBERS[key]
            allowed = rng(lo, hi, unit) + (" (or [a, b, c])" if kind == "phases" else "")
        elif key in _BOOLS:
            allowed = "true / false"
        elif key == "hang":
            allowed = " / ".join('"%s"' % t for t in HANG_TARGETS)
        elif key == "session":
            allowed = " / ".join('"%s"' % t for t in SESSION_ACTIONS)
        else:
            fields = {"harmonics": HARMONIC_FIELDS, "setpoint": SETPOINT_FIELDS,
                      "ev_limits": EV_LIMIT_FIELDS}[key]
            allowed = ", ".join("%s %s" % (f, rng(*r)) for f, r in fields.items())
            if key == "setpoint":
                allowed = "id (string or integer), " + allowed
            if key == "harmonics":
                allowed = "list of {" + allowed + "}; order a whole number"
        rows.append((key, allowed, EVENT_DOCS[key]))
    return rows


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class _Checker:
    def __init__(self, name):
        self.name = name
        self.errors = []

    def err(self, where, msg):
        self.errors.append("%s: %s: %s" % (self.name, where, msg))

    def number(self, where, v, lo, hi, unit=""):
        if not _is_num(v):
            self.err(where, "value %r is not a number; allowed %g..%g %s" % (v, lo, hi, unit))
            return False
        if not lo <= v <= hi:
            self.err(where, "value %r outside %g..%g %s" % (v, lo, hi, unit))
            return False
        return True

    def keys(self, where, obj, allowed):
        if not isinstance(obj, dict):
            self.err(where, "value %r is not an object" % (obj,))
            return False
        for k in obj:
            if k not in allowed:
                self.err("%s.%s" % (where, k) if where else k,
                         "unknown key; allowed: %s" % ", ".join(allowed))
        return True


def _check_event(c, i, ev, duration):
    where = "events[%d]" % i
    if not c.keys(where, ev, EVENT_KEYS):
        return
    if "t_s" not in ev:
        c.err(where, "missing key 't_s'")
    else:
        c.number(where + ".t_s", ev["t_s"], 0.0, duration, "s (0..duration_s)")
    if len([k for k in ev if k != "t_s"]) == 0:
        c.err(where, "no action: give at least one of %s" % ", ".join(EVENT_KEYS[:-1]))
    for key, (kind, lo, hi, unit) in _NUMBERS.items():
        if key not in ev:
            continue
        v = ev[key]
        if kind == "phases" and isinstance(v, list):
            if len(v) != 3:
                c.err("%s.%s" % (where, key), "value %r: give a number or [a, b, c]" % (v,))
            for j, x in enumerate(v[:3]):
                c.number("%s.%s[%d]" % (where, key, j), x, lo, hi, unit)
        else:
            c.number("%s.%s" % (where, key), v, lo, hi, unit)
    if ("rocof_hz_s" in ev) != ("until_hz" in ev):
        c.err(where, "rocof_hz_s and until_hz go together")
    for key in _BOOLS:
        if key in ev and not isinstance(ev[key], bool):
            c.err("%s.%s" % (where, key), "value %r is not true/false" % (ev[key],))
    if "harmonics" in ev:
        hs = ev["harmonics"]
        if not isinstance(hs, list):
            c.err(where + ".harmonics", "value %r is not a list" % (hs,))
        else:
            for j, h in enumerate(hs):
                hw = "%s.harmonics[%d]" % (where, j)
                if not c.keys(hw, h, tuple(HARMONIC_FIELDS)):
                    continue
                order = h.get("order")
                lo, hi, _ = HARMONIC_FIELDS["order"]
                if not (isinstance(order, int) and not isinstance(order, bool)
                        and lo <= order <= hi):
                    c.err(hw + ".order", "value %r: allowed whole numbers %d..%d"
                          % (order, lo, hi))
                c.number(hw + ".pu", h.get("pu"), *HARMONIC_FIELDS["pu"])
                if "phase_deg" in h:
                    c.number(hw + ".phase_deg", h["phase_deg"],
                             *HARMONIC_FIELDS["phase_deg"])
    if "hang" in ev and ev["hang"] not in HANG_TARGETS:
        c.err(where + ".hang", "value %r names no part of the firmware; allowed: %s"
              % (ev["hang"], ", ".join('"%s"' % t for t in HANG_TARGETS)))
    if "setpoint" in ev:
        sp = ev["setpoint"]
        sw = where + ".setpoint"
        if c.keys(sw, sp, ("id",) + tuple(SETPOINT_FIELDS)):
            if "id" not in sp or not isinstance(sp["id"], (str, int)) or isinstance(
                    sp["id"], bool):
                c.err(sw + ".id", "missing or not a string/integer: %r" % (sp.get("id"),))
            for k, r in SETPOINT_FIELDS.items():
                if k in sp:
                    c.number("%s.%s" % (sw, k), sp[k], *r)
    if "session" in ev and ev["session"] not in SESSION_ACTIONS:
        c.err(where + ".session", "value %r: allowed %s" % (
            ev["session"], " or ".join('"%s"' % a for a in SESSION_ACTIONS)))
    if "ev_limits" in ev:
        lim = ev["ev_limits"]
        lw = where + ".ev_limits"
        if c.keys(lw, lim, tuple(EV_LIMIT_FIELDS)):
            for k, r in EV_LIMIT_FIELDS.items():
                if k in lim:
                    c.number("%s.%s" % (lw, k), lim[k], *r)


def load(path, params_module=None):
    """Read and validate ``path``; returns the normalised scenario dict or raises
    ``UsageError`` listing every problem."""
    path = Path(path)
    name = path.name
    try:
        text = path.read_text()
    except OSError as e:
        raise UsageError("%s: cannot read: %s" % (path, e.strerror or e)) from None
    try:
        sc = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError("%s: line %d column %d: malformed JSON: %s"
                         % (name, e.lineno, e.colno, e.msg)) from None
    return validate(sc, name, params_module)


def validate(sc, name="scenario", params_module=None):
    params_module = params_module or firmware_params()
    c = _Checker(name)
    if not c.keys("", sc, ("name", "duration_s", "grid", "initial", "config", "events")):
        raise UsageError("\n".join(c.errors))
    if not isinstance(sc.get("name", ""), str):
        c.err("name", "value %r is not a string" % (sc["name"],))
    duration = sc.get("duration_s")
    if duration is None:
        c.err("duration_s", "missing; allowed 0..%g s" % MAX_DURATION_S)
        duration = MAX_DURATION_S
    elif not c.number("duration_s", duration, 1e-3, MAX_DURATION_S, "s"):
        duration = MAX_DURATION_S
    grid = sc.get("grid", {})
    if c.keys("grid", grid, ("v_nom_ln_rms", "f_nom_hz", "category")):
        if "v_nom_ln_rms" in grid:
            c.number("grid.v_nom_ln_rms", grid["v_nom_ln_rms"], 100.0, 400.0, "V")
        if "f_nom_hz" in grid and grid["f_nom_hz"] not in (50, 60):
            c.err("grid.f_nom_hz", "value %r: allowed 50 or 60 Hz" % (grid["f_nom_hz"],))
        if "category" in grid and grid["category"] not in CATEGORIES:
            c.err("grid.category", "value %r: allowed %s" % (grid["category"],
                                                            ", ".join(CATEGORIES)))
    init = sc.get("initial", {})
    if c.keys("initial", init, ("v_pu", "f_hz", "ambient_c", "soc")):
        for k, lo, hi, unit in (("v_pu", 0.0, 2.0, "pu"), ("f_hz", 40.0, 70.0, "Hz"),
                                ("ambient_c", -40.0, 70.0, "C"), ("soc", 0.0, 1.0, "")):
            if k in init:
                c.number("initial." + k, init[k], lo, hi, unit)
    events = sc.get("events", [])
    if not isinstance(events, list):
        c.err("events", "value is not a list")
        events = []
    for i, ev in enumerate(events):
        _check_event(c, i, ev, duration)
    cfg = sc.get("config", {})
    merged = {}
    if c.keys("config", cfg, tuple(r[params_module.NAME] for r in params_module.TABLE)):
        merged = dict(cfg)
        merged.setdefault("f_nom_hz", grid.get("f_nom_hz", 50) if isinstance(grid, dict)
                          else 50)
        merged.setdefault("v_nom_ln_rms", grid.get("v_nom_ln_rms", 230.0)
                          if isinstance(grid, dict) else 230.0)
        if isinstance(grid, dict) and grid.get("category") in CATEGORIES:
            # the grid's IEEE 1547 category sets the firmware's, unless config names one
            merged.setdefault("abnormal_category", CATEGORIES.index(grid["category"]) + 1)
        _, errors = params_module.validate(merged)
        for e in errors:
            c.err("config", e)
    if c.errors:
        raise UsageError("\n".join(c.errors))
    order = sorted(range(len(events)), key=lambda i: (events[i]["t_s"], i))
    return {
        "name": sc.get("name", Path(name).stem),
        "duration_s": float(duration),
        "grid": {"v_nom_ln_rms": float(grid.get("v_nom_ln_rms", 230.0)),
                 "f_nom_hz": int(grid.get("f_nom_hz", 50)),
                 "category": grid.get("category", "II")},
        "initial": {"v_pu": init.get("v_pu", 1.0), "f_hz": float(init.get("f_hz",
                                                                          grid.get("f_nom_hz", 50))),
                    "ambient_c": float(init.get("ambient_c", 25.0)),
                    "soc": float(init.get("soc", 0.8))},
        "config": merged,
        "events": [events[i] for i in order],
    }


def firmware_params():
    """The firmware's parameter table module, imported under CPython."""
    from v2g.common.runtime import import_firmware_cpython

    import_firmware_cpython()
    import params  # noqa: PLC0415 (firmware module, on sys.path from the line above)

    return params
