"""Board-side services: asyncio tasks beside the supervisor, never in the tick.

- ``link_frame``: COBS and CRC-32 into preallocated buffers (the link's byte layer);
- ``link_msgs``: the one table of link message types, ids and field layouts (the host
  imports the same file);
- ``link``: the link session (header, seq/ack, retransmission, heartbeat, handshake,
  counters) and its asyncio service over a UART or the simulated board's pty.

Nothing here touches hardware the tick owns; commands reach the controller only through
handlers the app injects (the supervisor's idempotent paths).
Context: supervisor (asyncio tasks); never an interrupt.
"""
