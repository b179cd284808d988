"""Drive the plant alone (no firmware) from a JSON spec: tests, bench, cross-runtime checks.

Runs on the MicroPython unix runtime and under CPython with identical output lines::

    micropython plant_runner.py SPEC.json        (MICROPYPATH: this folder)
    python plant_runner.py SPEC.json

SPEC keys (all optional except ticks):
- ``plant``: Plant keyword arguments (tick_hz, main_closed, ...);
- ``ticks``: how many ticks to run; ``slow_every`` (ticks, default tick_hz // 1000) and
  ``slow_dt_ms`` (default 1000 * slow_every / tick_hz);
- ``events``: ``[[tick, {scenario event}], ...]`` applied before that tick's sample;
- ``contactor``: ``[[tick, main, pre], ...]``; ``fan``: ``[[tick, duty_pct], ...]``;
  ``thermal_i_rms_a``: ``[[tick, amps or null], ...]`` (thermal test hook);
- ``drive``: how the converter is switched (gates off without it):
  ``{"mode": "sine", "u_pu", "phase_deg", "f_hz"}``: converter voltage
  ``u_pu * cos(theta(t_mid) + phase - k*2pi/3)`` from duties, theta from the plant's
  initial angle at f_hz (default f_nom), evaluated at mid-tick;
  ``{"mode": "current", "i_pu", "phase_deg", "f_hz", "gain"}``: a stationary-frame
  proportional current controller with voltage feed-forward, on the ADC words,
  reference ``i_pu * cos(theta(t_next) + phase - k*2pi/3)``;
  ``{"mode": "fixed", "duty": [a, b, c]}``; each with ``on_from``/``off_at`` ticks;
- ``record``: ``{"every": 1, "from": 0, "adc": true, "truth": [keys], "hex": false}``
  prints ``R tick w0..w6 truth...`` lines (``hex``: floats as the hex of their IEEE bits);
- ``final``: truth keys printed as ``F key value`` at the end (hex with record.hex);
- ``bench``: ticks to time sample+advance (after the run), prints ``BENCH ...``;
- ``heap_lock``: ticks to run sample+advance under micropython.heap_lock(), prints
  ``HEAPLOCK ok|MemoryError``.
"""

import json
import math
import struct
import sys
import time
from array import array

try:
    from binascii import hexlify
except ImportError:  # pragma: no cover
    from ubinascii import hexlify

import plant as plant_mod

MPY = sys.implementation.name == "micropython"


def _hex(x):
    return hexlify(struct.pack(">d", float(x))).decode()


def _fmt(x, as_hex):
    if isinstance(x, float):
        return _hex(x) if as_hex else "%.9e" % x
    return str(x)


def _now():
    return time.ticks_us() if MPY else time.perf_counter_ns()


def _elapsed_ns(t0, t1):
    return time.ticks_diff(t1, t0) * 1000 if MPY else t1 - t0


class Drive:
    def __init__(self, spec, plant, theta0):
        self.spec = spec or {}
        self.mode = self.spec.get("mode")
        self.on_from = self.spec.get("on_from", 0)
        self.off_at = self.spec.get("off_at", 1 << 60)
        self.plant = plant
        self.theta0 = theta0
        f = self.spec.get("f_hz", plant.f_nom_hz)
        self.w = 2.0 * math.pi * f
        self.phase = math.radians(self.spec.get("phase_deg", 0.0))
        self.pw = array("i", [plant.period, 0, plant.period // 2, plant.period // 2,
                              plant.period // 2])
        self.t = 1.0 / plant.tick_hz
        lf = plant.prm["x_filter_pu"] / plant.w_nom
        self.kp = self.spec.get("gain", 0.7) * lf / self.t

    def duties(self, n, raw):
        """Set self.pw for tick n; return pwm_on."""
        if self.mode is None or n < self.on_from or n >= self.off_at:
            return 0
        per = self.plant.period
        vdc = max(self.plant.v_dc_v / self.plant.v_base_v, 0.05)
        third = 2.0 * math.pi / 3.0
        if self.mode == "fixed":
            for k in range(3):
                self.pw[2 + k] = self.spec["duty"][k]
            return 1
        if self.mode == "sine":
            th = self.theta0 + self.w * (n + 0.5) * self.t + self.phase
            u = [self.spec["u_pu"] * math.cos(th - k * third) for k in range(3)]
        else:  # current
            th = self.theta0 + self.w * (n + 1) * self.t + self.phase
            u = []
            for k in range(3):
                v = (raw[k] - 32768) / 8192.0
                i = (raw[3 + k] - 32768) / 8192.0
                i_ref = self.spec["i_pu"] * math.cos(th - k * third)
                u.append(v + self.kp * (i - i_ref))
        for k in range(3):
            d = int(math.floor(per * 0.5 + u[k] / vdc * per + 0.5))
            self.pw[2 + k] = max(0, min(per, d))
        return 1


def _sched(spec, key):
    out = {}
    for item in spec.get(key, []):
        out.setdefault(item[0], []).append(item[1:])
    return out


def run(spec):
    p = plant_mod.Plant(**spec.get("plant", {}))
    ticks = spec["ticks"]
    slow_every = spec.get("slow_every", max(1, p.tick_hz // 1000))
    slow_dt = spec.get("slow_dt_ms", 1000.0 * slow_every / p.tick_hz)
    events = _sched(spec, "events")
    cont = _sched(spec, "contactor")
    fans = _sched(spec, "fan")
    therm = _sched(spec, "thermal_i_rms_a")
    rec = spec.get("record")
    as_hex = bool(rec and rec.get("hex"))
    drive = Drive(spec.get("drive"), p, p.grid_theta_rad())
    raw = array("i", [0] * 7)
    out = sys.stdout
    for n in range(ticks):
        if n in events:
            for (ev,) in events[n]:
                p.event(ev)
        if n in cont:
            for main, pre in cont[n]:
                p.contactor_cmd(main, pre)
        if n in fans:
            for (duty,) in fans[n]:
                p.fan(duty)
        if n in therm:
            for (amps,) in therm[n]:
                p._thermal_i_rms = amps
        p.sample(raw)
        if rec and n >= rec.get("from", 0) and (n - rec.get("from", 0)) % rec.get("every", 1) == 0:
            parts = ["R", str(n)]
            if rec.get("adc", True):
                parts.extend(str(raw[k]) for k in range(7))
            keys = rec.get("truth", [])
            if keys:
                tr = p.truth()
                parts.extend(_fmt(tr[k], as_hex) for k in keys)
            out.write(" ".join(parts) + "\n")
        on = drive.duties(n, raw)
        p.advance(drive.pw, on)
        if (n + 1) % slow_every == 0:
            p.slow(slow_dt)
    tr = p.truth()
    for k in spec.get("final", []):
        out.write("F %s %s\n" % (k, _fmt(tr[k], as_hex)))
    if spec.get("bench"):
        bench(p, spec["bench"], slow_every, slow_dt, out)
    if spec.get("heap_lock"):
        heap_lock(p, spec["heap_lock"], out)
    return p


def _duty_table(p, u_pu=0.95):
    """One grid period of balanced duty triples (ints), so the timed loop has no floats."""
    per = p.period
    vdc = max(p.v_dc_v / p.v_base_v, 0.5)
    m = max(1, int(p.tick_hz / p.f_nom_hz))
    tab = []
    for j in range(m):
        th = 2.0 * math.pi * j / m
        pw = array("i", [per, 0, 0, 0, 0])
        for k in range(3):
            u = u_pu * math.cos(th - k * 2.0 * math.pi / 3.0)
            pw[2 + k] = int(per * 0.5 + u / vdc * per)
        tab.append(pw)
    return tab


def bench(p, ticks, slow_every, slow_dt, out):
    tab = _duty_table(p)
    m = len(tab)
    raw = array("i", [0] * 7)
    sample = p.sample
    advance = p.advance
    # sample + advance only
    t0 = _now()
    n = 0
    j = 0
    while n < ticks:
        sample(raw)
        advance(tab[j], 1)
        j += 1
        if j == m:
            j = 0
        n += 1
    t1 = _now()
    # with the slow part every slow_every ticks
    n = 0
    k = 0
    while n < ticks:
        sample(raw)
        advance(tab[j], 1)
        j += 1
        if j == m:
            j = 0
        k += 1
        if k == slow_every:
            k = 0
            p.slow(slow_dt)
        n += 1
    t2 = _now()
    out.write("BENCH ticks=%d tick_ns=%d tick_with_slow_ns=%d runtime=%s\n" % (
        ticks, _elapsed_ns(t0, t1) // ticks, _elapsed_ns(t1, t2) // ticks,
        sys.implementation.name))


def heap_lock(p, ticks, out):
    import micropython
    tab = _duty_table(p)
    m = len(tab)
    raw = array("i", [0] * 7)
    sample = p.sample
    advance = p.advance
    n = 0
    j = 0
    result = "ok"
    micropython.heap_lock()
    try:
        while n < ticks:
            sample(raw)
            advance(tab[j], 1)
            sample(raw)
            advance(tab[j], 0)
            j += 1
            if j == m:
                j = 0
            n += 1
    except MemoryError:
        result = "MemoryError"
    micropython.heap_unlock()
    out.write("HEAPLOCK %s ticks=%d\n" % (result, n))


def main(argv):
    with open(argv[1]) as f:
        spec = json.load(f)
    run(spec)
    print("END")


if __name__ == "__main__":
    main(sys.argv)
