"""The asm_thumb kernels (firmware/thumb/tick_thumb.py) against the viper reference, on the
emulated cores: Cortex-M0 (ARMv6-M) and Cortex-M4F (ARMv7E-M) run the same Thumb-1 kernels.

- ``tick_fused_thumb_compute.compute`` (the fused compute calling the kernels) prints the
  very lines ``tick_fused_compute.compute`` (viper) prints over randomized ticks
  (``fuzz_runner``: grids at 40-70 Hz, so the windows grow and shrink, phase jumps, garbage
  and full-scale ADC words, trips), on each core, and both equal CPython's;
- the interrupt handler ``tick.make_tick`` picks the kernel body where ``tick_thumb`` is
  importable, ends with the state checksum of the wired viper tick, and allocates nothing;
- on CPython (and the x86-64 runtime, whose mpy-cross cannot compile asm_thumb) the viper
  body runs.

Marked ``target`` (skips with one line when the instruments are missing), but the last
test, which is plain CPython.
"""

import subprocess
import sys

import pytest

from v2g import targets
from v2g.common import paths

RUNNER = paths.MP_DIR / "fuzz_runner.py"
THUMB = sorted((paths.FIRMWARE_DIR / "thumb").glob("*.py"))
CORES = sorted(targets.CORES)
FUZZ_HEAP = {"m0": 229376, "m4": 262144, "m7": 450000}


def _need(*keys):
    av = targets.available()
    for k in keys:
        if not av[k]["ok"]:
            pytest.skip("target instrument %s missing: %s" % (k, av[k]["reason"]))


def _cpython(seed, ticks, tick_hz):
    env_path = "%s:%s" % (paths.SHIM_DIR, paths.FIRMWARE_DIR)
    r = subprocess.run([sys.executable, str(RUNNER), str(seed), str(ticks), str(tick_hz),
                        "fused"], capture_output=True, text=True,
                       env={"PYTHONPATH": env_path}, timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.target
@pytest.mark.parametrize("core", CORES)
@pytest.mark.parametrize("seed,ticks,tick_hz", [(6, 30000, 10000), (7, 20000, 2000)])
def test_thumb_compute_bit_identical_to_viper(core, seed, ticks, tick_hz):
    _need("qemu", "qemu-" + core, "mpy-cross")
    mods = targets.firmware_modules(core)
    mods.update(targets.compile_modules(core, [RUNNER] + THUMB))
    out = {}
    for impl in ("thumb", "fused"):
        script = "import fuzz_runner\nfuzz_runner.main(%d, %d, %d, %r)\n" % (
            seed, ticks, tick_hz, impl)
        r = targets.run_script(core, script, heap=FUZZ_HEAP[core], modules=mods, count=False)
        assert not r.error, r.error
        assert r.output.splitlines()[-1].split()[-1] == str(ticks)
        out[impl] = r.output
    assert out["thumb"] == out["fused"]
    assert out["thumb"] == _cpython(seed, ticks, tick_hz)


TICK_THUMB = targets.STOP_SYSTICK + """\
import gc, micropython
import tick_harness as h
h.CYCLES = 1
hal = h.BenchHal(h.make_samples())
gc.collect()
import tick
print("thumb", int(tick.THUMB))
ctl = isr = lock = _ = None  # every global exists before the heap is locked
for wired in (False, True):
    ctl = isr = None  # the last Control's 13 KB block: free it first
    gc.collect()
    hal.buf[0] = hal._SRC
    ctl = h.make_control()
    isr = tick.make_tick(hal, ctl, inline=not wired)
    isr(None)
    gc.collect()
    micropython.heap_lock()
    try:
        for _ in range(%d):
            isr(None)
        lock = "ok"
    except MemoryError:
        lock = "MemoryError"
    micropython.heap_unlock()
    print("wired" if wired else "fused", lock, ctl.stats[6], ctl.stats[0],
          h.checksum(h.state_arrays(ctl)))
"""


@pytest.mark.target
@pytest.mark.parametrize("core", CORES)
def test_thumb_handler_matches_wired_tick_and_allocates_nothing(core):
    _need("qemu", "qemu-" + core, "mpy-cross")
    n = 3000
    mods = targets.firmware_modules(core)
    mods.update(targets.compile_modules(core, [paths.MP_DIR / "tick_harness.py"] + THUMB))
    r = targets.run_script(core, TICK_THUMB % n, heap=FUZZ_HEAP[core], modules=mods,
                           count=False)
    assert not r.error, r.error
    lines = r.output.split("\n")
    assert "thumb 1" in lines, r.output
    res = {ln.split()[0]: ln.split()[1:] for ln in lines if ln[:5] in ("wired", "fused")}
    assert res["fused"][:3] == ["ok", "0", str(n + 1)], r.output
    assert res["wired"][:3] == ["ok", "0", str(n + 1)], r.output
    assert res["fused"][3] == res["wired"][3]  # same state checksum


def test_cpython_keeps_the_viper_body():
    env_path = "%s:%s" % (paths.SHIM_DIR, paths.FIRMWARE_DIR)
    r = subprocess.run([sys.executable, "-c", "import tick; print(tick.THUMB, "
                        "tick.tick_fused.__name__)"], capture_output=True, text=True,
                       env={"PYTHONPATH": env_path}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "tick_fused"]
