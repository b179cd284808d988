"""The virtual board (``v2g sim board``) as the end-to-end tests drive it.

Real parts only: the ``v2g`` command and ``mpremote`` run as subprocesses from the venv;
the board is the MicroPython unix runtime running ``main.py`` against the plant. Shared by
the board-mode, flash, config and logs tests.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from v2g.board.console import BoardLink
from v2g.common import paths

BOOT_TIMEOUT_S = 10


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(paths.HOST_TOOLS_DIR)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def v2g_cmd():
    exe = Path(sys.executable).parent / "v2g"
    if exe.is_file():
        return [str(exe)]
    return [sys.executable, "-m", "v2g.cli"]


def mpremote_cmd():
    exe = Path(sys.executable).parent / "mpremote"
    if exe.is_file():
        return [str(exe)]
    return [sys.executable, "-m", "mpremote"]


def v2g(*args, timeout=60):
    return subprocess.run(v2g_cmd() + [str(a) for a in args], capture_output=True, text=True,
                          env=_env(), timeout=timeout)


def mpremote(port, *args, timeout=30):
    return subprocess.run(mpremote_cmd() + ["connect", port] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=timeout)


def start_board(flash_dir=None, extra=()):
    """Start ``v2g sim board``; returns (process, port, flash dir); the link's pty (the
    ``link:`` line) is ``process.link_port``."""
    cmd = v2g_cmd() + ["sim", "board"] + (["--flash-dir", str(flash_dir)] if flash_dir
                                          else []) + list(extra)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())
    line = proc.stdout.readline()
    if not line.startswith("port: "):
        stop_board(proc)
        pytest.fail("v2g sim board did not print its port first: %r, stderr %r"
                    % (line, proc.stderr.read()))
    port = line.split(None, 1)[1].strip()
    line = proc.stdout.readline()
    if not line.startswith("link: "):
        stop_board(proc)
        pytest.fail("v2g sim board did not print its link second: %r" % line)
    proc.link_port = line.split(None, 1)[1].strip()  # the link UART's pty
    flash = proc.stdout.readline().split(None, 1)[1].strip()
    return proc, port, Path(flash)


def stop_board(proc):
    """SIGTERM, then SIGKILL after 5 s; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def board_eval(port, expr, timeout_s=BOOT_TIMEOUT_S):
    """Evaluate ``expr`` on the board, retrying while it (re)boots."""
    end = time.monotonic() + timeout_s
    while True:
        try:
            with BoardLink(port, banner_timeout_s=2) as link:
                return link.eval(expr)
        except Exception:  # noqa: BLE001 - still booting: try again until the deadline
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


def mark_boot(port):
    """Leave a mark in the REPL namespace of the running board process; a restarted
    board has a fresh namespace without it."""
    with BoardLink(port) as link:
        link.exec("_boot_mark = 1")


def wait_restart(port, timeout_s=BOOT_TIMEOUT_S):
    """Wait until the board runs a new process (no boot mark) with the controller up."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            if board_eval(port, "'_boot_mark' not in globals() and _app.running",
                          timeout_s=2) is True:
                return
        except Exception:  # noqa: BLE001 - board restarting
            pass
        time.sleep(0.2)
    pytest.fail("the board did not restart within %d s" % timeout_s)
