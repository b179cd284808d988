"""``v2g bench`` and its parts: the bytecode twin, the tick harness, the C reference.

- the viper firmware, its bytecode twin, CPython and the C reference end in the same
  state (checksum) after the same ticks;
- >= 100 000 ticks on the unix runtime under ``micropython.heap_lock()`` allocate nothing
  (an acceptance requirement: the tick runs in a hard interrupt);
- ``v2g bench --json`` prints one JSON object with the contract keys.
No timing assertions: figures vary with the machine; only their presence is checked.
"""

import io
import json
import shutil
import subprocess
import tokenize

import pytest

from v2g import cli
from v2g.bench import tick as bench
from v2g.build import bytecode_twin, c_reference
from v2g.common.errors import ToolError

N_AGREE = 3000  # past the 0.7 pu power ramp (~350 ticks) and the PLL lock (2 cycles)
N_HEAP_LOCK = 100000

CONTRACT_KEYS = ("tick_ns_viper", "tick_ns_bytecode", "allocs_per_tick",
                 "instr_per_tick_viper", "instr_per_tick_c", "runtime")


@pytest.fixture(scope="module")
def twin_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("twin")
    bytecode_twin.build(d)
    return d


@pytest.fixture(scope="module")
def c_exe(tmp_path_factory):
    if not (shutil.which("gcc") or shutil.which("cc")):
        pytest.skip("no C compiler (gcc): the C reference cannot be built")
    return c_reference.build_c_reference(tmp_path_factory.mktemp("cref"))


def harness(exe, n, **kw):
    res, _ = bench.run_harness(exe, n, **kw)
    return res


# ----------------------------------------------------------------------- the twin
def test_twin_strips_viper_and_casts_only():
    src = ('import micropython\n'
           '\n'
           '@micropython.viper\n'
           'def f(st: ptr32, n: int) -> int:\n'
           '    """a ptr32(x) cast in a docstring stays"""\n'
           '    tab = ptr16(TAB)  # ptr8(comment) stays\n'
           '    return st[0] + tab[n] + int(n)\n')
    text, n_dec, n_cast = bytecode_twin.transform(src)
    assert (n_dec, n_cast) == (1, 1)
    lines = text.splitlines()
    assert lines[2] == ""  # decorator blanked: line numbers unchanged
    assert lines[3] == "def f(st: ptr32, n: int) -> int:"  # annotations kept
    assert "a ptr32(x) cast in a docstring stays" in text
    assert "    tab = (TAB)  # ptr8(comment) stays" in lines
    assert bytecode_twin.MARKER + " = True" in text


def test_twin_refuses_what_bytecode_cannot_express():
    with pytest.raises(ToolError, match="uint"):
        bytecode_twin.transform("@micropython.viper\ndef f(x):\n    return uint(x)\n", "m.py")


def test_twin_covers_every_firmware_module(twin_dir, firmware_dir):
    names = sorted(p.name for p in firmware_dir.glob("*.py"))
    assert sorted(p.name for p in twin_dir.glob("*.py")) == names
    for p in twin_dir.glob("*.py"):
        text = p.read_text()
        assert not any(bytecode_twin._DECORATOR.match(ln) for ln in text.splitlines()), p.name
        toks = list(tokenize.generate_tokens(io.StringIO(text).readline))
        for a, b in zip(toks, toks[1:], strict=False):
            assert not (a.string in ("ptr8", "ptr16", "ptr32") and b.string == "("), (
                p.name, a.start)


# ------------------------------------------------------------------ same results
def test_viper_bytecode_cpython_and_c_agree(micropython_exe, twin_dir, c_exe):
    viper = harness(micropython_exe, N_AGREE, compute_ticks=0)
    twin = harness(micropython_exe, N_AGREE, bytecode_dir=twin_dir, compute_ticks=0)
    c_ref, _ = bench.run_c(c_exe, N_AGREE, compute_ticks=0)
    assert viper["impl"] == "viper" and twin["impl"] == "bytecode"
    # the scenario really switches: enabled, no trip, every tick through the modulator
    assert viper["state"] == 1 and viper["n_set"] == N_AGREE and viper["n_off"] == 0
    assert viper["errors"] == 0
    for other in (twin, c_ref):
        for k in ("checksum", "state", "n_set", "n_off"):
            assert other[k] == viper[k], (other["impl"], k, other[k], viper[k])

    h = c_reference.load_harness_cpython()  # CPython through the micropython stand-in
    cpy = h.bench(N_AGREE, compute_ticks=0)
    assert cpy["checksum"] == viper["checksum"]


def test_generated_interrupt_body_matches_the_written_one(micropython_exe):
    """tick_fused.run (compute inlined into tick._run by v2g.build.gen_tick) and tick._run
    calling the fused compute leave the same state and PWM record after the same ticks,
    on both runtimes."""
    r = bench.run_harness(micropython_exe, N_AGREE, compute_ticks=0)[0]
    cmd = bench.harness_command(micropython_exe, N_AGREE, compute_ticks=0) + ["--wired"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=bench.harness_env(),
                         timeout=300)
    assert out.returncode == 0, out.stderr
    wired = bench._last_kv_line(out.stdout, "tick harness")
    for k in ("checksum", "state", "n_set", "n_off", "errors"):
        assert wired[k] == r[k], (k, wired[k], r[k])
    h = c_reference.load_harness_cpython()
    for flag in (False, True):
        assert h.bench(N_AGREE, compute_ticks=0, wired=flag)["checksum"] == r["checksum"]


def test_harness_reports_compute_timing(micropython_exe):
    res = harness(micropython_exe, 200, compute_ticks=200)
    assert res["compute_ticks"] == 200 and res["compute_ns"] > 0
    assert res["runtime"].startswith("micropython ")


# -------------------------------------------------------------------- allocation
def test_heap_locked_100k_ticks_allocate_nothing(micropython_exe):
    res = harness(micropython_exe, N_HEAP_LOCK, heap_lock=True, compute_ticks=0)
    assert res["heap_lock"] == "ok" and res["errors"] == 0, (
        "the tick allocates under micropython.heap_lock(): heap_lock=%s after %s of %d "
        "ticks, %s swallowed errors; %s of %s probe ticks needed the heap"
        % (res["heap_lock"], res.get("locked_ticks"), N_HEAP_LOCK, res["errors"],
           res.get("alloc_ticks"), res.get("probe_ticks")))
    assert res["locked_ticks"] == N_HEAP_LOCK
    assert res["n_set"] == N_HEAP_LOCK  # every tick ran through to the PWM


# ------------------------------------------------------------------------- CLI
def test_bench_json_has_the_contract_keys(micropython_exe, capsys, monkeypatch):
    # --no-instr keeps this fast; test_callgrind_counts covers the instruction counts
    monkeypatch.setenv("V2G_BENCH_REPS", "1")
    rc = cli.main(["bench", "--json", "--ticks", "1000", "--bytecode-ticks", "300",
                   "--heap-lock-ticks", "1000", "--no-instr", "--no-system"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    res = json.loads(out)
    assert res["reps"] == 1
    for k in CONTRACT_KEYS:
        assert k in res, k
    assert isinstance(res["runtime"], str) and res["runtime"]
    for k in ("tick_ns_viper", "tick_ns_bytecode", "compute_ns_viper"):
        assert isinstance(res[k], (int, float)) and res[k] > 0, k
    assert isinstance(res["allocs_per_tick"], (int, float))
    for k in ("instr_per_tick_viper", "instr_per_tick_c"):
        assert res[k] is None and res[k + "_reason"], k  # null only with the reason
    assert "speedup_viper_vs_bytecode" in res and "instr_ratio_viper_vs_c" in res
    assert res["checksums_agree"] is True, res["checksums"]


@pytest.mark.skipif(not shutil.which("valgrind"),
                    reason="valgrind missing (`make tools` installs it)")
def test_callgrind_counts(micropython_exe, c_exe):
    pre = bench.callgrind_prefix(shutil.which("valgrind"))
    per_c, (r1, r2), _ = bench.instr_per_tick(
        lambda m: bench.run_c(c_exe, m, compute_ticks=0, wrapper=pre), 100, 300)
    per_v, (v1, v2), _ = bench.instr_per_tick(
        lambda m: bench.run_harness(micropython_exe, m, compute_ticks=0, wrapper=pre),
        100, 300)
    assert per_c > 0 and per_v > 0
    # under valgrind too, both implementations compute the same thing
    assert (r1["checksum"], r2["checksum"]) == (v1["checksum"], v2["checksum"])


def test_bench_table_prints(micropython_exe, capsys):
    rc = cli.main(["bench", "--reps", "1", "--ticks", "500", "--bytecode-ticks", "100",
                   "--heap-lock-ticks", "500", "--no-instr", "--no-system"])
    out, _ = capsys.readouterr()
    assert rc == 0
    assert "tick, ns" in out and "viper" in out and "bytecode" in out


@pytest.mark.parametrize("argv, needle", [
    (["--reps", "0"], "--reps"),
    (["--ticks", "x"], "--ticks"),
    (["--instr-ticks", "100"], "--instr-ticks"),
    (["--instr-ticks", "300,100"], "N2"),
])
def test_bench_bad_options_exit_2(argv, needle, capsys):
    rc = cli.main(["bench", "--json"] + argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert "error" in err and needle in err


def test_bench_bad_reps_env_exit_2(capsys, monkeypatch):
    monkeypatch.setenv("V2G_BENCH_REPS", "many")
    rc = cli.main(["bench", "--json"])
    err = capsys.readouterr().err
    assert rc == 2 and "V2G_BENCH_REPS" in err
