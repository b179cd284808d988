"""Car + daemon + real firmware + CSMS on one machine: the rig of ``make v2g-demo`` and of
the ISO 15118 tests on the simulated board.

- the firmware: ``v2g sim board --flash-dir DIR`` (the real firmware on the MicroPython
  unix runtime against the plant, in real time), its flash holding a config with a short
  enter-service delay (as ``v2g sim demo``'s scenario); its ``link:`` pty goes to the
  daemon, its console pty serves ``v2g status`` and the plant-side measurements;
- the daemon: ``v2g daemon --config daemon.yaml`` in the charger's namespace with a
  ``station`` section (SECC + OCPP client on the daemon's one link session); its stdout
  lines are read by a thread (``events``, ``wait_event``);
- the CSMS: ``python -m v2g.gateway.csms`` on the charger namespace's loopback;
- the car: Josev's EVCC simulator in the car's namespace (``start_ev``).

Measurements at the plant (``plant``): the board's own figures over its console:
measured power (``meas.p_w`` of ``v2g status``), the link wiring's energy integrators
(exact, mJ), contactor status and supervisor state.
Context: host (tests, demo).
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

HOST_TOOLS = Path(__file__).resolve().parents[2]
BOARD_CONFIG = {"enter_service_delay_s": 0.2, "enter_service_ramp_s": 0.0}
PLANT_EXPR = ("(_app.supervisor.state, _app.supervisor.contactor_status(), "
              "_app.ctl.cc[__import__('current').P_MEAS] * _app.held['p_rated_w'] / 4096, "
              "_app.supervisor.meter.exp_mwh[3] / 1000, _app.supervisor.meter.imp_mwh[3] / 1000, "
              "_app.supervisor.link_state, __import__('time').ticks_ms())")


def _env():
    return dict(os.environ, PYTHONPATH=str(HOST_TOOLS), MESSAGE_LOG_JSON="False")


def v2g_argv():
    exe = Path(sys.executable).parent / "v2g"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "v2g.cli"]


class RigError(RuntimeError):
    pass


class Rig:
    def __init__(self, pair, tmp=None, *, setpoint_w=-7000.0, csms=True, station=None,
                 csms_port=9000, modbus_port=15020, log=None):
        self.pair = pair
        self.tmp = Path(tmp or tempfile.mkdtemp(prefix="v2g-rig-"))
        self.setpoint_w = setpoint_w
        self.use_csms = csms
        self.station_cfg = station or {}
        self.csms_port = csms_port
        self.modbus_port = modbus_port
        self.say = log or (lambda msg: None)
        self.board = self.csms = self.daemon = self.ev = None
        self.events = []
        self._cond = threading.Condition()
        self.daemon_start_s = None

    # ---- the firmware ----

    def start_board(self, timeout=30.0):
        flash = self.tmp / "flash"
        flash.mkdir(exist_ok=True)
        (flash / "config.json").write_text(json.dumps(BOARD_CONFIG))
        self.board = subprocess.Popen(v2g_argv() + ["sim", "board", "--flash-dir", str(flash)],
                                      stdout=subprocess.PIPE, stderr=open(self.tmp / "board.err",
                                                                          "w"),
                                      text=True, env=_env())
        lines = [self.board.stdout.readline() for _ in range(2)]
        if not (lines[0].startswith("port: ") and lines[1].startswith("link: ")):
            raise RigError("v2g sim board: expected port:/link: lines, got %r (%s)"
                           % (lines, (self.tmp / "board.err").read_text()[-500:]))
        self.console = lines[0].split(None, 1)[1].strip()
        self.link = lines[1].split(None, 1)[1].strip()
        threading.Thread(target=self.board.stdout.read, daemon=True).start()
        end = time.monotonic() + timeout
        while True:  # the controller runs (grid sync under way)
            try:
                self.plant()
                return self
            except Exception as e:  # noqa: BLE001 - still booting
                if time.monotonic() > end:
                    raise RigError("the board's controller did not come up within %.0f s: %s"
                                   % (timeout, e)) from None
                time.sleep(0.3)

    def board_eval(self, expr):
        from v2g.board.console import BoardLink

        with BoardLink(self.console, banner_timeout_s=3) as link:
            return link.eval(expr)

    def plant(self):
        """The plant side, from the board: dict state, contactor, p_w (measured), export_wh,
        import_wh (the link wiring's integrators, exact), link, board_ms."""
        v = self.board_eval(PLANT_EXPR)
        return dict(zip(("state", "contactor", "p_w", "export_wh", "import_wh", "link",
                         "board_ms"), v, strict=True))

    def status(self):
        r = subprocess.run(v2g_argv() + ["status", "--port", self.console, "--json"],
                           capture_output=True, text=True, env=_env(), timeout=60)
        if r.returncode:
            raise RigError("v2g status: %s" % r.stderr[-500:])
        return json.loads(r.stdout)

    # ---- the back end ----

    def start_csms(self, versions="2.1,2.0.1"):
        self.csms = subprocess.Popen(self.pair.exec_argv("se", [
            sys.executable, "-m", "v2g.gateway.csms", "--port", str(self.csms_port),
            "--versions", versions, "--setpoint-w", str(self.setpoint_w),
            "--out", str(self.tmp / "csms.json")]), stdout=subprocess.PIPE, text=True,
            env=_env())
        line = self.csms.stdout.readline()
        if "listening" not in line:
            raise RigError("CSMS did not start: %r" % line)
        return self

    def csms_record(self, timeout=15):
        self.csms.send_signal(signal.SIGTERM)
        self.csms.wait(timeout=timeout)
        return json.loads((self.tmp / "csms.json").read_text())

    # ---- the daemon ----

    def write_daemon_config(self):
        st = dict(self.station_cfg)
        if self.use_csms:
            st.setdefault("ocpp", {"url": "ws://127.0.0.1:%d" % self.csms_port,
                                   "meter_interval_s": 1.0})
        (self.tmp / "station.json").write_text(json.dumps(st))
        cfg = {"link": {"device": self.link},
               "modbus": {"host": "127.0.0.1", "port": self.modbus_port},
               "station": {"iface": self.pair.if_se, "config": str(self.tmp / "station.json"),
                           "status_path": str(self.tmp / "iso15118.json")}}
        (self.tmp / "daemon.yaml").write_text(yaml.safe_dump(cfg))
        return self.tmp / "daemon.yaml"

    def start_daemon(self, timeout=90.0):
        path = self.write_daemon_config()
        t0 = time.monotonic()
        n = len(self.events)
        self.daemon_err = open(self.tmp / "daemon.log", "a")
        self.daemon = subprocess.Popen(
            self.pair.exec_argv("se", v2g_argv() + ["daemon", "--config", str(path)]),
            stdout=subprocess.PIPE, stderr=self.daemon_err, text=True, env=_env(),
            cwd=self.tmp)
        threading.Thread(target=self._read_daemon, args=(self.daemon,), daemon=True).start()
        self.wait_event("ready", timeout, since=n, what="the daemon's SECC ready (JVM up)")
        self.daemon_start_s = time.monotonic() - t0
        return self.daemon_start_s

    def _read_daemon(self, proc):
        for line in proc.stdout:
            if not line.startswith("{"):
                continue
            try:
                e = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self.events.append(e)
                self._cond.notify_all()
            self.say_event(e)

    def say_event(self, e):
        k = e["event"]
        if k == "charge_loop":
            self.say("charge loop: EV target %+.0f W, firmware command %+.0f W"
                     % (e["target_w"], e.get("plant_w", 0)))
        else:
            self.say("%s %s" % (k, {x: y for x, y in e.items() if x not in ("t", "event")}))

    def wait_event(self, kind, timeout, since=0, what=None):
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self.events[since:]:
                    if e["event"] == kind:
                        return e
                left = end - time.monotonic()
                if left <= 0:
                    raise RigError("no %s (event %r) within %.0f s; events seen: %s; daemon "
                                   "log tail: %s" % (what or kind, kind, timeout,
                                                     [x["event"] for x in self.events[since:]],
                                                     self.daemon_log()[-1500:]))
                self._cond.wait(min(left, 0.5))

    def daemon_log(self):
        try:
            return (self.tmp / "daemon.log").read_text()
        except OSError:
            return ""

    def daemon_status(self):
        try:
            return json.loads((self.tmp / "iso15118.json").read_text())
        except (OSError, ValueError):
            return None

    def stop_daemon(self, sig=signal.SIGTERM, timeout=30):
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(sig)
            try:
                self.daemon.wait(timeout)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        return self.daemon.returncode if self.daemon else None

    # ---- the car ----

    def start_ev(self, service="AC_BPT", loops=20, soc_pct=None):
        """Josev's simulated car; ``soc_pct``: its SoC at plug-in (None: Josev's 10 %,
        below its 30 % discharge floor; see ``v2g.gateway.ev_sim``)."""
        import iso15118

        ex = Path(iso15118.__file__).parent / "shared/examples/evcc/iso15118_20"
        cfg = json.loads((ex / ("evcc_config_%s.json" % service.lower())).read_text())
        cfg["chargeLoopCycle"] = loops
        path = self.tmp / ("ev_%s.json" % service)
        path.write_text(json.dumps(cfg))
        self.ev_log_path = self.tmp / "ev.log"
        self.ev = subprocess.Popen(
            self.pair.exec_argv("ev", [sys.executable, "-m", "iso15118.evcc.main"]
                                if soc_pct is None else
                                [sys.executable, "-m", "v2g.gateway.ev_sim",
                                 "--soc-pct", str(int(soc_pct))]),
            stdout=open(self.ev_log_path, "a"), stderr=subprocess.STDOUT, text=True,
            env=dict(_env(), NETWORK_INTERFACE=self.pair.if_ev, EVCC_CONFIG_PATH=str(path)),
            cwd=self.tmp)
        return self.ev

    def stop_ev(self, timeout=15):
        """Unplug: Josev's EVCC stays up after a normal SessionStop; end it."""
        if self.ev is not None and self.ev.poll() is None:
            self.ev.send_signal(signal.SIGTERM)
            try:
                self.ev.wait(timeout)
            except subprocess.TimeoutExpired:
                self.ev.kill()
                self.ev.wait()

    def ev_log(self):
        try:
            return self.ev_log_path.read_text()
        except (OSError, AttributeError):
            return ""

    # ---- all ----

    def close(self):
        for p in (self.ev, self.daemon, self.csms):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if self.board is not None and self.board.poll() is None:
            self.board.send_signal(signal.SIGTERM)
            try:
                self.board.wait(10)
            except subprocess.TimeoutExpired:
                self.board.kill()
                self.board.wait()


def rss_mb(pid):
    """RSS of ``pid`` and its descendants (the JVM of Josev's codec is a child), MB."""
    total = 0.0
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total = int(line.split()[1]) / 1024.0
    except OSError:
        return 0.0
    try:
        kids = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True,
                              text=True, timeout=5).stdout.split()
    except (OSError, subprocess.SubprocessError):
        kids = []
    return total + sum(rss_mb(int(k)) for k in kids)
