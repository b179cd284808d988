"""Scenario runs of the simulated board in simulated time (the engine behind ``v2g sim run``).

``simulate(scenario)`` runs ``boards/sim/scenario_runner.py`` on the MicroPython unix
runtime with ``firmware/`` and ``boards/sim/`` importable, on a fresh flash directory holding
the sim board's data. The result and the trace are written to temporary files and moved
into place only when the run completed. Same scenario, same bytes.

Context: host only.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from v2g.common import paths, twin
from v2g.common.errors import ToolError, UsageError
from v2g.sim import mpycache

SIM_DIR = paths.REPO_ROOT / "boards" / "sim"
RUNNER = SIM_DIR / "scenario_runner.py"


def _atomic_target(path):
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise UsageError("%s: directory %s does not exist" % (path, path.parent))
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", dir=str(path.parent or "."))
    os.close(fd)
    return tmp


def simulate(sc, trace_path=None, trace_every=10, out_path=None, progress=False,
             timeout_s=None, compiled=True, plant_twin=None):
    """Run a normalised scenario; returns the result dict (and writes the files).
    ``compiled``: import precompiled .mpy modules (``v2g.sim.mpycache``) where the host
    allows, which only saves start-up time; False runs the sources. ``plant_twin``: run
    the plant's bytecode twin (``v2g.common.twin``); None: only where the runtime's small
    ints are too narrow for the viper plant (a 32-bit runtime)."""
    work = Path(tempfile.mkdtemp(prefix="v2g-sim-"))
    out_tmp = trace_tmp = None
    try:
        flash = work / "flash"
        flash.mkdir()
        shutil.copy(SIM_DIR / "board.json", flash / "board.json")
        sc_file = work / "scenario.json"
        sc_file.write_text(json.dumps(sc))
        res_file = work / "result.json"
        if trace_path:
            trace_tmp = _atomic_target(trace_path)
        if out_path:
            out_tmp = _atomic_target(out_path)
        args = [str(sc_file), str(res_file), trace_tmp or "-", str(trace_every),
                str(flash) + "/"]
        env = dict(os.environ)
        exe = paths.micropython_exe()
        dirs = twin.sim_path([SIM_DIR, paths.FIRMWARE_DIR], exe, plant_twin)
        mpy = mpycache.compiled_dir(dirs, exe) if compiled else None
        env["MICROPYPATH"] = ":".join([".frozen"] + ([str(mpy)] if mpy else [])
                                      + [str(d) for d in dirs])
        # the runner keeps every result event; a long or busy scenario needs more than the
        # unix runtime's default 2 MB heap (the firmware's own journal stays bounded).
        # Precompiled, the runner starts as a module (its .mpy), else as the script (a
        # module too where the plant twin must not be shadowed by the script's folder).
        cmd = [exe, "-X", "heapsize=64M"] + (["-m", RUNNER.stem] if mpy
                                             else twin.script_args(RUNNER, exe))
        cmd += args
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=env, cwd=str(work), text=True)
        tail = []
        show = progress if callable(progress) else (_progress_line if progress else None)
        for line in proc.stdout:
            if line.startswith("progress "):
                if show is not None:
                    show(parse_progress(line))
            else:
                tail.append(line)
                tail = tail[-40:]
        rc = proc.wait(timeout=timeout_s)
        if progress is True and sys.stderr.isatty():
            print("", file=sys.stderr)
        if rc != 0 or not res_file.exists():
            raise ToolError("the simulated board failed (exit %d):\n%s" % (rc, "".join(tail)))
        result = json.loads(res_file.read_text())
        result["wall_s"] = round(time.monotonic() - t0, 3)
        if out_path:
            Path(out_tmp).write_text(json.dumps(_stable(result), indent=2) + "\n")
            os.replace(out_tmp, out_path)
            out_tmp = None
        if trace_path:
            os.replace(trace_tmp, trace_path)
            trace_tmp = None
        return result
    finally:
        for tmp in (out_tmp, trace_tmp):
            if tmp and os.path.exists(tmp):
                os.remove(tmp)
        shutil.rmtree(work, ignore_errors=True)


PROGRESS_FIELDS = ("t_s", "state", "locked", "f_hz", "v_pos_pu", "p_w", "q_var", "t_module_c",
                   "contactor_status")


def parse_progress(line):
    """A runner ``progress`` line -> dict with PROGRESS_FIELDS."""
    parts = line.split()[1:]
    out = dict(zip(PROGRESS_FIELDS, parts))
    for k in ("t_s", "f_hz", "v_pos_pu", "p_w", "q_var", "t_module_c"):
        if k in out:
            out[k] = float(out[k])
    for k in ("locked", "contactor_status"):
        if k in out:
            out[k] = int(out[k])
    return out


def _progress_line(p):
    if sys.stderr.isatty():
        print("\rsim: t=%6.2f s  %-20s P=%7.0f W" % (p["t_s"], p.get("state", ""),
                                                    p.get("p_w", 0)),
              end="", file=sys.stderr, flush=True)


RESULT_ORDER = ("scenario", "tick_hz", "duration_s", "events", "first_trip_s",
                "energized_intervals", "energy_wh", "final", "tick")
EVENT_ORDER = ("t_s", "kind", "code", "name", "detail")


def _ordered(d, order):
    out = {k: d[k] for k in order if k in d}
    out.update((k, d[k]) for k in sorted(d) if k not in out)
    return out


def _stable(result):
    """The result in the key order of docs/formats.md section 2, without run-to-run noise (wall time), so the
    file is byte-stable."""
    r = _ordered({k: v for k, v in result.items() if k != "wall_s"}, RESULT_ORDER)
    r["events"] = [_ordered(e, EVENT_ORDER) for e in r["events"]]
    r["final"] = _ordered(r["final"], ("state", "contactor_status", "derate_pct",
                                       "t_module_c"))
    return r
