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
        --stations ST-0001,... | --index I/N  --t0 WALLCLOCK | --t0-file PATH \
        [--ready PATH] --out RESULT.json

``--ready PATH``: written once every station has connected and subscribed (the bench
starts the SEMS after the stations' TLS storm). ``--t0-file PATH``: the run's t0 (wall
clock) read from that file once it appears; until then no arrival, departure or snapshot.

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
import socket
import time
from types import SimpleNamespace

import paho.mqtt.client as mqtt

from v2g.backend.sems import tls_context
from v2g.backend.sems_site import load_site
from v2g.gateway import commands
from v2g.gateway.sems_hold import HoldPolicy

log = logging.getLogger("v2g.sems.emulator")
DT = 0.1


def _soon(loop, fn, *args):
    """``fn(*args)`` on ``loop`` from any thread; nothing once the loop is closed (a paho
    client closing its socket when it is collected, after the run)."""
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        pass


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
        self.ever = False   # connected at least once
        self.client = None  # its paho client (Emulator.station)
        self.lost = asyncio.Event()
        self.tel_due = None  # monotonic time its next telemetry is due
        self.opened = None   # monotonic time its socket opened, until it has subscribed

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
    def __init__(self, site, ids, host, port, ca, certs, t0, connect_s=2.0, t0_file=None,
                 ready_file=None, handshake_s=30.0):
        self.site, self.host, self.port, self.ca, self.certs = site, host, port, ca, certs
        self.connect_s = connect_s
        # a broker busy with a thousand TLS handshakes answered SUBSCRIBEs 10-12 s late
        # (docs/sems.md): well above that, or the retries feed the storm
        self.handshake_s = handshake_s
        self.t0, self.t0_file, self.ready_file = t0, t0_file, ready_file
        self.n_connected = 0   # stations connected at least once (for the ready file)
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

    # --- connections ----------------------------------------------------------------
    # paho driven by this process's event loop, without a thread or a task per station:
    # reads by add_reader, writes straight from publish (a writer callback only while the
    # socket is full), keepalive by one loop_misc pass a second for every station. A
    # thousand aiomqtt clients (tasks, a queue, a writer registration per message) cost
    # about twice the CPU, which the site bench's boards need.
    async def station(self, s, delay):
        """Connect ``s`` after ``delay``, and again with a backoff whenever it is lost."""
        await asyncio.sleep(delay)
        loop = asyncio.get_running_loop()
        rng = random.Random(s.id)
        backoff = 0.2
        c = s.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                   client_id="daemon-" + s.id, clean_session=True)
        c.tls_set_context(self.ctx(s.id))
        c.on_connect = lambda c, u, f, rc, p: self._connected(s, rc)
        c.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed(s)
        c.on_message = lambda c, u, m: self.on_message(s, m.topic, m.payload)
        c.on_disconnect = lambda c, u, f, rc, p: self._lost(s, loop)
        # socket callbacks may come from the executor thread that runs connect(); by file
        # descriptor: the socket is closed by the time the loop runs the callback
        c.on_socket_open = lambda c, u, sock: _soon(loop, self._opened, s, sock.fileno())
        c.on_socket_close = lambda c, u, sock: _soon(loop, self._closed, sock.fileno())
        while not self.stop.is_set():
            s.lost.clear()
            try:
                # connect() blocks for the TCP connect and the TLS handshake
                await loop.run_in_executor(None, c.connect, self.host, self.port, 30)
                backoff = 0.2
                await s.lost.wait()
            except (OSError, ValueError) as e:
                log.warning("%s: mqtt: %s", s.id, e)
            s.connected = False
            if not self.stop.is_set():
                await asyncio.sleep(backoff * rng.uniform(0.5, 1.0))
                backoff = min(backoff * 2, 2.0)

    def _opened(self, s, fd):
        s.opened = time.monotonic()
        asyncio.get_running_loop().add_reader(fd, self._read, s)

    def _lost(self, s, loop):
        s.connected = False
        s.opened = None
        _soon(loop, s.lost.set)

    def _connected(self, s, rc):
        if rc.is_failure:
            log.warning("%s: mqtt: connect refused: %s", s.id, rc)
            s.lost.set()
            return
        s.client.subscribe([("v2g/%s/cmd/setpoint" % s.id, 1), (self.hb_topic, 0)])

    def _subscribed(self, s):
        s.connected = True
        s.opened = None
        if not s.ever:
            s.ever = True
            # the first telemetry somewhere in the first period (as the daemons' boots are)
            s.tel_due = time.monotonic() + random.Random(s.id).uniform(
                0, self.site["telemetry_s"])
            self.n_connected += 1
            if self.n_connected == len(self.st) and self.ready_file:
                with open(self.ready_file, "w") as f:
                    f.write("%d\n" % self.n_connected)

    def _closed(self, fd):
        loop = asyncio.get_running_loop()
        loop.remove_reader(fd)
        loop.remove_writer(fd)

    def _read(self, s):
        c = s.client
        c.loop_read()
        sock = c.socket()
        # packets already decrypted by TLS do not make the socket readable again
        while sock is not None and hasattr(sock, "pending") and sock.pending():
            c.loop_read()
            sock = c.socket()
        self._flush(s)   # PUBACKs and SUBSCRIBEs queued inside paho's callbacks

    def _flush(self, s):
        c = s.client
        if c.want_write():
            c.loop_write()
            sock = c.socket()
            if c.want_write() and sock is not None:
                asyncio.get_running_loop().add_writer(sock.fileno(), self._writable, s)

    def _writable(self, s):
        c = s.client
        c.loop_write()
        sock = c.socket()
        if not c.want_write() and sock is not None:
            asyncio.get_running_loop().remove_writer(sock.fileno())

    async def misc(self):
        """Keepalive and timeouts of every connection, once a second; a connection still
        without its SUBACK ``handshake_s`` after the TLS handshake is dropped (``_stalled``)."""
        while not self.stop.is_set():
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for s in self.st.values():
                if s.connected:
                    s.client.loop_misc()
                    self._flush(s)
                elif s.opened is not None and now - s.opened > self.handshake_s:
                    self._stalled(s, now)

    def _stalled(self, s, now):
        """Drop a connection that has not subscribed ``handshake_s`` after its TLS handshake:
        paho's keepalive does not cover a lost SUBACK (it pings once CONNACK is in), and a
        station waiting for one is never ready. ``station`` connects again."""
        c = s.client
        log.warning("%s: mqtt: no %s %.0f s after the TLS handshake: reconnecting", s.id,
                    "SUBACK" if c.is_connected() else "CONNACK", now - s.opened)
        s.opened = None
        sock = c.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._read(s)   # reads the end of the stream: paho's on_disconnect, _lost

    def send_telemetry(self, now):
        """Publish (QoS 0) the telemetry of every connected station that is due."""
        for s in self.st.values():
            if s.connected and now >= s.tel_due:
                s.tel_due += self.site["telemetry_s"]
                if s.tel_due <= now:   # late (a stall): the next one a period from now
                    s.tel_due = now + self.site["telemetry_s"]
                s.client.publish("v2g/%s/telemetry" % s.id, s.telemetry(), 0)
                self._flush(s)

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

    async def physics(self):
        events = [e for e in self.site["events"] if e["kind"] in ("arrive", "depart")
                  and e["station"] in self.st]
        next_snap = 0.0
        last = time.monotonic()
        while not self.stop.is_set():
            await asyncio.sleep(DT - (time.monotonic() - last) % DT)
            now = time.monotonic()
            dt, last = now - last, now
            if self.t0 is None and os.path.exists(self.t0_file):
                with open(self.t0_file) as f:
                    self.t0 = float(f.read())
            # before t0 (not yet known): no arrivals, departures or snapshots
            rel = time.time() - self.t0 if self.t0 is not None else -1e9
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
            self.send_telemetry(now)
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
        tasks.append(asyncio.create_task(self.misc()))
        await self.stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for s in self.st.values():
            if s.connected:
                s.client.disconnect()

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
    ap.add_argument("--t0", type=float, default=None,
                    help="the run's t0 (wall clock; default: now)")
    ap.add_argument("--t0-file", help="read t0 from this file once it appears")
    ap.add_argument("--ready", help="write this file once every station is connected")
    ap.add_argument("--connect-s", type=float, default=2.0,
                    help="spread the stations' first connections over this many seconds")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    site = load_site(a.site)
    host, port = a.broker.rsplit(":", 1)
    emu = Emulator(site, select(site, a.index, [x for x in a.exclude.split(",") if x]), host, int(port), a.ca, a.certs,
                   None if a.t0_file else (a.t0 or time.time()), connect_s=a.connect_s,
                   t0_file=a.t0_file, ready_file=a.ready)

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
