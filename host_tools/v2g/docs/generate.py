"""Generate the parts of ``docs/`` that have one source in the code, or check them.

    python -m v2g.docs.generate            rewrite docs/formats.md blocks and docs/params.md
    python -m v2g.docs.generate --check    exit 1 naming each stale file (tests run this)

A generated block in a Markdown file sits between ``<!-- generated: NAME -->`` and
``<!-- end generated: NAME -->``; everything outside the markers is written by hand.

Context: host only.
"""

import argparse
import ast
import sys

from v2g.common import paths, runtime
from v2g.sim import scenario

DOCS_DIR = paths.REPO_ROOT / "docs"
FORMATS = DOCS_DIR / "formats.md"
PARAMS = DOCS_DIR / "params.md"

# trace column -> (unit, meaning); every column of the scenario runner's header must be
# here (the generator refuses a column it cannot describe)
TRACE_COLUMNS = {
    "t_s": ("s", "simulated time"),
    "grid_theta_rad": ("rad", "the plant's true angle of the positive-sequence phase-a voltage"),
    "theta_rad": ("rad", "the PLL's estimate of the same angle, [0, 2*pi)"),
    "f_hz": ("Hz", "the PLL's frequency"),
    "v_pos_pu": ("pu", "the PLL's positive-sequence voltage magnitude"),
    "locked": ("0/1", "PLL locked"),
    "v_a": ("V", "phase-a voltage at the point of connection, phase to neutral"),
    "v_b": ("V", "phase b, as v_a"),
    "v_c": ("V", "phase c, as v_a"),
    "i_a": ("A", "phase-a current, positive into the converter (charging)"),
    "i_b": ("A", "phase b, as i_a"),
    "i_c": ("A", "phase c, as i_a"),
    "p_w": ("W", "active power at the grid side, > 0 charging the vehicle, < 0 export"),
    "q_var": ("var", "reactive power, > 0 absorbed (inductive)"),
    "energized": ("0/1", "current flows through closed contactors with PWM enabled"),
    "state": ("", "supervisor state name"),
    "t_module_c": ("C", "power-module temperature (plant)"),
    "contactor_status": ("", "contactor status code (table above)"),
}

CONTACTOR_MEANINGS = {
    "STUCK": "welded (aux still closed 0.5 s after an open command) or not following a "
             "close command; latches until an operator clears it: inspect the coil actuator",
    "OPEN": "main and pre-charge contactors open",
    "CLOSED": "main contactor closed, aux contact confirms",
    "PRECHARGING": "pre-charge relay closed, main open (or main commanded, aux not yet)",
    "OPENING": "open commanded, aux contact not yet open",
}


def _firmware():
    runtime.import_firmware_cpython()
    import contactor  # noqa: PLC0415 - firmware modules, on sys.path from the line above
    import events  # noqa: PLC0415
    import params  # noqa: PLC0415

    return contactor, events, params


def _table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return "\n".join(out)


def _trace_header():
    """The trace header of ``boards/sim/scenario_runner.py`` (its ``_TRACE_HEADER``)."""
    src = (paths.BOARDS_DIR / "sim" / "scenario_runner.py").read_text()
    for node in ast.parse(src).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and getattr(node.targets[0], "id", "") == "_TRACE_HEADER"):
            return ast.literal_eval(node.value).strip().split(",")
    raise SystemExit("boards/sim/scenario_runner.py: no _TRACE_HEADER")


def blocks():
    """{block name: Markdown text} for docs/formats.md."""
    contactor, events, _ = _firmware()
    out = {}
    out["scenario-events"] = _table(("key", "allowed", "what it does"),
                                    [("`%s`" % k, a, m) for k, a, m in scenario.event_table()])
    rows = []
    for code, (name, severity, action, text) in events.FAULTS.items():
        rows.append(("`%s`" % code, name, severity, action, text,
                     "`%s %s %s`" % (severity, code, text)))
    out["fault-table"] = _table(("code", "name", "severity", "action", "text",
                                 "log line starts"), rows)
    out["event-kinds"] = ", ".join("`%s`" % k for k in events.KINDS)
    out["contactor-codes"] = _table(
        ("code", "name", "meaning"),
        [(i, n, CONTACTOR_MEANINGS[n]) for i, n in enumerate(contactor.NAMES)])
    cols = _trace_header()
    missing = [c for c in cols if c not in TRACE_COLUMNS]
    if missing:
        raise SystemExit("trace columns without a description in v2g.docs.generate: %s"
                         % ", ".join(missing))
    out["trace-columns"] = ("`" + ",".join(cols) + "`\n\n"
                            + _table(("column", "unit", "meaning"),
                                     [("`%s`" % c,) + TRACE_COLUMNS[c] for c in cols]))
    return out


def params_md():
    """The whole of docs/params.md."""
    _, _, params = _firmware()
    rows = []
    for r in params.TABLE:
        unit = r[params.UNIT]
        rows.append((r[params.PID], "`%s`" % r[params.NAME], unit, params._fmt(r, r[params.MIN]),
                     params._fmt(r, r[params.MAX]), params._fmt(r, r[params.DEFAULT]),
                     r[params.DOC]))
    return ("# Parameter reference\n\n"
            "Generated from `firmware/params.py` by `python -m v2g.docs.generate` (run from\n"
            "`host_tools/`); do not edit. Every configurable setting of the controller: the\n"
            "id is stable forever (Modbus register offsets and log records use it); a config\n"
            "file (`v2g config push FILE.yaml`, a scenario's `config`) names parameters by\n"
            "name, in the unit shown. Values outside min..max are refused, naming key, value\n"
            "and range; cross-checks between parameters are listed in `params.validate`.\n\n"
            + _table(("id", "name", "unit", "min", "max", "default", "what it does"), rows)
            + "\n")


def render_formats(text):
    """``text`` with every generated block replaced; raises SystemExit on a marker
    without its block."""
    new = blocks()
    for name, body in new.items():
        start = "<!-- generated: %s -->" % name
        end = "<!-- end generated: %s -->" % name
        i, j = text.find(start), text.find(end)
        if i < 0 or j < i:
            raise SystemExit("%s: markers for block %r missing" % (FORMATS, name))
        text = text[:i + len(start)] + "\n" + body + "\n" + text[j:]
    return text


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m v2g.docs.generate",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only check; exit 1 when stale")
    args = p.parse_args(argv)
    want = {FORMATS: render_formats(FORMATS.read_text()), PARAMS: params_md()}
    stale = [f for f, text in want.items() if not f.exists() or f.read_text() != text]
    if args.check:
        for f in stale:
            print("%s is stale: run `python -m v2g.docs.generate` from host_tools/" % f)
        return 1 if stale else 0
    for f in stale:
        f.write_text(want[f])
        print("wrote %s" % f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
