"""Limits over a session on the real firmware (``v2g sim board``), through the daemon's
mapping (``SessionMapping``) on a ``LinkPeer`` over the board's link pty: limit changes
from the car (max discharge power, SoC at its floor) and from the CSMS (setpoint,
discharge limit). The exported power never exceeds the tightest limit in force for longer
than one supervisor period plus the current ramp, and no export at the car's SoC floor.

No namespaces and no JVM: the car's and the CSMS's inputs are the mapping's own entry
points (``update_ev``, ``update_csms``), which the SECC and the OCPP client call.
"""

import asyncio
import time

from v2g.gateway.board_rig import Rig
from v2g.gateway.session import SessionMapping
from v2g.link import open_serial

STEPS = [  # (what changes, kwargs, expected export W)
    ("csms", {"setpoint_w": -7000}, 7000),
    ("ev", {"max_discharge_w": 4000}, 4000),
    ("csms", {"discharge_limit_w": 2500}, 2500),
    ("ev", {"max_discharge_w": 6000}, 2500),
    ("csms", {"clear": True, "setpoint_w": -5000}, 5000),
    ("ev", {"soc": 30.0}, 0),  # at the car's floor (30 %): no discharge
]


async def _run(rig):
    peer = await open_serial(rig.link)
    await peer.open(timeout=15)
    images = []
    stop = asyncio.Event()

    async def record():
        n = -1
        while not stop.is_set():
            if peer.images != n and peer.image:
                n = peer.images
                images.append(dict(peer.image, host_t=time.monotonic()))
            await asyncio.sleep(0.002)

    rec = asyncio.ensure_future(record())
    m = SessionMapping(peer, rated_w=11000)
    m.start()
    m.update_ev(max_charge_w=11000, max_discharge_w=11000, soc=60.0, soc_min=30.0)
    await m.begin(1)
    end = time.monotonic() + 20
    while not (peer.image and peer.image["state"] == 4 and peer.image["contactor_status"] == 2):
        assert time.monotonic() < end, ("not ENERGIZED after the session start", peer.image)
        await asyncio.sleep(0.05)
    plant = []
    for kind, kw, want in STEPS:
        t = time.monotonic()
        if kind == "ev":
            m.update_ev(**kw)
        else:
            m.update_csms(**kw)
        end = t + 5
        while time.monotonic() < end:
            img = peer.image
            if img and abs(-img["p_cmd_w"] - want) <= 1:
                break
            await asyncio.sleep(0.01)
        settle = time.monotonic() - t
        await asyncio.sleep(0.3)
        p = await asyncio.get_running_loop().run_in_executor(None, rig.plant)
        plant.append((kind, kw, want, settle, p["p_w"]))
        print("%s %s: firmware at %d W export after %.3f s; measured at the plant %.1f W"
              % (kind, kw, want, settle, -p["p_w"]))
        assert settle < 5, ("the firmware did not reach %d W export" % want, peer.image)
    stop.set()  # the images of the session only (after SESSION stop the gate holds power)
    await rec
    await m.end("test")
    await m.stop()
    await peer.close()
    peer.serial.close()
    return images, plant


def test_exported_power_never_exceeds_the_tightest_limit(tmp_path, micropython_exe):
    rig = Rig(None, tmp_path)
    try:
        rig.start_board()
        images, plant = asyncio.run(_run(rig))
    finally:
        rig.close()
    for kind, kw, want, settle, p_w in plant:
        assert abs(-p_w - want) <= max(0.01 * want, 30), (kind, kw, want, p_w)
    # image by image: the command in force never exceeds the EV limit the firmware holds
    # (its own clamp) one supervisor period (one image) after that limit is in the image
    over = [(a["ev_max_discharge_w"], b["p_cmd_w"]) for a, b in zip(images, images[1:])
            if -b["p_cmd_w"] > a["ev_max_discharge_w"] + 1]
    assert not over, over[:5]
    # at the SoC floor the discharge limit the firmware holds is 0 and nothing is exported
    last = images[-10:]  # the last 0.1-0.2 s (the floor step settled 0.3 s before)
    assert all(img["p_cmd_w"] >= 0 for img in last), [
        (i["p_cmd_w"], i["state"], i["ev_max_discharge_w"], i["setpoint_id"]) for i in last]
    print("%d register images checked" % len(images))
