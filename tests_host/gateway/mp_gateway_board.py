"""Board side of the gateway tests: ``services.link`` over stdin/stdout with a fake
supervisor that produces a register image (the real firmware's wiring of the link into
the supervisor is separate work; this stands in for it).

Runs on the MicroPython unix runtime. The fake supervisor starts ENERGIZED with the DC
contactor CLOSED, exporting ``P0`` W (firmware sign: < 0 export) under setpoint id 1000
(as a scenario's setpoint would), and:
- SETPOINT: an id seen before -> DUPLICATE (nothing changes); |p| above p_rated_w ->
  REJECTED; else the power in force follows at once;
- CONFIG: validated with the firmware's own ``params.validate`` on top of the config in
  force, applied all or nothing;
- the image: every 100 ms (the link's image period); energy integrates the power.
Every command applied is printed to stderr as one JSON line ``{"applied": [...]}`` as it
happens, so the tests can count commands while the board runs.
Usage: micropython mp_gateway_board.py [P0_W]
"""

import json
import sys

import params
from services import link
from services import link_msgs as lm

try:
    import asyncio
except ImportError:  # pragma: no cover
    import uasyncio as asyncio

from time import ticks_diff, ticks_ms


class FakeSupervisor(link.Handlers):
    def __init__(self, p0):
        self.held = params.defaults()
        self.p_w = p0
        self.q_var = 0
        self.sp_id = 1000
        self.seen = {1000}
        self.e_imp = 0.0
        self.e_exp = 0.0
        self.last_ms = None
        self.t0 = ticks_ms()

    def _say(self, *item):
        sys.stderr.write(json.dumps({"applied": list(item)}) + "\n")

    def on_setpoint(self, now_ms, sp_id, p_w, q_var):
        if sp_id in self.seen:
            self._say("duplicate", sp_id, p_w, q_var)
            return lm.DUPLICATE
        self.seen.add(sp_id)
        if abs(p_w) > self.held["p_rated_w"] or abs(q_var) > self.held["p_rated_w"]:
            self._say("rejected", sp_id, p_w, q_var)
            return lm.REJECTED, "power outside the rating"
        self.sp_id, self.p_w, self.q_var = sp_id, p_w, q_var
        self._say("setpoint", sp_id, p_w, q_var)
        return lm.OK

    def on_config(self, now_ms, cfg):
        held, errors = params.validate(cfg, base=self.held)
        if errors:
            self._say("config_rejected", sorted(cfg.items()))
            return False, "; ".join(errors)
        self.held = held
        self._say("config", sorted(cfg.items()))
        return True, ""

    def register_image(self, now_ms):
        if self.last_ms is not None:
            dt_h = ticks_diff(now_ms, self.last_ms) / 3600000
            if self.p_w > 0:
                self.e_imp += self.p_w * dt_h
            else:
                self.e_exp -= self.p_w * dt_h
        self.last_ms = now_ms
        return (ticks_diff(now_ms, self.t0) & 0xFFFFFFFF, 4, 2, 0, 3, 60012, 998, 1003,
                7200, self.p_w, self.q_var, self.sp_id, 412, int(self.e_imp),
                int(self.e_exp), 11000, 11000, 1, b"0x07", 123456, 0,
                # version 2: measured P/Q, V per phase, current, PF, tick, board link
                self.p_w, self.q_var, 2301, 2299, 2303, abs(self.p_w) * 100 // 690,
                -1000 if self.p_w < 0 else 1000, 21, 35, 100, 1, 0, 0, 0,
                # version 5: the energy counters' mWh below the whole Wh
                int(self.e_imp * 1000) % 1000, int(self.e_exp * 1000) % 1000)


def main():
    p0 = int(sys.argv[1]) if len(sys.argv) > 1 else -7000
    sup = FakeSupervisor(p0)
    out = sys.stdout.buffer

    def write(mv):
        out.write(mv)
        if hasattr(out, "flush"):
            out.flush()

    lk = link.Link(sup, write, hb_timeout_ms=3000)
    stream = asyncio.StreamReader(sys.stdin.buffer)
    asyncio.run(link.serve(lk, stream, ticks_ms))


main()
