"""The mapping between the car (ISO 15118), the back end (OCPP) and the firmware (link).

One ``SessionMapping`` per charge point. It holds the newest *validated* limits of each
party and turns them into two idempotent firmware commands over a ``LinkPeer``-like
object (``ev_limits``, ``setpoint``, ``session``, ``image``):

- ``EV_SOC`` (permille) whenever the car's SoC changes: the board's energy journal puts it
  in its records (interval start/end SoC);
- ``EV_LIMITS`` (charge/discharge W, SoC floor) whenever the car's limits change; at or
  below the car's SoC floor the discharge limit sent is 0, so the firmware never drains
  the battery below it;
- ``SETPOINT`` whenever the target power changes: the CSMS's setpoint (or discharge
  limit, or charge limit) clamped to the tightest of the car's, the CSMS's and the EVSE's
  rated limits (derated as the register image says). The same target is never sent with
  a new id; a timed-out command is sent again with the same id (the board's path is
  idempotent). The firmware clamps again every supervisor cycle (grid, thermal, rating):
  the daemon passes limits, the firmware enforces them.

Nothing here blocks the caller: ``update_ev``/``update_csms`` store and wake a pusher task;
the ISO 15118 charge loop reads ``target_w()`` at once (the EV's loop timeout is 0.5 s).
Bad input (NaN, negative or implausible powers, SoC outside 0..100) is refused with a
logged reason naming the field; the last good value stays in force.
Context: host (the daemon's event loop).
"""

import asyncio
import itertools
import logging
import math

log = logging.getLogger("v2g.gateway.session")

# plausibility bounds for limits from the car or the CSMS (W); beyond them: refused
MAX_PLAUSIBLE_W = 1_000_000


def _refuse(source, field, value, why):
    log.warning("REFUSED %s %s=%r: %s; firmware keeps its last good limits",
                source, field, value, why)


def check_power(source, field, value, allow_negative=False):
    """``value`` as a float when it is a plausible power (W), else None (logged)."""
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        _refuse(source, field, value, "not a number")
        return None
    if math.isnan(v) or math.isinf(v):
        _refuse(source, field, value, "not a finite number")
        return None
    lo = -MAX_PLAUSIBLE_W if allow_negative else 0
    if not lo <= v <= MAX_PLAUSIBLE_W:
        _refuse(source, field, value, "outside %d..%d W" % (lo, MAX_PLAUSIBLE_W))
        return None
    return v


def check_soc(source, field, value):
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        _refuse(source, field, value, "not a number")
        return None
    if not 0 <= v <= 100:
        _refuse(source, field, value, "outside 0..100 %")
        return None
    return v


class SessionMapping:
    """Limits of car, CSMS and EVSE -> firmware commands and the EV's target power."""

    EV_FIELDS = ("max_charge_w", "max_discharge_w", "soc", "soc_min", "target_soc",
                 "departure_s", "v2x_max_wh", "v2x_min_wh")

    def __init__(self, firmware, *, rated_w=11000.0, setpoint_ids=None, retry_s=0.3,
                 timeout_s=2.0):
        self.firmware = firmware
        self.rated_w = float(rated_w)
        self.ids = setpoint_ids or itertools.count(1)
        self.retry_s = retry_s
        self.timeout_s = timeout_s
        self.ev = dict.fromkeys(self.EV_FIELDS)
        self.csms = {"setpoint_w": None, "charge_limit_w": None, "discharge_limit_w": None}
        self.active = False
        self.session_open = False
        self.session_id = 0
        self.sent_ev_limits = None
        self.sent_soc_pm = None
        self.sent_setpoint = None  # (id, p_w)
        self.commands = []  # (kind, args) as sent, for tests and the demo
        self.refused = 0
        self._wake = asyncio.Event()
        self._task = None
        self.listeners = []  # callables(kind, mapping) on every change

    # ---- inputs ----

    def update_ev(self, **kw):
        """The car's limits and needs (W, % SoC, s). Unknown keys are refused."""
        changed = False
        for k, v in kw.items():
            if k not in self.EV_FIELDS:
                _refuse("EV", k, v, "unknown field")
                self.refused += 1
                continue
            if v is None:
                continue
            if k in ("max_charge_w", "max_discharge_w"):
                good = check_power("EV", k, v)
            elif k in ("soc", "soc_min", "target_soc"):
                good = check_soc("EV", k, v)
            elif k in ("v2x_max_wh", "v2x_min_wh"):
                good = float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None
            else:
                good = v if isinstance(v, (int, float)) and 0 <= v < 2**32 else None
                if good is None:
                    _refuse("EV", k, v, "outside 0..2**32-1 s")
            if good is None:
                self.refused += 1
                continue
            if self.ev[k] != good:
                self.ev[k] = good
                changed = True
        if changed:
            self._changed("ev")
        return changed

    def update_csms(self, setpoint_w=None, charge_limit_w=None, discharge_limit_w=None,
                    clear=False):
        """The CSMS's V2X setpoint (W, > 0 charges the EV, < 0 exports) and limits (W,
        both >= 0). ``clear``: drop what the CSMS set before (profile cleared)."""
        if clear:
            self.csms = dict.fromkeys(self.csms)
        new = dict(self.csms)
        if setpoint_w is not None:
            v = check_power("CSMS", "setpoint", setpoint_w, allow_negative=True)
            if v is None:
                self.refused += 1
                return False
            new["setpoint_w"] = v
        for name, val in (("charge_limit_w", charge_limit_w),
                          ("discharge_limit_w", discharge_limit_w)):
            if val is not None:
                v = check_power("CSMS", name, val)
                if v is None:
                    self.refused += 1
                    return False
                new[name] = v
        if new != self.csms:
            self.csms = new
            self._changed("csms")
            return True
        return clear

    # ---- derived ----

    def evse_limits(self):
        """(max charge W, max discharge W) of the EVSE: rated, derated per the image."""
        img = getattr(self.firmware, "image", None) or {}
        derate = img.get("derate_pct", 0) or 0
        cap = self.rated_w * (1 - derate / 100.0) if derate else self.rated_w
        return cap, cap

    def at_soc_floor(self):
        """True at or below the car's SoC floor, and while the car has named a floor but
        not yet its present SoC (no discharge on an unknown SoC)."""
        soc, floor = self.ev["soc"], self.ev["soc_min"]
        return floor is not None and (soc is None or soc <= floor)

    def bounds(self):
        """(lowest, highest) power allowed now, W (< 0 export): the tightest limits."""
        evse_c, evse_d = self.evse_limits()
        hi = min(x for x in (evse_c, self.ev["max_charge_w"], self.csms["charge_limit_w"])
                 if x is not None)
        dis = min(x for x in (evse_d, self.ev["max_discharge_w"] or 0.0,
                              self.csms["discharge_limit_w"]) if x is not None)
        if self.at_soc_floor():
            dis = 0.0
        return -dis, hi

    def target_w(self):
        """The power the EV is told to take (> 0) or give (< 0): CSMS setpoint clamped.
        Without a CSMS setpoint: charge at the allowed maximum, unless the CSMS set only a
        discharge limit (then discharge at it)."""
        lo, hi = self.bounds()
        sp = self.csms["setpoint_w"]
        if sp is None:
            sp = -self.csms["discharge_limit_w"] if self.csms["discharge_limit_w"] else hi
        return float(round(max(lo, min(hi, sp))))

    def ev_limits_for_firmware(self):
        dis = 0 if self.at_soc_floor() else int(self.ev["max_discharge_w"] or 0)
        floor = self.ev["soc_min"]
        return (int(self.ev["max_charge_w"] or 0), dis,
                int(round(floor * 10)) if floor is not None else 0)

    # ---- firmware side ----

    def _changed(self, kind):
        self._wake.set()
        for fn in self.listeners:
            fn(kind, self)

    def start(self):
        if self._task is None:
            self._task = asyncio.ensure_future(self._pusher())

    async def stop(self):
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def begin(self, session_id, energize=True):
        """Session start over the link: SESSION start (the firmware closes the contactors;
        DC: at the cable check), then, with ``energize`` (PowerDelivery START), the target
        power as a setpoint."""
        if not self.session_open:
            self.session_open = True
            self.session_id = session_id
            await self._command("session", True, session_id)
        if energize:
            self.active = True
            self._wake.set()

    async def end(self, reason):
        """Session stop from the car, the CSMS or the daemon: SESSION stop (cease power,
        open the contactors); the firmware does it even if a setpoint is still in force."""
        log.info("session %d stop: %s", self.session_id, reason)
        self.active = False
        self.session_open = False
        await self._command("session", False, self.session_id)
        self.sent_setpoint = None

    async def _command(self, kind, *args):
        """One command, sent again (same arguments, so the same setpoint id) until the
        board answers."""
        while True:
            self.commands.append((kind, args))  # every attempt, for tests
            try:
                res = await getattr(self.firmware, kind)(*args, timeout=self.timeout_s)
            except (asyncio.TimeoutError, ConnectionError) as e:
                log.warning("firmware %s%r: %s; sending again", kind, args, e or "timeout")
                await asyncio.sleep(self.retry_s)
                continue
            if res is not None and not res.ok and res.status != "DUPLICATE":
                log.warning("firmware refused %s%r: %s %s", kind, args, res.status, res.detail)
            return res

    async def push_once(self):
        """Send what changed since the last push (the EV's SoC and limits first, then the
        setpoint)."""
        soc = self.ev["soc"]
        if soc is not None and hasattr(self.firmware, "ev_soc"):
            soc_pm = int(round(soc * 10))
            if soc_pm != self.sent_soc_pm:
                res = await self._command("ev_soc", soc_pm)
                if res is None or res.ok:
                    self.sent_soc_pm = soc_pm
        lim = self.ev_limits_for_firmware()
        if lim != self.sent_ev_limits and self.ev["max_charge_w"] is not None:
            res = await self._command("ev_limits", *lim)
            if res is None or res.ok:
                self.sent_ev_limits = lim
        if not self.active:
            return
        p = int(self.target_w())
        if self.sent_setpoint is None or self.sent_setpoint[1] != p:
            sp_id = next(self.ids)
            res = await self._command("setpoint", sp_id, p, 0)
            if res is None or res.ok or res.status == "DUPLICATE":
                self.sent_setpoint = (sp_id, p)

    async def _pusher(self):
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.push_once()
