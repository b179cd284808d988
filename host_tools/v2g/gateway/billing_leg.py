"""The daemon's billing leg: the board's ENERGY_RECORDs into the outbox, out over MQTT.

Runs inside ``v2g daemon`` when its config has the ``billing:`` and ``mqtt:`` sections
(``billing_config``). For every ENERGY_RECORD the link delivers (in order)::

    rec = energy_record.from_link(values, station, fw)     # fw: the board's HELLO_ACK text
    outcome = outbox.store(rec)                             # signed, committed (WAL, FULL)
    new / exists -> ENERGY_ACK to the board, publisher.notify()
    conflict     -> logged, no ack (the board keeps it; a board bug, never credited twice)
    bad record   -> logged, no ack

The ``Publisher`` (``mqtt_publisher``) runs as one task: records to the back end with QoS 1
over TLS 1.3; setpoints from ``cmd/setpoint`` and the accepted part of a ``demand`` become
link SETPOINTs (the board's idempotent path; the MQTT id is mapped to the link's u32 id by
CRC-32, so a re-sent id stays a duplicate on the board). A ``demand`` is answered with an
offer from the car's state (``Daemon.ev_state``: the ``sim_ev`` stand-in; 0 W without a
car). Every ``telemetry_s`` the station's telemetry goes out (``telemetry``: measured
power, the setpoint in force, the SEMS hold mode, the car), what a site energy manager
plans with (docs/sems.md).

With a ``sems`` section in the config the setpoints pass through the SEMS hold
(``sems_hold.HoldGate``): the publisher also subscribes to the SEMS heartbeat, and
``hold_s`` without one the board is given the safe local limit instead.

Context: host (daemon, asyncio).
"""

import asyncio
import logging
import zlib

from v2g.common.energy_record import RecordError, from_link
from v2g.gateway.mqtt_publisher import Publisher
from v2g.gateway.outbox import Outbox
from v2g.gateway.sems_hold import HoldGate
from v2g.gateway.signing import make_signer
from v2g.link.codec import msgs

log = logging.getLogger("v2g.billing")


def link_setpoint_id(sp_id):
    """The link's u32 setpoint id for an MQTT id (string or int): stable, 1..2**31-1."""
    return (zlib.crc32(str(sp_id).encode()) & 0x7FFFFFFF) or 1


class BillingLeg:
    def __init__(self, daemon, bcfg):
        self.daemon = daemon
        self.cfg = bcfg
        self.outbox = Outbox(bcfg.outbox, make_signer(bcfg.signing_key, bcfg.station))
        self.fw = "unknown"
        self.fw_ready = asyncio.Event()  # records wait for the HELLO_ACK's firmware text
        sems = getattr(daemon.cfg, "sems", None)
        self.hold = HoldGate(sems["policy"], self._setpoint) if sems else None
        self.publisher = Publisher(
            bcfg, self.outbox, fw=self.fw, ev_state=daemon.ev_state,
            telemetry=self.telemetry,
            on_setpoint=self.hold.setpoint if self.hold else self._setpoint,
            heartbeat_topic=sems["topic"] if sems else None,
            on_heartbeat=self.hold.heartbeat if self.hold else None)
        self.stored = {"new": 0, "exists": 0, "conflict": 0, "bad": 0}
        self.acks = 0
        self.last_sp = None  # the last setpoint passed to the board {"id", "p_w", "q_var"}

    def telemetry(self):
        """``{"p_w", "sp_w", "sp_id", "mode", "state", "ev"}`` from the newest register
        image (None without one: nothing is published). ``p_w``: the power the board
        measures (W, > 0 charging the EV); ``sp_w``/``sp_id``: the setpoint last passed to
        the board and its id; ``mode``: the SEMS hold's (``sems``, ``fallback``; null
        without a ``sems`` section); ``ev``: ``Daemon.ev_state()``."""
        peer = self.daemon.peer
        img = peer.image if peer is not None else None
        if img is None:
            return None
        sp = self.last_sp or {}
        st = img.get("state", 0)
        return {"p_w": float(img.get("p_meas_w", 0)), "sp_w": sp.get("p_w"),
                "sp_id": sp.get("id"), "mode": self.hold.mode if self.hold else None,
                "state": msgs.STATES[st] if 0 <= st < len(msgs.STATES) else st,
                "ev": self.daemon.ev_state()}

    def set_fw(self, text):
        self.fw = (text or "unknown").strip()[:64] or "unknown"
        self.publisher.fw = self.fw
        self.fw_ready.set()

    def tasks(self):
        out = [asyncio.ensure_future(self.publisher.run()), asyncio.ensure_future(self.pump())]
        if self.hold is not None:
            out.append(asyncio.ensure_future(self.hold.run()))
        return out

    async def stop(self):
        self.publisher.stop()

    def close(self):
        self.outbox.close()

    def _setpoint(self, sp):
        """Pass ``sp`` to the board; False when there is no link session."""
        peer = self.daemon.peer
        if peer is None or peer.state != "UP":
            log.warning("billing: setpoint %r dropped: no link session", sp.get("id"))
            return False
        sid = link_setpoint_id(sp["id"])
        self.last_sp = dict(sp)

        async def send():
            try:
                res = await peer.setpoint(sid, int(sp["p_w"]), int(sp["q_var"]))
                log.info("billing: setpoint %r -> link id %d: %s", sp["id"], sid,
                         getattr(res, "status", res))
            except (asyncio.TimeoutError, ConnectionError) as e:
                log.warning("billing: setpoint %r not delivered: %s", sp["id"], e)

        asyncio.ensure_future(send())
        return True

    async def pump(self):
        """ENERGY_RECORDs from the link -> outbox -> ENERGY_ACK (only when stored)."""
        await self.fw_ready.wait()  # fw is part of the stored record: never a placeholder
        while True:
            peer = self.daemon.peer
            if peer is None:
                await asyncio.sleep(0.2)
                continue
            try:
                v = await asyncio.wait_for(peer.records.get(), 0.5)
            except asyncio.TimeoutError:
                continue
            try:
                rec = from_link(v, self.cfg.station, self.fw)
            except (RecordError, KeyError) as e:
                self.stored["bad"] += 1
                log.error("billing: record %r refused: %s", v.get("record_no"), e)
                continue
            outcome = self.outbox.store(rec)
            self.stored[outcome] += 1
            if outcome == "conflict":
                log.error("billing: record %d conflicts with the stored one: kept out, not "
                          "acked", rec.seq)
                continue
            try:
                await peer.energy_ack(rec.seq, timeout=5.0)
                self.acks += 1
            except (asyncio.TimeoutError, ConnectionError) as e:
                log.warning("billing: ENERGY_ACK %d not sent: %s (the board sends it again)",
                            rec.seq, e)
            self.publisher.notify()
