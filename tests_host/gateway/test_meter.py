"""The daemon's session meter (``v2g.gateway.meter``): whole-Wh firmware counters plus the
integrated sub-Wh ends, and the end of a session only once the firmware has stopped
integrating (the OCPP TransactionEvent Ended waits for that image)."""

from v2g.gateway.meter import Meter

ENERGIZED, IDLE = 4, 1


def _img(t_ms, export_wh, p_w, state=ENERGIZED):
    return {"t_ms": t_ms, "energy_export_wh": export_wh, "energy_import_wh": 0,
            "p_meas_w": p_w, "state": state}


def test_counter_plus_integrated_ends():
    m = Meter()
    m.start(_img(0, 100, 0, IDLE))
    m.feed(_img(0, 100, 0, IDLE))
    assert m.settled()
    # 3600 W export for 2.5 s = 2.5 Wh; the counter steps at 1 s and 2 s of it
    wh, t = 100, 0
    m.feed(_img(t, wh, -3600))
    for t in range(100, 2600, 100):
        wh = 100 + t // 1000
        m.feed(_img(t, wh, -3600))
        assert not m.settled()
    m.feed(_img(2600, wh, 0, IDLE))
    assert m.settled()
    imp, exp = m.energy_mwh()
    assert imp == 0.0
    assert abs(exp - 2500.0) <= 100.0, exp  # one image period of the integrated ends
    # once settled nothing grows any more
    m.feed(_img(3600, wh, 0, IDLE))
    assert m.energy_mwh()[1] == exp


def test_not_settled_before_any_image():
    m = Meter()
    assert not m.settled()
    m.start({})
    assert not m.settled()
