"""The EV's state of charge in the energy journal's records (link version 4, EV_SOC).

In process under CPython: the firmware ``App`` on the sim board's HAL and plant with its
energy journal on a temporary flash (1 s intervals), its link fed frames from the host
codec (as ``tests_host/link/test_link_service.py``). EV_SOC sets the SoC the journal puts
in its records: a session start carries the SoC then, an interval the SoC at its start
and at its end; out of range is REJECTED and changes nothing; 0xFFFF makes it unknown
again. On the host: ``SessionMapping`` sends EV_SOC (permille) when the car's SoC (%)
changes, once per value, and the daemon's record keeps it (``energy_record.from_link``).
"""

import asyncio
import json
import sys

from v2g.common import energy_record, paths
from v2g.gateway.firmware_model import FirmwareModel
from v2g.gateway.session import SessionMapping
from v2g.link import codec
from v2g.link.codec import msgs

V = msgs.VERSION

sys.path.insert(0, str(paths.REPO_ROOT / "boards" / "sim"))

import app  # noqa: E402
import hal as sim_hal  # noqa: E402
from services import energy_journal as ej  # noqa: E402
from services import link_service  # noqa: E402

BOARD = json.loads((paths.REPO_ROOT / "boards" / "sim" / "board.json").read_text())
CONFIG = {"enter_service_delay_s": 0.2, "enter_service_ramp_s": 0.0}


class Rig:
    """An App with its energy journal on ``root``, its link over a list."""

    def __init__(self, root):
        (root / "config.json").write_text(json.dumps(CONFIG))
        self.app = app.App(sim_hal, dict(BOARD, energy_interval_s=1), root=str(root) + "/")
        self.app.start()
        self.out = []
        self.lk, self.wiring, self.clock = link_service.attach(self.app, self.out.append)
        h = self.app.hal
        self.step, self.st, self.tab = h.plant.stepper()
        self.n = 0
        self.tx = 0
        self.seq = 1
        self.acked = 0

    def run_ms(self, ms):
        h = self.app.hal
        for _ in range(ms):
            for _ in range(10):
                h.tick_fn(None)
                self.step(self.st, self.tab, h.io, h.io[0])
                self.n += 1
            h.plant.slow(1)
            h.t_us = self.n * 100
            t = h.ticks_ms()
            if t % 10 == 0:
                self.app.supervise_once(t)
                self.lk.service(self.clock())
                self.app.supervisor.link_alive(t)
            if t % 200 == 0 and self.lk.version:
                self.tx += 1
                self.feed(codec.encode_frame(V, msgs.HEARTBEAT, 0, self.acked, codec.pack(
                    msgs.HEARTBEAT, (t, 0, self.tx) + (0,) * 8)))

    def feed(self, frame):
        self.lk.receive(frame, len(frame), self.clock())

    def hello(self):
        self.tx += 1
        self.feed(codec.encode_frame(1, msgs.HELLO, 0, 0, codec.pack(msgs.HELLO, (V, V, 7))))

    def command(self, msg_id, values):
        self.out.clear()
        self.tx += 1
        self.feed(codec.encode_frame(V, msg_id, self.seq, self.acked,
                                     codec.pack(msg_id, values)))
        self.seq += 1
        for raw in self.out:
            f = codec.decode_frame(raw[:-1])
            if f.msg_id == msgs.RESULT:
                self.acked = f.seq
                return codec.unpack(msgs.RESULT, f.payload)
        raise AssertionError("no RESULT")

    def run_until_record(self, limit_ms=3000):
        seq = self.app.energy_journal.ring.last_seq
        for _ in range(limit_ms // 10):
            self.run_ms(10)
            if self.app.energy_journal.ring.last_seq > seq:
                return
        raise AssertionError("no record within %d ms" % limit_ms)

    def records(self):
        return list(ej.records(self.app.energy_journal.root))


def test_records_carry_the_ev_soc_at_start_and_end(tmp_path):
    rig = Rig(tmp_path)
    rig.hello()
    assert rig.command(msgs.SESSION, (msgs.SESSION_STOP, 0))["status"] == msgs.OK
    assert rig.command(msgs.SETPOINT, (1, -5000, 0))["status"] == msgs.OK
    rig.run_ms(100)
    assert rig.command(msgs.EV_SOC, (400,))["status"] == msgs.OK
    assert rig.command(msgs.SESSION, (msgs.SESSION_START, 1))["status"] == msgs.OK
    rig.run_ms(20)
    start = rig.app.energy_journal.ring.last_seq  # the session start record
    rig.run_ms(1500)
    assert rig.app.supervisor.state == "ENERGIZED"
    rig.run_until_record()  # an interval at 400 from start to end
    rig.run_ms(300)
    assert rig.command(msgs.EV_SOC, (395,))["status"] == msgs.OK
    rig.run_until_record()  # 400 at its start, 395 at its end
    assert rig.command(msgs.EV_SOC, (390,))["status"] == msgs.OK
    rig.run_ms(300)
    r = rig.command(msgs.EV_SOC, (1001,))  # out of range: refused, the journal keeps 390
    assert r["status"] == msgs.REJECTED and "1001" in r["tail"]
    assert rig.app.energy_journal.soc == 390
    rig.run_ms(300)
    assert rig.command(msgs.EV_SOC, (msgs.SOC_UNKNOWN,))["status"] == msgs.OK
    rig.run_until_record()  # 395 at its start (390 came later), unknown at its end
    assert rig.command(msgs.SESSION, (msgs.SESSION_STOP, 1))["status"] == msgs.OK
    rig.run_ms(20)
    recs = [r for r in rig.records() if r[ej.SEQ] >= start]
    got = [(r[ej.KIND], r[ej.SOC_START], r[ej.SOC_END]) for r in recs]
    u = ej.SOC_UNKNOWN
    assert got[0] == (ej.SESSION_START, 400, 400), got
    assert got[-1] == (ej.SESSION_END, u, u), got
    # the intervals between: 400 until the change, then the changes at their ends/starts
    assert got[-4:-1] == [(ej.INTERVAL, 400, 400), (ej.INTERVAL, 400, 395),
                          (ej.INTERVAL, 395, u)], got
    assert all(k == ej.INTERVAL and s0 == s1 == 400 for k, s0, s1 in got[1:-4]), got
    assert sum(r[ej.EXPORT] for r in recs) > 1000  # mWh: power flowed meanwhile
    ivals = [r for r in recs if r[ej.KIND] == ej.INTERVAL][-3:]
    # what the link sends and the daemon makes of it
    vals = rig.wiring.energy_record(ivals[1][ej.SEQ])
    rec = energy_record.from_link(dict(zip(msgs.BY_ID[msgs.ENERGY_RECORD][msgs.FIELDS], vals)),
                                  "ST-0001", "v2g-fw")
    assert (rec.soc_start_pm, rec.soc_end_pm) == (400, 395)
    vals = rig.wiring.energy_record(ivals[2][ej.SEQ])
    rec = energy_record.from_link(dict(zip(msgs.BY_ID[msgs.ENERGY_RECORD][msgs.FIELDS], vals)),
                                  "ST-0001", "v2g-fw")
    assert (rec.soc_start_pm, rec.soc_end_pm) == (395, None)


def test_the_session_mapping_sends_the_soc_once_per_value():
    async def run():
        fw = FirmwareModel()
        m = SessionMapping(fw)
        await m.push_once()
        assert fw.applied == []  # SoC unknown: nothing sent
        m.update_ev(soc=81.2)
        await m.push_once()
        m.update_ev(soc=81.2)
        await m.push_once()
        m.update_ev(soc=80.5)
        await m.push_once()
        assert m.update_ev(soc=140) is False  # refused: the last good value stays
        await m.push_once()
        return [a for a in fw.applied if a[0] == "ev_soc"]

    assert asyncio.run(run()) == [("ev_soc", 812), ("ev_soc", 805)]
