"""``v2g.build.gen_tick``: the fused tick is the generator's output, and the generator inlines
only what it can inline faithfully (anything else stops it with a named error).

That the fused function computes exactly what the wired one does is proven by
``test_runtimes`` (long randomized runs, both runtimes) and ``test_word32`` (32-bit
safety); the bench's checksums compare it with the C reference too.
"""

import ast

import pytest

from v2g.build import gen_tick
from v2g.common import paths


def test_committed_fused_tick_is_the_generators_output():
    """firmware/tick_fused.py, tick_fused_compute.py and their Thumb variants must be
    regenerated after any change to a step: ``python -m v2g.build.gen_tick``."""
    texts = gen_tick.render()
    assert sorted(texts) == ["tick_fused", "tick_fused_compute", "tick_fused_thumb",
                             "tick_fused_thumb_compute"]
    for name, text in texts.items():
        assert (paths.FIRMWARE_DIR / (name + ".py")).read_text() == text, name


def test_fused_tick_calls_nothing_but_the_hal():
    """compute() makes no call at all (its tables are in the block, so not even a cast);
    run() calls only the HAL functions it unpacks from ctx, and casts two arrays."""
    fn = {}
    for name in ("tick_fused", "tick_fused_compute"):
        tree = ast.parse((paths.FIRMWARE_DIR / (name + ".py")).read_text())
        fn.update((n.name, n) for n in tree.body if isinstance(n, ast.FunctionDef))
    assert sorted(fn) == ["compute", "run"]
    calls = {n.func.id for n in ast.walk(fn["compute"]) if isinstance(n, ast.Call)}
    assert calls <= {"int"}, calls
    calls = [n.func.id for n in ast.walk(fn["run"]) if isinstance(n, ast.Call)]
    assert set(calls) <= {"int", "ptr32", "adc_read", "pwm_set", "pwm_off",
                          "hal_ticks_us"}, calls
    assert not [n for n in ast.walk(fn["run"]) if isinstance(n, ast.Try)]


def test_block_parts_are_indexed_at_their_offsets(tmp_path):
    """With a block, each array parameter becomes an offset into the one block, aliases
    (``x = ptr32(part)``) included, and the layout is written beside the function."""
    step = ('import micropython\n\n\n@micropython.viper\n'
            'def run(st: ptr32, v: int) -> int:\n    p = ptr32(st)\n    p[1] = v\n'
            '    return st[0]\n')
    tick_src = _TICK.replace("_K = const(3)", "_K = const(3)\nN = const(2)")
    src = "\n".join(gen_tick.render(_write(tmp_path, tick=tick_src, step=step),
                                   block=(("a", "tick", "N", 2),), isr=False).values())
    assert "LAYOUT = (('a', 0, 4),)" in src and "BLOCK_WORDS = 4" in src
    assert "def compute(m: ptr32, x: int) -> int:" in src and "m[1] = y" in src
    with pytest.raises(gen_tick.GenError, match="block holds"):
        gen_tick.render(tmp_path, block=(("b", "tick", "N", 1),), isr=False)


def _write(tmp_path, **modules):
    for name, src in modules.items():
        (tmp_path / (name + ".py")).write_text(src)
    return tmp_path


_TICK = '''import micropython
from micropython import const
from step import run as _run
_K = const(3)


@micropython.viper
def compute(a: ptr32, x: int) -> int:
    """doc"""
    y = x + _K
    code = int(_run(a, y))
    return code + 1
'''


def test_inlines_early_return_as_else_branch(tmp_path):
    step = '''import micropython
from micropython import const
_LIM = const(10)


@micropython.viper
def run(st: ptr32, v: int) -> int:
    if v > _LIM:
        v = _LIM
    if st[0] != 0:
        return st[0]
    st[1] = v
    return 0
'''
    src = gen_tick.render(_write(tmp_path, tick=_TICK, step=step), block=None,
                          isr=False)["tick_fused_compute"]
    ns = {}
    exec(src.replace("@micropython.viper", ""), {"micropython": None, "ptr32": list,
                                                  "ptr16": list, "int": int}, ns)
    a = [0, 0]
    assert ns["compute"](a, 20) == 1 and a == [0, 10]  # clamped copy, caller's x untouched
    a = [7, 0]
    assert ns["compute"](a, 1) == 8 and a == [7, 0]  # early return taken
    assert "step_v = y" in src and "if step_v > 10" in src


@pytest.mark.parametrize("body,message", [
    ("    i = 0\n    while i < 3:\n        if st[i]:\n            return i\n        i += 1\n"
     "    return 0\n", "return inside a loop"),
    ("    return helper(v) + 1\n", "inside an expression"),
    ("    return TABLE[v]\n", "neither a const nor an import"),
])
def test_refuses_what_it_cannot_inline(tmp_path, body, message):
    step = ('import micropython\nTABLE = [1, 2]\n\n\n@micropython.viper\n'
            'def helper(v: int) -> int:\n    return v\n\n\n@micropython.viper\n'
            'def run(st: ptr32, v: int) -> int:\n' + body)
    with pytest.raises(gen_tick.GenError, match=message):
        gen_tick.render(_write(tmp_path, tick=_TICK, step=step), block=None, isr=False)


def test_thumb_variant_calls_only_the_kernels():
    """The Thumb variant is the fused code with THUMB_KERNELS' stretches replaced: it calls
    the kernels of tick_thumb (and the HAL in run) and nothing else, and everything outside
    the stretches is the viper body's text."""
    kernels = {"gm_channels", "pll_window_cordic"}
    for name, hal in (("tick_fused_thumb_compute", set()),
                      ("tick_fused_thumb", {"hal_ticks_us", "adc_read", "pwm_set",
                                            "pwm_off"})):
        tree = ast.parse((paths.FIRMWARE_DIR / (name + ".py")).read_text())
        calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Name)}
        assert calls <= {"int", "ptr32"} | kernels | hal, (name, calls)
        assert kernels <= calls
    viper = (paths.FIRMWARE_DIR / "tick_fused_compute.py").read_text().splitlines()
    thumb = (paths.FIRMWARE_DIR / "tick_fused_thumb_compute.py").read_text().splitlines()
    start = viper.index("def compute(m: ptr32) -> int:")
    assert [ln for ln in viper[start + 3:] if ln not in thumb] != []  # the stretches
    first = [k[0] for k in gen_tick.THUMB_KERNELS]
    assert all(("    " + f) in viper and ("    " + f) not in thumb for f in first)


def test_thumb_stretch_that_changed_stops_the_generator(monkeypatch):
    kernels = list(gen_tick.THUMB_KERNELS)
    kernels[0] = ("pll_fr = 0",) + kernels[0][1:]
    monkeypatch.setattr(gen_tick, "THUMB_KERNELS", tuple(kernels))
    with pytest.raises(gen_tick.GenError, match="not in the fused code once"):
        gen_tick.render()
