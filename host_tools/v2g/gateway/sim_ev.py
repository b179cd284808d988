"""A stand-in car for simulated sites: what ISO 15118 would tell the daemon, without a car.

On a real station the car's limits and state of charge come from the ISO 15118 session
(``station``). A simulated site (the SEMS bench: many simulated boards, each behind its
own daemon) has no car and no JVM to spare per station, so the daemon's ``sim_ev`` section
stands in for one: a battery of ``capacity_wh`` at ``soc_pm`` when plugged in, with the
EV's power limits and SoC window. Its SoC follows the firmware's own metered energy (the
register image's counters, ``meter.Meter``): import raises it, export lowers it. Like a
car's BMS it offers no discharge at or below ``soc_min_pm`` and no charge at or above
``soc_max_pm``.

What it does on the link, as the ISO 15118 session does: at every new link session
EV_LIMITS (charge, discharge, SoC floor), EV_SOC and SESSION start (the board closes its
contactors and follows setpoints); afterwards EV_LIMITS when a limit changes (floor or
ceiling reached) and EV_SOC when the SoC moves by a permille. Its state is the daemon's
``ev_state()`` (MQTT telemetry and demand offers, ``commands.make_offer`` fields).

Config (``v2g daemon``; refused beside ``station``, which has the real car)::

    sim_ev: {soc_pm: 800, soc_min_pm: 200, soc_max_pm: 1000, capacity_wh: 60000,
             max_charge_w: 11000, max_discharge_w: 11000}

Context: host (daemon, asyncio). Simulated sites only.
"""

import asyncio
import logging

from v2g.gateway.meter import Meter

log = logging.getLogger("v2g.sim_ev")

DEFAULTS = {"soc_pm": 800.0, "soc_min_pm": 200.0, "soc_max_pm": 1000.0,
            "capacity_wh": 60000.0, "max_charge_w": 11000.0, "max_discharge_w": 11000.0}
RANGES = {"soc_pm": (0.0, 1000.0), "soc_min_pm": (0.0, 1000.0), "soc_max_pm": (0.0, 1000.0),
          "capacity_wh": (1.0, 1e7), "max_charge_w": (0.0, 1e6),
          "max_discharge_w": (0.0, 1e6)}
POLL_S = 0.2


class SimEv:
    def __init__(self, spec, session_id=1):
        self.spec = dict(DEFAULTS, **spec)
        self.soc0_pm = self.spec["soc_pm"]
        self.meter = Meter()  # counts from the first image
        self.session_id = session_id
        self.peer = None  # (LinkPeer, nonce) the car was announced on (None: again)
        self.listening = None  # the LinkPeer whose images feed the meter
        self.sent_limits = self.sent_soc = None

    def on_image(self, img, now=None):
        self.meter.feed(img, now)

    def soc_pm(self):
        imp, exp = self.meter.energy_mwh()
        # mWh / Wh = permille of the capacity
        pm = self.soc0_pm + (imp - exp) / self.spec["capacity_wh"]
        return min(1000.0, max(0.0, pm))

    def state(self):
        """The car as the daemon reports it (``commands.make_offer``'s EV fields)."""
        s, soc = self.spec, self.soc_pm()
        return {"soc_pm": round(soc, 2), "soc_min_pm": s["soc_min_pm"],
                "soc_max_pm": s["soc_max_pm"], "capacity_wh": s["capacity_wh"],
                "max_charge_w": s["max_charge_w"] if soc < s["soc_max_pm"] else 0.0,
                "max_discharge_w": s["max_discharge_w"] if soc > s["soc_min_pm"] else 0.0}

    async def step(self, peer):
        """Tell the board what changed (everything, on a new link session)."""
        if peer is None or peer.state != "UP":
            return
        if peer is not self.listening:
            peer.image_listeners.append(self.on_image)
            self.listening = peer
        if (peer, peer.nonce) != self.peer:  # a new link session: announce the car
            # the board may have restarted (its counters from 0): carry the SoC over
            self.soc0_pm, self.meter = self.soc_pm(), Meter()
            self.peer, self.sent_limits, self.sent_soc = (peer, peer.nonce), None, None
        ev = self.state()
        limits = (int(ev["max_charge_w"]), int(ev["max_discharge_w"]),
                  int(ev["soc_min_pm"]))
        if limits != self.sent_limits:
            await peer.ev_limits(*limits)
            log.info("sim_ev: EV_LIMITS charge %d W, discharge %d W, floor %d permille",
                     *limits)
            if self.sent_limits is None:
                await peer.ev_soc(int(ev["soc_pm"]))
                await peer.session(True, self.session_id)
                self.sent_soc = int(ev["soc_pm"])
                log.info("sim_ev: plugged in at %d permille: SESSION start", self.sent_soc)
            self.sent_limits = limits
        if int(ev["soc_pm"]) != self.sent_soc:
            await peer.ev_soc(int(ev["soc_pm"]))
            self.sent_soc = int(ev["soc_pm"])

    async def run(self, get_peer):
        while True:
            try:
                await self.step(get_peer())
            except (asyncio.TimeoutError, ConnectionError) as e:
                log.warning("sim_ev: not delivered: %s (announcing the car again)", e)
                self.peer = None
            await asyncio.sleep(POLL_S)
