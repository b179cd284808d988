"""Board side of the link tests: ``services.link`` over this process's stdin/stdout.

Runs on the MicroPython unix runtime (and under CPython with the shim). stdin carries the
daemon's frames, stdout the board's; at the end of stdin it prints one JSON line to stderr:
every command the handlers were called with, in call order, the energy records the host
acknowledged, and the link counters.
Usage: micropython mp_link_board.py RECORDS [RTO_MS]
"""

import json
import sys

from services import link
from services import link_msgs as lm

try:
    import asyncio
except ImportError:  # pragma: no cover
    import uasyncio as asyncio

try:
    from time import ticks_ms
except ImportError:  # CPython
    import time

    def ticks_ms():
        return int(time.monotonic() * 1000)


class Recorder(link.Handlers):
    def __init__(self, n_records):
        self.applied = []
        self.n_records = n_records
        self.acked = []
        self.states = []
        self.logs = 0

    def on_setpoint(self, now_ms, sp_id, p_w, q_var):
        self.applied.append(["setpoint", sp_id, p_w, q_var])
        return lm.OK

    def on_config(self, now_ms, cfg):
        self.applied.append(["config", sorted(cfg.items())])
        if "p_rated_w" in cfg and cfg["p_rated_w"] > 50000:
            return False, "key 'p_rated_w': value outside 1000..50000 W"
        return True, ""

    def on_ev_limits(self, now_ms, c, d, s):
        self.applied.append(["ev_limits", c, d, s])
        return lm.OK

    def on_session(self, now_ms, action, sid):
        self.applied.append(["session", action, sid])
        return lm.OK

    def register_image(self, now_ms):
        return (now_ms, 4, 2, 0, 1, 60000, 1000, 1001, 7000, -7000, 0, len(self.applied),
                250, 1, 2, 11000, 11000, 0, b"V2G-502", 123456, 0,
                -7000, 0, 2300, 2300, 2300, 1014, -1000, 20, 30, 100, 1, 0, 0, 0, 250, 750)

    def energy_record(self, min_no):
        for no in range(min_no, self.n_records):
            if no not in self.acked:
                return (no, 9, no * 10, no * 10 + 10, 0, 1000 + no, no, 0, 0, 0xFFFF, 0xFFFF)
        return None

    def on_energy_ack(self, now_ms, no):
        self.acked.append(no)

    def on_link_state(self, now_ms, state):
        self.states.append(link.STATE_NAMES[state])

    def on_log(self, now_ms, kind, detail):
        self.logs += 1


def main():
    n_records = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    rto = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    rec = Recorder(n_records)
    out = sys.stdout.buffer

    def write(mv):
        out.write(mv)
        if hasattr(out, "flush"):
            out.flush()

    lk = link.Link(rec, write, rto_ms=rto, hb_timeout_ms=3000)
    if sys.implementation.name == "micropython":
        stream = asyncio.StreamReader(sys.stdin.buffer)
        asyncio.run(link.serve(lk, stream, ticks_ms))
    else:
        async def cpython_main():
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                         sys.stdin)
            await link.serve(lk, reader, ticks_ms)
        asyncio.run(cpython_main())
    sys.stderr.write(json.dumps({"applied": rec.applied, "acked": rec.acked,
                                 "states": rec.states, "logs": rec.logs,
                                 "counters": lk.counters_dict()}) + "\n")


main()
