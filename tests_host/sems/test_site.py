"""Bad input: the site file (clear errors naming key and value) and telemetry (dropped,
naming station and field), plus the station's hold/fallback policy. Table tests."""

import json

import pytest
from v2g.backend.sems_site import SiteError, TelemetryError, parse_site, parse_telemetry
from v2g.gateway.sems_hold import HoldPolicy

LIM = {"transformer_w": 1e5, "grid_export_w": 8e4, "grid_import_w": 9e4}


def site(**kw):
    d = {"site": "s", "limits": dict(LIM), "stations": [{"id": "ST-1"}, {"id": "ST-2"}]}
    d.update(kw)
    return d


def test_good_site_fills_defaults():
    s = parse_site(site(generate={"count": 3, "prefix": "G-"}))
    assert set(s["stations"]) == {"ST-1", "ST-2", "G-0001", "G-0002", "G-0003"}
    assert s["hold_s"] == 5.0 and s["safe_export_w"] == 0.0
    assert s["stations"]["ST-1"]["ev"] is None


@pytest.mark.parametrize("data,words", [
    (site(limits=dict(LIM, grid_export_w=-1)), ["limits.grid_export_w", "-1"]),
    (site(limits={"transformer_w": 1}), ["limits.grid_export_w", "required"]),
    (site(stations=[{"id": "ST-1"}, {"id": "ST-1"}]), ["ST-1", "duplicate"]),
    (site(stations=[{"id": "_bad"}]), ["id", "_bad"]),
    (site(stations=[{"id": "ST-1", "max_export_w": -5}]), ["max_export_w", "-5"]),
    (site(stations=[{"id": "ST-1", "ev": {"soc_pm": 1200}}]), ["ev.soc_pm", "1200"]),
    (site(events=[{"t_s": 1, "depart": "ST-9"}]), ["ST-9", "unknown station"]),
    (site(events=[{"t_s": 1, "demand": {"export_w": -3}}]), ["demand.export_w", "-3"]),
    (site(events=[{"t_s": 1, "kill_sems": "some"}]), ["kill_sems", "some"]),
    (site(hold_s=-1), ["hold_s", "-1"]),
    (site(period_s=0), ["period_s", "> 0"]),
    (site(colour="red"), ["unknown key", "colour"]),
    (site(stations=[], generate={"count": 0}), ["at least one station"]),
])
def test_bad_site(data, words):
    with pytest.raises(SiteError) as e:
        parse_site(data, "site.yaml")
    msg = str(e.value)
    assert msg.startswith("site.yaml"), msg
    for w in words:
        assert w in msg, (w, msg)


STATIONS = parse_site(site())["stations"]
GOOD = {"station": "ST-1", "seq": 3, "t": 1.7e9, "p_w": -5000.0,
        "ev": {"soc_pm": 700, "soc_min_pm": 200, "capacity_wh": 60000, "max_charge_w": 11000,
               "max_discharge_w": 11000}}


def tel(**kw):
    d = json.loads(json.dumps(GOOD))
    for k, v in kw.items():
        if k.startswith("ev_"):
            d["ev"][k[3:]] = v
        else:
            d[k] = v
    return json.dumps(d).encode()


def test_good_telemetry():
    sid, r = parse_telemetry("v2g/ST-1/telemetry", tel(), STATIONS)
    assert sid == "ST-1" and r["p_w"] == -5000.0 and r["ev"]["soc_max_pm"] == 1000.0


@pytest.mark.parametrize("topic,payload,station,field", [
    ("v2g/ST-9/telemetry", tel(station="ST-9"), "ST-9", "station"),      # unknown station
    ("v2g/ST-1/telemetry", b"{not json", "ST-1", "payload"),
    ("v2g/ST-1/telemetry", b"[1, 2]", "ST-1", "payload"),
    ("v2g/ST-1/telemetry", tel(station="ST-2"), "ST-1", "station"),      # topic mismatch
    ("v2g/ST-1/telemetry", tel(seq=-1), "ST-1", "seq"),
    ("v2g/ST-1/telemetry", tel(p_w="5"), "ST-1", "p_w"),
    ("v2g/ST-1/telemetry", tel(p_w=True), "ST-1", "p_w"),
    ("v2g/ST-1/telemetry", tel(p_w=-1e6), "ST-1", "p_w"),                # beyond rating
    ("v2g/ST-1/telemetry", tel(ev_soc_pm=1001), "ST-1", "ev.soc_pm"),
    ("v2g/ST-1/telemetry", tel(ev_capacity_wh=0), "ST-1", "ev.capacity_wh"),
    ("v2g/ST-1/telemetry", tel(ev_max_discharge_w=-1), "ST-1", "ev.max_discharge_w"),
    ("v2g/ST-1/telemetry", tel(ev=[1]), "ST-1", "ev"),
])
def test_bad_telemetry_is_dropped_naming_station_and_field(topic, payload, station, field):
    with pytest.raises(TelemetryError) as e:
        parse_telemetry(topic, payload, STATIONS)
    assert (e.value.station, e.value.field) == (station, field)
    assert station in str(e.value) and field in str(e.value)


@pytest.mark.parametrize("policy,sp,hb,now,expect", [
    (HoldPolicy(5.0), -7000, 100.0, 104.9, (-7000, "sems")),        # within the hold
    (HoldPolicy(5.0), -7000, 100.0, 105.1, (0, "fallback")),        # zero export by default
    (HoldPolicy(5.0), 3000, 100.0, 105.1, (0, "fallback")),
    (HoldPolicy(5.0, safe_export_w=2000), -7000, 100.0, 106, (-2000, "fallback")),
    (HoldPolicy(5.0, safe_import_w=4000), 3000, 100.0, 106, (3000, "fallback")),
    (HoldPolicy(5.0), -7000, None, 0.0, (0, "fallback")),           # never heard a SEMS
])
def test_hold_then_safe_local_limit(policy, sp, hb, now, expect):
    assert policy.effective(sp, hb, now) == expect


@pytest.mark.parametrize("kw", [{"hold_s": -1}, {"safe_export_w": -1}, {"hold_s": "5"}])
def test_hold_policy_rejects_bad_values(kw):
    with pytest.raises(ValueError):
        HoldPolicy(**kw)
