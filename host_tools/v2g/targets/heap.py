"""Heap left by a booted board tree, measured on a MicroPython unix runtime with a fixed heap.

    from v2g.targets import heap
    fig = heap.probe("rp2")                 # heapsize = the board's heap_bytes
    fig["boot_free"], fig["full_free"], fig["full_largest"]   # bytes
    heap.free_fraction(fig, "full")         # of heap_bytes, 0..1

Runs ``v2g/mp/heap_probe.py`` (see its docstring for what is booted and measured) as
``micropython -X heapsize=N``. On the 64-bit unix runtime objects are larger than on a
32-bit board, so the free figures are pessimistic for the boards; a 32-bit unix build
(``exe=...``) gives nearly exact ones. Module bytecode sits in RAM here; frozen modules
(``boards/<name>/manifest.py``) would leave it in flash. Context: host only.
"""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from v2g.board import flash
from v2g.build import mpysize
from v2g.common import paths
from v2g.common.errors import ToolError, UsageError


def board_data(name):
    return json.loads((paths.BOARDS_DIR / name / "board.json").read_text())


def probe(name, heapsize=None, exe=None, events=300, timeout=120):
    """Boot board ``name`` on the unix runtime with ``heapsize`` (default: the board's
    ``heap_bytes``); returns ``{key: int}`` from the probe's output (``ok`` is 1 when it
    ran to the end). Raises ToolError with the runtime's output when it fails (a
    MemoryError while booting is such a failure)."""
    board = board_data(name)
    heapsize = heapsize or board["heap_bytes"]
    board_dir = paths.BOARDS_DIR / name
    exe = exe or paths.micropython_exe()
    with tempfile.TemporaryDirectory(prefix="v2g-heap-") as root:
        # the board tree as .mpy for the runtime's own arch, as a board loads it (source
        # would be compiled in the heap and leave it fragmented)
        lib = Path(root) / "lib"
        lib.mkdir()
        arch = runtime_arch(exe)
        for dest, src in sorted(flash.source_files(name).items()):  # what v2g flash sends
            if dest in ("main.py", "boot.py") or not dest.endswith(".py"):
                continue
            (lib / dest).parent.mkdir(parents=True, exist_ok=True)
            if arch is None:
                shutil.copy(src, lib / dest)
            else:  # compile_mpy names a package's file services%x.mpy: write it in place
                (lib / dest).with_suffix(".mpy").write_bytes(
                    flash.compile_mpy(src, dest, arch, root))
        shutil.copy(board_dir / "board.json", lib / "board.json")
        env = dict(os.environ, MICROPYPATH="%s:%s" % (lib, paths.MP_DIR))
        cmd = [exe, "-X", "heapsize=%d" % heapsize, str(paths.MP_DIR / "heap_probe.py"),
               str(lib), str(Path(root) / "flash"), str(events)]
        os.mkdir(Path(root) / "flash")
        r = subprocess.run(cmd, capture_output=True, env=env, timeout=timeout)
    out = r.stdout.decode(errors="replace")
    fig = {}
    modules = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            fig[parts[0]] = int(parts[1])
        elif len(parts) == 2 and parts[0] == "modules":
            modules = parts[1].split(",")
    if r.returncode != 0 or fig.get("ok") != 1:
        raise ToolError("heap probe of board '%s' at heapsize %d failed:\n%s%s"
                        % (name, heapsize, out, r.stderr.decode(errors="replace")))
    fig["heap_bytes"] = heapsize
    code = code_bytes(board, modules) if board["port"] != "unix" else (0, 0)
    fig["bytecode_bytes"], fig["native_bytes"] = code
    # heap_bytes is what the board has free at main.py: the runtime's own start-up
    # allocation (start_free < heapsize) is not the firmware's
    for tag in ("boot", "full"):
        fig[tag + "_free_board"] = (heapsize - (fig["start_free"] - fig[tag + "_free"])
                                    - fig["native_bytes"])
        # estimate for frozen modules (manifest.py): bytecode and machine code stay in
        # flash; to be confirmed by the target instruments
        fig[tag + "_free_frozen"] = fig[tag + "_free_board"] + sum(code)
    return fig


def code_bytes(board, modules):
    """``(bytecode, machine code)`` bytes of ``modules`` (module names of the board tree
    ``v2g flash`` sends) compiled for the board's arch. Machine code sits in the board's GC heap (on
    the unix runtime outside it); both stay in flash when the modules are frozen."""
    arch = board["mpy_arch"]
    total = [0, 0]
    files = flash.source_files(board["name"])
    with tempfile.TemporaryDirectory(prefix="v2g-mpy-") as out:
        for name in modules:
            src = files.get(name.replace(".", "/") + ".py")
            if src is not None:
                sizes = mpysize.code_sizes(flash.compile_mpy(src, src.name, arch, out))
                total[0] += sizes[0]
                total[1] += sizes[1]
    return tuple(total)


def runtime_arch(exe):
    """mpy-cross -march of the runtime's native code (from ``sys.implementation._mpy``),
    or None when it has none or mpy-cross does not match its .mpy version."""
    r = subprocess.run([exe, "-c", "import sys; print(sys.implementation._mpy)"],
                       capture_output=True, text=True, timeout=30)
    try:
        word = int(r.stdout.strip())
        version = flash.mpy_cross_version()
    except (ValueError, OSError, ToolError, UsageError):
        return None
    if (word & 0xFF, (word >> 8) & 3) != version:
        return None
    return flash.NATIVE_ARCHES.get(word >> 10)


def free_fraction(fig, tag="full"):
    """Free share of the heap after boot (``tag`` "boot") or with the journal full, with
    the board's machine code counted in (``<tag>_free_board``)."""
    return fig[tag + "_free_board"] / fig["heap_bytes"]
