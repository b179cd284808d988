"""The daemon's OCPP client against the test CSMS (both from the ``ocpp`` package) on
loopback: 2.1 with V2X (SetChargingProfile setpoint -> firmware setpoint and the EV's
target), 2.0.1 fallback (negative limit = discharge), TransactionEvent Ended carrying the
firmware's metered export, messages queued while the CSMS is away and delivered once,
malformed profiles refused by field.
"""

import asyncio
import itertools
import socket

import pytest

pytest.importorskip("ocpp")

from v2g.gateway import csms  # noqa: E402
from v2g.gateway.firmware_model import FirmwareModel  # noqa: E402
from v2g.gateway.iso15118_secc import ProductEVSEController  # noqa: E402
from v2g.gateway.ocpp_client import OcppSettings, StationOcpp, parse_profile  # noqa: E402
from v2g.gateway.session import SessionMapping  # noqa: E402


def _port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


async def _session(versions, csms_late=False, seconds=1.5):
    port = _port()
    rec = csms.Record()
    server = None if csms_late else await csms.serve(port, versions, -7000, rec)
    fw = FirmwareModel(rated_w=11000, record_s=0.5).start()
    mapping = SessionMapping(fw, rated_w=11000)
    mapping.start()
    ctl = ProductEVSEController(mapping)
    ids = itertools.count(1)
    st = StationOcpp(OcppSettings(url="ws://127.0.0.1:%d" % port, reconnect_s=0.2,
                                  meter_interval_s=0.5), mapping, ctl, fw,
                     id_gen=lambda: "m%d" % next(ids))
    await st.start()

    async def drain():
        while True:
            r = await fw.records.get()
            st.energy_record(r)
            await fw.energy_ack(r["record_no"])
    dr = asyncio.ensure_future(drain())
    ev = ctl.ev_data_context
    ev.session_limits.ac_limits.max_charge_power = 11000
    ev.session_limits.ac_limits.max_discharge_power = 9000
    ev.present_soc, ev.min_soc = 60, 20
    await ctl.set_hlc_charging(True)  # PowerDelivery START
    if csms_late:
        await asyncio.sleep(0.8)  # messages queue while the CSMS is away
        server = await csms.serve(port, versions, -7000, rec)
    for _ in range(100):
        if mapping.csms["setpoint_w"] is not None:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)
    target = mapping.target_w()
    p_plant = fw.p_w
    await asyncio.sleep(seconds)
    await ctl.stop_charger()  # the EV ends the session
    await asyncio.sleep(0.5)
    await st.stop()
    dr.cancel()
    await mapping.stop()
    await fw.close()
    server.close()
    return rec, st, fw, target, p_plant


@pytest.mark.parametrize("version", ["2.1", "2.0.1"])
def test_v2x_setpoint_and_transaction_energy(version):
    rec, st, fw, target, p_plant = asyncio.run(_session([version]))
    assert st.version == version and rec.versions == [version]
    assert rec.profiles == [{"setpoint_w": -7000, "status": "Accepted"}]
    assert target == -7000 and abs(p_plant + 7000) < 1
    actions = [m[0] for m in rec.messages]
    assert actions[0] == "BootNotification"
    for a in ("StatusNotification", "NotifyEVChargingNeeds", "TransactionEvent"):
        assert a in actions
    (tx,) = rec.transactions.values()
    assert tx["events"][0] == "Started" and tx["events"][-1] == "Ended"
    assert "Updated" in tx["events"]
    metered_wh = fw.export_mwh / 1000.0
    assert metered_wh > 1.0
    assert abs(tx["export_wh"] - metered_wh) <= 0.005 * metered_wh
    needs = [m[1] for m in rec.messages if m[0] == "NotifyEVChargingNeeds"][0]
    if version == "2.1":
        assert needs["v2x_charging_parameters"]["max_discharge_power"] == 9000
    assert rec.duplicates == 0


def test_queued_while_csms_away_delivered_once():
    rec, st, fw, target, p_plant = asyncio.run(_session(["2.1"], csms_late=True))
    assert st.reconnects >= 1
    uids = [u for u, _ in st.sent]
    assert len(uids) == len(set(uids))
    (tx,) = rec.transactions.values()
    seqs = [m[1]["seq_no"] for m in rec.messages if m[0] == "TransactionEvent"]
    assert seqs == list(range(len(seqs)))  # every event once, in order
    assert abs(tx["export_wh"] - fw.export_mwh / 1000.0) <= 0.005 * fw.export_mwh / 1000.0


def test_malformed_profiles_are_refused_by_field():
    ok, why = parse_profile({"charging_schedule": []}, "2.1")
    assert ok is None and "chargingProfile" in why
    ok, why = parse_profile({"charging_schedule": [{"charging_rate_unit": "A",
                                                    "charging_schedule_period": [{}]}]}, "2.1")
    assert ok is None and "chargingRateUnit" in why
    ok, why = parse_profile({"charging_schedule": [{
        "charging_rate_unit": "W",
        "charging_schedule_period": [{"start_period": 0, "setpoint": "lots"}]}]}, "2.1")
    assert ok is None and "setpoint" in why
    ok, why = parse_profile({"charging_schedule": [{
        "charging_rate_unit": "W",
        "charging_schedule_period": [{"start_period": 0, "limit": -5000}]}]}, "2.0.1")
    assert ok == {"setpoint_w": -5000.0} and why is None
