"""The station emulator on a real broker (TLS 1.3, client certificates, ACL): three
stations connect and say so in the ready file, publish telemetry, apply a setpoint once per
id, and connect again after the broker restarts; a station whose SUBACK never comes
connects again. About 20 s."""

import asyncio
import json
import logging
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from v2g.backend.broker import mosquitto_exe
from v2g.backend.sems import tls_context
from v2g.backend.sems_bench import SiteRun, _env
from v2g.backend.sems_emulator import Emulator
from v2g.backend.sems_site import load_site
from v2g.common import paths

pytestmark = pytest.mark.skipif(mosquitto_exe() is None,
                                reason="mosquitto not installed (`make tools`)")

SITE = str(paths.REPO_ROOT / "bench" / "sems" / "site-50.yaml")
IDS = ["ST-0001", "ST-0002", "ST-0003"]


def _wait(pred, timeout_s, what):
    end = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < end, what
        time.sleep(0.05)


def _sems_client(run):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sems")
    c.tls_set_context(tls_context(run.ca.cert_path, *run.sems_cert))
    seen = {}
    lock = threading.Lock()

    def on_message(c, u, m):
        with lock:
            seen.setdefault(m.topic.split("/")[1], []).append(json.loads(m.payload))

    up = threading.Event()
    c.on_connect = lambda c, u, f, rc, p: (c.subscribe("v2g/+/telemetry", 0), up.set())
    c.on_message = on_message
    c.connect("127.0.0.1", run.port, 10)
    c.loop_start()
    assert up.wait(10)
    return c, seen


def test_emulated_stations_connect_apply_once_and_reconnect(tmp_path):
    run = SiteRun(tmp_path, SITE, emulators=1, log=lambda *a: None)
    run.setup()
    ready, out = tmp_path / "emu.ready", tmp_path / "emu.json"
    p = subprocess.Popen(
        [sys.executable, "-m", "v2g.backend.sems_emulator", "--site", SITE, "--broker",
         "127.0.0.1:%d" % run.port, "--ca", run.ca.cert_path, "--certs", run.cert_dir,
         "--index", ",".join(IDS), "--out", str(out), "--connect-s", "0.5",
         "--ready", str(ready)],
        env=_env(), stderr=open(tmp_path / "emu.log", "wb"))
    c = None
    try:
        _wait(ready.exists, 30, "stations not connected")
        c, seen = _sems_client(run)
        _wait(lambda: set(seen) == set(IDS), 10, "no telemetry from every station")
        assert all(m["station"] in IDS and m["mode"] for v in seen.values() for m in v)
        sp = {"id": "sp-1", "p_w": -3000, "q_var": 0, "station": "ST-0002", "ts": time.time()}
        for _ in range(2):   # the same id twice: applied once, the second is a duplicate
            c.publish("v2g/ST-0002/cmd/setpoint", json.dumps(sp), qos=1).wait_for_publish(5)
        _wait(lambda: any(m["sp_id"] == "sp-1" for m in seen["ST-0002"]), 10,
              "setpoint not reported in telemetry")
        run.broker.stop()          # every connection drops; the stations come back
        c.loop_stop()
        run.broker.start()
        c, seen = _sems_client(run)
        _wait(lambda: set(seen) == set(IDS), 20, "not every station back")
        sp = dict(sp, id="sp-2", p_w=-2000)
        c.publish("v2g/ST-0002/cmd/setpoint", json.dumps(sp), qos=1)
        _wait(lambda: any(m["sp_id"] == "sp-2" for m in seen.get("ST-0002", [])), 10,
              "no setpoint applied after the broker restarted")
    finally:
        if c is not None:
            c.loop_stop()
        p.send_signal(signal.SIGTERM)
        p.wait(20)
        run.broker.stop()
    r = json.loads(out.read_text())
    assert [a[1] for a in r["applied"]] == ["sp-1", "sp-2"] and r["duplicates"] == 1
    log = (tmp_path / "emu.log").read_text()   # refused connects while the broker was down
    assert r["dropped"] == 0 and "Traceback" not in log and "Exception" not in log, log


def _silent_broker(ca, cert, key):
    """A TLS 1.3 listener that answers CONNECT with CONNACK and then never says another
    word (a SUBSCRIBE lost in a broker). Returns (port, connections accepted: a list)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(cert, key)
    srv = socket.create_server(("127.0.0.1", 0))
    conns = []

    def serve():
        while True:
            try:
                raw, _ = srv.accept()
            except OSError:
                return
            try:
                tls = ctx.wrap_socket(raw, server_side=True)
                tls.recv(1024)                    # CONNECT
                tls.sendall(b"\x20\x02\x00\x00")  # CONNACK, accepted
                conns.append(tls)                 # and nothing more
            except OSError:
                raw.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv, conns


def test_station_without_suback_reconnects(tmp_path, caplog):
    run = SiteRun(tmp_path, SITE, emulators=1, log=lambda *a: None)
    run.setup()
    run.broker.stop()   # the PKI only: the broker here is one that never sends SUBACK
    srv, conns = _silent_broker(run.ca.cert_path, *run.broker_cert)
    emu = Emulator(load_site(SITE), ["ST-0001"], "127.0.0.1", srv.getsockname()[1],
                   run.ca.cert_path, run.cert_dir, time.time(), connect_s=0.0,
                   handshake_s=1.5)

    async def go():
        task = asyncio.create_task(emu.run())
        end = time.monotonic() + 20
        while len(conns) < 2 and time.monotonic() < end:
            await asyncio.sleep(0.1)
        emu.stop.set()
        await task

    try:
        with caplog.at_level(logging.WARNING, logger="v2g.sems.emulator"):
            asyncio.run(go())
    finally:
        srv.close()
    assert len(conns) >= 2, "the station did not connect again"
    assert "ST-0001: mqtt: no SUBACK" in caplog.text and "reconnecting" in caplog.text
    assert emu.n_connected == 0   # never counted as ready
