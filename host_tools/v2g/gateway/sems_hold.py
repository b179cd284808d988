"""What a station does when the site energy manager goes quiet (for the daemon and the
station emulator; no state of its own, no I/O).

The SEMS publishes a heartbeat on ``v2g/_sems/<site>/heartbeat`` every period (and every
``cmd/setpoint`` counts as one). A station holds its last setpoint for ``hold_s`` after the
last heartbeat; then it falls back to its safe local limit: export at most
``safe_export_w`` (0 by default: no export) and import at most ``safe_import_w``.

    policy = HoldPolicy(hold_s=5.0)
    p_w, mode = policy.effective(last_setpoint_w, last_heartbeat_monotonic, now)

``mode`` is ``"sems"`` (following the SEMS, or holding its last setpoint within
``hold_s``) or ``"fallback"`` (the safe local limit; also before any heartbeat was heard).

Context: host (daemon, emulator).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class HoldPolicy:
    hold_s: float = 5.0
    safe_export_w: float = 0.0
    safe_import_w: float = 0.0

    def __post_init__(self):
        for k in ("hold_s", "safe_export_w", "safe_import_w"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ValueError("sems hold: %s %r: a number >= 0 is required" % (k, v))

    def safe(self, p_w):
        """``p_w`` clamped to the safe local limit."""
        return max(-self.safe_export_w, min(self.safe_import_w, p_w))

    def effective(self, setpoint_w, last_heartbeat, now):
        """(power to apply, mode) given the last SEMS setpoint and heartbeat time
        (``None``: never heard)."""
        if last_heartbeat is None:
            return self.safe(setpoint_w), "fallback"
        if now - last_heartbeat <= self.hold_s:
            return setpoint_w, "sems"
        return self.safe(setpoint_w), "fallback"
