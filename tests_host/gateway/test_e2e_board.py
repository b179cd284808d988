"""The field bus end to end with the real firmware: ``v2g sim board --scenario S.json``
(the firmware on the MicroPython unix runtime, in real time, exporting 7 kW), a relay in
this process between its ``link:`` pty and a second pty, ``v2g daemon`` on that second
pty, and real clients (pysunspec2, pymodbus, ``v2g status``) on loopback.

The relay (``LossyRelay``) forwards whole frames both ways and taps them: it decodes every
frame the board sends (register images with the board's clock) and every command the
daemon sends, before it injects faults: with probability ``loss`` a frame is lost, half
of those dropped and half CRC-corrupted (1-3 bits flipped), and with ``loss / 4`` a frame
is delivered twice; a seeded ``random.Random`` per direction makes the mutation sequence
deterministic. The board's clock is mapped to the wall clock by the least-delayed image
(``board_offset``), so times measured on the board (power in the images) and on the host
(a Modbus write, a ``kill -9``) share one axis.

One rig serves the module; the tests run in file order (figures, export limit, link
faults, session stop, kill -9 and restart, weld last: it locks the unit out). Every test
prints its figures (``pytest -s``). ``V2G_E2E_SECONDS`` (default 4) is how long each loss
level runs; ``make e2e-sweep`` runs the long form.
"""

import json
import os
import pty
import random
import select
import signal
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import pytest
import yaml
from support.virtual_board import board_eval, start_board, stop_board, v2g
from v2g.common import paths
from v2g.gateway import modbus_cmd, regmap
from v2g.link import codec
from v2g.link.codec import msgs

RM = regmap.build()
TOKEN = "e2e-token-0042"
RATED = 11000
EXPORT_W = -7000
PERIOD_MS = 10  # supervisor period = register image period (link_image_ms default)
SECONDS = float(os.getenv("V2G_E2E_SECONDS", "4"))
CONFIG = {"enter_service_delay_s": 0.2, "enter_service_ramp_s": 0.0}
SCENARIO = {"name": "e2e-export", "duration_s": 3600.0,
            "grid": {"v_nom_ln_rms": 230.0, "f_nom_hz": 60, "category": "II"},
            "events": [{"t_s": 0.0, "setpoint": {"id": "export-7kw", "p_w": EXPORT_W,
                                                 "q_var": 0}}]}


# ---- the relay ----

class LossyRelay:
    """Frames between the daemon's pty and the board's link pty; see the module doc."""

    def __init__(self, board_dev):
        self.board_fd = os.open(board_dev, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.board_fd)
        self.master, self.slave = pty.openpty()  # the slave stays open: daemons come and go
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.device = os.ttyname(self.slave)
        self.loss = 0.0
        self.rng = {"b2h": random.Random(1), "h2b": random.Random(2)}
        self.buf = {"b2h": bytearray(), "h2b": bytearray()}
        self.lock = threading.Lock()
        self.images = []  # (wall_s, image dict, delivered)
        self.cmds = []  # (wall_s, msg id, seq, values, delivered copies)
        self.stats = {d: dict.fromkeys(("frames", "dropped", "corrupted", "doubled"), 0)
                      for d in ("b2h", "h2b")}
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def set_loss(self, loss, seed):
        with self.lock:
            self.loss = loss
            self.rng = {"b2h": random.Random(seed), "h2b": random.Random(seed + 1)}

    def _mutate(self, d, frame):
        st = self.stats[d]
        st["frames"] += 1
        p = self.loss
        if not p:
            return frame
        rng = self.rng[d]
        r = rng.random()
        if r < p / 2:
            st["dropped"] += 1
            return b""
        if r < p:
            st["corrupted"] += 1
            b = bytearray(frame)
            for _ in range(rng.randint(1, 3)):
                b[rng.randrange(len(b) - 1)] ^= 1 << rng.randrange(8)  # delimiter stays
            return bytes(b)
        if r < 1.25 * p:
            st["doubled"] += 1
            return frame + frame
        return frame

    def _tap(self, d, frame, out, now):
        try:
            f = codec.decode_frame(frame[:-1])
        except codec.FrameError:
            return
        good = 1 if out in (frame, frame + frame) else 0  # reached the far end intact
        if d == "b2h" and f.msg_id == msgs.REGISTER_IMAGE:
            self.images.append((now, codec.unpack(f.msg_id, f.payload), good))
        elif d == "h2b" and f.msg_id in (msgs.SETPOINT, msgs.SESSION):
            self.cmds.append((now, f.msg_id, f.seq, codec.unpack(f.msg_id, f.payload), good))

    def _run(self):
        src = {self.board_fd: ("b2h", self.master), self.master: ("h2b", self.board_fd)}
        while not self._stop.is_set():
            try:
                r, _, _ = select.select(list(src), [], [], 0.05)
            except (OSError, ValueError):
                return
            for fd in r:
                d, dst = src[fd]
                try:
                    data = os.read(fd, 4096)
                except (BlockingIOError, OSError):
                    continue
                buf = self.buf[d]
                buf += data
                now = time.monotonic()
                with self.lock:
                    while True:
                        i = buf.find(b"\x00")
                        if i < 0:
                            break
                        frame = bytes(buf[:i + 1])
                        del buf[:i + 1]
                        out = self._mutate(d, frame)
                        self._tap(d, frame, out, now)
                        if out:
                            try:
                                os.write(dst, out)
                            except (BlockingIOError, OSError):
                                pass  # nobody reads (daemon killed): dropped, as a UART does

    def board_offset(self):
        """Board ms minus wall ms, from the least-delayed image seen."""
        return max(im["t_ms"] - t * 1000 for t, im, _ in self.images[-3000:])

    def close(self):
        self._stop.set()
        self.thread.join(2)
        for fd in (self.board_fd, self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


# ---- the rig ----

class Rig:
    def __init__(self, tmp):
        self.tmp = Path(tmp)
        flash = self.tmp / "flash"
        flash.mkdir()
        (flash / "config.json").write_text(json.dumps(CONFIG))
        sc = self.tmp / "export.json"
        sc.write_text(json.dumps(SCENARIO))
        self.board, self.port, self.flash = start_board(flash, extra=("--scenario", sc))
        self.board_out = []
        for stream in (self.board.stdout, self.board.stderr):
            threading.Thread(target=self._drain, args=(stream,), daemon=True).start()
        board_eval(self.port, "1")
        self.relay = LossyRelay(self.board.link_port)
        with socket_port() as p:
            self.mb_port = p
        self.cfg_path = self.tmp / "daemon.yaml"
        self.cfg_path.write_text(yaml.safe_dump({
            "link": {"device": self.relay.device, "hb_timeout_s": 1.0},
            "modbus": {"host": "127.0.0.1", "port": self.mb_port, "stale_s": 1.0,
                       "writes": {"enabled": True, "allow": ["127.0.0.1"],
                                  "unlock_token": TOKEN}},
            "device": {"serial": "E2E-0001"}, "log": {"level": "info"}}))
        self.daemon = None
        self.start_daemon()

    def _drain(self, stream):
        for line in stream:
            self.board_out.append(line)

    def start_daemon(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = str(paths.HOST_TOOLS_DIR)
        self.log = open(self.tmp / "daemon.log", "a")
        t0 = time.monotonic()
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "v2g.cli", "daemon", "--config", str(self.cfg_path)],
            stdout=subprocess.PIPE, stderr=self.log, env=env, text=True)
        r, _, _ = select.select([self.daemon.stdout], [], [], 15)
        line = self.daemon.stdout.readline() if r else ""
        assert "serving" in line, (line, (self.tmp / "daemon.log").read_text())
        return time.monotonic() - t0

    def client(self):
        from pymodbus.client import ModbusTcpClient

        c = ModbusTcpClient("127.0.0.1", port=self.mb_port, timeout=3, retries=0)
        assert c.connect()
        return c

    def status(self):
        r = v2g("status", "--port", self.port, "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def journal(self, kind, code=None):
        expr = "[list(e) for e in _app.journal.items if e[1] == %r]" % kind
        items = board_eval(self.port, expr)
        return [e for e in items if code is None or e[2] == code]

    def stop(self):
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(10)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        self.relay.close()
        stop_board(self.board)
        self.log.close()


class socket_port:
    def __enter__(self):
        import socket

        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        return self.s.getsockname()[1]

    def __exit__(self, *a):
        self.s.close()


@pytest.fixture(scope="module")
def rig(tmp_path_factory, micropython_exe):
    r = Rig(tmp_path_factory.mktemp("e2e"))
    try:
        yield r
    finally:
        r.stop()


def read(c, name):
    r = RM.by_name[name]
    rr = c.read_holding_registers(r.addr, count=r.size)
    assert not rr.isError(), (name, rr)
    return regmap.decode_words(r, rr.registers)


def write(c, name, value):
    r = RM.by_name[name]
    words = regmap.encode_value(r, value) if r.size > 1 else [value & 0xFFFF]
    rr = c.write_registers(r.addr, words) if r.size > 1 else c.write_register(r.addr,
                                                                               words[0])
    return getattr(rr, "exception_code", None) if rr.isError() else 0


def unlock(c):
    b = TOKEN.encode().ljust(32, b"\0")
    rr = c.write_registers(regmap.UNLOCK_ADDR, [(b[i] << 8) | b[i + 1]
                                                 for i in range(0, 32, 2)])
    assert not rr.isError(), rr


def wait_for(fn, timeout, step=0.02):
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > end:
            return v
        time.sleep(step)


def exporting(c, w=-EXPORT_W, tol=0.02):
    return (read(c, "status.contactor_status") == 2
            and abs(-read(c, "status.p_w") - w) <= tol * w)


# ---- the tests ----

def test_scan_decodes_every_point_and_agrees_with_the_firmware(rig):
    with rig.client() as c:
        assert wait_for(lambda: exporting(c), 20), "not exporting 7 kW"
    models = modbus_cmd.scan("127.0.0.1", rig.mb_port)
    st = rig.status()
    ids = [m for m, _, _ in models]
    assert ids == [1, 701, 702, 704, 705, 706, 707, 708, 709, 710, 713]
    pts = {m: {n: v for n, v, _ in p} for m, _, p in models}
    for m, _, p in models:
        names = {n for n, _, _ in p}
        want = {r.name.split(".", 1)[1] for r in RM.regs if r.name.startswith("%d." % m)}
        assert names == want, (m, names ^ want)
    p701 = pts[701]
    for name in ("W", "VA", "Var", "PF", "A", "LLV", "LNV", "Hz", "TotWhInj", "TmpSw",
                 "WL1", "WL2", "WL3", "AL1", "AL2", "AL3", "VL1", "VL2", "VL3", "VL1L2",
                 "PFL1"):
        assert p701[name] is not None, name
    m = st["meas"]
    v_fw = (m["v_d_pu"] ** 2 + m["v_q_pu"] ** 2) ** 0.5 * 230.0
    i_fw = (m["i_d_pu"] ** 2 + m["i_q_pu"] ** 2) ** 0.5 * RATED / (3 * 230.0)
    pairs = {"W": (p701["W"], -m["p_w"]), "V": (p701["LNV"], v_fw),
             "VL1": (p701["VL1"], v_fw), "A": (p701["A"], 3 * i_fw),
             "AL1": (p701["AL1"], i_fw), "Hz": (p701["Hz"], st["pll"]["f_hz"])}
    errs = {k: abs(a - b) / abs(b) for k, (a, b) in pairs.items()}
    print("e2e accuracy, SunSpec 701 vs v2g status --json: " + ", ".join(
        "%s %.4g vs %.4g (%.3f %%)" % (k, a, b, 100 * errs[k]) for k, (a, b) in pairs.items()))
    for k, e in errs.items():
        assert e <= 0.01, (k, pairs[k])
    assert 6900 <= p701["W"] <= 7100 and abs(p701["PF"]) > 0.99


def test_export_limit_follows_without_overshoot_and_repeats_change_nothing(rig):
    relay = rig.relay
    with rig.client() as c:
        assert wait_for(lambda: exporting(c), 10)
        unlock(c)
        assert write(c, "704.WMaxLimPct", 50) == 0
        n_acc = len(rig.journal("setpoint_accepted"))
        k0 = len(relay.images)
        t0 = time.monotonic()
        assert write(c, "704.WMaxLimPctEna", 1) == 0
        t_ack = time.monotonic()
        time.sleep(0.6)
        limit = RATED * 50 // 100
        off = relay.board_offset()
        ims = [(im["t_ms"] - off, im) for _, im, _ in relay.images[k0:]]
        t0_b = t0 * 1000
        after = [(t, -im["p_meas_w"]) for t, im in ims if t >= t0_b]
        settled = next(t for t, p in after if abs(p - limit) <= 0.01 * limit)
        resp_ms = settled - t0_b
        sp = [x for x in relay.cmds if x[1] == msgs.SETPOINT and x[0] >= t0]
        lo = min(p for _, p in after)
        hi_after = max(p for t, p in after if t >= settled)
        print("e2e export limit 50 %%: %d -> %d W; Modbus write to power within 1 %% of the "
              "limit %.0f ms (target 100 ms + 2 cycles = 133 ms); write answered after %.0f "
              "ms; SETPOINT on the wire after %.0f ms; lowest export %.0f W, highest after "
              "settling %.0f W" % (-EXPORT_W, limit, resp_ms, (t_ack - t0) * 1000,
                                   (sp[0][0] - t0) * 1000, lo, hi_after))
        assert resp_ms <= 100 + 2 * 1000 / 60
        # overshoot below the new level: the current control's step response at the default
        # 100 pu/s command ramp (seen up to ~1.7 % of the level, 90 W); bounded at 2 %
        assert lo >= limit - 0.02 * limit
        assert hi_after <= limit + 0.01 * limit
        assert len(rig.journal("setpoint_accepted")) == n_acc + 1
        # the same write 100 times: nothing more sent, nothing more applied
        n_sp = len([x for x in relay.cmds if x[1] == msgs.SETPOINT])
        for _ in range(100):
            assert write(c, "704.WMaxLimPct", 50) == 0
            assert write(c, "704.WMaxLimPctEna", 1) == 0
        time.sleep(0.3)
        assert len([x for x in relay.cmds if x[1] == msgs.SETPOINT]) == n_sp
        assert len(rig.journal("setpoint_accepted")) == n_acc + 1
        assert abs(-read(c, "status.p_w") - limit) <= 0.01 * limit
        assert write(c, "704.WMaxLimPctEna", 0) == 0
        assert wait_for(lambda: exporting(c), 3)


def _image_age(relay, k0):
    """Staleness of the daemon's image while the loss ran, from the relay's tap: the image
    period (median gap between images the board sent) and, time-weighted over the images
    that reached the daemon intact, how old the newest one was (it ages from ~0 to the gap
    before the next arrives): p99 and max, and the share of time above 2 periods."""
    t_all = [im["t_ms"] for _, im, _ in relay.images[k0:]]
    period = sorted(b - a for a, b in zip(t_all, t_all[1:]))[len(t_all) // 2]
    t = [w * 1000 for w, _, good in relay.images[k0:] if good]
    gaps = [b - a for a, b in zip(t, t[1:])]
    total = sum(gaps)

    def over(x):
        return sum(max(0.0, g - x) for g in gaps) / total

    lo, hi = 0.0, max(gaps)
    for _ in range(40):  # time-weighted p99 of the age: over(x) = 1 %
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if over(mid) > 0.01 else (lo, mid)
    # the link's own part, free of host scheduling: per image period, how many periods old
    # the daemon's newest image is (1 + the images lost in a row up to this one)
    ages, a = [], 1
    for _, _, good in relay.images[k0:]:
        a = 1 if good else a + 1
        ages.append(a)
    ages.sort()
    return {"period_ms": period, "images": len(t), "age_p99_ms": round(hi, 1),
            "age_max_ms": round(max(gaps), 1),
            "over_2_periods_pct": round(100 * over(2 * period), 3),
            "age_periods_p99": ages[int(len(ages) * 0.99)], "age_periods_max": ages[-1],
            "age_over_2_periods_pct": round(100 * sum(x > 2 for x in ages) / len(ages), 2)}


def _poll_age(rig, until, out):
    """What a Modbus client sees: status.link_age_ms read every 10 ms."""
    with rig.client() as c:
        while time.monotonic() < until:
            out.append(read(c, "status.link_age_ms"))
            time.sleep(0.01)


def test_link_faults_no_wrong_or_duplicated_command_staleness_v2g502(rig):
    from v2g.gateway.bench import modbus_load

    relay = rig.relay
    over0 = rig.status()["tick"]["overruns"]
    board_eval(rig.port, "setattr(_app, 'sup_late_max_ms', 0)")
    board_eval(rig.port, "__import__('sim_board').stats.update({'batch_max_ms': 0})")
    figures, load, polled = {}, {}, []
    link0 = rig.status()["link"]["counters"]
    try:
        with rig.client() as c:
            unlock(c)
            for i, loss in enumerate((0.01, 0.05, 0.20)):
                k0 = len(relay.images)
                f502 = len(rig.journal("fault", "V2G-502"))
                relay.set_loss(loss, seed=100 + i)
                end = time.monotonic() + SECONDS
                threads = []
                if loss == 0.05:  # the Modbus load alongside (8 clients x 100 registers, 10 Hz)
                    threads = [threading.Thread(target=lambda: load.update(modbus_load(
                        port=rig.mb_port, seconds=SECONDS))),
                        threading.Thread(target=_poll_age, args=(rig, end, polled))]
                    for th in threads:
                        th.start()
                written, w = [], 6000
                while time.monotonic() < end:  # setpoints while the link loses frames
                    w = 6000 if w != 6000 else 6500
                    code = write(c, "704.WSet", w)
                    if code == 0:
                        code = write(c, "704.WSetEna", 1)
                    written.append((w, code))
                    time.sleep(0.3)
                for th in threads:
                    th.join()
                if loss == 0.20:  # above the threshold: V2G-502 within a loss window or two
                    assert wait_for(lambda: len(rig.journal("fault", "V2G-502")) > f502, 12,
                                    step=0.5), "no V2G-502 at 20 % loss"
                figures[loss] = dict(_image_age(relay, k0),
                                     v2g502=len(rig.journal("fault", "V2G-502")) - f502,
                                     writes=len(written),
                                     refused=sum(1 for _, code in written if code))
                print("e2e link loss %.0f %%: %s" % (loss * 100, figures[loss]))
            relay.set_loss(0.0, seed=0)
            print("e2e relay:", relay.stats)
            # V2G-502 in the journal and the board's log; it clears once the loss stops
            f = rig.journal("fault", "V2G-502")[-1]
            print("e2e V2G-502 in the board's journal:", f)
            assert any("V2G-502" in line for line in rig.board_out) or f
            assert wait_for(lambda: read(c, "status.board_link_state") == 1, 15, step=0.5)
    finally:
        relay.set_loss(0.0, seed=0)
        with rig.client() as c:
            unlock(c)
            write(c, "704.WSetEna", 0)
    # every setpoint the board applied is one the daemon sent, with its values, once
    sent = {}
    for _, mid, _, v, _ in relay.cmds:
        if mid == msgs.SETPOINT:
            sent.setdefault(v["setpoint_id"], set()).add((v["p_w"], v["q_var"]))
    acc = [e[4] for e in rig.journal("setpoint_accepted")]
    ids = [a.split()[0] for a in acc]
    assert len(ids) == len(set(ids)), "a setpoint applied twice"
    for a in acc:
        fields = dict(x.split("=") for x in a.split())
        if fields["id"].startswith("L"):
            assert {(int(fields["p_w"]), int(fields["q_var"]))} == sent[
                int(fields["id"][1:])], a
    st1 = rig.status()
    link1 = st1["link"]["counters"]
    late = board_eval(rig.port, "_app.sup_late_max_ms")
    print("e2e link faults: %d setpoints applied, each once and as sent; the board dropped "
          "%d corrupted frames (CRC) and %d duplicates, %d frames out of order" % (
              len(acc), link1["crc_errors"] - link0["crc_errors"],
              link1["duplicates"] - link0["duplicates"],
              link1["out_of_order"] - link0["out_of_order"]))
    polled.sort()
    print("e2e image age seen over Modbus at 5 %% loss (status.link_age_ms, %d reads): "
          "p50 %d ms, p99 %d ms, max %d ms" % (len(polled), polled[len(polled) // 2],
                                              polled[int(len(polled) * 0.99)], polled[-1]))
    stall = st1["sim"]["batch_max_ms"]
    print("e2e under loss and Modbus load: supervisor late at most %d ms (one period %d "
          "ms); the sim pump's longest catch-up %d ms (the host descheduled the board "
          "process that long); tick overruns %d -> %d; Modbus load in this process (GIL "
          "shared with the relay; `make bench` gives the figure) %s" % (
              late, PERIOD_MS, stall, over0, st1["tick"]["overruns"], load))
    f5 = figures[0.05]
    # the image's age in periods as the link leaves it (counted in images, free of the
    # shared host's scheduling, which the ms figures above include): one image lost in a
    # row is 2 periods, two in a row (0.25 % of the images at 5 % loss) 3
    assert f5["age_periods_p99"] <= 2
    assert figures[0.20]["v2g502"] >= 1
    assert st1["tick"]["overruns"] == over0
    # late by more than a period only by as much as the host stalled the whole board
    # process (the pump then runs up to 50 ms of simulated time in one pass)
    assert late <= PERIOD_MS + (stall if stall > 2 else 0), (late, stall)
    with rig.client() as c:
        assert wait_for(lambda: exporting(c), 5)


def test_session_stop_reads_open_then_start_exports_again(rig):
    with rig.client() as c:
        unlock(c)
        assert wait_for(lambda: exporting(c), 5)
        t0 = time.monotonic()
        assert write(c, "session", 0) == 0
        assert wait_for(lambda: read(c, "status.contactor_status") == 1, 1.0)
        dt = time.monotonic() - t0
        print("e2e clean session stop: 40001 reads 1 (OPEN) %.0f ms after the write" % (
            dt * 1000))
        assert write(c, "session", 1) == 0
        assert wait_for(lambda: exporting(c), 10)


def test_kill9_ceases_and_opens_then_restart_resyncs_without_reboot(rig):
    relay = rig.relay
    with rig.client() as c:
        assert wait_for(lambda: exporting(c), 5)
    k0 = len(relay.images)
    t_kill = time.monotonic()
    rig.daemon.send_signal(signal.SIGKILL)
    rig.daemon.wait()
    off = relay.board_offset()
    kill_b = t_kill * 1000 + off
    assert wait_for(lambda: any(im["contactor_status"] == 1 for _, im, _ in
                                relay.images[k0:]), 4), "contactors did not open"
    ims = [im for _, im, _ in relay.images[k0:]]
    cease = next(im["t_ms"] for im in ims if abs(im["p_meas_w"]) < 0.01 * RATED)
    opened = next(im["t_ms"] for im in ims if im["contactor_status"] == 1)
    print("e2e kill -9 of the daemon: export ceased %.0f ms, contactors open %.0f ms after "
          "the kill (heartbeat timeout 1000 ms)" % (cease - kill_b, opened - kill_b))
    assert cease - kill_b <= 1000 + 2 * PERIOD_MS
    t0 = time.monotonic()
    start_s = rig.start_daemon()
    with rig.client() as c:
        assert wait_for(lambda: read(c, "status.link_state") == 1, 10)
        t_up = time.monotonic() - t0
        assert wait_for(lambda: exporting(c), 10)
        t_exp = time.monotonic() - t0
    print("e2e daemon restart: serving after %.2f s, link up after %.2f s, exporting 7 kW "
          "again after %.2f s" % (start_s, t_up, t_exp))
    # no board reboot: the board's clock ran on through it all (a reboot starts it at 0)
    up_ms = relay.images[-1][1]["t_ms"]
    assert up_ms > kill_b > 20000, (up_ms, kill_b)
    print("e2e board uptime %.1f s at the end: the same board process throughout" % (
        up_ms / 1000))


def test_weld_then_session_stop_reads_stuck_within_1s(rig):
    """The scenario event ``contactor_weld`` applied to the running board (through the
    sim's own ``scenario_events.apply``), then a session stop through the daemon."""
    with rig.client() as c:
        unlock(c)
        assert wait_for(lambda: exporting(c), 5)
        board_eval(rig.port, "__import__('scenario_events').apply({'contactor_weld': True}, "
                             "_app, _app.hal.plant)")
        t0 = time.monotonic()
        assert write(c, "session", 0) == 0
        assert wait_for(lambda: read(c, "status.contactor_status") == 0, 2.0), \
            read(c, "status.contactor_status")
        dt = time.monotonic() - t0
        assert read(c, "status.last_fault") == int.from_bytes(b"0x32\0\0\0\0", "big")
    # on the board's clock (the sim's time, which falls behind the wall clock while the
    # host deschedules the board process): the stop to the weld fault
    stop = [e[0] for e in rig.journal("state") if e[3] == "SESSION_STOP"][-1]
    stuck = rig.journal("fault", "0x32")[-1][0]
    slipped = rig.status()["sim"]["slipped_ms"]
    print("e2e weld: 40001 reads 0 (STUCK) %.0f ms after the session stop on the wall "
          "clock (Modbus write to Modbus read), %d ms on the board's clock (SESSION_STOP to "
          "fault 0x32); sim time slipped %d ms since boot" % (dt * 1000, stuck - stop,
                                                               slipped))
    assert stuck - stop <= 1000
