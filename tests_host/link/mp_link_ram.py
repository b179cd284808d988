"""RAM and time of the board's link service (``services.link_service``) on the runtime it
runs on: the sim board's App booted as on a board, then ``attach`` (session, buffers,
wiring) measured with ``gc.mem_alloc``, then register images built and sent (allocation
per image and time per image). Prints one JSON line.
Usage: micropython mp_link_ram.py BOARD_JSON ROOT
"""

import gc
import json
import sys
import time

import app
import hal as sim_hal
from services import link_service


def main():
    with open(sys.argv[1]) as f:
        board = json.load(f)
    board["no_log"] = True
    a = app.App(sim_hal, board, root=sys.argv[2])
    sent = [0]

    def write(mv):
        sent[0] += len(mv)

    gc.collect()
    m0 = gc.mem_alloc()
    lk, wiring, clock = link_service.attach(a, write)
    gc.collect()
    m1 = gc.mem_alloc()
    # a session (as after HELLO), then images through the link's own send path
    lk.version = 1
    n = 200
    gc.collect()
    gc.disable()
    a0 = gc.mem_alloc()
    t0 = time.ticks_us() if hasattr(time, "ticks_us") else int(time.time() * 1e6)
    for i in range(n):  # as Link.service sends it: packed in place, then framed
        if wiring.pack_image(lk.tx, 8, i * 10):
            lk._send(i * 10, 0x10, None)
    t1 = time.ticks_us() if hasattr(time, "ticks_us") else int(time.time() * 1e6)
    a1 = gc.mem_alloc()
    gc.enable()
    print(json.dumps({"service_bytes": m1 - m0, "image_alloc_bytes": (a1 - a0) // n,
                      "image_us": (t1 - t0) // n, "bytes_sent": sent[0],
                      "runtime": sys.implementation.name}))


main()
