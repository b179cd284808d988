"""The product's EVSE controller for Josev's ISO 15118 SECC (``iso15118`` 0.31.2).

``ProductEVSEController`` subclasses ``EVSEControllerInterface`` (STYLE 17): every query
is async and answers at once from state the daemon already holds; "not ready yet" is a
value (``None`` / a status), never a wait on the back end. It holds no fixed values of
its own: the EVSE's rated and session limits come from the ``SessionMapping`` (the rating
in the daemon's config, derated by the firmware's register image; the CSMS's setpoint and
limits), the contactor state and the meter from the firmware's register image, and every
change of the EV's limits and needs (``EVDataContext``) goes to the firmware through the
mapping (EV_LIMITS, SETPOINT, SESSION over a ``LinkPeer``).

Known gaps of iso15118 0.31.2, handled here (docs/iso15118.md):
- the DC charge loop calls ``send_charging_command(v, i, is_session_bpt)``: the BPT flag
  lands in ``is_precharge``. A pre-charge is only possible before PowerDelivery START, so
  ``is_precharge`` after HLC charging started is read as the BPT flag;
- ``PowerDeliveryReq.BPT_ChannelSelection`` is parsed and dropped by the SECC: the
  direction never comes from it; it comes from the CSMS's setpoint clamped to the EV's
  limits (discharge only up to the EV's max discharge power, 0 at its SoC floor);
- the AC charge loop does not store the EV's SoC: ``ProductEVDataContext`` stores the
  ``DisplayParameters`` of every AC_ChargeLoopReq (present, min, target SoC);
- ``EVSEDataContext()`` and ``EVDataContext()`` share mutable default arguments between
  instances: fresh limit objects are built for every context here;
- certificate installation is not implemented: ``get_15118_ev_certificate`` refuses.
  Plug & Charge works only with a contract certificate installed in the car beforehand.
Context: host (the daemon's event loop).
"""

import asyncio
import logging
import time

from iso15118.secc.controller.ev_data import (
    EVACCLLimits,
    EVACCPDLimits,
    EVDataContext,
    EVDCCLLimits,
    EVDCCPDLimits,
    EVRatedLimits,
    EVSessionLimits,
)
from iso15118.secc.controller.evse_data import (
    CurrentType,
    EVSEACCLLimits,
    EVSEACCPDLimits,
    EVSEDataContext,
    EVSEDCCLLimits,
    EVSEDCCPDLimits,
    EVSERatedLimits,
    EVSESessionLimits,
)
from iso15118.secc.controller.interface import (
    AuthorizationResponse,
    EVSEControllerInterface,
    ServiceStatus,
)
from iso15118.shared.messages.datatypes import (
    DCEVSEChargeParameter,
    DCEVSEStatus,
    DCEVSEStatusCode,
    PVEVSEMaxCurrentLimit,
    PVEVSEMaxPowerLimit,
    PVEVSEMaxVoltageLimit,
    PVEVSEMinCurrentLimit,
    PVEVSEMinVoltageLimit,
    PVEVSEPeakCurrentRipple,
)
from iso15118.shared.messages.datatypes import EVSENotification as EVSENotificationV2
from iso15118.shared.messages.enums import (
    AuthorizationStatus,
    ControlMode,
    CpState,
    EnergyTransferModeEnum,
    IsolationLevel,
    Protocol,
    ServiceV20,
    UnitSymbol,
)
from iso15118.shared.messages.iso15118_2.datatypes import (
    ACEVSEChargeParameter,
    ACEVSEStatus,
    PVEVSEMaxCurrent,
    PVEVSENominalVoltage,
)
from iso15118.shared.messages.iso15118_2.datatypes import MeterInfo as MeterInfoV2
from iso15118.shared.messages.iso15118_2.datatypes import ResponseCode as ResponseCodeV2
from iso15118.shared.messages.iso15118_20.ac import (
    ACChargeParameterDiscoveryResParams,
    BPTACChargeParameterDiscoveryResParams,
)
from iso15118.shared.messages.iso15118_20.common_messages import (
    ChargingSchedule,
    DynamicScheduleExchangeResParams,
    Parameter,
    ParameterSet,
    PowerSchedule,
    PowerScheduleEntry,
    PowerScheduleEntryList,
    PriceLevelSchedule,
    PriceLevelScheduleEntry,
    PriceLevelScheduleEntryList,
    ScheduledScheduleExchangeResParams,
    ScheduleTuple,
    Service,
    ServiceList,
    ServiceParameterList,
)
from iso15118.shared.messages.iso15118_20.common_types import (
    EVSENotification,
    EVSEStatus,
    RationalNumber,
)
from iso15118.shared.messages.iso15118_20.common_types import MeterInfo as MeterInfoV20
from iso15118.shared.messages.iso15118_20.common_types import ResponseCode as ResponseCodeV20
from iso15118.shared.messages.iso15118_20.dc import (
    BPTDCChargeParameterDiscoveryResParams,
    DCChargeParameterDiscoveryResParams,
)

log = logging.getLogger("v2g.gateway.iso15118")

CONTACTOR_OPEN, CONTACTOR_CLOSED = 1, 2
SERVICE_IDS = {ServiceV20.AC: 1, ServiceV20.DC: 2, ServiceV20.AC_BPT: 5, ServiceV20.DC_BPT: 6}


def _num(x):
    """RationalNumber -> float (None stays None)."""
    return None if x is None else float(x.get_decimal_value())


def fresh_ev_context():
    return ProductEVDataContext(
        rated_limits=EVRatedLimits(ac_limits=EVACCPDLimits(), dc_limits=EVDCCPDLimits()),
        session_limits=EVSessionLimits(ac_limits=EVACCLLimits(), dc_limits=EVDCCLLimits()))


def fresh_evse_context():
    return EVSEDataContext(
        rated_limits=EVSERatedLimits(ac_limits=EVSEACCPDLimits(),
                                     dc_limits=EVSEDCCPDLimits()),
        session_limits=EVSESessionLimits(ac_limits=EVSEACCLLimits(),
                                         dc_limits=EVSEDCCLLimits()))


class ProductEVDataContext(EVDataContext):
    """``EVDataContext`` that also keeps the SoC of the AC charge loop (0.31.2 drops it)."""

    def update_ac_charge_loop_v20(self, ac_charge_loop_req, energy_service, control_mode):
        super().update_ac_charge_loop_v20(ac_charge_loop_req, energy_service, control_mode)
        dp = ac_charge_loop_req.display_parameters
        if dp is not None:
            for name in ("present_soc", "min_soc", "target_soc"):
                v = getattr(dp, name, None)
                if v is not None:
                    setattr(self, name, v)


class SeccSettings:
    """The SECC part of the daemon's config (``iso15118:`` section); unknown keys are
    refused with their name."""

    KEYS = {
        "evse_id": "DE*V2G*E0001",
        "rated_w": 11000.0,        # must equal the firmware's p_rated_w
        "nominal_voltage_v": 230.0,
        "dc_max_voltage_v": 920.0,
        "dc_min_voltage_v": 150.0,
        "dc_max_current_a": 32.0,
        "control_mode": "dynamic",  # offered first: "dynamic" or "scheduled"
        "services": ["AC_BPT", "AC", "DC_BPT", "DC"],
        "contactor_wait_s": 1.0,
        "free_charging": False,
    }

    def __init__(self, **kw):
        bad = sorted(set(kw) - set(self.KEYS))
        if bad:
            raise ValueError("iso15118 config: unknown key(s) %s; allowed: %s"
                             % (", ".join(bad), ", ".join(sorted(self.KEYS))))
        for k, v in self.KEYS.items():
            setattr(self, k, kw.get(k, v))
        if self.control_mode not in ("dynamic", "scheduled"):
            raise ValueError("iso15118 config: key 'control_mode': %r, allowed: dynamic, "
                             "scheduled" % (self.control_mode,))
        for s in self.services:
            if s not in ServiceV20.__members__:
                raise ValueError("iso15118 config: key 'services': %r unknown" % (s,))


class ProductEVSEController(EVSEControllerInterface):
    def __init__(self, mapping, settings=None, *, events=None, clock=time.monotonic):
        super().__init__()
        self.mapping = mapping
        self.firmware = mapping.firmware
        self.settings = settings or SeccSettings()
        self.events = events or (lambda kind, **kw: None)
        self.clock = clock
        self.ev_data_context = fresh_ev_context()
        self.evse_data_context = fresh_evse_context()
        self.status = ServiceStatus.STARTING
        self.hlc_charging = False
        self.stop_requested = None  # reason, when the CSMS or the daemon ends the session
        self.ev_targets = []  # EV target power (W) of every charge loop, in order
        self.loop_times = []  # (monotonic t, target W)
        self.session_count = 0
        self.modes = []  # (service, control mode) seen in the charge loop
        self.precharge_v = 0.0
        self.authorized = True
        self.cert_rejection = None  # text when a certificate check failed
        self._last_ev = None
        self.on_message = None  # callable(state) per message exchanged (diagnostics)

    # ---------------------------------------------------------------- helpers

    def reset_ev_data_context(self):
        self.ev_data_context = fresh_ev_context()
        self._last_ev = None

    def _image(self):
        return getattr(self.firmware, "image", None) or {}

    def sync_ev(self):
        """Copy the EV's limits and needs into the mapping when they changed (the mapping
        wakes its firmware pusher; nothing here waits)."""
        ev = self.ev_data_context
        ac, dc = ev.session_limits.ac_limits, ev.session_limits.dc_limits
        is_dc = ev.current_type == CurrentType.DC or self._is_dc()
        lim = dc if is_dc else ac
        rated = ev.rated_limits.dc_limits if is_dc else ev.rated_limits.ac_limits
        max_c = lim.max_charge_power if lim.max_charge_power else rated.max_charge_power
        max_d = lim.max_discharge_power if lim.max_discharge_power is not None \
            else rated.max_discharge_power
        snap = (max_c, max_d, ev.present_soc, ev.min_soc, ev.target_soc, ev.departure_time,
                ev.max_v2x_energy_request, ev.min_v2x_energy_request)
        if snap == self._last_ev:
            return
        self._last_ev = snap
        self.mapping.update_ev(max_charge_w=max_c, max_discharge_w=max_d or 0.0,
                               soc=ev.present_soc, soc_min=ev.min_soc,
                               target_soc=ev.target_soc, departure_s=ev.departure_time,
                               v2x_max_wh=ev.max_v2x_energy_request,
                               v2x_min_wh=ev.min_v2x_energy_request)
        self.events("ev_limits", ev=dict(self.mapping.ev))

    def _is_dc(self):
        p = self.get_selected_protocol()
        return p is not None and p == Protocol.ISO_15118_20_DC

    def _refresh_evse(self):
        """EVSE rated and session limits from the mapping (rating, derating, CSMS, EV)."""
        cap_c, cap_d = self.mapping.evse_limits()
        ctx = self.evse_data_context
        img = self._image()
        ctx.nominal_voltage = self.settings.nominal_voltage_v
        ctx.nominal_frequency = (img.get("f_mhz") or 50000) / 1000.0
        ctx.present_active_power = float(img.get("p_cmd_w", 0))
        ctx.present_voltage = (img.get("v_dc_dv", 0) or 0) / 10.0
        ctx.min_soc = self.mapping.ev["soc_min"]
        ctx.target_soc = self.mapping.ev["target_soc"]
        r = ctx.rated_limits
        r.ac_limits.max_charge_power = cap_c
        r.ac_limits.min_charge_power = 0.0
        r.ac_limits.max_discharge_power = cap_d
        r.ac_limits.min_discharge_power = 0.0
        s = self.settings
        r.dc_limits.max_charge_power = cap_c
        r.dc_limits.min_charge_power = 0.0
        r.dc_limits.max_discharge_power = cap_d
        r.dc_limits.min_discharge_power = 0.0
        r.dc_limits.max_charge_current = s.dc_max_current_a
        r.dc_limits.min_charge_current = 0.0
        r.dc_limits.max_discharge_current = s.dc_max_current_a
        r.dc_limits.min_discharge_current = 0.0
        r.dc_limits.max_voltage = s.dc_max_voltage_v
        r.dc_limits.min_voltage = s.dc_min_voltage_v
        target = self.mapping.target_w()
        sl = ctx.session_limits
        sl.ac_limits.max_charge_power = max(target, 0.0)
        sl.ac_limits.max_discharge_power = max(-target, 0.0)
        sl.ac_limits.max_charge_reactive_power = 0.0
        sl.ac_limits.max_discharge_reactive_power = 0.0
        lo, hi = self.mapping.bounds()
        sl.dc_limits.max_charge_power = max(hi, 0.0)
        sl.dc_limits.min_charge_power = 0.0
        sl.dc_limits.max_discharge_power = max(-lo, 0.0)
        sl.dc_limits.min_discharge_power = 0.0
        sl.dc_limits.max_charge_current = s.dc_max_current_a
        sl.dc_limits.max_discharge_current = s.dc_max_current_a
        sl.dc_limits.max_voltage = s.dc_max_voltage_v
        sl.dc_limits.min_voltage = s.dc_min_voltage_v
        return target

    def _record_target(self, target):
        self.ev_targets.append(target)
        self.loop_times.append((self.clock(), target))
        self.events("charge_loop", target_w=target, plant_w=self._image().get("p_cmd_w", 0))

    # ---------------------------------------------------------------- common

    async def set_status(self, status):
        self.status = status
        log.info("SECC status %s", getattr(status, "value", status))

    async def get_evse_id(self, protocol):
        if protocol == Protocol.DIN_SPEC_70121:
            return self.settings.evse_id.replace("*", "")[:10]
        return self.settings.evse_id

    async def get_supported_energy_transfer_modes(self, protocol):
        return [EnergyTransferModeEnum.AC_THREE_PHASE_CORE, EnergyTransferModeEnum.DC_EXTENDED]

    async def get_energy_service_list(self):
        dc = self._is_dc()
        wanted = [ServiceV20[s] for s in self.settings.services]
        ok = (ServiceV20.DC, ServiceV20.DC_BPT) if dc else (ServiceV20.AC, ServiceV20.AC_BPT)
        return ServiceList(services=[
            Service(service_id=SERVICE_IDS[s], free_service=bool(self.settings.free_charging))
            for s in wanted if s in ok])

    async def get_service_parameter_list(self, service_id):
        """Parameter sets: the configured control mode first (the EV simulator takes the
        first set), then the other one."""
        first = 2 if self.settings.control_mode == "dynamic" else 1
        modes = [first, 3 - first]
        sets = []
        ac = service_id in (1, 5)
        for i, mode in enumerate(modes, 1):
            params = [Parameter(name="Connector", int_value=2 if ac else 3),
                      Parameter(name="ControlMode", int_value=mode),
                      Parameter(name="EVSENominalVoltage",
                                int_value=int(self.settings.nominal_voltage_v)),
                      Parameter(name="MobilityNeedsMode", int_value=1),
                      Parameter(name="Pricing", int_value=0)]
            if service_id in (5, 6):
                params += [Parameter(name="BPTChannel", int_value=1),
                           Parameter(name="GeneratorMode", int_value=1)]
            sets.append(ParameterSet(id=i, parameters=params))
        return ServiceParameterList(parameter_sets=sets)

    async def get_schedule_exchange_params(self, selected_energy_service, control_mode,
                                           schedule_exchange_req):
        self.sync_ev()
        self._refresh_evse()
        prices = PriceLevelSchedule(
            time_anchor=0, schedule_id=1, num_price_levels=1,
            schedule_entries=PriceLevelScheduleEntryList(
                entries=[PriceLevelScheduleEntry(duration=86400, price_level=0)]))
        if control_mode == ControlMode.DYNAMIC:
            ev = self.mapping.ev
            return DynamicScheduleExchangeResParams(
                departure_time=int(ev["departure_s"]) if ev["departure_s"] else None,
                min_soc=int(ev["soc_min"]) if ev["soc_min"] is not None else None,
                target_soc=int(ev["target_soc"]) if ev["target_soc"] is not None else None,
                price_level_schedule=prices)
        lo, hi = self.mapping.bounds()

        def sched(p):
            return PowerSchedule(time_anchor=0, schedule_entry_list=PowerScheduleEntryList(
                entries=[PowerScheduleEntry(duration=86400,
                                            power=RationalNumber.get_rational_repr(p))]))
        tup = ScheduleTuple(
            schedule_tuple_id=1,
            charging_schedule=ChargingSchedule(power_schedule=sched(hi),
                                               price_level_schedule=prices),
            discharging_schedule=ChargingSchedule(power_schedule=sched(lo),
                                                  price_level_schedule=prices)
            if lo < 0 else None)
        return ScheduledScheduleExchangeResParams(schedule_tuples=[tup])

    def is_eim_authorized(self):
        return False

    async def is_authorized(self, id_token=None, id_token_type=None, certificate_chain=None,
                            hash_data=None):
        protocol = self.get_selected_protocol()
        code = ResponseCodeV20.OK if protocol and protocol.name.startswith("ISO_15118_20") \
            else ResponseCodeV2.OK
        if self.cert_rejection:
            return AuthorizationResponse(AuthorizationStatus.REJECTED,
                                         ResponseCodeV20.WARN_CERT_EXPIRED
                                         if code == ResponseCodeV20.OK
                                         else ResponseCodeV2.FAILED_CERTIFICATE_EXPIRED)
        status = AuthorizationStatus.ACCEPTED if self.authorized \
            else AuthorizationStatus.ONGOING
        return AuthorizationResponse(status, code)

    async def get_sa_schedule_list(self, ev_data_context, is_free_charging_service,
                                   max_schedule_entries, departure_time=0):
        return None  # ISO 15118-2 not offered by this product (PROTOCOLS)

    async def get_sa_schedule_list_dinspec(self, max_schedule_entries, departure_time=0):
        return None

    async def get_meter_info_v2(self):
        img = self._image()
        return MeterInfoV2(meter_id="v2g-fw", meter_reading=img.get("energy_import_wh", 0),
                           t_meter=int(time.time()))

    async def get_meter_info_v20(self):
        img = self._image()
        return MeterInfoV20(meter_id="v2g-fw",
                            charged_energy_reading_wh=img.get("energy_import_wh", 0),
                            bpt_discharged_energy_reading_wh=img.get("energy_export_wh", 0),
                            meter_timestamp=int(time.time()))

    async def get_supported_providers(self):
        return None

    async def set_hlc_charging(self, is_ongoing):
        self.hlc_charging = is_ongoing
        if is_ongoing:
            if not self.mapping.session_open:
                self.session_count += 1
            self.sync_ev()
            await self.mapping.begin(self.session_count)
            self.events("energy_start", session=self.session_count)

    async def get_cp_state(self):
        return CpState.C2

    async def service_renegotiation_supported(self):
        return False

    async def stop_charger(self):
        """The EV (PowerDelivery STOP, session stop) or the SECC ends the session: the
        firmware ceases power and opens the contactors."""
        if self.mapping.session_open:
            await self.mapping.end(self.stop_requested or "EV")
            self.events("energy_stop", reason=self.stop_requested or "EV")

    async def _contactor_is(self, code):
        deadline = self.clock() + self.settings.contactor_wait_s
        while True:
            if self._image().get("contactor_status") == code:
                return True
            if self.clock() >= deadline:
                return False
            await asyncio.sleep(0.01)

    async def is_contactor_opened(self):
        return await self._contactor_is(CONTACTOR_OPEN)

    async def is_contactor_closed(self):
        return await self._contactor_is(CONTACTOR_CLOSED)

    async def get_evse_status(self):
        if self.stop_requested:
            return EVSEStatus(notification_max_delay=0,
                              evse_notification=EVSENotification.TERMINATE)
        return None

    async def set_present_protocol_state(self, state):
        # Josev calls this after every response sent: one message exchanged (diagnostics)
        log.debug("ISO 15118 state %s", state)
        if self.on_message is not None:
            self.on_message(state)

    # ---------------------------------------------------------------- AC

    async def get_ac_evse_status(self):
        return ACEVSEStatus(notification_max_delay=0,
                            evse_notification=EVSENotificationV2.STOP_CHARGING
                            if self.stop_requested else EVSENotificationV2.NONE, rcd=False)

    async def get_ac_charge_params_v2(self):
        cap_c, _ = self.mapping.evse_limits()
        v = self.settings.nominal_voltage_v
        return ACEVSEChargeParameter(
            ac_evse_status=await self.get_ac_evse_status(),
            evse_nominal_voltage=PVEVSENominalVoltage(multiplier=0, value=int(v),
                                                      unit=UnitSymbol.VOLTAGE),
            evse_max_current=PVEVSEMaxCurrent(multiplier=0, value=int(cap_c / v / 3),
                                              unit=UnitSymbol.AMPERE))

    async def get_ac_charge_params_v20(self, energy_service):
        self.sync_ev()
        self._refresh_evse()
        self.evse_data_context.current_type = CurrentType.AC
        cap_c, cap_d = self.mapping.evse_limits()
        r = RationalNumber.get_rational_repr
        base = ACChargeParameterDiscoveryResParams(
            evse_max_charge_power=r(cap_c), evse_min_charge_power=r(0),
            evse_nominal_frequency=r(self.evse_data_context.nominal_frequency),
            max_power_asymmetry=r(0), evse_power_ramp_limit=r(0),
            evse_present_active_power=r(self._image().get("p_cmd_w", 0)))
        if energy_service == ServiceV20.AC:
            return base
        if energy_service == ServiceV20.AC_BPT:
            return BPTACChargeParameterDiscoveryResParams(
                **base.dict(), evse_max_discharge_power=r(cap_d),
                evse_min_discharge_power=r(0))
        return None

    async def get_ac_charge_loop_params_v20(self, control_mode, selected_service):
        self.sync_ev()
        target = self._refresh_evse()
        self._record_target(target)
        self._mode(selected_service, control_mode)
        return await super().get_ac_charge_loop_params_v20(control_mode, selected_service)

    def _mode(self, service, mode):
        m = (service.name, mode.name.lower())
        if m not in self.modes:
            self.modes.append(m)

    # ---------------------------------------------------------------- DC

    async def get_dc_evse_status(self):
        return DCEVSEStatus(evse_notification=EVSENotificationV2.NONE,
                            notification_max_delay=0,
                            evse_isolation_status=IsolationLevel.VALID,
                            evse_status_code=DCEVSEStatusCode.EVSE_READY)

    async def get_dc_charge_parameters(self):
        s = self.settings
        cap_c, _ = self.mapping.evse_limits()
        return DCEVSEChargeParameter(
            dc_evse_status=await self.get_dc_evse_status(),
            evse_maximum_power_limit=PVEVSEMaxPowerLimit(multiplier=0, value=int(cap_c),
                                                         unit="W"),
            evse_maximum_current_limit=PVEVSEMaxCurrentLimit(
                multiplier=0, value=int(s.dc_max_current_a), unit="A"),
            evse_maximum_voltage_limit=PVEVSEMaxVoltageLimit(
                multiplier=0, value=int(s.dc_max_voltage_v), unit="V"),
            evse_minimum_current_limit=PVEVSEMinCurrentLimit(multiplier=0, value=0, unit="A"),
            evse_minimum_voltage_limit=PVEVSEMinVoltageLimit(
                multiplier=0, value=int(s.dc_min_voltage_v), unit="V"),
            evse_peak_current_ripple=PVEVSEPeakCurrentRipple(multiplier=0, value=1, unit="A"))

    async def start_cable_check(self):
        # DC: the contactors close for the cable check, before PowerDelivery START; no
        # setpoint until then
        if not self.mapping.session_open:
            self.session_count += 1
            await self.mapping.begin(self.session_count, energize=False)

    async def get_cable_check_status(self):
        return IsolationLevel.VALID

    async def send_charging_command(self, ev_target_voltage, ev_target_current,
                                    is_precharge=False, is_session_bpt=False):
        # 0.31.2's DC charge loop passes is_session_bpt positionally as is_precharge; a
        # pre-charge only happens before PowerDelivery START (hlc_charging False)
        if is_precharge and self.hlc_charging:
            is_precharge = False  # it was is_session_bpt; the service says BPT anyway
        if is_precharge:
            self.precharge_v = float(ev_target_voltage or 0)
            self.evse_data_context.present_voltage = self.precharge_v
            return
        self.sync_ev()
        target = self._refresh_evse()
        self._record_target(target)

    async def get_evse_present_voltage(self, protocol):
        if self.precharge_v and not self.hlc_charging:
            self.evse_data_context.present_voltage = self.precharge_v
        return await super().get_evse_present_voltage(protocol)

    async def is_evse_current_limit_achieved(self):
        return False

    async def is_evse_voltage_limit_achieved(self):
        return False

    async def is_evse_power_limit_achieved(self):
        return False

    async def get_dc_charge_params_v20(self, energy_service):
        self.sync_ev()
        self._refresh_evse()
        self.evse_data_context.current_type = CurrentType.DC
        s = self.settings
        cap_c, cap_d = self.mapping.evse_limits()
        r = RationalNumber.get_rational_repr
        base = DCChargeParameterDiscoveryResParams(
            evse_max_charge_power=r(cap_c), evse_min_charge_power=r(0),
            evse_max_charge_current=r(s.dc_max_current_a), evse_min_charge_current=r(0),
            evse_max_voltage=r(s.dc_max_voltage_v), evse_min_voltage=r(s.dc_min_voltage_v),
            evse_power_ramp_limit=r(0))
        if energy_service == ServiceV20.DC:
            return base
        if energy_service == ServiceV20.DC_BPT:
            return BPTDCChargeParameterDiscoveryResParams(
                **base.dict(), evse_max_discharge_power=r(cap_d),
                evse_min_discharge_power=r(0),
                evse_max_discharge_current=r(s.dc_max_current_a),
                evse_min_discharge_current=r(0))
        return None

    async def get_dc_charge_loop_params_v20(self, control_mode, selected_service):
        self._mode(selected_service, control_mode)
        return await super().get_dc_charge_loop_params_v20(control_mode, selected_service)

    # ---------------------------------------------------------------- rest

    async def get_15118_ev_certificate(self, base64_encoded_cert_installation_req,
                                       namespace):
        log.warning("REFUSED CertificateInstallationReq: certificate installation is not "
                    "implemented (Plug & Charge needs a contract certificate installed in "
                    "the car beforehand)")
        raise NotImplementedError("certificate installation not implemented")

    async def update_data_link(self, action):
        log.info("data link: %s", action)

    def ready_to_charge(self):
        return self.cert_rejection is None

    async def session_ended(self, current_state, reason):
        log.info("ISO 15118 session ended in %s: %s", current_state, reason)
        if self.mapping.session_open:
            await self.mapping.end("ISO 15118 session ended (%s)" % reason)
            self.events("energy_stop", reason=reason)
        self.hlc_charging = False
        self.events("session_ended", state=str(current_state), reason=reason)

    async def send_display_params(self):
        self.sync_ev()

    async def send_rated_limits(self):
        self.sync_ev()
        self.events("ev_rated", ev=dict(self.mapping.ev))
