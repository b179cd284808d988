"""The link protocol's host side, shared by ``v2g-daemon`` and the tests.

The board runs ``firmware/services/link.py``; this package speaks the same protocol
(docs/link.md) from CPython:
- ``codec``: frames (header, CRC-32 via ``zlib``, COBS via the ``cobs`` package) and
  payloads, laid out by the firmware's own message table ``firmware/services/link_msgs.py``
  (loaded from the checkout, so there is one table);
- ``peer``: ``LinkPeer``, an asyncio session with the board's seq/ack/retransmit/heartbeat
  rules, over any byte transport: a serial device (pyserial; a pty works) or asyncio
  streams;
- ``doc``: the message table of docs/link.md, generated from ``link_msgs``.

Usage::

    peer = await v2g.link.open_serial("/dev/pts/5")
    await peer.open()                       # version handshake
    res = await peer.setpoint(7, -7000, 0)  # -> Result(status="OK", ...)

Context: host only. Imports ``v2g.paths``/``v2g.errors`` and the firmware's table only.
"""

from v2g.link.codec import FrameError, msgs  # noqa: F401
from v2g.link.peer import LinkPeer, Result, open_serial, open_streams  # noqa: F401
