"""The daemon's session meter (``v2g.gateway.meter``): the firmware's own counters to the
mWh (whole Wh + the sub-Wh field of link version 5), and the end of a session only once the
firmware has stopped integrating (the OCPP TransactionEvent Ended waits for that image)."""

from v2g.gateway.meter import Meter, counters_mwh

ENERGIZED, IDLE = 4, 1


def _img(t_ms, export_mwh, p_w, state=ENERGIZED, import_mwh=0):
    return {"t_ms": t_ms, "energy_export_wh": export_mwh // 1000,
            "energy_export_sub_mwh": export_mwh % 1000,
            "energy_import_wh": import_mwh // 1000, "energy_import_sub_mwh": import_mwh % 1000,
            "p_meas_w": p_w, "state": state}


def test_counters_compose_whole_wh_and_the_sub_wh_field():
    assert counters_mwh(_img(0, 123456, 0, import_mwh=999)) == (999, 123456)
    assert counters_mwh({}) == (0, 0)


def test_session_energy_is_the_counters_difference_to_the_mwh():
    m = Meter()
    m.start(_img(0, 100_700, 0, IDLE))
    assert m.settled()
    for t in range(100, 2600, 100):  # 3600 W export: 100 mWh per image
        m.feed(_img(t, 100_700 + t, -3600))
        assert not m.settled()
    # out of ENERGIZED, the measured power still decaying: not final yet
    m.feed(_img(2600, 103_310, -900, IDLE))
    assert not m.settled()
    m.feed(_img(2610, 103_312, -10, IDLE))
    assert m.settled()
    assert m.energy_mwh() == (0, 2612)
    assert "export 2612 mWh" in m.describe()


def test_import_and_export_apart():
    m = Meter()
    m.start(_img(0, 5000, 0, IDLE, import_mwh=7000))
    m.feed(_img(100, 5000, 2000, import_mwh=7055))
    assert m.energy_mwh() == (55, 0)


def test_not_settled_before_any_image():
    m = Meter()
    assert not m.settled()
    m.start({})
    assert not m.settled()
    assert m.energy_mwh() == (0, 0)
    m.feed(_img(0, 4000, 0, IDLE))  # the first image is the start
    m.feed(_img(10, 4020, -7000))
    assert m.energy_mwh() == (0, 20)
