"""Boot order and config fallback of ``firmware/app.py`` (CPython, the sim board's HAL).

Outputs go safe before anything else; a config that is unreadable or invalid falls back
to the last good one, then to defaults; a config that validates but does not fit the
board boots on defaults; every fallback is in the journal as fault 0x30.
"""

import json
import sys

import pytest

from v2g.common import paths

sys.path.insert(0, str(paths.REPO_ROOT / "boards" / "sim"))

import app  # noqa: E402
import config_store  # noqa: E402
import hal as sim_hal  # noqa: E402
import params  # noqa: E402

BOARD = json.loads((paths.REPO_ROOT / "boards" / "sim" / "board.json").read_text())


@pytest.fixture
def root(tmp_path):
    return str(tmp_path) + "/"


def _faults(a):
    return [e for e in a.journal.items if e[1] == "fault"]


def test_clean_boot_uses_config_and_records_it_as_good(root, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"enter_service_delay_s": 5.0}))
    a = app.App(sim_hal, BOARD, root=root)
    assert a.held["enter_service_delay_s"] == 50
    assert _faults(a) == []
    assert json.loads((tmp_path / "config.good.json").read_text()) == {
        "enter_service_delay_s": 5.0}
    assert a.supervisor.state == "BOOT" and a.hal.pwm_on == 0


def test_invalid_config_falls_back_to_last_good(root, tmp_path):
    (tmp_path / "config.good.json").write_text(json.dumps({"enter_service_delay_s": 7.0}))
    (tmp_path / "config.json").write_text(json.dumps({"enter_service_delay_s": -1}))
    a = app.App(sim_hal, BOARD, root=root)
    assert a.held["enter_service_delay_s"] == 70
    (f,) = _faults(a)
    assert f[2] == "0x30" and "enter_service_delay_s" in f[4] and "-1" in f[4]
    # the rejected file is kept for the operator; the good one is untouched
    assert json.loads((tmp_path / "config.json").read_text()) == {"enter_service_delay_s": -1}


def test_unreadable_config_and_no_good_one_gives_defaults(root, tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    a = app.App(sim_hal, BOARD, root=root)
    assert a.held == params.defaults()
    assert "unreadable" in _faults(a)[0][4]


def test_config_that_does_not_fit_the_board_boots_on_defaults(root, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"p_rated_w": 7400}))
    a = app.App(sim_hal, BOARD, root=root)
    assert a.held == params.defaults()
    assert "does not fit the board" in _faults(a)[0][4]
    assert app.board_errors(BOARD, params.validate({"p_rated_w": 7400})[0])


def test_save_is_atomic_and_refuses_invalid(root, tmp_path):
    assert config_store.save({"i_max_pu": 3.0}, root)  # errors, nothing written
    assert not (tmp_path / "config.json").exists()
    assert config_store.save({"i_max_pu": 0.9}, root) == []
    assert json.loads((tmp_path / "config.json").read_text()) == {"i_max_pu": 0.9}
    assert not list(tmp_path.glob("*.tmp"))


def test_tick_overruns_raise_a_fault(root):
    a = app.App(sim_hal, BOARD, root=root)
    st = a.ctl.stats
    sup = a.supervisor
    sup.step(1000)  # first window
    st[0] += 10000
    st[3] += 50  # 0.5 %: below the threshold
    sup.step(2000)
    assert not [e for e in a.journal.items if e[2] == "0x62"]
    st[0] += 10000
    st[3] += 500  # 5 %
    sup.step(3000)
    (f,) = [e for e in a.journal.items if e[2] == "0x62"]
    assert "500 of 10000" in f[4]


@pytest.mark.parametrize("stalls", [False, True])
def test_flash_writes_held_while_energized_on_a_stalling_board(root, tmp_path, stalls):
    """``flash_stalls_tick``: the energy journal and the event log write nothing while
    the converter is energized; elsewhere the journal writes as it goes and the event
    log holds INFO records only."""
    a = app.App(sim_hal, dict(BOARD, flash_stalls_tick=stalls), root=root)
    a.supervisor.step = lambda now_ms: None  # the state is set by the test
    for state, energized in (("WAIT_GRID", False), ("ENERGIZED", True),
                             ("DERATED", True), ("TRIPPED", False)):
        a.supervisor.state = state
        a.supervise_once(1000)
        assert a.energy_journal.hold == (energized and stalls), state
        assert a.eventlog.strict_hold == (energized and stalls), state
