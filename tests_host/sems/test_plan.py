"""Table tests of the site plan (v2g.backend.sems_plan): limits, shares, ramps, headroom,
stale readings (fail safe), deadband. Pure functions, no broker."""

import pytest
from v2g.backend.sems_plan import Station, make_plan, site_limits, water_fill


def ev(soc=800, floor=200, cap=50000, dis=10000, chg=10000):
    return {"soc_pm": soc, "soc_min_pm": floor, "soc_max_pm": 1000, "capacity_wh": cap,
            "max_discharge_w": dis, "max_charge_w": chg}


def st(i, p=0.0, age=0.5, e=None, sp=0.0, mx=11000, ramp=1e9):
    return Station(id=i, max_export_w=mx, max_import_w=mx, ramp_w_s=ramp, p_w=p, age_s=age,
                   ev=ev() if e is None else e, sp_w=sp)


@pytest.mark.parametrize("args,demand,expect", [
    ((100e3, 80e3, 90e3), None, (80e3, 90e3, "import")),
    ((100e3, 120e3, 150e3), None, (100e3, 100e3, "import")),
    ((100e3, 80e3, 90e3), {"export_w": 50e3}, (50e3, 90e3, "export")),
    ((100e3, 80e3, 90e3), {"export_w": 500e3}, (80e3, 90e3, "export")),
    ((100e3, 80e3, 90e3), {"import_w": 10e3}, (80e3, 10e3, "import")),
])
def test_site_limits(args, demand, expect):
    assert site_limits(*args, demand=demand) == expect


@pytest.mark.parametrize("weights,caps,total,expect", [
    ({"a": 1, "b": 1}, {"a": 10, "b": 10}, 10, {"a": 5, "b": 5}),
    ({"a": 3, "b": 1}, {"a": 10, "b": 10}, 8, {"a": 6, "b": 2}),
    ({"a": 3, "b": 1}, {"a": 4, "b": 10}, 8, {"a": 4, "b": 4}),      # a capped, rest to b
    ({"a": 1, "b": 1}, {"a": 3, "b": 3}, 100, {"a": 3, "b": 3}),     # not enough capacity
    ({"a": 0, "b": 1}, {"a": 3, "b": 3}, 2, {"a": 0, "b": 2}),       # no weight, no share
    ({"a": 1, "b": 1}, {"a": 3, "b": 3}, 0, {"a": 0, "b": 0}),
])
def test_water_fill(weights, caps, total, expect):
    out = water_fill(weights, caps, total)
    assert out == pytest.approx(expect)


def test_export_proportional_to_energy_above_floor():
    # energy above floor: a 600 pm of 50 kWh = 30 kWh, b 300 pm = 15 kWh -> 2:1
    sts = [st("a", e=ev(soc=800)), st("b", e=ev(soc=500))]
    p = make_plan(sts, 9000, 0, "export", 1.0)
    assert p.setpoints == {"a": -6000, "b": -3000}
    assert set(p.changed) == {"a", "b"}


def test_import_by_need():
    sts = [st("a", e=ev(soc=900)), st("b", e=ev(soc=700))]   # need 100 vs 300 pm
    p = make_plan(sts, 0, 8000, "import", 1.0)
    assert p.setpoints == {"a": 2000, "b": 6000}


@pytest.mark.parametrize("case,sts,limit,expect", [
    ("below floor gets nothing", [st("a", e=ev(soc=200)), st("b")], 5000, {"a": 0, "b": -5000}),
    ("no EV gets nothing", [st("a", e={}), st("b")], 5000, {"a": 0, "b": -5000}),
    ("EV limit caps", [st("a", e=ev(dis=1000)), st("b")], 5000, {"a": -1000, "b": -4000}),
    ("station rating caps", [st("a", mx=2000), st("b", mx=2000)], 9000,
     {"a": -2000, "b": -2000}),
    ("idle limit 0", [st("a", sp=-3000, p=-3000)], 0, {"a": 0}),
])
def test_export_caps(case, sts, limit, expect):
    assert make_plan(sts, limit, 0, "export", 1.0).setpoints == expect, case


@pytest.mark.parametrize("case,sts,expect", [
    # stale b (age > stale_s) holding -4000: commanded 0, reserved 4000; a gets only the rest
    ("stale reserved", [st("a", sp=-3000, p=-3000), st("b", age=9, sp=-4000, p=-4000)],
     {"a": -4000, "b": 0}),
    # never reported: reserved at its command
    ("never reported", [st("a", sp=0, p=0), st("b", age=None, p=None, sp=-5000)],
     {"a": -3000, "b": 0}),
    # every reading stale: no headroom, nothing increases, everything to 0
    ("all stale", [st("a", age=9, sp=-1000, p=-1000), st("b", age=9, sp=-1000, p=-1000)],
     {"a": 0, "b": 0}),
])
def test_stale_is_no_headroom(case, sts, expect):
    p = make_plan(sts, 8000, 0, "export", 1.0, stale_s=3.0)
    assert p.setpoints == expect, case


def test_only_increases_capped_to_headroom():
    # b was told to drop but still measures -6000: a may not rise into that power yet
    sts = [st("a", sp=-1000, p=-1000, e=ev(soc=800)), st("b", sp=-6000, p=-6000, e=ev(soc=200))]
    p = make_plan(sts, 7000, 0, "export", 1.0)
    assert p.setpoints["b"] == 0           # the decrease is sent at once
    assert p.setpoints["a"] == -1000       # measured 7000 used: no headroom yet
    sts[1].sp_w, sts[1].p_w = 0, 0         # next period: b has followed
    p = make_plan(sts, 7000, 0, "export", 1.0)
    assert p.setpoints["a"] == -7000


@pytest.mark.parametrize("ramp,site_ramp,expect", [
    (1000, 1e9, {"a": -1000, "b": -1000}),          # station ramp 1 kW/s
    (1e9, 3000, {"a": -3000, "b": 0}),              # site ramp: whole steps, in turn
    (1e9, 1e9, {"a": -5000, "b": -5000}),
])
def test_ramps(ramp, site_ramp, expect):
    sts = [st("a", ramp=ramp), st("b", ramp=ramp)]
    assert make_plan(sts, 10000, 0, "export", 1.0, site_ramp_w_s=site_ramp).setpoints == expect


def test_decrease_not_ramp_limited_and_limit_step_down():
    sts = [st("a", sp=-5000, p=-5000, ramp=10), st("b", sp=-5000, p=-5000, ramp=10)]
    p = make_plan(sts, 4000, 0, "export", 1.0, site_ramp_w_s=10)
    assert p.setpoints == {"a": -2000, "b": -2000}


def test_deadband_keeps_small_changes_but_never_exceeds_budget():
    sts = [st("a", sp=-5020, p=-5020), st("b", sp=-4970, p=-4970)]
    p = make_plan(sts, 10000, 0, "export", 1.0, deadband_w=50)
    assert p.changed == [] and p.setpoints == {"a": -5020, "b": -4970}
    p = make_plan(sts, 9990, 0, "export", 1.0, deadband_w=50)
    assert sum(-v for v in p.setpoints.values()) <= 9990


def test_import_command_reverses_through_zero():
    sts = [st("a", sp=4000, p=4000)]
    p = make_plan(sts, 5000, 0, "export", 1.0)
    assert p.setpoints["a"] == -5000
