"""The board's link session (``services.link`` on the MicroPython unix runtime, stdin and
stdout as its UART) against the host peer (``v2g.link.LinkPeer``) through a relay that
drops, corrupts, merges and duplicates frames: every command is applied exactly once and
in order, no corrupted command is ever applied, every energy record reaches the host.
"""

import asyncio
import json
import random
import struct
import sys

import pytest
from support.link_helpers import BOARD_RUNNER, Relay, board_env
from v2g.link import LinkPeer, codec
from v2g.link.codec import msgs

V = msgs.VERSION  # the session's protocol version (HELLO frames carry 1)


def _commands(rng, n):
    """(kind, args) in send order: setpoints with unique ids, EV limits, sessions, configs
    (one with a value the board's handler rejects)."""
    out = []
    for i in range(n):
        r = rng.random()
        if r < 0.6:
            out.append(("setpoint", (1000 + i, rng.randint(-11000, 11000),
                                     rng.randint(-3000, 3000))))
        elif r < 0.75:
            out.append(("ev_limits", (rng.randint(0, 11000), rng.randint(0, 11000),
                                      rng.randint(0, 1000))))
        elif r < 0.9:
            out.append(("session", (rng.random() < 0.5, rng.randint(0, 2**32 - 1))))
        else:
            out.append(("config", ({3: rng.choice([7000, 11000, 60000]), 35: 12},)))
    return out


def _expected(kind, args):
    if kind == "setpoint":
        return ["setpoint", *args]
    if kind == "ev_limits":
        return ["ev_limits", *args]
    if kind == "session":
        return ["session", 1 if args[0] else 0, args[1]]
    cfg = {"p_rated_w": args[0][3], "enter_service_delay_s": args[0][35] / 10}
    return ["config", sorted([k, v] for k, v in cfg.items())]


async def _session(exe, loss, seed, n_cmds, n_records):
    rng = random.Random(seed)
    down, up = Relay(random.Random(seed * 7 + 1), loss), Relay(random.Random(seed * 7 + 2),
                                                                loss)
    if exe == "cpython":
        argv = [sys.executable, str(BOARD_RUNNER)]
    else:
        argv = [exe, str(BOARD_RUNNER)]
    proc = await asyncio.create_subprocess_exec(
        *argv, str(n_records), "60", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=board_env())
    peer = LinkPeer(lambda data: proc.stdin.write(down.stream(data)), rto_s=0.06,
                    hb_period_s=0.1, hb_timeout_s=3.0, nonce=seed)

    async def pump():
        while True:
            data = await proc.stdout.read(4096)
            if not data:
                return
            peer.feed(up.stream(data))

    pump_task = asyncio.ensure_future(pump())
    await peer.open(timeout=20, retry_s=0.1)
    cmds = _commands(rng, n_cmds)

    async def one(kind, args):
        return await getattr(peer, kind)(*args, timeout=60)

    # pipelined: up to the window in flight, sent in list order
    tasks = []
    for kind, args in cmds:
        tasks.append(asyncio.ensure_future(one(kind, args)))
        await asyncio.sleep(0)
    results = await asyncio.gather(*tasks)
    records = []
    while len(records) < n_records:
        rec = await asyncio.wait_for(peer.records.get(), 60)
        records.append(rec)
        await peer.energy_ack(rec["record_no"], timeout=60)
    # the last ENERGY_ACK is delivered once the window is empty again
    for _ in range(3000):
        if not peer.unacked:
            break
        await asyncio.sleep(0.01)
    image = peer.image
    await peer.close()
    proc.stdin.close()
    await asyncio.wait_for(pump_task, 30)
    err = await proc.stderr.read()
    rc = await proc.wait()
    assert rc == 0, err.decode()
    board = json.loads(err.decode().strip().splitlines()[-1])
    return cmds, results, records, image, board, peer, down.stats, up.stats


@pytest.mark.parametrize("loss,seed", [(0.0, 1), (0.01, 2), (0.05, 3), (0.20, 4)])
def test_exactly_once_in_order_through_lossy_relay(micropython_exe, loss, seed):
    cmds, results, records, image, board, peer, down, up = asyncio.run(
        _session(micropython_exe, loss, seed, n_cmds=60, n_records=8))
    applied = board["applied"]
    expected = [_expected(k, a) for k, a in cmds]
    # exactly once, in order, nothing corrupted: the handler calls equal the sent commands
    assert applied == json.loads(json.dumps(expected))
    for (kind, args), res in zip(cmds, results):
        want = "REJECTED" if kind == "config" and args[0][3] > 50000 else "OK"
        assert res.status == want, (kind, args, res)
    # every energy record once, in order; the board saw every ENERGY_ACK
    assert [r["record_no"] for r in records] == list(range(8))
    assert [r["export_mwh"] for r in records] == [1000 + i for i in range(8)]
    assert sorted(board["acked"]) == list(range(8))
    assert image is not None and image["last_fault"].rstrip(b"\0") == b"V2G-502"
    c = board["counters"]
    if loss:
        assert down["dropped"] + down["flipped"] > 0
        assert c["crc_errors"] + c["malformed"] > 0 and c["retransmissions"] > 0
        assert peer.counters["retransmissions"] > 0
    else:
        assert c["crc_errors"] == c["malformed"] == c["unknown"] == 0
    print("loss %.2f: relay down %s up %s; board counters %s; host counters %s"
          % (loss, down, up, c, peer.counters))


def test_session_runs_under_cpython_too():
    cmds, results, records, image, board, peer, down, up = asyncio.run(
        _session("cpython", 0.05, 11, n_cmds=30, n_records=3))
    assert board["applied"] == json.loads(json.dumps([_expected(k, a) for k, a in cmds]))
    assert [r["record_no"] for r in records] == [0, 1, 2]


def test_unknown_and_malformed_frames_are_dropped_and_counted():
    """In-process (CPython): frames with an unknown type, a bad length, a bad CRC, a
    wrong version or a payload that does not match the table never reach a handler."""
    from services import link

    calls = []

    class H(link.Handlers):
        def on_setpoint(self, now_ms, *a):
            calls.append(a)
            return msgs.OK

    out = []
    lk = link.Link(H(), lambda mv: out.append(bytes(mv)))

    def feed(data):
        lk.receive(data, len(data), 0)

    hello = codec.encode_frame(1, msgs.HELLO, 0, 0, codec.pack(msgs.HELLO, (V, V, 5)))
    feed(hello)
    assert lk.state == link.UP
    good = codec.pack(msgs.SETPOINT, (1, 100, 0))
    feed(codec.encode_frame(V, 0x7E, 1, 0, good))  # unknown type
    feed(codec.encode_frame(V + 1, msgs.SETPOINT, 1, 0, good))  # wrong version
    body = bytearray(codec.encode_body(V, msgs.SETPOINT, 1, 0, good))
    body[-1] ^= 0x40
    feed(codec.cobs.encode(bytes(body)) + b"\0")  # bad CRC
    body = bytearray(codec.encode_body(V, msgs.SETPOINT, 1, 0, good))
    struct.pack_into("<H", body, 6, 11)
    body[-4:] = struct.pack("<I", codec.zlib.crc32(body[:-4]))
    feed(codec.cobs.encode(bytes(body)) + b"\0")  # length field inconsistent
    feed(b"\x05123\x00")  # COBS error
    feed(b"\x01" * 600 + b"\x00")  # longer than any frame
    assert calls == []
    c = lk.counters_dict()
    assert c["unknown"] == 1 and c["crc_errors"] == 1 and c["malformed"] == 4
    # a reliable frame whose payload does not fit its type: answered MALFORMED, not applied
    feed(codec.encode_frame(V, msgs.SETPOINT, 1, 0, good + b"x"))
    assert calls == [] and lk.counters_dict()["malformed"] == 5
    res = codec.decode_frame(out[-1][:-1])
    assert res.msg_id == msgs.RESULT
    assert codec.unpack(msgs.RESULT, res.payload)["status"] == msgs.MALFORMED
    # the next in-order one is applied once; its duplicate is not
    f = codec.encode_frame(V, msgs.SETPOINT, 2, 0, good)
    feed(f)
    feed(f)
    assert calls == [(1, 100, 0)] and lk.counters_dict()["duplicates"] == 1
