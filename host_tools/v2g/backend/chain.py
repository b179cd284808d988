"""The real billing chain on one machine: firmware board, daemon, broker, ledger.

``v2g sim board`` (the firmware on the MicroPython unix runtime: meter, energy journal,
link) -> a relay between its link pty and a second pty (``LinkRelay``: whole frames, each
lost with probability ``loss``, half dropped, half with 1-3 bits flipped) -> ``v2g daemon``
(link, outbox, Publisher) -> lossy TCP proxy -> mosquitto (TLS 1.3, client certificates,
ACL) -> ``v2g ledger serve``. Used by ``make billing-demo`` (``v2g.backend.demo``) and
``tests_host/billing/test_chain.py``. Everything listens on 127.0.0.1; the board's energy
interval is set short (``energy_interval_s`` in its flash copy of board.json).

Context: host (demo, tests).
"""

import json
import os
import pty
import random
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tty

import yaml

from v2g.backend.broker import free_port
from v2g.backend.testbed import Testbed, _env
from v2g.board.console import BoardLink
from v2g.common import boards

STATION = "ST-0001"

# Run on the board (its REPL, beside the running main.py): the energy journal's next
# flush writes half of its first pending frame, syncs, notes the meter then and stops
# (Chain.power_cut_mid_record kills the process). MicroPython and CPython alike.
_TEAR_NEXT_RECORD = """
import sys, time, json
from services import energy_journal as _ej
_a = sys.modules['main']._app
_r = _a.energy_journal.ring
def _torn():
    p = _r._pending
    if not p:
        return True
    if _r._count >= _r.records_per_segment:
        _r._new_segment()
    elif _r._f is None:
        _r._f = open(_r.path(_r._segs[-1]), 'ab')
    fr = p[0]
    _r._f.write(fr[:len(fr) // 2])
    _r._f.flush()
    rec = _ej.decode(fr)
    imp, exp = _a.supervisor.meter.totals_mwh()
    with open(_a.root + 'cut.json', 'w') as f:
        f.write(json.dumps({'seq': rec[0], 'import_mwh': imp, 'export_mwh': exp,
                            'torn_import_mwh': rec[7], 'torn_export_mwh': rec[8]}))
    while True:
        time.sleep_ms(10)
_r.flush = _torn
"""


class LinkRelay:
    """Frames (0x00-delimited COBS) between the board's link pty and a new pty."""

    def __init__(self, board_dev, loss=0.0, seed=1):
        self.board_fd = os.open(board_dev, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.board_fd)
        self.master, self.slave = pty.openpty()  # the slave stays open: daemons come and go
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.device = os.ttyname(self.slave)
        self.loss = loss
        self.rng = random.Random(seed)
        self.buf = {self.board_fd: bytearray(), self.master: bytearray()}
        self.stats = {"frames": 0, "dropped": 0, "corrupted": 0}
        self._start()

    def _start(self):
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(self._stop,), daemon=True)
        self.thread.start()

    def attach_board(self, board_dev):
        """Relay from a restarted board's new link pty; the daemon's side stays."""
        self._stop.set()
        self.thread.join(2)
        try:
            os.close(self.board_fd)
        except OSError:
            pass
        self.board_fd = os.open(board_dev, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self.board_fd)
        self.buf = {self.board_fd: bytearray(), self.master: bytearray()}
        self._start()

    def _mutate(self, frame):
        self.stats["frames"] += 1
        r = self.rng.random()
        if r < self.loss / 2:
            self.stats["dropped"] += 1
            return b""
        if r < self.loss:
            self.stats["corrupted"] += 1
            b = bytearray(frame)
            for _ in range(self.rng.randint(1, 3)):
                b[self.rng.randrange(len(b) - 1)] ^= 1 << self.rng.randrange(8)
            return bytes(b)
        return frame

    def _run(self, stop):
        peer = {self.board_fd: self.master, self.master: self.board_fd}
        while not stop.is_set():
            try:
                ready, _, _ = select.select(list(peer), [], [], 0.05)
            except (OSError, ValueError):
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except BlockingIOError:
                    continue
                except OSError:  # the board is gone (power cut): wait for attach_board
                    time.sleep(0.05)
                    continue
                b = self.buf[fd]
                b += data
                while True:
                    i = b.find(0)
                    if i < 0:
                        break
                    frame = bytes(b[:i + 1])
                    del b[:i + 1]
                    out = self._mutate(frame) if len(frame) > 1 else frame
                    if out:
                        try:
                            os.write(peer[fd], out)
                        except OSError:
                            pass  # no daemon on the other side right now

    def close(self):
        self._stop.set()
        self.thread.join(2)
        for fd in (self.board_fd, self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


def sim_flash(flash, board_keys=None, config=None):
    """A simulated board's flash directory: the firmware, ``board.json`` with
    ``board_keys`` (validated: a bad key names itself here, not as a silent default) and the
    ``config.json`` board mode reads (a quick start, plus ``config``). Returns ``flash``."""
    from v2g.sim import simboard

    os.makedirs(flash, exist_ok=True)
    simboard.populate(flash)
    bj = os.path.join(flash, "board.json")
    with open(bj) as f:
        board = json.load(f)
    board.update(board_keys or {})
    boards.validate(board, bj)
    with open(bj, "w") as f:
        json.dump(board, f)
    with open(os.path.join(flash, "config.json"), "w") as f:
        json.dump(dict({"enter_service_delay_s": 0.2, "enter_service_ramp_s": 0.0},
                       **(config or {})), f)
    return flash


def niced(nice):
    """A ``preexec_fn`` that adds ``nice`` to a child's niceness (None for 0)."""
    return (lambda: os.nice(nice)) if nice else None


def start_sim_board(flash, scenario, log_path, nice=0):
    """``v2g sim board`` on ``flash`` with ``scenario``; returns (process, console port,
    link device) from its first two lines; stderr goes to ``log_path``. ``nice``: added to
    the process's niceness (the board process inherits it)."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "v2g.cli", "sim", "board",
                                 "--flash-dir", flash, "--scenario", scenario],
                                stdout=subprocess.PIPE, stderr=log, text=True, env=_env(),
                                preexec_fn=niced(nice))
    console = proc.stdout.readline().split(None, 1)[1].strip()
    link = proc.stdout.readline().split(None, 1)[1].strip()
    return proc, console, link


def board_eval(port, expr, timeout_s=30.0):
    end = time.monotonic() + timeout_s
    while True:
        try:
            with BoardLink(port, banner_timeout_s=2) as link:
                return link.eval(expr)
        except Exception:  # noqa: BLE001 - the board may be (re)booting
            if time.monotonic() > end:
                raise
            time.sleep(0.5)


class Chain:
    """Start with ``start()``; ``close()`` stops everything."""

    def __init__(self, directory, port=None, proxy_loss=0.0, link_loss=0.0,
                 export_w=-7000, session_s=20.0, interval_s=2, board_keys=None, seed=1):
        self.dir = str(directory)
        os.makedirs(self.dir, exist_ok=True)
        self.bed = Testbed(self.dir, port=port, stations=(STATION,))
        self.proxy_loss, self.link_loss = proxy_loss, link_loss
        self.export_w, self.session_s, self.interval_s = export_w, session_s, interval_s
        self.board_keys = dict(board_keys or {})  # e.g. a small journal ring
        self.seed = seed
        self.board = self.daemon = self.relay = None
        self.port = self.link_dev = None

    def _flash(self):
        self.flash_dir = sim_flash(os.path.join(self.dir, "flash"),
                                   dict(self.board_keys, energy_interval_s=self.interval_s))
        return self.flash_dir

    def _scenario(self, session_s=None):
        session_s = self.session_s if session_s is None else session_s
        sc = {"name": "billing-export", "duration_s": 3600.0,
              "grid": {"v_nom_ln_rms": 230.0, "f_nom_hz": 60, "category": "II"},
              "events": [{"t_s": 0.0, "session": "stop"},
                         {"t_s": 0.0, "setpoint": {"id": "export", "p_w": self.export_w,
                                                   "q_var": 0}},
                         {"t_s": 1.0, "session": "start"},
                         {"t_s": 1.0 + session_s, "session": "stop"}]}
        path = os.path.join(self.dir, "scenario.json")
        with open(path, "w") as f:
            json.dump(sc, f)
        return path

    def start_board(self, session_s=None):
        """Start the board (again: the same flash, a new session of ``session_s``)."""
        self.board, self.port, self.link_dev = start_sim_board(
            self._flash(), self._scenario(session_s), os.path.join(self.dir, "board.log"))
        if self.relay is None:
            self.relay = LinkRelay(self.link_dev, self.link_loss, self.seed)
        else:
            self.relay.attach_board(self.link_dev)

    def power_cut_mid_record(self, timeout_s=60.0):
        """Cut the board's power in the middle of writing a record: the journal's next
        record write puts the first half of its frame on flash and syncs it, notes the
        meter totals then (and the torn record) in ``cut.json`` and stops the board's
        loop; the board process then gets SIGKILL. Returns that note:
        ``{"seq", "import_mwh", "export_mwh", "torn_import_mwh", "torn_export_mwh"}``
        (the meter's totals include the torn record, which the journal loses: the open
        interval of a power cut)."""
        note = os.path.join(self.flash_dir, "cut.json")
        if os.path.exists(note):
            os.remove(note)
        with BoardLink(self.port, banner_timeout_s=5) as link:
            link.exec(_TEAR_NEXT_RECORD, what="arming the power cut")
        end = time.monotonic() + timeout_s
        while not os.path.exists(note):
            if time.monotonic() > end:
                raise TimeoutError("no record write within %.0f s" % timeout_s)
            time.sleep(0.02)
        time.sleep(0.05)  # the note is written and closed before the loop stops
        self.board.send_signal(signal.SIGKILL)
        self.board.wait(10)
        self.board.stdout.close()
        with open(note) as f:
            return json.loads(f.read())

    def wait_session(self, timeout_s=60.0):
        """Until the board's journal has a session open (after a (re)start)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.journal()[0]["session"]:
                return
            time.sleep(0.5)
        raise TimeoutError("no session opened within %.0f s" % timeout_s)

    def ledger_rows(self):
        """The ledger's credited records of the station, by seq: dicts with ``seq``,
        ``seq_last``, ``kind``, ``session``, ``import_mwh``, ``export_mwh``, ``flags``
        (a list), ``soc_start_pm``, ``soc_end_pm``."""
        db = sqlite3.connect(self.bed.db)
        try:
            rows = db.execute("SELECT seq, seq_last, kind, session_no, import_mwh, export_mwh,"
                              " flags, soc_start_pm, soc_end_pm FROM ledger_record WHERE "
                              "station=? ORDER BY seq", (STATION,)).fetchall()
        finally:
            db.close()
        keys = ("seq", "seq_last", "kind", "session", "import_mwh", "export_mwh", "flags",
                "soc_start_pm", "soc_end_pm")
        out = [dict(zip(keys, r)) for r in rows]
        for r in out:
            r["flags"] = [f for f in r["flags"].split(",") if f]
        return out

    def daemon_config(self):
        path = self.bed.node_config(STATION, via_proxy=self.bed.proxy is not None)
        with open(path) as f:
            cfg = yaml.safe_load(f)
        cfg["link"] = {"device": self.relay.device}
        cfg["modbus"] = {"host": "127.0.0.1", "port": free_port()}
        with open(path, "w") as f:
            yaml.safe_dump(cfg, f)
        return path

    def start_daemon(self):
        cmd = [sys.executable, "-m", "v2g.cli", "daemon", "--config", self.daemon_config()]
        log = open(os.path.join(self.dir, "daemon.log"), "ab")
        self.daemon = subprocess.Popen(cmd, stdout=log, stderr=log, env=_env())
        log.close()

    def kill_daemon(self):
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGKILL)
            self.daemon.wait(10)

    def start(self):
        self.bed.start_broker()
        if self.proxy_loss:
            self.bed.start_proxy(self.proxy_loss, seed=1)
        self.bed.start_ledger()
        self.bed.wait_ledger()
        self.start_board()
        self.start_daemon()

    def journal(self):
        """The board's journal stats and meter totals (mWh)."""
        return board_eval(self.port, "(lambda a: (a.energy_journal.stats(), "
                                     "a.supervisor.meter.totals_mwh()))"
                                     "(__import__('sys').modules['main']._app)")

    def wait_done(self, timeout_s=180.0):
        """Until the session has ended on the board and the ledger acked its last record;
        returns (journal stats, meter totals)."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            st, totals = self.journal()
            if st["session"] == 0 and st["last_seq"] > 2 and \
                    self.bed.acked(STATION) >= st["last_seq"]:
                return st, totals
            time.sleep(1.0)
        raise TimeoutError("the chain did not settle in %.0f s" % timeout_s)

    def close(self):
        self.kill_daemon()
        if self.board is not None and self.board.poll() is None:
            self.board.send_signal(signal.SIGTERM)
            try:
                self.board.wait(10)
            except subprocess.TimeoutExpired:
                self.board.kill()
                self.board.wait()
        if self.relay is not None:
            self.relay.close()
        self.bed.close()


def clean(directory):
    shutil.rmtree(directory, ignore_errors=True)
