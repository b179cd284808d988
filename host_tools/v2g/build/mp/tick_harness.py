# Benchmark harness for the control tick. Runs ON the MicroPython unix runtime (started by
# `v2g bench` with MICROPYPATH=.frozen:<repo>/firmware:...), and imports under CPython too
# (through the `micropython` stand-in) so host code can build the very same Control and
# input samples, e.g. for the C reference's generated header.
#
# usage: tick_harness.py N [--bytecode] [--heap-lock] [--wired] [--timing]
#                         [--compute-ticks M] [--twin DIR]
#   N                 ticks to run through tick.make_tick (the ISR closure)
#   --bytecode        run the bytecode twin of firmware/ (v2g.build.bytecode_twin); the twin's
#                     folder must come first on the path: --twin DIR puts it there
#   --heap-lock       run the N ticks under micropython.heap_lock()
#   --timing          tick_ns from timed segments (see Timing below)
#   --wired           run the interrupt body as written (tick._run calling the fused
#                     compute) instead of the generated tick_fused.run; same results
#   --compute-ticks M then time tick_fused_compute.compute (tick.compute with its
#                     steps inlined, as the interrupt body has it) alone M times on a fresh Control (default N;
#                     0 skips it, as the instruction counts do)
# stdout: one line of key=value pairs (strings in double quotes), e.g.
#   impl=viper ticks=100000 elapsed_ns=... tick_ns=... compute_ticks=... compute_ns=...
#   alloc_bytes=0 alloc_total_bytes=0 heap_lock=ok errors=0 state=1 n_set=... n_off=...
#   checksum=... runtime="..."
# Timing: elapsed_ns is the whole N-tick loop and tick_ns = elapsed_ns / N; with --timing,
# tick_ns is instead the median of TIME_SEGMENTS timed runs of N / TIME_SEGMENTS ticks on
# a fresh control, after the N-tick loop (so instruction counts leave it out), and
# tick_ns_min the fastest segment.
# Allocation figures, all over the N-tick loop (gc disabled meanwhile):
#   alloc_bytes        gc.mem_alloc() difference: what stays allocated afterwards;
#   alloc_total_bytes  micropython.mem_total() difference: every byte requested from the
#                      heap, temporaries freed at once included (-1 where the build has
#                      no mem_total);
#   heap_lock          off | ok | MemoryError (a MemoryError escaped the tick) | swallowed
#                      (the tick's own `except Exception` caught one: stats ERRORS rose);
#   locked_ticks       ticks completed under the lock before it failed (= N when ok);
#   alloc_ticks        after a failed locked run: how many of probe_ticks (1000) ticks,
#                      each run under its own lock, needed the heap.
# checksum: sum of the words of the PLL, current, protection, PWM and grid-measure state
# arrays, each weighted by its running index from 1, mod 2**30 (the C reference computes
# the same).
# Exit 1 on bad usage.
#
# Configuration: 10 kHz tick, 50 Hz grid, 16-bit ADC with offset 32768 and gain_q14 8192
# on all 7 channels (q12 = (raw - 32768) / 2, so 1.0 pu = 8192 counts), PWM period 2500
# counts, d_min 20, 2.46 pu DC link; the converter exports p = -0.7 pu with 0.7 pu
# currents in anti-phase to the voltages (the current loop sits near its steady state).
# The HAL (BenchHal) is viper in every mode, like a board's native ADC/PWM drivers, so
# that viper vs the bytecode twin compares firmware/ alone.
# The input samples are integer-only (the firmware's own sine table, an LCG for a few
# counts of noise), so every runtime and the C reference get the very same words.

import sys

if sys.implementation.name != "micropython" and __name__ == "__main__":
    # a script under CPython: the `micropython` stand-in and firmware/ go on the path
    # (an importer, such as v2g.bench.tick, sets that up itself: v2g.common.runtime)
    _here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    for _p in (_here + "/../../../firmware", _here + "/../shim"):
        if _p not in sys.path:
            sys.path.insert(0, _p)

import gc
import time
from array import array

import micropython

TICK_HZ = 10000
F_GRID_HZ = 50
CHANNELS = 7
ADC_OFFSET = 32768
GAIN_Q14 = 8192
COUNTS_PER_PU = 8192  # (counts * 8192) >> 14 = counts / 2; 4096 q12 = 1.0 pu
PWM_PERIOD = 2500
PWM_D_MIN = 20
CC_PARAMS = (5242, 263, 327, 4505, 2097, 1 << 25)  # kp, ki, wL, i_max, ramp, int_max
PROT_PARAMS = (8192, 15114)  # oc_trip_q12, vdc_trip_q12
V_AMP_COUNTS = COUNTS_PER_PU  # 1.0 pu phase voltages
I_AMP_COUNTS = 5734  # 0.7 pu phase currents
VDC_COUNTS = 20152  # 2.46 pu DC link (10076 q12)
P_CMD_Q12 = -2867  # -0.7 pu: V2G export
CYCLES = 4  # grid cycles of precomputed samples, cycled through
NOISE_COUNTS = 8  # +/- uniform, from the LCG below
SEED = 12345
CHECK_MOD = 1 << 30
TIME_SEGMENTS = 5  # tick_ns: median of this many timed parts of the run

_T28 = 1 << 28
_THIRD28 = (1 << 28) // 3
_HALF28 = 1 << 27
_QUARTER28 = 1 << 26
_THETA0 = 0x1234567  # grid angle of the first sample, t28


def _sin_q14(tab, t):
    """sin of t (t28) in Q14 from the firmware's table, interpolated as pll.step does."""
    t &= _T28 - 1
    k = t >> 19
    s0 = tab[k]
    return s0 + (((tab[k + 1] - s0) * ((t >> 4) & 0x7FFF)) >> 15) - 16384


def make_samples():
    """CYCLES grid cycles of raw ADC words, CHANNELS per tick, as array('i')."""
    from tables import SIN_Q14_B

    per_cycle = TICK_HZ // F_GRID_HZ
    n = per_cycle * CYCLES
    out = array("i", bytes(4 * CHANNELS * n))
    x = SEED
    w = 0
    for k in range(n):
        th = _THETA0 + ((k % per_cycle) << 28) // per_cycle
        for ph in range(3):
            c = _sin_q14(SIN_Q14_B, th - ph * _THIRD28 + _QUARTER28)  # cos, Q14
            x = (x * 1664525 + 1013904223) & 0xFFFFFFFF
            out[w + ph] = ADC_OFFSET + ((V_AMP_COUNTS * c) >> 14) + ((x >> 24) & 15) - NOISE_COUNTS
            x = (x * 1664525 + 1013904223) & 0xFFFFFFFF
            # current in anti-phase: export at unity power factor
            out[w + 3 + ph] = (ADC_OFFSET - ((I_AMP_COUNTS * c) >> 14) + ((x >> 24) & 15)
                               - NOISE_COUNTS)
        out[w + 6] = ADC_OFFSET + VDC_COUNTS
        w += CHANNELS
    return out


def make_control():
    """The Control of a running unit: enabled, commanded to export 0.7 pu."""
    import current
    import tick

    ctl = tick.Control(TICK_HZ, F_GRID_HZ, [ADC_OFFSET] * CHANNELS, [GAIN_Q14] * CHANNELS,
                       PWM_PERIOD, PWM_D_MIN, CC_PARAMS, PROT_PARAMS)
    current.set_enable(ctl.cc, 1)
    current.set_power(ctl.cc, P_CMD_Q12, 0)
    return ctl


def state_arrays(ctl):
    """The arrays the checksum covers, in order (the C reference uses the same order)."""
    return (ctl.pll, ctl.cc, ctl.prot, ctl.pw, ctl.gm)


def checksum(arrays):
    """Sum of words weighted by their running index (from 1), mod 2**30."""
    s = 0
    i = 0
    for a in arrays:
        for w in a:
            i += 1
            s = (s + i * w) % CHECK_MOD
    return s


def _cpython_ticks_us():
    return (time.monotonic_ns() // 1000) & 0x3FFFFFFF


def _cpython_ticks_diff(a, b):
    return ((a - b + 0x20000000) & 0x3FFFFFFF) - 0x20000000


def _driver(buf):
    """The bench's ADC and PWM drivers: viper closures over one buffer ``buf`` (read
    index, wrap limit, the PWM record, then the samples), so a call costs what a native
    driver's would: no attribute lookup, one cast. Allocates nothing when called."""

    @micropython.viper
    def adc_read(raw: ptr32):  # noqa: F821 (viper type)
        b = ptr32(buf)  # noqa: F821 (viper cast)
        i = b[0]
        raw[0] = b[i]
        raw[1] = b[i + 1]
        raw[2] = b[i + 2]
        raw[3] = b[i + 3]
        raw[4] = b[i + 4]
        raw[5] = b[i + 5]
        raw[6] = b[i + 6]
        i += 7
        if i >= b[1]:
            i = 10  # BenchHal._SRC
        b[0] = i

    @micropython.viper
    def pwm_set(pw: ptr32):  # noqa: F821 (viper type)
        b = ptr32(buf)  # noqa: F821 (viper cast)
        b[2] += 1
        b[4] = pw[2]
        b[5] = pw[3]
        b[6] = pw[4]

    @micropython.viper
    def pwm_off():
        b = ptr32(buf)  # noqa: F821 (viper cast)
        b[3] += 1

    return adc_read, pwm_set, pwm_off


class BenchHal:
    """The tick's HAL: ADC words from a precomputed buffer, PWM calls recorded (see
    ``_driver``). Viper, like the native drivers of a board, so the bench measures the
    firmware. Allocates nothing after construction."""

    _REC = 2  # buf[2:10]: n_set, n_off, duty a, b, c of the last set
    _SRC = 10  # samples from buf[10]

    def __init__(self, samples):
        n = len(samples)
        self.buf = array("i", bytes(4 * (self._SRC + n)))
        self.buf[1] = self._SRC + n - CHANNELS + 1  # wrap limit of the read index
        self.buf[0] = self._SRC
        view = memoryview(self.buf)
        self.rec = view[self._REC:self._SRC]
        self.src = view[self._SRC:]
        for i in range(n):
            self.src[i] = samples[i]
        self.adc_read, self.pwm_set, self.pwm_off = _driver(self.buf)
        self.ticks_us = getattr(time, "ticks_us", _cpython_ticks_us)
        self.ticks_diff = getattr(time, "ticks_diff", _cpython_ticks_diff)


def _mem_alloc():
    f = getattr(gc, "mem_alloc", None)  # CPython has none: report 0
    return f() if f else 0


def _now_ns():
    if hasattr(time, "time_ns"):
        return time.time_ns()
    return time.ticks_us() * 1000  # coarse, and wraps: only for short runs


def _run_ticks(tick, n):
    for _ in range(n):
        tick(None)


def _segment_ns(tick, samples, seg, wired):
    """ns per tick, (median, fastest) of TIME_SEGMENTS timed runs of ``seg`` ticks each,
    on a fresh control (a stall of the machine spoils one segment, not the median)."""
    ctl = make_control()
    isr = tick.make_tick(BenchHal(samples), ctl, inline=not wired)
    times = []
    gc.collect()
    gc.disable()
    for _ in range(TIME_SEGMENTS):
        t0 = _now_ns()
        _run_ticks(isr, seg)
        times.append((_now_ns() - t0) // seg)
    gc.enable()
    times.sort()
    return times[len(times) // 2], times[0]


def _run_compute(compute, n, mem):
    for _ in range(n):
        compute(mem)


def _probe_allocs(isr, ctl, n):
    """Run n ticks, each under its own heap lock; return how many needed the heap (a
    MemoryError escaped the tick or the tick caught one itself)."""
    hits = 0
    for _ in range(n):
        e0 = ctl.stats[6]
        micropython.heap_lock()
        try:
            isr(None)
        except MemoryError:
            hits += 1
            e0 = -1
        micropython.heap_unlock()
        if e0 >= 0 and ctl.stats[6] != e0:
            hits += 1
    return hits


def runtime_string():
    impl = sys.implementation
    v = ".".join(str(x) for x in impl.version[:3])
    if len(impl.version) > 3 and impl.version[3]:
        v += "-" + str(impl.version[3])
    return "%s %s; %s" % (impl.name, v, sys.version)


def bench(n, heap_lock=False, compute_ticks=None, wired=False, timing=False):
    """Run n ticks (and compute_ticks compute() calls, default n); return a dict."""
    import tick
    import tick_fused_compute

    if compute_ticks is None:
        compute_ticks = n
    ctl = make_control()
    samples = make_samples()
    hal = BenchHal(samples)
    isr = tick.make_tick(hal, ctl, inline=not wired)
    errors0 = ctl.stats[6]  # tick.ERRORS
    if sys.implementation.name != "micropython":
        impl = sys.implementation.name
    elif getattr(tick, "_V2G_BYTECODE_TWIN", False):
        impl = "bytecode"
    else:
        impl = "viper"
    res = {"impl": impl, "ticks": n}
    mem_total = getattr(micropython, "mem_total", None)  # cumulative bytes ever allocated
    gc.collect()
    gc.disable()
    t0 = _now_ns()  # (time_ns() itself allocates: read it outside the measured span)
    m0 = mem_total() if mem_total else 0
    a0 = _mem_alloc()
    lock = "off"
    done = n
    if heap_lock:
        done = 0
        micropython.heap_lock()
        try:
            _run_ticks(isr, n)
            lock = "ok"
            done = n
        except MemoryError:
            lock = "MemoryError"
        micropython.heap_unlock()
        if lock == "MemoryError":
            done = ctl.stats[0]  # tick.COUNT: ticks that ran to the end before it
    else:
        _run_ticks(isr, n)
    a1 = _mem_alloc()
    m1 = mem_total() if mem_total else -1
    t1 = _now_ns()
    gc.enable()
    errors = ctl.stats[6] - errors0
    if lock == "ok" and errors:
        lock = "swallowed"  # the tick caught the MemoryError itself and counted it
    res["elapsed_ns"] = t1 - t0
    res["tick_ns"] = (t1 - t0) // n
    if timing and not heap_lock and n >= TIME_SEGMENTS:
        res["tick_ns"], res["tick_ns_min"] = _segment_ns(tick, samples, n // TIME_SEGMENTS,
                                                         wired)
    res["alloc_bytes"] = a1 - a0  # net: what is still allocated
    res["alloc_total_bytes"] = m1 - m0 if mem_total else -1  # includes freed temporaries
    res["heap_lock"] = lock
    if heap_lock:
        res["locked_ticks"] = done
        res["alloc_ticks"] = 0 if lock == "ok" else _probe_allocs(isr, ctl, 1000)
        res["probe_ticks"] = 0 if lock == "ok" else 1000
    res["errors"] = errors
    res["state"] = ctl.stats[5]  # tick.STATE
    res["n_set"] = hal.rec[0]
    res["n_off"] = hal.rec[1]
    res["checksum"] = checksum(state_arrays(ctl))

    # compute() alone on a fresh Control, fixed ADC words (the first sample).
    res["compute_ticks"] = compute_ticks
    if compute_ticks:
        c2 = make_control()
        for i in range(CHANNELS):
            c2.raw[i] = hal.src[i]
        gc.collect()
        t0 = _now_ns()
        _run_compute(tick_fused_compute.compute, compute_ticks, c2.mem)
        t1 = _now_ns()
        res["compute_ns"] = (t1 - t0) // compute_ticks
    res["runtime"] = runtime_string()
    return res


def format_result(res):
    out = []
    for k in ("impl", "ticks", "elapsed_ns", "tick_ns", "tick_ns_min", "compute_ticks", "compute_ns",
              "alloc_bytes", "alloc_total_bytes", "heap_lock", "locked_ticks", "alloc_ticks",
              "probe_ticks", "errors", "state", "n_set",
              "n_off", "checksum", "runtime"):
        if k in res:
            v = res[k]
            out.append("%s=%s" % (k, ('"%s"' % v) if k == "runtime" else v))
    return " ".join(out)


def _usage(msg):
    sys.stderr.write("tick_harness: %s\n" % msg)
    sys.stderr.write("usage: tick_harness.py N [--bytecode] [--heap-lock] [--wired] "
                     "[--timing] [--compute-ticks M] [--twin DIR]\n")
    sys.exit(1)


def main(argv):
    n = None
    bytecode = heap = wired = timing = False
    compute_ticks = None
    twin = None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--bytecode":
            bytecode = True
        elif a == "--heap-lock":
            heap = True
        elif a == "--wired":
            wired = True
        elif a == "--timing":
            timing = True
        elif a in ("--compute-ticks", "--twin"):
            if i + 1 >= len(argv):
                _usage("%s needs a value" % a)
            i += 1
            if a == "--twin":
                twin = argv[i]
            else:
                try:
                    compute_ticks = int(argv[i])
                except ValueError:
                    _usage("--compute-ticks: not an integer: %r" % argv[i])
        elif n is None:
            try:
                n = int(a)
            except ValueError:
                _usage("N: not an integer: %r" % a)
        else:
            _usage("unexpected argument %r" % a)
        i += 1
    if n is None or n < 1:
        _usage("N (ticks, >= 1) is required")
    if compute_ticks is not None and compute_ticks < 0:
        _usage("--compute-ticks must be >= 0")
    if twin is not None:
        sys.path.insert(0, twin)
    import tick

    is_twin = getattr(tick, "_V2G_BYTECODE_TWIN", False)
    if bytecode and not is_twin:
        _usage("--bytecode: the bytecode twin is not first on the path (give --twin DIR)")
    if not bytecode and is_twin:
        _usage("the bytecode twin is on the path but --bytecode was not given")
    print(format_result(bench(n, heap, compute_ticks, wired, timing)))


if __name__ == "__main__":
    main(sys.argv[1:])
