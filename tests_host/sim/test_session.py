"""Scenario event ``session`` (docs/formats.md section 1) in scenario mode, the real firmware: a
session stop ceases power and opens the DC contactors through the contactor supervision,
so a welded contactor reads 0 (STUCK) within 1 s of the stop, and a clean stop reads
1 (OPEN); a stopped unit does not energize again until a session start. ``hang`` with a
task name still validates and runs. Scenario mode has no link: nothing of the link gate
acts here."""

import pytest

from v2g.common.errors import UsageError
from v2g.sim import runner, scenario


def _run(events, duration=3.0):
    sc = scenario.validate({"name": "session", "duration_s": duration,
                            "grid": {"v_nom_ln_rms": 230.0, "f_nom_hz": 60},
                            "config": {"enter_service_delay_s": 0.2,
                                       "enter_service_ramp_s": 0.0},
                            "events": [{"t_s": 0.0, "setpoint": {"id": "a", "p_w": -7000,
                                                                  "q_var": 0}}] + events})
    return runner.simulate(sc)


def _events(result, kind, code=None, name=None):
    return [e for e in result["events"] if e["kind"] == kind
            and (code is None or e.get("code") == code)
            and (name is None or e.get("name") == name)]


def test_session_stop_with_welded_contactor_reads_stuck_within_1s(micropython_exe):
    r = _run([{"t_s": 0.8, "contactor_weld": True}, {"t_s": 1.2, "session": "stop"}])
    (stop,) = _events(r, "state", name="SESSION_STOP")
    assert abs(stop["t_s"] - 1.2) < 0.002
    (stuck,) = _events(r, "fault", "0x32")
    assert 0 < stuck["t_s"] - stop["t_s"] <= 1.0 and "welded" in stuck["detail"]
    print("weld reported %.3f s after the session stop" % (stuck["t_s"] - stop["t_s"]))
    # power ceased at the stop (not at the weld detection)
    assert r["energized_intervals"] and r["energized_intervals"][-1][1] <= stop["t_s"] + 0.011
    assert r["final"]["contactor_status"] == 0


def test_clean_session_stop_opens_and_start_reenergizes(micropython_exe):
    r = _run([{"t_s": 1.0, "session": "stop"}, {"t_s": 2.0, "session": "start"}],
             duration=3.2)
    (stop,) = _events(r, "state", name="SESSION_STOP")
    ivs = r["energized_intervals"]
    assert ivs[0][1] <= stop["t_s"] + 0.011  # ceased at once
    assert not _events(r, "fault", "0x32")
    # between stop and start: de-energized, contactors open (WAIT_GRID)
    waits = [e for e in _events(r, "state", name="WAIT_GRID") if e["t_s"] > stop["t_s"]]
    assert waits and waits[0]["t_s"] - stop["t_s"] <= 0.03
    assert all(iv[0] >= 2.0 for iv in ivs[1:]) and len(ivs) == 2  # back after the start
    assert r["final"]["state"] == "ENERGIZED" and r["final"]["contactor_status"] == 2


def test_clean_stop_reads_open(micropython_exe):
    r = _run([{"t_s": 1.0, "session": "stop"}], duration=2.0)
    assert r["final"]["contactor_status"] == 1 and r["final"]["state"] == "WAIT_GRID"
    assert r["energized_intervals"][-1][1] <= 1.011


def test_session_value_is_validated_and_hang_task_name_still_runs(micropython_exe):
    with pytest.raises(UsageError) as e:
        scenario.validate({"name": "x", "duration_s": 1.0,
                           "events": [{"t_s": 0.1, "session": "pause"}]})
    assert "events[0].session" in str(e.value) and "'pause'" in str(e.value)
    r = _run([{"t_s": 0.5, "hang": "link"}], duration=1.0)
    assert r["boots"] == 1 and not _events(r, "wdt_reset")
