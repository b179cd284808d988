"""The sim plant's bytecode twin (``v2g.common.twin``), which a runtime with 31-bit small
ints (a 32-bit unix build) runs instead of the viper plant of ``boards/sim/plant.py``.

- on a 64-bit runtime, the twin and the viper plant give byte-identical scenario results
  and traces, over a scenario that takes every path of the tick (harmonics, negative
  sequence, noise, a frequency ramp, a phase jump, gates on and off, the island);
- on whichever runtime runs the suite, the plant a MicroPython script imports, the
  scenario runner's and the sim board's flash files are the twin exactly where the
  runtime's small ints are 31 bits.
"""

import pytest

from v2g.board import flash
from v2g.common import paths, runtime, twin
from v2g.sim import runner, scenario

_PROBE = "import plant\nprint('twin' if getattr(plant, '_V2G_BYTECODE_TWIN', 0) else 'viper')\n"


def _scenario():
    f0 = 50.0
    events = [
        {"t_s": 0.0, "setpoint": {"id": "a", "p_w": -8000, "q_var": 2000}},
        {"t_s": 0.45, "harmonics": [{"order": 5, "pu": 0.03, "phase_deg": 30},
                                    {"order": 7, "pu": 0.02}],
         "neg_seq_pu": 0.02, "noise_pu_rms": 0.002},
        {"t_s": 0.6, "rocof_hz_s": 0.5, "until_hz": 50.1},
        {"t_s": 0.75, "phase_jump_deg": [6, -4, 0]},
        {"t_s": 0.85, "setpoint": {"id": "b", "p_w": 6000, "q_var": 0}},
        {"t_s": 1.0, "island": True},
    ]
    return scenario.validate({
        "name": "twin", "duration_s": 1.3,
        "grid": {"v_nom_ln_rms": 230.0, "f_nom_hz": f0}, "initial": {"f_hz": f0},
        "config": {"enter_service_delay_s": 0.1, "enter_service_ramp_s": 0.0},
        "events": events})


def test_twin_gives_the_viper_plants_bits(tmp_path, micropython_exe):
    if twin.needs_plant_twin(micropython_exe):
        pytest.skip("64-bit only: the viper plant does not compile on a runtime with 31-bit "
                    "small ints (this one runs the twin; the twin's own results are checked "
                    "against the CPython plant by test_plant.py)")
    sc = _scenario()
    files = {}
    for tag, use in (("viper", False), ("twin", True)):
        out, tr = tmp_path / (tag + ".json"), tmp_path / (tag + ".csv")
        runner.simulate(sc, trace_path=str(tr), trace_every=1, out_path=str(out),
                        plant_twin=use)
        files[tag] = (out.read_bytes(), tr.read_bytes())
    assert files["twin"][0] == files["viper"][0]
    assert files["twin"][1] == files["viper"][1]
    assert files["viper"][1].count(b"\n") > 12000  # every tick of 1.3 s at 10 kHz


def test_twin_is_imported_where_small_ints_are_31_bits(tmp_path, micropython_exe):
    bits = twin.small_int_bits(micropython_exe)
    assert bits in (31, 63)
    want = "twin" if bits == 31 else "viper"
    assert twin.needs_plant_twin(micropython_exe) == (bits == 31)
    probe = tmp_path / "probe.py"
    probe.write_text(_PROBE)
    r = runtime.run_micropython(probe, extra_path=(twin.SIM_DIR,), exe=micropython_exe,
                                timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split() == [want]
    # the sim board's flash files (v2g sim board, v2g flash --board sim, update bundles)
    plant = flash.source_files("sim")["plant.py"]
    assert (plant == twin.PLANT) == (bits == 63)
    # the scenario runner's path (and so its .mpy cache): twin before boards/sim, or nothing
    dirs = twin.sim_path([twin.SIM_DIR, paths.FIRMWARE_DIR], micropython_exe)
    assert len(dirs) == (3 if bits == 31 else 2)
    if bits == 31:
        assert (dirs[0] / "plant.py").read_text() == twin.transform(
            twin.PLANT.read_text(), "plant.py")[0]


def test_twin_source():
    text, n_dec, n_cast = twin.transform(twin.PLANT.read_text(), "plant.py")
    assert n_dec >= 2 and n_cast >= 1
    assert "@micropython.viper" not in text and "ptr32(" not in text
    assert twin.MARKER + " = True" in text
    d = twin.plant_twin_dir()
    assert (d / "plant.py").read_text() == text and twin.plant_twin_dir() == d
