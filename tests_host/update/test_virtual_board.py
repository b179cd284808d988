"""Signed updates end to end on the virtual board (``v2g sim board``), and bad input.

Real parts only: ``v2g keys``/``sign``/``update`` and ``mpremote`` run as subprocesses;
the board is the MicroPython unix runtime on its pty, its flash a folder here.
- an update runs in trial, is confirmed after ``upd_confirm_s`` (2 s here) of grid sync,
  and the same bundle again skips every file (< 2 s);
- a trial tree that fails to start, or hangs its supervisor (watchdog), is reverted
  within one watchdog timeout plus one boot, and why is in the event log;
- bad input: a bundle that does not parse, a key file others can read, a port that is no
  board, a bundle for another board: exit 2, nothing on the board changed;
- production lockdown: no prompt, Ctrl-C/A/D/E change nothing, the supervisor runs on;
  a signed config (and nothing else) leaves it.
"""

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from support import update_helpers as H
from support.virtual_board import board_eval, mpremote, start_board, stop_board, v2g
from v2g.board import flash


def _status(port, timeout_s=10):
    return board_eval(port, "__import__('services.update').update.status()",
                      timeout_s=timeout_s)


def _wait(port, pred, timeout_s):
    end = time.monotonic() + timeout_s
    st = None
    while time.monotonic() < end:
        try:
            st = _status(port, timeout_s=2)
            if pred(st):
                return st
        except Exception:  # noqa: BLE001 - restarting
            pass
        time.sleep(0.2)
    pytest.fail("condition not reached within %.0f s; last status %r" % (timeout_s, st))


def _live_files(flash_dir):
    """The board's flash but its event log and run-time counters (the running firmware
    writes those by itself)."""
    return {k: v for k, v in H.snapshot(flash_dir).items()
            if not k.startswith("log/") and k not in ("resets.json",)}


def _source_tree(dst, change=None):
    for name, src in flash.source_files("sim").items():
        p = Path(dst) / name
        p.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, p)
    if change:
        p = Path(dst) / "app.py"
        p.write_text(p.read_text() + change)
    return str(dst)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys") / "k"
    r = v2g("keys", "new", "--out", d)
    assert r.returncode == 0, r.stderr
    return d


@pytest.fixture(scope="module")
def board(tmp_path_factory, keys):
    fl = tmp_path_factory.mktemp("uflash")
    (fl / "config.json").write_text(json.dumps({"upd_confirm_s": 2}))
    proc, port, flash_dir = start_board(fl, extra=("--no-link",))  # runs without a daemon
    try:
        board_eval(port, "1")
        r = v2g("keys", "install", "--pub", keys / "signing.pub", "--port", port)
        assert r.returncode == 0, r.stdout + r.stderr
        yield {"proc": proc, "port": port, "flash": flash_dir}
    finally:
        stop_board(proc)


def _sign(keys, out, version, counter, *extra):
    r = v2g("sign", "--key", keys / "signing.key", "--board", "sim", "--version", version,
            "--security-counter", counter, "--out", out, *extra, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def test_keys_new_private_and_refused_when_readable(tmp_path, keys):
    key = keys / "signing.key"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert len(bytes.fromhex((keys / "signing.pub").read_text().strip())) == 32
    r = v2g("keys", "new", "--out", keys)
    assert r.returncode == 2 and "refusing to overwrite" in r.stderr
    loose = tmp_path / "loose.key"
    shutil.copyfile(key, loose)
    os.chmod(loose, 0o644)
    r = v2g("sign", "--key", loose, "--board", "sim", "--version", "1", "--security-counter",
            1, "--out", tmp_path / "x.v2gu", "--tree", tmp_path)
    assert r.returncode == 2 and "chmod 600" in r.stderr, r.stderr
    assert not (tmp_path / "x.v2gu").exists()


def test_update_trial_confirm_and_unchanged(board, keys, tmp_path):
    port = board["port"]
    b2 = _sign(keys, tmp_path / "b2.v2gu", "2.0", 2)
    r = v2g("update", b2, "--port", port)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "runs version 2.0 in trial" in r.stdout, r.stdout
    assert "kB/s" in r.stderr and "s left" in r.stderr  # progress: bytes, rate, time left
    st = _wait(port, lambda s: s["pointer"]["state"] == "ok", 10)
    assert st["booted"]["slot"] == "a" and st["floor"] == 2
    t0 = time.monotonic()
    r = v2g("update", b2, "--port", port)
    dt = time.monotonic() - t0
    assert r.returncode == 0 and "already runs" in r.stdout, r.stdout + r.stderr
    assert dt < 2.0, dt
    print("\nunchanged bundle: %.2f s (every file skipped by hash)" % dt)
    # a new version with the same files: nothing sent, slot b, trial again
    b21 = _sign(keys, tmp_path / "b21.v2gu", "2.1", 2)
    t0 = time.monotonic()
    r = v2g("update", b21, "--port", port)
    assert r.returncode == 0 and "0 of" in r.stdout and "slot b" in r.stdout, r.stdout
    print("same files, new version: %.2f s with the restart" % (time.monotonic() - t0))
    _wait(port, lambda s: s["pointer"]["state"] == "ok", 10)
    # a lower security counter is refused by the board (exit 1), nothing changed
    before = _live_files(board["flash"])
    b1 = _sign(keys, tmp_path / "b1.v2gu", "1.0", 1)
    r = v2g("update", b1, "--port", port)
    assert r.returncode == 1 and "rollback refused" in r.stdout, r.stdout + r.stderr
    assert {k: v for k, v in _live_files(board["flash"]).items()
            if not k.startswith("slots/a/") and k != "upd.meta"} == {
        k: v for k, v in before.items() if not k.startswith("slots/a/") and k != "upd.meta"}


@pytest.mark.parametrize("how,change,cause", [
    ("fails to start", "\nraise RuntimeError('broken build')\n", "start failed"),
    ("hangs its supervisor", "\nApp.supervise_once = lambda self, now_ms: None\n",
     "reset: wdt"),
])
def test_trial_reverted(board, keys, tmp_path, how, change, cause):
    port = board["port"]
    _wait(port, lambda s: s["pointer"]["state"] == "ok", 10)
    before = _status(port)["booted"]
    tree = _source_tree(tmp_path / "tree", change)
    bad = _sign(keys, tmp_path / "bad.v2gu", "9.0", 9, "--tree", tree)
    t0 = time.monotonic()
    v2g("update", bad, "--port", port)  # 0 (trial seen) or 1 (already reverted)
    st = _wait(port, lambda s: s["booted"]["slot"] == before["slot"]
               and s["booted"]["notes"], 15)
    dt = time.monotonic() - t0
    note = st["booted"]["notes"][0]
    assert "not confirmed" in note and cause in note, note
    assert st["floor"] < 9  # the floor only rises at a confirm
    log = board_eval(port, "[e for e in _app.journal.items if e[2] == '0x70']")
    assert log and cause in log[0][4] or "not confirmed" in log[0][4], log
    print("\ntrial that %s: reverted %.1f s after the update started (%s)" % (how, dt, note))


def test_bad_input_exit_2_nothing_changed(board, keys, tmp_path):
    port = board["port"]
    before = _live_files(board["flash"])
    junk = tmp_path / "junk.v2gu"
    junk.write_bytes(b"V2GU\x01\x00\x00\x00" + b"\xff" * 40)
    r = v2g("update", junk, "--port", port)
    assert r.returncode == 2 and "bundle" in r.stderr, r.stderr
    r = v2g("update", tmp_path / "missing.v2gu", "--port", port)
    assert r.returncode == 2 and "cannot read" in r.stderr, r.stderr
    good = _sign(keys, tmp_path / "t.v2gu", "5", 5, "--tree", _source_tree(tmp_path / "t"))
    r = v2g("update", good, "--port", "/dev/null")
    assert r.returncode == 2 and "port /dev/null" in r.stderr, r.stderr
    r = v2g("update", good, "--link", "/dev/null")
    assert r.returncode == 2 and "link port /dev/null" in r.stderr, r.stderr
    tree = tmp_path / "rp2tree"
    tree.mkdir()
    (tree / "main.py").write_text("print(1)\n")
    r = v2g("sign", "--key", keys / "signing.key", "--board", "rp2", "--version", "1",
            "--security-counter", 5, "--out", tmp_path / "rp2.v2gu", "--tree", tree)
    assert r.returncode == 0, r.stderr
    r = v2g("update", tmp_path / "rp2.v2gu", "--port", port)
    assert r.returncode == 2 and "for board 'rp2'" in r.stderr and "nothing changed" in r.stderr
    assert _live_files(board["flash"]) == before


def test_production_lockdown(tmp_path, keys):
    fl = tmp_path / "flash"
    fl.mkdir()
    shutil.copyfile(keys / "signing.pub", fl / "update_key.pub")
    (fl / "config.json").write_text(json.dumps({"production": 1}))
    proc, port, flash_dir = start_board(fl, extra=("--no-link",))  # runs without a daemon
    try:
        time.sleep(2.0)  # booted (no REPL to ask)
        r = None
        try:
            r = mpremote(port, "resume", "exec", "print('in')", timeout=4)
        except Exception:  # noqa: BLE001 - TimeoutExpired: no prompt ever came
            pass
        assert r is None or ("in" not in r.stdout and r.returncode != 0), r
        import serial

        s = serial.Serial(port, 115200, timeout=0.3)
        try:
            for b in (b"\x03", b"\x01", b"\x02", b"\x04", b"\x05", b"\r\n1+1\r\n"):
                s.write(b)
            got = s.read(4096)
            time.sleep(1.0)
            got += s.read(4096)
        finally:
            s.close()
        assert b">>>" not in got and b"raw REPL" not in got, got
        assert proc.poll() is None
        r = v2g("status", "--port", port, timeout=30)
        assert r.returncode == 2, r.stdout + r.stderr
        time.sleep(1.5)  # the supervisor runs on: its records reach the log; no reset
        import eventlog

        names = [rec[6] for rec in eventlog.scan(str(flash_dir / "log"))]
        assert "PRODUCTION" in names and "SYNCING" in names, names
        assert json.loads((flash_dir / "lock.json").read_text())["production"] == 1
        # an unsigned config does not unlock it; power cycle
        (flash_dir / "config.json").write_text(json.dumps({"production": 0}))
    finally:
        stop_board(proc)
    proc, port, flash_dir = start_board(fl, extra=("--no-link",))  # runs without a daemon
    try:
        time.sleep(2.0)
        try:
            r = mpremote(port, "resume", "exec", "print('in')", timeout=4)
            assert "in" not in r.stdout
        except Exception:  # noqa: BLE001 - no prompt: still locked
            pass
    finally:
        stop_board(proc)
    r = v2g("sign-config", "--key", keys / "signing.key", "--board", "sim", "--counter", 1,
            "--set", "production=0", "--out", fl / "config.signed")
    assert r.returncode == 0, r.stderr
    proc, port, flash_dir = start_board(fl, extra=("--no-link",))  # runs without a daemon
    try:
        assert board_eval(port, "_app.locked") is False
        assert json.loads((flash_dir / "lock.json").read_text()) == {
            "production": 0, "unlock_counter": 1}
        assert not (flash_dir / "config.signed").exists()
    finally:
        stop_board(proc)
