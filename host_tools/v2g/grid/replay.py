"""``v2g replay``: feed recorded three-phase voltages through the firmware's own PLL.

    v2g replay WAVE.csv --out EST.csv [--runtime micropython|cpython]
                        [--f-nom 50] [--v-nom 230]

WAVE.csv: header starting ``t_s,v_a,v_b,v_c`` (more columns may follow and are
ignored); phase-to-neutral volts; uniform sampling. The tick rate is taken from the
timestamps: every step must equal the median step within 1e-6 relative (plus a few
ULPs of float rounding), and the rate is the mean step over the file, snapped to the
nearest integer Hz when within 1e-6 of it. It must lie in the PLL's range
2000..20000 Hz. The PLL is initialised with the rate rounded to an integer (its tick
rates are integers); the exact rate converts its frequency output to Hz.

Each sample becomes per-unit Q12 (4096 = nominal phase peak ``v_nom * sqrt(2)``),
``round(v / (v_nom*sqrt(2)) * 4096)`` clamped to [-16384, 16383], and goes through
``pll.step`` from ``firmware/pll.py``: on the MicroPython unix runtime
(``v2g/build/mp/replay_runner.py``, default) or in-process under CPython. Either way the
PLL's raw integer outputs (``pll.raw_outputs``) are converted to floats here, by the
same functions, so both runtimes give byte-identical EST.csv files.

EST.csv: ``t_s,theta_rad,f_hz,v_pos_pu,locked``, one row per input row, ``t_s``
copied from the input text.

All input is checked before any output appears: the output is written to a temporary
file beside it and moved into place at the end; on any error it is removed and the
command exits 2 (bad input) or 1 (runtime failure).

Context: host only.
"""

import array
import csv
import math
import os
import struct
import tempfile
import threading
from collections import deque
from pathlib import Path

from v2g.common import paths, runtime
from v2g.common.errors import ToolError, UsageError

IN_COLUMNS = ("t_s", "v_a", "v_b", "v_c")
OUT_HEADER = "t_s,theta_rad,f_hz,v_pos_pu,locked"

TICK_MIN_HZ = 2000
TICK_MAX_HZ = 20000
F_NOM_MIN_HZ = 40.0
F_NOM_MAX_HZ = 70.0
STEP_REL_TOL = 1e-6

Q12_ONE = 4096
Q12_MIN = -16384
Q12_MAX = 16383

TURN_BITS = 28          # theta: 2**28 per turn
F_INC_FRAC_BITS = 6     # f_inc_q6: theta increment per tick in turn28 units, Q6
FLOAT_FMT = "%.9f"

RUNTIMES = ("micropython", "cpython")


# ---------------------------------------------------------------------------
# Conversions: the one place raw PLL outputs become engineering units.

def volts_to_q12(v, v_nom):
    """Phase-to-neutral volts -> per-unit Q12 of the nominal peak, clamped."""
    q = round(v / (v_nom * math.sqrt(2.0)) * Q12_ONE)
    if q < Q12_MIN:
        return Q12_MIN
    if q > Q12_MAX:
        return Q12_MAX
    return q


def theta_from_raw(theta_turn28):
    """Angle in 2**28 units per turn -> radians in [0, 2*pi)."""
    return (theta_turn28 % (1 << TURN_BITS)) * (2.0 * math.pi) / (1 << TURN_BITS)


def f_from_raw(f_inc_q6, tick_hz):
    """Per-tick angle increment (turn28 units, Q6) -> Hz."""
    return f_inc_q6 * tick_hz / float(1 << (TURN_BITS + F_INC_FRAC_BITS))


def v_from_raw(v_pos_q12):
    """Positive-sequence magnitude, Q12 -> per-unit of the nominal peak."""
    return v_pos_q12 / float(Q12_ONE)


def format_row(t_text, raw, tick_hz):
    """One EST.csv line (with newline) from the input's t_s text and the 4 raw ints."""
    theta, f_inc, v_pos, locked = raw
    return "%s,%s,%s,%s,%d\n" % (
        t_text,
        FLOAT_FMT % theta_from_raw(theta),
        FLOAT_FMT % f_from_raw(f_inc, tick_hz),
        FLOAT_FMT % v_from_raw(v_pos),
        1 if locked else 0,
    )


def encode_num(x):
    """Text for a number passed to the MicroPython runner: an integer, or the exact
    bits of a double (``x`` + 16 hex digits) so no decimal parsing can differ."""
    if float(x).is_integer():
        return str(int(x))
    return "x%016x" % struct.unpack("<Q", struct.pack("<d", float(x)))[0]


def decode_num(text):
    """Inverse of ``encode_num``; the runner does the same, so both runtimes get the
    same Python value (int or float) for ``pll.init``."""
    if text[:1] == "x":
        return struct.unpack("<d", struct.pack("<Q", int(text[1:], 16)))[0]
    return int(text)


# ---------------------------------------------------------------------------
# Reading and checking WAVE.csv

def _where(path, line, column=None):
    s = "%s line %d" % (path, line)
    if column is not None:
        s += ", column %s" % column
    return s


def _parse_number(path, line, column, text):
    try:
        value = float(text)
    except ValueError:
        raise UsageError("%s: %r is not a number; allowed: a finite decimal number (%s)"
                         % (_where(path, line, column), text,
                            "seconds" if column == "t_s" else "volts")) from None
    if not math.isfinite(value):
        raise UsageError("%s: %r is not finite; allowed: a finite decimal number"
                         % (_where(path, line, column), text))
    return value


def _iter_rows(path):
    """Yield ``(line_no, t_text, t, va, vb, vc)`` per data row, checking each.

    Raises ``UsageError`` naming the file, line, column and value on the first bad one.
    """
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError("%s: no such file; give a CSV with header %s"
                         % (path, ",".join(IN_COLUMNS))) from None
    except IsADirectoryError:
        raise UsageError("%s: is a directory, not a CSV file" % path) from None
    except OSError as e:
        raise UsageError("%s: cannot read: %s" % (path, e.strerror or e)) from None
    with f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                raise UsageError("%s line 1: the file is empty; expected the header %s"
                                 % (path, ",".join(IN_COLUMNS)))
            header = [h.strip() for h in header]
            for i, name in enumerate(IN_COLUMNS):
                got = header[i] if i < len(header) else None
                if got != name:
                    raise UsageError(
                        "%s line 1, column %d: expected %r, found %s; the header must "
                        "start %s (more columns may follow)"
                        % (path, i + 1, name, "nothing" if got is None else repr(got),
                           ",".join(IN_COLUMNS)))
            blank_line = None
            for row in reader:
                line = reader.line_num
                if not row or all(not c.strip() for c in row):
                    if blank_line is None:
                        blank_line = line
                    continue
                if blank_line is not None:
                    raise UsageError("%s: empty row; allowed: blank lines only at the "
                                     "end of the file" % _where(path, blank_line))
                if len(row) < len(IN_COLUMNS):
                    missing = IN_COLUMNS[len(row)]
                    raise UsageError("%s: missing value (the row has %d cells); every "
                                     "row needs %s"
                                     % (_where(path, line, missing), len(row),
                                        ",".join(IN_COLUMNS)))
                t_text = row[0].strip()
                t = _parse_number(path, line, "t_s", t_text)
                va = _parse_number(path, line, "v_a", row[1].strip())
                vb = _parse_number(path, line, "v_b", row[2].strip())
                vc = _parse_number(path, line, "v_c", row[3].strip())
                yield line, t_text, t, va, vb, vc
        except UnicodeDecodeError as e:
            raise UsageError("%s: not UTF-8 text (%s); give a CSV text file"
                             % (path, e.reason)) from None
        except csv.Error as e:
            raise UsageError("%s: malformed CSV: %s" % (_where(path, reader.line_num), e)) from None


def check_wave(path):
    """First pass over WAVE.csv: check every row and the timestamps.

    Returns ``(n_rows, tick_hz)``; ``tick_hz`` is an int when the rate is an integer
    number of Hz (within 1e-6), else a float.
    """
    import numpy as np

    ts = array.array("d")
    lines = array.array("q")
    for line, t_text, t, _va, _vb, _vc in _iter_rows(path):
        ts.append(t)
        lines.append(line)
    n = len(ts)
    if n < 2:
        raise UsageError("%s: %d data row%s; need at least 2 rows to take the sample "
                         "rate from the timestamps"
                         % (path, n, "" if n == 1 else "s"))
    t = np.frombuffer(ts, dtype=np.float64)
    steps = np.diff(t)
    bad = np.flatnonzero(steps <= 0.0)
    if bad.size:
        i = int(bad[0]) + 1
        raise UsageError("%s: %s is not after the previous timestamp %s (line %d); "
                         "timestamps must strictly increase"
                         % (_where(path, lines[i], "t_s"), repr(float(t[i])),
                            repr(float(t[i - 1])), lines[i - 1]))
    dt = float(np.median(steps))
    # float slop: a few ULPs of the timestamps' magnitude (parsing + subtraction)
    mag = np.maximum(np.abs(t[1:]), np.abs(t[:-1]))
    tol = STEP_REL_TOL * dt + 4.0 * np.spacing(mag)
    bad = np.flatnonzero(np.abs(steps - dt) > tol)
    if bad.size:
        i = int(bad[0]) + 1
        raise UsageError(
            "%s: %r is %.9g s after the previous timestamp (line %d), but the median "
            "step is %.9g s; sampling must be uniform: every step equal to the median "
            "within 1e-6 relative (write timestamps with full precision, e.g. repr)"
            % (_where(path, lines[i], "t_s"), float(t[i]), float(steps[i - 1]),
               lines[i - 1], dt))
    mean_dt = (float(t[-1]) - float(t[0])) / (n - 1)
    tick = 1.0 / mean_dt
    if abs(tick - round(tick)) <= STEP_REL_TOL * tick:
        tick = int(round(tick))
    if not (TICK_MIN_HZ <= tick <= TICK_MAX_HZ):
        raise UsageError(
            "%s: sample step %.9g s from the timestamps gives a rate of %.9g Hz; "
            "allowed: the PLL's tick range %d..%d Hz (resample the wave)"
            % (_where(path, lines[1], "t_s"), dt, tick, TICK_MIN_HZ, TICK_MAX_HZ))
    return n, tick


def check_options(args):
    f_nom = args.f_nom
    if not (math.isfinite(f_nom) and F_NOM_MIN_HZ <= f_nom <= F_NOM_MAX_HZ):
        raise UsageError("--f-nom %r: allowed %g..%g Hz (50 or 60 Hz grids)"
                         % (f_nom, F_NOM_MIN_HZ, F_NOM_MAX_HZ))
    v_nom = args.v_nom
    if not (math.isfinite(v_nom) and v_nom > 0):
        raise UsageError("--v-nom %r: allowed a finite voltage > 0 (nominal "
                         "phase-to-neutral RMS volts, e.g. 230)" % v_nom)
    if args.runtime not in RUNTIMES:
        raise UsageError("--runtime %r: allowed %s" % (args.runtime, " or ".join(RUNTIMES)))
    wave = Path(args.wave)
    out = Path(args.out)
    if out.is_dir():
        raise UsageError("--out %s: is a directory; give a file name" % out)
    if not out.parent.is_dir():
        raise UsageError("--out %s: directory %s does not exist" % (out, out.parent))
    try:
        if wave.exists() and out.exists() and os.path.samefile(wave, out):
            raise UsageError("--out %s: is the input file; give another name" % out)
    except OSError:
        pass


# ---------------------------------------------------------------------------
# Running the PLL

def _samples(path, v_nom):
    """Second pass: ``(t_text, qa, qb, qc)`` per row (already checked)."""
    for _line, t_text, _t, va, vb, vc in _iter_rows(path):
        yield (t_text, volts_to_q12(va, v_nom), volts_to_q12(vb, v_nom),
               volts_to_q12(vc, v_nom))


def _run_cpython(path, v_nom, tick_arg, f_arg, tick_hz, out):
    runtime.import_firmware_cpython()
    try:
        import pll
    except ImportError as e:
        raise ToolError("cannot import the firmware PLL (%s/pll.py): %s"
                        % (paths.FIRMWARE_DIR, e)) from None
    st = pll.new_state()
    pll.init(st, decode_num(tick_arg), decode_num(f_arg))
    step = pll.step
    raw = pll.raw_outputs
    n = 0
    for t_text, qa, qb, qc in _samples(path, v_nom):
        step(st, qa, qb, qc)
        out.write(format_row(t_text, raw(st), tick_hz))
        n += 1
    return n


def _run_micropython(path, v_nom, tick_arg, f_arg, tick_hz, out, n_rows, exe):
    script = paths.MP_DIR / "replay_runner.py"
    texts = deque()     # t_s texts in flight between the feeder and the reader
    err = tempfile.TemporaryFile()
    try:
        proc = runtime.popen_micropython(script, [tick_arg, f_arg], exe=exe, stderr=err)
    except OSError as e:
        err.close()
        raise UsageError("cannot run the MicroPython runtime %s: %s" % (exe, e)) from None
    feed_error = []

    def feed():
        try:
            buf = []
            for t_text, qa, qb, qc in _samples(path, v_nom):
                buf.append(b"%d %d %d\n" % (qa, qb, qc))
                texts.append(t_text)
                if len(buf) >= 4096:
                    proc.stdin.write(b"".join(buf))
                    buf = []
            if buf:
                proc.stdin.write(b"".join(buf))
        except BrokenPipeError:
            pass
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            feed_error.append(e)
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass

    writer = threading.Thread(target=feed, name="replay-feed", daemon=True)
    writer.start()
    n = 0
    end_count = None
    try:
        for raw_line in proc.stdout:
            fields = raw_line.split()
            if len(fields) == 2 and fields[0] == b"end":
                end_count = int(fields[1])
                continue
            if len(fields) != 4 or end_count is not None:
                # MicroPython prints an uncaught exception's traceback on stdout
                rest = raw_line + proc.stdout.read(8192)
                raise ToolError("the MicroPython runner (%s %s) failed after %d of %d "
                                "rows:\n%s" % (exe, script, n, n_rows,
                                               rest.decode("utf-8", "replace").rstrip()))
            if not texts:
                raise ToolError("MicroPython runner printed more lines than it was fed")
            t_text = texts.popleft()
            out.write(format_row(t_text, tuple(int(x) for x in fields), tick_hz))
            n += 1
        rc = proc.wait()
        writer.join()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    if feed_error:
        raise feed_error[0]
    err.seek(0)
    stderr = err.read().decode("utf-8", "replace").strip()
    err.close()
    if rc != 0 or end_count != n_rows or n != n_rows:
        raise ToolError("the MicroPython runner (%s %s) failed with exit code %d after "
                        "%d of %d rows%s" % (exe, script, rc, n, n_rows,
                                            (":\n" + stderr) if stderr else ""))
    return n


def replay(wave, out, runtime_name="micropython", f_nom=50.0, v_nom=230.0):
    """Check ``wave`` fully, then write ``out`` atomically. Returns the row count."""
    wave = Path(wave)
    out = Path(out)
    n_rows, tick_hz = check_wave(wave)
    exe = paths.micropython_exe() if runtime_name != "cpython" else None
    # The PLL runs at an integer tick rate (pll.init takes int Hz); a non-integer
    # sample rate is rounded for init, and the exact rate converts the frequency.
    tick_arg = str(int(round(tick_hz)))
    f_arg = encode_num(f_nom)
    out_dir = out.parent if str(out.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix="." + out.name + ".", suffix=".tmp")
    ok = False
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(OUT_HEADER + "\n")
            if runtime_name == "cpython":
                n = _run_cpython(wave, v_nom, tick_arg, f_arg, tick_hz, fh)
            else:
                n = _run_micropython(wave, v_nom, tick_arg, f_arg, tick_hz, fh, n_rows,
                                     exe)
        if n != n_rows:
            raise ToolError("%s changed while it was being read (%d rows, then %d)"
                            % (wave, n_rows, n))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out)
        ok = True
    finally:
        if not ok:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return n_rows, tick_hz


# ---------------------------------------------------------------------------
# CLI

def add_arguments(p):
    p.add_argument("wave", metavar="WAVE.csv",
                   help="recorded voltages: header t_s,v_a,v_b,v_c (phase-to-neutral "
                        "volts, uniform sampling at %d..%d Hz)" % (TICK_MIN_HZ, TICK_MAX_HZ))
    p.add_argument("--out", required=True, metavar="EST.csv",
                   help="PLL estimates: t_s,theta_rad,f_hz,v_pos_pu,locked")
    p.add_argument("--runtime", default="micropython", choices=RUNTIMES,
                   help="run the firmware PLL on the MicroPython unix runtime (default) "
                        "or under CPython; the output is identical")
    p.add_argument("--f-nom", type=float, default=50.0, metavar="HZ",
                   help="nominal grid frequency, %g..%g Hz (default 50)"
                        % (F_NOM_MIN_HZ, F_NOM_MAX_HZ))
    p.add_argument("--v-nom", type=float, default=230.0, metavar="VOLTS",
                   help="nominal phase-to-neutral RMS voltage, > 0 (default 230); "
                        "1 pu = v_nom*sqrt(2) peak")


def run(args):
    check_options(args)
    n, tick = replay(args.wave, args.out, args.runtime, args.f_nom, args.v_nom)
    print("replay: %d rows at %s Hz through the firmware PLL (%s) -> %s"
          % (n, tick, args.runtime, args.out))
    return 0
