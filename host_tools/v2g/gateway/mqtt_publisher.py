"""The daemon's MQTT leg to the back end: energy records out of the outbox, exactly once.

Topics under ``v2g/<station>/`` (payloads are JSON; each carries ``station``, a ``seq`` or
``id``, and ``fw``, the board's firmware version):

===================  =====  =========  ==================================================
topic                QoS    direction  payload
===================  =====  =========  ==================================================
``telemetry``        0      out        ``{"station","seq","fw","t", ...snapshot}`` (the
                                       daemon's: ``billing_leg.BillingLeg.telemetry``)
``energy``           1      out        a signed record (``v2g.common.energy_record``)
``energy/ack``       1      in         ``{"station","acked_seq","id"}`` (retained)
``cmd/setpoint``     1      in         ``{"id","p_w","q_var"}`` (``commands``)
``demand``           1      in         ``{"id","export_w"|"import_w","duration_s"}``
``offer``            1      out        ``{"station","id","fw","direction","p_w",
                                       "energy_wh","duration_s"}``
===================  =====  =========  ==================================================

Connection: aiomqtt over TLS 1.3 only with the client certificate (``tls.client_context``,
rebuilt from the files before every attempt, so a renewed certificate is picked up without
a restart). On any failure: log, wait with doubling backoff (``backoff_min_s`` ..
``backoff_max_s``, jittered), try again. An expired certificate (ours, or the broker's)
logs ``REJECTED: Certificate Expired: ...`` with subject and expiry date; records stay in
the outbox meanwhile.

Sending: batches of pending rows in sequence order, published concurrently with QoS 1
(paho keeps them in order on the connection); a row is marked sent only when its
``publish`` returned, i.e. after its PUBACK. Rows stay in the outbox until ``energy/ack``
covers them; after a reconnect, and when the ack does not move for ``ack_timeout_s`` while
rows are sent, unacked rows are sent again (the ledger counts those as duplicates).

The daemon owns the process: it builds ``Publisher(cfg, outbox, fw=...)``, hands it
``on_setpoint`` / ``ev_state`` / ``telemetry`` callables, calls ``notify()`` after each
``outbox.store`` and runs ``await publisher.run()`` as one task; ``stop()`` ends it.

Context: host (daemon, asyncio).
"""

import asyncio
import json
import logging
import random
import ssl
import time

import aiomqtt

from v2g.gateway import commands, tls
from v2g.gateway.signing import KeyFileError

log = logging.getLogger("v2g.billing")


def topic(station, leaf):
    return "v2g/%s/%s" % (station, leaf)


async def wait_event(event, timeout):
    """Wait for ``event`` at most ``timeout`` s (``asyncio.timeout``: on Python 3.11
    ``wait_for`` can lose a cancellation that races its timeout)."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        pass


class Publisher:
    """MQTT publisher of one station's outbox (see the module docstring)."""

    def __init__(self, cfg, outbox, fw, on_setpoint=None, ev_state=None, telemetry=None,
                 batch=10, publish_timeout_s=10.0, seed=None, heartbeat_topic=None,
                 on_heartbeat=None):
        self.cfg, self.outbox, self.fw = cfg, outbox, fw
        self.on_setpoint = on_setpoint or (lambda sp: None)
        # the SEMS heartbeat (docs/sems.md), QoS 0; any payload counts as a sign of life
        self.heartbeat_topic, self.on_heartbeat = heartbeat_topic, on_heartbeat
        self.ev_state = ev_state or (lambda: None)
        self.telemetry = telemetry
        self.batch, self.publish_timeout_s = batch, publish_timeout_s
        self.station = cfg.station
        self.connected = False
        self.attempts = 0          # connection attempts
        self.connections = 0       # connections that reached CONNACK
        self.published = 0         # energy publishes confirmed by PUBACK (resends included)
        self.resends = 0           # rows put back to pending (reconnect or ack timeout)
        self.dropped_commands = 0  # invalid setpoint / demand messages dropped
        self.last_error = None
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._rng = random.Random(seed)
        self._telemetry_seq = 0
        self._last_ack_move = time.monotonic()

    # --- called by the daemon -----------------------------------------------------------
    def notify(self):
        """New rows in the outbox: wake the sender."""
        self._wake.set()

    def stop(self):
        self._stop.set()
        self._wake.set()

    async def run(self):
        """Connect, send, reconnect with backoff, until ``stop()``."""
        backoff = self.cfg.backoff_min_s
        while not self._stop.is_set():
            self.attempts += 1
            try:
                ctx = tls.client_context(self.cfg.tls)
                await self._session(ctx)
                backoff = self.cfg.backoff_min_s
            except tls.CertificateExpired as e:
                self._failed(e, logging.ERROR, str(e))
            except (KeyFileError, tls.TlsRejected) as e:
                self._failed(e, logging.ERROR, "mqtt %s:%d: %s" % (
                    self.cfg.host, self.cfg.port, e))
            except (aiomqtt.MqttError, OSError, ssl.SSLError, asyncio.TimeoutError) as e:
                exp = tls.explain(e, self.cfg.tls, self.cfg.host, self.cfg.port)
                if exp is not None:
                    self._failed(exp, logging.ERROR, str(exp))
                else:
                    self._failed(e, logging.WARNING, "mqtt %s:%d: %s: %s" % (
                        self.cfg.host, self.cfg.port, type(e).__name__, e))
            finally:
                self.connected = False
            if self._stop.is_set():
                break
            delay = backoff * self._rng.uniform(0.5, 1.0)
            log.info("mqtt: retry in %.2f s (%d records kept in the outbox)",
                     delay, self.outbox.unacked(self.station))
            await wait_event(self._stop, delay)
            backoff = min(backoff * 2, self.cfg.backoff_max_s)

    def _failed(self, exc, level, text):
        self.last_error = exc
        log.log(level, text)

    # --- one connection -----------------------------------------------------------------
    async def _session(self, ctx):
        st = self.station
        async with aiomqtt.Client(
                hostname=self.cfg.host, port=self.cfg.port, identifier="daemon-" + st,
                tls_context=ctx, clean_session=True, keepalive=self.cfg.keepalive_s,
                timeout=self.cfg.connect_timeout_s) as client:
            self.connected = True
            self.connections += 1
            log.info("mqtt: connected to %s:%d (TLS 1.3) as %s", self.cfg.host, self.cfg.port,
                     st)
            subs = [(topic(st, "energy/ack"), 1), (topic(st, "cmd/setpoint"), 1),
                    (topic(st, "demand"), 1)]
            if self.heartbeat_topic:
                subs.append((self.heartbeat_topic, 0))
            await client.subscribe(subs)
            n = self.outbox.requeue_sent(st)
            self.resends += n
            self._last_ack_move = time.monotonic()
            tasks = [asyncio.create_task(self._receiver(client)),
                     asyncio.create_task(self._sender(client)),
                     asyncio.create_task(self._stop.wait())]
            if self.telemetry is not None:
                tasks.append(asyncio.create_task(self._telemetry_loop(client)))
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    raise t.exception()

    async def _sender(self, client):
        st = self.station
        ack_timeout = self.cfg.ack_timeout_s
        while True:
            rows = self.outbox.pending(st, self.batch)
            if rows:
                results = await asyncio.gather(
                    *(client.publish(topic(st, "energy"), p, qos=1,
                                     timeout=self.publish_timeout_s) for _, p in rows),
                    return_exceptions=True)
                ok = [seq for (seq, _), r in zip(rows, results, strict=True) if r is None]
                self.outbox.mark_sent(st, ok)
                self.published += len(ok)
                errors = [r for r in results if r is not None]
                if errors:
                    raise errors[0]
                continue
            if self.outbox.sent_unacked(st) and \
                    time.monotonic() - self._last_ack_move > ack_timeout:
                n = self.outbox.requeue_sent(st)
                self.resends += n
                log.warning("mqtt: no energy/ack progress for %.1f s: sending %d unacked "
                            "records again", ack_timeout, n)
                self._last_ack_move = time.monotonic()
                ack_timeout = min(ack_timeout * 2, 600.0)
                continue
            self._wake.clear()
            await wait_event(self._wake, 0.25)

    async def _receiver(self, client):
        st = self.station
        async for msg in client.messages:
            t = str(msg.topic)
            try:
                if t == topic(st, "energy/ack"):
                    self._on_ack(msg.payload)
                elif t == topic(st, "cmd/setpoint"):
                    self.on_setpoint(commands.parse_setpoint(msg.payload, self.cfg))
                elif t == topic(st, "demand"):
                    await self._on_demand(client, msg.payload)
                elif self.heartbeat_topic and msg.topic.matches(self.heartbeat_topic):
                    self.on_heartbeat()
            except commands.CommandError as e:
                self.dropped_commands += 1
                log.warning("mqtt %s: dropped: %s", t, e)

    def _on_ack(self, payload):
        try:
            d = json.loads(payload)
            acked = d["acked_seq"]
            if type(acked) is not int or acked < 0 or d.get("station") != self.station:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            self.dropped_commands += 1
            log.warning("mqtt energy/ack: dropped: payload %r is not {station: %r, "
                        "acked_seq: int}", payload[:200], self.station)
            return
        if self.outbox.apply_ack(self.station, acked):
            self._last_ack_move = time.monotonic()
            self._wake.set()

    async def _on_demand(self, client, payload):
        demand = commands.parse_demand(payload, self.cfg)
        offer = commands.make_offer(demand, self.ev_state())
        out = {"station": self.station, "id": demand["id"], "fw": self.fw,
               "direction": demand["direction"], "p_w": offer["p_w"],
               "energy_wh": offer["energy_wh"], "duration_s": demand["duration_s"]}
        await client.publish(topic(self.station, "offer"), json.dumps(out), qos=1)
        if offer["p_w"] > 0:
            sign = -1 if demand["direction"] == "export" else 1
            self.on_setpoint({"id": "demand-%s" % demand["id"], "p_w": sign * offer["p_w"],
                              "q_var": 0})

    async def _telemetry_loop(self, client):
        while True:
            snap = self.telemetry()
            if snap is not None:
                self._telemetry_seq += 1
                body = dict(snap)
                body.update(station=self.station, seq=self._telemetry_seq, fw=self.fw,
                            t=round(time.time(), 3))
                await client.publish(topic(self.station, "telemetry"), json.dumps(body), qos=0)
            await asyncio.sleep(self.cfg.telemetry_s)
