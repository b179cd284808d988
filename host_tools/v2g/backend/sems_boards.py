"""Stations of the site that run the real firmware: ``v2g sim board`` (the firmware on the
MicroPython unix runtime, in real time) behind its own ``v2g daemon`` (link, billing leg
with MQTT over TLS 1.3, the SEMS hold, a ``sim_ev`` stand-in car from the site file).

The daemon speaks exactly the contract an emulated station speaks (``v2g/<st>/telemetry``
out, ``cmd/setpoint`` in, the SEMS heartbeat), so the SEMS cannot tell them apart. The
bench observes them from outside, as a site controller would:

- the board's measured power and the link id of the setpoint in force over the daemon's
  Modbus TCP (status block: ``p_w`` at 17, ``setpoint_id`` at 34), 10 Hz;
- the setpoints the SEMS sent (MQTT id and plan time ``ts``) on ``v2g/<st>/cmd/setpoint``
  with the station's own certificate (a second client of the same CN); a setpoint counts as
  applied when the board reports its link id (``billing_leg.link_setpoint_id``), so the
  latency includes the daemon, the link and up to one poll (0.1 s) of the observer;
- fallback: the board runs a ``<id>~fallback<n>`` id of the daemon's SEMS hold;
- the car's SoC from the daemon's telemetry (CN ``sems`` reads ``v2g/+/telemetry``).

``result()`` has the station emulator's result format (samples, applied, snapshots), so the
bench adds the boards to the site's figures like one more emulator.

Cost (measured over 8 s of steady state in the 1000-station bench, two x64 cores): about
0.10 of a core per board station (board 7.2-7.7 %, daemon 2.2-2.5 %). The whole site with
ten of them and 990 emulated stations takes about 1.6 of the two cores (docs/sems.md).

Context: host (bench, tests).
"""

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
import yaml
from pymodbus.client import ModbusTcpClient

from v2g.backend import pki
from v2g.backend.broker import listen_port
from v2g.backend.chain import niced, sim_flash, start_sim_board
from v2g.backend.sems import tls_context
from v2g.gateway.billing_leg import link_setpoint_id

POLL_S = 0.1
# Ten boards in real time share this machine's cores with the emulated site: each sends
# its register image every 50 ms instead of 10 ms (``link_image_ms``; the daemon parses
# every image, and a 115200-baud UART needs at least 20 ms anyway)
IMAGE_MS = 50
SNAPSHOT_S = 2.0
P_W_ADDR, SP_ID_ADDR = 17, 34  # status block (regmap.STATUS): int32 p_w, uint32 setpoint_id
ENERGIZED = 4  # link_msgs.STATES
FALLBACK_IDS = 64  # fallback/resume ids followed per SEMS id (the hold's counter n)


def _words32(regs, i, signed):
    v = (regs[i] << 16) | regs[i + 1]
    return v - (1 << 32) if signed and v >= 1 << 31 else v


def _client(ca, cert, key, client_id):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    c.tls_set_context(tls_context(ca, cert, key))
    return c


class BoardStation:
    """One board + daemon; its files under ``directory``."""

    def __init__(self, directory, sid, spec, site, broker_port, ca, cert_dir, env, nice=0):
        self.nice = nice
        self.dir, self.id, self.spec, self.site = directory, sid, spec, site
        self.port, self.ca, self.cert_dir, self.env = broker_port, ca, cert_dir, env
        os.makedirs(directory, exist_ok=True)
        self.board = self.daemon = self.mq = None
        self.modbus_port = listen_port()
        self.sent = {}  # link id -> (mqtt id, plan ts)
        self.fallback_ids = set()
        self.p_w, self.link_sp, self.ev = 0.0, None, None
        self.applied_ids = set()
        self.pump = None  # the board's real-time pump figures, read before it stops

    def start_board(self):
        sc = {"name": "sems-site-board", "duration_s": 3600.0,
              "grid": {"v_nom_ln_rms": 230.0, "f_nom_hz": 60, "category": "II"},
              "events": []}
        path = os.path.join(self.dir, "scenario.json")
        with open(path, "w") as f:
            json.dump(sc, f)
        flash = sim_flash(os.path.join(self.dir, "flash"), config={"link_image_ms": IMAGE_MS})
        self.board, self.console, self.link_dev = start_sim_board(
            flash, path, os.path.join(self.dir, "board.log"), nice=self.nice)

    def start_daemon(self):
        s, site = self.spec, self.site
        keys = os.path.join(self.dir, "keys")
        cfg = {
            "link": {"device": self.link_dev},
            "modbus": {"host": "127.0.0.1", "port": self.modbus_port},
            "device": {"serial": self.id},
            "log": {"level": "warning"},
            "billing": {"station": self.id, "outbox": os.path.join(self.dir, "outbox.sqlite"),
                        "signing_key": pki.station_signing_key(keys, keys, self.id),
                        "telemetry_s": site["telemetry_s"]},
            "mqtt": {"host": "127.0.0.1", "port": self.port, "ca": self.ca,
                     "cert": os.path.join(self.cert_dir, self.id + ".pem"),
                     "key": os.path.join(self.cert_dir, self.id + ".key"),
                     "keepalive_s": 5, "backoff_min_s": 0.2, "backoff_max_s": 2.0,
                     "ack_timeout_s": 600.0, "connect_timeout_s": 5.0},
            "sems": {"hold_s": site["hold_s"], "fallback_lead_s": site["fallback_lead_s"],
                     "safe_export_w": site["safe_export_w"],
                     "safe_import_w": site["safe_import_w"], "site": site["site"]},
            "sim_ev": {k: float(v) for k, v in (s["ev"] or {}).items()},
        }
        path = os.path.join(self.dir, "daemon.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(cfg, f)
        with open(os.path.join(self.dir, "daemon.log"), "ab") as log:
            self.daemon = subprocess.Popen(
                [sys.executable, "-m", "v2g.cli", "daemon", "--config", path],
                stdout=log, stderr=log, env=self.env,
                preexec_fn=niced(self.nice))

    # --- observation ----------------------------------------------------------------
    def watch_setpoints(self):
        cert = os.path.join(self.cert_dir, self.id + ".pem")
        key = os.path.join(self.cert_dir, self.id + ".key")
        c = self.mq = _client(self.ca, cert, key, "observer-" + self.id)
        c.on_connect = lambda c, u, f, rc, p: c.subscribe("v2g/%s/cmd/setpoint" % self.id, 1)
        c.on_message = self._setpoint
        c.connect("127.0.0.1", self.port, 10)
        c.loop_start()

    def _setpoint(self, c, u, m):
        try:
            d = json.loads(m.payload)
            sp_id, ts = str(d["id"]), d.get("ts")
        except (ValueError, KeyError, TypeError):
            return
        self.sent[link_setpoint_id(sp_id)] = (sp_id, ts)
        for n in range(1, FALLBACK_IDS):  # the hold's ids for it (sems_hold.HoldGate)
            self.fallback_ids.add(link_setpoint_id("%s~fallback%d" % (sp_id, n)))

    def poll(self, mb):
        """One Modbus read; returns (p_w, in fallback, applied (mqtt id, ts) or None)."""
        rr = mb.read_holding_registers(0, count=SP_ID_ADDR + 2)
        if rr.isError():
            return None
        regs = rr.registers
        p = _words32(regs, P_W_ADDR, True)
        if p == -(1 << 31):  # "not implemented": no fresh image
            return None
        lid = _words32(regs, SP_ID_ADDR, False)
        new = None
        if lid in self.sent and lid not in self.applied_ids:
            self.applied_ids.add(lid)
            new = self.sent[lid]
        return float(p), lid in self.fallback_ids, new

    def stop(self):
        if self.mq is not None:
            self.mq.loop_stop()
            self.mq.disconnect()
        for p in (self.daemon, self.board):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in (self.daemon, self.board):
            if p is None:
                continue
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


class BoardStations:
    """Start ``start()``, watch (a thread), ``stop()`` -> ``result()``."""

    def __init__(self, directory, ids, site, broker_port, ca, cert_dir, sems_cert, env,
                 log=print, nice=0):
        self.st = [BoardStation(os.path.join(directory, sid), sid, site["stations"][sid],
                                site, broker_port, ca, cert_dir, env, nice)
                   for sid in ids]
        self.site, self.port, self.ca, self.sems_cert, self.log = (
            site, broker_port, ca, sems_cert, log)
        self.samples, self.applied, self.snapshots = [], [], []
        self._stop = threading.Event()
        self.thread = None
        self.t0 = None  # the run's t0 (wall clock): snapshots every 2 s from it, as the
        # emulators take theirs, so the fairness check compares one instant

    def start(self):
        # pymodbus logs every refused connection while a daemon starts: the wait says it
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        t = time.monotonic()
        try:
            for s in self.st:
                s.start_board()
            for s in self.st:
                s.start_daemon()
                s.watch_setpoints()
        except BaseException:
            for s in self.st:  # nothing left running behind a failed start
                s.stop()
            raise
        c = self.tel = _client(self.ca, *self.sems_cert, "observer-telemetry")
        c.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [("v2g/%s/telemetry" % s.id, 0) for s in self.st])
        c.on_message = self._telemetry
        c.connect("127.0.0.1", self.port, 10)
        c.loop_start()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        self.log("sems-bench: %d simulated boards with their daemons started in %.1f s"
                 % (len(self.st), time.monotonic() - t))

    def wait_ready(self, timeout_s):
        """Until every board is ENERGIZED (its car plugged in by the daemon's ``sim_ev``,
        the grid synchronised), read over Modbus; RuntimeError naming the others."""
        end = time.monotonic() + timeout_s
        states = {}
        while time.monotonic() < end:
            for s in self.st:
                try:
                    with ModbusTcpClient("127.0.0.1", port=s.modbus_port, timeout=1) as mb:
                        rr = mb.read_holding_registers(0, count=2)
                        states[s.id] = None if rr.isError() else rr.registers[1]
                except Exception:  # noqa: BLE001 - the daemon may not listen yet
                    states[s.id] = None
            if all(v == ENERGIZED for v in states.values()):
                return
            time.sleep(0.5)
        raise RuntimeError("simulated boards not energized within %.0f s: %s (logs in %s)" % (
            timeout_s, {k: v for k, v in states.items() if v != ENERGIZED},
            os.path.dirname(self.st[0].dir)))

    def _telemetry(self, c, u, m):
        sid = m.topic.split("/")[1]
        for s in self.st:
            if s.id == sid:
                try:
                    s.ev = json.loads(m.payload).get("ev")
                except (ValueError, AttributeError):
                    pass

    def _watch(self):
        clients = {s.id: ModbusTcpClient("127.0.0.1", port=s.modbus_port, timeout=1)
                   for s in self.st}
        safe = self.site["safe_export_w"], self.site["safe_import_w"]
        next_snap = -1e9
        while not self._stop.is_set():
            t0 = time.monotonic()
            tot, n_fb, n_unsafe, ok = 0.0, 0, 0, True
            for s in self.st:
                try:
                    r = s.poll(clients[s.id])
                except Exception:  # noqa: BLE001 - the daemon may not serve yet
                    r = None
                if r is None:
                    ok = False
                    continue
                s.p_w, fb, new = r
                tot += s.p_w
                n_fb += fb
                n_unsafe += not -safe[0] - 50.0 <= s.p_w <= safe[1] + 50.0
                if new is not None:
                    self.applied.append((s.id, new[0], new[1], round(time.time(), 4)))
            if ok:  # a sample only when every board was read (the site total is whole)
                self.samples.append((round(time.time(), 3), round(tot, 1), n_fb, n_unsafe))
            rel = time.time() - (self.t0 or 0.0)
            if self.t0 is not None and rel >= next_snap and ok:
                next_snap = (rel // SNAPSHOT_S + 1) * SNAPSHOT_S
                self.snapshots.append((round(time.time(), 3), {
                    s.id: (round(s.p_w, 1), s.ev) for s in self.st}))
            self._stop.wait(max(0.0, POLL_S - (time.monotonic() - t0)))
        for c in clients.values():
            c.close()

    def read_pumps(self):
        """Each board's real-time pump figures (``sim_board.stats``: simulated ms, ms slipped
        after stalls, largest pass), read over its console before the boards stop: with
        the boards niced the bench must show they still kept real time. None for a board
        that did not answer."""
        from v2g.board.status import read_status

        for s in self.st:
            try:
                s.pump = read_status(s.console).get("sim")
            except Exception as e:  # noqa: BLE001 - a figure, not a condition of the run
                self.log("sems-bench: %s: pump figures not read: %s" % (s.id, e))

    def stop(self):
        self._stop.set()
        if self.thread is not None:
            self.thread.join(5)
        if getattr(self, "tel", None) is not None:
            self.tel.loop_stop()
            self.tel.disconnect()
        for s in self.st:
            s.stop()

    def result(self):
        return {"stations": [s.id for s in self.st], "samples": self.samples,
                "applied": self.applied, "duplicates": 0, "dropped": 0,
                "snapshots": self.snapshots, "hb_holders": [], "boards": True,
                "pumps": {s.id: s.pump for s in self.st}}
