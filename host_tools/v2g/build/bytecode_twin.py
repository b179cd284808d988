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

Put ``dest`` first on ``MICROPYPATH`` (or ``sys.path``) and ``import tick`` runs the
firmware as plain bytecode: ``v2g bench`` measures viper's gain with it, and the tests
check that both give bit-identical results (they must: every stored word the viper code
reads back is non-negative and every intermediate fits in 30 bits).

Context: host only.
"""

import io
import re
import sys
import tokenize
from pathlib import Path

from v2g.common import paths
from v2g.common.errors import ToolError

MARKER = "_V2G_BYTECODE_TWIN"
_DECORATOR = re.compile(r"^\s*@micropython\.(viper|native)\s*(#.*)?$")
_CASTS = ("ptr8", "ptr16", "ptr32")
_UNSUPPORTED = ("uint", "asm_thumb", "asm_xtensa", "asm_rv32")


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
