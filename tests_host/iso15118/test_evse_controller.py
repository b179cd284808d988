"""The product's EVSE controller (``v2g.gateway.iso15118_secc``) and the mapping
(``v2g.gateway.session``) against the firmware stand-in, without a network: the EV's
limits reach the firmware when they change, the CSMS's setpoint becomes the EV's target
power and an idempotent firmware setpoint, the tightest limit wins, the SoC floor holds,
bad input is refused by name, and iso15118 0.31.2's gaps are handled.
"""

import asyncio
import logging

import pytest

pytest.importorskip("iso15118")

from iso15118.shared.messages.enums import ControlMode, Protocol, ServiceV20  # noqa: E402
from iso15118.shared.messages.iso15118_20.ac import (  # noqa: E402
    ACChargeLoopReq,
    BPTDynamicACChargeLoopReqParams,
)
from iso15118.shared.messages.iso15118_20.common_types import (  # noqa: E402
    DisplayParameters,
    MessageHeader,
    RationalNumber,
)
from v2g.gateway.firmware_model import FirmwareModel  # noqa: E402
from v2g.gateway.iso15118_secc import ProductEVSEController, SeccSettings  # noqa: E402
from v2g.gateway.session import SessionMapping  # noqa: E402

R = RationalNumber.get_rational_repr


def _setup(**settings):
    fw = FirmwareModel(rated_w=11000).start()
    mapping = SessionMapping(fw, rated_w=11000, retry_s=0.01, timeout_s=0.2)
    mapping.start()
    ctl = ProductEVSEController(mapping, SeccSettings(**settings))
    ctl.set_selected_protocol(Protocol.ISO_15118_20_AC)
    return fw, mapping, ctl


def _ac_loop_req(max_c, max_d, soc, min_soc=20):
    params = BPTDynamicACChargeLoopReqParams(
        ev_target_energy_request=R(40000), ev_max_energy_request=R(60000),
        ev_min_energy_request=R(-20000), ev_max_charge_power=R(max_c),
        ev_min_charge_power=R(0), ev_present_active_power=R(0), ev_present_reactive_power=R(0),
        ev_max_discharge_power=R(max_d), ev_min_discharge_power=R(0))
    return ACChargeLoopReq(
        header=MessageHeader(session_id="00" * 8, timestamp=0),
        display_parameters=DisplayParameters(present_soc=soc, min_soc=min_soc,
                                             charging_complete=False),
        meter_info_requested=False, bpt_dynamic_params=params)


async def _loop(ctl, req):
    ctl.ev_data_context.update_ac_charge_loop_v20(req, ServiceV20.AC_BPT, ControlMode.DYNAMIC)
    res = await ctl.get_ac_charge_loop_params_v20(ControlMode.DYNAMIC, ServiceV20.AC_BPT)
    await asyncio.sleep(0.05)  # the pusher task sends to the firmware meanwhile
    return res.evse_target_active_power.get_decimal_value()


def test_csms_setpoint_becomes_ev_target_and_firmware_setpoint():
    async def main():
        fw, mapping, ctl = _setup()
        await ctl.set_hlc_charging(True)  # PowerDelivery START: SESSION start
        mapping.update_csms(setpoint_w=-7000)
        t1 = await _loop(ctl, _ac_loop_req(11000, 9000, soc=60))
        t2 = await _loop(ctl, _ac_loop_req(11000, 9000, soc=59))  # same target again
        # the SoC of the AC loop is kept (0.31.2 drops it)
        assert ctl.ev_data_context.present_soc == 59 and mapping.ev["soc"] == 59
        await asyncio.sleep(0.2)
        assert fw.contactor == 2 and abs(fw.p_w + 7000) < 1
        # the EV's limit is tighter than the CSMS's setpoint: -5000
        t3 = await _loop(ctl, _ac_loop_req(11000, 5000, soc=58))
        # the CSMS lowers its discharge limit below that: -3000
        mapping.update_csms(discharge_limit_w=3000)
        t4 = await _loop(ctl, _ac_loop_req(11000, 5000, soc=58))
        # at the SoC floor: no discharge at all, and the firmware's EV limit says so
        t5 = await _loop(ctl, _ac_loop_req(11000, 5000, soc=20))
        await ctl.stop_charger()
        await asyncio.sleep(0.1)
        await mapping.stop()
        await fw.close()
        return fw, mapping, ctl, [t1, t2, t3, t4, t5]

    fw, mapping, ctl, targets = asyncio.run(main())
    assert targets == [-7000, -7000, -5000, -3000, 0]
    assert ctl.ev_targets == targets
    setpoints = [a for a in fw.applied if a[0] == "setpoint"]
    # one firmware setpoint per distinct target, never the same value twice
    assert [a[2] for a in setpoints] == [-7000, -5000, -3000, 0]
    assert len({a[1] for a in setpoints}) == len(setpoints)
    ev_limits = [a for a in fw.applied if a[0] == "ev_limits"]
    assert ev_limits[0] == ("ev_limits", 11000, 9000, 200)
    assert ev_limits[-1] == ("ev_limits", 11000, 0, 200)  # floor reached: no discharge
    assert fw.applied[0] == ("session", 1, 1) and fw.applied[-1] == ("session", 0, 1)
    assert fw.contactor in (1, 4) and fw.p_w == 0
    assert fw.export_mwh > 0


def test_bad_limits_are_refused_by_name_and_last_good_kept(caplog):
    async def main():
        fw, mapping, ctl = _setup()
        await ctl.set_hlc_charging(True)
        mapping.update_csms(setpoint_w=-7000)
        await _loop(ctl, _ac_loop_req(11000, 9000, soc=60))
        with caplog.at_level(logging.WARNING):
            assert not mapping.update_csms(setpoint_w=float("nan"))
            assert not mapping.update_csms(discharge_limit_w=-5)
            assert not mapping.update_ev(max_discharge_w=5e9)
            assert not mapping.update_ev(soc=140)
            assert not mapping.update_ev(bogus=1)
        t = await _loop(ctl, _ac_loop_req(11000, 9000, soc=60))
        await mapping.stop()
        await fw.close()
        return fw, mapping, t

    fw, mapping, t = asyncio.run(main())
    assert t == -7000 and mapping.refused == 5
    text = caplog.text
    for field in ("CSMS setpoint", "CSMS discharge_limit_w", "EV max_discharge_w", "EV soc",
                  "EV bogus"):
        assert "REFUSED " + field in text, field
    assert fw.ev == (11000, 9000, 200)


def test_unknown_config_key_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown key.*rated_kw"):
        SeccSettings(rated_kw=11)
    with pytest.raises(ValueError, match="control_mode"):
        SeccSettings(control_mode="fast")


def test_dc_loop_bpt_flag_passed_as_precharge_is_not_a_precharge():
    async def main():
        fw, mapping, ctl = _setup()
        ctl.set_selected_protocol(Protocol.ISO_15118_20_DC)
        ev = ctl.ev_data_context
        ev.session_limits.dc_limits.max_charge_power = 10000
        ev.session_limits.dc_limits.max_discharge_power = 8000
        mapping.update_csms(setpoint_w=-7000)
        # a real pre-charge (before PowerDelivery START) sets the DC-link voltage
        await ctl.send_charging_command(400, 0, is_precharge=True)
        v = await ctl.get_evse_present_voltage(Protocol.ISO_15118_20_DC)
        await ctl.set_hlc_charging(True)
        # 0.31.2's DC loop: send_charging_command(v, i, is_session_bpt) positionally
        await ctl.send_charging_command(None, None, True)
        params = await ctl.get_dc_charge_loop_params_v20(ControlMode.SCHEDULED,
                                                         ServiceV20.DC_BPT)
        await asyncio.sleep(0.2)
        await mapping.stop()
        await fw.close()
        return fw, ctl, v, params

    fw, ctl, v, params = asyncio.run(main())
    assert v.get_decimal_value() == 400
    assert ctl.ev_targets == [-7000]  # handled as a charge-loop command, not a pre-charge
    assert params.evse_max_discharge_power.get_decimal_value() == 8000
    assert abs(fw.p_w + 7000) < 1


def test_charge_loop_never_waits_on_the_firmware():
    """The firmware does not answer (timeouts): the charge loop still answers at once,
    and the setpoint is sent again with the same id until it is taken."""
    async def main():
        fw, mapping, ctl = _setup()
        lim = ctl.ev_data_context.session_limits.ac_limits
        lim.max_charge_power, lim.max_discharge_power = 11000, 9000
        ctl.sync_ev()
        mapping.active = True
        await asyncio.sleep(0.1)
        fw.fail_next = 3
        mapping.update_csms(setpoint_w=-7000)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await ctl.get_ac_charge_loop_params_v20(ControlMode.DYNAMIC, ServiceV20.AC_BPT)
        dt = loop.time() - t0
        await asyncio.sleep(1.0)
        await mapping.stop()
        await fw.close()
        return fw, mapping, dt

    fw, mapping, dt = asyncio.run(main())
    assert dt < 0.05
    sp = [c for c in mapping.commands if c[0] == "setpoint"]
    assert sp[0][1][1] == 11000  # before the CSMS spoke: charge at the EV's maximum
    last = [c for c in sp if c[1][1] == -7000]
    assert len(last) == 4 and len({c[1][0] for c in last}) == 1  # resent, same id
    assert [a[2] for a in fw.applied if a[0] == "setpoint"] == [11000, -7000]


def test_certificate_installation_is_refused():
    async def main():
        _, _, ctl = _setup()
        with pytest.raises(NotImplementedError):
            await ctl.get_15118_ev_certificate("", "urn:iso:std:iso:15118:-20:CommonMessages")

    asyncio.run(main())
