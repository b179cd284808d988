"""COBS and CRC-32 on both codecs, and every message type end to end.

- cobs-python's known vectors (incl. the 254/255-byte boundary), its decode-error cases,
  runs of zeros and of non-zeros up to 1000 bytes and random data: the board codec
  (``services.link_frame``) under CPython AND on the MicroPython unix runtime, against
  the host codec (the ``cobs`` package);
- CRC-32 by the board's binascii path and its viper table, against ``zlib.crc32``;
- every message type of ``link_msgs``: host-encoded frames decoded by the board's parser
  and board-encoded frames decoded by the host's.
"""

import random
import re
import struct
import zlib

import pytest
from cobs import cobs
from support.link_helpers import HERE
from v2g.link import codec
from v2g.link.codec import msgs

PREDEFINED = [
    (b"", b"\x01"),
    (b"1", b"\x021"),
    (b"12345", b"\x0612345"),
    (b"12345\x006789", b"\x0612345\x056789"),
    (b"\x0012345\x006789", b"\x01\x0612345\x056789"),
    (b"12345\x006789\x00", b"\x0612345\x056789\x01"),
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x00\x00\x00", b"\x01\x01\x01\x01"),
    (bytes(range(1, 254)), b"\xfe" + bytes(range(1, 254))),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
    (bytes(range(0, 256)), b"\x01\xff" + bytes(range(1, 255)) + b"\x02\xff"),
]
DECODE_ERRORS = [b"\x00", b"\x05123", b"\x051234\x00", b"\x0512\x004"]


def _non_zero(length):
    out = bytearray()
    while len(out) < length:
        for i in range(1, 50):
            out += bytes(range(1, 256, i))
    return bytes(out[:length])


def _inputs():
    rng = random.Random(5)
    data = [raw for raw, _ in PREDEFINED]
    data += [b"\x00" * n for n in range(0, 520, 7)]
    data += [_non_zero(n) for n in range(1, 1000, 3)]
    data += [_non_zero(n) + b"\x00" for n in (253, 254, 255, 508, 509)]
    data += [bytes(rng.randrange(256) for _ in range(rng.randrange(600))) for _ in range(200)]
    return data


def _board_cpython(lines):
    """The board codec in this process (CPython, shim), same protocol as the runner."""
    from services import link_frame as lf

    out = []
    for op, data in lines:
        if op == "E":
            dst = bytearray(lf.max_encoded(len(data)))
            n = lf.cobs_encode(data, len(data), dst)
            out.append(dst[:n].hex() if n >= 0 else "ERR %d" % n)
        elif op == "D":
            buf = bytearray(data)
            n = lf.cobs_decode(buf, len(buf), buf)
            out.append(buf[:n].hex() if n >= 0 else "ERR %d" % n)
        else:
            out.append("%d %d %d" % (lf.crc32(data, len(data)),
                                     lf.crc32_binascii(data, len(data)),
                                     lf.crc32_table(data, len(data))))
    return out


def _expected(lines):
    out = []
    for op, data in lines:
        if op == "E":
            out.append(cobs.encode(data).hex())
        elif op == "D":
            try:
                out.append(cobs.decode(data).hex())
            except cobs.DecodeError:
                out.append("ERR -1")
        else:
            c = zlib.crc32(data)
            out.append("%d %d %d" % (c, c, c))
    return out


def _lines():
    lines = []
    for raw in _inputs():
        lines.append(("E", raw))
        lines.append(("D", cobs.encode(raw)))
        lines.append(("C", raw))
    for bad in DECODE_ERRORS:
        lines.append(("D", bad))
    return lines


def test_cobs_known_vectors_host_codec():
    for raw, enc in PREDEFINED:
        assert cobs.encode(raw) == enc
        frame = codec.encode_frame(1, msgs.ACK, 0, 0, b"")
        assert frame.endswith(b"\x00") and b"\x00" not in frame[:-1]
    for bad in DECODE_ERRORS:
        with pytest.raises(codec.FrameError):
            codec.decode_frame(bad)


def test_board_codec_cpython_matches_cobs_package_and_zlib():
    lines = _lines()
    assert _board_cpython(lines) == _expected(lines)


def test_board_codec_micropython_matches_cobs_package_and_zlib(run_micropython):
    lines = _lines()
    stdin = b"".join(b"%s %s\n" % (op.encode(), data.hex().encode()) for op, data in lines)
    r = run_micropython(HERE / "mp_codec_check.py", stdin_bytes=stdin, heapsize="8M")
    assert r.returncode == 0, r.stderr.decode()
    got = r.stdout.decode().split("\n")[:-1]
    assert len(got) == len(lines)
    assert got == _expected(lines)


def test_board_codec_bounds():
    """Too-small output buffers are refused, never overrun."""
    from services import link_frame as lf

    src = bytes(range(1, 256)) * 2
    assert lf.cobs_encode(src, len(src), bytearray(len(src))) == -1
    enc = cobs.encode(src)
    assert lf.cobs_decode(enc, len(enc), bytearray(len(enc) - 3)) == -2
    assert lf.cobs_encode(src, len(src) + 1, bytearray(1000)) == -1
    assert lf.crc_ok(bytearray(3), 3) is False


def _sample(fmt, rng):
    """Random values for a struct format ("<", codes B b H h I i and Ns)."""
    vals = []
    for num, c in re.findall(r"(\d*)([a-zA-Z])", fmt[1:]):
        if c == "s":
            vals.append(bytes(rng.randrange(1, 256) for _ in range(int(num or 1))))
            continue
        for _ in range(int(num or 1)):
            bits = struct.calcsize("<" + c) * 8
            if c.isupper():
                vals.append(rng.randrange(2 ** bits))
            else:
                vals.append(rng.randrange(-2 ** (bits - 1), 2 ** (bits - 1)))
    return tuple(vals)


@pytest.mark.parametrize("row", msgs.MESSAGES, ids=[r[msgs.NAME] for r in msgs.MESSAGES])
def test_every_message_type_round_trips(row):
    """Host pack -> frame -> host decode; board pack (``Link._send``) -> host decode."""
    from services import link

    rng = random.Random(row[msgs.ID])
    values = _sample(row[msgs.FMT], rng)
    tail = {None: b"", "text": "ok: caf\u00e9", "bytes": bytes(range(40))}.get(
        row[msgs.TAIL], b"\x03\x00\x10\x27\x00\x00")  # CONFIG: one (pid, value) entry
    if row[msgs.ID] == msgs.CONFIG:
        values = (1,)
    payload = codec.pack(row[msgs.ID], values, tail)
    f = codec.decode_frame(codec.encode_frame(1, row[msgs.ID], 77, 5, payload)[:-1])
    assert (f.msg_id, f.seq, f.ack, f.payload) == (row[msgs.ID], 77, 5, payload)
    got = codec.unpack(row[msgs.ID], f.payload)
    assert tuple(got[k] for k in row[msgs.FIELDS]) == values
    out = []
    lk = link.Link(link.Handlers(), lambda mv: out.append(bytes(mv)))
    lk.version = 1
    assert lk._send(0, row[msgs.ID], values, tail)
    f2 = codec.decode_frame(out[-1][:-1])
    assert f2.payload == payload and f2.msg_id == row[msgs.ID]
    assert f2.seq == (1 if row[msgs.RELIABLE] else 0)


def test_table_is_consistent():
    ids = [r[msgs.ID] for r in msgs.MESSAGES]
    assert len(set(ids)) == len(ids) and all(0 < i < 256 for i in ids)
    for r in msgs.MESSAGES:
        assert len(r[msgs.FIELDS]) == len(struct.unpack(r[msgs.FMT],
                                                        bytes(msgs.FIXED_SIZE[r[msgs.ID]])))
        assert msgs.FIXED_SIZE[r[msgs.ID]] <= msgs.MAX_PAYLOAD
    # a CONFIG with every parameter fits one frame
    from params import TABLE

    assert 1 + 6 * len(TABLE) <= msgs.MAX_PAYLOAD
    assert len(msgs.STATES) == 8


def test_docs_message_table_is_current(repo_root):
    from v2g.link import doc

    text = (repo_root / "docs" / "link.md").read_text()
    assert doc.render(text) == text, "docs/link.md is stale: python -m v2g.link.doc --write"
