"""A whole field-bus rig for the gateway tests: the board side of the link on the
MicroPython unix runtime (``tests_host/gateway/mp_gateway_board.py``, a fake supervisor),
a pseudo-terminal as the UART, and ``v2g daemon`` as a process on it, serving Modbus TCP
on 127.0.0.1 (loopback only).

    rig = Rig(tmp_path, micropython_exe); rig.start()
    rig.client() -> pymodbus ModbusTcpClient; rig.link(False) cuts the UART (both ways);
    rig.reconfigure(writes={...}) rewrites the config and sends SIGHUP;
    rig.applied -> the commands the board applied, in order; rig.stop() -> exit code.

The relay between the pty and the board's pipes is a thread; cutting it drops bytes both
ways (as a pulled cable does).
"""

import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import yaml
from v2g.common import paths

from support.link_helpers import board_env

BOARD = Path(__file__).resolve().parent.parent / "gateway" / "mp_gateway_board.py"
TOKEN = "s3cret-token-42"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rig:
    def __init__(self, tmp, micropython, p0=-7000, writes=None):
        self.tmp = Path(tmp)
        self.micropython = micropython
        self.p0 = p0
        self.port = free_port()
        self.writes = writes if writes is not None else {
            "enabled": True, "allow": ["127.0.0.1"], "unlock_token": TOKEN}
        self.applied = []
        self.up = True
        self.relayed = 0
        self._stop = threading.Event()
        self.start_s = None

    # ---- config ----

    def config(self, **over):
        cfg = {"link": {"device": self.slave_name, "hb_timeout_s": 1.0},
               "modbus": {"host": "127.0.0.1", "port": self.port, "stale_s": 1.0,
                          "writes": self.writes},
               "device": {"serial": "TEST-0001"}, "log": {"level": "info"}}
        for k, v in over.items():
            cfg[k] = v
        return cfg

    def write_config(self, cfg):
        self.cfg_path.write_text(yaml.safe_dump(cfg))

    def reconfigure(self, writes=None, raw_text=None, wait_line="config reloaded"):
        """Rewrite the config (or write ``raw_text``), SIGHUP, wait for ``wait_line``."""
        mark = len(self.log_text())
        if raw_text is not None:
            self.cfg_path.write_text(raw_text)
        else:
            self.writes = writes
            self.write_config(self.config())
        self.daemon.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if wait_line in self.log_text()[mark:]:
                return
            time.sleep(0.05)
        raise AssertionError("daemon did not log %r after SIGHUP:\n%s"
                             % (wait_line, self.log_text()[mark:]))

    def log_text(self):
        try:
            return self.log_path.read_text()
        except OSError:
            return ""

    # ---- processes ----

    def start(self):
        self.master, self.slave = pty.openpty()
        tty.setraw(self.slave)
        self.slave_name = os.ttyname(self.slave)
        self.board = subprocess.Popen(
            [self.micropython, str(BOARD), str(self.p0)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=board_env(), bufsize=0)
        threading.Thread(target=self._relay, daemon=True).start()
        threading.Thread(target=self._board_lines, daemon=True).start()
        self.cfg_path = self.tmp / "config.yaml"
        self.log_path = self.tmp / "daemon.log"
        self.write_config(self.config())
        env = dict(os.environ)
        env["PYTHONPATH"] = str(paths.HOST_TOOLS_DIR)
        t0 = time.monotonic()
        self._log = open(self.log_path, "w")
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "v2g.cli", "daemon", "--config", str(self.cfg_path)],
            stdout=subprocess.PIPE, stderr=self._log, env=env, text=True)
        line = self._readline(10.0)
        self.start_s = time.monotonic() - t0
        if "serving" not in line:
            raise AssertionError("daemon did not start: %r\n%s" % (line, self.log_text()))
        self.wait_link_up()
        return self

    def _readline(self, timeout):
        r, _, _ = select.select([self.daemon.stdout], [], [], timeout)
        return self.daemon.stdout.readline() if r else ""

    def wait_link_up(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while time.monotonic() < deadline:
                rr = c.read_holding_registers(0, count=52)
                if not rr.isError() and rr.registers[42] == 1 and rr.registers[0] == 2:
                    return
                time.sleep(0.1)
        raise AssertionError("link not up within %.0f s:\n%s" % (timeout, self.log_text()))

    def _relay(self):
        out = self.board.stdout.fileno()
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self.master, out], [], [], 0.1)
            except (OSError, ValueError):
                return
            for fd in r:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    data = b""
                if not data:
                    if fd == out:
                        return
                    continue
                if not self.up:
                    continue
                self.relayed += len(data)
                try:
                    if fd == self.master:
                        self.board.stdin.write(data)
                    else:
                        os.write(self.master, data)
                except (OSError, ValueError):
                    return

    def _board_lines(self):
        for line in self.board.stderr:
            try:
                self.applied.append(json.loads(line)["applied"])
            except (ValueError, KeyError, TypeError):
                pass

    def link(self, up):
        self.up = up

    def setpoints(self):
        return [a for a in self.applied if a[0] == "setpoint"]

    def client(self):
        from pymodbus.client import ModbusTcpClient

        c = ModbusTcpClient("127.0.0.1", port=self.port, timeout=3, retries=0)
        assert c.connect()
        return c

    def stop(self):
        """SIGTERM the daemon; its exit code (None when it did not stop in 10 s)."""
        rc = None
        if self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                rc = self.daemon.wait(10)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        else:
            rc = self.daemon.returncode
        self._stop.set()
        try:
            self.board.stdin.close()
        except OSError:
            pass
        try:
            self.board.wait(5)
        except subprocess.TimeoutExpired:
            self.board.kill()
            self.board.wait()
        self._log.close()
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        return rc
