"""Robustness of the daemon's Modbus server under a fuzzer (``v2g.gateway.fuzz``):
grammar- and mutation-based frames, slowloris, 50 connections, half-open sockets, while a
well-behaved client polls. 0 crashes (the daemon runs), 0 hangs (a fresh client reads
40001 after), every well-formed request on the checked connection answered, the link
still up, the poller's worst response printed (asserted only against a generous bound:
the machine is shared). Then the load figure (8 clients, 100 registers, 10 Hz) against
the same daemon, printed.

Reduced form here (``V2G_FUZZ_FRAMES``, default 5000); ``make fuzz`` runs 100 000.
"""

import os

from support.gateway_rig import Rig
from v2g.gateway import bench, fuzz

FRAMES = int(os.environ.get("V2G_FUZZ_FRAMES", "5000"))


def test_fuzz_no_crash_no_hang_then_load(tmp_path, micropython_exe):
    rig = Rig(tmp_path, micropython_exe).start()
    try:
        res = fuzz.run("127.0.0.1", rig.port, frames=FRAMES, seed=7,
                       abuse_every=max(1000, FRAMES // 20))
        print("modbus fuzz:", res)
        assert rig.daemon.poll() is None, "daemon crashed:\n" + rig.log_text()[-2000:]
        assert res["alive"], "daemon hangs after the fuzz"
        assert res["frames"] == FRAMES and res["abuse_rounds"] >= 1
        assert res["poll_errors"] == 0
        assert res["unanswered"] == 0 and res["answered"] == FRAMES // 10
        assert res["poll_max_ms"] < 5000  # generous; the figure itself is the report
        with rig.client() as c:
            assert c.read_holding_registers(0, count=1).registers == [2]
            assert c.read_holding_registers(42, count=1).registers == [1]  # link UP
        load = bench.modbus_load(port=rig.port, seconds=3.0)
        print("modbus load (8 clients, 100 registers, 10 Hz, 3 s):", load)
        assert load["errors"] == 0 and load["requests"] >= 8 * 25
    finally:
        assert rig.stop() == 0
