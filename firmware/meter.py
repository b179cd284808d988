"""Energy metering: import and export energy per phase and in total, in fixed point.

Every supervisor period ``Meter.step(now_ms)`` reads the tick's measured active power
(``current.P_MEAS``, the dq product of measured voltage and current, Q12 of rated) and
integrates it over the time since the last step:

    p_w = round(P_MEAS * p_rated_w / 4096)              whole W
    e   = p_w * dt_ms                                   W * ms = mWs (mJ)
    acc_mwh += (rem + e) // 3600 ; rem = (rem + e) % 3600

so every mWs is carried: nothing is lost to rounding and there is no drift (integers only,
each within +/-2**30 on a 32-bit board: |p_w| <= 2 * rated, dt clamped to 1 s). Import
(p > 0, charging the EV) and export (p < 0, to the grid) have their own accumulators.

Per phase: the tick measures no per-phase current, so the total power is split over the
phases in proportion to their fundamental voltage magnitudes (``grid_measure``; equal
thirds where the control has none) -- exact for a balanced current, which the converter
injects; the phase shares add up to the total to the watt (the last phase takes the
remainder), so the per-phase energies add up to the total energy to the mWh.

Totals and ``snapshot()`` are in mWh (``wh()`` in Wh). RAM: 4 lists of 4 small ints and a
few attributes, ~400 bytes on the 64-bit unix runtime (less on a 32-bit board); CPU: a
dozen integer operations and three ``isqrt`` per period (supervisor context, never the
tick). Context: supervisor.
"""

import current

MWS_PER_MWH = 3600
MAX_DT_MS = 1000  # a late step integrates at most this much (no big intermediate)
PHASES = ("a", "b", "c")


class Meter:
    def __init__(self, rated_w, gm=None):
        self.rated = rated_w
        self.gm = gm  # grid_measure array (per-phase magnitudes) or None
        self.imp_mwh = [0, 0, 0, 0]  # phase a, b, c, total
        self.exp_mwh = [0, 0, 0, 0]
        self.imp_rem = [0, 0, 0, 0]  # mWs below one mWh, carried
        self.exp_rem = [0, 0, 0, 0]
        self.last_ms = None
        self.p_w = 0

    def power_w(self, cc):
        """The measured active power in whole W (rounded), > 0 importing."""
        x = cc[current.P_MEAS] * self.rated
        return (x + 2048) >> 12 if x >= 0 else -((-x + 2048) >> 12)

    def _shares(self, p_w):
        gm = self.gm
        if gm is None:
            a = b = 1
            c = 1
        else:
            import grid_measure

            a = current.isqrt(gm[grid_measure.MAG2_A])
            b = current.isqrt(gm[grid_measure.MAG2_B])
            c = current.isqrt(gm[grid_measure.MAG2_C])
        s = a + b + c
        if s <= 0:
            a = b = c = 1
            s = 3
        pa = p_w * a // s if p_w >= 0 else -((-p_w) * a // s)
        pb = p_w * b // s if p_w >= 0 else -((-p_w) * b // s)
        return pa, pb, p_w - pa - pb

    def step(self, now_ms, cc):
        """Integrate the power measured now over the time since the last step."""
        p_w = self.power_w(cc)
        self.p_w = p_w
        last = self.last_ms
        self.last_ms = now_ms
        if last is None:
            return
        dt = (now_ms - last) & 0x3FFFFFFF  # ticks_ms wraps at 2**30
        if dt > MAX_DT_MS:
            dt = MAX_DT_MS
        if p_w == 0 or dt == 0:
            return
        if p_w > 0:
            acc, rem, sign = self.imp_mwh, self.imp_rem, 1
        else:
            acc, rem, sign = self.exp_mwh, self.exp_rem, -1
        pa, pb, pc = self._shares(p_w)
        self._add(acc, rem, 0, sign * pa * dt)
        self._add(acc, rem, 1, sign * pb * dt)
        self._add(acc, rem, 2, sign * pc * dt)
        self._add(acc, rem, 3, sign * p_w * dt)

    @staticmethod
    def _add(acc, rem, i, e):
        r = rem[i] + e
        if r >= MWS_PER_MWH:
            acc[i] += r // MWS_PER_MWH
            r %= MWS_PER_MWH
        rem[i] = r

    def totals_mwh(self):
        """(import, export) in total, mWh."""
        return self.imp_mwh[3], self.exp_mwh[3]

    def snapshot(self):
        """Every accumulator, mWh: {"import": [a, b, c, total], "export": [...]}"""
        return {"import": list(self.imp_mwh), "export": list(self.exp_mwh)}

    def wh(self):
        """(import, export) in total, Wh (float: status and results only)."""
        return self.imp_mwh[3] / 1000, self.exp_mwh[3] / 1000
