"""``v2g conformance``: the IEEE 1547.1-style suite on the simulated board.

The reduced form for Category II (what ``make test`` can afford: one repetition, default
settings) runs once per session as the user would run it, and every test of it must
pass, except the islanding case while the firmware has no anti-islanding module
(``firmware/islanding.py``), which is then an expected failure (not strict). The full
plans of the three categories are checked without running them: every trip function at
its range ends from the parameter table. Bad input exits 2.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from v2g import cli
from v2g.common import paths, twin
from v2g.grid import conformance
from v2g.grid import conformance_tests as ct

ISLANDING = (paths.FIRMWARE_DIR / "islanding.py").exists()
REDUCED_TESTS, _ = ct.plan("II", reduced=True)
REDUCED_IDS = [t["id"] for t in REDUCED_TESTS]
TIME_LIMIT_S = 150.0  # ~25 s on 2 idle cores (~60 s budget); generous for a loaded machine


def _param(tid):
    if tid.startswith("Unintentional islanding") and not ISLANDING:
        return pytest.param(tid, marks=pytest.mark.xfail(
            strict=False, reason="anti-islanding detection not in the firmware yet "
                                 "(firmware/islanding.py missing)"))
    return pytest.param(tid)


@pytest.fixture(scope="module")
def reduced_ii(tmp_path_factory, micropython_exe):
    out = tmp_path_factory.mktemp("conformance") / "II"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(paths.HOST_TOOLS_DIR)]
                                        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH")
                                           else []))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "v2g.cli", "conformance", "--category", "II",
                           "--reduced", "--out", str(out), "--jobs", "2"],
                          env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - t0
    summary_file = out / "summary.json"
    assert summary_file.exists(), proc.stderr[-3000:]
    summary = json.loads(summary_file.read_text())
    return {"out": out, "rc": proc.returncode, "stderr": proc.stderr, "elapsed": elapsed,
            "summary": summary, "rows": {r["id"]: r for r in summary["tests"]}}


def test_reduced_suite_runs_within_budget(reduced_ii, micropython_exe):
    # the budget is the viper plant's; a runtime with 31-bit small ints runs the plant's
    # bytecode twin (v2g.common.twin: long-int arithmetic every tick), ~3x slower a run
    limit = TIME_LIMIT_S * (3 if twin.needs_plant_twin(micropython_exe) else 1)
    assert reduced_ii["elapsed"] < limit, reduced_ii["elapsed"]
    assert reduced_ii["summary"]["form"] == "reduced"
    assert set(reduced_ii["rows"]) == set(REDUCED_IDS)


@pytest.mark.parametrize("tid", [_param(t) for t in REDUCED_IDS])
def test_reduced_category_ii_passes(reduced_ii, tid):
    row = reduced_ii["rows"][tid]
    assert row["passed"], "%s (%s): %s" % (tid, row["setting"], "; ".join(row["fails"]))


def test_exit_code_follows_the_verdict(reduced_ii):
    s = reduced_ii["summary"]
    assert reduced_ii["rc"] == (0 if s["passed"] else 1), reduced_ii["stderr"][-2000:]
    failed = [r["id"] for r in s["tests"] if not r["passed"]]
    assert s["counts"]["failed"] == len(failed)
    if ISLANDING:
        assert reduced_ii["rc"] == 0, failed


def test_report_files(reduced_ii):
    out = reduced_ii["out"]
    text = (out / "report.md").read_text()
    assert "Category II (reduced form)" in text
    assert "| test | setting | step | accepts | reps | measured clearing min / max (s) |" in text
    assert "Reduced form" in text and "## Not run in this form" in text
    for tid in REDUCED_IDS:
        assert "[%s](plots/" % tid in text, tid
    for row in reduced_ii["summary"]["tests"]:
        png = out / row["plot"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
        assert png.stat().st_size < 400_000, png
    trip_rows = [r for r in reduced_ii["summary"]["tests"] if r["group"] == "trip"]
    assert {r["function"] for r in trip_rows} == set(ct.ORDER)
    for r in trip_rows:
        if r["passed"]:
            assert r["margin_cycles"] >= 1.0, r
            assert r["margin_ms"] == pytest.approx(r["margin_cycles"] * 1000 / 60, abs=0.1)


@pytest.mark.parametrize("argv,needle", [
    (["--category", "IV"], "allowed I, II or III"),
    (["--category", "II", "--jobs", "0"], "--jobs"),
    (["--category", "II", "--only", "("], "--only"),
    (["--category", "II", "--reps", "0"], "--reps"),
])
def test_bad_input_exits_2(tmp_path, capsys, argv, needle):
    out = tmp_path / "o"
    rc = cli.main(["conformance"] + argv + ["--out", str(out)])
    assert rc == 2
    assert needle in capsys.readouterr().err
    assert not (out / "report.md").exists()


def test_missing_category_exits_2(capsys):
    assert cli.main(["conformance"]) == 2


@pytest.mark.parametrize("cat", ["I", "II", "III"])
def test_full_plan_covers_every_function_at_its_range_ends(cat):
    tests, skipped = ct.plan(cat, reduced=False)
    assert skipped == []
    n = ct.CATEGORY_NUM[cat]
    trip = [t for t in tests if t["group"] == "trip"]
    for name, (what, over, mkey, tkey) in ct.FUNCTIONS.items():
        mine = [t for t in trip if t["function"] == name]
        assert mine, name
        assert all(len(t["runs"]) == ct.REPS for t in mine)
        mlo, mhi, _ = ct.setting_range(mkey, n)
        tlo, thi, _ = ct.setting_range(tkey, n)
        cfgs = [t["runs"][0]["scenario"]["config"] for t in mine]
        mags = {c[mkey] for c in cfgs}
        times = {c[tkey] for c in cfgs}
        assert mhi in mags and tlo in times and thi in times, (name, mags, times)
        assert mlo in mags or (what == "v" and not over and mlo == 0.0), (name, mags)
        if name.startswith("UV"):
            assert {t["variant"] for t in mine} == {"3ph", "1ph"}
        for t in mine:  # repetitions move the step across one grid cycle
            steps = [r["t_step"] for r in t["runs"]]
            frac = sorted(round((s * ct.F_NOM) % 1.0, 3) for s in steps)
            assert len(set(frac)) == ct.REPS, (t["id"], steps)
            sc = t["runs"][0]["scenario"]
            assert sc["config"]["abnormal_category"] == n
            # held at least the clearing time + 2 x time accuracy after the step
            assert sc["duration_s"] - t["runs"][0]["t_step"] >= t["hold_s"]
            assert t["hold_s"] >= t["clearing_s"] + 2 * ct.t_acc(t["clearing_s"]) - 1e-9
    groups = {t["group"] for t in tests}
    assert groups == {"trip", "ride-through", "phase-jump", "enter-service", "islanding"}
    es = [t for t in tests if t["group"] == "enter-service"]
    assert all(t["delay_s"] == 300.0 for t in es)


def test_ov1_at_its_maximum_also_accepts_ov2():
    tests, _ = ct.plan("II", reduced=False)
    t = next(t for t in tests if t["id"].startswith("OV1 mag max"))
    assert t["accept"] == ["OV1", "OV2"] and t["clearing_s"] == 0.16


def test_trip_evaluation_margin_and_code():
    test = {"clearing_s": 0.16, "hold_s": 0.2, "accept": ["OV2"], "early_s": 0.05}
    run = {"rep": 1, "t_step": 2.0}
    res = {"duration_s": 2.3, "energized_intervals": [[0.33, 2.011]],
           "events": [{"t_s": 2.13, "kind": "trip", "code": "OV2"}]}
    ev = conformance.eval_trip(test, run, res)
    assert ev["passed"] and ev["clearing_s"] == pytest.approx(0.011)
    res["energized_intervals"] = [[0.33, 2.15]]  # 10 ms inside: less than a cycle
    assert not conformance.eval_trip(test, run, res)["passed"]
    res["energized_intervals"] = [[0.33, 2.011]]
    res["events"][0]["code"] = "OV1"
    assert not conformance.eval_trip(test, run, res)["passed"]
    res["events"][0]["code"] = "OV2"
    res["energized_intervals"] = [[0.33, 2.011], [2.2, 2.3]]  # energized again
    assert not conformance.eval_trip(test, run, res)["passed"]
    res["energized_intervals"] = [[0.33, 2.011]]
    res["events"][0]["t_s"] = 2.1  # 0.1 s: the 0.16 s setting ignored (> 3 cycles early)
    assert "too early" in " ".join(conformance.eval_trip(test, run, res)["fails"])
    res["events"][0]["t_s"] = 1.9  # before the step
    assert not conformance.eval_trip(test, run, res)["passed"]
