"""``v2g update``: send a signed bundle to a board and start it.

    v2g update BUNDLE --port PORT      # a development board, over its REPL
    v2g update BUNDLE --link PORT      # over the framed link (v2g.update.linkpath)

Over ``--port``: the bundle is parsed here (exit 2 when it does not), the board's name is
compared with the bundle's (exit 2, nothing written), then the board's update agent
(``firmware/services/update.py``) checks the metadata (digest, signature with the board's
key, counter, arch) and prepares the inactive slot, keeping every file it already has
(same SHA-256, in that slot or in the running tree); only the others are sent, with
progress (bytes, rate, time left). The agent verifies the slot again and switches its
pointer; the board restarts and runs the bundle in trial. Exit 0 when the board runs the
bundle (trial or confirmed, or it already ran it), 1 when the board refused it (the
reason is printed), 2 on bad input.

``--link``: the same over the board's framed link (SERVICE group 1), the way to update a
board in production mode (no REPL): ``v2g.update.linkpath``.

Context: host only.
"""

import ast
import sys
import time
from pathlib import Path

from v2g.board.console import BoardError, BoardLink
from v2g.common.errors import ToolError, UsageError
from v2g.update import bundle

BOOT_WAIT_S = 20


def add_arguments(p):
    p.add_argument("bundle", metavar="BUNDLE", help="a bundle from `v2g sign`")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--port", help="serial port of a development board (REPL)")
    g.add_argument("--link", metavar="PORT",
                   help="the board's link port (the framed link; a board in production "
                        "mode), or a running daemon's service socket")


class Progress:
    """``update: [#####.....] 12.0/40.0 kB 9.8 kB/s 3 s left`` on stderr."""

    def __init__(self, total, stream=None):
        self.total = max(1, total)
        self.base = 0
        self.t0 = time.monotonic()
        self.shown = 0.0
        self.stream = stream or sys.stderr

    def show(self, done_in_file=0, force=False):
        now = time.monotonic()
        if not force and now - self.shown < 0.1:
            return
        self.shown = now
        done = self.base + done_in_file
        rate = done / max(1e-3, now - self.t0)
        left = (self.total - done) / rate if rate > 0 else 0
        fill = 30 * done // self.total
        self.stream.write("\rupdate: [%s%s] %.1f/%.1f kB %.1f kB/s %.1f s left  " % (
            "#" * fill, "." * (30 - fill), done / 1024, self.total / 1024, rate / 1024, left))
        self.stream.flush()

    def file_done(self, size):
        self.base += size
        self.show(force=True)

    def end(self):
        self.stream.write("\n")
        self.stream.flush()


_AGENT = "import services.update as _U\n"


def _call(link, expr, what, timeout=60):
    out = link.exec(_AGENT + "print(repr(%s))" % expr, timeout=timeout, what=what)
    try:
        return ast.literal_eval(out.decode("utf-8", "replace").strip().splitlines()[-1])
    except (ValueError, SyntaxError, IndexError):
        raise ToolError("unexpected reply during %s: %r" % (what, out[-200:])) from None


def _status(link):
    try:
        return _call(link, "_U.status()", "reading the board's update status")
    except BoardError as e:
        if "ImportError" in str(e) or "No module" in e.traceback:
            raise ToolError("the board has no update agent (services/update); flash the "
                            "firmware with `v2g flash` first") from None
        raise


def wait_running(port, slot, timeout_s=BOOT_WAIT_S):
    """After the reset: the board's status once it runs again (None at the timeout)."""
    end = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < end:
        try:
            with BoardLink(port, banner_timeout_s=2) as link:
                st = _call(link, "_U.status()", "reading the status after the restart")
                up = link.eval("'_app' in globals() or hasattr(__import__('sys').modules."
                               "get('main'), '_app')")
                if up:
                    return st
                last = st
        except (ToolError, UsageError):
            pass
        time.sleep(0.3)
    return last


def run(args):
    t0 = time.monotonic()
    p = Path(args.bundle)
    try:
        blob = p.read_bytes()
    except OSError as e:
        raise UsageError("bundle %s: cannot read it (%s)" % (p, e)) from None
    b = bundle.parse(blob, str(p))
    m = b.manifest
    if args.link:
        from v2g.update import linkpath

        return linkpath.run(args.link, p, b, t0, Progress)
    with BoardLink(args.port) as link:
        st = _status(link)
        if st.get("board") and st["board"] != m["board"]:
            raise UsageError("bundle %s is for board '%s'; the board on %s is '%s'; nothing "
                             "changed" % (p, m["board"], args.port, st["board"]))
        link.write("upd.meta", b.meta)
        r = _call(link, "_U.begin()", "checking the bundle on the board")
        if not r["ok"]:
            print("update: refused by the board: %s" % r["reason"])
            return 1
        if r.get("same"):
            print("update: the board already runs %s (version %s): %d files unchanged "
                  "(%.2f s)" % (p.name, m["version"], len(b.files), time.monotonic() - t0))
            return 0
        need = r["need"]
        total = sum(s for _, s in need)
        print("update: slot %s: %d of %d files to send (%.1f kB), %d unchanged"
              % (r["slot"], len(need), len(b.files), total / 1024, r["kept"]))
        if need:
            bar = Progress(total)
            bar.show(force=True)
            for name, size in need:
                link.write(r["dir"] + name, b.files[name], progress=bar.show)
                bar.file_done(size)
            bar.end()
        c = _call(link, "_U.commit()", "verifying the slot on the board")
        if not c["ok"]:
            print("update: refused by the board: %s" % c["reason"])
            return 1
        link.soft_reset()
    st = wait_running(args.port, r["slot"])
    dt = time.monotonic() - t0
    if st is None:
        raise ToolError("the board did not come back within %d s after the restart"
                        % BOOT_WAIT_S)
    booted = st.get("booted") or {}
    if booted.get("slot") != r["slot"]:
        why = "; ".join(booted.get("notes") or []) or "no reason recorded"
        print("update: the board did not start the bundle and runs the previous firmware: "
              "%s" % why)
        return 1
    print("update: the board runs version %s in %s (slot %s) (%.1f s)" % (
        m["version"], "trial" if booted.get("state") == "trial" else "confirmed",
        r["slot"], dt))
    return 0
