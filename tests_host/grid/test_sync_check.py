"""``v2g sync-check --test-grid``: a clean grid passes; distortion, unbalance, a swapped
phase sequence and a voltage outside the 0x07 window fail with their reasons; bad usage
exits 2. The --sim runs go through the virtual board's serial port like a real board."""

import json
import math

import numpy as np
import pytest

from v2g import cli
from v2g.grid import sync_check


def _run(capsys, *args):
    rc = cli.main(["sync-check", "--test-grid", *args])
    return rc, capsys.readouterr()


def _scenario(tmp_path, events):
    p = tmp_path / "grid.json"
    p.write_text(json.dumps({"name": "grid", "duration_s": 60,
                             "grid": {"v_nom_ln_rms": 230.0, "f_nom_hz": 60},
                             "events": events}))
    return str(p)


def test_clean_grid_passes(capsys, micropython_exe):
    rc, out = _run(capsys, "--sim", "--json")
    fig = json.loads(out.out)
    assert rc == 0 and fig["pass"] and fig["reasons"] == []
    assert all(abs(v - 1.0) < 0.005 for v in fig["v_rms_pu"])
    assert abs(fig["f_hz"] - 60.0) < 0.01 and fig["phase_sequence"] == "abc"
    assert abs(fig["pll_phase_error_deg"]) < 0.5 and max(fig["thd_pct"]) < 0.5


def test_distorted_unbalanced_grid_fails_with_reasons(capsys, tmp_path, micropython_exe):
    sc = _scenario(tmp_path, [{"t_s": 0.0, "neg_seq_pu": 0.05, "harmonics": [
        {"order": 5, "pu": 0.08}, {"order": 7, "pu": 0.05}]}])
    rc, out = _run(capsys, "--sim", "--scenario", sc)
    assert rc == 1
    assert "FAIL: voltage THD" in out.out and "FAIL: unbalance 5.00 %" in out.out
    assert "PLL locked" in out.out  # the PLL still syncs through it


def test_high_voltage_fails_grid_integrity(capsys, tmp_path, micropython_exe):
    sc = _scenario(tmp_path, [{"t_s": 0.0, "v_pu": [1.0, 1.15, 1.0]}])
    rc, out = _run(capsys, "--sim", "--scenario", sc)
    assert rc == 1
    assert "phase b RMS" in out.out and "0x07 Grid Integrity Failure" in out.out


def _capture(va_b_c, f=60.0, fs=10000, theta_offset=0.0):
    n = 640
    t = np.arange(n) / fs
    cap = []
    for k in range(n):
        th = 2 * math.pi * f * t[k]
        words = [32768 + int(round(fn(th) * 8192)) for fn in va_b_c]
        cap += words + [int(((th + theta_offset) % (2 * math.pi)) / (2 * math.pi) * (1 << 28))]
    return {"tick_hz": fs, "cap": cap, "offsets": [32768] * 3, "gains": [8192] * 3,
            "v_base_v": 325.269, "f_nom_hz": 60, "band_pu": 0.10, "es_df_low_hz": 0.5,
            "es_df_high_hz": 0.1, "locked": 1, "f_hz": f, "v_pos_pu": 1.0}


def test_swapped_sequence_and_phase_error_are_reported():
    rot = 2 * math.pi / 3
    good = _capture([lambda th: math.cos(th), lambda th: math.cos(th - rot),
                     lambda th: math.cos(th + rot)])
    assert sync_check.analyse(good)["pass"]
    swapped = _capture([lambda th: math.cos(th), lambda th: math.cos(th + rot),
                        lambda th: math.cos(th - rot)])
    fig = sync_check.analyse(swapped)
    assert fig["phase_sequence"] == "acb" and not fig["pass"]
    off = _capture([lambda th: math.cos(th), lambda th: math.cos(th - rot),
                    lambda th: math.cos(th + rot)], theta_offset=math.radians(5))
    fig = sync_check.analyse(off)
    assert abs(fig["pll_phase_error_deg"] - 5.0) < 0.2
    assert any("PLL phase error" in r for r in fig["reasons"])


@pytest.mark.parametrize("args,needle", [
    (["--port", "/dev/nonexistent-port"], "no such device"),
    (["--port", "/dev/null", "--scenario", "x.json"], "--scenario goes with --sim"),
])
def test_bad_usage_exits_2(capsys, args, needle):
    rc, out = _run(capsys, *args)
    assert rc == 2 and needle in out.err
