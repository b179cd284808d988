"""Randomized long run of the tick's hot paths; prints checksums to compare runtimes.

Runs unchanged on MicroPython (viper hot paths) and on CPython (through the
``micropython`` stand-in), so the two outputs must match line for line. Inputs come
from an integer xorshift generator (identical everywhere) and cover: normal grids at
random amplitude, frequency (40-70 Hz, so the phase accumulator wraps every cycle)
and phase jumps; full-scale and garbage ADC words; DC link from zero to full scale;
power commands far beyond the limits (integrators and modulator saturate); trips and
re-enables.

Usage: ``micropython fuzz_runner.py SEED TICKS [TICK_HZ [IMPL]]`` (or ``python``, with
the shim and firmware on the path). IMPL is ``fused`` (default: ``tick_fused_compute.compute``,
what the interrupt runs) or ``wired`` (``tick.compute``, the steps called one by one)
or ``thumb`` (``tick_fused_thumb_compute.compute``, the fused compute calling the asm_thumb
kernels of ``tick_thumb``: Thumb cores only); all must print the same lines. Prints ``k <tick> <checksum>`` every 10 000 ticks, a ``cover`` line counting the
ticks spent switching, saturated, tripped, idle and locked, and a final
``end <checksum> <digest> <ticks>`` line.
Context: host test tool.
"""

import sys

import current
import pll
import protect_fast
import tick
import tick_fused_compute
from tables import SIN_Q14_B

_M32 = 0xFFFFFFFF
_MOD = 0x3FFFFFFF


class Rng:
    def __init__(self, seed):
        self.x = (seed * 2654435761 + 1) & _M32 or 1

    def next(self):
        x = self.x
        x ^= (x << 13) & _M32
        x ^= x >> 17
        x ^= (x << 5) & _M32
        self.x = x
        return x

    def below(self, n):
        return self.next() % n


def sin_q14(angle_t28):
    k = angle_t28 >> 19
    s0 = SIN_Q14_B[k]
    return s0 + (((SIN_Q14_B[k + 1] - s0) * ((angle_t28 >> 4) & 0x7FFF)) >> 15) - 16384


def digest(arrays):
    h = 0
    for arr in arrays:
        for i in range(len(arr)):
            h = (h * 31 + (arr[i] & _M32) + i) & _MOD
    return h


def main(seed, ticks, tick_hz, impl="fused"):
    if impl not in ("fused", "wired", "thumb"):
        raise SystemExit("IMPL must be fused, wired or thumb, not %r" % impl)
    fused = tick_fused_compute.compute
    if impl == "thumb":
        import tick_fused_thumb_compute

        fused = tick_fused_thumb_compute.compute
    rng = Rng(seed)
    ctl = tick.Control(tick_hz, 50, [32768] * 7, [8192] * 7, 2500, 20,
                       (5242, 263, 327, 4505, 2097, 1 << 25), (8192, 15114))
    # fast 1547 regions at the edges of the fuzzed ranges (amplitude 0-2 pu, 40-70 Hz),
    # so that they trip now and then instead of latching the run for good
    ctl.set_grid_trips(7782, 160, 410, 160, 18000, 160, -9000, 160)
    raw = ctl.raw
    phase = 0
    inc = pll.inc_from_mhz(50000, tick_hz)
    amp = 8192  # ADC counts of the voltage peak: 1 pu
    i_amp = 4096
    i_shift = 0
    vdc = 10076 * 2  # 2.46 pu in counts (gain 8192 -> 0.5 q12 per count)
    mode = 0  # 0 grid, 1 garbage ADC words, 2 full scale
    seg_left = 0
    h = 0
    words = 0
    n_sat = n_trip = n_idle = n_lock = n_run = 0
    for k in range(ticks):
        if seg_left <= 0:
            seg_left = 200 + rng.below(6000)
            r = rng.below(16)
            mode = 1 if r == 0 else (2 if r == 1 else 0)
            inc = pll.inc_from_mhz(40000 + rng.below(30001), tick_hz)
            amp = rng.below(16384)
            i_amp = rng.below(16384)
            i_shift = rng.below(1 << 28)
            vdc = rng.below(32768)
            if rng.below(4) == 0:
                phase = (phase + rng.below(1 << 28)) & 0xFFFFFFF  # phase jump
            c = rng.below(8)
            if c == 0:
                current.set_enable(ctl.cc, 0)
            elif c < 6:
                current.set_enable(ctl.cc, 1)
            if c == 6:
                protect_fast.clear(ctl.prot)
                current.set_enable(ctl.cc, 1)
            current.set_power(ctl.cc, rng.below(16384) - 8192, rng.below(16384) - 8192)
        seg_left -= 1
        phase = (phase + inc) & 0xFFFFFFF
        if mode == 0:
            for ch in range(3):
                a = (phase - ch * 89478485) & 0xFFFFFFF  # 120 degrees apart
                raw[ch] = 32768 + ((amp * sin_q14((a + 67108864) & 0xFFFFFFF)) >> 14) \
                    + rng.below(64) - 32
                b = (a + i_shift) & 0xFFFFFFF
                raw[3 + ch] = 32768 + ((i_amp * sin_q14(b)) >> 14) + rng.below(64) - 32
            raw[6] = vdc + rng.below(16)
        elif mode == 1:
            for ch in range(7):
                raw[ch] = rng.below(65536)
        else:
            for ch in range(7):
                raw[ch] = 65535 if rng.below(2) else 0
        if impl != "wired":
            state = fused(ctl.mem)
        else:
            state = tick.compute(raw, ctl.cal, ctl.pll, ctl.cc, ctl.prot, ctl.pw, ctl.gm)
        h = (h * 131 + state + ctl.pll[pll.THETA] + ctl.pw[2] + ctl.pw[3] * 3 + ctl.pw[4] * 7
             + ctl.cc[current.I_D_REF] + ctl.cc[current.P_MEAS]) & _MOD
        words += 1
        if state > 0:
            n_trip += 1
        elif state < 0:
            n_idle += 1
        else:
            n_run += 1
            n_sat += ctl.cc[current.SAT]
        n_lock += ctl.pll[pll.LOCKED]
        if (k + 1) % 10000 == 0:
            print("k", k + 1, h, digest((ctl.pll, ctl.cc, ctl.prot, ctl.pw, ctl.gm)))
    print("cover run=%d sat=%d trip=%d idle=%d locked=%d trips=%d" % (
        n_run, n_sat, n_trip, n_idle, n_lock, ctl.prot[protect_fast.COUNT]))
    print("end", h, digest((ctl.pll, ctl.cc, ctl.prot, ctl.pw, ctl.gm, ctl.cal)), words)


if __name__ == "__main__":
    argv = sys.argv
    main(int(argv[1]), int(argv[2]), int(argv[3]) if len(argv) > 3 else 10000,
         argv[4] if len(argv) > 4 else "fused")
