"""The real ``v2g daemon`` applies the SEMS hold: ``v2g sim board`` (the firmware on the
MicroPython unix runtime) <- link <- the daemon (``sems:`` section) <- mosquitto (TLS 1.3,
ACL) <- a stand-in SEMS (CN ``sems``) that sends one setpoint and heartbeats, then goes
quiet. Checked on the board: the setpoint is applied, held while the heartbeats come and for
``hold_s - fallback_lead_s`` after the last one, then replaced by the safe local limit (0 W
export); a heartbeat brings the setpoint back. About 30-60 s on a busy machine."""

import json
import os
import signal
import ssl
import subprocess
import sys
import time

import paho.mqtt.client as mqtt
import pytest
import yaml
from v2g.backend.broker import mosquitto_exe
from v2g.backend.chain import STATION, Chain, board_eval
from v2g.backend.testbed import _env

pytestmark = pytest.mark.skipif(mosquitto_exe() is None,
                                reason="mosquitto not installed (make tools)")

HOLD_S, LEAD_S = 3.0, 0.5
SP_W = -5000
BOARD_SP = ("(lambda s: (s.setpoint_id, s.setpoint_p_w, s.setpoint_q_var))"
            "(__import__('sys').modules['main']._app.supervisor)")


class HoldChain(Chain):
    def daemon_config(self):
        path = super().daemon_config()
        with open(path) as f:
            cfg = yaml.safe_load(f)
        cfg["sems"] = {"hold_s": HOLD_S, "fallback_lead_s": LEAD_S, "safe_export_w": 0,
                       "site": "depot-t"}
        with open(path, "w") as f:
            yaml.safe_dump(cfg, f)
        return path

    def start_daemon(self):
        cmd = [sys.executable, "-m", "v2g.cli", "daemon", "--config", self.daemon_config()]
        self.daemon_log = os.path.join(self.dir, "daemon.log")
        with open(self.daemon_log, "ab") as log:
            self.daemon = subprocess.Popen(cmd, stdout=log, stderr=log, env=_env())


def sems_client(chain):
    cert, key = chain.bed.ca.issue("sems", "sems")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=chain.bed.ca_path)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(cert, key)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sems-test")
    c.tls_set_context(ctx)
    c.connect("127.0.0.1", chain.bed.port, 10)
    c.loop_start()
    return c


def wait_board(chain, pred, timeout_s):
    end = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < end:
        last = board_eval(chain.port, BOARD_SP)
        if pred(last):
            return last, time.monotonic()
        time.sleep(0.2)
    raise AssertionError("board setpoint %r after %.0f s" % (last, timeout_s))


def test_daemon_holds_then_falls_back_to_the_safe_limit(tmp_path):
    chain = HoldChain(tmp_path, session_s=600.0)
    c = None
    try:
        chain.bed.start_broker()
        chain.start_board()
        chain.start_daemon()
        c = sems_client(chain)
        hb_topic = "v2g/_sems/depot-t/heartbeat"

        def beat():
            c.publish(hb_topic, json.dumps({"holder": "a", "epoch": 1, "t": time.time()}),
                      qos=0).wait_for_publish(5)
            return time.monotonic()

        # the daemon's link session and MQTT subscription come up in their own time: send
        # the setpoint (a new id each try) until the board has it
        end = time.monotonic() + 90
        n = 0
        while True:
            n += 1
            c.publish("v2g/%s/cmd/setpoint" % STATION, json.dumps(
                {"id": "t-%d" % n, "p_w": SP_W, "q_var": 0, "station": STATION}),
                qos=1).wait_for_publish(5)
            last_hb = time.monotonic()
            sp = board_eval(chain.port, BOARD_SP)
            if sp[1] == SP_W:
                break
            assert time.monotonic() < end, "the setpoint never reached the board: %r" % (sp,)
            time.sleep(1.0)
        # heartbeats keep it for longer than hold_s
        t_end = time.monotonic() + HOLD_S + 1.0
        while time.monotonic() < t_end:
            last_hb = beat()
            time.sleep(0.5)
        assert board_eval(chain.port, BOARD_SP)[1] == SP_W
        # silence: the safe local limit (no export) after hold_s - lead_s
        sp, t_safe = wait_board(chain, lambda s: s[1] == 0, HOLD_S + 30)
        assert t_safe - last_hb >= HOLD_S - LEAD_S, "fell back before the hold time"
        assert "~fallback" not in sp[0] and sp[0].startswith("L")  # a fresh link id
        # a heartbeat: the held setpoint is back
        beat()
        sp, _ = wait_board(chain, lambda s: s[1] == SP_W, 30)
        with open(chain.daemon_log) as f:
            log = f.read()
        assert "safe local limit" in log and "resumed" in log
    finally:
        if c is not None:
            c.loop_stop()
            c.disconnect()
        if chain.daemon is not None and chain.daemon.poll() is None:
            chain.daemon.send_signal(signal.SIGTERM)
            try:
                chain.daemon.wait(15)
            except subprocess.TimeoutExpired:
                pass
        chain.close()
