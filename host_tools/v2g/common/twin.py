"""Viper turned off: the source transform, and the sim plant's twin for 32-bit runtimes.

``transform(source)`` (used by ``v2g.build.bytecode_twin`` for the firmware) returns the
same source with
- each ``@micropython.viper`` / ``@micropython.native`` decorator line blanked (line
  numbers stay, so tracebacks point at the same lines as the original);
- each viper cast ``ptr8(x)`` / ``ptr16(x)`` / ``ptr32(x)`` turned into the plain
  expression ``(x)``: on bytecode, indexing the array itself gives the same words;
- a marker line ``_V2G_BYTECODE_TWIN = True`` appended, so a harness can tell which copy
  it imported.
Annotations such as ``st: ptr32`` and ``-> int`` stay: MicroPython's bytecode compiler
ignores them, and so does CPython at run time.

The plant twin. ``boards/sim/plant.py`` is host-side simulation code whose viper tick
uses constants beyond 31 bits (the 2**30 bias, 40-bit phase accumulators, ~53-bit
products): a runtime whose small ints are 31 bits (a 32-bit unix build) cannot compile it.
There the plant runs as its bytecode twin instead, where Python ints cannot overflow: as
every mask is explicit, no 64-bit intermediate of the viper code wraps and every stored
word is non-negative, the twin gives the same bits as the viper plant on a 64-bit runtime
(``tests_host/sim/test_plant_twin.py`` compares whole scenario traces). ``sim_path`` is
the one hook: every place that puts ``boards/sim`` on a MicroPython path (the MICROPYPATH
of ``v2g.common.runtime``, the scenario runner, the .mpy cache, the sim board's flash
files through ``v2g.board.flash.source_files``) passes through it, and it puts the twin's
folder (``build/plant-twin/<digest>/plant.py``, keyed by the source and this module)
in front of ``boards/sim`` when the runtime needs it (and ``script_args`` starts a script
of ``boards/sim`` as a module then). On a 64-bit runtime nothing changes.

Context: host only.
"""

import hashlib
import io
import os
import re
import subprocess
import tempfile
import tokenize
from pathlib import Path

from v2g.common import paths
from v2g.common.errors import ToolError, UsageError

MARKER = "_V2G_BYTECODE_TWIN"
_DECORATOR = re.compile(r"^\s*@micropython\.(viper|native)\s*(#.*)?$")
_CASTS = ("ptr8", "ptr16", "ptr32")
_UNSUPPORTED = ("uint", "asm_thumb", "asm_xtensa", "asm_rv32")

SIM_DIR = paths.BOARDS_DIR / "sim"
PLANT = SIM_DIR / "plant.py"
TWIN_ROOT = paths.REPO_ROOT / "build" / "plant-twin"
KEEP = 4  # twin folders kept (other states of plant.py)
_small_int_bits = {}  # runtime exe -> small-int width (asked once per process)


def transform(source, name="<firmware>"):
    """Return ``(twin_source, n_decorators, n_casts)`` for one module's source.

    Works on tokens, so words in comments and docstrings are left alone. Raises
    ``ToolError`` on a viper construct this twin cannot express as bytecode (a
    ``uint(...)`` cast, inline assembler) rather than produce a twin that differs.
    """
    lines = source.splitlines()
    n_dec = 0
    for i, line in enumerate(lines):
        if _DECORATOR.match(line):
            n_dec += 1
            lines[i] = ""
    cuts = []  # (row, col_start, col_end) of cast names to delete
    toks = list(tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline))
    for k, tok in enumerate(toks):
        if tok.type != tokenize.NAME:
            continue
        nxt = toks[k + 1] if k + 1 < len(toks) else None
        called = nxt is not None and nxt.type == tokenize.OP and nxt.string == "("
        if tok.string in _UNSUPPORTED and (called or tok.string != "uint"):
            raise ToolError("%s line %d: %r has no bytecode equivalent in the twin"
                            % (name, tok.start[0], tok.string))
        if tok.string in _CASTS and called:
            cuts.append((tok.start[0], tok.start[1], tok.end[1]))
    for row, c0, c1 in reversed(cuts):
        line = lines[row - 1]
        lines[row - 1] = line[:c0] + line[c1:]
    text = "\n".join(lines) + "\n"
    text += "\n%s = True  # written by v2g.build.bytecode_twin\n" % MARKER
    return text, n_dec, len(cuts)


def small_int_bits(exe=None):
    """Width of a MicroPython runtime's small ints, from its ``sys.maxsize`` (31 on a
    32-bit unix build, 63 on a 64-bit one); None when the runtime does not answer."""
    try:
        exe = str(exe or paths.micropython_exe())
    except UsageError:
        return None
    if exe not in _small_int_bits:
        try:
            r = subprocess.run([exe, "-c", "import sys; print(sys.maxsize)"],
                               capture_output=True, text=True, timeout=30)
            _small_int_bits[exe] = int(r.stdout.strip()).bit_length()
        except (OSError, ValueError, subprocess.SubprocessError):
            _small_int_bits[exe] = None
    return _small_int_bits[exe]


def needs_plant_twin(exe=None):
    """True when the runtime's small ints are too narrow for the viper plant."""
    bits = small_int_bits(exe)
    return bits is not None and bits < 63


def plant_twin_dir():
    """Folder holding ``plant.py``: the bytecode twin of ``boards/sim/plant.py`` (built
    once per source state, then reused)."""
    src = PLANT.read_bytes()
    h = hashlib.sha256(src)
    h.update(Path(__file__).read_bytes())
    final = TWIN_ROOT / h.hexdigest()[:20]
    if (final / "plant.py").is_file():
        return final
    text = transform(src.decode("utf-8"), "plant.py")[0]
    TWIN_ROOT.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=TWIN_ROOT))
    (tmp / "plant.py").write_text(text, encoding="utf-8")
    try:
        os.rename(tmp, final)
    except OSError:  # another process finished the same folder first
        if not (final / "plant.py").is_file():
            raise
        (tmp / "plant.py").unlink()
        tmp.rmdir()
    old = sorted((d for d in TWIN_ROOT.iterdir() if d.is_dir() and d != final
                  and not d.name.startswith(".")), key=lambda d: d.stat().st_mtime,
                 reverse=True)
    for d in old[KEEP - 1:]:
        for f in d.iterdir():
            f.unlink()
        d.rmdir()
    return final


def sim_path(entries, exe=None, twin=None):
    """A MicroPython path (list of folders) with the plant twin's folder in front of every
    ``boards/sim`` entry when the runtime ``exe`` needs it (``twin``: True / False
    forces it either way). Other entries are left alone."""
    entries = [Path(e) for e in entries]
    sim = SIM_DIR.resolve()
    if not any(e.resolve() == sim for e in entries):
        return entries
    if twin is None:
        twin = needs_plant_twin(exe)
    if not twin:
        return entries
    d = plant_twin_dir()
    out = []
    for e in entries:
        if e.resolve() == sim:
            out.append(d)
        out.append(e)
    return out


def sim_file(path, exe=None):
    """The file to use for one sim board source file: the plant twin's ``plant.py`` for
    ``boards/sim/plant.py`` when the runtime needs it, else ``path`` itself."""
    path = Path(path)
    if path.resolve() != PLANT.resolve():
        return path
    return sim_path([SIM_DIR], exe)[0] / "plant.py"


def script_args(script_path, exe=None):
    """How to start a script on the runtime: ``[path]``, or ``["-m", name]`` for a script
    of ``boards/sim`` when the runtime needs the plant twin. MicroPython puts a script's own
    folder first on ``sys.path``, ahead of MICROPYPATH, where it would shadow the twin;
    run as a module (``boards/sim`` is then on MICROPYPATH, behind the twin), the script
    sees the same ``sys.argv[1:]`` and ``__name__ == "__main__"``."""
    path = Path(script_path)
    if path.resolve().parent == SIM_DIR.resolve() and needs_plant_twin(exe):
        return ["-m", path.stem]
    return [str(script_path)]
