"""Link frames and payloads on the host: COBS (``cobs`` package), CRC-32 (``zlib``).

``encode_frame(version, msg_id, seq, ack, payload)`` -> the bytes to write, delimiter
included; ``decode_frame(encoded)`` -> ``Frame`` or ``FrameError`` (``kind``: "cobs",
"short", "crc", "length"); ``pack(msg_id, values, tail)`` / ``unpack(msg_id, payload)``
lay payloads out by the firmware's table ``msgs`` (``firmware/services/link_msgs.py``,
loaded from this checkout: the same file the board runs). ``Splitter`` cuts a byte stream
at the 0x00 delimiters, dropping frames longer than the board accepts.

Context: host only.
"""

import importlib.util
import struct
import sys
import zlib
from dataclasses import dataclass

from cobs import cobs

from v2g.common import paths

_MSGS_PATH = paths.FIRMWARE_DIR / "services" / "link_msgs.py"


def _load_msgs():
    name = "v2g_link_msgs"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _MSGS_PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


msgs = _load_msgs()
MAX_ENCODED = cobs.max_encoded_length(msgs.MAX_BODY)


class FrameError(ValueError):
    """A frame that must be dropped; ``kind`` names the counter it goes to."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Frame:
    version: int
    msg_id: int
    seq: int
    ack: int
    payload: bytes


def encode_body(version, msg_id, seq, ack, payload=b""):
    """Header + payload + CRC-32 (little-endian), before COBS."""
    if len(payload) > msgs.MAX_PAYLOAD:
        raise ValueError("payload of %d bytes exceeds %d" % (len(payload), msgs.MAX_PAYLOAD))
    head = struct.pack(msgs.HEADER_FMT, version, msg_id, seq & 0xFFFF, ack & 0xFFFF,
                       len(payload))
    body = head + bytes(payload)
    return body + struct.pack("<I", zlib.crc32(body))


def encode_frame(version, msg_id, seq, ack, payload=b""):
    """The bytes on the wire for one frame: COBS(body) + 0x00."""
    return cobs.encode(encode_body(version, msg_id, seq, ack, payload)) + b"\x00"


def decode_frame(encoded):
    """One frame without its delimiter -> ``Frame``; ``FrameError`` when it must be
    dropped (the caller counts ``e.kind``)."""
    try:
        body = cobs.decode(bytes(encoded))
    except cobs.DecodeError as e:
        raise FrameError("malformed", "COBS: %s" % e) from None
    if len(body) < msgs.HEADER_SIZE + msgs.CRC_SIZE:
        raise FrameError("malformed", "short frame (%d bytes)" % len(body))
    (crc,) = struct.unpack_from("<I", body, len(body) - 4)
    if zlib.crc32(body[:-4]) != crc:
        raise FrameError("crc_errors", "CRC mismatch")
    version, msg_id, seq, ack, length = struct.unpack_from(msgs.HEADER_FMT, body)
    if length != len(body) - msgs.HEADER_SIZE - msgs.CRC_SIZE:
        raise FrameError("malformed", "length %d in a %d-byte frame" % (length, len(body)))
    return Frame(version, msg_id, seq, ack, body[msgs.HEADER_SIZE:-4])


def pack(msg_id, values=(), tail=b""):
    """Payload of ``msg_id`` from its fixed values (table order) and tail bytes/text."""
    row = msgs.BY_ID[msg_id]
    out = struct.pack(row[msgs.FMT], *values)
    if tail:
        if row[msgs.TAIL] is None:
            raise ValueError("%s takes no tail" % row[msgs.NAME])
        out += tail.encode() if isinstance(tail, str) else bytes(tail)
    if not msgs.payload_ok(msg_id, len(out)):
        raise ValueError("%s payload of %d bytes does not fit the table"
                         % (row[msgs.NAME], len(out)))
    return out


def unpack(msg_id, payload):
    """Payload -> dict of the table's fields, plus ``tail`` (text: str, bytes: bytes,
    entries: list of tuples) where the type has one. ``FrameError`` on a mismatch."""
    row = msgs.BY_ID.get(msg_id)
    if row is None:
        raise FrameError("unknown", "unknown message type 0x%02x" % msg_id)
    if not msgs.payload_ok(msg_id, len(payload)):
        raise FrameError("malformed", "%s with %d payload bytes" % (row[msgs.NAME],
                                                                   len(payload)))
    fixed = msgs.FIXED_SIZE[msg_id]
    out = dict(zip(row[msgs.FIELDS], struct.unpack_from(row[msgs.FMT], payload)))
    tail = row[msgs.TAIL]
    rest = bytes(payload[fixed:])
    if tail == "text":
        out["tail"] = rest.decode("utf-8", "replace")
    elif tail == "bytes":
        out["tail"] = rest
    elif tail:
        out["tail"] = list(struct.iter_unpack(tail, rest))
    return out


def config_payload(entries):
    """CONFIG payload from ``{pid: held_int}`` (``params.TABLE``'s ids and held units)."""
    tail = b"".join(struct.pack("<Hi", pid, held) for pid, held in entries.items())
    return pack(msgs.CONFIG, (len(entries),), tail)


class Splitter:
    """Cut a byte stream at 0x00: ``feed(data)`` returns the complete frames (without
    delimiter); empty frames vanish, a frame longer than ``max_len`` is replaced by None
    (the caller counts it as malformed)."""

    def __init__(self, max_len=MAX_ENCODED):
        self.buf = bytearray()
        self.max_len = max_len
        self.oversize = False

    def feed(self, data):
        out = []
        start = 0
        data = bytes(data)
        while True:
            k = data.find(b"\x00", start)
            if k < 0:
                self._add(data[start:])
                return out
            self._add(data[start:k])
            if self.oversize:
                out.append(None)
            elif self.buf:
                out.append(bytes(self.buf))
            self.buf.clear()
            self.oversize = False
            start = k + 1

    def _add(self, chunk):
        if self.oversize:
            return
        self.buf += chunk
        if len(self.buf) > self.max_len:
            self.oversize = True
            self.buf.clear()
