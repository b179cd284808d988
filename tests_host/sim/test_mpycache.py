"""``v2g.sim.mpycache``: precompiled modules for simulation runs are never stale and load on
the unix runtime with the results of the sources."""

import subprocess

import pytest

from v2g.common import paths, twin
from v2g.sim import mpycache


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setattr(mpycache, "CACHE_ROOT", root)
    return root


def test_edited_source_gets_a_new_folder(tmp_path, cache_root, micropython_exe):
    src = tmp_path / "src"
    src.mkdir()
    # 1 << 30 in viper needs the 63-bit small ints of a 64-bit runtime (mpy-cross must be
    # told: -msmall-int-bits); with 31-bit ones (a 32-bit runtime) it is an object
    big = "(1 << 30)" if twin.small_int_bits(micropython_exe) == 63 else "(1 << 29)"
    (src / "m.py").write_text("import micropython\n\n@micropython.viper\n"
                              "def f(x: int) -> int:\n    return x + %s\n" % big)
    first = mpycache.compiled_dir([src], micropython_exe)
    assert first is not None and (first / "m.mpy").is_file()
    assert mpycache.compiled_dir([src], micropython_exe) == first  # reused
    (src / "m.py").write_text("import micropython\n\n@micropython.viper\n"
                              "def f(x: int) -> int:\n    return x + 2\n")
    second = mpycache.compiled_dir([src], micropython_exe)
    assert second != first and (second / "m.mpy").is_file()
    r = subprocess.run([micropython_exe, "-c", "import m; print(m.f(5))"],
                       env={"MICROPYPATH": str(second)}, capture_output=True, text=True)
    assert r.stdout.strip() == "7", r.stderr


def test_a_file_that_does_not_compile_means_no_cache(tmp_path, cache_root,
                                                    micropython_exe):
    src = tmp_path / "src"
    src.mkdir()
    (src / "bad.py").write_text("def f(:\n")
    assert mpycache.compiled_dir([src], micropython_exe) is None
    assert not [d for d in cache_root.iterdir() if not d.name.startswith(".")]


def test_firmware_and_sim_compile(cache_root, micropython_exe):
    # the folders the scenario runner compiles (the plant's twin first on a 32-bit runtime)
    dirs = twin.sim_path([paths.BOARDS_DIR / "sim", paths.FIRMWARE_DIR], micropython_exe)
    d = mpycache.compiled_dir(dirs, micropython_exe)
    assert d is not None
    names = {p.stem for p in d.glob("*.mpy")}
    assert {"tick_fused", "plant", "scenario_runner", "supervisor"} <= names
