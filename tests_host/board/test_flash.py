"""``v2g flash`` against the simulated board: compile, compare, stage, switch, restart.

Real parts: ``v2g`` and the board run as subprocesses; the board's flash directory is a
folder here, so the live tree can be checked byte for byte.
"""

import hashlib
import os
import re
import shutil
import signal
import subprocess
import time

import pytest
from support.virtual_board import (_env, board_eval, mark_boot, start_board, stop_board, v2g,
                             v2g_cmd, wait_restart)

from v2g.common import paths


def live_tree(flash):
    """{name: sha256} of the board's live files (the staging folder excluded)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(flash.iterdir()) if p.is_file()}


@pytest.fixture
def board(tmp_path, micropython_exe):
    proc, port, flash = start_board(tmp_path / "flash")
    try:
        board_eval(port, "1")
        yield {"proc": proc, "port": port, "flash": flash}
    finally:
        stop_board(proc)


def test_flash_twice_then_a_changed_file(board, tmp_path):
    port, flash = board["port"], board["flash"]
    mark_boot(port)
    r = v2g("flash", "--board", "sim", "--port", port)
    assert r.returncode == 0, r.stderr
    assert "restarted" in r.stdout
    assert (flash / "pll.mpy").exists() and not (flash / "pll.py").exists()
    assert (flash / "main.py").exists() and (flash / "board.json").exists()
    # the services package: compiled, in its folder; the populated sources replaced
    svc = flash / "services"
    assert (svc / "__init__.py").exists() and (svc / "link_service.mpy").exists()
    assert (svc / "link.mpy").exists() and not (svc / "link.py").exists()
    assert not any(p.name.endswith(".py") for p in svc.iterdir() if p.name != "__init__.py")
    wait_restart(port)  # the compiled tree runs
    assert board_eval(port, "_app.link is not None and "
                            "__import__('services.link_service').link_service.__file__"
                      ).endswith("link_service.mpy")
    mark_boot(port)

    t0 = time.monotonic()
    r = v2g("flash", "--board", "sim", "--port", port)
    dt = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert "nothing to copy" in r.stdout
    print("unchanged flash: %.2f s (command included)" % dt)
    assert dt < 2.0
    assert board_eval(port, "'_boot_mark' in globals()") is True  # not restarted

    fw = tmp_path / "fw"
    shutil.copytree(paths.FIRMWARE_DIR, fw, ignore=shutil.ignore_patterns("__pycache__"))
    with open(fw / "params.py", "a") as f:
        f.write('\nFLASH_PROBE = "v2"\n')
    before = live_tree(flash)
    r = v2g("flash", "--board", "sim", "--port", port, "--firmware", fw)
    assert r.returncode == 0, r.stderr
    assert re.search(r"\b1 of \d+ files copied", r.stdout), r.stdout
    after = live_tree(flash)
    assert [n for n in after if after[n] != before.get(n)] == ["params.mpy"]
    wait_restart(port)
    assert board_eval(port, "__import__('params').FLASH_PROBE") == "v2"


def test_killed_mid_copy_leaves_live_tree(board, tmp_path):
    port, flash = board["port"], board["flash"]
    fw = tmp_path / "fw"
    shutil.copytree(paths.FIRMWARE_DIR, fw, ignore=shutil.ignore_patterns("__pycache__"))
    (fw / "zz_big.py").write_text("BLOB = %r\n" % os.urandom(300000).hex())
    before = live_tree(flash)
    proc = subprocess.Popen(v2g_cmd() + ["flash", "--board", "sim", "--port", port,
                                         "--firmware", str(fw)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    try:
        seen = b""
        deadline = time.monotonic() + 30
        # wait until some files are staged, then pull the plug on the board
        while not re.search(rb"\b[1-9]\d*/\d+ files", seen):
            assert time.monotonic() < deadline, seen[-300:]
            chunk = os.read(proc.stderr.fileno(), 4096)
            assert chunk, "flash ended before copying: %r" % seen[-300:]
            seen += chunk
        board["proc"].send_signal(signal.SIGKILL)
        board["proc"].wait()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert b"v2g flash: error:" in err
    time.sleep(0.3)  # the board process ends on the closed console
    assert live_tree(flash) == before
    assert (flash / ".stage").is_dir()  # the partial copy went to the staging folder only
    assert not (flash / "zz_big.mpy").exists()


def test_tree_carries_the_services_package():
    from v2g.board import flash as flash_mod
    from v2g.common import boards

    board = boards.load("sim")
    tree = flash_mod.build_tree("sim", board)
    names = {p.name for p in (paths.FIRMWARE_DIR / "services").glob("*.py")}
    for n in names:
        want = "services/" + (n if n == "__init__.py" else n[:-3] + ".mpy")
        assert want in tree, want
    src = flash_mod.build_tree("sim", board, source=True)
    assert {"services/" + n for n in names} <= set(src)
