"""IEEE 1547-2018 trip timers, ride-through regions and volt-watt (``grid_protect``),
and the settings' validation in the parameter table."""

import pytest

import grid_protect
import params


def _gp(**cfg):
    held, errors = params.validate(cfg)
    assert errors == []
    return grid_protect.GridProtect(held, 10), held


def _run(gp, v_min, v_max, f, t_end_ms, t0=0, period=10):
    for t in range(t0, t_end_ms + 1, period):
        r = gp.step(t, v_min, v_max, f)
        if r:
            return t, r
    return None


@pytest.mark.parametrize("f_nom", [50, 60])
def test_trip_times_clear_one_cycle_before_the_setting(f_nom):
    gp, held = _gp(f_nom_hz=f_nom)
    cycle_ms = 1000.0 / f_nom
    cases = [(1.25, 1.25, f_nom, "OV2", 160), (1.15, 1.15, f_nom, "OV1", 2000),
             (0.6, 0.6, f_nom, "UV1", 10000), (0.4, 0.4, f_nom, "UV2", 160),
             (1.0, 1.0, f_nom + 2.5, "OF2", 160), (1.0, 1.0, f_nom + 1.5, "OF1", 300000),
             (1.0, 1.0, f_nom - 2.0, "UF1", 300000), (1.0, 1.0, f_nom - 4.0, "UF2", 160)]
    for v_min, v_max, f, name, clearing in cases:
        gp.reset()
        t, (got, detail) = _run(gp, v_min, v_max, f, clearing + 1000)
        assert got == name, (name, got)
        # + half a cycle of window delay and a supervisor period: still a cycle early
        assert t + cycle_ms // 2 + 10 <= clearing - cycle_ms, (name, t)
        assert t >= clearing - gp.margin_ms - 10


def test_excursion_shorter_than_the_hold_does_not_trip():
    gp, _ = _gp()
    assert _run(gp, 1.25, 1.25, 60, 100) is None  # 0.1 s above OV2
    assert _run(gp, 1.0, 1.0, 60, 5000, t0=110) is None  # back to normal: timer reset
    assert gp.since == {}


def test_unlocked_pll_freezes_frequency_timers():
    gp, _ = _gp()
    for t in range(0, 2000, 10):
        assert gp.step(t, 1.0, 1.0, 70.0, f_valid=False) is None


@pytest.mark.parametrize("cat,v,region", [
    (1, 0.45, "cease"), (1, 0.60, "permissive"), (1, 0.80, "mandatory"),
    (2, 0.25, "cease"), (2, 0.40, "permissive"), (2, 0.65, "mandatory"),
    (2, 0.88, "continuous"), (2, 1.10, "continuous"), (2, 1.15, "permissive"),
    (2, 1.20, "permissive"), (2, 1.21, "cease"),
    (3, 0.45, "momentary"), (3, 0.50, "mandatory"), (3, 1.15, "momentary"),
])
def test_ride_through_regions(cat, v, region):
    assert grid_protect.region(cat, v, v) == region
    # the worst phase decides
    assert grid_protect.region(cat, v, 1.0) == region


def test_volt_watt_curve():
    gp, _ = _gp()
    assert gp.export_limit_pu(1.00) == 1.0
    assert gp.export_limit_pu(1.06) == 1.0
    assert abs(gp.export_limit_pu(1.08) - 0.6) < 1e-9
    assert abs(gp.export_limit_pu(1.10) - 0.2) < 1e-9
    assert abs(gp.export_limit_pu(1.15) - 0.2) < 1e-9
    gp, _ = _gp(vw_enable=0)
    assert gp.export_limit_pu(1.15) == 1.0


def test_category_defaults_and_ranges():
    held, errors = params.validate({"abnormal_category": 3})
    assert errors == [] and held["uv1_pu"] == 88 and held["uv1_s"] == 2100
    held, errors = params.validate({"abnormal_category": 3, "uv1_s": 10})
    assert errors == ["key 'uv1_s': value 10.00 outside 21.00..50.00 s for category III"]
    _, errors = params.validate({"ov1_pu": 1.25})
    assert "ov1_pu" in errors[0] and "1.10..1.20 pu" in errors[0]
    _, errors = params.validate({"uv2_pu": 0.5, "uv1_pu": 0.4})
    assert "UV2 must be the deeper" in errors[0]
    _, errors = params.validate({"uv1_s": -1})
    assert "uv1_s" in errors[0]
