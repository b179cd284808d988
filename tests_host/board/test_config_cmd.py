"""``v2g config push/show/pull`` against the simulated board.

Bad files: exit 2, every problem named (file, line, key, value, range), nothing sent.
A config the board's own firmware rejects: exit 2 and the previous file put back.
"""

import json
import re

import pytest
import yaml
from support.virtual_board import board_eval, mark_boot, start_board, stop_board, v2g, wait_restart

from v2g.board.console import BoardLink


@pytest.fixture(scope="module")
def board(tmp_path_factory, micropython_exe):
    proc, port, flash = start_board(tmp_path_factory.mktemp("flash"))
    try:
        board_eval(port, "1")
        yield {"proc": proc, "port": port, "flash": flash}
    finally:
        stop_board(proc)


def test_push_good_then_show_and_pull(board, tmp_path):
    port, flash = board["port"], board["flash"]
    good = tmp_path / "site.yaml"
    good.write_text("# site config\nf_nom_hz: 50\nenter_service_delay_s: 2.5\n"
                    "cc_bandwidth_hz: 600\n")
    mark_boot(port)
    r = v2g("config", "push", good, "--port", port, "--restart")
    assert r.returncode == 0, r.stderr
    assert json.loads((flash / "config.json").read_text()) == {
        "f_nom_hz": 50, "enter_service_delay_s": 2.5, "cc_bandwidth_hz": 600}
    wait_restart(port)
    r = v2g("config", "show", "--port", port)
    assert r.returncode == 0, r.stderr
    shown = yaml.safe_load(r.stdout)
    assert shown["f_nom_hz"] == 50 and shown["cc_bandwidth_hz"] == 600
    assert shown["enter_service_delay_s"] == 2.5
    assert "# 50..60 Hz" in r.stdout  # units and range in comments
    out = tmp_path / "pulled.yaml"
    r = v2g("config", "pull", "--port", port, "--out", out)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(out.read_text()) == {"f_nom_hz": 50, "enter_service_delay_s": 2.5,
                                                "cc_bandwidth_hz": 600}


def test_push_bad_names_every_problem_and_sends_nothing(board, tmp_path):
    port, flash = board["port"], board["flash"]
    before = (flash / "config.json").read_bytes() if (flash / "config.json").exists() else None
    bad = tmp_path / "bad.yaml"
    bad.write_text("f_nom_hz: 55\nv_nom_ln_rms: 999\nbogus_key: 1\ni_max_pu: high\n")
    r = v2g("config", "push", bad, "--port", port)
    assert r.returncode == 2
    err = r.stderr
    assert "bad.yaml line 2: key 'v_nom_ln_rms': value 999 outside 100.0..400.0 V" in err
    assert "bad.yaml line 3: unknown key 'bogus_key'" in err
    assert "bad.yaml line 4: key 'i_max_pu': value 'high' is not a number" in err
    assert "f_nom_hz" in err and "55" in err
    assert "nothing was sent" in err
    after = (flash / "config.json").read_bytes() if (flash / "config.json").exists() else None
    assert after == before
    notyaml = tmp_path / "broken.yaml"
    notyaml.write_text("f_nom_hz: [50\n")
    r = v2g("config", "push", notyaml, "--port", port)
    assert r.returncode == 2 and "not valid YAML" in r.stderr
    r = v2g("config", "push", tmp_path / "missing.conf", "--port", port)
    assert r.returncode == 2 and "missing.conf: no such file" in r.stderr


def test_board_side_rejection_restores_previous(board, tmp_path):
    """The flashed firmware's table may differ from this checkout's: the board's own
    validation has the last word, and a rejected file is rolled back."""
    port, flash = board["port"], board["flash"]
    previous = b'{"f_nom_hz": 50}'
    (flash / "config.json").write_bytes(previous)
    # the board's firmware allows at most 100 s where this checkout allows 600 s
    src = (flash / "params.py").read_text()
    narrowed, n = re.subn(r'("enter_service_delay_s", "s", )([0-9.]+), ([0-9.]+), ([0-9.]+)',
                          r"\g<1>\g<2>, 100.0, 30.0", src)
    assert n == 1, "firmware/params.py: enter_service_delay_s row not found"
    (flash / "params.py").write_text(narrowed)
    mark_boot(port)
    with BoardLink(port) as link:
        link.soft_reset()
    wait_restart(port)
    cfg = tmp_path / "long-delay.yaml"
    cfg.write_text("enter_service_delay_s: 250\n")
    r = v2g("config", "push", cfg, "--port", port)
    assert r.returncode == 2
    assert "the board rejected it" in r.stderr
    assert "enter_service_delay_s" in r.stderr and "0.0..100.0" in r.stderr
    assert "previous config.json was restored" in r.stderr
    assert (flash / "config.json").read_bytes() == previous


def test_config_that_does_not_fit_the_board_is_refused(board, tmp_path):
    """p_rated_w 7400 validates against the table, but on this board's current sensors it
    would put the ADC range beyond +/-4 pu: the board refuses it, the old file stays."""
    port, flash = board["port"], board["flash"]
    before = (flash / "config.json").read_bytes() if (flash / "config.json").exists() else None
    small = tmp_path / "small.yaml"
    small.write_text("p_rated_w: 7400\n")
    r = v2g("config", "push", small, "--port", port)
    assert r.returncode == 2
    assert "does not fit board 'sim'" in r.stderr and "outside +/-4 pu" in r.stderr
    after = (flash / "config.json").read_bytes() if (flash / "config.json").exists() else None
    assert after == before


def test_push_thermal_conf(board, tmp_path):
    """thermal.conf (YAML, th_* and fan_* keys) is validated like the device config and
    stored beside it; the board boots on the two together."""
    port, flash = board["port"], board["flash"]
    good = tmp_path / "thermal.conf"
    good.write_text("th_derate_start_c: 70\nfan_t1_c: 35\n")
    r = v2g("config", "push", good, "--port", port)
    assert r.returncode == 0, r.stderr
    assert json.loads((flash / "thermal.json").read_text()) == {"th_derate_start_c": 70,
                                                                "fan_t1_c": 35}
    bad = tmp_path / "bad.conf"
    bad.write_text("th_derate_start_c: 90\nth_derated_c: 85\n")
    r = v2g("config", "push", bad, "--port", port)
    assert r.returncode == 2 and "th_derate_start_c" in r.stderr
    mixed = tmp_path / "mixed.conf"
    mixed.write_text("i_max_pu: 0.9\n")
    r = v2g("config", "push", mixed, "--port", port)
    assert r.returncode == 2 and "only th_* and fan_* keys" in r.stderr
    assert json.loads((flash / "thermal.json").read_text()) == {"th_derate_start_c": 70,
                                                                "fan_t1_c": 35}
