"""Mutated frames into the board's link receive path: 0 exceptions, 0 hangs, every bad
frame dropped and counted, the link still working afterwards; the same counters on the
MicroPython unix runtime and under CPython (same xorshift32 byte stream).

10 000 frames by default; ``V2G_LINK_FUZZ_FULL=1`` runs 100 000 (the target figure).
"""

import os
import subprocess
import sys

from support.link_helpers import HERE, board_env
from v2g.link.codec import msgs

RUNNER = HERE / "mp_link_fuzz.py"
N = 100000 if os.environ.get("V2G_LINK_FUZZ_FULL") else 10000


def _check(out):
    lines = out.strip().splitlines()
    head = lines[0].split()
    assert head[0] == "fuzz" and int(head[1]) == N
    fields = dict(kv.split("=") for kv in head[2:5])
    assert fields["escaped"] == "0" and fields["handler_errors"] == "0"
    counters = dict(zip(msgs.COUNTERS, map(int, head[5:])))
    assert counters["crc_errors"] > N // 20 and counters["malformed"] > N // 20
    assert counters["unknown"] > 0 and counters["duplicates"] + counters["out_of_order"] > 0
    assert lines[1] == "after applied=1 state=1"
    return counters


def test_fuzz_board_decoder_micropython(run_micropython):
    r = run_micropython(RUNNER, (N, 12345), timeout=120 if N == 10000 else 900)
    assert r.returncode == 0, r.stderr.decode()
    mp = _check(r.stdout.decode())
    cp = subprocess.run([sys.executable, str(RUNNER), str(N), "12345"], capture_output=True,
                        text=True, env=board_env(), timeout=900)
    assert cp.returncode == 0, cp.stderr
    # CPython runs the viper loops as plain Python on the bytearrays themselves, where an
    # out-of-range index would raise: it also proves the bounds checks
    assert _check(cp.stdout) == mp
    print("fuzzed %d frames: %s" % (N, mp))
