"""A session's energy from the firmware's register image (the meter behind OCPP).

The firmware integrates its measured power into import and export counters in mWh
(``firmware/meter.py``); the register image (link version 5) carries them as whole Wh
(``energy_import_wh``, ``energy_export_wh``) plus the mWh below (``energy_*_sub_mwh``,
0..999). A session's energy is the difference of those counters since its start: the
firmware's own figure to the mWh, whatever the image period or the host's load (the
version-4 image carried whole Wh only, and the sub-Wh ends estimated between images missed
the firmware by up to 0.7 % of a 4 Wh session on a loaded machine).

A session's energy is final once the firmware no longer integrates: an image out of
ENERGIZED/DERATED whose measured power is below ``SETTLED_W`` (after a stop the measured
power decays to zero over a few ticks, and the firmware counts that decay).
Context: host (the daemon's event loop; fed every register image).
"""

SETTLED_W = 50.0  # |measured power| below this: a stopped converter adds < 0.02 mWh per ms
ENERGIZED_STATES = (4, 5)  # link_msgs.STATES: ENERGIZED, DERATED


def counters_mwh(image):
    """(import, export) mWh of the board's counters in ``image`` (0, 0 for an empty one)."""
    return (image.get("energy_import_wh", 0) * 1000 + image.get("energy_import_sub_mwh", 0),
            image.get("energy_export_wh", 0) * 1000 + image.get("energy_export_sub_mwh", 0))


class Meter:
    """``start(image)`` at the session's start, ``feed(image)`` with every image after it;
    ``energy_mwh()`` is the session's (import, export) so far. Fed without a start, it
    counts from the first image."""

    def __init__(self):
        self.at_start = None  # (import, export) mWh when the session started
        self.image = None  # the newest image

    def start(self, image):
        """The session starts now (``image``: the newest register image, may be empty)."""
        self.at_start = counters_mwh(image) if image else None
        self.image = image or None

    def feed(self, image, now=None):
        """One register image (``now`` is accepted for the callers' sake, not needed: the
        counters are the board's)."""
        if self.at_start is None:
            self.at_start = counters_mwh(image)
        self.image = image

    def settled(self):
        """True once the newest image shows the firmware no longer integrating."""
        img = self.image
        if img is None or img.get("state") in ENERGIZED_STATES:
            return False
        return abs(float(img.get("p_meas_w", 0) or 0)) < SETTLED_W

    def energy_mwh(self):
        """(import, export) mWh since ``start`` (0, 0 before any image)."""
        if self.image is None or self.at_start is None:
            return 0, 0
        imp, exp = counters_mwh(self.image)
        return imp - self.at_start[0], exp - self.at_start[1]

    def describe(self):
        imp, exp = self.energy_mwh()
        return ("import %d mWh, export %d mWh (board counters %s at the start, %s now)"
                % (imp, exp, self.at_start, None if self.image is None
                   else counters_mwh(self.image)))
