"""The site file (stations, limits, scenario events) and station telemetry, validated.

Site file (YAML or JSON; every key checked, errors name the file, the key and the value)::

    site: depot-1
    limits: {transformer_w: 1000000, grid_export_w: 800000, grid_import_w: 900000}
    period_s: 1.0          # plan period
    stale_s: 3.0           # a reading older than this counts as no headroom
    site_ramp_w_s: 200000  # aggregate ramp rate of increases (the site's limit)
    ramp_margin: 0.1       # the plan budgets (1 - margin) x site_ramp_w_s (delivery jitter)
    deadband_w: 50
    lease_s: 3.0           # HA lease
    hold_s: 5.0            # stations are at their safe limit this long after the last heartbeat
    fallback_lead_s: 0.0   # ... starting the fallback this much earlier (below hold_s)
    safe_export_w: 0       # ... then fall back to this export limit
    safe_import_w: 0       #     and this import limit
    telemetry_s: 1.0       # the emulator's telemetry period
    heartbeat_s: 1.0       # SEMS heartbeat period (keep well below hold_s)
    dispatch_connections: 1  # SEMS connections the setpoints are split over (1..16)
    station_defaults: {max_export_w: 11000, max_import_w: 11000, ramp_w_s: 5000, tau_s: 0.3}
    stations:
      - {id: ST-0001, ev: {soc_pm: 800, soc_min_pm: 200, capacity_wh: 60000,
                           max_discharge_w: 11000, max_charge_w: 11000}}
    generate: {count: 1000, prefix: ST-, seed: 1}   # more stations, EVs drawn at random
    duration_s: 60
    events:
      - {t_s: 10, demand: {export_w: 400000}}
      - {t_s: 20, depart: ST-0001}
      - {t_s: 25, arrive: ST-0001, ev: {soc_pm: 900}}
      - {t_s: 30, kill_sems: active}

Telemetry (``v2g/<station>/telemetry``, QoS 0), what SEMS reads of it::

    {"station": "ST-0001", "seq": 17, "fw": "...", "t": 1700000000.1, "p_w": -5000.0,
     "sp_id": "depot-1-3-17", "ev": {"soc_pm": 812, "soc_min_pm": 200, "soc_max_pm": 1000,
     "capacity_wh": 60000, "max_charge_w": 11000, "max_discharge_w": 11000}}

``ev`` is null with no vehicle. ``parse_telemetry`` raises ``TelemetryError`` naming the
station and field for anything malformed, from an unknown station or out of range; SEMS
logs it and drops it, so the plan never uses it.

Context: host (SEMS, emulator, bench).
"""

import json
import math
import random
import re

import yaml

from v2g.common.errors import UsageError

STATION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")

SITE_KEYS = {
    "site": str, "limits": dict, "period_s": float, "stale_s": float, "site_ramp_w_s": float,
    "ramp_margin": float, "deadband_w": float, "lease_s": float, "hold_s": float, "fallback_lead_s": float,
    "safe_export_w": float, "safe_import_w": float, "telemetry_s": float, "heartbeat_s": float,
    "dispatch_connections": int, "station_defaults": dict, "stations": list,
    "generate": dict, "duration_s": float, "events": list,
}
DEFAULTS = {"period_s": 1.0, "stale_s": 3.0, "site_ramp_w_s": 1e12, "ramp_margin": 0.0,
            "deadband_w": 50.0,
            "lease_s": 3.0, "hold_s": 5.0, "fallback_lead_s": 0.0, "safe_export_w": 0.0,
            "safe_import_w": 0.0, "telemetry_s": 1.0, "heartbeat_s": 1.0, "duration_s": 60.0,
            "dispatch_connections": 1}
DISPATCH_CONNECTIONS_MAX = 16
LIMIT_KEYS = ("transformer_w", "grid_export_w", "grid_import_w")
STATION_KEYS = ("max_export_w", "max_import_w", "ramp_w_s", "tau_s")
STATION_DEFAULTS = {"max_export_w": 11000.0, "max_import_w": 11000.0, "ramp_w_s": 5000.0,
                    "tau_s": 0.3}
EV_KEYS = ("soc_pm", "soc_min_pm", "soc_max_pm", "capacity_wh", "max_charge_w",
           "max_discharge_w")
EV_DEFAULTS = {"soc_pm": 800, "soc_min_pm": 200, "soc_max_pm": 1000, "capacity_wh": 60000,
               "max_charge_w": 11000, "max_discharge_w": 11000}


class SiteError(UsageError):
    """A bad site file; the message names file, key and value."""


class TelemetryError(ValueError):
    """Telemetry that must not be used: ``station`` and ``field`` name what was wrong."""

    def __init__(self, station, field, msg):
        super().__init__("telemetry from %s: field %s: %s" % (station, field, msg))
        self.station, self.field = station, field


def _num(where, key, v, lo=0.0, hi=math.inf):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        raise SiteError("%s: %s %r: a number is required" % (where, key, v))
    if not lo <= v <= hi:
        raise SiteError("%s: %s %r: allowed %s..%s" % (where, key, v, lo, hi))
    return float(v)


def _ev(where, d, base=None):
    if not isinstance(d, dict):
        raise SiteError("%s: ev %r: a mapping is required" % (where, d))
    extra = sorted(set(d) - set(EV_KEYS))
    if extra:
        raise SiteError("%s: ev: unknown key(s) %s; allowed: %s" % (where, extra,
                                                                  ", ".join(EV_KEYS)))
    ev = dict(base or EV_DEFAULTS)
    for k, v in d.items():
        hi = 1000 if k.endswith("_pm") else math.inf
        ev[k] = _num(where, "ev." + k, v, 0, hi)
    if ev["capacity_wh"] <= 0:
        raise SiteError("%s: ev.capacity_wh %r: must be > 0" % (where, ev["capacity_wh"]))
    if not ev["soc_min_pm"] <= ev["soc_max_pm"]:
        raise SiteError("%s: ev.soc_min_pm %r above soc_max_pm %r"
                        % (where, ev["soc_min_pm"], ev["soc_max_pm"]))
    return ev


def parse_site(data, path="<site>"):
    """Validate a site file's data; returns a dict with every key filled in and
    ``stations`` as {id: {max_export_w, max_import_w, ramp_w_s, tau_s, ev (or None)}}."""
    if not isinstance(data, dict):
        raise SiteError("%s: a mapping is required at the top level" % path)
    extra = sorted(set(data) - set(SITE_KEYS))
    if extra:
        raise SiteError("%s: unknown key(s) %s; allowed: %s" % (path, extra,
                                                              ", ".join(sorted(SITE_KEYS))))
    for k, t in SITE_KEYS.items():
        if k in data and t is not float and not isinstance(data[k], t):
            raise SiteError("%s: %s %r: a %s is required" % (path, k, data[k], t.__name__))
    site = dict(DEFAULTS)
    site["site"] = data.get("site", "site")
    if not STATION_RE.match(site["site"]):
        raise SiteError("%s: site %r: 1..32 of A-Z a-z 0-9 - _" % (path, site["site"]))
    for k in DEFAULTS:
        if k in data:
            site[k] = _num(path, k, data[k])
    for k in ("period_s", "stale_s", "lease_s", "telemetry_s", "heartbeat_s"):
        if site[k] <= 0:
            raise SiteError("%s: %s %r: must be > 0" % (path, k, site[k]))
    n = site["dispatch_connections"] = int(site["dispatch_connections"])  # an int (SITE_KEYS)
    if not 1 <= n <= DISPATCH_CONNECTIONS_MAX:
        raise SiteError("%s: dispatch_connections %r: an integer 1..%d" % (
            path, n, DISPATCH_CONNECTIONS_MAX))
    if site["ramp_margin"] >= 1.0:
        raise SiteError("%s: ramp_margin %r: 0 <= margin < 1 (a fraction of site_ramp_w_s)"
                        % (path, site["ramp_margin"]))
    if site["fallback_lead_s"] >= site["hold_s"] > 0:
        raise SiteError("%s: fallback_lead_s %r: must be below hold_s %r"
                        % (path, site["fallback_lead_s"], site["hold_s"]))
    lim = data.get("limits")
    if lim is None:
        raise SiteError("%s: limits: required (%s)" % (path, ", ".join(LIMIT_KEYS)))
    for k in lim:
        if k not in LIMIT_KEYS:
            raise SiteError("%s: limits: unknown key %r; allowed: %s"
                            % (path, k, ", ".join(LIMIT_KEYS)))
    site["limits"] = {}
    for k in LIMIT_KEYS:
        if k not in lim:
            raise SiteError("%s: limits.%s: required" % (path, k))
        site["limits"][k] = _num(path, "limits." + k, lim[k])
    sd = dict(STATION_DEFAULTS)
    for k, v in (data.get("station_defaults") or {}).items():
        if k not in STATION_KEYS:
            raise SiteError("%s: station_defaults: unknown key %r; allowed: %s"
                            % (path, k, ", ".join(STATION_KEYS)))
        sd[k] = _num(path, "station_defaults." + k, v)
    stations = {}
    for i, s in enumerate(data.get("stations") or []):
        where = "%s: stations[%d]" % (path, i)
        if not isinstance(s, dict) or "id" not in s:
            raise SiteError("%s: a mapping with an 'id' is required, got %r" % (where, s))
        sid = s["id"]
        if not isinstance(sid, str) or not STATION_RE.match(sid):
            raise SiteError("%s: id %r: 1..32 of A-Z a-z 0-9 - _, starting with a letter or "
                            "digit" % (where, sid))
        if sid in stations:
            raise SiteError("%s: id %r: duplicate station id" % (where, sid))
        extra = sorted(set(s) - set(STATION_KEYS) - {"id", "ev"})
        if extra:
            raise SiteError("%s (%s): unknown key(s) %s" % (where, sid, extra))
        st = dict(sd)
        for k in STATION_KEYS:
            if k in s:
                st[k] = _num("%s (%s)" % (where, sid), k, s[k])
        st["ev"] = None if s.get("ev") is None else _ev("%s (%s)" % (where, sid), s["ev"])
        stations[sid] = st
    gen = data.get("generate")
    if gen:
        _generate(path, gen, sd, stations)
    if not stations:
        raise SiteError("%s: stations: at least one station is required" % path)
    site["stations"] = stations
    site["station_defaults"] = sd
    site["events"] = _events(path, data.get("events") or [], stations)
    return site


def _generate(path, gen, sd, stations):
    allowed = ("count", "prefix", "seed")
    for k in gen:
        if k not in allowed:
            raise SiteError("%s: generate: unknown key %r; allowed: %s"
                            % (path, k, ", ".join(allowed)))
    n = int(_num(path, "generate.count", gen.get("count", 0), 0, 100000))
    prefix = gen.get("prefix", "ST-")
    rng = random.Random(gen.get("seed", 1))
    for i in range(1, n + 1):
        sid = "%s%04d" % (prefix, i)
        if not STATION_RE.match(sid):
            raise SiteError("%s: generate.prefix %r makes the bad id %r" % (path, prefix, sid))
        if sid in stations:
            raise SiteError("%s: generate: id %r: duplicate station id" % (path, sid))
        ev = dict(EV_DEFAULTS, soc_pm=rng.randint(400, 900), soc_min_pm=rng.choice((200, 300)),
                  capacity_wh=rng.choice((40000, 60000, 80000)),
                  max_discharge_w=rng.choice((7000, 11000)))
        stations[sid] = dict(sd, ev=ev)


def _events(path, events, stations):
    out = []
    for i, e in enumerate(events):
        where = "%s: events[%d]" % (path, i)
        if not isinstance(e, dict) or "t_s" not in e:
            raise SiteError("%s: a mapping with 't_s' is required, got %r" % (where, e))
        t = _num(where, "t_s", e["t_s"])
        kinds = set(e) - {"t_s", "ev"}
        if len(kinds) != 1 or not kinds <= {"demand", "depart", "arrive", "kill_sems"}:
            raise SiteError("%s: exactly one of demand, depart, arrive, kill_sems is "
                            "required, got %s" % (where, sorted(kinds)))
        kind = kinds.pop()
        ev = {"t_s": t, "kind": kind}
        if kind == "demand":
            d = e["demand"]
            if not isinstance(d, dict) or not d or set(d) - {"export_w", "import_w"}:
                raise SiteError("%s: demand %r: {export_w: W} and/or {import_w: W}"
                                % (where, d))
            ev["demand"] = {k: _num(where, "demand." + k, v) for k, v in d.items()}
        elif kind in ("depart", "arrive"):
            sid = e[kind]
            if sid not in stations:
                raise SiteError("%s: %s %r: unknown station (not in stations)"
                                % (where, kind, sid))
            ev["station"] = sid
            if kind == "arrive":
                base = stations[sid]["ev"] or EV_DEFAULTS
                ev["ev"] = _ev(where, e.get("ev") or {}, base)
        else:
            if e["kill_sems"] not in ("active", "all"):
                raise SiteError("%s: kill_sems %r: 'active' or 'all'" % (where, e["kill_sems"]))
            ev["which"] = e["kill_sems"]
        out.append(ev)
    return sorted(out, key=lambda x: x["t_s"])


def load_site(path):
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise SiteError("%s: cannot read: %s" % (path, e.strerror)) from None
    except yaml.YAMLError as e:
        raise SiteError("%s: not valid YAML/JSON: %s" % (path, e)) from None
    return parse_site(data, str(path))


def parse_telemetry(topic, payload, stations):
    """Validate one telemetry message; returns (station, reading dict).

    ``stations``: the site's station table (ratings bound ``p_w``).
    """
    parts = topic.split("/")
    sid = parts[1] if len(parts) == 3 else topic
    if sid not in stations:
        raise TelemetryError(sid, "station", "unknown station (not in the site file)")
    try:
        d = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TelemetryError(sid, "payload", "not valid JSON (%s)" % e) from None
    if not isinstance(d, dict):
        raise TelemetryError(sid, "payload", "a JSON object is required")
    if d.get("station") != sid:
        raise TelemetryError(sid, "station", "%r does not match the topic" % d.get("station"))
    st = stations[sid]

    def num(obj, key, lo, hi, name=None):
        v = obj.get(key) if isinstance(obj, dict) else None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
            raise TelemetryError(sid, name or key, "%r: a number is required" % (v,))
        if not lo <= v <= hi:
            raise TelemetryError(sid, name or key, "%r outside %s..%s" % (v, lo, hi))
        return float(v)

    seq = d.get("seq")
    if type(seq) is not int or seq < 0:
        raise TelemetryError(sid, "seq", "%r: an integer >= 0 is required" % (seq,))
    out = {"seq": seq, "t": num(d, "t", 0, 1e11),
           "p_w": num(d, "p_w", -1.1 * st["max_export_w"] - 100,
                      1.1 * st["max_import_w"] + 100),
           "sp_id": d.get("sp_id"), "ev": None}
    ev = d.get("ev")
    if ev is not None:
        if not isinstance(ev, dict):
            raise TelemetryError(sid, "ev", "%r: an object or null is required" % (ev,))
        e = {}
        for k in ("soc_pm", "soc_min_pm"):
            e[k] = num(ev, k, 0, 1000, "ev." + k)
        e["soc_max_pm"] = num(ev, "soc_max_pm", 0, 1000, "ev.soc_max_pm") \
            if "soc_max_pm" in ev else 1000.0
        e["capacity_wh"] = num(ev, "capacity_wh", 1, 1e7, "ev.capacity_wh")
        e["max_charge_w"] = num(ev, "max_charge_w", 0, 1e7, "ev.max_charge_w")
        e["max_discharge_w"] = num(ev, "max_discharge_w", 0, 1e7, "ev.max_discharge_w")
        out["ev"] = e
    return sid, out
