"""The billing chain on one machine: PKI, broker, lossy proxy, ledger and stand-in daemon.

Used by ``tests_host/billing`` and ``make billing-demo``. Everything listens on 127.0.0.1.
Processes: mosquitto (``broker``), ``v2g ledger serve`` and the stand-in daemon
(``python -m v2g.gateway.billing_node``) run as child processes, so they can be killed
with SIGKILL mid-stream and started again; the proxy runs in a thread of the caller.

Context: host (tests, demo).
"""

import json
import os
import signal
import subprocess
import sys
import time

import yaml

from v2g.backend import pki
from v2g.backend.broker import Broker, free_port
from v2g.backend.ledger import Ledger
from v2g.backend.lossy_proxy import LossyProxy
from v2g.common import paths

STATIONS = ("ST-0001", "ST-0002")


def _env():
    env = dict(os.environ)
    host_tools = str(paths.REPO_ROOT / "host_tools")
    env["PYTHONPATH"] = host_tools + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Testbed:
    """The chain's files in ``directory``; ``start_broker()``, ``start_ledger()``,
    ``start_node(...)``; ``close()`` stops what is running."""

    def __init__(self, directory, port=None, stations=STATIONS):
        self.dir = str(directory)
        self.port = port or free_port()
        self.tls_dir = os.path.join(self.dir, "tls")
        self.keys_dir = os.path.join(self.dir, "keys")      # stations' private keys
        self.pub_dir = os.path.join(self.dir, "ledger-keys")  # the ledger's public keys
        self.ca = pki.CA(self.tls_dir)
        self.ca_path = self.ca.cert_path
        self.broker_cert = self.ca.issue("broker", "localhost", server=True)
        self.ledger_cert = self.ca.issue("ledger", "ledger")
        self.stations = {}
        for st in stations:
            self.stations[st] = {"cert": self.ca.issue(st, st),
                                 "signing_key": pki.station_signing_key(
                                     self.keys_dir, self.pub_dir, st)}
        self.db = os.path.join(self.dir, "ledger.sqlite")
        self.broker = Broker(os.path.join(self.dir, "broker"), self.port, self.ca_path,
                             *self.broker_cert)
        self.proxy = None
        self.ledger_proc = None
        self._ledger_log_offset = 0
        self.nodes = []

    # --- broker and proxy ---------------------------------------------------------------
    def start_broker(self):
        self.broker.start()
        return self.broker

    def start_proxy(self, loss, seed=1, **kw):
        self.proxy = LossyProxy(self.port, loss, seed, **kw)
        self.proxy.start()
        return self.proxy

    # --- ledger -------------------------------------------------------------------------
    def start_ledger(self):
        cert, key = self.ledger_cert
        cmd = [sys.executable, "-m", "v2g.cli", "ledger", "serve", "--broker",
               "127.0.0.1:%d" % self.port, "--ca", self.ca_path, "--cert", cert, "--key", key,
               "--keys", self.pub_dir, "--db", self.db]
        path = os.path.join(self.dir, "ledger.log")
        self._ledger_log_offset = os.path.getsize(path) if os.path.exists(path) else 0
        log = open(path, "ab")
        self.ledger_proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=_env())
        log.close()
        return self.ledger_proc

    def wait_ledger(self, timeout=15.0):
        """Wait until the ledger's log says it is connected (and so subscribed soon)."""
        path = os.path.join(self.dir, "ledger.log")
        deadline = time.monotonic() + timeout
        start = self._ledger_log_offset
        while time.monotonic() < deadline:
            try:
                with open(path, "rb") as f:
                    f.seek(start)
                    if b"ledger: connected" in f.read():
                        time.sleep(0.2)  # the SUBSCRIBE follows the CONNACK
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def stop_ledger(self, sig=signal.SIGTERM):
        p, self.ledger_proc = self.ledger_proc, None
        if p and p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)

    def report(self):
        led = Ledger(self.db)
        try:
            return led.report()["stations"]
        finally:
            led.close()

    def acked(self, station):
        if not os.path.exists(self.db):
            return 0
        led = Ledger(self.db)
        try:
            return led.acked_seq(station)
        finally:
            led.close()

    # --- stand-in daemon ----------------------------------------------------------------
    def node_config(self, station, via_proxy=True, cert=None, name=None, **mqtt):
        """Write a daemon config for ``station``; returns its path."""
        c, k = cert or self.stations[station]["cert"]
        port = self.proxy.listen_port if (via_proxy and self.proxy) else self.port
        m = {"host": "127.0.0.1", "port": port, "ca": self.ca_path, "cert": c, "key": k,
             "keepalive_s": 5, "backoff_min_s": 0.1, "backoff_max_s": 1.0,
             "ack_timeout_s": 3.0, "connect_timeout_s": 2.0}
        m.update(mqtt)
        cfg = {"billing": {"station": station,
                           "outbox": os.path.join(self.dir, "outbox-%s.sqlite" % station),
                           "signing_key": self.stations[station]["signing_key"]},
               "mqtt": m}
        path = os.path.join(self.dir, name or ("daemon-%s.yaml" % station))
        with open(path, "w") as f:
            yaml.safe_dump(cfg, f)
        return path

    def start_node(self, config, records, rate=0.0, timeout=120.0, seed=1, log_name=None):
        name = log_name or os.path.basename(config) + ".log"
        cmd = [sys.executable, "-m", "v2g.gateway.billing_node", "--config", config,
               "--records", str(records), "--rate", str(rate), "--timeout", str(timeout),
               "--seed", str(seed), "--stored-log", config + ".stored"]
        err = open(os.path.join(self.dir, name), "ab")
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=_env())
        err.close()
        self.nodes.append(p)
        return p

    @staticmethod
    def node_result(proc, timeout=120.0):
        """Wait for a node; returns (exit code, its JSON summary or None)."""
        out, _ = proc.communicate(timeout=timeout)
        lines = out.decode().strip().splitlines()
        try:
            return proc.returncode, json.loads(lines[-1])
        except (IndexError, ValueError):
            return proc.returncode, None

    def wait_acked(self, station, seq, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.acked(station) >= seq:
                return True
            time.sleep(0.1)
        return False

    def close(self):
        for p in self.nodes:
            if p.poll() is None:
                p.kill()
                p.wait(10)
            if p.stdout:
                p.stdout.close()
        self.stop_ledger()
        if self.proxy:
            self.proxy.stop()
        self.broker.stop()
