"""Scratch harness: the scenario runner with ``firmware/islanding.py`` called by the
supervisor every period, the way ``supervisor.py`` is meant to call it (until the lead
wires it in; once the supervisor has its own ``self.island``, the harness only swaps in
a detector with the job's settings and lets the real wiring run).

Runs on the MicroPython unix runtime (``tests_host/firmware/test_islanding.py`` drives it):
    micropython island_runner.py JOB.json RESULT.json TRACE.csv|- TRACE_EVERY FLASH_DIR \
        PERIODS.csv|-
JOB.json is a normalised scenario (``v2g.sim.scenario``) plus:
- ``"islanding"``: Detector settings ({} = defaults) or null (detector off: baseline);
- events may carry ``"island_load"`` ({p_w, qf, f_res_hz}), handed to the plant (the
  scenario contract does not have that key).
RESULT.json: the scenario runner's result plus ``"islanding"``: island instant, ISLAND
trip instant and detail, the instant the plant stopped being energized after the island,
detector telemetry (``Detector.status()``), the island's RLC.
PERIODS.csv: one row per supervisor period: t_s, f_hz, v_pos_pu, energized, the Q and P
commands in force (Q12), the newest window's k and residual (permille), the newest
block ROCOF (mHz/s), and P, Q as measured by the current loop.

Each period, in this order (what the supervisor should do):
1. ``hit = det.step(now_ms, f_hz, v_pos_pu, active)`` (active: ENERGIZED/DERATED,
   permitted, PLL locked, not in momentary cessation); on a hit
   ``Supervisor.trip(now_ms, "ISLAND", detail)``: the latch turns the PWM off at the next
   tick, then the contactor opens, state TRIPPED;
2. the supervisor's own step; its ``_apply_power`` adds ``det.perturbation(...)`` to the
   power commands.

Context: host-side simulation only.
"""

import json
import sys

import current
import islanding
import pll
import scenario_events
import scenario_runner
import supervisor as sup_mod

SETTINGS = None  # Detector settings for the next supervisor built (None: detector off)


class _Off:
    """Stands in for the detector of a supervisor that has one wired in (baseline runs)."""

    def step(self, now_ms, f_hz, v_pos_pu, energized):
        return None

    def perturbation(self, now_ms, energized, p_q12, q_q12):
        return 0, 0

    def reset(self):
        pass


class IslandSupervisor(sup_mod.Supervisor):
    """The supervisor with the detector called every period. Once ``supervisor.py`` has
    its own (``self.island``), this only swaps in a detector with the job's settings
    (or ``_Off``) and lets the real wiring run."""

    def __init__(self, ctl, hal, held, journal):
        super().__init__(ctl, hal, held, journal)
        self.det = None
        if SETTINGS is not None:
            kw = dict(SETTINGS)
            kw.setdefault("i_max_q12", held["i_max_pu"] * 4096 // 100)
            self.det = islanding.Detector(held["f_nom_hz"], sup_mod.PERIOD_MS, **kw)
        self.wired = hasattr(self, "island")
        if self.wired:
            self.island = self.det if self.det is not None else _Off()

    def step(self, now_ms):
        det = self.det
        if det is not None and not self.wired:
            # current flowed during the last period: ENERGIZED/DERATED, locked, not ceased
            active = (self.state in (sup_mod.ENERGIZED, sup_mod.DERATED) and self.permit
                      and not self.ceased and self.ctl.pll[pll.LOCKED] == 1)
            _, v_pu, f_hz = self.grid()
            hit = det.step(now_ms, f_hz, v_pu, active)
            if hit is not None and active:
                self.trip(now_ms, hit[0], hit[1])  # PWM off, contactor open, TRIPPED
        super().step(now_ms)

    def _apply_power(self, now_ms):
        super()._apply_power(now_ms)
        if self.det is None or self.wired:
            return
        rated = self.held["p_rated_w"]
        p_q12 = int(self.p_cmd_w * 4096 // rated)
        q_q12 = int(self.q_cmd_var * 4096 // rated)
        q_x, p_x = self.det.perturbation(now_ms, True, p_q12, q_q12)
        current.set_power(self.ctl.cc, p_q12 + p_x, q_q12 + q_x)


sup_mod.Supervisor = IslandSupervisor  # app.App builds supervisor.Supervisor


class IslandRun(scenario_runner.Run):
    def __init__(self, sc, flash_dir, trace_file, trace_every, periods_file):
        self.periods = periods_file
        self.island_n = None
        self.cease_n = None
        super().__init__(sc, flash_dir, trace_file, trace_every)

    def apply(self, ev):
        if "island_load" in ev:
            self.plant.event({"island_load": ev["island_load"]})
        if ev.get("island") and self.island_n is None:
            self.island_n = self.n
        scenario_events.apply(ev, self.app, self.plant)

    def meter(self):
        super().meter()
        if (self.island_n is not None and self.cease_n is None
                and not self.plant.energized()):
            self.cease_n = self.n
        if self.periods is not None and self.n % (self.tick_hz // 100) == 0:
            sup = self.app.supervisor
            _, v_pu, f_hz = sup.grid()
            det = sup.det
            cc = self.app.ctl.cc
            pq = (0, 0) if det is None else (det.last_k_permille, det.last_resid_permille)
            self.periods.write("%.3f,%.4f,%.4f,%d,%d,%d,%d,%d,%d,%.1f,%.1f\n" % (
                self.t_s(self.n), f_hz, v_pu, self.plant.energized(), cc[current.Q_CMD]
                - (1 << 29), cc[current.P_CMD] - (1 << 29), pq[0], pq[1],
                0 if det is None else det.rocof_mhz_s_last,
                cc[current.P_MEAS] * sup.held["p_rated_w"] / 4096,
                cc[current.Q_MEAS] * sup.held["p_rated_w"] / 4096))

    def result(self):
        res = super().result()
        det = self.app.supervisor.det
        hits = [e for e in self.events if e["kind"] == "trip" and e.get("code") == "ISLAND"]
        res["islanding"] = {
            "island_t_s": None if self.island_n is None else self.t_s(self.island_n),
            "detect_t_s": hits[0]["t_s"] if hits else None,
            "detail": hits[0].get("detail") if hits else None,
            "cease_t_s": None if self.cease_n is None else self.t_s(self.cease_n),
            "status": None if det is None else det.status(),
            "island_rlc": getattr(self.plant, "island_rlc", None),
        }
        return res


def main(argv):
    global SETTINGS
    job_path, result_path, trace_path, trace_every, flash_dir, periods_path = argv[1:7]
    with open(job_path) as f:
        sc = json.load(f)
    SETTINGS = sc.get("islanding")
    trace = None
    if trace_path != "-":
        trace = open(trace_path, "w")
        trace.write(scenario_runner._TRACE_HEADER)
    periods = None
    if periods_path != "-":
        periods = open(periods_path, "w")
        periods.write("t_s,f_hz,v_pos_pu,energized,q_cmd_q12,p_cmd_q12,k_permille,resid_permille,"
                      "rocof_mhz_s,p_w,q_var\n")
    run = IslandRun(sc, flash_dir, trace, int(trace_every), periods)
    run.run()
    for fh in (trace, periods):
        if fh is not None:
            fh.close()
    with open(result_path, "w") as f:
        json.dump(run.result(), f)
    print("done")


if __name__ == "__main__":
    main(sys.argv)
