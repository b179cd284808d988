"""``python -m v2g.targets.measure [--board B ...]``: the tick's cost on the emulated cores.

Prints one JSON object: per board with a qemu target (rp2 -> Cortex-M0/armv6m, stm32 ->
Cortex-M4F/armv7emsp), run with the board's GC heap (``v2g.targets.BOARDS``):
- ``instr_per_tick_fused`` / ``instr_per_tick_wired``: guest instructions per tick of the
  interrupt handler ``tick.make_tick`` (generated ``tick_fused.run`` / the written
  ``tick._run``) with the host bench's HAL and Control (``v2g/mp/tick_harness.py``),
  ``(count(N2 ticks) - count(N1 ticks)) / (N2 - N1)`` on fresh Controls, so set-up
  cancels; the Python loop and the call into the handler are included, as in
  ``v2g bench``'s ``instr_per_tick_viper``;
- ``instr_per_compute``: ``tick_fused_compute.compute`` alone (fixed ADC words), or
  ``tick_fused_thumb_compute.compute`` where the asm_thumb kernels load
  (``thumb_kernels``: true on both cores, the boards freeze firmware/thumb/);
  ``instr_per_compute_call``: the same Python loop calling an empty viper function of the
  same signature (the harness: loop and call into viper, about 450 instructions);
  ``instr_per_compute_net`` = compute - call, the figure comparable with C's compute
  (whose own loop and call, a few instructions, stay in ``instr_per_compute_c``);
  ``ratio_compute_vs_c`` (raw) and ``ratio_compute_net_vs_c``;
- ``instr_per_tick_c`` / ``instr_per_compute_c``: the C reference (arm-none-eabi-gcc -O2
  for the same core, bare metal) counted the same way; ``ratio_tick_vs_c``;
- ``pct_of_period``: instr_per_tick_fused * CPI / (clock_hz / tick_hz) * 100 with CPI =
  ``cpi_assumed`` (1.0: a lower bound; loads, taken branches, flash wait states and the
  interrupt entry cost more);
- ``heap_lock``: ``ok`` when ``ticks`` ticks ran under ``micropython.heap_lock()``;
- ``boot``: ``mem_free`` / ``mem_alloc`` (bytes, after gc.collect) with the board's GC
  heap once ``app`` is imported and the board's Control built from its board.json with
  the default config (``app.build_control``), or the error that boot step raised;
  ``boot_roomy``: the same with the core's largest heap (``ROOMY_HEAP``): what boot needs;
- the tick figures run with ``ROOMY_HEAP`` too (``heap``): the firmware plus the bench
  harness does not fit the boards' own heaps (see ``boot``);
- ``samples_cycles``: grid cycles of precomputed ADC samples the harness HAL holds (1 on
  the M0, whose heap has no room for the host bench's 4 next to the firmware; the C
  reference uses 4: the tick's work is the same, only the noise words differ).
Counts are exact and repeat from run to run (SysTick stopped, no other interrupt).
Context: host only; needs ``make targets``.
"""

import argparse
import json
import sys

from v2g.common import paths
from v2g.targets import (BOARDS, NO_TARGET, STOP_SYSTICK, available, compile_modules,
                         firmware_modules, run_cref, run_script)

N1, N2 = 500, 2500
# the asm_thumb kernels (firmware/thumb/): both cores are Thumb, and the ARM boards freeze
# them (boards/<board>/manifest.py), so the tick figures are those of the kernel body
THUMB_FILES = sorted((paths.FIRMWARE_DIR / "thumb").glob("*.py"))
# GC heap of the tick runs when the board's own is too small for firmware + harness
# (bytes): the most each core's image takes (M0: 256 KB RAM in the port's linker script).
ROOMY_HEAP = {"m0": 229376, "m4": 1048576}
LOCK_TICKS = 2000
CPI_ASSUMED = 1.0

# On-target: %(cycles)d, %(n1)d, %(n2)d, %(lock)d. Prints one JSON-ish line per figure.
TICK_SCRIPT = STOP_SYSTICK + """\
import gc, time, micropython
import tick_harness as h
h.CYCLES = %(cycles)d
hal = h.BenchHal(h.make_samples())
gc.collect()
import tick
if tick.THUMB:  # the board runs the body with the asm_thumb kernels: measure that compute
    import tick_fused_thumb_compute as tick_fused_compute
else:
    import tick_fused_compute
print("thumb", int(tick.THUMB))
@micropython.viper
def empty(m: ptr32) -> int:
    return 0
m = time.ticks_cpu
def loop(f, n):
    for _ in range(n):
        f(None)
def loopc(f, mem, n):
    for _ in range(n):
        f(mem)
ctl = isr = c2 = None
def fresh():
    global ctl, isr, c2
    ctl = isr = c2 = None  # the last Control's 13 KB block: free it first
    gc.collect()
    hal.buf[0] = hal._SRC
    for i in range(8):
        hal.rec[i] = 0
    return h.make_control()
for wired in (False, True):
    for n in (%(n1)d, %(n2)d):
        ctl = fresh()
        isr = tick.make_tick(hal, ctl, inline=not wired)
        gc.collect()
        m(); loop(isr, n); m()
    print("tick", "wired" if wired else "fused", h.checksum(h.state_arrays(ctl)), hal.rec[0],
          hal.rec[1])
for n in (%(n1)d, %(n2)d):
    c2 = fresh()
    for i in range(7):
        c2.raw[i] = hal.src[i]
    gc.collect()
    m(); loopc(tick_fused_compute.compute, c2.mem, n); m()
for n in (%(n1)d, %(n2)d):
    m(); loopc(empty, c2.mem, n); m()
ctl = fresh()
isr = tick.make_tick(hal, ctl)
gc.collect()
micropython.heap_lock()
try:
    loop(isr, %(lock)d)
    lock = "ok"
except MemoryError:
    lock = "MemoryError"
micropython.heap_unlock()
if lock == "ok" and ctl.stats[6]:
    lock = "swallowed"
print("lock", lock)
"""

BOOT_SCRIPT = """\
import gc, os, json
os.chdir("/blob")
import app, params
board = app.load_board()
gc.collect()
try:
    ctl = app.build_control(board, params.defaults())
    err = ""
except Exception as e:
    err = "%s: %s" % (type(e).__name__, e)
gc.collect()
print(json.dumps({"mem_free": gc.mem_free(), "mem_alloc": gc.mem_alloc(), "error": err}))
"""


def _harness(core):
    mods = firmware_modules(core)
    mods.update(compile_modules(core, [paths.MP_DIR / "tick_harness.py"] + THUMB_FILES))
    return mods


def measure_tick(board_name, heap=None, cycles=None):
    b = BOARDS[board_name]
    core = b["core"]
    heap = heap or ROOMY_HEAP[core]
    if cycles is None:
        cycles = 4 if core == "m4" else 1
    script = TICK_SCRIPT % {"cycles": cycles, "n1": N1, "n2": N2, "lock": LOCK_TICKS}
    r = run_script(core, script, heap=heap, modules=_harness(core))
    out = {"core": core, "heap": heap, "samples_cycles": cycles}
    if r.error:
        out["error"] = r.error.strip().splitlines()[-1]
        out["traceback"] = r.error
        return out, r
    seg = r.segments()
    loops = seg[0::2]  # m(); loop; m() pairs: the loops are every other segment
    if len(loops) != 8:
        out["error"] = "expected 8 measured loops, got %d marks" % len(r.marks)
        return out, r
    out["instr_per_tick_fused"] = (loops[1] - loops[0]) / (N2 - N1)
    out["instr_per_tick_wired"] = (loops[3] - loops[2]) / (N2 - N1)
    out["instr_per_compute"] = (loops[5] - loops[4]) / (N2 - N1)
    # the same loop calling an empty viper function of the same signature: the Python
    # loop and the call into viper, which the C figure (a C loop calling compute) lacks
    out["instr_per_compute_call"] = (loops[7] - loops[6]) / (N2 - N1)
    out["instr_per_compute_net"] = out["instr_per_compute"] - out["instr_per_compute_call"]
    for line in r.output.splitlines():
        p = line.split()
        if p and p[0] == "tick":
            out["checksum_" + p[1]] = int(p[2])
            out["n_set_" + p[1]] = int(p[3])
        elif p and p[0] == "lock":
            out["heap_lock"] = p[1]
        elif p and p[0] == "thumb":
            out["thumb_kernels"] = bool(int(p[1]))
    out["heap_lock_ticks"] = LOCK_TICKS
    return out, r


def measure_boot(board_name, heap=None):
    b = BOARDS[board_name]
    core = b["core"]
    mods = firmware_modules(core)
    mods["board.json"] = (paths.BOARDS_DIR / board_name / "board.json").read_bytes()
    r = run_script(core, BOOT_SCRIPT, heap=heap or b["heap"], modules=mods, count=False)
    if r.error:
        return {"error": r.error.strip().splitlines()[-1]}
    line = [ln for ln in r.output.splitlines() if ln.startswith("{")]
    return json.loads(line[-1]) if line else {"error": "no output: %r" % r.output}


def measure(boards=None):
    av = available()
    missing = [k for k in ("qemu", "plugin", "arm-gcc", "qemu-m0", "qemu-m4", "mpy-cross")
               if not av[k]["ok"]]
    if missing:
        return {"error": "; ".join(av[k]["reason"] for k in missing)}
    res = {"cpi_assumed": CPI_ASSUMED, "n_ticks": [N1, N2], "boards": {}}
    cref = {}
    for name in boards or sorted(BOARDS):
        b = BOARDS[name]
        board = json.loads((paths.BOARDS_DIR / name / "board.json").read_text())
        fig, _ = measure_tick(name)
        if b["core"] not in cref:
            cref[b["core"]] = run_cref(b["core"], N1, N2)
        c = cref[b["core"]]
        fig["instr_per_tick_c"] = c["instr_per_tick"]
        fig["instr_per_compute_c"] = c["instr_per_compute"]
        fig["c_result"] = c["results"][-1]
        clock = board.get("pwm_clock_hz")
        fig["clock_hz"] = clock
        fig["tick_hz"] = board["tick_hz"]
        if "instr_per_tick_fused" in fig:
            fig["ratio_tick_vs_c"] = round(fig["instr_per_tick_fused"] / c["instr_per_tick"], 2)
            fig["ratio_compute_vs_c"] = round(fig["instr_per_compute"]
                                              / c["instr_per_compute"], 2)
            fig["ratio_compute_net_vs_c"] = round(fig["instr_per_compute_net"]
                                                  / c["instr_per_compute"], 2)
            if clock:
                cyc = clock / board["tick_hz"]
                fig["cycles_per_period"] = cyc
                fig["pct_of_period"] = round(
                    100.0 * fig["instr_per_tick_fused"] * CPI_ASSUMED / cyc, 1)
                fig["pct_of_period_c"] = round(100.0 * c["instr_per_tick"] * CPI_ASSUMED / cyc,
                                               1)
        fig["boot"] = measure_boot(name)
        fig["boot"]["heap"] = b["heap"]
        fig["boot_roomy"] = measure_boot(name, ROOMY_HEAP[b["core"]])
        fig["boot_roomy"]["heap"] = ROOMY_HEAP[b["core"]]
        res["boards"][name] = fig
    for name, why in NO_TARGET.items():
        res["boards"][name] = {"skipped": why}
    return res


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m v2g.targets.measure",
                                description=__doc__.split("\n")[0])
    p.add_argument("--board", action="append", choices=sorted(BOARDS),
                   help="only this board (repeatable; default: all with a target)")
    args = p.parse_args(argv)
    res = measure(args.board)
    print(json.dumps(res, indent=2))
    return 1 if "error" in res else 0


if __name__ == "__main__":
    sys.exit(main())
