"""A stand-in for the firmware behind the link, with ``LinkPeer``'s methods.

Used by the ISO 15118 tests and ``make v2g-demo`` where the simulated board is not wired
to the daemon yet: it answers ``setpoint``/``ev_limits``/``session`` like the board's
handlers (RESULT OK / DUPLICATE / REJECTED), keeps a ``register_image`` dict with
``REGISTER_FIELDS`` names, and each supervisor period (``period_s``) clamps the command to
the tightest of the EV's limits, the grid limit (``grid_limit_w``, volt-watt), the thermal
derating and the rating, ramps at ``ramp_w_s`` and integrates the metered energy. Energy
records (``records`` queue, ``energy_ack``) carry mWh per interval as the board's journal
does. A session stop ceases power, then opens the contactors (OPENING, then OPEN).
Context: host (tests, demo).
"""

import asyncio

from v2g.link.peer import Result

OPEN, CLOSED, PRECHARGING, OPENING = 1, 2, 3, 4


class FirmwareModel:
    def __init__(self, *, rated_w=11000, ramp_w_s=100000.0, period_s=0.01,
                 precharge_s=0.05, record_s=1.0, clock=None):
        self.rated_w = rated_w
        self.ramp_w_s = ramp_w_s
        self.period_s = period_s
        self.precharge_s = precharge_s
        self.record_s = record_s
        self.clock = clock
        self.grid_limit_w = None  # volt-watt / 1547 export limit, W (None = none)
        self.derate_pct = 0
        self.seen_ids = set()
        self.setpoint_id = 0
        self.p_set_w = 0
        self.p_w = 0.0  # power at the plant, W (> 0 charging the EV)
        self.ev = (0, 0, 0)  # max_charge_w, max_discharge_w, soc_min_permille
        self.session_id = 0
        self.active = False
        self.contactor = OPEN
        self._contactor_t = 0.0
        self.import_mwh = 0.0
        self.export_mwh = 0.0
        self.applied = []  # commands as applied, in order
        self.records = asyncio.Queue()
        self.unacked = {}
        self._rec_no = 0
        self._rec_start = 0.0
        self._rec_mwh = [0.0, 0.0]
        self.t = 0.0
        self.max_over_w = 0.0  # worst |p| above the tightest limit seen after settling
        self.state = "UP"
        self._task = None
        self.fail_next = 0  # tests: the next N commands time out (not applied)

    # ---- LinkPeer-like commands ----

    def _res(self, status, detail=""):
        return Result(status, detail, 0, 0)

    async def _gate(self, timeout):
        if self.fail_next:
            self.fail_next -= 1
            await asyncio.sleep(min(timeout, 0.05))
            raise asyncio.TimeoutError("no RESULT")

    async def setpoint(self, setpoint_id, p_w, q_var, timeout=5.0):
        await self._gate(timeout)
        if setpoint_id in self.seen_ids:
            return self._res("DUPLICATE", "setpoint id %d seen before" % setpoint_id)
        self.seen_ids.add(setpoint_id)
        if abs(p_w) > 10 * self.rated_w:
            return self._res("REJECTED", "p_w %d outside +/-%d W" % (p_w, 10 * self.rated_w))
        self.setpoint_id, self.p_set_w = setpoint_id, p_w
        self.applied.append(("setpoint", setpoint_id, p_w, q_var))
        return self._res("OK")

    async def ev_limits(self, max_charge_w, max_discharge_w, soc_min_permille, timeout=5.0):
        await self._gate(timeout)
        if max_charge_w < 0 or max_discharge_w < 0 or not 0 <= soc_min_permille <= 1000:
            return self._res("REJECTED", "ev_limits out of range")
        self.ev = (max_charge_w, max_discharge_w, soc_min_permille)
        self.applied.append(("ev_limits", max_charge_w, max_discharge_w, soc_min_permille))
        return self._res("OK")

    async def ev_soc(self, soc_pm, timeout=5.0):
        await self._gate(timeout)
        if not 0 <= soc_pm <= 1000 and soc_pm != 0xFFFF:
            return self._res("REJECTED", "soc_pm out of range")
        self.applied.append(("ev_soc", soc_pm))
        return self._res("OK")

    async def session(self, start, session_id=0, timeout=5.0):
        await self._gate(timeout)
        self.applied.append(("session", 1 if start else 0, session_id))
        if start:
            self.active = True
            self.session_id = session_id
            if self.contactor != CLOSED:
                self.contactor = PRECHARGING
                self._contactor_t = self.t
        else:
            self.active = False
            self.p_set_w = 0
            self.p_w = 0.0  # cease power first
            if self.contactor in (CLOSED, PRECHARGING):
                self.contactor = OPENING
                self._contactor_t = self.t
            self._emit_record()
        return self._res("OK")

    async def energy_ack(self, record_no, timeout=5.0):
        self.unacked.pop(record_no, None)

    # ---- supervisor cycle ----

    def limits(self):
        """(lowest, highest) power the supervisor allows now, W."""
        cap = self.rated_w * (1 - self.derate_pct / 100.0)
        hi = min(cap, self.ev[0])
        lo = -min(cap, self.ev[1])
        if self.grid_limit_w is not None:
            lo = max(lo, -self.grid_limit_w)
        return lo, hi

    def step(self, dt):
        self.t += dt
        if self.contactor == PRECHARGING and self.t - self._contactor_t >= self.precharge_s:
            self.contactor = CLOSED
        if self.contactor == OPENING and self.t - self._contactor_t >= self.precharge_s:
            self.contactor = OPEN
        lo, hi = self.limits()
        target = max(lo, min(hi, self.p_set_w)) if (self.active and self.contactor == CLOSED) \
            else 0.0
        step = self.ramp_w_s * dt
        self.p_w += max(-step, min(step, target - self.p_w))
        # the clamp is applied every cycle, also to a ramp already under way
        self.p_w = max(lo, min(hi, self.p_w)) if self.active else 0.0
        mwh = abs(self.p_w) * dt / 3.6
        if self.p_w > 0:
            self.import_mwh += mwh
            self._rec_mwh[0] += mwh
        elif self.p_w < 0:
            self.export_mwh += mwh
            self._rec_mwh[1] += mwh
        if self.active and self.t - self._rec_start >= self.record_s:
            self._emit_record()

    def _emit_record(self):
        imp, exp = (int(round(x)) for x in self._rec_mwh)
        if not (imp or exp):
            self._rec_start = self.t
            return
        rec = {"record_no": self._rec_no, "session_id": self.session_id,
               "t_start_s": int(self._rec_start), "t_end_s": int(self.t),
               "import_mwh": imp, "export_mwh": exp}
        # keep the rounding remainder for the next record: the sum stays exact
        self._rec_mwh = [self._rec_mwh[0] - imp, self._rec_mwh[1] - exp]
        self._rec_no += 1
        self._rec_start = self.t
        self.unacked[rec["record_no"]] = rec
        self.records.put_nowait(rec)

    @property
    def image(self):
        return {
            "t_ms": int(self.t * 1000) & 0xFFFFFFFF, "state": 4 if self.active else 1,
            "contactor_status": self.contactor, "derate_pct": self.derate_pct,
            "flags": 0b11, "f_mhz": 50000, "v_min_mpu": 1000, "v_max_mpu": 1000,
            "v_dc_dv": 4000, "p_cmd_w": int(round(self.p_w)), "q_cmd_var": 0,
            "setpoint_id": self.setpoint_id, "t_module_dc": 400,
            "energy_import_wh": int(self.import_mwh // 1000),
            "energy_export_wh": int(self.export_mwh // 1000),
            "energy_import_sub_mwh": int(self.import_mwh) % 1000,
            "energy_export_sub_mwh": int(self.export_mwh) % 1000,
            "ev_max_charge_w": self.ev[0], "ev_max_discharge_w": self.ev[1],
            "fault_count": 0, "last_fault": b"", "tick_count": 0, "tick_overruns": 0,
        }

    async def _run(self):
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.period_s)
            now = loop.time()
            self.step(now - last)
            last = now

    def start(self):
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        return self

    async def close(self):
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
