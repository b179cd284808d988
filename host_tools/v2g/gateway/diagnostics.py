"""PLC and pilot diagnostics for the ISO 15118 handshake (the field manual's items).

SLAC (ISO 15118-3 matching over HomePlug Green PHY) needs a real PLC modem; ``PlcModem``
models what the daemon learns from one: the link quality (dBm) and the attenuation the
SLAC exchange measured. With a modem, pyslac's ``SlacSessionController`` runs before the
SECC starts and its matching result (and the modem's signal level) feed
``PlcModem.update`` -- that is where pyslac plugs in; the tests use the model.

- link quality below ``min_quality_dbm`` (-65 dBm) refuses the high-level handshake,
  with a logged reason;
- handshake timeouts (attenuated pilot wire, legacy cable) are counted;
- ``MessageLoss`` counts ISO 15118 messages lost during the negotiation (timeouts and
  retries); above ``threshold_pct`` the fault ``V2G-502`` is raised.
Context: host (the daemon).
"""

import logging

log = logging.getLogger("v2g.gateway.diagnostics")

V2G_502 = "V2G-502"


class PlcModem:
    KEYS = ("link_quality_dbm", "min_quality_dbm")

    def __init__(self, link_quality_dbm=-40.0, min_quality_dbm=-65.0):
        self.link_quality_dbm = float(link_quality_dbm)
        self.min_quality_dbm = float(min_quality_dbm)
        self.refused = 0
        self.handshake_timeouts = 0

    def update(self, link_quality_dbm):
        """New signal level from the modem (pyslac's matching / the modem's status)."""
        self.link_quality_dbm = float(link_quality_dbm)

    def check_handshake(self):
        """(True, "") or (False, reason): may the high-level handshake start?"""
        if self.link_quality_dbm < self.min_quality_dbm:
            self.refused += 1
            return False, ("PLC link quality %.1f dBm below %.1f dBm (pilot-wire attenuation;"
                           " check the cable)" % (self.link_quality_dbm, self.min_quality_dbm))
        return True, ""

    def handshake_timeout(self, detail=""):
        self.handshake_timeouts += 1
        log.warning("ISO 15118 handshake timeout #%d %s", self.handshake_timeouts, detail)

    def counters(self):
        return {"link_quality_dbm": self.link_quality_dbm, "refused": self.refused,
                "handshake_timeouts": self.handshake_timeouts}


class MessageLoss:
    """Message loss during the ISO 15118 negotiation: ``sent``/``lost`` per session."""

    def __init__(self, threshold_pct=5.0, min_messages=10):
        self.threshold_pct = float(threshold_pct)
        self.min_messages = min_messages
        self.sent = 0
        self.lost = 0
        self.fault = None

    def message(self, lost=False):
        self.sent += 1
        if lost:
            self.lost += 1
        if self.fault is None and self.sent >= self.min_messages \
                and 100.0 * self.lost / self.sent > self.threshold_pct:
            self.fault = V2G_502
            log.error("ERROR: %s packet-loss threshold violated during ISO 15118 negotiation"
                      " (%d of %d messages lost, threshold %.1f %%)", V2G_502, self.lost,
                      self.sent, self.threshold_pct)
        return self.fault
