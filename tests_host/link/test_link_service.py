"""The link wired to the controller (``firmware/services/link_service.py``), in process
under CPython with the sim board's HAL and plant, frames from the host codec: the gate
(no daemon: no closing), setpoint ids into the idempotent path, config all or nothing,
EV limits, link DEGRADED (fault V2G-502, power ceased, contactors stay closed, power back
when healthy) and LOST (cease, then open); and the service's RAM on the unix runtime.
"""

import json
import sys

import pytest

from v2g.common import paths
from v2g.link import codec
from v2g.link.codec import msgs

V = msgs.VERSION  # the session's protocol version (HELLO frames carry 1)

sys.path.insert(0, str(paths.REPO_ROOT / "boards" / "sim"))

import app  # noqa: E402
import hal as sim_hal  # noqa: E402
from services import link_service  # noqa: E402

BOARD = json.loads((paths.REPO_ROOT / "boards" / "sim" / "board.json").read_text())
CONFIG = {"enter_service_delay_s": 0.2, "enter_service_ramp_s": 0.0,
          "link_loss_window_ms": 2000, "link_loss_min_frames": 5}


class Rig:
    """An App on the sim HAL, its link over a list, and a loop like the board's."""

    def __init__(self, root):
        (root / "config.json").write_text(json.dumps(CONFIG))
        self.app = app.App(sim_hal, dict(BOARD, no_log=True), root=str(root) + "/")
        self.app.start()
        self.out = []
        self.lk, self.wiring, self.clock = link_service.attach(self.app, self.out.append)
        h = self.app.hal
        self.step, self.st, self.tab = h.plant.stepper()
        self.n = 0
        self.tx = 0  # frames the "daemon" sent (its heartbeat counter)
        self.seq = 1
        self.acked = 0  # the board's last reliable seq we took
        self.nonce = 99

    @property
    def sup(self):
        return self.app.supervisor

    def run_ms(self, ms, hb=True, lose=0):
        """Run ``ms`` of board time; a daemon heartbeat every 200 ms unless ``hb`` is
        False; ``lose`` of every 10 frames the daemon sends never arrive."""
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
                self.sup.link_alive(t)
            if hb and t % 200 == 0 and self.lk.version:
                self.tx += 1
                if not (lose and self.tx % 10 < lose):
                    self.feed(codec.encode_frame(V, msgs.HEARTBEAT, 0, self.acked, codec.pack(
                        msgs.HEARTBEAT, (t, 0, self.tx) + (0,) * 8)))

    def feed(self, frame):
        self.lk.receive(frame, len(frame), self.clock())

    def hello(self):
        self.tx += 1
        self.feed(codec.encode_frame(1, msgs.HELLO, 0, 0, codec.pack(msgs.HELLO,
                                                                     (V, V, self.nonce))))

    def command(self, msg_id, payload):
        """A reliable command; returns the RESULT dict the board answered."""
        self.out.clear()
        self.tx += 1
        self.feed(codec.encode_frame(V, msg_id, self.seq, self.acked, payload))
        self.seq += 1
        for raw in self.out:
            f = codec.decode_frame(raw[:-1])
            if f.msg_id == msgs.RESULT:
                self.acked = f.seq  # acknowledged with the next frame (cumulative)
                return codec.unpack(msgs.RESULT, f.payload)
        raise AssertionError("no RESULT")

    def faults(self, code):
        return [e for e in self.app.journal.items if e[1] == "fault" and e[2] == code]


@pytest.fixture
def rig(tmp_path):
    return Rig(tmp_path)


def test_gate_setpoints_config_limits_degraded_and_lost(rig, tmp_path):
    sup = rig.sup
    rig.run_ms(1500)
    # a link configured, no daemon: grid locked, but nothing closes and nothing flows
    assert sup.link_state == "DOWN" and sup.state == "WAIT_GRID"
    assert sup.contactor_status() == 1 and rig.app.hal.pwm_on == 0
    rig.hello()
    assert rig.lk.state == 1 and sup.link_state == "UP"
    rig.run_ms(1500)
    assert sup.state == "ENERGIZED"

    # setpoints: the link's id space, idempotent, range-checked
    r = rig.command(msgs.SETPOINT, codec.pack(msgs.SETPOINT, (7, -5000, 0)))
    assert r["status"] == msgs.OK and sup.p_cmd_w == -5000
    r = rig.command(msgs.SETPOINT, codec.pack(msgs.SETPOINT, (7, -1000, 0)))
    assert r["status"] == msgs.DUPLICATE and sup.p_cmd_w == -5000
    r = rig.command(msgs.SETPOINT, codec.pack(msgs.SETPOINT, (8, 99999, 0)))
    assert r["status"] == msgs.REJECTED and sup.p_cmd_w == -5000
    assert rig.wiring.register_image(0)[11] == 7  # setpoint_id in force

    # config: all or nothing, on the flash only after validation
    before = (tmp_path / "config.json").read_text()
    r = rig.command(msgs.CONFIG, codec.config_payload({35: 12, 3: 60000}))
    assert r["status"] == msgs.REJECTED and "p_rated_w" in r["tail"]
    assert (tmp_path / "config.json").read_text() == before
    r = rig.command(msgs.CONFIG, codec.config_payload({35: 12, 110: 2000}))
    assert r["status"] == msgs.OK
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["enter_service_delay_s"] == 1.2 and stored["link_hb_timeout_ms"] == 2000
    assert rig.app.held["link_hb_timeout_ms"] == 1000  # in force until the next restart

    # EV limits: the supervisor's clamp
    r = rig.command(msgs.EV_LIMITS, codec.pack(msgs.EV_LIMITS, (11000, 3000, 150)))
    assert r["status"] == msgs.OK
    rig.run_ms(30)
    assert sup.p_cmd_w == -3000 and sup.ev_soc_min == 0.15
    rig.command(msgs.EV_LIMITS, codec.pack(msgs.EV_LIMITS, (11000, 11000, 0)))

    # frame loss above the threshold: V2G-502, power ceased, contactors stay closed
    rig.run_ms(4500, lose=4)  # 40 % of the daemon's frames lost
    assert rig.lk.degraded and sup.link_state == "DEGRADED"
    (f,) = rig.faults("V2G-502")
    assert "permille" in f[4]
    assert sup.p_cmd_w == 0 and sup.hold_ceased and sup.contactor_status() == 2
    img = rig.wiring.register_image(0)
    assert img[4] & msgs.FLAG_LINK_DEGRADED and img[4] & msgs.FLAG_CEASED
    assert img[18].rstrip(b"\0") == b"V2G-502"
    rig.run_ms(100)
    assert rig.app.hal.pwm_on == 0  # the tick keeps the PWM off
    # healthy again: power resumes without re-entering service
    rig.run_ms(4500)
    assert sup.link_state == "UP" and not sup.hold_ceased
    assert sup.state == "ENERGIZED" and sup.p_cmd_w == -5000
    assert [e for e in rig.app.journal.items if e[1] == "clear" and e[2] == "V2G-502"]

    # the daemon falls silent: LOST after the timeout, ceased first, then opened
    t_quiet = rig.lk.last_rx_ms
    rig.run_ms(700, hb=False)
    assert sup.link_state == "UP" and sup.state == "ENERGIZED"
    for _ in range(60):
        rig.run_ms(10, hb=False)
        if sup.hold_ceased:
            break
    assert sup.link_state == "LOST" and sup.p_cmd_w == 0
    assert 1000 < rig.clock.ms - t_quiet <= 1020  # the heartbeat timeout, one period late
    assert sup.state == "ENERGIZED" and sup.contactor.main == 1  # ceased, not yet open
    rig.run_ms(10, hb=False)
    assert sup.state == "WAIT_GRID" and sup.contactor.main == 0
    rig.run_ms(600, hb=False)
    assert sup.contactor_status() == 1
    # the daemon comes back (a new nonce): the unit energizes again
    rig.nonce += 1
    rig.seq = 1
    rig.acked = 0
    rig.hello()
    rig.run_ms(1500)
    assert sup.link_state == "UP" and sup.state == "ENERGIZED"


def test_a_silent_link_task_counts_as_lost(rig):
    rig.hello()
    rig.run_ms(1500)
    assert rig.sup.state == "ENERGIZED"
    # the task stops (no service, no pass mark) while the link itself still reads UP
    h = rig.app.hal
    for _ in range(1200):
        for _ in range(10):
            h.tick_fn(None)
            rig.step(rig.st, rig.tab, h.io, h.io[0])
            rig.n += 1
        h.plant.slow(1)
        h.t_us = rig.n * 100
        if h.ticks_ms() % 10 == 0:
            rig.app.supervise_once(h.ticks_ms())
    assert rig.sup.link_state == "UP" and rig.sup.state == "WAIT_GRID"
    assert rig.sup.contactor.main == 0


def test_service_ram_on_the_unix_runtime(run_micropython, tmp_path):
    r = run_micropython(paths.REPO_ROOT / "tests_host" / "link" / "mp_link_ram.py",
                        (paths.REPO_ROOT / "boards" / "sim" / "board.json",
                         str(tmp_path) + "/"),
                        extra_path=(paths.REPO_ROOT / "boards" / "sim",))
    assert r.returncode == 0, r.stderr.decode() + r.stdout.decode()
    fig = json.loads(r.stdout.decode().strip().splitlines()[-1])
    print("link service on the unix runtime:", fig)
    assert fig["service_bytes"] < 8192  # the module docstring's figure: 5600 B
    assert fig["image_alloc_bytes"] < 1024
    assert fig["bytes_sent"] > 200 * 70


def test_config_not_stored_while_energized_on_a_stalling_board(rig, tmp_path):
    """``flash_stalls_tick``: CONFIG while energized is refused with the reason, the
    file untouched; de-energized it is stored."""
    rig.app.flash_stalls_tick = True
    rig.run_ms(1500)
    rig.hello()
    rig.run_ms(1500)
    assert rig.sup.state == "ENERGIZED"
    before = (tmp_path / "config.json").read_text()
    r = rig.command(msgs.CONFIG, codec.config_payload({35: 12}))
    assert r["status"] == msgs.REJECTED and "stalls the tick" in r["tail"]
    assert (tmp_path / "config.json").read_text() == before
    rig.sup.state = "WAIT_GRID"
    r = rig.command(msgs.CONFIG, codec.config_payload({35: 12}))
    assert r["status"] == msgs.OK
    assert json.loads((tmp_path / "config.json").read_text())["enter_service_delay_s"] == 1.2
