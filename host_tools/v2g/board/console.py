"""The one place where ``v2g`` talks to a board: mpremote's serial transport as a library.

A ``BoardLink`` connects the way ``mpremote connect PORT resume`` does: Ctrl-C, Ctrl-A,
raw REPL, no soft reset (the simulated board has none, and a reset would restart a
running controller for nothing). Code runs with raw-paste when the board offers it.

    with BoardLink("/dev/pts/3") as link:
        link.exec("print(1+1)")            # b"2\\r\\n"
        link.eval("1+1")                   # 2  (repr on the board, literal_eval here)
        link.ls()                          # [("main.py", False, 231), ...]
        link.sha256(["main.py", "x.py"])   # {"main.py": "ab12...", "x.py": None}
        link.write("x.txt", b"data"); link.read("x.txt")

Errors (``v2g.cli`` prints them): a port that does not exist or cannot be opened, or one
where no MicroPython REPL answers (no raw-REPL banner within ``banner_timeout_s``), is the
user's input: ``UsageError`` naming the port and what was expected. A board that stops
answering or disappears mid-operation is a ``ToolError`` (``BoardGone``); code that raised
on the board is a ``BoardError`` carrying the board's traceback.

Paths are relative to the board's working directory (its filesystem root on a USB board,
the flash directory on the simulated board): never absolute, so that the simulated board
can never touch the host's own root.

Context: host only.
"""

import ast
import base64
import os
import stat
import time

import serial
from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

from v2g.common.errors import ToolError, UsageError

RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
CHUNK = 3072  # file bytes per exec when writing (base64 on the wire: 4 KB)


class BoardGone(ToolError):
    """The board stopped answering or the port went away mid-operation."""


class BoardError(ToolError):
    """Code run on the board raised; ``traceback`` holds the board's text."""

    def __init__(self, message, traceback=""):
        super().__init__(message)
        self.traceback = traceback


def check_port(port):
    """Raise ``UsageError`` when ``port`` is not an existing character device."""
    if not port:
        raise UsageError("give the board's serial port with --port (e.g. /dev/ttyACM0, or "
                         "the 'port:' line printed by `v2g sim board`)")
    try:
        st = os.stat(port)
    except OSError:
        raise UsageError("port %s: no such device; give the serial port of a connected "
                         "board (e.g. /dev/ttyACM0, or the 'port:' line printed by "
                         "`v2g sim board`)" % port) from None
    if not stat.S_ISCHR(st.st_mode):
        raise UsageError("port %s: not a serial device (a character device such as "
                         "/dev/ttyACM0 or /dev/pts/N was expected)" % port)


class BoardLink:
    """A raw-REPL session with one board. Use as a context manager."""

    def __init__(self, port, banner_timeout_s=3.0, exec_timeout_s=10.0):
        self.port = port
        self.banner_timeout_s = banner_timeout_s
        self.exec_timeout_s = exec_timeout_s
        self.transport = None

    # ---- session ----

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *exc):
        self.close()

    def connect(self, busy_wait_s=2.0):
        check_port(self.port)
        deadline = time.monotonic() + busy_wait_s
        while True:
            try:
                # read timeout: pyserial's read(1) on a pty blocks this long at most, which
                # bounds every wait below (mpremote's own default, None, never times out)
                t = SerialTransport(self.port, baudrate=115200, timeout=0.2)
                break
            except (TransportError, serial.SerialException, OSError) as e:
                # ports open exclusively: another tool (a dashboard, mpremote) may hold it
                # for a moment; wait a little before calling it busy
                if time.monotonic() >= deadline:
                    raise UsageError("port %s: cannot open it (%s); is another program "
                                     "using it?" % (self.port, e)) from None
                time.sleep(0.1)
        self.transport = t
        try:
            self._enter_raw_repl()
        except BaseException:
            self._close_quietly()
            raise

    def _enter_raw_repl(self):
        """mpremote's ``enter_raw_repl(soft_reset=False)``, with a bounded wait and a
        clear error instead of printing what came back."""
        s = self.transport.serial
        try:
            s.write(b"\r\x03")  # Ctrl-C: interrupt a running program / cancel input
            time.sleep(0.05)
            s.reset_input_buffer()
            s.write(b"\r\x01")  # Ctrl-A: raw REPL
            data = self.transport.read_until(1, RAW_BANNER, timeout=self.banner_timeout_s,
                                             timeout_overall=self.banner_timeout_s)
        except (serial.SerialException, OSError) as e:
            raise BoardGone("port %s: the port failed while connecting: %s"
                            % (self.port, e)) from None
        if not data.endswith(RAW_BANNER):
            seen = data[-60:]
            raise UsageError(
                "port %s: no MicroPython REPL answered: expected %r within %.0f s after "
                "Ctrl-A, got %s; is a MicroPython board (or `v2g sim board`) on this port?"
                % (self.port, RAW_BANNER.decode().strip(), self.banner_timeout_s,
                   repr(seen) if seen else "nothing"))
        self.transport.in_raw_repl = True
        s.timeout = 1.0  # reads inside an exec: slower boards, long outputs

    def close(self):
        """Leave the raw REPL (friendly REPL again, as mpremote does) and close."""
        if self.transport is None:
            return
        try:
            if self.transport.in_raw_repl:
                self.transport.exit_raw_repl()
        except (serial.SerialException, OSError):
            pass
        self._close_quietly()

    def _close_quietly(self):
        try:
            self.transport.serial.close()
        except (serial.SerialException, OSError):
            pass
        self.transport = None

    def _gone(self, what, e):
        return BoardGone("port %s: the board stopped answering during %s (%s)"
                         % (self.port, what, e or "timeout"))

    # ---- code ----

    def exec(self, code, timeout=None, what="a command"):
        """Run ``code`` on the board; returns its stdout (bytes). Raises ``BoardError``
        when it raised there, ``BoardGone`` when the board does not answer within
        ``timeout`` seconds of silence."""
        if self.transport is None:
            raise ToolError("not connected")
        t = self.exec_timeout_s if timeout is None else timeout
        try:
            out, err = self.transport.exec_raw(code, timeout=t)
        except TransportExecError as e:  # not raised by exec_raw, kept for safety
            raise BoardError("the board raised during %s" % what, e.error_output) from None
        except TransportError as e:
            raise self._gone(what, e) from None
        except (serial.SerialException, OSError) as e:
            raise self._gone(what, e) from None
        if err:
            text = err.decode("utf-8", "replace").strip()
            last = text.splitlines()[-1] if text else ""
            raise BoardError("the board raised during %s: %s" % (what, last), text)
        return out

    def eval(self, expr, what="a query"):
        """Evaluate ``expr`` on the board; its ``repr`` read back with ``literal_eval``."""
        out = self.exec("print(repr(%s))" % expr, what=what)
        try:
            return ast.literal_eval(out.decode("utf-8", "replace").strip())
        except (ValueError, SyntaxError):
            raise BoardGone("port %s: unexpected reply during %s: %r"
                            % (self.port, what, out[:200])) from None

    # ---- files ----

    def ls(self, path=""):
        """[(name, is_dir, size)] of a board directory (the working directory by default)."""
        code = ("import os\nprint(repr([(e[0], e[1] == 0x4000, e[3] if len(e) > 3 else 0) "
                "for e in os.ilistdir(%r)]))" % path)
        out = self.exec(code, what="listing %s" % (path or "the board's files"))
        return [tuple(x) for x in ast.literal_eval(out.decode().strip())]

    def sha256(self, names):
        """{name: hex SHA-256 or None when missing}, computed on the board."""
        code = (
            "import hashlib, binascii\n"
            "def _h(p):\n"
            " try:\n"
            "  h = hashlib.sha256()\n"
            "  with open(p, 'rb') as f:\n"
            "   while True:\n"
            "    b = f.read(2048)\n"
            "    if not b:\n"
            "     break\n"
            "    h.update(b)\n"
            "  return binascii.hexlify(h.digest()).decode()\n"
            " except OSError:\n"
            "  return None\n"
            "print(repr([_h(n) for n in %r]))\n" % (list(names),))
        out = self.exec(code, what="hashing files on the board")
        return dict(zip(names, ast.literal_eval(out.decode().strip()), strict=True))

    def read(self, name):
        """The bytes of a board file."""
        code = ("import binascii\nwith open(%r, 'rb') as f:\n while True:\n"
                "  b = f.read(1536)\n  if not b:\n   break\n"
                "  print(binascii.b2a_base64(b).decode().strip())\n" % name)
        out = self.exec(code, what="reading %s" % name)
        return b"".join(base64.b64decode(line) for line in out.split() if line)

    def write(self, name, data, progress=None):
        """Write ``data`` to board file ``name`` (created or truncated), in base64 chunks
        of ``CHUNK`` bytes; ``progress(done_bytes)`` after each chunk."""
        self.exec("_f = open(%r, 'wb')" % name, what="opening %s" % name)
        try:
            for i in range(0, len(data), CHUNK):
                chunk = base64.b64encode(data[i:i + CHUNK]).decode()
                self.exec("import binascii\n_f.write(binascii.a2b_base64(%r))" % chunk,
                          what="writing %s" % name)
                if progress is not None:
                    progress(min(i + CHUNK, len(data)))
        finally:
            if self.transport is not None:
                try:
                    self.exec("_f.close()\ndel _f", what="closing %s" % name)
                except BoardError:
                    pass

    def write_atomic(self, name, data):
        """Write ``name.tmp`` then rename it over ``name`` (remove first where the
        filesystem cannot rename over a file): a board reset leaves old or new, whole."""
        tmp = name + ".tmp"
        self.write(tmp, data)
        self.exec("import os\ntry:\n os.rename(%r, %r)\nexcept OSError:\n os.remove(%r)\n"
                  " os.rename(%r, %r)" % (tmp, name, name, tmp, name),
                  what="renaming %s over %s" % (tmp, name))

    def remove(self, name, missing_ok=True):
        code = "import os\ntry:\n os.remove(%r)\nexcept OSError:\n %s" % (
            name, "pass" if missing_ok else "raise")
        self.exec(code, what="removing %s" % name)

    # ---- board control ----

    def soft_reset(self):
        """Friendly REPL, then Ctrl-D: the board restarts and runs main.py (the simulated
        board's process restarts on the same flash directory). Ends the session."""
        s = self.transport.serial
        try:
            self.transport.exit_raw_repl()
            time.sleep(0.05)
            s.write(b"\x04")
            s.flush()
            time.sleep(0.05)
        except (serial.SerialException, OSError) as e:
            raise self._gone("the reset", e) from None
        self._close_quietly()
