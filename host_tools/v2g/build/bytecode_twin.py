"""The bytecode twin of ``firmware/``: the same source with viper turned off.

``build(dest)`` copies every ``firmware/*.py`` into ``dest`` with
- each ``@micropython.viper`` / ``@micropython.native`` decorator line blanked (line
  numbers stay, so tracebacks point at the same lines as the original);
- each viper cast ``ptr8(x)`` / ``ptr16(x)`` / ``ptr32(x)`` turned into the plain
  expression ``(x)``: on bytecode, indexing the array itself gives the same words;
- a marker line ``_V2G_BYTECODE_TWIN = True`` appended, so a harness can tell which copy
  it imported.
Annotations such as ``st: ptr32`` and ``-> int`` stay: MicroPython's bytecode compiler
ignores them (verified on the unix runtime), and so does CPython at run time.

The transform itself lives in ``v2g.common.twin`` (re-exported here): the sim board's
plant uses it too, for a 32-bit runtime (see there).

Put ``dest`` first on ``MICROPYPATH`` (or ``sys.path``) and ``import tick`` runs the
firmware as plain bytecode: ``v2g bench`` measures viper's gain with it, and the tests
check that both give bit-identical results (they must: every stored word the viper code
reads back is non-negative and every intermediate fits in 30 bits).

Context: host only.
"""

import sys
from pathlib import Path

from v2g.common import paths
from v2g.common.errors import ToolError
from v2g.common.twin import _DECORATOR, MARKER, transform  # noqa: F401 (this module's API)


def build(dest, src_dir=None):
    """Write the twin of every ``*.py`` in ``src_dir`` (default ``firmware/``) into
    ``dest`` (created if missing). Returns ``{module file name: (decorators, casts)}``."""
    src_dir = Path(src_dir) if src_dir is not None else paths.FIRMWARE_DIR
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    files = sorted(src_dir.glob("*.py"))
    if not files:
        raise ToolError("no firmware modules (*.py) in %s" % src_dir)
    report = {}
    for f in files:
        text, n_dec, n_cast = transform(f.read_text(encoding="utf-8"), f.name)
        try:
            compile(text, str(dest / f.name), "exec")  # a broken twin fails here, not later
        except SyntaxError as e:
            raise ToolError("bytecode twin of %s does not compile: %s" % (f.name, e)) from e
        (dest / f.name).write_text(text, encoding="utf-8")
        report[f.name] = (n_dec, n_cast)
    return report


if __name__ == "__main__":  # python -m v2g.build.bytecode_twin DEST
    if len(sys.argv) != 2:
        sys.stderr.write("usage: python -m v2g.build.bytecode_twin DEST_DIR\n")
        sys.exit(2)
    for name, (d, c) in build(sys.argv[1]).items():
        print("%-20s %d viper decorators removed, %d casts" % (name, d, c))
