"""The control tick: the body of the fixed-rate timer interrupt, wiring only.

    hal.adc_read(raw) -> scale to Q12 pu -> pll.step -> grid_measure.step
      -> protect_fast.check -> current.step -> svpwm.modulate
      -> hal.pwm_set(duties) | hal.pwm_off()
    then tick count, cost and overrun counters into STATS.

``grid_measure.step`` measures each phase's fundamental and latches the fast IEEE 1547
regions (OV2, UV2, OF2, UF2) in protect_fast's latch, so ``protect_fast.check`` returns
a grid trip of this tick and the PWM goes off on this tick, like any latched fault.

ADC channels, in this order on every board: VA, VB, VC (phase-to-neutral voltages),
IA, IB, IC (phase currents, positive into the converter), VDC (DC link). Scaling per
channel: ``q12 = ((raw - offset) * gain_q14) >> 14`` with offset and gain from the board
data; raw words are 16-bit (0..65535) and ``Control`` refuses calibrations that would map
them outside +/-4 pu (+/-16384), the input range of every hot path.

The HAL handed to ``make_tick`` provides ``adc_read(raw)``, ``pwm_set(pw)``,
``pwm_off()`` and ``ticks_us()`` (wrapping at 2**30 like ``time.ticks_us``); nothing
here reads a clock or a pin any other way.

Context: the function returned by ``make_tick`` runs in the timer interrupt (hard where
the port allows): it allocates nothing, uses no floats, and never lets an exception
escape (a hard IRQ that raises is disabled for good; here the PWM goes off instead).
``Control`` and ``make_tick`` run at boot.
"""

from array import array

import micropython
from micropython import const

import current
import grid_measure
import pll
import protect_fast
import svpwm
import tables
from current import step as _current_step
from grid_measure import step as _gm_step
from pll import step as _pll_step
from protect_fast import check as _protect_check
from svpwm import modulate as _modulate

# The fused body: on cores with MicroPython's inline Thumb assembler the one calling the
# asm_thumb kernels of tick_thumb (firmware/thumb/, frozen on the ARM boards; it compiles
# only where asm_thumb exists), else the viper one. Same LAYOUT, same results word for
# word (tests_host/targets/test_thumb.py); one of the two is loaded, not both.
try:
    import tick_thumb  # noqa: F401 - ImportError/SyntaxError: no asm_thumb here
    import tick_fused_thumb as tick_fused
except (ImportError, SyntaxError):
    import tick_fused

THUMB = tick_fused.__name__ == "tick_fused_thumb"  # the kernels run (diagnostics, bench)

VA = const(0)
VB = const(1)
VC = const(2)
IA = const(3)
IB = const(4)
IC = const(5)
VDC = const(6)
CHANNELS = const(7)
ADC_MAX = const(65535)  # HALs deliver 16-bit words (read_u16 scale)
PU4_Q12 = const(16384)

# STATS words (tick -> supervisor)
COUNT = const(0)  # ticks since start, modulo 2**30 (the tick heartbeat)
COST_US = const(1)  # run time of the last tick
COST_MAX_US = const(2)
OVERRUNS = const(3)  # ticks that took longer than the period
PERIOD_US = const(4)
STATE = const(5)  # 0 idle (PWM off, not enabled), 1 switching, else the latched fault code
ERRORS = const(6)  # exceptions caught inside the tick (each one turned the PWM off)
CAP_LEFT = const(7)  # samples the waveform capture still has to take (0 = idle)
STATS_WORDS = const(8)
CAPTURE_SAMPLES = const(640)  # va, vb, vc raw words + PLL angle per sample (10 KB)
_COUNT_MASK = const(0x3FFFFFFF)

# tick_fused_compute.compute, imported by make_tick(inline=False) only: boards run
# tick_fused.run, which has it inlined, and keep the second copy out of their RAM
_compute_fused = None


def zeroed_words(n):
    """A zeroed ``array("i")`` of ``n`` words, allocated once at its final size: the
    array is sized from ``len(range(n))`` (``array("i", bytes(4 * n))`` would hold a bytes
    temporary of the same size beside it, which a fragmented heap may not have).
    Context: boot."""
    a = array("i", range(n))
    for i in range(n):
        a[i] = 0
    return a


class Control:
    """Every preallocated array the tick touches, built once at boot.

    ``mem`` is one int block holding the arrays of ``compute`` end to end and word
    copies of the lookup tables it reads (``tick_fused.LAYOUT``); ``raw``, ``cal``,
    ``pll``, ``cc``, ``prot``, ``pw`` and ``gm`` are memoryviews of their parts, so each
    module reads and writes its own state as before while the interrupt hands the fused
    compute a single buffer (one buffer lookup per tick instead of nine)."""

    def __init__(self, tick_hz, f_nom_hz, cal_offsets, cal_gains_q14, pwm_period,
                 pwm_d_min, cc_params, prot_params):
        if len(cal_offsets) != CHANNELS or len(cal_gains_q14) != CHANNELS:
            raise ValueError("ADC calibration needs %d offsets and gains" % CHANNELS)
        for ch in range(CHANNELS):
            off, gain = cal_offsets[ch], cal_gains_q14[ch]
            # 16-bit ADC words must map inside +/-4 pu (the hot paths' input range)
            if not (0 <= off <= ADC_MAX and 0 < gain
                    and max(off, ADC_MAX - off) * gain <= PU4_Q12 << 14):
                raise ValueError("ADC channel %d: offset %d, gain_q14 %d map 0..%d outside "
                                 "+/-4 pu" % (ch, off, gain, ADC_MAX))
        self.tick_hz = tick_hz
        # the big blocks first, each in one piece and without a temporary beside it
        self.mem = zeroed_words(tick_fused.BLOCK_WORDS)
        self.cap = zeroed_words(4 * CAPTURE_SAMPLES)
        self.stats = zeroed_words(STATS_WORDS)
        view = memoryview(self.mem)
        part = {}
        for name, off, words in tick_fused.LAYOUT:
            part[name] = view[off:off + words]
        self.raw = part["raw"]
        self.cal = part["cal"]
        for ch in range(CHANNELS):
            self.cal[ch] = cal_offsets[ch]
            self.cal[CHANNELS + ch] = cal_gains_q14[ch]
        self.pll = part["pll_st"]
        pll.init(self.pll, tick_hz, f_nom_hz)
        self.cc = part["cc"]
        current.init(self.cc, *cc_params)
        self.prot = part["prot"]
        protect_fast.init(self.prot, *prot_params)
        self.pw = part["pw"]
        svpwm.init(self.pw, pwm_period, pwm_d_min)
        # per-phase measurement and fast 1547 regions: IEEE 1547 Category II defaults
        # until the supervisor loads the config (set_grid_trips)
        self.gm = part["gm"]
        grid_measure.init(self.gm, tick_hz, f_nom_hz)
        for name in tick_fused.TABLES:  # word copies of the lookup tables the tick reads
            src, dst = getattr(tables, name), part[name]
            for i in range(len(src)):
                dst[i] = src[i]
        self.stats[PERIOD_US] = 1000000 // tick_hz

    def set_grid_trips(self, ov2_q12, ov2_ms, uv2_q12, uv2_ms, of2_mhz, of2_ms, uf2_mhz,
                       uf2_ms):
        """Pickups and clearing times of the tick's fast 1547 regions: voltage pickups in
        Q12 per unit of nominal peak, frequency pickups as mHz offsets from nominal
        (``of2_mhz`` > 0, ``uf2_mhz`` < 0), clearing times in ms; see
        ``grid_measure.set_trips`` (ValueError on a bad value). Context: supervisor."""
        grid_measure.set_trips(self.gm, ov2_q12, ov2_ms, uv2_q12, uv2_ms, of2_mhz, of2_ms,
                               uf2_mhz, uf2_ms)


@micropython.viper
def compute(raw: ptr32, cal: ptr32, pll_st: ptr32, cc: ptr32, prot: ptr32, pw: ptr32,
            gm: ptr32) -> int:
    """Everything between the ADC and the PWM for one tick. Returns 0 to switch with
    the new duties, -1 to keep the PWM off (not enabled), or the latched fault code.
    This is the wiring as written; ``tick_fused_compute.compute`` is the same
    function with every step inlined by ``v2g.build.gen_tick`` (no calls). Context: tick."""
    va = ((raw[0] - cal[0]) * cal[7]) >> 14
    vb = ((raw[1] - cal[1]) * cal[8]) >> 14
    vc = ((raw[2] - cal[2]) * cal[9]) >> 14
    ia = ((raw[3] - cal[3]) * cal[10]) >> 14
    ib = ((raw[4] - cal[4]) * cal[11]) >> 14
    ic = ((raw[5] - cal[5]) * cal[12]) >> 14
    v_dc = ((raw[6] - cal[6]) * cal[13]) >> 14
    _pll_step(pll_st, va, vb, vc)
    # armed while the current controller is enabled (current.ENABLE): may latch a grid
    # trip, which protect_check then returns with its own causes (first cause wins)
    _gm_step(gm, pll_st, prot, va, vb, vc, cc[10])
    code = int(_protect_check(prot, ia, ib, ic, v_dc))
    if code != 0:
        cc[10] = 0  # current.ENABLE: a trip disables the controller until re-enabled
    _current_step(cc, pll_st, va, vb, vc, ia, ib, ic)
    if code != 0:
        return code
    if cc[10] == 0:
        return -1
    _modulate(cc, pll_st, pw, v_dc)
    return 0


@micropython.viper
def _run(m: ptr32, ctx) -> int:
    """The interrupt body: ``m`` is ``Control.mem``, ``ctx`` the tuple ``make_tick``
    built. Viper, so its frame lives on the C stack (a bytecode body this size would
    take its frame from the heap whenever the heap is unlocked). Returns the STATE word.
    Boards run this body with the fused compute inlined (``tick_fused.run``, generated
    from here): keep it free of globals other than consts and ``_compute_fused``, and
    free of ``try`` (the handler in ``make_tick`` catches). Context: tick."""
    # one unpack instead of a subscript per use (each costs a generic runtime call)
    _mem, raw, pw, stats_a, adc_read, pwm_set, pwm_off, hal_ticks_us, cap_a, pll_st = ctx
    stats = ptr32(stats_a)
    t0 = int(hal_ticks_us())
    adc_read(raw)
    state = int(_compute_fused(m))
    if state == 0:
        pwm_set(pw)
        stats[STATE] = 1
    else:
        pwm_off()
        if state > 0:
            stats[STATE] = state
        else:
            stats[STATE] = 0
    left = stats[CAP_LEFT]
    if left > 0:  # waveform capture armed (sync check, diagnostics): 4 words per tick
        cap = ptr32(cap_a)
        r = ptr32(raw)
        k = (CAPTURE_SAMPLES - left) << 2
        cap[k] = r[0]
        cap[k + 1] = r[1]
        cap[k + 2] = r[2]
        cap[k + 3] = ptr32(pll_st)[7]  # pll.THETA after this tick's step
        stats[CAP_LEFT] = left - 1
    # ticks_us() wraps at 2**30 on every port (time.ticks_* period), so the masked
    # difference is ticks_diff() without the call
    cost = (int(hal_ticks_us()) - t0) & _COUNT_MASK
    stats[COST_US] = cost
    if cost > stats[COST_MAX_US]:
        stats[COST_MAX_US] = cost
    if cost > stats[PERIOD_US]:
        stats[OVERRUNS] = stats[OVERRUNS] + 1
    stats[COUNT] = (stats[COUNT] + 1) & _COUNT_MASK
    return state


@micropython.viper
def _failed(ctx):
    """After an exception escaped the body (a HAL driver raised): PWM off, count it, keep
    the heartbeat going. Context: tick (the handler's except clause)."""
    ctx[6]()  # hal.pwm_off()
    stats = ptr32(ctx[3])
    stats[ERRORS] = stats[ERRORS] + 1
    stats[COUNT] = (stats[COUNT] + 1) & _COUNT_MASK


def arm_capture(ctl):
    """Start a waveform capture of CAPTURE_SAMPLES ticks into ``ctl.cap`` (raw va, vb,
    vc and the PLL angle per tick). Returns the sample count. Context: supervisor/REPL."""
    ctl.stats[CAP_LEFT] = CAPTURE_SAMPLES
    return CAPTURE_SAMPLES


def capture_left(ctl):
    """Samples still to take (0: ``ctl.cap`` holds a complete capture)."""
    return ctl.stats[CAP_LEFT]


def make_tick(hal, ctl, inline=True):
    """Bind the HAL and the arrays into the interrupt handler ``tick(arg)``. Context: boot,
    before the timer starts (ISR rule: create every object the handler needs first).

    The handler takes one argument (the timer, unused: the sim passes None) and is a
    viper closure over three names (a closure call with more than a handful of
    closed-over names plus arguments would build a heap array on every tick). It runs
    the body inside ``try``: an ISR must not raise, so an exception (a HAL driver's)
    turns the PWM off and is counted in STATS ERRORS. The body is ``tick_fused.run``,
    i.e. ``_run`` with the fused compute inlined, so a tick calls nothing but the HAL;
    ``inline=False`` runs ``_run`` as written (the reference the tests compare with)."""
    ctx = (ctl.mem, ctl.raw, ctl.pw, ctl.stats, hal.adc_read, hal.pwm_set, hal.pwm_off,
           hal.ticks_us, ctl.cap, ctl.pll)
    body = tick_fused.run
    if not inline:
        global _compute_fused
        import tick_fused_compute

        _compute_fused = tick_fused_compute.compute
        body = _run
    mem = ctl.mem

    @micropython.viper
    def tick(_arg):
        try:
            body(mem, ctx)
        except Exception:  # noqa: BLE001 - an ISR must not raise: outputs safe, count it
            _failed(ctx)

    return tick
