"""The simulated board's REPL: an asyncio task on stdin/stdout beside the firmware.

The MicroPython unix runtime's own REPL cannot run beside ``main.py`` and does not speak
mpremote's raw-REPL protocol, so the simulated board brings this one (written for this
project; micropython-lib's ``aiorepl`` is not published where these machines can reach it).
It speaks what a USB board speaks on its serial console:

- friendly REPL: prompt ``>>> `` (``... `` while a block is open, ended by an empty line),
  echo, backspace, results of expressions printed, tracebacks printed;
  Ctrl-C cancels the input line (the firmware keeps running); Ctrl-D on an empty line is
  a soft reset; Ctrl-B prints the banner; Ctrl-E is paste mode (Ctrl-D runs, Ctrl-C
  cancels); arrow-key escape sequences are swallowed (no history);
- raw REPL (mpremote): Ctrl-A -> ``raw REPL; CTRL-B to exit\\r\\n>``; code bytes until
  Ctrl-D -> ``OK``, the code's output, ``\\x04``, the traceback if any, ``\\x04``, ``>``;
  raw-paste mode (``\\x05A\\x01`` -> ``R\\x01`` + window, ``\\x01`` per window consumed,
  ``\\x04`` ends the data and is acknowledged with ``\\x04``); Ctrl-B back to friendly;
  Ctrl-D on an empty buffer -> ``OK\\r\\n`` and a soft reset (board stays in raw REPL).

Production lockdown (``locked=True``, from ``services/lockdown.py`` via ``sim_board``):
every console byte is read and dropped; no prompt, no raw REPL, Ctrl-A/B/C/D/E do nothing;
the firmware runs on.

Resets end the process with an exit code that ``v2g sim board`` acts on (the flash
directory is kept, so a flashed change runs after the restart):
``RESET_SOFT`` 64 (main.py runs again), ``RESET_SOFT_RAW`` 65 (soft reset from the raw
REPL: like a real board, main.py does not run; the board comes back in the raw REPL),
``RESET_HARD`` 67 (``reset()``), and ``RESET_WDT`` 66 (used by ``sim_board``).
``SystemExit`` raised by executed code (``sys.exit()``, ``machine.soft_reset()``) is a
soft reset, as on a board.

Executed code blocks the asyncio loop while it runs (tick pump and supervisor included),
exactly as a REPL command blocks ``aiorepl`` on a board. Under ``v2g sim board`` the REPL
writes marker byte pairs (``_MARK_*``; the host strips them): around each execution, so
that the host can turn a Ctrl-C that arrives during a long one into SIGINT
(KeyboardInterrupt in that code), and at each switch between the raw REPL (bytes pass
unchanged) and the friendly REPL (console text: LF -> CRLF, as a board's cooked console).

Run alone (no firmware), as the board's "ROM" REPL after main.py ended::

    micropython async_repl.py [raw]

Context: simulated board only (MicroPython unix runtime), asyncio task.
"""

import asyncio
import os
import select
import sys

RESET_SOFT = 64
RESET_SOFT_RAW = 65
RESET_WDT = 66
RESET_HARD = 67

_CTRL_A = 1
_CTRL_B = 2
_CTRL_C = 3
_CTRL_D = 4
_CTRL_E = 5
_BS = 8
_LF = 10
_CR = 13
_ESC = 27
_DEL = 127

_RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"
_PASTE_WINDOW = 1024  # raw-paste window, bytes: b"\x00\x04" on the wire (no LF, no marker)
_FILL_MAX = 4096  # bytes taken from stdin per wake-up

# console markers for the host wrapper (``V2G_SIM_MARKERS=1``), stripped there
_MARK_EXEC = b"\x00\x11"  # executed code starts (a Ctrl-C now means KeyboardInterrupt)
_MARK_END = b"\x00\x13"  # executed code ended
_MARK_RAW = b"\x00\x12"  # raw REPL from here: bytes pass unchanged
_MARK_TEXT = b"\x00\x14"  # friendly REPL from here: console text (LF -> CRLF)


def _open_brackets(text):
    """Depth of open brackets and whether a triple-quoted string is open, ignoring
    strings and comments (enough to decide that a friendly-REPL line continues)."""
    depth = 0
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == "#":
            while i < n and text[i] != "\n":
                i += 1
            continue
        if c in "'\"":
            q3 = text[i:i + 3]
            if q3 == c * 3:
                end = text.find(q3, i + 3)
                if end < 0:
                    return depth, True
                i = end + 3
                continue
            i += 1
            while i < n and text[i] != c and text[i] != "\n":
                if text[i] == "\\":
                    i += 1
                i += 1
            i += 1
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        i += 1
    return depth, False


def needs_more(text):
    """True when the friendly REPL should prompt ``... `` for another line."""
    last = text.rstrip().split("\n")[-1] if text.strip() else ""
    depth, in_triple = _open_brackets(text)
    return (in_triple or depth > 0 or last.endswith(":") or last.endswith("\\")
            or last.lstrip().startswith("@"))


class Repl:
    """One REPL on this process's stdin/stdout.

    ``namespace``: the globals executed code runs in. ``raw``: start in the raw REPL
    (after a soft reset from it). ``banner``: text shown by Ctrl-B and at start when
    ``greet`` is true."""

    def __init__(self, namespace, raw=False, banner=None, greet=False, locked=False):
        self.ns = namespace
        self.locked = locked
        self.start_raw = raw
        self.greet = greet
        self.banner = banner or ("MicroPython %s on sim board; %s\r\n"
                                 'Type "help()" for more information.\r\n'
                                 % (".".join(str(v) for v in sys.implementation.version[:3]),
                                    sys.platform))
        self._in = sys.stdin.buffer
        self._out = sys.stdout.buffer
        self._reader = asyncio.StreamReader(self._in)
        self._poll = select.poll()
        self._poll.register(self._in, select.POLLIN)
        self._one = bytearray(1)
        self._buf = b""
        self._pos = 0
        self._marks = os.getenv("V2G_SIM_MARKERS") == "1"

    # ---- bytes in and out ----

    def write(self, b):
        self._out.write(b)

    async def _fill(self):
        """Wait on the asyncio IO queue for stdin, then take what is ready without
        blocking (stdin reads block until their buffer is full, so one byte at a time)."""
        data = await self._reader.read(1)
        if not data:
            raise EOFError
        buf = bytearray(data)
        one = self._one
        # stop after Ctrl-D: it may reset the board, and bytes the host sends after it
        # must stay in the pipe for the next board process
        while buf[-1] != _CTRL_D and len(buf) < _FILL_MAX and self._poll.poll(0):
            if self._in.readinto(one) != 1:
                break
            buf.append(one[0])
        self._buf = buf
        self._pos = 0

    def _next(self):
        """Next buffered byte, or -1 when the buffer is empty (never waits)."""
        p = self._pos
        if p < len(self._buf):
            self._pos = p + 1
            return self._buf[p]
        return -1

    async def getc(self):
        c = self._next()
        while c < 0:
            await self._fill()
            c = self._next()
        return c

    # ---- execution ----

    def _mark(self, m):
        if self._marks:
            self.write(m)

    def _exec(self, src, mode):
        """Compile and run ``src``; returns the exception it raised (None if none).
        SystemExit is handed back for the caller to reset."""
        self._mark(_MARK_EXEC)
        try:
            code = compile(src, "<stdin>", mode)
            exec(code, self.ns)
            return None
        except BaseException as e:  # noqa: BLE001 - a REPL reports everything
            return e
        finally:
            self._mark(_MARK_END)

    def reset(self, code):
        """Leave the process with a reset code for the host wrapper."""
        hal = sys.modules.get("hal")  # none in the firmware-less REPL: nothing to make safe
        if hal is not None:
            hal.safe_outputs()
        raise SystemExit(code)

    # ---- friendly REPL ----

    async def run(self):
        """The REPL loop; returns only through a reset (SystemExit) or stdin EOF."""
        try:
            while self.locked:  # production lockdown: every byte read and dropped
                await self._fill()
            if self.start_raw:
                await self.raw()
            self._mark(_MARK_TEXT)
            if self.greet and not self.start_raw:
                self.write(self.banner.encode())
            while True:
                await self.friendly()
        except EOFError:
            # the host side is gone: stop the board (outputs safe, exit 0)
            self.reset(0)

    async def friendly(self):
        """Read and run one friendly-REPL entry (one line or one block)."""
        self.write(b">>> ")
        lines = []
        line = bytearray()
        prev = -1
        while True:
            c = self._next()
            if c < 0:
                c = await self.getc()
            p, prev = prev, c
            if c == _CR or (c == _LF and p != _CR):
                self.write(b"\r\n")
                text = line.decode()
                line = bytearray()
                if lines:
                    if text.strip():
                        lines.append(text)
                        self.write(b"... ")
                        continue
                    src = "\n".join(lines) + "\n"
                    self._run_friendly(src)
                    return
                if not text.strip():
                    return
                if needs_more(text):
                    lines.append(text)
                    self.write(b"... ")
                    continue
                self._run_friendly(text)
                return
            elif c == _LF:
                continue
            elif c == _CTRL_A:
                self.write(b"\r\n")
                await self.raw()
                return
            elif c == _CTRL_B:
                self.write(b"\r\n" + self.banner.encode())
                return
            elif c == _CTRL_C:
                self.write(b"\r\n")
                return
            elif c == _CTRL_D:
                if not line and not lines:
                    self.write(b"\r\nMPY: soft reboot\r\n")
                    self.reset(RESET_SOFT)
            elif c == _CTRL_E:
                await self.paste()
                return
            elif c == _BS or c == _DEL:
                if line:
                    line = line[:-1]
                    self.write(b"\x08 \x08")
            elif c == _ESC:
                # swallow ESC [ ... final-byte (arrow keys etc.): no history, no cursor
                c = await self.getc()
                if c == ord("["):
                    while True:
                        c = await self.getc()
                        if 0x40 <= c <= 0x7E:
                            break
            elif c >= 32 or c == 9:
                line.append(c)
                self._out.write(bytes((c,)))

    def _run_friendly(self, src):
        e = self._exec(src, "single")
        if e is None:
            return
        if isinstance(e, SystemExit):
            self.write(b"MPY: soft reboot\r\n")
            self.reset(RESET_SOFT)
        sys.print_exception(e, sys.stdout)

    async def paste(self):
        self.write(b"\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== ")
        buf = bytearray()
        while True:
            c = await self.getc()
            if c == _CTRL_C:
                self.write(b"\r\n")
                return
            if c == _CTRL_D:
                self.write(b"\r\n")
                break
            buf.append(c)
            if c == _CR:
                self.write(b"\r\n=== ")
            elif c != _LF:
                self.write(bytes((c,)))
        self._run_friendly(bytes(buf).replace(b"\r\n", b"\n").replace(b"\r", b"\n").decode())

    # ---- raw REPL ----

    async def raw(self):
        """The raw REPL until Ctrl-B (returns) or a soft reset (exits)."""
        self._mark(_MARK_RAW)
        self.write(_RAW_BANNER)
        while True:
            self.write(b">")
            line = bytearray()
            while True:
                c = self._next()
                if c < 0:
                    c = await self.getc()
                if c == _CTRL_A:
                    if len(line) == 2 and line[0] == _CTRL_E and line[1] == ord("A"):
                        await self.raw_paste()
                        break  # prompt again
                    self.write(b"\r\n" + _RAW_BANNER)  # Ctrl-A again: banner, new buffer
                    line = bytearray()
                    self.write(b">")
                elif c == _CTRL_B:
                    self.write(b"\r\n")
                    self._mark(_MARK_TEXT)
                    return
                elif c == _CTRL_C:
                    line = bytearray()
                elif c == _CTRL_D:
                    self.write(b"OK")
                    if not line:
                        self.write(b"\r\nMPY: soft reboot\r\n")
                        self.reset(RESET_SOFT_RAW)
                    self._run_raw(bytes(line))
                    break
                else:
                    line.append(c)

    def _run_raw(self, src):
        """Run raw-REPL code: output, \\x04, traceback, \\x04 (as pyexec does)."""
        e = self._exec(src, "exec")
        if isinstance(e, SystemExit):
            self.write(b"\x04\x04MPY: soft reboot\r\n")
            self.reset(RESET_SOFT_RAW)
        self.write(b"\x04")
        if e is not None:
            sys.print_exception(e, sys.stdout)
        self.write(b"\x04")

    async def raw_paste(self):
        """Raw-paste mode: flow-controlled code upload, then run it."""
        window = _PASTE_WINDOW
        self.write(b"R\x01" + bytes((window & 0xFF, window >> 8)))
        data = bytearray()
        left = window
        interrupted = False
        while True:
            c = self._next()
            if c < 0:
                c = await self.getc()
            if c == _CTRL_D or c == _CTRL_C:
                interrupted = c == _CTRL_C
                self.write(b"\x04")  # end of data acknowledged
                break
            data.append(c)
            left -= 1
            if left == 0:
                self.write(b"\x01")  # room for another window
                left = window
        if interrupted:
            self.write(b"\x04KeyboardInterrupt:\r\n\x04")
            return
        self._run_raw(bytes(data))


def standalone(raw=False):
    """The board's REPL with no firmware (after main.py ended, or a soft reset from the
    raw REPL). Exits only through a reset code."""
    repl = Repl({"__name__": "__main__"}, raw=raw, greet=not raw)
    asyncio.run(repl.run())


if __name__ == "__main__":
    standalone(raw="raw" in sys.argv[1:])
