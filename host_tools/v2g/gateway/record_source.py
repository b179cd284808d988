"""STAND-IN for the board's energy journal: interval records from a simple power profile.

Until the board journal lands (issue 11, items 1-3), this generates the records the board
will send over the link, so the outbox, publisher, broker and ledger can be exercised end
to end. It is deterministic: record ``k`` of a station is a pure function of (station, k),
so a restarted daemon stand-in can "replay" records as a board would after a reconnect.

Profile: record 1 is a ``session_start`` (no energy), then ``interval`` records of
``interval_s`` simulated seconds exporting around ``p_export_w`` (a slow ripple of +-30 %
and a 5 % charge-back every 7th interval), the last record (``count``) a ``session_end``.
The EV's SoC falls with the exported energy from 80 % (capacity 60 kWh). Every 13th
interval carries the ``power_cut`` flag (energy up to the cut, as the journal will).

Context: host (tests, ``make billing-demo``); not part of the daemon.
"""

import math

from v2g.common.energy_record import EnergyRecord

T0 = 1767225600  # 2026-01-01T00:00:00Z, the simulated session's start


class ProfileSource:
    """Deterministic records for ``station``: ``record(k)`` for k = 1 .. ``count``."""

    def __init__(self, station, count, fw="v2g-fw stand-in", interval_s=60,
                 p_export_w=7000.0, capacity_wh=60000.0, soc0_pm=800, session=1):
        self.station, self.count, self.fw = station, count, fw
        self.interval_s, self.p_export_w = interval_s, p_export_w
        self.capacity_wh, self.soc0_pm, self.session = capacity_wh, soc0_pm, session
        self._cum = [0]  # cumulative net export (mWh) before record k (index k-1)

    def _energy(self, k):
        """(import_mwh, export_mwh) of record k."""
        if k == 1 or k == self.count:
            return 0, 0
        if k % 7 == 0:
            p = 0.05 * self.p_export_w
            return int(round(p * self.interval_s / 3.6)), 0
        p = self.p_export_w * (1.0 + 0.3 * math.sin(k / 5.0))
        frac = 0.4 if k % 13 == 0 else 1.0
        return 0, int(round(p * self.interval_s * frac / 3.6))

    def _soc(self, net_export_mwh):
        pm = self.soc0_pm - net_export_mwh / 1000.0 / self.capacity_wh * 1000.0
        return max(0, min(1000, int(round(pm))))

    def record(self, k):
        """The k-th record (1-based)."""
        if not 1 <= k <= self.count:
            raise IndexError(k)
        while len(self._cum) < k:
            i, e = self._energy(len(self._cum))
            self._cum.append(self._cum[-1] + e - i)
        imp, exp = self._energy(k)
        kind = "session_start" if k == 1 else "session_end" if k == self.count else "interval"
        t0 = T0 + (k - 1) * self.interval_s
        flags = ("power_cut",) if kind == "interval" and k % 13 == 0 else ()
        return EnergyRecord(
            station=self.station, seq=k, kind=kind, session=self.session, t_start=t0,
            t_end=t0 + (self.interval_s if kind == "interval" else 0),
            import_mwh=imp, export_mwh=exp, fw=self.fw,
            soc_start_pm=self._soc(self._cum[k - 1]), soc_end_pm=self._soc(
                self._cum[k - 1] + exp - imp), flags=flags)

    def metered(self):
        """Totals over all records: ``{"wh_export", "wh_import", "records"}``."""
        e = i = 0
        for k in range(1, self.count + 1):
            a, b = self._energy(k)
            i, e = i + a, e + b
        return {"wh_export": e / 1000.0, "wh_import": i / 1000.0, "records": self.count}
