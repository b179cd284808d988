"""Station emulator: one process standing for hundreds of stations on the daemon's MQTT
contract (docs/billing.md, docs/sems.md).

Each station has its own MQTT connection (TLS 1.3, its own client certificate, CN = station
id, so the broker's ACL applies as to a daemon), subscribes to ``v2g/<st>/cmd/setpoint``
(QoS 1, validated by the daemon's own ``commands.parse_setpoint``, applied once per id) and
the SEMS heartbeat, and publishes ``v2g/<st>/telemetry`` (QoS 0) every ``telemetry_s``.
Physics every 0.1 s: the command (or the safe local limit, ``gateway.sems_hold``) clipped
to the EV's limits and SoC window, a first-order power response (``tau_s``), SoC
integration. Arrivals and departures come from the site file's events.

    python -m v2g.backend.sems_emulator --site SITE --broker H:P --ca CA --certs DIR \
        --stations ST-0001,... | --index I/N  --t0 WALLCLOCK --out RESULT.json

On SIGTERM it writes RESULT.json: samples (t, site p_w, stations in fallback, stations
not at their safe limit), applied setpoints (station, id, plan ts, applied t), duplicates,
dropped commands and SoC/power snapshots every 2 s.

Context: host (tests, bench).
"""

import argparse
import asyncio
import json
import logging
import math
import os
import random
import signal
import time
from types import SimpleNamespace

import aiomqtt

from v2g.backend.sems import publish_burst, tls_context
from v2g.backend.sems_site import load_site
from v2g.gateway import commands
from v2g.gateway.sems_hold import HoldPolicy

log = logging.getLogger("v2g.sems.emulator")
DT = 0.1


class Sta:
    def __init__(self, sid, spec, policy):
        self.id = sid
        self.spec = spec
        self.ev = dict(spec["ev"]) if spec["ev"] else None
        self.cfg = SimpleNamespace(station=sid, max_export_w=spec["max_export_w"],
                                   max_import_w=spec["max_import_w"], max_q_var=11000)
        self.policy = policy
        self.p = 0.0
        self.sp = 0.0
        self.sp_id = None
        self.applied = set()
        self.hb = None
        self.mode = "fallback"
        self.seq = 0
        self.connected = False

    def target(self, now):
        p, self.mode = self.policy.effective(self.sp, self.hb, now)
        ev = self.ev
        if not ev:
            return 0.0
        if p < 0:
            if ev["soc_pm"] <= ev["soc_min_pm"]:
                return 0.0
            return max(p, -ev["max_discharge_w"], -self.spec["max_export_w"])
        if ev["soc_pm"] >= ev["soc_max_pm"]:
            return 0.0
        return min(p, ev["max_charge_w"], self.spec["max_import_w"])

    def step(self, now, dt):
        tgt = self.target(now)
        self.p += (tgt - self.p) * (1.0 - math.exp(-dt / self.spec["tau_s"]))
        if self.ev:
            self.ev["soc_pm"] += self.p * dt / 3600.0 / self.ev["capacity_wh"] * 1000.0
            self.ev["soc_pm"] = min(1000.0, max(0.0, self.ev["soc_pm"]))

    def telemetry(self):
        self.seq += 1
        ev = None
        if self.ev:
            ev = {k: round(v, 2) for k, v in self.ev.items()}
        return json.dumps({"station": self.id, "seq": self.seq, "fw": "emulator",
                           "t": round(time.time(), 3), "p_w": round(self.p, 1),
                           "sp_w": self.sp, "sp_id": self.sp_id, "mode": self.mode, "ev": ev})


class Emulator:
    def __init__(self, site, ids, host, port, ca, certs, t0, connect_s=2.0):
        self.site, self.host, self.port, self.ca, self.certs = site, host, port, ca, certs
        self.connect_s = connect_s
        self.t0 = t0
        self.policy = HoldPolicy(site["hold_s"], site["safe_export_w"], site["safe_import_w"],
                                 lead_s=site["fallback_lead_s"])
        self.st = {i: Sta(i, site["stations"][i], self.policy) for i in ids}
        self.hb_topic = "v2g/_sems/%s/heartbeat" % site["site"]
        self.samples, self.applied_log, self.snapshots = [], [], []
        self.duplicates = 0
        self.dropped = 0
        self.stop = asyncio.Event()
        self.hb_holders = []   # (t, holder) when the heartbeat's holder changes

    def ctx(self, sid):
        return tls_context(self.ca, os.path.join(self.certs, sid + ".pem"),
                           os.path.join(self.certs, sid + ".key"))

    async def station(self, s, delay):
        await asyncio.sleep(delay)
        rng = random.Random(s.id)
        backoff = 0.2
        while not self.stop.is_set():
            try:
                async with aiomqtt.Client(self.host, self.port, identifier="daemon-" + s.id,
                                          tls_context=self.ctx(s.id), keepalive=30,
                                          clean_session=True, timeout=10) as c:
                    await c.subscribe([("v2g/%s/cmd/setpoint" % s.id, 1),
                                       (self.hb_topic, 0)])
                    s.connected = True
                    backoff = 0.2
                    tel = asyncio.create_task(self.telemetry(s, c, rng))
                    try:
                        async for m in c.messages:
                            self.on_message(s, str(m.topic), m.payload)
                    finally:
                        tel.cancel()
            except aiomqtt.MqttError as e:
                s.connected = False
                log.warning("%s: mqtt: %s", s.id, e)
                await asyncio.sleep(backoff * rng.uniform(0.5, 1.0))
                backoff = min(backoff * 2, 2.0)

    def on_message(self, s, topic, payload):
        now = time.monotonic()
        if topic == self.hb_topic:
            s.hb = now
            if s is self._first:
                try:
                    h = json.loads(payload).get("holder")
                except (ValueError, AttributeError):
                    h = None
                if not self.hb_holders or self.hb_holders[-1][1] != h:
                    self.hb_holders.append((round(time.time(), 3), h))
            return
        try:
            sp = commands.parse_setpoint(payload, s.cfg)
        except commands.CommandError as e:
            self.dropped += 1
            log.warning("%s: cmd/setpoint dropped: %s", s.id, e)
            return
        s.hb = now   # a setpoint is a sign of life too
        if sp["id"] in s.applied:
            self.duplicates += 1
            return
        s.applied.add(sp["id"])
        s.sp, s.sp_id = sp["p_w"], sp["id"]
        try:
            ts = json.loads(payload).get("ts")
        except ValueError:
            ts = None
        self.applied_log.append((s.id, sp["id"], ts, round(time.time(), 4)))

    async def telemetry(self, s, c, rng):
        await asyncio.sleep(rng.uniform(0, self.site["telemetry_s"]))
        while True:
            # queued without awaiting (QoS 0): aiomqtt's publish would wait for the socket
            # write with an event and a timeout task per message
            publish_burst(c, [("v2g/%s/telemetry" % s.id, s.telemetry())], qos=0)
            await asyncio.sleep(self.site["telemetry_s"])

    async def physics(self):
        events = [e for e in self.site["events"] if e["kind"] in ("arrive", "depart")
                  and e["station"] in self.st]
        next_snap = 0.0
        last = time.monotonic()
        while not self.stop.is_set():
            await asyncio.sleep(DT - (time.monotonic() - last) % DT)
            now = time.monotonic()
            dt, last = now - last, now
            rel = time.time() - self.t0
            while events and events[0]["t_s"] <= rel:
                e = events.pop(0)
                s = self.st[e["station"]]
                s.ev = dict(e["ev"]) if e["kind"] == "arrive" else None
            tot = 0.0
            n_fb = n_unsafe = 0
            for s in self.st.values():
                s.step(now, dt)
                tot += s.p
                if s.mode == "fallback":
                    n_fb += 1
                if abs(s.p - self.policy.safe(s.p)) > 50.0:
                    n_unsafe += 1
            self.samples.append((round(time.time(), 3), round(tot, 1), n_fb, n_unsafe))
            if rel >= next_snap:
                next_snap = rel + 2.0
                self.snapshots.append((round(time.time(), 3), {
                    s.id: (round(s.p, 1), dict(s.ev) if s.ev else None)
                    for s in self.st.values()}))

    async def run(self):
        ids = list(self.st)
        self._first = self.st[ids[0]]
        # connections spread over connect_s: a thousand TLS handshakes in one second
        # starve everything else on a small machine (stations do not all boot together)
        step = self.connect_s / max(1, len(ids))
        tasks = [asyncio.create_task(self.station(self.st[i], k * step))
                 for k, i in enumerate(ids)]
        tasks.append(asyncio.create_task(self.physics()))
        await self.stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def result(self):
        return {"stations": list(self.st), "samples": self.samples,
                "applied": self.applied_log, "duplicates": self.duplicates,
                "dropped": self.dropped, "snapshots": self.snapshots,
                "hb_holders": self.hb_holders}


def select(site, spec, exclude=()):
    ids = sorted(set(site["stations"]) - set(exclude))
    if "/" in spec:
        i, n = (int(x) for x in spec.split("/"))
        return ids[i::n]
    return [x for x in spec.split(",") if x]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site", required=True)
    ap.add_argument("--broker", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--certs", required=True, help="directory with <station>.pem/.key")
    ap.add_argument("--index", default="0/1", help="I/N: every N-th station from the I-th")
    ap.add_argument("--exclude", default="",
                    help="station ids run elsewhere (simulated boards), comma-separated")
    ap.add_argument("--t0", type=float, default=None)
    ap.add_argument("--connect-s", type=float, default=2.0,
                    help="spread the stations' first connections over this many seconds")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    site = load_site(a.site)
    host, port = a.broker.rsplit(":", 1)
    emu = Emulator(site, select(site, a.index, [x for x in a.exclude.split(",") if x]), host, int(port), a.ca, a.certs,
                   a.t0 or time.time(), connect_s=a.connect_s)

    async def go():
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, emu.stop.set)
        loop.add_signal_handler(signal.SIGINT, emu.stop.set)
        await emu.run()

    asyncio.run(go())
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(emu.result(), f)
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
