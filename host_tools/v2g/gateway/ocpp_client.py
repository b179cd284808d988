"""The daemon's OCPP client (mobilityhouse ``ocpp`` 2.1.0 over ``websockets``).

OCPP 2.1 first (its V2X messages: NotifyEVChargingNeeds with ``v2x_charging_parameters``,
SetChargingProfile periods with ``setpoint``, ``discharge_limit``, ``operation_mode``),
OCPP 2.0.1 when the CSMS offers only that (a negative ``limit`` is a discharge setpoint).
Sends BootNotification, Heartbeat, StatusNotification, TransactionEvent Started/Updated/
Ended (energy import/export registers from the firmware's energy records, export power,
SoC) and SecurityEventNotification (certificate failures), NotifyEvent for the ISO 15118
diagnostics (handshake timeouts, ``V2G-502``: component ``ISO15118Ctrlr``).

The transaction's energy: with a ``meter`` (``meter.Meter``, fed the firmware's register
image by the station) the firmware's counters since the transaction started; without one,
the sum of the firmware's energy records (``energy_record``).

Outbox (STYLE 18): every message gets its unique id when it is queued (the generator is
injectable); ``ocpp``'s ChargePoint sends one call at a time under its lock and matches
the reply by id. A message leaves the outbox only when its CallResult came; after a
reconnect the same message goes again with the same id and the same TransactionEvent
``seq_no``, so the CSMS can drop a repeat whose answer was lost (no duplicates). The
charge loop never waits on any of this. Malformed CSMS payloads are refused with the
field named (``status_info``) and the firmware keeps its last good limits.
Context: host (the daemon's event loop).
"""

import asyncio
import collections
import datetime
import itertools
import logging
import uuid

import websockets
from ocpp.routing import on
from ocpp.v21 import ChargePoint as CP21
from ocpp.v21 import call as call21
from ocpp.v201 import ChargePoint as CP201
from ocpp.v201 import call as call201

log = logging.getLogger("v2g.gateway.ocpp")

END_SETTLE_S = 5.0  # longest wait (s) for the firmware to stop integrating at a session end


def _now():
    # wall time only as the OCPP timestamp field; every deadline uses the monotonic clock
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


class OcppSettings:
    KEYS = {"url": "ws://127.0.0.1:9000/", "station_id": "V2G-0001",
            "versions": ["2.1", "2.0.1"], "heartbeat_s": 60, "response_timeout_s": 5.0,
            "reconnect_s": 1.0, "meter_interval_s": 1.0, "evse_id": 1, "connector_id": 1}

    def __init__(self, **kw):
        bad = sorted(set(kw) - set(self.KEYS))
        if bad:
            raise ValueError("ocpp config: unknown key(s) %s; allowed: %s"
                             % (", ".join(bad), ", ".join(sorted(self.KEYS))))
        for k, v in self.KEYS.items():
            setattr(self, k, kw.get(k, v))
        for v in self.versions:
            if v not in ("2.1", "2.0.1"):
                raise ValueError("ocpp config: key 'versions': %r, allowed 2.1, 2.0.1" % v)


def parse_profile(profile, version):
    """SetChargingProfile's profile (snake_case dict) -> (updates for
    ``SessionMapping.update_csms``, None) or (None, reason naming the field)."""
    try:
        sched = profile["charging_schedule"]
        if isinstance(sched, list):
            sched = sched[0]
        unit = sched["charging_rate_unit"]
        period = sched["charging_schedule_period"][0]
    except (KeyError, IndexError, TypeError) as e:
        return None, "chargingProfile: missing or malformed %s" % e
    if unit != "W":
        return None, "chargingRateUnit %r: only W is supported" % (unit,)
    out = {}
    for key, name in (("setpoint", "setpoint_w"), ("limit", "charge_limit_w"),
                      ("discharge_limit", "discharge_limit_w")):
        v = period.get(key)
        if v is None:
            continue
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            return None, "chargingSchedulePeriod.%s %r: not a number" % (key, v)
        out[name] = float(v)
    if version == "2.0.1" and out.get("charge_limit_w", 0) < 0:
        # 2.0.1 has no V2X fields: a negative limit asks for discharge at that power
        out["setpoint_w"] = out.pop("charge_limit_w")
    if "discharge_limit_w" in out:
        out["discharge_limit_w"] = abs(out["discharge_limit_w"])  # 2.1: <= 0 by schema
    mode = period.get("operation_mode")
    if mode == "ChargingOnly":
        out["discharge_limit_w"] = 0.0
        out.pop("setpoint_w", None)
    elif mode == "Idle":
        out["setpoint_w"] = 0.0
    if not out:
        return None, "chargingSchedulePeriod: no setpoint, limit or dischargeLimit"
    return out, None


class _Handlers:
    """CSMS -> station calls; mixed into the version's ChargePoint class."""

    @on("SetChargingProfile")
    async def on_set_charging_profile(self, evse_id, charging_profile, **kw):
        upd, why = parse_profile(charging_profile, self.version)
        res = self._result_cls.SetChargingProfile
        if why:
            log.warning("REFUSED SetChargingProfile: %s; firmware keeps its last good limits",
                        why)
            return res(status="Rejected", status_info={"reason_code": "InvalidValue",
                                                        "additional_info": why[:500]})
        ok = self.station.mapping.update_csms(**upd)
        self.station.events("csms_profile", **upd)
        if not ok and self.station.mapping.refused:
            return res(status="Rejected", status_info={"reason_code": "InvalidValue"})
        return res(status="Accepted")

    @on("ClearChargingProfile")
    async def on_clear_charging_profile(self, **kw):
        self.station.mapping.update_csms(clear=True)
        return self._result_cls.ClearChargingProfile(status="Accepted")


def _cp_class(version):
    from ocpp.v21 import call_result as r21
    from ocpp.v201 import call_result as r201

    base, res = (CP21, r21) if version == "2.1" else (CP201, r201)
    return type("StationCP%s" % version.replace(".", ""), (_Handlers, base),
                {"_result_cls": res, "version": version})


class StationOcpp:
    def __init__(self, settings, mapping, ctl, firmware, events=None, id_gen=None):
        self.s = settings
        self.mapping = mapping
        self.ctl = ctl
        self.fw = firmware
        self.events = events or (lambda kind, **kw: None)
        self.id_gen = id_gen or (lambda: str(uuid.uuid4()))
        self.outbox = collections.deque()
        self._kick = asyncio.Event()
        self.version = None
        self.connected = asyncio.Event()
        self.tx = None  # {"id", "seq", "import_mwh", "export_mwh"}
        self.tx_count = itertools.count(1)
        self.sent = []  # (unique id, action) confirmed by the CSMS, in order
        self.reconnects = 0
        self.meter = None  # meter.Meter: the transaction's energy from the firmware
        self.event_ids = itertools.count(1)
        self._tasks = []
        ctl_events = ctl.events

        def tap(kind, **kw):
            ctl_events(kind, **kw)
            self.on_session_event(kind, kw)
        ctl.events = tap

    # ---- queueing ----

    def enqueue(self, action, **payload):
        self.outbox.append({"uid": self.id_gen(), "action": action, "payload": payload})
        self._kick.set()

    def on_session_event(self, kind, kw):
        # the transaction starts when the car has named its limits (ChargeParameterDiscovery):
        # the CSMS's profile is in force before PowerDelivery START
        if kind in ("ev_rated", "energy_start") and self.tx is None:
            self.tx = {"id": "tx-%d" % next(self.tx_count), "seq": 0, "import_mwh": 0.0,
                       "export_mwh": 0.0, "last": None}
            if self.meter is not None:
                self.meter.start(getattr(self.fw, "image", None) or {})
            self.enqueue("StatusNotification", timestamp=_now(),
                         connector_status="Occupied", evse_id=self.s.evse_id,
                         connector_id=self.s.connector_id)
            self._tx_event("Started", "ChargingStateChanged")
            self._charging_needs()
        elif kind == "energy_stop" and self.tx is not None:
            asyncio.ensure_future(self._end_tx(kw.get("reason", "")))
        elif kind == "ev_limits" and self.tx is not None:
            self._charging_needs()

    def energy_record(self, rec):
        """An energy record of the firmware's journal (mWh): the transaction's meter."""
        if self.tx is not None:
            self.tx["import_mwh"] += rec["import_mwh"]
            self.tx["export_mwh"] += rec["export_mwh"]

    def certificate_failure(self, text):
        self.enqueue("SecurityEventNotification", timestamp=_now(),
                     type="InvalidChargingStationCertificate", tech_info=text[:255])

    def diagnostic(self, variable, value, alerting=False):
        """An ISO 15118 diagnostic counter or fault (``HandshakeTimeouts``,
        ``MessageLossFault`` = ``V2G-502``) as a NotifyEvent of component
        ``ISO15118Ctrlr``."""
        self.enqueue("NotifyEvent", generated_at=_now(), seq_no=0, event_data=[{
            "event_id": next(self.event_ids), "timestamp": _now(),
            "trigger": "Alerting" if alerting else "Delta", "actual_value": str(value)[:2500],
            "event_notification_type": "HardWiredNotification",
            "component": {"name": "ISO15118Ctrlr"}, "variable": {"name": variable}}])

    def tx_energy_mwh(self):
        """(import, export) mWh of the transaction so far."""
        if self.meter is not None:
            return self.meter.energy_mwh()
        return self.tx["import_mwh"], self.tx["export_mwh"]

    def _meter(self):
        soc = self.mapping.ev.get("soc")
        imp, exp = self.tx_energy_mwh()
        vals = [
            {"value": round(imp / 1000.0, 3),
             "measurand": "Energy.Active.Import.Register", "unit_of_measure": {"unit": "Wh"}},
            {"value": round(exp / 1000.0, 3),
             "measurand": "Energy.Active.Export.Register", "unit_of_measure": {"unit": "Wh"}},
            {"value": max(0.0, -float(self.fw.image.get("p_cmd_w", 0))),
             "measurand": "Power.Active.Export", "unit_of_measure": {"unit": "W"}},
        ]
        if soc is not None:
            vals.append({"value": float(soc), "measurand": "SoC",
                         "unit_of_measure": {"unit": "Percent"}})
        return [{"timestamp": _now(), "sampled_value": vals}]

    def _tx_event(self, event_type, trigger, stopped_reason=None):
        info = {"transaction_id": self.tx["id"]}
        if stopped_reason:
            info["stopped_reason"] = stopped_reason
        self.enqueue("TransactionEvent", event_type=event_type, seq_no=self.tx["seq"],
                     timestamp=_now(), trigger_reason=trigger, transaction_info=info,
                     meter_value=self._meter(),
                     evse={"id": self.s.evse_id, "connector_id": self.s.connector_id})
        self.tx["seq"] += 1

    def _charging_needs(self):
        ev = self.mapping.ev
        svc = self.ctl.modes[0][0] if self.ctl.modes else "AC_BPT"
        needs = {"requested_energy_transfer": svc}
        if ev["departure_s"]:
            dep = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
                seconds=float(ev["departure_s"]))
            needs["departure_time"] = dep.isoformat(timespec="seconds")
        v2x = {k: v for k, v in (("max_charge_power", ev["max_charge_w"]),
                                  ("max_discharge_power", ev["max_discharge_w"]),
                                  ("ev_max_v2x_energy_request", ev["v2x_max_wh"]),
                                  ("ev_min_v2x_energy_request", ev["v2x_min_wh"]),
                                  ("target_soc", ev["target_soc"])) if v is not None}
        if "target_soc" in v2x:
            v2x["target_soc"] = int(v2x["target_soc"])
        self.enqueue("NotifyEVChargingNeeds", evse_id=self.s.evse_id, charging_needs=needs,
                     _v2x=v2x)

    async def _end_tx(self, reason):
        # the firmware's final energy record of the session, or (meter) its counters once
        # it has stopped integrating (an image out of ENERGIZED/DERATED; a loaded
        # communication controller may see that image late, so wait for it, bounded)
        await asyncio.sleep(0.1 if self.meter is None else 0.3)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + END_SETTLE_S
        while self.meter is not None and not self.meter.settled() and loop.time() < give_up:
            await asyncio.sleep(0.05)
        self._tx_event("Ended", "StopAuthorized" if reason == "CSMS" else "EVDeparted",
                       "Local" if reason in ("EV", "") else "Other")
        self.enqueue("StatusNotification", timestamp=_now(), connector_status="Available",
                     evse_id=self.s.evse_id, connector_id=self.s.connector_id)
        imp, exp = self.tx_energy_mwh()
        if self.meter is not None:
            log.info("transaction %s ended: %s", self.tx["id"], self.meter.describe())
        self.events("tx_ended", export_wh=round(exp / 1000.0, 3),
                    import_wh=round(imp / 1000.0, 3))
        self.tx = None

    # ---- sending ----

    def _payload(self, item):
        mod = call21 if self.version == "2.1" else call201
        p = dict(item["payload"])
        v2x = p.pop("_v2x", None)
        if item["action"] == "NotifyEVChargingNeeds":
            needs = dict(p["charging_needs"])
            if self.version == "2.1" and v2x:
                needs["v2x_charging_parameters"] = v2x
            if self.version == "2.0.1":
                dc = needs["requested_energy_transfer"].startswith("DC")
                needs["requested_energy_transfer"] = "DC" if dc else "AC_three_phase"
                needs.pop("departure_time", None)
            p["charging_needs"] = needs
        return getattr(mod, item["action"])(**p)

    async def _drain(self, cp):
        while True:
            if not self.outbox:
                self._kick.clear()
                await self._kick.wait()
                continue
            item = self.outbox[0]
            res = await cp.call(self._payload(item), unique_id=item["uid"], suppress=False)
            self.outbox.popleft()
            self.sent.append((item["uid"], item["action"]))
            if item["action"] == "BootNotification":
                self.heartbeat_s = min(self.s.heartbeat_s, res.interval or self.s.heartbeat_s)

    async def _periodic(self):
        loop = asyncio.get_running_loop()
        last_hb = last_meter = loop.time()
        while True:
            await asyncio.sleep(0.1)
            now = loop.time()
            if self.connected.is_set() and now - last_hb >= getattr(self, "heartbeat_s",
                                                                     self.s.heartbeat_s):
                last_hb = now
                self.enqueue("Heartbeat")
            if self.tx is not None and now - last_meter >= self.s.meter_interval_s:
                last_meter = now
                self._tx_event("Updated", "MeterValuePeriodic")

    async def _session(self):
        boot = {"uid": self.id_gen(), "action": "BootNotification", "payload": {
            "charging_station": {"model": "v2g-daemon", "vendor_name": "v2g"},
            "reason": "PowerUp"}}
        self.outbox.appendleft(boot)
        self.enqueue("StatusNotification", timestamp=_now(), connector_status="Available",
                     evse_id=self.s.evse_id, connector_id=self.s.connector_id)
        subprotocols = ["ocpp%s" % v for v in self.s.versions]
        url = self.s.url.rstrip("/") + "/" + self.s.station_id
        while True:
            try:
                async with websockets.connect(url, subprotocols=subprotocols,
                                              open_timeout=5) as ws:
                    self.version = (ws.subprotocol or "ocpp2.0.1")[4:]
                    cp = _cp_class(self.version)(self.s.station_id, ws,
                                                 response_timeout=self.s.response_timeout_s)
                    cp.station = self
                    self.connected.set()
                    self.events("ocpp_connected", version=self.version)
                    reader = asyncio.ensure_future(cp.start())
                    drain = asyncio.ensure_future(self._drain(cp))
                    done, _ = await asyncio.wait({reader, drain},
                                                 return_when=asyncio.FIRST_COMPLETED)
                    for t in (reader, drain):
                        t.cancel()
                    for t in done:
                        if t.exception():
                            raise t.exception()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # connection refused/lost, timeout: reconnect
                log.warning("OCPP connection: %s: %s; reconnecting in %.1f s",
                            type(e).__name__, e, self.s.reconnect_s)
            self.connected.clear()
            self.reconnects += 1
            await asyncio.sleep(self.s.reconnect_s)

    async def start(self):
        self._tasks = [asyncio.ensure_future(self._session()),
                       asyncio.ensure_future(self._periodic())]

    async def flush(self, timeout=5.0):
        """Wait until the outbox is empty (or ``timeout``)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self.outbox and loop.time() < end:
            await asyncio.sleep(0.05)
        return not self.outbox

    async def stop(self):
        await self.flush(3.0)
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
