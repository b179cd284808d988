"""A Modbus TCP fuzzer for the daemon's server: grammar- and mutation-based frames, plus
connection abuse, while a well-behaved client polls and its response times are recorded.

Frames (``frames(rng)``):
- grammar: a well-formed MBAP header and a PDU of a real function code (1-6, 15, 16, 22,
  23, 8, 43, 20, 24) with boundary fields: addresses 0, 99, 100, 115, 40000, 40541,
  65535; counts 0, 1, 125, 126, 2000, 65535; byte counts that disagree with the counts;
  address + count past 65535; unit ids 0, 1, 247, 255;
- mutation: a valid frame with bits flipped, truncated, extended with junk, its MBAP
  length set to 0, 1, 2, 255, 260, 65535 or off by one, its protocol id not 0, or an
  unknown function code (0, 7, 9..14, 0x41, 0x7F, 0x80-0xFF);
- noise: random bytes.
Connections (``run``): ``conns`` connections carry the frames (each closed and reopened
every few hundred frames, some with an RST); the abuse scenarios run once per
``abuse_every`` frames: slowloris (one byte every 20 ms of a valid request), 50
connections opened at once and held, half-open sockets (a partial header, then the
write side shut down, or nothing at all).

Every tenth frame is also a well-formed grammar frame on a connection of its own, and
its answer is awaited (``answered``; ``unanswered`` within 1 s; ``closed`` by the server).

Outcome (``run`` -> dict): frames sent, bytes, responses seen, connections, the poller's
request count, errors and max / p99 latency (ms), and ``alive`` (a fresh client reads
40001 after the run). 0 crashes = the daemon process still runs; 0 hangs = ``alive``.

Usage: ``python -m v2g.gateway.fuzz --port 1502 --frames 100000`` (loopback only), or
``make fuzz`` (the full form through the test rig). Context: host (tests, make fuzz).
"""

import argparse
import json
import random
import select
import socket
import struct
import threading
import time

ADDRS = (0, 1, 51, 52, 99, 100, 115, 116, 39999, 40000, 40001, 40541, 40542, 65534, 65535)
COUNTS = (0, 1, 2, 16, 123, 124, 125, 126, 127, 2000, 2001, 65535)
UNITS = (0, 1, 126, 247, 255)
FCS = (1, 2, 3, 4, 5, 6, 15, 16, 22, 23, 8, 43, 20, 24, 17, 11)
BAD_FCS = (0, 7, 9, 10, 12, 13, 14, 0x41, 0x64, 0x7F, 0x80, 0x83, 0x90, 0xFF)


def _pick(rng, seq):
    return seq[rng.randrange(len(seq))] if rng.random() < 0.7 else rng.randrange(65536)


def pdu(rng, fc, consistent=False):
    """A PDU of function ``fc`` with boundary-heavy fields (``consistent``: byte counts
    agree with the data, so the frame is well-formed whatever its values)."""
    a, n = _pick(rng, ADDRS), _pick(rng, COUNTS)
    if fc in (1, 2, 3, 4):
        return struct.pack(">BHH", fc, a, n)
    if fc in (5, 6):
        return struct.pack(">BHH", fc, a, rng.choice((0, 0xFF00, 1, 0xFFFF, 50)))
    if fc in (15, 16):
        k = min(n, 123) if rng.random() < 0.8 or consistent else rng.randrange(300)
        if consistent:
            k = (k + 7) // 8 if fc == 15 else k
            n = n if fc == 16 else min(n, 8 * k)
        body = bytes(rng.randrange(256) for _ in range(k if fc == 15 and consistent else 2 * k))
        bc = (len(body) if rng.random() < 0.7 or consistent else rng.randrange(256)) & 0xFF
        return struct.pack(">BHHB", fc, a, n, bc) + body
    if fc == 22:
        return struct.pack(">BHHH", fc, a, rng.randrange(65536), rng.randrange(65536))
    if fc == 23:
        k = rng.randrange(4)
        return struct.pack(">BHHHHB", fc, a, n, _pick(rng, ADDRS), k, 2 * k) + bytes(2 * k)
    if fc == 8:
        return struct.pack(">BHH", fc, rng.randrange(25), rng.randrange(65536))
    if fc == 43:
        return bytes((fc, rng.choice((13, 14)), rng.randrange(5), rng.randrange(256)))
    return bytes((fc,)) + bytes(rng.randrange(256) for _ in range(rng.randrange(12)))


def mbap(rng, body, tid=None, proto=0, unit=None, length=None):
    tid = rng.randrange(65536) if tid is None else tid
    unit = _pick(rng, UNITS) & 0xFF if unit is None else unit
    length = len(body) + 1 if length is None else length
    return struct.pack(">HHHB", tid, proto, length & 0xFFFF, unit) + body


def valid_read(rng, address=0, count=1):
    return mbap(rng, struct.pack(">BHH", 3, address, count), unit=1)


def frame(rng):
    """One fuzz frame (bytes)."""
    r = rng.random()
    if r < 0.45:
        return mbap(rng, pdu(rng, rng.choice(FCS)))
    if r < 0.9:
        f = bytearray(mbap(rng, pdu(rng, rng.choice(FCS))))
        m = rng.randrange(8)
        if m == 0:
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(len(f))
                f[i] ^= 1 << rng.randrange(8)
        elif m == 1:
            f = f[:rng.randrange(len(f))]
        elif m == 2:
            f += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
        elif m == 3:
            struct.pack_into(">H", f, 4, rng.choice((0, 1, 2, 255, 260, 65535,
                                                     len(f) - 5, len(f) - 7)) & 0xFFFF)
        elif m == 4:
            struct.pack_into(">H", f, 2, rng.randrange(1, 65536))
        elif m == 5:
            f[7] = rng.choice(BAD_FCS)
        elif m == 6:
            f = f + f  # two frames in one segment
        else:
            f = f[:7]  # header only
        return bytes(f)
    return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))


class Poller(threading.Thread):
    """A well-behaved client: reads 40001..40052 and 100 SunSpec registers in turn,
    recording each response time."""

    def __init__(self, host, port, period_s=0.02):
        super().__init__(daemon=True)
        self.host, self.port, self.period_s = host, port, period_s
        self.lat = []
        self.errors = 0
        self.stop = threading.Event()

    def run(self):
        from pymodbus.client import ModbusTcpClient

        c = ModbusTcpClient(self.host, port=self.port, timeout=5, retries=0)
        c.connect()
        i = 0
        while not self.stop.is_set():
            addr, count = ((0, 52), (40000, 100))[i % 2]
            i += 1
            t0 = time.perf_counter()
            try:
                rr = c.read_holding_registers(addr, count=count)
                ok = not rr.isError()
            except Exception:  # noqa: BLE001 (a failed poll is what we count)
                ok = False
                c.close()
                c.connect()
            self.lat.append(time.perf_counter() - t0)
            if not ok:
                self.errors += 1
            time.sleep(self.period_s)
        c.close()

    def figures(self):
        lat = sorted(self.lat) or [0.0]
        return {"poll_requests": len(self.lat), "poll_errors": self.errors,
                "poll_max_ms": round(lat[-1] * 1000, 1),
                "poll_p99_ms": round(lat[int(0.99 * (len(lat) - 1))] * 1000, 1)}


def _connect(host, port):
    s = socket.create_connection((host, port), timeout=2)
    s.setblocking(False)
    return s


def _drain(socks, stats):
    if not socks:
        return
    r, _, _ = select.select(socks, [], [], 0)
    for s in r:
        try:
            data = s.recv(65536)
            stats["responses_bytes"] += len(data)
        except OSError:
            pass


def _close(s, rst=False):
    try:
        if rst:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    except OSError:
        pass


def _checked(host, port, rng, stats, box):
    """One well-formed grammar frame on a connection of its own, waiting for the answer
    (1 s): counts ``answered`` (a response with the request's transaction id) and
    ``unanswered`` (then the connection is replaced)."""
    if not box:
        box.append(socket.create_connection((host, port), timeout=1.0))
    s = box[0]
    tid = rng.randrange(65536)
    fc = rng.choice(FCS[:10])  # the functions with a defined request layout
    f = mbap(rng, pdu(rng, fc, consistent=True), tid=tid)
    try:
        s.sendall(f)
        data = s.recv(4096)
        if len(data) >= 8 and struct.unpack(">H", data[:2])[0] == tid:
            stats["answered"] += 1
            return
        stats["closed" if not data else "unanswered"] += 1
    except OSError:
        stats["unanswered"] += 1
    stats.setdefault("unanswered_frames", []).append(f[:16].hex())
    _close(s)
    box.clear()


def _abuse(host, port, rng, stats):
    """Slowloris, 50 connections at once, half-open sockets."""
    held = []
    try:
        for _ in range(50):
            held.append(socket.create_connection((host, port), timeout=2))
        stats["connections"] += 50
        slow = held[0]
        for b in valid_read(rng, 0, 1):
            slow.send(bytes((b,)))
            time.sleep(0.02)
        for s in held[1:10]:
            s.send(mbap(rng, pdu(rng, 3))[:rng.randrange(1, 7)])
            s.shutdown(socket.SHUT_WR)
        stats["abuse_rounds"] += 1
    except OSError as e:
        stats["connect_errors"] += 1
        stats["last_error"] = str(e)
    finally:
        for s in held:
            _close(s, rst=rng.random() < 0.5)


def run(host="127.0.0.1", port=1502, frames=5000, seed=1, conns=8, abuse_every=2000,
        poll=True):
    """Send ``frames`` fuzz frames; returns the figures (see the module docstring)."""
    if not host.startswith("127.") and host not in ("localhost", "::1"):
        raise ValueError("the fuzzer sends to loopback only, not %r" % host)
    rng = random.Random(seed)
    stats = {"frames": 0, "bytes": 0, "responses_bytes": 0, "connections": 0,
             "connect_errors": 0, "abuse_rounds": 0, "send_errors": 0, "answered": 0,
             "unanswered": 0, "closed": 0}
    checked = []
    poller = Poller(host, port) if poll else None
    if poller:
        poller.start()
    socks = []
    t0 = time.monotonic()
    try:
        while stats["frames"] < frames:
            while len(socks) < conns:
                try:
                    socks.append([_connect(host, port), rng.randint(50, 500)])
                    stats["connections"] += 1
                except OSError:
                    stats["connect_errors"] += 1
                    time.sleep(0.05)
            slot = socks[rng.randrange(len(socks))]
            f = frame(rng)
            try:
                slot[0].send(f)
                stats["bytes"] += len(f)
            except (BlockingIOError, InterruptedError):
                time.sleep(0.001)
            except OSError:
                stats["send_errors"] += 1
                slot[1] = 0
            stats["frames"] += 1
            slot[1] -= 1
            if slot[1] <= 0:
                _close(slot[0], rst=rng.random() < 0.3)
                socks.remove(slot)
            if stats["frames"] % 10 == 0:
                _checked(host, port, rng, stats, checked)
            if stats["frames"] % 16 == 0:
                _drain([s for s, _ in socks], stats)
                time.sleep(0.0005)  # a fast client, not a flood that starves the poller
            if abuse_every and stats["frames"] % abuse_every == 0:
                _abuse(host, port, rng, stats)
    finally:
        for s, _ in socks:
            _close(s)
        for s in checked:
            _close(s)
        if poller:
            poller.stop.set()
            poller.join(10)
    stats["seconds"] = round(time.monotonic() - t0, 1)
    stats["alive"] = _alive(host, port)
    if poller:
        stats.update(poller.figures())
    return stats


def _alive(host, port):
    from pymodbus.client import ModbusTcpClient

    c = ModbusTcpClient(host, port=port, timeout=2, retries=1)
    try:
        if not c.connect():
            return False
        rr = c.read_holding_registers(0, count=1)
        return not rr.isError()
    except Exception:  # noqa: BLE001
        return False
    finally:
        c.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description="fuzz the daemon's Modbus TCP server")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1502)
    ap.add_argument("--frames", type=int, default=100000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args(argv)
    print(json.dumps(run(a.host, a.port, a.frames, a.seed)))


if __name__ == "__main__":
    main()
