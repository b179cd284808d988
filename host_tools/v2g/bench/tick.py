"""``v2g bench [--json]``: what one control tick costs, on the MicroPython unix runtime.

Figures (medians of ``--reps`` runs, default 5, env ``V2G_BENCH_REPS``):
- ``tick_ns_viper``: one tick through ``tick.make_tick`` (HAL read, ``compute``, PWM
  write, counters) with the firmware as written (viper hot paths); each run's figure is
  the median of timed segments (harness ``--timing``);
- ``compute_ns_viper``: ``tick_fused_compute.compute`` (``tick.compute`` with its steps
  inlined, as the interrupt body has it) alone (ADC scaling to duties), called in a loop;
- ``tick_ns_bytecode`` / ``compute_ns_bytecode``: the same on the bytecode twin of the
  firmware (``v2g.build.bytecode_twin``: viper decorators and casts removed);
- ``allocs_per_tick``: 0 when ``--heap-lock-ticks`` (default 100 000) ticks ran under
  ``micropython.heap_lock()`` without a MemoryError (none escaped, none swallowed by the
  tick's own handler); otherwise the share of probe ticks that needed the heap (a lower
  bound: each needs at least one allocation); ``heap_bytes_per_tick`` is what the tick
  requests from the heap when it is not locked (``micropython.mem_total``: temporaries
  freed at once and call frames MicroPython puts on the heap when it may included);
- ``instr_per_tick_viper`` / ``instr_per_tick_c``: machine instructions per tick counted
  by valgrind's callgrind, ``(Ir(N2 ticks) - Ir(N1 ticks)) / (N2 - N1)`` so start-up
  cancels, for the unix runtime and for the C reference ``bench/c_reference/tick_ref.c``
  (gcc -O2, tables and initial state generated from ``firmware/`` at build time);
- ratios ``speedup_viper_vs_bytecode`` (per tick; ``speedup_compute_...`` for compute():
  viper and bytecode runs alternate, and the speed-up is the median of the pairs'
  ratios), ``instr_ratio_viper_vs_c`` (per tick; ``instr_ratio_compute_viper_vs_c``).
Extra keys: ``tick_ns_c``/``compute_ns_c``, ``instr_per_tick_bytecode``,
``tick_ns_viper_min``/``tick_ns_bytecode_min`` (fastest timed segment of all runs) and
``speedup_fastest_viper_vs_bytecode`` (their ratio), ``instr_ratio_bytecode_vs_viper``,
``instr_per_compute_viper``/``_c``, ``heap_lock`` (what the locked run did),
``checksums`` (tick count -> implementation -> checksum), ``bench_s``; unless
``--no-system``: ``pll``, ``sim`` and ``modbus_load`` (``v2g.gateway.bench.modbus_load``:
8 clients polling 100 registers at 10 Hz for 5 s, p50/p99/max ms).
The harness HAL (``mp/tick_harness.py``) is viper in every run, standing in for a board's
native drivers, so the viper/bytecode comparison is about ``firmware/`` alone.
Every run also prints a checksum of the final state; ``checksums_agree`` is false when
the viper run, the bytecode twin and the C reference disagree after the same ticks.
Missing valgrind or gcc makes the figures that need them null, with a ``<key>_reason``.
No thresholds: the bench reports, the tests judge. Takes about 20 s (callgrind runs
dominate); ``make bench`` runs it.

Context: host only.
"""

import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from v2g.build import bytecode_twin
from v2g.build import c_reference
from v2g.build.c_reference import build_c_reference
from v2g.common import paths, runtime
from v2g.common.errors import ToolError, UsageError

HARNESS = c_reference.HARNESS

DEFAULTS = {
    "reps": 5,
    "ticks": 100000,  # viper timing run (~1 us a tick: 0.1 s, long enough to be steady)
    "bytecode_ticks": 5000,  # bytecode twin timing run (~25 us a tick)
    "heap_lock_ticks": 100000,  # the acceptance run: >= 100 000 ticks under heap_lock
    "instr_ticks": (500, 2500),  # callgrind N1, N2
}
RUN_TIMEOUT_S = 600

# module -> prefix of its constants in the generated C header

def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise UsageError("not an integer: %r" % text) from None
    if v < 1:
        raise UsageError("must be >= 1, got %d" % v)
    return v


def add_arguments(p):
    p.add_argument("--json", action="store_true",
                   help="print one JSON object instead of a table")
    p.add_argument("--reps", metavar="N",
                   help="repetitions of each timing run, median reported (default: env "
                        "V2G_BENCH_REPS or %d)" % DEFAULTS["reps"])
    p.add_argument("--ticks", metavar="N",
                   help="ticks per viper timing run (default %d)" % DEFAULTS["ticks"])
    p.add_argument("--bytecode-ticks", metavar="N",
                   help="ticks per bytecode-twin timing run (default %d)"
                        % DEFAULTS["bytecode_ticks"])
    p.add_argument("--heap-lock-ticks", metavar="N",
                   help="ticks of the heap-locked run (default %d)"
                        % DEFAULTS["heap_lock_ticks"])
    p.add_argument("--instr-ticks", metavar="N1,N2",
                   help="tick counts of the two callgrind runs (default %d,%d)"
                        % DEFAULTS["instr_ticks"])
    p.add_argument("--no-instr", action="store_true",
                   help="skip the instruction counts (valgrind)")
    p.add_argument("--no-system", action="store_true",
                   help="skip the PLL target figures and the simulated-board figures")


def _options(args):
    """Validated options from args and the environment; raises UsageError."""
    def pick(name, env=None):
        v = getattr(args, name, None)
        src = "--" + name.replace("_", "-")
        if v is None and env and os.environ.get(env, "").strip():
            v, src = os.environ[env].strip(), env
        if v is None:
            return DEFAULTS[name]
        try:
            return _positive_int(v)
        except UsageError as e:
            raise UsageError("%s: %s" % (src, e)) from None

    opts = {
        "reps": pick("reps", "V2G_BENCH_REPS"),
        "ticks": pick("ticks"),
        "bytecode_ticks": pick("bytecode_ticks"),
        "heap_lock_ticks": pick("heap_lock_ticks"),
    }
    it = getattr(args, "instr_ticks", None)
    if it is None:
        opts["instr_ticks"] = DEFAULTS["instr_ticks"]
    else:
        parts = it.split(",")
        try:
            if len(parts) != 2:
                raise UsageError("expected two counts N1,N2")
            n1, n2 = (_positive_int(x.strip()) for x in parts)
        except UsageError as e:
            raise UsageError("--instr-ticks %r: %s" % (it, e)) from None
        if n2 <= n1:
            raise UsageError("--instr-ticks %r: N2 must be larger than N1" % it)
        opts["instr_ticks"] = (n1, n2)
    opts["no_instr"] = bool(getattr(args, "no_instr", False))
    return opts


# ---------------------------------------------------------------------------- parsing
def parse_kv(text):
    """``key=value ...`` (strings in double quotes) -> dict; ints/floats converted."""
    out = {}
    for tok in shlex.split(text.strip()):
        if "=" not in tok:
            continue
        k, v = tok.split("=", 1)
        for conv in (int, float):
            try:
                v = conv(v)
                break
            except ValueError:
                pass
        out[k] = v
    return out


def _last_kv_line(stdout, what):
    lines = [ln for ln in stdout.splitlines() if "checksum=" in ln]
    if not lines:
        raise ToolError("%s printed no result line; stdout: %r" % (what, stdout[-500:]))
    return parse_kv(lines[-1])


# -------------------------------------------------------------------- MicroPython runs
def harness_command(exe, n, bytecode_dir=None, heap_lock=False, compute_ticks=None,
                    timing=False):
    cmd = [exe, str(HARNESS), str(n)] + (["--timing"] if timing else [])
    if bytecode_dir is not None:
        cmd += ["--bytecode", "--twin", str(bytecode_dir)]
    if heap_lock:
        cmd.append("--heap-lock")
    if compute_ticks is not None:
        cmd += ["--compute-ticks", str(compute_ticks)]
    return cmd


def harness_env():
    env = dict(os.environ)
    env["MICROPYPATH"] = runtime.micropypath(HARNESS)
    return env


def run_harness(exe, n, bytecode_dir=None, heap_lock=False, compute_ticks=None,
                wrapper=(), timing=False):
    """Run the harness on the unix runtime; returns (parsed result, CompletedProcess)."""
    cmd = list(wrapper) + harness_command(exe, n, bytecode_dir, heap_lock, compute_ticks,
                                          timing)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=harness_env(), timeout=RUN_TIMEOUT_S)
    if proc.returncode != 0:
        raise ToolError("tick harness failed (exit %d): %s\n%s"
                        % (proc.returncode, " ".join(cmd), proc.stderr.strip()[-2000:]))
    return _last_kv_line(proc.stdout, "tick harness"), proc


def run_c(exe, n, compute_ticks=None, wrapper=()):
    cmd = list(wrapper) + [str(exe), str(n)]
    if compute_ticks is not None:
        cmd.append(str(compute_ticks))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=RUN_TIMEOUT_S)
    if proc.returncode != 0:
        raise ToolError("C reference failed (exit %d): %s\n%s"
                        % (proc.returncode, " ".join(cmd), proc.stderr.strip()[-2000:]))
    return _last_kv_line(proc.stdout, "C reference"), proc


# -------------------------------------------------------------------------- callgrind
_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def callgrind_prefix(valgrind):
    return [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null"]


def collected(stderr):
    """The ``Collected : N`` total (instructions, Ir) from callgrind's stderr summary."""
    m = _COLLECTED.findall(stderr)
    if not m:
        raise ToolError("callgrind printed no 'Collected :' total; stderr: %r"
                        % stderr[-500:])
    return int(m[-1])


def instr_per_tick(run_one, n1, n2):
    """(Ir(n2) - Ir(n1)) / (n2 - n1) and the two results; run_one(n) -> (res, proc)."""
    r1, p1 = run_one(n1)
    r2, p2 = run_one(n2)
    ir1, ir2 = collected(p1.stderr), collected(p2.stderr)
    return (ir2 - ir1) / (n2 - n1), (r1, r2), (ir1, ir2)


# ------------------------------------------------------------------------------- main
def _median(values):
    return statistics.median(values) if values else None


def _ratio(a, b):
    return a / b if a is not None and b else None


def measure(opts, exe=None, log=None):
    """Run every measurement; returns the result dict (the --json object)."""
    t_start = time.monotonic()
    say = log or (lambda msg: None)
    exe = exe or paths.micropython_exe()
    reps = opts["reps"]
    n, n_bc, n_lock = opts["ticks"], opts["bytecode_ticks"], opts["heap_lock_ticks"]
    n1, n2 = opts["instr_ticks"]
    res = {"runtime": None, "reps": reps, "ticks": n, "bytecode_ticks": n_bc,
           "heap_lock_ticks": n_lock, "instr_ticks": [n1, n2]}
    checks = {}  # impl -> {ticks: checksum}

    def note(impl, r):
        checks.setdefault(impl, {}).setdefault(r["ticks"], set()).add(r["checksum"])

    with tempfile.TemporaryDirectory(prefix="v2g-bench-") as tmp:
        twin = Path(tmp) / "twin"
        bytecode_twin.build(twin)

        # viper and bytecode runs alternate, so that a slow spell of the machine hits
        # both sides of a pair; the speed-ups are medians of the pairs' ratios
        say("viper and bytecode twin runs, side by side")
        runs, bc_runs = [], []
        for _ in range(reps):
            runs.append(run_harness(exe, n, timing=True)[0])
            bc_runs.append(run_harness(exe, n_bc, bytecode_dir=twin, timing=True)[0])
        for r in runs:
            note("viper", r)
        for r in bc_runs:
            note("bytecode", r)
        res["runtime"] = runs[0]["runtime"]
        res["tick_ns_viper"] = _median([r["tick_ns"] for r in runs])
        res["compute_ns_viper"] = _median([r["compute_ns"] for r in runs])
        totals = [r["alloc_total_bytes"] for r in runs]
        res["heap_bytes_per_tick"] = (None if min(totals) < 0
                                      else _median([t / n for t in totals]))
        res["tick_ns_bytecode"] = _median([r["tick_ns"] for r in bc_runs])
        res["compute_ns_bytecode"] = _median([r["compute_ns"] for r in bc_runs])
        pair_speedups = {
            "speedup_viper_vs_bytecode": _median(
                [b["tick_ns"] / v["tick_ns"] for v, b in zip(runs, bc_runs)]),
            "speedup_compute_viper_vs_bytecode": _median(
                [b["compute_ns"] / v["compute_ns"] for v, b in zip(runs, bc_runs)])}
        # the fastest segment of each side over all runs: on a shared machine whose
        # speed comes and goes, the figure least touched by the neighbours
        res["tick_ns_viper_min"] = min(r["tick_ns_min"] for r in runs)
        res["tick_ns_bytecode_min"] = min(r["tick_ns_min"] for r in bc_runs)
        pair_speedups["speedup_fastest_viper_vs_bytecode"] = _ratio(
            res["tick_ns_bytecode_min"], res["tick_ns_viper_min"])
        if n_bc != n:  # the viper checksum at the twin's tick count, for the comparison
            note("viper", run_harness(exe, n_bc, compute_ticks=0)[0])

        say("heap-locked run (%d ticks)" % n_lock)
        r = run_harness(exe, n_lock, heap_lock=True, compute_ticks=0)[0]
        lock_ok = r["heap_lock"] == "ok" and r["errors"] == 0
        res["heap_lock"] = {"ticks": n_lock, "result": r["heap_lock"],
                            "completed_ticks": r["locked_ticks"], "errors": r["errors"]}
        if lock_ok:
            note("viper", r)
            res["allocs_per_tick"] = 0
        else:
            res["heap_lock"]["probe_ticks"] = r["probe_ticks"]
            res["heap_lock"]["probe_ticks_allocating"] = r["alloc_ticks"]
            res["allocs_per_tick"] = r["alloc_ticks"] / r["probe_ticks"]

        say("C reference")
        c_exe = None
        try:
            c_exe = build_c_reference(Path(tmp) / "c")
        except ToolError as e:
            for k in ("tick_ns_c", "compute_ns_c", "instr_per_tick_c", "instr_per_compute_c"):
                res[k] = None
                res[k + "_reason"] = str(e).splitlines()[0]
        if c_exe is not None:
            runs = [run_c(c_exe, n)[0] for _ in range(reps)]
            for r in runs:
                note("c", r)
            res["tick_ns_c"] = _median([r["tick_ns"] for r in runs])
            res["compute_ns_c"] = _median([r["compute_ns"] for r in runs])
            for m in sorted({n_bc, n_lock, n1, n2} - {n}):
                note("c", run_c(c_exe, m, compute_ticks=0)[0])

        valgrind = shutil.which("valgrind")
        instr_keys = ["instr_per_tick_viper", "instr_per_tick_bytecode",
                      "instr_per_compute_viper"]
        if c_exe is not None:
            instr_keys += ["instr_per_tick_c", "instr_per_compute_c"]
        why = ("skipped (--no-instr)" if opts["no_instr"] else
               None if valgrind else "valgrind not found (Debian package valgrind; "
                                     "`make tools` installs it)")
        if why:
            for k in instr_keys:
                res[k] = None
                res[k + "_reason"] = why
        else:
            say("instruction counts (callgrind, %d and %d ticks)" % (n1, n2))
            pre = callgrind_prefix(valgrind)
            jobs = {
                "instr_per_tick_viper": (
                    "viper", lambda m: run_harness(exe, m, compute_ticks=0, wrapper=pre)),
                "instr_per_tick_bytecode": (
                    "bytecode", lambda m: run_harness(exe, m, bytecode_dir=twin,
                                                      compute_ticks=0, wrapper=pre)),
                # compute() alone: one tick, then m calls of compute()
                "instr_per_compute_viper": (
                    "viper", lambda m: run_harness(exe, 1, compute_ticks=m, wrapper=pre)),
            }
            if c_exe is not None:
                jobs["instr_per_tick_c"] = (
                    "c", lambda m: run_c(c_exe, m, compute_ticks=0, wrapper=pre))
                jobs["instr_per_compute_c"] = (
                    "c", lambda m: run_c(c_exe, 1, compute_ticks=m, wrapper=pre))
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as ex:
                futs = {k: ex.submit(instr_per_tick, fn, n1, n2)
                        for k, (_, fn) in jobs.items()}
                for k, fut in futs.items():
                    try:
                        per, (r1, r2), _ = fut.result()
                    except (ToolError, subprocess.TimeoutExpired) as e:
                        res[k] = None
                        res[k + "_reason"] = "callgrind run failed: %s" % (
                            str(e).splitlines()[0])
                        continue
                    res[k] = round(per, 1)
                    note(jobs[k][0], r1)
                    note(jobs[k][0], r2)

    res.update(pair_speedups)
    res["instr_ratio_viper_vs_c"] = _ratio(res.get("instr_per_tick_viper"),
                                           res.get("instr_per_tick_c"))
    res["instr_ratio_bytecode_vs_viper"] = _ratio(res.get("instr_per_tick_bytecode"),
                                                  res.get("instr_per_tick_viper"))
    res["instr_ratio_compute_viper_vs_c"] = _ratio(res.get("instr_per_compute_viper"),
                                                   res.get("instr_per_compute_c"))
    for k in ("speedup_viper_vs_bytecode", "speedup_compute_viper_vs_bytecode",
              "speedup_fastest_viper_vs_bytecode",
              "instr_ratio_viper_vs_c", "instr_ratio_bytecode_vs_viper",
              "instr_ratio_compute_viper_vs_c"):
        if res[k] is not None:
            res[k] = round(res[k], 2)

    # Checksums: every implementation must end in the same state after the same ticks.
    table = {}
    agree = True
    for impl, by_n in checks.items():
        for m, sums in by_n.items():
            table.setdefault(m, {})[impl] = sorted(sums)
    for per_impl in table.values():
        values = {s for sums in per_impl.values() for s in sums}
        if len(values) != 1:
            agree = False
    res["checksums"] = {str(m): {impl: (s[0] if len(s) == 1 else s)
                                 for impl, s in sorted(per_impl.items())}
                        for m, per_impl in sorted(table.items())}
    res["checksums_agree"] = agree
    res["bench_s"] = round(time.monotonic() - t_start, 1)
    return res


def _fmt(v, unit=""):
    if v is None:
        return "-"
    if isinstance(v, float):
        v = ("%.0f" % v) if abs(v) >= 100 else ("%.2f" % v)
    return "%s%s" % (v, unit)


def format_table(res):
    rows = [("", "viper", "bytecode", "C -O2")]
    rows.append(("tick, ns", _fmt(res.get("tick_ns_viper")), _fmt(res.get("tick_ns_bytecode")),
                 _fmt(res.get("tick_ns_c"))))
    rows.append(("compute() alone, ns", _fmt(res.get("compute_ns_viper")),
                 _fmt(res.get("compute_ns_bytecode")), _fmt(res.get("compute_ns_c"))))
    rows.append(("instructions / tick", _fmt(res.get("instr_per_tick_viper")),
                 _fmt(res.get("instr_per_tick_bytecode")), _fmt(res.get("instr_per_tick_c"))))
    rows.append(("instructions / compute()", _fmt(res.get("instr_per_compute_viper")), "-",
                 _fmt(res.get("instr_per_compute_c"))))
    w0 = max(len(r[0]) for r in rows)
    ws = [max(len(r[i]) for r in rows) for i in (1, 2, 3)]
    lines = ["v2g bench: one control tick on %s" % res.get("runtime"),
             "(medians of %d runs; %d ticks viper and C, %d bytecode; instructions by "
             "callgrind over %d..%d ticks)" % (res["reps"], res["ticks"],
                                               res["bytecode_ticks"], *res["instr_ticks"]),
             ""]
    for r in rows:
        lines.append("  %-*s  %*s  %*s  %*s" % (w0, r[0], ws[0], r[1], ws[1], r[2],
                                                 ws[2], r[3]))
    lines.append("")
    hl = res["heap_lock"]
    lines.append("  speed-up viper vs bytecode   %s x per tick, %s x compute()"
                 % (_fmt(res["speedup_viper_vs_bytecode"]),
                    _fmt(res["speedup_compute_viper_vs_bytecode"])))
    lines.append("    fastest segments           %s x per tick (%s vs %s ns)"
                 % (_fmt(res.get("speedup_fastest_viper_vs_bytecode")),
                    _fmt(res.get("tick_ns_viper_min")), _fmt(res.get("tick_ns_bytecode_min"))))
    if res.get("instr_ratio_bytecode_vs_viper") is not None:
        lines.append("    by instructions            %s x per tick"
                     % _fmt(res["instr_ratio_bytecode_vs_viper"]))
    lines.append("  instructions viper / C       %s per tick, %s compute()"
                 % (_fmt(res["instr_ratio_viper_vs_c"]),
                    _fmt(res["instr_ratio_compute_viper_vs_c"])))
    lines.append("  allocations / tick           %s  (heap_lock over %d ticks: %s%s)"
                 % (_fmt(res["allocs_per_tick"]), hl["ticks"], hl["result"],
                    "" if hl["result"] == "ok" else
                    ", failed after %d ticks; %d of %d probe ticks needed the heap"
                    % (hl["completed_ticks"], hl.get("probe_ticks_allocating", 0),
                       hl.get("probe_ticks", 0))))
    lines.append("  heap bytes / tick, unlocked  %s" % _fmt(res.get("heap_bytes_per_tick")))
    lines.append("  checksums                    %s"
                 % ("agree (viper, bytecode, C)" if res["checksums_agree"] else
                    "DISAGREE: %s" % json.dumps(res["checksums"])))
    reasons = sorted({v for k, v in res.items() if k.endswith("_reason")})
    for why in reasons:
        lines.append("  note: %s" % why)
    lines.append("  (bench took %.1f s)" % res["bench_s"])
    return "\n".join(lines)


def run(args):
    opts = _options(args)
    exe = paths.micropython_exe()
    log = None
    if not args.json:  # progress on stderr; the table (or JSON) alone on stdout
        def log(msg):
            sys.stderr.write("v2g bench: %s\n" % msg)
            sys.stderr.flush()
    res = measure(opts, exe, log)
    if not getattr(args, "no_system", False):
        import tempfile
        from pathlib import Path

        from v2g.bench import system as bench_system

        if log:
            log("PLL figures")
        res["pll"] = bench_system.pll_figures()
        if log:
            log("simulated board figures")
        with tempfile.TemporaryDirectory() as tmp:
            res["sim"] = bench_system.sim_figures(Path(tmp))
        from v2g.gateway.bench import modbus_load

        if log:
            log("Modbus load figure (8 clients x 100 registers at 10 Hz, 5 s)")
        res["modbus_load"] = modbus_load(seconds=5.0)
    from v2g.targets import bench as targets_bench  # null figures at once when not built

    res["targets"] = targets_bench.figures(log)
    if args.json:
        print(json.dumps(res, sort_keys=True))
    else:
        print(format_table(res))
        print(targets_bench.format_table(res["targets"]))
        if "pll" in res:
            from v2g.bench import system as bench_system

            print(bench_system.format_system(res["pll"], res["sim"]))
        ml = res.get("modbus_load")
        if ml:
            print("Modbus TCP (v2g-daemon's server, loopback): %d clients x %d registers at "
                  "%g Hz: p50 %.1f ms, p99 %.1f ms, max %.1f ms, %d errors (target p99 <= 20 "
                  "ms)" % (ml["clients"], ml["registers"], ml["rate_hz"], ml["p50_ms"],
                           ml["p99_ms"], ml["max_ms"], ml["errors"]))
    return 0
