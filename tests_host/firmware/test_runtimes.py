"""One source, identical results: the hot paths on the MicroPython unix runtime (viper)
and under CPython give the same bits over long randomized runs.

The run (``v2g/build/mp/fuzz_runner.py``) drives ``tick_fused_compute.compute`` (the
compute the interrupt body has inlined) or ``tick.compute`` (the same steps called one by
one) -- ADC scaling, the PLL,
fast protection, current control and modulation -- with grids between 40 and 70 Hz
(the 2**28 phase accumulator wraps every cycle), phase jumps, garbage and full-scale
ADC words, DC link from zero to full scale, and power commands far past the limits
(integrators and the modulator saturate), plus trips and re-enables.
"""

import subprocess
import sys

import pytest

from v2g.common import paths

RUNNER = paths.MP_DIR / "fuzz_runner.py"


def _cpython(seed, ticks, tick_hz, impl):
    env_path = "%s:%s" % (paths.SHIM_DIR, paths.FIRMWARE_DIR)
    r = subprocess.run([sys.executable, str(RUNNER), str(seed), str(ticks), str(tick_hz),
                        impl], capture_output=True, text=True,
                       env={"PYTHONPATH": env_path}, timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout


# (unix runtime, CPython) implementations: the fused compute the interrupt runs and the
# wired one (each step called), crossed, so all four agree when every pair does
@pytest.mark.parametrize("seed,ticks,tick_hz,mp_impl,cp_impl", [
    (1, 100000, 10000, "fused", "wired"), (2, 40000, 2000, "wired", "fused"),
    (3, 40000, 20000, "fused", "fused"), (8, 40000, 10000, "wired", "wired")])
def test_viper_and_cpython_bit_identical(run_micropython, seed, ticks, tick_hz, mp_impl,
                                         cp_impl):
    mp = run_micropython(RUNNER, (seed, ticks, tick_hz, mp_impl))
    assert mp.returncode == 0, mp.stdout + mp.stderr
    mp_out = mp.stdout.decode()
    cp_out = _cpython(seed, ticks, tick_hz, cp_impl)
    assert mp_out.splitlines()[-1].startswith("end ")
    assert mp_out.splitlines()[-1].split()[-1] == str(ticks)
    assert mp_out == cp_out
    cover = dict(kv.split("=") for kv in mp_out.splitlines()[-2].split()[1:])
    for key in ("run", "sat", "trip", "idle", "locked", "trips"):
        assert int(cover[key]) > 0, "the run never reached %s: %s" % (key, cover)
