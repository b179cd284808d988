"""``v2g sim``: the firmware on the simulated board.

    v2g sim run SCENARIO.json --out RESULT.json [--trace TRACE.csv] [--trace-every N]
                [--plot OUT.png]                     simulated time (v2g.sim.runner)
    v2g sim board [--scenario S.json]                real time, REPL on a pty (v2g.sim.simboard)
    v2g sim demo                                     what ``make sim`` runs (v2g.sim.demo)

The scenario is validated here (every problem at once, exit 2, nothing written) before
anything runs.

Context: host only.
"""

from v2g.common.errors import UsageError
from v2g.sim import demo, runner, scenario, simboard


def add_arguments(p):
    sub = p.add_subparsers(dest="sim_action", metavar="ACTION")
    r = sub.add_parser("run", help="run a scenario in simulated time",
                       description="Run firmware/ on the simulated board against the plant, "
                                   "in simulated time (deterministic).")
    r.add_argument("scenario", metavar="SCENARIO.json")
    r.add_argument("--out", required=True, metavar="RESULT.json")
    r.add_argument("--trace", metavar="TRACE.csv", help="write a trace (columns: docs/formats.md section 3)")
    r.add_argument("--trace-every", type=int, default=10, metavar="N",
                   help="one trace row every N ticks (default 10)")
    r.add_argument("--plot", metavar="OUT.png",
                   help="draw voltages, currents, PLL angle error, frequency, power, state")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.set_defaults(_sim=run_scenario)
    d = sub.add_parser("demo", help="a V2G session end to end (what 'make sim' runs)",
                       description=demo.__doc__.split("\n\n")[0])
    demo.add_arguments(d)
    d.set_defaults(_sim=demo.run)
    b = sub.add_parser("board", help="start the virtual board in real time (REPL on a pty)",
                       description="Start the virtual board in real time; the first line "
                                   "printed is 'port: /dev/pts/N'.")
    simboard.add_arguments(b)
    b.set_defaults(_sim=simboard.run)


def run(args):
    handler = getattr(args, "_sim", None)
    if handler is None:
        raise UsageError("give an action: 'run' (scenario) or 'board' (real time)")
    return handler(args)


def run_scenario(args):
    if args.trace_every < 1:
        raise UsageError("--trace-every: value %d: allowed 1 or more" % args.trace_every)
    sc = scenario.load(args.scenario)
    result = runner.simulate(sc, trace_path=args.trace, trace_every=args.trace_every,
                      out_path=args.out, progress=not args.quiet)
    if args.plot:
        if not args.trace:
            raise UsageError("--plot needs --trace (the plot is drawn from the trace)")
        from v2g.sim import plot  # numpy + matplotlib: only when asked

        plot.draw(args.trace, args.plot, result)
    if not args.quiet:
        print("sim: %s: %d events, first trip %s, energized %s, export %.3f Wh -> %s"
              % (sc["name"], len(result["events"]), result["first_trip_s"],
                 result["energized_intervals"], result["energy_wh"]["export"], args.out))
    return 0
