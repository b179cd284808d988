"""Shared pytest setup for tests_host.

- ``host_tools`` goes on ``sys.path`` so ``import v2g`` works without ``pip install``, and
  ``tests_host`` so tests share helpers from ``tests_host/support/``;
- the CPython stand-in ``micropython`` (``host_tools/v2g/build/shim``) and ``firmware/`` go on
  ``sys.path`` so firmware modules (``import pll`` ...) import under CPython;
- fixture ``micropython_exe``: the MicroPython unix runtime (``$MICROPYTHON``, else the
  venv's, else PATH); the test fails with a clear message when there is none.
"""

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST_TOOLS = REPO_ROOT / "host_tools"
TESTS_HOST = REPO_ROOT / "tests_host"
for _p in (HOST_TOOLS, TESTS_HOST):         # v2g, and the tests' own helpers (support/)
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from v2g.common import paths, runtime  # noqa: E402
from v2g.common.errors import UsageError  # noqa: E402

runtime.import_firmware_cpython()


@pytest.fixture(scope="session")
def repo_root():
    return paths.REPO_ROOT


@pytest.fixture(scope="session")
def firmware_dir():
    return paths.FIRMWARE_DIR


@pytest.fixture(scope="session")
def micropython_exe():
    """Absolute path of the MicroPython unix runtime; fails clearly if there is none."""
    try:
        exe = paths.micropython_exe()
    except UsageError as e:
        pytest.fail("MicroPython unix runtime missing: %s" % e, pytrace=False)
    # child processes (v2g replay --runtime micropython ...) find the same one
    os.environ["MICROPYTHON"] = exe
    return exe


@pytest.fixture
def run_micropython(micropython_exe):
    """``run_micropython(script, args, stdin_bytes=None, extra_path=())`` on the unix
    runtime with firmware/ importable; returns ``subprocess.CompletedProcess``."""
    def _run(script, args=(), stdin_bytes=None, extra_path=(), **kw):
        kw.setdefault("timeout", 300)
        return runtime.run_micropython(script, args, stdin_bytes, extra_path,
                                       exe=micropython_exe, **kw)
    return _run
