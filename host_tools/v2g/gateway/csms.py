"""A CSMS for tests and the demo, built on the ``ocpp`` package's central-system side.

    python -m v2g.gateway.csms --port 9000 [--versions 2.1,2.0.1] [--setpoint-w -7000]
                               [--out RESULT.json]

Speaks OCPP 2.1 and 2.0.1 (websocket subprotocols, ``--versions`` picks which it offers),
records every message, drops a TransactionEvent repeat (same transaction id and seq_no,
counted as a duplicate) and, when a transaction starts, sends SetChargingProfile with the
V2X setpoint (2.1: ``operation_mode`` CentralSetpoint, ``setpoint``, ``discharge_limit``;
2.0.1: a negative ``limit``). Writes ``--out`` (JSON) on SIGTERM/SIGINT and prints
``listening`` on stdout once it accepts connections. Loopback only.
Context: host (tests, demo).
"""

import argparse
import asyncio
import json
import signal
import sys

import websockets
from ocpp.routing import on
from ocpp.v21 import ChargePoint as CP21
from ocpp.v21 import call as call21
from ocpp.v21 import call_result as res21
from ocpp.v201 import ChargePoint as CP201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as res201


class Record:
    def __init__(self):
        self.messages = []  # (action, payload) accepted, in order
        self.duplicates = 0
        self.seen_tx = set()
        self.versions = []
        self.transactions = {}  # id -> {"events": [...], "export_wh": x, "import_wh": y}
        self.profiles = []

    def as_dict(self):
        return {"messages": self.messages, "duplicates": self.duplicates,
                "versions": self.versions, "transactions": self.transactions,
                "profiles": self.profiles}


def _energy(meter_values, measurand):
    v = None
    for mv in meter_values or []:
        for sv in mv.get("sampled_value", []):
            if sv.get("measurand") == measurand:
                v = sv["value"]
    return v


class _Central:
    @on("BootNotification")
    async def on_boot(self, charging_station, reason, **kw):
        self.rec.messages.append(("BootNotification", {"reason": reason}))
        return self._res.BootNotification(current_time="2026-01-01T00:00:00Z", interval=60,
                                          status="Accepted")

    @on("Heartbeat")
    async def on_heartbeat(self, **kw):
        self.rec.messages.append(("Heartbeat", {}))
        return self._res.Heartbeat(current_time="2026-01-01T00:00:00Z")

    @on("StatusNotification")
    async def on_status(self, connector_status, **kw):
        self.rec.messages.append(("StatusNotification", {"status": connector_status}))
        return self._res.StatusNotification()

    @on("NotifyEVChargingNeeds")
    async def on_needs(self, charging_needs, evse_id, **kw):
        self.rec.messages.append(("NotifyEVChargingNeeds", charging_needs))
        return self._res.NotifyEVChargingNeeds(status="Accepted")

    @on("SecurityEventNotification")
    async def on_security(self, type, timestamp, tech_info=None, **kw):
        self.rec.messages.append(("SecurityEventNotification",
                                  {"type": type, "tech_info": tech_info}))
        return self._res.SecurityEventNotification()

    @on("NotifyEvent")
    async def on_notify_event(self, generated_at, seq_no, event_data, **kw):
        for e in event_data:
            self.rec.messages.append(("NotifyEvent", {
                "component": e["component"]["name"], "variable": e["variable"]["name"],
                "actual_value": e["actual_value"], "trigger": e["trigger"]}))
        return self._res.NotifyEvent()

    @on("TransactionEvent")
    async def on_tx(self, event_type, seq_no, transaction_info, meter_value=None, **kw):
        tx_id = transaction_info["transaction_id"]
        key = (tx_id, seq_no)
        if key in self.rec.seen_tx:
            self.rec.duplicates += 1
            return self._res.TransactionEvent()
        self.rec.seen_tx.add(key)
        tx = self.rec.transactions.setdefault(tx_id, {"events": []})
        tx["events"].append(event_type)
        exp = _energy(meter_value, "Energy.Active.Export.Register")
        imp = _energy(meter_value, "Energy.Active.Import.Register")
        if exp is not None:
            tx["export_wh"] = exp
        if imp is not None:
            tx["import_wh"] = imp
        self.rec.messages.append(("TransactionEvent", {"event_type": event_type,
                                                       "seq_no": seq_no}))
        if event_type == "Started" and self.setpoint_w is not None:
            asyncio.ensure_future(self.send_setpoint(self.setpoint_w))
        return self._res.TransactionEvent()

    async def send_setpoint(self, p_w):
        if self.version == "2.1":
            period = {"start_period": 0, "operation_mode": "CentralSetpoint", "setpoint": p_w}
            if p_w < 0:
                period["discharge_limit"] = p_w
            profile = {"id": 1, "stack_level": 0, "charging_profile_purpose": "TxProfile",
                       "charging_profile_kind": "Dynamic",
                       "charging_schedule": [{"id": 1, "charging_rate_unit": "W",
                                              "charging_schedule_period": [period]}]}
            payload = call21.SetChargingProfile(evse_id=1, charging_profile=profile)
        else:
            profile = {"id": 1, "stack_level": 0, "charging_profile_purpose": "TxProfile",
                       "charging_profile_kind": "Relative",
                       "charging_schedule": [{"id": 1, "charging_rate_unit": "W",
                                              "charging_schedule_period": [
                                                  {"start_period": 0, "limit": p_w}]}]}
            payload = call201.SetChargingProfile(evse_id=1, charging_profile=profile)
        res = await self.call(payload, suppress=False)
        self.rec.profiles.append({"setpoint_w": p_w, "status": res.status})


def _cls(version):
    base, res = (CP21, res21) if version == "2.1" else (CP201, res201)
    return type("CSMS%s" % version.replace(".", ""), (_Central, base),
                {"_res": res, "version": version})


async def serve(port, versions, setpoint_w, rec, host="127.0.0.1"):
    async def handler(ws):
        version = (ws.subprotocol or "ocpp2.0.1")[4:]
        rec.versions.append(version)
        cp = _cls(version)(ws.request.path.strip("/"), ws)
        cp.rec, cp.setpoint_w = rec, setpoint_w
        try:
            await cp.start()
        except websockets.ConnectionClosed:
            pass

    return await websockets.serve(handler, host, port,
                                  subprotocols=["ocpp%s" % v for v in versions])


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m v2g.gateway.csms")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--versions", default="2.1,2.0.1")
    ap.add_argument("--setpoint-w", type=float)
    ap.add_argument("--out")
    args = ap.parse_args(argv)

    async def run():
        rec = Record()
        server = await serve(args.port, args.versions.split(","), args.setpoint_w, rec)
        print("listening", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.close()
        text = json.dumps(rec.as_dict(), default=str)
        if args.out:
            with open(args.out, "w") as f:
                f.write(text)
        else:
            print(text)
        return 0

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
