"""Scenario mode of the simulated board: the real firmware against the plant, in simulated
time, deterministic and faster than real time.

Runs on the MicroPython unix runtime:
    micropython scenario_runner.py SCENARIO.json RESULT.json TRACE.csv|- TRACE_EVERY FLASH_DIR
where SCENARIO.json is the host's normalised scenario (``v2g.sim.scenario``). Writes RESULT.json
(docs/formats.md section 2) and, when asked, the trace. Prints ``progress <t_s>`` lines.

Loop per tick: apply due events -> firmware tick (ADC from the plant, control, PWM) ->
plant advances one tick with the duties; every 1 ms the plant's slow part and the
metering; every 10 ms the supervisor (and the watchdog check). Hangs are injected by not
calling the hung part; the watchdog then resets the board (a new ``App`` on the same
plant and flash), as the hardware would.

Context: host-side simulation (never on a real board).
"""

import json
import sys

import app as app_mod
import events
import hal as sim_hal
import plant as plant_model
import pll
import scenario_events
import supervisor as sup_mod
import tick as tick_mod

_TRACE_FMT = ("%.6f,%.6f,%.6f,%.6f,%.6f,%d,%.3f,%.3f,%.3f,%.4f,%.4f,%.4f,%.1f,%.1f,%d,%s,"
              "%.3f,%d\n")
_TRACE_HEADER = ("t_s,grid_theta_rad,theta_rad,f_hz,v_pos_pu,locked,v_a,v_b,v_c,i_a,i_b,i_c,"
                 "p_w,q_var,energized,state,t_module_c,contactor_status\n")


class Run:
    def __init__(self, sc, flash_dir, trace_file, trace_every):
        with open(flash_dir + "board.json") as f:
            self.board = json.load(f)
        self.sc = sc
        self.flash_dir = flash_dir
        self.tick_hz = self.board["tick_hz"]
        grid = sc["grid"]
        init = sc["initial"]
        self.plant = plant_model.Plant(
            tick_hz=self.tick_hz, f_nom_hz=grid["f_nom_hz"], v_nom_ln_rms=grid["v_nom_ln_rms"],
            p_rated_w=sc["config"].get("p_rated_w", 11000),
            pwm_period_counts=self.board["pwm_period_counts"],
            pwm_freq_hz=self.board["pwm_freq_hz"], dead_time_ns=self.board["dead_time_ns"],
            ambient_c=init["ambient_c"], soc=init["soc"])
        self.plant.event({"v_pu": init["v_pu"], "f_hz": init["f_hz"]})
        sim_hal.PLANT = self.plant
        self.events = []  # result events (dicts), in order
        self.trace = trace_file
        self.trace_every = trace_every
        self.hung = None
        self.boots = 0
        self.app = None
        self.n = 0
        self.intervals = []
        self.meter_base = [0.0, 0.0]
        self.energized_since = None
        self.ticks_total = 0
        self.overruns = 0
        self.boot(first=True)

    # ---- firmware lifecycle ----
    def boot(self, first=False, reset_ms=None):
        if self.app is not None:
            self.meter_base = [a + b for a, b in zip(self.meter_base,
                                                     self.app.supervisor.meter.wh())]
            st = self.app.ctl.stats
            self.ticks_total += st[tick_mod.COUNT]
            self.overruns += st[tick_mod.OVERRUNS]
        self.boots += 1
        if not first:
            # stamped at the instant the watchdog expired (the loop noticed it <= 1 ms later)
            n = self.n if reset_ms is None else reset_ms * self.tick_hz // 1000
            self.record(n, "wdt_reset", detail="boot %d" % self.boots)
        journal = events.Journal()
        journal.listeners.append(self.on_event)  # boot-time faults are results too
        sim_hal.CAUSE = "power" if first else "wdt"
        self.app = app_mod.App(sim_hal, self.board, root=self.flash_dir,
                               overrides=self.sc["config"], journal=journal)
        self.app.hal.t_us = self.n * 1000000 // self.tick_hz
        self.app.start()
        self.hung = None

    def t_s(self, n):
        return n / self.tick_hz

    def record(self, n, kind, code="", name="", detail=""):
        ev = {"t_s": round(self.t_s(n), 6), "kind": kind}
        if code:
            ev["code"] = code
        if name:
            ev["name"] = name
        if detail:
            ev["detail"] = detail
        self.events.append(ev)

    def on_event(self, ev):
        t_ms, kind, code, name, detail = ev
        if kind == "state":
            self.record(self.n, kind, name=name)
        else:
            self.record(self.n, kind, code, name, detail)

    # ---- scenario events ----
    def apply(self, ev):
        hang = scenario_events.apply(ev, self.app, self.plant)
        if hang:
            self.hung = hang

    # ---- main loop ----
    def run(self):
        tick_hz = self.tick_hz
        n_total = int(self.sc["duration_s"] * tick_hz + 0.5)
        per_ms = tick_hz // 1000
        ev_list = [(int(e["t_s"] * tick_hz + 0.5), e) for e in self.sc["events"]]
        ev_i = 0
        plant = self.plant
        step, plant_st, plant_tab = plant.stepper()
        on = sim_hal.IO_PWM_ON
        trace_every = self.trace_every
        ms = 0
        next_progress = tick_hz // 10
        never = n_total + 1
        next_ev = ev_list[0][0] if ev_list else never
        tracing = self.trace is not None
        while self.n < n_total:
            hal = self.app.hal
            io = hal.io
            hal.t_us = self.n * 1000000 // tick_hz
            fn = hal.tick_fn if self.hung != "tick" else None
            n = self.n
            end = min(n + per_ms, n_total)
            # the per-tick path: compares against precomputed instants, locals only
            while n < end:
                if n >= next_ev:
                    while ev_i < len(ev_list) and ev_list[ev_i][0] <= n:
                        self.apply(ev_list[ev_i][1])
                        ev_i += 1
                    next_ev = ev_list[ev_i][0] if ev_i < len(ev_list) else never
                    fn = hal.tick_fn if self.hung != "tick" else None
                if fn is not None:
                    fn(None)
                if tracing and n % trace_every == 0:
                    self.trace_row(n)  # plant truth at the instant the ADC sampled
                step(plant_st, plant_tab, io, io[on])
                n += 1
            self.n = n
            plant.slow(1)
            self.meter()
            ms += 1
            hal.t_us = self.n * 1000000 // tick_hz
            if ms % sup_mod.PERIOD_MS == 0 and self.hung != "supervisor":
                self.app.supervise_once(hal.ticks_ms())
            if hal.wdt_expired():  # checked every ms: the hardware bites at its timeout
                self.boot(reset_ms=hal.wdt_last_ms + hal.wdt_timeout_ms)
            if self.n >= next_progress:
                self.progress()
                next_progress += tick_hz // 10
        self.close_interval(self.n)

    def progress(self):
        """One status line per 0.1 s of simulated time, for the host's live dashboard."""
        st = self.app.ctl.pll
        sup = self.app.supervisor
        tr = self.plant.truth()
        print("progress %.3f %s %d %.3f %.3f %.0f %.0f %.1f %d" % (
            self.t_s(self.n), sup.state, st[pll.LOCKED], pll.f_hz(st), pll.v_pos_pu(st),
            tr["p_w"], tr["q_var"], tr["t_module_c"], sup.contactor_status()))

    def meter(self):
        if self.plant.energized():
            if self.energized_since is None:
                self.energized_since = self.n
        else:
            self.close_interval(self.n)

    def close_interval(self, n):
        if self.energized_since is not None:
            self.intervals.append([round(self.t_s(self.energized_since), 4),
                                   round(self.t_s(n), 4)])
            self.energized_since = None

    def meter_wh(self):
        """The firmware's own metered energy (supervisor ``meter``), summed over boots."""
        imp, exp = self.app.supervisor.meter.wh()
        return {"import": round(imp + self.meter_base[0], 4),
                "export": round(exp + self.meter_base[1], 4)}

    def trace_row(self, n):
        st = self.app.ctl.pll
        sup = self.app.supervisor
        tv = self.plant.trace_values()  # grid_theta, v_a..c, i_a..c, p, q, energized, t_mod
        self.trace.write(_TRACE_FMT % (
            n / self.tick_hz, tv[0], pll.theta_rad(st), pll.f_hz(st), pll.v_pos_pu(st),
            st[pll.LOCKED], tv[1], tv[2], tv[3], tv[4], tv[5], tv[6], tv[7], tv[8], tv[9],
            sup.state, tv[10], sup.contactor_status()))

    def result(self):
        st = self.app.ctl.stats
        sup = self.app.supervisor
        tr = self.plant.truth()
        trips = [e["t_s"] for e in self.events if e["kind"] == "trip"]
        e_import, e_export = self.plant.energy_wh()
        return {
            "scenario": self.sc["name"],
            "tick_hz": self.tick_hz,
            "duration_s": self.sc["duration_s"],
            "events": self.events,
            "first_trip_s": trips[0] if trips else None,
            "energized_intervals": self.intervals,
            "energy_wh": {"import": round(e_import, 4), "export": round(e_export, 4)},
            "meter_wh": self.meter_wh(),
            "final": {"state": sup.state, "contactor_status": sup.contactor_status(),
                      "derate_pct": sup.derate_pct, "t_module_c": round(tr["t_module_c"], 2)},
            "tick": {"count": self.ticks_total + st[tick_mod.COUNT],
                     "overruns": self.overruns + st[tick_mod.OVERRUNS]},
            "boots": self.boots,
        }


def main(argv):
    sc_path, result_path, trace_path, trace_every, flash_dir = argv[1:6]
    with open(sc_path) as f:
        sc = json.load(f)
    trace = None
    if trace_path != "-":
        trace = open(trace_path, "w")
        trace.write(_TRACE_HEADER)
    run = Run(sc, flash_dir, trace, int(trace_every))
    run.run()
    if trace is not None:
        trace.close()
    with open(result_path, "w") as f:
        json.dump(run.result(), f)
    print("done")


if __name__ == "__main__":
    main(sys.argv)
