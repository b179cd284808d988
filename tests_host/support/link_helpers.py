"""Shared pieces of the link tests (imported by the test modules): the board runner's
path and a lossy, corrupting relay.

``Relay(rng, loss)`` mutates whole frames (a frame = bytes up to its 0x00 delimiter): with
probability ``loss`` each a frame is dropped, has 1-3 bits flipped, or loses its delimiter
(so it merges with the next one); with ``loss / 4`` it is delivered twice. Seeds make the
mutation sequence deterministic (the interleaving in time is the OS's).
"""

import os
from pathlib import Path

from v2g.common import paths

HERE = Path(__file__).resolve().parent.parent / "link"  # the link tests and their MP scripts
BOARD_RUNNER = HERE / "mp_link_board.py"


class Relay:
    def __init__(self, rng, loss):
        self.rng = rng
        self.loss = loss
        self.buf = bytearray()
        self.stats = {"frames": 0, "dropped": 0, "flipped": 0, "merged": 0, "duplicated": 0}

    def frame(self, frame):
        """One frame with its delimiter -> the bytes to deliver."""
        self.stats["frames"] += 1
        r = self.rng.random()
        p = self.loss
        if r < p:
            self.stats["dropped"] += 1
            return b""
        if r < 2 * p:
            self.stats["flipped"] += 1
            b = bytearray(frame)
            for _ in range(self.rng.randint(1, 3)):
                i = self.rng.randrange(len(b) - 1)  # the delimiter stays
                b[i] ^= 1 << self.rng.randrange(8)
            return bytes(b)
        if r < 2.2 * p:
            self.stats["merged"] += 1
            return frame[:-1]
        if r < 2.45 * p:
            self.stats["duplicated"] += 1
            return frame + frame
        return frame

    def stream(self, data):
        """Bytes in any chunking -> the mutated bytes of every completed frame."""
        self.buf += data
        out = bytearray()
        while True:
            k = self.buf.find(b"\x00")
            if k < 0:
                return bytes(out)
            out += self.frame(bytes(self.buf[:k + 1]))
            del self.buf[:k + 1]


def board_env():
    env = dict(os.environ)
    env["MICROPYPATH"] = ".frozen:" + str(paths.FIRMWARE_DIR)
    env["PYTHONPATH"] = "%s:%s" % (paths.SHIM_DIR, paths.FIRMWARE_DIR)
    return env
