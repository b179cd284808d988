"""``v2g sim board``: the simulated board in real time, its console on a pseudo-terminal.

    v2g sim board [--scenario S.json] [--flash-dir DIR]

Prints ``port: /dev/pts/N`` as its first line; then ``mpremote connect /dev/pts/N resume
...``, pyserial and ``v2g ... --port /dev/pts/N`` talk to it as to a USB board. The second
line is ``link: /dev/pts/M``: the board's link UART to the communication controller
(docs/link.md; ``v2g.link.open_serial`` or ``v2g daemon`` connect there). Stops cleanly on
SIGTERM or Ctrl-C (the board process is killed, the ptys closed, exit 0).

The link pty: this process opens it and keeps both sides open for the board's lifetime
(so restarts of the board process and of the daemon find it in place); the board process
inherits the master side as descriptor ``V2G_LINK_FD`` (non-blocking) and its link
service reads and writes it directly (``boards/sim/hal.py`` ``link_stream``). With a link,
the firmware does not close its contactors until a daemon has opened a session
(``firmware/services/link_service.py``); ``v2g sim demo`` and ``sync-check --sim`` run
their board without one (``SimBoard(link=False)``), as a board without a link UART.

The board is the MicroPython unix runtime running ``boot.py`` (when there is one) and then
``main.py`` (imported: the controller is ``sys.modules['main']._app``) in a flash directory
(``cwd`` and ``MICROPYPATH=.frozen:<flash dir>``), so ``import`` works as on a board and
``v2g flash`` writes into that directory. On first use (no ``main.py`` there) the
directory gets the firmware sources and the sim board's files (``v2g.board.flash.source_files``);
``--flash-dir`` keeps one across runs, the default is a fresh temporary one, removed at
the end.

Board process and restarts. The process's stdin and stdout are pipes that outlive it; two
threads relay bytes between them and the pty's master side. When the process exits with a
reset code (``boards/sim/async_repl.py``) the board starts again on the same flash
directory, so a flashed change runs after the restart:
- 64 soft reset, 67 hard reset (``reset()``), 66 watchdog: ``main.py`` again, with
  ``V2G_RESET_CAUSE`` = soft / power / wdt;
- 65 soft reset from the raw REPL (what plain ``mpremote`` without ``resume`` does): as on
  a board, main.py does not run; the board comes back in its raw REPL with no firmware;
- any other exit (main.py raised or returned): the board sits at its REPL with no
  firmware running (the traceback is on the console and on this command's stderr);
  Ctrl-D there, or ``v2g flash``, starts main.py again.
That firmware-less REPL is the repo's ``async_repl.py`` copied aside at start (the
board's "ROM"), so a broken flash cannot take the REPL away.

Console bytes: raw-REPL traffic passes unchanged; console text (the friendly REPL, the
firmware's prints) gets LF -> CRLF as a board's cooked console does. The REPL marks its
mode switches and executions with ``\\x00`` + one byte (stripped here); a Ctrl-C that
arrives while an execution has run for ``INTERRUPT_AFTER_S`` becomes SIGINT for the board
process (KeyboardInterrupt in that code, as on a board); at any other time Ctrl-C only
cancels REPL input and the firmware keeps running. Output nobody reads (no client on the pty) is
dropped after ``DROP_AFTER_S`` instead of stalling the board, as a USB console does.

``--scenario`` is validated (``v2g.sim.scenario``) and its normalised form handed to the board
in ``V2G_SCENARIO`` (a JSON file path); what the board does with it is up to
``sim_board``.

Context: host only.
"""

import fcntl
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tty
from pathlib import Path

from v2g.board import flash
from v2g.common import paths
from v2g.common.errors import ToolError, UsageError

RESET_SOFT = 64
RESET_SOFT_RAW = 65
RESET_WDT = 66
RESET_HARD = 67
SIM_DIR = paths.BOARDS_DIR / "sim"
INTERRUPT_AFTER_S = 0.3

_PDEATHSIG = None  # cached: the command prefix that ties the board to this process


def _dies_with_parent():
    """``setpriv --pdeathsig KILL --`` (util-linux 2.33 and later) when it works here, else
    ``[]``. The board process runs in a session of its own (a Ctrl-C at the terminal must
    not reach it), so without it a SIGKILL of ``v2g sim board`` (a test pulling the plug)
    left the board running with nobody holding its console; with it the kernel kills the
    board as well, as a real board loses its supply. Checked once per process."""
    global _PDEATHSIG
    if _PDEATHSIG is None:
        exe = shutil.which("setpriv")
        ok = False
        if exe:
            try:
                ok = subprocess.run([exe, "--pdeathsig", "KILL", "--", "true"],
                                    capture_output=True, timeout=10).returncode == 0
            except (OSError, subprocess.SubprocessError):
                ok = False
        _PDEATHSIG = [exe, "--pdeathsig", "KILL", "--"] if ok else []
    return _PDEATHSIG
DROP_AFTER_S = 1.0

# console markers from boards/sim/async_repl.py (\x00 then one of these)
_MARK_EXEC = 0x11
_MARK_RAW = 0x12
_MARK_END = 0x13
_MARK_TEXT = 0x14
_LONE_LF = re.compile(rb"(?<!\r)\n")


def add_arguments(p):
    p.add_argument("--scenario", metavar="S.json",
                   help="scenario for the board (validated; passed as V2G_SCENARIO)")
    p.add_argument("--flash-dir", metavar="DIR",
                   help="the board's flash directory, kept across runs (default: a fresh "
                        "temporary one)")
    p.add_argument("--no-link", action="store_true",
                   help="a board without a link UART: runs on its own, no daemon needed "
                        "(the second line then reads 'link: none')")


def populate(flash_dir, board="sim"):
    """Fill a flash directory on first use (no main.py): firmware and board files, as
    source, each only where the directory does not already have it. Returns the list of
    files copied."""
    flash_dir = Path(flash_dir)
    if (flash_dir / "main.py").exists() or (flash_dir / "main.mpy").exists():
        return []
    copied = []
    for name, src in flash.source_files(board).items():
        dst = flash_dir / name  # a package's files go to its folder (services/...)
        if dst.exists() or (name.endswith(".py") and dst.with_suffix(".mpy").exists()):
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        copied.append(name)
    return copied


# What a board does at every reset, before main.py or the REPL: run boot.py when there is
# one; an exception there is printed and the board goes on (as MicroPython's ports do).
_BOOT = """import os, sys
for _f in ('boot.py', 'boot.mpy'):
    try:
        os.stat(_f)
    except OSError:
        continue
    try:
        import boot
    except Exception as _e:
        sys.print_exception(_e)
    break
"""


def cook_newlines(last, data):
    """LF -> CRLF where the LF has no CR before it (``last``: the previous chunk's last
    byte), as a board's cooked console does."""
    out = _LONE_LF.sub(b"\r\n", data)
    if data[:1] == b"\n" and last == b"\r":
        out = out[1:]  # that LF's CR ended the previous chunk
    return out


class _Stop(Exception):
    pass


class SimBoard:
    """The board process, its pty and the relays. ``start()`` then ``serve()`` (blocks
    until ``stop()``), or use ``start()``/``stop()`` around other work (``serve`` then runs
    in a thread)."""

    def __init__(self, flash_dir, scenario_path=None, log=None, link=True):
        self.flash_dir = Path(flash_dir).resolve()
        self.with_link = link
        self.link_port = None
        self.link_master = self.link_slave = None
        self.scenario_path = scenario_path
        self.log = log or (lambda msg: print("sim board: " + msg, file=sys.stderr, flush=True))
        self.port = None
        self.proc = None
        self.stopping = False
        self.busy = False
        self.exec_seq = 0
        self.sigint_seq = -1
        self.raw_mode = False
        self._write_lock = threading.Lock()
        self._last = {"out": b"\n", "err": b"\n"}
        self._drop_since = None
        self._rom = None
        self._tail = bytearray()  # the console's last bytes: a crash's traceback for the log

    # ---- setup ----

    def start(self):
        self.mp = paths.micropython_exe()
        self._rom = Path(tempfile.mkdtemp(prefix="v2g-sim-rom-"))
        shutil.copyfile(SIM_DIR / "async_repl.py", self._rom / "async_repl.py")
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no line discipline: bytes pass as they are
        fl = fcntl.fcntl(self.master, fcntl.F_GETFL)
        fcntl.fcntl(self.master, fcntl.F_SETFL, fl | os.O_NONBLOCK)
        self.port = os.ttyname(self.slave)
        if self.with_link:
            self.link_master, self.link_slave = os.openpty()
            tty.setraw(self.link_slave)  # no echo: the board must not read its own frames
            fl = fcntl.fcntl(self.link_master, fcntl.F_GETFL)
            fcntl.fcntl(self.link_master, fcntl.F_SETFL, fl | os.O_NONBLOCK)
            self.link_port = os.ttyname(self.link_slave)
        self.in_r, self.in_w = os.pipe()
        self.out_r, self.out_w = os.pipe()
        self.err_r, self.err_w = os.pipe()
        for target, args in ((self._host_to_board, ()),
                             (self._board_to_host, (self.out_r, "out")),
                             (self._board_to_host, (self.err_r, "err"))):
            threading.Thread(target=target, args=args, daemon=True).start()
        return self.port

    def _env(self, cause):
        env = dict(os.environ)
        env["MICROPYPATH"] = ".frozen:" + str(self.flash_dir)
        env["V2G_RESET_CAUSE"] = cause
        env["V2G_SIM_MARKERS"] = "1"
        if self.scenario_path:
            env["V2G_SCENARIO"] = str(self.scenario_path)
        env.pop("V2G_LINK_FD", None)
        if self.link_master is not None:
            env["V2G_LINK_FD"] = str(self.link_master)
        return env

    def _spawn(self, mode, cause):
        if mode == "main":
            then = "import main\n"
        else:
            then = ("sys.path.insert(0, %r)\nimport async_repl\nasync_repl.standalone(%r)\n"
                    % (str(self._rom), mode == "raw"))
        # the kernel kills the board when the thread that started it (serve's) ends
        cmd = _dies_with_parent() + [self.mp, "-c", _BOOT + then]
        self.busy = False
        return subprocess.Popen(cmd, stdin=self.in_r, stdout=self.out_w, stderr=self.err_w,
                                cwd=str(self.flash_dir), env=self._env(cause),
                                start_new_session=True, close_fds=True,
                                pass_fds=(self.link_master,) if self.link_master is not None
                                else ())

    # ---- the restart loop ----

    def serve(self):
        """Run the board, restarting it on reset codes, until ``stop()``."""
        mode, cause = "main", "power"
        rom_failures = 0
        while not self.stopping:
            self.proc = self._spawn(mode, cause)
            rc = self.proc.wait()
            if self.stopping:
                break
            if rc == RESET_SOFT:
                mode, cause = "main", "soft"
            elif rc == RESET_HARD:
                mode, cause = "main", "power"
            elif rc == RESET_WDT:
                mode, cause = "main", "wdt"
            elif rc == RESET_SOFT_RAW:
                mode, cause = "raw", "soft"
            elif mode == "main":
                tail = bytes(self._tail)
                k = tail.rfind(b"Traceback (most recent call last)")
                why = tail[k:].decode("utf-8", "replace").strip() if k >= 0 else ""
                self.log("main.py ended (exit %d); the board is at its REPL with no firmware "
                         "running (Ctrl-D or `v2g flash` starts main.py again)%s"
                         % (rc, ":\n" + why if why else ""))
                mode = "rom"
                continue
            else:
                rom_failures += 1
                if rom_failures > 3:
                    raise ToolError("the board's REPL itself keeps failing (exit %d)" % rc)
                continue
            rom_failures = 0
            self.log("restart (%s reset%s)" % (cause if rc != RESET_HARD else "hard",
                                               ", raw REPL, no main.py" if mode == "raw"
                                               else ""))

    def stop(self):
        """Kill the board process and close the pty (idempotent)."""
        self.stopping = True
        p = self.proc
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(2)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for fd in ("in_w", "in_r", "out_w", "err_w", "master", "slave", "link_master",
                   "link_slave"):
            v = getattr(self, fd, None)
            if v is not None:
                try:
                    os.close(v)
                except OSError:
                    pass
                setattr(self, fd, None)
        if self._rom is not None:
            shutil.rmtree(self._rom, ignore_errors=True)
            self._rom = None

    # ---- relays ----

    def _host_to_board(self):
        while not self.stopping:
            try:
                r, _, _ = select.select([self.master], [], [], 0.2)
                if not r:
                    continue
                data = os.read(self.master, 4096)
            except (OSError, ValueError, TypeError):
                if self.stopping:
                    return
                time.sleep(0.05)  # EIO while no client holds the pty open
                continue
            if not data:
                continue
            if b"\x03" in data and self.busy:
                seq = self.exec_seq
                threading.Timer(INTERRUPT_AFTER_S, self._interrupt, (seq,)).start()
            try:
                os.write(self.in_w, data)
            except (OSError, TypeError):
                return

    def _interrupt(self, seq):
        """Ctrl-C during a long execution: KeyboardInterrupt in it (once per execution)."""
        p = self.proc
        if (self.busy and self.exec_seq == seq and self.sigint_seq != seq and p is not None
                and p.poll() is None):
            self.sigint_seq = seq
            os.kill(p.pid, signal.SIGINT)

    def _board_to_host(self, fd, stream):
        try:
            self._relay_out(fd, stream)
        finally:
            os.close(fd)  # EOF: stop() closed the write end and no board process holds it

    def _relay_out(self, fd, stream):
        pending = b""
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError:
                return
            if not data:
                return
            if stream == "err":  # the runtime's own errors; tracebacks come on stdout
                sys.stderr.buffer.write(data)
                sys.stderr.flush()
                self._emit(data, "err", cook=True)
                continue
            data = pending + data
            pending = b""
            # markers from the REPL: \x00 then 0x11 / 0x12 (execution begins) / 0x13 (ends)
            start = 0
            i = data.find(b"\x00")
            while i >= 0:
                if i + 1 >= len(data):
                    pending = b"\x00"
                    break
                m = data[i + 1]
                if m in (_MARK_EXEC, _MARK_RAW, _MARK_END, _MARK_TEXT):
                    self._emit(data[start:i], "out", cook=not self.raw_mode)
                    if m == _MARK_EXEC:
                        self.exec_seq += 1
                        self.busy = True
                    elif m == _MARK_END:
                        self.busy = False
                    else:
                        self.raw_mode = m == _MARK_RAW
                    start = i + 2
                    i = data.find(b"\x00", i + 2)
                else:
                    i = data.find(b"\x00", i + 1)
            end = len(data) - len(pending)
            self._emit(data[start:end], "out", cook=not self.raw_mode)

    def _emit(self, data, stream, cook):
        if not data:
            return
        if cook:
            data = cook_newlines(self._last[stream], data)
        self._last[stream] = data[-1:]
        tail = self._tail
        tail += data
        if len(tail) > 4096:
            del tail[:-2048]
        with self._write_lock:
            self._write_master(data)

    def _write_master(self, data):
        """Write to the pty; when nobody reads it for DROP_AFTER_S, drop (no stall)."""
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.master, view)
                view = view[n:]
                self._drop_since = None
                continue
            except BlockingIOError:
                pass
            except (OSError, TypeError):
                return
            now = time.monotonic()
            if self._drop_since is None:
                self._drop_since = now
            if now - self._drop_since >= DROP_AFTER_S:
                return  # nobody is reading: drop, as a USB console with no host does
            try:
                select.select([], [self.master], [], 0.05)
            except (OSError, ValueError, TypeError):
                return


def _validate_scenario(path, work_dir):
    from v2g.sim import scenario

    sc = scenario.load(path)
    out = Path(work_dir) / "scenario.json"
    out.write_text(json.dumps(sc))
    return out


def run(args):
    own_dir = None
    if args.flash_dir:
        flash_dir = Path(args.flash_dir)
        if flash_dir.exists() and not flash_dir.is_dir():
            raise UsageError("--flash-dir %s: not a directory" % flash_dir)
        flash_dir.mkdir(parents=True, exist_ok=True)
    else:
        own_dir = Path(tempfile.mkdtemp(prefix="v2g-sim-flash-"))
        flash_dir = own_dir
    work = Path(tempfile.mkdtemp(prefix="v2g-sim-board-"))
    board = None
    previous = {}
    try:
        scenario_path = _validate_scenario(args.scenario, work) if args.scenario else None
        populate(flash_dir)
        board = SimBoard(flash_dir, scenario_path, link=not args.no_link)
        port = board.start()

        def on_signal(signum, frame):
            raise _Stop()

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            previous[sig] = signal.signal(sig, on_signal)
        print("port: %s" % port, flush=True)
        print("link: %s" % (board.link_port or "none"), flush=True)
        print("flash: %s" % flash_dir.resolve(), flush=True)
        try:
            board.serve()
        except (_Stop, KeyboardInterrupt):
            pass
    finally:
        if board is not None:
            board.stop()
        for sig, h in previous.items():
            signal.signal(sig, h)
        shutil.rmtree(work, ignore_errors=True)
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
    return 0


def demo(scenario_path, seconds=0.0, dashboard=None):
    """``v2g sim demo``'s second half: the virtual board in real time playing the session
    (its config written to the board's flash, its events played from boot), a dashboard
    read from the board over its serial port, until Ctrl-C or ``seconds``."""
    from v2g.sim import scenario
    from v2g.board.status import read_status

    sc = scenario.load(scenario_path)
    flash_dir = Path(tempfile.mkdtemp(prefix="v2g-sim-flash-"))
    work = Path(tempfile.mkdtemp(prefix="v2g-sim-board-"))
    board = None
    try:
        populate(flash_dir)
        (flash_dir / "config.json").write_text(json.dumps(sc["config"], sort_keys=True))
        sc_file = work / "scenario.json"
        sc_file.write_text(json.dumps(sc))
        board = SimBoard(flash_dir, sc_file, log=lambda msg: None, link=False)
        port = board.start()
        threading.Thread(target=board.serve, daemon=True).start()
        print()
        print("virtual board running in real time on %s, playing %s" % (port, sc["name"]))
        print("  connect:  .venv/bin/mpremote connect %s resume repl" % port)
        print("            .venv/bin/v2g status --port %s" % port)
        print("  (the dashboard pauses while another program holds the port; Ctrl-C stops)")
        print()
        t_end = time.monotonic() + seconds if seconds > 0 else None
        while t_end is None or time.monotonic() < t_end:
            try:
                st = read_status(port)
            except (ToolError, UsageError, ValueError):
                time.sleep(0.5)
                continue
            if st.get("running") and dashboard is not None:
                dashboard.show({
                    "t_s": st["uptime_s"], "state": st["state"],
                    "locked": st["pll"]["locked"], "f_hz": st["pll"]["f_hz"],
                    "v_pos_pu": st["pll"]["v_pos_pu"], "p_w": st["meas"]["p_w"],
                    "q_var": st["meas"]["q_var"],
                    "contactor_status": st["contactor"]["status"]})
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        if board is not None:
            board.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(flash_dir, ignore_errors=True)
    print("virtual board stopped")
    return 0
