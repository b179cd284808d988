"""``v2g-daemon``: the communication controller's side of the charger, on CPython.

One asyncio process owns the link to the real-time controller (``v2g.link.LinkPeer`` over
the UART) and serves the field bus from the register image the board mirrors:
- ``config``: the daemon's YAML config (``/etc/v2g/config.yaml``), validated with errors
  that name key and value;
- ``regmap``: the Modbus register map: the status block at protocol address 0 (register
  40001 = DC-contactor status) and the SunSpec device at 40000, generated from the SunSpec
  model JSON that pysunspec2 ships joined with the firmware's parameter table;
- ``server``: the pymodbus TCP server over that map: one updater writes the datastore,
  writes are permission-checked and become link commands;
- ``daemon``: ``v2g daemon`` (run, ``install-unit``), signals (SIGTERM stop, SIGHUP reload);
- ``modbus_cmd``: ``v2g modbus read|write|scan|map``, the host client;
- ``fuzz`` and ``bench``: the Modbus fuzzer (``make fuzz``) and the load figure.

Context: host (the communication controller, a Linux box). Imports ``v2g.common`` and
``v2g.link`` only.
"""
