"""``python -m v2g.targets.measure [--board B ...]``: per board, the tick's cost and the heap,
on the board's own instruction set (MicroPython's qemu port, the shipped ``.mpy``).

Prints one JSON object, ``boards``: one entry per board with an emulated core
(``v2g.targets.BOARDS``, derived from each ``board.json``: ``mpy_arch`` armv7emsp -> the
Cortex-M4F image (rp2, whose Pico 2 runs armv7emsp code on a Cortex-M33), armv7emdp ->
the Cortex-M7 image (stm32), and the ISA reference ``rp2040``: armv6m on the Cortex-M0
image), each run with the board's ``heap_bytes`` as the GC heap; boards without one
(esp32: Xtensa) get ``{"skipped": reason}``.

Tick (``TICK_SCRIPT``; counts exact, SysTick stopped):
- the Control is built as boot builds it: ``app.build_control(board, params.defaults())``
  (the board's ADC offsets and gains, PWM period, D_MIN, tick rate), enabled and
  exporting 0.7 pu; its input is a grid at 1.0 pu with 0.7 pu currents, 2.46 pu DC link,
  scaled with the board's own ADC calibration (``tick_harness.make_samples``);
- ``instr_compute_tick``: the interrupt handler ``tick.make_tick(hal, ctl)`` (the fused
  tick) per call with the bench's viper ADC/PWM drivers (``tick_harness.BenchHal``),
  ``(count(N2 ticks) - count(N1 ticks)) / (N2 - N1)``, so set-up cancels;
- ``instr_hal_bench`` / ``instr_hal_board``: per tick, ``adc_read`` + ``pwm_set`` of the
  bench's drivers and of the board's real HAL code (``boards/<b>/hal.py``, the AD7606
  driver on rp2), whose port objects are replaced by C-level callables of the same
  shape: each pin call (``Pin.on``/``off``/``value``) by the bound C method
  ``[].clear`` (returns None: BUSY reads low at once), ``SPI.readinto(buf)`` by
  ``[].count(buf)`` (the call; the bus time is added below), ``ADC.read_u16`` by
  ``time.ticks_ms`` (a C function returning an int), ``mem32`` stores by real ``mem32``
  stores to a RAM scratch word; the register windows of the viper tick closures (rp2:
  PWM, SIO and the PIO block whose RX FIFO the AD7606 reader pops) are RAM pages
  (``fake_hw``), so every load and store is counted as on the board;
- ``instr_per_tick`` = instr_compute_tick - instr_hal_bench + instr_hal_board: the
  handler as the board runs it (its Python call from the timer's dispatch included);
- ``instr_per_compute``: ``tick_fused_compute.compute`` alone, or
  ``tick_fused_thumb_compute.compute`` where the asm_thumb kernels load (``thumb_kernels``:
  true on every Thumb core; the ARM boards freeze firmware/thumb/);
  ``instr_per_compute_call``: the same Python loop calling an empty viper function of the
  same signature (the harness: loop and call into viper, about 450 instructions);
  ``instr_per_compute_net`` = compute - call, the figure comparable with C's compute
  (whose own loop and call, a few instructions, stay in ``instr_per_compute_c``);
  ``ratio_compute_vs_c`` (raw) and ``ratio_compute_net_vs_c``;
- ``instr_per_tick_c`` / ``instr_per_compute_c``: the C reference (arm-none-eabi-gcc -O2,
  bare metal) on the same core; ``ratio_tick_vs_c``.

Not counted by emulation, added with their source (``NOT_COUNTED``):
- interrupt entry/exit: the core's exception entry and return (12 + 10 cycles, ARM TRMs)
  and MicroPython's hard-IRQ dispatch in C around the Python call (estimated: about 250
  instructions: the port's ISR, ``mp_sched_lock``, ``gc_lock``, ``nlr_push``,
  ``mp_call_function_1``, unlocks; ports/stm32/timer.c; on rp2 the PIO's IRQ,
  ports/rp2/rp2_pio.c ``pio_irq0`` then shared/runtime/mpirq.c ``mp_irq_dispatch``, a
  shorter path than the alarm pool behind its ``machine.Timer``);
- waits: an AD7606 read by the CPU (``ext_adc.read`` "cpu") the conversion (t_CONV
  4.15 us max, AD7606 datasheet Rev. D table 3; the BUSY poll spins through it) and 16
  bytes on SPI at ``ext_adc.baud`` (128 bits / 12.5 MHz = 10.24 us; ``SPI.readinto``
  blocks); none where the PIO reads it (rp2: ``ext_adc.read`` "pio": the conversion and
  the 128 bits pass before the PIO's interrupt starts the tick, whose reader only pops
  the PIO's FIFO, counted in emulation like any register read); stm32 seven ``read_u16``
  conversions (8.5 + 8.5 ADC clocks at HCLK/4 = 50 MHz = 0.34 us each plus the C path of
  channel set-up, start and EOC poll: about 1 us each, ports/stm32/machine_adc.c);
- the C code inside the stand-ins' real counterparts (a GPIO write, the SPI driver's
  set-up) beyond what the stand-in's own call costs.
``pct_of_period`` = (instr_per_tick * CPI + irq cycles + wait_us * cpu_hz / 1e6) /
(cpu_hz / tick_hz) * 100, CPI from ``v2g.targets.CPI`` for the board's ``cpu``.

Heap (``HEAP_SCRIPT``): ``v2g/mp/heap_probe.py`` on the core with the board's heap: the
board's tree as ``.mpy`` for its arch (what ``v2g flash`` sends), its real ``hal.py`` on
the ``fake_hw`` stand-ins, no config.json (defaults), boot as ``main.py`` does, ticks and
supervisor run, then 300 events (the journal full and wrapping; the event log writes to
a sink file system mounted at /flash: on a board the log lives in flash, not the heap).
``boot_free`` / ``full_free``: ``heap_bytes - (free at start - free then)``, bytes;
``heap_free_pct``: the smaller one in % of heap_bytes; ``full_largest``: largest block.
Native code sits in the GC heap here, as on the boards (modules loaded from files).

Context: host only; needs ``make targets`` (qemu runs take tens of seconds each).
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

from v2g.board import flash
from v2g.common import paths
from v2g.common.errors import ToolError
from v2g.targets import (BOARDS, CORES, CPI, NO_TARGET, STOP_SYSTICK, available, board_json,
                         compile_modules, firmware_modules, run_cref, run_script)

N1, N2 = 500, 2500
# the asm_thumb kernels (firmware/thumb/): every emulated core is Thumb, and the ARM boards
# freeze them (boards/<board>/manifest.py), so the tick figures are those of the kernel body
THUMB_FILES = sorted((paths.FIRMWARE_DIR / "thumb").glob("*.py"))
LOCK_TICKS = 1000
EVENTS = 300  # heap probe: events added (journal capacity 256: full and wrapping)

# Not counted by emulation (see the module docstring): per-tick additions
IRQ_ENTRY_EXIT_CYCLES = 22  # exception entry 12 + return 10 (ARMv7-M/ARMv8-M, no FPU
#                             context: the viper tick does no float work)
IRQ_DISPATCH_INSTR = 250  # MicroPython's hard-IRQ C path around the Python call (estimate)
AD7606_TCONV_US = 4.15  # AD7606 datasheet: conversion time, no oversampling, max
STM32_ADC_US = 1.0  # per machine.ADC.read_u16 on the H743 (estimate, see docstring)

# On target. %(n1)d %(n2)d %(lock)d. The board data is /blob/board.json.
TICK_SCRIPT = STOP_SYSTICK + """\
import gc, time, micropython, uctypes
import machine as real_machine
import app, params, current, tick
board = app.load_board("/blob/board.json")
held = params.defaults()
def control():
    c = app.build_control(board, held)
    current.set_enable(c.cc, 1)
    current.set_power(c.cc, -2867, 0)  # tick_harness.P_CMD_Q12: export 0.7 pu
    return c
def first():
    global ctl
    ctl = control()
gc.collect()
first()  # the large arrays first, as boot allocates them (fragmentation)
import tick_harness as h
gains = app.adc_gains(board, held)
offs = [c["offset"] for c in board["adc"]]
h.TICK_HZ = board["tick_hz"]
h.F_GRID_HZ = held["f_nom_hz"]
h.CYCLES = 1
h.ADC_OFFSET = offs[0]
h.V_AMP_COUNTS = (4096 << 14) // gains[0]  # 1.0 pu in counts at this calibration
h.I_AMP_COUNTS = (7 * (4096 << 14) // gains[3]) // 10  # 0.7 pu
smp = h.make_samples()
vdc = offs[6] + (10076 << 14) // gains[6]  # 2.46 pu
for i in range(6, len(smp), 7):
    smp[i] = vdc
hal = h.BenchHal(smp)
del smp
m = time.ticks_cpu
def loop(f, n):
    for _ in range(n):
        f(None)
def loop2(r, p, raw, pw, n):
    for _ in range(n):
        r(raw)
        p(pw)
def loopc(f, mem, n):
    for _ in range(n):
        f(mem)
isr = None
def fresh():
    global ctl, isr
    ctl = isr = None
    gc.collect()
    hal.buf[0] = hal._SRC
    for i in range(8):
        hal.rec[i] = 0
    return control()
for n in (%(n1)d, %(n2)d):
    ctl = fresh()
    isr = tick.make_tick(hal, ctl)
    gc.collect()
    m(); loop(isr, n); m()
print("tick", h.checksum(h.state_arrays(ctl)), hal.rec[0], hal.rec[1], ctl.stats[0])
ctl = fresh()
raw = ctl.raw
pw = ctl.pw
for n in (%(n1)d, %(n2)d):
    gc.collect()
    m(); loop2(hal.adc_read, hal.pwm_set, raw, pw, n); m()
# the board's own HAL code; port objects -> C-level callables (see measure.py)
import fake_hw
fake_hw.install(board)
import hal as board_hal
real_machine.mem32[0xE000E010] = 7  # SysTick on: the HAL's set-up sleeps (sleep_us)
hb = board_hal.build(board)
scratch = bytearray(64)
reg = uctypes.addressof(scratch)
if "ext_adc" in board and not hasattr(hb, "adc_timeouts"):
    import ad7606
    drv = ad7606.AD7606(fake_hw.machine, board["ext_adc"], board["adc"])
    drv._cv_on = drv._cv_off = drv._cs_on = drv._cs_off = drv._busy = [].clear
    drv._readinto = [].count
    adc_read = drv.adc_read
else:  # the HAL's own tick reader (rp2: the PIO's FIFO and IRQ registers in scratch RAM)
    for k in range(7):
        setattr(hb, "_r%%d" %% k, time.ticks_ms)
    if hasattr(hb, "_rd"):  # stm32: the list of read_u16 methods the reader calls
        for k in range(7):
            hb._rd[k] = time.ticks_ms
    adc_read = hb.adc_read
real_machine.mem32[0xE000E010] = 0  # SysTick off again: exact counts
hb._m = real_machine.mem32
for k, name in enumerate(("_cc_a", "_cc_b", "_cc_c", "_ccr1", "_ccr2", "_ccr3", "_bdtr")):
    if hasattr(hb, name):
        setattr(hb, name, reg + 4 * k)
hb._en_on = hb._en_off = [].clear
for n in (%(n1)d, %(n2)d):
    gc.collect()
    m(); loop2(adc_read, hb.pwm_set, raw, pw, n); m()
if tick.THUMB:  # the board runs the body with the asm_thumb kernels: measure that compute
    import tick_fused_thumb_compute as tick_fused_compute
else:
    import tick_fused_compute
print("thumb", int(tick.THUMB))
@micropython.viper
def empty(m: ptr32) -> int:
    return 0
for n in (%(n1)d, %(n2)d):
    c2 = fresh()
    for i in range(7):
        c2.raw[i] = hal.src[i]
    gc.collect()
    m(); loopc(tick_fused_compute.compute, c2.mem, n); m()
for n in (%(n1)d, %(n2)d):
    m(); loopc(empty, c2.mem, n); m()
c2 = None
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

# The ISA reference (rp2040) on the M0: its image's largest heap does not hold the app,
# the harness and the board's HAL at once, so its tick runs the bench harness's Control
# (tick_harness.make_control: the configuration the C reference runs) with the bench's
# drivers; the loops are TICK_SCRIPT's first two and its compute loop.
REF_TICK_SCRIPT = STOP_SYSTICK + """\
import gc, time, micropython
import tick_harness as h
h.CYCLES = 1
hal = h.BenchHal(h.make_samples())
gc.collect()
import tick
if tick.THUMB:  # the asm_thumb kernels load on every Thumb core: measure that compute
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
def loop2(r, p, raw, pw, n):
    for _ in range(n):
        r(raw)
        p(pw)
def loopc(f, mem, n):
    for _ in range(n):
        f(mem)
ctl = isr = c2 = None
def fresh():
    global ctl, isr, c2
    ctl = isr = c2 = None
    gc.collect()
    hal.buf[0] = hal._SRC
    for i in range(8):
        hal.rec[i] = 0
    return h.make_control()
for n in (%(n1)d, %(n2)d):
    ctl = fresh()
    isr = tick.make_tick(hal, ctl)
    gc.collect()
    m(); loop(isr, n); m()
print("tick", h.checksum(h.state_arrays(ctl)), hal.rec[0], hal.rec[1], ctl.stats[0])
for n in (%(n1)d, %(n2)d):
    gc.collect()
    m(); loop2(hal.adc_read, hal.pwm_set, ctl.raw, ctl.pw, n); m()
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

# A file system that takes writes and keeps only sizes (the event log's segments): on a
# board they go to flash, not to the heap. Reads of written files give nothing back.
SINK_VFS = """\
import os, io
class _SF(io.IOBase):
    def __init__(s, fs, p):
        s.fs, s.p = fs, p
    def write(s, b):
        s.fs.f[s.p] += len(b)
        return len(b)
    def readinto(s, b):
        return 0
    def read(s, n=-1):
        return b""
    def readline(s):
        return b""
    def flush(s):
        pass
    def seek(s, o, w=0):
        return 0
    def ioctl(s, r, a):
        return 0
    def close(s):
        pass
    def __enter__(s):
        return s
    def __exit__(s, *a):
        pass
class _SinkFS:
    def __init__(s):
        s.f = {}
        s.d = {"": 1}
    def mount(s, r, m):
        pass
    def umount(s):
        pass
    def chdir(s, p):
        pass
    def _k(s, p):
        return p.strip("/")
    def stat(s, p):
        k = s._k(p)
        if k in s.f:
            return (0x8000, 0, 0, 0, 0, 0, s.f[k], 0, 0, 0)
        if k in s.d:
            return (0x4000, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        raise OSError(2)
    def statvfs(s, p):
        return (4096, 4096, 256, 200, 200, 0, 0, 0, 0, 255)
    def mkdir(s, p):
        s.d[s._k(p)] = 1
    def remove(s, p):
        if s._k(p) not in s.f:
            raise OSError(2)
        s.f.pop(s._k(p))
    def rename(s, a, b):
        if s._k(a) not in s.f:
            raise OSError(2)
        s.f[s._k(b)] = s.f.pop(s._k(a))
    def ilistdir(s, p):
        k = s._k(p)
        pre = k + "/" if k else ""
        for n in list(s.f) + list(s.d):
            if n and n.startswith(pre) and "/" not in n[len(pre):]:
                yield (n[len(pre):], 0x8000 if n in s.f else 0x4000, 0)
    def open(s, p, m):
        k = s._k(p)
        if "w" in m or k not in s.f and "a" in m:
            s.f[k] = 0
        elif k not in s.f:
            raise OSError(2)
        return _SF(s, k)
os.mount(_SinkFS(), "/flash")
"""

HEAP_SCRIPT = SINK_VFS + """\
import sys, time as _t
if not hasattr(_t, "time"):  # the qemu port has no RTC: read as unset, as a new board's
    class _Time:
        def __getattr__(s, n):
            return getattr(_t, n)
        def time(s):
            return 0
        def gmtime(s, t=0):
            return (2000, 1, 1, 0, 0, 0, 5, 1)
    sys.modules["time"] = _Time()
sys.argv[:] = ["heap_probe", "/blob", "/flash", "%(events)d"]
import heap_probe
"""


def _board_modules(name, core, board):
    """The board's tree as ``v2g flash`` sends it (main.py/boot.py left out; packages such
    as ``services/`` in their folders), compiled for the core, plus its board.json;
    {file name: bytes}."""
    files = {dest: src for dest, src in sorted(flash.source_files(BOARDS[name]["board_data"])
                                               .items())
             if dest.endswith(".py") and dest not in ("main.py", "boot.py")}
    mods = compile_modules(core, files)
    mods["board.json"] = json.dumps(board).encode()
    return mods


def measure_tick(name):
    b = BOARDS[name]
    core = b["core"]
    reference = b["reference"]
    if reference:  # REF_TICK_SCRIPT: the harness's Control, the bench's drivers
        heap = b["tick_heap"]
        mods = firmware_modules(core)
        mods.update(compile_modules(core, [paths.MP_DIR / "tick_harness.py"] + THUMB_FILES))
        text = REF_TICK_SCRIPT
    else:
        heap = b["heap"]
        mods = _board_modules(name, core, board_json(name))
        mods.update(compile_modules(core, [paths.MP_DIR / "tick_harness.py",
                                           paths.MP_DIR / "fake_hw.py"] + THUMB_FILES))
        text = TICK_SCRIPT
    # the script as a module of the blob (.mpy): compiled on the host, so the target's
    # heap holds no parse tree, only what the board's would
    with tempfile.TemporaryDirectory(prefix="v2g-tick-") as tmp:
        src = Path(tmp) / "target_tick.py"
        src.write_text(text % {"n1": N1, "n2": N2, "lock": LOCK_TICKS})
        mods.update(compile_modules(core, [src]))
    r = run_script(core, "import target_tick\n", heap=heap, modules=mods)
    out = {"core": core, "heap": heap}
    if r.error:
        out["error"] = r.error.strip().splitlines()[-1]
        out["traceback"] = r.error
        return out, r
    want = 8 if reference else 10
    loops = r.segments()[0::2]  # m(); loop; m() pairs: every other segment is a loop
    if len(loops) != want:
        out["error"] = "expected %d measured loops, got %d marks" % (want, len(r.marks))
        return out, r

    def per(i):
        return (loops[i + 1] - loops[i]) / (N2 - N1)

    out["instr_compute_tick"] = per(0)
    out["instr_hal_bench"] = per(2)
    if reference:  # the bench's drivers stand in for the HAL (not counted)
        out["instr_hal_board"] = None
        out["instr_per_tick"] = per(0)
        out["instr_per_compute"] = per(4)
        out["instr_per_compute_call"] = per(6)
    else:
        out["instr_hal_board"] = per(4)
        out["instr_per_tick"] = per(0) - per(2) + per(4)
        out["instr_per_compute"] = per(6)
        out["instr_per_compute_call"] = per(8)
    # the same loop calling an empty viper function of the same signature: the Python
    # loop and the call into viper, which the C figure (a C loop calling compute) lacks
    out["instr_per_compute_net"] = out["instr_per_compute"] - out["instr_per_compute_call"]
    out["marks"] = r.marks
    for line in r.output.splitlines():
        p = line.split()
        if p and p[0] == "tick":
            out["checksum"], out["n_set"], out["n_off"], out["ticks"] = map(int, p[1:5])
        elif p and p[0] == "lock":
            out["heap_lock"] = p[1]
        elif p and p[0] == "thumb":
            out["thumb_kernels"] = bool(int(p[1]))
    out["heap_lock_ticks"] = LOCK_TICKS
    return out, r


def measure_heap(name, events=EVENTS):
    """Heap after boot and with the journal full, on the board's core with its heap."""
    b = BOARDS[name]
    core = b["core"]
    board = board_json(name)
    mods = _board_modules(name, core, board)
    mods.update(compile_modules(core, [paths.MP_DIR / "fake_hw.py",
                                       paths.MP_DIR / "heap_probe.py"]))
    r = run_script(core, HEAP_SCRIPT % {"events": events}, heap=b["heap"], modules=mods,
                   count=False)
    fig = {}
    for line in r.output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            fig[parts[0]] = int(parts[1])
    if r.error or fig.get("ok") != 1:
        lines = (r.error or r.output).strip().splitlines()
        return {"heap_bytes": b["heap"], "error": lines[-1] if lines else "no output",
                "output": r.output + r.error}
    heap = b["heap"]
    out = {"heap_bytes": heap, "start_free": fig["start_free"],
           "journal_len": fig["journal_len"], "full_largest": fig["full_largest"]}
    for tag in ("boot", "full"):
        out[tag + "_free"] = heap - (fig["start_free"] - fig[tag + "_free"])
    out["heap_free_pct"] = round(100.0 * min(out["boot_free"], out["full_free"]) / heap, 1)
    return out


def waits_us(board):
    """Per-tick time the handler waits on hardware emulation cannot count, and why."""
    ext = board.get("ext_adc")
    if ext and ext.get("read") == "pio":
        return (0.0, "none: the PIO converts and reads the AD7606 (t_CONV %.2f us + 128 bits "
                     "at %.1f MHz %.2f us) before the tick's interrupt"
                % (AD7606_TCONV_US, ext["baud"] / 1e6, 128 * 1e6 / ext["baud"]))
    if ext:
        spi_us = 128 * 1e6 / ext["baud"]
        return (AD7606_TCONV_US + spi_us,
                "AD7606 conversion %.2f us (datasheet t_CONV max) + 16 bytes on SPI at "
                "%.1f MHz %.2f us" % (AD7606_TCONV_US, ext["baud"] / 1e6, spi_us))
    if board["port"] == "stm32":
        return (7 * STM32_ADC_US, "7 on-chip ADC conversions x %.1f us (read_u16, estimate)"
                % STM32_ADC_US)
    return 0.0, ""


def period_figures(name, instr_per_tick, instr_per_tick_c):
    """pct_of_period and its parts for a board (see the module docstring)."""
    b = BOARDS[name]
    board = board_json(name)
    cpi = CPI[b["cpu"]]
    cycles_period = b["cpu_hz"] / b["tick_hz"]
    wait, wait_why = waits_us(board)
    irq = IRQ_ENTRY_EXIT_CYCLES + IRQ_DISPATCH_INSTR * cpi
    cycles = instr_per_tick * cpi + irq + wait * b["cpu_hz"] / 1e6
    return {"cpu": b["cpu"], "cpu_hz": b["cpu_hz"], "tick_hz": b["tick_hz"], "cpi": cpi,
            "cycles_per_period": cycles_period, "irq_cycles": irq, "wait_us": round(wait, 2),
            "wait": wait_why, "cycles_per_tick": round(cycles),
            "pct_of_period": round(100.0 * cycles / cycles_period, 1),
            "pct_of_period_compute_only": round(100.0 * instr_per_tick * cpi / cycles_period,
                                                1),
            "pct_of_period_c": round(100.0 * instr_per_tick_c * cpi / cycles_period, 1)}


def measure(boards=None):
    av = available()
    cores = sorted({BOARDS[n]["core"] for n in (boards or BOARDS)})
    missing = [k for k in ["qemu", "plugin", "arm-gcc", "mpy-cross"] + ["qemu-" + c
                                                                         for c in cores]
               if not av[k]["ok"]]
    if missing:
        return {"error": "; ".join(av[k]["reason"] for k in missing)}
    res = {"n_ticks": [N1, N2], "boards": {}}
    cref = {}
    for name in boards or sorted(BOARDS):
        b = BOARDS[name]
        fig, _ = measure_tick(name)
        fig.pop("marks", None)
        fig["isa"] = b["mpy_arch"]
        fig["core_emulated"] = CORES[b["core"]]["cpu"]
        if b["reference"]:
            fig["reference"] = b["why"]
        if b["core"] not in cref:
            cref[b["core"]] = run_cref(b["core"], N1, N2)
        c = cref[b["core"]]
        fig["instr_per_tick_c"] = c["instr_per_tick"]
        fig["instr_per_compute_c"] = c["instr_per_compute"]
        if "instr_per_tick" in fig:
            fig["ratio_tick_vs_c"] = round(fig["instr_compute_tick"] / c["instr_per_tick"], 2)
            fig["ratio_compute_vs_c"] = round(fig["instr_per_compute"]
                                              / c["instr_per_compute"], 2)
            fig["ratio_compute_net_vs_c"] = round(fig["instr_per_compute_net"]
                                                  / c["instr_per_compute"], 2)
            fig.update(period_figures(name, fig["instr_per_tick"], c["instr_per_tick"]))
        fig["heap"] = measure_heap(name)
        res["boards"][name] = fig
    for name, why in NO_TARGET.items():
        if boards is None or name in boards:
            res["boards"][name] = {"skipped": why}
    return res


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m v2g.targets.measure",
                                description=__doc__.split("\n")[0])
    p.add_argument("--board", action="append", choices=sorted(BOARDS),
                   help="only this board (repeatable; default: all with a target)")
    args = p.parse_args(argv)
    try:
        res = measure(args.board)
    except ToolError as e:
        res = {"error": str(e)}
    print(json.dumps(res, indent=2))
    return 1 if "error" in res else 0


if __name__ == "__main__":
    sys.exit(main())
