"""The link on the virtual board (``v2g sim board``), end to end: the host library's
``LinkPeer`` on the ``link:`` pty, the firmware's link service on the board, the
supervisor behind it, ``v2g status`` on the console pty.

A board with a link and no daemon stays de-energized with its contactors open; after the
handshake it energizes, mirrors its state in the register image every supervisor period,
applies a setpoint once (the same id again is a duplicate), refuses a bad config naming
the key and stores a good one, opens its contactors on a session stop, and on a silent
daemon (heartbeat timeout) ceases and opens again.
"""

import asyncio
import json
import time

from support.virtual_board import board_eval, start_board, stop_board, v2g
from v2g.link import open_serial
from v2g.link.codec import msgs

CONFIG = {"enter_service_delay_s": 0.2, "enter_service_ramp_s": 0.0}


def _status(port):
    r = v2g("status", "--port", port, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


async def _wait(pred, timeout_s, what):
    end = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("no %s within %.1f s" % (what, timeout_s))
        await asyncio.sleep(0.02)


def _journal(port, kind):
    return board_eval(port, "[e[4] for e in _app.journal.items if e[1] == %r]" % kind)


def test_link_on_the_virtual_board(tmp_path, micropython_exe):
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "config.json").write_text(json.dumps(CONFIG))
    proc, port, flash = start_board(flash)
    try:
        board_eval(port, "1")
        time.sleep(1.0)  # grid locked by now: only the link holds the unit back
        st = _status(port)
        assert st["link"]["state"] == "DOWN" and st["state"] == "WAIT_GRID"
        assert st["contactor"]["status"] == 1 and st["meas"]["p_cmd_w"] == 0
        asyncio.run(_session(proc.link_port, port, flash))
        st = _status(port)
        c = st["link"]["counters"]
        print("board link counters", c)
        assert st["link"]["state"] == "LOST" and c["rx_frames"] > 10 and c["tx_frames"] > 100
        assert c["crc_errors"] == 0 and c["hb_gaps"] >= 1
        assert st["state"] == "WAIT_GRID" and st["contactor"]["status"] == 1
        r = v2g("status", "--port", port)
        assert r.returncode == 0 and "\nlink        LOST" in r.stdout, r.stdout
    finally:
        stop_board(proc)


async def _session(link_port, port, flash):
    peer = await open_serial(link_port, nonce=0x5EED)
    hello = await peer.open(timeout=10)
    assert hello["version"] == msgs.VERSION and hello["tail"].startswith("v2g-fw")
    await _wait(lambda: peer.image is not None and peer.image["state"] == 4, 10,
                "ENERGIZED in the register image")
    img = peer.image
    assert img["contactor_status"] == 2 and img["flags"] & msgs.FLAG_LOCKED
    assert not img["flags"] & (msgs.FLAG_LINK_LOST | msgs.FLAG_LINK_DEGRADED)
    assert 59900 < img["f_mhz"] < 60100 and 950 < img["v_min_mpu"] <= img["v_max_mpu"] < 1050
    # the image comes every supervisor period (10 ms of the board's clock)
    n0, t0 = peer.images, time.monotonic()
    await asyncio.sleep(1.0)
    rate = (peer.images - n0) / (time.monotonic() - t0)
    print("register images per second: %.0f" % rate)
    assert rate > 50

    # a setpoint with an id: applied once; the same id again changes nothing
    r = await peer.setpoint(4242, -3000, 0)
    assert r.status == "OK", r
    await _wait(lambda: peer.image["setpoint_id"] == 4242 and peer.image["p_cmd_w"] == -3000,
                2, "the setpoint in the image")
    r = await peer.setpoint(4242, -6000, 0)
    assert r.status == "DUPLICATE", r
    await asyncio.sleep(0.2)
    assert peer.image["p_cmd_w"] == -3000 and peer.image["setpoint_id"] == 4242
    assert _journal(port, "setpoint_accepted") == ["id=L4242 p_w=-3000 q_var=0"]
    assert _journal(port, "setpoint_duplicate") == ["id=L4242"]
    r = await peer.setpoint(4243, -60000, 0)
    assert r.status == "REJECTED" and "outside" in r.detail

    # config: a bad one names the key and changes nothing; a good one is stored
    before = (flash / "config.json").read_text()
    r = await peer.config({3: 60000})  # p_rated_w
    assert r.status == "REJECTED" and "p_rated_w" in r.detail and "60000" in r.detail, r
    assert (flash / "config.json").read_text() == before
    r = await peer.config({35: 5})  # enter_service_delay_s 0.5
    assert r.status == "OK", r
    assert json.loads((flash / "config.json").read_text())["enter_service_delay_s"] == 0.5

    # EV limits reach the supervisor's clamp
    r = await peer.ev_limits(11000, 2000, 200)
    assert r.status == "OK", r
    await _wait(lambda: peer.image["p_cmd_w"] == -2000 and
                peer.image["ev_max_discharge_w"] == 2000, 2, "the EV limit in force")

    # session stop: power ceases, the contactors open
    t_stop = time.monotonic()
    r = await peer.session(False, 7)
    assert r.status == "OK", r
    await _wait(lambda: peer.image["contactor_status"] == 1 and peer.image["state"] == 1,
                1.0, "contactors open after the session stop")
    print("session stop -> contactors open in the image after %.3f s"
          % (time.monotonic() - t_stop))
    assert peer.image["p_cmd_w"] == 0
    await asyncio.sleep(0.5)
    assert peer.image["contactor_status"] == 1  # and it stays open (no session)

    # session start: energizes again
    r = await peer.session(True, 8)
    assert r.status == "OK", r
    await _wait(lambda: peer.image["state"] == 4, 10, "ENERGIZED again after the start")
    print("peer counters", peer.counters, "board's", peer.peer_counters)

    # the daemon falls silent (as after kill -9): the board ceases, then opens
    peer.serial.close()
    await peer.close()
    end = time.monotonic() + 3
    while time.monotonic() < end:
        st = board_eval(port, "(_app.supervisor.state, _app.supervisor.contactor_status())")
        if st == ("WAIT_GRID", 1):
            break
        await asyncio.sleep(0.1)
    assert st == ("WAIT_GRID", 1), st
    assert board_eval(port, "_app.supervisor.link_state") == "LOST"


def test_session_stop_over_the_link_with_a_weld_reads_stuck_within_1s(tmp_path,
                                                                      micropython_exe):
    flash = tmp_path / "flash"
    flash.mkdir()
    (flash / "config.json").write_text(json.dumps(CONFIG))
    sc = tmp_path / "weld.json"
    sc.write_text(json.dumps({"name": "weld", "duration_s": 600.0,
                              "grid": {"v_nom_ln_rms": 230.0, "f_nom_hz": 60},
                              "events": [{"t_s": 0.1, "contactor_weld": True}]}))
    proc, port, flash = start_board(flash, extra=("--scenario", sc))
    try:
        board_eval(port, "1")

        async def run():
            peer = await open_serial(proc.link_port, nonce=77)
            await peer.open(timeout=10)
            await _wait(lambda: peer.image is not None and peer.image["state"] == 4, 10,
                        "ENERGIZED")
            t0 = time.monotonic()
            r = await peer.session(False, 1)
            assert r.status == "OK", r
            await _wait(lambda: peer.image["contactor_status"] == 0, 1.0,
                        "contactor status 0 (STUCK) in the register image")
            dt = time.monotonic() - t0
            print("session stop -> STUCK in the register image after %.3f s" % dt)
            assert peer.image["last_fault"].rstrip(b"\0") == b"0x32"
            await peer.close()

        asyncio.run(run())
    finally:
        stop_board(proc)
