"""``v2g logs``: pull the board's persistent event log and print it as protocol-log lines.

    v2g logs --port P [--since SEQ|ISO-TIME] [--follow [--interval S]] [--json]
                      [--out protocol_engine.log] [--log-dir log]

One snippet (``SNIPPET``) runs on the board: it flushes the firmware's live log when one
is open (``eventlog.opened``: pending records reach flash first), then sends every good
record with ``seq > SINCE`` as its framed bytes (``R <base64>`` lines) and a trailer
(``T {json}``: whether the module and the directory exist, the newest seq, the live log's
error and drop counters). The host checks each frame's CRC again and decodes it with the
firmware's own ``eventlog`` (imported under CPython), so the wire cannot garble a record
unnoticed.

Output, oldest first, one record per line (``eventlog.line`` / ``events.log_line``):

    2026-11-25T10:01:02Z ERROR 0x07 Grid Integrity Failure v_a=1.12pu
    +12.345s INFO state WAIT_GRID          (no UTC known on the board: its uptime)

``--json``: one object per line: ``seq``, ``t_ms`` (board uptime clock, ms), ``utc_s``
(Unix seconds or null), ``time`` (ISO or null), ``severity``, ``kind``, ``code``,
``name``, ``detail``, ``line``.

- ``--since SEQ``: records after that seq; ``--since 2026-11-25T10:01:02Z`` (ISO 8601,
  UTC unless it carries an offset; a date alone is its midnight): from the first record
  stamped at or after that time on (records after it without UTC are kept: they are
  newer by seq).
- ``--follow``: after the first pull, polls every ``--interval`` seconds (default 1) for
  newer records until Ctrl-C (exit 0). The port is released between polls, so other
  tools can use it; a board that resets is waited for; a log that starts again from
  seq 1 (wiped, another board) is noted on stderr and read from its start.
- ``--out FILE``: appends the lines of records not yet in FILE (the protocol log the
  manual names ``protocol_engine.log``). The newest seq written is kept beside it in
  ``FILE.seq`` (JSON); a FILE that is missing or empty, or has no readable ``FILE.seq``
  (said on stderr), gets every record the board has. A board whose log ends before
  ``FILE.seq`` (wiped, another board) is taken from its start. Records still go to
  stdout too; a summary goes to stderr.

Errors: a bad ``--since`` is a usage error (exit 2); a firmware without ``eventlog`` is a
tool error (exit 1) saying to flash it; a board without a log directory prints nothing
and says so on stderr (exit 0).

Context: host only (the snippet runs on the board, in its REPL).
"""

import base64
import datetime
import json
import os
import sys
import time
from pathlib import Path

from v2g.common import runtime
from v2g.board.console import BoardGone, BoardLink, check_port
from v2g.common.errors import ToolError, UsageError

DEFAULT_DIR = "log"

SNIPPET = r"""
def _v2g_logs(root, since):
    import json, binascii
    t = {'module': True, 'exists': True, 'live': False}
    try:
        import eventlog
    except ImportError:
        t['module'] = False
        print('T ' + json.dumps(t))
        return
    lg = eventlog.opened(root)
    if lg is not None:
        lg.flush()
        t['live'] = True
        t['errors'] = lg.errors
        t['dropped'] = lg.dropped
    import os
    try:
        os.stat(root)
    except OSError:
        t['exists'] = False
        print('T ' + json.dumps(t))
        return
    n = 0
    last = since
    for seq, fr in eventlog.frames(root, since):
        print('R ' + binascii.b2a_base64(fr).decode().strip())
        n += 1
        last = seq
    t['count'] = n
    t['newest'] = last if n else eventlog.newest_seq(root)
    print('T ' + json.dumps(t))
_v2g_logs(%r, %d)
del _v2g_logs
"""


def add_arguments(p):
    p.add_argument("--port", required=True, help="serial port of the board")
    p.add_argument("--since", metavar="SEQ|ISO-TIME",
                   help="records after this seq, or from this UTC time "
                        "(e.g. 2026-11-25T10:01:02Z) on")
    p.add_argument("--follow", action="store_true",
                   help="keep polling for new records until Ctrl-C")
    p.add_argument("--interval", type=float, default=1.0, metavar="S",
                   help="seconds between polls with --follow (default 1)")
    p.add_argument("--out", metavar="FILE",
                   help="append records not yet in FILE (e.g. protocol_engine.log); "
                        "the newest seq written is kept in FILE.seq")
    p.add_argument("--json", action="store_true", help="one JSON object per record")
    p.add_argument("--log-dir", default=DEFAULT_DIR, metavar="DIR",
                   help="the log's directory on the board (default: %(default)s)")


def eventlog_module():
    """The firmware's ``eventlog``, imported under CPython."""
    runtime.import_firmware_cpython()
    import eventlog

    return eventlog


def parse_since(text):
    """``--since`` -> ``("seq", n)`` or ``("utc", unix seconds)``; ``UsageError`` else."""
    if text is None:
        return ("seq", 0)
    t = text.strip()
    if t.isdigit():
        return ("seq", int(t))
    iso = t[:-1] + "+00:00" if t.endswith(("Z", "z")) else t
    try:
        dt = datetime.datetime.fromisoformat(iso)
    except ValueError:
        raise UsageError("--since %r: give a record seq (e.g. 120) or an ISO 8601 time "
                         "(e.g. 2026-11-25T10:01:02Z or 2026-11-25)" % text) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.UTC)
    return ("utc", int(dt.timestamp()))


def check_log_dir(root):
    """The board path of the log, normalised; ``UsageError`` when not a relative one."""
    r = (root or "").strip().rstrip("/")
    if not r or r.startswith("/") or ".." in r.split("/") or "\n" in r:
        raise UsageError("--log-dir %r: give a directory relative to the board's working "
                         "directory, e.g. log" % root)
    return r


def pull(link, root, since_seq, eventlog):
    """``(records, trailer)`` of the board's log after ``since_seq``."""
    out = link.exec(SNIPPET % (root, since_seq), what="reading the event log")
    recs, trailer = [], None
    for raw in out.decode("utf-8", "replace").splitlines():
        ln = raw.strip()
        if ln.startswith("R "):
            try:
                recs.append(eventlog.decode(base64.b64decode(ln[2:])))
            except (ValueError, TypeError) as e:
                raise BoardGone("port %s: a log record came back garbled (%s): %r"
                                % (link.port, e, ln[:80])) from None
        elif ln.startswith("T "):
            trailer = json.loads(ln[2:])
    if trailer is None:
        raise BoardGone("port %s: the event-log reader gave no answer: %r"
                        % (link.port, out[-200:]))
    if not trailer["module"]:
        raise ToolError("the board's firmware has no event log (eventlog.py/.mpy missing): "
                        "flash a current firmware with `v2g flash --board B --port %s`"
                        % link.port)
    return recs, trailer


def as_json(rec, eventlog):
    utc = rec[eventlog.UTC_S]
    return {"seq": rec[eventlog.SEQ], "t_ms": rec[eventlog.T_MS],
            "utc_s": utc, "time": eventlog.iso_utc(utc) if utc else None,
            "severity": rec[eventlog.SEVERITY], "kind": rec[eventlog.KIND],
            "code": rec[eventlog.CODE], "name": rec[eventlog.NAME],
            "detail": rec[eventlog.DETAIL], "line": eventlog.line(rec)}


class OutFile:
    """``--out``: the protocol log on the host and its ``.seq`` companion."""

    def __init__(self, path):
        self.path = Path(path)
        self.state = Path(str(path) + ".seq")
        if self.path.is_dir():
            raise UsageError("--out %s: is a directory; give a file name such as "
                             "protocol_engine.log" % path)
        parent = self.path.parent
        if not parent.is_dir():
            raise UsageError("--out %s: folder %s does not exist" % (path, parent))
        self.last_seq = 0
        if self.path.exists() and self.path.stat().st_size > 0:
            try:
                self.last_seq = int(json.loads(self.state.read_text())["last_seq"])
            except (OSError, ValueError, KeyError, TypeError):
                print("v2g logs: %s has no readable %s: appending every record the board "
                      "has" % (self.path, self.state.name), file=sys.stderr)
        self.written = 0

    def restart(self):
        """The board's log started again: the next records are all new."""
        self.last_seq = 0

    def add(self, recs, eventlog):
        new = [r for r in recs if r[eventlog.SEQ] > self.last_seq]
        if not new:
            return 0
        with open(self.path, "a", encoding="utf-8") as f:
            for r in new:
                f.write(eventlog.line(r) + "\n")
        self.last_seq = new[-1][eventlog.SEQ]
        tmp = Path(str(self.state) + ".tmp")
        tmp.write_text(json.dumps({"last_seq": self.last_seq}) + "\n")
        os.replace(tmp, self.state)
        self.written += len(new)
        return len(new)


def _emit(recs, args, eventlog):
    for r in recs:
        if args.json:
            print(json.dumps(as_json(r, eventlog), ensure_ascii=False), flush=True)
        else:
            print(eventlog.line(r), flush=True)


def _from_time(recs, utc_s, eventlog):
    """Records from the first one stamped at or after ``utc_s`` on (None: none yet)."""
    for i, r in enumerate(recs):
        u = r[eventlog.UTC_S]
        if u is not None and u >= utc_s:
            return recs[i:]
    return None


def _note(msg):
    print("v2g logs: " + msg, file=sys.stderr, flush=True)


def run(args):
    check_port(args.port)
    since_kind, since_val = parse_since(args.since)
    if args.interval <= 0:
        raise UsageError("--interval %s: give a positive number of seconds" % args.interval)
    out = OutFile(args.out) if args.out else None
    eventlog = eventlog_module()
    root = check_log_dir(args.log_dir)
    since_seq = since_val if since_kind == "seq" else 0
    waiting_for_time = since_kind == "utc"

    def take(recs):
        """Write one pull's records to ``--out`` and print those ``--since`` selects."""
        nonlocal waiting_for_time
        if out is not None:
            out.add(recs, eventlog)
        if waiting_for_time:
            later = _from_time(recs, since_val, eventlog)
            if later is None:
                return
            waiting_for_time = False
            recs = later
        _emit(recs, args, eventlog)

    with BoardLink(args.port) as link:
        recs, tr = pull(link, root, since_seq, eventlog)
    if not tr["exists"]:
        _note("no event log on the board yet (%s/ is missing)" % root)
    newest = tr.get("newest", 0) or 0
    # an --out file ahead of the board's log: the log restarted (wiped, another board)
    if out is not None and tr["exists"] and out.last_seq > newest:
        _note("%s holds records up to seq %d but the board's log ends at %d: the log "
              "started again; appending from its start" % (out.path, out.last_seq, newest))
        out.restart()
    if out is not None and out.last_seq < since_seq:
        # --since skipped records the file does not have yet: fetch them for the file
        with BoardLink(args.port) as link:
            extra, _ = pull(link, root, out.last_seq, eventlog)
        out.add([r for r in extra if r[eventlog.SEQ] <= since_seq], eventlog)
    take(recs)
    for key in ("errors", "dropped"):
        if tr.get(key):
            _note("the board's log reports %d %s" % (tr[key], key))
    if args.follow:
        try:
            _follow(args, root, since_seq, max(newest, since_seq), take, out, eventlog)
        except KeyboardInterrupt:
            pass
    if out is not None:
        _note("%s: %d new record(s) appended (newest seq %d)"
              % (out.path, out.written, out.last_seq))
    return 0


def _follow(args, root, floor, seen, take, out, eventlog):
    """Poll until Ctrl-C for records after ``seen`` (the newest seq the board had) and
    ``floor`` (``--since SEQ``)."""
    gone = False
    while True:
        time.sleep(args.interval)
        try:
            with BoardLink(args.port, banner_timeout_s=2.0) as link:
                recs, tr = pull(link, root, max(seen, floor), eventlog)
        except (BoardGone, UsageError) as e:  # resetting, unplugged, or the port is busy
            if not gone:
                _note("board not answering (%s); waiting for it" % e)
                gone = True
            continue
        if gone:
            _note("board back")
            gone = False
        newest = tr.get("newest", 0) or 0
        if tr["exists"] and not recs and newest < seen:
            _note("the board's log started again (newest seq %d, had %d); reading it from "
                  "its start" % (newest, seen))
            if out is not None:
                out.restart()
            seen = floor = 0
            continue
        if recs:
            take(recs)
            seen = max(seen, recs[-1][eventlog.SEQ])
