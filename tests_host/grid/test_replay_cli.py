"""``v2g replay``: input checks (exit 2, clear message, no output) and clean runs on both
runtimes (byte-identical output, lock on a clean 50 Hz wave)."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from v2g import cli
from v2g.common import paths
from v2g.grid import replay

HAVE_PLL = (paths.FIRMWARE_DIR / "pll.py").is_file()
needs_pll = pytest.mark.skipif(not HAVE_PLL, reason="firmware/pll.py not written yet")

HEADER = "t_s,v_a,v_b,v_c"


def wave_rows(n=2000, fs=10000, f=50.0, v_rms=230.0, t0=0.0, phase=0.3):
    """Balanced positive-sequence wave, v_a = V cos(w t + phase)."""
    vpk = v_rms * math.sqrt(2.0)
    rows = []
    for k in range(n):
        t = t0 + k / fs
        a = 2 * math.pi * f * (t - t0) + phase
        rows.append((t, vpk * math.cos(a), vpk * math.cos(a - 2 * math.pi / 3),
                     vpk * math.cos(a + 2 * math.pi / 3)))
    return rows


def write_wave(path, rows, header=HEADER, extra=""):
    with open(path, "w") as f:
        f.write(header + "\n")
        for r in rows:
            f.write(",".join(c if isinstance(c, str) else repr(c) for c in r) + extra + "\n")
    return path


def run_cli(*argv):
    return cli.main([str(a) for a in argv])


def expect_error(capsys, tmp_path, argv, *needles, rc=2):
    """Run the CLI, check exit code, message and that nothing was written."""
    before = set(os.listdir(tmp_path))
    code = run_cli(*argv)
    err = capsys.readouterr().err
    assert code == rc, err
    assert "error" in err
    for n in needles:
        assert n in err, "%r not in %r" % (n, err)
    after = set(os.listdir(tmp_path))
    assert after == before, "files appeared: %s" % (after - before)
    return err


@pytest.fixture
def good_rows():
    return wave_rows(200)


# ---------------------------------------------------------------------------
# Bad input: every case exits 2, names the line/column/value, writes nothing.

def test_missing_file(tmp_path, capsys):
    expect_error(capsys, tmp_path, ["replay", tmp_path / "nope.csv", "--out", tmp_path / "e.csv"],
                 "nope.csv", "no such file", "t_s,v_a,v_b,v_c")


def test_empty_file(tmp_path, capsys):
    w = tmp_path / "w.csv"
    w.write_text("")
    expect_error(capsys, tmp_path, ["replay", w, "--out", tmp_path / "e.csv"],
                 "w.csv line 1", "empty")


@pytest.mark.parametrize("header,column,found", [
    ("t_s,v_a,v_b", "column 4", "nothing"),
    ("t,v_a,v_b,v_c", "column 1", "'t'"),
    ("t_s,v_a,vb,v_c", "column 3", "'vb'"),
    ("t_s,v_b,v_a,v_c", "column 2", "'v_b'"),
])
def test_bad_header(tmp_path, capsys, good_rows, header, column, found):
    w = write_wave(tmp_path / "w.csv", [r[:3] for r in good_rows] if header.count(",") == 2
                   else good_rows, header=header)
    expect_error(capsys, tmp_path, ["replay", w, "--out", tmp_path / "e.csv"],
                 "w.csv line 1", column, found, "t_s,v_a,v_b,v_c")


@pytest.mark.parametrize("col,text,what", [
    (2, "abc", "not a number"),
    (1, "", "not a number"),
    (0, "0.0x", "not a number"),
    (3, "nan", "not finite"),
    (1, "inf", "not finite"),
    (2, "-Infinity", "not finite"),
])
def test_bad_cell(tmp_path, capsys, good_rows, col, text, what):
    rows = [list(r) for r in good_rows]
    rows[3][col] = text                      # data row 4 = line 5
    w = write_wave(tmp_path / "w.csv", rows)
    name = ("t_s", "v_a", "v_b", "v_c")[col]
    expect_error(capsys, tmp_path, ["replay", w, "--out", tmp_path / "e.csv"],
                 "w.csv line 5, column %s" % name, repr(text), what)


def test_short_row(tmp_path, capsys, good_rows):
    rows = [list(r) for r in good_rows]
    rows[6] = rows[6][:3]                    # line 8 lacks v_c
    w = write_wave(tmp_path / "w.csv", rows)
    expect_error(capsys, tmp_path, ["replay", w, "--out", tmp_path / "e.csv"],
                 "line 8, column v_c", "missing")


def test_blank_line_inside(tmp_path, capsys, good_rows):
    w = write_wave(tmp_path / "w.csv", good_rows)
    lines = w.read_text().splitlines(True)
    lines.insert(10, "\n")                   # becomes line 11
    w.write_text("".join(lines))
    expect_error(capsys, tmp_path, ["replay", w, "--out", tmp_path / "e.csv"],
                 "line 11", "empty row")


@pytest.mark.parametrize("n", [0, 1])
def test_too_few_rows(tmp_path, capsys, good_rows, n):
    w = write_wave(tmp_path / "w.csv", good_rows[:n])
    expect_error(capsys, tmp_path, ["replay", w, "--out", tmp_path / "e.csv"],
                 "w.csv", "%d data row" % n, "at least 2")


def test_non_uniform(tmp_path, capsys, good_rows):
    rows = [list(r) for r in good_rows]
    rows[50][0] += 0.01 / 10000              # 1% late: line 52
    w = write_wave(tmp_path / "w.csv", rows)
    expect_error(capsys, tmp_path, ["replay", w, "--out", tmp_path / "e.csv"],
                 "line 52, column t_s", repr(rows[50][0]), "uniform")


def test_missing_sample(tmp_path, capsys, good_rows):
    rows = good_rows[:20] + good_rows[21:]   # gap before line 22
    w = write_wave(tmp_path / "w.csv", rows)
    expect_error(capsys, tmp_path, ["replay", w, "--out", tmp_path / "e.csv"],
                 "line 22, column t_s", "median step")


@pytest.mark.parametrize("kind", ["equal", "backwards"])
def test_non_increasing(tmp_path, capsys, good_rows, kind):
    rows = [list(r) for r in good_rows]
    rows[30][0] = rows[29][0] if kind == "equal" else rows[28][0]   # line 32
    w = write_wave(tmp_path / "w.csv", rows)
    expect_error(capsys, tmp_path, ["replay", w, "--out", tmp_path / "e.csv"],
                 "line 32, column t_s", repr(rows[30][0]), "strictly increase")


@pytest.mark.parametrize("fs", [1000, 1999, 20500, 48000])
def test_rate_out_of_range(tmp_path, capsys, fs):
    w = write_wave(tmp_path / "w.csv", wave_rows(50, fs=fs))
    expect_error(capsys, tmp_path, ["replay", w, "--out", tmp_path / "e.csv"],
                 "w.csv line 3, column t_s", "2000..20000 Hz")


@pytest.mark.parametrize("opt,value,needle", [
    ("--f-nom", "80", "40..70"),
    ("--f-nom", "30", "40..70"),
    ("--f-nom", "nan", "40..70"),
    ("--v-nom", "0", "> 0"),
    ("--v-nom", "-230", "> 0"),
    ("--v-nom", "inf", "> 0"),
])
def test_bad_options(tmp_path, capsys, good_rows, opt, value, needle):
    w = write_wave(tmp_path / "w.csv", good_rows)
    expect_error(capsys, tmp_path, ["replay", w, "--out", tmp_path / "e.csv", opt, value],
                 opt, value, needle)


@pytest.mark.parametrize("argv_tail", [
    ["--runtime", "pypy"],
    ["--f-nom", "fifty"],
])
def test_argparse_errors(tmp_path, capsys, good_rows, argv_tail):
    w = write_wave(tmp_path / "w.csv", good_rows)
    expect_error(capsys, tmp_path, ["replay", w, "--out", tmp_path / "e.csv"] + argv_tail,
                 "v2g replay: error", argv_tail[1])


def test_out_dir_missing(tmp_path, capsys, good_rows):
    w = write_wave(tmp_path / "w.csv", good_rows)
    expect_error(capsys, tmp_path, ["replay", w, "--out", tmp_path / "no" / "e.csv"],
                 "does not exist")


def test_existing_output_untouched_on_error(tmp_path, capsys, good_rows):
    rows = [list(r) for r in good_rows]
    rows[-1][2] = "bad"                      # the very last row
    w = write_wave(tmp_path / "w.csv", rows)
    out = tmp_path / "e.csv"
    out.write_text("previous\n")
    expect_error(capsys, tmp_path, ["replay", w, "--out", out],
                 "line %d, column v_b" % (len(rows) + 1), "'bad'")
    assert out.read_text() == "previous\n"


# ---------------------------------------------------------------------------
# Conversions

def test_q12_conversion():
    vpk = 230 * math.sqrt(2)
    assert replay.volts_to_q12(vpk, 230) == 4096
    assert replay.volts_to_q12(-vpk / 2, 230) == -2048
    assert replay.volts_to_q12(0.0, 230) == 0
    assert replay.volts_to_q12(10 * vpk, 230) == 16383
    assert replay.volts_to_q12(-10 * vpk, 230) == -16384


def test_raw_conversions():
    assert replay.theta_from_raw(0) == 0.0
    assert replay.theta_from_raw(1 << 27) == pytest.approx(math.pi)
    assert 0 <= replay.theta_from_raw((1 << 28) - 1) < 2 * math.pi
    assert replay.theta_from_raw(1 << 28) == 0.0
    inc = 50 << 20                           # 50 Hz at 16384 Hz: 2**34 * 50 / 16384, q6
    assert replay.f_from_raw(inc, 16384) == 50.0
    assert replay.f_from_raw((50 << 34) // 10000, 10000) == pytest.approx(50.0, abs=1e-6)
    assert replay.v_from_raw(4096) == 1.0
    row = replay.format_row("0.5", (1 << 27, inc, 2048, 1), 16384)
    assert row == "0.5,3.141592654,50.000000000,0.500000000,1\n"


@pytest.mark.parametrize("x", [50, 60.0, 49.95, 1 / 3])
def test_num_roundtrip(x):
    assert replay.decode_num(replay.encode_num(x)) == x


# ---------------------------------------------------------------------------
# Clean runs through the firmware PLL

def read_est(path):
    lines = Path(path).read_text().splitlines()
    assert lines[0] == "t_s,theta_rad,f_hz,v_pos_pu,locked"
    return [line.split(",") for line in lines[1:]]


@needs_pll
@pytest.mark.parametrize("f_nom,fs", [(50, 10000), (60, 8000)])
def test_clean_wave_both_runtimes(tmp_path, capsys, micropython_exe, f_nom, fs):
    n = int(0.6 * fs)
    phase = 0.3
    rows = wave_rows(n, fs=fs, f=f_nom, phase=phase, t0=12.5)
    w = write_wave(tmp_path / "w.csv", rows, header=HEADER + ",note", extra=",x")
    outs = {}
    for rt in ("micropython", "cpython"):
        out = tmp_path / ("e_%s.csv" % rt)
        code = run_cli("replay", w, "--out", out, "--runtime", rt, "--f-nom", f_nom)
        assert code == 0, capsys.readouterr().err
        outs[rt] = out.read_bytes()
    assert outs["micropython"] == outs["cpython"]
    est = read_est(tmp_path / "e_cpython.csv")
    assert len(est) == n
    src = w.read_text().splitlines()[1:]
    assert [e[0] for e in est] == [s.split(",")[0] for s in src]      # t_s copied as text
    for e in est:
        assert 0.0 <= float(e[1]) < 2 * math.pi
        assert e[4] in ("0", "1")
    last = est[-1]
    assert last[4] == "1"
    assert float(last[2]) == pytest.approx(f_nom, abs=0.05)
    assert float(last[3]) == pytest.approx(1.0, abs=0.02)
    true = (2 * math.pi * f_nom * (n - 1) / fs + phase) % (2 * math.pi)
    err = (float(last[1]) - true + math.pi) % (2 * math.pi) - math.pi
    assert abs(err) < 0.02, "theta off by %.4f rad (v_a = V cos(theta))" % err


@needs_pll
def test_default_runtime_is_micropython(tmp_path, capsys, micropython_exe, monkeypatch):
    w = write_wave(tmp_path / "w.csv", wave_rows(300))
    assert run_cli("replay", w, "--out", tmp_path / "e.csv") == 0
    assert "(micropython)" in capsys.readouterr().out


def test_runner_failure_exits_1_without_output(tmp_path, capsys, micropython_exe,
                                               monkeypatch):
    """A crash inside the MicroPython runner is reported with its traceback, exit 1,
    and leaves no output file."""
    fw = tmp_path / "fw"
    fw.mkdir()
    (fw / "pll.py").write_text(
        "from array import array\n"
        "def new_state():\n    return array('i', [0])\n"
        "def init(st, tick_hz, f_nom_hz):\n    pass\n"
        "def step(st, a, b, c):\n"
        "    st[0] += 1\n"
        "    if st[0] == 100:\n        raise RuntimeError('boom at 100')\n"
        "def raw_outputs(st):\n    return (0, 0, 0, 0)\n")
    monkeypatch.setattr(paths, "FIRMWARE_DIR", fw)
    w = write_wave(tmp_path / "w.csv", wave_rows(300))
    before = set(os.listdir(tmp_path))
    code = run_cli("replay", w, "--out", tmp_path / "e.csv")
    err = capsys.readouterr().err
    assert code == 1
    assert "boom at 100" in err and "of 300 rows" in err
    assert set(os.listdir(tmp_path)) == before


# ---------------------------------------------------------------------------
# The installed command, once, as a user runs it

def _v2g_cmd():
    exe = Path(sys.executable).parent / "v2g"
    if exe.is_file():
        return [str(exe)]
    return [sys.executable, "-m", "v2g.cli"]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(paths.HOST_TOOLS_DIR)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def test_subprocess_smoke(tmp_path, micropython_exe):
    r = subprocess.run(_v2g_cmd() + ["--help"], capture_output=True, text=True, env=_env())
    assert r.returncode == 0 and "replay" in r.stdout
    r = subprocess.run(_v2g_cmd() + ["replay", "--help"], capture_output=True, text=True,
                       env=_env())
    assert r.returncode == 0 and "--runtime" in r.stdout
    w = tmp_path / "w.csv"
    w.write_text("t_s,v_a,v_b,v_c\n0,1,2,3\n0.0001,1,x2,3\n")
    r = subprocess.run(_v2g_cmd() + ["replay", str(w), "--out", str(tmp_path / "e.csv")],
                       capture_output=True, text=True, env=_env())
    assert r.returncode == 2
    assert r.stderr.startswith("v2g replay: error: ")
    assert "line 3, column v_b" in r.stderr and "'x2'" in r.stderr
    assert not (tmp_path / "e.csv").exists()
    if HAVE_PLL:
        write_wave(w, wave_rows(500))
        r = subprocess.run(_v2g_cmd() + ["replay", str(w), "--out", str(tmp_path / "e.csv")],
                           capture_output=True, text=True, env=_env())
        assert r.returncode == 0, r.stderr
        assert len(read_est(tmp_path / "e.csv")) == 500
