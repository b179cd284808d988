"""Precompiled ``.mpy`` copies of the modules a simulation imports, for the unix runtime.

A scenario run starts a fresh MicroPython process, which otherwise compiles every module
of ``firmware/`` and ``boards/sim/`` from source (about a third of a short run's wall
time). ``compiled_dir(dirs)`` returns a folder holding ``mpy-cross`` output for every
``*.py`` of ``dirs``, built once and then reused: the folder's name is a SHA-256 over the
runtime's identity, mpy-cross's version and every source file's name and bytes, so an
edited source can never meet a stale ``.mpy`` (it gets a new folder). Put the folder
first on ``MICROPYPATH``: MicroPython then imports the ``.mpy``.

The compiled code is what the runtime's own compiler emits from the same source (same
native emitter, 63-bit small ints like the x64 port), so results are bit-identical to a
source run; ``tests_host/sim/test_scenarios.py`` checks that.

The arch is the runtime's own (``sys.implementation._mpy``: x64, or x86 for a 32-bit
unix build) and is part of the folder's key. Returns None (callers then run the sources)
when the runtime has no native arch, mpy-cross is missing, or the runtime's .mpy version
differs from mpy-cross's. Folders live in
``build/mpy-cache`` of the checkout; the newest few are kept. Context: host only.
"""

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from v2g.board import flash
from v2g.common import paths
from v2g.common.errors import ToolError, UsageError

CACHE_ROOT = paths.REPO_ROOT / "build" / "mpy-cache"
KEEP = 4  # compiled folders kept (other checkouts' states, a branch switch)
_runtime_mpy = {}  # runtime exe -> sys.implementation._mpy (asked once per process)


def _runtime_mpy_word(exe):
    if exe not in _runtime_mpy:
        r = subprocess.run([exe, "-c", "import sys; print(sys.implementation._mpy)"],
                           capture_output=True, text=True, timeout=30)
        try:
            _runtime_mpy[exe] = int(r.stdout.strip())
        except ValueError:
            _runtime_mpy[exe] = None
    return _runtime_mpy[exe]


def _digest(exe, arch, version, sources):
    h = hashlib.sha256()
    st = os.stat(exe)
    h.update(("%s|%d|%d|%s|%d.%d" % (exe, st.st_size, int(st.st_mtime), arch,
                                      version[0], version[1])).encode())
    for src in sources:
        h.update(b"\0" + src.name.encode() + b"\0")
        h.update(src.read_bytes())
    return h.hexdigest()[:20]


def compiled_dir(dirs, exe=None):
    """Folder with ``<module>.mpy`` for every ``*.py`` in ``dirs`` (a name found in two
    folders: the first one's, as MICROPYPATH would pick it), or None (see above)."""
    exe = exe or paths.micropython_exe()
    try:
        version = flash.mpy_cross_version()
    except (UsageError, ToolError, OSError):
        return None
    word = _runtime_mpy_word(exe)
    if word is None or (word & 0xFF, (word >> 8) & 3) != version:
        return None
    # the runtime's own native arch (x64, or x86 for a 32-bit unix build), not the host's
    arch = flash.NATIVE_ARCHES.get(word >> 10)
    if arch is None:
        return None
    sources = {}
    for d in dirs:
        for src in sorted(Path(d).glob("*.py")):
            sources.setdefault(src.name, src)
    files = [sources[n] for n in sorted(sources)]
    final = CACHE_ROOT / _digest(exe, arch, version, files)
    if final.is_dir():
        return final
    try:
        CACHE_ROOT.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=CACHE_ROOT))
    except OSError:
        return None  # a read-only checkout: run from source
    try:
        for src in files:
            flash.compile_mpy(src, src.name, arch, tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished the same folder first
            if not final.is_dir():
                raise
    except (UsageError, ToolError, OSError):
        return None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    _prune(final)
    return final


def _prune(keep_dir):
    dirs = sorted((d for d in CACHE_ROOT.iterdir() if d.is_dir() and d != keep_dir
                   and not d.name.startswith(".")),
                  key=lambda d: d.stat().st_mtime, reverse=True)
    for d in dirs[KEEP - 1:]:
        shutil.rmtree(d, ignore_errors=True)
