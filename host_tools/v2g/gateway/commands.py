"""Validation of the back end's commands to a station and the answer to a demand signal.

``v2g/<station>/cmd/setpoint`` (idempotent by id; the daemon passes it to the board's
supervisor, whose idempotent path ignores an id it has applied)::

    {"id": "sp-17", "p_w": -7000, "q_var": 0}

``p_w`` in W, > 0 importing (EV charging), < 0 exporting (V2G), within
``[-max_export_w, max_import_w]``; ``q_var`` in var within ``±max_q_var`` (default 0).

``v2g/<station>/demand`` (the grid's demand signal)::

    {"id": "d-5", "export_w": 5000, "duration_s": 900}     (or "import_w")

answered on ``v2g/<station>/offer`` with what the vehicle can deliver above its SoC floor
within its limits (``make_offer``); the accepted part becomes a setpoint with id
``demand-<id>``.

Both raise ``CommandError`` naming the field and the bad value; at run time the publisher
logs it and drops the message (the board keeps its setpoint).

Context: host (daemon).
"""

import json

ID_MAX = 64


class CommandError(ValueError):
    """A command payload that does not validate; the message names field and value."""


def _obj(payload, what, station):
    try:
        d = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CommandError("%s: not valid JSON (%s)" % (what, e)) from None
    if not isinstance(d, dict):
        raise CommandError("%s: a JSON object is required, got %s" % (what, type(d).__name__))
    if "id" not in d:
        raise CommandError("%s: field 'id' missing" % what)
    i = d["id"]
    ok = (isinstance(i, str) and 1 <= len(i) <= ID_MAX and i.isprintable()) or \
        (type(i) is int and i >= 0)
    if not ok:
        raise CommandError("%s: field 'id' %r: a string of 1..%d printable characters or an "
                           "integer >= 0" % (what, i, ID_MAX))
    if "station" in d and d["station"] != station:
        raise CommandError("%s: field 'station' %r: this is station %r"
                           % (what, d["station"], station))
    return d


def _num(d, what, key, lo, hi, default=None):
    if key not in d:
        if default is None:
            raise CommandError("%s: field %r missing" % (what, key))
        return default
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
        raise CommandError("%s: field %r %r: a number is required" % (what, key, v))
    if not lo <= v <= hi:
        raise CommandError("%s: field %r %r: outside the limits %s..%s"
                           % (what, key, v, lo, hi))
    return v


def _no_unknown(d, what, allowed):
    extra = sorted(set(d) - set(allowed))
    if extra:
        raise CommandError("%s: unknown field(s) %s; allowed: %s"
                           % (what, extra, ", ".join(sorted(allowed))))


def parse_setpoint(payload, cfg):
    """Validate a ``cmd/setpoint`` payload against ``cfg``'s limits; returns a dict
    ``{"id", "p_w", "q_var"}``."""
    what = "cmd/setpoint"
    d = _obj(payload, what, cfg.station)
    _no_unknown(d, what, ("id", "p_w", "q_var", "station", "ts"))
    p = _num(d, what, "p_w", -cfg.max_export_w, cfg.max_import_w)
    q = _num(d, what, "q_var", -cfg.max_q_var, cfg.max_q_var, default=0)
    return {"id": d["id"], "p_w": p, "q_var": q}


def parse_demand(payload, cfg):
    """Validate a ``demand`` payload; returns ``{"id", "direction", "p_w", "duration_s"}``
    (``direction`` "export" or "import", ``p_w`` >= 0)."""
    what = "demand"
    d = _obj(payload, what, cfg.station)
    _no_unknown(d, what, ("id", "export_w", "import_w", "duration_s", "station", "ts"))
    if ("export_w" in d) == ("import_w" in d):
        raise CommandError("demand: exactly one of fields 'export_w', 'import_w' is required")
    if "export_w" in d:
        direction, p = "export", _num(d, what, "export_w", 0, cfg.max_export_w)
    else:
        direction, p = "import", _num(d, what, "import_w", 0, cfg.max_import_w)
    dur = _num(d, what, "duration_s", 1, 86400)
    return {"id": d["id"], "direction": direction, "p_w": p, "duration_s": dur}


def make_offer(demand, ev):
    """What the vehicle can deliver for ``demand`` (from ``parse_demand``).

    ``ev``: the EV's state as the daemon knows it, a dict with ``soc_pm`` (permille),
    ``soc_min_pm`` (floor), ``soc_max_pm`` (ceiling, default 1000), ``capacity_wh``,
    ``max_discharge_w``, ``max_charge_w``; None when no EV is connected (offer 0).
    Returns ``{"p_w": accepted power (W, >= 0), "energy_wh": energy over the duration}``.
    """
    if not ev:
        return {"p_w": 0, "energy_wh": 0.0}
    hours = demand["duration_s"] / 3600.0
    if demand["direction"] == "export":
        room_wh = max(0.0, (ev["soc_pm"] - ev["soc_min_pm"]) / 1000.0 * ev["capacity_wh"])
        limit_w = ev["max_discharge_w"]
    else:
        room_wh = max(0.0, (ev.get("soc_max_pm", 1000) - ev["soc_pm"]) / 1000.0
                      * ev["capacity_wh"])
        limit_w = ev["max_charge_w"]
    p = min(demand["p_w"], limit_w, room_wh / hours if hours > 0 else 0.0)
    p = int(max(0.0, p))
    return {"p_w": p, "energy_wh": round(p * hours, 3)}
