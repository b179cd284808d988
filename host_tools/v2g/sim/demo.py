"""``v2g sim demo`` (``make sim``): a V2G session on the simulated board, end to end.

1. Scenario mode: ``boards/sim/scenarios/v2g_session.json`` -- grid sync, enter service,
   7 kW discharge to the grid, a 20 degree phase jump ridden through -- in simulated
   time, with a live dashboard; writes RESULT.json, TRACE.csv and a plot to ``--out``.
2. Board mode (unless ``--no-board``): the virtual board in real time on a
   pseudo-terminal, the same session running, a dashboard refreshed from the board over
   its serial port, and the command to connect ``mpremote`` to it. Ctrl-C stops it.

The session shortens the IEEE 1547 enter-service delay and ramp (300 s each by default)
to 1 s so that the demo fits in seconds; the parameter table keeps the standard's
defaults.
Context: host only.
"""

import sys
import time
from pathlib import Path

from v2g.common import paths
from v2g.sim import runner, scenario

SESSION = paths.REPO_ROOT / "boards" / "sim" / "scenarios" / "v2g_session.json"
CONTACTOR = {0: "STUCK", 1: "OPEN", 2: "CLOSED", 3: "PRECHARGING", 4: "OPENING"}


def add_arguments(p):
    p.add_argument("--out", default="out/sim", metavar="DIR",
                   help="where RESULT.json, TRACE.csv and plot.png go (default out/sim)")
    p.add_argument("--scenario", default=str(SESSION), metavar="S.json",
                   help="session to run (default: the V2G session)")
    p.add_argument("--no-board", action="store_true",
                   help="skip the real-time virtual board after the scenario")
    p.add_argument("--seconds", type=float, default=0.0,
                   help="stop the virtual board after this long (default: until Ctrl-C)")


class Dashboard:
    """A compact status block, redrawn in place on a terminal, a line at a time elsewhere."""

    def __init__(self, title, stream=sys.stdout):
        self.title = title
        self.stream = stream
        self.tty = stream.isatty()
        self.drawn = 0
        self.last_plain = -1.0

    def show(self, p):
        lines = [
            "%s   t = %7.2f s" % (self.title, p.get("t_s", 0.0)),
            "  state      %-22s contactor %s" % (p.get("state", "?"),
                                                  CONTACTOR.get(p.get("contactor_status"),
                                                                "?")),
            "  grid       %s  f = %8.3f Hz   V+ = %6.3f pu" % (
                "LOCKED  " if p.get("locked") else "unlocked", p.get("f_hz", 0.0),
                p.get("v_pos_pu", 0.0)),
            "  power      P = %8.0f W  (%s)   Q = %7.0f var" % (
                p.get("p_w", 0.0), "export" if p.get("p_w", 0.0) < -1 else
                ("import" if p.get("p_w", 0.0) > 1 else "idle"), p.get("q_var", 0.0)),
        ]
        if "t_module_c" in p:
            lines.append("  module     %5.1f C" % p["t_module_c"])
        if self.tty:
            if self.drawn:
                self.stream.write("\x1b[%dA" % self.drawn)
            for line in lines:
                self.stream.write("\x1b[2K" + line + "\n")
            self.drawn = len(lines)
            self.stream.flush()
        elif p.get("t_s", 0.0) - self.last_plain >= 1.0:
            self.last_plain = p.get("t_s", 0.0)
            self.stream.write(" | ".join(x.strip() for x in lines) + "\n")
            self.stream.flush()


def run(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sc = scenario.load(args.scenario)
    dash = Dashboard("scenario %s (simulated time)" % sc["name"])
    t0 = time.monotonic()
    result = runner.simulate(sc, trace_path=str(out / "trace.csv"), trace_every=5,
                          out_path=str(out / "result.json"), progress=dash.show)
    wall = time.monotonic() - t0
    from v2g.sim import plot

    plot.draw(str(out / "trace.csv"), str(out / "plot.png"), result)
    print()
    print("scenario %s: %.1f s simulated in %.2f s (%.0fx real time, with a trace row "
          "every 0.5 ms, the dashboard and start-up; `make bench` times the bare run)"
          % (sc["name"], sc["duration_s"], wall, sc["duration_s"] / wall))
    print("  events:")
    for ev in result["events"]:
        print("    %7.3f s  %-18s %s %s %s" % (ev["t_s"], ev["kind"], ev.get("code", ""),
                                               ev.get("name", ""), ev.get("detail", "")))
    print("  energized %s, energy import %.3f Wh, export %.3f Wh, final state %s"
          % (result["energized_intervals"], result["energy_wh"]["import"],
             result["energy_wh"]["export"], result["final"]["state"]))
    print("  wrote %s, %s, %s" % (out / "result.json", out / "trace.csv", out / "plot.png"))
    if args.no_board:
        return 0
    try:
        from v2g.sim import simboard
    except ImportError:
        print("board mode is not available in this tree; done.")
        return 0
    return simboard.demo(args.scenario, seconds=args.seconds, dashboard=Dashboard(
        "virtual board (real time)"))
