"""A session's energy from the firmware's register image (the meter behind OCPP).

The v1 register image carries the firmware's energy counters (integrated on the board
from the measured power) in whole Wh: over a short session that is too coarse for a
TransactionEvent that must equal the firmware's metered energy within 0.5 %. ``Meter``
takes the whole Wh from the firmware's counters and only the two sub-Wh ends from the
power in force between images:

    energy = head + (counter now - counter at its first step) + tail

``head`` is the energy integrated (power in force x the board's clock between images)
from the session's start to the counter's first step (the part of a Wh the board had
not counted before the session), ``tail`` the energy integrated since its newest step,
each clamped to 0..1 Wh. Without any step yet it is the
integral alone. The error is the integration's over at most two Wh, whatever the session's
length. An image type with a finer counter (``energy_export_mwh``) is taken as is.
Context: host (the daemon's event loop; fed every register image).
"""


class _Dir:
    """One direction (import or export): counter in Wh, power in W (>= 0)."""

    def __init__(self):
        self.start_wh = None  # counter at start
        self.first_wh = None  # counter at its first step after the start
        self.last_wh = None
        self.head_mwh = 0.0
        self.tail_mwh = 0.0

    def start(self, wh):
        self.start_wh = self.last_wh = wh
        self.first_wh = None
        self.head_mwh = self.tail_mwh = 0.0

    def feed(self, wh, p_w, dt):
        if self.start_wh is None:
            return
        e = max(0.0, p_w) * dt / 3.6  # mWh
        if wh != self.last_wh:
            if self.first_wh is None:
                self.first_wh = wh - 1
                self.head_mwh = min(1000.0, self.tail_mwh + e)
            self.tail_mwh = 0.0
            self.last_wh = wh
        else:
            self.tail_mwh = min(1000.0, self.tail_mwh + e)

    def mwh(self):
        if self.start_wh is None:
            return 0.0
        if self.first_wh is None:
            return self.tail_mwh
        return self.head_mwh + 1000.0 * (self.last_wh - self.first_wh - 1) + self.tail_mwh


class Meter:
    def __init__(self):
        self.imp = _Dir()
        self.exp = _Dir()
        self.t = None
        self.p_w = 0.0
        self.fine = None  # (import, export) mWh at start, when the image has them

    def start(self, image):
        """The session starts now (``image``: the newest register image)."""
        self.imp.start(image.get("energy_import_wh", 0))
        self.exp.start(image.get("energy_export_wh", 0))
        if "energy_export_mwh" in image:
            self.fine = (image["energy_import_mwh"], image["energy_export_mwh"])
        self.t = None

    def feed(self, image, now=None):
        """One register image. The time between images is the board's (``t_ms``), the
        clock its own integrators run on (a simulated board may slip against the host's
        clock under load); ``now`` (s) only for images without ``t_ms``."""
        t = image["t_ms"] / 1000.0 if "t_ms" in image else now
        dt = 0.0 if self.t is None else (t - self.t) % 4294967.296
        if dt > 5.0:
            dt = 0.0  # a gap (link lost, board restarted): integrate nothing over it
        p = self.p_w
        self.imp.feed(image.get("energy_import_wh", 0), p, dt)
        self.exp.feed(image.get("energy_export_wh", 0), -p, dt)
        self.t = t
        # the firmware integrates its measured power while ENERGIZED (4) or DERATED (5);
        # once ceased (flags bit 2) until it leaves that state it goes on integrating the
        # last measured value (the tick no longer updates it): modelled as held
        if image.get("state") not in (4, 5):
            self.p_w = 0.0
        elif not image.get("flags", 0) & 0x04 or "p_meas_w" in image:
            self.p_w = float(image.get("p_meas_w", image.get("p_cmd_w", 0)) or 0)
        self.image = image

    def settled(self):
        """True once the newest image shows the firmware no longer integrating (state
        neither ENERGIZED nor DERATED): the session's energy is final."""
        img = getattr(self, "image", None)
        return img is not None and img.get("state") not in (4, 5)

    def describe(self):
        d = self.exp
        return ("export: counter %s..%s (first step to %s), head %.1f mWh, tail %.1f mWh"
                % (d.start_wh, d.last_wh, None if d.first_wh is None else d.first_wh + 1,
                   d.head_mwh, d.tail_mwh))

    def energy_mwh(self):
        """(import, export) mWh since ``start``."""
        img = getattr(self, "image", None)
        if self.fine is not None and img is not None and "energy_export_mwh" in img:
            return (img["energy_import_mwh"] - self.fine[0],
                    img["energy_export_mwh"] - self.fine[1])
        return self.imp.mwh(), self.exp.mwh()
