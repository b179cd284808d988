"""Board mode of the simulated board (``v2g sim board``), end to end over its pty.

Real parts only: the ``v2g`` command and ``mpremote`` run as subprocesses from the venv,
pyserial opens the pty, the board is the MicroPython unix runtime running ``main.py``
against the plant. The helpers (``start_board``, ``v2g``, ``mpremote``...) live in
``tests_host/support/virtual_board.py``.
"""

import json
import os
import signal
import time

import pytest
import serial

from support.virtual_board import (board_eval, mark_boot, mpremote,
                                    start_board, stop_board, v2g, wait_restart)
from v2g.board.console import BoardLink

@pytest.fixture(scope="module")
def board(tmp_path_factory, micropython_exe):
    flash = tmp_path_factory.mktemp("flash")
    proc, port, flash_dir = start_board(flash)
    try:
        board_eval(port, "1")  # booted: the REPL answers
        yield {"proc": proc, "port": port, "flash": flash_dir}
    finally:
        stop_board(proc)


class Console:
    """pyserial on the pty, reading until a marker."""

    def __init__(self, port):
        self.s = serial.Serial(port, 115200, timeout=0.1)
        self.buf = b""

    def send(self, b):
        self.s.write(b)

    def until(self, marker, timeout_s=5.0):
        """Bytes up to and including ``marker``; what follows stays for the next call."""
        end = time.monotonic() + timeout_s
        while marker not in self.buf:
            if time.monotonic() > end:
                raise AssertionError("no %r within %.1f s; got %r"
                                     % (marker, timeout_s, self.buf[-300:]))
            self.buf += self.s.read(4096)
        k = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:k], self.buf[k:]
        return out

    def close(self):
        self.s.close()


# ---- tests ----

def test_mpremote_ls_exec_cp(board, tmp_path):
    port = board["port"]
    r = mpremote(port, "resume", "fs", "ls")
    assert r.returncode == 0, r.stderr
    assert "main.py" in r.stdout and "board.json" in r.stdout
    r = mpremote(port, "resume", "exec", "print(1+1)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "2"
    data = bytes(range(256)) * 40 + b"\n\r\n\x00\x04end"
    src = tmp_path / "blob.bin"
    src.write_bytes(data)
    r = mpremote(port, "resume", "cp", src, ":blob.bin")
    assert r.returncode == 0, r.stderr
    assert (board["flash"] / "blob.bin").read_bytes() == data
    back = tmp_path / "back.bin"
    r = mpremote(port, "resume", "cp", ":blob.bin", back)
    assert r.returncode == 0, r.stderr
    assert back.read_bytes() == data
    r = mpremote(port, "resume", "rm", ":blob.bin")
    assert r.returncode == 0 and not (board["flash"] / "blob.bin").exists()
    with BoardLink(port) as link:  # raw REPL output passes unchanged (no LF -> CRLF)
        assert link.exec("print('a\\nb')") == b"a\nb\n"
    # the firmware kept running through all of it
    assert board_eval(port, "_app.running") is True


def test_pyserial_prompt_ctrl_c_keeps_firmware(board):
    con = Console(board["port"])
    try:
        con.send(b"\r")
        con.until(b">>> ")
        con.send(b"6*7\r")
        assert b"42\r\n>>> " in con.until(b"42\r\n>>> ")
        con.send(b"print('a\\nb')\r")
        assert b"a\r\nb\r\n" in con.until(b"b\r\n>>> ")  # cooked console: LF -> CRLF
        count0 = None
        con.send(b"_app.ctl.stats[0]\r")
        out = con.until(b">>> ")
        count0 = int(out.split(b"\r\n")[-2])
        con.send(b"this line is abandoned\x03")  # Ctrl-C: input cancelled
        con.until(b">>> ")
        time.sleep(0.2)
        con.send(b"_app.ctl.stats[0]\r")
        out = con.until(b">>> ")
        assert int(out.split(b"\r\n")[-2]) > count0  # the tick kept running
        # a long command is interrupted by Ctrl-C (SIGINT from the host side)
        con.send(b"while True: pass\r")
        time.sleep(0.4)
        con.send(b"\x03")
        out = con.until(b"KeyboardInterrupt", timeout_s=5)
        assert b"Traceback" in out
        con.until(b">>> ")
        con.send(b"_app.running\r")
        assert b"True" in con.until(b"True")
    finally:
        con.close()


def test_status_json(board):
    r = v2g("status", "--port", board["port"], "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["running"] is True
    for key in ("state", "reset_cause", "faults", "pll", "meas", "contactor", "tick", "sim"):
        assert key in st, key
    assert set(st["pll"]) >= {"locked", "f_hz", "v_pos_pu", "theta_rad"}
    assert set(st["meas"]) >= {"p_w", "q_var", "v_dc_v", "i_d_pu", "i_q_pu"}
    assert set(st["tick"]) >= {"count", "cost_us", "overruns"}
    assert st["contactor"]["status"] in (0, 1, 2, 3, 4)
    assert st["tick"]["count"] > 0
    assert 45 < st["pll"]["f_hz"] < 65
    r = v2g("status", "--port", board["port"])
    assert r.returncode == 0 and r.stdout.startswith("state ")


def test_not_a_repl_and_missing_port(tmp_path):
    master, slave = os.openpty()
    try:
        t0 = time.monotonic()
        r = v2g("status", "--port", os.ttyname(slave))
        assert r.returncode == 2, r.stderr
        assert "no MicroPython REPL answered" in r.stderr
        assert os.ttyname(slave) in r.stderr
        assert time.monotonic() - t0 < 15
    finally:
        os.close(master)
        os.close(slave)
    r = v2g("flash", "--board", "sim", "--port", tmp_path / "no-such-port")
    assert r.returncode == 2
    assert "no such device" in r.stderr


def test_watchdog_resets_a_hung_supervisor(board):
    port = board["port"]
    mark_boot(port)
    with BoardLink(port) as link:
        link.exec("_app.supervise_once = lambda now_ms: None")  # stops feeding the watchdog
    wait_restart(port)
    assert board_eval(port, "_app.hal.reset_cause()") == "wdt"


def test_mpremote_without_resume_then_ctrl_d(board):
    """Plain mpremote soft-resets; like a board, main.py then does not run (raw REPL),
    until a soft reset from the friendly REPL starts it again."""
    port = board["port"]
    r = mpremote(port, "exec", "print('_app' in globals())")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
    con = Console(port)
    try:
        con.send(b"\r")
        con.until(b">>> ")
        con.send(b"\x04")
        con.until(b"soft reboot")
    finally:
        con.close()
    assert board_eval(port, "_app.hal.reset_cause()") == "soft"


def test_sigterm_stops_cleanly_and_removes_temp_flash(micropython_exe):
    proc, port, flash = start_board()
    try:
        assert board_eval(port, "_app.running") is True
        assert (flash / "main.py").exists()
    finally:
        rc = stop_board(proc)
    assert rc == 0
    assert not flash.exists()


def _children(pid):
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open("/proc/%s/stat" % p) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(p))
            except OSError:
                pass
    return out


def test_sigkill_of_the_tool_takes_the_board_down(micropython_exe):
    """``v2g sim board`` killed with SIGKILL (a test pulling the plug): the board process,
    in a session of its own, must not run on with nobody holding its console, even when it
    is not reading that console (here: stopped, as a board whose loop has stopped)."""
    from v2g.sim.simboard import _dies_with_parent
    if not _dies_with_parent():
        pytest.skip("no setpriv with --pdeathsig (util-linux 2.33+) on this machine")
    proc, port, _flash = start_board()
    kids = []
    try:
        assert board_eval(port, "_app.running") is True
        kids = _children(proc.pid)
        assert len(kids) == 1, kids
        os.kill(kids[0], signal.SIGSTOP)  # it cannot notice its console closing
        proc.kill()
        proc.wait(5)
        end = time.monotonic() + 5
        while os.path.exists("/proc/%d" % kids[0]) and time.monotonic() < end:
            time.sleep(0.05)
        # gone (or a zombie until init reaps it: no longer running)
        alive = os.path.exists("/proc/%d" % kids[0])
        if alive:
            with open("/proc/%d/stat" % kids[0]) as f:
                alive = f.read().rsplit(")", 1)[1].split()[0] != "Z"
        assert not alive, "board process %d still there after its tool died" % kids[0]
    finally:
        stop_board(proc)
        for k in kids:
            try:
                os.kill(k, signal.SIGKILL)
            except OSError:
                pass
