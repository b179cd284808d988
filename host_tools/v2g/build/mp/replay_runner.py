# Runs ON the MicroPython unix runtime (not CPython): the firmware's own PLL over
# samples from stdin. Started by `v2g replay --runtime micropython` with
# MICROPYPATH=.frozen:<repo>/firmware:... so `import pll` is the firmware module.
#
# argv: TICK_HZ F_NOM_HZ   each an integer, or 'x' + 16 hex digits: the bits of an
#                          IEEE double (exact, so both runtimes see the same value)
# stdin: one line per tick: "va vb vc" (per-unit Q12 ints, 4096 = nominal peak)
# stdout: one line per tick: "theta_turn28 f_inc_q6 v_pos_q12 locked" (pll.raw_outputs)
#         then a last line "end N" with the number of ticks run.
# Exit 1 with a message on stderr on malformed input.
#
# Kept to the MicroPython subset: no f-strings, no numpy; reads stdin in large chunks
# because stream readline() on the unix port reads one byte per system call.

import sys
import struct

import pll

CHUNK = 4096


def num(text):
    if text[:1] == "x":
        return struct.unpack("<d", struct.pack("<Q", int(text[1:], 16)))[0]
    return int(text)


def main():
    if len(sys.argv) != 3:
        sys.stderr.write("usage: replay_runner.py TICK_HZ F_NOM_HZ < samples\n")
        sys.exit(1)
    tick_hz = num(sys.argv[1])
    f_nom_hz = num(sys.argv[2])
    st = pll.new_state()
    pll.init(st, tick_hz, f_nom_hz)
    step = pll.step
    raw = pll.raw_outputs
    rd = sys.stdin.buffer.read
    wr = sys.stdout.write
    rest = b""
    n = 0
    while True:
        data = rd(CHUNK)
        if not data:
            break
        data = rest + data
        lines = data.split(b"\n")
        rest = lines.pop()
        out = []
        for line in lines:
            f = line.split()
            if len(f) != 3:
                sys.stderr.write("replay_runner: line %d: expected 3 ints, got %r\n" % (n + 1, line))
                sys.exit(1)
            step(st, int(f[0]), int(f[1]), int(f[2]))
            out.append("%d %d %d %d\n" % raw(st))
            n += 1
        wr("".join(out))
    if rest.strip():
        sys.stderr.write("replay_runner: last line has no newline: %r\n" % rest)
        sys.exit(1)
    wr("end %d\n" % n)


main()
