"""Board data: list the boards, load and validate ``boards/<name>/board.json``.

A board is a folder under ``boards/`` holding a ``board.json`` (its data, keys in
``boards/README.md``) and a ``hal.py``. ``v2g flash --board NAME`` uses this module to
refuse bad data before anything is copied and to pick the ``mpy-cross -march`` value.

Every problem found is reported at once in one ``UsageError`` naming the file, the key,
the bad value and what is allowed, e.g.::

    boards/rp2/board.json: key 'tick_hz': value 50000 is outside 2000..20000 (Hz)

The sim board's ``mpy_arch`` is ``"runtime"``: the sim "board" is the MicroPython unix
runtime itself, so its code is compiled for whatever arch that runtime runs (x64, or x86
for a 32-bit build); ``mpy_arch(board)`` asks the runtime (``sys.implementation._mpy``).

Derived values: ``d_min_counts(board)``, the dead-time allowance of the modulator (dead
time + minimum on-time in PWM counts, rounded up so no pulse is shorter than the gate
driver can honour); ``pwm_period_ns(board)``.

Usage::

    from v2g.common import boards
    board = boards.load("rp2")            # or a path to a board.json / board folder
    arch = boards.mpy_arch(board)         # "armv7emsp" (sim: the unix runtime's own arch)
    d_min = boards.d_min_counts(board)

Context: host only.
"""

import json
from pathlib import Path

from v2g.common import paths
from v2g.common.errors import UsageError

PORTS = ("rp2", "stm32", "esp32", "unix")
# mpy-cross -march values (mpy-cross 1.29 --help), without its "host" and "debug" pseudo-arches
MPY_ARCHES = ("x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
              "xtensa", "xtensawin", "rv32imc", "rv64imc")
RUNTIME_ARCH = "runtime"  # port "unix" only: the arch of the unix runtime that runs it
# MicroPython's MP_NATIVE_ARCH_* numbers (bits 10.. of sys.implementation._mpy)
NATIVE_ARCHES = {1: "x86", 2: "x64", 3: "armv6", 4: "armv6m", 5: "armv7m", 6: "armv7em",
                 7: "armv7emsp", 8: "armv7emdp", 9: "xtensa", 10: "xtensawin",
                 11: "rv32imc"}
# the core a board's MicroPython runs on (optional key "cpu"; v2g.targets takes its
# cycles-per-instruction assumption from it)
CPUS = ("cortex-m0plus", "cortex-m33", "cortex-m4f", "cortex-m7", "xtensa-lx6", "host")
TICK_IRQS = ("hard", "soft")
FILESYSTEMS = ("littlefs", "posix")
ADC_CHANNELS = ("VA", "VB", "VC", "IA", "IB", "IC", "VDC")  # tick order (firmware/tick.py)
PIN_KEYS = ("pwm_a", "pwm_b", "pwm_c", "contactor_main", "contactor_pre", "contactor_aux",
            "fan_pwm", "fan_tach", "ntc_module", "ntc_heatsink", "led")

ADC_MAX = 65535
PU4_Q12 = 16384  # firmware/tick.py: raw words must map inside +/-4 pu (Q12)

# Keys the HALs in this repo need on top of the README's list, by port. A board of one of
# these ports without them would pass the host check and then fail at boot.
#   pins.pwm_x_n      low-side gate outputs (complementary hardware PWM)
#   pins.gate_enable  gate-driver enable line: the second, independent way to switch off
#   pwm_clock_hz      the counter clock pwm_period_counts is counted in (centre-aligned)
#   ext_adc           the external simultaneous-sampling ADC (AD7606 over SPI; "read":
#                     "pio" on rp2, where the PIO reads it before the tick's interrupt)
#   regs              rp2: register addresses of the chip (hex strings: pwm, pwm_en, sio_in,
#                     sio_set, sio_clr, pio; chip) the HAL's viper tick methods use directly
#   cpu_hz            the core clock MicroPython runs the CPU at (the tick's budget:
#                     cpu_hz / tick_hz cycles per tick; v2g.targets)
_LOW_SIDE = ("pwm_a_n", "pwm_b_n", "pwm_c_n")
PORT_PIN_KEYS = {"rp2": _LOW_SIDE + ("gate_enable",),
                 "stm32": _LOW_SIDE + ("gate_enable",),
                 "esp32": ("gate_enable",)}
PORT_KEYS = {"rp2": ("pwm_clock_hz", "ext_adc", "cpu_hz", "regs"),
             "stm32": ("pwm_clock_hz", "cpu_hz"),
             "esp32": ("ext_adc", "cpu_hz")}

EXT_ADC_CHIPS = ("ad7606",)
EXT_ADC_PINS = ("sck", "mosi", "miso", "cs", "convst", "busy")
# who reads it: "cpu" in the tick (SPI + pins), "pio" the RP2's PIO before the tick's IRQ
EXT_ADC_READS = ("cpu", "pio")
AD7606_INPUTS = tuple("V%d" % n for n in range(1, 9))

# (key, unit, lo, hi) for the plain integer keys
# the energy journal's optional keys (services/energy_journal.py; defaults 60 s, 4 x 32)
_ENERGY_JOURNAL_KEYS = (
    ("energy_interval_s", "s", 1, 3600),
    ("energy_segments", "segment files", 3, 64),
    ("energy_records_per_segment", "records", 2, 1024),
)

_INT_RANGES = (
    ("tick_hz", "Hz", 2000, 20000),
    ("pwm_freq_hz", "Hz", 1000, 200000),
    ("pwm_period_counts", "counts", 16, 16384),
    ("dead_time_ns", "ns", 0, 5000),
    ("min_on_ns", "ns", 0, 10000),
    ("v_base_mv", "mV", 1000, 2000000),
    ("i_base_ma", "mA", 100, 2000000),
    ("wdt_timeout_ms", "ms", 50, 8000),
)


def boards_dir():
    return paths.BOARDS_DIR


def list_boards(root=None):
    """Names of the folders under ``boards/`` that hold a ``board.json``, sorted."""
    root = Path(root) if root is not None else boards_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "board.json").is_file())


def board_file(name_or_path):
    """The ``board.json`` of a board name, a board folder or a board.json path."""
    s = str(name_or_path)
    p = Path(s)
    if s.endswith(".json") or "/" in s or "\\" in s or p.is_absolute():
        f = p / "board.json" if p.is_dir() else p
        if not f.is_file():
            raise UsageError("%s: no such board file; give a board name (%s) or the path of "
                             "a board.json" % (f, ", ".join(list_boards()) or "none found"))
        return f
    f = boards_dir() / s / "board.json"
    if not f.is_file():
        raise UsageError("unknown board %r; boards are: %s (folders under %s/ with a "
                         "board.json)" % (s, ", ".join(list_boards()) or "none",
                                          _show(boards_dir())))
    return f


def load(name_or_path):
    """Read and validate a board's data; returns the dict. Raises ``UsageError``."""
    f = board_file(name_or_path)
    try:
        text = f.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UsageError("%s: not UTF-8 text (%s)" % (_show(f), e.reason)) from None
    except OSError as e:
        raise UsageError("%s: cannot read: %s" % (_show(f), e.strerror or e)) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError("%s line %d column %d: not valid JSON: %s"
                         % (_show(f), e.lineno, e.colno, e.msg)) from None
    validate(data, f)
    return data


def validate(data, source="board.json"):
    """Check every key of a parsed board.json; raise one ``UsageError`` listing every
    problem (file, key, value, what is allowed). Returns ``data`` unchanged."""
    errs = []

    def bad(key, value, allowed):
        errs.append("key %r: value %s %s" % (key, _repr(value), allowed))

    if not isinstance(data, dict):
        raise UsageError("%s: the top level must be a JSON object with the keys listed in "
                         "boards/README.md, not %s" % (_show(source), type(data).__name__))

    def need(key):
        if key not in data:
            errs.append("key %r is missing (see boards/README.md)" % key)
            return False
        return True

    if need("name") and not (isinstance(data["name"], str) and data["name"].strip()):
        bad("name", data["name"], "is not allowed; give a non-empty string")
    port = data.get("port")
    if need("port") and port not in PORTS:
        bad("port", port, "is unknown; allowed: %s" % ", ".join(PORTS))
    if need("mpy_arch") and data["mpy_arch"] not in MPY_ARCHES:
        if data["mpy_arch"] == RUNTIME_ARCH and port != "unix":
            bad("mpy_arch", data["mpy_arch"], "is only allowed for port unix (the sim board "
                "runs on the unix runtime); give the board's mpy-cross -march value")
        elif data["mpy_arch"] != RUNTIME_ARCH:
            bad("mpy_arch", data["mpy_arch"],
                "is not an mpy-cross -march value; allowed: %s, or %s (port unix)"
                % (", ".join(MPY_ARCHES), RUNTIME_ARCH))
    if "cpu_hz" in data:
        _check_int(bad, "cpu_hz", data["cpu_hz"], 1000000, 2000000000, "Hz")
    if "cpu" in data and data["cpu"] not in CPUS:
        bad("cpu", data["cpu"], "is unknown; allowed: %s" % ", ".join(CPUS))
    for key, unit, lo, hi in _INT_RANGES:
        if need(key):
            _check_int(bad, key, data[key], lo, hi, unit)
    if need("tick_irq"):
        if data["tick_irq"] not in TICK_IRQS:
            bad("tick_irq", data["tick_irq"], "is unknown; allowed: hard, soft")
        elif port == "esp32" and data["tick_irq"] != "soft":
            bad("tick_irq", data["tick_irq"], "is not possible on esp32 (machine.Timer has "
                "no hard callbacks there); allowed: soft")
    if need("fs") and data["fs"] not in FILESYSTEMS:
        bad("fs", data["fs"], "is unknown; allowed: %s" % ", ".join(FILESYSTEMS))
    if "flash_stalls_tick" in data and not isinstance(data["flash_stalls_tick"], bool):
        bad("flash_stalls_tick", data["flash_stalls_tick"], "is not allowed; give true or "
            "false")
    for key, unit, lo, hi in _ENERGY_JOURNAL_KEYS:  # optional: the journal's defaults
        if key in data:
            _check_int(bad, key, data[key], lo, hi, unit)
    if port not in (None, "unix") and data.get("fs") == "littlefs" and \
            "flash_stalls_tick" not in data:
        errs.append("key 'flash_stalls_tick' is missing: say whether a write to the board's "
                    "filesystem stalls the tick (see boards/README.md)")
    if not errs:
        _check_pwm(bad, data)
    if need("adc"):
        _check_adc(errs, bad, data["adc"], data.get("ext_adc"))
    if need("pins"):
        _check_pins(errs, bad, data["pins"], port)
    for key in PORT_KEYS.get(port, ()):
        need(key)
    if "ext_adc" in data:
        _check_ext_adc(bad, data["ext_adc"])
    if errs:
        raise UsageError("%s: %s" % (_show(source), "; ".join(errs)))
    return data


def d_min_counts(board):
    """Dead time + minimum on-time in PWM compare counts, rounded up:
    ``(dead + min_on) * pwm_period_counts / period_ns`` (boards/README.md)."""
    num = (board["dead_time_ns"] + board["min_on_ns"]) * board["pwm_period_counts"]
    num *= board["pwm_freq_hz"]
    return -(-num // 1000000000)


def pwm_period_ns(board):
    return 1000000000 // board["pwm_freq_hz"]


def mpy_arch(board, exe=None):
    """The ``mpy-cross -march`` value for the board's .mpy files; for ``"runtime"`` (the
    sim board) the arch of the unix runtime ``exe`` (default: the configured one)."""
    arch = board["mpy_arch"]
    if arch != RUNTIME_ARCH:
        return arch
    got = runtime_arch(exe or paths.micropython_exe())
    if got is None:
        raise UsageError("board %s: mpy_arch %r, but the unix runtime %s reports no native "
                         "arch (sys.implementation._mpy); use --source"
                         % (board.get("name", "?"), RUNTIME_ARCH, exe or paths.micropython_exe()))
    return got


_runtime_arch = {}  # exe -> arch name or None (asked once per process)


def runtime_arch(exe):
    """The mpy-cross -march name of a MicroPython runtime's native code (from its
    ``sys.implementation._mpy``), or None when it reports none."""
    exe = str(exe)
    if exe not in _runtime_arch:
        import subprocess

        try:
            r = subprocess.run([exe, "-c", "import sys; print(sys.implementation._mpy)"],
                               capture_output=True, text=True, timeout=30)
            word = int(r.stdout.strip())
        except (OSError, ValueError, subprocess.SubprocessError):
            word = 0
        _runtime_arch[exe] = NATIVE_ARCHES.get(word >> 10)
    return _runtime_arch[exe]


# --- checks -------------------------------------------------------------------------------

def _check_int(bad, key, value, lo, hi, unit=""):
    if not _is_int(value):
        bad(key, value, "is not an integer; allowed: an integer %d..%d%s"
            % (lo, hi, " (%s)" % unit if unit else ""))
        return False
    if not lo <= value <= hi:
        bad(key, value, "is outside %d..%d%s" % (lo, hi, " (%s)" % unit if unit else ""))
        return False
    return True


def _check_pwm(bad, data):
    d_min = d_min_counts(data)
    period = data["pwm_period_counts"]
    if d_min >= period // 4:
        bad("dead_time_ns", data["dead_time_ns"],
            "with min_on_ns %d gives D_MIN = %d counts, not below pwm_period_counts/4 = %d; "
            "allowed: dead + min on-time under a quarter of the PWM period (%d ns)"
            % (data["min_on_ns"], d_min, period // 4, pwm_period_ns(data) // 4))
    if "pwm_clock_hz" in data:
        clk = data["pwm_clock_hz"]
        if _check_int(bad, "pwm_clock_hz", clk, 1000000, 1000000000, "Hz"):
            # centre-aligned (up/down) counter: one PWM period is 2 * counts clock ticks
            if clk != 2 * data["pwm_freq_hz"] * period:
                bad("pwm_period_counts", period,
                    "does not give pwm_freq_hz %d with pwm_clock_hz %d (centre-aligned: "
                    "f = clock / (2 * counts) = %.1f Hz); allowed: pwm_clock_hz / (2 * "
                    "pwm_freq_hz) = %s"
                    % (data["pwm_freq_hz"], clk, clk / (2.0 * period),
                       _fmt_ratio(clk, 2 * data["pwm_freq_hz"])))


def _check_adc(errs, bad, adc, ext_adc):
    if not isinstance(adc, list) or len(adc) != len(ADC_CHANNELS):
        bad("adc", adc, "is not allowed; give a list of %d objects {\"pin\", \"offset\", "
            "\"gain_q14\"} in tick order %s" % (len(ADC_CHANNELS), " ".join(ADC_CHANNELS)))
        return
    ext_pins = []
    for i, ch in enumerate(adc):
        name = ADC_CHANNELS[i]
        where = "adc[%d]" % i
        if not isinstance(ch, dict):
            bad(where, ch, "is not allowed; give an object {\"pin\", \"offset\", "
                "\"gain_q14\"} for channel %s" % name)
            continue
        for k in ("pin", "offset", "gain_q14"):
            if k not in ch:
                errs.append("key '%s.%s' (channel %s) is missing" % (where, k, name))
        if "name" in ch and ch["name"] != name:
            bad(where + ".name", ch["name"], "is out of order; channel %d is %s (tick order "
                "%s)" % (i, name, " ".join(ADC_CHANNELS)))
        if "pin" in ch:
            if not _is_pin(ch["pin"]):
                bad(where + ".pin", ch["pin"], "is not a pin; give a pin name or number")
            elif isinstance(ext_adc, dict):
                ext_pins.append(ch["pin"])
                if ch["pin"] not in AD7606_INPUTS:
                    bad(where + ".pin", ch["pin"], "is not an input of the external ADC; "
                        "allowed: %s" % ", ".join(AD7606_INPUTS))
        off_ok = "offset" in ch and _check_int(bad, where + ".offset", ch["offset"], 0,
                                               ADC_MAX)
        gain_ok = "gain_q14" in ch and _check_int(bad, where + ".gain_q14", ch["gain_q14"], 1,
                                                  PU4_Q12 << 14)
        if off_ok and gain_ok:
            off, gain = ch["offset"], ch["gain_q14"]
            span = max(off, ADC_MAX - off)
            if span * gain > PU4_Q12 << 14:
                bad(where + ".gain_q14", gain,
                    "with offset %d maps raw 0..%d to +/-%.2f pu (channel %s); allowed: "
                    "max(offset, 65535 - offset) * gain_q14 <= 16384 << 14, here gain_q14 "
                    "<= %d (4 pu, the input range of the control hot paths)"
                    % (off, ADC_MAX, span * gain / float(4096 << 14), name,
                       (PU4_Q12 << 14) // span))
    dup = sorted({p for p in ext_pins if ext_pins.count(p) > 1})
    if dup:
        bad("adc[].pin", dup, "is used by more than one channel; each channel needs its own "
            "ADC input")


def _check_pins(errs, bad, pins, port):
    if not isinstance(pins, dict):
        bad("pins", pins, "is not allowed; give an object with %s" % ", ".join(PIN_KEYS))
        return
    wanted = PIN_KEYS + PORT_PIN_KEYS.get(port, ())
    for k in wanted:
        if k not in pins:
            errs.append("key 'pins.%s' is missing (needed: %s)" % (k, ", ".join(wanted)))
        elif not _is_pin(pins[k]):
            bad("pins." + k, pins[k], "is not a pin; give a pin name or number")
    if port != "unix":  # a real board cannot wire two functions to one pin
        seen = {}
        for k, v in pins.items():
            if _is_pin(v):
                seen.setdefault(v, []).append(k)
        for v, ks in seen.items():
            if len(ks) > 1:
                bad("pins." + ks[1], v, "is already pins.%s; allowed: one function per pin"
                    % ks[0])


def _check_ext_adc(bad, ext):
    if not isinstance(ext, dict):
        bad("ext_adc", ext, "is not allowed; give an object {\"chip\", \"spi\", \"baud\", "
            "%s}" % ", ".join('"%s"' % p for p in EXT_ADC_PINS))
        return
    if ext.get("chip") not in EXT_ADC_CHIPS:
        bad("ext_adc.chip", ext.get("chip"), "is unknown; allowed: %s"
            % ", ".join(EXT_ADC_CHIPS))
    _check_int(bad, "ext_adc.spi", ext.get("spi"), 0, 7)
    _check_int(bad, "ext_adc.baud", ext.get("baud"), 100000, 50000000, "Hz")
    for k in ("polarity", "phase"):
        if k in ext:
            _check_int(bad, "ext_adc." + k, ext[k], 0, 1)
    if ext.get("read", "cpu") not in EXT_ADC_READS:
        bad("ext_adc.read", ext.get("read"), "is unknown; allowed: %s"
            % ", ".join(EXT_ADC_READS))
    for k in EXT_ADC_PINS:
        if not _is_pin(ext.get(k)):
            bad("ext_adc." + k, ext.get(k), "is not a pin; give a pin name or number")


# --- helpers ------------------------------------------------------------------------------

def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_pin(v):
    return (_is_int(v) and v >= 0) or (isinstance(v, str) and v.strip() != "")


def _repr(v):
    try:
        s = json.dumps(v)
    except (TypeError, ValueError):
        s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _fmt_ratio(a, b):
    return str(a // b) if a % b == 0 else "%.2f (not an integer)" % (a / float(b))


def _show(path):
    """A path relative to the repo root where possible (shorter messages)."""
    p = Path(str(path))
    try:
        return str(p.resolve().relative_to(paths.REPO_ROOT))
    except ValueError:
        return str(path)
