"""The site plan: one import/export limit shared by many stations (pure functions).

Sign convention as on ``cmd/setpoint``: ``p_w`` > 0 imports (EV charging), < 0 exports.
Inside the plan every amount is a *magnitude in the plan's direction* (export W in export
mode, import W in import mode), so both directions run through the same code.

One period (``make_plan``):

1. **Limits.** ``site_limits``: the export limit is the smallest of the transformer rating,
   the grid-connection agreement and the utility's demand signal; likewise for import.
2. **Stale readings count as no headroom** (fail safe, after evcc's circuit): a station
   whose telemetry is older than ``stale_s`` (or missing) is commanded to 0 (a decrease,
   always allowed) and *reserved* at the worst of its last command and its last measured
   power until it reports again. With no fresh reading at all, nothing increases.
3. **Shares.** Export is shared in proportion to each vehicle's energy above its SoC floor;
   import in proportion to its need (energy to its SoC ceiling). ``water_fill`` caps each
   share at the station's and the EV's limit and hands what a capped station cannot take
   to the others, in the same proportion.
4. **Ramps.** Increases are limited per station (``ramp_w_s``) and for the site
   (``site_ramp_w_s``: given out in whole station steps, largest deficit first, so a
   thousand stations are not each sent a sliver every period); decreases are not limited:
   they are the safe direction and a lower limit must hold within a second.
5. **Headroom** (evcc: only increases are capped to the headroom): increases together stay
   within ``limit - sum(max(command, measured))`` over all stations after this period's
   decreases, so a station that has not yet followed its decrease still counts at its
   measured power.
6. **Deadband.** A change smaller than ``deadband_w`` is not sent (the previous command
   stays) unless the commands would then exceed the budget: then the largest excesses are
   cut to their targets until the sum fits. Commands therefore never sum above the limit.

Context: host (SEMS).
"""

from dataclasses import dataclass, field


@dataclass
class Station:
    """What the SEMS knows of one station this period."""
    id: str
    max_export_w: float          # station rating (site file)
    max_import_w: float
    ramp_w_s: float = 1e12       # station ramp rate, W/s
    p_w: float | None = None     # last measured power (telemetry), > 0 import
    age_s: float | None = None   # age of that reading; None = never reported
    ev: dict | None = None       # soc_pm, soc_min_pm, soc_max_pm, capacity_wh,
    #                              max_charge_w, max_discharge_w; None = no EV
    sp_w: float = 0.0            # the command it holds (last sent)


@dataclass
class Plan:
    mode: str                    # "export" | "import" | "idle"
    limit_w: float               # magnitude limit in the plan's direction
    setpoints: dict              # station -> p_w (signed), every station
    targets: dict                # station -> p_w the shares ask for before ramps/headroom
    reserve_w: float = 0.0       # held for stale stations
    headroom_w: float = 0.0
    stale: list = field(default_factory=list)
    changed: list = field(default_factory=list)   # stations whose command changes


def site_limits(transformer_w, grid_export_w, grid_import_w, demand=None):
    """(export_limit_w, import_limit_w, mode) from the ratings and the demand signal.

    ``demand``: None, ``{"export_w": X}`` (the utility asks the site to export up to X:
    export mode) or ``{"import_w": Y}`` (charging capped at Y: import mode). With no demand
    the site charges by need within its import limit.
    """
    exp = min(transformer_w, grid_export_w)
    imp = min(transformer_w, grid_import_w)
    mode = "import"
    if demand:
        if "export_w" in demand:
            exp = min(exp, demand["export_w"])
            mode = "export"
        if "import_w" in demand:
            imp = min(imp, demand["import_w"])
    return max(0.0, exp), max(0.0, imp), mode


def water_fill(weights, caps, total):
    """Share ``total`` in proportion to ``weights``, each share at most its cap.

    Returns {key: share}; sum(shares) == min(total, sum(caps of positive weight)).
    """
    out = {k: 0.0 for k in weights}
    active = {k for k, w in weights.items() if w > 0 and caps.get(k, 0) > 0}
    left = max(0.0, total)
    while active and left > 1e-9:
        wsum = sum(weights[k] for k in active)
        lam = left / wsum
        capped = {k for k in active if out[k] + lam * weights[k] >= caps[k] - 1e-9}
        if not capped:
            for k in active:
                out[k] += lam * weights[k]
            break
        for k in capped:
            left -= caps[k] - out[k]
            out[k] = caps[k]
        active -= capped
    return out


def _ev_share(st, mode):
    """(weight, cap) of a station in ``mode`` (magnitudes)."""
    ev = st.ev
    if not ev:
        return 0.0, 0.0
    cap_wh = ev["capacity_wh"]
    if mode == "export":
        w = max(0.0, (ev["soc_pm"] - ev["soc_min_pm"]) / 1000.0 * cap_wh)
        cap = min(ev["max_discharge_w"], st.max_export_w)
    else:
        w = max(0.0, (ev.get("soc_max_pm", 1000) - ev["soc_pm"]) / 1000.0 * cap_wh)
        cap = min(ev["max_charge_w"], st.max_import_w)
    return w, (cap if w > 0 else 0.0)


def make_plan(stations, export_limit_w, import_limit_w, mode, dt_s, site_ramp_w_s=1e12,
              stale_s=3.0, deadband_w=50.0):
    """One period's plan for ``stations`` (a list of ``Station``); see the module doc."""
    sign = -1.0 if mode == "export" else 1.0
    limit = export_limit_w if mode == "export" else import_limit_w
    if mode == "idle":
        limit = 0.0

    def mag(p):  # magnitude of p in the plan's direction
        return max(0.0, sign * p) if p is not None else 0.0

    fresh, stale = [], []
    for st in stations:
        (fresh if st.age_s is not None and st.age_s <= stale_s else stale).append(st)
    reserve = sum(max(mag(st.sp_w), mag(st.p_w)) for st in stale)
    budget = max(0.0, limit - reserve)

    weights, caps = {}, {}
    for st in fresh:
        weights[st.id], caps[st.id] = _ev_share(st, mode) if mode != "idle" else (0.0, 0.0)
    ideal = water_fill(weights, caps, budget)
    targets = {st.id: sign * ideal.get(st.id, 0.0) for st in stations}

    # magnitudes: current command, target after the per-station ramp
    cur = {st.id: mag(st.sp_w) for st in stations}
    new = {}
    for st in stale:
        new[st.id] = 0.0
    for st in fresh:
        want = ideal[st.id]
        if sign * st.sp_w < 0:        # commanded the other way: back to 0 first
            cur[st.id] = 0.0
        new[st.id] = min(want, cur[st.id] + st.ramp_w_s * dt_s)

    # deadband on changes; decreases first (always allowed)
    for k, v in new.items():
        if abs(v - cur[k]) < deadband_w and v != 0.0:
            new[k] = cur[k]
    dec = {k: new[k] for k in new if new[k] <= cur[k]}
    inc = {k: new[k] - cur[k] for k in new if new[k] > cur[k]}
    # headroom after decreases: a station counts at max(command, measured)
    stale_ids = {st.id for st in stale}
    used = 0.0
    for st in stations:
        base = max(mag(st.sp_w), mag(st.p_w)) if st.id in stale_ids else \
            max(dec.get(st.id, cur[st.id]), mag(st.p_w))
        used += base
    headroom = max(0.0, limit - used) if fresh else 0.0
    room = min(headroom, site_ramp_w_s * dt_s)
    # the room goes in whole ramp steps, largest deficit first: few, larger commands
    # (a thousand stations are not each sent a sliver every period) and the stations
    # furthest below their share catch up first
    order = sorted(inc, key=lambda k: (-(ideal.get(k, 0.0) - cur[k]), k))
    for k in order:
        d = min(inc[k], room)
        if d < min(deadband_w, inc[k]):
            d = 0.0
        new[k] = cur[k] + d
        room -= d
    # the commands must fit the budget even where the deadband kept an old one
    total = sum(new.values())
    cap_total = budget
    if total > cap_total + 1e-6:
        excess = sorted(((new[k] - ideal.get(k, 0.0), k) for k in new), reverse=True)
        for ex, k in excess:
            if total <= cap_total + 1e-6 or ex <= 0:
                break
            cut = min(ex, total - cap_total)
            new[k] -= cut
            total -= cut
    setpoints = {}
    changed = []
    for st in stations:
        p = int(sign * int(new[st.id]))
        setpoints[st.id] = p
        if p != round(st.sp_w):
            changed.append(st.id)
    return Plan(mode=mode, limit_w=limit, setpoints=setpoints, targets=targets,
                reserve_w=reserve, headroom_w=headroom, stale=[s.id for s in stale],
                changed=changed)
