"""What a station does when the site energy manager goes quiet (``HoldPolicy``: the rule,
for the daemon and the station emulator; ``HoldGate``: the daemon's use of it between MQTT
and the link).

The SEMS publishes a heartbeat on ``v2g/_sems/<site>/heartbeat`` every ``heartbeat_s``
(and every ``cmd/setpoint`` counts as one). A station holds its last setpoint after the
last heartbeat; then it falls back to its safe local limit: export at most
``safe_export_w`` (0 by default: no export) and import at most ``safe_import_w``.

The fallback is *complete* within ``hold_s``: it starts ``lead_s`` earlier, where
``lead_s`` is the station's time to go from its rating to the safe limit (its power
response plus the poll step; 1.2 s for a 0.2 s first-order response from 11 kW to within
50 W: 0.2 x ln(11000 / 50) = 1.08 s, + 0.1 s). With ``lead_s`` 0 the station holds for the
whole ``hold_s`` and reaches its safe limit one response time later.

    policy = HoldPolicy(hold_s=5.0, lead_s=1.2)
    p_w, mode = policy.effective(last_setpoint_w, last_heartbeat_monotonic, now)

``mode`` is ``"sems"`` (following the SEMS, or holding its last setpoint) or
``"fallback"`` (the safe local limit; also before any heartbeat was heard).

Context: host (daemon, emulator). Times are monotonic seconds.
"""

import asyncio
import collections
import logging
import time
from dataclasses import dataclass

log = logging.getLogger("v2g.sems.hold")


@dataclass(frozen=True)
class HoldPolicy:
    hold_s: float = 5.0
    safe_export_w: float = 0.0
    safe_import_w: float = 0.0
    lead_s: float = 0.0

    def __post_init__(self):
        for k in ("hold_s", "safe_export_w", "safe_import_w", "lead_s"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ValueError("sems hold: %s %r: a number >= 0 is required" % (k, v))
        if self.lead_s >= self.hold_s > 0:
            raise ValueError("sems hold: lead_s %r: must be below hold_s %r"
                             % (self.lead_s, self.hold_s))

    def safe(self, p_w):
        """``p_w`` clamped to the safe local limit."""
        return max(-self.safe_export_w, min(self.safe_import_w, p_w)) + 0.0  # no -0.0

    def effective(self, setpoint_w, last_heartbeat, now):
        """(power to apply, mode) given the last SEMS setpoint and heartbeat time
        (``None``: never heard)."""
        if last_heartbeat is None:
            return self.safe(setpoint_w), "fallback"
        if now - last_heartbeat <= self.hold_s - self.lead_s:
            return setpoint_w, "sems"
        return self.safe(setpoint_w), "fallback"


class HoldGate:
    """The daemon's SEMS hold: every setpoint from ``cmd/setpoint`` (or a demand's offer)
    and every SEMS heartbeat comes in here; ``send(sp)`` passes ``{"id","p_w","q_var"}``
    on to the board over the link only when what the board should do changes (``send``
    returns False when there is no link session: then it is tried again).

    - a new setpoint (id not seen recently) is a heartbeat and goes out unchanged;
    - a repeated id (a QoS 1 redelivery) is only a heartbeat: the board would refuse the
      id as a duplicate anyway;
    - ``poll()`` (every ``POLL_S``): ``hold_s - lead_s`` after the last heartbeat the
      safe-limited setpoint goes out as ``<id>~fallback<n>`` with ``q_var`` 0; the next
      heartbeat brings the held setpoint back as ``<id>~resume<n>`` (fresh ids, since the
      board keeps each setpoint id once).

    Before any setpoint nothing is sent (the board starts at its own safe default).
    Context: host (daemon, asyncio; ``clock`` injectable for tests).
    """

    POLL_S = 0.1
    RETRY_S = 1.0

    def __init__(self, policy, send, clock=time.monotonic):
        self.policy, self.send, self.clock = policy, send, clock
        self.sp = None            # the last SEMS setpoint {"id", "p_w", "q_var"}
        self.hb = None            # monotonic time of the last heartbeat (or setpoint)
        self.mode = "fallback"
        self.sent = None          # (p_w, q_var) last passed to the board
        self.seen = collections.deque(maxlen=64)
        self.n = 0
        self.tried = -1e9         # monotonic time of the last send
        self.fallbacks = 0

    def heartbeat(self, now=None):
        self.hb = self.clock() if now is None else now
        self.poll(self.hb)

    def setpoint(self, sp, now=None):
        now = self.clock() if now is None else now
        if sp["id"] in self.seen:
            self.heartbeat(now)
            return
        self.seen.append(sp["id"])
        self.sp, self.hb, self.mode = dict(sp), now, "sems"
        self._send(sp["id"], sp["p_w"], sp["q_var"], now)

    def poll(self, now=None):
        """Apply the policy now; returns the mode. What the board should do is sent when
        the mode changes, and again (at most every ``RETRY_S``) while an earlier send
        found no link session."""
        if self.sp is None:
            return self.mode
        now = self.clock() if now is None else now
        p, mode = self.policy.effective(self.sp["p_w"], self.hb, now)
        q = self.sp["q_var"] if mode == "sems" else 0
        changed = mode != self.mode
        if changed:
            self.mode = mode
            if mode == "fallback":
                self.fallbacks += 1
                log.warning("sems: no heartbeat for %.1f s: safe local limit, %s W instead "
                            "of %s W", now - self.hb, p, self.sp["p_w"])
            else:
                log.info("sems: heartbeat again: setpoint %s W resumed", p)
        if (p, q) != self.sent and (changed or now - self.tried >= self.RETRY_S):
            self.n += 1
            self._send("%s~%s%d" % (self.sp["id"], "fallback" if mode == "fallback"
                                    else "resume", self.n), p, q, now)
        return self.mode

    def _send(self, sp_id, p_w, q_var, now):
        self.tried = now
        if self.send({"id": sp_id, "p_w": p_w, "q_var": q_var}) is not False:
            self.sent = (p_w, q_var)
        else:
            self.sent = None

    async def run(self):
        while True:
            self.poll()
            await asyncio.sleep(self.POLL_S)
