"""IEEE 1547-2018 abnormal voltage and frequency response: trip timers, ride-through
regions and the volt-watt limit, stepped by the supervisor every period.

Trip functions (settings from the parameter table, Tables 11-13 and 18):
    OV2, OV1  any phase above the pickup          UV1, UV2  any phase below the pickup
    OF2, OF1  frequency above nominal + offset     UF1, UF2  frequency below nominal - offset
A function trips when its condition has held continuously for its hold time,
``clearing time - margin``, the margin covering the measurement window (half a cycle),
two supervisor periods and one grid cycle to spare, so the unit has ceased to energize at
least a cycle before the standard's clearing time. The tick checks the 0.16 s functions
itself (``grid_measure``); the supervisor's timers cover every function and back the
tick up.

Ride-through regions (Tables 14-16) decide what happens below the trip timers:
``continuous`` and ``mandatory`` keep exchanging current, ``permissive`` keeps it too
(the product rides through where it may), ``momentary`` and ``cease`` stop the current
without tripping and restore it as soon as the voltage is back.

Volt-watt (5.4.2, Table 10): export may not exceed rated power up to ``vw_v1_pu``, falls
linearly to ``vw_p2_pu`` at ``vw_v2_pu`` and stays there above, so injection never pushes
the local voltage further up. Charging (import) is not limited by it.

Context: supervisor (plain Python, floats allowed).
"""

# trip codes latched in protect_fast's latch word (0x41-0x44 are the tick's, grid_measure)
CODES = {"OV2": 0x41, "UV2": 0x42, "OF2": 0x43, "UF2": 0x44,
         "OV1": 0x45, "UV1": 0x46, "OF1": 0x47, "UF1": 0x48, "ISLAND": 0x49}
NAMES = {v: k for k, v in CODES.items()}

# (upper pu, region) from the bottom up; the first row the voltage lies below wins.
# Boundaries as in the tables: below nominal a row is closed underneath and open on top
# (0.65 <= V < 0.88), above nominal open underneath and closed on top (1.10 < V <= 1.20),
# and the continuous band 0.88 <= V <= 1.10 is closed at both ends.
_REGIONS = {
    1: ((0.50, "cease"), (0.70, "permissive"), (0.88, "mandatory"), (1.10, "continuous"),
        (1.20, "permissive"), (99.0, "cease")),
    2: ((0.30, "cease"), (0.65, "permissive"), (0.88, "mandatory"), (1.10, "continuous"),
        (1.20, "permissive"), (99.0, "cease")),
    3: ((0.50, "momentary"), (0.88, "mandatory"), (1.10, "continuous"),
        (1.20, "momentary"), (99.0, "cease")),
}


def region(category, v_min_pu, v_max_pu):
    """The ride-through region of the worst phase (lowest region wins)."""
    rank = {"continuous": 0, "mandatory": 1, "permissive": 2, "momentary": 3, "cease": 4}
    worst = "continuous"
    for v in (v_min_pu, v_max_pu):
        for upper, name in _REGIONS[category]:
            if v < upper if upper < 1.0 else v <= upper:
                break
        if rank[name] > rank[worst]:
            worst = name
    return worst


class GridProtect:
    """Trip timers and regions for one config (``held`` ints of the parameter table)."""

    def __init__(self, held, period_ms):
        f_nom = held["f_nom_hz"]
        cycle_ms = (1000 + f_nom - 1) // f_nom
        self.category = held["abnormal_category"]
        # half a cycle of measurement window, two periods (detection and timer steps),
        # and one grid cycle to spare
        self.margin_ms = (cycle_ms + 1) // 2 + 2 * period_ms + cycle_ms
        # name -> (is_over, pickup, hold_ms, measured quantity: "v" or "f")
        self.functions = []
        for name, over, pu_key, s_key in (("OV2", True, "ov2_pu", "ov2_s"),
                                          ("OV1", True, "ov1_pu", "ov1_s"),
                                          ("UV1", False, "uv1_pu", "uv1_s"),
                                          ("UV2", False, "uv2_pu", "uv2_s")):
            self.functions.append((name, over, held[pu_key] / 100.0,
                                   self._hold(held[s_key] * 10), "v"))
        for name, over, key, s_key, dec in (("OF2", True, "of2_dhz", "of2_s", 100),
                                            ("OF1", True, "of1_dhz", "of1_s", 10),
                                            ("UF1", False, "uf1_dhz", "uf1_s", 10),
                                            ("UF2", False, "uf2_dhz", "uf2_s", 100)):
            offset = held[key] / 10.0
            pickup = f_nom + offset if over else f_nom - offset
            clearing_ms = held[s_key] * (1000 // dec)
            self.functions.append((name, over, pickup, self._hold(clearing_ms), "f"))
        self.since = {}  # name -> time the condition started (ms)
        self.vw = (bool(held["vw_enable"]), held["vw_v1_pu"] / 100.0,
                   held["vw_v2_pu"] / 100.0, held["vw_p2_pu"] / 100.0)

    def _hold(self, clearing_ms):
        return max(0, clearing_ms - self.margin_ms)

    def step(self, now_ms, v_min_pu, v_max_pu, f_hz, f_valid=True):
        """Advance the timers. Returns ``(name, detail)`` of the first function whose hold
        time has run out, else None. ``f_valid`` False (PLL unlocked) freezes the frequency
        timers: a frequency that cannot be measured is not taken as out of range."""
        for name, over, pickup, hold_ms, what in self.functions:
            if what == "v":
                value = v_max_pu if over else v_min_pu
            elif not f_valid:
                self.since.pop(name, None)
                continue
            else:
                value = f_hz
            beyond = value > pickup if over else value < pickup
            if not beyond:
                self.since.pop(name, None)
                continue
            start = self.since.setdefault(name, now_ms)
            if now_ms - start >= hold_ms:
                unit = "pu" if what == "v" else "Hz"
                return name, "%s=%.3f%s pickup=%.3f%s for %dms" % (
                    "v_max" if (what == "v" and over) else ("v_min" if what == "v" else "f"),
                    value, unit, pickup, unit, now_ms - start)
        return None

    def reset(self):
        self.since = {}

    def region(self, v_min_pu, v_max_pu):
        return region(self.category, v_min_pu, v_max_pu)

    def export_limit_pu(self, v_max_pu):
        """Volt-watt: the largest export allowed at this voltage, per unit of rated."""
        on, v1, v2, p2 = self.vw
        if not on or v_max_pu <= v1:
            return 1.0
        if v_max_pu >= v2:
            return p2
        return 1.0 - (1.0 - p2) * (v_max_pu - v1) / (v2 - v1)
