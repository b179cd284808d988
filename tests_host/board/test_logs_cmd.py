"""``v2g logs`` end to end against the virtual board (``v2g sim board``, as a subprocess).

A test log (``eventlog.Log('testlog')``) is attached to the running firmware's journal
through its REPL, beside the firmware's own ``log/``, anchored to a fixed UTC, and events
are added to the firmware's journal there. The firmware adds events of its own (state changes) to the same log, so
the checks look for ours in order rather than for an exact listing.
"""

import json
import os
import select
import signal
import subprocess
import time

import pytest
from support.virtual_board import _env, board_eval, start_board, stop_board, v2g, v2g_cmd

from v2g.board.console import BoardLink

UTC0_MS = 1795600862000  # 2026-11-25T10:01:02Z

# A log of the test's own beside the firmware's ('log/', stamped with the host's clock):
# its records are stamped from the fixed anchor on, so times only grow within it.
SETUP = """
import eventlog
_lg = eventlog.Log('testlog', segments=8, records_per_segment=16)
_lg.attach(_app.journal)
_lg.set_utc(%d, _app.hal.ticks_ms())
""" % UTC0_MS


def add_events(port, *events):
    """Add ``(kind_or_fault_code, detail)`` events to the firmware's journal at the UTC
    anchor's instant + i seconds; returns nothing. Faults are given as "0x07"."""
    lines = ["_t = _app.hal.ticks_ms()", "_lg.set_utc(%d, _t)" % UTC0_MS]
    for i, (what, detail) in enumerate(events):
        if what.startswith("0x"):
            lines.append("_app.journal.fault(_t + %d, %r, %r)" % (i * 1000, what, detail))
        else:
            lines.append("_app.journal.add(_t + %d, %r, name=%r)" % (i * 1000, what, detail))
    with BoardLink(port) as link:
        link.exec("\n".join(lines))


@pytest.fixture(scope="module")
def board(tmp_path_factory, micropython_exe):
    flash = tmp_path_factory.mktemp("flash")
    proc, port, flash_dir = start_board(flash)
    try:
        board_eval(port, "_app.running", timeout_s=30)  # a loaded machine boots slowly
        with BoardLink(port) as link:
            link.exec(SETUP)
        add_events(port, ("0x07", "v_a=1.12pu"), ("state", "TEST_MARK_A"),
                   ("0x21", "value=2.100pu"))
        yield {"proc": proc, "port": port, "flash": flash_dir}
    finally:
        stop_board(proc)


def _subseq(lines, wanted):
    """True when ``wanted`` appear in ``lines`` in this order."""
    it = iter(lines)
    return all(any(w == ln for ln in it) for w in wanted)


OURS = [
    "2026-11-25T10:01:02Z ERROR 0x07 Grid Integrity Failure v_a=1.12pu",
    "2026-11-25T10:01:03Z INFO state TEST_MARK_A",
    "2026-11-25T10:01:04Z ERROR 0x21 Instantaneous over-current trip value=2.100pu",
]


def test_lines_json_and_flash(board):
    r = v2g("logs", "--log-dir", "testlog", "--port", board["port"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert _subseq(lines, OURS), r.stdout
    r = v2g("logs", "--log-dir", "testlog", "--port", board["port"], "--json")
    assert r.returncode == 0, r.stderr
    objs = [json.loads(ln) for ln in r.stdout.splitlines()]
    seqs = [o["seq"] for o in objs]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    (fault,) = [o for o in objs if o["detail"] == "v_a=1.12pu"]
    assert fault["code"] == "0x07" and fault["severity"] == "ERROR"
    assert fault["kind"] == "fault" and fault["name"] == "GRID_INTEGRITY"
    assert fault["time"] == "2026-11-25T10:01:02Z" and fault["utc_s"] == UTC0_MS // 1000
    assert fault["line"] == OURS[0]
    # on the board's flash: segment files of CRC-framed records
    segs = sorted(p.name for p in (board["flash"] / "log").iterdir())
    assert segs and all(len(n) == 12 and n.endswith(".log") for n in segs)


def test_since_seq_and_time(board):
    port = board["port"]
    objs = [json.loads(ln) for ln in v2g("logs", "--log-dir", "testlog", "--port", port, "--json").stdout.splitlines()]
    (mark,) = [o for o in objs if o["name"] == "TEST_MARK_A"]
    # the running firmware logs its own events too (with the real clock), so check by seq
    (first,) = [o for o in objs if o["line"] == OURS[0]][-1:]
    r = v2g("logs", "--log-dir", "testlog", "--port", port, "--since", mark["seq"] - 1, "--json")
    assert r.returncode == 0, r.stderr
    got = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert min(o["seq"] for o in got) == mark["seq"]
    r = v2g("logs", "--log-dir", "testlog", "--port", port, "--since", "2026-11-25T10:01:03Z", "--json")
    assert r.returncode == 0, r.stderr
    got = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert mark["seq"] in [o["seq"] for o in got]
    assert first["seq"] not in [o["seq"] for o in got]
    r = v2g("logs", "--log-dir", "testlog", "--port", port, "--since", "2099-01-01")
    assert r.returncode == 0 and r.stdout == ""
    r = v2g("logs", "--log-dir", "testlog", "--port", port, "--since", "yesterday")
    assert r.returncode == 2 and "--since 'yesterday'" in r.stderr


def _seq_file(out):
    return json.loads(out.with_name(out.name + ".seq").read_text())["last_seq"]


def _lines_between(port, after, upto):
    r = v2g("logs", "--log-dir", "testlog", "--port", port, "--json", "--since", after)
    return [o["line"] for o in map(json.loads, r.stdout.splitlines()) if o["seq"] <= upto]


def test_out_appends_only_new_records(board, tmp_path):
    port = board["port"]
    out = tmp_path / "protocol_engine.log"
    r = v2g("logs", "--log-dir", "testlog", "--port", port, "--out", out)
    assert r.returncode == 0, r.stderr
    first = out.read_text().splitlines()
    assert _subseq(first, OURS) and first == r.stdout.splitlines()
    assert "new record(s) appended" in r.stderr
    s1 = _seq_file(out)
    add_events(port, ("0x07", "v_b=0.85pu"), ("state", "TEST_MARK_B"))
    # --since selects what is printed; the file still gets every record it lacks
    r = v2g("logs", "--log-dir", "testlog", "--port", port, "--out", out, "--since", "2030-01-01")
    assert r.returncode == 0 and r.stdout == "", r.stderr
    second = out.read_text().splitlines()
    assert second[:len(first)] == first  # appended, nothing rewritten
    s2 = _seq_file(out)
    assert second[len(first):] == _lines_between(port, s1, s2)  # exactly the new ones
    assert _subseq(second[len(first):], [
        "2026-11-25T10:01:02Z ERROR 0x07 Grid Integrity Failure v_b=0.85pu",
        "2026-11-25T10:01:03Z INFO state TEST_MARK_B"])
    r = v2g("logs", "--log-dir", "testlog", "--port", port, "--out", out, "--since", "2030-01-01")
    assert r.returncode == 0, r.stderr
    third = out.read_text().splitlines()
    assert third[:len(second)] == second
    assert third[len(second):] == _lines_between(port, s2, _seq_file(out))


def _read_until(proc, text, timeout_s):
    buf = b""
    end = time.monotonic() + timeout_s
    while text.encode() not in buf:
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError("no %r within %.0f s; got %r" % (text, timeout_s, buf[-500:]))
        r, _, _ = select.select([proc.stdout], [], [], min(left, 0.2))
        if r:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError("v2g logs --follow ended: %r" % buf[-500:])
            buf += chunk
    return buf.decode()


def test_follow_prints_new_records_until_ctrl_c(board, tmp_path):
    port = board["port"]
    out = tmp_path / "protocol_engine.log"
    proc = subprocess.Popen(
        v2g_cmd() + ["logs", "--log-dir", "testlog", "--port", port, "--follow", "--interval", "0.3", "--out",
                     str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        _read_until(proc, OURS[2], 20)
        add_events(port, ("0x32", "aux=0 cmd=1"))
        text = _read_until(proc, "DC contactor not following its command aux=0 cmd=1", 20)
        assert "2026-11-25T10:01:02Z ERROR 0x32 DC contactor" in text
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read().decode()
    assert rc == 0, err
    assert "new record(s) appended" in err
    assert "2026-11-25T10:01:02Z ERROR 0x32 DC contactor not following its command " \
           "aux=0 cmd=1" in out.read_text().splitlines()
    # the board kept running through all the polling
    assert board_eval(port, "_app.running") is True


def test_missing_log_dir(board):
    r = v2g("logs", "--port", board["port"], "--log-dir", "no_such_log")
    assert r.returncode == 0 and r.stdout == ""
    assert "no event log on the board yet (no_such_log/ is missing)" in r.stderr
    r = v2g("logs", "--port", board["port"], "--log-dir", "/etc")
    assert r.returncode == 2 and "relative" in r.stderr


# ---- host side only ----

def test_parse_since():
    from v2g.board import logs
    from v2g.common.errors import UsageError

    assert logs.parse_since(None) == ("seq", 0)
    assert logs.parse_since("120") == ("seq", 120)
    assert logs.parse_since("2026-11-25T10:01:02Z") == ("utc", UTC0_MS // 1000)
    assert logs.parse_since("2026-11-25T11:01:02+01:00") == ("utc", UTC0_MS // 1000)
    assert logs.parse_since("2026-11-25T10:01:02") == ("utc", UTC0_MS // 1000)
    assert logs.parse_since("2026-11-25") == ("utc", UTC0_MS // 1000 - 36062)
    for bad in ("-3", "soon", "2026-13-01"):
        with pytest.raises(UsageError, match="--since"):
            logs.parse_since(bad)
    for bad in ("", "/log", "../x", "a/../../b"):
        with pytest.raises(UsageError, match="--log-dir"):
            logs.check_log_dir(bad)
    assert logs.check_log_dir("log/") == "log"


def test_out_file_companion(tmp_path, capsys):
    from v2g.board import logs
    from v2g.common.errors import UsageError

    ev = logs.eventlog_module()
    recs = [ev.decode(ev.encode(s, s * 1000, None, "INFO", "state", "", "S%d" % s, ""))
            for s in (1, 2, 3)]
    path = tmp_path / "protocol_engine.log"
    out = logs.OutFile(path)
    assert out.add(recs[:2], ev) == 2 and out.add(recs, ev) == 1 and out.add(recs, ev) == 0
    assert path.read_text().splitlines() == ["+1.000s INFO state S1", "+2.000s INFO state S2",
                                             "+3.000s INFO state S3"]
    assert logs.OutFile(path).last_seq == 3  # kept across runs
    (tmp_path / "protocol_engine.log.seq").unlink()
    assert logs.OutFile(path).last_seq == 0
    assert "no readable protocol_engine.log.seq" in capsys.readouterr().err
    with pytest.raises(UsageError, match="is a directory"):
        logs.OutFile(tmp_path)
    with pytest.raises(UsageError, match="does not exist"):
        logs.OutFile(tmp_path / "nope" / "x.log")
