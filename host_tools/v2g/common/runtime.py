"""Run firmware code on the MicroPython unix runtime, or import it under CPython.

MicroPython honours ``MICROPYPATH`` (entries separated by ':'); we set it to
``.frozen:<repo>/firmware:<repo>/boards/drivers:<script dir>:<extra...>`` so a runner
script can ``import pll`` (or a shared chip driver) exactly as on a board, where
``firmware/`` and the board's files share the root. Where ``boards/sim`` is on it, a runtime
with 31-bit small ints gets the sim plant's bytecode twin in front (``v2g.common.twin``).

Under CPython, ``import_firmware_cpython()`` puts the ``micropython`` stand-in
(``v2g/build/shim``), ``firmware/`` and ``boards/drivers/`` on ``sys.path``.

Context: host only.
"""

import os
import subprocess
import sys
from pathlib import Path

from v2g.common import paths, twin


def micropypath(script_path=None, extra_path=(), exe=None):
    """The MICROPYPATH string: ``.frozen`` first, then firmware/, boards/drivers/, script
    dir, extras (the plant twin before ``boards/sim`` where the runtime ``exe`` needs it)."""
    dirs = []
    if script_path is not None:
        dirs.append(Path(script_path).resolve().parent)
    dirs.extend(Path(p).resolve() for p in extra_path)
    entries = [".frozen", str(paths.FIRMWARE_DIR), str(paths.DRIVERS_DIR)]
    entries.extend(str(d) for d in twin.sim_path(dirs, exe))
    seen, out = set(), []
    for e in entries:
        if e not in seen:
            seen.add(e)
            out.append(e)
    return ":".join(out)


def _command(script_path, args, heapsize=None, exe=None):
    cmd = [exe or paths.micropython_exe()]
    if heapsize:
        cmd += ["-X", "heapsize=%s" % heapsize]
    cmd.extend(twin.script_args(script_path, cmd[0]))
    cmd.extend(str(a) for a in args)
    return cmd


def _env(script_path, extra_path, env=None, exe=None):
    e = dict(os.environ if env is None else env)
    e["MICROPYPATH"] = micropypath(script_path, extra_path, exe)
    return e


def run_micropython(script_path, args=(), stdin_bytes=None, extra_path=(), *,
                    timeout=None, heapsize=None, cwd=None, env=None, exe=None,
                    check=False):
    """Run ``script_path`` on the unix runtime and wait; returns ``CompletedProcess``.

    stdout and stderr are captured as bytes. ``stdin_bytes`` is fed to stdin (the
    runtime reads an empty stdin when it is None). With ``check=True`` a non-zero exit
    raises ``subprocess.CalledProcessError``.
    """
    return subprocess.run(
        _command(script_path, args, heapsize, exe),
        input=stdin_bytes if stdin_bytes is not None else b"",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(script_path, extra_path, env, exe),
        cwd=cwd,
        timeout=timeout,
        check=check,
    )


def popen_micropython(script_path, args=(), extra_path=(), *, heapsize=None, cwd=None,
                      env=None, exe=None, stderr=subprocess.PIPE, bufsize=-1):
    """Start ``script_path`` on the unix runtime with stdin/stdout pipes (binary).

    For large data: the caller writes to ``proc.stdin`` from one thread and reads
    ``proc.stdout`` from another (or line by line in lock-step), then ``wait()``s.
    """
    return subprocess.Popen(
        _command(script_path, args, heapsize, exe),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=_env(script_path, extra_path, env, exe),
        cwd=cwd,
        bufsize=bufsize,
    )


def import_firmware_cpython():
    """Make ``firmware/`` modules importable under CPython (idempotent).

    Puts ``v2g/build/shim`` (the CPython ``micropython`` stand-in) first, then ``firmware/``,
    then ``boards/drivers/``, at the front of ``sys.path``. Importing the shim also installs
    the viper cast names (``ptr32`` ...) as builtins, so do it here before any firmware
    module loads.
    """
    for p in (str(paths.DRIVERS_DIR), str(paths.FIRMWARE_DIR), str(paths.SHIM_DIR)):
        if p in sys.path:
            sys.path.remove(p)
        sys.path.insert(0, p)
    import micropython  # noqa: F401  (the shim; installs ptr8/ptr16/ptr32/uint)
    return paths.FIRMWARE_DIR
