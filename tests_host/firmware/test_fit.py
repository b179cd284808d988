"""Every board's tree boots on the parameter table's defaults (no config.json), in CPython
and on the MicroPython unix runtime, and leaves at least 30 % of the board's stated heap
free after boot and with the event journal at capacity.

Real boards' HALs import ``machine`` (and ``pyb``/``stm``): they run here on the
permissive stand-ins of ``v2g/build/mp/fake_hw.py``. The heap figures come from the 64-bit unix
runtime with ``-X heapsize=<heap_bytes>``: its objects are larger than a 32-bit board's,
so they are pessimistic for the boards (a 32-bit unix build gives nearly exact ones:
``MICROPYTHON32=/path/to/micropython``, see ``v2g/heap.py``).
"""

import ast
import importlib.util
import json
import os
import sys
import time

import pytest

from v2g.board import flash
from v2g.common import paths
from v2g.targets import heap

REAL_BOARDS = ("rp2", "stm32", "esp32")
ALL_BOARDS = REAL_BOARDS + ("sim",)
MIN_FREE = 0.30


def board_data(name):
    return json.loads((paths.BOARDS_DIR / name / "board.json").read_text())


@pytest.mark.parametrize("name", ALL_BOARDS)
def test_defaults_fit_the_board(name):
    import app
    import params

    assert app.board_errors(board_data(name), params.defaults()) == []


@pytest.fixture
def fake_hw(monkeypatch):
    spec = importlib.util.spec_from_file_location("fake_hw", paths.MP_DIR / "fake_hw.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name in ("machine", "pyb", "stm", "rp2"):
        monkeypatch.setitem(sys.modules, name, getattr(mod, name))
    # MicroPython's time functions the HALs call (CPython's time has none of them)
    monkeypatch.setattr(time, "ticks_us", lambda: 0, raising=False)
    monkeypatch.setattr(time, "ticks_ms", lambda: 0, raising=False)
    monkeypatch.setattr(time, "ticks_diff", lambda a, b: a - b, raising=False)
    monkeypatch.setattr(time, "sleep_us", lambda us: None, raising=False)
    monkeypatch.setattr(time, "sleep_ms", lambda ms: None, raising=False)
    return mod


@pytest.mark.parametrize("name", REAL_BOARDS)
def test_board_tree_boots_without_config_cpython(name, fake_hw, tmp_path):
    import app
    import params

    board = board_data(name)
    fake_hw.install(board)
    spec = importlib.util.spec_from_file_location(
        "hal_boot_%s" % name, paths.BOARDS_DIR / name / "hal.py")
    hal = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hal)
    a = app.App(hal, board, root=str(tmp_path) + "/")
    assert a.held == params.defaults()
    assert not [e for e in a.journal if e[1] == "fault"]  # no fallback was needed
    for _ in range(10):
        a.tick(None)
    assert a.ctl.stats[0] == 10
    a.supervise_once(0)
    a.stop()


@pytest.mark.parametrize("name", ALL_BOARDS)
def test_board_tree_boots_without_config_micropython(name, micropython_exe):
    fig = heap.probe(name, heapsize=4 * 1024 * 1024, exe=micropython_exe)
    assert fig["ok_boot"] == 1 and fig["journal_len"] > 0


def _exes(micropython_exe):
    exes = [("64-bit", micropython_exe)]
    exe32 = os.environ.get("MICROPYTHON32")
    if exe32:
        exes.append(("32-bit", exe32))
    return exes


@pytest.mark.parametrize("name", REAL_BOARDS)
def test_heap_free_at_the_boards_heap_size(name, micropython_exe):
    """>= 30 % of heap_bytes free after boot and with the journal full (pessimistic on the
    64-bit runtime), and a large block still allocatable (no fragmentation failure)."""
    board = board_data(name)
    assert board["heap_bytes"] > 0
    for label, exe in _exes(micropython_exe):
        fig = heap.probe(name, exe=exe)
        for tag in ("boot", "full"):
            frac = heap.free_fraction(fig, tag)
            assert frac >= MIN_FREE, "%s %s: %s %.1f %% free of %d" % (
                name, label, tag, 100 * frac, fig["heap_bytes"])
        assert fig["full_largest"] >= 16384, fig  # room for a flush, a config read


@pytest.mark.parametrize("name", REAL_BOARDS)
def test_manifest_freezes_every_firmware_module(name):
    """boards/<name>/manifest.py (frozen build) includes boards/manifest_firmware.py, which
    lists every module of firmware/ but the two that stay files (boot.py, main.py) and
    those boards never import, and the services package; ARM boards ask it for the
    asm_thumb kernels too; the board's manifest freezes the shared drivers its HAL
    imports."""
    text = (paths.BOARDS_DIR / name / "manifest.py").read_text()
    common = (paths.BOARDS_DIR / "manifest_firmware.py").read_text()
    start = common.index("FIRMWARE = ") + len("FIRMWARE = ")
    listed = set(ast.literal_eval(common[start:common.index(")\n", start) + 1]))
    expect = {p.name for p in paths.FIRMWARE_DIR.glob("*.py")} - {
        "boot.py", "main.py", "tick_fused_compute.py", "tick_fused_thumb_compute.py",
        "tick_fused_thumb.py"}
    assert listed == expect
    # ARM boards also freeze the fused tick with the asm_thumb kernels and the kernels
    # (firmware/thumb/, which compiles only where the inline Thumb assembler exists)
    start = common.index("THUMB = ") + len("THUMB = ")
    assert ast.literal_eval(common[start:common.index("\n", start)]) == ("tick_fused_thumb.py",)
    assert "for _name in FIRMWARE + (THUMB if options.thumb else ()):" in common
    assert 'module("tick_thumb.py", base_path="../firmware/thumb"' in common
    assert 'package("services", base_path="../firmware"' in common
    if board_data(name)["mpy_arch"].startswith("armv"):
        assert 'include("../manifest_firmware.py", thumb=True)' in text
    else:
        assert 'include("../manifest_firmware.py")' in text and "thumb" not in text
    assert 'module("hal.py"' in text
    start = text.index("DRIVERS = ") + len("DRIVERS = ")
    drivers = set(ast.literal_eval(text[start:text.index("\n", start)].split("#")[0]))
    hal = paths.BOARDS_DIR / name / "hal.py"
    assert drivers == {p.name for p in flash.driver_files(hal)}
